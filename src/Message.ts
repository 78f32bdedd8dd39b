/**
 * Schema-typed messages over a `Framing`: each frame holds one message, serialized as JSON by
 * default and checked by a `Schema` both ways. On top of it, a request/response client that
 * pipelines many requests over one connection, and the matching server.
 *
 * @since 0.1.0
 */
import type * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import type * as Option from "effect/Option"
import type * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import type * as Stream from "effect/Stream"
import type { Connection } from "./Connection.js"
import type * as Endpoint from "./Endpoint.js"
import type * as Framing from "./Framing.js"
import * as internalClient from "./internal/messageClient.js"
import * as internal from "./internal/messageCodec.js"
import * as internalServer from "./internal/messageServer.js"
import type * as Server from "./Server.js"
import type { Tcp } from "./Tcp.js"
import type {
  FrameTooLarge,
  InvalidOptions,
  ListenError,
  MalformedFrame,
  ReadError,
  UnexpectedEof,
  WriteError
} from "./TcpError.js"

/**
 * How a message's encoded form (the Schema's `Encoded` side) becomes the bytes of a frame and
 * back. Both functions may throw; what they throw becomes a `MalformedFrame` (`cause` keeps it).
 *
 * @since 0.1.0
 * @category models
 */
export interface Serialization {
  /** Named in error messages: "not valid JSON: ...". */
  readonly name: string
  readonly encode: (value: unknown) => Uint8Array | string
  readonly decode: (bytes: Uint8Array) => unknown
}

/**
 * UTF-8 JSON text, the default. Decoding rejects invalid UTF-8 instead of replacing it.
 *
 * @since 0.1.0
 * @category serializations
 */
export const json: Serialization = internal.json

/**
 * A Schema, the framing that carries it, and the serialization between the two.
 *
 * @since 0.1.0
 * @category models
 */
export interface Codec<A, I = A, R = never> {
  readonly schema: Schema.Schema<A, I, R>
  readonly framing: Framing.Framing
  readonly serialization: Serialization
}

/**
 * How messages are carried on the wire: the framing around each one and the serialization of its
 * encoded form. Options of `codec` and `protocol`.
 *
 * @since 0.1.0
 * @category models
 */
export interface WireFormatOptions {
  /** Default: `Framing.lengthPrefixed()` (4-byte big-endian length, 1 MiB at most). */
  readonly framing?: Framing.Framing
  /** Default: `json`. */
  readonly serialization?: Serialization
}

/**
 * Messages of `schema`, one per frame.
 *
 * @example
 * ```ts
 * import { Schema } from "effect"
 * import { Framing, Message } from "effect-tcp"
 *
 * class Chat extends Schema.Class<Chat>("Chat")({ from: Schema.String, text: Schema.String }) {}
 *
 * // One JSON document per line, 4 KiB at most.
 * const chat = Message.codec(Chat, { framing: Framing.delimited({ delimiter: "\n", maxFrameBytes: 4096 }) })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const codec: <A, I, R>(schema: Schema.Schema<A, I, R>, options?: WireFormatOptions) => Codec<A, I, R> =
  internal.codec

/**
 * What sending a message can fail with: the connection's write errors, `FrameTooLarge` for a
 * message over the framing's limit, `MalformedFrame` (operation `"write"`) for a message that
 * its Schema or the serialization cannot encode, and `InvalidOptions` for a framing whose options
 * cannot work. Nothing is sent in the last three cases.
 *
 * @since 0.1.0
 * @category errors
 */
export type SendError = WriteError | FrameTooLarge | MalformedFrame | InvalidOptions

/**
 * What receiving a message can fail with: the connection's read errors, the framing's errors
 * (`FrameTooLarge`, `UnexpectedEof`), and `MalformedFrame` for a frame that is not valid for the
 * serialization or the Schema: its `cause` is the parse error, its `reason` says what was wrong.
 * A `MalformedFrame` does not disturb the framing: the next `receive` reads the next message.
 *
 * @since 0.1.0
 * @category errors
 */
export type ReceiveError = ReadError | Framing.DecodeError | MalformedFrame

/**
 * Options naming the peer in errors of the pure `encode` and `decode`.
 *
 * @since 0.1.0
 * @category models
 */
