import { describe, expect, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import * as fc from "fast-check"
import type * as net from "node:net"
import { type Connection, Framing, Tcp } from "../src/index.js"
import type { TcpError } from "../src/TcpError.js"
import { collect, live, rawServer, text } from "./support/harness.js"

const bytes = (text: string) => new Uint8Array(Buffer.from(text))

/** Runs a pure stream to its exit, synchronously: a decoder that waited for input would throw here. */
const runDecode = (pieces: ReadonlyArray<Uint8Array>, framing: Framing.Framing) =>
  Effect.runSyncExit(Stream.runCollect(Stream.fromIterable(pieces).pipe(Framing.decodeStream(framing))))

const framesOf = (exit: Exit.Exit<Chunk.Chunk<Uint8Array>, unknown>) =>
  Exit.isSuccess(exit) ? Chunk.toArray(exit.value).map((frame) => Buffer.from(frame)) : undefined

/** Frames as hex strings: compared much faster than buffers, and printed readably. */
const hex = (frames: ReadonlyArray<Uint8Array> | undefined) => frames?.map((frame) => Buffer.from(frame).toString("hex"))

const failureOf = (exit: Exit.Exit<unknown, unknown>): TcpError | undefined => {
  if (Exit.isSuccess(exit)) return undefined
  const failure = Cause.failureOption(exit.cause)
  if (Option.isNone(failure)) throw new Error(`not a typed failure: ${Cause.pretty(exit.cause)}`)
  return failure.value as TcpError
}

/** The frames decoded before a failure, and the failure, from a stream that fails. */
const decodeAll = (pieces: ReadonlyArray<Uint8Array>, framing: Framing.Framing) =>
  Effect.runSync(
    Effect.gen(function*() {
      const frames: Array<Buffer> = []
      const exit = yield* Stream.fromIterable(pieces).pipe(
        Framing.decodeStream(framing),
        Stream.runForEach((frame) => Effect.sync(() => frames.push(Buffer.from(frame)))),
        Effect.exit
      )
      return { frames, error: failureOf(exit) }
    })
  )

const encodeAll = (framing: Framing.Framing, bodies: ReadonlyArray<Uint8Array>) =>
  Buffer.concat(bodies.flatMap((body) => Either.getOrThrow(Framing.encodeFrame(framing, body))))

/** Cuts `data` at the given positions (taken modulo its length, in any order). */
const cut = (data: Buffer, positions: ReadonlyArray<number>): Array<Buffer> => {
  const points = [...new Set(positions.map((p) => (data.length === 0 ? 0 : p % (data.length + 1))))].sort((a, b) => a - b)
  const pieces: Array<Buffer> = []
  let from = 0
  for (const point of points) {
    pieces.push(data.subarray(from, point))
    from = point
  }
  pieces.push(data.subarray(from))
  return pieces
}

const framingArbitrary: fc.Arbitrary<Framing.Framing> = fc.oneof(
  fc.record({
    headerBytes: fc.constantFrom(1 as const, 2 as const, 4 as const),
    endian: fc.constantFrom("big" as const, "little" as const),
    maxFrameBytes: fc.integer({ min: 0, max: 300 })
  }).map(({ endian, headerBytes, maxFrameBytes }) =>
    Framing.lengthPrefixed({ headerBytes, endian, maxFrameBytes: Math.min(maxFrameBytes, 2 ** (8 * headerBytes) - 1) })
  ),
  fc.record({
    delimiter: fc.oneof(
      fc.constantFrom("\n", "\r\n", "\0"),
      fc.uint8Array({ minLength: 1, maxLength: 3 })
    ),
    maxFrameBytes: fc.integer({ min: 0, max: 300 })
  }).map(({ delimiter, maxFrameBytes }) => Framing.delimited({ delimiter, maxFrameBytes }))
)

/** Bodies that `framing` can send: cut to its limit; for delimited frames, those that contain the delimiter are left out. */
const sendable = (framing: Framing.Framing, bodies: ReadonlyArray<Uint8Array>) =>
  bodies.map((body) => body.subarray(0, framing.maxFrameBytes)).filter((body) =>
    Either.isRight(Framing.encodeFrame(framing, body))
  )

describe("Framing constructors", () => {
  it("lengthPrefixed defaults to a 4-byte big-endian header and 1 MiB, and caps the default to what a header can say", () => {
    expect(Framing.lengthPrefixed()).toEqual({ _tag: "LengthPrefixed", headerBytes: 4, endian: "big", maxFrameBytes: 1048576 })
    expect(Framing.lengthPrefixed({ headerBytes: 1 }).maxFrameBytes).toBe(255)
    expect(Framing.lengthPrefixed({ headerBytes: 2, endian: "little" }).maxFrameBytes).toBe(65535)
  })

  const unworkable: Array<[string, () => Framing.Framing, string]> = [
    [
      "a limit the header cannot say",
      () => Framing.lengthPrefixed({ headerBytes: 1, maxFrameBytes: 256 }),
      "Framing.lengthPrefixed (1-byte header): maxFrameBytes 256 does not fit the header (at most 255)"
    ],
    ["a 3-byte header", () => Framing.lengthPrefixed({ headerBytes: 3 as 4 }), "headerBytes must be 1, 2 or 4, got 3"],
    ["a middle endian", () => Framing.lengthPrefixed({ endian: "middle" as "big" }), `endian must be "big" or "little"`],
    ["an empty delimiter", () => Framing.delimited({ delimiter: "" }), "Framing.delimited: the delimiter must be a non-empty"],
    [
      "a negative limit",
      () => Framing.delimited({ delimiter: "\n", maxFrameBytes: -1 }),
      "Framing.delimited: maxFrameBytes must be a non-negative integer, got -1"
    ],
    ["a NaN limit", () => Framing.lengthPrefixed({ maxFrameBytes: NaN }), "maxFrameBytes must be a non-negative integer, got NaN"],
    ["a symbol for a limit", () => Framing.lengthPrefixed({ maxFrameBytes: Symbol("big") as unknown as number }), "got Symbol(big)"],
    ["a header size of no type", () => Framing.lengthPrefixed({ headerBytes: Object.create(null) }), "headerBytes must be 1, 2 or 4, got [object Object]"]
  ]

  it("options that cannot work never throw: encoding and decoding with them fail with InvalidOptions naming the problem", () => {
    for (const [, make, issue] of unworkable) {
      const framing = make()
      const encoded = Framing.encodeFrame(framing, "x")
      expect(Either.isLeft(encoded) && encoded.left).toMatchObject({ _tag: "InvalidOptions", operation: "write" })
      expect(Either.isLeft(encoded) && encoded.left._tag === "InvalidOptions" && encoded.left.issues).toContain(issue)
      expect(failureOf(runDecode([bytes("x\n")], framing))).toMatchObject({ _tag: "InvalidOptions", operation: "read" })
      const encodedStream = Effect.runSyncExit(Stream.runCollect(Stream.make("x").pipe(Framing.encodeStream(framing))))
      expect(failureOf(encodedStream)).toMatchObject({ _tag: "InvalidOptions", operation: "write" })
      // Even with nothing to encode or decode: the framing is unusable.
      expect(failureOf(runDecode([], framing))?._tag).toBe("InvalidOptions")
      expect(failureOf(Effect.runSyncExit(Stream.runCollect(Stream.empty.pipe(Framing.encodeStream(framing)))))?._tag).toBe(
        "InvalidOptions"
      )
    }
  })

  live("on a connection, every use of a framing that cannot work fails with InvalidOptions and sends nothing", () =>
    Effect.gen(function*() {
      let received: Effect.Effect<Buffer> = Effect.succeed(Buffer.alloc(0))
      const { port } = yield* rawServer((socket) => {
        received = collect(socket)
        socket.end("1\n2\n")
      })
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port })
      for (const [, make, issue] of unworkable) {
        const framing = make()
        const reader = yield* Effect.flip(Framing.reader(connection, framing))
        expect(reader).toMatchObject({ _tag: "InvalidOptions", operation: "read" })
        expect(reader.issues).toContain(issue)
        expect((yield* Effect.flip(Stream.runDrain(Framing.stream(connection, framing))))._tag).toBe("InvalidOptions")
        expect(yield* Effect.flip(Framing.write(connection, framing, "x"))).toMatchObject({
          _tag: "InvalidOptions",
          operation: "write"
        })
        expect((yield* Effect.flip(Framing.writeAll(connection, framing, [])))._tag).toBe("InvalidOptions")
        expect((yield* Effect.flip(Stream.run(Stream.empty, Framing.sink(connection, framing))))._tag).toBe("InvalidOptions")
      }
      // Nothing was read from the connection, nor sent on it.
      const lines = yield* Framing.reader(connection, Framing.delimited({ delimiter: "\n" }))
      expect(Option.map(yield* lines.read, text)).toEqual(Option.some("1"))
      yield* connection.endWrite
      expect((yield* received).length).toBe(0)
    }))
})

