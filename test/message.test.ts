import { describe, expect, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import { pipe } from "effect/Function"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import * as fc from "fast-check"
import { execFile } from "node:child_process"
import type * as net from "node:net"
import * as path from "node:path"
import { promisify } from "node:util"
import { type Connection, Endpoint, Framing, Message, Server, Tcp } from "../src/index.js"
import { awaitSleeps, collect, connectTo, effect, eventually, live } from "./support/harness.js"
import { captureLogs } from "./support/logs.js"

class Point extends Schema.Class<Point>("Point")({ x: Schema.Number, y: Schema.Number }) {}
const Points = Message.codec(Point)
const execFileAsync = promisify(execFile)

const frame = (framing: Framing.Framing, body: Uint8Array | string) =>
  Buffer.concat(Framing.encodeFrame(framing, body).pipe((either) => {
    if (either._tag === "Left") throw either.left
    return either.right
  }))

describe("Message send and receive", () => {
  live("typed messages go out one per frame and come back decoded; the stream ends at the peer's FIN", () =>
    Effect.gen(function*() {
      // An echo server of frames.
      const server = yield* Server.serve({ port: 0 }, (connection) =>
        Framing.stream(connection, Points.framing).pipe(
          Stream.run(Framing.sink(connection, Points.framing)),
          Effect.zipRight(connection.endWrite)
        ))
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port: server.address.port })
      yield* Message.send(connection, Points, new Point({ x: 1, y: 2 }))
      yield* Message.sendAll(connection, Points, [new Point({ x: 3, y: 4 }), new Point({ x: 5, y: 6 })])
      yield* connection.endWrite
      const received = Chunk.toArray(yield* Stream.runCollect(Message.stream(connection, Points)))
      expect(received).toEqual([new Point({ x: 1, y: 2 }), new Point({ x: 3, y: 4 }), new Point({ x: 5, y: 6 })])
      expect(received[0]).toBeInstanceOf(Point)
    }))

  live("a frame that does not decode is MalformedFrame with the parse error as cause, and the next frame still decodes", () =>
    Effect.gen(function*() {
      const framing = Points.framing
      const { connection } = yield* connectTo((socket) =>
        socket.end(Buffer.concat([
          frame(framing, `{"x":1,"y":2}`),
          frame(framing, `{"x":1,`),
          frame(framing, Buffer.from([0x7b, 0xff, 0xfe, 0x7d])),
          frame(framing, `{"x":1,"y":"two"}`),
          frame(framing, `{"x":3,"y":4}`)
        ]))
      )
      const messages = yield* Message.reader(connection, Points)
      expect(yield* messages.receive).toEqual(Option.some(new Point({ x: 1, y: 2 })))

      const badJson = yield* Effect.flip(messages.receive)
      expect(badJson).toMatchObject({ _tag: "MalformedFrame", operation: "read", endpoint: connection.remoteAddress })
      if (badJson._tag !== "MalformedFrame") return
      expect(badJson.reason).toMatch(/^the message is not valid JSON: /)
      expect(badJson.cause).toBeInstanceOf(SyntaxError)

      const badUtf8 = yield* Effect.flip(messages.receive)
      expect(badUtf8._tag === "MalformedFrame" && badUtf8.reason).toBe(
        "the message is not valid JSON: the bytes are not valid UTF-8"
      )

      const badSchema = yield* Effect.flip(messages.receive)
      if (badSchema._tag !== "MalformedFrame") throw badSchema
      expect(ParseResult.isParseError(badSchema.cause)).toBe(true)
      expect(badSchema.reason).toContain("the message does not match its schema:")
      expect(badSchema.reason).toContain(`["y"]`)
      expect(badSchema.message).toContain("malformed frame: the message does not match its schema")

      expect(yield* messages.receive).toEqual(Option.some(new Point({ x: 3, y: 4 })))
      expect(yield* messages.receive).toEqual(Option.none())
    }))

  live("a message its Schema cannot encode, or over the limit, fails with a typed error and nothing is sent", () =>
    Effect.gen(function*() {
      let received: Effect.Effect<Buffer> = Effect.succeed(Buffer.alloc(0))
      const { connection } = yield* connectTo((socket) => {
        received = collect(socket)
      })
      const Positive = Message.codec(Schema.Struct({ n: Schema.Number.pipe(Schema.positive()) }), {
        framing: Framing.delimited({ delimiter: "\n", maxFrameBytes: 20 })
      })
      const invalid = yield* Effect.flip(Message.send(connection, Positive, { n: -1 }))
      expect(invalid).toMatchObject({ _tag: "MalformedFrame", operation: "write" })
      expect(invalid._tag === "MalformedFrame" && ParseResult.isParseError(invalid.cause)).toBe(true)
      const tooLarge = yield* Effect.flip(Message.send(connection, Positive, { n: 1.2345678901234567 }))
      expect(tooLarge).toMatchObject({ _tag: "FrameTooLarge", operation: "write", maxBytes: 20 })
      expect((yield* Effect.flip(Message.sendAll(connection, Positive, [{ n: 1 }, { n: 0 }])))._tag).toBe("MalformedFrame")
      yield* Message.send(connection, Positive, { n: 42 })
      yield* connection.endWrite
      expect((yield* received).toString()).toBe(`{"n":42}\n`)
    }))

  it("random frames never crash the decoder: each is a message or MalformedFrame", () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.uint8Array({ maxLength: 64 }), fc.json().map((text) => new Uint8Array(Buffer.from(text)))),
        (bytes) => {
          const exit = Effect.runSyncExit(Message.decode(bytes, Points))
          if (Exit.isFailure(exit)) {
            const failure = Cause.failureOption(exit.cause)
            expect(Option.isSome(failure) && failure.value._tag).toBe("MalformedFrame")
          } else {
            expect(exit.value).toBeInstanceOf(Point)
          }
        }
      ),
      { numRuns: 500 }
    )
  })
})

