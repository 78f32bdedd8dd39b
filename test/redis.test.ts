/**
 * A real redis-server as the peer: pipelined RESP commands over one `Connection`, and the
 * README's Redis examples (HealthCheck, ConnectionPool) run as written, pointed at the test's server.
 */
import { describe, expect } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import type { Connection } from "../src/Connection.js"
import { Tcp } from "../src/index.js"
import { live, realSleep } from "./support/harness.js"
import { redisServer, resp } from "./support/redis.js"

type Reply = string | number | null | { readonly error: string }

/** One RESP reply (simple string, error, integer or bulk string), read as a client does. */
const readReply = (connection: Connection): Effect.Effect<Reply, unknown> =>
  Effect.gen(function*() {
    const line = Buffer.from(yield* connection.readUntil("\r\n")).toString()
    const body = line.slice(1)
    switch (line[0]) {
      case "+":
        return body
      case "-":
        return { error: body }
      case ":":
        return Number(body)
      case "$": {
        const length = Number(body)
        if (length < 0) return null
        // A bulk string may hold CRLF itself: it is read by its length, never up to a delimiter.
        const bulk = yield* connection.readExactly(length + 2)
        expect(Buffer.from(bulk.subarray(length)).toString()).toBe("\r\n")
        return Buffer.from(bulk.subarray(0, length)).toString()
      }
      default:
        return yield* Effect.fail(new Error(`not a RESP reply: ${JSON.stringify(line)}`))
    }
  })

const root = fileURLToPath(new URL("..", import.meta.url))

/**
 * The ```ts block that follows `heading` in README.md, as a module exporting its `program`, with
 * `effect-tcp` resolved to this checkout's source and `localhost:6379` replaced by the test's server.
 */
const readmeProgram = (heading: string, port: number) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const readme = fs.readFileSync(path.join(root, "README.md"), "utf8")
      const section = readme.slice(readme.indexOf(`\n${heading}\n`))
      const code = /```ts\n([\s\S]*?)```/.exec(section)![1]!
      expect(code).toContain("port: 6379")
      const rewritten = code
        .replaceAll(`from "effect-tcp"`, `from ${JSON.stringify(path.join(root, "src", "index.ts"))}`)
        .replaceAll(`"localhost"`, `"127.0.0.1"`)
        .replaceAll("port: 6379", `port: ${port}`)
      const dir = path.join(root, ".scratch", `readme-redis-${process.pid}`)
      fs.mkdirSync(dir, { recursive: true })
      const file = path.join(dir, `${heading.replace(/\W+/g, "-")}-${port}.ts`)
      fs.writeFileSync(file, `${rewritten}\nexport { program }\n`)
      const module = await import(file)
      return { file, program: module.program as Effect.Effect<unknown, unknown> }
    }),
    ({ file }) => Effect.sync(() => fs.rmSync(file, { force: true }))
  )

describe("redis-server as the peer", () => {
  live("pipelining: commands written at once over one Connection are answered in order, bulk strings read by length", () =>
    Effect.gen(function*() {
      const redis = yield* redisServer
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port: redis.port })
      const big = "x".repeat(1 << 20)
      const commands = [
        resp("SET", "greeting", "hello\r\nworld"),
        resp("GET", "greeting"),
        ...Array.from({ length: 1000 }, () => resp("INCR", "counter")),
        resp("SET", "big", big),
        resp("GET", "big"),
        resp("GET", "missing"),
        resp("INCR", "greeting"),
        resp("PING")
      ]
      // One write for all of them: the server reads them from one stream and answers each in turn.
      yield* connection.write(commands.join(""))
      const replies = yield* Effect.forEach(commands, () => readReply(connection))
      expect(replies.slice(0, 2)).toEqual(["OK", "hello\r\nworld"])
      expect(replies.slice(2, 1002)).toEqual(Array.from({ length: 1000 }, (_, i) => i + 1))
      expect(replies[1002]).toBe("OK")
      expect(replies[1003]).toBe(big)
      expect(replies.slice(1004)).toEqual([null, { error: "ERR value is not an integer or out of range" }, "PONG"])
      // Nothing more: every reply was read, none left over.
      yield* connection.write(resp("ECHO", "last"))
      expect(yield* readReply(connection)).toBe("last")
    }))

  live("the README's HealthCheck example runs against redis-server and returns Redis's integer reply", () =>
    Effect.gen(function*() {
      const redis = yield* redisServer
      const { program } = yield* readmeProgram("#### HealthCheck", redis.port)
      expect(yield* program).toBe(":1")
      expect(yield* program).toBe(":2")
      expect(yield* redis.command("GET", "visits")).toBe("$1\r\n2\r\n")
    }))

  live("the README's ConnectionPool example runs against redis-server: one increment per key", () =>
    Effect.gen(function*() {
      const redis = yield* redisServer
      const { program } = yield* readmeProgram("#### ConnectionPool", redis.port)
      yield* program
      expect(yield* redis.command("MGET", "a", "b", "c")).toBe("*3\r\n$1\r\n1\r\n$1\r\n1\r\n$1\r\n1\r\n")
      // The pool closed its connections with its scope: the server sees them go.
      while ((yield* redis.connectedClients) > 0) yield* realSleep(2)
    }))
})
