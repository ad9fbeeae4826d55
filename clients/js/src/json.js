// A strict JSON reader that reads what Python's json.loads reads, and keeps what JSON.parse
// would lose: integers beyond 2^53 come back exact (as BigInt, docs/protocol.md), and the
// decoders can tell an integer literal from a float one (`"ts": 1.0` is refused, as in Python).
// It accepts NaN, Infinity and -Infinity like Python (JSON.parse does not).

import { DecodeError, EncodeError } from "./errors.js";
import { normInt } from "./numbers.js";

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** A float literal whose value is a whole number (`1.0`, `1e3`): a marker kept while the
 * decoders check types, replaced by its number before a message is returned. */
export class JsonFloat {
  /** @param {number} value */
  constructor(value) {
    this.value = value;
  }
}

const MAX_DEPTH = 1000;       // Python's json gives up near its recursion limit too
const MAX_INT_DIGITS = 4300;  // Python's int() refuses longer decimal strings

const ESCAPES = /** @type {Record<string, string>} */ ({
  '"': '"', "\\": "\\", "/": "/", b: "\b", f: "\f", n: "\n", r: "\r", t: "\t",
});

class Reader {
  /** @param {string} s */
  constructor(s) {
    this.s = s;
    this.i = 0;
    this.depth = 0;
    this.marked = false;
  }

  /** @param {string} what @returns {never} */
  fail(what) {
    throw new DecodeError(`${what}: line ${this.line()} column ${this.column()} ` +
      `(char ${this.i})`);
  }

  line() {
    let n = 1;
    for (let k = 0; k < this.i && k < this.s.length; k++) if (this.s.charCodeAt(k) === 10) n++;
    return n;
  }

  column() {
    const nl = this.s.lastIndexOf("\n", this.i - 1);
    return this.i - nl;
  }

  ws() {
    const s = this.s;
    let c = s.charCodeAt(this.i);
    while (c === 32 || c === 9 || c === 10 || c === 13) c = s.charCodeAt(++this.i);
  }

  /** @returns {unknown} */
  value() {
    const s = this.s;
    const c = s[this.i];
    if (c === "{") return this.object();
    if (c === "[") return this.array();
    if (c === '"') return this.string();
    if (c === "n" && s.startsWith("null", this.i)) { this.i += 4; return null; }
    if (c === "t" && s.startsWith("true", this.i)) { this.i += 4; return true; }
    if (c === "f" && s.startsWith("false", this.i)) { this.i += 5; return false; }
    if (c === "N" && s.startsWith("NaN", this.i)) { this.i += 3; return NaN; }
    if (c === "I" && s.startsWith("Infinity", this.i)) { this.i += 8; return Infinity; }
    if (c === "-" && s.startsWith("-Infinity", this.i)) { this.i += 9; return -Infinity; }
    return this.number();
  }

  number() {
    const m = /-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?/y;
    m.lastIndex = this.i;
    const found = m.exec(this.s);
    if (!found) this.fail("Expecting value");
    const text = found[0];
    this.i += text.length;
    if (found[1] === undefined && found[2] === undefined) {
      if (text.replace("-", "").length > MAX_INT_DIGITS) {
        this.fail(`Exceeds the limit (${MAX_INT_DIGITS} digits) for an integer`);
      }
      if (text.length < 16) return Number(text) || 0;            // `-0` is the integer 0
      return normInt(BigInt(text));
    }
    const x = Number(text);
    if (Number.isInteger(x) || Object.is(x, -0)) {
      this.marked = true;
      return new JsonFloat(x);
    }
    return x;
  }

  string() {
    const s = this.s;
    let i = this.i + 1;
    let out = "";
    let start = i;
    for (;;) {
      if (i >= s.length) this.fail("Unterminated string starting at");
      const c = s.charCodeAt(i);
      if (c === 34) break;                                          // "
      if (c < 0x20) { this.i = i; this.fail("Invalid control character at"); }
      if (c !== 92) { i++; continue; }                              // not a backslash
      out += s.slice(start, i);
      const e = s[i + 1];
      if (e === "u") {
        const hex = s.slice(i + 2, i + 6);
        if (!/^[0-9a-fA-F]{4}$/.test(hex)) { this.i = i; this.fail("Invalid \\uXXXX escape"); }
        out += String.fromCharCode(parseInt(hex, 16));   // lone surrogates stay, as in Python
        i += 6;
      } else if (e !== undefined && e in ESCAPES) {
        out += ESCAPES[e];
        i += 2;
      } else {
        this.i = i;
        this.fail(e === undefined ? "Unterminated string starting at" : "Invalid \\escape");
      }
      start = i;
    }
    out += s.slice(start, i);
    this.i = i + 1;
    return out;
  }

  array() {
    if (++this.depth > MAX_DEPTH) this.fail("maximum nesting depth exceeded");
    this.i++;
    /** @type {unknown[]} */
    const out = [];
    this.ws();
    if (this.s[this.i] === "]") { this.i++; this.depth--; return out; }
    for (;;) {
      this.ws();
      out.push(this.value());
      this.ws();
      const c = this.s[this.i++];
      if (c === "]") break;
      if (c !== ",") { this.i--; this.fail("Expecting ',' delimiter"); }
    }
    this.depth--;
    return out;
  }

