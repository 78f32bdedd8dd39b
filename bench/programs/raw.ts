/**
 * The baseline: every job written directly on `node:net`, the way a careful Node programmer
 * would (writes that respect `drain`, `pipe` for echo, no copies that the job does not need);
 * on `node:tls` for the TLS scenarios (`params.tls`), with the client's secure context (the CA it
 * trusts) built once, and no session kept from one connection to the next.
 *
 *   node --import tsx bench/programs/raw.ts server|client <job> '<params JSON>'
 */
import * as fs from "node:fs"
import * as net from "node:net"
import * as tls from "node:tls"
import { FrameCheck, frameBlock, frameCounts, LengthPrefixedDecoder } from "./frames.js"
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

const ack = Buffer.from([1])
const go = Buffer.from([goByte])

/** Writes `chunk` `times` times, waiting for `drain` whenever Node's buffer is full, then calls `done`. */
const pump = (socket: net.Socket, chunk: Buffer, times: number, done: () => void): void => {
  let sent = 0
  const more = (): void => {
    while (sent < times) {
      sent++
      if (!socket.write(chunk)) {
        socket.once("drain", more)
        return
      }
    }
    done()
  }
  more()
}

// ---------------------------------------------------------------------------
// servers

const serve = (job: ServerJob, params: Params): void => {
  const chunk = bulkChunk(params.chunkBytes)
  const block = job === "frame-source" ? frameBlock(params.frameBytes) : undefined
  let connections = 0
  let bytesReceived = 0
  let errors = 0

  const handlers: Record<ServerJob, (socket: net.Socket) => void> = {
    sink: (socket) => {
      const check = new StreamCheck("upload", params.totalBytes, bulkByte(params.chunkBytes))
      socket.on("data", (data: Buffer) => {
        check.accept(data)
        if (check.done) socket.write(ack)
      })
      socket.on("end", () => {
        bytesReceived += check.bytes
        socket.end()
      })
    },
    source: (socket) => {
      socket.once("data", () => pump(socket, chunk, params.totalBytes / params.chunkBytes, () => socket.end()))
      socket.on("end", () => socket.end())
    },
    echo: (socket) => {
      socket.pipe(socket)
    },
    "echo-stream": () => {
      throw new Error("the stream echo is effect-tcp only")
    },
    "frame-source": (socket) => {
      const { blocks } = frameCounts(params.totalBytes, params.frameBytes)
      socket.once("data", () => pump(socket, block!, blocks, () => socket.end()))
      socket.on("end", () => socket.end())
    }
  }
  const handle = handlers[job]

  const onConnection = (socket: net.Socket) => {
    connections++
    socket.on("error", (error) => {
      errors++
      process.stderr.write(`server connection failed: ${error.message}\n`)
    })
    handle(socket)
  }
  const pem = tlsPem(params)
  const server = pem === undefined
    ? net.createServer({ allowHalfOpen: true, noDelay: true }, onConnection)
    : tls.createServer({ allowHalfOpen: true, noDelay: true, cert: pem.cert, key: pem.key }, onConnection)
        .on("tlsClientError", (error) => {
          errors++
          process.stderr.write(`server handshake failed: ${error.message}\n`)
        })
  // A file left by a run that was killed; the server removes its own when it closes.
  if (socketPath !== undefined) fs.rmSync(socketPath, { force: true })
  const where = socketPath === undefined ? { host, port: 0 } : { path: socketPath }
  server.listen({ ...where, backlog: params.backlog }, async () => {
    const baselineRssKiB = rssKiB()
    announcePort(socketPath === undefined ? (server.address() as net.AddressInfo).port : 0)
    await awaitStop()
    finishServer({ connections, bytesReceived, errors, baselineRssKiB })
  })
}

// ---------------------------------------------------------------------------
// clients

/** The client's TLS for a TLS scenario: the CA it trusts, in a secure context made once (set by `main`). */
let secureContext: tls.SecureContext | undefined

