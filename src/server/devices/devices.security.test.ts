/**
 * Devices over the real API (HTTPS + mTLS on 127.0.0.1, a real SQLite file): enrolment tokens,
 * enrolment, renewal, signed posture reports and revocation, with every refusal's stable code.
 * The device side is src/device/device.ts, as `tessera device` runs it.
 */
import { createPublicKey, generateKeyPairSync, X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiClient } from '../../common/api-client.js';
import type { PostureFacts } from '../../core/devices/posture.js';
import { KEY_USAGE, pemDecodeAll, pemEncode, readLeafFields } from '../../core/x509.js';
import { verifyPeerSvid } from '../../core/x509-svid.js';
import type { PolicyBundle } from '../../core/policy/bundle.js';
import type { CreateDeviceTokenResponse, DeviceListResponse, DeviceShowResponse, RevokeDeviceResponse } from '../../core/wire/devices.js';
import { deviceClient, enrollDevice, loadDevice, refreshBundle, renewDevice, sendPosture, signPostureReport, type DeviceIdentity } from '../../device/device.js';
import { DEFAULT_POSTURE_RATE_LIMIT } from './limits.js';
import { agentClient, errorCode, joinAgent, makeCsrPem, rawJson, rejectionCode, startControlPlane, type TestControlPlane } from '../../../test/support/server.js';

const TD = 'tessera.test';
const STALE_MS = 2500;

const FACTS = (at: number): PostureFacts => ({
  os: { value: 'linux', observedAt: at },
  disk_encrypted: { value: true, observedAt: at },
  firewall: { value: null, observedAt: at },
  patch_age_days: { value: 2, observedAt: at },
});

