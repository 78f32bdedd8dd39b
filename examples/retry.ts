/**
 * A client with a retry policy against a server that comes up late: each refused connect is
 * retried after a jittered exponential backoff (about 0.5 s, 1 s, 2 s, ...), and the request
 * goes through once the server listens.
 *
 *   npx tsx examples/retry.ts
 *
 * The program starts the server itself, 2.5 s after the client's first attempt, on a port
 * it found free. Every retry is logged with the attempt, the error's tag and the delay.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Stream } from "effect"
import { type Connection, NodeTcp, Retry, Server, Tcp } from "effect-tcp"
import * as ExampleLogger from "./logger.js"

const upperCaseEcho = (connection: Connection.Connection) =>
  connection.stream.pipe(
    Stream.map((chunk) => chunk.map((byte) => (byte >= 97 && byte <= 122 ? byte - 32 : byte))),
    Stream.run(connection.sink)
  )

// A port with nothing listening on it yet: bound once to find it free, then released.
const freePort = Effect.scoped(Effect.map(Server.serve({ port: 0 }, () => Effect.void), (server) => server.address.port))

const program = Effect.gen(function*() {
  const port = yield* freePort
  yield* Server.serve({ port }, upperCaseEcho).pipe(
    Effect.tap((server) => Effect.log(`server listening on ${server.address}`)),
    Effect.delay("2500 millis"),
    Effect.forkScoped
  )

  let attempts = 0
  const request = Effect.gen(function*() {
    attempts++
    yield* Effect.log(`attempt ${attempts}: connecting to 127.0.0.1:${port}`)
    const connection = yield* Tcp.connect({ host: "127.0.0.1", port, connectTimeout: "2 seconds", readTimeout: "2 seconds" })
    const message = "hello, late server"
    yield* connection.write(message)
    return Buffer.from(yield* connection.readExactly(message.length)).toString()
  }).pipe(Effect.scoped)

  // Transient failures (refused, reset, timeouts) are retried; a bad host name would fail at once.
  const response = yield* request.pipe(Retry.retryTransient(Retry.exponential({ base: "500 millis", retries: 6 })))
  yield* Console.log(`Response after ${attempts} attempts: ${response}`)
}).pipe(
  Effect.scoped,
  Effect.tapError((error) => Console.error(`${error._tag}: ${error.message}`)),
  Effect.provide(NodeTcp.layer),
  Effect.provide(ExampleLogger.layer)
)

NodeRuntime.runMain(program, { disableErrorReporting: true, disablePrettyLogger: true })
