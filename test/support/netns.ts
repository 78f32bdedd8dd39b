/**
 * Network namespaces for tests that need addresses other than loopback: each run gets a fresh,
 * empty namespace (`unshare --net`) in which only what its setup commands create exists, so no
 * packet can leave the machine. In it, a child `node --import tsx netns-connect.ts` runs the
 * library and reports what it got (see netns-connect.ts).
 *
 * As root the namespace is created directly; otherwise inside a new user namespace
 * (`unshare --map-root-user --net`), where the kernel allows that. When neither works, `support`
 * says why and the tests skip.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import type { Outcome, Scenario } from "./netns-connect.js"

export type { Outcome, Scenario } from "./netns-connect.js"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..")
const childScript = path.join(root, "test", "support", "netns-connect.ts")
// `ip` and `ss` live in sbin, which an unprivileged PATH may lack.
const env = { ...process.env, PATH: [process.env.PATH, "/usr/sbin", "/sbin", "/usr/bin", "/bin"].join(":") }

/** Runs `script` with sh in a new network namespace, synchronously (for the probes below). */
const probe = (unshare: ReadonlyArray<string>, script: string, ...args: Array<string>) => {
  const result = spawnSync(unshare[0]!, [...unshare.slice(1), "--", "sh", "-ec", script, ...args], {
    cwd: root,
    env,
    encoding: "utf8",
    timeout: 10_000
  })
  if (result.error) return { ok: false, output: result.error.message }
  return { ok: result.status === 0, output: `${result.stdout}${result.stderr}`.trim() }
}

// What the tests' setups do: bring up lo, add a route.
const basics = "ip link set lo up; ip route add unreachable 198.51.100.0/24"

const find = (): { readonly unshare: ReadonlyArray<string> } | { readonly reason: string } => {
  const candidates: Array<ReadonlyArray<string>> = [["unshare", "--net"], ["unshare", "--map-root-user", "--net"]]
  const failures: Array<string> = []
  for (const unshare of process.getuid?.() === 0 ? candidates : candidates.slice(1)) {
    const result = probe(unshare, basics)
    if (result.ok) return { unshare }
    failures.push(`\`${unshare.join(" ")}\`: ${result.output || "failed"}`)
  }
  return { reason: `cannot create a network namespace to route in (${failures.join("; ")})` }
}

const found = find()

/** How to create a namespace, or why it cannot be done here. */
export const support: { readonly available: true } | { readonly available: false; readonly reason: string } =
  "unshare" in found ? { available: true } : { available: false, reason: found.reason }

const unshare = "unshare" in found ? found.unshare : []

/** Whether IPv6 routes can be added in a namespace (no IPv6 in the kernel: no). */
export const ipv6Support: { readonly available: boolean; readonly reason: string } = (() => {
  if (!support.available) return { available: false, reason: support.reason }
  const result = probe(unshare, "ip link set lo up; ip -6 route add unreachable 2001:db8::/32")
  return { available: result.ok, reason: result.ok ? "" : `cannot add an IPv6 route: ${result.output}` }
})()

/** Whether veth pairs can be created in a namespace (the neighbour and SYN-SENT scenarios need one). */
export const vethSupport: { readonly available: boolean; readonly reason: string } = (() => {
  if (!support.available) return { available: false, reason: support.reason }
  const result = probe(unshare, "ip link add v0 type veth peer name v1")
  return { available: result.ok, reason: result.ok ? "" : `cannot create a veth pair: ${result.output}` }
})()

