/**
 * The unseal math: the agent blinds a blob's R, t key servers each multiply the blinded point by
 * their share and prove it, the agent checks every proof, combines t good answers with Lagrange
 * coefficients and unblinds, which yields k_p·R = r·P_p, the point the blob's key is derived from.
 *
 * ```
 * agent:  parsed = parseBlob(blob); { b, B } = blind(parsed.R)            → B (uniformly random) to t servers
 * server: evaluateAndProve(share, B, unsealContext(policyId, epoch), K_i)  → { index, Z, proof }
 * agent:  { point } = combineEvaluations(evals, commitments, B, t, ctx); Z = unblind(point, b)
 *         plain = openWithPoint(parsed, Z)
 *         (or, one multiplication cheaper: Z = combineAndUnblind(evals, commitments, { b, B }, t, ctx).point)
 * ```
 *
 * A server sees B = b·R only: for a fresh uniform b ≠ 0 and R ≠ identity in a prime-order group, B is
 * uniform over the non-identity elements, independent of R, the ciphertext and the plaintext.
 */
import { fail } from '../errors.js';
import { proveDleq, verifyDleq, type DleqProof } from './dleq.js';
import { add, baseMul, decodePoint, mul, randomScalar, scalarInv, scalarMul, type Point, type Scalar } from './group.js';
import { isSecretPolicyId } from './blob.js';
import { MAX_SHARES, checkIndex, combinePoints, decodeCommitments, lagrangeAt0, publicShareOf, type IndexedPoint, type Share } from './shamir.js';

export interface Blinded {
  /** The blind, secret to the agent; needed once more by {@link unblind}. */
  b: Scalar;
  /** b·R, what is sent to the key servers. */
  B: Point;
}

/** One key server's answer. */
export interface Evaluation {
  index: number;
  /** k_i·B */
  Z: Point;
  proof: DleqProof;
}

export interface Combined {
  /** From t evaluations whose proofs verified: k·B (combineEvaluations) or k·R (combineAndUnblind). */
  point: Point;
  /** Indices whose proof failed (or whose index or point was malformed), in input order. */
  bad: number[];
}

/** Picks a fresh blind b and returns b·R. Refuses an invalid or identity R. */
export function blind(R: Point): Blinded {
  const b = randomScalar();
  return { b, B: mul(b, R) };
}

/** k_i·B: the key server's side. Refuses an invalid or identity B (TESSERA_SECRET_POINT_INVALID, a 400). */
export function evaluate(share: Scalar, B: Point): Point {
  return mul(share, B);
}

/** b⁻¹·Z. */
export function unblind(Z: Point, b: Scalar): Point {
  const inv = scalarInv(b);
  try {
    return mul(inv, Z);
  } finally {
    inv.fill(0);
  }
}

/**
 * The DLEQ context both sides bind an evaluation to: the policy and its key epoch. A proof made for
 * one policy or epoch does not verify for another.
 */
export function unsealContext(policyId: string, epoch: number): Uint8Array {
  if (!isSecretPolicyId(policyId) || !Number.isInteger(epoch) || epoch < 0 || epoch > 0xffffffff) {
    throw fail('TESSERA_BAD_REQUEST', 'invalid policy id or key epoch');
  }
  const tag = Buffer.from('tessera/v1/unseal', 'ascii');
  const out = Buffer.alloc(tag.length + 2 + policyId.length + 4);
  tag.copy(out, 0);
  out.writeUInt16BE(policyId.length, tag.length);
  out.write(policyId, tag.length + 2, 'latin1');
  out.writeUInt32BE(epoch, tag.length + 2 + policyId.length);
  return new Uint8Array(out);
}

/**
 * The key server's whole answer: Z = k_i·B and its proof against K_i = k_i·G. Pass the server's
 * precomputed K_i to save a base multiplication (≈ 45 µs) per request.
 */
export function evaluateAndProve(share: Share, B: Point, context: Uint8Array, K: Point = baseMul(share.value)): Evaluation {
  checkIndex(share.index);
  const Z = evaluate(share.value, B);
  return { index: share.index, Z, proof: proveDleq(share.value, B, K, Z, context) };
}

