import * as Channel from "effect/Channel"
import * as Chunk from "effect/Chunk"
import type * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Sink from "effect/Sink"
import * as Stream from "effect/Stream"
import { pipeArguments } from "effect/Pipeable"
import { hasProperty } from "effect/Predicate"
import type { Connection, ConnectionState, ReadUntilOptions, TlsInfo, TypeId as TypeId_ } from "../Connection.js"
import type { DecodeError } from "../Framing.js"
import * as Endpoint from "../Endpoint.js"
import * as TcpError from "../TcpError.js"
import { ByteQueue } from "./byteQueue.js"
import { DelimitedDecoder, type FrameDecoder, readFramesKey } from "./frameDecoder.js"
import { Deadline } from "./deadline.js"
import { showValue } from "./options.js"
import * as Tls from "./tls.js"

/** @internal */
export const TypeId: TypeId_ = Symbol.for("effect-tcp/Connection") as TypeId_

/**
 * Bytes received and not yet read, for a connection of ours (0 for any other): what a pool checks
 * before lending a connection again, since stray bytes would be read as the next borrower's reply.
 *
 * @internal
 */
export const unreadBytes = (connection: Connection): number =>
  connection instanceof NodeConnection ? connection.unread : 0

/** @internal */
export const isConnection = (u: unknown): u is Connection => hasProperty(u, TypeId)

/** An own property of each connection rather than a method, so that a copy `{ ...connection }` pipes too. */
const pipe = function(this: unknown) {
  return pipeArguments(this, arguments)
} as Connection["pipe"]

/** @internal */
export interface ConnectionOptions {
  readonly readTimeout: Duration.Duration | undefined
  readonly writeTimeout: Duration.Duration | undefined
  /** Called with nothing whenever bytes move; used by the server's idle limit. */
  readonly onActivity: (() => void) | undefined
  /** The clock of the read and write deadlines (`TestClock` in tests). */
  readonly clock: Clock.Clock
  /**
   * The path of a Unix domain socket, which both addresses then name: the system names neither
   * end of a connection to a path (the client's end is unbound), but the path says which it is.
   */
  readonly socketPath?: Endpoint.UnixEndpoint | undefined
  /**
   * Whether a TLS socket's handshake is over, verdicts included (a server's: it judged the client
   * before the connection reached it). Otherwise a TLS 1.3 client's is over once bytes came.
   */
  readonly handshakeDone?: boolean
}

const defaultReadUntilMax = 64 * 1024
/** The errors built here take values checked already: Schema validation would cost tens of µs each. */
const unchecked = { disableValidation: true } as const
const invalid = (issues: string) => new TcpError.InvalidOptions({ operation: "read", issues }, unchecked)

const noneEffect = Effect.succeed(Option.none<Uint8Array>())
const framesRead = Effect.succeed(true)
const endOfInput = Effect.succeed(false)
const openState: ConnectionState = { _tag: "Open" }
const closedState: ConnectionState = { _tag: "Closed" }

/**
 * Bytes received and not yet read, per connection, before the socket is paused: past this, Node
 * stops reading from the kernel, the kernel's window fills and the peer's writes block. A reader
 * waiting for more (`readExactly(n)`, `readUntil` up to `maxFrameBytes`) raises the mark by what it
 * needs; Node's own buffer (16 KiB) and one chunk in flight (64 KiB at most) come on top.
 */
const highWaterMark = 64 * 1024

/** Past this many waiters, those whose fiber has ended (interrupted reads) are dropped. */
const maxWaiters = 16

/**
 * A read or a write waiting: its fiber, to tell a live wait from one left by an interrupted
 * operation; when it began, for its deadline; and how to resume it.
 */
interface Waiter<E> {
  readonly fiber: Fiber.RuntimeFiber<unknown, unknown>
  readonly since: number
  readonly resume: (effect: Effect.Effect<void, E>) => void
}

/**
 * Node calls a pending write back without an error when the socket is destroyed before the write
 * completed: such a write is not known to have reached the kernel.
 */
const unconfirmed = new Error("the connection was destroyed before the write completed")

/**
 * Sorts the waiters: those of interrupted operations are dropped, the live ones with no time
 * `left` are overdue, the others wait on, and `next` is when the first of them is due. `expire`
 * fails the overdue ones, once the caller has stored the others (a resumed read may look at them).
 */
