/**
 * Shamir t-of-n secret sharing over the ristretto255 scalar field, with Feldman commitments so that
 * every share, and every key server's public share k_i·G, can be checked against published values.
 *
 * The polynomial is f(x) = a_0 + a_1·x + … + a_{t-1}·x^{t-1} with a_0 = k; share i is f(i) for
 * i = 1..n; the commitments are C_j = a_j·G, so C_0 = k·G is the policy public key P_p and
 * f(i)·G = Σ_j C_j·i^j for every honest share.
 */
import { fail, isTesseraError } from '../errors.js';
import {
  GROUP_ORDER,
  add,
  baseMul,
  decodePoint,
  decodeScalar,
  isGroupError,
  mul,
  pointEquals,
  randomScalar,
  scalarAdd,
  scalarFromBigint,
  scalarFromInt,
  scalarMul,
  type Point,
  type Scalar,
} from './group.js';

/** Share indices are 1..255 (0 would be the secret itself). */
export const MAX_SHARES = 255;

export interface Share {
  /** The x-coordinate, 1..n. */
  index: number;
  /** f(index), secret. */
  value: Scalar;
}

export interface Sharing {
  shares: Share[];
  /** C_j = a_j·G for j = 0..t-1; C_0 = k·G is the policy public key. Public. */
  commitments: Point[];
}

/** A key server's partial result, tagged with its share index. */
export interface IndexedPoint {
  index: number;
  point: Point;
}

/**
 * Splits `secret` t-of-n. Coefficients a_1..a_{t-1} are random and wiped before returning.
 *
 * @example const { shares, commitments } = split(randomScalar(), 2, 3); // commitments[0] = P_p
 */
export function split(secret: Scalar, t: number, n: number): Sharing {
  checkThreshold(t, n);
  const k = decodeScalar(secret);
  for (;;) {
    const coeffs: Scalar[] = [k];
    for (let j = 1; j < t; j++) coeffs.push(randomScalar());
    const shares: Share[] = [];
    for (let i = 1; i <= n; i++) shares.push({ index: i, value: evalPoly(coeffs, i) });
    // A zero share (probability n/ℓ) could not be used by a key server: draw another polynomial.
    if (shares.some((s) => isZeroScalar(s.value))) continue;
    const commitments = coeffs.map(baseMul);
    for (let j = 1; j < coeffs.length; j++) coeffs[j]!.fill(0);
    k.fill(0);
    return { shares, commitments };
  }
}

/**
 * Feldman check: share.value·G == Σ_j C_j·index^j. False (never a throw) for anything malformed.
 * Costs one base multiplication and t-1 variable-base multiplications.
 */
export function verifyShare(share: Share, commitments: Point[]): boolean {
  if (typeof share !== 'object' || share === null) return false;
  try {
    checkIndex(share.index);
    const v = decodeScalar(share.value);
    const cs = decodeCommitments(commitments);
    return pointEquals(baseMul(v), publicShareOf(share.index, cs));
  } catch (err) {
    if (isGroupError(err) || isShareError(err)) return false;
    throw err;
  }
}

/**
 * k_i·G for share `index`, computed from the commitments alone (Horner: t-1 multiplications by the
 * small scalar `index`). This is the K_i a key server's DLEQ proof is checked against.
 */
export function publicShare(index: number, commitments: Point[]): Point {
  checkIndex(index);
  return publicShareOf(index, decodeCommitments(commitments));
}

/**
 * Lagrange coefficients at x = 0 for the given distinct indices: λ_i = Π_{j≠i} x_j / (x_j − x_i).
 * Indices are public, so the arithmetic is BigInt (one small modular inverse per index).
 */
export function lagrangeAt0(indices: number[]): Scalar[] {
  if (indices.length === 0) throw fail('TESSERA_SECRET_SHARE_INVALID', 'no shares to combine');
  const seen = new Set<number>();
  for (const i of indices) {
    checkIndex(i);
    if (seen.has(i)) throw fail('TESSERA_SECRET_SHARE_INVALID', 'duplicate share index');
    seen.add(i);
  }
  return indices.map((xi) => {
    let num = 1n;
    let den = 1n;
    for (const xj of indices) {
      if (xj === xi) continue;
      num *= BigInt(xj);
      den *= BigInt(xj - xi);
    }
    return scalarFromBigint(num * modInverse(den));
  });
}

/**
 * Recovers k = Σ λ_i·f(i) from t shares. Only for tests and the dealer's own checks: in operation k
 * is never reassembled, only k·B is (see {@link combinePoints}).
 */
export function combineScalars(shares: Share[]): Scalar {
  const lambdas = lagrangeAt0(shares.map((s) => s.index));
  let acc: Scalar | undefined;
  for (const [i, s] of shares.entries()) {
    const term = scalarMul(lambdas[i]!, s.value);
    acc = acc === undefined ? term : scalarAdd(acc, term);
  }
  return acc!;
}

