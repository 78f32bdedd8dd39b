/**
 * A pool of connections to one server: validation on borrow and in the background, invalidation
 * of a connection whose use failed, an acquire timeout, a bound on waiters and stats. A borrowed
 * connection cannot leak: it is returned or closed whatever happens to its borrower, interruption
 * included.
 *
 * ## How it works
 *
 * The pool keeps its own books, in the manner of bb8 and deadpool: `max` permits handed out first
 * come, first served (one waiter woken per release, so a thousand borrowers waiting for ten
 * connections cost a thousand wake-ups, not a million), an idle list from which the most recently
 * returned connection is lent first (the warmest; the others age out after `idleTimeToLive`), and
 * one state per connection (idle, lent, being validated, closed). Every idle connection has a read
 * parked on it, so a FIN, an RST or stray bytes from the server close it at once.
 *
 * Connects run in the pool's own fibers: a borrower whose `acquireTimeout` passes while its
 * connect is under way stops waiting at once, and the connect goes on (bounded by its own
 * `connectTimeout`); the connection it opens goes to the idle list for the next borrower. So a
 * server slower to accept than `acquireTimeout` still gets connections.
 *
 * A FIN already on its way when a connection is lent cannot be seen: the borrower's read fails
 * with `UnexpectedEof` (and the connection is closed). A protocol that announces a close (HTTP's
 * `Connection: close`) is best served by `invalidate` as soon as it is announced.
 *
 * ## Interruption
 *
 * - Borrowing can be interrupted at any point (waiting, connecting, validating): nothing leaks.
 *   An item obtained too late is returned; a connection whose health check was interrupted is closed.
 * - A connection goes back to the pool only when its use succeeded. A use that failed (with any
 *   error: a `TcpError`, a `TimeoutException` of your `Effect.timeout`, your own protocol error),
 *   died or was interrupted closes its connection, and the pool replaces it: an interrupted write
 *   may have sent part of its bytes and an abandoned read leaves its reply on the way, which the
 *   next borrower would read as the answer to its own request. `keepOnFailure` names the failures
 *   of yours after which the stream is known to be in step.
 * - Giving a connection back is uninterruptible and immediate.
 *
 * @since 0.1.0
 */
import type * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import type { Pipeable } from "effect/Pipeable"
import type * as Scope from "effect/Scope"
import type { Connection } from "./Connection.js"
import type { HealthCheckFailed, Probe } from "./HealthCheck.js"
import * as internal from "./internal/pool.js"
import * as internalErrors from "./internal/poolError.js"
import type { ConnectOptions, Tcp, UnixConnectOptions } from "./Tcp.js"
import type { ConnectError, InvalidOptions } from "./TcpError.js"

/**
 * The type id of a `ConnectionPool`.
 *
 * @since 0.1.0
 * @category symbols
 */
export const ConnectionPoolTypeId: unique symbol = internal.ConnectionPoolTypeId

/**
 * @since 0.1.0
 * @category symbols
 */
export type ConnectionPoolTypeId = typeof ConnectionPoolTypeId

/**
 * Whether `u` is a `ConnectionPool`.
 *
 * @since 0.1.0
 * @category guards
 */
export const isConnectionPool: (u: unknown) => u is ConnectionPool<unknown> = internal.isConnectionPool

/**
 * No connection could be lent within `acquireTimeout`: all of them were in use (or being
 * connected) for that long. The counts are those at the deadline.
 *
 * @since 0.1.0
 * @category errors
 */
export const PoolTimeout: typeof internalErrors.PoolTimeout = internalErrors.PoolTimeout

/**
 * @since 0.1.0
 * @category errors
 */
export type PoolTimeout = internalErrors.PoolTimeout

/**
 * A borrower arrived while all `max` connections were lent (or being opened) and `maxWaiters`
 * borrowers were already queued for one: it is turned away at once instead of joining the queue
 * (load shedding). Not transient: retrying at once would defeat the bound.
 *
 * @since 0.1.0
 * @category errors
 */
