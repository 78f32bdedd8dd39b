/**
 * Chaos: many concurrent clients doing request/response through a FaultProxy that injects random
 * faults, retrying what is transient. Every request must end with a verified response or a typed
 * error, and no response may ever be taken for another request's.
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as Supervisor from "effect/Supervisor"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import type { Connection } from "../src/Connection.js"
import * as NodeTcp from "../src/NodeTcp.js"
import * as Server from "../src/Server.js"
import * as Tcp from "../src/Tcp.js"
import * as TcpError from "../src/TcpError.js"
import { FaultProxy } from "../src/testing/index.js"

export interface ChaosOptions {
  readonly requests: number
  readonly clients: number
  readonly seed: number
  readonly faults?: FaultProxy.Faults
}

export interface ChaosFigures {
  readonly requests: number
  readonly verified: number
  /** Requests that ended with a typed error after their retries, by tag. */
  readonly failedByTag: Record<string, number>
  /** Transient errors met along the way and retried, by tag. */
  readonly retriedByTag: Record<string, number>
  readonly faults: Record<string, number>
  readonly proxyConnections: number
  readonly seconds: number
  /** Time from the first attempt of a request to its verified response, retries included. */
  readonly latencyMillis: { readonly p50: number; readonly p99: number; readonly max: number }
  readonly invariants: {
    readonly mismatchedResponses: number
    readonly unresolvedRequests: number
    readonly uncaughtExceptions: number
    readonly defects: number
    readonly socketsLeftOpen: number
    readonly fileDescriptorsLeftOpen: number
    readonly fibersLeftRunning: number
    readonly serverDown: number
  }
}

const checksum = (payload: string) => createHash("sha1").update(payload).digest("hex").slice(0, 16)

/** The server: for each line `id payload`, answers `id checksum(payload)`. */
const answer = (connection: Connection) =>
  Effect.gen(function*() {
    for (;;) {
      const line = yield* connection.readUntil("\n", { maxFrameBytes: 4096 }).pipe(
        Effect.catchTag("UnexpectedEof", (error) => (error.received === 0 ? Effect.succeed(null) : error))
      )
      if (line === null) return
      const text = Buffer.from(line).toString()
      const space = text.indexOf(" ")
      yield* connection.write(`${text.slice(0, space)} ${checksum(text.slice(space + 1))}\n`)
    }
  })

export const defaultFaults: FaultProxy.Faults = {
  toClient: {
    slice: { maxBytes: 7, delay: 0, probability: 0.2 },
    latency: { delay: 0, jitter: 3, probability: 0.1 },
    resetAfter: { bytes: 700, probability: 0.08 },
    closeAfter: { bytes: 1100, probability: 0.05 },
    stall: { afterBytes: 400, probability: 0.03 }
  },
  toUpstream: {
    slice: { maxBytes: 5, probability: 0.2 },
    resetAfter: { bytes: 900, probability: 0.05 }
  },
  refuse: { probability: 0.03 }
}

const percentiles = (samples: Array<number>) => {
  const sorted = [...samples].sort((a, b) => a - b)
  const at = (q: number) => Math.round((sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0) * 100) / 100
  return { p50: at(0.5), p99: at(0.99), max: at(1) }
}

/** Faults frequent enough that each kind fires several times even in a short run. */
export const frequentFaults: FaultProxy.Faults = {
  toClient: {
    slice: { maxBytes: 7, delay: 0, probability: 0.3 },
    latency: { delay: 0, jitter: 3, probability: 0.2 },
    resetAfter: { bytes: 700, probability: 0.15 },
    closeAfter: { bytes: 1100, probability: 0.15 },
    stall: { afterBytes: 200, probability: 0.15 }
  },
  toUpstream: {
    slice: { maxBytes: 5, probability: 0.2 },
    resetAfter: { bytes: 900, probability: 0.1 }
  },
  refuse: { probability: 0.15 }
}

const countResources = () => {
  let sockets = 0
  for (const resource of process.getActiveResourcesInfo()) {
    if (resource === "TCPSocketWrap" || resource === "TCPServerWrap" || resource === "TCPConnectWrap") sockets++
  }
  return sockets
}
const countFds = () => fs.readdirSync("/proc/self/fd").length

