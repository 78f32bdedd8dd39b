/**
 * Attacks on TLS: options of every wrong kind (each must be `InvalidOptions`, never a throw or a
 * defect), options objects changed after their first use, secrets in error messages, and
 * certificate rotation that changes more than the certificate.
 */
import { describe, expect } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as TestClock from "effect/TestClock"
import * as Stream from "effect/Stream"
import { type Connection, Server, Tcp, type TcpError } from "../src/index.js"
import { certificates } from "./support/certs.js"
import * as net from "node:net"
import * as tls from "node:tls"
import { awaitSleeps, effect, eventually, live, rawClient, rawServer, text } from "./support/harness.js"
import { captureLogs } from "./support/logs.js"

const certs = Effect.promise(certificates)

const echo = (connection: Connection) => connection.stream.pipe(Stream.run(connection.sink))

/** The error an effect failed with, or a description of how it did otherwise (a defect, success). */
const outcome = <A, E>(effect: Effect.Effect<A, E, any>) =>
  Effect.map(Effect.exit(Effect.scoped(effect)), (exit) => {
    if (Exit.isSuccess(exit)) return { _tag: "Success", message: "" }
    const failure = Cause.failureOption(exit.cause)
    if (Option.isSome(failure)) return failure.value as { readonly _tag: string; readonly message: string }
    return { _tag: "Defect", message: Cause.pretty(exit.cause) }
  })

/** A server that accepts TCP and never speaks: a client that gets past validation times out. */
const silent = rawServer(() => {})

describe("TLS options the client cannot use are InvalidOptions, never a defect", () => {
  live("options node:tls only rejects in tls.connect (ALPN names too long in bytes, not a SecureContext, ...)", () =>
    Effect.gen(function*() {
      const { port } = yield* silent
      const cases: Record<string, unknown> = {
        "an ALPN name of more than 255 bytes": { ALPNProtocols: ["é".repeat(200)] },
        "an ALPN name as a Buffer in the array": { ALPNProtocols: [Buffer.from("h2")] },
        "an empty ALPN Buffer": { ALPNProtocols: [Buffer.alloc(0)] },
        "a secureContext that is a string": { secureContext: "garbage" },
        "a secureContext that is a plain object": { secureContext: {} },
        "a session that is not a Buffer": { session: "garbage" },
        "a pskCallback that is not a function": { pskCallback: 5 },
        "a port among the TLS options": { port: "x" },
        "a host among the TLS options": { host: 5 },
        "a socket timeout among the TLS options": { timeout: "x" },
        "a handshakeTimeout of 0 (every handshake would fail)": { handshakeTimeout: 0 },
        "a handshakeTimeout of Infinity": { handshakeTimeout: Infinity },
        "a handshakeTimeout of NaN": { handshakeTimeout: NaN }
      }
      for (const [what, tls] of Object.entries(cases)) {
        const result = yield* outcome(Tcp.connect({ host: "127.0.0.1", port, connectTimeout: 2000, tls: tls as any }))
        expect({ what, tag: result._tag }).toEqual({ what, tag: "InvalidOptions" })
      }
    }))

  live("an options object whose getters throw, or a Proxy that throws, is InvalidOptions", () =>
    Effect.gen(function*() {
      const { port } = yield* silent
      const getter = {
        get ca(): string {
          throw new Error("boom")
        }
      }
      const proxy = new Proxy({}, {
        get() {
          throw new Error("proxy get")
        },
        ownKeys() {
          throw new Error("proxy keys")
        }
      })
      for (const tls of [getter, proxy]) {
        const result = yield* outcome(Tcp.connect({ host: "127.0.0.1", port, connectTimeout: 2000, tls: tls as any }))
        expect(result._tag).toBe("InvalidOptions")
      }
    }))
})

