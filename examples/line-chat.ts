/**
 * Newline-delimited text with a line limit: a chat server that relays each line to the other
 * clients, and three clients, in one process.
 *
 *   npx tsx examples/line-chat.ts
 *
 * Lines are at most 256 bytes. A client whose line is longer is refused locally with FrameTooLarge
 * before anything is sent; a peer that sends one anyway (writing raw bytes past the framing) is
 * answered with an error line and disconnected by the server, while the others chat on.
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as PubSub from "effect/PubSub"
import * as Queue from "effect/Queue"
import * as Stream from "effect/Stream"
import { type Connection, Framing, NodeTcp, Server, Tcp } from "effect-tcp"

const lines = Framing.delimited({ delimiter: "\n", maxFrameBytes: 256 })
const text = (bytes: Uint8Array) => Buffer.from(bytes).toString("utf8")

interface Said {
  readonly from: string
  readonly text: string
}

// The server: the first line a client sends is its name; every later line goes to the others.
const chatter = (room: PubSub.PubSub<Said>) => (connection: Connection.Connection) =>
  Effect.gen(function*() {
    const incoming = yield* Framing.reader(connection, lines)
    const first = yield* incoming.read
    if (Option.isNone(first)) return
    const name = text(first.value)
    const inbox = yield* PubSub.subscribe(room)
    yield* Framing.write(connection, lines, `welcome, ${name}`)
    yield* Queue.take(inbox).pipe(
      Effect.flatMap((said) =>
        said.from === name ? Effect.void : Framing.write(connection, lines, `${said.from}: ${said.text}`)
      ),
      Effect.forever,
      Effect.forkScoped
    )
    yield* incoming.stream.pipe(Stream.runForEach((line) => PubSub.publish(room, { from: name, text: text(line) })))
  }).pipe(
    Effect.catchTag("FrameTooLarge", (error) =>
      Console.log(`server: ${error._tag}, disconnecting the sender (${error.message})`).pipe(
        Effect.zipRight(Framing.write(connection, lines, `error: lines are limited to ${lines.maxFrameBytes} bytes`))
      ))
  )

// A client: connect, say its name, wait for the welcome.
const join = (port: number, name: string) =>
  Effect.gen(function*() {
    const connection = yield* Tcp.connect({ host: "127.0.0.1", port, readTimeout: "5 seconds" })
    const incoming = yield* Framing.reader(connection, lines)
    yield* Framing.write(connection, lines, name)
    yield* incoming.read
    const say = (line: string) => Framing.write(connection, lines, line)
    const hear = Effect.map(incoming.read, Option.match({ onNone: () => "(connection closed)", onSome: text }))
    return { connection, say, hear }
  })

const program = Effect.gen(function*() {
  const room = yield* PubSub.unbounded<Said>()
  const server = yield* Server.serve({ port: 0 }, chatter(room))
  yield* Console.log(`chat server listening on ${server.address}`)
  const { port } = server.address

  const alice = yield* join(port, "alice")
  const bob = yield* join(port, "bob")
  yield* alice.say("hi bob!")
  yield* Console.log(`bob hears "${yield* bob.hear}"`)

  // Over the limit: refused before a byte is sent.
  yield* bob.say("x".repeat(300)).pipe(
    Effect.catchTag("FrameTooLarge", (error) =>
      Console.log(`bob's 300-byte line is refused locally: ${error._tag}: ${error.message}`))
  )

  // A peer that ignores the framing and sends 1,000 bytes without a newline.
  const mallory = yield* join(port, "mallory")
  yield* mallory.connection.write("y".repeat(1000))
  yield* Console.log(`mallory hears "${yield* mallory.hear}"`)
  yield* Console.log(`mallory hears "${yield* mallory.hear}"`)

  yield* bob.say("still here")
  yield* Console.log(`alice hears "${yield* alice.hear}"`)
}).pipe(
  Effect.scoped,
  Effect.tapError((error) => Console.error(`${error._tag}: ${error.message}`)),
  Effect.provide(NodeTcp.layer)
)

NodeRuntime.runMain(program, { disableErrorReporting: true, disablePrettyLogger: true })
