// Command encoding (and the decoding of requests and responses). The commands encoded here are
// also written to $EDGEGW_JS_OUT/commands.jsonl when it is set: tests/test_js_client.py then
// checks that the Python command parser reads each as meant.

import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { decode as unpackRaw } from "@msgpack/msgpack";
import {
  Decoder, EncodeError, decodeRequest, decodeResponse, encodeCommand, topicsFor,
} from "../src/index.js";
import { toExact } from "./exact.js";

/** Commands over the whole range the gateway takes: every command name of DESIGN.md 4.5,
 * ids of each kind, unicode, nested args, integers beyond 2^53, floats, negative zero. */
const COMMANDS = [
  { id: "c-1", cmd: "ping" },
  { id: "c-2", cmd: "set_override", args: { group: "main-street", level: 40, duration_s: 3600,
    priority: 50 } },
  { id: 7, cmd: "clear_override", args: { group: "*" } },
  { id: null, cmd: "get_state", args: {} },
  { id: "ünï-çødé ✓", cmd: "write_point", args: { device: "lamp-1", point: "dim_level",
    value: 12.5 } },
  { id: 2n ** 63n - 1n, cmd: "sync_time", args: { epoch_ms: 1764032400000 } },
  { id: "c-big", cmd: "write_point", args: { device: "meter-1", point: "counter",
    value: 2n ** 64n - 1n } },
  { id: "c-neg", cmd: "write_point", args: { device: "d", point: "p", value: -(2n ** 63n) } },
  { id: "c-nested", cmd: "set_rules", args: { lighting: { programs: { night: [
    { at: "18:00", level: 100 }, { at: "23:30", level: 0.1 + 0.2 }] }, groups: [] },
  alerts: { rules: [{ name: "flood_alarm", above: -0.5, zero: -0 }] } } },
  { id: "c-undef", cmd: "set_override", args: { group: "g", level: 10, duration_s: undefined } },
];

test("JSON commands: compact UTF-8 JSON starting with '{', read back as meant", () => {
  const bytes = encodeCommand({ id: "c-7", cmd: "set_override",
    args: { group: "main-street", level: 100, duration_s: 3600 } });
  assert.equal(new TextDecoder().decode(bytes),
    '{"id":"c-7","cmd":"set_override","args":{"group":"main-street","level":100,"duration_s":3600}}');
  for (const c of COMMANDS) {
    const raw = encodeCommand(c);
    assert.equal(raw[0], 0x7b);
    const back = decodeRequest(raw);
    assert.equal(back.encoding, "json");
    assert.deepEqual({ id: back.id, cmd: back.cmd, args: back.args },
      { id: c.id ?? null, cmd: c.cmd, args: JSON.parse(JSON.stringify(c.args ?? {},
        (_, v) => (typeof v === "bigint" ? `${v}n` : v)), (_, v) =>
        (typeof v === "string" && /^-?\d+n$/.test(v) ? BigInt(v.slice(0, -1)) : v)) });
  }
});

test("msgpack commands: a map of id, cmd, args; 64-bit integers exact", () => {
  const raw = encodeCommand({ id: "c-1", cmd: "ping", args: {} }, { format: "msgpack" });
  assert.equal(raw[0], 0x83);                                   // a map of 3
  assert.deepEqual(unpackRaw(raw), { id: "c-1", cmd: "ping", args: {} });
  const big = encodeCommand(COMMANDS[6], { format: "msgpack" });
  const back = decodeRequest(big);
  assert.equal(back.encoding, "msgpack");
  assert.equal(back.args.value, 2n ** 64n - 1n);
  assert.equal(decodeRequest(encodeCommand(COMMANDS[7], { format: "msgpack" })).args.value,
    -(2n ** 63n));
});

test("what JSON or msgpack cannot carry is an EncodeError naming it", () => {
  assert.throws(() => encodeCommand({ id: "x", cmd: "p", args: { level: NaN } }),
    (err) => err instanceof EncodeError && /args\.level is NaN/.test(err.message));
  assert.throws(() => encodeCommand({ id: "x", cmd: "p", args: { at: new Date(0) } }),
    (err) => err instanceof EncodeError && /args\.at is a Date/.test(err.message));
  assert.throws(() => encodeCommand({ id: "x", cmd: "" }), /cmd must be a non-empty string/);
  assert.throws(() => encodeCommand({ id: 1.5, cmd: "p" }), /id must be a string, an integer/);
  assert.throws(() => encodeCommand({ id: "x", cmd: "p", args: [1] }), /args must be a plain/);
  assert.throws(() => encodeCommand({ id: "x", cmd: "p", args: { v: 2n ** 64n } },
    { format: "msgpack" }), /does not fit 64 bits/);
  assert.throws(() => encodeCommand({ id: "x", cmd: "p" }, /** @type {any} */ ({ format: "xml" })),
    /format "xml"/);
  // msgpack carries what JSON cannot
  assert.ok(Number.isNaN(decodeRequest(encodeCommand({ id: "x", cmd: "p", args: { v: NaN } },
    { format: "msgpack" })).args.v));
});