describe("TLS options the server cannot use are InvalidOptions, never a defect", () => {
  live("serve and updateTls with options tls.createServer throws on", () =>
    Effect.gen(function*() {
      const c = yield* certs
      const base = { cert: c.server.cert, key: c.server.key }
      const cases: Record<string, unknown> = {
        "an ALPN name of more than 255 bytes": { ...base, ALPNProtocols: ["é".repeat(200)] },
        "an ALPN name as a Buffer in the array": { ...base, ALPNProtocols: [Buffer.from("h2")] },
        "a pskCallback that is not a function": { ...base, pskCallback: 5 },
        "a getter that throws": {
          ...base,
          get ca(): string {
            throw new Error("boom")
          }
        },
        "an sni entry whose getter throws": {
          ...base,
          sni: {
            get "a.test"(): object {
              throw new Error("boom")
            }
          }
        },
        "a Proxy that throws": new Proxy(base, {
          get() {
            throw new Error("proxy get")
          }
        }),
        "a secureContext that is not one": { secureContext: "garbage" },
        "a handshakeTimeout of 0 (every handshake would fail)": { ...base, handshakeTimeout: 0 },
        "a handshakeTimeout of \"0 seconds\"": { ...base, handshakeTimeout: "0 seconds" },
        "an sni entry without a certificate": { ...base, sni: { "a.test": {} } },
        "an sni entry with only a key": { ...base, sni: { "a.test": { key: c.second.key } } },
        "an sni name with a space": { ...base, sni: { "a b.test": { cert: c.second.cert, key: c.second.key } } },
        "an empty sni name": { ...base, sni: { "": { cert: c.second.cert, key: c.second.key } } },
        "an sni name of * alone": { ...base, sni: { "*": { cert: c.second.cert, key: c.second.key } } },
        "an sni name with * inside": { ...base, sni: { "a.*.test": { cert: c.second.cert, key: c.second.key } } },
        "an sni name that is an address": { ...base, sni: { "127.0.0.1": { cert: c.second.cert, key: c.second.key } } },
        "an sni entry named __proto__ that is not TLS options": { ...base, sni: JSON.parse(`{"__proto__": 5}`) }
      }
      const good = yield* Server.serve({ port: 0, tls: base }, echo)
      for (const [what, tls] of Object.entries(cases)) {
        const served = yield* outcome(Server.serve({ port: 0, tls: tls as any }, echo))
        expect({ what, tag: served._tag }).toEqual({ what, tag: "InvalidOptions" })
        const updated = yield* outcome(good.updateTls(tls as any))
        expect({ what, tag: updated._tag }).toEqual({ what, tag: "InvalidOptions" })
      }
      // And the server still serves with its certificate.
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port: good.address.port, tls: { ca: c.ca } })
      yield* connection.write("ok")
      expect(text(yield* connection.readExactly(2))).toBe("ok")
    }))
})

describe("secrets never reach an error message", () => {
  live("InvalidOptions of connect and serve does not show the private key or the passphrase", () =>
    Effect.gen(function*() {
      const c = yield* certs
      const served = yield* outcome(
        Server.serve({ port: 0, tls: { cert: c.server.cert, key: c.server.key, sessionTimeout: "x" } as any }, echo)
      )
      expect(served._tag).toBe("InvalidOptions")
      expect(served.message).not.toContain("PRIVATE KEY")
      const connected = yield* outcome(
        Tcp.connect({
          host: "127.0.0.1",
          port: 1,
          tls: { cert: c.client.cert, key: c.client.key, passphrase: "hunter2", ciphers: "NO-SUCH-CIPHER" }
        })
      )
      expect(connected._tag).toBe("InvalidOptions")
      expect(connected.message).not.toContain("PRIVATE KEY")
      expect(connected.message).not.toContain("hunter2")
    }))
})

describe("the same options object, changed after its first use", () => {
  live("a connect sees the options as they are now, not as they were the first time", () =>
    Effect.gen(function*() {
      const c = yield* certs
      const server = yield* Server.serve({ port: 0, tls: { cert: c.server.cert, key: c.server.key } }, echo)
      const options: Record<string, unknown> = { ca: c.ca }
      const first = yield* Tcp.connect({ host: "127.0.0.1", port: server.address.port, tls: options })
      yield* first.close
      // Now trusting only another CA: the server's certificate must be refused.
      options.ca = c.unknownCa.ca
      const second = yield* outcome(Tcp.connect({ host: "127.0.0.1", port: server.address.port, tls: options }))
      expect(second).toMatchObject({ _tag: "TlsHandshakeFailed", reason: "CertificateUntrusted" })
      // And made invalid: InvalidOptions, not the old context.
      options.ca = undefined
      options.minVersion = "TLSv9"
      const third = yield* outcome(Tcp.connect({ host: "127.0.0.1", port: server.address.port, tls: options }))
      expect(third._tag).toBe("InvalidOptions")
    }))
})

