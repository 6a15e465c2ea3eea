/**
 * The sidecar re-judges open tcp-mode connections when a new policy bundle is installed: a real
 * control plane (in this process), two agents with their sidecars, a tcp echo app, all on
 * 127.0.0.1:  client ─plain→ frontend outbound ─mTLS→ orders inbound (tcp mode) ─plain→ echo.
 */
import { connect as netConnect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Sidecar } from '../src/agent/sidecar.js';
import { Fabric, inboundTo, outboundTo, type EchoApp, type WorkloadOptions } from './support/fabric.js';
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
  let f: Fabric;
  let echo: EchoApp;

  async function workload(name: string, id: string, opts: WorkloadOptions): Promise<Sidecar> {
    return (await f.workload(name, id, opts)).sidecar;
  }

  beforeAll(async () => {
    f = await Fabric.start({
      name: 'rejudge', sidecar: { policyWatchSeconds: 5 },
      entries: { [FRONTEND]: { app: 'shop-frontend' }, [ORDERS]: { app: 'orders' } },
    });
    echo = await f.tcpEcho();
  }, 30_000);

  afterAll(async () => {
    await f?.close();
  });

  it('closes an open tcp connection within a second or so of the policy that no longer allows it, and refuses new ones', async () => {
    const v1 = await f.admin.call<{ bundle_version: number }>('POST', '/v1/policies', { files: { 'connect.cedar': CONNECT_POLICY }, reason: 'frontend connects to orders' });
    const orders = await workload('orders', ORDERS, { inbound: inboundTo(echo.port, 'tcp') });
    const frontend = await workload('frontend', FRONTEND, { outbounds: outboundTo(orders.inbound!.port, ORDERS) });
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
    await f.admin.call('POST', '/v1/policies', { files: { 'other.cedar': NO_CONNECT_POLICY }, reason: 'frontend may no longer connect' });
    const at = await Promise.race([closed, new Promise<number>((r) => setTimeout(() => r(0), 10_000))]);
    expect(at, 'the connection stayed open after the policy change').toBeGreaterThan(0);
    const inForce = await installed;
    console.log(`tcp connection closed ${at - t0} ms after the policy apply was sent (${at - inForce} ms after the bundle was installed)`);
    expect(at - inForce).toBeLessThan(1000);
    expect(orders.inbound!.stats.rejudged).toBe(1);

    // A new connection is denied at connect: nothing reaches the app.
    const before = echo.bytes;
    const again = netConnect({ host: '127.0.0.1', port: frontend.outbounds[0]!.port });
    again.on('error', () => {});
    again.write('must not arrive');
    await new Promise((r) => again.once('close', r));
    expect(echo.bytes).toBe(before);
  }, 40_000);
});
