/**
 * An HTTP/1.1 client written on Connection against a server we did not write: Python's
 * `http.server`. Keep-alive responses are read with readUntil (the head) and readExactly (the body
 * of Content-Length bytes), several on one connection, with the deadlines production code sets.
 */
import { describe, expect } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { randomBytes } from "node:crypto"
import { Tcp } from "../src/index.js"
import type { Connection } from "../src/Connection.js"
import { live } from "./support/harness.js"
import { pythonHttpServer } from "./support/python-http.js"

interface Response {
  readonly status: number
  readonly headers: ReadonlyMap<string, string>
  readonly body: Uint8Array
}

const get = (connection: Connection, target: string, extra = "") =>
  Effect.gen(function*() {
    yield* connection.write(`GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\n${extra}\r\n`)
    const head = Buffer.from(yield* connection.readUntil("\r\n\r\n", { maxFrameBytes: 16 * 1024 })).toString("latin1")
    const [statusLine, ...lines] = head.split("\r\n")
    const headers = new Map(lines.map((line) => {
      const colon = line.indexOf(":")
      return [line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim()] as const
    }))
    const body = yield* connection.readExactly(Number(headers.get("content-length") ?? 0))
    return { status: Number(statusLine!.split(" ")[1]), headers, body } satisfies Response
  })

describe("HTTP/1.1 against Python's http.server", () => {
  const big = randomBytes(5 * 1024 * 1024)
  const small = "hello from a file\n"

  live("three keep-alive requests on one connection, a 5 MiB body among them, come back byte-exact", () =>
    Effect.gen(function*() {
      const server = yield* pythonHttpServer({ "big.bin": big, "small.txt": small })
      const connection = yield* Tcp.connect({
        host: "127.0.0.1",
        port: server.port,
        connectTimeout: "5 seconds",
        readTimeout: "10 seconds",
        writeTimeout: "10 seconds"
      })
      const first = yield* get(connection, "/small.txt")
      expect(first.status).toBe(200)
      expect(Buffer.from(first.body).toString()).toBe(small)
      const second = yield* get(connection, "/big.bin")
      expect(second.status).toBe(200)
      expect(Buffer.from(second.body).equals(big)).toBe(true)
      const missing = yield* get(connection, "/nothing-here")
      expect(missing.status).toBe(404)
      // The same connection served all three.
      expect(yield* connection.state).toEqual({ _tag: "Open" })
    }), 30_000)

  live("after a request with Connection: close, the server's FIN reads as the end of the stream", () =>
    Effect.gen(function*() {
      const server = yield* pythonHttpServer({ "small.txt": small })
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port: server.port, readTimeout: "10 seconds" })
      const response = yield* get(connection, "/small.txt", "Connection: close\r\n")
      expect(Buffer.from(response.body).toString()).toBe(small)
      expect(yield* connection.read).toEqual(Option.none())
      // Another request on the closed stream: readUntil ends with UnexpectedEof, saying no byte came.
      const error = yield* Effect.flip(connection.readUntil("\r\n\r\n"))
      expect(error).toMatchObject({ _tag: "UnexpectedEof", received: 0 })
    }), 30_000)

  live("20 keep-alive requests with readTimeout set leave no timer or fiber behind", () =>
    Effect.gen(function*() {
      const server = yield* pythonHttpServer({ "small.txt": small })
      const connection = yield* Tcp.connect({
        host: "127.0.0.1",
        port: server.port,
        readTimeout: "10 seconds",
        writeTimeout: "10 seconds"
      })
      for (let i = 0; i < 20; i++) {
        const response = yield* get(connection, "/small.txt")
        expect(Buffer.from(response.body).toString()).toBe(small)
      }
      // The harness checks that no fiber and the leak check that no timer outlives the test.
    }), 30_000)
})
