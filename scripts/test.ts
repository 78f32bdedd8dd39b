/**
 * Runs `vitest run` (with this script's arguments) so that the suite sends no DNS query off the
 * machine. Some tests look up names under `.invalid` to get `DnsLookupFailed` from a real
 * getaddrinfo; through the system's resolver that would be a query to the nameserver of
 * /etc/resolv.conf. Instead a stub on a loopback address (test/support/dns-stub.ts) answers every
 * query NXDOMAIN, and vitest runs in a private mount namespace where /etc/resolv.conf is a file
 * naming only the stub: its workers and every process they start see that file, the host's file
 * is never touched.
 *
 * That takes root and `unshare --mount`; without them vitest runs as it is, and says so. The
 * stub's address is in EFFECT_TCP_TEST_DNS and a line per answered query (JSON) in the file
 * EFFECT_TCP_TEST_DNS_LOG, for test/dns.test.ts. The exit code (or signal) is vitest's.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import * as DnsStub from "../test/support/dns-stub.js"

const root = fileURLToPath(new URL("..", import.meta.url))
const vitest = [process.execPath, path.join(root, "node_modules", "vitest", "vitest.mjs"), "run", ...process.argv.slice(2)]

// Not 127.0.0.1 or 127.0.0.53, where local resolvers listen; the next ones if another run holds it
// (resolv.conf has no port: it must be 53).
const addresses = ["127.53.53.53", "127.53.53.54", "127.53.53.55", "127.53.53.56"]

interface Isolated {
  readonly command: ReadonlyArray<string>
  readonly env: NodeJS.ProcessEnv
  readonly cleanup: () => Promise<void>
}

const isolate = async (): Promise<Isolated | { readonly reason: string }> => {
  if (process.getuid?.() !== 0) return { reason: "not running as root, so /etc/resolv.conf cannot be replaced" }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "effect-tcp-dns-"))
  const resolvConf = path.join(dir, "resolv.conf")
  const queryLog = path.join(dir, "queries.log")
  fs.writeFileSync(queryLog, "")
  const failures: Array<string> = []
  let stub: DnsStub.DnsStub | undefined
  for (const host of addresses) {
    try {
      stub = await DnsStub.start({
        host,
        port: 53,
        onAnswer: ({ question, rcode }) => fs.appendFileSync(queryLog, `${JSON.stringify({ ...question, rcode })}\n`)
      })
      break
    } catch (error) {
      failures.push(`${host}:53: ${(error as Error).message}`)
    }
  }
  const cleanup = async () => {
    await stub?.close()
    fs.rmSync(dir, { recursive: true, force: true })
  }
  if (stub === undefined) {
    await cleanup()
    return { reason: `cannot start a DNS stub (${failures.join("; ")})` }
  }
  // One attempt, one second: a stub that stopped answering fails the lookups at once.
  fs.writeFileSync(resolvConf, `nameserver ${stub.host}\noptions attempts:1 timeout:1\n`)
  const inNamespace = [
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "--",
    "sh",
    "-c",
    `mount --bind "$0" /etc/resolv.conf && exec "$@"`,
    resolvConf
  ]
  const probe = spawnSync(inNamespace[0]!, [...inNamespace.slice(1), "true"], { encoding: "utf8", timeout: 10_000 })
  if (probe.status !== 0) {
    await cleanup()
    const output = probe.error?.message ?? `${probe.stdout}${probe.stderr}`.trim()
    return { reason: `\`unshare --mount\` with a bind mount failed: ${output || `exit ${probe.status}`}` }
  }
  return {
    command: [...inNamespace, ...vitest],
    env: { ...process.env, EFFECT_TCP_TEST_DNS: stub.host, EFFECT_TCP_TEST_DNS_LOG: queryLog },
    cleanup
  }
}

const isolated = await isolate()
if ("reason" in isolated) {
  console.warn(`npm test: names under .invalid will be resolved by the system resolver: ${isolated.reason}`)
}
// Only this script says whether the suite is isolated.
const { EFFECT_TCP_TEST_DNS: _, EFFECT_TCP_TEST_DNS_LOG: __, ...plainEnv } = process.env
const { command, env, cleanup }: Isolated = "reason" in isolated ?
  { command: vitest, env: plainEnv, cleanup: async () => {} } :
  isolated

// In a process group of its own, with its workers and whatever the tests start: a signal reaches
// all of them, as Ctrl-C would, and what vitest leaves running (it does not wait for its workers
// when it is sent SIGTERM) is killed when it exits. Outside the terminal's foreground group it
// must not read the terminal, hence no stdin.
const child: ChildProcess = spawn(command[0]!, command.slice(1), {
  cwd: root,
  env,
  stdio: ["ignore", "inherit", "inherit"],
  detached: true
})
const signalGroup = (signal: NodeJS.Signals) => {
  try {
    if (child.pid !== undefined) process.kill(-child.pid, signal)
  } catch {
    // ESRCH: no process left in the group.
  }
}
process.on("SIGINT", signalGroup)
process.on("SIGTERM", signalGroup)

let finished = false
const finish = async (code: number | null, signal: NodeJS.Signals | null) => {
  if (finished) return
  finished = true
  process.off("SIGINT", signalGroup)
  process.off("SIGTERM", signalGroup)
  signalGroup("SIGKILL")
  await cleanup()
  // Die of the same signal, so that whoever started us sees what happened to vitest.
  if (signal !== null) process.kill(process.pid, signal)
  else process.exitCode = code ?? 1
}
child.once("error", (error) => {
  console.error(`npm test: cannot start ${command[0]}: ${error.message}`)
  void finish(1, null)
})
child.once("exit", (code, signal) => void finish(code, signal))
