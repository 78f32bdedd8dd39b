/**
 * TLS servers: `Server.serve({ tls })` against `openssl s_client` and against our own client,
 * with client certificates, SNI, ALPN, certificate rotation, and clients whose handshake fails,
 * stalls or is not TLS at all: each is counted and logged, never reaches the handler and never
 * affects another connection.
 */
import { describe, expect } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import { type Connection, Server, Tcp, type TcpError } from "../src/index.js"
import { type Certificates, certificates } from "./support/certs.js"
import { awaitSleeps, collect, effect, eventually, live, rawClient, text } from "./support/harness.js"
import { captureLogs } from "./support/logs.js"
import { sClient } from "./support/openssl.js"

const certs = Effect.promise(certificates)

/** Echoes every chunk back until the client closes. */
const echo = (connection: Connection) => connection.stream.pipe(Stream.run(connection.sink))

/** Sends one line back and closes: s_client, which never ends its side, then exits. */
const echoLine = (connection: Connection) =>
  Effect.flatMap(connection.readUntil("\n"), (line) => connection.writeAll([line, "\n"]))

/** A TLS echo server with the test server certificate, and what its handler saw. */
const tlsEcho = (
  tls: (c: Certificates) => Server.TlsServeOptions = (c) => ({ cert: c.server.cert, key: c.server.key }),
  handler: (connection: Connection) => Effect.Effect<void, TcpError.TcpError> = echo
) =>
  Effect.gen(function*() {
    const c = yield* certs
    const seen: Array<Connection> = []
    const server = yield* Server.serve({ port: 0, drainTimeout: 0, tls: tls(c) }, (connection) => {
      seen.push(connection)
      return handler(connection)
    })
    return { server, seen, port: server.address.port, c }
  })

const roundTrip = (connection: Connection, message = "ping") =>
  Effect.gen(function*() {
    yield* connection.write(message)
    return text(yield* connection.readExactly(message.length))
  })

describe("TLS server with openssl s_client", () => {
  live("s_client verifies our certificate, and its bytes are echoed", () =>
    Effect.gen(function*() {
      const { c, port, server } = yield* tlsEcho(undefined, echoLine)
      const result = yield* sClient(port, { caPath: c.caPath, input: "hello\n" })
      expect(result.stdout).toContain("hello")
      expect(result.stderr).toContain("Verification: OK")
      expect(yield* server.stats).toMatchObject({ accepted: 1, handshakesFailed: 0 })
    }))

  live("s_client's client certificate is verified and told to the handler", () =>
    Effect.gen(function*() {
      const { c, port, seen } = yield* tlsEcho((c) => ({
        cert: c.server.cert,
        key: c.server.key,
        ca: c.ca,
        requestCert: true
      }), echoLine)
      const result = yield* sClient(port, { caPath: c.caPath, certPath: c.client.certPath, keyPath: c.client.keyPath, input: "hi\n" })
      expect(result.stdout).toContain("hi")
      const info = Option.getOrThrow(seen[0]!.tls)
      expect(info.authorized).toBe(true)
      expect(Option.getOrThrow(info.peerCertificate).subject.CN).toBe("test-client")
    }))

  const refused: Array<[string, (c: Certificates) => Parameters<typeof sClient>[1], string]> = [
    ["without a client certificate", (c) => ({ caPath: c.caPath, input: "x\n" }), "CertificateRequired"],
    [
      "with a client certificate from an unknown CA",
      (c) => ({ caPath: c.caPath, certPath: c.unknownClient.certPath, keyPath: c.unknownClient.keyPath, input: "x\n" }),
      "CertificateUntrusted"
    ],
    ["forced to TLS 1.2 against a server of TLS 1.3 only", (c) => ({ caPath: c.caPath, protocol: "tls1_2" }), "NoCommonProtocol"]
  ]
  for (const [what, client, reason] of refused) {
    live(`s_client ${what} is refused, never reaches the handler, and is counted and logged as ${reason}`, () =>
      Effect.gen(function*() {
        const logs = captureLogs()
        yield* Effect.gen(function*() {
          const { c, port, seen, server } = yield* tlsEcho((c) => ({
            cert: c.server.cert,
            key: c.server.key,
            ca: c.ca,
            requestCert: true,
            minVersion: "TLSv1.3"
          }))
          const result = yield* sClient(port, client(c))
          expect(result.stdout).not.toContain("x")
          yield* eventually(() => logs.entries.some((entry) => entry.message.startsWith("TLS handshake failed")))
          expect(seen).toEqual([])
          expect(yield* server.stats).toMatchObject({ accepted: 0, handshakesFailed: 1 })
          expect(logs.entries.map((entry) => entry.message)).toEqual([
            expect.stringMatching(new RegExp(`^TLS handshake failed \\(${reason}\\): TLS handshake from 127\\.0\\.0\\.1:\\d+ failed`))
          ])
        }).pipe(Effect.provide(logs.layer))
      }))
  }
})

