/**
 * Risk states at the control plane (issue 11), over real HTTPS + mTLS and a real SQLite file:
 * `/v1/risk/...` set by hand (admin only, audited), the signed bundle's risk list and the long poll,
 * quarantine refusing renewals, joins, JWT-SVIDs, API keys and their verification, step-up
 * shortening TTLs and feeding `context.risk`, TTL expiry at the leader's tick, the engine's rules.
 * Negative tests for every route.
 */
import { X509Certificate } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ERROR_CODES, type ErrorCode } from '../../core/errors.js';
import { verifyPolicyBundle, type PolicyBundle, type SignedPolicyBundle } from '../../core/policy/bundle.js';
import { pemDecodeAll } from '../../core/x509.js';
import {
  PERMIT_ALL_DERIVE, applyPolicy, errorCode, joinAgent, makeCsrPem, rawJson, rawRequest, startControlPlane,
  type JoinedAgent, type RawResponse, type TestControlPlane,
} from '../../../test/support/server.js';
import type { RiskChangeResponse, RiskListResponse, RiskShowResponse } from '../../core/wire/risk.js';

const TD = 'tessera.test';

function expectError(res: RawResponse, code: ErrorCode): void {
  expect({ status: res.status, code: errorCode(res) }, res.text.slice(0, 300)).toEqual({ status: ERROR_CODES[code].status, code });
}

