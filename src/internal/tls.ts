/**
 * TLS over any transport's socket: the `tls` options of connect and serve, validated by building
 * their secure context once (a bad certificate, key or cipher list is `InvalidOptions`, never a
 * throw from `node:tls`), and what a TLS connection tells about itself, read once at the end of
 * its handshake and kept as plain data.
 */
import * as Duration from "effect/Duration"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as net from "node:net"
import * as tls from "node:tls"
import type { PeerCertificate, TlsInfo } from "../Connection.js"
import * as Endpoint from "../Endpoint.js"
import * as TcpError from "../TcpError.js"
import { DurationOption, showValue } from "./values.js"

/** The client's TLS, validated: what `tls.connect` gets besides the socket's target. */
export interface ClientTls {
  /** Options for `tls.connect`, the secure context among them. */
  readonly connect: tls.ConnectionOptions
  /** The limit on the handshake alone, counted from the TCP connection (connectTimeout covers both). */
  readonly handshakeTimeout: Duration.Duration | undefined
}

const protocolVersions = new Set(["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"])

const controlCharacters = /[\s\u0000-\u001f\u007f-\u009f]/

type Check = (value: unknown) => string | undefined

const isPemLike = (value: unknown) => typeof value === "string" || value instanceof Uint8Array
const pemOrList: Check = (value) =>
  isPemLike(value) || (Array.isArray(value) && value.every((item) => isPemLike(item) || typeof item === "object"))
    ? undefined
    : `expected PEM text, a Buffer, or an array of them, got ${showValue(value)}`
const boolean: Check = (value) => typeof value === "boolean" ? undefined : `expected a boolean, got ${showValue(value)}`
const text: Check = (value) => typeof value === "string" ? undefined : `expected a string, got ${showValue(value)}`
const version: Check = (value) =>
  typeof value === "string" && protocolVersions.has(value)
    ? undefined
    : `expected one of TLSv1, TLSv1.1, TLSv1.2, TLSv1.3, got ${showValue(value)}`
// node:tls takes an array of names (strings only) and checks their length in bytes only in
// tls.connect and tls.createServer, by throwing.
const protocols: Check = (value) =>
  Array.isArray(value) && value.length > 0 &&
    value.every((item) => typeof item === "string" && item.length > 0 && Buffer.byteLength(item) < 256)
    ? undefined
    : `expected a non-empty array of protocol names of 1 to 255 bytes (such as ["h2", "http/1.1"]), got ${showValue(value)}`
const servername: Check = (value) => {
  if (typeof value !== "string" || value.length === 0) return `expected a host name, got ${showValue(value)}`
  if (controlCharacters.test(value)) return `a server name must not contain spaces or control characters, got ${showValue(value)}`
  // RFC 6066 forbids an address as server name; Node warns and sends it anyway.
  if (net.isIP(value) !== 0) return `expected a host name, not an IP address (${value}): leave servername out to connect by address`
  return undefined
}
const fn: Check = (value) => typeof value === "function" ? undefined : `expected a function, got ${showValue(value)}`
const bytes: Check = (value) => value instanceof Uint8Array ? undefined : `expected a Buffer, got ${showValue(value)}`
// What tls.createSecureContext makes; node:tls throws on anything else, and only when it connects.
const SecureContextClass = tls.createSecureContext().constructor
const context: Check = (value) =>
  value instanceof SecureContextClass
    ? undefined
    : `expected a SecureContext made by tls.createSecureContext, got ${showValue(value)}`
// The socket's own options, which connect takes itself: among the TLS ones they would override the
// connect's target (host, port) or its settings, or make tls.connect throw.
const transportKeys = [
  "host", "port", "path", "socket", "allowHalfOpen", "timeout", "lookup", "family", "hints", "localAddress",
  "localPort", "noDelay", "keepAlive", "keepAliveInitialDelay", "signal", "onread", "autoSelectFamily"
]
const notHere: Check = (value) =>
  `set on connect's own options, not among its tls options (got ${showValue(value)})`

/** Checks of the options this module reads or that are easy to get wrong; the others go to `node:tls` as they are. */
const clientChecks: Readonly<Record<string, Check>> = {
  ca: pemOrList,
  cert: pemOrList,
  key: pemOrList,
  pfx: pemOrList,
  crl: pemOrList,
  passphrase: text,
  ciphers: text,
  ecdhCurve: text,
  sigalgs: text,
  minVersion: version,
  maxVersion: version,
  servername,
  rejectUnauthorized: boolean,
  ALPNProtocols: protocols,
  checkServerIdentity: fn,
  secureContext: context,
  session: bytes,
  pskCallback: fn,
  ...Object.fromEntries(transportKeys.map((key) => [key, notHere]))
}

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value) && !(value instanceof Uint8Array)

