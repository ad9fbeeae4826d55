// @edgegw/codec: decode what edgegw gateways publish (telemetry, events, state, command
// responses) and encode commands for them. docs/protocol.md in the edgegw repository is the
// format; this package agrees with the Python decoder (`edgegw platform decode`) point for point.

import { stringify } from "./json.js";

export { Decoder, base64Bytes } from "./decoder.js";
export { decodeTelemetry, readBatchInfo, FORMAT_VERSION } from "./batch.js";
export { parseCatalogue, catalogueToWire, MAX_DECIMALS } from "./catalogue.js";
export { decodeEvent, decodeState } from "./messages.js";
export { decodeResponse, decodeRequest, encodeCommand } from "./commands.js";
export { parseTopic, topicsFor, subscriptions } from "./topics.js";
export { DecodeError, CatalogueMismatch, EncodeError } from "./errors.js";
export { MAX_BODY_BYTES } from "./compression.js";

/**
 * One decoded message as one line of JSON, as `edgegw platform listen --json` prints it:
 * BigInts as exact integers, NaN and infinities (which JSON cannot carry) as null.
 * @param {unknown} message @returns {string}
 */
export function formatLine(message) {
  return stringify(message, "message", "message", true);
}
