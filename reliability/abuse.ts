/**
 * Abuse: a server with maxConnections, idleTimeout, a write deadline and a line deadline, under
 * slowloris connections, garbage, connection floods and clients that never read, while
 * well-behaved clients are served. Their latency is compared with an unloaded run, and the
 * server's peak memory with the bound its settings imply.
 */
import * as Effect from "effect/Effect"
import { type ChildProcess, spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import * as net from "node:net"
import { fileURLToPath } from "node:url"
import * as NodeTcp from "../src/NodeTcp.js"
import * as Tcp from "../src/Tcp.js"
import { limits } from "./abuse-server.js"

export interface AbuseOptions {
  readonly slowloris: number
  readonly garbage: number
  readonly nonReaders: number
  readonly flood: number
  readonly goodClients: number
  readonly goodRequests: number
}

interface Latency {
  readonly p50: number
  readonly p99: number
  readonly requests: number
  readonly failed: number
}

export interface AbuseFigures {
  readonly options: AbuseOptions
  readonly unloaded: Latency
  readonly loaded: Latency
  readonly server: {
    readonly stats: Record<string, number>
    readonly failures: Record<string, number>
    readonly idleRssBytes: number
    readonly peakRssBytes: number
    readonly rssBoundBytes: number
  }
  readonly invariants: {
    readonly goodRequestsFailed: number
    readonly peakRssOverBound: number
    readonly serverCrashed: number
    readonly nonReadersNotCutOff: number
  }
}

const startServer = Effect.acquireRelease(
  Effect.async<{ child: ChildProcess; port: number; idleRss: number; output: Array<string> }, Error>((resume) => {
    const file = fileURLToPath(new URL("./abuse-server.ts", import.meta.url))
    const child = spawn(process.execPath, ["--import", "tsx", file], { stdio: ["ignore", "pipe", "inherit"] })
    const output: Array<string> = []
    child.stdout!.on("data", (chunk: Buffer) => {
      output.push(...chunk.toString().split("\n").filter((line) => line.length > 0))
      const ready = output.find((line) => line.startsWith("listening "))
      if (ready) {
        const [, port, rss] = ready.split(" ")
        resume(Effect.succeed({ child, port: Number(port), idleRss: Number(rss), output }))
      }
    })
    child.once("exit", (code) => resume(Effect.fail(new Error(`abuse server exited with ${code}`))))
  }),
  ({ child }) =>
    Effect.async<void>((resume) => {
      if (child.exitCode !== null) return resume(Effect.void)
      child.once("exit", () => resume(Effect.void))
      child.kill("SIGKILL")
    })
)

const percentile = (sorted: Array<number>, q: number) =>
  Math.round((sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0) * 100) / 100

const wellBehaved = (port: number, clients: number, requests: number) =>
  Effect.gen(function*() {
    const latencies: Array<number> = []
    let failed = 0
    let firstError: string | undefined
    yield* Effect.forEach(
      Array.from({ length: clients }, (_, i) => i),
      (client) =>
        Effect.scoped(Effect.gen(function*() {
          const connection = yield* Tcp.connect({ host: "127.0.0.1", port, readTimeout: "10 seconds" })
          for (let i = 0; i < requests; i++) {
            const line = `client ${client} request ${i}`
            const started = performance.now()
            const answer = yield* connection.write(`${line}\n`).pipe(
              Effect.zipRight(connection.readUntil("\n")),
              Effect.either
            )
            if (answer._tag === "Right" && Buffer.from(answer.right).toString() === line) {
              latencies.push(performance.now() - started)
            } else failed++
          }
        })).pipe(Effect.catchAll((error) => Effect.sync(() => { failed += requests; firstError ??= `${error._tag}: ${error.message}` }))),
      { concurrency: "unbounded", discard: true }
    )
    latencies.sort((a, b) => a - b)
    if (firstError) console.error(`a well-behaved client failed: ${firstError}`)
    return { p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99), requests: clients * requests, failed }
  }).pipe(Effect.provide(NodeTcp.layer))

/** Raw sockets for the attackers: they are not the code under test. */
const openRaw = (port: number, count: number, onOpen: (socket: net.Socket) => void) => {
  const sockets: Array<net.Socket> = []
  for (let i = 0; i < count; i++) {
    const socket = net.connect({ port, host: "127.0.0.1" })
    socket.on("error", () => {})
    socket.on("connect", () => onOpen(socket))
    sockets.push(socket)
  }
  return sockets
}

export const runAbuse = (options: AbuseOptions): Effect.Effect<AbuseFigures, Error> =>
  Effect.scoped(Effect.gen(function*() {
    const server = yield* startServer
    const unloaded = yield* wellBehaved(server.port, options.goodClients, options.goodRequests)

    const attackers: Array<net.Socket> = []
    yield* Effect.addFinalizer(() => Effect.sync(() => attackers.forEach((socket) => socket.destroy())))
    // Slowloris: one byte every second, never a whole line.
    const slow = openRaw(server.port, options.slowloris, () => {})
    const drip = setInterval(() => slow.forEach((socket) => socket.writable && socket.write("x")), 1000)
    yield* Effect.addFinalizer(() => Effect.sync(() => clearInterval(drip)))
    attackers.push(...slow)
    // Garbage: random bytes, mostly without a newline within the line limit.
    attackers.push(...openRaw(server.port, options.garbage, (socket) => socket.write(randomBytes(4096))))
    // Clients that send many lines and never read the answers: the server's writes must stop at a deadline.
    let nonReadersCutOff = 0
    attackers.push(...openRaw(server.port, options.nonReaders, (socket) => {
      socket.pause()
      socket.on("close", () => nonReadersCutOff++)
      // 8 MiB of valid 1000-byte lines: the echoes pile up on the server's side.
      const line = Buffer.concat([Buffer.alloc(999, "a"), Buffer.from("\n")])
      socket.write(Buffer.concat(Array.from({ length: 8 * 1024 }, () => line)))
    }))
    // A flood past maxConnections.
    attackers.push(...openRaw(server.port, options.flood, () => {}))

    yield* Effect.sleep("500 millis")
    const loaded = yield* wellBehaved(server.port, options.goodClients, options.goodRequests)
    // Give the deadlines time to act on every attacker.
    yield* Effect.sleep("6 seconds")

    const { child } = server
    const report = yield* Effect.async<string, Error>((resume) => {
      child.stdout!.on("data", () => {
        const line = server.output.find((line) => line.startsWith("{"))
        if (line) resume(Effect.succeed(line))
      })
      child.once("exit", (code) => {
        const line = server.output.find((line) => line.startsWith("{"))
        resume(line ? Effect.succeed(line) : Effect.fail(new Error(`abuse server exited with ${code}`)))
      })
      child.kill("SIGTERM")
    })
    const { failures, peakRssBytes, stats } = JSON.parse(report)
    // Per connection at most: Node's read buffer and write buffer (16 KiB each), one line, and bookkeeping.
    const perConnection = 16 * 1024 + 16 * 1024 + limits.maxLineBytes + 16 * 1024
    const rssBoundBytes = server.idleRss + limits.maxConnections * perConnection + 64 * 1024 * 1024
    return {
      options,
      unloaded,
      loaded,
      server: { stats, failures, idleRssBytes: server.idleRss, peakRssBytes, rssBoundBytes },
      invariants: {
        goodRequestsFailed: unloaded.failed + loaded.failed,
        peakRssOverBound: peakRssBytes > rssBoundBytes ? 1 : 0,
        serverCrashed: 0,
        nonReadersNotCutOff: options.nonReaders - nonReadersCutOff
      }
    }
  }))
