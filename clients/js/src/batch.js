// Telemetry batches (docs/protocol.md, section 2): decoding, with every check the Python
// decoder makes, in the same order, so both refuse the same payloads for the same reasons.

import { decompressZstd, inflateZlib } from "./compression.js";
import { isCatalogue, MAX_DECIMALS, parseCatalogue } from "./catalogue.js";
import { CatalogueMismatch, DecodeError } from "./errors.js";
import { ExtData, unpack } from "./msgpack.js";
import { addInt, asInt, cmpInt, divPow10, isInt } from "./numbers.js";
import { repr } from "./repr.js";

export const FORMAT_VERSION = 1;
const BODY_FIELDS = 11;
const COMPRESSION = /** @type {const} */ (["none", "zlib", "zstd"]);
const QUALITY = /** @type {Record<number, string>} */ ({
  1: "timeout", 2: "exception", 3: "bad_data", 4: "unavailable",
});
const RAW = 0;
const INT = 1;
const DEC = 16;
const F32 = 32;

/** @param {unknown} payload @returns {Uint8Array} */
export function asBytes(payload, what = "a batch") {
  if (payload instanceof Uint8Array) return payload;        // Node's Buffer is one too
  if (payload instanceof ArrayBuffer) return new Uint8Array(payload);
  if (ArrayBuffer.isView(payload)) {
    return new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength);
  }
  const type = payload === null ? "null" : typeof payload;
  throw new DecodeError(`${what} must be bytes (Uint8Array, Buffer or ArrayBuffer), got ${type}`);
}

/** @param {unknown} payload */
function open(payload) {
  const data = asBytes(payload);
  if (data.length < 3) {
    throw new DecodeError(`truncated batch: ${data.length} bytes, a batch has at least 3`);
  }
  const version = data[0];
  const flags = data[1];
  if (version !== FORMAT_VERSION) {
    const hint = version === 0x7b || version === 0x5b ? " (a JSON text?)" : "";
    throw new DecodeError(`unknown batch format version ${version}${hint}: this decoder ` +
      `reads version ${FORMAT_VERSION}`);
  }
  if (flags & 0xfc) {
    throw new DecodeError(`unknown flags 0x${flags.toString(16).padStart(2, "0")} (bits 2-7 ` +
      "must be zero in version 1)");
  }
  if ((flags & 3) === 3) throw new DecodeError("unknown compression id 3 (0 none, 1 zlib, 2 zstd)");
  const comp = COMPRESSION[flags & 3];
  const packed = data.subarray(2);
  const body = comp === "zstd" ? decompressZstd(packed) : comp === "zlib" ? inflateZlib(packed)
    : packed;
  let obj;
  try {
    obj = unpack(body);
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    if (/^Extra /.test(msg)) {
      throw new DecodeError("corrupt batch body: trailing bytes after the msgpack array");
    }
    throw new DecodeError(`corrupt or truncated batch body (msgpack: ${msg})`);
  }
  if (!Array.isArray(obj) || obj.length < BODY_FIELDS) {
    throw new DecodeError(`corrupt batch body: expected an array of ${BODY_FIELDS} fields`);
  }
  return { comp, obj };
}

/** @param {unknown} obj @param {string} name @returns {Array<number | bigint>} */
function ints(obj, name) {
  if (!Array.isArray(obj) || !obj.every(isInt)) {
    throw new DecodeError(`corrupt batch body: \`${name}\` must be a list of integers`);
  }
  return obj.map(asInt);
}

/** @param {unknown[]} obj */
function header(obj) {
  const [epoch, version, seq, baseTs] = obj;
  for (const [name, v] of /** @type {const} */ ([["epoch", epoch], ["catalogue version", version],
    ["seq", seq], ["base_ts", baseTs]])) {
    if (!isInt(v)) {
      throw new DecodeError(`corrupt batch body: ${name} must be an integer, got ${repr(v)}`);
    }
  }
  return /** @type {Array<number | bigint>} */ ([epoch, version, seq, baseTs]).map(asInt);
}

/**
 * A batch's header without a catalogue: its seq, the catalogue it needs, its point count.
 * @param {Uint8Array | ArrayBuffer | ArrayBufferView} payload
 * @returns {import("./index.js").BatchInfo}
 */
