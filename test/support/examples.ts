/**
 * Runs the example programs as a user runs them (`node --import tsx examples/NAME.ts`), as child
 * processes killed when the scope closes.
 */
import * as Effect from "effect/Effect"
import { type ChildProcess, spawn } from "node:child_process"
import { fileURLToPath } from "node:url"

export const file = (name: string) => fileURLToPath(new URL(`../../examples/${name}.ts`, import.meta.url))

export interface Running {
  readonly child: ChildProcess
  readonly lines: Array<string>
  /** Resolves with the first line matching `pattern`. */
  readonly line: (pattern: RegExp) => Effect.Effect<RegExpExecArray, Error>
  readonly exitCode: Effect.Effect<number>
}

/** Runs an example as a child process, killed when the scope closes. */
export const run = (name: string, args: ReadonlyArray<string>, options: { readonly uid?: number; readonly gid?: number } = {}) =>
  Effect.acquireRelease(
    Effect.sync((): Running => {
      const child = spawn(process.execPath, ["--import", "tsx", file(name), ...args], {
        stdio: ["ignore", "pipe", "pipe"],
        ...options
      })
      const lines: Array<string> = []
      const waiting = new Set<() => void>()
      const onData = (chunk: Buffer) => {
        lines.push(...chunk.toString().split("\n").filter((line) => line.length > 0))
        for (const wake of waiting) wake()
      }
      child.stdout!.on("data", onData)
      child.stderr!.on("data", onData)
      const exitCode = Effect.async<number>((resume) => {
        if (child.exitCode !== null) return resume(Effect.succeed(child.exitCode))
        child.once("exit", (code, signal) => resume(Effect.succeed(code ?? (signal ? 128 : 1))))
      })
      const line = (pattern: RegExp) =>
        Effect.async<RegExpExecArray, Error>((resume) => {
          const check = () => {
            for (const line of lines) {
              const match = pattern.exec(line)
              if (match) {
                waiting.delete(check)
                return resume(Effect.succeed(match))
              }
            }
            if (child.exitCode !== null) {
              waiting.delete(check)
              resume(Effect.fail(new Error(`${name} exited with ${child.exitCode} before ${pattern}:\n${lines.join("\n")}`)))
            }
          }
          waiting.add(check)
          child.once("exit", check)
          check()
          return Effect.sync(() => waiting.delete(check))
        }).pipe(
          Effect.timeoutFail({
            duration: "20 seconds",
            onTimeout: () => new Error(`${name} printed no line matching ${pattern}:\n${lines.join("\n")}`)
          })
        )
      return { child, lines, line, exitCode }
    }),
    ({ child, exitCode }) =>
      Effect.suspend(() => {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
        return exitCode
      })
  )

