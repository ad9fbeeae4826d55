// Command requests and responses, JSON or msgpack (DESIGN.md 4.5, docs/protocol.md section 6).

import { asBytes } from "./batch.js";
import { DecodeError, EncodeError } from "./errors.js";
import { JsonFloat, plain, stringify } from "./json.js";
import { pack } from "./msgpack.js";
import { isInt } from "./numbers.js";
import { isObject, loadAs, sniffEncoding } from "./wire.js";

/** An id as the Python side accepts one: a string, an integer or null (never a bool).
 * @param {unknown} id */
function isId(id) {
  return id === null || id === undefined || typeof id === "string" ||
    (!(id instanceof JsonFloat) && isInt(id));
}

/**
 * Decode a command response: `{id, ok, result}` or `{id, ok: false, error: {code, message}}`,
 * and the encoding it came in. Throws DecodeError.
 * @param {Uint8Array | ArrayBuffer | ArrayBufferView} payload
 * @returns {import("./index.js").ResponseMessage}
 */
export function decodeResponse(payload) {
  const { value: obj, encoding } = loadAs(asBytes(payload, "a response"), "response");
  if (!isObject(obj)) throw new DecodeError("response: expected an object {id, ok, result|error}");
  const id = obj.id ?? null;
  const ok = obj.ok;
  if (!isId(id)) throw new DecodeError("response: id must be a string, a number or null");
  if (typeof ok !== "boolean") throw new DecodeError("response: ok must be true or false");
  if (ok) {
    const result = Object.hasOwn(obj, "result") ? obj.result : {};
    if (!isObject(result)) throw new DecodeError("response: result must be an object");
    return { id: /** @type {any} */ (id), ok: true,
      result: /** @type {any} */ (plain(result)), encoding };
  }
  const err = obj.error;
  const message = isObject(err) && Object.hasOwn(err, "message") ? err.message : "";
  if (!isObject(err) || typeof err.code !== "string" || typeof message !== "string") {
    throw new DecodeError("response: error must be an object {code, message}");
  }
  return { id: /** @type {any} */ (id), ok: false, error: { code: err.code, message }, encoding };
}

/**
 * Decode a command request (what a platform sends on `.../cmd/req`): `{id, cmd, args,
 * encoding}`. Throws DecodeError; its message ends with the encoding, as the Python tools say.
 * @param {Uint8Array | ArrayBuffer | ArrayBufferView} payload
 * @returns {import("./index.js").CommandRequest & {encoding: "json" | "msgpack"}}
 */
export function decodeRequest(payload) {
  const bytes = asBytes(payload, "a command");
  let encoding = sniffEncoding(bytes);
  const fail = (/** @type {string} */ msg) => new DecodeError(`${msg} (${encoding})`);
  let obj;
  try {
    ({ value: obj, encoding } = loadAs(bytes, "command"));
  } catch (err) {
    throw fail(err instanceof Error ? err.message : String(err));
  }
  if (!isObject(obj)) throw fail("command: expected an object {id, cmd, args}");
  const id = obj.id ?? null;
  if (!isId(id)) throw fail("command: id must be a string or a number");
  const cmd = obj.cmd;
  let args = Object.hasOwn(obj, "args") ? obj.args : {};
  if (typeof cmd !== "string" || !cmd) throw fail("command: cmd must be a non-empty string");
  if (args === null) args = {};
  if (!isObject(args)) throw fail(`command ${cmd}: args must be an object`);
  return { id: /** @type {any} */ (id), cmd,
    args: /** @type {any} */ (plain(args)), encoding };
}

/**
 * Encode a command request for `{prefix}/{gateway}/cmd/req` (or a group's topic): JSON
 * (the default; compact, UTF-8) or msgpack. `id` is a string, an integer (number or BigInt)
 * or null; `args` a plain object (omitted: `{}`); undefined properties are left out. Values
 * JSON cannot carry (NaN, Infinity) or that are not plain data throw EncodeError.
 * @param {import("./index.js").CommandRequest} request
 * @param {{format?: "json" | "msgpack"}} [options]
 * @returns {Uint8Array}
 */
export function encodeCommand(request, options = {}) {
  const format = options.format ?? "json";
  if (format !== "json" && format !== "msgpack") {
    throw new EncodeError(`format ${JSON.stringify(format)} is not one of json, msgpack`);
  }
  if (!isObject(request)) throw new EncodeError("a command must be an object {id, cmd, args}");
  const { id = null, cmd, args = {} } = request;
  if (typeof cmd !== "string" || !cmd) throw new EncodeError("command: cmd must be a non-empty string");
  const what = `command ${cmd}`;
  if (!(id === null || typeof id === "string" || typeof id === "bigint" ||
        (typeof id === "number" && Number.isInteger(id)))) {
    throw new EncodeError(`${what}: id must be a string, an integer or null`);
  }
  if (!isObject(args)) throw new EncodeError(`${what}: args must be a plain object`);
  const obj = { id, cmd, args };
  if (format === "msgpack") return pack(obj, what);
  return new TextEncoder().encode(stringify(obj, what, "args"));
}
