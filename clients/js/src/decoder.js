// The stateful decoder: what a platform (or a Node-RED flow) runs over every message it
// receives. It keeps each gateway's catalogue from its state messages and turns each
// (topic, payload) into one of DESIGN.md 4.4's objects, exactly as `edgegw platform decode`.

import { decodeTelemetry } from "./batch.js";
import { isCatalogue, parseCatalogue } from "./catalogue.js";
import { decodeRequest, decodeResponse } from "./commands.js";
import { CatalogueMismatch, DecodeError } from "./errors.js";
import { parseJson } from "./json.js";
import { decodeEvent, decodeState } from "./messages.js";
import { parseTopic } from "./topics.js";
import { isObject } from "./wire.js";

/** @typedef {import("./index.js").Message} Message */
/** @typedef {import("./index.js").Catalogue} Catalogue */
/** @typedef {Uint8Array | ArrayBuffer | ArrayBufferView} Bytes */

/** @param {string | null} topic @param {string | null} gateway @param {string} reason
 * @returns {import("./index.js").ErrorMessage} */
function error(topic, gateway, reason) {
  return { kind: "error", gateway, topic, error: reason };
}

/** @param {unknown} err */
function reasonOf(err) {
  if (err instanceof DecodeError) return err.message;
  throw err;                       // not a bad payload: a bug, which must not be hidden
}

export class Decoder {
  /** @param {{prefix?: string | null, hold?: number}} [options] */
  constructor(options = {}) {
    this.prefix = options.prefix ? options.prefix.replace(/\/+$/, "") : null;
    this.hold = options.hold ?? 10000;
    /** @type {Map<string, Catalogue>} */
    this.catalogues = new Map();
    /** @type {Array<[string, string, Bytes]>} */
    this.held = [];
  }

  /** Seed a gateway's catalogue (parsed, or in its wire form).
   * @param {string} gateway @param {Catalogue | object} catalogue */
  setCatalogue(gateway, catalogue) {
    this.catalogues.set(gateway, isCatalogue(catalogue) ? catalogue : parseCatalogue(catalogue));
  }

  /** @param {string} gateway @returns {Catalogue | null} */
  catalogue(gateway) {
    return this.catalogues.get(gateway) ?? null;
  }

  /**
   * Exactly one message object for one MQTT message; never throws for a bad payload or topic
   * (the result is then `{kind: "error", gateway, topic, error}` with the reason).
   * @param {string} topic @param {Bytes} payload @returns {Message}
   */
  decode(topic, payload) {
    let ref;
    try {
      ref = parseTopic(topic, this.prefix);
    } catch (err) {
      return error(typeof topic === "string" ? topic : null, null, reasonOf(err));
    }
    try {
      return this.#decode(ref, payload);
    } catch (err) {
      return error(topic, ref.gateway, `${ref.kind}: ${reasonOf(err)}`);
    }
  }

