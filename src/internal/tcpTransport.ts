/**
 * TCP over `node:net`: how to open a socket to a host and port, and how to bind a host (every
 * address of a name) and a port. Everything else is the client's and the server's, shared with
 * the other transports.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as dns from "node:dns"
import * as net from "node:net"
import * as tls from "node:tls"
import * as Endpoint from "../Endpoint.js"
import * as TcpError from "../TcpError.js"
import * as Options from "./options.js"
import * as Tls from "./tls.js"
import type { Dialer, Listener, ListenerEvents, Listening } from "./transport.js"

type ConnectOptions = typeof Options.ConnectOptions.Type
type UnixConnectOptions = typeof Options.UnixConnectOptions.Type
type ServeOptions = typeof Options.ServeOptions.Type

/** Where `net.connect` goes: a Unix domain socket's path, or a host and port with TCP's own options. */
const target = (options: ConnectOptions | UnixConnectOptions): net.NetConnectOpts =>
  "path" in options ?
    { path: options.path, allowHalfOpen: true } :
    {
      host: options.host,
      port: options.port,
      allowHalfOpen: true,
      noDelay: options.noDelay ?? true,
      keepAlive: options.keepAlive ?? false,
      keepAliveInitialDelay: options.keepAliveInitialDelay && Duration.toMillis(options.keepAliveInitialDelay),
      localAddress: options.localAddress
    }

/** Connects over TCP (with TLS when `tls` is set), or to a Unix domain socket when the options have a `path`. @internal */
export const dialer: Dialer<ConnectOptions | UnixConnectOptions> = {
  options: Options.ConnectTarget,
  endpoint: (options) => "path" in options ? Endpoint.unix(options.path) : Endpoint.make(options.host, options.port),
  dial: (options) => {
    if (options.tls === undefined) return net.connect(target(options))
    if ("path" in options) return tls.connect({ ...target(options), ...Tls.connectOptions(options.tls, undefined) })
    const tcp = target(options) as net.TcpNetConnectOpts
    const socket = tls.connect({ ...tcp, ...Tls.connectOptions(options.tls, options.host) })
    // tls.connect takes noDelay but does not apply it (Node 20): set it on the socket, as net does on connect.
    socket.setNoDelay(tcp.noDelay)
    return socket
  },
  connectedEvent: (options) => options.tls === undefined ? "connect" : "secureConnect",
  handshakeTimeout: (options) => Tls.handshakeTimeout(options.tls, dialer.endpoint(options))
}

/**
 * Binds `server` to a host and port or to a Unix socket's path; on failure the server is closed
 * (nothing stays bound) and the error classified with `endpoint`.
 *
 * @internal
 */
export const listen = (
  server: net.Server,
  endpoint: Endpoint.Endpoint,
  backlog: number
): Effect.Effect<void, TcpError.ListenError> =>
  Effect.async<void, TcpError.ListenError>((resume) => {
    const onListening = () => {
      server.off("error", onError)
      resume(Effect.void)
    }
    const onError = (error: unknown) => {
      server.off("listening", onListening)
      server.close()
      resume(Effect.fail(TcpError.classify(error, "listen", endpoint)))
    }
    server.once("listening", onListening)
    server.once("error", onError)
    const target = Endpoint.isUnix(endpoint) ? { path: endpoint.path } : { host: endpoint.host, port: endpoint.port }
    server.listen({ ...target, backlog, exclusive: true })
    return Effect.sync(() => {
      server.off("listening", onListening)
      server.off("error", onError)
      server.close()
    })
  })

/** The addresses to bind for `host`: itself when it is an IP address, else every address it resolves to. */
const addressesOf = (host: string, port: number): Effect.Effect<ReadonlyArray<string>, TcpError.ListenError> =>
  net.isIP(host) !== 0 ?
    Effect.succeed([host]) :
    Effect.async((resume) => {
      dns.lookup(host, { all: true }, (error, found) => {
        if (error) return resume(Effect.fail(TcpError.classify(error, "listen", Endpoint.make(host, port))))
        resume(Effect.succeed(Array.from(new Set(found.map(({ address }) => address)))))
      })
    })

// An address of a name that this host cannot bind (such as ::1 in a container without IPv6).
const isUnavailable = (error: TcpError.ListenError) =>
  error._tag === "AddressNotAvailable" || (error._tag === "SocketFailure" && error.code === "EAFNOSUPPORT")

interface Bound {
  readonly server: net.Server
  readonly address: Endpoint.TcpEndpoint
}