describe("TLS server with our client", () => {
  live("client and server both ways, with a client certificate and ALPN", () =>
    Effect.gen(function*() {
      const { c, port, seen } = yield* tlsEcho((c) => ({
        cert: c.server.cert,
        key: c.server.key,
        ca: c.ca,
        requestCert: true,
        ALPNProtocols: ["kv/1", "kv/0"]
      }))
      const connection = yield* Tcp.connect({
        host: "localhost",
        port,
        tls: { ca: c.ca, cert: c.client.cert, key: c.client.key, ALPNProtocols: ["kv/1"] }
      })
      expect(yield* roundTrip(connection)).toBe("ping")
      expect(Option.getOrThrow(connection.tls)).toMatchObject({ alpnProtocol: "kv/1", servername: "localhost", authorized: true })
      expect(Option.getOrThrow(seen[0]!.tls)).toMatchObject({ alpnProtocol: "kv/1", servername: "localhost", authorized: true })
    }))

  live("TLS 1.3 with our server requiring client certificates: none is CertificateRequired at the first read; an unknown CA's ends the stream", () =>
    Effect.gen(function*() {
      const { c, port, seen, server } = yield* tlsEcho((c) => ({ cert: c.server.cert, key: c.server.key, ca: c.ca, requestCert: true }))
      const none = yield* Tcp.connect({ host: "127.0.0.1", port, tls: { ca: c.ca } })
      expect(yield* Effect.flip(roundTrip(none))).toMatchObject({
        _tag: "TlsHandshakeFailed",
        reason: "CertificateRequired",
        operation: "read"
      })
      // Node rejects a certificate it cannot verify by closing, without an alert: the read ends.
      const unknown = yield* Tcp.connect({
        host: "127.0.0.1",
        port,
        tls: { ca: c.ca, cert: c.unknownClient.cert, key: c.unknownClient.key }
      })
      yield* unknown.write("ping")
      expect(Option.isNone(yield* unknown.read)).toBe(true)
      expect(seen).toEqual([])
      expect((yield* server.stats).handshakesFailed).toBe(2)
    }))

  live("a client offering no protocol the server speaks fails with NoCommonAlpn", () =>
    Effect.gen(function*() {
      const { c, port, server } = yield* tlsEcho((c) => ({ cert: c.server.cert, key: c.server.key, ALPNProtocols: ["kv/1"] }))
      const error = yield* Effect.flip(Tcp.connect({ host: "127.0.0.1", port, tls: { ca: c.ca, ALPNProtocols: ["http/1.1"] } }))
      expect(error).toMatchObject({ _tag: "TlsHandshakeFailed", reason: "NoCommonAlpn" })
      expect((yield* server.stats).accepted).toBe(0)
    }))

  live("SNI: each server name gets its certificate, a wildcard matches one label, other names the default", () =>
    Effect.gen(function*() {
      const { c, port } = yield* tlsEcho((c) => ({
        cert: c.server.cert,
        key: c.server.key,
        sni: { "second.test": { cert: c.second.cert, key: c.second.key }, "*.other.example": { cert: c.otherName.cert, key: c.otherName.key } }
      }))
      const peerName = (servername?: string) =>
        Effect.gen(function*() {
          const connection = yield* Tcp.connect({
            host: "127.0.0.1",
            port,
            tls: { ca: c.ca, rejectUnauthorized: false, ...(servername ? { servername } : {}) }
          })
          return Option.getOrThrow(Option.getOrThrow(connection.tls).peerCertificate).subjectAltName
        }).pipe(Effect.scoped)
      expect(yield* peerName("second.test")).toBe("DNS:second.test")
      expect(yield* peerName("SECOND.test")).toBe("DNS:second.test")
      expect(yield* peerName("a.other.example")).toBe("DNS:other.example")
      expect(yield* peerName("a.b.other.example")).toContain("127.0.0.1")
      expect(yield* peerName()).toContain("127.0.0.1")
      // And verified as it should be: second.test is valid for its own name.
      const verified = yield* Tcp.connect({ host: "127.0.0.1", port, tls: { ca: c.ca, servername: "second.test" } })
      expect(yield* roundTrip(verified)).toBe("ping")
    }))

  live("certificate rotation: new connections get the new certificate, open ones keep working", () =>
    Effect.gen(function*() {
      const { c, port, server } = yield* tlsEcho()
      const before = yield* Tcp.connect({ host: "127.0.0.1", port, tls: { ca: c.ca } })
      yield* server.updateTls({ cert: c.unknownCa.cert, key: c.unknownCa.key })
      expect(yield* roundTrip(before, "still")).toBe("still")
      const untrusted = yield* Effect.flip(Tcp.connect({ host: "127.0.0.1", port, tls: { ca: c.ca } }))
      expect(untrusted).toMatchObject({ _tag: "TlsHandshakeFailed", reason: "CertificateUntrusted" })
      const after = yield* Tcp.connect({ host: "127.0.0.1", port, tls: { ca: c.unknownCa.ca } })
      expect(yield* roundTrip(after)).toBe("ping")
      expect(yield* roundTrip(before, "again")).toBe("again")
    }))

  live("updateTls refuses bad options and changes nothing; a plain server has no TLS to update", () =>
    Effect.gen(function*() {
      const { c, port, server } = yield* tlsEcho()
      const bad = yield* Effect.flip(server.updateTls({ cert: "not a certificate", key: c.server.key }))
      expect(bad).toMatchObject({ _tag: "InvalidOptions", operation: "listen" })
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port, tls: { ca: c.ca } })
      expect(yield* roundTrip(connection)).toBe("ping")
      const plain = yield* Server.serve({ port: 0 }, echo)
      expect((yield* Effect.flip(plain.updateTls({ cert: c.server.cert, key: c.server.key }))).message).toContain(
        "this server was not started with tls"
      )
    }))

  effect("bad tls options of serve fail with InvalidOptions before anything is bound", () =>
    Effect.gen(function*() {
      const c = yield* certs
      const cases: Array<[unknown, string]> = [
        [true, "expected an object of TLS options"],
        [{}, "a TLS server needs a certificate"],
        [{ cert: "garbage", key: "garbage" }, "tls"],
        [{ cert: c.server.cert, key: c.server.key, requestCert: "yes" }, "requestCert: expected a boolean"],
        [{ cert: c.server.cert, key: c.server.key, sni: "second.test" }, "sni: expected an object of server names"],
        [{ cert: c.server.cert, key: c.server.key, sni: { "x.test": { cert: "bad" } } }, `sni "x.test"`],
        [{ cert: c.server.cert, key: c.server.key, handshakeTimeout: NaN }, "handshakeTimeout"]
      ]
      for (const [tls, issue] of cases) {
        const error = yield* Effect.flip(Server.serve({ port: 0, tls: tls as any }, echo))
        expect(error._tag, JSON.stringify(tls)).toBe("InvalidOptions")
        expect(error.message, JSON.stringify(tls)).toContain(issue)
      }
    }))
})