describe("certificate rotation that changes the client-certificate policy", () => {
  live("updateTls turning on requestCert refuses clients without a certificate from then on", () =>
    Effect.gen(function*() {
      const c = yield* certs
      const server = yield* Server.serve({ port: 0, drainTimeout: 0, tls: { cert: c.server.cert, key: c.server.key } }, echo)
      const port = server.address.port
      yield* server.updateTls({ cert: c.server.cert, key: c.server.key, ca: c.ca, requestCert: true })
      const anonymous = Effect.gen(function*() {
        const connection = yield* Tcp.connect({ host: "127.0.0.1", port, tls: { ca: c.ca } })
        yield* connection.write("x")
        return text(yield* connection.readExactly(1))
      })
      const result = yield* outcome(anonymous)
      expect(result._tag).toBe("TlsHandshakeFailed")
      const withCertificate = yield* Tcp.connect({
        host: "127.0.0.1",
        port,
        tls: { ca: c.ca, cert: c.client.cert, key: c.client.key }
      })
      yield* withCertificate.write("y")
      expect(text(yield* withCertificate.readExactly(1))).toBe("y")
      expect(Option.getOrThrow(withCertificate.tls).authorized).toBe(true)
    }))
})

describe("a TLS connection whose records are corrupted after its handshake", () => {
  live("the server's read fails with SocketFailure (code kept), not as a failed handshake", () =>
    Effect.gen(function*() {
      const c = yield* certs
      let result: TcpError.TcpError | undefined
      const server = yield* Server.serve(
        { port: 0, drainTimeout: 0, tls: { cert: c.server.cert, key: c.server.key } },
        (connection) =>
          Effect.gen(function*() {
            yield* connection.write(yield* connection.readExactly(1))
            result = yield* Effect.flip(connection.readExactly(1))
          })
      )
      const raw = yield* rawClient(server.address.port)
      const secure = tls.connect({ socket: raw, ca: c.ca, servername: "localhost" })
      secure.on("error", () => {})
      secure.write("a")
      yield* Effect.async<void>((resume) => {
        secure.once("data", () => resume(Effect.void))
      })
      // Plain text under the TLS session, after a byte went each way.
      raw.write("garbage after the handshake\r\n")
      yield* eventually(() => result !== undefined)
      // OpenSSL 3.0 says ERR_SSL_WRONG_VERSION_NUMBER, 3.5 (Node 26) ERR_SSL_BAD_RECORD_TYPE: the code is kept either way.
      expect(result).toMatchObject({ _tag: "SocketFailure", operation: "read", code: expect.stringMatching(/^ERR_SSL_(WRONG_VERSION_NUMBER|BAD_RECORD_TYPE)$/) })
      expect((yield* server.stats).handshakesFailed).toBe(0)
    }))

  live("the client's read fails with SocketFailure once data came, a TLS 1.3 late verdict stays TlsHandshakeFailed", () =>
    Effect.gen(function*() {
      const c = yield* certs
      let peer: net.Socket | undefined
      const server = tls.createServer({ cert: c.server.cert, key: c.server.key }, (socket) => {
        socket.on("error", () => {})
        socket.write("hello")
        peer = socket
      })
      yield* Effect.acquireRelease(
        Effect.async<void>((resume) => {
          server.listen(0, "127.0.0.1", () => resume(Effect.void))
        }),
        () =>
          Effect.async<void>((resume) => {
            peer?.destroy()
            server.close(() => resume(Effect.void))
          })
      )
      const connection = yield* Tcp.connect({
        host: "127.0.0.1",
        port: (server.address() as net.AddressInfo).port,
        tls: { ca: c.ca }
      })
      expect(text(yield* connection.readExactly(5))).toBe("hello")
      yield* eventually(() => peer !== undefined)
      ;(peer as unknown as { _parent: net.Socket })._parent.write("not a TLS record\r\n")
      const error = yield* Effect.flip(connection.readExactly(1))
      expect(error).toMatchObject({ _tag: "SocketFailure", operation: "read", code: expect.stringMatching(/^ERR_SSL_(WRONG_VERSION_NUMBER|BAD_RECORD_TYPE)$/) })
    }))
})