/**
 * Listens on every address, all on one port: the asked one, or the one the system gave the first
 * address for port 0. Where a name has several addresses, one this host does not have is skipped
 * (with a warning) as long as another can be bound. On failure nothing stays bound.
 */
const listenAll = (
  addresses: ReadonlyArray<string>,
  port: number,
  backlog: number,
  makeServer: () => net.Server
): Effect.Effect<readonly [Bound, ...Array<Bound>], TcpError.ListenError> =>
  Effect.gen(function*() {
    // Port 0 on several addresses: the port given for the first may be taken on another.
    for (let attempt = 1;; attempt++) {
      const bound: Array<Bound> = []
      let firstUnavailable: TcpError.ListenError | undefined
      const closeBound = Effect.sync(() => bound.forEach(({ server }) => server.close()))
      let retry = false
      for (const host of addresses) {
        const server = makeServer()
        const onPort = bound.length === 0 ? port : bound[0]!.address.port
        const outcome = yield* Effect.either(listen(server, Endpoint.make(host, onPort), backlog)).pipe(
          Effect.onInterrupt(() => closeBound)
        )
        if (outcome._tag === "Right") {
          const actual = server.address() as net.AddressInfo
          bound.push({ server, address: Endpoint.make(actual.address, actual.port) })
          continue
        }
        const error = outcome.left
        if (addresses.length > 1 && isUnavailable(error)) {
          firstUnavailable ??= error
          yield* Effect.logWarning(`not listening on ${host}, an address of the name: ${error.message}`)
          continue
        }
        yield* closeBound
        if (port === 0 && bound.length > 0 && error._tag === "AddressInUse" && attempt < 5) {
          retry = true
          break
        }
        return yield* Effect.fail(error)
      }
      if (retry) continue
      if (bound.length === 0) return yield* Effect.fail(firstUnavailable!)
      return bound as [Bound, ...Array<Bound>]
    }
  })

/** Closes every server; `onClosed` once each has closed and every socket it accepted is gone. */
const closeAll = (servers: ReadonlyArray<Bound>, beforeClose: () => void) => (onClosed: () => void) => {
  let listening = servers.length
  for (const { server } of servers) {
    server.close(() => {
      if (--listening === 0) onClosed()
    })
  }
  beforeClose()
}

const remoteOf = (socket: net.Socket) => Endpoint.make(socket.remoteAddress ?? "unknown", socket.remotePort ?? 0)

/**
 * The TLS side of a server: a `tls.Server` per address, whose sockets reach the server's policy
 * only once their handshake is done. A handshake has `handshakeTimeout` on the server's clock
 * from the moment TCP accepted it; a failed or late one is reported and its socket destroyed,
 * never affecting another. Closing destroys the handshakes under way (they have no handler to
 * drain). The certificates can be replaced while it runs (`updateTls`), SNI entries included.
 */
