// The corpus of tests/js_corpus.py: payloads the Python encoder made across the whole value
// space, with what the Python decoder (`edgegw platform decode`) made of them. This decoder
// must agree point for point. Run by tests/test_js_client.py, which writes the corpus and sets
// EDGEGW_CORPUS to its directory; skipped when that variable is not set.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { Decoder, catalogueToWire, formatLine, parseCatalogue } from "../src/index.js";
import { assertExact } from "./exact.js";

const dir = process.env.EDGEGW_CORPUS;
const DECODERS = { plain: null, city: "city/v1/east" };

/** @returns {Array<Record<string, any>>} */
function corpus() {
  const text = readFileSync(join(/** @type {string} */ (dir), "corpus.jsonl"), "utf8");
  const lines = text.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
  assert.ok(lines.length > 0, "the corpus is empty");
  return lines;
}

/** @param {Record<string, any>} line */
function bytesOf(line) {
  return new Uint8Array(Buffer.from(line.payload_b64, "base64"));
}

/** @param {string} group */
function only(group) {
  return (/** @type {Record<string, any>} */ line) => line.case.split("-")[0] === group;
}

/** Decode every line, in order, each decoder keeping its catalogues; compare as `check` says.
 * @param {(line: Record<string, any>, got: any, dec: Decoder) => void} check
 * @param {(line: Record<string, any>) => boolean} [select] */
function run(check, select = () => true) {
  /** @type {Record<string, Decoder>} */
  const decoders = {};
  for (const [name, prefix] of Object.entries(DECODERS)) decoders[name] = new Decoder({ prefix });
  let n = 0;
  for (const line of corpus()) {
    const dec = decoders[line.decoder];
    assert.ok(dec, `${line.case}: unknown decoder ${line.decoder}`);
    // every line is decoded (catalogues come from earlier lines); only selected ones checked
    const got = line.mode === "feed" ? dec.feed(line.topic, bytesOf(line))
      : dec.decode(line.topic, bytesOf(line));
    if (select(line)) {
      check(line, got, dec);
      n++;
    }
  }
  return n;
}

/** @param {Record<string, any>} line @param {any} got */
function agree(line, got) {
  const want = line.expected;
  if (line.mode === "feed") {
    assert.equal(got.length, want.length, `${line.case}: feed returned ${got.length} messages`);
    got.forEach((/** @type {any} */ m, /** @type {number} */ k) =>
      agreeOne(line, m, want[k], `${line.case}[${k}]`));
  } else {
    agreeOne(line, got, want, line.case);
  }
  // whatever it holds, one JSON line can print it
  assert.doesNotThrow(() => JSON.parse(formatLine(got)), `${line.case}: formatLine`);
}

/** @param {Record<string, any>} line @param {any} got @param {any} want @param {string} where */
function agreeOne(line, got, want, where) {
  if (want.kind === "error" && line.lenient && got.kind !== "error") {
    // the one known leniency (README): whole-number floats read as integers; then the points
    // must be those Python reads once the floats are integers
    assert.equal(got.kind, "telemetry", where);
    assertExact(got.points.map((/** @type {any} */ p) => [p.device, p.point, p.ts]),
      line.lenient, `${where} (lenient)`);
    return;
  }
  if (want.kind === "error") {
    assert.equal(got.kind, "error", `${where}: the Python decoder refused it (${want.error}), ` +
      `this one decoded it: ${formatLine(got).slice(0, 300)}`);
    assert.equal(got.gateway, want.gateway, `${where}: gateway`);
    assert.equal(got.topic, want.topic, `${where}: topic`);
    // the same kind of message, and the designed cases' reason
    assert.equal(got.error.split(":")[0], want.error.split(":")[0], `${where}: ${got.error}`);
    if (line.match) {
      assert.ok(got.error.includes(line.match),
        `${where}: the error should say "${line.match}": ${got.error}`);
    }
    return;
  }
  assert.notEqual(got.kind, "error", `${where}: ${got.error} (the Python decoder decoded it)`);
  assertExact(got, want, where);
}

const skip = dir ? false : "EDGEGW_CORPUS is not set (tests/test_js_client.py writes the corpus)";

test("telemetry of every value type, under every compression, agrees point for point",
  { skip }, () => {
    const select = (/** @type {any} */ l) => ["telemetry", "floats", "ints", "edges", "crafted", "street"]
      .includes(l.case.split("-")[0]);
    const n = run(agree, select);
    assert.ok(n >= 100, `only ${n} telemetry lines`);
  });

test("64-bit integers beyond 2^53 come back exact, as BigInt", { skip }, () => {
  let big = 0;
  run((line, got) => {
    agree(line, got);
    for (const p of got.points ?? []) if (typeof p.value === "bigint") big++;
  }, (l) => l.topic.endsWith("/telemetry") && l.expected.kind === "telemetry");
  assert.ok(big >= 10, `only ${big} BigInt values in the corpus`);
});

test("births: the catalogue is learnt exactly, and the state message agrees", { skip }, () => {
  const n = run((line, got, dec) => {
    agree(line, got);
    if (got.kind === "state" && got.detail.catalogue) {
      const cat = dec.catalogue(got.gateway);
      assert.ok(cat, `${line.case}: no catalogue learnt`);
      assertExact(catalogueToWire(/** @type {any} */ (cat)), line.expected.detail.catalogue,
        `${line.case}.catalogue`);
      assert.deepEqual(catalogueToWire(parseCatalogue(got.detail.catalogue)),
        catalogueToWire(/** @type {any} */ (cat)));
    }
  }, (l) => l.topic.endsWith("/state"));
  assert.ok(n >= 30, `only ${n} state lines`);
});

test("events agree", { skip }, () => {
  assert.ok(run(agree, only("event")) >= 30);
});

test("command responses and requests, JSON and msgpack, agree", { skip }, () => {
  assert.ok(run(agree, only("response")) >= 30);
  assert.ok(run(agree, only("request")) >= 30);
});

test("feed holds telemetry until its catalogue arrives, as the Python decoder", { skip }, () => {
  assert.equal(run(agree, only("feed")), 5);
});

test("designed bad payloads are errors naming the problem", { skip }, () => {
  assert.ok(run(agree, only("bad")) >= 40);
});

test("randomly corrupted batches: the same verdict as the Python decoder", { skip }, () => {
  const n = run(agree, only("mutation"));
  assert.ok(n >= 100, `only ${n} mutations`);
});

test("batch bodies with junk of any type in any field: the same verdict", { skip }, () => {
  const n = run(agree, only("structural"));
  assert.ok(n >= 100, `only ${n} corrupt bodies`);
});
