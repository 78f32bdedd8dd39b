import { describe, expect } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as TestClock from "effect/TestClock"
import type * as net from "node:net"
import { HealthCheck, Retry, Tcp } from "../src/index.js"
import { awaitSleeps, effect, eventually, live, onCommands, rawServer, realSleep } from "./support/harness.js"
import { captureLogs } from "./support/logs.js"
import { redisServer, resp } from "./support/redis.js"

type Behaviour = "PONG" | "garbage" | "stall" | "close"

/**
 * A peer speaking the seed's health protocol on 4-byte commands: `PING` is answered according to
 * `behaviour` (which a test may change), `SLOW` is answered `DONE` after 50 ms (real time).
 */
const pingPeer = (initial: Behaviour) =>
  Effect.gen(function*() {
    const peer = { behaviour: initial, received: [] as Array<string>, sockets: [] as Array<net.Socket>, ended: 0 }
    const { port } = yield* rawServer((socket) => {
      peer.sockets.push(socket)
      socket.on("end", () => peer.ended++)
      onCommands(socket, 4, (command) => {
        peer.received.push(command)
        if (command === "SLOW") setTimeout(() => socket.write("DONE"), 50)
        else if (peer.behaviour === "PONG") socket.write("PONG")
        else if (peer.behaviour === "garbage") socket.write("PANG")
        else if (peer.behaviour === "close") socket.end()
      })
    })
    return { peer, port }
  })

describe("HealthCheck.ping", () => {
  live("succeeds against a peer that answers PONG", () =>
    Effect.gen(function*() {
      const { peer, port } = yield* pingPeer("PONG")
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port })
      yield* HealthCheck.ping(connection)
      yield* HealthCheck.ping(connection)
      expect(peer.received).toEqual(["PING", "PING"])
    }))

  live("fails with WrongReply showing what came back from a peer that answers garbage", () =>
    Effect.gen(function*() {
      const { port } = yield* pingPeer("garbage")
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port })
      const error = yield* Effect.flip(HealthCheck.ping(connection))
      expect(error).toMatchObject({
        _tag: "HealthCheckFailed",
        endpoint: { host: "127.0.0.1", port },
        reason: { _tag: "WrongReply", expected: `"PONG"`, received: `"PANG"` }
      })
      expect(error.transient).toBe(false)
      expect(error.message).toBe(
        `health check of 127.0.0.1:${port} failed: expected "PONG", got "PANG"; the peer speaks another protocol or the exchange is out of step: close the connection`
      )
    }))

  effect("fails with Timeout after exactly 1 s against a peer that stalls", () =>
    Effect.gen(function*() {
      const { peer, port } = yield* pingPeer("stall")
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port })
      const fiber = yield* Effect.fork(HealthCheck.ping(connection))
      yield* eventually(() => peer.received.length === 1)
      expect(yield* awaitSleeps(1)).toEqual([1000])
      yield* TestClock.adjust("999 millis")
      expect(fiber.unsafePoll()).toBeNull()
      yield* TestClock.adjust("1 millis")
      const error = yield* Effect.flip(Fiber.join(fiber))
      expect(error.reason).toEqual({ _tag: "Timeout", timeoutMillis: 1000 })
      expect(error.transient).toBe(true)
      expect(error.message).toContain(`health check of 127.0.0.1:${port} failed: no reply within 1000 ms`)
    }))

  live("fails with ConnectionError carrying UnexpectedEof when the peer closes instead of answering", () =>
    Effect.gen(function*() {
      const { port } = yield* pingPeer("close")
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port })
      const error = yield* Effect.flip(HealthCheck.ping(connection))
      expect(error.reason._tag).toBe("ConnectionError")
      if (error.reason._tag !== "ConnectionError") return
      expect(error.reason.error).toMatchObject({ _tag: "UnexpectedEof", expected: 4, received: 0 })
      expect(error.transient).toBe(true)
      expect(error.message).toMatch(/^health check of 127\.0\.0\.1:\d+ failed: UnexpectedEof: read on the connection/)
    }))

  live("a connection error is the connection's own typed error: a closed connection gives SocketClosed", () =>
    Effect.gen(function*() {
      const { port } = yield* pingPeer("PONG")
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port })
      yield* connection.close
      const error = yield* Effect.flip(HealthCheck.ping(connection))
      expect(error.reason).toMatchObject({ _tag: "ConnectionError", error: { _tag: "SocketClosed", operation: "write" } })
      expect(Retry.isRetryable(error)).toBe(false)
    }))

  live("HealthCheckFailed is serialisable with its reason and the typed error inside", () =>
    Effect.gen(function*() {
      const { port } = yield* pingPeer("close")
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port })
      const error = yield* Effect.flip(HealthCheck.ping(connection))
      const encoded = Schema.encodeSync(HealthCheck.HealthCheckFailed)(error)
      const decoded = Schema.decodeUnknownSync(HealthCheck.HealthCheckFailed)(JSON.parse(JSON.stringify(encoded)))
      expect(decoded.reason._tag).toBe("ConnectionError")
      expect(decoded.message).toBe(error.message)
    }))
})

