/**
 * Quarantine end to end over real sidecars (issue 11, item 6): from the first exfiltrating request
 * to the quarantine being enforced on every agent, with the risk engine deciding.
 *
 *   node dist/bench/quarantine-e2e.js [--agents N] [--runs R] [--json]      (npm run bench:quarantine-e2e)
 *
 * One control plane process and N agent processes (`tessera agent`, default 20), each with its own
 * entry, SVID and sidecar (bench/quarantine-fleet.ts). Agent 0's workload calls its callee (agent 1)
 * through its outbound proxy and the callee's inbound: a calm phase (small GETs), then it starts
 * exfiltrating (256 KiB POST bodies, about 4 MiB/s) until the fabric stops it. Its sidecar and the
 * callee's ship 1 s telemetry windows; the control plane's risk engine (configuration printed, see
 * FLEET_RISK_CONFIG: it makes detection a cold-start rule rather than a day of learning) quarantines it.
 *
 * Measured, per run:
 *   (a) first exfiltrating request (this process's clock, just before it is sent) → the quarantine
 *       decision (the risk record's `since`: the instant the control plane applied the engine's change,
 *       before it signed and published the bundle);
 *   (b) decision → each agent enforcing it: the timestamp of the agent's own `policy bundle in force`
 *       log line for the bundle that carries the quarantine (the audit record `risk.quarantine` names its
 *       version). That line is written when the enforcer has installed the bundle, i.e. when every later
 *       check of that process refuses the identity; reading the log file afterwards keeps the bench out of
 *       the measured path, unlike probing 20 sidecars in a loop on a 2-core machine would. Processes on
 *       one machine share one wall clock, so the differences are real. After each run a probe through
 *       every sidecar (an mTLS call with the exfiltrator's SVID to each inbound: 403
 *       TESSERA_IDENTITY_QUARANTINED; its own outbound: refused) confirms the log says what the proxies do;
 *   (c) first exfiltrating request → enforced on every agent.
 * Side by side, in the same run and on the same agents:
 *   baseline: a hand quarantine (`POST /v1/risk/ID/quarantine`, what `tessera risk quarantine` sends):
 *       the same push path without detection, decision → each agent;
 *   limit: a bare long-poll client in this process (decision → the new bundle's answer reaching it:
 *       sign + publish + wake + one HTTPS response), and the round trip of GET /healthz on an already
 *       open HTTPS connection to the control plane from this host.
 *
 * Bounded: a hard deadline; every child is stopped in `finally`, on SIGINT/SIGTERM, and SIGKILLed if
 * this process exits first (bench/procs.ts).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AuditListResponse } from '../src/core/wire/control-plane.js';
import { CLI, Children } from './procs.js';
import {
  BundleWatcher, EXFIL, EXFIL_BODY_BYTES, FLEET_RISK_CONFIG, calmThenExfiltrate, everyAgentAllows, everyAgentRefuses, installedAt, openConnectionRtts, quarantinedState, riskCall, spread, startFleet,
  type Fleet, type Spread,
} from './quarantine-fleet.js';

const USAGE = 'usage: node dist/bench/quarantine-e2e.js [--agents N (3-60, default 20)] [--runs R (1-50, default 5)] [--json]';
const DETECT_LIMIT_MS = 30_000;
const ENFORCE_LIMIT_MS = 15_000;

function usage(msg: string): never {
  process.stderr.write(`bench/quarantine-e2e: ${msg}\n${USAGE}\n`);
  process.exit(2);
}

function parseArgs(argv: string[]): { agents: number; runs: number; json: boolean } {
  const o = { agents: 20, runs: 5, json: false };
  const int = (v: string | undefined, min: number, max: number, name: string): number => {
    const n = Number(v);
    if (v === undefined || !/^\d+$/.test(v) || !Number.isInteger(n) || n < min || n > max) usage(`${name} must be a whole number from ${min} to ${max}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--json') o.json = true;
    else if (a === '--agents') o.agents = int(argv[++i], 3, 60, '--agents');
    else if (a === '--runs') o.runs = int(argv[++i], 1, 50, '--runs');
    else if (a === '--help' || a === '-h') {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    } else usage(`unknown argument ${a}`);
  }
  return o;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Push { decision: number; perAgent: number[]; every: number; wake?: number }

/** Decision → each agent installs `version` (or later), and → the bare long-poll client saw it. */
async function push(fleet: Fleet, watcher: BundleWatcher, decision: number, version: number): Promise<Push> {
  const at = await Promise.all(fleet.agents.map((a) => installedAt(a, version, ENFORCE_LIMIT_MS)));
  const perAgent = at.map((t) => t - decision);
  const seen = watcher.firstAt(version);
  return { decision, perAgent, every: Math.max(...perAgent), ...(seen !== undefined ? { wake: seen - decision } : {}) };
}

