/**
 * Derived credentials under policy, over real HTTPS + mTLS and a real SQLite file: API key scopes
 * and JWT-SVID audiences are Cedar `credential:derive` decisions (default deny), API key lifetimes
 * are bounded by the entry, keys can be listed and revoked, and verification refuses keys that are
 * revoked or whose owner is gone. Plus property tests of the request parsers.
 */
import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ApiClient } from '../../common/api-client.js';
import { isTesseraError } from '../../core/errors.js';
import {
  agentClient,
  applyPolicy,
  errorCode,
  isHealthy,
  joinAgent,
  rawRequest,
  rejectionCode,
  startControlPlane,
  type JoinedAgent,
  type TestControlPlane,
} from '../../../test/support/server.js';
import type { ApiKeyRecord, EntryRecord } from '../store/store.js';
import { parseApiKeyListQuery, parseApiKeyRequest, parseRevokeRequest } from './apikeys.js';
import { apiKeyRefusal } from './service.js';

const TD = 'tessera.test';
const ORDERS = `spiffe://${TD}/shop/orders`;
const REPORTS = `spiffe://${TD}/shop/reports`;

/** orders may hold `orders:*` API keys of up to an hour, and JWT-SVIDs for payments; nobody else gets anything. */
const POLICY = {
  'derive.cedar': `
permit (principal == Tessera::Workload::"${ORDERS}", action == Tessera::Action::"credential:derive",
        resource == Tessera::Workload::"spiffe://${TD}/tessera/credential/apikey")
when { context.kind == "apikey" && context.scope like "orders:*" && context.ttl_seconds <= 3600 };

permit (principal, action == Tessera::Action::"credential:derive", resource == Tessera::Workload::"spiffe://${TD}/tessera/credential/jwt")
when { principal has app && principal.app == "orders" && context.audience == "payments" };

permit (principal == Tessera::Workload::"${REPORTS}", action == Tessera::Action::"credential:derive",
        resource == Tessera::Workload::"spiffe://${TD}/tessera/credential/apikey")
when { context.scope == "reports:read" };
`,
};

interface KeyView { id: string; owner: string; scopes: string[]; state: string; revoked_at?: string; revoked_reason?: string | null; expires_at: string }
interface AuditRow { action: string; outcome: string; code: string; actor: string; target: string; detail: Record<string, unknown> }

