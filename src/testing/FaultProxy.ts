/**
 * A real TCP proxy on 127.0.0.1 that injects faults between a client and its upstream: latency,
 * bandwidth limits, writes sliced into small pieces, resets and closes after N bytes, stalls
 * (a half-open peer), refused connections and a connection limit. Each fault applies per
 * direction with a probability, can be changed while the proxy runs, and is drawn from a seeded
 * generator, so a failing run can be replayed.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import type { Connection } from "../Connection.js"
import * as Endpoint from "../Endpoint.js"
import * as Options from "../internal/options.js"
import { seeded } from "../internal/random.js"
import * as Server from "../Server.js"
import * as Tcp from "../Tcp.js"
import type { InvalidOptions, ListenError } from "../TcpError.js"

/**
 * A probability from 0 (never) to 1 (always, the default).
 *
 * @since 0.1.0
 * @category schemas
 */
export const Probability = Schema.Number.pipe(
  Schema.between(0, 1, { message: () => "a probability is a number from 0 to 1" })
)

const Delay = Options.DurationOption
const Bytes = Schema.Int.pipe(Schema.greaterThanOrEqualTo(0, { message: () => "a byte count is a non-negative integer" }))
const PositiveBytes = Schema.Int.pipe(
  Schema.greaterThanOrEqualTo(1, { message: () => "a size is an integer of at least 1" })
)

/**
 * Faults applied to the bytes flowing in one direction.
 *
 * @since 0.1.0
 * @category schemas
 */
export const DirectionFaults = Schema.Struct({
  /** Delay each chunk by `delay` plus a uniform random part of `jitter`. */
  latency: Schema.optional(Schema.Struct({
    delay: Delay,
    jitter: Schema.optional(Delay),
    probability: Schema.optional(Probability)
  })),
  /** At most this many bytes per second. */
  bandwidth: Schema.optional(Schema.Struct({ bytesPerSecond: PositiveBytes })),
  /** Cut each chunk into pieces of at most `maxBytes`, `delay` apart: partial sends and receives. */
  slice: Schema.optional(Schema.Struct({
    maxBytes: PositiveBytes,
    delay: Schema.optional(Delay),
    probability: Schema.optional(Probability)
  })),
  /**
   * After `bytes` bytes, reset both sides (RST). Drawn once per connection. The client sees
   * `ConnectionReset`; on Linux a reset that arrives while the client still has unread bytes reads
   * as the end of the stream instead, and its next write fails with `ConnectionReset`.
   */
  resetAfter: Schema.optional(Schema.Struct({ bytes: Bytes, probability: Schema.optional(Probability) })),
  /** After `bytes` bytes, close both sides (FIN). Drawn once per connection. */
  closeAfter: Schema.optional(Schema.Struct({ bytes: Bytes, probability: Schema.optional(Probability) })),
  /**
   * After `afterBytes` bytes (default 0), stop forwarding but keep the connection open: the
   * receiver waits for bytes that never come, as with a peer that vanished. Drawn once per connection.
   */
  stall: Schema.optional(Schema.Struct({ afterBytes: Schema.optional(Bytes), probability: Schema.optional(Probability) }))
})

/**
 * @since 0.1.0
 * @category models
 */
export type DirectionFaults = typeof DirectionFaults.Encoded

/**
 * The faults of a proxy. Empty: a transparent proxy.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Faults = Schema.Struct({
  /** Bytes from the client to the upstream. */
  toUpstream: Schema.optional(DirectionFaults),
  /** Bytes from the upstream to the client. */
  toClient: Schema.optional(DirectionFaults),
  /** Close new connections at once, with this probability each. */
  refuse: Schema.optional(Schema.Struct({ probability: Schema.optional(Probability) })),
  /** Close new connections at once while this many are open. */
  maxConnections: Schema.optional(PositiveBytes)
})

/**
 * @since 0.1.0
 * @category models
 */
export type Faults = typeof Faults.Encoded

/** The upstream a connect can reach (port 0 is not one) and a seed the generator takes whole. */
const ProxyTarget = Schema.Struct({
  upstream: Schema.Union(
    Schema.Struct({
      host: Endpoint.Host,
      port: Schema.Number.pipe(
        Schema.filter((port) => Number.isInteger(port) && port >= 1 && port <= 65535, {
          message: (issue) => `an upstream port is an integer from 1 to 65535, got ${String(issue.actual)}`
        })
      )
    }),
    Schema.Struct({ path: Endpoint.Path })
  ),
  seed: Schema.Number.pipe(
    Schema.filter((seed) => Number.isInteger(seed) && seed >= 0 && seed <= 0xffffffff, {
      message: (issue) => `a seed is an integer from 0 to 2^32 - 1, got ${String(issue.actual)}`
    })
  )
})

type ValidFaults = typeof Faults.Type
type ValidDirection = typeof DirectionFaults.Type

