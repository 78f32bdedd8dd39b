/**
 * Runs the scenarios: for each round, each scenario, each row in turn (raw, platform, ours, raw,
 * ...), a fresh server process and a fresh client process, so that no run inherits another's heap
 * or JIT state and slow drifts of the machine spread over every row alike.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { type Certificates, makeCertificates } from "./certificates.js"
import type { Launcher } from "./launch.js"
import { type Program, start } from "./processes.js"
import type { ClientReport, Implementation, Params, ServerReport } from "./programs/protocol.js"
import type { RunReport, Scenario, Variant } from "./scenarios.js"

export interface SuiteOptions {
  readonly rounds: number
  readonly scenarios: ReadonlyArray<Scenario>
  readonly implementations: ReadonlyArray<Implementation>
  readonly quick: boolean
  readonly launcher: Launcher
  /** Runs at a time; 1 (the default) for any figure that means something. */
  readonly concurrency?: number
}

/** One run: its report, or why it failed. */
export type RunOutcome =
  | { readonly ok: true; readonly round: number; readonly report: RunReport }
  | { readonly ok: false; readonly round: number; readonly error: string }

export interface VariantResult {
  readonly variant: Variant
  readonly runs: ReadonlyArray<RunOutcome>
}

export interface ScenarioResult {
  readonly scenario: Scenario
  readonly params: Params
  readonly variants: ReadonlyArray<VariantResult>
}

export interface SuiteResult {
  readonly scenarios: ReadonlyArray<ScenarioResult>
  readonly wallSeconds: number
  readonly failures: ReadonlyArray<string>
}

export type Progress = (line: string) => void

/** A counter from /proc/net (of this network namespace); undefined where it cannot be read. */
const kernelCounter = (file: string, section: string, name: string): number | undefined => {
  try {
    const lines = readFileSync(file, "utf8").split("\n").filter((line) => line.startsWith(`${section}:`))
    const names = lines[0]?.split(/\s+/) ?? []
    const values = lines[1]?.split(/\s+/) ?? []
    const at = names.indexOf(name)
    return at > 0 ? Number(values[at]) : undefined
  } catch {
    return undefined
  }
}

const kernelCounters = () => ({
  listenOverflows: kernelCounter("/proc/net/netstat", "TcpExt", "ListenOverflows") ?? 0,
  retransmits: kernelCounter("/proc/net/snmp", "Tcp", "RetransSegs") ?? 0
})

const describeExit = (exit: { code: number | null; signal: NodeJS.Signals | null }) =>
  exit.signal === null ? `exit code ${exit.code}` : `signal ${exit.signal}`

const withDeadline = <A>(promise: Promise<A>, deadline: Promise<never>): Promise<A> => Promise.race([promise, deadline])

/**
 * One client against one server. Fails (with the programs' stderr) unless both report, both exit
 * 0 and the totals are complete.
 */
