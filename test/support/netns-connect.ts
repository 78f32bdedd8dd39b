/**
 * A child process for test/unreachable.test.ts. netns.ts starts it inside a network namespace it
 * created (never in the machine's own): it runs each scenario given as a JSON array in argv[2],
 * one after the other, with `Tcp.connect` over `NodeTcp.layer`, and prints one JSON line per
 * scenario on stdout: the fields of the error it failed with, or how it ended otherwise.
 *
 *   node --import tsx test/support/netns-connect.ts '[{"kind":"connect","host":"192.0.2.1","port":80}]'
 *
 * Scenarios:
 * - `connect`: connect to host:port.
 * - `abort-connect`: connect to host:port, whose packets vanish; while the connect is in SYN-SENT,
 *   destroy its socket with `ss -K` (SOCK_DESTROY: the kernel aborts it with ECONNABORTED).
 * - `abort-read`: connect to a listener on 127.0.0.1, destroy the client socket with `ss -K`, read.
 * - `abort-write-late`: the same, then wait until the connection has seen the abort, then write.
 * - `abort-write-now`: the same, but destroy and write in one synchronous stretch, so that the
 *   write(2) itself meets the aborted socket.
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { execFile, execFileSync } from "node:child_process"
import * as net from "node:net"
import type { Connection } from "../../src/Connection.js"
import type * as Endpoint from "../../src/Endpoint.js"
import * as NodeTcp from "../../src/NodeTcp.js"
import * as Tcp from "../../src/Tcp.js"
import * as TcpError from "../../src/TcpError.js"

export type Scenario =
  | { readonly kind: "connect" | "abort-connect"; readonly host: string; readonly port: number }
  | { readonly kind: "abort-read" | "abort-write-late" | "abort-write-now" }

/** What the child prints per scenario: the error's fields, or how it ended without an error. */
export type Outcome =
  | {
    readonly _tag: TcpError.TcpError["_tag"]
    readonly code?: string | undefined
    readonly syscall?: string | undefined
    readonly operation?: string | undefined
    readonly endpoint?: { readonly host: string; readonly port: number }
    readonly message: string
    readonly transient: boolean
  }
  | { readonly _tag: "Succeeded"; readonly detail: string }
  | { readonly _tag: "ChildFailed"; readonly message: string }

const ss = (args: ReadonlyArray<string>) =>
  Effect.async<string, Error>((resume) => {
    const child = execFile("ss", args, { timeout: 5_000 }, (error, stdout, stderr) => {
      resume(
        error === null
          ? Effect.succeed(stdout)
          : Effect.fail(new Error(`ss ${args.join(" ")} failed: ${error.message} ${stderr}`))
      )
    })
    return Effect.sync(() => child.kill("SIGKILL"))
  })

/** `ss -K` for TCP sockets matching `filter`; fails unless it destroyed one. */
const destroy = (filter: ReadonlyArray<string>) =>
  Effect.flatMap(
    ss(["-K", "-H", "-tn", ...filter]),
    (killed) => killed.trim() === "" ? Effect.fail(new Error(`ss -K ${filter.join(" ")} destroyed no socket`)) : Effect.void
  )

/** Waits (up to 5 s) until a connect to host:port is in SYN-SENT. */
const synSent = (host: string, port: number) =>
  Effect.gen(function*() {
    for (let attempt = 0; attempt < 250; attempt++) {
      const listed = yield* ss(["-H", "-tn", "state", "syn-sent", "dst", host, "dport", "=", `:${port}`])
      if (listed.trim() !== "") return
      yield* Effect.sleep("20 millis")
    }
    return yield* Effect.fail(new Error(`no connect to ${host}:${port} reached SYN-SENT`))
  })

/** Waits (up to 5 s) until the connection reports `Closed`. */
const closed = (connection: Connection) =>
  Effect.gen(function*() {
    for (let attempt = 0; attempt < 500; attempt++) {
      if ((yield* connection.state)._tag === "Closed") return
      yield* Effect.sleep("10 millis")
    }
    return yield* Effect.fail(new Error("the connection never saw the abort"))
  })

