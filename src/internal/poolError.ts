/**
 * The pool's own errors. They live here, not in `ConnectionPool.ts`, so that the pool's
 * implementation can construct them without importing the public module that re-exports it.
 *
 * @internal
 */
import * as Schema from "effect/Schema"
import * as Endpoint from "../Endpoint.js"

/**
 * No connection could be lent within `acquireTimeout`: all of them were in use (or being
 * connected) for that long. The counts are those at the deadline.
 *
 * @since 0.1.0
 * @category errors
 */
export class PoolTimeout extends Schema.TaggedError<PoolTimeout>()("PoolTimeout", {
  timeoutMillis: Schema.Number,
  max: Schema.Number,
  inUse: Schema.Number,
  waiting: Schema.Number,
  connecting: Schema.Number,
  endpoint: Schema.optional(Endpoint.Endpoint)
}) {
  override get message(): string {
    const to = this.endpoint === undefined ? "" : ` to ${Endpoint.format(this.endpoint)}`
    return `no connection from the pool${to} within ${this.timeoutMillis} ms (${this.inUse} of ${this.max} in use, ${this.connecting} connecting, ${this.waiting} waiting): raise max or acquireTimeout, or look for uses that hold connections too long`
  }

  /** Trying again later may succeed. */
  get transient(): boolean {
    return true
  }
}

/**
 * A borrower arrived while all `max` connections were lent (or being opened) and `maxWaiters`
 * borrowers were already queued for one: it is turned away at once instead of joining the queue
 * (load shedding). Not transient: retrying at once would defeat the bound.
 *
 * @since 0.1.0
 * @category errors
 */
export class TooManyWaiters extends Schema.TaggedError<TooManyWaiters>()("TooManyWaiters", {
  maxWaiters: Schema.Number,
  endpoint: Schema.optional(Endpoint.Endpoint)
}) {
  override get message(): string {
    const to = this.endpoint === undefined ? "" : ` to ${Endpoint.format(this.endpoint)}`
    return `the pool${to} already has ${this.maxWaiters} borrowers waiting (maxWaiters): shed this request, or raise max or maxWaiters`
  }

  /** Not worth retrying at once. */
  get transient(): boolean {
    return false
  }
}