// -----------------------------------------------------------------------------
// request / response

const Double = Message.protocol({
  request: Schema.Struct({ n: Schema.Number }),
  response: Schema.Struct({ n: Schema.Number, doubled: Schema.Number })
})

const json = (body: Uint8Array) => JSON.parse(Buffer.from(body).toString()) as { id: number; request: { n: number } }

/** A server speaking the wire format by hand: it reads `batch` requests, then answers them in the order `reorder` gives. */
const batchServer = (
  batch: number,
  reorder: <A>(requests: Array<A>) => Array<A>,
  onServed?: (order: Array<number>) => void
) =>
  Server.serve({ port: 0 }, (connection) =>
    Effect.gen(function*() {
      const frames = yield* Framing.reader(connection, Double.framing)
      for (;;) {
        const requests: Array<{ id: number; request: { n: number } }> = []
        while (requests.length < batch) {
          const next = yield* frames.read
          if (Option.isNone(next)) return
          requests.push(json(next.value))
        }
        const answers = reorder(requests)
        onServed?.(answers.map((r) => r.request.n))
        yield* Framing.writeAll(
          connection,
          Double.framing,
          answers.map(({ id, request }) => JSON.stringify({ id, success: { n: request.n, doubled: request.n * 2 } }))
        )
      }
    }))

const shuffle = <A>(items: Array<A>): Array<A> => {
  const out = [...items]
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    ;[out[i], out[j]] = [out[j]!, out[i]!]
  }
  return out
}

