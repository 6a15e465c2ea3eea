/**
 * The control plane's secret-policy lifecycle routes over real HTTPS + mTLS (in-process control
 * plane on 127.0.0.1): share-generation refresh and epoch retirement, their refusals (caller, path,
 * body, generation, public key, retired epoch), the audit trail they leave, and the signed records
 * they return. Plus a data directory whose database predates generations.
 */
import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiClient } from '../../common/api-client.js';
import { ERROR_CODES, TesseraError } from '../../core/errors.js';
import { silentLogger } from '../../core/log.js';
import { dealRefresh, randomScalar, ready, refreshedCommitments, split, type Point } from '../../core/secrets/index.js';
import { SECRET_POLICY_DOMAIN, verifySecretPolicy, type SecretPolicyRecord, type SignedSecretPolicy } from '../../core/secrets/policy-record.js';
import { signEnvelope } from '../../core/signed-envelope.js';
import { MAX_PROVISION_AUTHORIZATION_SECONDS, verifyProvisionAuthorization } from '../../core/secrets/provision-authorization.js';
import { createSelfSignedCa, pemDecodeAll } from '../../core/x509.js';
import { joinAgent, rawRequest, readAdminTls, startControlPlane, type RawResponse, type TestControlPlane } from '../../../test/support/server.js';
import { ControlPlane } from '../server.js';

const TD = 'tessera.test';
const ADMIN = `spiffe://${TD}/tessera/admin`;
const b64u = (u: Uint8Array): string => Buffer.from(u).toString('base64url');
const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

interface Tls { ca: string; cert?: string; key?: string }
interface AuditRow { id: number; actor: string; action: string; target: string; outcome: 'success' | 'denied'; code: string; detail: Record<string, unknown> }
interface ListedPolicy { id: string; epoch: number; generation: number; created_at: string; retired_at: string | null }

const servers = (n: number) => Array.from({ length: n }, (_, i) => ({ url: `https://ks${i + 1}.example:8443`, spiffeId: `spiffe://${TD}/keyserver/${i + 1}`, index: i + 1 }));

function errorCode(r: RawResponse): unknown {
  return (r.json as { error?: { code?: unknown } } | undefined)?.error?.code;
}

/** A 4xx answer in the API error shape with this status and code. */
function expectRefusal(r: RawResponse, status: number, code: string, what = ''): void {
  expect({ status: r.status, code: errorCode(r) }, `${what} ${r.text}`).toEqual({ status, code });
  expect(ERROR_CODES[code as keyof typeof ERROR_CODES].status).toBe(status);
  expect(typeof (r.json as { error: { message?: unknown } }).error.message).toBe('string');
}

