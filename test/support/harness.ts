/**
 * Test helpers: run an Effect test with the `Tcp` service and a check that no fiber it forked is
 * still running at the end, wait in real time under `TestClock` (for I/O, or until a fiber has
 * registered its sleep), peers built on raw `node:net` for behaviour the library must handle, and a
 * connection to such a peer.
 */
import { it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Scope from "effect/Scope"
import * as Supervisor from "effect/Supervisor"
import * as TestClock from "effect/TestClock"
import * as TestServices from "effect/TestServices"
import * as net from "node:net"
import * as Endpoint from "../../src/Endpoint.js"
import * as NodeTcp from "../../src/NodeTcp.js"
import type { Connection } from "../../src/Connection.js"
import * as Tcp from "../../src/Tcp.js"

type Body<A, E> = () => Effect.Effect<A, E, Tcp.Tcp | Scope.Scope>

const leakFree = <A, E>(body: Body<A, E>) =>
  Effect.gen(function*() {
    const supervisor = yield* Supervisor.track
    const result = yield* Effect.scoped(body()).pipe(Effect.supervised(supervisor), Effect.provide(NodeTcp.layer))
    const alive = yield* supervisor.value
    if (alive.length > 0) {
      return yield* Effect.dieMessage(`the test left ${alive.length} fiber(s) running`)
    }
    return result
  })

/** An Effect test with `TestClock` (time stands still until adjusted). */
export const effect = <A, E>(name: string, body: Body<A, E>, timeout?: number) =>
  it.effect(name, () => leakFree(body), timeout)

/** An Effect test with the real clock. */
export const live = <A, E>(name: string, body: Body<A, E>, timeout?: number) =>
  it.live(name, () => leakFree(body), timeout)

/**
 * Sleeps in real time even under `TestClock`: gives sockets and the event loop time to act while
 * the test's clock stands still.
 */
export const realSleep = (millis: number) => TestServices.provideLive(Effect.sleep(`${millis} millis`))

/** Polls (in real time) until `condition` holds; the test's own timeout bounds it. */
export const eventually = (condition: () => boolean) =>
  Effect.gen(function*() {
    while (!condition()) yield* realSleep(2)
  })

/** One turn of the real event loop: pending I/O callbacks run, no timer needs to expire. */
const nextTurn = Effect.async<void>((resume) => {
  const handle = setImmediate(() => resume(Effect.void))
  return Effect.sync(() => clearImmediate(handle))
})

/**
 * Waits until at least `count` sleeps are registered on the `TestClock`, only those waking at the
 * instant `wakingAt` of test time (0 when the test starts) if given; returns every wake-up time,
 * in millis. Call it between forking a fiber and `TestClock.adjust`: an adjust that comes first
 * moves the clock past a deadline set later. With `wakingAt` it also checks the deadline: a sleep
 * of another length never matches, and the test times out. Interrupted sleeps stay registered
 * until the clock passes them. Polls on the real event loop; the test's own timeout bounds it.
 */
export const awaitSleeps = (count: number, options?: { readonly wakingAt?: Duration.DurationInput }) =>
  Effect.gen(function*() {
    const at = options?.wakingAt === undefined ? undefined : Duration.toMillis(options.wakingAt)
    for (let polls = 0;; polls++) {
      const sleeps = Chunk.toArray(yield* TestClock.sleeps())
      const matching = at === undefined ? sleeps : sleeps.filter((wakeAt) => wakeAt === at)
      if (matching.length >= count) return sleeps
      yield* polls < 100 ? nextTurn : realSleep(1)
    }
  })

/**
 * Calls `onCommand` with each command of `size` bytes (as latin1) that `socket` receives, however
 * the bytes are cut into chunks: the fixed-size protocol of the tests' servers.
 */
export const onCommands = (socket: net.Socket, size: number, onCommand: (command: string) => void): void => {
  let pending = ""
  socket.on("data", (chunk: Buffer) => {
    pending += chunk.toString("latin1")
    while (pending.length >= size) {
      const command = pending.slice(0, size)
      pending = pending.slice(size)
      onCommand(command)
    }
  })
}

/** Writes `message` and reads as many bytes back: one exchange with a server of fixed-size commands. */
export const exchange = (connection: Connection, message = "ping") =>
  Effect.gen(function*() {
    yield* connection.write(message)
    return text(yield* connection.readExactly(message.length))
  })

/**
 * A raw `node:net` server on 127.0.0.1 that calls `onConnection` for each client; closed, with
 * every socket it accepted, when the scope closes.
 */
export const rawServer = (onConnection: (socket: net.Socket) => void) =>
  Effect.acquireRelease(
    Effect.async<{ readonly server: net.Server; readonly port: number; readonly sockets: Set<net.Socket> }>(
      (resume) => {
        const sockets = new Set<net.Socket>()
        const server = net.createServer({ allowHalfOpen: true }, (socket) => {
          sockets.add(socket)
          socket.on("error", () => {})
          socket.on("close", () => sockets.delete(socket))
          onConnection(socket)
        })
        server.listen(0, "127.0.0.1", () => {
          resume(Effect.succeed({ server, port: (server.address() as net.AddressInfo).port, sockets }))
        })
      }
    ),
    ({ server, sockets }) =>
      Effect.async<void>((resume) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resume(Effect.void))
      })
  )

