/**
 * How well the risk engine (issue 11) tells attacks from ordinary life, on simulated traffic, against a
 * naive detector run on the same windows, with the engine's and the telemetry parser's throughput
 * measured in the same run.
 *
 *   npm run bench:risk -- [--identities N] [--days D] [--seed S] [--json]
 *
 * 1. The fleet: copies of the simulator's shop (5 services each: web, orders, catalog, payments, db)
 *    until there are N services, each copy with 3 key servers besides, D simulated days from a Monday 00:00 UTC, 5 s windows, both ends
 *    reporting (src/core/risk/simulate.ts: diurnal and weekly load, noise, rare big payloads and outages).
 *    Day 1 is the engine's learning period. Legitimate changes on day 2: a deploy doubling one web's
 *    traffic for an hour, and one that raises an orders' traffic by half for good.
 * 2. Labelled attacks on the last day, every kind on every copy, two hours apart (copies a minute or so
 *    apart, so attacks start at different phases of a window): bulk exfiltration (bytes out ×50),
 *    slow exfiltration (×3 for 30 min), lateral movement (5 new callees), scanning (distinct paths ×30
 *    with denials), a stolen SVID (requests its own sidecar never reported), and a compromised key server
 *    pulling unseals from the other two key servers of its copy (60 a window each, 3 policies). Every
 *    copy has three key servers; orders and payments unseal their sealed files now and then (calm
 *    unseals, reported by the key servers only, as in the fabric).
 * 3. Everything replayed through the engine with the telemetry's clock (default config), and through a
 *    naive detector: an identity whose bytes out in a window exceed k × the fleet median of that window
 *    is quarantined for an hour (k = 3 and 10).
 * 4. Per attack kind: detected (quarantined / stepped up) on how many copies, the time from the labelled
 *    start to the decision, and the reasons. False quarantines and step-ups per identity-day on calm
 *    traffic (after the learning day; an attacked identity stops counting as calm at its first attack).
 * 5. The limit side: engine windows/s (the replay timed alone, chunk by chunk), the parser's lines/s
 *    (parseTelemetryLine) against bare JSON.parse, and the fleet one core can follow live.
 * 6. The verdict against the aims: every blatant attack (bulk, lateral, scanning, stolen SVID, unseal pull)
 *    quarantined within 15 s of its start, slow exfiltration within 10 minutes, no false quarantine on
 *    calm days.
 */
