// Bad input: every bad payload is a DecodeError (or an error object from the Decoder) naming
// what was wrong; nothing from msgpack, zstd or zlib escapes, and the Decoder never throws.

import assert from "node:assert/strict";
import { test } from "node:test";
import { zlibSync } from "fflate";
import {
  CatalogueMismatch, DecodeError, Decoder, base64Bytes, decodeEvent, decodeResponse,
  decodeState, decodeTelemetry, formatLine, parseCatalogue, parseTopic, readBatchInfo,
} from "../src/index.js";

const enc = new TextEncoder();
const CAT = { epoch: 42, version: 1, points: [["env-1", "temperature", "float", "degC", 1],
  ["env-1", "humidity", "float", "%RH", 1], ["lamp-1", "lamp_on", "bool", null, null],
  ["lamp-1", "power", "float", "W", 1]] };
// docs/protocol.md section 7, the worked example (uncompressed)
const EXAMPLE = new Uint8Array(`01 00 9b 2a 01 11 cf 00 00 01 9a b8 86 4a 80 92 92 00 cd 13 88
  92 cc fa cd 13 88 92 02 02 94 00 01 01 01 94 11 11 00 11 94 00 00 00 00 98 cc ea 01 cd 02 64
  fe c3 c3 cd 05 f3 c0 91 92 07 01`.trim().split(/\s+/).map((h) => parseInt(h, 16)));

test("the worked example of docs/protocol.md decodes as documented", () => {
  const batch = decodeTelemetry(EXAMPLE, CAT);
  assert.equal(batch.seq, 17);
  assert.equal(batch.compression, "none");
  assert.deepEqual(batch.points.map((p) => [p.point, p.ts, p.value, p.quality]), [
    ["temperature", 1764032400000, 23.4, undefined], ["humidity", 1764032400000, 61.2, undefined],
    ["lamp_on", 1764032400250, true, undefined], ["power", 1764032400250, 152.3, undefined],
    ["temperature", 1764032405000, 23.5, undefined], ["humidity", 1764032405000, 61, undefined],
    ["lamp_on", 1764032405250, true, undefined], ["power", 1764032405250, null, "timeout"]]);
  assert.deepEqual(readBatchInfo(EXAMPLE), { version: 1, compression: "none",
    catalogueEpoch: 42, catalogueVersion: 1, seq: 17, baseTs: 1764032400000, points: 8 });
});

test("batch errors name the problem", () => {
  const cases = [
    [new Uint8Array(0), /truncated batch: 0 bytes/],
    [new Uint8Array([7, 0, 0x90]), /unknown batch format version 7/],
    [enc.encode('{"ts":1}'), /version 123 \(a JSON text\?\)/],
    [new Uint8Array([1, 4, 0x90]), /unknown flags 0x04/],
    [new Uint8Array([1, 3, 0x90]), /unknown compression id 3/],
    [new Uint8Array([1, 2, ...enc.encode("garbage")]), /zstd: corrupt/],
    [new Uint8Array([1, 1, ...enc.encode("garbage")]), /zlib: corrupt/],
    [new Uint8Array([1, 0, 0xc1]), /msgpack/],
    [new Uint8Array([...EXAMPLE, 0]), /trailing bytes/],
    [new Uint8Array([1, 0, 0x93, 1, 2, 3]), /expected an array of 11 fields/],
  ];
  for (const [payload, message] of cases) {
    assert.throws(() => decodeTelemetry(/** @type {Uint8Array} */ (payload), CAT),
      (err) => err instanceof DecodeError && /** @type {RegExp} */ (message).test(err.message),
      String(message));
  }
  for (let cut = 3; cut < EXAMPLE.length; cut += 7) {
    assert.throws(() => decodeTelemetry(EXAMPLE.subarray(0, cut), CAT), DecodeError);
  }
  assert.throws(() => decodeTelemetry(/** @type {any} */ ("text"), CAT),
    /a batch must be bytes.*got string/);
});

test("a zip bomb is refused before it fills the memory", () => {
  const bomb = zlibSync(new Uint8Array(17 * 1024 * 1024), { level: 9 });
  assert.throws(() => decodeTelemetry(new Uint8Array([1, 1, ...bomb]), CAT),
    /zlib: the body is larger than 16777216 bytes/);
});

test("a missing, rebuilt or short catalogue is a CatalogueMismatch", () => {
  assert.throws(() => decodeTelemetry(EXAMPLE, null),
    (err) => err instanceof CatalogueMismatch && /needs catalogue epoch 42 version 1/.test(err.message));
  assert.throws(() => decodeTelemetry(EXAMPLE, { ...CAT, epoch: 1 }),
    /encoded with catalogue epoch 42, the known catalogue has epoch 1/);
  assert.throws(() => decodeTelemetry(EXAMPLE, { ...CAT, points: CAT.points.slice(0, 2) }),
    /uses point id 2, not in the known catalogue/);
});

