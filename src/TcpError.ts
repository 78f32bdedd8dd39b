/**
 * Every way a TCP operation can fail, as a tagged error a caller can match on,
 * and the classifier from Node's errors to those tags.
 *
 * @since 0.1.0
 */
import type * as Cause from "effect/Cause"
import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"
import * as Endpoint from "./Endpoint.js"
import * as Descriptors from "./internal/descriptors.js"

/**
 * The operation that failed.
 *
 * @since 0.1.0
 * @category models
 */
export const Operation = Schema.Literal("connect", "read", "write", "listen")

/**
 * @since 0.1.0
 * @category models
 */
export type Operation = typeof Operation.Type

/**
 * Carried by every error of this package, so that {@link isTcpError} checks the type, not a tag
 * that any object may have.
 *
 * @since 0.1.0
 * @category type ids
 */
export const TypeId: unique symbol = Symbol.for("effect-tcp/TcpError")

/**
 * @since 0.1.0
 * @category type ids
 */
export type TypeId = typeof TypeId

/**
 * The class of one error of this package: a `Schema.TaggedError` class whose instances carry
 * {@link TypeId}.
 *
 * @since 0.1.0
 * @category models
 */
export interface TcpErrorClass<Self, Tag extends string, Fields extends Schema.Struct.Fields> extends
  Schema.Class<
    Self,
    Fields,
    Schema.Struct.Encoded<Fields>,
    Schema.Struct.Context<Fields>,
    Schema.Struct.Constructor<Omit<Fields, "_tag">>,
    { readonly [TypeId]: TypeId },
    Cause.YieldableError
  >
{
  readonly _tag: Tag
}

/** `Schema.TaggedError`, with {@link TypeId} on the prototype: every error class below is built by it. */
const TaggedTcpError = <Self>() =>
<Tag extends string, Fields extends Schema.Struct.Fields>(
  tag: Tag,
  fields: Fields
): TcpErrorClass<Self, Tag, { readonly _tag: Schema.tag<Tag> } & Fields> => {
  const Class = Schema.TaggedError<Self>()(tag, fields) as any
  Object.defineProperty(Class.prototype, TypeId, { value: TypeId })
  return Class
}

const nodeFields = {
  operation: Operation,
  endpoint: Endpoint.Endpoint,
  code: Schema.optional(Schema.String),
  syscall: Schema.optional(Schema.String)
}

const hostOf = (endpoint: Endpoint.Endpoint) => ("host" in endpoint ? endpoint.host : Endpoint.format(endpoint))

const where = (e: { readonly operation: Operation; readonly endpoint: Endpoint.Endpoint }) =>
  `${e.operation} ${e.operation === "listen" ? "on" : e.operation === "connect" ? "to" : "on the connection with"} ${
    Endpoint.format(e.endpoint)
  }`

/**
 * The peer's host answered, but nothing listens on the port (ECONNREFUSED). For a Unix domain
 * socket: nothing is at the path (ENOENT), or a socket file is there that nobody listens on
 * (ECONNREFUSED); either way the server may come up, so it is transient as over TCP.
 *
 * @since 0.1.0
 * @category errors
 */
export class ConnectionRefused extends TaggedTcpError<ConnectionRefused>()("ConnectionRefused", nodeFields) {
  override get message(): string {
    if (Endpoint.isUnix(this.endpoint)) {
      return this.code === "ENOENT"
        ? `connect to ${Endpoint.format(this.endpoint)} failed: no socket at the path (ENOENT): is the server running, and is the path right?`
        : `connection refused at ${Endpoint.format(this.endpoint)}: a socket file is there but nothing listens on it (its server stopped or crashed); start the server, or check the path`
    }
    return `connection refused by ${Endpoint.format(this.endpoint)}: is the server running and listening on port ${this.endpoint.port}?`
  }
}

/**
 * The peer forcibly closed the connection (ECONNRESET): it crashed, was killed or aborted the connection.
 *
 * @since 0.1.0
 * @category errors
 */
export class ConnectionReset extends TaggedTcpError<ConnectionReset>()("ConnectionReset", nodeFields) {
  override get message(): string {
    return `${where(this)} failed: connection reset by the peer; close this connection and reconnect if needed`
  }
}

/**
 * The connection was aborted by this host's network stack (ECONNABORTED).
 *
 * @since 0.1.0
 * @category errors
 */
export class ConnectionAborted extends TaggedTcpError<ConnectionAborted>()("ConnectionAborted", nodeFields) {
  override get message(): string {
    return `${where(this)} failed: the connection was aborted locally; check the local network and reconnect`
  }
}

