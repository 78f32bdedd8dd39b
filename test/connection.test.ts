import { describe, expect, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import { type ChildProcess, spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import * as net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import type * as tls from "node:tls"
import { Connection, Framing, Tcp, TcpError } from "../src/index.js"
import { type ConnectionOptions, type ConnectionSocket, NodeConnection } from "../src/internal/connection.js"
import { duplexPair, type MemorySocket } from "./support/duplexPair.js"
import { awaitSleeps, closed, collect, connectTo, effect, eventually, live, rawServer, realSleep, text, tcp } from "./support/harness.js"

/** Writes `data` one byte per event-loop turn: the reader sees many tiny chunks. */
const dribble = (socket: net.Socket, data: Buffer, then?: () => void) => {
  let i = 0
  const next = () => {
    if (socket.destroyed) return
    if (i === data.length) return then?.()
    socket.write(data.subarray(i, i + 1), () => setImmediate(next))
    i++
  }
  next()
}

/** Writes `count` chunks of `size` bytes, one per turn of the event loop: that many separate chunks. */
const writeApart = (count: number, size: number) => (socket: net.Socket) => {
  let sent = 0
  const next = (): void => {
    if (sent++ === count || socket.destroyed) return
    socket.write(Buffer.alloc(size, 1))
    setImmediate(next)
  }
  next()
}

/** The white-box view of a connection's byte queue. */
interface QueueInternals {
  readonly chunks: ReadonlyArray<Buffer>
  readonly head: number
  readonly length: number
}

describe("Connection reads", () => {
  live("read yields the bytes as they come, then None at the peer's FIN, and None again after", () =>
    Effect.gen(function*() {
      const { connection } = yield* connectTo((socket) => socket.end("hello"))
      let received = ""
      for (;;) {
        const chunk = yield* connection.read
        if (Option.isNone(chunk)) break
        received += text(chunk.value)
      }
      expect(received).toBe("hello")
      expect(yield* connection.read).toEqual(Option.none())
      expect(yield* connection.state).toEqual({ _tag: "HalfClosed", readable: false, writable: true })
    }))

  live("readExactly collects bytes that arrive one at a time and keeps what follows for the next read", () =>
    Effect.gen(function*() {
      const { connection } = yield* connectTo((socket) => dribble(socket, Buffer.from("0123456789abc")))
      expect(text(yield* connection.readExactly(4))).toBe("0123")
      expect(text(yield* connection.readExactly(6))).toBe("456789")
      expect(text(yield* connection.readExactly(3))).toBe("abc")
      expect(text(yield* connection.readExactly(0))).toBe("")
    }))

  live("readExactly of a large block split across many chunks is byte-exact", () =>
    Effect.gen(function*() {
      const data = randomBytes(3 * 1024 * 1024 + 7)
      const { connection } = yield* connectTo((socket) => socket.end(data))
      const first = yield* connection.readExactly(1000)
      const rest = yield* connection.readExactly(data.length - 1000)
      expect(Buffer.concat([first, rest]).equals(data)).toBe(true)
      expect(yield* connection.read).toEqual(Option.none())
    }))

  live("readExactly fails with UnexpectedEof saying how many bytes came, and keeps them", () =>
    Effect.gen(function*() {
      const { connection, port } = yield* connectTo((socket) => socket.end("abcde"))
      const error = yield* Effect.flip(connection.readExactly(8))
      expect(error._tag).toBe("UnexpectedEof")
      if (error._tag !== "UnexpectedEof") return
      expect(error.expected).toBe(8)
      expect(error.received).toBe(5)
      expect(error.message).toBe(
        `read on the connection with 127.0.0.1:${port} failed: the peer closed the connection after 5 of 8 bytes`
      )
      expect(text(yield* connection.readExactly(5))).toBe("abcde")
    }))

  live("readUntil finds a delimiter split across chunks and leaves the rest for the next read", () =>
    Effect.gen(function*() {
      const { connection } = yield* connectTo((socket) =>
        dribble(socket, Buffer.from("first\r\nsecond\r\nrest"), () => socket.end())
      )
      expect(text(yield* connection.readUntil("\r\n"))).toBe("first")
      expect(text(yield* connection.readUntil(new Uint8Array([13, 10])))).toBe("second")
      const error = yield* Effect.flip(connection.readUntil("\r\n"))
      expect(error._tag).toBe("UnexpectedEof")
      if (error._tag === "UnexpectedEof") {
        expect(error.received).toBe(4)
        expect(error.expected).toBeUndefined()
      }
      expect(text(yield* connection.readExactly(4))).toBe("rest")
    }))

  live("readUntil fails with FrameTooLarge once more than maxFrameBytes arrive without the delimiter", () =>
    Effect.gen(function*() {
      const { connection } = yield* connectTo((socket) => socket.write(Buffer.alloc(100_000, "x")))
      const error = yield* Effect.flip(connection.readUntil("\n", { maxFrameBytes: 1000 }))
      expect(error._tag).toBe("FrameTooLarge")
      if (error._tag !== "FrameTooLarge") return
      expect(error.maxBytes).toBe(1000)
      expect(error.size).toBeGreaterThan(1000)
      // It stopped reading near the limit instead of buffering all 100,000 bytes.
      expect(error.size).toBeLessThanOrEqual(1000 + 65536)
    }))

  live("bad arguments to readExactly and readUntil fail with InvalidOptions, and consume nothing", () =>
    Effect.gen(function*() {
      const { connection } = yield* connectTo((socket) => socket.write("data\n"))
      expect(yield* Effect.flip(connection.readExactly(-1))).toMatchObject({
        _tag: "InvalidOptions",
        operation: "read",
        issues: "readExactly: the size must be a non-negative integer, got -1"
      })
      expect((yield* Effect.flip(connection.readExactly(1.5)))._tag).toBe("InvalidOptions")
      expect(yield* Effect.flip(connection.readUntil(""))).toMatchObject({
        _tag: "InvalidOptions",
        issues: "readUntil: the delimiter must not be empty"
      })
      expect((yield* Effect.flip(connection.readUntil("\n", { maxFrameBytes: -3 })))._tag).toBe("InvalidOptions")
      // A caller without types: Buffer.from threw at the call.
      expect(yield* Effect.flip(Effect.suspend(() => connection.readUntil(NaN as unknown as string)))).toMatchObject({
        _tag: "InvalidOptions",
        issues: "readUntil: the delimiter must be a string or bytes, got number"
      })
      // Values that a template string cannot show (it throws for a symbol and for an object
      // without prototype) are still shown in the issue.
      expect(yield* Effect.flip(Effect.suspend(() => connection.readExactly(Symbol("n") as unknown as number)))).toMatchObject({
        issues: "readExactly: the size must be a non-negative integer, got Symbol(n)"
      })
      expect(yield* Effect.flip(Effect.suspend(() => connection.readUntil("\n", { maxFrameBytes: Object.create(null) })))).toMatchObject({
        issues: "readUntil: maxFrameBytes must be a non-negative integer, got [object Object]"
      })
      expect(text(yield* connection.readUntil("\n"))).toBe("data")
    }))

  live("readUntil finds a delimiter that spans three chunks", () =>
    Effect.gen(function*() {
      const { connection } = yield* connectTo((socket) => dribble(socket, Buffer.from("one<=>two<=>")))
      expect(text(yield* connection.readUntil("<=>"))).toBe("one")
      expect(text(yield* connection.readUntil("<=>"))).toBe("two")
    }))

  live("readUntil accepts a line of exactly maxFrameBytes", () =>
    Effect.gen(function*() {
      const line = Buffer.alloc(1000, "y")
      const { connection } = yield* connectTo((socket) => socket.write(Buffer.concat([line, Buffer.from("\n")])))
      expect((yield* connection.readUntil("\n", { maxFrameBytes: 1000 })).length).toBe(1000)
    }))

  live("a peer that resets fails the read with ConnectionReset", () =>
    Effect.gen(function*() {
      const { connection, port } = yield* connectTo((socket) => socket.once("data", () => socket.resetAndDestroy()))
      yield* connection.write("go")
      const error = yield* Effect.flip(connection.read)
      expect(error._tag).toBe("ConnectionReset")
      if (error._tag !== "ConnectionReset") return
      expect(error.code).toBe("ECONNRESET")
      expect(error.operation).toBe("read")
      expect(tcp(error.endpoint).port).toBe(port)
      // The error is sticky: every later operation reports it too.
      expect((yield* Effect.flip(connection.read))._tag).toBe("ConnectionReset")
      expect((yield* Effect.flip(connection.write("x")))._tag).toBe("ConnectionReset")
      expect(yield* connection.state).toEqual({ _tag: "Closed" })
    }))

  effect("a read with no data before readTimeout fails with ReadTimeout, and loses nothing", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* connectTo(() => {}, { readTimeout: "1 second" })
      const fiber = yield* Effect.fork(connection.read)
      yield* awaitSleeps(1)
      yield* TestClock.adjust("999 millis")
      expect(fiber.unsafePoll()).toBeNull()
      yield* TestClock.adjust("1 millis")
      const error = yield* Effect.flip(Fiber.join(fiber))
      expect(error._tag).toBe("ReadTimeout")
      if (error._tag === "ReadTimeout") expect(error.timeoutMillis).toBe(1000)
      // The connection stays usable: bytes that come later are read as usual.
      peer.write("late")
      expect(text(yield* connection.readExactly(4))).toBe("late")
    }))

  live("an interrupted readExactly keeps the bytes it had taken for the next read", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* connectTo(() => {})
      const fiber = yield* Effect.fork(connection.readExactly(10))
      yield* Effect.async<void>((resume) => {
        peer.write("01234", () => resume(Effect.void))
      })
      yield* Effect.sleep("30 millis")
      expect(fiber.unsafePoll()).toBeNull()
      expect(Exit.isInterrupted(yield* Fiber.interrupt(fiber))).toBe(true)
      peer.write("56789")
      expect(text(yield* connection.readExactly(10))).toBe("0123456789")
    }))

  live("reads interrupted by the hundred leave at most 16 waiters behind, and a reader still waiting gets its bytes", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* connectTo(() => {})
      const waiters = () => (connection as unknown as { readonly readWaiters: ReadonlyArray<unknown> }).readWaiters.length
      const patient = yield* Effect.fork(connection.readExactly(5))
      for (let i = 0; i < 300; i++) {
        const impatient = yield* Effect.fork(connection.read)
        yield* Effect.yieldNow()
        expect(Exit.isInterrupted(yield* Fiber.interrupt(impatient))).toBe(true)
      }
      expect(waiters()).toBeLessThanOrEqual(16)
      peer.write("hello")
      expect(text(yield* Fiber.join(patient))).toBe("hello")
    }))

  live("40 reads waiting at once on an idle connection all get their byte, and the process keeps running meanwhile", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* connectTo(() => {})
      const readers = yield* Effect.forEach(
        Array.from({ length: 40 }),
        () => Effect.fork(connection.readExactly(1)),
        { concurrency: "unbounded" }
      )
      // Timers still fire while they wait (more waiters than the stale-waiter limit must not spin).
      yield* realSleep(50)
      peer.write(Buffer.alloc(40, 7))
      const bytes = yield* Effect.forEach(readers, Fiber.join)
      expect(bytes.map((b) => b[0])).toEqual(Array(40).fill(7))
    }))

  live("a stream stopped after its first element leaves the next chunk for the next read", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* connectTo(() => {})
      // Three chunks queued before anyone reads.
      for (const letter of ["a", "b", "c"]) {
        yield* Effect.async<void>((resume) => {
          peer.write(letter.repeat(1000), () => resume(Effect.void))
        })
        yield* realSleep(10)
      }
      yield* eventually(() => (connection as unknown as { readonly bytes: QueueInternals }).bytes.length === 3000)
      const first = yield* connection.stream.pipe(Stream.take(1), Stream.runCollect)
      expect(Chunk.toArray(first).map(text)).toEqual(["a".repeat(1000)])
      expect(text(yield* connection.readExactly(2000))).toBe("b".repeat(1000) + "c".repeat(1000))
    }))

  live("stream yields every byte until the peer's FIN", () =>
    Effect.gen(function*() {
      const data = randomBytes(1024 * 1024)
      const { connection } = yield* connectTo((socket) => socket.end(data))
      const chunks = yield* Stream.runCollect(connection.stream)
      expect(Buffer.concat(Chunk.toArray(chunks)).equals(data)).toBe(true)
    }))

  live("a peer dribbling 10-byte chunks costs the queue bytes, not an entry per chunk", () =>
    Effect.gen(function*() {
      // 6,000 writes of 10 bytes, one per turn of the event loop: thousands of separate chunks,
      // all queued (60,000 bytes, under the mark where the socket pauses).
      const writes = 6000
      const { connection } = yield* connectTo(writeApart(writes, 10))
      // White-box: the connection's byte queue.
      const bytes = (connection as unknown as { readonly bytes: QueueInternals }).bytes
      yield* eventually(() => bytes.length === writes * 10)
      // Small chunks are copied into 4 KiB blocks: 15 entries, not 6,000.
      expect(bytes.chunks.length - bytes.head).toBeLessThanOrEqual(Math.ceil((writes * 10) / 4096) + 1)
      let received = 0
      while (received < writes * 10) {
        const chunk = yield* connection.read
        received += Option.getOrThrow(chunk).length
      }
      expect(received).toBe(writes * 10)
    }))

  live("a read queue that never empties keeps no slot for the chunks already read", () =>
    Effect.gen(function*() {
      // 200 chunks of 300 bytes (large enough to be kept as they came), all queued.
      const writes = 200
      const { connection } = yield* connectTo(writeApart(writes, 300))
      const bytes = (connection as unknown as { readonly bytes: QueueInternals }).bytes
      yield* eventually(() => bytes.length === writes * 300)
      // The kernel may join a few writes into one segment: nearly every write is a chunk.
      const chunks = bytes.chunks.length - bytes.head
      expect(chunks).toBeGreaterThan(150)
      // Read all but 10 chunks: the queue never empties, yet the slots of what was read are dropped.
      for (let i = 0; i < chunks - 10; i++) yield* connection.read
      expect(bytes.chunks.length - bytes.head).toBe(10)
      expect(bytes.head).toBeLessThanOrEqual(64)
    }))

  live("a slow reader applies backpressure: a peer sending 64 MiB cannot run far ahead of it", () =>
    Effect.gen(function*() {
      const total = 64 * 1024 * 1024
      let sent = 0
      const block = Buffer.alloc(64 * 1024, 7)
      const { connection } = yield* connectTo((socket) => {
        const pump = (): void => {
          while (sent < total) {
            sent += block.length
            if (!socket.write(block)) {
              socket.once("drain", pump)
              return
            }
          }
          socket.end()
        }
        pump()
      })
      // Nobody reads for a while: only the kernel buffers and one Node buffer fill up.
      yield* Effect.sleep("300 millis")
      const aheadWhilePaused = sent
      expect(aheadWhilePaused).toBeLessThan(16 * 1024 * 1024)
      let received = 0
      let peakAhead = 0
      for (;;) {
        const chunk = yield* connection.read
        if (Option.isNone(chunk)) break
        received += chunk.value.length
        peakAhead = Math.max(peakAhead, sent - received)
        if (received % (8 * 1024 * 1024) < chunk.value.length) yield* Effect.sleep("20 millis")
      }
      expect(received).toBe(total)
      expect(peakAhead).toBeLessThan(16 * 1024 * 1024)
    }))
})

