/**
 * Bad input everywhere: random option objects and random byte streams. Each yields a typed error
 * or a valid result; never a defect, a thrown exception or a hang.
 */
import { describe, expect } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import fc from "fast-check"
import type * as net from "node:net"
import * as Framing from "../src/Framing.js"
import * as Message from "../src/Message.js"
import * as Retry from "../src/Retry.js"
import * as Server from "../src/Server.js"
import * as Tcp from "../src/Tcp.js"
import * as TcpError from "../src/TcpError.js"
import { closedPort, live, rawServer } from "./support/harness.js"

/** A failure must be one of our typed errors: no defect, no interruption. */
const typedOrSuccess = <A, E>(exit: Exit.Exit<A, E>) => {
  if (Exit.isSuccess(exit)) return "success"
  const failure = Cause.failureOption(exit.cause)
  if (Option.isSome(failure) && TcpError.isTcpError(failure.value)) return failure.value._tag
  throw new Error(`not a typed error: ${Cause.pretty(exit.cause)}`)
}

// Only loopback and reserved names: a fuzzer must never send traffic anywhere else.
const host = fc.constantFrom("127.0.0.1", "::1", "localhost", "", " ", "no-such-host.invalid", "256.1.1.1", "::gg")
const anyValue = fc.oneof(
  fc.integer({ min: -100_000, max: 100_000 }),
  fc.double(),
  fc.string({ maxLength: 12 }),
  fc.constantFrom("5 seconds", "1 minute", "soon", "-1 millis", Infinity, -Infinity, NaN),
  fc.boolean(),
  fc.constant(null),
  fc.constant(undefined),
  fc.array(fc.integer(), { maxLength: 3 }),
  fc.object({ maxDepth: 1 })
)

/** Mostly a valid value, sometimes anything. */
const mostly = <A>(valid: fc.Arbitrary<A>) =>
  fc.oneof({ weight: 4, arbitrary: valid }, { weight: 1, arbitrary: anyValue })
const duration = fc.oneof(fc.integer({ min: 0, max: 500 }), fc.constantFrom("100 millis", "1 second"))