const connect = (port: number): Promise<net.Socket> =>
  new Promise((resolve, reject) => {
    const socket = secureContext === undefined
      ? net.connect(socketPath === undefined ? { host, port, noDelay: true } : { path: socketPath })
      // tls.connect does not take noDelay (Node 20 ignores it): set on the socket instead.
      : tls.connect({ host, port, secureContext }).setNoDelay(true)
    socket.once(secureContext === undefined ? "connect" : "secureConnect", () => {
      socket.off("error", reject)
      socket.on("error", fail)
      resolve(socket)
    })
    socket.once("error", reject)
  })

/** Resolves once the peer has closed its side, failing on any byte that was not expected. */
const untilEnd = (socket: net.Socket): Promise<void> =>
  new Promise((resolve) => socket.once("end", resolve))

const upload = async (port: number, params: Params) => {
  const socket = await connect(port)
  let acked = 0
  let end = 0
  socket.on("data", (data: Buffer) => {
    acked += data.length
    if (end === 0) end = now()
  })
  const ended = untilEnd(socket)
  const start = now()
  pump(socket, bulkChunk(params.chunkBytes), params.totalBytes / params.chunkBytes, () => socket.end())
  await ended
  if (acked !== 1) throw new Error(`upload: the server acknowledged with ${acked} bytes instead of 1`)
  finishClient({ seconds: seconds(start, end), bytes: params.totalBytes })
}

const download = async (port: number, params: Params) => {
  const socket = await connect(port)
  const check = new StreamCheck("download", params.totalBytes, bulkByte(params.chunkBytes))
  let end = 0
  socket.on("data", (data: Buffer) => {
    check.accept(data)
    if (check.done) end = now()
  })
  const ended = untilEnd(socket)
  const start = now()
  socket.write(go)
  await ended
  check.complete()
  finishClient({ seconds: seconds(start, end), bytes: check.bytes })
}

const echo = async (port: number, params: Params) => {
  const socket = await connect(port)
  const check = new StreamCheck("echo", params.totalBytes, bulkByte(params.chunkBytes))
  let end = 0
  socket.on("data", (data: Buffer) => {
    check.accept(data)
    if (check.done) end = now()
  })
  const ended = untilEnd(socket)
  const start = now()
  pump(socket, bulkChunk(params.chunkBytes), params.totalBytes / params.chunkBytes, () => socket.end())
  await ended
  check.complete()
  finishClient({ seconds: seconds(start, end), bytes: check.bytes })
}

/** Round trips with up to `inFlight` requests outstanding (1: sequential). */
const roundTrips = async (port: number, params: Params, inFlight: number) => {
  const socket = await connect(port)
  const { roundTrips: total, messageBytes } = params
  const request = requests(messageBytes)
  const check = new StreamCheck("responses", total * messageBytes, responseByte(messageBytes))
  const latencies = new Latencies(total)
  const sentAt = new Float64Array(total)
  let sent = 0
  let answered = 0
  let end = 0
  const sendMore = () => {
    while (sent < total && sent - answered < inFlight) {
      sentAt[sent] = now()
      socket.write(request[sent % 251]!)
      sent++
    }
  }
  const finished = new Promise<void>((resolve) => {
    socket.on("data", (data: Buffer) => {
      check.accept(data)
      const complete = Math.floor(check.bytes / messageBytes)
      if (complete === answered) return
      const at = now()
      for (; answered < complete; answered++) latencies.record(at - sentAt[answered]!)
      if (answered === total) {
        end = at
        resolve()
      } else {
        sendMore()
      }
    })
  })
  const start = now()
  sendMore()
  await finished
  socket.end()
  await untilEnd(socket)
  finishClient({ seconds: seconds(start, end), roundTrips: latencies.recorded, ...latencies.summary() })
}

