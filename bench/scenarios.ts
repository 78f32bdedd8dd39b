/**
 * The scenarios: what each one sends, which programs play client and server for each row, what
 * is measured and compared, the targets, and the totals a run must have reached to count.
 */
import { frameCounts } from "./programs/frames.js"
import type { ClientJob, ClientReport, Implementation, Params, ServerJob, ServerReport } from "./programs/protocol.js"

/** Everything one run (one client process against one server process) reported. */
export interface RunReport {
  readonly client: ClientReport
  readonly server: ServerReport
  /** Exit codes of both processes (a run counts only when both are 0). */
  readonly exitCodes: { readonly client: number; readonly server: number }
  /** Connections the kernel dropped because a listen queue was full, during the run (in this network namespace). */
  readonly listenOverflows: number
  /** TCP segments retransmitted during the run (in this network namespace). */
  readonly retransmits: number
}

/** One row of a scenario: an implementation (or a way of using it) and the programs that run it. */
export interface Variant {
  readonly id: string
  readonly implementation: Implementation
  readonly label: string
  readonly server: { readonly implementation: Implementation; readonly job: ServerJob }
  readonly client: { readonly implementation: Implementation; readonly job: ClientJob }
}

/** A figure taken from each run; the table shows its median over the rounds. */
export interface Measure {
  readonly label: string
  readonly better: "higher" | "lower"
  readonly decimals: number
  /** The ratio to the baseline row that must be met (at least for "higher", at most for "lower"). */
  readonly target?: number
  /** Whether a ratio to the baseline row means anything (not for a difference). */
  readonly ratio: boolean
  /** The figure of `run`, given the baseline row's run of the same round; undefined: does not apply to this row. */
  readonly value: (run: RunReport, baseline: RunReport | undefined) => number | undefined
}

export interface Scenario {
  readonly name: string
  readonly title: string
  /** What it does and measures, for BENCHMARKS.md. */
  readonly description: string
  readonly params: (quick: boolean) => Params
  /** Whether its programs speak TLS: the runner makes certificates and passes their paths in `Params.tls`. */
  readonly tls?: boolean
  /**
   * Whether its programs talk over a Unix domain socket: each run gets a path of its own, in a
   * directory made for it and removed after it (runs may overlap), passed in `Params.socketPath`.
   */
  readonly unixSocket?: boolean
  readonly variants: ReadonlyArray<Variant>
  /** The row every ratio is to. */
  readonly baseline: string
  /** Implementations that have no row here, shown as "n/a". */
  readonly notApplicable: ReadonlyArray<Implementation>
  readonly measures: ReadonlyArray<Measure>
  /** Why the run does not count (totals missing or wrong), or undefined when it is complete. */
  readonly verify: (run: RunReport, params: Params) => string | undefined
}

export const implementationLabels: Record<Implementation, string> = {
  raw: "raw node:net",
  platform: "@effect/platform",
  ours: "effect-tcp"
}

const KiB = 1024
const MiB = 1024 * KiB
const GiB = 1024 * MiB

const sizes = (quick: boolean): Params => ({
  totalBytes: quick ? 4 * MiB : GiB,
  chunkBytes: 64 * KiB,
  roundTrips: quick ? 300 : 100_000,
  messageBytes: 64,
  inFlight: 8,
  connections: quick ? 50 : 5_000,
  frameBytes: 16 * KiB,
  backlog: 5_000,
  handshakes: quick ? 20 : 2_000
})

/** The same job for both ends, one row per implementation. */
const sameOnBothEnds = (serverJob: ServerJob, clientJob: ClientJob): ReadonlyArray<Variant> =>
  (["raw", "platform", "ours"] as const).map((implementation) => ({
    id: implementation,
    implementation,
    label: implementationLabels[implementation],
    server: { implementation, job: serverJob },
    client: { implementation, job: clientJob }
  }))

const megabytesPerSecond = (target: number | undefined): Measure => ({
  label: "MB/s",
  better: "higher",
  decimals: 0,
  ratio: true,
  ...(target === undefined ? {} : { target }),
  value: (run) => run.client.bytes! / 1e6 / run.client.seconds
})

const roundTripsPerSecond = (target: number | undefined): Measure => ({
  label: "round trips/s",
  better: "higher",
  decimals: 0,
  ratio: true,
  ...(target === undefined ? {} : { target }),
  value: (run) => run.client.roundTrips! / run.client.seconds
})

const latency = (label: string, of: (client: ClientReport) => number | undefined): Measure => ({
  label,
  better: "lower",
  decimals: 1,
  ratio: true,
  value: (run) => of(run.client)
})

