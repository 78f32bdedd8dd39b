/**
 * TLS clients against real TLS servers: `openssl s_server` with certificates the tests make (one
 * per way a certificate can be wrong), redis-server over TLS, plain-text servers that do not speak
 * TLS, and a server that never answers the handshake. Each way a handshake fails is the
 * `TlsHandshakeFailed` reason a caller matches on, with Node's code kept.
 */
import { describe, expect } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as TestClock from "effect/TestClock"
import { spawn, spawnSync } from "node:child_process"
import * as tls from "node:tls"
import { fileURLToPath } from "node:url"
import { ConnectionPool, HealthCheck, Tcp, TcpError } from "../src/index.js"
import { type Certificates, certificates } from "./support/certs.js"
import { awaitSleeps, effect, eventually, live, rawServer, text } from "./support/harness.js"
import { type SServerOptions, sServer } from "./support/openssl.js"
import { redisServer, startRedisTls } from "./support/redis.js"

const certs = Effect.promise(certificates)

/** Connects to a fresh s_server, with the test CA trusted unless `tlsOptions` says otherwise. */
const connectToSServer = (
  server: (c: Certificates) => SServerOptions,
  tlsOptions: (c: Certificates) => Tcp.TlsConnectOptions = (c) => ({ ca: c.ca })
) =>
  Effect.gen(function*() {
    const c = yield* certs
    const { port } = yield* sServer(server(c))
    return yield* Tcp.connect({ host: "127.0.0.1", port, tls: tlsOptions(c) })
  })

/** One line through s_server's -rev mode: it comes back reversed. */
const reversed = (connection: { readonly write: (s: string) => any; readonly readUntil: (d: string) => any }) =>
  Effect.gen(function*() {
    yield* connection.write("hello\n") as Effect.Effect<void, TcpError.WriteError>
    return text(yield* connection.readUntil("\n") as Effect.Effect<Uint8Array, TcpError.TcpError>)
  })

/**
 * A TCP server that never answers a handshake, and how many of its sockets are open. It reads, so
 * that it sees a client's FIN (a socket with unread bytes never ends), and then closes its side.
 */
const silentPeer = Effect.gen(function*() {
  let open = 0
  const { port } = yield* rawServer((socket) => {
    open++
    socket.resume()
    socket.on("end", () => socket.end())
    socket.on("close", () => open--)
  })
  return { port, open: () => open }
})

const handshakeFailure = (error: unknown) => {
  expect(TcpError.isTcpError(error)).toBe(true)
  const e = error as TcpError.TlsHandshakeFailed
  expect(e._tag).toBe("TlsHandshakeFailed")
  return { reason: e.reason, code: e.code, operation: e.operation, transient: TcpError.isTransient(e) }
}

