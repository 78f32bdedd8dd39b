import { describe, expect } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { Server } from "../src/index.js"
import { effect } from "./support/harness.js"

describe("serve rejects what Duration.decode or the resolver would quietly take, with InvalidOptions", () => {
  const cases: Array<[string, Record<string, unknown>, string]> = [
    ["idleTimeout NaN, which would close every connection at once", { port: 0, idleTimeout: NaN }, "got NaN"],
    ["drainTimeout \"-5 seconds\"", { port: 0, drainTimeout: "-5 seconds" }, `got "-5 seconds"`],
    ["readTimeout [-5, 0]", { port: 0, readTimeout: [-5, 0] }, "got [-5, 0]"],
    ["writeTimeout \"1e3 millis\"", { port: 0, writeTimeout: "1e3 millis" }, `got "1e3 millis"`],
    ["a host with a NUL byte", { host: "127.0.0.1\u0000evil.example", port: 0 }, "a host must not contain spaces or control characters"],
    ["a host with a tab", { host: "127.0.0.1\t", port: 0 }, "a host must not contain spaces or control characters"]
  ]
  for (const [what, options, expected] of cases) {
    effect(what, () =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(Server.serve(options as any, () => Effect.void))
        expect(error).toMatchObject({ _tag: "InvalidOptions", operation: "listen" })
        if (error._tag === "InvalidOptions") expect(error.issues).toContain(expected)
      }))
  }
})
