/**
 * Every way a server or the relay can misbehave during a session, and what the honest servers end
 * with: the right key (and the same one as without the cheater, when it can no longer be biased),
 * provable blame, or a clean TESSERA_DKG_ABORTED with nothing output.
 */
import { randomBytes } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { expectTesseraError } from '../../../test/support/expect.js';
import { bodyOf, eq, expectAgreement, newKeyParams, resign, runSession, sessionId, sharesOf, spiffe, testKeys, type RunOutcome } from './dkg-fixtures.js';
import { dkgSchedule, type DkgParams, type DkgParticipant, type DkgRound } from './dkg.js';
import type { PublicDkg } from './dkg-judge.js';
import { SHARE_BOX_BYTES, type DkgBody, type Pair } from './dkg-wire.js';
import { add, baseMul, pointEquals, randomScalar, ready, sodiumLib, type Point } from './group.js';
import { combineScalars } from './shamir.js';
import { sharePlaintext } from './dkg-judge.js';

beforeAll(ready);

type Hook = (body: DkgBody, p: DkgParticipant) => DkgBody;
interface Internals {
  pub: PublicDkg;
  feldman: Point[];
  channels: Map<number, { publicKey: Uint8Array; privateKey: Uint8Array }>;
  session: { digest: Uint8Array };
}
const inside = (p: DkgParticipant) => p as unknown as Internals;
const ks = (i: number) => spiffe(`ks${i}`);

/** The key the live shares give, checked against P. */
function keyOf(out: RunOutcome, t: number): Uint8Array {
  const shares = sharesOf(out);
  const k = combineScalars(shares.slice(0, t));
  expect(pointEquals(baseMul(k), [...out.results.values()][0]!.publicKey)).toBe(true);
  if (shares.length > t) expect(eq(combineScalars(shares.slice(shares.length - t)), k)).toBe(true);
  return k;
}

/** A hook that records each dealer's honest A_0 (= a_0·G) when it deals, to predict P. */
function recordA0(into: Map<number, Point>, index: number, then?: Hook): Hook {
  return (body, p) => {
    if (body.round === 'deal' && body.commitments.length > 0) into.set(index, new Uint8Array(inside(p).feldman[0]!));
    return then ? then(body, p) : body;
  };
}

function expectAborted(out: RunOutcome, who: string[]): void {
  expect(out.results.size).toBe(0);
  for (const id of who) {
    expect(out.errors.get(id)?.code).toBe('TESSERA_DKG_ABORTED');
    expect(out.participants.get(id)!.round).toBe('aborted');
    expectTesseraError(() => out.participants.get(id)!.next([]), 'TESSERA_DKG_ABORTED');
  }
}

/** A box that opens for `to` but holds a pair that is not on the dealer's polynomial. */
function wrongBox(p: DkgParticipant, dealer: number, to: number): Uint8Array {
  const pair: Pair = { s: randomScalar(), r: randomScalar() };
  const pub = inside(p).pub.keys.get(to)!.get(dealer)!;
  return sodiumLib().crypto_box_seal(sharePlaintext(inside(p).session.digest, dealer, to, pair), pub);
}

function corruptBoxes(dealer: number, targets: number[], how: 'garbage' | 'wrong'): Hook {
  return (body, p) => {
    if (body.round !== 'deal') return body;
    return { ...body, boxes: body.boxes.map((b) => (targets.includes(b.to) ? { to: b.to, box: how === 'garbage' ? new Uint8Array(randomBytes(SHARE_BOX_BYTES)) : wrongBox(p, dealer, b.to) } : b)) };
  };
}

