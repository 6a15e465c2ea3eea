import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { expectTesseraError } from '../../../test/support/expect.js';
import { bodyOf, eq, expectAgreement, expectUnseal, names, newKeyParams, runSession, servers, sessionId, sharesOf, sorted, spiffe, subsets, testKeys } from './dkg-fixtures.js';
import type { DkgBody } from './dkg-wire.js';
import { DkgParticipant, DkgRelayView, dkgSchedule, verifyTranscript, type DkgParams } from './dkg.js';
import { generatorH } from './dkg-session.js';
import { evalPoly, interpolate } from './dkg-judge.js';
import {
  baseMul,
  baseMulOrIdentity,
  decodePoint,
  decodePointOrIdentity,
  decodeScalar,
  decodeScalarOrZero,
  hashToPoint,
  identityPoint,
  isIdentity,
  isZeroScalar,
  mul,
  mulOrIdentity,
  pointEquals,
  randomScalar,
  ready,
  scalarFromBigint,
  scalarFromInt,
  zeroScalar,
  type Point,
} from './group.js';
import { combineScalars, verifyShare, type Share } from './shamir.js';

beforeAll(ready);

describe('group helpers for the DKG', () => {
  it('H is a fixed valid point other than G, from the hash-to-group map', () => {
    const H = generatorH();
    expect(eq(H, generatorH())).toBe(true);
    expect(eq(H, hashToPoint('tessera/v1/dkg/pedersen-generator-H'))).toBe(true);
    expect(eq(H, hashToPoint('tessera/v1/dkg/pedersen-generator-H', new Uint8Array(1)))).toBe(false);
    expect(eq(H, baseMul(scalarFromInt(1)))).toBe(false);
  });

  it('identity-tolerant helpers: 0·P and k·O are the identity, decoders accept exactly 0 / O in addition', () => {
    const P = baseMul(randomScalar());
    const k = randomScalar();
    expect(isIdentity(mulOrIdentity(zeroScalar(), P))).toBe(true);
    expect(isIdentity(mulOrIdentity(k, identityPoint()))).toBe(true);
    expect(eq(mulOrIdentity(k, P), mul(k, P))).toBe(true);
    expect(isIdentity(baseMulOrIdentity(zeroScalar()))).toBe(true);
    expectTesseraError(() => mulOrIdentity(k, new Uint8Array(32).fill(0xff)), 'TESSERA_SECRET_POINT_INVALID');
    expect(isZeroScalar(decodeScalarOrZero(new Uint8Array(32)))).toBe(true);
    expectTesseraError(() => decodeScalarOrZero(new Uint8Array(32).fill(0xff)), 'TESSERA_SECRET_POINT_INVALID');
    expect(eq(decodeScalarOrZero(scalarFromBigint(-1n)), scalarFromBigint(-1n))).toBe(true);
    expect(isIdentity(decodePointOrIdentity(new Uint8Array(32)))).toBe(true);
    expectTesseraError(() => decodePointOrIdentity(new Uint8Array(32).fill(0xff)), 'TESSERA_SECRET_POINT_INVALID');
    // the existing decoders still refuse them
    expectTesseraError(() => decodePoint(new Uint8Array(32)), 'TESSERA_SECRET_POINT_INVALID');
    expectTesseraError(() => decodeScalar(new Uint8Array(32)), 'TESSERA_SECRET_POINT_INVALID');
  });

  it('interpolate recovers the coefficients of a degree t-1 polynomial from any t points', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 6 }), fc.uniqueArray(fc.integer({ min: 1, max: 255 }), { minLength: 6, maxLength: 6 }), (t, xs) => {
        const coeffs = Array.from({ length: t }, () => randomScalar());
        const got = interpolate(xs.slice(0, t).map((x) => ({ x, y: evalPoly(coeffs, x) })));
        expect(got.map((c) => Buffer.from(c).toString('hex'))).toEqual(coeffs.map((c) => Buffer.from(c).toString('hex')));
      }),
      { numRuns: 30 },
    );
  });
});

