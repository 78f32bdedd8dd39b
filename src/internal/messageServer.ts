import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as FiberSet from "effect/FiberSet"
import { dual } from "effect/Function"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import { randomBytes } from "node:crypto"
import type { Connection } from "../Connection.js"
import type * as Endpoint from "../Endpoint.js"
import type * as Framing from "../Framing.js"
import type * as Message from "../Message.js"
import type {
  Handler,
  Protocol,
  ServeConnectionOptions,
  ServeError,
  ServeOptions,
  ServerOf,
  UnixServeOptions
} from "../Message.js"
import * as Server from "../Server.js"
import type { Tcp } from "../Tcp.js"
import * as TcpError from "../TcpError.js"
import * as internalFraming from "./framing.js"
import { type Ctx, describe, isEnvelope, malformed, schemaReason, serialize, type Type } from "./messageCodec.js"
import * as Options from "./options.js"

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
type ServeSettings = typeof ServeConnectionSettings.Type

/** Checks the options of a protocol server and its framing: `InvalidOptions` before anything is served. */
const validateServe = (
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

export const serveConnection: typeof Message.serveConnection = dual(
  // Data first, the handler is the third argument; data last, the options are.
  (args) => typeof args[2] === "function",
  <Req extends Schema.Schema.Any, Res extends Schema.Schema.Any, Err extends Schema.Schema.All, R>(
    connection: Connection,
    protocol: Protocol<Req, Res, Err>,
    handler: Handler<Type<Req>, Type<Res>, Type<Err>, R>,
    options?: ServeConnectionOptions
  ): Effect.Effect<void, ServeError, R | Ctx<Req | Res | Err>> =>
    Effect.flatMap(validateServe(protocol, options), (settings) => serveChecked(connection, protocol, handler, settings))
)

export const serve = <
  Req extends Schema.Schema.Any,
  Res extends Schema.Schema.Any,
  Err extends Schema.Schema.All,
  R,
  O extends ServeOptions | UnixServeOptions = ServeOptions
>(
  protocol: Protocol<Req, Res, Err>,
  options: O,
  handler: Handler<Type<Req>, Type<Res>, Type<Err>, R>
): Effect.Effect<
  ServerOf<O>,
  TcpError.ListenError,
  Tcp | Scope.Scope | Exclude<R | Ctx<Req | Res | Err>, Scope.Scope>
> => {
  const { concurrency, exposeDefects, ...serverOptions } = options
  return Effect.flatMap(
    validateServe(protocol, { concurrency, exposeDefects }),
    (settings) =>
      Server.serve(
        serverOptions as unknown as Server.ServeOptions | Server.UnixServeOptions,
        (connection) => serveChecked(connection, protocol, handler, settings)
      ) as Effect.Effect<ServerOf<O>, TcpError.ListenError, Tcp | Scope.Scope | Exclude<R | Ctx<Req | Res | Err>, Scope.Scope>>
  )
}

const serveChecked = <
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
