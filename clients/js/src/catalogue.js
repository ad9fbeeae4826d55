// The point catalogue (docs/protocol.md, section 3): a point's id is its position in `points`.

import { DecodeError } from "./errors.js";
import { JsonFloat } from "./json.js";
import { isInt } from "./numbers.js";
import { repr } from "./repr.js";

export const MAX_DECIMALS = 12;
const KINDS = ["float", "int", "bool", "str"];
const parsed = new WeakSet();

/** True for a catalogue that parseCatalogue made (as opposed to one in its wire form).
 * @param {unknown} c @returns {c is import("./index.js").Catalogue} */
export function isCatalogue(c) {
  return typeof c === "object" && c !== null && parsed.has(c);
}

/** @param {unknown} x @returns {x is number | bigint} */
function isWireInt(x) {
  return !(x instanceof JsonFloat) && isInt(x);
}

/**
 * Parse a catalogue in its wire form (`detail.catalogue` of a birth message:
 * `{epoch, version, points: [[device, point, kind, unit, decimals], ...]}`), checked as the
 * Python decoder checks it. Returns a frozen catalogue; throws DecodeError naming the bad field.
 * @param {unknown} obj
 * @returns {import("./index.js").Catalogue}
 */
export function parseCatalogue(obj) {
  if (obj === null || typeof obj !== "object" || Array.isArray(obj) || obj instanceof JsonFloat) {
    throw new DecodeError("catalogue: expected an object");
  }
  const o = /** @type {Record<string, unknown>} */ (obj);
  const epoch = o.epoch;
  const version = o.version;
  const rows = o.points;
  if (!isWireInt(epoch) || !(epoch >= 0 && epoch < 2 ** 32)) {
    throw new DecodeError(`catalogue: epoch must be an integer 0..2**32-1, got ${repr(epoch)}`);
  }
  if (!isWireInt(version) || version < 0) {
    throw new DecodeError(`catalogue: version must be an integer >= 0, got ${repr(version)}`);
  }
  if (!Array.isArray(rows)) throw new DecodeError("catalogue: points must be a list");
  const points = [];
  const seen = new Set();
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i];
    const where = `catalogue: points[${i}]`;
    if (!Array.isArray(row) || row.length < 5) {
      throw new DecodeError(`${where}: expected [device, point, kind, unit, decimals]`);
    }
    const [device, point, kind, unit, decimals] = row;
    if (typeof device !== "string" || !device || typeof point !== "string" || !point) {
      throw new DecodeError(`${where}: device and point must be non-empty strings`);
    }
    if (typeof kind !== "string" || !KINDS.includes(kind)) {
      throw new DecodeError(`${where}: kind ${repr(kind)} is not one of ${KINDS.join(", ")}`);
    }
    if (unit !== null && typeof unit !== "string") {
      throw new DecodeError(`${where}: unit must be a string or null`);
    }
    if (decimals !== null &&
        (!isWireInt(decimals) || !(decimals >= 0 && decimals <= MAX_DECIMALS))) {
      throw new DecodeError(`${where}: decimals must be null or 0..${MAX_DECIMALS}`);
    }
    points.push(Object.freeze({ device, point,
      kind: /** @type {import("./index.js").PointKind} */ (kind), unit,
      decimals: decimals === null ? null : Number(decimals) }));
    seen.add(JSON.stringify([device, point]));
  }
  if (seen.size !== points.length) {
    throw new DecodeError("catalogue: a (device, point) appears twice");
  }
  const cat = Object.freeze({ epoch: Number(epoch), version, points: Object.freeze(points) });
  parsed.add(cat);
  return cat;
}

/** The wire form of a catalogue (what a birth message carries).
 * @param {import("./index.js").Catalogue} cat */
export function catalogueToWire(cat) {
  return {
    epoch: cat.epoch,
    version: cat.version,
    points: cat.points.map((p) => [p.device, p.point, p.kind, p.unit, p.decimals]),
  };
}
