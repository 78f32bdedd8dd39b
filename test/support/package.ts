/**
 * The package as a user gets it, for test/package.test.ts: the tarball `npm pack` makes from the
 * files of a fresh clone, and new projects that install it with `npm` from the local cache alone.
 */
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

export const root = fileURLToPath(new URL("../..", import.meta.url))

export interface Output {
  readonly stdout: string
  readonly stderr: string
}

// Some variables `npm test` sets for its scripts (the package's name, its prefix, the running
// script, `-s`) describe this run in this repository: an npm run in another project must not see them.
const withoutNpmRun = (env: NodeJS.ProcessEnv): NodeJS.ProcessEnv =>
  Object.fromEntries(
    Object.entries(env).filter(([name]) =>
      !/^npm_(package_|lifecycle_|config_local_prefix$|config_prefix$|config_loglevel$|command$|execpath$)/i.test(name)
    )
  )

/** Runs a command to its end; fails with its output when it exits with anything but 0. */
export const run = (command: string, args: ReadonlyArray<string>, cwd: string): Promise<Output> =>
  new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, env: withoutNpmRun(process.env), stdio: ["ignore", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
    child.once("error", reject)
    child.once("close", (code, signal) => {
      if (code === 0) return resolve({ stdout, stderr })
      const status = signal === null ? `exited with ${code}` : `was killed by ${signal}`
      reject(new Error(`\`${command} ${args.join(" ")}\` in ${cwd} ${status}:\n${stdout}${stderr}`))
    })
  })

// Offline: only the local cache (what `npm ci` fetched); no audit, funding or update check, which
// would ask the registry.
const npmFlags = ["--offline", "--no-audit", "--no-fund", "--no-update-notifier"]

export const npm = (args: ReadonlyArray<string>, cwd: string) => run("npm", [...args, ...npmFlags], cwd)

/**
 * Copies the files a fresh clone would have (git's tracked files and the new ones it does not
 * ignore, so no dist/) into `into`, with this repository's node_modules linked in as `npm ci`
 * would have installed them.
 */
export const cleanTree = async (into: string): Promise<void> => {
  const { stdout } = await run("git", ["ls-files", "-z", "--cached", "--others", "--exclude-standard"], root)
  for (const file of stdout.split("\0")) {
    // A tracked file deleted in the work tree is listed too.
    if (file === "" || !fs.existsSync(path.join(root, file))) continue
    fs.mkdirSync(path.dirname(path.join(into, file)), { recursive: true })
    fs.copyFileSync(path.join(root, file), path.join(into, file))
  }
  fs.symlinkSync(path.join(root, "node_modules"), path.join(into, "node_modules"))
}

/** `npm pack` in `tree` (which runs its `prepare`); the tarball's path and the files it holds. */
export const pack = async (tree: string, destination: string) => {
  const { stdout } = await npm(["pack", "--json", "--pack-destination", destination], tree)
  const [packed] = JSON.parse(stdout) as ReadonlyArray<{ filename: string; files: ReadonlyArray<{ path: string }> }>
  return { tarball: path.join(destination, packed!.filename), files: packed!.files.map((file) => file.path) }
}

interface LockedPackage {
  readonly version: string
  readonly integrity?: string
  readonly dependencies?: Record<string, string>
}

const repositoryLock = (): Record<string, LockedPackage> =>
  JSON.parse(fs.readFileSync(path.join(root, "package-lock.json"), "utf8")).packages

// Node's lookup: the copy nested under the package that needs it, else under each of its parents.
const resolveFrom = (from: string, dependency: string, packages: Record<string, LockedPackage>) => {
  for (let dir = from; ; dir = dir.slice(0, Math.max(dir.lastIndexOf("/node_modules/"), 0))) {
    const key = dir === "" ? `node_modules/${dependency}` : `${dir}/node_modules/${dependency}`
    if (key in packages) return key
    if (dir === "") return undefined
  }
}

/**
 * The lock entry of `name` and of everything it depends on, as this repository's lock has them
 * (so as `npm ci` fetched them into the cache), laid out at the top of a new project.
 */
const lockedClosure = (name: string, packages = repositoryLock()): Record<string, LockedPackage> => {
  const entries: Record<string, LockedPackage> = {}
  const add = (dependency: string, from: string) => {
    const key = resolveFrom(from, dependency, packages)
    if (key === undefined) throw new Error(`package-lock.json has no ${dependency} (needed by ${from})`)
    const { version, integrity, dependencies } = packages[key]!
    const placed = entries[`node_modules/${dependency}`]
    if (placed !== undefined) {
      if (placed.version === version) return
      throw new Error(`${dependency} is needed at ${placed.version} and ${version}: one top level cannot hold both`)
    }
    entries[`node_modules/${dependency}`] = { version, ...(integrity && { integrity }), ...(dependencies && { dependencies }) }
    for (const next of Object.keys(dependencies ?? {})) add(next, key)
  }
  add(name, "")
  return entries
}

/**
 * A new project (package.json and a lock) depending on `effect` and `@types/node`, for `npm ci`.
 * `effect` is this repository's copy unless `effectVersion` says another, which then comes from
 * the cache by its version (its dependencies are those of the repository's copy).
 */
export const project = (dir: string, effectVersion?: string): void => {
  const effect = lockedClosure("effect")
  const types = lockedClosure("@types/node")
  if (effectVersion !== undefined) {
    const { dependencies } = effect["node_modules/effect"]!
    effect["node_modules/effect"] = { version: effectVersion, ...(dependencies && { dependencies }) }
  }
  const dependencies = {
    effect: effect["node_modules/effect"]!.version,
    "@types/node": types["node_modules/@types/node"]!.version
  }
  const manifest = { name: "effect-tcp-user", version: "1.0.0", private: true, type: "module", dependencies }
  const lock = {
    name: manifest.name,
    version: manifest.version,
    lockfileVersion: 3,
    requires: true,
    packages: { "": { name: manifest.name, version: manifest.version, dependencies }, ...effect, ...types }
  }
  fs.mkdirSync(dir, { recursive: true })
  fs.writeFileSync(path.join(dir, "package.json"), `${JSON.stringify(manifest, null, 2)}\n`)
  fs.writeFileSync(path.join(dir, "package-lock.json"), `${JSON.stringify(lock, null, 2)}\n`)
}

/** The lowest version a peer range such as `^3.22.0` accepts; only that form is understood. */
export const lowestOf = (range: string): string => {
  const match = /^\^(\d+\.\d+\.\d+)$/.exec(range)
  if (match === null) throw new Error(`peer range ${range}: expected ^MAJOR.MINOR.PATCH`)
  return match[1]!
}

/** tsconfig.json for the user's program, with the given module resolution. */
export const tsconfig = (moduleResolution: "NodeNext" | "bundler", file: string) => ({
  compilerOptions: {
    target: "ES2022",
    module: moduleResolution === "NodeNext" ? "NodeNext" : "ESNext",
    moduleResolution,
    strict: true,
    types: ["node"],
    // Users' usual setting; what the program asks of the declarations is checked all the same.
    skipLibCheck: true,
    ...(moduleResolution === "NodeNext" ? { outDir: "out" } : { noEmit: true })
  },
  files: [file]
})