describe('a dealer sending bad shares', () => {
  it.each(['garbage', 'wrong'] as const)('to one peer (%s box), answered with a valid reveal: the dealer stays in QUAL and the peer takes the revealed share', (how) => {
    const params = newKeyParams(3, 5);
    const out = runSession(params, { mutate: new Map([[ks(2), corruptBoxes(2, [4], how)]]) });
    expect(out.errors.size).toBe(0);
    const r = expectAgreement(params, out);
    expect(r.qual).toEqual([1, 2, 3, 4, 5]);
    expect(r.misbehaviour).toEqual([]);
    keyOf(out, 3);
  });

  it('answered with an invalid reveal: the dealer is out, and blamed', () => {
    const params = newKeyParams(3, 5);
    const lie: Hook = (body, p) => {
      const b = corruptBoxes(2, [4], 'wrong')(body, p);
      return b.round === 'answers' ? { ...b, reveals: b.reveals.map((x) => ({ ...x, s: randomScalar() })) } : b;
    };
    const out = runSession(params, { mutate: new Map([[ks(2), lie]]) });
    const r = expectAgreement(params, out);
    expect(r.qual).toEqual([1, 3, 4, 5]);
    expect(r.excluded).toEqual([{ index: 2, why: 'did not answer every founded complaint with a valid share' }]);
    expect(r.misbehaviour.map((m) => m.spiffeId)).toEqual([ks(2)]);
    keyOf(out, 3);
  });

  it('a dealer that stops instead of answering a complaint is out', () => {
    const params = newKeyParams(2, 4);
    const out = runSession(params, { mutate: new Map([[ks(3), corruptBoxes(3, [1], 'garbage')]]), stopAt: new Map([[ks(3), 'answers' as DkgRound]]) });
    const r = expectAgreement(params, out);
    expect(r.qual).toEqual([1, 2, 4]);
    keyOf(out, 2);
  });

  it('inconsistent across t or more peers: out without revealing anything', () => {
    const params = newKeyParams(2, 4);
    const out = runSession(params, { mutate: new Map([[ks(1), corruptBoxes(1, [2, 3], 'wrong')]]) });
    const r = expectAgreement(params, out);
    expect(r.qual).toEqual([2, 3, 4]);
    expect(r.excluded).toEqual([{ index: 1, why: 'at least t founded complaints' }]);
    const answers = out.seen.filter((m) => bodyOf(m).round === 'answers' && bodyOf(m).from === ks(1));
    expect(bodyOf(answers[0]!).reveals).toEqual([]);
    keyOf(out, 2);
  });

  it('a dealer that addresses the wrong receivers is out', () => {
    const params = newKeyParams(2, 3);
    const out = runSession(params, { mutate: new Map([[ks(3), (b: DkgBody) => (b.round === 'deal' ? { ...b, boxes: b.boxes.slice(1) } : b)]]) });
    const r = expectAgreement(params, out);
    expect(r.qual).toEqual([1, 2]);
  });
});

describe('complainers', () => {
  it('a false complaint (with its real channel key) is refuted in public: the dealer stays, the complainer is blamed', () => {
    const params = newKeyParams(3, 5);
    let key: Uint8Array | undefined;
    const liar: Hook = (body, p) => {
      if (body.round === 'deal') key = new Uint8Array(inside(p).channels.get(2)!.privateKey);
      if (body.round === 'complaints') return { ...body, accused: [{ dealer: 2, key: key! }] };
      return body;
    };
    const out = runSession(params, { mutate: new Map([[ks(4), liar]]) });
    const r = expectAgreement(params, out);
    expect(r.qual).toEqual([1, 2, 3, 4, 5]);
    expect(r.misbehaviour).toEqual([{ spiffeId: ks(4), round: 'complaints', what: 'complained falsely against dealer 2 (its share opens and verifies)' }]);
    keyOf(out, 3);
  });

  it('a complaint with a key that is not the published one is ignored and blamed', () => {
    const params = newKeyParams(2, 3);
    const liar: Hook = (body) => (body.round === 'complaints' ? { ...body, accused: [{ dealer: 1, key: new Uint8Array(randomBytes(32)) }] } : body);
    const out = runSession(params, { mutate: new Map([[ks(3), liar]]) });
    const r = expectAgreement(params, out);
    expect(r.qual).toEqual([1, 2, 3]);
    expect(r.misbehaviour.map((m) => [m.spiffeId, m.round])).toEqual([[ks(3), 'complaints']]);
  });

  it('t or more false complaints cannot push an honest dealer out', () => {
    const params = newKeyParams(2, 4);
    const keys = new Map<string, Uint8Array>();
    const liar = (id: string): Hook => (body, p) => {
      if (body.round === 'deal') keys.set(id, new Uint8Array(inside(p).channels.get(1)!.privateKey));
      if (body.round === 'complaints') return { ...body, accused: [{ dealer: 1, key: keys.get(id)! }] };
      return body;
    };
    const out = runSession(params, { mutate: new Map([[ks(3), liar(ks(3))], [ks(4), liar(ks(4))]]) });
    const r = expectAgreement(params, out);
    expect(r.qual).toEqual([1, 2, 3, 4]);
    expect(r.misbehaviour.map((m) => m.spiffeId).sort()).toEqual([ks(3), ks(4)]);
  });

  it('an unfounded Feldman complaint is blamed and changes nothing', () => {
    const params = newKeyParams(2, 3);
    const liar: Hook = (body) => (body.round === 'feldmanComplaints' ? { ...body, accused: [{ dealer: 1, s: randomScalar(), r: randomScalar() }] } : body);
    const out = runSession(params, { mutate: new Map([[ks(2), liar]]) });
    const r = expectAgreement(params, out);
    expect(r.qual).toEqual([1, 2, 3]);
    expect(r.misbehaviour).toEqual([{ spiffeId: ks(2), round: 'feldmanComplaints', what: 'unfounded Feldman complaint against dealer 1' }]);
  });
});