/** Σ λ_i·P_i over t partial results P_i = f(i)·X, which gives k·X. */
export function combinePoints(partials: IndexedPoint[]): Point {
  const lambdas = lagrangeAt0(partials.map((p) => p.index));
  let acc: Point | undefined;
  for (const [i, p] of partials.entries()) {
    const term = mul(lambdas[i]!, p.point);
    acc = acc === undefined ? term : add(acc, term);
  }
  return acc!;
}

/** A dealer's refresh of a t-of-n sharing: a random sharing of zero, g(0) = 0, g of degree t-1. */
export interface RefreshDeal {
  /** g(i) for i = 1..n, one to each key server. Secret (with an old share it gives the new one). */
  deltas: Share[];
  /** D_j = g_j·G for j = 1..t-1 (D_0 is the identity and is not sent). Public. */
  D: Point[];
}

/**
 * Deals a refresh for a t-of-n sharing (t ≥ 2): each key server adds its g(i) to its share, and
 * everyone adds D_j to C_j, so C_0 = P_p stays and the key is unchanged. Old and new shares do not
 * combine, so shares stolen before a refresh are worth nothing after it (once the old ones are
 * deleted). The coefficients are wiped before returning; the dealer never sees a share.
 */
export function dealRefresh(t: number, n: number): RefreshDeal {
  checkThreshold(t, n);
  if (t < 2) throw fail('TESSERA_BAD_REQUEST', 'a 1-of-n sharing cannot be refreshed');
  for (;;) {
    const g: Scalar[] = [new Uint8Array(32)];
    for (let j = 1; j < t; j++) g.push(randomScalar());
    const deltas: Share[] = [];
    for (let i = 1; i <= n; i++) deltas.push({ index: i, value: evalPoly(g, i) });
    // g(i) = 0 (probability n/ℓ) is not a canonical non-zero scalar on the wire: draw again.
    if (deltas.some((d) => isZeroScalar(d.value))) continue;
    const D = g.slice(1).map(baseMul);
    for (const c of g) c.fill(0);
    return { deltas, D };
  }
}

/**
 * A key server's side of a refresh: checks its delta against D (Feldman: δ·G = Σ_{j≥1} D_j·i^j),
 * then returns its new share f(i) + g(i) and the new commitments C'_j = C_j + D_j, after checking
 * the new share against them. The old share is left untouched (the caller deletes it once the new
 * generation is published). TESSERA_SECRET_SHARE_INVALID on any mismatch.
 */
export function applyRefresh(share: Share, commitments: Point[], delta: Share, D: Point[]): { share: Share; commitments: Point[] } {
  const cs = decodeCommitments(commitments);
  if (cs.length < 2) throw fail('TESSERA_SECRET_SHARE_INVALID', 'a 1-of-n sharing cannot be refreshed');
  if (!Array.isArray(D) || D.length !== cs.length - 1) throw fail('TESSERA_SECRET_SHARE_INVALID', 'a refresh needs exactly t-1 commitments');
  const ds = decodeCommitments(D);
  checkIndex(share.index);
  if (delta.index !== share.index) throw fail('TESSERA_SECRET_SHARE_INVALID', 'the refresh is for another share index');
  let d: Scalar;
  try {
    d = decodeScalar(delta.value);
  } catch (err) {
    if (isGroupError(err)) throw fail('TESSERA_SECRET_SHARE_INVALID', 'the refresh value is not a canonical non-zero scalar');
    throw err;
  }
  // Σ_{j≥1} D_j·i^j = i·(Σ_{j≥1} D_j·i^(j-1)): Horner over D_1..D_{t-1}, then one more multiply by i.
  const expected = mul(scalarFromInt(share.index), publicShareOf(share.index, ds));
  if (!pointEquals(baseMul(d), expected)) throw fail('TESSERA_SECRET_SHARE_INVALID', 'the refresh value does not match its commitments');
  if (!verifyShare(share, cs)) throw fail('TESSERA_SECRET_SHARE_INVALID', 'the current share does not match its commitments');
  const value = scalarAdd(decodeScalar(share.value), d);
  d.fill(0);
  if (isZeroScalar(value)) throw fail('TESSERA_SECRET_SHARE_INVALID', 'the refreshed share is zero; deal the refresh again');
  const next = refreshedCommitments(cs, ds);
  const fresh = { index: share.index, value };
  if (!verifyShare(fresh, next)) throw fail('TESSERA_SECRET_SHARE_INVALID', 'the refreshed share does not match the new commitments');
  return { share: fresh, commitments: next };
}

/** The commitments after a refresh: C'_0 = C_0 (the key), C'_j = C_j + D_j. Inputs are validated. */
export function refreshedCommitments(commitments: Point[], D: Point[]): Point[] {
  const cs = decodeCommitments(commitments);
  const ds = decodeCommitments(D);
  if (ds.length !== cs.length - 1) throw fail('TESSERA_SECRET_SHARE_INVALID', 'a refresh needs exactly t-1 commitments');
  return cs.map((c, j): Point => (j === 0 ? c : add(c, ds[j - 1]!)));
}

