import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { request, Agent } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../core/log.js';
import {
  baseMul, blind, combineAndUnblind, decodeProof, openWithPoint, parseBlob, randomScalar, ready, seal, split, unsealContext,
  type Evaluation, type Point, type Sharing,
} from '../core/secrets/index.js';
import { CertificateIssuer, createSelfSignedCa, pemEncode } from '../core/x509.js';
import type { TlsMaterial, TlsSource } from '../agent/inbound/tls-source.js';
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

interface Reply { status: number; json: Record<string, unknown> }
function call(url: string, method: string, path: string, body: unknown, who: Svid | undefined): Promise<Reply> {
  const agent = new Agent({ ca: caPem, ...(who ? { cert: who.certPem, key: who.keyPem } : {}), keepAlive: false });
  return new Promise((resolve, reject) => {
    const req = request(`${url}${path}`, { method, agent, headers: body === undefined ? {} : { 'content-type': 'application/json' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({ status: res.statusCode ?? 0, json: text ? JSON.parse(text) as Record<string, unknown> : {} });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body));
  });
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
