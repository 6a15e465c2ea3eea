import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { TesseraError } from '../errors.js';
import { DEFAULT_RISK_CONFIG, parseRiskConfig, type RiskConfig } from './config.js';
import { RiskEngine } from './engine.js';
import { DAY_MS, SIM_START, simulate, svc, type Injection } from './simulate.js';
import type { RiskChange, TelemetryWindow } from './types.js';

const MIN = 60_000;
const HOUR = 3_600_000;
/** Attacks start on day 2 (a Tuesday) at 14:00 UTC, after the default one-day learning period. */
const AT = DAY_MS + 14 * HOUR;

function replay(windows: Iterable<TelemetryWindow>, config?: RiskConfig): { engine: RiskEngine; changes: RiskChange[] } {
  const engine = new RiskEngine(config);
  const changes: RiskChange[] = [];
  for (const w of windows) changes.push(...engine.ingest(w));
  changes.push(...engine.flush());
  return { engine, changes };
}

function scenario(injection: Injection, afterMs = 20 * MIN): RiskChange[] {
  return replay(simulate({ seed: 7, durationMs: injection.at + afterMs, injections: [injection] })).changes;
}

const figures: string[] = [];

/** The first change to `state` of `identity`, its delay from the attack start, and that no one else was quarantined. */
function detection(changes: RiskChange[], identity: string, states: string[]): { change: RiskChange; delayS: number } {
  const change = changes.find((c) => c.identity === identity && states.includes(c.state));
  expect(change, `no ${states.join('/')} for ${identity}`).toBeDefined();
  expect(changes.filter((c) => c.state === 'quarantined' && c.identity !== identity)).toEqual([]);
  return { change: change!, delayS: (change!.time - SIM_START - AT) / 1000 };
}

