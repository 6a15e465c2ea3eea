/**
 * Sidecar telemetry end to end: a real control plane (in this process), two agents with their
 * sidecars and an HTTP app, all on 127.0.0.1:
 *   client ─plain→ frontend outbound ─mTLS→ orders inbound (http mode) ─plain→ app.
 * Both ends ship their windows; the control plane stores what each reported: the same requests
 * (one request per connection here, so the caller's connections are the callee's requests), the
 * same bytes on the wire between the sidecars, the callee's denials. Then the control plane goes
 * away and comes back on the same port: the windows closed meanwhile arrive after it returns.
 */
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Sidecar } from '../src/agent/sidecar.js';
import type { TelemetryWindow } from '../src/core/risk/types.js';
import type { TelemetryListResponse } from '../src/core/wire/control-plane.js';
import { Fabric, inboundTo, outboundTo, type WorkloadOptions } from './support/fabric.js';
import { runTessera, waitFor } from './support/process.js';

const TD = 'tessera.test';
const FRONTEND = `spiffe://${TD}/shop/frontend`;
const ORDERS = `spiffe://${TD}/shop/orders`;
const POLICY = `@id("frontend-reads-orders")
permit (principal, action == Tessera::Action::"http:request", resource)
when { principal has app && principal.app == "shop-frontend" && resource has app && resource.app == "orders" && context.path like "/orders*" };`;

type Row = TelemetryListResponse['windows'][number];

function sum(rows: Row[], k: keyof TelemetryWindow): number {
  return rows.reduce((n, r) => n + (r[k] as number), 0);
}

