/**
 * The DNS the suite runs with. `npm test` as root (scripts/test.ts) answers every lookup from a
 * stub on loopback (support/dns-stub.ts), so that the names under `.invalid` other tests look up
 * send nothing to the system's nameserver; the first tests check that it did. The others check
 * the stub itself: what it answers, and that no packet, however malformed, makes it throw.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as fc from "fast-check"
import * as dgram from "node:dgram"
import * as dns from "node:dns"
import * as fs from "node:fs"
import * as net from "node:net"
import * as DnsStub from "./support/dns-stub.js"
import { live } from "./support/harness.js"

const nameserver = process.env.EFFECT_TCP_TEST_DNS
const queryLog = process.env.EFFECT_TCP_TEST_DNS_LOG
if (nameserver === undefined) {
  console.warn("test/dns.test.ts: skipping the isolation checks: npm test did not isolate DNS (needs root and unshare)")
}

describe.skipIf(nameserver === undefined)("the suite's resolver, under npm test as root", () => {
  it("/etc/resolv.conf names only the stub, on a loopback address", () => {
    const servers = fs.readFileSync("/etc/resolv.conf", "utf8").split("\n")
      .map((line) => line.trim().split(/\s+/))
      .filter(([keyword]) => keyword === "nameserver")
      .map(([, address]) => address)
    expect(servers).toEqual([nameserver])
    expect(nameserver).toMatch(/^127\./)
  })

  live("a real getaddrinfo of a name under .invalid gets ENOTFOUND, answered NXDOMAIN by the stub", () =>
    Effect.gen(function*() {
      const name = `dns-check-${process.pid}-${Date.now()}.invalid`
      const error = yield* Effect.flip(Effect.tryPromise(() => dns.promises.lookup(name)))
      expect((error.error as NodeJS.ErrnoException).code).toBe("ENOTFOUND")
      const answered = fs.readFileSync(queryLog!, "utf8").split("\n").filter((line) => line.length > 0)
        .map((line) => JSON.parse(line) as { name: string; rcode: number })
        .filter((entry) => entry.name === name)
      expect(answered.length).toBeGreaterThan(0)
      expect(answered.every((entry) => entry.rcode === DnsStub.Rcode.NXDomain)).toBe(true)
    }))
})

/** A query as a resolver writes it: RD set, one question, and an EDNS OPT record if asked. */
const query = (id: number, name: string, options: { readonly type?: number; readonly edns?: boolean } = {}) => {
  const labels = name.split(".").filter((label) => label.length > 0)
  const question = Buffer.concat([
    ...labels.map((label) => Buffer.concat([Buffer.from([label.length]), Buffer.from(label, "latin1")])),
    Buffer.from([0, 0, options.type ?? 1, 0, 1])
  ])
  const fixed = Buffer.from([id >> 8, id & 0xff, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, options.edns ? 1 : 0])
  const opt = Buffer.from([0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0])
  return Buffer.concat([fixed, question, ...(options.edns ? [opt] : [])])
}

/** A header with the id 0xabcd and then `bytes`. */
const header = (bytes: ReadonlyArray<number>) => Buffer.from([0xab, 0xcd, ...bytes])
const oneQuestion = [0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]

// Malformed messages and what the stub does with each: drop it, or answer with this code.
const malformed: ReadonlyArray<readonly [string, Buffer, "drop" | number]> = [
  ["an empty datagram", Buffer.alloc(0), "drop"],
  ["11 bytes, one short of a header", Buffer.alloc(11, 0x01), "drop"],
  ["a response (QR set)", Buffer.concat([header([0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0]), Buffer.from([0, 0, 1, 0, 1])]), "drop"],
  ["a header announcing a question that is not there", header(oneQuestion), DnsStub.Rcode.FormErr],
  ["no question", Buffer.concat([header([0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0]), Buffer.from([0, 0, 1, 0, 1])]), DnsStub.Rcode.FormErr],
  ["two questions", Buffer.concat([header([0x01, 0x00, 0, 2, 0, 0, 0, 0, 0, 0]), Buffer.from([0, 0, 1, 0, 1, 0, 0, 1, 0, 1])]), DnsStub.Rcode.FormErr],
  ["a label running past the end", Buffer.concat([header(oneQuestion), Buffer.from([5, 0x61, 0x62])]), DnsStub.Rcode.FormErr],
  ["a name without its final zero", Buffer.concat([header(oneQuestion), Buffer.from([1, 0x61])]), DnsStub.Rcode.FormErr],
  ["a name without type and class", Buffer.concat([header(oneQuestion), Buffer.from([1, 0x61, 0, 0, 1])]), DnsStub.Rcode.FormErr],
  ["a compression pointer to itself", Buffer.concat([header(oneQuestion), Buffer.from([0xc0, 12, 0, 1, 0, 1])]), DnsStub.Rcode.FormErr],
  ["a label then a pointer back to it (a loop)", Buffer.concat([header(oneQuestion), Buffer.from([1, 0x61, 0xc0, 12, 0, 1, 0, 1])]), DnsStub.Rcode.FormErr],
  ["a pointer into the header", Buffer.concat([header(oneQuestion), Buffer.from([0xc0, 2, 0, 1, 0, 1])]), DnsStub.Rcode.FormErr],
  ["an extended label type (0x40)", Buffer.concat([header(oneQuestion), Buffer.from([0x41, 0, 0, 1, 0, 1])]), DnsStub.Rcode.FormErr],
  ["a name of 321 bytes", query(0xabcd, Array(5).fill("a".repeat(63)).join(".")), DnsStub.Rcode.FormErr],
  ["an opcode other than QUERY (STATUS)", Buffer.concat([header([0x11, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]), Buffer.from([0, 0, 1, 0, 1])]), DnsStub.Rcode.NotImp]
]

