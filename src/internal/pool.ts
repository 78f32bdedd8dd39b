import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Pool from "effect/Pool"
import * as Runtime from "effect/Runtime"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import type { Connection, ConnectionState } from "../Connection.js"
import type { BorrowError, ConnectionPool, PoolOptions, PoolStats } from "../ConnectionPool.js"
import { PoolTimeout, TooManyWaiters } from "./poolError.js"
import * as Endpoint from "../Endpoint.js"
import { HealthCheckFailed } from "./health.js"
import * as Options from "../internal/options.js"
import * as Tcp from "../Tcp.js"
import * as TcpError from "../TcpError.js"

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

// -----------------------------------------------------------------------------
// a fair gate

interface Waiter {
  readonly resume: (effect: Effect.Effect<void>) => void
  granted: boolean
}

/**
 * A FIFO semaphore that wakes exactly one waiter per release. effect's own Semaphore (used by
 * effect/Pool) wakes every waiter on each release, so a thousand borrowers waiting for ten
 * connections cost a million wake-ups; in front of it, this gate keeps it uncontended.
 */
class Gate {
  private readonly queue: Array<Waiter> = []
  private head = 0
  constructor(private free: number) {}

  get waiting(): number {
    return this.queue.length - this.head
  }

  readonly take: Effect.Effect<void> = Effect.async<void>((resume) => {
    if (this.tryTake()) return resume(Effect.void)
    const waiter: Waiter = { resume, granted: false }
    this.queue.push(waiter)
    // Interrupted while waiting: leave the queue, or pass on a permit granted in the meantime.
    return Effect.sync(() => {
      if (waiter.granted) return this.release()
      const at = this.queue.indexOf(waiter, this.head)
      if (at >= 0) this.queue.splice(at, 1)
    })
  })

  /** Whether a permit is free and nobody waits for it. */
  get open(): boolean {
    return this.free > 0 && this.waiting === 0
  }

  /** A permit now if one is free and nobody waits for it. */
  tryTake(): boolean {
    if (!this.open) return false
    this.free--
    return true
  }

  readonly release = (): void => {
    if (this.waiting === 0) {
      this.free++
      return
    }
    const next = this.queue[this.head]!
    this.queue[this.head++] = undefined as any
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head)
      this.head = 0
    }
    next.granted = true
    next.resume(Effect.void)
  }
}

// -----------------------------------------------------------------------------
// the items

/**
 * Where an item stands, as far as this module is concerned (effect/Pool keeps its own books on
 * who holds it):
 *
 * - `idle`: a connection in the pool, watched for a FIN, RST or stray bytes from the peer.
 * - `validating`: idle, being probed by the background validation.
 * - `failed`: a connect that failed, not yet handed to anyone.
 * - `taken`: handed by effect/Pool to a borrower who is inspecting it.
 * - `claimed`: handed to a borrower while being probed: the borrower waits for the result.
 * - `busy`: lent.
 * - `dead`: closed, failed or invalidated; never lent again.
 */
type SlotState = "idle" | "validating" | "failed" | "taken" | "claimed" | "busy" | "dead"