/**
 * The connection was not established before the connect deadline (or the system's, ETIMEDOUT).
 *
 * @since 0.1.0
 * @category errors
 */
export class ConnectTimeout extends TaggedTcpError<ConnectTimeout>()("ConnectTimeout", {
  ...nodeFields,
  timeoutMillis: Schema.optional(Schema.Number)
}) {
  override get message(): string {
    const after = this.timeoutMillis === undefined ? "" : ` after ${this.timeoutMillis} ms`
    return `connect to ${Endpoint.format(this.endpoint)} timed out${after}: the host may be down, overloaded or behind a firewall that drops packets; retry with backoff or raise connectTimeout`
  }
}

/**
 * No bytes arrived within the connection's read deadline.
 *
 * @since 0.1.0
 * @category errors
 */
export class ReadTimeout extends TaggedTcpError<ReadTimeout>()("ReadTimeout", {
  ...nodeFields,
  timeoutMillis: Schema.Number
}) {
  override get message(): string {
    return `read from ${Endpoint.format(this.endpoint)} timed out after ${this.timeoutMillis} ms with no data: the peer is slow or gone; retry, or close the connection`
  }
}

/**
 * A write could not hand its bytes to the system within the write deadline (the peer does not read).
 *
 * @since 0.1.0
 * @category errors
 */
export class WriteTimeout extends TaggedTcpError<WriteTimeout>()("WriteTimeout", {
  ...nodeFields,
  timeoutMillis: Schema.Number
}) {
  override get message(): string {
    return `write to ${Endpoint.format(this.endpoint)} timed out after ${this.timeoutMillis} ms: the peer is not reading; close the connection`
  }
}

/**
 * The server closed a connection on which no bytes moved for its idle limit.
 *
 * @since 0.1.0
 * @category errors
 */
export class IdleTimeout extends TaggedTcpError<IdleTimeout>()("IdleTimeout", {
  ...nodeFields,
  timeoutMillis: Schema.Number
}) {
  override get message(): string {
    return `connection with ${Endpoint.format(this.endpoint)} closed after ${this.timeoutMillis} ms without traffic (idleTimeout)`
  }
}

/**
 * The host name could not be resolved. `transient` is true for a temporary failure (EAI_AGAIN)
 * that may succeed on retry, false for a name that does not exist. A lookup that fails while the
 * process is out of file descriptors (EMFILE, ENFILE) is transient whatever its code: the
 * resolver could not read /etc/hosts or open a socket, and reports such names as not found.
 *
 * @since 0.1.0
 * @category errors
 */
export class DnsLookupFailed extends TaggedTcpError<DnsLookupFailed>()("DnsLookupFailed", {
  ...nodeFields,
  transient: Schema.Boolean
}) {
  override get message(): string {
    return this.transient
      ? `DNS lookup of "${hostOf(this.endpoint)}" failed temporarily (${this.code}): the resolver is unreachable or busy; retry later`
      : `DNS lookup of "${hostOf(this.endpoint)}" failed (${this.code}): check the host name's spelling and the DNS configuration, or use an IP address`
  }
}

/**
 * No route to the host (EHOSTUNREACH, EHOSTDOWN).
 *
 * @since 0.1.0
 * @category errors
 */
export class HostUnreachable extends TaggedTcpError<HostUnreachable>()("HostUnreachable", nodeFields) {
  override get message(): string {
    return `${where(this)} failed: host unreachable (${this.code}); check that the host is up and routable from here`
  }
}

/**
 * No route to the host's network (ENETUNREACH, ENETDOWN).
 *
 * @since 0.1.0
 * @category errors
 */
export class NetworkUnreachable extends TaggedTcpError<NetworkUnreachable>()("NetworkUnreachable", nodeFields) {
  override get message(): string {
    return `${where(this)} failed: network unreachable (${this.code}); check this host's network connection and routes`
  }
}

/**
 * Another socket is already bound to the address (EADDRINUSE). For a Unix domain socket: a live
 * server listens on the path, or the path is a file that is not a socket.
 *
 * @since 0.1.0
 * @category errors
 */
export class AddressInUse extends TaggedTcpError<AddressInUse>()("AddressInUse", nodeFields) {
  override get message(): string {
    if (Endpoint.isUnix(this.endpoint)) {
      return `${where(this)} failed: the path is taken, by a server that listens on it or by a file that is not a socket (never removed); stop that server, remove the file, or choose another path`
    }
    return `${where(this)} failed: address already in use; stop the process holding port ${this.endpoint.port} or choose another port (0 picks a free one)`
  }
}

