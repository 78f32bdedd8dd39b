/**
 * Interruption at random points: connects, reads, writes and server handlers are interrupted
 * thousands of times at random moments. Afterwards no socket, server, timer or fiber may be
 * left, and an interrupted read must not have lost a byte.
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Supervisor from "effect/Supervisor"
import { seeded } from "../src/internal/random.js"
import * as NodeTcp from "../src/NodeTcp.js"
import * as Server from "../src/Server.js"
import * as Tcp from "../src/Tcp.js"

export interface InterruptionOptions {
  readonly iterations: number
  readonly seed: number
}

export interface InterruptionFigures {
  readonly iterations: number
  /** How often each operation was interrupted before it completed, and how often it won the race. */
  readonly interrupted: Record<string, number>
  readonly completed: Record<string, number>
  readonly seconds: number
  readonly invariants: {
    readonly bytesLostOrReordered: number
    readonly clientsLeftHanging: number
    readonly socketsLeftOpen: number
    readonly timersLeft: number
    readonly fibersLeftRunning: number
  }
}

const census = () => {
  let sockets = 0
  let timers = 0
  for (const resource of process.getActiveResourcesInfo()) {
    if (resource === "TCPSocketWrap" || resource === "TCPServerWrap" || resource === "TCPConnectWrap") sockets++
    if (resource === "Timeout") timers++
  }
  return { sockets, timers }
}

const message = "0123456789"

export const runInterruptions = (options: InterruptionOptions): Effect.Effect<InterruptionFigures> =>
  Effect.gen(function*() {
    const random = seeded(options.seed)
    const pause = () => Effect.sleep(`${Math.floor(random() * 2000)} micros`)
    const before = census()
    const supervisor = yield* Supervisor.track
    const started = Date.now()
    const interrupted: Record<string, number> = { connect: 0, read: 0, write: 0, handler: 0 }
    const completed: Record<string, number> = { connect: 0, read: 0, write: 0, handler: 0 }
    let bytesLost = 0
    let hanging = 0

    const race = <A, E, R>(kind: string, effect: Effect.Effect<A, E, R>) =>
      Effect.gen(function*() {
        const fiber = yield* Effect.fork(effect)
        yield* pause()
        const exit = yield* Fiber.interrupt(fiber)
        if (Exit.isInterrupted(exit)) interrupted[kind]!++
        else completed[kind]!++
        return exit
      })

    yield* Effect.gen(function*() {
      // A peer that sends the message in two parts, a random moment apart, to every client.
      const server = yield* Server.serve({ port: 0, drainTimeout: 0 }, (connection) =>
        Effect.gen(function*() {
          yield* connection.write(message.slice(0, 4))
          yield* pause()
          yield* connection.write(message.slice(4))
          yield* Stream.runDrain(connection.stream)
        }))
      const target = { host: server.address.host, port: server.address.port }

      for (let i = 0; i < options.iterations; i++) {
        switch (i % 4) {
          case 0: {
            yield* race("connect", Effect.scoped(Tcp.connect(target)))
            break
          }
          case 1: {
            // Whatever an interrupted read had taken must come back to the next read, in order.
            yield* Effect.scoped(Effect.gen(function*() {
              const connection = yield* Tcp.connect({ ...target, readTimeout: "5 seconds" })
              const read: Effect.Effect<Uint8Array, unknown> = random() < 0.5
                ? connection.readExactly(7)
                : Effect.map(connection.read, (chunk) => (chunk._tag === "Some" ? chunk.value : new Uint8Array(0)))
              const exit = yield* race("read", read)
              let received = Exit.isSuccess(exit) ? Buffer.from(exit.value).toString() : ""
              while (received.length < message.length) {
                const rest = yield* connection.readExactly(message.length - received.length).pipe(Effect.either)
                if (rest._tag === "Left") break
                received += Buffer.from(rest.right).toString()
              }
              if (received !== message) bytesLost++
            }))
            break
          }
          case 2: {
            yield* Effect.scoped(Effect.gen(function*() {
              const connection = yield* Tcp.connect(target)
              yield* race("write", connection.write(Buffer.alloc(4 * 1024 * 1024)))
            }))
            break
          }
          case 3: {
            // A server shut down at a random moment: its handlers are interrupted, and the client
            // must see the end of the stream or a reset, never a hang.
            const scope = yield* Scope.make()
            const shortLived = yield* Server.serve({ port: 0, drainTimeout: 0 }, (connection) =>
              Stream.runDrain(connection.stream)).pipe(Scope.extend(scope))
            yield* Effect.scoped(Effect.gen(function*() {
              const connection = yield* Tcp.connect({
                host: shortLived.address.host,
                port: shortLived.address.port,
                readTimeout: "5 seconds"
              })
              yield* connection.write("hello")
              yield* pause()
              const stats = yield* shortLived.stats
              if (stats.active > 0) interrupted.handler!++
              else completed.handler!++
              yield* Scope.close(scope, Exit.void)
              const end = yield* connection.read.pipe(Effect.either)
              if (end._tag === "Left" && end.left._tag === "ReadTimeout") hanging++
            }))
            break
          }
        }
      }
    }).pipe(Effect.scoped, Effect.supervised(supervisor), Effect.provide(NodeTcp.layer), Effect.orDie)

    for (let turn = 0; turn < 200; turn++) {
      const now = census()
      if (now.sockets <= before.sockets && now.timers <= before.timers) break
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 1)))
    }
    const after = census()
    const alive = yield* supervisor.value
    return {
      iterations: options.iterations,
      interrupted,
      completed,
      seconds: (Date.now() - started) / 1000,
      invariants: {
        bytesLostOrReordered: bytesLost,
        clientsLeftHanging: hanging,
        socketsLeftOpen: Math.max(0, after.sockets - before.sockets),
        timersLeft: Math.max(0, after.timers - before.timers),
        fibersLeftRunning: alive.length
      }
    }
  })

