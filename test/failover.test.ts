import { describe, expect } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Schema from "effect/Schema"
import * as TestClock from "effect/TestClock"
import { Failover, Retry } from "../src/index.js"
import { awaitSleeps, closedPort, effect, eventually, live, rawServer, realSleep, tcp } from "./support/harness.js"
import { captureLogs } from "./support/logs.js"
import { fullBacklogListener } from "./support/processes.js"

/** A listener that counts the connections it accepted and those whose client closed them. */
const countingServer = Effect.gen(function*() {
  const counts = { accepted: 0, ended: 0, ports: [] as Array<number> }
  const { port } = yield* rawServer((socket) => {
    counts.accepted++
    counts.ports.push(socket.remotePort!)
    socket.on("end", () => counts.ended++)
    socket.on("close", () => counts.ended += socket.readableEnded ? 0 : 1)
  })
  return { counts, port, endpoint: { host: "127.0.0.1", port } }
})

const local = (port: number) => ({ host: "127.0.0.1", port })

describe("Failover.connect, sequential", () => {
  live("with the primary up, connects to it and never tries the fallback", () =>
    Effect.gen(function*() {
      const primary = yield* countingServer
      const secondary = yield* countingServer
      const connection = yield* Failover.connect([primary.endpoint, secondary.endpoint])
      expect(tcp(connection.remoteAddress).port).toBe(primary.port)
      yield* eventually(() => primary.counts.accepted === 1)
      expect(secondary.counts.accepted).toBe(0)
    }))

  live("with the primary down, falls back to the secondary and logs why", () =>
    Effect.gen(function*() {
      const logs = captureLogs()
      const dead = yield* closedPort
      const secondary = yield* countingServer
      const connection = yield* Failover.connect([local(dead), secondary.endpoint]).pipe(Effect.provide(logs.layer))
      expect(tcp(connection.remoteAddress).port).toBe(secondary.port)
      expect(logs.entries.map((entry) => `${entry.level} ${entry.message}`)).toEqual([
        `INFO connect to 127.0.0.1:${dead} failed with ConnectionRefused, trying 127.0.0.1:${secondary.port}`
      ])
    }))

  effect("a primary that does not answer holds up the fallback until its connectTimeout", () =>
    Effect.gen(function*() {
      const logs = captureLogs()
      const slow = yield* fullBacklogListener
      const secondary = yield* countingServer
      const fiber = yield* Effect.fork(
        Failover.connect([local(slow), secondary.endpoint], { connectTimeout: "2 seconds" }).pipe(
          Effect.provide(logs.layer)
        )
      )
      // The primary's attempt, and nothing else, waits for its deadline.
      expect(yield* awaitSleeps(1)).toEqual([2000])
      yield* TestClock.adjust("2 seconds")
      const connection = yield* Fiber.join(fiber)
      expect(tcp(connection.remoteAddress).port).toBe(secondary.port)
      // The fallback started at the primary's deadline, not before.
      expect(logs.entries.map((entry) => [entry.at, entry.message])).toEqual([
        [2000, `connect to 127.0.0.1:${slow} failed with ConnectTimeout, trying 127.0.0.1:${secondary.port}`]
      ])
    }))

  live("when every endpoint fails, AllEndpointsFailed lists each one with its own typed error", () =>
    Effect.gen(function*() {
      const first = yield* closedPort
      const second = yield* closedPort
      const error = yield* Effect.flip(
        Failover.connect([local(first), { host: "no-such-host.invalid", port: 80 }, local(second)])
      )
      expect(error._tag).toBe("AllEndpointsFailed")
      if (error._tag !== "AllEndpointsFailed") return
      expect(error.failures.map(({ endpoint, error }) => [endpoint.toString(), error._tag])).toEqual([
        [`127.0.0.1:${first}`, "ConnectionRefused"],
        ["no-such-host.invalid:80", "DnsLookupFailed"],
        [`127.0.0.1:${second}`, "ConnectionRefused"]
      ])
      expect(error.message).toBe(
        `all 3 endpoints failed: 127.0.0.1:${first} ConnectionRefused, no-such-host.invalid:80 DnsLookupFailed, 127.0.0.1:${second} ConnectionRefused`
      )
      // Some failure is transient: trying the list again later may work.
      expect(error.transient).toBe(true)
      expect(Retry.isRetryable(error)).toBe(true)
      const roundTrip = Schema.decodeUnknownSync(Failover.AllEndpointsFailed)(
        JSON.parse(JSON.stringify(Schema.encodeSync(Failover.AllEndpointsFailed)(error)))
      )
      expect(roundTrip.failures[1]!.error).toMatchObject({ _tag: "DnsLookupFailed", transient: false })
    }))

  live("AllEndpointsFailed is not transient when no endpoint's failure is", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Failover.connect([{ host: "no-such-host.invalid", port: 80 }, local(70000)]))
      expect(error).toMatchObject({ _tag: "AllEndpointsFailed", transient: false })
      if (error._tag !== "AllEndpointsFailed") return
      expect(error.failures.map((failure) => failure.error._tag)).toEqual(["DnsLookupFailed", "InvalidOptions"])
    }))
})

