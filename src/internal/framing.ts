import * as Channel from "effect/Channel"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type { Connection } from "../Connection.js"
import * as Endpoint from "../Endpoint.js"
import type { DecodeError, EncodeError, FrameReader, Framing, LengthPrefixed } from "../Framing.js"
import * as TcpError from "../TcpError.js"
import { asBuffer, ByteQueue, DelimiterSearch, indexOfDelimiter } from "./byteQueue.js"
import {
  DelimitedDecoder,
  type FrameDecoder,
  type FrameSource,
  LengthPrefixedDecoder,
  readFramesKey
} from "./frameDecoder.js"
import { showValue } from "./options.js"

/** The endpoint named in errors of a decoder that does not read from a connection. */
export const unknownEndpoint = Endpoint.make("unknown", 0)

/** The largest body a header of this size can announce. */
export const headerCapacity = (headerBytes: 1 | 2 | 4): number => 2 ** (8 * headerBytes) - 1

const writeHeader = (framing: LengthPrefixed, length: number): Buffer => {
  const header = Buffer.allocUnsafe(framing.headerBytes)
  const big = framing.endian === "big"
  switch (framing.headerBytes) {
    case 1:
      header.writeUInt8(length, 0)
      break
    case 2:
      if (big) header.writeUInt16BE(length, 0)
      else header.writeUInt16LE(length, 0)
      break
    case 4:
      if (big) header.writeUInt32BE(length, 0)
      else header.writeUInt32LE(length, 0)
      break
  }
  return header
}

const maxFrameBytesIssue = (what: string, maxFrameBytes: number, limit: number): string | undefined => {
  if (!Number.isSafeInteger(maxFrameBytes) || maxFrameBytes < 0) {
    return `${what}: maxFrameBytes must be a non-negative integer, got ${showValue(maxFrameBytes)}`
  }
  if (maxFrameBytes > limit) return `${what}: maxFrameBytes ${maxFrameBytes} does not fit the header (at most ${limit})`
  return undefined
}

/**
 * Why a framing cannot work, or undefined. Read off the value itself, so a framing built by hand is
 * checked like one from the constructors, which never throw: every use fails with `InvalidOptions`.
 */
export const framingIssues = (framing: Framing): string | undefined => {
  if (framing._tag === "LengthPrefixed") {
    const issues: Array<string> = []
    const { endian, headerBytes, maxFrameBytes } = framing
    if (headerBytes !== 1 && headerBytes !== 2 && headerBytes !== 4) {
      issues.push(`Framing.lengthPrefixed: headerBytes must be 1, 2 or 4, got ${showValue(headerBytes)}`)
    }
    if (endian !== "big" && endian !== "little") {
      issues.push(`Framing.lengthPrefixed: endian must be "big" or "little", got ${showValue(endian)}`)
    }
    const max = issues.length > 0
      ? maxFrameBytesIssue("Framing.lengthPrefixed", maxFrameBytes, Number.MAX_SAFE_INTEGER)
      : maxFrameBytesIssue(`Framing.lengthPrefixed (${headerBytes}-byte header)`, maxFrameBytes, headerCapacity(headerBytes))
    if (max !== undefined) issues.push(max)
    return issues.length > 0 ? issues.join("; ") : undefined
  }
  const issues: Array<string> = []
  if (!(framing.delimiter instanceof Uint8Array) || framing.delimiter.length === 0) {
    issues.push("Framing.delimited: the delimiter must be a non-empty string or Uint8Array")
  }
  const max = maxFrameBytesIssue("Framing.delimited", framing.maxFrameBytes, Number.MAX_SAFE_INTEGER)
  if (max !== undefined) issues.push(max)
  return issues.length > 0 ? issues.join("; ") : undefined
}

const isValid = (framing: Framing): boolean => {
  const max = framing.maxFrameBytes
  if (!Number.isSafeInteger(max) || max < 0) return false
  if (framing._tag === "Delimited") return framing.delimiter instanceof Uint8Array && framing.delimiter.length > 0
  const headerBytes = framing.headerBytes
  return (headerBytes === 1 || headerBytes === 2 || headerBytes === 4) &&
    (framing.endian === "big" || framing.endian === "little") && max <= headerCapacity(headerBytes)
}