export const runOnce = async (
  launcher: Launcher,
  scenario: Scenario,
  variant: Variant,
  scenarioParams: Params,
  timeoutMillis: number
): Promise<RunReport> => {
  const programs: Array<Program> = []
  // Overlapping runs of a Unix scenario must not share a path: the second server would find it taken.
  const socketDirectory = scenario.unixSocket === true ? mkdtempSync(join(tmpdir(), "effect-tcp-bench-unix-")) : undefined
  const params = socketDirectory === undefined ? scenarioParams : { ...scenarioParams, socketPath: join(socketDirectory, "echo.sock") }
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMillis / 1000} s`)), timeoutMillis)
  })
  deadline.catch(() => {})
  const failure = (error: unknown) => {
    const lines = [error instanceof Error ? error.message : String(error)]
    for (const program of programs) {
      const diagnostics = program.diagnostics()
      if (diagnostics.length > 0) lines.push(`${program.name} said:\n${diagnostics.replace(/^/gm, "  ")}`)
    }
    return new Error(lines.join("\n"))
  }
  try {
    const server = start(launcher, variant.server.implementation, "server", variant.server.job, params)
    programs.push(server)
    // Both start together (process start-up is not measured); the client waits for the port.
    const client = start(launcher, variant.client.implementation, "client", variant.client.job, params)
    programs.push(client)
    const before = kernelCounters()
    const port = await withDeadline(server.message<number>("port"), deadline)
    client.send(JSON.stringify({ port }))
    // A server that dies mid-run could leave the client waiting forever: that ends the run at once.
    const serverDied = server.closed.then((exit) => {
      throw new Error(`the server ended with ${describeExit(exit)} before the client finished`)
    })
    serverDied.catch(() => {})
    const clientReport = await withDeadline(Promise.race([client.message<ClientReport>("client"), serverDied]), deadline)
    const clientExit = await withDeadline(client.closed, deadline)
    const after = kernelCounters()
    server.endInput()
    const serverReport = await withDeadline(server.message<ServerReport>("server"), deadline)
    const serverExit = await withDeadline(server.closed, deadline)
    if (clientExit.code !== 0) throw new Error(`the client ended with ${describeExit(clientExit)}`)
    if (serverExit.code !== 0) throw new Error(`the server ended with ${describeExit(serverExit)}`)
    const report: RunReport = {
      client: clientReport,
      server: serverReport,
      exitCodes: { client: clientExit.code, server: serverExit.code },
      listenOverflows: after.listenOverflows - before.listenOverflows,
      retransmits: after.retransmits - before.retransmits
    }
    if (!(clientReport.seconds > 0) || !Number.isFinite(clientReport.seconds)) {
      throw new Error(`the client measured ${clientReport.seconds} s`)
    }
    const problem = scenario.verify(report, params)
    if (problem !== undefined) throw new Error(`incomplete: ${problem}`)
    return report
  } catch (error) {
    throw failure(error)
  } finally {
    clearTimeout(timer)
    await Promise.all(programs.map((program) => program.kill()))
    if (socketDirectory !== undefined) rmSync(socketDirectory, { recursive: true, force: true })
  }
}

const formatRun = (scenario: Scenario, report: RunReport, baseline: RunReport | undefined): string => {
  const measure = scenario.measures[0]!
  const value = measure.value(report, baseline)
  return value === undefined ? "" : `${value.toFixed(measure.decimals)} ${measure.label}`
}

/**
 * Runs every round of every scenario and row; a failed run is recorded, and the others go on.
 * With `concurrency` above 1 several runs overlap, which spoils the figures: only for smoke tests.
 * The TLS scenarios get certificates made for this suite, removed at its end.
 */
export const runSuite = async (options: SuiteOptions, progress: Progress = () => {}): Promise<SuiteResult> => {
  const certificates = options.scenarios.some((scenario) => scenario.tls === true) ? makeCertificates() : undefined
  try {
    return await runPlanned(options, progress, certificates)
  } finally {
    certificates?.dispose()
  }
}

const runPlanned = async (
  options: SuiteOptions,
  progress: Progress,
  certificates: Certificates | undefined
): Promise<SuiteResult> => {
  const started = process.hrtime.bigint()
  const timeoutMillis = options.quick ? 30_000 : 180_000
  const plan = options.scenarios.map((scenario) => ({
    scenario,
    params: scenario.tls === true
      ? { ...scenario.params(options.quick), tls: certificates!.files }
      : scenario.params(options.quick),
    variants: scenario.variants
      .filter((variant) => options.implementations.includes(variant.implementation))
      .map((variant) => ({ variant, runs: [] as Array<RunOutcome> }))
  }))
  // Interleaved: each round runs every scenario's rows in turn.
  const queue = Array.from({ length: options.rounds }, (_, i) => i + 1).flatMap((round) =>
    plan.flatMap((scenarioPlan) => scenarioPlan.variants.map((entry) => ({ round, scenarioPlan, entry })))
  )
  const failures: Array<string> = []
  const total = queue.length
  let next = 0
  const worker = async () => {
    while (next < queue.length) {
      const { round, scenarioPlan: { scenario, params, variants }, entry } = queue[next++]!
      const name = `[${next}/${total}] round ${round} ${scenario.name} ${entry.variant.label}`
      const runStarted = process.hrtime.bigint()
      try {
        const report = await runOnce(options.launcher, scenario, entry.variant, params, timeoutMillis)
        entry.runs.push({ ok: true, round, report })
        const baseline = variants.find((v) => v.variant.id === scenario.baseline)?.runs.find((r) => r.round === round)
        const elapsed = Number(process.hrtime.bigint() - runStarted) / 1e9
        const kernel = [
          report.listenOverflows > 0 ? `, ${report.listenOverflows} listen overflows` : "",
          report.retransmits > 0 ? `, ${report.retransmits} retransmitted segments` : ""
        ].join("")
        progress(`${name}: ${formatRun(scenario, report, baseline?.ok ? baseline.report : undefined)} (${elapsed.toFixed(1)} s${kernel})`)
      } catch (error) {
        const message = error instanceof Error ? error.message : String(error)
        entry.runs.push({ ok: false, round, error: message })
        failures.push(`${name} FAILED: ${message}`)
        progress(`${name} FAILED: ${message}`)
      }
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, options.concurrency ?? 1) }, worker))
  for (const { variants } of plan) for (const { runs } of variants) runs.sort((a, b) => a.round - b.round)
  return {
    scenarios: plan,
    wallSeconds: Number(process.hrtime.bigint() - started) / 1e9,
    failures
  }
}
