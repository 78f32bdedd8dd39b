/**
 * The short version of `npm run reliability`: a few thousand requests through a FaultProxy with
 * random faults. Every invariant must be 0.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import { frequentFaults, runChaos } from "../reliability/chaos.js"
import { runInterruptions } from "../reliability/interruption.js"

describe("reliability", () => {
  it.live("chaos: 3,000 requests through random faults, each verified or a typed error, nothing leaked", () =>
    Effect.gen(function*() {
      const figures = yield* runChaos({ requests: 3000, clients: 50, seed: 7, faults: frequentFaults }).pipe(
        Logger.withMinimumLogLevel(LogLevel.None)
      )
      expect(figures.invariants).toEqual({
        mismatchedResponses: 0,
        unresolvedRequests: 0,
        uncaughtExceptions: 0,
        defects: 0,
        socketsLeftOpen: 0,
        fileDescriptorsLeftOpen: 0,
        fibersLeftRunning: 0,
        serverDown: 0
      })
      const failed = Object.values(figures.failedByTag).reduce((sum, n) => sum + n, 0)
      expect(figures.verified + failed).toBe(3000)
      // The faults really fired, and the clients really met and survived them.
      for (const kind of ["slice", "latency", "reset", "close", "stall", "refuse"] as const) {
        expect(figures.faults[kind]).toBeGreaterThan(0)
      }
      expect(Object.values(figures.retriedByTag).reduce((sum, n) => sum + n, 0)).toBeGreaterThan(0)
    }), 120_000)

  it.live("interruption: 200 connects, reads, writes and server handlers interrupted at random points leak nothing", () =>
    Effect.gen(function*() {
      const figures = yield* runInterruptions({ iterations: 200, seed: 11 }).pipe(Logger.withMinimumLogLevel(LogLevel.None))
      expect(figures.invariants).toEqual({
        bytesLostOrReordered: 0,
        clientsLeftHanging: 0,
        socketsLeftOpen: 0,
        timersLeft: 0,
        fibersLeftRunning: 0
      })
      // Both outcomes of the race happened, so interruption really struck mid-operation.
      expect(figures.interrupted.read).toBeGreaterThan(0)
      expect(figures.completed.read).toBeGreaterThan(0)
      expect(figures.interrupted.write).toBeGreaterThan(0)
      expect(figures.interrupted.connect + figures.completed.connect).toBe(50)
    }), 120_000)
})
