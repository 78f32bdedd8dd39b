import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as net from "node:net"
import { Host, Port } from "../Endpoint.js"
import * as TcpError from "../TcpError.js"

/**
 * A value as an error message shows it: a string quoted, an array's elements listed, anything else
 * as `String` gives it; never throws (a symbol, an object without a prototype or whose `toString`
 * throws is shown by its kind).
 */
export const showValue = (value: unknown): string => {
  if (Array.isArray(value)) return `[${value.map(showScalar).join(", ")}]`
  return showScalar(value)
}

const showScalar = (value: unknown): string => {
  if (typeof value === "string") return JSON.stringify(value)
  if (Array.isArray(value)) return "[array]"
  try {
    return String(value)
  } catch {
    return Object.prototype.toString.call(value)
  }
}

const badNumber = (value: unknown) =>
  (typeof value === "number" && !(value >= 0)) || (typeof value === "bigint" && value < 0)

/** Inputs that `Duration.decode` would quietly turn into zero. */
const negativeOrNaN = (input: unknown): boolean =>
  badNumber(input) ||
  (typeof input === "string" && input.trimStart().startsWith("-")) ||
  (Array.isArray(input) && input.some(badNumber))

/** A non-negative, finite `Duration.DurationInput` (a number of milliseconds, "5 seconds", a Duration). */
export const DurationOption: Schema.Schema<Duration.Duration, Duration.DurationInput> = Schema.transformOrFail(
  Schema.Unknown,
  Schema.DurationFromSelf,
  {
  strict: true,
  decode: (input, _, ast) => {
    // Duration.decode takes NaN, negative numbers, "-5 seconds" and [-5, 0] for zero: reject them first.
    const decoded = negativeOrNaN(input) ? undefined : Option.getOrUndefined(Duration.decodeUnknown(input))
    if (decoded === undefined || !Duration.isFinite(decoded) || Duration.toMillis(decoded) < 0) {
      return ParseResult.fail(
        new ParseResult.Type(
          ast,
          input,
          `expected a finite, non-negative duration (milliseconds, or a string like "5 seconds"), got ${showValue(input)}`
        )
      )
    }
    return ParseResult.succeed(decoded)
  },
  encode: ParseResult.succeed
}) as any

const decodeDurationOption = Schema.decodeUnknownEither(DurationOption)

/** One duration option decoded, or what is wrong with it as one line naming it, for modules that list their issues. */
export const durationOption = (name: string, input: unknown): Either.Either<Duration.Duration, string> =>
  Either.mapLeft(
    decodeDurationOption(input),
    (error) => `${name}: ${ParseResult.ArrayFormatter.formatErrorSync(error).map((issue) => issue.message).join(", ")}`
  )

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
  localAddress: Schema.optional(LocalAddress)
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
  noDelay: Schema.optional(Schema.Boolean)
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
