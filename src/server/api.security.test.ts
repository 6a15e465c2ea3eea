/**
 * Negative tests of the control plane API over real HTTPS + mTLS: every refusal is a 4xx with a
 * stable error code (never a 5xx), the server keeps answering, and secrets (join tokens, CSRs)
 * never come back in a response body or land in the audit log.
 */
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createCsr } from '../core/csr.js';
import { ERROR_CODES, type ErrorCode } from '../core/errors.js';
import { isSpiffeId } from '../core/spiffe-id.js';
import { CertificateIssuer, createSelfSignedCa, pemEncode } from '../core/x509.js';
import {
  applyPolicy,
  errorCode,
  isHealthy,
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
const ADMIN_ID = `spiffe://${TD}/tessera/admin`;
const HOUR = 3600_000;

/** Asserts the exact status and code of an error response, and its `{ error: { code, message } }` shape. */
function expectError(res: RawResponse, code: ErrorCode): void {
  expect({ status: res.status, code: errorCode(res) }, res.text.slice(0, 300)).toEqual({ status: ERROR_CODES[code].status, code });
  const err = (res.json as { error: Record<string, unknown> }).error;
  expect(Object.keys(err).sort()).toEqual(['code', 'message']);
  expect(typeof err.message).toBe('string');
}

/** Any answer: a 2xx, or a 4xx with a known code and the standard shape. Never a 5xx. */
function expectNo5xx(res: RawResponse): void {
  expect(res.status, res.text.slice(0, 300)).toBeLessThan(500);
  if (res.status >= 400) {
    const code = errorCode(res);
    expect(code !== undefined && code in ERROR_CODES, res.text.slice(0, 300)).toBe(true);
    expect(ERROR_CODES[code as ErrorCode].status).toBe(res.status);
  }
}

/**
 * One control plane per describe block; after every test it must still answer /healthz and must
 * not have logged an internal error.
 */
function useControlPlane(): { t: () => TestControlPlane } {
  let t: TestControlPlane | undefined;
  let seenLogs = 0;
  beforeAll(async () => {
    t = await startControlPlane({ trustDomain: TD });
  });
  afterEach(async () => {
    expect(await isHealthy(t!.cp)).toBe(true);
    const fresh = t!.logs.slice(seenLogs);
    seenLogs = t!.logs.length;
    expect(fresh.filter((l) => l.includes('"internal error"'))).toEqual([]);
  });
  afterAll(async () => {
    await t?.close();
  });
  return { t: () => t! };
}

interface Tls {
  ca: string;
  cert?: string;
  key?: string;
}

function adminTls(t: TestControlPlane): Tls {
  return { ...t.adminTls };
}

function post(t: TestControlPlane, path: string, json: unknown, tls: Tls = adminTls(t)): Promise<RawResponse> {
  return rawJson(t.cp.url, { path, json, ...tls });
}

async function auditRecords(t: TestControlPlane, query = ''): Promise<{ action: string; outcome: string; code: string; actor: string; target: string; detail: Record<string, unknown> }[]> {
  const res = await rawRequest(t.cp.url, { path: `/v1/audit?limit=10000${query}`, ...adminTls(t) });
  expect(res.status).toBe(200);
  return (res.json as { records: never[] }).records;
}

function leafKey(): { privateKey: KeyObject; publicKey: KeyObject; keyPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { privateKey, publicKey, keyPem: privateKey.export({ format: 'pem', type: 'pkcs8' }) as string };
}

// -------------------------------------------------------------------------------------------------

describe('request parsing', () => {
  const { t } = useControlPlane();
  const json = { 'content-type': 'application/json' };
  const cases: { name: string; method?: string; headers?: Record<string, string>; body?: string | Buffer; code: ErrorCode }[] = [
    { name: 'malformed JSON', headers: json, body: '{"spiffe_id": ', code: 'TESSERA_BAD_REQUEST' },
    { name: 'JSON with a trailing comma', headers: json, body: '{"spiffe_id": "x",}', code: 'TESSERA_BAD_REQUEST' },
    { name: 'invalid UTF-8', headers: json, body: Buffer.from([0xff, 0xfe, 0x7b, 0x7d]), code: 'TESSERA_BAD_REQUEST' },
    { name: 'an empty JSON body', headers: json, body: '', code: 'TESSERA_BAD_REQUEST' },
    { name: 'a JSON array', headers: json, body: '[{"spiffe_id":"spiffe://tessera.test/a"}]', code: 'TESSERA_BAD_REQUEST' },
    { name: 'a JSON string', headers: json, body: '"spiffe://tessera.test/a"', code: 'TESSERA_BAD_REQUEST' },
    { name: 'a JSON number', headers: json, body: '42', code: 'TESSERA_BAD_REQUEST' },
    { name: 'JSON null', headers: json, body: 'null', code: 'TESSERA_BAD_REQUEST' },
    { name: 'no body at all', code: 'TESSERA_BAD_REQUEST' },
    { name: 'text/plain', headers: { 'content-type': 'text/plain' }, body: '{}', code: 'TESSERA_UNSUPPORTED_MEDIA_TYPE' },
    { name: 'application/xml', headers: { 'content-type': 'application/xml' }, body: '<entry/>', code: 'TESSERA_UNSUPPORTED_MEDIA_TYPE' },
    { name: 'form encoding', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'spiffe_id=x', code: 'TESSERA_UNSUPPORTED_MEDIA_TYPE' },
    { name: 'a look-alike media type', headers: { 'content-type': 'application/jsonx' }, body: '{}', code: 'TESSERA_UNSUPPORTED_MEDIA_TYPE' },
    { name: 'no content type with a body', body: '{}', code: 'TESSERA_UNSUPPORTED_MEDIA_TYPE' },
    { name: 'an oversized body (> 64 KiB)', headers: json, body: JSON.stringify({ spiffe_id: `spiffe://${TD}/a`, pad: 'x'.repeat(65 * 1024) }), code: 'TESSERA_PAYLOAD_TOO_LARGE' },
    { name: '__proto__ poisoning', headers: json, body: `{"spiffe_id":"spiffe://${TD}/p","__proto__":{"polluted":true}}`, code: 'TESSERA_BAD_REQUEST' },
    { name: 'nested __proto__ poisoning', headers: json, body: `{"spiffe_id":"spiffe://${TD}/p","attributes":{"__proto__":{"polluted":true}}}`, code: 'TESSERA_BAD_REQUEST' },
    { name: 'constructor.prototype poisoning', headers: json, body: `{"spiffe_id":"spiffe://${TD}/p","constructor":{"prototype":{"polluted":true}}}`, code: 'TESSERA_BAD_REQUEST' },
    { name: 'an unknown field', headers: json, body: JSON.stringify({ spiffe_id: `spiffe://${TD}/u`, admin: true }), code: 'TESSERA_BAD_REQUEST' },
    { name: 'an unknown nested field', headers: json, body: JSON.stringify({ spiffe_id: `spiffe://${TD}/u`, attributes: { owner: 'me' } }), code: 'TESSERA_BAD_REQUEST' },
  ];

  for (const path of ['/v1/entries', '/v1/agent/join']) {
    for (const c of cases) {
      it(`POST ${path} with ${c.name} → ${c.code}`, async () => {
        const res = await rawRequest(t().cp.url, { method: c.method ?? 'POST', path, headers: c.headers ?? {}, body: c.body, ...adminTls(t()) });
        expectError(res, c.code);
        expect(({} as Record<string, unknown>).polluted).toBeUndefined();
      });
    }
  }

  it('creates nothing from refused bodies', async () => {
    const res = await rawRequest(t().cp.url, { path: '/v1/entries', ...adminTls(t()) });
    expect(res.status).toBe(200);
    expect((res.json as { entries: unknown[] }).entries).toEqual([]);
  });

  it('unknown routes and methods → 404 TESSERA_NOT_FOUND', async () => {
    for (const [method, path] of [
      ['GET', '/v1/nope'],
      ['POST', '/v1/nope'],
      ['GET', '/'],
      ['GET', '/v2/entries'],
      ['PUT', '/v1/entries'],
      ['PATCH', '/v1/entries/x'],
      ['DELETE', '/v1/entries'],
      ['GET', '/v1/agent/join'],
      ['GET', '/../../etc/passwd'],
    ] as const) {
      const res = await rawRequest(t().cp.url, { method, path, ...adminTls(t()) });
      expectError(res, 'TESSERA_NOT_FOUND');
    }
  });

  it('malformed URLs → 400 TESSERA_BAD_REQUEST, with the standard error shape', async () => {
    for (const path of ['/v1/entries/%zz', '/v1/entries/%E0%A4%A', `/v1/entries/${'a'.repeat(9000)}`]) {
      const res = await rawRequest(t().cp.url, { path, ...adminTls(t()) });
      expectError(res, 'TESSERA_BAD_REQUEST');
    }
  });
  it('a lying content-length is refused with a 400 and a stable code, and the server stays up', async () => {
    const res = await rawRequest(t().cp.url, { path: '/v1/entries', headers: { ...json, 'content-length': '1' }, body: '{"a":1}', ...adminTls(t()) });
    expectError(res, 'TESSERA_BAD_REQUEST');
  });
  it('an oversized request head is refused below HTTP routing with 431 TESSERA_HEADERS_TOO_LARGE', async () => {
    const res = await rawRequest(t().cp.url, { path: '/v1/entries', headers: { 'x-filler': 'a'.repeat(20_000) }, ...adminTls(t()) });
    expectError(res, 'TESSERA_HEADERS_TOO_LARGE');
  });
});

// -------------------------------------------------------------------------------------------------

describe('admin routes: caller authentication', () => {
  const { t } = useControlPlane();
  const routes: [string, string, unknown?][] = [
    ['GET', '/v1/entries'],
    ['POST', '/v1/entries', { spiffe_id: `spiffe://${TD}/intruder` }],
    ['GET', '/v1/entries/spiffe%3A%2F%2Ftessera.test%2Fvictim'],
    ['DELETE', '/v1/entries/spiffe%3A%2F%2Ftessera.test%2Fvictim'],
    ['POST', '/v1/tokens', { entry_id: `spiffe://${TD}/victim` }],
    ['GET', '/v1/ca'],
    ['POST', '/v1/ca/rotate', {}],
    ['GET', '/v1/audit'],
    ['GET', '/v1/audit/checkpoint'],
    ['GET', '/v1/audit/proof/inclusion?id=1'],
    ['GET', '/v1/audit/proof/consistency?from=1&to=2'],
    ['GET', '/v1/admin/policy'],
    ['PUT', '/v1/admin/policy', { policy: 'permit (principal, action, resource);', reason: 'take over' }],
    ['GET', '/v1/admin/policy/history'],
    ['POST', '/v1/admin/policy/rollback', { version: 0, reason: 'take over' }],
  ];
  const creds: Record<string, Tls & { code: ErrorCode; reason?: RegExp }> = {};
  let agent: JoinedAgent;
  let dir: string;

  beforeAll(async () => {
    const cp = t().cp;
    const ca = t().adminTls.ca;
    dir = mkdtempSync(join(tmpdir(), 'tessera-sec-'));
    await t().admin.call('POST', '/v1/entries', { spiffe_id: `spiffe://${TD}/victim` });
    agent = await joinAgent(cp, t().admin, `spiffe://${TD}/svc/agent`);
    const issuer = cp.ctx.ca.active().issuer;
    const now = Date.now();
    const realLeaf = (spec: { uriSans?: string[]; dnsSans?: string[]; notBefore?: number; notAfter?: number }): Tls => {
      const k = leafKey();
      const der = issuer.issueLeaf({
        publicKey: k.publicKey,
        notBefore: new Date(spec.notBefore ?? now - 60_000),
        notAfter: new Date(spec.notAfter ?? now + HOUR),
        ...(spec.uriSans ? { uriSans: spec.uriSans } : {}),
        ...(spec.dnsSans ? { dnsSans: spec.dnsSans } : {}),
      });
      return { ca, cert: pemEncode(der, 'CERTIFICATE'), key: k.keyPem };
    };

    // A CA of our own making that claims the same trust domain, issuing the admin ID.
    const forgedKey = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const forgedCaDer = createSelfSignedCa({
      ...forgedKey,
      commonName: 'Tessera CA forged',
      organization: TD,
      trustDomainUri: `spiffe://${TD}`,
      notBefore: new Date(now - HOUR),
      notAfter: new Date(now + HOUR),
    });
    const forged = new CertificateIssuer({ certDer: forgedCaDer, privateKey: forgedKey.privateKey });
    const fk = leafKey();
    const forgedLeaf = pemEncode(forged.issueLeaf({ publicKey: fk.publicKey, notBefore: new Date(now - 60_000), notAfter: new Date(now + HOUR), uriSans: [ADMIN_ID] }), 'CERTIFICATE');

    // An openssl-made self-signed admin certificate (not a Tessera layout at all).
    const selfKey = join(dir, 'self.key');
    const selfCert = join(dir, 'self.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=admin', '-addext', `subjectAltName=URI:${ADMIN_ID}`, '-days', '1', '-keyout', selfKey, '-out', selfCert], { stdio: 'pipe' });

    Object.assign(creds, {
      'no client certificate': { ca, code: 'TESSERA_AUTH_REQUIRED', reason: /^no client certificate$/ },
      'an agent SVID': { ca, cert: agent.certPem, key: agent.keyPem, code: 'TESSERA_FORBIDDEN' },
      'a forged CA of the same trust domain': { ca, cert: forgedLeaf, key: fk.keyPem, code: 'TESSERA_AUTH_INVALID', reason: /ISSUER|SELF_SIGNED|unable/i },
      'a forged CA chain (leaf + forged root)': { ca, cert: forgedLeaf + pemEncode(forgedCaDer, 'CERTIFICATE'), key: fk.keyPem, code: 'TESSERA_AUTH_INVALID' },
      'a self-signed admin certificate': { ca, cert: readFileSync(selfCert, 'utf8'), key: readFileSync(selfKey, 'utf8'), code: 'TESSERA_AUTH_INVALID' },
      'an expired admin leaf of the real CA': { ...realLeaf({ uriSans: [ADMIN_ID], notBefore: now - 2 * HOUR, notAfter: now - HOUR }), code: 'TESSERA_AUTH_INVALID', reason: /EXPIRED/i },
      'a not-yet-valid admin leaf of the real CA': { ...realLeaf({ uriSans: [ADMIN_ID], notBefore: now + HOUR, notAfter: now + 2 * HOUR }), code: 'TESSERA_AUTH_INVALID', reason: /NOT_YET_VALID/i },
      'an admin leaf of another trust domain': { ...realLeaf({ uriSans: ['spiffe://other.test/tessera/admin'] }), code: 'TESSERA_AUTH_INVALID', reason: /other trust domain/ },
      'a leaf with two URI SANs': { ...realLeaf({ uriSans: [ADMIN_ID, `spiffe://${TD}/svc/agent`] }), code: 'TESSERA_AUTH_INVALID', reason: /more than one URI SAN/ },
      'a leaf without a URI SAN': { ...realLeaf({ dnsSans: ['admin.tessera.test'] }), code: 'TESSERA_AUTH_INVALID' },
      'a leaf whose URI SAN is not a SPIFFE ID': { ...realLeaf({ uriSans: ['https://tessera.test/tessera/admin'] }), code: 'TESSERA_AUTH_INVALID', reason: /not a SPIFFE ID/ },
      'a leaf for a reserved ID other than admin': { ...realLeaf({ uriSans: [`spiffe://${TD}/tessera/server`] }), code: 'TESSERA_FORBIDDEN' },
    } satisfies Record<string, Tls & { code: ErrorCode; reason?: RegExp }>);
  });

  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  const names = [
    'no client certificate',
    'an agent SVID',
    'a forged CA of the same trust domain',
    'a forged CA chain (leaf + forged root)',
    'a self-signed admin certificate',
    'an expired admin leaf of the real CA',
    'a not-yet-valid admin leaf of the real CA',
    'an admin leaf of another trust domain',
    'a leaf with two URI SANs',
    'a leaf without a URI SAN',
    'a leaf whose URI SAN is not a SPIFFE ID',
    'a leaf for a reserved ID other than admin',
  ];

  for (const name of names) {
    it(`refuses ${name} on every admin route`, async () => {
      const c = creds[name]!;
      const { code, reason, ...tls } = c;
      for (const [method, path, body] of routes) {
        const res =
          body === undefined
            ? await rawRequest(t().cp.url, { method, path, ...tls })
            : await rawJson(t().cp.url, { method, path, json: body, ...tls });
        expectError(res, code);
      }
      if (reason) {
        const denied = (await auditRecords(t(), '&outcome=denied')).filter((r) => r.code === code && typeof r.detail.auth_failure === 'string');
        expect(denied.some((r) => reason.test(r.detail.auth_failure as string))).toBe(true);
      }
    });
  }

  it('did not let any refused caller change anything', async () => {
    const entries = await t().admin.call<{ entries: { spiffe_id: string }[] }>('GET', '/v1/entries');
    expect(entries.entries.map((e) => e.spiffe_id).sort()).toEqual([`spiffe://${TD}/svc/agent`, `spiffe://${TD}/victim`]);
    const cas = await t().admin.call<{ authorities: unknown[] }>('GET', '/v1/ca');
    expect(cas.authorities).toHaveLength(1);
    const records = await auditRecords(t());
    for (const action of ['entry.create', 'entry.delete', 'token.create', 'ca.rotate']) {
      expect(records.filter((r) => r.action === action && r.outcome === 'success' && r.actor !== ADMIN_ID)).toEqual([]);
    }
    expect(records.filter((r) => r.action === 'ca.rotate' && r.outcome === 'success')).toEqual([]);
  });

  it('refuses non-admin callers on SVID routes too (no certificate, forged, expired)', async () => {
    for (const name of ['no client certificate', 'a forged CA of the same trust domain', 'an expired admin leaf of the real CA', 'an admin leaf of another trust domain']) {
      const { code, reason: _r, ...tls } = creds[name]!;
      for (const [path, body] of [
        ['/v1/svid/renew', { csr: makeCsrPem().pem }],
        ['/v1/svid/jwt', { audience: 'x' }],
        ['/v1/apikeys', { scopes: ['x'] }],
        ['/v1/apikeys/verify', { api_key: 'x' }],
      ] as const) {
        expectError(await post(t(), path, body, tls), code);
      }
    }
  });
});

