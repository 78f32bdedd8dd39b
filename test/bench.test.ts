/**
 * The benchmark suite at tiny sizes (`--quick --rounds 1 --no-write`): every scenario runs for every
 * implementation, every program exits 0 with complete totals, and every row of the table has a number.
 */
import { readdirSync } from "node:fs"
import { tmpdir } from "node:os"
import { expect, it } from "vitest"
import { bundledLauncher } from "../bench/launch.js"
import { parse } from "../bench/options.js"
import { lines, table } from "../bench/report.js"
import { scenarioNames } from "../bench/scenarios.js"
import { runSuite } from "../bench/suite.js"

it("the quick benchmark runs every scenario for every implementation, each process exiting 0, every row a number", async () => {
  const options = parse(["--quick", "--rounds", "1", "--no-write"])
  expect(options.write).toBe(false)
  const launcher = await bundledLauncher()
  try {
    // Three runs at a time: the figures mean nothing at these sizes anyway.
    const result = await runSuite({ ...options, launcher, concurrency: 3 })
    expect(result.failures).toEqual([])
    expect(result.scenarios.map((s) => s.scenario.name)).toEqual(scenarioNames)
    for (const { scenario, variants } of result.scenarios) {
      const implementations = new Set([...variants.map((v) => v.variant.implementation), ...scenario.notApplicable])
      expect([...implementations].sort(), scenario.name).toEqual(["ours", "platform", "raw"])
      for (const { variant, runs } of variants) {
        expect(runs, `${scenario.name} ${variant.label}`).toHaveLength(1)
        const run = runs[0]!
        if (!run.ok) throw new Error(`${scenario.name} ${variant.label}: ${run.error}`)
        expect(run.report.exitCodes, `${scenario.name} ${variant.label}`).toEqual({ client: 0, server: 0 })
      }
    }
    const rows = lines(result, options.implementations)
    for (const row of rows) {
      const where = `${row.scenario} ${row.row} ${row.measure}`
      if (row.value === "n/a") {
        expect(["raw node:net", "@effect/platform"], where).toContain(row.row)
        continue
      }
      expect(row.value, where).toBeDefined()
      expect(Number.isFinite(row.value!.median), where).toBe(true)
      // A difference (the cost of a borrow) may be negative at these sizes; everything else is a positive rate, time or size.
      if (row.measure !== "µs per borrow") expect(row.value!.median, where).toBeGreaterThan(0)
    }
    expect(table(rows)).not.toContain("FAILED")
  } finally {
    launcher.dispose()
  }
}, 90_000)

it("runs of the Unix scenario that overlap each get a socket path of their own, removed after the run", async () => {
  const options = parse(["--quick", "--rounds", "2", "--no-write", "--only", "rr-unix"])
  const launcher = await bundledLauncher()
  const before = new Set(readdirSync(tmpdir()).filter((name) => name.startsWith("effect-tcp-bench-unix-")))
  try {
    // Every run at once: with one path for the scenario, the servers after the first find it taken.
    const result = await runSuite({ ...options, launcher, concurrency: 4 })
    expect(result.failures).toEqual([])
    expect(result.scenarios.flatMap((s) => s.variants.flatMap((v) => v.runs)).filter((run) => run.ok)).toHaveLength(4)
    expect(readdirSync(tmpdir()).filter((name) => name.startsWith("effect-tcp-bench-unix-") && !before.has(name))).toEqual([])
  } finally {
    launcher.dispose()
  }
}, 60_000)
