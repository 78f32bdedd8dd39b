import { Effect, Stream } from "effect"
import { NodeTcp, Server, Tcp } from "effect-tcp"

const program = Effect.gen(function*() {
  // A server on a free port that upper-cases what it receives, until the client closes.
  const server = yield* Server.serve({ port: 0 }, (connection) =>
    connection.stream.pipe(
      Stream.map((bytes) => new TextEncoder().encode(new TextDecoder().decode(bytes).toUpperCase())),
      Stream.run(connection.sink)
    ))

  // A client: connect with a deadline, send, half-close, read the answer.
  const connection = yield* Tcp.connect({ ...server.address, connectTimeout: "5 seconds", readTimeout: "5 seconds" })
  yield* connection.write("hello, effect-tcp")
  yield* connection.endWrite
  const answer = yield* connection.readExactly(17)
  console.log(new TextDecoder().decode(answer)) // HELLO, EFFECT-TCP
  console.log(yield* connection.read) // { _id: 'Option', _tag: 'None' }: the server closed its side
}).pipe(
  Effect.scoped, // closes the connection, then the server
  Effect.catchTags({
    ConnectionRefused: (error) => Effect.logError(error.message),
    ConnectTimeout: (error) => Effect.logError(`${error.message}, giving up`)
  }),
  Effect.provide(NodeTcp.layer)
)

Effect.runPromise(program)
