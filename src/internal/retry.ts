import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { dual } from "effect/Function"
import * as Predicate from "effect/Predicate"
import * as Random from "effect/Random"
import * as Schedule from "effect/Schedule"
import * as ScheduleDecision from "effect/ScheduleDecision"
import * as ScheduleInterval from "effect/ScheduleInterval"
import * as ScheduleIntervals from "effect/ScheduleIntervals"
import * as Schema from "effect/Schema"
import type * as Retry from "../Retry.js"
import type { BackoffOptions, RetryEvent, RetryOptions } from "../Retry.js"
import * as TcpError from "../TcpError.js"
import * as Options from "./options.js"

const defaultJitter = 0.2

const durationIssue = (what: string, input: Duration.DurationInput | undefined): string | undefined => {
  if (input === undefined) return undefined
  const decoded = Schema.decodeUnknownEither(Options.DurationOption)(input)
  return Either.isLeft(decoded) ? `${what} must be a finite, non-negative duration, got ${
      typeof input === "string" ? JSON.stringify(input) : String(input)
    }` : undefined
}

const isRetryCount = (n: unknown): n is number => n === Infinity || (Number.isSafeInteger(n) && (n as number) >= 0)

/** Every problem with the options, so that one `InvalidOptions` names them all. */
const issuesOf = (options: BackoffOptions): Array<string> => {
  const issues: Array<string> = []
  const push = (issue: string | undefined) => issue !== undefined && issues.push(issue)
  push(durationIssue("base", options.base))
  push(durationIssue("cap", options.cap))
  const factor = options.factor
  if (factor !== undefined && !(typeof factor === "number" && Number.isFinite(factor) && factor >= 1)) {
    issues.push(`factor must be a finite number of at least 1, got ${factor}`)
  }
  const jitter = options.jitter
  if (jitter !== undefined && typeof jitter !== "boolean" && !(typeof jitter === "number" && jitter >= 0 && jitter <= 1)) {
    issues.push(`jitter must be a boolean or a fraction from 0 to 1, got ${jitter}`)
  }
  if (options.retries !== undefined && options.attempts !== undefined) {
    issues.push("give either retries or attempts, not both")
  } else if (options.attempts !== undefined && !(isRetryCount(options.attempts) && options.attempts >= 1)) {
    issues.push(`attempts must be an integer of at least 1 (or Infinity), got ${options.attempts}`)
  } else if (options.retries !== undefined && !isRetryCount(options.retries)) {
    issues.push(`retries must be a non-negative integer (or Infinity), got ${options.retries}`)
  }
  return issues
}

/** @internal */
export const exponential = (
  options: BackoffOptions = {}
): Effect.Effect<Schedule.Schedule<Duration.Duration, unknown>, TcpError.InvalidOptions> =>
  Effect.suspend(() => {
    const issues = issuesOf(options ?? {})
    if (issues.length > 0) {
      // A policy retries any effect: its options belong to no one socket operation.
      return Effect.fail(new TcpError.InvalidOptions({ issues: `Retry.exponential: ${issues.join("; ")}` }))
    }
    return Effect.succeed(make(options ?? {}))
  })

const make = (options: BackoffOptions): Schedule.Schedule<Duration.Duration, unknown> => {
  const base = Duration.toMillis(Duration.decode(options.base ?? "1 second"))
  const cap = options.cap === undefined ? Infinity : Duration.toMillis(Duration.decode(options.cap))
  const factor = options.factor ?? 2
  const jitter = options.jitter === false ? 0 : options.jitter === true || options.jitter === undefined
    ? defaultJitter
    : options.jitter
  const retries = options.attempts !== undefined ? options.attempts - 1 : options.retries ?? 3
  const nominal = (retry: number) => Math.min(base * Math.pow(factor, retry), cap)
  const delay = (retry: number): Effect.Effect<number> =>
    jitter === 0
      ? Effect.succeed(nominal(retry))
      : Effect.map(Random.next, (random) => Math.round(nominal(retry) * (1 - jitter * random)))
  return Schedule.makeWithState(0, (now, _input: unknown, retry: number) => {
    if (retry >= retries) return Effect.succeed([retry, Duration.zero, ScheduleDecision.done] as const)
    return Effect.map(delay(retry), (millis) =>
      [
        retry + 1,
        Duration.millis(millis),
        ScheduleDecision.continueWith(ScheduleInterval.after(now + millis))
      ] as const)
  })
}

