/**
 * A semaphore that serves waiters first come, first served and wakes exactly one per release.
 *
 * effect's own `Semaphore` wakes every waiter on each release and lets the first to run win, so a
 * thousand borrowers waiting for ten connections cost a million wake-ups and the order is left to
 * the scheduler. Here a release hands its permit to the oldest waiter directly.
 *
 * A wait is in two steps, so that a permit granted at the very moment its waiter is interrupted is
 * never lost: `enqueue` takes a ticket, `await` waits for it to be granted, and `settle` (called
 * once, however the wait ended) says whether the permit is the caller's, and takes the ticket out
 * of the queue if it is not.
 *
 * @internal
 */
import * as Effect from "effect/Effect"

/** @internal */
export interface Ticket {
  granted: boolean
  cancelled: boolean
  resume: ((effect: Effect.Effect<void>) => void) | undefined
}

/** @internal */
export class FifoSemaphore {
  private readonly queue: Array<Ticket | undefined> = []
  private head = 0
  /** Tickets in the queue that are neither granted nor cancelled. */
  private queued = 0
  /** Cancelled tickets still in the queue. */
  private cancelled = 0

  constructor(private free: number) {}

  /** Callers waiting for a permit. */
  get waiting(): number {
    return this.queued
  }

  /** Whether a permit is free and nobody waits for one. */
  get open(): boolean {
    return this.free > 0 && this.queued === 0
  }

  /** A permit now, if one is free and nobody waits for one. */
  tryTake(): boolean {
    if (!this.open) return false
    this.free--
    return true
  }

  /** Joins the queue. */
  enqueue(): Ticket {
    const ticket: Ticket = { granted: false, cancelled: false, resume: undefined }
    this.queue.push(ticket)
    this.queued++
    return ticket
  }

  /** Waits until `ticket` is granted; interruptible. */
  await(ticket: Ticket): Effect.Effect<void> {
    return Effect.async<void>((resume) => {
      if (ticket.granted) return resume(Effect.void)
      ticket.resume = resume
      return Effect.sync(() => {
        ticket.resume = undefined
      })
    })
  }

  /** After a wait ended, however: whether the permit is the caller's now (else the ticket leaves the queue). */
  settle(ticket: Ticket): boolean {
    ticket.resume = undefined
    if (ticket.granted) return true
    if (!ticket.cancelled) {
      ticket.cancelled = true
      this.queued--
      // Waiters that gave up (a deadline, an interruption) leave the queue in bulk once they
      // outnumber those still waiting: a queue nobody releases does not grow without bound.
      if (++this.cancelled > 64 && this.cancelled > this.queued) this.compact()
    }
    return false
  }

  /** Gives a permit back: to the oldest waiter if there is one. */
  release(): void {
    while (this.head < this.queue.length) {
      const ticket = this.queue[this.head]!
      this.queue[this.head++] = undefined
      if (this.head === this.queue.length) {
        this.queue.length = 0
        this.head = 0
      } else if (this.head > 1024 && this.head * 2 > this.queue.length) {
        this.queue.splice(0, this.head)
        this.head = 0
      }
      if (ticket.cancelled) {
        this.cancelled--
        continue
      }
      this.queued--
      ticket.granted = true
      ticket.resume?.(Effect.void)
      return
    }
    this.free++
  }

  private compact(): void {
    let kept = 0
    for (let at = this.head; at < this.queue.length; at++) {
      const ticket = this.queue[at]!
      if (!ticket.cancelled) this.queue[kept++] = ticket
    }
    this.queue.length = kept
    this.head = 0
    this.cancelled = 0
  }
}
