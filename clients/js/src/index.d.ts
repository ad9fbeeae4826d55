// Types of @edgegw/codec (hand-written; the implementation is plain ES modules in src/).
//
// Integers: a `number` when it is a safe integer (|n| <= 2^53 - 1), a `bigint` beyond that
// (64-bit counters, big seq numbers); `Int` below. Floats are numbers, bit-exact (NaN, +-inf
// and -0 included). A float that holds a whole number reads as the same JS number as the
// integer would (JavaScript has one Number type).

export type Int = number | bigint;
export type Bytes = Uint8Array | ArrayBuffer | ArrayBufferView;
export type Quality = "timeout" | "exception" | "bad_data" | "unavailable";
export type Compression = "none" | "zlib" | "zstd";
export type PointKind = "float" | "int" | "bool" | "str";
export type Severity = "info" | "warning" | "alarm" | "critical";
export type TopicKind = "telemetry" | "events" | "state" | "cmd/req" | "cmd/res" | "groups/cmd/req";
/** A value as the decoders return JSON or msgpack data. */
export type Value = null | boolean | number | bigint | string | Uint8Array | Value[]
  | { [key: string]: Value };
export type Id = string | Int | null;

export const FORMAT_VERSION: 1;
export const MAX_DECIMALS: 12;
export const MAX_BODY_BYTES: number;

// ----------------------------------------------------------------------------- errors
/** A payload is corrupt, truncated, of an unknown version or needs a catalogue we lack. */
export class DecodeError extends Error {
  constructor(message: string);
  name: "DecodeError" | "CatalogueMismatch";
}
/** A batch refers to a catalogue (epoch or point ids) that the decoder does not have. */
export class CatalogueMismatch extends DecodeError {
  constructor(message: string);
}
/** A command could not be encoded. */
export class EncodeError extends Error {
  constructor(message: string);
  name: "EncodeError";
}

// -------------------------------------------------------------------------- catalogue
export interface PointDef {
  readonly device: string;
  readonly point: string;
  readonly kind: PointKind;
  readonly unit: string | null;
  readonly decimals: number | null;
}
/** A parsed catalogue: a point's id is its index in `points`. */
export interface Catalogue {
  readonly epoch: number;
  readonly version: Int;
  readonly points: readonly PointDef[];
}
/** The catalogue as a birth message carries it (`detail.catalogue`). */
export interface WireCatalogue {
  epoch: number;
  version: Int;
  points: Array<[string, string, PointKind, string | null, number | null, ...unknown[]]>;
}
export function parseCatalogue(wire: unknown): Catalogue;
export function catalogueToWire(catalogue: Catalogue): WireCatalogue;

// -------------------------------------------------------------------------- telemetry
export interface Point {
  device: string;
  point: string;
  /** Unix time in milliseconds. */
  ts: Int;
  value: number | bigint | boolean | string | null;
  /** Present only when the sample's quality is not good. */
  quality?: Quality;
}
export interface Batch {
  seq: Int;
  baseTs: Int;
  catalogueEpoch: Int;
  catalogueVersion: Int;
  compression: Compression;
  /** Sorted by timestamp, then point id. */
  points: Point[];
}
export interface BatchInfo {
  version: 1;
  compression: Compression;
  catalogueEpoch: Int;
  catalogueVersion: Int;
  seq: Int;
  baseTs: Int;
  /** How many points the batch holds. */
  points: number;
}
export function decodeTelemetry(payload: Bytes, catalogue: Catalogue | WireCatalogue | null | undefined): Batch;
export function readBatchInfo(payload: Bytes): BatchInfo;

// ----------------------------------------------------------------- events, state, commands
export interface EventMessage {
  ts: Int;
  type: string;
  device: string | null;
  detail: { [key: string]: Value };
  severity?: Severity;
}
export interface StateMessage {
  online: boolean;
  detail: { [key: string]: Value };
  /** The parsed catalogue when the message carries one (a birth), else null. */
  catalogue: Catalogue | null;
}
export type ResponseMessage =
  | { id: Id; ok: true; result: { [key: string]: Value }; encoding: "json" | "msgpack" }
  | { id: Id; ok: false; error: { code: string; message: string }; encoding: "json" | "msgpack" };