/** @internal */
export const isRetryable = (error: unknown): boolean => {
  if (TcpError.isTcpError(error)) return TcpError.isTransient(error)
  return Predicate.hasProperty(error, "transient") && error.transient === true
}

const tagOf = (error: unknown): string =>
  Predicate.hasProperty(error, "_tag") && typeof error._tag === "string"
    ? error._tag
    : error instanceof Error
    ? error.name
    : String(error)

/** @internal */
export const logRetry = (event: RetryEvent<unknown>): Effect.Effect<void> =>
  Effect.logInfo(
    `attempt ${event.attempt} failed with ${tagOf(event.error)}, retrying in ${Duration.format(event.delay)}`
  )

type Step<Out> = readonly [readonly [unknown, number], Out, ScheduleDecision.ScheduleDecision]

/**
 * Wraps a policy so that a failure it does not accept ends it at once, and every retry it
 * decides is announced: the announcement runs only once the decision to go on is made.
 *
 * @internal
 */
export const announced = <Out, In, R, R2>(
  policy: Schedule.Schedule<Out, In, R>,
  accept: (error: In) => boolean,
  onRetry: (event: RetryEvent<In>) => Effect.Effect<void, never, R2>
): Schedule.Schedule<Out, In, R | R2> =>
  Schedule.makeWithState(
    [policy.initial, 0] as readonly [unknown, number],
    (now, input: In, [state, failures]): Effect.Effect<Step<Out>, never, R | R2> => {
      if (!accept(input)) {
        return Effect.succeed([[state, failures], undefined as Out, ScheduleDecision.done])
      }
      const step = policy.step(now, input, state as any)
      return Effect.flatMap(step, ([next, out, decision]): Effect.Effect<Step<Out>, never, R2> => {
        const attempt = failures + 1
        const nextState = [next, attempt] as const
        if (ScheduleDecision.isDone(decision)) return Effect.succeed([nextState, out, decision])
        const delay = Duration.millis(Math.max(0, ScheduleIntervals.start(decision.intervals) - now))
        return Effect.as(onRetry({ attempt, error: input, delay }), [nextState, out, decision])
      })
    }
  )

/** @internal */
export const transient = <Out, In, R>(policy: Schedule.Schedule<Out, In, R>): Schedule.Schedule<Out, In, R> =>
  Schedule.whileInput(policy, isRetryable)

/** @internal */
export const retryTransient: typeof Retry.retryTransient = dual(
  (args) => args.length >= 2 && (Schedule.isSchedule(args[1]) || Effect.isEffect(args[1])),
  <A, E extends In, R, Out, In, R2, R3, E2>(
    self: Effect.Effect<A, E, R>,
    policy: Schedule.Schedule<Out, In, R2> | Effect.Effect<Schedule.Schedule<Out, In, R2>, E2>,
    options: RetryOptions<In, R3> | undefined
  ): Effect.Effect<A, E | E2, R | R2 | R3> => {
    const retry = (schedule: Schedule.Schedule<Out, In, R2>) =>
      Effect.retry(self, announced(schedule, options?.while ?? isRetryable, options?.onRetry ?? logRetry))
    // A policy still to be built (`Retry.exponential`) fails with its InvalidOptions before the first attempt.
    return Effect.isEffect(policy) ? Effect.flatMap(policy, retry) : retry(policy)
  }
)
