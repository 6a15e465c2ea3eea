/**
 * Named admins (`tessera admin add`) provision key servers like the bootstrap admin: a real control
 * plane and a key server node in this process, real mTLS on 127.0.0.1. The key server learns the live
 * admins and their certificate serials from the signed policy bundle; a removed admin, or a certificate
 * of that name not issued to the live admin, is refused as soon as the bundle without it arrives.
 */
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../core/log.js';
import { createPolicyBundle } from '../core/policy/bundle.js';
import { TESSERA_SCHEMA } from '../core/policy/schema.js';
import { waitFor } from '../../test/support/process.js';
import { errorCode, joinAgent, makeCsrPem, rawJson, startControlPlane, type RawResponse, type TestControlPlane } from '../../test/support/server.js';
import type { KeyAuditEvent } from './service.js';
import { startKeyServerNode, type KeyServerNode } from './node.js';

const TD = 'example.org';
const KS = `spiffe://${TD}/keyserver/1`;
const ALICE = `spiffe://${TD}/tessera/admin/alice`;

interface Tls { ca: string; cert: string; key: string }

describe('key server provisioning by named admins', () => {
  let t: TestControlPlane;
  let node: KeyServerNode;
  let dir: string;
  const audits: KeyAuditEvent[] = [];

  beforeAll(async () => {
    t = await startControlPlane({ trustDomain: TD });
    dir = mkdtempSync(join(tmpdir(), 'tessera-ks-admins-'));
    await t.admin.call('POST', '/v1/entries', { spiffe_id: KS });
    const { token } = await t.admin.call<{ token: string }>('POST', '/v1/tokens', { entry_id: KS });
    node = await startKeyServerNode({
      serverUrl: t.cp.url, dataDir: join(dir, 'ks'), listen: { host: '127.0.0.1', port: 0 }, log: silentLogger, joinToken: token,
      trustBundleFile: join(t.dataDir, 'bundle.pem'), env: {}, policyWatchSeconds: 5, onAudit: (ev) => audits.push(ev),
    });
  }, 30_000);

  afterAll(async () => {
    await node?.close().catch(() => {});
    await t?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function addAdmin(name: string): Promise<Tls> {
    const csr = makeCsrPem();
    const res = await rawJson(t.cp.url, { path: '/v1/admins', json: { name, csr: csr.pem }, ...t.adminTls });
    expect(res.status, res.text.slice(0, 300)).toBe(201);
    const v = res.json as { cert_pem: string; bundle_pem: string };
    return { ca: v.bundle_pem, cert: v.cert_pem, key: csr.keyPem };
  }

  const shares = (tls: Tls): Promise<RawResponse> => keyServerRequest('GET', '/v1/shares', tls);
  /** A provisioning route: an admin gets 200 (nothing to delete here), anyone else 403. */
  const dropShares = (tls: Tls): Promise<RawResponse> => keyServerRequest('DELETE', '/v1/shares/db/1', tls);

  /** One request to the key server, whose certificate is an SVID (a SPIFFE ID, no host name). */
  function keyServerRequest(method: string, path: string, tls: Tls): Promise<RawResponse> {
    return new Promise((resolve, reject) => {
      const req = httpsRequest({ host: '127.0.0.1', port: node.keyServer.port, method, path, agent: false, ...tls, checkServerIdentity: () => undefined }, (res) => {
        let text = '';
        res.on('data', (d: Buffer) => { text += d.toString(); });
        res.on('end', () => {
          let json: unknown;
          try { json = JSON.parse(text); } catch { json = undefined; }
          resolve({ status: res.statusCode ?? 0, json, text, headers: res.headers });
        });
      });
      req.on('error', reject);
      req.setTimeout(10_000, () => req.destroy(new Error('request timed out')));
      req.end();
    });
  }
  const bundleVersion = (): number => node.sidecar.enforcer.version;

  it('a named admin provisions once the bundle lists it; a workload never; removal refuses it within seconds', async () => {
    expect((await shares(t.adminTls)).status).toBe(200);
    const before = bundleVersion();
    const alice = await addAdmin('alice');
    // Adding an admin publishes a bundle; the key server follows it.
    await waitFor('the key server to hold the bundle listing alice', () => node.sidecar.enforcer.isNamedAdmin(ALICE, serialOf(alice.cert)) && bundleVersion() > before, 10_000);
    const listed = await shares(alice);
    expect(listed.status, listed.text).toBe(200);
    expect(listed.json).toEqual({ shares: [] });
    const dropped = await dropShares(alice);
    expect({ status: dropped.status, json: dropped.json }).toEqual({ status: 200, json: { policy: 'db', epoch: 1, deleted: false } });
    expect(audits.some((a) => a.actor === ALICE && a.action === 'secret:share-delete' && a.outcome === 'allowed')).toBe(true);

    // A workload of the trust domain is no provisioner.
    const w = await joinAgent(t.cp, t.admin, `spiffe://${TD}/shop/orders`);
    const wt = { ca: t.adminTls.ca, cert: w.certPem, key: w.keyPem };
    for (const r of [await shares(wt), await dropShares(wt)]) expect({ status: r.status, code: errorCode(r) }).toEqual({ status: 403, code: 'TESSERA_FORBIDDEN' });
    expect(audits.some((a) => a.actor === w.spiffeId && a.outcome === 'denied')).toBe(true);

    // Removed: refused by the key server once the next bundle arrives.
    const removed = await rawJson(t.cp.url, { path: '/v1/admins/alice/remove', json: { reason: 'left the team' }, ...t.adminTls });
    expect(removed.status, removed.text).toBe(200);
    const since = Date.now();
    await waitFor('the key server to refuse the removed admin', async () => (await shares(alice)).status === 403, 10_000, 100);
    expect(Date.now() - since).toBeLessThan(10_000);
    expect(errorCode(await dropShares(alice))).toBe('TESSERA_FORBIDDEN');

    // Added again under the same name with a new key: only the new certificate is accepted.
    const again = await addAdmin('alice');
    await waitFor('the key server to accept the new certificate', async () => (await shares(again)).status === 200, 10_000, 100);
    expect(errorCode(await shares(alice))).toBe('TESSERA_FORBIDDEN');
    // The bootstrap admin is unaffected throughout.
    expect((await shares(t.adminTls)).status).toBe(200);
  });

  it('the bundle refuses a malformed admins list (agents and key servers would refuse to install it)', () => {
    const base = { version: 1, author: 'a', reason: 'r', policies: {}, schema: TESSERA_SCHEMA as Record<string, unknown>, entities: [] };
    expect(createPolicyBundle({ ...base, admins: [{ id: ALICE, serials: ['0A1B'] }] }).admins).toEqual([{ id: ALICE, serials: ['0A1B'] }]);
    expect(createPolicyBundle({ ...base, admins: [] }).admins).toBeUndefined();
    const bad: unknown[] = [
      [{ id: 'not-a-spiffe-id', serials: ['0A'] }],
      [{ id: ALICE, serials: ['0a'] }],
      [{ id: ALICE, serials: Array(9).fill('0A') }],
      [{ id: ALICE, serials: ['0A'] }, { id: ALICE, serials: ['0B'] }],
      [{ id: ALICE, serials: ['0A'], extra: 1 }],
      [{ id: ALICE }],
      'alice',
      Array(1001).fill(0).map((_, i) => ({ id: `${ALICE}${i}`, serials: ['0A'] })),
    ];
    for (const admins of bad) {
      expect(() => createPolicyBundle({ ...base, admins: admins as never })).toThrow(expect.objectContaining({ code: 'TESSERA_POLICY_BUNDLE_INVALID' }));
    }
  });
});

function serialOf(pem: string): string {
  // The first certificate of the chain is the admin's own.
  return new X509Certificate(pem).serialNumber.toUpperCase();
}
