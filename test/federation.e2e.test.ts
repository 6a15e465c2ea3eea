/**
 * Federation between two real control planes (two trust domains, real TLS on 127.0.0.1, real SQLite):
 * the bundle endpoints (https_spiffe on the API listener, https_web on its own listener with a
 * certificate from a Web PKI-style test CA), `federation add/list/show/remove` over the admin API and
 * the CLI, refresh on the hint (a CA rotation on one side reaches the other without a restart), and the
 * refusals: bad trust domain, bad URL, wrong profile, wrong endpoint ID, a bundle of another trust
 * domain, a sequence going backwards, garbage and oversized answers (the last good bundle stays).
 *
 * SPIFFE_Federation.md / SPIFFE_Trust_Domain_and_Bundle.md MUSTs checked here, one test each:
 * - the bundle endpoint serves the bundle as a JWK Set with `spiffe_sequence` and keys with their `use`;
 * - https_web: the endpoint is authenticated with Web PKI (an untrusted certificate is refused);
 * - https_spiffe: the client MUST check the endpoint's SPIFFE ID against the configured one;
 * - bundles are kept per trust domain and never merged;
 * - a bundle update with a lower sequence is refused (the last good one stays).
 */
import { generateKeyPairSync } from 'node:crypto';
import { createServer, get as httpsGet, type Server } from 'node:https';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseJwksBundle } from '../src/core/bundle.js';
import type { FederationListResponse, FederationResponse } from '../src/core/wire/federation.js';
import { CertificateIssuer, createSelfSignedCa, pemEncode } from '../src/core/x509.js';
import { Fabric } from './support/fabric.js';
import { runTessera, waitFor } from './support/process.js';
import { rejectionCode } from './support/server.js';

const A = 'alpha.test';
const B = 'beta.test';
const FAST = { federation: { minRefreshSeconds: 1, maxRefreshSeconds: 2, refreshHintSeconds: 1 } };

/** A Web PKI-style CA (no SPIFFE ID) and a server certificate for 127.0.0.1 from it. */
function webPki(): { caPem: string; certPem: string; keyPem: string } {
  const ca = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const now = Date.now();
  const caDer = createSelfSignedCa({ privateKey: ca.privateKey, publicKey: ca.publicKey, commonName: 'test web root', notBefore: new Date(now - 60_000), notAfter: new Date(now + 3600_000) });
  const leaf = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const der = new CertificateIssuer({ certDer: caDer, privateKey: ca.privateKey }).issueLeaf({
    publicKey: leaf.publicKey, uriSans: [], ipSans: ['127.0.0.1'], dnsSans: ['localhost'], notBefore: new Date(now - 60_000), notAfter: new Date(now + 3600_000),
  });
  return { caPem: pemEncode(caDer, 'CERTIFICATE'), certPem: pemEncode(der, 'CERTIFICATE'), keyPem: leaf.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string };
}

/** An https server with the web certificate answering whatever `body()` says (a hostile or broken endpoint). */
async function fakeEndpoint(web: { certPem: string; keyPem: string }, body: () => string): Promise<{ url: string; server: Server }> {
  const server = createServer({ cert: web.certPem, key: web.keyPem }, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(body());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `https://127.0.0.1:${(server.address() as AddressInfo).port}/`, server };
}

function getText(url: string, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    httpsGet(url, { ca, agent: false }, (res) => {
      let t = '';
      res.on('data', (c: Buffer) => { t += c.toString(); });
      res.on('end', () => (res.statusCode === 200 ? resolve(t) : reject(new Error(String(res.statusCode)))));
    }).on('error', reject);
  });
}

let a: Fabric;
let b: Fabric;
let web: ReturnType<typeof webPki>;
let dir: string;
const servers: Server[] = [];

beforeAll(async () => {
  web = webPki();
  dir = mkdtempSync(join(tmpdir(), 'tessera-fed-'));
  a = await Fabric.start({ name: 'fed-a', server: { trustDomain: A, ...FAST } });
  b = await Fabric.start({ name: 'fed-b', server: { trustDomain: B, ...FAST, bundleEndpoint: { host: '127.0.0.1', port: 0, certPem: web.certPem, keyPem: web.keyPem } } });
}, 30_000);

afterAll(async () => {
  for (const s of servers) s.close();
  await a?.close();
  await b?.close();
  rmSync(dir, { recursive: true, force: true });
});

