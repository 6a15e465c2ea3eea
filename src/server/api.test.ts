/**
 * Happy paths of the control plane API over real HTTPS + mTLS: registry, join, renewal, JWT-SVIDs
 * (verified both with our verifier and with jose through OIDC discovery), API keys, and the audit
 * trail they leave.
 */
import { X509Certificate } from 'node:crypto';
import { createRemoteJWKSet, customFetch, jwtVerify } from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ApiClient } from '../common/api-client.js';
import { verifyJwtSvid } from '../core/jwt-svid.js';
import { certificateUriSans, pemDecodeAll } from '../core/x509.js';
import {
  agentClient,
  applyPolicy,
  httpsFetchTrusting,
  isHealthy,
  joinAgent,
  makeCsrPem,
  rawRequest,
  rejectionCode,
  startControlPlane,
  type JoinedAgent,
  type TestControlPlane,
} from '../../test/support/server.js';

const TD = 'tessera.test';

function uriSanOf(pem: string): string[] {
  const ders = pemDecodeAll(pem, 'CERTIFICATE');
  expect(ders).toHaveLength(1);
  return certificateUriSans(ders[0]!);
}

interface Entry {
  id: string;
  spiffe_id: string;
  selectors: string[];
  attributes: Record<string, string>;
  x509_ttl_seconds: number;
  jwt_ttl_seconds: number;
  created_at: string;
}

interface AuditRow {
  id: number;
  ts: string;
  actor: string;
  action: string;
  target: string;
  outcome: 'success' | 'denied';
  code: string;
  detail: Record<string, unknown>;
}

