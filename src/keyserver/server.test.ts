import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { Agent, request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { httpsCall, type Reply } from '../../test/support/https-call.js';
import { ERROR_CODES } from '../core/errors.js';
import { silentLogger } from '../core/log.js';
import {
  baseMul, blind, combineAndUnblind, combinePoints, dealRefresh, decodeProof, openWithPoint, parseBlob, publicShare, randomScalar, ready,
  refreshedCommitments, seal, split, unblind, unsealContext, verifyDleq,
  type Evaluation, type Point, type Sharing,
} from '../core/secrets/index.js';
import { CertificateIssuer, createSelfSignedCa, pemEncode } from '../core/x509.js';
import type { TlsMaterial, TlsSource } from '../common/tls-source.js';
import { startKeyServer, type KeyServer } from './server.js';
import type { KeyAuditEvent } from './service.js';

const TD = 'tessera.test';
const ADMIN = `spiffe://${TD}/tessera/admin`;
const APP = `spiffe://${TD}/shop/orders`;
const OTHER = `spiffe://${TD}/shop/frontend`;
const HOUR = 3600_000;
const PLAIN = 'postgres://orders:kEy-s3rver-TEST-secret@db.internal/orders';

// --- A real test CA and SVIDs ------------------------------------------------------------------
const now = Date.now();
const caKey = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const caDer = createSelfSignedCa({ ...caKey, commonName: 'Tessera test CA', trustDomainUri: `spiffe://${TD}`, notBefore: new Date(now - HOUR), notAfter: new Date(now + HOUR) });
const caPem = pemEncode(caDer, 'CERTIFICATE');
const issuer = new CertificateIssuer({ certDer: caDer, privateKey: caKey.privateKey });

interface Svid { certPem: string; key: KeyObject; keyPem: string }
function svid(id: string): Svid {
  const k = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const der = issuer.issueLeaf({ publicKey: k.publicKey, notBefore: new Date(now - 60_000), notAfter: new Date(now + HOUR), uriSans: [id], ipSans: ['127.0.0.1'] });
  return { certPem: pemEncode(der, 'CERTIFICATE'), key: k.privateKey, keyPem: k.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string };
}

class FakeSource extends EventEmitter implements TlsSource {
  constructor(private material: TlsMaterial) { super(); }
  current(): TlsMaterial { return this.material; }
  rotate(m: TlsMaterial): void { this.material = m; this.emit('svid'); }
}

const creds = { admin: svid(ADMIN), app: svid(APP), other: svid(OTHER) };

function call(url: string, method: string, path: string, body: unknown, who: Svid | undefined): Promise<Reply> {
  return httpsCall(url, method, path, body, { ca: caPem, who });
}

const b64u = (u: Uint8Array): string => Buffer.from(u).toString('base64url');

// --- Three key servers, one 2-of-3 policy ---------------------------------------------------------
const POLICY = 'shop.db';
const EPOCH = 1;
let sharing: Sharing;
let publicKey: Point;
const servers: KeyServer[] = [];
const dataDirs: string[] = [];
const bodies: { server: number; body: string }[] = [];
const audits: KeyAuditEvent[] = [];
let blob: Buffer;

async function start(i: number): Promise<KeyServer> {
  const ks = await startKeyServer({
    dataDir: dataDirs[i]!,
    listen: { host: '127.0.0.1', port: 0 },
    tls: new FakeSource({ spiffeId: `spiffe://${TD}/tessera/keyserver/${i}`, ...svid(`spiffe://${TD}/tessera/keyserver/${i}`), bundlePem: caPem }),
    trustDomain: TD,
    authorize: (caller, policy) => caller.spiffeId === APP && policy === POLICY,
    provisioners: [ADMIN],
    log: silentLogger,
    env: { TESSERA_KEK: `${i}`.repeat(64) },
    onAudit: (e) => audits.push(e),
    onRequestBody: ({ body }) => bodies.push({ server: i, body }),
  });
  servers[i] = ks;
  return ks;
}

/** The agent's side: blind R, ask the given servers, check every proof, combine, unblind, open. */
async function unseal(sealed: Buffer, using: KeyServer[], who: Svid = creds.app): Promise<{ plain: string; bad: number[] }> {
  const parsed = parseBlob(sealed);
  const blinded = blind(parsed.R);
  const context = unsealContext(parsed.policyId, parsed.epoch);
  const evals: Evaluation[] = [];
  for (const ks of using) {
    const r = await call(ks.url, 'POST', '/v1/evaluate', { policy: parsed.policyId, epoch: parsed.epoch, b: b64u(blinded.B) }, who);
    if (r.status !== 200) throw new Error(`key server answered ${r.status} ${JSON.stringify(r.json)}`);
    evals.push({ index: r.json.index as number, Z: new Uint8Array(Buffer.from(r.json.z as string, 'base64url')), proof: decodeProof(new Uint8Array(Buffer.from(r.json.proof as string, 'base64url'))) });
  }
  const { point, bad } = combineAndUnblind(evals, sharing.commitments, blinded, sharing.commitments.length, context);
  return { plain: openWithPoint(parsed, point).toString('utf8'), bad };
}

beforeAll(async () => {
  await ready();
  sharing = split(randomScalar(), 2, 3);
  publicKey = sharing.commitments[0]!;
  for (let i = 0; i < 3; i++) {
    dataDirs.push(mkdtempSync(join(tmpdir(), `tessera-ks-${i}-`)));
    const ks = await start(i);
    const s = sharing.shares[i]!;
    const r = await call(ks.url, 'PUT', `/v1/shares/${POLICY}/${EPOCH}`, { t: 2, n: 3, index: s.index, value: b64u(s.value), commitments: sharing.commitments.map(b64u) }, creds.admin);
    expect(r.status).toBe(201);
    expect(JSON.stringify(r.json)).not.toContain(b64u(s.value));
  }
  blob = seal(Buffer.from(PLAIN), { id: POLICY, epoch: EPOCH, publicKey });
});

afterAll(async () => {
  for (const ks of servers) await ks?.close();
  for (const d of dataDirs) rmSync(d, { recursive: true, force: true });
});

describe('key servers over mTLS, 2-of-3', () => {
  it('serves healthz and refuses unknown routes in the API error shape', async () => {
    const h = await call(servers[0]!.url, 'GET', '/v1/healthz', undefined, creds.other);
    expect(h).toEqual({ status: 200, json: { status: 'ok', shares: 1 } });
    const nf = await call(servers[0]!.url, 'GET', '/v1/nope', undefined, creds.app);
    expect(nf.status).toBe(404);
    expect((nf.json.error as { code: string }).code).toBe('TESSERA_NOT_FOUND');
  });

  it('an authorized agent recovers the plaintext from any two servers', async () => {
    expect((await unseal(blob, [servers[0]!, servers[1]!])).plain).toBe(PLAIN);
    expect((await unseal(blob, [servers[1]!, servers[2]!])).plain).toBe(PLAIN);
    expect((await unseal(blob, [servers[2]!, servers[0]!])).plain).toBe(PLAIN);
  });

  it('still works with one server stopped, and after a restart from its sealed store', async () => {
    await servers[1]!.close();
    await expect(call(servers[1]!.url, 'GET', '/v1/healthz', undefined, creds.app)).rejects.toThrow();
    expect((await unseal(blob, [servers[0]!, servers[2]!])).plain).toBe(PLAIN);
    await start(1);
    expect((await unseal(blob, [servers[1]!, servers[2]!])).plain).toBe(PLAIN);
  });

  it('refuses a caller the policy does not allow (403), without a client certificate (handshake), and a non-provisioner installing shares (403)', async () => {
    const denied = await call(servers[0]!.url, 'POST', '/v1/evaluate', { policy: POLICY, epoch: EPOCH, b: b64u(blind(parseBlob(blob).R).B) }, creds.other);
    expect(denied.status).toBe(403);
    expect((denied.json.error as { code: string }).code).toBe('TESSERA_FORBIDDEN');
    const noCert = await call(servers[0]!.url, 'GET', '/v1/healthz', undefined, undefined).then(() => undefined, (err: NodeJS.ErrnoException) => err);
    expect(noCert).toBeDefined();
    expect(`${noCert!.code} ${noCert!.message}`).toMatch(/CERTIFICATE_REQUIRED|certificate required|ECONNRESET|socket hang up/i);
    const s = sharing.shares[0]!;
    const put = await call(servers[0]!.url, 'PUT', `/v1/shares/${POLICY}/${EPOCH}`, { t: 2, n: 3, index: s.index, value: b64u(s.value), commitments: sharing.commitments.map(b64u) }, creds.app);
    expect(put.status).toBe(403);
    expect((put.json.error as { code: string }).code).toBe('TESSERA_FORBIDDEN');
  });

  it('validates bodies: unknown fields, bad points, bad base64, oversized bodies, wrong media type', async () => {
    const url = servers[0]!.url;
    const B = b64u(blind(parseBlob(blob).R).B);
    const code = (r: Reply) => [r.status, (r.json.error as { code: string }).code];
    expect(code(await call(url, 'POST', '/v1/evaluate', { policy: POLICY, epoch: EPOCH, b: B, extra: 1 }, creds.app))).toEqual([400, 'TESSERA_BAD_REQUEST']);
    expect(code(await call(url, 'POST', '/v1/evaluate', { policy: POLICY, epoch: EPOCH, b: b64u(new Uint8Array(32)) }, creds.app))).toEqual([400, 'TESSERA_SECRET_POINT_INVALID']);
    expect(code(await call(url, 'POST', '/v1/evaluate', { policy: POLICY, epoch: EPOCH, b: 'not base64!' }, creds.app))).toEqual([400, 'TESSERA_BAD_REQUEST']);
    expect(code(await call(url, 'POST', '/v1/evaluate', { policy: POLICY, epoch: 2, b: B }, creds.app))).toEqual([404, 'TESSERA_NOT_FOUND']);
    expect(code(await call(url, 'POST', '/v1/evaluate', { policy: POLICY, epoch: '1', b: B }, creds.app))).toEqual([400, 'TESSERA_BAD_REQUEST']);
    expect(code(await call(url, 'POST', '/v1/evaluate', 'x'.repeat(70 * 1024), creds.app))).toEqual([413, 'TESSERA_PAYLOAD_TOO_LARGE']);
    expect(code(await call(url, 'POST', '/v1/evaluate', '{"policy":', creds.app))).toEqual([400, 'TESSERA_BAD_REQUEST']);
    expect(code(await call(url, 'POST', '/v1/evaluate', '{"__proto__":{"x":1}}', creds.app))).toEqual([400, 'TESSERA_BAD_REQUEST']);
    const s = sharing.shares[0]!;
    const wrong = new Uint8Array(s.value);
    wrong[0] = wrong[0]! ^ 1;
    expect(code(await call(url, 'PUT', `/v1/shares/${POLICY}/${EPOCH}`, { t: 2, n: 3, index: 1, value: b64u(wrong), commitments: sharing.commitments.map(b64u) }, creds.admin))).toEqual([400, 'TESSERA_SECRET_SHARE_INVALID']);
    const other = split(randomScalar(), 2, 3);
    expect(code(await call(url, 'PUT', `/v1/shares/${POLICY}/${EPOCH}`, { t: 2, n: 3, index: 1, value: b64u(other.shares[0]!.value), commitments: other.commitments.map(b64u) }, creds.admin))).toEqual([409, 'TESSERA_CONFLICT']);
    expect(code(await call(url, 'PUT', `/v1/shares/${POLICY}/01`, { t: 2, n: 3, index: 1, value: b64u(s.value), commitments: sharing.commitments.map(b64u) }, creds.admin))).toEqual([400, 'TESSERA_BAD_REQUEST']);
    // Still answering correctly after all that.
    expect((await unseal(blob, [servers[0]!, servers[2]!])).plain).toBe(PLAIN);
  });

  it('catches a server answering with a wrong share by its proof, and still opens with the two honest ones', async () => {
    const entry = servers[2]!.store.get(POLICY, EPOCH)!;
    const saved = { value: entry.value, K: entry.K };
    try {
      const bogus = randomScalar();
      Object.assign(entry, { value: bogus, K: baseMul(bogus) }); // self-consistent, but not the committed share
      const r = await unseal(blob, [servers[2]!, servers[0]!, servers[1]!]);
      expect(r.bad).toEqual([3]);
      expect(r.plain).toBe(PLAIN);
      await expect(unseal(blob, [servers[2]!, servers[0]!])).rejects.toMatchObject({ code: 'TESSERA_SECRET_THRESHOLD' });
    } finally {
      Object.assign(entry, saved);
    }
  });

  it('rebuilds its TLS context when the SVID rotates', async () => {
    // A fresh server whose source rotates: clients keep working across the rotation.
    const dir = mkdtempSync(join(tmpdir(), 'tessera-ks-rot-'));
    dataDirs.push(dir);
    const id = `spiffe://${TD}/tessera/keyserver/rot`;
    const source = new FakeSource({ spiffeId: id, ...svid(id), bundlePem: caPem });
    const ks = await startKeyServer({ dataDir: dir, listen: { host: '127.0.0.1', port: 0 }, tls: source, trustDomain: TD, authorize: () => false, provisioners: [], log: silentLogger, env: { TESSERA_KEK: 'e'.repeat(64) } });
    try {
      expect((await call(ks.url, 'GET', '/v1/healthz', undefined, creds.app)).status).toBe(200);
      source.rotate({ spiffeId: id, ...svid(id), bundlePem: caPem });
      expect((await call(ks.url, 'GET', '/v1/healthz', undefined, creds.app)).status).toBe(200);
    } finally {
      await ks.close();
    }
  });

  it('rate-limits per identity over the wire with 429 TESSERA_RATE_LIMITED', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-ks-rl-'));
    dataDirs.push(dir);
    const id = `spiffe://${TD}/tessera/keyserver/rl`;
    const ks = await startKeyServer({ dataDir: dir, listen: { host: '127.0.0.1', port: 0 }, tls: new FakeSource({ spiffeId: id, ...svid(id), bundlePem: caPem }), trustDomain: TD, authorize: () => true, provisioners: [], log: silentLogger, env: { TESSERA_KEK: 'f'.repeat(64) }, rateLimit: { perSecond: 0.001, burst: 2 } });
    try {
      const ask = (who: Svid) => call(ks.url, 'POST', '/v1/evaluate', { policy: POLICY, epoch: EPOCH, b: b64u(blind(parseBlob(blob).R).B) }, who);
      expect((await ask(creds.app)).status).toBe(404);
      expect((await ask(creds.app)).status).toBe(404);
      const limited = await ask(creds.app);
      expect(limited).toEqual({ status: 429, json: { error: { code: 'TESSERA_RATE_LIMITED', message: expect.any(String) } } });
      expect((await ask(creds.other)).status).toBe(404);
    } finally {
      await ks.close();
    }
  });

  it('never receives or stores the blob\'s R, its ciphertext or the plaintext; stores shares only sealed', async () => {
    const parsed = parseBlob(blob);
    expect((await unseal(blob, [servers[0]!, servers[1]!, servers[2]!])).plain).toBe(PLAIN);
    expect(bodies.length).toBeGreaterThan(5);

    const forms = (u: Uint8Array): Buffer[] => {
      const b = Buffer.from(u);
      return [b, Buffer.from(b.toString('base64url')), Buffer.from(b.toString('base64')), Buffer.from(b.toString('hex'))];
    };
    const forbidden = [
      ...forms(parsed.R), ...forms(parsed.ciphertext), ...forms(parsed.ciphertext.subarray(0, 16)), ...forms(blob), Buffer.from(PLAIN), Buffer.from('kEy-s3rver'),
    ];
    const received = Buffer.from(bodies.map((b) => b.body).join('\n'));
    for (const f of forbidden) expect(received.includes(f)).toBe(false);
    // The audit trail carries no point material either.
    const auditText = Buffer.from(JSON.stringify(audits));
    for (const f of forbidden) expect(auditText.includes(f)).toBe(false);
    expect(audits.some((e) => e.actor === APP && e.outcome === 'allowed' && e.policy === POLICY)).toBe(true);

    const files: string[] = [];
    const walk = (d: string): void => {
      for (const name of readdirSync(d)) {
        const p = join(d, name);
        if (statSync(p).isDirectory()) walk(p);
        else files.push(p);
      }
    };
    for (const d of dataDirs.slice(0, 3)) walk(d);
    expect(files.filter((f) => f.endsWith('.json')).length).toBe(3);
    const shareForms = sharing.shares.flatMap((s) => forms(s.value));
    for (const f of files) {
      const content = readFileSync(f);
      for (const x of [...forbidden, ...shareForms]) expect(content.includes(x)).toBe(false);
    }
  });
});