describe('RiskEngine on simulated fleets (deterministic)', () => {
  it('calm traffic over 3 simulated days: no quarantine, no step-up', () => {
    const { changes, engine } = replay(simulate({ seed: 7, durationMs: 3 * DAY_MS }));
    const quarantines = changes.filter((c) => c.state === 'quarantined');
    figures.push(`calm 3 days, 5 identities: ${quarantines.length} false quarantines, ${changes.filter((c) => c.state === 'step-up').length} step-ups, ${engine.stats().windows} windows`);
    expect(quarantines).toEqual([]);
    expect(changes).toEqual([]);
    expect(engine.list().every((s) => s.state === 'normal')).toBe(true);
  }, 120_000);

  it('bulk exfiltration (bytes out ×50) is quarantined within 15 s with bytes_out', () => {
    const { change, delayS } = detection(scenario({ kind: 'bulk_exfil', identity: svc('orders'), callee: svc('db'), at: AT, durationMs: 10 * MIN, factor: 50 }), svc('orders'), ['quarantined']);
    figures.push(`bulk exfiltration: quarantined after ${delayS} s (${change.reasons[0]!.signal})`);
    expect(delayS).toBeLessThanOrEqual(15);
    expect(change.reasons[0]!.signal).toBe('bytes_out');
    expect(change.reasons[0]!.observed).toBeGreaterThan(20 * change.reasons[0]!.expected);
  }, 60_000);

  it('slow exfiltration (bytes out ×3, sustained) is quarantined within 10 minutes', () => {
    const changes = scenario({ kind: 'slow_exfil', identity: svc('catalog'), callee: svc('db'), at: AT, durationMs: 30 * MIN, factor: 3 });
    const { change, delayS } = detection(changes, svc('catalog'), ['quarantined']);
    figures.push(`slow exfiltration: quarantined after ${delayS} s (${change.reasons[0]!.signal})`);
    expect(delayS).toBeLessThanOrEqual(600);
    expect(change.reasons[0]!.signal).toBe('bytes_out');
  }, 60_000);

  it('lateral movement (5 new callees) is stepped up or quarantined with new_edge', () => {
    const newCallees = ['payments', 'orders', 'web', 'vault', 'admin'].map(svc);
    const { change, delayS } = detection(scenario({ kind: 'lateral', identity: svc('catalog'), newCallees, at: AT, durationMs: 10 * MIN }), svc('catalog'), ['step-up', 'quarantined']);
    figures.push(`lateral movement: ${change.state} after ${delayS} s (${change.reasons[0]!.signal})`);
    expect(change.reasons.map((r) => r.signal)).toContain('new_edge');
    expect(delayS).toBeLessThanOrEqual(60);
  }, 60_000);

  it('scanning (distinct paths ×30 and denials) is quarantined with paths', () => {
    const { change, delayS } = detection(scenario({ kind: 'scan', identity: svc('web'), callee: svc('catalog'), at: AT, durationMs: 10 * MIN }), svc('web'), ['quarantined']);
    figures.push(`scanning: quarantined after ${delayS} s (${change.reasons.map((r) => r.signal).join(', ')})`);
    expect(delayS).toBeLessThanOrEqual(15);
    expect(change.reasons[0]!.signal).toBe('paths');
    expect(change.reasons.map((r) => r.signal)).toContain('denials');
  }, 60_000);

  it('a stolen SVID (callee-seen traffic its own sidecar never reported) is quarantined with unreported_by_caller', () => {
    const { change, delayS } = detection(scenario({ kind: 'stolen_svid', identity: svc('payments'), callee: svc('db'), at: AT, durationMs: 10 * MIN, requests: 30 }), svc('payments'), ['quarantined']);
    figures.push(`stolen SVID: quarantined after ${delayS} s (${change.reasons[0]!.signal})`);
    expect(delayS).toBeLessThanOrEqual(15);
    expect(change.reasons[0]!.signal).toBe('unreported_by_caller');
    expect(change.reasons[0]!.expected).toBe(0);
  }, 60_000);

  it('a stolen SVID used on an edge its sidecar also uses is caught by the excess over the caller\'s report', () => {
    const { change } = detection(scenario({ kind: 'stolen_svid', identity: svc('orders'), callee: svc('payments'), at: AT, durationMs: 10 * MIN, requests: 40 }), svc('orders'), ['quarantined']);
    expect(change.reasons[0]!.signal).toBe('unreported_by_caller');
    expect(change.reasons[0]!.expected).toBeGreaterThan(0);
  }, 60_000);

  it('a deploy that doubles volume for an hour is not quarantined (at most step-up)', () => {
    const changes = scenario({ kind: 'deploy', identity: svc('web'), at: AT, durationMs: HOUR, factor: 2 }, HOUR + 20 * MIN);
    figures.push(`deploy ×2 volume for 1 h: ${changes.length === 0 ? 'no change' : changes.map((c) => c.state).join(', ')}`);
    expect(changes.filter((c) => c.state === 'quarantined')).toEqual([]);
    console.log(`risk engine figures (seed 7, 5 s windows):\n  ${figures.join('\n  ')}`);
  }, 60_000);
});

/** A short fleet with a one-hour learning period, for the state-machine tests. */
const SHORT = parseRiskConfig({ learning_period: '1h', quarantine_ttl: '10m' });
const T0 = HOUR + 10 * MIN;

function short(injections: Injection[], durationMs: number): Generator<TelemetryWindow> {
  return simulate({ seed: 3, durationMs, injections });
}