describe("Failover.connect, race", () => {
  effect("a slow primary gets attemptDelay alone, then the secondary starts and wins; the primary's attempt is dropped", () =>
    Effect.gen(function*() {
      const logs = captureLogs()
      const slow = yield* fullBacklogListener
      const secondary = yield* countingServer
      const fiber = yield* Effect.fork(
        Failover.connect([local(slow), secondary.endpoint], { strategy: "race", attemptDelay: "250 millis" }).pipe(
          Effect.provide(logs.layer)
        )
      )
      // The only timer is the stagger's: the secondary's turn comes at 250 ms.
      expect(yield* awaitSleeps(1)).toEqual([250])
      yield* TestClock.adjust("250 millis")
      const connection = yield* Fiber.join(fiber)
      expect(tcp(connection.remoteAddress).port).toBe(secondary.port)
      expect(logs.entries.map((entry) => [entry.at, entry.message])).toEqual([
        [250, `connect to 127.0.0.1:${slow} pending after 250ms, also trying 127.0.0.1:${secondary.port}`]
      ])
      // The leak check proves the primary's half-open socket was destroyed.
    }))

  effect("a primary that fails starts the next attempt at once, without waiting for attemptDelay", () =>
    Effect.gen(function*() {
      const dead = yield* closedPort
      const secondary = yield* countingServer
      const connection = yield* Failover.connect([local(dead), secondary.endpoint], {
        strategy: "race",
        attemptDelay: "1 hour"
      })
      expect(tcp(connection.remoteAddress).port).toBe(secondary.port)
    }))

  live("the first to connect wins and every other socket that connected is closed", () =>
    Effect.gen(function*() {
      const servers = [yield* countingServer, yield* countingServer, yield* countingServer]
      const connection = yield* Failover.connect(servers.map((server) => server.endpoint), {
        strategy: "race",
        attemptDelay: 0
      })
      const winner = servers.find((server) => server.port === tcp(connection.remoteAddress).port)!
      // Let every connect that was under way reach its server.
      yield* realSleep(100)
      const losers = servers.filter((server) => server !== winner)
      // Whatever reached a losing server was closed; the winner's connection stays open.
      yield* eventually(() => losers.every((server) => server.counts.ended === server.counts.accepted))
      expect(winner.counts).toMatchObject({ accepted: 1, ended: 0 })
      expect(winner.counts.ports).toEqual([tcp(connection.localAddress).port])
      expect(yield* connection.state).toEqual({ _tag: "Open" })
      expect(losers.reduce((sum, server) => sum + server.counts.accepted, 0)).toBeGreaterThan(0)
    }))

  effect("when every endpoint fails, AllEndpointsFailed lists them in the order given", () =>
    Effect.gen(function*() {
      const logs = captureLogs()
      const slow = yield* fullBacklogListener
      const dead = yield* closedPort
      const fiber = yield* Effect.fork(
        Failover.connect([local(slow), local(dead)], { strategy: "race", attemptDelay: "100 millis", connectTimeout: "1 second" })
          .pipe(Effect.provide(logs.layer))
      )
      yield* awaitSleeps(1, { wakingAt: "100 millis" })
      yield* TestClock.adjust("100 millis")
      // The second endpoint fails first; the race goes on for the first one.
      yield* eventually(() => logs.entries.some((entry) => entry.message.includes("failed with ConnectionRefused")))
      yield* TestClock.adjust("899 millis")
      expect(fiber.unsafePoll()).toBeNull()
      yield* TestClock.adjust("1 millis")
      const error = yield* Effect.flip(Fiber.join(fiber))
      expect(error._tag).toBe("AllEndpointsFailed")
      if (error._tag !== "AllEndpointsFailed") return
      expect(error.failures.map(({ endpoint, error }) => [tcp(endpoint).port, error._tag])).toEqual([
        [slow, "ConnectTimeout"],
        [dead, "ConnectionRefused"]
      ])
    }))

  effect("interrupting a race destroys every attempt under way", () =>
    Effect.gen(function*() {
      const first = yield* fullBacklogListener
      const second = yield* fullBacklogListener
      const fiber = yield* Effect.fork(
        Failover.connect([local(first), local(second)], { strategy: "race", attemptDelay: "10 millis" })
      )
      yield* awaitSleeps(1, { wakingAt: "10 millis" })
      yield* TestClock.adjust("10 millis")
      // Real time for the second attempt's socket to be connecting (I/O).
      yield* realSleep(50)
      expect(Exit.isInterrupted(yield* Fiber.interrupt(fiber))).toBe(true)
      // The leak check proves both half-open sockets were destroyed.
    }))
})

describe("Failover.connect, options", () => {
  effect("an empty list fails with AllEndpointsFailed saying so", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Failover.connect([]))
      expect(error).toMatchObject({ _tag: "AllEndpointsFailed", failures: [] })
      expect(error.message).toBe("no endpoint to connect to: the list of endpoints is empty")
    }))

  effect("a bad attemptDelay or strategy fails with InvalidOptions before any connect", () =>
    Effect.gen(function*() {
      const delay = yield* Effect.flip(Failover.connect([local(1)], { strategy: "race", attemptDelay: -5 }))
      expect(delay).toMatchObject({ _tag: "InvalidOptions", operation: "connect" })
      expect(delay.message).toContain("attemptDelay must be a finite, non-negative duration, got -5")
      const strategy = yield* Effect.flip(Failover.connect([local(1)], { strategy: "random" as any }))
      expect(strategy.message).toContain(`strategy must be "sequential" or "race", got "random"`)
    }))
})
