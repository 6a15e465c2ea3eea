/**
 * Chaum–Pedersen proof of discrete-log equality, made non-interactive with Fiat–Shamir: a key server
 * shows that log_G(K) = log_B(Z), i.e. that its answer Z = k_i·B used the same k_i as its published
 * public share K = k_i·G (the shape of RFC 9497's VOPRF proof, for a single element).
 *
 * Prover: nonce n; A1 = n·G, A2 = n·B; c = H(K, B, Z, A1, A2, context); s = n − c·k.
 * Verifier: A1 = s·G + c·K, A2 = s·B + c·Z; accept iff H(K, B, Z, A1, A2, context) = c.
 * The proof is (c, s): 64 bytes.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { fail } from '../errors.js';
import { add, baseMul, decodeScalar, hashToScalar, isGroupError, mul, scalarMul, scalarSub, type Point, type Scalar } from './group.js';

export interface DleqProof {
  c: Scalar;
  s: Scalar;
}

export const PROOF_BYTES = 64;

const DST_NONCE = 'tessera/v1/dleq/nonce';
const DST_CHALLENGE = 'tessera/v1/dleq/challenge';

/**
 * Proves log_G(K) = log_B(Z) = k. The nonce is hedged: derived from (k, B, K, Z, context) and 32 fresh
 * random bytes, so neither a weak RNG nor a fault that repeats inputs can reuse a nonce with a
 * different challenge (which would reveal k). The caller is trusted to pass K = k·G and Z = k·B;
 * with anything else the proof simply does not verify.
 *
 * @example const Z = evaluate(share.value, B); const proof = proveDleq(share.value, B, K, Z, context);
 */
export function proveDleq(k: Scalar, B: Point, K: Point, Z: Point, context: Uint8Array): DleqProof {
  for (;;) {
    const fresh = randomBytes(32);
    const n = hashToScalar(DST_NONCE, k, B, K, Z, context, fresh);
    fresh.fill(0);
    let A1: Point;
    let A2: Point;
    try {
      A1 = baseMul(n);
      A2 = mul(n, B);
    } catch (err) {
      // n = 0 happens with probability 2^-252; a bad B is the caller's error and is rethrown.
      if (isGroupError(err) && isZero(n)) continue;
      throw err;
    }
    const c = challenge(K, B, Z, A1, A2, context);
    const s = scalarSub(n, scalarMul(c, k));
    n.fill(0);
    return { c, s };
  }
}

/**
 * Checks a proof that log_G(K) = log_B(Z) under `context`. Never throws: any malformed element
 * (non-canonical scalar, invalid or identity point) is a false.
 * Costs one base and three variable-base multiplications.
 */
export function verifyDleq(proof: DleqProof, B: Point, K: Point, Z: Point, context: Uint8Array): boolean {
  try {
    if (typeof proof !== 'object' || proof === null) return false;
    const c = decodeScalar(proof.c);
    const s = decodeScalar(proof.s);
    // mul() refuses a non-canonical, invalid or identity B, K or Z (libsodium decodes each with the
    // is_valid_point rules), so they need no separate decodePoint here (≈ 8 µs each); and since the
    // encodings are canonical, the bytes hashed below are the only encodings of those elements.
    const A1 = add(baseMul(s), mul(c, K));
    const A2 = add(mul(s, B), mul(c, Z));
    return timingSafeEqual(c, challenge(K, B, Z, A1, A2, context));
  } catch (err) {
    if (isGroupError(err)) return false;
    throw err;
  }
}

/** c ‖ s, 64 bytes, for the wire. */
export function encodeProof(proof: DleqProof): Uint8Array {
  const out = new Uint8Array(PROOF_BYTES);
  out.set(proof.c, 0);
  out.set(proof.s, 32);
  return out;
}

/** Splits 64 bytes into (c, s); TESSERA_SECRET_PROOF_INVALID on a wrong length. Canonicity is checked by {@link verifyDleq}. */
export function decodeProof(bytes: Uint8Array): DleqProof {
  if (!(bytes instanceof Uint8Array) || bytes.length !== PROOF_BYTES) throw fail('TESSERA_SECRET_PROOF_INVALID', 'a proof must be 64 bytes');
  return { c: new Uint8Array(bytes.subarray(0, 32)), s: new Uint8Array(bytes.subarray(32, 64)) };
}

function challenge(K: Point, B: Point, Z: Point, A1: Point, A2: Point, context: Uint8Array): Scalar {
  return hashToScalar(DST_CHALLENGE, K, B, Z, A1, A2, context);
}

function isZero(b: Uint8Array): boolean {
  let acc = 0;
  for (const x of b) acc |= x;
  return acc === 0;
}
