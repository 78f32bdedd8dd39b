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
  "ProcessWrap",
  "Timeout"
])

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
  return leaked
}

let baseline = new Map<string, number>()

beforeEach(() => {
  baseline = census()
})

afterEach(async () => {
  // Closing handles completes on a later turn of the event loop: give it a few turns.
  for (let turn = 0; turn < 200; turn++) {
    if (excess(baseline).length === 0) return
    await new Promise((resolve) => setImmediate(resolve))
  }
  throw new Error(`the test left resources open: ${excess(baseline).join(", ")}`)
})
