/**
 * Peers that need another process: a listener that never accepts (so its backlog fills up),
 * and code run with root privileges dropped.
 */
import * as Effect from "effect/Effect"
import { type ChildProcess, spawn } from "node:child_process"
import * as net from "node:net"

const kill = (child: ChildProcess) =>
  Effect.async<void>((resume) => {
    if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
    child.once("exit", () => resume(Effect.void))
    child.kill("SIGKILL")
  })

const firstLine = (child: ChildProcess) =>
  Effect.async<string, Error>((resume) => {
    let output = ""
    child.stdout!.on("data", (chunk: Buffer) => {
      output += chunk.toString()
      const newline = output.indexOf("\n")
      if (newline >= 0) resume(Effect.succeed(output.slice(0, newline)))
    })
    child.once("exit", (code) => resume(Effect.fail(new Error(`child exited with ${code}: ${output}`))))
  })

/** Starts `node -e script` and resolves with the first line it prints; killed when the scope closes. */
export const nodeChild = (script: string, args: ReadonlyArray<string> = []) =>
  Effect.acquireRelease(
    Effect.sync(() => spawn(process.execPath, ["-e", script, ...args], { stdio: ["ignore", "pipe", "inherit"] })),
    kill
  ).pipe(Effect.flatMap(firstLine))

// Listens with a backlog of 1 and then blocks its event loop, so it never accepts.
const neverAccepts = `
const net = require("node:net")
const server = net.createServer().listen({ host: "127.0.0.1", port: 0, backlog: 1 }, () => {
  process.stdout.write(server.address().port + "\\n")
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0)
})`

/**
 * The port of a listener whose accept queue is full: SYNs to it are dropped, so a connect to it
 * hangs until its deadline. The filler connections are closed with the scope.
 */
export const fullBacklogListener = Effect.gen(function*() {
  const port = Number(yield* nodeChild(neverAccepts))
  const fillers: Array<net.Socket> = []
  yield* Effect.addFinalizer(() => Effect.sync(() => fillers.forEach((socket) => socket.destroy())))
  // Linux queues backlog + 1 completed connections; a few more make sure the queue is full.
  for (let i = 0; i < 4; i++) {
    const socket = net.connect({ port, host: "127.0.0.1" })
    socket.on("error", () => {})
    fillers.push(socket)
  }
  yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 100)))
  return port
})

/** Runs a TypeScript file of ours in a child process (through tsx) and resolves with its first line. */
export const tsChild = (
  file: string,
  args: ReadonlyArray<string>,
  options: { readonly uid?: number; readonly gid?: number } = {}
) =>
  Effect.acquireRelease(
    Effect.sync(() =>
      spawn(process.execPath, ["--import", "tsx", file, ...args], {
        stdio: ["ignore", "pipe", "inherit"],
        ...options
      })
    ),
    kill
  ).pipe(Effect.flatMap(firstLine))
