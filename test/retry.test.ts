import { describe, expect } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Random from "effect/Random"
import * as Schedule from "effect/Schedule"
import * as ScheduleDecision from "effect/ScheduleDecision"
import * as ScheduleIntervals from "effect/ScheduleIntervals"
import type * as Scope from "effect/Scope"
import * as TestClock from "effect/TestClock"
import { Retry, Tcp, TcpError } from "../src/index.js"
import * as Endpoint from "../src/Endpoint.js"
import { closedPort, effect, live, rawServer, realSleep, tcp } from "./support/harness.js"
import { captureLogs } from "./support/logs.js"

/** The delays a schedule decides for `inputs`, stepped by hand (time passes as it asks). */
const delaysOf = <In>(
  policy: Schedule.Schedule<unknown, In> | Effect.Effect<Schedule.Schedule<unknown, In>, TcpError.InvalidOptions>,
  inputs: ReadonlyArray<In>
) =>
  Effect.gen(function*() {
    const schedule = Effect.isEffect(policy) ? yield* policy : policy
    const delays: Array<number> = []
    let state = schedule.initial
    let now = 0
    for (const input of inputs) {
      const [next, , decision] = yield* schedule.step(now, input, state)
      if (ScheduleDecision.isDone(decision)) break
      const delay = ScheduleIntervals.start(decision.intervals) - now
      delays.push(delay)
      now += delay
      state = next
    }
    return delays
  })

const refused = new TcpError.ConnectionRefused({ operation: "connect", endpoint: Endpoint.make("127.0.0.1", 1) })

/**
 * Runs `attempt` with `retryTransient(policy)` in a fiber and advances the TestClock to each
 * sleep the policy asks for, recording when (in TestClock time) each attempt started.
 */
const driveRetries = <E>(
  attempt: Effect.Effect<unknown, E, Tcp.Tcp | Scope.Scope>,
  policy: Effect.Effect<Schedule.Schedule<unknown, unknown>, TcpError.InvalidOptions>
) =>
  Effect.gen(function*() {
    const logs = captureLogs()
    const started: Array<number> = []
    const recorded = Effect.zipRight(
      Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.sync(() => started.push(now))),
      attempt
    )
    const fiber = yield* recorded.pipe(
      Retry.retryTransient(yield* policy),
      Effect.flip,
      Effect.provide(logs.layer),
      Effect.fork
    )
    for (;;) {
      // Wait in real time (the connects are real) until the fiber has ended or sleeps.
      let sleeps = Chunk.toReadonlyArray(yield* TestClock.sleeps())
      while (fiber.unsafePoll() === null && sleeps.length === 0) {
        yield* realSleep(2)
        sleeps = Chunk.toReadonlyArray(yield* TestClock.sleeps())
      }
      if (fiber.unsafePoll() !== null) break
      const now = yield* Clock.currentTimeMillis
      yield* TestClock.adjust(Duration.millis(sleeps[0]! - now))
    }
    return { error: yield* Fiber.join(fiber), started, logs: logs.entries.map((entry) => entry.message) }
  })

