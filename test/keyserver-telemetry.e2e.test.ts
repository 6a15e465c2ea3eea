/**
 * Key server telemetry end to end (issue 11): `tessera server` and `tessera keyserver` as child
 * processes, a workload agent in this process. The key server counts each caller's unseals per window
 * and ships them (`reporter: callee`, `action: unseal`) through its node's sidecar shipper; they show in
 * `tessera telemetry export`. A burst of unseal pulls over many policies raises the caller's risk until
 * the engine quarantines it (`unseal_pull`; 1 s windows set by the admin's risk config). The control
 * plane refuses a key server's report of an edge where it is not the callee, and unseal windows from an
 * identity no secret policy names as a key server.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../src/agent/agent.js';
import { ApiClient } from '../src/common/api-client.js';
import { agentTls } from '../src/admin/clients.js';
import { silentLogger } from '../src/core/log.js';
import type { TelemetryWindow } from '../src/core/risk/types.js';
import type { RiskListResponse } from '../src/core/wire/risk.js';
import { CLI, freePort, runTessera, ServerProcess, signalChild, waitFor } from './support/process.js';
import { errorCode, rawJson, type RawResponse } from './support/server.js';

const TD = 'tessera.test';
const KS = `spiffe://${TD}/keyserver/1`;
const ORDERS = `spiffe://${TD}/shop/orders`;
const OTHER = `spiffe://${TD}/shop/frontend`;
const CEDAR = `
@id("orders-unseal")
permit (principal, action == Tessera::Action::"secret:unseal", resource)
when { principal has app && principal.app == "orders" };
`;
/** Distinct policy ids of the pull (none exists: the key server answers 404, still one unseal request each). */
const PULLED = Array.from({ length: 14 }, (_, i) => `pull-${i}`);

