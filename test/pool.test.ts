import { describe, expect } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Random from "effect/Random"
import * as Scope from "effect/Scope"
import * as TestClock from "effect/TestClock"
import * as net from "node:net"
import { ConnectionPool, HealthCheck, TcpError } from "../src/index.js"
import type { Connection } from "../src/Connection.js"
import { closedPort, effect, eventually, live, realSleep } from "./support/harness.js"
import { fullBacklogListener } from "./support/processes.js"

type Mode = "echo" | "stall" | "garbage"

/**
 * A server on a fixed port that echoes every 4-byte command and answers `PING` according to
 * `mode` (per connection, from the mode when it was accepted, or the current one). It can be
 * killed (every connection closed with FIN or RST, the listener closed) and started again on the
 * same port.
 */
const restartableServer = Effect.gen(function*() {
  const state = {
    port: 0,
    mode: "echo" as Mode,
    accepted: 0,
    ended: 0,
    sockets: new Set<net.Socket>(),
    /** Connections that answer PING with garbage whatever the mode. */
    garbage: new Set<net.Socket>(),
    server: undefined as net.Server | undefined
  }
  const answer = (socket: net.Socket, command: string): void => {
    if (command !== "PING") socket.write(command)
    else if (state.mode === "echo" && !state.garbage.has(socket)) socket.write("PONG")
    else if (state.mode === "garbage" || state.garbage.has(socket)) socket.write("PANG")
  }
  const start = Effect.async<void>((resume) => {
    const server = net.createServer((socket) => {
      state.accepted++
      state.sockets.add(socket)
      socket.on("error", () => {})
      socket.on("end", () => state.ended++)
      socket.on("close", () => state.sockets.delete(socket))
      let pending = ""
      socket.on("data", (chunk: Buffer) => {
        pending += chunk.toString("latin1")
        while (pending.length >= 4) {
          answer(socket, pending.slice(0, 4))
          pending = pending.slice(4)
        }
      })
    })
    state.server = server
    server.listen(state.port, "127.0.0.1", () => {
      state.port = (server.address() as net.AddressInfo).port
      resume(Effect.void)
    })
  })
  const kill = (how: "FIN" | "RST" = "FIN") =>
    Effect.async<void>((resume) => {
      const server = state.server
      state.server = undefined
      for (const socket of state.sockets) how === "RST" ? socket.resetAndDestroy() : socket.destroy()
      if (server === undefined) return resume(Effect.void)
      server.close(() => resume(Effect.void))
    })
  yield* start
  yield* Effect.addFinalizer(() => kill())
  return { state, start, kill }
})

/** A pool to the test server. */
const poolOf = (server: { readonly state: { readonly port: number } }, options: ConnectionPool.PoolOptions = {}) =>
  ConnectionPool.make({ host: "127.0.0.1", port: server.state.port, ...options })

/** One request/response of 4 bytes. */
const exchange = (connection: Connection, message = "ping") =>
  Effect.gen(function*() {
    yield* connection.write(message)
    return Buffer.from(yield* connection.readExactly(message.length)).toString()
  })

