/**
 * The suite runs in a network namespace of its own when the system allows it (`unshare --net`,
 * as root or inside a user namespace): there the kernel's cap on listen backlogs
 * (`net.core.somaxconn`, often 4096) can be raised for the storm's 5,000 pending connections
 * without touching the host's settings, so that the storm measures the implementations rather
 * than SYN retries; and the /proc/net counters read around each run count this suite's
 * connections only. Otherwise it runs on the host's loopback and says so.
 */
import { spawn, spawnSync } from "node:child_process"
import { readFileSync } from "node:fs"

const marker = "EFFECT_TCP_BENCH_NETNS"

/** The backlog cap set inside the namespace. */
const somaxconn = 65535

// `ip` and `sysctl` live in sbin, which an unprivileged PATH may lack.
const env = { ...process.env, PATH: [process.env.PATH, "/usr/sbin", "/sbin", "/usr/bin", "/bin"].join(":") }

const setup = `ip link set lo up && sysctl -qw net.core.somaxconn=${somaxconn}`

/** Whether this process already runs in the suite's own namespace. */
export const inOwnNamespace = (): boolean => process.env[marker] === "1"

/** The kernel's cap on listen backlogs in this network namespace. */
export const backlogCap = (): number | undefined => {
  try {
    return Number(readFileSync("/proc/sys/net/core/somaxconn", "utf8").trim())
  } catch {
    return undefined
  }
}

export const describe = (): string => {
  const cap = backlogCap()
  const where = inOwnNamespace() ? "a network namespace of its own (loopback only)" : "the host's loopback"
  return cap === undefined ? where : `${where}, net.core.somaxconn ${cap}`
}

/** An `unshare` command that can create a namespace and raise the cap in it, or why there is none. */
export const findUnshare = (): { readonly command: ReadonlyArray<string> } | { readonly reason: string } => {
  if (process.platform !== "linux") return { reason: "network namespaces are Linux only" }
  const candidates: Array<ReadonlyArray<string>> = [["unshare", "--net"], ["unshare", "--map-root-user", "--net"]]
  const failures: Array<string> = []
  for (const command of process.getuid?.() === 0 ? candidates : candidates.slice(1)) {
    const probe = spawnSync(command[0]!, [...command.slice(1), "--", "sh", "-ec", `${setup}; cat /proc/sys/net/core/somaxconn`], {
      env,
      encoding: "utf8",
      timeout: 10_000
    })
    if (probe.status === 0 && Number(probe.stdout.trim()) === somaxconn) return { command }
    failures.push(`${command.join(" ")}: ${(probe.error?.message ?? `${probe.stdout}${probe.stderr}`.trim()) || "failed"}`)
  }
  return { reason: failures.join("; ") }
}

/**
 * Runs `node <args>` again inside a new namespace, with its loopback up and the cap raised, and
 * resolves with its exit code. Interrupting this process interrupts that one.
 */
export const rerunInNamespace = (unshare: ReadonlyArray<string>, args: ReadonlyArray<string>): Promise<number> =>
  new Promise((resolve) => {
    const child = spawn(
      unshare[0]!,
      [...unshare.slice(1), "--", "sh", "-ec", `${setup}; exec "$@"`, "sh", process.execPath, ...args],
      { stdio: "inherit", env: { ...env, [marker]: "1" } }
    )
    const forward = (signal: NodeJS.Signals) => () => child.kill(signal)
    process.on("SIGINT", forward("SIGINT"))
    process.on("SIGTERM", forward("SIGTERM"))
    child.once("error", (error) => {
      process.stderr.write(`${error.message}\n`)
      resolve(1)
    })
    child.once("close", (code, signal) => resolve(code ?? (signal === null ? 1 : 128)))
  })
