/**
 * Graceful degradation: the primary is down, the secondary serves.
 *
 *   npx tsx examples/failover.ts
 *
 * The program starts the secondary itself; nothing listens on the primary's port. It connects
 * with each strategy: `sequential` (primary, then secondary) and `race` (happy eyeballs: the
 * next endpoint starts when one fails or after `attemptDelay`, the losers are closed). Last,
 * with every endpoint down, one error lists each endpoint with its own error.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect } from "effect"
import { type Connection, Failover, NodeTcp, Server } from "effect-tcp"
import * as ExampleLogger from "./logger.js"

const greet = (name: string) => (connection: Connection.Connection) =>
  Effect.gen(function*() {
    const line = Buffer.from(yield* connection.readUntil("\n")).toString()
    yield* connection.write(`${name} says: ${line.toUpperCase()}\n`)
  })

// A port with nothing listening on it: bound once to find it free, then released.
const freePort = Effect.scoped(Effect.map(Server.serve({ port: 0 }, () => Effect.void), (server) => server.address.port))

const program = Effect.gen(function*() {
  const primary = { host: "127.0.0.1", port: yield* freePort }
  const secondary = (yield* Server.serve({ port: 0 }, greet("secondary"))).address
  yield* Console.log(`primary 127.0.0.1:${primary.port} is down, secondary ${secondary} is up`)

  for (const strategy of ["sequential", "race"] as const) {
    const answer = yield* Effect.scoped(Effect.gen(function*() {
      const connection = yield* Failover.connect([primary, secondary], {
        strategy,
        attemptDelay: "250 millis",
        connectTimeout: "2 seconds",
        readTimeout: "2 seconds"
      })
      yield* Console.log(`${strategy}: connected to ${connection.remoteAddress}`)
      yield* connection.write("hello\n")
      return Buffer.from(yield* connection.readUntil("\n")).toString()
    }))
    yield* Console.log(`${strategy}: ${answer}`)
  }

  // Every endpoint down: one error, with each endpoint's own error in `failures`.
  const down = { host: "127.0.0.1", port: yield* freePort }
  yield* Failover.connect([primary, down], { connectTimeout: "2 seconds" }).pipe(
    Effect.flatMap((connection) => Console.log(`connected to ${connection.remoteAddress}?`)),
    Effect.catchTag("AllEndpointsFailed", (error) => Console.log(`${error._tag}: ${error.message}`)),
    Effect.scoped
  )
}).pipe(
  Effect.scoped,
  Effect.tapError((error) => Console.error(`${error._tag}: ${error.message}`)),
  Effect.provide(NodeTcp.layer),
  Effect.provide(ExampleLogger.layer)
)

NodeRuntime.runMain(program, { disableErrorReporting: true, disablePrettyLogger: true })
