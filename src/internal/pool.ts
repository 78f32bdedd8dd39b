/**
 * The connection pool: an idle list, a FIFO queue of borrowers and one state per connection.
 *
 * ## How it holds together
 *
 * - **Permits.** A FIFO semaphore of `max` permits. Whoever holds a connection out of the idle
 *   list (a borrower, the background validation) or opens one holds a permit, so there are never
 *   more than `max` connections, and a release hands its permit to the oldest waiter: a borrower
 *   who arrives while others wait queues behind them.
 * - **Idle list.** Connections not in use, the most recently returned last; a borrower takes the
 *   last (a warm connection), the idle-time sweep closes the first. Each idle connection is
 *   watched by a read parked on it, so a FIN, RST or stray bytes close it at once.
 * - **Loans.** What a borrow in progress holds (its permit, the connection it inspects or probes,
 *   the connect begun for it) is written down as it is obtained, so whoever ends the borrow (its
 *   success, its deadline, an interruption) gives back exactly that, even what arrives after the
 *   borrower gave up.
 * - **Connects** run in a fiber of the pool's own: a borrower that gives up (its deadline, an
 *   interruption) leaves the connect running, with its permit, and the new connection goes to the
 *   idle list for the next borrower. So a server slower to accept than `acquireTimeout` still
 *   gets connections, one attempt at a time.
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import { pipeArguments } from "effect/Pipeable"
import { hasProperty } from "effect/Predicate"
import * as Runtime from "effect/Runtime"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import type { Connection, ConnectionState } from "../Connection.js"
import type {
  BorrowError,
  ConnectionPool,
  ConnectionPoolTypeId as ConnectionPoolTypeId_,
  PoolOptions,
  PoolStats
} from "../ConnectionPool.js"
import * as Endpoint from "../Endpoint.js"
import * as Tcp from "../Tcp.js"
import * as TcpError from "../TcpError.js"
import { unreadBytes } from "./connection.js"
import { FifoSemaphore, type Ticket } from "./fifoSemaphore.js"
import { HealthCheckFailed } from "./health.js"
import * as Options from "./options.js"
import { PoolTimeout, TooManyWaiters } from "./poolError.js"

/** @internal */
export const ConnectionPoolTypeId: ConnectionPoolTypeId_ = Symbol.for(
  "effect-tcp/ConnectionPool"
) as ConnectionPoolTypeId_

/** @internal */
export const isConnectionPool = (u: unknown): u is ConnectionPool<unknown> => hasProperty(u, ConnectionPoolTypeId)

const PoolProto = {
  [ConnectionPoolTypeId]: ConnectionPoolTypeId,
  pipe() {
    return pipeArguments(this, arguments)
  }
}

/** For errors built from this module's own values: Schema's check of them costs up to a millisecond. */
const trusted = { disableValidation: true } as const

const defaults = {
  min: 0,
  max: 10,
  idleTimeToLive: Duration.seconds(60),
  acquireTimeout: Duration.seconds(30),
  validateAfterIdle: Duration.seconds(1),
  validationInterval: Duration.seconds(30),
  connectTimeout: Duration.seconds(10)
}

type Validated = {
  readonly min: number
  readonly max: number
  readonly idleTimeToLive: Duration.Duration
  readonly maxLifetime: Duration.Duration | undefined
  readonly acquireTimeout: Duration.Duration
  readonly maxWaiters: number
  readonly validateAfterIdle: Duration.Duration
  readonly validationInterval: Duration.Duration
}

const maxConnections = 65_535

