import * as Cause from "effect/Cause"
import type * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import * as FiberSet from "effect/FiberSet"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { randomBytes } from "node:crypto"
import type { Connection } from "../Connection.js"
import type * as Endpoint from "../Endpoint.js"
import type * as Framing from "../Framing.js"
import type {
  Client,
  ClientOptions,
  Codec,
  Handler,
  MessageReader,
  Protocol,
  ReceiveError,
  RequestError,
  RequestOptions,
  SendError,
  ServeConnectionOptions,
  ServeError,
  Serialization
} from "../Message.js"
import { RequestTimeout } from "../Message.js"
import * as TcpError from "../TcpError.js"
import * as internalFraming from "./framing.js"
import * as Options from "./options.js"

const utf8 = new TextDecoder("utf-8", { fatal: true })

export const json: Serialization = {
  name: "JSON",
  encode: (value) => {
    const text = JSON.stringify(value)
    if (text === undefined) throw new TypeError(`${typeof value} has no JSON representation`)
    return Buffer.from(text)
  },
  decode: (bytes) => {
    let text: string
    try {
      text = utf8.decode(bytes)
    } catch (cause) {
      throw new TypeError("the bytes are not valid UTF-8", { cause })
    }
    return JSON.parse(text)
  }
}

const describe = (cause: unknown): string =>
  cause instanceof Error ? cause.message : typeof cause === "string" ? cause : String(cause)

const malformed = (
  operation: "read" | "write",
  endpoint: Endpoint.Endpoint,
  reason: string,
  cause?: unknown
) => new TcpError.MalformedFrame({ operation, endpoint, reason, cause })

const schemaReason = (what: string, error: ParseResult.ParseError) =>
  `${what} does not match its schema: ${ParseResult.TreeFormatter.formatErrorSync(error)}`

/** Bytes to a value with the serialization, then to the schema's type. */
const decodeWith = <A, I, R>(
  schema: Schema.Schema<A, I, R>,
  serialization: Serialization,
  what: string
) => {
  const decodeSchema = Schema.decodeUnknown(schema)
  return (frame: Uint8Array, endpoint: Endpoint.Endpoint): Effect.Effect<A, TcpError.MalformedFrame, R> =>
    Effect.suspend(() => {
      let value: unknown
      try {
        value = serialization.decode(frame)
      } catch (cause) {
        const reason = `${what} is not valid ${serialization.name}: ${describe(cause)}`
        return Effect.fail(malformed("read", endpoint, reason, cause))
      }
      return Effect.mapError(
        decodeSchema(value),
        (error) => malformed("read", endpoint, schemaReason(what, error), error)
      )
    })
}

const encodeWith = <A, I, R>(
  schema: Schema.Schema<A, I, R>,
  serialization: Serialization,
  what: string
) => {
  const encodeSchema = Schema.encode(schema)
  return (value: A, endpoint: Endpoint.Endpoint): Effect.Effect<Uint8Array | string, TcpError.MalformedFrame, R> =>
    Effect.flatMap(
      Effect.mapError(encodeSchema(value), (error) => malformed("write", endpoint, schemaReason(what, error), error)),
      (encoded) => serialize(serialization, encoded, endpoint, what)
    )
}

const serialize = (
  serialization: Serialization,
  value: unknown,
  endpoint: Endpoint.Endpoint,
  what: string
): Effect.Effect<Uint8Array | string, TcpError.MalformedFrame> => {
  try {
    return Effect.succeed(serialization.encode(value))
  } catch (cause) {
    return Effect.fail(
      malformed("write", endpoint, `${what} cannot be written as ${serialization.name}: ${describe(cause)}`, cause)
    )
  }
}

// -----------------------------------------------------------------------------
// one schema over a framing

export const decode = <A, I, R>(
  codec: Codec<A, I, R>,
  frame: Uint8Array,
  endpoint: Endpoint.Endpoint
): Effect.Effect<A, TcpError.MalformedFrame, R> =>
  decodeWith(codec.schema, codec.serialization, "the message")(frame, endpoint)

export const encode = <A, I, R>(
  codec: Codec<A, I, R>,
  message: A,
  endpoint: Endpoint.Endpoint
): Effect.Effect<Uint8Array | string, TcpError.MalformedFrame, R> =>
  encodeWith(codec.schema, codec.serialization, "the message")(message, endpoint)

