/**
 * A running TCP server: each connection's handler in its own fiber, connection limits, an idle
 * limit and a graceful drain when its scope closes.
 *
 * @since 0.1.0
 */
import type * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import type { Pipeable } from "effect/Pipeable"
import type { Connection } from "./Connection.js"
import type * as Endpoint from "./Endpoint.js"
import type * as NodeTls from "node:tls"
import type { InvalidOptions } from "./TcpError.js"
import * as internal from "./internal/server.js"
import * as Tcp from "./Tcp.js"

/**
 * The type id of a `Server`.
 *
 * @since 0.1.0
 * @category symbols
 */
export const ServerTypeId: unique symbol = internal.ServerTypeId

/**
 * @since 0.1.0
 * @category symbols
 */
export type ServerTypeId = typeof ServerTypeId

/**
 * Options of `serve`. Durations are `Duration.DurationInput`: milliseconds or `"5 seconds"`.
 *
 * @since 0.1.0
 * @category models
 */
export interface ServeOptions {
  /**
   * Address to bind; default `127.0.0.1`. Use `0.0.0.0` or `::` to accept connections from other
   * hosts. A name is resolved and every address it has is bound, on one port (`localhost` is
   * then both `127.0.0.1` and `::1` where the system lists both); an address of the name that
   * this host cannot bind (`AddressNotAvailable`, such as `::1` without IPv6) is skipped with a
   * warning, as long as another one is bound.
   */
  readonly host?: string
  /** Port to bind; 0 picks a free one (read it from `Server.address`). */
  readonly port: number
  /** Length of the queue of connections the system completed but the server has not accepted yet; default 511. */
  readonly backlog?: number
  /**
   * Connections served at once; more are closed at once and counted in `stats.rejected`. Default: no
   * limit. With `tls`, as many handshakes may be under way besides (more are closed and counted too).
   */
  readonly maxConnections?: number
  /** Close a connection on which no byte moved (in either direction) for this long, failing its operations with `IdleTimeout`. */
  readonly idleTimeout?: Duration.DurationInput
  /**
   * On shutdown, how long running handlers may take to finish before they are interrupted; default
   * 5 seconds. Interrupted handlers get one more second for their finalizers, then every socket is destroyed.
   */
  readonly drainTimeout?: Duration.DurationInput
  /** Read deadline of every connection (see `ConnectOptions.readTimeout`). */
  readonly readTimeout?: Duration.DurationInput
  /** Write deadline of every connection (see `ConnectOptions.writeTimeout`). */
  readonly writeTimeout?: Duration.DurationInput
  /** Disable Nagle's algorithm on accepted sockets; default true. */
  readonly noDelay?: boolean
  /**
   * Speak TLS: `node:tls`'s server options (`cert`, `key`, `ca`, `requestCert`,
   * `rejectUnauthorized`, `ALPNProtocols`, `minVersion`, ...), with `sni` for more certificates by
   * server name and `handshakeTimeout`. A connection reaches the handler only once its handshake
   * is done; one that fails is counted in `stats.handshakesFailed` and logged (rate-limited).
   */
  readonly tls?: TlsServeOptions
}

/**
 * The TLS options of `serve`.
 *
 * @since 0.1.0
 * @category models
 */
export interface TlsServeOptions extends Omit<NodeTls.TlsOptions, "SNICallback" | "handshakeTimeout"> {
  /**
   * Certificates by the server name a client asks for (SNI): `{ "api.example": { cert, key } }`;
   * `*.example` matches one label. A client that asks for another name, or none, gets `cert`.
   */
  readonly sni?: Readonly<Record<string, NodeTls.SecureContextOptions>>
  /**
   * Destroy a connection whose handshake has not completed this long after it was accepted (a
   * client that opens TCP and never completes the handshake holds a descriptor). Default 10 seconds.
   */
  readonly handshakeTimeout?: Duration.DurationInput
}

/**
 * Options of `serve` on a Unix domain socket: the path instead of a host and port, and the same
 * server options as over TCP.
 *
 * The socket file: when `path` holds a socket file that nobody listens on (left by a server that
 * was killed), it is removed and the path bound; a live server on it, or a file at it that is not
 * a socket, fails with `AddressInUse` and is left alone. The file is removed when the server's
 * scope closes.
 *
 * @since 0.2.0
 * @category models
 */
export interface UnixServeOptions
  extends Pick<
    ServeOptions,
    "backlog" | "maxConnections" | "idleTimeout" | "drainTimeout" | "readTimeout" | "writeTimeout" | "tls"
  >
{
  /**
   * The socket's path: at most `Endpoint.maxPathBytes` bytes (107 on Linux), without NUL or other
   * control characters; a longer one is `InvalidOptions`.
   */
  readonly path: string
  /**
   * Permission bits of the socket file (a client needs write permission to connect), such as
   * `0o660`; default: what the process's umask leaves of `0o777`. Set after the bind and before
   * `serve` returns, so for a moment the file has the umask's mode: where that must not happen,
   * put the socket in a directory only the clients you want can enter.
   */
  readonly mode?: number
}