describe('control plane API: happy paths', () => {
  let t: TestControlPlane;
  let admin: ApiClient;
  const clients: ApiClient[] = [];

  beforeAll(async () => {
    t = await startControlPlane({ trustDomain: TD });
    admin = t.admin;
    // Derived credentials are default deny: these happy paths run under a policy permitting them all.
    await applyPolicy(admin);
  });

  afterEach(async () => {
    expect(await isHealthy(t.cp)).toBe(true);
  });

  afterAll(async () => {
    for (const c of clients) c.close();
    await t?.close();
    // Nothing on the happy paths may reach the internal-error branch.
    expect(t.logs.filter((l) => l.includes('"internal error"'))).toEqual([]);
  });

  const client = (a: Pick<JoinedAgent, 'certPem' | 'keyPem'>): ApiClient => {
    const c = agentClient(t.cp, a);
    clients.push(c);
    return c;
  };

  it('serves /healthz with the trust domain', async () => {
    const res = await rawRequest(t.cp.url, { path: '/healthz', ca: t.adminTls.ca });
    expect(res.status).toBe(200);
    expect(res.json).toMatchObject({ status: 'ok', trust_domain: TD });
  });

  it('writes the admin credential for spiffe://<td>/tessera/admin', () => {
    expect(uriSanOf(t.adminTls.cert)).toEqual([`spiffe://${TD}/tessera/admin`]);
  });

  it('creates, lists, shows and deletes entries (by id and by SPIFFE ID)', async () => {
    const spiffeId = `spiffe://${TD}/ns/prod/sa/web`;
    const created = await admin.call<Entry>('POST', '/v1/entries', {
      spiffe_id: spiffeId,
      selectors: ['k8s:ns:prod', 'k8s:sa:web', 'k8s:ns:prod'],
      attributes: { app: 'web', env: 'prod' },
      x509_ttl_seconds: 600,
      jwt_ttl_seconds: 120,
    });
    expect(created).toMatchObject({
      spiffe_id: spiffeId,
      selectors: ['k8s:ns:prod', 'k8s:sa:web'],
      attributes: { app: 'web', env: 'prod' },
      x509_ttl_seconds: 600,
      jwt_ttl_seconds: 120,
    });
    expect(created.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(Number.isNaN(Date.parse(created.created_at))).toBe(false);

    const other = await admin.call<Entry>('POST', '/v1/entries', { spiffe_id: `spiffe://${TD}/ns/prod/sa/db` });
    expect(other).toMatchObject({ selectors: [], attributes: {}, x509_ttl_seconds: 3600, jwt_ttl_seconds: 300 });

    const list = await admin.call<{ entries: Entry[] }>('GET', '/v1/entries');
    expect(list.entries.map((e) => e.spiffe_id)).toEqual(expect.arrayContaining([spiffeId, other.spiffe_id]));

    expect(await admin.call<Entry>('GET', `/v1/entries/${created.id}`)).toEqual(created);
    expect(await admin.call<Entry>('GET', `/v1/entries/${encodeURIComponent(spiffeId)}`)).toEqual(created);

    expect(await admin.call('DELETE', `/v1/entries/${created.id}`)).toEqual({ deleted: created.id, spiffe_id: spiffeId, bundle_version: expect.any(Number) });
    expect(await rejectionCode(admin.call('GET', `/v1/entries/${created.id}`))).toBe('TESSERA_ENTRY_NOT_FOUND');

    expect(await admin.call('DELETE', `/v1/entries/${encodeURIComponent(other.spiffe_id)}`)).toEqual({ deleted: other.id, spiffe_id: other.spiffe_id, bundle_version: expect.any(Number) });
    const after = await admin.call<{ entries: Entry[] }>('GET', '/v1/entries');
    expect(after.entries.map((e) => e.id)).not.toContain(created.id);
    expect(after.entries.map((e) => e.id)).not.toContain(other.id);
  });

  it('shows and deletes an entry by a long SPIFFE ID', async () => {
    const spiffeId = `spiffe://${TD}/${'segment/'.repeat(30)}end`;
    const created = await admin.call<Entry>('POST', '/v1/entries', { spiffe_id: spiffeId });
    expect(await admin.call<Entry>('GET', `/v1/entries/${encodeURIComponent(spiffeId)}`)).toEqual(created);
    expect(await admin.call('DELETE', `/v1/entries/${encodeURIComponent(spiffeId)}`)).toEqual({ deleted: created.id, spiffe_id: spiffeId, bundle_version: expect.any(Number) });
  });

  it('creates a join token, joins with a CSR and gets an SVID for the entry plus the bundle', async () => {
    const spiffeId = `spiffe://${TD}/svc/join`;
    const entry = await admin.call<Entry>('POST', '/v1/entries', { spiffe_id: spiffeId, x509_ttl_seconds: 900 });
    const tok = await admin.call<{ token: string; token_ref: string; entry_id: string; spiffe_id: string; expires_at: string }>('POST', '/v1/tokens', {
      entry_id: entry.id,
      ttl_seconds: 60,
    });
    expect(tok.token).toMatch(/^tjt_[A-Za-z0-9_-]{43}$/);
    expect(tok).toMatchObject({ entry_id: entry.id, spiffe_id: spiffeId });
    expect(tok.token_ref).toMatch(/^[0-9a-f]{12}$/);
    expect(Date.parse(tok.expires_at) - Date.now()).toBeGreaterThan(50_000);

    // Tokens can also be created for an entry named by its SPIFFE ID.
    const tok2 = await admin.call<{ entry_id: string }>('POST', '/v1/tokens', { entry_id: spiffeId });
    expect(tok2.entry_id).toBe(entry.id);

    const csr = makeCsrPem({ uriSan: spiffeId });
    const res = await rawRequest(t.cp.url, {
      method: 'POST',
      path: '/v1/agent/join',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ join_token: tok.token, csr: csr.pem }),
      ca: t.adminTls.ca,
    });
    expect(res.status).toBe(200);
    const out = res.json as { spiffe_id: string; svid_pem: string; bundle_pem: string; not_before: string; not_after: string; bundle_sequence: number; entry: Entry };
    expect(out.spiffe_id).toBe(spiffeId);
    expect(uriSanOf(out.svid_pem)).toEqual([spiffeId]);
    expect(out.entry).toEqual(entry);
    expect(out.bundle_pem).toBe(t.adminTls.ca);
    expect(out.bundle_sequence).toBeGreaterThanOrEqual(1);
    const cert = new X509Certificate(out.svid_pem);
    expect(cert.checkPrivateKey(csr.privateKey)).toBe(true);
    expect(cert.ca).toBe(false);
    expect(cert.verify(new X509Certificate(out.bundle_pem).publicKey)).toBe(true);
    const ttl = (Date.parse(out.not_after) - Date.now()) / 1000;
    expect(ttl).toBeGreaterThan(880);
    expect(ttl).toBeLessThanOrEqual(900);

    // A CSR without a URI SAN (the agent's usual one) is fine too, and an Ed25519 key.
    const ed = makeCsrPem({ keyType: 'ed25519' });
    const tok3 = await admin.call<{ token: string }>('POST', '/v1/tokens', { entry_id: entry.id });
    const anon = await rawRequest(t.cp.url, {
      method: 'POST',
      path: '/v1/agent/join',
      headers: { 'content-type': 'application/json; charset=utf-8' },
      body: JSON.stringify({ join_token: tok3.token, csr: ed.pem }),
      ca: t.adminTls.ca,
    });
    expect(anon.status).toBe(200);
    expect(uriSanOf((anon.json as { svid_pem: string }).svid_pem)).toEqual([spiffeId]);
  });

  it('renews over mTLS with the SVID', async () => {
    const agent = await joinAgent(t.cp, admin, `spiffe://${TD}/svc/renew`);
    const c = client(agent);
    const csr = makeCsrPem();
    const out = await c.call<{ spiffe_id: string; svid_pem: string; bundle_pem: string }>('POST', '/v1/svid/renew', { csr: csr.pem });
    expect(out.spiffe_id).toBe(agent.spiffeId);
    expect(uriSanOf(out.svid_pem)).toEqual([agent.spiffeId]);
    expect(new X509Certificate(out.svid_pem).checkPrivateKey(csr.privateKey)).toBe(true);
    expect(out.svid_pem).not.toBe(agent.certPem);

    // The renewed SVID works in turn, and may name its own ID in the CSR.
    const c2 = client({ certPem: out.svid_pem, keyPem: csr.keyPem });
    const again = await c2.call<{ svid_pem: string }>('POST', '/v1/svid/renew', { csr: makeCsrPem({ uriSan: agent.spiffeId }).pem });
    expect(uriSanOf(again.svid_pem)).toEqual([agent.spiffeId]);
  });

  it('mints a JWT-SVID that verifies against GET /v1/bundle and through OIDC discovery with jose', async () => {
    const agent = await joinAgent(t.cp, admin, `spiffe://${TD}/svc/jwt`, { entry: { jwt_ttl_seconds: 120 } });
    const c = client(agent);
    const audience = `spiffe://${TD}/svc/reports`;
    const minted = await c.call<{ token: string; spiffe_id: string; audience: string[]; expires_at: string }>('POST', '/v1/svid/jwt', {
      audience: [audience, 'other-audience'],
      ttl_seconds: 3600, // capped at the entry's jwt_ttl_seconds
    });
    expect(minted).toMatchObject({ spiffe_id: agent.spiffeId, audience: [audience, 'other-audience'] });
    const ttl = (Date.parse(minted.expires_at) - Date.now()) / 1000;
    expect(ttl).toBeGreaterThan(100);
    expect(ttl).toBeLessThanOrEqual(121);

    // 1. Our verifier, against the SPIFFE bundle (JWKS form).
    const bundleRes = await rawRequest(t.cp.url, { path: '/v1/bundle', ca: t.adminTls.ca });
    expect(bundleRes.status).toBe(200);
    const jwks = bundleRes.json as { keys: object[]; spiffe_sequence: number };
    expect(jwks.spiffe_sequence).toBeGreaterThanOrEqual(1);
    const verified = await verifyJwtSvid(minted.token, jwks, { audience, trustDomain: TD });
    expect(verified.spiffeId).toBe(agent.spiffeId);
    expect(verified.audience).toEqual([audience, 'other-audience']);
    await expect(verifyJwtSvid(minted.token, jwks, { audience: 'someone-else', trustDomain: TD })).rejects.toMatchObject({ code: 'TESSERA_JWT_AUDIENCE' });

    // The PEM form of the bundle is the admin bundle.
    const pem = await rawRequest(t.cp.url, { path: '/v1/bundle?format=pem', ca: t.adminTls.ca });
    expect(pem.status).toBe(200);
    expect(pem.text).toBe(t.adminTls.ca);

    // 2. jose, through OIDC discovery over HTTPS trusting the bundle.
    const fetchImpl = httpsFetchTrusting(t.adminTls.ca);
    const discovery = await fetchImpl(`${t.cp.url}/.well-known/openid-configuration`, {
      method: 'GET',
      headers: new Headers({ accept: 'application/json' }),
      redirect: 'manual',
      signal: AbortSignal.timeout(5000),
    });
    expect(discovery.status).toBe(200);
    const config = (await discovery.json()) as { issuer: string; jwks_uri: string; id_token_signing_alg_values_supported: string[] };
    expect(config.issuer).toBe(t.cp.url);
    expect(config.jwks_uri).toBe(`${t.cp.url}/keys`);
    expect(config.id_token_signing_alg_values_supported).toEqual(['ES256']);
    const remote = createRemoteJWKSet(new URL(config.jwks_uri), { [customFetch]: fetchImpl });
    const { payload, protectedHeader } = await jwtVerify(minted.token, remote, { issuer: config.issuer, audience, algorithms: ['ES256'] });
    expect(payload.sub).toBe(agent.spiffeId);
    expect(protectedHeader.alg).toBe('ES256');
    await expect(jwtVerify(minted.token, remote, { issuer: config.issuer, audience: 'nope', algorithms: ['ES256'] })).rejects.toMatchObject({
      code: 'ERR_JWT_CLAIM_VALIDATION_FAILED',
    });

    // A single audience may be given as a string.
    const single = await c.call<{ token: string; audience: string[] }>('POST', '/v1/svid/jwt', { audience });
    expect(single.audience).toEqual([audience]);
    expect((await verifyJwtSvid(single.token, jwks, { audience, trustDomain: TD })).spiffeId).toBe(agent.spiffeId);
  });

  it('creates and verifies API keys: valid, wrong secret, missing scope', async () => {
    const owner = await joinAgent(t.cp, admin, `spiffe://${TD}/svc/apikey-owner`);
    const verifier = await joinAgent(t.cp, admin, `spiffe://${TD}/svc/apikey-verifier`);
    const oc = client(owner);
    const vc = client(verifier);
    const key = await oc.call<{ api_key: string; id: string; owner: string; scopes: string[]; expires_at: string }>('POST', '/v1/apikeys', {
      scopes: ['reports:read', 'reports:write'],
      ttl_seconds: 3600,
    });
    expect(key.api_key).toMatch(/^tak_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
    expect(key).toMatchObject({ owner: owner.spiffeId, scopes: ['reports:read', 'reports:write'] });
    expect(key.api_key.startsWith(`tak_${key.id}_`)).toBe(true);

    const ok = await vc.call('POST', '/v1/apikeys/verify', { api_key: key.api_key, scope: 'reports:read' });
    expect(ok).toMatchObject({ valid: true, id: key.id, owner: owner.spiffeId, scopes: ['reports:read', 'reports:write'] });
    expect(await vc.call('POST', '/v1/apikeys/verify', { api_key: key.api_key })).toMatchObject({ valid: true });

    const secret = key.api_key.slice(-43);
    const wrongSecret = `${key.api_key.slice(0, -43)}${secret[0] === 'A' ? 'B' : 'A'}${secret.slice(1)}`;
    expect(await rejectionCode(vc.call('POST', '/v1/apikeys/verify', { api_key: wrongSecret }))).toBe('TESSERA_APIKEY_INVALID');
    expect(await rejectionCode(vc.call('POST', '/v1/apikeys/verify', { api_key: `tak_0000000000000000_${secret}` }))).toBe('TESSERA_APIKEY_INVALID');
    expect(await rejectionCode(vc.call('POST', '/v1/apikeys/verify', { api_key: 'not-a-key' }))).toBe('TESSERA_APIKEY_INVALID');
    expect(await rejectionCode(vc.call('POST', '/v1/apikeys/verify', { api_key: key.api_key, scope: 'admin' }))).toBe('TESSERA_FORBIDDEN');

    // The refusal bodies never echo the key.
    for (const api_key of [wrongSecret, key.api_key]) {
      const res = await rawRequest(t.cp.url, {
        method: 'POST',
        path: '/v1/apikeys/verify',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ api_key, scope: 'admin' }),
        ca: t.adminTls.ca,
        cert: verifier.certPem,
        key: verifier.keyPem,
      });
      expect(res.status).toBe(api_key === wrongSecret ? 401 : 403);
      expect(res.text).not.toContain(secret);
    }
  });

  it('records every action in the audit log: successes, and refusals as denied with their code', async () => {
    const agent = await joinAgent(t.cp, admin, `spiffe://${TD}/svc/audited`);
    const c = client(agent);
    await c.call('POST', '/v1/svid/renew', { csr: makeCsrPem().pem });
    await c.call('POST', '/v1/svid/jwt', { audience: 'aud' });
    const key = await c.call<{ api_key: string; id: string }>('POST', '/v1/apikeys', { scopes: ['s'] });
    await c.call('POST', '/v1/apikeys/verify', { api_key: key.api_key, scope: 's' });
    await admin.call('GET', '/v1/entries');
    await admin.call('GET', `/v1/entries/${agent.entryId}`);
    await admin.call('GET', '/v1/ca');
    const tmp = await admin.call<Entry>('POST', '/v1/entries', { spiffe_id: `spiffe://${TD}/svc/tmp` });
    await admin.call('DELETE', `/v1/entries/${tmp.id}`);
    await admin.call('GET', '/v1/audit?limit=1');

    // Refusals.
    expect(await rejectionCode(admin.call('POST', '/v1/entries', { spiffe_id: agent.spiffeId }))).toBe('TESSERA_CONFLICT');
    expect(await rejectionCode(c.call('GET', '/v1/entries'))).toBe('TESSERA_FORBIDDEN');
    expect(await rejectionCode(c.call('POST', '/v1/apikeys/verify', { api_key: key.api_key, scope: 'other' }))).toBe('TESSERA_FORBIDDEN');
    const noCert = await rawRequest(t.cp.url, { path: '/v1/entries', ca: t.adminTls.ca });
    expect(noCert.status).toBe(401);

    const { records } = await admin.call<{ records: AuditRow[] }>('GET', '/v1/audit?limit=10000');
    const adminId = `spiffe://${TD}/tessera/admin`;
    const find = (pred: (r: AuditRow) => boolean): AuditRow => {
      const r = records.find(pred);
      expect(r, 'audit record').toBeDefined();
      return r!;
    };
    const success = (action: string, actor: string, target: string): AuditRow =>
      find((r) => r.action === action && r.actor === actor && r.target === target && r.outcome === 'success');

    for (const r of records) {
      expect(r.outcome === 'success' ? r.code === 'OK' : r.code.startsWith('TESSERA_')).toBe(true);
      expect(Number.isNaN(Date.parse(r.ts))).toBe(false);
    }
    expect(success('entry.create', adminId, agent.spiffeId).detail.entry_id).toBe(agent.entryId);
    expect(success('token.create', adminId, agent.spiffeId).detail.token_ref).toMatch(/^[0-9a-f]{12}$/);
    const join = find((r) => r.action === 'svid.join' && r.target === agent.spiffeId && r.outcome === 'success');
    expect(join.actor).toMatch(/^join:[0-9a-f]{12}$/);
    expect(join.detail.not_after).toBeDefined();
    success('svid.renew', agent.spiffeId, agent.spiffeId);
    expect(success('svid.jwt', agent.spiffeId, agent.spiffeId).detail.audience).toEqual(['aud']);
    expect(success('apikey.create', agent.spiffeId, agent.spiffeId).detail.key_id).toBe(key.id);
    expect(success('apikey.verify', agent.spiffeId, agent.spiffeId).detail.key_id).toBe(key.id);
    find((r) => r.action === 'entry.list' && r.actor === adminId && r.outcome === 'success');
    success('entry.show', adminId, agent.spiffeId);
    success('entry.delete', adminId, tmp.spiffe_id);
    find((r) => r.action === 'ca.list' && r.actor === adminId && r.outcome === 'success');
    find((r) => r.action === 'audit.read' && r.actor === adminId && r.outcome === 'success');

    const denied = (action: string, code: string, actor?: string): AuditRow =>
      find((r) => r.action === action && r.outcome === 'denied' && r.code === code && (actor === undefined || r.actor === actor));
    expect(denied('entry.create', 'TESSERA_CONFLICT', adminId).target).toBe(agent.spiffeId);
    denied('entry.list', 'TESSERA_FORBIDDEN', agent.spiffeId);
    expect(denied('apikey.verify', 'TESSERA_FORBIDDEN', agent.spiffeId).detail.key_id).toBe(key.id);
    const anon = denied('entry.list', 'TESSERA_AUTH_REQUIRED');
    expect(anon.actor).toMatch(/^ip:/);
    expect(anon.detail.auth_failure).toBe('no client certificate');

    // Secrets never reach the audit log.
    const all = JSON.stringify(records);
    expect(all).not.toContain(key.api_key.slice(-43));
    expect(all).not.toContain('tjt_');

    // Filters.
    const onlyDenied = await admin.call<{ records: AuditRow[] }>('GET', '/v1/audit?outcome=denied&limit=10000');
    expect(onlyDenied.records.length).toBeGreaterThanOrEqual(4);
    expect(onlyDenied.records.every((r) => r.outcome === 'denied')).toBe(true);
    const joins = await admin.call<{ records: AuditRow[] }>('GET', '/v1/audit?action=svid.join');
    expect(joins.records.length).toBeGreaterThan(0);
    expect(joins.records.every((r) => r.action === 'svid.join')).toBe(true);
    const last = records[records.length - 1]!;
    const after = await admin.call<{ records: AuditRow[] }>('GET', `/v1/audit?after=${last.id}`);
    expect(after.records.every((r) => r.id > last.id)).toBe(true);
    const two = await admin.call<{ records: AuditRow[] }>('GET', '/v1/audit?limit=2');
    expect(two.records).toHaveLength(2);
    expect(two.records[0]!.id).toBeLessThan(two.records[1]!.id);
  });
});
