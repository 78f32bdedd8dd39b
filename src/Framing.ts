/**
 * Frames on a TCP byte stream: length-prefixed (a 1, 2 or 4-byte length before each frame) or
 * delimited (each frame ends with a byte sequence such as `"\n"`), always with a maximum frame
 * size, so that no peer can make us buffer without bound.
 *
 * A `Framing` is a value describing the format; `reader` / `stream` decode frames from a
 * `Connection`, `write` / `writeAll` / `sink` send them, and `decodeStream` / `encodeStream` do
 * the same on any `Stream` of bytes.
 *
 * The constructors never throw: a framing whose options cannot work (a 3-byte header, an empty
 * delimiter, a negative `maxFrameBytes`) makes every use of it fail with `InvalidOptions` naming
 * the problem, before any byte is read or sent.
 *
 * @since 0.1.0
 */
import type * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import type * as Either from "effect/Either"
import { dual } from "effect/Function"
import type * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import * as Sink from "effect/Sink"
import * as Stream from "effect/Stream"
import type { Connection } from "./Connection.js"
import type * as Endpoint from "./Endpoint.js"
import * as internal from "./internal/framing.js"
import type { FrameTooLarge, InvalidOptions, MalformedFrame, ReadError, UnexpectedEof, WriteError } from "./TcpError.js"

/**
 * The maximum frame size when none is given: 1 MiB (or what the header can announce, if less).
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultMaxFrameBytes: number = 1024 * 1024

/**
 * Byte order of a length header.
 *
 * @since 0.1.0
 * @category models
 */
export type Endian = "big" | "little"

/**
 * Frames preceded by their body's length, as an unsigned integer of `headerBytes` bytes.
 *
 * @since 0.1.0
 * @category models
 */
export interface LengthPrefixed {
  readonly _tag: "LengthPrefixed"
  readonly headerBytes: 1 | 2 | 4
  readonly endian: Endian
  /** The largest body accepted, in bytes (the header is not counted). */
  readonly maxFrameBytes: number
}

/**
 * Frames that end with `delimiter` (which is not part of the frame).
 *
 * @since 0.1.0
 * @category models
 */
export interface Delimited {
  readonly _tag: "Delimited"
  readonly delimiter: Uint8Array
  /** The largest frame accepted, in bytes (the delimiter is not counted). */
  readonly maxFrameBytes: number
}

/**
 * How frames are laid out on the byte stream.
 *
 * @since 0.1.0
 * @category models
 */
export type Framing = LengthPrefixed | Delimited

/**
 * What decoding frames can fail with, besides the connection's own read errors:
 *
 * - `FrameTooLarge`: a header announced more than `maxFrameBytes`, or that many bytes came without
 *   the delimiter. Detected before the frame is buffered: at most one received chunk past the limit
 *   is ever held.
 * - `UnexpectedEof`: the peer closed in the middle of a frame; `expected` is the header size or the
 *   announced body length (absent for delimited frames), `received` how many of those bytes came.
 *
 * A peer that closes between two frames ends the frames normally. After either error the position in
 * the byte stream is lost: a `FrameReader` reports the same error on every later read.
 *
 * @since 0.1.0
 * @category errors
 */
export type DecodeError = FrameTooLarge | UnexpectedEof

/**
 * What encoding a frame can fail with: `FrameTooLarge` (operation `"write"`) for a body over
 * `maxFrameBytes`, and, for delimited frames, `MalformedFrame` for a body that contains the
 * delimiter, or that ends with the start of a delimiter overlapping itself (`"xa"` before `"aa"`):
 * it would arrive as more than one frame; `InvalidOptions` for a framing whose options cannot work.
 * Nothing is sent in any case.
 *
 * @since 0.1.0
 * @category errors
 */
export type EncodeError<F extends Framing = Framing> =
  | (F extends Delimited ? FrameTooLarge | MalformedFrame : FrameTooLarge)
  | InvalidOptions

/**
 * Options of `lengthPrefixed`.
 *
 * @since 0.1.0
 * @category models
 */
export interface LengthPrefixedOptions {
  /** Size of the length header: 1, 2 or 4 bytes; default 4. */
  readonly headerBytes?: 1 | 2 | 4
  /** Byte order of the header; default `"big"` (network order). */
  readonly endian?: Endian
  /** Largest body accepted and sent; default 1 MiB, or 255 / 65,535 for 1 / 2-byte headers. */
  readonly maxFrameBytes?: number
}

/**
 * Options of `delimited`.
 *
 * @since 0.1.0
 * @category models
 */
