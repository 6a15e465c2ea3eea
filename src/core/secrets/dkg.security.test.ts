/**
 * What the relay can learn, and what the parsers do with hostile input.
 *
 * Inspection: every byte the relay sees in a clean DKG and a clean refresh is searched for every
 * secret the participants held (polynomial coefficients, the shares s_ij and blindings s'_ij,
 * channel keys, the final shares x_j, and k_p itself), in every encoding (see secrets.security.test.ts).
 * The participants' internals are read here only, through casts.
 */
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { isTesseraError } from '../errors.js';
import { bodyOf, newKeyParams, resign, runSession, sessionId, sharesOf, spiffe, testKeys, type RunOutcome } from './dkg-fixtures.js';
import { evalPoly } from './dkg-judge.js';
import { openSession } from './dkg-session.js';
import { acceptSet, parseDkgMessage, peekDkgMessage, type DkgBody, type SignedDkgMessage } from './dkg-wire.js';
import { DkgParticipant, type DkgParams, type DkgParticipant as P } from './dkg.js';
import { isZeroScalar, ready, type Scalar } from './group.js';
import { combineScalars } from './shamir.js';

beforeAll(ready);

/** Every encoding a secret could leak in: hex, base64, base64url, and the raw latin1 bytes. */
function forms(bytes: Uint8Array): string[] {
  const b = Buffer.from(bytes);
  return [b.toString('hex'), b.toString('base64'), b.toString('base64url'), b.toString('latin1')].map((s) => s.slice(0, 16));
}

/** Everything the relay saw, as text: payloads, JSON, signatures, and every base64url field decoded and re-encoded every way. */
function haystack(seen: SignedDkgMessage[]): string[] {
  const out: string[] = [];
  for (const m of seen) {
    const json = Buffer.from(m.payload, 'base64url');
    out.push(m.payload, m.signature, json.toString('utf8'), json.toString('hex'), json.toString('latin1'));
    for (const field of json.toString('utf8').match(/[A-Za-z0-9_-]{43,}/g) ?? []) {
      const raw = Buffer.from(field, 'base64url');
      out.push(raw.toString('hex'), raw.toString('base64'), raw.toString('base64url'), raw.toString('latin1'));
    }
  }
  return out;
}

interface Internals {
  a: Scalar[];
  b: Scalar[];
  channels: Map<number, { privateKey: Uint8Array }>;
  pub: { helloReceivers: number[] };
}

/** A hook on every party that copies its secrets when it deals (before they are wiped). */
function spy(secrets: Uint8Array[]): (body: DkgBody, p: P) => DkgBody {
  return (body, p) => {
    if (body.round === 'deal') {
      const i = p as unknown as Internals;
      for (const c of [...i.a, ...i.b]) if (!isZeroScalar(c)) secrets.push(new Uint8Array(c));
      for (const ch of i.channels.values()) secrets.push(new Uint8Array(ch.privateKey));
      if (i.a.length > 0) for (const j of i.pub.helloReceivers) secrets.push(evalPoly(i.a, j), evalPoly(i.b, j));
    }
    return body;
  };
}

function expectNothingSecret(out: RunOutcome, secrets: Uint8Array[]): void {
  const hay = haystack(out.seen);
  expect(secrets.length).toBeGreaterThan(20);
  // positive control: the search does find public values (a commitment) in every form
  const P = [...out.results.values()][0]!.publicKey;
  for (const f of forms(P)) expect(hay.some((h) => h.includes(f))).toBe(true);
  for (const s of secrets) for (const f of forms(s)) for (const h of hay) if (h.includes(f)) throw new Error('a secret appears in what the relay saw');
  // the only secret-derived fields are the sealed boxes; every complaint, reveal and evidence list is empty
  for (const m of out.seen) {
    const b = bodyOf(m);
    for (const k of ['accused', 'reveals'] as const) if (k in b) expect(b[k]).toEqual([]);
  }
}

describe('inspection: nothing secret crosses the relay', () => {
  it('a clean 3-of-5 DKG, then a clean refresh', () => {
    const params = newKeyParams(3, 5);
    const ids = params.servers.map((s) => s.spiffeId);
    const secrets: Uint8Array[] = [];
    const out = runSession(params, { mutate: new Map(ids.map((id) => [id, spy(secrets)])) });
    expect(out.results.size).toBe(5);
    const shares = sharesOf(out);
    secrets.push(...shares.map((s) => s.value), combineScalars(shares.slice(0, 3)));
    expectNothingSecret(out, secrets);

    const first = [...out.results.values()][0]!;
    const refresh: DkgParams = { kind: 'refresh', session: sessionId(), policyId: 'shop.db', epoch: 1, servers: params.servers, commitments: first.commitments };
    const rsecrets: Uint8Array[] = [...shares.map((s) => s.value), combineScalars(shares.slice(0, 3))];
    const rout = runSession(refresh, { shares: new Map(shares.map((s) => [spiffe(`ks${s.index}`), s])), mutate: new Map(ids.map((id) => [id, spy(rsecrets)])) });
    expect(rout.results.size).toBe(5);
    rsecrets.push(...sharesOf(rout).map((s) => s.value));
    expectNothingSecret(rout, rsecrets);
  });
});

