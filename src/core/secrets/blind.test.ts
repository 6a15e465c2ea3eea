import { beforeAll, describe, expect, it } from 'vitest';
import { expectTesseraError } from '../../../test/support/expect.js';
import { EvaluationCollector, blind, combineAndUnblind, combineEvaluations, evaluate, evaluateAndProve, unblind, unsealContext, type Evaluation } from './blind.js';
import { openWithPoint, parseBlob, seal } from './blob.js';
import { proveDleq } from './dleq.js';
import { fakePolicy, unsealInMemory, type FakeKeyServer, type FakePolicy } from './fixtures.js';
import { add, baseMul, mul, pointEquals, randomScalar, ready, scalarFromInt, scalarNeg, type Point } from './group.js';
import { combinePoints } from './shamir.js';

beforeAll(ready);

const secret = Buffer.from('postgres://orders:s3cr3t@db.internal/orders');

function sealFor(p: FakePolicy, plain: Buffer = secret): Buffer {
  return seal(plain, { id: p.id, epoch: p.epoch, publicKey: p.publicKey });
}

/** A key server that answers with `z(B)` instead of k_i·B, and proves whatever it can. */
function lying(server: FakeKeyServer, z: (B: Point, context: Uint8Array) => Evaluation): FakeKeyServer {
  return { ...server, answer: z };
}

