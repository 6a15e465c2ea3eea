/**
 * One agent per node (issue 13, item 5): one node agent serving four workloads against a real
 * control plane. Each workload has its own entry, SVID, inbound and outbound proxies; they call
 * each other through their proxies and are judged by the node's one enforcer with the callee's
 * own SPIFFE ID and site; the node's one Workload API socket answers each caller (this process, a
 * child process, another child) with the SVID of the workload its selectors match. A bad node
 * config is refused by `tessera agent --node` before anything joins.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startNodeAgent, type NodeAgent } from '../src/agent/per-node/node-agent.js';
import { parseNodeConfig } from '../src/agent/per-node/config.js';
import { AgentMetrics } from '../src/agent/metrics.js';
import { silentLogger } from '../src/core/log.js';
import { Fabric } from './support/fabric.js';
import { freePort, runTessera } from './support/process.js';

const TD = 'tessera.test';
const WEB = `spiffe://${TD}/shop/web`;
const ORDERS = `spiffe://${TD}/shop/orders`;
const PAYMENTS = `spiffe://${TD}/shop/payments`;
const BATCH = `spiffe://${TD}/shop/batch`;
const uid = process.getuid!();

/** A child process that, on a line on its stdin, asks the Workload API for its X.509-SVID and prints the SPIFFE ID (or the error code). */
const FETCH_SCRIPT = `
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
const [proto, socket] = process.argv.slice(1);
process.stdout.write('ready\\n');
process.stdin.once('data', () => {
  const def = protoLoader.loadSync(proto, { keepCase: true, defaults: true, oneofs: true });
  const Ctor = grpc.loadPackageDefinition(def).SpiffeWorkloadAPI;
  const client = new Ctor('unix:' + socket, grpc.credentials.createInsecure());
  const md = new grpc.Metadata();
  md.set('workload.spiffe.io', 'true');
  const stream = client.FetchX509SVID({}, md);
  stream.once('data', (m) => { process.stdout.write(m.svids[0].spiffe_id + '\\n'); stream.cancel(); client.close(); });
  stream.once('error', (e) => { if (e.code !== grpc.status.CANCELLED) { process.stdout.write('error ' + e.code + '\\n'); client.close(); } });
});
`;

interface Caller { proc: ChildProcess; answer: Promise<string> }

async function startCaller(proto: string, socket: string): Promise<Caller> {
  const proc = spawn(process.execPath, ['--input-type=module', '-e', FETCH_SCRIPT, proto, socket], { stdio: ['pipe', 'pipe', 'inherit'], cwd: process.cwd() });
  let out = '';
  const lines: ((l: string) => void)[] = [];
  proc.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    let nl;
    while ((nl = out.indexOf('\n')) >= 0) {
      const line = out.slice(0, nl);
      out = out.slice(nl + 1);
      lines.shift()?.(line);
    }
  });
  const next = (): Promise<string> => new Promise((r) => lines.push(r));
  const ready = next();
  const answer = next();
  expect(await ready).toBe('ready');
  return { proc, answer };
}

/** GET through an outbound proxy: status and body. */
async function get(port: number, path: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, body: await res.text() };
}