export interface EndpointOptions {
  /** Default `unknown:0`. */
  readonly endpoint?: Endpoint.Endpoint
}

/**
 * A frame's bytes as a message, or `MalformedFrame` (operation `"read"`) saying why not.
 * `Message.decode(frame, codec)`, or `Message.decode(codec)` to map frames.
 *
 * @example
 * ```ts
 * import { Effect, Schema, Stream } from "effect"
 * import { Message } from "effect-tcp"
 *
 * const Numbers = Message.codec(Schema.Struct({ n: Schema.Number }))
 * const frame = new TextEncoder().encode(`{"n":1}`)
 *
 * const one = Message.decode(frame, Numbers) // Effect<{ n: number }, MalformedFrame>
 * const all = Stream.make(frame, frame).pipe(Stream.mapEffect(Message.decode(Numbers)))
 * ```
 *
 * @since 0.1.0
 * @category decoding
 */
export const decode: {
  /**
   * A frame's bytes as a message, or `MalformedFrame` (operation `"read"`) saying why not.
   *
   * @since 0.1.0
   * @category decoding
   */
  <A, I, R>(
    codec: Codec<A, I, R>,
    options?: EndpointOptions
  ): (frame: Uint8Array) => Effect.Effect<A, MalformedFrame, R>
  /**
   * A frame's bytes as a message, or `MalformedFrame` (operation `"read"`) saying why not.
   *
   * @since 0.1.0
   * @category decoding
   */
  <A, I, R>(frame: Uint8Array, codec: Codec<A, I, R>, options?: EndpointOptions): Effect.Effect<A, MalformedFrame, R>
} = internal.decode

/**
 * A message as the body of a frame, or `MalformedFrame` (operation `"write"`) saying why not.
 * `Message.encode(message, codec)`, or `Message.encode(codec)` to map messages.
 *
 * @since 0.1.0
 * @category encoding
 */
export const encode: {
  /**
   * A message as the body of a frame, or `MalformedFrame` (operation `"write"`) saying why not.
   *
   * @since 0.1.0
   * @category encoding
   */
  <A, I, R>(
    codec: Codec<A, I, R>,
    options?: EndpointOptions
  ): (message: A) => Effect.Effect<Uint8Array | string, MalformedFrame, R>
  /**
   * A message as the body of a frame, or `MalformedFrame` (operation `"write"`) saying why not.
   *
   * @since 0.1.0
   * @category encoding
   */
  <A, I, R>(
    message: A,
    codec: Codec<A, I, R>,
    options?: EndpointOptions
  ): Effect.Effect<Uint8Array | string, MalformedFrame, R>
} = internal.encode

/**
 * Sends one message as one frame (one corked write). Messages sent concurrently never interleave.
 * `Message.send(connection, codec, message)`, or `Message.send(codec, message)` in a pipe.
 *
 * @example
 * ```ts
 * import { Effect, Schema } from "effect"
 * import { Message, Tcp } from "effect-tcp"
 *
 * const Greeting = Message.codec(Schema.Struct({ hello: Schema.String }))
 *
 * const program = Effect.gen(function*() {
 *   const connection = yield* Tcp.connect({ host: "127.0.0.1", port: 7000 })
 *   yield* Message.send(connection, Greeting, { hello: "world" })
 *   const messages = yield* Message.reader(connection, Greeting)
 *   const answer = yield* messages.receive // Option<{ hello: string }>
 *   yield* Effect.log(answer)
 * }).pipe(Effect.catchTag("MalformedFrame", (e) => Effect.logWarning(e.reason)))
 * ```
 *
 * @since 0.1.0
 * @category sending
 */
export const send: {
  /**
   * Sends one message as one frame (one corked write). Messages sent concurrently never interleave.
   *
   * @since 0.1.0
   * @category sending
   */
  <A, I, R>(codec: Codec<A, I, R>, message: NoInfer<A>): (connection: Connection) => Effect.Effect<void, SendError, R>
  /**
   * Sends one message as one frame (one corked write). Messages sent concurrently never interleave.
   *
   * @since 0.1.0
   * @category sending
   */
  <A, I, R>(connection: Connection, codec: Codec<A, I, R>, message: NoInfer<A>): Effect.Effect<void, SendError, R>
} = internal.send

