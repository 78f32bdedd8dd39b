import * as Channel from "effect/Channel"
import * as Chunk from "effect/Chunk"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Sink from "effect/Sink"
import * as Stream from "effect/Stream"
import type * as net from "node:net"
import type { Connection, ConnectionState, ReadUntilOptions } from "../Connection.js"
import * as Endpoint from "../Endpoint.js"
import * as TcpError from "../TcpError.js"
import { ByteQueue } from "./byteQueue.js"

/** @internal */
export interface ConnectionOptions {
  readonly readTimeout: Duration.Duration | undefined
  readonly writeTimeout: Duration.Duration | undefined
  /** Called with nothing whenever bytes move; used by the server's idle limit. */
  readonly onActivity: (() => void) | undefined
}

const defaultReadUntilMax = 64 * 1024
/** The errors built here take values checked already: Schema validation would cost tens of µs each. */
const unchecked = { disableValidation: true } as const
const invalid = (issues: string) => new TcpError.InvalidOptions({ operation: "read", issues }, unchecked)

const noneEffect = Effect.succeed(Option.none<Uint8Array>())
const openState: ConnectionState = { _tag: "Open" }
const closedState: ConnectionState = { _tag: "Closed" }

/**
 * Bytes received and not yet read, per connection, before the socket is paused: past this, Node
 * stops reading from the kernel, the kernel's window fills and the peer's writes block. A reader
 * waiting for more (`readExactly(n)`, `readUntil` up to `maxBytes`) raises the mark by what it
 * needs; Node's own buffer (16 KiB) and one chunk in flight (64 KiB at most) come on top.
 */
const highWaterMark = 64 * 1024

/** Past this many waiters, those whose fiber has ended (interrupted reads) are dropped. */
const maxWaiters = 16

/** A read waiting for bytes: its fiber, to tell a live wait from one left by an interrupted read. */
interface Waiter {
  readonly fiber: Fiber.RuntimeFiber<unknown, unknown>
  readonly wake: () => void
}

/**
 * A Node socket behind the `Connection` interface. The socket flows: each chunk Node reads goes
 * into a byte queue, synchronously in its 'data' event, and reads take from the queue. Past the
 * high-water mark the socket is paused, and it resumes once reads drain the queue below it.
 * (Node's paused mode, 'readable' + read(), costs a tick and a pass through the stream
 * machinery per chunk; this costs an array push.)
 *
 * A read never holds bytes across a wait: it waits, without taking anything, until the queue
 * holds what it needs (or the stream ended), then takes it in one synchronous step. So an
 * interrupted read loses nothing, and no read needs an uninterruptible region or a finalizer:
 * both cost more than the rest of a read.
 *
 * @internal
 */
export class NodeConnection implements Connection {
  readonly remoteAddress: Endpoint.Endpoint
  readonly localAddress: Endpoint.Endpoint
  /** Bytes Node delivered and no read has taken yet. */
  private readonly bytes = new ByteQueue()
  /** Bytes ever taken from `bytes`: a resumed `readUntil` knows from it whether its scan still holds. */
  private consumed = 0
  private paused = false
  private eof = false
  private writeEnded = false
  private closedByUs = false
  /** The first error Node reported; every later operation fails with it. */
  private failure: unknown = undefined
  /** A typed error imposed from outside (the server's idle limit), reported by every later operation. */
  private imposed: TcpError.IdleTimeout | undefined = undefined
  private readWaiters: Array<Waiter> = []
  /** When `readWaiters` reaches this, the stale ones are dropped; it grows with the live ones. */
  private waiterLimit = maxWaiters
  /** The most bytes a waiting reader needs queued at once; raises the pause mark while it waits. */
  private wanted = 0
  private readonly readTimeoutMillis: number | undefined
  private readonly writeTimeoutMillis: number | undefined
  readonly socket: net.Socket
  private readonly options: ConnectionOptions

  constructor(socket: net.Socket, options: ConnectionOptions) {
    this.socket = socket
    this.options = options
    this.remoteAddress = Endpoint.make(socket.remoteAddress ?? "unknown", socket.remotePort ?? 0)
    this.localAddress = Endpoint.make(socket.localAddress ?? "unknown", socket.localPort ?? 0)
    this.readTimeoutMillis = options.readTimeout && Duration.toMillis(options.readTimeout)
    this.writeTimeoutMillis = options.writeTimeout && Duration.toMillis(options.writeTimeout)
    socket.on("data", this.onData)
    socket.on("end", this.onEnd)
    socket.on("error", this.onError)
    socket.on("close", this.wakeReaders)
  }

