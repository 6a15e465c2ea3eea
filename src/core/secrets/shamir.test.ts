import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { expectTesseraError } from '../../../test/support/expect.js';
import { baseMul, mul, pointEquals, randomScalar, ready, scalarAdd, scalarFromInt, type Scalar } from './group.js';
import { applyRefresh, combinePoints, combineScalars, dealRefresh, lagrangeAt0, publicShare, refreshShares, split, verifyShare, type Share } from './shamir.js';

beforeAll(ready);

const eq = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a).equals(Buffer.from(b));

/** Every k-subset of xs, in order. */
function subsets<T>(xs: T[], k: number): T[][] {
  if (k === 0) return [[]];
  if (xs.length < k) return [];
  const [head, ...rest] = xs;
  return [...subsets(rest, k - 1).map((s) => [head!, ...s]), ...subsets(rest, k)];
}

/** t ≤ n ≤ 7. */
const arbTN = fc.integer({ min: 1, max: 7 }).chain((n) => fc.tuple(fc.integer({ min: 1, max: n }), fc.constant(n)));

describe('split and combine', () => {
  it('every t-subset recovers k with Lagrange at 0, and no (t−1)-subset does (t ≤ n ≤ 7)', () => {
    fc.assert(
      fc.property(arbTN, ([t, n]) => {
        const k = randomScalar();
        const { shares, commitments } = split(k, t, n);
        expect(shares.map((s) => s.index)).toEqual(Array.from({ length: n }, (_, i) => i + 1));
        expect(commitments).toHaveLength(t);
        expect(pointEquals(commitments[0]!, baseMul(k))).toBe(true);
        for (const subset of subsets(shares, t)) expect(eq(combineScalars(subset), k)).toBe(true);
        if (t >= 2) for (const subset of subsets(shares, t - 1)) expect(eq(combineScalars(subset), k)).toBe(false);
      }),
      { numRuns: 60 },
    );
  });

  it('random subsets in random order recover k', () => {
    fc.assert(
      fc.property(
        arbTN.chain(([t, n]) => fc.tuple(fc.constant(t), fc.constant(n), fc.shuffledSubarray(Array.from({ length: n }, (_, i) => i), { minLength: t, maxLength: t }))),
        ([t, n, picks]) => {
          const k = randomScalar();
          const { shares } = split(k, t, n);
          expect(eq(combineScalars(picks.map((i) => shares[i]!)), k)).toBe(true);
        },
      ),
      { numRuns: 100 },
    );
  });

  it('combinePoints over t partials f(i)·X gives k·X; over t−1 it does not', () => {
    for (const [t, n] of [[2, 3], [3, 5]] as const) {
      const k = randomScalar();
      const { shares } = split(k, t, n);
      const X = baseMul(randomScalar());
      const kX = mul(k, X);
      const partials = shares.map((s) => ({ index: s.index, point: mul(s.value, X) }));
      for (const subset of subsets(partials, t)) expect(pointEquals(combinePoints(subset), kX)).toBe(true);
      for (const subset of subsets(partials, t - 1)) expect(pointEquals(combinePoints(subset), kX)).toBe(false);
    }
  });

  it('a 1-of-n sharing gives every server k itself', () => {
    const k = randomScalar();
    const { shares, commitments } = split(k, 1, 3);
    for (const s of shares) expect(eq(s.value, k)).toBe(true);
    expect(commitments).toHaveLength(1);
  });

  it('split does not keep or alter the caller\'s secret', () => {
    const k = randomScalar();
    const before = new Uint8Array(k);
    const { shares } = split(k, 2, 3);
    expect(eq(k, before)).toBe(true);
    expect(eq(combineScalars(shares.slice(1)), before)).toBe(true);
  });

  it('refuses bad thresholds and a zero or non-canonical secret', () => {
    const k = randomScalar();
    for (const [t, n] of [[0, 3], [4, 3], [2, 256], [1.5, 3], [2, Number.NaN]]) expectTesseraError(() => split(k, t!, n!), 'TESSERA_BAD_REQUEST');
    expectTesseraError(() => split(new Uint8Array(32), 2, 3), 'TESSERA_SECRET_POINT_INVALID');
    expectTesseraError(() => split(new Uint8Array(32).fill(0xff), 2, 3), 'TESSERA_SECRET_POINT_INVALID');
  });
});