export const send = <A, I, R>(
  connection: Connection,
  codec: Codec<A, I, R>,
  message: A
): Effect.Effect<void, SendError, R> =>
  Effect.flatMap(
    encode(codec, message, connection.remoteAddress),
    (bytes) => internalFraming.write(connection, codec.framing, bytes)
  )

export const sendAll = <A, I, R>(
  connection: Connection,
  codec: Codec<A, I, R>,
  messages: Iterable<A>
): Effect.Effect<void, SendError, R> =>
  Effect.flatMap(
    Effect.forEach(messages, (message) => encode(codec, message, connection.remoteAddress)),
    (bodies) => internalFraming.writeAll(connection, codec.framing, bodies)
  )

/** `InvalidOptions` if the codec's framing cannot work, else a reader. */
export const reader = <A, I, R>(
  connection: Connection,
  codec: Codec<A, I, R>
): Effect.Effect<MessageReader<A, R>, TcpError.InvalidOptions> =>
  Effect.suspend(() => {
    const invalid = internalFraming.checkFraming(codec.framing, "read")
    return invalid === undefined ? Effect.succeed(makeReader(connection, codec)) : Effect.fail(invalid)
  })

export const stream = <A, I, R>(
  connection: Connection,
  codec: Codec<A, I, R>
): Stream.Stream<A, ReceiveError | TcpError.InvalidOptions, R> =>
  Stream.suspend((): Stream.Stream<A, ReceiveError | TcpError.InvalidOptions, R> => {
    const invalid = internalFraming.checkFraming(codec.framing, "read")
    return invalid === undefined ? makeReader(connection, codec).stream : Stream.fail(invalid)
  })

export const makeReader = <A, I, R>(connection: Connection, codec: Codec<A, I, R>): MessageReader<A, R> => {
  const frames = internalFraming.makeReader(connection, codec.framing)
  const decodeFrame = decodeWith(codec.schema, codec.serialization, "the message")
  // A frame once read is always decoded: an interruption cannot drop it between the two.
  const receive: Effect.Effect<Option.Option<A>, ReceiveError, R> = Effect.uninterruptibleMask((restore) =>
    Effect.flatMap(
      restore(frames.read),
      (frame): Effect.Effect<Option.Option<A>, ReceiveError, R> =>
        Option.isNone(frame)
          ? Effect.succeed(Option.none())
          : Effect.map(decodeFrame(frame.value, connection.remoteAddress), Option.some)
    )
  )
  const stream = Stream.mapEffect(frames.stream, (frame) => decodeFrame(frame, connection.remoteAddress))
  return { receive, stream }
}

// -----------------------------------------------------------------------------
// request / response

/** Frames a body and queues it on the batch writer. */
const writeFrame = (
  writer: internalFraming.BatchWriter,
  framing: Framing.Framing,
  body: Uint8Array | string,
  endpoint: Endpoint.Endpoint
): Effect.Effect<void, TcpError.WriteError | Framing.EncodeError> =>
  Effect.suspend((): Effect.Effect<void, TcpError.WriteError | Framing.EncodeError> => {
    const encoded = internalFraming.encodeFrame(framing, body, endpoint)
    return Either.isLeft(encoded) ? Effect.fail(encoded.left) : writer.write(encoded.right)
  })
//
// On the wire, with the protocol's serialization (JSON by default):
//   request   {"id":7,"request":<request>}
//   response  {"id":7,"success":<response>} | {"id":7,"failure":<failure>}
//           | {"id":7,"defect":"<text>"}    | {"id":7,"malformed":"<why the request did not decode>"}

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

type Type<S> = Schema.Schema.Type<S>
type Ctx<S> = Schema.Schema.Context<S>

const isEnvelope = (u: unknown): u is { readonly id: number } & Record<string, unknown> =>
  Predicate.isRecord(u) && typeof u.id === "number" && Number.isSafeInteger(u.id)

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

export const makeClient = <Req extends Schema.Schema.Any, Res extends Schema.Schema.Any, Err extends Schema.Schema.All>(
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
            : new TcpError.SocketClosed({ operation: "read", endpoint, reason: "closed" })
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
  })