import { availableParallelism, loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { DEFAULT_RISK_CONFIG, type RiskConfig } from '../src/core/risk/config.js';
import { RiskEngine } from '../src/core/risk/engine.js';
import { DAY_MS, FLEET, SIM_START, simulate, svc, type EdgeSpec, type Injection, type UnsealSpec } from '../src/core/risk/simulate.js';
import { parseTelemetryLine, windowStart } from '../src/core/risk/telemetry.js';
import type { RiskChange, TelemetryWindow } from '../src/core/risk/types.js';
import { measureRate, type RateRow } from './args.js';

const MIN = 60_000;
const HOUR = 3_600_000;
const BLATANT_AIM_S = 15;
const SLOW_AIM_S = 600;
const NAIVE_K = [3, 10] as const;
const NAIVE_TTL_MS = HOUR;
const CHUNK = 20_000;

export const ATTACK_KINDS = ['bulk_exfil', 'slow_exfil', 'lateral', 'scan', 'stolen_svid', 'unseal_pull'] as const;
export type AttackKind = (typeof ATTACK_KINDS)[number];
const LABEL: Record<AttackKind, string> = {
  bulk_exfil: 'bulk exfiltration (bytes out ×50)', slow_exfil: 'slow exfiltration (bytes out ×3, 30 min)', lateral: 'lateral movement (5 new callees)',
  scan: 'scanning (paths ×30, denials)', stolen_svid: 'stolen SVID (unreported requests)', unseal_pull: 'key server pulling unseals',
};
const BLATANT: readonly AttackKind[] = ['bulk_exfil', 'lateral', 'scan', 'stolen_svid', 'unseal_pull'];
const KEY_SERVERS = ['keyserver-1', 'keyserver-2', 'keyserver-3'];

export interface RiskBenchOptions {
  identities: number;
  days: number;
  seed: number;
  /** Engine configuration (default: the engine's defaults, one learning day). */
  config?: RiskConfig;
}

/** One detector's outcome on one attack kind over all copies. */
export interface DetectionRow {
  kind: AttackKind;
  simulated: boolean;
  attacks: number;
  quarantined: number;
  /** Quarantined or stepped up. */
  detected: number;
  /** Seconds from the labelled start to the quarantine decision, per detected copy; and to the first step-up or quarantine. */
  quarantineDelayS: number[];
  detectDelayS: number[];
  /** Signals of the first decision, most points first (engine only), with the top reason's text of the first copy. */
  signals: string[];
  reason?: string;
}

export interface FalseAlarms {
  quarantines: number;
  stepUps: number;
  identityDays: number;
  quarantinesPerIdentityDay: number;
  stepUpsPerIdentityDay: number;
  /** Of those, on the identities that were deployed. */
  onDeployed: { quarantines: number; stepUps: number };
}

export interface RiskBenchResult {
  setup: { identities: number; copies: number; days: number; seed: number; windowS: number; windows: number; learningHours: number; node: string; cores: number; loadBefore: number; totalSeconds: number };
  engine: { attacks: DetectionRow[]; calm: FalseAlarms; windowsPerSec: number; seconds: number };
  naive: { k: number; attacks: DetectionRow[]; calm: FalseAlarms }[];
  limits: { parser: RateRow; jsonParse: RateRow; identitiesPerCore: number; windowsPerIdentityPerSec: number };
  aims: { blatantS: number; slowS: number };
  meetsAims: boolean;
  verdict: string;
}

interface Planned { kind: AttackKind; identity: string; at: number; end: number; injection: Injection }

const id = (copy: number, name: string): string => svc(`c${copy}/${name}`);

function fleetOf(copies: number): EdgeSpec[] {
  const out: EdgeSpec[] = [];
  for (let c = 0; c < copies; c++) for (const e of FLEET) out.push({ ...e, caller: `c${c}/${e.caller}`, callee: `c${c}/${e.callee}` });
  return out;
}

/** Calm unseals per copy: orders opens one sealed file about twice an hour, payments two about once an hour. */
function unsealsOf(copies: number): UnsealSpec[] {
  const out: UnsealSpec[] = [];
  for (let c = 0; c < copies; c++) {
    const keyServers = KEY_SERVERS.map((k) => `c${c}/${k}`);
    out.push({ caller: `c${c}/orders`, keyServers, policies: 1, perHour: 2 }, { caller: `c${c}/payments`, keyServers, policies: 2, perHour: 1 });
  }
  return out;
}

/** The injections: deploys after learning, every attack kind on every copy on the last day. */
function plan(copies: number, days: number, learningMs: number): { attacks: Planned[]; deploys: Injection[] } {
  // With more than two days the deploys go on day 2; otherwise just after learning ends.
  const deployBase = days >= 3 ? DAY_MS : learningMs;
  const deploys: Injection[] = [
    { kind: 'deploy', identity: id(0, 'web'), at: deployBase + (days >= 3 ? 14 * HOUR : 30 * MIN), durationMs: HOUR, factor: 2 },
    { kind: 'deploy', identity: id(Math.min(1, copies - 1), 'orders'), at: deployBase + (days >= 3 ? 10 * HOUR : 15 * MIN), durationMs: days * DAY_MS, factor: 1.5 },
  ];
  const attacks: Planned[] = [];
  const lastDay = (days - 1) * DAY_MS;
  for (let c = 0; c < copies; c++) {
    // 67 s apart per copy: attacks start at different phases of the 5 s window.
    const hour = (h: number): number => lastDay + h * HOUR + c * 67_000;
    const add = (injection: Injection): void => {
      attacks.push({ kind: injection.kind as AttackKind, identity: injection.identity, at: injection.at, end: injection.at + injection.durationMs, injection });
    };
    add({ kind: 'bulk_exfil', identity: id(c, 'orders'), callee: id(c, 'db'), at: hour(8), durationMs: 10 * MIN, factor: 50 });
    add({ kind: 'slow_exfil', identity: id(c, 'catalog'), callee: id(c, 'db'), at: hour(10), durationMs: 30 * MIN, factor: 3 });
    add({ kind: 'lateral', identity: id(c, 'orders'), newCallees: ['catalog', 'web', 'vault', 'admin', 'keyserver'].map((n) => id(c, n)), at: hour(12), durationMs: 10 * MIN });
    add({ kind: 'scan', identity: id(c, 'web'), callee: id(c, 'catalog'), at: hour(14), durationMs: 10 * MIN });
    add({ kind: 'stolen_svid', identity: id(c, 'payments'), callee: id(c, 'db'), at: hour(16), durationMs: 10 * MIN, requests: 30 });
    add({ kind: 'unseal_pull', identity: id(c, 'keyserver-1'), keyServers: [id(c, 'keyserver-2'), id(c, 'keyserver-3')], at: hour(18), durationMs: 10 * MIN, requests: 60, policies: 3 });
  }
  return { attacks, deploys };
}

/** A detector's decisions, as the bench scores them. */
interface Decision { identity: string; time: number; state: 'step-up' | 'quarantined'; signals: string[]; text?: string }

/**
 * The naive baseline: per window, each caller's bytes out (the larger of the two ends' reports per edge,
 * summed); above k × the median over the fleet's callers in that window, the caller is quarantined for
 * an hour. Decided at the same moment the engine decides (window end plus one grace window).
 */
class NaiveDetector {
  private readonly until = new Map<string, number>();
  readonly decisions: Decision[] = [];
  constructor(readonly k: number, private readonly decideAfterMs: number) {}

  slot(start: number, bytesOut: Map<string, number>): void {
    const values = [...bytesOut.values()].sort((a, b) => a - b);
    if (values.length === 0) return;
    const median = values[values.length >> 1]!;
    const time = start + this.decideAfterMs;
    for (const [identity, b] of bytesOut) {
      if (b <= this.k * median || (this.until.get(identity) ?? 0) > time) continue;
      this.until.set(identity, time + NAIVE_TTL_MS);
      this.decisions.push({ identity, time, state: 'quarantined', signals: ['bytes_out'], text: `bytes out ${b} > ${this.k} × fleet median ${median}` });
    }
  }
}

/** Per window slot, each caller's bytes out with both ends merged as the engine merges them. */
function slotBytesOut(windows: readonly TelemetryWindow[]): Map<string, number> {
  const perEdge = new Map<string, { caller: string; c: number; e: number }>();
  for (const w of windows) {
    const key = `${w.caller} ${w.callee}`;
    let x = perEdge.get(key);
    if (!x) perEdge.set(key, (x = { caller: w.caller, c: 0, e: 0 }));
    if (w.reporter === 'caller') x.c += w.bytes_out;
    else x.e += w.bytes_out;
  }
  const out = new Map<string, number>();
  for (const x of perEdge.values()) out.set(x.caller, (out.get(x.caller) ?? 0) + Math.max(x.c, x.e));
  return out;
}

function score(decisions: readonly Decision[], attacks: readonly Planned[], copies: number, startCalm: number, endMs: number, deployed: ReadonlySet<string>): { rows: DetectionRow[]; calm: FalseAlarms } {
  const rows: DetectionRow[] = [];
  for (const kind of ATTACK_KINDS) {
    const mine = attacks.filter((a) => a.kind === kind);
    const row: DetectionRow = { kind, simulated: mine.length > 0, attacks: mine.length, quarantined: 0, detected: 0, quarantineDelayS: [], detectDelayS: [], signals: [] };
    for (const a of mine) {
      // A decision counts for the attack from its start to a minute after its end.
      const during = decisions.filter((d) => d.identity === a.identity && d.time >= a.at && d.time <= a.end + MIN);
      const first = during[0];
      const q = during.find((d) => d.state === 'quarantined');
      if (first) {
        row.detected++;
        row.detectDelayS.push((first.time - a.at) / 1000);
        if (row.signals.length === 0) {
          row.signals = (q ?? first).signals;
          row.reason = (q ?? first).text;
        }
      }
      if (q) {
        row.quarantined++;
        row.quarantineDelayS.push((q.time - a.at) / 1000);
      }
    }
    rows.push(row);
  }
  // Calm: after learning; an attacked identity until its first attack starts.
  const firstAttack = new Map<string, number>();
  for (const a of attacks) firstAttack.set(a.identity, Math.min(firstAttack.get(a.identity) ?? Infinity, a.at));
  let exposureMs = 0;
  const all = new Set<string>();
  for (let c = 0; c < copies; c++) {
    for (const e of FLEET) all.add(id(c, e.caller)).add(id(c, e.callee));
    for (const k of KEY_SERVERS) all.add(id(c, k));
  }
  for (const i of all) exposureMs += Math.max(0, Math.min(endMs, firstAttack.get(i) ?? Infinity) - startCalm);
  const falses = decisions.filter((d) => d.time >= startCalm && d.time < (firstAttack.get(d.identity) ?? Infinity));
  const identityDays = exposureMs / DAY_MS;
  const quarantines = falses.filter((d) => d.state === 'quarantined');
  const stepUps = falses.filter((d) => d.state === 'step-up');
  return {
    rows,
    calm: {
      quarantines: quarantines.length, stepUps: stepUps.length, identityDays: Math.round(identityDays * 10) / 10,
      quarantinesPerIdentityDay: identityDays > 0 ? quarantines.length / identityDays : 0, stepUpsPerIdentityDay: identityDays > 0 ? stepUps.length / identityDays : 0,
      onDeployed: { quarantines: quarantines.filter((d) => deployed.has(d.identity)).length, stepUps: stepUps.filter((d) => deployed.has(d.identity)).length },
    },
  };
}

function engineDecision(c: RiskChange): Decision | undefined {
  if (c.state === 'normal') return undefined;
  return { identity: c.identity, time: c.time - SIM_START, state: c.state, signals: c.reasons.map((r) => r.signal), text: c.reasons[0]?.text };
}

/** Runs the whole evaluation; `measureSeconds` is the time given to each parser rate (0.5–2 s). */
export function runRiskBench(opts: RiskBenchOptions, measureSeconds = 1): RiskBenchResult {
  const started = performance.now();
  const loadBefore = loadavg()[0]!;
  const config = opts.config ?? DEFAULT_RISK_CONFIG;
  const copies = Math.max(1, Math.ceil(opts.identities / FLEET.length));
  const durationMs = opts.days * DAY_MS;
  const windowMs = config.windowS * 1000;
  const { attacks, deploys } = plan(copies, opts.days, config.learningPeriodMs);
  const engine = new RiskEngine(config);
  const decideAfterMs = windowMs * (1 + config.graceWindows);
  const naive = NAIVE_K.map((k) => new NaiveDetector(k, decideAfterMs));
  const decisions: Decision[] = [];
  let engineMs = 0;
  let windows = 0;
  let sample: string[] = [];
  const chunk: TelemetryWindow[] = [];
  let slot: TelemetryWindow[] = [];
  let slotStart = -1;
  const closeSlot = (): void => {
    if (slot.length === 0) return;
    const b = slotBytesOut(slot);
    for (const n of naive) n.slot(slotStart - SIM_START, b);
    slot = [];
  };
  const runChunk = (): void => {
    const t0 = performance.now();
    const changes: RiskChange[] = [];
    for (const w of chunk) for (const c of engine.ingest(w)) changes.push(c);
    engineMs += performance.now() - t0;
    for (const c of changes) {
      const d = engineDecision(c);
      if (d) decisions.push(d);
    }
    for (const w of chunk) {
      const s = windowStart(w);
      if (s !== slotStart) {
        closeSlot();
        slotStart = s;
      }
      slot.push(w);
    }
    if (sample.length === 0) sample = chunk.map((w) => JSON.stringify(w));
    windows += chunk.length;
    chunk.length = 0;
  };
  for (const w of simulate({ seed: opts.seed, durationMs, windowS: config.windowS, injections: [...deploys, ...attacks.map((a) => a.injection)], fleet: fleetOf(copies), unseal: unsealsOf(copies) })) {
    chunk.push(w);
    if (chunk.length >= CHUNK) runChunk();
  }
  runChunk();
  closeSlot();
  const t0 = performance.now();
  for (const c of engine.flush()) {
    const d = engineDecision(c);
    if (d) decisions.push(d);
  }
  engineMs += performance.now() - t0;

  const deployed = new Set(deploys.map((d) => d.identity));
  // The shop's five services and the three key servers of each copy.
  const identities = copies * (FLEET.length + KEY_SERVERS.length);
  const judged = (ds: Decision[]) => score(ds, attacks, copies, config.learningPeriodMs, durationMs, deployed);
  const engineScore = judged(decisions);
  const naiveScores = naive.map((n) => ({ k: n.k, ...judged(n.decisions) }));

  // The limit side: parsing the lines the sidecars ship (validation included) against bare JSON.parse.
  const parser = measureRate('parseTelemetryLine', measureSeconds, (i) => parseTelemetryLine(sample[i % sample.length]!));
  const jsonParse = measureRate('JSON.parse (no validation)', measureSeconds, (i) => JSON.parse(sample[i % sample.length]!));
  const windowsPerSec = (windows / engineMs) * 1000;
  const windowsPerIdentityPerSec = windows / (durationMs / 1000) / identities;

  const byKind = new Map(engineScore.rows.map((r) => [r.kind, r]));
  const failures: string[] = [];
  for (const kind of BLATANT) {
    const r = byKind.get(kind)!;
    if (r.quarantined < r.attacks || r.quarantineDelayS.some((d) => d > BLATANT_AIM_S)) failures.push(`${kind} ${r.quarantined}/${r.attacks} quarantined, worst ${worst(r.quarantineDelayS)}`);
  }
  const slow = byKind.get('slow_exfil')!;
  if (slow.quarantined < slow.attacks || slow.quarantineDelayS.some((d) => d > SLOW_AIM_S)) failures.push(`slow_exfil ${slow.quarantined}/${slow.attacks} quarantined, worst ${worst(slow.quarantineDelayS)}`);
  if (engineScore.calm.quarantines > 0) failures.push(`${engineScore.calm.quarantines} false quarantines on calm traffic`);
  const meetsAims = failures.length === 0;
  const verdict = `${meetsAims ? 'MEETS' : 'BELOW'} the aims (blatant attacks quarantined ≤ ${BLATANT_AIM_S} s, slow exfiltration ≤ ${SLOW_AIM_S / 60} min, no false quarantine on calm days)${meetsAims ? '' : `: ${failures.join('; ')}`}`;
  return {
    setup: { identities, copies, days: opts.days, seed: opts.seed, windowS: config.windowS, windows, learningHours: config.learningPeriodMs / HOUR, node: process.version, cores: availableParallelism(), loadBefore, totalSeconds: Math.round((performance.now() - started) / 100) / 10 },
    engine: { attacks: engineScore.rows, calm: engineScore.calm, windowsPerSec, seconds: engineMs / 1000 },
    naive: naiveScores.map((n) => ({ k: n.k, attacks: n.rows, calm: n.calm })),
    limits: { parser, jsonParse, identitiesPerCore: Math.floor(windowsPerSec / windowsPerIdentityPerSec), windowsPerIdentityPerSec },
    aims: { blatantS: BLATANT_AIM_S, slowS: SLOW_AIM_S },
    meetsAims,
    verdict,
  };
}

function worst(xs: number[]): string {
  return xs.length === 0 ? '–' : `${Math.max(...xs)} s`;
}

const fmtInt = (n: number): string => Math.round(n).toLocaleString('en-US');

function delays(r: DetectionRow): string {
  if (!r.simulated) return 'not simulated';
  if (r.quarantineDelayS.length === 0) return r.detected > 0 ? `step-up only, ${Math.min(...r.detectDelayS)}–${Math.max(...r.detectDelayS)} s` : '–';
  const sorted = [...r.quarantineDelayS].sort((a, b) => a - b);
  return `${sorted[0]}–${sorted[sorted.length - 1]} s`;
}

function cell(r: DetectionRow): string {
  if (!r.simulated) return 'not simulated';
  return `${r.quarantined}/${r.attacks} q${r.detected > r.quarantined ? ` +${r.detected - r.quarantined} step-up` : ''}, ${delays(r)}`;
}

export function formatRiskBench(res: RiskBenchResult): string {
  const s = res.setup;
  const out: string[] = [];
  out.push(`risk engine on simulated traffic (src/core/risk/simulate.ts): ${s.identities} identities (${s.copies} × the 5-service shop and its 3 key servers), ${s.days} days, seed ${s.seed}, ${s.windowS} s windows, ${fmtInt(s.windows)} windows`);
  out.push(`learning: the first ${s.learningHours} h; deploys after it (×2 traffic for 1 h, ×1.5 for good); every attack kind on every copy on the last day`);
  out.push(`machine: ${s.cores} cores, load average ${s.loadBefore.toFixed(2)} before the run, Node ${s.node}\n`);
  const heads = ['engine', ...res.naive.map((n) => `naive bytes_out > ${n.k}× median`)];
  const kindW = Math.max(...ATTACK_KINDS.map((k) => LABEL[k].length));
  const colW = 34;
  out.push('attack detection (quarantined / attacks, time from attack start to the quarantine decision, min–max):');
  out.push(`${'attack'.padEnd(kindW)}  ${heads.map((h) => h.padEnd(colW)).join('  ')}`);
  for (let i = 0; i < ATTACK_KINDS.length; i++) {
    const kind = ATTACK_KINDS[i]!;
    const cells = [res.engine.attacks[i]!, ...res.naive.map((n) => n.attacks[i]!)].map(cell);
    out.push(`${LABEL[kind].padEnd(kindW)}  ${cells.map((c) => c.padEnd(colW)).join('  ')}`);
  }
  out.push('\nthe engine\'s reasons (signals of the decision, most points first; the first copy\'s top reason):');
  for (const r of res.engine.attacks) {
    if (!r.simulated) {
      out.push(`  ${r.kind}: not simulated`);
      continue;
    }
    out.push(`  ${r.kind}: ${r.signals.join(', ') || 'none'}${r.reason ? ` — ${r.reason}` : ''}`);
  }
  out.push('\nfalse alarms on calm traffic (after learning; attacked identities until their first attack):');
  const calmRows = [['engine', res.engine.calm] as const, ...res.naive.map((n) => [`naive k=${n.k}`, n.calm] as const)];
  out.push(`${'detector'.padEnd(12)}  ${'identity-days'.padStart(13)}  ${'quarantines'.padStart(11)}  ${'per id-day'.padStart(10)}  ${'step-ups'.padStart(8)}  ${'per id-day'.padStart(10)}  on deployed (q/step-up)`);
  for (const [name, c] of calmRows) {
    out.push(`${name.padEnd(12)}  ${c.identityDays.toFixed(1).padStart(13)}  ${String(c.quarantines).padStart(11)}  ${c.quarantinesPerIdentityDay.toFixed(3).padStart(10)}  ${String(c.stepUps).padStart(8)}  ${c.stepUpsPerIdentityDay.toFixed(3).padStart(10)}  ${c.onDeployed.quarantines}/${c.onDeployed.stepUps}`);
  }
  out.push('\nthroughput, single thread:');
  out.push(`  engine replay:        ${fmtInt(res.engine.windowsPerSec).padStart(10)} windows/s (${fmtInt(s.windows)} windows in ${res.engine.seconds.toFixed(1)} s)`);
  out.push(`  parseTelemetryLine:   ${fmtInt(res.limits.parser.opsPerSecond).padStart(10)} lines/s`);
  out.push(`  JSON.parse alone:     ${fmtInt(res.limits.jsonParse.opsPerSecond).padStart(10)} lines/s (the limit for any line parser)`);
  out.push(`  one core follows live: ${fmtInt(res.limits.identitiesPerCore)} identities of this fleet (${res.limits.windowsPerIdentityPerSec.toFixed(2)} windows/s each; busier identities with more edges send more)\n`);
  out.push(`verdict: ${res.verdict}`);
  out.push(`(ran in ${s.totalSeconds} s)`);
  return out.join('\n');
}

const USAGE = 'usage: node dist/bench/risk.js [--identities N] [--days D] [--seed S] [--json]';

function usage(msg: string): never {
  process.stderr.write(`bench/risk: ${msg}\n${USAGE}\n`);
  process.exit(2);
}

function intArg(v: string | undefined, flag: string, min: number, max: number): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) usage(`${flag} must be a whole number from ${min} to ${max}`);
  return n;
}

function main(): void {
  const argv = process.argv.slice(2);
  const o: RiskBenchOptions & { json: boolean } = { identities: 30, days: 3, seed: 7, json: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--json') o.json = true;
    else if (a === '--identities') o.identities = intArg(argv[++i], a, 1, 1000);
    else if (a === '--days') o.days = intArg(argv[++i], a, 2, 14);
    else if (a === '--seed') o.seed = intArg(argv[++i], a, 0, 2 ** 32 - 1);
    else if (a === '--help' || a === '-h') {
      process.stdout.write(`${USAGE}\n  --identities N  services, rounded up to × the 5-service shop; each copy adds 3 key servers (default 30)\n  --days D        simulated days, 2–14; day 1 is learning, attacks on the last (default 3)\n  --seed S        PRNG seed (default 7)\n  --json          machine-readable output\n`);
      return;
    } else usage(`unknown argument ${a}`);
  }
  const res = runRiskBench(o);
  process.stdout.write(o.json ? `${JSON.stringify(res, null, 2)}\n` : `${formatRiskBench(res)}\n`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  try {
    main();
  } catch (err) {
    process.stderr.write(`bench/risk: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exit(1);
  }
}