export function readBatchInfo(payload) {
  const { comp, obj } = open(payload);
  const [epoch, version, seq, baseTs] = header(obj);
  const times = obj[4];
  const ncols = ints(obj[5], "ncols");
  const ids = ints(obj[6], "ids");
  if (!Array.isArray(times) || times.length !== ncols.length) {
    throw new DecodeError("corrupt batch body: `times` and `ncols` differ in length");
  }
  let sum = 0n;
  for (const n of ncols) sum += BigInt(n);
  if (ncols.some((n) => n < 1) || sum !== BigInt(ids.length)) {
    throw new DecodeError("corrupt batch body: `ncols` does not match the number of columns");
  }
  let n = 0;
  for (let g = 0; g < times.length; g++) {
    if (!Array.isArray(times[g])) {
      throw new DecodeError("corrupt batch body: each time vector must be a list");
    }
    n += times[g].length * Number(ncols[g]);
  }
  return { version: FORMAT_VERSION, compression: comp, catalogueEpoch: epoch,
    catalogueVersion: version, seq, baseTs, points: n };
}

/**
 * Decode a telemetry batch with the sending gateway's catalogue (from its birth message).
 * Points come sorted by timestamp, then point id; `quality` is there only when not good.
 * Throws CatalogueMismatch when the catalogue is missing, of another epoch or lacks an id the
 * batch uses, and DecodeError for anything corrupt or truncated.
 * @param {Uint8Array | ArrayBuffer | ArrayBufferView} payload
 * @param {import("./index.js").Catalogue | object | null | undefined} catalogue
 * @returns {import("./index.js").Batch}
 */
export function decodeTelemetry(payload, catalogue) {
  const { comp, obj } = open(payload);
  const [epoch, catVersion, seq, baseTs] = header(obj);
  if (catalogue === null || catalogue === undefined) {
    throw new CatalogueMismatch(`batch seq ${seq} needs catalogue epoch ${epoch} version ` +
      `${catVersion}, and no catalogue is known yet (it comes with the gateway's state message)`);
  }
  const cat = isCatalogue(catalogue) ? catalogue : parseCatalogue(catalogue);
  if (cat.epoch !== epoch) {
    throw new CatalogueMismatch(`batch seq ${seq} was encoded with catalogue epoch ${epoch}, ` +
      `the known catalogue has epoch ${cat.epoch} (the gateway rebuilt its catalogue: wait for ` +
      "its state message)");
  }
  const timesObj = obj[4];
  const ncols = ints(obj[5], "ncols");
  const ids = ints(obj[6], "ids");
  const codes = ints(obj[7], "codes");
  const refs = ints(obj[8], "refs");
  const values = obj[9];
  const qualityObj = obj[10];
  if (!Array.isArray(timesObj) || timesObj.length !== ncols.length) {
    throw new DecodeError("corrupt batch body: `times` and `ncols` differ in length");
  }
  if (ncols.some((n) => n < 1)) throw new DecodeError("corrupt batch body: a time group has no column");
  let nCols = 0n;
  for (const n of ncols) nCols += BigInt(n);
  if (!(BigInt(ids.length) === nCols && BigInt(codes.length) === nCols &&
        BigInt(refs.length) === nCols)) {
    throw new DecodeError(`corrupt batch body: ${nCols} columns but ${ids.length} ids, ` +
      `${codes.length} codes and ${refs.length} refs`);
  }
  if (!Array.isArray(values)) throw new DecodeError("corrupt batch body: `values` must be a list");

  /** @type {Array<Array<number | bigint>>} */
  const tvecs = [];
  let t = baseTs;
  for (const tv of timesObj) {
    const d = ints(tv, "times");
    if (!d.length) throw new DecodeError("corrupt batch body: an empty time vector");
    t = addInt(t, d[0]);
    const vec = [t];
    let cur = t;
    for (let k = 1; k < d.length; k++) {
      cur = addInt(cur, d[k]);
      vec.push(cur);
    }
    tvecs.push(vec);
  }
  let expected = 0;
  for (let g = 0; g < tvecs.length; g++) expected += tvecs[g].length * Number(ncols[g]);
  if (values.length !== expected) {
    throw new DecodeError(`corrupt batch body: ${expected} values expected, ${values.length} found`);
  }

  /** @type {Map<number, string>} */
  const qual = new Map();
  if (qualityObj !== null) {
    if (!Array.isArray(qualityObj)) throw new DecodeError("corrupt batch body: `quality` must be a list");
    for (const pair of qualityObj) {
      if (!Array.isArray(pair) || pair.length !== 2 || !isInt(pair[0]) || !(pair[0] >= 0) ||
          !(pair[0] < expected) || !isInt(pair[1]) || !(Number(pair[1]) in QUALITY) ||
          typeof pair[1] === "bigint") {
        throw new DecodeError(`corrupt batch body: bad quality entry ${repr(pair)}`);
      }
      qual.set(Number(pair[0]), QUALITY[/** @type {number} */ (pair[1])]);
    }
  }

  const nKnown = cat.points.length;
  /** @type {Array<[number | bigint, number, number, unknown]>} */
  const rows = [];
  /** @type {Array<number | bigint | null>} */
  const firsts = [];
  /** @type {number | bigint} */
  let pid = 0;
  let pos = 0;
  let col = 0;
  for (let g = 0; g < tvecs.length; g++) {
    const tvec = tvecs[g];
    const n = tvec.length;
    for (let c = 0; c < ncols[g]; c++) {
      pid = addInt(pid, ids[col]);
      if (!(pid >= 0 && pid < nKnown)) {
        throw new CatalogueMismatch(`batch seq ${seq} uses point id ${pid}, not in the known ` +
          `catalogue (epoch ${epoch} version ${cat.version}; the batch needs version ` +
          `${catVersion})`);
      }
      const decoded = decodeColumn(codes[col], refs[col], col, values.slice(pos, pos + n), firsts);
      for (let k = 0; k < n; k++) rows.push([tvec[k], /** @type {number} */ (pid), pos + k, decoded[k]]);
      pos += n;
      col++;
    }
  }
  rows.sort((a, b) => cmpInt(a[0], b[0]) || a[1] - b[1] || a[2] - b[2]);
  const points = rows.map(([ts, p, at, value]) => {
    const def = cat.points[p];
    /** @type {import("./index.js").Point} */
    const out = { device: def.device, point: def.point, ts, value: /** @type {any} */ (value) };
    const q = qual.get(at);
    if (q !== undefined) out.quality = /** @type {any} */ (q);
    return out;
  });
  return { seq, baseTs, catalogueEpoch: epoch, catalogueVersion: catVersion, compression: comp,
    points };
}

