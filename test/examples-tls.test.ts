/** The TLS example, run as a user runs it (`npx tsx examples/tls-echo.ts`). */
import { describe, expect } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { run } from "./support/examples.js"
import { live } from "./support/harness.js"

describe("TLS example", () => {
  live("tls-echo makes its certificates, echoes over mutual TLS, shows two typed handshake failures and exits 0", () =>
    Effect.gen(function*() {
      const example = yield* run("tls-echo", [])
      expect(yield* example.exitCode).toBe(0)
      const lines = example.lines.filter((line) => !line.startsWith("timestamp="))
      expect(lines).toEqual([
        expect.stringMatching(/^TLS server on 127\.0\.0\.1:\d+$/),
        expect.stringMatching(/^negotiated TLSv1\.3 with TLS_\w+; server certificate for localhost, issued by tls-echo example CA$/),
        "echoed: hello over TLS",
        expect.stringMatching(/^without the CA: CertificateUntrusted: TLS handshake with localhost:\d+ failed \(SELF_SIGNED_CERT_IN_CHAIN\)/),
        "without a client certificate: TlsHandshakeFailed",
        "server: 1 served, 2 handshakes failed"
      ])
      // The client that did not trust the server hung up during the handshake, logged first; the
      // refused client certificate comes within the 10 s of rate limit, summed up at shutdown.
      expect(example.lines.some((line) => line.includes("TLS handshake failed (ConnectionReset)"))).toBe(true)
      expect(example.lines.some((line) => line.includes("1 more since the last report (the last: CertificateRequired)"))).toBe(true)
    }), 60_000)
})