/** The bundle version the latest `risk.quarantine` of the exfiltrator was published in. */
async function quarantineBundle(fleet: Fleet): Promise<number> {
  const recs = (await fleet.admin.call<AuditListResponse>('GET', '/v1/audit?action=risk.quarantine&limit=1000')).records.filter((r) => r.target === EXFIL);
  const last = recs.reduce((a, b) => (b.id > a.id ? b : a));
  return Number(last.detail.bundle_version);
}

/** Releases the exfiltrator and waits until every agent lets it through again. */
async function release(fleet: Fleet, why: string): Promise<void> {
  const res = await riskCall(fleet, 'release', why);
  await Promise.all(fleet.agents.map((a) => installedAt(a, res.bundle_version!, ENFORCE_LIMIT_MS)));
  const deadline = Date.now() + ENFORCE_LIMIT_MS;
  while (!(await everyAgentAllows(fleet))) {
    if (Date.now() > deadline) throw new Error('the exfiltrator was not let through again after its release');
    await sleep(100);
  }
}

/** One detection run: calm, then exfiltration until refused; the engine's quarantine measured. */
async function detectionRun(fleet: Fleet, watcher: BundleWatcher, run: number): Promise<{ detect: number; push: Push; endToEnd: number; sent: number; reasons: string[]; confirmed: boolean }> {
  const { first, sent } = await calmThenExfiltrate(fleet, 10, DETECT_LIMIT_MS);
  // Refused: by its own outbound or the callee's inbound, whichever enforced first. The decision:
  const state = await quarantinedState(fleet, 5_000);
  if (state.state !== 'quarantined' || state.set_by !== 'engine') throw new Error(`run ${run}: refused, but the risk state is ${state.state} set by ${state.set_by}`);
  const decision = Date.parse(state.since);
  const p = await push(fleet, watcher, decision, await quarantineBundle(fleet));
  const confirmed = await everyAgentRefuses(fleet);
  if (confirmed.failures.length > 0) process.stderr.write(`bench/quarantine-e2e: run ${run}: not refused by ${confirmed.failures.join(', ')}\n`);
  return { detect: decision - first, push: p, endToEnd: decision + p.every - first, sent, reasons: state.reasons.map((r) => r.text), confirmed: confirmed.failures.length === 0 };
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const loadBefore = loadavg()[0]!;
  const dir = mkdtempSync(join(tmpdir(), 'tessera-bench-quarantine-e2e-'));
  const children = new Children(o.agents + 1);
  let fleet: Fleet | undefined;
  let watcher: BundleWatcher | undefined;
  let cleaning: Promise<void> | undefined;
  const cleanup = (): Promise<void> => (cleaning ??= (async () => {
    await watcher?.stop();
    await fleet?.close();
    await children.stopAll(3000);
    rmSync(dir, { recursive: true, force: true });
  })());
  const abort = (why: string, code: number) => (): void => {
    process.stderr.write(`bench/quarantine-e2e: ${why}\n`);
    void cleanup().finally(() => process.exit(code));
  };
  process.once('SIGINT', abort('interrupted', 130));
  process.once('SIGTERM', abort('terminated', 143));
  const deadline = setTimeout(abort('deadline exceeded', 3), (180 + o.agents * 5 + o.runs * 60) * 1000);
  deadline.unref();
  try {
    const setupStart = Date.now();
    fleet = await startFleet({ agents: o.agents, dir, children, cli: CLI });
    const f = fleet;
    const setupMs = Date.now() - setupStart;
    const current = await f.admin.call<{ version: number }>('GET', '/v1/policy/bundle');
    watcher = new BundleWatcher(f.cpUrl, readTls(dir));
    watcher.start(current.version);
    const rtts: number[] = [];
    const detect: number[] = [];
    const endToEnd: number[] = [];
    const engine = { perAgent: [] as number[], every: [] as number[], wake: [] as number[] };
    const hand = { perAgent: [] as number[], every: [] as number[], wake: [] as number[] };
    let confirmed = 0;
    let reasons: string[] = [];
    let sentBytes = 0;
    for (let run = 0; run < o.runs; run++) {
      rtts.push(...await openConnectionRtts(f.admin, 20));
      const d = await detectionRun(f, watcher, run);
      detect.push(d.detect);
      endToEnd.push(d.endToEnd);
      engine.perAgent.push(...d.push.perAgent);
      engine.every.push(d.push.every);
      if (d.push.wake !== undefined) engine.wake.push(d.push.wake);
      if (d.confirmed) confirmed++;
      reasons = d.reasons;
      sentBytes += d.sent;
      await release(f, `bench run ${run}: detection measured`);
      await sleep(300);
      // Baseline: the same push without detection.
      const res = await riskCall(f, 'quarantine', `bench run ${run}: baseline`);
      const p = await push(f, watcher, Date.parse(res.state.since), res.bundle_version!);
      hand.perAgent.push(...p.perAgent);
      hand.every.push(p.every);
      if (p.wake !== undefined) hand.wake.push(p.wake);
      await release(f, `bench run ${run}: baseline measured`);
      await sleep(300);
    }
    const result = {
      agents: o.agents, runs: o.runs, cpus: cpus().length, load_before: Math.round(loadBefore * 100) / 100, load_after: Math.round(loadavg()[0]! * 100) / 100, setup_ms: setupMs,
      risk_config: FLEET_RISK_CONFIG,
      exfil: { body_bytes: EXFIL_BODY_BYTES, mean_bytes_sent_before_refused: Math.round(sentBytes / o.runs), reasons },
      detect_ms: spread(detect),
      engine_push_per_agent_ms: spread(engine.perAgent),
      engine_push_every_agent_ms: spread(engine.every),
      end_to_end_ms: spread(endToEnd),
      baseline_hand_per_agent_ms: spread(hand.perAgent),
      baseline_hand_every_agent_ms: spread(hand.every),
      limit_long_poll_wake_ms: spread([...engine.wake, ...hand.wake]),
      limit_open_https_rtt_ms: spread(rtts),
      confirmed_runs: confirmed,
    };
    if (o.json) process.stdout.write(`${JSON.stringify(result)}\n`);
    else process.stdout.write(report(result));
    if (confirmed < o.runs) process.exitCode = 1;
  } finally {
    clearTimeout(deadline);
    await cleanup();
  }
}

