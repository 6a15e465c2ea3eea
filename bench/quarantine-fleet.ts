/**
 * A fleet of real sidecars for the end-to-end quarantine measurements (issue 11, item 6):
 * `bench/quarantine-e2e.ts` and `test/quarantine-sidecars.e2e.test.ts` share it. One control
 * plane process (`tessera server`) and N agent processes (`tessera agent`), each with its own
 * registration entry, join token, data directory and log file, on 127.0.0.1:
 *
 *   exfiltrator's app ─plain→ agent 0's outbound ─mTLS→ agent 1's inbound (http) ─plain→ app (this process)
 *   agents 2..N-1: bystanders, each an inbound (http) in front of the same app
 *
 * Agent 0 carries the workload that turns into "the exfiltrator"; every other agent has an inbound,
 * so any of them can be asked, with the exfiltrator's own SVID, whether it still lets it in.
 *
 * How enforcement is observed in another process: each agent logs `policy bundle in force` with
 * the bundle version and a millisecond ISO timestamp (JSON logs, `--json`) at the moment its
 * enforcer installs a bundle: the 'policy' event fires synchronously after the new revocation and
 * risk lists replaced the old ones, so from that instant every check of that agent sees the
 * quarantine. The log file is read afterwards: writing it is not in the measured path. Wall clocks
 * of processes on one machine are one clock, so the agent's timestamp minus the control plane's
 * decision time is a real delay. A probe through each sidecar (a refused call) then confirms that
 * what the log says is what the proxy does.
 */