/** Whether `context` holds each of `services`, the same instance: then providing them would change nothing. */
const hasAll = (context: Context.Context<never>, services: ReadonlyArray<readonly [string, unknown]>): boolean => {
  for (const [key, service] of services) if (context.unsafeMap.get(key) !== service) return false
  return true
}

const ServeConnectionSettings = Schema.Struct({
  concurrency: Schema.optionalWith(
    Schema.Union(
      Schema.Literal("unbounded"),
      Schema.Int.pipe(
        Schema.greaterThanOrEqualTo(1, { message: () => `concurrency is "unbounded" or an integer of at least 1` })
      )
    ),
    { default: () => 100 }
  ),
  exposeDefects: Schema.optionalWith(Schema.Boolean, { default: () => false })
})

/** Serving options once checked. */
export type ServeSettings = typeof ServeConnectionSettings.Type

/** Checks the options of a protocol server and its framing: `InvalidOptions` before anything is served. */
export const validateServe = (
  protocol: Protocol<Schema.Schema.Any, Schema.Schema.Any, Schema.Schema.All>,
  options: ServeConnectionOptions | undefined
): Effect.Effect<ServeSettings, TcpError.InvalidOptions> =>
  Effect.suspend(() => {
    const invalid = internalFraming.checkFraming(protocol.framing, "listen")
    if (invalid !== undefined) return Effect.fail(invalid)
    return Options.validate(ServeConnectionSettings, "listen", {
      concurrency: options?.concurrency,
      exposeDefects: options?.exposeDefects
    })
  })

export const serveConnection = <
  Req extends Schema.Schema.Any,
  Res extends Schema.Schema.Any,
  Err extends Schema.Schema.All,
  R
>(
  connection: Connection,
  protocol: Protocol<Req, Res, Err>,
  handler: Handler<Type<Req>, Type<Res>, Type<Err>, R>,
  options?: ServeConnectionOptions
): Effect.Effect<void, ServeError, R | Ctx<Req | Res | Err>> =>
  Effect.flatMap(validateServe(protocol, options), (settings) => serveChecked(connection, protocol, handler, settings))

export const serveChecked = <
  Req extends Schema.Schema.Any,
  Res extends Schema.Schema.Any,
  Err extends Schema.Schema.All,
  R
