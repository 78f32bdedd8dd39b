/**
 * A program as a user of the installed package writes it: test/package.test.ts copies it into a
 * fresh project where `effect-tcp` is the package installed from its tarball, type-checks it there
 * and runs it under Node. In this repository it compiles against src/ (tsconfig.json's `paths`).
 * It prints one line of JSON.
 */
import { Effect } from "effect"
import { NodeTcp, Server, Tcp, type TcpError } from "effect-tcp"
import { FaultProxy } from "effect-tcp/testing"

type IsAny<T> = 0 extends 1 & T ? true : false
// The package's declarations reached the compiler: connect's error channel is its union, not `any`.
const typed: IsAny<Effect.Effect.Error<ReturnType<typeof Tcp.connect>>> = false
const refusedTag: TcpError.ConnectError["_tag"] = "ConnectionRefused"
// @ts-expect-error connect cannot fail with BrokenPipe, and the compiler knows it (with `any` it would not)
const impossible = Tcp.connect({ host: "127.0.0.1", port: 1 }).pipe(Effect.catchTag("BrokenPipe", () => Effect.void))

const echoUpperCase = Effect.gen(function*() {
  const server = yield* Server.serve({ host: "127.0.0.1", port: 0 }, (connection) =>
    connection.readUntil("\n").pipe(
      Effect.flatMap((line) => connection.write(`${new TextDecoder().decode(line).toUpperCase()}\n`))
    ))
  const connection = yield* Tcp.connect({ ...server.address, connectTimeout: "5 seconds", readTimeout: "5 seconds" })
  yield* connection.write("hello from the package\n")
  const reply = new TextDecoder().decode(yield* connection.readUntil("\n"))
  return { port: server.address.port, reply }
}).pipe(Effect.scoped)

const connectRefused = (port: number) =>
  Tcp.connect({ host: "127.0.0.1", port, connectTimeout: "5 seconds" }).pipe(
    Effect.as("connected"),
    Effect.catchTag(refusedTag, (error) => Effect.succeed(error._tag)),
    Effect.scoped
  )

const program = Effect.gen(function*() {
  const { port, reply } = yield* echoUpperCase
  // The server's scope has closed, so nothing listens on its port any more.
  const afterClose = yield* connectRefused(port)
  return { reply, afterClose, typed, impossible: Effect.isEffect(impossible), faultProxy: typeof FaultProxy.make }
}).pipe(Effect.provide(NodeTcp.layer))

Effect.runPromise(program).then(
  (result) => console.log(JSON.stringify(result)),
  (error) => {
    console.error(error)
    process.exitCode = 1
  }
)