  object() {
    if (++this.depth > MAX_DEPTH) this.fail("maximum nesting depth exceeded");
    this.i++;
    /** @type {Record<string, unknown>} */
    const out = {};
    this.ws();
    if (this.s[this.i] === "}") { this.i++; this.depth--; return out; }
    for (;;) {
      this.ws();
      if (this.s[this.i] !== '"') this.fail("Expecting property name enclosed in double quotes");
      const key = this.string();
      this.ws();
      if (this.s[this.i] !== ":") this.fail("Expecting ':' delimiter");
      this.i++;
      this.ws();
      setKey(out, key, this.value());
      this.ws();
      const c = this.s[this.i++];
      if (c === "}") break;
      if (c !== ",") { this.i--; this.fail("Expecting ',' delimiter"); }
    }
    this.depth--;
    return out;
  }
}

/** An own property even for `__proto__` (a plain assignment would set the prototype).
 * @param {Record<string, unknown>} obj @param {string} key @param {unknown} value */
export function setKey(obj, key, value) {
  if (key === "__proto__") {
    Object.defineProperty(obj, key, { value, enumerable: true, writable: true,
      configurable: true });
  } else {
    obj[key] = value;
  }
}

/** Parse JSON text; integral float literals come back as JsonFloat markers (see plain()).
 * @param {string} text @returns {{value: unknown, marked: boolean}} */
export function parseMarked(text) {
  if (text.charCodeAt(0) === 0xfeff) {
    throw new DecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig): line 1 column 1 " +
      "(char 0)");
  }
  const r = new Reader(text);
  r.ws();
  const value = r.value();
  r.ws();
  if (r.i !== text.length) r.fail("Extra data");
  return { value, marked: r.marked };
}

/** UTF-8 bytes to text, refusing invalid sequences as Python's decode("utf-8") does.
 * @param {Uint8Array} bytes */
export function utf8Text(bytes) {
  try {
    return utf8.decode(bytes);
  } catch {
    throw new DecodeError("not UTF-8 JSON text");
  }
}

/** Replace JsonFloat markers by their numbers (in place for arrays and objects).
 * @param {unknown} v @returns {unknown} */
export function plain(v) {
  if (v instanceof JsonFloat) return v.value;
  if (Array.isArray(v)) {
    for (let k = 0; k < v.length; k++) v[k] = plain(v[k]);
  } else if (v !== null && typeof v === "object" && !(v instanceof Uint8Array)) {
    const o = /** @type {Record<string, unknown>} */ (v);
    for (const k of Object.keys(o)) o[k] = plain(o[k]);
  }
  return v;
}

/** JSON text to a value, exact for big integers, NaN/Infinity accepted (as Python's json).
 * @param {string} text @returns {unknown} */
export function parseJson(text) {
  const { value, marked } = parseMarked(text);
  return marked ? plain(value) : value;
}

/**
 * Compact JSON as the Python side writes it; BigInts as exact integers; NaN and infinities
 * refused (JSON cannot carry them) or, with `nonFiniteAsNull`, written as null (as
 * `edgegw platform listen` prints them); undefined object properties left out.
 * @param {unknown} v @param {string} what @param {string} path @param {boolean} nonFiniteAsNull
 * @returns {string}
 */
export function stringify(v, what, path = "value", nonFiniteAsNull = false) {
  if (v === null) return "null";
  if (typeof v === "boolean") return v ? "true" : "false";
  if (typeof v === "bigint") return v.toString();
  if (typeof v === "number") {
    if (!Number.isFinite(v)) {
      if (nonFiniteAsNull) return "null";
      throw new EncodeError(`${what}: not JSON-serialisable (${path} is ${v}: JSON has no ` +
        "NaN or infinity)");
    }
    return JSON.stringify(v);
  }
  if (typeof v === "string") return JSON.stringify(v);
  if (Array.isArray(v)) {
    return "[" + v.map((x, k) => {
      if (x === undefined) throw new EncodeError(`${what}: not JSON-serialisable (${path}[${k}] is undefined)`);
      return stringify(x, what, `${path}[${k}]`, nonFiniteAsNull);
    }).join(",") + "]";
  }
  if (v !== null && typeof v === "object" &&
      [Object.prototype, null].includes(Object.getPrototypeOf(v))) {
    const parts = [];
    for (const [k, x] of Object.entries(v)) {
      if (x === undefined) continue;
      parts.push(JSON.stringify(k) + ":" + stringify(x, what, `${path}.${k}`, nonFiniteAsNull));
    }
    return "{" + parts.join(",") + "}";
  }
  if (nonFiniteAsNull && v instanceof Uint8Array) {     // printing msgpack bin, as Python does
    return `{"$bytes":${JSON.stringify(toBase64(v))}}`;
  }
  const type = v instanceof Object ? v.constructor?.name ?? "object" : typeof v;
  throw new EncodeError(`${what}: not JSON-serialisable (${path} is a ${type})`);
}

/** @param {Uint8Array} bytes @returns {string} */
function toBase64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}
