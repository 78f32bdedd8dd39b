/**
 * An open TCP connection: pulled reads, writes with `sendall` semantics, half-close and state.
 *
 * @since 0.1.0
 */
import type * as Effect from "effect/Effect"
import type * as Option from "effect/Option"
import { dual } from "effect/Function"
import type { Pipeable } from "effect/Pipeable"
import type * as Scope from "effect/Scope"
import type * as Sink from "effect/Sink"
import type * as Stream from "effect/Stream"
import type * as Endpoint from "./Endpoint.js"
import * as internal from "./internal/connection.js"
import * as internalStartTls from "./internal/startTls.js"
import type { TlsConnectOptions } from "./Tcp.js"
import type {
  ConnectError,
  FrameTooLarge,
  InvalidOptions,
  ReadError,
  SocketClosed,
  UnexpectedEof,
  WriteError
} from "./TcpError.js"

/**
 * The mark of a `Connection`.
 *
 * @since 0.1.0
 * @category type ids
 */
export const TypeId: unique symbol = internal.TypeId

/**
 * @since 0.1.0
 * @category type ids
 */
export type TypeId = typeof TypeId

/**
 * Whether `u` is a `Connection` (one opened by `Tcp.connect` or handed to a `Server` handler, or a
 * copy of one such as `{ ...connection }`).
 *
 * @since 0.1.0
 * @category guards
 */
export const isConnection: (u: unknown) => u is Connection = internal.isConnection

/**
 * Where a connection stands, known without a system call.
 *
 * - `Open`: both directions usable.
 * - `HalfClosed`: one direction is done: `readable` is false once the peer sent FIN (reads
 *   return `None`), `writable` is false after `endWrite`.
 * - `Closed`: closed by `close`, by the scope, by an error, or after both directions ended.
 *
 * @since 0.1.0
 * @category models
 */
export type ConnectionState =
  | { readonly _tag: "Open" }
  | { readonly _tag: "HalfClosed"; readonly readable: boolean; readonly writable: boolean }
  | { readonly _tag: "Closed" }

/**
 * Options of `readUntil`.
 *
 * @since 0.1.0
 * @category models
 */
export interface ReadUntilOptions {
  /**
   * Most bytes accepted before the delimiter (the delimiter not counted); beyond it the read fails
   * with `FrameTooLarge`. Default 64 KiB. The same limit, and the same name, as a
   * `Framing.delimited`'s: the bytes before a delimiter are a frame.
   */
  readonly maxFrameBytes?: number
}

/**
 * The certificate a TLS peer presented, as plain data.
 *
 * @since 0.1.0
 * @category models
 */
export interface PeerCertificate {
  /** The subject's fields (`CN`, `O`, ...); a field given several times is an array. */
  readonly subject: Readonly<Record<string, string | ReadonlyArray<string>>>
  /** The issuer's fields. */
  readonly issuer: Readonly<Record<string, string | ReadonlyArray<string>>>
  /** The names and addresses it is for, as OpenSSL prints them (`DNS:localhost, IP Address:127.0.0.1`). */
  readonly subjectAltName: string | undefined
  readonly validFrom: Date
  readonly validTo: Date
  /** SHA-256 of the certificate, as colon-separated hex. */
  readonly fingerprint256: string
  readonly serialNumber: string
}

/**
 * What a TLS connection negotiated.
 *
 * @since 0.1.0
 * @category models
 */
export interface TlsInfo {
  /** `TLSv1.2`, `TLSv1.3`, ... */
  readonly protocol: string
  /** The cipher suite's IANA name (`TLS_AES_256_GCM_SHA384`). */
  readonly cipher: string
  /** The application protocol agreed by ALPN, if any. */
  readonly alpnProtocol: string | undefined
  /** The server name (SNI) the client sent, if any. */
  readonly servername: string | undefined
  /** Whether the peer's certificate was verified against the trusted CAs. */
  readonly authorized: boolean
  /** Why it was not, when it was not (a client with `rejectUnauthorized: false`, a server that requests certificates). */
  readonly authorizationError: string | undefined
  /** The certificate the peer presented: `None` when it presented none (most clients). */
  readonly peerCertificate: Option.Option<PeerCertificate>
}

/**
 * A TCP connection. Every method is an `Effect` with a precise error; none throws.
 *
 * Reads apply backpressure: a connection reads ahead until 64 KiB wait unread (more while a
 * `readExactly` or `readUntil` waits for more), then stops reading from the socket until reads
 * drain it, so a consumer that reads slowly slows the peer down through TCP flow control instead
 * of buffering in memory.
 *
 * Interruption: a `read`, `readExactly` or `readUntil` interrupted while it waits loses no bytes:
 * a read takes nothing from the connection until it can complete, then takes its bytes in one
 * step. (As with Effect's `Queue.take`, an interruption that lands just after a read completed,
 * at one of the fiber's periodic yields, discards the value it returned.) An interrupted `write`
 * cannot take back bytes Node has accepted: they are still sent, so after interrupting a write
 * the stream position is unknown and the connection should be closed.
 *
 * Concurrent reads on one connection each take whole pieces of the stream, in the order they
 * complete; a `readExactly(n)` waits until all `n` bytes are there at once, so a concurrent
 * `read` loop can take them first.
 *
 * Every member is an own property, so a copy (`{ ...connection, write: logged }`) is a connection
 * too, reading and writing the same socket.
 *
 * @since 0.1.0
 * @category models
 */
