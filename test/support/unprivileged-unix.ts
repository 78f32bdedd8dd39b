/**
 * Run as an unprivileged user: connects to the Unix socket path given (`connect <path>`) or serves
 * on it (`serve <path>`), and prints the outcome as one JSON line.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { NodeTcp, Server, Tcp, type TcpError } from "../../src/index.js"

const [what, path] = process.argv.slice(2) as [string, string]

const attempt: Effect.Effect<string, TcpError.TcpError, Scope.Scope | Tcp.Tcp> = what === "connect"
  ? Effect.as(Tcp.connect({ path }), "Connected")
  : Effect.as(Server.serve({ path }, () => Effect.void), "Listening")

const program = attempt.pipe(
  Effect.scoped,
  Effect.provide(NodeTcp.layer),
  Effect.match({
    onFailure: (error) => ({ ...error, _tag: error._tag, message: error.message }),
    onSuccess: (tag) => ({ _tag: tag })
  })
)

Effect.runPromise(program).then((outcome) => process.stdout.write(JSON.stringify(outcome) + "\n"))
