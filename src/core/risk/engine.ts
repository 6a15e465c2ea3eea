/**
 * The risk engine (issue 11): pure code, no I/O, no wall clock. It learns how every identity behaves
 * from telemetry windows and proposes state changes (normal → step-up → quarantined); the control
 * plane applies them, `tessera risk replay` prints them. README "Risk engine" has the same model in prose.
 *
 * Slots. Windows are grouped by slot (`floor(ts / window_s)`). A slot is judged once, when the clock
 * (the latest window end seen, or `tick(now)`) passes its end plus `graceWindows`: late or skewed reports
 * of both ends are in by then. Windows for an already judged slot are dropped and counted (`stats().late`).
 * Several reports of one (slot, edge, reporter) (replicas) are summed.
 *
 * What an identity is judged on: its behaviour as a caller. Per edge the engine takes the larger of
 * the caller's and the callee's report of each count (either end may under-report), sums the edges
 * into the caller's totals, and keeps baselines for the caller identity and for each edge. A callee's
 * inbound view gets a baseline too (shown by `identity()`), but a callee is never blamed for what its
 * callers do to it.
 *
 * Baseline. Per key and metric (requests, bytes out, bytes in, errors, denials, distinct paths, and bytes
 * per request each way), in log space (`log1p`), an exponentially weighted mean and mean absolute
 * deviation: one global estimate (memory ≈ 1/α windows) and 48 seasonal ones (hour of day in UTC ×
 * weekday/weekend). Robust updates: a value further than 3 spreads from the mean moves the mean only
 * by α/20 of the clipped distance and never widens the spread, so an attack does not teach the baseline;
 * while an identity is in step-up all its updates are slow, while quarantined none are made.
 * The deviation of a value is a robust z-score (distance over 1.25 × mean absolute deviation, with a
 * floor per metric); with a mature seasonal bucket it is the smaller of the global and seasonal z
 * (unusual both for the recent level and for this hour of the week), else the global one.
 *
 * Signals and score. Per slot each signal gets points: `weight × (z − zStart) / (zFull − zStart)` for
 * the deviations (only upwards), `weight × count` for new callees seen in the last `newEdgeHorizon`,
 * `weight × excess / (2 × coldStart.unreported)` for callee-seen requests the caller did not report.
 * Evidence accumulates per signal, `E ← E × 0.5^(window/halfLife) + gain × points`, so a sustained
 * moderate signal builds up while a blip fades; a signal contributes `min(cap, max(points, E))` and
 * the score is the sum, at most 100. Volume and errors are capped below the step-up threshold.
 *
 * Unseals (`action: unseal`, reported by key servers only; an identity that reports one is a key server).
 * Per caller and slot: U, the most unseal requests to one key server (an unseal asks each key server
 * once), and P, the most distinct secret policies at one. `unseal_pull` scores a key server acting as an
 * unseal caller at all (its full weight: key servers never unseal), and anyone else at or above its
 * allowance: `weight × max(U / max(coldStart.unseals, 3 × peak U), P / max(coldStart.unsealPolicies,
 * 2 × peak P))`. The peaks are the identity's own, learnt from calm slots only (normal, score below
 * `stepDownBelow`): taken as seen during learning, afterwards raised at most 25% (+1) an hour, so a pull
 * ramped up within minutes is still far above them.
 * Key servers it never unsealed from also count as new edges. Unseals are never `unreported_by_caller`:
 * the caller's side of an unseal (the agent, or a one-shot `tessera secret unseal`) is not its sidecar.
 *
 * Learning and cold start. An identity is judged against its own baselines only after
 * `learningPeriod` since it was first seen and once a baseline holds `minSamples` windows. Until then
 * only blatant signals act, on absolute per-window thresholds (`coldStart`): a denial burst, scanning
 * breadth, huge bytes out or in, and unreported traffic; new edges are learned silently.
 *
 * States. normal → step-up at `stepUpAt` held for `stepUpConfirm` slots (one window's blip, such as a
 * big export, does not step an identity up); step-up → normal below `stepDownBelow` (hysteresis); any →
 * quarantined at `quarantineAt`. A quarantine lasts until `release(id, time)` or its TTL; either resets
 * the identity's evidence, and windows older than the release are never judged again for it.
 */
import { TesseraError } from '../errors.js';
import { DEFAULT_RISK_CONFIG, SIGNALS, type RiskConfig, type Signal } from './config.js';
import { windowStart } from './telemetry.js';
import type { RiskChange, RiskReason, RiskState, TelemetryWindow } from './types.js';

