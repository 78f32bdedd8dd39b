/**
 * The package as users get it: `npm pack` from the files of a fresh clone (no dist/), the tarball
 * installed beside its peer `effect` into a new project from the local npm cache (no network),
 * then a user's program (test/support/consumer.ts) type-checked with `moduleResolution` NodeNext
 * and bundler, and run under this Node: a serve/connect round trip on 127.0.0.1 from the installed
 * package. Again with the lowest `effect` the README promises, which the peer range must accept.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { cleanTree, lowestOf, npm, pack, project, root, run, tsconfig } from "./support/package.js"

const manifest = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8"))
const tsc = path.join(root, "node_modules", "typescript", "bin", "tsc")
const consumer = path.join(root, "test", "support", "consumer.ts")

// What the consumer prints when everything worked.
const expected = {
  reply: "HELLO FROM THE PACKAGE",
  afterClose: "ConnectionRefused",
  typed: false,
  impossible: true,
  faultProxy: "function"
}

// README.md's Install section: "effect 3.22.0 or any later 3.x".
const lowestPromised = "3.22.0"

// Building, packing and installing take tens of seconds on a busy machine.
const slow = 180_000

let work: string
let tarball: string | undefined

beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), "effect-tcp-package-"))
})

afterAll(() => {
  fs.rmSync(work, { recursive: true, force: true })
})

/** A new project with `effect` (the given version, or the repository's) and the packed library. */
const install = async (name: string, effectVersion?: string): Promise<string> => {
  if (tarball === undefined) throw new Error("no tarball: the npm pack test failed")
  const dir = path.join(work, name)
  project(dir, effectVersion)
  await npm(["ci"], dir)
  // As a user adds it: npm checks the peer range against the effect already there.
  await npm(["install", tarball], dir)
  fs.copyFileSync(consumer, path.join(dir, "consumer.ts"))
  return dir
}

const typeCheck = (dir: string, moduleResolution: "NodeNext" | "bundler") => {
  const config = path.join(dir, `tsconfig.${moduleResolution}.json`)
  fs.writeFileSync(config, JSON.stringify(tsconfig(moduleResolution, "consumer.ts"), null, 2))
  return run(process.execPath, [tsc, "-p", config], dir)
}

/** Type-checks and compiles the consumer with NodeNext, runs it, and returns what it printed. */
const compileAndRun = async (dir: string) => {
  await typeCheck(dir, "NodeNext")
  const { stdout } = await run(process.execPath, [path.join("out", "consumer.js")], dir)
  return JSON.parse(stdout.trim())
}

describe("the package as users get it", () => {
  it("npm pack from the files of a fresh clone builds dist/ and ships every file the exports name, the LICENSE and no tests", async () => {
    const tree = path.join(work, "clone")
    await cleanTree(tree)
    expect(fs.existsSync(path.join(tree, "dist"))).toBe(false)
    const packed = await pack(tree, work)
    tarball = packed.tarball
    const targets = Object.values<string | Record<string, string>>(manifest.exports).flatMap((target) =>
      typeof target === "string" ? [target] : Object.values(target)
    )
    expect(targets).toContain("./dist/index.js")
    for (const target of [...targets, "./LICENSE", "./README.md"]) {
      expect(packed.files, target).toContain(target.replace(/^\.\//, ""))
    }
    expect(packed.files.filter((file) => file.startsWith("test/") || file.startsWith("scripts/"))).toEqual([])
  }, slow)

  it("installed beside effect from the local cache, a program using it type-checks with NodeNext and bundler, and runs a round trip on 127.0.0.1", async () => {
    const dir = await install("user")
    expect(await compileAndRun(dir)).toEqual(expected)
    await typeCheck(dir, "bundler")
  }, slow)

  it("with effect 3.22.0, the lowest the README promises, it installs without ERESOLVE, type-checks and runs", async (context) => {
    // .ci/run puts it in the cache; on a machine where nobody did, only CI insists.
    const { stdout: cache } = await npm(["cache", "ls", `effect@${lowestPromised}`], work)
    if (!cache.includes(`/effect-${lowestPromised}.tgz`) && !process.env.CI) {
      return context.skip(`effect@${lowestPromised} is not in the npm cache (npm cache add effect@${lowestPromised} puts it there)`)
    }
    const dir = await install("user-lowest", lowestPromised)
    const installed = JSON.parse(fs.readFileSync(path.join(dir, "node_modules", "effect", "package.json"), "utf8"))
    expect(installed.version).toBe(lowestPromised)
    expect(await compileAndRun(dir)).toEqual(expected)
    // What .ci/run caches, and no lower release is claimed than the one tried here.
    expect(lowestOf(manifest.peerDependencies.effect)).toBe(lowestPromised)
  }, slow)
})