describe('a dealer cheating after QUAL (the GJKR point)', () => {
  it('wrong Feldman commitments: rebuilt in public from t shares; P is exactly what it would have been', () => {
    const params = newKeyParams(3, 5);
    const a0 = new Map<number, Point>();
    const bad: Hook = (body) => (body.round === 'feldman' && body.commitments.length > 0 ? { ...body, commitments: body.commitments.map((c, k) => (k === 1 ? baseMul(randomScalar()) : c)) } : body);
    const mutate = new Map<string, Hook>([1, 2, 3, 4, 5].map((i) => [ks(i), recordA0(a0, i, i === 3 ? bad : undefined)]));
    const out = runSession(params, { mutate });
    const r = expectAgreement(params, out);
    expect(r.qual).toEqual([1, 2, 3, 4, 5]);
    expect(r.misbehaviour.map((m) => [m.spiffeId, m.round])).toEqual([[ks(3), 'feldmanComplaints']]);
    const expected = [...a0.values()].reduce((acc, p) => add(acc, p));
    expect(pointEquals(r.publicKey, expected)).toBe(true);
    keyOf(out, 3);
  });

  it('a dealer that stops before publishing A_i: rebuilt, the same P, the others finish', () => {
    const params = newKeyParams(2, 4);
    const a0 = new Map<number, Point>();
    const out = runSession(params, { mutate: new Map([1, 2, 3, 4].map((i) => [ks(i), recordA0(a0, i)])), stopAt: new Map([[ks(2), 'feldman' as DkgRound]]) });
    const r = expectAgreement(params, out);
    expect(r.qual).toEqual([1, 2, 3, 4]);
    expect(pointEquals(r.publicKey, [...a0.values()].reduce((acc, p) => add(acc, p)))).toBe(true);
    keyOf(out, 2);
  });

  it('refresh: a dealer whose A_0 is not the identity is excluded and P is kept', () => {
    const params = newKeyParams(2, 4);
    const gen = runSession(params);
    const g = expectAgreement(params, gen);
    const refresh: DkgParams = { kind: 'refresh', session: sessionId(), policyId: 'shop.db', epoch: 1, servers: params.servers, commitments: g.commitments };
    const bad: Hook = (body) => (body.round === 'feldman' && body.commitments.length > 0 ? { ...body, commitments: [baseMul(randomScalar()), ...body.commitments.slice(1)] } : body);
    const out = runSession(refresh, { shares: new Map(sharesOf(gen).map((s) => [ks(s.index), s])), mutate: new Map([[ks(4), bad]]) });
    const r = expectAgreement(refresh, out);
    expect(r.qual).toEqual([1, 2, 3]);
    expect(r.excluded).toEqual([{ index: 4, why: 'its refresh polynomial does not share zero' }]);
    expect(eq(r.publicKey, g.publicKey)).toBe(true);
    expect(eq(combineScalars(sharesOf(out).slice(0, 2)), combineScalars(sharesOf(gen).slice(0, 2)))).toBe(true);
  });

  it('reshare: a dealer that reshares something other than its share (A_0 ≠ X_i) is excluded and P is kept', () => {
    const params = newKeyParams(2, 3);
    const gen = runSession(params);
    const g = expectAgreement(params, gen);
    const reshare: DkgParams = { kind: 'reshare', session: sessionId(), policyId: 'shop.db', epoch: 1, t: 2, servers: params.servers, old: { commitments: g.commitments, servers: params.servers } };
    const bad: Hook = (body) => (body.round === 'feldman' && body.commitments.length > 0 ? { ...body, commitments: [baseMul(randomScalar()), ...body.commitments.slice(1)] } : body);
    const out = runSession(reshare, { shares: new Map(sharesOf(gen).map((s) => [ks(s.index), s])), mutate: new Map([[ks(1), bad]]) });
    const r = expectAgreement(reshare, out);
    expect(r.qual).toEqual([2, 3]);
    expect(eq(r.publicKey, g.publicKey)).toBe(true);
    expect(eq(combineScalars(sharesOf(out).slice(1)), combineScalars(sharesOf(gen).slice(0, 2)))).toBe(true);
  });
});

