/**
 * A TLS echo server and client, with client certificates (mutual TLS).
 *
 *   npx tsx examples/tls-echo.ts
 *   npx tsx examples/tls-echo.ts --ca ca.pem --cert server.pem --key server-key.pem \
 *     --client-cert client.pem --client-key client-key.pem
 *
 * Without paths it makes its own certificates with the `openssl` command line in a temporary
 * directory (a CA, a server certificate for 127.0.0.1 and localhost, a client certificate),
 * removed at the end. It then shows what a TLS connection tells about itself, and two handshakes
 * that fail, as the typed errors a program matches on.
 */
import { Effect, Option, Stream } from "effect"
import { NodeTcp, Server, Tcp } from "effect-tcp"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { parseArgs } from "node:util"

const { values: args } = parseArgs({
  options: {
    ca: { type: "string" },
    cert: { type: "string" },
    key: { type: "string" },
    "client-cert": { type: "string" },
    "client-key": { type: "string" }
  }
})

interface Pems {
  readonly ca: string
  readonly cert: string
  readonly key: string
  readonly clientCert: string
  readonly clientKey: string
}

/** A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate, made by openssl. */
const makeCertificates = (dir: string): Pems => {
  const openssl = (...argv: Array<string>) => execFileSync("openssl", argv, { cwd: dir, stdio: "pipe" })
  const key = (name: string) => openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", `${name}-key.pem`)
  key("ca")
  openssl("req", "-x509", "-new", "-key", "ca-key.pem", "-subj", "/CN=tls-echo example CA", "-days", "1", "-out", "ca.pem")
  const issue = (name: string, subject: string, extensions: string) => {
    key(name)
    openssl("req", "-new", "-key", `${name}-key.pem`, "-subj", subject, "-out", `${name}.csr`)
    fs.writeFileSync(path.join(dir, `${name}.ext`), extensions)
    openssl(
      "x509", "-req", "-in", `${name}.csr`, "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
      "-days", "1", "-extfile", `${name}.ext`, "-out", `${name}.pem`
    )
  }
  issue("server", "/CN=localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
  issue("client", "/CN=example-client", "extendedKeyUsage=clientAuth\n")
  const read = (file: string) => fs.readFileSync(path.join(dir, file), "utf8")
  return {
    ca: read("ca.pem"),
    cert: read("server.pem"),
    key: read("server-key.pem"),
    clientCert: read("client.pem"),
    clientKey: read("client-key.pem")
  }
}

const certificates = args.ca !== undefined
  ? Effect.sync((): Pems => ({
    ca: fs.readFileSync(args.ca!, "utf8"),
    cert: fs.readFileSync(args.cert!, "utf8"),
    key: fs.readFileSync(args.key!, "utf8"),
    clientCert: fs.readFileSync(args["client-cert"]!, "utf8"),
    clientKey: fs.readFileSync(args["client-key"]!, "utf8")
  }))
  : Effect.acquireRelease(
    Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "tls-echo-"))),
    (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
  ).pipe(Effect.map(makeCertificates))

const program = Effect.gen(function*() {
  const pems = yield* certificates

  // The server requires a client certificate signed by the CA, and echoes every byte.
  const server = yield* Server.serve(
    { port: 0, tls: { cert: pems.cert, key: pems.key, ca: pems.ca, requestCert: true, handshakeTimeout: "5 seconds" } },
    (connection) => connection.stream.pipe(Stream.run(connection.sink))
  )
  console.log(`TLS server on ${server.address}`)

  // The client trusts the CA and shows its own certificate.
  const connection = yield* Tcp.connect({
    host: "localhost",
    port: server.address.port,
    connectTimeout: "5 seconds",
    tls: { ca: pems.ca, cert: pems.clientCert, key: pems.clientKey }
  })
  const tls = Option.getOrThrow(connection.tls)
  const peer = Option.getOrThrow(tls.peerCertificate)
  console.log(`negotiated ${tls.protocol} with ${tls.cipher}; server certificate for ${peer.subject.CN}, issued by ${peer.issuer.CN}`)
  yield* connection.write("hello over TLS")
  console.log(`echoed: ${new TextDecoder().decode(yield* connection.readExactly(14))}`)

  // Without the CA, the server's certificate is not trusted: the connect fails, typed.
  yield* Tcp.connect({ host: "localhost", port: server.address.port, tls: true }).pipe(
    Effect.catchTag("TlsHandshakeFailed", (error) => Effect.sync(() => console.log(`without the CA: ${error.reason}: ${error.message}`)))
  )

  // Without a client certificate, the server refuses: with TLS 1.3 the client learns it at its first read.
  yield* Effect.gen(function*() {
    const anonymous = yield* Tcp.connect({ host: "localhost", port: server.address.port, tls: { ca: pems.ca } })
    yield* anonymous.write("anyone there?")
    return yield* anonymous.read
  }).pipe(
    Effect.match({
      onFailure: (error) => console.log(`without a client certificate: ${error._tag}`),
      onSuccess: (read) => console.log(`without a client certificate: the server closed the connection (${read._tag})`)
    }),
    Effect.scoped
  )
  const stats = yield* server.stats
  console.log(`server: ${stats.accepted} served, ${stats.handshakesFailed} handshakes failed`)
}).pipe(Effect.scoped, Effect.provide(NodeTcp.layer))

Effect.runPromise(program)