test("catalogues, events, state and responses: errors naming the field", () => {
  assert.throws(() => parseCatalogue({ epoch: -1, version: 0, points: [] }), /epoch must be/);
  assert.throws(() => parseCatalogue({ epoch: 1, version: 0, points: [["d"]] }), /points\[0\]/);
  assert.throws(() => parseCatalogue({ epoch: 1, version: 0,
    points: [["d", "p", "int", null, 40]] }), /decimals must be null or 0..12/);
  assert.throws(() => decodeEvent(new Uint8Array([0xff])), /event: not UTF-8/);
  assert.throws(() => decodeEvent(enc.encode('{"ts":"1","type":"x"}')),
    /event: ts must be integer milliseconds, got '1'/);
  assert.throws(() => decodeEvent(enc.encode('{"ts":1.0,"type":"x"}')), /got 1\.0/);
  assert.throws(() => decodeEvent(enc.encode('\ufeff{"ts":1,"type":"x"}')), /BOM/);
  assert.throws(() => decodeState(enc.encode('{"online":"yes"}')), /online must be true or false/);
  assert.throws(() => decodeState(enc.encode('{"online":true,"detail":{"catalogue":{"epoch":1}}}')),
    /catalogue: version must be/);
  assert.throws(() => decodeResponse(new Uint8Array([0xc1])), /neither JSON .* nor valid msgpack/);
  // extension types are not part of the format
  assert.throws(() => decodeResponse(new Uint8Array([0x81, 0xa1, 0x78, 0xd4, 0x05, 0x00])),
    /extension type 5/);
});

test("JSON is read as Python reads it: big integers exact, NaN accepted, __proto__ an own key", () => {
  const ev = decodeEvent(enc.encode('{"ts": 18446744073709551615, "type": "x", "detail": ' +
    '{"n": -9007199254740993, "f": NaN, "i": -Infinity, "z": -0.0, "o": 1.0, ' +
    '"__proto__": {"polluted": true}, "s": "\\ud83d\\ude00 \\u00e9"}}'));
  assert.equal(ev.ts, 18446744073709551615n);
  assert.equal(ev.detail.n, -9007199254740993n);
  assert.ok(Number.isNaN(ev.detail.f));
  assert.equal(ev.detail.i, -Infinity);
  assert.ok(Object.is(ev.detail.z, -0));
  assert.ok(Object.is(ev.detail.o, 1));
  assert.equal(ev.detail.s, "😀 é");
  assert.equal(/** @type {any} */ ({}).polluted, undefined);
  assert.deepEqual(Object.getOwnPropertyDescriptor(ev.detail, "__proto__")?.value,
    { polluted: true });
  assert.equal(formatLine(ev.detail), '{"n":-9007199254740993,"f":null,"i":null,"z":0,"o":1,' +
    '"__proto__":{"polluted":true},"s":"😀 é"}');
});

test("topics: the same recognition as the Python tools", () => {
  assert.deepEqual(parseTopic("city/v1/east/gw-7/cmd/res"),
    { kind: "cmd/res", prefix: "city/v1/east", gateway: "gw-7", group: null });
  assert.deepEqual(parseTopic("city/v1/groups/d1/cmd/req", "city/v1"),
    { kind: "groups/cmd/req", prefix: "city/v1", gateway: null, group: "d1" });
  assert.throws(() => parseTopic("other/gw/telemetry", "city/v1"), /not under the prefix/);
  assert.throws(() => parseTopic("city/v1/gw/metrics"), /not a gateway topic/);
});

test("decodeCapture reads the lines platform listen --raw writes", () => {
  const dec = new Decoder();
  const line = (/** @type {string} */ topic, /** @type {Uint8Array} */ payload) =>
    JSON.stringify({ topic, payload_b64: Buffer.from(payload).toString("base64") });
  const birth = enc.encode(JSON.stringify({ online: true, detail: { catalogue: CAT } }));
  assert.equal(dec.decodeCapture(line("c/gw1/state", birth)).kind, "state");
  assert.equal(/** @type {any} */ (dec.decodeCapture(line("c/gw1/telemetry", EXAMPLE))).seq, 17);
  assert.match(/** @type {any} */ (dec.decodeCapture("{oops")).error, /not JSON/);
  assert.match(/** @type {any} */ (dec.decodeCapture('{"topic": "t"}')).error, /payload_b64/);
  assert.match(/** @type {any} */ (dec.decodeCapture('{"topic": "t", "payload_b64": "***"}')).error,
    /not valid base64/);
  assert.throws(() => base64Bytes("YQ"), /Incorrect padding/);
});

