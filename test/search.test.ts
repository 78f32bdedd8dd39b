/**
 * The delimiter search behind `readUntil` and `Framing.delimited`: the same answer as searching
 * the whole input at once, however it is sliced, and work that grows as the bytes do, whatever
 * the delimiter. A peer chooses the bytes and their slicing (not the delimiter): with a search
 * that rescans the end of the input at every new piece, a 16 KiB delimiter after 1 MiB cost 17 s.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import * as fc from "fast-check"
import type * as net from "node:net"
import { Framing, Tcp } from "../src/index.js"
import { ByteQueue, DelimiterSearch, searchWork } from "../src/internal/byteQueue.js"
import { makeDecoder } from "../src/internal/framing.js"
import { live, rawServer } from "./support/harness.js"

/** The longest start of `delimiter` that `data` ends with, short of the whole delimiter. */
const naiveMatched = (data: Buffer, delimiter: Buffer): number => {
  for (let k = Math.min(delimiter.length - 1, data.length); k > 0; k--) {
    if (data.subarray(data.length - k).equals(delimiter.subarray(0, k))) return k
  }
  return 0
}

const cut = (data: Buffer, sizes: ReadonlyArray<number>): Array<Buffer> => {
  const pieces: Array<Buffer> = []
  let offset = 0
  for (let i = 0; offset < data.length; i++) {
    const size = Math.max(1, sizes[i % sizes.length]!)
    pieces.push(data.subarray(offset, offset + size))
    offset += size
  }
  return pieces
}

/** Pushes the pieces one by one, searching after each as a reader woken by new bytes does. */
const searchPieces = (pieces: ReadonlyArray<Buffer>, delimiter: Buffer) => {
  const queue = new ByteQueue()
  const search = new DelimiterSearch(delimiter)
  const before = searchWork.steps
  for (const piece of pieces) {
    queue.push(piece)
    const at = queue.search(search)
    if (at >= 0) return { at, matched: 0, work: searchWork.steps - before }
  }
  return { at: -1, matched: search.matched, work: searchWork.steps - before }
}

/** Delimiters that defeat naive matching: long runs of one byte, and periodic ones. */
const hostile = {
  "a…ab": (length: number) => Buffer.alloc(length, "a").fill("b", length - 1),
  "ab…a": (length: number) => Buffer.alloc(length, "a").fill("b", 1, 2),
  "abcab…z": (length: number) =>
    Buffer.from(Array.from({ length }, (_, i) => (i === length - 1 ? "z" : "abcab"[i % 5])).join(""))
}

/**
 * What a hostile peer sends before the delimiter: its start over and over, two bytes short (for
 * each delimiter above, that never holds the whole of it).
 */
const hostileFiller = (delimiter: Buffer, length: number): Buffer => {
  const filler = Buffer.alloc(length)
  for (let i = 0; i < length; i++) filler[i] = delimiter[i % (delimiter.length - 2)]!
  return filler
}