describe("Connection writes", () => {
  live("write sends everything; 16 MiB through an echoing peer come back byte-exact", () =>
    Effect.gen(function*() {
      const data = randomBytes(16 * 1024 * 1024)
      const { connection } = yield* connectTo((socket) => socket.pipe(socket))
      const writer = yield* Effect.fork(
        Effect.gen(function*() {
          for (let offset = 0; offset < data.length; offset += 100_003) {
            yield* connection.write(data.subarray(offset, offset + 100_003))
          }
          yield* connection.endWrite
        })
      )
      const echoed = yield* connection.readExactly(data.length)
      yield* Fiber.join(writer)
      expect(Buffer.from(echoed).equals(data)).toBe(true)
      expect(yield* connection.read).toEqual(Option.none())
    }))

  live("writeAll sends several chunks in order as one write", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* connectTo(() => {})
      const received = yield* Effect.fork(collect(peer))
      const body = randomBytes(300_000)
      const header = Buffer.alloc(4)
      header.writeUInt32BE(body.length)
      yield* connection.writeAll([header, body, "trailer"])
      yield* connection.writeAll([])
      yield* connection.endWrite
      const all = yield* Fiber.join(received)
      expect(all.readUInt32BE(0)).toBe(300_000)
      expect(all.subarray(4, 300_004).equals(body)).toBe(true)
      expect(all.subarray(300_004).toString()).toBe("trailer")
    }))

  live("sink writes every element of a stream", () =>
    Effect.gen(function*() {
      let received: Buffer | undefined
      const done = yield* Effect.makeLatch()
      const { connection } = yield* connectTo((socket) => {
        const chunks: Array<Buffer> = []
        socket.on("data", (chunk: Buffer) => chunks.push(chunk))
        socket.on("end", () => {
          received = Buffer.concat(chunks)
          done.unsafeOpen()
        })
      })
      yield* Stream.make("alpha ", new Uint8Array([98, 101, 116, 97]), " gamma").pipe(Stream.run(connection.sink))
      yield* connection.endWrite
      yield* done.await
      expect(received!.toString()).toBe("alpha beta gamma")
    }))

  live("endWrite half-closes: the peer sees EOF and can still answer", () =>
    Effect.gen(function*() {
      const { connection } = yield* connectTo((socket) => {
        const chunks: Array<Buffer> = []
        socket.on("data", (chunk: Buffer) => chunks.push(chunk))
        socket.on("end", () => socket.end(`got ${Buffer.concat(chunks).toString().toUpperCase()}`))
      })
      yield* connection.write("question")
      yield* connection.endWrite
      expect(yield* connection.state).toEqual({ _tag: "HalfClosed", readable: true, writable: false })
      yield* connection.endWrite
      const error = yield* Effect.flip(connection.write("more"))
      expect(error._tag).toBe("SocketClosed")
      if (error._tag === "SocketClosed") expect(error.reason).toBe("WriteSideEnded")
      expect(text(yield* connection.readExactly(12))).toBe("got QUESTION")
      expect(yield* connection.read).toEqual(Option.none())
    }))

  live("writing to a peer that closed fails with BrokenPipe", () =>
    Effect.gen(function*() {
      const { connection, peer, port } = yield* connectTo((socket) => socket.destroy())
      yield* closed(peer)
      let error: unknown
      for (let attempt = 0; attempt < 1000 && error === undefined; attempt++) {
        error = yield* connection.write("ping").pipe(Effect.flip, Effect.option, Effect.map(Option.getOrUndefined))
        yield* Effect.sleep("1 millis")
      }
      expect(error).toMatchObject({ _tag: "BrokenPipe", code: "EPIPE", operation: "write" })
      expect((error as Error).message).toBe(
        `write on the connection with 127.0.0.1:${port} failed: broken pipe, the peer closed the connection; close it and reconnect if needed`
      )
    }))

  effect("a write the peer does not take before writeTimeout fails with WriteTimeout", () =>
    Effect.gen(function*() {
      const { connection, port } = yield* connectTo((socket) => socket.pause(), { writeTimeout: "2 seconds" })
      // 64 MiB cannot fit in the kernel buffers of a peer that does not read.
      const fiber = yield* Effect.fork(connection.write(Buffer.alloc(64 * 1024 * 1024)))
      // Real time for the kernel's buffers to fill: from then on no byte moves, and the clock alone
      // decides when the write fails.
      yield* realSleep(200)
      yield* awaitSleeps(1)
      yield* TestClock.adjust("1999 millis")
      expect(fiber.unsafePoll()).toBeNull()
      yield* TestClock.adjust("1 millis")
      const error = yield* Effect.flip(Fiber.join(fiber))
      expect(error).toMatchObject({ _tag: "WriteTimeout", timeoutMillis: 2000 })
      expect((error as Error).message).toBe(
        `write to 127.0.0.1:${port} timed out after 2000 ms: the peer is not reading; close the connection`
      )
    }))
})

