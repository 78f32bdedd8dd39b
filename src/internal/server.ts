import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import * as FiberRef from "effect/FiberRef"
import * as FiberRefs from "effect/FiberRefs"
import * as HashMap from "effect/HashMap"
import { pipeArguments } from "effect/Pipeable"
import { hasProperty } from "effect/Predicate"
import * as Runtime from "effect/Runtime"
import * as Scope from "effect/Scope"
import * as Endpoint from "../Endpoint.js"
import type { Handler, Server, ServerStats, ServerTypeId as ServerTypeId_ } from "../Server.js"
import * as TcpError from "../TcpError.js"
import { NodeConnection } from "./connection.js"
import * as Descriptors from "./descriptors.js"
import * as Options from "./options.js"
import * as Tls from "./tls.js"
import type { Listener, Listening, Socket } from "./transport.js"

/** @internal */
export const ServerTypeId: ServerTypeId_ = Symbol.for("effect-tcp/Server") as ServerTypeId_

/** @internal */
export const isServer = (u: unknown): u is Server => hasProperty(u, ServerTypeId)

const ServerProto = {
  [ServerTypeId]: ServerTypeId,
  pipe() {
    return pipeArguments(this, arguments)
  }
}

const makeServer = (
  addresses: readonly [Endpoint.Endpoint, ...Array<Endpoint.Endpoint>],
  stats: Effect.Effect<ServerStats>,
  updateTls: Server["updateTls"]
): Server => {
  const server = Object.create(ServerProto)
  server.address = addresses[0]
  server.addresses = addresses
  server.stats = stats
  server.updateTls = updateTls
  return server
}

const defaultDrainTimeout = Duration.seconds(5)
// How long handlers interrupted at drainTimeout have to run their finalizers (the socket still
// open) before their sockets are destroyed and the shutdown stops waiting for them.
const interruptGrace = Duration.seconds(1)
// At most one log line this often while the process keeps running out of descriptors.
const exhaustionReportInterval = Duration.seconds(10)
// At most one log line this often about failed TLS handshakes.
const handshakeReportInterval = Duration.seconds(10)

/**
 * The server of a transport: validates the options with the listener's schema, binds with it,
 * and applies to every socket it accepts the policy that is the same over every transport:
 * limits, idle time, deadlines, a fiber per handler with its log annotations, stats, the check
 * for exhausted descriptors, and the drain when the scope closes.
 *
 * @internal
 */