const expireWaiters = <E>(
  waiters: ReadonlyArray<Waiter<E>>,
  left: (since: number) => number,
  error: () => E
): { readonly next: number | undefined; readonly waiting: Array<Waiter<E>>; readonly expire: () => void } => {
  let next: number | undefined
  const waiting: Array<Waiter<E>> = []
  const overdue: Array<Waiter<E>> = []
  for (const waiter of waiters) {
    if (waiter.fiber.unsafePoll() !== null) continue
    const remaining = left(waiter.since)
    if (remaining <= 0) {
      overdue.push(waiter)
    } else {
      waiting.push(waiter)
      if (next === undefined || remaining < next) next = remaining
    }
  }
  const expire = () => {
    if (overdue.length === 0) return
    const timedOut = Effect.fail(error())
    for (const waiter of overdue) waiter.resume(timedOut)
  }
  return { next, waiting, expire }
}

/**
 * What a connection needs of its socket, and all it uses: a `net.Socket` has it, and so have a
 * `tls.TLSSocket`, a socket on a Unix domain path and an in-memory `Duplex` given addresses, so
 * that each transport wraps its sockets in the same connection.
 *
 * @internal
 */
export interface ConnectionSocket {
  /** Undefined when unknown (an in-memory socket, a Unix domain socket's peer): the endpoint says `unknown`. */
  readonly remoteAddress?: string | undefined
  readonly remotePort?: number | undefined
  readonly localAddress?: string | undefined
  readonly localPort?: number | undefined
  /** Bytes as they arrive ("data", while flowing), the peer's FIN ("end"), a failure ("error"), the end ("close"). */
  on(event: "data" | "end" | "error" | "close", listener: (...args: Array<any>) => void): unknown
  off(event: "data" | "end" | "error" | "close", listener: (...args: Array<any>) => void): unknown
  /** Stops and restarts "data" events: the connection's backpressure. */
  pause(): unknown
  resume(): unknown
  /** Hands bytes on; the callback says when they are with the system, or why not. */
  write(data: Uint8Array | string, callback?: (error?: Error | null) => void): boolean
  /** Between the two, writes leave together (`writev`). */
  cork(): void
  uncork(): void
  /** Half-close: FIN once every byte written went. */
  end(callback: () => void): unknown
  destroy(): unknown
  /** Closes with RST. Absent, or throwing (Node refuses it on TLS and Unix domain sockets): `reset` closes instead. */
  resetAndDestroy?: (() => unknown) | undefined
  readonly destroyed: boolean
  /** The error the socket was destroyed with, set before its "error" event. */
  readonly errored: Error | null
  /** Bytes written and not yet with the system. */
  readonly writableLength: number
  /**
   * libuv's count of bytes that pending writes still have for the kernel: the write deadline sees
   * progress when it falls. Without it (no libuv handle), progress is seen at each write's callback.
   */
  readonly _handle?: { readonly writeQueueSize?: number } | null | undefined
}

const writeQueueSize = (socket: ConnectionSocket): number => socket._handle?.writeQueueSize ?? 0

/** Closes abortively where the socket can, else closes. */
const resetOrDestroy = (socket: ConnectionSocket): void => {
  if (socket.resetAndDestroy !== undefined) {
    try {
      socket.resetAndDestroy()
      return
    } catch {
      // ERR_INVALID_HANDLE_TYPE: not a TCP handle (TLS, Unix domain socket); nothing was done yet.
    }
  }
  socket.destroy()
}

/**
 * A socket (`ConnectionSocket`: TCP, TLS, Unix domain, in memory) behind the `Connection`
 * interface, so every transport shares its reads, writes, deadlines and errors. The socket flows:
 * each chunk Node reads goes into a byte queue, synchronously in its 'data' event, and reads take
 * from the queue. Past the high-water mark the socket is paused, and it resumes once reads drain
 * the queue below it. (Node's paused mode, 'readable' + read(), costs a tick and a pass through
 * the stream machinery per chunk; this costs an array push.)
 *
 * A read never holds bytes across a wait: it waits, without taking anything, until the queue
 * holds what it needs (or the stream ended), then takes it in one synchronous step. So an
 * interrupted read loses nothing, and no read needs an uninterruptible region or a finalizer:
 * both cost more than the rest of a read.
 *
 * @internal
 */
