/**
 * Connecting to the first of several endpoints that answers: the seed's graceful degradation
 * (primary, then each fallback in turn) or a staggered race (happy eyeballs) in which the losers
 * are closed. When every endpoint fails, one typed error lists each one with its own error.
 *
 * @since 0.1.0
 */
import type * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type { Connection } from "./Connection.js"
import * as internal from "./internal/failover.js"
import type { ConnectOptions, Tcp } from "./Tcp.js"
import type * as TcpError from "./TcpError.js"

/**
 * One endpoint that could not be connected to, with its error.
 *
 * @since 0.1.0
 * @category models
 */
export const EndpointFailure: typeof internal.EndpointFailure = internal.EndpointFailure

/**
 * @since 0.1.0
 * @category models
 */
export type EndpointFailure = typeof EndpointFailure.Type

/**
 * No endpoint could be connected to. `failures` lists every endpoint, in the order given, with
 * the typed error of its attempt. `transient` is true when at least one of them is transient, so
 * that trying the whole list again later may succeed.
 *
 * @since 0.1.0
 * @category errors
 */
export const AllEndpointsFailed: typeof internal.AllEndpointsFailed = internal.AllEndpointsFailed

/**
 * No endpoint could be connected to: `failures` lists each endpoint with its error.
 *
 * @since 0.1.0
 * @category errors
 */
export type AllEndpointsFailed = internal.AllEndpointsFailed

/**
 * Options of {@link connect}: how to choose, and the options of each connect (`connectTimeout`,
 * `readTimeout`, ...), shared by every endpoint.
 *
 * @since 0.1.0
 * @category models
 */
export interface FailoverOptions extends Omit<ConnectOptions, "host" | "port"> {
  /**
   * - `sequential` (default): the first endpoint, and only when it fails the next, and so on.
   *   Set `connectTimeout`: without it an endpoint that drops packets holds up the next for minutes.
   * - `race`: the first endpoint, then the next one each time `attemptDelay` passes without an
   *   outcome or an attempt fails, earlier attempts going on; the first connection wins.
   */
  readonly strategy?: "sequential" | "race"
  /**
   * With `race`: how long an attempt runs alone before the next starts. Default 250 ms (RFC 8305).
   * 0 starts every attempt at once.
   */
  readonly attemptDelay?: Duration.DurationInput
}

/**
 * Connects to the first endpoint that accepts, by `strategy` (see {@link FailoverOptions}); the
 * connection is closed when the scope closes. With `race`, every other attempt is interrupted
 * (its half-open socket destroyed) and every other socket that connected is closed before this
 * returns. Each fallback is logged at Info.
 *
 * Fails with `AllEndpointsFailed` listing each endpoint's error, or with `InvalidOptions` for a
 * bad `strategy` or `attemptDelay` (bad connect options show up as each endpoint's `InvalidOptions`).
 * Interruption closes every socket opened so far.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Failover, NodeTcp, Retry } from "effect-tcp"
 *
 * const program = Effect.gen(function*() {
 *   const connection = yield* Failover.connect(
 *     [{ host: "primary.internal", port: 8080 }, { host: "secondary.internal", port: 8080 }],
 *     { strategy: "race", attemptDelay: "250 millis", connectTimeout: "5 seconds" }
 *   )
 *   yield* Effect.log(`connected to ${connection.remoteAddress}`)
 * }).pipe(
 *   // Try the whole list again, 1 s, 2 s, 4 s later, while some endpoint's failure was transient.
 *   Retry.retryTransient(Retry.exponential()),
 *   Effect.catchTag("AllEndpointsFailed", (e) =>
 *     Effect.forEach(e.failures, ({ endpoint, error }) => Effect.logError(`${endpoint}: ${error.message}`))),
 *   Effect.scoped,
 *   Effect.provide(NodeTcp.layer)
 * )
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const connect: (
  endpoints: ReadonlyArray<{ readonly host: string; readonly port: number } | { readonly path: string }>,
  options?: FailoverOptions
) => Effect.Effect<Connection, AllEndpointsFailed | TcpError.InvalidOptions, Tcp | Scope.Scope> = internal.connect
