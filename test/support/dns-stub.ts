/**
 * A DNS server for the test suite that knows no names: every query is answered NXDOMAIN, over UDP
 * and TCP. `npm test` (scripts/test.ts) runs it on a loopback address and points the suite's
 * /etc/resolv.conf at it, so that a lookup of a name under `.invalid` gets a real "no such name"
 * from a real getaddrinfo without a packet leaving the machine.
 *
 * Only what a resolver sends is understood: a header and one question (name, type, class) whose
 * name is uncompressed labels, as in every query. Anything else is answered FORMERR (or NOTIMP for
 * an opcode other than QUERY); what is too short to carry an id, or is itself a response, is
 * dropped. Parsing never reads past the packet and never follows a pointer, so no input can make
 * it throw or loop.
 */
import * as dgram from "node:dgram"
import * as net from "node:net"

/** Response codes (RFC 1035 4.1.1). */
export const Rcode = { FormErr: 1, NXDomain: 3, NotImp: 4 } as const

/** What the stub made of a query it answered. */
export interface Answered {
  readonly reply: Uint8Array
  readonly rcode: number
  /** The question, when it could be parsed; the name in presentation format (`a.b.invalid`). */
  readonly question?: { readonly name: string; readonly type: number; readonly class: number }
}

const headerLength = 12
// RFC 1035 2.3.4: a name is at most 255 bytes on the wire, a label at most 63.
const maxNameLength = 255
const maxLabelLength = 63

// Bytes outside printable ASCII, and the dot and backslash, as \DDD (as dig prints them), so a
// name is always one line of text.
const presentation = (label: Uint8Array) =>
  Array.from(label, (byte) =>
    byte > 0x20 && byte < 0x7f && byte !== 0x2e && byte !== 0x5c ?
      String.fromCharCode(byte) :
      `\\${byte.toString().padStart(3, "0")}`).join("")

const parseQuestion = (packet: Uint8Array) => {
  const labels: Array<string> = []
  let offset = headerLength
  let nameLength = 1 // the root label's zero byte
  for (;;) {
    if (offset >= packet.length) return undefined
    const size = packet[offset]!
    if (size === 0) break
    // Above 63 the top bits mark a compression pointer or an extended label: a query's first name
    // has nothing before it to point to, so a pointer there is garbage or a loop.
    if (size > maxLabelLength) return undefined
    nameLength += size + 1
    if (nameLength > maxNameLength || offset + 1 + size > packet.length) return undefined
    labels.push(presentation(packet.subarray(offset + 1, offset + 1 + size)))
    offset += 1 + size
  }
  offset += 1
  if (offset + 4 > packet.length) return undefined
  return {
    end: offset + 4,
    name: labels.length === 0 ? "." : labels.join("."),
    type: (packet[offset]! << 8) | packet[offset + 1]!,
    class: (packet[offset + 2]! << 8) | packet[offset + 3]!
  }
}

/** The answer to one DNS message, or undefined when it is dropped. Never throws. */
export const respond = (packet: Uint8Array): Answered | undefined => {
  // Too short for an id, or a response: answering responses could make two servers loop.
  if (packet.length < headerLength || (packet[2]! & 0x80) !== 0) return undefined
  const opcode = (packet[2]! >> 3) & 0x0f
  const questions = (packet[4]! << 8) | packet[5]!
  const parsed = opcode === 0 && questions === 1 ? parseQuestion(packet) : undefined
  const rcode = opcode !== 0 ? Rcode.NotImp : parsed === undefined ? Rcode.FormErr : Rcode.NXDomain
  const reply = new Uint8Array(parsed === undefined ? headerLength : parsed.end)
  reply[0] = packet[0]!
  reply[1] = packet[1]!
  // QR, the query's opcode and RD; AA on NXDOMAIN: an authority's word that the name does not exist.
  reply[2] = 0x80 | (packet[2]! & 0x79) | (rcode === Rcode.NXDomain ? 0x04 : 0)
  // RA, and the response code.
  reply[3] = 0x80 | rcode
  if (parsed === undefined) return { reply, rcode }
  // One question, echoed byte for byte (resolvers compare it, letter case included); no records.
  reply[5] = 1
  reply.set(packet.subarray(headerLength, parsed.end), headerLength)
  return { reply, rcode, question: { name: parsed.name, type: parsed.type, class: parsed.class } }
}

/** A running stub: UDP and TCP on the same address and port. */
export interface DnsStub {
  readonly host: string
  readonly port: number
  /** How many messages it has answered. */
  readonly answered: () => number
  readonly close: () => Promise<void>
}

const listenUdp = (host: string, port: number) =>
  new Promise<dgram.Socket>((resolve, reject) => {
    const socket = dgram.createSocket(net.isIPv6(host) ? "udp6" : "udp4")
    socket.once("error", reject)
    socket.bind(port, host, () => {
      socket.off("error", reject)
      resolve(socket)
    })
  })

const listenTcp = (server: net.Server, host: string, port: number) =>
  new Promise<void>((resolve, reject) => {
    server.once("error", reject)
    server.listen(port, host, () => {
      server.off("error", reject)
      resolve()
    })
  })

/**
 * Starts a stub on `host`:`port` (port 0: any free port, the same for both protocols) and calls
 * `onAnswer` before each reply is sent. Fails if either protocol cannot bind.
 */
export const start = async (options: {
  readonly host: string
  readonly port: number
  readonly onAnswer?: (answered: Answered) => void
}): Promise<DnsStub> => {
  let count = 0
  const answer = (packet: Uint8Array) => {
    const answered = respond(packet)
    if (answered === undefined) return undefined
    count++
    options.onAnswer?.(answered)
    return answered.reply
  }

  // Over TCP each message is preceded by its length on two bytes (RFC 1035 4.2.2), so at most
  // 65,537 bytes are ever buffered per connection.
  const connections = new Set<net.Socket>()
  const server = net.createServer((socket) => {
    connections.add(socket)
    socket.on("close", () => connections.delete(socket))
    socket.on("error", () => {})
    let buffered = Buffer.alloc(0)
    socket.on("data", (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk])
      while (buffered.length >= 2 && buffered.length >= 2 + buffered.readUInt16BE(0)) {
        const end = 2 + buffered.readUInt16BE(0)
        const reply = answer(buffered.subarray(2, end))
        buffered = buffered.subarray(end)
        if (reply === undefined) continue
        const framed = Buffer.alloc(2 + reply.length)
        framed.writeUInt16BE(reply.length, 0)
        framed.set(reply, 2)
        socket.write(framed)
      }
    })
  })

  // With port 0, the port picked for UDP may be taken for TCP: then another is tried.
  let udp: dgram.Socket
  for (let attempt = 1;; attempt++) {
    udp = await listenUdp(options.host, options.port)
    try {
      await listenTcp(server, options.host, (udp.address() as net.AddressInfo).port)
      break
    } catch (error) {
      udp.close()
      if (options.port !== 0 || attempt === 10 || (error as NodeJS.ErrnoException).code !== "EADDRINUSE") throw error
    }
  }
  const port = (udp.address() as net.AddressInfo).port
  // A reply that cannot be sent (the client is gone) is its loss, not the stub's.
  udp.on("error", () => {})
  udp.on("message", (packet, peer) => {
    const reply = answer(packet)
    if (reply !== undefined) udp.send(reply, peer.port, peer.address, () => {})
  })

  return {
    host: options.host,
    port,
    answered: () => count,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of connections) socket.destroy()
        server.close(() => udp.close(() => resolve()))
      })
  }
}