export interface CommandRequest {
  id?: Id;
  cmd: string;
  args?: { [key: string]: unknown };
}
export function decodeEvent(payload: Bytes): EventMessage;
export function decodeState(payload: Bytes): StateMessage;
export function decodeResponse(payload: Bytes): ResponseMessage;
export function decodeRequest(payload: Bytes): {
  id: Id; cmd: string; args: { [key: string]: Value }; encoding: "json" | "msgpack";
};
export function encodeCommand(request: CommandRequest, options?: { format?: "json" | "msgpack" }): Uint8Array;

// ------------------------------------------------------------------------------ topics
export interface TopicRef {
  kind: TopicKind;
  prefix: string;
  gateway: string | null;
  group: string | null;
}
export interface GatewayTopics {
  telemetry: string;
  events: string;
  state: string;
  cmdReq: string;
  cmdRes: string;
  groupCmdReq(group: string): string;
}
export function parseTopic(topic: string, prefix?: string | null): TopicRef;
export function topicsFor(prefix: string, gateway: string): GatewayTopics;
export function subscriptions(prefix: string, options?: { share?: string; commands?: boolean }): string[];

// ----------------------------------------------------- decoded messages (DESIGN.md 4.4)
export interface TelemetryMessage {
  kind: "telemetry";
  gateway: string;
  seq: Int;
  points: Point[];
}
export interface EventOutput extends EventMessage {
  kind: "event";
  gateway: string | null;
}
export interface StateOutput {
  kind: "state";
  gateway: string;
  online: boolean;
  detail: { [key: string]: Value };
}
export type ResponseOutput =
  | { kind: "response"; gateway: string | null; id: Id; ok: true; result: { [key: string]: Value } }
  | { kind: "response"; gateway: string | null; id: Id; ok: false; error: { code: string; message: string } };
export interface CommandMessage {
  kind: "command";
  gateway: string | null;
  /** For a group command (`{prefix}/groups/{group}/cmd/req`; gateway is then null). */
  group?: string;
  id?: Id;
  cmd?: string;
  args?: { [key: string]: Value };
  encoding?: "json" | "msgpack";
}
export interface ErrorMessage {
  kind: "error";
  /** null when the topic itself was not recognised. */
  gateway: string | null;
  topic: string | null;
  /** Why the message could not be decoded. */
  error: string;
}
export type Message = TelemetryMessage | EventOutput | StateOutput | ResponseOutput | CommandMessage | ErrorMessage;

export interface DecoderOptions {
  /** The topic prefix (may contain slashes); without it the gateway id is the segment before the leaf. */
  prefix?: string | null;
  /** How many telemetry batches feed() keeps back, across gateways, while their catalogue is unknown. */
  hold?: number;
}

/** Stateful decoder of gateway messages (one catalogue per gateway, learnt from state messages). */
export class Decoder {
  constructor(options?: DecoderOptions);
  readonly prefix: string | null;
  readonly hold: number;
  setCatalogue(gateway: string, catalogue: Catalogue | WireCatalogue): void;
  catalogue(gateway: string): Catalogue | null;
  /** Exactly one message object; never throws for a bad topic or payload. */
  decode(topic: string, payload: Bytes): Message;
  /** decode(), holding telemetry back until the state message with its catalogue arrives. */
  feed(topic: string, payload: Bytes): Message[];
  /** Give up on every held batch: one error object each. */
  flush(): Message[];
  /** Decode one captured line `{"topic": ..., "payload_b64": ...}`. */
  decodeCapture(line: string): Message;
}

/** One decoded message as one JSON line (BigInts exact, non-finite floats as null). */
export function formatLine(message: unknown): string;
/** Strict base64 to bytes (throws DecodeError). */
export function base64Bytes(text: string): Uint8Array;
