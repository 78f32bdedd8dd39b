/**
 * Builds dist/ (what the package's `exports` point to) from src/ with tsconfig.build.json. It runs
 * on `npm run build` and on `prepare`, that is before `npm pack` and `npm publish` and when the
 * package is installed from git, so a package is never made without its dist/. dist/ is emptied
 * first, so that a module removed from src/ cannot linger in the package.
 */
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import { createRequire } from "node:module"
import * as path from "node:path"

const root = path.resolve(import.meta.dirname, "..")

fs.rmSync(path.join(root, "dist"), { recursive: true, force: true })
const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc")
const build = spawnSync(process.execPath, [tsc, "-p", path.join(root, "tsconfig.build.json")], { stdio: "inherit" })
if (build.error !== undefined) throw build.error
process.exitCode = build.status ?? 1