/** Metrics per baseline key, in this order. */
const METRICS = ['requests', 'bytes_out', 'bytes_in', 'errors', 'denials', 'paths', 'bytes_out_per_request', 'bytes_in_per_request'] as const;
type Metric = (typeof METRICS)[number];
const M = METRICS.length;
const [REQ, BOUT, BIN, ERR, DEN, PATHS, BOUT_PR, BIN_PR] = [0, 1, 2, 3, 4, 5, 6, 7] as const;
/** Spread floors in log units (≈ relative change): counts that are usually 0 need a wide floor. */
const FLOOR = [0.15, 0.15, 0.15, 0.5, 0.5, 0.2, 0.1, 0.1];
const BUCKETS = 48;
const ALPHA = 0.02;
const ALPHA_SLOW = ALPHA / 20;
/** Values further than this many spreads from the mean are clipped (winsorised) and learnt slowly. */
const CLIP = 3;
/** The first samples form a plain running mean (no clipping) so the estimate settles. */
const WARMUP = 10;
/** A total above this z counts for bytes even when bytes per request are normal (10× the volume). */
const BLATANT_Z = 16;
/** Least counts before a deviation of errors / denials / paths scores at all. */
const MIN_COUNT = { errors: 10, denials: 5, paths: 10 };
/** An identity's sidecar counts as reporting for this long after its last report. */
/**
 * Sustained deviations: the trend is an EWMA of z clipped to ±TREND_CLIP with α = TREND_ALPHA (≈ the
 * last 10 windows). For independent windows its spread is sqrt(α/(2−α)) ≈ 0.23 z; windows are not
 * independent in practice, so it is scaled by TREND_SCALE (< 1/0.23) into a z-like figure: ×3 bytes
 * per request at a per-window spread of 0.3 (z ≈ 3.7, hardly above zStart alone) becomes ≈ 11.
 */
const TREND_ALPHA = 0.1;
const TREND_CLIP = 6;
const TREND_SCALE = 3;
interface Assessment { z: Float64Array; mu: Float64Array; trend: Float64Array }
const REPORTING_MEMORY_MS = 86_400_000;
/** An identity's unseal peaks grow by at most this factor per UNSEAL_RAISE_MS once learnt. */
const UNSEAL_RAISE = 1.25;
const UNSEAL_RAISE_MS = 3_600_000;
const RECENT = 24;

interface Counts {
  req: number; err: number; den: number; bin: number; bout: number; paths: number;
  /** The caller's end counted connections (action class tcp: its outbound does not parse HTTP), not requests. */
  conn?: boolean;
}
/** `u`: the part of the callee's report that is unseals (the key server's `action: unseal` windows). */
interface EdgeSlot { caller: string; callee: string; c?: Counts; e?: Counts; u?: { req: number; paths: number } }
interface Slot { start: number; edges: Map<string, EdgeSlot> }

function emptyCounts(): Counts {
  return { req: 0, err: 0, den: 0, bin: 0, bout: 0, paths: 0 };
}

function addWindow(c: Counts, w: TelemetryWindow): void {
  c.req += w.requests; c.err += w.errors; c.den += w.denials; c.bin += w.bytes_in; c.bout += w.bytes_out; c.paths += w.paths_distinct;
}

function merged(e: EdgeSlot): Counts {
  const a = e.c ?? emptyCounts();
  const b = e.e ?? emptyCounts();
  return { req: Math.max(a.req, b.req), err: Math.max(a.err, b.err), den: Math.max(a.den, b.den), bin: Math.max(a.bin, b.bin), bout: Math.max(a.bout, b.bout), paths: Math.max(a.paths, b.paths) };
}

function features(c: Counts, out: Float64Array): Float64Array {
  out[REQ] = Math.log1p(c.req); out[BOUT] = Math.log1p(c.bout); out[BIN] = Math.log1p(c.bin);
  out[ERR] = Math.log1p(c.err); out[DEN] = Math.log1p(c.den); out[PATHS] = Math.log1p(c.paths);
  out[BOUT_PR] = Math.log((c.bout + 1) / (c.req + 1)); out[BIN_PR] = Math.log((c.bin + 1) / (c.req + 1));
  return out;
}

/** Hour of day (UTC) for weekdays 0–23, weekends 24–47. */
function bucketOf(t: number): number {
  const d = new Date(t);
  const day = d.getUTCDay();
  return d.getUTCHours() + (day === 0 || day === 6 ? 24 : 0);
}

type UpdateMode = 'normal' | 'slow';

/** One estimate: [mean, mean absolute deviation, samples] at `off` in `a`. */
function updateEst(a: Float64Array, off: number, x: number, floor: number, mode: UpdateMode): void {
  const n = a[off + 2]!;
  if (n < WARMUP && mode === 'normal') {
    const k = 1 / (n + 1);
    const d = x - a[off]!;
    a[off] = a[off]! + k * d;
    a[off + 1] = n === 0 ? 0 : a[off + 1]! + k * (Math.abs(d) - a[off + 1]!);
    a[off + 2] = n + 1;
    return;
  }
  const spread = Math.max(1.25 * a[off + 1]!, floor);
  const d = x - a[off]!;
  const alpha = mode === 'slow' ? ALPHA_SLOW : ALPHA;
  if (Math.abs(d) <= CLIP * spread) {
    a[off] = a[off]! + alpha * d;
    a[off + 1] = a[off + 1]! + alpha * (Math.abs(d) - a[off + 1]!);
  } else {
    a[off] = a[off]! + ALPHA_SLOW * Math.sign(d) * CLIP * spread;
  }
  a[off + 2] = n + 1;
}

/** An online seasonal baseline of the {@link METRICS} of one key (an identity's role, or an edge). */
class Baseline {
  readonly global = new Float64Array(M * 3);
  readonly seasonal = new Float64Array(BUCKETS * M * 3);
  /** Exponentially weighted mean of recent (clipped) z-scores per metric: sustained small deviations. */
  readonly trend = new Float64Array(M);

