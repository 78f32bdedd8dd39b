/**
 * Child process of the tests of `serve` with a host name (test/server.test.ts), run where
 * /etc/hosts is one the test wrote: serves an upper-casing echo on `--host NAME` (port 0), then
 * prints one JSON line, `{ addresses, warnings }`, or `{ error }`, and serves until it is killed.
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Stream from "effect/Stream"
import * as NodeTcp from "../../src/NodeTcp.js"
import * as Server from "../../src/Server.js"

const host = process.argv[2]!
const warnings: Array<string> = []
const logger = Logger.make(({ message }) => warnings.push((Array.isArray(message) ? message : [message]).join(" ")))

const program = Effect.gen(function*() {
  const server = yield* Server.serve({ host, port: 0 }, (connection) =>
    connection.stream.pipe(
      Stream.map((chunk) => Buffer.from(chunk).toString("latin1").toUpperCase()),
      Stream.run(connection.sink)
    ))
  console.log(JSON.stringify({ addresses: server.addresses, warnings }))
  return yield* Effect.never
}).pipe(
  Effect.scoped,
  Effect.catchAll((error) =>
    Effect.sync(() => console.log(JSON.stringify({ error: { _tag: error._tag, message: error.message } })))
  ),
  Effect.provide(Layer.merge(NodeTcp.layer, Logger.replace(Logger.defaultLogger, logger)))
)

Effect.runFork(program)