export const serveWith = <O extends Options.ServerSettings>(listener: Listener<O>) =>
<E, R>(
  options: unknown,
  handler: Handler<E, R>
): Effect.Effect<Server, TcpError.ListenError, Scope.Scope | Exclude<R, Scope.Scope>> =>
  Effect.gen(function*() {
    const validated = yield* Options.validate(listener.options, "listen", options)
    const runtime = yield* Effect.runtime<Exclude<R, Scope.Scope>>()
    const clock = yield* Effect.clock
    const maxConnections = validated.maxConnections ?? Infinity
    const idleMillis = validated.idleTimeout && Duration.toMillis(validated.idleTimeout)
    const drainTimeout = validated.drainTimeout ?? defaultDrainTimeout

    const runFork = Runtime.runFork(runtime)

    let accepted = 0
    let rejected = 0
    let idleClosed = 0
    let failed = 0
    let abandoned = 0
    let outOfDescriptors = 0
    let handshakesFailed = 0
    let nextId = 0
    let stopping = false
    // Each handler's fiber, with its connection's id.
    const fibers = new Map<Fiber.RuntimeFiber<unknown, never>, number>()
    const connections = new Set<NodeConnection>()
    let onDrained: (() => void) | undefined

    const watchIdle = (connection: NodeConnection, lastActivity: { at: number }, idle: number) => {
      const loop: Effect.Effect<void> = Effect.suspend(() => {
        const now = clock.unsafeCurrentTimeMillis()
        // Bytes that a pending write hands to the kernel are activity, though no callback says so.
        const quiet = now - Math.max(lastActivity.at, connection.writeProgressAt(now))
        if (quiet < idle) return Effect.flatMap(Effect.sleep(Duration.millis(idle - quiet)), () => loop)
        const error = new TcpError.IdleTimeout({
          operation: "read",
          endpoint: connection.remoteAddress,
          timeoutMillis: idle
        })
        idleClosed++
        connection.impose(error)
        return Effect.logInfo(`${error._tag}: ${error.message}`)
      })
      return loop
    }

    // Each connection's fiber starts with its log annotations in place (set once, at the fork,
    // instead of by annotateLogs, which copies the fiber's FiberRefs twice inside an
    // acquire/release) and gets its Scope by one update of its own context (instead of
    // Effect.scoped, which does the same plus an acquire/release: 14 KiB and 12 us a connection).
    const baseAnnotations = runtime.fiberRefs.pipe(FiberRefs.getOrDefault(FiberRef.currentLogAnnotations))
    const logFailure = (cause: Cause.Cause<unknown>) => {
      if (Cause.isInterruptedOnly(cause)) return Effect.void
      failed++
      const error = Cause.failureOption(cause)
      if (error._tag === "Some" && TcpError.isTcpError(error.value)) {
        return Effect.logWarning(`handler failed with ${error.value._tag}: ${error.value.message}`)
      }
      return Effect.logError("handler failed", cause)
    }

    const handle = (connection: NodeConnection, lastActivity: { at: number } | undefined) => {
      // Suspended: a handler that throws instead of returning an Effect is a defect of its fiber.
      const run = Effect.suspend(() => handler(connection))
      const body = lastActivity !== undefined && idleMillis !== undefined
        ? Effect.zipRight(Effect.forkScoped(watchIdle(connection, lastActivity, idleMillis)), run)
        : run
      return Effect.flatMap(Scope.make(), (scope) =>
        Effect.zipRight(
          FiberRef.update(FiberRef.currentContext, Context.add(Scope.Scope, scope)),
          // The socket is destroyed after the handler's finalizers (they may still use it) and
          // before the fiber's children are interrupted and awaited (one blocked on it wakes).
          Effect.onExit(
            body as Effect.Effect<unknown, E>,
            // `ensuring`: a finalizer that fails must not leave the socket open.
            (exit) => Effect.ensuring(Scope.close(scope, exit), connection.release)
          )
        )).pipe(Effect.catchAllCause(logFailure))
    }

    const onConnection = (socket: Socket, socketPath?: Endpoint.UnixEndpoint) => {
      if (stopping || connections.size >= maxConnections) {
        if (!stopping) rejected++
        socket.destroy()
        return
      }
      accepted++
      const id = ++nextId
      const lastActivity = idleMillis === undefined ? undefined : { at: clock.unsafeCurrentTimeMillis() }
      const connection = new NodeConnection(socket, {
        readTimeout: validated.readTimeout,
        writeTimeout: validated.writeTimeout,
        onActivity: lastActivity && (() => {
          lastActivity.at = clock.unsafeCurrentTimeMillis()
        }),
        clock,
        socketPath,
        // A TLS server's connection arrives once the client's certificate was judged.
        handshakeDone: true
      })
      connections.add(connection)
      const annotations = baseAnnotations.pipe(
        HashMap.set("connectionId", id as unknown),
        HashMap.set("peer", Endpoint.format(connection.remoteAddress) as unknown)
      )
      const fiber = runFork(handle(connection, lastActivity), {
        updateRefs: (refs, fiberId) =>
          FiberRefs.updateAs(refs, { fiberId, fiberRef: FiberRef.currentLogAnnotations, value: annotations })
      })
      fibers.set(fiber, id)
      fiber.addObserver(() => {
        connection.destroy()
        fibers.delete(fiber)
        connections.delete(connection)
        if (fibers.size === 0 && onDrained !== undefined) onDrained()
      })
    }

    // Resolves once every handler has ended, or after `timeout` on the server's clock. Interruptible
    // so that its deadline can end it inside the shutdown, which nothing else may cut.
    const drained = (timeout: Duration.Duration) =>
      Effect.interruptible(Effect.async<void>((resume) => {
        onDrained = () => resume(Effect.void)
        if (fibers.size === 0) onDrained()
        return Effect.sync(() => {
          onDrained = undefined
        })
      })).pipe(Effect.timeout(timeout), Effect.ignore)

    // A release, so uninterruptible: interrupting the fiber that owns the scope (as NodeRuntime
    // does on SIGINT and SIGTERM) drains exactly like closing it.
    const shutdown = (listening: Listening) => Effect.gen(function*() {
      stopping = true
      // The failed handshakes not logged yet are logged now, not at a deadline after the server.
      cancelSummary?.()
      cancelSummary = undefined
      if (failedSinceReport > 0) {
        const last = lastSuppressed
        yield* Effect.logInfo(`${summary()} (the last: ${last})`)
      }
      // Stop accepting now; the callback comes once every socket accepted is gone too.
      let listenersClosed = false
      let onListenersClosed: (() => void) | undefined
      listening.close(() => {
        listenersClosed = true
        onListenersClosed?.()
      })
      const closed = Effect.async<void>((resume) => {
        if (listenersClosed) return resume(Effect.void)
        onListenersClosed = () => resume(Effect.void)
      })
      if (fibers.size > 0) yield* drained(drainTimeout)
      if (fibers.size > 0) {
        // Sent without waiting: a handler that ignores interruption must not hold the shutdown.
        const shutdownFiber = yield* Effect.fiberId
        for (const fiber of fibers.keys()) fiber.unsafeInterruptAsFork(shutdownFiber)
        yield* drained(interruptGrace)
      }
      if (fibers.size > 0) {
        const ids = Array.from(fibers.values())
        abandoned += ids.length
        const one = ids.length === 1
        yield* Effect.logWarning(
          `${ids.length} handler${one ? "" : "s"} still running ${Duration.toMillis(interruptGrace)} ms after ${
            one ? "it was" : "they were"
          } interrupted at drainTimeout (connection${one ? "" : "s"} ${ids.slice(0, 10).join(", ")}${
            ids.length > 10 ? ", ..." : ""
          }): abandoned, ${one ? "its socket" : "their sockets"} destroyed`
        )
      }
      for (const connection of connections) connection.destroy()
      yield* closed
    })

    // When an accept fails for want of a descriptor, libuv (uv__emfile_trick) accepts and closes
    // every pending connection itself and tells Node nothing: those connections cannot be counted.
    // What can be seen is the moment it starts: an accept that took the last free descriptor. The
    // check costs an open and a close, so it runs only once the server holds an eighth of the
    // process's limit in connections (a handler may use several descriptors per connection).
    const checkFrom = Math.floor((Descriptors.softLimit() ?? 512) / 8)
    let exhaustedSinceReport = 0
    let lastReportAt: number | undefined
    const checkDescriptors = () => {
      if (stopping || connections.size < checkFrom) return
      const code = Descriptors.exhausted()
      if (code === undefined) return
      outOfDescriptors++
      exhaustedSinceReport++
      const now = clock.unsafeCurrentTimeMillis()
      if (lastReportAt !== undefined && now - lastReportAt < Duration.toMillis(exhaustionReportInterval)) return
      const times = exhaustedSinceReport === 1 ? "" : ` (${exhaustedSinceReport} times since the last report)`
      lastReportAt = now
      exhaustedSinceReport = 0
      runFork(Effect.logWarning(
        `out of file descriptors (${code}) with ${connections.size} connections open${times}: until one is freed, ` +
          `the system closes new connections before the server sees them, uncounted; raise the limit (ulimit -n) ` +
          `or set maxConnections below it`
      ))
    }
    // Failed handshakes: the first is logged at once, then at most one line per interval with
    // how many failed meanwhile, so that a scan or a flood of bad clients cannot flood the log.
    let failedSinceReport = 0
    let lastFailureReportAt: number | undefined
    // The reason of the last failure not logged yet, and the cancel of the line that will say so.
    let lastSuppressed: string | undefined
    let cancelSummary: (() => void) | undefined
    const summary = () => {
      const count = failedSinceReport
      failedSinceReport = 0
      lastSuppressed = undefined
      return `TLS handshakes failed: ${count} more since the last report`
    }
    const reportSuppressed = () => {
      cancelSummary = undefined
      if (failedSinceReport === 0) return
      const last = lastSuppressed
      lastFailureReportAt = clock.unsafeCurrentTimeMillis()
      runFork(Effect.logInfo(`${summary()} (the last: ${last})`))
    }
    const handshakeFailed = (error: TcpError.TcpError) => {
      handshakesFailed++
      failedSinceReport++
      const now = clock.unsafeCurrentTimeMillis()
      const interval = Duration.toMillis(handshakeReportInterval)
      if (lastFailureReportAt !== undefined && now - lastFailureReportAt < interval) {
        // Said at the end of the interval even if no failure comes after it: a burst that stops
        // is not left at its first line.
        lastSuppressed = Tls.serverReport(error).reason
        if (cancelSummary === undefined && !stopping) {
          cancelSummary = after(Duration.millis(lastFailureReportAt + interval - now), reportSuppressed)
        }
        return
      }
      cancelSummary?.()
      cancelSummary = undefined
      const others = failedSinceReport === 1 ? "" : ` (${failedSinceReport - 1} more since the last report)`
      lastFailureReportAt = now
      failedSinceReport = 0
      lastSuppressed = undefined
      const { line, reason } = Tls.serverReport(error)
      runFork(Effect.logInfo(`TLS handshake failed (${reason})${others}: ${line}`))
    }
    function after(duration: Duration.Duration, f: () => void) {
      const fiber = runFork(Effect.flatMap(Effect.sleep(duration), () => Effect.sync(f)))
      return () => fiber.unsafeInterruptAsFork(FiberId.none)
    }
    const events = {
      connection: onConnection,
      accepted: checkDescriptors,
      handshakeFailed,
      maxHandshakes: maxConnections,
      rejected: () => {
        if (!stopping) rejected++
      },
      after,
      // Logged rather than allowed to crash the process.
      error: (error: unknown) => {
        runFork(Effect.logWarning("server error", error))
      }
    }
    // acquireRelease, with the listener's lookup in the caller's interruptibility.
    const listening = yield* Effect.uninterruptibleMask((restore) =>
      Effect.tap(listener.listen(validated, events, restore), (listening) => Effect.addFinalizer(() => shutdown(listening)))
    )

    const stats = Effect.sync((): ServerStats => ({
      active: connections.size,
      accepted,
      rejected,
      idleClosed,
      failed,
      abandoned,
      outOfDescriptors,
      handshakesFailed
    }))
    const updateTls = (tls: unknown): Effect.Effect<void, TcpError.InvalidOptions> =>
      listening.updateTls === undefined
        ? Effect.fail(
          new TcpError.InvalidOptions({ operation: "listen", issues: "updateTls: this server was not started with tls" })
        )
        : Effect.map(Options.validate(Tls.ServerTlsOption, "listen", tls), listening.updateTls)
    return makeServer(listening.addresses, stats, updateTls)
  })
