/**
 * The certificates of the TLS scenarios, made once per suite with the `openssl` command line in a
 * temporary directory: a CA and a server certificate it signs for 127.0.0.1 (the address in
 * subjectAltName, as a client that connects by address verifies it), both on EC prime256v1 keys.
 * The programs get the paths in `Params.tls`; clients trust the CA and verify the server, as
 * users run them. The directory is removed when the suite ends (or by `removeCertificates` when
 * the runner is interrupted).
 */
import { spawnSync } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import type { TlsFiles } from "./programs/protocol.js"

export interface Certificates {
  readonly files: TlsFiles
  /** Removes the directory. */
  readonly dispose: () => void
}

const made = new Set<string>()

/** Removes every directory of certificates still there: for a runner that is interrupted. */
export const removeCertificates = (): void => {
  for (const directory of made) rmSync(directory, { recursive: true, force: true })
  made.clear()
}

// Only what `req -subj` and `x509 -extfile` need, so that the system's openssl.cnf (its defaults
// and extensions) plays no part.
const requestConfig = `[req]
distinguished_name = dn
prompt = no
[dn]
`
const caExtensions = `basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
`
const serverExtensions = `basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
`

/** Makes the CA and the server's certificate; throws with openssl's message when it cannot. */
export const makeCertificates = (): Certificates => {
  const directory = mkdtempSync(join(tmpdir(), "effect-tcp-bench-tls-"))
  made.add(directory)
  const dispose = () => {
    rmSync(directory, { recursive: true, force: true })
    made.delete(directory)
  }
  const at = (name: string) => join(directory, name)
  const openssl = (...args: ReadonlyArray<string>) => {
    const run = spawnSync("openssl", args, { cwd: directory, encoding: "utf8", timeout: 30_000 })
    if (run.error !== undefined) throw new Error(`the TLS scenarios need the openssl command line: ${run.error.message}`)
    if (run.status !== 0) throw new Error(`openssl ${args.join(" ")} failed: ${run.stderr.trim()}`)
  }
  try {
    writeFileSync(at("req.cnf"), requestConfig)
    writeFileSync(at("ca.ext"), caExtensions)
    writeFileSync(at("server.ext"), serverExtensions)
    const key = (file: string) => openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-out", at(file))
    key("ca.key")
    key("server.key")
    openssl("req", "-new", "-config", at("req.cnf"), "-key", at("ca.key"), "-subj", "/CN=effect-tcp bench CA", "-out", at("ca.csr"))
    openssl(
      "x509", "-req", "-in", at("ca.csr"), "-signkey", at("ca.key"), "-days", "2", "-sha256",
      "-extfile", at("ca.ext"), "-set_serial", "1", "-out", at("ca.pem")
    )
    openssl("req", "-new", "-config", at("req.cnf"), "-key", at("server.key"), "-subj", "/CN=127.0.0.1", "-out", at("server.csr"))
    openssl(
      "x509", "-req", "-in", at("server.csr"), "-CA", at("ca.pem"), "-CAkey", at("ca.key"), "-days", "2", "-sha256",
      "-extfile", at("server.ext"), "-set_serial", "2", "-out", at("server.pem")
    )
  } catch (error) {
    dispose()
    throw error
  }
  return { files: { ca: at("ca.pem"), cert: at("server.pem"), key: at("server.key") }, dispose }
}
