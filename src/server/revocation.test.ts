/**
 * Revocation at the control plane, over real HTTPS + mTLS: `POST /v1/entries/:id/revoke` and
 * `DELETE /v1/entries/:id` refuse the identity's current and future SVIDs on every route that
 * gives a workload something (renewal, JWT-SVIDs, API keys, the policy bundle, secret policies,
 * decision shipping), put its SPIFFE ID and serials on the signed list in the policy bundle, wake
 * long-polling agents at once, and are audited. Negative tests for the new endpoint.
 */
import { X509Certificate } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ERROR_CODES, type ErrorCode } from '../core/errors.js';
import { verifyPolicyBundle, type PolicyBundle, type SignedPolicyBundle } from '../core/policy/bundle.js';
import { pemDecodeAll } from '../core/x509.js';
import {
  applyPolicy,
  errorCode,
  joinAgent,
  makeCsrPem,
  rawJson,
  rawRequest,
  startControlPlane,
  type JoinedAgent,
  type RawResponse,
  type TestControlPlane,
} from '../../test/support/server.js';

const TD = 'tessera.test';

function expectError(res: RawResponse, code: ErrorCode): void {
  expect({ status: res.status, code: errorCode(res) }, res.text.slice(0, 300)).toEqual({ status: ERROR_CODES[code].status, code });
}

const serialOf = (pem: string): string => new X509Certificate(pem).serialNumber.toUpperCase();