describe("Retry.exponential", () => {
  effect("its defaults without jitter are the seed's policy: 1 s, 2 s, 4 s, then give up", () =>
    Effect.gen(function*() {
      expect(yield* delaysOf(Retry.exponential({ jitter: false }), Array(10).fill(refused))).toEqual([1000, 2000, 4000])
    }))

  effect("base, factor, cap and retries shape the delays", () =>
    Effect.gen(function*() {
      const policy = Retry.exponential({ base: "100 millis", factor: 3, cap: "2 seconds", retries: 6, jitter: false })
      expect(yield* delaysOf(policy, Array(10).fill(refused))).toEqual([100, 300, 900, 2000, 2000, 2000])
    }))

  effect("attempts counts the first attempt: attempts 3 is 2 retries", () =>
    Effect.gen(function*() {
      expect(yield* delaysOf(Retry.exponential({ attempts: 3, jitter: false }), Array(10).fill(refused))).toEqual([
        1000,
        2000
      ])
      expect(yield* delaysOf(Retry.exponential({ attempts: 1 }), Array(10).fill(refused))).toEqual([])
    }))

  effect("retries: Infinity goes on, at the cap", () =>
    Effect.gen(function*() {
      const policy = Retry.exponential({ base: "1 second", cap: "5 seconds", retries: Infinity, jitter: false })
      const delays = yield* delaysOf(policy, Array(50).fill(refused))
      expect(delays.length).toBe(50)
      expect(delays.slice(0, 4)).toEqual([1000, 2000, 4000, 5000])
      expect(new Set(delays.slice(3))).toEqual(new Set([5000]))
    }))

  effect("jitter (on by default) shortens each delay by up to 20%, never beyond the nominal delay or the cap", () =>
    Effect.gen(function*() {
      const policy = Retry.exponential({ base: "1 second", cap: "3 seconds", retries: 200 })
      const delays = yield* delaysOf(policy, Array(200).fill(refused)).pipe(Effect.withRandom(Random.make(42)))
      const nominal = delays.map((_, i) => Math.min(1000 * 2 ** i, 3000))
      delays.forEach((delay, i) => {
        expect(delay).toBeGreaterThanOrEqual(nominal[i]! * 0.8)
        expect(delay).toBeLessThanOrEqual(nominal[i]!)
        expect(Number.isInteger(delay)).toBe(true)
      })
      // Jittered: not all at the cap.
      expect(new Set(delays.slice(2)).size).toBeGreaterThan(100)
      const wide = yield* delaysOf(Retry.exponential({ retries: 100, cap: "1 second", jitter: 1 }), Array(100).fill(refused))
      expect(Math.min(...wide)).toBeLessThan(200)
    }))

  describe("fails with InvalidOptions for bad options, and never throws", () => {
    const cases: Array<[string, Retry.BackoffOptions, string]> = [
      ["a negative base", { base: -1 }, "base must be a finite, non-negative duration"],
      ["a NaN base", { base: NaN }, "base must be a finite, non-negative duration, got NaN"],
      ["a base Duration.decode cannot read", { base: "1e3 millis" as Duration.DurationInput }, `base must be a finite, non-negative duration, got "1e3 millis"`],
      ["a negative cap", { cap: "-5 seconds" }, `cap must be a finite, non-negative duration, got "-5 seconds"`],
      ["a factor below 1", { factor: 0.5 }, "factor must be a finite number of at least 1"],
      ["negative retries", { retries: -1 }, "retries must be a non-negative integer"],
      ["zero attempts", { attempts: 0 }, "attempts must be an integer of at least 1"],
      ["retries and attempts", { retries: 1, attempts: 2 }, "either retries or attempts, not both"],
      ["jitter above 1", { jitter: 1.5 }, "jitter must be a boolean or a fraction from 0 to 1"]
    ]
    for (const [what, options, message] of cases) {
      effect(what, () =>
        Effect.gen(function*() {
          const error = yield* Effect.flip(Retry.exponential(options))
          expect(error).toBeInstanceOf(TcpError.InvalidOptions)
          expect(error.issues).toContain(`Retry.exponential: `)
          expect(error.issues).toContain(message)
        }))
    }

    effect("every bad option is named in one InvalidOptions", () =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(Retry.exponential({ base: -1, factor: 0, jitter: 2 }))
        expect(error.issues).toBe(
          "Retry.exponential: base must be a finite, non-negative duration, got -1; " +
            "factor must be a finite number of at least 1, got 0; jitter must be a boolean or a fraction from 0 to 1, got 2"
        )
      }))

    effect("retryTransient with a bad policy fails with InvalidOptions before the first attempt", () =>
      Effect.gen(function*() {
        let attempts = 0
        const attempt = Effect.suspend(() => {
          attempts++
          return Effect.fail(refused)
        })
        const error = yield* Effect.flip(attempt.pipe(Retry.retryTransient(Retry.exponential({ retries: -1 }))))
        // A policy retries any effect: no socket operation is named, Retry.exponential is.
        expect(error._tag).toBe("InvalidOptions")
        expect(error).not.toHaveProperty("operation")
        expect(error.message).toBe(
          "invalid options: Retry.exponential: retries must be a non-negative integer (or Infinity), got -1"
        )
        expect(attempts).toBe(0)
        // The data-first form too.
        const again = yield* Effect.flip(Retry.retryTransient(attempt, Retry.exponential({ attempts: 0 })))
        expect(again._tag).toBe("InvalidOptions")
        expect(attempts).toBe(0)
      }))
  })
})

