/**
 * Retry policies for TCP operations: exponential backoff with a cap and jitter, and a combinator
 * that retries only the failures worth retrying, keeps the error type and logs every retry.
 *
 * @since 0.1.0
 */
import type * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import type * as Schedule from "effect/Schedule"
import * as internal from "./internal/retry.js"
import type { InvalidOptions } from "./TcpError.js"

/**
 * Options of {@link exponential}. Durations are `Duration.DurationInput`: milliseconds or `"5 seconds"`.
 *
 * @since 0.1.0
 * @category models
 */
export interface BackoffOptions {
  /** The first delay. Default 1 second. */
  readonly base?: Duration.DurationInput
  /** Each delay is the previous one times `factor` (at least 1). Default 2. */
  readonly factor?: number
  /** The longest delay, jitter included. Default: no cap. */
  readonly cap?: Duration.DurationInput
  /** Retries after the first attempt; `Infinity` retries until success. Default 3. Give this or `attempts`. */
  readonly retries?: number
  /** Attempts in all, the first one included (`retries + 1`). Give this or `retries`. */
  readonly attempts?: number
  /**
   * Shortens each delay by a random part of up to this fraction (`true` means 0.2), so that
   * clients that failed together do not all come back at the same instant. A delay never exceeds
   * its nominal value nor the cap. `false` gives exact delays, for reproducible tests. Default true.
   */
  readonly jitter?: boolean | number
}

/**
 * Exponential backoff: `base`, `base * factor`, `base * factor²`, ... capped at `cap`, shortened by
 * jitter, for `retries` retries. Its output is the delay before the next attempt. The defaults are
 * the seed's policy (wait 1 s, 2 s, 4 s, then give up), with jitter; add `jitter: false` for the
 * exact delays.
 *
 * The schedule comes in an Effect, which fails with `InvalidOptions` naming every bad option (a
 * negative, NaN or unparsable duration, a factor below 1, both `retries` and `attempts`, a jitter
 * outside 0 to 1): a `Schedule` cannot carry a typed error, and a constructor never throws.
 * `retryTransient` takes that Effect as it is (the `InvalidOptions` then comes before the first
 * attempt); for `Effect.retry` or `Schedule` combinators, get the schedule out first.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Retry, Tcp } from "effect-tcp"
 *
 * // The seed's policy: 1 s, 2 s, 4 s, then give up.
 * const connect = Tcp.connect({ host: "localhost", port: 8080 }).pipe(
 *   Retry.retryTransient(Retry.exponential({ jitter: false }))
 * )
 *
 * // Reconnect forever, 100 ms doubling up to 30 s, jittered, with Effect.retry.
 * const reconnect = Effect.gen(function*() {
 *   const policy = yield* Retry.exponential({ base: "100 millis", cap: "30 seconds", retries: Infinity })
 *   return yield* Tcp.connect({ host: "localhost", port: 8080 }).pipe(Effect.retry(Retry.transient(policy)))
 * })
 * ```
 *
 * @since 0.1.0
 * @category schedules
 */
export const exponential: (
  options?: BackoffOptions
) => Effect.Effect<Schedule.Schedule<Duration.Duration, unknown>, InvalidOptions> = internal.exponential

/**
 * Whether a failure is worth retrying: a `TcpError` for which `TcpError.isTransient` holds
 * (refused, reset, timeouts, a temporary DNS failure, ...), or any other error whose `transient`
 * property is `true` (as `HealthCheckFailed`, `PoolTimeout` and `AllEndpointsFailed` have).
 * A name that does not exist, a port in use, permission denied or bad options are not.
 *
 * @since 0.1.0
 * @category predicates
 */
export const isRetryable: (error: unknown) => boolean = internal.isRetryable

/**
 * Restricts a policy to the failures worth retrying ({@link isRetryable}): on any other failure
 * it stops at once. For `Effect.retry` when no log line is wanted.
 *
 * @example
 * ```ts
 * import { Effect, Schedule } from "effect"
 * import { Retry, Tcp } from "effect-tcp"
 *
 * const connect = Tcp.connect({ host: "localhost", port: 8080 }).pipe(
 *   Effect.retry(Retry.transient(Schedule.exponential("100 millis").pipe(Schedule.upTo("10 seconds"))))
 * )
 * ```
 *
 * @since 0.1.0
 * @category schedules
 */
export const transient: <Out, In, R>(policy: Schedule.Schedule<Out, In, R>) => Schedule.Schedule<Out, In, R> =
  internal.transient

/**
 * What is known when a retry is decided.
 *
 * @since 0.1.0
 * @category models
 */
export interface RetryEvent<E> {
  /** The attempt that just failed, from 1. */
  readonly attempt: number
  /** Its failure. */
  readonly error: E
  /** The pause before the next attempt. */
  readonly delay: Duration.Duration
}

/**
 * Options of {@link retryTransient}.
 *
 * @since 0.1.0
 * @category models
 */
export interface RetryOptions<E, R = never> {
  /** Which failures to retry. Default {@link isRetryable}. */
  readonly while?: (error: E) => boolean
  /**
   * Runs before each retry, once it is decided, in place of the default log line
   * (`attempt 1 failed with ConnectionRefused, retrying in 1s`, at level Info).
   */
  readonly onRetry?: (event: RetryEvent<E>) => Effect.Effect<void, never, R>
}

/**
 * Retries an effect with `policy`, but only while its failures are transient ({@link isRetryable},
 * or `options.while`): any other failure, or the policy's end, fails with the last error, so the
 * error type is unchanged. Each retry is logged (at Info) with the number of the attempt that
 * failed, the error's tag and the delay, once the retry is certain: a failure that ends the
 * policy is never announced as retried. The policy may be a `Schedule` or the Effect that
 * `exponential` returns: then its `InvalidOptions` fails the whole before the first attempt.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { NodeTcp, Retry, Tcp } from "effect-tcp"
 *
 * // Logs "attempt 1 failed with ConnectionRefused, retrying in 1s", then 2s, 4s;
 * // a DnsLookupFailed for a name that does not exist fails at once.
 * const program = Tcp.connect({ host: "localhost", port: 8080, connectTimeout: "5 seconds" }).pipe(
 *   Retry.retryTransient(Retry.exponential({ jitter: false })),
 *   Effect.flatMap((connection) => connection.write("hello")),
 *   Effect.scoped,
 *   Effect.provide(NodeTcp.layer)
 * )
 * ```
 *
 * @since 0.1.0
 * @category combinators
 */
export const retryTransient: {
  <Out, In, R2, R3 = never>(
    policy: Schedule.Schedule<Out, In, R2>,
    options?: RetryOptions<In, R3>
  ): <A, E extends In, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R | R2 | R3>
  <Out, In, R2, E2, R3 = never>(
    policy: Effect.Effect<Schedule.Schedule<Out, In, R2>, E2>,
    options?: RetryOptions<In, R3>
  ): <A, E extends In, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E | E2, R | R2 | R3>
  <A, E extends In, R, Out, In, R2, R3 = never>(
    self: Effect.Effect<A, E, R>,
    policy: Schedule.Schedule<Out, In, R2>,
    options?: RetryOptions<In, R3>
  ): Effect.Effect<A, E, R | R2 | R3>
  <A, E extends In, R, Out, In, R2, E2, R3 = never>(
    self: Effect.Effect<A, E, R>,
    policy: Effect.Effect<Schedule.Schedule<Out, In, R2>, E2>,
    options?: RetryOptions<In, R3>
  ): Effect.Effect<A, E | E2, R | R2 | R3>
} = internal.retryTransient