describe("fuzz", () => {
  live("random Framing and Message options never throw: the framing works, or every use fails with InvalidOptions", () =>
    Effect.gen(function*() {
      const lengthPrefixed = fc.record(
        { headerBytes: mostly(fc.constantFrom(1, 2, 4)), endian: mostly(fc.constantFrom("big", "little")), maxFrameBytes: mostly(fc.nat(70_000)) },
        { requiredKeys: [] }
      )
      const delimited = fc.record({ delimiter: mostly(fc.constantFrom("\n", "\r\n", "", "--end--")), maxFrameBytes: mostly(fc.nat(100)) }, {
        requiredKeys: []
      })
      const server = yield* Server.serve({ port: 0 }, () => Effect.void)
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port: server.address.port })
      const tags = new Set<string>()
      for (const sample of fc.sample(fc.oneof(lengthPrefixed, delimited), { numRuns: 300, seed: 7 })) {
        const framing = "delimiter" in sample
          ? Framing.delimited(sample as Framing.DelimitedOptions)
          : Framing.lengthPrefixed(sample as Framing.LengthPrefixedOptions)
        const written = typedOrSuccess(yield* Effect.exit(Framing.write(connection, framing, "x")))
        const decoded = typedOrSuccess(
          Effect.runSyncExit(Stream.runDrain(Stream.make(new Uint8Array([0, 0, 0, 1, 120, 10])).pipe(Framing.decodeStream(framing))))
        )
        const reader = typedOrSuccess(yield* Effect.exit(Framing.reader(connection, framing)))
        // A framing either works everywhere or fails everywhere with InvalidOptions.
        expect(written === "InvalidOptions").toBe(reader === "InvalidOptions")
        expect(decoded === "InvalidOptions").toBe(reader === "InvalidOptions")
        tags.add(reader)
      }
      expect([...tags].sort()).toEqual(["InvalidOptions", "success"])
      for (const concurrency of fc.sample(anyValue, { numRuns: 100, seed: 8 })) {
        const Echo = Message.protocol({ request: Schema.String, response: Schema.String })
        const exit = yield* Effect.exit(Effect.scoped(Message.serve(Echo, { port: 0, concurrency: concurrency as number }, Effect.succeed)))
        expect(["InvalidOptions", "success"]).toContain(typedOrSuccess(exit))
        const timeout = yield* Effect.exit(Effect.scoped(Message.client(connection, Echo, { timeout: concurrency as number })))
        expect(["InvalidOptions", "success"]).toContain(typedOrSuccess(timeout))
      }
    }), 120_000)

  live("random Retry.exponential options never throw: a schedule, or InvalidOptions", () =>
    Effect.gen(function*() {
      const options = fc.record(
        { base: mostly(duration), cap: mostly(duration), factor: mostly(fc.constantFrom(1, 2, 3)), retries: mostly(fc.nat(5)), attempts: anyValue, jitter: mostly(fc.boolean()) },
        { requiredKeys: [] }
      )
      const tags = new Set<string>()
      for (const sample of fc.sample(options, { numRuns: 300, seed: 9 })) {
        const exit = yield* Effect.exit(Retry.exponential(sample as Retry.BackoffOptions))
        tags.add(typedOrSuccess(exit))
      }
      expect([...tags].sort()).toEqual(["InvalidOptions", "success"])
    }))

  live("random connect options give a typed error or a connection, never a defect", () =>
    Effect.gen(function*() {
      const port = yield* closedPort
      const options = fc.record(
        {
          host,
          port: mostly(fc.constant(port)),
          connectTimeout: mostly(fc.constant(200)),
          readTimeout: mostly(duration),
          writeTimeout: mostly(duration),
          keepAlive: mostly(fc.boolean()),
          keepAliveInitialDelay: mostly(duration),
          noDelay: mostly(fc.boolean()),
          extra: anyValue
        },
        { requiredKeys: [] }
      )
      const tags = new Set<string>()
      for (const sample of fc.sample(options, { numRuns: 300, seed: 42 })) {
        // Only the closed port may be dialled: anything else valid would reach a real service.
        const target = typeof sample.port === "number" && sample.port !== port && Number.isInteger(sample.port) &&
            sample.port >= 1 && sample.port <= 65535
          ? { ...sample, port }
          : sample
        const exit = yield* Effect.exit(Effect.scoped(Tcp.connect(target as Tcp.ConnectOptions)))
        tags.add(typedOrSuccess(exit))
      }
      expect(tags.has("InvalidOptions")).toBe(true)
      expect(tags.has("ConnectionRefused")).toBe(true)
      expect([...tags].every((tag) =>
        ["InvalidOptions", "ConnectionRefused", "DnsLookupFailed", "AddressNotAvailable", "ConnectTimeout"].includes(tag)
      )).toBe(true)
    }), 120_000)

  live("random serve options give a typed error or a server, never a defect", () =>
    Effect.gen(function*() {
      const options = fc.record(
        {
          host: fc.constantFrom("127.0.0.1", "::1", "", " ", "no-such-host.invalid", "192.0.2.1"),
          port: mostly(fc.constant(0)),
          backlog: mostly(fc.integer({ min: 1, max: 1000 })),
          maxConnections: mostly(fc.integer({ min: 1, max: 1000 })),
          idleTimeout: mostly(duration),
          drainTimeout: mostly(fc.constant(0)),
          noDelay: mostly(fc.boolean())
        },
        { requiredKeys: [] }
      )
      const tags = new Set<string>()
      for (const sample of fc.sample(options, { numRuns: 200, seed: 7 })) {
        // Never bind a privileged or well-known port of this machine: only a free one (0).
        const target = typeof sample.port === "number" && Number.isInteger(sample.port) && sample.port >= 0 &&
            sample.port <= 65535
          ? { ...sample, port: 0, drainTimeout: 0 }
          : { ...sample, drainTimeout: 0 }
        const exit = yield* Effect.exit(Effect.scoped(Server.serve(target as Server.ServeOptions, () => Effect.void)))
        tags.add(typedOrSuccess(exit))
      }
      expect(tags.has("InvalidOptions")).toBe(true)
      expect(tags.has("success")).toBe(true)
    }), 120_000)

  live("random bytes cut at random points read back exactly, whatever mix of reads takes them", () =>
    Effect.gen(function*() {
      const scenario = fc.record({
        data: fc.uint8Array({ minLength: 0, maxLength: 3000 }),
        cuts: fc.array(fc.integer({ min: 1, max: 300 }), { minLength: 1, maxLength: 20 }),
        reads: fc.array(
          fc.oneof(
            fc.record({ kind: fc.constant("read" as const) }),
            fc.record({ kind: fc.constant("exactly" as const), size: fc.integer({ min: 0, max: 500 }) }),
            fc.record({
              kind: fc.constant("until" as const),
              delimiter: fc.uint8Array({ minLength: 1, maxLength: 3 }),
              maxFrameBytes: fc.integer({ min: 0, max: 400 })
            })
          ),
          { minLength: 1, maxLength: 30 }
        )
      })
      for (const { cuts, data, reads } of fc.sample(scenario, { numRuns: 60, seed: 5 })) {
        yield* Effect.scoped(Effect.gen(function*() {
          // The peer sends the data in pieces of the given sizes, one per event-loop turn, then FIN.
          const { port } = yield* rawServer((socket: net.Socket) => {
            let offset = 0
            let cut = 0
            const next = () => {
              if (socket.destroyed) return
              if (offset >= data.length) return void socket.end()
              const size = cuts[cut++ % cuts.length]!
              socket.write(data.subarray(offset, offset + size), () => setImmediate(next))
              offset += size
            }
            next()
          })
          const connection = yield* Tcp.connect({ host: "127.0.0.1", port })
          // What the reads return, with each consumed delimiter put back, must be a prefix of the data.
          const consumed: Array<Uint8Array> = []
          for (const step of reads) {
            const exit = yield* Effect.exit(
              step.kind === "read"
                ? Effect.map(connection.read, Option.getOrElse(() => new Uint8Array(0)))
                : step.kind === "exactly"
                ? connection.readExactly(step.size)
                : Effect.map(
                  connection.readUntil(step.delimiter, { maxFrameBytes: step.maxFrameBytes }),
                  (line) => Buffer.concat([line, step.delimiter])
                )
            )
            const tag = typedOrSuccess(exit)
            if (Exit.isSuccess(exit)) consumed.push(exit.value)
            else expect(["UnexpectedEof", "FrameTooLarge"]).toContain(tag)
          }
          const got = Buffer.concat(consumed)
          expect(Buffer.from(data).subarray(0, got.length).equals(got)).toBe(true)
        }))
      }
    }), 120_000)
})
