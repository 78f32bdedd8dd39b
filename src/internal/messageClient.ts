import * as Cause from "effect/Cause"
import type * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import { dual } from "effect/Function"
import * as Option from "effect/Option"
import type * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import type { Connection } from "../Connection.js"
import * as Endpoint from "../Endpoint.js"
import type * as Framing from "../Framing.js"
import type * as Message from "../Message.js"
import type { Client, ClientOptions, Protocol, RequestError, RequestOptions } from "../Message.js"
import * as TcpError from "../TcpError.js"
import * as internalFraming from "./framing.js"
import { type Ctx, describe, isEnvelope, isProtocol, malformed, schemaReason, serialize, type Type } from "./messageCodec.js"
import * as Options from "./options.js"

export class RequestTimeout extends Schema.TaggedError<RequestTimeout>()("RequestTimeout", {
  endpoint: Endpoint.Endpoint,
  requestId: Schema.Number,
  timeoutMillis: Schema.Number
}) {
  override get message(): string {
    return `request ${this.requestId} to ${
      Endpoint.format(this.endpoint)
    } got no response within ${this.timeoutMillis} ms: the server is slow or stuck; a late response will be discarded`
  }
}

const TimeoutOptions = Schema.Struct({ timeout: Schema.optional(Options.DurationOption) })

/** The milliseconds of a request timeout, or `InvalidOptions`: Infinity for none. */
const timeoutMillis = (
  timeout: Duration.DurationInput | undefined,
  what: string
): Effect.Effect<number, TcpError.InvalidOptions> => {
  if (timeout === undefined) return Effect.succeed(Infinity)
  // The common inputs skip the Schema, which costs microseconds per request.
  if (typeof timeout === "number" && Number.isFinite(timeout) && timeout >= 0) return Effect.succeed(timeout)
  if (Duration.isDuration(timeout) && Duration.isFinite(timeout)) return Effect.succeed(Duration.toMillis(timeout))
  return Effect.map(
    Effect.mapError(
      Options.validate(TimeoutOptions, "write", { timeout }),
      (error) => new TcpError.InvalidOptions({ operation: "write", issues: `${what}: ${error.issues}` })
    ),
    (options) => Duration.toMillis(options.timeout!)
  )
}

/** What a pending request fails with once the connection is gone. */
type ConnectionError = TcpError.ReadError | Framing.DecodeError | TcpError.MalformedFrame

/** A request waiting for its response. */
interface Waiting<Res, Err> {
  readonly id: number
  readonly outcome: Deferred.Deferred<Res, Err | RequestError>
  /** Its deadline, on the client's clock, and the timeout it came from (Infinity for none). */
  readonly at: number
  readonly timeoutMillis: number
  /** Neighbours in the list of requests with the same timeout, ordered by deadline. */
  prev: Waiting<Res, Err> | undefined
  next: Waiting<Res, Err> | undefined
}

interface DeadlineList<Res, Err> {
  head: Waiting<Res, Err> | undefined
  tail: Waiting<Res, Err> | undefined
}

