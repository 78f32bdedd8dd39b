/**
 * The TLS test support works: the certificates are what they claim to be (to `openssl verify`
 * and to Node), and the openssl peers (support/openssl.ts) and the TLS redis-server talk to Node's
 * TLS and to each other.
 */
import { describe, expect } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { execFile } from "node:child_process"
import * as crypto from "node:crypto"
import * as tls from "node:tls"
import { type Certificates, certificates, type KeyPair } from "./support/certs.js"
import { live } from "./support/harness.js"
import { closeLine, sClient, sServer } from "./support/openssl.js"
import { startRedisTls } from "./support/redis.js"

const certs = Effect.promise(certificates)

/** `openssl verify` of `pair` against `caPath`: OK, or the number and text of the error it reports. */
const verify = (caPath: string, pair: KeyPair, ...flags: ReadonlyArray<string>) =>
  Effect.async<string>((resume) => {
    execFile("openssl", ["verify", "-CAfile", caPath, ...flags, pair.certPath], (error, stdout, stderr) => {
      if (error === null) return resume(Effect.succeed(stdout.trim().endsWith(": OK") ? "OK" : stdout))
      const reported = /error (\d+) at \d+ depth lookup: (.*)/.exec(stderr + stdout)
      resume(Effect.succeed(reported === null ? `${stdout}${stderr}` : `${reported[1]} ${reported[2]}`))
    })
  })

/**
 * A Node TLS client to 127.0.0.1:`port` that sends `input` and resolves with the protocol and
 * everything it receives until the server closes; destroyed if interrupted.
 */
const nodeClient = (port: number, options: tls.ConnectionOptions, input: string) =>
  Effect.async<{ readonly protocol: string | null; readonly received: string }, Error>((resume) => {
    const socket = tls.connect({ ...options, host: "127.0.0.1", port })
    let received = ""
    let protocol: string | null = null
    socket.on("secureConnect", () => {
      protocol = socket.getProtocol()
      socket.write(input)
    })
    socket.on("data", (chunk: Buffer) => (received += chunk.toString()))
    socket.on("error", (error) => resume(Effect.fail(error)))
    socket.on("close", () => resume(Effect.succeed({ protocol, received })))
    return Effect.sync(() => socket.destroy())
  })

/**
 * A Node TLS server on 127.0.0.1 that answers the first line it receives with `reply` and ends the
 * connection; closed with its sockets when the scope closes.
 */
const nodeServer = (options: tls.TlsOptions, reply: (line: string) => string) =>
  Effect.acquireRelease(
    Effect.async<{ readonly server: tls.Server; readonly port: number; readonly sockets: Set<tls.TLSSocket> }>(
      (resume) => {
        const sockets = new Set<tls.TLSSocket>()
        const server = tls.createServer(options, (socket) => {
          sockets.add(socket)
          socket.on("close", () => sockets.delete(socket))
          let pending = ""
          socket.on("data", (chunk: Buffer) => {
            pending += chunk.toString()
            const newline = pending.indexOf("\n")
            if (newline >= 0) socket.end(reply(pending.slice(0, newline)))
          })
        })
        server.on("tlsClientError", () => {})
        server.listen(0, "127.0.0.1", () => {
          resume(Effect.succeed({ server, port: (server.address() as { port: number }).port, sockets }))
        })
      }
    ),
    ({ server, sockets }) =>
      Effect.async<void>((resume) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resume(Effect.void))
      })
  )