// Kills the client side of a loopback connection with `ss -K` and reports what the socket saw.
const destroyProbe = `
const net = require("node:net")
const { execFileSync } = require("node:child_process")
const server = net.createServer((socket) => socket.on("error", () => {})).listen(0, "127.0.0.1", () => {
  const port = server.address().port
  const socket = net.connect({ host: "127.0.0.1", port }, () => {
    try {
      execFileSync("ss", ["-K", "-tn", "sport", "=", ":" + socket.localPort, "dport", "=", ":" + port], { stdio: "pipe" })
    } catch (error) {
      console.log(String(error.message))
      process.exit(1)
    }
  })
  socket.on("data", () => {})
  socket.on("error", (error) => { console.log(error.code); process.exit(error.code === "ECONNABORTED" ? 0 : 1) })
  setTimeout(() => { console.log("the socket survived ss -K"); process.exit(1) }, 3000).unref()
})`

/**
 * Whether `ss -K` can destroy a socket here (iproute2's ss, a kernel with
 * CONFIG_INET_DIAG_DESTROY, CAP_NET_ADMIN in the namespace): the ConnectionAborted scenarios need it.
 */
export const socketDestroySupport: { readonly available: boolean; readonly reason: string } = (() => {
  if (!support.available) return { available: false, reason: support.reason }
  const result = probe(unshare, `ip link set lo up; exec "$0" -e "$1"`, process.execPath, destroyProbe)
  return { available: result.ok, reason: result.ok ? "" : `ss -K cannot destroy sockets here: ${result.output}` }
})()

const kill = (child: ChildProcess) =>
  Effect.async<void>((resume) => {
    if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
    child.once("exit", () => resume(Effect.void))
    child.kill("SIGKILL")
  })

/**
 * Creates a network namespace, runs the shell commands `setup` in it (`ip ...`; they fail the
 * run on error), then netns-connect.ts with `scenarios`, and resolves with one outcome per
 * scenario. The child is killed when the scope closes; no answer within `timeout` fails.
 */
export const runInNetns = (options: {
  readonly setup: ReadonlyArray<string>
  readonly scenarios: ReadonlyArray<Scenario>
  readonly timeout?: Duration.DurationInput
}): Effect.Effect<ReadonlyArray<Outcome>, Error, Scope.Scope> => {
  const script = ["set -e", ...options.setup, `exec "$0" --import tsx "$1" "$2"`].join("\n")
  let stdout = ""
  let stderr = ""
  const report = () => `stdout: ${JSON.stringify(stdout)}, stderr: ${JSON.stringify(stderr)}`
  return Effect.acquireRelease(
    Effect.sync(() =>
      spawn(
        unshare[0] ?? "unshare",
        [...unshare.slice(1), "--", "sh", "-c", script, process.execPath, childScript, JSON.stringify(options.scenarios)],
        { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] }
      )
    ),
    kill
  ).pipe(
    Effect.flatMap((child) =>
      Effect.async<ReadonlyArray<Outcome>, Error>((resume) => {
        const expected = options.scenarios.length
        if (expected === 0) return resume(Effect.succeed([]))
        child.stderr!.on("data", (chunk: Buffer) => {
          stderr += chunk.toString()
        })
        child.stdout!.on("data", (chunk: Buffer) => {
          stdout += chunk.toString()
          const lines = stdout.split("\n").slice(0, -1)
          if (lines.length < expected) return
          try {
            resume(Effect.succeed(lines.slice(0, expected).map((line) => JSON.parse(line) as Outcome)))
          } catch {
            resume(Effect.fail(new Error(`the child printed something else than JSON lines: ${report()}`)))
          }
        })
        child.once("error", (error) => resume(Effect.fail(new Error(`cannot start unshare: ${error.message}`))))
        // "close", not "exit": only then has everything the child printed been read.
        child.once("close", (code, signal) =>
          resume(Effect.fail(new Error(`the child exited (${signal ?? code}) before reporting: ${report()}`)))
        )
      })
    ),
    Effect.timeoutFail({
      duration: options.timeout ?? "20 seconds",
      onTimeout: () =>
        new Error(`the child in the namespace did not report within ${Duration.format(Duration.decode(options.timeout ?? "20 seconds"))}: ${report()}`)
    })
  )
}
