/**
 * The settings of the server under abuse (reliability/abuse-server.ts), shared with the run that
 * derives its memory bound from them (reliability/abuse.ts).
 */
export const limits = {
  maxConnections: 2000,
  idleTimeout: "5 seconds",
  writeTimeout: "2 seconds",
  /** A whole line must arrive within this, whatever the pace of its bytes: slowloris' end. */
  lineDeadlineMillis: 10_000,
  maxLineBytes: 1024
} as const