describe("DelimiterSearch", () => {
  it("finds the first delimiter where a search of the whole input finds it, however the input is sliced", () => {
    fc.assert(
      fc.property(
        // A two-letter alphabet makes partial and overlapping matches common.
        fc.uint8Array({ minLength: 1, maxLength: 12 }).map((d) => Buffer.from(d.map((b) => 97 + (b & 1)))),
        fc.uint8Array({ maxLength: 300 }).map((d) => Buffer.from(d.map((b) => 97 + (b & 1)))),
        fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 20 }),
        (delimiter, data, sizes) => {
          const found = searchPieces(cut(data, sizes), delimiter)
          expect(found.at).toBe(data.indexOf(delimiter))
          if (found.at < 0) expect(found.matched).toBe(naiveMatched(data, delimiter))
        }
      ),
      { numRuns: 2000 }
    )
  })

  it("the same for delimiters longer than the natively searched start, and inputs full of near matches", () => {
    fc.assert(
      fc.property(
        // Mostly "a", a few "b": long runs that match the delimiter's start and then fail.
        fc.array(fc.constantFrom(97, 97, 97, 98), { minLength: 17, maxLength: 48 }).map((d) => Buffer.from(d)),
        fc.array(fc.oneof(fc.nat(48), fc.constantFrom(-1, -2)), { maxLength: 40 }),
        fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 20 }),
        (delimiter, recipe, sizes) => {
          // The input: starts of the delimiter of every length, and stray bytes, in any order.
          const data = Buffer.concat(
            recipe.map((n) => (n === -1 ? Buffer.from("a") : n === -2 ? Buffer.from("b") : delimiter.subarray(0, n)))
          )
          const found = searchPieces(cut(data, sizes), delimiter)
          expect(found.at).toBe(data.indexOf(delimiter))
          if (found.at < 0) expect(found.matched).toBe(naiveMatched(data, delimiter))
        }
      ),
      { numRuns: 3000 }
    )
  })

  it("a resumed search goes on after bytes already searched: each frame of a stream is found once, in order", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 1, maxLength: 6 }).map((d) => Buffer.from(d.map((b) => 97 + (b % 3)))),
        fc.uint8Array({ maxLength: 400 }).map((d) => Buffer.from(d.map((b) => 97 + (b % 3)))),
        fc.array(fc.integer({ min: 1, max: 30 }), { minLength: 1, maxLength: 10 }),
        (delimiter, data, sizes) => {
          const expected = data.toString("latin1").split(delimiter.toString("latin1"))
          expected.pop()
          const decoder = makeDecoder(Framing.delimited({ delimiter, maxFrameBytes: 1000 }))
          const queue = new ByteQueue()
          const frames: Array<Uint8Array> = []
          for (const piece of cut(data, sizes)) {
            queue.push(piece)
            for (let frame = decoder.decode(queue); frame !== undefined; frame = decoder.decode(queue)) frames.push(frame)
            expect(decoder.failure).toBeUndefined()
          }
          expect(frames.map((frame) => Buffer.from(frame).toString("latin1"))).toEqual(expected)
        }
      ),
      { numRuns: 1000 }
    )
  })

  // Delimiter and data both 4 times longer: a search that rescans the delimiter's length at every piece
  // does 16 times the work; one that looks at each byte once does 4 times.
  for (const [name, make] of Object.entries(hostile)) {
    for (const [slicing, sizes, delimiterBytes, dataBytes] of [
      ["pieces of 1 KiB", [1024], 4096, 256 * 1024],
      ["pieces of 1 to 3000 bytes", [1, 3000, 17, 1500, 700, 2999, 64], 4096, 256 * 1024],
      ["pieces of 64 KiB", [65536], 4096, 256 * 1024],
      ["single bytes", [1], 256, 16 * 1024]
    ] as const) {
      it(`4 times the bytes is about 4 times the work: delimiter ${name}, ${slicing}`, () => {
        const work = [1, 4].map((scale) => {
          const delimiter = make(delimiterBytes * scale)
          const data = Buffer.concat([hostileFiller(delimiter, dataBytes * scale), delimiter])
          const found = searchPieces(cut(data, sizes), delimiter)
          expect(found.at).toBe(data.length - delimiter.length)
          // A few steps per byte at most, whatever the delimiter's length.
          expect(found.work).toBeLessThanOrEqual(3 * data.length)
          return found.work
        })
        const growth = work[1]! / work[0]!
        expect(growth).toBeGreaterThan(3.5)
        expect(growth).toBeLessThan(4.5)
      })
    }
  }

  it("a frame is too large only once the bytes that may still start the delimiter are excluded", () => {
    const framing = Framing.delimited({ delimiter: "ab", maxFrameBytes: 3 })
    const decode = (...pieces: Array<string>) =>
      Effect.runSyncExit(Stream.runCollect(Stream.fromIterable(pieces).pipe(
        Stream.encodeText,
        Framing.decodeStream(framing),
        Stream.decodeText()
      )))
    // "xyz" then "a", which may start the delimiter: not too large yet, and "b" completes it.
    expect(decode("xyza", "b")).toStrictEqual(Effect.runSyncExit(Effect.succeed(Chunk.make("xyz"))))
    // "xyza" then "a": the first "a" can no longer start it, so the frame has 4 bytes.
    const exit = decode("xyza", "a")
    expect(exit._tag).toBe("Failure")
    expect(JSON.stringify(exit)).toContain("FrameTooLarge")
  })
})