describe("Connection interruption", () => {
  live("interrupting a write blocked on a peer that does not read, then closing, leaves nothing behind", () =>
    Effect.gen(function*() {
      const { connection } = yield* connectTo((socket) => socket.pause())
      const fiber = yield* Effect.fork(connection.write(Buffer.alloc(32 * 1024 * 1024)))
      yield* Effect.sleep("50 millis")
      expect(fiber.unsafePoll()).toBeNull()
      expect(Exit.isInterrupted(yield* Fiber.interrupt(fiber))).toBe(true)
      yield* connection.close
      expect(yield* connection.state).toEqual({ _tag: "Closed" })
      // The leak check after the test proves the socket and every timer are gone.
    }))

  live("interrupting the scope of a connection in the middle of a read closes it", () =>
    Effect.gen(function*() {
      const { port } = yield* rawServer(() => {})
      const reading = yield* Effect.fork(
        Effect.scoped(Effect.flatMap(Tcp.connect({ host: "127.0.0.1", port }), (connection) => connection.read))
      )
      yield* Effect.sleep("50 millis")
      expect(reading.unsafePoll()).toBeNull()
      expect(Exit.isInterrupted(yield* Fiber.interrupt(reading))).toBe(true)
    }))
})

describe("Connection close", () => {
  live("after close every operation fails with SocketClosed and the peer sees the connection end", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* connectTo(() => {})
      const seen = yield* Effect.fork(collect(peer))
      yield* connection.write("bye")
      yield* connection.close
      yield* connection.close
      expect(yield* connection.state).toEqual({ _tag: "Closed" })
      const readError = yield* Effect.flip(connection.read)
      expect(readError).toMatchObject({ _tag: "SocketClosed", reason: "Closed", operation: "read" })
      const writeError = yield* Effect.flip(connection.write("x"))
      expect(writeError).toMatchObject({ _tag: "SocketClosed", reason: "Closed", operation: "write" })
      expect((yield* Effect.flip(connection.readExactly(1)))._tag).toBe("SocketClosed")
      expect((yield* Effect.flip(connection.endWrite))._tag).toBe("SocketClosed")
      expect((yield* Fiber.join(seen)).toString()).toBe("bye")
    }))

  live("reset closes abortively: the peer's read fails with ECONNRESET", () =>
    Effect.gen(function*() {
      const peerError = yield* Effect.makeLatch()
      let code: unknown
      const { connection } = yield* connectTo((socket) => {
        socket.on("error", (error: NodeJS.ErrnoException) => {
          code = error.code
          peerError.unsafeOpen()
        })
        socket.resume()
      })
      yield* connection.reset
      yield* connection.reset
      yield* peerError.await
      expect(code).toBe("ECONNRESET")
      expect(yield* connection.state).toEqual({ _tag: "Closed" })
      expect((yield* Effect.flip(connection.read))._tag).toBe("SocketClosed")
    }))

  live("a read blocked when the connection is closed fails with SocketClosed", () =>
    Effect.gen(function*() {
      const { connection } = yield* connectTo(() => {})
      const fiber = yield* Effect.fork(connection.read)
      yield* Effect.sleep("20 millis")
      yield* connection.close
      const error = yield* Effect.flip(Fiber.join(fiber))
      expect(error).toMatchObject({ _tag: "SocketClosed", reason: "Closed" })
    }))

  live("closing the scope closes the socket", () =>
    Effect.gen(function*() {
      let peer: net.Socket | undefined
      let peerSawEnd = false
      const accepted = yield* Effect.makeLatch()
      const { port } = yield* rawServer((socket) => {
        peer = socket
        socket.on("end", () => {
          peerSawEnd = true
          socket.end()
        })
        accepted.unsafeOpen()
      })
      yield* Effect.scoped(Tcp.connect({ host: "127.0.0.1", port }))
      yield* accepted.await
      yield* closed(peer!)
      expect(peerSawEnd).toBe(true)
    }))
})