describe("TLS client against openssl s_server", () => {
  live("connects with the CA trusted, carries bytes both ways and tells what was negotiated", () =>
    Effect.gen(function*() {
      const connection = yield* connectToSServer((c) => c.server)
      expect(yield* reversed(connection)).toBe("olleh")
      const info = Option.getOrThrow(connection.tls)
      expect(info).toMatchObject({ protocol: "TLSv1.3", authorized: true, authorizationError: undefined })
      expect(info.cipher).toMatch(/^TLS_/)
      const peer = Option.getOrThrow(info.peerCertificate)
      expect(peer.subject.CN).toBe("localhost")
      expect(peer.issuer.CN).toBe("effect-tcp test CA")
      expect(peer.subjectAltName).toContain("IP Address:127.0.0.1")
      expect(peer.validTo.getTime()).toBeGreaterThan(Date.now())
      expect(peer.fingerprint256).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/)
      expect(peer.serialNumber).toMatch(/^[0-9A-F]+$/)
    }))

  live("a plain connection has no TLS information", () =>
    Effect.gen(function*() {
      const { port } = yield* rawServer(() => {})
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port })
      expect(Option.isNone(connection.tls)).toBe(true)
    }))

  const refused: Array<[string, (c: Certificates) => SServerOptions, TcpError.TlsFailureReason, string]> = [
    ["an expired certificate", (c) => c.expired, "CertificateExpired", "CERT_HAS_EXPIRED"],
    ["a certificate not valid yet", (c) => c.notYetValid, "CertificateNotYetValid", "CERT_NOT_YET_VALID"],
    ["a certificate from an unknown CA", (c) => c.unknownCa, "CertificateUntrusted", "UNABLE_TO_VERIFY_LEAF_SIGNATURE"],
    ["a self-signed certificate", (c) => c.selfSigned, "CertificateUntrusted", "DEPTH_ZERO_SELF_SIGNED_CERT"],
    ["a certificate for another name", (c) => c.otherName, "HostnameMismatch", "ERR_TLS_CERT_ALTNAME_INVALID"]
  ]
  for (const [what, server, reason, code] of refused) {
    live(`${what} fails the connect with TlsHandshakeFailed, reason ${reason}, not transient`, () =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(connectToSServer(server))
        expect(handshakeFailure(error)).toEqual({ reason, code, operation: "connect", transient: false })
      }))
  }

  live("the messages say what to do", () =>
    Effect.gen(function*() {
      const expired = yield* Effect.flip(connectToSServer((c) => c.expired))
      expect(expired.message).toMatch(
        /^TLS handshake with 127\.0\.0\.1:\d+ failed \(CERT_HAS_EXPIRED\): the peer's certificate has expired: the peer must renew it/
      )
      const untrusted = yield* Effect.flip(connectToSServer((c) => c.selfSigned))
      expect(untrusted.message).toContain("give the CA that signed it in the tls option `ca`")
    }))

  live("rejectUnauthorized: false connects to a self-signed server and says why it is not authorized", () =>
    Effect.gen(function*() {
      const connection = yield* connectToSServer((c) => c.selfSigned, () => ({ rejectUnauthorized: false }))
      expect(yield* reversed(connection)).toBe("olleh")
      expect(Option.getOrThrow(connection.tls)).toMatchObject({
        authorized: false,
        authorizationError: "DEPTH_ZERO_SELF_SIGNED_CERT"
      })
    }))

  live("a certificate for another name is accepted with the servername it is for", () =>
    Effect.gen(function*() {
      const connection = yield* connectToSServer((c) => c.otherName, (c) => ({ ca: c.ca, servername: "other.example" }))
      expect(yield* reversed(connection)).toBe("olleh")
      expect(Option.getOrThrow(connection.tls).servername).toBe("other.example")
    }))

  live("a server on TLS 1.2 only, and a client that wants 1.3: NoCommonProtocol", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        connectToSServer((c) => ({ ...c.server, protocol: "tls1_2" }), (c) => ({ ca: c.ca, minVersion: "TLSv1.3" }))
      )
      expect(handshakeFailure(error)).toEqual({
        reason: "NoCommonProtocol",
        code: "ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION",
        operation: "connect",
        transient: false
      })
    }))

  live("forced to TLS 1.2, the connection says so", () =>
    Effect.gen(function*() {
      const connection = yield* connectToSServer((c) => ({ ...c.server, protocol: "tls1_2" }))
      expect(Option.getOrThrow(connection.tls).protocol).toBe("TLSv1.2")
      expect(yield* reversed(connection)).toBe("olleh")
    }))

  live("no cipher suite in common (TLS 1.3 and TLS 1.2): NoCommonCipher", () =>
    Effect.gen(function*() {
      const thirteen = yield* Effect.flip(
        connectToSServer(
          (c) => ({ ...c.server, ciphersuites: "TLS_AES_128_GCM_SHA256" }),
          (c) => ({ ca: c.ca, ciphers: "TLS_AES_256_GCM_SHA384" })
        )
      )
      expect(handshakeFailure(thirteen).reason).toBe("NoCommonCipher")
      const twelve = yield* Effect.flip(
        connectToSServer(
          (c) => ({ ...c.server, protocol: "tls1_2", cipher: "ECDHE-ECDSA-AES128-SHA" }),
          (c) => ({ ca: c.ca, ciphers: "ECDHE-ECDSA-AES256-GCM-SHA384", maxVersion: "TLSv1.2" })
        )
      )
      // OpenSSL 3.0 names it ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE, 3.2 and later ERR_SSL_SSL/TLS_ALERT_HANDSHAKE_FAILURE.
      expect(handshakeFailure(twelve)).toMatchObject({ reason: "NoCommonCipher", code: expect.stringMatching(/_ALERT_HANDSHAKE_FAILURE$/) })
      expect(twelve.message).toContain("when it requires a client certificate")
    }))

  live("ALPN: the protocol agreed is told; none in common is NoCommonAlpn", () =>
    Effect.gen(function*() {
      const agreed = yield* connectToSServer(
        (c) => ({ ...c.server, alpn: ["h2", "http/1.1"] }),
        (c) => ({ ca: c.ca, ALPNProtocols: ["http/1.1"] })
      )
      expect(Option.getOrThrow(agreed.tls).alpnProtocol).toBe("http/1.1")
      const error = yield* Effect.flip(
        connectToSServer((c) => ({ ...c.server, alpn: ["h2"] }), (c) => ({ ca: c.ca, ALPNProtocols: ["http/1.1"] }))
      )
      expect(handshakeFailure(error)).toMatchObject({
        reason: "NoCommonAlpn",
        code: "ERR_SSL_TLSV1_ALERT_NO_APPLICATION_PROTOCOL"
      })
    }))
})

