/**
 * The risk engine's thresholds and weights (`RiskConfig`), its defaults and a validating parser.
 * The control plane versions and audits this object like policy; `tessera risk replay --config FILE`
 * reads it from a JSON file. The JSON form uses snake_case keys and duration strings (`"1h"`); every
 * key is optional (defaults fill the rest) and unknown keys are refused (TESSERA_CONFIG_INVALID).
 */
import { parseDuration } from '../duration.js';
import { TesseraError } from '../errors.js';
import { parseSpiffeId } from '../spiffe-id.js';

/** The signals the engine scores, in README order. */
export const SIGNALS = ['volume', 'bytes_out', 'bytes_in', 'errors', 'denials', 'new_edge', 'paths', 'unreported_by_caller', 'unseal_pull'] as const;
export type Signal = (typeof SIGNALS)[number];

export interface RiskConfig {
  /** Telemetry window length the engine slots by, seconds; windows of another length are refused. */
  windowS: number;
  /** Windows a slot stays open after its end for late or skewed reports (and the caller/callee match). */
  graceWindows: number;
  /** Score at or above which a normal identity goes to step-up. */
  stepUpAt: number;
  /** Consecutive windows the score must stay at or above `stepUpAt` before a step-up (quarantine acts at once). */
  stepUpConfirm: number;
  /** Score below which a step-up identity goes back to normal (hysteresis). */
  stepDownBelow: number;
  /** Score at or above which an identity is quarantined. */
  quarantineAt: number;
  /** How long a quarantine the engine proposes lasts, ms. */
  quarantineTtlMs: number;
  /** An identity is judged against its own baseline only after it has been seen this long, ms. */
  learningPeriodMs: number;
  /** ...and a baseline (or seasonal bucket) is trusted only with this many windows in it. */
  minSamples: number;
  /** Half-life of accumulated evidence, ms: how fast a score decays once the signals stop. */
  halfLifeMs: number;
  /** Share of each window's points added to the accumulated evidence (sustained signals build up). */
  sustainGain: number;
  /** Robust z-score at which a deviation starts to score, and at which it scores its full weight. */
  zStart: number;
  zFull: number;
  /** How long a new callee counts towards `new_edge`, ms. */
  newEdgeHorizonMs: number;
  /**
   * Points per signal at `zFull` (for `new_edge`: per new callee; for `unreported_by_caller`: at twice
   * `coldStart.unreported`; for `unseal_pull`: a key server unsealing at all, or unseals at the identity's allowance).
   */
  weights: Record<Signal, number>;
  /** Highest score one signal can contribute, accumulated evidence included. */
  caps: Record<Signal, number>;
  /**
   * Identities allowed to call without their sidecar (they use the SVID files the agent writes for
   * legacy apps): `unreported_by_caller` is not judged for them. Everyone else's unreported traffic is
   * a credential used outside its sidecar.
   */
  unreportedExempt: string[];
  /**
   * Cold start: absolute per-window thresholds used while an identity or one of its baselines is still
   * learning. `unseals` and `unsealPolicies` are the least unseal allowance of every identity, learnt or
   * not (per window: unseal requests to one key server, distinct secret policies), see `unseal_pull`.
   */
  coldStart: { denials: number; paths: number; bytesOut: number; bytesIn: number; unreported: number; unseals: number; unsealPolicies: number };
}

export const DEFAULT_RISK_CONFIG: Readonly<RiskConfig> = Object.freeze({
  windowS: 5,
  graceWindows: 1,
  stepUpAt: 40,
  stepUpConfirm: 2,
  stepDownBelow: 20,
  quarantineAt: 70,
  quarantineTtlMs: 3_600_000,
  learningPeriodMs: 86_400_000,
  minSamples: 120,
  halfLifeMs: 180_000,
  sustainGain: 0.1,
  zStart: 3,
  zFull: 8,
  newEdgeHorizonMs: 600_000,
  weights: Object.freeze({ volume: 15, bytes_out: 45, bytes_in: 45, errors: 10, denials: 35, new_edge: 15, paths: 40, unreported_by_caller: 80, unseal_pull: 80 }),
  // Volume and errors alone cannot pass the step-up threshold: a deploy or an outage is not an attack.
  caps: Object.freeze({ volume: 25, bytes_out: 100, bytes_in: 100, errors: 15, denials: 100, new_edge: 100, paths: 100, unreported_by_caller: 100, unseal_pull: 100 }),
  unreportedExempt: Object.freeze([]) as unknown as string[],
  // An unseal asks each key server once: 30 per key server in one window is 6 a second (a workload
  // opens its few sealed files at start); 10 distinct policies in one window is a sweep.
  coldStart: Object.freeze({ denials: 20, paths: 50, bytesOut: 50 * 1024 * 1024, bytesIn: 200 * 1024 * 1024, unreported: 5, unseals: 30, unsealPolicies: 10 }),
}) as RiskConfig;

