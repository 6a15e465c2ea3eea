/**
 * A thin, typed layer over ristretto255 (libsodium): the prime-order group every blind-secret
 * operation works in. Scalars and points are their canonical 32-byte encodings; every function that
 * takes a point from outside refuses non-canonical encodings and the identity, and every product is
 * checked not to be the identity, so callers never handle a degenerate element.
 *
 * Call `await ready()` once (libsodium compiles its WebAssembly); everything else is synchronous.
 *
 * Secret scalars stay inside libsodium's constant-time arithmetic; BigInt is used only for public
 * small integers (Shamir x-coordinates and Lagrange coefficients), never for a key, share or blind.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import sodium from 'libsodium-wrappers-sumo';
import { fail, isTesseraError } from '../errors.js';

/** A canonical little-endian scalar modulo the group order ℓ (32 bytes). */
export type Scalar = Uint8Array;
/** A canonical ristretto255 encoding of a group element (32 bytes). */
export type Point = Uint8Array;

export const SCALAR_BYTES = 32;
export const POINT_BYTES = 32;
/** ℓ = 2^252 + 27742317777372353535851937790883648493 (RFC 9496 §4). */
export const GROUP_ORDER = (1n << 252n) + 27742317777372353535851937790883648493n;

const ORDER_LE = bigintToLe(GROUP_ORDER);
const LEN_PREFIX = Buffer.alloc(4);

let isReady = false;

/** Loads libsodium once; every other function here throws TESSERA_INTERNAL until it resolves. */
export async function ready(): Promise<void> {
  if (isReady) return;
  await sodium.ready;
  isReady = true;
}

function lib(): typeof sodium {
  if (!isReady) throw fail('TESSERA_INTERNAL', 'secrets: the group was used before ready() resolved');
  return sodium;
}

const invalid = (what: string) => fail('TESSERA_SECRET_POINT_INVALID', what);

// ---------------------------------------------------------------------------------------------
// Scalars

/** A uniformly random non-zero scalar (64 random bytes reduced mod ℓ: bias below 2^-250). */
export function randomScalar(): Scalar {
  const s = lib();
  for (;;) {
    const wide = randomBytes(64);
    const k = s.crypto_core_ristretto255_scalar_reduce(wide);
    wide.fill(0);
    if (!isZeroBytes(k)) return k;
  }
}

export function scalarAdd(a: Scalar, b: Scalar): Scalar {
  return lib().crypto_core_ristretto255_scalar_add(a, b);
}

export function scalarSub(a: Scalar, b: Scalar): Scalar {
  return lib().crypto_core_ristretto255_scalar_sub(a, b);
}

export function scalarMul(a: Scalar, b: Scalar): Scalar {
  return lib().crypto_core_ristretto255_scalar_mul(a, b);
}

export function scalarNeg(a: Scalar): Scalar {
  return lib().crypto_core_ristretto255_scalar_negate(a);
}

/** a⁻¹ mod ℓ; zero has no inverse (TESSERA_SECRET_POINT_INVALID). */
export function scalarInv(a: Scalar): Scalar {
  const s = lib();
  if (a.length !== SCALAR_BYTES || isZeroBytes(a)) throw invalid('the scalar is zero or malformed');
  return s.crypto_core_ristretto255_scalar_invert(a);
}

/** A public integer as a scalar (reduced mod ℓ, negatives wrap). Not for secrets: BigInt is not constant time. */
export function scalarFromBigint(v: bigint): Scalar {
  const r = ((v % GROUP_ORDER) + GROUP_ORDER) % GROUP_ORDER;
  return bigintToLe(r);
}

/** A small non-negative integer (a Shamir x-coordinate) as a scalar. */
export function scalarFromInt(n: number): Scalar {
  if (!Number.isSafeInteger(n) || n < 0) throw fail('TESSERA_INTERNAL', 'scalarFromInt: not a non-negative safe integer');
  return scalarFromBigint(BigInt(n));
}

/**
 * Validates a scalar from outside (storage, the wire): 32 bytes, canonical (< ℓ), non-zero.
 * Returns a copy. Throws TESSERA_SECRET_POINT_INVALID.
 */
export function decodeScalar(bytes: Uint8Array): Scalar {
  if (!(bytes instanceof Uint8Array) || bytes.length !== SCALAR_BYTES) throw invalid('a scalar must be 32 bytes');
  if (!isCanonicalScalar(bytes) || isZeroBytes(bytes)) throw invalid('the scalar is not canonical or is zero');
  return new Uint8Array(bytes);
}