export class NodeConnection implements Connection {
  readonly [TypeId]: TypeId_ = TypeId
  readonly pipe = pipe
  readonly remoteAddress: Endpoint.Endpoint
  readonly localAddress: Endpoint.Endpoint
  readonly tls: Option.Option<TlsInfo>
  /** Bytes Node delivered and no read has taken yet. */
  private readonly bytes = new ByteQueue()

  /** Bytes received and not yet read. */
  get unread(): number {
    return this.bytes.length
  }
  private paused = false
  private eof = false
  private writeEnded = false
  private closedByUs = false
  /** The first error Node reported; every later operation fails with it. */
  private failure: unknown = undefined
  /**
   * A typed error imposed from outside (the server's idle limit), reported by every later
   * operation, each with its own operation: a read gets it as a read's error, a write as a write's.
   */
  private imposed: { readonly read: TcpError.IdleTimeout; readonly write: TcpError.IdleTimeout } | undefined =
    undefined
  private readWaiters: Array<Waiter<TcpError.ReadTimeout>> = []
  /** When `readWaiters` reaches this, the stale ones are dropped; it grows with the live ones. */
  private waiterLimit = maxWaiters
  /** The most bytes a waiting reader needs queued at once; raises the pause mark while it waits. */
  private wanted = 0
  private readonly readTimeoutMillis: number | undefined
  private readonly writeTimeoutMillis: number | undefined
  private readonly clock: Clock.Clock
  private readonly readDeadline: Deadline | undefined
  private readonly writeDeadline: Deadline | undefined
  /** Writes waiting for their callback, when a write deadline watches them. */
  private writeWaiters: Array<Waiter<TcpError.WriteTimeout>> = []
  /** `writeQueueSize` when last looked at, and when it was last seen to change or a write completed. */
  private lastWriteQueueSize = 0
  private lastWriteProgressAt = 0
  readonly socket: ConnectionSocket
  readonly options: ConnectionOptions

  constructor(socket: ConnectionSocket, options: ConnectionOptions) {
    this.socket = socket
    this.options = options
    this.remoteAddress = options.socketPath ?? Endpoint.make(socket.remoteAddress ?? "unknown", socket.remotePort ?? 0)
    this.localAddress = options.socketPath ?? Endpoint.make(socket.localAddress ?? "unknown", socket.localPort ?? 0)
    this.tls = Tls.info(socket)
    this.handshakeSettled = options.handshakeDone === true || Option.isNone(this.tls) ||
      this.tls.value.protocol !== "TLSv1.3"
    this.readTimeoutMillis = options.readTimeout && Duration.toMillis(options.readTimeout)
    this.writeTimeoutMillis = options.writeTimeout && Duration.toMillis(options.writeTimeout)
    this.clock = options.clock
    this.readDeadline = this.readTimeoutMillis === undefined
      ? undefined
      : new Deadline(options.clock, (now) => this.expireReads(now))
    this.writeDeadline = this.writeTimeoutMillis === undefined
      ? undefined
      : new Deadline(options.clock, (now) => this.expireWrites(now))
    socket.on("data", this.onData)
    socket.on("end", this.onEnd)
    socket.on("error", this.onError)
    socket.on("close", this.wakeReaders)
    Object.defineProperties(this, NodeConnection.lazyMembers)
  }

  private readonly wakeReaders = (): void => {
    const waiters = this.readWaiters
    this.wanted = 0
    if (waiters.length === 0) return
    this.readWaiters = []
    this.waiterLimit = maxWaiters
    for (const waiter of waiters) waiter.resume(Effect.void)
  }

  /**
   * Drops the waiters of reads that were interrupted (their fiber has ended: resuming them would do
   * nothing), and makes room for twice the live ones, so that many live readers never make this
   * run at every wait.
   */
  private dropStaleWaiters(): void {
    const live = this.readWaiters.filter((waiter) => waiter.fiber.unsafePoll() === null)
    this.readWaiters = live
    this.waiterLimit = Math.max(maxWaiters, 2 * live.length)
  }
  /**
   * Whether the TLS handshake is over for good. A TLS 1.3 client learns the server's verdict on its
   * certificate after "secureConnect", from the first record: a failure until then is the
   * handshake's; after, it is a broken connection (corrupted records, an alert), not a handshake.
   */
  private handshakeSettled: boolean
  private readonly onData = (chunk: Buffer): void => {
    this.handshakeSettled = true
    this.bytes.push(chunk)
    if (!this.paused && this.bytes.length >= highWaterMark + this.wanted) {
      this.paused = true
      this.socket.pause()
    }
    if (this.options.onActivity) this.options.onActivity()
    if (this.readWaiters.length > 0) this.wakeReaders()
  }

