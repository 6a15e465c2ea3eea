/**
 * A deterministic telemetry generator for tests and benchmarks of the risk engine: a small shop fleet
 * (web → orders, web → catalog, orders → payments, orders → db, catalog → db) over simulated days with
 * diurnal and weekly load, noise from a seeded PRNG (load ±10%, bytes per request ±30%, rare big payloads
 * and brief outages), both ends reporting every edge, and labelled
 * attacks or legitimate changes injected. Pure: the same options give the same windows.
 *
 * Unseals (opt-in, `unseal`): workloads open their sealed files now and then (a restart), each unseal
 * asking every key server once; only the key servers report (`action: unseal`, reporter `callee`), as
 * in the fabric. Their noise comes from a PRNG of its own, so turning them on leaves the rest unchanged.
 */
import type { TelemetryWindow } from './types.js';

export const TRUST_DOMAIN = 'spiffe://tessera.test';
export const svc = (name: string): string => `${TRUST_DOMAIN}/shop/${name}`;

export interface EdgeSpec { caller: string; callee: string; requests: number; bytesOut: number; bytesIn: number; paths: number; errorRate: number }

/** The calm fleet: requests per 5 s window at the daily mean, bytes per request each way, distinct paths. */
export const FLEET: readonly EdgeSpec[] = [
  { caller: 'web', callee: 'orders', requests: 60, bytesOut: 900, bytesIn: 2500, paths: 6, errorRate: 0.002 },
  { caller: 'web', callee: 'catalog', requests: 120, bytesOut: 400, bytesIn: 12000, paths: 12, errorRate: 0.001 },
  { caller: 'orders', callee: 'payments', requests: 15, bytesOut: 700, bytesIn: 300, paths: 2, errorRate: 0.003 },
  { caller: 'orders', callee: 'db', requests: 90, bytesOut: 300, bytesIn: 1500, paths: 4, errorRate: 0.001 },
  { caller: 'catalog', callee: 'db', requests: 70, bytesOut: 250, bytesIn: 6000, paths: 3, errorRate: 0.001 },
];

/** Labelled attacks and legitimate changes: identities are full SPIFFE IDs; `at` and `durationMs` are ms from the simulation start. */
export type Injection =
  | { kind: 'bulk_exfil' | 'slow_exfil'; identity: string; callee: string; at: number; durationMs: number; factor: number }
  | { kind: 'lateral'; identity: string; newCallees: string[]; at: number; durationMs: number }
  | { kind: 'scan'; identity: string; callee: string; at: number; durationMs: number }
  | { kind: 'stolen_svid'; identity: string; callee: string; at: number; durationMs: number; requests: number }
  | { kind: 'deploy'; identity: string; at: number; durationMs: number; factor: number }
  /** `identity` (a key server, or any identity) pulls `requests` unseals a window from each of `keyServers` over `policies` distinct policies. */
  | { kind: 'unseal_pull'; identity: string; keyServers: string[]; at: number; durationMs: number; requests: number; policies: number };

/** Calm unseals: `caller` opens `policies` sealed files about `perHour` times an hour, from every one of `keyServers` (names under `svc()`, like EdgeSpec). */
export interface UnsealSpec { caller: string; keyServers: string[]; policies: number; perHour: number }

export interface SimulationOptions {
  seed: number;
  /** Simulated length, ms. */
  durationMs: number;
  /** Start, ms since the epoch (default Monday 2026-11-30T00:00:00Z). */
  start?: number;
  windowS?: number;
  injections?: Injection[];
  /** The edges (names under `svc()`); default {@link FLEET}. A benchmark passes several copies of it for a larger fleet. */
  fleet?: readonly EdgeSpec[];
  /** Calm unseal traffic (none by default). */
  unseal?: readonly UnsealSpec[];
}

export const SIM_START = Date.UTC(2026, 10, 30);
export const DAY_MS = 86_400_000;

/** mulberry32: a small seeded PRNG, plenty for noise. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function gaussian(rand: () => number): number {
  const u = Math.max(rand(), 1e-12);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand());
}

function poisson(rand: () => number, lambda: number): number {
  if (lambda <= 0) return 0;
  if (lambda > 30) return Math.max(0, Math.round(lambda + Math.sqrt(lambda) * gaussian(rand)));
  const l = Math.exp(-lambda);
  let k = 0;
  let p = 1;
  do {
    k++;
    p *= rand();
  } while (p > l);
  return k - 1;
}

/** Load relative to the daily mean: a trough at 03:00 UTC, a peak at 15:00, weekends at 60%. */
export function diurnal(t: number): number {
  const d = new Date(t);
  const h = d.getUTCHours() + d.getUTCMinutes() / 60;
  const weekend = d.getUTCDay() === 0 || d.getUTCDay() === 6 ? 0.6 : 1;
  return weekend * (1 + 0.6 * Math.sin((2 * Math.PI * (h - 9)) / 24));
}