const validateOptions = (options: PoolOptions): Effect.Effect<Validated, TcpError.InvalidOptions> => {
  const issues: Array<string> = []
  const count = (name: string, value: number | undefined, fallback: number, least: number) => {
    if (value === undefined) return fallback
    if (!Number.isSafeInteger(value) || value < least) {
      issues.push(`${name} must be an integer of at least ${least}, got ${Options.showValue(value)}`)
      return fallback
    }
    return value
  }
  const duration = <D extends Duration.Duration | undefined>(
    name: string,
    value: Duration.DurationInput | undefined,
    fallback: D
  ): Duration.Duration | D => {
    if (value === undefined) return fallback
    const decoded = Options.durationOption(name, value)
    if (Either.isRight(decoded)) return decoded.right
    issues.push(decoded.left)
    return fallback
  }
  const callable = (name: string, value: unknown) => {
    if (value !== undefined && typeof value !== "function") issues.push(`${name} must be a function, got ${typeof value}`)
  }
  const min = count("min", options.min, defaults.min, 0)
  const max = count("max", options.max, Math.max(defaults.max, min), 1)
  // A host has at most 65,535 local ports to one endpoint: a larger pool is a mistake, and one of
  // 2^31 connections would exhaust memory opening them.
  if (max > maxConnections) issues.push(`max must be at most ${maxConnections}, got ${max}`)
  if (min > max) issues.push(`min (${min}) must not exceed max (${max})`)
  callable("healthCheck", options.healthCheck)
  callable("keepOnFailure", options.keepOnFailure)
  const validated: Validated = {
    min,
    max,
    idleTimeToLive: duration("idleTimeToLive", options.idleTimeToLive, defaults.idleTimeToLive),
    maxLifetime: duration("maxLifetime", options.maxLifetime, undefined),
    acquireTimeout: duration("acquireTimeout", options.acquireTimeout, defaults.acquireTimeout),
    maxWaiters: options.maxWaiters === Infinity ? Infinity : count("maxWaiters", options.maxWaiters, Infinity, 0),
    validateAfterIdle: duration("validateAfterIdle", options.validateAfterIdle, defaults.validateAfterIdle),
    validationInterval: duration("validationInterval", options.validationInterval, defaults.validationInterval)
  }
  // A period of 0 would run its schedule without end.
  if (Duration.toMillis(validated.validationInterval) === 0) issues.push("validationInterval must be more than 0")
  if (Duration.toMillis(validated.idleTimeToLive) === 0) issues.push("idleTimeToLive must be more than 0")
  return issues.length === 0
    ? Effect.succeed(validated)
    : Effect.fail(new TcpError.InvalidOptions({ operation: "connect", issues: issues.join("; ") }))
}

/**
 * Whether a use that ended so leaves the connection in step, fit to lend again: after a success,
 * and after a failure that `keepOnFailure` accepts. A defect or an interruption stopped the
 * exchange at an unknown point of the stream, and a `TcpError` or `HealthCheckFailed` is the
 * connection's own failure: those never leave it in step.
 */
const inStep = (exit: Exit.Exit<unknown, unknown>, keepOnFailure: ((error: unknown) => boolean) | undefined): boolean => {
  if (Exit.isSuccess(exit)) return true
  if (keepOnFailure === undefined || Cause.isInterrupted(exit.cause) || Cause.isDie(exit.cause)) return false
  const failures = Cause.failures(exit.cause)
  if (failures.length === 0) return false
  for (const error of failures) {
    if (TcpError.isTcpError(error) || error instanceof HealthCheckFailed) return false
    try {
      if (!keepOnFailure(error)) return false
    } catch {
      // A predicate that throws cannot vouch for the stream.
      return false
    }
  }
  return true
}

/** Why a connection in this state cannot be lent, if it cannot. */
const deathOf = (connection: Connection, state: ConnectionState): HealthCheckFailed | undefined => {
  const endpoint = connection.remoteAddress
  if (state._tag === "Open") {
    // Left unread by the last use, or sent since: they would be read as the next borrower's reply.
    const unread = unreadBytes(connection)
    return unread === 0 ? undefined : strayBytes(endpoint, unread)
  }
  const error = state._tag === "Closed"
    ? new TcpError.SocketClosed({ operation: "read", endpoint, reason: "Closed" }, trusted)
    : state.readable
    ? new TcpError.SocketClosed({ operation: "write", endpoint, reason: "WriteSideEnded" }, trusted)
    : new TcpError.UnexpectedEof({ operation: "read", endpoint, received: 0 }, trusted)
  return new HealthCheckFailed({ endpoint, reason: { _tag: "ConnectionError", error } }, trusted)
}

