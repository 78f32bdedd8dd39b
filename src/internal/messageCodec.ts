import * as Effect from "effect/Effect"
import { dual } from "effect/Function"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import type { Connection } from "../Connection.js"
import type * as Endpoint from "../Endpoint.js"
import * as Framing from "../Framing.js"
import type * as Message from "../Message.js"
import type {
  Codec,
  EndpointOptions,
  MessageReader,
  Protocol,
  ProtocolOptions,
  ReceiveError,
  SendError,
  Serialization,
  WireFormatOptions
} from "../Message.js"
import * as TcpError from "../TcpError.js"
import * as internalFraming from "./framing.js"

export type Type<S> = Schema.Schema.Type<S>
export type Ctx<S> = Schema.Schema.Context<S>

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

export const describe = (cause: unknown): string =>
  cause instanceof Error ? cause.message : typeof cause === "string" ? cause : String(cause)

export const malformed = (
  operation: "read" | "write",
  endpoint: Endpoint.Endpoint,
  reason: string,
  cause?: unknown
) => new TcpError.MalformedFrame({ operation, endpoint, reason, cause })

export const schemaReason = (what: string, error: ParseResult.ParseError) =>
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

export const serialize = (
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

export const codec = <A, I, R>(schema: Schema.Schema<A, I, R>, options?: WireFormatOptions): Codec<A, I, R> => ({
  schema,
  framing: options?.framing ?? Framing.lengthPrefixed(),
  serialization: options?.serialization ?? json
})

/** Tells a codec from the options that may take its place in the data-last forms of `encode` and `decode`. */
const isCodec = (u: unknown): u is Codec<unknown, unknown, unknown> =>
  Predicate.hasProperty(u, "schema") && Predicate.hasProperty(u, "framing") &&
  Predicate.hasProperty(u, "serialization")

export const decode: typeof Message.decode = dual(
  (args) => isCodec(args[1]),
  <A, I, R>(frame: Uint8Array, codec: Codec<A, I, R>, options?: EndpointOptions) =>
    decodeWith(codec.schema, codec.serialization, "the message")(
      frame,
      options?.endpoint ?? internalFraming.unknownEndpoint
    )
)

export const encode: typeof Message.encode = dual(
  (args) => isCodec(args[1]),
  <A, I, R>(message: A, codec: Codec<A, I, R>, options?: EndpointOptions) =>
    encodeWith(codec.schema, codec.serialization, "the message")(
      message,
      options?.endpoint ?? internalFraming.unknownEndpoint
    )
)

const encodeTo = <A, I, R>(connection: Connection, codec: Codec<A, I, R>, message: A) =>
  encodeWith(codec.schema, codec.serialization, "the message")(message, connection.remoteAddress)

export const send: typeof Message.send = dual(
  3,
  <A, I, R>(connection: Connection, codec: Codec<A, I, R>, message: A): Effect.Effect<void, SendError, R> =>
    Effect.flatMap(
      encodeTo(connection, codec, message),
      (bytes) => internalFraming.write(connection, codec.framing, bytes)
    )
)

export const sendAll: typeof Message.sendAll = dual(
  3,
  <A, I, R>(connection: Connection, codec: Codec<A, I, R>, messages: Iterable<A>): Effect.Effect<void, SendError, R> =>
    Effect.flatMap(
      Effect.forEach(messages, (message) => encodeTo(connection, codec, message)),
      (bodies) => internalFraming.writeAll(connection, codec.framing, bodies)
    )
)

/** `InvalidOptions` if the codec's framing cannot work, else a reader. */
export const reader: typeof Message.reader = dual(2, <A, I, R>(connection: Connection, codec: Codec<A, I, R>) =>
  Effect.suspend(() => {
    const invalid = internalFraming.checkFraming(codec.framing, "read")
    return invalid === undefined ? Effect.succeed(makeReader(connection, codec)) : Effect.fail(invalid)
  }))

export const stream: typeof Message.stream = dual(2, <A, I, R>(connection: Connection, codec: Codec<A, I, R>) =>
  Stream.suspend((): Stream.Stream<A, ReceiveError | TcpError.InvalidOptions, R> => {
    const invalid = internalFraming.checkFraming(codec.framing, "read")
    return invalid === undefined ? makeReader(connection, codec).stream : Stream.fail(invalid)
  }))

const makeReader = <A, I, R>(connection: Connection, codec: Codec<A, I, R>): MessageReader<A, R> => {
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
// request / response: what the client and the server share
//
// On the wire, with the protocol's serialization (JSON by default):
//   request   {"id":7,"request":<request>}
//   response  {"id":7,"success":<response>} | {"id":7,"failure":<failure>}
//           | {"id":7,"defect":"<text>"}    | {"id":7,"malformed":"<why the request did not decode>"}

export const protocol = <
  Req extends Schema.Schema.Any,
  Res extends Schema.Schema.Any,
  Err extends Schema.Schema.All = typeof Schema.Never
>(options: ProtocolOptions<Req, Res, Err>): Protocol<Req, Res, Err> => ({
  request: options.request,
  response: options.response,
  failure: options.failure ?? (Schema.Never as unknown as Err),
  framing: options.framing ?? Framing.lengthPrefixed(),
  serialization: options.serialization ?? json
})

/** Tells a protocol from the options that may take its place in the data-last forms of `client`. */
export const isProtocol = (u: unknown): u is Protocol<Schema.Schema.Any, Schema.Schema.Any, Schema.Schema.All> =>
  Predicate.hasProperty(u, "request") && Predicate.hasProperty(u, "response") &&
  Predicate.hasProperty(u, "serialization")

export const isEnvelope = (u: unknown): u is { readonly id: number } & Record<string, unknown> =>
  Predicate.isRecord(u) && typeof u.id === "number" && Number.isSafeInteger(u.id)
