/**
 * Unix domain sockets over `node:net`: how to bind a path, what to do with a socket file left
 * there by a server that died, and the socket file's mode. Connecting is the TCP dialer's (its
 * `net.connect` takes a path as well as a host and port); everything else is the client's and
 * the server's, shared with the other transports.
 */
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import * as net from "node:net"
import * as Endpoint from "../Endpoint.js"
import * as TcpError from "../TcpError.js"
import * as Options from "./options.js"
import * as tcpTransport from "./tcpTransport.js"
import type { Listener, Listening } from "./transport.js"

type UnixServeOptions = typeof Options.UnixServeOptions.Type

/**
 * Whether `path` is a socket file that nobody listens on: one left by a server that was killed
 * (a server that stops normally removes its file). Known by trying to connect: only a refusal
 * says no one listens; a live server (even one too busy to accept: EAGAIN), a file that is not a
 * socket and anything that cannot be checked are never taken for stale.
 */
const isStale = (path: string): Effect.Effect<boolean> =>
  Effect.suspend(() => {
    let stat: fs.Stats
    try {
      stat = fs.lstatSync(path)
    } catch {
      return Effect.succeed(false)
    }
    if (!stat.isSocket()) return Effect.succeed(false)
    return Effect.async<boolean>((resume) => {
      const probe = net.connect({ path })
      probe.once("connect", () => {
        probe.destroy()
        resume(Effect.succeed(false))
      })
      probe.once("error", (error: NodeJS.ErrnoException) => {
        probe.destroy()
        resume(Effect.succeed(error.code === "ECONNREFUSED"))
      })
      return Effect.sync(() => probe.destroy())
    })
  })

/** Sets the socket file's permission bits; a failure (EPERM) is the listen's. */
const chmod = (endpoint: Endpoint.UnixEndpoint, mode: number): Effect.Effect<void, TcpError.ListenError> =>
  Effect.try({
    try: () => fs.chmodSync(endpoint.path, mode),
    catch: (error) => TcpError.classify(error, "listen", endpoint)
  })

/** @internal */
export const listener: Listener<UnixServeOptions> = {
  options: Options.UnixServeOptions,
  listen: (options, events): Effect.Effect<Listening, TcpError.ListenError> =>
    Effect.gen(function*() {
      const endpoint = Endpoint.unix(options.path)
      const backlog = options.backlog ?? 511
      const secure = options.tls === undefined ? undefined : tcpTransport.tlsServers(options.tls, events, { path: endpoint })
      const makeServer = secure?.make ?? (() =>
        net.createServer({ allowHalfOpen: true }, (socket) => events.connection(socket, endpoint))
          .on("connection", events.accepted))
      let server = makeServer()
      const first = yield* Effect.either(tcpTransport.listen(server, endpoint, backlog))
      if (first._tag === "Left") {
        if (first.left._tag !== "AddressInUse" || !(yield* isStale(options.path))) return yield* Effect.fail(first.left)
        // A stale file: remove it and bind again. Whatever fails now (another server that took the
        // path in between: AddressInUse) is the listen's failure.
        yield* Effect.logInfo(`removing ${options.path}, a socket file nobody listens on (left by a server that died)`)
        yield* Effect.try({
          try: () => fs.unlinkSync(options.path),
          catch: (error) => TcpError.classify(error, "listen", endpoint)
        })
        server = makeServer()
        yield* tcpTransport.listen(server, endpoint, backlog)
      }
      const bound = server
      if (options.mode !== undefined) {
        yield* Effect.tapError(chmod(endpoint, options.mode), () => Effect.sync(() => bound.close()))
      }
      // Not accept errors: libuv handles those itself and never reports them.
      bound.on("error", events.error)
      return {
        addresses: [endpoint],
        // libuv removes the socket file when the listening handle closes.
        close: (onClosed) => {
          bound.close(() => onClosed())
          secure?.destroyHandshakes()
        },
        updateTls: secure?.update([bound])
      }
    })
}
