/**
 * The `Tcp` service, connecting and serving, and its accessors `connect` and `serve`.
 * `NodeTcp.layer` provides it over `node:net`.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type * as NodeTls from "node:tls"
import type { Connection } from "./Connection.js"
import type { TcpEndpoint, UnixEndpoint } from "./Endpoint.js"
import type { Handler, Server, ServeOptions, UnixServeOptions } from "./Server.js"
import type { ConnectError, ListenError } from "./TcpError.js"

/**
 * Options of `connect`. Durations are `Duration.DurationInput`: milliseconds or `"5 seconds"`.
 * Every option is validated; a bad one fails with `InvalidOptions` before any socket is opened.
 *
 * @since 0.1.0
 * @category models
 */
export interface ConnectOptions {
  /** Host name or IP address; spaces, NUL and other control characters are `InvalidOptions`. */
  readonly host: string
  /** Port, 1 to 65535. */
  readonly port: number
  /** Fail with `ConnectTimeout` when the connection is not established in time. Default: the system's (minutes). */
  readonly connectTimeout?: Duration.DurationInput
  /** Fail a read with `ReadTimeout` when no byte arrives for this long. Default: wait forever. */
  readonly readTimeout?: Duration.DurationInput
  /**
   * Fail a write with `WriteTimeout` when the system takes none of its bytes for this long: a large
   * write that keeps moving does not time out. Default: wait forever.
   */
  readonly writeTimeout?: Duration.DurationInput
  /** Enable TCP keep-alive probes, so a dead peer is noticed even on an idle connection. Default false. */
  readonly keepAlive?: boolean
  /** Idle time before the first keep-alive probe. */
  readonly keepAliveInitialDelay?: Duration.DurationInput
  /** Disable Nagle's algorithm, so small writes leave at once. Default true. */
  readonly noDelay?: boolean
  /** Local IP address to connect from (an address of this machine; a name is `InvalidOptions`). */
  readonly localAddress?: string
  /**
   * Speak TLS over the connection: `true` verifies the server against Node's root certificates
   * (Mozilla's list, plus `NODE_EXTRA_CA_CERTS`) and sends the host as server name (SNI), or
   * `node:tls`'s own options (`ca`, `cert`, `key`, `servername`, `rejectUnauthorized`,
   * `ALPNProtocols`, `minVersion`, ...). The connect succeeds once the handshake is done, and
   * `connectTimeout` covers it; a failed handshake is `TlsHandshakeFailed` with its `reason`.
   * Options `node:tls` refuses (a key that is not PEM, an unknown cipher) are `InvalidOptions`.
   */
  readonly tls?: true | TlsConnectOptions
}

/**
 * The TLS options of `connect`: `node:tls`'s own (see `tls.connect`), and a limit on the handshake.
 *
 * @since 0.1.0
 * @category models
 */
export interface TlsConnectOptions
  extends Omit<NodeTls.ConnectionOptions, "host" | "port" | "path" | "socket" | "timeout" | "lookup">
{
  /**
   * Fail with `TlsHandshakeFailed` (reason `HandshakeTimeout`, transient) when the handshake does
   * not complete this long after the TCP connection is there. Default: only `connectTimeout` limits it.
   */
  readonly handshakeTimeout?: Duration.DurationInput
}

/**
 * Options of `connect` to a Unix domain socket: its path instead of a host and port, and the
 * deadlines every connection takes. TCP's own options (`keepAlive`, `noDelay`, `localAddress`)
 * have no meaning on a Unix socket and are ignored; a `host` or `port` beside `path` is
 * `InvalidOptions`.
 *
 * @since 0.2.0
 * @category models
 */
export interface UnixConnectOptions
  extends Pick<ConnectOptions, "connectTimeout" | "readTimeout" | "writeTimeout" | "tls">
{
  /**
   * The socket's path: at most `Endpoint.maxPathBytes` bytes (107 on Linux), without NUL or other
   * control characters; a longer one is `InvalidOptions`.
   */
  readonly path: string
}

/**
 * `serve`, by its options: a `Server` on a port for `ServeOptions`, on a path for `UnixServeOptions`.
 *
 * @since 0.2.0
 * @category models
 */
export interface Serve<Extra = never> {
  <E, R>(
    options: ServeOptions,
    handler: Handler<E, R>
  ): Effect.Effect<Server<TcpEndpoint>, ListenError, Extra | Scope.Scope | Exclude<R, Scope.Scope>>
  <E, R>(
    options: UnixServeOptions,
    handler: Handler<E, R>
  ): Effect.Effect<Server<UnixEndpoint>, ListenError, Extra | Scope.Scope | Exclude<R, Scope.Scope>>
  <E, R>(
    options: ServeOptions | UnixServeOptions,
    handler: Handler<E, R>
  ): Effect.Effect<Server, ListenError, Extra | Scope.Scope | Exclude<R, Scope.Scope>>
}

/**
 * Connecting and serving TCP.
 *
 * @since 0.1.0
 * @category models
 */
export interface TcpService {
  /**
   * Opens a connection, closed when the scope closes: over TCP to `host` and `port`, or to a Unix
   * domain socket for options with a `path`. Interrupting it while connecting destroys the
   * half-open socket.
   */
  readonly connect: (options: ConnectOptions | UnixConnectOptions) => Effect.Effect<Connection, ConnectError, Scope.Scope>
  /** Starts a server (see `Server.serve`). */
  readonly serve: Serve
}

/**
 * The `Tcp` service.
 *
 * @since 0.1.0
 * @category tags
 */
export class Tcp extends Context.Tag("effect-tcp/Tcp")<Tcp, TcpService>() {}

/**
 * Opens a connection with the `Tcp` service in context; it is closed when the scope closes.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { NodeTcp, Tcp } from "effect-tcp"
 *
 * const program = Effect.gen(function*() {
 *   const connection = yield* Tcp.connect({ host: "localhost", port: 8080, connectTimeout: "5 seconds" })
 *   yield* connection.write("Hello, Server!")
 *   return yield* connection.read
 * }).pipe(
 *   Effect.scoped,
 *   Effect.catchTag("ConnectionRefused", (e) => Effect.logWarning(e.message)),
 *   Effect.provide(NodeTcp.layer)
 * )
 * ```
 *
 * @since 0.1.0
 * @category accessors
 */
export const connect = (
  options: ConnectOptions | UnixConnectOptions
): Effect.Effect<Connection, ConnectError, Tcp | Scope.Scope> =>
  Effect.flatMap(Tcp, (tcp) => tcp.connect(options))

/**
 * Starts a server with the `Tcp` service in context: `Server.serve` is the same function. It runs
 * until the scope closes (see `Server.Server`); a host name binds every address it resolves to,
 * on one port (see `ServeOptions.host`).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { NodeTcp, Tcp } from "effect-tcp"
 *
 * // Greet each client, then close its connection.
 * const program = Effect.gen(function*() {
 *   const server = yield* Tcp.serve({ port: 0 }, (connection) => connection.write("hello\n"))
 *   yield* Effect.log(`listening on ${server.address}`)
 *   yield* Effect.never
 * }).pipe(Effect.scoped, Effect.provide(NodeTcp.layer))
 * ```
 *
 * @since 0.1.0
 * @category accessors
 */
export const serve: Serve<Tcp> = <E, R>(
  options: ServeOptions | UnixServeOptions,
  handler: Handler<E, R>
): Effect.Effect<Server<any>, ListenError, Tcp | Scope.Scope | Exclude<R, Scope.Scope>> =>
  Effect.flatMap(Tcp, (tcp) => tcp.serve(options, handler))