/**
 * @param {number | bigint} code @param {number | bigint} ref @param {number} col
 * @param {unknown[]} chunk @param {Array<number | bigint | null>} firsts
 * @returns {unknown[]}
 */
function decodeColumn(code, ref, col, chunk, firsts) {
  if (code === RAW) {
    if (ref !== 0) throw new DecodeError(`corrupt batch body: raw column ${col} has a reference`);
    for (const v of chunk) {
      if (v !== null && typeof v !== "boolean" && typeof v !== "number" &&
          typeof v !== "bigint" && typeof v !== "string") {
        throw new DecodeError("corrupt batch body: unsupported value type " + typeName(v));
      }
    }
    firsts.push(null);
    return chunk;
  }
  /** @type {number | null} */
  let d;
  let f32 = false;
  if (code === INT) d = null;
  else if (code >= DEC && code <= DEC + MAX_DECIMALS) d = Number(code) - DEC;
  else if (code >= F32 && code <= F32 + MAX_DECIMALS) {
    d = Number(code) - F32;
    f32 = true;
  } else throw new DecodeError(`corrupt batch body: unknown column code ${code}`);
  if (!chunk.every((v) => v === null || isInt(v))) {
    throw new DecodeError(`corrupt batch body: column ${col} must hold integers or nil`);
  }
  const present = /** @type {Array<number | bigint>} */ (chunk.filter((v) => v !== null))
    .map(asInt);
  if (!present.length) throw new DecodeError(`corrupt batch body: numeric column ${col} has no value`);
  let head = present[0];
  if (ref !== 0) {
    if (!(ref > 0 && ref <= col)) {
      throw new DecodeError(`corrupt batch body: column ${col} refers to column ${col - Number(ref)}`);
    }
    const base = firsts[col - Number(ref)];
    if (base === null) {
      throw new DecodeError(`corrupt batch body: column ${col} refers to a raw column ` +
        `${col - Number(ref)}`);
    }
    head = addInt(head, base);
  }
  firsts.push(head);
  /** @type {unknown[]} */
  const out = [head];
  let cur = head;
  for (let k = 1; k < present.length; k++) {
    cur = addInt(cur, present[k]);
    out.push(cur);
  }
  if (d !== null) {
    for (let k = 0; k < out.length; k++) {
      const x = divPow10(/** @type {number | bigint} */ (out[k]), d);
      out[k] = f32 ? Math.fround(x) : x;
    }
  }
  if (present.length === chunk.length) return out;
  let k = 0;
  return chunk.map((v) => (v === null ? null : out[k++]));
}

/** @param {unknown} v */
function typeName(v) {
  if (v instanceof ExtData) return "ExtType";
  if (Array.isArray(v)) return "list";
  if (v instanceof Uint8Array) return "bytes";
  return typeof v === "object" ? "dict" : typeof v;
}