  private readonly wakeReaders = (): void => {
    const waiters = this.readWaiters
    this.wanted = 0
    if (waiters.length === 0) return
    this.readWaiters = []
    this.waiterLimit = maxWaiters
    for (const waiter of waiters) waiter.wake()
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
  private readonly onData = (chunk: Buffer): void => {
    this.bytes.push(chunk)
    if (!this.paused && this.bytes.length >= highWaterMark + this.wanted) {
      this.paused = true
      this.socket.pause()
    }
    if (this.options.onActivity) this.options.onActivity()
    if (this.readWaiters.length > 0) this.wakeReaders()
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
    this.consumed += chunk.length
    this.resumeIfRoom()
    return chunk
  }
  private takeBytes(size: number, skip: number): Buffer {
    const taken = this.bytes.take(size)
    if (skip > 0) this.bytes.skip(skip)
    this.consumed += size + skip
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

  /** Destroys the socket; what was pending fails with `SocketClosed`. */
  readonly destroy = (): void => {
    this.closedByUs = true
    this.bytes.clear()
    if (!this.socket.destroyed) this.socket.destroy()
    this.wakeReaders()
  }

  /** Destroys the socket abortively (RST). */
  readonly resetNow = (): void => {
    this.closedByUs = true
    this.bytes.clear()
    if (!this.socket.destroyed) this.socket.resetAndDestroy()
    this.wakeReaders()
  }

  /** Closes the connection so that every later operation fails with `error`. */
  impose(error: TcpError.IdleTimeout): void {
    if (this.imposed === undefined) this.imposed = error
    // Every later read reports `error`: nothing queued will be read.
    this.bytes.clear()
    if (!this.socket.destroyed) this.socket.destroy()
    this.wakeReaders()
  }

  private closedError(operation: TcpError.Operation, reason: "closed" | "write side ended") {
    return new TcpError.SocketClosed({ operation, endpoint: this.remoteAddress, reason }, unchecked)
  }

  // ---------------------------------------------------------------------------
  // reading

  /** Why no read can take bytes any more (closed by us, or an imposed error), else undefined. */
  private readBlocked(): TcpError.ReadError | undefined {
    if (this.imposed !== undefined) return this.imposed
    if (this.closedByUs) return this.closedError("read", "closed")
    return undefined
  }

  /**
   * Once the queued bytes cannot satisfy a read: the error or end that comes after them, or
   * undefined when the read must wait. Bytes that arrived before an error are read first, as the
   * kernel would.
   */
  private afterQueued(): TcpError.ReadError | null | undefined {
    if (this.failure !== undefined) return TcpError.classify(this.failure, "read", this.remoteAddress)
    if (this.eof) return null
    if (this.socket.destroyed) return this.closedError("read", "closed")
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
    const wait = Effect.withFiberRuntime<void>((fiber) =>
      Effect.async<void>((resume) => {
        // Something may have happened since the caller looked, with nobody listening yet.
        if (this.bytes.length >= room || this.readBlocked() !== undefined || this.afterQueued() !== undefined) {
          return resume(Effect.void)
        }
        if (room > this.wanted) this.wanted = room
        this.resumeIfRoom()
        if (this.readWaiters.length >= this.waiterLimit) this.dropStaleWaiters()
        this.readWaiters.push({ fiber, wake: () => resume(Effect.void) })
      })
    )
    const millis = this.readTimeoutMillis
    if (millis === undefined) return wait
    return Effect.timeoutFail(wait, {
      duration: Duration.millis(millis),
      onTimeout: () =>
        new TcpError.ReadTimeout({
          operation: "read",
          endpoint: this.remoteAddress,
          timeoutMillis: millis
        }, unchecked)
    })
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
    if (this.bytes.length >= size) return Effect.succeed(this.takeBytes(size, 0))
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
      return Effect.fail(invalid(`readExactly: the size must be a non-negative integer, got ${size}`))
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
    const needle = Buffer.from(delimiter)
    const maxBytes = options?.maxBytes ?? defaultReadUntilMax
    if (needle.length === 0) return Effect.fail(invalid("readUntil: the delimiter must not be empty"))
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 0) {
      return Effect.fail(invalid(`readUntil: maxBytes must be a non-negative integer, got ${maxBytes}`))
    }
    const tooLarge = (size: number) =>
      new TcpError.FrameTooLarge({ operation: "read", endpoint: this.remoteAddress, size, maxBytes }, unchecked)
    // Positions before `scanned` cannot start the delimiter, as long as nobody else took bytes.
    let scanned = 0
    let consumedAt = this.consumed
    const attempt = (): Effect.Effect<
      Uint8Array,
      TcpError.ReadError | TcpError.UnexpectedEof | TcpError.FrameTooLarge
    > => {
      const blocked = this.readBlocked()
      if (blocked !== undefined) return Effect.fail(blocked)
      if (this.consumed !== consumedAt) {
        scanned = 0
        consumedAt = this.consumed
      }
      const queued = this.bytes.length
      const at = this.bytes.indexOf(needle, scanned)
      if (at >= 0) {
        if (at > maxBytes) return Effect.fail(tooLarge(at))
        return Effect.succeed(this.takeBytes(at, needle.length))
      }
      // Without the delimiter, at most its length - 1 trailing bytes can still start it.
      if (queued - (needle.length - 1) > maxBytes) return Effect.fail(tooLarge(queued))
      scanned = Math.max(0, queued - needle.length + 1)
      const after = this.afterQueued()
      if (after === null) {
        return Effect.fail(
          new TcpError.UnexpectedEof({ operation: "read", endpoint: this.remoteAddress, received: queued }, unchecked)
        )
      }
      if (after !== undefined) return Effect.fail(after)
      // Wake at the next byte, and let up to the limit and the delimiter queue up meanwhile.
      return Effect.flatMap(this.waitFor(Math.min(queued + 1, maxBytes + needle.length)), attempt)
    }
    return Effect.suspend(attempt)
  }

  /**
   * A channel written by hand rather than `Stream.repeatEffectOption(read)`: about 1 us less per
   * element. One chunk per pull, so a stream stopped early leaves the rest queued.
   */
  readonly stream: Stream.Stream<Uint8Array, TcpError.ReadError> = Stream.fromChannel(this.makeStreamChannel())

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
    if (this.imposed !== undefined) return this.imposed
    if (this.closedByUs) return this.closedError("write", "closed")
    if (this.failure !== undefined) return TcpError.classify(this.failure, "write", this.remoteAddress)
    if (this.writeEnded) return this.closedError("write", "write side ended")
    if (this.socket.destroyed) return this.closedError("write", "closed")
    return undefined
  }

