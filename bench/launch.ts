/**
 * How the benchmark programs are started. By default each one is bundled first (with esbuild,
 * which tsx itself runs on), once per suite, from the current sources: a bundle starts in about
 * 0.2 s where `node --import tsx` spends over a second resolving Effect's modules through the
 * loader, and its resident memory is the program's own, not the TypeScript loader's (which would
 * add some 70 MiB to the Effect programs and blur the storm's memory comparison). `--tsx` runs the
 * sources through `node --import tsx` instead. Neither start-up is measured.
 */
import { build, stop } from "esbuild"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import type { Implementation } from "./programs/protocol.js"

export const root = join(dirname(fileURLToPath(import.meta.url)), "..")

const source = (implementation: Implementation) => join(root, "bench", "programs", `${implementation}.ts`)

export interface Launcher {
  /** The node arguments that start an implementation's program (before its own arguments). */
  readonly args: (implementation: Implementation) => ReadonlyArray<string>
  readonly description: string
  /** Removes what was built. */
  readonly dispose: () => void
}

export const tsxLauncher: Launcher = {
  args: (implementation) => ["--import", "tsx", source(implementation)],
  description: "run from source with `node --import tsx`",
  dispose: () => {}
}

/** Bundles the three programs (with `effect-tcp` resolved to ./src by tsconfig.json) into a temporary directory. */
export const bundledLauncher = async (): Promise<Launcher> => {
  const directory = mkdtempSync(join(tmpdir(), "effect-tcp-bench-"))
  const implementations: ReadonlyArray<Implementation> = ["raw", "platform", "ours"]
  try {
    await build({
      entryPoints: Object.fromEntries(implementations.map((implementation) => [implementation, source(implementation)])),
      outdir: directory,
      outExtension: { ".js": ".mjs" },
      bundle: true,
      platform: "node",
      format: "esm",
      target: "node20",
      tsconfig: join(root, "tsconfig.json"),
      // Optional native helpers of `ws` (pulled in by @effect/platform-node), absent here as in most installs.
      external: ["bufferutil", "utf-8-validate"],
      // CommonJS dependencies bundled into ESM still call require for node's own modules.
      banner: { js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);" },
      logLevel: "error"
    })
  } catch (error) {
    rmSync(directory, { recursive: true, force: true })
    throw error
  } finally {
    // esbuild keeps a service process running otherwise.
    await stop()
  }
  return {
    args: (implementation) => [join(directory, `${implementation}.mjs`)],
    description: "bundled with esbuild from the current sources, run with `node`",
    dispose: () => rmSync(directory, { recursive: true, force: true })
  }
}
