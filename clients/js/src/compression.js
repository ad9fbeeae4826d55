// The batch body's compression (docs/protocol.md, section 2): none, zlib (RFC 1950) through
// fflate, zstd (one standard frame) through fzstd. Checked as the Python decoder checks: a
// body larger than 16 MiB is refused (zip bombs), a zlib stream must be whole, with its
// checksum and nothing after it; a zstd frame's header is read here (content size, window,
// no dictionary), only the first frame counts, and its content checksum is verified.

import { Inflate } from "fflate";
import { Decompress } from "fzstd";
import { DecodeError } from "./errors.js";

export const MAX_BODY_BYTES = 16 * 1024 * 1024;

/** @param {Uint8Array[]} chunks @param {number} total */
function concat(chunks, total) {
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/** @param {unknown} err */
function why(err) {
  return err instanceof Error ? err.message : String(err);
}

// ------------------------------------------------------------------------------------ zlib
/** @param {Uint8Array} data */
function adler32(data) {
  let a = 1;
  let b = 0;
  for (let i = 0; i < data.length;) {
    const end = Math.min(i + 3800, data.length);     // sums stay below 2^31 between reductions
    for (; i < end; i++) {
      a += data[i];
      b += a;
    }
    a %= 65521;
    b %= 65521;
  }
  return ((b << 16) | a) >>> 0;
}

/** @param {Uint8Array} data */
export function inflateZlib(data) {
  if (data.length < 2) throw new DecodeError("zlib: truncated data");
  const cmf = data[0];
  const flg = data[1];
  if ((cmf & 15) !== 8 || cmf >> 4 > 7 || ((cmf << 8) | flg) % 31 !== 0) {
    throw new DecodeError("zlib: corrupt data (incorrect header check)");
  }
  if (flg & 32) throw new DecodeError("zlib: corrupt data (a preset dictionary is needed)");
  if (data.length < 6) throw new DecodeError("zlib: truncated data");
  const deflated = data.subarray(2, data.length - 4);
  const out = inflate(deflated);
  const t = data.length - 4;
  const sum = ((data[t] << 24) | (data[t + 1] << 16) | (data[t + 2] << 8) | data[t + 3]) >>> 0;
  if (sum !== adler32(out)) {
    // a stream followed by stray bytes lands here too: the last 4 bytes are not its checksum
    throw new DecodeError("zlib: corrupt data (incorrect data check, or bytes after the " +
      "stream)");
  }
  // fflate stops at the stream's final block and does not say where that was: bytes between
  // the stream and the checksum would go unnoticed. The stream fills `deflated` exactly when
  // one byte less is not a whole stream any more (its last byte holds its last bits).
  let shorter = true;
  try {
    inflate(deflated.subarray(0, deflated.length - 1));
  } catch {
    shorter = false;
  }
  if (shorter) throw new DecodeError("zlib: trailing bytes after the compressed body");
  return out;
}

/** Raw deflate, at most MAX_BODY_BYTES out. @param {Uint8Array} deflated */
function inflate(deflated) {
  /** @type {Uint8Array[]} */
  const chunks = [];
  let total = 0;
  const inflater = new Inflate((chunk) => {
    total += chunk.length;
    if (total > MAX_BODY_BYTES) {
      throw new DecodeError(`zlib: the body is larger than ${MAX_BODY_BYTES} bytes`);
    }
    chunks.push(chunk);
  });
  try {
    inflater.push(deflated, true);
  } catch (err) {
    if (err instanceof DecodeError) throw err;
    const msg = why(err);
    throw new DecodeError(/EOF/i.test(msg) ? "zlib: truncated data" : `zlib: corrupt data (${msg})`);
  }
  return concat(chunks, total);
}

// ------------------------------------------------------------------------------------ zstd
const MAX_WINDOW = 2 ** 27;     // libzstd's default limit (the Python decoder uses it)

/** Read a zstd frame header and walk its block headers: where the frame ends and what it
 * declares. @param {Uint8Array} d */
function zstdFrame(d) {
  const bad = (/** @type {string} */ what) =>
    new DecodeError(`zstd: corrupt or truncated data (${what})`);
  if (d.length < 5) throw bad("truncated frame header");
  if (d[0] !== 0x28 || d[1] !== 0xb5 || d[2] !== 0x2f || d[3] !== 0xfd) {
    throw bad("unknown frame descriptor");
  }
  const fhd = d[4];
  const fcsFlag = fhd >> 6;
  const single = (fhd >> 5) & 1;
  const checksum = (fhd >> 2) & 1;
  const dictFlag = fhd & 3;
  if (fhd & 8) throw bad("reserved frame header bit set");
  let at = 5;
  let window = 0;
  if (!single) {
    if (at >= d.length) throw bad("truncated frame header");
    const wd = d[at++];
    const base = 2 ** (10 + (wd >> 3));
    window = base + (base / 8) * (wd & 7);
  }
  const dictBytes = [0, 1, 2, 4][dictFlag];
  let dictId = 0;
  for (let k = 0; k < dictBytes; k++) dictId += d[at + k] * 2 ** (8 * k);
  at += dictBytes;
  const fcsBytes = [single ? 1 : 0, 2, 4, 8][fcsFlag];
  if (at + fcsBytes > d.length) throw bad("truncated frame header");
  /** @type {number | null} */
  let size = null;
  if (fcsBytes) {
    size = 0;
    for (let k = 0; k < fcsBytes; k++) size += d[at + k] * 2 ** (8 * k);
    if (fcsBytes === 2) size += 256;
  }
  at += fcsBytes;
  if (size !== null && size > MAX_BODY_BYTES) {
    throw new DecodeError(`zstd: the body is larger than ${MAX_BODY_BYTES} bytes`);
  }
  if (dictId !== 0) throw bad("dictionary mismatch: the frame needs a dictionary");
  if (single) window = size ?? 0;
  if (window > MAX_WINDOW) throw bad("frame requires too much memory for decoding");
  const blockMax = 128 * 1024;
  for (;;) {
    if (at + 3 > d.length) throw bad("truncated block");
    const h = d[at] | (d[at + 1] << 8) | (d[at + 2] << 16);
    const last = h & 1;
    const type = (h >> 1) & 3;
    const len = h >>> 3;
    if (type === 3) throw bad("reserved block type");
    if (type !== 1 && len > blockMax) throw bad("block larger than the block size limit");
    at += 3 + (type === 1 ? 1 : len);
    if (at > d.length) throw bad("truncated block");
    if (last) break;
  }
  if (checksum) {
    if (at + 4 > d.length) throw bad("truncated checksum");
    at += 4;
  }
  return { end: at, size, checksum };
}

/** @param {Uint8Array} data */
export function decompressZstd(data) {
  const frame = zstdFrame(data);
  /** @type {Uint8Array[]} */
  const chunks = [];
  let total = 0;
  const stream = new Decompress((chunk) => {
    total += chunk.length;
    if (total > MAX_BODY_BYTES) {
      throw new DecodeError(`zstd: the body is larger than ${MAX_BODY_BYTES} bytes`);
    }
    chunks.push(chunk);
  });
  try {
    // only the first frame counts (as for the Python decoder): what follows it is ignored
    stream.push(data.subarray(0, frame.end), true);
  } catch (err) {
    if (err instanceof DecodeError) throw err;
    throw new DecodeError(`zstd: corrupt or truncated data (${why(err)})`);
  }
  const out = concat(chunks, total);
  if (frame.size !== null && frame.size !== total) {
    throw new DecodeError(`zstd: corrupt or truncated data (the frame declares ${frame.size} ` +
      `bytes and holds ${total})`);
  }
  if (frame.checksum) {
    const t = frame.end - 4;
    const want = (data[t] | (data[t + 1] << 8) | (data[t + 2] << 16) | (data[t + 3] << 24)) >>> 0;
    if (want !== Number(xxh64(out) & 0xffffffffn)) {
      throw new DecodeError("zstd: corrupt or truncated data (restored data doesn't match " +
        "checksum)");
    }
  }
  return out;
}

// XXH64 with seed 0 (the frame checksum is its low 32 bits). BigInt arithmetic: slow, but only
// frames that carry a checksum (the gateway writes none) need it.
const M = (1n << 64n) - 1n;
const P1 = 11400714785074694791n;
const P2 = 14029467366897019727n;
const P3 = 1609587929392839161n;
const P4 = 9650029242287828579n;
const P5 = 2870177450012600261n;
/** @param {bigint} x @param {bigint} r */
const rotl = (x, r) => ((x << r) | (x >> (64n - r))) & M;
/** @param {bigint} acc @param {bigint} input */
const round = (acc, input) => (rotl((acc + input * P2) & M, 31n) * P1) & M;
/** @param {bigint} acc @param {bigint} val */
const merge = (acc, val) => (((acc ^ round(0n, val)) * P1) & M) + P4 & M;

/** @param {Uint8Array} d @returns {bigint} */
export function xxh64(d) {
  const view = new DataView(d.buffer, d.byteOffset, d.byteLength);
  const n = d.length;
  let i = 0;
  let h;
  if (n >= 32) {
    let v1 = (P1 + P2) & M;
    let v2 = P2;
    let v3 = 0n;
    let v4 = (M + 1n - P1) & M;
    for (; i + 32 <= n; i += 32) {
      v1 = round(v1, view.getBigUint64(i, true));
      v2 = round(v2, view.getBigUint64(i + 8, true));
      v3 = round(v3, view.getBigUint64(i + 16, true));
      v4 = round(v4, view.getBigUint64(i + 24, true));
    }
    h = (rotl(v1, 1n) + rotl(v2, 7n) + rotl(v3, 12n) + rotl(v4, 18n)) & M;
    h = merge(h, v1);
    h = merge(h, v2);
    h = merge(h, v3);
    h = merge(h, v4);
  } else {
    h = P5;
  }
  h = (h + BigInt(n)) & M;
  for (; i + 8 <= n; i += 8) {
    h ^= round(0n, view.getBigUint64(i, true));
    h = (rotl(h, 27n) * P1 + P4) & M;
  }
  if (i + 4 <= n) {
    h ^= (BigInt(view.getUint32(i, true)) * P1) & M;
    h = (rotl(h, 23n) * P2 + P3) & M;
    i += 4;
  }
  for (; i < n; i++) {
    h ^= (BigInt(d[i]) * P5) & M;
    h = (rotl(h, 11n) * P1) & M;
  }
  h ^= h >> 33n;
  h = (h * P2) & M;
  h ^= h >> 29n;
  h = (h * P3) & M;
  h ^= h >> 32n;
  return h;
}