/**
 * Counters of a running server.
 *
 * @since 0.1.0
 * @category models
 */
export interface ServerStats {
  /** Connections being served now. */
  readonly active: number
  /** Connections accepted and handed to the handler, since the start. */
  readonly accepted: number
  /** Connections closed at once because `maxConnections` were being served. */
  readonly rejected: number
  /** Connections closed by `idleTimeout`. */
  readonly idleClosed: number
  /** Handlers that ended with a failure or a defect (each was logged). */
  readonly failed: number
  /**
   * Handlers still running when the shutdown gave up on them: interrupted at `drainTimeout`, they
   * had not ended a second later (uninterruptible work), so their sockets were destroyed and the
   * server's scope closed without them (logged as a warning). Each fiber ends when its work does.
   */
  readonly abandoned: number
  /**
   * Times the server found the process out of file descriptors (EMFILE, or ENFILE system-wide)
   * just after accepting a connection; the first time and then at most every 10 seconds it logs
   * a warning. Until a descriptor is freed, the system closes new connections before they reach
   * the server (libuv accepts and closes them itself and tells Node nothing), so those are not
   * counted anywhere: this says that it happened, not how many were lost. Checked once the
   * server holds an eighth of the process's descriptor limit (`ulimit -n`) in connections.
   */
  readonly outOfDescriptors: number
  /**
   * TLS handshakes that failed or did not complete within `handshakeTimeout`: those connections
   * never reached the handler. The first is logged at once with its reason, then at most one line
   * every 10 seconds says how many more failed.
   */
  readonly handshakesFailed: number
}

/**
 * A listening server. It runs until the scope it was started in closes, or the fiber owning that
 * scope is interrupted (as `NodeRuntime.runMain` does on SIGINT and SIGTERM): then it stops
 * accepting, lets handlers finish until `drainTimeout`, interrupts the rest and closes every
 * socket. A handler still running one second after its interruption is abandoned (see
 * `ServerStats.abandoned`), so the scope closes within `drainTimeout` plus one second.
 *
 * @since 0.1.0
 * @category models
 */
export interface Server<A extends Endpoint.Endpoint = Endpoint.Endpoint> extends Pipeable {
  readonly [ServerTypeId]: ServerTypeId
  /**
   * The address actually bound (with the real port when 0 was asked for); the first of
   * `addresses`. A `TcpEndpoint` for a server on a port, a `UnixEndpoint` for one on a path.
   */
  readonly address: A
  /**
   * Every address bound, in the order the name resolved to them: one for an IP address, one per
   * address of a name, all with the same port; the path alone for a Unix domain socket.
   */
  readonly addresses: ReadonlyArray<A>
  readonly stats: Effect.Effect<ServerStats>
  /**
   * Replaces the certificates of a TLS server while it runs (certificate rotation): connections
   * accepted from now on get the new ones (`cert`, `key`, `ca`, `sni`, `handshakeTimeout`, ...);
   * open connections are not touched. Options it refuses fail with `InvalidOptions` and change
   * nothing; a server started without `tls` fails with `InvalidOptions` too.
   */
  readonly updateTls: (tls: TlsServeOptions) => Effect.Effect<void, InvalidOptions>
}

/**
 * Whether a value is a `Server`.
 *
 * @since 0.1.0
 * @category guards
 */
export const isServer: (u: unknown) => u is Server = internal.isServer

/**
 * A connection handler. It runs in its own fiber with a `Scope` that closes with the connection;
 * when it ends, its scope's finalizers run (the socket still open), then the connection is
 * closed, then fibers it forked with `Effect.fork` are interrupted: a child whose finalizers must
 * still use the socket belongs in the scope (`Effect.forkScoped`). Its failures and defects are
 * logged with the peer's address and a connection id, and never affect the server or other
 * connections.
 *
 * @since 0.1.0
 * @category models
 */
export type Handler<E, R> = (connection: Connection) => Effect.Effect<unknown, E, R>

/**
 * Starts a server with the `Tcp` service in context: the same function as `Tcp.serve`, here
 * because a server is where a reader looks for it. A host name binds every address it resolves
 * to, on one port (see `ServeOptions.host` and `Server.addresses`).
 *
 * @example
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { NodeTcp, Server } from "effect-tcp"
 *
 * // Echo every chunk back until the client closes.
 * const program = Effect.gen(function*() {
 *   const server = yield* Server.serve({ port: 0 }, (connection) =>
 *     connection.stream.pipe(Stream.run(connection.sink)))
 *   yield* Effect.log(`listening on ${server.address}`)
 *   yield* Effect.never
 * }).pipe(Effect.scoped, Effect.provide(NodeTcp.layer))
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const serve: typeof Tcp.serve = Tcp.serve