describe("Framing encoding", () => {
  it("a length header is big or little endian, 1, 2 or 4 bytes, and the body follows without a copy", () => {
    const body = new Uint8Array(258).fill(7)
    const encoded = (headerBytes: 1 | 2 | 4, endian: Framing.Endian) =>
      Framing.encodeFrame(Framing.lengthPrefixed({ headerBytes, endian, maxFrameBytes: 255 }), body.subarray(0, 200))
    const header = (chunks: Either.Either<ReadonlyArray<Uint8Array>, unknown>) => [...Either.getOrThrow(chunks)[0]!]
    expect(header(encoded(1, "big"))).toEqual([200])
    expect(header(encoded(2, "big"))).toEqual([0, 200])
    expect(header(encoded(2, "little"))).toEqual([200, 0])
    const big = Either.getOrThrow(Framing.encodeFrame(Framing.lengthPrefixed(), body))
    expect([...big[0]!]).toEqual([0, 0, 1, 2])
    expect(header(Framing.encodeFrame(Framing.lengthPrefixed({ endian: "little" }), body))).toEqual([2, 1, 0, 0])
    expect(big[1]!.buffer).toBe(body.buffer)
  })

  it("a body over the limit is FrameTooLarge with operation write, and nothing is encoded", () => {
    const error = Either.getLeft(Framing.encodeFrame(Framing.lengthPrefixed({ maxFrameBytes: 10 }), new Uint8Array(11)))
    expect(Option.getOrThrow(error)).toMatchObject({ _tag: "FrameTooLarge", operation: "write", size: 11, maxBytes: 10 })
  })

  it("a delimited body that contains its delimiter, or ends with the start of an overlapping one, is MalformedFrame", () => {
    const lines = Framing.delimited({ delimiter: "\n" })
    const error = Option.getOrThrow(Either.getLeft(Framing.encodeFrame(lines, "two\nlines")))
    expect(error).toMatchObject({ _tag: "MalformedFrame", operation: "write" })
    expect(error.message).toBe(
      `write on the connection with unknown:0 failed: malformed frame: the body contains the delimiter "\\n" at byte 3, so it would arrive as more than one frame`
    )
    // "xa" followed by "aa" reads back as "x": the frame must be refused.
    const overlapping = Framing.delimited({ delimiter: "aa" })
    expect(Either.isLeft(Framing.encodeFrame(overlapping, "xa"))).toBe(true)
    expect(Either.isRight(Framing.encodeFrame(overlapping, "ax"))).toBe(true)
  })
})