// -------------------------------------------------------------------------------------------------

describe('join', () => {
  const { t } = useControlPlane();
  const SVC = `spiffe://${TD}/svc/joiner`;
  let entryId: string;
  const anon = (): Tls => ({ ca: t().adminTls.ca });
  /** Every token and CSR sent in this block: none may come back or reach the audit log. */
  const secrets: string[] = [];
  let dir: string;

  const token = async (ttl_seconds?: number): Promise<string> => {
    const res = await t().admin.call<{ token: string }>('POST', '/v1/tokens', { entry_id: entryId, ...(ttl_seconds ? { ttl_seconds } : {}) });
    secrets.push(res.token);
    return res.token;
  };
  const csr = (uriSan?: string): string => {
    const pem = makeCsrPem(uriSan ? { uriSan } : {}).pem;
    secrets.push(pem);
    return pem;
  };
  const joinWith = async (join_token: unknown, csrPem: unknown): Promise<RawResponse> => {
    const res = await post(t(), '/v1/agent/join', { join_token, csr: csrPem }, anon());
    if (res.status !== 200) expectNoSecrets(res.text);
    return res;
  };
  /** Neither a token nor any 64-character line of a CSR body. */
  const expectNoSecrets = (text: string): void => {
    for (const s of secrets) {
      const fragments = s.startsWith('tjt_') ? [s, s.slice(4)] : s.split('\n').filter((l) => l.length >= 32 && !l.startsWith('-----'));
      for (const f of fragments) expect(text.includes(f), 'secret leaked').toBe(false);
    }
  };

  beforeAll(async () => {
    entryId = (await t().admin.call<{ id: string }>('POST', '/v1/entries', { spiffe_id: SVC })).id;
    dir = mkdtempSync(join(tmpdir(), 'tessera-csr-'));
  });

  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('unknown token → 401 TESSERA_TOKEN_INVALID', async () => {
    const res = await joinWith(`tjt_${randomBytes(32).toString('base64url')}`, csr());
    expectError(res, 'TESSERA_TOKEN_INVALID');
  });

  it('malformed tokens → 401 TESSERA_TOKEN_INVALID', async () => {
    const good = await token();
    for (const bad of ['', 'abc', 'tjt_', `tjt_${'A'.repeat(42)}`, `tjt_${'A'.repeat(44)}`, `${good} `, ` ${good}`, `TJT_${good.slice(4)}`, `${good.slice(0, -1)}!`, `${good}=`, `tjt_${'+'.repeat(43)}`, 42, null, [good], { token: good }, true]) {
      const res = await joinWith(bad, csr());
      expectError(res, 'TESSERA_TOKEN_INVALID');
    }
    const missing = await post(t(), '/v1/agent/join', { csr: csr() }, anon());
    expectError(missing, 'TESSERA_TOKEN_INVALID');
    // None of those burned the real token.
    expect((await joinWith(good, csr())).status).toBe(200);
  });

  it('expired token → 401 TESSERA_TOKEN_INVALID', async () => {
    const tok = await token(1);
    await new Promise((r) => setTimeout(r, 1_100));
    expectError(await joinWith(tok, csr()), 'TESSERA_TOKEN_INVALID');
  });

  it('replayed token → 401 TESSERA_TOKEN_INVALID', async () => {
    const tok = await token();
    const first = await joinWith(tok, csr());
    expect(first.status).toBe(200);
    expectError(await joinWith(tok, csr()), 'TESSERA_TOKEN_INVALID');
    expectError(await joinWith(tok, csr(SVC)), 'TESSERA_TOKEN_INVALID');
  });

  it('concurrent use of one token: exactly one join succeeds', async () => {
    const tok = await token();
    const results = await Promise.all(Array.from({ length: 8 }, () => joinWith(tok, csr())));
    expect(results.filter((r) => r.status === 200)).toHaveLength(1);
    for (const r of results.filter((x) => x.status !== 200)) expectError(r, 'TESSERA_TOKEN_INVALID');
  });

  it('a CSR asking for another SPIFFE ID → 403 TESSERA_CSR_IDENTITY_MISMATCH, and the token is spent', async () => {
    const tok = await token();
    for (const other of [`spiffe://${TD}/tessera/admin`]) {
      expectError(await joinWith(tok, csr(other)), 'TESSERA_CSR_IDENTITY_MISMATCH');
    }
    expectError(await joinWith(tok, csr(SVC)), 'TESSERA_TOKEN_INVALID');
    expectError(await joinWith(tok, csr()), 'TESSERA_TOKEN_INVALID');

    const tok2 = await token();
    expectError(await joinWith(tok2, csr(`spiffe://other.test/svc/joiner`)), 'TESSERA_CSR_IDENTITY_MISMATCH');
    expectError(await joinWith(tok2, csr()), 'TESSERA_TOKEN_INVALID');
  });

  it('a token for a deleted entry → 401 TESSERA_TOKEN_INVALID', async () => {
    const gone = await t().admin.call<{ id: string }>('POST', '/v1/entries', { spiffe_id: `spiffe://${TD}/svc/gone` });
    const { token: tok } = await t().admin.call<{ token: string }>('POST', '/v1/tokens', { entry_id: gone.id });
    secrets.push(tok);
    await t().admin.call('DELETE', `/v1/entries/${gone.id}`);
    expectError(await joinWith(tok, csr()), 'TESSERA_TOKEN_INVALID');
  });

  it('bad CSRs → 400 with the CSR code, without burning the token', async () => {
    const tok = await token();
    const opensslCsr = (args: string[]): string => {
      const keyPath = join(dir, `k${secrets.length}.pem`);
      const pem = execFileSync('openssl', ['req', '-new', ...args, '-nodes', '-subj', '/CN=joiner', '-keyout', keyPath], { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
      secrets.push(pem);
      return pem;
    };
    const rsa = opensslCsr(['-newkey', 'rsa:2048']);
    const p384 = opensslCsr(['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-384']);
    const p256openssl = opensslCsr(['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256']);
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const der = createCsr({ privateKey, publicKey, uriSan: SVC });
    const flipped = Buffer.from(der);
    flipped[flipped.length - 1]! ^= 0x01;
    const flippedPem = pemEncode(flipped, 'CERTIFICATE REQUEST');
    const truncated = pemEncode(der.subarray(0, der.length - 10), 'CERTIFICATE REQUEST');
    const trailing = pemEncode(Buffer.concat([der, Buffer.from([0])]), 'CERTIFICATE REQUEST');
    const good = csr();
    const twoBlocks = good + good;
    const wrongLabel = good.replaceAll('CERTIFICATE REQUEST', 'CERTIFICATE');
    secrets.push(flippedPem, truncated, trailing);

    const cases: [string, unknown, ErrorCode][] = [
      ['garbage text', 'this is not a CSR', 'TESSERA_CSR_INVALID'],
      ['garbage PEM body', '-----BEGIN CERTIFICATE REQUEST-----\n!!!notbase64!!!\n-----END CERTIFICATE REQUEST-----\n', 'TESSERA_CSR_INVALID'],
      ['random DER', pemEncode(randomBytes(200), 'CERTIFICATE REQUEST'), 'TESSERA_CSR_INVALID'],
      ['unterminated PEM', good.split('-----END')[0], 'TESSERA_CSR_INVALID'],
      ['truncated DER', truncated, 'TESSERA_CSR_INVALID'],
      ['trailing bytes', trailing, 'TESSERA_CSR_INVALID'],
      ['two PEM blocks', twoBlocks, 'TESSERA_CSR_INVALID'],
      ['a CERTIFICATE label', wrongLabel, 'TESSERA_CSR_INVALID'],
      ['a private key', privateKey.export({ format: 'pem', type: 'pkcs8' }), 'TESSERA_CSR_INVALID'],
      ['an RSA key (openssl)', rsa, 'TESSERA_CSR_KEY_UNSUPPORTED'],
      ['a P-384 key (openssl)', p384, 'TESSERA_CSR_KEY_UNSUPPORTED'],
      ['a flipped signature bit', flippedPem, 'TESSERA_CSR_SIGNATURE_INVALID'],
      ['an oversized CSR field', `${good}${' '.repeat(17 * 1024)}`, 'TESSERA_BAD_REQUEST'],
      ['a number', 42, 'TESSERA_BAD_REQUEST'],
      ['an empty string', '', 'TESSERA_BAD_REQUEST'],
      ['null', null, 'TESSERA_BAD_REQUEST'],
    ];
    for (const [name, bad, code] of cases) {
      const res = await joinWith(tok, bad);
      expect(`${name}: ${res.status} ${errorCode(res)}`).toBe(`${name}: ${ERROR_CODES[code].status} ${code}`);
      expectError(res, code);
    }
    // A missing CSR is refused too.
    expectError(await post(t(), '/v1/agent/join', { join_token: tok }, anon()), 'TESSERA_BAD_REQUEST');

    // The token survived all of it, and openssl's own P-256 CSR is accepted.
    const ok = await joinWith(tok, p256openssl);
    expect(ok.status).toBe(200);
    expect((ok.json as { spiffe_id: string }).spiffe_id).toBe(SVC);
  });

  it('no response body and no audit record contains a token or CSR', async () => {
    const records = await auditRecords(t(), '&action=svid.join');
    expect(records.length).toBeGreaterThan(20);
    expectNoSecrets(JSON.stringify(records));
    expectNoSecrets(JSON.stringify(await auditRecords(t())));
    // The refusals are recorded as denied, with the code and a reason but no secret.
    const denied = records.filter((r) => r.outcome === 'denied');
    const reasons = new Set(denied.filter((r) => r.code === 'TESSERA_TOKEN_INVALID').map((r) => r.detail.reason));
    // (Deleting an entry deletes its unused tokens, so that one reads as "unknown".)
    expect([...reasons].sort()).toEqual(['expired', 'malformed', 'unknown', 'used']);
    for (const code of ['TESSERA_CSR_IDENTITY_MISMATCH', 'TESSERA_CSR_INVALID', 'TESSERA_CSR_KEY_UNSUPPORTED', 'TESSERA_CSR_SIGNATURE_INVALID', 'TESSERA_BAD_REQUEST']) {
      expect(denied.some((r) => r.code === code), code).toBe(true);
    }
    const mismatch = denied.find((r) => r.code === 'TESSERA_CSR_IDENTITY_MISMATCH')!;
    expect(mismatch.target).toBe(SVC);
    expect(mismatch.detail.token_ref).toMatch(/^[0-9a-f]{12}$/);
  });
});

// -------------------------------------------------------------------------------------------------

describe('renewal, JWT-SVIDs and API keys', () => {
  const { t } = useControlPlane();
  let agent: JoinedAgent;
  let tls: Tls;

  beforeAll(async () => {
    agent = await joinAgent(t().cp, t().admin, `spiffe://${TD}/svc/renewer`);
    tls = { ca: t().adminTls.ca, cert: agent.certPem, key: agent.keyPem };
    await applyPolicy(t().admin);
  });

  it('renew with a CSR naming another identity → 403 TESSERA_CSR_IDENTITY_MISMATCH', async () => {
    for (const other of [ADMIN_ID, `spiffe://${TD}/svc/other`, `spiffe://other.test/svc/renewer`]) {
      expectError(await post(t(), '/v1/svid/renew', { csr: makeCsrPem({ uriSan: other }).pem }, tls), 'TESSERA_CSR_IDENTITY_MISMATCH');
    }
  });

  it('renew with bad bodies → 400', async () => {
    expectError(await post(t(), '/v1/svid/renew', {}, tls), 'TESSERA_BAD_REQUEST');
    expectError(await post(t(), '/v1/svid/renew', { csr: 'nope' }, tls), 'TESSERA_CSR_INVALID');
    expectError(await post(t(), '/v1/svid/renew', { csr: makeCsrPem().pem, spiffe_id: ADMIN_ID }, tls), 'TESSERA_BAD_REQUEST');
  });

  it('the admin credential cannot renew or mint (it has no entry) → 403', async () => {
    expectError(await post(t(), '/v1/svid/renew', { csr: makeCsrPem().pem }), 'TESSERA_IDENTITY_REVOKED');
    expectError(await post(t(), '/v1/svid/renew', { csr: makeCsrPem({ uriSan: ADMIN_ID }).pem }), 'TESSERA_IDENTITY_REVOKED');
    expectError(await post(t(), '/v1/svid/jwt', { audience: 'x' }), 'TESSERA_IDENTITY_REVOKED');
    expectError(await post(t(), '/v1/apikeys', { scopes: ['x'] }), 'TESSERA_IDENTITY_REVOKED');
  });

  it('JWT mint with missing, empty or oversized audience → 400 TESSERA_BAD_REQUEST', async () => {
    const bad: unknown[] = [
      {},
      { audience: '' },
      { audience: [] },
      { audience: [''] },
      { audience: null },
      { audience: 42 },
      { audience: [42] },
      { audience: { a: 1 } },
      { audience: 'a'.repeat(257) },
      { audience: ['ok', 'a'.repeat(257)] },
      { audience: Array.from({ length: 17 }, (_, i) => `aud${i}`) },
      { audience: 'has space' },
      { audience: 'tab\there' },
      { audience: 'naïve' },
      { audience: 'x', ttl_seconds: 0 },
      { audience: 'x', ttl_seconds: 1.5 },
      { audience: 'x', ttl_seconds: '60' },
      { audience: 'x', ttl_seconds: 86401 },
      { audience: 'x', sub: ADMIN_ID },
    ];
    for (const b of bad) {
      const res = await post(t(), '/v1/svid/jwt', b, tls);
      expect(`${JSON.stringify(b).slice(0, 60)} → ${res.status} ${errorCode(res)}`).toBe(`${JSON.stringify(b).slice(0, 60)} → 400 TESSERA_BAD_REQUEST`);
      expectError(res, 'TESSERA_BAD_REQUEST');
    }
    // The limits themselves are fine.
    const ok = await post(t(), '/v1/svid/jwt', { audience: Array.from({ length: 16 }, (_, i) => `${'a'.repeat(250)}${i}`) }, tls);
    expect(ok.status).toBe(200);
  });

  it('API keys: bad bodies → 400, bad keys → 401 TESSERA_APIKEY_INVALID', async () => {
    for (const b of [{}, { scopes: [] }, { scopes: ['UPPER'] }, { scopes: ['x'], ttl_seconds: 59 }, { scopes: ['x'], owner: ADMIN_ID }]) {
      expectError(await post(t(), '/v1/apikeys', b, tls), 'TESSERA_BAD_REQUEST');
    }
    for (const b of [{}, { api_key: '' }, { api_key: 'x'.repeat(129) }, { api_key: 'tak_x', scope: 'BAD SCOPE' }]) {
      expectError(await post(t(), '/v1/apikeys/verify', b, tls), 'TESSERA_BAD_REQUEST');
    }
    for (const api_key of ['tak_', `tak_0123456789abcdef_${'A'.repeat(43)}`, `tak_0123456789ABCDEF_${'A'.repeat(43)}`, 'Bearer x']) {
      expectError(await post(t(), '/v1/apikeys/verify', { api_key }, tls), 'TESSERA_APIKEY_INVALID');
    }
  });

  it('renew, mint and API key creation after the entry was deleted → 403 TESSERA_IDENTITY_REVOKED', async () => {
    const doomed = await joinAgent(t().cp, t().admin, `spiffe://${TD}/svc/doomed`);
    const dtls = { ca: t().adminTls.ca, cert: doomed.certPem, key: doomed.keyPem };
    expect((await post(t(), '/v1/svid/renew', { csr: makeCsrPem().pem }, dtls)).status).toBe(200);
    await t().admin.call('DELETE', `/v1/entries/${doomed.entryId}`);
    expectError(await post(t(), '/v1/svid/renew', { csr: makeCsrPem().pem }, dtls), 'TESSERA_IDENTITY_REVOKED');
    expectError(await post(t(), '/v1/svid/renew', { csr: makeCsrPem({ uriSan: doomed.spiffeId }).pem }, dtls), 'TESSERA_IDENTITY_REVOKED');
    expectError(await post(t(), '/v1/svid/jwt', { audience: 'x' }, dtls), 'TESSERA_IDENTITY_REVOKED');
    expectError(await post(t(), '/v1/apikeys', { scopes: ['x'] }, dtls), 'TESSERA_IDENTITY_REVOKED');
    const records = await auditRecords(t(), '&action=svid.renew&outcome=denied');
    expect(records.some((r) => r.actor === doomed.spiffeId && r.code === 'TESSERA_IDENTITY_REVOKED' && r.detail.identity === 'unknown')).toBe(true);
  });
});

// -------------------------------------------------------------------------------------------------

describe('registry and audit input validation', () => {
  const { t } = useControlPlane();

  const create = (b: unknown): Promise<RawResponse> => post(t(), '/v1/entries', b);

  it('invalid SPIFFE IDs → 400 TESSERA_SPIFFE_ID_INVALID', async () => {
    for (const id of [
      'not-a-spiffe-id',
      'spiffe://',
      'spiffe:///x',
      'SPIFFE://tessera.test/x',
      'spiffe://TESSERA.test/x',
      'spiffe://tessera.test/a/../b',
      'spiffe://tessera.test/a//b',
      'spiffe://tessera.test/x/',
      'spiffe://tessera.test/x?q=1',
      'spiffe://tessera.test/x#f',
      'spiffe://tessera.test/%41',
      'spiffe://user@tessera.test/x',
      'spiffe://tessera.test:443/x',
      'https://tessera.test/x',
      'spiffe://tessera.test/ä',
      `spiffe://tessera.test/${'a/'.repeat(1012)}/`,
    ]) {
      const res = await create({ spiffe_id: id });
      expect(`${id.slice(0, 40)} → ${errorCode(res)}`).toBe(`${id.slice(0, 40)} → TESSERA_SPIFFE_ID_INVALID`);
      expectError(res, 'TESSERA_SPIFFE_ID_INVALID');
    }
    for (const id of [123, null, true, [], ['spiffe://tessera.test/x'], {}, '', `spiffe://tessera.test/${'a'.repeat(2048)}`]) {
      expectError(await create({ spiffe_id: id }), 'TESSERA_BAD_REQUEST');
    }
    expectError(await create({}), 'TESSERA_BAD_REQUEST');
  });

  it('another trust domain → 400 TESSERA_SPIFFE_ID_INVALID', async () => {
    for (const id of ['spiffe://other.test/x', 'spiffe://tessera.test.evil/x', 'spiffe://test/x', 'spiffe://tessera.tes/x']) {
      expectError(await create({ spiffe_id: id }), 'TESSERA_SPIFFE_ID_INVALID');
    }
  });

  it('the trust-domain ID → 400 TESSERA_SPIFFE_ID_INVALID saying that the ID needs a path (not that it is reserved)', async () => {
    const res = await create({ spiffe_id: `spiffe://${TD}` });
    expectError(res, 'TESSERA_SPIFFE_ID_INVALID');
    expect((res.json as { error: { message: string } }).error.message).toMatch(/needs a path/);
  });

  it('reserved IDs → 400 TESSERA_SPIFFE_ID_RESERVED', async () => {
    for (const id of [`spiffe://${TD}/tessera`, ADMIN_ID, `spiffe://${TD}/tessera/server`, `spiffe://${TD}/tessera/a/b`]) {
      expectError(await create({ spiffe_id: id }), 'TESSERA_SPIFFE_ID_RESERVED');
    }
    // Only the exact segment is reserved.
    expect((await create({ spiffe_id: `spiffe://${TD}/tesseract` })).status).toBe(201);
  });

  it('duplicate → 409 TESSERA_CONFLICT', async () => {
    const id = `spiffe://${TD}/dup`;
    expect((await create({ spiffe_id: id })).status).toBe(201);
    expectError(await create({ spiffe_id: id }), 'TESSERA_CONFLICT');
    expectError(await create({ spiffe_id: id, selectors: ['k8s:ns:other'] }), 'TESSERA_CONFLICT');
  });

  it('bad attributes, selectors and TTLs → 400 TESSERA_BAD_REQUEST', async () => {
    let n = 0;
    const base = (): Record<string, unknown> => ({ spiffe_id: `spiffe://${TD}/bad/${n++}` });
    const bad: Record<string, unknown>[] = [
      { attributes: 'app=web' },
      { attributes: ['web'] },
      { attributes: null },
      { attributes: { owner: 'me' } },
      { attributes: { app: '' } },
      { attributes: { app: 'has space' } },
      { attributes: { app: 'x'.repeat(129) } },
      { attributes: { app: 42 } },
      { attributes: { app: ['web'] } },
      { attributes: { env: 'prod\n' } },
      { selectors: 'nocolon' },
      { selectors: [''] },
      { selectors: ['UPPER:x'] },
      { selectors: ['k8s:'] },
      { selectors: [':x'] },
      { selectors: ['k8s:has space'] },
      { selectors: [42] },
      { selectors: { k8s: 'ns' } },
      { selectors: null },
      { selectors: Array.from({ length: 33 }, (_, i) => `k8s:n${i}`) },
      { selectors: [`k8s:${'x'.repeat(253)}`] },
      { x509_ttl_seconds: 9 },
      { x509_ttl_seconds: 0 },
      { x509_ttl_seconds: -1 },
      { x509_ttl_seconds: 30 * 86400 + 1 },
      { x509_ttl_seconds: 600.5 },
      { x509_ttl_seconds: '600' },
      { x509_ttl_seconds: null },
      { x509_ttl_seconds: 1e308 },
      { jwt_ttl_seconds: 9 },
      { jwt_ttl_seconds: 86401 },
      { jwt_ttl_seconds: true },
    ];
    for (const b of bad) {
      const res = await create({ ...base(), ...b });
      expect(`${JSON.stringify(b).slice(0, 60)} → ${res.status} ${errorCode(res)}`).toBe(`${JSON.stringify(b).slice(0, 60)} → 400 TESSERA_BAD_REQUEST`);
      expectError(res, 'TESSERA_BAD_REQUEST');
    }
    const res = await rawRequest(t().cp.url, { path: '/v1/entries', ...adminTls(t()) });
    expect((res.json as { entries: { spiffe_id: string }[] }).entries.filter((e) => e.spiffe_id.includes('/bad/'))).toEqual([]);
  });

  it('tokens: unknown entry → 404 TESSERA_ENTRY_NOT_FOUND, bad fields → 400', async () => {
    for (const entry_id of ['00000000-0000-0000-0000-000000000000', `spiffe://${TD}/nobody`, 'x'.repeat(100)]) {
      expectError(await post(t(), '/v1/tokens', { entry_id }), 'TESSERA_ENTRY_NOT_FOUND');
    }
    const e = await t().admin.call<{ id: string }>('POST', '/v1/entries', { spiffe_id: `spiffe://${TD}/tok` });
    for (const b of [{}, { entry_id: 42 }, { entry_id: '' }, { entry_id: e.id, ttl_seconds: 0 }, { entry_id: e.id, ttl_seconds: 86401 }, { entry_id: e.id, ttl_seconds: '60' }, { entry_id: e.id, token: 'tjt_x' }]) {
      expectError(await post(t(), '/v1/tokens', b), 'TESSERA_BAD_REQUEST');
    }
  });

  it('entry show/delete of unknown entries → 404 TESSERA_ENTRY_NOT_FOUND', async () => {
    for (const id of ['00000000-0000-0000-0000-000000000000', encodeURIComponent(`spiffe://${TD}/nobody`), 'x'.repeat(3000), encodeURIComponent("' OR 1=1 --")]) {
      for (const method of ['GET', 'DELETE']) {
        expectError(await rawRequest(t().cp.url, { method, path: `/v1/entries/${id}`, ...adminTls(t()) }), 'TESSERA_ENTRY_NOT_FOUND');
      }
    }
  });

  it('CA rotation with bad bodies → 400', async () => {
    for (const b of [{ grace_seconds: -1 }, { grace_seconds: 30 * 86400 + 1 }, { grace_seconds: '60' }, { force: true }, []]) {
      expectError(await post(t(), '/v1/ca/rotate', b), 'TESSERA_BAD_REQUEST');
    }
  });

  it('audit query with a bad limit (or other bad parameters) → 400 TESSERA_BAD_REQUEST', async () => {
    for (const q of [
      'limit=0',
      'limit=-1',
      'limit=abc',
      'limit=1.5',
      'limit=',
      'limit=10001',
      'limit=1e3',
      'limit=0x10',
      'limit=99999999999999999999',
      'limit=1&limit=2',
      'after=-1',
      'after=x',
      'action=BAD!',
      `action=${'a'.repeat(65)}`,
      'outcome=maybe',
    ]) {
      const res = await rawRequest(t().cp.url, { path: `/v1/audit?${q}`, ...adminTls(t()) });
      expect(`${q} → ${res.status} ${errorCode(res)}`).toBe(`${q} → 400 TESSERA_BAD_REQUEST`);
      expectError(res, 'TESSERA_BAD_REQUEST');
    }
    const ok = await rawRequest(t().cp.url, { path: '/v1/audit?limit=10000&after=0&action=entry.create&outcome=denied', ...adminTls(t()) });
    expect(ok.status).toBe(200);
  });

  it('bundle endpoints with bad query parameters → 400', async () => {
    for (const path of ['/v1/bundle?format=der', '/v1/bundle/watch?after=-1', '/v1/bundle/watch?timeout_seconds=61', '/v1/bundle/watch?timeout_seconds=x']) {
      expectError(await rawRequest(t().cp.url, { path, ca: t().adminTls.ca }), 'TESSERA_BAD_REQUEST');
    }
  });

  it('property: arbitrary strings as spiffe_id never produce a 5xx', async () => {
    const created: string[] = [];
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.string({ unit: 'binary', maxLength: 80 }),
          fc.string({ maxLength: 40 }).map((s) => `spiffe://${TD}/${s}`),
          fc.string({ maxLength: 40 }).map((s) => `spiffe://${s}`),
          fc.stringMatching(/^[a-zA-Z0-9._\-/]{0,40}$/).map((s) => `spiffe://${TD}/${s}`),
        ),
        async (id) => {
          const res = await create({ spiffe_id: id });
          expectNo5xx(res);
          if (res.status === 201) {
            expect(isSpiffeId(id)).toBe(true);
            created.push(id);
          } else {
            expect(['TESSERA_SPIFFE_ID_INVALID', 'TESSERA_SPIFFE_ID_RESERVED', 'TESSERA_BAD_REQUEST', 'TESSERA_CONFLICT']).toContain(errorCode(res));
            if (errorCode(res) !== 'TESSERA_CONFLICT' && errorCode(res) !== 'TESSERA_SPIFFE_ID_RESERVED' && id.length <= 2048) {
              expect(isSpiffeId(id) && id.startsWith(`spiffe://${TD}/`)).toBe(false);
            }
          }
        },
      ),
      { numRuns: 100 },
    );
    expect(created.every((id) => id.startsWith(`spiffe://${TD}/`))).toBe(true);
  });
});

