/**
 * Certificates for the TLS tests, made by the `openssl` command line in a temporary directory the
 * first time a test process asks for them, and removed when it exits: nothing is committed, nothing
 * expires between runs. Keys are EC (prime256v1), so making all of them takes a fraction
 * of a second.
 *
 * Every certificate is issued by `openssl ca` with explicit `-startdate`/`-enddate` (OpenSSL 3.0's
 * `x509` and `req` have only `-days`, counted from now), which is how `expired` gets a validity
 * wholly in the past and `notYetValid` one that starts years from now. `openssl ca` keeps a small
 * database per issuer; the requests are made in parallel, the signing one at a time.
 */
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

/** A certificate and its private key, as PEM text and as the files holding it. */
export interface KeyPair {
  readonly cert: string
  readonly key: string
  readonly certPath: string
  readonly keyPath: string
}

/** A certificate authority: its certificate (PEM) and where it is. */
export interface Authority {
  readonly ca: string
  readonly caPath: string
}

export interface Certificates extends Authority {
  readonly dir: string
  /** Signed by `ca`; SAN IP:127.0.0.1, IP:::1, DNS:localhost; serverAuth. */
  readonly server: KeyPair
  /** Signed by `ca`; SAN DNS:second.test only, for SNI tests. */
  readonly second: KeyPair
  /** As `server`, valid from two years ago until one year ago. */
  readonly expired: KeyPair
  /** As `server`, valid from ten years from now, for a year. */
  readonly notYetValid: KeyPair
  /** Signed by `ca`; SAN DNS:other.example only: the wrong name for 127.0.0.1 and localhost. */
  readonly otherName: KeyPair
  /** A server certificate as `server`, from a second CA (`unknownCa.ca`) that no test trusts by default. */
  readonly unknownCa: Authority & KeyPair
  /** Signed by its own key, SAN as `server`, not a CA. */
  readonly selfSigned: KeyPair
  /** Signed by `ca`; CN=test-client, clientAuth. */
  readonly client: KeyPair
  /** CN=test-client, clientAuth, from the unknown CA. */
  readonly unknownClient: KeyPair
}

const day = 24 * 60 * 60 * 1000
const year = 365 * day

// Only what `req -subj` and `ca` need, so the system's openssl.cnf (its defaults and extensions)
// plays no part.
const requestConfig = `[ req ]
distinguished_name = dn
prompt = no
[ dn ]
`

const authorityConfig = (dir: string) => `[ ca ]
default_ca = this
[ this ]
database = ${path.join(dir, "index.txt")}
new_certs_dir = ${dir}
rand_serial = yes
default_md = sha256
policy = any
unique_subject = no
[ any ]
commonName = supplied
[ authority ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[ localhost ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, IP:::1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ second ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:second.test
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ other ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:other.example
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ client ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
`

/** Runs openssl; rejects with its stderr when it fails. */
export const openssl = (args: ReadonlyArray<string>): Promise<{ readonly stdout: string; readonly stderr: string }> =>
  new Promise((resolve, reject) => {
    execFile("openssl", args, { encoding: "utf8" }, (error, stdout, stderr) => {
      if (error) reject(new Error(`openssl ${args.join(" ")} failed: ${stderr || error.message}`))
      else resolve({ stdout, stderr })
    })
  })

/** A date as `openssl ca -startdate` takes it: YYYYMMDDHHMMSSZ, in UTC. */
const asn1Time = (date: Date) => date.toISOString().replace(/[-:T]/g, "").replace(/\.\d+Z$/, "Z")

interface Request {
  readonly name: string
  readonly csrPath: string
  readonly keyPath: string
}

const request = async (dir: string, name: string, commonName: string): Promise<Request> => {
  const csrPath = path.join(dir, `${name}.csr`)
  const keyPath = path.join(dir, `${name}.key`)
  await openssl([
    "req", "-config", path.join(dir, "req.cnf"), "-new",
    "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-keyout", keyPath, "-out", csrPath, "-subj", `/CN=${commonName}`
  ])
  return { name, csrPath, keyPath }
}

interface Issuer {
  readonly configPath: string
  readonly certPath: string
  readonly keyPath: string
}

/** Signs `req` with `issuer`, or with its own key when `issuer` is "self". */
const sign = async (
  dir: string,
  req: Request,
  issuer: Issuer | { readonly self: string },
  extensions: string,
  validity: { readonly from: Date; readonly to: Date }
): Promise<KeyPair> => {
  const certPath = path.join(dir, `${req.name}.pem`)
  const by = "self" in issuer ?
    ["-config", issuer.self, "-selfsign", "-keyfile", req.keyPath] :
    ["-config", issuer.configPath, "-cert", issuer.certPath, "-keyfile", issuer.keyPath]
  await openssl([
    "ca", "-batch", "-notext", ...by,
    "-in", req.csrPath, "-out", certPath, "-extensions", extensions,
    "-startdate", asn1Time(validity.from), "-enddate", asn1Time(validity.to)
  ])
  return {
    cert: fs.readFileSync(certPath, "utf8"),
    key: fs.readFileSync(req.keyPath, "utf8"),
    certPath,
    keyPath: req.keyPath
  }
}