describe("HealthCheck.probe", () => {
  live("customises request, expected reply, how to read it and the deadline", () =>
    Effect.gen(function*() {
      const { port } = yield* rawServer((socket) => {
        socket.on("data", (chunk: Buffer) => {
          if (chunk.toString() === "HEALTH?\n") socket.write("+OK uptime=42\n")
        })
      })
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port })
      const healthy = yield* HealthCheck.probe({
        request: "HEALTH?\n",
        expect: (reply) => Buffer.from(reply).toString().startsWith("+OK"),
        readReply: (c) => c.readUntil("\n"),
        timeout: "200 millis"
      })
      yield* healthy(connection)
      const picky = yield* HealthCheck.probe({ request: "HEALTH?\n", expect: (reply) => reply.length === 0, readReply: (c) => c.readUntil("\n") })
      const error = yield* Effect.flip(picky(connection))
      expect(error.reason).toEqual({ _tag: "WrongReply", expected: "a reply the check accepts", received: `"+OK uptime=42"` })
    }))

  effect("a bad option fails building the probe with InvalidOptions, and never throws", () =>
    Effect.gen(function*() {
      const cases: Array<[Record<string, unknown>, string]> = [
        [{ timeout: -1 }, "got -1"],
        [{ timeout: NaN }, "got NaN"],
        [{ timeout: "-5 seconds" }, `got "-5 seconds"`],
        [{ timeout: [-5, 0] }, "got [-5, 0]"],
        [{ timeout: "soon" }, `got "soon"`],
        [{ request: 42 }, "42"],
        [{ expect: 42 }, "42"],
        [{ readReply: "line" }, `"line"`]
      ]
      for (const [options, issue] of cases) {
        const built = Effect.suspend(() => HealthCheck.probe(options as HealthCheck.ProbeOptions))
        const error = yield* Effect.flip(built)
        // A probe writes and reads: its options belong to no one socket operation.
        expect(error._tag).toBe("InvalidOptions")
        expect(error).not.toHaveProperty("operation")
        expect(error.issues).toContain(issue)
      }
      expect((yield* Effect.flip(HealthCheck.probe({ timeout: "-5 seconds" }))).message).toBe(
        `invalid options: HealthCheck.probe: timeout: expected a finite, non-negative duration (milliseconds, or a string like "5 seconds"), got "-5 seconds"`
      )
    }))
})