/** A pool item: a connection, or the failure of the attempt to open one. */
class Slot<E> {
  state: SlotState
  lastReturned: number
  watcher: Fiber.RuntimeFiber<void> | undefined = undefined
  /** A watcher about to start (on the next turn of the event loop). */
  pendingWatch: NodeJS.Immediate | undefined = undefined
  /** Why the watcher found the connection dead. */
  death: HealthCheckFailed | undefined = undefined
  validation: Deferred.Deferred<boolean> | undefined = undefined
  /** Whether the health check ever passed on it: a new connection is probed before its first use. */
  checked = false
  constructor(
    /** Order of the connect attempt: a borrower reports only failures of attempts begun after it arrived. */
    readonly seq: number,
    readonly createdAt: number,
    readonly connection: Connection | undefined,
    readonly error: E | undefined
  ) {
    this.state = connection === undefined ? "failed" : "idle"
    this.lastReturned = createdAt
  }
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
      issues.push(`${name} must be an integer of at least ${least}, got ${value}`)
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
  if (Duration.toMillis(validated.validationInterval) === 0) issues.push("validationInterval must be more than 0")
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

type Verdict<E> =
  | { readonly _tag: "Lend" }
  | { readonly _tag: "Retry" }
  | { readonly _tag: "Fail"; readonly error: E | HealthCheckFailed | PoolTimeout }

const lend: Verdict<never> = { _tag: "Lend" }
const retry: Verdict<never> = { _tag: "Retry" }

/** Why a connection in this state cannot be lent, if it cannot. */
const deathOf = (connection: Connection, state: ConnectionState): HealthCheckFailed | undefined => {
  if (state._tag === "Open") return undefined
  const endpoint = connection.remoteAddress
  const error = state._tag === "Closed"
    ? new TcpError.SocketClosed({ operation: "read", endpoint, reason: "closed" })
    : state.readable
    ? new TcpError.SocketClosed({ operation: "write", endpoint, reason: "write side ended" })
    : new TcpError.UnexpectedEof({ operation: "read", endpoint, received: 0 })
  return new HealthCheckFailed({ endpoint, reason: { _tag: "ConnectionError", error } }, trusted)
}

type Restore = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>

/** Puts what a borrow waits for (a probe, another's validation) under what is left of its deadline. */
type Bound = <A, E>(effect: Effect.Effect<A, E>) => Effect.Effect<A, E | PoolTimeout>

const unbounded: Bound = (effect) => effect

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
    const clock = yield* Effect.clock
    const now = () => clock.unsafeCurrentTimeMillis()
    const poolScope = yield* Effect.scope
    const lifetimeMillis = config.maxLifetime === undefined ? Infinity : Duration.toMillis(config.maxLifetime)
    const validateAfterMillis = Duration.toMillis(config.validateAfterIdle)
    const gate = new Gate(config.max)

    const slots = new Set<Slot<E>>()
    const counts: Record<SlotState, number> = {
      idle: 0,
      validating: 0,
      failed: 0,
      taken: 0,
      claimed: 0,
      busy: 0,
      dead: 0
    }
    let sequence = 0
    let connecting = 0
    let waiting = 0
    let opened = 0
    let closed = 0
    let shuttingDown = false

    const moveTo = (slot: Slot<E>, state: SlotState) => {
      counts[slot.state]--
      counts[state]++
      slot.state = state
    }
    const expired = (slot: Slot<E>) => now() - slot.createdAt >= lifetimeMillis
    /** Items effect/Pool can hand out at once, without waiting for a connect. */
    const available = () => counts.idle + counts.validating + counts.failed

    const snapshot = (): PoolStats => ({
      idle: counts.idle + counts.validating,
      inUse: counts.busy,
      waiting,
      connecting,
      opened,
      closed
    })

    // -------------------------------------------------------------------------
    // watching idle connections: a read parked on each one notices at once when the peer
    // closes it (FIN), resets it (RST) or sends bytes nobody asked for.

    const onIdleEvent = (slot: Slot<E>, exit: Exit.Exit<Option.Option<Uint8Array>, TcpError.ReadError>) =>
      Effect.suspend(() => {
        if (Exit.isInterrupted(exit)) return Effect.void
        slot.watcher = undefined
        const peer = slot.connection!.remoteAddress
        slot.death = Exit.isSuccess(exit) && Option.isSome(exit.value)
          ? new HealthCheckFailed({
            endpoint: peer,
            reason: {
              _tag: "WrongReply",
              expected: "no bytes on an idle connection",
              received: `${exit.value.value.length} bytes`
            }
          }, trusted)
          : new HealthCheckFailed({
            endpoint: peer,
            reason: {
              _tag: "ConnectionError",
              error: Exit.isFailure(exit)
                ? Option.getOrElse(
                  Cause.failureOption(exit.cause),
                  (): TcpError.TcpError =>
                    new TcpError.SocketClosed({ operation: "read", endpoint: peer, reason: "closed" })
                )
                : new TcpError.UnexpectedEof({ operation: "read", endpoint: peer, received: 0 })
            }
          }, trusted)
        // Taken meanwhile: the borrower finds it dead and deals with it.
        if (slot.state !== "idle") return Effect.void
        return Effect.logDebug(`pool: idle connection to ${Endpoint.format(peer)} is gone: ${slot.death.message}`).pipe(
          Effect.zipRight(invalidateSlot(slot))
        )
      })

    /**
     * A read that ends only with the peer: with a `readTimeout` the connection's reads fail with
     * ReadTimeout while the peer says nothing, which is what an idle peer does.
     */
    const awaitPeer = (connection: Connection): Effect.Effect<Option.Option<Uint8Array>, TcpError.ReadError> =>
      Effect.catchTag(connection.read, "ReadTimeout", () => awaitPeer(connection))