describe('RiskEngine states', () => {
  const stolen = (at: number, durationMs: number): Injection => ({ kind: 'stolen_svid', identity: svc('payments'), callee: svc('db'), at, durationMs, requests: 30 });

  it('is deterministic: the same windows give the same changes', () => {
    const a = replay(short([stolen(T0, MIN)], T0 + 5 * MIN), SHORT).changes;
    const b = replay(short([stolen(T0, MIN)], T0 + 5 * MIN), SHORT).changes;
    expect(a.length).toBeGreaterThan(0);
    expect(a).toEqual(b);
  });

  it('an identity exempt from unreported_by_caller (legacy app using its SVID files) is not quarantined for it', () => {
    const exempt = parseRiskConfig({ learning_period: '1h', unreported_exempt: [svc('payments')] });
    expect(replay(short([stolen(T0, MIN)], T0 + 5 * MIN), exempt).changes.filter((c) => c.state === 'quarantined')).toEqual([]);
  });

  it('a quarantine lasts until its TTL, then the identity is normal again with reason ttl_expired', () => {
    const { changes } = replay(short([stolen(T0, MIN)], T0 + 20 * MIN), SHORT);
    const q = changes.find((c) => c.state === 'quarantined')!;
    expect(q.identity).toBe(svc('payments'));
    const back = changes.find((c) => c.previous === 'quarantined')!;
    expect(back.state).toBe('normal');
    expect(back.reasons[0]!.signal).toBe('ttl_expired');
    expect(back.time - q.time).toBe(10 * MIN);
  });

  it('release: back to normal, and the old windows still open are not judged again', () => {
    const engine = new RiskEngine(SHORT);
    const windows = [...short([stolen(T0, 15_000)], T0 + 15 * MIN)];
    let quarantinedAt: number | undefined;
    let i = 0;
    for (; i < windows.length && quarantinedAt === undefined; i++) {
      quarantinedAt = engine.ingest(windows[i]!).find((c) => c.state === 'quarantined')?.time;
    }
    expect(quarantinedAt).toBe(SIM_START + T0 + 10_000);
    // Released while the attack's last windows are still in open slots.
    const released = engine.release(svc('payments'), quarantinedAt! + 2_000)!;
    expect(released).toMatchObject({ state: 'normal', previous: 'quarantined', score: 0 });
    const later: RiskChange[] = [];
    for (; i < windows.length; i++) later.push(...engine.ingest(windows[i]!));
    later.push(...engine.flush());
    expect(later.filter((c) => c.identity === svc('payments'))).toEqual([]);
    expect(engine.identity(svc('payments'))!.state).toBe('normal');
    expect(engine.release(svc('payments'), quarantinedAt! + 3_000)).toBeUndefined();
    expect(engine.release('spiffe://tessera.test/never-seen', 0)).toBeUndefined();
  });

  it('after a release, an attack that goes on is quarantined again', () => {
    const engine = new RiskEngine(SHORT);
    const changes: RiskChange[] = [];
    for (const w of short([stolen(T0, 5 * MIN)], T0 + 10 * MIN)) {
      for (const c of engine.ingest(w)) {
        changes.push(c);
        if (c.state === 'quarantined' && changes.filter((x) => x.state === 'quarantined').length === 1) changes.push(engine.release(c.identity, c.time)!);
      }
    }
    expect(changes.map((c) => c.state)).toEqual(['quarantined', 'normal', 'quarantined']);
  });

  it('a manual quarantine holds (no proposals) until released', () => {
    const engine = new RiskEngine(SHORT);
    const windows = [...short([], T0)];
    const half = windows.length / 2;
    windows.slice(0, half).forEach((w) => engine.ingest(w));
    const t = SIM_START + 30 * MIN;
    expect(engine.quarantine(svc('web'), t, t + DAY_MS)).toMatchObject({ state: 'quarantined', previous: 'normal' });
    const changes = windows.slice(half).flatMap((w) => engine.ingest(w));
    expect(changes).toEqual([]);
    expect(engine.identity(svc('web'))).toMatchObject({ state: 'quarantined', quarantined_until: t + DAY_MS });
    expect(engine.list()[0]!.identity).toBe(svc('web'));
  });
});

