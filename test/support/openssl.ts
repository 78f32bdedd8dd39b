/**
 * Real TLS peers from the `openssl` command line, on 127.0.0.1 only: `sServer` (`openssl s_server`)
 * for a client under test to connect to, and `sClient` (`openssl s_client`) to connect to a server
 * under test. Each child is killed when its scope closes (or, for `sClient`, when it is
 * interrupted), and its exit awaited, so a test leaves no process behind.
 *
 * `sServer` runs in `-rev` mode: after the handshake it reads lines and sends each one back
 * reversed, its CR/LF stripped and a single "\n" added ("hello\r\n" comes back as "olleh\n"). A line
 * that is exactly `CLOSE` makes it close that connection (without a close_notify: the client sees
 * the TCP FIN); it then accepts the next one. It serves one connection at a time; a second client
 * waits in the backlog until the first is done.
 */
import * as Effect from "effect/Effect"
import { type ChildProcess, spawn } from "node:child_process"

/** The line after which `sServer` closes the connection. */
export const closeLine = "CLOSE\n"

/** openssl's flags that pin the protocol version: only 1.2, only 1.3, or anything but 1.3. */
export type Protocol = "tls1_2" | "tls1_3" | "no_tls1_3"

export interface SServerOptions {
  /** The server's certificate (PEM file; a `KeyPair` can be spread in). */
  readonly certPath: string
  readonly keyPath: string
  /**
   * CAs that client certificates must chain to (`-CAfile`; s_server also sends any of them that
   * issued its own certificate). Not `caPath`, so that spreading in `unknownCa`, which has one,
   * does not set it.
   */
  readonly clientCaPath?: string
  /**
   * Asks for a client certificate (`-verify 1`) or requires one (`-Verify 1`). Either way a
   * certificate that fails verification ends the handshake (`-verify_return_error`): without it
   * s_server only logs the failure and carries on.
   */
  readonly clientCertificate?: "request" | "require"
  readonly protocol?: Protocol
  /** Protocols the server accepts, in its order of preference (`-alpn`); a client offering none of them is refused. */
  readonly alpn?: ReadonlyArray<string>
  /** TLS 1.2 and older cipher list (`-cipher`). */
  readonly cipher?: string
  /** TLS 1.3 cipher suites (`-ciphersuites`). */
  readonly ciphersuites?: string
  /** A second certificate, served to a client whose SNI is `serverName` (`-servername`, `-cert2`, `-key2`). */
  readonly sni?: { readonly serverName: string; readonly certPath: string; readonly keyPath: string }
}

export interface SServer {
  readonly port: number
  /** Everything s_server wrote so far, stdout and stderr interleaved as they came. */
  readonly output: () => string
}

export interface SClientOptions {
  /** CAs to verify the server's certificate with (`-CAfile`). */
  readonly caPath?: string
  /** The SNI name to send (`-servername`); s_client sends none when connecting to an address. */
  readonly serverName?: string
  /** A client certificate (`-cert`, `-key`; a `KeyPair` can be spread in). */
  readonly certPath?: string
  readonly keyPath?: string
  readonly protocol?: Protocol
  /** Protocols to offer (`-alpn`). */
  readonly alpn?: ReadonlyArray<string>
  /** Ends the handshake when the server's certificate fails verification (`-verify_return_error`); true unless set false. */
  readonly verifyReturnError?: boolean
  /**
   * Bytes sent once connected. With input, stdin is closed after it and s_client stays connected
   * (`-ign_eof`) until the server closes the connection: end it with `closeLine` for `sServer`.
   * Without, s_client exits as soon as its side of the handshake is done (in TLS 1.3 that is
   * before the server has judged a client certificate: send input to learn the verdict).
   */
  readonly input?: string
  /** Kills s_client after this long (5000 ms unless set); the result then says `timedOut`. */
  readonly timeoutMillis?: number
  /**
   * Prints the full session summary (chain, "ALPN protocol: ...", "Verify return code: ...") on
   * stdout before the data, instead of the brief one (`-brief`: protocol, cipher, peer, verification)
   * on stderr, which leaves stdout for the data alone.
   */
  readonly fullSummary?: boolean
}

export interface SClientResult {
  /** The exit code: 0 when the session ended cleanly, 1 when the handshake or a read failed; null if killed. */
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
  readonly timedOut: boolean
}

/** Kills the child, unless it has already exited, and waits until it has and its pipes are closed. */
const kill = (child: ChildProcess, closed: () => boolean) =>
  Effect.async<void>((resume) => {
    if (closed()) return resume(Effect.void)
    child.once("close", () => resume(Effect.void))
    child.kill("SIGKILL")
  })

