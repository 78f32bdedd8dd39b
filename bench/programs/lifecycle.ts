/**
 * The life of a benchmark process, the same for every implementation: read the job from argv,
 * tell the runner the port (servers) or wait for it (clients), report one result line, exit.
 * Only node: modules here, so that no implementation pays for another's imports.
 */
import { readFileSync } from "node:fs"
import type { ClientJob, ClientReport, Params, ServerJob, ServerReport } from "./protocol.js"
import { linePrefix } from "./protocol.js"

/** Every server listens here, and every client connects here: loopback only. */
export const host = "127.0.0.1"

/**
 * The Unix domain socket that servers listen on and clients connect to instead of `host`, when the
 * scenario's params name one (`socketPath`).
 */
export const socketPath: string | undefined = (() => {
  const params = process.argv[4]
  if (params === undefined) return undefined
  const parsed = JSON.parse(params) as { readonly socketPath?: string }
  return parsed.socketPath
})()

export type Invocation =
  | { readonly role: "server"; readonly job: ServerJob; readonly params: Params }
  | { readonly role: "client"; readonly job: ClientJob; readonly params: Params }

/** `<program> server|client <job> <params as JSON>` */
export const invocation = (): Invocation => {
  const [role, job, params] = process.argv.slice(2)
  if ((role !== "server" && role !== "client") || job === undefined || params === undefined) {
    throw new Error(`usage: <program> server|client <job> <params JSON>, got ${process.argv.slice(2).join(" ")}`)
  }
  return { role, job, params: JSON.parse(params) } as Invocation
}

const send = (value: unknown, then?: () => void): void => {
  process.stdout.write(`${linePrefix}${JSON.stringify(value)}\n`, then)
}

const lines = (): AsyncIterator<string> => {
  let buffered = ""
  const waiting: Array<(line: IteratorResult<string>) => void> = []
  const ready: Array<string> = []
  let ended = false
  process.stdin.setEncoding("utf8")
  process.stdin.on("data", (text: string) => {
    buffered += text
    for (let newline = buffered.indexOf("\n"); newline >= 0; newline = buffered.indexOf("\n")) {
      const line = buffered.slice(0, newline)
      buffered = buffered.slice(newline + 1)
      const next = waiting.shift()
      if (next) next({ value: line, done: false })
      else ready.push(line)
    }
  })
  process.stdin.on("end", () => {
    ended = true
    for (const next of waiting.splice(0)) next({ value: undefined, done: true })
  })
  return {
    next: () =>
      new Promise((resolve) => {
        const line = ready.shift()
        if (line !== undefined) resolve({ value: line, done: false })
        else if (ended) resolve({ value: undefined, done: true })
        else waiting.push(resolve)
      })
  }
}

let stdinLines: AsyncIterator<string> | undefined
const nextLine = () => (stdinLines ??= lines()).next()

/** Client: the server's port, which the runner writes to stdin once the server listens. */
export const awaitPort = async (): Promise<number> => {
  const line = await nextLine()
  if (line.done) throw new Error("stdin closed before the server's port arrived")
  return (JSON.parse(line.value) as { port: number }).port
}

/** Server: tells the runner where it listens. */
export const announcePort = (port: number): void => send({ port })

/** Server: resolves when the runner closes stdin, i.e. once the client has finished. */
export const awaitStop = (): Promise<void> =>
  new Promise((resolve) => {
    process.stdin.on("end", () => resolve())
    process.stdin.resume()
  })

/** The soft limit on open files, which the storm needs to be above its connection count. */
export const fdLimit = (): number | undefined => {
  try {
    const line = readFileSync("/proc/self/limits", "utf8").split("\n").find((l) => l.startsWith("Max open files"))
    const soft = line?.split(/\s{2,}/)[1]
    return soft === undefined || soft === "unlimited" ? undefined : Number(soft)
  } catch {
    return undefined
  }
}

/** The PEM text of the runner's certificates, read once, for a TLS scenario; undefined for plain TCP. */
export const tlsPem = (params: Params): { readonly ca: string; readonly cert: string; readonly key: string } | undefined =>
  params.tls === undefined ? undefined : {
    ca: readFileSync(params.tls.ca, "utf8"),
    cert: readFileSync(params.tls.cert, "utf8"),
    key: readFileSync(params.tls.key, "utf8")
  }

export const maxRssKiB = (): number => process.resourceUsage().maxRSS

export const rssKiB = (): number => Math.round(process.memoryUsage().rss / 1024)

/** Reports the client's result and exits 0. */
export const finishClient = (report: Omit<ClientReport, "maxRssKiB" | "fdLimit">): void =>
  send({ client: { ...report, maxRssKiB: maxRssKiB(), fdLimit: fdLimit() } satisfies ClientReport }, () =>
    process.exit(0))

/** Reports the server's result and exits 0. */
export const finishServer = (
  report: Omit<ServerReport, "maxRssKiB" | "fdLimit">
): void =>
  send({ server: { ...report, maxRssKiB: maxRssKiB(), fdLimit: fdLimit() } satisfies ServerReport }, () =>
    process.exit(0))

/** Any failure ends the process with its message on stderr and exit code 1: the runner reports it. */
export const fail = (error: unknown): never => {
  process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`)
  process.exit(1)
}

const origin = process.hrtime.bigint()

/** Nanoseconds since the process started, as a number (exact for 104 days). */
export const now = (): number => Number(process.hrtime.bigint() - origin)

export const seconds = (fromNanos: number, toNanos: number): number => (toNanos - fromNanos) / 1e9

/** Latency of each round trip, in nanoseconds, kept in one preallocated array. */
export class Latencies {
  private readonly samples: Float64Array
  private count = 0

  constructor(capacity: number) {
    this.samples = new Float64Array(capacity)
  }

  record(nanos: number): void {
    this.samples[this.count++] = nanos
  }

  get recorded(): number {
    return this.count
  }

  /** The median and 99th percentile in microseconds (nearest rank). */
  summary(): { readonly p50Micros: number; readonly p99Micros: number } {
    const sorted = this.samples.slice(0, this.count).sort()
    const at = (p: number) => sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]! / 1000
    return { p50Micros: at(0.5), p99Micros: at(0.99) }
  }
}
