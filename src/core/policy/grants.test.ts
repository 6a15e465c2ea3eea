/**
 * Grants in the signed bundle and in the engine: shape checks (fast-check on the parser), the
 * template-linked permit honoured only inside its window, and GrantClock keeping `context.time`
 * exact at grant boundaries so that a cached allow never outlives a grant.
 */
import { generateKeyPairSync } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { expectTesseraError } from '../../../test/support/expect.js';
import { createSelfSignedCa } from '../x509.js';
import { createPolicyBundle, signPolicyBundle, verifyPolicyBundle } from './bundle.js';
import { PolicyEngine } from './engine.js';
import { checkGrant, GrantClock, grantPolicyId, type BundleGrant } from './grants.js';
import { TESSERA_SCHEMA } from './schema.js';

const P = 'spiffe://example.org/ops/debugger';
const R = 'spiffe://example.org/shop/orders';
const T0 = 1_767_225_600; // 2026-01-01T00:00:00Z, a whole minute
const grant: BundleGrant = { id: 'g-0123456789abcdef', principal: P, action: 'http:request', resource: R, start: T0 + 90, expiry: T0 + 150 };
const ctx = (time: number): Record<string, string | number> => ({ method: 'GET', path: '/orders', site: 'eu', time, hour: 0, risk: 0 });

describe('checkGrant', () => {
  it('accepts a well-formed grant and returns a clean copy', () => {
    expect(checkGrant({ ...grant })).toEqual(grant);
  });

  it('refuses each malformed field', () => {
    const bad: unknown[] = [
      null, [], 'x', { ...grant, extra: 1 }, { ...grant, id: 'g-1' }, { ...grant, id: 'G-0123456789ABCDEF' },
      { ...grant, principal: 'not-an-id' }, { ...grant, resource: 'spiffe://example.org/a"b' }, { ...grant, action: 'http:get' },
      { ...grant, start: -1 }, { ...grant, start: 1.5 }, { ...grant, expiry: grant.start }, { ...grant, expiry: grant.start + 7 * 86400 + 1 },
      { ...grant, start: '100' },
    ];
    for (const b of bad) expect(typeof checkGrant(b)).toBe('string');
  });

  it('never throws and never accepts anything but the exact shape (fast-check)', () => {
    fc.assert(fc.property(fc.anything(), (v) => {
      const r = checkGrant(v);
      if (typeof r !== 'string') expect(Object.keys(r).sort()).toEqual(['action', 'expiry', 'id', 'principal', 'resource', 'start']);
    }), { numRuns: 500 });
    fc.assert(fc.property(fc.record({ id: fc.string(), principal: fc.string(), action: fc.string(), resource: fc.string(), start: fc.integer(), expiry: fc.integer() }), (v) => {
      expect(typeof checkGrant(v)).toBe('string');
    }), { numRuns: 300 });
  });
});

describe('grants in the signed bundle', () => {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const now = Date.now();
  const certDer = createSelfSignedCa({ privateKey, publicKey, commonName: 'ca', trustDomainUri: 'spiffe://example.org', notBefore: new Date(now - 3600_000), notAfter: new Date(now + 3600_000) });
  const base = { version: 3, author: 'a', reason: 'r', policies: {}, schema: TESSERA_SCHEMA as Record<string, unknown>, entities: [] };

  it('round-trips, and a bundle without grants has no grants field', () => {
    expect(verifyPolicyBundle(signPolicyBundle(createPolicyBundle({ ...base, grants: [grant] }), { privateKey, certDer }), [certDer]).grants).toEqual([grant]);
    expect('grants' in verifyPolicyBundle(signPolicyBundle(createPolicyBundle(base), { privateKey, certDer }), [certDer])).toBe(false);
  });

  it('refuses a malformed or repeated grant', () => {
    expectTesseraError(() => createPolicyBundle({ ...base, grants: [{ ...grant, action: 'x' as never }] }), 'TESSERA_POLICY_BUNDLE_INVALID');
    expectTesseraError(() => createPolicyBundle({ ...base, grants: [grant, grant] }), 'TESSERA_POLICY_BUNDLE_INVALID');
  });
});

