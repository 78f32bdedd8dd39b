/** Captures what the code under test logs, to assert on it. */
import * as Cause from "effect/Cause"
import * as HashMap from "effect/HashMap"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"

export interface LogEntry {
  readonly level: string
  readonly message: string
  readonly annotations: Record<string, unknown>
  /** The pretty-printed cause logged with the message, if any. */
  readonly cause: string
  /** When it was logged, in millis on the logging fiber's clock (test time under `TestClock`). */
  readonly at: number
}

export const captureLogs = () => {
  const entries: Array<LogEntry> = []
  const logger = Logger.make(({ annotations, cause, date, logLevel, message }) => {
    const parts = Array.isArray(message) ? message : [message]
    entries.push({
      level: logLevel.label,
      message: parts.map((part) => (typeof part === "string" ? part : String(part))).join(" "),
      annotations: Object.fromEntries(HashMap.toEntries(annotations)),
      cause: Cause.isEmpty(cause) ? "" : Cause.pretty(cause),
      at: date.getTime()
    })
  })
  return { entries, layer: Layer.merge(Logger.replace(Logger.defaultLogger, logger), Logger.minimumLogLevel(LogLevel.All)) }
}
