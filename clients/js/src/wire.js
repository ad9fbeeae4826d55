// JSON or msgpack: the one reader of the JSON-or-msgpack messages (events and state are JSON;
// commands and responses either), as the Python side's gateway/codec/wire.py reads them.

import { DecodeError } from "./errors.js";
import { parseMarked, utf8Text } from "./json.js";
import { unpack } from "./msgpack.js";

/** JSON when the payload's first non-blank byte (of the first 64) is `{`, msgpack otherwise.
 * @param {Uint8Array} payload @returns {"json" | "msgpack"} */
export function sniffEncoding(payload) {
  const n = Math.min(payload.length, 64);
  for (let i = 0; i < n; i++) {
    const c = payload[i];
    if (c === 32 || (c >= 9 && c <= 13)) continue;      // what Python's bytes.lstrip() strips
    return c === 0x7b ? "json" : "msgpack";
  }
  return "msgpack";
}

/**
 * The object and the encoding it came in. JSON results keep JsonFloat markers (the caller
 * checks types, then calls plain()). DecodeError says why not, in a few words.
 * @param {Uint8Array} payload @param {"json" | "msgpack" | null} encoding
 * @returns {{value: unknown, encoding: "json" | "msgpack"}}
 */
export function loadAny(payload, encoding = null) {
  const enc = encoding ?? sniffEncoding(payload);
  if (enc === "json") {
    const text = utf8Text(payload);
    try {
      return { value: parseMarked(text).value, encoding: enc };
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      throw new DecodeError(`not valid JSON (${msg.slice(0, 200)})`);
    }
  }
  try {
    return { value: unpack(payload, { refuseExtensions: true }), encoding: enc };
  } catch (err) {
    if (err instanceof DecodeError && err.message.startsWith("msgpack extension type")) throw err;
    throw new DecodeError("neither JSON (starting with '{') nor valid msgpack");
  }
}

/** @param {Uint8Array} payload @param {string} what @param {"json" | null} encoding */
export function loadAs(payload, what, encoding = null) {
  try {
    return loadAny(payload, encoding);
  } catch (err) {
    throw new DecodeError(`${what}: ${err instanceof Error ? err.message : err}`);
  }
}

/** A plain object (not an array, null or a marker). @param {unknown} v
 * @returns {v is Record<string, unknown>} */
export function isObject(v) {
  if (v === null || typeof v !== "object" || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}
