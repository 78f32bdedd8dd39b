import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Sink from "effect/Sink"
import * as Stream from "effect/Stream"
import type * as net from "node:net"
import type { Connection, ConnectionState, ReadUntilOptions } from "../Connection.js"
import * as Endpoint from "../Endpoint.js"
import * as TcpError from "../TcpError.js"

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

type Restore = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>

/** The last `size` bytes of `chunks`. */
const tail = (chunks: ReadonlyArray<Buffer>, size: number): Buffer => {
  const parts: Array<Buffer> = []
  for (let i = chunks.length - 1; i >= 0 && size > 0; i--) {
    const chunk = chunks[i]!
    const part = chunk.length > size ? chunk.subarray(chunk.length - size) : chunk
    parts.unshift(part)
    size -= part.length
  }
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts)
}
const none = Option.none()
const openState: ConnectionState = { _tag: "Open" }
const closedState: ConnectionState = { _tag: "Closed" }

/**
 * Bytes received and not yet read, per connection, before the socket is paused: past this, Node
 * stops reading from the kernel, the kernel's window fills and the peer's writes block. Node's
 * own buffer (16 KiB) and one chunk in flight (64 KiB at most) come on top.
 */
const highWaterMark = 64 * 1024

/**
 * A Node socket behind the `Connection` interface. The socket flows: each chunk Node reads goes
 * into a queue, synchronously in its 'data' event, and reads take from the queue. Past
 * `highWaterMark` queued bytes the socket is paused, and it resumes once reads drain the queue
 * below it. (Node's paused mode, 'readable' + read(), costs a tick and a pass through the stream
 * machinery per chunk; this costs an array push.)
 *
 * @internal
 */
export class NodeConnection implements Connection {
  readonly remoteAddress: Endpoint.Endpoint
  readonly localAddress: Endpoint.Endpoint
  /** Bytes given back by a read that took more than it returned: read first. */
  private leftover: Buffer | undefined = undefined
  /** Chunks Node delivered, oldest first from `head`, not yet read; `queued` bytes in all. */
  private queue: Array<Buffer> = []
  private head = 0
  private queued = 0
  private paused = false
  private eof = false
  private writeEnded = false
  private closedByUs = false
  /** The first error Node reported; every later operation fails with it. */
  private failure: unknown = undefined
  /** A typed error imposed from outside (the server's idle limit), reported by every later operation. */
  private imposed: TcpError.IdleTimeout | undefined = undefined
  private readWaiters: Array<() => void> = []
  private readonly readTimeoutMillis: number | undefined
  private readonly writeTimeoutMillis: number | undefined
  private readonly waitReadable: Effect.Effect<void, TcpError.ReadError>
  readonly socket: net.Socket
  private readonly options: ConnectionOptions

  constructor(socket: net.Socket, options: ConnectionOptions) {
    this.socket = socket
    this.options = options
    this.remoteAddress = Endpoint.make(socket.remoteAddress ?? "unknown", socket.remotePort ?? 0)
    this.localAddress = Endpoint.make(socket.localAddress ?? "unknown", socket.localPort ?? 0)
    this.readTimeoutMillis = options.readTimeout && Duration.toMillis(options.readTimeout)
    this.writeTimeoutMillis = options.writeTimeout && Duration.toMillis(options.writeTimeout)
    this.waitReadable = this.makeWaitReadable()
    socket.on("data", this.onData)
    socket.on("end", this.onEnd)
    socket.on("error", this.onError)
    socket.on("close", this.wakeReaders)
  }

  private readonly wakeReaders = (): void => {
    const waiters = this.readWaiters
    if (waiters.length === 0) return
    this.readWaiters = []
    for (const wake of waiters) wake()
  }
  private readonly onData = (chunk: Buffer): void => {
    this.queue.push(chunk)
    this.queued += chunk.length
    if (this.queued >= highWaterMark && !this.paused) {
      this.paused = true
      this.socket.pause()
    }
    if (this.options.onActivity) this.options.onActivity()
    if (this.readWaiters.length > 0) this.wakeReaders()
  }

  /** The oldest queued chunk; the socket resumes once the queue is below its mark. */
  private dequeue(): Buffer | undefined {
    if (this.head === this.queue.length) return undefined
    const chunk = this.queue[this.head]!
    this.queue[this.head] = undefined as unknown as Buffer
    this.head++
    if (this.head === this.queue.length) {
      this.queue = []
      this.head = 0
    } else if (this.head >= 1024 && this.head * 2 >= this.queue.length) {
      // A queue that never quite empties (a reader just behind its sender) would otherwise keep a
      // slot for every chunk ever received.
      this.queue = this.queue.slice(this.head)
      this.head = 0
    }
    this.queued -= chunk.length
    if (this.paused && this.queued < highWaterMark) {
      this.paused = false
      if (!this.socket.destroyed) this.socket.resume()
    }
    return chunk
  }

