/**
 * Unix domain sockets: connect and serve on a path, what goes wrong there (typed, each produced
 * for real), the socket file's life (a stale one replaced, removed on close, its mode), and the
 * same Connection and server policy as over TCP.
 */
import { describe, expect } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as TestClock from "effect/TestClock"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import {
  type Connection,
  ConnectionPool,
  Endpoint,
  Failover,
  Framing,
  HealthCheck,
  Message,
  Retry,
  Server,
  Tcp,
  TcpError
} from "../src/index.js"
import { FaultProxy } from "../src/testing/index.js"
import { awaitSleeps, closedPort, effect, eventually, exchange, live, text } from "./support/harness.js"
import { certificates } from "./support/certs.js"
import { run } from "./support/examples.js"
import { tsChild } from "./support/processes.js"

/** The test certificates, for the modules over TLS (made once per process by openssl). */
const c = await certificates()

/** A new directory under the system's temp dir, searchable by everyone, removed with the scope. */
export const socketDir = Effect.acquireRelease(
  Effect.sync(() => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "effect-tcp-unix-"))
    fs.chmodSync(dir, 0o755)
    return dir
  }),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

/** A socket file at `socketPath` that nobody listens on: its server was killed (SIGKILL) before it could remove it. */
const staleSocket = (socketPath: string) =>
  Effect.async<void, Error>((resume) => {
    const script = `require("node:net").createServer().listen(process.argv[1], () => console.log("listening"))`
    const child = spawn(process.execPath, ["-e", script, socketPath], { stdio: ["ignore", "pipe", "inherit"] })
    child.stdout.once("data", () => child.kill("SIGKILL"))
    child.once("exit", (_code, signal) =>
      signal === "SIGKILL" ? resume(Effect.void) : resume(Effect.fail(new Error("the child did not listen"))))
  })

/** Upper-cases what each client sends until it closes. */
const upperCaseEcho = (connection: Connection) =>
  Effect.gen(function*() {
    for (;;) {
      const chunk = yield* connection.read
      if (Option.isNone(chunk)) return
      yield* connection.write(text(chunk.value).toUpperCase())
    }
  })

const unprivileged = fileURLToPath(new URL("./support/unprivileged-unix.ts", import.meta.url))
// uid/gid 65534 is "nobody": file permissions apply to it, as they do not to root.
const asNobody = (what: "connect" | "serve", socketPath: string) =>
  Effect.map(tsChild(unprivileged, [what, socketPath], { uid: 65534, gid: 65534 }), (line) => JSON.parse(line))