describe("TLS client certificates against openssl s_server", () => {
  const requiring = (c: Certificates, protocol?: "tls1_2"): SServerOptions => ({
    ...c.server,
    clientCaPath: c.caPath,
    clientCertificate: "require",
    ...(protocol ? { protocol } : {})
  })

  live("a client certificate the server trusts is accepted", () =>
    Effect.gen(function*() {
      const connection = yield* connectToSServer(requiring, (c) => ({ ca: c.ca, cert: c.client.cert, key: c.client.key }))
      expect(yield* reversed(connection)).toBe("olleh")
    }))

  live("TLS 1.3: the server's verdict on our certificate comes at the first read, as CertificateRequired or CertificateRejected", () =>
    Effect.gen(function*() {
      const none = yield* connectToSServer(requiring)
      expect(handshakeFailure(yield* Effect.flip(reversed(none)))).toEqual({
        reason: "CertificateRequired",
        code: "ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED",
        operation: "read",
        transient: false
      })
      const unknown = yield* connectToSServer(
        requiring,
        (c) => ({ ca: c.ca, cert: c.unknownClient.cert, key: c.unknownClient.key })
      )
      expect(handshakeFailure(yield* Effect.flip(reversed(unknown)))).toEqual({
        reason: "CertificateRejected",
        code: "ERR_SSL_TLSV1_ALERT_UNKNOWN_CA",
        operation: "read",
        transient: false
      })
    }))

  live("TLS 1.2: a certificate from an unknown CA fails the connect itself with CertificateRejected", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(connectToSServer(
        (c) => requiring(c, "tls1_2"),
        (c) => ({ ca: c.ca, cert: c.unknownClient.cert, key: c.unknownClient.key })
      ))
      expect(handshakeFailure(error)).toMatchObject({ reason: "CertificateRejected", operation: "connect" })
    }))
})