  /**
   * The read deadline's check: fails the reads that have waited `readTimeout` without a byte (a
   * byte wakes every reader, and one that still needs more waits anew), and says when the next
   * one is due.
   */
  private expireReads(now: number): number | undefined {
    const millis = this.readTimeoutMillis!
    if (this.socket.destroyed || this.readWaiters.length === 0) return undefined
    const { expire, next, waiting } = expireWaiters(
      this.readWaiters,
      (since) => since + millis - now,
      () => new TcpError.ReadTimeout({ operation: "read", endpoint: this.remoteAddress, timeoutMillis: millis }, unchecked)
    )
    this.readWaiters = waiting
    if (waiting.length === 0) this.wanted = 0
    expire()
    return next
  }

  /**
   * When bytes of a pending write last went to the kernel, as far as can be told: a write's
   * callback, or libuv's queue of unwritten bytes seen to change since the last look (Node's own
   * socket timeout looks the same way). The write deadline and the server's idle limit call it.
   */
  writeProgressAt(now: number): number {
    const queued = writeQueueSize(this.socket)
    if (queued !== this.lastWriteQueueSize) {
      this.lastWriteQueueSize = queued
      this.lastWriteProgressAt = now
    }
    return this.lastWriteProgressAt
  }

  private writeProgressed(): void {
    this.lastWriteQueueSize = writeQueueSize(this.socket)
    this.lastWriteProgressAt = this.clock.unsafeCurrentTimeMillis()
    if (this.options.onActivity) this.options.onActivity()
  }

  /**
   * The write deadline's check: fails the writes that have moved no byte to the kernel for
   * `writeTimeout`. It looks four times per `writeTimeout`, so a write that stalls fails between
   * one and one and a quarter `writeTimeout` after its last byte moved.
   */
  private expireWrites(now: number): number | undefined {
    const millis = this.writeTimeoutMillis!
    if (this.socket.destroyed || this.writeWaiters.length === 0) return undefined
    const progressAt = this.writeProgressAt(now)
    const { expire, next, waiting } = expireWaiters(
      this.writeWaiters,
      (since) => Math.max(since, progressAt) + millis - now,
      () => new TcpError.WriteTimeout({ operation: "write", endpoint: this.remoteAddress, timeoutMillis: millis }, unchecked)
    )
    this.writeWaiters = waiting
    expire()
    return next === undefined ? undefined : Math.min(next, Math.max(1, millis / 4))
  }

  /** Resumes a paused socket once the queue is below the mark. */
  private resumeIfRoom(): void {
    if (this.paused && this.bytes.length < highWaterMark + this.wanted) {
      this.paused = false
      if (!this.socket.destroyed) this.socket.resume()
    }
  }
  private takeChunk(): Buffer {
    const chunk = this.bytes.takeChunk()
    this.resumeIfRoom()
    return chunk
  }
  private takeBytes(size: number): Buffer {
    const taken = this.bytes.take(size)
    this.resumeIfRoom()
    return taken
  }

  private readonly onEnd = (): void => {
    this.eof = true
    this.wakeReaders()
  }
  private readonly onError = (error: unknown): void => {
    if (this.failure === undefined) this.failure = error
    this.wakeReaders()
  }

  /**
   * Hands the socket over to what wraps it (a TLS upgrade): this connection stops listening to it
   * and fails every later operation with `SocketClosed`, leaving the socket open. Refused (with
   * why) unless the connection is open both ways with nothing received and unread: bytes that came
   * before the handshake are not the peer's TLS, and would be lost or, if injected, trusted.
   */
  detach(): ConnectionSocket | "Closed" | "WriteSideEnded" | { readonly unread: number } {
    if (
      this.closedByUs || this.imposed !== undefined || this.failure !== undefined || this.socket.destroyed || this.eof
    ) return "Closed"
    if (this.writeEnded) return "WriteSideEnded"
    if (this.bytes.length > 0) return { unread: this.bytes.length }
    this.closedByUs = true
    this.socket.off("data", this.onData)
    this.socket.off("end", this.onEnd)
    this.socket.off("error", this.onError)
    this.socket.off("close", this.wakeReaders)
    if (this.paused) this.socket.resume()
    this.wakeReaders()
    this.stopDeadlines()
    return this.socket
  }