/**
 * Sends several messages in one corked write; if one cannot be encoded, nothing is sent.
 * `Message.sendAll(connection, codec, messages)`, or `Message.sendAll(codec, messages)` in a pipe.
 *
 * @since 0.1.0
 * @category sending
 */
export const sendAll: {
  /**
   * Sends several messages in one corked write; if one cannot be encoded, nothing is sent.
   *
   * @since 0.1.0
   * @category sending
   */
  <A, I, R>(
    codec: Codec<A, I, R>,
    messages: Iterable<NoInfer<A>>
  ): (connection: Connection) => Effect.Effect<void, SendError, R>
  /**
   * Sends several messages in one corked write; if one cannot be encoded, nothing is sent.
   *
   * @since 0.1.0
   * @category sending
   */
  <A, I, R>(
    connection: Connection,
    codec: Codec<A, I, R>,
    messages: Iterable<NoInfer<A>>
  ): Effect.Effect<void, SendError, R>
} = internal.sendAll

/**
 * Typed messages read from one connection.
 *
 * Interruption: an interrupted `receive` loses nothing (see `Framing.FrameReader`).
 *
 * @since 0.1.0
 * @category models
 */
export interface MessageReader<A, R = never> {
  /**
   * The next message, or `None` once the peer closed between two frames. A frame that does not
   * decode fails this call with `MalformedFrame` and is consumed: calling `receive` again reads
   * the next message, so the caller decides whether the connection survives a bad frame.
   */
  readonly receive: Effect.Effect<Option.Option<A>, ReceiveError, R>
  /** The messages, ending when the peer closes between frames, failing at the first error. */
  readonly stream: Stream.Stream<A, ReceiveError, R>
}

/**
 * A reader of typed messages from `connection`; use one per connection. `InvalidOptions` if the
 * codec's framing cannot work. `Message.reader(connection, codec)`, or `Message.reader(codec)` in a pipe.
 *
 * @since 0.1.0
 * @category receiving
 */
export const reader: {
  /**
   * A reader of typed messages from a connection; use one per connection.
   *
   * @since 0.1.0
   * @category receiving
   */
  <A, I, R>(codec: Codec<A, I, R>): (connection: Connection) => Effect.Effect<MessageReader<A, R>, InvalidOptions>
  /**
   * A reader of typed messages from `connection`; use one per connection.
   *
   * @since 0.1.0
   * @category receiving
   */
  <A, I, R>(connection: Connection, codec: Codec<A, I, R>): Effect.Effect<MessageReader<A, R>, InvalidOptions>
} = internal.reader

/**
 * The messages of `connection`, until the peer closes between two frames; fails at the first
 * error, `MalformedFrame` included (to skip bad frames instead, loop on a reader's `receive`), and
 * at once with `InvalidOptions` if the codec's framing cannot work. `Message.stream(connection, codec)`,
 * or `Message.stream(codec)` in a pipe.
 *
 * @since 0.1.0
 * @category receiving
 */
export const stream: {
  /**
   * The messages of a connection, until the peer closes between two frames.
   *
   * @since 0.1.0
   * @category receiving
   */
  <A, I, R>(codec: Codec<A, I, R>): (connection: Connection) => Stream.Stream<A, ReceiveError | InvalidOptions, R>
  /**
   * The messages of `connection`, until the peer closes between two frames.
   *
   * @since 0.1.0
   * @category receiving
   */
  <A, I, R>(connection: Connection, codec: Codec<A, I, R>): Stream.Stream<A, ReceiveError | InvalidOptions, R>
} = internal.stream

// -----------------------------------------------------------------------------
// request / response

/**
 * A request got no response within its timeout. Only that request fails: the connection and the
 * other requests go on, and a response that arrives later is discarded.
 *
 * @since 0.1.0
 * @category errors
 */
export const RequestTimeout: typeof internalClient.RequestTimeout = internalClient.RequestTimeout

/**
 * A request got no response within its timeout (`endpoint`, `requestId`, `timeoutMillis`).
 *
 * @since 0.1.0
 * @category errors
 */
export type RequestTimeout = internalClient.RequestTimeout