describe('RiskEngine cold start and input', () => {
  const base: TelemetryWindow = {
    ts: '2026-12-01T10:00:00.000Z', window_s: 5, caller: svc('newcomer'), callee: svc('db'), caller_site: 'eu-1', callee_site: 'eu-1', reporter: 'caller',
    requests: 50, errors: 0, denials: 0, bytes_in: 5000, bytes_out: 5000, latency_p50_ms: 1, latency_p99_ms: 2, paths_distinct: 3,
  };
  const at = (w: TelemetryWindow, i: number): TelemetryWindow => ({ ...w, ts: new Date(Date.parse(base.ts) + i * 5000).toISOString() });

  it('a new identity is judged only on blatant signals: ordinary traffic and new edges pass, a denial burst quarantines', () => {
    const engine = new RiskEngine();
    const quiet: RiskChange[] = [];
    for (let i = 0; i < 40; i++) {
      quiet.push(...engine.ingest(at(base, i)));
      quiet.push(...engine.ingest(at({ ...base, callee: svc(`peer${i}`), requests: 500, bytes_out: 5_000_000, paths_distinct: 40 }, i)));
    }
    expect(quiet).toEqual([]);
    expect(engine.identity(svc('newcomer'))!.learning).toBe(true);
    const burst = engine.ingest(at({ ...base, requests: 200, denials: 80 }, 40));
    burst.push(...engine.flush());
    expect(burst).toHaveLength(1);
    expect(burst[0]).toMatchObject({ identity: svc('newcomer'), state: 'quarantined' });
    expect(burst[0]!.reasons[0]).toMatchObject({ signal: 'denials', observed: 80, expected: DEFAULT_RISK_CONFIG.coldStart.denials });
    expect(burst[0]!.reasons[0]!.text).toContain('cold start');
  });

  it('identity() shows baselines, edges and at most 24 recent windows, as copies', () => {
    const engine = new RiskEngine();
    for (let i = 0; i < 30; i++) engine.ingest(at(base, i));
    engine.flush();
    const d = engine.identity(svc('newcomer'))!;
    expect(d.recent).toHaveLength(24);
    expect(d.edges.map((e) => e.callee)).toEqual([svc('db')]);
    expect(d.baseline.as_caller.requests.expected).toBeCloseTo(50, 0);
    expect(d.baseline.as_caller.requests.samples).toBe(30);
    d.recent[0]!.requests = 1e9;
    expect(engine.identity(svc('newcomer'))!.recent[0]!.requests).toBe(50);
    expect(engine.identity(svc('nobody'))).toBeUndefined();
  });

  it('refuses a window of another length and counts windows for slots already judged as late', () => {
    const engine = new RiskEngine();
    expect(() => engine.ingest({ ...base, window_s: 10 })).toThrow(TesseraError);
    engine.ingest(at(base, 10));
    engine.ingest(at(base, 0));
    expect(engine.stats()).toMatchObject({ windows: 2, late: 1 });
  });
});

describe('parseRiskConfig', () => {
  it('fills defaults and takes overrides', () => {
    expect(parseRiskConfig({})).toEqual({ ...DEFAULT_RISK_CONFIG, weights: { ...DEFAULT_RISK_CONFIG.weights }, caps: { ...DEFAULT_RISK_CONFIG.caps }, coldStart: { ...DEFAULT_RISK_CONFIG.coldStart }, unreportedExempt: [] });
    const c = parseRiskConfig({ quarantine_at: 80, quarantine_ttl: '30m', learning_period: 0, weights: { volume: 5 }, cold_start: { denials: 50 } });
    expect(c).toMatchObject({ quarantineAt: 80, quarantineTtlMs: 30 * MIN, learningPeriodMs: 0, weights: { volume: 5, bytes_out: 45 }, coldStart: { denials: 50, paths: 50 } });
  });

  it.each([
    [null], [[]], ['x'], [{ quarantine_at: 101 }], [{ quarantine_at: '70' }], [{ step_up_at: 80, quarantine_at: 70 }], [{ step_down_below: 50 }],
    [{ quarantine_ttl: 3600 }], [{ quarantine_ttl: '0s' }], [{ z_start: 9, z_full: 8 }], [{ weights: { volume: -1 } }], [{ weights: { nope: 1 } }],
    [{ window: 5 }], [{ cold_start: { denials: 0 } }], [{ unreported_exempt: 'spiffe://a/b' }], [{ unreported_exempt: ['spiffe://A/b'] }], [{ window_s: 2.5 }], [{ learning_period: '-1h' }],
  ])('refuses %j with TESSERA_CONFIG_INVALID', (obj) => {
    expect(() => parseRiskConfig(obj)).toThrow(expect.objectContaining({ code: 'TESSERA_CONFIG_INVALID' }));
  });
});