  /**
   * Like decode(), but a telemetry batch whose catalogue has not been seen yet is held back
   * and returned, decoded, right after the state message that brings it (queued messages of
   * a persistent session arrive before the retained state). Returns the messages ready now.
   * @param {string} topic @param {Bytes} payload @returns {Message[]}
   */
  feed(topic, payload) {
    let ref;
    try {
      ref = parseTopic(topic, this.prefix);
    } catch (err) {
      return [error(typeof topic === "string" ? topic : null, null, reasonOf(err))];
    }
    const gw = ref.gateway;
    if (ref.kind === "telemetry" && gw !== null) {
      if (this.held.some((h) => h[0] === gw)) return this.#hold(gw, topic, payload);
      try {
        return [this.#telemetry(gw, payload)];
      } catch (err) {
        if (err instanceof CatalogueMismatch) return this.#hold(gw, topic, payload);
        return [error(topic, gw, `telemetry: ${reasonOf(err)}`)];
      }
    }
    const out = [this.decode(topic, payload)];
    const first = out[0];
    if (ref.kind === "state" && gw !== null && first.kind === "state" &&
        Object.hasOwn(first.detail, "catalogue")) {
      out.push(...this.#release(gw));
    }
    return out;
  }

  /** Give up on every held batch: one error object each, in arrival order. @returns {Message[]} */
  flush() {
    const held = this.held;
    this.held = [];
    return held.map(([, topic, payload]) => this.decode(topic, payload));
  }

  /**
   * Decode one captured line `{"topic": ..., "payload_b64": ...}` (what `edgegw platform
   * listen --raw` writes and `edgegw platform decode` reads).
   * @param {string} line @returns {Message}
   */
  decodeCapture(line) {
    let obj;
    try {
      obj = parseJson(line);
    } catch (err) {
      return error(null, null, `input line is not JSON: ${reasonOf(err)}`);
    }
    if (!isObject(obj) || typeof obj.topic !== "string" || typeof obj.payload_b64 !== "string") {
      const topic = isObject(obj) && typeof obj.topic === "string" ? obj.topic : null;
      return error(topic, null, 'input line must be {"topic": "...", "payload_b64": "..."}');
    }
    let payload;
    try {
      payload = base64Bytes(obj.payload_b64);
    } catch (err) {
      return error(obj.topic, null, `payload_b64 is not valid base64: ${reasonOf(err)}`);
    }
    return this.decode(obj.topic, payload);
  }

  /** @param {string} gateway @param {string} topic @param {Bytes} payload */
  #hold(gateway, topic, payload) {
    this.held.push([gateway, topic, payload]);
    /** @type {Message[]} */
    const out = [];
    while (this.held.length > this.hold) {
      const [, t, p] = /** @type {[string, string, Bytes]} */ (this.held.shift());
      out.push(this.decode(t, p));
    }
    return out;
  }

  /** @param {string} gateway */
  #release(gateway) {
    const mine = this.held.filter((h) => h[0] === gateway);
    if (!mine.length) return [];
    this.held = this.held.filter((h) => h[0] !== gateway);
    return mine.map(([, topic, payload]) => this.decode(topic, payload));
  }

  /** @param {import("./index.js").TopicRef} ref @param {Bytes} payload @returns {Message} */
  #decode(ref, payload) {
    const gw = ref.gateway;
    if (ref.kind === "telemetry" && gw !== null) return this.#telemetry(gw, payload);
    if (ref.kind === "events") {
      return { kind: "event", gateway: gw, ...decodeEvent(payload) };
    }
    if (ref.kind === "state" && gw !== null) {
      const state = decodeState(payload);
      if (state.catalogue !== null) this.catalogues.set(gw, state.catalogue);
      return { kind: "state", gateway: gw, online: state.online, detail: state.detail };
    }
    if (ref.kind === "cmd/res") {
      const { encoding, ...resp } = decodeResponse(payload);
      return { kind: "response", gateway: gw, ...resp };
    }
    const req = decodeRequest(payload);
    /** @type {import("./index.js").CommandMessage} */
    const msg = { kind: "command", gateway: gw };
    if (ref.group !== null) msg.group = ref.group;
    return Object.assign(msg, { id: req.id, cmd: req.cmd, args: req.args,
      encoding: req.encoding });
  }

  /** @param {string} gateway @param {Bytes} payload @returns {Message} */
  #telemetry(gateway, payload) {
    const batch = decodeTelemetry(payload, this.catalogues.get(gateway) ?? null);
    return { kind: "telemetry", gateway, seq: batch.seq, points: batch.points };
  }
}

const B64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Strict base64 (the standard alphabet, with its padding) to bytes. @param {string} text */
export function base64Bytes(text) {
  if (!B64.test(text)) {
    throw new DecodeError(/[^A-Za-z0-9+/=]/.test(text)
      ? "Only base64 data is allowed" : "Incorrect padding");
  }
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
