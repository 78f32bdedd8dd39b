/**
 * Every job written with effect-tcp's public API, as its README shows it: `Tcp.connect`, the
 * connection's `write`, `read`, `readExactly`, `stream` and `sink`, `Server.serve`, `Framing`
 * and `ConnectionPool`; with the `tls` option of `Tcp.connect` and `Server.serve` for the TLS
 * scenarios (`params.tls`), the client's options object made once, as an application holds it.
 *
 *   node --import tsx bench/programs/ours.ts server|client <job> '<params JSON>'
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import { type Connection, ConnectionPool, Endpoint, Framing, NodeTcp, Server, Tcp } from "effect-tcp"
import { FrameCheck, frameCounts } from "./frames.js"
import {
  announcePort,
  awaitPort,
  awaitStop,
  fail,
  finishClient,
  finishServer,
  host,
  socketPath,
  invocation,
  Latencies,
  now,
  rssKiB,
  seconds,
  tlsPem
} from "./lifecycle.js"
import {
  bulkByte,
  bulkChunk,
  checkResponse,
  type ClientJob,
  goByte,
  type Params,
  requests,
  responseByte,
  type ServerJob,
  StreamCheck
} from "./protocol.js"

const ack = new Uint8Array([1])
const go = new Uint8Array([goByte])

/** Writes `chunk` `times` times, each write done once Node has taken it. */
const writeTimes = (connection: Connection.Connection, chunk: Uint8Array, times: number) =>
  Effect.gen(function*() {
    for (let i = 0; i < times; i++) yield* connection.write(chunk)
  })

/** Fails if anything but the end of the stream follows. */
const expectEnd = (connection: Connection.Connection, what: string) =>
  Effect.flatMap(connection.read, (rest) =>
    Option.isNone(rest)
      ? Effect.void
      : Effect.dieMessage(`${what}: ${rest.value.length} unexpected bytes before the end of the stream`))

// ---------------------------------------------------------------------------
// servers

const serve = (job: ServerJob, params: Params) =>
  Effect.gen(function*() {
    const chunk = bulkChunk(params.chunkBytes)
    let bytesReceived = 0

    const handlers: Record<ServerJob, (connection: Connection.Connection) => Effect.Effect<unknown, unknown>> = {
      sink: (connection) => {
        const check = new StreamCheck("upload", params.totalBytes, bulkByte(params.chunkBytes))
        return connection.stream.pipe(
          Stream.runForEach((data) => {
            check.accept(data)
            return check.done ? connection.write(ack) : Effect.void
          }),
          Effect.ensuring(Effect.sync(() => (bytesReceived += check.bytes)))
        )
      },
      source: (connection) =>
        Effect.gen(function*() {
          yield* connection.read
          yield* writeTimes(connection, chunk, params.totalBytes / params.chunkBytes)
          yield* connection.endWrite
          yield* expectEnd(connection, "source")
        }),
      echo: (connection) => {
        const loop: Effect.Effect<void, unknown> = Effect.flatMap(
          connection.read,
          (data) => Option.isNone(data) ? Effect.void : Effect.zipRight(connection.write(data.value), loop)
        )
        return loop
      },
      "echo-stream": (connection) => connection.stream.pipe(Stream.run(connection.sink)),
      "frame-source": () => Effect.dieMessage("the frame source is raw node:net only")
    }

    const pem = tlsPem(params)
    const where = socketPath === undefined ? { host, port: 0 } : { path: socketPath }
    const server = yield* Server.serve({
      ...where,
      backlog: params.backlog,
      ...(pem === undefined ? {} : { tls: { cert: pem.cert, key: pem.key } })
    }, handlers[job])
    const baselineRssKiB = rssKiB()
    announcePort(Endpoint.isTcp(server.address) ? server.address.port : 0)
    yield* Effect.promise(awaitStop)
    const stats = yield* server.stats
    finishServer({
      connections: stats.accepted,
      bytesReceived,
      errors: stats.failed + stats.handshakesFailed,
      baselineRssKiB
    })
  })

// ---------------------------------------------------------------------------
// clients

/** The client's TLS for a TLS scenario (set by `main`): one object, whose secure context effect-tcp builds once. */
let clientTls: { readonly ca: string } | undefined

const secure = () => (clientTls === undefined ? {} : { tls: clientTls })

const connect = (port: number) =>
  Tcp.connect(socketPath === undefined ? { host, port, ...secure() } : { path: socketPath })

