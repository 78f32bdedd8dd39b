/**
 * The protocol of examples/kv-server.ts and examples/kv-client.ts: Schema-typed requests and
 * responses, one JSON document per length-prefixed frame, and a typed failure for a missing key.
 */
import * as Schema from "effect/Schema"
import { Framing, Message } from "effect-tcp"

export class Get extends Schema.TaggedClass<Get>()("Get", { key: Schema.String }) {}
export class Set extends Schema.TaggedClass<Set>()("Set", { key: Schema.String, value: Schema.String }) {}
export class Delete extends Schema.TaggedClass<Delete>()("Delete", { key: Schema.String }) {}
/** Answers after `millis`: a stand-in for a slow command, to show the client's timeout. */
export class Sleep extends Schema.TaggedClass<Sleep>()("Sleep", {
  millis: Schema.Int.pipe(Schema.between(0, 60_000))
}) {}

export const Request = Schema.Union(Get, Set, Delete, Sleep)
export type Request = typeof Request.Type

export class Value extends Schema.TaggedClass<Value>()("Value", { key: Schema.String, value: Schema.String }) {}
export class Stored extends Schema.TaggedClass<Stored>()("Stored", { key: Schema.String }) {}
export class Deleted extends Schema.TaggedClass<Deleted>()("Deleted", { key: Schema.String }) {}
export class Slept extends Schema.TaggedClass<Slept>()("Slept", { millis: Schema.Number }) {}

export const Response = Schema.Union(Value, Stored, Deleted, Slept)
export type Response = typeof Response.Type

export class KeyNotFound extends Schema.TaggedError<KeyNotFound>()("KeyNotFound", { key: Schema.String }) {
  override get message() {
    return `no value for key "${this.key}"`
  }
}

export const KeyValue = Message.protocol({
  request: Request,
  response: Response,
  failure: KeyNotFound,
  // A 4-byte big-endian length before each message; nothing over 64 KiB is sent or accepted.
  framing: Framing.lengthPrefixed({ headerBytes: 4, endian: "big", maxFrameBytes: 64 * 1024 })
})