type Json = Record<string, unknown>;

function bad(message: string): TesseraError {
  return new TesseraError('TESSERA_CONFIG_INVALID', `risk config: ${message}`);
}

function plainObject(v: unknown, what: string): Json {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad(`${what} must be a JSON object`);
  return v as Json;
}

function checkKeys(o: Json, allowed: readonly string[], what: string): void {
  for (const k of Object.keys(o)) if (!allowed.includes(k)) throw bad(`unknown key "${k.slice(0, 64)}" in ${what} (allowed: ${allowed.join(', ')})`);
}

function num(o: Json, key: string, min: number, max: number, integer = false): number | undefined {
  if (!Object.prototype.hasOwnProperty.call(o, key)) return undefined;
  const v = o[key];
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max || (integer && !Number.isInteger(v))) {
    throw bad(`${key} must be ${integer ? 'a whole number' : 'a number'} from ${min} to ${max}`);
  }
  return v;
}

function duration(o: Json, key: string, maxMs: number): number | undefined {
  if (!Object.prototype.hasOwnProperty.call(o, key)) return undefined;
  const v = o[key];
  if (typeof v !== 'string') throw bad(`${key} must be a duration string like "1h"`);
  const ms = parseDuration(v, `risk config ${key}`);
  if (ms > maxMs) throw bad(`${key} must be at most ${maxMs / 3_600_000}h`);
  return ms;
}

const TOP_KEYS = ['window_s', 'grace_windows', 'step_up_at', 'step_up_confirm', 'step_down_below', 'quarantine_at', 'quarantine_ttl', 'learning_period', 'min_samples',
  'half_life', 'sustain_gain', 'z_start', 'z_full', 'new_edge_horizon', 'weights', 'caps', 'cold_start', 'unreported_exempt'] as const;
const COLD_KEYS = ['denials', 'paths', 'bytes_out', 'bytes_in', 'unreported', 'unseals', 'unseal_policies'] as const;

/**
 * Validates a risk configuration (the JSON form) and fills in the defaults.
 *
 * @example
 * parseRiskConfig({ quarantine_at: 80, quarantine_ttl: '30m', weights: { volume: 10 } })
 */