describe("ConnectionPool", () => {
  live("1,000 concurrent borrowers never hold more than max connections, and all get their answer", () =>
    Effect.gen(function*() {
      const server = yield* restartableServer
      const pool = yield* poolOf(server, { max: 10 })
      let inUse = 0
      let peak = 0
      let peakWaiting = 0
      const answers = yield* Effect.forEach(
        Array.from({ length: 1000 }, (_, i) => String(i % 10000).padStart(4, "0")),
        (message) =>
          pool.use((connection) =>
            Effect.gen(function*() {
              inUse++
              peak = Math.max(peak, inUse)
              peakWaiting = Math.max(peakWaiting, (yield* pool.stats).waiting)
              const answer = yield* exchange(connection, message)
              inUse--
              return answer === message
            })
          ),
        { concurrency: "unbounded" }
      )
      expect(answers.every((ok) => ok)).toBe(true)
      expect(peak).toBe(10)
      expect(peakWaiting).toBeGreaterThan(0)
      expect(server.state.accepted).toBeLessThanOrEqual(10)
      const stats = yield* pool.stats
      expect(stats).toMatchObject({ inUse: 0, waiting: 0, connecting: 0, closed: 0 })
      expect(stats.idle).toBe(stats.opened)
      expect(stats.opened).toBe(server.state.accepted)
    }))

  live("after the server is killed and restarted, the pool recovers and never lends a dead connection", () =>
    Effect.gen(function*() {
      const server = yield* restartableServer
      const pool = yield* poolOf(server, { max: 4 })
      const burst = Effect.forEach(Array.from({ length: 8 }), () => pool.use((c) => exchange(c)), {
        concurrency: "unbounded"
      })
      yield* burst
      expect((yield* pool.stats).idle).toBe(4)

      yield* server.kill("FIN")
      // The idle connections notice the FIN by themselves and are closed.
      yield* eventually(() => Effect.runSync(pool.stats).idle === 0)
      expect(yield* pool.stats).toMatchObject({ idle: 0, inUse: 0, closed: 4 })
      // While the server is down, a borrower gets the connect's own error, at once.
      const down = yield* Effect.flip(pool.use((c) => exchange(c)))
      expect(down).toMatchObject({ _tag: "ConnectionRefused", endpoint: { port: server.state.port } })

      yield* server.start
      const answers = yield* Effect.forEach(Array.from({ length: 50 }), () => pool.use((c) => exchange(c)), {
        concurrency: 8
      })
      expect(answers.every((answer) => answer === "ping")).toBe(true)

      // Killed with RST this time: the same.
      yield* server.kill("RST")
      yield* eventually(() => Effect.runSync(pool.stats).idle === 0)
      yield* server.start
      expect(yield* burst).toEqual(Array(8).fill("ping"))
    }))

  live("a borrower interrupted at random points leaks nothing: connections come back or are replaced", () =>
    Effect.gen(function*() {
      const server = yield* restartableServer
      const pool = yield* poolOf(server, { max: 3 })
      const random = Random.make("pool-interruption")
      const borrower = (i: number) =>
        pool.use((connection) =>
          Effect.gen(function*() {
            yield* connection.write(String(i % 10000).padStart(4, "0"))
            yield* Effect.sleep(`${yield* random.nextIntBetween(0, 3)} millis`)
            return yield* connection.readExactly(4)
          })
        )
      for (let round = 0; round < 40; round++) {
        const fibers = yield* Effect.forEach(Array.from({ length: 6 }, (_, i) => round * 6 + i), (i) => Effect.fork(borrower(i)))
        yield* realSleep(yield* random.nextIntBetween(0, 4))
        yield* Effect.forEach(fibers, (fiber) => random.nextBoolean.pipe(Effect.flatMap((stop) => (stop ? Fiber.interrupt(fiber) : Fiber.await(fiber)))), {
          discard: true
        })
      }
      yield* eventually(() => {
        const stats = Effect.runSync(pool.stats)
        return stats.inUse === 0 && stats.waiting === 0 && stats.connecting === 0
      })
      const stats = yield* pool.stats
      expect(stats.idle).toBe(stats.opened - stats.closed)
      expect(stats.idle).toBeLessThanOrEqual(3)
      // Interrupted uses closed their connections: the server saw them end, and holds only the idle ones.
      yield* eventually(() => server.state.sockets.size === stats.idle)
      expect(stats.closed).toBeGreaterThan(0)
      // And the pool still works.
      expect(yield* pool.use((c) => exchange(c))).toBe("ping")
    }))

  effect("a borrower starved for acquireTimeout fails with PoolTimeout saying why", () =>
    Effect.gen(function*() {
      const server = yield* restartableServer
      const pool = yield* poolOf(server, { max: 1, acquireTimeout: "5 seconds" })
      const release = yield* Deferred.make<void>()
      const holder = yield* Effect.fork(pool.use(() => Deferred.await(release)))
      yield* eventually(() => Effect.runSync(pool.stats).inUse === 1)
      const starved = yield* Effect.fork(pool.use((c) => exchange(c)))
      yield* eventually(() => Effect.runSync(pool.stats).waiting === 1)
      yield* TestClock.adjust("4999 millis")
      yield* realSleep(20)
      expect(starved.unsafePoll()).toBeNull()
      yield* TestClock.adjust("1 millis")
      const error = yield* Effect.flip(Fiber.join(starved))
      expect(error).toMatchObject({ _tag: "PoolTimeout", timeoutMillis: 5000, max: 1, inUse: 1, waiting: 1, connecting: 0 })
      expect(error.message).toBe(
        `no connection from the pool to 127.0.0.1:${server.state.port} within 5000 ms (1 of 1 in use, 0 connecting, 1 waiting): raise max or acquireTimeout, or look for uses that hold connections too long`
      )
      expect(yield* pool.stats).toMatchObject({ waiting: 0, inUse: 1 })
      yield* Deferred.succeed(release, undefined)
      yield* Fiber.join(holder)
      expect(yield* pool.stats).toMatchObject({ waiting: 0, inUse: 0, idle: 1 })
    }))

  effect("acquireTimeout also bounds a connect that hangs, although effect/Pool's wait for it cannot be interrupted", () =>
    Effect.gen(function*() {
      const port = yield* fullBacklogListener
      const pool = yield* ConnectionPool.make({ host: "127.0.0.1", port, connectTimeout: "1 minute", acquireTimeout: "2 seconds" })
      const fiber = yield* Effect.fork(pool.use((c) => exchange(c)))
      yield* realSleep(50)
      expect(yield* pool.stats).toMatchObject({ connecting: 1, waiting: 1 })
      yield* TestClock.adjust("2 seconds")
      const error = yield* Effect.flip(Fiber.join(fiber))
      expect(error).toMatchObject({ _tag: "PoolTimeout", timeoutMillis: 2000, connecting: 1 })
      // The connect goes on until its own deadline, and the connection it fails with goes back to the pool.
      yield* TestClock.adjust("58 seconds")
      yield* eventually(() => Effect.runSync(pool.stats).connecting === 0)
    }))

  effect("beyond maxWaiters, a borrower is turned away at once with TooManyWaiters", () =>
    Effect.gen(function*() {
      const server = yield* restartableServer
      const pool = yield* poolOf(server, { max: 1, maxWaiters: 2 })
      const release = yield* Deferred.make<void>()
      const holder = yield* Effect.fork(pool.use(() => Deferred.await(release)))
      yield* eventually(() => Effect.runSync(pool.stats).inUse === 1)
      const waiters = yield* Effect.forEach([1, 2], () => Effect.fork(pool.use((c) => exchange(c))))
      yield* eventually(() => Effect.runSync(pool.stats).waiting === 2)
      const error = yield* Effect.flip(pool.use((c) => exchange(c)))
      expect(error).toMatchObject({ _tag: "TooManyWaiters", maxWaiters: 2 })
      expect(error.message).toBe(
        `the pool to 127.0.0.1:${server.state.port} already has 2 borrowers waiting (maxWaiters): shed this request, or raise max or maxWaiters`
      )
      yield* Deferred.succeed(release, undefined)
      yield* Fiber.join(holder)
      expect(yield* Effect.forEach(waiters, Fiber.join)).toEqual(["ping", "ping"])
    }))

  live("idle connections that the server closes (FIN) or resets (RST) are removed at once", () =>
    Effect.gen(function*() {
      const server = yield* restartableServer
      const pool = yield* poolOf(server, { max: 3 })
      yield* Effect.forEach(Array.from({ length: 3 }), () => pool.use((c) => exchange(c)), { concurrency: "unbounded" })
      expect((yield* pool.stats).idle).toBe(3)
      const [first, second] = server.state.sockets
      first!.end()
      second!.resetAndDestroy()
      yield* eventually(() => Effect.runSync(pool.stats).closed === 2)
      expect(yield* pool.stats).toMatchObject({ idle: 1, closed: 2 })
      expect(yield* pool.use((c) => exchange(c))).toBe("ping")
    }))

  effect("background validation finds idle connections whose server stopped answering, and closes them", () =>
    Effect.gen(function*() {
      const server = yield* restartableServer
      const pool = yield* poolOf(server, { max: 2, healthCheck: HealthCheck.ping, validationInterval: "30 seconds" })
      yield* Effect.forEach([1, 2], () => pool.use((c) => exchange(c)), { concurrency: "unbounded" })
      expect((yield* pool.stats).idle).toBe(2)
      // Half-open: the server's host no longer answers, and sends no FIN.
      server.state.mode = "stall"
      yield* TestClock.adjust("30 seconds")
      yield* realSleep(50)
      expect((yield* pool.stats).idle).toBe(2)
      yield* TestClock.adjust("1 second")
      yield* eventually(() => Effect.runSync(pool.stats).closed === 2)
      expect(yield* pool.stats).toMatchObject({ idle: 0, inUse: 0 })
      server.state.mode = "echo"
      expect(yield* pool.use((c) => exchange(c))).toBe("ping")
    }))

  live("validation on borrow: a connection that fails its health check is closed and another one lent", () =>
    Effect.gen(function*() {
      const server = yield* restartableServer
      const pool = yield* poolOf(server, { max: 2, healthCheck: HealthCheck.ping, validateAfterIdle: 0 })
      const ports = yield* Effect.forEach([1, 2], () => pool.use((c) => Effect.as(exchange(c), c.localAddress.port)), {
        concurrency: "unbounded"
      })
      // Both idle connections now answer garbage; a new one will not.
      for (const socket of server.state.sockets) server.state.garbage.add(socket)
      const lent = yield* pool.use((c) => Effect.as(exchange(c), c.localAddress.port))
      expect(ports).not.toContain(lent)
      expect(yield* pool.stats).toMatchObject({ idle: 1, opened: 3, closed: 2 })
    }))

  live("a new connection that fails its health check fails the borrower with HealthCheckFailed", () =>
    Effect.gen(function*() {
      const server = yield* restartableServer
      server.state.mode = "garbage"
      const pool = yield* poolOf(server, { healthCheck: HealthCheck.ping, validateAfterIdle: 0 })
      const error = yield* Effect.flip(pool.use((c) => exchange(c)))
      expect(error).toMatchObject({ _tag: "HealthCheckFailed", reason: { _tag: "WrongReply", received: `"PANG"` } })
      expect(yield* pool.stats).toMatchObject({ idle: 0, inUse: 0, closed: 1 })
    }))

  live("use returns the connection after success or a failure of your own, and closes it after a TcpError, a defect or an interruption", () =>
    Effect.gen(function*() {
      const server = yield* restartableServer
      const pool = yield* poolOf(server, { max: 1 })
      const portOf = pool.use((c) => Effect.succeed(c.localAddress.port))
      const first = yield* portOf
      expect(yield* Effect.flip(pool.use(() => Effect.fail("not found" as const)))).toBe("not found")
      expect(yield* portOf).toBe(first)

      const failed = yield* Effect.flip(pool.use((c) => c.readExactly(100).pipe(Effect.timeout("10 millis"))))
      expect(failed._tag).toBe("TimeoutException")
      expect(yield* portOf).toBe(first) // a failure of your own, even a timeout: returned

      const reset = yield* Effect.flip(pool.use((c) =>
        Effect.fail(new TcpError.ConnectionReset({ operation: "read", endpoint: c.remoteAddress }))
      ))
      expect(reset._tag).toBe("ConnectionReset")
      const second = yield* portOf
      expect(second).not.toBe(first)

      const died = yield* Effect.exit(pool.use(() => Effect.die("bug")))
      expect(Exit.isFailure(died)).toBe(true)
      const third = yield* portOf
      expect(third).not.toBe(second)

      const fiber = yield* Effect.fork(pool.use((c) => c.readExactly(100)))
      yield* eventually(() => Effect.runSync(pool.stats).inUse === 1)
      yield* Fiber.interrupt(fiber)
      expect(yield* portOf).not.toBe(third)
      yield* eventually(() => server.state.ended === 3)
      expect(yield* pool.stats).toMatchObject({ opened: 4, closed: 3, idle: 1 })
    }))

  live("get lends a connection until its scope closes, with the same rules", () =>
    Effect.gen(function*() {
      const server = yield* restartableServer
      const pool = yield* poolOf(server, { max: 1 })
      const scope = yield* Scope.make()
      const connection = yield* Scope.extend(pool.get, scope)
      expect(yield* exchange(connection)).toBe("ping")
      expect(yield* pool.stats).toMatchObject({ inUse: 1, idle: 0 })
      yield* Scope.close(scope, Exit.void)
      expect(yield* pool.stats).toMatchObject({ inUse: 0, idle: 1 })
      const failing = Effect.scoped(Effect.flatMap(pool.get, (c) => Effect.flatMap(exchange(c), () => Effect.fail(new TcpError.BrokenPipe({ operation: "write", endpoint: c.remoteAddress })))))
      expect((yield* Effect.flip(failing))._tag).toBe("BrokenPipe")
      expect(yield* pool.stats).toMatchObject({ inUse: 0, idle: 0, closed: 1 })
    }))

  live("invalidate closes a borrowed connection now and the pool replaces it", () =>
    Effect.gen(function*() {
      const server = yield* restartableServer
      const pool = yield* poolOf(server, { max: 1 })
      yield* pool.use((c) => Effect.zipRight(pool.invalidate(c), Effect.flatMap(c.state, (state) => Effect.sync(() => expect(state._tag).toBe("Closed")))))
      expect(yield* pool.stats).toMatchObject({ closed: 1, idle: 0 })
      expect(yield* pool.use((c) => exchange(c))).toBe("ping")
    }))

  effect("maxLifetime: an older connection is closed instead of lent", () =>
    Effect.gen(function*() {
      const server = yield* restartableServer
      const pool = yield* poolOf(server, { max: 1, maxLifetime: "1 minute" })
      const portOf = pool.use((c) => Effect.succeed(c.localAddress.port))
      const first = yield* portOf
      yield* TestClock.adjust("59 seconds")
      expect(yield* portOf).toBe(first)
      yield* TestClock.adjust("1 second")
      expect(yield* portOf).not.toBe(first)
      expect((yield* pool.stats).closed).toBe(1)
    }))

  effect("min connections open at start, come back after an outage, and idleTimeToLive closes the excess", () =>
    Effect.gen(function*() {
      const server = yield* restartableServer
      const pool = yield* poolOf(server, { min: 2, max: 5, idleTimeToLive: "1 minute", validationInterval: "10 seconds" })
      yield* eventually(() => Effect.runSync(pool.stats).idle === 2)
      // A burst opens up to max; a minute later the excess is closed again.
      const release = yield* Deferred.make<void>()
      const burst = yield* Effect.fork(Effect.forEach(Array.from({ length: 5 }), () => pool.use(() => Deferred.await(release)), { concurrency: "unbounded" }))
      yield* eventually(() => Effect.runSync(pool.stats).inUse === 5)
      yield* Deferred.succeed(release, undefined)
      yield* Fiber.join(burst)
      expect((yield* pool.stats).idle).toBe(5)
      yield* TestClock.adjust("1 minute")
      yield* eventually(() => Effect.runSync(pool.stats).idle === 2)

      yield* server.kill()
      yield* eventually(() => Effect.runSync(pool.stats).idle === 0 && Effect.runSync(pool.stats).connecting === 0)
      yield* server.start
      // The background validation retries the failed connects.
      yield* TestClock.adjust("10 seconds")
      yield* eventually(() => Effect.runSync(pool.stats).idle === 2)
    }))

  effect("rejects bad options with InvalidOptions before any connect", () =>
    Effect.gen(function*() {
      const port = yield* closedPort
      const cases: Array<[Record<string, unknown>, string]> = [
        [{ min: 3, max: 2 }, "min (3) must not exceed max (2)"],
        [{ max: 0 }, "max must be an integer of at least 1, got 0"],
        [{ acquireTimeout: -1 }, "acquireTimeout must be a finite, non-negative duration, got -1"],
        [{ maxWaiters: 1.5 }, "maxWaiters must be an integer of at least 0, got 1.5"],
        [{ port: 70000 }, "a port to connect to is an integer from 1 to 65535"]
      ]
      for (const [options, issue] of cases) {
        const error = yield* Effect.flip(ConnectionPool.make({ host: "127.0.0.1", port, ...options }))
        expect(error).toMatchObject({ _tag: "InvalidOptions", operation: "connect" })
        expect(error.issues).toContain(issue)
      }
    }))

  live("closing the pool's scope closes every connection", () =>
    Effect.gen(function*() {
      const server = yield* restartableServer
      yield* Effect.scoped(Effect.gen(function*() {
        const pool = yield* poolOf(server, { max: 3 })
        yield* Effect.forEach([1, 2, 3], () => pool.use((c) => exchange(c)), { concurrency: "unbounded" })
      }))
      yield* eventually(() => server.state.ended === 3)
    }))
})
