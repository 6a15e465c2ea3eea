/**
 * Just-in-time grants end to end: a control plane (in this process, for its test-only grant
 * minimum), real agents and sidecars, the CLI as child processes with two named admins:
 *
 *   client ─plain→ frontend outbound ─mTLS→ orders inbound (http mode, Cedar per request) ─plain→ app
 *
 * The frontend is denied by policy; alice requests a grant, cannot approve it herself, bob approves;
 * the sidecar denies before the scheduled start and allows inside the window; a revoked grant stops
 * within a second; a second grant stops at its expiry on the agent's own clock with the control
 * plane gone (no bundle can change). Every step is in the audit log with the person's identity.
 */
import { existsSync, statSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Sidecar } from '../src/agent/sidecar.js';
import { Fabric, inboundTo, outboundTo } from './support/fabric.js';
import { CLI, runTessera, waitFor } from './support/process.js';

const TD = 'example.org';
const FRONTEND = `spiffe://${TD}/shop/frontend`;
const ORDERS = `spiffe://${TD}/shop/orders`;
const ALICE = `spiffe://${TD}/tessera/admin/alice`;
const BOB = `spiffe://${TD}/tessera/admin/bob`;

function call(port: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, method: 'GET', path, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error('request timed out')));
    req.end();
  });
}

const sleepUntil = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, Math.max(0, ms - Date.now())));