describe('derived credentials under policy', () => {
  let t: TestControlPlane;
  let orders: JoinedAgent;
  let reports: JoinedAgent;
  let oc: ApiClient;
  let rc: ApiClient;
  const clients: ApiClient[] = [];
  const keys: string[] = [];

  const client = (a: JoinedAgent): ApiClient => {
    const c = agentClient(t.cp, a);
    clients.push(c);
    return c;
  };
  const mintKey = async (c: ApiClient, body: Record<string, unknown>): Promise<{ api_key: string; id: string; expires_at: string }> => {
    const k = await c.call<{ api_key: string; id: string; expires_at: string }>('POST', '/v1/apikeys', body);
    keys.push(k.api_key);
    return k;
  };
  const verify = (c: ApiClient, api_key: string): Promise<unknown> => c.call('POST', '/v1/apikeys/verify', { api_key });
  const audit = async (action: string): Promise<AuditRow[]> =>
    (await t.admin.call<{ records: AuditRow[] }>('GET', `/v1/audit?action=${action}&limit=10000`)).records;

  beforeAll(async () => {
    t = await startControlPlane({ trustDomain: TD });
    orders = await joinAgent(t.cp, t.admin, ORDERS, { entry: { attributes: { app: 'orders' }, apikey_max_ttl_seconds: 7200 } });
    reports = await joinAgent(t.cp, t.admin, REPORTS);
    oc = client(orders);
    rc = client(reports);
  });

  afterEach(async () => {
    expect(await isHealthy(t.cp)).toBe(true);
  });

  afterAll(async () => {
    for (const c of clients) c.close();
    await t?.close();
    expect(t.logs.filter((l) => l.includes('"internal error"'))).toEqual([]);
  });

  it('without any policy nothing is derived: API keys and JWT-SVIDs → 403 TESSERA_CREDENTIAL_DENIED', async () => {
    expect(await rejectionCode(oc.call('POST', '/v1/apikeys', { scopes: ['orders:read'] }))).toBe('TESSERA_CREDENTIAL_DENIED');
    expect(await rejectionCode(oc.call('POST', '/v1/svid/jwt', { audience: 'payments' }))).toBe('TESSERA_CREDENTIAL_DENIED');
    await applyPolicy(t.admin, POLICY);
  });

  it('API key scopes are policy: a permitted scope works, any scope outside it refuses the whole request', async () => {
    const k = await mintKey(oc, { scopes: ['orders:read', 'orders:write'], ttl_seconds: 600 });
    expect(await verify(rc, k.api_key)).toMatchObject({ valid: true, owner: ORDERS, scopes: ['orders:read', 'orders:write'] });
    for (const scopes of [['admin'], ['orders:read', 'reports:read'], ['payments:charge']]) {
      const res = await rawRequest(t.cp.url, {
        method: 'POST', path: '/v1/apikeys', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ scopes }),
        ca: t.adminTls.ca, cert: orders.certPem, key: orders.keyPem,
      });
      expect(res.status).toBe(403);
      expect(errorCode(res)).toBe('TESSERA_CREDENTIAL_DENIED');
      expect((res.json as { error: { message: string } }).error.message).toContain(JSON.stringify(scopes.find((s) => !s.startsWith('orders:'))));
    }
    // Another identity gets only what policy grants it.
    await mintKey(rc, { scopes: ['reports:read'] });
    expect(await rejectionCode(rc.call('POST', '/v1/apikeys', { scopes: ['orders:read'] }))).toBe('TESSERA_CREDENTIAL_DENIED');
    // The TTL is in the context: the policy caps orders at an hour.
    expect(await rejectionCode(oc.call('POST', '/v1/apikeys', { scopes: ['orders:read'], ttl_seconds: 3601 }))).toBe('TESSERA_CREDENTIAL_DENIED');

    const refused = (await audit('apikey.create')).find((r) => r.outcome === 'denied' && r.actor === ORDERS && (r.detail.scopes as string[]).includes('admin'));
    expect(refused).toMatchObject({ code: 'TESSERA_CREDENTIAL_DENIED', detail: { reason: 'policy', denied: ['admin'] } });
    const made = (await audit('apikey.create')).find((r) => r.outcome === 'success' && r.detail.key_id === k.id);
    expect(made?.detail.policy).toEqual(['derive.cedar#0']);
  });

  it('API key TTL is bounded by the entry: above it → 403 (refused, not clipped); none given → the smaller of a day and the bound', async () => {
    // reports has the default bound (1 day); its policy does not look at the TTL.
    expect(await rejectionCode(rc.call('POST', '/v1/apikeys', { scopes: ['reports:read'], ttl_seconds: 86401 }))).toBe('TESSERA_CREDENTIAL_DENIED');
    const day = await mintKey(rc, { scopes: ['reports:read'], ttl_seconds: 86400 });
    expect(Date.parse(day.expires_at) - Date.now()).toBeGreaterThan(86000_000);
    const bounded = await joinAgent(t.cp, t.admin, `spiffe://${TD}/shop/bounded`, { entry: { apikey_max_ttl_seconds: 120 } });
    await applyPolicy(t.admin, { ...POLICY, 'bounded.cedar': `permit (principal == Tessera::Workload::"spiffe://${TD}/shop/bounded", action, resource);` });
    const bc = client(bounded);
    expect(await rejectionCode(bc.call('POST', '/v1/apikeys', { scopes: ['x'], ttl_seconds: 121 }))).toBe('TESSERA_CREDENTIAL_DENIED');
    const k = await mintKey(bc, { scopes: ['x'] });
    const left = Date.parse(k.expires_at) - Date.now();
    expect(left).toBeGreaterThan(60_000);
    expect(left).toBeLessThanOrEqual(120_000);
    // Above the global maximum (7 days) is a bad request, whatever the entry says.
    expect(await rejectionCode(bc.call('POST', '/v1/apikeys', { scopes: ['x'], ttl_seconds: 7 * 86400 + 1 }))).toBe('TESSERA_BAD_REQUEST');
    for (const v of [59, 7 * 86400 + 1, '3600', 1.5]) {
      expect(await rejectionCode(t.admin.call('POST', '/v1/entries', { spiffe_id: `spiffe://${TD}/shop/ttl${String(v).replace('.', '')}`, apikey_max_ttl_seconds: v }))).toBe('TESSERA_BAD_REQUEST');
    }
    const shown = await t.admin.call<{ apikey_max_ttl_seconds: number }>('GET', `/v1/entries/${encodeURIComponent(REPORTS)}`);
    expect(shown.apikey_max_ttl_seconds).toBe(86400);
  });

  it('JWT-SVID audiences are policy: a permitted audience works, any other → 403 TESSERA_CREDENTIAL_DENIED', async () => {
    const jwt = await oc.call<{ token: string; audience: string[] }>('POST', '/v1/svid/jwt', { audience: 'payments' });
    expect(jwt.audience).toEqual(['payments']);
    for (const audience of ['orders-api', ['payments', 'evil'], [`spiffe://${TD}/tessera/server`]]) {
      expect(await rejectionCode(oc.call('POST', '/v1/svid/jwt', { audience }))).toBe('TESSERA_CREDENTIAL_DENIED');
    }
    expect(await rejectionCode(rc.call('POST', '/v1/svid/jwt', { audience: 'payments' }))).toBe('TESSERA_CREDENTIAL_DENIED');
    const denied = (await audit('svid.jwt')).find((r) => r.outcome === 'denied' && r.actor === ORDERS && (r.detail.audience as string[]).includes('evil'));
    expect(denied).toMatchObject({ code: 'TESSERA_CREDENTIAL_DENIED', detail: { reason: 'policy', denied: ['evil'] } });
  });

  it('a revoked key fails verification with the same answer as an unknown one; revocation is kept and idempotent', async () => {
    const k = await mintKey(oc, { scopes: ['orders:read'], ttl_seconds: 600 });
    await verify(rc, k.api_key);
    const revoked = await t.admin.call<KeyView>('POST', `/v1/apikeys/${k.id}/revoke`, { reason: 'leaked in a log' });
    expect(revoked).toMatchObject({ id: k.id, owner: ORDERS, state: 'revoked', revoked_reason: 'leaked in a log' });
    const res = await rawRequest(t.cp.url, {
      method: 'POST', path: '/v1/apikeys/verify', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ api_key: k.api_key }),
      ca: t.adminTls.ca, cert: reports.certPem, key: reports.keyPem,
    });
    const unknown = await rawRequest(t.cp.url, {
      method: 'POST', path: '/v1/apikeys/verify', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ api_key: `tak_ffffffffffffffff_${k.api_key.slice(-43)}` }),
      ca: t.adminTls.ca, cert: reports.certPem, key: reports.keyPem,
    });
    expect(res.status).toBe(401);
    expect(res.text).toBe(unknown.text);
    // Revoking again keeps the first revocation.
    const again = await t.admin.call<KeyView>('POST', `/v1/apikeys/${k.id}/revoke`, { reason: 'other' });
    expect(again).toMatchObject({ revoked_at: revoked.revoked_at, revoked_reason: 'leaked in a log' });
    const listed = await t.admin.call<{ api_keys: KeyView[] }>('GET', `/v1/apikeys?owner=${encodeURIComponent(ORDERS)}`);
    expect(listed.api_keys.find((x) => x.id === k.id)).toMatchObject({ state: 'revoked', revoked_reason: 'leaked in a log' });
    const refusal = (await audit('apikey.verify')).find((r) => r.outcome === 'denied' && r.detail.key_id === k.id);
    expect(refusal).toMatchObject({ code: 'TESSERA_APIKEY_INVALID', target: ORDERS, detail: { reason: 'revoked' } });
    expect((await audit('apikey.revoke')).filter((r) => r.outcome === 'success' && r.detail.key_id === k.id).map((r) => r.detail.already_revoked)).toEqual([false, true]);
  });

  it('a key of a deleted owner fails verification, and stays dead when the same ID is registered again', async () => {
    const gone = await joinAgent(t.cp, t.admin, `spiffe://${TD}/shop/gone`);
    await applyPolicy(t.admin, { ...POLICY, 'gone.cedar': `permit (principal == Tessera::Workload::"spiffe://${TD}/shop/gone", action, resource);` });
    const k = await mintKey(client(gone), { scopes: ['gone:read'] });
    await verify(rc, k.api_key);
    await t.admin.call('DELETE', `/v1/entries/${gone.entryId}`);
    expect(await rejectionCode(verify(rc, k.api_key))).toBe('TESSERA_APIKEY_INVALID');
    await t.admin.call('POST', '/v1/entries', { spiffe_id: gone.spiffeId });
    expect(await rejectionCode(verify(rc, k.api_key))).toBe('TESSERA_APIKEY_INVALID');
    const reasons = (await audit('apikey.verify')).filter((r) => r.outcome === 'denied' && r.detail.key_id === k.id).map((r) => r.detail.reason);
    expect(reasons).toEqual(['owner_deleted', 'owner_replaced']);
  });

  it('a key of a revoked owner fails verification (tessera entry revoke)', async () => {
    const doomed = await joinAgent(t.cp, t.admin, `spiffe://${TD}/shop/stolen`);
    await applyPolicy(t.admin, { ...POLICY, 'stolen.cedar': `permit (principal == Tessera::Workload::"spiffe://${TD}/shop/stolen", action, resource);` });
    const k = await mintKey(client(doomed), { scopes: ['stolen:read'] });
    await verify(rc, k.api_key);
    await t.admin.call('POST', `/v1/entries/${doomed.entryId}/revoke`, { reason: 'laptop stolen' });
    expect(await rejectionCode(verify(rc, k.api_key))).toBe('TESSERA_APIKEY_INVALID');
    const reasons = (await audit('apikey.verify')).filter((r) => r.outcome === 'denied' && r.detail.key_id === k.id).map((r) => r.detail.reason);
    expect(reasons).toEqual(['owner_revoked']);
  });

  it('the verification rule: revoked key, revoked or deleted owner, a bound lowered after issuance', () => {
    const now = Date.now();
    const rec: ApiKeyRecord = { id: '0123456789abcdef', hash: '', owner: ORDERS, scopes: ['x'], createdAt: now - 1000, expiresAt: now + 60_000 };
    const owner: EntryRecord = { id: 'e', spiffeId: ORDERS, selectors: [], attributes: {}, x509TtlSeconds: 60, jwtTtlSeconds: 60, apikeyMaxTtlSeconds: 86400, createdAt: now - 2000 };
    expect(apiKeyRefusal(rec, owner, now)).toBeUndefined();
    expect(apiKeyRefusal(rec, { ...owner, revokedAt: now - 1 }, now)).toBe('owner_revoked');
    expect(apiKeyRefusal(rec, undefined, now)).toBe('owner_deleted');
    expect(apiKeyRefusal({ ...rec, revokedAt: now }, owner, now)).toBe('revoked');
    // A bound lowered after issuance shortens the key.
    expect(apiKeyRefusal(rec, { ...owner, apikeyMaxTtlSeconds: 60 }, now + 59_500)).toBe('expired');
    expect(apiKeyRefusal(rec, owner, now + 60_000)).toBe('expired');
  });

  it('list and revoke: the admin sees every key; a workload only its own; never a secret or hash', async () => {
    const mine = await mintKey(rc, { scopes: ['reports:read'] });
    const all = await t.admin.call<{ api_keys: (KeyView & { hash?: string })[] }>('GET', '/v1/apikeys');
    expect(new Set(all.api_keys.map((k) => k.owner))).toEqual(new Set([ORDERS, REPORTS, `spiffe://${TD}/shop/bounded`, `spiffe://${TD}/shop/gone`, `spiffe://${TD}/shop/stolen`]));
    const own = await rc.call<{ api_keys: KeyView[] }>('GET', '/v1/apikeys');
    expect(own.api_keys.length).toBeGreaterThan(0);
    expect(own.api_keys.every((k) => k.owner === REPORTS)).toBe(true);
    expect((await rc.call<{ api_keys: KeyView[] }>('GET', `/v1/apikeys?owner=${encodeURIComponent(REPORTS)}&limit=1`)).api_keys).toHaveLength(1);
    const text = JSON.stringify(all);
    for (const k of keys) expect(text).not.toContain(k.slice(-43));
    expect(text).not.toContain('"hash"');
    // A workload revokes its own key (e.g. one it leaked).
    expect(await rc.call<KeyView>('POST', `/v1/apikeys/${mine.id}/revoke`, {})).toMatchObject({ state: 'revoked', revoked_reason: 'no reason given' });
    expect(await rejectionCode(verify(oc, mine.api_key))).toBe('TESSERA_APIKEY_INVALID');
  });

  it('list and revoke refusals: another owner → 403 / 404, unknown id → 404, malformed → 400, no certificate → 401', async () => {
    const theirs = await mintKey(oc, { scopes: ['orders:read'], ttl_seconds: 600 });
    expect(await rejectionCode(rc.call('GET', `/v1/apikeys?owner=${encodeURIComponent(ORDERS)}`))).toBe('TESSERA_FORBIDDEN');
    expect(await rejectionCode(rc.call('POST', `/v1/apikeys/${theirs.id}/revoke`, {}))).toBe('TESSERA_APIKEY_NOT_FOUND');
    await verify(rc, theirs.api_key); // still valid
    expect(await rejectionCode(t.admin.call('POST', '/v1/apikeys/ffffffffffffffff/revoke', {}))).toBe('TESSERA_APIKEY_NOT_FOUND');
    for (const id of ['FFFFFFFFFFFFFFFF', 'abc', `${theirs.id}0`, 'tak_x', '%00']) {
      expect(await rejectionCode(t.admin.call('POST', `/v1/apikeys/${encodeURIComponent(id)}/revoke`, {}))).toBe('TESSERA_BAD_REQUEST');
    }
    for (const body of [{ reason: '' }, { reason: 'a\nb' }, { reason: 'x'.repeat(257) }, { reason: 42 }, { why: 'x' }, []]) {
      expect(await rejectionCode(t.admin.call('POST', `/v1/apikeys/${theirs.id}/revoke`, body))).toBe('TESSERA_BAD_REQUEST');
    }
    for (const q of ['owner=orders', 'owner=spiffe%3A%2F%2Fother.test%2F..%2Fx', 'limit=0', 'limit=1001', 'limit=abc', 'owner=']) {
      expect(await rejectionCode(t.admin.call('GET', `/v1/apikeys?${q}`))).toBe('TESSERA_BAD_REQUEST');
    }
    for (const [method, path] of [['GET', '/v1/apikeys'], ['POST', `/v1/apikeys/${theirs.id}/revoke`]] as const) {
      const res = await rawRequest(t.cp.url, { method, path, ca: t.adminTls.ca, ...(method === 'POST' ? { headers: { 'content-type': 'application/json' }, body: '{}' } : {}) });
      expect(res.status).toBe(401);
    }
    // An identity whose entry is gone may not list or revoke anything, even keys it owned.
    const doomed = await joinAgent(t.cp, t.admin, `spiffe://${TD}/shop/doomed`);
    const dc = client(doomed);
    await t.admin.call('DELETE', `/v1/entries/${doomed.entryId}`);
    expect(await rejectionCode(dc.call('GET', '/v1/apikeys'))).toBe('TESSERA_IDENTITY_REVOKED');
    const stillThere = await t.admin.call<{ api_keys: KeyView[] }>('GET', `/v1/apikeys?owner=${encodeURIComponent(ORDERS)}`);
    expect(stillThere.api_keys.find((k) => k.id === theirs.id)?.state).toBe('active');
  });

  it('never writes a key into the audit log', async () => {
    const text = JSON.stringify(await t.admin.call('GET', '/v1/audit?limit=10000'));
    for (const k of keys) expect(text).not.toContain(k.slice(-43));
  });
});