describe("Retry.retryTransient", () => {
  effect("takes the effect first or last, with a Schedule or with a policy still to be built", () =>
    Effect.gen(function*() {
      let attempts = 0
      const attempt = Effect.suspend(() => {
        attempts++
        return Effect.fail(refused)
      })
      const quiet = { onRetry: () => Effect.void }
      const forms = [
        attempt.pipe(Retry.retryTransient(Schedule.recurs(2), quiet)),
        Retry.retryTransient(attempt, Schedule.recurs(2), quiet),
        attempt.pipe(Retry.retryTransient(Effect.succeed(Schedule.recurs(2)), quiet)),
        Retry.retryTransient(attempt, Effect.succeed(Schedule.recurs(2)), quiet),
        Retry.retryTransient(attempt, Schedule.recurs(2))
      ]
      for (const form of forms) {
        attempts = 0
        expect(yield* Effect.flip(form)).toBe(refused)
        expect(attempts).toBe(3)
      }
    }))

  effect("retries a refused connect after exactly 1 s, 2 s and 4 s, logging each retry, then fails with ConnectionRefused", () =>
    Effect.gen(function*() {
      const port = yield* closedPort
      const { error, logs, started } = yield* driveRetries(
        Tcp.connect({ host: "127.0.0.1", port }),
        Retry.exponential({ jitter: false })
      )
      expect(started).toEqual([0, 1000, 3000, 7000])
      expect(error).toMatchObject({ _tag: "ConnectionRefused", endpoint: { port } })
      expect(logs).toEqual([
        "attempt 1 failed with ConnectionRefused, retrying in 1s",
        "attempt 2 failed with ConnectionRefused, retrying in 2s",
        "attempt 3 failed with ConnectionRefused, retrying in 4s"
      ])
    }))

  effect("logs the jittered delay that is actually slept", () =>
    Effect.gen(function*() {
      const port = yield* closedPort
      const { logs, started } = yield* driveRetries(
        Tcp.connect({ host: "127.0.0.1", port }),
        Retry.exponential({ retries: 2, jitter: 0.5 })
      )
      const slept = [started[1]! - started[0]!, started[2]! - started[1]!]
      expect(slept[0]).toBeGreaterThanOrEqual(500)
      expect(slept[0]).toBeLessThanOrEqual(1000)
      expect(logs).toEqual([
        `attempt 1 failed with ConnectionRefused, retrying in ${Duration.format(Duration.millis(slept[0]!))}`,
        `attempt 2 failed with ConnectionRefused, retrying in ${Duration.format(Duration.millis(slept[1]!))}`
      ])
    }))

  effect("does not retry a host name that does not exist: DnsLookupFailed at once, nothing logged", () =>
    Effect.gen(function*() {
      const { error, logs, started } = yield* driveRetries(
        Tcp.connect({ host: "no-such-host.invalid", port: 80 }),
        Retry.exponential({ jitter: false })
      )
      expect(error).toMatchObject({ _tag: "DnsLookupFailed", transient: false, code: "ENOTFOUND" })
      expect(started).toEqual([0])
      expect(logs).toEqual([])
    }))

  effect("stops at the first failure that is not transient, without announcing a retry for it", () =>
    Effect.gen(function*() {
      const port = yield* closedPort
      let attempts = 0
      const attempt = Effect.suspend(() =>
        ++attempts < 3 ? Tcp.connect({ host: "127.0.0.1", port }) : Tcp.connect({ host: "127.0.0.1", port: 70000 })
      )
      const { error, logs, started } = yield* driveRetries(attempt, Retry.exponential({ jitter: false, retries: 10 }))
      expect(error._tag).toBe("InvalidOptions")
      expect(started).toEqual([0, 1000, 3000])
      expect(logs).toEqual([
        "attempt 1 failed with ConnectionRefused, retrying in 1s",
        "attempt 2 failed with ConnectionRefused, retrying in 2s"
      ])
    }))

  live("succeeds as soon as an attempt does, with the value of that attempt", () =>
    Effect.gen(function*() {
      const { port } = yield* rawServer((socket) => socket.end("hello"))
      let attempts = 0
      const result = yield* Effect.suspend(() => {
        attempts++
        return attempts < 3 ? Effect.fail(refused) : Effect.scoped(Effect.flatMap(Tcp.connect({ host: "127.0.0.1", port }), (c) => c.readExactly(5)))
      }).pipe(Retry.retryTransient(Retry.exponential({ base: "1 millis" })))
      expect(Buffer.from(result).toString()).toBe("hello")
      expect(attempts).toBe(3)
    }))

  effect("keeps the error type: a caller can still catch each tag", () =>
    Effect.gen(function*() {
      const port = yield* closedPort
      const outcome = yield* Tcp.connect({ host: "127.0.0.1", port }).pipe(
        Retry.retryTransient(Retry.exponential({ retries: 0 })),
        Effect.as("connected"),
        Effect.catchTags({
          ConnectionRefused: (e) => Effect.succeed(`refused by ${tcp(e.endpoint).port}`),
          DnsLookupFailed: () => Effect.succeed("no such host")
        })
      )
      expect(outcome).toBe(`refused by ${port}`)
    }))

  effect("onRetry replaces the log line, and `while` chooses what to retry", () =>
    Effect.gen(function*() {
      const logs = captureLogs()
      const events: Array<string> = []
      let attempts = 0
      const error = yield* Effect.suspend(() => Effect.fail(++attempts < 3 ? "busy" : "done")).pipe(
        Retry.retryTransient(Schedule.spaced("10 millis"), {
          while: (e: string) => e === "busy",
          onRetry: ({ attempt, delay, error }) =>
            Effect.sync(() => events.push(`${attempt} ${error} ${Duration.format(delay)}`))
        }),
        Effect.flip,
        Effect.provide(logs.layer),
        Effect.fork,
        Effect.tap(() => TestClock.adjust("1 second")),
        Effect.flatMap(Fiber.join)
      )
      expect(error).toBe("done")
      expect(events).toEqual(["1 busy 10ms", "2 busy 10ms"])
      expect(logs.entries).toEqual([])
    }))

  effect("Retry.transient restricts any policy to transient failures, for Effect.retry", () =>
    Effect.gen(function*() {
      const host = "no-such-host.invalid"
      let attempts = 0
      const error = yield* Effect.suspend(() => {
        attempts++
        return Tcp.connect({ host, port: 80 })
      }).pipe(Effect.retry(Retry.transient(Schedule.recurs(5))), Effect.flip)
      expect(error._tag).toBe("DnsLookupFailed")
      expect(attempts).toBe(1)
    }))
})

describe("Retry.isRetryable", () => {
  effect("follows TcpError.isTransient for the core's errors and `transient` for others", () =>
    Effect.sync(() => {
      const endpoint = Endpoint.make("db.internal", 5432)
      expect(Retry.isRetryable(refused)).toBe(true)
      expect(Retry.isRetryable(new TcpError.DnsLookupFailed({ operation: "connect", endpoint, transient: true }))).toBe(
        true
      )
      expect(Retry.isRetryable(new TcpError.DnsLookupFailed({ operation: "connect", endpoint, transient: false })))
        .toBe(false)
      expect(Retry.isRetryable(new TcpError.InvalidOptions({ operation: "connect", issues: "port" }))).toBe(false)
      expect(Retry.isRetryable({ _tag: "Mine", transient: true })).toBe(true)
      expect(Retry.isRetryable(new Error("boom"))).toBe(false)
      expect(Retry.isRetryable("busy")).toBe(false)
    }))
})