/**
 * A request/response protocol: the Schemas of requests, of responses and of the typed failures a
 * handler may answer with, and how they are framed and serialized.
 *
 * On the wire each request is `{"id": n, "request": ...}` and each response
 * `{"id": n, "success": ...}`, `{"id": n, "failure": ...}`, `{"id": n, "defect": "..."}` or
 * `{"id": n, "malformed": "..."}` (the server could not decode request n), one per frame.
 *
 * @since 0.1.0
 * @category models
 */
export interface Protocol<
  Req extends Schema.Schema.Any,
  Res extends Schema.Schema.Any,
  Err extends Schema.Schema.All = typeof Schema.Never
> {
  readonly request: Req
  readonly response: Res
  readonly failure: Err
  readonly framing: Framing.Framing
  readonly serialization: Serialization
}

/**
 * Options of `protocol`.
 *
 * @since 0.1.0
 * @category models
 */
export interface ProtocolOptions<Req, Res, Err> extends WireFormatOptions {
  readonly request: Req
  readonly response: Res
  /** Typed failures a handler may answer with; default: none (`Schema.Never`). */
  readonly failure?: Err
}

/**
 * A request/response protocol.
 *
 * @example
 * ```ts
 * import { Schema } from "effect"
 * import { Framing, Message } from "effect-tcp"
 *
 * class Add extends Schema.TaggedClass<Add>()("Add", { a: Schema.Number, b: Schema.Number }) {}
 * class Overflow extends Schema.TaggedError<Overflow>()("Overflow", {}) {}
 *
 * const Calculator = Message.protocol({
 *   request: Add,
 *   response: Schema.Number,
 *   failure: Overflow,
 *   framing: Framing.lengthPrefixed({ maxFrameBytes: 4096 })
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const protocol: <
  Req extends Schema.Schema.Any,
  Res extends Schema.Schema.Any,
  Err extends Schema.Schema.All = typeof Schema.Never
>(options: ProtocolOptions<Req, Res, Err>) => Protocol<Req, Res, Err> = internal.protocol

/**
 * What a request can fail with, besides the protocol's typed failures:
 *
 * - `RequestTimeout`: no response within the request's timeout (only this request fails);
 * - `MalformedFrame`: the request could not be encoded, the server could not decode it, or its
 *   response did not decode (only this request fails); a response without an id is a protocol
 *   violation that fails every pending request;
 * - `FrameTooLarge` (operation `"write"`): the request is over the framing's limit;
 * - a write error: sending the request failed;
 * - a read error, `UnexpectedEof`, `FrameTooLarge`: the connection died; every pending request
 *   fails with that same error, and so does every later request. A `ReadTimeout` (the
 *   connection's `readTimeout`) fails the requests pending at that moment but not later ones;
 * - `InvalidOptions`: the request's own `timeout` is not a finite, non-negative duration; nothing is sent.
 *
 * A handler's defect on the server reaches the client as a defect of that request: by default only
 * a defect id, which the server's log line shows beside the full cause (see `exposeDefects`).
 *
 * @since 0.1.0
 * @category errors
 */
export type RequestError =
  | WriteError
  | ReadError
  | UnexpectedEof
  | FrameTooLarge
  | MalformedFrame
  | RequestTimeout
  | InvalidOptions

/**
 * Options of one request.
 *
 * @since 0.1.0
 * @category models
 */
export interface RequestOptions {
  /**
   * Fail with `RequestTimeout` when no response came within this long (send time included). A
   * negative, NaN, infinite or unparsable duration (`"1e3 millis"`) fails the request with `InvalidOptions`.
   */
  readonly timeout?: Duration.DurationInput
}

/**
 * Options of `client`.
 *
 * @since 0.1.0
 * @category models
 */
export interface ClientOptions {
  /**
   * The timeout of every request that does not give its own; default: none. Not a finite,
   * non-negative duration: `client` fails with `InvalidOptions`.
   */
  readonly timeout?: Duration.DurationInput
}

/**
 * A request/response client over one connection. Requests may be made from many fibers at once:
 * they are pipelined, each has its own id, and responses may arrive in any order.
 *
 * @since 0.1.0
 * @category models
 */
export interface Client<Req, Res, Err> {
  /**
   * Sends `request` and waits for its response. Interrupting it (or its timeout) abandons the
   * request: the request may already have been sent, and its late response is discarded.
   */
  readonly request: (request: Req, options?: RequestOptions) => Effect.Effect<Res, Err | RequestError>
  /** Requests sent and not yet answered. */
  readonly inFlight: Effect.Effect<number>
}