describe("Framing.decodeStream (pure)", () => {
  it("frames come out whole whatever the chunks, as views of a chunk when they lie inside one", () => {
    const framing = Framing.lengthPrefixed({ headerBytes: 2 })
    const data = encodeAll(framing, [bytes("hello"), bytes(""), bytes("world!")])
    const frames = framesOf(runDecode([data], framing))!
    expect(frames.map(text)).toEqual(["hello", "", "world!"])
    expect(framesOf(runDecode(cut(data, [1, 3, 4, 9, 10, 11]), framing))!.map(text)).toEqual(["hello", "", "world!"])
    // Chunks of more than a few hundred bytes are not copied: frames inside them are views.
    const large = encodeAll(framing, [Buffer.alloc(1000, 1), Buffer.alloc(2000, 2)])
    const views = Chunk.toArray(Effect.runSync(Stream.runCollect(Stream.make(large).pipe(Framing.decodeStream(framing)))))
    expect(views.map((view) => view.buffer)).toEqual([large.buffer, large.buffer])
    expect(views[1]!.byteOffset).toBe(large.byteOffset + 1004)
  })

  it("a delimiter split across chunks is found, and a delimiter of several bytes may repeat a prefix", () => {
    const framing = Framing.delimited({ delimiter: "\r\n" })
    expect(framesOf(runDecode(["GET / HTTP/1.1\r", "\nHost: x\r\n", "\r\n"].map(bytes), framing))!.map(text)).toEqual([
      "GET / HTTP/1.1",
      "Host: x",
      ""
    ])
    const tricky = Framing.delimited({ delimiter: "aab" })
    expect(framesOf(runDecode(["xa", "a", "aab", "yaab"].map(bytes), tricky))!.map(text)).toEqual(["xaa", "y"])
  })

  it("a clean end between frames ends the stream; an end inside a frame is UnexpectedEof with expected and received", () => {
    const framing = Framing.lengthPrefixed()
    const frame = encodeAll(framing, [bytes("0123456789")])
    expect(framesOf(runDecode([frame, frame], framing))!.length).toBe(2)
    expect(decodeAll([frame, frame.subarray(0, 2)], framing)).toMatchObject({
      frames: [Buffer.from("0123456789")],
      error: { _tag: "UnexpectedEof", operation: "read", expected: 4, received: 2 }
    })
    expect(decodeAll([frame.subarray(0, 7)], framing).error).toMatchObject({
      _tag: "UnexpectedEof",
      expected: 10,
      received: 3
    })
    const lines = Framing.delimited({ delimiter: "\n" })
    const error = decodeAll([bytes("one\ntw")], lines).error!
    expect(error).toMatchObject({ _tag: "UnexpectedEof", received: 2 })
    expect((error as { expected?: number }).expected).toBeUndefined()
  })

  it("a header announcing more than the limit fails with FrameTooLarge giving the announced size", () => {
    const framing = Framing.lengthPrefixed({ headerBytes: 2, maxFrameBytes: 100 })
    const result = decodeAll([bytes("\x00\x02hi\x00\x65")], framing)
    expect(result.frames.map(text)).toEqual(["hi"])
    expect(result.error).toMatchObject({ _tag: "FrameTooLarge", operation: "read", size: 101, maxBytes: 100 })
    expect(result.error!.message).toBe(
      "read on the connection with unknown:0 failed: a frame of at least 101 bytes exceeds the limit of 100 bytes"
    )
  })

  it("a frame of exactly the limit is accepted, one byte more is not", () => {
    const lines = Framing.delimited({ delimiter: "\n", maxFrameBytes: 5 })
    expect(framesOf(runDecode([bytes("12345\n")], lines))!.map(text)).toEqual(["12345"])
    expect(decodeAll([bytes("123456\n")], lines).error).toMatchObject({ _tag: "FrameTooLarge", size: 6, maxBytes: 5 })
    expect(decodeAll([bytes("123456")], lines).error).toMatchObject({ _tag: "FrameTooLarge", size: 6, maxBytes: 5 })
  })

  it("encodeStream is the inverse of decodeStream", () => {
    const framing = Framing.lengthPrefixed({ headerBytes: 1 })
    const bodies = ["a", "bc", ""]
    const decoded = Stream.fromIterable(bodies).pipe(
      Framing.encodeStream(framing),
      Framing.decodeStream(framing),
      Stream.map(text),
      Stream.runCollect,
      Effect.runSync
    )
    expect(Chunk.toArray(decoded)).toEqual(bodies)
  })
})