import { once } from 'node:events';
import { closeSync, existsSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { Agent as HttpAgent, createServer, request as httpRequest, type Server } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { ApiClient } from '../src/common/api-client.js';
import type { RiskChangeResponse, RiskShowResponse } from '../src/core/wire/risk.js';
import { cleanEnv, type Child, type Children } from './procs.js';

export const FLEET_TD = 'fleet.test';
export const EXFIL = `spiffe://${FLEET_TD}/shop/exfiltrator`;
export const CALLEE = `spiffe://${FLEET_TD}/shop/orders`;

/**
 * The risk configuration the fleet runs on, so that detection takes seconds rather than a day of
 * learning: 1 s windows (the agents' --telemetry-window), one window of grace, a learning period of an
 * hour (every identity stays in cold start for the whole run, judged on absolute thresholds), and a
 * cold-start bytes-out threshold of 512 KiB per window (at 45 points per threshold, about 0.8 MiB in one
 * window scores the 70 that quarantines: the bench's 4 MiB/s is five times that, so a slow machine does
 * not leave it in step-up, 0.45-0.8 MiB a window). Calm traffic (a few hundred bytes a window) scores nothing.
 */
export const FLEET_RISK_CONFIG = {
  window_s: 1, grace_windows: 1, learning_period: '1h', quarantine_ttl: '10m', cold_start: { bytes_out: 524_288 },
} as const;

export interface Tls { ca: string; cert: string; key: string }

export interface FleetAgent {
  name: string;
  spiffeId: string;
  child: Child;
  dataDir: string;
  /** The inbound proxy's port (every agent but the exfiltrator's). */
  inboundPort?: number;
  /** Bundle installs read from its log so far: version → epoch ms. */
  installs: Map<number, number>;
  logOffset: number;
}

export interface Fleet {
  cpUrl: string;
  admin: ApiClient;
  tls: Pick<Tls, 'ca'>;
  agents: FleetAgent[];
  /** The exfiltrator's outbound proxy port (plain HTTP in, mTLS to the callee's inbound). */
  outboundPort: number;
  /** Bytes the app received, in total. */
  appBytes: () => number;
  close(): Promise<void>;
}

export interface FleetOptions {
  agents: number;
  dir: string;
  children: Children;
  /** The compiled CLI (dist/src/cli/main.js). */
  cli: string;
  startTimeoutMs?: number;
}

/** Reads the lines added to an agent's log since the last call and records every bundle it installed. */
export function readInstalls(a: FleetAgent): void {
  if (!existsSync(a.child.logFile)) return;
  const size = statSync(a.child.logFile).size;
  if (size <= a.logOffset) return;
  const fd = openSync(a.child.logFile, 'r');
  let text: string;
  try {
    const buf = Buffer.alloc(size - a.logOffset);
    readSync(fd, buf, 0, buf.length, a.logOffset);
    text = buf.toString('utf8');
  } finally {
    closeSync(fd);
  }
  // Only whole lines: a line being written is read next time.
  const end = text.lastIndexOf('\n');
  if (end < 0) return;
  a.logOffset += Buffer.byteLength(text.slice(0, end + 1));
  for (const line of text.slice(0, end).split('\n')) {
    if (!line.includes('"policy bundle in force"')) continue;
    try {
      const j = JSON.parse(line) as { version?: number; ts?: string };
      if (typeof j.version === 'number' && typeof j.ts === 'string' && !a.installs.has(j.version)) a.installs.set(j.version, Date.parse(j.ts));
    } catch {
      // not a log line of ours
    }
  }
}

/** The epoch ms at which `a` installed bundle `version` or a later one (waits for its log line). */
export async function installedAt(a: FleetAgent, version: number, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    readInstalls(a);
    let first: number | undefined;
    for (const [v, t] of a.installs) if (v >= version && (first === undefined || t < first)) first = t;
    if (first !== undefined) return first;
    if (a.child.proc.exitCode !== null) throw new Error(`${a.name} exited (${a.child.proc.exitCode})`);
    if (Date.now() > deadline) throw new Error(`${a.name} did not install policy bundle ${version} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The exfiltrator's current SVID and key, as its agent wrote them (0600, this user). */
export function exfilTls(fleet: Fleet): Tls {
  const d = fleet.agents[0]!.dataDir;
  return { ca: fleet.tls.ca, cert: readFileSync(join(d, 'svid.pem'), 'utf8'), key: readFileSync(join(d, 'svid.key'), 'utf8') };
}

/** GET on a fresh mTLS connection straight to an inbound proxy: status (0: no answer) and error code. */
export function probeInbound(port: number, tls: Tls): Promise<{ status: number; code?: string }> {
  return new Promise((resolve) => {
    const req = httpsRequest({ host: '127.0.0.1', port, path: '/probe', agent: false, ...tls, checkServerIdentity: () => undefined }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => { text += d.toString(); });
      res.on('end', () => {
        let code: string | undefined;
        try {
          code = (JSON.parse(text) as { error?: { code?: string } }).error?.code;
        } catch {
          code = undefined;
        }
        resolve({ status: res.statusCode ?? 0, ...(code !== undefined ? { code } : {}) });
      });
    });
    req.on('error', () => resolve({ status: 0 }));
    req.setTimeout(5_000, () => req.destroy());
    req.end();
  });
}

/** One request through the exfiltrator's outbound proxy: its status, or 0 when the proxy refused or cut it. */
export function throughOutbound(port: number, path: string, body?: Buffer, agent: HttpAgent | false = false): Promise<number> {
  return new Promise((resolve) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, method: body ? 'POST' : 'GET', agent, headers: body ? { 'content-length': body.length } : {} }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', () => resolve(0));
    });
    req.on('error', () => resolve(0));
    req.setTimeout(5_000, () => req.destroy());
    req.end(body);
  });
}

/**
 * The exfiltrator's workload through its sidecar: `calls` small GETs 100 ms apart (all must pass),
 * then 256 KiB POSTs 50 ms apart (about 4 MiB/s) until one is refused. Returns when the first
 * exfiltrating request was sent (epoch ms), the bytes that got through, and the refusal's status
 * (0: its own outbound cut or refused it; 403: the callee's inbound). Throws after `limitMs`.
 */
export async function calmThenExfiltrate(fleet: Fleet, calls: number, limitMs: number): Promise<{ first: number; sent: number; status: number }> {
  const keep = new HttpAgent({ keepAlive: true, maxSockets: 1 });
  try {
    for (let i = 0; i < calls; i++) {
      const s = await throughOutbound(fleet.outboundPort, `/orders/${i}`, undefined, keep);
      if (s !== 200) throw new Error(`calm phase: a call through the sidecars answered ${s}`);
      await sleep(100);
    }
    const first = Date.now();
    let sent = 0;
    for (;;) {
      const status = await throughOutbound(fleet.outboundPort, '/upload', EXFIL_BODY, keep);
      if (status !== 200) return { first, sent, status };
      sent += EXFIL_BODY.length;
      if (Date.now() - first > limitMs) throw new Error(`not refused ${limitMs} ms after exfiltration began (${sent} bytes sent)`);
      await sleep(50);
    }
  } finally {
    keep.destroy();
  }
}

export const EXFIL_BODY_BYTES = 256 * 1024;
const EXFIL_BODY = Buffer.alloc(EXFIL_BODY_BYTES, 0x41);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Whether every agent refuses the exfiltrator: each inbound answers 403 TESSERA_IDENTITY_QUARANTINED, its own outbound carries nothing. */
export async function everyAgentRefuses(fleet: Fleet): Promise<{ refused: number; of: number; failures: string[] }> {
  const tls = exfilTls(fleet);
  const failures: string[] = [];
  const results = await Promise.all(fleet.agents.slice(1).map(async (a) => ({ a, r: await probeInbound(a.inboundPort!, tls) })));
  for (const { a, r } of results) if (r.status !== 403 || r.code !== 'TESSERA_IDENTITY_QUARANTINED') failures.push(`${a.name}: ${r.status} ${r.code ?? ''}`);
  const own = await throughOutbound(fleet.outboundPort, '/orders/probe');
  if (own !== 0) failures.push(`${fleet.agents[0]!.name} (own outbound): ${own}`);
  return { refused: fleet.agents.length - failures.length, of: fleet.agents.length, failures };
}

/** Whether every agent lets the exfiltrator through again (its outbound to the callee, every inbound). */
export async function everyAgentAllows(fleet: Fleet): Promise<boolean> {
  if ((await throughOutbound(fleet.outboundPort, '/orders/ok')) !== 200) return false;
  const tls = exfilTls(fleet);
  const rs = await Promise.all(fleet.agents.slice(1).map((a) => probeInbound(a.inboundPort!, tls)));
  return rs.every((r) => r.status === 200);
}

/** The exfiltrator's risk state as the control plane holds it. */
export async function riskOf(fleet: Fleet): Promise<RiskShowResponse['state']> {
  return (await fleet.admin.call<RiskShowResponse>('GET', `/v1/risk/${encodeURIComponent(EXFIL)}`)).state;
}

/**
 * The exfiltrator's state once it is quarantined (a refusal seen by the workload may be a proxy's
 * view a moment before the API answers it), or the last state read after `timeoutMs`.
 */
export async function quarantinedState(fleet: Fleet, timeoutMs: number): Promise<RiskShowResponse['state']> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await riskOf(fleet);
    if (s.state === 'quarantined' || Date.now() > deadline) return s;
    await sleep(50);
  }
}

export function riskCall(fleet: Fleet, verb: 'quarantine' | 'release', reason: string): Promise<RiskChangeResponse> {
  return fleet.admin.call<RiskChangeResponse>('POST', `/v1/risk/${encodeURIComponent(EXFIL)}/${verb}`, verb === 'quarantine' ? { ttl_seconds: 600, reason } : { reason });
}

/**
 * Starts the control plane, the app, the entries and policy, the risk configuration, and the
 * agents (a few at a time: each join generates a key and is signed by the CA). Every child is in
 * `opts.children`, whose owner stops them.
 */
export async function startFleet(opts: FleetOptions): Promise<Fleet> {
  const { children, dir, cli } = opts;
  const timeout = opts.startTimeoutMs ?? 60_000;
  if (opts.agents < 3) throw new Error('a fleet needs at least 3 agents (the exfiltrator, its callee, a bystander)');
  const cpDir = join(dir, 'cp');
  const cp = children.spawn('control plane', cli, ['--json', 'server', '--data-dir', cpDir, '--listen', '127.0.0.1:0', '--trust-domain', FLEET_TD], join(dir, 'cp.log'));
  const cpUrl = String((await children.waitForLine(cp, 'control plane listening', timeout)).url);
  const rd = (n: string): string => readFileSync(join(cpDir, 'admin', n), 'utf8');
  const ca = rd('bundle.pem');
  const admin = new ApiClient(cpUrl, { ca, cert: rd('admin.pem'), key: rd('admin.key') });
  let received = 0;
  const app: Server = createServer((req, res) => {
    req.on('data', (d: Buffer) => { received += d.length; });
    req.on('end', () => res.end('ok'));
  });
  const close = async (): Promise<void> => {
    admin.close();
    app.closeAllConnections();
    await new Promise((r) => app.close(r));
  };
  try {
    app.listen(0, '127.0.0.1');
    await once(app, 'listening');
    const appPort = (app.address() as AddressInfo).port;
    const bundleFile = join(cpDir, 'admin', 'bundle.pem');
    const ids = [EXFIL, CALLEE, ...Array.from({ length: opts.agents - 2 }, (_, i) => `spiffe://${FLEET_TD}/fleet/w${i + 2}`)];
    for (const id of ids) await admin.call('POST', '/v1/entries', { spiffe_id: id });
    // The exfiltrator may call every workload: only a quarantine can refuse it.
    await admin.call('POST', '/v1/policies', { files: { 'fleet.cedar': `permit (principal == Tessera::Workload::"${EXFIL}", action, resource);` }, reason: 'quarantine bench fleet' });
    const config = await admin.call<{ version: number }>('PUT', '/v1/risk/config', { config: FLEET_RISK_CONFIG, reason: 'quarantine bench: fast detection' });

    const start = async (i: number, extra: string[]): Promise<FleetAgent> => {
      const name = i === 0 ? 'agent 0 (exfiltrator)' : i === 1 ? 'agent 1 (callee)' : `agent ${i}`;
      const dataDir = join(dir, `a${i}`);
      const { token } = await admin.call<{ token: string }>('POST', '/v1/tokens', { entry_id: ids[i]!, ttl_seconds: 600 });
      const child = children.spawn(name, cli, ['--json', '--server', cpUrl, 'agent', '--data-dir', dataDir, '--trust-bundle', bundleFile, '--telemetry-window', '1s', ...extra],
        join(dir, `a${i}.log`), cleanEnv({ TESSERA_JOIN_TOKEN: token }));
      const a: FleetAgent = { name, spiffeId: ids[i]!, child, dataDir, installs: new Map(), logOffset: 0 };
      if (extra.includes('--inbound')) a.inboundPort = Number((await children.waitForLine(child, 'inbound proxy listening', timeout)).port);
      await children.waitForLine(child, 'policy bundle in force', timeout);
      return a;
    };
    const inbound = ['--inbound', '127.0.0.1:0', '--app', `127.0.0.1:${appPort}`, '--mode', 'http'];
    const callee = await start(1, inbound);
    const exfil = await start(0, ['--outbound', `127.0.0.1:0=127.0.0.1:${callee.inboundPort!}@${CALLEE}`]);
    const outboundPort = Number((await children.waitForLine(exfil.child, 'outbound proxy listening', timeout)).port);
    const agents = [exfil, callee];
    for (let i = 2; i < opts.agents; i += 4) {
      agents.push(...await Promise.all(Array.from({ length: Math.min(4, opts.agents - i) }, (_, k) => start(i + k, inbound))));
    }
    // Every agent holds the current bundle (the engine's config in force too) before anything is measured.
    const current = await admin.call<{ version: number }>('GET', '/v1/policy/bundle');
    await Promise.all(agents.map((a) => installedAt(a, current.version, timeout)));
    const deadline = Date.now() + timeout;
    while ((await admin.call<{ engine_version?: number }>('GET', '/v1/risk/config')).engine_version !== config.version) {
      if (Date.now() > deadline) throw new Error('the risk engine did not take the bench configuration');
      await new Promise((r) => setTimeout(r, 100));
    }
    return { cpUrl, admin, tls: { ca }, agents, outboundPort, appBytes: () => received, close };
  } catch (err) {
    await close();
    throw err;
  }
}

/** p50 / p99 / max of `values` (ms, rounded to 0.1), or undefined for none. */
export interface Spread { n: number; p50: number; p99: number; max: number }

export function spread(values: readonly number[]): Spread | undefined {
  if (values.length === 0) return undefined;
  const s = [...values].sort((a, b) => a - b);
  const at = (p: number): number => s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
  const r = (v: number): number => Math.round(v * 10) / 10;
  return { n: s.length, p50: r(at(50)), p99: r(at(99)), max: r(s[s.length - 1]!) };
}

/**
 * A bare client of the policy stream, the physical limit of the push: it long-polls
 * `GET /v1/policy/bundle` on its own keep-alive connection exactly as an agent does, and records
 * when each new version reached it (epoch ms), doing nothing else (no verification, no Cedar
 * compile, no install). An agent cannot see a bundle before this does, give or take scheduling.
 */
export class BundleWatcher {
  readonly seen = new Map<number, number>();
  #stopped = false;
  #loop: Promise<void> | undefined;
  #client: ApiClient;

  constructor(url: string, tls: Tls) {
    this.#client = new ApiClient(url, tls);
  }

  start(after: number): void {
    this.#loop = (async () => {
      let v = after;
      while (!this.#stopped) {
        try {
          const res = await this.#client.call<{ version: number }>('GET', `/v1/policy/bundle?after=${v}&timeout_seconds=25`, undefined, { timeoutMs: 35_000 });
          if (res.version > v && !this.seen.has(res.version)) this.seen.set(res.version, Date.now());
          v = Math.max(v, res.version);
        } catch {
          if (!this.#stopped) await new Promise((r) => setTimeout(r, 100));
        }
      }
    })();
  }

  /** When a version at or above `version` first reached this client, or undefined. */
  firstAt(version: number): number | undefined {
    let first: number | undefined;
    for (const [v, t] of this.seen) if (v >= version && (first === undefined || t < first)) first = t;
    return first;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#client.close();
    await this.#loop;
  }
}

/** Round trips of `GET /healthz` on an already open keep-alive HTTPS connection to the control plane, ms. */
export async function openConnectionRtts(client: ApiClient, n: number): Promise<number[]> {
  await client.call('GET', '/healthz');
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await client.call('GET', '/healthz');
    out.push(performance.now() - t);
  }
  return out;
}