describe('secret policy refresh and retire routes', () => {
  let t: TestControlPlane;
  let adminTls: Tls;
  let agentTls: Tls;
  let agentId: string;
  let trusted: Buffer[];

  const send = (tls: Tls, method: string, path: string, body?: unknown): Promise<RawResponse> =>
    rawRequest(t.cp.url, {
      method, path, ...tls,
      ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body) }),
    });
  const admin = (method: string, path: string, body?: unknown) => send(adminTls, method, path, body);
  const agent = (method: string, path: string, body?: unknown) => send(agentTls, method, path, body);
  const refreshPath = (id: string, epoch: number | string) => `/v1/secret-policies/${id}/epochs/${epoch}/refresh`;
  const retirePath = (id: string, epoch: number | string) => `/v1/secret-policies/${id}/epochs/${epoch}/retire`;

  async function audit(query: string): Promise<AuditRow[]> {
    const r = await admin('GET', `/v1/audit?limit=10000&${query}`);
    expect(r.status).toBe(200);
    return (r.json as { records: AuditRow[] }).records;
  }

  /** Creates (id, epoch) as a t-of-n policy (generation 1) and returns its commitments. */
  async function create(id: string, epoch = 1, tt = 2, n = 3): Promise<Point[]> {
    const sharing = split(randomScalar(), tt, n);
    const r = await admin('POST', '/v1/secret-policies', { id, epoch, t: tt, n, commitments: sharing.commitments.map(b64u), servers: servers(n) });
    expect(r.status, r.text).toBe(201);
    return sharing.commitments;
  }

  /** The commitments of a fresh refresh of `commitments` (same key). */
  const refreshed = (commitments: Point[]): string[] => refreshedCommitments(commitments, dealRefresh(commitments.length, Math.max(commitments.length, 3)).D).map(b64u);

  async function shown(id: string, epoch?: number): Promise<RawResponse> {
    return agent('GET', `/v1/secret-policies/${id}${epoch === undefined ? '' : `?epoch=${epoch}`}`);
  }

  beforeAll(async () => {
    await ready();
    t = await startControlPlane({ trustDomain: TD });
    adminTls = t.adminTls;
    trusted = pemDecodeAll(adminTls.ca, 'CERTIFICATE');
    agentId = `spiffe://${TD}/shop/orders`;
    const joined = await joinAgent(t.cp, t.admin, agentId);
    agentTls = { ca: adminTls.ca, cert: joined.certPem, key: joined.keyPem };
  });

  afterAll(async () => {
    await t?.close();
    expect(t.logs.filter((l) => l.includes('"internal error"'))).toEqual([]);
  });

  it('refuses an agent SVID (403) and a caller without a certificate (401) for refresh, retire and list, audited, changing nothing', async () => {
    const cs = await create('auth.db');
    const refresh = { generation: 2, commitments: refreshed(cs) };
    expectRefusal(await agent('POST', refreshPath('auth.db', 1), refresh), 403, 'TESSERA_FORBIDDEN', 'agent refresh');
    expectRefusal(await agent('POST', retirePath('auth.db', 1)), 403, 'TESSERA_FORBIDDEN', 'agent retire');
    expectRefusal(await agent('POST', retirePath('auth.db', 1), {}), 403, 'TESSERA_FORBIDDEN', 'agent retire {}');
    expectRefusal(await agent('GET', '/v1/secret-policies'), 403, 'TESSERA_FORBIDDEN', 'agent list');
    // The caller is checked before the path: an agent learns nothing about which epochs exist.
    expectRefusal(await agent('POST', refreshPath('no.such', 9), refresh), 403, 'TESSERA_FORBIDDEN', 'agent refresh unknown');
    expectRefusal(await agent('POST', retirePath('BAD', 'x')), 403, 'TESSERA_FORBIDDEN', 'agent retire bad path');
    const anon = { ca: adminTls.ca };
    expectRefusal(await send(anon, 'POST', refreshPath('auth.db', 1), refresh), 401, 'TESSERA_AUTH_REQUIRED', 'anonymous refresh');
    expectRefusal(await send(anon, 'POST', retirePath('auth.db', 1)), 401, 'TESSERA_AUTH_REQUIRED', 'anonymous retire');
    expectRefusal(await send(anon, 'GET', '/v1/secret-policies/auth.db'), 401, 'TESSERA_AUTH_REQUIRED', 'anonymous show');

    const refreshes = await audit('action=secret.policy.refresh&outcome=denied');
    expect(refreshes.filter((r) => r.actor === agentId).map((r) => r.code)).toEqual(['TESSERA_FORBIDDEN', 'TESSERA_FORBIDDEN']);
    expect(refreshes.some((r) => r.code === 'TESSERA_AUTH_REQUIRED' && typeof r.detail.auth_failure === 'string')).toBe(true);
    const retires = await audit('action=secret.policy.retire&outcome=denied');
    expect(retires.filter((r) => r.actor === agentId).map((r) => r.code)).toEqual(['TESSERA_FORBIDDEN', 'TESSERA_FORBIDDEN', 'TESSERA_FORBIDDEN']);
    expect((await audit('action=secret.policy.list&outcome=denied')).filter((r) => r.actor === agentId)).toHaveLength(1);
    // Nothing changed.
    const r = await shown('auth.db');
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ id: 'auth.db', epoch: 1, generation: 1 });
  });

  it('refuses bad path parameters with 400 TESSERA_BAD_REQUEST', async () => {
    await create('path.db');
    const body = { generation: 2, commitments: ['x'] };
    const badIds = ['Path.db', 'path db', 'path%2Fdb', 'p%C3%A4th', 'a'.repeat(65), 'path*db'];
    const badEpochs = ['01', '-1', '+1', '1.5', '1e3', 'x', '0x1', '4294967296', '99999999999', '%201'];
    const paths = [...badIds.map((id) => [id, '1'] as const), ...badEpochs.map((e) => ['path.db', e] as const)];
    for (const [id, e] of paths) {
      expectRefusal(await admin('POST', refreshPath(id, e), body), 400, 'TESSERA_BAD_REQUEST', `refresh ${id} ${e}`);
      expectRefusal(await admin('POST', retirePath(id, e)), 400, 'TESSERA_BAD_REQUEST', `retire ${id} ${e}`);
    }
    for (const id of badIds) expectRefusal(await agent('GET', `/v1/secret-policies/${id}`), 400, 'TESSERA_BAD_REQUEST', `show ${id}`);
    for (const q of ['epoch=x', 'epoch=-1', 'epoch=4294967296', 'epoch=', 'epoch=1.5', 'epoch=1&epoch=2']) {
      expectRefusal(await agent('GET', `/v1/secret-policies/path.db?${q}`), 400, 'TESSERA_BAD_REQUEST', `show ?${q}`);
    }
    // The bounds themselves are valid paths (and simply not found).
    expectRefusal(await admin('POST', retirePath('path.db', 0xffffffff)), 404, 'TESSERA_NOT_FOUND');
    expectRefusal(await admin('POST', retirePath('path.db', 0)), 404, 'TESSERA_NOT_FOUND');
    // Nothing happened to the real epoch.
    expect((await shown('path.db', 1)).json).toMatchObject({ epoch: 1, generation: 1 });
  });

  it('refuses malformed refresh bodies: 400 TESSERA_BAD_REQUEST for the shape, 400 TESSERA_SECRET_POLICY_INVALID for the commitments', async () => {
    const cs = await create('body.db');
    const next = refreshed(cs);
    const ok = { generation: 2, commitments: next };
    const shape: [string, unknown][] = [
      ['no body', undefined],
      ['a JSON array', '[]'],
      ['JSON null', 'null'],
      ['truncated JSON', '{"generation":2,'],
      ['__proto__', `{"generation":2,"commitments":[],"__proto__":{"x":1}}`],
      ['an unknown field', { ...ok, t: 2 }],
      ['no generation', { commitments: next }],
      ['no commitments', { generation: 2 }],
      ['generation "2"', { ...ok, generation: '2' }],
      ['generation 2.5', { ...ok, generation: 2.5 }],
      ['generation 1 (below the first refresh)', { ...ok, generation: 1 }],
      ['generation 0', { ...ok, generation: 0 }],
      ['generation null', { ...ok, generation: null }],
      ['generation 2^32', { ...ok, generation: 2 ** 32 }],
      ['commitments a string', { ...ok, commitments: next[0] }],
      ['commitments an object', { ...ok, commitments: { 0: next[0], 1: next[1] } }],
      ['commitments null', { ...ok, commitments: null }],
      ['256 commitments', { ...ok, commitments: Array.from({ length: 256 }, () => next[1]) }],
    ];
    for (const [what, body] of shape) expectRefusal(await admin('POST', refreshPath('body.db', 1), body), 400, 'TESSERA_BAD_REQUEST', what);
    const otherKey = split(randomScalar(), 2, 3).commitments.map(b64u);
    const content: [string, unknown][] = [
      ['another public key', { ...ok, commitments: otherKey }],
      ['commitments[0] changed, the rest refreshed', { ...ok, commitments: [otherKey[0], next[1]] }],
      ['no commitments at all', { ...ok, commitments: [] }],
      ['one commitment for t = 2', { ...ok, commitments: [next[0]] }],
      ['three commitments for t = 2', { ...ok, commitments: [...next, next[1]] }],
      ['the public key twice', { ...ok, commitments: [next[0], next[0], next[1]] }],
      ['commitments[1] not base64url', { ...ok, commitments: [next[0], 'not base64url!'] }],
      ['commitments[1] a number', { ...ok, commitments: [next[0], 42] }],
      ['commitments[1] the identity', { ...ok, commitments: [next[0], b64u(new Uint8Array(32))] }],
      ['commitments[1] not a point', { ...ok, commitments: [next[0], b64u(new Uint8Array(32).fill(0xff))] }],
      ['commitments[1] 31 bytes', { ...ok, commitments: [next[0], b64u(new Uint8Array(31).fill(7))] }],
      ['commitments[0] in standard base64', { ...ok, commitments: [Buffer.from(cs[0]!).toString('base64'), next[1]] }],
    ];
    for (const [what, body] of content) expectRefusal(await admin('POST', refreshPath('body.db', 1), body), 400, 'TESSERA_SECRET_POLICY_INVALID', what);
    // A wrong media type.
    const r = await rawRequest(t.cp.url, { method: 'POST', path: refreshPath('body.db', 1), ...adminTls, headers: { 'content-type': 'text/plain' }, body: JSON.stringify(ok) });
    expectRefusal(r, 415, 'TESSERA_UNSUPPORTED_MEDIA_TYPE');
    // Still at generation 1, and the audit trail has the refusals with their codes.
    expect((await shown('body.db')).json).toMatchObject({ generation: 1 });
    const denied = (await audit('action=secret.policy.refresh&outcome=denied')).filter((x) => x.target === 'secret:body.db');
    expect(denied.filter((x) => x.code === 'TESSERA_SECRET_POLICY_INVALID')).toHaveLength(content.length);
    expect(denied.every((x) => x.actor === ADMIN && x.detail.epoch === 1)).toBe(true);
  });

  it('refresh publishes generation + 1: a signed record that verifies against the CA, same t, n, servers and key; replays and skips are 409', async () => {
    const cs = await create('gen.db', 4, 3, 5);
    const created = verifySecretPolicy(((await shown('gen.db', 4)).json as { signed: unknown }).signed, trusted);
    expect(created).toMatchObject({ generation: 1, t: 3, n: 5, commitments: cs.map(b64u) });
    let current = cs;
    for (const generation of [2, 3]) {
      const deal = dealRefresh(3, 5);
      const next = refreshedCommitments(current, deal.D);
      // Skipping ahead is a conflict; so is going back.
      expectRefusal(await admin('POST', refreshPath('gen.db', 4), { generation: generation + 1, commitments: next.map(b64u) }), 409, 'TESSERA_CONFLICT', `skip to ${generation + 1}`);
      if (generation > 2) expectRefusal(await admin('POST', refreshPath('gen.db', 4), { generation: generation - 1, commitments: next.map(b64u) }), 409, 'TESSERA_CONFLICT', `replay ${generation - 1}`);
      const r = await admin('POST', refreshPath('gen.db', 4), { generation, commitments: next.map(b64u) });
      expect(r.status, r.text).toBe(200);
      const out = r.json as { id: string; epoch: number; generation: number; record: SecretPolicyRecord; signed: SignedSecretPolicy };
      expect(Object.keys(out).sort()).toEqual(['epoch', 'generation', 'id', 'record', 'signed']);
      expect([out.id, out.epoch, out.generation]).toEqual(['gen.db', 4, generation]);
      const verified = verifySecretPolicy(out.signed, trusted);
      expect(verified).toEqual(out.record);
      expect(verified).toMatchObject({ id: 'gen.db', epoch: 4, t: 3, n: 5, generation, servers: servers(5), commitments: next.map(b64u) });
      expect(verified.commitments[0]).toBe(b64u(cs[0]!));
      expect(verified.createdAt).toMatch(ISO);
      // Tampering with the returned record does not verify.
      const payload = JSON.parse(Buffer.from(out.signed.payload, 'base64url').toString('utf8')) as SecretPolicyRecord;
      const forged = { ...out.signed, payload: Buffer.from(JSON.stringify({ ...payload, generation: generation + 1 })).toString('base64url') };
      expect(() => verifySecretPolicy(forged, trusted)).toThrow(expect.objectContaining({ code: 'TESSERA_SECRET_POLICY_INVALID' }));
      // Any SVID now gets the new record.
      const s = await shown('gen.db', 4);
      expect(s.status).toBe(200);
      expect(s.json).toMatchObject({ id: 'gen.db', epoch: 4, generation, signed: out.signed });
      expect((await shown('gen.db')).json).toMatchObject({ epoch: 4, generation });
      // The same refresh again (a replay) is a conflict.
      expectRefusal(await admin('POST', refreshPath('gen.db', 4), { generation, commitments: next.map(b64u) }), 409, 'TESSERA_CONFLICT', `replay ${generation}`);
      current = next;
    }
    const ok = (await audit('action=secret.policy.refresh&outcome=success')).filter((x) => x.target === 'secret:gen.db');
    expect(ok.map((x) => [x.actor, x.detail.epoch, x.detail.generation])).toEqual([[ADMIN, 4, 2], [ADMIN, 4, 3]]);
    const conflicts = (await audit('action=secret.policy.refresh&outcome=denied')).filter((x) => x.target === 'secret:gen.db');
    expect(conflicts.map((x) => x.code)).toEqual(Array(5).fill('TESSERA_CONFLICT'));
    const listed = ((await admin('GET', '/v1/secret-policies')).json as { policies: ListedPolicy[] }).policies.find((p) => p.id === 'gen.db');
    expect(listed).toEqual({ id: 'gen.db', epoch: 4, generation: 3, created_at: expect.stringMatching(ISO), retired_at: null });
  });

  it('two concurrent refreshes to the same generation: exactly one wins, the other is 409', async () => {
    const cs = await create('race.db');
    for (let round = 0; round < 3; round++) {
      const generation = round + 2;
      const [a, b] = await Promise.all([
        admin('POST', refreshPath('race.db', 1), { generation, commitments: refreshed(cs) }),
        admin('POST', refreshPath('race.db', 1), { generation, commitments: refreshed(cs) }),
      ]);
      const statuses = [a.status, b.status].sort();
      expect(statuses).toEqual([200, 409]);
      const winner = a.status === 200 ? a : b;
      expectRefusal(a.status === 200 ? b : a, 409, 'TESSERA_CONFLICT');
      expect((await shown('race.db', 1)).json).toMatchObject({ generation, signed: (winner.json as { signed: unknown }).signed });
    }
  });

  it('refresh and retire of an unknown policy or epoch are 404', async () => {
    const cs = await create('known.db', 2);
    const body = { generation: 2, commitments: refreshed(cs) };
    expectRefusal(await admin('POST', refreshPath('known.db', 1), body), 404, 'TESSERA_NOT_FOUND');
    expectRefusal(await admin('POST', refreshPath('known.db', 3), body), 404, 'TESSERA_NOT_FOUND');
    expectRefusal(await admin('POST', refreshPath('unknown.db', 2), body), 404, 'TESSERA_NOT_FOUND');
    expectRefusal(await admin('POST', retirePath('known.db', 1)), 404, 'TESSERA_NOT_FOUND');
    expectRefusal(await admin('POST', retirePath('unknown.db', 2)), 404, 'TESSERA_NOT_FOUND');
    expectRefusal(await shown('unknown.db'), 404, 'TESSERA_NOT_FOUND');
    expectRefusal(await shown('known.db', 1), 404, 'TESSERA_NOT_FOUND');
    const denied = await audit('action=secret.policy.retire&outcome=denied');
    expect(denied.filter((x) => x.target === 'secret:known.db' || x.target === 'secret:unknown.db').map((x) => x.code)).toEqual(['TESSERA_NOT_FOUND', 'TESSERA_NOT_FOUND']);
    expect((await shown('known.db')).json).toMatchObject({ epoch: 2, generation: 1 });
  });

  it('retire: idempotent, the epoch is then 410 (also for refresh), the newest live epoch is served, 404 once all are retired', async () => {
    const cs: Record<number, Point[]> = {};
    for (const e of [1, 2, 3]) cs[e] = await create('ret.db', e);
    expect((await shown('ret.db')).json).toMatchObject({ epoch: 3 });
    // A body, if any, must be an empty object.
    expectRefusal(await admin('POST', retirePath('ret.db', 3), { now: true }), 400, 'TESSERA_BAD_REQUEST');
    expectRefusal(await admin('POST', retirePath('ret.db', 3), '[]'), 400, 'TESSERA_BAD_REQUEST');
    expectRefusal(await admin('POST', retirePath('ret.db', 3), '"x"'), 400, 'TESSERA_BAD_REQUEST');

    const first = await admin('POST', retirePath('ret.db', 3), {});
    expect(first.status, first.text).toBe(200);
    const out = first.json as { id: string; epoch: number; retired: boolean; retired_at: string };
    expect(out).toEqual({ id: 'ret.db', epoch: 3, retired: true, retired_at: expect.stringMatching(ISO) });
    expect(Math.abs(Date.parse(out.retired_at) - Date.now())).toBeLessThan(60_000);
    const second = await admin('POST', retirePath('ret.db', 3));
    expect(second.status).toBe(200);
    expect(second.json).toEqual({ id: 'ret.db', epoch: 3, retired: false, retired_at: out.retired_at });

    // The retired epoch: 410 for an agent and the admin alike, and for a refresh.
    const gone = await shown('ret.db', 3);
    expectRefusal(gone, 410, 'TESSERA_SECRET_EPOCH_RETIRED');
    expect(gone.text).not.toContain('payload');
    expectRefusal(await admin('GET', '/v1/secret-policies/ret.db?epoch=3'), 410, 'TESSERA_SECRET_EPOCH_RETIRED');
    expectRefusal(await admin('POST', refreshPath('ret.db', 3), { generation: 2, commitments: refreshed(cs[3]!) }), 410, 'TESSERA_SECRET_EPOCH_RETIRED');
    // Without ?epoch: the newest epoch not retired.
    const live = await shown('ret.db');
    expect(live.status).toBe(200);
    expect(live.json).toMatchObject({ id: 'ret.db', epoch: 2, generation: 1 });
    expect(verifySecretPolicy((live.json as { signed: unknown }).signed, trusted).epoch).toBe(2);
    // An older epoch can still be refreshed and retired on its own.
    const r1 = await admin('POST', refreshPath('ret.db', 1), { generation: 2, commitments: refreshed(cs[1]!) });
    expect(r1.status, r1.text).toBe(200);
    expect((await admin('POST', retirePath('ret.db', 2))).json).toMatchObject({ retired: true });
    expect((await shown('ret.db')).json).toMatchObject({ epoch: 1, generation: 2 });

    const list = ((await admin('GET', '/v1/secret-policies')).json as { policies: ListedPolicy[] }).policies.filter((p) => p.id === 'ret.db');
    expect(list).toEqual([
      { id: 'ret.db', epoch: 1, generation: 2, created_at: expect.stringMatching(ISO), retired_at: null },
      { id: 'ret.db', epoch: 2, generation: 1, created_at: expect.stringMatching(ISO), retired_at: expect.stringMatching(ISO) },
      { id: 'ret.db', epoch: 3, generation: 1, created_at: expect.stringMatching(ISO), retired_at: out.retired_at },
    ]);

    expect((await admin('POST', retirePath('ret.db', 1))).json).toMatchObject({ retired: true });
    const none = await shown('ret.db');
    expectRefusal(none, 404, 'TESSERA_NOT_FOUND');
    expect(String((none.json as { error: { message: string } }).error.message)).toContain('retired');
    for (const e of [1, 2, 3]) expectRefusal(await shown('ret.db', e), 410, 'TESSERA_SECRET_EPOCH_RETIRED', `epoch ${e}`);
    // A new epoch brings the policy back.
    await create('ret.db', 4);
    expect((await shown('ret.db')).json).toMatchObject({ epoch: 4, generation: 1 });

    const retires = (await audit('action=secret.policy.retire')).filter((x) => x.target === 'secret:ret.db');
    expect(retires.map((x) => [x.outcome, x.code, x.detail.epoch, x.detail.already])).toEqual([
      ['denied', 'TESSERA_BAD_REQUEST', 3, undefined],
      ['denied', 'TESSERA_BAD_REQUEST', 3, undefined],
      ['denied', 'TESSERA_BAD_REQUEST', 3, undefined],
      ['success', 'OK', 3, false],
      ['success', 'OK', 3, true],
      ['success', 'OK', 2, false],
      ['success', 'OK', 1, false],
    ]);
    const shows = (await audit('action=secret.policy.show&outcome=denied')).filter((x) => x.target === 'secret:ret.db');
    expect(shows.filter((x) => x.code === 'TESSERA_SECRET_EPOCH_RETIRED').length).toBeGreaterThanOrEqual(5);
    expect((await audit('action=secret.policy.refresh&outcome=denied')).filter((x) => x.target === 'secret:ret.db').map((x) => x.code)).toEqual(['TESSERA_SECRET_EPOCH_RETIRED']);
  });

  it('property: arbitrary JSON bodies to refresh never produce a 5xx', async () => {
    const cs = await create('fuzz.db');
    const known = [...cs, ...refreshed(cs).map((s) => new Uint8Array(Buffer.from(s, 'base64url'))), new Uint8Array(32)].map(b64u);
    const item = fc.oneof(fc.constantFrom(...known), fc.string({ maxLength: 50 }), fc.jsonValue({ maxDepth: 1 }));
    const value = fc.oneof(fc.jsonValue({ maxDepth: 2 }), fc.integer({ min: -1, max: 4 }), fc.array(item, { maxLength: 4 }));
    const body = fc.oneof(
      { arbitrary: fc.record({ generation: fc.oneof(fc.constantFrom(2, 3), value), commitments: fc.oneof(fc.array(item, { minLength: 2, maxLength: 2 }), value) }, { requiredKeys: [] }).map((v) => JSON.stringify(v)), weight: 3 },
      { arbitrary: fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)), weight: 1 },
      { arbitrary: fc.string({ maxLength: 40 }), weight: 1 },
    );
    await fc.assert(
      fc.asyncProperty(body, async (text) => {
        const r = await admin('POST', refreshPath('fuzz.db', 1), text);
        expect(r.status, text).toBeLessThan(500);
        if (r.status !== 200) expect(Object.keys(ERROR_CODES), text).toContain(errorCode(r));
      }),
      { numRuns: 40 },
    );
    expect((await audit('action=secret.policy.refresh')).filter((x) => x.code === 'TESSERA_INTERNAL')).toEqual([]);
  });

  it('provision-authorization: signs a statement bound to the caller\'s certificate after the admin decision; refuses others and bad input', async () => {
    const path = '/v1/secret-policies/pa/provision-authorization';
    const ks = [`spiffe://${TD}/keyserver/1`, `spiffe://${TD}/keyserver/2`];
    const r = await admin('POST', path, { epoch: 4, op: 'refresh', key_servers: ks });
    expect(r.status, r.text).toBe(200);
    const out = r.json as { authorization: string; jti: string; expires_at: string };
    expect(out.expires_at).toMatch(ISO);
    expect(Date.parse(out.expires_at) - Date.now()).toBeLessThanOrEqual(MAX_PROVISION_AUTHORIZATION_SECONDS * 1000);
    const serial = new X509Certificate(adminTls.cert!).serialNumber.toUpperCase();
    const a = verifyProvisionAuthorization(out.authorization, trusted, { keyServer: ks[1]!, caller: ADMIN, serial, action: 'secret:share-commit', policy: 'pa', epoch: 4, now: Math.floor(Date.now() / 1000) });
    expect(a).toMatchObject({ jti: out.jti, op: 'refresh', policy: 'pa', epoch: 4, keyServers: ks, caller: ADMIN, serial });
    const rows = await audit('action=secret.provision.authorize');
    expect(rows.some((x) => x.outcome === 'success' && x.detail.jti === out.jti && x.target === 'secret:pa')).toBe(true);
    // An agent is no admin; no certificate at all is unauthenticated.
    expectRefusal(await agent('POST', path, { epoch: 4, op: 'refresh', key_servers: ks }), 403, 'TESSERA_FORBIDDEN', 'agent');
    expectRefusal(await send({ ca: adminTls.ca }, 'POST', path, { epoch: 4, op: 'refresh', key_servers: ks }), 401, 'TESSERA_AUTH_REQUIRED', 'no cert');
    const bad: [string, unknown][] = [
      [path, { epoch: 4, op: 'delete', key_servers: ks }],
      [path, { epoch: -1, op: 'create', key_servers: ks }],
      [path, { epoch: 4, op: 'create', key_servers: [] }],
      [path, { epoch: 4, op: 'create', key_servers: ['https://ks1'] }],
      [path, { epoch: 4, op: 'create', key_servers: [ks[0], ks[0]] }],
      [path, { epoch: 4, op: 'create', key_servers: ks, extra: 1 }],
      [path, 'not json'],
      ['/v1/secret-policies/Bad!/provision-authorization', { epoch: 4, op: 'create', key_servers: ks }],
    ];
    for (const [p, b] of bad) expectRefusal(await admin('POST', p, b), 400, 'TESSERA_BAD_REQUEST', JSON.stringify(b));
  });
});