/** What is wrong with the options, one line per option, or the options without the ones this module handles. */
const checkFields = (
  input: Record<string, unknown>,
  checks: Readonly<Record<string, Check>>
): { readonly issues: ReadonlyArray<string>; readonly handshakeTimeout: Duration.Duration | undefined } => {
  const issues: Array<string> = []
  for (const [name, check] of Object.entries(checks)) {
    if (input[name] === undefined) continue
    const issue = check(input[name])
    if (issue !== undefined) issues.push(`${name}: ${issue}`)
  }
  let handshakeTimeout: Duration.Duration | undefined
  if (input.handshakeTimeout !== undefined) {
    const decoded = Schema.decodeUnknownEither(DurationOption)(input.handshakeTimeout)
    if (decoded._tag === "Left") {
      issues.push(`handshakeTimeout: expected a finite, non-negative duration, got ${showValue(input.handshakeTimeout)}`)
    } else if (Duration.toMillis(decoded.right) === 0) {
      // Every handshake would fail at once (node:tls takes 0 for no limit: a trap either way).
      issues.push("handshakeTimeout: expected a positive duration, got 0 (no handshake completes in no time)")
    } else {
      handshakeTimeout = decoded.right
    }
  }
  return { issues, handshakeTimeout }
}

/** `node:tls`'s message for options it refuses (a key that is not PEM, an unknown cipher), without its internal prefix. */
const nodeMessage = (error: unknown): string => {
  const message = error instanceof Error ? error.message : String(error)
  const code = (error as { code?: unknown } | null)?.code
  return typeof code === "string" ? `${message} (${code})` : message
}

/**
 * The options' own fields as they are now, copied once (getters are read once): what is checked is
 * what is used. An object whose fields cannot be read (a getter or a Proxy that throws) is the
 * message of what it threw.
 */
const snapshot = (input: object): Record<string, unknown> | string => {
  try {
    const copy: Record<string, unknown> = {}
    for (const key of Object.keys(input)) {
      Object.defineProperty(copy, key, {
        value: (input as Record<string, unknown>)[key],
        enumerable: true,
        writable: true,
        configurable: true
      })
    }
    return copy
  } catch (error) {
    return `the options could not be read: ${nodeMessage(error)}`
  }
}

/** Whether two snapshots have the same fields with the same values. */
const sameFields = (a: Record<string, unknown>, b: Record<string, unknown>): boolean => {
  const keys = Object.keys(a)
  return keys.length === Object.keys(b).length && keys.every((key) => Object.hasOwn(b, key) && a[key] === b[key])
}

// Contexts by the options object they were made from: a pool or a retry connects with the same
// options again and again, and a context costs a fraction of a millisecond (more with a CA list).
// Each is kept with the fields it was made from, so that an object changed since is validated again.
const clientContexts = new WeakMap<object, { readonly fields: Record<string, unknown>; readonly validated: ClientTls }>()

const fail = (ast: Schema.Schema.AnyNoContext["ast"], input: unknown, message: string) =>
  ParseResult.fail(new ParseResult.Type(ast, input, message))

/**
 * The `tls` option of connect: `true` (Node's root certificates, the host as server name) or
 * `node:tls`'s own options with `handshakeTimeout`.
 */
export const ClientTlsOption: Schema.Schema<ClientTls, unknown> = Schema.transformOrFail(
  Schema.Unknown,
  Schema.Any as Schema.Schema<ClientTls>,
  {
    strict: true,
    decode: (input, _, ast) => {
      if (input === true) input = {}
      if (!isRecord(input)) return fail(ast, input, `expected true or an object of TLS options, got ${showValue(input)}`)
      const fields = snapshot(input)
      if (typeof fields === "string") return fail(ast, input, fields)
      const cached = clientContexts.get(input)
      if (cached !== undefined && sameFields(cached.fields, fields)) return ParseResult.succeed(cached.validated)
      const { handshakeTimeout, issues } = checkFields(fields, clientChecks)
      if (issues.length > 0) return fail(ast, input, issues.join("; "))
      const { handshakeTimeout: _timeout, ...options } = fields
      let secureContext: tls.SecureContext
      try {
        secureContext = options.secureContext as tls.SecureContext ??
          tls.createSecureContext(options as tls.SecureContextOptions)
      } catch (error) {
        return fail(ast, input, nodeMessage(error))
      }
      const check = options.checkServerIdentity as tls.ConnectionOptions["checkServerIdentity"]
      const validated: ClientTls = {
        connect: {
          ...options,
          secureContext,
          ...(check === undefined ? {} : { checkServerIdentity: guardedIdentityCheck(check) })
        },
        handshakeTimeout
      }
      clientContexts.set(input, { fields, validated })
      return ParseResult.succeed(validated)
    },
    encode: (validated) => ParseResult.succeed(validated)
  }
)

