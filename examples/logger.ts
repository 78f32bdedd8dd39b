/**
 * One line per log entry, for the example programs: `LEVEL [annotations] message`.
 */
import { Cause, HashMap, Logger } from "effect"

export const layer = Logger.replace(
  Logger.defaultLogger,
  Logger.make(({ annotations, cause, logLevel, message }) => {
    const context = HashMap.toEntries(annotations).map(([key, value]) => `${key}=${value}`).join(" ")
    const text = (Array.isArray(message) ? message : [message]).map(String).join(" ")
    const failure = Cause.isEmpty(cause) ? "" : `\n${Cause.pretty(cause)}`
    console.log(`${logLevel.label.padEnd(5)} ${context ? `[${context}] ` : ""}${text}${failure}`)
  })
)
