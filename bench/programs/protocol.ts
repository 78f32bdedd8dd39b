/**
 * What the runner and the benchmark programs agree on: the jobs, their parameters, the result
 * lines, and the bytes every implementation sends, so that each one does exactly the same work
 * and every receiver can check what it got in constant time per chunk.
 */

/** The three implementations under test. */
export type Implementation = "raw" | "platform" | "ours"

/** What a server process does with each connection. */
export type ServerJob =
  /** counts (and checks) what arrives, sends one byte once `totalBytes` came (upload) */
  | "sink"
  /** waits for one byte, then sends `totalBytes` and half-closes (download) */
  | "source"
  /** sends back every byte it receives */
  | "echo"
  /** the same, written as `connection.stream` run into `connection.sink` (effect-tcp only) */
  | "echo-stream"
  /** waits for one byte, then sends `totalBytes` of length-prefixed frames (raw node:net only) */
  | "frame-source"

/** What a client process measures. */
export type ClientJob =
  | "upload"
  | "download"
  /** the same, on a connection with readTimeout and writeTimeout set (effect-tcp only) */
  | "download-timeouts"
  | "echo"
  | "rr-seq"
  /** the same, on a connection with readTimeout and writeTimeout set (effect-tcp only) */
  | "rr-seq-timeouts"
  | "rr-pipe"
  | "storm"
  | "pool-held"
  | "pool-use"
  | "frames-count"
  | "frames-decode"
  | "frames-stream"
  | "frames-reader"
  /** `handshakes` connections one after another: connect (with a full TLS handshake), one exchange, close */
  | "handshakes"

/** Paths of the PEM files the runner made for the TLS scenarios. */
export interface TlsFiles {
  /** The CA the clients trust. */
  readonly ca: string
  /** The server's certificate (for 127.0.0.1, signed by the CA) and its key. */
  readonly cert: string
  readonly key: string
}

/** Sizes of one run; the same for every implementation. */
export interface Params {
  /** Bytes moved by the bulk and framing jobs (frame bodies, for framing). */
  readonly totalBytes: number
  /** Size of each write of the bulk jobs. */
  readonly chunkBytes: number
  /** Request/response exchanges of the round-trip jobs. */
  readonly roundTrips: number
  /** Size of a request, and of its echoed response. */
  readonly messageBytes: number
  /** Requests kept outstanding by the pipelined job. */
  readonly inFlight: number
  /** Concurrent connections of the storm. */
  readonly connections: number
  /** Body size of each frame. */
  readonly frameBytes: number
  /** Listen backlog of every server. */
  readonly backlog: number
  /** A Unix domain socket's path to use instead of TCP on 127.0.0.1. */
  readonly socketPath?: string
  /** Connections opened one after another by the handshake job. */
  readonly handshakes: number
  /** Set for the TLS scenarios: every program then speaks TLS (servers with this certificate, clients trusting this CA). */
  readonly tls?: TlsFiles
}

/** What a client reports. Absent fields do not apply to its job. */
export interface ClientReport {
  /** The measured interval, in seconds. */
  readonly seconds: number
  /** Bytes received and verified (sent, for the upload). */
  readonly bytes?: number
  /** Frames received and verified. */
  readonly frames?: number
  /** Exchanges completed and verified. */
  readonly roundTrips?: number
  readonly p50Micros?: number
  readonly p99Micros?: number
  /** Connections that completed their exchange. */
  readonly connections?: number
  /** Of those, connections whose TLS session was resumed (where the client can tell). */
  readonly resumed?: number
  readonly maxRssKiB: number
  readonly fdLimit: number | undefined
}

/** What a server reports when the runner tells it to stop. */
export interface ServerReport {
  /** Connections accepted. */
  readonly connections: number
  /** Bytes received and verified by the sink. */
  readonly bytesReceived: number
  /** Connections whose handling failed (each was written to stderr). */
  readonly errors: number
  /** Resident memory once listening, before any client connected. */
  readonly baselineRssKiB: number
  readonly maxRssKiB: number
  readonly fdLimit: number | undefined
}

/** Every line a program writes for the runner starts with this; anything else is diagnostics. */
export const linePrefix = "BENCH "

/** The byte a client sends to start a download, or the stream of frames. */
export const goByte = 0x67

/** Every byte of the bulk jobs: its position within its chunk, modulo a prime, so any shift shows. */
export const bulkByte = (chunkBytes: number) => (offset: number): number => (offset % chunkBytes) % 251

/** The one chunk every bulk writer sends, again and again. */
export const bulkChunk = (chunkBytes: number): Buffer => {
  const chunk = Buffer.allocUnsafe(chunkBytes)
  for (let i = 0; i < chunkBytes; i++) chunk[i] = i % 251
  return chunk
}

/** Request `k` is `messageBytes` bytes of value `k % 251`: the 251 distinct requests, built once. */
export const requests = (messageBytes: number): ReadonlyArray<Buffer> =>
  Array.from({ length: 251 }, (_, k) => Buffer.alloc(messageBytes, k))

/** Every byte of the stream of echoed responses: the index of its request, modulo 251. */
export const responseByte = (messageBytes: number) => (offset: number): number =>
  Math.floor(offset / messageBytes) % 251

/**
 * Checks a byte stream against the bytes it must be, in constant time per chunk (its first,
 * middle and last byte, and the running total): a lost, repeated, reordered or extra chunk fails.
 */
export class StreamCheck {
  private received = 0

  constructor(
    private readonly what: string,
    private readonly expected: number,
    private readonly byteAt: (offset: number) => number
  ) {}

  accept(chunk: Uint8Array): void {
    const length = chunk.length
    if (length === 0) return
    const at = this.received
    if (at + length > this.expected) {
      throw new Error(`${this.what}: received ${at + length} bytes, more than the ${this.expected} sent`)
    }
    const middle = length >> 1
    if (
      chunk[0] !== this.byteAt(at) || chunk[middle] !== this.byteAt(at + middle) ||
      chunk[length - 1] !== this.byteAt(at + length - 1)
    ) {
      throw new Error(`${this.what}: wrong bytes in the chunk at offset ${at} (length ${length})`)
    }
    this.received = at + length
  }

  get bytes(): number {
    return this.received
  }

  get done(): boolean {
    return this.received === this.expected
  }

  /** Throws unless every expected byte arrived. */
  complete(): void {
    if (!this.done) throw new Error(`${this.what}: received ${this.received} of ${this.expected} bytes`)
  }
}

/** Checks one echoed response, received in one piece. */
export const checkResponse = (response: Uint8Array, k: number, messageBytes: number): void => {
  const value = k % 251
  if (response.length !== messageBytes || response[0] !== value || response[messageBytes - 1] !== value) {
    throw new Error(`response ${k}: expected ${messageBytes} bytes of ${value}, got ${response.length} starting ${response[0]}`)
  }
}