export interface DelimitedOptions {
  /** The bytes ending each frame (a string is taken as UTF-8): `"\n"`, `"\r\n"`, `"\0"`, ... Not empty. */
  readonly delimiter: Uint8Array | string
  /** Largest frame accepted and sent, delimiter excluded; default 1 MiB. */
  readonly maxFrameBytes?: number
}

/**
 * Frames preceded by their length. Options that cannot work (a header size other than 1, 2 or 4,
 * a `maxFrameBytes` that is negative, not an integer or more than the header can express) do not
 * throw: every use of the framing fails with `InvalidOptions` naming them.
 *
 * @example
 * ```ts
 * import { Framing } from "effect-tcp"
 *
 * // A 4-byte big-endian length, then the body; bodies over 64 KiB are refused both ways.
 * const framing = Framing.lengthPrefixed({ headerBytes: 4, endian: "big", maxFrameBytes: 64 * 1024 })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const lengthPrefixed = (options: LengthPrefixedOptions = {}): LengthPrefixed => {
  const headerBytes = options.headerBytes ?? 4
  const endian = options.endian ?? "big"
  const capacity = headerBytes === 1 || headerBytes === 2 || headerBytes === 4
    ? internal.headerCapacity(headerBytes)
    : defaultMaxFrameBytes
  const maxFrameBytes = options.maxFrameBytes ?? Math.min(defaultMaxFrameBytes, capacity)
  return { _tag: "LengthPrefixed", headerBytes, endian, maxFrameBytes }
}

/**
 * Frames ending with a delimiter. An empty delimiter or a `maxFrameBytes` that is negative or not an
 * integer do not throw: every use of the framing fails with `InvalidOptions` naming them.
 *
 * @example
 * ```ts
 * import { Framing } from "effect-tcp"
 *
 * // Text lines of at most 8 KiB; the "\n" is removed from each frame read.
 * const lines = Framing.delimited({ delimiter: "\n", maxFrameBytes: 8 * 1024 })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const delimited = (options: DelimitedOptions): Delimited => {
  const given: unknown = options?.delimiter
  // A copy, so that the caller changing its array cannot change the framing.
  const delimiter = typeof given === "string"
    ? new Uint8Array(Buffer.from(given))
    : given instanceof Uint8Array
    ? new Uint8Array(given)
    : new Uint8Array(0)
  const maxFrameBytes = options?.maxFrameBytes ?? defaultMaxFrameBytes
  return { _tag: "Delimited", delimiter, maxFrameBytes }
}

/**
 * Frames read from one connection.
 *
 * Frames are decoded in place from the connection's own bytes: the connection reads from its
 * socket only while no complete frame is queued, so reading stays pulled and a slow consumer slows
 * the peer down through TCP flow control. A frame inside one received chunk is a view of it; only a
 * frame spanning chunks is copied, once. `read` takes one frame at a time, so the bytes after the
 * last frame it returned are still the connection's (a `stream` takes every frame queued at each pull).
 *
 * Interruption: an interrupted `read` loses no bytes; the next `read` of the same reader goes on
 * where it stopped.
 *
 * @since 0.1.0
 * @category models
 */
export interface FrameReader {
  /**
   * The next frame, or `None` once the peer closed between two frames (and again on every later
   * read). A `ReadTimeout` loses nothing: reading again continues the same frame.
   */
  readonly read: Effect.Effect<Option.Option<Uint8Array>, ReadError | DecodeError>
  /**
   * The frames, until the peer closes between two of them; each pull yields every frame already
   * held, so frames move in chunks rather than one by one. A stream stopped early (`take`,
   * `runHead`, an interruption) drops the frames of its last chunk that it did not emit, and the
   * reader has lost its place: to stop after some frames and read on, use `read`.
   */
  readonly stream: Stream.Stream<Uint8Array, ReadError | DecodeError>
}