describe('unseal end to end, in memory', () => {
  it.each([[2, 3], [3, 5]])('%i-of-%i: every t-subset of servers opens the blob', (t, n) => {
    const p = fakePolicy(t, n);
    const blob = sealFor(p);
    const subsets: FakeKeyServer[][] = [];
    for (let mask = 0; mask < 1 << n; mask++) {
      const chosen = p.servers.filter((_, i) => (mask >> i) & 1);
      if (chosen.length === t) subsets.push(chosen);
    }
    for (const servers of subsets) {
      const { plain, bad } = unsealInMemory(blob, p, servers);
      expect(plain.equals(secret)).toBe(true);
      expect(bad).toEqual([]);
    }
  });

  it('the unblinded result is k·R = r·P_p, what seal derived its key from', () => {
    const p = fakePolicy(2, 3);
    const parsed = parseBlob(sealFor(p));
    const { b, B } = blind(parsed.R);
    const ctx = unsealContext(p.id, p.epoch);
    const { point } = combineEvaluations(p.servers.map((s) => s.answer(B, ctx)), p.commitments, B, 2, ctx);
    expect(pointEquals(point, mul(p.k, B))).toBe(true);
    expect(pointEquals(unblind(point, b), mul(p.k, parsed.R))).toBe(true);
  });

  it('combineAndUnblind gives the same k·R as combineEvaluations + unblind, and reports the same bad', () => {
    for (const [t, n] of [[1, 2], [2, 3], [3, 5]] as const) {
      const p = fakePolicy(t, n);
      const parsed = parseBlob(sealFor(p));
      const blinded = blind(parsed.R);
      const ctx = unsealContext(p.id, p.epoch);
      const liar = { ...p.servers[0]!.answer(blinded.B, ctx), Z: baseMul(randomScalar()) };
      const evals = [liar, ...p.servers.slice(1).map((s) => s.answer(blinded.B, ctx))];
      const fused = combineAndUnblind(evals, p.commitments, blinded, t, ctx);
      const plain = combineEvaluations(evals, p.commitments, blinded.B, t, ctx);
      expect(pointEquals(fused.point, unblind(plain.point, blinded.b))).toBe(true);
      expect(pointEquals(fused.point, mul(p.k, parsed.R))).toBe(true);
      expect(fused.bad).toEqual([1]);
      expect(openWithPoint(parsed, fused.point).equals(secret)).toBe(true);
    }
  });

  it('a server answering with a random point is caught by its proof, reported, and the others still open', () => {
    const p = fakePolicy(3, 5);
    const blob = sealFor(p);
    const liar = lying(p.servers[1]!, (B, ctx) => {
      const honest = p.servers[1]!.answer(B, ctx);
      return { ...honest, Z: baseMul(randomScalar()) };
    });
    const servers = [p.servers[0]!, liar, p.servers[2]!, p.servers[3]!];
    const { plain, bad } = unsealInMemory(blob, p, servers);
    expect(plain.equals(secret)).toBe(true);
    expect(bad).toEqual([2]);
  });

  it('a server answering with another share (k_j·B, with a valid proof for j) under its own index is caught', () => {
    const p = fakePolicy(2, 3);
    const blob = sealFor(p);
    const other = p.servers[2]!;
    const liar = lying(p.servers[0]!, (B, ctx) => ({ ...other.answer(B, ctx), index: 1 }));
    const { plain, bad } = unsealInMemory(blob, p, [liar, p.servers[1]!, other]);
    expect(plain.equals(secret)).toBe(true);
    expect(bad).toEqual([1]);
  });

  it('a server proving honestly for a different B (a replayed answer) is caught', () => {
    const p = fakePolicy(2, 3);
    const blob = sealFor(p);
    const stale = p.servers[0]!.answer(baseMul(randomScalar()), unsealContext(p.id, p.epoch));
    const liar = lying(p.servers[0]!, () => stale);
    const { plain, bad } = unsealInMemory(blob, p, [liar, p.servers[1]!, p.servers[2]!]);
    expect(plain.equals(secret)).toBe(true);
    expect(bad).toEqual([1]);
  });

  it('fewer than t good answers: TESSERA_SECRET_THRESHOLD, also when one good answer is sent twice', () => {
    const p = fakePolicy(3, 5);
    const blob = sealFor(p);
    const liar = lying(p.servers[0]!, (B, ctx) => ({ ...p.servers[0]!.answer(B, ctx), Z: mul(randomScalar(), B) }));
    const err = expectTesseraError(() => unsealInMemory(blob, p, [liar, p.servers[1]!, p.servers[2]!]), 'TESSERA_SECRET_THRESHOLD');
    expect(err.message).toMatch(/2 valid .* 3 needed \(1 failed/);
    expectTesseraError(() => unsealInMemory(blob, p, [p.servers[1]!, p.servers[1]!, p.servers[2]!]), 'TESSERA_SECRET_THRESHOLD');
    expectTesseraError(() => unsealInMemory(blob, p, []), 'TESSERA_SECRET_THRESHOLD');
  });

  it('answers proven under another policy\'s or epoch\'s context are all bad', () => {
    const p = fakePolicy(2, 3);
    const parsed = parseBlob(sealFor(p));
    const { B } = blind(parsed.R);
    const evals = p.servers.map((s) => s.answer(B, unsealContext(p.id, p.epoch + 1)));
    const err = expectTesseraError(() => combineEvaluations(evals, p.commitments, B, 2, unsealContext(p.id, p.epoch)), 'TESSERA_SECRET_THRESHOLD');
    expect(err.message).toMatch(/0 valid/);
  });

  it('malformed answers (bad index, invalid Z, garbage proof) are reported as bad, never thrown', () => {
    const p = fakePolicy(2, 3);
    const parsed = parseBlob(sealFor(p));
    const { B } = blind(parsed.R);
    const ctx = unsealContext(p.id, p.epoch);
    const good = p.servers.map((s) => s.answer(B, ctx));
    const evals: Evaluation[] = [
      { ...good[0]!, index: 0 },
      { ...good[0]!, index: 9 },
      { ...good[0]!, Z: new Uint8Array(32) },
      { ...good[0]!, Z: new Uint8Array(32).fill(0xff) },
      { ...good[1]!, proof: { c: new Uint8Array(32), s: new Uint8Array(32) } },
      good[2]!,
      good[0]!,
    ];
    const { point, bad } = combineEvaluations(evals, p.commitments, B, 2, ctx);
    expect(bad).toEqual([0, 9, 1, 1, 2]);
    expect(pointEquals(point, mul(p.k, B))).toBe(true);
  });

  it('two colluding servers of a 3-of-5 cannot open: their Lagrange combination is not k·R', () => {
    const p = fakePolicy(3, 5);
    const parsed = parseBlob(sealFor(p));
    const kR = mul(p.k, parsed.R);
    for (let i = 0; i < 5; i++) {
      for (let j = i + 1; j < 5; j++) {
        const pair = [p.servers[i]!, p.servers[j]!].map((s) => ({ index: s.share.index, point: evaluate(s.share.value, parsed.R) }));
        const guess = combinePoints(pair);
        expect(pointEquals(guess, kR)).toBe(false);
        expectTesseraError(() => openWithPoint(parsed, guess), 'TESSERA_SECRET_BLOB_INVALID');
      }
    }
  });

  it('what a server sees: B differs from R and simple functions of it, and two blindings of one R differ', () => {
    const p = fakePolicy(2, 3);
    const parsed = parseBlob(sealFor(p));
    const R = parsed.R;
    const fixed = [R, add(R, R), add(R, add(R, R)), mul(scalarNeg(scalarFromInt(1)), R), mul(p.k, R), p.publicKey];
    const seen = new Set<string>();
    for (let i = 0; i < 64; i++) {
      const { b, B } = blind(R);
      for (const f of fixed) expect(pointEquals(B, f)).toBe(false);
      seen.add(Buffer.from(B).toString('hex'));
      expect(pointEquals(mul(b, R), B)).toBe(true);
    }
    expect(seen.size).toBe(64);
    // Byte-level sanity: across blindings, every bit position of B takes both values.
    const ones = new Array<number>(256).fill(0);
    const N = 200;
    for (let i = 0; i < N; i++) {
      const { B } = blind(R);
      for (let bit = 0; bit < 256; bit++) ones[bit]! += (B[bit >> 3]! >> (bit & 7)) & 1;
    }
    // The top bit of a canonical encoding is always 0 and the lowest always 0 (s is even); the rest vary.
    const varying = ones.filter((c) => c > 0 && c < N).length;
    expect(varying).toBeGreaterThanOrEqual(250);
  });

  it('evaluate and blind refuse the identity and invalid points; combine refuses a mismatched threshold', () => {
    const p = fakePolicy(2, 3);
    const share = p.servers[0]!.share;
    for (const bad of [new Uint8Array(32), new Uint8Array(32).fill(0xff)]) {
      expectTesseraError(() => evaluate(share.value, bad), 'TESSERA_SECRET_POINT_INVALID');
      expectTesseraError(() => evaluateAndProve(share, bad, unsealContext(p.id, 1)), 'TESSERA_SECRET_POINT_INVALID');
      expectTesseraError(() => blind(bad), 'TESSERA_SECRET_POINT_INVALID');
    }
    const { B } = blind(baseMul(randomScalar()));
    const ctx = unsealContext(p.id, 1);
    const evals = p.servers.map((s) => s.answer(B, ctx));
    expectTesseraError(() => combineEvaluations(evals, p.commitments, B, 3, ctx), 'TESSERA_BAD_REQUEST');
    expectTesseraError(() => combineEvaluations(evals, p.commitments, B, 1, ctx), 'TESSERA_BAD_REQUEST');
    expectTesseraError(() => combineEvaluations(evals, p.commitments, new Uint8Array(32), 2, ctx), 'TESSERA_SECRET_POINT_INVALID');
    expectTesseraError(() => combineEvaluations(evals, [new Uint8Array(32), p.commitments[1]!], B, 2, ctx), 'TESSERA_SECRET_SHARE_INVALID');
  });

  it('evaluateAndProve computes K itself when not given, and proves against it', () => {
    const p = fakePolicy(2, 3);
    const { B } = blind(baseMul(randomScalar()));
    const ctx = unsealContext(p.id, p.epoch);
    const evals = p.servers.slice(0, 2).map((s) => evaluateAndProve(s.share, B, ctx));
    expect(combineEvaluations(evals, p.commitments, B, 2, ctx).bad).toEqual([]);
    // A proof made with a K that is not the share's public key does not verify.
    const s = p.servers[2]!;
    const Z = evaluate(s.share.value, B);
    const forged = { index: 3, Z, proof: proveDleq(s.share.value, B, baseMul(randomScalar()), Z, ctx) };
    expect(combineEvaluations([forged, ...evals], p.commitments, B, 2, ctx).bad).toEqual([3]);
  });

  it('unsealContext binds policy id and epoch, and refuses invalid ones', () => {
    expect(Buffer.from(unsealContext('a', 1)).equals(Buffer.from(unsealContext('a', 2)))).toBe(false);
    expect(Buffer.from(unsealContext('a', 1)).equals(Buffer.from(unsealContext('b', 1)))).toBe(false);
    for (const [id, e] of [['A', 1], ['', 1], ['a', -1], ['a', 2 ** 32], ['a', 0.5]] as const) {
      expectTesseraError(() => unsealContext(id, e), 'TESSERA_BAD_REQUEST');
    }
  });
});

describe('EvaluationCollector: answers checked one by one as they arrive', () => {
  it.each([[2, 3], [3, 5]])('%i-of-%i: complete after t verified answers, same k·R as combineAndUnblind, liars in bad', (t, n) => {
    const p = fakePolicy(t, n);
    const parsed = parseBlob(sealFor(p));
    const blinded = blind(parsed.R);
    const ctx = unsealContext(p.id, p.epoch);
    const answers = p.servers.map((s) => s.answer(blinded.B, ctx));
    const liar = { ...answers[0]!, Z: baseMul(randomScalar()) };
    const c = new EvaluationCollector(p.commitments, blinded, t, ctx);
    expect(c.offer(liar)).toBe(false);
    c.precompute();
    for (let i = 1; i <= t; i++) {
      expect(c.complete).toBe(false);
      expect(c.offer(answers[i]!)).toBe(true);
      expect(c.count).toBe(i);
    }
    expect(c.complete).toBe(true);
    expect(c.bad).toEqual([1]);
    const point = c.combineAndUnblind();
    expect(pointEquals(point, mul(p.k, parsed.R))).toBe(true);
    expect(pointEquals(point, combineAndUnblind(answers.slice(1, t + 1), p.commitments, blinded, t, ctx).point)).toBe(true);
    expect(openWithPoint(parsed, point).equals(secret)).toBe(true);
  });

  it('refuses to combine fewer than t verified answers, counts a repeated index once, reports malformed ones', () => {
    const p = fakePolicy(2, 3);
    const blinded = blind(parseBlob(sealFor(p)).R);
    const ctx = unsealContext(p.id, p.epoch);
    const good = p.servers.map((s) => s.answer(blinded.B, ctx));
    const c = new EvaluationCollector(p.commitments, blinded, 2, ctx);
    expect(c.offer({ ...good[0]!, index: 0 })).toBe(false);
    expect(c.offer({ ...good[0]!, Z: new Uint8Array(32) })).toBe(false);
    expect(c.offer({ ...good[1]!, proof: { c: new Uint8Array(32), s: new Uint8Array(32) } })).toBe(false);
    expect(c.offer({ ...good[2]!, proof: good[1]!.proof })).toBe(false);
    expect(c.offer(good[0]!)).toBe(true);
    expect(c.offer(good[0]!)).toBe(true);
    expect(c.count).toBe(1);
    expect(c.bad).toEqual([0, 1, 2, 3]);
    const err = expectTesseraError(() => c.combineAndUnblind(), 'TESSERA_SECRET_THRESHOLD');
    expect(err.message).toMatch(/1 valid .* 2 needed/);
    c.wipe();
    expectTesseraError(() => new EvaluationCollector(p.commitments, blinded, 3, ctx), 'TESSERA_BAD_REQUEST');
  });

  it('answers proven for another B or under another context do not verify', () => {
    const p = fakePolicy(2, 3);
    const blinded = blind(parseBlob(sealFor(p)).R);
    const ctx = unsealContext(p.id, p.epoch);
    const c = new EvaluationCollector(p.commitments, blinded, 2, ctx);
    expect(c.offer(p.servers[0]!.answer(baseMul(randomScalar()), ctx))).toBe(false);
    expect(c.offer(p.servers[1]!.answer(blinded.B, unsealContext(p.id, p.epoch + 1)))).toBe(false);
    expect(c.count).toBe(0);
  });
});
