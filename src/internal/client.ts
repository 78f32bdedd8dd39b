import type * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import type { Connection } from "../Connection.js"
import * as Endpoint from "../Endpoint.js"
import * as TcpError from "../TcpError.js"
import { NodeConnection } from "./connection.js"
import * as Options from "./options.js"
import type { Dialer, Socket } from "./transport.js"

/** The socket of an attempt, kept where the attempt's end can destroy it whatever won the race. */
interface Attempt {
  socket: Socket | undefined
}

const open = <O extends Options.ConnectionSettings>(
  dialer: Dialer<O>,
  options: O,
  clock: Clock.Clock,
  attempt: Attempt
): Effect.Effect<NodeConnection, TcpError.ConnectError> => {
  const endpoint = dialer.endpoint(options)
  const connectedEvent = dialer.connectedEvent
  const connecting = Effect.async<NodeConnection, TcpError.ConnectError>((resume) => {
    const socket = attempt.socket = dialer.dial(options)
    const onConnect = () => {
      // The connection's own listeners are attached before ours go, so an error always has a listener.
      const connection = new NodeConnection(socket, {
        readTimeout: options.readTimeout,
        writeTimeout: options.writeTimeout,
        onActivity: undefined,
        clock,
        socketPath: Endpoint.isUnix(endpoint) ? endpoint : undefined
      })
      socket.off(connectedEvent, onConnect)
      socket.off("error", onError)
      resume(Effect.succeed(connection))
    }
    const onError = (error: unknown) => {
      socket.off(connectedEvent, onConnect)
      socket.destroy()
      resume(Effect.fail(TcpError.classify(error, "connect", endpoint)))
    }
    socket.on(connectedEvent, onConnect)
    socket.on("error", onError)
    return Effect.sync(() => {
      socket.off(connectedEvent, onConnect)
      // Keep a listener: destroy() on a connecting socket may still report an error.
      socket.destroy()
    })
  })
  const timeout = options.connectTimeout
  if (timeout === undefined) return connecting
  return Effect.timeoutFail(connecting, {
    duration: timeout,
    onTimeout: () =>
      new TcpError.ConnectTimeout({ operation: "connect", endpoint, timeoutMillis: Duration.toMillis(timeout) })
  })
}

/**
 * The connect of a transport: validates the options with the dialer's schema, opens a socket
 * with it and waits for its connected event under `connectTimeout`, classifies its errors, and
 * puts the connection in the scope.
 *
 * @internal
 */
export const connectWith = <O extends Options.ConnectionSettings>(dialer: Dialer<O>) =>
(options: unknown): Effect.Effect<Connection, TcpError.ConnectError, Scope.Scope> =>
  Effect.flatMap(
    Options.validate(dialer.options, "connect", options),
    (validated) =>
      // acquireRelease by hand: it would copy the caller's FiberRefs for the finalizer (a fifth of
      // a connect's CPU), and destroying a socket needs none of them. The attempt is interruptible
      // whatever the caller's region (inside an acquire it must still obey its timeout). Whatever
      // ends it, the socket has an owner: on success the scope, before anything can interrupt
      // again; otherwise it is destroyed at once, also when the deadline won a race against a
      // connect that had just completed (the race then drops the connection it made).
      Effect.uninterruptible(
        Effect.flatMap(Effect.scope, (scope) => {
          const attempt: Attempt = { socket: undefined }
          return Effect.onExit(
            Effect.interruptible(Effect.flatMap(Effect.clock, (clock) => open(dialer, validated, clock, attempt))),
            (exit) =>
              Exit.isSuccess(exit)
                ? Scope.addFinalizer(scope, exit.value.release)
                : Effect.sync(() => attempt.socket?.destroy())
          )
        })
      )
  )