// --- Share refresh, commit, abort and delete over mTLS ---------------------------------------------
// Epoch 7 of the same policy (the key servers' `authorize` allows APP for POLICY at any epoch), so
// the describe block above keeps its own epoch 1 untouched.

const REF_EPOCH = 7;
const REF_PLAIN = 'postgres://orders:r3fresh-EPOCH-7@db.internal/orders';
const NON_ADMINS = { app: creds.app, other: creds.other, peer: svid(`spiffe://${TD}/tessera/keyserver/1`) };

const fromB64u = (s: unknown): Uint8Array => new Uint8Array(Buffer.from(s as string, 'base64url'));
const errorOf = (r: Reply): { code?: unknown; message?: unknown } => (r.json.error ?? {}) as { code?: unknown; message?: unknown };

/** A 4xx answer in the API error shape, with this status and code. */
function expectRefusal(r: Reply, status: number, code: string, what = ''): void {
  expect({ status: r.status, code: errorOf(r).code }, what).toEqual({ status, code });
  expect(typeof errorOf(r).message, what).toBe('string');
  expect(ERROR_CODES[code as keyof typeof ERROR_CODES].status, what).toBe(status);
}

function evaluateAt(ks: KeyServer, B: Point, generation?: number, who: Svid = creds.app, epoch = REF_EPOCH): Promise<Reply> {
  return call(ks.url, 'POST', '/v1/evaluate', { policy: POLICY, epoch, b: b64u(B), ...(generation === undefined ? {} : { generation }) }, who);
}

