/**
 * A large write to a slow reader moves for a long time without completing: the bytes the kernel
 * takes from it are progress for `writeTimeout` and activity for the server's `idleTimeout`. The
 * reader takes a few MiB, then the test's clock moves on, again and again: time passes only while
 * bytes move.
 */
import { describe, expect } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as TestClock from "effect/TestClock"
import type * as net from "node:net"
import { Server, Tcp } from "../src/index.js"
import { awaitSleeps, effect, eventually, rawClient, rawServer, realSleep } from "./support/harness.js"

const MiB = 1024 * 1024

/** Counts what a paused raw socket receives; `take(n)` lets about `n` more bytes in, then pauses it again. */
const slowReader = (socket: net.Socket) => {
  let received = 0
  let ended = false
  socket.pause()
  socket.on("data", (chunk: Buffer) => {
    received += chunk.length
  })
  socket.on("end", () => {
    ended = true
  })
  return {
    received: () => received,
    take: (bytes: number) =>
      Effect.gen(function*() {
        const target = received + bytes
        socket.resume()
        yield* eventually(() => received >= target || ended || socket.destroyed)
        socket.pause()
      })
  }
}

describe("a write that moves is progress", () => {
  effect("a server's 32 MiB write to a client reading slowly is not cut by idleTimeout, and reports success", () =>
    Effect.gen(function*() {
      let result: Exit.Exit<void, unknown> | undefined
      const server = yield* Server.serve({ port: 0, idleTimeout: "1 second" }, (connection) =>
        Effect.exit(connection.write(Buffer.alloc(32 * MiB))).pipe(Effect.map((exit) => {
          result = exit
        })))
      const client = slowReader(yield* rawClient(server.address.port))
      // 2 MiB per 600 ms of the server's clock: the whole write takes about 10 s of it, ten idle limits.
      while (result === undefined && client.received() < 32 * MiB) {
        yield* client.take(2 * MiB)
        yield* TestClock.adjust("600 millis")
      }
      yield* client.take(32 * MiB - client.received())
      yield* eventually(() => result !== undefined)
      expect(client.received()).toBe(32 * MiB)
      expect(Exit.isSuccess(result!)).toBe(true)
      expect(yield* server.stats).toMatchObject({ idleClosed: 0 })
    }), 30_000)

  effect("a server's write to a client that stops reading is closed as idle once nothing moved for idleTimeout", () =>
    Effect.gen(function*() {
      let result: Exit.Exit<void, unknown> | undefined
      const server = yield* Server.serve({ port: 0, idleTimeout: "1 second" }, (connection) =>
        Effect.exit(connection.write(Buffer.alloc(32 * MiB))).pipe(Effect.map((exit) => {
          result = exit
        })))
      const client = slowReader(yield* rawClient(server.address.port))
      yield* client.take(2 * MiB)
      expect(yield* awaitSleeps(1)).toEqual([1000])
      yield* TestClock.adjust("600 millis")
      yield* client.take(2 * MiB)
      // From here on the client reads nothing.
      yield* TestClock.adjust("600 millis")
      // 1.2 s since the start, but the idle check at 1 s saw the write move.
      expect(yield* server.stats).toMatchObject({ idleClosed: 0 })
      expect(result).toBeUndefined()
      yield* TestClock.adjust("2 seconds")
      yield* eventually(() => result !== undefined)
      expect(result).toMatchObject({ _tag: "Failure" })
      // The write is what the idle limit cut: its error says so.
      expect(Exit.isFailure(result!) && result.cause).toMatchObject({ error: { _tag: "IdleTimeout", operation: "write" } })
      expect(yield* server.stats).toMatchObject({ idleClosed: 1 })
    }), 30_000)

  effect("writeTimeout fails a write only after it moved nothing for that long: 32 MiB to a slow reader succeed", () =>
    Effect.gen(function*() {
      let peer: ReturnType<typeof slowReader> | undefined
      const { port } = yield* rawServer((socket) => {
        peer = slowReader(socket)
      })
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port, writeTimeout: "1 second" })
      yield* eventually(() => peer !== undefined)
      const writing = yield* Effect.fork(connection.write(Buffer.alloc(32 * MiB)))
      while (writing.unsafePoll() === null && peer!.received() < 32 * MiB) {
        yield* peer!.take(2 * MiB)
        yield* TestClock.adjust("600 millis")
      }
      yield* peer!.take(32 * MiB - peer!.received())
      yield* Fiber.join(writing)
      expect(peer!.received()).toBe(32 * MiB)

      // Then the peer stops reading: a second write fails with WriteTimeout, though not before a
      // whole writeTimeout passed without progress.
      const stalled = yield* Effect.fork(connection.write(Buffer.alloc(32 * MiB)))
      // Real time for the kernel's buffers to fill (I/O): from then on no byte moves.
      yield* realSleep(50)
      yield* TestClock.adjust("999 millis")
      expect(stalled.unsafePoll()).toBeNull()
      yield* TestClock.adjust("501 millis")
      const error = yield* Effect.flip(Fiber.join(stalled))
      expect(error).toMatchObject({ _tag: "WriteTimeout", timeoutMillis: 1000 })
    }), 30_000)
})
