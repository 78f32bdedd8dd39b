/**
 * `npm run demo`: the robust server and the robust client against each other, as separate
 * processes on 127.0.0.1, with both sides' output.
 *
 * 1. The server starts on a free port; the client sends "Hello, Server!" and gets it upper-cased.
 * 2. The client asked for a host that does not exist fails at once, without retrying.
 * 3. A second server on the same port fails with AddressInUse and exits 1.
 * 4. SIGINT shuts the server down gracefully: exit 0.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { fileURLToPath } from "node:url"

const example = (name: string) => fileURLToPath(new URL(`./${name}.ts`, import.meta.url))

const start = (label: string, name: string, args: Array<string>) => {
  console.log(`\n$ npx tsx examples/${name}.ts ${args.join(" ")}`)
  const child = spawn(process.execPath, ["--import", "tsx", example(name), ...args], {
    stdio: ["ignore", "pipe", "pipe"]
  })
  const lines: Array<string> = []
  const print = (chunk: Buffer) => {
    for (const line of chunk.toString().split("\n").filter((line) => line.length > 0)) {
      lines.push(line)
      console.log(`  [${label}] ${line}`)
    }
  }
  child.stdout.on("data", print)
  child.stderr.on("data", print)
  return { child, lines }
}

const exited = (child: ChildProcess) =>
  new Promise<number>((resolve) => {
    if (child.exitCode !== null) return resolve(child.exitCode)
    child.once("exit", (code) => resolve(code ?? 1))
  })

const until = (lines: Array<string>, pattern: RegExp, child: ChildProcess) =>
  new Promise<RegExpExecArray>((resolve, reject) => {
    const timer = setInterval(() => {
      for (const line of lines) {
        const match = pattern.exec(line)
        if (match) {
          clearInterval(timer)
          return resolve(match)
        }
      }
      if (child.exitCode !== null) {
        clearInterval(timer)
        reject(new Error(`exited with ${child.exitCode} before printing ${pattern}`))
      }
    }, 20)
  })

const check = (what: string, ok: boolean) => {
  console.log(`${ok ? "ok" : "UNEXPECTED"}: ${what}`)
  if (!ok) process.exitCode = 1
}

const server = start("server", "robust-server", ["--port", "0"])
try {
  const [, host, port] = await until(server.lines, /^listening on (.+):(\d+)$/, server.child)

  const client = start("client", "robust-client", ["--host", host, "--port", port])
  check("the client got its response and exited 0", (await exited(client.child)) === 0 &&
    client.lines.includes("Response: HELLO, SERVER!"))

  const lost = start("client", "robust-client", ["--host", "no-such-host.invalid", "--port", port])
  check("a host that does not exist fails at once with DnsLookupFailed, exit 1", (await exited(lost.child)) === 1 &&
    lost.lines.some((line) => line.startsWith("DnsLookupFailed:")) &&
    !lost.lines.some((line) => line.includes("retrying")))

  const second = start("second server", "robust-server", ["--port", port])
  check("a second server on the same port fails with AddressInUse, exit 1", (await exited(second.child)) === 1 &&
    second.lines.some((line) => line.startsWith("AddressInUse:")))

  console.log("\n$ kill -INT <server>")
  server.child.kill("SIGINT")
  check("the server shut down gracefully and exited 0", (await exited(server.child)) === 0)
} finally {
  if (server.child.exitCode === null) server.child.kill("SIGKILL")
}