describe('one agent per node', () => {
  let f: Fabric;
  let node: NodeAgent;
  let socket: string;
  const callers: Caller[] = [];
  const metrics = new AgentMetrics();
  const proto = join(process.cwd(), 'proto', 'workload.proto');

  beforeAll(async () => {
    f = await Fabric.start({ name: 'node-agent' });
    socket = join(f.dir, 'node.sock');
    // Two child processes, started first so that their pids can be written into entries.
    callers.push(await startCaller(proto, socket), await startCaller(proto, socket));
    const [child1, child2] = callers;
    const entries: [string, string[], Record<string, string>][] = [
      [WEB, [`unix:uid:${uid}`, `unix:pid:${process.pid}`], { site: 'cloud-eu' }],
      [ORDERS, [`unix:uid:${uid}`, `unix:pid:${child1!.proc.pid}`], { site: 'edge-7' }],
      [PAYMENTS, [`unix:uid:${uid + 1}`], { site: 'cloud-eu' }],
      // Matches every process of this user: the caller that matches nothing more specific gets it.
      [BATCH, [`unix:uid:${uid}`], { site: 'cloud-eu' }],
    ];
    for (const [id, selectors, attributes] of entries) await f.admin.call('POST', '/v1/entries', { spiffe_id: id, selectors, attributes });
    // Decided with the callee's own site: web → orders only at edge-7 (orders' site, not the node's first workload's).
    await f.admin.call('POST', '/v1/policies', {
      reason: 'node agent test',
      files: {
        'calls.cedar': `
permit (principal == Tessera::Workload::"${WEB}", action == Tessera::Action::"http:request", resource == Tessera::Workload::"${ORDERS}") when { context.site == "edge-7" };
permit (principal == Tessera::Workload::"${ORDERS}", action == Tessera::Action::"http:request", resource == Tessera::Workload::"${PAYMENTS}") when { context.site == "cloud-eu" };
permit (principal == Tessera::Workload::"${WEB}", action == Tessera::Action::"http:request", resource == Tessera::Workload::"${BATCH}") when { context.site == "edge-7" };`,
      },
    });
    const app = (name: string): Promise<number> => f.httpApp((req, res) => {
      req.resume();
      res.end(JSON.stringify({ app: name, caller: req.headers['x-spiffe-id'] ?? null }));
    });
    const [ordersApp, paymentsApp, batchApp] = [await app('orders'), await app('payments'), await app('batch')];
    const token = async (id: string): Promise<string> => (await f.admin.call<{ token: string }>('POST', '/v1/tokens', { entry_id: id, ttl_seconds: 120 })).token;
    // The inbound ports are fixed by the config: free ones, taken from the OS just before.
    const [ordersIn, paymentsIn, batchIn] = [await freePort(), await freePort(), await freePort()];
    const config = parseNodeConfig(JSON.stringify({
      workload_api_socket: socket,
      workloads: [
        { name: 'web', join_token: await token(WEB), outbounds: [`127.0.0.1:0=127.0.0.1:${ordersIn}@${ORDERS}`, `127.0.0.1:0=127.0.0.1:${paymentsIn}@${PAYMENTS}`, `127.0.0.1:0=127.0.0.1:${batchIn}@${BATCH}`] },
        { name: 'orders', join_token: await token(ORDERS), inbound: { listen: `127.0.0.1:${ordersIn}`, app: `127.0.0.1:${ordersApp}` }, outbounds: [`127.0.0.1:0=127.0.0.1:${paymentsIn}@${PAYMENTS}`] },
        { name: 'payments', join_token: await token(PAYMENTS), inbound: { listen: `127.0.0.1:${paymentsIn}`, app: `127.0.0.1:${paymentsApp}` } },
        { name: 'batch', join_token: await token(BATCH), inbound: { listen: `127.0.0.1:${batchIn}`, app: `127.0.0.1:${batchApp}`, mode: 'http' } },
      ],
    }));
    node = await startNodeAgent({ serverUrl: f.url, dataDir: join(f.dir, 'node'), config, log: silentLogger, trustBundleFile: f.bundleFile, allowSampleRate: 1, agent: { watchSeconds: 5 }, metrics });
    const { version } = await f.admin.call<{ version: number }>('GET', '/v1/policy/bundle');
    for (let i = 0; node.enforcer.version < version && i < 200; i++) await new Promise((r) => setTimeout(r, 50));
  }, 30_000);

  afterAll(async () => {
    for (const c of callers) c.proc.kill();
    await node?.close();
    await f?.close();
  });

  it('each workload has its own identity and state directory', () => {
    expect(node.workloads.map((w) => w.agent.spiffeId)).toEqual([WEB, ORDERS, PAYMENTS, BATCH]);
    expect(readdirSync(join(f.dir, 'node', 'workloads')).sort()).toEqual(['batch', 'orders', 'payments', 'web']);
    for (const name of ['web', 'orders']) expect(existsSync(join(f.dir, 'node', 'workloads', name, 'svid.pem'))).toBe(true);
    const serials = new Set(node.workloads.map((w) => w.agent.current()!.certPem));
    expect(serials.size).toBe(4);
  });

  it('workloads call each other through their own proxies, with their own SPIFFE IDs, judged with the callee\'s identity and site', async () => {
    const [web, orders] = node.workloads;
    const [toOrders, toPayments, toBatch] = web!.proxies.outbounds.map((o) => o.port!);
    // web → orders: allowed (orders' site is edge-7); the app sees web's ID.
    const a = await get(toOrders!, '/orders/81723');
    expect(a.status).toBe(200);
    expect(JSON.parse(a.body)).toEqual({ app: 'orders', caller: WEB });
    // orders → payments: allowed at payments' site (cloud-eu); the app sees orders' ID, not web's.
    const b = await get(orders!.proxies.outbounds[0]!.port!, '/pay');
    expect(b.status).toBe(200);
    expect(JSON.parse(b.body)).toEqual({ app: 'payments', caller: ORDERS });
    // web → payments: no policy permits it. web → batch: permitted only at edge-7, and batch is at cloud-eu.
    expect((await get(toPayments!, '/pay')).status).toBe(403);
    expect((await get(toBatch!, '/x')).status).toBe(403);
    // The decisions were recorded about each callee, and shipped as the callee itself.
    await Promise.all(node.workloads.map(async (w) => { await node.enforcer.decisions.flush(); await w.decisions.flush(); }));
    const audit = await f.admin.call<{ records: { actor: string; target: string; outcome: string; detail: { principal?: string; action?: string; context?: { site?: string } } }[] }>('GET', '/v1/audit?action=decision&limit=50');
    const seen = audit.records.filter((r) => r.detail.action === 'http:request')
      .map((r) => `${r.detail.principal ?? '?'} -> ${r.target} at ${r.detail.context?.site ?? '?'} by ${r.actor}: ${r.outcome}`).sort();
    expect(seen).toEqual([
      `${ORDERS} -> ${PAYMENTS} at cloud-eu by ${PAYMENTS}: success`,
      `${WEB} -> ${BATCH} at cloud-eu by ${BATCH}: denied`,
      `${WEB} -> ${ORDERS} at edge-7 by ${ORDERS}: success`,
      `${WEB} -> ${PAYMENTS} at cloud-eu by ${PAYMENTS}: denied`,
    ]);
    // One metrics registry for the node: each edge with its own callee.
    const text = await metrics.registry.metrics();
    expect(text).toContain(`tessera_sidecar_edge_decisions_total{caller="${WEB}",callee="${ORDERS}",outcome="allow"} 1`);
    expect(text).toContain(`tessera_sidecar_edge_decisions_total{caller="${ORDERS}",callee="${PAYMENTS}",outcome="allow"} 1`);
    expect(text).toContain(`tessera_sidecar_edge_decisions_total{caller="${WEB}",callee="${PAYMENTS}",outcome="deny"} 1`);
    expect(text).toContain('tessera_sidecar_decisions_total{outcome="deny"} 2');
    expect(Number(/^tessera_svid_time_to_expiry_seconds (\S+)$/m.exec(text)?.[1])).toBeGreaterThan(3000);
    expect(Number(/^tessera_sidecar_received_bytes_total (\S+)$/m.exec(text)?.[1])).toBeGreaterThan(0);
  });

  it('the one Workload API socket answers each caller with the SVID its selectors match (the most specific entry)', async () => {
    const { answer: child1 } = callers[0]!;
    const { answer: child2 } = callers[1]!;
    for (const c of callers) c.proc.stdin!.write('go\n');
    // child 1: uid + its pid → orders; child 2: only the uid entry → batch.
    expect(await child1).toBe(ORDERS);
    expect(await child2).toBe(BATCH);
    // This process: uid + its pid → web (payments' entry is another uid: nobody here gets it).
    const here = await startCallerInProcess(proto, socket);
    expect(here).toBe(WEB);
  });

  it('a rotation of one workload changes only its own SVID, and traffic keeps flowing', async () => {
    const [web, orders, payments] = node.workloads;
    const before = node.workloads.map((w) => w.agent.current()!.certPem);
    await orders!.agent.renew();
    const after = node.workloads.map((w) => w.agent.current()!.certPem);
    expect(after[1]).not.toBe(before[1]);
    expect([after[0], after[2], after[3]]).toEqual([before[0], before[2], before[3]]);
    expect((await get(web!.proxies.outbounds[0]!.port!, '/after-rotation')).status).toBe(200);
    expect((await get(orders!.proxies.outbounds[0]!.port!, '/after-rotation')).status).toBe(200);
    expect(payments!.proxies.inbound!.stats.identityRefused).toBe(0);
  });

  it('one trust bundle long poll for the node: a CA prepared on the control plane reaches every workload', async () => {
    expect(node.workloads.every((w) => w.agent.trustedCas().length === 1)).toBe(true);
    await f.admin.call('POST', '/v1/ca/rotate', { grace_seconds: 600 });
    for (let i = 0; i < 100 && !node.workloads.every((w) => w.agent.trustedCas().length === 2); i++) await new Promise((r) => setTimeout(r, 100));
    expect(node.workloads.map((w) => w.agent.trustedCas().length)).toEqual([2, 2, 2, 2]);
    // Still calling each other with the bundle adopted from the first workload's poll.
    expect((await get(node.workloads[0]!.proxies.outbounds[0]!.port!, '/after-ca')).status).toBe(200);
  });

  it('a workload that cannot join stops the whole node, the error naming it (not its token); nothing is left listening', async () => {
    const port = await freePort();
    const { token } = await f.admin.call<{ token: string }>('POST', '/v1/tokens', { entry_id: PAYMENTS, ttl_seconds: 120 });
    const config = parseNodeConfig(JSON.stringify({ workloads: [
      { name: 'payments', join_token: token, inbound: { listen: `127.0.0.1:${port}`, app: '127.0.0.1:1' } },
      { name: 'ghost', join_token: 'not-a-real-token' },
    ] }));
    const err = await startNodeAgent({ serverUrl: f.url, dataDir: join(f.dir, 'ghost-node'), config, log: silentLogger, trustBundleFile: f.bundleFile }).then(() => undefined, (e: unknown) => e as { code: string; message: string });
    expect(err?.message).toMatch(/^workload "ghost": /);
    expect(err?.message).not.toContain('not-a-real-token');
    // The port of the workload that did join is free again.
    const srv = (await import('node:net')).createServer();
    await new Promise<void>((resolve, reject) => { srv.once('error', reject); srv.listen(port, '127.0.0.1', resolve); });
    await new Promise((r) => srv.close(r));
  });

  it('tessera agent --node refuses a bad config before joining anything, with a clear error and exit status 2', async () => {
    const dir = join(f.dir, 'bad');
    mkdirSync(dir);
    const file = join(dir, 'node.json');
    const { token } = await f.admin.call<{ token: string }>('POST', '/v1/tokens', { entry_id: WEB, ttl_seconds: 120 });
    writeFileSync(file, JSON.stringify({ workloads: [
      { name: 'web', join_token: token, inbound: { listen: '127.0.0.1:18443', app: '127.0.0.1:8080' } },
      { name: 'orders', inbound: { listen: '127.0.0.1:18443', app: '127.0.0.1:8081' } },
    ] }));
    const r = await runTessera(['--json', '--server', f.url, 'agent', '--node', file, '--data-dir', join(dir, 'data'), '--trust-bundle', f.bundleFile]);
    expect(r.status).toBe(2);
    expect(JSON.parse(r.stdout.trim().split('\n').pop()!)).toMatchObject({
      error: { code: 'TESSERA_CONFIG_INVALID', message: 'node config: workloads[1].inbound.listen uses the same port as workloads[0].inbound.listen' },
    });
    expect(r.stderr + r.stdout).not.toContain(token);
    expect(existsSync(join(dir, 'data'))).toBe(false); // nothing started, the token is still unused
    const flags = await runTessera(['--server', f.url, 'agent', '--node', file, '--data-dir', join(dir, 'data'), '--inbound', '127.0.0.1:1']);
    expect(flags.status).toBe(2);
    expect(flags.stderr).toContain('--inbound cannot be used with --node');
  }, 30_000);
});

/** FetchX509SVID from this process: the SPIFFE ID it is given. */
async function startCallerInProcess(proto: string, socket: string): Promise<string> {
  const grpc = await import('@grpc/grpc-js');
  const protoLoader = await import('@grpc/proto-loader');
  const def = protoLoader.loadSync(proto, { keepCase: true, defaults: true, oneofs: true });
  const Ctor = (grpc.loadPackageDefinition(def) as unknown as Record<string, new (a: string, c: unknown) => { FetchX509SVID(r: object, m: unknown): NodeJS.EventEmitter & { cancel(): void }; close(): void }>).SpiffeWorkloadAPI!;
  const client = new Ctor(`unix:${socket}`, grpc.credentials.createInsecure());
  const md = new grpc.Metadata();
  md.set('workload.spiffe.io', 'true');
  const stream = client.FetchX509SVID({}, md);
  try {
    const [m] = await once(stream, 'data') as [{ svids: { spiffe_id: string }[] }];
    return m.svids[0]!.spiffe_id;
  } finally {
    stream.on('error', () => {});
    stream.cancel();
    client.close();
  }
}