describe("HealthCheck.heartbeat", () => {
  effect("probes on its schedule, then closes a connection whose peer stalls, failing its users with typed errors", () =>
    Effect.gen(function*() {
      const logs = captureLogs()
      const { peer, port } = yield* pingPeer("PONG")
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port })
      const heartbeat = yield* HealthCheck.heartbeat(connection, { schedule: Schedule.spaced("10 seconds") }).pipe(
        Effect.provide(logs.layer)
      )
      // The first beat is due in 10 s: none was sent before it was scheduled.
      expect(yield* awaitSleeps(1)).toEqual([10_000])
      expect(peer.received).toEqual([])
      yield* TestClock.adjust("10 seconds")
      yield* eventually(() => peer.received.length === 1)
      // The probe passed: the next beat is scheduled (a failed one would have stopped the heartbeat).
      yield* awaitSleeps(1, { wakingAt: "20 seconds" })
      expect(yield* heartbeat.failure).toEqual(Option.none())

      // The peer's host freezes: no answer, no FIN, no RST.
      peer.behaviour = "stall"
      yield* TestClock.adjust("10 seconds")
      yield* eventually(() => peer.received.length === 2)
      // The probe waits for its reply under its deadline, 1 s after it was sent.
      expect(yield* awaitSleeps(1)).toEqual([21_000])
      yield* TestClock.adjust("999 millis")
      expect(yield* heartbeat.failure).toEqual(Option.none())
      expect(yield* connection.state).toEqual({ _tag: "Open" })
      yield* TestClock.adjust("1 millis")

      const failure = yield* heartbeat.awaitFailure
      expect(failure.reason).toEqual({ _tag: "Timeout", timeoutMillis: 1000 })
      expect(yield* heartbeat.failure).toEqual(Option.some(failure))
      expect(yield* connection.state).toEqual({ _tag: "Closed" })
      expect(yield* Effect.flip(connection.read)).toMatchObject({ _tag: "SocketClosed", reason: "Closed" })
      const refused = yield* Effect.flip(heartbeat.exclusive(connection.write("SLOW")))
      expect(refused).toBe(failure)
      // The peer sees the connection end.
      yield* eventually(() => peer.ended === 1)
      expect(logs.entries.filter((entry) => entry.level === "WARN").map((entry) => entry.message)).toEqual([
        `heartbeat: ${failure.message}`
      ])
      // No further probe once it failed: nothing is scheduled.
      expect(Chunk.toArray(yield* TestClock.sleeps())).toEqual([])
      yield* TestClock.adjust("1 minute")
      expect(peer.received.length).toBe(2)
    }))

  effect("a probe due during an exclusive exchange waits for it, so bytes never interleave", () =>
    Effect.gen(function*() {
      const { peer, port } = yield* pingPeer("PONG")
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port })
      const heartbeat = yield* HealthCheck.heartbeat(connection, { schedule: Schedule.spaced("1 second") })
      const exchange = yield* heartbeat.exclusive(
        Effect.gen(function*() {
          yield* connection.write("SLOW")
          yield* TestClock.adjust("1 second") // the probe is due now, while the reply is still on its way
          return Buffer.from(yield* connection.readExactly(4)).toString()
        })
      ).pipe(Effect.fork)
      expect(yield* Fiber.join(exchange)).toBe("DONE")
      yield* eventually(() => peer.received.length === 2)
      expect(peer.received).toEqual(["SLOW", "PING"])
      // The probe holds the lock until its exchange ends: then it has passed.
      expect(yield* heartbeat.exclusive(Effect.succeed("still usable"))).toBe("still usable")
      expect(yield* heartbeat.failure).toEqual(Option.none())
    }))

  effect("takes the connection first or last: in a pipe after connect, it probes on its schedule", () =>
    Effect.gen(function*() {
      const { peer, port } = yield* pingPeer("PONG")
      const heartbeat = yield* Tcp.connect({ host: "127.0.0.1", port }).pipe(
        Effect.flatMap(HealthCheck.heartbeat({ schedule: Schedule.spaced("1 second") }))
      )
      // Once the heartbeat waits for its first beat, one second of test time brings it.
      expect(yield* awaitSleeps(1)).toEqual([1000])
      yield* TestClock.adjust("1 second")
      yield* eventually(() => peer.received.length === 1)
      expect(peer.received).toEqual(["PING"])
      expect(yield* heartbeat.exclusive(Effect.succeed("usable"))).toBe("usable")
      expect(yield* heartbeat.failure).toEqual(Option.none())
    }))

  effect("ends quietly when the connection's owner closes it", () =>
    Effect.gen(function*() {
      const logs = captureLogs()
      const { peer, port } = yield* pingPeer("PONG")
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port })
      const heartbeat = yield* HealthCheck.heartbeat(connection).pipe(Effect.provide(logs.layer))
      expect(yield* awaitSleeps(1)).toEqual([10_000])
      yield* connection.close
      yield* TestClock.adjust("30 seconds")
      // The beat at 10 s found the connection closed and ended the heartbeat: nothing is scheduled.
      expect(Chunk.toArray(yield* TestClock.sleeps())).toEqual([])
      expect(yield* heartbeat.failure).toEqual(Option.none())
      expect(peer.received).toEqual([])
      expect(logs.entries).toEqual([])
    }))

  effect("the heartbeat's fiber ends with its scope", () =>
    Effect.gen(function*() {
      const { port } = yield* pingPeer("PONG")
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port })
      const exit = yield* Effect.scoped(HealthCheck.heartbeat(connection)).pipe(Effect.exit)
      expect(Exit.isSuccess(exit)).toBe(true)
      // The harness fails the test if the heartbeat's fiber were still running.
    }))
})

