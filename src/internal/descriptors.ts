/**
 * Whether this process can open another file descriptor. There is no call that says so: the
 * only way to know is to open one (/dev/null) and close it at once.
 */
import * as fs from "node:fs"

/** The system's code when no descriptor can be opened now (EMFILE: this process's limit, ENFILE: the system's). */
export type Exhaustion = "EMFILE" | "ENFILE"

/**
 * Whether fewer than `room` more descriptors can be opened now (a name lookup needs several:
 * /etc/hosts, nsswitch.conf, resolv.conf, a socket to the nameserver).
 *
 * @internal
 */
export const exhausted = (room = 1): Exhaustion | undefined => {
  const opened: Array<number> = []
  try {
    while (opened.length < room) opened.push(fs.openSync("/dev/null", "r"))
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === "EMFILE" || code === "ENFILE") return code
  } finally {
    for (const fd of opened) fs.closeSync(fd)
  }
  return undefined
}

let limit: number | undefined | null = null

/** This process's soft limit on open descriptors, read once from /proc/self/limits (Linux); undefined elsewhere. */
export const softLimit = (): number | undefined => {
  if (limit === null) {
    try {
      const found = /^Max open files\s+(\d+)/m.exec(fs.readFileSync("/proc/self/limits", "utf8"))
      limit = found ? Number(found[1]) : undefined
    } catch {
      limit = undefined
    }
  }
  return limit
}
