/**
 * Values as options and error messages need them, with no import of the modules that use them:
 * a value shown without throwing, and the duration option every module takes.
 */
import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"

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