/** Spawns openssl with pipes for stdin, stdout and stderr; killed when the scope closes. */
const spawnOpenssl = (args: ReadonlyArray<string>) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const child = spawn("openssl", args, { stdio: ["pipe", "pipe", "pipe"] })
      let closed = false
      child.once("close", () => (closed = true))
      // A spawn that fails shows as `close` too; the error itself is kept for the message.
      let spawnError: Error | undefined
      child.once("error", (error) => (spawnError = error))
      child.stdin!.on("error", () => {})
      return { child, closed: () => closed, spawnError: () => spawnError }
    }),
    ({ child, closed }) => kill(child, closed)
  )

const protocolFlag = (protocol: Protocol | undefined) => (protocol === undefined ? [] : [`-${protocol}`])

const serverArguments = (options: SServerOptions): Array<string> => [
  "s_server", "-accept", "127.0.0.1:0", "-rev",
  "-cert", options.certPath, "-key", options.keyPath,
  ...(options.clientCaPath === undefined ? [] : ["-CAfile", options.clientCaPath]),
  ...(options.clientCertificate === undefined ? [] :
    [options.clientCertificate === "require" ? "-Verify" : "-verify", "1", "-verify_return_error"]),
  ...protocolFlag(options.protocol),
  ...(options.alpn === undefined ? [] : ["-alpn", options.alpn.join(",")]),
  ...(options.cipher === undefined ? [] : ["-cipher", options.cipher]),
  ...(options.ciphersuites === undefined ? [] : ["-ciphersuites", options.ciphersuites]),
  ...(options.sni === undefined ? [] : [
    "-servername", options.sni.serverName, "-cert2", options.sni.certPath, "-key2", options.sni.keyPath
  ])
]

/**
 * Starts `openssl s_server -rev` on 127.0.0.1 for the scope and returns once it listens. It binds
 * port 0 and prints the port the kernel gave it ("ACCEPT 127.0.0.1:PORT", after `listen`), so no
 * other process can take the port between choosing and binding it.
 */
export const sServer = (options: SServerOptions) =>
  Effect.gen(function*() {
    const { child, closed, spawnError } = yield* spawnOpenssl(serverArguments(options))
    child.stdin!.end()
    let output = ""
    const keep = (chunk: Buffer) => (output += chunk.toString())
    child.stdout!.on("data", keep)
    child.stderr!.on("data", keep)
    const port = yield* Effect.async<number, Error>((resume) => {
      const check = () => {
        const accept = /^ACCEPT 127\.0\.0\.1:(\d+)$/m.exec(output)
        if (accept !== null) resume(Effect.succeed(Number(accept[1])))
      }
      const exited = () =>
        resume(Effect.fail(new Error(`openssl s_server exited before listening: ${spawnError()?.message ?? output}`)))
      child.stdout!.on("data", check)
      child.once("close", exited)
      if (closed()) exited()
      return Effect.sync(() => {
        child.stdout!.off("data", check)
        child.off("close", exited)
      })
    })
    const server: SServer = { port, output: () => output }
    return server
  })

const clientArguments = (port: number, options: SClientOptions): Array<string> => [
  "s_client", "-connect", `127.0.0.1:${port}`,
  ...(options.fullSummary === true ? [] : ["-brief"]),
  ...(options.input === undefined ? [] : ["-ign_eof"]),
  ...(options.verifyReturnError === false ? [] : ["-verify_return_error"]),
  ...(options.caPath === undefined ? [] : ["-CAfile", options.caPath]),
  ...(options.serverName === undefined ? [] : ["-servername", options.serverName]),
  ...(options.certPath === undefined ? [] : ["-cert", options.certPath]),
  ...(options.keyPath === undefined ? [] : ["-key", options.keyPath]),
  ...protocolFlag(options.protocol),
  ...(options.alpn === undefined ? [] : ["-alpn", options.alpn.join(",")])
]

/**
 * Runs `openssl s_client` against 127.0.0.1:`port` and resolves once it has exited, with what it
 * printed. Interrupted, it kills the child and waits for it. The timeout is a timer of its own, so
 * it runs in real time under `TestClock` too.
 */
export const sClient = (port: number, options: SClientOptions = {}) =>
  Effect.scoped(
    Effect.gen(function*() {
      const { child, closed, spawnError } = yield* spawnOpenssl(clientArguments(port, options))
      let stdout = ""
      let stderr = ""
      child.stdout!.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
      child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
      child.stdin!.end(options.input ?? "")
      const timeoutMillis = options.timeoutMillis ?? 5000
      return yield* Effect.async<SClientResult, Error>((resume) => {
        let timedOut = false
        const timer = setTimeout(() => {
          timedOut = true
          child.kill("SIGKILL")
        }, timeoutMillis)
        const done = () => {
          clearTimeout(timer)
          const error = spawnError()
          if (error !== undefined) return resume(Effect.fail(new Error(`cannot run openssl s_client: ${error.message}`)))
          resume(Effect.succeed({ code: child.exitCode, stdout, stderr, timedOut }))
        }
        child.once("close", done)
        if (closed()) done()
        return Effect.sync(() => {
          clearTimeout(timer)
          child.off("close", done)
        })
      })
    })
  )
