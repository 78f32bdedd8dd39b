/**
 * The framing examples, run as a user runs them (`npx tsx examples/...`): the key-value server and
 * client against each other, and the line chat.
 */
import { describe, expect } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { run } from "./support/examples.js"
import { live } from "./support/harness.js"

describe("framing examples", () => {
  live("kv-client pipelines a batch, gets typed failures and a request timeout from kv-server, then exits 0", () =>
    Effect.gen(function*() {
      const server = yield* run("kv-server", ["--port", "0"])
      const [, port] = yield* server.line(/^listening on 127\.0\.0\.1:(\d+)$/)
      const client = yield* run("kv-client", ["--port", port!])
      expect(yield* client.exitCode).toBe(0)
      expect(client.lines.slice(0, 6)).toEqual([
        `connected to 127.0.0.1:${port}`,
        "pipelined 100 Set requests on one connection: 100 stored",
        `Get user:42 -> "name 42"`,
        `Get user:999 -> KeyNotFound: no value for key "user:999"`,
        "Delete user:42 -> Deleted",
        `Get user:42 -> KeyNotFound: no value for key "user:42"`
      ])
      expect(client.lines[6]).toMatch(
        new RegExp(
          `^Sleep 1000 ms with a 250 ms timeout -> RequestTimeout: request \\d+ to 127\\.0\\.0\\.1:${port} got no response within 250 ms`
        )
      )
      expect(client.lines.slice(7)).toEqual([`still usable after the timeout: Get user:7 -> "name 7"`])
      // The server logged the typed failures with the connection and request they belong to.
      yield* server.line(/^INFO {2}\[peer=127\.0\.0\.1:\d+ requestId=\d+ connectionId=1\] Get: no value for key "user:999"$/)
      server.child.kill("SIGTERM")
      expect(yield* server.exitCode).toBe(0)
      expect(server.lines.at(-1)).toBe("server closed")
    }), 60_000)

  live("line-chat relays lines, refuses an overlong one locally, disconnects a peer that sends one, and exits 0", () =>
    Effect.gen(function*() {
      const chat = yield* run("line-chat", [])
      expect(yield* chat.exitCode).toBe(0)
      expect(chat.lines[0]).toMatch(/^chat server listening on 127\.0\.0\.1:\d+$/)
      expect(chat.lines[1]).toBe(`bob hears "alice: hi bob!"`)
      expect(chat.lines[2]).toMatch(
        /^bob's 300-byte line is refused locally: FrameTooLarge: write on the connection with 127\.0\.0\.1:\d+ failed: a frame of at least 300 bytes exceeds the limit of 256 bytes$/
      )
      expect(chat.lines[3]).toMatch(/^server: FrameTooLarge, disconnecting the sender \(read on the connection with/)
      expect(chat.lines.slice(4)).toEqual([
        `mallory hears "error: lines are limited to 256 bytes"`,
        `mallory hears "(connection closed)"`,
        `alice hears "bob: still here"`
      ])
    }), 60_000)
})
