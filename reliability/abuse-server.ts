/**
 * The server under abuse, in its own process so that its memory can be measured alone: a line
 * echo server with the limits a public server would set. Prints `listening PORT`; on SIGTERM it
 * drains and prints its stats and peak RSS as one JSON line.
 */
import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as NodeTcp from "../src/NodeTcp.js"
import * as Server from "../src/Server.js"
import * as TcpError from "../src/TcpError.js"

export const limits = {
  maxConnections: 2500,
  idleTimeout: "5 seconds",
  writeTimeout: "2 seconds",
  /** A whole line must arrive within this, whatever the pace of its bytes: slowloris' end. */
  lineDeadline: "10 seconds",
  maxLineBytes: 1024
} as const

const failures: Record<string, number> = {}

const program = Effect.gen(function*() {
  const server = yield* Server.serve(
    { port: 0, backlog: 4096, maxConnections: limits.maxConnections, idleTimeout: limits.idleTimeout, writeTimeout: limits.writeTimeout, drainTimeout: 0 },
    (connection) =>
      Effect.gen(function*() {
        for (;;) {
          const line = yield* connection.readUntil("\n", { maxBytes: limits.maxLineBytes }).pipe(
            Effect.timeoutFail({
              duration: limits.lineDeadline,
              onTimeout: () =>
                new TcpError.ReadTimeout({ operation: "read", endpoint: connection.remoteAddress, timeoutMillis: 10_000 })
            }),
            Effect.catchTag("UnexpectedEof", (error) => (error.received === 0 ? Effect.succeed(null) : error))
          )
          if (line === null) return
          yield* connection.writeAll([line, "\n"])
        }
      }).pipe(Effect.tapError((error) => Effect.sync(() => (failures[error._tag] = (failures[error._tag] ?? 0) + 1))))
  )
  process.stdout.write(`listening ${server.address.port} ${process.memoryUsage().rss}\n`)
  yield* Effect.async<void>((resume) => {
    process.once("SIGTERM", () => resume(Effect.void))
  })
  const stats = yield* server.stats
  process.stdout.write(
    JSON.stringify({ stats, failures, peakRssBytes: process.resourceUsage().maxRSS * 1024 }) + "\n"
  )
}).pipe(Effect.scoped, Effect.provide(NodeTcp.layer), Logger.withMinimumLogLevel(LogLevel.None))

Effect.runPromise(program).then(() => process.exit(0))
