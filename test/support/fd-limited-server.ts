/**
 * Child process of the descriptor-exhaustion tests (test/exhaustion.test.ts), started under a low
 * `ulimit -n`: serves, on 127.0.0.1 and a free port, a handler that answers what it reads
 * upper-cased until the client closes (with `--max-connections N` if given). Prints `{ port }`
 * once listening; then, for each line on its stdin, one JSON line `{ stats, warnings }` (every
 * warning logged so far).
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Stream from "effect/Stream"
import * as readline from "node:readline"
import * as NodeTcp from "../../src/NodeTcp.js"
import * as Server from "../../src/Server.js"

const at = process.argv.indexOf("--max-connections")
const maxConnections = at >= 0 ? Number(process.argv[at + 1]) : undefined

const warnings: Array<string> = []
const logger = Logger.make(({ logLevel, message }) => {
  if (LogLevel.greaterThanEqual(logLevel, LogLevel.Warning)) {
    warnings.push((Array.isArray(message) ? message : [message]).join(" "))
  }
})

const program = Effect.gen(function*() {
  const server = yield* Server.serve({ port: 0, maxConnections }, (connection) =>
    connection.stream.pipe(
      Stream.map((chunk) => Buffer.from(chunk).toString("latin1").toUpperCase()),
      Stream.run(connection.sink)
    ))
  console.log(JSON.stringify({ port: server.address.port }))
  const lines = readline.createInterface({ input: process.stdin })
  lines.on("line", () => console.log(JSON.stringify({ stats: Effect.runSync(server.stats), warnings })))
  return yield* Effect.never
}).pipe(Effect.scoped, Effect.provide(Layer.merge(NodeTcp.layer, Logger.replace(Logger.defaultLogger, logger))))

Effect.runFork(program)
