import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectTesseraError } from '../../test/support/expect.js';
import { baseMul, blind, publicShare, randomScalar, ready, split, unsealContext, verifyDleq } from '../core/secrets/index.js';
import { KeyEncryptionKey } from '../common/kek.js';
import { KeyService, RateLimiter, type KeyAuditEvent } from './service.js';
import { ShareStore } from './store.js';

const ALLOWED = 'spiffe://tessera.test/shop/orders';
const DENIED = 'spiffe://tessera.test/shop/frontend';
let dir: string;
let store: ShareStore;
let commitments: Uint8Array[];

beforeAll(async () => {
  await ready();
  dir = mkdtempSync(join(tmpdir(), 'tessera-ks-svc-'));
  store = ShareStore.open(dir, KeyEncryptionKey.load(dir, { TESSERA_KEK: 'c'.repeat(64) }));
  const sharing = split(randomScalar(), 2, 3);
  commitments = sharing.commitments;
  const s = sharing.shares[2]!;
  store.put({ policyId: 'shop.db', epoch: 7, t: 2, n: 3, index: s.index, value: s.value, commitments });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function service(events: KeyAuditEvent[] = [], rateLimit = { perSecond: 20, burst: 40 }, now?: () => number): KeyService {
  return new KeyService({ store, authorize: (c, p) => c.spiffeId === ALLOWED && p === 'shop.db', onAudit: (e) => events.push(e), rateLimit, ...(now ? { now } : {}) });
}

function freshB(): Uint8Array {
  return blind(baseMul(randomScalar())).B;
}

describe('KeyService', () => {
  it('answers an allowed caller with a proof that verifies against the public share', () => {
    const events: KeyAuditEvent[] = [];
    const B = freshB();
    const ev = service(events).evaluate({ spiffeId: ALLOWED }, { policy: 'shop.db', epoch: 7, B });
    expect(ev.index).toBe(3);
    expect(verifyDleq(ev.proof, B, publicShare(3, commitments), ev.Z, unsealContext('shop.db', 7))).toBe(true);
    // Bound to its policy and epoch.
    expect(verifyDleq(ev.proof, B, publicShare(3, commitments), ev.Z, unsealContext('shop.db', 8))).toBe(false);
    expect(events).toEqual([expect.objectContaining({ actor: ALLOWED, policy: 'shop.db', epoch: 7, outcome: 'allowed' })]);
    // No point material in the audit record.
    const text = JSON.stringify(events);
    for (const p of [B, ev.Z]) {
      expect(text).not.toContain(Buffer.from(p).toString('base64url'));
      expect(text).not.toContain(Buffer.from(p).toString('hex'));
    }
    expect(Object.keys(events[0]!).sort()).toEqual(['action', 'actor', 'at', 'epoch', 'outcome', 'policy']);
  });

  it('refuses a caller the policy does not allow, before revealing whether the policy exists', () => {
    const events: KeyAuditEvent[] = [];
    const svc = service(events);
    expectTesseraError(() => svc.evaluate({ spiffeId: DENIED }, { policy: 'shop.db', epoch: 7, B: freshB() }), 'TESSERA_FORBIDDEN');
    expectTesseraError(() => svc.evaluate({ spiffeId: DENIED }, { policy: 'nope', epoch: 7, B: freshB() }), 'TESSERA_FORBIDDEN');
    expect(events.map((e) => [e.outcome, e.code])).toEqual([['denied', 'TESSERA_FORBIDDEN'], ['denied', 'TESSERA_FORBIDDEN']]);
  });

  it('answers TESSERA_NOT_FOUND (404) for an unknown epoch of an allowed policy', () => {
    const err = expectTesseraError(() => service().evaluate({ spiffeId: ALLOWED }, { policy: 'shop.db', epoch: 8, B: freshB() }), 'TESSERA_NOT_FOUND');
    expect(err.status).toBe(404);
  });

  it('answers TESSERA_NOT_FOUND for an unknown policy the caller is allowed', () => {
    const svc = new KeyService({ store, authorize: () => true });
    expectTesseraError(() => svc.evaluate({ spiffeId: ALLOWED }, { policy: 'other', epoch: 7, B: freshB() }), 'TESSERA_NOT_FOUND');
  });

  it('refuses an invalid B with TESSERA_SECRET_POINT_INVALID', () => {
    const svc = service();
    expectTesseraError(() => svc.evaluate({ spiffeId: ALLOWED }, { policy: 'shop.db', epoch: 7, B: new Uint8Array(32) }), 'TESSERA_SECRET_POINT_INVALID');
    expectTesseraError(() => svc.evaluate({ spiffeId: ALLOWED }, { policy: 'shop.db', epoch: 7, B: new Uint8Array(32).fill(0xff) }), 'TESSERA_SECRET_POINT_INVALID');
    expectTesseraError(() => svc.evaluate({ spiffeId: ALLOWED }, { policy: 'shop.db', epoch: 7, B: new Uint8Array(31) }), 'TESSERA_SECRET_POINT_INVALID');
  });

  it('rate-limits per identity with TESSERA_RATE_LIMITED (429) and refills over time', () => {
    let now = 1_000_000;
    const events: KeyAuditEvent[] = [];
    const svc = service(events, { perSecond: 2, burst: 3 }, () => now);
    const call = (id: string) => svc.evaluate({ spiffeId: id }, { policy: 'shop.db', epoch: 7, B: freshB() });
    for (let i = 0; i < 3; i++) call(ALLOWED);
    const err = expectTesseraError(() => call(ALLOWED), 'TESSERA_RATE_LIMITED');
    expect(err.status).toBe(429);
    // Another identity has its own bucket (and is denied by policy, not by the limiter).
    expectTesseraError(() => call(DENIED), 'TESSERA_FORBIDDEN');
    now += 500;
    call(ALLOWED);
    expectTesseraError(() => call(ALLOWED), 'TESSERA_RATE_LIMITED');
    expect(events.filter((e) => e.code === 'TESSERA_RATE_LIMITED')).toHaveLength(2);
  });

  it('the limiter forgets idle identities instead of growing without bound', () => {
    let now = 0;
    const lim = new RateLimiter({ perSecond: 1, burst: 1 }, () => now);
    for (let i = 0; i < 10_050; i++) expect(lim.take(`id${i}`)).toBe(true);
    now += 10_000;
    expect(lim.take('id0')).toBe(true);
    expect(lim.take('id0')).toBe(false);
  });
});
