/**
 * Health checks: a request/response probe with a deadline (the seed's `PING` -> `PONG`), and a
 * heartbeat that probes a connection on a schedule for as long as it lives and closes it when the
 * peer stops answering: half-open connection detection.
 *
 * @since 0.1.0
 */
import type * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import type * as Option from "effect/Option"
import type * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import type { Connection } from "./Connection.js"
import * as internal from "./internal/health.js"
import type * as TcpError from "./TcpError.js"

/**
 * Why a health check failed:
 *
 * - `Timeout`: no complete reply within the deadline (a stalled or vanished peer).
 * - `WrongReply`: a reply arrived but is not the expected one (another protocol, or an
 *   exchange out of step).
 * - `ConnectionError`: the connection itself failed, with its typed error.
 *
 * @since 0.1.0
 * @category models
 */
export const HealthCheckReason: typeof internal.HealthCheckReason = internal.HealthCheckReason

/**
 * @since 0.1.0
 * @category models
 */
export type HealthCheckReason = typeof HealthCheckReason.Type

/**
 * A health check failed; `reason` says how. After any failure the connection's byte stream is out
 * of step (a late reply may still arrive), so the connection should be closed, as the heartbeat
 * and the pool do. `transient` is true for a timeout and for a transient connection error.
 *
 * @since 0.1.0
 * @category errors
 */
export const HealthCheckFailed: typeof internal.HealthCheckFailed = internal.HealthCheckFailed

/**
 * A health check failed; `reason` says how, `transient` whether a new connection may succeed.
 *
 * @since 0.1.0
 * @category errors
 */
export type HealthCheckFailed = internal.HealthCheckFailed

/**
 * A health check of a connection: succeeds when the peer answered as expected, in time.
 *
 * @since 0.1.0
 * @category models
 */
export type Probe = (connection: Connection) => Effect.Effect<void, HealthCheckFailed>

/**
 * Options of {@link probe}.
 *
 * @since 0.1.0
 * @category models
 */
export interface ProbeOptions {
  /** What to send. Default `"PING"`. */
  readonly request?: Uint8Array | string
  /**
   * The reply expected: exact bytes (read with `readExactly` of their length), or a predicate on
   * the reply that `readReply` returns. Default `"PONG"`.
   */
  readonly expect?: Uint8Array | string | ((reply: Uint8Array) => boolean)
  /**
   * How to read the reply. Default: as many bytes as expected, or for a predicate the next bytes
   * that arrive (like `recv`). Use `readUntil("\n")` for a line protocol.
   */
  readonly readReply?: (connection: Connection) => Effect.Effect<Uint8Array, TcpError.TcpError>
  /**
   * Deadline for sending the request and reading the whole reply. Default 1 second (the seed's).
   * NaN, a negative duration (`-1`, `"-5 seconds"`, `[-5, 0]`) or one that does not parse fails
   * `probe` with `InvalidOptions`.
   */
  readonly timeout?: Duration.DurationInput
}

/**
 * A request/response probe: sends `request`, reads the reply and compares it, all within
 * `timeout`. Building it is an Effect that fails with `InvalidOptions` for a bad option (a
 * timeout that is not a finite, non-negative duration, a request that is not bytes): no
 * constructor of this library throws.
 *
 * Interruption: an interrupted probe may leave its request sent and its reply unread; close the
 * connection (or do not reuse it for a request/response exchange).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { HealthCheck, NodeTcp, Tcp } from "effect-tcp"
 *
 * const program = Effect.gen(function*() {
 *   // A line protocol: "HEALTH?\n" must be answered by a line starting "+OK" within 500 ms.
 *   const check = yield* HealthCheck.probe({
 *     request: "HEALTH?\n",
 *     expect: (reply) => Buffer.from(reply).toString().startsWith("+OK"),
 *     readReply: (connection) => connection.readUntil("\n"),
 *     timeout: "500 millis"
 *   })
 *   const connection = yield* Tcp.connect({ host: "localhost", port: 7000 })
 *   yield* check(connection)
 * }).pipe(
 *   Effect.catchTag("HealthCheckFailed", (e) => Effect.logWarning(e.message)),
 *   Effect.scoped,
 *   Effect.provide(NodeTcp.layer)
 * )
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const probe: (options?: ProbeOptions) => Effect.Effect<Probe, TcpError.InvalidOptions> = internal.probe

/**
 * The seed's health check: sends `PING` (no line ending), expects exactly the 4 bytes `PONG`
 * within 1 second. For Redis, use {@link redisPing}.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { HealthCheck, NodeTcp, Tcp } from "effect-tcp"
 *
 * const healthy = Effect.gen(function*() {
 *   const connection = yield* Tcp.connect({ host: "localhost", port: 8080 })
 *   return yield* HealthCheck.ping(connection).pipe(Effect.as(true), Effect.orElseSucceed(() => false))
 * }).pipe(Effect.scoped, Effect.provide(NodeTcp.layer))
 * ```
 *
 * @since 0.1.0
 * @category probes
 */