describe('revocation at the control plane', () => {
  let t: TestControlPlane;
  type Tls = { ca: string; cert?: string; key?: string };
  const admin = (): Tls => t.adminTls;
  const as = (a: JoinedAgent): Tls => ({ ca: t.adminTls.ca, cert: a.certPem, key: a.keyPem });
  const post = (path: string, json: unknown, tls = admin()): Promise<RawResponse> => rawJson(t.cp.url, { path, json, ...tls });
  const get = (path: string, tls = admin()): Promise<RawResponse> => rawRequest(t.cp.url, { path, ...tls });

  async function bundle(tls = admin()): Promise<{ version: number; bundle: PolicyBundle }> {
    const res = await get('/v1/policy/bundle', tls);
    expect(res.status, res.text.slice(0, 200)).toBe(200);
    const body = res.json as { version: number; bundle: SignedPolicyBundle };
    const cas = pemDecodeAll(t.adminTls.ca, 'CERTIFICATE');
    return { version: body.version, bundle: verifyPolicyBundle(body.bundle, cas) };
  }

  async function audit(action: string): Promise<{ outcome: string; code: string; actor: string; target: string; detail: Record<string, unknown> }[]> {
    const res = await get(`/v1/audit?limit=1000&action=${action}`);
    return (res.json as { records: never[] }).records;
  }

  beforeAll(async () => {
    t = await startControlPlane({ trustDomain: TD });
    // JWT-SVIDs are derived credentials: default deny unless policy permits them.
    await applyPolicy(t.admin);
  });
  afterAll(async () => {
    await t?.close();
  });

  it('revoke: every route that gives a workload something refuses it, the bundle lists its serials, long polls wake at once, audited', async () => {
    const w = await joinAgent(t.cp, t.admin, `spiffe://${TD}/shop/revoked`);
    // A renewal before the revocation: both serials (join, renew) must be listed.
    const renewed = await post('/v1/svid/renew', { csr: makeCsrPem().pem }, as(w));
    expect(renewed.status).toBe(200);
    const serials = [serialOf(w.certPem), serialOf((renewed.json as { svid_pem: string }).svid_pem)];
    const pendingToken = (await post('/v1/tokens', { entry_id: w.entryId })).json as { token: string };
    const before = await bundle(as(w));
    expect(before.bundle.entities.map((e) => e.id)).toContain(w.spiffeId);

    // An agent long-polling the bundle is answered as soon as the revocation lands.
    const started = Date.now();
    const poll = get(`/v1/policy/bundle?after=${before.version}&timeout_seconds=20`).then((r) => ({ r, ms: Date.now() - started }));
    const res = await post(`/v1/entries/${w.entryId}/revoke`, { reason: 'key leaked in a log' });
    expect(res.status, res.text).toBe(200);
    const view = res.json as Record<string, unknown>;
    expect(view).toMatchObject({ id: w.entryId, spiffe_id: w.spiffeId, revoked_reason: 'key leaked in a log' });
    expect(Date.parse(String(view.revoked_at))).toBeGreaterThan(started - 1000);
    const polled = await poll;
    expect(polled.ms).toBeLessThan(1000);
    expect((polled.r.json as { changed: boolean; version: number }).version).toBe(view.bundle_version);

    const after = await bundle();
    expect(after.version).toBeGreaterThan(before.version);
    expect(after.bundle.entities.map((e) => e.id)).not.toContain(w.spiffeId);
    const listed = after.bundle.revoked.find((r) => r.id === w.spiffeId)!;
    expect(listed.reason).toBe('key leaked in a log');
    expect([...listed.serials].sort()).toEqual([...serials].sort());

    // The entry is kept and says it is revoked.
    expect(((await get(`/v1/entries/${w.entryId}`)).json as Record<string, unknown>).revoked_at).toBe(view.revoked_at);
    // Everything the workload could ask for is refused, with one code.
    expectError(await post('/v1/svid/renew', { csr: makeCsrPem().pem }, as(w)), 'TESSERA_IDENTITY_REVOKED');
    expectError(await post('/v1/svid/jwt', { audience: 'x' }, as(w)), 'TESSERA_IDENTITY_REVOKED');
    expectError(await post('/v1/apikeys', { scopes: ['x'] }, as(w)), 'TESSERA_IDENTITY_REVOKED');
    expectError(await post('/v1/apikeys/verify', { api_key: `tak_${'0'.repeat(16)}_${'a'.repeat(43)}` }, as(w)), 'TESSERA_IDENTITY_REVOKED');
    expectError(await get('/v1/policy/bundle', as(w)), 'TESSERA_IDENTITY_REVOKED');
    expectError(await get('/v1/secret-policies/anything', as(w)), 'TESSERA_IDENTITY_REVOKED');
    expectError(await post('/v1/decisions', { decisions: [] }, as(w)), 'TESSERA_IDENTITY_REVOKED');
    // Future SVIDs too: a join token made before the revocation is refused, and no new one is made.
    const anon = { ca: t.adminTls.ca };
    expectError(await post('/v1/agent/join', { join_token: pendingToken.token, csr: makeCsrPem().pem }, anon), 'TESSERA_TOKEN_INVALID');
    expectError(await post('/v1/tokens', { entry_id: w.entryId }), 'TESSERA_CONFLICT');

    const revokes = await audit('entry.revoke');
    expect(revokes.some((r) => r.outcome === 'success' && r.target === w.spiffeId && r.detail.reason === 'key leaked in a log' && r.detail.bundle_version === view.bundle_version)).toBe(true);
    const denied = await audit('svid.jwt');
    expect(denied.some((r) => r.outcome === 'denied' && r.actor === w.spiffeId && r.code === 'TESSERA_IDENTITY_REVOKED' && r.detail.identity === 'revoked')).toBe(true);
  });

  it('delete: the ID and its serials are listed; an entry re-created with the same ID does not revive the old SVID', async () => {
    const id = `spiffe://${TD}/shop/recreated`;
    const old = await joinAgent(t.cp, t.admin, id);
    const v0 = (await bundle()).version;
    const del = await t.admin.call<{ bundle_version: number }>('DELETE', `/v1/entries/${old.entryId}`);
    expect(del.bundle_version).toBeGreaterThan(v0);
    let b = await bundle();
    expect(b.bundle.entities.map((e) => e.id)).not.toContain(id);
    expect(b.bundle.revoked.find((r) => r.id === id)).toMatchObject({ reason: 'entry deleted', serials: [serialOf(old.certPem)] });
    expect((await audit('entry.delete')).some((r) => r.outcome === 'success' && r.target === id && r.detail.entry_id === old.entryId)).toBe(true);

    const fresh = await joinAgent(t.cp, t.admin, id);
    expect((await post('/v1/svid/jwt', { audience: 'x' }, as(fresh))).status).toBe(200);
    // The old certificate names the same SPIFFE ID, which has a live entry again: refused by serial.
    expectError(await post('/v1/svid/jwt', { audience: 'x' }, as(old)), 'TESSERA_IDENTITY_REVOKED');
    expectError(await post('/v1/svid/renew', { csr: makeCsrPem().pem }, as(old)), 'TESSERA_IDENTITY_REVOKED');
    const denied = await audit('svid.jwt');
    expect(denied.some((r) => r.actor === id && r.detail.identity === 'revoked serial')).toBe(true);
    b = await bundle();
    expect(b.bundle.entities.map((e) => e.id)).toContain(id);
    expect(b.bundle.revoked.find((r) => r.id === id)!.serials).toEqual([serialOf(old.certPem)]);
  });

  it('an SVID whose entry never existed here (or was deleted) is unknown: refused', async () => {
    const w = await joinAgent(t.cp, t.admin, `spiffe://${TD}/shop/gone`);
    await t.admin.call('DELETE', `/v1/entries/${w.entryId}`);
    expectError(await get('/v1/policy/bundle', as(w)), 'TESSERA_IDENTITY_REVOKED');
    // The admin (no entry) still reads the bundle and secret policies.
    expect((await get('/v1/policy/bundle')).status).toBe(200);
    expectError(await get('/v1/secret-policies/nothing-here'), 'TESSERA_NOT_FOUND');
  });

  it('POST /v1/entries/:id/revoke refuses bad input with stable codes and changes nothing', async () => {
    const w = await joinAgent(t.cp, t.admin, `spiffe://${TD}/shop/negative`);
    const path = `/v1/entries/${w.entryId}/revoke`;
    const v0 = (await bundle()).version;
    // Not the admin: 403, audited.
    expectError(await post(path, { reason: 'mine' }, as(w)), 'TESSERA_FORBIDDEN');
    // No such entry: 404 (by id and by SPIFFE ID).
    expectError(await post('/v1/entries/00000000-0000-4000-8000-000000000000/revoke', { reason: 'x' }), 'TESSERA_ENTRY_NOT_FOUND');
    expectError(await post(`/v1/entries/${encodeURIComponent(`spiffe://${TD}/nobody`)}/revoke`, { reason: 'x' }), 'TESSERA_ENTRY_NOT_FOUND');
    // Bad reasons and bodies: 400.
    for (const b of [{}, { reason: '' }, { reason: 'x'.repeat(257) }, { reason: 42 }, { reason: null }, { reason: 'line\nbreak' }, { reason: 'tab\there' },
      { reason: 'naïve' }, { reason: 'ok', extra: 1 }, [], 'reason']) {
      expectError(await post(path, b), 'TESSERA_BAD_REQUEST');
    }
    expect(((await get(`/v1/entries/${w.entryId}`)).json as Record<string, unknown>).revoked_at).toBeUndefined();
    expect((await bundle()).version).toBe(v0);
    expect((await post('/v1/svid/jwt', { audience: 'x' }, as(w))).status).toBe(200);

    // Revoked once; a second time is a conflict and keeps the first time and reason.
    const first = (await post(`/v1/entries/${encodeURIComponent(w.spiffeId)}/revoke`, { reason: 'first' })).json as Record<string, unknown>;
    expectError(await post(path, { reason: 'second' }), 'TESSERA_CONFLICT');
    const shown = (await get(`/v1/entries/${w.entryId}`)).json as Record<string, unknown>;
    expect(shown).toMatchObject({ revoked_at: first.revoked_at, revoked_reason: 'first' });
    const records = await audit('entry.revoke');
    expect(records.filter((r) => r.outcome === 'denied' && r.code === 'TESSERA_FORBIDDEN' && r.actor === w.spiffeId)).toHaveLength(1);
    expect(records.filter((r) => r.outcome === 'denied' && r.code === 'TESSERA_CONFLICT' && r.target === w.spiffeId)).toHaveLength(1);
    // Deleting a revoked entry keeps it on the list with its first reason.
    await t.admin.call('DELETE', `/v1/entries/${w.entryId}`);
    expect((await bundle()).bundle.revoked.find((r) => r.id === w.spiffeId)!.reason).toBe('first');
  });
});