/** A raw listener on 127.0.0.1; closed, with what it accepted, with the scope. */
const listener = Effect.acquireRelease(
  Effect.async<{ readonly server: net.Server; readonly sockets: Set<net.Socket>; readonly port: number }>(
    (resume) => {
      const sockets = new Set<net.Socket>()
      const server = net.createServer((socket) => {
        sockets.add(socket)
        socket.on("error", () => {})
        socket.on("close", () => sockets.delete(socket))
      })
      server.listen(0, "127.0.0.1", () =>
        resume(Effect.succeed({ server, sockets, port: (server.address() as net.AddressInfo).port }))
      )
    }
  ),
  ({ server, sockets }) =>
    Effect.async<void>((resume) => {
      for (const socket of sockets) socket.destroy()
      server.close(() => resume(Effect.void))
    })
)

/** A connection to a listener in this namespace, and the `ss` filter matching only its socket. */
const loopbackConnection = Effect.gen(function*() {
  const { port } = yield* listener
  const connection = yield* Tcp.connect({ host: "127.0.0.1", port })
  const filter = ["sport", "=", `:${(connection.localAddress as Endpoint.TcpEndpoint).port}`, "dport", "=", `:${port}`]
  return { connection, filter }
})

const run = (scenario: Scenario) =>
  Effect.gen(function*() {
    switch (scenario.kind) {
      case "connect": {
        const connection = yield* Tcp.connect({ host: scenario.host, port: scenario.port })
        return `connected to ${connection.remoteAddress}`
      }
      case "abort-connect": {
        const fiber = yield* Effect.fork(Tcp.connect({ host: scenario.host, port: scenario.port }))
        yield* synSent(scenario.host, scenario.port)
        yield* destroy(["state", "syn-sent", "dst", scenario.host, "dport", "=", `:${scenario.port}`])
        const connection = yield* fiber
        return `connected to ${connection.remoteAddress}`
      }
      case "abort-read": {
        const { connection, filter } = yield* loopbackConnection
        yield* destroy(filter)
        const chunk = yield* connection.read
        return `read ${JSON.stringify(chunk)}`
      }
      case "abort-write-late": {
        const { connection, filter } = yield* loopbackConnection
        yield* destroy(filter)
        yield* closed(connection)
        yield* connection.write("after the abort")
        return "the write succeeded"
      }
      case "abort-write-now": {
        const { connection, filter } = yield* loopbackConnection
        // No I/O callback can run between the two: the socket's error is still unseen by Node when
        // write() hands the bytes to the kernel, which rejects them with ECONNABORTED.
        yield* Effect.suspend(() => {
          const killed = execFileSync("ss", ["-K", "-H", "-tn", ...filter], {
            timeout: 5_000,
            stdio: ["ignore", "pipe", "pipe"]
          })
          if (killed.toString().trim() === "") return Effect.fail(new Error("ss -K destroyed no socket"))
          return connection.write("after the abort")
        })
        return "the write succeeded"
      }
    }
  })

const outcome = (scenario: Scenario): Effect.Effect<Outcome> =>
  Effect.scoped(run(scenario)).pipe(
    Effect.provide(NodeTcp.layer),
    Effect.either,
    Effect.map((result): Outcome => {
      if (Either.isRight(result)) return { _tag: "Succeeded", detail: result.right }
      const error = result.left
      if (!TcpError.isTcpError(error)) return { _tag: "ChildFailed", message: error.message }
      if (error._tag === "InvalidOptions") {
        return { _tag: error._tag, operation: error.operation, message: error.message, transient: false }
      }
      return {
        _tag: error._tag,
        code: error.code,
        syscall: error.syscall,
        operation: error.operation,
        endpoint: error.endpoint as Endpoint.TcpEndpoint,
        message: error.message,
        transient: TcpError.isTransient(error)
      }
    }),
    Effect.catchAllCause((cause) => Effect.succeed<Outcome>({ _tag: "ChildFailed", message: Cause.pretty(cause) }))
  )

const main = Effect.gen(function*() {
  const scenarios = JSON.parse(process.argv[2] ?? "[]") as ReadonlyArray<Scenario>
  for (const scenario of scenarios) {
    const result = yield* outcome(scenario)
    process.stdout.write(JSON.stringify(result) + "\n")
  }
})

Effect.runPromise(main).catch((defect) => {
  process.stdout.write(JSON.stringify({ _tag: "ChildFailed", message: String(defect) }) + "\n")
  process.exitCode = 1
})