// Bytes after a header with one question: lengths near the limits, pointers, zeros.
const afterHeader = fc.array(fc.oneof(fc.integer({ min: 0, max: 255 }), fc.constantFrom(0, 1, 63, 64, 0xc0, 0xff)), { maxLength: 300 })
const almostQueries = afterHeader.map((bytes) => Buffer.concat([header(oneQuestion), Buffer.from(bytes)]))
const anyBytes = fc.uint8Array({ maxLength: 600 }).map((bytes) => Buffer.from(bytes))

describe("DnsStub.respond", () => {
  it("answers a query NXDOMAIN: its id, QR AA RA and its RD set, its question echoed byte for byte, no records", () => {
    const packet = query(0x1234, "No-Such-Host.invalid", { type: 28, edns: true })
    const answered = DnsStub.respond(packet)!
    const reply = Buffer.from(answered.reply)
    expect(answered.rcode).toBe(DnsStub.Rcode.NXDomain)
    expect(answered.question).toEqual({ name: "No-Such-Host.invalid", type: 28, class: 1 })
    expect(reply.readUInt16BE(0)).toBe(0x1234)
    expect(reply.readUInt16BE(2)).toBe(0x8583) // QR, AA, RD, RA, NXDOMAIN
    expect([reply.readUInt16BE(4), reply.readUInt16BE(6), reply.readUInt16BE(8), reply.readUInt16BE(10)]).toEqual([1, 0, 0, 0])
    const questionEnd = packet.length - 11 // before the OPT record
    expect(reply.subarray(12)).toEqual(packet.subarray(12, questionEnd))
  })

  it("prints bytes of a label that are not printable, dots and backslashes as \\DDD", () => {
    const packet = Buffer.concat([header(oneQuestion), Buffer.from([4, 0x61, 0x2e, 0x0a, 0x5c, 0, 0, 1, 0, 1])])
    expect(DnsStub.respond(packet)?.question?.name).toBe("a\\046\\010\\092")
  })

  it.each(malformed)("%s", (_, packet, expected) => {
    const answered = DnsStub.respond(packet)
    if (expected === "drop") return expect(answered).toBeUndefined()
    expect(answered?.rcode).toBe(expected)
    // The id, QR and the code; no question echoed, no records.
    expect(Buffer.from(answered!.reply)).toEqual(Buffer.from([0xab, 0xcd, 0x80 | (packet[2]! & 0x79), 0x80 | expected, 0, 0, 0, 0, 0, 0, 0, 0]))
  })

  it("never throws, and answers anything it answers with the query's id and at most the query's length", () => {
    fc.assert(
      fc.property(fc.oneof(anyBytes, almostQueries), (packet) => {
        const answered = DnsStub.respond(packet)
        if (answered === undefined) return
        expect(answered.reply.length).toBeLessThanOrEqual(packet.length)
        expect(Buffer.from(answered.reply).readUInt16BE(0)).toBe(packet.readUInt16BE(0))
        expect([DnsStub.Rcode.FormErr, DnsStub.Rcode.NXDomain, DnsStub.Rcode.NotImp]).toContain(answered.rcode)
      }),
      { numRuns: 2000 }
    )
  })
})

const stub = Effect.acquireRelease(
  Effect.promise(() => DnsStub.start({ host: "127.0.0.1", port: 0 })),
  (stub) => Effect.promise(() => stub.close())
)

