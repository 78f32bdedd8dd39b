/**
 * The module map: every file of src/ loads when it is the first one imported (a public module and
 * its internal file must not need each other at load time), and no runtime import cycle joins
 * files of src/. The files are found by reading the directory, so a new one is covered at once.
 */
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { pathToFileURL } from "node:url"
import { describe, expect, it } from "vitest"

const root = path.resolve(import.meta.dirname, "..")
const src = path.join(root, "src")

const sourceFiles = (dir: string): Array<string> =>
  fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name)
    if (entry.isDirectory()) return sourceFiles(full)
    return entry.name.endsWith(".ts") ? [full] : []
  }).sort()

const files = sourceFiles(src)
const relative = (file: string) => path.relative(root, file)

/**
 * Runs in one Node process under tsx. A resolve hook gives each first import its own copy of
 * every module of src/ (a `?fresh=` query that the importer passes on to what it imports), so
 * each file is loaded as if it were the first in a new process; effect's modules stay shared.
 * Prints one JSON line: the error of each file that failed to load.
 */
const child = `
import { register } from "node:module"
const src = ${JSON.stringify(pathToFileURL(src).href + "/")}
const hook = \`
const src = \${JSON.stringify(src)}
export async function resolve(specifier, context, next) {
  const resolved = await next(specifier, context)
  const fresh = context.parentURL && new URL(context.parentURL).searchParams.get("fresh")
  if (fresh === null || fresh === undefined || !resolved.url.startsWith(src)) return resolved
  const url = new URL(resolved.url)
  url.searchParams.set("fresh", fresh)
  return { ...resolved, url: url.href }
}\`
register("data:text/javascript," + encodeURIComponent(hook))
const files = ${JSON.stringify(files.map((file) => pathToFileURL(file).href))}
const failures = {}
for (const [index, file] of files.entries()) {
  try {
    await import(file + "?fresh=" + index)
  } catch (error) {
    failures[file] = String(error)
  }
}
process.stdout.write(JSON.stringify(failures) + "\\n")
`

const loadEachFirst = () =>
  new Promise<Record<string, string>>((resolve, reject) => {
    execFile(
      process.execPath,
      ["--import", "tsx", "--input-type=module", "-e", child],
      { cwd: root, timeout: 60_000 },
      (error, stdout, stderr) => {
        if (error !== null) return reject(new Error(`the loading process failed: ${error.message}\n${stderr}`))
        resolve(JSON.parse(stdout))
      }
    )
  })

/** The files of src/ that `file` imports at run time: `import type` and `export type` load nothing. */
const runtimeImports = (file: string): Array<string> => {
  const text = fs.readFileSync(file, "utf8")
  const statements = text.matchAll(/^(?:import|export)\s+(type\s+)?(?:([^;"']*?)\s+from\s+)?["']([^"']+)["']/gm)
  const imported: Array<string> = []
  for (const [, typeOnly, clause, specifier] of statements) {
    if (typeOnly !== undefined || !specifier!.startsWith(".")) continue
    // `import { type A, type B } from`: only types, erased like `import type`.
    const names = clause?.match(/^\{([\s\S]*)\}$/)?.[1]?.split(",").map((name) => name.trim()).filter((name) => name !== "")
    if (names !== undefined && names.length > 0 && names.every((name) => name.startsWith("type "))) continue
    imported.push(path.resolve(path.dirname(file), specifier!.replace(/\.js$/, ".ts")))
  }
  return imported
}

/** Each cycle of the graph, as the path of files that closes it, found by a depth-first walk. */
const cyclesOf = (graph: ReadonlyMap<string, ReadonlyArray<string>>): Array<Array<string>> => {
  const done = new Set<string>()
  const onPath: Array<string> = []
  const cycles: Array<Array<string>> = []
  const visit = (file: string) => {
    const at = onPath.indexOf(file)
    if (at >= 0) return void cycles.push([...onPath.slice(at), file])
    if (done.has(file)) return
    onPath.push(file)
    for (const next of graph.get(file) ?? []) visit(next)
    onPath.pop()
    done.add(file)
  }
  for (const file of graph.keys()) visit(file)
  return cycles
}

describe("the module map", () => {
  it("lists the files of src/ by reading the directory", () => {
    expect(files).toContain(path.join(src, "TcpError.ts"))
    expect(files).toContain(path.join(src, "internal", "health.ts"))
  })

  it("every file of src/ loads when it is imported first", async () => {
    const failures = await loadEachFirst()
    const failed = Object.entries(failures).map(([url, error]) => `${relative(new URL(url).pathname)}: ${error}`)
    expect(failed).toEqual([])
  }, 60_000)

  it("no runtime import cycle joins files of src/", () => {
    const graph = new Map(files.map((file) => [file, runtimeImports(file)]))
    for (const targets of graph.values()) {
      for (const target of targets) expect(files, `an import of a file that does not exist: ${target}`).toContain(target)
    }
    const cycles = cyclesOf(graph).map((cycle) => cycle.map(relative).join(" -> "))
    expect(cycles).toEqual([])
  })

  it("the cycle check sees a cycle through a runtime import, and none through import type", () => {
    const a = path.join(src, "a.ts")
    const b = path.join(src, "b.ts")
    expect(cyclesOf(new Map([[a, [b]], [b, [a]]]))).toEqual([[a, b, a]])
    expect(cyclesOf(new Map([[a, [b]], [b, []]]))).toEqual([])
    // The parse of this repository's own sources: the public module imports its internal file at run time.
    expect(runtimeImports(path.join(src, "HealthCheck.ts"))).toContain(path.join(src, "internal", "health.ts"))
    expect(runtimeImports(path.join(src, "HealthCheck.ts"))).not.toContain(path.join(src, "Connection.ts"))
  })
})
