/**
 * The framing scenario's bytes: frames of a 4-byte big-endian length and a body, the block the
 * source sends again and again, the check every receiver applies to each frame, and the decoder a
 * careful user writes by hand (the baseline that effect-tcp's `Framing` is compared with).
 */

export const headerBytes = 4

/** Frames per block: a block is sent whole, so frame `k`'s body is filled with `k % framesPerBlock`. */
export const framesPerBlock = 64

/** Frames and bytes on the wire for `totalBytes` of bodies. */
export const frameCounts = (totalBytes: number, frameBytes: number) => {
  const frames = totalBytes / frameBytes
  if (!Number.isInteger(frames) || frames % framesPerBlock !== 0) {
    throw new Error(`${totalBytes} bytes is not a whole number of blocks of ${framesPerBlock} frames of ${frameBytes} bytes`)
  }
  return { frames, blocks: frames / framesPerBlock, wireBytes: frames * (headerBytes + frameBytes) }
}

/** `framesPerBlock` frames, headers included, in one buffer. */
export const frameBlock = (frameBytes: number): Buffer => {
  const block = Buffer.allocUnsafe(framesPerBlock * (headerBytes + frameBytes))
  for (let k = 0; k < framesPerBlock; k++) {
    const at = k * (headerBytes + frameBytes)
    block.writeUInt32BE(frameBytes, at)
    block.fill(k, at + headerBytes, at + headerBytes + frameBytes)
  }
  return block
}

/** Checks each decoded frame's length, position and content (its first and last byte). */
export class FrameCheck {
  private count = 0

  constructor(private readonly expected: number, private readonly frameBytes: number) {}

  accept(frame: Uint8Array): void {
    const k = this.count
    const value = k % framesPerBlock
    if (k >= this.expected) throw new Error(`frame ${k}: more than the ${this.expected} frames sent`)
    if (frame.length !== this.frameBytes || frame[0] !== value || frame[frame.length - 1] !== value) {
      throw new Error(`frame ${k}: expected ${this.frameBytes} bytes of ${value}, got ${frame.length} starting ${frame[0]}`)
    }
    this.count = k + 1
  }

  get frames(): number {
    return this.count
  }

  get done(): boolean {
    return this.count === this.expected
  }

  complete(): void {
    if (!this.done) throw new Error(`received ${this.count} of ${this.expected} frames`)
  }
}

/**
 * A hand-written decoder of length-prefixed frames: a frame inside one chunk is passed on as a
 * view of it, a frame spanning chunks is copied once into a buffer of its exact size.
 */
export class LengthPrefixedDecoder {
  private readonly header = Buffer.allocUnsafe(headerBytes)
  private headerHave = 0
  private body: Buffer | undefined = undefined
  private bodyHave = 0

  constructor(
    private readonly maxFrameBytes: number,
    private readonly onFrame: (frame: Uint8Array) => void
  ) {}

  push(chunk: Buffer): void {
    const length = chunk.length
    let at = 0
    while (at < length) {
      const body = this.body
      if (body !== undefined) {
        const copied = chunk.copy(body, this.bodyHave, at)
        this.bodyHave += copied
        at += copied
        if (this.bodyHave === body.length) {
          this.body = undefined
          this.onFrame(body)
        }
        continue
      }
      let size: number
      if (this.headerHave === 0 && length - at >= headerBytes) {
        size = chunk.readUInt32BE(at)
        at += headerBytes
      } else {
        const copied = chunk.copy(this.header, this.headerHave, at, at + headerBytes - this.headerHave)
        this.headerHave += copied
        at += copied
        if (this.headerHave < headerBytes) return
        this.headerHave = 0
        size = this.header.readUInt32BE(0)
      }
      if (size > this.maxFrameBytes) throw new Error(`frame of ${size} bytes, over the limit of ${this.maxFrameBytes}`)
      if (length - at >= size) {
        this.onFrame(chunk.subarray(at, at + size))
        at += size
      } else {
        this.body = Buffer.allocUnsafe(size)
        this.bodyHave = 0
      }
    }
  }

  /** Whether the stream stopped in the middle of a frame. */
  get midFrame(): boolean {
    return this.body !== undefined || this.headerHave > 0
  }
}