describe('RiskEngine and parseRiskConfig properties (fast-check)', () => {
  it('parseRiskConfig takes any JSON: a valid config or TESSERA_CONFIG_INVALID, nothing else', () => {
    const keys = fc.constantFrom('window_s', 'grace_windows', 'step_up_at', 'step_up_confirm', 'step_down_below', 'quarantine_at', 'quarantine_ttl', 'learning_period',
      'min_samples', 'half_life', 'sustain_gain', 'z_start', 'z_full', 'new_edge_horizon', 'weights', 'caps', 'cold_start', 'other');
    fc.assert(fc.property(fc.oneof(fc.jsonValue(), fc.dictionary(keys, fc.jsonValue())), (obj) => {
      try {
        const c = parseRiskConfig(obj);
        expect(c.stepDownBelow).toBeLessThanOrEqual(c.stepUpAt);
        expect(c.stepUpAt).toBeLessThanOrEqual(c.quarantineAt);
      } catch (err) {
        expect(err).toBeInstanceOf(TesseraError);
        expect((err as TesseraError).code).toBe('TESSERA_CONFIG_INVALID');
      }
    }), { numRuns: 2000 });
  });

  it('any valid windows, in any order: no throw, scores stay within 0..100, every change is a real transition', () => {
    const ids = ['a', 'b', 'c'].map(svc);
    const arbW = fc.record({
      slot: fc.integer({ min: 0, max: 200 }), caller: fc.constantFrom(...ids), callee: fc.constantFrom(...ids), reporter: fc.constantFrom('caller' as const, 'callee' as const),
      requests: fc.oneof(fc.nat(1000), fc.maxSafeNat()), f: fc.double({ min: 0, max: 1, noNaN: true }), bytes: fc.oneof(fc.nat(1e6), fc.maxSafeNat()),
    }).map((r): TelemetryWindow => ({
      ts: new Date(SIM_START + r.slot * 5000).toISOString(), window_s: 5, caller: r.caller, callee: r.callee, caller_site: 's', callee_site: 's', reporter: r.reporter,
      requests: r.requests, errors: Math.floor(r.requests * r.f), denials: Math.floor(r.requests * r.f), bytes_in: r.bytes, bytes_out: r.bytes,
      latency_p50_ms: 1, latency_p99_ms: 1, paths_distinct: Math.floor(r.requests * r.f),
    }));
    const config = parseRiskConfig({ learning_period: 0, min_samples: 3 });
    fc.assert(fc.property(fc.array(arbW, { maxLength: 300 }), (windows) => {
      const { engine, changes } = replay(windows, config);
      for (const c of changes) {
        expect(c.state).not.toBe(c.previous);
        expect(c.score >= 0 && c.score <= 100).toBe(true);
      }
      for (const s of engine.list()) expect(s.score >= 0 && s.score <= 100).toBe(true);
    }), { numRuns: 200 });
  });
});

