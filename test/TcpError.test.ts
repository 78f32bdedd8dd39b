import { describe, expect, expectTypeOf, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Schema from "effect/Schema"
import { Endpoint, TcpError } from "../src/index.js"

const at = Endpoint.make("db.example", 5432)
const nodeError = (code: string, syscall = "connect") => Object.assign(new Error(`${syscall} ${code}`), { code, syscall })

describe("classify", () => {
  const cases: Array<[TcpError.Operation, string, string, string?]> = [
    ["connect", "ECONNREFUSED", "ConnectionRefused"],
    ["connect", "ECONNRESET", "ConnectionReset"],
    ["connect", "ECONNABORTED", "ConnectionAborted"],
    ["connect", "ETIMEDOUT", "ConnectTimeout"],
    ["connect", "EHOSTUNREACH", "HostUnreachable"],
    ["connect", "EHOSTDOWN", "HostUnreachable"],
    ["connect", "ENETUNREACH", "NetworkUnreachable"],
    ["connect", "ENETDOWN", "NetworkUnreachable"],
    ["connect", "EACCES", "PermissionDenied"],
    ["connect", "EPERM", "PermissionDenied"],
    ["connect", "EADDRNOTAVAIL", "AddressNotAvailable"],
    ["connect", "ENOTFOUND", "DnsLookupFailed", "getaddrinfo"],
    ["connect", "EAI_AGAIN", "DnsLookupFailed", "getaddrinfo"],
    ["connect", "EAI_FAIL", "DnsLookupFailed", "getaddrinfo"],
    ["connect", "EPIPE", "SocketFailure"],
    ["connect", "EWHATEVER", "SocketFailure"],
    ["read", "ECONNRESET", "ConnectionReset"],
    ["read", "EPIPE", "ConnectionReset"],
    ["read", "ECONNABORTED", "ConnectionAborted"],
    ["read", "ETIMEDOUT", "SocketFailure"],
    ["read", "ECONNREFUSED", "SocketFailure"],
    ["write", "EPIPE", "BrokenPipe"],
    ["write", "ECONNRESET", "ConnectionReset"],
    ["write", "ECONNABORTED", "ConnectionAborted"],
    ["write", "ERR_STREAM_WRITE_AFTER_END", "SocketClosed"],
    ["write", "ERR_STREAM_DESTROYED", "SocketClosed"],
    ["listen", "EADDRINUSE", "AddressInUse"],
    ["listen", "EACCES", "PermissionDenied"],
    ["listen", "EADDRNOTAVAIL", "AddressNotAvailable"],
    ["listen", "ENOTFOUND", "DnsLookupFailed", "getaddrinfo"],
    ["listen", "ECONNREFUSED", "SocketFailure"]
  ]
  for (const [operation, code, tag, syscall] of cases) {
    it(`${code} during ${operation} is ${tag}`, () => {
      const error = TcpError.classify(nodeError(code, syscall ?? operation), operation, at)
      expect(error._tag).toBe(tag)
      expect(error).toMatchObject({ operation, endpoint: at, code, syscall: syscall ?? operation })
    })
  }

  it("keeps an unknown code and Node's message in SocketFailure", () => {
    const error = TcpError.classify(nodeError("EWEIRD", "connect"), "connect", at)
    expect(error).toMatchObject({ _tag: "SocketFailure", code: "EWEIRD", detail: "connect EWEIRD" })
    expect(error.message).toBe("connect to db.example:5432 failed: connect EWEIRD")
  })

  it("marks EAI_AGAIN as a transient DNS failure and ENOTFOUND as a permanent one", () => {
    expect(TcpError.classify(nodeError("EAI_AGAIN", "getaddrinfo"), "connect", at)).toMatchObject({ transient: true })
    expect(TcpError.classify(nodeError("ENOTFOUND", "getaddrinfo"), "connect", at)).toMatchObject({ transient: false })
  })

  it("reads the first attempt of Node's happy-eyeballs AggregateError", () => {
    const aggregate = new AggregateError([nodeError("ECONNREFUSED"), nodeError("ETIMEDOUT")], "all failed")
    expect(TcpError.classify(aggregate, "connect", at)._tag).toBe("ConnectionRefused")
  })

  it("turns something that is not an error into SocketFailure", () => {
    expect(TcpError.classify("boom", "read", at)).toMatchObject({ _tag: "SocketFailure", detail: "boom" })
    expect(TcpError.classify(undefined, "read", at)).toMatchObject({ _tag: "SocketFailure", detail: "undefined" })
  })
})

describe("isTransient", () => {
  const fields = { endpoint: at }
  const transient: Array<TcpError.TcpError> = [
    new TcpError.ConnectionRefused({ ...fields, operation: "connect" }),
    new TcpError.ConnectionReset({ ...fields, operation: "read" }),
    new TcpError.ConnectionAborted({ ...fields, operation: "write" }),
    new TcpError.ConnectTimeout({ ...fields, operation: "connect" }),
    new TcpError.ReadTimeout({ ...fields, operation: "read", timeoutMillis: 1 }),
    new TcpError.WriteTimeout({ ...fields, operation: "write", timeoutMillis: 1 }),
    new TcpError.IdleTimeout({ ...fields, operation: "read", timeoutMillis: 1 }),
    new TcpError.HostUnreachable({ ...fields, operation: "connect" }),
    new TcpError.NetworkUnreachable({ ...fields, operation: "connect" }),
    new TcpError.BrokenPipe({ ...fields, operation: "write" }),
    new TcpError.UnexpectedEof({ ...fields, operation: "read", received: 3, expected: 4 }),
    new TcpError.DnsLookupFailed({ ...fields, operation: "connect", code: "EAI_AGAIN", transient: true }),
    new TcpError.AddressNotAvailable({ ...fields, operation: "connect" }),
    new TcpError.SocketFailure({ ...fields, operation: "read", code: "ETIMEDOUT", detail: "read ETIMEDOUT" })
  ]
  const permanent: Array<TcpError.TcpError> = [
    new TcpError.DnsLookupFailed({ ...fields, operation: "connect", code: "ENOTFOUND", transient: false }),
    new TcpError.AddressInUse({ ...fields, operation: "listen" }),
    new TcpError.PermissionDenied({ ...fields, operation: "listen" }),
    new TcpError.AddressNotAvailable({ ...fields, operation: "listen" }),
    new TcpError.SocketClosed({ ...fields, operation: "write", reason: "Closed" }),
    new TcpError.FrameTooLarge({ ...fields, operation: "read", size: 10, maxBytes: 5 }),
    new TcpError.MalformedFrame({ ...fields, operation: "read", reason: "bad" }),
    new TcpError.InvalidOptions({ operation: "connect", issues: "port" }),
    new TcpError.SocketFailure({ ...fields, operation: "read", code: "EINVAL", detail: "read EINVAL" })
  ]
  for (const error of transient) {
    it(`${error._tag} (${error.operation}) is transient`, () => expect(TcpError.isTransient(error)).toBe(true))
  }
  for (const error of permanent) {
    it(`${error._tag} (${error.operation}) is not transient`, () => expect(TcpError.isTransient(error)).toBe(false))
  }
})

describe("errors", () => {
  it.effect("are yieldable and caught by tag", () =>
    Effect.gen(function*() {
      const recovered = yield* Effect.fail(new TcpError.ConnectionRefused({ operation: "connect", endpoint: at })).pipe(
        Effect.catchTag("ConnectionRefused", (error) => Effect.succeed(`refused ${Endpoint.isTcp(error.endpoint) && error.endpoint.port}`))
      )
      expect(recovered).toBe("refused 5432")
      const exit = yield* Effect.exit(new TcpError.BrokenPipe({ operation: "write", endpoint: at }))
      expect(Exit.isFailure(exit)).toBe(true)
    }))

  it("survive a round trip through their Schema, for logs and across processes", () => {
    const error = new TcpError.DnsLookupFailed({ operation: "connect", endpoint: at, code: "EAI_AGAIN", transient: true })
    const encoded = Schema.encodeSync(TcpError.DnsLookupFailed)(error)
    expect(encoded).toEqual({
      _tag: "DnsLookupFailed",
      operation: "connect",
      endpoint: { host: "db.example", port: 5432 },
      code: "EAI_AGAIN",
      transient: true
    })
    const decoded = Schema.decodeUnknownSync(TcpError.DnsLookupFailed)(JSON.parse(JSON.stringify(encoded)))
    expect(decoded).toBeInstanceOf(TcpError.DnsLookupFailed)
    expect(decoded.message).toBe(
      `DNS lookup of "db.example" failed temporarily (EAI_AGAIN): the resolver is unreachable or busy; retry later`
    )
  })

  it("isTcpError tells ours from others", () => {
    expect(TcpError.isTcpError(new TcpError.SocketClosed({ operation: "read", endpoint: at, reason: "Closed" }))).toBe(true)
    expect(TcpError.isTcpError(new Error("x"))).toBe(false)
    expect(TcpError.isTcpError({ _tag: "ConnectionRefused" })).toBe(false)
  })

  it("isTcpError checks the type: an Error that merely has one of our tags and fields is not ours", () => {
    const lookAlike = Object.assign(new Error("closed"), { _tag: "SocketClosed", operation: "read", endpoint: at, reason: "Closed" })
    expect(TcpError.isTcpError(lookAlike)).toBe(false)
  })

  it("every error class of the module is a member of the TcpError Schema, and isTcpError accepts its instances", () => {
    const members = new Set<unknown>(TcpError.TcpError.members)
    expect(errorClasses.length).toBe(members.size)
    for (const ErrorClass of errorClasses) {
      expect(members.has(ErrorClass), ErrorClass.name).toBe(true)
      const error = new ErrorClass({ operation: "read", endpoint: at }, { disableValidation: true })
      expect(TcpError.isTcpError(error), ErrorClass.name).toBe(true)
      // Decoded from its encoded form it is ours too: the type id is the class's, not the instance's.
      const decoded = Schema.decodeUnknownSync(TcpError.TcpError)(Schema.encodeSync(TcpError.TcpError)(samples[error._tag]))
      expect(TcpError.isTcpError(decoded), ErrorClass.name).toBe(true)
    }
  })

  it("SocketClosed says whether the whole connection is closed or only its write side ended", () => {
    expect(TcpError.classify(nodeError("ERR_STREAM_DESTROYED", "read"), "read", at)).toMatchObject({ reason: "Closed" })
    const ended = TcpError.classify(nodeError("ERR_STREAM_WRITE_AFTER_END", "write"), "write", at)
    expect(ended).toMatchObject({ _tag: "SocketClosed", reason: "WriteSideEnded" })
    expect(ended.message).toBe("write on the connection with db.example:5432 failed: the write side was already ended (endWrite)")
    expect(new TcpError.SocketClosed({ operation: "read", endpoint: at, reason: "Closed" }).message).toBe(
      "read on the connection with db.example:5432 failed: the connection is already closed"
    )
    const decode = Schema.decodeUnknownEither(TcpError.SocketClosed)
    const encoded = { _tag: "SocketClosed", operation: "read", endpoint: { host: "db.example", port: 5432 } }
    expect(Either.isRight(decode({ ...encoded, reason: "WriteSideEnded" }))).toBe(true)
    expect(Either.isLeft(decode({ ...encoded, reason: "closed" }))).toBe(true)
  })

  it("TLS codes get their reason whatever OpenSSL release named the alert; other codes are not TLS's", () => {
    const cases: Array<[string, TcpError.TlsFailureReason | undefined]> = [
      ["CERT_HAS_EXPIRED", "CertificateExpired"],
      ["CERT_REVOKED", "CertificateInvalid"],
      ["ERR_TLS_CERT_ALTNAME_INVALID", "HostnameMismatch"],
      ["ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE", "NoCommonCipher"],
      ["ERR_SSL_SSL/TLS_ALERT_HANDSHAKE_FAILURE", "NoCommonCipher"],
      ["ERR_SSL_TLSV1_ALERT_UNKNOWN_CA", "CertificateRejected"],
      ["ERR_SSL_SSL/TLS_ALERT_UNKNOWN_CA", "CertificateRejected"],
      ["ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE", "CertificateRejected"],
      ["ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED", "CertificateRequired"],
      ["ERR_SSL_SSL/TLS_ALERT_DECODE_ERROR", "PeerAlert"],
      ["ERR_SSL_WRONG_VERSION_NUMBER", "NotTls"],
      ["ERR_SSL_BAD_RECORD_MAC", "ProtocolError"],
      ["ECONNRESET", undefined],
      ["ENOTFOUND", undefined]
    ]
    for (const [code, reason] of cases) expect(TcpError.tlsFailureReason(code), code).toBe(reason)
    const failed = TcpError.classify(nodeError("ERR_SSL_SSL/TLS_ALERT_HANDSHAKE_FAILURE", "read"), "connect", at)
    expect(failed).toMatchObject({ _tag: "TlsHandshakeFailed", reason: "NoCommonCipher" })
    expect(failed.message).toContain("when it requires a client certificate")
    expect(TcpError.classify(nodeError("CERT_HAS_EXPIRED", "read"), "write", at)._tag).toBe("SocketFailure")
  })

  it("InvalidOptions names the operation its options were for, or none for options of no one operation", () => {
    expect(new TcpError.InvalidOptions({ operation: "connect", issues: "port: 70000" }).message).toBe(
      "invalid connect options: port: 70000"
    )
    expect(new TcpError.InvalidOptions({ issues: "Retry.exponential: factor 0" }).message).toBe(
      "invalid options: Retry.exponential: factor 0"
    )
  })
})

/** Every class exported by the TcpError module that builds errors, found by looking, not listed. */
const errorClasses = Object.values(TcpError as Record<string, unknown>).filter(
  (value): value is new(props: object, options: { readonly disableValidation: boolean }) => TcpError.TcpError =>
    typeof value === "function" && value.prototype instanceof Error
)

/** One valid error of each tag, for the round trips through the union Schemas. */
const samples: Record<TcpError.TcpError["_tag"], TcpError.TcpError> = {
  ConnectionRefused: new TcpError.ConnectionRefused({ operation: "connect", endpoint: at }),
  ConnectionReset: new TcpError.ConnectionReset({ operation: "read", endpoint: at }),
  ConnectionAborted: new TcpError.ConnectionAborted({ operation: "write", endpoint: at }),
  ConnectTimeout: new TcpError.ConnectTimeout({ operation: "connect", endpoint: at, timeoutMillis: 5 }),
  TlsHandshakeFailed: new TcpError.TlsHandshakeFailed({ operation: "connect", endpoint: at, reason: "NotTls" }),
  ReadTimeout: new TcpError.ReadTimeout({ operation: "read", endpoint: at, timeoutMillis: 5 }),
  WriteTimeout: new TcpError.WriteTimeout({ operation: "write", endpoint: at, timeoutMillis: 5 }),
  IdleTimeout: new TcpError.IdleTimeout({ operation: "read", endpoint: at, timeoutMillis: 5 }),
  DnsLookupFailed: new TcpError.DnsLookupFailed({ operation: "connect", endpoint: at, code: "ENOTFOUND", transient: false }),
  HostUnreachable: new TcpError.HostUnreachable({ operation: "connect", endpoint: at }),
  NetworkUnreachable: new TcpError.NetworkUnreachable({ operation: "connect", endpoint: at }),
  AddressInUse: new TcpError.AddressInUse({ operation: "listen", endpoint: at }),
  PermissionDenied: new TcpError.PermissionDenied({ operation: "listen", endpoint: at }),
  AddressNotAvailable: new TcpError.AddressNotAvailable({ operation: "listen", endpoint: at }),
  BrokenPipe: new TcpError.BrokenPipe({ operation: "write", endpoint: at }),
  SocketClosed: new TcpError.SocketClosed({ operation: "write", endpoint: at, reason: "Closed" }),
  UnexpectedEof: new TcpError.UnexpectedEof({ operation: "read", endpoint: at, received: 1, expected: 2 }),
  FrameTooLarge: new TcpError.FrameTooLarge({ operation: "read", endpoint: at, size: 9, maxBytes: 8 }),
  MalformedFrame: new TcpError.MalformedFrame({ operation: "read", endpoint: at, reason: "bad" }),
  InvalidOptions: new TcpError.InvalidOptions({ operation: "connect", issues: "port" }),
  SocketFailure: new TcpError.SocketFailure({ operation: "read", endpoint: at, code: "EIO", detail: "read EIO" })
}

describe("the union Schemas", () => {
  it("have as Type the unions that signatures use", () => {
    expectTypeOf<typeof TcpError.ConnectError.Type>().toEqualTypeOf<
      | TcpError.ConnectionRefused
      | TcpError.ConnectionReset
      | TcpError.ConnectionAborted
      | TcpError.ConnectTimeout
      | TcpError.TlsHandshakeFailed
      | TcpError.DnsLookupFailed
      | TcpError.HostUnreachable
      | TcpError.NetworkUnreachable
      | TcpError.PermissionDenied
      | TcpError.AddressNotAvailable
      | TcpError.InvalidOptions
      | TcpError.SocketFailure
    >()
    expectTypeOf<TcpError.ReadError>().toEqualTypeOf<
      | TcpError.ConnectionReset
      | TcpError.ConnectionAborted
      | TcpError.TlsHandshakeFailed
      | TcpError.ReadTimeout
      | TcpError.IdleTimeout
      | TcpError.SocketClosed
      | TcpError.SocketFailure
    >()
    expectTypeOf<TcpError.WriteError>().toEqualTypeOf<
      | TcpError.ConnectionReset
      | TcpError.ConnectionAborted
      | TcpError.BrokenPipe
      | TcpError.WriteTimeout
      | TcpError.IdleTimeout
      | TcpError.SocketClosed
      | TcpError.SocketFailure
    >()
    expectTypeOf<TcpError.ListenError>().toEqualTypeOf<
      | TcpError.AddressInUse
      | TcpError.PermissionDenied
      | TcpError.AddressNotAvailable
      | TcpError.DnsLookupFailed
      | TcpError.InvalidOptions
      | TcpError.SocketFailure
    >()
    expectTypeOf<TcpError.TcpError>().toEqualTypeOf<
      | TcpError.ConnectError
      | TcpError.ReadError
      | TcpError.WriteError
      | TcpError.ListenError
      | TcpError.UnexpectedEof
      | TcpError.FrameTooLarge
      | TcpError.MalformedFrame
    >()
  })

  it("each decodes what it encodes and rejects an error of another phase", () => {
    const unions = [
      [TcpError.ConnectError, samples.ConnectionRefused, samples.BrokenPipe],
      [TcpError.ReadError, samples.ReadTimeout, samples.ConnectionRefused],
      [TcpError.WriteError, samples.BrokenPipe, samples.ReadTimeout],
      [TcpError.ListenError, samples.AddressInUse, samples.ConnectionReset]
    ] as const
    for (const [union, member, stranger] of unions) {
      const schema = union as Schema.Schema<TcpError.TcpError, unknown>
      const decoded = Schema.decodeUnknownSync(schema)(JSON.parse(JSON.stringify(Schema.encodeSync(schema)(member))))
      expect(decoded).toBeInstanceOf(member.constructor)
      expect(decoded).toEqual(member)
      expect(Schema.is(schema)(stranger)).toBe(false)
      expect(Either.isLeft(Schema.encodeEither(schema)(stranger))).toBe(true)
    }
  })
})

describe("Endpoint", () => {
  it("parses host:port and [ipv6]:port", () => {
    expect(Either.getOrThrow(Endpoint.parse("localhost:8080"))).toMatchObject({ host: "localhost", port: 8080 })
    expect(Either.getOrThrow(Endpoint.parse("[::1]:443"))).toMatchObject({ host: "::1", port: 443 })
    expect(String(Either.getOrThrow(Endpoint.parse("[::1]:443")))).toBe("[::1]:443")
  })

  it("rejects what is not host:port with a reason", () => {
    expect(Endpoint.parse("localhost")).toEqual(Either.left(`"localhost" is not of the form host:port, [ipv6]:port or unix:/path`))
    expect(Endpoint.parse("::1:80")).toEqual(Either.left(`"::1:80" is not of the form host:port, [ipv6]:port or unix:/path`))
    expect(Endpoint.parse("host:70000")).toEqual(
      Either.left(`"host:70000": the port must be an integer from 0 to 65535`)
    )
  })
})
