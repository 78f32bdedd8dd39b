/**
 * From runs to the table: the median of each measure over the rounds with its spread, the ratio
 * to the scenario's baseline row, the target and whether it was met; and BENCHMARKS.md, which
 * holds the table with the machine, the Node version, the date and the command that produced it.
 */
import * as os from "node:os"
import { implementationLabels, type Measure, type RunReport, type Scenario, scenarios } from "./scenarios.js"
import type { ScenarioResult, SuiteResult } from "./suite.js"

export interface Spread {
  readonly median: number
  readonly min: number
  readonly max: number
}

export const spread = (values: ReadonlyArray<number>): Spread | undefined => {
  if (values.length === 0) return undefined
  const sorted = [...values].sort((a, b) => a - b)
  const middle = sorted.length >> 1
  const median = sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2
  return { median, min: sorted[0]!, max: sorted[sorted.length - 1]! }
}

/** One line of the table: one measure of one row. */
export interface Line {
  readonly scenario: string
  readonly row: string
  readonly measure: string
  /** undefined when the row has no successful run; "n/a" when the implementation has no such row. */
  readonly value: Spread | "n/a" | undefined
  readonly decimals: number
  readonly ratio: number | undefined
  readonly target: string | undefined
  readonly met: boolean | undefined
  /** Median peak RSS of client and server, on the first line of each row. */
  readonly rss: string | undefined
}

const targetText = (measure: Measure): string | undefined =>
  measure.target === undefined ? undefined : `${measure.better === "higher" ? "≥" : "≤"} ${measure.target.toFixed(2)}`

const mebibytes = (kib: ReadonlyArray<number>) => {
  const s = spread(kib)
  return s === undefined ? "?" : (s.median / 1024).toFixed(0)
}

/** The values of `measure` in every successful run of a row, each with the baseline row's run of the same round. */
const valuesOf = (result: ScenarioResult, variantId: string, measure: Measure): Array<number> => {
  const baseline = result.variants.find((v) => v.variant.id === result.scenario.baseline)
  const row = result.variants.find((v) => v.variant.id === variantId)!
  const values: Array<number> = []
  for (const run of row.runs) {
    if (!run.ok) continue
    const paired = baseline?.runs.find((r) => r.round === run.round)
    const baselineReport: RunReport | undefined = paired?.ok ? paired.report : undefined
    const value = measure.value(run.report, variantId === result.scenario.baseline ? run.report : baselineReport)
    if (value !== undefined && Number.isFinite(value)) values.push(value)
  }
  return values
}

export const lines = (result: SuiteResult, implementations: ReadonlyArray<string>): Array<Line> => {
  const out: Array<Line> = []
  for (const scenarioResult of result.scenarios) {
    const { scenario } = scenarioResult
    const firstMeasure = scenario.measures[0]!
    for (const implementation of scenario.notApplicable) {
      if (!implementations.includes(implementation)) continue
      out.push({
        scenario: scenario.name,
        row: implementationLabels[implementation],
        measure: firstMeasure.label,
        value: "n/a",
        decimals: 0,
        ratio: undefined,
        target: undefined,
        met: undefined,
        rss: undefined
      })
    }
    for (const { variant, runs } of scenarioResult.variants) {
      const isBaseline = variant.id === scenario.baseline
      const ok = runs.filter((r) => r.ok)
      scenario.measures.forEach((measure, index) => {
        const values = valuesOf(scenarioResult, variant.id, measure)
        // A measure that does not apply to this row (such as the cost of a borrow on the held connection)
        // has no line; a row whose every run failed has one line, saying so.
        if (values.length === 0 && (ok.length > 0 || index > 0)) return
        const value = spread(values)
        const base = measure.ratio ? spread(valuesOf(scenarioResult, scenario.baseline, measure)) : undefined
        const ratio = value !== undefined && base !== undefined && base.median > 0 ? value.median / base.median : undefined
        const met = ratio === undefined || measure.target === undefined
          ? undefined
          : measure.better === "higher"
          ? ratio >= measure.target
          : ratio <= measure.target
        out.push({
          scenario: scenario.name,
          row: isBaseline ? `${variant.label} (baseline)` : variant.label,
          measure: measure.label,
          value,
          decimals: measure.decimals,
          ratio,
          target: isBaseline ? undefined : targetText(measure),
          met: isBaseline ? undefined : met,
          rss: index === 0 && ok.length > 0
            ? `${mebibytes(ok.map((r) => r.report.client.maxRssKiB))} / ${mebibytes(ok.map((r) => r.report.server.maxRssKiB))}`
            : undefined
        })
      })
    }
  }
  return out
}

