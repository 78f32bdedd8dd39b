/**
 * After every test: no socket, server, pending connect or DNS request, child process or timer
 * may be left that the test did not find when it started.
 */
import { afterEach, beforeEach } from "vitest"

const watched = new Set([
  "TCPSocketWrap",
  "TCPServerWrap",
  "TCPConnectWrap",
  "GetAddrInfoReqWrap",
  "ProcessWrap"
])

/**
 * Timers are followed one by one rather than counted: vitest's runner throttles its progress
 * reports with a 100 ms timer of its own that may start or fire at any point of a test, so a count
 * would see it as a leak, or let it hide one. The runner keeps its own reference to `setTimeout`,
 * so wrapping the global sees exactly the timers set by the test, the library and Effect.
 */
const timers = new Set<NodeJS.Timeout>()

const tracked = <F extends (...args: Array<any>) => NodeJS.Timeout>(set: F): F => {
  const wrapper = function(this: unknown, ...args: Parameters<F>) {
    const timer = set.apply(this, args)
    timers.add(timer)
    return timer
  }
  // Keeps `util.promisify.custom`, so `promisify(setTimeout)` still works.
  for (const key of Object.getOwnPropertySymbols(set)) {
    Object.defineProperty(wrapper, key, Object.getOwnPropertyDescriptor(set, key)!)
  }
  return wrapper as unknown as F
}

globalThis.setTimeout = tracked(globalThis.setTimeout)
globalThis.setInterval = tracked(globalThis.setInterval)

/** Node marks a timer `_destroyed` once it has fired (unless it repeats) or was cleared. */
const pending = (timer: NodeJS.Timeout) =>
  timer.hasRef() && !(timer as unknown as { readonly _destroyed: boolean })._destroyed

const census = (): Map<string, number> => {
  const counts = new Map<string, number>()
  for (const resource of process.getActiveResourcesInfo()) {
    if (watched.has(resource)) counts.set(resource, (counts.get(resource) ?? 0) + 1)
  }
  return counts
}

const excess = (before: Map<string, number>): Array<string> => {
  const after = census()
  const leaked: Array<string> = []
  for (const [resource, count] of after) {
    const extra = count - (before.get(resource) ?? 0)
    if (extra > 0) leaked.push(`${extra} ${resource}`)
  }
  let timersLeft = 0
  for (const timer of timers) {
    if (pending(timer)) timersLeft++
    else timers.delete(timer)
  }
  if (timersLeft > 0) leaked.push(`${timersLeft} Timeout`)
  return leaked
}

let baseline = new Map<string, number>()

beforeEach(() => {
  baseline = census()
  timers.clear()
})

afterEach(async () => {
  // Closing handles completes on a later turn of the event loop: give it a few turns.
  for (let turn = 0; turn < 200; turn++) {
    if (excess(baseline).length === 0) return
    await new Promise((resolve) => setImmediate(resolve))
  }
  throw new Error(`the test left resources open: ${excess(baseline).join(", ")}`)
})
