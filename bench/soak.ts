/**
 * Soak and faults (issue 14, part 4):
 *
 *   npm run soak -- [--agents N] [--duration D] [--replicas N] [--json] [--short]
 *
 * A real PostgreSQL (test/support/postgres.ts), N control-plane replicas on it (`tessera server
 * --store`, each its own data directory, one key-encryption key), and a fleet of real agents
 * (`Agent` + `PolicyEnforcer`, several per worker process: bench/soak-agents.ts), one worker of
 * them in a network namespace of its own (the site, bench/soak-net.ts). For the whole duration the
 * agents renew their short SVIDs (rotations) and decide requests from their cached policy bundle,
 * shipping every decision record, while this driver makes a change every few seconds through the
 * admin API of a replica chosen round-robin: a policy published, an entry revoked or deleted, an
 * identity quarantined. On a schedule spread over the run: a replica SIGKILLed and restarted (twice,
 * two replicas; once with --short), PostgreSQL restarted, the site's link cut and restored.
 *
 * Figures, each beside its baseline and the limit measured in the same run:
 * - issuance (the agents' renewals, as long as the agent's call took) p50/p99, in fault windows
 *   and outside them, against the TLS round trip of an open connection to a replica;
 * - fan-out: from the admin call's answer (this process's clock) to each agent's enforcer installing
 *   the bundle version that carries the change (the agent's clock: one machine), p50/p99/max over
 *   every agent and change, against the 250 ms aim and a bare long poll on the replica that made the
 *   change (and on another replica: propagation between replicas);
 * - failed requests, by kind and by the fault window they fell in;
 * - records lost: every SVID an agent received has its issuance record, every decision an agent
 *   made is stored, every admin change answered has its record; the audit log verifies (Merkle tree
 *   against every signed checkpoint) and its checkpoints never go backwards.
 * Exit status 1 when a record is lost, the log does not verify, an agent did not rejoin or a check
 * failed; 2 for bad arguments. Everything started is stopped, the namespace deleted, temporary
 * directories removed, also on SIGINT or a failure.
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { apiSource } from '../src/admin/audit-sources.js';
import { verifyAuditLog, type AuditVerifySource } from '../src/admin/audit-verify.js';
import { ApiClient } from '../src/common/api-client.js';
import { parseDuration } from '../src/core/duration.js';
import type { AuditCheckpointResponse, AuditListResponse, PolicyBundleResponse } from '../src/core/wire/control-plane.js';
import { startPostgres, type TestPostgres } from '../test/support/postgres.js';
import { freePort } from '../test/support/process.js';
import { cleanEnv, Children, CLI, type Child } from './procs.js';
import { BundleWatcher, openConnectionRtts, spread, type Spread } from './quarantine-fleet.js';
import { createSite, type Site } from './soak-net.js';
import type { FailureKind, FinalAgent, FromWorker, SoakAgentSpec, ToWorker } from './soak-wire.js';

const TD = 'soak.test';
const CLIENT = `spiffe://${TD}/client`;
const WORKER = fileURLToPath(new URL('./soak-agents.js', import.meta.url));
const FAN_OUT_AIM_MS = 250;
/**
 * Node flags of the agent workers. Node 20.20's V8 ended workers of 45 agents with a fatal error
 * ("unreachable code" in Deoptimizer::DoComputeBuiltinContinuation, SIGTRAP) in two 200-agent runs,
 * minutes in: the workers run without the optimizing tiers that deoptimize (baseline code only).
 */
const WORKER_NODE_FLAGS = ['--max-opt=1'];
/** Agents per worker process (2 cores: a few processes of about 50). */
const PER_WORKER = 50;

export interface SoakArgs { agents: number; durationMs: number; replicas: number; json: boolean; short: boolean }

const USAGE = `usage: node dist/bench/soak.js [--agents N] [--duration D] [--replicas N] [--json] [--short]
  --agents N     agents in all, one worker of them in the cut-off site (default 200; 4..1000)
  --duration D   how long the load and the faults run: 90s, 10m, ... (default 10m; 30s..2h)
  --replicas N   control-plane replicas on the one database (default 2; 1..4)
  --json         print the figures as JSON
  --short        the test's preset: 20 agents, 60 s, one replica kill (flags given after it still apply)
  --help         this text`;