describe('RiskEngine: a caller end that counts connections (tcp outbound) against a callee that counts HTTP requests', () => {
  const CALLER = 'spiffe://td/shop/frontend';
  const CALLEE = 'spiffe://td/shop/orders';
  const OTHER = 'spiffe://td/shop/inventory';
  const base = Math.floor(Date.UTC(2026, 11, 3, 10) / 5000) * 5000;
  const win = (start: number, reporter: 'caller' | 'callee', callee: string, requests: number, action: 'http' | 'tcp'): TelemetryWindow => ({
    ts: new Date(start).toISOString(), window_s: 5, caller: CALLER, callee, caller_site: 'eu', callee_site: 'eu', reporter, action,
    requests, errors: 0, denials: 0, bytes_in: requests * 900, bytes_out: requests * 120, latency_p50_ms: 2, latency_p99_ms: 5, paths_distinct: 1,
  });
  const run = (withCallerReports: boolean): RiskChange[] => {
    const engine = new RiskEngine();
    const out: RiskChange[] = [];
    for (let k = 0; k < 8; k++) {
      const t = base + k * 5000;
      // The caller's sidecar reports: one kept-alive connection to orders (or nothing on that edge), and traffic elsewhere.
      if (withCallerReports) out.push(...engine.ingest(win(t, 'caller', CALLEE, 1, 'tcp')));
      out.push(...engine.ingest(win(t, 'caller', OTHER, 1, 'tcp')));
      out.push(...engine.ingest(win(t, 'callee', CALLEE, 150, 'http')));
    }
    out.push(...engine.flush());
    return out;
  };
  const unreported = (changes: RiskChange[]): boolean => changes.some((c) => c.reasons.some((r) => r.signal === 'unreported_by_caller'));

  it('150 requests on one kept-alive connection are reported traffic, not a stolen SVID', () => {
    const changes = run(true);
    expect(unreported(changes)).toBe(false);
    expect(changes.filter((c) => c.identity === CALLER && c.state === 'quarantined')).toEqual([]);
  });

  it('the same requests with no report from the caller on that edge are still caught', () => {
    const changes = run(false);
    expect(unreported(changes)).toBe(true);
  });
});

