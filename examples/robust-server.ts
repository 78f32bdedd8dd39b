/**
 * The robust server: upper-cases whatever each client sends and sends it back.
 *
 *   npx tsx examples/robust-server.ts --port 8080 [--host 127.0.0.1]
 *
 * Each connection runs in its own fiber, so a client that resets, stalls or sends garbage
 * affects nobody else. Every error is logged by its tag. SIGINT or SIGTERM shuts it down
 * gracefully: no new connections, the open ones get up to 5 s (drainTimeout) to finish, then
 * exit 0. A port that cannot be bound prints the error and exits 1.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Stream } from "effect"
import { type Connection, NodeTcp, Server } from "effect-tcp"
import * as ExampleLogger from "./logger.js"

const option = (name: string, fallback: string) => {
  const at = process.argv.indexOf(`--${name}`)
  return at >= 0 && at + 1 < process.argv.length ? process.argv[at + 1] : fallback
}

// Upper-cases ASCII letters byte by byte, so a multi-byte character split across chunks stays intact.
const upperCase = (chunk: Uint8Array) => chunk.map((byte) => (byte >= 97 && byte <= 122 ? byte - 32 : byte))

const handleClient = (connection: Connection.Connection) =>
  Effect.gen(function*() {
    yield* Effect.log("client connected")
    yield* connection.stream.pipe(Stream.map(upperCase), Stream.run(connection.sink))
    yield* Effect.log("client closed the connection")
  }).pipe(
    // A typed error ends this connection only: log it by tag and let the server go on.
    Effect.catchAll((error) => Effect.logWarning(`${error._tag}: ${error.message}`)),
    Effect.ensuring(Effect.log("connection closed"))
  )

const program = Effect.gen(function*() {
  const server = yield* Server.serve(
    {
      host: option("host", "127.0.0.1"),
      port: Number(option("port", "8080")),
      readTimeout: "30 seconds",
      drainTimeout: "5 seconds"
    },
    handleClient
  )
  yield* Effect.addFinalizer(() => Console.log("shutting down: no new connections, draining the open ones"))
  yield* Console.log(`listening on ${server.address}`)
  return yield* Effect.never
}).pipe(
  Effect.scoped,
  // After the scope closed: the server has drained and closed every connection.
  Effect.onInterrupt(() => Console.log("server closed")),
  Effect.tapError((error) => Console.error(`${error._tag}: ${error.message}`)),
  Effect.provide(NodeTcp.layer),
  Effect.provide(ExampleLogger.layer)
)

NodeRuntime.runMain(program, { disableErrorReporting: true, disablePrettyLogger: true })