/**
 * The system refused the operation (EACCES, EPERM): typically a port below 1024 without
 * privileges, or a Unix domain socket (or its directory) whose mode does not let this process in.
 *
 * @since 0.1.0
 * @category errors
 */
export class PermissionDenied extends TaggedTcpError<PermissionDenied>()("PermissionDenied", nodeFields) {
  override get message(): string {
    if (Endpoint.isUnix(this.endpoint)) {
      return this.operation === "listen"
        ? `${where(this)} failed: permission denied (${this.code}); this process may not create a file in the socket's directory: check the directory's owner and mode`
        : `${where(this)} failed: permission denied (${this.code}); this process may not write to the socket file or search its directories: check their owner and mode (the server's mode option)`
    }
    return this.operation === "listen" && this.endpoint.port > 0 && this.endpoint.port < 1024
      ? `${where(this)} failed: permission denied; ports below 1024 need privileges: use a port >= 1024, or a reverse proxy in front`
      : `${where(this)} failed: permission denied (${this.code}); check firewall rules and process privileges`
  }
}

/**
 * The local address is not available on this host (EADDRNOTAVAIL): a bind to an address this host
 * does not have, or no free local port left for a connect.
 *
 * @since 0.1.0
 * @category errors
 */
export class AddressNotAvailable extends TaggedTcpError<AddressNotAvailable>()("AddressNotAvailable", nodeFields) {
  override get message(): string {
    return `${where(this)} failed: address not available (${this.code}); bind to an address this host has (127.0.0.1, 0.0.0.0), or free local ports`
  }
}

/**
 * A write to a connection the peer has already closed (EPIPE).
 *
 * @since 0.1.0
 * @category errors
 */
export class BrokenPipe extends TaggedTcpError<BrokenPipe>()("BrokenPipe", nodeFields) {
  override get message(): string {
    return `${where(this)} failed: broken pipe, the peer closed the connection; close it and reconnect if needed`
  }
}

/**
 * An operation on a connection that is already closed, or whose side for that direction was
 * already shut down (a write after `endWrite`, any operation after `close`).
 *
 * @since 0.1.0
 * @category errors
 */
export class SocketClosed extends TaggedTcpError<SocketClosed>()("SocketClosed", {
  ...nodeFields,
  /** `Closed`: the whole connection is closed; `WriteSideEnded`: a write after `endWrite`. */
  reason: Schema.Literal("Closed", "WriteSideEnded")
}) {
  override get message(): string {
    switch (this.reason) {
      case "Closed":
        return `${where(this)} failed: the connection is already closed`
      case "WriteSideEnded":
        return `${where(this)} failed: the write side was already ended (endWrite)`
    }
  }
}

/**
 * The peer closed its side before the requested bytes arrived.
 *
 * @since 0.1.0
 * @category errors
 */
export class UnexpectedEof extends TaggedTcpError<UnexpectedEof>()("UnexpectedEof", {
  ...nodeFields,
  expected: Schema.optional(Schema.Number),
  received: Schema.Number
}) {
  override get message(): string {
    if (this.received === 0) {
      return this.expected === undefined
        ? `${where(this)} failed: the peer closed the connection before a message began (no byte of it arrived)`
        : `${where(this)} failed: the peer closed the connection before any of the ${this.expected} bytes expected`
    }
    return this.expected === undefined
      ? `${where(this)} failed: the peer closed the connection in the middle of a message (${this.received} bytes received)`
      : `${where(this)} failed: the peer closed the connection after ${this.received} of ${this.expected} bytes`
  }
}

/**
 * A frame (or the bytes before a delimiter) larger than the allowed maximum.
 *
 * @since 0.1.0
 * @category errors
 */
export class FrameTooLarge extends TaggedTcpError<FrameTooLarge>()("FrameTooLarge", {
  ...nodeFields,
  size: Schema.Number,
  maxBytes: Schema.Number
}) {
  override get message(): string {
    return `${where(this)} failed: a frame of at least ${this.size} bytes exceeds the limit of ${this.maxBytes} bytes`
  }
}

/**
 * Bytes that do not decode into a frame or message.
 *
 * @since 0.1.0
 * @category errors
 */
export class MalformedFrame extends TaggedTcpError<MalformedFrame>()("MalformedFrame", {
  ...nodeFields,
  reason: Schema.String,
  cause: Schema.optional(Schema.Defect)
}) {
  override get message(): string {
    return `${where(this)} failed: malformed frame: ${this.reason}`
  }
}