describe("the log of failed handshakes", () => {
  effect("a burst of failures that stops is summed up at the end of the interval, and at shutdown", () =>
    Effect.gen(function*() {
      const c = yield* certs
      const logs = captureLogs()
      yield* Effect.gen(function*() {
        const scope = yield* Scope.make()
        const server = yield* Server.serve(
          { port: 0, drainTimeout: 0, tls: { cert: c.server.cert, key: c.server.key } },
          echo
        ).pipe(Scope.extend(scope))
        const plainText = (count: number) =>
          Effect.forEach(Array.from({ length: count }), () =>
            Effect.map(rawClient(server.address.port), (socket) => socket.write("GET / HTTP/1.0\r\n\r\n")))
        yield* plainText(3)
        yield* Effect.suspend(() => server.stats).pipe(
          Effect.repeat({ until: (stats) => stats.handshakesFailed === 3 }),
          Effect.zipLeft(eventually(() => logs.entries.length === 1))
        )
        // Three handshake deadlines (cancelled, still registered) and the line for the two not logged.
        yield* awaitSleeps(4, { wakingAt: "10 seconds" })
        yield* TestClock.adjust("10 seconds")
        yield* eventually(() => logs.entries.length === 2)
        expect(logs.entries[1]!.message).toBe("TLS handshakes failed: 2 more since the last report (the last: NotTls)")
        // One more within the next interval, then the server closes: its line comes at the close.
        yield* plainText(1)
        yield* Effect.suspend(() => server.stats).pipe(Effect.repeat({ until: (stats) => stats.handshakesFailed === 4 }))
        yield* Scope.close(scope, Exit.void)
        expect(logs.entries.map((entry) => entry.message).slice(2)).toEqual([
          "TLS handshakes failed: 1 more since the last report (the last: NotTls)"
        ])
      }).pipe(Effect.provide(logs.layer))
    }))
})

describe("clients that half-close during or after the handshake", () => {
  /** The ClientHello a TLS client sends first, as bytes, taken by a server that reads only it. */
  const clientHello = Effect.gen(function*() {
    const first = yield* Effect.makeLatch()
    let hello: Buffer | undefined
    const { port } = yield* rawServer((socket) =>
      socket.once("data", (chunk: Buffer) => {
        hello = chunk
        first.unsafeOpen()
        socket.destroy()
      })
    )
    const client = tls.connect({ host: "127.0.0.1", port, rejectUnauthorized: false })
    client.on("error", () => {})
    yield* first.await
    client.destroy()
    return hello!
  })

  effect("a client that sends its ClientHello and half-closes is let go at once, not held until handshakeTimeout", () =>
    Effect.gen(function*() {
      const c = yield* certs
      const hello = yield* clientHello
      const server = yield* Server.serve({ port: 0, drainTimeout: 0, tls: { cert: c.server.cert, key: c.server.key } }, echo)
      const socket = yield* rawClient(server.address.port)
      socket.on("data", () => {})
      socket.end(hello)
      // Under TestClock the handshake deadline never comes: only the FIN can end the handshake.
      yield* eventually(() => socket.readableEnded || socket.destroyed)
      yield* Effect.suspend(() => server.stats).pipe(Effect.repeat({ until: (stats) => stats.handshakesFailed === 1 }))
    }))

  live("half-close after the handshake still works both ways (endWrite, then the answer)", () =>
    Effect.gen(function*() {
      const c = yield* certs
      const server = yield* Server.serve(
        { port: 0, drainTimeout: 0, tls: { cert: c.server.cert, key: c.server.key } },
        (connection) =>
          Effect.gen(function*() {
            const all = yield* connection.stream.pipe(Stream.runCollect)
            yield* connection.write(`got ${Array.from(all).reduce((n, chunk) => n + chunk.length, 0)}`)
          })
      )
      for (let i = 0; i < 20; i++) {
        const connection = yield* Tcp.connect({ host: "127.0.0.1", port: server.address.port, tls: { ca: c.ca } })
        yield* connection.write("hello")
        yield* connection.endWrite
        const answer = yield* connection.stream.pipe(Stream.runCollect)
        expect(Buffer.concat(Array.from(answer)).toString()).toBe("got 5")
        yield* connection.close
      }
      // And a client whose data and FIN follow its Finished at once.
      const socket = tls.connect({ host: "127.0.0.1", port: server.address.port, ca: c.ca, allowHalfOpen: true } as tls.ConnectionOptions)
      socket.on("error", () => {})
      socket.end("abc")
      const received: Array<Buffer> = []
      socket.on("data", (chunk: Buffer) => received.push(chunk))
      yield* eventually(() => socket.readableEnded || socket.destroyed)
      socket.destroy()
      expect(Buffer.concat(received).toString()).toBe("got 3")
    }))
})