export const tlsServers = (
  validated: Tls.ServerTls,
  events: ListenerEvents,
  on: { readonly noDelay: boolean } | { readonly path: Endpoint.UnixEndpoint }
) => {
  const path = "path" in on ? on.path : undefined
  const socketOptions = "path" in on ? {} : { noDelay: on.noDelay }
  let current = validated
  // Each handshake under way, by its raw socket, with the cancel of its deadline.
  const handshaking = new Map<net.Socket, { readonly cancel: () => void }>()
  // The client of each raw socket, read at accept: one destroyed by a failure no longer knows its peer.
  const remotes = new WeakMap<net.Socket, Endpoint.Endpoint>()
  // Raw sockets destroyed by us (a deadline, the shutdown): the error Node reports for them next is ours, not theirs.
  const settled = new WeakSet<net.Socket>()
  const done = (raw: net.Socket) => {
    handshaking.get(raw)?.cancel()
    handshaking.delete(raw)
  }
  const parentOf = (socket: tls.TLSSocket) => (socket as unknown as { readonly _parent?: net.Socket })._parent
  const make = () => {
    const server = tls.createServer({
      ...current.server,
      // Not during the handshake: a client that half-closes then can never finish it (its Finished
      // would come after its FIN), and a half-open socket would wait for handshakeTimeout. An
      // established connection is half-open (secureConnection below), as a plain one is.
      allowHalfOpen: false,
      ...socketOptions,
      // The deadline is ours, on the server's clock; Node's own (120 s by default) is off.
      handshakeTimeout: 0,
      SNICallback: (servername, callback) => callback(null, Tls.contextFor(current.contexts, servername))
    })
    server.on("connection", (raw: net.Socket) => {
      events.accepted()
      if (raw.destroyed) return
      // Handshakes under way count against maxConnections on their own (the connections being
      // served do not take from them): a flood of clients that stall holds no more descriptors.
      if (handshaking.size >= events.maxHandshakes) {
        settled.add(raw)
        events.rejected()
        raw.destroy()
        return
      }
      const remote = path ?? remoteOf(raw)
      const timeout = current.handshakeTimeout
      const cancel = events.after(timeout, () => {
        handshaking.delete(raw)
        if (raw.destroyed) return
        settled.add(raw)
        events.handshakeFailed(Tls.handshakeTimeoutError(timeout, remote, "read"))
        raw.destroy()
      })
      handshaking.set(raw, { cancel })
      remotes.set(raw, remote)
      raw.once("close", () => done(raw))
    })
    server.on("secureConnection", (socket: tls.TLSSocket) => {
      const raw = parentOf(socket)
      if (raw !== undefined) done(raw)
      socket.allowHalfOpen = true
      events.connection(socket, path)
    })
    server.on("tlsClientError", (error: unknown, socket: tls.TLSSocket) => {
      const raw = parentOf(socket)
      const remote = (raw && remotes.get(raw)) ?? path ?? remoteOf(socket)
      if (raw !== undefined) done(raw)
      socket.destroy()
      if (raw !== undefined && settled.has(raw)) return
      events.handshakeFailed(TcpError.classify(rejection(error, socket), "read", remote))
    })
    return server
  }
  const destroyHandshakes = () => {
    for (const [raw, { cancel }] of handshaking) {
      cancel()
      settled.add(raw)
      raw.destroy()
    }
    handshaking.clear()
  }
  const update = (servers: ReadonlyArray<net.Server>) => (next: Tls.ServerTls) => {
    for (const server of servers) {
      const secure = server as tls.Server & {
        requestCert?: boolean
        rejectUnauthorized?: boolean
        ALPNProtocols?: unknown
      }
      secure.setSecureContext(next.server)
      // What setSecureContext leaves as tls.createServer set it, and each new socket reads from the
      // server: whether to ask for a client certificate, whether to refuse one that fails, ALPN.
      secure.requestCert = next.server.requestCert === true
      secure.rejectUnauthorized = next.server.rejectUnauthorized !== false
      secure.ALPNProtocols = undefined
      if (next.server.ALPNProtocols !== undefined) {
        ;(tls as unknown as { convertALPNProtocols: (protocols: unknown, out: object) => void })
          .convertALPNProtocols(next.server.ALPNProtocols, secure)
      }
    }
    current = next
  }
  return { make, destroyHandshakes, update }
}

/**
 * What a failed server handshake says: when Node itself rejects a client's certificate (TLS 1.3:
 * after OpenSSL's handshake, by destroying the socket) it reports only "socket hang up", and the
 * verification result is on the socket.
 */
const rejection = (error: unknown, socket: tls.TLSSocket): unknown => {
  const verdict = socket.authorizationError as unknown
  const code = (error as { readonly code?: unknown } | null)?.code
  if (code !== "ECONNRESET" || typeof verdict !== "string" || TcpError.tlsFailureReason(verdict) === undefined) return error
  return { code: verdict, message: `the client's certificate failed verification (${verdict})` }
}

/** @internal */
export const listener: Listener<ServeOptions> = {
  options: Options.ServeOptions,
  listen: (options, events, restore): Effect.Effect<Listening, TcpError.ListenError> =>
    Effect.gen(function*() {
      const host = options.host ?? "127.0.0.1"
      const noDelay = options.noDelay ?? true
      const addresses = yield* restore(addressesOf(host, options.port))
      const secure = options.tls === undefined ? undefined : tlsServers(options.tls, events, { noDelay })
      const servers = yield* listenAll(
        addresses,
        options.port,
        options.backlog ?? 511,
        secure?.make ??
          (() => net.createServer({ allowHalfOpen: true, noDelay }, events.connection).on("connection", events.accepted))
      )
      // Not accept errors: libuv (1.45 and later) handles those itself and never reports them.
      for (const { server } of servers) server.on("error", events.error)
      return {
        addresses: servers.map(({ address }) => address) as [Endpoint.TcpEndpoint, ...Array<Endpoint.TcpEndpoint>],
        close: closeAll(servers, secure?.destroyHandshakes ?? (() => {})),
        updateTls: secure?.update(servers.map(({ server }) => server))
      }
    })
}