/**
 * Options rejected before any socket was opened (a port of 70000, an empty host, a negative timeout).
 * `operation` is the socket operation the options were for; it is absent for the options of
 * something that is no one operation (a retry policy, a health probe), which `issues` names.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidOptions extends TaggedTcpError<InvalidOptions>()("InvalidOptions", {
  operation: Schema.optional(Operation),
  issues: Schema.String
}) {
  override get message(): string {
    return this.operation === undefined
      ? `invalid options: ${this.issues}`
      : `invalid ${this.operation} options: ${this.issues}`
  }
}

/**
 * Any other system error, with Node's code and syscall kept verbatim.
 *
 * @since 0.1.0
 * @category errors
 */
export class SocketFailure extends TaggedTcpError<SocketFailure>()("SocketFailure", {
  ...nodeFields,
  detail: Schema.String
}) {
  override get message(): string {
    return `${where(this)} failed: ${this.detail}`
  }
}

/**
 * Why a TLS handshake failed, as a caller can act on it:
 *
 * - `CertificateExpired`, `CertificateNotYetValid`: the peer's certificate is outside its validity
 *   period (or this machine's clock is wrong).
 * - `CertificateUntrusted`: the peer's certificate does not chain to a trusted CA (self-signed, an
 *   unknown CA, an incomplete chain): give its CA in `ca`.
 * - `CertificateInvalid`: another verification failure of the peer's certificate (revoked, bad
 *   signature, wrong purpose); `code` says which.
 * - `HostnameMismatch`: the certificate is valid, but not for the host (or `servername`) dialled.
 * - `CertificateRequired`: a certificate was required and none was sent (give `cert` and `key`).
 * - `CertificateRejected`: the peer rejected the certificate sent to it (an unknown CA, expired, ...).
 * - `NoCommonProtocol`: no TLS version both sides accept (`minVersion`, `maxVersion`).
 * - `NoCommonCipher`: no cipher (or other security parameter) both sides accept.
 * - `NoCommonAlpn`: the server accepts none of the application protocols offered (`ALPNProtocols`).
 * - `NotTls`: the peer does not speak TLS (a plain-text server, or the wrong port).
 * - `HandshakeTimeout`: the handshake did not complete within `handshakeTimeout`.
 * - `PeerAlert`: the peer ended the handshake with another alert; `code` names it.
 * - `ProtocolError`: any other failure of the TLS protocol; `code` names it.
 *
 * @since 0.1.0
 * @category models
 */
export const TlsFailureReason = Schema.Literal(
  "CertificateExpired",
  "CertificateNotYetValid",
  "CertificateUntrusted",
  "CertificateInvalid",
  "HostnameMismatch",
  "CertificateRequired",
  "CertificateRejected",
  "NoCommonProtocol",
  "NoCommonCipher",
  "NoCommonAlpn",
  "NotTls",
  "HandshakeTimeout",
  "PeerAlert",
  "ProtocolError"
)

/**
 * @since 0.1.0
 * @category models
 */
export type TlsFailureReason = typeof TlsFailureReason.Type

const tlsExplanations: { readonly [R in TlsFailureReason]: string } = {
  CertificateExpired:
    "the peer's certificate has expired: the peer must renew it (or this machine's clock is wrong)",
  CertificateNotYetValid:
    "the peer's certificate is not valid yet: check this machine's clock, or the certificate's start date",
  CertificateUntrusted:
    "the peer's certificate is not signed by a trusted CA (self-signed or an unknown CA): give the CA that signed it in the tls option `ca`",
  CertificateInvalid: "the peer's certificate failed verification: check the certificate (see code)",
  HostnameMismatch:
    "the peer's certificate is not for the host dialled: connect by a name the certificate lists, or set the tls option `servername`",
  CertificateRequired:
    "the peer requires a certificate and none was sent: give one in the tls options `cert` and `key`",
  CertificateRejected:
    "the peer rejected the certificate sent to it: check that the peer trusts its CA and that it is valid",
  NoCommonProtocol:
    "no TLS version is accepted by both sides: check minVersion and maxVersion on both",
  NoCommonCipher: "no cipher suite is accepted by both sides: check the cipher settings on both",
  NoCommonAlpn:
    "the peer accepts none of the application protocols offered (ALPNProtocols): offer one it speaks",
  NotTls: "the peer does not speak TLS: is this the TLS port, or is the server plain text?",
  HandshakeTimeout:
    "the handshake did not complete in time: the peer is slow, overloaded or not a TLS server; retry, or raise handshakeTimeout",
  PeerAlert: "the peer ended the handshake with an alert (see code)",
  ProtocolError: "the TLS protocol failed (see code)"
}

