/**
 * Where a socket connects or listens: a host and a port (TCP), or the path of a Unix domain socket.
 *
 * @since 0.1.0
 */
import * as Either from "effect/Either"
import * as ParseResult from "effect/ParseResult"
import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"

/**
 * A TCP port: an integer from 0 to 65535 (0 asks the system for a free port when listening).
 *
 * @since 0.1.0
 * @category schemas
 */
export const Port = Schema.Int.pipe(
  Schema.between(0, 65535, { message: () => "a port is an integer from 0 to 65535" })
)

/**
 * A host name or an IP address literal: never empty, and without spaces, NUL or other control
 * characters (the resolver would cut the name at a NUL, which defeats an allow-list of hosts).
 *
 * @since 0.1.0
 * @category schemas
 */
export const Host = Schema.String.pipe(
  Schema.nonEmptyString({ message: () => "a host must not be empty" }),
  Schema.pattern(/^[^\s\u0000-\u001f\u007f-\u009f]+$/, {
    message: (issue) =>
      `a host must not contain spaces or control characters, got ${JSON.stringify(issue.actual)}`
  })
)

/**
 * The most bytes a Unix domain socket's path may have, in UTF-8: the system's `sun_path` less its
 * terminating NUL (108 bytes on Linux, 104 on macOS and the BSDs). A longer path cannot be bound
 * or connected to whole.
 *
 * @since 0.2.0
 * @category constants
 */
export const maxPathBytes: number = process.platform === "linux" ? 107 : 103

/**
 * The path of a Unix domain socket, absolute or relative to the working directory: never empty,
 * at most {@link maxPathBytes} bytes in UTF-8 (bytes, not characters: `é` is two), and without
 * NUL or other control characters (the system would cut the path at a NUL). Linux's abstract
 * names (a leading NUL) are not supported: they have no file, so no mode and no owner to
 * protect them.
 *
 * @since 0.2.0
 * @category schemas
 */
export const Path = Schema.String.pipe(
  Schema.nonEmptyString({ message: () => "a Unix socket path must not be empty" }),
  Schema.filter((path) => !path.startsWith("\u0000"), {
    message: () =>
      "abstract Unix socket names (a leading NUL) are not supported: use a path in a directory with the access you want"
  }),
  Schema.pattern(/^[^\u0000-\u001f\u007f-\u009f]+$/, {
    message: (issue) => `a Unix socket path must not contain NUL or other control characters, got ${JSON.stringify(issue.actual)}`
  }),
  Schema.filter((path) => Buffer.byteLength(path, "utf8") <= maxPathBytes, {
    message: (issue) =>
      `a Unix socket path is at most ${maxPathBytes} bytes in UTF-8 (the system's limit), got ${
        typeof issue.actual === "string" ? Buffer.byteLength(issue.actual, "utf8") : "?"
      } bytes: use a shorter path, or a relative one from a nearby working directory`
  })
)

/**
 * A TCP host and port.
 *
 * @since 0.2.0
 * @category schemas
 */
export class TcpEndpoint extends Schema.Class<TcpEndpoint>("TcpEndpoint")({
  host: Host,
  port: Port
}) {
  /** `host:port`, with IPv6 literals in brackets (`[::1]:8080`). */
  override toString(): string {
    return format(this)
  }
}

/**
 * The path of a Unix domain socket.
 *
 * @since 0.2.0
 * @category schemas
 */
export class UnixEndpoint extends Schema.Class<UnixEndpoint>("UnixEndpoint")({
  path: Path
}) {
  /** `unix:/the/path`. */
  override toString(): string {
    return format(this)
  }
}

/**
 * Where a socket connects or listens: a {@link TcpEndpoint} (`host`, `port`) or a
 * {@link UnixEndpoint} (`path`). Tell them apart with {@link isUnix} or `"path" in endpoint`.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Endpoint: Schema.Union<[typeof TcpEndpoint, typeof UnixEndpoint]> = Schema.Union(TcpEndpoint, UnixEndpoint)

/**
 * @since 0.1.0
 * @category models
 */
export type Endpoint = TcpEndpoint | UnixEndpoint

/**
 * Builds a TCP endpoint without validation: for addresses that Node reported.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (host: string, port: number): TcpEndpoint =>
  new TcpEndpoint({ host, port }, { disableValidation: true })

/**
 * Builds a Unix domain socket endpoint without validation: for paths already validated.
 *
 * @since 0.2.0
 * @category constructors
 */
export const unix = (path: string): UnixEndpoint => new UnixEndpoint({ path }, { disableValidation: true })

/**
 * Whether a value is a Unix domain socket's endpoint (it has a string `path`).
 *
 * @since 0.2.0
 * @category guards
 */
export const isUnix = (u: unknown): u is UnixEndpoint => Predicate.hasProperty(u, "path") && typeof u.path === "string"

/**
 * Whether a value is a TCP endpoint (a string `host` and a numeric `port`).
 *
 * @since 0.2.0
 * @category guards
 */
export const isTcp = (u: unknown): u is TcpEndpoint =>
  Predicate.hasProperty(u, "host") && typeof u.host === "string" && Predicate.hasProperty(u, "port") &&
  typeof u.port === "number"

/**
 * `host:port`, with IPv6 literals in brackets; `unix:/the/path` for a Unix domain socket.
 *
 * @since 0.1.0
 * @category formatting
 */
export const format = (
  endpoint: { readonly host: string; readonly port: number } | { readonly path: string }
): string => {
  if ("path" in endpoint) return `unix:${endpoint.path}`
  return endpoint.host.includes(":") ? `[${endpoint.host}]:${endpoint.port}` : `${endpoint.host}:${endpoint.port}`
}

/**
 * Parses `host:port`, `[ipv6]:port` or `unix:/the/path` into an {@link Endpoint}.
 *
 * @example
 * ```ts
 * import { Endpoint } from "effect-tcp"
 * import { Either } from "effect"
 *
 * const tcp = Either.getOrThrow(Endpoint.parse("[::1]:8080"))
 * console.log(Endpoint.isTcp(tcp) && tcp.host) // "::1"
 * const unix = Either.getOrThrow(Endpoint.parse("unix:/run/app.sock"))
 * console.log(Endpoint.isUnix(unix) && unix.path) // "/run/app.sock"
 * ```
 *
 * @since 0.1.0
 * @category parsing
 */
export const parse = (input: string): Either.Either<Endpoint, string> => {
  if (input.startsWith("unix:")) {
    return Schema.decodeUnknownEither(UnixEndpoint)({ path: input.slice("unix:".length) }).pipe(
      Either.mapLeft((error) =>
        `"${input}": ${ParseResult.ArrayFormatter.formatErrorSync(error).map((issue) => issue.message).join(", ")}`
      )
    )
  }
  const bracketed = /^\[([^\]]+)\]:(\d+)$/.exec(input)
  const plain = bracketed ? null : /^([^:]+):(\d+)$/.exec(input)
  const match = bracketed ?? plain
  if (match === null) {
    return Either.left(`"${input}" is not of the form host:port, [ipv6]:port or unix:/path`)
  }
  const port = Number(match[2])
  return Schema.decodeUnknownEither(TcpEndpoint)({ host: match[1], port }).pipe(
    Either.mapLeft(() => `"${input}": the port must be an integer from 0 to 65535`)
  )
}
