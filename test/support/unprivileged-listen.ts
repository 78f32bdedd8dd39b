/**
 * Run as an unprivileged user: tries to serve on the port given as argument and prints the
 * outcome as one JSON line.
 */
import * as Effect from "effect/Effect"
import { NodeTcp, Server } from "../../src/index.js"

const port = Number(process.argv[2])

const program = Server.serve({ host: "127.0.0.1", port }, () => Effect.void).pipe(
  Effect.scoped,
  Effect.provide(NodeTcp.layer),
  Effect.match({
    onFailure: (error) => ({ ...error, _tag: error._tag, message: error.message }),
    onSuccess: () => ({ _tag: "Listening" })
  })
)

Effect.runPromise(program).then((outcome) => process.stdout.write(JSON.stringify(outcome) + "\n"))