/**
 * A TLS handshake failed: the connection never carried the user's bytes. `reason` says why (see
 * {@link TlsFailureReason}); `code` is Node's (`CERT_HAS_EXPIRED`, `ERR_SSL_WRONG_VERSION_NUMBER`,
 * ...), and `detail` its message. Only `HandshakeTimeout` is transient. With TLS 1.3 a server
 * tells a client that it rejected its certificate after the client's side of the handshake
 * completed, so a client sees `CertificateRejected` and `CertificateRequired` on its first read
 * (operation `read`).
 *
 * @since 0.1.0
 * @category errors
 */
export class TlsHandshakeFailed extends TaggedTcpError<TlsHandshakeFailed>()("TlsHandshakeFailed", {
  ...nodeFields,
  reason: TlsFailureReason,
  detail: Schema.optional(Schema.String),
  timeoutMillis: Schema.optional(Schema.Number)
}) {
  override get message(): string {
    const code = this.code === undefined ? "" : ` (${this.code})`
    const after = this.timeoutMillis === undefined ? "" : ` after ${this.timeoutMillis} ms`
    // The alert does not say which parameter: TLS 1.2 servers send it for a missing client certificate too.
    const hint = this.code !== undefined && alertName(this.code) === "HANDSHAKE_FAILURE"
      ? "; a TLS 1.2 server sends this alert too when it requires a client certificate (give `cert` and `key`)"
      : ""
    return `TLS handshake with ${Endpoint.format(this.endpoint)} failed${after}${code}: ${tlsExplanations[this.reason]}${hint}`
  }
}

/**
 * What `connect` can fail with, as a Schema (errors that carry one stay serialisable).
 *
 * @since 0.1.0
 * @category unions
 */
export const ConnectError = Schema.Union(
  ConnectionRefused,
  ConnectionReset,
  ConnectionAborted,
  ConnectTimeout,
  TlsHandshakeFailed,
  DnsLookupFailed,
  HostUnreachable,
  NetworkUnreachable,
  PermissionDenied,
  AddressNotAvailable,
  InvalidOptions,
  SocketFailure
)

/**
 * What `connect` can fail with.
 *
 * @since 0.1.0
 * @category unions
 */
export type ConnectError = typeof ConnectError.Type

/**
 * What a read can fail with, as a Schema.
 *
 * @since 0.1.0
 * @category unions
 */
export const ReadError = Schema.Union(
  ConnectionReset,
  ConnectionAborted,
  TlsHandshakeFailed,
  ReadTimeout,
  IdleTimeout,
  SocketClosed,
  SocketFailure
)

/**
 * What a read can fail with.
 *
 * @since 0.1.0
 * @category unions
 */
export type ReadError = typeof ReadError.Type

/**
 * What a write can fail with, as a Schema.
 *
 * @since 0.1.0
 * @category unions
 */
export const WriteError = Schema.Union(
  ConnectionReset,
  ConnectionAborted,
  BrokenPipe,
  WriteTimeout,
  IdleTimeout,
  SocketClosed,
  SocketFailure
)

/**
 * What a write can fail with.
 *
 * @since 0.1.0
 * @category unions
 */
export type WriteError = typeof WriteError.Type

/**
 * What starting a server can fail with, as a Schema.
 *
 * @since 0.1.0
 * @category unions
 */
export const ListenError = Schema.Union(
  AddressInUse,
  PermissionDenied,
  AddressNotAvailable,
  DnsLookupFailed,
  InvalidOptions,
  SocketFailure
)

/**
 * What starting a server can fail with.
 *
 * @since 0.1.0
 * @category unions
 */
export type ListenError = typeof ListenError.Type

/**
 * Every error of this package, as a Schema: its `members` are the error classes, each once.
 *
 * @since 0.1.0
 * @category unions
 */
export const TcpError = Schema.Union(
  ConnectionRefused,
  ConnectionReset,
  ConnectionAborted,
  ConnectTimeout,
  TlsHandshakeFailed,
  ReadTimeout,
  WriteTimeout,
  IdleTimeout,
  DnsLookupFailed,
  HostUnreachable,
  NetworkUnreachable,
  AddressInUse,
  PermissionDenied,
  AddressNotAvailable,
  BrokenPipe,
  SocketClosed,
  UnexpectedEof,
  FrameTooLarge,
  MalformedFrame,
  InvalidOptions,
  SocketFailure
)

/**
 * Every error of this package.
 *
 * @since 0.1.0
 * @category unions
 */
