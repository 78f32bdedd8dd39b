/**
 * `npm run reliability`: the full reliability suite, with its figures printed and written to
 * RELIABILITY.md. `--quick` runs the short version (the one inside `npm test`) without writing.
 */
import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as fs from "node:fs"
import * as os from "node:os"
import { runChaos } from "./chaos.js"
import { runInterruptions } from "./interruption.js"

const quick = process.argv.includes("--quick")
const seed = Number(process.env.SEED ?? 20261125)

const main = Effect.gen(function*() {
  const clients = quick ? 50 : 100
  // The server's per-connection warnings (resets are the point here) would drown the figures.
  const chaos = yield* runChaos({ requests: quick ? 3000 : 100_000, clients, seed }).pipe(
    Logger.withMinimumLogLevel(LogLevel.None)
  )
  console.log(JSON.stringify(chaos, null, 2))
  const interruption = yield* runInterruptions({ iterations: quick ? 200 : 4000, seed }).pipe(
    Logger.withMinimumLogLevel(LogLevel.None)
  )
  console.log(JSON.stringify(interruption, null, 2))
  const broken = [...Object.entries(chaos.invariants), ...Object.entries(interruption.invariants)].filter(
    ([, value]) => value !== 0
  )
  if (!quick) {
    const table = (record: Record<string, number>) =>
      Object.entries(record).sort(([a], [b]) => a.localeCompare(b)).map(([key, value]) => `| ${key} | ${value} |`).join("\n")
    fs.writeFileSync(
      new URL("../RELIABILITY.md", import.meta.url),
      `# Reliability figures

Produced by \`npm run reliability\` (seed ${seed}) on ${new Date().toISOString().slice(0, 10)}, Node ${process.version},
${os.cpus().length} cores (${os.cpus()[0]?.model ?? "unknown"}), ${Math.round(os.totalmem() / 2 ** 30)} GiB.
Everything runs on 127.0.0.1 and stops by itself. Clients, proxy and server share one process and
its 2 cores, so latency here measures the whole system under chaos, not the library alone.

## 1. Chaos: request/response through a FaultProxy with random faults

${chaos.requests} requests from ${clients} concurrent clients, each \`id payload\` answered with \`id checksum(payload)\`,
through a FaultProxy that slices, delays, resets, closes, stalls and refuses at random (see reliability/chaos.ts);
transient errors are retried up to 8 times with exponential backoff from 2 ms. ${chaos.seconds.toFixed(1)} s,
${Math.round(chaos.requests / chaos.seconds)} requests/s, over ${chaos.proxyConnections} proxied connections.

| figure | value |
| --- | --- |
| requests | ${chaos.requests} |
| responses verified | ${chaos.verified} |
| latency p50 / p99 / max (ms, retries included) | ${chaos.latencyMillis.p50} / ${chaos.latencyMillis.p99} / ${chaos.latencyMillis.max} |
${Object.entries(chaos.failedByTag).map(([tag, n]) => `| ended with ${tag} after retries | ${n} |`).join("\n")}

Faults fired, by kind:

| fault | count |
| --- | --- |
${table(chaos.faults)}

Transient errors met and retried, by tag:

| tag | count |
| --- | --- |
${table(chaos.retriedByTag)}

Invariants (each must be 0):

| invariant | value |
| --- | --- |
${table(chaos.invariants)}

## 4. Interruption at random points

${interruption.iterations} operations (connects, reads, writes, and servers shut down under their handlers, in turn), each
interrupted after a random pause of 0 to 2 ms (see reliability/interruption.ts). ${interruption.seconds.toFixed(1)} s. After an
interrupted read, the next reads must return every byte the peer sent, in order.

| operation | interrupted mid-way | completed first |
| --- | --- | --- |
${Object.keys(interruption.interrupted).map((kind) => `| ${kind} | ${interruption.interrupted[kind]} | ${interruption.completed[kind]} |`).join("\n")}

Invariants (each must be 0):

| invariant | value |
| --- | --- |
${table(interruption.invariants)}
`
    )
  }
  if (broken.length > 0) {
    console.error(`broken invariants: ${broken.map(([key, value]) => `${key}=${value}`).join(", ")}`)
    process.exitCode = 1
  }
})

Effect.runPromise(main)