/** `InvalidOptions` for the operation about to use `framing`, if it cannot work. */
export const checkFraming = (framing: Framing, operation: TcpError.Operation): TcpError.InvalidOptions | undefined => {
  // Checked at every frame sent: the valid case allocates nothing.
  if (isValid(framing)) return undefined
  const issues = framingIssues(framing)
  return issues === undefined ? undefined : new TcpError.InvalidOptions({ operation, issues })
}

const tooLarge = (
  operation: TcpError.Operation,
  endpoint: Endpoint.Endpoint,
  size: number,
  maxBytes: number
) => new TcpError.FrameTooLarge({ operation, endpoint, size, maxBytes })

/** A decoder of `framing`'s frames; the framing must be valid (`checkFraming`). */
export const makeDecoder = (framing: Framing, endpoint: Endpoint.Endpoint = unknownEndpoint): FrameDecoder =>
  framing._tag === "LengthPrefixed"
    ? new LengthPrefixedDecoder(framing, endpoint)
    : new DelimitedDecoder(framing.delimiter, framing.maxFrameBytes, endpoint)

/** A stream transformation that keeps per-run state: emits what `push` produced, fails with what it returned. */
const transform = <A, B, E2>(
  make: () => {
    readonly push: (input: A, out: Array<B>) => E2 | undefined
    readonly end: () => E2 | undefined
  }
) =>
<E, R>(self: Stream.Stream<A, E, R>): Stream.Stream<B, E | E2, R> =>
  Stream.suspend(() => {
    const state = make()
    const loop: Channel.Channel<Chunk.Chunk<B>, Chunk.Chunk<A>, E | E2, E, unknown, unknown> = Channel.readWithCause({
      onInput: (input: Chunk.Chunk<A>) => {
        const out: Array<B> = []
        let error: E2 | undefined = undefined
        for (const element of input) {
          error = state.push(element, out)
          if (error !== undefined) break
        }
        const emitted = out.length > 0 ? Channel.write(Chunk.unsafeFromArray(out)) : Channel.void
        return error !== undefined ? Channel.zipRight(emitted, Channel.fail(error)) : Channel.zipRight(emitted, loop)
      },
      onFailure: (cause) => Channel.failCause(cause),
      onDone: () => {
        const error = state.end()
        return error !== undefined ? Channel.fail(error) : Channel.void
      }
    })
    return Stream.pipeThroughChannelOrFail(self, loop)
  })

export const decodeStream = <E, R>(
  self: Stream.Stream<Uint8Array, E, R>,
  framing: Framing,
  endpoint: Endpoint.Endpoint
): Stream.Stream<Uint8Array, E | DecodeError | TcpError.InvalidOptions, R> =>
  Stream.suspend((): Stream.Stream<Uint8Array, E | DecodeError | TcpError.InvalidOptions, R> => {
    const invalid = checkFraming(framing, "read")
    if (invalid !== undefined) return Stream.fail(invalid)
    return transform<Uint8Array, Uint8Array, DecodeError>(() => {
      const queue = new ByteQueue()
      const decoder = makeDecoder(framing, endpoint)
      return {
        push: (bytes, out) => {
          queue.push(bytes)
          for (let frame = decoder.decode(queue); frame !== undefined; frame = decoder.decode(queue)) out.push(frame)
          return decoder.failure
        },
        end: () => decoder.end(queue)
      }
    })(self)
  })

const toBytes = (body: Uint8Array | string): Buffer => typeof body === "string" ? Buffer.from(body) : asBuffer(body)

const describeDelimiter = (delimiter: Uint8Array): string => {
  const text = Buffer.from(delimiter).toString("utf8")
  return Buffer.from(text, "utf8").equals(delimiter)
    ? JSON.stringify(text)
    : `0x${Buffer.from(delimiter).toString("hex")}`
}

/**
 * Where the delimiter first occurs in `body + delimiter` if that is before the end of the body, else
 * -1: a body may also end with bytes that, followed by the delimiter, start it earlier ("xa" + "aa").
 */
