import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { dual } from "effect/Function"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import type { Connection } from "../Connection.js"
import * as Endpoint from "../Endpoint.js"
import type * as HealthCheck from "../HealthCheck.js"
import type { Heartbeat, HeartbeatOptions, Probe, ProbeOptions } from "../HealthCheck.js"
import * as TcpError from "../TcpError.js"
import * as Options from "./options.js"

/** @internal */
export const HealthCheckReason = Schema.Union(
  Schema.TaggedStruct("Timeout", { timeoutMillis: Schema.Number }),
  Schema.TaggedStruct("WrongReply", { expected: Schema.String, received: Schema.String }),
  Schema.TaggedStruct("ConnectionError", { error: TcpError.TcpError })
)

/** @internal */
export class HealthCheckFailed extends Schema.TaggedError<HealthCheckFailed>()("HealthCheckFailed", {
  endpoint: Endpoint.Endpoint,
  reason: HealthCheckReason
}) {
  override get message(): string {
    const at = `health check of ${Endpoint.format(this.endpoint)} failed`
    switch (this.reason._tag) {
      case "Timeout":
        return `${at}: no reply within ${this.reason.timeoutMillis} ms; the peer is stalled, overloaded or gone (a half-open connection): close the connection`
      case "WrongReply":
        return `${at}: expected ${this.reason.expected}, got ${this.reason.received}; the peer speaks another protocol or the exchange is out of step: close the connection`
      case "ConnectionError":
        return `${at}: ${this.reason.error._tag}: ${this.reason.error.message}`
    }
  }

  /** Whether trying again on a new connection may succeed. */
  get transient(): boolean {
    switch (this.reason._tag) {
      case "Timeout":
        return true
      case "WrongReply":
        return false
      case "ConnectionError":
        return TcpError.isTransient(this.reason.error)
    }
  }
}

/** For errors built from this module's own values: Schema's check of them costs up to a millisecond. */
const trusted = { disableValidation: true } as const

const shownBytes = 64

/** Bytes as a quoted, escaped string, cut after 64 bytes: readable in a message, whatever they are. */
export const showBytes = (bytes: Uint8Array | string): string => {
  const buffer = typeof bytes === "string"
    ? Buffer.from(bytes)
    : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length)
  const text = JSON.stringify(buffer.subarray(0, shownBytes).toString("latin1"))
  return buffer.length > shownBytes ? `${text} (${buffer.length} bytes)` : text
}

const nextBytes = (connection: Connection): Effect.Effect<Uint8Array, TcpError.TcpError> =>
  Effect.flatMap(connection.read, (chunk) =>
    Option.isSome(chunk)
      ? Effect.succeed(chunk.value)
      : Effect.fail(new TcpError.UnexpectedEof({ operation: "read", endpoint: connection.remoteAddress, received: 0 })))

/** A probe from options already checked. */
const makeProbe = (options: {
  readonly request: Uint8Array | string
  readonly expect: Uint8Array | string | ((reply: Uint8Array) => boolean)
  readonly readReply: ((connection: Connection) => Effect.Effect<Uint8Array, TcpError.TcpError>) | undefined
  readonly timeout: Duration.Duration
}): Probe => {
  const { expect, request, timeout } = options
  const timeoutMillis = Duration.toMillis(timeout)
  const expected = typeof expect === "function" ? undefined : Buffer.from(expect)
  const readReply = options.readReply ??
    (expected === undefined ? nextBytes : (connection: Connection) => connection.readExactly(expected.length))
  const accepts = typeof expect === "function"
    ? expect
    : (reply: Uint8Array) => Buffer.from(reply.buffer, reply.byteOffset, reply.length).equals(expected!)
  const describeExpected = expected === undefined ? "a reply the check accepts" : showBytes(expected)
  return (connection) => {
    const endpoint = connection.remoteAddress
    const exchange = Effect.zipRight(connection.write(request), readReply(connection)).pipe(
      Effect.mapError((error) => new HealthCheckFailed({ endpoint, reason: { _tag: "ConnectionError", error } }, trusted)),
      Effect.flatMap((reply) =>
        accepts(reply) ? Effect.void : Effect.fail(
          new HealthCheckFailed({
            endpoint,
            reason: { _tag: "WrongReply", expected: describeExpected, received: showBytes(reply) }
          }, trusted)
        )
      )
    )
    return Effect.timeoutFail(exchange, {
      duration: timeout,
      onTimeout: () => new HealthCheckFailed({ endpoint, reason: { _tag: "Timeout", timeoutMillis } }, trusted)
    })
  }
}