/**
 * A reader of frames from `connection`; `InvalidOptions` (operation `"read"`) if the framing's
 * options cannot work. Use one reader per connection: what it learnt about the frame it waits for
 * (a header, how far the delimiter search went) is its own.
 *
 * @example
 * ```ts
 * import { Effect, Option } from "effect"
 * import { Framing, Tcp } from "effect-tcp"
 *
 * const framing = Framing.lengthPrefixed({ maxFrameBytes: 64 * 1024 })
 *
 * const program = Effect.gen(function*() {
 *   const connection = yield* Tcp.connect({ host: "127.0.0.1", port: 7000 })
 *   yield* Framing.write(connection, framing, "ping")
 *   const frames = yield* Framing.reader(connection, framing)
 *   const answer = yield* frames.read
 *   if (Option.isSome(answer)) yield* Effect.log(Buffer.from(answer.value).toString())
 * }).pipe(Effect.catchTag("FrameTooLarge", (e) => Effect.logWarning(e.message)))
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const reader: {
  (framing: Framing): (connection: Connection) => Effect.Effect<FrameReader, InvalidOptions>
  (connection: Connection, framing: Framing): Effect.Effect<FrameReader, InvalidOptions>
} = dual(2, (connection: Connection, framing: Framing): Effect.Effect<FrameReader, InvalidOptions> =>
  Effect.suspend(() => {
    const invalid = internal.checkFraming(framing, "read")
    return invalid === undefined ? Effect.succeed(internal.makeReader(connection, framing)) : Effect.fail(invalid)
  }))

/**
 * The frames of `connection` as a stream (a fresh `reader`'s `stream`): pulled, so backpressure is
 * kept, ending normally when the peer closes between two frames. Each pull takes every frame
 * queued, so frames after the last one the stream emitted may have been taken from the connection:
 * read it through one reader, or one stream, only. Fails at once with `InvalidOptions` if the
 * framing's options cannot work.
 *
 * @example
 * ```ts
 * import { Stream } from "effect"
 * import { Framing, Server } from "effect-tcp"
 *
 * const lines = Framing.delimited({ delimiter: "\n", maxFrameBytes: 1024 })
 *
 * // Echo each line back, with its delimiter.
 * const server = Server.serve({ port: 0 }, (connection) =>
 *   Framing.stream(connection, lines).pipe(Stream.run(Framing.sink(connection, lines))))
 * ```
 *
 * @since 0.1.0
 * @category decoding
 */
export const stream: {
  (framing: Framing): (connection: Connection) => Stream.Stream<Uint8Array, ReadError | DecodeError | InvalidOptions>
  (connection: Connection, framing: Framing): Stream.Stream<Uint8Array, ReadError | DecodeError | InvalidOptions>
} = dual(2, (connection: Connection, framing: Framing): Stream.Stream<Uint8Array, ReadError | DecodeError | InvalidOptions> =>
  Stream.suspend((): Stream.Stream<Uint8Array, ReadError | DecodeError | InvalidOptions> => {
    const invalid = internal.checkFraming(framing, "read")
    return invalid === undefined ? internal.makeReader(connection, framing).stream : Stream.fail(invalid)
  }))

/**
 * Sends one frame: header and body (or body and delimiter) in one corked write, without copying
 * them together. A string body is sent as UTF-8. Nothing is sent when the body cannot be framed.
 * Frames written concurrently by several fibers never interleave. Takes the connection first, or
 * last to be piped from it (as `writeAll`, `sink`, `reader` and `stream` do).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Framing, Tcp } from "effect-tcp"
 *
 * const lines = Framing.delimited({ delimiter: "\n" })
 *
 * const program = Effect.gen(function*() {
 *   const connection = yield* Tcp.connect({ host: "127.0.0.1", port: 7000 })
 *   yield* Framing.write(connection, lines, "first")
 *   yield* connection.pipe(Framing.write(lines, "second"))
 * })
 * ```
 *
 * @since 0.1.0
 * @category encoding
 */
export const write: {
  <F extends Framing>(
    framing: F,
    body: Uint8Array | string
  ): (connection: Connection) => Effect.Effect<void, WriteError | EncodeError<F>>
  <F extends Framing>(
    connection: Connection,
    framing: F,
    body: Uint8Array | string
  ): Effect.Effect<void, WriteError | EncodeError<F>>
} = dual(3, internal.write)

/**
 * Sends several frames in one corked write. Every body is checked first: if one cannot be framed,
 * nothing is sent. Runs of small chunks (under 4 KiB) are copied together first: Node spends
 * microseconds on each chunk of a `writev`, far more than copying a few hundred bytes.
 *
 * @since 0.1.0
 * @category encoding
 */
export const writeAll: {
  <F extends Framing>(
    framing: F,
    bodies: Iterable<Uint8Array | string>
  ): (connection: Connection) => Effect.Effect<void, WriteError | EncodeError<F>>
  <F extends Framing>(
    connection: Connection,
    framing: F,
    bodies: Iterable<Uint8Array | string>
  ): Effect.Effect<void, WriteError | EncodeError<F>>
} = dual(3, internal.writeAll)

/**
 * Writes each element as a frame (each chunk of the stream in one corked write); does not end the
 * write side. Fails before the first element with `InvalidOptions` if the framing's options cannot work.
 *
 * @since 0.1.0
 * @category encoding
 */