    const runtime = yield* Effect.runtime<never>()
    const watchers = new Set<Fiber.RuntimeFiber<void>>()
    yield* Effect.addFinalizer(() => Fiber.interruptAll(watchers))

    const watch = (slot: Slot<E>) => {
      slot.pendingWatch = undefined
      if (shuttingDown || slot.state !== "idle" || slot.watcher !== undefined) return
      const connection = slot.connection!
      const fiber = Runtime.runFork(runtime)(
        Effect.interruptible(
          Effect.uninterruptibleMask((restore) =>
            Effect.flatMap(Effect.exit(restore(awaitPeer(connection))), (exit) => onIdleEvent(slot, exit))
          )
        )
      )
      slot.watcher = fiber
      watchers.add(fiber)
      fiber.addObserver(() => watchers.delete(fiber))
    }

    /**
     * Watches an idle connection from the next turn of the event loop: a connection borrowed again
     * at once (a busy pool) costs no watcher.
     */
    const startWatcher = (slot: Slot<E>): Effect.Effect<void> =>
      Effect.sync(() => {
        if (shuttingDown || slot.connection === undefined || slot.pendingWatch !== undefined) return
        slot.pendingWatch = setImmediate(watch, slot)
      })

    const stopWatcher = (slot: Slot<E>): Effect.Effect<void> =>
      Effect.suspend(() => {
        if (slot.pendingWatch !== undefined) {
          clearImmediate(slot.pendingWatch)
          slot.pendingWatch = undefined
        }
        const watcher = slot.watcher
        slot.watcher = undefined
        return watcher === undefined ? Effect.void : Fiber.interrupt(watcher)
      })

    // -------------------------------------------------------------------------
    // the items of effect/Pool: a failed connect is an item too, so that effect/Pool never sees
    // a failure (after one it stops growing and leaves waiters stranded: see the module docs).

    const open: Effect.Effect<Slot<E>, never, R | Scope.Scope> = Effect.gen(function*() {
      const seq = ++sequence
      connecting++
      const result = yield* Effect.either(acquire).pipe(Effect.ensuring(Effect.sync(() => connecting--)))
      const slot = Either.match(result, {
        onLeft: (error) => new Slot<E>(seq, now(), undefined, error),
        onRight: (connection) => new Slot<E>(seq, now(), connection, undefined)
      })
      slots.add(slot)
      counts[slot.state]++
      if (slot.connection !== undefined) opened++
      yield* Effect.addFinalizer(() =>
        Effect.suspend(() => {
          slots.delete(slot)
          counts[slot.state]--
          slot.state = "dead"
          if (slot.connection !== undefined) closed++
          return stopWatcher(slot)
        })
      )
      yield* startWatcher(slot)
      return slot
    })

    // effect/Pool gives `open` the item's own scope: the connection lives as long as the item.
    const pool = yield* Pool.makeWithTTL({
      acquire: open as Effect.Effect<Slot<E>, never, Exclude<R, Scope.Scope>>,
      min: config.min,
      max: config.max,
      timeToLive: config.idleTimeToLive,
      timeToLiveStrategy: "usage"
    })

    function invalidateSlot(slot: Slot<E>): Effect.Effect<void> {
      return Effect.suspend(() => {
        if (slot.state !== "dead") moveTo(slot, "dead")
        return pool.invalidate(slot)
      })
    }

    // -------------------------------------------------------------------------
    // borrowing. Everything a borrow takes (a permit of the gate, an item of effect/Pool, the
    // lent connection) is registered in a scope that the caller owns: closing it gives all of it
    // back, even what a borrow abandoned by its deadline obtains after the scope closed.

    /** An item from effect/Pool into `scope`. */
    const take = (scope: Scope.Scope): Effect.Effect<Slot<E>> => {
      const get = Scope.extend(pool.get, scope)
      // effect/Pool waits for an item being created without allowing interruption: detach that wait.
      return available() > 0 ? get : Effect.disconnect(get)
    }