export function parseRiskConfig(obj: unknown): RiskConfig {
  const o = plainObject(obj, 'the configuration');
  checkKeys(o, TOP_KEYS, 'the configuration');
  const d = DEFAULT_RISK_CONFIG;
  const c: RiskConfig = {
    windowS: num(o, 'window_s', 1, 3600, true) ?? d.windowS,
    graceWindows: num(o, 'grace_windows', 0, 60, true) ?? d.graceWindows,
    stepUpAt: num(o, 'step_up_at', 1, 100) ?? d.stepUpAt,
    stepUpConfirm: num(o, 'step_up_confirm', 1, 720, true) ?? d.stepUpConfirm,
    stepDownBelow: num(o, 'step_down_below', 0, 100) ?? d.stepDownBelow,
    quarantineAt: num(o, 'quarantine_at', 1, 100) ?? d.quarantineAt,
    quarantineTtlMs: duration(o, 'quarantine_ttl', 30 * 86_400_000) ?? d.quarantineTtlMs,
    // 0 (a number) turns learning off: every identity is judged against its baseline at once.
    learningPeriodMs: o.learning_period === 0 ? 0 : duration(o, 'learning_period', 30 * 86_400_000) ?? d.learningPeriodMs,
    minSamples: num(o, 'min_samples', 1, 1_000_000, true) ?? d.minSamples,
    halfLifeMs: duration(o, 'half_life', 86_400_000) ?? d.halfLifeMs,
    sustainGain: num(o, 'sustain_gain', 0, 1) ?? d.sustainGain,
    zStart: num(o, 'z_start', 0.5, 100) ?? d.zStart,
    zFull: num(o, 'z_full', 0.5, 1000) ?? d.zFull,
    newEdgeHorizonMs: duration(o, 'new_edge_horizon', 86_400_000) ?? d.newEdgeHorizonMs,
    weights: { ...d.weights },
    caps: { ...d.caps },
    coldStart: { ...d.coldStart },
    unreportedExempt: [...d.unreportedExempt],
  };
  if (Object.prototype.hasOwnProperty.call(o, 'unreported_exempt')) {
    const list = o.unreported_exempt;
    if (!Array.isArray(list) || list.length > 10_000) throw bad('unreported_exempt must be an array of at most 10000 SPIFFE IDs');
    c.unreportedExempt = list.map((v, i) => {
      if (typeof v !== 'string') throw bad(`unreported_exempt[${i}] must be a SPIFFE ID string`);
      try {
        return parseSpiffeId(v).id;
      } catch (err) {
        throw bad(`unreported_exempt[${i}]: ${(err as Error).message}`);
      }
    });
  }
  for (const key of ['weights', 'caps'] as const) {
    if (!Object.prototype.hasOwnProperty.call(o, key)) continue;
    const w = plainObject(o[key], key);
    checkKeys(w, SIGNALS, key);
    for (const s of SIGNALS) c[key][s] = num(w, s, 0, 100) ?? c[key][s];
  }
  if (Object.prototype.hasOwnProperty.call(o, 'cold_start')) {
    const w = plainObject(o.cold_start, 'cold_start');
    checkKeys(w, COLD_KEYS, 'cold_start');
    c.coldStart = {
      denials: num(w, 'denials', 1, Number.MAX_SAFE_INTEGER, true) ?? c.coldStart.denials,
      paths: num(w, 'paths', 1, Number.MAX_SAFE_INTEGER, true) ?? c.coldStart.paths,
      bytesOut: num(w, 'bytes_out', 1, Number.MAX_SAFE_INTEGER, true) ?? c.coldStart.bytesOut,
      bytesIn: num(w, 'bytes_in', 1, Number.MAX_SAFE_INTEGER, true) ?? c.coldStart.bytesIn,
      unreported: num(w, 'unreported', 1, Number.MAX_SAFE_INTEGER, true) ?? c.coldStart.unreported,
      unseals: num(w, 'unseals', 1, Number.MAX_SAFE_INTEGER, true) ?? c.coldStart.unseals,
      unsealPolicies: num(w, 'unseal_policies', 1, Number.MAX_SAFE_INTEGER, true) ?? c.coldStart.unsealPolicies,
    };
  }
  if (c.stepDownBelow > c.stepUpAt) throw bad('step_down_below must not exceed step_up_at (hysteresis)');
  if (c.stepUpAt > c.quarantineAt) throw bad('step_up_at must not exceed quarantine_at');
  if (c.zFull <= c.zStart) throw bad('z_full must exceed z_start');
  return c;
}

/** A duration in the form `parseDuration` reads back exactly (whole seconds where it can: `3600s`, else `1s500ms`). */
function durationText(ms: number): string {
  const s = Math.floor(ms / 1000);
  const rest = ms - s * 1000;
  return `${s > 0 ? `${s}s` : ''}${rest > 0 || s === 0 ? `${rest}ms` : ''}`;
}

/**
 * The JSON form of a whole configuration, every key present: what the control plane stores as a
 * version (so a stored version means the same after the defaults change) and what `parseRiskConfig`
 * reads back into an equal `RiskConfig`.
 */
export function riskConfigJson(c: RiskConfig): Record<string, unknown> {
  return {
    window_s: c.windowS,
    grace_windows: c.graceWindows,
    step_up_at: c.stepUpAt,
    step_up_confirm: c.stepUpConfirm,
    step_down_below: c.stepDownBelow,
    quarantine_at: c.quarantineAt,
    quarantine_ttl: durationText(c.quarantineTtlMs),
    learning_period: c.learningPeriodMs === 0 ? 0 : durationText(c.learningPeriodMs),
    min_samples: c.minSamples,
    half_life: durationText(c.halfLifeMs),
    sustain_gain: c.sustainGain,
    z_start: c.zStart,
    z_full: c.zFull,
    new_edge_horizon: durationText(c.newEdgeHorizonMs),
    weights: { ...c.weights },
    caps: { ...c.caps },
    cold_start: { denials: c.coldStart.denials, paths: c.coldStart.paths, bytes_out: c.coldStart.bytesOut, bytes_in: c.coldStart.bytesIn, unreported: c.coldStart.unreported,
      unseals: c.coldStart.unseals, unseal_policies: c.coldStart.unsealPolicies },
    unreported_exempt: [...c.unreportedExempt],
  };
}
