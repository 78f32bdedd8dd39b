/**
 * The example programs, run as a user runs them (`npx tsx examples/...`), against each other.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as fs from "node:fs"
import { file, run } from "./support/examples.js"
import { closedPort, collect, eventually, freePort, live, rawClient } from "./support/harness.js"

const startServer = (args: ReadonlyArray<string> = ["--port", "0"]) =>
  Effect.gen(function*() {
    const server = yield* run("robust-server", args)
    const [, host, port] = yield* server.line(/^listening on (.+):(\d+)$/)
    return { server, host: host!, port: port! }
  })

describe("examples", () => {
  it("the README's quick start is examples/quickstart.ts, word for word", () => {
    const readme = fs.readFileSync(new URL("../README.md", import.meta.url), "utf8")
    const quickStart = /## Quick start[\s\S]*?```ts\n([\s\S]*?)```/.exec(readme)?.[1]
    expect(quickStart).toBe(fs.readFileSync(file("quickstart"), "utf8"))
  })

  live("the quick start runs and prints the upper-cased answer, then the end of the stream", () =>
    Effect.gen(function*() {
      const quickstart = yield* run("quickstart", [])
      expect(yield* quickstart.exitCode).toBe(0)
      expect(quickstart.lines).toEqual(["HELLO, EFFECT-TCP", "{ _id: 'Option', _tag: 'None' }"])
    }), 60_000)

  live("robust-client gets the upper-cased message from robust-server, and both log what happened", () =>
    Effect.gen(function*() {
      const { port, server } = yield* startServer()
      const client = yield* run("robust-client", ["--host", "localhost", "--port", port, "--message", "Hello, Server!"])
      expect(yield* client.exitCode).toBe(0)
      expect(client.lines).toContain("Response: HELLO, SERVER!")
      yield* server.line(/connection closed$/)
      expect(server.lines.some((line) => /^INFO  \[peer=127\.0\.0\.1:\d+ connectionId=1\] client connected$/.test(line)))
        .toBe(true)
      server.child.kill("SIGTERM")
      expect(yield* server.exitCode).toBe(0)
      expect(server.lines.slice(-2)).toEqual(["shutting down: no new connections, draining the open ones", "server closed"])
    }), 60_000)

  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    live(`robust-server on ${signal} drains: 20 clients in the middle of their exchange are still answered, then it exits 0`, () =>
      Effect.gen(function*() {
        const { port, server } = yield* startServer()
        const clients = yield* Effect.forEach(Array.from({ length: 20 }, (_, i) => i), (i) =>
          Effect.gen(function*() {
            const socket = yield* rawClient(Number(port))
            let received = ""
            socket.on("data", (chunk: Buffer) => received += chunk.toString())
            socket.write(`client ${i}, part one; `)
            return { socket, i, received: () => received }
          }))
        // Every client has its first answer: each one's handler is running.
        yield* eventually(() => clients.every((client) => client.received() === `CLIENT ${client.i}, PART ONE; `))
        server.child.kill(signal)
        yield* server.line(/^shutting down: no new connections, draining the open ones$/)
        const ends = yield* Effect.forEach(clients, (client) =>
          Effect.gen(function*() {
            const ended = yield* Effect.fork(collect(client.socket))
            client.socket.end("part two")
            yield* Fiber.join(ended)
            return client.received()
          }), { concurrency: "unbounded" })
        expect(ends).toEqual(clients.map((client) => `CLIENT ${client.i}, PART ONE; PART TWO`))
        expect(yield* server.exitCode).toBe(0)
        expect(server.lines.at(-1)).toBe("server closed")
      }), 60_000)
  }

  live("fault-proxy: the client gets every answer right through slicing and resets", () =>
    Effect.gen(function*() {
      const example = yield* run("fault-proxy", [])
      expect(yield* example.exitCode).toBe(0)
      expect(example.lines.filter((line) => line.startsWith("ok: "))).toEqual([
        `ok: "a short line"`,
        `ok: "a line long enough to be reset by the proxy"`,
        `ok: "another long line, sliced and maybe reset"`
      ])
      expect(example.lines.at(-1)).toMatch(/^proxy: \d+ connections, faults fired: \{"latency":0,"bandwidth":0,"slice":[1-9]\d*,"reset":[1-9]/)
    }), 60_000)

  live("robust-server keeps serving after a client resets its connection", () =>
    Effect.gen(function*() {
      const { port, server } = yield* startServer()
      const rude = yield* rawClient(Number(port))
      rude.write("half a message")
      yield* server.line(/connectionId=1\] client connected$/)
      rude.resetAndDestroy()
      // Whether the reset meets the server's read or its echo's write depends on timing.
      yield* server.line(/connectionId=1\] ConnectionReset: (read|write) on the connection with 127\.0\.0\.1:\d+ failed/)
      const client = yield* run("robust-client", ["--port", port, "--message", "still there?"])
      expect(yield* client.exitCode).toBe(0)
      expect(client.lines).toContain("Response: STILL THERE?")
    }), 60_000)

  live("robust-client retries a refused connection after 1 s, 2 s, ... and connects once the server is up", () =>
    Effect.gen(function*() {
      const port = String(yield* freePort)
      const client = yield* run("robust-client", ["--port", port, "--retries", "3"])
      yield* client.line(/^INFO  retrying in 1s$/)
      yield* startServer(["--port", port])
      expect(yield* client.exitCode).toBe(0)
      expect(client.lines.filter((line) => line.startsWith("WARN  ConnectionRefused:")).length).toBeGreaterThanOrEqual(1)
      expect(client.lines).toContain("Response: HELLO, SERVER!")
    }), 60_000)

  live("robust-client gives up after its retries with the error's tag and message, exit 1", () =>
    Effect.gen(function*() {
      const port = String(yield* closedPort)
      const client = yield* run("robust-client", ["--port", port, "--retries", "1"])
      expect(yield* client.exitCode).toBe(1)
      expect(client.lines.filter((line) => line.startsWith("INFO  retrying in"))).toEqual(["INFO  retrying in 1s"])
      expect(client.lines.at(-1)).toBe(
        `ConnectionRefused: connection refused by localhost:${port}: is the server running and listening on port ${port}?`
      )
    }), 60_000)

  live("robust-client fails at once, without retrying, on a host that does not exist", () =>
    Effect.gen(function*() {
      const client = yield* run("robust-client", ["--host", "no-such-host.invalid", "--port", "8080"])
      expect(yield* client.exitCode).toBe(1)
      expect(client.lines.some((line) => line.includes("retrying"))).toBe(false)
      expect(client.lines.at(-1)).toMatch(/^DnsLookupFailed: DNS lookup of "no-such-host\.invalid" failed \(ENOTFOUND\)/)
    }), 60_000)

  live("robust-server on a port in use prints AddressInUse and exits 1", () =>
    Effect.gen(function*() {
      const { port } = yield* startServer()
      const second = yield* run("robust-server", ["--port", port])
      expect(yield* second.exitCode).toBe(1)
      expect(second.lines).toEqual([
        `AddressInUse: listen on 127.0.0.1:${port} failed: address already in use; stop the process holding port ${port} or choose another port (0 picks a free one)`
      ])
    }), 60_000)

  live("robust-server on a privileged port without privileges prints PermissionDenied and exits 1", () =>
    Effect.gen(function*() {
      const server = yield* run("robust-server", ["--port", "80"], { uid: 65534, gid: 65534 })
      expect(yield* server.exitCode).toBe(1)
      expect(server.lines.at(-1)).toBe(
        "PermissionDenied: listen on 127.0.0.1:80 failed: permission denied; ports below 1024 need privileges: use a port >= 1024, or a reverse proxy in front"
      )
    }), 60_000)
})