  /** Destroys the socket; what was pending fails with `SocketClosed`. */
  readonly destroy = (): void => {
    this.closedByUs = true
    this.bytes.clear()
    if (!this.socket.destroyed) this.socket.destroy()
    this.wakeReaders()
    this.stopDeadlines()
  }

  private stopDeadlines(): void {
    this.readDeadline?.unsafeStop()
    this.writeDeadline?.unsafeStop()
  }

  /**
   * Destroys the socket and waits until the deadlines' fibers have ended: the release of the
   * connection's scope.
   */
  readonly release: Effect.Effect<void> = Effect.suspend(() => {
    this.destroy()
    if (this.readDeadline === undefined && this.writeDeadline === undefined) return Effect.void
    return Effect.zipRight(this.readDeadline?.stop ?? Effect.void, this.writeDeadline?.stop ?? Effect.void)
  })

  /** Destroys the socket abortively (RST), where its transport can. */
  readonly resetNow = (): void => {
    this.closedByUs = true
    this.bytes.clear()
    if (!this.socket.destroyed) resetOrDestroy(this.socket)
    this.wakeReaders()
    this.stopDeadlines()
  }

  /** Closes the connection so that every later operation fails with `error`. */
  impose(error: TcpError.IdleTimeout): void {
    if (this.imposed === undefined) {
      const as = (operation: "read" | "write") =>
        error.operation === operation
          ? error
          : new TcpError.IdleTimeout({ ...error, operation }, unchecked)
      this.imposed = { read: as("read"), write: as("write") }
    }
    // Every later read reports `error`: nothing queued will be read.
    this.bytes.clear()
    if (!this.socket.destroyed) this.socket.destroy()
    this.wakeReaders()
    this.stopDeadlines()
  }

  private closedError(operation: TcpError.Operation, reason: TcpError.SocketClosed["reason"]) {
    return new TcpError.SocketClosed({ operation, endpoint: this.remoteAddress, reason }, unchecked)
  }

  // ---------------------------------------------------------------------------
  // reading

  /** Why no read can take bytes any more (closed by us, or an imposed error), else undefined. */
  private readBlocked(): TcpError.ReadError | undefined {
    if (this.imposed !== undefined) return this.imposed.read
    if (this.closedByUs) return this.closedError("read", "Closed")
    return undefined
  }

  /** What a read fails with: a TLS error after the handshake is a `SocketFailure`, its code kept. */
  private readFailure(failure: unknown): TcpError.ReadError {
    const error = TcpError.classify(failure, "read", this.remoteAddress)
    if (error._tag !== "TlsHandshakeFailed" || !this.handshakeSettled) return error
    return new TcpError.SocketFailure({
      operation: "read",
      endpoint: error.endpoint,
      code: error.code,
      detail: `TLS failed after the handshake: ${error.detail ?? error.code ?? error.reason}`
    }, unchecked)
  }

  /**
   * Once the queued bytes cannot satisfy a read: the error or end that comes after them, or
   * undefined when the read must wait. Bytes that arrived before an error are read first, as the
   * kernel would.
   */
  private afterQueued(): TcpError.ReadError | null | undefined {
    // `errored` is set as the socket is destroyed, a turn before its 'error' event.
    const failure = this.failure ?? this.socket.errored ?? undefined
    if (failure !== undefined) return this.readFailure(failure)
    if (this.eof) return null
    if (this.socket.destroyed) return this.closedError("read", "Closed")
    return undefined
  }