const bundleOf = async (f: Fabric): Promise<string> => JSON.stringify(await f.admin.call('GET', '/v1/bundle'));

describe('bundle endpoints', () => {
  it('serve the SPIFFE bundle: JWK Set with spiffe_sequence, spiffe_refresh_hint and keys with their use', async () => {
    const jwks = JSON.parse(await bundleOf(b)) as { keys: { use: string }[]; spiffe_sequence: number; spiffe_refresh_hint: number };
    expect(jwks.spiffe_sequence).toBeGreaterThan(0);
    expect(jwks.spiffe_refresh_hint).toBe(1);
    expect(new Set(jwks.keys.map((k) => k.use))).toEqual(new Set(['x509-svid', 'jwt-svid']));
    // The https_web listener serves the same document, checked like any web server.
    const served = await getText(`https://127.0.0.1:${b.cp.bundleEndpoint!.port}/`, web.caPem);
    expect(JSON.parse(served)).toEqual(jwks);
    expect(parseJwksBundle(served, B).sequence).toBe(jwks.spiffe_sequence);
    // Nothing else is served there.
    await expect(getText(`https://127.0.0.1:${b.cp.bundleEndpoint!.port}/v1/entries`, web.caPem)).rejects.toThrow('404');
  });
});

describe('federation add, show, list, remove', () => {
  it('https_web: trusts the endpoint only through the CA file given, and keeps the bundle per trust domain', async () => {
    const endpoint = `https://127.0.0.1:${b.cp.bundleEndpoint!.port}/`;
    // Without the CA file the endpoint's certificate is not trusted: nothing is added.
    expect(await rejectionCode(a.admin.call('POST', '/v1/federation', { trust_domain: B, endpoint, profile: 'https_web' }))).toBe('TESSERA_FEDERATION_FETCH_FAILED');
    const res = await a.admin.call<FederationResponse>('POST', '/v1/federation', { trust_domain: B, endpoint, profile: 'https_web', ca_pem: web.caPem });
    expect(res.federation).toMatchObject({ trust_domain: B, profile: 'https_web', custom_ca: true, x509_authorities: 1, jwt_authorities: 1 });
    // Never merged: A's own bundle is unchanged, B's is held on its own.
    const own = parseJwksBundle(await bundleOf(a), A);
    const held = await a.admin.call<FederationResponse>('GET', `/v1/federation/${B}`);
    const theirs = parseJwksBundle(held.bundle, B);
    expect(own.x509Authorities.some((d) => theirs.x509Authorities.some((t) => t.equals(d)))).toBe(false);
    expect(own.x509Authorities).toHaveLength(1);
    expect(await rejectionCode(a.admin.call('POST', '/v1/federation', { trust_domain: B, endpoint, profile: 'https_web', ca_pem: web.caPem }))).toBe('TESSERA_CONFLICT');
    await a.admin.call('POST', `/v1/federation/${B}/remove`, {});
    expect(await rejectionCode(a.admin.call('GET', `/v1/federation/${B}`))).toBe('TESSERA_FEDERATION_NOT_FOUND');
  });

  it('https_spiffe: checks the endpoint SPIFFE ID, refreshes on the hint (a CA rotation arrives), keeps the last good bundle when the endpoint fails', async () => {
    const bundleFile = join(dir, 'b-bundle.json');
    writeFileSync(bundleFile, await bundleOf(b));
    // The wrong endpoint ID is refused (SPIFFE_Federation.md §5.2.2: the client MUST check it).
    expect(await rejectionCode(a.admin.call('POST', '/v1/federation', { trust_domain: B, endpoint: `${b.url}/v1/bundle`, profile: 'https_spiffe', endpoint_id: `spiffe://${B}/not/the/server`, bundle: await bundleOf(b) })))
      .toBe('TESSERA_FEDERATION_FETCH_FAILED');
    // Nothing was added by the refused request: add properly, through the CLI.
    expect(await rejectionCode(a.admin.call('GET', `/v1/federation/${B}`))).toBe('TESSERA_FEDERATION_NOT_FOUND');
    const cli = await runTessera(['--json', 'federation', 'add', B, '--endpoint', `${b.url}/v1/bundle`, '--profile', 'https_spiffe', '--endpoint-id', `spiffe://${B}/tessera/server`, '--bundle', bundleFile],
      { env: { TESSERA_ADMIN_DIR: a.cp.adminDir }, timeoutMs: 20_000 });
    expect(cli.stderr).toBe('');
    expect(cli.status).toBe(0);
    const added = JSON.parse(cli.stdout) as FederationResponse;
    expect(added.federation).toMatchObject({ trust_domain: B, profile: 'https_spiffe', endpoint_id: `spiffe://${B}/tessera/server` });
    expect(added.federation.last_error).toBeUndefined();
    const before = added.federation.sequence!;

    // B rotates its CA: the new authority reaches A at the next refresh, without any restart.
    await b.admin.call('POST', '/v1/ca/rotate', { grace_seconds: 60 });
    const after = await waitFor('the rotated bundle at A', async () => {
      const s = await a.admin.call<FederationResponse>('GET', `/v1/federation/${B}`);
      return (s.federation.sequence ?? 0) > before && s;
    }, 10_000, 200);
    expect(after.federation.x509_authorities).toBe(2);

    // B stops: A keeps the last good bundle and records the error.
    const list = await runTessera(['--json', 'federation', 'list'], { env: { TESSERA_ADMIN_DIR: a.cp.adminDir } });
    expect((JSON.parse(list.stdout) as FederationListResponse).federations.map((f) => f.trust_domain)).toEqual([B]);
    await b.stopControlPlane();
    try {
      const failed = await waitFor('a failed refresh', async () => {
        const s = await a.admin.call<FederationResponse>('GET', `/v1/federation/${B}`);
        return s.federation.last_error !== undefined && s;
      }, 10_000, 200);
      expect(failed.federation.sequence).toBe(after.federation.sequence);
      expect(failed.bundle).toEqual(after.bundle);
    } finally {
      await b.startControlPlane();
    }
    const removed = await runTessera(['federation', 'remove', B], { env: { TESSERA_ADMIN_DIR: a.cp.adminDir } });
    expect(removed.stdout).toContain(`removed federation with ${B}`);
    expect(removed.status).toBe(0);
  }, 30_000);
});