    /** Puts a lent or inspected slot back in order when its scope closes with `exit`. */
    const settle = (slot: Slot<E>, exit: Exit.Exit<unknown, unknown>): Effect.Effect<void> =>
      Effect.suspend(() => {
        switch (slot.state) {
          case "busy":
            if (!inStep(exit, keepOnFailure) || expired(slot)) return invalidateSlot(slot)
            moveTo(slot, "idle")
            slot.lastReturned = now()
            return startWatcher(slot)
          case "taken":
            // Never inspected (abandoned meanwhile): back to where it was.
            if (slot.connection === undefined || slot.death !== undefined) return invalidateSlot(slot)
            moveTo(slot, "idle")
            return slot.watcher === undefined ? startWatcher(slot) : Effect.void
          case "claimed":
          case "idle":
          case "validating":
          case "failed":
          case "dead":
            return Effect.void
        }
      })

    /**
     * A connect proves only that the kernel completed a handshake (it does for a frozen or
     * overloaded server, and a proxy accepts for a backend that is down): with a health check, a new
     * connection is probed before its first use, and an idle one after `validateAfterIdle`.
     */
    const needsProbe = (slot: Slot<E>): boolean =>
      probe !== undefined && (!slot.checked || now() - slot.lastReturned >= validateAfterMillis)

    /** Decides whether a taken slot may be lent; an old failure is retried, a fresh one reported. */
    const inspect = (slot: Slot<E>, since: number, restore: Restore, bound: Bound): Effect.Effect<Verdict<E>> =>
      Effect.gen(function*() {
        const fresh = slot.seq > since
        if (slot.connection === undefined) return fresh ? { _tag: "Fail", error: slot.error! } : retry
        if (slot.state === "claimed") {
          const healthy = yield* Effect.either(restore(bound(Deferred.await(slot.validation!))))
          if (Either.isLeft(healthy)) return { _tag: "Fail", error: healthy.left }
          if (!healthy.right) return retry
        } else {
          yield* stopWatcher(slot)
        }
        // The watcher may have seen the peer go just before it was stopped: `death` says so; a FIN or
        // RST that came before the watcher started shows in the state.
        if (slot.death === undefined) slot.death = deathOf(slot.connection, yield* slot.connection.state)
        if (slot.state === "dead" || slot.death !== undefined) {
          return fresh && slot.death ? { _tag: "Fail", error: slot.death } : retry
        }
        if (expired(slot)) return retry
        moveTo(slot, "busy")
        if (needsProbe(slot)) {
          const checked = yield* Effect.either(restore(bound(probe!(slot.connection))))
          if (Either.isLeft(checked)) {
            if (checked.left._tag === "PoolTimeout" || fresh) return { _tag: "Fail", error: checked.left }
            return retry
          }
          slot.checked = true
        }
        return lend
      })

    /** One try: an item, then its inspection; an unfit item is invalidated and given back at once. */
    const attempt = (
      scope: Scope.Scope,
      since: number,
      bound: Bound
    ): Effect.Effect<Slot<E> | undefined, E | HealthCheckFailed | PoolTimeout> =>
      Effect.uninterruptibleMask((restore) =>
        Effect.gen(function*() {
          const itemScope = yield* Scope.fork(scope, ExecutionStrategy.sequential)
          const taken = yield* Effect.exit(restore(take(itemScope)))
          if (Exit.isFailure(taken)) {
            yield* Scope.close(itemScope, Exit.void)
            return yield* Effect.failCause(taken.cause)
          }
          const slot = taken.value
          if (slot.state === "dead") {
            // Already given up on (an invalidation the closing pool did not act on): never lent again.
            yield* Scope.close(itemScope, Exit.void)
            return undefined
          }
          moveTo(slot, slot.state === "validating" ? "claimed" : "taken")
          // Runs before effect/Pool's own finalizer in this scope, which gives the item back.
          yield* Scope.addFinalizerExit(itemScope, (exit) => settle(slot, exit))
          const verdict = yield* Effect.exit(inspect(slot, since, restore, bound))
          if (Exit.isSuccess(verdict) && verdict.value._tag === "Lend") return slot
          yield* invalidateSlot(slot)
          yield* Scope.close(itemScope, Exit.void)
          if (Exit.isFailure(verdict)) return yield* Effect.failCause(verdict.cause)
          if (verdict.value._tag === "Fail") return yield* Effect.fail(verdict.value.error)
          return undefined
        })
      )