/** What production code sets: every wait bounded (generous, so that none fires here). */
const timeouts = { readTimeout: "30 seconds", writeTimeout: "30 seconds" } as const
const connectWithTimeouts = (port: number) => Tcp.connect({ host, port, ...timeouts, ...secure() })

const upload = (port: number, params: Params) =>
  Effect.gen(function*() {
    const connection = yield* connect(port)
    const start = now()
    yield* writeTimes(connection, bulkChunk(params.chunkBytes), params.totalBytes / params.chunkBytes)
    yield* connection.endWrite
    const acked = yield* connection.readExactly(1)
    const end = now()
    if (acked[0] !== ack[0]) throw new Error(`upload: the server acknowledged with ${acked[0]} instead of 1`)
    yield* expectEnd(connection, "upload")
    return { seconds: seconds(start, end), bytes: params.totalBytes }
  })

const download = (port: number, params: Params, open = connect) =>
  Effect.gen(function*() {
    const connection = yield* open(port)
    const check = new StreamCheck("download", params.totalBytes, bulkByte(params.chunkBytes))
    let end = 0
    const start = now()
    yield* connection.write(go)
    yield* connection.stream.pipe(Stream.runForEach((data) =>
      Effect.sync(() => {
        check.accept(data)
        if (check.done) end = now()
      })
    ))
    check.complete()
    return { seconds: seconds(start, end), bytes: check.bytes }
  })

const echo = (port: number, params: Params) =>
  Effect.gen(function*() {
    const connection = yield* connect(port)
    const check = new StreamCheck("echo", params.totalBytes, bulkByte(params.chunkBytes))
    let end = 0
    const writing = Effect.zipRight(
      writeTimes(connection, bulkChunk(params.chunkBytes), params.totalBytes / params.chunkBytes),
      connection.endWrite
    )
    const reading = connection.stream.pipe(Stream.runForEach((data) =>
      Effect.sync(() => {
        check.accept(data)
        if (check.done) end = now()
      })
    ))
    const start = now()
    yield* Effect.all([writing, reading], { concurrency: 2, discard: true })
    check.complete()
    return { seconds: seconds(start, end), bytes: check.bytes }
  })

/** One request/response: write the request, read exactly its response. */
const exchange = (connection: Connection.Connection, k: number, request: ReadonlyArray<Uint8Array>, messageBytes: number) =>
  Effect.flatMap(
    Effect.zipRight(connection.write(request[k % 251]!), connection.readExactly(messageBytes)),
    (response) => Effect.sync(() => checkResponse(response, k, messageBytes))
  )

/** `roundTrips` exchanges, one at a time, each through `use` (a held connection, or a borrow from a pool). */
const sequential = (
  use: <A, E>(f: (connection: Connection.Connection) => Effect.Effect<A, E>) => Effect.Effect<A, unknown>,
  params: Params
) =>
  Effect.gen(function*() {
    const { roundTrips: total, messageBytes } = params
    const request = requests(messageBytes)
    const latencies = new Latencies(total)
    const start = now()
    for (let k = 0; k < total; k++) {
      const sentAt = now()
      yield* use((connection) => exchange(connection, k, request, messageBytes))
      latencies.record(now() - sentAt)
    }
    return { seconds: seconds(start, now()), roundTrips: latencies.recorded, ...latencies.summary() }
  })

const held = (port: number, params: Params, open = connect) =>
  Effect.flatMap(open(port), (connection) => sequential((f) => f(connection), params))

const pooled = (port: number, params: Params) =>
  Effect.gen(function*() {
    const pool = yield* ConnectionPool.make({ host, port })
    // The first borrow opens the connection: done before timing, as the held connection is.
    yield* pool.use((connection) => exchange(connection, 0, requests(params.messageBytes), params.messageBytes))
    return yield* sequential(pool.use, params)
  })

/** Up to `inFlight` requests outstanding: read what arrived, record the responses in it, send as many requests. */
const pipelined = (port: number, params: Params) =>
  Effect.gen(function*() {
    const connection = yield* connect(port)
    const { inFlight, roundTrips: total, messageBytes } = params
    const request = requests(messageBytes)
    const check = new StreamCheck("responses", total * messageBytes, responseByte(messageBytes))
    const latencies = new Latencies(total)
    const sentAt = new Float64Array(total)
    let sent = 0
    let answered = 0
    const sendMore = Effect.gen(function*() {
      while (sent < total && sent - answered < inFlight) {
        sentAt[sent] = now()
        yield* connection.write(request[sent % 251]!)
        sent++
      }
    })
    const start = now()
    yield* sendMore
    while (answered < total) {
      const data = yield* connection.read
      if (Option.isNone(data)) throw new Error(`responses: the server closed after ${answered} of ${total}`)
      check.accept(data.value)
      const complete = Math.floor(check.bytes / messageBytes)
      if (complete === answered) continue
      const at = now()
      for (; answered < complete; answered++) latencies.record(at - sentAt[answered]!)
      yield* sendMore
    }
    const end = now()
    return { seconds: seconds(start, end), roundTrips: latencies.recorded, ...latencies.summary() }
  })

