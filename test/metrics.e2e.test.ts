/**
 * Prometheus metrics end to end: a real Prometheus (Debian's binary) scrapes, every second, the
 * `--metrics-listen` endpoints of three real processes on 127.0.0.1:
 *
 *   tessera server          (control plane)
 *   tessera agent           (orders: inbound proxy in http mode in front of a plain app)
 *   tessera keyserver       (its own agent and enforcer)
 *
 * Callers are raw mTLS clients holding SVIDs: frontend (permitted) and reports (denied). The test
 * reads the values back through Prometheus's HTTP API (/api/v1/query) and checks that they move with
 * the traffic: issuance, request histogram count, denials on the reports→orders edge, bundle
 * versions, SVID time to expiry, key server denials, decisions ingested, and that every target is up.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiClient } from '../src/common/api-client.js';
import { CLI, freePort, runTessera, ServerProcess, waitFor } from './support/process.js';
import { makeCsrPem } from './support/server.js';

const TD = 'example.org';
const ORDERS = `spiffe://${TD}/shop/orders`;
const FRONTEND = `spiffe://${TD}/shop/frontend`;
const REPORTS = `spiffe://${TD}/shop/reports`;
const KEYSERVER = `spiffe://${TD}/keyserver/1`;

interface Tls { ca: string; cert: string; key: string }
interface Sample { metric: Record<string, string>; value: [number, string] }

function mtls(port: number, method: string, path: string, tls: Tls, body?: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest({
      host: '127.0.0.1', port, path, method, agent: false, ca: tls.ca, cert: tls.cert, key: tls.key, checkServerIdentity: () => undefined,
      headers: body === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error('request timed out')));
    req.end(body);
  });
}

/** A child process started with the CLI, its output kept for error messages. */
class Proc {
  child: ChildProcess | undefined;
  out = '';
  constructor(readonly name: string) {}

  async start(args: string[], ready: string[]): Promise<void> {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    child.stdout!.on('data', (d: Buffer) => { this.out += d.toString(); });
    child.stderr!.on('data', (d: Buffer) => { this.out += d.toString(); });
    await waitFor(`${this.name} to be ready`, () => {
      if (child.exitCode !== null) throw new Error(`${this.name} exited: ${this.out}`);
      return ready.every((r) => this.out.includes(r));
    }, 30_000);
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  }
}