describe('lagrangeAt0', () => {
  it('coefficients sum to 1 (they interpolate the constant polynomial 1)', () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer({ min: 1, max: 255 }), { minLength: 1, maxLength: 10 }), (xs) => {
        const sum = lagrangeAt0(xs).reduce((a: Scalar, b) => scalarAdd(a, b));
        expect(eq(sum, scalarFromInt(1))).toBe(true);
      }),
    );
  });

  it('refuses duplicates, 0, 256, non-integers and an empty set', () => {
    for (const xs of [[1, 1], [0, 1], [1, 256], [1.5, 2], [], [Number.NaN]]) expectTesseraError(() => lagrangeAt0(xs), 'TESSERA_SECRET_SHARE_INVALID');
  });
});

describe('Feldman verification', () => {
  it('accepts every real share and its public share matches value·G', () => {
    fc.assert(
      fc.property(arbTN, ([t, n]) => {
        const { shares, commitments } = split(randomScalar(), t, n);
        for (const s of shares) {
          expect(verifyShare(s, commitments)).toBe(true);
          expect(pointEquals(publicShare(s.index, commitments), baseMul(s.value))).toBe(true);
        }
      }),
      { numRuns: 15 },
    );
  });

  it('rejects a tampered share: value changed, index moved, other commitments, malformed', () => {
    const { shares, commitments } = split(randomScalar(), 3, 5);
    const other = split(randomScalar(), 3, 5).commitments;
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 4 }), fc.integer({ min: 1, max: 2 ** 30 }), fc.integer({ min: 1, max: 4 }), (i, delta, shift) => {
        const s = shares[i]!;
        expect(verifyShare({ index: s.index, value: scalarAdd(s.value, scalarFromInt(delta)) }, commitments)).toBe(false);
        expect(verifyShare({ index: ((s.index - 1 + shift) % 5) + 1, value: s.value }, commitments)).toBe(false);
        expect(verifyShare(s, other)).toBe(false);
      }),
      { numRuns: 20 },
    );
    const s = shares[0]!;
    expect(verifyShare({ index: 0, value: s.value }, commitments)).toBe(false);
    expect(verifyShare({ index: 256, value: s.value }, commitments)).toBe(false);
    expect(verifyShare({ index: 1, value: new Uint8Array(32) }, commitments)).toBe(false);
    expect(verifyShare({ index: 1, value: new Uint8Array(32).fill(0xff) }, commitments)).toBe(false);
    expect(verifyShare(s, [])).toBe(false);
    expect(verifyShare(null as unknown as Share, commitments)).toBe(false);
    expect(verifyShare(s, [new Uint8Array(32), ...commitments.slice(1)])).toBe(false);
    expect(verifyShare(s, commitments.slice(0, 2))).toBe(false);
  });
});

describe('refreshShares', () => {
  it('keeps k and P_p, changes every share, and old and new shares do not mix', () => {
    for (const [t, n] of [[2, 3], [3, 5]] as const) {
      const k = randomScalar();
      const old = split(k, t, n);
      const next = refreshShares(old.shares, old.commitments);
      expect(pointEquals(next.commitments[0]!, old.commitments[0]!)).toBe(true);
      for (let j = 1; j < t; j++) expect(pointEquals(next.commitments[j]!, old.commitments[j]!)).toBe(false);
      for (const [i, s] of next.shares.entries()) {
        expect(s.index).toBe(old.shares[i]!.index);
        expect(eq(s.value, old.shares[i]!.value)).toBe(false);
        expect(verifyShare(s, next.commitments)).toBe(true);
        expect(verifyShare(s, old.commitments)).toBe(false);
        expect(verifyShare(old.shares[i]!, next.commitments)).toBe(false);
      }
      for (const subset of subsets(next.shares, t)) expect(eq(combineScalars(subset), k)).toBe(true);
      // Every t-subset of indices, each index taken from the old or the new generation, at least one of each.
      for (const idx of subsets(old.shares.map((_, i) => i), t)) {
        for (let mask = 1; mask < (1 << t) - 1; mask++) {
          const mixed: Share[] = idx.map((i, pos) => ((mask >> pos) & 1 ? next.shares[i]! : old.shares[i]!));
          expect(eq(combineScalars(mixed), k)).toBe(false);
        }
      }
    }
  });

  it('refreshes twice in a row, and a subset of the servers alone', () => {
    const k = randomScalar();
    const a = split(k, 3, 5);
    const b = refreshShares(a.shares, a.commitments);
    const c = refreshShares(b.shares.slice(1), b.commitments);
    expect(c.shares.map((s) => s.index)).toEqual([2, 3, 4, 5]);
    expect(eq(combineScalars(c.shares.slice(0, 3)), k)).toBe(true);
  });

  it('refuses a share that does not verify, duplicates, and a 1-of-n sharing', () => {
    const { shares, commitments } = split(randomScalar(), 2, 3);
    const tampered = [{ index: 1, value: scalarAdd(shares[0]!.value, scalarFromInt(1)) }, ...shares.slice(1)];
    expectTesseraError(() => refreshShares(tampered, commitments), 'TESSERA_SECRET_SHARE_INVALID');
    expectTesseraError(() => refreshShares([shares[0]!, shares[0]!], commitments), 'TESSERA_SECRET_SHARE_INVALID');
    const one = split(randomScalar(), 1, 3);
    expectTesseraError(() => refreshShares(one.shares, one.commitments), 'TESSERA_BAD_REQUEST');
  });
});