    const retrying = (scope: Scope.Scope, since: number): Effect.Effect<Slot<E>, E | HealthCheckFailed | PoolTimeout> =>
      Effect.flatMap(attempt(scope, since, unbounded), (slot) =>
        slot === undefined ? retrying(scope, since) : Effect.succeed(slot))

    /** A permit of the gate, given back when `scope` closes (at once if it already has). */
    const permit = (scope: Scope.Scope) =>
      Scope.extend(Effect.acquireRelease(Effect.interruptible(gate.take), () => Effect.sync(gate.release)), scope)

    /** A permit at once, if one is free and a connection is idle: then no deadline is needed. */
    const permitNow = (scope: Scope.Scope): Effect.Effect<boolean> =>
      Effect.uninterruptible(Effect.suspend(() =>
        available() > 0 && gate.tryTake()
          ? Effect.as(Scope.addFinalizer(scope, Effect.sync(gate.release)), true)
          : Effect.succeed(false)
      ))

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

    /**
     * Borrows into `scope`; on failure the caller closes `scope`. `acquireTimeout` bounds the whole
     * borrow, queueing, connecting and probing included. A borrow that finds a free permit and an
     * idle connection makes its first attempt without arming the deadline for the whole (a timer and
     * two fibers, the largest part of a borrow's cost): only a probe or a wait in it is timed, with
     * what is left of the deadline, and so is every later wait.
     */
    const borrow = (scope: Scope.Scope): Effect.Effect<Slot<E>, BorrowError<E>> =>
      Effect.suspend((): Effect.Effect<Slot<E>, BorrowError<E>> => {
        // Only a borrower that would queue for a connection someone else holds counts against the bound.
        if (gate.waiting >= config.maxWaiters && !gate.open) {
          return Effect.fail(new TooManyWaiters({ maxWaiters: config.maxWaiters, endpoint }, trusted))
        }
        const since = sequence
        const startedAt = now()
        const left = () => Duration.millis(Math.max(0, acquireMillis - (now() - startedAt)))
        // Interruptible even where the caller is not, or the deadline could not stop the wait.
        const deadline: Bound = (effect) =>
          Effect.suspend(() => Effect.timeoutFail(Effect.interruptible(effect), { duration: left(), onTimeout: timeout }))
        const waitFor = (permitted: Effect.Effect<void>) =>
          Effect.suspend(() => {
            waiting++
            return deadline(Effect.zipRight(permitted, retrying(scope, since))).pipe(
              Effect.ensuring(Effect.sync(() => waiting--))
            )
          })
        return Effect.flatMap(permitNow(scope), (permitted) =>
          permitted
            ? Effect.flatMap(attempt(scope, since, deadline), (slot) =>
              slot === undefined ? waitFor(Effect.void) : Effect.succeed(slot))
            : waitFor(permit(scope)))
      })

    /** Borrows the careful way: every case, every wait under the deadline. */
    const useCarefully = <A, E2, R2>(
      f: (connection: Connection) => Effect.Effect<A, E2, R2>,
      restore: Restore
    ): Effect.Effect<A, E2 | BorrowError<E>, R2> =>
      Effect.flatMap(Scope.make(), (scope) =>
        Effect.flatMap(Effect.exit(restore(borrow(scope))), (borrowed): Effect.Effect<A, E2 | BorrowError<E>, R2> => {
          if (Exit.isFailure(borrowed)) {
            return Effect.zipRight(Scope.close(scope, Exit.void), Effect.failCause(borrowed.cause))
          }
          return Effect.flatMap(Effect.exit(restore(f(borrowed.value.connection!))), (exit) =>
            Effect.zipRight(Scope.close(scope, exit), exit))
        }))

