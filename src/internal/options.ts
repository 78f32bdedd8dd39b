import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as net from "node:net"
import { Host, Port } from "../Endpoint.js"
import * as TcpError from "../TcpError.js"

import * as Tls from "./tls.js"
import { DurationOption } from "./values.js"

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

/** Validates options at the boundary, turning a parse error into `InvalidOptions`. */
export const validate = <A, I>(
  schema: Schema.Schema<A, I>,
  operation: TcpError.Operation,
  input: unknown
): Effect.Effect<A, TcpError.InvalidOptions> =>
  Either.match(Schema.decodeUnknownEither(schema, { errors: "all" })(input), {
    onLeft: (error) =>
      Effect.fail(
        new TcpError.InvalidOptions({ operation, issues: ParseResult.TreeFormatter.formatErrorSync(error) })
      ),
    onRight: Effect.succeed
  })