/**
 * A client of `protocol` over `connection`. A fiber reading responses runs until the scope closes
 * or the connection dies. Use one client per connection, and no other reads on it. Fails with
 * `InvalidOptions` for a bad `timeout` or a framing whose options cannot work.
 * `Message.client(connection, protocol)`, or `Message.client(protocol)` in a pipe.
 *
 * @example
 * ```ts
 * import { Effect, Schema } from "effect"
 * import { Message, Tcp } from "effect-tcp"
 *
 * const Echo = Message.protocol({ request: Schema.String, response: Schema.String })
 *
 * const program = Effect.gen(function*() {
 *   const connection = yield* Tcp.connect({ host: "127.0.0.1", port: 7000 })
 *   const client = yield* Message.client(connection, Echo, { timeout: "5 seconds" })
 *   // Three requests in flight at once on one connection.
 *   const answers = yield* Effect.all(["a", "b", "c"].map((s) => client.request(s)), { concurrency: "unbounded" })
 *   yield* Effect.log(answers)
 * }).pipe(Effect.catchTag("RequestTimeout", (e) => Effect.logWarning(e.message)))
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const client: {
  /**
   * A client of `protocol` over a connection; one client per connection, and no other reads on it.
   *
   * @since 0.1.0
   * @category constructors
   */
  <Req extends Schema.Schema.Any, Res extends Schema.Schema.Any, Err extends Schema.Schema.All>(
    protocol: Protocol<Req, Res, Err>,
    options?: ClientOptions
  ): (connection: Connection) => Effect.Effect<
    Client<Schema.Schema.Type<Req>, Schema.Schema.Type<Res>, Schema.Schema.Type<Err>>,
    InvalidOptions,
    Scope.Scope | Schema.Schema.Context<Req | Res | Err>
  >
  /**
   * A client of `protocol` over `connection`; one client per connection, and no other reads on it.
   *
   * @since 0.1.0
   * @category constructors
   */
  <Req extends Schema.Schema.Any, Res extends Schema.Schema.Any, Err extends Schema.Schema.All>(
    connection: Connection,
    protocol: Protocol<Req, Res, Err>,
    options?: ClientOptions
  ): Effect.Effect<
    Client<Schema.Schema.Type<Req>, Schema.Schema.Type<Res>, Schema.Schema.Type<Err>>,
    InvalidOptions,
    Scope.Scope | Schema.Schema.Context<Req | Res | Err>
  >
} = internalClient.client

/**
 * Answers one request: the response, or one of the protocol's typed failures. A defect is logged in
 * full with a defect id, and reaches the client as a defect of that request naming only that id
 * (unless `exposeDefects`); the connection goes on.
 *
 * @since 0.1.0
 * @category models
 */
export type Handler<Req, Res, Err, R> = (request: Req, connection: Connection) => Effect.Effect<Res, Err, R>

/**
 * Options of `serveConnection`.
 *
 * @since 0.1.0
 * @category models
 */
export interface ServeConnectionOptions {
  /**
   * Requests of one connection handled at once: an integer of at least 1, or `"unbounded"`;
   * default 100. When that many are running, the connection is not read, so a client pipelining
   * faster than the handler is slowed by TCP. Anything else is `InvalidOptions`.
   */
  readonly concurrency?: number | "unbounded"
  /**
   * What the client learns of a handler's defect (or of a response the server cannot encode). By
   * default (`false`) only a generic defect with an id, `request 7 died on the server: a defect,
   * logged by the server as defect 5f0c2a9e41b3`; the server logs the full cause (stack trace, file
   * paths) at Error with that id, in the message and as the `defectId` annotation. `true` sends the
   * full cause (`Cause.pretty`) to the client too: for development, or clients you trust.
   */
  readonly exposeDefects?: boolean
}

/**
 * Options of `serve`: the server's and `ServeConnectionOptions`.
 *
 * @since 0.1.0
 * @category models
 */
export interface ServeOptions extends Server.ServeOptions, ServeConnectionOptions {}

/**
 * Options of `serve` on a Unix domain socket: `Server.UnixServeOptions` and those of
 * `serveConnection`.
 *
 * @since 0.2.0
 * @category models
 */