describe("certificates", () => {
  live("openssl verify accepts those the test CA signed and names what is wrong with the others", () =>
    Effect.gen(function*() {
      const c: Certificates = yield* certs
      const outcomes = yield* Effect.all({
        server: verify(c.caPath, c.server, "-purpose", "sslserver", "-verify_ip", "127.0.0.1"),
        serverByName: verify(c.caPath, c.server, "-verify_hostname", "localhost"),
        serverByIpv6: verify(c.caPath, c.server, "-verify_ip", "::1"),
        serverAsClient: verify(c.caPath, c.server, "-purpose", "sslclient"),
        second: verify(c.caPath, c.second, "-verify_hostname", "second.test"),
        secondAsLocalhost: verify(c.caPath, c.second, "-verify_hostname", "localhost"),
        expired: verify(c.caPath, c.expired),
        notYetValid: verify(c.caPath, c.notYetValid),
        otherName: verify(c.caPath, c.otherName, "-verify_hostname", "other.example"),
        otherNameAsIp: verify(c.caPath, c.otherName, "-verify_ip", "127.0.0.1"),
        unknownCa: verify(c.caPath, c.unknownCa),
        unknownCaByItsCa: verify(c.unknownCa.caPath, c.unknownCa, "-verify_ip", "127.0.0.1"),
        selfSigned: verify(c.caPath, c.selfSigned),
        selfSignedByItself: verify(c.selfSigned.certPath, c.selfSigned, "-verify_ip", "127.0.0.1"),
        client: verify(c.caPath, c.client, "-purpose", "sslclient"),
        clientAsServer: verify(c.caPath, c.client, "-purpose", "sslserver"),
        unknownClient: verify(c.caPath, c.unknownClient, "-purpose", "sslclient"),
        unknownClientByItsCa: verify(c.unknownCa.caPath, c.unknownClient, "-purpose", "sslclient")
      }, { concurrency: "unbounded" })
      expect(outcomes).toEqual({
        server: "OK",
        serverByName: "OK",
        serverByIpv6: "OK",
        serverAsClient: "26 unsuitable certificate purpose",
        second: "OK",
        secondAsLocalhost: "62 hostname mismatch",
        expired: "10 certificate has expired",
        notYetValid: "9 certificate is not yet valid",
        otherName: "OK",
        otherNameAsIp: "64 IP address mismatch",
        unknownCa: "20 unable to get local issuer certificate",
        unknownCaByItsCa: "OK",
        selfSigned: "18 self-signed certificate",
        selfSignedByItself: "OK",
        client: "OK",
        clientAsServer: "26 unsuitable certificate purpose",
        unknownClient: "20 unable to get local issuer certificate",
        unknownClientByItsCa: "OK"
      })
    }))

  live("Node reads the validity, names and issuer each certificate was made with", () =>
    Effect.gen(function*() {
      const c = yield* certs
      const x509 = (pem: string) => new crypto.X509Certificate(pem)
      const ca = x509(c.ca)
      const unknownCa = x509(c.unknownCa.ca)
      const now = Date.now()
      const validNow = (pem: string) => Date.parse(x509(pem).validFrom) < now && now < Date.parse(x509(pem).validTo)
      const names = (pem: string) => {
        const certificate = x509(pem)
        return [certificate.checkIP("127.0.0.1"), certificate.checkIP("::1"), certificate.checkHost("localhost")]
      }
      const localhost = ["127.0.0.1", "::1", "localhost"]
      const none = [undefined, undefined, undefined]

      expect(ca.ca).toBe(true)
      expect(ca.checkIssued(ca)).toBe(true)
      const current = [c.server, c.second, c.otherName, c.unknownCa, c.selfSigned, c.client, c.unknownClient]
      for (const pem of [c.ca, c.unknownCa.ca, ...current.map((pair) => pair.cert)]) {
        expect(validNow(pem)).toBe(true)
      }
      expect(Date.parse(x509(c.expired.cert).validTo)).toBeLessThan(now)
      expect(Date.parse(x509(c.notYetValid.cert).validFrom)).toBeGreaterThan(now + 5 * 365 * 24 * 3600 * 1000)

      expect(names(c.server.cert)).toEqual(localhost)
      expect(names(c.expired.cert)).toEqual(localhost)
      expect(names(c.notYetValid.cert)).toEqual(localhost)
      expect(names(c.unknownCa.cert)).toEqual(localhost)
      expect(names(c.selfSigned.cert)).toEqual(localhost)
      expect(names(c.otherName.cert)).toEqual(none)
      expect(x509(c.otherName.cert).checkHost("other.example")).toBe("other.example")
      expect(names(c.second.cert)).toEqual(none)
      expect(x509(c.second.cert).checkHost("second.test")).toBe("second.test")

      for (const pair of [c.server, c.second, c.expired, c.notYetValid, c.otherName, c.client]) {
        expect(x509(pair.cert).checkIssued(ca) && x509(pair.cert).verify(ca.publicKey)).toBe(true)
        expect(x509(pair.cert).checkPrivateKey(crypto.createPrivateKey(pair.key))).toBe(true)
      }
      for (const pair of [c.unknownCa, c.unknownClient]) {
        expect(x509(pair.cert).checkIssued(ca)).toBe(false)
        expect(x509(pair.cert).verify(unknownCa.publicKey)).toBe(true)
      }
      // Its own issuer, and signed by its own key (checkIssued would also want keyCertSign usage).
      const selfSigned = x509(c.selfSigned.cert)
      expect(selfSigned.issuer).toBe(selfSigned.subject)
      expect(selfSigned.verify(selfSigned.publicKey)).toBe(true)
      expect(selfSigned.ca).toBe(false)
      expect(x509(c.server.cert).keyUsage).toEqual(["1.3.6.1.5.5.7.3.1"])
      expect(x509(c.client.cert).keyUsage).toEqual(["1.3.6.1.5.5.7.3.2"])
      expect(x509(c.client.cert).subject).toBe("CN=test-client")
    }))
})