describe("the delimiter search on a connection", () => {
  /**
   * A raw peer that sends `data` in pieces of `piece` bytes, one per turn of the event loop, so
   * that the reader, in the same process, is woken for nearly every piece.
   */
  const dribbler = (data: Buffer, piece: number) =>
    rawServer((socket) => {
      socket.setNoDelay(true)
      let offset = 0
      const next = () => {
        if (offset >= data.length || socket.destroyed) return
        socket.write(data.subarray(offset, offset + piece))
        offset += piece
        setImmediate(next)
      }
      next()
    })

  /** Counts the chunks the connection's socket delivers from now on: each one wakes a waiting read. */
  const searchWakes = (connection: unknown) => {
    let chunks = 0
    ;(connection as { readonly socket: net.Socket }).socket.on("data", () => chunks++)
    return () => chunks
  }

  live("readUntil counts against maxFrameBytes only the bytes that can no longer start the delimiter", () =>
    Effect.gen(function*() {
      // The peer then stays silent, with the connection open.
      const { port } = yield* rawServer((socket) => socket.write("xyzabxyzx"))
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port })
      expect(Buffer.from(yield* connection.readUntil("ab", { maxFrameBytes: 3 })).toString()).toBe("xyz")
      // "xyzx" cannot end with the start of "ab": 4 bytes are over the limit, known without waiting for more.
      const error = yield* Effect.flip(connection.readUntil("ab", { maxFrameBytes: 3 }))
      expect(error).toMatchObject({ _tag: "FrameTooLarge", maxBytes: 3, size: 4 })
    }))

  for (const [dataBytes, delimiterBytes] of [[256 * 1024, 4096], [1024 * 1024, 16 * 1024]] as const) {
    live(`readUntil finds a ${delimiterBytes / 1024} KiB delimiter after ${dataBytes / 1024} KiB sent in small pieces, in a few steps per byte`, () =>
      Effect.gen(function*() {
        const delimiter = hostile["a…ab"](delimiterBytes)
        const data = Buffer.concat([hostileFiller(delimiter, dataBytes), delimiter, Buffer.from("rest")])
        const { port } = yield* dribbler(data, 700)
        const connection = yield* Tcp.connect({ host: "127.0.0.1", port })
        const before = searchWork.steps
        const wakes = searchWakes(connection)
        const line = yield* connection.readUntil(delimiter, { maxFrameBytes: dataBytes })
        expect(line.length).toBe(dataBytes)
        // The reader was woken many times, each time by a few new bytes.
        expect(wakes()).toBeGreaterThan(dataBytes / 8192)
        expect(searchWork.steps - before).toBeLessThanOrEqual(3 * (dataBytes + delimiterBytes))
        // Nothing after the delimiter was taken.
        expect(Buffer.from(yield* connection.readExactly(4)).toString()).toBe("rest")
      }))

    live(`a Framing.delimited reader finds a ${delimiterBytes / 1024} KiB delimiter after ${dataBytes / 1024} KiB sent in small pieces, in a few steps per byte`, () =>
      Effect.gen(function*() {
        const delimiter = hostile["abcab…z"](delimiterBytes)
        const data = Buffer.concat([hostileFiller(delimiter, dataBytes), delimiter])
        const { port } = yield* dribbler(data, 700)
        const connection = yield* Tcp.connect({ host: "127.0.0.1", port })
        const frames = yield* Framing.reader(connection, Framing.delimited({ delimiter, maxFrameBytes: dataBytes }))
        const before = searchWork.steps
        const wakes = searchWakes(connection)
        const frame = yield* frames.read
        expect(wakes()).toBeGreaterThan(dataBytes / 8192)
        expect(Option.getOrThrow(frame).length).toBe(dataBytes)
        expect(searchWork.steps - before).toBeLessThanOrEqual(3 * (dataBytes + delimiterBytes))
      }))
  }
})

describe("ByteQueue", () => {
  it("peek returns the first bytes without taking them, across chunks; taken counts every byte removed", () => {
    const queue = new ByteQueue()
    queue.push(Buffer.alloc(300, 1))
    queue.push(Buffer.from([2, 3]))
    queue.push(Buffer.alloc(400, 4))
    queue.skip(298)
    expect([...queue.peek(5)]).toEqual([1, 1, 2, 3, 4])
    expect(queue.length).toBe(404)
    expect(queue.taken).toBe(298)
    expect([...queue.take(3)]).toEqual([1, 1, 2])
    queue.takeChunk()
    expect(queue.taken).toBe(302)
    queue.clear()
    expect(queue.taken).toBe(702)
  })
})
