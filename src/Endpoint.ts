/**
 * Where a socket connects or listens: a host and a port.
 *
 * @since 0.1.0
 */
import * as Either from "effect/Either"
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
 * A host and a port.
 *
 * @since 0.1.0
 * @category schemas
 */
export class Endpoint extends Schema.Class<Endpoint>("Endpoint")({
  host: Host,
  port: Port
}) {
  /** `host:port`, with IPv6 literals in brackets (`[::1]:8080`). */
  override toString(): string {
    return format(this)
  }
}

/**
 * Builds an endpoint without validation: for addresses that Node reported.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (host: string, port: number): Endpoint => new Endpoint({ host, port }, { disableValidation: true })

/**
 * `host:port`, with IPv6 literals in brackets.
 *
 * @since 0.1.0
 * @category formatting
 */
export const format = (endpoint: { readonly host: string; readonly port: number }): string =>
  endpoint.host.includes(":") ? `[${endpoint.host}]:${endpoint.port}` : `${endpoint.host}:${endpoint.port}`

/**
 * Parses `host:port` or `[ipv6]:port` into an {@link Endpoint}.
 *
 * @example
 * ```ts
 * import { Endpoint } from "effect-tcp"
 * import { Either } from "effect"
 *
 * const parsed = Endpoint.parse("[::1]:8080")
 * console.log(Either.getOrThrow(parsed).host) // "::1"
 * ```
 *
 * @since 0.1.0
 * @category parsing
 */
export const parse = (input: string): Either.Either<Endpoint, string> => {
  const bracketed = /^\[([^\]]+)\]:(\d+)$/.exec(input)
  const plain = bracketed ? null : /^([^:]+):(\d+)$/.exec(input)
  const match = bracketed ?? plain
  if (match === null) {
    return Either.left(`"${input}" is not of the form host:port or [ipv6]:port`)
  }
  const port = Number(match[2])
  return Schema.decodeUnknownEither(Endpoint)({ host: match[1], port }).pipe(
    Either.mapLeft(() => `"${input}": the port must be an integer from 0 to 65535`)
  )
}
