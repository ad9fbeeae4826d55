// MQTT topics (DESIGN.md 4.3): building them and telling them apart.

import { DecodeError } from "./errors.js";

/** @typedef {import("./index.js").TopicKind} TopicKind */

const LEAF = /** @type {Record<string, TopicKind>} */ ({
  telemetry: "telemetry", events: "events", state: "state",
});

/**
 * The topics of one gateway.
 * @param {string} prefix @param {string} gateway
 * @returns {import("./index.js").GatewayTopics}
 */
export function topicsFor(prefix, gateway) {
  const p = prefix.replace(/\/+$/, "");
  return {
    telemetry: `${p}/${gateway}/telemetry`,
    events: `${p}/${gateway}/events`,
    state: `${p}/${gateway}/state`,
    cmdReq: `${p}/${gateway}/cmd/req`,
    cmdRes: `${p}/${gateway}/cmd/res`,
    groupCmdReq: (group) => `${p}/groups/${group}/cmd/req`,
  };
}

/**
 * The topic filters a platform subscribes to (state last and never shared: brokers do not
 * send retained messages to shared subscriptions, and every consumer needs every catalogue).
 * @param {string} prefix @param {{share?: string, commands?: boolean}} [options]
 */
export function subscriptions(prefix, options = {}) {
  const p = prefix.replace(/\/+$/, "");
  let filters = [`${p}/+/telemetry`, `${p}/+/events`, `${p}/+/cmd/res`];
  if (options.commands) filters.push(`${p}/+/cmd/req`, `${p}/groups/+/cmd/req`);
  if (options.share) filters = filters.map((f) => `$share/${options.share}/${f}`);
  return [...filters, `${p}/+/state`];
}

/**
 * Recognise one of the gateway topics. With `prefix` (which may contain slashes) the topic
 * must be under it; without, the prefix is whatever precedes the gateway id. Throws
 * DecodeError for any other topic.
 * @param {string} topic @param {string | null} [prefix]
 * @returns {import("./index.js").TopicRef}
 */
export function parseTopic(topic, prefix = null) {
  if (typeof topic !== "string") throw new DecodeError("a topic must be a string");
  if (prefix !== null && prefix !== undefined) {
    const p = prefix.replace(/\/+$/, "");
    if (!topic.startsWith(p + "/")) {
      throw new DecodeError(`topic ${pyStr(topic)} is not under the prefix ${pyStr(p)}`);
    }
    const parts = topic.slice(p.length + 1).split("/");
    if (parts.length === 4 && parts[0] === "groups" && parts[2] === "cmd" && parts[3] === "req" &&
        parts[1]) {
      return { kind: "groups/cmd/req", prefix: p, gateway: null, group: parts[1] };
    }
    if (parts.length === 2 && parts[0] && Object.hasOwn(LEAF, parts[1])) {
      return { kind: LEAF[parts[1]], prefix: p, gateway: parts[0], group: null };
    }
    if (parts.length === 3 && parts[0] && parts[1] === "cmd" &&
        (parts[2] === "req" || parts[2] === "res")) {
      return { kind: parts[2] === "req" ? "cmd/req" : "cmd/res", prefix: p, gateway: parts[0],
        group: null };
    }
    throw new DecodeError(`topic ${pyStr(topic)} is not one of the gateway topics under ${pyStr(p)}`);
  }
  const parts = topic.split("/");
  const n = parts.length;
  if (n >= 2 && Object.hasOwn(LEAF, parts[n - 1]) && parts[n - 2]) {
    return { kind: LEAF[parts[n - 1]], prefix: parts.slice(0, -2).join("/"),
      gateway: parts[n - 2], group: null };
  }
  if (n >= 3 && parts[n - 2] === "cmd" && (parts[n - 1] === "req" || parts[n - 1] === "res") &&
      parts[n - 3]) {
    if (parts[n - 1] === "req" && n >= 4 && parts[n - 4] === "groups") {
      return { kind: "groups/cmd/req", prefix: parts.slice(0, -4).join("/"), gateway: null,
        group: parts[n - 3] };
    }
    return { kind: parts[n - 1] === "req" ? "cmd/req" : "cmd/res",
      prefix: parts.slice(0, -3).join("/"), gateway: parts[n - 3], group: null };
  }
  throw new DecodeError(`topic ${pyStr(topic)} is not a gateway topic (…/telemetry, …/events, ` +
    "…/state, …/cmd/req, …/cmd/res, …/groups/G/cmd/req)");
}

/** A topic quoted as Python's repr quotes a string. @param {string} s */
function pyStr(s) {
  return s.includes("'") && !s.includes('"') ? `"${s}"` : `'${s.replace(/'/g, "\\'")}'`;
}