const strayBytes = (endpoint: Endpoint.Endpoint, count: number) =>
  new HealthCheckFailed({
    endpoint,
    reason: { _tag: "WrongReply", expected: "no bytes on an idle connection", received: `${count} bytes` }
  }, trusted)

type Restore = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>

// -----------------------------------------------------------------------------
// the connections

/**
 * Where a connection of the pool stands; each is in exactly one state at a time:
 *
 * - `idle`: in the idle list, watched for a FIN, RST or stray bytes from the peer.
 * - `lent`: out of the idle list, held by a borrower with a permit (inspected, probed or in use),
 *   or just opened.
 * - `validating`: out of the idle list, probed by the background validation, which holds a permit.
 * - `closed`: closed and forgotten; never lent again.
 */
type EntryState = "idle" | "lent" | "validating" | "closed"

class Entry {
  state: EntryState = "lent"
  /** When it last came back from a use: what `idleTimeToLive` counts from. */
  idleSince: number
  /** When it last proved fit (a use that ended in step, a health check): what `validateAfterIdle` counts from. */
  checkedAt: number
  /** Whether a health check ever passed on it: with `healthCheck`, a new connection is probed before its first use. */
  checked = false
  /** The read parked on it while idle. */
  watcher: Fiber.RuntimeFiber<void> | undefined = undefined
  /** A watcher about to start, on the next turn of the event loop. */
  pendingWatch: NodeJS.Immediate | undefined = undefined
  /** Why the watcher found it dead. */
  death: HealthCheckFailed | undefined = undefined
  constructor(
    readonly connection: Connection,
    /** Where `acquire` opened it: closing it closes the connection. */
    readonly scope: Scope.CloseableScope,
    readonly createdAt: number
  ) {
    this.idleSince = createdAt
    this.checkedAt = createdAt
  }
}

/** A connect under way. A borrower waits for it; if the borrower gives up, the connect keeps its permit. */
interface PendingConnect<E> {
  exit: Exit.Exit<Entry, E> | undefined
  wake: ((effect: Effect.Effect<void>) => void) | undefined
  abandoned: boolean
}

/** What a borrow in progress holds. */
interface Loan<E> {
  /** Its place in the queue for a permit, taken the moment it found none free. */
  ticket: Ticket | undefined
  permit: boolean
  entry: Entry | undefined
  /** The entry's health check is under way: cut short, it leaves the connection out of step. */
  probing: boolean
  connect: PendingConnect<E> | undefined
  /** Counted in `waiting`: queued for a permit, or waiting for a connect. */
  waiting: boolean
}