export type TcpError = typeof TcpError.Type

/**
 * Whether a value is one of this package's errors: an instance of one of its classes (it carries
 * {@link TypeId}), not merely an object with one of their tags.
 *
 * @since 0.1.0
 * @category guards
 */
export const isTcpError = (u: unknown): u is TcpError => Predicate.hasProperty(u, TypeId)

/**
 * Whether trying again (on a new connection, after a pause) may succeed: true for refused,
 * reset, aborted, broken pipe, timeouts (a TLS handshake's among them), unreachable hosts and
 * networks, a temporary DNS failure and a peer that vanished mid-message; false for a name that
 * does not exist, a port in use, permission denied, bad options, oversized or malformed frames,
 * use of a closed connection, and every other TLS failure (a certificate that is expired or
 * untrusted, no common protocol: trying again gives the same answer).
 *
 * @since 0.1.0
 * @category predicates
 */
export const isTransient = (error: TcpError): boolean => {
  switch (error._tag) {
    case "ConnectionRefused":
    case "ConnectionReset":
    case "ConnectionAborted":
    case "ConnectTimeout":
    case "ReadTimeout":
    case "WriteTimeout":
    case "IdleTimeout":
    case "HostUnreachable":
    case "NetworkUnreachable":
    case "BrokenPipe":
    case "UnexpectedEof":
      return true
    case "DnsLookupFailed":
      return error.transient
    case "TlsHandshakeFailed":
      return error.reason === "HandshakeTimeout"
    case "AddressNotAvailable":
      // On connect it means no free local port: that frees up; on listen it never will.
      return error.operation === "connect"
    case "SocketFailure":
      return error.code === "ETIMEDOUT" || error.code === "EAGAIN"
    case "AddressInUse":
    case "PermissionDenied":
    case "SocketClosed":
    case "FrameTooLarge":
    case "MalformedFrame":
    case "InvalidOptions":
      return false
  }
}

interface NodeErrorLike {
  readonly code?: unknown
  readonly syscall?: unknown
  readonly message?: unknown
  readonly errors?: unknown
}

const nodeError = (cause: unknown): NodeErrorLike => {
  if (!Predicate.isObject(cause)) return { message: String(cause) }
  const e = cause as NodeErrorLike
  // Node's happy-eyeballs connect reports an AggregateError: the first attempt's error says most.
  if (e.code === undefined && Array.isArray(e.errors) && e.errors.length > 0) return nodeError(e.errors[0])
  return e
}

const dnsTransientCodes = new Set(["EAI_AGAIN", "ETIMEOUT", "ECONNREFUSED", "ESERVFAIL"])
// A lookup that failed while the process cannot open a descriptor (the resolver could not read
// /etc/hosts or open a socket: glibc then says ENOTFOUND) says nothing about the name.
/** Descriptors a lookup may need at once; with fewer free, glibc fails it as ENOTFOUND. */
const lookupDescriptors = 8
const dnsTransient = (code: string) => dnsTransientCodes.has(code) || Descriptors.exhausted(lookupDescriptors) !== undefined
const isDnsCode = (code: string, syscall: string | undefined) =>
  syscall === "getaddrinfo" || syscall === "queryA" || syscall === "queryAaaa" || code === "ENOTFOUND" ||
  code.startsWith("EAI_")

/** Certificate verification results (OpenSSL's names, as Node reports them) that have a reason of their own. */
const verifyReasons: Readonly<Record<string, TlsFailureReason>> = {
  CERT_HAS_EXPIRED: "CertificateExpired",
  CERT_NOT_YET_VALID: "CertificateNotYetValid",
  DEPTH_ZERO_SELF_SIGNED_CERT: "CertificateUntrusted",
  SELF_SIGNED_CERT_IN_CHAIN: "CertificateUntrusted",
  UNABLE_TO_GET_ISSUER_CERT: "CertificateUntrusted",
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: "CertificateUntrusted",
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: "CertificateUntrusted",
  CERT_UNTRUSTED: "CertificateUntrusted",
  ERR_TLS_CERT_ALTNAME_INVALID: "HostnameMismatch",
  HOSTNAME_MISMATCH: "HostnameMismatch",
  IP_ADDRESS_MISMATCH: "HostnameMismatch"
}