export const ping: Probe = internal.ping

/**
 * Redis's health check (and that of servers speaking its protocol, RESP: Valkey, KeyDB, ...):
 * sends `PING` as a RESP command and expects the line `+PONG` (ending in CRLF) within 1 second.
 * An error reply, such as `-NOAUTH Authentication required.` from a server that wants a
 * password, fails with `WrongReply` showing the whole line. For another deadline, build the same
 * check with {@link probe}: `{ request: "PING\r\n", expect: "+PONG", readReply: (c) => c.readUntil("\r\n"), timeout }`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { ConnectionPool, HealthCheck, NodeTcp } from "effect-tcp"
 *
 * const program = Effect.gen(function*() {
 *   const pool = yield* ConnectionPool.make({ host: "localhost", port: 6379, healthCheck: HealthCheck.redisPing })
 *   return yield* pool.use((connection) =>
 *     Effect.zipRight(connection.write("INCR visits\r\n"), connection.readUntil("\r\n"))
 *   )
 * }).pipe(Effect.scoped, Effect.provide(NodeTcp.layer))
 * ```
 *
 * @since 0.1.0
 * @category probes
 */
export const redisPing: Probe = internal.redisPing

/**
 * Options of {@link heartbeat}.
 *
 * @since 0.1.0
 * @category models
 */
export interface HeartbeatOptions {
  /** The check to run. Default {@link ping}. */
  readonly probe?: Probe
  /**
   * When to run it: the first probe runs after the schedule's first delay. Default every
   * 10 seconds (`Schedule.spaced("10 seconds")`).
   */
  readonly schedule?: Schedule.Schedule<unknown, unknown>
}

/**
 * A running heartbeat (see {@link heartbeat}).
 *
 * @since 0.1.0
 * @category models
 */
export interface Heartbeat {
  /**
   * Runs `effect` (your request/response exchange) with the connection to itself: probes wait
   * until it is done, so their bytes never interleave with yours. Fails with `HealthCheckFailed`
   * without running `effect` once the heartbeat has found the peer dead. An exchange interrupted
   * midway leaves the stream out of step: the next probe then fails and closes the connection.
   */
  readonly exclusive: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | HealthCheckFailed, R>
  /** The failure that stopped the heartbeat, if it has. */
  readonly failure: Effect.Effect<Option.Option<HealthCheckFailed>>
  /** Waits until the heartbeat finds the peer dead (it may never). */
  readonly awaitFailure: Effect.Effect<HealthCheckFailed>
}

/**
 * Probes `connection` on a schedule for the life of the scope, in a fiber forked in it. The
 * first failed probe (a timeout, a wrong reply, a connection error) is logged at Warning and
 * closes the connection: operations on it then fail with `SocketClosed`, `exclusive` fails with
 * the `HealthCheckFailed`, and `awaitFailure` completes with it. One failure suffices because
 * after it the stream is out of step. A connection its owner closed ends the heartbeat quietly.
 *
 * This finds half-open connections (a peer that crashed or vanished without a FIN or RST) while
 * the connection is idle, which is when nothing else would. While an `exclusive` exchange runs,
 * the probe waits: the exchange's own deadline (`readTimeout`) covers that time.
 *
 * Takes the connection first or last: `heartbeat(connection, options)`, or `heartbeat(options)`
 * in a pipe (`Effect.flatMap(connect, HealthCheck.heartbeat(options))`).
 *
 * @example
 * ```ts
 * import { Effect, Schedule } from "effect"
 * import { HealthCheck, NodeTcp, Tcp } from "effect-tcp"
 *
 * const program = Effect.gen(function*() {
 *   const connection = yield* Tcp.connect({ host: "localhost", port: 8080 })
 *   const heartbeat = yield* HealthCheck.heartbeat(connection, { schedule: Schedule.spaced("5 seconds") })
 *   // Fails with HealthCheckFailed once the peer stops answering PING.
 *   yield* heartbeat.exclusive(Effect.zipRight(connection.write("GET\n"), connection.readUntil("\n")))
 * }).pipe(Effect.scoped, Effect.provide(NodeTcp.layer))
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const heartbeat: {
  (options?: HeartbeatOptions): (connection: Connection) => Effect.Effect<Heartbeat, never, Scope.Scope>
  (connection: Connection, options?: HeartbeatOptions): Effect.Effect<Heartbeat, never, Scope.Scope>
} = internal.heartbeat
