/**
 * The one peer check (src/core/x509-svid.ts), at every place that uses it, over real TLS on
 * 127.0.0.1: each leaf below chains to a CA the place trusts but breaks one X509-SVID rule, and
 * each place must refuse it (defect × place). A good leaf from the same test issuer is accepted
 * at each place, so a refusal is the rule's doing and not the issuer's.
 *
 * Places: the control plane API (401 TESSERA_AUTH_INVALID, reason in the audit record), the key
 * server (401), the inbound sidecar (connection closed, counted as identityRefused), the
 * outbound sidecar (a target presenting the leaf is refused before a byte is sent) and the
 * control-plane client (ApiClient refuses the server).
 */
import { generateKeyPairSync } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { connect as netConnect, type AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect, createServer as createTlsServer, type Server as TlsServer } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiClient } from '../src/common/api-client.js';
import { startInbound, type Inbound, type TlsMaterial, type TlsSource } from '../src/agent/inbound/inbound.js';
import { startOutbound, type Outbound } from '../src/agent/outbound/outbound.js';
import { TesseraError } from '../src/core/errors.js';
import { silentLogger } from '../src/core/log.js';
import { createSelfSignedCa, pemEncode } from '../src/core/x509.js';
import { startKeyServer, type KeyServer } from '../src/keyserver/server.js';
import { rawRequest, errorCode, readAdminTls, startControlPlane, type TestControlPlane } from './support/server.js';
import { issueOddLeaf, svidDefects, type OddLeafSpec, type TestCa, type TestLeaf } from './support/svid-defects.js';

const TD = 'peer.test';
const HOUR = 3_600_000;
const CLIENT_ID = `spiffe://${TD}/shop/orders`;
const SERVER_ID = `spiffe://${TD}/shop/payments`;
const CP_ID = `spiffe://${TD}/tessera/server`;

function testCa(td: string): TestCa & { pem: string } {
  const k = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const now = Date.now();
  const certDer = createSelfSignedCa({ ...k, commonName: 'peer-check test CA', trustDomainUri: `spiffe://${td}`, notBefore: new Date(now - HOUR), notAfter: new Date(now + 24 * HOUR) });
  return { certDer, privateKey: k.privateKey, pem: pemEncode(certDer, 'CERTIFICATE') };
}

class FakeSource extends EventEmitter implements TlsSource {
  constructor(private readonly material: TlsMaterial) { super(); }
  current(): TlsMaterial { return this.material; }
}

function sourceFor(ca: TestCa & { pem: string }, id: string): FakeSource {
  const leaf = issueOddLeaf(ca, { uris: [id], ips: ['127.0.0.1'] });
  return new FakeSource({ spiffeId: id, certPem: leaf.certPem, key: leaf.key, bundlePem: ca.pem });
}