const problems = (...checks: ReadonlyArray<[boolean, string]>): string | undefined =>
  checks.filter(([ok]) => !ok).map(([, problem]) => problem).join("; ") || undefined

const noServerErrors = (run: RunReport): [boolean, string] => [
  run.server.errors === 0,
  `the server reported ${run.server.errors} failed connection(s)`
]

const bulkVerify = (direction: "sent" | "received") => (run: RunReport, params: Params) =>
  problems(
    [run.client.bytes === params.totalBytes, `the client ${direction} ${run.client.bytes} of ${params.totalBytes} bytes`],
    [run.server.connections === 1, `the server accepted ${run.server.connections} connections instead of 1`],
    noServerErrors(run)
  )

const roundTripVerify = (run: RunReport, params: Params) =>
  problems(
    [run.client.roundTrips === params.roundTrips, `${run.client.roundTrips} of ${params.roundTrips} round trips completed`],
    noServerErrors(run)
  )

const bulkSummary = "1 GiB in writes of 64 KiB"

/** raw node:tls and effect-tcp, each against its own server (there is no TLS in @effect/platform's sockets). */
const tlsRows = (serverJob: ServerJob, clientJob: ClientJob): ReadonlyArray<Variant> =>
  (["raw", "ours"] as const).map((implementation) => ({
    id: implementation,
    implementation,
    label: implementation === "raw" ? "raw node:tls" : implementationLabels.ours,
    server: { implementation, job: serverJob },
    client: { implementation, job: clientJob }
  }))

/** effect-tcp's row again, its client connecting with `readTimeout` and `writeTimeout` set, as production code does. */
const withTimeouts = (serverJob: ServerJob, clientJob: ClientJob): Variant => ({
  id: "ours-timeouts",
  implementation: "ours",
  label: "effect-tcp, readTimeout + writeTimeout",
  server: { implementation: "ours", job: serverJob },
  client: { implementation: "ours", job: clientJob }
})