describe("Framing properties", () => {
  it("any list of frames, cut into chunks at arbitrary boundaries, decodes to the same list", () => {
    fc.assert(
      fc.property(
        framingArbitrary,
        fc.array(fc.uint8Array({ maxLength: 400 }), { maxLength: 20 }),
        fc.array(fc.nat(), { maxLength: 30 }),
        (framing, candidates, positions) => {
          const bodies = sendable(framing, candidates).map((body) => Buffer.from(body))
          const data = encodeAll(framing, bodies)
          expect(hex(framesOf(runDecode(cut(data, positions), framing)))).toEqual(hex(bodies))
          // One byte at a time, too.
          expect(hex(framesOf(runDecode(cut(data, Array.from(data.keys())), framing)))).toEqual(hex(bodies))
        }
      ),
      { numRuns: 300 }
    )
  })

  it("any frame over the limit fails with FrameTooLarge as soon as that is known, without pulling one more chunk (memory stays bounded)", () => {
    fc.assert(
      fc.property(
        framingArbitrary,
        fc.array(fc.uint8Array({ maxLength: 200 }), { maxLength: 5 }),
        fc.integer({ min: 1, max: 4096 }),
        fc.nat(),
        (framing, candidates, chunkSize, excess) => {
          const prefix = encodeAll(framing, sendable(framing, candidates))
          let oversized: Buffer
          let extra: number
          if (framing._tag === "LengthPrefixed") {
            const capacity = 2 ** (8 * framing.headerBytes) - 1
            fc.pre(framing.maxFrameBytes < capacity)
            const announced = framing.maxFrameBytes + 1 + (excess % (capacity - framing.maxFrameBytes))
            oversized = Buffer.alloc(framing.headerBytes)
            oversized.writeUIntBE(announced, 0, framing.headerBytes)
            if (framing.endian === "little") oversized.reverse()
            // The decoder knows once the header is in.
            extra = framing.headerBytes
          } else {
            oversized = Buffer.alloc(0)
            // The filler cannot start the delimiter, so it knows at the first byte past maxFrameBytes.
            extra = framing.maxFrameBytes + 1
          }
          // After the prefix: the oversized start, then an endless run of bytes that never holds a delimiter.
          const filler = framing._tag === "Delimited" ? (framing.delimiter[0]! + 1) % 256 : 0x55
          const head = Buffer.concat([prefix, oversized])
          let pulled = 0
          const endless = Stream.repeatEffectOption(Effect.sync(() => {
            const piece = Buffer.alloc(chunkSize, filler)
            if (pulled < head.length) head.copy(piece, 0, pulled, Math.min(head.length, pulled + chunkSize))
            pulled += chunkSize
            return piece
          }))
          const exit = Effect.runSyncExit(Stream.runDrain(endless.pipe(Framing.decodeStream(framing))))
          expect(failureOf(exit)).toMatchObject({ _tag: "FrameTooLarge", maxBytes: framing.maxFrameBytes })
          // Not one chunk more than needed to know.
          expect(pulled).toBe(Math.ceil((prefix.length + extra) / chunkSize) * chunkSize)
        }
      ),
      { numRuns: 300 }
    )
  })

  it("random garbage never crashes or hangs: it yields valid frames, then ends or fails with a typed error, whatever the chunks", () => {
    fc.assert(
      fc.property(
        framingArbitrary,
        fc.uint8Array({ maxLength: 3000 }),
        fc.array(fc.nat(), { maxLength: 40 }),
        (framing, garbage, positions) => {
          const data = Buffer.from(garbage)
          const whole = decodeAll([data], framing)
          const chunked = decodeAll(cut(data, positions), framing)
          expect(hex(chunked.frames)).toEqual(hex(whole.frames))
          expect(chunked.error?._tag).toEqual(whole.error?._tag)
          if (whole.error !== undefined) expect(["FrameTooLarge", "UnexpectedEof"]).toContain(whole.error._tag)
          // The frames, framed again, are the input (all of it when there was no error).
          const again = Buffer.concat(
            whole.frames.flatMap((frame) =>
              framing._tag === "LengthPrefixed"
                ? [Either.getOrThrow(Framing.encodeFrame(framing, frame))[0]!, frame]
                : [frame, framing.delimiter]
            )
          )
          if (whole.error === undefined) expect(again.equals(data)).toBe(true)
          else expect(again.equals(data.subarray(0, again.length))).toBe(true)
        }
      ),
      { numRuns: 400 }
    )
  })
})

