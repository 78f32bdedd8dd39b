import { describe, expect } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import { randomBytes } from "node:crypto"
import type { Connection } from "../src/Connection.js"
import { Server, Tcp } from "../src/index.js"
import { FaultProxy } from "../src/testing/index.js"
import { awaitSleeps, closedPort, effect, eventually, live, text } from "./support/harness.js"

const echo = (connection: Connection) => connection.stream.pipe(Stream.run(connection.sink))

/** An echo server, a proxy in front of it with `faults`, and a client connected through the proxy. */
const throughProxy = (faults: FaultProxy.Faults = {}, seed?: number) =>
  Effect.gen(function*() {
    const upstream = yield* Server.serve({ port: 0, drainTimeout: 0 }, echo)
    const proxy = yield* FaultProxy.make({ upstream: upstream.address, faults, seed })
    const connect = Tcp.connect({ host: "127.0.0.1", port: proxy.address.port })
    return { upstream, proxy, connect }
  })

/** Reads until the end of the stream or an error, and says which. */
const readAll = (connection: Connection) =>
  Effect.gen(function*() {
    const chunks: Array<Uint8Array> = []
    const end = yield* connection.read.pipe(
      Effect.tap((chunk) => Effect.sync(() => Option.map(chunk, (bytes) => chunks.push(bytes)))),
      Effect.repeat({ until: Option.isNone }),
      Effect.as("EOF"),
      Effect.catchAll((error) => Effect.succeed(error._tag))
    )
    return { bytes: Buffer.concat(chunks), end }
  })