function evaluationOf(r: Reply): Evaluation & { generation: number } {
  expect(r.status, JSON.stringify(r.json)).toBe(200);
  expect(Object.keys(r.json).sort()).toEqual(['generation', 'index', 'proof', 'z']);
  return { index: r.json.index as number, generation: r.json.generation as number, Z: fromB64u(r.json.z), proof: decodeProof(fromB64u(r.json.proof)) };
}

describe('key share refresh over mTLS, 2-of-3', () => {
  let refSharing: Sharing;
  let refBlob: Buffer;
  let oldCommitments: Point[];
  let newCommitments: Point[];
  const shareFiles = (i: number): string[] => readdirSync(join(dataDirs[i]!, 'shares')).filter((f) => f.endsWith('.json')).sort();
  const refreshPath = (policy = POLICY, epoch: number | string = REF_EPOCH): string => `/v1/shares/${policy}/${epoch}/refresh`;
  const commitPath = (policy = POLICY, epoch: number | string = REF_EPOCH): string => `/v1/shares/${policy}/${epoch}/commit`;
  const refInfo = (i: number) => servers[i]!.store.list().find((s) => s.epoch === REF_EPOCH);
  const auditsOf = (action: KeyAuditEvent['action'], since: number) => audits.slice(since).filter((e) => e.action === action);

  /** Blinds the blob's R, asks `using` at `generation`, checks every proof against `commitments`, combines, opens. */
  async function unsealAt(using: KeyServer[], generation: number | undefined, commitments: Point[]): Promise<string> {
    const parsed = parseBlob(refBlob);
    const blinded = blind(parsed.R);
    const context = unsealContext(parsed.policyId, parsed.epoch);
    const evals: Evaluation[] = [];
    for (const ks of using) {
      const ev = evaluationOf(await evaluateAt(ks, blinded.B, generation));
      if (generation !== undefined) expect(ev.generation).toBe(generation);
      evals.push(ev);
    }
    const { point, bad } = combineAndUnblind(evals, commitments, blinded, commitments.length, context);
    expect(bad).toEqual([]);
    return openWithPoint(parsed, point).toString('utf8');
  }

  beforeAll(async () => {
    refSharing = split(randomScalar(), 2, 3);
    oldCommitments = refSharing.commitments;
    for (let i = 0; i < 3; i++) {
      const s = refSharing.shares[i]!;
      const r = await call(servers[i]!.url, 'PUT', `/v1/shares/${POLICY}/${REF_EPOCH}`, { t: 2, n: 3, index: s.index, value: b64u(s.value), commitments: oldCommitments.map(b64u) }, creds.admin);
      expect(r).toEqual({ status: 201, json: { policy: POLICY, epoch: REF_EPOCH, index: i + 1, created: true } });
    }
    refBlob = seal(Buffer.from(REF_PLAIN), { id: POLICY, epoch: REF_EPOCH, publicKey: oldCommitments[0]! });
  });

  it('every provisioning route refuses a non-admin SVID with 403 TESSERA_FORBIDDEN, audits the denial, and changes nothing', async () => {
    const s = refSharing.shares[0]!;
    const deal = dealRefresh(2, 3);
    const routes: [string, string, unknown, KeyAuditEvent['action']][] = [
      ['PUT', `/v1/shares/${POLICY}/${REF_EPOCH}`, { t: 2, n: 3, index: 1, value: b64u(s.value), commitments: oldCommitments.map(b64u) }, 'secret:share-install'],
      ['POST', refreshPath(), { from: 1, delta: b64u(deal.deltas[0]!.value), d: deal.D.map(b64u) }, 'secret:share-refresh'],
      ['POST', commitPath(), { generation: 2, commitments: oldCommitments.map(b64u) }, 'secret:share-commit'],
      ['DELETE', `/v1/shares/${POLICY}/${REF_EPOCH}/pending`, undefined, 'secret:share-abort'],
      ['DELETE', `/v1/shares/${POLICY}/${REF_EPOCH}`, undefined, 'secret:share-delete'],
    ];
    for (const [name, who] of Object.entries(NON_ADMINS)) {
      for (const [method, path, body, action] of routes) {
        const since = audits.length;
        const r = await call(servers[0]!.url, method, path, body, who);
        expectRefusal(r, 403, 'TESSERA_FORBIDDEN', `${name} ${method} ${path}`);
        const evs = audits.slice(since);
        expect(evs, `${name} ${method} ${path}`).toEqual([
          { at: expect.any(String), action, actor: who === creds.app ? APP : who === creds.other ? OTHER : `spiffe://${TD}/tessera/keyserver/1`, policy: POLICY, epoch: REF_EPOCH, outcome: 'denied', code: 'TESSERA_FORBIDDEN' },
        ]);
      }
      // Listing is admin-only as well.
      expectRefusal(await call(servers[0]!.url, 'GET', '/v1/shares', undefined, who), 403, 'TESSERA_FORBIDDEN', `${name} GET /v1/shares`);
    }
    // A body that is not JSON is refused by the parser before the route runs (so before the caller
    // check, and without an audit event): still a 4xx, and nothing changes.
    const since = audits.length;
    for (const path of [refreshPath(), commitPath()]) {
      const r = await call(servers[0]!.url, 'POST', path, '{"from":', creds.app);
      expect([400, 403]).toContain(r.status);
      expect(String(errorOf(r).code)).toMatch(/^TESSERA_(BAD_REQUEST|FORBIDDEN)$/);
    }
    expect(audits.slice(since).filter((e) => e.outcome === 'allowed')).toEqual([]);
    // Nothing was prepared, committed, aborted or deleted.
    expect(refInfo(0)).toEqual({ policyId: POLICY, epoch: REF_EPOCH, generation: 1, t: 2, n: 3, index: 1 });
    expect(shareFiles(0)).toEqual([`${POLICY}.1.json`, `${POLICY}.${REF_EPOCH}.json`]);
  });

  it('every provisioning route refuses an invalid policy id or epoch in the path with 400 TESSERA_BAD_REQUEST (audited as an error)', async () => {
    const badPolicies = ['Shop.db', 'shop db', 'shop%2Fdb', 'sh%C3%B6p', 'a'.repeat(65), 'shop*db', 'shop~db'];
    const badEpochs = ['01', '-1', '+1', '1.5', '1e3', 'x', '0x1', '4294967296', '99999999999', '%201', '1%00'];
    const routes: [string, (p: string, e: string) => string][] = [
      ['PUT', (p, e) => `/v1/shares/${p}/${e}`],
      ['POST', (p, e) => `/v1/shares/${p}/${e}/refresh`],
      ['POST', (p, e) => `/v1/shares/${p}/${e}/commit`],
      ['DELETE', (p, e) => `/v1/shares/${p}/${e}/pending`],
      ['DELETE', (p, e) => `/v1/shares/${p}/${e}`],
    ];
    const paths = [...badPolicies.map((p) => [p, String(REF_EPOCH)] as const), ...badEpochs.map((e) => [POLICY, e] as const)];
    for (const [method, path] of routes) {
      for (const [p, e] of paths) {
        const since = audits.length;
        // A body that would be valid, so only the path is wrong.
        const r = await call(servers[0]!.url, method, path(p, e), method === 'DELETE' ? undefined : {}, creds.admin);
        expectRefusal(r, 400, 'TESSERA_BAD_REQUEST', `${method} ${path(p, e)}`);
        const evs = audits.slice(since);
        expect(evs).toHaveLength(1);
        expect(evs[0]).toMatchObject({ actor: ADMIN, outcome: 'error', code: 'TESSERA_BAD_REQUEST' });
        if (p !== POLICY) expect(evs[0]!.policy).toBe('(invalid)');
      }
    }
    // The largest epoch is a valid path (and simply holds no share).
    expectRefusal(await call(servers[0]!.url, 'POST', commitPath(POLICY, 0xffffffff), { generation: 2, commitments: oldCommitments.map(b64u) }, creds.admin), 404, 'TESSERA_NOT_FOUND');
    // An over-long path segment is refused by the router, still in the API error shape.
    const long = await call(servers[0]!.url, 'POST', refreshPath('a'.repeat(300)), {}, creds.admin);
    expect(long.status).toBeGreaterThanOrEqual(400);
    expect(long.status).toBeLessThan(500);
    expect(String(errorOf(long).code)).toMatch(/^TESSERA_/);
    expect(shareFiles(0)).toEqual([`${POLICY}.1.json`, `${POLICY}.${REF_EPOCH}.json`]);
  });

  it('refresh refuses malformed bodies with 400 and a stable code, and prepares nothing', async () => {
    const deal = dealRefresh(2, 3);
    const delta = b64u(deal.deltas[0]!.value);
    const d = deal.D.map(b64u);
    const ok = { from: 1, delta, d };
    const zero = b64u(new Uint8Array(32));
    const ff = b64u(new Uint8Array(32).fill(0xff));
    const otherPoint = b64u(baseMul(randomScalar()));
    const cases: [string, unknown, string][] = [
      ['no body', undefined, 'TESSERA_BAD_REQUEST'],
      ['a JSON array', '[]', 'TESSERA_BAD_REQUEST'],
      ['JSON null', 'null', 'TESSERA_BAD_REQUEST'],
      ['a JSON string', '"x"', 'TESSERA_BAD_REQUEST'],
      ['truncated JSON', '{"from":1,', 'TESSERA_BAD_REQUEST'],
      ['__proto__', `{"from":1,"delta":"${delta}","d":["${d[0]!}"],"__proto__":{"x":1}}`, 'TESSERA_BAD_REQUEST'],
      ['an unknown field', { ...ok, to: 2 }, 'TESSERA_BAD_REQUEST'],
      ['no from', { delta, d }, 'TESSERA_BAD_REQUEST'],
      ['no delta', { from: 1, d }, 'TESSERA_BAD_REQUEST'],
      ['no d', { from: 1, delta }, 'TESSERA_BAD_REQUEST'],
      ['from 0', { ...ok, from: 0 }, 'TESSERA_BAD_REQUEST'],
      ['from -1', { ...ok, from: -1 }, 'TESSERA_BAD_REQUEST'],
      ['from 1.5', { ...ok, from: 1.5 }, 'TESSERA_BAD_REQUEST'],
      ['from "1"', { ...ok, from: '1' }, 'TESSERA_BAD_REQUEST'],
      ['from null', { ...ok, from: null }, 'TESSERA_BAD_REQUEST'],
      ['from true', { ...ok, from: true }, 'TESSERA_BAD_REQUEST'],
      ['from [1]', { ...ok, from: [1] }, 'TESSERA_BAD_REQUEST'],
      ['from 2^32-1 (no next generation)', { ...ok, from: 0xffffffff }, 'TESSERA_BAD_REQUEST'],
      ['from 2^53', { ...ok, from: 2 ** 53 }, 'TESSERA_BAD_REQUEST'],
      ['delta a number', { ...ok, delta: 1 }, 'TESSERA_BAD_REQUEST'],
      ['delta empty', { ...ok, delta: '' }, 'TESSERA_BAD_REQUEST'],
      ['delta not base64url', { ...ok, delta: `${delta.slice(0, 42)}!` }, 'TESSERA_BAD_REQUEST'],
      ['delta standard base64', { ...ok, delta: `${delta.slice(0, 42)}+` }, 'TESSERA_BAD_REQUEST'],
      ['delta 31 bytes', { ...ok, delta: b64u(deal.deltas[0]!.value.subarray(0, 31)) }, 'TESSERA_BAD_REQUEST'],
      ['delta 33 bytes', { ...ok, delta: b64u(new Uint8Array([...deal.deltas[0]!.value, 0])) }, 'TESSERA_BAD_REQUEST'],
      ['delta padded', { ...ok, delta: `${delta}=` }, 'TESSERA_BAD_REQUEST'],
      ['delta hex', { ...ok, delta: Buffer.from(deal.deltas[0]!.value).toString('hex') }, 'TESSERA_BAD_REQUEST'],
      ['delta zero', { ...ok, delta: zero }, 'TESSERA_SECRET_SHARE_INVALID'],
      ['delta not a canonical scalar', { ...ok, delta: ff }, 'TESSERA_SECRET_SHARE_INVALID'],
      ['d empty', { ...ok, d: [] }, 'TESSERA_BAD_REQUEST'],
      ['d a bare string', { ...ok, d: d[0] }, 'TESSERA_BAD_REQUEST'],
      ['d repeating a point', { ...ok, d: [d[0], d[0]] }, 'TESSERA_BAD_REQUEST'],
      ['d an object', { ...ok, d: { 0: d[0] } }, 'TESSERA_BAD_REQUEST'],
      ['d a number', { ...ok, d: 1 }, 'TESSERA_BAD_REQUEST'],
      ['d [number]', { ...ok, d: [1] }, 'TESSERA_BAD_REQUEST'],
      ['d [null]', { ...ok, d: [null] }, 'TESSERA_BAD_REQUEST'],
      ['d [short]', { ...ok, d: [d[0]!.slice(0, 42)] }, 'TESSERA_BAD_REQUEST'],
      ['d [not base64url]', { ...ok, d: [`${d[0]!.slice(0, 42)}/`] }, 'TESSERA_BAD_REQUEST'],
      ['d of 256 points', { ...ok, d: Array.from({ length: 256 }, () => otherPoint) }, 'TESSERA_BAD_REQUEST'],
      ['d of t points (one too many)', { ...ok, d: [...d, otherPoint] }, 'TESSERA_SECRET_SHARE_INVALID'],
      ['d the identity', { ...ok, d: [zero] }, 'TESSERA_SECRET_SHARE_INVALID'],
      ['d not a point', { ...ok, d: [ff] }, 'TESSERA_SECRET_SHARE_INVALID'],
      ['d another point', { ...ok, d: [otherPoint] }, 'TESSERA_SECRET_SHARE_INVALID'],
      ['a delta for another index', { ...ok, delta: b64u(deal.deltas[1]!.value) }, 'TESSERA_SECRET_SHARE_INVALID'],
      ['a delta of another deal', { ...ok, delta: b64u(dealRefresh(2, 3).deltas[0]!.value) }, 'TESSERA_SECRET_SHARE_INVALID'],
      ['the old share\'s own commitment as D', { ...ok, d: [b64u(oldCommitments[1]!)] }, 'TESSERA_SECRET_SHARE_INVALID'],
    ];
    const since = audits.length;
    for (const [what, body, code] of cases) {
      expectRefusal(await call(servers[0]!.url, 'POST', refreshPath(), body, creds.admin), 400, code, what);
    }
    // Every refusal that reaches the route is audited as an error with its code (a body that is not
    // JSON is refused by the parser, before the route: no event); none prepared anything.
    const unparsable = new Set(['truncated JSON', '__proto__']);
    const evs = auditsOf('secret:share-refresh', since);
    expect(evs.map((e) => [e.outcome, e.code])).toEqual(cases.filter(([what]) => !unparsable.has(what)).map(([, , code]) => ['error', code]));
    expect(JSON.stringify(evs)).not.toContain(delta);
    expect(refInfo(0)).toEqual({ policyId: POLICY, epoch: REF_EPOCH, generation: 1, t: 2, n: 3, index: 1 });
    expect(shareFiles(0)).toEqual([`${POLICY}.1.json`, `${POLICY}.${REF_EPOCH}.json`]);
    // A body of the wrong media type, or too large.
    const r415 = await new Promise<Reply>((resolve, reject) => {
      const req = request(`${servers[0]!.url}${refreshPath()}`, { method: 'POST', agent: new Agent({ ca: caPem, cert: creds.admin.certPem, key: creds.admin.keyPem }), headers: { 'content-type': 'text/plain' } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown> }));
      });
      req.on('error', reject);
      req.end(JSON.stringify(ok));
    });
    expectRefusal(r415, 415, 'TESSERA_UNSUPPORTED_MEDIA_TYPE');
    expectRefusal(await call(servers[0]!.url, 'POST', refreshPath(), { ...ok, d: Array.from({ length: 2000 }, () => otherPoint) }, creds.admin), 413, 'TESSERA_PAYLOAD_TOO_LARGE');
    expect(refInfo(0)!.pending).toBeUndefined();
  });

  it('commit and install refuse malformed bodies with 400 and a stable code', async () => {
    const c = oldCommitments.map(b64u);
    const okCommit = { generation: 2, commitments: c };
    const commitCases: [string, unknown][] = [
      ['no body', undefined],
      ['a JSON array', '[1]'],
      ['truncated JSON', '{"generation":'],
      ['an unknown field', { ...okCommit, from: 1 }],
      ['no generation', { commitments: c }],
      ['no commitments', { generation: 2 }],
      ['generation 0', { ...okCommit, generation: 0 }],
      ['generation -2', { ...okCommit, generation: -2 }],
      ['generation 2.5', { ...okCommit, generation: 2.5 }],
      ['generation "2"', { ...okCommit, generation: '2' }],
      ['generation null', { ...okCommit, generation: null }],
      ['generation 2^32', { ...okCommit, generation: 2 ** 32 }],
      ['commitments empty', { ...okCommit, commitments: [] }],
      ['commitments a number', { ...okCommit, commitments: 7 }],
      ['commitments [number]', { ...okCommit, commitments: [1, 2] }],
      ['commitments [short]', { ...okCommit, commitments: [c[0]!.slice(1), c[1]] }],
      ['commitments [padded]', { ...okCommit, commitments: [`${c[0]!}=`, c[1]] }],
      ['commitments of 256', { ...okCommit, commitments: Array.from({ length: 256 }, (_, i) => b64u(new Uint8Array(32).fill(i % 200))) }],
      ['commitments a bare string', { ...okCommit, commitments: c[0] }],
      ['a repeated commitment', { ...okCommit, commitments: [c[0], c[1], c[1]] }],
    ];
    // A policy id that would name a hidden file is refused on every route.
    expectRefusal(await call(servers[0]!.url, 'PUT', `/v1/shares/.hidden/${REF_EPOCH}`, { t: 2, n: 3, index: 1, value: b64u(refSharing.shares[0]!.value), commitments: c }, creds.admin), 400, 'TESSERA_BAD_REQUEST', 'put: .hidden');
    for (const [what, body] of commitCases) {
      expectRefusal(await call(servers[0]!.url, 'POST', commitPath(), body, creds.admin), 400, 'TESSERA_BAD_REQUEST', `commit: ${what}`);
    }
    const s = refSharing.shares[0]!;
    const okPut = { t: 2, n: 3, index: 1, value: b64u(s.value), commitments: c };
    const putCases: [string, unknown, string][] = [
      ['no body', undefined, 'TESSERA_BAD_REQUEST'],
      ['an unknown field', { ...okPut, generation: 2 }, 'TESSERA_BAD_REQUEST'],
      ['index 0', { ...okPut, index: 0 }, 'TESSERA_BAD_REQUEST'],
      ['t 0', { ...okPut, t: 0 }, 'TESSERA_BAD_REQUEST'],
      ['n 256', { ...okPut, n: 256 }, 'TESSERA_BAD_REQUEST'],
      ['value 31 bytes', { ...okPut, value: b64u(s.value.subarray(1)) }, 'TESSERA_BAD_REQUEST'],
      ['value a number', { ...okPut, value: 5 }, 'TESSERA_BAD_REQUEST'],
      ['one commitment for t = 2', { ...okPut, commitments: [c[0]] }, 'TESSERA_SECRET_SHARE_INVALID'],
      ['t > n', { ...okPut, t: 3, n: 2, commitments: [...c, b64u(baseMul(randomScalar()))] }, 'TESSERA_SECRET_SHARE_INVALID'],
      ['index > n', { ...okPut, index: 4 }, 'TESSERA_SECRET_SHARE_INVALID'],
      ['commitments a bare string', { ...okPut, commitments: c[0] }, 'TESSERA_BAD_REQUEST'],
      ['a repeated commitment', { ...okPut, t: 3, commitments: [c[0], c[1], c[1]] }, 'TESSERA_BAD_REQUEST'],
    ];
    for (const [what, body, code] of putCases) {
      expectRefusal(await call(servers[0]!.url, 'PUT', `/v1/shares/${POLICY}/${REF_EPOCH}`, body, creds.admin), 400, code, `put: ${what}`);
    }
    // The very same share again is a no-op (200-class, created: false), not a 5xx or a conflict.
    expect(await call(servers[0]!.url, 'PUT', `/v1/shares/${POLICY}/${REF_EPOCH}`, okPut, creds.admin)).toEqual({ status: 201, json: { policy: POLICY, epoch: REF_EPOCH, index: 1, created: false } });
    expect(refInfo(0)).toEqual({ policyId: POLICY, epoch: REF_EPOCH, generation: 1, t: 2, n: 3, index: 1 });
  });

  it('refresh of a missing share is 404, from a stale generation 409; commit with nothing prepared 404; deleting nothing is a 200 no-op', async () => {
    const deal = dealRefresh(2, 3);
    const body = { from: 1, delta: b64u(deal.deltas[0]!.value), d: deal.D.map(b64u) };
    expectRefusal(await call(servers[0]!.url, 'POST', refreshPath('no.such.policy'), body, creds.admin), 404, 'TESSERA_NOT_FOUND');
    expectRefusal(await call(servers[0]!.url, 'POST', refreshPath(POLICY, REF_EPOCH + 1), body, creds.admin), 404, 'TESSERA_NOT_FOUND');
    const stale = await call(servers[0]!.url, 'POST', refreshPath(), { ...body, from: 2 }, creds.admin);
    expectRefusal(stale, 409, 'TESSERA_CONFLICT');
    expect(String(errorOf(stale).message)).toContain('generation 1');
    const c = oldCommitments.map(b64u);
    expectRefusal(await call(servers[0]!.url, 'POST', commitPath(), { generation: 2, commitments: c }, creds.admin), 404, 'TESSERA_NOT_FOUND');
    expectRefusal(await call(servers[0]!.url, 'POST', commitPath('no.such.policy'), { generation: 2, commitments: c }, creds.admin), 404, 'TESSERA_NOT_FOUND');
    // Committing the current generation with its own commitments is an idempotent no-op.
    expect(await call(servers[0]!.url, 'POST', commitPath(), { generation: 1, commitments: c }, creds.admin)).toEqual({ status: 200, json: { policy: POLICY, epoch: REF_EPOCH, generation: 1, committed: false } });
    const since = audits.length;
    expect(await call(servers[0]!.url, 'DELETE', `/v1/shares/no.such.policy/${REF_EPOCH}`, undefined, creds.admin)).toEqual({ status: 200, json: { policy: 'no.such.policy', epoch: REF_EPOCH, deleted: false } });
    expect(await call(servers[0]!.url, 'DELETE', `/v1/shares/${POLICY}/${REF_EPOCH}/pending`, undefined, creds.admin)).toEqual({ status: 200, json: { policy: POLICY, epoch: REF_EPOCH, aborted: false } });
    expect(audits.slice(since).map((e) => [e.action, e.outcome, e.policy])).toEqual([['secret:share-delete', 'allowed', 'no.such.policy'], ['secret:share-abort', 'allowed', POLICY]]);
    expect(refInfo(0)).toEqual({ policyId: POLICY, epoch: REF_EPOCH, generation: 1, t: 2, n: 3, index: 1 });
  });

  it('evaluate refuses a generation of the wrong type with 400, and says STALE only to an allowed caller about a share it holds', async () => {
    const B = blind(parseBlob(refBlob).R).B;
    for (const generation of ['1', 1.5, 0, -1, null, true, [1], { g: 1 }, 2 ** 32, 1e300, '']) {
      const r = await call(servers[0]!.url, 'POST', '/v1/evaluate', { policy: POLICY, epoch: REF_EPOCH, generation, b: b64u(B) }, creds.app);
      expectRefusal(r, 400, 'TESSERA_BAD_REQUEST', JSON.stringify(generation));
    }
    // A caller who may not unseal learns nothing about generations; a share not held is 404, not STALE.
    expectRefusal(await evaluateAt(servers[0]!, B, 99, creds.other), 403, 'TESSERA_FORBIDDEN');
    expectRefusal(await evaluateAt(servers[0]!, B, 1, creds.app, REF_EPOCH + 1), 404, 'TESSERA_NOT_FOUND');
    expectRefusal(await evaluateAt(servers[0]!, B, 2), 409, 'TESSERA_SECRET_STALE');
    expect(evaluationOf(await evaluateAt(servers[0]!, B, 1)).generation).toBe(1);
    expect(evaluationOf(await evaluateAt(servers[0]!, B)).generation).toBe(1);
  });

  it('a full refresh: prepared on all three, both generations answer (each proof against its own commitments), commit, then only the new one', async () => {
    const deal = dealRefresh(2, 3);
    const D = deal.D.map(b64u);
    const since = audits.length;
    const prepared: string[][] = [];
    for (let i = 0; i < 3; i++) {
      const delta = b64u(deal.deltas[i]!.value);
      const r = await call(servers[i]!.url, 'POST', refreshPath(), { from: 1, delta, d: D }, creds.admin);
      expect(r.status, JSON.stringify(r.json)).toBe(200);
      expect(r.json).toMatchObject({ policy: POLICY, epoch: REF_EPOCH, index: i + 1, generation: 2 });
      expect(Object.keys(r.json).sort()).toEqual(['commitments', 'epoch', 'generation', 'index', 'policy']);
      expect(JSON.stringify(r.json)).not.toContain(delta);
      prepared.push(r.json.commitments as string[]);
    }
    // Every server derived the same new commitments: same public key, the others moved by D.
    expect(prepared[1]).toEqual(prepared[0]);
    expect(prepared[2]).toEqual(prepared[0]);
    newCommitments = prepared[0]!.map(fromB64u);
    expect(newCommitments.map(b64u)).toEqual(refreshedCommitments(oldCommitments, deal.D).map(b64u));
    expect(b64u(newCommitments[0]!)).toBe(b64u(oldCommitments[0]!));
    expect(b64u(newCommitments[1]!)).not.toBe(b64u(oldCommitments[1]!));
    expect(auditsOf('secret:share-refresh', since).map((e) => [e.outcome, e.policy, e.epoch])).toEqual([0, 1, 2].map(() => ['allowed', POLICY, REF_EPOCH]));
    const listed = await call(servers[1]!.url, 'GET', '/v1/shares', undefined, creds.admin);
    expect(listed.status).toBe(200);
    expect(listed.json.shares).toContainEqual({ policy: POLICY, epoch: REF_EPOCH, generation: 1, index: 2, t: 2, n: 3, pending: 2 });
    expect(shareFiles(1)).toEqual([`${POLICY}.1.json`, `${POLICY}.${REF_EPOCH}.json`, `${POLICY}.${REF_EPOCH}.next.json`]);

    // During the transition: generation 1 and 2 both answer, each with a proof for its own public share.
    const parsed = parseBlob(refBlob);
    const blinded = blind(parsed.R);
    const context = unsealContext(POLICY, REF_EPOCH);
    const byGen: Record<number, (Evaluation & { generation: number })[]> = { 1: [], 2: [] };
    for (let i = 0; i < 3; i++) {
      for (const g of [1, 2] as const) {
        const ev = evaluationOf(await evaluateAt(servers[i]!, blinded.B, g));
        expect([ev.index, ev.generation]).toEqual([i + 1, g]);
        const own = g === 1 ? oldCommitments : newCommitments;
        const other = g === 1 ? newCommitments : oldCommitments;
        expect(verifyDleq(ev.proof, blinded.B, publicShare(i + 1, own), ev.Z, context)).toBe(true);
        expect(verifyDleq(ev.proof, blinded.B, publicShare(i + 1, other), ev.Z, context)).toBe(false);
        byGen[g]!.push(ev);
      }
      expect(evaluationOf(await evaluateAt(servers[i]!, blinded.B)).generation).toBe(1);
      const r3 = await evaluateAt(servers[i]!, blinded.B, 3);
      expectRefusal(r3, 409, 'TESSERA_SECRET_STALE');
      expect(String(errorOf(r3).message)).toMatch(/generation 1, not 3/);
    }
    // Each generation opens the blob on its own...
    for (const g of [1, 2] as const) {
      const cs = g === 1 ? oldCommitments : newCommitments;
      const { point, bad } = combineAndUnblind(byGen[g]!.slice(0, 2), cs, blinded, 2, context);
      expect(bad).toEqual([]);
      expect(openWithPoint(parsed, point).toString('utf8')).toBe(REF_PLAIN);
    }
    expect(await unsealAt([servers[2]!, servers[0]!], 2, newCommitments)).toBe(REF_PLAIN);
    // ...but old and new shares do not combine.
    const mixed = combinePoints([{ index: 1, point: byGen[1]![0]!.Z }, { index: 2, point: byGen[2]![1]!.Z }]);
    expect(() => openWithPoint(parsed, unblind(mixed, blinded.b))).toThrow(expect.objectContaining({ code: 'TESSERA_SECRET_BLOB_INVALID' }));

    // Commit: other commitments are a conflict, another generation is not prepared; the current
    // generation with other commitments is refused too (whatever the code, it changes nothing).
    const curOther = await call(servers[0]!.url, 'POST', commitPath(), { generation: 1, commitments: prepared[0] }, creds.admin);
    expect([404, 409]).toContain(curOther.status);
    expect(['TESSERA_NOT_FOUND', 'TESSERA_CONFLICT']).toContain(errorOf(curOther).code);
    expectRefusal(await call(servers[0]!.url, 'POST', commitPath(), { generation: 2, commitments: oldCommitments.map(b64u) }, creds.admin), 409, 'TESSERA_CONFLICT');
    expectRefusal(await call(servers[0]!.url, 'POST', commitPath(), { generation: 2, commitments: [b64u(newCommitments[0]!)] }, creds.admin), 409, 'TESSERA_CONFLICT');
    expectRefusal(await call(servers[0]!.url, 'POST', commitPath(), { generation: 3, commitments: prepared[0] }, creds.admin), 404, 'TESSERA_NOT_FOUND');
    expect(refInfo(0)!.pending).toBe(2);
    const commitSince = audits.length;
    for (let i = 0; i < 3; i++) {
      expect(await call(servers[i]!.url, 'POST', commitPath(), { generation: 2, commitments: prepared[0] }, creds.admin)).toEqual({ status: 200, json: { policy: POLICY, epoch: REF_EPOCH, generation: 2, committed: true } });
      expect(await call(servers[i]!.url, 'POST', commitPath(), { generation: 2, commitments: prepared[0] }, creds.admin)).toEqual({ status: 200, json: { policy: POLICY, epoch: REF_EPOCH, generation: 2, committed: false } });
      expect(refInfo(i)).toEqual({ policyId: POLICY, epoch: REF_EPOCH, generation: 2, t: 2, n: 3, index: i + 1 });
      expect(shareFiles(i)).toEqual([`${POLICY}.1.json`, `${POLICY}.${REF_EPOCH}.json`]);
    }
    expect(auditsOf('secret:share-commit', commitSince).map((e) => e.outcome)).toEqual(Array(6).fill('allowed'));

    // After the commit: generation 1 is stale everywhere, 2 (and the default) answer.
    for (let i = 0; i < 3; i++) {
      const r1 = await evaluateAt(servers[i]!, blinded.B, 1);
      expectRefusal(r1, 409, 'TESSERA_SECRET_STALE');
      expect(String(errorOf(r1).message)).toMatch(/generation 2, not 1/);
      expect(evaluationOf(await evaluateAt(servers[i]!, blinded.B)).generation).toBe(2);
    }
    expect(await unsealAt([servers[0]!, servers[1]!], 2, newCommitments)).toBe(REF_PLAIN);
    expect(await unsealAt([servers[1]!, servers[2]!], undefined, newCommitments)).toBe(REF_PLAIN);
    // Answers of the new shares do not pass as the old generation's.
    const evs = [evaluationOf(await evaluateAt(servers[0]!, blinded.B, 2)), evaluationOf(await evaluateAt(servers[1]!, blinded.B, 2))];
    expect(() => combineAndUnblind(evs, oldCommitments, blinded, 2, context)).toThrow(expect.objectContaining({ code: 'TESSERA_SECRET_THRESHOLD' }));
    // A second refresh from the old generation is refused.
    const again = dealRefresh(2, 3);
    expectRefusal(await call(servers[0]!.url, 'POST', refreshPath(), { from: 1, delta: b64u(again.deltas[0]!.value), d: again.D.map(b64u) }, creds.admin), 409, 'TESSERA_CONFLICT');
  });

  it('an aborted refresh: the prepared generation survives a restart, then stops answering once aborted; a re-prepare replaces it', async () => {
    const B = blind(parseBlob(refBlob).R).B;
    const a = dealRefresh(2, 3);
    const b = dealRefresh(2, 3);
    const prep = async (deal: typeof a): Promise<Reply> => call(servers[0]!.url, 'POST', refreshPath(), { from: 2, delta: b64u(deal.deltas[0]!.value), d: deal.D.map(b64u) }, creds.admin);
    const ra = await prep(a);
    expect(ra.json.generation).toBe(3);
    // A restart keeps the prepared share.
    await servers[0]!.close();
    await start(0);
    expect(refInfo(0)).toEqual({ policyId: POLICY, epoch: REF_EPOCH, generation: 2, t: 2, n: 3, index: 1, pending: 3 });
    expect(evaluationOf(await evaluateAt(servers[0]!, B, 3)).generation).toBe(3);
    // Preparing generation 3 again (another deal) replaces the first: its commitments no longer commit.
    const rb = await prep(b);
    expect(rb.json.generation).toBe(3);
    expect(rb.json.commitments).not.toEqual(ra.json.commitments);
    expectRefusal(await call(servers[0]!.url, 'POST', commitPath(), { generation: 3, commitments: ra.json.commitments }, creds.admin), 409, 'TESSERA_CONFLICT');
    expect(await call(servers[0]!.url, 'DELETE', `/v1/shares/${POLICY}/${REF_EPOCH}/pending`, undefined, creds.admin)).toEqual({ status: 200, json: { policy: POLICY, epoch: REF_EPOCH, aborted: true } });
    expect(await call(servers[0]!.url, 'DELETE', `/v1/shares/${POLICY}/${REF_EPOCH}/pending`, undefined, creds.admin)).toEqual({ status: 200, json: { policy: POLICY, epoch: REF_EPOCH, aborted: false } });
    expectRefusal(await evaluateAt(servers[0]!, B, 3), 409, 'TESSERA_SECRET_STALE');
    expectRefusal(await call(servers[0]!.url, 'POST', commitPath(), { generation: 3, commitments: rb.json.commitments }, creds.admin), 404, 'TESSERA_NOT_FOUND');
    expect(refInfo(0)).toEqual({ policyId: POLICY, epoch: REF_EPOCH, generation: 2, t: 2, n: 3, index: 1 });
    expect(shareFiles(0)).toEqual([`${POLICY}.1.json`, `${POLICY}.${REF_EPOCH}.json`]);
    expect(await unsealAt([servers[0]!, servers[2]!], 2, newCommitments)).toBe(REF_PLAIN);
  });

  it('property: arbitrary JSON bodies to refresh and commit never produce a 5xx', async () => {
    // A share of its own (epoch 9 on server 0), so that valid-looking bodies reach the store.
    const FUZZ_EPOCH = 9;
    const sh = split(randomScalar(), 2, 3);
    const put = await call(servers[0]!.url, 'PUT', `/v1/shares/${POLICY}/${FUZZ_EPOCH}`, { t: 2, n: 3, index: 1, value: b64u(sh.shares[0]!.value), commitments: sh.commitments.map(b64u) }, creds.admin);
    expect(put.status).toBe(201);
    const deal = dealRefresh(2, 3);
    const next = refreshedCommitments(sh.commitments, deal.D);
    const known = [...sh.commitments, ...deal.D, ...next, ...deal.deltas.map((d) => d.value), new Uint8Array(32), new Uint8Array(32).fill(0xff)].map(b64u);
    const b64ish = fc.oneof(fc.constantFrom(...known), fc.uint8Array({ minLength: 32, maxLength: 32 }).map(b64u), fc.string({ maxLength: 50 }));
    const value = fc.oneof(
      fc.jsonValue({ maxDepth: 2 }),
      fc.integer({ min: -2, max: 5 }),
      fc.constantFrom(0xffffffff, 2 ** 32, 1.5, -0),
      b64ish,
      fc.array(b64ish, { maxLength: 4 }),
    );
    const fields = ['from', 'delta', 'd', 'generation', 'commitments'];
    // Mostly near-valid bodies (the right fields, each valid or random), so that the store is reached.
    const pick = <T>(valid: fc.Arbitrary<T>): fc.Arbitrary<unknown> => fc.oneof({ arbitrary: valid, weight: 3 }, { arbitrary: value, weight: 1 });
    const nearRefresh = fc.record({
      from: pick(fc.constantFrom(1, 2)),
      delta: pick(fc.constantFrom(...deal.deltas.map((d) => b64u(d.value)))),
      d: pick(fc.oneof(fc.constant(deal.D.map(b64u)), fc.array(fc.constantFrom(...known), { minLength: 1, maxLength: 3 }))),
    }, { requiredKeys: [] });
    const nearCommit = fc.record({
      generation: pick(fc.constantFrom(1, 2, 3)),
      commitments: pick(fc.oneof(fc.constant(next.map(b64u)), fc.constant(sh.commitments.map(b64u)), fc.array(fc.constantFrom(...known), { minLength: 1, maxLength: 3 }))),
    }, { requiredKeys: [] });
    const jsonBody = (near: fc.Arbitrary<unknown>): fc.Arbitrary<string> => fc.oneof(
      { arbitrary: near.map((v) => JSON.stringify(v)), weight: 4 },
      { arbitrary: fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)), weight: 1 },
      { arbitrary: fc.dictionary(fc.constantFrom(...fields, '__proto__', 'constructor', 'x'), value, { maxKeys: 4 }).map((v) => JSON.stringify(v)), weight: 1 },
      { arbitrary: fc.string({ maxLength: 60 }), weight: 1 },
    );
    const seen = new Set<string>();
    for (const [path, near] of [[refreshPath(POLICY, FUZZ_EPOCH), nearRefresh], [commitPath(POLICY, FUZZ_EPOCH), nearCommit]] as const) {
      await fc.assert(
        fc.asyncProperty(jsonBody(near), async (text) => {
          const r = await call(servers[0]!.url, 'POST', path, text, creds.admin);
          expect(r.status, `${path} ${text}`).toBeLessThan(500);
          if (r.status >= 400) {
            const code = errorOf(r).code as keyof typeof ERROR_CODES;
            expect(Object.keys(ERROR_CODES), `${path} ${text}`).toContain(code);
            expect(ERROR_CODES[code].status).toBe(r.status);
            seen.add(code);
          } else {
            expect(r.status).toBe(200);
            expect(r.json).toMatchObject({ policy: POLICY, epoch: FUZZ_EPOCH });
            seen.add('OK');
          }
        }),
        { numRuns: 50 },
      );
    }
    // The bodies reached past the parser into the store (not only 400 TESSERA_BAD_REQUEST).
    expect([...seen].filter((c) => c !== 'TESSERA_BAD_REQUEST').length).toBeGreaterThan(0);
    expect(audits.filter((e) => e.code === 'TESSERA_INTERNAL')).toEqual([]);
    expect((await call(servers[0]!.url, 'GET', '/v1/healthz', undefined, creds.app)).status).toBe(200);
    expect((await call(servers[0]!.url, 'DELETE', `/v1/shares/${POLICY}/${FUZZ_EPOCH}`, undefined, creds.admin)).json).toEqual({ policy: POLICY, epoch: FUZZ_EPOCH, deleted: true });
  });

  it('DELETE removes an epoch\'s share and any prepared one; the epoch then answers 404; a second DELETE is a no-op', async () => {
    const deal = dealRefresh(2, 3);
    expect((await call(servers[2]!.url, 'POST', refreshPath(), { from: 2, delta: b64u(deal.deltas[2]!.value), d: deal.D.map(b64u) }, creds.admin)).status).toBe(200);
    expect(shareFiles(2)).toEqual([`${POLICY}.1.json`, `${POLICY}.${REF_EPOCH}.json`, `${POLICY}.${REF_EPOCH}.next.json`]);
    const since = audits.length;
    for (let i = 0; i < 3; i++) {
      expect(await call(servers[i]!.url, 'DELETE', `/v1/shares/${POLICY}/${REF_EPOCH}`, undefined, creds.admin)).toEqual({ status: 200, json: { policy: POLICY, epoch: REF_EPOCH, deleted: true } });
      expect(await call(servers[i]!.url, 'DELETE', `/v1/shares/${POLICY}/${REF_EPOCH}`, undefined, creds.admin)).toEqual({ status: 200, json: { policy: POLICY, epoch: REF_EPOCH, deleted: false } });
      expect(refInfo(i)).toBeUndefined();
      expect(shareFiles(i)).toEqual([`${POLICY}.1.json`]);
    }
    expect(auditsOf('secret:share-delete', since).map((e) => [e.outcome, e.actor])).toEqual(Array(6).fill(['allowed', ADMIN]));
    const B = blind(parseBlob(refBlob).R).B;
    expectRefusal(await evaluateAt(servers[2]!, B), 404, 'TESSERA_NOT_FOUND');
    expectRefusal(await evaluateAt(servers[2]!, B, 3), 404, 'TESSERA_NOT_FOUND');
    const stale = dealRefresh(2, 3);
    expectRefusal(await call(servers[1]!.url, 'POST', refreshPath(), { from: 2, delta: b64u(stale.deltas[1]!.value), d: stale.D.map(b64u) }, creds.admin), 404, 'TESSERA_NOT_FOUND');
    // Epoch 1 is untouched.
    expect((await unseal(blob, [servers[0]!, servers[1]!])).plain).toBe(PLAIN);
  });
});

