// Events and the state message (birth and will): JSON (docs/protocol.md, sections 4 and 5).

import { asBytes } from "./batch.js";
import { parseCatalogue } from "./catalogue.js";
import { DecodeError } from "./errors.js";
import { JsonFloat, plain } from "./json.js";
import { isInt } from "./numbers.js";
import { repr } from "./repr.js";
import { isObject, loadAs } from "./wire.js";

const SEVERITIES = ["info", "warning", "alarm", "critical"];

/**
 * Decode an event: `{ts, type, device, detail, severity?}`; throws DecodeError.
 * @param {Uint8Array | ArrayBuffer | ArrayBufferView} payload
 * @returns {import("./index.js").EventMessage}
 */
export function decodeEvent(payload) {
  const { value: obj } = loadAs(asBytes(payload, "an event"), "event", "json");
  if (!isObject(obj)) throw new DecodeError("event: expected a JSON object");
  const { ts, type, device } = obj;
  const detail = Object.hasOwn(obj, "detail") ? obj.detail : {};
  const severity = Object.hasOwn(obj, "severity") ? obj.severity : null;
  if (ts instanceof JsonFloat || !isInt(ts)) {
    throw new DecodeError(`event: ts must be integer milliseconds, got ${repr(ts)}`);
  }
  if (typeof type !== "string" || !type) throw new DecodeError("event: type must be a non-empty string");
  if (device !== null && device !== undefined && typeof device !== "string") {
    throw new DecodeError("event: device must be a string or null");
  }
  if (!isObject(detail)) throw new DecodeError("event: detail must be an object");
  if (severity !== null && !(typeof severity === "string" && SEVERITIES.includes(severity))) {
    throw new DecodeError(`event: severity ${repr(severity)} is not one of ${SEVERITIES.join(", ")}`);
  }
  /** @type {import("./index.js").EventMessage} */
  const ev = { ts, type, device: device ?? null,
    detail: /** @type {any} */ (plain(detail)) };
  if (severity !== null) ev.severity = /** @type {any} */ (severity);
  return ev;
}

/**
 * Decode a state message: the birth (`online: true`, with `detail.catalogue`) or the will.
 * `catalogue` is the parsed catalogue when the message carries one, else null.
 * @param {Uint8Array | ArrayBuffer | ArrayBufferView} payload
 * @returns {import("./index.js").StateMessage}
 */
export function decodeState(payload) {
  const { value: obj } = loadAs(asBytes(payload, "a state message"), "state", "json");
  if (!isObject(obj)) throw new DecodeError("state: expected a JSON object");
  const online = obj.online;
  const detail = Object.hasOwn(obj, "detail") ? obj.detail : {};
  if (typeof online !== "boolean") {
    throw new DecodeError(`state: online must be true or false, got ${repr(online)}`);
  }
  if (!isObject(detail)) throw new DecodeError("state: detail must be an object");
  const wire = detail.catalogue;
  // a bad catalogue is a bad state message: check it now
  const catalogue = wire === null || wire === undefined ? null : parseCatalogue(wire);
  return { online, detail: /** @type {any} */ (plain(detail)), catalogue };
}
