/**
 * Python's `http.server` as a test's peer: `python3 -m http.server --protocol HTTP/1.1`, serving
 * a temporary directory on a free 127.0.0.1 port, ready once it accepts a connection, and killed
 * (its directory removed) when the scope closes. HTTP/1.1 keeps connections open between
 * requests, as the servers users talk to do.
 */
import * as Effect from "effect/Effect"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { freePort, realSleep } from "./harness.js"

export interface HttpServer {
  readonly port: number
}

const accepts = (port: number) =>
  Effect.async<boolean>((resume) => {
    const socket = net.connect({ host: "127.0.0.1", port })
    socket.once("connect", () => {
      socket.destroy()
      resume(Effect.succeed(true))
    })
    socket.once("error", () => {
      socket.destroy()
      resume(Effect.succeed(false))
    })
  })

/** Starts the server over a directory holding `files` (name to contents). */
export const pythonHttpServer = (files: Record<string, Uint8Array | string>) =>
  Effect.gen(function*() {
    const dir = yield* Effect.acquireRelease(
      Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "effect-tcp-http-"))),
      (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
    )
    for (const [name, contents] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), contents)
    const port = yield* freePort
    const child = yield* Effect.acquireRelease(
      Effect.sync(() =>
        spawn("python3", ["-m", "http.server", "--protocol", "HTTP/1.1", "--bind", "127.0.0.1", "--directory", dir, String(port)], {
          stdio: ["ignore", "ignore", "pipe"]
        })
      ),
      (child) =>
        Effect.async<void>((resume) => {
          if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
          child.once("exit", () => resume(Effect.void))
          child.kill("SIGKILL")
        })
    )
    let stderr = ""
    child.stderr!.on("data", (chunk: Buffer) => {
      stderr += chunk.toString()
    })
    for (let attempt = 0; !(yield* accepts(port)); attempt++) {
      if (child.exitCode !== null || attempt > 500) {
        return yield* Effect.dieMessage(`python3 -m http.server did not start on port ${port}: ${stderr}`)
      }
      yield* realSleep(10)
    }
    return { port } satisfies HttpServer
  })
