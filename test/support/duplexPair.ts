/**
 * Two in-memory streams joined as the two ends of a connection (Node 20 has no
 * `stream.duplexPair`): what one end writes the other reads, with backpressure; `end()` reaches
 * the other end as a FIN, `destroy()` as a close, and `resetAndDestroy()` as a reset (ECONNRESET).
 * Each end has the addresses a socket would have, so it is a socket in all a connection needs.
 */
import { Duplex } from "node:stream"

export interface MemorySocket extends Duplex {
  readonly remoteAddress: string
  readonly remotePort: number
  readonly localAddress: string
  readonly localPort: number
  resetAndDestroy(): void
}

const brokenPipe = () => Object.assign(new Error("write EPIPE"), { code: "EPIPE", syscall: "write" })

class End extends Duplex implements MemorySocket {
  peer: End | undefined = undefined
  /** The callback of the peer's write that this end's buffer had no room for: called once this end reads. */
  private blockedWrite: ((error?: Error | null) => void) | undefined = undefined
  readonly remoteAddress = "memory"
  readonly localAddress = "memory"
  readonly localPort: number
  readonly remotePort: number

  constructor(localPort: number, remotePort: number) {
    super({ allowHalfOpen: true })
    this.localPort = localPort
    this.remotePort = remotePort
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    const peer = this.peer!
    if (peer.destroyed) return callback(brokenPipe())
    // A copy: the writer may reuse its buffer once the write completed, as with a socket.
    if (peer.push(Buffer.from(chunk))) return callback()
    peer.blockedWrite = callback
  }

  override _read(): void {
    const blocked = this.blockedWrite
    this.blockedWrite = undefined
    // The peer's write is released now that this end reads again.
    blocked?.()
  }

  /** Whether this end has sent the peer the end of its bytes (FIN). */
  private ended = false

  private sendEnd(): void {
    if (this.ended) return
    this.ended = true
    if (!this.peer!.destroyed) this.peer!.push(null)
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.sendEnd()
    callback()
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    // The peer sees the end of the bytes, as after a close; a write it has blocked on this end fails.
    this.sendEnd()
    const blocked = this.blockedWrite
    this.blockedWrite = undefined
    blocked?.(brokenPipe())
    callback(error)
  }

  resetAndDestroy(): void {
    const peer = this.peer!
    if (!peer.destroyed) peer.destroy(Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET", syscall: "read" }))
    this.destroy()
  }
}

/** Two connected ends; the ports are only names (1 and 2), as in an error's endpoint. */
export const duplexPair = (): readonly [MemorySocket, MemorySocket] => {
  const a = new End(1, 2)
  const b = new End(2, 1)
  a.peer = b
  b.peer = a
  return [a, b]
}