/**
 * Proactive refresh of a whole sharing at once (tests and tools that hold every share): the
 * dealer's {@link dealRefresh} applied by {@link applyRefresh} to each share. Every input share is
 * verified first (TESSERA_SECRET_SHARE_INVALID otherwise), so a bad share cannot be laundered into
 * a fresh one. A 1-of-n sharing (every share is k) cannot be refreshed.
 */
export function refreshShares(shares: Share[], commitments: Point[]): Sharing {
  const cs = decodeCommitments(commitments);
  const t = cs.length;
  if (t < 2) throw fail('TESSERA_BAD_REQUEST', 'a 1-of-n sharing cannot be refreshed');
  const seen = new Set<number>();
  for (const s of shares) {
    if (seen.has(s.index)) throw fail('TESSERA_SECRET_SHARE_INVALID', 'duplicate share index');
    seen.add(s.index);
    if (!verifyShare(s, cs)) throw fail('TESSERA_SECRET_SHARE_INVALID', `share ${Number(s.index)} does not match the commitments`);
  }
  const n = Math.max(t, ...shares.map((s) => s.index));
  for (;;) {
    const deal = dealRefresh(t, n);
    try {
      const out = shares.map((s) => applyRefresh(s, cs, deal.deltas[s.index - 1]!, deal.D));
      return { shares: out.map((o) => o.share), commitments: out[0]?.commitments ?? refreshedCommitments(cs, deal.D) };
    } catch (err) {
      // Only a zero refreshed share (probability ~n/ℓ) lands here: deal again.
      if (!isShareError(err)) throw err;
    } finally {
      for (const d of deal.deltas) d.value.fill(0);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Internals shared with blind.ts

/** Validates every commitment (canonical, non-identity) and returns copies. */
export function decodeCommitments(commitments: Point[]): Point[] {
  if (!Array.isArray(commitments) || commitments.length < 1 || commitments.length > MAX_SHARES) {
    throw fail('TESSERA_SECRET_SHARE_INVALID', 'commitments must be a list of 1..255 points');
  }
  try {
    return commitments.map(decodePoint);
  } catch (err) {
    if (isGroupError(err)) throw fail('TESSERA_SECRET_SHARE_INVALID', 'a commitment is not a valid non-identity point');
    throw err;
  }
}

/** Horner over points with already-validated commitments. */
export function publicShareOf(index: number, cs: Point[]): Point {
  const x = scalarFromInt(index);
  let acc = cs[cs.length - 1]!;
  for (let j = cs.length - 2; j >= 0; j--) acc = add(mul(x, acc), cs[j]!);
  return acc;
}

export function checkIndex(i: number): void {
  if (!Number.isInteger(i) || i < 1 || i > MAX_SHARES) throw fail('TESSERA_SECRET_SHARE_INVALID', 'a share index must be an integer in 1..255');
}

function checkThreshold(t: number, n: number): void {
  if (!Number.isInteger(t) || !Number.isInteger(n) || t < 1 || n < t || n > MAX_SHARES) {
    throw fail('TESSERA_BAD_REQUEST', 'the threshold must satisfy 1 <= t <= n <= 255');
  }
}

function isShareError(err: unknown): boolean {
  return isTesseraError(err) && err.code === 'TESSERA_SECRET_SHARE_INVALID';
}

/** f(x) by Horner in the scalar field. */
function evalPoly(coeffs: Scalar[], x: number): Scalar {
  const xs = scalarFromInt(x);
  // A copy even when t = 1, so that wiping the coefficients never wipes a share.
  let acc: Scalar = new Uint8Array(coeffs[coeffs.length - 1]!);
  for (let j = coeffs.length - 2; j >= 0; j--) acc = scalarAdd(scalarMul(acc, xs), coeffs[j]!);
  return acc;
}

function isZeroScalar(s: Scalar): boolean {
  let acc = 0;
  for (const b of s) acc |= b;
  return acc === 0;
}

/** a⁻¹ mod ℓ for a public a ≠ 0 mod ℓ (extended Euclid). */
function modInverse(a: bigint): bigint {
  let r0 = ((a % GROUP_ORDER) + GROUP_ORDER) % GROUP_ORDER;
  if (r0 === 0n) throw fail('TESSERA_INTERNAL', 'no inverse of zero');
  let r1 = GROUP_ORDER;
  let s0 = 1n;
  let s1 = 0n;
  while (r1 !== 0n) {
    const q = r0 / r1;
    [r0, r1] = [r1, r0 - q * r1];
    [s0, s1] = [s1, s0 - q * s1];
  }
  return ((s0 % GROUP_ORDER) + GROUP_ORDER) % GROUP_ORDER;
}
