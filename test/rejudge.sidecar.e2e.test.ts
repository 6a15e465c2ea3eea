/**
 * The sidecar re-judges open tcp-mode connections when a new policy bundle is installed: a real
 * control plane (in this process), two agents with their sidecars, a tcp echo app, all on
 * 127.0.0.1:  client ─plain→ frontend outbound ─mTLS→ orders inbound (tcp mode) ─plain→ echo.
 */
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect as netConnect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../src/agent/agent.js';
import { ApiClient } from '../src/common/api-client.js';
import { startSidecar, type Sidecar } from '../src/agent/sidecar.js';
import { silentLogger } from '../src/core/log.js';
import { ControlPlane } from '../src/server/server.js';
import { waitFor } from './support/process.js';

const TD = 'tessera.test';
const FRONTEND = `spiffe://${TD}/shop/frontend`;
const ORDERS = `spiffe://${TD}/shop/orders`;

const CONNECT_POLICY = `@id("frontend-connects-to-orders")
permit (principal, action == Tessera::Action::"tcp:connect", resource)
when { principal has app && principal.app == "shop-frontend" && resource has app && resource.app == "orders" };`;
const NO_CONNECT_POLICY = `@id("orders-reads-orders")
permit (principal, action == Tessera::Action::"http:request", resource)
when { principal has app && principal.app == "orders" };`;

describe('sidecar: re-judging on a policy change', () => {
  let dir: string;
  let cp: ControlPlane;
  let admin: ApiClient;
  let echo: Server;
  let echoPort = 0;
  let echoBytes = 0;
  const echoSockets = new Set<Socket>();
  const agents: Agent[] = [];
  const sidecars: Sidecar[] = [];

  async function workload(name: string, id: string, opts: Omit<Parameters<typeof startSidecar>[1], 'dataDir' | 'log'>): Promise<Sidecar> {
    const { token } = await admin.call<{ token: string }>('POST', '/v1/tokens', { entry_id: id });
    const agent = new Agent({ serverUrl: cp.url, dataDir: join(dir, name), joinToken: token, trustBundleFile: join(cp.dataDir, 'bundle.pem'), log: silentLogger, watchSeconds: 5 });
    agents.push(agent);
    await agent.start();
    const sidecar = await startSidecar(agent, { dataDir: join(dir, name), log: silentLogger, policyWatchSeconds: 5, ...opts });
    sidecars.push(sidecar);
    return sidecar;
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-rejudge-'));
    cp = await ControlPlane.start({ dataDir: join(dir, 'server'), port: 0, log: silentLogger });
    const f = (n: string): string => readFileSync(join(cp.adminDir, n), 'utf8');
    admin = new ApiClient(cp.url, { ca: f('bundle.pem'), cert: f('admin.pem'), key: f('admin.key') });
    await admin.call('POST', '/v1/entries', { spiffe_id: FRONTEND, attributes: { app: 'shop-frontend' } });
    await admin.call('POST', '/v1/entries', { spiffe_id: ORDERS, attributes: { app: 'orders' } });
    echo = createServer((s) => {
      echoSockets.add(s);
      s.on('close', () => echoSockets.delete(s));
      s.on('data', (c: Buffer) => {
        echoBytes += c.length;
        s.write(c);
      });
      s.on('error', () => {});
    });
    echo.listen(0, '127.0.0.1');
    await once(echo, 'listening');
    echoPort = (echo.address() as AddressInfo).port;
  }, 30_000);

  afterAll(async () => {
    for (const s of sidecars) await s.close().catch(() => {});
    for (const a of agents) await a.stop().catch(() => {});
    for (const s of echoSockets) s.destroy();
    if (echo) await new Promise((r) => echo.close(r));
    admin?.close();
    await cp?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('closes an open tcp connection within a second or so of the policy that no longer allows it, and refuses new ones', async () => {
    const v1 = await admin.call<{ bundle_version: number }>('POST', '/v1/policies', { files: { 'connect.cedar': CONNECT_POLICY }, reason: 'frontend connects to orders' });
    const orders = await workload('orders', ORDERS, { inbound: { listen: { host: '127.0.0.1', port: 0 }, app: { host: '127.0.0.1', port: echoPort }, mode: 'tcp' } });
    const frontend = await workload('frontend', FRONTEND, { outbounds: [{ listen: { host: '127.0.0.1', port: 0 }, upstream: { host: '127.0.0.1', port: orders.inbound!.port, expectedId: ORDERS } }] });
    await waitFor('orders to enforce v1', () => orders.enforcer.version >= v1.bundle_version, 10_000);
    // The outbound refuses a target it cannot yet vouch for (no bundle, no revocation list): default deny.
    await waitFor('frontend to hold v1', () => frontend.enforcer.version >= v1.bundle_version, 10_000);

    const socket = netConnect({ host: '127.0.0.1', port: frontend.outbounds[0]!.port });
    socket.on('error', () => {});
    let received = '';
    socket.on('data', (c: Buffer) => { received += c.toString(); });
    const closed = new Promise<number>((r) => socket.once('close', () => r(Date.now())));
    socket.write('ping');
    await waitFor('the echo through both proxies', () => received === 'ping', 10_000);

    // Let the enforcer settle into its long-poll, then take the permission away.
    await new Promise((r) => setTimeout(r, 300));
    const installed = new Promise<number>((r) => orders.enforcer.once('policy', () => r(Date.now())));
    const t0 = Date.now();
    await admin.call('POST', '/v1/policies', { files: { 'other.cedar': NO_CONNECT_POLICY }, reason: 'frontend may no longer connect' });
    const at = await Promise.race([closed, new Promise<number>((r) => setTimeout(() => r(0), 10_000))]);
    expect(at, 'the connection stayed open after the policy change').toBeGreaterThan(0);
    const inForce = await installed;
    console.log(`tcp connection closed ${at - t0} ms after the policy apply was sent (${at - inForce} ms after the bundle was installed)`);
    expect(at - inForce).toBeLessThan(1000);
    expect(orders.inbound!.stats.rejudged).toBe(1);

    // A new connection is denied at connect: nothing reaches the app.
    const before = echoBytes;
    const again = netConnect({ host: '127.0.0.1', port: frontend.outbounds[0]!.port });
    again.on('error', () => {});
    again.write('must not arrive');
    await new Promise((r) => again.once('close', r));
    expect(echoBytes).toBe(before);
  }, 40_000);
});
