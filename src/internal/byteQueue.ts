const empty = Buffer.alloc(0)

export const asBuffer = (bytes: Uint8Array): Buffer =>
  Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)

/** Chunks at most this small are copied into a shared block: a peer dribbling single bytes costs bytes, not objects. */
const smallChunk = 256
const blockSize = 4096

/**
 * Bytes received but not yet consumed, kept as the chunks they came in: a read that lies inside
 * one chunk is returned as a view of it, and only one that spans chunks is copied (once). Used by
 * a connection for the bytes not yet read and by the framing decoders for the bytes not yet decoded.
 */
export class ByteQueue {
  private chunks: Array<Buffer> = []
  /** Index of the first chunk still holding bytes. */
  private head = 0
  /** Bytes of `chunks[head]` already consumed. */
  private offset = 0
  /** Total bytes held. */
  length = 0
  private block: Buffer | undefined = undefined
  private blockStart = 0
  private blockUsed = 0
  /** The last element of `chunks` when it is a view of `block`, grown in place as small chunks come. */
  private blockView: Buffer | undefined = undefined

  push(bytes: Uint8Array): void {
    const n = bytes.length
    if (n === 0) return
    this.length += n
    if (n > smallChunk) {
      this.chunks.push(asBuffer(bytes))
      return
    }
    const last = this.chunks.length - 1
    if (
      this.block !== undefined && this.blockView !== undefined && last >= this.head &&
      this.chunks[last] === this.blockView && this.blockUsed + n <= this.block.length
    ) {
      this.block.set(bytes, this.blockUsed)
      this.blockUsed += n
      this.blockView = this.block.subarray(this.blockStart, this.blockUsed)
      this.chunks[last] = this.blockView
      return
    }
    if (this.block === undefined || this.blockUsed + n > this.block.length) {
      this.block = Buffer.allocUnsafe(blockSize)
      this.blockUsed = 0
    }
    this.block.set(bytes, this.blockUsed)
    this.blockStart = this.blockUsed
    this.blockUsed += n
    this.blockView = this.block.subarray(this.blockStart, this.blockUsed)
    this.chunks.push(this.blockView)
  }

  private advance(n: number): void {
    this.length -= n
    this.offset += n
    while (this.head < this.chunks.length && this.offset >= this.chunks[this.head]!.length) {
      this.offset -= this.chunks[this.head]!.length
      this.head++
    }
    if (this.head === this.chunks.length) {
      this.chunks = []
      this.head = 0
      this.offset = 0
      this.blockView = undefined
    } else if (this.head > 64 && this.head * 2 > this.chunks.length) {
      this.chunks = this.chunks.slice(this.head)
      this.head = 0
    }
  }

  /** Removes and returns the first `n` (<= length) bytes: a view when they lie in one chunk, else a copy. */
  take(n: number): Buffer {
    if (n === 0) return empty
    const first = this.chunks[this.head]!
    if (first.length - this.offset >= n) {
      const view = first.subarray(this.offset, this.offset + n)
      this.advance(n)
      return view
    }
    const out = Buffer.allocUnsafe(n)
    let filled = 0
    while (filled < n) {
      const chunk = this.chunks[this.head]!
      const count = Math.min(chunk.length - this.offset, n - filled)
      chunk.copy(out, filled, this.offset, this.offset + count)
      filled += count
      this.advance(count)
    }
    return out
  }

  skip(n: number): void {
    this.advance(n)
  }

  /** Removes and returns what is left of the first chunk (length > 0 required): a view, never a copy. */
  takeChunk(): Buffer {
    const first = this.chunks[this.head]!
    const view = this.offset === 0 ? first : first.subarray(this.offset)
    this.advance(view.length)
    return view
  }

  /** Drops everything held. */
  clear(): void {
    this.chunks = []
    this.head = 0
    this.offset = 0
    this.length = 0
    this.block = undefined
    this.blockView = undefined
  }

  /** Whether `needle` occurs at `position` of chunk `index`, possibly running into the next chunks. */
  private matchesAt(needle: Buffer, index: number, position: number): boolean {
    let chunk = this.chunks[index]!
    for (let k = 0; k < needle.length; k++) {
      while (position >= chunk.length) {
        index++
        if (index >= this.chunks.length) return false
        chunk = this.chunks[index]!
        position = 0
      }
      if (chunk[position] !== needle[k]) return false
      position++
    }
    return true
  }

  /** The first position >= `from` (counted from the first byte held) where `needle` starts, or -1. */
  indexOf(needle: Buffer, from: number): number {
    if (from >= this.length) return -1
    let index = this.head
    let base = 0
    if (from > 0) {
      // A search resumes near the end of what is held: find the chunk holding `from` from the back.
      index = this.chunks.length - 1
      base = this.length - (this.chunks[index]!.length - (index === this.head ? this.offset : 0))
      while (base > from) {
        index--
        base -= this.chunks[index]!.length - (index === this.head ? this.offset : 0)
      }
    }
    for (; index < this.chunks.length; index++) {
      const chunk = this.chunks[index]!
      const start = index === this.head ? this.offset : 0
      const size = chunk.length - start
      const local = Math.max(0, from - base)
      // Matches inside this chunk come before those that start in it and end in a later one.
      const inside = chunk.indexOf(needle, start + local)
      if (inside >= 0) return base + inside - start
      for (let p = Math.max(local, size - needle.length + 1); p < size; p++) {
        if (this.matchesAt(needle, index, start + p)) return base + p
      }
      base += size
    }
    return -1
  }
}