/** Forks a write too big for the kernel to take at once and waits until it is pending in Node. */
const pendingWrite = <E>(write: Effect.Effect<void, E>) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.fork(write)
    yield* realSleep(50)
    expect(fiber.unsafePoll()).toBeNull()
    return fiber
  })

/** A node process that accepts one connection on 127.0.0.1 and never reads from it. */
const nonReadingProcess = Effect.acquireRelease(
  Effect.async<{ readonly child: ChildProcess; readonly port: number }, Error>((resume) => {
    const child = spawn(process.execPath, [
      "-e",
      `const server = require("node:net").createServer({ pauseOnConnect: true }, () => {})
       server.listen(0, "127.0.0.1", () => process.stdout.write(server.address().port + "\\n"))`
    ], { stdio: ["ignore", "pipe", "inherit"] })
    child.stdout!.once("data", (line: Buffer) => resume(Effect.succeed({ child, port: Number(line.toString()) })))
    child.once("error", (error) => resume(Effect.fail(error)))
  }),
  ({ child }) =>
    Effect.async<void>((resume) => {
      if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
      child.once("exit", () => resume(Effect.void))
      child.kill("SIGKILL")
    })
)

describe("Connection writes succeed only when their bytes reached the kernel", () => {
  const big = Buffer.alloc(64 * 1024 * 1024)

  live("a write waiting when another fiber closes the connection fails with SocketClosed", () =>
    Effect.gen(function*() {
      const { connection } = yield* connectTo((socket) => socket.pause())
      const fiber = yield* pendingWrite(connection.write(big))
      yield* connection.close
      const error = yield* Effect.flip(Fiber.join(fiber))
      expect(error).toMatchObject({ _tag: "SocketClosed", operation: "write", reason: "Closed" })
    }))

  live("a write waiting when another fiber resets the connection fails with SocketClosed", () =>
    Effect.gen(function*() {
      const { connection } = yield* connectTo((socket) => socket.pause())
      const fiber = yield* pendingWrite(connection.write(big))
      yield* connection.reset
      expect(yield* Effect.flip(Fiber.join(fiber))).toMatchObject({ _tag: "SocketClosed", reason: "Closed" })
    }))

  live("writeAll waiting when the connection is closed fails with SocketClosed", () =>
    Effect.gen(function*() {
      const { connection } = yield* connectTo((socket) => socket.pause())
      const fiber = yield* pendingWrite(connection.writeAll([Buffer.from("header"), big, Buffer.from("trailer")]))
      yield* connection.close
      expect(yield* Effect.flip(Fiber.join(fiber))).toMatchObject({ _tag: "SocketClosed", reason: "Closed" })
    }))

  live("a write waiting when the peer resets fails with ConnectionReset", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* connectTo((socket) => socket.pause())
      const fiber = yield* pendingWrite(connection.write(big))
      peer.resetAndDestroy()
      const error = yield* Effect.flip(Fiber.join(fiber))
      expect(["ConnectionReset", "BrokenPipe"]).toContain(error._tag)
      expect(error).toMatchObject({ operation: "write" })
    }))

  live("a 256 MiB write to a peer process killed with SIGKILL half-way fails with ConnectionReset or BrokenPipe", () =>
    Effect.gen(function*() {
      const { child, port } = yield* nonReadingProcess
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port })
      const fiber = yield* pendingWrite(connection.write(Buffer.alloc(256 * 1024 * 1024)))
      child.kill("SIGKILL")
      const error = yield* Effect.flip(Fiber.join(fiber))
      expect(["ConnectionReset", "BrokenPipe"]).toContain(error._tag)
    }), 20_000)
})