/** A small deterministic generator (the fuzz below must be the same on every run). */
function rng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test("the Decoder never throws: random and mutated payloads on every topic", () => {
  const rand = rng(14);
  const dec = new Decoder({ prefix: "p" });
  dec.setCatalogue("gw", CAT);
  const topics = ["p/gw/telemetry", "p/gw/events", "p/gw/state", "p/gw/cmd/res", "p/gw/cmd/req",
    "p/groups/g/cmd/req", "p/x", "#"];
  const seeds = [EXAMPLE, enc.encode('{"id":"c","ok":true,"result":{"a":[1,2.5,null]}}'),
    enc.encode(JSON.stringify({ online: true, detail: { catalogue: CAT } })),
    enc.encode('{"ts":1,"type":"x","device":null,"detail":{}}')];
  let errors = 0;
  for (let i = 0; i < 4000; i++) {
    let buf;
    if (i % 4 === 0) {
      buf = new Uint8Array(Math.floor(rand() * 64)).map(() => Math.floor(rand() * 256));
    } else {
      buf = Uint8Array.from(seeds[i % seeds.length]);
      for (let k = 0; k < 1 + Math.floor(rand() * 3); k++) {
        const at = Math.floor(rand() * buf.length);
        const r = rand();
        if (r < 0.5) buf[at] ^= 1 << Math.floor(rand() * 8);
        else if (r < 0.8) buf[at] = Math.floor(rand() * 256);
        else buf = buf.subarray(0, at);
      }
    }
    if (i % 2 === 0 && buf.length > 2 && buf[0] === 1) buf[1] = Math.floor(rand() * 3);
    for (const topic of topics) {
      const out = dec.decode(topic, buf);
      assert.ok(["telemetry", "event", "state", "response", "command", "error"].includes(out.kind));
      assert.ok("gateway" in out);
      JSON.parse(formatLine(out));
      if (out.kind === "error") errors++;
      dec.feed(topic, buf);
    }
  }
  assert.ok(errors > 1000, "the fuzz should mostly make bad payloads");
  // and anything that is not bytes at all
  for (const junk of [null, undefined, "text", 42, {}, [1, 2]]) {
    assert.equal(dec.decode("p/gw/telemetry", /** @type {any} */ (junk)).kind, "error");
    assert.equal(dec.decode("p/gw/events", /** @type {any} */ (junk)).kind, "error");
  }
});

test("zlib: bytes between the stream and its checksum are refused (as zlib does)", () => {
  const body = new Uint8Array([0x9b, ...new Array(11).fill(0x90)]);   // an array of 11 arrays
  const z = zlibSync(body, { level: 9 });
  const sneaky = new Uint8Array([...z.subarray(0, z.length - 4), 0x00, ...z.subarray(z.length - 4)]);
  assert.throws(() => decodeTelemetry(new Uint8Array([1, 1, ...sneaky]), CAT),
    /zlib: trailing bytes after the compressed body/);
  assert.throws(() => decodeTelemetry(new Uint8Array([1, 1, ...z, 0]), CAT), /zlib: corrupt data/);
});

test("msgpack bin is bytes, str is strict UTF-8: a later field of the batch is ignored", () => {
  // docs/protocol.md section 2: fields after the eleventh are for later versions, ignored.
  // Bytes there that are not UTF-8 (bin) must not make the batch fail, as in Python; an
  // invalid str is refused by both.
  const withField = (/** @type {number[]} */ extra) =>
    new Uint8Array([1, 0, 0x9c, ...EXAMPLE.subarray(3), ...extra]);
  const batch = decodeTelemetry(withField([0xc4, 0x02, 0xff, 0xfe]), CAT);
  assert.equal(batch.points.length, 8);
  assert.throws(() => decodeTelemetry(withField([0xa2, 0xff, 0xfe]), CAT),
    (err) => err instanceof DecodeError && /not valid UTF-8/.test(err.message));
  assert.equal(decodeTelemetry(withField([0xa2, 0xc3, 0xa9]), CAT).seq, 17);   // "é"
  // a response value that is bin comes back as bytes (Python: bytes, printed as $bytes)
  const resp = decodeResponse(new Uint8Array([0x83, 0xa2, 0x69, 0x64, 0xa1, 0x78, 0xa2, 0x6f,
    0x6b, 0xc3, 0xa6, 0x72, 0x65, 0x73, 0x75, 0x6c, 0x74, 0x81, 0xa1, 0x76,
    0xc4, 0x02, 0xff, 0x00]));
  assert.deepEqual(/** @type {any} */ (resp).result.v, new Uint8Array([0xff, 0x00]));
  // printed as `edgegw platform listen --json` prints it
  const line = formatLine(resp);
  assert.ok(line.includes('"result":{"v":{"$bytes":"/wA="}}'), line);
});
