/**
 * Child process of test/exhaustion.test.ts, started under a low `ulimit -n`: opens /dev/null
 * until the process is out of descriptors, then connects to `localhost` (whose lookup needs a
 * descriptor to read /etc/hosts), then frees them and connects to a name that does not exist.
 * Prints one JSON line: each connect's error (tag, code, transient, message).
 */
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import * as NodeTcp from "../../src/NodeTcp.js"
import * as Tcp from "../../src/Tcp.js"
import * as TcpError from "../../src/TcpError.js"

const port = Number(process.argv[2])

const attempt = (host: string) =>
  Tcp.connect({ host, port }).pipe(
    Effect.scoped,
    Effect.flip,
    Effect.map((error) => ({
      _tag: error._tag,
      code: "code" in error ? error.code : undefined,
      transient: TcpError.isTransient(error),
      message: error.message
    }))
  )

const program = Effect.gen(function*() {
  const held: Array<number> = []
  try {
    for (;;) held.push(fs.openSync("/dev/null", "r"))
  } catch {
    // EMFILE: every descriptor this process may have is open.
  }
  const exhausted = yield* attempt("localhost")
  for (const fd of held) fs.closeSync(fd)
  const missing = yield* attempt("no-such-host.invalid")
  return { exhausted, missing }
}).pipe(Effect.provide(NodeTcp.layer))

Effect.runPromise(program).then((outcome) => console.log(JSON.stringify(outcome)))
