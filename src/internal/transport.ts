/**
 * The seam between a transport (TCP today) and what every transport shares: the connection, the
 * server's policy and the classification of errors. A transport only says how to validate its
 * options, open a socket and accept sockets; `client.connectWith(dialer)` and
 * `server.serveWith(listener)` do the rest, the same way for each.
 */
import type * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import type * as Schema from "effect/Schema"
import type * as Endpoint from "../Endpoint.js"
import type * as TcpError from "../TcpError.js"
import type { NodeConnection } from "./connection.js"
import type { ConnectionSettings, ServerSettings } from "./options.js"
import type { ServerTls } from "./tls.js"

/**
 * A socket of any transport: what a connection is built on, plus what the client and the server
 * need before there is a connection (listen for its events, destroy it).
 */
export type Socket = ConstructorParameters<typeof NodeConnection>[0] & {
  on(event: string, listener: (...args: Array<any>) => void): unknown
  off(event: string, listener: (...args: Array<any>) => void): unknown
  destroy(): unknown
}

/** How a transport opens a socket to a peer. */
export interface Dialer<Options extends ConnectionSettings> {
  /** Validates the user's options (operation "connect"); a failure is `InvalidOptions`. */
  readonly options: Schema.Schema<Options, any>
  /** The peer that the attempt's errors name. */
  readonly endpoint: (options: Options) => Endpoint.Endpoint
  /** Starts opening a socket; its `error` event is classified as the connect's failure. */
  readonly dial: (options: Options) => Socket
  /** The event after which the socket carries the user's bytes: "connect" for TCP, "secureConnect" for TLS. */
  readonly connectedEvent: (options: Options) => string
  /**
   * The limit on what comes between the socket's "connect" and its connected event (TLS's
   * handshake), and the error it fails with; `connectTimeout` covers both phases.
   */
  readonly handshakeTimeout?: (
    options: Options
  ) => { readonly duration: Duration.Duration; readonly onTimeout: () => TcpError.ConnectError } | undefined
}

/** What a listener tells the server, from the moment it starts binding. */
export interface ListenerEvents {
  /**
   * A socket ready for the handler (with TLS, once its handshake is done); with the path of a Unix
   * domain socket, which its connection's addresses then name.
   */
  readonly connection: (socket: Socket, socketPath?: Endpoint.UnixEndpoint) => void
  /** The system accepted a connection, after `connection` for TCP: a descriptor was just taken. */
  readonly accepted: () => void
  /** An error of a bound server (never one of its sockets'): logged, it stops nothing. */
  readonly error: (error: unknown) => void
  /** A connection whose handshake (TLS's) failed or timed out: it never reaches the handler. */
  readonly handshakeFailed: (error: TcpError.TcpError) => void
  /**
   * How many handshakes may be under way at once (the server's `maxConnections`): one more is
   * closed at once and told to `rejected`, so that clients that never finish a handshake hold no
   * more descriptors than that.
   */
  readonly maxHandshakes: number
  /** A socket closed at once because `maxHandshakes` were under way. */
  readonly rejected: () => void
  /** Runs `f` after `duration` on the server's clock (`TestClock` in tests), unless cancelled first. */
  readonly after: (duration: Duration.Duration, f: () => void) => () => void
}

/** What a listener has bound. */
export interface Listening {
  /** Every address bound; the first is the server's `address`. */
  readonly addresses: readonly [Endpoint.Endpoint, ...Array<Endpoint.Endpoint>]
  /** Stops accepting at once; `onClosed` runs once every socket it accepted is gone as well. */
  readonly close: (onClosed: () => void) => void
  /** Replaces the TLS certificates of a TLS server, for connections accepted from now on. */
  readonly updateTls?: (validated: ServerTls) => void
}

/** How a transport accepts sockets. */
export interface Listener<Options extends ServerSettings> {
  /** Validates the user's options (operation "listen"); a failure is `InvalidOptions`. */
  readonly options: Schema.Schema<Options, any>
  /**
   * Binds, reporting to `events` from the first socket on. It runs uninterruptibly, so that the
   * server owns whatever it binds; `restore` gives back the caller's interruptibility to a step
   * that leaves nothing to clean up (a name lookup). When it fails, nothing stays bound.
   */
  readonly listen: (
    options: Options,
    events: ListenerEvents,
    restore: <A, E>(effect: Effect.Effect<A, E>) => Effect.Effect<A, E>
  ) => Effect.Effect<Listening, TcpError.ListenError>
}
