import { describe, expect } from "@effect/vitest"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Predicate from "effect/Predicate"
import * as Random from "effect/Random"
import * as Scope from "effect/Scope"
import * as TestClock from "effect/TestClock"
import * as net from "node:net"
import { ConnectionPool, HealthCheck, Tcp as TcpService, TcpError } from "../src/index.js"
import type { Connection } from "../src/Connection.js"
import type * as Tcp from "../src/Tcp.js"
import {
  awaitSleeps,
  closedPort,
  effect,
  eventually,
  exchange,
  live,
  onCommands,
  rawServer,
  realSleep,
  text,
  tcp as tcpOf
} from "./support/harness.js"
import { fullBacklogListener } from "./support/processes.js"
import { type Redis, redisServer, resp } from "./support/redis.js"

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
      onCommands(socket, 4, (command) => answer(socket, command))
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
      yield* awaitSleeps(1, { wakingAt: "5 seconds" })
      yield* TestClock.adjust("5 seconds")
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

  effect("acquireTimeout also bounds a connect that hangs: the borrower stops waiting, the connect goes on to its own deadline", () =>
    Effect.gen(function*() {
      const port = yield* fullBacklogListener
      const pool = yield* ConnectionPool.make({ host: "127.0.0.1", port, connectTimeout: "1 minute", acquireTimeout: "2 seconds" })
      const fiber = yield* Effect.fork(pool.use((c) => exchange(c)))
      // The borrow's deadline, and the connect's.
      yield* awaitSleeps(1, { wakingAt: "2 seconds" })
      yield* awaitSleeps(1, { wakingAt: "1 minute" })
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
      // Both idle connections are being probed, each with a deadline of 1 second.
      yield* awaitSleeps(2, { wakingAt: "31 seconds" })
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
      const ports = yield* Effect.forEach([1, 2], () => pool.use((c) => Effect.as(exchange(c), tcpOf(c.localAddress).port)), {
        concurrency: "unbounded"
      })
      // Both idle connections now answer garbage; a new one will not.
      for (const socket of server.state.sockets) server.state.garbage.add(socket)
      const lent = yield* pool.use((c) => Effect.as(exchange(c), tcpOf(c.localAddress).port))
      expect(ports).not.toContain(lent)
      expect(yield* pool.stats).toMatchObject({ idle: 1, opened: 3, closed: 2 })
    }))

  live("a new connection is probed before its first use: one that fails its health check fails the borrower with HealthCheckFailed", () =>
    Effect.gen(function*() {
      const server = yield* restartableServer
      server.state.mode = "garbage"
      const pool = yield* poolOf(server, { healthCheck: HealthCheck.ping })
      const error = yield* Effect.flip(pool.use((c) => exchange(c)))
      expect(error).toMatchObject({ _tag: "HealthCheckFailed", reason: { _tag: "WrongReply", received: `"PANG"` } })
      expect(yield* pool.stats).toMatchObject({ idle: 0, inUse: 0, closed: 1 })
    }))

  effect("a use that fails, even by its own timeout, closes its connection: the next borrower never reads the reply to another's request", () =>
    Effect.gen(function*() {
      // A line server that answers "reply to <line>", the first reply only once the test says so.
      const received: Array<string> = []
      let releaseFirst = () => {}
      const { port } = yield* rawServer((socket) => {
        let pending = ""
        socket.on("data", (chunk: Buffer) => {
          pending += chunk.toString()
          for (let end = pending.indexOf("\n"); end >= 0; end = pending.indexOf("\n")) {
            const line = pending.slice(0, end)
            pending = pending.slice(end + 1)
            received.push(line)
            const answer = () => socket.writable && socket.write(`reply to ${line}\n`)
            if (line === "first") releaseFirst = answer
            else answer()
          }
        })
      })
      const pool = yield* ConnectionPool.make({ host: "127.0.0.1", port, max: 1 })
      const request = (line: string) =>
        pool.use((c) =>
          c.write(`${line}\n`).pipe(
            Effect.zipRight(c.readUntil("\n")),
            Effect.map(text),
            Effect.timeout("50 millis")
          )
        )
      const first = yield* Effect.fork(request("first"))
      yield* eventually(() => received.includes("first"))
      yield* TestClock.adjust("50 millis")
      expect((yield* Effect.flip(Fiber.join(first)))._tag).toBe("TimeoutException")
      // The late reply arrives, on a connection that must not be lent again.
      releaseFirst()
      expect(yield* request("second")).toBe("reply to second")
      expect(yield* pool.stats).toMatchObject({ opened: 2, closed: 1, idle: 1 })
    }))

  live("use returns the connection only after success; any failure, a defect or an interruption closes it", () =>
    Effect.gen(function*() {
      const server = yield* restartableServer
      const pool = yield* poolOf(server, { max: 1 })
      const portOf = pool.use((c) => Effect.succeed(tcpOf(c.localAddress).port))
      const first = yield* portOf
      expect(yield* portOf).toBe(first)

      expect(yield* Effect.flip(pool.use(() => Effect.fail("not found" as const)))).toBe("not found")
      const second = yield* portOf
      expect(second).not.toBe(first) // a failure of your own: closed, the stream may be out of step

      const reset = yield* Effect.flip(pool.use((c) =>
        Effect.fail(new TcpError.ConnectionReset({ operation: "read", endpoint: c.remoteAddress }))
      ))
      expect(reset._tag).toBe("ConnectionReset")
      const third = yield* portOf
      expect(third).not.toBe(second)

      const died = yield* Effect.exit(pool.use(() => Effect.die("bug")))
      expect(Exit.isFailure(died)).toBe(true)
      const fourth = yield* portOf
      expect(fourth).not.toBe(third)

      const fiber = yield* Effect.fork(pool.use((c) => c.readExactly(100)))
      yield* eventually(() => Effect.runSync(pool.stats).inUse === 1)
      yield* Fiber.interrupt(fiber)
      expect(yield* portOf).not.toBe(fourth)
      yield* eventually(() => server.state.ended === 4)
      expect(yield* pool.stats).toMatchObject({ opened: 5, closed: 4, idle: 1 })
    }))

  live("keepOnFailure names the failures that leave the connection in step: those return it, the rest still close it", () =>
    Effect.gen(function*() {
      const server = yield* restartableServer
      class NotFound extends Data.TaggedError("NotFound")<{}> {}
      const pool = yield* poolOf(server, { max: 1, keepOnFailure: Predicate.isTagged("NotFound") })
      const portOf = pool.use((c) => Effect.succeed(tcpOf(c.localAddress).port))
      const first = yield* portOf

      // The whole reply was read, then found to mean "not found": the stream is in step.
      const notFound = yield* Effect.flip(pool.use((c) => Effect.zipRight(exchange(c), new NotFound())))
      expect(notFound._tag).toBe("NotFound")
      expect(yield* portOf).toBe(first)

      expect(yield* Effect.flip(pool.use(() => Effect.fail("other" as const)))).toBe("other")
      const second = yield* portOf
      expect(second).not.toBe(first)

      // The connection's own failures close it whatever the predicate says.
      const everything = yield* poolOf(server, { max: 1, keepOnFailure: () => true })
      const before = yield* everything.use((c) => Effect.succeed(tcpOf(c.localAddress).port))
      const timedOut = yield* Effect.flip(everything.use((c) =>
        Effect.fail(new TcpError.ReadTimeout({ operation: "read", endpoint: c.remoteAddress, timeoutMillis: 10 }))
      ))
      expect(timedOut._tag).toBe("ReadTimeout")
      expect(yield* everything.use((c) => Effect.succeed(tcpOf(c.localAddress).port))).not.toBe(before)

      const throwing = yield* poolOf(server, { max: 1, keepOnFailure: () => { throw new Error("bug") } })
      const kept = yield* throwing.use((c) => Effect.succeed(tcpOf(c.localAddress).port))
      expect(yield* Effect.flip(throwing.use(() => new NotFound()))).toBeInstanceOf(NotFound)
      expect(yield* throwing.use((c) => Effect.succeed(tcpOf(c.localAddress).port))).not.toBe(kept)
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
      const mine = Effect.scoped(Effect.flatMap(pool.get, (c) => Effect.zipRight(exchange(c), Effect.fail("mine" as const))))
      expect(yield* Effect.flip(mine)).toBe("mine")
      expect(yield* pool.stats).toMatchObject({ inUse: 0, idle: 0, closed: 2 })
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
      const portOf = pool.use((c) => Effect.succeed(tcpOf(c.localAddress).port))
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
      const notADuration = (value: string) =>
        `expected a finite, non-negative duration (milliseconds, or a string like "5 seconds"), got ${value}`
      const cases: Array<[Record<string, unknown>, string]> = [
        [{ min: 3, max: 2 }, "min (3) must not exceed max (2)"],
        [{ max: 0 }, "max must be an integer of at least 1, got 0"],
        [{ min: 2 ** 31 }, "max must be at most 65535, got 2147483648"],
        [{ acquireTimeout: -1 }, `acquireTimeout: ${notADuration("-1")}`],
        [{ maxWaiters: 1.5 }, "maxWaiters must be an integer of at least 0, got 1.5"],
        [{ validationInterval: 0 }, "validationInterval must be more than 0"],
        [{ keepOnFailure: "NotFound" }, "keepOnFailure must be a function, got string"],
        [{ port: 70000 }, "a port to connect to is an integer from 1 to 65535"]
      ]
      // Duration.decode takes each of these for 0 (or throws): every duration of the pool refuses them.
      for (const name of ["idleTimeToLive", "maxLifetime", "acquireTimeout", "validateAfterIdle", "validationInterval"]) {
        cases.push(
          [{ [name]: NaN }, `${name}: ${notADuration("NaN")}`],
          [{ [name]: "-5 seconds" }, `${name}: ${notADuration(`"-5 seconds"`)}`],
          [{ [name]: [-5, 0] }, `${name}: ${notADuration("[-5, 0]")}`],
          [{ [name]: "1e3 millis" }, `${name}: ${notADuration(`"1e3 millis"`)}`],
          [{ [name]: Infinity }, `${name}: ${notADuration("Infinity")}`]
        )
      }
      for (const [options, issue] of cases) {
        const error = yield* Effect.flip(ConnectionPool.make({ host: "127.0.0.1", port, ...options }))
        expect(error).toMatchObject({ _tag: "InvalidOptions", operation: "connect" })
        expect(error.issues).toContain(issue)
      }
    }))

  effect("a connect slower than acquireTimeout still serves: the borrower who gave up leaves it running, and the next one is lent its connection", () =>
    Effect.gen(function*() {
      const server = yield* restartableServer
      const tcp = yield* TcpService.Tcp
      const accept = yield* Deferred.make<void>()
      let attempts = 0
      const slowConnect = Effect.zipRight(
        Effect.sync(() => attempts++),
        Effect.zipRight(Deferred.await(accept), tcp.connect({ host: "127.0.0.1", port: server.state.port }))
      )
      const pool = yield* ConnectionPool.makeWith(slowConnect, { max: 1, acquireTimeout: "1 second" })
      const first = yield* Effect.fork(pool.use((c) => exchange(c)))
      yield* eventually(() => attempts === 1)
      yield* TestClock.adjust("1 second")
      expect(yield* Effect.flip(Fiber.join(first))).toMatchObject({ _tag: "PoolTimeout", connecting: 1, waiting: 1 })
      expect(yield* pool.stats).toMatchObject({ connecting: 1, waiting: 0, inUse: 0 })
      // Meanwhile the connect holds the only permit: a second borrower queues behind it.
      const second = yield* Effect.fork(pool.use((c) => Effect.as(exchange(c), tcpOf(c.localAddress).port)))
      yield* eventually(() => Effect.runSync(pool.stats).waiting === 1)
      yield* Deferred.succeed(accept, undefined)
      expect(yield* Fiber.join(second)).toBeTypeOf("number")
      expect(attempts).toBe(1)
      expect(yield* pool.stats).toMatchObject({ opened: 1, idle: 1, connecting: 0 })
    }))

  live("borrowers queued for a connection are served in the order they came", () =>
    Effect.gen(function*() {
      const server = yield* restartableServer
      const pool = yield* poolOf(server, { max: 1 })
      const release = yield* Deferred.make<void>()
      const holder = yield* Effect.fork(pool.use(() => Deferred.await(release)))
      yield* eventually(() => Effect.runSync(pool.stats).inUse === 1)
      const served: Array<number> = []
      const waiters: Array<Fiber.RuntimeFiber<unknown, unknown>> = []
      for (let i = 0; i < 8; i++) {
        waiters.push(yield* Effect.fork(pool.use((c) => Effect.zipRight(exchange(c), Effect.sync(() => served.push(i))))))
        yield* eventually(() => Effect.runSync(pool.stats).waiting === i + 1)
      }
      yield* Deferred.succeed(release, undefined)
      yield* Fiber.join(holder)
      yield* Effect.forEach(waiters, Fiber.join, { discard: true })
      expect(served).toEqual([0, 1, 2, 3, 4, 5, 6, 7])
      expect(yield* pool.stats).toMatchObject({ opened: 1, idle: 1 })
    }))

  effect("idleTimeToLive counts from each connection's last use: the surplus idle longest is closed, a recently used one kept", () =>
    Effect.gen(function*() {
      const server = yield* restartableServer
      const pool = yield* poolOf(server, { max: 2, idleTimeToLive: "1 minute", validationInterval: "1 hour" })
      const release = yield* Deferred.make<void>()
      const both = yield* Effect.fork(Effect.forEach([1, 2], () =>
        pool.use((c) => Effect.as(Deferred.await(release), tcpOf(c.localAddress).port)), { concurrency: "unbounded" }))
      yield* eventually(() => Effect.runSync(pool.stats).inUse === 2)
      yield* Deferred.succeed(release, undefined)
      const ports = yield* Fiber.join(both)
      yield* TestClock.adjust("30 seconds")
      // The most recently returned connection is lent first: it is used again at 30 s.
      const recent = yield* pool.use((c) => Effect.succeed(tcpOf(c.localAddress).port))
      expect(ports).toContain(recent)
      yield* TestClock.adjust("30 seconds")
      yield* eventually(() => Effect.runSync(pool.stats).closed === 1)
      expect(yield* pool.stats).toMatchObject({ idle: 1, closed: 1 })
      expect(yield* pool.use((c) => Effect.succeed(tcpOf(c.localAddress).port))).toBe(recent)
      yield* TestClock.adjust("1 minute")
      yield* eventually(() => Effect.runSync(pool.stats).closed === 2)
      expect(yield* pool.stats).toMatchObject({ idle: 0, opened: 2 })
    }))

  live("closing the pool's scope waits for the lent connections to come back, then closes every one; a borrow from a closing pool is interrupted", () =>
    Effect.gen(function*() {
      const server = yield* restartableServer
      const scope = yield* Scope.make()
      const pool = yield* Scope.extend(poolOf(server, { max: 2 }), scope)
      const release = yield* Deferred.make<void>()
      const lent = yield* Deferred.make<void>()
      // Two connections: one goes back idle, the other stays lent.
      yield* Effect.forEach([1, 2], () => pool.use((c) => exchange(c)), { concurrency: "unbounded" })
      const holder = yield* Effect.fork(pool.use((c) =>
        Effect.zipRight(Deferred.succeed(lent, undefined), Effect.zipRight(Deferred.await(release), exchange(c)))
      ))
      yield* Deferred.await(lent)
      const closing = yield* Effect.fork(Scope.close(scope, Exit.void))
      // (A borrow polled for here would take the idle connection, which a closing pool closes when it comes back.)
      yield* realSleep(20)
      expect(Exit.isInterrupted(yield* Effect.exit(pool.use(() => Effect.void)))).toBe(true)
      // Still closing, and nothing closed yet: the idle connection waits with the lent one.
      expect(closing.unsafePoll()).toBeNull()
      expect(server.state.ended).toBe(0)
      yield* Deferred.succeed(release, undefined)
      expect(yield* Fiber.join(holder)).toBe("ping")
      yield* Fiber.join(closing)
      expect(yield* pool.stats).toMatchObject({ idle: 0, inUse: 0, opened: 2, closed: 2 })
      yield* eventually(() => server.state.ended === 2)
    }))

  for (const first of ["the deadline", "the release"] as const) {
    effect(`a waiter whose deadline comes at the very moment a connection is handed to it leaves nothing held (${first} first)`, () =>
      Effect.gen(function*() {
        const server = yield* restartableServer
        const pool = yield* poolOf(server, { max: 1, acquireTimeout: "1 second" })
        const go = yield* Deferred.make<void>()
        const holding = pool.use(() => Effect.zipRight(Deferred.await(go), Effect.sleep("1 second")))
        const waiting = pool.use((c) => exchange(c))
        // Both wake-ups are due at the same instant; the one registered first runs first.
        // The pool's own schedules (validation, idle sweep) are sleeping too.
        const holder = yield* Effect.fork(holding)
        yield* eventually(() => Effect.runSync(pool.stats).inUse === 1)
        let waiter: Fiber.RuntimeFiber<string, unknown>
        if (first === "the deadline") {
          waiter = yield* Effect.fork(waiting)
          yield* eventually(() => Effect.runSync(pool.stats).waiting === 1)
          yield* Deferred.succeed(go, undefined)
          yield* awaitSleeps(2, { wakingAt: "1 second" })
        } else {
          yield* Deferred.succeed(go, undefined)
          yield* awaitSleeps(1, { wakingAt: "1 second" })
          waiter = yield* Effect.fork(waiting)
          yield* awaitSleeps(2, { wakingAt: "1 second" })
        }
        yield* TestClock.adjust("1 second")
        yield* Fiber.join(holder)
        // Whichever won, the permit and the connection are back: the pool lends again.
        yield* Fiber.await(waiter)
        expect(yield* pool.use((c) => exchange(c))).toBe("ping")
        expect(yield* pool.stats).toMatchObject({ waiting: 0, inUse: 0, idle: 1, opened: 1 })
      }))
  }

  live("a use that closes its connection, ends its write side or reads the peer's FIN, and succeeds, leaves nothing dead to lend: the next borrower gets a new connection", () =>
    Effect.gen(function*() {
      // An echo server that ends its side when told "bye!".
      const { port } = yield* rawServer((socket) =>
        socket.on("data", (chunk: Buffer) => (chunk.toString() === "bye!" ? socket.end() : socket.write(chunk)))
      )
      const pool = yield* ConnectionPool.make({ host: "127.0.0.1", port, max: 1 })
      const portOf = pool.use((c) => Effect.as(exchange(c), tcpOf(c.localAddress).port))
      const ends: Array<(c: Connection) => Effect.Effect<unknown, unknown>> = [
        (c) => c.close,
        (c) => c.endWrite,
        // The peer's FIN, read as the end of the stream.
        (c) => Effect.zipRight(c.write("bye!"), c.read)
      ]
      let last = yield* portOf
      for (const end of ends) {
        yield* pool.use(end)
        // At once, before the idle connection's watcher could look at it.
        const next = yield* portOf
        expect(next).not.toBe(last)
        last = next
      }
      expect(yield* pool.stats).toMatchObject({ opened: 4, closed: 3, idle: 1 })
    }))

  live("a pool is a ConnectionPool and pipes", () =>
    Effect.gen(function*() {
      const server = yield* restartableServer
      const pool = yield* poolOf(server)
      expect(ConnectionPool.isConnectionPool(pool)).toBe(true)
      expect(ConnectionPool.isConnectionPool({ use: pool.use, get: pool.get })).toBe(false)
      expect(yield* pool.pipe((p) => p.use((c) => exchange(c)))).toBe("ping")
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

describe("ConnectionPool against redis-server", () => {
  const redisPool = (redis: Redis, options: ConnectionPool.PoolOptions & Partial<Tcp.ConnectOptions> = {}) =>
    ConnectionPool.make({ host: "127.0.0.1", port: redis.port, ...options })

  /** PING as Redis clients send it, and the reply line. */
  const ping = (connection: Connection) =>
    Effect.zipRight(connection.write(resp("PING")), connection.readUntil("\r\n")).pipe(
      Effect.map(text)
    )

  effect("idle connections to a healthy, quiet server stay open whatever the readTimeout: the watcher's read waits for the peer, not for the deadline", () =>
    Effect.gen(function*() {
      const redis = yield* redisServer
      const pool = yield* redisPool(redis, { readTimeout: "1 second", min: 2 })
      yield* eventually(() => Effect.runSync(pool.stats).idle === 2)
      const ports = new Set(Array.from(yield* Effect.forEach([1, 2], () => pool.use((c) => Effect.succeed(tcpOf(c.localAddress).port)), { concurrency: "unbounded" })))
      // Seven readTimeouts and more, each a chance for a watcher to take the silence for a dead peer.
      for (let step = 0; step < 16; step++) {
        yield* TestClock.adjust("500 millis")
        yield* realSleep(5)
      }
      expect(yield* pool.stats).toMatchObject({ idle: 2, opened: 2, closed: 0 })
      expect(yield* redis.connectedClients).toBe(2)
      // The same two connections, still answering; a use's own read still has its deadline.
      const lent = yield* Effect.forEach([1, 2], () =>
        pool.use((c) => Effect.map(ping(c), (reply) => [reply, tcpOf(c.localAddress).port] as const)), { concurrency: "unbounded" })
      expect(lent.map(([reply]) => reply)).toEqual(["+PONG", "+PONG"])
      expect(new Set(lent.map(([, port]) => port))).toEqual(ports)
      const stuck = yield* Effect.forkScoped(pool.use((c) => c.readExactly(1)))
      // 16 steps of 500 ms went by: the read's deadline is 1 second from now.
      yield* awaitSleeps(1, { wakingAt: "9 seconds" })
      yield* TestClock.adjust("1 second")
      expect(yield* Effect.flip(Fiber.join(stuck))).toMatchObject({ _tag: "ReadTimeout", timeoutMillis: 1000 })
    }))

  // Borrowers are forked in the test's scope: a failing test interrupts them before the pool waits for its connections.
  effect("with the server frozen (SIGSTOP), a borrow from a new pool fails within acquireTimeout: the new connection's probe is part of the borrow", () =>
    Effect.gen(function*() {
      const redis = yield* redisServer
      yield* Effect.addFinalizer(() => redis.thaw)
      // The kernel still completes handshakes for the frozen process: only a probe shows it is not answering.
      yield* redis.freeze
      const slowPing = yield* HealthCheck.probe({
        request: "PING\r\n",
        expect: "+PONG",
        readReply: (c) => c.readUntil("\r\n"),
        timeout: "5 seconds"
      })
      const pool = yield* redisPool(redis, { healthCheck: slowPing, acquireTimeout: "2 seconds" })
      let lent = 0
      const borrower = yield* Effect.forkScoped(pool.use((c) => Effect.zipRight(Effect.sync(() => lent++), ping(c))))
      yield* eventually(() => Effect.runSync(pool.stats).connecting === 0 && Effect.runSync(pool.stats).inUse === 1)
      // The probe waits for its reply (5 s), the borrow for its deadline (2 s).
      yield* awaitSleeps(1, { wakingAt: "5 seconds" })
      yield* awaitSleeps(1, { wakingAt: "2 seconds" })
      expect(lent).toBe(0)
      yield* TestClock.adjust("2 seconds")
      const error = yield* Effect.flip(Fiber.join(borrower))
      expect(error).toMatchObject({ _tag: "PoolTimeout", timeoutMillis: 2000 })
      expect(lent).toBe(0)
      // The connection whose probe was cut is out of step: closed, never lent.
      expect(yield* pool.stats).toMatchObject({ idle: 0, inUse: 0, opened: 1, closed: 1 })

      // With HealthCheck.redisPing (1 s) the probe's own deadline comes first.
      const quick = yield* redisPool(redis, { healthCheck: HealthCheck.redisPing, acquireTimeout: "2 seconds" })
      const second = yield* Effect.forkScoped(quick.use((c) => Effect.zipRight(Effect.sync(() => lent++), ping(c))))
      yield* eventually(() => Effect.runSync(quick.stats).connecting === 0 && Effect.runSync(quick.stats).inUse === 1)
      yield* awaitSleeps(1, { wakingAt: "3 seconds" })
      expect(lent).toBe(0)
      yield* TestClock.adjust("1 second")
      expect(yield* Effect.flip(Fiber.join(second))).toMatchObject({
        _tag: "HealthCheckFailed",
        reason: { _tag: "Timeout", timeoutMillis: 1000 }
      })
      expect(lent).toBe(0)

      // Thawed, the server answers: a new connection passes its probe and is lent.
      yield* redis.thaw
      expect(yield* quick.use(ping)).toBe("+PONG")
      expect(lent).toBe(0)
    }))

  effect("acquireTimeout bounds the probe of an idle connection too, when the borrow finds one at once", () =>
    Effect.gen(function*() {
      const redis = yield* redisServer
      yield* Effect.addFinalizer(() => redis.thaw)
      const slowPing = yield* HealthCheck.probe({
        request: "PING\r\n",
        expect: "+PONG",
        readReply: (c) => c.readUntil("\r\n"),
        timeout: "5 seconds"
      })
      const pool = yield* redisPool(redis, { healthCheck: slowPing, acquireTimeout: "2 seconds", validateAfterIdle: "1 second" })
      let lent = 0
      const counted = pool.use((c) => Effect.zipRight(Effect.sync(() => lent++), ping(c)))
      expect(yield* counted).toBe("+PONG")
      yield* redis.freeze
      yield* TestClock.adjust("1 second")
      // A free permit and an idle connection that is due for its probe.
      const borrower = yield* Effect.forkScoped(counted)
      yield* eventually(() => Effect.runSync(pool.stats).inUse === 1)
      // The probe's deadline (5 s from now) and the borrow's (2 s).
      yield* awaitSleeps(1, { wakingAt: "6 seconds" })
      yield* awaitSleeps(1, { wakingAt: "3 seconds" })
      // At the deadline, before the probe's own: the borrower fails with the pool's, lent nothing.
      yield* TestClock.adjust("2 seconds")
      yield* eventually(() => borrower.unsafePoll() !== null || lent > 1)
      expect(lent).toBe(1)
      expect(yield* Effect.flip(Fiber.join(borrower))).toMatchObject({ _tag: "PoolTimeout", timeoutMillis: 2000 })
      expect(yield* pool.stats).toMatchObject({ idle: 0, inUse: 0, closed: 1 })
    }), 10_000)

  live("a new connection is probed once before its first use, then lent without a probe while it is busy", () =>
    Effect.gen(function*() {
      const redis = yield* redisServer
      const pool = yield* redisPool(redis, { healthCheck: HealthCheck.redisPing, max: 2, validateAfterIdle: "1 minute" })
      yield* redis.command("CONFIG", "RESETSTAT")
      yield* Effect.forEach(Array.from({ length: 20 }), () => pool.use(ping), { concurrency: 2 })
      // Redis counts the commands it ran: 20 of ours and one PING per connection opened.
      const stats = yield* pool.stats
      const info = yield* redis.command("INFO", "commandstats")
      expect(Number(/cmdstat_ping:calls=(\d+)/.exec(info)![1])).toBe(20 + stats.opened)
    }))
})
