/**
 * The command line of `npm run bench`.
 */
import type { Implementation } from "./programs/protocol.js"
import { type Scenario, scenarioNames, scenarios } from "./scenarios.js"

export interface Options {
  readonly rounds: number
  readonly scenarios: ReadonlyArray<Scenario>
  readonly implementations: ReadonlyArray<Implementation>
  readonly quick: boolean
  readonly write: boolean
  /** Run the programs from source with `node --import tsx` instead of bundles. */
  readonly tsx: boolean
  readonly help: boolean
}

const implementations: ReadonlyArray<Implementation> = ["raw", "platform", "ours"]

export const usage = `usage: npm run bench -- [--rounds N] [--only <scenario,...>] [--impl <raw,platform,ours>] [--quick] [--no-write] [--tsx]

  --rounds N        runs of each row (default 5)
  --only a,b        scenarios: ${scenarioNames.join(", ")}
  --impl a,b        implementations: ${implementations.join(", ")}
  --quick           tiny sizes, to check that everything runs
  --no-write        print the table only, leave BENCHMARKS.md alone
  --tsx             run the programs from source with node --import tsx instead of bundling them
                    (slower start-up, not measured; adds the loader's memory to every RSS figure)`

const list = <A extends string>(option: string, value: string | undefined, allowed: ReadonlyArray<A>): Array<A> => {
  const names = (value ?? "").split(",").map((s) => s.trim()).filter((s) => s.length > 0)
  if (names.length === 0) throw new Error(`${option} needs a comma-separated list of: ${allowed.join(", ")}`)
  for (const name of names) {
    if (!allowed.includes(name as A)) throw new Error(`${option}: unknown "${name}"; choose from ${allowed.join(", ")}`)
  }
  return names as Array<A>
}

/** Parses the arguments after `npm run bench --`; throws with a message for anything unknown. */
export const parse = (args: ReadonlyArray<string>): Options => {
  let rounds = 5
  let only: ReadonlyArray<string> = scenarioNames
  let impl: ReadonlyArray<Implementation> = implementations
  let quick = false
  let write = true
  let tsx = false
  let help = false
  for (let i = 0; i < args.length; i++) {
    const [flag, inline] = args[i]!.split(/=(.*)/s, 2) as [string, string | undefined]
    const value = () => inline ?? args[++i]
    switch (flag) {
      case "--rounds": {
        const text = value()
        rounds = Number(text)
        if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`--rounds needs a positive integer, got ${text}`)
        break
      }
      case "--only":
        only = list("--only", value(), scenarioNames)
        break
      case "--impl":
        impl = list("--impl", value(), implementations)
        break
      case "--quick":
        quick = true
        break
      case "--no-write":
        write = false
        break
      case "--tsx":
        tsx = true
        break
      case "--help":
      case "-h":
        help = true
        break
      default:
        throw new Error(`unknown option ${args[i]}`)
    }
  }
  return {
    rounds,
    scenarios: scenarios.filter((s) => only.includes(s.name)),
    implementations: implementations.filter((i) => impl.includes(i)),
    quick,
    write,
    tsx,
    help
  }
}

/** The command as the user typed it, for BENCHMARKS.md. */
export const commandLine = (args: ReadonlyArray<string>): string => {
  const quoted = args.map((arg) => (/^[\w,.=/:-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`))
  if (process.env.npm_lifecycle_event === "bench") {
    return quoted.length === 0 ? "npm run bench" : `npm run bench -- ${quoted.join(" ")}`
  }
  return ["npx tsx bench/run.ts", ...quoted].join(" ")
}
