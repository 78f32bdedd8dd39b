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

/**
 * An attempt to connect: its socket, kept where the attempt's end can destroy it whatever won the
 * race, and what the socket has reported so far. The listeners record events as they come, so
 * that each phase (the TCP connect, then a handshake) looks at what already happened before it
 * waits, and none is missed between two phases.
 */
interface Attempt {
  socket: Socket | undefined
  /** The socket's "connect": the TCP (or Unix) connection is there. */
  opened: boolean
  /** The dialer's connected event: the socket carries the user's bytes. */
  connected: boolean
  failure: { readonly error: unknown } | undefined
  /** Wakes the phase waiting, if any. */
  wake: (() => void) | undefined
}

/** Waits until `done` holds for the attempt; interrupted, it leaves the socket to the attempt's end. */
const waitUntil = (attempt: Attempt, done: () => boolean): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    if (done()) return resume(Effect.void)
    attempt.wake = () => {
      if (!done()) return
      attempt.wake = undefined
      resume(Effect.void)
    }
    return Effect.sync(() => {
      attempt.wake = undefined
    })
  })

const open = <O extends Options.ConnectionSettings>(
  dialer: Dialer<O>,
  options: O,
  clock: Clock.Clock,
  attempt: Attempt
): Effect.Effect<NodeConnection, TcpError.ConnectError> => {
  const endpoint = dialer.endpoint(options)
  const connectedEvent = dialer.connectedEvent(options)
  const handshake = dialer.handshakeTimeout?.(options)
  const ended = () => attempt.failure !== undefined || attempt.connected
  const dial = Effect.suspend(() => {
    let socket: Socket
    try {
      socket = attempt.socket = dialer.dial(options)
    } catch (error) {
      // node:tls checks some options only here, by throwing (those the validation knows are refused before).
      const message = error instanceof Error ? error.message : String(error)
      return Effect.fail(new TcpError.InvalidOptions({ operation: "connect", issues: message }))
    }
    const onOpen = () => {
      attempt.opened = true
      attempt.wake?.()
    }
    const onConnected = () => {
      attempt.connected = true
      attempt.wake?.()
    }
    const onError = (error: unknown) => {
      attempt.failure ??= { error }
      socket.destroy()
      attempt.wake?.()
    }
    socket.on("connect", onOpen)
    socket.on(connectedEvent, onConnected)
    // Stays after the attempt: destroy() on a connecting socket may still report an error.
    socket.on("error", onError)
    return Effect.succeed(() => {
      socket.off("connect", onOpen)
      socket.off(connectedEvent, onConnected)
      socket.off("error", onError)
    })
  })
  const finish = (detach: () => void) =>
    Effect.suspend((): Effect.Effect<NodeConnection, TcpError.ConnectError> => {
      if (attempt.failure !== undefined) {
        return Effect.fail(TcpError.classify(attempt.failure.error, "connect", endpoint))
      }
      // The connection's own listeners are attached before ours go, so an error always has a listener.
      const connection = new NodeConnection(attempt.socket!, {
        readTimeout: options.readTimeout,
        writeTimeout: options.writeTimeout,
        onActivity: undefined,
        clock,
        socketPath: Endpoint.isUnix(endpoint) ? endpoint : undefined
      })
      detach()
      return Effect.succeed(connection)
    })
  const handshaken = handshake === undefined ?
    waitUntil(attempt, ended) :
    Effect.zipRight(
      waitUntil(attempt, () => ended() || attempt.opened),
      Effect.timeoutFail(waitUntil(attempt, ended), handshake)
    )
  const connecting = Effect.flatMap(dial, (detach) => Effect.zipRight(handshaken, finish(detach)))
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
          const attempt: Attempt = { socket: undefined, opened: false, connected: false, failure: undefined, wake: undefined }
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