describe('servers that stop', () => {
  it.each(dkgSchedule('dkg').map((r) => [r]))('a server that stops at %s: the others finish with the right key', (round) => {
    const params = newKeyParams(2, 4);
    const out = runSession(params, { stopAt: new Map([[ks(2), round as DkgRound]]) });
    expect(out.errors.size).toBe(0);
    const r = expectAgreement(params, out);
    expect(out.results.has(ks(2))).toBe(round === 'confirm');
    if (round !== 'confirm') expect(r.stopped).toEqual([{ spiffeId: ks(2), round }]);
    const beforeQual = ['hello', 'deal', 'complaints', 'answers'].includes(round);
    expect(r.qual).toEqual(beforeQual ? [1, 3, 4] : [1, 2, 3, 4]);
    keyOf(out, 2);
  });

  it('fewer than t left: TESSERA_DKG_ABORTED everywhere and nothing output', () => {
    const a = runSession(newKeyParams(3, 3), { stopAt: new Map([[ks(3), 'deal' as DkgRound]]) });
    expectAborted(a, [ks(1), ks(2)]);
    const b = runSession(newKeyParams(2, 3), { stopAt: new Map([[ks(1), 'complaints' as DkgRound], [ks(2), 'feldman' as DkgRound]]) });
    expectAborted(b, [ks(3)]);
  });

  it('too few qualified dealers: aborted', () => {
    const decline: Hook = (b) => (b.round === 'deal' ? { ...b, commitments: [], boxes: [] } : b);
    const out = runSession(newKeyParams(3, 4), { mutate: new Map([[ks(1), decline], [ks(2), decline]]) });
    expectAborted(out, [ks(1), ks(2), ks(3), ks(4)]);
  });
});