export const scenarios: ReadonlyArray<Scenario> = [
  {
    name: "upload",
    title: "Bulk upload",
    description:
      `The client sends ${bulkSummary} to a server that checks and discards them and sends one byte back once it has counted all of them. MB/s (10^6 bytes) from the first write to the arrival of that byte.`,
    params: sizes,
    variants: sameOnBothEnds("sink", "upload"),
    baseline: "raw",
    notApplicable: [],
    measures: [megabytesPerSecond(0.9)],
    verify: (run, params) =>
      bulkVerify("sent")(run, params) ??
        problems([
          run.server.bytesReceived === params.totalBytes,
          `the server received ${run.server.bytesReceived} of ${params.totalBytes} bytes`
        ])
  },
  {
    name: "download",
    title: "Bulk download",
    description:
      `The client sends one byte; the server answers with ${bulkSummary} and half-closes; the client checks and discards them. MB/s from the client's byte to the last byte received. The last row is effect-tcp's client with \`readTimeout\` and \`writeTimeout\` of 30 s, as production code sets them.`,
    params: sizes,
    variants: [...sameOnBothEnds("source", "download"), withTimeouts("source", "download-timeouts")],
    baseline: "raw",
    notApplicable: [],
    measures: [megabytesPerSecond(0.9)],
    verify: bulkVerify("received")
  },
  {
    name: "echo",
    title: "Echo",
    description:
      `The client sends ${bulkSummary} to a server that sends every byte back, and reads the echo while it writes; both sides respect backpressure. MB/s (one way) from the first write to the last byte echoed.`,
    params: sizes,
    variants: sameOnBothEnds("echo", "echo"),
    baseline: "raw",
    notApplicable: [],
    measures: [megabytesPerSecond(0.9)],
    verify: bulkVerify("received")
  },
  {
    name: "rr-seq",
    title: "Sequential request/response",
    description:
      "100,000 round trips on one connection to an echo server: write a 64-byte request, read its 64-byte response, then the next. Round trips per second, and the median (p50) and 99th percentile (p99) of the round-trip times in µs. The last row is effect-tcp's client with `readTimeout` and `writeTimeout` of 30 s, as production code sets them.",
    params: sizes,
    variants: [...sameOnBothEnds("echo", "rr-seq"), withTimeouts("echo", "rr-seq-timeouts")],
    baseline: "raw",
    notApplicable: [],
    measures: [
      roundTripsPerSecond(0.85),
      latency("p50 µs", (c) => c.p50Micros),
      latency("p99 µs", (c) => c.p99Micros)
    ],
    verify: roundTripVerify
  },
  {
    name: "rr-unix",
    title: "Sequential request/response over a Unix socket",
    description:
      "The sequential request/response scenario (100,000 round trips of 64 bytes on one connection to an echo server) over a Unix domain socket in the temporary directory instead of TCP on 127.0.0.1. Round trips per second, p50 and p99 in µs. Raw node:net and effect-tcp only, over the same path.",
    params: sizes,
    unixSocket: true,
    variants: sameOnBothEnds("echo", "rr-seq").filter((variant) => variant.implementation !== "platform"),
    baseline: "raw",
    notApplicable: ["platform"],
    measures: [
      roundTripsPerSecond(0.85),
      latency("p50 µs", (c) => c.p50Micros),
      latency("p99 µs", (c) => c.p99Micros)
    ],
    verify: roundTripVerify
  },
  {
    name: "rr-pipe",
    title: "Pipelined request/response",
    description:
      "The same 100,000 round trips with 8 requests in flight: the client sends 8, and one more for each 64-byte response it counts. Round trips per second; p50 and p99 from each request's write to its response.",
    params: sizes,
    variants: sameOnBothEnds("echo", "rr-pipe"),
    baseline: "raw",
    notApplicable: [],
    measures: [
      roundTripsPerSecond(0.75),
      latency("p50 µs", (c) => c.p50Micros),
      latency("p99 µs", (c) => c.p99Micros)
    ],
    verify: roundTripVerify
  },
  {
    name: "storm",
    title: "Connection storm",
    description:
      "5,000 connections opened at once to an echo server listening with a backlog of 5,000, each doing one exchange: connect, write 64 bytes, read the 64 bytes back, close. Seconds until every connection is done, the server's peak resident memory (maxRSS) and its resident memory once listening, before the storm. effect-tcp's echo handler is a loop of `read` and `write`; the last row runs the README's `connection.stream.pipe(Stream.run(connection.sink))` instead, to show what starting a Stream costs per connection.",
    params: sizes,
    variants: [
      ...sameOnBothEnds("echo", "storm"),
      {
        id: "ours-stream",
        implementation: "ours",
        label: "effect-tcp, handler as a Stream",
        server: { implementation: "ours", job: "echo-stream" },
        client: { implementation: "ours", job: "storm" }
      }
    ],
    baseline: "raw",
    notApplicable: [],
    measures: [
      { label: "seconds", better: "lower", decimals: 2, target: 1.5, ratio: true, value: (run) => run.client.seconds },
      {
        label: "server peak RSS MiB",
        better: "lower",
        decimals: 0,
        target: 1.5,
        ratio: true,
        value: (run) => run.server.maxRssKiB / 1024
      },
      {
        label: "server RSS before MiB",
        better: "lower",
        decimals: 0,
        ratio: true,
        value: (run) => run.server.baselineRssKiB / 1024
      }
    ],
    verify: (run, params) =>
      problems(
        [run.client.connections === params.connections, `${run.client.connections} of ${params.connections} connections completed`],
        [run.server.connections === params.connections, `the server accepted ${run.server.connections} of ${params.connections} connections`],
        noServerErrors(run)
      )
  },
  {
    name: "pool",
    title: "Connection pool",
    description:
      "effect-tcp only: 20,000 sequential 64-byte round trips to an effect-tcp echo server, on one connection held throughout, and with `ConnectionPool.make` + `pool.use` around each one (default options; the first borrow, which opens the connection, is not timed). Round trips per second, the ratio to the held connection, and the cost of a borrow in µs (the difference of the times per round trip, paired by round).",
    params: (quick) => ({ ...sizes(quick), roundTrips: quick ? 300 : 20_000 }),
    variants: [
      {
        id: "held",
        implementation: "ours",
        label: "effect-tcp, one connection held",
        server: { implementation: "ours", job: "echo" },
        client: { implementation: "ours", job: "pool-held" }
      },
      {
        id: "pool",
        implementation: "ours",
        label: "effect-tcp, pool.use per request",
        server: { implementation: "ours", job: "echo" },
        client: { implementation: "ours", job: "pool-use" }
      }
    ],
    baseline: "held",
    notApplicable: ["raw", "platform"],
    measures: [
      roundTripsPerSecond(undefined),
      {
        label: "µs per borrow",
        better: "lower",
        decimals: 1,
        ratio: false,
        value: (run, held) =>
          run === held || held === undefined
            ? undefined
            : 1e6 * (run.client.seconds / run.client.roundTrips! - held.client.seconds / held.client.roundTrips!)
      }
    ],
    verify: roundTripVerify
  },
  {
    name: "framing",
    title: "Framing decode",
    description:
      "A raw node:net server sends 1 GiB of frame bodies as 65,536 frames of a 4-byte big-endian length and 16 KiB body; the receiver decodes them and checks each frame's length and content. Rows: raw node:net counting the bytes without decoding (the baseline), raw node:net with a hand-written decoder, @effect/platform (it has no framing for sockets: its byte stream from `Socket.toChannel`, decoded by the same hand-written decoder), effect-tcp's `Framing.stream` and a `Framing.reader`'s `read`. MB/s of bytes on the wire, from the client's start byte to the last frame decoded.",
    params: sizes,
    variants: [
      ["raw-bytes", "raw", "raw node:net, bytes only", "frames-count"],
      ["raw-decode", "raw", "raw node:net, hand-written decoder", "frames-decode"],
      ["platform", "platform", "@effect/platform, Stream + hand decoder", "frames-decode"],
      ["ours-stream", "ours", "effect-tcp, Framing.stream", "frames-stream"],
      ["ours-reader", "ours", "effect-tcp, Framing.reader", "frames-reader"]
    ].map(([id, implementation, label, job]) => ({
      id: id!,
      implementation: implementation as Implementation,
      label: label!,
      server: { implementation: "raw" as const, job: "frame-source" as const },
      client: { implementation: implementation as Implementation, job: job as ClientJob }
    })),
    baseline: "raw-bytes",
    notApplicable: [],
    measures: [megabytesPerSecond(0.85)],
    verify: (run, params) => {
      const { frames, wireBytes } = frameCounts(params.totalBytes, params.frameBytes)
      return problems(
        [run.client.bytes === wireBytes, `the client received ${run.client.bytes} of ${wireBytes} bytes`],
        [run.client.frames === undefined || run.client.frames === frames, `${run.client.frames} of ${frames} frames decoded`],
        noServerErrors(run)
      )
    }
  },
  {
    name: "tls-download",
    title: "TLS bulk download",
    description:
      `The download over TLS: the client sends one byte; the server answers with ${bulkSummary} and half-closes; the client checks and discards them. The runner makes a CA and a server certificate for 127.0.0.1 with \`openssl\` (EC prime256v1 keys) at the start of the suite; the client trusts the CA and verifies the server. MB/s from the client's byte to the last byte received (the handshake is done before). Rows: raw node:tls (\`tls.createServer\`, \`tls.connect\`), effect-tcp (\`Server.serve\` and \`Tcp.connect\` with \`tls\`), and effect-tcp's client with \`readTimeout\` and \`writeTimeout\` of 30 s. @effect/platform's sockets have no TLS.`,
    params: sizes,
    tls: true,
    variants: [...tlsRows("source", "download"), withTimeouts("source", "download-timeouts")],
    baseline: "raw",
    notApplicable: ["platform"],
    measures: [megabytesPerSecond(0.9)],
    verify: bulkVerify("received")
  },
  {
    name: "tls-handshakes",
    title: "TLS handshakes",
    description:
      "2,000 TLS connections opened one after another to an echo server, each: connect with a full handshake (TLS 1.3, the server's EC prime256v1 certificate verified against the CA), write 64 bytes, read them back, close. Session resumption is off: no client offers a session from an earlier connection (the servers issue TLS 1.3 session tickets as by default, and the clients never use them; the raw client checks `isSessionReused()` on each connection), so every handshake is a fresh one, with its certificate verification. Handshakes per second, raw node:tls against its own server, effect-tcp against its own.",
    params: sizes,
    tls: true,
    variants: tlsRows("echo", "handshakes"),
    baseline: "raw",
    notApplicable: ["platform"],
    measures: [{
      label: "handshakes/s",
      better: "higher",
      decimals: 0,
      target: 0.9,
      ratio: true,
      value: (run) => run.client.connections! / run.client.seconds
    }],
    verify: (run, params) =>
      problems(
        [run.client.connections === params.handshakes, `${run.client.connections} of ${params.handshakes} connections completed`],
        [run.server.connections === params.handshakes, `the server accepted ${run.server.connections} of ${params.handshakes} connections`],
        [(run.client.resumed ?? 0) === 0, `${run.client.resumed} sessions were resumed`],
        noServerErrors(run)
      )
  }
]

export const scenarioNames: ReadonlyArray<string> = scenarios.map((s) => s.name)