describe('new key (GJKR)', () => {
  it('n 2..7, t 1..n, a random QUAL: t shares give k with k·G = P = commitments[0], t-1 do not; every share verifies; the transcript verifies', () => {
    const arb = fc
      .integer({ min: 2, max: 7 })
      .chain((n) => fc.integer({ min: 1, max: n }).chain((t) => fc.tuple(fc.constant(t), fc.constant(n), fc.subarray(Array.from({ length: n }, (_, i) => i + 1), { minLength: t }))));
    fc.assert(
      fc.property(arb, ([t, n, qual]) => {
        const params = newKeyParams(t, n);
        // Dealers outside `qual` decline to deal (an empty deal): they stay receivers.
        const mutate = new Map(
          names(n)
            .map((nm, i) => [spiffe(nm), i + 1] as const)
            .filter(([, i]) => !qual.includes(i))
            .map(([id]) => [id, (b: DkgBody): DkgBody => (b.round === 'deal' ? { ...b, commitments: [], boxes: [] } : b)] as const),
        );
        const out = runSession(params, { mutate: new Map(mutate) });
        expect(out.errors.size).toBe(0);
        const r = expectAgreement(params, out);
        expect(r.qual).toEqual(qual);
        const shares = sharesOf(out);
        expect(shares).toHaveLength(n);
        const k = combineScalars(shares.slice(0, t));
        expect(pointEquals(baseMul(k), r.publicKey)).toBe(true);
        for (const s of subsets(shares, t).slice(0, 5)) expect(eq(combineScalars(s), k)).toBe(true);
        if (t >= 2) for (const s of subsets(shares, t - 1).slice(0, 5)) expect(eq(combineScalars(s), k)).toBe(false);
      }),
      { numRuns: 12 },
    );
  });

  it('a blob sealed with seal() under the generated P opens through blind/evaluate/combine with the new shares', () => {
    const params = newKeyParams(3, 5);
    const out = runSession(params);
    const r = expectAgreement(params, out);
    expectUnseal(r, sharesOf(out), 3);
  });

  it('the relay view: rounds per kind, who is present or missing, and a log verifyTranscript accepts', () => {
    expect(dkgSchedule('dkg')).toEqual(['hello', 'deal', 'complaints', 'answers', 'feldman', 'feldmanComplaints', 'reconstruct', 'confirm']);
    expect(dkgSchedule('refresh')).not.toContain('reconstruct');
    const params = newKeyParams(2, 3);
    const out = runSession(params);
    expect(out.relay.missing('deal')).toEqual([]);
    expect(out.relay.present('hello')).toEqual(names(3).map(spiffe));
    const verdict = verifyTranscript(params, out.keys.verifier, out.relay.log());
    expect(verdict.confirmedBy).toHaveLength(3);
    expectTesseraError(() => out.relay.add(out.seen[0]), 'TESSERA_DKG_MESSAGE_INVALID');
    const other = new DkgRelayView(newKeyParams(2, 3));
    expectTesseraError(() => other.add(out.seen[0]), 'TESSERA_DKG_MESSAGE_INVALID');
    expect(other.missing('hello')).toHaveLength(3);
  });
});

describe('public verification', () => {
  it('verifyTranscript recomputes the result from the signed messages alone and names a server that confirms something else', () => {
    const params = newKeyParams(2, 3);
    const liar = (b: DkgBody): DkgBody => (b.round === 'confirm' ? { ...b, publicKey: baseMul(randomScalar()) } : b);
    const out = runSession(params, { mutate: new Map([[spiffe('ks1'), liar]]) });
    const verdict = verifyTranscript(params, out.keys.verifier, out.seen);
    expect(verdict.confirmedBy).toEqual([spiffe('ks2'), spiffe('ks3')]);
    expect(verdict.disagreeing).toEqual([spiffe('ks1')]);
    expect(eq(verdict.publicKey, out.results.get(spiffe('ks2'))!.publicKey)).toBe(true);
    // a log with a round missing, or with another session's messages only, leads to no result
    expectTesseraError(() => verifyTranscript(params, out.keys.verifier, out.seen.filter((m) => bodyOf(m).round !== 'deal')), 'TESSERA_DKG_ABORTED');
    expectTesseraError(() => verifyTranscript(newKeyParams(2, 3), out.keys.verifier, out.seen), 'TESSERA_DKG_ABORTED');
  });
});