export interface UnixServeOptions extends Server.UnixServeOptions, ServeConnectionOptions {}

/**
 * The server `serve` starts for its options: on a port, or on a Unix domain socket's path.
 *
 * @since 0.2.0
 * @category models
 */
export type ServerOf<O> = Server.Server<O extends { readonly path: string } ? Endpoint.UnixEndpoint : Endpoint.TcpEndpoint>

/**
 * What serving one connection ends with, besides the peer closing between requests (success):
 * the connection's read and write errors, the framing's errors, and `MalformedFrame` for a request
 * frame without an id (the peer does not speak the protocol), and `InvalidOptions` (before anything
 * is read) for options or a framing that cannot work. A request whose payload does not decode is
 * answered with a `malformed` response instead, and the connection goes on.
 *
 * @since 0.1.0
 * @category errors
 */
export type ServeError = ReadError | WriteError | Framing.DecodeError | MalformedFrame | InvalidOptions

/**
 * Serves `protocol` on one connection until the peer closes it: requests are read as they come,
 * handled concurrently (up to `concurrency`), and each response is sent as soon as it is ready,
 * so responses may leave in another order than their requests. To be used in a `Server.serve`
 * handler, as `Message.serveConnection(protocol, handler)`; `serve` does that.
 *
 * @since 0.1.0
 * @category serving
 */
export const serveConnection: {
  /**
   * Serves `protocol` on a connection until the peer closes it: a `Server.serve` handler.
   *
   * @since 0.1.0
   * @category serving
   */
  <Req extends Schema.Schema.Any, Res extends Schema.Schema.Any, Err extends Schema.Schema.All, R>(
    protocol: Protocol<Req, Res, Err>,
    handler: Handler<Schema.Schema.Type<Req>, Schema.Schema.Type<Res>, Schema.Schema.Type<Err>, R>,
    options?: ServeConnectionOptions
  ): (connection: Connection) => Effect.Effect<void, ServeError, R | Schema.Schema.Context<Req | Res | Err>>
  /**
   * Serves `protocol` on `connection` until the peer closes it.
   *
   * @since 0.1.0
   * @category serving
   */
  <Req extends Schema.Schema.Any, Res extends Schema.Schema.Any, Err extends Schema.Schema.All, R>(
    connection: Connection,
    protocol: Protocol<Req, Res, Err>,
    handler: Handler<Schema.Schema.Type<Req>, Schema.Schema.Type<Res>, Schema.Schema.Type<Err>, R>,
    options?: ServeConnectionOptions
  ): Effect.Effect<void, ServeError, R | Schema.Schema.Context<Req | Res | Err>>
} = internalServer.serveConnection

/**
 * Starts a server of `protocol` (`Server.serve` with `serveConnection` as the handler). Bad
 * options (`concurrency: 0`, a framing that cannot work) fail with `InvalidOptions` before anything
 * is bound.
 *
 * @example
 * ```ts
 * import { Effect, Schema } from "effect"
 * import { Message, NodeTcp } from "effect-tcp"
 *
 * const Echo = Message.protocol({ request: Schema.String, response: Schema.String })
 *
 * const program = Effect.gen(function*() {
 *   const server = yield* Message.serve(Echo, { port: 7000 }, (text) => Effect.succeed(text.toUpperCase()))
 *   yield* Effect.log(`listening on ${server.address}`)
 *   yield* Effect.never
 * }).pipe(Effect.scoped, Effect.provide(NodeTcp.layer))
 * ```
 *
 * @since 0.1.0
 * @category serving
 */
export const serve: <
  Req extends Schema.Schema.Any,
  Res extends Schema.Schema.Any,
  Err extends Schema.Schema.All,
  R,
  O extends ServeOptions | UnixServeOptions = ServeOptions
>(
  protocol: Protocol<Req, Res, Err>,
  options: O,
  handler: Handler<Schema.Schema.Type<Req>, Schema.Schema.Type<Res>, Schema.Schema.Type<Err>, R>
) => Effect.Effect<
  ServerOf<O>,
  ListenError,
  Tcp | Scope.Scope | Exclude<R | Schema.Schema.Context<Req | Res | Err>, Scope.Scope>
> = internalServer.serve
