// "Exact JSON" (tests/js_corpus.py): JSON that keeps what plain JSON loses. An integer beyond
// +-(2^53 - 1) is {"$int": "digits"}, every float {"$float": "<Python repr>"}, an object with a
// `$` key {"$object": {...}}. Here: comparing a decoded value with an expected one, and writing
// values the same way for the Python side to read.

import assert from "node:assert/strict";

/** @param {string} r a Python float repr */
export function floatOf(r) {
  if (r === "nan") return NaN;
  if (r === "inf") return Infinity;
  if (r === "-inf") return -Infinity;
  return Number(r);
}

/** @param {unknown} v */
function describe(v) {
  if (typeof v === "bigint") return `${v}n`;
  if (typeof v === "number") return Object.is(v, -0) ? "-0" : String(v);
  return JSON.stringify(v, (_, x) => (typeof x === "bigint" ? `${x}n` : x));
}

/**
 * Assert that `actual` (what the JS decoder returned) is `expected` (exact JSON of what the
 * Python decoder returned): same types (a safe integer is a number, a bigger one a BigInt),
 * floats bit for bit (NaN is any NaN: JavaScript does not promise NaN payloads), same keys.
 * @param {unknown} actual @param {unknown} expected @param {string} path
 */
export function assertExact(actual, expected, path) {
  const fail = (/** @type {string} */ why) =>
    assert.fail(`${path}: ${why} (got ${describe(actual)}, expected ${describe(expected)})`);
  if (expected === null || typeof expected === "boolean" || typeof expected === "string") {
    if (actual !== expected) fail("differs");
    return;
  }
  if (typeof expected === "number") {              // a safe integer
    if (typeof actual !== "number" || !Object.is(actual, expected)) fail("not the same integer");
    return;
  }
  if (Array.isArray(expected)) {
    if (!Array.isArray(actual)) fail("not an array");
    const a = /** @type {unknown[]} */ (actual);
    if (a.length !== expected.length) fail(`length ${a.length} != ${expected.length}`);
    expected.forEach((e, k) => assertExact(a[k], e, `${path}[${k}]`));
    return;
  }
  const e = /** @type {Record<string, any>} */ (expected);
  const keys = Object.keys(e);
  if (keys.length === 1 && keys[0] === "$int") {
    if (typeof actual !== "bigint" || actual !== BigInt(e.$int)) fail("not the same BigInt");
    return;
  }
  if (keys.length === 1 && keys[0] === "$float") {
    const want = floatOf(e.$float);
    if (typeof actual !== "number") fail("not a number");
    if (Number.isNaN(want) ? !Number.isNaN(actual) : !Object.is(actual, want)) {
      fail("not the same float");
    }
    return;
  }
  const obj = keys.length === 1 && keys[0] === "$object" ? e.$object : e;
  if (actual === null || typeof actual !== "object" || Array.isArray(actual)) fail("not an object");
  const a = /** @type {Record<string, unknown>} */ (actual);
  const got = Object.keys(a).sort();
  const want = Object.keys(obj).sort();
  if (JSON.stringify(got) !== JSON.stringify(want)) {
    fail(`keys ${JSON.stringify(got)} != ${JSON.stringify(want)}`);
  }
  for (const k of want) assertExact(a[k], obj[k], `${path}.${k}`);
}

/** A JS value in exact JSON (what the Python side reads back with from_exact).
 * @param {unknown} v @returns {unknown} */
export function toExact(v) {
  if (typeof v === "bigint") {
    return v >= -(2n ** 53n - 1n) && v <= 2n ** 53n - 1n ? Number(v) : { $int: v.toString() };
  }
  if (typeof v === "number") {
    if (Number.isSafeInteger(v)) return v;
    if (Number.isNaN(v)) return { $float: "nan" };
    if (!Number.isFinite(v)) return { $float: v > 0 ? "inf" : "-inf" };
    return { $float: Number.isInteger(v) ? v.toExponential() : String(v) };
  }
  if (Array.isArray(v)) return v.map(toExact);
  if (v !== null && typeof v === "object") {
    const out = Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toExact(x)]));
    return Object.keys(out).some((k) => k.startsWith("$")) ? { $object: out } : out;
  }
  return v;
}