const storm = (port: number, params: Params) =>
  Effect.gen(function*() {
    const { connections, messageBytes } = params
    const request = requests(messageBytes)
    const start = now()
    yield* Effect.forEach(
      Array.from({ length: connections }, (_, i) => i),
      (i) => Effect.scoped(Effect.flatMap(connect(port), (connection) => exchange(connection, i, request, messageBytes))),
      { concurrency: "unbounded", discard: true }
    )
    return { seconds: seconds(start, now()), connections }
  })

/** Connections one after another, each a full TLS handshake (no session offered), one exchange, then closed. */
const handshakes = (port: number, params: Params) =>
  Effect.gen(function*() {
    if (clientTls === undefined) return yield* Effect.dieMessage("handshakes: a TLS job, run without certificates")
    const { handshakes: total, messageBytes } = params
    const request = requests(messageBytes)
    const start = now()
    for (let i = 0; i < total; i++) {
      yield* Effect.scoped(Effect.flatMap(connect(port), (connection) => exchange(connection, i, request, messageBytes)))
    }
    return { seconds: seconds(start, now()), connections: total }
  })

const framing = () => Framing.lengthPrefixed({ headerBytes: 4, endian: "big", maxFrameBytes: 64 * 1024 })

/** Frames through `Framing.stream` (`useReader` false) or a `Framing.reader`'s `read`. */
const frames = (port: number, params: Params, useReader: boolean) =>
  Effect.gen(function*() {
    const connection = yield* connect(port)
    const { frames: expected, wireBytes } = frameCounts(params.totalBytes, params.frameBytes)
    const check = new FrameCheck(expected, params.frameBytes)
    const format = framing()
    let end = 0
    const accept = (frame: Uint8Array) => {
      check.accept(frame)
      if (check.done) end = now()
    }
    const start = now()
    yield* connection.write(go)
    if (useReader) {
      const reader = yield* Framing.reader(connection, format)
      for (;;) {
        const frame = yield* reader.read
        if (Option.isNone(frame)) break
        accept(frame.value)
      }
    } else {
      yield* Framing.stream(connection, format).pipe(Stream.runForEach((frame) => Effect.sync(() => accept(frame))))
    }
    check.complete()
    return { seconds: seconds(start, end), bytes: wireBytes, frames: check.frames }
  })

type Client = (port: number, params: Params) => Effect.Effect<Parameters<typeof finishClient>[0], unknown, Tcp.Tcp>

const clients: Partial<Record<ClientJob, Client>> = {
  upload: (port, params) => Effect.scoped(upload(port, params)),
  download: (port, params) => Effect.scoped(download(port, params)),
  "download-timeouts": (port, params) => Effect.scoped(download(port, params, connectWithTimeouts)),
  echo: (port, params) => Effect.scoped(echo(port, params)),
  "rr-seq": (port, params) => Effect.scoped(held(port, params)),
  "rr-seq-timeouts": (port, params) => Effect.scoped(held(port, params, connectWithTimeouts)),
  "rr-pipe": (port, params) => Effect.scoped(pipelined(port, params)),
  storm,
  "pool-held": (port, params) => Effect.scoped(held(port, params)),
  "pool-use": (port, params) => Effect.scoped(pooled(port, params)),
  "frames-stream": (port, params) => Effect.scoped(frames(port, params, false)),
  "frames-reader": (port, params) => Effect.scoped(frames(port, params, true)),
  handshakes
}

const main = async () => {
  const run = invocation()
  if (run.role === "server") {
    return Effect.runPromise(serve(run.job, run.params).pipe(Effect.scoped, Effect.provide(NodeTcp.layer)))
  }
  const client = clients[run.job]
  if (client === undefined) throw new Error(`effect-tcp has no client job ${run.job}`)
  const pem = tlsPem(run.params)
  if (pem !== undefined) clientTls = { ca: pem.ca }
  const port = await awaitPort()
  finishClient(await Effect.runPromise(client(port, run.params).pipe(Effect.provide(NodeTcp.layer))))
}

main().catch(fail)