export function parseSoakArgs(argv: readonly string[]): SoakArgs {
  const usage = (msg: string): never => {
    process.stderr.write(`bench/soak: ${msg}\n${USAGE}\n`);
    process.exit(2);
  };
  const o: SoakArgs = { agents: 200, durationMs: 600_000, replicas: 2, json: false, short: false };
  const int = (v: string | undefined, name: string, min: number, max: number): number => {
    const n = Number(v);
    if (v === undefined || !/^\d+$/.test(v) || n < min || n > max) usage(`${name} must be an integer from ${min} to ${max}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--help' || a === '-h') {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    } else if (a === '--json') o.json = true;
    else if (a === '--short') Object.assign(o, { short: true, agents: 20, durationMs: 60_000 });
    else if (a === '--agents') o.agents = int(argv[++i], '--agents', 4, 1000);
    else if (a === '--replicas') o.replicas = int(argv[++i], '--replicas', 1, 4);
    else if (a === '--duration') {
      const v = argv[++i];
      let ms = NaN;
      try {
        ms = parseDuration(v ?? '', '--duration');
      } catch {
        usage('--duration must look like 90s or 10m');
      }
      if (ms < 30_000 || ms > 7_200_000) usage('--duration must be from 30s to 2h');
      o.durationMs = ms;
    } else usage(`unknown argument ${a}`);
  }
  return o;
}

/** What the run does when, derived from the arguments (times in ms from the start of the load). */
export interface Plan {
  agents: number;
  replicas: number;
  durationMs: number;
  siteAgents: number;
  hostWorkers: number;
  svidTtlS: number;
  decideEveryMs: number;
  changeEveryMs: number;
  watchSeconds: number;
  killDownMs: number;
  /** After a fault ends, failures and slow answers still count against it for this long. */
  settleMs: number;
  faults: Fault[];
}

export type Fault =
  | { kind: 'kill'; at: number; replica: number }
  | { kind: 'postgres'; at: number }
  | { kind: 'cut'; at: number; forMs: number };

export function planOf(a: SoakArgs): Plan {
  const d = a.durationMs;
  // SVIDs short enough to rotate several times, long enough to outlive the cut (renewed at half life).
  const svidTtlS = Math.round(Math.min(120, Math.max(30, d / 5000)));
  const cutMs = Math.round(Math.max(5000, Math.min(45_000, 0.15 * d, (svidTtlS / 2 - 6) * 1000)));
  const siteAgents = Math.max(2, Math.round(a.agents / 10));
  const kills = a.short ? 1 : 2;
  // Spread so that no fault's window (until it ends, plus settleMs) runs into the next one.
  const faults: Fault[] = [{ kind: 'kill', at: Math.round(0.2 * d), replica: a.replicas > 1 ? 1 : 0 }, { kind: 'postgres', at: Math.round((kills > 1 ? 0.4 : 0.45) * d) }];
  if (kills > 1) faults.push({ kind: 'kill', at: Math.round(0.55 * d), replica: 0 });
  faults.push({ kind: 'cut', at: Math.round(0.7 * d), forMs: cutMs });
  return {
    agents: a.agents, replicas: a.replicas, durationMs: d, siteAgents,
    hostWorkers: Math.max(1, Math.ceil((a.agents - siteAgents) / PER_WORKER)),
    svidTtlS,
    decideEveryMs: a.short ? 1000 : 5000,
    changeEveryMs: a.short ? 3000 : 5000,
    watchSeconds: 25,
    killDownMs: a.short ? 3000 : 10_000,
    settleMs: 5000,
    faults,
  };
}

// ---------------------------------------------------------------------------------------------

interface FleetAgent {
  i: number;
  id: string;
  site: boolean;
  ready: boolean;
  /** Policy bundle versions installed, in order, with when, and when the answer carrying each reached the agent. */
  installs: [number, number, number][];
  serials: string[];
  made: number;
  allowed: number;
  validSvid: number;
  final?: FinalAgent;
}

interface Change {
  n: number;
  kind: 'policy' | 'revoke' | 'delete' | 'quarantine';
  replica: number;
  sentAt: number;
  at: number;
  ok: boolean;
  version?: number;
  /** What its audit record must name (target). */
  target?: string;
  code?: string;
}

interface Window { name: string; start: number; end: number }

interface Failure { at: number; kind: FailureKind | 'admin' | 'checkpoint-poll'; code: string; i?: number }

export interface SoakResult {
  ok: boolean;
  problems: string[];
  setup: { agents: number; site_agents: number; replicas: number; workers: number; duration_s: number; svid_ttl_s: number; decide_every_ms: number; change_every_ms: number; cores: number; load: number; leaders: string[] };
  limits: { tls_open_rtt_ms: Spread | undefined; tls_new_connection_ms: Spread | undefined; long_poll_same_replica_ms: Spread | undefined; long_poll_other_replica_ms: Spread | undefined };
  issuance: { all: Spread | undefined; outside_faults: Spread | undefined; in_faults: Spread | undefined; renewals: number; failed: number; joins: Spread | undefined };
  fan_out: { aim_ms: number; all: Spread | undefined; outside_faults: Spread | undefined; in_faults: Spread | undefined; changes: number; changes_measured: number; missed: number; held_by_cut: number; per_change_p99_max_ms: number | undefined; delivered_outside_faults: Spread | undefined; install_outside_faults: Spread | undefined };
  failed_requests: { total: number; by_kind: Record<string, number>; by_code: Record<string, number>; by_window: Record<string, Record<string, number>> };
  records: {
    lost: number;
    issuances: { seen: number; audited: number; missing: number };
    decisions: { made: number; stored: number; missing: number; duplicates: number; dropped_at_agents: number };
    admin_changes: { answered: number; audited: number; missing: number };
    audit_verify: { ok: boolean; records: number; checkpoints: number; verified_size: number; problems: number };
    checkpoint_regressions: number;
    checkpoint_polls: number;
  };
  faults: { name: string; start_s: number; end_s: number; note: string }[];
  site_cut: { agents: number; cut_s: number; decisions_during_cut: number; allowed_during_cut: number; with_valid_svid: number; agents_deciding: number; rejoined: number; rejoin_ms: Spread | undefined };
  convergence: { last_version: number; agents_at_last_version: number; agents: number };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

class Replica {
  child: Child | undefined;
  starts = 0;
  up = false;
  /** Set while this driver kills it: any other exit is a crash. */
  killing = false;
  admin!: ApiClient;
  constructor(readonly n: number, readonly dir: string, readonly host: string, readonly port: number) {}
  get url(): string { return `https://${this.host}:${this.port}`; }
  get dataDir(): string { return join(this.dir, `replica-${this.n + 1}`); }
}

/** Runs the whole soak; `log` gets progress lines (stderr). */
export async function runSoak(args: SoakArgs, log: (line: string) => void): Promise<SoakResult> {
  const plan = planOf(args);
  const dir = mkdtempSync(join(tmpdir(), 'tessera-soak-'));
  const children = new Children(plan.replicas * 4 + 2);
  const workers: ChildProcess[] = [];
  const cleanups: (() => Promise<void> | void)[] = [() => rmSync(dir, { recursive: true, force: true })];
  // One cleanup, whoever asks first (a signal, or the run ending, maybe failing because of it): the
  // others wait for the same one, so that nothing exits before everything is stopped and removed.
  let cleaning: Promise<void> | undefined;
  const cleanup = (): Promise<void> => (cleaning ??= (async () => {
    for (const w of workers) if (w.exitCode === null && w.signalCode === null) w.kill('SIGKILL');
    for (const c of cleanups.reverse()) {
      try {
        await c();
      } catch (err) {
        log(`cleanup: ${(err as Error).message}`);
      }
    }
  })());
  const onSignal = (): void => {
    log('interrupted: cleaning up');
    void cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    return await soak(plan, dir, children, workers, cleanups, log);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await cleanup();
  }
}

async function soak(plan: Plan, dir: string, children: Children, workers: ChildProcess[], cleanups: (() => Promise<void> | void)[], log: (line: string) => void): Promise<SoakResult> {
  const problems: string[] = [];
  // --- the site's namespace, PostgreSQL, the replicas -------------------------------------------
  const site: Site = createSite();
  // Last resort when this process exits without its cleanup (a crash): the namespace goes anyway.
  const dropSite = (): void => site.close();
  process.on('exit', dropSite);
  cleanups.push(() => { site.close(); process.off('exit', dropSite); });
  log(`site: namespace ${site.ns}, ${site.nsAddr} → replicas on ${site.hostAddr}`);
  const pg: TestPostgres = await startPostgres();
  cleanups.push(() => pg.stop());
  const storeUrl = await pg.createDatabase('tessera_soak');
  const kek = randomBytes(32).toString('hex');
  const replicas: Replica[] = [];
  for (let n = 0; n < plan.replicas; n++) replicas.push(new Replica(n, dir, site.hostAddr, await freePort()));
  cleanups.push(() => {
    for (const r of replicas) r.killing = true;
    return children.stopAll(5000);
  });
  const startReplica = async (r: Replica): Promise<void> => {
    r.starts += 1;
    r.child = children.spawn(`replica ${r.n + 1}`, CLI, ['--json', 'server', '--data-dir', r.dataDir, '--store', storeUrl, '--listen', `${r.host}:${r.port}`, '--trust-domain', TD],
      join(dir, `replica-${r.n + 1}.${r.starts}.log`), cleanEnv({ TESSERA_KEK: kek }));
    const proc = r.child.proc;
    proc.once('exit', (code, signal) => {
      if (r.killing) return;
      r.up = false;
      problems.push(`replica ${r.n + 1} exited on its own (${code ?? signal}); see replica-${r.n + 1}.${r.starts}.log`);
      log(`replica ${r.n + 1} exited on its own (${code ?? signal})`);
    });
    await children.waitForLine(r.child, 'control plane listening', 60_000);
    r.up = true;
    r.killing = false;
  };
  // Replica 1 first: it creates the trust domain and the CA; the others join the database after it.
  await startReplica(replicas[0]!);
  await Promise.all(replicas.slice(1).map((r) => startReplica(r)));
  const adminDir = join(replicas[0]!.dataDir, 'admin');
  const rd = (n: string): string => readFileSync(join(adminDir, n), 'utf8');
  const tls = { ca: rd('bundle.pem'), cert: rd('admin.pem'), key: rd('admin.key') };
  for (const r of replicas) r.admin = new ApiClient(r.url, tls);
  cleanups.push(() => { for (const r of replicas) r.admin.close(); });
  const leaders = async (): Promise<string[]> => Promise.all(replicas.map(async (r) => {
    if (!r.up) return `replica ${r.n + 1}: down`;
    try {
      const h = await r.admin.call<{ leader?: boolean }>('GET', '/healthz', undefined, { timeoutMs: 3000 });
      return `replica ${r.n + 1}: ${h.leader === undefined ? 'leader field absent (no lease on this branch: every replica acts as leader)' : h.leader ? 'leader' : 'follower'}`;
    } catch (err) {
      return `replica ${r.n + 1}: ${(err as Error).message}`;
    }
  }));
  const leadersAtStart = await leaders();
  log(`replicas up: ${replicas.map((r) => r.url).join(', ')}; ${leadersAtStart.join('; ')}`);

  // --- entries, tokens, policy -------------------------------------------------------------------
  const admin0 = replicas[0]!.admin;
  const fleet: FleetAgent[] = [];
  const entryIds: string[] = [];
  await admin0.call('POST', '/v1/entries', { spiffe_id: CLIENT });
  const changeKinds: Change['kind'][] = ['policy', 'revoke', 'quarantine', 'policy', 'delete', 'quarantine'];
  const plannedChanges = Math.ceil(plan.durationMs / plan.changeEveryMs) + 2;
  const victims = { revoke: [] as { id: string; spiffe: string }[], quarantine: [] as string[] };
  for (let v = 0; v < Math.ceil(plannedChanges / 3) + 1; v++) {
    const spiffe = `spiffe://${TD}/victim/r${v}`;
    const e = await admin0.call<{ id: string }>('POST', '/v1/entries', { spiffe_id: spiffe });
    victims.revoke.push({ id: e.id, spiffe });
    const q = `spiffe://${TD}/victim/q${v}`;
    await admin0.call('POST', '/v1/entries', { spiffe_id: q });
    victims.quarantine.push(q);
  }
  let policyRev = 0;
  const policyText = (n: number): string => [
    '@id("client-calls-agents")',
    `permit (principal == Tessera::Workload::"${CLIENT}", action == Tessera::Action::"http:request", resource);`,
    `@id("soak-rev-${n}")`,
    `forbid (principal, action == Tessera::Action::"http:request", resource) when { context.path == "/never/${n}" };`,
    '',
  ].join('\n');
  await admin0.call('POST', '/v1/policies', { files: { 'soak.cedar': policyText(policyRev++) }, reason: 'soak: initial policy' });
  const specsBySite: { host: SoakAgentSpec[]; site: SoakAgentSpec[] } = { host: [], site: [] };
  for (let i = 0; i < plan.agents; i++) {
    const isSite = i >= plan.agents - plan.siteAgents;
    const id = `spiffe://${TD}/agent/${String(i).padStart(4, '0')}`;
    const e = await admin0.call<{ id: string }>('POST', '/v1/entries', { spiffe_id: id, attributes: { site: isSite ? 'edge' : 'main' }, x509_ttl_seconds: plan.svidTtlS });
    entryIds.push(e.id);
    const { token } = await admin0.call<{ token: string }>('POST', '/v1/tokens', { entry_id: e.id, ttl_seconds: 900 });
    fleet.push({ i, id, site: isSite, ready: false, installs: [], serials: [], made: 0, allowed: 0, validSvid: 0 });
    (isSite ? specsBySite.site : specsBySite.host).push({ i, token, dataDir: join(dir, 'agents', String(i)) });
  }
  log(`${plan.agents} entries and join tokens made (${plan.siteAgents} in the site), ${victims.revoke.length * 2} victim entries`);

  // --- worker processes ----------------------------------------------------------------------------
  const issues: { at: number; ms: number; ok: boolean }[] = [];
  const joins: number[] = [];
  const failures: Failure[] = [];
  const decidedLog: { at: number; i: number; made: number; allowed: number; valid: number }[] = [];
  const finals = new Map<number, FinalAgent[]>();
  const fatal: string[] = [];
  const onMessage = (m: FromWorker): void => {
    switch (m.type) {
      case 'ready': fleet[m.i]!.ready = true; joins.push(m.joinMs); break;
      case 'svid': if (m.reason !== 'loaded') fleet[m.i]!.serials.push(m.serial); break;
      case 'issue': issues.push({ at: m.at, ms: m.ms, ok: m.ok }); break;
      case 'policy': fleet[m.i]!.installs.push([m.version, m.at, m.received]); break;
      case 'fail': failures.push({ at: m.at, kind: m.kind, code: m.code, i: m.i }); break;
      case 'decided':
        for (const [i, made, allowed, valid] of m.rows) {
          const a = fleet[i]!;
          a.made += made; a.allowed += allowed; a.validSvid += valid;
          decidedLog.push({ at: m.at, i, made, allowed, valid });
        }
        break;
      case 'final': for (const f of m.agents) fleet[f.i]!.final = f; break;
      case 'fatal': fatal.push(m.error); break;
    }
  };
  const serverUrl = replicas.map((r) => r.url).join(',');
  const trustBundleFile = join(adminDir, 'bundle.pem');
  const startWorker = (name: string, specs: SoakAgentSpec[], inSite: boolean): ChildProcess => {
    const fd = openSync(join(dir, `${name}.log`), 'a', 0o600);
    let w: ChildProcess;
    try {
      const stdio: ('ignore' | number | 'ipc')[] = ['ignore', fd, fd, 'ipc'];
      w = inSite
        ? spawn(site.execPrefix[0]!, [...site.execPrefix.slice(1), process.execPath, ...WORKER_NODE_FLAGS, WORKER], { stdio, env: cleanEnv() })
        : fork(WORKER, [], { stdio, env: cleanEnv(), execArgv: WORKER_NODE_FLAGS });
    } finally {
      closeSync(fd);
    }
    workers.push(w);
    w.on('message', (m: FromWorker) => onMessage(m));
    w.on('exit', (code, signal) => { if (code !== 0) fatal.push(`${name} exited (${code ?? signal})`); });
    w.send({ type: 'start', serverUrl, trustBundleFile, agents: specs, client: CLIENT, decideEveryMs: plan.decideEveryMs, watchSeconds: plan.watchSeconds } satisfies ToWorker);
    return w;
  };
  const hostSpecs = specsBySite.host;
  const perWorker = Math.ceil(hostSpecs.length / plan.hostWorkers);
  const workerNames: string[] = [];
  for (let w = 0; w < plan.hostWorkers; w++) {
    const name = `worker-${w + 1}`;
    workerNames.push(name);
    startWorker(name, hostSpecs.slice(w * perWorker, (w + 1) * perWorker), false);
  }
  startWorker('worker-site', specsBySite.site, true);
  workerNames.push('worker-site');
  const joinDeadline = Date.now() + 60_000 + plan.agents * 500;
  while (fleet.some((a) => !a.ready)) {
    if (fatal.length > 0) throw new Error(`agents did not start: ${fatal.join('; ')}`);
    if (Date.now() > joinDeadline) throw new Error(`only ${fleet.filter((a) => a.ready).length} of ${plan.agents} agents started`);
    await sleep(200);
  }
  log(`${plan.agents} agents joined and hold a policy bundle (${workerNames.length} worker processes)`);

  // --- limits, measured in this run --------------------------------------------------------------
  const tlsOpen = spread(await openConnectionRtts(admin0, 200));
  const fresh: number[] = [];
  for (let k = 0; k < 30; k++) {
    const c = new ApiClient(replicas[0]!.url, tls);
    const t = performance.now();
    await c.call('GET', '/healthz');
    fresh.push(performance.now() - t);
    c.close();
  }
  const tlsNew = spread(fresh);
  const watchers = replicas.map((r) => new BundleWatcher(r.url, tls));
  const current = await admin0.call<PolicyBundleResponse>('GET', '/v1/policy/bundle');
  for (const w of watchers) w.start(current.version);
  cleanups.push(async () => { for (const w of watchers) await w.stop(); });

  // --- the run -------------------------------------------------------------------------------------
  const t0 = Date.now();
  const end = t0 + plan.durationMs;
  const windows: Window[] = [];
  const faultNotes: SoakResult['faults'] = [];
  const changes: Change[] = [];
  let cut: { start: number; restored: number; versionBefore: number } | undefined;
  const s = (at: number): number => Math.round((at - t0) / 100) / 10;

  const changeLoop = async (): Promise<void> => {
    let n = 0;
    let rr = 0;
    for (let next = t0; next < end; next += plan.changeEveryMs) {
      await sleep(Math.max(0, next - Date.now()));
      if (Date.now() >= end) break;
      // Round-robin over the replicas that are up (the driver knows which it killed).
      let r: Replica | undefined;
      for (let k = 0; k < replicas.length && r === undefined; k++) {
        const cand = replicas[(rr + k) % replicas.length]!;
        if (cand.up) r = cand;
      }
      rr += 1;
      if (r === undefined) continue;
      const kind = changeKinds[n % changeKinds.length]!;
      const c: Change = { n: n++, kind, replica: r.n, sentAt: Date.now(), at: 0, ok: false };
      try {
        if (kind === 'policy') {
          const rev = policyRev++;
          const res = await r.admin.call<{ version: number; bundle_version: number }>('POST', '/v1/policies', { files: { 'soak.cedar': policyText(rev) }, reason: `soak: change ${c.n}` });
          c.version = res.bundle_version;
          c.target = `policy v${res.version}`;
        } else if (kind === 'revoke' || kind === 'delete') {
          const v = victims.revoke.shift()!;
          const res = kind === 'revoke'
            ? await r.admin.call<{ bundle_version: number }>('POST', `/v1/entries/${encodeURIComponent(v.id)}/revoke`, { reason: `soak change ${c.n}` })
            : await r.admin.call<{ bundle_version: number }>('DELETE', `/v1/entries/${encodeURIComponent(v.id)}`);
          c.version = res.bundle_version;
          c.target = v.spiffe;
        } else {
          const q = victims.quarantine.shift()!;
          const res = await r.admin.call<{ bundle_version?: number }>('POST', `/v1/risk/${encodeURIComponent(q)}/quarantine`, { ttl_seconds: 60, reason: `soak change ${c.n}` });
          c.version = res.bundle_version;
          c.target = q;
        }
        c.ok = true;
      } catch (err) {
        c.code = (err as { code?: string }).code ?? 'ERROR';
        failures.push({ at: Date.now(), kind: 'admin', code: c.code });
      }
      c.at = Date.now();
      changes.push(c);
    }
  };

  const checkpointSizes: number[] = [];
  let regressions = 0;
  const checkpointLoop = async (): Promise<void> => {
    let max = 0;
    while (Date.now() < end) {
      await sleep(2000);
      for (const r of replicas) {
        if (!r.up) continue;
        const before = max;
        try {
          const cp = await r.admin.call<AuditCheckpointResponse>('GET', '/v1/audit/checkpoint', undefined, { timeoutMs: 5000 });
          checkpointSizes.push(cp.checkpoint.size);
          if (cp.checkpoint.size < before) {
            regressions += 1;
            problems.push(`replica ${r.n + 1} answered checkpoint size ${cp.checkpoint.size} after ${before} was seen at ${s(Date.now())} s`);
          }
          max = Math.max(max, cp.checkpoint.size);
        } catch (err) {
          failures.push({ at: Date.now(), kind: 'checkpoint-poll', code: (err as { code?: string }).code ?? 'ERROR' });
        }
      }
    }
  };

  const latestVersion = async (): Promise<number> => {
    let v = 0;
    for (const r of replicas) {
      if (!r.up) continue;
      try {
        v = Math.max(v, (await r.admin.call<PolicyBundleResponse>('GET', '/v1/policy/bundle', undefined, { timeoutMs: 5000 })).version);
      } catch {
        // a replica in trouble: the others answer
      }
    }
    return v;
  };

  const faultLoop = async (): Promise<void> => {
    for (const f of plan.faults) {
      await sleep(Math.max(0, t0 + f.at - Date.now()));
      const start = Date.now();
      log(`${s(start)} s: fault: ${f.kind}`);
      if (f.kind === 'kill') {
        const r = replicas[f.replica]!;
        r.up = false;
        r.killing = true;
        const proc = r.child!.proc;
        if (proc.exitCode === null && proc.signalCode === null) {
          const gone = new Promise<void>((res) => proc.once('exit', () => res()));
          proc.kill('SIGKILL');
          await gone;
        }
        log(`${s(Date.now())} s: replica ${r.n + 1} SIGKILLed`);
        await sleep(plan.killDownMs);
        await startReplica(r);
        const ends = Date.now();
        log(`${s(ends)} s: replica ${r.n + 1} restarted; ${(await leaders()).join('; ')}`);
        windows.push({ name: `replica ${r.n + 1} killed`, start, end: ends + plan.settleMs });
        faultNotes.push({ name: `replica ${r.n + 1} SIGKILLed, restarted after ${plan.killDownMs / 1000} s`, start_s: s(start), end_s: s(ends), note: `back in ${((ends - start) / 1000).toFixed(1)} s` });
      } else if (f.kind === 'postgres') {
        await pg.restart();
        const ends = Date.now();
        log(`${s(ends)} s: PostgreSQL restarted (${ends - start} ms)`);
        windows.push({ name: 'PostgreSQL restarted', start, end: ends + plan.settleMs });
        faultNotes.push({ name: 'PostgreSQL restarted (pg_ctl stop -m fast, start)', start_s: s(start), end_s: s(ends), note: `down ${((ends - start) / 1000).toFixed(1)} s` });
      } else {
        site.cut();
        log(`${s(start)} s: site cut off for ${f.forMs / 1000} s`);
        await sleep(f.forMs);
        const versionBefore = await latestVersion();
        site.restore();
        const ends = Date.now();
        cut = { start, restored: ends, versionBefore };
        log(`${s(ends)} s: site link restored (newest bundle version ${versionBefore})`);
        windows.push({ name: 'site cut off', start, end: ends + plan.settleMs });
        faultNotes.push({ name: `site cut off (${plan.siteAgents} agents, link down)`, start_s: s(start), end_s: s(ends), note: `${f.forMs / 1000} s` });
      }
    }
  };

  log(`load for ${plan.durationMs / 1000} s: a change every ${plan.changeEveryMs / 1000} s, a decision per agent every ${plan.decideEveryMs / 1000} s, SVIDs of ${plan.svidTtlS} s`);
  await Promise.all([changeLoop(), checkpointLoop(), faultLoop()]);
  if (fatal.length > 0) problems.push(...fatal);

  // --- convergence: every agent at the newest version ---------------------------------------------
  let last = await latestVersion();
  const convergeDeadline = Date.now() + 60_000;
  const at = (a: FleetAgent): number => a.installs.at(-1)?.[0] ?? 0;
  while (fleet.some((a) => at(a) < last) && Date.now() < convergeDeadline) {
    await sleep(250);
    last = await latestVersion();
  }
  const atLast = fleet.filter((a) => at(a) >= last).length;
  if (atLast < fleet.length) problems.push(`${fleet.length - atLast} agents did not reach bundle version ${last}: ${fleet.filter((a) => at(a) < last).slice(0, 5).map((a) => `agent ${a.i} at ${at(a)}`).join(', ')}`);
  log(`${atLast}/${fleet.length} agents at the newest bundle version ${last}`);

  // --- workers finish: every decision record shipped ---------------------------------------------
  for (const w of workers) if (w.connected) w.send({ type: 'finish' } satisfies ToWorker);
  const finishDeadline = Date.now() + 90_000;
  while (fleet.some((a) => a.final === undefined) && Date.now() < finishDeadline && workers.some((w) => w.exitCode === null)) await sleep(200);
  if (fleet.some((a) => a.final === undefined)) problems.push(`${fleet.filter((a) => a.final === undefined).length} agents sent no final report`);
  for (const w of watchers) await w.stop();

  // --- the audit log: every record accounted for ------------------------------------------------
  const head = (await admin0.call<AuditListResponse>('GET', '/v1/audit?limit=1')).records[0]?.id ?? 0;
  const cpDeadline = Date.now() + 30_000;
  while ((await admin0.call<AuditCheckpointResponse>('GET', '/v1/audit/checkpoint')).checkpoint.size < head && Date.now() < cpDeadline) await sleep(250);
  const issued = new Set<string>();
  const decisionPaths = new Map<string, number>();
  const adminAudited = new Map<string, number>();
  const src = await apiSource(admin0, replicas[0]!.url);
  const counting: AuditVerifySource = {
    ...src,
    records: async function* () {
      for await (const r of src.records()) {
        const d = r.detail as Record<string, unknown> | undefined;
        if (r.outcome === 'success' && (r.action === 'svid.join' || r.action === 'svid.renew') && typeof d?.serial === 'string') issued.add(d.serial);
        else if (r.action === 'decision' && r.actor.startsWith(`spiffe://${TD}/agent/`)) {
          const p = (d?.context as { path?: unknown } | undefined)?.path;
          if (typeof p === 'string') decisionPaths.set(p, (decisionPaths.get(p) ?? 0) + 1);
        } else if (r.outcome === 'success' && ['policy.apply', 'entry.revoke', 'entry.delete', 'risk.quarantine'].includes(r.action)) {
          const k = `${r.action} ${r.target}`;
          adminAudited.set(k, (adminAudited.get(k) ?? 0) + 1);
        }
        yield r;
      }
    },
  };
  const verified = await verifyAuditLog(counting);
  if (!verified.ok) problems.push(`the audit log does not verify: ${verified.problems.slice(0, 3).map((p) => JSON.stringify(p)).join('; ')}`);

  // --- figures ---------------------------------------------------------------------------------------
  // The fault a moment belongs to: the latest one started whose window holds it.
  const inWindow = (t: number): Window | undefined => windows.filter((w) => t >= w.start && t <= w.end).sort((a, b) => b.start - a.start)[0];
  const seenSerials = fleet.flatMap((a) => a.serials);
  const missingSerials = seenSerials.filter((x) => !issued.has(x));
  let made = 0;
  let stored = 0;
  let duplicates = 0;
  let droppedAtAgents = 0;
  for (const a of fleet) {
    const n = a.final?.made ?? a.made;
    made += n;
    droppedAtAgents += a.final?.dropped ?? 0;
    for (let k = 0; k < n; k++) {
      const c = decisionPaths.get(`/soak/${a.i}/${k}`) ?? 0;
      if (c > 0) stored += 1;
      if (c > 1) duplicates += c - 1;
    }
  }
  const answered = changes.filter((c) => c.ok);
  const adminKey = (c: Change): string => `${c.kind === 'policy' ? 'policy.apply' : c.kind === 'revoke' ? 'entry.revoke' : c.kind === 'delete' ? 'entry.delete' : 'risk.quarantine'} ${c.target}`;
  const adminMissing = answered.filter((c) => {
    const k = adminKey(c);
    const left = adminAudited.get(k) ?? 0;
    if (left === 0) return true;
    adminAudited.set(k, left - 1);
    return false;
  }).length;
  const decisionsMissing = made - stored;
  const lost = missingSerials.length + decisionsMissing + adminMissing;
  if (lost > 0) problems.push(`records lost: ${missingSerials.length} issuances, ${decisionsMissing} decisions, ${adminMissing} admin changes`);

  // Fan-out: from each change's answer to each agent installing its version (or a later one).
  const fanAll: number[] = [];
  const fanIn: number[] = [];
  const fanOut: number[] = [];
  const perChangeP99: number[] = [];
  // Outside faults, the fan-out split in two: the answer reaching the agent's code, then its install.
  const delivered: number[] = [];
  const installing: number[] = [];
  const sameReplica: number[] = [];
  const otherReplica: number[] = [];
  let missed = 0;
  let heldByCut = 0;
  let measured = 0;
  for (const c of answered) {
    if (c.version === undefined) continue;
    measured += 1;
    const faulty = inWindow(c.at) !== undefined;
    const these: number[] = [];
    for (const a of fleet) {
      const inst = a.installs.find(([v]) => v >= c.version!);
      if (inst === undefined) { missed += 1; continue; }
      if (a.site && cut !== undefined && c.at < cut.restored && inst[1] > cut.start) { heldByCut += 1; continue; }
      const ms = Math.max(0, inst[1] - c.at);
      these.push(ms);
      (faulty ? fanIn : fanOut).push(ms);
      if (!faulty && inst[2] > 0) {
        delivered.push(Math.max(0, inst[2] - c.at));
        installing.push(Math.max(0, inst[1] - inst[2]));
      }
    }
    fanAll.push(...these);
    const sp = spread(these);
    if (sp) perChangeP99.push(sp.p99);
    for (const [w, watcher] of watchers.entries()) {
      const seen = watcher.firstAt(c.version);
      if (seen === undefined) continue;
      (w === c.replica ? sameReplica : otherReplica).push(Math.max(0, seen - c.at));
    }
  }
  if (missed > 0) problems.push(`${missed} (agent, change) pairs never installed the change's version`);

  const byKind: Record<string, number> = {};
  const byCode: Record<string, number> = {};
  const byWindow: Record<string, Record<string, number>> = {};
  for (const f of failures) {
    byKind[f.kind] = (byKind[f.kind] ?? 0) + 1;
    byCode[`${f.kind} ${f.code}`] = (byCode[`${f.kind} ${f.code}`] ?? 0) + 1;
    const w = inWindow(f.at)?.name ?? (f.at < t0 ? 'setup' : f.at > end ? 'after the run' : 'no fault');
    const row = (byWindow[w] ??= {});
    row[f.kind] = (row[f.kind] ?? 0) + 1;
  }
  const renewals = issues.filter((x) => x.ok);
  const issueIn = renewals.filter((x) => inWindow(x.at) !== undefined).map((x) => x.ms);
  const issueOut = renewals.filter((x) => inWindow(x.at) === undefined).map((x) => x.ms);

  // The site: decisions its agents made while cut off, and their rejoin.
  const siteAgents = fleet.filter((a) => a.site);
  let during = { made: 0, allowed: 0, valid: 0, agents: new Set<number>() };
  const rejoin: number[] = [];
  if (cut !== undefined) {
    const c = cut;
    // A report covers the second before it: only reports wholly inside the cut count.
    for (const d of decidedLog) {
      if (!fleet[d.i]!.site || d.at < c.start + 1000 || d.at > c.restored) continue;
      during.made += d.made; during.allowed += d.allowed; during.valid += d.valid; during.agents.add(d.i);
    }
    for (const a of siteAgents) {
      const inst = a.installs.find(([v, t]) => v >= c.versionBefore && t >= c.start);
      if (inst !== undefined) rejoin.push(Math.max(0, inst[1] - c.restored));
    }
    if (during.agents.size < siteAgents.length) problems.push(`only ${during.agents.size} of ${siteAgents.length} site agents decided during the cut`);
    if (during.allowed < during.made || during.valid < during.made) problems.push(`site agents during the cut: ${during.made} decisions, ${during.allowed} allowed, ${during.valid} with a valid SVID`);
    if (rejoin.length < siteAgents.length) problems.push(`${siteAgents.length - rejoin.length} site agents did not get the newest bundle after the cut`);
  } else {
    during = { made: 0, allowed: 0, valid: 0, agents: new Set() };
  }
  const result: SoakResult = {
    ok: false,
    problems,
    setup: {
      agents: plan.agents, site_agents: plan.siteAgents, replicas: plan.replicas, workers: workerNames.length, duration_s: plan.durationMs / 1000, svid_ttl_s: plan.svidTtlS,
      decide_every_ms: plan.decideEveryMs, change_every_ms: plan.changeEveryMs, cores: availableParallelism(), load: Math.round(loadavg()[0]! * 100) / 100, leaders: leadersAtStart,
    },
    limits: { tls_open_rtt_ms: tlsOpen, tls_new_connection_ms: tlsNew, long_poll_same_replica_ms: spread(sameReplica), long_poll_other_replica_ms: spread(otherReplica) },
    issuance: { all: spread(renewals.map((x) => x.ms)), outside_faults: spread(issueOut), in_faults: spread(issueIn), renewals: renewals.length, failed: issues.length - renewals.length, joins: spread(joins) },
    fan_out: {
      aim_ms: FAN_OUT_AIM_MS, all: spread(fanAll), outside_faults: spread(fanOut), in_faults: spread(fanIn), changes: changes.length, changes_measured: measured, missed, held_by_cut: heldByCut,
      per_change_p99_max_ms: perChangeP99.length > 0 ? Math.max(...perChangeP99) : undefined,
      delivered_outside_faults: spread(delivered), install_outside_faults: spread(installing),
    },
    failed_requests: { total: failures.length, by_kind: byKind, by_code: byCode, by_window: byWindow },
    records: {
      lost,
      issuances: { seen: seenSerials.length, audited: seenSerials.length - missingSerials.length, missing: missingSerials.length },
      decisions: { made, stored, missing: decisionsMissing, duplicates, dropped_at_agents: droppedAtAgents },
      admin_changes: { answered: answered.length, audited: answered.length - adminMissing, missing: adminMissing },
      audit_verify: { ok: verified.ok, records: verified.records, checkpoints: verified.checkpoints, verified_size: verified.verified_size, problems: verified.problem_count },
      checkpoint_regressions: regressions,
      checkpoint_polls: checkpointSizes.length,
    },
    faults: faultNotes,
    site_cut: {
      agents: siteAgents.length, cut_s: cut ? (cut.restored - cut.start) / 1000 : 0, decisions_during_cut: during.made, allowed_during_cut: during.allowed, with_valid_svid: during.valid,
      agents_deciding: during.agents.size, rejoined: rejoin.length, rejoin_ms: spread(rejoin),
    },
    convergence: { last_version: last, agents_at_last_version: atLast, agents: fleet.length },
  };
  result.ok = problems.length === 0;
  // The logs go with the temporary directory: show their ends when something failed (no secrets in them).
  if (!result.ok) for (const name of [...replicas.flatMap((r) => Array.from({ length: r.starts }, (_, k) => `replica-${r.n + 1}.${k + 1}`)), ...workerNames]) log(`${name}.log, last lines:\n${logTail(join(dir, `${name}.log`))}`);
  return result;
}

function logTail(file: string): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-30).join('\n');
  } catch {
    return '(none)';
  }
}