describe('refresh without a dealer', () => {
  it('keeps P, changes the other commitments, new shares verify and combine to k; old and new shares do not mix', () => {
    for (const [t, n] of [[2, 3], [3, 5]] as const) {
      const params = newKeyParams(t, n);
      const gen = runSession(params);
      const before = expectAgreement(params, gen);
      const oldShares = sharesOf(gen);
      const k = combineScalars(oldShares.slice(0, t));
      const refresh: DkgParams = { kind: 'refresh', session: sessionId(), policyId: 'shop.db', epoch: 1, servers: params.servers, commitments: before.commitments };
      const out = runSession(refresh, { shares: new Map(oldShares.map((s) => [spiffe(`ks${s.index}`), s])) });
      expect(out.errors.size).toBe(0);
      const after = expectAgreement(refresh, out);
      expect(eq(after.publicKey, before.publicKey)).toBe(true);
      expect(after.commitments.slice(1).some((c, i) => eq(c, before.commitments[i + 1]!))).toBe(false);
      const fresh = sharesOf(out);
      expect(fresh.every((s, i) => !eq(s.value, oldShares[i]!.value))).toBe(true);
      expect(eq(combineScalars(fresh.slice(0, t)), k)).toBe(true);
      // one old share with t-1 new ones: not the key
      const mixed = [oldShares[0]!, ...fresh.slice(1, t)];
      expect(eq(combineScalars(mixed), k)).toBe(false);
      expect(fresh.every((s) => !verifyShare(s, before.commitments))).toBe(true);
      expectUnseal(after, fresh, t);
    }
  });

  it('refuses a 1-of-n refresh and a server whose share does not match the old commitments', () => {
    const params = newKeyParams(2, 3);
    const gen = runSession(params);
    const r = sorted(gen)[0]!;
    const keys = testKeys([spiffe('ks1')]);
    const bad: DkgParams = { kind: 'refresh', session: sessionId(), policyId: 'shop.db', epoch: 1, servers: params.servers, commitments: [r.publicKey] };
    expectTesseraError(() => DkgParticipant.start(bad, { spiffeId: spiffe('ks1'), share: r.share! }, keys.signers.get(spiffe('ks1'))!, keys.verifier), 'TESSERA_DKG_PARAMS_INVALID');
    const good: DkgParams = { ...bad, commitments: r.commitments };
    const wrong = { index: 1, value: sharesOf(gen)[1]!.value };
    expectTesseraError(() => DkgParticipant.start(good, { spiffeId: spiffe('ks1'), share: wrong }, keys.signers.get(spiffe('ks1'))!, keys.verifier), 'TESSERA_DKG_PARAMS_INVALID');
    expectTesseraError(() => DkgParticipant.start(good, { spiffeId: spiffe('ks1') }, keys.signers.get(spiffe('ks1'))!, keys.verifier), 'TESSERA_DKG_PARAMS_INVALID');
  });
});