export const sink: {
  <F extends Framing>(
    framing: F
  ): (connection: Connection) => Sink.Sink<void, Uint8Array | string, never, WriteError | EncodeError<F>>
  <F extends Framing>(
    connection: Connection,
    framing: F
  ): Sink.Sink<void, Uint8Array | string, never, WriteError | EncodeError<F>>
} = dual(2, <F extends Framing>(
  connection: Connection,
  framing: F
): Sink.Sink<void, Uint8Array | string, never, WriteError | EncodeError<F>> =>
  Sink.suspend(() => {
    const invalid = internal.checkFraming(framing, "write")
    return invalid === undefined
      ? Sink.forEachChunk((bodies: Chunk.Chunk<Uint8Array | string>) => internal.writeAll(connection, framing, bodies))
      : Sink.fail(invalid)
  }))

/**
 * Options of the functions that work without a connection (`decodeStream`, `encodeStream`,
 * `encodeFrame`): the endpoint their errors name, which no connection tells them (as
 * `Message.EndpointOptions` does for `Message.decode`).
 *
 * @since 0.1.0
 * @category models
 */
export interface EndpointOptions {
  /** The peer named in errors; default `unknown:0`. */
  readonly endpoint?: Endpoint.Endpoint
}

const isStream = (u: unknown): u is Stream.Stream<unknown, unknown, unknown> =>
  Predicate.hasProperty(u, Stream.StreamTypeId)

/**
 * Cuts any stream of bytes into frames, whatever the chunk boundaries. Frames inside one chunk
 * are views of it; a frame spanning chunks is copied once (and chunks of 256 bytes or less are
 * gathered into a shared block first, so a peer sending single bytes costs bytes, not objects).
 * Fails as soon as a frame is known to be too large, without pulling more input; a stream ending
 * mid-frame fails with `UnexpectedEof`; a framing whose options cannot work, with `InvalidOptions`.
 *
 * @example
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { Framing } from "effect-tcp"
 *
 * const lines = Framing.delimited({ delimiter: "\r\n", maxFrameBytes: 100 })
 *
 * const program = Stream.make("GET / HT", "TP/1.1\r\nHost: exa", "mple.com\r\n\r\n").pipe(
 *   Stream.encodeText,
 *   Framing.decodeStream(lines),
 *   Stream.decodeText(),
 *   Stream.runCollect
 * ) // ["GET / HTTP/1.1", "Host: example.com", ""]
 * ```
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodeStream: {
  (
    framing: Framing,
    options?: EndpointOptions
  ): <E, R>(self: Stream.Stream<Uint8Array, E, R>) => Stream.Stream<Uint8Array, E | DecodeError | InvalidOptions, R>
  <E, R>(
    self: Stream.Stream<Uint8Array, E, R>,
    framing: Framing,
    options?: EndpointOptions
  ): Stream.Stream<Uint8Array, E | DecodeError | InvalidOptions, R>
} = dual(
  (args) => isStream(args[0]),
  <E, R>(self: Stream.Stream<Uint8Array, E, R>, framing: Framing, options?: EndpointOptions) =>
    internal.decodeStream(self, framing, options?.endpoint ?? internal.unknownEndpoint)
)

/**
 * Turns each element into a frame's bytes (header and body, or body and delimiter, as separate
 * chunks); the inverse of `decodeStream`.
 *
 * @since 0.1.0
 * @category encoding
 */
export const encodeStream: {
  <F extends Framing>(
    framing: F,
    options?: EndpointOptions
  ): <E, R>(self: Stream.Stream<Uint8Array | string, E, R>) => Stream.Stream<Uint8Array, E | EncodeError<F>, R>
  <F extends Framing, E, R>(
    self: Stream.Stream<Uint8Array | string, E, R>,
    framing: F,
    options?: EndpointOptions
  ): Stream.Stream<Uint8Array, E | EncodeError<F>, R>
} = dual(
  (args) => isStream(args[0]),
  <F extends Framing, E, R>(self: Stream.Stream<Uint8Array | string, E, R>, framing: F, options?: EndpointOptions) =>
    internal.encodeStream(self, framing, options?.endpoint ?? internal.unknownEndpoint)
)

/**
 * The chunks that make up one frame (`[header, body]` or `[body, delimiter]`, without copying the
 * body), or why the body cannot be framed.
 *
 * @since 0.1.0
 * @category encoding
 */
export const encodeFrame = <F extends Framing>(
  framing: F,
  body: Uint8Array | string,
  options?: EndpointOptions
): Either.Either<ReadonlyArray<Uint8Array>, EncodeError<F>> =>
  internal.encodeFrame(framing, body, options?.endpoint ?? internal.unknownEndpoint)
