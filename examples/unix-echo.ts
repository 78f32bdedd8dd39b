/**
 * A server and a client on a Unix domain socket: `npx tsx examples/unix-echo.ts [--path /tmp/echo.sock]`
 * (default: a socket in a new temporary directory). The server upper-cases what it receives; once
 * it has stopped, its socket file is gone and a connect says so.
 */
import { Effect, Stream } from "effect"
import { Endpoint, NodeTcp, Server, Tcp } from "effect-tcp"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

const flag = process.argv.indexOf("--path")
const dir = flag >= 0 ? undefined : fs.mkdtempSync(path.join(os.tmpdir(), "unix-echo-"))
const socketPath = flag >= 0 ? process.argv[flag + 1]! : path.join(dir!, "echo.sock")

const upperCase = (bytes: Uint8Array) => new TextEncoder().encode(new TextDecoder().decode(bytes).toUpperCase())

const exchange = Effect.gen(function*() {
  // Only this user and its group may connect: a client needs write permission on the socket file.
  const server = yield* Server.serve({ path: socketPath, mode: 0o660 }, (connection) =>
    connection.stream.pipe(Stream.map(upperCase), Stream.run(connection.sink)))
  const mode = (fs.statSync(socketPath).mode & 0o777).toString(8)
  console.log(`listening on ${Endpoint.format(server.address)} (mode ${mode})`)

  const connection = yield* Tcp.connect({ path: socketPath, connectTimeout: "5 seconds", readTimeout: "5 seconds" })
  yield* connection.write("hello over a Unix socket")
  yield* connection.endWrite
  const answer = yield* connection.stream.pipe(Stream.map((bytes) => new TextDecoder().decode(bytes)), Stream.mkString)
  console.log(answer)
}).pipe(Effect.scoped) // closes the connection, then the server, which removes its socket file

const program = Effect.gen(function*() {
  yield* exchange
  console.log(`socket file removed: ${!fs.existsSync(socketPath)}`)
  const again = yield* Effect.either(Effect.scoped(Tcp.connect({ path: socketPath })))
  if (again._tag === "Left") console.log(`${again.left._tag}: ${again.left.message}`)
}).pipe(
  Effect.catchAll((error) => Effect.sync(() => {
    console.log(`${error._tag}: ${error.message}`)
    process.exitCode = 1
  })),
  Effect.ensuring(Effect.sync(() => dir && fs.rmSync(dir, { recursive: true, force: true }))),
  Effect.provide(NodeTcp.layer)
)

Effect.runPromise(program)
