import * as Scope from "effect/Scope"
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Context from "effect/Context"
import * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import * as FiberRefs from "effect/FiberRefs"
import * as HashMap from "effect/HashMap"
import * as Runtime from "effect/Runtime"
import * as dns from "node:dns"
import * as net from "node:net"
import * as Endpoint from "../Endpoint.js"
import type { Handler, Server, ServeOptions, ServerStats } from "../Server.js"
import * as TcpError from "../TcpError.js"
import { NodeConnection } from "./connection.js"
import * as Descriptors from "./descriptors.js"
import * as Options from "./options.js"

const defaultDrainTimeout = Duration.seconds(5)
// How long handlers interrupted at drainTimeout have to run their finalizers (the socket still
// open) before their sockets are destroyed and the shutdown stops waiting for them.
const interruptGrace = Duration.seconds(1)
// At most one log line this often while the process keeps running out of descriptors.
const exhaustionReportInterval = Duration.seconds(10)

const listen = (
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
      resume(Effect.fail(TcpError.classify(error, "listen", endpoint)))
    }
    server.once("listening", onListening)
    server.once("error", onError)
    server.listen({ host: endpoint.host, port: endpoint.port, backlog, exclusive: true })
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
): Effect.Effect<ReadonlyArray<{ readonly server: net.Server; readonly address: Endpoint.Endpoint }>, TcpError.ListenError> =>
  Effect.gen(function*() {
    // Port 0 on several addresses: the port given for the first may be taken on another.
    for (let attempt = 1;; attempt++) {
      const bound: Array<{ readonly server: net.Server; readonly address: Endpoint.Endpoint }> = []
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
      return bound
    }
  })

/** @internal */
export const serve = <E, R>(
  options: ServeOptions,
  handler: Handler<E, R>
): Effect.Effect<Server, TcpError.ListenError, Scope.Scope | Exclude<R, Scope.Scope>> =>
  Effect.gen(function*() {
    const validated = yield* Options.validate(Options.ServeOptions, "listen", options)
    const runtime = yield* Effect.runtime<Exclude<R, Scope.Scope>>()
    const clock = yield* Effect.clock
    const requested = Endpoint.make(validated.host ?? "127.0.0.1", validated.port)
    const maxConnections = validated.maxConnections ?? Infinity
    const idleMillis = validated.idleTimeout && Duration.toMillis(validated.idleTimeout)
    const drainTimeout = validated.drainTimeout ?? defaultDrainTimeout
    const noDelay = validated.noDelay ?? true

    const runFork = Runtime.runFork(runtime)

    let accepted = 0
    let rejected = 0
    let idleClosed = 0
    let failed = 0
    let abandoned = 0
    let outOfDescriptors = 0
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

    const onConnection = (socket: net.Socket) => {
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
        clock
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
    const shutdown = (servers: ReadonlyArray<{ readonly server: net.Server }>) => Effect.gen(function*() {
      stopping = true
      // Stop accepting now; each callback comes once every socket its server accepted is gone too.
      let listening = servers.length
      let onServersClosed: (() => void) | undefined
      for (const { server } of servers) {
        server.close(() => {
          if (--listening === 0) onServersClosed?.()
        })
      }
      const closed = Effect.async<void>((resume) => {
        if (listening === 0) return resume(Effect.void)
        onServersClosed = () => resume(Effect.void)
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
    const makeServer = () =>
      net.createServer({ allowHalfOpen: true, noDelay }, onConnection).on("connection", checkDescriptors)
    const addresses = yield* addressesOf(requested.host, requested.port)
    const servers = yield* Effect.acquireRelease(
      listenAll(addresses, requested.port, validated.backlog ?? 511, makeServer),
      shutdown
    )
    for (const { server } of servers) {
      // Not accept errors: libuv (1.45 and later) handles those itself and never reports them.
      // Whatever else comes is logged rather than allowed to crash the process.
      server.on("error", (error) => runFork(Effect.logWarning("server error", error)))
    }

    const stats = Effect.sync((): ServerStats => ({
      active: connections.size,
      accepted,
      rejected,
      idleClosed,
      failed,
      abandoned,
      outOfDescriptors
    }))
    return {
      address: servers[0]!.address,
      addresses: servers.map(({ address }) => address),
      stats
    } satisfies Server
  })