  /**
   * Waits until more bytes arrive or the stream ends, for a reader that needs `room` bytes
   * queued at once. Interruptible, and it takes nothing, so interrupting it loses nothing. No
   * canceler (it would more than double the cost of a wait): a waiter left by an interrupted wait
   * is dropped at the next wake, or once `waiterLimit` waiters pile up, whichever comes first;
   * resuming it meanwhile would do nothing.
   */
  private waitFor(room: number): Effect.Effect<void, TcpError.ReadError> {
    const deadline = this.readDeadline
    const wait = Effect.withFiberRuntime<void, TcpError.ReadTimeout>((fiber) =>
      Effect.async<void, TcpError.ReadTimeout>((resume) => {
        // Something may have happened since the caller looked, with nobody listening yet.
        if (this.bytes.length >= room || this.readBlocked() !== undefined || this.afterQueued() !== undefined) {
          return resume(Effect.void)
        }
        if (room > this.wanted) this.wanted = room
        this.resumeIfRoom()
        if (this.readWaiters.length >= this.waiterLimit) this.dropStaleWaiters()
        this.readWaiters.push({ fiber, since: deadline ? this.clock.unsafeCurrentTimeMillis() : 0, resume })
      })
    )
    const arm = deadline?.arm()
    return arm === undefined ? wait : Effect.zipRight(arm, wait)
  }

  private readNow(): Effect.Effect<Option.Option<Uint8Array>, TcpError.ReadError> {
    const blocked = this.readBlocked()
    if (blocked !== undefined) return Effect.fail(blocked)
    if (this.bytes.length > 0) return Effect.succeed(Option.some(this.takeChunk()))
    const after = this.afterQueued()
    if (after === null) return noneEffect
    if (after !== undefined) return Effect.fail(after)
    return Effect.flatMap(this.waitFor(1), this.readAgain)
  }
  private readonly readAgain = () => this.readNow()

  readonly read: Effect.Effect<Option.Option<Uint8Array>, TcpError.ReadError> = Effect.suspend(this.readAgain)

  private readExactlyNow(size: number): Effect.Effect<Uint8Array, TcpError.ReadError | TcpError.UnexpectedEof> {
    const blocked = this.readBlocked()
    if (blocked !== undefined) return Effect.fail(blocked)
    if (this.bytes.length >= size) return Effect.succeed(this.takeBytes(size))
    const after = this.afterQueued()
    if (after === null) {
      return Effect.fail(
        new TcpError.UnexpectedEof({
          operation: "read",
          endpoint: this.remoteAddress,
          expected: size,
          received: this.bytes.length
        }, unchecked)
      )
    }
    if (after !== undefined) return Effect.fail(after)
    return Effect.flatMap(this.waitFor(size), () => this.readExactlyNow(size))
  }

  readonly readExactly = (
    size: number
  ): Effect.Effect<Uint8Array, TcpError.ReadError | TcpError.UnexpectedEof | TcpError.InvalidOptions> => {
    if (!Number.isSafeInteger(size) || size < 0) {
      return Effect.fail(invalid(`readExactly: the size must be a non-negative integer, got ${showValue(size)}`))
    }
    if (size === 0) return Effect.succeed(new Uint8Array(0))
    return Effect.suspend(() => this.readExactlyNow(size))
  }

  readonly readUntil = (
    delimiter: Uint8Array | string,
    options?: ReadUntilOptions
  ): Effect.Effect<
    Uint8Array,
    TcpError.ReadError | TcpError.UnexpectedEof | TcpError.FrameTooLarge | TcpError.InvalidOptions
  > => {
    // Buffer.from would throw at the caller for anything else (a caller without types).
    if (typeof delimiter !== "string" && !(delimiter instanceof Uint8Array)) {
      return Effect.fail(invalid(`readUntil: the delimiter must be a string or bytes, got ${typeof delimiter}`))
    }
    const needle = Buffer.from(delimiter)
    const maxFrameBytes = options?.maxFrameBytes ?? defaultReadUntilMax
    if (needle.length === 0) return Effect.fail(invalid("readUntil: the delimiter must not be empty"))
    if (!Number.isSafeInteger(maxFrameBytes) || maxFrameBytes < 0) {
      return Effect.fail(invalid(`readUntil: maxFrameBytes must be a non-negative integer, got ${showValue(maxFrameBytes)}`))
    }
    return Effect.suspend(() => {
      const decoder = new DelimitedDecoder(needle, maxFrameBytes, this.remoteAddress)
      const line: Array<Uint8Array> = []
      return Effect.flatMap(this.readFrames(decoder, line, 1), (found) =>
        found
          ? Effect.succeed(line[0]!)
          // The peer closed before a byte of the line came (bytes cut short fail in the decoder).
          : Effect.fail(
            new TcpError.UnexpectedEof({ operation: "read", endpoint: this.remoteAddress, received: 0 }, unchecked)
          ))
    })
  }

