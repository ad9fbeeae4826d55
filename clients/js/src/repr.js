// Values named in error messages, written as the Python decoder writes them (repr), so the
// two decoders' reasons read alike.
import { JsonFloat } from "./json.js";

/** @param {number} x */
function floatRepr(x) {
  if (Number.isNaN(x)) return "nan";
  if (x === Infinity) return "inf";
  if (x === -Infinity) return "-inf";
  if (Object.is(x, -0)) return "-0.0";
  const s = String(x);
  return /[.e]/.test(s) ? s : s + ".0";
}

/** @param {unknown} v @returns {string} */
export function repr(v) {
  if (v === null || v === undefined) return "None";
  if (v === true) return "True";
  if (v === false) return "False";
  if (typeof v === "bigint") return v.toString();
  if (v instanceof JsonFloat) return floatRepr(v.value);
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : floatRepr(v);
  if (typeof v === "string") {
    const q = v.includes("'") && !v.includes('"') ? '"' : "'";
    return q + v.replace(/\\/g, "\\\\").replace(q === "'" ? /'/g : /"/g, "\\" + q)
      .replace(/\n/g, "\\n").replace(/\r/g, "\\r").replace(/\t/g, "\\t") + q;
  }
  if (Array.isArray(v)) return "[" + v.map(repr).join(", ") + "]";
  if (v instanceof Uint8Array) return "b'...'";
  if (typeof v === "object") {
    return "{" + Object.entries(v).map(([k, x]) => `${repr(k)}: ${repr(x)}`).join(", ") + "}";
  }
  return String(v);
}