export const TooManyWaiters: typeof internalErrors.TooManyWaiters = internalErrors.TooManyWaiters

/**
 * @since 0.1.0
 * @category errors
 */
export type TooManyWaiters = internalErrors.TooManyWaiters

/**
 * What borrowing can fail with: the connect's error (a new connection was needed and could not
 * be opened), the health check of a new connection (with `healthCheck`), the acquire timeout, or
 * too many waiters.
 *
 * @since 0.1.0
 * @category models
 */
export type BorrowError<E = ConnectError> = E | HealthCheckFailed | PoolTimeout | TooManyWaiters

/**
 * Options of a pool. Durations are `Duration.DurationInput`: milliseconds or `"5 seconds"`.
 *
 * @since 0.1.0
 * @category models
 */
export interface PoolOptions {
  /**
   * Connections kept open even when idle: opened at start, and again on each validation round
   * (`validationInterval`) while fewer are open, so after an outage, never in a loop against a
   * server that closes them at once. Default 0.
   */
  readonly min?: number
  /** Most connections open at once; borrowers beyond wait. Default 10. */
  readonly max?: number
  /**
   * A connection idle this long (since its last use) is closed, unless it is one of the `min` kept
   * open: the pool shrinks back after a burst. Idle connections are looked at once a period, so one
   * is closed between one and two periods after its last use. More than 0; default 60 seconds.
   */
  readonly idleTimeToLive?: Duration.DurationInput
  /** A connection older than this is closed instead of being lent or returned. Default: no limit. */
  readonly maxLifetime?: Duration.DurationInput
  /**
   * A borrower that gets no connection within this fails with `PoolTimeout`: it bounds everything
   * until your function gets a connection, queueing, connecting and health checks included. Default
   * 30 seconds.
   */
  readonly acquireTimeout?: Duration.DurationInput
  /**
   * Borrowers allowed to queue while all `max` connections are lent; one more fails at once with
   * `TooManyWaiters`. 0 never queues. Default: no limit.
   */
  readonly maxWaiters?: number
  /**
   * A protocol check (such as `HealthCheck.redisPing`) run on borrow, before a new connection's
   * first use (a completed connect proves only that the kernel answered the handshake, as it does
   * for a frozen server) and when a connection was idle for `validateAfterIdle` or more, and on
   * idle connections every `validationInterval`. An idle connection that fails it is closed and
   * another one lent; a new one that fails it fails the borrower with `HealthCheckFailed`. Without
   * it, connections are still checked without traffic: an idle connection that the peer closes
   * (FIN), resets (RST) or sends unexpected bytes on is closed at once.
   */
  readonly healthCheck?: Probe
  /**
   * Which failures of a `use` (or of a `get`'s scope) leave the connection in step, so that it
   * goes back to the pool instead of being closed: for instance a "not found" your protocol
   * reads as a whole reply, `Predicate.isTagged("NotFound")`. Called with each failure of the
   * use's cause. A `TcpError`, a `HealthCheckFailed`, a defect or an interruption always closes the
   * connection, and so does a predicate that throws. Default: every failure closes it.
   */
  readonly keepOnFailure?: (error: unknown) => boolean
  /**
   * Skip the borrow-time health check for a connection that passed one and was returned less than
   * this ago (a new connection is always probed first). Default 1 second.
   */
  readonly validateAfterIdle?: Duration.DurationInput
  /**
   * How often idle connections are health-checked (with `healthCheck`), connections past
   * `maxLifetime` closed, and failed connects retried to restore `min`. Default 30 seconds.
   */
  readonly validationInterval?: Duration.DurationInput
}

/**
 * Counts of a pool, now.
 *
 * @since 0.1.0
 * @category models
 */