export const client: typeof Message.client = dual((args) => isProtocol(args[1]), <
  Req extends Schema.Schema.Any,
  Res extends Schema.Schema.Any,
  Err extends Schema.Schema.All
>(
  connection: Connection,
  protocol: Protocol<Req, Res, Err>,
  options?: ClientOptions
): Effect.Effect<
  Client<Type<Req>, Type<Res>, Type<Err>>,
  TcpError.InvalidOptions,
  Scope.Scope | Ctx<Req | Res | Err>
> =>
  Effect.gen(function*() {
    type Entry = Waiting<Type<Res>, Type<Err>>
    const invalidFraming = internalFraming.checkFraming(protocol.framing, "write")
    if (invalidFraming !== undefined) return yield* Effect.fail(invalidFraming)
    const defaultTimeout = yield* timeoutMillis(options?.timeout, "Message.client")
    // The Schemas may need services of the creating fiber, and a request may come from any fiber.
    const context = yield* Effect.context<Ctx<Req | Res | Err>>()
    const services = Array.from(context.unsafeMap)
    const scope = yield* Effect.scope
    const clock = yield* Effect.clock
    const endpoint = connection.remoteAddress
    const { framing, serialization } = protocol
    const frames = internalFraming.makeReader(connection, framing)
    const writer = yield* internalFraming.makeBatchWriter(connection)
    const encodeRequest = Schema.encode(protocol.request as Schema.Schema<Type<Req>, unknown, Ctx<Req>>)
    const decodeResponse = Schema.decodeUnknown(protocol.response as Schema.Schema<Type<Res>, unknown, Ctx<Res>>)
    const decodeFailure = Schema.decodeUnknown(protocol.failure as Schema.Schema<Type<Err>, unknown, Ctx<Err>>)

    const pending = new Map<number, Entry>()
    let nextId = 1
    let dead: ConnectionError | undefined = undefined

    // Deadlines: one list per timeout value, each in deadline order since the clock only moves
    // forward, and one fiber sleeping until the earliest. A request costs no fiber of its own.
    const deadlines = new Map<number, DeadlineList<Type<Res>, Type<Err>>>()
    let timer: Fiber.RuntimeFiber<void> | undefined = undefined
    let timerAt = Infinity

    const link = (entry: Entry) => {
      let list = deadlines.get(entry.timeoutMillis)
      if (list === undefined) deadlines.set(entry.timeoutMillis, list = { head: undefined, tail: undefined })
      entry.prev = list.tail
      if (list.tail === undefined) list.head = entry
      else list.tail.next = entry
      list.tail = entry
    }
    const unlink = (entry: Entry) => {
      const list = deadlines.get(entry.timeoutMillis)
      if (list === undefined) return
      if (entry.prev === undefined) list.head = entry.next
      else entry.prev.next = entry.next
      if (entry.next === undefined) list.tail = entry.prev
      else entry.next.prev = entry.prev
      entry.prev = entry.next = undefined
      if (list.head === undefined) deadlines.delete(entry.timeoutMillis)
    }
    const settleEntry = (entry: Entry, exit: Exit.Exit<Type<Res>, Type<Err> | RequestError>) => {
      if (pending.get(entry.id) !== entry) return
      pending.delete(entry.id)
      if (entry.at !== Infinity) unlink(entry)
      Deferred.unsafeDone(entry.outcome, exit)
    }
    const earliest = () => {
      let at = Infinity
      for (const list of deadlines.values()) if (list.head !== undefined && list.head.at < at) at = list.head.at
      return at
    }
    const expire = () => {
      const now = clock.unsafeCurrentTimeMillis()
      for (const list of Array.from(deadlines.values())) {
        while (list.head !== undefined && list.head.at <= now) {
          const entry = list.head
          settleEntry(
            entry,
            Exit.fail(new RequestTimeout({ endpoint, requestId: entry.id, timeoutMillis: entry.timeoutMillis }))
          )
        }
      }
    }
    const timerLoop: Effect.Effect<void> = Effect.suspend(() => {
      const at = earliest()
      timerAt = at
      if (at === Infinity) return Effect.void
      return Effect.sleep(Math.max(0, at - clock.unsafeCurrentTimeMillis())).pipe(
        Effect.zipRight(Effect.sync(expire)),
        Effect.zipRight(timerLoop)
      )
    })
    /** Makes sure the timer wakes up by `at`. */
    const arm = (at: number): Effect.Effect<void> => {
      if (at >= timerAt) return Effect.void
      timerAt = at
      const previous = timer
      return Effect.flatMap(Effect.forkIn(timerLoop, scope), (fiber) => {
        timer = fiber
        return previous === undefined ? Effect.void : Fiber.interruptFork(previous)
      })
    }

    const failPending = (error: ConnectionError) => {
      for (const entry of Array.from(pending.values())) settleEntry(entry, Exit.fail(error))
    }

    const settle = (
      entry: Entry,
      result: Effect.Effect<Type<Res>, Type<Err> | RequestError, Ctx<Res | Err>>
    ) => Effect.flatMap(Effect.exit(result), (exit) => Effect.sync(() => settleEntry(entry, exit)))

    const dispatch = (frame: Uint8Array): Effect.Effect<void, TcpError.MalformedFrame, Ctx<Res | Err>> => {
      let envelope: unknown
      try {
        envelope = serialization.decode(frame)
      } catch (cause) {
        return Effect.fail(
          malformed("read", endpoint, `a response is not valid ${serialization.name}: ${describe(cause)}`, cause)
        )
      }
      // Without an id a response cannot be matched to its request: the peer does not speak the protocol.
      if (!isEnvelope(envelope)) return Effect.fail(malformed("read", endpoint, "a response has no numeric id"))
      const id = envelope.id
      const entry = pending.get(id)
      // Its request timed out or was interrupted: a late response is dropped, never handed to another one.
      if (entry === undefined) return Effect.void
      const badResponse = (error: ParseResult.ParseError) =>
        malformed("read", endpoint, schemaReason(`the response to request ${id}`, error), error)
      if ("failure" in envelope) {
        return settle(
          entry,
          Effect.matchEffect(decodeFailure(envelope.failure), {
            onFailure: (error) => Effect.fail(badResponse(error)),
            onSuccess: (failure) => Effect.fail(failure)
          })
        )
      }
      if ("defect" in envelope) {
        return settle(
          entry,
          Effect.die(new Cause.RuntimeException(`request ${id} died on the server: ${String(envelope.defect)}`))
        )
      }
      if ("malformed" in envelope) {
        return settle(
          entry,
          Effect.fail(
            malformed("write", endpoint, `the server could not decode request ${id}: ${String(envelope.malformed)}`)
          )
        )
      }
      return settle(entry, Effect.mapError(decodeResponse(envelope.success), badResponse))
    }

    // The peer closing between frames while requests wait: their responses will never come.
    const closedByPeer = new TcpError.UnexpectedEof({
      operation: "read",
      endpoint,
      expected: framing._tag === "LengthPrefixed" ? framing.headerBytes : undefined,
      received: 0
    })

    const readLoop: Effect.Effect<never, ConnectionError, Ctx<Res | Err>> = frames.read.pipe(
      Effect.flatMap((frame): Effect.Effect<void, ConnectionError, Ctx<Res | Err>> =>
        Option.isNone(frame) ? Effect.fail(closedByPeer) : dispatch(frame.value)
      ),
      // A read deadline with requests waiting fails them; the reader stays in sync and goes on.
      Effect.catchIf(
        (error): error is TcpError.ReadTimeout => error._tag === "ReadTimeout",
        (error) => Effect.sync(() => failPending(error))
      ),
      Effect.forever
    )

    yield* readLoop.pipe(
      Effect.onExit((exit) =>
        Effect.sync(() => {
          const failure = Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none()
          dead = Option.isSome(failure)
            ? failure.value
            : new TcpError.SocketClosed({ operation: "read", endpoint, reason: "Closed" })
          failPending(dead)
        })
      ),
      Effect.forkScoped
    )

    const send = (id: number, message: Type<Req>) =>
      Effect.flatMap(
        Effect.mapError(
          encodeRequest(message),
          (error) => malformed("write", endpoint, schemaReason(`request ${id}`, error), error)
        ),
        (encoded) => serialize(serialization, { id, request: encoded }, endpoint, `request ${id}`)
      )

    const exchangeWith = (
      message: Type<Req>,
      timeoutMillis: number
    ): Effect.Effect<Type<Res>, Type<Err> | RequestError, Ctx<Req>> => {
      const id = nextId++
      const entry: Entry = {
        id,
        outcome: Deferred.unsafeMake(FiberId.none),
        at: timeoutMillis === Infinity ? Infinity : clock.unsafeCurrentTimeMillis() + timeoutMillis,
        timeoutMillis,
        prev: undefined,
        next: undefined
      }
      pending.set(id, entry)
      if (entry.at !== Infinity) link(entry)
      const sent = Effect.flatMap(send(id, message), (bytes) => {
        const encoded = internalFraming.encodeFrame(framing, bytes, endpoint)
        if (Either.isLeft(encoded)) return Effect.fail(encoded.left)
        writer.offer(encoded.right, (exit) => {
          if (Exit.isFailure(exit)) settleEntry(entry, Exit.failCause(exit.cause))
        })
        return Effect.void
      })
      return sent.pipe(
        Effect.zipRight(arm(entry.at)),
        Effect.zipRight(Deferred.await(entry.outcome)),
        // Settled, failed to encode or interrupted: the request is no longer waited for.
        Effect.onExit(() => Effect.sync(() => settleEntry(entry, Exit.interrupt(FiberId.none))))
      )
    }

    const request = (
      message: Type<Req>,
      requestOptions?: RequestOptions
    ): Effect.Effect<Type<Res>, Type<Err> | RequestError> => {
      const exchange = Effect.suspend((): Effect.Effect<Type<Res>, Type<Err> | RequestError, Ctx<Req>> => {
        if (dead !== undefined) return Effect.fail(dead)
        if (requestOptions?.timeout === undefined) return exchangeWith(message, defaultTimeout)
        return Effect.flatMap(
          timeoutMillis(requestOptions.timeout, "Message request"),
          (millis) => exchangeWith(message, millis)
        )
      })
      // Providing costs about 4 µs a request: skipped when the caller already has every service.
      return Effect.withFiberRuntime((fiber) =>
        hasAll(fiber.currentContext, services)
          ? exchange as Effect.Effect<Type<Res>, Type<Err> | RequestError>
          : Effect.provide(exchange, context)
      )
    }

    return {
      request,
      inFlight: Effect.sync(() => pending.size)
    } satisfies Client<Type<Req>, Type<Res>, Type<Err>>
  }))

/** Whether `context` holds each of `services`, the same instance: then providing them would change nothing. */
const hasAll = (context: Context.Context<never>, services: ReadonlyArray<readonly [string, unknown]>): boolean => {
  for (const [key, service] of services) if (context.unsafeMap.get(key) !== service) return false
  return true
}

