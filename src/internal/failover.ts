import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import type { Connection } from "../Connection.js"
import * as Endpoint from "../Endpoint.js"
import type { FailoverOptions } from "../Failover.js"
import * as Tcp from "../Tcp.js"
import * as TcpError from "../TcpError.js"
import { showValue } from "./options.js"

/** @internal */
export const EndpointFailure = Schema.Struct({
  endpoint: Endpoint.Endpoint,
  error: TcpError.ConnectError
})

/** @internal */
export class AllEndpointsFailed extends Schema.TaggedError<AllEndpointsFailed>()("AllEndpointsFailed", {
  failures: Schema.Array(EndpointFailure)
}) {
  override get message(): string {
    if (this.failures.length === 0) return "no endpoint to connect to: the list of endpoints is empty"
    const each = this.failures.map(({ endpoint, error }) => `${Endpoint.format(endpoint)} ${error._tag}`)
    return `all ${this.failures.length} endpoints failed: ${each.join(", ")}`
  }

  /** Whether trying the endpoints again later may succeed. */
  get transient(): boolean {
    return this.failures.some(({ error }) => TcpError.isTransient(error))
  }
}

/** For errors built from this module's own values: Schema's check of them costs up to a millisecond. */
const trusted = { disableValidation: true } as const

const defaultAttemptDelay = Duration.millis(250)

type Target = { readonly host: string; readonly port: number } | { readonly path: string }

const validate = (options: FailoverOptions): Effect.Effect<Duration.Duration, TcpError.InvalidOptions> => {
  const invalid = (issues: string) => Effect.fail(new TcpError.InvalidOptions({ operation: "connect", issues }))
  if (options.strategy !== undefined && options.strategy !== "sequential" && options.strategy !== "race") {
    return invalid(`strategy must be "sequential" or "race", got ${JSON.stringify(options.strategy)}`)
  }
  if (options.attemptDelay === undefined) return Effect.succeed(defaultAttemptDelay)
  const delay = Duration.decodeUnknown(options.attemptDelay)
  const negative = typeof options.attemptDelay === "number" && options.attemptDelay < 0
  if (Option.isNone(delay) || negative || !Duration.isFinite(delay.value)) {
    return invalid(`attemptDelay must be a finite, non-negative duration, got ${showValue(options.attemptDelay)}`)
  }
  return Effect.succeed(delay.value)
}

const connectOptions = (options: FailoverOptions, target: Target): Tcp.ConnectOptions | Tcp.UnixConnectOptions => {
  const { attemptDelay: _delay, strategy: _strategy, ...rest } = options
  // TCP's own options (keepAlive, noDelay, localAddress) are ignored for a path.
  return "path" in target ? { ...rest, path: target.path } : { ...rest, host: target.host, port: target.port }
}

const endpointOf = (target: Target) =>
  "path" in target ? Endpoint.unix(target.path) : Endpoint.make(target.host, target.port)

const allFailed = (targets: ReadonlyArray<Target>, errors: ReadonlyArray<TcpError.ConnectError | undefined>) =>
  new AllEndpointsFailed({
    failures: targets.map((target, i) => ({ endpoint: endpointOf(target), error: errors[i]! }))
  }, trusted)

const sequential = (
  targets: ReadonlyArray<Target>,
  options: FailoverOptions
): Effect.Effect<Connection, AllEndpointsFailed, Tcp.Tcp | Scope.Scope> =>
  Effect.gen(function*() {
    const errors: Array<TcpError.ConnectError> = []
    for (let i = 0; i < targets.length; i++) {
      const result = yield* Effect.either(Tcp.connect(connectOptions(options, targets[i]!)))
      if (Either.isRight(result)) return result.right
      errors.push(result.left)
      if (i + 1 < targets.length) {
        yield* Effect.logInfo(
          `connect to ${Endpoint.format(endpointOf(targets[i]!))} failed with ${result.left._tag}, trying ${
            Endpoint.format(endpointOf(targets[i + 1]!))
          }`
        )
      }
    }
    return yield* allFailed(targets, errors)
  })

interface Outcome {
  readonly index: number
  readonly exit: Exit.Exit<Connection, TcpError.ConnectError>
}