describe("HealthCheck against redis-server", () => {
  live("redisPing passes against a real redis-server, many times over one connection", () =>
    Effect.gen(function*() {
      const redis = yield* redisServer
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port: redis.port })
      for (let i = 0; i < 3; i++) yield* HealthCheck.redisPing(connection)
      // In step: the next exchange reads its own reply.
      yield* connection.write(resp("ECHO", "after the probes"))
      expect(Buffer.from(yield* connection.readUntil("\r\n")).toString()).toBe("$16")
      expect(Buffer.from(yield* connection.readUntil("\r\n")).toString()).toBe("after the probes")
    }))

  live("the seed's ping is not Redis's: redisPing exists because Redis wants a line and answers one", () =>
    Effect.gen(function*() {
      const redis = yield* redisServer
      // Redis reads an inline command up to its line ending: "PING" alone is never answered.
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port: redis.port })
      const error = yield* Effect.flip(HealthCheck.ping(connection))
      expect(error.reason).toEqual({ _tag: "Timeout", timeoutMillis: 1000 })
    }))

  live("an error reply (a server that wants a password) fails redisPing with WrongReply showing the whole line", () =>
    Effect.gen(function*() {
      const redis = yield* redisServer
      expect(yield* redis.command("CONFIG", "SET", "requirepass", "secret")).toBe("+OK\r\n")
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port: redis.port })
      const error = yield* Effect.flip(HealthCheck.redisPing(connection))
      expect(error.reason).toEqual({
        _tag: "WrongReply",
        expected: `"+PONG"`,
        received: `"-NOAUTH Authentication required."`
      })
      expect(error.transient).toBe(false)
    }))

  effect("a heartbeat with redisPing closes its connection when the server freezes (SIGSTOP)", () =>
    Effect.gen(function*() {
      const redis = yield* redisServer
      yield* Effect.addFinalizer(() => redis.thaw)
      const logs = captureLogs()
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port: redis.port })
      yield* redis.command("CONFIG", "RESETSTAT")
      const heartbeat = yield* HealthCheck.heartbeat(connection, { probe: HealthCheck.redisPing, schedule: Schedule.spaced("5 seconds") }).pipe(
        Effect.provide(logs.layer)
      )
      expect(yield* awaitSleeps(1)).toEqual([5000])
      yield* TestClock.adjust("5 seconds")
      // Redis counts the PING it answered.
      while (!(yield* redis.command("INFO", "commandstats")).includes("cmdstat_ping:calls=1,")) yield* realSleep(2)
      expect(yield* heartbeat.failure).toEqual(Option.none())
      yield* redis.freeze
      yield* TestClock.adjust("5 seconds")
      // The probe sent to the frozen server waits for its reply under its deadline.
      expect(yield* awaitSleeps(1)).toEqual([11_000])
      yield* TestClock.adjust("1 second")
      const failure = yield* heartbeat.awaitFailure
      expect(failure.reason).toEqual({ _tag: "Timeout", timeoutMillis: 1000 })
      expect(yield* connection.state).toEqual({ _tag: "Closed" })
    }))
})