// -------------------------------------------------------------------------------------------------

describe('property: random JSON bodies never yield a 5xx', () => {
  const { t } = useControlPlane();
  let agentTls: Tls;

  beforeAll(async () => {
    const agent = await joinAgent(t().cp, t().admin, `spiffe://${TD}/svc/fuzz`);
    agentTls = { ca: t().adminTls.ca, cert: agent.certPem, key: agent.keyPem };
  });

  // Random JSON, and objects built from the endpoints' own field names with random values.
  const fields = ['spiffe_id', 'selectors', 'attributes', 'x509_ttl_seconds', 'jwt_ttl_seconds', 'entry_id', 'ttl_seconds', 'join_token', 'csr', 'audience'];
  const body = fc.oneof(
    fc.jsonValue({ maxDepth: 3 }),
    fc.dictionary(fc.constantFrom(...fields, '__proto__', 'constructor'), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 4 }),
  );

  for (const [path, who] of [
    ['/v1/entries', 'admin'],
    ['/v1/tokens', 'admin'],
    ['/v1/agent/join', 'anonymous'],
    ['/v1/svid/jwt', 'agent'],
  ] as const) {
    it(`POST ${path} (${who})`, async () => {
      const tls = (): Tls => (who === 'admin' ? adminTls(t()) : who === 'agent' ? agentTls : { ca: t().adminTls.ca });
      await fc.assert(
        fc.asyncProperty(body, async (b) => {
          expectNo5xx(await post(t(), path, b, tls()));
        }),
        { numRuns: 100 },
      );
    });
  }
});