describe('unseal telemetry (the node wires it to its sidecar collector: lane callee, action unseal)', () => {
  /** A plain counter per caller with the shape the key server counts into. */
  class Counters { requests = 0; errors = 0; denials = 0; bytesIn = 0; bytesOut = 0; samples = 0; policies = new Set<string>();
    latency(): void { this.samples++; }
    path(p: string): void { this.policies.add(p); } }
  const edges = new Map<string, Counters>();
  let ks: KeyServer;
  let dir: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-ks-telemetry-'));
    ks = await startKeyServer({
      dataDir: dir, listen: { host: '127.0.0.1', port: 0 }, trustDomain: TD, provisioners: [ADMIN], log: silentLogger, env: { TESSERA_KEK: '9'.repeat(64) },
      tls: new FakeSource({ spiffeId: `spiffe://${TD}/tessera/keyserver/t`, ...svid(`spiffe://${TD}/tessera/keyserver/t`), bundlePem: caPem }),
      authorize: (caller, policy) => caller.spiffeId === APP && policy === POLICY,
      rateLimit: { perSecond: 0.001, burst: 3 },
      unsealTelemetry: { edge: (caller) => edges.get(caller) ?? edges.set(caller, new Counters()).get(caller)! },
    });
    const s = sharing.shares[0]!;
    const r = await call(ks.url, 'PUT', `/v1/shares/${POLICY}/${EPOCH}`, { t: 2, n: 3, index: s.index, value: b64u(s.value), commitments: sharing.commitments.map(b64u) }, creds.admin);
    expect(r.status).toBe(201);
  });

  afterAll(async () => {
    await ks?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('counts per caller: requests, denials (403), other failures as errors, bytes both ways, latency, distinct well-formed policies', async () => {
    const B = b64u(blind(parseBlob(blob).R).B);
    expect((await call(ks.url, 'POST', '/v1/evaluate', { policy: POLICY, epoch: EPOCH, b: B }, creds.app)).status).toBe(200);
    expect((await call(ks.url, 'POST', '/v1/evaluate', { policy: 'other.db', epoch: EPOCH, b: B }, creds.app)).status).toBe(403);
    // A malformed policy id is an error and not a policy (random ids would inflate the distinct count).
    expect((await call(ks.url, 'POST', '/v1/evaluate', { policy: 'Not A Policy', epoch: EPOCH, b: B }, creds.app)).status).toBe(400);
    expect((await call(ks.url, 'POST', '/v1/evaluate', { policy: POLICY, epoch: EPOCH, b: 'x', extra: 1 }, creds.app)).status).toBe(400);
    // Past the burst of 3 (the malformed body never reached the limiter): rate limited, an error.
    expect((await call(ks.url, 'POST', '/v1/evaluate', { policy: POLICY, epoch: EPOCH, b: B }, creds.app)).status).toBe(429);
    expect((await call(ks.url, 'POST', '/v1/evaluate', { policy: POLICY, epoch: EPOCH, b: B }, creds.other)).status).toBe(403);
    // Healthz and provisioning are not unseals.
    await call(ks.url, 'GET', '/v1/healthz', undefined, creds.app);
    await call(ks.url, 'GET', '/v1/shares', undefined, creds.admin);
    const app = edges.get(APP)!;
    expect({ requests: app.requests, denials: app.denials, errors: app.errors, samples: app.samples, policies: [...app.policies].sort() })
      .toEqual({ requests: 5, denials: 1, errors: 3, samples: 5, policies: ['other.db', POLICY] });
    expect(app.bytesIn).toBeGreaterThan(5 * 40);
    expect(app.bytesOut).toBeGreaterThan(200);
    expect(edges.get(OTHER)).toMatchObject({ requests: 1, denials: 1, errors: 0 });
    expect([...edges.keys()].sort()).toEqual([OTHER, APP].sort());
  });
});