export interface PoolStats {
  /** Open connections waiting to be lent. */
  readonly idle: number
  /** Connections lent to a borrower. */
  readonly inUse: number
  /** Borrowers waiting for a connection (queued, or waiting for one being opened). */
  readonly waiting: number
  /** Connect attempts under way. */
  readonly connecting: number
  /** Connections opened since the start. */
  readonly opened: number
  /** Connections closed since the start (returned to the system, not to the pool). */
  readonly closed: number
}

/**
 * A pool of connections.
 *
 * @since 0.1.0
 * @category models
 */
export interface ConnectionPool<E = ConnectError> extends Pipeable {
  readonly [ConnectionPoolTypeId]: ConnectionPoolTypeId
  /**
   * Borrows a connection for `f`: it goes back to the pool when `f` succeeds and has read every
   * byte received, and is closed (and replaced) when `f` fails, dies or is interrupted, unless
   * `keepOnFailure` accepts the failure.
   */
  readonly use: <A, E2, R>(
    f: (connection: Connection) => Effect.Effect<A, E2, R>
  ) => Effect.Effect<A, E2 | BorrowError<E>, R>
  /**
   * Borrows a connection until the scope closes, with the rules of `use` applied to the scope's
   * exit. A scope that closes while the borrow waits gets nothing: the borrow is interrupted.
   */
  readonly get: Effect.Effect<Connection, BorrowError<E>, Scope.Scope>
  /** Closes a borrowed connection now and has the pool replace it: when you know it is unfit. */
  readonly invalidate: (connection: Connection) => Effect.Effect<void>
  /** Counts of idle, lent and awaited connections. */
  readonly stats: Effect.Effect<PoolStats>
}

/**
 * A pool of connections to `host:port` (or to a Unix domain socket's `path`), opened with the `Tcp` service and the connect options
 * given (with a `connectTimeout` of 10 seconds unless one is given: a hanging connect would hold
 * up the pool's growth). The pool closes every connection when its scope closes, after the
 * borrowed ones come back. Fails with `InvalidOptions` for bad options, before any connect.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { ConnectionPool, HealthCheck, NodeTcp } from "effect-tcp"
 *
 * const program = Effect.gen(function*() {
 *   const pool = yield* ConnectionPool.make({
 *     host: "localhost",
 *     port: 6379,
 *     readTimeout: "5 seconds",
 *     max: 10,
 *     acquireTimeout: "2 seconds",
 *     healthCheck: HealthCheck.redisPing
 *   })
 *   const reply = yield* pool.use((connection) =>
 *     Effect.zipRight(connection.write("INCR visits\r\n"), connection.readUntil("\r\n"))
 *   )
 *   yield* Effect.log(Buffer.from(reply).toString(), yield* pool.stats)
 * }).pipe(
 *   Effect.catchTag("PoolTimeout", (e) => Effect.logWarning(e.message)),
 *   Effect.scoped,
 *   Effect.provide(NodeTcp.layer)
 * )
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: (
  options: PoolOptions & (ConnectOptions | UnixConnectOptions)
) => Effect.Effect<ConnectionPool<ConnectError>, InvalidOptions, Scope.Scope | Tcp> = internal.make

/**
 * A pool whose connections `acquire` opens, in the scope it is given, for instance
 * `Failover.connect`: a failed `acquire` fails the borrower that needed the connection.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { ConnectionPool, Failover, NodeTcp } from "effect-tcp"
 *
 * const program = Effect.gen(function*() {
 *   const pool = yield* ConnectionPool.makeWith(
 *     Failover.connect([{ host: "db1", port: 5432 }, { host: "db2", port: 5432 }], { connectTimeout: "3 seconds" }),
 *     { max: 4 }
 *   )
 *   yield* pool.use((connection) => connection.write("hello"))
 * }).pipe(Effect.scoped, Effect.provide(NodeTcp.layer))
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeWith = <E, R>(
  acquire: Effect.Effect<Connection, E, R>,
  options: PoolOptions = {}
): Effect.Effect<ConnectionPool<E>, InvalidOptions, Scope.Scope | Exclude<R, Scope.Scope>> =>
  internal.makeWith(acquire, options, undefined)
