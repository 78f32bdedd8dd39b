/**
 * `npm run reliability`: the full reliability suite, with its figures printed and written to
 * RELIABILITY.md. `--quick` runs the short version (the one inside `npm test`) without writing
 * and without the abuse run, which waits out the server's deadlines (about a minute).
 */
import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as fs from "node:fs"
import * as os from "node:os"
import { limits } from "./abuse-limits.js"
import { runAbuse } from "./abuse.js"
import { runChaos } from "./chaos.js"
import { runInterruptions } from "./interruption.js"

const quick = process.argv.includes("--quick")
const seed = Number(process.env.SEED ?? 20261125)

const main = Effect.gen(function*() {
  const loadAverage = os.loadavg()[0]!.toFixed(1)
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
  const abuse = quick ? undefined : yield* runAbuse({
    slowloris: 1000,
    garbage: 1000,
    nonReaders: 20,
    flood: 3000,
    goodClients: 10,
    unloadedMillis: 3000
  })
  if (abuse) console.log(JSON.stringify(abuse, null, 2))
  const broken = [
    ...Object.entries(chaos.invariants),
    ...Object.entries(interruption.invariants),
    ...Object.entries(abuse?.invariants ?? {})
  ].filter(
    ([, value]) => value !== 0
  )
  if (abuse) {
    const table = (record: Record<string, number>) =>
      Object.entries(record).sort(([a], [b]) => a.localeCompare(b)).map(([key, value]) => `| ${key} | ${value} |`).join("\n")
    fs.writeFileSync(
      new URL("../RELIABILITY.md", import.meta.url),
      `# Reliability figures

Produced by \`npm run reliability\` (seed ${seed}) on ${new Date().toISOString().slice(0, 10)}, Node ${process.version},
${os.cpus().length} cores (${os.cpus()[0]?.model ?? "unknown"}), ${Math.round(os.totalmem() / 2 ** 30)} GiB, load average ${loadAverage} when it started.
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

## 2. Abuse: a server with limits under slowloris, garbage, floods and clients that never read

A line echo server in its own process (reliability/abuse-server.ts) with maxConnections ${limits.maxConnections},
idleTimeout ${limits.idleTimeout}, writeTimeout ${limits.writeTimeout}, lines of at most ${limits.maxLineBytes} bytes and ${limits.lineDeadlineMillis / 1000} s to
send a whole line. ${abuse.options.goodClients} well-behaved clients, connected before the attack, send a line every 10 ms and check the
echo. Then, all at once: ${abuse.options.slowloris} slowloris connections (a byte a second, never a line), ${abuse.options.garbage} connections sending
4 KiB of random bytes, and ${abuse.options.nonReaders} clients sending 8 MiB of lines each and never reading the echoes. The attack lasted
${abuse.attackSeconds} s: from its start until the server had closed every attacking connection. Then a flood of ${abuse.options.flood} connections,
past maxConnections, each holding its slot with a byte a second: ${abuse.flood.rejected} were refused at once, the rest cut off by the
line deadline, in ${abuse.flood.seconds} s. Afterwards ${abuse.options.goodClients} new clients connect and are measured again.

| well-behaved requests | before the attack | under attack | under the flood | new clients after it |
| --- | --- | --- | --- | --- |
| requests (failed) | ${abuse.unloaded.requests} (${abuse.unloaded.failed}) | ${abuse.loaded.requests} (${abuse.loaded.failed}) | ${abuse.flood.latency.requests} (${abuse.flood.latency.failed}) | ${abuse.after.requests} (${abuse.after.failed}) |
| p50 / p99 / max latency (ms) | ${abuse.unloaded.p50} / ${abuse.unloaded.p99} / ${abuse.unloaded.max} | ${abuse.loaded.p50} / ${abuse.loaded.p99} / ${abuse.loaded.max} | ${abuse.flood.latency.p50} / ${abuse.flood.latency.p99} / ${abuse.flood.latency.max} | ${abuse.after.p50} / ${abuse.after.p99} / ${abuse.after.max} |

How the server ended the attacking connections (handler failures by tag, and its stats):

| figure | value |
| --- | --- |
${table(abuse.server.failures)}
${table(abuse.server.stats)}

The server's memory and event loop (${(abuse.server.idleRssBytes / 2 ** 20).toFixed(0)} MiB RSS when idle):

| figure | peak | bound |
| --- | --- | --- |
| RSS (MiB) | ${(abuse.server.peakRssBytes / 2 ** 20).toFixed(0)} | ${(abuse.server.rssBoundBytes / 2 ** 20).toFixed(0)} |
| Buffers, \`arrayBuffers\` (MiB) | ${(abuse.server.peakArrayBuffersBytes / 2 ** 20).toFixed(1)} | ${(abuse.server.arrayBuffersBoundBytes / 2 ** 20).toFixed(0)} |
| JavaScript heap used (MiB) | ${(abuse.server.peakHeapUsedBytes / 2 ** 20).toFixed(0)} | |
| event-loop delay p99 / max (ms) | ${abuse.server.eventLoopDelayMillis.p99.toFixed(1)} / ${abuse.server.eventLoopDelayMillis.max.toFixed(1)} | |

The bound for Buffers is what the settings allow: per connection, 64 KiB queued before the socket
pauses, Node's 16 KiB, a 64 KiB chunk being parsed and one line. The RSS bound adds that, 16 KiB of
objects per connection and 256 MiB of heap the garbage collector may leave uncollected, to the idle RSS.

Invariants (each must be 0):

| invariant | value |
| --- | --- |
${table(abuse.invariants)}

## 3. Bad input

Not a run of its own: \`test/fuzz.test.ts\` (random connect and serve options, random byte streams cut at
random points and read by random mixes of reads), \`test/framing.test.ts\` (random frame headers and
garbage under any chunking) and \`test/message.test.ts\` (bytes that are not the schema) run in \`npm test\`:
each input gives a typed error or a valid result, never a defect, a hang or a crash.

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
