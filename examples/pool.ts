/**
 * A connection pool with PING/PONG health checks serving concurrent requests while its server
 * is restarted.
 *
 *   npx tsx examples/pool.ts
 *
 * The program runs the server itself (a line protocol: `PING` is answered `PONG`, anything else
 * upper-cased) and 6 workers sending 10 requests each through a pool of at most 3 connections.
 * Meanwhile the server is stopped (its connections closed) and started again on the same port.
 * The pool drops the dead connections on its own, the requests caught by the outage are retried
 * with backoff, and every one is answered. Pool stats are printed at each step.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Exit, Scope } from "effect"
import { type Connection, ConnectionPool, HealthCheck, NodeTcp, Retry, Server } from "effect-tcp"
import * as ExampleLogger from "./logger.js"

const lineServer = (connection: Connection.Connection) =>
  Effect.gen(function*() {
    for (;;) {
      const line = Buffer.from(yield* connection.readUntil("\n")).toString()
      yield* connection.write(line === "PING" ? "PONG\n" : `${line.toUpperCase()}\n`)
    }
  }).pipe(Effect.catchTag("UnexpectedEof", () => Effect.void)) // the client closed: done

/** Starts the server on `port` in a scope of its own, so that it can be stopped. */
const startServer = (port: number) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const server = yield* Server.serve({ port, drainTimeout: 0 }, lineServer).pipe(Scope.extend(scope))
    return { port: server.address.port, stop: Scope.close(scope, Exit.void) }
  })

const program = Effect.gen(function*() {
  let server = yield* startServer(0)
  const port = server.port
  yield* Console.log(`server listening on 127.0.0.1:${port}`)

  const pool = yield* ConnectionPool.make({
    host: "127.0.0.1",
    port,
    max: 3,
    readTimeout: "2 seconds",
    acquireTimeout: "5 seconds",
    // A new connection, and one idle for 100 ms or more, is checked before it is lent.
    healthCheck: yield* HealthCheck.probe({ request: "PING\n", expect: "PONG\n", timeout: "500 millis" }),
    validateAfterIdle: "100 millis"
  })
  const printStats = (when: string) =>
    Effect.flatMap(pool.stats, (s) =>
      Console.log(
        `${when}: idle=${s.idle} inUse=${s.inUse} waiting=${s.waiting} connecting=${s.connecting} opened=${s.opened} closed=${s.closed}`
      ))

  // A request borrows a connection for one exchange; one caught by the outage is retried.
  const request = (worker: number, n: number) =>
    pool.use((connection) =>
      Effect.gen(function*() {
        yield* connection.write(`worker ${worker} request ${n}\n`)
        return Buffer.from(yield* connection.readUntil("\n")).toString()
      })
    ).pipe(Retry.retryTransient(Retry.exponential({ base: "100 millis", retries: 6 })))

  const worker = (id: number) =>
    Effect.forEach(Array.from({ length: 10 }, (_, n) => n), (n) =>
      request(id, n).pipe(Effect.zipLeft(Effect.sleep("40 millis")))).pipe(Effect.annotateLogs({ worker: id }))

  const restart = Effect.gen(function*() {
    yield* Effect.sleep("150 millis")
    yield* printStats("before the restart")
    yield* server.stop
    yield* Console.log("server stopped")
    yield* Effect.sleep("50 millis")
    yield* printStats("server down")
    yield* Effect.sleep("250 millis")
    server = yield* startServer(port)
    yield* Console.log("server started again")
  })

  const [answers] = yield* Effect.all([
    Effect.forEach([1, 2, 3, 4, 5, 6], worker, { concurrency: "unbounded" }),
    restart
  ], { concurrency: "unbounded" })
  const all = answers.flat()
  const right = all.filter((answer, i) => answer === `WORKER ${Math.floor(i / 10) + 1} REQUEST ${i % 10}`).length
  yield* Console.log(`${right} of ${all.length} requests answered correctly`)
  yield* printStats("at the end")
  yield* server.stop
}).pipe(
  Effect.scoped,
  Effect.tapError((error) => Console.error(`${error._tag}: ${error.message}`)),
  Effect.provide(NodeTcp.layer),
  Effect.provide(ExampleLogger.layer)
)

NodeRuntime.runMain(program, { disableErrorReporting: true, disablePrettyLogger: true })
