/**
 * Abuse: a line echo server with maxConnections, idleTimeout, a write deadline and a line deadline
 * (reliability/abuse-server.ts, in its own process) under slowloris connections, garbage,
 * connection floods past maxConnections and clients that never read, while well-behaved clients
 * that were connected before the attack keep being served. Their latency is compared with the same
 * clients before the attack, and the server's peak memory with the bound its settings imply.
 */
import * as Effect from "effect/Effect"
import { type ChildProcess, spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import * as net from "node:net"
import { fileURLToPath } from "node:url"
import type { Connection } from "../src/Connection.js"
import * as NodeTcp from "../src/NodeTcp.js"
import * as Tcp from "../src/Tcp.js"
import { limits } from "./abuse-limits.js"

export interface AbuseOptions {
  readonly slowloris: number
  readonly garbage: number
  readonly nonReaders: number
  /** Connections opened at once on top of the others: those past maxConnections are refused. */
  readonly flood: number
  readonly goodClients: number
  /** How long the well-behaved clients are measured before the attack; under it they run until every attacker is cut off. */
  readonly unloadedMillis: number
}

interface Latency {
  readonly p50: number
  readonly p99: number
  readonly max: number
  readonly requests: number
  readonly failed: number
}

export interface AbuseFigures {
  readonly options: AbuseOptions
  readonly unloaded: Latency
  readonly loaded: Latency
  /** New well-behaved connections once the attackers are gone. */
  readonly after: Latency
  /** Seconds from the start of the attack until the server held only the well-behaved connections. */
  readonly attackSeconds: number
  /** The flood past maxConnections, on its own after the attack: connections refused at once. */
  readonly flood: { readonly latency: Latency; readonly seconds: number; readonly rejected: number }
  readonly server: {
    readonly stats: Record<string, number>
    readonly failures: Record<string, number>
    readonly idleRssBytes: number
    readonly peakRssBytes: number
    readonly peakHeapUsedBytes: number
    readonly peakArrayBuffersBytes: number
    readonly rssBoundBytes: number
    readonly arrayBuffersBoundBytes: number
    readonly eventLoopDelayMillis: { readonly p99: number; readonly max: number }
  }
  readonly invariants: {
    /** Requests of well-behaved clients that failed or got a wrong answer, in any phase. */
    readonly goodRequestsFailed: number
    readonly peakRssOverBound: number
    readonly arrayBuffersOverBound: number
    readonly serverCrashed: number
    /** Attacking connections the server still held when the run stopped waiting (90 s). */
    readonly attackersNotCutOff: number
    /** 1 if the flood past maxConnections had no connection refused. */
    readonly floodNotRefused: number
  }
}

interface ServerProcess {
  readonly child: ChildProcess
  readonly port: number
  readonly idleRss: number
  readonly output: Array<string>
}

const startServer = Effect.acquireRelease(
  Effect.async<ServerProcess, Error>((resume) => {
    const file = fileURLToPath(new URL("./abuse-server.ts", import.meta.url))
    const child = spawn(process.execPath, ["--import", "tsx", file], { stdio: ["pipe", "pipe", "inherit"] })
    const output: Array<string> = []
    let started = false
    child.stdout!.on("data", (chunk: Buffer) => {
      output.push(...chunk.toString().split("\n").filter((line) => line.length > 0))
      const ready = output.find((line) => line.startsWith("listening "))
      if (ready && !started) {
        started = true
        const [, port, rss] = ready.split(" ")
        resume(Effect.succeed({ child, port: Number(port), idleRss: Number(rss), output }))
      }
    })
    child.once("exit", (code) => {
      if (!started) resume(Effect.fail(new Error(`abuse server exited with ${code} before listening`)))
    })
  }),
  ({ child }) =>
    Effect.async<void>((resume) => {
      if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
      child.once("exit", () => resume(Effect.void))
      child.kill("SIGKILL")
    })
)

const percentile = (sorted: ReadonlyArray<number>, q: number) =>
  Math.round((sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0) * 100) / 100

/** Sequential line requests on held connections, 10 ms apart, until `until` says stop; each answer is checked. */
const measure = (connections: ReadonlyArray<Connection>, until: () => boolean) =>
  Effect.gen(function*() {
    const latencies: Array<number> = []
    let failed = 0
    let firstError: string | undefined
    yield* Effect.forEach(
      connections,
      (connection, client) =>
        Effect.gen(function*() {
          for (let i = 0; !until(); i++) {
            const line = `client ${client} request ${i}`
            const started = performance.now()
            const answer = yield* connection.write(`${line}\n`).pipe(
              Effect.zipRight(connection.readUntil("\n")),
              Effect.either
            )
            if (answer._tag === "Right" && Buffer.from(answer.right).toString() === line) {
              latencies.push(performance.now() - started)
            } else {
              failed++
              firstError ??= answer._tag === "Left" ? `${answer.left._tag}: ${answer.left.message}` : "a wrong answer"
              return
            }
            yield* Effect.sleep("10 millis")
          }
        }),
      { concurrency: "unbounded", discard: true }
    )
    if (firstError) console.error(`a well-behaved client failed: ${firstError}`)
    latencies.sort((a, b) => a - b)
    return {
      p50: percentile(latencies, 0.5),
      p99: percentile(latencies, 0.99),
      max: percentile(latencies, 1),
      requests: latencies.length + failed,
      failed
    }
  })

const connectAll = (port: number, count: number) =>
  Effect.forEach(
    Array.from({ length: count }),
    () => Tcp.connect({ host: "127.0.0.1", port, readTimeout: "30 seconds" }),
    { concurrency: "unbounded" }
  )

/** The attackers use raw sockets: they are not the code under test. */
const attack = (port: number, options: AbuseOptions) => {
  const sockets: Array<net.Socket> = []
  const openRaw = (count: number, onConnect: (socket: net.Socket) => void) => {
    const opened: Array<net.Socket> = []
    for (let i = 0; i < count; i++) {
      const socket = net.connect({ port, host: "127.0.0.1" })
      socket.on("error", () => {})
      // Reads and discards what the server sends (but for the non-readers, which pause).
      socket.resume()
      socket.once("connect", () => onConnect(socket))
      opened.push(socket)
    }
    sockets.push(...opened)
    return opened
  }
  // Slowloris: a byte every second, never a whole line.
  const slow = openRaw(options.slowloris, () => {})
  const drip = setInterval(() => {
    for (const socket of slow) if (socket.writable) socket.write("x")
    for (const socket of flood) if (socket.writable) socket.write("x")
  }, 1000)
  // Garbage: random bytes; most 4 KiB runs hold a newline, some lines are over the limit.
  openRaw(options.garbage, (socket) => socket.write(randomBytes(4096)))
  // Many lines whose answers are never read: the server's writes block, and must stop at the deadline.
  const line = Buffer.concat([Buffer.alloc(999, "a"), Buffer.from("\n")])
  const lines = Buffer.concat(Array.from({ length: 8 * 1024 }, () => line))
  openRaw(options.nonReaders, (socket) => {
    socket.pause()
    socket.write(lines)
  })
  // A flood past maxConnections: each holds its slot (a byte a second keeps it from idling out)
  // until the line deadline, so that the server fills up whatever its pace of accepting; those
  // past the limit are closed at once.
  const flood = openRaw(options.flood, () => {})
  return {
    stop: () => {
      clearInterval(drip)
      sockets.forEach((socket) => socket.destroy())
    }
  }
}

/** How long the attack may take to be cut off before the run stops waiting and counts what is left. */
const attackLimitMillis = 90_000

/** The server's stats now: it answers a line on its stdin with `stats {json}`. */
const serverStats = (server: ServerProcess) =>
  Effect.async<Record<string, number>>((resume) => {
    const seen = server.output.length
    const onData = () => {
      const line = server.output.slice(seen).find((line) => line.startsWith("stats "))
      if (line === undefined) return
      server.child.stdout!.off("data", onData)
      resume(Effect.succeed(JSON.parse(line.slice("stats ".length))))
    }
    server.child.stdout!.on("data", onData)
    server.child.stdin!.write("\n")
    return Effect.sync(() => server.child.stdout!.off("data", onData))
  })

const stopServer = (server: ServerProcess) =>
  Effect.async<string, Error>((resume) => {
    const report = () => server.output.find((line) => line.startsWith("{"))
    server.child.stdout!.on("data", () => {
      const line = report()
      if (line) resume(Effect.succeed(line))
    })
    server.child.once("exit", (code, signal) => {
      const line = report()
      resume(line ? Effect.succeed(line) : Effect.fail(new Error(`abuse server exited with ${code ?? signal}`)))
    })
    server.child.kill("SIGTERM")
  })

export const runAbuse = (options: AbuseOptions): Effect.Effect<AbuseFigures, Error> =>
  Effect.scoped(Effect.gen(function*() {
    const server = yield* startServer
    const good = yield* connectAll(server.port, options.goodClients)
    const unloadedUntil = Date.now() + options.unloadedMillis
    const unloaded = yield* measure(good, () => Date.now() > unloadedUntil)

    // Every attacker is cut off by a limit (the line deadline is the longest), so the server ends
    // up with the well-behaved connections alone; its own count says when. Connections still in
    // the listen queue are not counted as active yet: it must also have seen every one.
    const underAttack = (kinds: AbuseOptions) =>
      Effect.gen(function*() {
        const before = yield* serverStats(server)
        const started = Date.now()
        const attacker = yield* Effect.acquireRelease(Effect.sync(() => attack(server.port, kinds)), (a) => Effect.sync(a.stop))
        const connections = (before.accepted ?? 0) + (before.rejected ?? 0) + kinds.slowloris + kinds.garbage +
          kinds.nonReaders + kinds.flood
        let ended = 0
        let stats = before
        const cutOff = Effect.gen(function*() {
          for (;;) {
            yield* Effect.sleep("250 millis")
            stats = yield* serverStats(server)
            const seen = (stats.accepted ?? 0) + (stats.rejected ?? 0)
            if ((seen >= connections && stats.active! <= options.goodClients) || Date.now() - started > attackLimitMillis) break
          }
          ended = Date.now()
        })
        const [latency] = yield* Effect.all([measure(good, () => ended > 0), cutOff], { concurrency: 2 })
        yield* Effect.sync(attacker.stop)
        return {
          latency,
          seconds: Math.round((ended - started) / 100) / 10,
          notCutOff: (stats.active ?? 0) - options.goodClients,
          rejected: (stats.rejected ?? 0) - (before.rejected ?? 0)
        }
      })
    const main = yield* underAttack({ ...options, flood: 0 })
    const flood = yield* underAttack({ ...options, slowloris: 0, garbage: 0, nonReaders: 0 })
    const loaded = main.latency
    const attackersNotCutOff = main.notCutOff + flood.notCutOff

    const fresh = yield* connectAll(server.port, options.goodClients)
    const afterUntil = Date.now() + options.unloadedMillis
    const after = yield* measure(fresh, () => Date.now() > afterUntil)

    const report = JSON.parse(yield* stopServer(server))
    const serverCrashed = report.stats === undefined ? 1 : 0
    // Per connection at most: 64 KiB queued before the socket pauses, Node's own 16 KiB, the chunk
    // being parsed (64 KiB) and one line; everything else is garbage not yet collected.
    const perConnectionBuffers = 64 * 1024 + 16 * 1024 + 64 * 1024 + limits.maxLineBytes
    const arrayBuffersBoundBytes = limits.maxConnections * perConnectionBuffers
    // The heap: a connection's objects (socket, fiber, buffers' headers) are a few KiB; V8 lets the
    // young and old generations grow to a few hundred MiB before it collects, whatever is live.
    const rssBoundBytes = server.idleRss + arrayBuffersBoundBytes + limits.maxConnections * 16 * 1024 + 256 * 2 ** 20
    return {
      options,
      unloaded,
      loaded,
      after,
      attackSeconds: main.seconds,
      flood: { latency: flood.latency, seconds: flood.seconds, rejected: flood.rejected },
      server: {
        stats: report.stats,
        failures: report.failures,
        idleRssBytes: server.idleRss,
        peakRssBytes: report.peakRssBytes,
        peakHeapUsedBytes: report.peakHeapUsedBytes,
        peakArrayBuffersBytes: report.peakArrayBuffersBytes,
        rssBoundBytes,
        arrayBuffersBoundBytes,
        eventLoopDelayMillis: report.eventLoopDelayMillis
      },
      invariants: {
        goodRequestsFailed: unloaded.failed + loaded.failed + flood.latency.failed + after.failed,
        peakRssOverBound: report.peakRssBytes > rssBoundBytes ? 1 : 0,
        arrayBuffersOverBound: report.peakArrayBuffersBytes > arrayBuffersBoundBytes ? 1 : 0,
        serverCrashed,
        attackersNotCutOff,
        floodNotRefused: flood.rejected > 0 ? 0 : 1
      }
    }
  }).pipe(Effect.provide(NodeTcp.layer)))