  update(x: Float64Array, bucket: number, mode: UpdateMode): void {
    for (let m = 0; m < M; m++) {
      // A metric that has been off for a while (its trend) learns slowly too: a sustained attack
      // that stays inside the clipping range must not become the new normal within minutes.
      const mm: UpdateMode = Math.abs(this.trend[m]!) * TREND_SCALE >= CLIP ? 'slow' : mode;
      updateEst(this.global, m * 3, x[m]!, FLOOR[m]!, mm);
      updateEst(this.seasonal, (bucket * M + m) * 3, x[m]!, FLOOR[m]!, mm);
    }
  }

  get samples(): number {
    return this.global[2]!;
  }

  /**
   * Judges a whole feature vector: per metric the robust z (the smaller of the global and, when mature,
   * seasonal one) and the expected value (log space); also moves the sustained-deviation trend.
   * Undefined while the global baseline holds fewer than `minSamples` windows.
   */
  assess(x: Float64Array, bucket: number, minSamples: number): Assessment | undefined {
    const g = this.global;
    if (g[2]! < minSamples) return undefined;
    const z = new Float64Array(M);
    const mu = new Float64Array(M);
    const s = this.seasonal;
    for (let m = 0; m < M; m++) {
      let zm = (x[m]! - g[m * 3]!) / Math.max(1.25 * g[m * 3 + 1]!, FLOOR[m]!);
      let mum = g[m * 3]!;
      const off = (bucket * M + m) * 3;
      if (s[off + 2]! >= minSamples) {
        const zs = (x[m]! - s[off]!) / Math.max(1.25 * s[off + 1]!, FLOOR[m]!);
        if (zs < zm) {
          zm = zs;
          mum = s[off]!;
        }
      }
      z[m] = zm;
      mu[m] = mum;
      // Clipped so one extreme window cannot make a trend; see TREND_ALPHA.
      this.trend[m] = this.trend[m]! + TREND_ALPHA * (Math.min(TREND_CLIP, Math.max(-TREND_CLIP, zm)) - this.trend[m]!);
    }
    return { z, mu, trend: this.trend };
  }

  summary(bucket: number): Record<Metric, { expected: number; spread: number; samples: number; this_hour?: number }> {
    const out = {} as Record<Metric, { expected: number; spread: number; samples: number; this_hour?: number }>;
    METRICS.forEach((name, m) => {
      const g = this.global;
      const ratio = m >= BOUT_PR;
      const expected = ratio ? Math.exp(g[m * 3]!) : Math.expm1(g[m * 3]!);
      const entry: { expected: number; spread: number; samples: number; this_hour?: number } = {
        expected: round(expected), spread: round(Math.max(1.25 * g[m * 3 + 1]!, FLOOR[m]!)), samples: g[m * 3 + 2]!,
      };
      const off = (bucket * M + m) * 3;
      if (this.seasonal[off + 2]! > 0) entry.this_hour = round(ratio ? Math.exp(this.seasonal[off]!) : Math.expm1(this.seasonal[off]!));
      out[name] = entry;
    });
    return out;
  }
}