describe("clients that never finish their handshake, against maxConnections", () => {
  effect("no more handshakes are under way than maxConnections: the rest are closed at once, counted as rejected", () =>
    Effect.gen(function*() {
      const c = yield* certs
      const server = yield* Server.serve(
        { port: 0, maxConnections: 3, drainTimeout: 0, tls: { cert: c.server.cert, key: c.server.key } },
        echo
      )
      const port = server.address.port
      // A connection being served does not take a handshake's place.
      const served = yield* Tcp.connect({ host: "127.0.0.1", port, tls: { ca: c.ca } })
      const stalled = yield* Effect.forEach(Array.from({ length: 20 }), () => rawClient(port))
      for (const socket of stalled) socket.on("data", () => {})
      yield* eventually(() => stalled.filter((socket) => socket.readableEnded || socket.destroyed).length === 17)
      expect(yield* server.stats).toMatchObject({ rejected: 17, handshakesFailed: 0, active: 1 })
      yield* served.write("s")
      expect(text(yield* served.readExactly(1))).toBe("s")
      // Their deadline frees the places: a good client then gets through.
      yield* awaitSleeps(3, { wakingAt: "10 seconds" })
      yield* TestClock.adjust("10 seconds")
      yield* eventually(() => stalled.every((socket) => socket.readableEnded || socket.destroyed))
      const good = yield* Tcp.connect({ host: "127.0.0.1", port, tls: { ca: c.ca } })
      yield* good.write("g")
      expect(text(yield* good.readExactly(1))).toBe("g")
      expect(yield* server.stats).toMatchObject({ rejected: 17, handshakesFailed: 3, active: 2 })
    }))
})

describe("a checkServerIdentity of the caller's", () => {
  live("one that throws or returns an Error fails the connect with TlsHandshakeFailed, and the process goes on", () =>
    Effect.gen(function*() {
      const c = yield* certs
      const server = yield* Server.serve({ port: 0, drainTimeout: 0, tls: { cert: c.server.cert, key: c.server.key } }, echo)
      const uncaught: Array<unknown> = []
      const onUncaught = (error: unknown) => uncaught.push(error)
      // vitest reports an uncaught exception as an error of the run: caught here to see it.
      const listeners = process.listeners("uncaughtException")
      process.removeAllListeners("uncaughtException")
      process.on("uncaughtException", onUncaught)
      const checks = [
        () => {
          throw new Error("not the pinned key")
        },
        () => new Error("not the pinned key")
      ]
      const results = yield* Effect.forEach(checks, (checkServerIdentity) =>
        outcome(Tcp.connect({
          host: "127.0.0.1",
          port: server.address.port,
          connectTimeout: 2000,
          tls: { ca: c.ca, checkServerIdentity }
        }))).pipe(
          Effect.ensuring(Effect.sync(() => {
            process.off("uncaughtException", onUncaught)
            for (const listener of listeners) process.on("uncaughtException", listener)
          }))
        )
      expect(uncaught).toEqual([])
      for (const result of results) {
        expect(result).toMatchObject({
          _tag: "TlsHandshakeFailed",
          reason: "CertificateInvalid",
          code: "CERT_REJECTED",
          detail: "not the pinned key"
        })
      }
    }))
})

export type { TcpError }