describe("Message request/response", () => {
  live("10,000 concurrent requests on one connection, answered in a shuffled order, each get their own answer", () =>
    Effect.gen(function*() {
      let served: Array<number> = []
      const server = yield* batchServer(10_000, shuffle, (order) => (served = order))
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port: server.address.port })
      const client = yield* Message.client(connection, Double, { timeout: "20 seconds" })
      const numbers = Array.from({ length: 10_000 }, (_, i) => i)
      const answers = yield* Effect.forEach(numbers, (n) => client.request({ n }), { concurrency: "unbounded" })
      expect(answers).toEqual(numbers.map((n) => ({ n, doubled: 2 * n })))
      expect(served.length).toBe(10_000)
      expect(served.filter((n, i) => n !== i).length).toBeGreaterThan(9_000)
      expect(yield* client.inFlight).toBe(0)
    }), 60_000)

  live("Message.serve handles pipelined requests concurrently, so quick answers overtake slow ones", () =>
    Effect.gen(function*() {
      const finished: Array<number> = []
      const server = yield* Message.serve(Double, { port: 0, concurrency: "unbounded" }, ({ n }) =>
        Effect.sleep(`${(n % 4) * 10} millis`).pipe(
          Effect.zipRight(Effect.sync(() => finished.push(n))),
          Effect.as({ n, doubled: 2 * n })
        ))
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port: server.address.port })
      const client = yield* Message.client(connection, Double)
      const numbers = Array.from({ length: 400 }, (_, i) => i)
      const answers = yield* Effect.forEach(numbers, (n) => client.request({ n }), { concurrency: "unbounded" })
      expect(answers).toEqual(numbers.map((n) => ({ n, doubled: 2 * n })))
      expect(finished).not.toEqual(numbers)
    }))

  effect("a request without a response in time fails with RequestTimeout; its late response goes to nobody else", () =>
    Effect.gen(function*() {
      const arrived = yield* Effect.makeLatch()
      const release = yield* Deferred.make<void>()
      const server = yield* Server.serve({ port: 0 }, (connection) =>
        Effect.gen(function*() {
          const frames = yield* Framing.reader(connection, Double.framing)
          const first = json(Option.getOrThrow(yield* frames.read))
          yield* arrived.open
          yield* Deferred.await(release)
          // The late answer to request 1, then the answer to request 2.
          const second = json(Option.getOrThrow(yield* frames.read))
          yield* Framing.writeAll(connection, Double.framing, [
            JSON.stringify({ id: first.id, success: { n: first.request.n, doubled: -1 } }),
            JSON.stringify({ id: second.id, success: { n: second.request.n, doubled: 2 * second.request.n } })
          ])
          // Until the client closes.
          yield* frames.read
        }))
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port: server.address.port })
      const client = yield* Message.client(connection, Double, { timeout: "1 minute" })
      const slow = yield* Effect.fork(client.request({ n: 1 }, { timeout: "1 second" }))
      yield* arrived.await
      yield* TestClock.adjust("999 millis")
      expect(slow.unsafePoll()).toBeNull()
      yield* TestClock.adjust("1 millis")
      const error = yield* Effect.flip(Fiber.join(slow))
      expect(error).toBeInstanceOf(Message.RequestTimeout)
      expect(error).toMatchObject({ requestId: 1, timeoutMillis: 1000, endpoint: connection.remoteAddress })
      expect(error.message).toBe(
        `request 1 to 127.0.0.1:${server.address.port} got no response within 1000 ms: the server is slow or stuck; a late response will be discarded`
      )
      expect(yield* client.inFlight).toBe(0)
      yield* Deferred.succeed(release, undefined)
      expect(yield* client.request({ n: 2 })).toEqual({ n: 2, doubled: 4 })
    }))

  live("when the peer resets the connection, every pending request fails with ConnectionReset, and so does any later one", () =>
    Effect.gen(function*() {
      // The 50 request frames, whatever id each request got: reset once all of them are in.
      const total = Array.from({ length: 50 }, (_, n) => 4 + JSON.stringify({ id: n + 1, request: { n } }).length)
        .reduce((a, b) => a + b)
      const { connection } = yield* connectTo((socket) => {
        let received = 0
        socket.on("data", (chunk: Buffer) => {
          received += chunk.length
          if (received >= total) socket.resetAndDestroy()
        })
      })
      const client = yield* Message.client(connection, Double)
      const errors = yield* Effect.forEach(
        Array.from({ length: 50 }, (_, n) => n),
        (n) => Effect.flip(client.request({ n })),
        { concurrency: "unbounded" }
      )
      expect(errors.map((error) => error._tag)).toEqual(Array(50).fill("ConnectionReset"))
      expect(errors[0]).toMatchObject({ operation: "read", code: "ECONNRESET", endpoint: connection.remoteAddress })
      expect((yield* Effect.flip(client.request({ n: 99 })))._tag).toBe("ConnectionReset")
    }))

  live("when the peer closes with requests in flight, each fails with UnexpectedEof", () =>
    Effect.gen(function*() {
      const { connection, peer } = yield* connectTo(() => {})
      const client = yield* Message.client(connection, Double)
      const pending = yield* Effect.fork(
        Effect.forEach([1, 2, 3], (n) => Effect.flip(client.request({ n })), { concurrency: "unbounded" })
      )
      while ((yield* client.inFlight) < 3) yield* Effect.sleep("5 millis")
      peer.end()
      const errors = yield* Fiber.join(pending)
      expect(errors.map((error) => error._tag)).toEqual(["UnexpectedEof", "UnexpectedEof", "UnexpectedEof"])
      expect(errors[0]).toMatchObject({ operation: "read", expected: 4, received: 0 })
    }))

  effect("a read deadline with requests waiting fails those with ReadTimeout; the client goes on", () =>
    Effect.gen(function*() {
      const arrived = yield* Effect.makeLatch()
      const server = yield* Server.serve({ port: 0 }, (connection) =>
        Effect.gen(function*() {
          const frames = yield* Framing.reader(connection, Double.framing)
          yield* frames.read
          yield* arrived.open
          const second = json(Option.getOrThrow(yield* frames.read))
          yield* Framing.write(
            connection,
            Double.framing,
            JSON.stringify({ id: second.id, success: { n: 2, doubled: 4 } })
          )
          // Until the client closes.
          yield* frames.read
        }))
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port: server.address.port, readTimeout: "1 second" })
      const client = yield* Message.client(connection, Double)
      const first = yield* Effect.fork(client.request({ n: 1 }))
      yield* arrived.await
      // The client's read of the reply waits under its deadline; just before it, the request waits.
      expect(yield* awaitSleeps(1)).toEqual([1000])
      yield* TestClock.adjust("999 millis")
      expect(first.unsafePoll()).toBeNull()
      yield* TestClock.adjust("1 millis")
      expect(yield* Effect.flip(Fiber.join(first))).toMatchObject({ _tag: "ReadTimeout", timeoutMillis: 1000 })
      expect(yield* client.request({ n: 2 })).toEqual({ n: 2, doubled: 4 })
    }))

  live("typed failures, defects and requests the server cannot decode reach only the request concerned", () =>
    Effect.gen(function*() {
      class NotFound extends Schema.TaggedError<NotFound>()("NotFound", { key: Schema.String }) {}
      const Lookup = Message.protocol({
        request: Schema.Struct({ key: Schema.String }),
        response: Schema.String,
        failure: NotFound
      })
      const logs = captureLogs()
      const server = yield* Message.serve(Lookup, { port: 0 }, ({ key }) => {
        if (key === "missing") return Effect.fail(new NotFound({ key }))
        if (key === "boom") return Effect.dieMessage("the handler has a bug")
        return Effect.succeed(`value of ${key}`)
      }).pipe(Effect.provide(logs.layer))
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port: server.address.port })
      const client = yield* Message.client(connection, Lookup)
      const [found, missing, boom, after] = yield* Effect.all(
        ["a", "missing", "boom", "b"].map((key) => Effect.exit(client.request({ key }))),
        { concurrency: "unbounded" }
      )
      expect(found).toEqual(Exit.succeed("value of a"))
      expect(after).toEqual(Exit.succeed("value of b"))
      expect(missing).toEqual(Exit.fail(new NotFound({ key: "missing" })))
      expect(Exit.isFailure(boom) && Cause.isDie(boom.cause)).toBe(true)
      expect(Exit.isFailure(boom) && Cause.pretty(boom.cause)).toContain("request 3 died on the server")
      expect(logs.entries.some((entry) => entry.level === "ERROR" && entry.message.startsWith("request 3 died"))).toBe(true)

      // A client whose requests do not match the server's Schema.
      const Wrong = Message.protocol({ request: Schema.Struct({ key: Schema.Number }), response: Schema.String })
      const other = yield* Tcp.connect({ host: "127.0.0.1", port: server.address.port })
      const wrong = yield* Message.client(other, Wrong)
      const malformed = yield* Effect.flip(wrong.request({ key: 1 }))
      expect(malformed).toMatchObject({ _tag: "MalformedFrame", operation: "write" })
      expect(malformed._tag === "MalformedFrame" && malformed.reason).toMatch(
        /^the server could not decode request 1: the request does not match its schema:/
      )
      expect(yield* client.request({ key: "c" })).toBe("value of c")
    }))

  live("a response that is not in the protocol fails every pending request with MalformedFrame", () =>
    Effect.gen(function*() {
      const server = yield* Server.serve({ port: 0 }, (connection) =>
        Effect.gen(function*() {
          const frames = yield* Framing.reader(connection, Double.framing)
          yield* frames.read
          yield* frames.read
          yield* Framing.write(connection, Double.framing, `"what?"`)
          // Until the client closes.
          yield* frames.read
        }))
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port: server.address.port })
      const client = yield* Message.client(connection, Double)
      const errors = yield* Effect.all([1, 2].map((n) => Effect.flip(client.request({ n }))), { concurrency: 2 })
      expect(errors).toMatchObject([
        { _tag: "MalformedFrame", operation: "read", reason: "a response has no numeric id" },
        { _tag: "MalformedFrame", operation: "read", reason: "a response has no numeric id" }
      ])
    }))

  live("a request frame without an id closes that connection on the server, which goes on serving others", () =>
    Effect.gen(function*() {
      const logs = captureLogs()
      const server = yield* Message.serve(Double, { port: 0 }, ({ n }) => Effect.succeed({ n, doubled: 2 * n })).pipe(
        Effect.provide(logs.layer)
      )
      const rude: Connection.Connection = yield* Tcp.connect({ host: "127.0.0.1", port: server.address.port })
      yield* Framing.write(rude, Double.framing, `{"request":{"n":1}}`)
      expect(yield* rude.read).toEqual(Option.none())
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port: server.address.port })
      const client = yield* Message.client(connection, Double)
      expect(yield* client.request({ n: 21 })).toEqual({ n: 21, doubled: 42 })
      expect(logs.entries.some((entry) => entry.message.includes("handler failed with MalformedFrame"))).toBe(true)
    }))
  const Lookup = Message.protocol({ request: Schema.String, response: Schema.String })
  /** A handler with a bug: it throws an Error, whose stack names this file. */
  const buggy = (key: string) =>
    key === "boom" ? Effect.sync((): string => { throw new Error("secret detail of the server") }) : Effect.succeed(key)
  const defectOf = (exit: Exit.Exit<unknown, unknown>) => {
    if (Exit.isSuccess(exit)) throw new Error("the request succeeded")
    const defect = Cause.dieOption(exit.cause)
    if (Option.isNone(defect)) throw new Error(`not a defect: ${Cause.pretty(exit.cause)}`)
    return String((defect.value as Error).message)
  }

  live("a handler's defect reaches the client as a generic defect with an id that the server's log shows beside the full cause", () =>
    Effect.gen(function*() {
      const logs = captureLogs()
      const server = yield* Message.serve(Lookup, { port: 0 }, buggy).pipe(Effect.provide(logs.layer))
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port: server.address.port })
      const client = yield* Message.client(connection, Lookup)
      const message = defectOf(yield* Effect.exit(client.request("boom")))
      const id = /^request 1 died on the server: a defect, logged by the server as defect ([0-9a-f]{12})$/.exec(message)?.[1]
      expect(id, message).toBeDefined()
      // No stack trace, file path or message of the server's.
      expect(message).not.toContain("secret detail")
      expect(message).not.toContain("message.test.ts")
      const logged = logs.entries.find((entry) => entry.level === "ERROR" && entry.message.includes(`defect ${id}`))
      expect(logged?.annotations).toMatchObject({ defectId: id, requestId: 1 })
      expect(logged?.cause).toContain("secret detail of the server")
      expect(logged?.cause).toContain("message.test.ts")
      // The connection goes on.
      expect(yield* client.request("a")).toBe("a")
    }))

  live("with exposeDefects: true the client gets the handler's full cause", () =>
    Effect.gen(function*() {
      const logs = captureLogs()
      const server = yield* Message.serve(Lookup, { port: 0, exposeDefects: true }, buggy).pipe(Effect.provide(logs.layer))
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port: server.address.port })
      const client = yield* Message.client(connection, Lookup)
      const message = defectOf(yield* Effect.exit(client.request("boom")))
      expect(message).toMatch(/^request 1 died on the server: Error: secret detail of the server/)
      expect(message).toContain("message.test.ts")
      expect(logs.entries.some((entry) => entry.level === "ERROR" && /defect [0-9a-f]{12}/.test(entry.message))).toBe(true)
    }))

  live("a response the server cannot encode is a defect too: its details stay in the server's log", () =>
    Effect.gen(function*() {
      const Strict = Message.protocol({ request: Schema.String, response: Schema.String.pipe(Schema.maxLength(3)) })
      const logs = captureLogs()
      const server = yield* Message.serve(Strict, { port: 0 }, (key) => Effect.succeed(`a long value for ${key}`)).pipe(
        Effect.provide(logs.layer)
      )
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port: server.address.port })
      const client = yield* Message.client(connection, Strict)
      const message = defectOf(yield* Effect.exit(client.request("k")))
      expect(message).toMatch(/^request 1 died on the server: a defect, logged by the server as defect [0-9a-f]{12}$/)
      expect(logs.entries.some((entry) => entry.level === "ERROR" && entry.message.includes("a long value for k"))).toBe(
        true
      )
    }))

  live("request timeouts that are not finite, non-negative durations fail with InvalidOptions; nothing is sent", () =>
    Effect.gen(function*() {
      let received: Effect.Effect<Buffer> = Effect.succeed(Buffer.alloc(0))
      const { connection } = yield* connectTo((socket) => {
        received = collect(socket)
      })
      // Each type-checks as a DurationInput.
      for (const timeout of ["1e3 millis", NaN, -5, "-5 seconds", [-5, 0], Infinity] as Array<Duration.DurationInput>) {
        const error = yield* Effect.flip(Message.client(connection, Double, { timeout }))
        expect(error).toMatchObject({ _tag: "InvalidOptions" })
        expect(error._tag === "InvalidOptions" && error.issues).toContain("Message.client: ")
        expect(error._tag === "InvalidOptions" && error.issues).toContain("timeout")
      }
      const client = yield* Message.client(connection, Double, { timeout: "5 seconds" })
      for (const timeout of ["1e3 millis", NaN, -1, "-5 seconds", [-5, 0]] as Array<Duration.DurationInput>) {
        const error = yield* Effect.flip(client.request({ n: 1 }, { timeout }))
        expect(error).toMatchObject({ _tag: "InvalidOptions", operation: "write" })
        expect(error._tag === "InvalidOptions" && error.issues).toContain("Message request: ")
        expect(yield* client.inFlight).toBe(0)
      }
      yield* connection.endWrite
      expect((yield* received).length).toBe(0)
    }))

  live("Message.serve and serveConnection refuse a concurrency that is not an integer of at least 1 or unbounded", () =>
    Effect.gen(function*() {
      for (const concurrency of [0, -1, NaN, 1.5, Infinity, "all" as "unbounded"]) {
        const error = yield* Effect.flip(
          Message.serve(Double, { port: 0, concurrency }, ({ n }) => Effect.succeed({ n, doubled: 2 * n }))
        )
        expect(error).toMatchObject({ _tag: "InvalidOptions", operation: "listen" })
        expect(error._tag === "InvalidOptions" && error.issues).toContain("concurrency")
      }
      // On one connection: the handler of a plain server fails at once, before reading a request.
      const failures: Array<string> = []
      const server = yield* Server.serve({ port: 0 }, (connection) =>
        Message.serveConnection(connection, Double, ({ n }) => Effect.succeed({ n, doubled: 2 * n }), { concurrency: 0 })
          .pipe(Effect.tapError((error) => Effect.sync(() => failures.push(error._tag)))))
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port: server.address.port })
      const client = yield* Message.client(connection, Double)
      expect((yield* Effect.flip(client.request({ n: 1 })))._tag).toBe("UnexpectedEof")
      expect(failures).toEqual(["InvalidOptions"])
    }))

  live("a codec or protocol over a framing that cannot work fails every use with InvalidOptions", () =>
    Effect.gen(function*() {
      const framing = Framing.lengthPrefixed({ headerBytes: 3 as 4 })
      const Bad = Message.codec(Schema.String, { framing })
      const BadProtocol = Message.protocol({ request: Schema.String, response: Schema.String, framing })
      const { connection } = yield* connectTo(() => {})
      expect((yield* Effect.flip(Message.send(connection, Bad, "x")))._tag).toBe("InvalidOptions")
      expect((yield* Effect.flip(Message.sendAll(connection, Bad, [])))._tag).toBe("InvalidOptions")
      expect((yield* Effect.flip(Message.reader(connection, Bad)))._tag).toBe("InvalidOptions")
      expect((yield* Effect.flip(Stream.runDrain(Message.stream(connection, Bad))))._tag).toBe("InvalidOptions")
      expect((yield* Effect.flip(Message.client(connection, BadProtocol)))._tag).toBe("InvalidOptions")
      const serving = yield* Effect.flip(Message.serve(BadProtocol, { port: 0 }, (text) => Effect.succeed(text)))
      expect(serving).toMatchObject({ _tag: "InvalidOptions", operation: "listen" })
      expect(serving._tag === "InvalidOptions" && serving.issues).toContain("headerBytes must be 1, 2 or 4, got 3")
    }))

  /** Bytes a connection's socket holds that the kernel has not taken yet. */
  const pendingBytes = (connection: unknown) => (connection as { readonly socket: net.Socket }).socket.writableLength

  live("a Message.send whose connection is reset mid-write fails with a typed error, and so does a request", () =>
    Effect.gen(function*() {
      // A peer that takes nothing until the write is stuck, then resets: most bytes never leave.
      const Big = Message.codec(Schema.String, { framing: Framing.lengthPrefixed({ maxFrameBytes: 64 * 1024 * 1024 }) })
      const body = "x".repeat(32 * 1024 * 1024)
      const { connection, peer } = yield* connectTo((socket) => socket.pause())
      const sending = yield* Effect.fork(Effect.exit(Message.send(connection, Big, body)))
      yield* eventually(() => pendingBytes(connection) > 0)
      peer.resetAndDestroy()
      const sent = yield* Fiber.join(sending)
      expect(Exit.isFailure(sent) && Option.getOrUndefined(Cause.failureOption(sent.cause))).toMatchObject({
        _tag: expect.stringMatching(/^(ConnectionReset|BrokenPipe|SocketClosed)$/)
      })

      const Echo = Message.protocol({ request: Schema.String, response: Schema.String, framing: Big.framing })
      const second = yield* connectTo((socket) => socket.pause())
      const client = yield* Message.client(second.connection, Echo)
      const requesting = yield* Effect.fork(Effect.exit(client.request(body)))
      yield* eventually(() => pendingBytes(second.connection) > 0)
      second.peer.resetAndDestroy()
      const answered = yield* Fiber.join(requesting)
      expect(Exit.isFailure(answered) && Option.getOrUndefined(Cause.failureOption(answered.cause))).toMatchObject({
        _tag: expect.stringMatching(/^(ConnectionReset|BrokenPipe|SocketClosed)$/)
      })
    }))
})