describe('telemetry: both ends of an edge, shipped and ingested', () => {
  let f: Fabric;
  let appPort = 0;
  let outPort = 0;
  const sidecars = (): Sidecar[] => f.workloads.map((w) => w.sidecar);

  async function workload(name: string, id: string, opts: WorkloadOptions): Promise<Sidecar> {
    return (await f.workload(name, id, opts)).sidecar;
  }

  /** One request on its own connection through the frontend's outbound proxy. */
  function call(method: string, path: string, body = ''): Promise<number> {
    return new Promise((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: outPort, method, path, agent: false, headers: { connection: 'close', 'content-length': Buffer.byteLength(body) } }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
      req.end(body);
    });
  }

  async function windows(): Promise<Row[]> {
    return (await f.admin.call<TelemetryListResponse>('GET', `/v1/telemetry?identity=${encodeURIComponent(ORDERS)}&limit=10000`)).windows;
  }

  beforeAll(async () => {
    f = await Fabric.start({
      name: 'telemetry', sidecar: { policyWatchSeconds: 5, telemetry: { windowSeconds: 1 } },
      entries: { [FRONTEND]: { app: 'shop-frontend', site: 'paris' }, [ORDERS]: { app: 'orders', site: 'lyon' } },
    });
    appPort = await f.httpApp((req, res) => {
      req.resume();
      req.on('end', () => {
        if (req.url === '/orders/fail') res.writeHead(503).end('down');
        else res.end(`order ${req.url} ${'x'.repeat(1000)}`);
      });
    });
  }, 30_000);

  afterAll(async () => {
    await f?.close();
  });

  it('both ends report the same requests and bytes; the callee its denials, 5xx, paths; sites from the entries', async () => {
    const v = await f.admin.call<{ bundle_version: number }>('POST', '/v1/policies', { files: { 'orders.cedar': POLICY }, reason: 'frontend reads orders' });
    const orders = await workload('orders', ORDERS, { inbound: inboundTo(appPort) });
    const frontend = await workload('frontend', FRONTEND, { outbounds: outboundTo(orders.inbound!.port, ORDERS) });
    outPort = frontend.outbounds[0]!.port;
    await waitFor('both to enforce the policy', () => orders.enforcer.version >= v.bundle_version && frontend.enforcer.version >= v.bundle_version, 10_000);

    const statuses: number[] = [];
    for (let i = 0; i < 20; i++) statuses.push(await call('GET', `/orders/${i % 5}`));
    for (let i = 0; i < 4; i++) statuses.push(await call('POST', '/admin', 'let me in'));
    statuses.push(await call('GET', '/orders/fail'));
    expect(statuses.filter((s) => s === 200)).toHaveLength(20);
    expect(statuses.filter((s) => s === 403)).toHaveLength(4);
    expect(statuses.filter((s) => s === 503)).toHaveLength(1);

    // Windows of 1 s: everything closed and shipped within a few seconds.
    let rows: Row[] = [];
    await waitFor('both ends\' windows at the control plane', async () => {
      rows = await windows();
      const callee = rows.filter((r) => r.reporter === 'callee');
      const caller = rows.filter((r) => r.reporter === 'caller');
      return sum(callee, 'requests') === 25 && sum(caller, 'requests') === 25 && sum(caller, 'bytes_out') === sum(callee, 'bytes_out') && sum(caller, 'bytes_in') === sum(callee, 'bytes_in');
    }, 15_000, 250).catch(() => {});
    const callee = rows.filter((r) => r.reporter === 'callee');
    const caller = rows.filter((r) => r.reporter === 'caller');
    expect(callee.every((r) => r.reported_by === ORDERS && r.caller === FRONTEND && r.callee === ORDERS && r.action === 'http')).toBe(true);
    expect(caller.every((r) => r.reported_by === FRONTEND && r.caller === FRONTEND && r.callee === ORDERS && r.action === 'tcp')).toBe(true);
    expect(callee[0]).toMatchObject({ caller_site: 'paris', callee_site: 'lyon', window_s: 1 });
    expect(caller[0]).toMatchObject({ caller_site: 'paris', callee_site: 'lyon' });
    expect({ callee: sum(callee, 'requests'), caller: sum(caller, 'requests') }).toEqual({ callee: 25, caller: 25 });
    expect(sum(callee, 'denials')).toBe(4);
    expect(sum(callee, 'errors')).toBe(1);
    expect(sum(caller, 'errors')).toBe(0);
    // The same bytes on the wire between the sidecars, counted at each end.
    // Edge-relative bytes: both ends name caller → callee bytes_out and callee → caller bytes_in.
    expect(sum(callee, 'bytes_out')).toBeGreaterThan(25 * 50);
    expect(sum(callee, 'bytes_in')).toBeGreaterThan(20 * 1000);
    expect(sum(caller, 'bytes_out')).toBe(sum(callee, 'bytes_out'));
    expect(sum(caller, 'bytes_in')).toBe(sum(callee, 'bytes_in'));
    // Window by window the ends agree within the skew of a boundary (a request counted at the
    // caller's connect and at the callee's request head).
    const byTs = new Map<string, number>();
    for (const r of rows) byTs.set(r.ts, (byTs.get(r.ts) ?? 0) + (r.reporter === 'caller' ? r.requests : -r.requests));
    const skew = [...byTs.values()].reduce((a, b) => a + Math.abs(b), 0);
    expect(skew).toBeLessThanOrEqual(4);
    expect(callee.filter((r) => r.first_seen === true)).toHaveLength(1);
    expect(caller.filter((r) => r.first_seen === true)).toHaveLength(1);
    expect(Math.max(...callee.map((r) => r.paths_distinct))).toBeGreaterThanOrEqual(2);
    expect(Math.max(...callee.map((r) => r.latency_p99_ms))).toBeGreaterThan(0);
  }, 60_000);

  it('windows closed while the control plane is away are shipped once it is back', async () => {
    const before = await windows();
    const shipped = sidecars().map((s) => s.telemetry!.shipper.shipped);
    await f.stopControlPlane();
    for (let i = 0; i < 6; i++) expect(await call('GET', `/orders/offline-${i}`)).toBe(200);
    // At least one window closed and failed to ship at each end.
    await waitFor('windows queued at both ends', () => sidecars().every((s) => s.telemetry!.shipper.queued > 0 && s.telemetry!.shipper.failures > 0), 10_000);
    expect(sidecars().map((s) => s.telemetry!.shipper.shipped)).toEqual(shipped);
    await f.startControlPlane();
    let rows: Row[] = [];
    await waitFor('the queued windows at the control plane', async () => {
      rows = (await windows()).filter((r) => !before.some((b) => b.id === r.id));
      return sum(rows.filter((r) => r.reporter === 'callee'), 'requests') === 6 && sum(rows.filter((r) => r.reporter === 'caller'), 'requests') === 6;
    }, 40_000, 250).catch(() => {});
    expect({ callee: sum(rows.filter((r) => r.reporter === 'callee'), 'requests'), caller: sum(rows.filter((r) => r.reporter === 'caller'), 'requests') }).toEqual({ callee: 6, caller: 6 });
    expect(sidecars().every((s) => s.telemetry!.shipper.overflowed === 0 && s.telemetry!.shipper.rejected === 0)).toBe(true);
  }, 90_000);

  it('tessera telemetry export writes the stored windows as JSON lines, the interchange format', async () => {
    const env = { TESSERA_ADMIN_DIR: f.cp.adminDir };
    const stored = await windows();
    const r = await runTessera(['telemetry', 'export', '--identity', ORDERS, '--since', '1h'], { env });
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.length).toBe(stored.length);
    expect(lines.length).toBeGreaterThan(2);
    // The records alone: no row id, no reporter identity.
    expect(lines[0]).toEqual((({ id: _i, reported_by: _r, ...w }) => w)(stored[0]!));
    expect(Object.keys(lines[0]!)).not.toContain('id');
    expect(r.stderr).toContain(`exported ${stored.length} telemetry window(s)`);
    const none = await runTessera(['telemetry', 'export', '--since', new Date(Date.now() + 3600_000).toISOString()], { env });
    expect({ status: none.status, out: none.stdout }).toEqual({ status: 0, out: '' });
    for (const bad of [['--since', 'yesterday'], ['--identity', 'orders']]) {
      const b = await runTessera(['telemetry', 'export', ...bad], { env });
      expect(b.status, bad.join(' ')).toBe(2);
      expect(b.stderr).toContain('TESSERA_CONFIG_INVALID');
    }
  }, 60_000);
});