async function until(what: string, fn: () => boolean, ms = 5_000): Promise<void> {
  for (const end = Date.now() + ms; !fn(); ) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const ca = testCa(TD);
const defects = svidDefects(TD, CLIENT_ID);
const serverDefects = svidDefects(TD, SERVER_ID);
const cpDefects = svidDefects(TD, CP_ID);
const good: OddLeafSpec = { uris: [CLIENT_ID] };

// ---------------------------------------------------------------------------------------------
// Control plane API
// ---------------------------------------------------------------------------------------------

describe('control plane API', () => {
  let t: TestControlPlane;
  let cpCa: TestCa;
  const renew = (leaf: TestLeaf) => rawRequest(t.cp.url, { method: 'POST', path: '/v1/svid/renew', body: '{}', headers: { 'content-type': 'application/json' }, ca: readAdminTls(t.cp).ca, cert: leaf.certPem, key: leaf.keyPem });

  beforeAll(async () => {
    t = await startControlPlane({ trustDomain: TD });
    cpCa = t.cp.ctx.ca.signingMaterial();
  });
  afterAll(async () => {
    await t?.close();
  });

  it('lets a good leaf from the test issuer past authentication', async () => {
    const res = await renew(issueOddLeaf(cpCa, good));
    expect(res.status).not.toBe(401);
  });

  for (const d of defects) {
    it(`refuses ${d.name} with 401 TESSERA_AUTH_INVALID`, async () => {
      const res = await renew(issueOddLeaf(cpCa, d.spec));
      expect({ status: res.status, code: errorCode(res) }).toEqual({ status: 401, code: 'TESSERA_AUTH_INVALID' });
      // Records come oldest first: the last denied renew is this one.
      const audit = await t.admin.call<{ records: { detail: Record<string, unknown> }[] }>('GET', '/v1/audit?limit=10000&outcome=denied&action=svid.renew');
      const why = audit.records.at(-1)?.detail.auth_failure;
      if (d.tlsRefuses) expect(why).toMatch(/CERT_HAS_EXPIRED|CERT_NOT_YET_VALID/);
      else expect(why).toBe(d.reason);
    });
  }
});

// ---------------------------------------------------------------------------------------------
// Key server
// ---------------------------------------------------------------------------------------------

describe('key server', () => {
  let ks: KeyServer;
  let dir: string;
  const evaluate = (leaf: TestLeaf): Promise<{ status: number; code: string | undefined } | { error: string }> =>
    rawRequest(ks.url, { method: 'POST', path: '/v1/evaluate', body: '{}', headers: { 'content-type': 'application/json' }, ca: ca.pem, cert: leaf.certPem, key: leaf.keyPem })
      .then((res) => ({ status: res.status, code: errorCode(res) }), (err: Error & { code?: string }) => ({ error: String(err.code ?? err.message) }));

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-peer-ks-'));
    ks = await startKeyServer({
      dataDir: dir, listen: { host: '127.0.0.1', port: 0 }, tls: sourceFor(ca, `spiffe://${TD}/tessera/keyserver/0`), trustDomain: TD,
      authorize: () => true, provisioners: [], log: silentLogger, env: { TESSERA_KEK: '7'.repeat(64) }, onAudit: () => undefined,
    });
  });
  afterAll(async () => {
    await ks?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('lets a good leaf from the test issuer past authentication', async () => {
    const r = await evaluate(issueOddLeaf(ca, good));
    expect('status' in r && r.status !== 401).toBe(true);
  });

  for (const d of defects) {
    it(`refuses ${d.name}${d.tlsRefuses ? ' (at the handshake)' : ' with 401 TESSERA_AUTH_INVALID'}`, async () => {
      const r = await evaluate(issueOddLeaf(ca, d.spec));
      // The key server requires a trusted certificate at the handshake, where OpenSSL checks the validity window.
      if (d.tlsRefuses) expect('error' in r).toBe(true);
      else expect(r).toEqual({ status: 401, code: 'TESSERA_AUTH_INVALID' });
    });
  }
});

// ---------------------------------------------------------------------------------------------
// Inbound sidecar
// ---------------------------------------------------------------------------------------------

describe('inbound sidecar', () => {
  let app: HttpServer;
  let ib: Inbound;
  let appRequests = 0;
  const reasons: string[] = [];

  /** One request over mTLS with `leaf`; the answer's bytes ("" when the connection was cut). */
  function call(leaf: TestLeaf): Promise<string> {
    return new Promise((resolve) => {
      const chunks: Buffer[] = [];
      const s = tlsConnect({ host: '127.0.0.1', port: ib.port, ca: ca.pem, cert: leaf.certPem, key: leaf.keyPem, checkServerIdentity: () => undefined });
      s.on('secureConnect', () => s.write('GET /x HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n'));
      s.on('data', (c: Buffer) => chunks.push(c));
      s.on('error', () => undefined);
      s.setTimeout(10_000, () => s.destroy());
      s.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
    });
  }

  beforeAll(async () => {
    app = createHttpServer((req, res) => {
      appRequests++;
      res.end('hello');
    });
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
    ib = await startInbound({
      listen: { host: '127.0.0.1', port: 0 }, mode: 'http', tls: sourceFor(ca, SERVER_ID), authorize: () => ({ allow: true }),
      app: { host: '127.0.0.1', port: (app.address() as AddressInfo).port }, onRefused: (r) => reasons.push(r.reason),
    });
  });
  afterAll(async () => {
    await ib?.close();
    app.closeAllConnections();
    await new Promise((r) => app.close(r));
  });

  it('serves a good leaf from the test issuer', async () => {
    expect(await call(issueOddLeaf(ca, good))).toMatch(/^HTTP\/1\.1 200 [\s\S]*hello$/);
  });

  for (const d of defects) {
    it(`refuses ${d.name}`, async () => {
      const before = { ...ib.stats, app: appRequests, reasons: reasons.length };
      expect(await call(issueOddLeaf(ca, d.spec))).toBe('');
      const counter = d.tlsRefuses ? 'handshakeFailures' : 'identityRefused';
      await until(counter, () => ib.stats[counter] === before[counter] + 1);
      expect(ib.stats.connections).toBe(before.connections);
      expect(appRequests).toBe(before.app);
      if (!d.tlsRefuses) expect(reasons.slice(before.reasons)).toEqual([d.reason]);
    });
  }
});

// ---------------------------------------------------------------------------------------------
// Outbound sidecar: the target presents the defective leaf
// ---------------------------------------------------------------------------------------------

describe('outbound sidecar', () => {
  const clientSource = sourceFor(ca, CLIENT_ID);
  const reasons: string[] = [];

  /** A TLS target presenting `leaf`, echoing; the outbound in front of it; one exchange through both. */
  async function through(leaf: TestLeaf): Promise<{ data: string; stats: Outbound['stats']; targetBytes: number }> {
    let targetBytes = 0;
    const target: TlsServer = createTlsServer({ cert: leaf.certPem, key: leaf.keyPem, ca: ca.pem, requestCert: true, rejectUnauthorized: true }, (s) => {
      s.on('data', (c: Buffer) => { targetBytes += c.length; s.end(c); });
      s.on('error', () => undefined);
    });
    target.on('tlsClientError', () => undefined);
    await new Promise<void>((r) => target.listen(0, '127.0.0.1', r));
    const ob = await startOutbound({
      listen: { host: '127.0.0.1', port: 0 },
      upstream: { host: '127.0.0.1', port: (target.address() as AddressInfo).port, expectedId: SERVER_ID },
      tls: clientSource, onRefused: (r) => reasons.push(r.reason),
    });
    try {
      const data = await new Promise<string>((resolve) => {
        const chunks: Buffer[] = [];
        const s = netConnect({ host: '127.0.0.1', port: ob.port }, () => s.end('ping'));
        s.on('data', (c: Buffer) => chunks.push(c));
        s.on('error', () => undefined);
        s.setTimeout(10_000, () => s.destroy());
        s.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
      });
      return { data, stats: ob.stats, targetBytes };
    } finally {
      await ob.close();
      await new Promise((r) => target.close(r));
    }
  }

  it('carries bytes to a target with a good leaf from the test issuer', async () => {
    const r = await through(issueOddLeaf(ca, { uris: [SERVER_ID] }));
    expect(r.data).toBe('ping');
    expect(r.stats.connections).toBe(1);
  });

  for (const d of serverDefects) {
    it(`refuses a target with ${d.name}`, async () => {
      const n = reasons.length;
      const r = await through(issueOddLeaf(ca, d.spec));
      expect(r.data).toBe('');
      expect(r.targetBytes).toBe(0);
      expect(r.stats.connections).toBe(0);
      if (d.tlsRefuses) {
        expect(r.stats.handshakeFailures).toBe(1);
      } else {
        expect(r.stats.identityRefused).toBe(1);
        expect(reasons.slice(n)).toEqual([`the target's certificate was refused: ${d.reason}`]);
      }
    });
  }

  it('refuses a good leaf that is not the expected SPIFFE ID', async () => {
    const n = reasons.length;
    const r = await through(issueOddLeaf(ca, { uris: [`spiffe://${TD}/shop/impostor`] }));
    expect(r.stats.identityRefused).toBe(1);
    expect(reasons.slice(n)).toEqual(["the target's certificate was refused: not the expected SPIFFE ID"]);
  });
});

// ---------------------------------------------------------------------------------------------
// Control-plane client (agent and CLI → control plane)
// ---------------------------------------------------------------------------------------------

describe('control-plane client', () => {
  /** An HTTPS "control plane" presenting `leaf`, and one ApiClient call to it. */
  async function callServer(leaf: TestLeaf, serverId?: string): Promise<{ ok: true } | { ok: false; error: TesseraError }> {
    let hits = 0;
    const server: HttpsServer = createHttpsServer({ cert: leaf.certPem, key: leaf.keyPem }, (_req, res) => {
      hits++;
      res.setHeader('content-type', 'application/json');
      res.end('{"status":"ok"}');
    });
    server.on('tlsClientError', () => undefined);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const client = new ApiClient(`https://127.0.0.1:${(server.address() as AddressInfo).port}`, { ca: ca.pem, ...(serverId ? { serverId } : {}) }, 10_000);
    try {
      await client.call('GET', '/healthz');
      return { ok: true };
    } catch (err) {
      expect(hits).toBe(0);
      return { ok: false, error: err as TesseraError };
    } finally {
      client.close();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  }

  it('talks to a server with a good leaf, whether it names the server ID or reads the trust domain from the bundle', async () => {
    expect(await callServer(issueOddLeaf(ca, { uris: [CP_ID] }))).toEqual({ ok: true });
    expect(await callServer(issueOddLeaf(ca, { uris: [CP_ID] }), CP_ID)).toEqual({ ok: true });
  });

  for (const d of cpDefects) {
    it(`refuses a server with ${d.name}`, async () => {
      const r = await callServer(issueOddLeaf(ca, d.spec));
      expect(r.ok).toBe(false);
      if (r.ok) return;
      expect(r.error.code).toBe('TESSERA_SERVER_UNREACHABLE');
      expect(r.error.message).toMatch(d.tlsRefuses ? /certificate (has expired|is not yet valid)/ : `server certificate refused (${d.reason})`);
    });
  }

  it('refuses a good SVID that is not the control plane (another workload, or the server of another trust domain)', async () => {
    for (const [leafId, serverId] of [[SERVER_ID, undefined], [SERVER_ID, CP_ID], [CP_ID, `spiffe://${TD}/tessera/other`]] as const) {
      const r = await callServer(issueOddLeaf(ca, { uris: [leafId] }), serverId);
      expect(r.ok ? 'accepted' : r.error.message).toMatch(/not the expected SPIFFE ID/);
    }
  });
});