describe("Message services of the Schemas", () => {
  /** A service that a Schema's transformation reads: the prefix put before every string on the wire. */
  class Prefix extends Context.Tag("test/Prefix")<Prefix, string>() {}
  const Prefixed = Schema.transformOrFail(Schema.String, Schema.String, {
    strict: true,
    decode: (text) => Effect.map(Prefix, (prefix) => text.startsWith(prefix) ? text.slice(prefix.length) : text),
    encode: (text) => Effect.map(Prefix, (prefix) => `${prefix}${text}`)
  })
  const Prefixing = Message.protocol({ request: Prefixed, response: Prefixed })
  const Plain = Message.protocol({ request: Schema.String, response: Schema.String })

  live("a client's Schemas get the services it was created with, even in a request from a fiber without them", () =>
    Effect.gen(function*() {
      const seen: Array<string> = []
      const server = yield* Message.serve(Plain, { port: 0 }, (text) => Effect.succeed(text).pipe(Effect.tap(() => seen.push(text))))
      const connection = yield* Tcp.connect({ host: "127.0.0.1", port: server.address.port })
      const client = yield* Message.client(connection, Prefixing).pipe(Effect.provideService(Prefix, "p:"))
      // This fiber has no Prefix; another sets a different one: the client's own is used for both.
      expect(yield* client.request("hello")).toBe("hello")
      expect(yield* client.request("again").pipe(Effect.provideService(Prefix, "q:"))).toBe("again")
      expect(seen).toEqual(["p:hello", "p:again"])
    }))
})

