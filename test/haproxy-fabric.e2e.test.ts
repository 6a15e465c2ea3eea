/**
 * `--data-plane haproxy` inside a real sidecar: a control plane in this process, the orders agent
 * with HAProxy as its inbound (deciding over SPOE with the real policy enforcer and signed
 * bundles), the frontend agent's Node outbound. A policy change must flush HAProxy's decision
 * cache: once the agent has installed the new bundle, a cached allow is never served again.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import type { Sidecar } from '../src/agent/sidecar.js';
import type { HaproxyInbound } from '../src/agent/haproxy/inbound.js';
import { findHaproxy } from '../src/agent/haproxy/inbound.js';
import { Fabric, inboundTo, outboundTo } from './support/fabric.js';
import { CLI, runTessera, waitFor } from './support/process.js';
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const TD = 'tessera.test';
const FRONTEND = `spiffe://${TD}/shop/frontend`;
const ORDERS = `spiffe://${TD}/shop/orders`;
const BILLING = `spiffe://${TD}/shop/billing`;

const READS = (paths: string): string => `@id("frontend-reads-orders")
permit (principal, action == Tessera::Action::"http:request", resource)
when { principal has app && principal.app == "shop-frontend" && context.method == "GET" && context.path like "${paths}" };`;

function get(port: number, agent: HttpAgent, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
    req.end();
  });
}

describe.skipIf(findHaproxy() === undefined)('sidecar with --data-plane haproxy', () => {
  let f: Fabric;
  let orders: Sidecar;
  let frontend: Sidecar;
  const agent = new HttpAgent({ keepAlive: true, maxSockets: 1 });

  beforeAll(async () => {
    f = await Fabric.start({
      name: 'haproxy-fabric', sidecar: { policyWatchSeconds: 5 },
      entries: { [FRONTEND]: { app: 'shop-frontend' }, [ORDERS]: { app: 'orders' }, [BILLING]: { app: 'billing' } },
    });
  }, 30_000);

  afterAll(async () => {
    agent.destroy();
    await f?.close();
  });

  it('decides with the signed policy over SPOE, sets x-spiffe-id, and no cached allow survives a policy change', async () => {
    const v1 = await f.admin.call<{ bundle_version: number }>('POST', '/v1/policies', { files: { 'reads.cedar': READS('/orders/*') }, reason: 'frontend reads orders' });
    const app = await f.httpApp((req, res) => res.end(JSON.stringify({ id: req.headers['x-spiffe-id'] ?? null, url: req.url })));
    orders = (await f.workload('orders', ORDERS, { inbound: { ...inboundTo(app), dataPlane: 'haproxy' } })).sidecar;
    frontend = (await f.workload('frontend', FRONTEND, { outbounds: outboundTo(orders.inbound!.port, ORDERS) })).sidecar;
    await waitFor('both to hold v1', () => orders.enforcer.version >= v1.bundle_version && frontend.enforcer.version >= v1.bundle_version, 10_000);
    const port = frontend.outbounds[0]!.port;

    const first = await get(port, agent, '/orders/7');
    expect(first.status).toBe(200);
    expect(JSON.parse(first.body)).toEqual({ id: FRONTEND, url: '/orders/7' });
    const denied = await get(port, agent, '/admin');
    expect(denied.status).toBe(403);
    expect(JSON.parse(denied.body)).toMatchObject({ error: { code: 'TESSERA_PROXY_DENIED' } });
    // Cached in HAProxy: the second identical request is not decided by the agent again.
    const ib = orders.inbound as HaproxyInbound;
    expect((await get(port, agent, '/orders/7')).status).toBe(200);
    expect(await ib.runtime.tableUsed('tessera_cache')).toBe(1);

    // /orders/7 is no longer allowed. From the moment the bundle is installed, a request may see
    // the old answer only until the flush lands; after the first refusal, never again.
    const installed = new Promise<number>((r) => orders.enforcer.once('policy', () => r(Date.now())));
    await f.admin.call('POST', '/v1/policies', { files: { 'reads.cedar': READS('/orders/public/*') }, reason: 'orders are private now' });
    const at = await installed;
    const statuses: number[] = [];
    let refusedAt = 0;
    for (let i = 0; i < 200 && Date.now() - at < 5000; i++) {
      const r = await get(port, agent, '/orders/7');
      statuses.push(r.status);
      if (r.status === 403 && refusedAt === 0) refusedAt = Date.now();
      if (refusedAt !== 0 && statuses.filter((s) => s === 403).length >= 20) break;
    }
    expect(refusedAt, 'a cached allow survived the policy change').toBeGreaterThan(0);
    const firstRefusal = statuses.indexOf(403);
    expect(statuses.slice(firstRefusal).every((s) => s === 403)).toBe(true);
    console.log(`HAProxy's decision cache flushed ${refusedAt - at} ms after the bundle was installed (${firstRefusal} request(s) answered from it meanwhile)`);
    expect(refusedAt - at).toBeLessThan(1000);
    expect((await get(port, agent, '/orders/public/1')).status).toBe(200);
  }, 40_000);

  it('`tessera agent --data-plane haproxy` runs HAProxy as its child, serves through it, and leaves nothing behind when stopped', async () => {
    const app = await f.httpApp((req, res) => res.end(JSON.stringify({ id: req.headers['x-spiffe-id'] ?? null })));
    const { token } = await f.admin.call<{ token: string }>('POST', '/v1/tokens', { entry_id: BILLING, ttl_seconds: 120 });
    const dataDir = mkdtempSync(join(tmpdir(), 'hap-cli-'));
    const child = spawn(process.execPath, [CLI, '--json', '--server', f.url, 'agent', '--data-dir', dataDir, '--join-token', token, '--trust-bundle', f.bundleFile,
      '--inbound', '127.0.0.1:0', '--app', `127.0.0.1:${app}`, '--data-plane', 'haproxy', '--policy-watch', '5s'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    child.stdout!.on('data', (d: Buffer) => (log += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
    try {
      const line = await waitFor('the agent to listen', () => {
        if (child.exitCode !== null) throw new Error(`agent exited: ${log}`);
        return log.split('\n').find((l) => l.includes('inbound proxy listening'));
      }, 30_000);
      const port = (JSON.parse(line) as { port: number }).port;
      const caller = (await f.workload('frontend-cli', FRONTEND, { outbounds: outboundTo(port, BILLING) })).sidecar;
      await waitFor('the policy', () => caller.enforcer.version > 0 && log.includes('policy bundle in force'), 10_000);
      // The policy in force (from the first test) lets the frontend GET /orders/public/*.
      const ok = await get(caller.outbounds[0]!.port, new HttpAgent(), '/orders/public/9');
      expect(ok.status).toBe(200);
      expect(JSON.parse(ok.body)).toEqual({ id: FRONTEND });
      expect((await get(caller.outbounds[0]!.port, new HttpAgent(), '/elsewhere')).status).toBe(403);
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
    expect(child.exitCode).toBe(0);
    // HAProxy went with the agent: its socket answers no more.
    const { RuntimeApi } = await import('../src/agent/haproxy/runtime-api.js');
    await expect(new RuntimeApi({ socketPath: join(dataDir, 'haproxy', 'admin.sock'), timeoutMs: 1000 }).raw('show info')).rejects.toThrow();
  }, 60_000);

  it('refuses --data-plane haproxy in tcp mode, and unknown data planes, before spending a join token', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'hap-cli-bad-'));
    const base = ['--json', '--server', f.url, 'agent', '--data-dir', dataDir, '--join-token', 'unused', '--inbound', '127.0.0.1:0', '--app', '127.0.0.1:1'];
    const tcp = await runTessera([...base, '--mode', 'tcp', '--data-plane', 'haproxy']);
    expect(tcp.status).toBe(2);
    expect(JSON.parse(tcp.stdout)).toMatchObject({ error: { code: 'TESSERA_CONFIG_INVALID' } });
    expect(tcp.stdout).toContain('http mode only');
    const bogus = await runTessera([...base, '--data-plane', 'envoy']);
    expect(bogus.status).toBe(2);
    expect(bogus.stderr).toContain('--data-plane');
  });
});
