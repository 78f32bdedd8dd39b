/**
 * `npm run bench`: runs the scenarios for raw node:net (node:tls for the TLS ones), @effect/platform and effect-tcp, prints
 * the table and writes it into BENCHMARKS.md. Exits 1 if any run failed.
 *
 *   npm run bench -- [--rounds N] [--only <scenario,...>] [--impl <raw,platform,ours>] [--quick] [--no-write] [--tsx]
 */
import { writeFileSync } from "node:fs"
import { loadavg } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { removeCertificates } from "./certificates.js"
import { bundledLauncher, root, tsxLauncher } from "./launch.js"
import * as Network from "./network.js"
import { commandLine, parse, usage } from "./options.js"
import { killRunning } from "./processes.js"
import { benchmarksMarkdown, context, kernelNotes, lines, type RunInfo, table } from "./report.js"
import { runSuite } from "./suite.js"

const benchmarksFile = join(root, "BENCHMARKS.md")

const main = async (): Promise<number> => {
  const args = process.argv.slice(2)
  let options
  try {
    options = parse(args)
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n\n${usage}\n`)
    return 2
  }
  if (options.help) {
    process.stdout.write(`${usage}\n`)
    return 0
  }
  if (!Network.inOwnNamespace()) {
    const unshare = Network.findUnshare()
    if ("command" in unshare) {
      return Network.rerunInNamespace(unshare.command, ["--import", "tsx", fileURLToPath(import.meta.url), ...args])
    }
    process.stderr.write(`no network namespace of its own (${unshare.reason}): running on the host's loopback\n`)
  }
  const cap = Network.backlogCap()
  const storm = options.scenarios.find((s) => s.name === "storm")
  if (storm !== undefined && cap !== undefined) {
    const { connections, backlog } = storm.params(options.quick)
    if (cap < Math.min(connections, backlog)) {
      process.stderr.write(
        `warning: net.core.somaxconn is ${cap}: the storm's ${connections} connections may overflow the listen queue and wait for SYN retries\n`
      )
    }
  }

  const launcher = options.tsx ? tsxLauncher : await bundledLauncher()
  const interrupted = (signal: NodeJS.Signals) => () => {
    killRunning()
    launcher.dispose()
    removeCertificates()
    process.stderr.write(`\ninterrupted by ${signal}\n`)
    process.exit(signal === "SIGINT" ? 130 : 143)
  }
  process.once("SIGINT", interrupted("SIGINT"))
  process.once("SIGTERM", interrupted("SIGTERM"))
  try {
    const info: RunInfo = {
      command: commandLine(args),
      rounds: options.rounds,
      date: new Date(),
      programs: launcher.description,
      network: Network.describe(),
      loadAtStart: loadavg()[0]!
    }
    const result = await runSuite({ ...options, launcher }, (line) => process.stderr.write(`${line}\n`))
    const all = lines(result, options.implementations)
    process.stdout.write(`\n${context(result, info).join("\n")}\n\n${table(all)}\n`)
    const notes = kernelNotes(result)
    if (notes.length > 0) process.stdout.write(`\nKernel counters:\n${notes.join("\n")}\n`)
    if (options.write) {
      writeFileSync(benchmarksFile, benchmarksMarkdown(result, all, info))
      process.stdout.write(`\nwritten to BENCHMARKS.md\n`)
    }
    if (result.failures.length > 0) {
      process.stderr.write(`\n${result.failures.length} run(s) FAILED:\n${result.failures.join("\n\n")}\n`)
      return 1
    }
    return 0
  } finally {
    launcher.dispose()
  }
}

main().then(
  (code) => process.exit(code),
  (error) => {
    process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`)
    process.exit(1)
  }
)