const delimiterInside = (body: Buffer, delimiter: Uint8Array): number => {
  let search = encodeSearches.get(delimiter)
  if (search === undefined) encodeSearches.set(delimiter, search = new DelimiterSearch(delimiter))
  const at = indexOfDelimiter([body, search.delimiter], search)
  return at < body.length ? at : -1
}

/** One search per delimiter for the bodies checked before they are sent: a search runs synchronously, so it can be reused. */
const encodeSearches = new WeakMap<Uint8Array, DelimiterSearch>()

/** The chunks to send for one frame, or why it cannot be sent. */
export const encodeFrame = <F extends Framing>(
  framing: F,
  body: Uint8Array | string,
  endpoint: Endpoint.Endpoint
): Either.Either<ReadonlyArray<Uint8Array>, EncodeError<F>> => {
  const invalid = checkFraming(framing, "write")
  if (invalid !== undefined) return Either.left(invalid)
  const bytes = toBytes(body)
  if (bytes.length > framing.maxFrameBytes) {
    return Either.left(tooLarge("write", endpoint, bytes.length, framing.maxFrameBytes) as EncodeError<F>)
  }
  if (framing._tag === "LengthPrefixed") {
    const header = writeHeader(framing, bytes.length)
    return Either.right(bytes.length === 0 ? [header] : [header, bytes])
  }
  const delimiter = framing.delimiter
  const at = delimiterInside(bytes, delimiter)
  if (at >= 0) {
    return Either.left(
      new TcpError.MalformedFrame({
        operation: "write",
        endpoint,
        reason: `the body contains the delimiter ${
          describeDelimiter(delimiter)
        } at byte ${at}, so it would arrive as more than one frame`
      }) as EncodeError<F>
    )
  }
  return Either.right(bytes.length === 0 ? [delimiter] : [bytes, delimiter])
}

export const encodeStream = <F extends Framing, E, R>(
  self: Stream.Stream<Uint8Array | string, E, R>,
  framing: F,
  endpoint: Endpoint.Endpoint
): Stream.Stream<Uint8Array, E | EncodeError<F>, R> =>
  Stream.suspend((): Stream.Stream<Uint8Array, E | EncodeError<F>, R> => {
    const invalid = checkFraming(framing, "write")
    if (invalid !== undefined) return Stream.fail(invalid)
    return transform<Uint8Array | string, Uint8Array, EncodeError<F>>(() => ({
      push: (body, out) => {
        const encoded = encodeFrame(framing, body, endpoint)
        if (Either.isLeft(encoded)) return encoded.left
        for (const chunk of encoded.right) out.push(chunk)
        return undefined
      },
      end: () => undefined
    }))(self)
  })

export const encodeAll = <F extends Framing>(
  framing: F,
  bodies: Iterable<Uint8Array | string>,
  endpoint: Endpoint.Endpoint
): Either.Either<Array<Uint8Array>, EncodeError<F>> => {
  const invalid = checkFraming(framing, "write")
  if (invalid !== undefined) return Either.left(invalid)
  const chunks: Array<Uint8Array> = []
  for (const body of bodies) {
    const encoded = encodeFrame(framing, body, endpoint)
    if (Either.isLeft(encoded)) return Either.left(encoded.left)
    for (const chunk of encoded.right) chunks.push(chunk)
  }
  return Either.right(chunks)
}

/** Below this size, copying a chunk costs less than giving it its own entry in a `writev`. */
const gatherBelow = 4096

/**
 * Copies each run of small chunks into one buffer, leaving large ones as they are: Node spends
 * microseconds per `writev` entry, far more than copying a few hundred bytes.
 */