/**
 * The caller's `checkServerIdentity` as node:tls may call it: one that throws would throw out of a
 * socket's event (an uncaught exception: the process ends), so what it throws is returned as its
 * verdict instead; a verdict without a code gets CERT_REJECTED, so that the connect fails with
 * `TlsHandshakeFailed` (CertificateInvalid) rather than an untyped `SocketFailure`.
 */
const guardedIdentityCheck = (check: NonNullable<tls.ConnectionOptions["checkServerIdentity"]>) =>
(hostname: string, certificate: tls.PeerCertificate): Error | undefined => {
  let verdict: unknown
  try {
    verdict = check(hostname, certificate)
  } catch (error) {
    verdict = error instanceof Error ? error : new Error(`checkServerIdentity threw ${showValue(error)}`)
  }
  if (verdict === undefined || verdict === null) return undefined
  const error = verdict instanceof Error ? verdict : new Error(`checkServerIdentity returned ${showValue(verdict)}`)
  if (typeof (error as { code?: unknown }).code !== "string") {
    Object.defineProperty(error, "code", { value: "CERT_REJECTED", enumerable: true, configurable: true, writable: true })
  }
  return error
}

/**
 * An optional option field of `schema`: absent or `undefined` is `undefined`; anything else fails
 * with `schema`'s message alone (`Schema.optional` would add "Expected undefined, actual ..." with
 * the whole value, private key and passphrase included).
 */
export const optionalField = <A>(schema: Schema.Schema<A, unknown>): Schema.Schema<A | undefined, unknown> =>
  Schema.transformOrFail(Schema.Unknown, Schema.Any as Schema.Schema<A | undefined>, {
    strict: true,
    decode: (input) => input === undefined ? ParseResult.succeed(undefined) : ParseResult.decodeUnknown(schema)(input),
    encode: (value) => ParseResult.succeed(value)
  })

/** The server's TLS, validated: what `tls.createServer` gets, and the handshake's limit. */
export interface ServerTls {
  /** Options of `tls.createServer` and `setSecureContext` (the default secure context is made from them). */
  readonly server: tls.TlsOptions
  /** Contexts by server name, for `SNICallback`; a `*.` name matches one label. */
  readonly contexts: ReadonlyMap<string, tls.SecureContext>
  readonly handshakeTimeout: Duration.Duration
  /** Whether a client certificate is required: `requestCert` with `rejectUnauthorized` (its default). */
  readonly requireClientCertificate: boolean
}

/** How long a client may take over its handshake by default: a client that never completes one holds a descriptor. */
const defaultServerHandshakeTimeout = Duration.seconds(10)

// A client's options that a server does not take.
const clientOnly = new Set(["checkServerIdentity", "servername", "session", ...transportKeys])
const serverChecks: Readonly<Record<string, Check>> = {
  ...Object.fromEntries(Object.entries(clientChecks).filter(([name]) => !clientOnly.has(name))),
  requestCert: boolean,
  // tls.createServer makes its context from cert, key, ... and ignores this one.
  secureContext: () => "a server takes cert and key (or pfx), not a secureContext",
  sni: (value) =>
    isRecord(value) && Object.values(value).every(isRecord)
      ? undefined
      : `expected an object of server names to TLS options ({ "api.example": { cert, key } }), got ${showValue(value)}`
}

const secureContext = (options: Record<string, unknown>): tls.SecureContext | string => {
  try {
    return tls.createSecureContext(options as tls.SecureContextOptions)
  } catch (error) {
    return nodeMessage(error)
  }
}

/** The context for the server name a client sent: an exact name first, then a wildcard one label up. */
export const contextFor = (
  contexts: ReadonlyMap<string, tls.SecureContext>,
  servername: string
): tls.SecureContext | undefined => {
  const name = servername.toLowerCase()
  const exact = contexts.get(name)
  if (exact !== undefined) return exact
  const dot = name.indexOf(".")
  return dot === -1 ? undefined : contexts.get(`*${name.slice(dot)}`)
}