describe("TLS server against clients that fail, stall or are not TLS", () => {
  effect("a client that opens TCP and never sends a ClientHello is cut at handshakeTimeout; a good client meanwhile is served", () =>
    Effect.gen(function*() {
      const logs = captureLogs()
      yield* Effect.gen(function*() {
        const { c, port, server } = yield* tlsEcho((c) => ({ cert: c.server.cert, key: c.server.key, handshakeTimeout: "4 seconds" }))
        const silent = yield* rawClient(port)
        const ended = yield* Effect.fork(collect(silent))
        yield* awaitSleeps(1, { wakingAt: "4 seconds" })
        const good = yield* Tcp.connect({ host: "127.0.0.1", port, tls: { ca: c.ca } })
        expect(yield* roundTrip(good)).toBe("ping")
        yield* TestClock.adjust("4 seconds")
        yield* Fiber.join(ended)
        expect(yield* roundTrip(good, "after")).toBe("after")
        expect(yield* server.stats).toMatchObject({ accepted: 1, handshakesFailed: 1, active: 1 })
        yield* eventually(() => logs.entries.length > 0)
        expect(logs.entries[0]!.message).toMatch(
          /^TLS handshake failed \(HandshakeTimeout\): TLS handshake from 127\.0\.0\.1:\d+ failed after 4000 ms: the client did not complete the handshake within handshakeTimeout$/
        )
      }).pipe(Effect.provide(logs.layer))
    }))

  live("a plain-text client (an HTTP request) is refused and counted as NotTls", () =>
    Effect.gen(function*() {
      const logs = captureLogs()
      yield* Effect.gen(function*() {
        const { port, seen, server } = yield* tlsEcho()
        const socket = yield* rawClient(port)
        socket.write("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        yield* eventually(() => socket.destroyed || socket.readableEnded)
        yield* eventually(() => logs.entries.length > 0)
        expect(logs.entries[0]!.message).toContain("(NotTls)")
        expect(seen).toEqual([])
        expect((yield* server.stats).handshakesFailed).toBe(1)
      }).pipe(Effect.provide(logs.layer))
    }))

  effect("failed handshakes are logged once, then at most once per 10 s with how many more failed", () =>
    Effect.gen(function*() {
      const logs = captureLogs()
      yield* Effect.gen(function*() {
        const { port, server } = yield* tlsEcho()
        const garbage = Effect.gen(function*() {
          const socket = yield* rawClient(port)
          socket.on("data", () => {})
          socket.write("\x16\x03\x01\x00\x05hello")
          yield* eventually(() => socket.destroyed || socket.readableEnded)
        })
        for (let i = 0; i < 3; i++) yield* garbage
        yield* eventually(() => logs.entries.length >= 1)
        // The two not logged are summed up at the end of the interval, with no failure after them.
        yield* TestClock.adjust("10 seconds")
        yield* eventually(() => logs.entries.length >= 2)
        yield* garbage
        expect((yield* server.stats).handshakesFailed).toBe(4)
        expect(logs.entries.map((entry) => entry.message.replace(/: TLS handshake from.*/, ""))).toEqual([
          expect.stringMatching(/^TLS handshake failed \(\w+\)$/),
          expect.stringMatching(/^TLS handshakes failed: 2 more since the last report \(the last: \w+\)$/)
        ])
      }).pipe(Effect.provide(logs.layer))
    }))

  effect("closing the server's scope destroys the handshakes under way at once, without waiting for their deadline", () =>
    Effect.gen(function*() {
      const c = yield* certs
      const scope = yield* Scope.make()
      const server = yield* Server.serve({ port: 0, tls: { cert: c.server.cert, key: c.server.key } }, echo).pipe(
        Scope.extend(scope)
      )
      const silent = yield* rawClient(server.address.port)
      const ended = yield* Effect.fork(collect(silent))
      // The deadline's sleep is registered once the server has accepted the socket.
      yield* awaitSleeps(1, { wakingAt: "10 seconds" })
      // Under TestClock the deadline never comes: the close must not wait for it.
      yield* Scope.close(scope, Exit.void)
      expect((yield* Fiber.join(ended)).length).toBe(0)
    }))
})

describe("TLS over a Unix domain socket", () => {
  const socketPath = Effect.acquireRelease(
    Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "effect-tcp-tls-unix-"))),
    (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
  ).pipe(Effect.map((dir) => path.join(dir, "tls.sock")))

  live("works as over TCP: the certificate is checked against servername (localhost by default), failures are typed and counted", () =>
    Effect.gen(function*() {
      const logs = captureLogs()
      yield* Effect.gen(function*() {
        const c = yield* certs
        const at = yield* socketPath
        const server = yield* Server.serve({ path: at, tls: { cert: c.server.cert, key: c.server.key } }, echo)
        const connection = yield* Tcp.connect({ path: at, tls: { ca: c.ca } })
        expect(yield* roundTrip(connection)).toBe("ping")
        expect(Option.getOrThrow(connection.tls).protocol).toBe("TLSv1.3")
        expect(connection.remoteAddress.toString()).toBe(`unix:${at}`)
        const mismatch = yield* Effect.flip(Tcp.connect({ path: at, tls: { ca: c.ca, servername: "other.example" } }))
        expect(mismatch).toMatchObject({ _tag: "TlsHandshakeFailed", reason: "HostnameMismatch" })
        expect(mismatch.message).toContain(`unix:${at}`)
        yield* eventually(() => logs.entries.length > 0)
        expect(logs.entries[0]!.message).toContain(`TLS handshake from unix:${at} failed`)
        expect(yield* server.stats).toMatchObject({ accepted: 1, handshakesFailed: 1 })
        // A plain client on the TLS path is not served.
        const plain = yield* Tcp.connect({ path: at })
        yield* plain.write("GET / HTTP/1.1\r\n\r\n")
        expect(Option.isNone(yield* Effect.orElseSucceed(plain.read, () => Option.none()))).toBe(true)
      }).pipe(Effect.provide(logs.layer))
    }))
})