describe('RiskEngine: unseals (key servers report them; a compromised key server or any identity pulling them)', () => {
  const KS = ['keyserver-1', 'keyserver-2', 'keyserver-3'];
  const UNSEAL = [
    { caller: 'orders', keyServers: KS, policies: 1, perHour: 2 },
    { caller: 'payments', keyServers: KS, policies: 2, perHour: 1 },
  ];
  const run = (injections: Injection[], durationMs: number, config?: RiskConfig): { engine: RiskEngine; changes: RiskChange[] } =>
    replay(simulate({ seed: 11, durationMs, injections, unseal: UNSEAL }), config);

  it('calm days with unseals: no quarantine, no step-up, and the key servers are never blamed', () => {
    const { changes, engine } = run([], 2 * DAY_MS + 6 * HOUR);
    expect(changes).toEqual([]);
    const orders = engine.identity(svc('orders'))!;
    expect(orders.edges.map((e) => e.callee)).toEqual(expect.arrayContaining(KS.map(svc)));
    expect(engine.list().every((s) => s.score === 0 || s.reasons.every((r) => r.signal !== 'unseal_pull'))).toBe(true);
  }, 120_000);

  it('a key server pulling unseals from the other key servers is quarantined within 15 s with unseal_pull', () => {
    const { changes } = run([{ kind: 'unseal_pull', identity: svc('keyserver-1'), keyServers: [svc('keyserver-2'), svc('keyserver-3')], at: AT, durationMs: 10 * MIN, requests: 60, policies: 3 }], AT + 20 * MIN);
    const { change, delayS } = detection(changes, svc('keyserver-1'), ['quarantined']);
    figures.push(`key server pulling unseals: quarantined after ${delayS} s (${change.reasons[0]!.signal})`);
    expect(delayS).toBeLessThanOrEqual(15);
    expect(change.reasons[0]).toMatchObject({ signal: 'unseal_pull', unusual: 2 });
    expect(change.reasons[0]!.text).toMatch(/a key server is unsealing/);
  }, 60_000);

  it('a key server that unseals even once is quarantined: key servers never ask for unseals', () => {
    const { changes } = run([{ kind: 'unseal_pull', identity: svc('keyserver-2'), keyServers: [svc('keyserver-3')], at: AT, durationMs: 5000, requests: 1, policies: 1 }], AT + 10 * MIN);
    expect(detection(changes, svc('keyserver-2'), ['quarantined']).change.reasons[0]!.signal).toBe('unseal_pull');
  }, 60_000);

  it('a workload sweeping many policies is quarantined within 15 s with unseal_pull; the same volume of its own policy is not an unseal_pull, nor unreported', () => {
    const sweep = run([{ kind: 'unseal_pull', identity: svc('orders'), keyServers: KS.map(svc), at: AT, durationMs: 10 * MIN, requests: 20, policies: 12 }], AT + 20 * MIN);
    const { change, delayS } = detection(sweep.changes, svc('orders'), ['quarantined']);
    figures.push(`workload sweeping 12 policies: quarantined after ${delayS} s (${change.reasons[0]!.signal})`);
    expect(delayS).toBeLessThanOrEqual(15);
    expect(change.reasons[0]).toMatchObject({ signal: 'unseal_pull', observed: 12, expected: 10 });
    // 12 unseals a window of its one policy, for 10 minutes: under the unseal allowance (the edge
    // baselines may still find the volume unusual), and never read as traffic its own sidecar did not
    // report (the key servers alone report unseals).
    const busy = run([{ kind: 'unseal_pull', identity: svc('orders'), keyServers: KS.map(svc), at: AT, durationMs: 10 * MIN, requests: 12, policies: 1 }], AT + 20 * MIN);
    expect(busy.changes.flatMap((c) => c.reasons.map((r) => r.signal))).not.toContain('unreported_by_caller');
    expect(busy.changes.flatMap((c) => c.reasons.map((r) => r.signal))).not.toContain('unseal_pull');
  }, 60_000);

  it('far above its own peak (and past the floor): 100 unseals a window from key servers it used is quarantined', () => {
    const { changes } = run([{ kind: 'unseal_pull', identity: svc('payments'), keyServers: KS.map(svc), at: AT, durationMs: 10 * MIN, requests: 100, policies: 2 }], AT + 20 * MIN);
    const { change, delayS } = detection(changes, svc('payments'), ['quarantined']);
    expect(delayS).toBeLessThanOrEqual(15);
    expect(change.reasons[0]).toMatchObject({ signal: 'unseal_pull', expected: 30 });
  }, 60_000);

  it('works in the cold: a new identity pulling unseals is quarantined while still learning', () => {
    const stranger = svc('intruder');
    const { changes } = run([{ kind: 'unseal_pull', identity: stranger, keyServers: KS.map(svc), at: 2 * HOUR, durationMs: 10 * MIN, requests: 40, policies: 1 }], 3 * HOUR);
    const q = changes.find((c) => c.identity === stranger && c.state === 'quarantined');
    expect(q?.reasons[0]?.signal).toBe('unseal_pull');
    expect((q!.time - SIM_START - 2 * HOUR) / 1000).toBeLessThanOrEqual(15);
  }, 60_000);

  it('the unseal allowance is configurable (cold_start.unseals, unseal_policies) and the weight 0 turns the signal off', () => {
    const inj: Injection[] = [{ kind: 'unseal_pull', identity: svc('orders'), keyServers: KS.map(svc), at: AT, durationMs: 2 * MIN, requests: 20, policies: 12 }];
    const lenient = run(inj, AT + 5 * MIN, parseRiskConfig({ cold_start: { unseals: 1000, unseal_policies: 1000 } }));
    expect(lenient.changes.filter((c) => c.identity === svc('orders') && c.reasons.some((r) => r.signal === 'unseal_pull'))).toEqual([]);
    const off = run(inj, AT + 5 * MIN, parseRiskConfig({ weights: { unseal_pull: 0 } }));
    // (The other signals still see the sweep in the caller's totals: that is not this signal.)
    expect(off.changes.flatMap((c) => c.reasons.map((r) => r.signal))).not.toContain('unseal_pull');
    expect(parseRiskConfig({}).coldStart).toMatchObject({ unseals: 30, unsealPolicies: 10 });
    expect(() => parseRiskConfig({ cold_start: { unseals: 0 } })).toThrow(/unseals/);
  }, 60_000);
});