describe('just-in-time grants end to end', () => {
  let f: Fabric;
  let orders: Sidecar;
  let frontendPort: number;

  async function tessera(adminDir: string, args: string[]): Promise<{ status: number | null; stdout: string; stderr: string; json: any }> {
    const r = await runTessera(['--json', ...args], { env: { TESSERA_ADMIN_DIR: adminDir }, timeoutMs: 20_000 });
    let json: unknown;
    try { json = JSON.parse(r.stdout); } catch { json = undefined; }
    return { ...r, json };
  }

  beforeAll(async () => {
    expect(existsSync(CLI), 'run `npx tsc -p tsconfig.json` first: the test runs dist/src/cli/main.js').toBe(true);
    f = await Fabric.start({ name: 'grants-e2e', server: { trustDomain: TD, grantMinSeconds: 1 }, entries: { [FRONTEND]: {}, [ORDERS]: {} } });
    // Only health checks are allowed: the frontend reading orders is denied by policy.
    await f.admin.call('POST', '/v1/policies', { files: { 'health.cedar': 'permit (principal, action == Tessera::Action::"http:request", resource) when { context.path == "/healthz" };' }, reason: 'health only' });
    const appPort = await f.httpApp();
    orders = (await f.workload('orders', ORDERS, { inbound: inboundTo(appPort) })).sidecar;
    const frontend = (await f.workload('frontend', FRONTEND, { outbounds: outboundTo(orders.inbound!.port, ORDERS) })).sidecar;
    frontendPort = frontend.outbounds[0]!.port;
    await waitFor('the orders sidecar to hold a bundle', () => orders.enforcer.version > 1, 10_000);
  }, 30_000);

  afterAll(async () => {
    await f?.close();
  });

  it('two admins, a scheduled grant honoured by the sidecar only inside its window, revoked within a second, expiring while cut off', async () => {
    const boot = f.cp.adminDir;
    const aliceDir = join(f.dir, 'alice');
    const bobDir = join(f.dir, 'bob');
    const addA = await tessera(boot, ['admin', 'add', 'alice', '--out', aliceDir]);
    expect(addA.status, addA.stderr).toBe(0);
    expect(addA.json).toMatchObject({ name: 'alice', spiffe_id: ALICE, state: 'active' });
    expect(statSync(join(aliceDir, 'admin.key')).mode & 0o077).toBe(0);
    expect((await tessera(aliceDir, ['admin', 'add', 'bob', '--out', bobDir])).status).toBe(0);
    const list = await tessera(bobDir, ['admin', 'list']);
    expect(list.json.admins.map((a: { name: string }) => a.name)).toEqual(['bootstrap', 'alice', 'bob']);

    expect(await call(frontendPort, '/healthz')).toBe(200);
    expect(await call(frontendPort, '/orders/1')).toBe(403);

    // Bad requests from the CLI: stable codes and exit statuses (three runs, timed for the lead below).
    const threeRunsFrom = Date.now();
    const bad = await tessera(aliceDir, ['grant', 'request', '--principal', 'frontend', '--action', 'http:request', '--resource', ORDERS, '--for', '10m', '--reason', 'x']);
    expect(bad.status).toBe(1);
    expect(bad.json.error.code).toBe('TESSERA_GRANT_INVALID');
    expect((await tessera(aliceDir, ['grant', 'request', '--principal', FRONTEND, '--action', 'http:request', '--resource', ORDERS, '--for', 'soon', '--reason', 'x'])).status).toBe(2);
    expect((await tessera(aliceDir, ['grant', 'list', '--state', 'bogus'])).status).toBe(2);

    const threeRunsMs = Date.now() - threeRunsFrom;
    // 1. A grant scheduled to start in 6 s, for 60 s: its request and two approvals (three CLI runs)
    // must happen before the start, so the lead is longer on a machine where they take longer.
    const start = Math.ceil((Date.now() + Math.max(6000, 2 * threeRunsMs)) / 1000);
    const req1 = await tessera(aliceDir, ['grant', 'request', '--principal', FRONTEND, '--action', 'http:request', '--resource', ORDERS, '--for', '60s', '--start', new Date(start * 1000).toISOString(), '--reason', 'INC-7 read orders']);
    expect(req1.status, req1.stderr).toBe(0);
    const id1 = req1.json.id as string;
    const self = await tessera(aliceDir, ['grant', 'approve', id1]);
    expect(self.status).toBe(4);
    expect(self.json.error.code).toBe('TESSERA_GRANT_SELF_APPROVAL');
    const ok1 = await tessera(bobDir, ['grant', 'approve', id1]);
    expect(ok1.status, ok1.stderr).toBe(0);
    expect(ok1.json).toMatchObject({ state: 'scheduled', start: new Date(start * 1000).toISOString(), decided_by: BOB });
    await waitFor('the grant to reach the orders sidecar', () => orders.enforcer.version >= ok1.json.bundle_version, 5_000);
    if (Date.now() < start * 1000 - 300) expect(await call(frontendPort, '/orders/1')).toBe(403);
    await sleepUntil(start * 1000 + 50);
    expect(await call(frontendPort, '/orders/1')).toBe(200);
    expect(await call(frontendPort, '/orders/2')).toBe(200);

    const rv = await tessera(aliceDir, ['grant', 'revoke', id1, '--reason', 'incident closed']);
    expect(rv.status, rv.stderr).toBe(0);
    const revokedAt = Date.now();
    await waitFor('the revoked grant to stop being honoured', async () => (await call(frontendPort, '/orders/1')) === 403, 5_000, 50);
    expect(Date.now() - revokedAt).toBeLessThan(1_500);

    // 2. A 3-second grant from approval; then the control plane goes away for good.
    const req2 = await tessera(bobDir, ['grant', 'request', '--principal', FRONTEND, '--action', 'http:request', '--resource', ORDERS, '--for', '3s', '--reason', 'INC-8']);
    const id2 = req2.json.id as string;
    const ok2 = await tessera(aliceDir, ['grant', 'approve', id2]);
    expect(ok2.status, ok2.stderr).toBe(0);
    const expiry = Date.parse(ok2.json.expiry as string);
    await waitFor('grant 2 to reach the orders sidecar', () => orders.enforcer.version >= ok2.json.bundle_version, 5_000);
    expect(await call(frontendPort, '/orders/3')).toBe(200);
    const audited = await f.admin.call<{ records: { action: string; actor: string; target: string; outcome: string; code: string }[] }>('GET', '/v1/audit?limit=1000');
    await f.stopControlPlane();
    const held = orders.enforcer.version;
    if (Date.now() < expiry - 300) expect(await call(frontendPort, '/orders/3')).toBe(200);
    await sleepUntil(expiry + 50);
    // The same request as before: its cached allow does not outlive the grant.
    expect(await call(frontendPort, '/orders/3')).toBe(403);
    expect(orders.enforcer.version).toBe(held);

    const steps = audited.records.filter((r) => r.action.startsWith('grant.') && r.action !== 'grant.list').map((r) => [r.action, r.target, r.actor, r.code]);
    expect(steps).toEqual(expect.arrayContaining([
      ['grant.request', id1, ALICE, 'OK'],
      ['grant.approve', id1, ALICE, 'TESSERA_GRANT_SELF_APPROVAL'],
      ['grant.approve', id1, BOB, 'OK'],
      ['grant.revoke', id1, ALICE, 'OK'],
      ['grant.request', id2, BOB, 'OK'],
      ['grant.approve', id2, ALICE, 'OK'],
    ]));
    expect(audited.records.filter((r) => r.action === 'admin.add' && r.outcome === 'success').map((r) => [r.actor, r.target]))
      .toEqual([[`spiffe://${TD}/tessera/admin`, ALICE], [ALICE, BOB]]);

    // The control plane back on the same data: grant 2 is marked expired, audited, and alice's credential still works.
    await f.startControlPlane();
    const expired = await waitFor('grant.expire in the audit log', async () =>
      (await f.admin.call<{ records: { target: string; actor: string }[] }>('GET', '/v1/audit?limit=100&action=grant.expire')).records.find((r) => r.target === id2), 5_000, 100);
    expect(expired.actor).toBe('tessera');
    const listed = await f.admin.call<{ grants: { id: string; state: string }[] }>('GET', '/v1/grants');
    expect(Object.fromEntries(listed.grants.map((g) => [g.id, g.state]))).toMatchObject({ [id1]: 'revoked', [id2]: 'expired' });
  }, 60_000);
});