describe("UnexpectedEof says where the stream ended", () => {
  live("a peer that closes between two lines: readUntil fails saying no byte of the next message came", () =>
    Effect.gen(function*() {
      const { connection, port } = yield* connectTo((socket) => socket.end("one line\n"))
      expect(text(yield* connection.readUntil("\n"))).toBe("one line")
      const error = yield* Effect.flip(connection.readUntil("\n"))
      expect(error).toMatchObject({ _tag: "UnexpectedEof", received: 0 })
      expect(error.message).toBe(
        `read on the connection with 127.0.0.1:${port} failed: the peer closed the connection before a message began (no byte of it arrived)`
      )
    }))

  live("a peer that closes in the middle of a line: readUntil fails with how many bytes of it came", () =>
    Effect.gen(function*() {
      const { connection, port } = yield* connectTo((socket) => socket.end("half a li"))
      const error = yield* Effect.flip(connection.readUntil("\n"))
      expect(error.message).toBe(
        `read on the connection with 127.0.0.1:${port} failed: the peer closed the connection in the middle of a message (9 bytes received)`
      )
    }))

  live("readExactly at a clean end says none of the expected bytes came", () =>
    Effect.gen(function*() {
      const { connection, port } = yield* connectTo((socket) => socket.end())
      const error = yield* Effect.flip(connection.readExactly(4))
      expect(error.message).toBe(
        `read on the connection with 127.0.0.1:${port} failed: the peer closed the connection before any of the 4 bytes expected`
      )
    }))
})