const prefix = "effect-tcp-certs-"

const alive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM"
  }
}

/**
 * A directory for this process, removed when it exits. A vitest worker is ended by SIGTERM, which
 * skips "exit": the directory is removed then too, and the process dies of the signal as it would
 * have. A process killed outright (SIGKILL) cannot clean up: its directory carries its pid, and the
 * next process to make certificates removes the directories of processes that are gone.
 */
const temporaryDirectory = () => {
  for (const name of fs.readdirSync(os.tmpdir())) {
    const owner = new RegExp(`^${prefix}(\\d+)-`).exec(name)
    if (owner !== null && !alive(Number(owner[1]))) {
      fs.rmSync(path.join(os.tmpdir(), name), { recursive: true, force: true })
    }
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}${process.pid}-`))
  const remove = () => fs.rmSync(dir, { recursive: true, force: true })
  process.once("exit", remove)
  for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"] as const) {
    process.once(signal, () => {
      remove()
      process.kill(process.pid, signal)
    })
  }
  return dir
}

const make = async (): Promise<Certificates> => {
  const dir = temporaryDirectory()
  fs.writeFileSync(path.join(dir, "req.cnf"), requestConfig)
  // One database per issuer; the self-signed leaf has one of its own.
  const databases = ["ca", "unknown-ca", "self"].map((name) => {
    const databaseDir = path.join(dir, `${name}.db`)
    fs.mkdirSync(databaseDir)
    fs.writeFileSync(path.join(databaseDir, "index.txt"), "")
    const configPath = path.join(databaseDir, "ca.cnf")
    fs.writeFileSync(configPath, authorityConfig(databaseDir))
    return configPath
  })
  const [caConfig, unknownCaConfig, selfConfig] = databases as [string, string, string]

  const [caReq, unknownCaReq, ...leaves] = await Promise.all([
    request(dir, "ca", "effect-tcp test CA"),
    request(dir, "unknown-ca", "effect-tcp unknown CA"),
    request(dir, "server", "localhost"),
    request(dir, "second", "second.test"),
    request(dir, "expired", "localhost"),
    request(dir, "not-yet-valid", "localhost"),
    request(dir, "other-name", "other.example"),
    request(dir, "unknown-ca-server", "localhost"),
    request(dir, "self-signed", "localhost"),
    request(dir, "client", "test-client"),
    request(dir, "unknown-client", "test-client")
  ])
  const [serverReq, secondReq, expiredReq, notYetValidReq, otherNameReq, unknownServerReq, selfReq, clientReq, unknownClientReq] =
    leaves as [Request, Request, Request, Request, Request, Request, Request, Request, Request]

  const now = Date.now()
  // A day back, so a clock a little behind ours still finds them valid; a month ahead, as no test
  // process lives that long.
  const current = { from: new Date(now - day), to: new Date(now + 30 * day) }
  const authorities = { from: new Date(now - 20 * year), to: new Date(now + 20 * year) }

  const ca = await sign(dir, caReq, { self: caConfig }, "authority", authorities)
  const unknownCa = await sign(dir, unknownCaReq, { self: unknownCaConfig }, "authority", authorities)
  const byCa: Issuer = { configPath: caConfig, certPath: ca.certPath, keyPath: ca.keyPath }
  const byUnknownCa: Issuer = { configPath: unknownCaConfig, certPath: unknownCa.certPath, keyPath: unknownCa.keyPath }

  const server = await sign(dir, serverReq, byCa, "localhost", current)
  const second = await sign(dir, secondReq, byCa, "second", current)
  const expired = await sign(dir, expiredReq, byCa, "localhost", {
    from: new Date(now - 2 * year),
    to: new Date(now - year)
  })
  const notYetValid = await sign(dir, notYetValidReq, byCa, "localhost", {
    from: new Date(now + 10 * year),
    to: new Date(now + 11 * year)
  })
  const otherName = await sign(dir, otherNameReq, byCa, "other", current)
  const unknownServer = await sign(dir, unknownServerReq, byUnknownCa, "localhost", current)
  const selfSigned = await sign(dir, selfReq, { self: selfConfig }, "localhost", current)
  const client = await sign(dir, clientReq, byCa, "client", current)
  const unknownClient = await sign(dir, unknownClientReq, byUnknownCa, "client", current)

  return {
    dir,
    ca: ca.cert,
    caPath: ca.certPath,
    server,
    second,
    expired,
    notYetValid,
    otherName,
    unknownCa: { ca: unknownCa.cert, caPath: unknownCa.certPath, ...unknownServer },
    selfSigned,
    client,
    unknownClient
  }
}

let made: Promise<Certificates> | undefined

/** The certificates, made on the first call in this process; later calls share them. */
export const certificates = (): Promise<Certificates> => (made ??= make())
