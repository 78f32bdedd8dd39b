/**
 * Testing your own client against a misbehaving network with the FaultProxy.
 *
 *   npx tsx examples/fault-proxy.ts
 *
 * An echo server, a FaultProxy in front of it that cuts every answer into 3-byte pieces and
 * resets one connection in two after 20 bytes, and a client that reads whole lines and retries
 * what failed transiently. The client gets every answer right; the proxy's stats show what it did.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Schedule, Stream } from "effect"
import { NodeTcp, Server, Tcp, TcpError } from "effect-tcp"
import { FaultProxy } from "effect-tcp/testing"
import * as ExampleLogger from "./logger.js"

const program = Effect.gen(function*() {
  const upstream = yield* Server.serve({ port: 0 }, (connection) => connection.stream.pipe(Stream.run(connection.sink)))
  const proxy = yield* FaultProxy.make({
    upstream: upstream.address,
    seed: 7,
    faults: {
      toClient: {
        slice: { maxBytes: 3, delay: "1 millis" },
        resetAfter: { bytes: 20, probability: 0.5 }
      }
    }
  })

  // The client under test: one request per connection, a whole line back, retried when transient.
  const request = (line: string) =>
    Effect.gen(function*() {
      const connection = yield* Tcp.connect({ host: proxy.address.host, port: proxy.address.port, readTimeout: "2 seconds" })
      yield* connection.write(`${line}\n`)
      return new TextDecoder().decode(yield* connection.readUntil("\n"))
    }).pipe(
      Effect.scoped,
      Effect.tapError((error) => Effect.log(`"${line}" failed with ${error._tag}, retrying`)),
      Effect.retry({ schedule: Schedule.spaced("10 millis").pipe(Schedule.intersect(Schedule.recurs(10))), while: TcpError.isTransient })
    )

  for (const line of ["a short line", "a line long enough to be reset by the proxy", "another long line, sliced and maybe reset"]) {
    const answer = yield* request(line)
    yield* Console.log(`${answer === line ? "ok" : "WRONG"}: "${answer}"`)
  }
  const stats = yield* proxy.stats
  yield* Console.log(`proxy: ${stats.connections} connections, faults fired: ${JSON.stringify(stats.faults)}`)
}).pipe(Effect.scoped, Effect.provide(NodeTcp.layer), Effect.provide(ExampleLogger.layer))

NodeRuntime.runMain(program, { disableErrorReporting: false, disablePrettyLogger: true })