describe('refusals', () => {
  it('the CLI and the API refuse a bad trust domain, URL, profile or endpoint ID with stable codes', async () => {
    const env = { TESSERA_ADMIN_DIR: a.cp.adminDir };
    const cases: [string[], string][] = [
      [['federation', 'add', 'Not A Domain', '--endpoint', 'https://127.0.0.1:1/', '--profile', 'https_web'], 'TESSERA_FEDERATION_INVALID'],
      [['federation', 'add', A, '--endpoint', 'https://127.0.0.1:1/', '--profile', 'https_web'], 'TESSERA_FEDERATION_INVALID'],
      [['federation', 'add', B, '--endpoint', 'http://127.0.0.1:1/', '--profile', 'https_web'], 'TESSERA_FEDERATION_INVALID'],
      [['federation', 'add', B, '--endpoint', 'not a url', '--profile', 'https_web'], 'TESSERA_FEDERATION_INVALID'],
      [['federation', 'add', B, '--endpoint', 'https://127.0.0.1:1/', '--profile', 'https_nope'], 'TESSERA_FEDERATION_INVALID'],
      [['federation', 'add', B, '--endpoint', 'https://127.0.0.1:1/', '--profile', 'https_spiffe'], 'TESSERA_FEDERATION_INVALID'],
      [['federation', 'add', B, '--endpoint', 'https://127.0.0.1:1/', '--profile', 'https_spiffe', '--endpoint-id', 'spiffe://beta.test'], 'TESSERA_FEDERATION_INVALID'],
      [['federation', 'show', 'nobody.test'], 'TESSERA_FEDERATION_NOT_FOUND'],
      [['federation', 'remove', 'nobody.test'], 'TESSERA_FEDERATION_NOT_FOUND'],
    ];
    for (const [args, code] of cases) {
      const r = await runTessera(['--json', ...args], { env, timeoutMs: 20_000 });
      expect(r.status, args.join(' ')).not.toBe(0);
      expect(r.stdout + r.stderr, args.join(' ')).toContain(code);
    }
  }, 60_000);

  it('wrong profile: https_spiffe against a Web PKI endpoint, https_web against the SVID endpoint', async () => {
    expect(await rejectionCode(a.admin.call('POST', '/v1/federation', { trust_domain: B, endpoint: `${b.url}/v1/bundle`, profile: 'https_web' }))).toBe('TESSERA_FEDERATION_FETCH_FAILED');
    expect(await rejectionCode(a.admin.call('POST', '/v1/federation', { trust_domain: B, endpoint: `${b.url}/v1/bundle`, profile: 'https_web', ca_pem: web.caPem }))).toBe('TESSERA_FEDERATION_FETCH_FAILED');
    expect(await rejectionCode(a.admin.call('POST', '/v1/federation', {
      trust_domain: B, endpoint: `https://127.0.0.1:${b.cp.bundleEndpoint!.port}/`, profile: 'https_spiffe', endpoint_id: `spiffe://${B}/tessera/server`, bundle: await bundleOf(b),
    }))).toBe('TESSERA_FEDERATION_FETCH_FAILED');
    expect((await a.admin.call<FederationListResponse>('GET', '/v1/federation')).federations).toEqual([]);
  });

  it('an endpoint answering garbage, an oversized bundle, another trust domain\'s bundle or a sequence going backwards: refused, the last good bundle stays', async () => {
    let answer = await bundleOf(b);
    const fake = await fakeEndpoint(web, () => answer);
    servers.push(fake.server);
    const add = (body: Record<string, unknown>): Promise<unknown> => a.admin.call('POST', '/v1/federation', { trust_domain: B, endpoint: fake.url, profile: 'https_web', ca_pem: web.caPem, ...body });
    for (const bad of ['garbage{', JSON.stringify({ keys: 'no' }), 'x'.repeat(1024 * 1024 + 10), await bundleOf(a), JSON.stringify({ keys: [] })]) {
      answer = bad;
      expect(await rejectionCode(add({}))).toMatch(/TESSERA_FEDERATION_(INVALID|FETCH_FAILED)/);
      expect(await rejectionCode(a.admin.call('GET', `/v1/federation/${B}`))).toBe('TESSERA_FEDERATION_NOT_FOUND');
    }
    const good = JSON.parse(await bundleOf(b)) as { spiffe_sequence: number };
    answer = JSON.stringify(good);
    await add({});
    // Rollback: the same keys under a lower sequence are refused at the next refresh, and the good bundle stays.
    answer = JSON.stringify({ ...good, spiffe_sequence: good.spiffe_sequence - 1 });
    const refused = await waitFor('the rollback refused', async () => {
      const s = await a.admin.call<FederationResponse>('GET', `/v1/federation/${B}`);
      return s.federation.last_error?.includes('backwards') === true && s;
    }, 10_000, 200);
    expect(refused.federation.sequence).toBe(good.spiffe_sequence);
    // A bundle of another trust domain (A's CA under B's name) is refused too.
    answer = JSON.stringify({ ...(JSON.parse(await bundleOf(a)) as object), spiffe_sequence: good.spiffe_sequence + 5 });
    const other = await waitFor('the foreign bundle refused', async () => {
      const s = await a.admin.call<FederationResponse>('GET', `/v1/federation/${B}`);
      return s.federation.last_error?.includes('another trust domain') === true && s;
    }, 10_000, 200);
    expect(other.federation.sequence).toBe(good.spiffe_sequence);
    await a.admin.call('POST', `/v1/federation/${B}/remove`, {});
  }, 30_000);

  it('the admin routes refuse unknown fields, non-string values and bad path names', async () => {
    expect(await rejectionCode(a.admin.call('POST', '/v1/federation', { trust_domain: B, endpoint: 'https://x/', profile: 'https_web', extra: 1 }))).toBe('TESSERA_BAD_REQUEST');
    expect(await rejectionCode(a.admin.call('POST', '/v1/federation', { trust_domain: 7, endpoint: 'https://x/', profile: 'https_web' }))).toBe('TESSERA_FEDERATION_INVALID');
    expect(await rejectionCode(a.admin.call('POST', '/v1/federation', { trust_domain: B, endpoint: ['https://x/'], profile: 'https_web' }))).toBe('TESSERA_FEDERATION_INVALID');
    expect(await rejectionCode(a.admin.call('POST', '/v1/federation', { trust_domain: B, endpoint: 'https://x/', profile: 'https_web', bundle: 5 }))).toBe('TESSERA_BAD_REQUEST');
    expect(await rejectionCode(a.admin.call('GET', `/v1/federation/${encodeURIComponent('../etc')}`))).toBe('TESSERA_FEDERATION_NOT_FOUND');
  });
});