/** The other verification results OpenSSL reports: each is `CertificateInvalid`, code kept. */
const otherVerifyCodes = new Set([
  "UNABLE_TO_GET_CRL",
  "UNABLE_TO_DECRYPT_CERT_SIGNATURE",
  "UNABLE_TO_DECRYPT_CRL_SIGNATURE",
  "UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY",
  "CERT_SIGNATURE_FAILURE",
  "CRL_SIGNATURE_FAILURE",
  "CRL_NOT_YET_VALID",
  "CRL_HAS_EXPIRED",
  "ERROR_IN_CERT_NOT_BEFORE_FIELD",
  "ERROR_IN_CERT_NOT_AFTER_FIELD",
  "ERROR_IN_CRL_LAST_UPDATE_FIELD",
  "ERROR_IN_CRL_NEXT_UPDATE_FIELD",
  "CERT_CHAIN_TOO_LONG",
  "CERT_REVOKED",
  "INVALID_CA",
  "PATH_LENGTH_EXCEEDED",
  "INVALID_PURPOSE",
  "CERT_REJECTED",
  "EMAIL_MISMATCH"
])

/** OpenSSL's errors (Node's `ERR_SSL_` codes) that have a reason of their own, alerts aside. */
const sslReasons: Readonly<Record<string, TlsFailureReason>> = {
  // A record header that is not TLS: a plain-text server's first bytes.
  ERR_SSL_WRONG_VERSION_NUMBER: "NotTls",
  ERR_SSL_PACKET_LENGTH_TOO_LONG: "NotTls",
  ERR_SSL_RECORD_LAYER_FAILURE: "NotTls",
  ERR_SSL_HTTP_REQUEST: "NotTls",
  ERR_SSL_HTTPS_PROXY_REQUEST: "NotTls",
  ERR_SSL_UNSUPPORTED_PROTOCOL: "NoCommonProtocol",
  ERR_SSL_NO_PROTOCOLS_AVAILABLE: "NoCommonProtocol",
  ERR_SSL_NO_SHARED_CIPHER: "NoCommonCipher",
  ERR_SSL_NO_CIPHERS_AVAILABLE: "NoCommonCipher",
  ERR_SSL_NO_SUITABLE_SIGNATURE_ALGORITHM: "NoCommonCipher",
  ERR_SSL_NO_APPLICATION_PROTOCOL: "NoCommonAlpn",
  ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE: "CertificateRequired",
  ERR_TLS_HANDSHAKE_TIMEOUT: "HandshakeTimeout"
}

/** The alerts a peer sends (by their name, which OpenSSL's releases prefix differently) that have a reason of their own. */
const alertReasons: Readonly<Record<string, TlsFailureReason>> = {
  PROTOCOL_VERSION: "NoCommonProtocol",
  INAPPROPRIATE_FALLBACK: "NoCommonProtocol",
  // What OpenSSL sends when the parameters cannot be agreed on: most often the ciphers.
  HANDSHAKE_FAILURE: "NoCommonCipher",
  INSUFFICIENT_SECURITY: "NoCommonCipher",
  NO_APPLICATION_PROTOCOL: "NoCommonAlpn",
  CERTIFICATE_REQUIRED: "CertificateRequired",
  UNKNOWN_CA: "CertificateRejected",
  BAD_CERTIFICATE: "CertificateRejected",
  CERTIFICATE_EXPIRED: "CertificateRejected",
  CERTIFICATE_REVOKED: "CertificateRejected",
  CERTIFICATE_UNKNOWN: "CertificateRejected",
  UNSUPPORTED_CERTIFICATE: "CertificateRejected",
  ACCESS_DENIED: "CertificateRejected"
}

/**
 * The alert's name in one of Node's `ERR_SSL_` codes: OpenSSL 3.0 says `ERR_SSL_SSLV3_ALERT_...`,
 * `ERR_SSL_TLSV1_ALERT_...` or `ERR_SSL_TLSV13_ALERT_...`; 3.2 and later `ERR_SSL_SSL/TLS_ALERT_...`.
 */
const alertName = (code: string): string | undefined => /^ERR_SSL_(?:SSLV3|TLSV1|TLSV13|SSL\/TLS)_ALERT_(.+)$/.exec(code)?.[1]

/**
 * The reason of a TLS failure with Node's `code`, or undefined for a code that is not TLS's (a
 * socket's, such as ECONNRESET when the peer closed during the handshake).
 *
 * @since 0.1.0
 * @category classification
 */
export const tlsFailureReason = (code: string): TlsFailureReason | undefined => {
  const known = verifyReasons[code] ?? sslReasons[code]
  if (known !== undefined) return known
  if (otherVerifyCodes.has(code)) return "CertificateInvalid"
  const alert = alertName(code)
  if (alert !== undefined) return alertReasons[alert] ?? "PeerAlert"
  if (code.startsWith("ERR_SSL_")) return "ProtocolError"
  return undefined
}

