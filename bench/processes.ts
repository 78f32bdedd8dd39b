/**
 * The runner's side of a benchmark program: start it (through `sh`, to raise the open-files
 * limit for the connection storm), read the result lines it prints, keep a bounded tail of
 * everything else for error messages, and make sure it is gone afterwards.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { type Launcher, root } from "./launch.js"
import type { ClientJob, Implementation, Params, ServerJob } from "./programs/protocol.js"
import { linePrefix } from "./programs/protocol.js"

/** Raise the soft limit as far as the hard limit allows (65,536 at most), then become node. */
const raiseFdLimit = `ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@"`

/** How much of a program's stderr and stray stdout is kept for an error message. */
const tailBytes = 4096

const keepTail = (tail: string, more: string): string => {
  const joined = tail + more
  return joined.length > tailBytes ? joined.slice(joined.length - tailBytes) : joined
}

export interface Program {
  readonly name: string
  readonly child: ChildProcess
  /** Resolves with the first result line that has `key`, rejects if the program exits without one. */
  readonly message: <A>(key: string) => Promise<A>
  /** Resolves with the exit code, or the signal that ended it, once it exited and every pipe closed. */
  readonly closed: Promise<{ readonly code: number | null; readonly signal: NodeJS.Signals | null }>
  /** What the program wrote besides result lines: the end of its stderr and stray stdout. */
  readonly diagnostics: () => string
  readonly send: (line: string) => void
  readonly endInput: () => void
  /** SIGKILL unless it already exited, then wait until it is gone. */
  readonly kill: () => Promise<void>
}

const running = new Set<ChildProcess>()

/** Kills every program still running: for a runner that is interrupted. */
export const killRunning = (): void => {
  for (const child of running) child.kill("SIGKILL")
}

/** Starts `<implementation> <role> <job> <params>` with the repository as working directory. */
export const start = (
  launcher: Launcher,
  implementation: Implementation,
  role: "server" | "client",
  job: ServerJob | ClientJob,
  params: Params
): Program => {
  const name = `${implementation} ${role} ${job}`
  const child = spawn(
    "sh",
    ["-c", raiseFdLimit, "sh", process.execPath, ...launcher.args(implementation), role, job, JSON.stringify(params)],
    { cwd: root, stdio: ["pipe", "pipe", "pipe"] }
  )
  running.add(child)
  const messages: Array<Record<string, unknown>> = []
  const waiters = new Set<() => void>()
  let stray = ""
  let errors = ""
  let pending = ""
  let exited = false

  child.stdout!.setEncoding("utf8")
  child.stdout!.on("data", (text: string) => {
    pending += text
    for (let newline = pending.indexOf("\n"); newline >= 0; newline = pending.indexOf("\n")) {
      const line = pending.slice(0, newline)
      pending = pending.slice(newline + 1)
      if (line.startsWith(linePrefix)) {
        try {
          messages.push(JSON.parse(line.slice(linePrefix.length)))
        } catch {
          stray = keepTail(stray, `unparsable result line: ${line}\n`)
        }
      } else {
        stray = keepTail(stray, `${line}\n`)
      }
    }
    if (pending.length > tailBytes) {
      stray = keepTail(stray, pending)
      pending = ""
    }
    for (const wake of waiters) wake()
  })
  child.stderr!.setEncoding("utf8")
  child.stderr!.on("data", (text: string) => {
    errors = keepTail(errors, text)
  })
  // A program that exits early closes its stdin: writing to it then must not crash the runner.
  child.stdin!.on("error", () => {})

  const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once("close", (code, signal) => {
      exited = true
      running.delete(child)
      for (const wake of waiters) wake()
      resolve({ code, signal })
    })
  })
  // An error spawning `sh` itself arrives as 'error' and is followed by 'close'.
  child.once("error", (error) => {
    errors = keepTail(errors, `${error.message}\n`)
  })

  const diagnostics = () => [errors.trim(), stray.trim()].filter((s) => s.length > 0).join("\n")

  const message = <A>(key: string): Promise<A> =>
    new Promise<A>((resolve, reject) => {
      const check = () => {
        const found = messages.find((m) => key in m)
        if (found !== undefined) {
          waiters.delete(check)
          resolve(found[key] as A)
        } else if (exited) {
          waiters.delete(check)
          reject(new Error(`${name} exited without reporting "${key}"`))
        }
      }
      waiters.add(check)
      check()
    })

  return {
    name,
    child,
    message,
    closed,
    diagnostics,
    send: (line) => {
      child.stdin!.write(`${line}\n`)
    },
    endInput: () => {
      child.stdin!.end()
    },
    kill: async () => {
      if (!exited) child.kill("SIGKILL")
      await closed
    }
  }
}