export const gather = (chunks: ReadonlyArray<Uint8Array>): ReadonlyArray<Uint8Array> => {
  let small = 0
  for (let i = 1; i < chunks.length; i++) {
    if (chunks[i]!.length < gatherBelow && chunks[i - 1]!.length < gatherBelow) small++
  }
  if (small === 0) return chunks
  const out: Array<Uint8Array> = []
  let i = 0
  while (i < chunks.length) {
    let end = i
    let size = 0
    while (end < chunks.length && chunks[end]!.length < gatherBelow) size += chunks[end++]!.length
    if (end - i >= 2) {
      const run = Buffer.allocUnsafe(size)
      let offset = 0
      for (let k = i; k < end; k++) {
        run.set(chunks[k]!, offset)
        offset += chunks[k]!.length
      }
      out.push(run)
      i = end
    } else {
      out.push(chunks[i++]!)
    }
  }
  return out
}

export const write = <F extends Framing>(
  connection: Connection,
  framing: F,
  body: Uint8Array | string
): Effect.Effect<void, TcpError.WriteError | EncodeError<F>> =>
  Effect.suspend((): Effect.Effect<void, TcpError.WriteError | EncodeError<F>> => {
    const encoded = encodeFrame(framing, body, connection.remoteAddress)
    return Either.isLeft(encoded) ? Effect.fail(encoded.left) : connection.writeAll(encoded.right)
  })

export const writeAll = <F extends Framing>(
  connection: Connection,
  framing: F,
  bodies: Iterable<Uint8Array | string>
): Effect.Effect<void, TcpError.WriteError | EncodeError<F>> =>
  Effect.suspend((): Effect.Effect<void, TcpError.WriteError | EncodeError<F>> => {
    const encoded = encodeAll(framing, bodies, connection.remoteAddress)
    return Either.isLeft(encoded) ? Effect.fail(encoded.left) : connection.writeAll(gather(encoded.right))
  })

type ReadFrameError = TcpError.ReadError | DecodeError

const isFrameSource = (connection: Connection): connection is Connection & FrameSource =>
  typeof (connection as Partial<FrameSource>)[readFramesKey] === "function"

/**
 * For a connection that does not decode in place (one implemented outside this library): its chunks,
 * taken with `read`, queued here. Only the wait is interruptible: a chunk once read is always queued.
 */
const readingSource = (connection: Connection): FrameSource[typeof readFramesKey] => {
  const queue = new ByteQueue()
  let ended = false
  const pull = Effect.uninterruptibleMask((restore) =>
    Effect.map(restore(connection.read), (chunk) => {
      if (Option.isNone(chunk)) ended = true
      else queue.push(chunk.value)
    })
  )
  return (decoder, out, limit) => {
    const attempt: Effect.Effect<boolean, ReadFrameError> = Effect.suspend(() => {
      const before = out.length
      for (let frame = decoder.decode(queue); frame !== undefined; frame = decoder.decode(queue)) {
        out.push(frame)
        if (out.length - before === limit) break
      }
      if (out.length > before) return frameRead
      if (decoder.failure !== undefined) return Effect.fail(decoder.failure)
      if (!ended) return Effect.zipRight(pull, attempt)
      const error = decoder.end(queue)
      return error === undefined ? endOfInput : Effect.fail(error)
    })
    return attempt
  }
}

/**
 * Frames read from a connection by the pure decoder, in place on the connection's own queue of
 * unread bytes: the connection is read only when no complete frame is queued (one chunk at a time,
 * so backpressure is kept), and `read` takes one frame at a time, so the bytes after the last frame
 * it returned stay the connection's. An error of the decoder is sticky, since the position in the
 * byte stream is lost after it.
 */