/** A raw peer per connection, running whatever `script` holds when it connects. */
const scriptedPeer = Effect.gen(function*() {
  const current: { script: (socket: net.Socket) => void } = { script: () => {} }
  const { port } = yield* rawServer((socket) => current.script(socket))
  const connect = (script: (socket: net.Socket) => void) => {
    current.script = script
    return Tcp.connect({ host: "127.0.0.1", port })
  }
  return { connect }
})

/** Writes the pieces one event-loop turn apart, so the reader mostly sees them as separate chunks; then ends. */
const dribblePieces = (socket: net.Socket, pieces: ReadonlyArray<Uint8Array>) => {
  let i = 0
  const next = () => {
    if (socket.destroyed) return
    if (i === pieces.length) return void socket.end()
    socket.write(pieces[i++]!, () => setImmediate(next))
  }
  next()
}

const readAll = (reader: Framing.FrameReader) =>
  Effect.gen(function*() {
    const frames: Array<Buffer> = []
    for (;;) {
      const frame = yield* Effect.either(reader.read)
      if (Either.isLeft(frame)) return { frames, error: frame.left as TcpError }
      if (Option.isNone(frame.right)) return { frames, error: undefined }
      frames.push(Buffer.from(frame.right.value))
    }
  })

describe("Framing on a connection", () => {
  live("a reader decodes frames sent in small pieces, then returns None at the peer's FIN, and again after", () =>
    Effect.gen(function*() {
      const peer = yield* scriptedPeer
      const framing = Framing.lengthPrefixed({ headerBytes: 2, endian: "little" })
      const data = encodeAll(framing, [bytes("first"), bytes("second"), bytes("")])
      const connection = yield* peer.connect((socket) => dribblePieces(socket, cut(data, [1, 2, 5, 8, 9, 12])))
      const frames = yield* Framing.reader(connection, framing)
      expect(text(Option.getOrThrow(yield* frames.read))).toBe("first")
      expect(text(Option.getOrThrow(yield* frames.read))).toBe("second")
      expect(text(Option.getOrThrow(yield* frames.read))).toBe("")
      expect(yield* frames.read).toEqual(Option.none())
      expect(yield* frames.read).toEqual(Option.none())
    }))

  live("a header over the limit fails with FrameTooLarge before the body is read, and the error is sticky", () =>
    Effect.gen(function*() {
      const peer = yield* scriptedPeer
      const framing = Framing.lengthPrefixed({ maxFrameBytes: 1024 })
      const header = Buffer.from([0, 0x10, 0, 0]) // 1 MiB announced, and sent
      const connection = yield* peer.connect((socket) => socket.end(Buffer.concat([header, Buffer.alloc(1 << 20, 1)])))
      const frames = yield* Framing.reader(connection, framing)
      const error = yield* Effect.flip(frames.read)
      expect(error).toMatchObject({ _tag: "FrameTooLarge", operation: "read", size: 1048576, maxBytes: 1024 })
      expect(error.endpoint).toEqual(connection.remoteAddress)
      expect(yield* Effect.flip(frames.read)).toBe(error)
      // The reader took one chunk from the connection, not the megabyte: the rest is still there.
      const rest = yield* Stream.runFold(connection.stream, 0, (total, chunk) => total + chunk.length)
      expect(4 + (1 << 20) - rest).toBeLessThanOrEqual(128 * 1024)
    }))

  live("a delimited reader stops at the limit: FrameTooLarge for an endless line, never buffering all of it", () =>
    Effect.gen(function*() {
      const peer = yield* scriptedPeer
      const lines = Framing.delimited({ delimiter: "\n", maxFrameBytes: 1000 })
      const connection = yield* peer.connect((socket) => socket.write(Buffer.concat([Buffer.from("ok\n"), Buffer.alloc(200_000, "x")])))
      const result = yield* readAll(yield* Framing.reader(connection, lines))
      expect(result.frames.map(text)).toEqual(["ok"])
      expect(result.error).toMatchObject({ _tag: "FrameTooLarge", maxBytes: 1000 })
      expect((result.error as { size: number }).size).toBeLessThanOrEqual(1000 + 65536)
    }))

  live("a peer closing inside a frame is UnexpectedEof with expected and received; between frames, the end", () =>
    Effect.gen(function*() {
      const peer = yield* scriptedPeer
      const framing = Framing.lengthPrefixed()
      const frame = encodeAll(framing, [bytes("0123456789")])
      const cutShort = yield* peer.connect((socket) => socket.end(Buffer.concat([frame, frame.subarray(0, 9)])))
      const result = yield* readAll(yield* Framing.reader(cutShort, framing))
      expect(result.frames.map(text)).toEqual(["0123456789"])
      expect(result.error).toMatchObject({ _tag: "UnexpectedEof", operation: "read", expected: 10, received: 5 })
      const inHeader = yield* peer.connect((socket) => socket.end(frame.subarray(0, 3)))
      expect((yield* readAll(yield* Framing.reader(inHeader, framing))).error).toMatchObject({
        _tag: "UnexpectedEof",
        expected: 4,
        received: 3
      })
      const clean = yield* peer.connect((socket) => socket.end(frame))
      expect(Chunk.toArray(yield* Stream.runCollect(Framing.stream(clean, framing))).map(text)).toEqual(["0123456789"])
    }))

  live("an interrupted read loses nothing: the next read of the same reader returns the whole frame", () =>
    Effect.gen(function*() {
      let peerSocket: net.Socket | undefined
      const peer = yield* scriptedPeer
      const framing = Framing.lengthPrefixed()
      const frame = encodeAll(framing, [bytes("0123456789")])
      const connection = yield* peer.connect((socket) => {
        peerSocket = socket
        socket.write(frame.subarray(0, 7))
      })
      const frames = yield* Framing.reader(connection, framing)
      const fiber = yield* Effect.fork(frames.read)
      yield* Effect.sleep("50 millis")
      expect(fiber.unsafePoll()).toBeNull()
      expect(Exit.isInterrupted(yield* Fiber.interrupt(fiber))).toBe(true)
      peerSocket!.write(frame.subarray(7))
      expect(text(Option.getOrThrow(yield* frames.read))).toBe("0123456789")
    }))

  live("write sends header and body in one write; frames written by 200 fibers at once never interleave", () =>
    Effect.gen(function*() {
      const peer = yield* scriptedPeer
      let received: Effect.Effect<Buffer> = Effect.succeed(Buffer.alloc(0))
      const framing = Framing.lengthPrefixed({ headerBytes: 2 })
      const connection = yield* peer.connect((socket) => {
        received = collect(socket)
      })
      const bodies = Array.from({ length: 200 }, (_, i) => Buffer.alloc(1000 + i, i % 256))
      yield* Effect.forEach(bodies, (body) => Framing.write(connection, framing, body), { concurrency: "unbounded" })
      yield* Framing.writeAll(connection, framing, ["x", "yz"])
      yield* connection.endWrite
      const frames = framesOf(runDecode([yield* received], framing))!
      expect(frames.slice(-2).map(text)).toEqual(["x", "yz"])
      expect(hex(frames.slice(0, -2).sort((a, b) => a.length - b.length))).toEqual(hex(bodies))
    }))

  live("a frame that cannot be sent fails with a typed error and sends nothing", () =>
    Effect.gen(function*() {
      const peer = yield* scriptedPeer
      let received: Effect.Effect<Buffer> = Effect.succeed(Buffer.alloc(0))
      const lines = Framing.delimited({ delimiter: "\n", maxFrameBytes: 8 })
      const connection = yield* peer.connect((socket) => {
        received = collect(socket)
      })
      expect(yield* Effect.flip(Framing.write(connection, lines, "123456789"))).toMatchObject({
        _tag: "FrameTooLarge",
        operation: "write",
        size: 9,
        maxBytes: 8,
        endpoint: connection.remoteAddress
      })
      expect((yield* Effect.flip(Framing.writeAll(connection, lines, ["fine", "not\nfine"])))._tag).toBe("MalformedFrame")
      yield* Stream.make("a", "b").pipe(Stream.run(Framing.sink(connection, lines)))
      yield* connection.endWrite
      expect((yield* received).toString()).toBe("a\nb\n")
    }))

  live("frames read slowly keep the peer's backpressure: it cannot send far ahead of the reader", () =>
    Effect.gen(function*() {
      const peer = yield* scriptedPeer
      const framing = Framing.lengthPrefixed()
      const frame = encodeAll(framing, [Buffer.alloc(16 * 1024, 1)])
      let sent = 0
      const connection = yield* peer.connect((socket) => {
        const pump = (): void => {
          while (sent < 64 * 1024 * 1024) {
            sent += frame.length
            if (!socket.write(frame)) return void socket.once("drain", pump)
          }
        }
        pump()
      })
      const frames = yield* Framing.reader(connection, framing)
      for (let i = 0; i < 10; i++) yield* frames.read
      yield* Effect.sleep("100 millis")
      // Kernel buffers and one Node buffer at most: far below the 64 MiB it wanted to send.
      expect(sent).toBeLessThan(16 * 1024 * 1024)
    }))

  live("over a real socket, a reader agrees with the pure decoder on frames and on garbage, whatever the chunks", () =>
    Effect.gen(function*() {
      const peer = yield* scriptedPeer
      const runtime = yield* Effect.runtime<Tcp.Tcp>()
      yield* Effect.promise(() =>
        fc.assert(
          fc.asyncProperty(
            framingArbitrary,
            fc.oneof(
              fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 8 }),
              fc.uint8Array({ maxLength: 1000 }).map((garbage) => [garbage])
            ),
            fc.boolean(),
            fc.array(fc.nat(), { maxLength: 12 }),
            async (framing, candidates, frameThem, positions) => {
              const data = frameThem ? encodeAll(framing, sendable(framing, candidates)) : Buffer.concat(candidates)
              const expected = decodeAll([data], framing)
              const actual = await Effect.runPromise(
                Effect.scoped(Effect.gen(function*() {
                  const connection = yield* peer.connect((socket) => dribblePieces(socket, cut(data, positions)))
                  return yield* readAll(yield* Framing.reader(connection, framing))
                })).pipe(Effect.provide(runtime.context))
              )
              expect(hex(actual.frames)).toEqual(hex(expected.frames))
              expect(actual.error?._tag).toEqual(expected.error?._tag)
              if (expected.error?._tag === "UnexpectedEof") {
                const eof = actual.error as typeof expected.error
                expect([eof.expected, eof.received]).toEqual([expected.error.expected, expected.error.received])
              }
            }
          ),
          { numRuns: 40 }
        )
      )
    }))
})