>(
  connection: Connection,
  protocol: Protocol<Req, Res, Err>,
  handler: Handler<Type<Req>, Type<Res>, Type<Err>, R>,
  settings: ServeSettings
): Effect.Effect<void, ServeError, R | Ctx<Req | Res | Err>> => {
  const endpoint = connection.remoteAddress
  const { framing, serialization } = protocol
  const decodeRequest = Schema.decodeUnknown(protocol.request as Schema.Schema<Type<Req>, unknown, Ctx<Req>>)
  const encodeResponse = Schema.encode(protocol.response as Schema.Schema<Type<Res>, unknown, Ctx<Res>>)
  const encodeFailure = Schema.encode(protocol.failure as Schema.Schema<Type<Err>, unknown, Ctx<Err>>)

  const send = (writer: internalFraming.BatchWriter, envelope: Record<string, unknown>) =>
    Effect.flatMap(
      serialize(serialization, envelope, endpoint, `the response to request ${envelope.id}`),
      (bytes) => writeFrame(writer, framing, bytes, endpoint)
    )

  /**
   * A defect of this side for request `id`: logged in full under a fresh defect id, and sent to the
   * client as that id only, unless `exposeDefects` (a stack trace and file paths are the server's own).
   */
  const defect = (
    writer: internalFraming.BatchWriter,
    id: number,
    details: string,
    cause?: Cause.Cause<unknown>
  ): Effect.Effect<void, TcpError.WriteError | TcpError.MalformedFrame | TcpError.FrameTooLarge> => {
    const defectId = randomBytes(6).toString("hex")
    const logged = Effect.logError(`request ${id} died (defect ${defectId}): ${details}`, ...(cause ? [cause] : []))
    const text = settings.exposeDefects ? details : `a defect, logged by the server as defect ${defectId}`
    return Effect.zipRight(
      Effect.annotateLogs(logged, "defectId", defectId),
      Effect.flatMap(
        serialize(serialization, { id, defect: text }, endpoint, `the response to request ${id}`),
        (bytes) => writeFrame(writer, framing, bytes, endpoint)
      ) as Effect.Effect<void, TcpError.WriteError | TcpError.MalformedFrame | TcpError.FrameTooLarge>
    )
  }

  // A reply that cannot be encoded or is too large is a bug of this side: the client gets a defect, not silence.
  const reply = (writer: internalFraming.BatchWriter, id: number, envelope: Record<string, unknown>) =>
    (send(writer, envelope) as Effect.Effect<void, TcpError.WriteError | TcpError.MalformedFrame | TcpError.FrameTooLarge>).pipe(
      Effect.catchIf(
        (error): error is TcpError.MalformedFrame | TcpError.FrameTooLarge =>
          error._tag === "MalformedFrame" || error._tag === "FrameTooLarge",
        (error) => defect(writer, id, `the response cannot be sent: ${error.message}`)
      )
    )

  const answer = (
    writer: internalFraming.BatchWriter,
    id: number,
    exit: Exit.Exit<Type<Res>, Type<Err>>
  ): Effect.Effect<void, TcpError.WriteError | TcpError.MalformedFrame | TcpError.FrameTooLarge, Ctx<Res | Err>> => {
    if (Exit.isSuccess(exit)) {
      return Effect.matchEffect(encodeResponse(exit.value), {
        onFailure: (error) => defect(writer, id, schemaReason("the response", error)),
        onSuccess: (success) => reply(writer, id, { id, success })
      })
    }
    const failure = Cause.failureOption(exit.cause)
    if (Option.isSome(failure)) {
      return Effect.matchEffect(encodeFailure(failure.value), {
        onFailure: (error) => defect(writer, id, schemaReason("the failure", error)),
        onSuccess: (encoded) => reply(writer, id, { id, failure: encoded })
      })
    }
    return defect(writer, id, Cause.pretty(exit.cause), exit.cause)
  }

  const handle = (
    writer: internalFraming.BatchWriter,
    frame: Uint8Array
  ): Effect.Effect<
    void,
    TcpError.WriteError | TcpError.MalformedFrame | TcpError.FrameTooLarge,
    R | Ctx<Req | Res | Err>
  > => {
    let envelope: unknown
    try {
      envelope = serialization.decode(frame)
    } catch (cause) {
      return Effect.fail(
        malformed("read", endpoint, `a request is not valid ${serialization.name}: ${describe(cause)}`, cause)
      )
    }
    // Without an id no answer can reach the client: the peer does not speak the protocol.
    if (!isEnvelope(envelope)) return Effect.fail(malformed("read", endpoint, "a request has no numeric id"))
    const id = envelope.id
    return Effect.matchEffect(decodeRequest(envelope.request), {
      onFailure: (error) => {
        const reason = schemaReason("the request", error)
        return Effect.zipRight(
          Effect.logWarning(`request ${id} is malformed: ${reason}`),
          reply(writer, id, { id, malformed: reason })
        )
      },
      onSuccess: (request) =>
        Effect.flatMap(
          Effect.exit(Effect.suspend(() => handler(request, connection))),
          (exit) => answer(writer, id, exit)
        )
    }).pipe(Effect.annotateLogs("requestId", id))
  }

  return Effect.scoped(Effect.gen(function*() {
    const writer = yield* internalFraming.makeBatchWriter(connection)
    const frames = internalFraming.makeReader(connection, framing)
    const running = yield* FiberSet.make()
    // The first failure of a request's fiber (its response could not be written) ends the connection.
    const fatal = yield* Deferred.make<never, ServeError>()
    const concurrency = settings.concurrency
    const permits = concurrency === "unbounded" ? undefined : yield* Effect.makeSemaphore(concurrency)
    const start = (frame: Uint8Array) => {
      const work = Effect.catchAll(handle(writer, frame), (error) => Deferred.fail(fatal, error))
      if (permits === undefined) return FiberSet.run(running, work)
      // Waiting for a permit before reading on: a client cannot pile up more requests than that.
      return Effect.zipRight(permits.take(1), FiberSet.run(running, Effect.ensuring(work, permits.release(1))))
    }
    const readLoop: Effect.Effect<void, ServeError, R | Ctx<Req | Res | Err>> = Effect.flatMap(
      frames.read,
      (frame) => Option.isNone(frame) ? FiberSet.awaitEmpty(running) : Effect.zipRight(start(frame.value), readLoop)
    )
    yield* Effect.raceFirst(readLoop, Deferred.await(fatal))
  }))
}
