// Decode Sparkplug B payloads with Eclipse Tahu's JavaScript library (an independent reader
// for tests/test_sparkplug.py), as a host application does: the datatypes declared by each
// node's and device's births are applied to the aliases of the data messages after them.
// stdin: one {"topic", "payload_b64"} per line, in arrival order; stdout: one
// {"topic", "payload"} per line, 64-bit integers as {"long": "<decimal>"}.
"use strict";
const readline = require("node:readline");
const sparkplug = require("sparkplug-payload").get("spBv1.0");
const Proto = require("sparkplug-payload/lib/sparkplugPayloadProto").org.eclipse.tahu.protobuf;

const types = new Map();            // "group/node[/device]" -> Map(alias -> datatype)

function decode(topic, buf) {
  const [, group, verb, node, device] = topic.split("/");
  const key = device ? `${group}/${node}/${device}` : `${group}/${node}`;
  if (verb === "NBIRTH" || verb === "DBIRTH") {
    const map = new Map();
    for (const m of Proto.Payload.decode(buf).metrics) {
      if (m.alias !== undefined && m.alias !== null) map.set(String(m.alias), m.datatype);
    }
    types.set(key, map);
  } else if (verb === "NDATA" || verb === "DDATA") {
    const raw = Proto.Payload.decode(buf);
    const map = types.get(key) || new Map();
    for (const m of raw.metrics) {
      if (!m.datatype && map.has(String(m.alias))) m.datatype = map.get(String(m.alias));
    }
    buf = Proto.Payload.encode(raw).finish();
  }
  return sparkplug.decodePayload(buf);
}

function plain(value) {
  if (value === null || value === undefined) return value;
  if (typeof value === "object" && typeof value.toString === "function" &&
      value.constructor && value.constructor.name === "Long") {
    return { long: value.toString() };
  }
  if (typeof value === "number" && !Number.isFinite(value)) return { float: String(value) };
  if (Array.isArray(value)) return value.map(plain);
  if (typeof value === "object") {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = plain(v);
    return out;
  }
  return value;
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  if (!line.trim()) return;
  const { topic, payload_b64 } = JSON.parse(line);
  let out;
  try {
    out = { topic, payload: plain(decode(topic, Buffer.from(payload_b64, "base64"))) };
  } catch (err) {
    out = { topic, error: String(err) };
  }
  process.stdout.write(JSON.stringify(out) + "\n");
});