const udpClient = Effect.acquireRelease(
  Effect.async<dgram.Socket>((resume) => {
    const socket = dgram.createSocket("udp4")
    socket.bind(0, "127.0.0.1", () => resume(Effect.succeed(socket)))
  }),
  (socket) =>
    Effect.async<void>((resume) => {
      socket.close(() => resume(Effect.void))
    })
)

/**
 * Sends `packets`, then a well-formed query, and resolves with every reply received up to the
 * answer to that query: over loopback the stub reads datagrams in order, so what a packet would
 * have got has arrived by then.
 */
const exchange = (socket: dgram.Socket, port: number, packets: ReadonlyArray<Buffer>) =>
  Effect.async<Array<Buffer>>((resume) => {
    const last = query(0x7777, "last.invalid")
    const expected = Buffer.from(DnsStub.respond(last)!.reply)
    const replies: Array<Buffer> = []
    const onMessage = (reply: Buffer) => {
      if (reply.equals(expected)) resume(Effect.succeed(replies))
      else replies.push(reply)
    }
    socket.on("message", onMessage)
    for (const packet of [...packets, last]) socket.send(packet, port, "127.0.0.1")
    return Effect.sync(() => socket.off("message", onMessage))
  }).pipe(Effect.timeout("10 seconds"))

describe("DnsStub over sockets", () => {
  live("over UDP, each malformed packet gets FORMERR, NOTIMP or nothing, and the stub answers the next query", () =>
    Effect.gen(function*() {
      const { port } = yield* stub
      const socket = yield* udpClient
      const replies = yield* exchange(socket, port, malformed.map(([, packet]) => packet))
      const codes = replies.map((reply) => reply[3]! & 0x0f)
      expect(codes).toEqual(malformed.flatMap(([, , expected]) => expected === "drop" ? [] : [expected]))
    }))

  live("over UDP, 500 random packets do not stop the stub", () =>
    Effect.gen(function*() {
      const { answered, port } = yield* stub
      const socket = yield* udpClient
      const packets = fc.sample(fc.oneof(anyBytes, almostQueries), { numRuns: 500, seed: 42 })
      let replies = 0
      // In batches of 50, so that no socket buffer overflows and drops what the test counts.
      for (let start = 0; start < packets.length; start += 50) {
        const batch = packets.slice(start, start + 50)
        const received = yield* exchange(socket, port, batch)
        expect(received.length).toBe(batch.filter((packet) => DnsStub.respond(packet) !== undefined).length)
        replies += received.length + 1
      }
      expect(answered()).toBe(replies)
    }))

  live("over TCP, messages framed by their length get their answers, in order, however the bytes arrive", () =>
    Effect.gen(function*() {
      const { port } = yield* stub
      const frame = (message: Uint8Array) => Buffer.concat([Buffer.from([message.length >> 8, message.length & 0xff]), message])
      const queries = [header(oneQuestion), query(0x7777, "last.invalid")]
      const expected = Buffer.concat(queries.map((packet) => frame(DnsStub.respond(packet)!.reply)))
      const socket = yield* Effect.acquireRelease(
        Effect.sync(() => net.connect({ host: "127.0.0.1", port })),
        (socket) => Effect.sync(() => socket.destroy())
      )
      const received = yield* Effect.async<Buffer, Error>((resume) => {
        let received = Buffer.alloc(0)
        socket.on("error", (error) => resume(Effect.fail(error)))
        socket.on("data", (chunk: Buffer) => {
          received = Buffer.concat([received, chunk])
          if (received.length >= expected.length) resume(Effect.succeed(received))
        })
        // Split inside the second length prefix: the stub must put the frame back together.
        const bytes = Buffer.concat(queries.map(frame))
        socket.write(bytes.subarray(0, 15))
        setTimeout(() => socket.write(bytes.subarray(15)), 20)
      }).pipe(Effect.timeout("10 seconds"))
      expect(received).toEqual(expected)
      expect([received[2 + 3]! & 0x0f, received[14 + 2 + 3]! & 0x0f]).toEqual([DnsStub.Rcode.FormErr, DnsStub.Rcode.NXDomain])
    }))

  live("a real resolver (c-ares, dns.Resolver) pointed at the stub gets ENOTFOUND", () =>
    Effect.gen(function*() {
      const { port } = yield* stub
      const resolver = new dns.promises.Resolver({ timeout: 2000, tries: 1 })
      resolver.setServers([`127.0.0.1:${port}`])
      yield* Effect.addFinalizer(() => Effect.sync(() => resolver.cancel()))
      const error = yield* Effect.flip(Effect.tryPromise(() => resolver.resolve4("no-such-host.invalid")))
      expect((error.error as NodeJS.ErrnoException).code).toBe("ENOTFOUND")
    }))
})
