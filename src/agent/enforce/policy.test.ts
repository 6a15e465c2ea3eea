/**
 * The agent's Policy Enforcement Point on its own: a PolicyEnforcer fed by a scripted `fetch`
 * (standing in for the control plane's long-poll) with bundles signed by real test CAs
 * (src/core/x509.ts + signPolicyBundle). Default deny, verification against the trust bundle,
 * no rollback, the on-disk cache across restarts, and the decision records it ships.
 */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../core/log.js';
import { createPolicyBundle, signPolicyBundle, type SignedPolicyBundle } from '../../core/policy/bundle.js';
import { TESSERA_SCHEMA } from '../../core/policy/schema.js';
import type { PolicyEntity, RevokedIdentity, RiskListed } from '../../core/policy/types.js';
import { createSelfSignedCa } from '../../core/x509.js';
import { encodeVerifierKey } from '../../core/signed-note.js';
import { DecisionLog, type DecisionRecord } from './decision-log.js';
import { PolicyEnforcer, utcHour, type PolicyEnforcerOptions } from './policy.js';
import { flushAtGrantBoundaries } from '../sidecar.js';

const TD = 'spiffe://example.org';
const FRONTEND = `${TD}/shop/frontend`;
const ORDERS = `${TD}/shop/orders`;
const STRANGER = `${TD}/unknown/thing`;
const HOUR = 3600_000;

const ENTITIES: PolicyEntity[] = [
  { id: FRONTEND, attrs: { app: 'shop-frontend', site: 'cloud-eu' } },
  { id: ORDERS, attrs: { app: 'orders', site: 'cloud-eu' } },
];

/** v1: the frontend may GET /orders/* on orders; everything else is denied. */
const READ_ONLY: Record<string, string> = {
  'shop.cedar': `
@id("frontend-reads-orders")
permit (principal, action == Tessera::Action::"http:request", resource)
when {
  principal has app && principal.app == "shop-frontend" && resource has app && resource.app == "orders" &&
  context.method == "GET" && context.path like "/orders/*"
};`,
};

/** A later policy: the frontend may also POST. */
const READ_WRITE: Record<string, string> = {
  'shop.cedar': `
@id("frontend-uses-orders")
permit (principal, action == Tessera::Action::"http:request", resource)
when {
  principal has app && principal.app == "shop-frontend" && resource has app && resource.app == "orders" &&
  (context.method == "GET" || context.method == "POST") && context.path like "/orders*"
};`,
};

class TestCa {
  readonly certDer: Buffer;
  readonly privateKey: KeyObject;

  constructor(name: string) {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const now = Date.now();
    this.privateKey = privateKey;
    this.certDer = createSelfSignedCa({
      privateKey, publicKey, commonName: name, trustDomainUri: TD, notBefore: new Date(now - HOUR), notAfter: new Date(now + 24 * HOUR),
    });
  }

  sign(version: number, policies: Record<string, string>, entities: PolicyEntity[] = ENTITIES, revoked: RevokedIdentity[] = [], risk: RiskListed[] = []): SignedPolicyBundle {
    const bundle = createPolicyBundle({
      version, author: `${TD}/tessera/admin`, reason: `test v${version}`, policies, schema: TESSERA_SCHEMA as Record<string, unknown>, entities, revoked, risk,
    });
    return signPolicyBundle(bundle, { privateKey: this.privateKey, certDer: this.certDer });
  }
}

type FetchResult = { version: number; changed: boolean; bundle: SignedPolicyBundle };

/**
 * A scripted control plane: each long-poll takes the next queued answer (or error), and waits
 * (as a long-poll does) while nothing is queued.
 */
class FakeControlPlane {
  readonly calls: { after: number; timeout: number }[] = [];
  private readonly queue: (FetchResult | Error)[] = [];
  private wake: (() => void) | undefined;

