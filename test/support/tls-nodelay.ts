/**
 * A child for the test of `noDelay` over TLS: connects with TLS (verification off: only the
 * socket option matters) to the port in argv, with `noDelay` as argv says, then exits. The test
 * runs it under strace and looks for the TCP_NODELAY option being set.
 */
import * as Effect from "effect/Effect"
import * as NodeTcp from "../../src/NodeTcp.js"
import * as Tcp from "../../src/Tcp.js"

const [port, noDelay] = process.argv.slice(2)
Effect.runPromise(
  Tcp.connect({
    host: "127.0.0.1",
    port: Number(port),
    noDelay: noDelay === "true",
    tls: { rejectUnauthorized: false }
  }).pipe(Effect.scoped, Effect.provide(NodeTcp.layer))
).then(() => process.exit(0), (error) => {
  console.error(error)
  process.exit(1)
})
