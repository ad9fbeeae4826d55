// Integers: a JS number when it is a safe integer, a BigInt otherwise (docs/protocol.md: 64-bit
// counters travel beyond 2^53). Sums of mixed number/BigInt operands stay exact.

/** @param {number | bigint} x */
export function normInt(x) {
  if (typeof x === "bigint") {
    return x >= -9007199254740991n && x <= 9007199254740991n ? Number(x) : x;
  }
  return x;
}

/** True for an integer as the decoders return them: a safe-integer number or a BigInt (an
 * integer beyond 2^53 always comes as a BigInt, so a whole Number beyond it was a float).
 * @param {unknown} x
 * @returns {x is number | bigint} */
export function isInt(x) {
  return typeof x === "bigint" || Number.isSafeInteger(x);
}

/** An integer as isInt() accepts it, with -0 (from a float -0.0) as 0.
 * @param {number | bigint} x */
export function asInt(x) {
  return x === 0 ? 0 : x;
}

/** Exact a + b for integers (number or BigInt), normalised.
 * @param {number | bigint} a @param {number | bigint} b */
export function addInt(a, b) {
  if (typeof a === "number" && typeof b === "number") {
    const r = a + b;
    // two safe integers sum exactly unless the true sum leaves the safe range, and then the
    // rounded sum is outside it too
    if (Number.isSafeInteger(r)) return r;
  }
  return normInt(BigInt(a) + BigInt(b));
}

/** a < b, a == b, a > b as -1, 0, 1 for integers of either representation.
 * @param {number | bigint} a @param {number | bigint} b */
export function cmpInt(a, b) {
  return a < b ? -1 : a > b ? 1 : 0;
}

const POW10 = Array.from({ length: 23 }, (_, d) => 10 ** d);   // exact doubles up to 1e22

/** n / 10^d correctly rounded (IEEE division of two exact doubles, as Python's int / int),
 * for any integer n, including BigInts beyond 2^53 where Number(n) / 10^d would round twice.
 * @param {number | bigint} n @param {number} d */
export function divPow10(n, d) {
  if (typeof n === "number") return n / POW10[d];          // both exact: one IEEE rounding
  if (d === 0) return Number(n);                           // Number(BigInt) rounds to nearest
  const neg = n < 0n;
  const a = neg ? -n : n;
  const den = 10n ** BigInt(d);
  // scale so the integer quotient has at least 64 significant bits, then let Number() round
  // it once, with a sticky bit standing for the remainder so ties are broken correctly
  const shift = Math.max(0, 66 - (a.toString(2).length - den.toString(2).length));
  const num = a << BigInt(shift);
  const q = num / den;
  const sticky = num % den === 0n ? 0n : 1n;
  const r = Number((q << 1n) | sticky) * 2 ** -(shift + 1);
  return neg ? -r : r;
}