  answer(r: FetchResult | Error): void {
    this.queue.push(r);
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  /** Answers with a changed bundle. */
  send(signed: SignedPolicyBundle, version: number): void {
    this.answer({ version, changed: true, bundle: signed });
  }

  readonly fetch = async (after: number, timeout: number): Promise<FetchResult> => {
    this.calls.push({ after, timeout });
    while (this.queue.length === 0) await new Promise<void>((r) => { this.wake = r; });
    const next = this.queue.shift()!;
    if (next instanceof Error) throw next;
    return next;
  };
}

function nextEvent<T>(e: PolicyEnforcer, name: 'policy' | 'refused', timeoutMs = 5_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no '${name}' event within ${timeoutMs} ms`)), timeoutMs);
    e.once(name, (v: T) => {
      clearTimeout(timer);
      resolve(v);
    });
  });
}

const GET = { principal: FRONTEND, action: 'http:request' as const, resource: ORDERS, method: 'GET', path: '/orders/42' };
const POST = { ...GET, method: 'POST', path: '/orders' };

let ca: TestCa;
let otherCa: TestCa;

beforeAll(() => {
  ca = new TestCa('tessera test CA');
  otherCa = new TestCa('somebody else');
});

describe('PolicyEnforcer', () => {
  let dir: string;
  let trusted: Buffer[];
  let shipped: DecisionRecord[];
  const enforcers: PolicyEnforcer[] = [];

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-enforcer-'));
    trusted = [ca.certDer];
    shipped = [];
  });

  afterEach(async () => {
    for (const e of enforcers.splice(0)) await e.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  function enforcer(cp: FakeControlPlane, over: Partial<PolicyEnforcerOptions> = {}): PolicyEnforcer {
    const e = new PolicyEnforcer({
      dir, site: 'cloud-eu', log: silentLogger, trustedCas: () => trusted, fetch: cp.fetch,
      ship: async (records) => { shipped.push(...records); }, allowSampleRate: 0, watchSeconds: 7, ...over,
    });
    enforcers.push(e);
    return e;
  }

  it('plans a flush at each grant boundary of the bundle in force (HAProxy keys its cached allows by the minute), re-planned per bundle', async () => {
    const cp = new FakeControlPlane();
    const e = enforcer(cp);
    const s = Math.floor(Date.now() / 1000);
    const grant = { id: 'g-0123456789abcdef', principal: FRONTEND, action: 'http:request' as const, resource: ORDERS, start: s - 30, expiry: s + 2 };
    const bundle = createPolicyBundle({
      version: 1, author: `${TD}/tessera/admin`, reason: 'a grant', policies: READ_ONLY, schema: TESSERA_SCHEMA as Record<string, unknown>, entities: ENTITIES, grants: [grant],
    });
    cp.send(signPolicyBundle(bundle, { privateKey: ca.privateKey, certDer: ca.certDer }), 1);
    e.start();
    await nextEvent(e, 'policy');
    expect(e.nextGrantBoundary()).toBe((s + 2) * 1000);
    expect(e.authorize(POST).allow).toBe(true);
    const flushes: number[] = [];
    const stop = flushAtGrantBoundaries(e, () => flushes.push(Date.now()));
    await waitUntil(() => flushes.length === 1, 5_000);
    expect(flushes[0]).toBeGreaterThanOrEqual((s + 2) * 1000);
    expect(e.authorize(POST).allow).toBe(false);
    expect(e.nextGrantBoundary()).toBeUndefined();
    // A later bundle with a grant ahead is planned too; stopping cancels it.
    const later = { ...grant, id: 'g-00000000000000ff', start: s + 3600, expiry: s + 7200 };
    cp.send(signPolicyBundle(createPolicyBundle({ ...bundle, version: 2, grants: [later] }), { privateKey: ca.privateKey, certDer: ca.certDer }), 2);
    await nextEvent(e, 'policy');
    expect(e.nextGrantBoundary()).toBe((s + 3600) * 1000);
    stop();
    expect(flushes).toHaveLength(1);
  });

  it('denies everything before any bundle is loaded, and says why', async () => {
    const cp = new FakeControlPlane();
    const e = enforcer(cp);
    e.start();
    expect(e.version).toBe(0);
    for (const req of [GET, POST, { principal: STRANGER, action: 'tcp:connect' as const, resource: ORDERS }]) {
      const d = e.authorize(req);
      expect(d.allow).toBe(false);
      expect(d.reasons.join(' ')).toMatch(/no policy bundle/);
    }
    // It asked the control plane for anything newer than nothing, with its long-poll time.
    expect(cp.calls[0]).toEqual({ after: 0, timeout: 7 });
    // Denials are recorded even then.
    await e.decisions.flush();
    expect(shipped).toHaveLength(3);
    expect(shipped.every((r) => !r.allow)).toBe(true);
  });

  it('loads a signed bundle, decides per policy, and caches it on disk (0600)', async () => {
    const cp = new FakeControlPlane();
    const e = enforcer(cp);
    const loaded = nextEvent<{ version: number; hash: string; source: string; reason: string }>(e, 'policy');
    e.start();
    cp.send(ca.sign(1, READ_ONLY), 1);
    const ev = await loaded;
    expect(ev).toMatchObject({ version: 1, source: 'server', reason: 'test v1' });
    expect(e.version).toBe(1);

    const get = e.authorize(GET);
    expect(get.allow).toBe(true);
    expect(get.reasons).toEqual(['frontend-reads-orders']);
    expect(e.authorize(POST).allow).toBe(false);
    expect(e.authorize({ ...GET, path: '/admin' }).allow).toBe(false);
    expect(e.authorize({ ...GET, principal: STRANGER }).allow).toBe(false);
    expect(e.authorize({ principal: FRONTEND, action: 'tcp:connect', resource: ORDERS }).allow).toBe(false);

    const cache = join(dir, 'policy-bundle.json');
    await e.cached();
    expect(existsSync(cache)).toBe(true);
    expect(statSync(cache).mode & 0o777).toBe(0o600);
    // The next long-poll asks for anything newer than what it holds.
    await waitUntil(() => cp.calls.length >= 2);
    expect(cp.calls[1]!.after).toBe(1);
  });

  /** An enforcer that has loaded READ_ONLY as bundle v1. */
  async function readOnlyEnforcer(over: Partial<PolicyEnforcerOptions>): Promise<PolicyEnforcer> {
    const cp = new FakeControlPlane();
    const e = enforcer(cp, over);
    const loaded = nextEvent(e, 'policy');
    e.start();
    cp.send(ca.sign(1, READ_ONLY), 1);
    await loaded;
    return e;
  }

  it('decide() (the proxies\' call) answers and records exactly as authorize(), with the context the sidecar builds', async () => {
    const e = await readOnlyEnforcer({ allowSampleRate: 1 });
    const long = `/orders/${'x'.repeat(3000)}`;
    const cases: [string, string | undefined, 'http:request' | 'tcp:connect', string | undefined, string | undefined][] = [
      [FRONTEND, 'AB12', 'http:request', 'GET', '/orders/7'],
      [FRONTEND, undefined, 'http:request', 'POST', '/orders/7'],
      [FRONTEND, 'AB12', 'http:request', 'GET', long],
      [STRANGER, undefined, 'http:request', 'GET', '/orders/7'],
      [FRONTEND, 'AB12', 'tcp:connect', undefined, undefined],
    ];
    const viaDecide = cases.map(([p, serial, action, method, path]) => e.decide(p, serial, action, ORDERS, method, path));
    const viaAuthorize = cases.map(([p, serial, action, method, path]) => e.authorize({ principal: p, ...(serial !== undefined ? { serial } : {}), action, resource: ORDERS, ...(method !== undefined ? { method } : {}), ...(path !== undefined ? { path } : {}) }));
    expect(viaDecide.map((d) => [d.allow, d.reasons])).toEqual(viaAuthorize.map((d) => [d.allow, d.reasons]));
    expect(viaDecide.map((d) => d.allow)).toEqual([true, false, true, false, false]);
    await e.decisions.flush();
    // Every decision recorded (allowSampleRate 1), twice over, in the same form both ways.
    expect(shipped).toHaveLength(2 * cases.length);
    const strip = (r: DecisionRecord): unknown => ({ ...r, ts: 0 });
    expect(shipped.slice(0, cases.length).map(strip)).toEqual(shipped.slice(cases.length).map(strip));
    const hour = new Date(shipped[0]!.ts).getUTCHours();
    expect(shipped[0]!.context).toMatchObject({ site: 'cloud-eu', hour, risk: 0, method: 'GET', path: '/orders/7' });
    expect(shipped[0]!.context.time).toBe(Math.floor(shipped[0]!.ts / 60_000) * 60);
    // The long path was decided whole, recorded clipped; tcp:connect has no method or path.
    expect(shipped[2]!.context.path).toBe(long.slice(0, 2048));
    expect(Object.keys(shipped[4]!.context).sort()).toEqual(['hour', 'risk', 'site', 'time']);
  });

  it('utcHour is Date\'s UTC hour, for any instant', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 8.64e15 }), (ms) => utcHour(ms) === new Date(ms).getUTCHours()), { numRuns: 2000 });
    for (const ms of [0, 3_599_999, 3_600_000, 86_399_999, 86_400_000, Date.UTC(2026, 11, 3, 23, 59, 59, 999)]) expect(utcHour(ms)).toBe(new Date(ms).getUTCHours());
  });

  it('refuses an unknown principal before Cedar, even when a `principal ==` permit names it', async () => {
    const cp = new FakeControlPlane();
    const e = enforcer(cp);
    const loaded = nextEvent(e, 'policy');
    e.start();
    // The permit names STRANGER, which the bundle does not hold as an entity (no live entry).
    const byName = { 'x.cedar': `permit (principal == Tessera::Workload::"${STRANGER}", action, resource);\npermit (principal == Tessera::Workload::"${FRONTEND}", action, resource);` };
    cp.send(ca.sign(1, byName), 1);
    await loaded;
    expect(e.peerStatus(STRANGER)).toEqual({ ok: false, reason: 'unknown' });
    const d = e.authorize({ principal: STRANGER, action: 'tcp:connect', resource: ORDERS });
    expect(d).toMatchObject({ allow: false, reasons: ['unknown principal: no live entry'] });
    expect(e.authorize({ ...GET, principal: STRANGER }).allow).toBe(false);
    expect(e.authorize({ principal: FRONTEND, action: 'tcp:connect', resource: ORDERS }).allow).toBe(true);
    expect(e.peerStatus(FRONTEND)).toEqual({ ok: true });
    await e.decisions.flush();
    expect(shipped.filter((r) => r.principal === STRANGER).map((r) => [r.allow, r.reasons])).toEqual([
      [false, ['unknown principal: no live entry']], [false, ['unknown principal: no live entry']],
    ]);
  });

  it('refuses revoked identities and revoked serials (also of an ID live again), and fires policy on a new list', async () => {
    const cp = new FakeControlPlane();
    const e = enforcer(cp);
    const all = { 'all.cedar': 'permit (principal, action, resource);' };
    expect(e.peerStatus(FRONTEND)).toEqual({ ok: false, reason: 'unknown' }); // no bundle yet: default deny
    let loaded = nextEvent<{ version: number; revoked: number }>(e, 'policy');
    e.start();
    cp.send(ca.sign(1, all), 1);
    await loaded;
    const tcp = (principal: string, serial?: string) => e.authorize({ principal, action: 'tcp:connect', resource: ORDERS, ...(serial ? { serial } : {}) });
    expect(tcp(FRONTEND, 'AA01').allow).toBe(true);

    // v2: FRONTEND revoked (entry kept, not an entity); ORDERS re-created after a delete: its old serial is listed.
    loaded = nextEvent(e, 'policy');
    const revoked: RevokedIdentity[] = [
      { id: FRONTEND, serials: ['AA01'], at: '2026-01-01T00:00:00.000Z', reason: 'compromised' },
      { id: ORDERS, serials: ['BB01'], at: '2026-01-01T00:00:00.000Z', reason: 'entry deleted' },
    ];
    cp.send(ca.sign(2, all, [ENTITIES[1]!], revoked), 2);
    expect(await loaded).toMatchObject({ version: 2, revoked: 2 });
    expect(e.peerStatus(FRONTEND, 'AA01')).toEqual({ ok: false, reason: 'revoked' });
    // Another certificate of the revoked ID: refused by ID.
    expect(e.peerStatus(FRONTEND, 'AA02')).toEqual({ ok: false, reason: 'revoked' });
    expect(e.peerStatus(FRONTEND)).toEqual({ ok: false, reason: 'revoked' });
    expect(tcp(FRONTEND, 'AA02')).toMatchObject({ allow: false, reasons: ['revoked'] });
    // ORDERS is live again: its new certificate is fine, the old one is not.
    expect(e.peerStatus(ORDERS, 'BB02')).toEqual({ ok: true });
    expect(tcp(ORDERS, 'BB02').allow).toBe(true);
    expect(e.peerStatus(ORDERS, 'BB01')).toEqual({ ok: false, reason: 'revoked' });
    expect(tcp(ORDERS, 'BB01')).toMatchObject({ allow: false, reasons: ['revoked'] });

    // The list survives a restart from the cache, with the control plane away.
    await e.stop();
    const again = enforcer(new FakeControlPlane());
    again.start();
    expect(again.version).toBe(2);
    expect(again.peerStatus(FRONTEND, 'AA02')).toEqual({ ok: false, reason: 'revoked' });
    expect(again.peerStatus(ORDERS, 'BB01')).toEqual({ ok: false, reason: 'revoked' });
  });

  it('quarantine: refuses the identity as caller and as resource until its TTL on the local clock, also from the cache; step-up scores are context.risk', async () => {
    const cp = new FakeControlPlane();
    const e = enforcer(cp);
    const policies = { 'all.cedar': 'permit (principal, action, resource);\nforbid (principal, action, resource) when { context.risk > 50 };' };
    let loaded = nextEvent<{ quarantined: number }>(e, 'policy');
    e.start();
    cp.send(ca.sign(1, policies), 1);
    await loaded;
    const tcp = (principal: string, resource = ORDERS) => e.authorize({ principal, action: 'tcp:connect', resource });
    expect(tcp(FRONTEND).allow).toBe(true);

    const until = Date.now() + 1500;
    loaded = nextEvent(e, 'policy');
    cp.send(ca.sign(2, policies, ENTITIES, [], [{ id: FRONTEND, state: 'quarantined', score: 30, until, reason: 'exfiltration' }, { id: ORDERS, state: 'step-up', score: 70, until, reason: 'volume' }]), 2);
    expect(await loaded).toMatchObject({ quarantined: 1 });
    expect(e.peerStatus(FRONTEND, 'AA01')).toEqual({ ok: false, reason: 'quarantined' });
    expect(e.isQuarantined(FRONTEND)).toBe(true);
    expect(tcp(FRONTEND)).toMatchObject({ allow: false, reasons: ['quarantined'] });
    expect(e.authorize({ principal: FRONTEND, action: 'secret:unseal', resource: `${TD}/tessera/secret/db` }).allow).toBe(false);
    // Calls into the quarantined workload are refused too.
    expect(e.peerStatus(ORDERS)).toEqual({ ok: true });
    expect(tcp(ORDERS, FRONTEND)).toMatchObject({ allow: false, reasons: ['resource quarantined'] });
    // ORDERS is stepped up with score 70: the forbid on context.risk > 50 applies to it alone.
    expect(tcp(ORDERS, ORDERS).allow).toBe(false);

    // Cut off from the control plane (restart from the cache): still refused, until the TTL.
    await e.stop();
    const again = enforcer(new FakeControlPlane());
    again.start();
    expect(again.peerStatus(FRONTEND)).toEqual({ ok: false, reason: 'quarantined' });
    await new Promise((r) => setTimeout(r, Math.max(0, until - Date.now()) + 50));
    expect(again.peerStatus(FRONTEND)).toEqual({ ok: true });
    expect(again.authorize({ principal: FRONTEND, action: 'tcp:connect', resource: ORDERS }).allow).toBe(true);
    await again.stop();
  });

  it('refuses a bundle signed by a CA outside the trust bundle and keeps the last good one', async () => {
    const cp = new FakeControlPlane();
    const e = enforcer(cp);
    const loaded = nextEvent(e, 'policy');
    e.start();
    const v1 = ca.sign(1, READ_ONLY);
    cp.send(v1, 1);
    await loaded;

    const refused = nextEvent<{ error: { code: string; message: string } }>(e, 'refused');
    let policyEvents = 0;
    e.on('policy', () => policyEvents++);
    cp.send(otherCa.sign(2, READ_WRITE), 2);
    const r = await refused;
    expect(r.error.code).toBe('TESSERA_POLICY_BUNDLE_INVALID');
    expect(r.error.message).toMatch(/not in the trust bundle/);
    expect(e.version).toBe(1);
    expect(policyEvents).toBe(0);
    expect(e.authorize(GET).allow).toBe(true);
    expect(e.authorize(POST).allow).toBe(false);
    // The cache on disk still holds the good bundle.
    await e.cached();
    expect(JSON.parse(readFileSync(join(dir, 'policy-bundle.json'), 'utf8'))).toEqual(v1);
    // And the refusal is recorded for the audit table.
    await e.decisions.flush();
    expect(shipped.some((d) => d.action === 'policy:bundle' && d.principal === '-' && d.reasons[0] === 'TESSERA_POLICY_BUNDLE_INVALID')).toBe(true);
  });

  it('refuses a tampered payload or signature', async () => {
    const cp = new FakeControlPlane();
    const e = enforcer(cp);
    const loaded = nextEvent(e, 'policy');
    e.start();
    cp.send(ca.sign(1, READ_ONLY), 1);
    await loaded;

    // The payload of v2 (allows POST) under the signature of a v2 that does not.
    const honest = ca.sign(2, READ_ONLY);
    const wanted = ca.sign(2, READ_WRITE);
    const swapped: SignedPolicyBundle = { ...honest, payload: wanted.payload };
    let refused = nextEvent<{ error: { code: string; message: string } }>(e, 'refused');
    cp.send(swapped, 2);
    let r = await refused;
    expect(r.error.code).toBe('TESSERA_POLICY_BUNDLE_INVALID');
    expect(r.error.message).toMatch(/signature does not verify/);
    expect(e.version).toBe(1);
    expect(e.authorize(POST).allow).toBe(false);

    // A flipped bit in the signature.
    const sig = Buffer.from(wanted.signature, 'base64url');
    sig[10] = sig[10]! ^ 1;
    refused = nextEvent(e, 'refused');
    cp.send({ ...wanted, signature: sig.toString('base64url') }, 2);
    r = await refused;
    expect(r.error.code).toBe('TESSERA_POLICY_BUNDLE_INVALID');
    expect(e.version).toBe(1);
    expect(e.authorize(POST).allow).toBe(false);
  }, 15_000);

  it('refuses an older version (no rollback), even when properly signed', async () => {
    const cp = new FakeControlPlane();
    const e = enforcer(cp);
    const loaded = nextEvent(e, 'policy');
    e.start();
    cp.send(ca.sign(3, READ_WRITE), 3);
    await loaded;
    expect(e.authorize(POST).allow).toBe(true);

    const refused = nextEvent<{ error: { code: string; message: string } }>(e, 'refused');
    cp.send(ca.sign(2, READ_ONLY), 2);
    const r = await refused;
    expect(r.error.code).toBe('TESSERA_POLICY_BUNDLE_INVALID');
    expect(r.error.message).toMatch(/rollback refused/);
    expect(e.version).toBe(3);
    expect(e.authorize(POST).allow).toBe(true);
    // Direct loads are held to the same rule.
    expect(() => e.load(ca.sign(1, READ_ONLY), 'server')).toThrow(/rollback refused/);
    expect(e.version).toBe(3);

    // A newer one is taken.
    const next = nextEvent<{ version: number }>(e, 'policy');
    cp.send(ca.sign(4, READ_ONLY), 4);
    expect((await next).version).toBe(4);
    expect(e.authorize(POST).allow).toBe(false);
  }, 15_000);

  it('keeps deciding while the control plane is unreachable', async () => {
    const cp = new FakeControlPlane();
    const e = enforcer(cp);
    const loaded = nextEvent(e, 'policy');
    e.start();
    cp.send(ca.sign(1, READ_ONLY), 1);
    await loaded;
    cp.answer(new Error('ECONNREFUSED'));
    cp.answer(new Error('ECONNREFUSED'));
    await waitUntil(() => cp.calls.length >= 3, 5_000);
    expect(e.version).toBe(1);
    expect(e.authorize(GET).allow).toBe(true);
    expect(e.authorize(POST).allow).toBe(false);
  }, 10_000);

  it('after a restart, enforces the bundle cached on disk before the control plane answers', async () => {
    const cp = new FakeControlPlane();
    const first = enforcer(cp);
    const loaded = nextEvent(first, 'policy');
    first.start();
    cp.send(ca.sign(5, READ_ONLY), 5);
    await loaded;
    await first.stop();

    // A control plane that never answers: the cache alone must do.
    const silent = new FakeControlPlane();
    const second = enforcer(silent);
    const events: { version: number; source: string }[] = [];
    second.on('policy', (ev: { version: number; source: string }) => events.push(ev));
    second.start();
    // Loaded synchronously, in start().
    expect(events).toEqual([expect.objectContaining({ version: 5, source: 'cache' })]);
    expect(second.version).toBe(5);
    expect(second.authorize(GET).allow).toBe(true);
    expect(second.authorize(POST).allow).toBe(false);
    // And it asks the control plane for anything newer than the cached version.
    expect(silent.calls[0]!.after).toBe(5);

    // The cached version is the floor: an older one from the server is refused after restart too.
    const refused = nextEvent<{ error: { message: string } }>(second, 'refused');
    silent.send(ca.sign(4, READ_WRITE), 4);
    expect((await refused).error.message).toMatch(/rollback refused/);
    expect(second.authorize(POST).allow).toBe(false);
  }, 10_000);

  it('refuses a cached bundle whose signer is no longer trusted: deny all until the server answers', async () => {
    const cp = new FakeControlPlane();
    const first = enforcer(cp);
    const loaded = nextEvent(first, 'policy');
    first.start();
    cp.send(ca.sign(2, READ_ONLY), 2);
    await loaded;
    await first.stop();

    // The trust bundle moved on to another CA (the old one was removed).
    trusted = [otherCa.certDer];
    const later = new FakeControlPlane();
    const second = enforcer(later);
    let events = 0;
    second.on('policy', () => events++);
    second.start();
    expect(events).toBe(0);
    expect(second.version).toBe(0);
    const d = second.authorize(GET);
    expect(d.allow).toBe(false);
    expect(d.reasons.join(' ')).toMatch(/no policy bundle/);
    expect(later.calls[0]!.after).toBe(0);

    // The control plane answers with a bundle from the now-trusted CA: enforced and cached.
    const fresh = nextEvent<{ version: number; source: string }>(second, 'policy');
    later.send(otherCa.sign(3, READ_ONLY), 3);
    expect(await fresh).toMatchObject({ version: 3, source: 'server' });
    expect(second.authorize(GET).allow).toBe(true);
  });

  it('re-caches the same bundle re-signed by a new CA (CA rotation), so a restart after the old CA is gone still has it', async () => {
    // The agent trusts both CAs during a rotation: the old one signed v2, the control plane re-signs
    // v2 (same version, same content) with the new CA once it activates, and says "unchanged".
    trusted = [ca.certDer, otherCa.certDer];
    const cp = new FakeControlPlane();
    const first = enforcer(cp);
    const loaded = nextEvent(first, 'policy');
    first.start();
    cp.send(ca.sign(2, READ_ONLY), 2);
    await loaded;
    let events = 0;
    first.on('policy', () => events++);
    const resigned = otherCa.sign(2, READ_ONLY);
    cp.answer({ version: 2, changed: false, bundle: resigned });
    await waitUntil(() => cp.calls.length >= 3);
    expect(events).toBe(0);
    expect(first.version).toBe(2);
    await first.cached();
    expect(JSON.parse(readFileSync(join(dir, 'policy-bundle.json'), 'utf8'))).toEqual(resigned);
    await first.stop();

    // The old CA leaves the trust bundle; the agent restarts while the control plane is away.
    trusted = [otherCa.certDer];
    const second = enforcer(new FakeControlPlane());
    second.start();
    expect(second.version).toBe(2);
    expect(second.authorize(GET).allow).toBe(true);
  });

  it('refuses a corrupt cache file without crashing (deny all meanwhile)', () => {
    writeFileSync(join(dir, 'policy-bundle.json'), '{"payload": "not a bundle"');
    const e = enforcer(new FakeControlPlane());
    e.start();
    expect(e.version).toBe(0);
    expect(e.authorize(GET).allow).toBe(false);
  });

  it('records decisions through ship: every denial, allows as sampled, refusals as tls:handshake', async () => {
    const e = await readOnlyEnforcer({ allowSampleRate: 0 });
    for (let i = 0; i < 5; i++) e.authorize(GET);
    e.authorize(POST);
    e.recordRefusal(ORDERS, 'TESSERA_AUTH_INVALID', 'certificate signed by an unknown CA');
    await e.decisions.flush();
    expect(shipped).toHaveLength(2);
    const [denied, refusal] = shipped;
    expect(denied).toMatchObject({
      principal: FRONTEND, action: 'http:request', resource: ORDERS, allow: false,
      context: { method: 'POST', path: '/orders', site: 'cloud-eu', risk: 0 },
    });
    expect(typeof denied!.context.time).toBe('number');
    expect(typeof denied!.context.hour).toBe('number');
    expect(refusal).toMatchObject({
      principal: '-', action: 'tls:handshake', resource: ORDERS, allow: false, reasons: ['TESSERA_AUTH_INVALID'],
      context: { site: 'cloud-eu', code: 'TESSERA_AUTH_INVALID', reason: 'certificate signed by an unknown CA' },
    });

    // With every allow sampled, allows are shipped too, with the determining policy.
    shipped = [];
    const all = enforcer(new FakeControlPlane(), { allowSampleRate: 1 });
    all.load(ca.sign(1, READ_ONLY), 'server');
    all.authorize(GET);
    await all.stop();
    expect(shipped).toEqual([expect.objectContaining({ principal: FRONTEND, allow: true, reasons: ['frontend-reads-orders'] })]);
  });

  it('spills decisions to disk while shipping fails and sends them once it works again', async () => {
    let up = false;
    const cp = new FakeControlPlane();
    const e = enforcer(cp, {
      ship: async (records) => {
        if (!up) throw new Error('control plane unreachable');
        shipped.push(...records);
      },
    });
    e.start();
    e.authorize(POST);
    e.authorize({ ...POST, path: '/orders/1' });
    await e.decisions.flush();
    expect(shipped).toHaveLength(0);
    expect(e.decisions.spilledBytes).toBeGreaterThan(0);
    // The control plane is back: the spill goes out by itself (retried), with no new decision to trigger it.
    up = true;
    await waitUntil(() => shipped.length === 2, 5_000);
    expect(shipped.map((r) => r.context.path)).toEqual(['/orders', '/orders/1']);
    expect(e.decisions.spilledBytes).toBe(0);
    expect(existsSync(join(dir, 'decisions.spill.jsonl.sending'))).toBe(false);
  }, 10_000);

  it('sends records spilled by an earlier run when it starts', async () => {
    const down = enforcer(new FakeControlPlane(), { ship: async () => { throw new Error('down'); } });
    down.start();
    down.authorize(POST);
    await down.stop();
    expect(down.decisions.spilledBytes).toBeGreaterThan(0);

    const next = enforcer(new FakeControlPlane());
    next.start();
    await waitUntil(() => shipped.length === 1, 3_000);
    expect(shipped[0]).toMatchObject({ principal: FRONTEND, context: { method: 'POST', path: '/orders' }, allow: false });
    expect(next.decisions.spilledBytes).toBe(0);
  });

  it('takes the audit log key of the same bundle re-issued with it (a control plane upgraded to carry it)', async () => {
    const e = enforcer(new FakeControlPlane());
    const plain = ca.sign(3, READ_ONLY);
    e.load(plain, 'server');
    expect(e.auditLogKey).toBeUndefined();
    const logKey = encodeVerifierKey('example.org/tessera/audit', generateKeyPairSync('ed25519').publicKey);
    const withKey = signPolicyBundle(createPolicyBundle({
      version: 3, author: `${TD}/tessera/admin`, reason: 'test v3', policies: READ_ONLY, schema: TESSERA_SCHEMA as Record<string, unknown>, entities: ENTITIES, auditLogKey: logKey,
    }), { privateKey: ca.privateKey, certDer: ca.certDer });
    e.load(withKey, 'server');
    expect(e.auditLogKey).toBe(logKey);
    await e.cached();
    expect(JSON.parse(readFileSync(join(dir, 'policy-bundle.json'), 'utf8'))).toEqual(withKey);
  });

  it('clips long context strings in records to what the control plane accepts (the decision sees them whole)', async () => {
    const cp = new FakeControlPlane();
    const e = enforcer(cp, { allowSampleRate: 1 });
    e.load(ca.sign(1, READ_ONLY), 'server');
    const longPath = `/orders/${'x'.repeat(5000)}`;
    expect(e.authorize({ ...GET, path: longPath }).allow).toBe(true);
    e.authorize({ ...POST, path: longPath });
    await e.decisions.flush();
    expect(shipped).toHaveLength(2);
    for (const r of shipped) {
      expect(r.context.path).toBe(longPath.slice(0, 2048));
      expect(r.context.method).toMatch(/^(GET|POST)$/);
    }
  });
});

describe('DecisionLog batches', () => {
  it('ships at most maxBatch records and about maxBatchBytes of JSON per call, in order', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-dlog-batches-'));
    try {
      const calls: DecisionRecord[][] = [];
      const log = new DecisionLog({ dir, maxBatch: 1000, maxBatchBytes: 8 * 1024, allowSampleRate: 1, ship: async (b) => { calls.push(b); } });
      const records = Array.from({ length: 100 }, (_, i): DecisionRecord => ({
        ts: i, principal: FRONTEND, action: 'http:request', resource: ORDERS, context: { method: 'GET', path: `/orders/${i}/${'p'.repeat(200)}` }, allow: false, reasons: [],
      }));
      for (const r of records) log.record(r);
      await log.flush();
      expect(calls.length).toBeGreaterThan(1);
      for (const b of calls) expect(Buffer.byteLength(JSON.stringify(b))).toBeLessThanOrEqual(8 * 1024 + 64);
      expect(calls.flat().map((r) => r.ts)).toEqual(records.map((r) => r.ts));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

async function waitUntil(fn: () => boolean, timeoutMs = 3_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}
