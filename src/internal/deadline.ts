import type * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"

/**
 * One timer for every wait of one kind on a connection (its reads, or its writes), re-armed
 * lazily as Node's own `socket.setTimeout` is: a wait only notes when it began, and the timer,
 * when it fires, fails the waits that are overdue and sleeps until the next one is. A race per
 * wait (`Effect.timeoutFail`) forks two fibers and a timer each time, which tripled the cost of a
 * round trip.
 *
 * The timer is a fiber sleeping on the connection's `Clock`, so `TestClock` drives it; it is
 * started by the first wait that needs it and ends by itself once nothing waits.
 *
 * @internal
 */
export class Deadline {
  private armed = false
  private fiber: Fiber.RuntimeFiber<void> | undefined = undefined
  private readonly clock: Clock.Clock
  /** Fails the overdue waits; returns how long to sleep until the next check, or undefined when nothing waits. */
  private readonly check: (now: number) => number | undefined

  constructor(clock: Clock.Clock, check: (now: number) => number | undefined) {
    this.clock = clock
    this.check = check
  }

  private readonly loop: Effect.Effect<void> = Effect.suspend(() => {
    const next = this.check(this.clock.unsafeCurrentTimeMillis())
    if (next === undefined) {
      this.armed = false
      return Effect.void
    }
    return Effect.flatMap(this.clock.sleep(Duration.millis(next)), () => this.loop)
  })

  private readonly start: Effect.Effect<void> = Effect.asVoid(
    Effect.forkDaemon(Effect.withFiberRuntime<void>((fiber) => {
      this.fiber = fiber
      return this.loop
    }))
  )

  /** The effect a wait runs before it suspends: starts the timer unless it runs already. */
  arm(): Effect.Effect<void> | undefined {
    if (this.armed) return undefined
    this.armed = true
    return this.start
  }

  /** Stops the timer without waiting for it (the connection was destroyed). */
  unsafeStop(): void {
    this.fiber?.unsafeInterruptAsFork(FiberId.none)
  }

  /** Stops the timer and waits until its fiber has ended. */
  readonly stop: Effect.Effect<void> = Effect.suspend(() => {
    const fiber = this.fiber
    this.fiber = undefined
    return fiber === undefined ? Effect.void : Fiber.interrupt(fiber)
  })
}