describe('metrics scraped by a real Prometheus', () => {
  let dir: string;
  let server: ServerProcess;
  let admin: ApiClient;
  let app: Server;
  const agent = new Proc('tessera agent');
  const keyserver = new Proc('tessera keyserver');
  let prometheus: ChildProcess | undefined;
  let promOut = '';
  let promPort: number;
  let inboundPort: number;
  let ksPort: number;
  const metricsPorts: Record<'control-plane' | 'agent' | 'keyserver', number> = { 'control-plane': 0, agent: 0, keyserver: 0 };
  let frontend: Tls;
  let reports: Tls;

  async function token(spiffeId: string): Promise<string> {
    return (await admin.call<{ token: string }>('POST', '/v1/tokens', { entry_id: spiffeId, ttl_seconds: 120 })).token;
  }

  async function joinRaw(spiffeId: string): Promise<Tls> {
    const ca = readFileSync(join(server.adminDir, 'bundle.pem'), 'utf8');
    const csr = makeCsrPem();
    const anon = new ApiClient(server.url, { ca });
    try {
      const res = await anon.call<{ svid_pem: string }>('POST', '/v1/agent/join', { join_token: await token(spiffeId), csr: csr.pem });
      return { ca, cert: res.svid_pem, key: csr.keyPem };
    } finally {
      anon.close();
    }
  }

  async function query(q: string): Promise<Sample[]> {
    const res = await fetch(`http://127.0.0.1:${promPort}/api/v1/query?query=${encodeURIComponent(q)}`);
    const body = await res.json() as { status: string; data: { result: Sample[] }; error?: string };
    if (body.status !== 'success') throw new Error(`query ${q} failed: ${body.error}`);
    return body.data.result;
  }

  /** The value of a query answering one series, once Prometheus has one matching `ok`. */
  async function valueOf(q: string, ok: (v: number) => boolean, what: string): Promise<number> {
    let last: Sample[] = [];
    return waitFor(what, async () => {
      last = await query(q);
      const v = last.length === 1 ? Number(last[0]!.value[1]) : NaN;
      return ok(v) ? { v } : undefined;
    }, 20_000, 250).then((r) => r.v, (err: Error) => {
      throw new Error(`${err.message}: ${q} = ${JSON.stringify(last)}`);
    });
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-metrics-e2e-'));
    for (const k of Object.keys(metricsPorts) as (keyof typeof metricsPorts)[]) metricsPorts[k] = await freePort();
    server = new ServerProcess(join(dir, 'server'), await freePort(), ['--trust-domain', TD, '--metrics-listen', `127.0.0.1:${metricsPorts['control-plane']}`]);
    await server.start();
    admin = server.admin();
    for (const id of [ORDERS, FRONTEND, REPORTS, KEYSERVER]) await admin.call('POST', '/v1/entries', { spiffe_id: id, attributes: { app: 'shop', site: 'eu' } });
    await admin.call('POST', '/v1/policies', {
      files: { 'orders.cedar': `permit (principal == Tessera::Workload::"${FRONTEND}", action, resource == Tessera::Workload::"${ORDERS}");` }, reason: 'frontend calls orders',
    });

    app = createServer((req, res) => {
      req.resume();
      res.end('ok');
    });
    app.listen(0, '127.0.0.1');
    await once(app, 'listening');
    inboundPort = await freePort();
    ksPort = await freePort();
    const bundle = join(server.dataDir, 'bundle.pem');
    await agent.start(['agent', '--server', server.url, '--data-dir', join(dir, 'orders'), '--trust-bundle', bundle, '--join-token', await token(ORDERS),
      '--inbound', `127.0.0.1:${inboundPort}`, '--app', `127.0.0.1:${(app.address() as AddressInfo).port}`, '--mode', 'http', '--allow-sample', '1',
      '--metrics-listen', `127.0.0.1:${metricsPorts.agent}`], ['inbound proxy listening', 'policy bundle in force', 'metrics listening']);
    await keyserver.start(['--server', server.url, 'keyserver', '--data-dir', join(dir, 'ks'), '--trust-bundle', bundle, '--join-token', await token(KEYSERVER),
      '--listen', `127.0.0.1:${ksPort}`, '--metrics-listen', `127.0.0.1:${metricsPorts.keyserver}`], ['key server ready', 'metrics listening']);
    frontend = await joinRaw(FRONTEND);
    reports = await joinRaw(REPORTS);

    promPort = await freePort();
    const scrape = Object.entries(metricsPorts).map(([job, port]) => `  - job_name: ${job}\n    static_configs:\n      - targets: ['127.0.0.1:${port}']`).join('\n');
    writeFileSync(join(dir, 'prometheus.yml'), `global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n${scrape}\n`);
    prometheus = spawn('prometheus', [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'tsdb')}`, `--web.listen-address=127.0.0.1:${promPort}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    prometheus.stdout!.on('data', (d: Buffer) => { promOut += d.toString(); });
    prometheus.stderr!.on('data', (d: Buffer) => { promOut += d.toString(); });
    await waitFor('Prometheus to be ready', async () => {
      if (prometheus!.exitCode !== null) throw new Error(`prometheus exited: ${promOut}`);
      return (await fetch(`http://127.0.0.1:${promPort}/-/ready`).catch(() => undefined))?.status === 200;
    }, 30_000, 200);
  }, 120_000);

  afterAll(async () => {
    if (prometheus && prometheus.exitCode === null && prometheus.signalCode === null) {
      const exited = once(prometheus, 'exit');
      prometheus.kill('SIGTERM');
      await exited;
    }
    await agent.stop();
    await keyserver.stop();
    app?.close();
    admin?.close();
    await server?.stop(false);
    rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it('every target is up and exports the identity gauges', async () => {
    await waitFor('all three targets up', async () => {
      const up = await query('up');
      return up.length === 3 && up.every((s) => s.value[1] === '1');
    }, 20_000, 250).catch(async (err: Error) => {
      throw new Error(`${err.message}: ${JSON.stringify(await query('up'))}`);
    });
    for (const job of ['agent', 'keyserver']) {
      const ttl = await valueOf(`tessera_svid_time_to_expiry_seconds{job="${job}"}`, (v) => v > 0, `${job} SVID time to expiry`);
      expect(ttl).toBeLessThanOrEqual(3600);
    }
    for (const job of ['control-plane', 'agent', 'keyserver']) {
      expect(await valueOf(`tessera_policy_bundle_version{job="${job}"}`, (v) => v >= 1, `${job} bundle version`)).toBeGreaterThanOrEqual(1);
    }
    // The control plane: four joins so far (orders, the key server, two raw callers), a log and a fresh checkpoint.
    expect(await valueOf('tessera_svid_issuance_total{kind="join",outcome="success"}', (v) => v >= 4, 'joins counted')).toBeGreaterThanOrEqual(4);
    expect(await valueOf('tessera_svid_issuance_duration_seconds_count{kind="join"}', (v) => v >= 4, 'join latencies')).toBeGreaterThanOrEqual(4);
    expect(await valueOf('tessera_audit_log_records', (v) => v > 0, 'audit log size')).toBeGreaterThan(0);
    expect(await valueOf('tessera_audit_checkpoint_age_seconds', (v) => v >= 0 && v < 60, 'checkpoint age')).toBeLessThan(60);
    expect(await valueOf('tessera_process_resident_memory_bytes{job="agent"}', (v) => v > 0, 'default process metrics')).toBeGreaterThan(0);
  });

  it('the sidecar\'s counts move with the traffic: requests, allowed and denied edges, bytes, ingested decisions', async () => {
    const requests = 'sum(tessera_sidecar_request_duration_seconds_count{job="agent"})';
    const before = await valueOf(requests, (v) => v >= 0, 'request histogram present');
    const bytesBefore = await valueOf('tessera_sidecar_received_bytes_total', (v) => v >= 0, 'bytes present');
    for (let i = 0; i < 20; i++) expect(await mtls(inboundPort, 'GET', `/orders/${i}`, frontend)).toBe(200);
    for (let i = 0; i < 7; i++) expect(await mtls(inboundPort, 'GET', `/orders/${i}`, reports)).toBe(403);
    await valueOf(requests, (v) => v >= before + 20, 'request histogram count to grow by 20');
    await valueOf(`tessera_sidecar_edge_decisions_total{caller="${FRONTEND}",callee="${ORDERS}",outcome="allow"}`, (v) => v >= 20, 'allowed edge');
    await valueOf(`tessera_sidecar_edge_decisions_total{caller="${REPORTS}",callee="${ORDERS}",outcome="deny"}`, (v) => v >= 7, 'denied edge');
    await valueOf('tessera_sidecar_decisions_total{outcome="deny"}', (v) => v >= 7, 'denials');
    await valueOf('tessera_sidecar_received_bytes_total', (v) => v > bytesBefore, 'bytes received to grow');
    await valueOf('tessera_sidecar_sent_bytes_total', (v) => v > 0, 'bytes sent');
    // The agent ships its decisions (--allow-sample 1): the control plane counts them.
    await valueOf('tessera_decisions_ingested_total{outcome="deny"}', (v) => v >= 7, 'denials ingested by the control plane');
    await valueOf('tessera_decisions_ingested_total{outcome="allow"}', (v) => v >= 20, 'allows ingested by the control plane');
    await valueOf('sum(tessera_api_requests_total{route="/v1/decisions",status_class="2xx"})', (v) => v >= 1, 'decision shipping requests');
    // A caller without a certificate: refused at the handshake, counted by code.
    await new Promise<void>((resolve) => {
      const req = httpsRequest({ host: '127.0.0.1', port: inboundPort, path: '/', agent: false, rejectUnauthorized: false }, () => resolve());
      req.on('error', () => resolve());
      req.end();
    });
    await valueOf('tessera_sidecar_refusals_total{direction="inbound",code="TESSERA_AUTH_INVALID"}', (v) => v >= 1, 'handshake refusal');
  });

  it('the key server counts unseal requests by outcome', async () => {
    const body = JSON.stringify({ policy: 'payroll', epoch: 1, b: Buffer.alloc(32, 7).toString('base64url') });
    for (let i = 0; i < 3; i++) expect(await mtls(ksPort, 'POST', '/v1/evaluate', reports, body)).toBe(403);
    await valueOf('tessera_keyserver_evaluations_total{outcome="denied"}', (v) => v >= 3, 'key server denials');
    await valueOf('tessera_keyserver_evaluation_duration_seconds_count', (v) => v >= 3, 'key server latency histogram');
    expect(await valueOf('tessera_keyserver_evaluations_total{outcome="allowed"}', (v) => v >= 0, 'allowed series')).toBe(0);
  });

  it('refuses bad --metrics-listen values with stable codes, and a port in use before spending the join token', async () => {
    const bundle = join(server.dataDir, 'bundle.pem');
    const code = (r: { status: number | null; stdout: string }): string => `${r.status} ${String((JSON.parse(r.stdout || '{}') as { error?: { code?: string } }).error?.code)}`;
    for (const bad of ['9464', ':9464', '127.0.0.1', '127.0.0.1:99999', 'http://127.0.0.1:9464']) {
      const r = await runTessera(['--json', '--server', server.url, 'agent', '--data-dir', join(dir, 'never'), '--metrics-listen', bad]);
      expect(`${bad}: ${code(r)}`).toBe(`${bad}: 2 TESSERA_CONFIG_INVALID`);
    }
    const workers = await runTessera(['--json', 'server', '--data-dir', join(dir, 'never-server'), '--listen', '127.0.0.1:0', '--workers', '2', '--metrics-listen', '127.0.0.1:0']);
    expect(code(workers)).toBe('2 TESSERA_CONFIG_INVALID');
    // The agent's metrics port is taken (by the agent above): refused before the join.
    const t = await token(FRONTEND);
    const inUse = await runTessera(['--json', '--server', server.url, 'agent', '--data-dir', join(dir, 'second'), '--trust-bundle', bundle, '--join-token', t,
      '--metrics-listen', `127.0.0.1:${metricsPorts.agent}`]);
    expect(code(inUse)).toBe('2 TESSERA_ADDRESS_IN_USE');
    const anon = new ApiClient(server.url, { ca: readFileSync(bundle, 'utf8') });
    try {
      const res = await anon.call<{ spiffe_id: string }>('POST', '/v1/agent/join', { join_token: t, csr: makeCsrPem().pem });
      expect(res.spiffe_id).toBe(FRONTEND);
    } finally {
      anon.close();
    }
  }, 60_000);
});