  /** Waits for a write (or end) callback; a `null` result means success. */
  private awaitCallback(
    register: (callback: (error?: Error | null) => void) => void
  ): Effect.Effect<void, TcpError.WriteError> {
    let settled: Error | null | undefined = undefined
    let resume: ((error: Error | null) => void) | undefined
    register((error) => {
      settled = error ?? null
      resume?.(settled)
    })
    const socket = this.socket
    if (
      settled === null ||
      (settled === undefined && !socket.destroyed && socket.errored === null && socket.writableLength === 0)
    ) {
      // Everything went to the kernel synchronously (a failed write(2) leaves `errored` set).
      if (this.options.onActivity) this.options.onActivity()
      return Effect.void
    }
    const wait = Effect.async<void, TcpError.WriteError>((done) => {
      resume = (error) => {
        resume = undefined
        if (error === null) {
          if (this.options.onActivity) this.options.onActivity()
          done(Effect.void)
        } else {
          done(Effect.fail(this.writeFailure() ?? TcpError.classify(error, "write", this.remoteAddress)))
        }
      }
      // No canceler (it would cost more than the write): resuming an interrupted wait does nothing.
      if (settled !== undefined) resume(settled)
    })
    const millis = this.writeTimeoutMillis
    if (millis === undefined) return wait
    return Effect.timeoutFail(wait, {
      duration: Duration.millis(millis),
      onTimeout: () =>
        new TcpError.WriteTimeout({ operation: "write", endpoint: this.remoteAddress, timeoutMillis: millis }, unchecked)
    })
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

  readonly sink: Sink.Sink<void, Uint8Array | string, never, TcpError.WriteError> = Sink.forEach(this.write)

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