describe('the relay', () => {
  it('replaying, duplicating and reordering messages changes nothing; old-round and other-session messages are refused', () => {
    const params = newKeyParams(2, 3);
    const other = runSession(newKeyParams(2, 3));
    const history: unknown[] = [];
    const out = runSession(params, {
      deliver: (round, set) => {
        const shuffled = [...set, ...set].sort(() => Math.random() - 0.5);
        const extra = [...history, other.seen[0]];
        history.push(...set);
        return round === 'hello' ? shuffled : [...extra, ...shuffled];
      },
    });
    expect(out.errors.size).toBe(0);
    const r = expectAgreement(params, out);
    expect(r.qual).toEqual([1, 2, 3]);
    keyOf(out, 2);
  });

  it('dropping a message for one server only: the divergence is caught and everyone aborts', () => {
    const out = runSession(newKeyParams(2, 4), { deliver: (round, set, to) => (round === 'deal' && to === ks(1) ? set.filter((m) => bodyOf(m).from !== ks(3)) : set) });
    expectAborted(out, [ks(1), ks(2), ks(3), ks(4)]);
  });

  it('dropping a message for everyone: that server is out as if it stopped, and it aborts itself', () => {
    const params = newKeyParams(2, 4);
    const out = runSession(params, { onClose: (round, set) => (round === 'deal' ? set.filter((m) => bodyOf(m).from !== ks(4)) : set) });
    expect(out.errors.get(ks(4))?.code).toBe('TESSERA_DKG_ABORTED');
    expect([...out.results.keys()].sort()).toEqual([ks(1), ks(2), ks(3)]);
    const rs = [...out.results.values()];
    expect(rs.every((r) => eq(r.publicKey, rs[0]!.publicKey) && r.qual.join() === '1,2,3')).toBe(true);
  });

  it('tampering with a message: the signature fails, the message is ignored (the sender looks stopped)', () => {
    const out = runSession(newKeyParams(2, 3), {
      deliver: (round, set) =>
        set.map((m) => {
          if (round !== 'complaints' || bodyOf(m).from !== ks(2)) return m;
          const p = Buffer.from(m.payload, 'base64url');
          p[p.length - 3] = p[p.length - 3]! ^ 1;
          return { ...m, payload: p.toString('base64url') };
        }),
    });
    expect(out.errors.get(ks(2))?.code).toBe('TESSERA_DKG_ABORTED');
    expect(out.results.size).toBe(2);
    expect([...out.results.values()][0]!.stopped).toEqual([{ spiffeId: ks(2), round: 'complaints' }]);
  });

  it('a forged message (signed by another server\'s key) is refused, not taken as equivocation', () => {
    const params = newKeyParams(2, 3);
    const forger = testKeys([ks(1)]).signers.get(ks(1))!;
    const out = runSession(params, {
      deliver: (round, set) => {
        if (round !== 'deal') return set;
        const real = set.find((m) => bodyOf(m).from === ks(3))!;
        return [...set, resign(real, (b) => void (b.commitments as string[]).reverse(), forger)];
      },
    });
    expect(out.errors.size).toBe(0);
    const r = expectAgreement(params, out);
    expect(r.qual).toEqual([1, 2, 3]);
    expect(r.misbehaviour).toEqual([]);
  });

  it('a server signing two different deals, both shown to everyone: excluded for equivocation', () => {
    const params = newKeyParams(2, 4);
    const keys = testKeys([ks(2)]);
    let twin: unknown;
    const out = runSession(params, {
      onClose: (round, set) => {
        if (round !== 'deal') return set;
        const real = set.find((m) => bodyOf(m).from === ks(2))!;
        twin = resign(real, (b) => void (b.commitments as string[]).reverse(), keys.signers.get(ks(2))!);
        return [...set, twin as (typeof set)[number]];
      },
    });
    expect(out.errors.get(ks(2))?.code).toBe('TESSERA_DKG_ABORTED');
    const rs = [...out.results.values()];
    expect(rs).toHaveLength(3);
    expect(rs[0]!.qual).toEqual([1, 3, 4]);
    expect(rs[0]!.misbehaviour).toContainEqual({ spiffeId: ks(2), round: 'deal', what: 'signed two different messages for one round' });
  });

  it('equivocation shown to some servers only: the sets diverge and everyone aborts', () => {
    const keys = testKeys([ks(2)]);
    const out = runSession(newKeyParams(2, 4), {
      deliver: (round, set, to) => {
        if (round !== 'deal' || to !== ks(1)) return set;
        const real = set.find((m) => bodyOf(m).from === ks(2))!;
        return [...set, resign(real, (b) => void (b.commitments as string[]).reverse(), keys.signers.get(ks(2))!)];
      },
    });
    expectAborted(out, [ks(1), ks(3), ks(4)]);
  });

});
