const empty = Buffer.alloc(0)

export const asBuffer = (bytes: Uint8Array): Buffer =>
  Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)

/** Chunks at most this small are copied into a shared block: a peer dribbling single bytes costs bytes, not objects. */
const smallChunk = 256
const blockSize = 4096

/**
 * Bytes received but not yet consumed, kept as the chunks they came in: a read that lies inside
 * one chunk is returned as a view of it, and only one that spans chunks is copied (once). A
 * connection keeps the bytes not yet read in one, and its reads and frame decoders take from it; a
 * decoder of a plain stream of bytes keeps its own.
 */
export class ByteQueue {
  private chunks: Array<Buffer> = []
  /** Index of the first chunk still holding bytes. */
  private head = 0
  /** Bytes of `chunks[head]` already consumed. */
  private offset = 0
  /** Total bytes held. */
  length = 0
  /**
   * Bytes ever removed (taken, skipped or cleared): a decoder that keeps state about the front of
   * the queue across waits knows from it whether someone else has taken bytes since.
   */
  taken = 0
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
    this.taken += n
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

  /** The first `n` (<= length) bytes, left in place: a view when they lie in one chunk, else a copy. */
  peek(n: number): Buffer {
    if (n === 0) return empty
    const first = this.chunks[this.head]!
    if (first.length - this.offset >= n) return first.subarray(this.offset, this.offset + n)
    const out = Buffer.allocUnsafe(n)
    let filled = 0
    for (let index = this.head; filled < n; index++) {
      const chunk = this.chunks[index]!
      const start = index === this.head ? this.offset : 0
      const count = Math.min(chunk.length - start, n - filled)
      chunk.copy(out, filled, start, start + count)
      filled += count
    }
    return out
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
    this.taken += this.length
    this.chunks = []
    this.head = 0
    this.offset = 0
    this.length = 0
    this.block = undefined
    this.blockView = undefined
  }

  /**
   * Feeds the bytes from `search.scanned` on to `search`: the position (from the first byte held)
   * where the delimiter starts, or -1 when every byte held was fed without completing it. Each byte
   * is fed once, so a search resumed as bytes arrive costs what the bytes cost, whatever their slicing.
   */
  search(search: DelimiterSearch): number {
    const from = search.scanned
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
      const end = search.feed(chunk, start + Math.max(0, from - base))
      if (end >= 0) {
        search.reset()
        return base + end - start - search.delimiter.length
      }
      base += chunk.length - start
    }
    search.scanned = this.length
    return -1
  }
}

/**
 * Bytes of the delimiter looked for by the native `Buffer.indexOf` before the byte matcher takes
 * over: native search is much faster than a loop in JavaScript, and over a pattern this short its
 * worst case stays a small constant per byte.
 */
const nativePrefixBytes = 16

/** Steps taken by every delimiter search: bytes given to the native search plus matcher steps (for tests). */
export const searchWork = { steps: 0 }

/**
 * A search for a delimiter in bytes fed in pieces, linear in the bytes fed whatever the
 * delimiter and the pieces. Its state, the length of the longest start of the delimiter that the
 * bytes fed so far end with (Knuth-Morris-Pratt), carries over from one piece to the next, so no
 * byte is ever looked at again. While that state is zero, the native `Buffer.indexOf` skips ahead
 * to the next occurrence of the delimiter's first bytes; only from there does the matcher step
 * byte by byte, until the state falls back to zero.
 */
export class DelimiterSearch {
  readonly delimiter: Buffer
  /** Bytes of the queue fed so far. */
  scanned = 0
  /** The longest start of the delimiter that the bytes fed so far end with; never the whole delimiter. */
  matched = 0
  private readonly prefix: Buffer
  private readonly firstByte: number
  /** borders[k]: the longest proper start of `delimiter[0..k)` that is also its end; built on first use. */
  private borders: Int32Array | undefined = undefined
  /** Where the last `step` stopped: the index after the last byte it took. */
  private stoppedAt = 0

  constructor(delimiter: Uint8Array) {
    this.delimiter = asBuffer(delimiter)
    this.prefix = this.delimiter.subarray(0, nativePrefixBytes)
    this.firstByte = this.delimiter[0]!
  }

  reset(): void {
    this.scanned = 0
    this.matched = 0
  }

  private bordersOf(): Int32Array {
    const delimiter = this.delimiter
    const borders = new Int32Array(delimiter.length + 1)
    let k = 0
    for (let q = 1; q < delimiter.length; q++) {
      while (k > 0 && delimiter[k] !== delimiter[q]) k = borders[k]!
      if (delimiter[k] === delimiter[q]) k++
      borders[q + 1] = k
    }
    return (this.borders = borders)
  }

  /**
   * Steps the matcher over `chunk[from..to)` from `state`: the state after them, or the delimiter's
   * length at the first byte that completes it, or zero at the first byte that resets it when
   * `untilZero`; `stoppedAt` is then the index after that byte.
   */
  private step(chunk: Buffer, from: number, to: number, state: number, untilZero: boolean): number {
    const delimiter = this.delimiter
    const length = delimiter.length
    const borders = this.borders ?? this.bordersOf()
    let steps = 0
    let i = from
    while (i < to) {
      const byte = chunk[i++]!
      while (state > 0 && delimiter[state] !== byte) {
        state = borders[state]!
        steps++
      }
      if (delimiter[state] === byte) state++
      steps++
      if (state === length || (untilZero && state === 0)) break
    }
    searchWork.steps += steps
    this.stoppedAt = i
    return state
  }

  /**
   * Feeds `chunk[from..]`: the index in `chunk` just past the end of the delimiter, once it is
   * complete, or -1 when the whole chunk was fed without completing it.
   */
  feed(chunk: Buffer, from: number): number {
    const length = this.delimiter.length
    const prefix = this.prefix
    const end = chunk.length
    let state = this.matched
    let i = from
    while (i < end) {
      if (state === 0) {
        const at = prefix.length === 1 ? chunk.indexOf(this.firstByte, i) : chunk.indexOf(prefix, i)
        if (at < 0) {
          searchWork.steps += end - i
          // Only a start of the delimiter shorter than the prefix can end the chunk: step over those bytes.
          state = this.step(chunk, Math.max(i, end - prefix.length + 1), end, 0, false)
          break
        }
        searchWork.steps += at + prefix.length - i
        if (prefix.length === length) {
          this.matched = 0
          return at + length
        }
        // The bytes just before `at` may hold a start of the delimiter shorter than the prefix.
        state = this.step(chunk, Math.max(i, at - prefix.length + 1), at, 0, false)
        i = at
      }
      state = this.step(chunk, i, end, state, true)
      i = this.stoppedAt
      if (state === length) {
        this.matched = 0
        return i
      }
    }
    this.matched = state
    return -1
  }
}

/**
 * Where the delimiter of `search` first starts in the concatenation of `pieces`, or -1: one linear
 * pass, for bodies checked before they are framed. Starts `search` over first.
 */
export const indexOfDelimiter = (pieces: ReadonlyArray<Buffer>, search: DelimiterSearch): number => {
  search.reset()
  let base = 0
  for (const piece of pieces) {
    const end = search.feed(piece, 0)
    if (end >= 0) return base + end - search.delimiter.length
    base += piece.length
  }
  search.reset()
  return -1
}
