/**
 * The key-value client: a pipelined batch on one connection, typed failures, and a timeout.
 *
 *   npx tsx examples/kv-client.ts --port 7070 [--host 127.0.0.1]
 *
 * 1. 100 Set requests are in flight at once on the one connection (no waiting for each answer).
 * 2. Get of a key that exists, and of one that does not: KeyNotFound, a typed failure.
 * 3. Delete, then Get again.
 * 4. A slow request with a 250 ms timeout fails with RequestTimeout; the connection goes on.
 * On a connection error it prints the error's tag and message and exits 1.
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import { Message, NodeTcp, Tcp } from "effect-tcp"
import * as Kv from "./kv-protocol.js"

const option = (name: string, fallback: string) => {
  const at = process.argv.indexOf(`--${name}`)
  return at >= 0 && at + 1 < process.argv.length ? process.argv[at + 1] : fallback
}

const describe = (response: Kv.Response): string => {
  switch (response._tag) {
    case "Value":
      return JSON.stringify(response.value)
    case "Slept":
      return `slept ${response.millis} ms`
    default:
      return response._tag
  }
}

const program = Effect.gen(function*() {
  const connection = yield* Tcp.connect({
    host: option("host", "127.0.0.1"),
    port: Number(option("port", "7070")),
    connectTimeout: "5 seconds"
  })
  yield* Console.log(`connected to ${connection.remoteAddress}`)
  // Every request gets 5 seconds unless it says otherwise.
  const kv = yield* Message.client(connection, Kv.KeyValue, { timeout: "5 seconds" })

  // Prints what a request got: its response, or its typed failure.
  const show = (label: string, request: Kv.Request, options?: Message.RequestOptions) =>
    kv.request(request, options).pipe(
      Effect.flatMap((response) => Console.log(`${label} -> ${describe(response)}`)),
      Effect.catchTags({
        KeyNotFound: (error) => Console.log(`${label} -> KeyNotFound: ${error.message}`),
        RequestTimeout: (error) => Console.log(`${label} -> RequestTimeout: ${error.message}`)
      })
    )

  const users = Array.from({ length: 100 }, (_, i) => new Kv.Set({ key: `user:${i}`, value: `name ${i}` }))
  const stored = yield* Effect.forEach(users, (set) => kv.request(set), { concurrency: "unbounded" })
  yield* Console.log(`pipelined ${users.length} Set requests on one connection: ${stored.length} stored`)

  yield* show("Get user:42", new Kv.Get({ key: "user:42" }))
  yield* show("Get user:999", new Kv.Get({ key: "user:999" }))
  yield* show("Delete user:42", new Kv.Delete({ key: "user:42" }))
  yield* show("Get user:42", new Kv.Get({ key: "user:42" }))
  yield* show("Sleep 1000 ms with a 250 ms timeout", new Kv.Sleep({ millis: 1000 }), { timeout: "250 millis" })
  yield* show("still usable after the timeout: Get user:7", new Kv.Get({ key: "user:7" }))
}).pipe(
  Effect.scoped,
  Effect.tapError((error) => Console.error(`${error._tag}: ${error.message}`)),
  Effect.provide(NodeTcp.layer)
)

NodeRuntime.runMain(program, { disableErrorReporting: true, disablePrettyLogger: true })
