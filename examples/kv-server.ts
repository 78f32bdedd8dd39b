/**
 * A key-value server: Schema-typed Get / Set / Delete requests over length-prefixed JSON frames.
 *
 *   npx tsx examples/kv-server.ts --port 7070 [--host 127.0.0.1]
 *
 * The requests of a connection are handled concurrently, so a slow one does not hold up the
 * others: each response leaves as soon as it is ready and the client matches it by its id. A
 * missing key is a typed failure, KeyNotFound, that the client receives as such. SIGINT or SIGTERM
 * shuts the server down gracefully (exit 0).
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as HashMap from "effect/HashMap"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import { Message, NodeTcp } from "effect-tcp"
import * as Kv from "./kv-protocol.js"
import * as ExampleLogger from "./logger.js"

const option = (name: string, fallback: string) => {
  const at = process.argv.indexOf(`--${name}`)
  return at >= 0 && at + 1 < process.argv.length ? process.argv[at + 1] : fallback
}

const program = Effect.gen(function*() {
  const store = yield* Ref.make(HashMap.empty<string, string>())

  const handle = (request: Kv.Request): Effect.Effect<Kv.Response, Kv.KeyNotFound> => {
    switch (request._tag) {
      case "Get":
        return Effect.flatMap(Ref.get(store), (entries) =>
          Option.match(HashMap.get(entries, request.key), {
            onNone: () => Effect.fail(new Kv.KeyNotFound({ key: request.key })),
            onSome: (value) => Effect.succeed(new Kv.Value({ key: request.key, value }))
          }))
      case "Set":
        return Ref.update(store, HashMap.set(request.key, request.value)).pipe(
          Effect.as(new Kv.Stored({ key: request.key }))
        )
      case "Delete":
        return Ref.modify(store, (entries) =>
          HashMap.has(entries, request.key)
            ? [true, HashMap.remove(entries, request.key)] as const
            : [false, entries] as const).pipe(
            Effect.flatMap((deleted) =>
              deleted
                ? Effect.succeed(new Kv.Deleted({ key: request.key }))
                : Effect.fail(new Kv.KeyNotFound({ key: request.key }))
            )
          )
      case "Sleep":
        return Effect.sleep(request.millis).pipe(Effect.as(new Kv.Slept({ millis: request.millis })))
    }
  }

  const server = yield* Message.serve(
    Kv.KeyValue,
    { host: option("host", "127.0.0.1"), port: Number(option("port", "7070")), drainTimeout: "5 seconds" },
    (request) => handle(request).pipe(Effect.tapError((error) => Effect.log(`${request._tag}: ${error.message}`)))
  )
  yield* Effect.addFinalizer(() => Console.log("shutting down: no new connections, draining the open ones"))
  yield* Console.log(`listening on ${server.address}`)
  return yield* Effect.never
}).pipe(
  Effect.scoped,
  Effect.onInterrupt(() => Console.log("server closed")),
  Effect.tapError((error) => Console.error(`${error._tag}: ${error.message}`)),
  Effect.provide(NodeTcp.layer),
  Effect.provide(ExampleLogger.layer)
)

NodeRuntime.runMain(program, { disableErrorReporting: true, disablePrettyLogger: true })