describe('key server telemetry: unseals reported, an unseal pull quarantined, foreign edges refused', () => {
  let dir: string;
  let server: ServerProcess;
  let admin: ApiClient;
  let ks: ChildProcess | undefined;
  let ksOutput = '';
  let ksUrl = '';
  const ksDir = (): string => join(dir, 'ks1');
  const agents: Agent[] = [];

  function tessera(args: string[], input = ''): Promise<{ status: number | null; stdout: string; stderr: string }> {
    return runTessera(args, { env: { TESSERA_ADMIN_DIR: server.adminDir }, input });
  }

  async function token(spiffeId: string): Promise<string> {
    return (await admin.call<{ token: string }>('POST', '/v1/tokens', { entry_id: spiffeId, ttl_seconds: 120 })).token;
  }

  /** Posts a telemetry batch with the SVID in `agentDir` (raw, to see the status and code). */
  function ship(agentDir: string, windows: unknown[]): Promise<RawResponse> {
    const tls = agentTls(agentDir);
    return rawJson(server.url, { path: '/v1/telemetry', json: { windows }, ca: tls.ca, cert: tls.cert, key: tls.key });
  }

  function win(over: Partial<TelemetryWindow>): TelemetryWindow {
    return {
      ts: new Date(Math.floor(Date.now() / 1000) * 1000).toISOString(), window_s: 1, caller: ORDERS, callee: KS, caller_site: 'unknown', callee_site: 'unknown',
      reporter: 'callee', action: 'unseal', requests: 1, errors: 0, denials: 0, bytes_in: 300, bytes_out: 100, latency_p50_ms: 1, latency_p99_ms: 2, paths_distinct: 1, ...over,
    };
  }

  async function exported(identity = ORDERS): Promise<TelemetryWindow[]> {
    const r = await tessera(['telemetry', 'export', '--identity', identity]);
    expect(r.status, r.stderr).toBe(0);
    return r.stdout.split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as TelemetryWindow);
  }

  beforeAll(async () => {
    expect(existsSync(CLI), 'run `npx tsc -p tsconfig.json` first: the test runs dist/src/cli/main.js').toBe(true);
    dir = mkdtempSync(join(tmpdir(), 'tessera-ks-telemetry-e2e-'));
    server = new ServerProcess(join(dir, 'server'), await freePort(), ['--trust-domain', TD]);
    await server.start();
    admin = server.admin();
    // 1 s windows for the engine, like the key server's: decisions within a few seconds.
    const cfg = join(dir, 'risk.json');
    writeFileSync(cfg, JSON.stringify({ window_s: 1, grace_windows: 2 }));
    const set = await tessera(['risk', 'config', 'set', cfg, '--reason', 'e2e: 1 s windows']);
    expect(set.status, set.stderr).toBe(0);
    await admin.call('POST', '/v1/entries', { spiffe_id: KS, attributes: { app: 'keyserver' } });
    await admin.call('POST', '/v1/entries', { spiffe_id: ORDERS, attributes: { app: 'orders' } });
    await admin.call('POST', '/v1/entries', { spiffe_id: OTHER, attributes: { app: 'frontend' } });
    await admin.call('POST', '/v1/policies', { files: { 'secrets.cedar': CEDAR }, reason: 'orders may unseal' });

    const port = await freePort();
    ksUrl = `https://127.0.0.1:${port}`;
    ks = spawn(process.execPath, [CLI, '--server', server.url, 'keyserver', '--data-dir', ksDir(), '--listen', `127.0.0.1:${port}`,
      '--trust-bundle', join(server.dataDir, 'bundle.pem'), '--telemetry-window', '1s'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TESSERA_JOIN_TOKEN: await token(KS) } });
    ks.stdout!.on('data', (d: Buffer) => { ksOutput += d.toString(); });
    ks.stderr!.on('data', (d: Buffer) => { ksOutput += d.toString(); });
    await waitFor('the key server to be ready', () => {
      if (ks!.exitCode !== null) throw new Error(`key server exited: ${ksOutput}`);
      return ksOutput.includes('key server ready');
    }, 30_000);

    for (const [name, id] of [['orders', ORDERS], ['frontend', OTHER]] as const) {
      const agent = new Agent({ serverUrl: server.url, dataDir: join(dir, name), log: silentLogger, watchSeconds: 5, trustBundleFile: join(server.dataDir, 'bundle.pem'), joinToken: await token(id) });
      agents.push(agent);
      await agent.start();
    }
    // A 1-of-1 secret policy on this key server: the record also names it as a key server.
    const created = await tessera(['--json', 'secret', 'policy', 'create', 'db', '--threshold', '1', '--allow-single-server', '--servers', `${ksUrl}@${KS}`]);
    expect(created.status, `${created.stdout}${created.stderr}`).toBe(0);
  }, 90_000);

  afterAll(async () => {
    for (const a of agents) await a.stop().catch(() => {});
    await signalChild(ks, 'SIGTERM');
    admin?.close();
    await server?.kill('SIGTERM');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('reports each caller\'s unseals (reporter callee, action unseal), visible in `tessera telemetry export`', async () => {
    const plain = join(dir, 'plain.txt');
    const sealed = join(dir, 'db.sealed');
    writeFileSync(plain, 'postgres://orders:e2e-secret@db/orders');
    const seal = await tessera(['secret', 'seal', '--policy', 'db', '--in', plain, '--out', sealed]);
    expect(seal.status, seal.stderr).toBe(0);
    // The key server enforces the policy once its sidecar has the bundle: retry until the unseal works.
    await waitFor('an unseal by orders', async () => (await tessera(['secret', 'unseal', '--agent-dir', join(dir, 'orders'), '--in', sealed])).stdout.includes('e2e-secret'), 30_000, 500);
    // The frontend may not unseal: a denial on its own edge.
    const refused = await tessera(['secret', 'unseal', '--agent-dir', join(dir, 'frontend'), '--in', sealed]);
    expect(refused.status).not.toBe(0);

    const rows = await waitFor('the unseal windows in the export', async () => {
      const ws = (await exported()).filter((w) => w.action === 'unseal' && w.caller === ORDERS && w.callee === KS);
      return ws.some((w) => w.requests - w.denials - w.errors > 0) ? ws : undefined;
    }, 20_000, 500);
    for (const w of rows) {
      expect(w).toMatchObject({ reporter: 'callee', window_s: 1, paths_distinct: 1 });
      expect(w.bytes_out).toBeGreaterThan(0);
      expect(w.bytes_in).toBeGreaterThan(0);
      expect(w.latency_p99_ms).toBeGreaterThanOrEqual(w.latency_p50_ms);
    }
    // The refused caller's edge: denials, seen by the key server alone.
    const denied = await waitFor('the frontend\'s denied unseal in the export', async () => {
      const ws = (await exported(OTHER)).filter((w) => w.action === 'unseal' && w.callee === KS);
      return ws.some((w) => w.denials > 0) ? ws : undefined;
    }, 20_000, 500);
    expect(denied.every((w) => w.reporter === 'callee' && w.caller === OTHER && w.paths_distinct === 1)).toBe(true);
  }, 90_000);

  it('refuses a key server\'s report of an edge where it is not the callee, and unseal reports from a non-key-server', async () => {
    const expectError = (res: RawResponse, status: number, code: string): void => {
      expect({ status: res.status, code: errorCode(res) }, res.text).toEqual({ status, code });
    };
    // Its own unseals: accepted (it is named by the secret policy's record).
    const ok = await ship(ksDir(), [win({})]);
    expect(ok.status, ok.text).toBe(200);
    // Another callee, or itself as the caller of an edge its report claims to be the callee of.
    expectError(await ship(ksDir(), [win({ callee: OTHER })]), 403, 'TESSERA_FORBIDDEN');
    expectError(await ship(ksDir(), [win({}), win({ caller: KS, callee: ORDERS })]), 403, 'TESSERA_FORBIDDEN');
    expectError(await ship(ksDir(), [win({ caller: KS, callee: ORDERS, action: 'http' })]), 403, 'TESSERA_FORBIDDEN');
    // An unseal reported by its caller is malformed: only the key server reports unseals.
    expectError(await ship(ksDir(), [win({ caller: KS, callee: OTHER, reporter: 'caller' })]), 400, 'TESSERA_TELEMETRY_INVALID');
    // A workload no secret policy names cannot report unseals, not even "its own".
    const framed = await ship(join(dir, 'frontend'), [win({ caller: ORDERS, callee: OTHER })]);
    expectError(framed, 403, 'TESSERA_FORBIDDEN');
    expect(framed.text).toMatch(/key server/);
  }, 30_000);

  it('a burst of unseal pulls over many policies raises the caller\'s risk: quarantined with unseal_pull', async () => {
    const tls = agentTls(join(dir, 'orders'));
    const client = new ApiClient(ksUrl, { ...tls, serverId: KS });
    try {
      // For about 3 s, every policy 4 times a second: every 1 s window inside it sees all of them
      // (rate limited or not found, each is an unseal request of a distinct policy).
      const b = Buffer.alloc(32, 7).toString('base64url');
      const until = Date.now() + 3200;
      while (Date.now() < until) {
        await Promise.allSettled(PULLED.map((policy) => client.call('POST', '/v1/evaluate', { policy, epoch: 1, b })));
        await new Promise((r) => setTimeout(r, 250));
      }
    } finally {
      client.close();
    }
    const state = await waitFor('orders to be quarantined', async () => {
      const res = await admin.call<RiskListResponse>('GET', '/v1/risk');
      return res.identities.find((s) => s.spiffe_id === ORDERS && s.state === 'quarantined');
    }, 30_000, 250);
    expect(state.score).toBeGreaterThanOrEqual(70);
    expect(state.set_by).toBe('engine');
    const pull = state.reasons.find((r) => r.signal === 'unseal_pull');
    expect(pull, JSON.stringify(state.reasons)).toBeDefined();
    expect(pull!.observed).toBeGreaterThanOrEqual(10);
    expect(pull!.text).toMatch(/pulling unseals/);
    // The key server (the callee) is not blamed for what its caller did.
    const listed = await tessera(['--json', 'risk', 'list']);
    expect(listed.status, listed.stderr).toBe(0);
    const ids = (JSON.parse(listed.stdout) as RiskListResponse).identities;
    expect(ids.find((s) => s.spiffe_id === KS)?.state ?? 'normal').toBe('normal');
  }, 60_000);
});
