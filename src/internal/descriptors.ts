/**
 * Whether this process can open another file descriptor. There is no call that says so: the
 * only way to know is to open one (/dev/null) and close it at once.
 */
import * as fs from "node:fs"

/** The system's code when no descriptor can be opened now (EMFILE: this process's limit, ENFILE: the system's). */
export type Exhaustion = "EMFILE" | "ENFILE"

/** @internal */
export const exhausted = (): Exhaustion | undefined => {
  let fd: number
  try {
    fd = fs.openSync("/dev/null", "r")
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    return code === "EMFILE" || code === "ENFILE" ? code : undefined
  }
  fs.closeSync(fd)
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