/** Errors built from values this module produced itself need no Schema validation (it costs tens of µs each). */
const unchecked = { disableValidation: true } as const

/**
 * Turns an error Node reported into the tag a caller can act on, given what was being done and
 * with whom. Codes that do not belong to the operation's phase become `SocketFailure`, code kept.
 *
 * @since 0.1.0
 * @category classification
 */
export const classify: {
  (cause: unknown, operation: "connect", endpoint: Endpoint.Endpoint): ConnectError
  (cause: unknown, operation: "read", endpoint: Endpoint.Endpoint): ReadError
  (cause: unknown, operation: "write", endpoint: Endpoint.Endpoint): WriteError
  (cause: unknown, operation: "listen", endpoint: Endpoint.Endpoint): ListenError
  (cause: unknown, operation: Operation, endpoint: Endpoint.Endpoint): TcpError
} = (cause: unknown, operation: Operation, endpoint: Endpoint.Endpoint): any => {
  const e = nodeError(cause)
  const code = typeof e.code === "string" ? e.code : undefined
  const syscall = typeof e.syscall === "string" ? e.syscall : undefined
  const fields = { operation, endpoint, code, syscall }
  const failure = () =>
    new SocketFailure({ ...fields, detail: typeof e.message === "string" ? e.message : String(code ?? cause) }, unchecked)
  if (code === undefined) return failure()
  const tlsReason = operation === "connect" || operation === "read" ? tlsFailureReason(code) : undefined
  if (tlsReason !== undefined) {
    const detail = typeof e.message === "string" ? e.message : undefined
    return new TlsHandshakeFailed({ operation, endpoint, code, reason: tlsReason, detail }, unchecked)
  }
  switch (operation) {
    case "connect":
      if (isDnsCode(code, syscall)) return new DnsLookupFailed({ ...fields, transient: dnsTransient(code) }, unchecked)
      switch (code) {
        case "ECONNREFUSED":
          return new ConnectionRefused(fields, unchecked)
        case "ENOENT":
          // A Unix domain socket's path with nothing at it: nothing listens there (yet).
          if (Endpoint.isUnix(endpoint)) return new ConnectionRefused(fields, unchecked)
          break
        case "ECONNRESET":
          return new ConnectionReset(fields, unchecked)
        case "ECONNABORTED":
          return new ConnectionAborted(fields, unchecked)
        case "ETIMEDOUT":
          return new ConnectTimeout(fields, unchecked)
        case "EHOSTUNREACH":
        case "EHOSTDOWN":
          return new HostUnreachable(fields, unchecked)
        case "ENETUNREACH":
        case "ENETDOWN":
          return new NetworkUnreachable(fields, unchecked)
        case "EACCES":
        case "EPERM":
          return new PermissionDenied(fields, unchecked)
        case "EADDRNOTAVAIL":
          return new AddressNotAvailable(fields, unchecked)
      }
      return failure()
    case "read":
      switch (code) {
        case "ECONNRESET":
        case "EPIPE":
          return new ConnectionReset(fields, unchecked)
        case "ECONNABORTED":
          return new ConnectionAborted(fields, unchecked)
        case "ERR_STREAM_DESTROYED":
        case "ERR_SOCKET_CLOSED":
          return new SocketClosed({ ...fields, reason: "Closed" }, unchecked)
      }
      return failure()
    case "write":
      switch (code) {
        case "EPIPE":
          return new BrokenPipe(fields, unchecked)
        case "ECONNRESET":
          return new ConnectionReset(fields, unchecked)
        case "ECONNABORTED":
          return new ConnectionAborted(fields, unchecked)
        case "ERR_STREAM_WRITE_AFTER_END":
          return new SocketClosed({ ...fields, reason: "WriteSideEnded" }, unchecked)
        case "ERR_STREAM_DESTROYED":
        case "ERR_SOCKET_CLOSED":
          return new SocketClosed({ ...fields, reason: "Closed" }, unchecked)
      }
      return failure()
    case "listen":
      if (isDnsCode(code, syscall)) return new DnsLookupFailed({ ...fields, transient: dnsTransient(code) }, unchecked)
      switch (code) {
        case "EADDRINUSE":
          return new AddressInUse(fields, unchecked)
        case "EACCES":
        case "EPERM":
          return new PermissionDenied(fields, unchecked)
        case "EADDRNOTAVAIL":
          return new AddressNotAvailable(fields, unchecked)
      }
      return failure()
  }
}