describe('reshare (verifiable secret redistribution)', () => {
  function reshare(fromT: number, oldCommitments: Point[], oldServers: { index: number; spiffeId: string }[], oldShares: Map<string, Share>, t: number, newServers: { index: number; spiffeId: string }[]) {
    const params: DkgParams = { kind: 'reshare', session: sessionId(), policyId: 'shop.db', epoch: 1, t, servers: newServers, old: { commitments: oldCommitments, servers: oldServers } };
    const out = runSession(params, { shares: oldShares });
    expect(out.errors.size).toBe(0);
    const r = expectAgreement(params, out);
    expect(r.qual).toHaveLength(fromT);
    return { out, r, params };
  }

  it('2-of-3 → 3-of-5 (other indices, one server in both sets) → 2-of-3 keeps P and k', () => {
    const params = newKeyParams(2, 3);
    const gen = runSession(params);
    const g = expectAgreement(params, gen);
    const k = combineScalars(sharesOf(gen).slice(0, 2));
    const oldShares = new Map(sharesOf(gen).map((s) => [spiffe(`ks${s.index}`), s]));
    // new set: ks3 (old index 3, new index 1) and ks4..ks7
    const next = [{ index: 1, spiffeId: spiffe('ks3') }, ...servers(names(4, 3), 2)];
    const a = reshare(2, g.commitments, params.servers, oldShares, 3, next);
    expect(eq(a.r.publicKey, g.publicKey)).toBe(true);
    expect(a.r.commitments).toHaveLength(3);
    const five = sharesOf(a.out);
    expect(five.map((s) => s.index)).toEqual([1, 2, 3, 4, 5]);
    for (const s of subsets(five, 3).slice(0, 6)) expect(eq(combineScalars(s), k)).toBe(true);
    expect(eq(combineScalars(five.slice(0, 2)), k)).toBe(false);
    // ks1 and ks2 only dealt: no share, but a result (they can delete their old share)
    expect(a.out.results.get(spiffe('ks1'))!.share).toBeUndefined();
    expectUnseal(a.r, five, 3);

    // 3-of-5 → 2-of-3 onto ks5, ks6, ks8, dealt by only 4 of the 5 (ks7 is away)
    const bySpiffe = new Map([...a.out.results.entries()].filter(([, r]) => r.share).map(([id, r]) => [id, r.share!]));
    const back = [{ index: 1, spiffeId: spiffe('ks5') }, { index: 2, spiffeId: spiffe('ks6') }, { index: 3, spiffeId: spiffe('ks8') }];
    const oldSet = next.filter((s) => s.spiffeId !== spiffe('ks7'));
    const b = reshare(3, a.r.commitments, oldSet, bySpiffe, 2, back);
    expect(eq(b.r.publicKey, g.publicKey)).toBe(true);
    expect(b.r.qual).toEqual([1, 2, 3]);
    const three = sharesOf(b.out);
    expect(eq(combineScalars(three.slice(1, 3)), k)).toBe(true);
    expectUnseal(b.r, three, 2);
  });
});

describe('parameters', () => {
  it('are refused with TESSERA_DKG_PARAMS_INVALID when malformed', () => {
    const good = newKeyParams(2, 3) as Extract<DkgParams, { kind: 'dkg' }>;
    const keys = testKeys([spiffe('ks1')]);
    const start = (p: unknown, me = spiffe('ks1')) => DkgParticipant.start(p as DkgParams, { spiffeId: me }, keys.signers.get(spiffe('ks1'))!, keys.verifier);
    const cases: unknown[] = [
      null,
      { ...good, session: new Uint8Array(15) },
      { ...good, policyId: 'Bad Id' },
      { ...good, epoch: -1 },
      { ...good, t: 0 },
      { ...good, t: 4 },
      { ...good, servers: [...good.servers, good.servers[0]] },
      { ...good, servers: [{ index: 0, spiffeId: spiffe('x') }] },
      { ...good, servers: [{ index: 1, spiffeId: 'not-spiffe' }] },
      { ...good, kind: 'other' },
      { ...good, kind: 'reshare', old: { commitments: [new Uint8Array(32)], servers: good.servers } },
      { ...good, kind: 'reshare', old: { commitments: [baseMul(new Uint8Array(32).fill(1)), baseMul(new Uint8Array(32).fill(2))], servers: good.servers.slice(0, 1) } },
    ];
    for (const c of cases) expectTesseraError(() => start(c), 'TESSERA_DKG_PARAMS_INVALID');
    expectTesseraError(() => start(good, spiffe('stranger')), 'TESSERA_DKG_PARAMS_INVALID');
  });
});