const defaultTimeout = Duration.seconds(1)

const isBytes = (value: unknown): value is Uint8Array | string => typeof value === "string" || value instanceof Uint8Array

/** @internal */
export const probe = (options: ProbeOptions = {}): Effect.Effect<Probe, TcpError.InvalidOptions> =>
  Effect.suspend(() => {
    const { expect = "PONG", readReply, request = "PING" } = options
    const issues: Array<string> = []
    if (!isBytes(request)) issues.push(`request must be bytes or a string, got ${Options.showValue(request)}`)
    if (!isBytes(expect) && typeof expect !== "function") {
      issues.push(`expect must be bytes, a string or a predicate on the reply, got ${Options.showValue(expect)}`)
    }
    if (readReply !== undefined && typeof readReply !== "function") {
      issues.push(`readReply must be a function that reads the reply, got ${Options.showValue(readReply)}`)
    }
    const timeout = options.timeout === undefined
      ? Either.right(defaultTimeout)
      : Options.durationOption("timeout", options.timeout)
    if (Either.isLeft(timeout)) issues.push(timeout.left)
    if (issues.length > 0 || Either.isLeft(timeout)) {
      // A probe writes and reads: its options belong to no one socket operation.
      return Effect.fail(new TcpError.InvalidOptions({ issues: `HealthCheck.probe: ${issues.join("; ")}` }))
    }
    return Effect.succeed(makeProbe({ request, expect, readReply, timeout: timeout.right }))
  })

/** @internal */
export const ping: Probe = makeProbe({ request: "PING", expect: "PONG", readReply: undefined, timeout: defaultTimeout })

/** @internal */
export const redisPing: Probe = makeProbe({
  // An array of one bulk string, as Redis clients send commands; Redis answers the line "+PONG".
  request: "*1\r\n$4\r\nPING\r\n",
  expect: "+PONG",
  // An error reply ("-NOAUTH ...", "-LOADING ...") is one line too: WrongReply then shows all of it.
  readReply: (connection) => connection.readUntil("\r\n", { maxFrameBytes: 1024 }),
  timeout: defaultTimeout
})

const stopped = Symbol("stopped")

/** A connection, told from heartbeat options by the members only a connection has. */
const isConnection = (u: unknown): u is Connection =>
  Predicate.hasProperty(u, "readExactly") && Predicate.hasProperty(u, "remoteAddress")

/** @internal */
export const heartbeat: typeof HealthCheck.heartbeat = dual(
  (args) => isConnection(args[0]),
  (connection: Connection, options: HeartbeatOptions | undefined): Effect.Effect<Heartbeat, never, Scope.Scope> =>
    makeHeartbeat(connection, options ?? {})
)

const makeHeartbeat = (
  connection: Connection,
  options: HeartbeatOptions
): Effect.Effect<Heartbeat, never, Scope.Scope> =>
  Effect.gen(function*() {
    const check = options.probe ?? ping
    const schedule = options.schedule ?? Schedule.spaced("10 seconds")
    const lock = yield* Effect.makeSemaphore(1)
    const dead = yield* Deferred.make<HealthCheckFailed>()
    let failure: HealthCheckFailed | undefined = undefined

    // A connection closed by its owner ends the heartbeat quietly: that is no failure of the peer.
    const beat: Effect.Effect<void, HealthCheckFailed | typeof stopped> = lock.withPermits(1)(
      Effect.flatMap(
        connection.state,
        (state): Effect.Effect<void, HealthCheckFailed | typeof stopped> =>
          state._tag === "Closed" ? Effect.fail(stopped) : check(connection)
      )
    )
    const onFailure = (error: HealthCheckFailed | typeof stopped) => {
      if (error === stopped) return Effect.void
      return Effect.suspend(() => {
        failure = error
        return Effect.logWarning(`heartbeat: ${error.message}`).pipe(
          Effect.zipRight(connection.close),
          Effect.zipRight(Deferred.succeed(dead, error))
        )
      })
    }
    yield* beat.pipe(
      Effect.schedule(schedule),
      Effect.asVoid,
      Effect.catchAll(onFailure),
      Effect.interruptible,
      Effect.forkScoped
    )
    return {
      exclusive: <A, E, R>(effect: Effect.Effect<A, E, R>) =>
        lock.withPermits(1)(
          Effect.suspend((): Effect.Effect<A, E | HealthCheckFailed, R> =>
            failure === undefined ? effect : Effect.fail(failure)
          )
        ),
      failure: Effect.sync(() => Option.fromNullable(failure)),
      awaitFailure: Deferred.await(dead)
    } satisfies Heartbeat
  })