describe("Connection as a model", () => {
  live("a connection is recognised by isConnection and pipes, and so is a copy { ...connection }", () =>
    Effect.gen(function*() {
      const { connection } = yield* connectTo(() => {})
      expect(Connection.isConnection(connection)).toBe(true)
      expect(Connection.isConnection({ ...connection })).toBe(true)
      for (const other of [{}, null, "connection", { read: connection.read }]) expect(Connection.isConnection(other)).toBe(false)
      expect(connection.pipe((self) => self.remoteAddress)).toBe(connection.remoteAddress)
      const copy = { ...connection }
      expect(copy.pipe((self) => self)).toBe(copy)
    }))

  live("the model is named Connection beside its namespace: no need to spell Connection.Connection", () =>
    Effect.gen(function*() {
      const { connection, port } = yield* connectTo(() => {})
      // Type-checked: `Connection` is the model's type and the namespace of its values at once.
      const peerPort = (model: Connection): number => tcp(model.remoteAddress).port
      const same: Connection.Connection = connection satisfies Connection
      expect(peerPort(same)).toBe(port)
      expect(Connection.isConnection(same)).toBe(true)
    }))

  live("stream and sink are built when first used, once", () =>
    Effect.gen(function*() {
      const { connection } = yield* connectTo(() => {})
      // White-box: what an idle connection holds.
      const built = connection as unknown as { readonly builtStream: unknown; readonly builtSink: unknown }
      expect(built.builtStream).toBeUndefined()
      expect(built.builtSink).toBeUndefined()
      expect(connection.stream).toBe(connection.stream)
      expect(connection.sink).toBe(connection.sink)
      expect(built.builtStream).toBe(connection.stream)
      expect(built.builtSink).toBe(connection.sink)
    }))

  live("a copy { ...connection } made before stream and sink were used reads and writes with them", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* connectTo((socket) => socket.end("from the peer"))
      const copy: Connection.Connection = { ...connection }
      expect(Object.keys(copy)).toEqual(expect.arrayContaining(["stream", "sink"]))
      const received = yield* Effect.fork(collect(peer))
      yield* Stream.make("one ", "two").pipe(Stream.run(copy.sink))
      yield* copy.endWrite
      expect((yield* Fiber.join(received)).toString()).toBe("one two")
      const chunks = yield* Stream.runCollect(copy.stream)
      expect(Chunk.toArray(chunks).map(text).join("")).toBe("from the peer")
    }))
})