/** The admin credential, for the bare long-poll client (it must not share the admin's connections). */
function readTls(dir: string): { ca: string; cert: string; key: string } {
  const rd = (n: string): string => readFileSync(join(dir, 'cp', 'admin', n), 'utf8');
  return { ca: rd('bundle.pem'), cert: rd('admin.pem'), key: rd('admin.key') };
}

function report(r: {
  agents: number; runs: number; cpus: number; load_before: number; load_after: number; setup_ms: number; risk_config: unknown;
  exfil: { body_bytes: number; mean_bytes_sent_before_refused: number; reasons: string[] };
  detect_ms: Spread | undefined; engine_push_per_agent_ms: Spread | undefined; engine_push_every_agent_ms: Spread | undefined; end_to_end_ms: Spread | undefined;
  baseline_hand_per_agent_ms: Spread | undefined; baseline_hand_every_agent_ms: Spread | undefined; limit_long_poll_wake_ms: Spread | undefined; limit_open_https_rtt_ms: Spread | undefined;
  confirmed_runs: number;
}): string {
  const row = (name: string, s: Spread | undefined): string => `  ${name.padEnd(58)} ${s ? `${String(s.p50).padStart(8)} ${String(s.p99).padStart(8)} ${String(s.max).padStart(8)} ${String(s.n).padStart(5)}` : '       -'}\n`;
  let out = `quarantine end to end: ${r.agents} agent processes + 1 control plane on 127.0.0.1, ${r.runs} run(s); ${r.cpus} CPUs, load ${r.load_before} → ${r.load_after}; setup ${(r.setup_ms / 1000).toFixed(1)} s\n`;
  out += `risk config (PUT /v1/risk/config): ${JSON.stringify(r.risk_config)}\n`;
  out += `exfiltration: ${r.exfil.body_bytes / 1024} KiB bodies; ${(r.exfil.mean_bytes_sent_before_refused / 1048576).toFixed(1)} MiB sent per run before it was refused\n`;
  out += `engine's reasons (last run): ${r.exfil.reasons.join('; ')}\n\n`;
  out += `  ${'ms'.padEnd(58)} ${'p50'.padStart(8)} ${'p99'.padStart(8)} ${'max'.padStart(8)} ${'n'.padStart(5)}\n`;
  out += row('(a) first exfil request → quarantine decision', r.detect_ms);
  out += row('(b) decision → an agent enforces (every agent, every run)', r.engine_push_per_agent_ms);
  out += row('    decision → every agent enforces (per run)', r.engine_push_every_agent_ms);
  out += row('(c) first exfil request → enforced on every agent', r.end_to_end_ms);
  out += row('baseline: hand quarantine → an agent enforces', r.baseline_hand_per_agent_ms);
  out += row('baseline: hand quarantine → every agent enforces (per run)', r.baseline_hand_every_agent_ms);
  out += row('limit: decision → a bare long-poll client has the bundle', r.limit_long_poll_wake_ms);
  out += row('limit: HTTPS round trip on an open connection (/healthz)', r.limit_open_https_rtt_ms);
  out += `\nconfirmed by probes through every sidecar: ${r.confirmed_runs} of ${r.runs} run(s) refused everywhere. Aim: enforcement everywhere ≤ 1000 ms after the decision.\n`;
  return out;
}

main().catch((err: unknown) => {
  process.stderr.write(`bench/quarantine-e2e: ${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
});