/**
 * What is wrong with a server name of `sni`, if anything: a name no client can send (empty, with
 * spaces or control characters, an address) or a `*` anywhere but as the whole first label.
 */
const sniName = (name: string): string | undefined => {
  const exact = name.startsWith("*.") ? name.slice(2) : name
  if (exact.length === 0 || exact.includes("*") || controlCharacters.test(exact) || net.isIP(exact) !== 0) {
    return "expected a host name, or *. and a host name"
  }
  return undefined
}

/** Validates the `tls` option of serve into what the listener needs, or says what is wrong with it. */
export const validateServer = (input: unknown): ServerTls | string => {
  if (!isRecord(input)) return `expected an object of TLS options ({ cert, key, ... }), got ${showValue(input)}`
  const fields = snapshot(input)
  if (typeof fields === "string") return fields
  // The sni object and its entries are read once as well.
  if (isRecord(fields.sni)) {
    const names = snapshot(fields.sni)
    if (typeof names === "string") return `sni: ${names}`
    for (const [name, entry] of Object.entries(names)) {
      if (!isRecord(entry)) continue
      const copy = snapshot(entry)
      if (typeof copy === "string") return `sni ${JSON.stringify(name)}: ${copy}`
      names[name] = copy
    }
    fields.sni = names
  }
  const { issues, handshakeTimeout } = checkFields(fields, serverChecks)
  if (issues.length > 0) return issues.join("; ")
  const { handshakeTimeout: _timeout, sni, ...options } = fields
  if (options.cert === undefined && options.pfx === undefined && sni === undefined) {
    return "a TLS server needs a certificate: give cert and key (or pfx)"
  }
  const main = secureContext(options)
  if (typeof main === "string") return main
  // What tls.createServer alone checks (ALPN names, pskCallback, ...), by throwing: made once here,
  // never bound, so that serve and updateTls fail with InvalidOptions instead.
  try {
    tls.createServer({ ...options, handshakeTimeout: 0, SNICallback: (_name, callback) => callback(null, undefined) })
  } catch (error) {
    return nodeMessage(error)
  }
  const contexts = new Map<string, tls.SecureContext>()
  for (const [name, entry] of Object.entries((sni ?? {}) as Record<string, Record<string, unknown>>)) {
    const issue = sniName(name) ?? (entry.cert === undefined && entry.pfx === undefined
      ? "needs a certificate: give cert and key (or pfx)"
      : undefined)
    if (issue !== undefined) return `sni ${JSON.stringify(name)}: ${issue}`
    const context = secureContext(entry)
    if (typeof context === "string") return `sni ${JSON.stringify(name)}: ${context}`
    contexts.set(name.toLowerCase(), context)
  }
  return {
    server: options,
    contexts,
    handshakeTimeout: handshakeTimeout ?? defaultServerHandshakeTimeout,
    requireClientCertificate: options.requestCert === true && options.rejectUnauthorized !== false
  }
}

/** The `tls` option of serve: `node:tls`'s server options, `sni` and `handshakeTimeout`. */
export const ServerTlsOption: Schema.Schema<ServerTls, unknown> = Schema.transformOrFail(
  Schema.Unknown,
  Schema.Any as Schema.Schema<ServerTls>,
  {
    strict: true,
    decode: (input, _, ast) => {
      const validated = validateServer(input)
      return typeof validated === "string" ? fail(ast, input, validated) : ParseResult.succeed(validated)
    },
    encode: (validated) => ParseResult.succeed(validated)
  }
)

/** The options of `tls.connect` for a validated client TLS toward `host` (absent for a path). */
export const connectOptions = (validated: ClientTls, host: string | undefined): tls.ConnectionOptions =>
  // Node sends the host as server name by default, but never an address (RFC 6066).
  validated.connect.servername === undefined && host !== undefined && net.isIP(host) === 0
    ? { ...validated.connect, servername: host }
    : validated.connect

type Fields = PeerCertificate["subject"]
const fields = (names: object | undefined): Fields => {
  const copy: Record<string, string | ReadonlyArray<string>> = {}
  for (const [name, value] of Object.entries(names ?? {})) {
    if (typeof value === "string" || Array.isArray(value)) copy[name] = value
  }
  return copy
}