describe("Message functions are dual: data first, or data last in a pipe", () => {
  live("send, sendAll, stream and reader take the connection first or last", () =>
    Effect.gen(function*() {
      const server = yield* Server.serve({ port: 0 }, (connection) =>
        Framing.stream(connection, Points.framing).pipe(
          Stream.run(Framing.sink(connection, Points.framing)),
          Effect.zipRight(connection.endWrite)
        ))
      const first = yield* Tcp.connect({ host: "127.0.0.1", port: server.address.port })
      yield* pipe(first, Message.send(Points, new Point({ x: 1, y: 1 })))
      yield* pipe(first, Message.sendAll(Points, [new Point({ x: 2, y: 2 }), new Point({ x: 3, y: 3 })]))
      yield* first.endWrite
      const streamed = yield* Stream.runCollect(pipe(first, Message.stream(Points)))
      expect(Chunk.toArray(streamed).map((point) => point.x)).toEqual([1, 2, 3])

      const second = yield* Tcp.connect({ host: "127.0.0.1", port: server.address.port })
      yield* Message.send(second, Points, new Point({ x: 4, y: 4 }))
      yield* second.endWrite
      const messages = yield* pipe(second, Message.reader(Points))
      expect(yield* messages.receive).toEqual(Option.some(new Point({ x: 4, y: 4 })))
      expect(yield* messages.receive).toEqual(Option.none())
    }))

  it.effect("encode and decode take the message or frame first, or the codec alone to map a stream", () =>
    Effect.gen(function*() {
      const endpoint = Endpoint.make("peer.test", 9)
      const point = new Point({ x: 1, y: 2 })
      const body = yield* Message.encode(point, Points)
      expect(yield* pipe(point, Message.encode(Points))).toEqual(body)
      const frame = new Uint8Array(Buffer.from(body))
      expect(yield* Message.decode(frame, Points)).toEqual(point)
      expect(yield* pipe(frame, Message.decode(Points))).toEqual(point)
      // The options name the peer in errors, in both forms.
      const bad = new Uint8Array(Buffer.from(`{"x":1}`))
      expect(yield* Effect.flip(Message.decode(bad, Points, { endpoint }))).toMatchObject({ endpoint })
      expect(yield* Effect.flip(pipe(bad, Message.decode(Points, { endpoint })))).toMatchObject({ endpoint })
      expect(yield* Effect.flip(pipe({ x: 1 } as Point, Message.encode(Points, { endpoint })))).toMatchObject({
        _tag: "MalformedFrame",
        operation: "write",
        endpoint
      })
      const decoded = yield* Stream.make(frame, frame).pipe(Stream.mapEffect(Message.decode(Points)), Stream.runCollect)
      expect(Chunk.toArray(decoded)).toEqual([point, point])
      const encoded = yield* Stream.make(point).pipe(Stream.mapEffect(Message.encode(Points)), Stream.runCollect)
      expect(Chunk.toArray(encoded)).toEqual([body])
    }))

  live("client and serveConnection take the connection first or last", () =>
    Effect.gen(function*() {
      const server = yield* Server.serve(
        { port: 0 },
        Message.serveConnection(Double, ({ n }) => Effect.succeed({ n, doubled: 2 * n }), { concurrency: 2 })
      )
      const first = yield* Tcp.connect({ host: "127.0.0.1", port: server.address.port })
      const piped = yield* pipe(first, Message.client(Double, { timeout: "5 seconds" }))
      expect(yield* piped.request({ n: 1 })).toEqual({ n: 1, doubled: 2 })
      const second = yield* Tcp.connect({ host: "127.0.0.1", port: server.address.port })
      const direct = yield* Message.client(second, Double)
      expect(yield* direct.request({ n: 2 })).toEqual({ n: 2, doubled: 4 })
      // Data last, the options still apply.
      const third = yield* Tcp.connect({ host: "127.0.0.1", port: server.address.port })
      const invalid = yield* Effect.flip(pipe(third, Message.client(Double, { timeout: -1 })))
      expect(invalid).toMatchObject({ _tag: "InvalidOptions" })
      const refused = yield* Server.serve(
        { port: 0 },
        Message.serveConnection(Double, ({ n }) => Effect.succeed({ n, doubled: 2 * n }), { concurrency: 0 })
      )
      const fourth = yield* Tcp.connect({ host: "127.0.0.1", port: refused.address.port })
      expect((yield* Effect.flip((yield* Message.client(fourth, Double)).request({ n: 3 })))._tag).toBe("UnexpectedEof")
    }))
})

describe("Message modules load on their own", () => {
  it("each internal message file can be imported first, in a fresh process", async () => {
    const files = ["messageCodec", "messageClient", "messageServer"].map((name) => `./src/internal/${name}.ts`)
    for (const file of files) {
      const { stderr } = await execFileAsync(process.execPath, ["--import", "tsx", "-e", `await import(${JSON.stringify(file)})`], {
        cwd: path.resolve(import.meta.dirname, "..")
      })
      expect(stderr, file).toBe("")
    }
  }, 60_000)
})