describe('the engine honours a grant only inside its window', () => {
  const compiled = PolicyEngine.compile({ policies: {} });
  const engine = new PolicyEngine(compiled, [{ id: P, attrs: {} }, { id: R, attrs: {} }], { grants: [grant] });

  it('denies before the start, allows from the start, denies from the expiry (by context.time)', () => {
    const at = (time: number, principal = P, action: 'http:request' | 'tcp:connect' = 'http:request'): boolean => engine.decide({ principal, action, resource: R, context: action === 'http:request' ? ctx(time) : { site: 'eu', time, hour: 0, risk: 0 } }).allow;
    expect(at(grant.start - 1)).toBe(false);
    expect(at(grant.start)).toBe(true);
    expect(engine.decide({ principal: P, action: 'http:request', resource: R, context: ctx(grant.start) }).reasons).toEqual([grantPolicyId(grant.id)]);
    expect(at(grant.expiry - 1)).toBe(true);
    expect(at(grant.expiry)).toBe(false);
    // Only that principal, action and resource.
    expect(at(grant.start, 'spiffe://example.org/other')).toBe(false);
    expect(at(grant.start, P, 'tcp:connect')).toBe(false);
    expect(engine.decide({ principal: R, action: 'http:request', resource: P, context: ctx(grant.start) }).allow).toBe(false);
  });

  it('without the grant nothing is allowed (default deny)', () => {
    expect(new PolicyEngine(compiled, []).decide({ principal: P, action: 'http:request', resource: R, context: ctx(grant.start) }).allow).toBe(false);
  });
});

describe('GrantClock', () => {
  it('rounds to the minute without crossing a grant boundary back', () => {
    const clock = new GrantClock([grant]);
    const t = (s: number): number => clock.time(s * 1000 + 999);
    expect(t(T0)).toBe(T0);
    expect(t(T0 + 59)).toBe(T0);
    expect(t(T0 + 60)).toBe(T0 + 60);
    expect(t(T0 + 89)).toBe(T0 + 60);
    expect(t(T0 + 90)).toBe(T0 + 90); // the start
    expect(t(T0 + 119)).toBe(T0 + 90);
    expect(t(T0 + 120)).toBe(T0 + 120);
    expect(t(T0 + 149)).toBe(T0 + 120);
    expect(t(T0 + 150)).toBe(T0 + 150); // the expiry
    expect(t(T0 + 179)).toBe(T0 + 150);
    expect(t(T0 + 180)).toBe(T0 + 180);
    expect(t(T0 + 60)).toBe(T0 + 60); // going back (clock step) recomputes
  });

  it('window checks on its time agree with the real clock at every second (fast-check), and the cache cannot keep an allow past expiry', () => {
    const grants: BundleGrant[] = [grant, { ...grant, id: 'g-00000000000000ff', start: T0 + 7, expiry: T0 + 301 }];
    fc.assert(fc.property(fc.integer({ min: T0 - 120, max: T0 + 600 }), (s) => {
      const time = new GrantClock(grants).time(s * 1000 + 500);
      expect(time).toBeLessThanOrEqual(s);
      for (const g of grants) expect(time >= g.start && time < g.expiry).toBe(s >= g.start && s < g.expiry);
    }), { numRuns: 400 });
    // The same engine (with its cache) asked second after second with the clock's time.
    const engine = new PolicyEngine(PolicyEngine.compile({ policies: {} }), [], { grants: [grant] });
    const clock = new GrantClock([grant]);
    for (let s = grant.start - 5; s < grant.expiry + 5; s++) {
      expect(engine.decide({ principal: P, action: 'http:request', resource: R, context: ctx(clock.time(s * 1000)) }).allow).toBe(s >= grant.start && s < grant.expiry);
    }
    expect(engine.cacheSize).toBeGreaterThan(0);
  });
});