/**
 * The agent's check-and-combine: verifies every evaluation's DLEQ proof against the public share
 * K_i computed from the commitments, reports the failures in `bad`, and combines t good ones (the
 * lowest indices) with Lagrange coefficients into k·B. Throws TESSERA_SECRET_THRESHOLD when fewer
 * than t distinct indices verify, TESSERA_BAD_REQUEST when t does not match the commitments.
 *
 * Public shares are memoized per commitment set (they depend on nothing else), so an agent
 * unsealing repeatedly under one policy pays the t-1 multiplications per server once.
 *
 * @example const { point, bad } = combineEvaluations(evals, commitments, B, commitments.length, ctx);
 */
export function combineEvaluations(evals: Evaluation[], commitments: Point[], B: Point, t: number, context: Uint8Array): Combined {
  const { chosen, bad } = verifyAndPick(evals, commitments, B, t, context);
  return { point: combinePoints(chosen), bad };
}

/**
 * {@link combineEvaluations} followed by {@link unblind}, one multiplication cheaper: b⁻¹ is folded
 * into the Lagrange coefficients, Σ (λ_i·b⁻¹)·Z_i = b⁻¹·k·B = k·R. Returns k·R, ready for
 * `openWithPoint`.
 */
export function combineAndUnblind(evals: Evaluation[], commitments: Point[], blinded: Blinded, t: number, context: Uint8Array): Combined {
  const { chosen, bad } = verifyAndPick(evals, commitments, blinded.B, t, context);
  const inv = scalarInv(blinded.b);
  try {
    return { point: lagrangeUnblind(chosen, inv), bad };
  } finally {
    inv.fill(0);
  }
}

/**
 * The agent's side of one unseal when answers arrive one by one: {@link offer} checks each answer's
 * DLEQ proof as soon as it is in (so the first proofs are checked while later answers are still on
 * their way), {@link combineAndUnblind} combines the verified ones. Only answers this collector
 * verified are ever combined, each proof is checked once, the blinded point and the public shares
 * are decoded once per unseal. Same result as {@link combineAndUnblind} on the same evaluations.
 *
 * @example
 * const c = new EvaluationCollector(commitments, blinded, t, context);
 * for (const ev of answers) if (!c.offer(ev)) report(ev.index);   // as each one arrives
 * if (c.complete) open(parsed, c.combineAndUnblind());
 */
export class EvaluationCollector {
  private readonly good = new Map<number, Point>();
  /** Indices whose answer was malformed or whose proof failed, in offer order. */
  readonly bad: number[] = [];
  private readonly B: Point;
  private inv: Scalar | undefined;
  private finished = false;

  constructor(private readonly commitments: Point[], private readonly blinded: Blinded, readonly t: number, private readonly context: Uint8Array) {
    if (!Number.isInteger(t) || t < 1 || !Array.isArray(commitments) || t !== commitments.length) {
      throw fail('TESSERA_BAD_REQUEST', 'the threshold does not match the number of commitments');
    }
    this.B = decodePoint(blinded.B);
  }

  /** Verified answers so far (distinct indices). */
  get count(): number {
    return this.good.size;
  }

  get complete(): boolean {
    return this.good.size >= this.t;
  }

  /**
   * Computes b⁻¹ ahead of {@link combineAndUnblind} (≈ 40 µs): call it while the answers are on
   * their way. Optional; does nothing once combined or wiped.
   */
  precompute(): void {
    if (!this.finished) this.inv ??= scalarInv(this.blinded.b);
  }

  /** Zeroes b⁻¹ if it was computed and no combination follows (a failed unseal). */
  wipe(): void {
    this.finished = true;
    this.inv?.fill(0);
    this.inv = undefined;
  }

  /**
   * Checks one answer: a valid index and a DLEQ proof that Z = k_i·B for the K_i the commitments
   * give. True if it verified (kept), false if not (recorded in `bad`); an index already verified is
   * not checked again and gives true without replacing the first answer.
   */
  offer(e: Evaluation): boolean {
    const index = e.index;
    if (!Number.isInteger(index) || index < 1 || index > MAX_SHARES) {
      this.bad.push(index);
      return false;
    }
    if (this.good.has(index)) return true;
    if (verifyDleq(e.proof, this.B, publicShareCached(index, this.commitments), e.Z, this.context)) {
      this.good.set(index, new Uint8Array(e.Z));
      return true;
    }
    this.bad.push(index);
    return false;
  }

