/**
 * Named admins and just-in-time grants at the control plane, over real HTTPS + mTLS: admin
 * credentials issued from a CSR and refused once removed, the two-person rule, request validation,
 * grants in the signed bundle with their windows, revocation and expiry, every step audited with the
 * person's own identity as actor.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ERROR_CODES, type ErrorCode } from '../../core/errors.js';
import { verifyPolicyBundle, type PolicyBundle, type SignedPolicyBundle } from '../../core/policy/bundle.js';
import { pemDecodeAll } from '../../core/x509.js';
import { errorCode, joinAgent, makeCsrPem, rawJson, rawRequest, startControlPlane, type RawResponse, type TestControlPlane } from '../../../test/support/server.js';

const TD = 'tessera.test';
type Tls = { ca: string; cert: string; key: string };

function expectError(res: RawResponse, code: ErrorCode): void {
  expect({ status: res.status, code: errorCode(res) }, res.text.slice(0, 300)).toEqual({ status: ERROR_CODES[code].status, code });
}

describe('named admins and just-in-time grants', () => {
  let t: TestControlPlane;
  let alice: Tls;
  let bob: Tls;
  const post = (path: string, json: unknown, tls: Tls = t.adminTls): Promise<RawResponse> => rawJson(t.cp.url, { path, json, ...tls });
  const get = (path: string, tls: Tls = t.adminTls): Promise<RawResponse> => rawRequest(t.cp.url, { path, ...tls });
  const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

  async function addAdmin(name: string, by: Tls = t.adminTls): Promise<Tls> {
    const csr = makeCsrPem();
    const res = await post('/v1/admins', { name, csr: csr.pem }, by);
    expect(res.status, res.text.slice(0, 300)).toBe(201);
    const v = res.json as { cert_pem: string; bundle_pem: string; spiffe_id: string; not_after: string };
    expect(v.spiffe_id).toBe(`spiffe://${TD}/tessera/admin/${name}`);
    return { ca: v.bundle_pem, cert: v.cert_pem, key: csr.keyPem };
  }

  async function bundle(): Promise<PolicyBundle> {
    const res = await get('/v1/policy/bundle');
    const body = res.json as { bundle: SignedPolicyBundle };
    return verifyPolicyBundle(body.bundle, pemDecodeAll(t.adminTls.ca, 'CERTIFICATE'));
  }

  async function audit(action: string): Promise<{ outcome: string; code: string; actor: string; target: string; detail: Record<string, unknown> }[]> {
    const res = await get(`/v1/audit?limit=1000&action=${action}`);
    return (res.json as { records: never[] }).records;
  }

  const request = (over: Record<string, unknown> = {}, tls: Tls = alice): Promise<RawResponse> => post('/v1/grants', {
    principal: `spiffe://${TD}/ops/debugger`, action: 'http:request', resource: `spiffe://${TD}/shop/orders`, duration_seconds: 1800, reason: 'INC-42 debugging', ...over,
  }, tls);

  beforeAll(async () => {
    t = await startControlPlane({ trustDomain: TD, grantMinSeconds: 1 });
    alice = await addAdmin('alice');
    bob = await addAdmin('bob', alice);
  });
  afterAll(async () => {
    await t?.close();
  });

  it('admin add issues a credential for the CSR\'s key; the new admin acts under its own identity', async () => {
    const res = await get('/v1/admins', bob);
    expect(res.status).toBe(200);
    const names = (res.json as { admins: { name: string; state: string; created_by: string | null }[] }).admins;
    expect(names.map((a) => a.name)).toEqual(['bootstrap', 'alice', 'bob']);
    expect(names[2]!.created_by).toBe(`spiffe://${TD}/tessera/admin/alice`);
    const adds = await audit('admin.add');
    expect(adds.filter((r) => r.outcome === 'success').map((r) => [r.actor, r.target])).toEqual([
      [`spiffe://${TD}/tessera/admin`, `spiffe://${TD}/tessera/admin/alice`],
      [`spiffe://${TD}/tessera/admin/alice`, `spiffe://${TD}/tessera/admin/bob`],
    ]);
    expect((await audit('admin.list')).at(-1)?.actor).toBe(`spiffe://${TD}/tessera/admin/bob`);
  });

  it('admin add refuses bad names, duplicates, a CSR naming someone else, unknown fields, and workloads', async () => {
    for (const name of ['', 'Alice', '-x', 'bootstrap', 'a/b', 'x'.repeat(64)]) expectError(await post('/v1/admins', { name, csr: makeCsrPem().pem }), 'TESSERA_BAD_REQUEST');
    expectError(await post('/v1/admins', { name: 'alice', csr: makeCsrPem().pem }), 'TESSERA_CONFLICT');
    expectError(await post('/v1/admins', { name: 'carol', csr: makeCsrPem({ uriSan: `spiffe://${TD}/tessera/admin` }).pem }), 'TESSERA_CSR_IDENTITY_MISMATCH');
    expectError(await post('/v1/admins', { name: 'carol', csr: 'not a csr' }), 'TESSERA_CSR_INVALID');
    expectError(await post('/v1/admins', { name: 'carol', csr: makeCsrPem().pem, role: 'root' }), 'TESSERA_BAD_REQUEST');
    const w = await joinAgent(t.cp, t.admin, `spiffe://${TD}/shop/intruder`);
    const asW = { ca: t.adminTls.ca, cert: w.certPem, key: w.keyPem };
    expectError(await post('/v1/admins', { name: 'carol', csr: makeCsrPem().pem }, asW), 'TESSERA_FORBIDDEN');
    expectError(await get('/v1/grants', asW), 'TESSERA_FORBIDDEN');
  });

  it('a removed admin\'s credential is refused from the next request on; an admin cannot remove itself; renew works for a live one', async () => {
    const dave = await addAdmin('dave');
    expect((await get('/v1/entries', dave)).status).toBe(200);
    const renewedKey = makeCsrPem();
    const renewed = await post('/v1/admins/renew', { csr: renewedKey.pem }, dave);
    expect(renewed.status, renewed.text).toBe(200);
    const dave2 = { ca: t.adminTls.ca, cert: (renewed.json as { cert_pem: string }).cert_pem, key: renewedKey.keyPem };
    expect((await get('/v1/entries', dave2)).status).toBe(200);
    expectError(await post('/v1/admins/dave/remove', { reason: 'left' }, dave), 'TESSERA_FORBIDDEN');
    expectError(await post('/v1/admins/renew', { csr: makeCsrPem().pem }), 'TESSERA_FORBIDDEN');
    const rm = await post('/v1/admins/dave/remove', { reason: 'left the team' }, alice);
    expect(rm.status, rm.text).toBe(200);
    expect(rm.json).toMatchObject({ name: 'dave', state: 'removed', removed_by: `spiffe://${TD}/tessera/admin/alice` });
    expectError(await get('/v1/entries', dave), 'TESSERA_ADMIN_REVOKED');
    expectError(await get('/v1/entries', dave2), 'TESSERA_ADMIN_REVOKED');
    expectError(await post('/v1/admins/renew', { csr: makeCsrPem().pem }, dave2), 'TESSERA_ADMIN_REVOKED');
    expectError(await post('/v1/admins/dave/remove', { reason: 'again' }, alice), 'TESSERA_CONFLICT');
    expectError(await post('/v1/admins/nobody/remove', { reason: 'x' }, alice), 'TESSERA_NOT_FOUND');
    expectError(await post('/v1/admins/bootstrap/remove', { reason: 'x' }, alice), 'TESSERA_BAD_REQUEST');
    const denied = (await audit('entry.list')).filter((r) => r.code === 'TESSERA_ADMIN_REVOKED');
    expect(denied.length).toBeGreaterThanOrEqual(2);
    expect(denied[0]!.actor).toBe(`spiffe://${TD}/tessera/admin/dave`);
  });

  it('grant requests are validated: principal, action, resource, duration bounds, start, reason', async () => {
    const bad: Record<string, unknown>[] = [
      { principal: 'not-a-spiffe-id' }, { principal: 'Tessera::Workload::"nope"' }, { resource: 'https://x/y' }, { resource: 'spiffe://' },
      { action: 'http:get' }, { action: 'Tessera::Action::"http:request"' },
      { duration_seconds: 0 }, { duration_seconds: 7 * 86400 + 1 },
      { start: '2020-01-01T00:00:00Z' }, { start: 'tomorrow' }, { start: '2026-13-01T00:00:00Z' }, { start: new Date(Date.now() + 40 * 86_400_000).toISOString() },
      { reason: 'line\nbreak' },
    ];
    for (const over of bad) expectError(await request(over), 'TESSERA_GRANT_INVALID');
    expectError(await request({ duration_seconds: 1.5 }), 'TESSERA_BAD_REQUEST');
    expectError(await request({ reason: '' }), 'TESSERA_BAD_REQUEST');
    expectError(await request({ extra: 1 }), 'TESSERA_BAD_REQUEST');
    const ok = await request({ principal: `Tessera::Workload::"spiffe://${TD}/ops/debugger"` });
    expect(ok.status, ok.text).toBe(201);
    expect(ok.json).toMatchObject({ state: 'pending', principal: `spiffe://${TD}/ops/debugger`, start: null, expiry: null });
    expectError(await post('/v1/grants/g-0000000000000000/approve', {}, bob), 'TESSERA_NOT_FOUND');
    expectError(await post('/v1/grants/../approve', {}, bob), 'TESSERA_NOT_FOUND');
    expectError(await get('/v1/grants?state=bogus', bob), 'TESSERA_BAD_REQUEST');
  });

  it('two-person rule: the requester cannot approve or deny; another admin approves; the bundle carries the grant with its window', async () => {
    const req = await request();
    expect(req.status, req.text).toBe(201);
    const id = (req.json as { id: string }).id;
    expectError(await post(`/v1/grants/${id}/approve`, {}, alice), 'TESSERA_GRANT_SELF_APPROVAL');
    expectError(await post(`/v1/grants/${id}/deny`, { reason: 'no' }, alice), 'TESSERA_GRANT_SELF_APPROVAL');
    expect((await bundle()).grants?.some((g) => g.id === id) ?? false).toBe(false);
    const before = Math.floor(Date.now() / 1000);
    const ok = await post(`/v1/grants/${id}/approve`, {}, bob);
    expect(ok.status, ok.text).toBe(200);
    const v = ok.json as { state: string; start: string; expiry: string; decided_by: string };
    expect(v.state).toBe('active');
    expect(v.decided_by).toBe(`spiffe://${TD}/tessera/admin/bob`);
    const start = Date.parse(v.start) / 1000;
    // The clock starts at approval, not at the request.
    expect(start).toBeGreaterThanOrEqual(before);
    expect(Date.parse(v.expiry) / 1000 - start).toBe(1800);
    const inBundle = (await bundle()).grants?.find((g) => g.id === id);
    expect(inBundle).toEqual({ id, principal: `spiffe://${TD}/ops/debugger`, action: 'http:request', resource: `spiffe://${TD}/shop/orders`, start, expiry: start + 1800 });
    expectError(await post(`/v1/grants/${id}/approve`, {}, t.adminTls), 'TESSERA_GRANT_STATE');
    expectError(await post(`/v1/grants/${id}/deny`, { reason: 'late' }, t.adminTls), 'TESSERA_GRANT_STATE');

    const rv = await post(`/v1/grants/${id}/revoke`, { reason: 'done early' }, alice);
    expect(rv.status, rv.text).toBe(200);
    expect(rv.json).toMatchObject({ state: 'revoked', revoked_by: `spiffe://${TD}/tessera/admin/alice` });
    expect((await bundle()).grants?.some((g) => g.id === id) ?? false).toBe(false);
    expectError(await post(`/v1/grants/${id}/revoke`, { reason: 'again' }, alice), 'TESSERA_GRANT_STATE');

    const approves = (await audit('grant.approve')).filter((r) => r.target === id);
    expect(approves.map((r) => [r.outcome, r.code, r.actor])).toEqual([
      ['denied', 'TESSERA_GRANT_SELF_APPROVAL', `spiffe://${TD}/tessera/admin/alice`],
      ['success', 'OK', `spiffe://${TD}/tessera/admin/bob`],
      ['denied', 'TESSERA_GRANT_STATE', `spiffe://${TD}/tessera/admin`],
    ]);
    expect((await audit('grant.request')).filter((r) => r.target === id).map((r) => r.actor)).toEqual([`spiffe://${TD}/tessera/admin/alice`]);
    expect((await audit('grant.revoke')).filter((r) => r.target === id && r.outcome === 'success')[0]?.detail.reason).toBe('done early');
  });

  it('deny by another admin; a scheduled start is kept; an ended grant expires (audited) and leaves the bundle', async () => {
    const d = (await request()).json as { id: string };
    const denied = await post(`/v1/grants/${d.id}/deny`, { reason: 'not needed' }, bob);
    expect(denied.json).toMatchObject({ state: 'denied', deny_reason: 'not needed' });
    expectError(await post(`/v1/grants/${d.id}/approve`, {}, bob), 'TESSERA_GRANT_STATE');

    const startAt = new Date(Math.ceil(Date.now() / 1000) * 1000 + 3600_000).toISOString();
    const s = (await request({ start: startAt })).json as { id: string };
    const sv = (await post(`/v1/grants/${s.id}/approve`, {}, bob)).json as { state: string; start: string };
    expect(sv).toMatchObject({ state: 'scheduled', start: startAt });
    const listed = (await get('/v1/grants?state=scheduled', bob)).json as { grants: { id: string }[] };
    expect(listed.grants.map((g) => g.id)).toContain(s.id);

    const short = (await request({ duration_seconds: 2 })).json as { id: string };
    await post(`/v1/grants/${short.id}/approve`, {}, bob);
    expect((await bundle()).grants?.some((g) => g.id === short.id)).toBe(true);
    await sleep(4500);
    const expired = (await get('/v1/grants?state=expired', bob)).json as { grants: { id: string; expired_at: string | null }[] };
    expect(expired.grants.find((g) => g.id === short.id)?.expired_at).not.toBeNull();
    expect((await bundle()).grants?.some((g) => g.id === short.id) ?? false).toBe(false);
    const ex = (await audit('grant.expire')).filter((r) => r.target === short.id);
    expect(ex.map((r) => [r.outcome, r.actor, r.detail.was])).toEqual([['success', 'tessera', 'approved']]);
  });
});
