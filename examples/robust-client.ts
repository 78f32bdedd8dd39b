/**
 * The robust client: sends a message and prints the response, retrying with exponential
 * backoff (1 s, 2 s, 4 s, ...) when the failure is transient.
 *
 *   npx tsx examples/robust-client.ts --host localhost --port 8080 [--retries 3] [--message "Hello, Server!"]
 *
 * A refused connection, a reset or a timeout is retried; a host name that does not exist
 * fails at once. On final failure it prints the error's tag and message and exits 1.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Duration, Effect, Option } from "effect"
import { NodeTcp, Retry, Tcp, TcpError } from "effect-tcp"
import * as ExampleLogger from "./logger.js"

const option = (name: string, fallback: string) => {
  const at = process.argv.indexOf(`--${name}`)
  return at >= 0 && at + 1 < process.argv.length ? process.argv[at + 1] : fallback
}

const host = option("host", "localhost")
const port = Number(option("port", "8080"))
const retries = Number(option("retries", "3"))
const message = option("message", "Hello, Server!")

// One attempt: connect, send everything, half-close, then read the whole response.
const exchange = Effect.gen(function*() {
  yield* Effect.log(`connecting to ${host}:${port}`)
  const connection = yield* Tcp.connect({ host, port, connectTimeout: "10 seconds", readTimeout: "10 seconds" })
  yield* connection.write(message)
  yield* connection.endWrite
  const chunks: Array<Uint8Array> = []
  for (;;) {
    const chunk = yield* connection.read
    if (Option.isNone(chunk)) break
    chunks.push(chunk.value)
  }
  if (chunks.length === 0) {
    // The server closed without answering: as good as a connection lost mid-exchange.
    return yield* new TcpError.UnexpectedEof({ operation: "read", endpoint: connection.remoteAddress, received: 0 })
  }
  return Buffer.concat(chunks).toString()
}).pipe(Effect.scoped)

// 1 s, 2 s, 4 s, ... between attempts, `retries` times at most, and only for transient errors.
const backoff = Retry.exponential({ base: "1 second", retries, jitter: false })

const program = exchange.pipe(
  Effect.tapError((error) => Effect.logWarning(`${error._tag}: ${error.message}`)),
  Retry.retryTransient(backoff, { onRetry: ({ delay }) => Effect.log(`retrying in ${Duration.format(delay)}`) }),
  Effect.flatMap((response) => Console.log(`Response: ${response}`)),
  Effect.tapError((error) => Console.error(`${error._tag}: ${error.message}`)),
  Effect.provide(NodeTcp.layer),
  Effect.provide(ExampleLogger.layer)
)

NodeRuntime.runMain(program, { disableErrorReporting: true, disablePrettyLogger: true })
