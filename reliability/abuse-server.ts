/**
 * The server under abuse, in its own process so that its memory can be measured alone: a line
 * echo server with the limits a public server would set (reliability/abuse-limits.ts). Prints
 * `listening PORT RSS`; answers each line on stdin with its stats as a JSON line; on SIGTERM it
 * stops and prints its stats, peak memory and event-loop delay as one JSON line.
 */
import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import { monitorEventLoopDelay } from "node:perf_hooks"
import * as NodeTcp from "../src/NodeTcp.js"
import type { Connection } from "../src/Connection.js"
import * as Server from "../src/Server.js"
import * as TcpError from "../src/TcpError.js"
import { limits } from "./abuse-limits.js"

const failures: Record<string, number> = {}

// What the process holds, sampled: the JavaScript heap and Buffers apart from the RSS, to tell
// buffering (arrayBuffers) from garbage not yet collected (heap).
const peak = { heapUsed: 0, arrayBuffers: 0 }
const sample = () => {
  const usage = process.memoryUsage()
  peak.heapUsed = Math.max(peak.heapUsed, usage.heapUsed)
  peak.arrayBuffers = Math.max(peak.arrayBuffers, usage.arrayBuffers)
}

const handler = (connection: Connection) =>
  Effect.gen(function*() {
    for (;;) {
      const line = yield* connection.readUntil("\n", { maxFrameBytes: limits.maxLineBytes }).pipe(
        Effect.timeoutFail({
          duration: limits.lineDeadlineMillis,
          onTimeout: () =>
            new TcpError.ReadTimeout({
              operation: "read",
              endpoint: connection.remoteAddress,
              timeoutMillis: limits.lineDeadlineMillis
            })
        }),
        Effect.catchTag("UnexpectedEof", (error) => (error.received === 0 ? Effect.succeed(null) : error))
      )
      if (line === null) return
      yield* connection.writeAll([line, "\n"])
    }
  }).pipe(Effect.tapError((error) => Effect.sync(() => (failures[error._tag] = (failures[error._tag] ?? 0) + 1))))

const program = Effect.gen(function*() {
  const server = yield* Server.serve(
    {
      port: 0,
      backlog: 4096,
      maxConnections: limits.maxConnections,
      idleTimeout: limits.idleTimeout,
      writeTimeout: limits.writeTimeout,
      drainTimeout: 0
    },
    handler
  )
  const delay = monitorEventLoopDelay({ resolution: 10 })
  delay.enable()
  const sampler = setInterval(sample, 50)
  process.stdin.on("data", () => {
    Effect.runPromise(server.stats).then((stats) => process.stdout.write(`stats ${JSON.stringify(stats)}\n`))
  })
  process.stdout.write(`listening ${server.address.port} ${process.memoryUsage().rss}\n`)
  yield* Effect.async<void>((resume) => {
    process.once("SIGTERM", () => resume(Effect.void))
  })
  clearInterval(sampler)
  process.stdin.destroy()
  delay.disable()
  sample()
  const stats = yield* server.stats
  process.stdout.write(
    JSON.stringify({
      stats,
      failures,
      peakRssBytes: process.resourceUsage().maxRSS * 1024,
      peakHeapUsedBytes: peak.heapUsed,
      peakArrayBuffersBytes: peak.arrayBuffers,
      eventLoopDelayMillis: { p99: delay.percentile(99) / 1e6, max: delay.max / 1e6 }
    }) + "\n"
  )
}).pipe(Effect.scoped, Effect.provide(NodeTcp.layer), Logger.withMinimumLogLevel(LogLevel.None))

Effect.runPromise(program).then(() => process.exit(0))