/** `HandshakeTimeout` after `duration`, with `endpoint` (on a server, the client: operation `read`). */
export const handshakeTimeoutError = (
  duration: Duration.Duration,
  endpoint: Endpoint.Endpoint,
  operation: "connect" | "read"
): TcpError.TlsHandshakeFailed =>
  new TcpError.TlsHandshakeFailed({
    operation,
    endpoint,
    reason: "HandshakeTimeout",
    timeoutMillis: Duration.toMillis(duration)
  }, { disableValidation: true })

/** The handshake's own limit for a connect with `validated` TLS, failing with `HandshakeTimeout`. */
export const handshakeTimeout = (validated: ClientTls | undefined, endpoint: Endpoint.Endpoint) => {
  const duration = validated?.handshakeTimeout
  if (duration === undefined) return undefined
  return { duration, onTimeout: () => handshakeTimeoutError(duration, endpoint, "connect") }
}

const peerCertificate = (socket: tls.TLSSocket): Option.Option<PeerCertificate> => {
  const certificate = socket.getPeerCertificate(false)
  if (certificate === null || certificate === undefined || Object.keys(certificate).length === 0) return Option.none()
  return Option.some<PeerCertificate>({
    subject: fields(certificate.subject),
    issuer: fields(certificate.issuer),
    subjectAltName: certificate.subjectaltname,
    validFrom: new Date(certificate.valid_from),
    validTo: new Date(certificate.valid_to),
    fingerprint256: certificate.fingerprint256,
    serialNumber: certificate.serialNumber
  })
}

/** What a TLS socket negotiated, read once its handshake is done; `None` for a socket without TLS. */
export const info = (socket: unknown): Option.Option<TlsInfo> => {
  if (!(socket instanceof tls.TLSSocket)) return Option.none()
  const cipher = socket.getCipher()
  const servername = (socket as { servername?: unknown }).servername
  return Option.some({
    protocol: socket.getProtocol() ?? "unknown",
    cipher: cipher.standardName ?? cipher.name,
    alpnProtocol: typeof socket.alpnProtocol === "string" ? socket.alpnProtocol : undefined,
    servername: typeof servername === "string" ? servername : undefined,
    authorized: socket.authorized,
    authorizationError: socket.authorizationError === undefined || socket.authorizationError === null
      ? undefined
      : String(socket.authorizationError),
    peerCertificate: peerCertificate(socket)
  })
}

/** What a failed handshake means from the server's side, for its log. */
const serverExplanations: { readonly [R in TcpError.TlsFailureReason]: string } = {
  CertificateExpired: "the client's certificate has expired",
  CertificateNotYetValid: "the client's certificate is not valid yet (or a clock is wrong)",
  CertificateUntrusted: "the client's certificate is not signed by a CA in the server's `ca`",
  CertificateInvalid: "the client's certificate failed verification",
  HostnameMismatch: "a certificate was not for the name expected",
  CertificateRequired: "the client sent no certificate, and the server requires one (requestCert)",
  CertificateRejected: "the client rejected the server's certificate: check that clients trust its CA and that it is valid",
  NoCommonProtocol: "no TLS version is accepted by both sides (minVersion, maxVersion)",
  NoCommonCipher: "no cipher suite is accepted by both sides",
  NoCommonAlpn: "the client offered none of the server's ALPNProtocols",
  NotTls: "the client does not speak TLS (plain text on the TLS port?)",
  HandshakeTimeout: "the client did not complete the handshake within handshakeTimeout",
  PeerAlert: "the client ended the handshake with an alert",
  ProtocolError: "the TLS protocol failed"
}

/** The log line of a server for a handshake that failed (`error` is a `TlsHandshakeFailed`, or what a socket reported). */
export const serverReport = (error: TcpError.TcpError): { readonly reason: string; readonly line: string } => {
  const from = "endpoint" in error ? Endpoint.format(error.endpoint) : "a client"
  if (error._tag !== "TlsHandshakeFailed") {
    const what = error._tag === "ConnectionReset" ? "the client closed the connection during the handshake" : error.message
    return { reason: error._tag, line: `TLS handshake from ${from} failed: ${what}` }
  }
  const code = error.code === undefined ? "" : ` (${error.code})`
  const after = error.timeoutMillis === undefined ? "" : ` after ${error.timeoutMillis} ms`
  return {
    reason: error.reason,
    line: `TLS handshake from ${from} failed${after}${code}: ${serverExplanations[error.reason]}`
  }
}