  /**
   * k·R from t verified answers (the lowest indices): Σ (λ_i·b⁻¹)·Z_i. TESSERA_SECRET_THRESHOLD
   * when fewer than t verified. Zeroes b⁻¹ after (the caller zeroes b).
   */
  combineAndUnblind(): Point {
    if (this.good.size < this.t) {
      throw fail('TESSERA_SECRET_THRESHOLD', `${this.good.size} valid key-server evaluations, ${this.t} needed (${this.bad.length} failed their proof)`);
    }
    const chosen = [...this.good.entries()].sort((a, b) => a[0] - b[0]).slice(0, this.t).map(([index, point]) => ({ index, point }));
    const inv = this.inv ?? scalarInv(this.blinded.b);
    this.inv = undefined;
    this.finished = true;
    try {
      return lagrangeUnblind(chosen, inv);
    } finally {
      inv.fill(0);
    }
  }
}

/** Σ (λ_i·b⁻¹)·Z_i over exactly the chosen points, given b⁻¹. */
function lagrangeUnblind(chosen: IndexedPoint[], inv: Scalar): Point {
  const lambdas = lagrangeAt0(chosen.map((c) => c.index));
  let acc: Point | undefined;
  for (const [i, c] of chosen.entries()) {
    const coeff = scalarMul(lambdas[i]!, inv);
    const term = mul(coeff, c.point);
    coeff.fill(0);
    acc = acc === undefined ? term : add(acc, term);
  }
  return acc!;
}

function verifyAndPick(evals: Evaluation[], commitments: Point[], B: Point, t: number, context: Uint8Array): { chosen: IndexedPoint[]; bad: number[] } {
  if (!Number.isInteger(t) || t < 1 || !Array.isArray(commitments) || t !== commitments.length) {
    throw fail('TESSERA_BAD_REQUEST', 'the threshold does not match the number of commitments');
  }
  const blinded = decodePoint(B);
  const good = new Map<number, Point>();
  const bad: number[] = [];
  for (const e of evals) {
    const index = e.index;
    if (!Number.isInteger(index) || index < 1 || index > MAX_SHARES) {
      bad.push(index);
      continue;
    }
    if (good.has(index)) continue;
    const K = publicShareCached(index, commitments);
    if (verifyDleq(e.proof, blinded, K, e.Z, context)) good.set(index, new Uint8Array(e.Z));
    else bad.push(index);
  }
  if (good.size < t) {
    throw fail('TESSERA_SECRET_THRESHOLD', `${good.size} valid key-server evaluations, ${t} needed (${bad.length} failed their proof)`);
  }
  const chosen = [...good.entries()].sort((a, b) => a[0] - b[0]).slice(0, t);
  return { chosen: chosen.map(([index, point]) => ({ index, point })), bad };
}

// ---------------------------------------------------------------------------------------------

const CACHE_LIMIT = 256;
/** commitments (base64) → index → K_i. Insertion-ordered, so the oldest set is evicted first. */
const publicShares = new Map<string, Map<number, Point>>();

function publicShareCached(index: number, commitments: Point[]): Point {
  // 32 bytes each, so the concatenation identifies the list (full validation happens on a miss).
  for (const c of commitments) if (!(c instanceof Uint8Array) || c.length !== 32) throw fail('TESSERA_SECRET_SHARE_INVALID', 'a commitment must be 32 bytes');
  const key = Buffer.concat(commitments).toString('base64');
  let perIndex = publicShares.get(key);
  if (perIndex === undefined) {
    decodeCommitments(commitments);
    if (publicShares.size >= CACHE_LIMIT) publicShares.delete(publicShares.keys().next().value!);
    perIndex = new Map();
    publicShares.set(key, perIndex);
  }
  let K = perIndex.get(index);
  if (K === undefined) {
    K = publicShareOf(index, commitments);
    perIndex.set(index, K);
  }
  return K;
}