export const runChaos = (options: ChaosOptions): Effect.Effect<ChaosFigures, TcpError.ListenError> =>
  Effect.gen(function*() {
    let uncaught = 0
    const onUncaught = () => {
      uncaught++
    }
    process.on("uncaughtException", onUncaught)
    const socketsBefore = countResources()
    const fdsBefore = countFds()
    const supervisor = yield* Supervisor.track
    const started = Date.now()

    let verified = 0
    let mismatched = 0
    let defects = 0
    const failedByTag: Record<string, number> = {}
    const retriedByTag: Record<string, number> = {}
    let resolved = 0
    const latencies: Array<number> = []

    const run = Effect.gen(function*() {
      const upstream = yield* Server.serve({ port: 0, drainTimeout: 0 }, answer)
      const proxy = yield* FaultProxy.make({ upstream: upstream.address, seed: options.seed, faults: options.faults ?? defaultFaults })
      const perClient = Math.ceil(options.requests / options.clients)

      const client = (clientIndex: number) =>
        Effect.gen(function*() {
          // Each client keeps one connection while it works, and opens a new one after an error.
          let current: { readonly connection: Connection; readonly scope: Scope.CloseableScope } | undefined
          const connection = Effect.suspend(() => {
            if (current !== undefined) return Effect.succeed(current.connection)
            return Effect.flatMap(Scope.make(), (scope) =>
              Tcp.connect({
                host: proxy.address.host,
                port: proxy.address.port,
                connectTimeout: "2 seconds",
                readTimeout: "1 second",
                writeTimeout: "1 second"
              }).pipe(
                Scope.extend(scope),
                Effect.tap((connection) => Effect.sync(() => (current = { connection, scope }))),
                Effect.onError(() => Scope.close(scope, Exit.void))
              ))
          })
          const drop = Effect.suspend(() => {
            const closing = current
            current = undefined
            return closing === undefined ? Effect.void : Scope.close(closing.scope, Exit.void)
          })
          const first = clientIndex * perClient
          const last = Math.min(options.requests, first + perClient)
          for (let id = first; id < last; id++) {
            const payload = `client ${clientIndex} request ${id} ${"x".repeat(id % 97)}`
            const attempt = Effect.gen(function*() {
              const open = yield* connection
              yield* open.write(`${id} ${payload}\n`)
              return Buffer.from(yield* open.readUntil("\n", { maxFrameBytes: 256 })).toString()
            }).pipe(
              Effect.tapError((error) =>
                Effect.zipRight(
                  drop,
                  Effect.sync(() => {
                    if (TcpError.isTransient(error)) retriedByTag[error._tag] = (retriedByTag[error._tag] ?? 0) + 1
                  })
                )
              ),
              Effect.retry({
                schedule: Schedule.exponential("2 millis").pipe(Schedule.intersect(Schedule.recurs(8))),
                while: TcpError.isTransient
              })
            )
            const sent = performance.now()
            const exit = yield* Effect.exit(attempt)
            resolved++
            if (Exit.isSuccess(exit)) {
              latencies.push(performance.now() - sent)
              if (exit.value === `${id} ${checksum(payload)}`) verified++
              else mismatched++
            } else {
              const failure = Cause.failureOption(exit.cause)
              if (Option.isSome(failure)) {
                failedByTag[failure.value._tag] = (failedByTag[failure.value._tag] ?? 0) + 1
              } else {
                defects++
              }
            }
          }
          yield* drop
        })

      yield* Effect.forEach(Array.from({ length: options.clients }, (_, i) => i), client, {
        concurrency: "unbounded",
        discard: true
      })

      // The server must still be up: one exchange without the proxy.
      const direct = yield* Effect.scoped(
        Effect.gen(function*() {
          const connection = yield* Tcp.connect({ host: upstream.address.host, port: upstream.address.port })
          yield* connection.write("final check\n")
          return Buffer.from(yield* connection.readUntil("\n")).toString()
        })
      ).pipe(Effect.either)
      const stats = yield* proxy.stats
      return { serverUp: direct._tag === "Right" && direct.right === `final ${checksum("check")}`, stats }
    }).pipe(Effect.scoped, Effect.supervised(supervisor), Effect.provide(NodeTcp.layer))

    const { serverUp, stats } = yield* run
    const seconds = (Date.now() - started) / 1000
    // Closing completes on later turns of the event loop.
    for (let turn = 0; turn < 100 && countResources() > socketsBefore; turn++) {
      yield* Effect.promise(() => new Promise((resolve) => setImmediate(resolve)))
    }
    process.off("uncaughtException", onUncaught)
    const alive = yield* supervisor.value
    return {
      requests: options.requests,
      verified,
      failedByTag,
      retriedByTag,
      faults: { ...stats.faults },
      proxyConnections: stats.connections,
      seconds,
      latencyMillis: percentiles(latencies),
      invariants: {
        mismatchedResponses: mismatched,
        unresolvedRequests: options.requests - resolved,
        uncaughtExceptions: uncaught,
        defects,
        socketsLeftOpen: Math.max(0, countResources() - socketsBefore),
        fileDescriptorsLeftOpen: Math.max(0, countFds() - fdsBefore),
        fibersLeftRunning: alive.length,
        serverDown: serverUp ? 0 : 1
      }
    }
  })

