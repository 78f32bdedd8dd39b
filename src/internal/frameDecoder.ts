import type * as Effect from "effect/Effect"
import type * as Endpoint from "../Endpoint.js"
import type { DecodeError, LengthPrefixed } from "../Framing.js"
import * as TcpError from "../TcpError.js"
import { type ByteQueue, DelimiterSearch } from "./byteQueue.js"

/** The errors built here take values checked already: Schema validation would cost tens of µs each. */
const unchecked = { disableValidation: true } as const

/**
 * Frames taken from the front of a `ByteQueue` that someone else fills: a connection's queue of
 * bytes not yet read (`readUntil`, a `FrameReader`), or the queue of a decoder of a plain stream.
 * A decoder takes nothing until a whole frame is queued, then takes it in one step, so a read that
 * waits between two looks loses nothing if it is interrupted. What it learnt about the front of the
 * queue (a header, how far the delimiter search went) it keeps across waits for as long as nobody
 * else takes bytes (`ByteQueue.taken`), so each byte is looked at once.
 */
export interface FrameDecoder {
  /**
   * Takes the next whole frame from the front of `queue`: a view of one chunk, or a copy of bytes
   * spanning chunks. `undefined` while the queue holds only the start of one, or once `failure` is set.
   */
  decode(queue: ByteQueue): Buffer | undefined
  /** Set once the bytes cannot be a frame within the limit, or ended inside one; for good. */
  readonly failure: DecodeError | undefined
  /** How many bytes `queue` must hold before `decode` can say more: a waiting reader lets that many queue up. */
  wanted(queue: ByteQueue): number
  /** At the end of the input: `UnexpectedEof` (also set as `failure`) when the bytes left end inside a frame. */
  end(queue: ByteQueue): TcpError.UnexpectedEof | undefined
}

const tooLarge = (endpoint: Endpoint.Endpoint, size: number, maxBytes: number) =>
  new TcpError.FrameTooLarge({ operation: "read", endpoint, size, maxBytes }, unchecked)

const unexpectedEof = (endpoint: Endpoint.Endpoint, received: number, expected?: number) =>
  new TcpError.UnexpectedEof({ operation: "read", endpoint, expected, received }, unchecked)

export const readHeader = (framing: LengthPrefixed, header: Buffer): number => {
  const big = framing.endian === "big"
  switch (framing.headerBytes) {
    case 1:
      return header.readUInt8(0)
    case 2:
      return big ? header.readUInt16BE(0) : header.readUInt16LE(0)
    case 4:
      return big ? header.readUInt32BE(0) : header.readUInt32LE(0)
  }
}

/** Frames preceded by their length; the framing must be valid (`checkFraming`). */
export class LengthPrefixedDecoder implements FrameDecoder {
  failure: DecodeError | undefined = undefined
  /** The body length announced by the header at the front of the queue, read when `taken` was `at`. */
  private announced = 0
  private at = -1
  private readonly framing: LengthPrefixed
  private readonly endpoint: Endpoint.Endpoint

  constructor(framing: LengthPrefixed, endpoint: Endpoint.Endpoint) {
    this.framing = framing
    this.endpoint = endpoint
  }

  /** The body length the header at the front announces, or -1 while the header is incomplete. */
  private bodyLength(queue: ByteQueue): number {
    if (this.at === queue.taken) return this.announced
    if (queue.length < this.framing.headerBytes) return -1
    this.announced = readHeader(this.framing, queue.peek(this.framing.headerBytes))
    this.at = queue.taken
    return this.announced
  }

  decode(queue: ByteQueue): Buffer | undefined {
    if (this.failure !== undefined) return undefined
    const body = this.bodyLength(queue)
    if (body < 0) return undefined
    const max = this.framing.maxFrameBytes
    // Refused at the header: no byte of the body is waited for.
    if (body > max) {
      this.failure = tooLarge(this.endpoint, body, max)
      return undefined
    }
    const headerBytes = this.framing.headerBytes
    if (queue.length < headerBytes + body) return undefined
    queue.skip(headerBytes)
    return queue.take(body)
  }

  wanted(queue: ByteQueue): number {
    const body = this.bodyLength(queue)
    return this.framing.headerBytes + Math.max(0, body)
  }

  end(queue: ByteQueue): TcpError.UnexpectedEof | undefined {
    if (this.failure !== undefined || queue.length === 0) return undefined
    const headerBytes = this.framing.headerBytes
    const body = this.bodyLength(queue)
    const error = body < 0
      ? unexpectedEof(this.endpoint, queue.length, headerBytes)
      : unexpectedEof(this.endpoint, queue.length - headerBytes, body)
    this.failure = error
    return error
  }
}

/** Frames that end with a delimiter (not part of the frame); the delimiter must not be empty. */
export class DelimitedDecoder implements FrameDecoder {
  failure: DecodeError | undefined = undefined
  private readonly search: DelimiterSearch
  /** `taken` of the queue when the search state was last right about its front. */
  private at = -1
  private readonly delimiterBytes: number
  private readonly maxFrameBytes: number
  private readonly endpoint: Endpoint.Endpoint

  constructor(delimiter: Uint8Array, maxFrameBytes: number, endpoint: Endpoint.Endpoint) {
    this.search = new DelimiterSearch(delimiter)
    this.delimiterBytes = delimiter.length
    this.maxFrameBytes = maxFrameBytes
    this.endpoint = endpoint
  }

  decode(queue: ByteQueue): Buffer | undefined {
    if (this.failure !== undefined) return undefined
    if (this.at !== queue.taken) {
      this.search.reset()
      this.at = queue.taken
    }
    const max = this.maxFrameBytes
    const found = queue.search(this.search)
    if (found < 0) {
      // Without the delimiter, only the start of it that the bytes end with may still not belong to the frame.
      if (queue.length - this.search.matched > max) this.failure = tooLarge(this.endpoint, queue.length, max)
      return undefined
    }
    if (found > max) {
      this.failure = tooLarge(this.endpoint, found, max)
      return undefined
    }
    const frame = queue.take(found)
    queue.skip(this.delimiterBytes)
    this.at = queue.taken
    return frame
  }

  /** The next byte, up to the limit and the delimiter: more could only be a frame too large. */
  wanted(queue: ByteQueue): number {
    return Math.min(queue.length + 1, this.maxFrameBytes + this.delimiterBytes)
  }

  end(queue: ByteQueue): TcpError.UnexpectedEof | undefined {
    if (this.failure !== undefined || queue.length === 0) return undefined
    const error = unexpectedEof(this.endpoint, queue.length)
    this.failure = error
    return error
  }
}

/**
 * The key of a connection's own frame reading: a function that decodes frames from the
 * connection's queue of unread bytes, so that a frame reader needs no queue of its own. An own
 * property of the connection, so a copy (`{ ...connection }`) keeps it.
 */
export const readFramesKey: unique symbol = Symbol.for("effect-tcp/Connection/readFrames")

/** A connection that decodes frames in place. */
export interface FrameSource {
  /**
   * Waits until `decoder` can take a frame from the bytes received, then, in one synchronous step,
   * takes up to `limit` frames into `out`: true, or false when the peer closed between two frames.
   * Fails with the decoder's `failure`, or with the connection's error once no frame is left before it.
   */
  readonly [readFramesKey]: (
    decoder: FrameDecoder,
    out: Array<Uint8Array>,
    limit: number
  ) => Effect.Effect<boolean, TcpError.ReadError | DecodeError>
}
