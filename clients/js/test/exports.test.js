// The hand-written types (src/index.d.ts) and the modules agree on what the package exports.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import * as api from "../src/index.js";

test("every runtime export is declared in index.d.ts, and every declared value exists", () => {
  const dts = readFileSync(new URL("../src/index.d.ts", import.meta.url), "utf8");
  const declared = new Set([...dts.matchAll(/^export (?:declare )?(?:function|class|const) (\w+)/gm)]
    .map((m) => m[1]));
  assert.deepEqual([...declared].sort(), Object.keys(api).sort());
});

test("package.json points at the modules and the types", () => {
  const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"));
  assert.equal(pkg.type, "module");
  assert.equal(pkg.exports["."].default, "./src/index.js");
  assert.equal(pkg.exports["."].types, "./src/index.d.ts");
  assert.deepEqual(Object.keys(pkg.dependencies).sort(), ["@msgpack/msgpack", "fflate", "fzstd"]);
});