  private clearQueue(): void {
    this.leftover = undefined
    this.queue = []
    this.head = 0
    this.queued = 0
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
    this.clearQueue()
    if (!this.socket.destroyed) this.socket.destroy()
    this.wakeReaders()
  }

  /** Destroys the socket abortively (RST). */
  readonly resetNow = (): void => {
    this.closedByUs = true
    this.clearQueue()
    if (!this.socket.destroyed) this.socket.resetAndDestroy()
    this.wakeReaders()
  }

  /** Closes the connection so that every later operation fails with `error`. */
  impose(error: TcpError.IdleTimeout): void {
    if (this.imposed === undefined) this.imposed = error
    // Every later read reports `error`: nothing queued will be read.
    this.clearQueue()
    if (!this.socket.destroyed) this.socket.destroy()
    this.wakeReaders()
  }

  private closedError(operation: TcpError.Operation, reason: "closed" | "write side ended") {
    return new TcpError.SocketClosed({ operation, endpoint: this.remoteAddress, reason }, unchecked)
  }

  // ---------------------------------------------------------------------------
  // reading

  /**
   * Takes what is available without waiting: a chunk, `null` at EOF, `undefined` when the
   * caller must wait, or an error.
   */
  private take(): Buffer | null | undefined | TcpError.ReadError {
    if (this.imposed !== undefined) return this.imposed
    if (this.closedByUs) return this.closedError("read", "closed")
    const leftover = this.leftover
    if (leftover !== undefined) {
      this.leftover = undefined
      return leftover
    }
    // Bytes that arrived before an error are still read first, as the kernel would.
    const chunk = this.dequeue()
    if (chunk !== undefined) return chunk
    if (this.failure !== undefined) return TcpError.classify(this.failure, "read", this.remoteAddress)
    if (this.eof) return null
    if (this.socket.destroyed) return this.closedError("read", "closed")
    return undefined
  }