describe("Unix domain sockets", () => {
  live("connect and serve on a path: one exchange, both ends' addresses are the path", () =>
    Effect.gen(function*() {
      const socketPath = path.join(yield* socketDir, "app.sock")
      let serverSide: Array<string> = []
      const server = yield* Server.serve({ path: socketPath }, (connection) => {
        serverSide = [Endpoint.format(connection.remoteAddress), Endpoint.format(connection.localAddress)]
        return upperCaseEcho(connection)
      })
      expect(server.address).toEqual(Endpoint.unix(socketPath))
      expect(server.addresses).toEqual([Endpoint.unix(socketPath)])
      expect(String(server.address)).toBe(`unix:${socketPath}`)
      expect(fs.statSync(socketPath).isSocket()).toBe(true)
      const connection = yield* Tcp.connect({ path: socketPath, connectTimeout: "5 seconds" })
      expect(yield* exchange(connection, "hello")).toBe("HELLO")
      expect(connection.remoteAddress).toEqual(Endpoint.unix(socketPath))
      expect(connection.localAddress).toEqual(Endpoint.unix(socketPath))
      expect(serverSide).toEqual([`unix:${socketPath}`, `unix:${socketPath}`])
      yield* connection.endWrite
      expect(yield* connection.read).toEqual(Option.none())
    }))

  live("nothing at the path: ConnectionRefused with ENOENT, naming the path, transient", () =>
    Effect.gen(function*() {
      const socketPath = path.join(yield* socketDir, "nobody-home.sock")
      const error = yield* Effect.flip(Tcp.connect({ path: socketPath }))
      expect(error).toMatchObject({ _tag: "ConnectionRefused", code: "ENOENT", operation: "connect" })
      expect(error).toMatchObject({ endpoint: Endpoint.unix(socketPath) })
      expect(error.message).toBe(
        `connect to unix:${socketPath} failed: no socket at the path (ENOENT): is the server running, and is the path right?`
      )
    }))

  live("a stale socket file (its server was SIGKILLed): connect is refused; serve replaces it and binds", () =>
    Effect.gen(function*() {
      const socketPath = path.join(yield* socketDir, "stale.sock")
      yield* staleSocket(socketPath)
      expect(fs.statSync(socketPath).isSocket()).toBe(true)
      const refused = yield* Effect.flip(Tcp.connect({ path: socketPath }))
      expect(refused).toMatchObject({ _tag: "ConnectionRefused", code: "ECONNREFUSED" })
      expect(refused.message).toBe(
        `connection refused at unix:${socketPath}: a socket file is there but nothing listens on it (its server stopped or crashed); start the server, or check the path`
      )
      yield* Server.serve({ path: socketPath }, upperCaseEcho)
      const connection = yield* Tcp.connect({ path: socketPath })
      expect(yield* exchange(connection, "fresh")).toBe("FRESH")
    }))

  live("a path a live server holds: AddressInUse, and the live server keeps its file and its clients", () =>
    Effect.gen(function*() {
      const socketPath = path.join(yield* socketDir, "taken.sock")
      yield* Server.serve({ path: socketPath }, upperCaseEcho)
      const error = yield* Effect.flip(Server.serve({ path: socketPath }, () => Effect.void))
      expect(error).toMatchObject({ _tag: "AddressInUse", code: "EADDRINUSE", operation: "listen" })
      expect(error.message).toBe(
        `listen on unix:${socketPath} failed: the path is taken, by a server that listens on it or by a file that is not a socket (never removed); stop that server, remove the file, or choose another path`
      )
      const connection = yield* Tcp.connect({ path: socketPath })
      expect(yield* exchange(connection, "still")).toBe("STILL")
    }))

  live("a path that is a regular file: AddressInUse, and the file is never removed", () =>
    Effect.gen(function*() {
      const socketPath = path.join(yield* socketDir, "data.txt")
      fs.writeFileSync(socketPath, "precious")
      const error = yield* Effect.flip(Server.serve({ path: socketPath }, () => Effect.void))
      expect(error).toMatchObject({ _tag: "AddressInUse", code: "EADDRINUSE" })
      expect(fs.readFileSync(socketPath, "utf8")).toBe("precious")
    }))

  live("closing the server's scope removes its socket file", () =>
    Effect.gen(function*() {
      const socketPath = path.join(yield* socketDir, "gone.sock")
      yield* Effect.scoped(Effect.gen(function*() {
        yield* Server.serve({ path: socketPath }, upperCaseEcho)
        const connection = yield* Tcp.connect({ path: socketPath })
        expect(yield* exchange(connection)).toBe("PING")
      }))
      expect(fs.existsSync(socketPath)).toBe(false)
      // So the next server binds without finding anything to replace.
      yield* Server.serve({ path: socketPath }, upperCaseEcho)
    }))

  live("mode sets the socket file's permission bits before serve returns", () =>
    Effect.gen(function*() {
      const dir = yield* socketDir
      const modes = [0o600, 0o660, 0o666]
      for (const mode of modes) {
        const socketPath = path.join(dir, `mode-${mode.toString(8)}.sock`)
        yield* Server.serve({ path: socketPath, mode }, upperCaseEcho)
        expect(fs.statSync(socketPath).mode & 0o777).toBe(mode)
      }
    }))

  live("a client without write permission on the socket file gets PermissionDenied; mode 0o666 lets it in", () =>
    Effect.gen(function*() {
      const dir = yield* socketDir
      const closed = path.join(dir, "private.sock")
      const open = path.join(dir, "public.sock")
      yield* Server.serve({ path: closed, mode: 0o600 }, upperCaseEcho)
      yield* Server.serve({ path: open, mode: 0o666 }, upperCaseEcho)
      const denied = yield* asNobody("connect", closed)
      expect(denied).toMatchObject({ _tag: "PermissionDenied", code: "EACCES", operation: "connect", endpoint: { path: closed } })
      expect(denied.message).toBe(
        `connect to unix:${closed} failed: permission denied (EACCES); this process may not write to the socket file or search its directories: check their owner and mode (the server's mode option)`
      )
      expect(yield* asNobody("connect", open)).toEqual({ _tag: "Connected" })
    }), 60_000)

  live("serving in a directory the process may not write to: PermissionDenied", () =>
    Effect.gen(function*() {
      const socketPath = path.join(yield* socketDir, "not-mine.sock")
      const outcome = yield* asNobody("serve", socketPath)
      expect(outcome).toMatchObject({ _tag: "PermissionDenied", code: "EACCES", operation: "listen", endpoint: { path: socketPath } })
      expect(outcome.message).toBe(
        `listen on unix:${socketPath} failed: permission denied (EACCES); this process may not create a file in the socket's directory: check the directory's owner and mode`
      )
    }), 60_000)

  live("the longest path the system takes binds; one byte more is InvalidOptions, counted in bytes", () =>
    Effect.gen(function*() {
      const dir = yield* socketDir
      const longest = path.join(dir, "x".repeat(Endpoint.maxPathBytes - Buffer.byteLength(dir) - 1))
      expect(Buffer.byteLength(longest)).toBe(Endpoint.maxPathBytes)
      yield* Server.serve({ path: longest }, upperCaseEcho)
      const connection = yield* Tcp.connect({ path: longest })
      expect(yield* exchange(connection)).toBe("PING")
      // Fewer characters than the limit, but "é" is two bytes in UTF-8.
      const room = Endpoint.maxPathBytes - Buffer.byteLength(dir) - 1
      const tooLong = path.join(dir, "é".repeat(Math.ceil((room + 1) / 2)))
      expect(tooLong.length).toBeLessThanOrEqual(Endpoint.maxPathBytes)
      const bytes = Buffer.byteLength(tooLong)
      const issue = `a Unix socket path is at most ${Endpoint.maxPathBytes} bytes in UTF-8 (the system's limit), got ${bytes} bytes`
      const onConnect = yield* Effect.flip(Tcp.connect({ path: tooLong }))
      expect(onConnect).toMatchObject({ _tag: "InvalidOptions", operation: "connect" })
      expect(onConnect.message).toContain(issue)
      const onServe = yield* Effect.flip(Server.serve({ path: tooLong }, () => Effect.void))
      expect(onServe).toMatchObject({ _tag: "InvalidOptions", operation: "listen" })
      expect(onServe.message).toContain(issue)
      expect(fs.readdirSync(dir)).toEqual([path.basename(longest)])
    }))

  const badOptions: ReadonlyArray<readonly [string, Record<string, unknown>, string]> = [
    ["an empty path", { path: "" }, "a Unix socket path must not be empty"],
    ["a NUL inside", { path: "/tmp/a\u0000b.sock" }, "a Unix socket path must not contain NUL or other control characters"],
    ["a newline", { path: "/tmp/a\nb.sock" }, "must not contain NUL or other control characters"],
    ["an abstract name", { path: "\u0000abstract" }, "abstract Unix socket names (a leading NUL) are not supported"],
    ["a path and a host", { path: "/tmp/a.sock", host: "127.0.0.1" }, "give either a Unix socket's path or a host and port, not both (got path and host)"],
    ["a path and a port", { path: "/tmp/a.sock", port: 80 }, "not both (got path and port)"],
    ["a path that is not a string", { path: 5 }, "Expected string, actual 5"],
    ["tls that is not TLS options", { path: "/tmp/a.sock", tls: "yes" }, "TLS options"],
    ["a negative readTimeout", { path: "/tmp/a.sock", readTimeout: -1 }, "expected a finite, non-negative duration"]
  ]
  for (const [name, options, expected] of badOptions) {
    live(`connect and serve refuse ${name} with InvalidOptions`, () =>
      Effect.gen(function*() {
        const onConnect = yield* Effect.flip(Tcp.connect(options as any))
        expect(onConnect).toMatchObject({ _tag: "InvalidOptions", operation: "connect" })
        expect(onConnect.message).toContain(expected)
        const onServe = yield* Effect.flip(Server.serve(options as any, () => Effect.void))
        expect(onServe).toMatchObject({ _tag: "InvalidOptions", operation: "listen" })
        expect(onServe.message).toContain(expected)
      }))
  }

  live("a mode that is not permission bits is InvalidOptions, and nothing is bound", () =>
    Effect.gen(function*() {
      const dir = yield* socketDir
      for (const mode of [0o1777, -1, 1.5]) {
        const error = yield* Effect.flip(Server.serve({ path: path.join(dir, "m.sock"), mode }, () => Effect.void))
        expect(error).toMatchObject({ _tag: "InvalidOptions", operation: "listen" })
        expect(error.message).toContain("mode is the socket file's permission bits, an integer from 0 to 0o777")
      }
      expect(fs.readdirSync(dir)).toEqual([])
    }))

  live("the server's policy over a path: maxConnections and stats", () =>
    Effect.gen(function*() {
      const socketPath = path.join(yield* socketDir, "limited.sock")
      const server = yield* Server.serve({ path: socketPath, maxConnections: 1 }, upperCaseEcho)
      const first = yield* Tcp.connect({ path: socketPath })
      expect(yield* exchange(first)).toBe("PING")
      const second = yield* Tcp.connect({ path: socketPath })
      expect(yield* second.read).toEqual(Option.none())
      expect(yield* server.stats).toMatchObject({ active: 1, accepted: 1, rejected: 1 })
      yield* first.close
      yield* eventually(() => Effect.runSync(server.stats).active === 0)
    }))

  effect("the server's idleTimeout over a path: IdleTimeout names the path, logged and counted", () =>
    Effect.gen(function*() {
      const socketPath = path.join(yield* socketDir, "idle.sock")
      const seen: Array<string> = []
      const server = yield* Server.serve({ path: socketPath, idleTimeout: "10 seconds" }, (connection) =>
        Effect.tapError(connection.read, (error) =>
          Effect.sync(() => seen.push(`${error._tag} ${Endpoint.format(error.endpoint)}`))))
      const client = yield* Tcp.connect({ path: socketPath })
      const ended = yield* Effect.fork(client.read)
      yield* eventually(() => Effect.runSync(server.stats).active === 1)
      expect(yield* awaitSleeps(1)).toEqual([10_000])
      yield* TestClock.adjust("10 seconds")
      expect(yield* Fiber.join(ended)).toEqual(Option.none())
      expect(seen).toEqual([`IdleTimeout unix:${socketPath}`])
      expect(yield* server.stats).toMatchObject({ idleClosed: 1 })
    }))

  live("an error naming a path encodes and decodes with the TcpError Schema", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Tcp.connect({ path: path.join(yield* socketDir, "none.sock") }))
      const encoded = Schema.encodeSync(TcpError.TcpError)(error as TcpError.TcpError)
      expect(JSON.parse(JSON.stringify(encoded))).toMatchObject({ _tag: "ConnectionRefused", endpoint: { path: error.message.split(" ")[2]!.slice("unix:".length) } })
      const decoded = Schema.decodeUnknownSync(TcpError.TcpError)(JSON.parse(JSON.stringify(encoded)))
      expect(decoded).toBeInstanceOf(TcpError.ConnectionRefused)
      expect(decoded.message).toBe(error.message)
      expect(decoded._tag === "ConnectionRefused" && decoded.endpoint).toBeInstanceOf(Endpoint.UnixEndpoint)
    }))

  live("classify: ENOENT on connect is ConnectionRefused for a path, SocketFailure for a host and port", () =>
    Effect.sync(() => {
      const enoent = Object.assign(new Error("connect ENOENT"), { code: "ENOENT", syscall: "connect" })
      const onPath = TcpError.classify(enoent, "connect", Endpoint.unix("/run/x.sock"))
      expect(onPath).toMatchObject({ _tag: "ConnectionRefused", code: "ENOENT" })
      expect(TcpError.isTransient(onPath)).toBe(true)
      expect(TcpError.classify(enoent, "connect", Endpoint.make("127.0.0.1", 80))).toMatchObject({ _tag: "SocketFailure" })
      expect(TcpError.classify(enoent, "listen", Endpoint.unix("/no/dir/x.sock"))).toMatchObject({ _tag: "SocketFailure", code: "ENOENT" })
    }))

  describe("Endpoint", () => {
    live("a path endpoint prints and parses as unix:/path", () =>
      Effect.sync(() => {
        const endpoint = Endpoint.unix("/run/app.sock")
        expect(Endpoint.format(endpoint)).toBe("unix:/run/app.sock")
        expect(String(endpoint)).toBe("unix:/run/app.sock")
        expect(Either.getOrThrow(Endpoint.parse("unix:/run/app.sock"))).toEqual(endpoint)
        expect(Either.getOrThrow(Endpoint.parse("unix:relative.sock"))).toEqual(Endpoint.unix("relative.sock"))
        expect(Endpoint.isUnix(endpoint)).toBe(true)
        expect(Endpoint.isTcp(endpoint)).toBe(false)
        expect(Endpoint.isTcp(Endpoint.make("::1", 80))).toBe(true)
        expect(Endpoint.parse("unix:")).toEqual(Either.left(`"unix:": a Unix socket path must not be empty`))
        expect(Endpoint.parse("unix:/a\u0000b")).toEqual(
          Either.left(`"unix:/a\u0000b": a Unix socket path must not contain NUL or other control characters, got "/a\\u0000b"`)
        )
      }))
  })

  describe("every module over TCP and over a Unix path, each plain and with TLS", () => {
    /** Four-byte commands: PING is answered PONG (the health check), anything else upper-cased. */
    const pingOrUpperCase = (connection: Connection) =>
      Effect.gen(function*() {
        for (;;) {
          const command = text(yield* connection.readExactly(4))
          yield* connection.write(command === "PING" ? "PONG" : command.toUpperCase())
        }
      }).pipe(Effect.catchTag("UnexpectedEof", () => Effect.void))

    type Target = { readonly host: string; readonly port: number } | { readonly path: string }
    interface Transport {
      readonly name: string
      /** Where a server listens. */
      readonly listenOn: (dir: string, name: string) => Server.ServeOptions | Server.UnixServeOptions
      /** A target nothing listens on. */
      readonly dead: (dir: string) => Effect.Effect<Target, never, Scope.Scope>
      /** The TLS options of a client of this transport's servers, if it speaks TLS. */
      readonly tls?: Tcp.TlsConnectOptions
    }
    const targetOf = (endpoint: Endpoint.Endpoint): Target =>
      Endpoint.isUnix(endpoint) ? { path: endpoint.path } : { host: endpoint.host, port: endpoint.port }
    const plainTransports: ReadonlyArray<Transport> = [
      {
        name: "TCP",
        listenOn: () => ({ host: "127.0.0.1", port: 0 }),
        dead: () => Effect.map(closedPort, (port) => ({ host: "127.0.0.1", port }))
      },
      {
        name: "Unix",
        listenOn: (dir, name) => ({ path: path.join(dir, `${name}.sock`) }),
        dead: (dir) => Effect.succeed({ path: path.join(dir, "dead.sock") })
      }
    ]
    const transports: ReadonlyArray<Transport> = [
      ...plainTransports,
      ...plainTransports.map((plain): Transport => ({
        name: `TLS over ${plain.name}`,
        listenOn: (dir, name) => ({ ...plain.listenOn(dir, name), tls: { cert: c.server.cert, key: c.server.key } }),
        dead: plain.dead,
        tls: { ca: c.ca }
      }))
    ]
    /** How a client of `transport` connects to `endpoint`: TLS trusting the test CA where it speaks TLS. */
    const to = (transport: Transport, endpoint: Endpoint.Endpoint) =>
      transport.tls === undefined ? targetOf(endpoint) : { ...targetOf(endpoint), tls: transport.tls }

    const Double = Message.protocol({
      request: Schema.Struct({ n: Schema.Number }),
      response: Schema.Struct({ doubled: Schema.Number }),
      framing: Framing.lengthPrefixed({ headerBytes: 2 })
    })

    for (const transport of transports) {
      live(`${transport.name}: Framing, and Message's client and server`, () =>
        Effect.gen(function*() {
          const dir = yield* socketDir
          const lines = Framing.delimited({ delimiter: "\n", maxFrameBytes: 64 })
          const framed = yield* Server.serve(transport.listenOn(dir, "framed"), (connection) =>
            Effect.gen(function*() {
              const reader = yield* Framing.reader(connection, lines)
              for (;;) {
                const frame = yield* reader.read
                if (Option.isNone(frame)) return
                yield* Framing.write(connection, lines, text(frame.value).toUpperCase())
              }
            }))
          const connection = yield* Tcp.connect(to(transport, framed.address))
          yield* Framing.writeAll(connection, lines, ["one", "two"])
          const reader = yield* Framing.reader(connection, lines)
          expect([text(Option.getOrThrow(yield* reader.read)), text(Option.getOrThrow(yield* reader.read))]).toEqual([
            "ONE",
            "TWO"
          ])

          const server = yield* Message.serve(Double, transport.listenOn(dir, "message"), ({ n }) => Effect.succeed({ doubled: 2 * n }))
          const client = yield* Message.client(yield* Tcp.connect(to(transport, server.address)), Double)
          expect(yield* Effect.all([1, 2, 3].map((n) => client.request({ n })), { concurrency: 3 })).toEqual([
            { doubled: 2 },
            { doubled: 4 },
            { doubled: 6 }
          ])
        }))

      live(`${transport.name}: HealthCheck and a ConnectionPool with a health check`, () =>
        Effect.gen(function*() {
          const server = yield* Server.serve(transport.listenOn(yield* socketDir, "pool"), pingOrUpperCase)
          const connection = yield* Tcp.connect(to(transport, server.address))
          yield* HealthCheck.ping(connection)
          const pool = yield* ConnectionPool.make({ ...to(transport, server.address), max: 2, healthCheck: HealthCheck.ping })
          const answers = yield* Effect.all([1, 2, 3, 4].map(() => pool.use((c) => exchange(c, "ping"))), {
            concurrency: 4
          })
          expect(answers).toEqual(["PING", "PING", "PING", "PING"])
          expect(yield* pool.stats).toMatchObject({ idle: 2, inUse: 0 })
        }))

      live(`${transport.name}: Failover from a dead endpoint of the other kind, and every one dead`, () =>
        Effect.gen(function*() {
          const dir = yield* socketDir
          const other = transports.find((t) => t !== transport)!
          const deadOther = yield* other.dead(dir)
          const deadSame = yield* transport.dead(dir)
          const server = yield* Server.serve(transport.listenOn(dir, "failover"), pingOrUpperCase)
          const tls = transport.tls === undefined ? {} : { tls: transport.tls }
          const connection = yield* Failover.connect([deadOther, targetOf(server.address)], tls)
          expect(yield* exchange(connection, "over")).toBe("OVER")
          const error = yield* Effect.flip(Failover.connect([deadOther, deadSame], tls))
          expect(error._tag === "AllEndpointsFailed" && error.failures.map(({ endpoint, error }) => [Endpoint.format(endpoint), error._tag]))
            .toEqual([[Endpoint.format(deadOther), "ConnectionRefused"], [Endpoint.format(deadSame), "ConnectionRefused"]])
          expect(error.message).toContain(`${Endpoint.format(deadOther)} ConnectionRefused`)
        }))

      live(`${transport.name}: Retry retries a refused connect until the server is up`, () =>
        Effect.gen(function*() {
          const dir = yield* socketDir
          const options = transport.listenOn(dir, "late")
          // A TCP server comes up on a port known in advance: the dead one, freed for it.
          const target = "path" in options ? { path: options.path } : yield* transport.dead(dir)
          const refused = yield* Effect.flip(Tcp.connect(target))
          expect(refused._tag).toBe("ConnectionRefused")
          expect(TcpError.isTransient(refused)).toBe(true)
          if (!("path" in target)) return
          let attempts = 0
          const scope = yield* Effect.scope
          const startServer = Server.serve({ ...options, path: target.path }, pingOrUpperCase).pipe(
            Effect.provideService(Scope.Scope, scope),
            Effect.orDie
          )
          const policy = yield* Retry.exponential({ base: "5 millis", retries: 100, jitter: false })
          const connection = yield* Retry.retryTransient(Tcp.connect(to(transport, Endpoint.unix(target.path))), policy, {
            onRetry: () => ++attempts === 2 ? Effect.asVoid(startServer) : Effect.void
          })
          expect(yield* exchange(connection, "late")).toBe("LATE")
          expect(attempts).toBe(2)
        }))

      live(`${transport.name}: a FaultProxy in front of the server, listening on either kind`, () =>
        Effect.gen(function*() {
          const dir = yield* socketDir
          const server = yield* Server.serve(transport.listenOn(dir, "upstream"), pingOrUpperCase)
          const onTcp = yield* FaultProxy.make({ upstream: targetOf(server.address), faults: { toClient: { slice: { maxBytes: 1 } } } })
          const onPath = yield* FaultProxy.make({
            upstream: targetOf(server.address),
            path: path.join(dir, "proxy.sock"),
            faults: { toClient: { slice: { maxBytes: 1 } } }
          })
          expect(onPath.address).toEqual(Endpoint.unix(path.join(dir, "proxy.sock")))
          const both = yield* Effect.flip(FaultProxy.make({ upstream: targetOf(server.address), path: path.join(dir, "p2.sock"), port: 0 }))
          expect(both).toMatchObject({ _tag: "InvalidOptions", operation: "listen" })
          expect(both.message).toContain("not both (got path and port)")
          for (const proxy of [onTcp, onPath]) {
            const connection = yield* Tcp.connect(to(transport, proxy.address))
            expect(yield* exchange(connection, "abcd")).toBe("ABCD")
            // With TLS the handshake's writes are sliced too.
            const sliced = (yield* proxy.stats).faults.slice
            if (transport.tls === undefined) expect(sliced).toBe(1)
            else expect(sliced).toBeGreaterThan(1)
          }
        }))
    }
  })

  live("examples/unix-echo.ts: server and client on a path, then the file is gone and a connect says so", () =>
    Effect.gen(function*() {
      const socketPath = path.join(yield* socketDir, "echo.sock")
      const example = yield* run("unix-echo", ["--path", socketPath])
      expect(yield* example.exitCode).toBe(0)
      expect(example.lines).toEqual([
        `listening on unix:${socketPath} (mode 660)`,
        "HELLO OVER A UNIX SOCKET",
        "socket file removed: true",
        `ConnectionRefused: connect to unix:${socketPath} failed: no socket at the path (ENOENT): is the server running, and is the path right?`
      ])
    }), 60_000)
})