/**
 * Staggered race (happy eyeballs, RFC 8305): the next attempt starts when `attemptDelay` passes
 * without an outcome, or at once when an attempt fails. Each attempt's socket lives in its own
 * scope, forked from the caller's: the winner's stays open with it, every other one is closed
 * before this returns, whatever the outcome.
 */
const race = (
  targets: ReadonlyArray<Target>,
  options: FailoverOptions,
  attemptDelay: Duration.Duration
): Effect.Effect<Connection, AllEndpointsFailed, Tcp.Tcp | Scope.Scope> =>
  Effect.gen(function*() {
    const outer = yield* Effect.scope
    const outcomes = yield* Queue.unbounded<Outcome>()
    const scopes: Array<Scope.CloseableScope> = []
    const errors: Array<TcpError.ConnectError | undefined> = targets.map(() => undefined)
    let winner = -1

    const start = (index: number) =>
      Effect.gen(function*() {
        const scope = yield* Scope.fork(outer, ExecutionStrategy.sequential)
        scopes[index] = scope
        yield* Tcp.connect(connectOptions(options, targets[index]!)).pipe(
          Scope.extend(scope),
          Effect.exit,
          Effect.flatMap((exit) => Queue.offer(outcomes, { index, exit })),
          Effect.interruptible,
          Effect.forkScoped
        )
      })

    const coordinate = Effect.gen(function*() {
      let started = 0
      let failed = 0
      // With no delay, every attempt starts at once.
      const together = Duration.toMillis(attemptDelay) === 0 ? targets.length : 1
      while (started < together) yield* start(started++)
      for (;;) {
        const next = started < targets.length
          ? yield* Effect.timeoutOption(Queue.take(outcomes), attemptDelay)
          : Option.some(yield* Queue.take(outcomes))
        if (Option.isNone(next)) {
          yield* Effect.logInfo(
            `connect to ${Endpoint.format(endpointOf(targets[started - 1]!))} pending after ${
              Duration.format(attemptDelay)
            }, also trying ${Endpoint.format(endpointOf(targets[started]!))}`
          )
          yield* start(started++)
          continue
        }
        const { exit, index } = next.value
        if (Exit.isSuccess(exit)) {
          winner = index
          return exit.value
        }
        const error = Cause.failureOption(exit.cause)
        if (Option.isNone(error)) return yield* Effect.die(Cause.squash(exit.cause))
        errors[index] = error.value
        failed++
        if (failed === targets.length) return yield* allFailed(targets, errors)
        if (started < targets.length) {
          yield* Effect.logInfo(
            `connect to ${Endpoint.format(endpointOf(targets[index]!))} failed with ${error.value._tag}, trying ${
              Endpoint.format(endpointOf(targets[started]!))
            }`
          )
          yield* start(started++)
        } else {
          yield* Effect.logInfo(`connect to ${Endpoint.format(endpointOf(targets[index]!))} failed with ${error.value._tag}`)
        }
      }
    })

    // The local scope interrupts the attempts still running; then every loser's socket is closed.
    // Interruptible even when called where interruption is off (an acquireRelease), as `Tcp.connect`
    // is: otherwise no attempt could be stopped nor the stagger's timer fire.
    return yield* coordinate.pipe(
      Effect.interruptible,
      Effect.scoped,
      Effect.ensuring(
        Effect.suspend(() =>
          Effect.forEach(scopes, (scope, i) => (i === winner ? Effect.void : Scope.close(scope, Exit.void)), {
            discard: true
          })
        )
      )
    )
  })

/** @internal */
export const connect = (
  endpoints: ReadonlyArray<Target>,
  options: FailoverOptions = {}
): Effect.Effect<Connection, AllEndpointsFailed | TcpError.InvalidOptions, Tcp.Tcp | Scope.Scope> =>
  Effect.flatMap(validate(options), (attemptDelay) => {
    if (endpoints.length === 0) return Effect.fail(new AllEndpointsFailed({ failures: [] }, trusted))
    return options.strategy === "race" ? race(endpoints, options, attemptDelay) : sequential(endpoints, options)
  })