describe("An error imposed on a connection", () => {
  live("IdleTimeout reaches a pending write, a later write and a later read, each with its own operation", () =>
    Effect.gen(function*() {
      const { connection, port } = yield* connectTo((socket) => socket.pause())
      const fiber = yield* pendingWrite(connection.write(Buffer.alloc(64 * 1024 * 1024)))
      // White-box: what the server's idle limit does to a connection.
      const idle = new TcpError.IdleTimeout({ operation: "read", endpoint: connection.remoteAddress, timeoutMillis: 500 })
      ;(connection as unknown as { impose(error: TcpError.IdleTimeout): void }).impose(idle)
      const fields = { _tag: "IdleTimeout", endpoint: { port }, timeoutMillis: 500 }
      expect(yield* Effect.flip(Fiber.join(fiber))).toMatchObject({ ...fields, operation: "write" })
      expect(yield* Effect.flip(connection.write("x"))).toMatchObject({ ...fields, operation: "write" })
      expect(yield* Effect.flip(connection.endWrite)).toMatchObject({ ...fields, operation: "write" })
      expect(yield* Effect.flip(connection.read)).toBe(idle)
      expect(yield* Effect.flip(connection.readUntil("\n"))).toBe(idle)
    }))
})

/** Two connections joined in memory, no socket involved; closed with the scope. */
const memoryPair = (options: Partial<ConnectionOptions> = {}) =>
  Effect.gen(function*() {
    const clock = yield* Effect.clock
    const [a, b] = duplexPair()
    const open = (socket: ConnectionSocket) =>
      Effect.acquireRelease(
        Effect.sync(() =>
          new NodeConnection(socket, {
            readTimeout: undefined,
            writeTimeout: undefined,
            onActivity: undefined,
            clock,
            ...options
          })
        ),
        (connection) => connection.release
      )
    return [yield* open(a), yield* open(b)] as const
  })