describe('risk states at the control plane', () => {
  let t: TestControlPlane;
  type Tls = { ca: string; cert?: string; key?: string };
  const admin = (): Tls => t.adminTls;
  const as = (a: JoinedAgent): Tls => ({ ca: t.adminTls.ca, cert: a.certPem, key: a.keyPem });
  const post = (path: string, json: unknown, tls = admin()): Promise<RawResponse> => rawJson(t.cp.url, { path, json, ...tls });
  const get = (path: string, tls = admin()): Promise<RawResponse> => rawRequest(t.cp.url, { path, ...tls });
  const risk = (id: string, verb?: string): string => `/v1/risk/${encodeURIComponent(id)}${verb ? `/${verb}` : ''}`;

  async function bundle(): Promise<{ version: number; bundle: PolicyBundle }> {
    const res = await get('/v1/policy/bundle');
    const body = res.json as { version: number; bundle: SignedPolicyBundle };
    return { version: body.version, bundle: verifyPolicyBundle(body.bundle, pemDecodeAll(t.adminTls.ca, 'CERTIFICATE')) };
  }

  async function audit(action: string): Promise<{ outcome: string; code: string; actor: string; target: string; detail: Record<string, unknown> }[]> {
    return ((await get(`/v1/audit?limit=1000&action=${action}`)).json as { records: never[] }).records;
  }

  beforeAll(async () => {
    t = await startControlPlane({ trustDomain: TD });
    await applyPolicy(t.admin);
  });
  afterAll(async () => {
    await t?.close();
  });

  it('quarantine by hand: listed in the bundle at once; no renewal, join, JWT-SVID, API key or key verification; no self-release; release restores', async () => {
    const w = await joinAgent(t.cp, t.admin, `spiffe://${TD}/shop/exfil`);
    const key = (await post('/v1/apikeys', { scopes: ['orders:read'] }, as(w))).json as { api_key: string };
    expect(key.api_key).toMatch(/^tak_/);
    const pendingToken = ((await post('/v1/tokens', { entry_id: w.entryId })).json as { token: string }).token;
    const before = await bundle();
    expect(before.bundle.risk).toBeUndefined();

    const started = Date.now();
    const poll = get(`/v1/policy/bundle?after=${before.version}&timeout_seconds=20`).then((r) => ({ r, ms: Date.now() - started }));
    const res = await post(risk(w.spiffeId, 'quarantine'), { ttl_seconds: 3600, reason: 'bulk exfiltration to an unknown host' });
    expect(res.status, res.text).toBe(200);
    const view = res.json as RiskChangeResponse;
    expect(view).toMatchObject({ previous: 'normal', state: { spiffe_id: w.spiffeId, state: 'quarantined', set_by: 'admin', reason: 'bulk exfiltration to an unknown host' } });
    const polled = await poll;
    expect(polled.ms).toBeLessThan(1000);
    expect((polled.r.json as { version: number }).version).toBe(view.bundle_version);
    const listed = (await bundle()).bundle.risk?.find((r) => r.id === w.spiffeId);
    expect(listed).toMatchObject({ state: 'quarantined', reason: 'bulk exfiltration to an unknown host' });
    expect(Math.abs(listed!.until - (Date.parse(view.state.until!)))).toBe(0);

    // Everything that would give it a credential is refused with the quarantine's code.
    expectError(await post('/v1/svid/renew', { csr: makeCsrPem().pem }, as(w)), 'TESSERA_IDENTITY_QUARANTINED');
    expectError(await post('/v1/svid/jwt', { audience: ['x'] }, as(w)), 'TESSERA_IDENTITY_QUARANTINED');
    expectError(await post('/v1/apikeys', { scopes: ['orders:read'] }, as(w)), 'TESSERA_IDENTITY_QUARANTINED');
    expectError(await post('/v1/apikeys/verify', { api_key: key.api_key }), 'TESSERA_IDENTITY_REVOKED'); // the admin has no entry
    const verifier = await joinAgent(t.cp, t.admin, `spiffe://${TD}/shop/verifier`);
    expectError(await post('/v1/apikeys/verify', { api_key: key.api_key }, as(verifier)), 'TESSERA_IDENTITY_QUARANTINED');
    expectError(await post('/v1/agent/join', { join_token: pendingToken, csr: makeCsrPem().pem }, { ca: t.adminTls.ca }), 'TESSERA_IDENTITY_QUARANTINED');
    // It still talks to the control plane (its agent follows the bundle) but cannot release itself.
    expect((await get('/v1/policy/bundle', as(w))).status).toBe(200);
    expectError(await post(risk(w.spiffeId, 'release'), { reason: 'it was me' }, as(w)), 'TESSERA_FORBIDDEN');
    expectError(await get('/v1/risk', as(w)), 'TESSERA_FORBIDDEN');

    const list = (await get('/v1/risk')).json as RiskListResponse;
    expect(list.identities.find((i) => i.spiffe_id === w.spiffeId)?.state).toBe('quarantined');

    const released = await post(risk(w.spiffeId, 'release'), { reason: 'false positive: nightly backup' });
    expect(released.status, released.text).toBe(200);
    expect(released.json).toMatchObject({ previous: 'quarantined', state: { state: 'normal', until: null } });
    expect((await bundle()).bundle.risk).toBeUndefined();
    expect((await post('/v1/svid/renew', { csr: makeCsrPem().pem }, as(w))).status).toBe(200);
    expect((await post('/v1/apikeys/verify', { api_key: key.api_key }, as(verifier))).status).toBe(200);
    expectError(await post(risk(w.spiffeId, 'release'), { reason: 'again' }), 'TESSERA_CONFLICT');

    const shown = (await get(risk(w.spiffeId))).json as RiskShowResponse;
    expect(shown.history.map((h) => `${h.previous}->${h.state}`)).toEqual(['quarantined->normal', 'normal->quarantined']);
    const q = (await audit('risk.quarantine')).find((r) => r.target === w.spiffeId && r.outcome === 'success')!;
    expect(q.detail).toMatchObject({ state: 'quarantined', previous: 'normal', reason: 'bulk exfiltration to an unknown host', ttl_seconds: 3600, bundle_version: view.bundle_version });
    const rel = (await audit('risk.release')).filter((r) => r.target === w.spiffeId);
    expect(rel.some((r) => r.outcome === 'success' && r.detail.reason === 'false positive: nightly backup')).toBe(true);
    expect(rel.some((r) => r.outcome === 'denied' && r.code === 'TESSERA_FORBIDDEN' && r.actor === w.spiffeId)).toBe(true);
    expect((await audit('svid.renew')).some((r) => r.code === 'TESSERA_IDENTITY_QUARANTINED' && r.target === w.spiffeId)).toBe(true);
  });

  it('step-up: short SVID, JWT-SVID and API key TTLs, and the score is context.risk for credential:derive', async () => {
    const w = await joinAgent(t.cp, t.admin, `spiffe://${TD}/shop/stepped`);
    const res = await post(risk(w.spiffeId, 'step-up'), { ttl_seconds: 600, reason: 'unusual volume', score: 60 });
    expect(res.status, res.text).toBe(200);
    expect((await bundle()).bundle.risk?.find((r) => r.id === w.spiffeId)).toMatchObject({ state: 'step-up', score: 60 });
    const svid = (await post('/v1/svid/renew', { csr: makeCsrPem().pem }, as(w))).json as { svid_pem: string };
    const cert = new X509Certificate(svid.svid_pem);
    expect(Date.parse(cert.validTo) - Date.parse(cert.validFrom)).toBeLessThanOrEqual(300_000 + 120_000); // CA backdating margin
    const jwt = (await post('/v1/svid/jwt', { audience: ['x'], ttl_seconds: 3600 }, as(w))).json as { expires_at: string };
    expect(Date.parse(jwt.expires_at) - Date.now()).toBeLessThanOrEqual(61_000);
    const key = (await post('/v1/apikeys', { scopes: ['s'], ttl_seconds: 3600 }, as(w))).json as { expires_at: string };
    expect(Date.parse(key.expires_at) - Date.now()).toBeLessThanOrEqual(301_000);

    // A policy reading context.risk: derivations above 50 are forbidden.
    await applyPolicy(t.admin, { 'derive.cedar': PERMIT_ALL_DERIVE, 'risk.cedar': 'forbid (principal, action, resource) when { context.risk > 50 };' });
    expectError(await post('/v1/svid/jwt', { audience: ['x'] }, as(w)), 'TESSERA_CREDENTIAL_DENIED');
    const other = await joinAgent(t.cp, t.admin, `spiffe://${TD}/shop/calm`);
    expect((await post('/v1/svid/jwt', { audience: ['x'] }, as(other))).status).toBe(200);
    await applyPolicy(t.admin);
    expect((await audit('risk.step-up')).some((r) => r.target === w.spiffeId && r.detail.score === 60)).toBe(true);
  });

  it('TTL expiry: the leader releases at the TTL, audited as risk.release with cause ttl, and the bundle drops it', async () => {
    const w = await joinAgent(t.cp, t.admin, `spiffe://${TD}/shop/brief`);
    // By hand the TTL is at least a minute; the service takes any (the engine's settings).
    const r = await t.cp.ctx.risk.apply({ identity: w.spiffeId, time: Date.now(), score: 90, state: 'quarantined', previous: 'normal', reasons: [] },
      { setBy: 'admin', actor: t.cp.ctx.adminId, ttlMs: 1500, reason: 'short test quarantine' });
    expect(r.applied).toBe(true);
    expect((await bundle()).bundle.risk?.some((x) => x.id === w.spiffeId)).toBe(true);
    expectError(await post('/v1/svid/jwt', { audience: ['x'] }, as(w)), 'TESSERA_IDENTITY_QUARANTINED');
    const deadline = Date.now() + 6000;
    let rec: Awaited<ReturnType<typeof audit>>[number] | undefined;
    while (Date.now() < deadline && rec === undefined) {
      await new Promise((res) => setTimeout(res, 200));
      rec = (await audit('risk.release')).find((x) => x.target === w.spiffeId && x.detail.cause === 'ttl');
    }
    expect(rec).toMatchObject({ outcome: 'success', actor: t.cp.ctx.serverId, detail: { previous: 'quarantined', state: 'normal' } });
    expect((await bundle()).bundle.risk?.some((x) => x.id === w.spiffeId) ?? false).toBe(false);
    expect((await post('/v1/svid/jwt', { audience: ['x'] }, as(w))).status).toBe(200);
    expect(((await get(risk(w.spiffeId))).json as RiskShowResponse).state).toMatchObject({ state: 'normal', set_by: 'expiry', score: 90 });
  });

  it('engine changes: applied and audited as the engine; never lower a quarantine or an admin\'s step-up', async () => {
    const w = await joinAgent(t.cp, t.admin, `spiffe://${TD}/shop/engine`);
    const svc = t.cp.ctx.risk;
    const reason = { signal: 'bytes_out', observed: 9e6, expected: 1e4, unusual: 40, text: 'bytes out 900x the baseline' };
    const releasesBefore = (await audit('risk.release')).length;
    expect(await svc.apply({ identity: w.spiffeId, time: Date.now(), score: 12, state: 'normal', previous: 'normal', reasons: [] }, { setBy: 'engine' })).toMatchObject({ applied: true });
    expect((await audit('risk.release')).length).toBe(releasesBefore);
    expect(((await get('/v1/risk')).json as RiskListResponse).identities.find((i) => i.spiffe_id === w.spiffeId)).toMatchObject({ state: 'normal', score: 12 });
    const up = await svc.apply({ identity: w.spiffeId, time: Date.now(), score: 55.4, state: 'step-up', previous: 'normal', reasons: [reason] }, { setBy: 'engine' });
    expect(up).toMatchObject({ applied: true, record: { state: 'step-up', score: 55, setBy: 'engine', note: 'bytes out 900x the baseline' } });
    const down = await svc.apply({ identity: w.spiffeId, time: Date.now(), score: 10, state: 'normal', previous: 'step-up', reasons: [] }, { setBy: 'engine' });
    expect(down.applied).toBe(true);
    await svc.apply({ identity: w.spiffeId, time: Date.now(), score: 99, state: 'quarantined', previous: 'normal', reasons: [reason] }, { setBy: 'engine' });
    const refused = await svc.apply({ identity: w.spiffeId, time: Date.now(), score: 5, state: 'normal', previous: 'quarantined', reasons: [] }, { setBy: 'engine' });
    expect(refused).toMatchObject({ applied: false });
    expect((await svc.standing(w.spiffeId)).state).toBe('quarantined');
    const rec = (await audit('risk.quarantine')).find((r) => r.target === w.spiffeId)!;
    expect(rec).toMatchObject({ actor: 'tessera/risk-engine', detail: { set_by: 'engine', reasons: [reason] } });
    await post(risk(w.spiffeId, 'step-up'), { ttl_seconds: 600, reason: 'by hand' });
    expect((await svc.apply({ identity: w.spiffeId, time: Date.now(), score: 0, state: 'normal', previous: 'step-up', reasons: [] }, { setBy: 'engine' })).applied).toBe(false);
    await post(risk(w.spiffeId, 'release'), { reason: 'done' });
  });

  it('refuses bad requests with stable codes', async () => {
    const w = await joinAgent(t.cp, t.admin, `spiffe://${TD}/shop/neg`);
    const id = w.spiffeId;
    const good = { ttl_seconds: 600, reason: 'ok' };
    // Not the admin: every route.
    for (const [path, body] of [[risk(id, 'quarantine'), good], [risk(id, 'step-up'), good], [risk(id, 'release'), { reason: 'x' }]] as const) {
      expectError(await post(path, body, as(w)), 'TESSERA_FORBIDDEN');
      expectError(await post(path, body, { ca: t.adminTls.ca }), 'TESSERA_AUTH_REQUIRED');
    }
    expectError(await get(risk(id), as(w)), 'TESSERA_FORBIDDEN');
    // Bad IDs.
    expectError(await post(risk('not-a-spiffe-id', 'quarantine'), good), 'TESSERA_SPIFFE_ID_INVALID');
    expectError(await post(risk('spiffe://other.test/shop/x', 'quarantine'), good), 'TESSERA_SPIFFE_ID_INVALID');
    expectError(await post(risk(`spiffe://${TD}`, 'quarantine'), good), 'TESSERA_SPIFFE_ID_INVALID');
    expectError(await post(risk(`spiffe://${TD}/tessera/admin`, 'quarantine'), good), 'TESSERA_SPIFFE_ID_RESERVED');
    expectError(await get(risk(`spiffe://${TD}/Shop/../x`)), 'TESSERA_SPIFFE_ID_INVALID');
    // Unknown IDs: refused unless forced.
    const ghost = `spiffe://${TD}/shop/ghost`;
    expectError(await post(risk(ghost, 'quarantine'), good), 'TESSERA_ENTRY_NOT_FOUND');
    expectError(await get(risk(ghost)), 'TESSERA_ENTRY_NOT_FOUND');
    expect((await post(risk(ghost, 'quarantine'), { ...good, force: true })).status).toBe(200);
    expect((await post(risk(ghost, 'release'), { reason: 'cleanup' })).status).toBe(200);
    // Bad TTLs, reasons, scores and fields.
    for (const ttl of [0, 59, 30 * 86400 + 1, -1, 1.5, '600', null]) expectError(await post(risk(id, 'quarantine'), { ttl_seconds: ttl, reason: 'x' }), 'TESSERA_BAD_REQUEST');
    for (const reason of ['', 'a'.repeat(257), 'new\nline', 'caf\u00e9', 7]) expectError(await post(risk(id, 'quarantine'), { ttl_seconds: 600, reason }), 'TESSERA_BAD_REQUEST');
    expectError(await post(risk(id, 'quarantine'), { ttl_seconds: 600 }), 'TESSERA_BAD_REQUEST');
    for (const score of [-1, 101, 5.5, '50']) expectError(await post(risk(id, 'step-up'), { ...good, score }), 'TESSERA_BAD_REQUEST');
    expectError(await post(risk(id, 'quarantine'), { ...good, force: 'yes' }), 'TESSERA_BAD_REQUEST');
    expectError(await post(risk(id, 'quarantine'), { ...good, extra: 1 }), 'TESSERA_BAD_REQUEST');
    expectError(await post(risk(id, 'release'), {}), 'TESSERA_BAD_REQUEST');
    expectError(await post(risk(id, 'release'), { reason: 'not quarantined' }), 'TESSERA_CONFLICT');
    // Nothing of the above changed its state.
    expect((await t.cp.ctx.risk.standing(id)).state).toBe('normal');
  });
});