describe('devices: enrolment, posture, revocation', () => {
  let c: TestControlPlane;
  let dirs: string;
  let n = 0;

  beforeAll(async () => {
    c = await startControlPlane({ devices: { postureStaleMs: STALE_MS } });
    dirs = mkdtempSync(join(tmpdir(), 'tessera-devices-'));
  });
  afterAll(async () => {
    await c?.close();
    rmSync(dirs, { recursive: true, force: true });
  });

  async function token(body: Record<string, unknown> = {}): Promise<CreateDeviceTokenResponse> {
    return c.admin.call<CreateDeviceTokenResponse>('POST', '/v1/devices/tokens', body);
  }

  async function enrol(name: string, extra: Record<string, unknown> = {}): Promise<DeviceIdentity> {
    const t = await token({ device_id: name, owner: 'alice', attributes: { site: 'berlin' }, ...extra });
    return enrollDevice({ serverUrl: c.cp.url, token: t.token, dataDir: join(dirs, `d${n++}`), trustBundlePem: c.adminTls.ca });
  }

  it('enrols with a one-time token: the device gets spiffe://<td>/device/<id> for its own key; the token cannot be reused', async () => {
    const t = await token({ device_id: 'lap-1' });
    expect(t).toMatchObject({ device_id: 'lap-1', spiffe_id: `spiffe://${TD}/device/lap-1` });
    expect(t.token).toMatch(/^tdt_[A-Za-z0-9_-]{43}$/);
    const d = await enrollDevice({ serverUrl: c.cp.url, token: t.token, dataDir: join(dirs, 'lap-1'), trustBundlePem: c.adminTls.ca });
    expect(d.state.spiffeId).toBe(`spiffe://${TD}/device/lap-1`);
    // X509-SVID §4-§5 as for workloads: exactly one URI SAN (the device's ID), a leaf (cA false),
    // digitalSignature and no keyCertSign/cRLSign; chained to the bundle (the mTLS calls below).
    const der = new X509Certificate(d.certPem).raw;
    const f = readLeafFields(der);
    expect(f.uris).toEqual([`spiffe://${TD}/device/lap-1`]);
    expect(f.cA).not.toBe(true);
    expect(f.keyUsage! & KEY_USAGE.digitalSignature).toBeTruthy();
    expect(f.keyUsage! & (KEY_USAGE.keyCertSign | KEY_USAGE.cRLSign)).toBe(0);
    expect(verifyPeerSvid(der, true, { trustDomain: TD, id: d.state.spiffeId }, Date.now()).ok).toBe(true);
    expect(new X509Certificate(d.certPem).publicKey.equals(createPublicKey(d.key))).toBe(true);
    // Reused: refused, whatever the CSR.
    const again = await rawJson(c.cp.url, { path: '/v1/device/enroll', ca: c.adminTls.ca, json: { token: t.token, csr: makeCsrPem().pem } });
    expect([again.status, errorCode(again)]).toEqual([401, 'TESSERA_TOKEN_INVALID']);
    // The same id cannot get a second token.
    expect(await rejectionCode(token({ device_id: 'lap-1' }))).toBe('TESSERA_CONFLICT');
  });

  it('refuses an expired token, an unknown one, a malformed one, and a CSR for another identity (spending the token)', async () => {
    const short = await token({ ttl_seconds: 1 });
    await new Promise((r) => setTimeout(r, 1300));
    const expired = await rawJson(c.cp.url, { path: '/v1/device/enroll', ca: c.adminTls.ca, json: { token: short.token, csr: makeCsrPem().pem } });
    expect([expired.status, errorCode(expired)]).toEqual([401, 'TESSERA_TOKEN_INVALID']);
    const unknown = await rawJson(c.cp.url, { path: '/v1/device/enroll', ca: c.adminTls.ca, json: { token: `tdt_${'A'.repeat(43)}`, csr: makeCsrPem().pem } });
    expect(errorCode(unknown)).toBe('TESSERA_TOKEN_INVALID');
    const malformed = await rawJson(c.cp.url, { path: '/v1/device/enroll', ca: c.adminTls.ca, json: { token: 'tjt_x', csr: makeCsrPem().pem } });
    expect(errorCode(malformed)).toBe('TESSERA_TOKEN_INVALID');
    const t = await token();
    const other = await rawJson(c.cp.url, { path: '/v1/device/enroll', ca: c.adminTls.ca, json: { token: t.token, csr: makeCsrPem({ uriSan: `spiffe://${TD}/device/other` }).pem } });
    expect([other.status, errorCode(other)]).toEqual([403, 'TESSERA_CSR_IDENTITY_MISMATCH']);
    const after = await rawJson(c.cp.url, { path: '/v1/device/enroll', ca: c.adminTls.ca, json: { token: t.token, csr: makeCsrPem().pem } });
    expect(errorCode(after)).toBe('TESSERA_TOKEN_INVALID');
    // A bad CSR does not burn the token.
    const t2 = await token();
    const badCsr = await rawJson(c.cp.url, { path: '/v1/device/enroll', ca: c.adminTls.ca, json: { token: t2.token, csr: 'nope' } });
    expect(errorCode(badCsr)).toBe('TESSERA_CSR_INVALID');
    const ok = await rawJson(c.cp.url, { path: '/v1/device/enroll', ca: c.adminTls.ca, json: { token: t2.token, csr: makeCsrPem().pem } });
    expect(ok.status).toBe(200);
  });

  it('validates token requests and keeps them admin only', async () => {
    for (const body of [{ device_id: 'Bad Id' }, { owner: 'A!' }, { attributes: { 'x-y': 'z' } }, { attributes: { site: '' } }, { ttl_seconds: 0 }, { cert_ttl_seconds: 10 }, { extra: 1 }]) {
      expect(await rejectionCode(token(body)), JSON.stringify(body)).toBe('TESSERA_BAD_REQUEST');
    }
    const d = await enrol('notadmin-1');
    const dc = deviceClient(d);
    try {
      expect(await rejectionCode(dc.call('POST', '/v1/devices/tokens', {}))).toBe('TESSERA_FORBIDDEN');
      expect(await rejectionCode(dc.call('GET', '/v1/devices'))).toBe('TESSERA_FORBIDDEN');
    } finally {
      dc.close();
    }
  });

  it('reserves the /device tree from workload entries', async () => {
    expect(await rejectionCode(c.admin.call('POST', '/v1/entries', { spiffe_id: `spiffe://${TD}/device/lap-9` }))).toBe('TESSERA_SPIFFE_ID_RESERVED');
    expect(await rejectionCode(c.admin.call('POST', '/v1/entries', { spiffe_id: `spiffe://${TD}/device` }))).toBe('TESSERA_SPIFFE_ID_RESERVED');
    // A path that merely starts with the letters is a workload like any other.
    expect((await c.admin.call<{ spiffe_id: string }>('POST', '/v1/entries', { spiffe_id: `spiffe://${TD}/devices-api` })).spiffe_id).toBe(`spiffe://${TD}/devices-api`);
  });

  it('accepts a signed posture report, shown by device show; stale after the threshold', async () => {
    const d = await enrol('lap-2');
    const res = await sendPosture(d, FACTS(Date.now()));
    expect(res.posture).toMatchObject({ posture_state: 'fresh', enrolled: true, disk_encrypted: true, os: 'linux', patch_age_days: 2 });
    expect('firewall' in res.posture).toBe(false);
    const show = await c.admin.call<DeviceShowResponse>('GET', '/v1/devices/lap-2');
    expect(show).toMatchObject({ device_id: 'lap-2', owner: 'alice', attributes: { site: 'berlin' }, state: 'live', posture: { posture_state: 'fresh', disk_encrypted: true } });
    expect(show.report?.facts.firewall).toMatchObject({ value: null });
    expect(show.history).toHaveLength(1);
    expect((await c.cp.ctx.devices.postureContext(`spiffe://${TD}/device/lap-2`)).posture_state).toBe('fresh');
    await new Promise((r) => setTimeout(r, STALE_MS + 500));
    const later = await c.cp.ctx.devices.postureContext(`spiffe://${TD}/device/lap-2`);
    expect(later).toMatchObject({ posture_state: 'stale', enrolled: true });
    expect(later.posture_age_seconds).toBeGreaterThanOrEqual(2);
    expect('disk_encrypted' in later).toBe(false);
    const listed = await c.admin.call<DeviceListResponse>('GET', '/v1/devices');
    expect(listed.devices.find((x) => x.device_id === 'lap-2')?.posture.posture_state).toBe('stale');
    // Never reported; unknown device.
    await enrol('lap-3');
    expect((await c.cp.ctx.devices.postureContext(`spiffe://${TD}/device/lap-3`))).toEqual({ id: `spiffe://${TD}/device/lap-3`, enrolled: true, posture_state: 'missing' });
    expect(await c.cp.ctx.devices.postureContext(`spiffe://${TD}/device/nobody`)).toEqual({ enrolled: false, posture_state: 'missing' });
    expect(await c.cp.ctx.devices.postureContext('not a spiffe id')).toEqual({ enrolled: false, posture_state: 'missing' });
  });

  it('refuses a report signed by another device\'s key, an altered report, another device\'s report, and a replay', async () => {
    const a = await enrol('lap-a');
    const b = await enrol('lap-b');
    const client = deviceClient(a);
    try {
      const now = Date.now();
      // Signed with B's key, sent over A's connection as A's report.
      const forged = signPostureReport(b.key, { deviceId: a.state.spiffeId, reportedAt: now, facts: FACTS(now) });
      expect(await rejectionCode(client.call('POST', '/v1/device/posture', forged))).toBe('TESSERA_POSTURE_INVALID');
      // A's own signature, body altered afterwards.
      const signed = signPostureReport(a.key, { deviceId: a.state.spiffeId, reportedAt: now, facts: FACTS(now) });
      const altered = { ...signed, report: { ...signed.report, facts: { ...signed.report.facts, disk_encrypted: { value: false, observed_at: signed.report.facts.disk_encrypted!.observed_at } } } };
      expect(await rejectionCode(client.call('POST', '/v1/device/posture', altered))).toBe('TESSERA_POSTURE_INVALID');
      // B's genuine report relayed by A.
      const bs = signPostureReport(b.key, { deviceId: b.state.spiffeId, reportedAt: now, facts: FACTS(now) });
      expect(await rejectionCode(client.call('POST', '/v1/device/posture', bs))).toBe('TESSERA_POSTURE_INVALID');
      // Far from the server clock.
      const old = signPostureReport(a.key, { deviceId: a.state.spiffeId, reportedAt: now - 3_600_000, facts: FACTS(now) });
      expect(await rejectionCode(client.call('POST', '/v1/device/posture', old))).toBe('TESSERA_POSTURE_INVALID');
      // The genuine one is accepted once; sent again it is a replay.
      await client.call('POST', '/v1/device/posture', signed);
      expect(await rejectionCode(client.call('POST', '/v1/device/posture', signed))).toBe('TESSERA_POSTURE_INVALID');
      // Malformed bodies.
      expect(await rejectionCode(client.call('POST', '/v1/device/posture', { report: signed.report }))).toBe('TESSERA_POSTURE_INVALID');
      expect(await rejectionCode(client.call('POST', '/v1/device/posture', [1]))).toBe('TESSERA_POSTURE_INVALID');
    } finally {
      client.close();
    }
    const show = await c.admin.call<DeviceShowResponse>('GET', '/v1/devices/lap-a');
    expect(show.history).toHaveLength(1);
    expect(show.report?.facts.disk_encrypted?.value).toBe(true);
    // Refusals are audited with their reason.
    const audit = await c.admin.call<{ records: { action: string; outcome: string; code: string; detail: Record<string, unknown> }[] }>('GET', '/v1/audit?action=device.posture&limit=100');
    const reasons = audit.records.filter((r) => r.outcome === 'denied').map((r) => r.detail.reason);
    expect(reasons).toEqual(expect.arrayContaining(['signature does not verify with the device key', 'report names another device', 'not newer than the last report']));
  });

  it('limits posture reports per device (DEFAULT_POSTURE_RATE_LIMIT): over it 429 TESSERA_RATE_LIMITED with Retry-After, not audited; other devices unaffected; a revoked device\'s refusals are limited too', async () => {
    const { burst, perSecond } = DEFAULT_POSTURE_RATE_LIMIT;
    const [a, b, x] = [await enrol('lap-flood'), await enrol('lap-calm'), await enrol('lap-lost')];
    const t0 = Date.now();
    const report = (d: DeviceIdentity, at: number) => signPostureReport(d.key, { deviceId: d.state.spiffeId, reportedAt: at, facts: FACTS(at) });
    const clients = new Map<DeviceIdentity, ApiClient>();
    /** One report over the device's kept-alive connection: the error code, or 'ok'. */
    const post = async (d: DeviceIdentity, at: number): Promise<string> => {
      if (!clients.has(d)) clients.set(d, deviceClient(d));
      return clients.get(d)!.call('POST', '/v1/device/posture', report(d, at)).then(() => 'ok', (err: unknown) => (err as { code: string }).code);
    };
    const raw = (d: DeviceIdentity, json: unknown) => rawJson(c.cp.url, { path: '/v1/device/posture', ca: d.bundlePem, cert: d.certPem, key: d.key.export({ format: 'pem', type: 'pkcs8' }) as string, json });
    const audited = async (actor: string): Promise<number> => (await c.admin.call<{ records: { actor: string }[] }>('GET', '/v1/audit?action=device.posture&limit=1000')).records.filter((r) => r.actor === actor).length;
    // The whole burst is accepted (one report each, newer each time), and audited.
    for (let i = 0; i < burst; i++) expect(await post(a, t0 + i)).toBe('ok');
    const before = await audited(a.state.spiffeId);
    expect(before).toBe(burst);
    const over = await raw(a, report(a, t0 + burst));
    expect([over.status, errorCode(over)]).toEqual([429, 'TESSERA_RATE_LIMITED']);
    const retry = Number(over.headers['retry-after']);
    expect(retry).toBeGreaterThanOrEqual(1);
    expect(retry).toBeLessThanOrEqual(Math.ceil(1 / perSecond));
    // A body that is not even a report is refused the same way: nothing of it is read.
    const junk = await raw(a, [1]);
    expect([junk.status, errorCode(junk)]).toEqual([429, 'TESSERA_RATE_LIMITED']);
    expect(await audited(a.state.spiffeId)).toBe(before);
    // Another device reports as usual.
    expect(await post(b, t0)).toBe('ok');
    // A revoked device: its refusals are audit records up to the limit, then 429s that are not.
    await c.admin.call('POST', '/v1/devices/lap-lost/revoke', { reason: 'lost' });
    const codes = new Map<string, number>();
    for (let i = 0; i < burst + 3; i++) {
      const code = await post(x, t0 + i);
      codes.set(code, (codes.get(code) ?? 0) + 1);
    }
    expect(Object.fromEntries(codes)).toEqual({ TESSERA_IDENTITY_REVOKED: burst, TESSERA_RATE_LIMITED: 3 });
    expect(await audited(x.state.spiffeId)).toBe(burst);
    for (const cl of clients.values()) cl.close();
  });

  it('posture and renewal are for devices only: a workload SVID and the admin are refused', async () => {
    const w = await joinAgent(c.cp, c.admin, `spiffe://${TD}/shop/orders`);
    const wc = agentClient(c.cp, w);
    try {
      expect(await rejectionCode(wc.call('POST', '/v1/device/posture', {}))).toBe('TESSERA_FORBIDDEN');
      expect(await rejectionCode(wc.call('POST', '/v1/device/renew', { csr: makeCsrPem().pem }))).toBe('TESSERA_FORBIDDEN');
    } finally {
      wc.close();
    }
    expect(await rejectionCode(c.admin.call('POST', '/v1/device/renew', { csr: makeCsrPem().pem }))).toBe('TESSERA_FORBIDDEN');
    const anon = new ApiClient(c.cp.url, { ca: c.adminTls.ca });
    try {
      expect(await rejectionCode(anon.call('POST', '/v1/device/posture', {}))).toBe('TESSERA_AUTH_REQUIRED');
    } finally {
      anon.close();
    }
  });

  it('renews with the same key; a device cannot renew into another identity', async () => {
    const d = await enrol('lap-r', { cert_ttl_seconds: 600 });
    const renewed = await renewDevice(d);
    expect(renewed.serial).not.toBe(d.serial);
    expect(renewed.notAfter - Date.now()).toBeLessThanOrEqual(600_000 + 1000);
    expect(renewed.notAfter - Date.now()).toBeGreaterThan(590_000);
    await sendPosture(renewed, FACTS(Date.now()));
    const client = deviceClient(renewed);
    try {
      const csr = makeCsrPem({ uriSan: `spiffe://${TD}/device/lap-a` }).pem;
      expect(await rejectionCode(client.call('POST', '/v1/device/renew', { csr }))).toBe('TESSERA_CSR_IDENTITY_MISMATCH');
    } finally {
      client.close();
    }
  });

  it('revoking a device refuses its renewals and reports and lists it in the signed bundle\'s revocation list; twice is a conflict', async () => {
    const d = await enrol('lap-x');
    await sendPosture(d, FACTS(Date.now()));
    const res = await c.admin.call<RevokeDeviceResponse>('POST', '/v1/devices/lap-x/revoke', { reason: 'stolen laptop' });
    expect(res).toMatchObject({ state: 'revoked', revoked_reason: 'stolen laptop', posture: { enrolled: false, posture_state: 'missing' } });
    expect(await rejectionCode(renewDevice(d))).toBe('TESSERA_IDENTITY_REVOKED');
    expect(await rejectionCode(sendPosture(d, FACTS(Date.now() + 1)))).toBe('TESSERA_IDENTITY_REVOKED');
    const bundle = c.cp.ctx.policy.current().signed;
    const payload = JSON.parse(Buffer.from(bundle.payload, 'base64url').toString('utf8')) as PolicyBundle;
    const listed = payload.revoked.find((r) => r.id === d.state.spiffeId);
    expect(listed).toMatchObject({ reason: 'stolen laptop', serials: [d.serial] });
    expect(res.bundle_version).toBe(c.cp.ctx.policy.current().version);
    expect(await rejectionCode(c.admin.call('POST', '/v1/devices/lap-x/revoke', { reason: 'again' }))).toBe('TESSERA_CONFLICT');
    expect(await rejectionCode(c.admin.call('POST', '/v1/devices/nobody/revoke', { reason: 'x' }))).toBe('TESSERA_DEVICE_NOT_FOUND');
    expect(await rejectionCode(c.admin.call('POST', '/v1/devices/lap-2/revoke', { reason: 'bad\nreason' }))).toBe('TESSERA_BAD_REQUEST');
    expect(await rejectionCode(c.admin.call('GET', '/v1/devices/..%2F..'))).toBe('TESSERA_DEVICE_NOT_FOUND');
    // By SPIFFE ID as well; the revocation is audited.
    expect((await c.admin.call<DeviceShowResponse>('GET', `/v1/devices/${encodeURIComponent(d.state.spiffeId)}`)).state).toBe('revoked');
    const audit = await c.admin.call<{ records: { target: string; outcome: string }[] }>('GET', '/v1/audit?action=device.revoke&limit=10');
    expect(audit.records.some((r) => r.target === d.state.spiffeId && r.outcome === 'success')).toBe(true);
  });

  it('the device follows the trust bundle: a CA prepared for rotation reaches it before it signs', async () => {
    const d = await enrol('lap-b2');
    const before = pemDecodeAll(d.bundlePem, 'CERTIFICATE').length;
    expect(await refreshBundle(d)).toBe(d);
    await c.admin.call('POST', '/v1/ca/rotate', { grace_seconds: 3600 });
    const after = await refreshBundle(d);
    expect(pemDecodeAll(after.bundlePem, 'CERTIFICATE').length).toBe(before + 1);
    expect(loadDevice(after.dir).bundlePem).toBe(after.bundlePem);
  });

  it('a certificate of the device id not issued to the stored device is refused (a key of its own is not enough)', async () => {
    const d = await enrol('lap-k');
    // A certificate for the same SPIFFE ID minted by the CA outside enrolment (as a lost race would).
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const cert = c.cp.ctx.ca.issue({ publicKey, uriSans: [d.state.spiffeId] }, 600_000);
    const stray = new ApiClient(c.cp.url, { ca: c.adminTls.ca, cert: pemEncode(cert.der, 'CERTIFICATE'), key: privateKey.export({ format: 'pem', type: 'pkcs8' }) as string });
    try {
      const now = Date.now();
      const sub = signPostureReport(privateKey, { deviceId: d.state.spiffeId, reportedAt: now, facts: FACTS(now) });
      expect(await rejectionCode(stray.call('POST', '/v1/device/posture', sub))).toBe('TESSERA_IDENTITY_REVOKED');
    } finally {
      stray.close();
    }
  });
});
