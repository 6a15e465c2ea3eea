/**
 * In-memory key servers for tests and benchmarks: a dealer splits a fresh policy key t-of-n and each
 * simulated server answers blinded requests with its share. Never used by the product itself.
 */
import { evaluateAndProve, blind, combineEvaluations, unblind, unsealContext, type Evaluation } from './blind.js';
import { openWithPoint, parseBlob, type ParsedBlob } from './blob.js';
import { baseMul, randomScalar, type Point, type Scalar } from './group.js';
import { split, type Share } from './shamir.js';

export interface FakeKeyServer {
  share: Share;
  /** k_i·G, precomputed as a real key server would. */
  K: Point;
  answer(B: Point, context: Uint8Array): Evaluation;
}

export interface FakePolicy {
  id: string;
  epoch: number;
  t: number;
  n: number;
  /** The policy key itself: tests only, to compute k·R directly. */
  k: Scalar;
  commitments: Point[];
  publicKey: Point;
  servers: FakeKeyServer[];
}

export function fakePolicy(t: number, n: number, id = 'shop.db', epoch = 1): FakePolicy {
  const k = randomScalar();
  const { shares, commitments } = split(k, t, n);
  const servers = shares.map((share): FakeKeyServer => {
    const K = baseMul(share.value);
    return { share, K, answer: (B, context) => evaluateAndProve(share, B, context, K) };
  });
  return { id, epoch, t, n, k, commitments, publicKey: commitments[0]!, servers };
}

/** The whole agent flow against the given servers (the first t that answer well are used). */
export function unsealInMemory(blob: Uint8Array, policy: FakePolicy, servers: FakeKeyServer[] = policy.servers.slice(0, policy.t)): { plain: Buffer; bad: number[]; parsed: ParsedBlob } {
  const parsed = parseBlob(blob);
  const { b, B } = blind(parsed.R);
  const context = unsealContext(parsed.policyId, parsed.epoch);
  const evals = servers.map((s) => s.answer(B, context));
  const { point, bad } = combineEvaluations(evals, policy.commitments, B, policy.t, context);
  return { plain: openWithPoint(parsed, unblind(point, b)), bad, parsed };
}