const storm = async (port: number, params: Params) => {
  const { connections, messageBytes } = params
  const request = requests(messageBytes)
  let closed = 0
  const start = now()
  await new Promise<void>((resolve, reject) => {
    for (let i = 0; i < connections; i++) {
      const socket = net.connect({ host, port, noDelay: true })
      const chunks: Array<Buffer> = []
      let received = 0
      socket.on("error", reject)
      socket.once("connect", () => socket.write(request[i % 251]!))
      socket.on("data", (data: Buffer) => {
        chunks.push(data)
        received += data.length
        if (received >= messageBytes) {
          checkResponse(Buffer.concat(chunks), i, messageBytes)
          socket.destroy()
        }
      })
      socket.once("close", () => {
        if (received !== messageBytes) return reject(new Error(`storm: connection ${i} closed after ${received} bytes`))
        if (++closed === connections) resolve()
      })
    }
  })
  finishClient({ seconds: seconds(start, now()), connections: closed })
}

/** One exchange: write request `k`, read its response, check it. */
const exchange = (socket: net.Socket, k: number, request: ReadonlyArray<Buffer>, messageBytes: number): Promise<void> =>
  new Promise((resolve, reject) => {
    const chunks: Array<Buffer> = []
    let received = 0
    const onData = (data: Buffer) => {
      chunks.push(data)
      received += data.length
      if (received < messageBytes) return
      socket.off("data", onData).off("end", onEnd)
      try {
        checkResponse(Buffer.concat(chunks), k, messageBytes)
        resolve()
      } catch (error) {
        reject(error)
      }
    }
    const onEnd = () => reject(new Error(`exchange ${k}: the server closed after ${received} bytes`))
    socket.on("data", onData).once("end", onEnd)
    socket.write(request[k % 251]!)
  })

/** Connections one after another, each a full TLS handshake (no session offered), one exchange, then closed. */
const handshakes = async (port: number, params: Params) => {
  if (secureContext === undefined) throw new Error("handshakes: a TLS job, run without certificates")
  const { handshakes: total, messageBytes } = params
  const request = requests(messageBytes)
  let resumed = 0
  const start = now()
  for (let i = 0; i < total; i++) {
    const socket = await connect(port)
    if ((socket as tls.TLSSocket).isSessionReused()) resumed++
    await exchange(socket, i, request, messageBytes)
    socket.destroy()
  }
  finishClient({ seconds: seconds(start, now()), connections: total, resumed })
}

const frames = async (port: number, params: Params, decode: boolean) => {
  const socket = await connect(port)
  const { frames: expected, wireBytes } = frameCounts(params.totalBytes, params.frameBytes)
  const check = new FrameCheck(expected, params.frameBytes)
  const decoder = new LengthPrefixedDecoder(64 * 1024, (frame) => check.accept(frame))
  let bytes = 0
  let end = 0
  socket.on("data", (data: Buffer) => {
    bytes += data.length
    if (bytes > wireBytes) throw new Error(`frames: received ${bytes} bytes, more than the ${wireBytes} sent`)
    if (decode) decoder.push(data)
    if (bytes === wireBytes) end = now()
  })
  const ended = untilEnd(socket)
  const start = now()
  socket.write(go)
  await ended
  if (bytes !== wireBytes) throw new Error(`frames: received ${bytes} of ${wireBytes} bytes`)
  if (decode) {
    check.complete()
    if (decoder.midFrame) throw new Error("frames: the stream ended in the middle of a frame")
  }
  finishClient({ seconds: seconds(start, end), bytes, ...(decode ? { frames: check.frames } : {}) })
}

const clients: Partial<Record<ClientJob, (port: number, params: Params) => Promise<void>>> = {
  upload,
  download,
  echo,
  "rr-seq": (port, params) => roundTrips(port, params, 1),
  "rr-pipe": (port, params) => roundTrips(port, params, params.inFlight),
  storm,
  "frames-count": (port, params) => frames(port, params, false),
  "frames-decode": (port, params) => frames(port, params, true),
  handshakes
}

const main = async () => {
  const run = invocation()
  if (run.role === "server") return serve(run.job, run.params)
  const client = clients[run.job]
  if (client === undefined) throw new Error(`raw node:net has no client job ${run.job}`)
  const pem = tlsPem(run.params)
  if (pem !== undefined) secureContext = tls.createSecureContext({ ca: pem.ca })
  await client(await awaitPort(), run.params)
}

process.on("uncaughtException", fail)
main().catch(fail)