test("responses in both encodings; a group command decoded with its group", () => {
  const json = new TextEncoder().encode(
    '{"id":"c-1","ok":false,"error":{"code":"bad_args","message":"level"}}');
  assert.deepEqual(decodeResponse(json), { id: "c-1", ok: false,
    error: { code: "bad_args", message: "level" }, encoding: "json" });
  // docs/protocol.md section 6's msgpack response, byte for byte
  const hex = "83 a2 69 64 a3 63 2d 31 a2 6f 6b c3 a6 72 65 73 75 6c 74 81 a5 6c 65 76 65 6c 28";
  const packed = new Uint8Array(hex.split(" ").map((h) => parseInt(h, 16)));
  assert.deepEqual(decodeResponse(packed), { id: "c-1", ok: true, result: { level: 40 },
    encoding: "msgpack" });
  const t = topicsFor("city/v1", "gw1");
  const dec = new Decoder({ prefix: "city/v1" });
  assert.deepEqual(dec.decode(t.groupCmdReq("d1"), encodeCommand({ id: "c-2", cmd: "ping" })),
    { kind: "command", gateway: null, group: "d1", id: "c-2", cmd: "ping", args: {},
      encoding: "json" });
  assert.deepEqual(dec.decode(t.cmdRes, packed), { kind: "response", gateway: "gw1",
    id: "c-1", ok: true, result: { level: 40 } });
});

test("the commands for the Python command parser", { skip: process.env.EDGEGW_JS_OUT ? false
  : "EDGEGW_JS_OUT is not set (tests/test_js_client.py reads what this writes)" }, () => {
  const lines = [];
  for (const format of /** @type {const} */ (["json", "msgpack"])) {
    for (const c of COMMANDS) {
      const payload = Buffer.from(encodeCommand(c, { format })).toString("base64");
      const args = Object.fromEntries(Object.entries(c.args ?? {})
        .filter(([, v]) => v !== undefined));
      lines.push(JSON.stringify({ format, payload_b64: payload,
        request: toExact({ id: c.id ?? null, cmd: c.cmd, args }) }));
    }
  }
  writeFileSync(join(/** @type {string} */ (process.env.EDGEGW_JS_OUT), "commands.jsonl"),
    lines.join("\n") + "\n");
  assert.equal(lines.length, 2 * COMMANDS.length);
});

test("msgpack commands refuse what is not plain data", () => {
  assert.throws(() => encodeCommand({ id: "x", cmd: "p", args: { at: new Date(0) } },
    { format: "msgpack" }), /not msgpack-serialisable \(a Date\)/);
  assert.throws(() => encodeCommand({ id: "x", cmd: "p", args: { v: [undefined] } },
    { format: "msgpack" }), /not msgpack-serialisable \(undefined\)/);
});

test("msgpack commands carry every integer as a msgpack integer, whatever its size", () => {
  // with useBigInt64, @msgpack/msgpack alone would write 1764032400000 as a float64, which
  // the gateway refuses where an integer is due (sync_time's epoch_ms)
  for (const v of [0, 127, -32, 2 ** 32 - 1, 2 ** 32, -(2 ** 31) - 1, 1764032400000,
    Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER]) {
    const raw = encodeCommand({ id: "x", cmd: "p", args: { v } }, { format: "msgpack" });
    const at = raw.length - (v >= 0 ? (v < 128 ? 1 : v < 2 ** 32 ? 5 : 9)
      : v >= -32 ? 1 : v >= -(2 ** 31) ? 5 : 9);
    assert.ok(![0xca, 0xcb].includes(raw[at]), `${v} was written as a float`);
    assert.equal(decodeRequest(raw).args.v, v);
  }
  assert.equal(unpackRaw(encodeCommand({ id: "x", cmd: "p", args: { v: 1.5 } },
    { format: "msgpack" })).args.v, 1.5);
});