export const makeReader = (connection: Connection, framing: Framing): FrameReader => {
  const decoder = makeDecoder(framing, connection.remoteAddress)
  const readFrames = isFrameSource(connection) ? connection[readFramesKey] : readingSource(connection)
  // A frame taken from the connection waits here until `read` returns it: an interruption in between loses nothing.
  const ready: Array<Uint8Array> = []
  let ended = false
  const markEnded = () => {
    ended = true
  }

  const next: Effect.Effect<Option.Option<Uint8Array>, ReadFrameError> = Effect.suspend(() =>
    ready.length > 0 ? Effect.succeed(Option.some(ready.shift()!)) : noFrame
  )
  const read: Effect.Effect<Option.Option<Uint8Array>, ReadFrameError> = Effect.suspend(() => {
    if (ready.length > 0) return Effect.succeed(Option.some(ready.shift()!))
    if (decoder.failure !== undefined) return Effect.fail(decoder.failure)
    if (ended) return noFrame
    return Effect.flatMap(readFrames(decoder, ready, 1), (more) => {
      if (!more) markEnded()
      return next
    })
  })

  // Every frame queued, at least one, or null at the end: a stream of frames moves in chunks, not
  // frame by frame, through a channel written by hand (about 1 us less per pull than
  // Stream.repeatEffectChunkOption).
  const readChunk: Effect.Effect<Chunk.Chunk<Uint8Array> | null, ReadFrameError> = Effect.suspend(() => {
    if (ready.length > 0) return Effect.succeed(Chunk.unsafeFromArray(ready.splice(0)))
    if (decoder.failure !== undefined) return Effect.fail(decoder.failure)
    if (ended) return endOfFrames
    const out: Array<Uint8Array> = []
    return Effect.map(readFrames(decoder, out, Infinity), (more) => {
      if (more) return Chunk.unsafeFromArray(out)
      markEnded()
      return null
    })
  })
  const frames: Channel.Channel<Chunk.Chunk<Uint8Array>, unknown, ReadFrameError, unknown, void, unknown> = Channel
    .flatMap(
      Channel.fromEffect(readChunk),
      (chunk) => chunk === null ? Channel.void : Channel.flatMap(Channel.write(chunk), () => frames)
    )

  return { read, stream: Stream.fromChannel(frames) }
}

const frameRead = Effect.succeed(true)
const endOfInput = Effect.succeed(false)
const noFrame = Effect.succeed(Option.none<Uint8Array>())
const endOfFrames = Effect.succeed(null)

/**
 * Writes frames queued by many fibers, all that queued up while the previous write was in
 * progress going out in one corked write: under load, one system call carries many frames.
 */
export interface BatchWriter {
  /** Queues the chunks of one frame and waits until they were handed to the system. */
  readonly write: (chunks: ReadonlyArray<Uint8Array>) => Effect.Effect<void, TcpError.WriteError>
  /** Queues the chunks of one frame; `done` is called with the outcome of their write. */
  readonly offer: (
    chunks: ReadonlyArray<Uint8Array>,
    done: (exit: Exit.Exit<void, TcpError.WriteError>) => void
  ) => void
}

export const makeBatchWriter = (connection: Connection): Effect.Effect<BatchWriter, never, Scope.Scope> =>
  Effect.gen(function*() {
    type Done = (exit: Exit.Exit<void, TcpError.WriteError>) => void
    let outbox: Array<Uint8Array> = []
    let callbacks: Array<Done> = []
    let wake: (() => void) | undefined = undefined
    let stopped = false
    const closed = () =>
      Exit.fail(new TcpError.SocketClosed({ operation: "write", endpoint: connection.remoteAddress, reason: "Closed" }))
    const idle = Effect.async<void>((resume) => {
      wake = () => {
        wake = undefined
        resume(Effect.void)
      }
      return Effect.sync(() => {
        wake = undefined
      })
    })
    const flush = Effect.suspend(() => {
      if (outbox.length === 0) return idle
      const chunks = outbox
      const done = callbacks
      outbox = []
      callbacks = []
      return Effect.flatMap(Effect.exit(connection.writeAll(gather(chunks))), (exit) =>
        Effect.sync(() => {
          for (const callback of done) callback(exit)
        }))
    })
    yield* Effect.forever(flush).pipe(
      Effect.onExit(() =>
        Effect.sync(() => {
          stopped = true
          const done = callbacks
          outbox = []
          callbacks = []
          for (const callback of done) callback(closed())
        })
      ),
      Effect.forkScoped
    )
    const offer = (chunks: ReadonlyArray<Uint8Array>, done: Done): void => {
      if (stopped) return done(closed())
      for (const chunk of chunks) outbox.push(chunk)
      callbacks.push(done)
      wake?.()
    }
    return {
      offer,
      write: (chunks) =>
        Effect.async<void, TcpError.WriteError>((resume) => {
          offer(chunks, resume)
        })
    }
  })