describe("FaultProxy", () => {
  live("without faults it forwards both ways byte-exact and counts the bytes", () =>
    Effect.gen(function*() {
      const { connect, proxy } = yield* throughProxy()
      const connection = yield* connect
      const data = randomBytes(1024 * 1024)
      yield* connection.write(data)
      yield* connection.endWrite
      const { bytes, end } = yield* readAll(connection)
      expect(end).toBe("EOF")
      expect(bytes.equals(data)).toBe(true)
      expect(yield* proxy.stats).toMatchObject({
        connections: 1,
        bytesToUpstream: data.length,
        bytesToClient: data.length,
        faults: { latency: 0, bandwidth: 0, slice: 0, reset: 0, close: 0, stall: 0, refuse: 0, limit: 0 }
      })
    }))

  live("resetAfter lets that many bytes through, then the client sees ConnectionReset", () =>
    Effect.gen(function*() {
      const { connect, proxy } = yield* throughProxy({ toClient: { resetAfter: { bytes: 100 } } })
      const connection = yield* connect
      yield* connection.write(Buffer.alloc(1000, 1))
      const { bytes, end } = yield* readAll(connection)
      // Linux reports a reset that overtakes unread bytes as the end of the stream...
      expect(["ConnectionReset", "EOF"]).toContain(end)
      expect(bytes.length).toBeLessThanOrEqual(100)
      // ...but the reset is still there: the next write fails with it (after a FIN it would succeed).
      if (end === "EOF") expect((yield* Effect.flip(connection.write("x")))._tag).toBe("ConnectionReset")
      expect((yield* proxy.stats).faults.reset).toBe(1)
      expect((yield* proxy.stats).bytesToClient).toBe(100)
    }))

  live("closeAfter lets that many bytes through, then the client sees the end of the stream", () =>
    Effect.gen(function*() {
      const { connect, proxy } = yield* throughProxy({ toClient: { closeAfter: { bytes: 50 } } })
      const connection = yield* connect
      yield* connection.write(Buffer.alloc(1000, 2))
      const { bytes, end } = yield* readAll(connection)
      expect(end).toBe("EOF")
      expect(bytes.length).toBe(50)
      expect((yield* proxy.stats).faults.close).toBe(1)
    }))

  effect("stall keeps the connection open but forwards nothing: only a read deadline notices", () =>
    Effect.gen(function*() {
      const { connect, proxy } = yield* throughProxy({ toClient: { stall: {} } })
      const connection = yield* connect
      yield* connection.write("anyone there?")
      const reading = yield* Effect.fork(
        Tcp.connect({ host: "127.0.0.1", port: proxy.address.port, readTimeout: "5 seconds" }).pipe(
          Effect.flatMap((stalled) => Effect.zipRight(stalled.write("hello?"), stalled.read))
        )
      )
      // Both requests went through: only the replies stall.
      yield* eventually(() => Effect.runSync(proxy.stats).bytesToUpstream === 19)
      // The stalled read waits under its deadline, the one timer; just before it, it still waits.
      expect(yield* awaitSleeps(1)).toEqual([5000])
      yield* TestClock.adjust("4999 millis")
      expect(reading.unsafePoll()).toBeNull()
      yield* TestClock.adjust("1 millis")
      const error = yield* Effect.flip(Fiber.join(reading))
      expect(error._tag).toBe("ReadTimeout")
      expect(yield* connection.state).toEqual({ _tag: "Open" })
      expect((yield* proxy.stats).faults.stall).toBe(2)
      expect((yield* proxy.stats).bytesToClient).toBe(0)
    }))

  effect("slice cuts a chunk into pieces of at most maxBytes, each sent a delay after the previous one", () =>
    Effect.gen(function*() {
      const { connect, proxy } = yield* throughProxy({ toClient: { slice: { maxBytes: 10, delay: "1 second" } } })
      const connection = yield* connect
      const data = randomBytes(25)
      yield* connection.write(data)
      yield* connection.endWrite
      // Pieces sent in real time can reach a busy client merged into one read; under the TestClock
      // the next piece cannot leave before the test moves the clock, so each one is read alone.
      for (const [from, to, sentAt] of [[0, 10, 0], [10, 20, 1000], [20, 25, 2000]]) {
        const next = yield* Effect.fork(connection.read)
        if (sentAt > 0) {
          // The proxy holds the piece back until its instant, the one timer.
          expect(yield* awaitSleeps(1)).toEqual([sentAt])
          expect(next.unsafePoll()).toBeNull()
          yield* TestClock.adjust("1 second")
        }
        const first = Option.getOrThrow(yield* Fiber.join(next))
        // TCP may still split a piece over two reads; no read may carry bytes of the next piece.
        expect(first.length).toBeLessThanOrEqual(to - from)
        const piece = Buffer.concat([first, yield* connection.readExactly(to - from - first.length)])
        expect(piece.equals(data.subarray(from, to))).toBe(true)
      }
      expect(yield* connection.read).toEqual(Option.none())
      expect(yield* proxy.stats).toMatchObject({ bytesToClient: 25, faults: { slice: 1 } })
    }))

  effect("latency delays each chunk by its delay", () =>
    Effect.gen(function*() {
      const { connect, proxy } = yield* throughProxy({ toClient: { latency: { delay: "1 second" } } })
      const connection = yield* connect
      yield* connection.write("ping")
      const reading = yield* Effect.fork(connection.readExactly(4))
      // The echo reached the proxy, which holds it until 1 s, the one timer.
      expect(yield* awaitSleeps(1)).toEqual([1000])
      expect(reading.unsafePoll()).toBeNull()
      yield* TestClock.adjust("1 second")
      expect(text(yield* Fiber.join(reading))).toBe("ping")
      expect((yield* proxy.stats).faults.latency).toBe(1)
    }))

  effect("bandwidth holds the next chunk back until the previous one's time has passed", () =>
    Effect.gen(function*() {
      const { connect } = yield* throughProxy({ toUpstream: { bandwidth: { bytesPerSecond: 1000 } } })
      const connection = yield* connect
      yield* connection.write(Buffer.alloc(2000, 3))
      expect((yield* connection.readExactly(2000)).length).toBe(2000)
      yield* connection.write("x")
      const reading = yield* Effect.fork(connection.readExactly(1))
      // 2000 bytes at 1000 bytes/s: the next chunk may go at 2 s, the one timer.
      expect(yield* awaitSleeps(1)).toEqual([2000])
      expect(reading.unsafePoll()).toBeNull()
      yield* TestClock.adjust("2 seconds")
      expect(text(yield* Fiber.join(reading))).toBe("x")
    }))

  live("refuse closes new connections at once; the upstream never sees them", () =>
    Effect.gen(function*() {
      const { connect, proxy, upstream } = yield* throughProxy({ refuse: {} })
      const connection = yield* connect
      const { end } = yield* readAll(connection)
      expect(["EOF", "ConnectionReset"]).toContain(end)
      expect((yield* proxy.stats).faults.refuse).toBe(1)
      expect((yield* upstream.stats).accepted).toBe(0)
    }))

  live("maxConnections closes connections beyond the limit", () =>
    Effect.gen(function*() {
      const { connect, proxy } = yield* throughProxy({ maxConnections: 1 })
      const first = yield* connect
      yield* first.write("a")
      expect(text(yield* first.readExactly(1))).toBe("a")
      const second = yield* connect
      expect(["EOF", "ConnectionReset"]).toContain((yield* readAll(second)).end)
      expect((yield* proxy.stats).faults.limit).toBe(1)
    }))

  live("faults can change while connections are open", () =>
    Effect.gen(function*() {
      const { connect, proxy } = yield* throughProxy()
      const connection = yield* connect
      yield* connection.write("before")
      expect(text(yield* connection.readExactly(6))).toBe("before")
      yield* proxy.setFaults({ toClient: { resetAfter: { bytes: 0 } } })
      expect(yield* proxy.faults).toEqual({ toClient: { resetAfter: { bytes: 0 } } })
      yield* connection.write("after")
      const { bytes, end } = yield* readAll(connection)
      expect(bytes.length).toBe(0)
      expect(["ConnectionReset", "EOF"]).toContain(end)
      expect((yield* proxy.stats).faults.reset).toBe(1)
    }))

  live("the same seed draws the same faults for each connection", () =>
    Effect.gen(function*() {
      const pattern = (seed: number) =>
        Effect.scoped(Effect.gen(function*() {
          const { connect } = yield* throughProxy({ refuse: { probability: 0.5 } }, seed)
          const outcomes: Array<string> = []
          for (let i = 0; i < 16; i++) {
            const connection = yield* connect
            yield* connection.write("?").pipe(Effect.ignore)
            const { end, bytes } = yield* readAllFirst(connection)
            outcomes.push(bytes.length > 0 ? "served" : end)
            yield* connection.close
          }
          return outcomes.map((outcome) => (outcome === "served" ? "S" : "R")).join("")
        }))
      const first = yield* pattern(42)
      expect(yield* pattern(42)).toBe(first)
      // Each connection draws for itself: a probability of 0.5 refuses about half of them.
      const refused = first.split("").filter((outcome) => outcome === "R").length
      expect(refused).toBeGreaterThanOrEqual(3)
      expect(refused).toBeLessThanOrEqual(13)
      expect(yield* pattern(43)).not.toBe(first)
    }))

  live("when the upstream is down, a client connection through the proxy is reset", () =>
    Effect.gen(function*() {
      const port = yield* closedPort
      const proxy = yield* FaultProxy.make({ upstream: { host: "127.0.0.1", port } })
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port: proxy.address.port })
      expect((yield* readAll(connection)).end).toBe("ConnectionReset")
    }))

  live("closing the proxy's scope closes every connection through it", () =>
    Effect.gen(function*() {
      const upstream = yield* Server.serve({ port: 0, drainTimeout: 0 }, echo)
      const scope = yield* Scope.make()
      const proxy = yield* FaultProxy.make({ upstream: upstream.address }).pipe(Scope.extend(scope))
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port: proxy.address.port })
      yield* connection.write("x")
      expect(text(yield* connection.readExactly(1))).toBe("x")
      const reading = yield* Effect.fork(readAll(connection))
      yield* Scope.close(scope, Exit.void)
      expect(["EOF", "ConnectionReset"]).toContain((yield* Fiber.join(reading)).end)
    }))

  effect("rejects faults that make no sense with InvalidOptions", () =>
    Effect.gen(function*() {
      const upstream = { host: "127.0.0.1", port: 9 }
      const error = yield* Effect.flip(FaultProxy.make({ upstream, faults: { refuse: { probability: 1.5 } } }))
      expect(error).toMatchObject({ _tag: "InvalidOptions" })
      expect((error as { issues: string }).issues).toContain("a probability is a number from 0 to 1")
      const slice = yield* Effect.flip(FaultProxy.make({ upstream, faults: { toClient: { slice: { maxBytes: 0 } } } }))
      expect((slice as { issues: string }).issues).toContain("a size is an integer of at least 1")
    }))

  effect("rejects a seed or an upstream it cannot use with InvalidOptions, before listening", () =>
    Effect.gen(function*() {
      const issues = (options: unknown) =>
        FaultProxy.make(options as FaultProxy.FaultProxyOptions).pipe(
          Effect.flip,
          Effect.map((error) => {
            expect(error._tag).toBe("InvalidOptions")
            return (error as { issues: string }).issues
          })
        )
      const upstream = { host: "127.0.0.1", port: 9 }
      for (const seed of [Number.NaN, -1, 1.5, 2 ** 32, Infinity]) {
        expect(yield* issues({ upstream, seed })).toContain("a seed is an integer from 0 to 2^32 - 1")
      }
      expect(yield* issues({ upstream: { host: "127.0.0.1", port: 0 } })).toContain("an upstream port is an integer from 1 to 65535, got 0")
      expect(yield* issues({ upstream: { host: "127.0.0.1", port: Number.NaN } })).toContain("got NaN")
      expect(yield* issues({ upstream: { host: "bad host", port: 9 } })).toContain("a host must not contain spaces")
      expect(yield* issues({ upstream: undefined })).toContain("upstream")
    }))
})

/** The first chunk, or how the stream ended. */
const readAllFirst = (connection: Connection) =>
  connection.read.pipe(
    Effect.map((chunk) => ({ bytes: Option.getOrElse(chunk, () => new Uint8Array(0)), end: "EOF" })),
    Effect.catchAll((error) => Effect.succeed({ bytes: new Uint8Array(0), end: error._tag }))
  )
