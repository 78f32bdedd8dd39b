import { describe, expect } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as TestClock from "effect/TestClock"
import * as net from "node:net"
import { Tcp } from "../src/index.js"
import { awaitSleeps, closedPort, effect, live, rawServer, realSleep, tcp } from "./support/harness.js"
import { fullBacklogListener } from "./support/processes.js"

describe("connect", () => {
  live("connects to a listening server and reports both addresses", () =>
    Effect.gen(function*() {
      const { port } = yield* rawServer(() => {})
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port })
      expect(tcp(connection.remoteAddress).host).toBe("127.0.0.1")
      expect(tcp(connection.remoteAddress).port).toBe(port)
      expect(tcp(connection.localAddress).host).toBe("127.0.0.1")
      expect(tcp(connection.localAddress).port).toBeGreaterThan(0)
      expect(yield* connection.state).toEqual({ _tag: "Open" })
    }))

  live("a refused connect fails with ConnectionRefused naming the port", () =>
    Effect.gen(function*() {
      const port = yield* closedPort
      const error = yield* Effect.flip(Tcp.connect({ host: "127.0.0.1", port }))
      expect(error._tag).toBe("ConnectionRefused")
      if (error._tag !== "ConnectionRefused") return
      expect(error.operation).toBe("connect")
      expect(tcp(error.endpoint).port).toBe(port)
      expect(error.code).toBe("ECONNREFUSED")
      expect(error.syscall).toBe("connect")
      expect(error.message).toBe(
        `connection refused by 127.0.0.1:${port}: is the server running and listening on port ${port}?`
      )
    }))

  live("the harness's refusing port stays refused for the whole test: no server can be given it meanwhile", () =>
    Effect.gen(function*() {
      const port = yield* closedPort
      const listen = Effect.async<string>((resume) => {
        const server = net.createServer()
        server.once("error", (error: NodeJS.ErrnoException) => resume(Effect.succeed(error.code ?? "")))
        server.listen(port, "127.0.0.1", () => server.close(() => resume(Effect.succeed("listening"))))
      })
      expect(yield* listen).toBe("EADDRINUSE")
      expect((yield* Effect.flip(Tcp.connect({ host: "127.0.0.1", port })))._tag).toBe("ConnectionRefused")
    }))

  live("a refused connect over IPv6 (::1) fails with ConnectionRefused", () =>
    Effect.gen(function*() {
      const port = yield* closedPort
      const error = yield* Effect.flip(Tcp.connect({ host: "::1", port }))
      // Without IPv6 on loopback the system answers EADDRNOTAVAIL instead.
      expect(["ConnectionRefused", "AddressNotAvailable"]).toContain(error._tag)
      expect(error.message).toContain(`[::1]:${port}`)
    }))

  live("a name under .invalid fails with DnsLookupFailed, not transient", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Tcp.connect({ host: "no-such-host.invalid", port: 80 }))
      expect(error._tag).toBe("DnsLookupFailed")
      if (error._tag !== "DnsLookupFailed") return
      expect(error.code).toBe("ENOTFOUND")
      expect(error.transient).toBe(false)
      expect(tcp(error.endpoint).host).toBe("no-such-host.invalid")
      expect(error.message).toContain(`DNS lookup of "no-such-host.invalid" failed (ENOTFOUND)`)
    }))

  effect("a connect to a listener whose backlog is full fails with ConnectTimeout at the deadline", () =>
    Effect.gen(function*() {
      const port = yield* fullBacklogListener
      const fiber = yield* Effect.fork(Tcp.connect({ host: "127.0.0.1", port, connectTimeout: "3 seconds" }))
      // Let a connect that could complete do so in real time (I/O): the backlog must hold it.
      yield* realSleep(200)
      expect(fiber.unsafePoll()).toBeNull()
      expect(yield* awaitSleeps(1)).toEqual([3000])
      yield* TestClock.adjust("2999 millis")
      expect(fiber.unsafePoll()).toBeNull()
      yield* TestClock.adjust("1 millis")
      const exit = yield* Fiber.await(fiber)
      expect(Exit.isFailure(exit)).toBe(true)
      const error = yield* Effect.flip(exit)
      expect(error._tag).toBe("ConnectTimeout")
      if (error._tag !== "ConnectTimeout") return
      expect(error.timeoutMillis).toBe(3000)
      expect(tcp(error.endpoint).port).toBe(port)
      expect(error.message).toContain(`connect to 127.0.0.1:${port} timed out after 3000 ms`)
    }))

  effect("a connect inside an uninterruptible region (an acquire) still fails with ConnectTimeout at its deadline", () =>
    Effect.gen(function*() {
      const port = yield* fullBacklogListener
      const acquire = Effect.uninterruptible(Tcp.connect({ host: "127.0.0.1", port, connectTimeout: "3 seconds" }))
      const fiber = yield* Effect.fork(acquire)
      expect(yield* awaitSleeps(1)).toEqual([3000])
      yield* TestClock.adjust("2999 millis")
      expect(fiber.unsafePoll()).toBeNull()
      yield* TestClock.adjust("1 millis")
      const error = yield* Effect.flip(Fiber.join(fiber))
      expect(error._tag).toBe("ConnectTimeout")
    }))

  effect("interrupting a pending connect destroys the half-open socket", () =>
    Effect.gen(function*() {
      const port = yield* fullBacklogListener
      const fiber = yield* Effect.fork(Tcp.connect({ host: "127.0.0.1", port }))
      // Real time for the socket to be opened and its connect to be under way (I/O; no timer here).
      yield* realSleep(100)
      expect(fiber.unsafePoll()).toBeNull()
      const exit = yield* Fiber.interrupt(fiber)
      expect(Exit.isInterrupted(exit)).toBe(true)
      // The leak check after the test proves the socket and its connect request are gone.
    }))

  describe("rejects bad options with InvalidOptions before opening a socket", () => {
    const cases: Array<[string, Record<string, unknown>, string]> = [
      ["port 70000", { host: "127.0.0.1", port: 70000 }, "a port to connect to is an integer from 1 to 65535"],
      ["port 0", { host: "127.0.0.1", port: 0 }, "a port to connect to is an integer from 1 to 65535"],
      ["port 1.5", { host: "127.0.0.1", port: 1.5 }, "Expected an integer, actual 1.5"],
      ["an empty host", { host: "", port: 80 }, "a host must not be empty"],
      ["a missing host", { port: 80 }, `["host"]\n   └─ is missing`],
      ["a negative timeout", { host: "127.0.0.1", port: 80, connectTimeout: -1 }, "expected a finite, non-negative duration"],
      ["a timeout that is no duration", { host: "127.0.0.1", port: 80, readTimeout: "soon" }, `got "soon"`],
      ["an infinite timeout", { host: "127.0.0.1", port: 80, writeTimeout: Infinity }, "expected a finite, non-negative duration"],
      ["noDelay not a boolean", { host: "127.0.0.1", port: 80, noDelay: "yes" }, `Expected boolean, actual "yes"`],
      ["a NaN timeout", { host: "127.0.0.1", port: 80, readTimeout: NaN }, "expected a finite, non-negative duration (milliseconds, or a string like \"5 seconds\"), got NaN"],
      ["a negative timeout written as a string", { host: "127.0.0.1", port: 80, readTimeout: "-5 seconds" }, `got "-5 seconds"`],
      ["a negative timeout written as [seconds, nanos]", { host: "127.0.0.1", port: 80, connectTimeout: [-5, 0] }, "got [-5, 0]"],
      ["a timeout in exponent notation, which Duration cannot parse", { host: "127.0.0.1", port: 80, writeTimeout: "1e3 millis" }, `got "1e3 millis"`],
      ["a host with a NUL byte, which the resolver would cut", { host: "127.0.0.1\u0000evil.example", port: 80 }, "a host must not contain spaces or control characters, got \"127.0.0.1\\u0000evil.example\""],
      ["a host with a space", { host: "127.0.0.1 evil.example", port: 80 }, "a host must not contain spaces or control characters"],
      ["a host with a line feed", { host: "example.invalid\nHost: x", port: 80 }, "a host must not contain spaces or control characters"],
      ["a localAddress that is no IP address", { host: "127.0.0.1", port: 80, localAddress: "foo" }, `localAddress must be an IP address of this machine, got "foo"`]
    ]
    for (const [what, options, expected] of cases) {
      effect(what, () =>
        Effect.gen(function*() {
          const error = yield* Effect.flip(Tcp.connect(options as any))
          expect(error._tag).toBe("InvalidOptions")
          if (error._tag !== "InvalidOptions") return
          expect(error.operation).toBe("connect")
          expect(error.issues).toContain(expected)
          expect(error.message.startsWith("invalid connect options: ")).toBe(true)
        }))
    }
  })
})