describe('API key request parsers (property)', () => {
  const onlyBadRequest = (f: () => unknown): void => {
    try {
      f();
    } catch (err) {
      expect(isTesseraError(err) && err.code === 'TESSERA_BAD_REQUEST').toBe(true);
    }
  };
  const anything = fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.dictionary(fc.constantFrom('scopes', 'ttl_seconds', 'reason', 'owner', 'limit', '__proto__'), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 3 }));

  it('parseApiKeyRequest: any input is a clean request or TESSERA_BAD_REQUEST; accepted scopes and TTLs are within bounds', () => {
    fc.assert(fc.property(anything, (input) => {
      onlyBadRequest(() => {
        const r = parseApiKeyRequest(input);
        expect(r.scopes.length).toBeGreaterThanOrEqual(1);
        expect(r.scopes.length).toBeLessThanOrEqual(32);
        for (const s of r.scopes) expect(s).toMatch(/^[a-z0-9][a-z0-9._:/-]{0,127}$/);
        if (r.ttlSeconds !== undefined) expect(r.ttlSeconds >= 60 && r.ttlSeconds <= 7 * 86400).toBe(true);
      });
    }), { numRuns: 500 });
    expect(parseApiKeyRequest({ scopes: ['a', 'a'], ttl_seconds: 60 })).toEqual({ scopes: ['a'], ttlSeconds: 60 });
  });

  it('parseApiKeyListQuery: any query is clean or TESSERA_BAD_REQUEST', () => {
    const query = fc.dictionary(fc.constantFrom('owner', 'limit', 'x'), fc.oneof(fc.string(), fc.constant(`spiffe://${TD}/a`), fc.nat().map(String), fc.array(fc.string())), { maxKeys: 3 });
    fc.assert(fc.property(query, (q) => {
      onlyBadRequest(() => {
        const r = parseApiKeyListQuery(q);
        expect(r.limit >= 1 && r.limit <= 1000).toBe(true);
        if (r.owner !== undefined) expect(r.owner.startsWith('spiffe://')).toBe(true);
      });
    }), { numRuns: 500 });
    expect(parseApiKeyListQuery({ owner: ORDERS, limit: '5' })).toEqual({ owner: ORDERS, limit: 5 });
  });

  it('parseRevokeRequest: any id and body is clean or TESSERA_BAD_REQUEST', () => {
    fc.assert(fc.property(fc.oneof(fc.string(), fc.stringMatching(/^[0-9a-f]{16}$/), fc.jsonValue()), anything, (id, b) => {
      onlyBadRequest(() => {
        const r = parseRevokeRequest(id, b);
        expect(r.id).toMatch(/^[0-9a-f]{16}$/);
        if (r.reason !== undefined) expect(r.reason).not.toMatch(/[\x00-\x1f\x7f]/);
      });
    }), { numRuns: 500 });
    expect(parseRevokeRequest('0123456789abcdef', undefined)).toEqual({ id: '0123456789abcdef' });
  });
});
