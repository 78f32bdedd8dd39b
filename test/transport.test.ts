/**
 * The transport seam: the client and the server's policy (limits, stats, log annotations, drain)
 * are the same over any transport written against it. Here they run over a transport made in the
 * tests (support/greeting-transport.ts: TCP with a one-byte handshake), untouched.
 */
import { describe, expect } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as TestClock from "effect/TestClock"
import { Server, Tcp } from "../src/index.js"
import * as GreetingTransport from "./support/greeting-transport.js"
import { awaitSleeps, closedPort, effect, eventually, live, rawServer, text } from "./support/harness.js"
import { captureLogs } from "./support/logs.js"

/** How a connect fails; "connected" (not the connection, which a failed assertion would print) if it does not. */
const connectFailure = (options: Tcp.ConnectOptions) => Effect.flip(Effect.as(Tcp.connect(options), "connected" as const))

describe("over a transport of the tests' own, through the seam", () => {
  live("a connection is handed over after the transport's handshake: neither side sees the greeting", () =>
    Effect.gen(function*() {
      const server = yield* Server.serve({ port: 0 }, (connection) =>
        Effect.gen(function*() {
          yield* connection.write("hello\n")
          const request = text(yield* connection.readUntil("\n"))
          yield* connection.write(`${request.toUpperCase()}\n`)
        }))
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port: server.address.port })
      expect(text(yield* connection.readUntil("\n"))).toBe("hello")
      yield* connection.write("ping\n")
      expect(text(yield* connection.readUntil("\n"))).toBe("PING")
      expect(yield* connection.read).toEqual(Option.none())
      expect(yield* server.stats).toMatchObject({ accepted: 1, failed: 0 })
    }).pipe(Effect.provide(GreetingTransport.layer)))

  live("a failing handler is counted and logged with the peer and a connection id", () =>
    Effect.gen(function*() {
      const logs = captureLogs()
      const server = yield* Server.serve({ port: 0 }, (connection) => connection.readExactly(4)).pipe(
        Effect.provide(logs.layer)
      )
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port: server.address.port })
      yield* connection.write("ab")
      yield* connection.endWrite
      expect(yield* connection.read).toEqual(Option.none())
      yield* eventually(() => logs.entries.some((entry) => entry.message.startsWith("handler failed")))
      const failure = logs.entries.find((entry) => entry.message.startsWith("handler failed"))!
      expect(failure).toMatchObject({ level: "WARN", annotations: { connectionId: 1 } })
      expect(failure.message).toMatch(/^handler failed with UnexpectedEof/)
      expect(String(failure.annotations.peer)).toMatch(/^127\.0\.0\.1:\d+$/)
      expect(yield* server.stats).toMatchObject({ accepted: 1, failed: 1, active: 0 })
    }).pipe(Effect.provide(GreetingTransport.layer)))

  live("over maxConnections, a connection is closed at once and counted in stats.rejected", () =>
    Effect.gen(function*() {
      const server = yield* Server.serve({ port: 0, maxConnections: 1, drainTimeout: 0 }, (connection) =>
        Effect.zipRight(connection.write("served\n"), Effect.never))
      const port = server.address.port
      const first = yield* Tcp.connect({ host: "127.0.0.1", port })
      expect(text(yield* first.readUntil("\n"))).toBe("served")
      const second = yield* Tcp.connect({ host: "127.0.0.1", port })
      const outcome = yield* Effect.either(second.read)
      expect(outcome._tag === "Right" ? Option.isNone(outcome.right) : outcome.left._tag === "ConnectionReset").toBe(
        true
      )
      expect(yield* server.stats).toMatchObject({ active: 1, accepted: 1, rejected: 1 })
    }).pipe(Effect.provide(GreetingTransport.layer)))

  effect("closing the scope stops accepting, lets a handler finish within drainTimeout, then closes", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const server = yield* Server.serve({ port: 0, drainTimeout: "5 seconds" }, (connection) =>
        Effect.gen(function*() {
          const request = text(yield* connection.readUntil("\n"))
          yield* Effect.sleep("1 second")
          yield* connection.write(`answer to ${request}\n`)
        })).pipe(Scope.extend(scope))
      const port = server.address.port
      const client = yield* Tcp.connect({ host: "127.0.0.1", port })
      yield* client.write("question\n")
      yield* awaitSleeps(1, { wakingAt: "1 second" })
      const closing = yield* Effect.fork(Scope.close(scope, Exit.void))
      // The shutdown has stopped accepting once it waits for the handler under its 5 s deadline.
      yield* awaitSleeps(1, { wakingAt: "5 seconds" })
      expect(yield* server.stats).toMatchObject({ active: 1 })
      // No longer accepting, while the handler still runs.
      expect(yield* connectFailure({ host: "127.0.0.1", port })).toMatchObject({ _tag: "ConnectionRefused" })
      expect(closing.unsafePoll()).toBeNull()
      yield* TestClock.adjust("1 second")
      expect(text(yield* client.readUntil("\n"))).toBe("answer to question")
      expect(yield* client.read).toEqual(Option.none())
      yield* Fiber.join(closing)
      expect(yield* server.stats).toMatchObject({ active: 0, accepted: 1, abandoned: 0 })
    }).pipe(Effect.provide(GreetingTransport.layer)))

  effect("connect waits for the transport's connected event: connectTimeout covers a handshake that never ends", () =>
    Effect.gen(function*() {
      // A plain TCP server: it accepts, but never greets.
      const { port } = yield* rawServer(() => {})
      const attempt = yield* Effect.fork(connectFailure({ host: "127.0.0.1", port, connectTimeout: "3 seconds" }))
      yield* awaitSleeps(1, { wakingAt: "3 seconds" })
      yield* TestClock.adjust("3 seconds")
      const error = yield* Fiber.join(attempt)
      expect(error).toMatchObject({ _tag: "ConnectTimeout", endpoint: { host: "127.0.0.1", port }, timeoutMillis: 3000 })
    }).pipe(Effect.provide(GreetingTransport.layer)))

  live("a refused connect is classified as over TCP, naming the transport's endpoint", () =>
    Effect.gen(function*() {
      const port = yield* closedPort
      const error = yield* connectFailure({ host: "127.0.0.1", port })
      expect(error).toMatchObject({ _tag: "ConnectionRefused", code: "ECONNREFUSED", endpoint: { host: "127.0.0.1", port } })
    }).pipe(Effect.provide(GreetingTransport.layer)))

  effect("options are validated with the transport's schema", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Server.serve({ port: 0, maxConnections: 0 }, () => Effect.void))
      expect(error).toMatchObject({ _tag: "InvalidOptions", operation: "listen" })
      if (error._tag === "InvalidOptions") expect(error.issues).toContain("maxConnections is an integer of at least 1")
    }).pipe(Effect.provide(GreetingTransport.layer)))
})
