/**
 * Policy end to end: `tessera server` as a child process (so it can be SIGKILLed), agents in this
 * process (Agent + startSidecar), tiny node:http apps behind them, all on 127.0.0.1:
 *
 *   client ─plain→ frontend outbound ─mTLS→ orders inbound (http mode, Cedar per request) ─plain→ app
 *
 * (a) allowed and denied requests, the caller's verified ID for the app, denials audited;
 * (b) data residency across sites; (c) how fast a policy change reaches 20 agents;
 * (d) a control-plane outage: decisions from the cached bundle, spilled records delivered later;
 * (e) the policy CLI: test, apply --dry-run, diff, history, show, rollback.
 */
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, request as httpRequest, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent, type SvidEvent } from '../src/agent/agent.js';
import type { ApiClient } from '../src/common/api-client.js';
import { startSidecar, type Sidecar } from '../src/agent/sidecar.js';
import { readPolicyDir } from '../src/admin/policy-dir.js';
import { silentLogger } from '../src/core/log.js';
import { CLI, freePort, ServerProcess, waitFor } from './support/process.js';

const TD = 'example.org';
const FRONTEND = `spiffe://${TD}/shop/frontend`;
const EDGE_FRONTEND = `spiffe://${TD}/edge-7/shop/frontend`;
const ORDERS = `spiffe://${TD}/shop/orders`;
const FLEET_SIZE = 20;
const FIXTURES = fileURLToPath(new URL('./fixtures/policy/', import.meta.url));
const fixture = (name: string): string => join(FIXTURES, name);

interface AuditRow { id: number; ts: string; actor: string; action: string; target: string; outcome: string; code: string; detail: { principal?: string; action?: string; context?: Record<string, unknown>; reasons?: string[] } }
interface Reply { status: number; headers: IncomingHttpHeaders; text: string; json: any }

/** One plain HTTP request on its own connection (so every call is a fresh trip through both proxies). */
function call(port: number, method: string, path: string, headers: Record<string, string> = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try { json = JSON.parse(text); } catch { json = undefined; }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
      });
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error('request timed out')));
    req.end();
  });
}

/** The orders application: answers with what it saw, including every x-spiffe-id header it got. */
async function startApp(): Promise<{ server: Server; port: number; requests: number }> {
  const state = { server: undefined as unknown as Server, port: 0, requests: 0 };
  state.server = createServer((req, res) => {
    state.requests++;
    const ids: string[] = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2) if (req.rawHeaders[i]!.toLowerCase() === 'x-spiffe-id') ids.push(req.rawHeaders[i + 1]!);
    req.resume();
    req.on('end', () => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ method: req.method, url: req.url, ids }));
    });
  });
  state.server.listen(0, '127.0.0.1');
  await once(state.server, 'listening');
  state.port = (state.server.address() as AddressInfo).port;
  return state;
}

