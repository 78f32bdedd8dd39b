/**
 * A server's shutdown: however its scope closes (normally, or because the fiber owning it is
 * interrupted, as `NodeRuntime.runMain` does on SIGINT and SIGTERM), it stops accepting, lets
 * handlers finish until `drainTimeout`, interrupts them, and destroys every socket within a
 * bounded time, whatever the handlers do.
 */
import { describe, expect } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as TestClock from "effect/TestClock"
import { Server, Tcp } from "../src/index.js"
import { awaitSleeps, effect, eventually, text, tcp } from "./support/harness.js"
import { captureLogs } from "./support/logs.js"

describe("shutdown", () => {
  effect("interrupting the fiber that owns the server's scope drains: the request in flight is answered, then the interrupt returns", () =>
    Effect.gen(function*() {
      const started = yield* Deferred.make<Server.Server>()
      // What NodeRuntime.runMain does on a signal: interrupt the main fiber, which owns the scope.
      const main = yield* Effect.fork(Effect.scoped(Effect.gen(function*() {
        const server = yield* Server.serve({ port: 0, drainTimeout: "5 seconds" }, (connection) =>
          Effect.gen(function*() {
            const request = text(yield* connection.readUntil("\n"))
            yield* Effect.sleep("1 second")
            yield* connection.write(`answer to ${request}\n`)
          }))
        yield* Deferred.succeed(started, server)
        return yield* Effect.never
      })))
      const server = yield* Deferred.await(started)
      const client = yield* Tcp.connect({ host: "127.0.0.1", port: tcp(server.address).port })
      yield* client.write("question\n")
      yield* awaitSleeps(1, { wakingAt: "1 second" })
      const interrupting = yield* Effect.fork(Fiber.interrupt(main))
      // Draining: the shutdown waits for the handler under its 5 s deadline, having stopped accepting.
      yield* awaitSleeps(1, { wakingAt: "5 seconds" })
      expect(interrupting.unsafePoll()).toBeNull()
      expect((yield* Effect.flip(Tcp.connect({ host: "127.0.0.1", port: tcp(server.address).port })))._tag).toBe(
        "ConnectionRefused"
      )
      yield* TestClock.adjust("1 second")
      expect(text(yield* client.readUntil("\n"))).toBe("answer to question")
      expect(yield* client.read).toEqual(Option.none())
      const exit = yield* Fiber.join(interrupting)
      expect(Exit.isInterrupted(exit)).toBe(true)
      expect(yield* server.stats).toMatchObject({ active: 0, accepted: 1, abandoned: 0 })
    }))

  effect("interrupting the owner of a server whose handler outlives drainTimeout interrupts it, closes its socket and returns", () =>
    Effect.gen(function*() {
      const started = yield* Deferred.make<Server.Server>()
      const interrupted: Array<string> = []
      const main = yield* Effect.fork(Effect.scoped(Effect.gen(function*() {
        const server = yield* Server.serve({ port: 0, drainTimeout: "2 seconds" }, (connection) =>
          Effect.zipRight(connection.readUntil("\n"), Effect.never).pipe(
            Effect.onInterrupt(() => Effect.sync(() => interrupted.push("handler")))
          ))
        yield* Deferred.succeed(started, server)
        return yield* Effect.never
      })))
      const server = yield* Deferred.await(started)
      const client = yield* Tcp.connect({ host: "127.0.0.1", port: tcp(server.address).port })
      yield* client.write("hang\n")
      yield* eventually(() => Effect.runSync(server.stats).active === 1)
      const interrupting = yield* Effect.fork(Fiber.interrupt(main))
      yield* awaitSleeps(1, { wakingAt: "2 seconds" })
      yield* TestClock.adjust("2 seconds")
      yield* Fiber.join(interrupting)
      expect(interrupted).toEqual(["handler"])
      expect(yield* client.read).toEqual(Option.none())
      expect(yield* server.stats).toMatchObject({ active: 0, abandoned: 0 })
    }))

  effect("a handler that ignores interruption past drainTimeout has its socket destroyed, is logged and counted as abandoned, and the scope closes", () =>
    Effect.gen(function*() {
      const logs = captureLogs()
      const scope = yield* Scope.make()
      const ended: Array<string> = []
      const server = yield* Server.serve({ port: 0, drainTimeout: "1 second" }, (connection) =>
        Effect.gen(function*() {
          yield* connection.readUntil("\n")
          // Work that cannot be interrupted, such as a blocking call wrapped in Effect.
          yield* Effect.uninterruptible(
            Effect.zipRight(Effect.sleep("12 seconds"), Effect.sync(() => ended.push("uninterruptible work")))
          )
        })).pipe(Scope.extend(scope), Effect.provide(logs.layer))
      const client = yield* Tcp.connect({ host: "127.0.0.1", port: server.address.port })
      yield* client.write("busy\n")
      yield* awaitSleeps(1, { wakingAt: "12 seconds" })
      const closing = yield* Effect.fork(Scope.close(scope, Exit.void))
      yield* awaitSleeps(1, { wakingAt: "1 second" })
      yield* TestClock.adjust("1 second")
      // Interrupted at drainTimeout, the handler goes on; a short grace later its socket is destroyed.
      yield* awaitSleeps(1, { wakingAt: "2 seconds" })
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(closing)
      expect(ended).toEqual([])
      expect(yield* client.read).toEqual(Option.none())
      expect(yield* server.stats).toMatchObject({ abandoned: 1 })
      const line = logs.entries.find((entry) => entry.message.includes("abandoned"))
      expect(line).toMatchObject({ level: "WARN" })
      expect(line?.message).toBe(
        "1 handler still running 1000 ms after it was interrupted at drainTimeout (connection 1): abandoned, its socket destroyed"
      )
      // The handler itself ends when its uninterruptible work does, and is then no longer active.
      yield* TestClock.adjust("10 seconds")
      yield* eventually(() => ended.length === 1)
      yield* eventually(() => Effect.runSync(server.stats).active === 0)
    }))
})