function active(i: { at: number; durationMs: number }, offset: number): boolean {
  return offset >= i.at && offset < i.at + i.durationMs;
}

/** The windows of the simulation, in time order, both reporters per edge and window. */
export function* simulate(opts: SimulationOptions): Generator<TelemetryWindow> {
  const rand = prng(opts.seed);
  const urand = prng(opts.seed ^ 0x5ea1);
  const windowS = opts.windowS ?? 5;
  const windowMs = windowS * 1000;
  const start = opts.start ?? SIM_START;
  const injections = opts.injections ?? [];
  for (let offset = 0; offset < opts.durationMs; offset += windowMs) {
    const t = start + offset;
    const ts = new Date(t).toISOString();
    const load = diurnal(t) * Math.exp(0.1 * gaussian(rand));
    const now = injections.filter((i) => active(i, offset));
    const emit = function* (caller: string, callee: string, c: { requests: number; errors: number; denials: number; bytes_in: number; bytes_out: number; paths_distinct: number }, reporters: ('caller' | 'callee')[], action = 'http', r = rand) {
      const p50 = Math.round((4 + r() * 2) * 100) / 100;
      for (const reporter of reporters) {
        yield { ts, window_s: windowS, caller, callee, caller_site: 'eu-1', callee_site: 'eu-1', reporter, action,
          ...c, latency_p50_ms: p50, latency_p99_ms: Math.round(p50 * 4 * 100) / 100 } satisfies TelemetryWindow;
      }
    };
    for (const e of opts.fleet ?? FLEET) {
      let volume = 1;
      for (const i of now) if (i.kind === 'deploy' && i.identity === svc(e.caller)) volume *= i.factor;
      let requests = poisson(rand, e.requests * load * volume);
      if (requests === 0) continue;
      // Payload mix: bytes per request vary ±30% window to window, and now and then (0.2% of windows)
      // a window carries a few big requests or answers (an export, a report) of 2–5× the usual bytes.
      const spike = (): number => (rand() < 0.002 ? 2 + 3 * rand() : 1);
      let bytesOut = Math.round(requests * e.bytesOut * Math.exp(0.3 * gaussian(rand)) * spike());
      const bytesIn = Math.round(requests * e.bytesIn * Math.exp(0.3 * gaussian(rand)) * spike());
      let paths = Math.min(requests, Math.max(1, Math.round(e.paths * (0.8 + 0.4 * rand()))));
      let denials = 0;
      for (const i of now) {
        if (i.identity !== svc(e.caller)) continue;
        if ((i.kind === 'bulk_exfil' || i.kind === 'slow_exfil') && i.callee === svc(e.callee)) bytesOut *= i.factor;
        if (i.kind === 'scan' && i.callee === svc(e.callee)) {
          paths *= 30;
          requests = Math.max(requests, paths);
          denials = Math.round(requests * 0.3);
        }
      }
      // A brief upstream outage now and then (0.05% of windows): a fifth of the requests fail.
      const errors = Math.min(requests, rand() < 0.0005 ? Math.round(requests * 0.2) : poisson(rand, requests * e.errorRate));
      yield* emit(svc(e.caller), svc(e.callee), { requests, errors, denials, bytes_in: bytesIn, bytes_out: bytesOut, paths_distinct: paths }, ['caller', 'callee']);
    }
    for (const i of now) {
      if (i.kind === 'lateral') {
        for (const callee of i.newCallees) {
          const requests = 2 + Math.floor(rand() * 6);
          yield* emit(i.identity, callee, { requests, errors: 0, denials: 0, bytes_in: requests * 800, bytes_out: requests * 200, paths_distinct: Math.min(requests, 2) }, ['caller', 'callee']);
        }
      }
      if (i.kind === 'unseal_pull') {
        for (const ks of i.keyServers) {
          const requests = Math.max(i.policies, poisson(urand, i.requests));
          yield* emit(i.identity, ks, { requests, errors: 0, denials: 0, bytes_in: requests * 260, bytes_out: requests * 110, paths_distinct: Math.min(requests, i.policies) }, ['callee'], 'unseal', urand);
        }
      }
      if (i.kind === 'stolen_svid') {
        const requests = poisson(rand, i.requests);
        if (requests > 0) {
          yield* emit(i.identity, i.callee, { requests, errors: 0, denials: 0, bytes_in: requests * 4000, bytes_out: requests * 300, paths_distinct: Math.min(requests, 3) }, ['callee']);
        }
      }
    }
    for (const u of opts.unseal ?? []) {
      if (urand() >= (u.perHour * windowMs) / 3_600_000) continue;
      // A restart opens every sealed file once; now and then a retry doubles one.
      const requests = u.policies + (urand() < 0.1 ? 1 : 0);
      for (const ks of u.keyServers) {
        yield* emit(svc(u.caller), svc(ks), { requests, errors: 0, denials: 0, bytes_in: requests * 260, bytes_out: requests * 110, paths_distinct: u.policies }, ['callee'], 'unseal', urand);
      }
    }
  }
}