describe("Framing reads in place from the connection", () => {
  live("read takes one frame at a time: the bytes after it are still the connection's", () =>
    Effect.gen(function*() {
      const peer = yield* scriptedPeer
      const framing = Framing.lengthPrefixed({ headerBytes: 2 })
      const second = encodeAll(framing, [bytes("second")])
      // One write: the three frames arrive in one chunk.
      const connection = yield* peer.connect((socket) =>
        socket.end(Buffer.concat([encodeAll(framing, [bytes("first")]), second, encodeAll(framing, [bytes("third")])]))
      )
      const frames = yield* Framing.reader(connection, framing)
      expect(Option.map(yield* frames.read, text)).toEqual(Option.some("first"))
      expect(Buffer.from(yield* connection.readExactly(second.length)).equals(second)).toBe(true)
      expect(Option.map(yield* frames.read, text)).toEqual(Option.some("third"))
      expect(yield* frames.read).toEqual(Option.none())
    }))

  live("a reader of a copy { ...connection } decodes in place too", () =>
    Effect.gen(function*() {
      const peer = yield* scriptedPeer
      const lines = Framing.delimited({ delimiter: "\n" })
      const connection = yield* peer.connect((socket) => socket.end("one\ntwo\nrest"))
      const frames = yield* Framing.reader({ ...connection }, lines)
      expect(Option.map(yield* frames.read, text)).toEqual(Option.some("one"))
      expect(text(yield* connection.readUntil("\n"))).toBe("two")
      expect(yield* Effect.flip(frames.read)).toMatchObject({ _tag: "UnexpectedEof", received: 4 })
    }))

  live("a connection implemented outside the library (only its public members) is decoded through its read", () =>
    Effect.gen(function*() {
      const peer = yield* scriptedPeer
      const framing = Framing.lengthPrefixed()
      const data = encodeAll(framing, [bytes("alpha"), bytes(""), Buffer.alloc(100_000, 7)])
      const connection = yield* peer.connect((socket) => dribblePieces(socket, cut(data, [3, 9, 50, 4000])))
      // Its string-keyed members: no symbol, so no access to the connection's queue.
      const foreign = Object.fromEntries(Object.entries(connection)) as unknown as Connection.Connection
      const result = yield* readAll(yield* Framing.reader(foreign, framing))
      expect(result.frames.map((frame) => frame.length)).toEqual([5, 0, 100_000])
      expect(result.error).toBeUndefined()
      const cutShort = yield* peer.connect((socket) => socket.end(data.subarray(0, 7)))
      const foreignCut = Object.fromEntries(Object.entries(cutShort)) as unknown as Connection.Connection
      expect((yield* readAll(yield* Framing.reader(foreignCut, framing))).error).toMatchObject({
        _tag: "UnexpectedEof",
        expected: 5,
        received: 3
      })
    }))
})