describe("A connection over any socket of the right shape", () => {
  it("net.Socket, tls.TLSSocket and an in-memory Duplex with addresses are all sockets a connection wraps", () => {
    // A compile-time check: each type argument must be a ConnectionSocket.
    const wraps = <_ extends ConnectionSocket>() => true
    expect([wraps<net.Socket>(), wraps<tls.TLSSocket>(), wraps<MemorySocket>()]).toEqual([true, true, true])
  })

  effect("read, readExactly, readUntil, write, writeAll and endWrite behave over an in-memory pair", () =>
    Effect.gen(function*() {
      const [client, server] = yield* memoryPair()
      expect(client.remoteAddress).toMatchObject({ host: "memory", port: 2 })
      yield* client.write("hello\nwor")
      yield* client.writeAll(["ld", Buffer.from("!rest")])
      expect(text(yield* server.readUntil("\n"))).toBe("hello")
      expect(text(yield* server.readExactly(6))).toBe("world!")
      expect(Option.map(yield* server.read, text)).toEqual(Option.some("rest"))
      yield* client.endWrite
      expect(yield* server.read).toEqual(Option.none())
      expect(yield* server.state).toEqual({ _tag: "HalfClosed", readable: false, writable: true })
      // The other way, after the half-close.
      yield* server.write("answer")
      yield* server.endWrite
      expect(text(yield* client.readExactly(6))).toBe("answer")
      expect(yield* client.read).toEqual(Option.none())
      expect(yield* client.state).toEqual({ _tag: "Closed" })
    }))

  effect("a large write waits for the reader (backpressure) and arrives whole, and frames decode in place", () =>
    Effect.gen(function*() {
      const [client, server] = yield* memoryPair()
      const data = randomBytes(4 * 1024 * 1024)
      const writer = yield* Effect.fork(client.write(data))
      const received = yield* server.readExactly(data.length)
      yield* Fiber.join(writer)
      expect(Buffer.from(received).equals(data)).toBe(true)
      const framing = Framing.lengthPrefixed({ headerBytes: 2 })
      yield* client.pipe(Framing.writeAll(framing, ["one", "two"]))
      const frames = yield* server.pipe(Framing.reader(framing))
      expect(Option.map(yield* frames.read, text)).toEqual(Option.some("one"))
      expect(Option.map(yield* frames.read, text)).toEqual(Option.some("two"))
    }))

  effect("close ends the peer's reads and fails the closer's operations; a reset fails the peer's with ConnectionReset", () =>
    Effect.gen(function*() {
      const [client, server] = yield* memoryPair()
      const waiting = yield* Effect.fork(server.read)
      yield* client.close
      expect(yield* Fiber.join(waiting)).toEqual(Option.none())
      expect(yield* Effect.flip(client.read)).toMatchObject({ _tag: "SocketClosed", operation: "read", reason: "Closed" })
      expect(yield* Effect.flip(client.write("x"))).toMatchObject({ _tag: "SocketClosed", operation: "write" })
      expect(yield* client.state).toEqual({ _tag: "Closed" })

      const [left, right] = yield* memoryPair()
      const reading = yield* Effect.fork(right.readExactly(10))
      while ((right as unknown as { readonly readWaiters: ReadonlyArray<unknown> }).readWaiters.length === 0) {
        yield* Effect.yieldNow()
      }
      yield* left.reset
      expect(yield* Effect.flip(Fiber.join(reading))).toMatchObject({ _tag: "ConnectionReset", code: "ECONNRESET" })
      expect(yield* left.state).toEqual({ _tag: "Closed" })
      // A read that starts after the reset, before the socket's 'error' event, gets the reset too.
      const [early, late] = yield* memoryPair()
      yield* early.reset
      expect(yield* Effect.flip(late.read)).toMatchObject({ _tag: "ConnectionReset", operation: "read" })
    }))

  effect("readTimeout runs on the connection's clock: TestClock drives it over an in-memory pair", () =>
    Effect.gen(function*() {
      const [client, server] = yield* memoryPair({ readTimeout: Duration.seconds(1) })
      const reading = yield* Effect.fork(server.read)
      // The deadline's timer is registered before the clock moves.
      yield* awaitSleeps(1)
      yield* TestClock.adjust("1 second")
      expect(yield* Effect.flip(Fiber.join(reading))).toMatchObject({ _tag: "ReadTimeout", timeoutMillis: 1000 })
      yield* client.write("late")
      expect(text(yield* server.readExactly(4))).toBe("late")
    }))
})

describe("reset on a socket that cannot send RST", () => {
  live("a Unix domain socket is closed instead (Node refuses to reset it), and its peer sees the end", () =>
    Effect.gen(function*() {
      const path = join(tmpdir(), `effect-tcp-${process.pid}-${Date.now()}.sock`)
      const { accepted } = yield* Effect.acquireRelease(
        Effect.async<{ readonly server: net.Server; readonly accepted: Effect.Effect<net.Socket> }>((resume) => {
          let peer: ((socket: net.Socket) => void) | undefined
          const first = new Promise<net.Socket>((resolve) => (peer = resolve))
          const server = net.createServer({ allowHalfOpen: true }, (socket) => peer!(socket))
          server.listen(path, () => resume(Effect.succeed({ server, accepted: Effect.promise(() => first) })))
        }),
        ({ server }) => Effect.async<void>((resume) => void server.close(() => resume(Effect.void)))
      )
      const socket = yield* Effect.async<net.Socket>((resume) => {
        const socket = net.connect(path, () => resume(Effect.succeed(socket)))
      })
      const peer = yield* accepted
      const clock = yield* Effect.clock
      const connection = yield* Effect.acquireRelease(
        Effect.sync(() =>
          new NodeConnection(socket, { readTimeout: undefined, writeTimeout: undefined, onActivity: undefined, clock })
        ),
        (connection) => connection.release
      )
      const seen = yield* Effect.fork(collect(peer))
      yield* connection.write("bye")
      yield* connection.reset
      expect(yield* connection.state).toEqual({ _tag: "Closed" })
      expect((yield* Fiber.join(seen)).toString()).toBe("bye")
      peer.destroy()
    }))
})