const number = (value: number, decimals: number) =>
  value.toLocaleString("en-US", { minimumFractionDigits: decimals, maximumFractionDigits: decimals })

const headers = ["scenario", "implementation", "measure", "median", "min–max", "ratio", "target", "", "peak RSS MiB client / server"]

const cells = (line: Line): Array<string> => {
  const value = line.value
  return [
    line.scenario,
    line.row,
    line.measure,
    value === "n/a" ? "n/a" : value === undefined ? "FAILED" : number(value.median, line.decimals),
    value === "n/a" || value === undefined ? "" : `${number(value.min, line.decimals)}–${number(value.max, line.decimals)}`,
    line.ratio === undefined ? (value === "n/a" ? "n/a" : "") : line.ratio.toFixed(2),
    line.target ?? "",
    line.met === undefined ? "" : line.met ? "met" : "MISSED",
    line.rss ?? ""
  ]
}

/** A Markdown table, padded so that it also reads well in a terminal. */
export const table = (all: ReadonlyArray<Line>): string => {
  const rows = [headers, ...all.map(cells)]
  const widths = headers.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)))
  const numeric = new Set([3, 4, 5])
  const render = (row: ReadonlyArray<string>) =>
    `| ${row.map((cell, column) => (numeric.has(column) ? cell.padStart(widths[column]!) : cell.padEnd(widths[column]!))).join(" | ")} |`
  const rule = `|${widths.map((width, column) => (numeric.has(column) ? `${"-".repeat(width + 1)}:` : "-".repeat(width + 2))).join("|")}|`
  return [render(rows[0]!), rule, ...rows.slice(1).map(render)].join("\n")
}

export interface Machine {
  readonly cpu: string
  readonly cores: number
  readonly memoryGiB: number
  readonly system: string
  readonly node: string
}

export const machine = (): Machine => ({
  cpu: os.cpus()[0]?.model.trim() ?? "unknown CPU",
  cores: os.cpus().length,
  memoryGiB: os.totalmem() / 1024 ** 3,
  system: `${os.type()} ${os.release()} ${os.arch()}`,
  node: process.version
})

const duration = (seconds: number) => {
  const whole = Math.round(seconds)
  return whole < 60 ? `${whole} s` : `${Math.floor(whole / 60)} min ${whole % 60} s`
}

/** How a suite was run. */
export interface RunInfo {
  readonly command: string
  readonly rounds: number
  readonly date: Date
  readonly programs: string
  readonly network: string
  /** The machine's 1-minute load average when the suite started: other work running meanwhile shows here. */
  readonly loadAtStart: number
}

/** The machine and the run, one line each. */
export const context = (result: SuiteResult, info: RunInfo): Array<string> => {
  const m = machine()
  const rounds = `${info.rounds} round${info.rounds === 1 ? "" : "s"}`
  return [
    `- Machine: ${m.cpu}, ${m.cores} cores, ${m.memoryGiB.toFixed(1)} GiB memory, ${m.system}`,
    `- Node.js ${m.node}`,
    `- Date: ${info.date.toISOString().slice(0, 16).replace("T", " ")} UTC`,
    `- Command: \`${info.command}\` (${rounds}, wall time ${duration(result.wallSeconds)})`,
    `- Programs: ${info.programs}; network: ${info.network}`,
    `- Load average (1 minute) when the suite started and ended: ${info.loadAtStart.toFixed(1)} and ${os.loadavg()[0]!.toFixed(1)} (other work on the machine competes for its ${m.cores} cores)`
  ]
}

/** What the kernel counted during the runs that would distort them: dropped connections and retransmissions. */
export const kernelNotes = (result: SuiteResult): Array<string> => {
  const notes: Array<string> = []
  for (const { scenario, variants } of result.scenarios) {
    let overflows = 0
    let retransmits = 0
    for (const { runs } of variants) {
      for (const run of runs) {
        if (!run.ok) continue
        overflows += run.report.listenOverflows
        retransmits += run.report.retransmits
      }
    }
    if (overflows > 0 || retransmits > 0) {
      notes.push(`- ${scenario.name}: ${overflows} listen-queue overflows and ${retransmits} retransmitted segments during its runs.`)
    }
  }
  return notes
}

const scenarioSection = (scenario: Scenario): string => `- \`${scenario.name}\`: ${scenario.title}. ${scenario.description}`