/**
 * A port on 127.0.0.1 that is free now, for a server another process or a later step binds: bound
 * once to find it, then released. Nothing stops a `listen(0)` elsewhere from taking it meanwhile, so
 * a test that only needs a port that refuses uses `closedPort`.
 */
export const freePort = Effect.async<number>((resume) => {
  const server = net.createServer()
  server.listen(0, "127.0.0.1", () => {
    const port = (server.address() as net.AddressInfo).port
    server.close(() => resume(Effect.succeed(port)))
  })
})

/**
 * A port on 127.0.0.1 that refuses connections until the test's scope closes: the local port of a
 * connection the helper keeps open. No listener is on it, and while the connection holds it no
 * `listen(0)` can be given it (a released port could be, and a test's dead primary then answered).
 */
export const closedPort = Effect.acquireRelease(
  Effect.async<{ readonly server: net.Server; readonly client: net.Socket }>((resume) => {
    const server = net.createServer((socket) => socket.on("error", () => {}))
    server.listen(0, "127.0.0.1", () => {
      const client = net.connect((server.address() as net.AddressInfo).port, "127.0.0.1")
      client.on("error", () => {})
      client.once("connect", () => resume(Effect.succeed({ server, client })))
    })
  }),
  ({ client, server }) =>
    Effect.async<void>((resume) => {
      client.destroy()
      server.close(() => resume(Effect.void))
    })
).pipe(Effect.map(({ client }) => client.localPort!))

/**
 * A raw peer on 127.0.0.1 that hands each accepted socket to `onSocket`, and a connection to it;
 * `peer` is the socket the peer accepted for that connection.
 */
export const connectTo = (onSocket: (socket: net.Socket) => void, options: Partial<Tcp.ConnectOptions> = {}) =>
  Effect.gen(function*() {
    let peer: net.Socket | undefined
    const accepted = yield* Effect.makeLatch()
    const { port } = yield* rawServer((socket) => {
      peer = socket
      onSocket(socket)
      accepted.unsafeOpen()
    })
    const connection = yield* Tcp.connect({ host: "127.0.0.1", port, ...options })
    yield* accepted.await
    return { connection, peer: peer!, port }
  })

/** The bytes as UTF-8 text. */
export const text = (bytes: Uint8Array) => Buffer.from(bytes).toString()

/** A raw client socket to 127.0.0.1:port, destroyed when the scope closes. */
export const rawClient = (port: number) =>
  Effect.acquireRelease(
    Effect.async<net.Socket, Error>((resume) => {
      const socket = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true })
      socket.once("connect", () => resume(Effect.succeed(socket)))
      socket.once("error", (error) => resume(Effect.fail(error)))
    }).pipe(Effect.tap((socket) => Effect.sync(() => socket.on("error", () => {})))),
    (socket) => Effect.sync(() => socket.destroy())
  )

/** Resolves with everything a raw socket receives until it ends or closes. */
export const collect = (socket: net.Socket) =>
  Effect.async<Buffer>((resume) => {
    const chunks: Array<Buffer> = []
    socket.on("data", (chunk: Buffer) => chunks.push(chunk))
    socket.once("close", () => resume(Effect.succeed(Buffer.concat(chunks))))
    socket.once("end", () => resume(Effect.succeed(Buffer.concat(chunks))))
  })

/** Waits until a raw socket has closed. */
export const closed = (socket: net.Socket) =>
  Effect.async<void>((resume) => {
    if (socket.destroyed) return resume(Effect.void)
    socket.once("close", () => resume(Effect.void))
  })

/** A TCP endpoint (of a connection, an error, a server), narrowed from the union; throws on a Unix path. */
export const tcp = (endpoint: Endpoint.Endpoint): Endpoint.TcpEndpoint => {
  if (!Endpoint.isTcp(endpoint)) throw new Error(`expected a TCP endpoint, got ${Endpoint.format(endpoint)}`)
  return endpoint
}