describe('dealRefresh and applyRefresh (a refresh through key servers that each hold one share)', () => {
  it('each server applies its own delta; every server computes the same new commitments; the key stays', () => {
    fc.assert(
      fc.property(arbTN.filter(([t]) => t >= 2), ([t, n]) => {
        const k = randomScalar();
        const old = split(k, t, n);
        const deal = dealRefresh(t, n);
        expect(deal.deltas.map((d) => d.index)).toEqual(Array.from({ length: n }, (_, i) => i + 1));
        expect(deal.D).toHaveLength(t - 1);
        // g(0) = 0: the deltas alone interpolate to zero.
        expect(eq(combineScalars(deal.deltas.slice(0, t)), new Uint8Array(32))).toBe(true);
        const out = old.shares.map((s, i) => applyRefresh(s, old.commitments, deal.deltas[i]!, deal.D));
        for (const o of out) {
          expect(o.commitments.map((c) => Buffer.from(c).toString('hex'))).toEqual(out[0]!.commitments.map((c) => Buffer.from(c).toString('hex')));
          expect(pointEquals(o.commitments[0]!, old.commitments[0]!)).toBe(true);
          expect(verifyShare(o.share, o.commitments)).toBe(true);
        }
        for (const subset of subsets(out.map((o) => o.share), t)) expect(eq(combineScalars(subset), k)).toBe(true);
      }),
      { numRuns: 25 },
    );
  });

  it('refuses a delta that does not match D, another index, wrong-length D, a bad current share, a 1-of-n sharing', () => {
    const old = split(randomScalar(), 3, 5);
    const deal = dealRefresh(3, 5);
    const s = old.shares[1]!;
    const bumped = { index: 2, value: scalarAdd(deal.deltas[1]!.value, scalarFromInt(1)) };
    expectTesseraError(() => applyRefresh(s, old.commitments, bumped, deal.D), 'TESSERA_SECRET_SHARE_INVALID');
    expectTesseraError(() => applyRefresh(s, old.commitments, deal.deltas[2]!, deal.D), 'TESSERA_SECRET_SHARE_INVALID');
    expectTesseraError(() => applyRefresh(s, old.commitments, deal.deltas[1]!, deal.D.slice(0, 1)), 'TESSERA_SECRET_SHARE_INVALID');
    expectTesseraError(() => applyRefresh(s, old.commitments, deal.deltas[1]!, [...deal.D].reverse()), 'TESSERA_SECRET_SHARE_INVALID');
    expectTesseraError(() => applyRefresh(s, old.commitments, deal.deltas[1]!, [deal.D[0]!, new Uint8Array(32)]), 'TESSERA_SECRET_SHARE_INVALID');
    expectTesseraError(() => applyRefresh({ index: 2, value: scalarAdd(s.value, scalarFromInt(1)) }, old.commitments, deal.deltas[1]!, deal.D), 'TESSERA_SECRET_SHARE_INVALID');
    expectTesseraError(() => applyRefresh(s, old.commitments, { index: 2, value: new Uint8Array(32) }, deal.D), 'TESSERA_SECRET_SHARE_INVALID');
    expectTesseraError(() => dealRefresh(1, 3), 'TESSERA_BAD_REQUEST');
    const one = split(randomScalar(), 1, 2);
    expectTesseraError(() => applyRefresh(one.shares[0]!, one.commitments, deal.deltas[0]!, []), 'TESSERA_SECRET_SHARE_INVALID');
  });
});