/**
 * SHA-512 over a domain-separation tag and length-prefixed parts (u32 big-endian lengths, so no two
 * different part lists hash the same input), reduced mod ℓ. The 512-bit digest keeps the bias negligible.
 *
 * @example hashToScalar('tessera/v1/dleq/challenge', K, B, Z, A1, A2, context)
 */
export function hashToScalar(domain: string, ...parts: Uint8Array[]): Scalar {
  const s = lib();
  const h = createHash('sha512');
  const d = Buffer.from(domain, 'utf8');
  // update() copies synchronously, so one shared prefix buffer is safe to reuse.
  LEN_PREFIX.writeUInt32BE(d.length, 0);
  h.update(LEN_PREFIX).update(d);
  for (const p of parts) {
    if (p.length > 0xffffffff) throw fail('TESSERA_INTERNAL', 'hashToScalar: part too long');
    LEN_PREFIX.writeUInt32BE(p.length, 0);
    h.update(LEN_PREFIX).update(p);
  }
  return s.crypto_core_ristretto255_scalar_reduce(h.digest());
}

// ---------------------------------------------------------------------------------------------
// Points

/** s·G. Refuses a zero or malformed scalar (the product would be the identity). */
export function baseMul(k: Scalar): Point {
  const s = lib();
  if (k.length !== SCALAR_BYTES) throw invalid('a scalar must be 32 bytes');
  let out: Uint8Array;
  try {
    out = s.crypto_scalarmult_ristretto255_base(k);
  } catch {
    throw invalid('the scalar is zero');
  }
  if (isZeroBytes(out)) throw invalid('the product is the identity');
  return out;
}

/**
 * s·P. Refuses a point that is not a canonical encoding or is the identity, and a product that is
 * the identity (s ≡ 0). libsodium's crypto_scalarmult_ristretto255 decodes P with the same check as
 * crypto_core_ristretto255_is_valid_point and fails on an identity result, so no second decode is
 * paid here (≈ 8 µs of a ≈ 120 µs multiplication); the output is checked again regardless.
 */
export function mul(k: Scalar, P: Point): Point {
  const s = lib();
  if (k.length !== SCALAR_BYTES || !(P instanceof Uint8Array) || P.length !== POINT_BYTES) throw invalid('a scalar and a point must be 32 bytes each');
  let out: Uint8Array;
  try {
    out = s.crypto_scalarmult_ristretto255(k, P);
  } catch {
    throw invalid('the point is not a valid non-identity element, or the product is the identity');
  }
  if (isZeroBytes(out)) throw invalid('the product is the identity');
  return out;
}

/** P + Q. Both must be canonical encodings (the identity is allowed); the sum may be the identity. */
export function add(P: Point, Q: Point): Point {
  const s = lib();
  try {
    return s.crypto_core_ristretto255_add(P, Q);
  } catch {
    throw invalid('a point is not a valid encoding');
  }
}

/** P − Q, with the same rules as {@link add}. */
export function sub(P: Point, Q: Point): Point {
  const s = lib();
  try {
    return s.crypto_core_ristretto255_sub(P, Q);
  } catch {
    throw invalid('a point is not a valid encoding');
  }
}

/** Constant-time equality of two encodings (ristretto255 encodings are canonical, so bytes equal ⇔ elements equal). */
export function pointEquals(P: Uint8Array, Q: Uint8Array): boolean {
  return P.length === POINT_BYTES && Q.length === POINT_BYTES && timingSafeEqual(P, Q);
}

/** True for the identity's canonical encoding (32 zero bytes). */
export function isIdentity(P: Uint8Array): boolean {
  return P.length === POINT_BYTES && isZeroBytes(P);
}

/**
 * Validates a point from outside: 32 bytes, a canonical ristretto255 encoding, not the identity.
 * Returns a copy (a plain Uint8Array). Throws TESSERA_SECRET_POINT_INVALID.
 */
export function decodePoint(bytes: Uint8Array): Point {
  const s = lib();
  if (!(bytes instanceof Uint8Array) || bytes.length !== POINT_BYTES) throw invalid('a point must be 32 bytes');
  if (isZeroBytes(bytes) || !s.crypto_core_ristretto255_is_valid_point(bytes)) throw invalid('not a canonical non-identity ristretto255 point');
  return new Uint8Array(bytes);
}

/** True if `err` is a group-level refusal (used by verifiers that answer false instead of throwing). */
export function isGroupError(err: unknown): boolean {
  return isTesseraError(err) && err.code === 'TESSERA_SECRET_POINT_INVALID';
}

// ---------------------------------------------------------------------------------------------
// Identity-tolerant helpers (distributed key generation, dkg*.ts)
//
// The functions above refuse the identity and zero so that a blind-evaluation caller never handles a
// degenerate element. Verifiable secret sharing needs them inside sums: a refresh polynomial has the
// constant term 0 (its commitment is the identity), and a commitment to a random coefficient is the
// identity with probability 1/ℓ. These helpers allow both; the values they handle are public or are
// compared, never used as a key.