  readonly [readFramesKey] = (
    decoder: FrameDecoder,
    out: Array<Uint8Array>,
    limit: number
  ): Effect.Effect<boolean, TcpError.ReadError | DecodeError> => Effect.suspend(() => this.readFrames(decoder, out, limit))

  /**
   * What `readUntil` and frame readers share: a decoder takes frames from the queue itself, in one
   * synchronous step once a frame is whole; meanwhile the read waits, taking nothing, for as many
   * bytes as the decoder wants (which raises the pause mark, up to the decoder's limit).
   */
  private readFrames(
    decoder: FrameDecoder,
    out: Array<Uint8Array>,
    limit: number
  ): Effect.Effect<boolean, TcpError.ReadError | DecodeError> {
    const blocked = this.readBlocked()
    if (blocked !== undefined) return Effect.fail(blocked)
    const bytes = this.bytes
    const before = out.length
    for (let frame = decoder.decode(bytes); frame !== undefined; frame = decoder.decode(bytes)) {
      out.push(frame)
      if (out.length - before === limit) break
    }
    if (out.length > before) {
      this.resumeIfRoom()
      return framesRead
    }
    if (decoder.failure !== undefined) return Effect.fail(decoder.failure)
    const after = this.afterQueued()
    if (after === null) {
      const error = decoder.end(bytes)
      return error === undefined ? endOfInput : Effect.fail(error)
    }
    if (after !== undefined) return Effect.fail(after)
    return Effect.flatMap(this.waitFor(decoder.wanted(bytes)), () => this.readFrames(decoder, out, limit))
  }

  /**
   * A channel written by hand rather than `Stream.repeatEffectOption(read)`: about 1 us less per
   * element. One chunk per pull, so a stream stopped early leaves the rest queued.
   */
  declare readonly stream: Stream.Stream<Uint8Array, TcpError.ReadError>
  private builtStream: Stream.Stream<Uint8Array, TcpError.ReadError> | undefined = undefined

  private makeStreamChannel(): Channel.Channel<Chunk.Chunk<Uint8Array>, unknown, TcpError.ReadError, unknown, void, unknown> {
    const loop: Channel.Channel<Chunk.Chunk<Uint8Array>, unknown, TcpError.ReadError, unknown, void, unknown> = Channel
      .flatMap(
        Channel.fromEffect(this.read),
        (chunk) => Option.isNone(chunk) ? Channel.void : Channel.flatMap(Channel.write(Chunk.of(chunk.value)), () => loop)
      )
    return loop
  }

  // ---------------------------------------------------------------------------
  // writing

  private writeFailure(): TcpError.WriteError | undefined {
    if (this.imposed !== undefined) return this.imposed.write
    if (this.closedByUs) return this.closedError("write", "Closed")
    // `errored` is set as the socket is destroyed, a turn before its 'error' event.
    const failure = this.failure ?? this.socket.errored ?? undefined
    if (failure !== undefined) return TcpError.classify(failure, "write", this.remoteAddress)
    if (this.writeEnded) return this.closedError("write", "WriteSideEnded")
    if (this.socket.destroyed) return this.closedError("write", "Closed")
    return undefined
  }

  /**
   * Waits for a write (or end) callback. Success only when Node reports the bytes written and
   * the socket is still alive: a write cut short by a close, a reset or the peer's death fails
   * with what ended the connection.
   */
  private awaitCallback(
    register: (callback: (error?: Error | null) => void) => void
  ): Effect.Effect<void, TcpError.WriteError> {
    const socket = this.socket
    let settled: Error | null | undefined = undefined
    let resume: ((error: Error | null) => void) | undefined
    register((error) => {
      settled = error ?? (socket.destroyed ? unconfirmed : null)
      resume?.(settled)
    })
    if (
      settled === null ||
      (settled === undefined && !socket.destroyed && socket.errored === null && socket.writableLength === 0)
    ) {
      // Everything went to the kernel synchronously (a failed write(2) leaves `errored` set).
      if (this.options.onActivity) this.options.onActivity()
      return Effect.void
    }
    const deadline = this.writeDeadline
    if (deadline === undefined) {
      return Effect.async<void, TcpError.WriteError>((done) => {
        resume = (error) => {
          resume = undefined
          done(this.writeSettled(error))
        }
        // No canceler (it would cost more than the write): resuming an interrupted wait does nothing.
        if (settled !== undefined) resume(settled)
      })
    }
    // The bytes left in libuv's queue now are the mark that progress is measured from.
    if (this.writeWaiters.length === 0) this.lastWriteQueueSize = writeQueueSize(socket)
    const wait = Effect.withFiberRuntime<void, TcpError.WriteError>((fiber) =>
      Effect.async<void, TcpError.WriteError>((done) => {
        const waiter: Waiter<TcpError.WriteTimeout> = {
          fiber,
          since: this.clock.unsafeCurrentTimeMillis(),
          resume: (effect) => {
            resume = undefined
            done(effect)
          }
        }
        resume = (error) => {
          resume = undefined
          const index = this.writeWaiters.indexOf(waiter)
          if (index >= 0) this.writeWaiters.splice(index, 1)
          done(this.writeSettled(error))
        }
        if (settled !== undefined) return resume(settled)
        this.writeWaiters.push(waiter)
      })
    )
    const arm = deadline.arm()
    return arm === undefined ? wait : Effect.zipRight(arm, wait)
  }