describe("openssl peers", () => {
  live("a Node client trusting the CA gets its lines back reversed from sServer, which closes on CLOSE", () =>
    Effect.gen(function*() {
      const c = yield* certs
      const server = yield* sServer(c.server)
      const { protocol, received } = yield* nodeClient(server.port, { ca: c.ca }, `hello\r\nworld\n${closeLine}`)
      expect({ protocol, received }).toEqual({ protocol: "TLSv1.3", received: "olleh\ndlrow\n" })
      expect(server.output()).toContain("CONNECTION ESTABLISHED")
    }))

  live("sServer serves the next connection after one closes, with the protocol it was pinned to", () =>
    Effect.gen(function*() {
      const c = yield* certs
      const server = yield* sServer({ ...c.server, protocol: "tls1_2" })
      const first = yield* nodeClient(server.port, { ca: c.ca }, `one\n${closeLine}`)
      const second = yield* nodeClient(server.port, { ca: c.ca }, `two\n${closeLine}`)
      expect([first, second]).toEqual([
        { protocol: "TLSv1.2", received: "eno\n" },
        { protocol: "TLSv1.2", received: "owt\n" }
      ])
    }))

  live("Node refuses sServer with each flawed certificate, with the error that names the flaw", () =>
    Effect.gen(function*() {
      const c = yield* certs
      const refusal = (pair: KeyPair, ca: string) =>
        Effect.gen(function*() {
          const server = yield* sServer(pair)
          const outcome = yield* Effect.either(nodeClient(server.port, { ca }, closeLine))
          return outcome._tag === "Left" ? (outcome.left as NodeJS.ErrnoException).code : "connected"
        })
      const refusals = yield* Effect.all({
        expired: refusal(c.expired, c.ca),
        notYetValid: refusal(c.notYetValid, c.ca),
        otherName: refusal(c.otherName, c.ca),
        unknownCa: refusal(c.unknownCa, c.ca),
        unknownCaTrusted: refusal(c.unknownCa, c.unknownCa.ca),
        selfSigned: refusal(c.selfSigned, c.ca),
        selfSignedTrusted: refusal(c.selfSigned, c.selfSigned.cert)
      }, { concurrency: "unbounded" })
      expect(refusals).toEqual({
        expired: "CERT_HAS_EXPIRED",
        notYetValid: "CERT_NOT_YET_VALID",
        otherName: "ERR_TLS_CERT_ALTNAME_INVALID",
        unknownCa: "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
        unknownCaTrusted: "connected",
        selfSigned: "DEPTH_ZERO_SELF_SIGNED_CERT",
        selfSignedTrusted: "connected"
      })
    }))

  live("sServer picks its ALPN protocol and TLS 1.3 cipher suite as told", () =>
    Effect.gen(function*() {
      const c = yield* certs
      const server = yield* sServer({ ...c.server, alpn: ["b", "a"], ciphersuites: "TLS_CHACHA20_POLY1305_SHA256" })
      const negotiated = yield* Effect.async<{ readonly alpn: string | false | null; readonly cipher: string }, Error>(
        (resume) => {
          const socket = tls.connect({ host: "127.0.0.1", port: server.port, ca: c.ca, ALPNProtocols: ["a", "b"] })
          socket.on("secureConnect", () => {
            resume(Effect.succeed({ alpn: socket.alpnProtocol, cipher: socket.getCipher().standardName }))
            socket.end(closeLine)
          })
          socket.on("error", (error) => resume(Effect.fail(error)))
          return Effect.sync(() => socket.destroy())
        }
      )
      expect(negotiated).toEqual({ alpn: "b", cipher: "TLS_CHACHA20_POLY1305_SHA256" })
      const full = yield* sClient(server.port, { caPath: c.caPath, alpn: ["a"], fullSummary: true, input: `ok\n${closeLine}` })
      expect(full.code).toBe(0)
      expect(full.stdout).toContain("ALPN protocol: a")
      expect(full.stdout).toContain("ko\n")
      const none = yield* sClient(server.port, { caPath: c.caPath, alpn: ["c"], input: `ok\n${closeLine}` })
      expect(none.code).toBe(1)
      expect(none.stderr).toContain("no application protocol")
    }))

  live("sServer requesting a client certificate takes a client without one and refuses one from another CA", () =>
    Effect.gen(function*() {
      const c = yield* certs
      const server = yield* sServer({ ...c.server, clientCaPath: c.caPath, clientCertificate: "request" })
      const anonymous = yield* sClient(server.port, { caPath: c.caPath, input: `hi\n${closeLine}` })
      expect(anonymous).toMatchObject({ code: 0, stdout: "ih\n" })
      const refused = yield* sClient(server.port, { ...c.unknownClient, caPath: c.caPath, input: `hi\n${closeLine}` })
      expect(refused).toMatchObject({ code: 1, stdout: "" })
      expect(refused.stderr).toContain("alert unknown ca")
    }))

  live("sServer requiring a client certificate takes one the CA signed and refuses one from another CA", () =>
    Effect.gen(function*() {
      const c = yield* certs
      const server = yield* sServer({ ...c.server, clientCaPath: c.caPath, clientCertificate: "require" })
      const accepted = yield* sClient(server.port, { ...c.client, caPath: c.caPath, input: `hi\n${closeLine}` })
      expect(accepted).toMatchObject({ code: 0, stdout: "ih\n", timedOut: false })
      const refused = yield* sClient(server.port, { ...c.unknownClient, caPath: c.caPath, input: `hi\n${closeLine}` })
      expect(refused).toMatchObject({ code: 1, stdout: "", timedOut: false })
      expect(refused.stderr).toContain("alert unknown ca")
      expect(server.output()).toContain("Peer certificate: CN = test-client")
    }))

  live("sServer with a second certificate serves it to a client that asks for its name", () =>
    Effect.gen(function*() {
      const c = yield* certs
      const server = yield* sServer({ ...c.server, sni: { serverName: "second.test", ...c.second } })
      const second = yield* sClient(server.port, { caPath: c.caPath, serverName: "second.test" })
      const first = yield* sClient(server.port, { caPath: c.caPath })
      expect([second.code, first.code]).toEqual([0, 0])
      expect(second.stderr).toContain("Peer certificate: CN = second.test")
      expect(first.stderr).toContain("Peer certificate: CN = localhost")
    }))

  live("sClient trusting the CA talks to a Node TLS server with the server certificate", () =>
    Effect.gen(function*() {
      const c = yield* certs
      const { port } = yield* nodeServer({ cert: c.server.cert, key: c.server.key }, (line) => `got ${line}\n`)
      const result = yield* sClient(port, { caPath: c.caPath, input: "hello\n" })
      expect(result).toMatchObject({ code: 0, stdout: "got hello\n", timedOut: false })
      expect(result.stderr).toContain("Verification: OK")
    }))

  live("sClient refuses a Node server whose certificate is from a CA it does not trust", () =>
    Effect.gen(function*() {
      const c = yield* certs
      const { port } = yield* nodeServer({ cert: c.unknownCa.cert, key: c.unknownCa.key }, () => "")
      const result = yield* sClient(port, { caPath: c.caPath, input: "hello\n" })
      expect(result).toMatchObject({ code: 1, stdout: "", timedOut: false })
      expect(result.stderr).toContain("unable to get local issuer certificate")
    }))

  live("sClient forcing TLS 1.3 fails against sServer pinned to TLS 1.2", () =>
    Effect.gen(function*() {
      const c = yield* certs
      const server = yield* sServer({ ...c.server, protocol: "tls1_2" })
      const result = yield* sClient(server.port, { caPath: c.caPath, protocol: "tls1_3", input: `x\n${closeLine}` })
      expect(result).toMatchObject({ code: 1, stdout: "", timedOut: false })
      expect(result.stderr).toContain("alert protocol version")
      expect(server.output()).toContain("unsupported protocol")
    }))

  live("sClient is killed at its timeout when the server never closes", () =>
    Effect.gen(function*() {
      const c = yield* certs
      const { port } = yield* nodeServer({ cert: c.server.cert, key: c.server.key }, () => "")
      const result = yield* sClient(port, { caPath: c.caPath, input: "no newline", timeoutMillis: 300 })
      expect(result).toMatchObject({ code: null, timedOut: true })
    }))
})

describe("redis-server over TLS", () => {
  live("answers PING on its TLS port, to Node and to s_client", () =>
    Effect.gen(function*() {
      const c = yield* certs
      const redis = yield* startRedisTls(c)
      expect(yield* redis.command("PING")).toBe("+PONG\r\n")
      const result = yield* sClient(redis.port, { caPath: c.caPath, input: "SET k v\r\nGET k\r\nQUIT\r\n" })
      expect(result).toMatchObject({ code: 0, stdout: "+OK\r\n$1\r\nv\r\n+OK\r\n" })
    }))
})