function round(x: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

interface IdentityState {
  id: string;
  firstSeen: number;
  /** Last time its own sidecar reported (as the caller of an edge, or as its callee). */
  lastReport: number;
  state: RiskState;
  since: number;
  score: number;
  quarantinedUntil: number;
  /** Slots starting before this are not judged for this identity (released). */
  mutedBefore: number;
  lastEval: number;
  /** Consecutive judged slots with a score at or above the step-up threshold. */
  above: number;
  evidence: Float64Array;
  reasons: Map<Signal, RiskReason>;
  asCaller: Baseline;
  asCallee: Baseline;
  /** Callees it has called, with the time first seen. */
  callees: Map<string, number>;
  /** New callees (time, callee) within the horizon, for `new_edge`. */
  newEdges: { time: number; callee: string }[];
  /** Its own unseal peaks per slot (requests to one key server, distinct policies) and when they last rose. */
  unsealPeak: { req: number; paths: number; raisedAt: number };
  /** This slot's unseals, learnt into the peaks after judging if the slot was calm. */
  unsealSeen: { req: number; paths: number } | undefined;
  recent: TelemetryWindow[];
}

/** One identity as `tessera risk list` shows it. */
export interface RiskSummary {
  identity: string;
  score: number;
  state: RiskState;
  /** ms since the epoch of the last state change (or first sight). */
  since: number;
  reasons: RiskReason[];
}

/** One identity as `tessera risk show` shows it. */
export interface RiskDetail extends RiskSummary {
  first_seen: number;
  learning: boolean;
  quarantined_until?: number;
  baseline: { as_caller: ReturnType<Baseline['summary']>; as_callee: ReturnType<Baseline['summary']> };
  edges: { callee: string; first_seen: number; baseline: ReturnType<Baseline['summary']> }[];
  recent: TelemetryWindow[];
}

const SIGNAL_INDEX = new Map<Signal, number>(SIGNALS.map((s, i) => [s, i]));

/** A signal's points in one slot, with its reason. */
interface Hit { signal: Signal; points: number; reason: RiskReason }

/**
 * The engine. Feed it windows in roughly ascending time order; read the changes it proposes.
 *
 * @example
 * const engine = new RiskEngine();
 * for (const w of windows) for (const change of engine.ingest(w)) apply(change);
 * for (const change of engine.flush()) apply(change);
 */
export class RiskEngine {
  readonly config: RiskConfig;
  private readonly windowMs: number;
  private readonly decayPerSlot: number;
  private readonly slots = new Map<number, Slot>();
  private readonly identities = new Map<string, IdentityState>();
  private readonly edges = new Map<string, Baseline>();
  /** Identities with evidence or a non-normal state: judged every slot even without traffic. */
  private readonly active = new Set<string>();
  /** The latest closed slot, kept for the caller/callee match of the next one. */
  private previous: Slot | undefined;
  /** Start of the first slot not yet judged. */
  private openFrom = -Infinity;
  private clock = -Infinity;
  private late = 0;
  private windows = 0;
  private readonly scratch = new Float64Array(M);
  private readonly exempt: ReadonlySet<string>;
  /** Identities that reported unseals (as the callee): key servers. */
  private readonly keyServers = new Set<string>();

  constructor(config: RiskConfig = DEFAULT_RISK_CONFIG) {
    this.config = config;
    this.windowMs = config.windowS * 1000;
    this.decayPerSlot = 0.5 ** (this.windowMs / config.halfLifeMs);
    this.exempt = new Set(config.unreportedExempt);
  }

  /** Takes one validated window; returns the changes of every slot this window's time closes. */
  ingest(w: TelemetryWindow): RiskChange[] {
    if (w.window_s !== this.config.windowS) {
      throw new TesseraError('TESSERA_TELEMETRY_INVALID', `telemetry window: field "window_s": ${w.window_s} does not match the risk engine's window of ${this.config.windowS} s`);
    }
    const t = windowStart(w);
    const start = Math.floor(t / this.windowMs) * this.windowMs;
    this.windows++;
    if (start < this.openFrom) {
      this.late++;
      return [];
    }
    let slot = this.slots.get(start);
    if (!slot) {
      slot = { start, edges: new Map() };
      this.slots.set(start, slot);
    }
    const key = `${w.caller} -> ${w.callee}`;
    let e = slot.edges.get(key);
    if (!e) {
      e = { caller: w.caller, callee: w.callee };
      slot.edges.set(key, e);
    }
    const side = w.reporter === 'caller' ? (e.c ??= emptyCounts()) : (e.e ??= emptyCounts());
    addWindow(side, w);
    if (w.reporter === 'caller' && w.action === 'tcp') side.conn = true;
    if (w.action === 'unseal' && w.reporter === 'callee') {
      this.keyServers.add(w.callee);
      const u = (e.u ??= { req: 0, paths: 0 });
      u.req += w.requests;
      u.paths += w.paths_distinct;
    }
    const reporterId = w.reporter === 'caller' ? w.caller : w.callee;
    for (const id of [w.caller, w.callee]) {
      const s = this.ensure(id, start);
      if (id === reporterId) s.lastReport = Math.max(s.lastReport, start);
      s.recent.push(w);
      if (s.recent.length > RECENT) s.recent.shift();
    }
    return this.tick(start + this.windowMs);
  }

  /** Advances the clock (ms since the epoch): judges every slot that ends `graceWindows` before it, decays, expires quarantines. */
  tick(now: number): RiskChange[] {
    if (now <= this.clock) return [];
    this.clock = now;
    const changes: RiskChange[] = [];
    const limit = now - this.windowMs * (1 + this.config.graceWindows);
    if (this.slots.size > 0) {
      const due = [...this.slots.keys()].filter((s) => s <= limit).sort((a, b) => a - b);
      for (const start of due) {
        const slot = this.slots.get(start)!;
        this.slots.delete(start);
        this.judge(slot, changes);
        this.previous = slot;
      }
    }
    this.openFrom = Math.max(this.openFrom, Math.floor(limit / this.windowMs) * this.windowMs + this.windowMs);
    // Identities with evidence but no traffic: decay, fall back, expire.
    const evalTime = limit + this.windowMs * (1 + this.config.graceWindows);
    for (const id of [...this.active]) {
      const s = this.identities.get(id)!;
      if (s.lastEval + this.windowMs <= limit) this.score(s, limit, [], evalTime, changes);
    }
    return changes;
  }

  /** Judges every open slot (end of a replay file). */
  flush(): RiskChange[] {
    const last = Math.max(...this.slots.keys(), this.clock - this.windowMs);
    return this.tick(last + this.windowMs * (2 + this.config.graceWindows));
  }

  /**
   * A person released the identity (or the control plane's TTL expired it) at `time`: back to normal,
   * evidence reset, and slots that started before `time` are not judged again for it.
   */
  release(id: string, time: number): RiskChange | undefined {
    const s = this.identities.get(id);
    if (!s) return undefined;
    return this.resetTo(s, time, { signal: 'released', observed: 0, expected: 0, unusual: 0, text: 'released by an administrator' });
  }

  /** A person quarantined the identity by hand at `time`, until `until`: the engine keeps it so. */
  quarantine(id: string, time: number, until: number): RiskChange {
    const s = this.ensure(id, time);
    const previous = s.state;
    s.state = 'quarantined';
    s.since = time;
    s.quarantinedUntil = until;
    this.active.add(id);
    return { identity: id, time, score: round(s.score, 1), state: 'quarantined', previous, reasons: [{ signal: 'manual', observed: 0, expected: 0, unusual: 0, text: 'quarantined by an administrator' }] };
  }

  /** The identity's score, state, reasons, baselines and recent windows; undefined when never seen. */
  identity(id: string): RiskDetail | undefined {
    const s = this.identities.get(id);
    if (!s) return undefined;
    const bucket = bucketOf(Number.isFinite(this.clock) ? this.clock : s.firstSeen);
    const edges: RiskDetail['edges'] = [];
    for (const [callee, firstSeen] of s.callees) {
      const b = this.edges.get(`${id} -> ${callee}`);
      if (b) edges.push({ callee, first_seen: firstSeen, baseline: b.summary(bucket) });
    }
    const detail: RiskDetail = {
      ...this.summarize(s),
      first_seen: s.firstSeen,
      learning: !this.learned(s, Number.isFinite(this.clock) ? this.clock : s.firstSeen),
      baseline: { as_caller: s.asCaller.summary(bucket), as_callee: s.asCallee.summary(bucket) },
      edges,
      recent: s.recent.map((w) => ({ ...w })),
    };
    if (s.state === 'quarantined') detail.quarantined_until = s.quarantinedUntil;
    return detail;
  }

  /** Every identity seen, highest score first. */
  list(): RiskSummary[] {
    return [...this.identities.values()].map((s) => this.summarize(s)).sort((a, b) => b.score - a.score || a.identity.localeCompare(b.identity));
  }

  /** Counters: windows taken, windows dropped as late, identities and edges known. */
  stats(): { windows: number; late: number; identities: number; edges: number } {
    return { windows: this.windows, late: this.late, identities: this.identities.size, edges: this.edges.size };
  }

  private summarize(s: IdentityState): RiskSummary {
    return { identity: s.id, score: round(s.score, 1), state: s.state, since: s.since, reasons: this.currentReasons(s) };
  }

  private currentReasons(s: IdentityState): RiskReason[] {
    return [...s.reasons.values()].sort((a, b) => (b.points ?? 0) - (a.points ?? 0)).map((r) => ({ ...r }));
  }

  private ensure(id: string, time: number): IdentityState {
    let s = this.identities.get(id);
    if (!s) {
      s = {
        id, firstSeen: time, lastReport: -Infinity, state: 'normal', since: time, score: 0, quarantinedUntil: 0, mutedBefore: -Infinity,
        lastEval: time, above: 0, evidence: new Float64Array(SIGNALS.length), reasons: new Map(), asCaller: new Baseline(), asCallee: new Baseline(),
        callees: new Map(), newEdges: [], unsealPeak: { req: 0, paths: 0, raisedAt: -Infinity }, unsealSeen: undefined, recent: [],
      };
      this.identities.set(id, s);
    }
    return s;
  }

  private learned(s: IdentityState, t: number): boolean {
    return t - s.firstSeen >= this.config.learningPeriodMs;
  }

  private resetTo(s: IdentityState, time: number, reason: RiskReason): RiskChange | undefined {
    const previous = s.state;
    s.state = 'normal';
    s.since = time;
    s.score = 0;
    s.evidence.fill(0);
    s.reasons.clear();
    s.newEdges = [];
    s.mutedBefore = Math.max(s.mutedBefore, time);
    s.quarantinedUntil = 0;
    this.active.delete(s.id);
    if (previous === 'normal') return undefined;
    return { identity: s.id, time, score: 0, state: 'normal', previous, reasons: [reason] };
  }

  /** Judges one slot: aggregates per caller, scores every caller (and every active identity), updates baselines. */
  private judge(slot: Slot, changes: RiskChange[]): void {
    const cfg = this.config;
    const bucket = bucketOf(slot.start);
    const evalTime = slot.start + this.windowMs * (1 + cfg.graceWindows);
    const byCaller = new Map<string, { total: Counts; edges: { e: EdgeSlot; m: Counts }[] }>();
    const byCallee = new Map<string, Counts>();
    for (const e of slot.edges.values()) {
      const m = merged(e);
      let agg = byCaller.get(e.caller);
      if (!agg) byCaller.set(e.caller, (agg = { total: emptyCounts(), edges: [] }));
      agg.edges.push({ e, m });
      const t = agg.total;
      t.req += m.req; t.err += m.err; t.den += m.den; t.bin += m.bin; t.bout += m.bout; t.paths += m.paths;
      let ce = byCallee.get(e.callee);
      if (!ce) byCallee.set(e.callee, (ce = emptyCounts()));
      ce.req += m.req; ce.err += m.err; ce.den += m.den; ce.bin += m.bin; ce.bout += m.bout; ce.paths += m.paths;
    }
    for (const [callee, c] of byCallee) this.identities.get(callee)!.asCallee.update(features(c, this.scratch), bucket, 'normal');
    for (const [caller, agg] of byCaller) {
      const s = this.identities.get(caller)!;
      if (slot.start < s.mutedBefore) continue;
      const hits = this.signals(s, slot, agg, bucket);
      this.score(s, slot.start, hits, evalTime, changes);
      this.learnUnseals(s, slot.start);
      // Learn after judging, so a window is never compared with itself.
      if (s.state !== 'quarantined') {
        const mode: UpdateMode = s.state === 'step-up' || s.score >= cfg.stepDownBelow ? 'slow' : 'normal';
        s.asCaller.update(features(agg.total, this.scratch), bucket, mode);
        for (const { e, m } of agg.edges) {
          const key = `${e.caller} -> ${e.callee}`;
          let b = this.edges.get(key);
          if (!b) this.edges.set(key, (b = new Baseline()));
          b.update(features(m, this.scratch), bucket, mode);
        }
      }
    }
  }

  /** Every signal of one caller in one slot. */
  private signals(s: IdentityState, slot: Slot, agg: { total: Counts; edges: { e: EdgeSlot; m: Counts }[] }, bucket: number): Hit[] {
    const cfg = this.config;
    const hits: Hit[] = [];
    const learned = this.learned(s, slot.start);
    const x = features(agg.total, new Float64Array(M));
    const deviation = (signal: Signal, u: number, mu: number, edge: string | undefined, observed: number, what: string, ratio: boolean): void => {
      if (u <= cfg.zStart) return;
      const points = Math.min(cfg.caps[signal], (cfg.weights[signal] * (u - cfg.zStart)) / (cfg.zFull - cfg.zStart));
      if (points <= 0) return;
      const expected = ratio ? Math.exp(mu) : Math.expm1(mu);
      hits.push({ signal, points, reason: {
        signal, observed: round(observed), expected: round(expected), unusual: round(u, 1), ...(edge ? { edge } : {}), points: round(points, 1),
        text: `${what} ${fmt(observed)} against ${fmt(expected)} expected (${round(u, 1)} spreads above)${edge ? ` on ${edge}` : ''}`,
      } });
    };
    // Deviation signals, against the identity's totals and each edge; the most unusual one counts.
    const best = new Map<Signal, { u: number; mu: number; edge: string | undefined; observed: number; what: string; ratio: boolean }>();
    const consider = (b: Baseline | undefined, c: Counts, fx: Float64Array, edge: string | undefined): void => {
      const a = b?.assess(fx, bucket, cfg.minSamples);
      if (!a || !learned) return;
      const keep = (signal: Signal, metric: number, observed: number, what: string, ratio: boolean, instantOnly = false): void => {
        const sustained = instantOnly ? -Infinity : TREND_SCALE * a.trend[metric]!;
        const u = Math.max(a.z[metric]!, sustained);
        const cur = best.get(signal);
        if (!cur || u > cur.u) best.set(signal, { u, mu: a.mu[metric]!, edge, observed, what: sustained > a.z[metric]! ? `${what} (sustained)` : what, ratio });
      };
      keep('volume', REQ, c.req, 'requests', false);
      for (const [signal, total, perReq, bytes, label] of [['bytes_out', BOUT, BOUT_PR, c.bout, 'sent'], ['bytes_in', BIN, BIN_PR, c.bin, 'received']] as const) {
        if (a.z[total]! >= BLATANT_Z && a.z[total]! > a.z[perReq]!) keep(signal, total, bytes, `bytes ${label}`, false, true);
        else keep(signal, perReq, (bytes + 1) / (c.req + 1), `bytes ${label} per request`, true);
      }
      if (c.err >= MIN_COUNT.errors) keep('errors', ERR, c.err, 'errors', false, true);
      if (c.den >= MIN_COUNT.denials) keep('denials', DEN, c.den, 'denials', false, true);
      if (c.paths >= MIN_COUNT.paths) keep('paths', PATHS, c.paths, 'distinct paths', false, true);
    };
    consider(s.asCaller, agg.total, x, undefined);
    const fx = new Float64Array(M);
    for (const { e, m } of agg.edges) consider(this.edges.get(`${e.caller} -> ${e.callee}`), m, features(m, fx), `${e.caller} -> ${e.callee}`);
    for (const [signal, b] of best) deviation(signal, b.u, b.mu, b.edge, b.observed, b.what, b.ratio);

    // Cold start: absolute thresholds for the signals the baselines cannot judge yet.
    const young = !learned || s.asCaller.samples < cfg.minSamples;
    if (young) {
      const cs = cfg.coldStart;
      const blatant = (signal: Signal, observed: number, threshold: number, what: string): void => {
        if (best.has(signal) || observed < threshold) return;
        const points = Math.min(cfg.caps[signal], (cfg.weights[signal] * observed) / threshold);
        hits.push({ signal, points, reason: {
          signal, observed, expected: threshold, unusual: round(observed / threshold, 1), points: round(points, 1),
          text: `${what} ${fmt(observed)} in one window, at or above the ${fmt(threshold)} a new identity may show (cold start)`,
        } });
      };
      blatant('denials', agg.total.den, cs.denials, 'denials');
      blatant('paths', agg.total.paths, cs.paths, 'distinct paths');
      blatant('bytes_out', agg.total.bout, cs.bytesOut, 'bytes sent');
      blatant('bytes_in', agg.total.bin, cs.bytesIn, 'bytes received');
    }

    const pull = this.unsealPull(s, agg.edges, learned);
    if (pull) hits.push(pull);

    // New edges: callees this caller never called before (learnt silently while learning).
    for (const { e } of agg.edges) {
      if (s.callees.has(e.callee)) continue;
      s.callees.set(e.callee, slot.start);
      if (learned) s.newEdges.push({ time: slot.start, callee: e.callee });
    }
    s.newEdges = s.newEdges.filter((n) => n.time > slot.start - cfg.newEdgeHorizonMs);
    if (s.newEdges.length > 0 && learned) {
      const k = s.newEdges.length;
      const points = Math.min(cfg.caps.new_edge, cfg.weights.new_edge * k);
      const names = s.newEdges.slice(-3).map((n) => n.callee).join(', ');
      hits.push({ signal: 'new_edge', points, reason: {
        signal: 'new_edge', observed: k, expected: 0, unusual: k, edge: `${s.id} -> ${s.newEdges[s.newEdges.length - 1]!.callee}`, points: round(points, 1),
        text: `${k} callee${k === 1 ? '' : 's'} never called before within ${Math.round(cfg.newEdgeHorizonMs / 60_000)} min (${names}${k > 3 ? ', ...' : ''})`,
      } });
    }

    // Traffic the callee saw that the caller's own (reporting) sidecar did not: a credential used elsewhere.
    if (s.lastReport > slot.start - REPORTING_MEMORY_MS && !this.exempt.has(s.id)) {
      let excess = 0;
      let worst: { edge: string; seen: number; reported: number; excess: number } | undefined;
      for (const { e } of agg.edges) {
        // Unseals are reported by the key server only (the caller's end is not its sidecar).
        if (!e.e || e.e.req - (e.u?.req ?? 0) <= 0) continue;
        const key = `${e.caller} -> ${e.callee}`;
        const surplus = (n: EdgeSlot | undefined): number => (n ? Math.max(0, (n.c?.req ?? 0) - (n.e?.req ?? 0)) : 0);
        const next = this.slots.get(slot.start + this.windowMs)?.edges.get(key);
        const prev = this.previous?.start === slot.start - this.windowMs ? this.previous.edges.get(key) : undefined;
        // A caller end that counts connections (tcp) cannot be compared with the callee's HTTP request
        // count (one kept-alive connection carries many requests): there, any traffic it reported in this
        // slot or a neighbour counts as reported, and only an edge it never reported is unreported.
        const connReported = (n: EdgeSlot | undefined): boolean => n?.c?.conn === true && (n.c.req > 0 || n.c.bout > 0 || n.c.bin > 0);
        if (connReported(e) || connReported(prev) || connReported(next)) continue;
        const x1 = e.e.req - (e.u?.req ?? 0) - (e.c?.req ?? 0) - surplus(prev) - surplus(next);
        if (x1 < cfg.coldStart.unreported || x1 < 0.1 * e.e.req) continue;
        excess += x1;
        if (!worst || x1 > worst.excess) worst = { edge: key, seen: e.e.req, reported: e.c?.req ?? 0, excess: x1 };
      }
      if (worst) {
        const points = Math.min(cfg.caps.unreported_by_caller, (cfg.weights.unreported_by_caller * excess) / (2 * cfg.coldStart.unreported));
        hits.push({ signal: 'unreported_by_caller', points, reason: {
          signal: 'unreported_by_caller', observed: worst.seen, expected: worst.reported, unusual: excess, edge: worst.edge, points: round(points, 1),
          text: `${excess} requests seen by callees but not reported by the caller's own sidecar (worst ${worst.edge}: ${worst.seen} seen, ${worst.reported} reported): its credential is used outside its sidecar`,
        } });
      }
    }
    return hits;
  }

  /** `unseal_pull` for one caller in one slot (see the file's header), or undefined. Records the slot's unseals for learnUnseals. */
  private unsealPull(s: IdentityState, edges: readonly { e: EdgeSlot }[], learned: boolean): Hit | undefined {
    let U = 0;
    let P = 0;
    let servers = 0;
    let fresh = 0;
    for (const { e } of edges) {
      const u = e.u;
      if (!u || u.req === 0) continue;
      servers++;
      if (u.req > U) U = u.req;
      if (u.paths > P) P = u.paths;
      if (!s.callees.has(e.callee)) fresh++;
    }
    s.unsealSeen = servers > 0 ? { req: U, paths: P } : undefined;
    if (servers === 0) return undefined;
    const cfg = this.config;
    const where = `${U} unseal request${U === 1 ? '' : 's'} to ${servers} key server${servers === 1 ? '' : 's'}${fresh > 0 ? ` (${fresh} never used before${learned ? '' : ' or learning'})` : ''}, ${P} distinct polic${P === 1 ? 'y' : 'ies'}`;
    if (this.keyServers.has(s.id)) {
      const points = Math.min(cfg.caps.unseal_pull, cfg.weights.unseal_pull);
      return { signal: 'unseal_pull', points, reason: {
        signal: 'unseal_pull', observed: U, expected: 0, unusual: servers, points: round(points, 1),
        text: `a key server is unsealing: ${where} (key servers answer unseals, they never ask for them)`,
      } };
    }
    const cs = cfg.coldStart;
    const allowReq = Math.max(cs.unseals, 3 * s.unsealPeak.req);
    const allowPaths = Math.max(cs.unsealPolicies, 2 * s.unsealPeak.paths);
    const ratio = Math.max(U / allowReq, P / allowPaths);
    if (ratio < 1) return undefined;
    const byPaths = P / allowPaths >= U / allowReq;
    const points = Math.min(cfg.caps.unseal_pull, cfg.weights.unseal_pull * ratio);
    return { signal: 'unseal_pull', points, reason: {
      signal: 'unseal_pull', observed: byPaths ? P : U, expected: byPaths ? allowPaths : allowReq, unusual: round(ratio, 1), points: round(points, 1),
      text: `pulling unseals: ${where}, at or above its allowance of ${allowReq} requests and ${allowPaths} policies a window`,
    } };
  }

  /** Learns the slot's unseals into the identity's peaks: as seen while learning, then slowly and only on calm slots. */
  private learnUnseals(s: IdentityState, slotStart: number): void {
    const seen = s.unsealSeen;
    s.unsealSeen = undefined;
    if (!seen || this.keyServers.has(s.id)) return;
    const p = s.unsealPeak;
    if (seen.req <= p.req && seen.paths <= p.paths) return;
    if (s.state !== 'normal' || s.score >= this.config.stepDownBelow) return;
    if (!this.learned(s, slotStart)) {
      p.req = Math.max(p.req, seen.req);
      p.paths = Math.max(p.paths, seen.paths);
      return;
    }
    if (slotStart - p.raisedAt < UNSEAL_RAISE_MS) return;
    p.req = Math.max(p.req, Math.min(seen.req, Math.ceil(p.req * UNSEAL_RAISE) + 1));
    p.paths = Math.max(p.paths, Math.min(seen.paths, Math.ceil(p.paths * UNSEAL_RAISE) + 1));
    p.raisedAt = slotStart;
  }

  /** Folds one slot's hits into the identity's evidence and score; proposes a state change. */
  private score(s: IdentityState, slotStart: number, hits: Hit[], evalTime: number, changes: RiskChange[]): void {
    const cfg = this.config;
    const slots = Math.max(1, Math.round((slotStart - s.lastEval) / this.windowMs));
    const decay = this.decayPerSlot ** slots;
    s.lastEval = slotStart;
    const points = new Float64Array(SIGNALS.length);
    for (const h of hits) {
      const i = SIGNAL_INDEX.get(h.signal)!;
      if (h.points > points[i]!) {
        points[i] = h.points;
        s.reasons.set(h.signal, h.reason);
      }
    }
    let score = 0;
    let any = false;
    SIGNALS.forEach((signal, i) => {
      const e = Math.min(cfg.caps[signal], s.evidence[i]! * decay + cfg.sustainGain * points[i]!);
      s.evidence[i] = e < 0.01 ? 0 : e;
      const contribution = Math.min(cfg.caps[signal], Math.max(points[i]!, s.evidence[i]!));
      if (contribution > 0) {
        any = true;
        const r = s.reasons.get(signal);
        if (r) r.points = round(contribution, 1);
      } else {
        s.reasons.delete(signal);
      }
      score += contribution;
    });
    s.score = Math.min(100, score);
    s.above = s.score >= cfg.stepUpAt ? s.above + 1 : 0;
    if (any || s.state !== 'normal') this.active.add(s.id);
    else this.active.delete(s.id);

    if (s.state === 'quarantined') {
      if (s.quarantinedUntil <= evalTime) {
        const change = this.resetTo(s, s.quarantinedUntil, { signal: 'ttl_expired', observed: 0, expected: 0, unusual: 0, text: 'the quarantine\'s TTL expired' });
        if (change) changes.push(change);
      }
      return;
    }
    let next: RiskState = s.state;
    if (s.score >= cfg.quarantineAt) next = 'quarantined';
    else if (s.state === 'normal' && s.above >= cfg.stepUpConfirm) next = 'step-up';
    else if (s.state === 'step-up' && s.score < cfg.stepDownBelow) next = 'normal';
    if (next === s.state) return;
    const previous = s.state;
    s.state = next;
    s.since = evalTime;
    if (next === 'quarantined') s.quarantinedUntil = evalTime + cfg.quarantineTtlMs;
    changes.push({ identity: s.id, time: evalTime, score: round(s.score, 1), state: next, previous, reasons: this.currentReasons(s) });
  }
}

/** 1234567 → "1.23M": readable observed/expected figures in reason texts. */
function fmt(n: number): string {
  const a = Math.abs(n);
  if (a >= 1e9) return `${round(n / 1e9)}G`;
  if (a >= 1e6) return `${round(n / 1e6)}M`;
  if (a >= 1e4) return `${round(n / 1e3, 1)}k`;
  return String(round(n, a < 10 ? 2 : 0));
}