describe('policy end to end', () => {
  let dir: string;
  let server: ServerProcess;
  let admin: ApiClient;
  let app: Awaited<ReturnType<typeof startApp>>;
  const agents: Agent[] = [];
  const sidecars: Sidecar[] = [];
  let orders: { agent: Agent; sidecar: Sidecar };
  let frontend: { agent: Agent; sidecar: Sidecar };
  let edge: { agent: Agent; sidecar: Sidecar };
  let inboundPort: number;
  let v1: { version: number; hash: string; bundle_version: number };
  const env = (): NodeJS.ProcessEnv => ({ ...process.env, TESSERA_ADMIN_DIR: server.adminDir });

  async function token(spiffeId: string): Promise<string> {
    return (await admin.call<{ token: string }>('POST', '/v1/tokens', { entry_id: spiffeId, ttl_seconds: 120 })).token;
  }

  /** An agent for `spiffeId` (joining with a token unless its data directory holds an identity) and its sidecar. */
  async function startWorkload(name: string, spiffeId: string | undefined, opts: Omit<Parameters<typeof startSidecar>[1], 'dataDir' | 'log'> = {}): Promise<{ agent: Agent; sidecar: Sidecar }> {
    const dataDir = join(dir, name);
    const agent = new Agent({
      serverUrl: server.url, dataDir, log: silentLogger, watchSeconds: 5, trustBundleFile: join(server.dataDir, 'bundle.pem'),
      ...(spiffeId ? { joinToken: await token(spiffeId) } : {}),
    });
    agents.push(agent);
    await agent.start();
    const sidecar = await startSidecar(agent, { dataDir, log: silentLogger, ...opts });
    sidecars.push(sidecar);
    return { agent, sidecar };
  }

  async function stopWorkload(w: { agent: Agent; sidecar: Sidecar }): Promise<void> {
    await w.sidecar.close();
    await w.agent.stop();
  }

  async function audit(query: string): Promise<AuditRow[]> {
    return (await admin.call<{ records: AuditRow[] }>('GET', `/v1/audit?${query}`)).records;
  }

  function tessera(args: string[]): { status: number | null; stdout: string; stderr: string; json: any } {
    const r = spawnSync(process.execPath, [CLI, ...args], { env: env(), encoding: 'utf8', timeout: 20_000 });
    let json: unknown;
    try { json = JSON.parse(r.stdout); } catch { json = undefined; }
    return { status: r.status, stdout: r.stdout, stderr: r.stderr, json };
  }

  beforeAll(async () => {
    expect(existsSync(CLI), 'run `npx tsc -p tsconfig.json` first: the test runs dist/src/cli/main.js').toBe(true);
    dir = mkdtempSync(join(tmpdir(), 'tessera-policy-e2e-'));
    server = new ServerProcess(join(dir, 'server'), await freePort(), ['--trust-domain', TD]);
    await server.start();
    admin = server.admin();
    for (const [id, attributes] of [
      [FRONTEND, { app: 'shop-frontend', site: 'cloud-eu' }],
      [EDGE_FRONTEND, { app: 'shop-frontend', site: 'edge-7' }],
      [ORDERS, { app: 'orders', site: 'cloud-eu', compliance: 'pci' }],
    ] as const) {
      await admin.call('POST', '/v1/entries', { spiffe_id: id, attributes });
    }
    const { policies } = readPolicyDir(fixture('shop'));
    v1 = await admin.call('POST', '/v1/policies', { files: policies, reason: 'shop: frontend reads orders' });
    expect(v1.version).toBe(1);

    app = await startApp();
    orders = await startWorkload('orders', ORDERS, { inbound: { listen: { host: '127.0.0.1', port: 0 }, app: { host: '127.0.0.1', port: app.port }, mode: 'http' } });
    inboundPort = orders.sidecar.inbound!.port;
    const outbound = (port = 0) => ({ outbounds: [{ listen: { host: '127.0.0.1', port }, upstream: { host: '127.0.0.1', port: inboundPort, expectedId: ORDERS } }] });
    frontend = await startWorkload('frontend', FRONTEND, outbound());
    edge = await startWorkload('edge-frontend', EDGE_FRONTEND, outbound());
    await waitFor('orders to enforce policy v1', () => orders.sidecar.enforcer.version >= v1.bundle_version, 10_000);
  }, 30_000);

  afterAll(async () => {
    for (const s of sidecars) await s.close().catch(() => {});
    for (const a of agents) await a.stop().catch(() => {});
    if (app) await new Promise<void>((r) => app.server.close(() => r()));
    admin?.close();
    await server?.stop(false);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('(a) allows a GET through both proxies with the verified caller ID, denies a POST with 403 and audits it', async () => {
    const fport = frontend.sidecar.outbounds[0]!.port;
    const ok = await call(fport, 'GET', '/orders/42', { 'x-spiffe-id': 'spiffe://example.org/admin/forged' });
    expect(ok.status, ok.text).toBe(200);
    expect(ok.json).toMatchObject({ method: 'GET', url: '/orders/42' });
    // The app sees exactly one x-spiffe-id: the caller's verified ID, not the forged one.
    expect(ok.json.ids).toEqual([FRONTEND]);

    const requestsBefore = app.requests;
    const t0 = Date.now();
    const denied = await call(fport, 'POST', '/orders/new-a');
    expect(denied.status).toBe(403);
    expect(denied.json).toMatchObject({ error: { code: 'TESSERA_PROXY_DENIED' } });
    expect(app.requests).toBe(requestsBefore);
    // Not a GET on /orders/*: also denied.
    expect((await call(fport, 'GET', '/admin')).status).toBe(403);

    const record = await waitFor('the denial in the audit table', async () =>
      (await audit('action=decision&outcome=denied&limit=1000')).find((r) => r.detail.context?.path === '/orders/new-a'), 5_000, 100);
    const seenMs = Date.now() - t0;
    console.log(`denied POST visible in GET /v1/audit?action=decision after ${seenMs} ms`);
    expect(seenMs).toBeLessThan(2_500);
    expect(record).toMatchObject({
      actor: ORDERS, action: 'decision', target: ORDERS, outcome: 'denied', code: 'DENY',
      detail: { principal: FRONTEND, action: 'http:request', context: expect.objectContaining({ method: 'POST', site: 'cloud-eu' }) },
    });
  });

  it('(b) refuses a workload in edge-7 calling orders in cloud-eu (data residency)', async () => {
    const r = await call(edge.sidecar.outbounds[0]!.port, 'GET', '/orders/b-42');
    expect(r.status).toBe(403);
    expect(r.json).toMatchObject({ error: { code: 'TESSERA_PROXY_DENIED' } });
    // The same request from cloud-eu passes: it is the site that decides.
    expect((await call(frontend.sidecar.outbounds[0]!.port, 'GET', '/orders/b-42')).status).toBe(200);
    const record = await waitFor('the residency denial in the audit table', async () =>
      (await audit('action=decision&outcome=denied&limit=1000')).find((r) => r.detail.context?.path === '/orders/b-42'), 5_000, 100);
    expect(record).toMatchObject({ target: ORDERS, detail: { principal: EDGE_FRONTEND, reasons: ['data-stays-in-site'] } });
  });

  it(`(c) a policy change reaches ${FLEET_SIZE} agents well within a second`, async () => {
    const ids = Array.from({ length: FLEET_SIZE }, (_, i) => `spiffe://${TD}/fleet/member-${i}`);
    for (const id of ids) await admin.call('POST', '/v1/entries', { spiffe_id: id, attributes: { app: 'fleet', site: 'cloud-eu' } });
    const fleet = await Promise.all(ids.map((id, i) => startWorkload(`fleet-${i}`, id)));
    const current = (await admin.call<{ bundle_version: number }>('GET', '/v1/policies')).bundle_version;
    await waitFor('every fleet agent to enforce the current bundle', () => fleet.every((w) => w.sidecar.enforcer.version >= current), 15_000);
    // Let every enforcer settle into its long-poll.
    await new Promise((r) => setTimeout(r, 300));

    const seen: { version: number; at: number }[][] = fleet.map(() => []);
    fleet.forEach((w, i) => w.sidecar.enforcer.on('policy', (e: { version: number }) => seen[i]!.push({ version: e.version, at: performance.now() })));
    const { policies } = readPolicyDir(fixture('fleet'));
    const t0 = performance.now();
    const applied = await admin.call<{ version: number; bundle_version: number }>('POST', '/v1/policies', { files: policies, reason: 'fleet mesh' });
    const answered = performance.now();
    const target = applied.bundle_version;
    await waitFor('every fleet agent to enforce the new bundle', () => seen.every((s) => s.some((e) => e.version >= target)), 10_000, 5);
    const times = seen.map((s) => s.find((e) => e.version >= target)!.at - t0).sort((a, b) => a - b);
    const all = times[times.length - 1]!;
    console.log(
      `policy v${applied.version} (bundle ${target}) in force on all ${FLEET_SIZE} agents ${all.toFixed(0)} ms after the apply was sent ` +
      `(apply answered after ${(answered - t0).toFixed(0)} ms; first agent ${times[0]!.toFixed(0)} ms, ` +
      `median ${times[FLEET_SIZE >> 1]!.toFixed(0)} ms; all ${FLEET_SIZE} agents share this one Node process, so their bundle verifications and Cedar compilations run one after another)`,
    );
    expect(all).toBeLessThan(3_000);
    // And they enforce it: fleet members may connect to each other now.
    const d = fleet[0]!.sidecar.enforcer.authorize({ principal: ids[1]!, action: 'tcp:connect', resource: ids[0]! });
    expect(d).toMatchObject({ allow: true, reasons: ['fleet-mesh'] });
    for (const w of fleet) await stopWorkload(w);
  }, 40_000);

  it('(d) keeps enforcing through a control-plane SIGKILL, and delivers the decisions spilled meanwhile', async () => {
    const fport = frontend.sidecar.outbounds[0]!.port;
    expect((await call(fport, 'GET', '/orders/1')).status).toBe(200);
    await server.kill('SIGKILL');

    // Decisions continue from the bundle in memory...
    expect((await call(fport, 'GET', '/orders/outage-2')).status).toBe(200);
    expect((await call(fport, 'POST', '/orders/new-outage-1')).status).toBe(403);
    expect((await call(edge.sidecar.outbounds[0]!.port, 'GET', '/orders/outage-3')).status).toBe(403);

    // ...and from the bundle cached on disk: restart orders' agent and sidecar with no control plane.
    const version = orders.sidecar.enforcer.version;
    await stopWorkload(orders);
    // The SVID comes from disk (no token): the agent starts without the control plane.
    const restarted = new Agent({ serverUrl: server.url, dataDir: join(dir, 'orders'), log: silentLogger, watchSeconds: 5 });
    agents.push(restarted);
    const svidEvents: SvidEvent[] = [];
    restarted.on('svid', (e: SvidEvent) => svidEvents.push(e));
    await restarted.start();
    expect(svidEvents.map((e) => e.reason)).toEqual(['loaded']);
    const sidecar = await startSidecar(restarted, {
      dataDir: join(dir, 'orders'), log: silentLogger,
      inbound: { listen: { host: '127.0.0.1', port: inboundPort }, app: { host: '127.0.0.1', port: app.port }, mode: 'http' },
    });
    sidecars.push(sidecar);
    orders = { agent: restarted, sidecar };
    expect(orders.sidecar.enforcer.version).toBe(version);
    expect((await call(fport, 'GET', '/orders/outage-4')).status).toBe(200);
    expect((await call(fport, 'POST', '/orders/new-outage-2')).status).toBe(403);

    // The denials could not be shipped: they wait on disk (both sidecars' records, in the same directory).
    const spilled = (): string => ['decisions.spill.jsonl', 'decisions.spill.jsonl.sending']
      .map((f) => join(dir, 'orders', f)).filter((f) => existsSync(f)).map((f) => readFileSync(f, 'utf8')).join('');
    await waitFor('the denials to be spilled to disk', () => ['/orders/new-outage-1', '/orders/outage-3', '/orders/new-outage-2'].every((p) => spilled().includes(`"path":"${p}"`)), 5_000);
    // Nothing is buffered in memory any more: only the spill can bring them to the control plane.
    await new Promise((r) => setTimeout(r, 1_200));

    // The control plane comes back (same port, same data); no new traffic is needed for the spill to arrive.
    const t0 = Date.now();
    await server.start();
    const wanted = ['/orders/new-outage-1', '/orders/outage-3', '/orders/new-outage-2'];
    const records = await waitFor('the spilled denials to reach the audit table', async () => {
      const rows = (await audit('action=decision&outcome=denied&limit=1000')).filter((r) => wanted.includes(String(r.detail.context?.path)));
      return wanted.every((p) => rows.some((r) => r.detail.context?.path === p)) && rows;
    }, 20_000, 200);
    console.log(`decisions spilled during the outage reached the audit table ${Date.now() - t0} ms after the control plane restart began`);
    expect(records.find((r) => r.detail.context?.path === '/orders/outage-3')).toMatchObject({ actor: ORDERS, detail: { principal: EDGE_FRONTEND } });
    // Each exactly once.
    for (const p of wanted) expect(records.filter((r) => r.detail.context?.path === p)).toHaveLength(1);
    await waitFor('the spill to be gone', () => orders.sidecar.enforcer.decisions.spilledBytes === 0, 5_000);
    // Still enforcing, now with the control plane back.
    expect((await call(fport, 'GET', '/orders/5')).status).toBe(200);
  }, 45_000);

  it('(e) tessera policy test | apply --dry-run | diff | history | show | rollback', () => {
    // Offline test cases.
    const pass = tessera(['policy', 'test', '-f', fixture('cases.yaml'), '-p', fixture('shop')]);
    expect(pass.status, pass.stderr).toBe(0);
    expect(pass.stdout).toContain('5 passed, 0 failed');
    expect(pass.stdout).not.toContain('FAIL');
    const passJson = tessera(['--json', 'policy', 'test', '-f', fixture('cases.yaml'), '-p', fixture('shop')]);
    expect(passJson.json).toMatchObject({ passed: 5, failed: 0 });

    const fail = tessera(['policy', 'test', '-f', fixture('cases-failing.yaml'), '-p', fixture('shop')]);
    expect(fail.status).toBe(1);
    expect(fail.stdout).toMatch(/^FAIL\s+frontend creates an order: expected allow, got deny$/m);
    expect(fail.stdout).toMatch(/^ok\s+frontend reads an order/m);
    expect(fail.stdout).toContain('1 passed, 1 failed');
    // The same cases pass against the v2 directory.
    expect(tessera(['policy', 'test', '-f', fixture('cases-failing.yaml'), '-p', fixture('shop-v2')]).status).toBe(0);

    const malformed = tessera(['policy', 'test', '-f', fixture('cases-malformed.yaml'), '-p', fixture('shop')]);
    expect(malformed.status).toBe(1);
    expect(malformed.stderr).toContain('TESSERA_POLICY_CASES_INVALID');
    expect(malformed.stderr).toContain('frontend flies');
    const malformedJson = tessera(['--json', 'policy', 'test', '-f', fixture('cases-malformed.yaml'), '-p', fixture('shop')]);
    expect(malformedJson.status).toBe(1);
    expect(malformedJson.json.error.code).toBe('TESSERA_POLICY_CASES_INVALID');

    // History before.
    const before = tessera(['--json', 'policy', 'history']);
    expect(before.status, before.stderr).toBe(0);
    const versions = before.json.versions as { version: number; hash: string; author: string; reason: string }[];
    expect(versions.map((v) => v.version)).toEqual([2, 1]);
    expect(versions[1]).toMatchObject({ version: 1, hash: v1.hash, author: `spiffe://${TD}/tessera/admin`, reason: 'shop: frontend reads orders' });

    // Dry run of v2: the recorded POST denials from the frontend would flip, the edge-7 ones would not.
    const dry = tessera(['policy', 'apply', '-f', fixture('shop-v2'), '--dry-run']);
    expect(dry.status, dry.stderr).toBe(0);
    expect(dry.stdout).toContain('dry run: nothing applied');
    // What was replayed: how many decisions, from how many enforcers, over which time span.
    expect(dry.stdout).toMatch(/replayed \d+ recorded decisions from \d+ enforcers? made \d{4}-\d\d-\d\dT\S+Z \.\. \d{4}-\d\d-\d\dT\S+Z; \d+ would change/);
    expect(dry.stdout).toMatch(/^deny\s+allow\s+1\s+spiffe:\/\/example\.org\/shop\/frontend\s+http:request\s+spiffe:\/\/example\.org\/shop\/orders\s+.*method=POST path=\/orders\/new-a/m);
    // `policy diff` is the same replay, as JSON here.
    const dryJson = tessera(['--json', 'policy', 'diff', '-f', fixture('shop-v2')]);
    expect(dryJson.status, dryJson.stderr).toBe(0);
    expect(dryJson.json.dry_run).toBe(true);
    expect(dryJson.json).toMatchObject({ replayed: expect.any(Number), enforcers: expect.any(Number), span: { from: expect.any(String), to: expect.any(String) }, truncated: false });
    const flips = dryJson.json.flips as { principal: string; before: string; after: string; context: { method: string; path: string } }[];
    expect(flips.length).toBeGreaterThan(0);
    for (const f of flips) expect(f).toMatchObject({ principal: FRONTEND, before: 'deny', after: 'allow', context: { method: 'POST' } });
    expect(flips.map((f) => f.context.path)).toEqual(expect.arrayContaining(['/orders/new-a', '/orders/new-outage-1', '/orders/new-outage-2']));
    expect(tessera(['--json', 'policy', 'history']).json.versions).toEqual(before.json.versions);

    // Show, then roll back to v1 (a new version with v1's content), and a bad rollback.
    const show = tessera(['policy', 'show', '1']);
    expect(show.status).toBe(0);
    expect(show.stdout).toContain('// orders.cedar');
    expect(show.stdout).toContain('@id("frontend-reads-orders")');
    const rb = tessera(['--json', 'policy', 'rollback', '1', '--reason', 'fleet mesh not needed']);
    expect(rb.status, rb.stdout + rb.stderr).toBe(0);
    expect(rb.json).toMatchObject({ version: 3, hash: v1.hash });
    const after = tessera(['--json', 'policy', 'history']);
    expect(after.json.versions[0]).toMatchObject({ version: 3, hash: v1.hash, reason: 'rollback to v1: fleet mesh not needed' });
    const missing = tessera(['--json', 'policy', 'rollback', '99', '--reason', 'x']);
    expect(missing.status).toBe(1);
    expect(missing.json.error.code).toBe('TESSERA_NOT_FOUND');
    const human = tessera(['policy', 'history']);
    expect(human.stdout).toMatch(/^VERSION\s+CREATED\s+AUTHOR\s+HASH\s+REASON/m);
    expect(human.stdout).toContain(v1.hash.slice(0, 12));
  }, 40_000);
});