    /**
     * The common case, without the deadline's fibers nor the inspection's: a free permit and an
     * idle connection that needs no probe. Anything else goes back and takes the careful way.
     */
    const useAtOnce = <A, E2, R2>(
      f: (connection: Connection) => Effect.Effect<A, E2, R2>,
      restore: Restore
    ): Effect.Effect<A, E2 | BorrowError<E>, R2> =>
      Effect.flatMap(Scope.make(), (scope) =>
        Effect.flatMap(Scope.extend(pool.get, scope), (slot): Effect.Effect<A, E2 | BorrowError<E>, R2> => {
          const fit = slot.state === "idle" && slot.watcher === undefined && slot.death === undefined &&
            !expired(slot) && !needsProbe(slot)
          const careful = Effect.zipRight(
            Scope.close(scope, Exit.void),
            Effect.suspend(() => {
              gate.release()
              return useCarefully(f, restore)
            })
          )
          if (!fit) return careful
          const connection = slot.connection!
          // A FIN or RST that came before the watcher started shows in the state.
          return Effect.flatMap(connection.state, (state) => {
            if (state._tag !== "Open") return careful
            if (slot.pendingWatch !== undefined) {
              clearImmediate(slot.pendingWatch)
              slot.pendingWatch = undefined
            }
            moveTo(slot, "busy")
            return Effect.flatMap(Effect.exit(restore(f(connection))), (exit) =>
              settle(slot, exit).pipe(
                Effect.zipRight(Scope.close(scope, exit)),
                Effect.zipRight(Effect.sync(gate.release)),
                Effect.zipRight(exit)
              ))
          })
        }))

    const use = <A, E2, R2>(
      f: (connection: Connection) => Effect.Effect<A, E2, R2>
    ): Effect.Effect<A, E2 | BorrowError<E>, R2> =>
      Effect.uninterruptibleMask((restore) =>
        Effect.suspend(() =>
          available() > 0 && gate.tryTake() ? useAtOnce(f, restore) : useCarefully(f, restore)
        )
      )

    const get: Effect.Effect<Connection, BorrowError<E>, Scope.Scope> = Effect.uninterruptibleMask((restore) =>
      Effect.gen(function*() {
        const scope = yield* Scope.fork(yield* Effect.scope, ExecutionStrategy.sequential)
        const borrowed = yield* Effect.exit(restore(borrow(scope)))
        if (Exit.isFailure(borrowed)) {
          yield* Scope.close(scope, Exit.void)
          return yield* Effect.failCause(borrowed.cause)
        }
        return borrowed.value.connection!
      })
    )

    const invalidate = (connection: Connection): Effect.Effect<void> =>
      Effect.suspend(() => {
        for (const slot of slots) {
          if (slot.connection === connection) return Effect.zipRight(connection.close, invalidateSlot(slot))
        }
        return Effect.void
      })

    // -------------------------------------------------------------------------
    // background validation: probes idle connections, closes expired ones, and lets effect/Pool
    // retry failed connects (so that `min` connections come back after an outage).

    const validateIdle = (slot: Slot<E>): Effect.Effect<void> =>
      Effect.gen(function*() {
        if (slot.state === "failed") return yield* invalidateSlot(slot)
        if (slot.state !== "idle") return
        if (expired(slot)) return yield* invalidateSlot(slot)
        if (probe === undefined) return
        moveTo(slot, "validating")
        const done = yield* Deferred.make<boolean>()
        slot.validation = done
        yield* stopWatcher(slot)
        const healthy = slot.death === undefined && Either.isRight(yield* Effect.either(probe(slot.connection!)))
        slot.validation = undefined
        const state = slot.state as SlotState
        if (!healthy) {
          yield* Effect.logDebug(
            `pool: idle connection to ${Endpoint.format(slot.connection!.remoteAddress)} failed its health check`
          )
          if (state === "validating") yield* invalidateSlot(slot)
        } else if (state === "validating") {
          moveTo(slot, "idle")
          slot.checked = true
          slot.lastReturned = now()
          yield* startWatcher(slot)
        } else if (state === "claimed") {
          slot.checked = true
          slot.lastReturned = now()
        }
        yield* Deferred.succeed(done, healthy)
      })

    yield* Effect.suspend(() =>
      Effect.forEach(Array.from(slots), validateIdle, { concurrency: "unbounded", discard: true })
    ).pipe(
      Effect.schedule(Schedule.spaced(config.validationInterval)),
      Effect.interruptible,
      Effect.forkIn(poolScope)
    )

    // Added last, so it runs first when the pool's scope closes: no watcher starts after it.
    yield* Effect.addFinalizer(() => Effect.sync(() => (shuttingDown = true)))
    return { use, get, invalidate, stats: Effect.sync(snapshot) } satisfies ConnectionPool<E>
  })

/** @internal */
export const make = (
  options: PoolOptions & Tcp.ConnectOptions
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
    yield* Options.validate(Options.ConnectOptions, "connect", connect)
    const tcp = yield* Tcp.Tcp
    return yield* makeWith(tcp.connect(connect), options, Endpoint.make(options.host, options.port))
  })