export interface Connection extends Pipeable {
  readonly [TypeId]: TypeId
  /** The peer's address. */
  readonly remoteAddress: Endpoint.Endpoint
  /** This side's address. */
  readonly localAddress: Endpoint.Endpoint
  /**
   * What the TLS handshake negotiated (protocol, cipher, ALPN protocol, the peer's certificate),
   * read once when it completed: `None` for a connection without TLS.
   */
  readonly tls: Option.Option<TlsInfo>
  /**
   * The next bytes that arrived, as soon as there are any (like `recv`): `None` once the peer
   * has closed its side (FIN) and every byte before it was read. Fails with `ReadTimeout` when
   * the connection has a `readTimeout` and no byte arrives in time.
   */
  readonly read: Effect.Effect<Option.Option<Uint8Array>, ReadError>
  /**
   * Exactly `size` bytes, across as many chunks as needed; `UnexpectedEof` if the peer closes
   * first, `InvalidOptions` for a size that is not a non-negative integer.
   */
  readonly readExactly: (size: number) => Effect.Effect<Uint8Array, ReadError | UnexpectedEof | InvalidOptions>
  /**
   * The bytes before the next `delimiter` (the delimiter is consumed, not returned); bytes after
   * it stay for the next read. `FrameTooLarge` when more than `maxFrameBytes` arrive without it,
   * `UnexpectedEof` if the peer closes first, `InvalidOptions` for an empty delimiter or a bad
   * `maxFrameBytes`.
   */
  readonly readUntil: (
    delimiter: Uint8Array | string,
    options?: ReadUntilOptions
  ) => Effect.Effect<Uint8Array, ReadError | UnexpectedEof | FrameTooLarge | InvalidOptions>
  /**
   * Sends all of `data` (strings as UTF-8), like `sendall`: succeeds only once every byte was
   * handed to the operating system, waiting while the peer does not read. If the connection ends
   * first, it fails with what ended it: `SocketClosed` after `close` or `reset` (from any fiber),
   * `ConnectionReset` or `BrokenPipe` when the peer resets or dies. Fails with `WriteTimeout` when
   * the connection has a `writeTimeout` and the system took none of its bytes for that long.
   */
  readonly write: (data: Uint8Array | string) => Effect.Effect<void, WriteError>
  /**
   * Sends several chunks as one write (`writev`), in order, with the semantics of `write`: a
   * frame's header and body go out together without being copied into one buffer.
   */
  readonly writeAll: (chunks: ReadonlyArray<Uint8Array | string>) => Effect.Effect<void, WriteError>
  /** The incoming bytes, ending at the peer's FIN; pulled, so backpressure is kept. */
  readonly stream: Stream.Stream<Uint8Array, ReadError>
  /** Writes every element; does not end the write side (call `endWrite` for that). */
  readonly sink: Sink.Sink<void, Uint8Array | string, never, WriteError>
  /** Half-close: sends FIN once every written byte was sent; reading stays possible. Idempotent. */
  readonly endWrite: Effect.Effect<void, WriteError>
  /** The current state, without a system call. */
  readonly state: Effect.Effect<ConnectionState>
  /**
   * Closes both directions at once. Bytes from completed writes are already with the operating
   * system, which still delivers them. Pending reads and writes fail with `SocketClosed`. Idempotent;
   * the scope that opened the connection closes it too.
   */
  readonly close: Effect.Effect<void>
  /**
   * Closes abortively: sends RST instead of FIN and discards unsent bytes, so the peer's next
   * operation fails with `ConnectionReset`. For rejecting abusive peers and for fault injection.
   * Idempotent.
   */
  readonly reset: Effect.Effect<void>
}

/**
 * Upgrades a plain connection to TLS in place, as a client (STARTTLS): after the plain-text
 * exchange that announces it (SMTP's `STARTTLS`, Postgres' `SSLRequest`, ...), hands the socket to
 * a TLS client and succeeds with a new connection once the handshake is done; it closes with the
 * scope. `tls` takes the options of `ConnectOptions.tls` (`true`, or `ca`, `servername`,
 * `handshakeTimeout`, ...), and the certificate is checked against the host the connection was
 * opened with. The plain connection is finished: its later operations fail with `SocketClosed`.
 *
 * It refuses, leaving the plain connection as it was, when bytes have arrived and are unread
 * (`TlsHandshakeFailed`, reason `ProtocolError`): a server speaks TLS only after the client's
 * hello, so such bytes were sent too early, or injected by someone on the path; and with
 * `SocketClosed` when the connection is closed or half-closed.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Connection, NodeTcp, Tcp } from "effect-tcp"
 *
 * // SMTP: greeting, EHLO, STARTTLS, then the same session over TLS.
 * const smtp = Effect.gen(function*() {
 *   const plain = yield* Tcp.connect({ host: "mail.example", port: 587 })
 *   yield* plain.readUntil("\r\n") // 220 greeting
 *   yield* plain.write("STARTTLS\r\n")
 *   yield* plain.readUntil("\r\n") // 220 ready to start TLS
 *   const secure = yield* Connection.startTls(plain, true)
 *   yield* secure.write("EHLO client.example\r\n")
 * }).pipe(Effect.scoped, Effect.provide(NodeTcp.layer))
 * ```
 *
 * @since 0.1.0
 * @category TLS
 */
export const startTls: {
  (tls: true | TlsConnectOptions): (
    connection: Connection
  ) => Effect.Effect<Connection, ConnectError | SocketClosed, Scope.Scope>
  (
    connection: Connection,
    tls: true | TlsConnectOptions
  ): Effect.Effect<Connection, ConnectError | SocketClosed, Scope.Scope>
} = dual(2, internalStartTls.startTls)