describe("Framing on a connection, data-first and piped", () => {
  live("write, writeAll, sink, reader and stream take the connection first, or are piped from it", () =>
    Effect.gen(function*() {
      const peer = yield* scriptedPeer
      const lines = Framing.delimited({ delimiter: "\n" })
      const connection = yield* peer.connect((socket) => socket.pipe(socket))
      yield* Framing.write(connection, lines, "a")
      yield* connection.pipe(Framing.write(lines, "b"))
      yield* Framing.writeAll(connection, lines, ["c"])
      yield* connection.pipe(Framing.writeAll(lines, ["d", "e"]))
      yield* Stream.make("f").pipe(Stream.run(Framing.sink(connection, lines)))
      yield* Stream.make("g").pipe(Stream.run(connection.pipe(Framing.sink(lines))))
      const first = yield* Framing.reader(connection, lines)
      expect(Option.map(yield* first.read, text)).toEqual(Option.some("a"))
      const second = yield* connection.pipe(Framing.reader(lines))
      expect(Option.map(yield* second.read, text)).toEqual(Option.some("b"))
      yield* connection.endWrite
      const rest = yield* connection.pipe(Framing.stream(lines), Stream.map(text), Stream.runCollect)
      expect(Chunk.toArray(rest)).toEqual(["c", "d", "e", "f", "g"])
      const other = yield* peer.connect((socket) => socket.end("h\ni\n"))
      expect(Chunk.toArray(yield* Stream.runCollect(Framing.stream(other, lines))).map(text)).toEqual(["h", "i"])
    }))
})