describe('parsers: hostile input gives TESSERA_DKG_MESSAGE_INVALID, never another exception', () => {
  const params = newKeyParams(2, 3);
  let out: RunOutcome;
  beforeAll(() => {
    out = runSession(params);
  });
  const rounds = ['hello', 'deal', 'complaints', 'answers', 'feldman', 'feldmanComplaints', 'reconstruct', 'confirm'] as const;

  function outcome(fn: () => unknown): 'ok' | string {
    try {
      fn();
      return 'ok';
    } catch (err) {
      if (!isTesseraError(err)) throw err;
      return err.code;
    }
  }

  it('random values', () => {
    const session = openSession(params);
    fc.assert(
      fc.property(fc.anything(), fc.constantFrom(...rounds), (v, round) => {
        expect(['TESSERA_DKG_MESSAGE_INVALID']).toContain(outcome(() => parseDkgMessage(session, round, v, out.keys.verifier)));
        expect(['TESSERA_DKG_MESSAGE_INVALID']).toContain(outcome(() => peekDkgMessage(v)));
        expect(['TESSERA_DKG_MESSAGE_INVALID']).toContain(outcome(() => parseDkgMessage(session, round, { payload: Buffer.from(JSON.stringify(v) ?? 'null').toString('base64url'), signature: 'AA' }, out.keys.verifier)));
      }),
      { numRuns: 300 },
    );
  });

  it('real messages with a field replaced, removed or added, re-signed by their sender: accepted only if still valid', () => {
    const session = openSession(params);
    const keys = testKeys(session.parties);
    const arbEdit = fc.record({ pick: fc.nat(), value: fc.oneof(fc.anything(), fc.string(), fc.integer(), fc.constant([]), fc.base64String()), op: fc.constantFrom('set', 'delete', 'add', 'deep') });
    fc.assert(
      fc.property(fc.nat(), arbEdit, (which, edit) => {
        const m = out.seen[which % out.seen.length]!;
        const body = bodyOf(m);
        const from = body.from as string;
        const round = body.round as (typeof rounds)[number];
        const keysOf = Object.keys(body);
        const key = keysOf[edit.pick % keysOf.length]!;
        let mutated: SignedDkgMessage;
        try {
          mutated = resign(
            m,
            (b) => {
              if (edit.op === 'set') b[key] = edit.value;
              else if (edit.op === 'delete') delete b[key];
              else if (edit.op === 'add') b[`x${edit.pick}`] = edit.value;
              else {
                const v = b[key];
                if (Array.isArray(v) && v.length > 0) {
                  const e = v[edit.pick % v.length];
                  if (typeof e === 'object' && e !== null) {
                    const ks = Object.keys(e as object);
                    (e as Record<string, unknown>)[ks[edit.pick % ks.length]!] = edit.value;
                  } else v[edit.pick % v.length] = edit.value;
                }
              }
            },
            keys.signers.get(from)!,
          );
        } catch {
          return; // not JSON-representable (canonicalJson refused): nothing to send
        }
        expect(['ok', 'TESSERA_DKG_MESSAGE_INVALID']).toContain(outcome(() => parseDkgMessage(session, round, mutated, out.keys.verifier)));
      }),
      { numRuns: 400 },
    );
  });

  it('flipped payload or signature bytes are refused; a round or session mismatch is refused', () => {
    const session = openSession(params);
    fc.assert(
      fc.property(fc.nat(), fc.nat(), fc.boolean(), (which, pos, sig) => {
        const m = out.seen[which % out.seen.length]!;
        const round = bodyOf(m).round as (typeof rounds)[number];
        const raw = Buffer.from(sig ? m.signature : m.payload, 'base64url');
        raw[pos % raw.length] = raw[pos % raw.length]! ^ (1 << pos % 8);
        const bad = sig ? { ...m, signature: raw.toString('base64url') } : { ...m, payload: raw.toString('base64url') };
        expect(outcome(() => parseDkgMessage(session, round, bad, out.keys.verifier))).toBe('TESSERA_DKG_MESSAGE_INVALID');
      }),
      { numRuns: 200 },
    );
    const hello = out.seen[0]!;
    expect(outcome(() => parseDkgMessage(session, 'deal', hello, out.keys.verifier))).toBe('TESSERA_DKG_MESSAGE_INVALID');
    expect(outcome(() => parseDkgMessage(openSession(newKeyParams(2, 3)), 'hello', hello, out.keys.verifier))).toBe('TESSERA_DKG_MESSAGE_INVALID');
    expect(outcome(() => parseDkgMessage(session, 'hello', hello, { verify: () => { throw new Error('boom'); } }))).toBe('TESSERA_DKG_MESSAGE_INVALID');
    expect(outcome(() => parseDkgMessage(session, 'hello', hello, out.keys.verifier))).toBe('ok');
  });

  it('a set of junk is rejected entry by entry, and a participant given junk only aborts cleanly', () => {
    const session = openSession(params);
    fc.assert(
      fc.property(fc.array(fc.anything(), { maxLength: 5 }), (junk) => {
        const set = acceptSet(session, 'hello', junk, out.keys.verifier);
        expect(set.messages.size).toBe(0);
        expect(set.rejected).toHaveLength(junk.length);
      }),
      { numRuns: 100 },
    );
    const keys = testKeys(session.parties);
    const { participant } = DkgParticipant.start(params, { spiffeId: session.parties[0]! }, keys.signers.get(session.parties[0]!)!, keys.verifier);
    expect(outcome(() => participant.next([{ junk: 1 }, null, 'x']))).toBe('TESSERA_DKG_ABORTED');
    const { participant: p2 } = DkgParticipant.start(params, { spiffeId: session.parties[0]! }, keys.signers.get(session.parties[0]!)!, keys.verifier);
    expect(outcome(() => p2.next('not a list' as unknown as unknown[]))).toBe('TESSERA_DKG_ABORTED');
  });
});
