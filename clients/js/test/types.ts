// Checked by `tsc -p tsconfig.json` (never run): the hand-written types in src/index.d.ts
// describe the API as a TypeScript user calls it, and refuse what the API refuses.
import {
  Decoder, DecodeError, decodeTelemetry, encodeCommand, formatLine, parseCatalogue,
  subscriptions, type Catalogue, type Int, type Message, type Point,
} from "../src/index.js";

const dec = new Decoder({ prefix: "city/v1" });
const msg: Message = dec.decode("city/v1/gw1/telemetry", new Uint8Array([1, 0, 0x90]));
if (msg.kind === "telemetry") {
  const first: Point | undefined = msg.points[0];
  const ts: Int = first?.ts ?? 0;
  const big: bigint | number = ts;
  void big;
} else if (msg.kind === "error") {
  const reason: string = msg.error;
  void reason;
}
const held: Message[] = dec.feed("city/v1/gw1/state", new ArrayBuffer(3));
void held;
const cat: Catalogue = parseCatalogue({ epoch: 1, version: 0, points: [] });
const cat2: Catalogue | null = dec.catalogue("gw1");
void cat2;
const batch = decodeTelemetry(new Uint8Array(3), cat);
const kind: "none" | "zlib" | "zstd" = batch.compression;
void kind;
const bytes: Uint8Array = encodeCommand({ id: "c-1", cmd: "ping" }, { format: "msgpack" });
encodeCommand({ id: 2n ** 63n, cmd: "sync_time", args: { epoch_ms: 1764032400000 } });
const line: string = formatLine(msg);
const subs: string[] = subscriptions("city/v1", { share: "platform" });
void bytes, line, subs;
const err: Error = new DecodeError("x");
void err;

// @ts-expect-error: a command needs its name
encodeCommand({ id: "c-1" });
// @ts-expect-error: only json and msgpack
encodeCommand({ cmd: "ping" }, { format: "xml" });
// @ts-expect-error: payloads are bytes, not text
dec.decode("city/v1/gw1/events", "text");
if (msg.kind === "telemetry") {
  // @ts-expect-error: a telemetry message has no error
  void msg.error;
}