/** The canonical encoding of the identity (32 zero bytes). A fresh copy each call. */
export function identityPoint(): Point {
  return new Uint8Array(POINT_BYTES);
}

/** The scalar 0. A fresh copy each call. */
export function zeroScalar(): Scalar {
  return new Uint8Array(SCALAR_BYTES);
}

/** True for the scalar 0 (reads all bytes whatever their values). */
export function isZeroScalar(k: Uint8Array): boolean {
  return k.length === SCALAR_BYTES && isZeroBytes(k);
}

/** Like {@link decodeScalar} but accepts 0: 32 bytes, canonical (< ℓ). Returns a copy. */
export function decodeScalarOrZero(bytes: Uint8Array): Scalar {
  if (!(bytes instanceof Uint8Array) || bytes.length !== SCALAR_BYTES) throw invalid('a scalar must be 32 bytes');
  if (!isCanonicalScalar(bytes)) throw invalid('the scalar is not canonical');
  return new Uint8Array(bytes);
}

/** Like {@link decodePoint} but accepts the identity (32 zero bytes). Returns a copy. */
export function decodePointOrIdentity(bytes: Uint8Array): Point {
  if (bytes instanceof Uint8Array && bytes.length === POINT_BYTES && isZeroBytes(bytes)) return identityPoint();
  return decodePoint(bytes);
}

/** k·G, the identity when k = 0. */
export function baseMulOrIdentity(k: Scalar): Point {
  if (k.length !== SCALAR_BYTES) throw invalid('a scalar must be 32 bytes');
  return isZeroBytes(k) ? identityPoint() : baseMul(k);
}

/** k·P, the identity when k = 0 or P is the identity (P must otherwise be a valid point). */
export function mulOrIdentity(k: Scalar, P: Point): Point {
  if (k.length !== SCALAR_BYTES || !(P instanceof Uint8Array) || P.length !== POINT_BYTES) throw invalid('a scalar and a point must be 32 bytes each');
  if (isZeroBytes(k) || isZeroBytes(P)) {
    if (!isZeroBytes(P)) decodePoint(P);
    return identityPoint();
  }
  return mul(k, P);
}

/**
 * A group element nobody knows the discrete logarithm of: SHA-512 over the domain and
 * length-prefixed parts (as {@link hashToScalar}), mapped by libsodium's
 * crypto_core_ristretto255_from_hash (RFC 9496 §4.3.4, the one-way map applied twice and added).
 * Pedersen commitments need such a second generator H: whoever knew log_G H could open a
 * commitment to any value.
 *
 * @example const H = hashToPoint('tessera/v1/dkg/pedersen-h')
 */
export function hashToPoint(domain: string, ...parts: Uint8Array[]): Point {
  const s = lib();
  const h = createHash('sha512');
  const prefix = Buffer.alloc(4);
  const d = Buffer.from(domain, 'utf8');
  prefix.writeUInt32BE(d.length, 0);
  h.update(prefix).update(d);
  for (const p of parts) {
    prefix.writeUInt32BE(p.length, 0);
    h.update(prefix).update(p);
  }
  const out = s.crypto_core_ristretto255_from_hash(h.digest());
  if (isZeroBytes(out)) throw fail('TESSERA_INTERNAL', 'hashToPoint: the identity');
  return out;
}

/** libsodium once {@link ready} resolved (the DKG's X25519 sealed boxes share the same instance). */
export function sodiumLib(): typeof sodium {
  return lib();
}

// ---------------------------------------------------------------------------------------------
// Helpers

/** Branch-free on the data: all 32 (or n) bytes are read whatever their values. */
function isZeroBytes(b: Uint8Array): boolean {
  let acc = 0;
  for (let i = 0; i < b.length; i++) acc |= b[i]!;
  return acc === 0;
}

/** b < ℓ, by a borrow chain over all 32 bytes (no early exit: shares are checked with it). */
function isCanonicalScalar(b: Uint8Array): boolean {
  let borrow = 0;
  for (let i = 0; i < SCALAR_BYTES; i++) borrow = ((b[i]! - ORDER_LE[i]! - borrow) >> 8) & 1;
  return borrow === 1;
}

function bigintToLe(v: bigint): Uint8Array {
  const out = new Uint8Array(SCALAR_BYTES);
  let x = v;
  for (let i = 0; i < SCALAR_BYTES; i++) {
    out[i] = Number(x & 0xffn);
    x >>= 8n;
  }
  return out;
}
