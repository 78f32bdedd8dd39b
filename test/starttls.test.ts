/**
 * STARTTLS: a plain connection upgraded to TLS in place after a plain-text exchange, against a
 * server that speaks the SMTP-like exchange and then TLS on the same socket.
 */
import { describe, expect } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import type * as net from "node:net"
import * as tls from "node:tls"
import { Connection, Tcp } from "../src/index.js"
import { unreadBytes } from "../src/internal/connection.js"
import { type Certificates, certificates, type KeyPair } from "./support/certs.js"
import { eventually, live, rawServer, text } from "./support/harness.js"

const certs = Effect.promise(certificates)

/**
 * Greets, waits for "STARTTLS\r\n", answers "220 go" (followed by `extra` in the same write), then
 * speaks TLS with `keys` and echoes. `secured` counts the sockets that completed the handshake.
 */
const startTlsServer = (keys: (c: Certificates) => KeyPair, extra = "", stall = false) =>
  Effect.gen(function*() {
    const c = yield* certs
    const state = { secured: 0, open: 0 }
    const { port } = yield* rawServer((socket: net.Socket) => {
      state.open++
      socket.on("close", () => state.open--)
      socket.write("220 ready\r\n")
      let pending = ""
      const onData = (chunk: Buffer) => {
        pending += chunk.toString("latin1")
        if (!pending.includes("\r\n")) return
        socket.off("data", onData)
        socket.write(`220 go\r\n${extra}`)
        if (stall) return
        const secure = new tls.TLSSocket(socket, { isServer: true, secureContext: tls.createSecureContext(keys(c)) })
        secure.on("error", () => secure.destroy())
        secure.on("secure", () => state.secured++)
        secure.on("data", (data) => secure.write(data))
        secure.on("end", () => secure.end())
      }
      socket.on("data", onData)
    })
    return { port, state, c }
  })

const exchangeToTls = (plain: Connection.Connection) =>
  Effect.gen(function*() {
    expect(text(yield* plain.readUntil("\r\n"))).toBe("220 ready")
    yield* plain.write("STARTTLS\r\n")
    expect(text(yield* plain.readUntil("\r\n"))).toBe("220 go")
  })

describe("Connection.startTls", () => {
  live("upgrades after the plain exchange, checks the certificate against the host dialled, and the plain connection is done", () =>
    Effect.gen(function*() {
      const { c, port, state } = yield* startTlsServer((c) => c.server)
      const plain = yield* Tcp.connect({ host: "localhost", port })
      yield* exchangeToTls(plain)
      const secure = yield* plain.pipe(Connection.startTls({ ca: c.ca }))
      expect(Option.getOrThrow(secure.tls)).toMatchObject({ authorized: true, servername: "localhost" })
      yield* secure.write("over tls")
      expect(text(yield* secure.readExactly(8))).toBe("over tls")
      expect(state.secured).toBe(1)
      expect((yield* Effect.flip(plain.read))._tag).toBe("SocketClosed")
      expect((yield* Effect.flip(plain.write("x")))._tag).toBe("SocketClosed")
    }))

  live("a certificate for another name fails with HostnameMismatch, and nothing stays open", () =>
    Effect.gen(function*() {
      const { c, port, state } = yield* startTlsServer((c) => c.otherName)
      const plain = yield* Tcp.connect({ host: "localhost", port })
      yield* exchangeToTls(plain)
      const error = yield* Effect.flip(Connection.startTls(plain, { ca: c.ca }))
      expect(error).toMatchObject({ _tag: "TlsHandshakeFailed", reason: "HostnameMismatch", operation: "connect" })
      yield* eventually(() => state.open === 0)
    }))

  live("bytes that arrived before the handshake (injected after the go-ahead) are refused, and the plain connection is left as it was", () =>
    Effect.gen(function*() {
      const { c, port } = yield* startTlsServer((c) => c.server, "MAIL FROM:<evil@example>\r\n", true)
      const plain = yield* Tcp.connect({ host: "localhost", port })
      yield* exchangeToTls(plain)
      // The injected line came with the go-ahead: it is received and unread.
      yield* eventually(() => unreadBytes(plain) > 0)
      const error = yield* Effect.flip(Connection.startTls(plain, { ca: c.ca }))
      expect(error).toMatchObject({ _tag: "TlsHandshakeFailed", reason: "ProtocolError" })
      expect(error.message).toContain("TLS handshake with")
      expect((error as { detail?: string }).detail).toContain("bytes arrived before the handshake")
      expect(text(yield* plain.readUntil("\r\n"))).toBe("MAIL FROM:<evil@example>")
    }))

  live("a closed or half-closed connection is SocketClosed; an upgrade interrupted while the server is silent is released", () =>
    Effect.gen(function*() {
      const { c, port, state } = yield* startTlsServer((c) => c.server, "", true)
      const closed = yield* Tcp.connect({ host: "localhost", port })
      yield* closed.close
      expect(yield* Effect.flip(Connection.startTls(closed, true))).toMatchObject({ _tag: "SocketClosed", reason: "Closed" })
      const ended = yield* Tcp.connect({ host: "localhost", port })
      yield* ended.endWrite
      expect(yield* Effect.flip(Connection.startTls(ended, true))).toMatchObject({ _tag: "SocketClosed", reason: "WriteSideEnded" })
      const stalled = yield* Tcp.connect({ host: "localhost", port })
      yield* exchangeToTls(stalled)
      const fiber = yield* Effect.fork(Connection.startTls(stalled, { ca: c.ca }).pipe(Effect.scoped))
      yield* eventually(() => state.open >= 1)
      expect(Exit.isInterrupted(yield* Fiber.interrupt(fiber))).toBe(true)
    }))

  live("bad options are InvalidOptions, and the connection stays usable", () =>
    Effect.gen(function*() {
      const { port } = yield* startTlsServer((c) => c.server)
      const plain = yield* Tcp.connect({ host: "localhost", port })
      const error = yield* Effect.flip(Connection.startTls(plain, { minVersion: "TLSv9" } as any))
      expect(error._tag).toBe("InvalidOptions")
      expect(text(yield* plain.readUntil("\r\n"))).toBe("220 ready")
    }))
})