describe("TLS client against peers that do not speak TLS", () => {
  live("a plain-text server that greets first (SMTP-like): NotTls", () =>
    Effect.gen(function*() {
      const { port } = yield* rawServer((socket) => socket.write("220 mail.example ESMTP ready\r\n"))
      const error = yield* Effect.flip(Tcp.connect({ host: "127.0.0.1", port, tls: true }))
      expect(handshakeFailure(error)).toEqual({
        reason: "NotTls",
        code: "ERR_SSL_WRONG_VERSION_NUMBER",
        operation: "connect",
        transient: false
      })
      expect(error.message).toContain("the peer does not speak TLS")
    }))

  effect("a plain redis-server, which waits for a line the ClientHello never ends: HandshakeTimeout, its message naming the cause", () =>
    Effect.gen(function*() {
      const redis = yield* redisServer
      const fiber = yield* Effect.fork(
        Effect.flip(Tcp.connect({ host: "127.0.0.1", port: redis.port, tls: { handshakeTimeout: "5 seconds" } }))
      )
      yield* awaitSleeps(1, { wakingAt: "5 seconds" })
      yield* TestClock.adjust("5 seconds")
      const error = yield* Fiber.join(fiber)
      expect(handshakeFailure(error).reason).toBe("HandshakeTimeout")
      expect(error.message).toContain("not a TLS server")
    }))

  live("a server that closes as soon as it accepts: ConnectionReset, transient", () =>
    Effect.gen(function*() {
      const { port } = yield* rawServer((socket) => socket.destroy())
      const error = yield* Effect.flip(Tcp.connect({ host: "127.0.0.1", port, tls: true }))
      expect(error._tag).toBe("ConnectionReset")
      expect(TcpError.isTransient(error)).toBe(true)
    }))

  effect("a server that never answers the handshake: HandshakeTimeout at handshakeTimeout, transient, socket gone", () =>
    Effect.gen(function*() {
      const { open, port } = yield* silentPeer
      const fiber = yield* Effect.fork(
        Effect.flip(Tcp.connect({ host: "127.0.0.1", port, tls: { handshakeTimeout: "3 seconds" } }))
      )
      yield* awaitSleeps(1, { wakingAt: "3 seconds" })
      yield* eventually(() => open() === 1)
      yield* TestClock.adjust("3 seconds")
      const error = yield* Fiber.join(fiber)
      expect(handshakeFailure(error)).toEqual({
        reason: "HandshakeTimeout",
        code: undefined,
        operation: "connect",
        transient: true
      })
      expect(error.message).toMatch(/^TLS handshake with 127\.0\.0\.1:\d+ failed after 3000 ms: the handshake did not complete/)
      yield* eventually(() => open() === 0)
    }))

  effect("connectTimeout covers the handshake: a silent server is ConnectTimeout at connectTimeout", () =>
    Effect.gen(function*() {
      const { port } = yield* rawServer(() => {})
      const fiber = yield* Effect.fork(
        Effect.flip(Tcp.connect({ host: "127.0.0.1", port, connectTimeout: "2 seconds", tls: { handshakeTimeout: "5 seconds" } }))
      )
      yield* awaitSleeps(2)
      yield* TestClock.adjust("2 seconds")
      expect((yield* Fiber.join(fiber))._tag).toBe("ConnectTimeout")
    }))

  live("interrupting a connect in the middle of its handshake destroys the socket", () =>
    Effect.gen(function*() {
      const { open, port } = yield* silentPeer
      const fiber = yield* Effect.fork(Tcp.connect({ host: "127.0.0.1", port, tls: true }).pipe(Effect.scoped))
      yield* eventually(() => open() === 1)
      expect(Exit.isInterrupted(yield* Fiber.interrupt(fiber))).toBe(true)
      yield* eventually(() => open() === 0)
    }))
})