/** The whole BENCHMARKS.md. */
export const benchmarksMarkdown = (result: SuiteResult, allLines: ReadonlyArray<Line>, info: RunInfo): string => {
  const notes = kernelNotes(result)
  return `# Benchmarks

effect-tcp side by side with raw \`node:net\` and with \`@effect/platform\`'s \`NodeSocket\` /
\`NodeSocketServer\` (Effect 3), on 127.0.0.1. Each implementation is written the way its
documentation shows, with the same chunk sizes and the same work; the programs are in
\`bench/programs/\` (\`raw.ts\`, \`platform.ts\`, \`ours.ts\`). The echo servers (echo, rr-seq,
rr-pipe, storm, pool) are \`socket.pipe(socket)\` for raw \`node:net\`, \`socket.run(write)\` for
\`@effect/platform\`, and a loop of \`read\` and \`write\` for effect-tcp; the storm has a row for
effect-tcp's \`connection.stream\` run into \`connection.sink\` as well. The TLS scenarios
(\`tls-download\`, \`tls-handshakes\`) compare effect-tcp with raw \`node:tls\` (\`@effect/platform\`'s
sockets have no TLS), with a CA and a server certificate for 127.0.0.1 (EC prime256v1) that the
runner makes with the \`openssl\` command line at the start of the suite and removes at its end;
the clients verify the server against that CA.

## How to run

\`\`\`sh
npm run bench                                              # every scenario, 5 rounds; rewrites this file
npm run bench -- --only rr-seq --rounds 3 --no-write       # one scenario, print only
npm run bench -- --only storm,framing --impl raw,ours --no-write
npm run bench -- --quick --rounds 1 --no-write             # tiny sizes: a smoke test of the harness
\`\`\`

| option | meaning |
| --- | --- |
| \`--rounds N\` | runs of each row (default 5); the table shows the median and the spread |
| \`--only a,b\` | only these scenarios: ${scenarios.map((s) => `\`${s.name}\``).join(", ")} |
| \`--impl a,b\` | only these implementations: \`raw\`, \`platform\`, \`ours\` (ratios need the baseline row) |
| \`--quick\` | a few MiB, a few hundred round trips, 50 connections: checks that everything runs |
| \`--no-write\` | print the table, leave BENCHMARKS.md alone |
| \`--tsx\` | run the programs from source with \`node --import tsx\` instead of bundles (slower start-up, not measured; the loader's memory in every RSS figure) |

The default run takes several minutes (the results below give their wall time). \`npm test\`
runs the quick variant once (\`test/bench.test.ts\`), three runs at a time.

## How it measures

- Every run is a fresh server process and a fresh client process, started together; the client
  starts once the server reports its port. The three programs are bundled with esbuild from the
  current sources at the start of the suite and run with \`node\` (\`--tsx\` runs them from source
  with \`node --import tsx\` instead): a bundle starts in about 0.2 s instead of over a second, and
  its memory is its own rather than the TypeScript loader's. Timing is taken inside the client
  with \`process.hrtime.bigint()\`, so process start-up and module loading are never measured.
- Runs are interleaved: round 1 runs every scenario's rows in turn (raw, platform, ours), then
  round 2, and so on, so that a slow moment of the machine does not fall on one implementation.
- Every receiver checks what it gets: the byte count, and the first, middle and last byte of each
  chunk against the position it must be at (each request and frame carries its index). The
  runner also checks the totals each side reports, and both exit codes; a run that falls short
  fails loudly, is shown as FAILED and makes the command exit 1.
- The table shows the median over the rounds and the min–max spread. The ratio is the median of a
  row over the median of the scenario's baseline row (raw \`node:net\`, except for \`pool\`, whose
  baseline is the held connection). The target applies to that ratio: at least the target for
  throughput, at most for times and memory.
- "peak RSS" is each process's \`process.resourceUsage().maxRSS\` (an idle Node process is about
  40 MiB): a number far above the others' points at buffering.
- The suite runs in a network namespace of its own when the system allows it (\`unshare --net\`,
  as root or in a user namespace), with \`net.core.somaxconn\` raised there: the servers listen
  with a backlog of 5,000, which the kernel otherwise caps (often at 4,096), and a full listen
  queue would make the storm measure SYN retries instead of the implementations. The host's
  settings are not touched. Listen-queue overflows and TCP retransmissions are read from
  \`/proc/net\` around each run and reported below the table when there were any (outside a
  namespace of its own they count the whole machine's connections).

## Scenarios

${scenarios.map(scenarioSection).join("\n")}

## Results

${context(result, info).join("\n")}

${table(allLines)}
${
    notes.length > 0
      ? `\nKernel counters (on loopback, retransmissions follow segments delivered out of order, which happens when the CPUs are contended; the run that suffers them loses throughput):\n\n${notes.join("\n")}\n`
      : ""
  }${
    result.failures.length > 0
      ? `\nFailed runs:\n\n${result.failures.map((f) => `- ${f.split("\n")[0]}`).join("\n")}\n`
      : ""
  }`
}
