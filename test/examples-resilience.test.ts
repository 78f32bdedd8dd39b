/**
 * The resilience examples, run as a user runs them (`npx tsx examples/...`): what they print and
 * their exit code.
 */
import { describe, expect } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { live } from "./support/harness.js"

/** Runs an example to its end (killed if the scope closes first); its output lines and exit code. */
const run = (name: string) =>
  Effect.acquireUseRelease(
    Effect.sync(() =>
      spawn(process.execPath, ["--import", "tsx", fileURLToPath(new URL(`../examples/${name}.ts`, import.meta.url))], {
        stdio: ["ignore", "pipe", "pipe"]
      })
    ),
    (child) =>
      Effect.async<{ readonly lines: Array<string>; readonly exitCode: number }>((resume) => {
        let output = ""
        child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()))
        child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()))
        child.once("close", (code, signal) =>
          resume(Effect.succeed({
            lines: output.split("\n").filter((line) => line.length > 0),
            exitCode: code ?? (signal ? 128 : 1)
          })))
      }),
    (child) =>
      Effect.sync(() => {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
      })
  )

const matching = (lines: ReadonlyArray<string>, pattern: RegExp) => lines.filter((line) => pattern.test(line))

describe("resilience examples", () => {
  live("retry.ts retries the refused connects with growing delays and gets its answer once the server is up", () =>
    Effect.gen(function*() {
      const { exitCode, lines } = yield* run("retry")
      expect(exitCode).toBe(0)
      const retries = matching(lines, /^INFO  attempt \d failed with ConnectionRefused, retrying in /)
      expect(retries.length).toBeGreaterThanOrEqual(2)
      retries.forEach((line, i) => expect(line).toMatch(new RegExp(`^INFO  attempt ${i + 1} failed`)))
      expect(lines).toContainEqual(expect.stringMatching(/^INFO  server listening on 127\.0\.0\.1:\d+$/))
      expect(lines.at(-1)).toBe(`Response after ${retries.length + 1} attempts: HELLO, LATE SERVER`)
      // The server came up before the last attempt, after the last retry was announced.
      expect(lines.findIndex((line) => line.includes("server listening"))).toBeGreaterThan(lines.indexOf(retries.at(-1)!))
    }), 60_000)

  live("failover.ts falls back to the secondary with each strategy, then reports every endpoint down", () =>
    Effect.gen(function*() {
      const { exitCode, lines } = yield* run("failover")
      expect(exitCode).toBe(0)
      const [, primary, secondary] = /^primary 127\.0\.0\.1:(\d+) is down, secondary 127\.0\.0\.1:(\d+) is up$/.exec(
        lines[0]!
      )!
      expect(lines.slice(1, 7)).toEqual([
        `INFO  connect to 127.0.0.1:${primary} failed with ConnectionRefused, trying 127.0.0.1:${secondary}`,
        `sequential: connected to 127.0.0.1:${secondary}`,
        "sequential: secondary says: HELLO",
        `INFO  connect to 127.0.0.1:${primary} failed with ConnectionRefused, trying 127.0.0.1:${secondary}`,
        `race: connected to 127.0.0.1:${secondary}`,
        "race: secondary says: HELLO"
      ])
      expect(lines.at(-1)).toMatch(
        new RegExp(
          `^AllEndpointsFailed: all 2 endpoints failed: 127\\.0\\.0\\.1:${primary} ConnectionRefused, 127\\.0\\.0\\.1:\\d+ ConnectionRefused$`
        )
      )
    }), 60_000)

  live("pool.ts answers every request through a server restart and prints the pool's stats", () =>
    Effect.gen(function*() {
      const { exitCode, lines } = yield* run("pool")
      expect(exitCode).toBe(0)
      expect(lines[0]).toMatch(/^server listening on 127\.0\.0\.1:\d+$/)
      expect(lines).toContainEqual(
        expect.stringMatching(/^before the restart: idle=\d inUse=\d waiting=\d+ connecting=\d opened=\d closed=0$/)
      )
      // The pool dropped the connections the stopped server closed, by itself.
      expect(lines).toContainEqual(expect.stringMatching(/^server down: idle=0 inUse=0 .* closed=3$/))
      expect(lines.indexOf("server stopped")).toBeLessThan(lines.indexOf("server started again"))
      expect(matching(lines, /^INFO  \[worker=\d\] attempt 1 failed with ConnectionRefused, retrying in \d+ms$/).length)
        .toBeGreaterThan(0)
      expect(lines.at(-2)).toBe("60 of 60 requests answered correctly")
      expect(lines.at(-1)).toMatch(/^at the end: idle=\d inUse=0 waiting=0 connecting=0 opened=\d+ closed=\d+$/)
    }), 60_000)
})
