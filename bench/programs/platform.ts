/**
 * Every job written with `@effect/platform`'s `Socket` over `@effect/platform-node` (Effect 3):
 * `NodeSocket.makeNet` for clients, `NodeSocketServer.make` + `run` for servers, reading with
 * `Socket.run` (a handler called for each chunk) and writing through `socket.writer` (each write
 * done when Node's callback says the bytes were flushed), as that library documents them.
 *
 *   node --import tsx bench/programs/platform.ts server|client <job> '<params JSON>'
 */
import * as NodeSocket from "@effect/platform-node/NodeSocket"
import * as NodeSocketServer from "@effect/platform-node/NodeSocketServer"
import * as Socket from "@effect/platform/Socket"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Queue from "effect/Queue"
import * as Stream from "effect/Stream"
import { FrameCheck, frameCounts, LengthPrefixedDecoder } from "./frames.js"
import {
  announcePort,
  awaitPort,
  awaitStop,
  fail,
  finishClient,
  finishServer,
  host,
  invocation,
  Latencies,
  now,
  rssKiB,
  seconds
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

/** A peer's FIN ends `run` normally, but a close that comes first is reported as code 1000: also normal. */
const cleanClose = Effect.catchIf(Socket.SocketCloseError.isClean((code) => code === 1000), () => Effect.void)

/** Writes `chunk` `times` times, one after the other. */
const writeTimes = (write: (chunk: Uint8Array) => Effect.Effect<void, Socket.SocketError>, chunk: Uint8Array, times: number) =>
  Effect.gen(function*() {
    for (let i = 0; i < times; i++) yield* write(chunk)
  })

/** Runs `socket` with `onChunk` in a fiber and waits until it is open, so that timing starts on a connected socket. */
const runOpen = <E = never, R = never>(
  socket: Socket.Socket,
  onChunk: (chunk: Uint8Array) => Effect.Effect<unknown, E, R> | void
) =>
  Effect.gen(function*() {
    const opened = yield* Deferred.make<void>()
    const fiber = yield* socket.run(onChunk, { onOpen: Deferred.complete(opened, Effect.void) }).pipe(
      cleanClose,
      Effect.forkScoped
    )
    yield* Effect.raceFirst(Deferred.await(opened), Fiber.join(fiber))
    return fiber
  })

// ---------------------------------------------------------------------------
// servers

const serve = (job: ServerJob, params: Params) =>
  Effect.gen(function*() {
    const chunk = bulkChunk(params.chunkBytes)
    let connections = 0
    let bytesReceived = 0
    let errors = 0

    const handlers: Record<ServerJob, (socket: Socket.Socket) => Effect.Effect<void, unknown>> = {
      sink: (socket) =>
        Effect.gen(function*() {
          const check = new StreamCheck("upload", params.totalBytes, bulkByte(params.chunkBytes))
          const write = yield* socket.writer
          yield* socket.run((data) => {
            check.accept(data)
            return check.done ? write(ack) : undefined
          }).pipe(cleanClose)
          bytesReceived += check.bytes
        }).pipe(Effect.scoped),
      source: (socket) =>
        Effect.gen(function*() {
          const started = yield* Deferred.make<void>()
          const reading = yield* socket.run(() => {
            Deferred.unsafeDone(started, Exit.void)
          }).pipe(
            cleanClose,
            Effect.forkScoped
          )
          yield* Effect.raceFirst(Deferred.await(started), Fiber.join(reading))
          // Closing the writer's scope half-closes the connection.
          yield* Effect.scoped(
            Effect.flatMap(socket.writer, (write) => writeTimes(write, chunk, params.totalBytes / params.chunkBytes))
          )
          yield* Fiber.join(reading)
        }).pipe(Effect.scoped),
      echo: (socket) =>
        Effect.flatMap(socket.writer, (write) => socket.run(write)).pipe(cleanClose, Effect.scoped),
      "echo-stream": () => Effect.dieMessage("the stream echo is effect-tcp only"),
      "frame-source": () => Effect.dieMessage("the frame source is raw node:net only")
    }
    const handle = handlers[job]

    const server = yield* NodeSocketServer.make({ host, port: 0, backlog: params.backlog, noDelay: true })
    if (server.address._tag !== "TcpAddress") return yield* Effect.dieMessage("not a TCP address")
    yield* server.run((socket) => {
      connections++
      return handle(socket).pipe(
        Effect.catchAllCause((cause) =>
          Effect.sync(() => {
            errors++
            process.stderr.write(`server connection failed: ${cause}\n`)
          })
        )
      )
    }).pipe(Effect.forkScoped)
    const baselineRssKiB = rssKiB()
    announcePort(server.address.port)
    yield* Effect.promise(awaitStop)
    finishServer({ connections, bytesReceived, errors, baselineRssKiB })
  })

// ---------------------------------------------------------------------------
// clients

const open = (port: number) => NodeSocket.makeNet({ host, port, noDelay: true })

const upload = (port: number, params: Params) =>
  Effect.gen(function*() {
    const socket = yield* open(port)
    let acked = 0
    let end = 0
    const reading = yield* runOpen(socket, (data) => {
      acked += data.length
      if (end === 0) end = now()
    })
    const start = now()
    yield* Effect.scoped(
      Effect.flatMap(
        socket.writer,
        (write) => writeTimes(write, bulkChunk(params.chunkBytes), params.totalBytes / params.chunkBytes)
      )
    )
    yield* Fiber.join(reading)
    if (acked !== 1) throw new Error(`upload: the server acknowledged with ${acked} bytes instead of 1`)
    return { seconds: seconds(start, end), bytes: params.totalBytes }
  })

const download = (port: number, params: Params) =>
  Effect.gen(function*() {
    const socket = yield* open(port)
    const check = new StreamCheck("download", params.totalBytes, bulkByte(params.chunkBytes))
    const write = yield* socket.writer
    let start = 0
    let end = 0
    yield* socket.run((data) => {
      check.accept(data)
      if (check.done) end = now()
    }, {
      onOpen: Effect.suspend(() => {
        start = now()
        return Effect.orDie(write(go))
      })
    }).pipe(cleanClose)
    check.complete()
    return { seconds: seconds(start, end), bytes: check.bytes }
  })

const echo = (port: number, params: Params) =>
  Effect.gen(function*() {
    const socket = yield* open(port)
    const check = new StreamCheck("echo", params.totalBytes, bulkByte(params.chunkBytes))
    let end = 0
    const reading = yield* runOpen(socket, (data) => {
      check.accept(data)
      if (check.done) end = now()
    })
    const start = now()
    yield* Effect.scoped(
      Effect.flatMap(
        socket.writer,
        (write) => writeTimes(write, bulkChunk(params.chunkBytes), params.totalBytes / params.chunkBytes)
      )
    )
    yield* Fiber.join(reading)
    check.complete()
    return { seconds: seconds(start, end), bytes: check.bytes }
  })

/** One request at a time: write it, then take chunks from the queue the socket fills until its response is in. */
const sequential = (port: number, params: Params) =>
  Effect.gen(function*() {
    const socket = yield* open(port)
    const { roundTrips: total, messageBytes } = params
    const request = requests(messageBytes)
    const check = new StreamCheck("responses", total * messageBytes, responseByte(messageBytes))
    const latencies = new Latencies(total)
    const incoming = yield* Queue.unbounded<Uint8Array>()
    yield* runOpen(socket, (data) => {
      Queue.unsafeOffer(incoming, data)
    })
    const write = yield* socket.writer
    const start = now()
    for (let k = 0; k < total; k++) {
      const sentAt = now()
      yield* write(request[k % 251]!)
      const expected = (k + 1) * messageBytes
      while (check.bytes < expected) check.accept(yield* Queue.take(incoming))
      latencies.record(now() - sentAt)
    }
    return { seconds: seconds(start, now()), roundTrips: latencies.recorded, ...latencies.summary() }
  })

/** Up to `inFlight` requests outstanding: each chunk's handler records the responses in it and sends as many requests. */
const pipelined = (port: number, params: Params) =>
  Effect.gen(function*() {
    const socket = yield* open(port)
    const { inFlight, roundTrips: total, messageBytes } = params
    const request = requests(messageBytes)
    const check = new StreamCheck("responses", total * messageBytes, responseByte(messageBytes))
    const latencies = new Latencies(total)
    const sentAt = new Float64Array(total)
    const finished = yield* Deferred.make<void>()
    const write = yield* socket.writer
    let sent = 0
    let answered = 0
    let end = 0
    const sendMore = (): Effect.Effect<void, Socket.SocketError> | undefined => {
      const batch: Array<Uint8Array> = []
      while (sent < total && sent - answered < inFlight) {
        sentAt[sent] = now()
        batch.push(request[sent % 251]!)
        sent++
      }
      return batch.length === 0 ? undefined : Effect.forEach(batch, write, { discard: true })
    }
    yield* runOpen(socket, (data) => {
      check.accept(data)
      const complete = Math.floor(check.bytes / messageBytes)
      if (complete === answered) return
      const at = now()
      for (; answered < complete; answered++) latencies.record(at - sentAt[answered]!)
      if (answered < total) return sendMore()
      end = at
      Deferred.unsafeDone(finished, Exit.void)
      return undefined
    })
    const start = now()
    yield* sendMore()!
    yield* Deferred.await(finished)
    return { seconds: seconds(start, end), roundTrips: latencies.recorded, ...latencies.summary() }
  })

const storm = (port: number, params: Params) =>
  Effect.gen(function*() {
    const { connections, messageBytes } = params
    const request = requests(messageBytes)
    const exchange = (i: number) =>
      Effect.gen(function*() {
        const socket = yield* open(port)
        const write = yield* socket.writer
        const chunks: Array<Uint8Array> = []
        let received = 0
        const answered = yield* Deferred.make<void>()
        const reading = yield* socket.run((data) => {
          chunks.push(data)
          received += data.length
          if (received >= messageBytes) Deferred.unsafeDone(answered, Exit.void)
        }, { onOpen: Effect.orDie(write(request[i % 251]!)) }).pipe(cleanClose, Effect.forkScoped)
        yield* Effect.raceFirst(Deferred.await(answered), Fiber.join(reading))
        checkResponse(Buffer.concat(chunks), i, messageBytes)
      }).pipe(Effect.scoped)
    const start = now()
    yield* Effect.forEach(Array.from({ length: connections }, (_, i) => i), exchange, {
      concurrency: "unbounded",
      discard: true
    })
    return { seconds: seconds(start, now()), connections }
  })

/** Platform has no framing for sockets: its byte stream (`Socket.toChannel`), decoded by hand. */
const frames = (port: number, params: Params) =>
  Effect.gen(function*() {
    const socket = yield* open(port)
    const { frames: expected, wireBytes } = frameCounts(params.totalBytes, params.frameBytes)
    const check = new FrameCheck(expected, params.frameBytes)
    const decoder = new LengthPrefixedDecoder(64 * 1024, (frame) => check.accept(frame))
    let bytes = 0
    let start = 0
    let end = 0
    const outgoing = Stream.make(go).pipe(
      Stream.tap(() => Effect.sync(() => (start = now()))),
      Stream.concat(Stream.never)
    )
    yield* outgoing.pipe(
      Stream.pipeThroughChannel(Socket.toChannel(socket)),
      Stream.runForEach((data) =>
        Effect.sync(() => {
          bytes += data.length
          decoder.push(Buffer.from(data.buffer, data.byteOffset, data.byteLength))
          if (bytes === wireBytes) end = now()
        })
      ),
      cleanClose
    )
    if (bytes !== wireBytes) throw new Error(`frames: received ${bytes} of ${wireBytes} bytes`)
    check.complete()
    if (decoder.midFrame) throw new Error("frames: the stream ended in the middle of a frame")
    return { seconds: seconds(start, end), bytes, frames: check.frames }
  })

type Client = (port: number, params: Params) => Effect.Effect<Parameters<typeof finishClient>[0], unknown, never>

const clients: Partial<Record<ClientJob, Client>> = {
  upload: (port, params) => Effect.scoped(upload(port, params)),
  download: (port, params) => Effect.scoped(download(port, params)),
  echo: (port, params) => Effect.scoped(echo(port, params)),
  "rr-seq": (port, params) => Effect.scoped(sequential(port, params)),
  "rr-pipe": (port, params) => Effect.scoped(pipelined(port, params)),
  storm,
  "frames-decode": (port, params) => Effect.scoped(frames(port, params))
}

const main = async () => {
  const run = invocation()
  if (run.role === "server") return Effect.runPromise(Effect.scoped(serve(run.job, run.params)))
  const client = clients[run.job]
  if (client === undefined) throw new Error(`platform has no client job ${run.job}`)
  const port = await awaitPort()
  finishClient(await Effect.runPromise(client(port, run.params)))
}

main().catch(fail)