describe('a data directory whose database predates share generations', () => {
  let dir: string;
  let cp: ControlPlane | undefined;
  let client: ApiClient | undefined;

  afterAll(async () => {
    client?.close();
    await cp?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('serves an old row as generation 1, not retired, and refreshes and retires it', async () => {
    await ready();
    dir = mkdtempSync(join(tmpdir(), 'tessera-old-db-'));
    // A record as signed before generations existed (no `generation` field), by some earlier CA.
    const oldCa = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const oldCaDer = createSelfSignedCa({ ...oldCa, commonName: 'old CA', trustDomainUri: `spiffe://${TD}`, notBefore: new Date(Date.now() - 3600_000), notAfter: new Date(Date.now() + 3600_000) });
    const sharing = split(randomScalar(), 2, 3);
    const oldRecord = { id: 'legacy.db', epoch: 1, t: 2, n: 3, commitments: sharing.commitments.map(b64u), servers: servers(3), createdAt: '2024-01-02T03:04:05.000Z' };
    const oldSigned = signEnvelope(oldRecord, { privateKey: oldCa.privateKey, certDer: oldCaDer }, { domain: SECRET_POLICY_DOMAIN, what: 'record', fail: (m) => new TesseraError('TESSERA_SECRET_POLICY_INVALID', m), maxPayloadChars: 256 * 1024 });
    expect(verifySecretPolicy(oldSigned, [oldCaDer]).generation).toBe(1);
    const db = new Database(join(dir, 'tessera.db'));
    db.exec('CREATE TABLE secret_policies (id TEXT NOT NULL, epoch INTEGER NOT NULL, signed TEXT NOT NULL, created_at INTEGER NOT NULL, PRIMARY KEY (id, epoch))');
    db.prepare('INSERT INTO secret_policies VALUES (?, ?, ?, ?)').run('legacy.db', 1, JSON.stringify(oldSigned), Date.parse('2024-01-02T03:04:05.000Z'));
    db.close();

    cp = await ControlPlane.start({ trustDomain: TD, env: {}, log: silentLogger, dataDir: dir, host: '127.0.0.1', port: 0 });
    const tls = readAdminTls(cp);
    client = new ApiClient(cp.url, tls);
    const listed = await client.call<{ policies: ListedPolicy[] }>('GET', '/v1/secret-policies');
    expect(listed.policies).toEqual([{ id: 'legacy.db', epoch: 1, generation: 1, created_at: '2024-01-02T03:04:05.000Z', retired_at: null }]);
    const shownOld = await client.call<{ generation: number; signed: unknown }>('GET', '/v1/secret-policies/legacy.db');
    expect(shownOld.generation).toBe(1);
    expect(shownOld.signed).toEqual(oldSigned);

    const next = refreshedCommitments(sharing.commitments, dealRefresh(2, 3).D).map(b64u);
    const r = await client.call<{ generation: number; signed: SignedSecretPolicy }>('POST', refreshPathOf('legacy.db', 1), { generation: 2, commitments: next });
    expect(r.generation).toBe(2);
    // Re-signed by the current CA, with what the old record had.
    const verified = verifySecretPolicy(r.signed, pemDecodeAll(tls.ca, 'CERTIFICATE'));
    expect(verified).toMatchObject({ id: 'legacy.db', epoch: 1, t: 2, n: 3, generation: 2, servers: servers(3), commitments: next });
    expect(() => verifySecretPolicy(r.signed, [oldCaDer])).toThrow(expect.objectContaining({ code: 'TESSERA_SECRET_POLICY_INVALID' }));
    const retired = await client.call<{ retired: boolean }>('POST', `/v1/secret-policies/legacy.db/epochs/1/retire`);
    expect(retired.retired).toBe(true);
    const after = await client.call<{ policies: ListedPolicy[] }>('GET', '/v1/secret-policies');
    expect(after.policies).toEqual([{ id: 'legacy.db', epoch: 1, generation: 2, created_at: '2024-01-02T03:04:05.000Z', retired_at: expect.stringMatching(ISO) }]);
  });

});

function refreshPathOf(id: string, epoch: number): string {
  return `/v1/secret-policies/${id}/epochs/${epoch}/refresh`;
}