// ---------------------------------------------------------------------------------------------------

const f = (sp: Spread | undefined): string => (sp === undefined ? '-' : `p50 ${sp.p50} / p99 ${sp.p99} / max ${sp.max} (n ${sp.n})`);

export function formatSoak(r: SoakResult): string {
  const rows: [string, string, string, string][] = [
    ['figure', 'under faults', 'baseline (no fault)', 'limit (same run)'],
    ['issuance (renewal) ms', f(r.issuance.in_faults), f(r.issuance.outside_faults), `TLS RTT, open connection: ${f(r.limits.tls_open_rtt_ms)}`],
    ['', '', '', `new TLS connection + request: ${f(r.limits.tls_new_connection_ms)}`],
    [`fan-out to ${r.setup.agents} agents ms`, f(r.fan_out.in_faults), f(r.fan_out.outside_faults), `aim ≤ ${r.fan_out.aim_ms} ms; bare long poll, same replica: ${f(r.limits.long_poll_same_replica_ms)}`],
    ['', '', '', `bare long poll, other replica: ${f(r.limits.long_poll_other_replica_ms)}`],
    ['failed requests', Object.entries(r.failed_requests.by_window).filter(([w]) => w !== 'no fault').map(([w, k]) => `${w}: ${Object.entries(k).map(([a, b]) => `${a} ${b}`).join(', ')}`).join('; ') || '0',
      Object.entries(r.failed_requests.by_window['no fault'] ?? {}).map(([a, b]) => `${a} ${b}`).join(', ') || '0', ''],
    ['records lost', String(r.records.lost), '', 'must be 0'],
  ];
  const w = [0, 1, 2, 3].map((k) => Math.max(...rows.map((row) => row[k]!.length)));
  let out = `soak: ${r.setup.agents} agents (${r.setup.site_agents} in the site) in ${r.setup.workers} processes, ${r.setup.replicas} replicas, ${r.setup.duration_s} s, SVIDs of ${r.setup.svid_ttl_s} s; ${r.setup.cores} cores, load ${r.setup.load}\n`;
  out += `leaders at start: ${r.setup.leaders.join('; ')}\n\n`;
  for (const row of rows) out += `${row.map((c, k) => c.padEnd(w[k]!)).join(' | ')}\n`;
  out += `\nissuance: ${r.issuance.renewals} renewals (${r.issuance.failed} failed attempts), all: ${f(r.issuance.all)}; joins ${f(r.issuance.joins)}\n`;
  out += `fan-out outside faults, split: answer in the agent's code ${f(r.fan_out.delivered_outside_faults)}; then verify, compile, install ${f(r.fan_out.install_outside_faults)}\n`;
  out += `fan-out: ${r.fan_out.changes_measured} of ${r.fan_out.changes} changes measured, all ${f(r.fan_out.all)}; worst change's p99 ${r.fan_out.per_change_p99_max_ms ?? '-'} ms; ${r.fan_out.held_by_cut} held back by the cut; ${r.fan_out.missed} never seen\n`;
  out += `failed requests: ${r.failed_requests.total} (${Object.entries(r.failed_requests.by_code).map(([a, b]) => `${a}: ${b}`).join(', ') || 'none'})\n`;
  const rec = r.records;
  out += `records: issuances ${rec.issuances.audited}/${rec.issuances.seen} audited; decisions ${rec.decisions.stored}/${rec.decisions.made} stored (${rec.decisions.duplicates} duplicates, ${rec.decisions.dropped_at_agents} dropped at agents); admin changes ${rec.admin_changes.audited}/${rec.admin_changes.answered} audited\n`;
  out += `audit log: ${rec.audit_verify.ok ? 'verifies' : 'DOES NOT VERIFY'} (${rec.audit_verify.records} records, ${rec.audit_verify.checkpoints} checkpoints); checkpoint size went backwards ${rec.checkpoint_regressions} times in ${rec.checkpoint_polls} polls\n`;
  for (const x of r.faults) out += `fault ${x.start_s}–${x.end_s} s: ${x.name} (${x.note})\n`;
  const sc = r.site_cut;
  out += `site cut: ${sc.agents_deciding}/${sc.agents} agents kept deciding for ${sc.cut_s} s: ${sc.decisions_during_cut} decisions, ${sc.allowed_during_cut} allowed, ${sc.with_valid_svid} with a valid SVID; ${sc.rejoined}/${sc.agents} rejoined, newest bundle after ${f(sc.rejoin_ms)}\n`;
  out += `convergence: ${r.convergence.agents_at_last_version}/${r.convergence.agents} agents at bundle version ${r.convergence.last_version}\n`;
  out += r.ok ? 'OK\n' : `FAILED:\n${r.problems.map((p) => `  - ${p}`).join('\n')}\n`;
  return out;
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = parseSoakArgs(process.argv.slice(2));
  const started = Date.now();
  const progress = (line: string): void => { process.stderr.write(`soak +${((Date.now() - started) / 1000).toFixed(1)}s: ${line}\n`); };
  try {
    const r = await runSoak(args, progress);
    process.stdout.write(args.json ? `${JSON.stringify(r)}\n` : formatSoak(r));
    process.exit(r.ok ? 0 : 1);
  } catch (err) {
    process.stderr.write(`bench/soak: failed: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  }
}