  private makeWaitReadable(): Effect.Effect<void, TcpError.ReadError> {
    const wait = Effect.async<void>((resume) => {
      // The fiber may have yielded since `take` found nothing, and 'data' or 'end' may have
      // fired meanwhile with nobody listening: look again before waiting for the next event.
      if (this.readyToTake()) return resume(Effect.void)
      const wake = () => resume(Effect.void)
      this.readWaiters.push(wake)
      return Effect.sync(() => {
        const i = this.readWaiters.indexOf(wake)
        if (i >= 0) this.readWaiters.splice(i, 1)
      })
    })
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

  /** Whether `take` would return something other than "wait". */
  private readyToTake(): boolean {
    return this.leftover !== undefined || this.queued > 0 || this.eof || this.failure !== undefined ||
      this.imposed !== undefined || this.closedByUs || this.socket.destroyed
  }

  /**
   * The next chunk, or `null` at EOF. Only the wait is interruptible (`restore`): a chunk once
   * taken from the socket always reaches the continuation, so an interruption cannot drop it.
   */
  private pullWith(restore: Restore): Effect.Effect<Buffer | null, TcpError.ReadError> {
    const pull: Effect.Effect<Buffer | null, TcpError.ReadError> = Effect.suspend(() => {
      const taken = this.take()
      if (taken === undefined) return Effect.zipRight(restore(this.waitReadable), pull)
      if (taken === null || Buffer.isBuffer(taken)) return Effect.succeed(taken)
      return Effect.fail(taken)
    })
    return pull
  }

  /** Gives bytes back, to be read first next time. */
  private unread(chunks: ReadonlyArray<Buffer>): void {
    if (chunks.length === 0 || this.closedByUs) return
    const all = this.leftover === undefined ? chunks : [...chunks, this.leftover]
    this.leftover = all.length === 1 ? all[0] : Buffer.concat(all)
  }

  readonly read: Effect.Effect<Option.Option<Uint8Array>, TcpError.ReadError> = Effect.uninterruptibleMask((
    restore
  ) => Effect.map(this.pullWith(restore), (chunk) => (chunk === null ? none : Option.some(chunk))))

  readonly readExactly = (
    size: number
  ): Effect.Effect<Uint8Array, TcpError.ReadError | TcpError.UnexpectedEof | TcpError.InvalidOptions> => {
    if (!Number.isSafeInteger(size) || size < 0) {
      return Effect.fail(invalid(`readExactly: the size must be a non-negative integer, got ${size}`))
    }
    if (size === 0) return Effect.succeed(new Uint8Array(0))
    return Effect.uninterruptibleMask((restore) => {
      const chunks: Array<Buffer> = []
      let received = 0
      const accept = (chunk: Buffer): Uint8Array | undefined => {
        if (received + chunk.length < size) {
          chunks.push(chunk)
          received += chunk.length
          return undefined
        }
        const needed = size - received
        if (needed < chunk.length) this.leftover = chunk.subarray(needed)
        if (chunks.length === 0) return chunk.subarray(0, needed)
        chunks.push(chunk.subarray(0, needed))
        received = 0
        const result = Buffer.concat(chunks, size)
        chunks.length = 0
        return result
      }
      const loop: Effect.Effect<Uint8Array, TcpError.ReadError | TcpError.UnexpectedEof> = Effect.flatMap(
        this.pullWith(restore),
        (chunk) => {
          if (chunk === null) {
            return Effect.fail(
              new TcpError.UnexpectedEof({ operation: "read", endpoint: this.remoteAddress, expected: size, received }, unchecked)
            )
          }
          const done = accept(chunk)
          return done === undefined ? loop : Effect.succeed(done)
        }
      )
      // Fast path: everything is already here.
      for (;;) {
        const taken = this.take()
        if (taken === undefined || taken === null || !Buffer.isBuffer(taken)) {
          this.unread(chunks)
          chunks.length = 0
          received = 0
          break
        }
        const done = accept(taken)
        if (done !== undefined) return Effect.succeed(done)
      }
      // On failure or interruption (only possible while waiting), what was taken goes back.
      return Effect.onExit(loop, (exit) => {
        if (Exit.isFailure(exit)) this.unread(chunks)
        return Effect.void
      })
    })
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
    return Effect.uninterruptibleMask((restore) => {
      // The chunks before the delimiter are kept apart and joined once: no copy per chunk.
      const chunks: Array<Buffer> = []
      let length = 0
      const tooLarge = (size: number) =>
        new TcpError.FrameTooLarge({ operation: "read", endpoint: this.remoteAddress, size, maxBytes }, unchecked)
      /** Where the delimiter starts, counting from the first buffered byte, or -1. */
      const find = (chunk: Buffer): number => {
        const overlap = Math.min(needle.length - 1, length)
        if (overlap > 0) {
          // A delimiter that starts in the bytes already buffered and ends in this chunk.
          const boundary = Buffer.concat([tail(chunks, overlap), chunk.subarray(0, needle.length - 1)])
          const at = boundary.indexOf(needle)
          if (at >= 0 && at < overlap) return length - overlap + at
        }
        const at = chunk.indexOf(needle)
        return at >= 0 ? length + at : -1
      }
      const loop: Effect.Effect<
        Uint8Array,
        TcpError.ReadError | TcpError.UnexpectedEof | TcpError.FrameTooLarge
      > = Effect.flatMap(this.pullWith(restore), (chunk) => {
        if (chunk === null) {
          return Effect.fail(new TcpError.UnexpectedEof({ operation: "read", endpoint: this.remoteAddress, received: length }, unchecked))
        }
        const at = find(chunk)
        chunks.push(chunk)
        length += chunk.length
        if (at >= 0) {
          if (at > maxBytes) return Effect.fail(tooLarge(at))
          const all = chunks.length === 1 ? chunk : Buffer.concat(chunks, length)
          chunks.length = 0
          length = 0
          const rest = at + needle.length
          if (rest < all.length) this.leftover = all.subarray(rest)
          return Effect.succeed(all.subarray(0, at))
        }
        // Without the delimiter, at most its length - 1 trailing bytes can still start it.
        if (length - (needle.length - 1) > maxBytes) return Effect.fail(tooLarge(length))
        return loop
      })
      return Effect.onExit(loop, (exit) => {
        if (Exit.isFailure(exit)) this.unread(chunks)
        return Effect.void
      })
    })
  }

  readonly stream: Stream.Stream<Uint8Array, TcpError.ReadError> = Stream.repeatEffectOption(
    Effect.flatMap(
      Effect.mapError(this.read, Option.some),
      (chunk) => (chunk._tag === "None" ? Effect.fail(Option.none()) : Effect.succeed(chunk.value))
    )
  )

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
      if (settled !== undefined) resume(settled)
      return Effect.sync(() => {
        resume = undefined
      })
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
