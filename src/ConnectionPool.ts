/**
 * A pool of connections to one server, built on `effect/Pool` and adding what it lacks for TCP:
 * validation on borrow and in the background, invalidation of a connection whose use failed,
 * an acquire timeout, a bound on waiters and stats. A borrowed connection cannot leak: it is
 * returned or closed whatever happens to its borrower, interruption included.
 *
 * ## How it relates to effect/Pool
 *
 * Each connection is an item of a `Pool.makeWithTTL` pool (usage strategy: `min`, `max`,
 * `idleTimeToLive`). Four behaviours of effect/Pool 3.x are worked around here:
 *
 * - A borrower that waits for an item being created cannot be interrupted until the creation
 *   ends (the wait is inside an uninterruptible region), so a deadline could not fire. Each wait
 *   here is detached (`Effect.disconnect`): the borrower stops at once, and an item that arrives
 *   later goes straight back to the pool.
 * - After a failed acquisition effect/Pool stops growing and leaves the other waiters waiting for
 *   an item that never comes. So a failed connect is an item here too: the borrower that gets it
 *   reports the error (if the attempt began after the borrower arrived; an older failure is
 *   discarded and a new connect made) and invalidates it.
 * - Its semaphore wakes every waiter on each release: with a thousand borrowers queued for ten
 *   connections, a million wake-ups. Borrowers queue here first, behind a FIFO gate of `max`
 *   permits that wakes one per release, so effect/Pool's semaphore is never contended.
 * - effect/Pool has one time-to-live strategy at a time; `maxLifetime` is enforced here, on
 *   borrow, on return and by the background validation.
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
import type * as Scope from "effect/Scope"
import type { Connection } from "./Connection.js"
import type { HealthCheckFailed, Probe } from "./HealthCheck.js"
import * as internal from "./internal/pool.js"
import * as internalErrors from "./internal/poolError.js"
import type { ConnectOptions, Tcp } from "./Tcp.js"
import type { ConnectError, InvalidOptions } from "./TcpError.js"

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
  /** Connections kept open even when idle (opened at start, and again after an outage). Default 0. */
  readonly min?: number
  /** Most connections open at once; borrowers beyond wait. Default 10. */
  readonly max?: number
  /**
   * Every period, the connections above `min` that are not in use at that moment are closed
   * (effect/Pool's usage strategy): the pool shrinks back after a burst, and an idle connection
   * lives at most about twice this long. Default 60 seconds.
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
export interface ConnectionPool<E = ConnectError> {
  /**
   * Borrows a connection for `f`: it goes back to the pool when `f` succeeds, and is closed (and
   * replaced) when `f` fails, dies or is interrupted, unless `keepOnFailure` accepts the failure.
   */
  readonly use: <A, E2, R>(
    f: (connection: Connection) => Effect.Effect<A, E2, R>
  ) => Effect.Effect<A, E2 | BorrowError<E>, R>
  /** Borrows a connection until the scope closes, with the rules of `use` applied to the scope's exit. */
  readonly get: Effect.Effect<Connection, BorrowError<E>, Scope.Scope>
  /** Closes a borrowed connection now and has the pool replace it: when you know it is unfit. */
  readonly invalidate: (connection: Connection) => Effect.Effect<void>
  /** Counts of idle, lent and awaited connections. */
  readonly stats: Effect.Effect<PoolStats>
}

/**
 * A pool of connections to `host:port`, opened with the `Tcp` service and the connect options
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
  options: PoolOptions & ConnectOptions
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
