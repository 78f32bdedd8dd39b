/**
 * A real `redis-server` as a test's peer: started on a free 127.0.0.1 port with persistence off,
 * ready once it answers PING, and killed when the scope closes. It can be frozen (SIGSTOP: the
 * kernel still completes handshakes and takes bytes, nothing answers) and thawed (SIGCONT).
 *
 * `startRedisTls` starts one that speaks only TLS, with the test certificates (test/support/certs.ts).
 *
 * When redis-server is not installed the test fails, saying so: CI installs it (`.ci/run`).
 */
import * as Effect from "effect/Effect"
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import * as tls from "node:tls"
import type { Certificates } from "./certs.js"
import { freePort, realSleep } from "./harness.js"

export interface Redis {
  readonly port: number
  /** SIGSTOP: the process stops answering, its sockets stay open. */
  readonly freeze: Effect.Effect<void>
  /** SIGCONT. */
  readonly thaw: Effect.Effect<void>
  /** Sends RESP commands on a connection of its own and resolves with the raw reply of the last. */
  readonly command: (...args: ReadonlyArray<string>) => Effect.Effect<string, Error>
  /** Clients connected now, from the server's own `INFO clients` (the asking connection not counted). */
  readonly connectedClients: Effect.Effect<number, Error>
}

/** A command as RESP: an array of bulk strings, as every Redis client sends it. */
export const resp = (...args: ReadonlyArray<string>): string =>
  `*${args.length}\r\n${args.map((arg) => `$${Buffer.byteLength(arg)}\r\n${arg}\r\n`).join("")}`

const installed = (): string | undefined => {
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    const candidate = path.join(dir, "redis-server")
    if (dir !== "" && fs.existsSync(candidate)) return candidate
  }
  return fs.existsSync("/usr/bin/redis-server") ? "/usr/bin/redis-server" : undefined
}

/**
 * One request on a fresh raw socket (TLS with `ca` trusted, when given): resolves with everything
 * up to the first complete reply.
 */
const ask = (port: number, request: string, complete: (reply: string) => boolean, ca?: string) =>
  Effect.async<string, Error>((resume) => {
    const socket = ca === undefined ? net.connect({ host: "127.0.0.1", port }) : tls.connect({ host: "127.0.0.1", port, ca })
    let reply = ""
    socket.on(ca === undefined ? "connect" : "secureConnect", () => socket.write(request))
    socket.on("data", (chunk: Buffer) => {
      reply += chunk.toString("latin1")
      if (complete(reply)) {
        socket.destroy()
        resume(Effect.succeed(reply))
      }
    })
    socket.on("error", (error) => {
      socket.destroy()
      resume(Effect.fail(error))
    })
    socket.on("close", () => resume(Effect.fail(new Error(`redis-server on port ${port} closed before answering`))))
    return Effect.sync(() => socket.destroy())
  })

/** Whether `reply` holds one whole RESP reply (simple line, or a bulk string of the length it announces). */
const wholeReply = (reply: string): boolean => {
  const end = reply.indexOf("\r\n")
  if (end < 0) return false
  if (reply[0] !== "$") return true
  const length = Number(reply.slice(1, end))
  return length < 0 || reply.length >= end + 2 + length + 2
}

const stop = (child: ChildProcess) =>
  Effect.async<void>((resume) => {
    if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
    child.once("exit", () => resume(Effect.void))
    // SIGKILL ends a stopped process too; SIGCONT first so that nothing is left stopped if it did not.
    child.kill("SIGCONT")
    child.kill("SIGKILL")
  })

/**
 * Starts one redis-server listening as `listenArgs(port)` says, on a free port, ready once `ping`
 * on that port answers PONG; a port taken meanwhile by someone else shows as an exit.
 */
const startOnce = (
  binary: string,
  listenArgs: (port: number) => ReadonlyArray<string>,
  ping: (port: number) => Effect.Effect<string, Error>
) =>
  Effect.gen(function*() {
    const port = yield* freePort
    let output = ""
    const child = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const child = spawn(binary, [
          ...listenArgs(port),
          "--bind", "127.0.0.1",
          "--save", "",
          "--appendonly", "no",
          "--daemonize", "no",
          "--loglevel", "warning"
        ], { stdio: ["ignore", "pipe", "pipe"] })
        const keep = (chunk: Buffer) => (output = (output + chunk.toString()).slice(-2000))
        child.stdout!.on("data", keep)
        child.stderr!.on("data", keep)
        child.on("error", (error) => (output += `\n${error.message}`))
        return child
      }),
      stop
    )
    for (let attempt = 0; attempt < 500; attempt++) {
      if (child.exitCode !== null || child.signalCode !== null) {
        return yield* Effect.fail(new Error(`redis-server exited (${child.exitCode ?? child.signalCode}): ${output}`))
      }
      const pong = yield* Effect.either(ping(port))
      if (pong._tag === "Right" && pong.right === "+PONG\r\n") return { port, child }
      yield* realSleep(10)
    }
    return yield* Effect.fail(new Error(`redis-server on port ${port} did not answer PING within 5 s: ${output}`))
  })

/** The redis-server binary, or a defect saying how to get it. */
const binary = Effect.suspend(() => {
  const found = installed()
  return found === undefined
    ? Effect.dieMessage(
      "redis-server is not installed: these tests need it as a real peer (apt-get install redis-server; .ci/run installs it)"
    )
    : Effect.succeed(found)
})

/** Starts redis-server for the scope. */
export const redisServer = Effect.gen(function*() {
  const { child, port } = yield* startOnce(
    yield* binary,
    (port) => ["--port", String(port)],
    (port) => ask(port, "PING\r\n", wholeReply)
  ).pipe(Effect.retry({ times: 2 }), Effect.orDie)
  const redis: Redis = {
    port,
    freeze: Effect.sync(() => void child.kill("SIGSTOP")),
    thaw: Effect.sync(() => void child.kill("SIGCONT")),
    command: (...args) => ask(port, resp(...args), wholeReply),
    connectedClients: Effect.map(
      ask(port, resp("INFO", "clients"), wholeReply),
      (info) => Number(/connected_clients:(\d+)/.exec(info)![1]) - 1
    )
  }
  return redis
})

/** A redis-server that speaks only TLS, with the test certificates. */
export interface RedisTls {
  /** The TLS port (the plaintext port is off). */
  readonly port: number
  /** Sends RESP commands over TLS (trusting the test CA) and resolves with the raw reply of the last. */
  readonly command: (...args: ReadonlyArray<string>) => Effect.Effect<string, Error>
}

/**
 * Starts redis-server for the scope with TLS only: `certs.server` as its certificate, client
 * certificates not asked for (`--tls-auth-clients no`). Debian's redis-server is built with TLS.
 */
export const startRedisTls = (certs: Certificates) =>
  Effect.gen(function*() {
    const { port } = yield* startOnce(
      yield* binary,
      (port) => [
        "--port", "0",
        "--tls-port", String(port),
        "--tls-cert-file", certs.server.certPath,
        "--tls-key-file", certs.server.keyPath,
        "--tls-ca-cert-file", certs.caPath,
        "--tls-auth-clients", "no"
      ],
      (port) => ask(port, "PING\r\n", wholeReply, certs.ca)
    ).pipe(Effect.retry({ times: 2 }), Effect.orDie)
    const redis: RedisTls = { port, command: (...args) => ask(port, resp(...args), wholeReply, certs.ca) }
    return redis
  })