describe("TLS options", () => {
  effect("bad TLS options fail with InvalidOptions naming the option, before any socket, never a throw", () =>
    Effect.gen(function*() {
      const cases: Array<[unknown, string]> = [
        ["yes", "expected true or an object of TLS options"],
        [false, "expected true or an object of TLS options"],
        [{ ca: 5 }, "ca: expected PEM text"],
        [{ rejectUnauthorized: "no" }, "rejectUnauthorized: expected a boolean"],
        [{ minVersion: "TLSv9" }, "minVersion: expected one of TLSv1"],
        [{ servername: "127.0.0.1" }, "servername: expected a host name, not an IP address"],
        [{ servername: "a\u0000b" }, "servername: a server name must not contain"],
        [{ ALPNProtocols: [] }, "ALPNProtocols: expected a non-empty array"],
        [{ handshakeTimeout: -1 }, "handshakeTimeout: expected a finite, non-negative duration"],
        [{ handshakeTimeout: "1e3 millis" }, "handshakeTimeout"],
        [{ ciphers: "no-such-cipher" }, "no cipher match"],
        [{ cert: "not a certificate", key: "not a key" }, "tls"],
        [{ checkServerIdentity: "always" }, "checkServerIdentity: expected a function"]
      ]
      for (const [option, issue] of cases) {
        const error = yield* Effect.flip(Tcp.connect({ host: "127.0.0.1", port: 1, tls: option as any }))
        expect(error._tag, JSON.stringify(option)).toBe("InvalidOptions")
        expect(error.message, JSON.stringify(option)).toContain(issue)
      }
    }))

  live("tls: true sends the host as server name and verifies against Node's roots (our test CA is not one)", () =>
    Effect.gen(function*() {
      const c = yield* certs
      const names: Array<string | undefined> = []
      const server = tls.createServer({ cert: c.server.cert, key: c.server.key }, (socket) => socket.end())
      server.on("tlsClientError", () => {})
      server.on("secureConnection", (socket) => names.push((socket as tls.TLSSocket).servername || undefined))
      yield* Effect.acquireRelease(
        Effect.async<void>((resume) => void server.listen(0, "127.0.0.1", () => resume(Effect.void))),
        () => Effect.async<void>((resume) => void server.close(() => resume(Effect.void)))
      )
      const { port } = server.address() as { port: number }
      const error = yield* Effect.flip(Tcp.connect({ host: "localhost", port, tls: true }))
      expect(handshakeFailure(error).reason).toBe("CertificateUntrusted")
      const connection = yield* Tcp.connect({ host: "localhost", port, tls: { ca: c.ca } })
      expect(Option.getOrThrow(connection.tls).servername).toBe("localhost")
      yield* eventually(() => names.length === 1)
      expect(names).toEqual(["localhost"])
    }))
})

/** The setsockopt calls that set TCP_NODELAY in a child that connects with TLS and `noDelay`, seen by strace. */
const noDelayCalls = (port: number, noDelay: boolean) =>
  Effect.async<number>((resume) => {
    const script = fileURLToPath(new URL("./support/tls-nodelay.ts", import.meta.url))
    const child = spawn(
      "strace",
      ["-f", "-qq", "-e", "trace=setsockopt", process.execPath, "--import", "tsx", script, String(port), String(noDelay)],
      { stdio: ["ignore", "ignore", "pipe"] }
    )
    let trace = ""
    child.stderr.on("data", (chunk: Buffer) => trace += chunk.toString())
    child.on("exit", () => resume(Effect.succeed(trace.split("\n").filter((line) => line.includes("TCP_NODELAY, [1]")).length)))
    return Effect.sync(() => child.kill("SIGKILL"))
  })

// strace needs ptrace, which a container may not allow: then there is no way to see the option.
const straceWorks = spawnSync("strace", ["-qq", "true"]).status === 0
if (!straceWorks) console.warn("skipping the TLS noDelay test: strace is missing or may not trace here (ptrace)")

describe.skipIf(!straceWorks)("TLS socket options", () => {
  live(
    "noDelay applies to TLS sockets as to plain ones (tls.connect alone ignores it): TCP_NODELAY is set, or not at all",
    () =>
      Effect.gen(function*() {
        const c = yield* certs
        const { port } = yield* sServer(c.server)
        expect(yield* noDelayCalls(port, true)).toBeGreaterThanOrEqual(1)
        expect(yield* noDelayCalls(port, false)).toBe(0)
      }),
    30_000
  )
})

describe("TLS in the rest of the library", () => {
  live("a ConnectionPool over TLS to redis-server with a PING health check", () =>
    Effect.gen(function*() {
      const c = yield* certs
      const redis = yield* startRedisTls(c)
      const pool = yield* ConnectionPool.make({
        host: "127.0.0.1",
        port: redis.port,
        tls: { ca: c.ca },
        max: 2,
        healthCheck: HealthCheck.redisPing
      })
      const replies = yield* Effect.forEach(
        ["a", "b", "c", "d"],
        (key) =>
          pool.use((connection) =>
            Effect.gen(function*() {
              yield* connection.write(`*2\r\n$4\r\nINCR\r\n$${key.length}\r\n${key}\r\n`)
              return text(yield* connection.readUntil("\r\n"))
            })
          ),
        { concurrency: 4 }
      )
      expect(replies).toEqual([":1", ":1", ":1", ":1"])
      expect((yield* pool.stats).opened).toBeLessThanOrEqual(2)
    }))
})
