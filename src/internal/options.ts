import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as net from "node:net"
import { Host, Path, Port } from "../Endpoint.js"
import * as TcpError from "../TcpError.js"
import * as Tls from "./tls.js"
import { DurationOption, showValue } from "./values.js"

export { DurationOption, durationOption, showValue } from "./values.js"

const ConnectPort = Schema.Int.pipe(
  Schema.between(1, 65535, { message: () => "a port to connect to is an integer from 1 to 65535" })
)

const PositiveInt = (what: string) =>
  Schema.Int.pipe(Schema.greaterThanOrEqualTo(1, { message: () => `${what} is an integer of at least 1` }))

/** The address a client binds before connecting: Node takes an IP literal only, and throws on a name. */
const LocalAddress = Host.pipe(
  Schema.filter((host) => net.isIP(host) !== 0, {
    message: (issue) => `localAddress must be an IP address of this machine, got ${JSON.stringify(issue.actual)}`
  })
)

/** Options of a connection that every transport's connect takes. */
export const connectionFields = {
  connectTimeout: Schema.optional(DurationOption),
  readTimeout: Schema.optional(DurationOption),
  writeTimeout: Schema.optional(DurationOption)
}

/** What every transport's connect reads of its validated options. */
export type ConnectionSettings = Schema.Struct.Type<typeof connectionFields>

/** @internal */
export const ConnectOptions = Schema.Struct({
  host: Host,
  port: ConnectPort,
  ...connectionFields,
  keepAlive: Schema.optional(Schema.Boolean),
  keepAliveInitialDelay: Schema.optional(DurationOption),
  noDelay: Schema.optional(Schema.Boolean),
  localAddress: Schema.optional(LocalAddress),
  tls: Schema.optionalWith(Tls.optionalField(Tls.ClientTlsOption), { exact: true })
})

/** Marks a schema that only picks another to decode with: its issues are that one's, unwrapped. */
const Dispatching = Symbol.for("effect-tcp/options/Dispatching")

const dispatching = <S extends Schema.Schema.Any>(schema: S): S =>
  schema.annotations({ [Dispatching]: true }) as S

/** The issue without the layers of the schemas that only dispatched to the one that failed. */
const unwrapDispatch = (issue: ParseResult.ParseIssue): ParseResult.ParseIssue =>
  issue._tag === "Transformation" && issue.kind === "Transformation" && issue.ast.annotations[Dispatching] === true
    ? unwrapDispatch(issue.issue)
    : issue

/**
 * Fails when `input` names both a Unix socket's `path` and a TCP `host` or `port`, which would
 * leave it to guess which one was meant; otherwise decodes it with `schema`.
 */
const pathOnly = <A, I>(schema: Schema.Schema<A, I>): Schema.Schema<A, unknown> =>
  dispatching(Schema.transformOrFail(Schema.Unknown, Schema.typeSchema(schema), {
    strict: true,
    decode: (input, options, ast) => {
      if (typeof input === "object" && input !== null) {
        const tcp = ["host", "port"].filter((key) => key in input && (input as Record<string, unknown>)[key] !== undefined)
        if (tcp.length > 0) {
          return ParseResult.fail(
            new ParseResult.Type(ast, input, `give either a Unix socket's path or a host and port, not both (got path and ${tcp.join(" and ")})`)
          )
        }
      }
      return ParseResult.decodeUnknown(schema)(input, options)
    },
    encode: ParseResult.succeed
  })) as any

/** Whether options are a Unix domain socket's (they have a `path`), for the transports that dispatch on it. */
export const isUnixOptions = (input: unknown): input is { readonly path: unknown } =>
  typeof input === "object" && input !== null && "path" in input

/** Connect options of a Unix domain socket: the path, and the options every transport takes. */
export const UnixConnectOptions = pathOnly(Schema.Struct({
  path: Path,
  ...connectionFields,
  tls: Schema.optional(Tls.ClientTlsOption)
}))

/**
 * A connect's options, TCP or Unix by their shape: a `path` is a Unix domain socket. Decoded by
 * that one schema alone, so that an issue names that transport's options only.
 */
export const ConnectTarget: Schema.Schema<
  typeof ConnectOptions.Type | typeof UnixConnectOptions.Type,
  unknown
> = dispatching(Schema.transformOrFail(
  Schema.Unknown,
  Schema.Union(Schema.typeSchema(ConnectOptions), Schema.typeSchema(UnixConnectOptions)),
  {
    strict: true,
    decode: (input, options) =>
      isUnixOptions(input)
        ? ParseResult.decodeUnknown(UnixConnectOptions)(input, options)
        : ParseResult.decodeUnknown(ConnectOptions)(input, options),
    encode: ParseResult.succeed
  }
)) as any

/** The server's own options (limits, idle time, drain, deadlines), the same over every transport. */
export const serverFields = {
  maxConnections: Schema.optional(PositiveInt("maxConnections")),
  idleTimeout: Schema.optional(DurationOption),
  drainTimeout: Schema.optional(DurationOption),
  readTimeout: Schema.optional(DurationOption),
  writeTimeout: Schema.optional(DurationOption)
}

/** What the server reads of a transport's validated options. */
export type ServerSettings = Schema.Struct.Type<typeof serverFields>

/** @internal */
export const ServeOptions = Schema.Struct({
  host: Schema.optional(Host),
  port: Port,
  backlog: Schema.optional(PositiveInt("backlog")),
  ...serverFields,
  noDelay: Schema.optional(Schema.Boolean),
  tls: Schema.optionalWith(Tls.optionalField(Tls.ServerTlsOption), { exact: true })
})

/** The file mode of a Unix domain socket: permission bits only, 0 to 0o777. */
const Mode = Schema.Number.pipe(
  Schema.filter((mode) => Number.isInteger(mode) && mode >= 0 && mode <= 0o777, {
    message: (issue) =>
      `mode is the socket file's permission bits, an integer from 0 to 0o777 (such as 0o660), got ${showValue(issue.actual)}`
  })
)

/** @internal */
export const UnixServeOptions = pathOnly(Schema.Struct({
  path: Path,
  mode: Schema.optional(Mode),
  backlog: Schema.optional(PositiveInt("backlog")),
  ...serverFields,
  tls: Schema.optional(Tls.ServerTlsOption)
}))

/** Validates options at the boundary, turning a parse error into `InvalidOptions`. */
export const validate = <A, I>(
  schema: Schema.Schema<A, I>,
  operation: TcpError.Operation,
  input: unknown
): Effect.Effect<A, TcpError.InvalidOptions> =>
  Either.match(Schema.decodeUnknownEither(schema, { errors: "all" })(input), {
    onLeft: (error) =>
      Effect.fail(
        new TcpError.InvalidOptions({ operation, issues: ParseResult.TreeFormatter.formatIssueSync(unwrapDispatch(error.issue)) })
      ),
    onRight: Effect.succeed
  })