  private writeSettled(error: Error | null): Effect.Effect<void, TcpError.WriteError> {
    if (error === null) {
      this.writeProgressed()
      return Effect.void
    }
    return Effect.fail(
      this.writeFailure() ??
        (error === unconfirmed ? this.closedError("write", "Closed") : TcpError.classify(error, "write", this.remoteAddress))
    )
  }

  readonly write = (data: Uint8Array | string): Effect.Effect<void, TcpError.WriteError> =>
    Effect.suspend(() => {
      const failure = this.writeFailure()
      if (failure !== undefined) return Effect.fail(failure)
      if (data.length === 0) return Effect.void
      return this.awaitCallback((callback) => this.socket.write(data, callback))
    })

  readonly writeAll = (chunks: ReadonlyArray<Uint8Array | string>): Effect.Effect<void, TcpError.WriteError> =>
    Effect.suspend(() => {
      const failure = this.writeFailure()
      if (failure !== undefined) return Effect.fail(failure)
      if (chunks.length === 0) return Effect.void
      if (chunks.length === 1) return this.write(chunks[0]!)
      const socket = this.socket
      return this.awaitCallback((callback) => {
        // Corked, the chunks leave in one writev(2): a header and its body without copying them together.
        socket.cork()
        const last = chunks.length - 1
        for (let i = 0; i < last; i++) socket.write(chunks[i]!)
        socket.write(chunks[last]!, callback)
        socket.uncork()
      })
    })

  declare readonly sink: Sink.Sink<void, Uint8Array | string, never, TcpError.WriteError>
  private builtSink: Sink.Sink<void, Uint8Array | string, never, TcpError.WriteError> | undefined = undefined

  /**
   * `stream` and `sink`, built when first used: most connections never use them, and building both
   * costs about 1 KiB per connection. Own accessors rather than getters of the class, so that a copy
   * `{ ...connection }` has them (the copy gets the built values); the same two functions for every
   * connection, so all connections keep one hidden class.
   */
  private static readonly lazyMembers: PropertyDescriptorMap = {
    stream: {
      enumerable: true,
      get(this: NodeConnection) {
        return this.builtStream ??= Stream.fromChannel(this.makeStreamChannel())
      }
    },
    sink: {
      enumerable: true,
      get(this: NodeConnection) {
        return this.builtSink ??= Sink.forEach(this.write)
      }
    }
  }

  readonly endWrite: Effect.Effect<void, TcpError.WriteError> = Effect.suspend(() => {
    if (this.writeEnded && !this.closedByUs && this.imposed === undefined) return Effect.void
    const failure = this.writeFailure()
    if (failure !== undefined) return Effect.fail(failure)
    this.writeEnded = true
    return this.awaitCallback((callback) => this.socket.end(callback))
  })

  readonly state: Effect.Effect<ConnectionState> = Effect.sync(() => {
    if (this.closedByUs || this.socket.destroyed) return closedState
    if (this.eof || this.writeEnded) return { _tag: "HalfClosed", readable: !this.eof, writable: !this.writeEnded }
    return openState
  })

  readonly close: Effect.Effect<void> = Effect.sync(this.destroy)

  readonly reset: Effect.Effect<void> = Effect.sync(this.resetNow)
}
