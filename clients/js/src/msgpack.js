// msgpack reading through @msgpack/msgpack, set up to read what the Python side (msgpack with
// raw=False, strict_map_key=True) reads: 64-bit integers exact (BigInt beyond 2^53), strings
// checked as strict UTF-8, bin as bytes (Uint8Array), map keys only strings, extension types
// kept as opaque ExtData.

import { Decoder, ExtData, encode } from "@msgpack/msgpack";
import { DecodeError, EncodeError } from "./errors.js";
import { setKey } from "./json.js";
import { normInt } from "./numbers.js";

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

// Extension types are not part of the format: keep them opaque (no timestamp -> Date), so a
// decoder can refuse them by type instead of the library guessing a meaning.
const opaqueExtensions = {
  /** @param {Uint8Array} data @param {number} type */
  decode: (data, type) => new ExtData(type, data),
  encode: () => null,
};

const options = {
  useBigInt64: true,
  extensionCodec: /** @type {any} */ (opaqueExtensions),
  /** @param {unknown} key */
  mapKeyConverter: (key) => {
    if (typeof key === "string") return key;
    throw new DecodeError(`map key of type ${typeof key} (only strings are keys)`);
  },
};

/**
 * The library decodes strings loosely (invalid UTF-8 becomes U+FFFD); Python refuses them. Its
 * rawStrings option hands strings over as bytes to check, but then bin cannot be told from str.
 * So this decoder's string reader (map keys too) is replaced by a strict one and bin stays
 * bytes. That reader is not public API: it is checked at load (an invalid string must be
 * refused), and without it (another version of the library) null is returned.
 * @returns {Decoder | null}
 */
function strictDecoder() {
  const d = new Decoder(options);
  const inner = /** @type {any} */ (d);
  if (typeof inner.decodeString !== "function" || typeof inner.decodeBinary !== "function") {
    return null;
  }
  /** @param {number} byteLength @param {number} headerOffset */
  inner.decodeString = function (byteLength, headerOffset) {
    const bytes = this.decodeBinary(byteLength, headerOffset);
    try {
      return utf8.decode(bytes);
    } catch {
      throw new DecodeError("a string is not valid UTF-8");
    }
  };
  try {
    d.decode(Uint8Array.of(0xa1, 0xff));          // a 1-byte str that is not UTF-8
  } catch (err) {
    if (err instanceof DecodeError) return d;
  }
  return null;
}

const strict = strictDecoder();
/** msgpack bin arrives as bytes (Uint8Array); false only in the fallback below */
export const BIN_IS_BYTES = strict !== null;
// the fallback: strings as bytes, checked as UTF-8 in normalise(); bin then reads as text too
const decoder = strict ?? new Decoder({ ...options, rawStrings: true });

/**
 * Decode one msgpack value (the whole buffer, no trailing bytes): integers as numbers, or
 * BigInt outside the safe range; strings checked as strict UTF-8; arrays and plain objects;
 * extension types as ExtData, or refused with `refuseExtensions`. Throws DecodeError with the
 * library's reason.
 * @param {Uint8Array} bytes @param {{refuseExtensions?: boolean}} [options]
 * @returns {unknown}
 */
export function unpack(bytes, options = {}) {
  let raw;
  try {
    raw = decoder.decode(bytes);
  } catch (err) {
    if (err instanceof DecodeError) throw err;
    throw new DecodeError(reason(err));
  }
  return normalise(raw, options.refuseExtensions ?? false);
}

/** @param {unknown} err */
function reason(err) {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.length > 200 ? msg.slice(0, 200) + "..." : msg;
}

/** @param {unknown} v @param {boolean} refuseExt @returns {unknown} */
function normalise(v, refuseExt) {
  if (typeof v === "bigint") return normInt(v);
  if (refuseExt && v instanceof ExtData) {
    throw new DecodeError(`msgpack extension type ${v.type} (not used by this format)`);
  }
  if (v instanceof Uint8Array) {
    if (BIN_IS_BYTES) return v;                // msgpack bin (strings are text already)
    try {
      return utf8.decode(v);
    } catch {
      throw new DecodeError("a string is not valid UTF-8");
    }
  }
  if (Array.isArray(v)) {
    for (let k = 0; k < v.length; k++) v[k] = normalise(v[k], refuseExt);
    return v;
  }
  if (v !== null && typeof v === "object" && !(v instanceof ExtData)) {
    const o = /** @type {Record<string, unknown>} */ (v);
    /** @type {Record<string, unknown>} */
    const out = {};
    for (const k of Object.keys(o)) setKey(out, k, normalise(o[k], refuseExt));
    return out;
  }
  return v;
}

export { ExtData };

/**
 * msgpack bytes of a value: numbers that are safe integers as msgpack integers, other numbers
 * as float64, BigInt as 64-bit integers (uint64 when >= 0; refused beyond 64 bits);
 * undefined object properties are left out.
 * @param {unknown} value @param {string} what @returns {Uint8Array}
 */
export function pack(value, what) {
  check(value, what);
  try {
    return encode(wide(value), { useBigInt64: true, ignoreUndefined: true });
  } catch (err) {
    throw new EncodeError(`${what}: not msgpack-serialisable (${reason(err)})`);
  }
}

/** A copy where every safe integer beyond 32 bits is a BigInt: with useBigInt64 the library
 * writes such numbers as float64, which the gateway's strict argument checks refuse as a
 * non-integer (sync_time's epoch_ms). @param {unknown} v @returns {unknown} */
function wide(v) {
  if (typeof v === "number") {
    return Number.isSafeInteger(v) && (v >= 2 ** 32 || v < -(2 ** 31)) ? BigInt(v) : v;
  }
  if (Array.isArray(v)) return v.map(wide);
  if (v !== null && typeof v === "object" && !(v instanceof Uint8Array)) {
    /** @type {Record<string, unknown>} */
    const out = {};
    for (const [k, x] of Object.entries(v)) setKey(out, k, wide(x));
    return out;
  }
  return v;
}

/** @param {unknown} v @param {string} what */
function check(v, what) {
  if (typeof v === "bigint" && (v < -(2n ** 63n) || v >= 2n ** 64n)) {
    throw new EncodeError(`${what}: integer ${v} does not fit 64 bits`);
  }
  if (Array.isArray(v)) v.forEach((x) => check(x, what));
  else if (v !== null && typeof v === "object" && !(v instanceof Uint8Array)) {
    // undefined properties are left out (as JSON.stringify does); anything else not plain
    // data is refused rather than written as the library guesses
    const proto = Object.getPrototypeOf(v);
    if (proto !== Object.prototype && proto !== null) {
      throw new EncodeError(`${what}: not msgpack-serialisable (a ${v.constructor?.name})`);
    }
    for (const x of Object.values(v)) if (x !== undefined) check(x, what);
  } else if (typeof v === "undefined" || typeof v === "function" || typeof v === "symbol") {
    throw new EncodeError(`${what}: not msgpack-serialisable (${typeof v})`);
  }
}
