import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as netConnect } from 'node:net';
import { connect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../src/agent/agent.js';
import { startSidecar, type Sidecar } from '../src/agent/sidecar.js';
import { startOutbound } from '../src/agent/outbound/outbound.js';
import { silentLogger } from '../src/core/log.js';
import { CertificateIssuer, createSelfSignedCa, pemEncode } from '../src/core/x509.js';
import { startControlPlane, type TestControlPlane } from './support/server.js';

const ORDERS = 'spiffe://tessera.test/shop/orders';

/** Tries a TLS handshake with the inbound proxy; resolves with how it ended. */
function handshake(port: number, ca: string, client?: { cert: string; key: string }): Promise<'open' | 'refused'> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port, ca, checkServerIdentity: () => undefined, ...(client ?? {}) }, () => {
      // TLS 1.3: the server checks the client certificate after the client considers the handshake done.
      s.once('data', () => resolve('open'));
      s.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n');
    });
    s.once('error', () => resolve('refused'));
    s.once('close', () => resolve('refused'));
  });
}

describe('refusals before any policy decision are audited', () => {
  let t: TestControlPlane;
  let dir: string;
  let agent: Agent;
  let sidecar: Sidecar;

  beforeAll(async () => {
    t = await startControlPlane();
    dir = mkdtempSync(join(tmpdir(), 'tessera-refusals-'));
    await t.admin.call('POST', '/v1/entries', { spiffe_id: ORDERS, attributes: { site: 'cloud-eu' } });
    const { token } = await t.admin.call<{ token: string }>('POST', '/v1/tokens', { entry_id: ORDERS });
    agent = new Agent({ serverUrl: t.cp.url, dataDir: join(dir, 'orders'), joinToken: token, trustBundleFile: join(t.cp.dataDir, 'bundle.pem'), log: silentLogger });
    await agent.start();
    sidecar = await startSidecar(agent, { dataDir: join(dir, 'orders'), log: silentLogger, inbound: { listen: { host: '127.0.0.1', port: 0 }, app: { host: '127.0.0.1', port: 9 }, mode: 'tcp' } });
  });
  afterAll(async () => {
    await sidecar.close();
    await agent.stop();
    await t.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('records no-certificate and foreign-CA handshakes as connection.refused with a stable code', async () => {
    const bundle = readFileSync(join(t.cp.dataDir, 'bundle.pem'), 'utf8');
    const port = sidecar.inbound!.port;
    expect(await handshake(port, bundle)).toBe('refused');

    // A certificate for a real-looking identity from a CA nobody trusts.
    const caKeys = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const now = Date.now();
    const caDer = createSelfSignedCa({ ...caKeys, commonName: 'forged', trustDomainUri: 'spiffe://tessera.test', notBefore: new Date(now - 60_000), notAfter: new Date(now + 3600_000) });
    const leafKeys = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const leaf = new CertificateIssuer({ certDer: caDer, privateKey: caKeys.privateKey }).issueLeaf({
      publicKey: leafKeys.publicKey, uriSans: ['spiffe://tessera.test/shop/frontend'], notBefore: new Date(now - 60_000), notAfter: new Date(now + 3600_000),
    });
    expect(await handshake(port, bundle, { cert: pemEncode(leaf, 'CERTIFICATE'), key: leafKeys.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string })).toBe('refused');

    await sidecar.enforcer.decisions.flush();
    const { records } = await t.admin.call<{ records: { action: string; outcome: string; code: string; actor: string; target: string }[] }>('GET', '/v1/audit?action=connection.refused');
    expect(records.length).toBeGreaterThanOrEqual(2);
    for (const r of records) {
      expect(r).toMatchObject({ outcome: 'denied', actor: ORDERS, target: ORDERS });
      expect(r.code).toMatch(/^TESSERA_/);
    }
  });

  it('records a server with the wrong SPIFFE ID refused by the outbound sidecar, and refused policy bundles', async () => {
    // An outbound that expects someone else behind the orders inbound.
    const out = await startOutbound({
      listen: { host: '127.0.0.1', port: 0 }, upstream: { host: '127.0.0.1', port: sidecar.inbound!.port, expectedId: 'spiffe://tessera.test/shop/payments' }, tls: agent,
      onRefused: (r) => sidecar.enforcer.recordRefusal('spiffe://tessera.test/shop/payments', r.code, r.reason, 'tls:upstream'),
    });
    await new Promise<void>((resolve) => {
      const s = netConnect(out.port, '127.0.0.1', () => s.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n'));
      s.on('close', () => resolve());
      s.on('error', () => resolve());
    });
    await out.close();
    sidecar.enforcer.recordRefusal(ORDERS, 'TESSERA_POLICY_BUNDLE_INVALID', 'signer not in the trust bundle', 'policy:bundle');
    await sidecar.enforcer.decisions.flush();
    const up = await t.admin.call<{ records: { outcome: string; code: string; target: string }[] }>('GET', '/v1/audit?action=upstream.refused');
    expect(up.records).toHaveLength(1);
    expect(up.records[0]).toMatchObject({ outcome: 'denied', code: 'TESSERA_PROXY_PEER_IDENTITY', target: 'spiffe://tessera.test/shop/payments' });
    const pol = await t.admin.call<{ records: { outcome: string; code: string }[] }>('GET', '/v1/audit?action=policy.bundle.refused');
    expect(pol.records[0]).toMatchObject({ outcome: 'denied', code: 'TESSERA_POLICY_BUNDLE_INVALID' });
  });
});
