/**
 * Upgrading a plain connection to TLS in place (STARTTLS): after a plain-text exchange (SMTP's
 * STARTTLS, Postgres' SSLRequest, ...) the socket is handed from the plain connection to a TLS
 * client socket, and a new connection is built on that once its handshake is done.
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import * as tls from "node:tls"
import type { Connection } from "../Connection.js"
import * as TcpError from "../TcpError.js"
import { NodeConnection } from "./connection.js"
import * as Options from "./options.js"
import * as Tls from "./tls.js"

const unchecked = { disableValidation: true } as const

const handshake = (
  plain: NodeConnection,
  socket: NodeConnection["socket"],
  validated: Tls.ClientTls
): Effect.Effect<NodeConnection, TcpError.ConnectError, Scope.Scope> => {
  const endpoint = plain.remoteAddress
  // The name the plain connection was opened with (net keeps it): the certificate is checked against it.
  const host = (socket as { readonly _host?: unknown })._host
  const attempt: { socket: tls.TLSSocket | undefined } = { socket: undefined }
  const secured = Effect.async<NodeConnection, TcpError.ConnectError>((resume) => {
    const secure = attempt.socket = tls.connect({
      ...Tls.connectOptions(validated, typeof host === "string" ? host : undefined),
      socket: socket as unknown as tls.ConnectionOptions["socket"]
    })
    const onSecure = () => {
      const connection = new NodeConnection(secure, { ...plain.options, onActivity: plain.options.onActivity })
      secure.off("error", onError)
      resume(Effect.succeed(connection))
    }
    const onError = (error: unknown) => {
      secure.off("secureConnect", onSecure)
      secure.destroy()
      resume(Effect.fail(TcpError.classify(error, "connect", endpoint)))
    }
    secure.once("secureConnect", onSecure)
    // Stays after a failure: destroy() may still report an error.
    secure.on("error", onError)
  })
  const timeout = Tls.handshakeTimeout(validated, endpoint)
  const limited = timeout === undefined ? secured : Effect.timeoutFail(secured, timeout)
  return Effect.uninterruptible(Effect.flatMap(Effect.scope, (scope) =>
    Effect.onExit(
      Effect.interruptible(limited),
      (exit) =>
        Exit.isSuccess(exit)
          ? Scope.addFinalizer(scope, exit.value.release)
          : Effect.sync(() => {
            attempt.socket?.destroy()
            socket.destroy()
          })
    )))
}

/** @internal */
export const startTls = (
  connection: Connection,
  options: unknown
): Effect.Effect<Connection, TcpError.ConnectError | TcpError.SocketClosed, Scope.Scope> =>
  Effect.flatMap(Options.validate(Tls.ClientTlsOption, "connect", options), (validated): Effect.Effect<
    Connection,
    TcpError.ConnectError | TcpError.SocketClosed,
    Scope.Scope
  > => {
    if (!(connection instanceof NodeConnection)) {
      return Effect.fail(
        new TcpError.InvalidOptions({
          operation: "connect",
          issues: "startTls upgrades a connection of this library (from connect or serve), not a copy or another kind"
        }, unchecked)
      )
    }
    const endpoint = connection.remoteAddress
    const socket = connection.detach()
    if (socket === "Closed" || socket === "WriteSideEnded") {
      return Effect.fail(new TcpError.SocketClosed({ operation: "connect", endpoint, reason: socket }, unchecked))
    }
    if ("unread" in socket) {
      return Effect.fail(
        new TcpError.TlsHandshakeFailed({
          operation: "connect",
          endpoint,
          reason: "ProtocolError",
          detail: `${socket.unread} bytes arrived before the handshake and are unread: a peer must wait for the ` +
            `client's handshake, so they were sent too early or injected; the connection is left as it was`
        }, unchecked)
      )
    }
    return handshake(connection, socket, validated)
  })