/**
 * Every kind of fault, as counted in `stats.faults`.
 *
 * @since 0.1.0
 * @category models
 */
export type FaultKind = "latency" | "bandwidth" | "slice" | "reset" | "close" | "stall" | "refuse" | "limit"

/**
 * @since 0.1.0
 * @category models
 */
export interface FaultProxyStats {
  /** Connections accepted since the start (refused ones included). */
  readonly connections: number
  /** Connections open now. */
  readonly active: number
  readonly bytesToUpstream: number
  readonly bytesToClient: number
  /** How often each fault fired. */
  readonly faults: Readonly<Record<FaultKind, number>>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface FaultProxyOptions {
  /** Where the proxy forwards to: a host and port, or a Unix domain socket's path. */
  readonly upstream: { readonly host: string; readonly port: number } | { readonly path: string }
  /** Where the proxy listens; default 127.0.0.1 and a free port. */
  readonly host?: string
  readonly port?: number
  /** A Unix domain socket's path to listen on instead of a host and port. */
  readonly path?: string
  /** Seed of the fault draws, an integer from 0 to 2^32 - 1; the same seed gives each connection the same draws. Default 1. */
  readonly seed?: number
  readonly faults?: Faults
}

/**
 * A running proxy: point the client under test at `address`.
 *
 * @since 0.1.0
 * @category models
 */
export interface FaultProxy<A extends Endpoint.Endpoint = Endpoint.TcpEndpoint> {
  /** Where it listens: a `TcpEndpoint`, or a `UnixEndpoint` when `path` was given. */
  readonly address: A
  readonly faults: Effect.Effect<Faults>
  /** Replaces the faults; connections already open see the new ones from their next chunk. */
  readonly setFaults: (faults: Faults) => Effect.Effect<void, InvalidOptions>
  readonly stats: Effect.Effect<FaultProxyStats>
}

const millis = (input: Duration.Duration | undefined) => (input === undefined ? 0 : Duration.toMillis(input))

/**
 * Starts a fault-injecting proxy in front of `options.upstream`; it and every connection through
 * it are closed when the scope closes.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { NodeTcp, Tcp } from "effect-tcp"
 * import { FaultProxy } from "effect-tcp/testing"
 *
 * // Does my client survive a server that resets after 100 bytes?
 * const test = Effect.gen(function*() {
 *   const proxy = yield* FaultProxy.make({
 *     upstream: { host: "127.0.0.1", port: 6379 },
 *     faults: { toClient: { resetAfter: { bytes: 100 } } }
 *   })
 *   const connection = yield* Tcp.connect({ host: proxy.address.host, port: proxy.address.port })
 *   // ... exercise the client, then assert on the typed errors and on yield* proxy.stats
 * }).pipe(Effect.scoped, Effect.provide(NodeTcp.layer))
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: {
  (options: FaultProxyOptions & { readonly path: string }): Effect.Effect<
    FaultProxy<Endpoint.UnixEndpoint>,
    ListenError,
    Tcp.Tcp | Scope.Scope
  >
  (options: FaultProxyOptions): Effect.Effect<FaultProxy, ListenError, Tcp.Tcp | Scope.Scope>
} = (options: FaultProxyOptions): Effect.Effect<FaultProxy<any>, ListenError, Tcp.Tcp | Scope.Scope> =>
  Effect.gen(function*() {
    const { seed, upstream } = yield* Options.validate(ProxyTarget, "listen", {
      seed: options.seed ?? 1,
      upstream: Predicate.isObject(options.upstream)
        ? "path" in options.upstream
          ? { path: options.upstream.path }
          : { host: options.upstream.host, port: options.upstream.port }
        : options.upstream
    })
    let faults: ValidFaults = yield* Options.validate(Faults, "listen", options.faults ?? {})
    let encodedFaults: Faults = options.faults ?? {}
    let connections = 0
    let active = 0
    let bytesToUpstream = 0
    let bytesToClient = 0
    const fired: Record<FaultKind, number> = {
      latency: 0,
      bandwidth: 0,
      slice: 0,
      reset: 0,
      close: 0,
      stall: 0,
      refuse: 0,
      limit: 0
    }

    const pump = (
      direction: "toUpstream" | "toClient",
      from: Connection,
      to: Connection,
      random: () => number,
      both: { readonly close: Effect.Effect<void>; readonly reset: Effect.Effect<void> }
    ): Effect.Effect<void> => {
      // Per-connection faults are drawn once per configuration object.
      const draws = new WeakMap<object, boolean>()
      const drawn = (config: { readonly probability?: number | undefined } | undefined) => {
        if (config === undefined) return false
        let hit = draws.get(config)
        if (hit === undefined) {
          hit = random() < (config.probability ?? 1)
          draws.set(config, hit)
        }
        return hit
      }
      let forwarded = 0
      const count = (n: number) => {
        forwarded += n
        if (direction === "toUpstream") bytesToUpstream += n
        else bytesToClient += n
      }
      const send = (chunk: Uint8Array, current: ValidDirection): Effect.Effect<void, unknown> =>
        Effect.gen(function*() {
          const latency = current.latency
          if (latency !== undefined && random() < (latency.probability ?? 1)) {
            fired.latency++
            yield* Effect.sleep(Duration.millis(millis(latency.delay) + random() * millis(latency.jitter)))
          }
          const slice = current.slice
          if (slice !== undefined && chunk.length > slice.maxBytes && random() < (slice.probability ?? 1)) {
            fired.slice++
            for (let offset = 0; offset < chunk.length; offset += slice.maxBytes) {
              if (offset > 0 && slice.delay !== undefined) yield* Effect.sleep(slice.delay)
              const piece = chunk.subarray(offset, offset + slice.maxBytes)
              yield* to.write(piece)
              count(piece.length)
            }
          } else {
            yield* to.write(chunk)
            count(chunk.length)
          }
          const bandwidth = current.bandwidth
          if (bandwidth !== undefined) {
            fired.bandwidth++
            yield* Effect.sleep(Duration.millis((chunk.length / bandwidth.bytesPerSecond) * 1000))
          }
        })
      const discardUntilEnd: Effect.Effect<void, unknown> = Effect.flatMap(
        from.read,
        (chunk) => (Option.isNone(chunk) ? Effect.void : discardUntilEnd)
      )
      const loop: Effect.Effect<void, unknown> = Effect.suspend(() => {
        const current = faults[direction] ?? {}
        if (drawn(current.stall) && forwarded >= (current.stall?.afterBytes ?? 0)) {
          fired.stall++
          return discardUntilEnd
        }
        return Effect.flatMap(from.read, (next) => {
          if (Option.isNone(next)) return to.endWrite
          // The faults may have changed while the read waited.
          const current = faults[direction] ?? {}
          let chunk = next.value
          // The first byte limit this connection drew, if any, cuts the chunk short.
          const reset = drawn(current.resetAfter) ? current.resetAfter!.bytes : Infinity
          const close = drawn(current.closeAfter) ? current.closeAfter!.bytes : Infinity
          const limit = Math.min(reset, close)
          if (forwarded + chunk.length < limit) return Effect.zipRight(send(chunk, current), loop)
          chunk = chunk.subarray(0, Math.max(0, limit - forwarded))
          return Effect.gen(function*() {
            if (chunk.length > 0) yield* send(chunk, current)
            if (reset <= close) {
              fired.reset++
              yield* both.reset
            } else {
              fired.close++
              yield* both.close
            }
          })
        })
      })
      // A failure on either side ends the whole proxied connection the same way for the other side.
      return Effect.catchAll(loop, (error) =>
        (error as { readonly _tag?: string })._tag === "ConnectionReset" ? both.reset : both.close)
    }

    const handle = (client: Connection) =>
      Effect.gen(function*() {
        const index = connections++
        const random = seeded(seed, index, 0)
        const current = faults
        if (current.refuse !== undefined && random() < (current.refuse.probability ?? 1)) {
          fired.refuse++
          return yield* client.close
        }
        if (current.maxConnections !== undefined && active >= current.maxConnections) {
          fired.limit++
          return yield* client.close
        }
        active++
        yield* Effect.addFinalizer(() => Effect.sync(() => active--))
        const server = yield* Effect.either(Tcp.connect(upstream))
        if (server._tag === "Left") return yield* client.reset
        const both = {
          close: Effect.zipRight(client.close, server.right.close),
          reset: Effect.zipRight(client.reset, server.right.reset)
        }
        yield* Effect.all([
          pump("toUpstream", client, server.right, seeded(seed, index, 1), both),
          pump("toClient", server.right, client, seeded(seed, index, 2), both)
        ], { concurrency: 2, discard: true })
      })

    const server = yield* Server.serve(
      options.path !== undefined
        // A host or port beside the path: serve's InvalidOptions says to pick one.
        ? { path: options.path, host: options.host, port: options.port, drainTimeout: 0 } as Server.UnixServeOptions
        : { host: options.host ?? "127.0.0.1", port: options.port ?? 0, drainTimeout: 0 },
      handle
    )

    return {
      address: server.address,
      faults: Effect.sync(() => encodedFaults),
      setFaults: (next) =>
        Effect.map(Options.validate(Faults, "listen", next), (valid) => {
          faults = valid
          encodedFaults = next
        }),
      stats: Effect.sync((): FaultProxyStats => ({
        connections,
        active,
        bytesToUpstream,
        bytesToClient,
        faults: { ...fired }
      }))
    } satisfies FaultProxy<Endpoint.Endpoint>
  })