/** @internal */
export const makeWith = <E, R>(
  acquire: Effect.Effect<Connection, E, R>,
  options: PoolOptions,
  endpoint: Endpoint.Endpoint | undefined
): Effect.Effect<ConnectionPool<E>, TcpError.InvalidOptions, Scope.Scope | Exclude<R, Scope.Scope>> =>
  Effect.gen(function*() {
    const config = yield* validateOptions(options)
    const probe = options.healthCheck
    const keepOnFailure = options.keepOnFailure
    const acquireMillis = Duration.toMillis(config.acquireTimeout)
    const idleMillis = Duration.toMillis(config.idleTimeToLive)
    const lifetimeMillis = config.maxLifetime === undefined ? Infinity : Duration.toMillis(config.maxLifetime)
    const validateAfterMillis = Duration.toMillis(config.validateAfterIdle)
    const clock = yield* Effect.clock
    const now = () => clock.unsafeCurrentTimeMillis()
    // Background work (connects, watchers, validation) runs with the context the pool was made in.
    const runFork = Runtime.runFork(yield* Effect.runtime<Exclude<R, Scope.Scope>>())

    const permits = new FifoSemaphore(config.max)
    /** Idle connections, the most recently returned last. */
    const idle: Array<Entry> = []
    const entries = new Map<Connection, Entry>()
    let lent = 0
    let validating = 0
    let connecting = 0
    let waiting = 0
    let opened = 0
    let closed = 0
    let closing = false
    /** Called once nothing is lent or validated any more, when the pool is closing. */
    let onDrained: (() => void) | undefined = undefined
    const background = new Set<Fiber.RuntimeFiber<unknown, unknown>>()

    const fork = (effect: Effect.Effect<void, never, Exclude<R, Scope.Scope>>): void => {
      const fiber = runFork(effect)
      background.add(fiber)
      fiber.addObserver(() => background.delete(fiber))
    }

    const expired = (entry: Entry) => now() - entry.createdAt >= lifetimeMillis
    /**
     * A connect proves only that the kernel completed a handshake (it does for a frozen or
     * overloaded server, and a proxy accepts for a backend that is down): with a health check, a new
     * connection is probed before its first use, and one idle for `validateAfterIdle` or more too.
     */
    const needsProbe = (entry: Entry): boolean =>
      probe !== undefined && (!entry.checked || now() - entry.checkedAt >= validateAfterMillis)

    const snapshot = (): PoolStats => ({ idle: idle.length + validating, inUse: lent, waiting, connecting, opened, closed })

    /** Takes an entry out of its state's books. */
    const leave = (entry: Entry): void => {
      switch (entry.state) {
        case "idle": {
          const at = idle.lastIndexOf(entry)
          if (at >= 0) idle.splice(at, 1)
          break
        }
        case "lent":
          lent--
          break
        case "validating":
          validating--
          break
      }
      if (onDrained !== undefined && lent === 0 && validating === 0) onDrained()
    }

    const stopWatcher = (entry: Entry): Effect.Effect<void> => {
      if (entry.pendingWatch !== undefined) {
        clearImmediate(entry.pendingWatch)
        entry.pendingWatch = undefined
      }
      const watcher = entry.watcher
      entry.watcher = undefined
      return watcher === undefined ? Effect.void : Fiber.interrupt(watcher)
    }

    /** Closes a connection of the pool, whatever its state. */
    const discard = (entry: Entry): Effect.Effect<void> =>
      Effect.suspend(() => {
        if (entry.state === "closed") return Effect.void
        leave(entry)
        entry.state = "closed"
        entries.delete(entry.connection)
        closed++
        return Effect.zipRight(stopWatcher(entry), Scope.close(entry.scope, Exit.void))
      })

    /**
     * Opens connections in the background until `min` are open or being opened: at start and on
     * each validation round, never on a close (a server that closes every connection at once, or a
     * `maxLifetime` of 0, would make that a loop).
     */
    const ensureMin: Effect.Effect<void> = Effect.sync(() => {
      while (!closing && entries.size + connecting < config.min && permits.tryTake()) {
        startConnect({ exit: undefined, wake: undefined, abandoned: true })
      }
    })

    /** Back to the idle list if `fit`, else closed. */
    const giveBack = (entry: Entry, fit: boolean): Effect.Effect<void> =>
      Effect.suspend(() => {
        // Invalidated while lent: already closed.
        if (entry.state === "closed") return Effect.void
        if (!fit || closing || entry.death !== undefined || expired(entry)) return discard(entry)
        leave(entry)
        entry.state = "idle"
        idle.push(entry)
        // Watched from the next turn of the event loop: a connection borrowed again at once costs no watcher.
        if (entry.watcher === undefined && entry.pendingWatch === undefined) entry.pendingWatch = setImmediate(watch, entry)
        return Effect.void
      })

    const releasePermit = (): void => permits.release()

    // -------------------------------------------------------------------------
    // watching idle connections: a read parked on each one notices at once when the peer
    // closes it (FIN), resets it (RST) or sends bytes nobody asked for.

    const onIdleEvent = (entry: Entry, exit: Exit.Exit<Option.Option<Uint8Array>, TcpError.ReadError>) =>
      Effect.suspend(() => {
        if (Exit.isInterrupted(exit)) return Effect.void
        entry.watcher = undefined
        const peer = entry.connection.remoteAddress
        entry.death = Exit.isSuccess(exit) && Option.isSome(exit.value)
          ? strayBytes(peer, exit.value.value.length)
          : new HealthCheckFailed({
            endpoint: peer,
            reason: {
              _tag: "ConnectionError",
              error: Exit.isFailure(exit)
                ? Option.getOrElse(
                  Cause.failureOption(exit.cause),
                  (): TcpError.TcpError =>
                    new TcpError.SocketClosed({ operation: "read", endpoint: peer, reason: "Closed" })
                )
                : new TcpError.UnexpectedEof({ operation: "read", endpoint: peer, received: 0 })
            }
          }, trusted)
        // Taken meanwhile: whoever holds it finds it dead.
        if (entry.state !== "idle") return Effect.void
        return Effect.logDebug(`pool: idle connection to ${Endpoint.format(peer)} is gone: ${entry.death.message}`).pipe(
          Effect.zipRight(discard(entry))
        )
      })

    /**
     * A read that ends only with the peer: with a `readTimeout` the connection's reads fail with
     * ReadTimeout while the peer says nothing, which is what an idle peer does.
     */
    const awaitPeer = (connection: Connection): Effect.Effect<Option.Option<Uint8Array>, TcpError.ReadError> =>
      Effect.catchTag(connection.read, "ReadTimeout", () => awaitPeer(connection))

    function watch(entry: Entry): void {
      entry.pendingWatch = undefined
      if (closing || entry.state !== "idle" || entry.watcher !== undefined) return
      const fiber = runFork(
        Effect.interruptible(
          Effect.uninterruptibleMask((restore) =>
            Effect.flatMap(Effect.exit(restore(awaitPeer(entry.connection))), (exit) => onIdleEvent(entry, exit))
          )
        )
      )
      entry.watcher = fiber
      background.add(fiber)
      fiber.addObserver(() => background.delete(fiber))
    }

    // -------------------------------------------------------------------------
    // connecting

    /** A new connection in a scope of its own, counted as lent (to whoever asked for it). */
    const openEntry = (restore: Restore): Effect.Effect<Entry, E, Exclude<R, Scope.Scope>> =>
      Effect.flatMap(Scope.make(), (scope) =>
        Effect.flatMap(Effect.exit(restore(Scope.extend(acquire, scope))), (exit): Effect.Effect<Entry, E> => {
          if (Exit.isFailure(exit)) return Effect.zipRight(Scope.close(scope, exit), Effect.failCause(exit.cause))
          const entry = new Entry(exit.value, scope, now())
          entries.set(entry.connection, entry)
          opened++
          lent++
          return Effect.succeed(entry)
        }))

    /**
     * Opens a connection in the background, holding a permit: for the borrower waiting on
     * `pending`, or, once abandoned, for the idle list (the permit is then given back).
     */
    function startConnect(pending: PendingConnect<E>): void {
      connecting++
      fork(Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(Effect.exit(openEntry(restore)), (exit) =>
          Effect.suspend(() => {
            connecting--
            if (!pending.abandoned) {
              pending.exit = exit
              const wake = pending.wake
              pending.wake = undefined
              wake?.(Effect.void)
              return Effect.void
            }
            const done = Exit.isSuccess(exit)
              ? giveBack(exit.value, true)
              : Effect.logDebug(`pool: a connect failed`, Cause.squash(exit.cause))
            return Effect.ensuring(done, Effect.sync(releasePermit))
          }))
      ))
    }

    const awaitConnect = (pending: PendingConnect<E>): Effect.Effect<void> =>
      Effect.async<void>((resume) => {
        if (pending.exit !== undefined) return resume(Effect.void)
        pending.wake = resume
        return Effect.sync(() => {
          pending.wake = undefined
        })
      })

    /** Takes what the loan's connect brought, or, while it is under way, leaves it the permit. */
    const claimConnect = (loan: Loan<E>): Exit.Exit<Entry, E> | undefined => {
      const pending = loan.connect
      if (pending === undefined) return undefined
      loan.connect = undefined
      if (pending.exit === undefined) {
        pending.abandoned = true
        loan.permit = false
        return undefined
      }
      if (Exit.isSuccess(pending.exit)) loan.entry = pending.exit.value
      return pending.exit
    }

    // -------------------------------------------------------------------------
    // borrowing

    /** After the wait for a permit ended, however: the permit is the loan's if it was granted. */
    const settleTicket = (loan: Loan<E>): void => {
      const ticket = loan.ticket
      if (ticket === undefined) return
      loan.ticket = undefined
      if (permits.settle(ticket)) loan.permit = true
    }

    const startWaiting = (loan: Loan<E>) => {
      loan.waiting = true
      waiting++
    }
    const stopWaiting = (loan: Loan<E>) => {
      if (!loan.waiting) return
      loan.waiting = false
      waiting--
    }

    const take = (entry: Entry, loan: Loan<E>): void => {
      entry.state = "lent"
      lent++
      loan.entry = entry
      loan.probing = false
    }

    /** Whether the loan's connection may be lent; one that may not is closed, and the loan lets go of it. */
    const inspect = (loan: Loan<E>): Effect.Effect<boolean> =>
      Effect.gen(function*() {
        const entry = loan.entry!
        yield* Effect.uninterruptible(Effect.suspend(() => stopWatcher(entry)))
        // The watcher may have seen the peer go just before it was stopped: `death` says so; a FIN or
        // RST that came before the watcher started shows in the state.
        if (entry.death === undefined) entry.death = deathOf(entry.connection, yield* entry.connection.state)
        if (entry.death === undefined && !expired(entry)) {
          if (!needsProbe(entry)) return true
          loan.probing = true
          const checked = yield* Effect.either(probe!(entry.connection))
          loan.probing = false
          if (Either.isRight(checked)) {
            entry.checked = true
            entry.checkedAt = now()
            return true
          }
          yield* Effect.logDebug(`pool: idle connection to ${Endpoint.format(entry.connection.remoteAddress)} failed its health check`)
        }
        yield* Effect.uninterruptible(Effect.suspend(() => {
          loan.entry = undefined
          return discard(entry)
        }))
        return false
      })

    /**
     * Completes a loan: a permit, then an idle connection that passes inspection, else a new one
     * (probed first with a health check). Interruptible; what it obtains is in the loan.
     */
    const fill = (loan: Loan<E>): Effect.Effect<void, E | HealthCheckFailed> =>
      Effect.gen(function*() {
        if (loan.ticket !== undefined) {
          yield* Effect.ensuring(permits.await(loan.ticket), Effect.sync(() => settleTicket(loan)))
          stopWaiting(loan)
        }
        for (;;) {
          if (closing) return yield* Effect.interrupt
          if (loan.entry === undefined) {
            const entry = idle.pop()
            if (entry !== undefined) take(entry, loan)
          }
          if (loan.entry !== undefined) {
            if (!(yield* inspect(loan))) continue
            // A pool that began closing meanwhile lends nothing more.
            if (closing) return yield* Effect.interrupt
            return
          }
          const pending: PendingConnect<E> = { exit: undefined, wake: undefined, abandoned: false }
          loan.connect = pending
          startConnect(pending)
          startWaiting(loan)
          yield* awaitConnect(pending)
          stopWaiting(loan)
          const exit = claimConnect(loan)!
          if (Exit.isFailure(exit)) return yield* exit
          if (probe !== undefined) {
            loan.probing = true
            yield* probe(loan.entry!.connection)
            loan.probing = false
            loan.entry!.checked = true
            loan.entry!.checkedAt = now()
          }
          if (closing) return yield* Effect.interrupt
          return
        }
      })

    /** Gives back whatever an unfinished loan holds. */
    const abandon = (loan: Loan<E>): Effect.Effect<void> =>
      Effect.suspend(() => {
        stopWaiting(loan)
        settleTicket(loan)
        claimConnect(loan)
        const entry = loan.entry
        loan.entry = undefined
        return Effect.ensuring(
          entry === undefined ? Effect.void : giveBack(entry, !loan.probing),
          Effect.sync(() => {
            if (!loan.permit) return
            loan.permit = false
            releasePermit()
          })
        )
      })

    const timeout = () => {
      const stats = snapshot()
      return new PoolTimeout({
        timeoutMillis: acquireMillis,
        max: config.max,
        inUse: stats.inUse,
        waiting: stats.waiting,
        connecting: stats.connecting,
        endpoint
      }, trusted)
    }

    /** The loan completed under what is left of `acquireTimeout`. */
    const fillInTime = (loan: Loan<E>, startedAt: number, restore: Restore): Effect.Effect<Entry, BorrowError<E>> =>
      Effect.flatMap(
        Effect.exit(restore(Effect.suspend(() =>
          Effect.timeoutFail(Effect.interruptible(fill(loan)), {
            // Interruptible even where the caller is not, or the deadline could not stop the wait.
            duration: Duration.millis(Math.max(0, acquireMillis - (now() - startedAt))),
            onTimeout: timeout
          })
        ))),
        (exit) => Exit.isSuccess(exit) ? Effect.succeed(loan.entry!) : Effect.zipRight(abandon(loan), Effect.failCause(exit.cause))
      )

    /**
     * A connection and its permit, lent; on failure nothing is held. A borrow that finds a free
     * permit and an idle connection that needs no probe is lent it without arming the deadline (a
     * timer and two fibers, most of a borrow's cost otherwise); anything else is timed.
     */
    const borrow = (restore: Restore): Effect.Effect<Entry, BorrowError<E>> =>
      Effect.suspend((): Effect.Effect<Entry, BorrowError<E>> => {
        if (closing) return Effect.interrupt
        const startedAt = now()
        const loan: Loan<E> = {
          ticket: undefined,
          permit: false,
          entry: undefined,
          probing: false,
          connect: undefined,
          waiting: false
        }
        if (permits.tryTake()) {
          loan.permit = true
          const entry = idle.pop()
          if (entry !== undefined) {
            take(entry, loan)
            if (!needsProbe(entry)) {
              return Effect.flatMap(inspect(loan), (fit) => fit ? Effect.succeed(entry) : fillInTime(loan, startedAt, restore))
            }
          }
          return fillInTime(loan, startedAt, restore)
        }
        // Only a borrower that would queue for a connection someone else holds counts against the bound.
        if (permits.waiting >= config.maxWaiters) {
          return Effect.fail(new TooManyWaiters({ maxWaiters: config.maxWaiters, endpoint }, trusted))
        }
        // In the queue now, not once the wait begins: a permit released meanwhile comes to it.
        loan.ticket = permits.enqueue()
        startWaiting(loan)
        return fillInTime(loan, startedAt, restore)
      })

    /** Ends a loan whose connection was used: back to the idle list if the use left it in step, and the permit back. */
    const settle = (entry: Entry, exit: Exit.Exit<unknown, unknown>): Effect.Effect<void> =>
      Effect.ensuring(
        Effect.suspend(() => {
          // A use that left bytes unread was not in step, whatever it returned.
          const fit = inStep(exit, keepOnFailure) && unreadBytes(entry.connection) === 0
          if (fit) entry.idleSince = entry.checkedAt = now()
          return giveBack(entry, fit)
        }),
        Effect.sync(releasePermit)
      )

    const use = <A, E2, R2>(
      f: (connection: Connection) => Effect.Effect<A, E2, R2>
    ): Effect.Effect<A, E2 | BorrowError<E>, R2> =>
      Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(borrow(restore), (entry) =>
          Effect.flatMap(Effect.exit(restore(f(entry.connection))), (exit) => Effect.zipRight(settle(entry, exit), exit)))
      )

    const get: Effect.Effect<Connection, BorrowError<E>, Scope.Scope> = Effect.uninterruptibleMask((restore) =>
      Effect.flatMap(borrow(restore), (entry) =>
        Effect.flatMap(Effect.scope, (scope) => {
          let settled = false
          return Effect.flatMap(
            Scope.addFinalizerExit(scope, (exit) => {
              settled = true
              return settle(entry, exit)
            }),
            // A scope that closed while the borrow waited runs the finalizer at once: the connection
            // is back in the pool, and the borrower gets nothing.
            () => settled ? Effect.interrupt : Effect.succeed(entry.connection)
          )
        }))
    )

    const invalidate = (connection: Connection): Effect.Effect<void> =>
      Effect.suspend(() => {
        const entry = entries.get(connection)
        return entry === undefined ? Effect.void : discard(entry)
      })

    // -------------------------------------------------------------------------
    // in the background: probing idle connections, closing old and surplus ones, restoring `min`

    const validate = (entry: Entry): Effect.Effect<void> =>
      Effect.uninterruptibleMask((restore) =>
        Effect.suspend(() => {
          if (entry.state !== "idle" || closing) return Effect.void
          if (expired(entry)) return discard(entry)
          if (probe === undefined || !permits.tryTake()) return Effect.void
          leave(entry)
          entry.state = "validating"
          validating++
          return Effect.zipRight(
            stopWatcher(entry),
            Effect.flatMap(Effect.exit(restore(probe(entry.connection))), (exit) =>
              Effect.suspend(() => {
                const healthy = entry.death === undefined && Exit.isSuccess(exit)
                if (healthy) {
                  entry.checked = true
                  entry.checkedAt = now()
                }
                const logged = healthy ? Effect.void : Effect.logDebug(
                  `pool: idle connection to ${Endpoint.format(entry.connection.remoteAddress)} failed its health check`
                )
                return Effect.ensuring(Effect.zipRight(logged, giveBack(entry, healthy)), Effect.sync(releasePermit))
              }))
          )
        })
      )

    const validateAll = Effect.suspend(() =>
      Effect.zipRight(Effect.forEach(idle.slice(), validate, { concurrency: "unbounded", discard: true }), ensureMin)
    )

    /** Closes connections idle for `idleTimeToLive`, the longest idle first, down to `min`. */
    const sweep = Effect.suspend(() => {
      const cutoff = now() - idleMillis
      return Effect.forEach(idle.slice(), (entry) =>
        Effect.suspend(() =>
          entry.state === "idle" && entry.idleSince <= cutoff && entries.size > config.min ? discard(entry) : Effect.void
        ), { discard: true })
    })

    // The pool's scope closes: no new borrow, connect or watcher; the background work stops; the
    // lent connections are awaited; then every connection is closed.
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        closing = true
        yield* Fiber.interruptAll(Array.from(background))
        if (lent > 0 || validating > 0) {
          yield* Effect.async<void>((resume) => {
            onDrained = () => {
              onDrained = undefined
              resume(Effect.void)
            }
          })
        }
        yield* Effect.forEach(idle.slice(), discard, { discard: true })
      })
    )
    fork(Effect.interruptible(Effect.schedule(validateAll, Schedule.spaced(config.validationInterval))))
    fork(Effect.interruptible(Effect.schedule(sweep, Schedule.spaced(config.idleTimeToLive))))
    yield* ensureMin

    const pool: ConnectionPool<E> = Object.assign(Object.create(PoolProto), {
      use,
      get,
      invalidate,
      stats: Effect.sync(snapshot)
    })
    return pool
  })

/** @internal */
export const make = (
  options: PoolOptions & (Tcp.ConnectOptions | Tcp.UnixConnectOptions)
): Effect.Effect<ConnectionPool<TcpError.ConnectError>, TcpError.InvalidOptions, Scope.Scope | Tcp.Tcp> =>
  Effect.gen(function*() {
    const {
      acquireTimeout: _acquireTimeout,
      healthCheck: _healthCheck,
      keepOnFailure: _keepOnFailure,
      idleTimeToLive: _idleTimeToLive,
      max: _max,
      maxLifetime: _maxLifetime,
      maxWaiters: _maxWaiters,
      min: _min,
      validateAfterIdle: _validateAfterIdle,
      validationInterval: _validationInterval,
      ...connectOptions
    } = options
    const connect = { ...connectOptions, connectTimeout: connectOptions.connectTimeout ?? defaults.connectTimeout }
    yield* Options.validate(Options.ConnectTarget, "connect", connect)
    const tcp = yield* Tcp.Tcp
    const endpoint = "path" in options ? Endpoint.unix(options.path) : Endpoint.make(options.host, options.port)
    return yield* makeWith(tcp.connect(connect), options, endpoint)
  })
