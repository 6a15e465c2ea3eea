/**
 * Window aggregation of sidecar telemetry: percentiles from the fixed-bucket histogram, the
 * distinct-path cap and estimate, the edge bound, first_seen (persisted, bounded), the window
 * record's fields for both reporters, and the shipper's queue, retries and refusals.
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { TelemetryWindow } from '../../core/risk/types.js';
import { TesseraError } from '../../core/errors.js';
import { SEEN_FILE, TelemetryCollector } from './collector.js';
import { EdgeStats, LATENCY_BOUNDS_MS, pathHash } from './edge.js';
import { TelemetryShipper } from './shipper.js';

const SELF = 'spiffe://td/shop/orders';
const PEER = 'spiffe://td/shop/frontend';
const dirs: string[] = [];
afterAll(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

function collector(opts: Partial<ConstructorParameters<typeof TelemetryCollector>[0]> = {}): { c: TelemetryCollector; out: TelemetryWindow[][]; dropped: number[] } {
  const out: TelemetryWindow[][] = [];
  const dropped: number[] = [];
  const c = new TelemetryCollector({
    self: SELF, selfSite: 'paris', peerSite: (id) => (id === PEER ? 'lyon' : undefined),
    onWindows: (w, d) => { out.push(w); dropped.push(d); }, now: () => 1_700_000_003_000, ...opts,
  });
  return { c, out, dropped };
}

/** The bucket [lo, hi] holding `v`. */
function bucketOf(v: number): [number, number] {
  const i = LATENCY_BOUNDS_MS.findIndex((b) => v <= b);
  return [i <= 0 ? 0 : LATENCY_BOUNDS_MS[i - 1]!, LATENCY_BOUNDS_MS[i] ?? Infinity];
}

describe('EdgeStats: latency percentiles from the histogram', () => {
  it('are within the true value\'s bucket, for uniform and skewed samples', () => {
    const cases: number[][] = [
      Array.from({ length: 1000 }, (_, i) => i + 1),
      [...Array.from({ length: 990 }, () => 2.2), ...Array.from({ length: 10 }, () => 800)],
      Array.from({ length: 200 }, (_, i) => 0.1 + (i % 7) * 0.05),
    ];
    for (const samples of cases) {
      const e = new EdgeStats(PEER, 0);
      for (const s of samples) e.latency(s);
      const sorted = [...samples].sort((a, b) => a - b);
      for (const q of [0.5, 0.99]) {
        const truth = sorted[Math.ceil(q * sorted.length) - 1]!;
        const [lo, hi] = bucketOf(truth);
        const got = e.percentile(q);
        expect(got, `q=${q} truth=${truth}`).toBeGreaterThanOrEqual(lo);
        expect(got, `q=${q} truth=${truth}`).toBeLessThanOrEqual(Math.min(hi, sorted.at(-1)!));
      }
    }
  });

  it('never exceed the largest sample, also above the last bucket, and are 0 without samples', () => {
    const e = new EdgeStats(PEER, 0);
    expect(e.percentile(0.99)).toBe(0);
    e.latency(90_000);
    e.latency(120_000);
    expect(e.percentile(0.5)).toBeGreaterThanOrEqual(60_000);
    expect(e.percentile(0.99)).toBe(120_000);
  });
});

describe('EdgeStats: distinct paths', () => {
  it('counts exactly up to the cap, ignores query strings, then estimates', () => {
    const e = new EdgeStats(PEER, 0, 1024);
    for (let i = 0; i < 1024; i++) e.path(`/orders/${i}?page=${i % 3}`);
    e.path('/orders/5?other=1');
    expect(e.distinctPaths()).toBe(1024);
    expect(e.bitmap).toBeUndefined();
    for (let i = 1024; i < 5000; i++) e.path(`/orders/${i}`);
    expect(e.paths).toBeUndefined();
    const est = e.distinctPaths();
    expect(est).toBeGreaterThan(4500);
    expect(est).toBeLessThan(5500);
  });

  it('hashes to a 30-bit integer, equal for the same path before "?"', () => {
    expect(pathHash('/a?x')).toBe(pathHash('/a'));
    expect(pathHash('/a')).not.toBe(pathHash('/b'));
    expect(pathHash('/x'.repeat(500))).toBeLessThan(2 ** 30);
  });
});

describe('TelemetryCollector', () => {
  it('reports each edge with traffic once per window, with both reporters\' fields, aligned on the window', () => {
    const { c, out } = collector({ windowSeconds: 5 });
    const callee = c.lane('callee', 'http');
    const caller = c.lane('caller', 'tcp');
    const e = callee.edge(PEER);
    e.requests += 3;
    e.denials += 1;
    e.bytesIn += 100;
    e.bytesOut += 2000;
    e.latency(4);
    e.path('/a');
    e.path('/b');
    const o = caller.edge('spiffe://td/db');
    o.requests++;
    o.errors++;
    callee.edge('spiffe://td/idle');
    const [w1, w2, ...rest] = c.close();
    expect(rest).toEqual([]);
    expect(w1).toEqual({
      ts: '2023-11-14T22:13:20.000Z', window_s: 5, caller: PEER, callee: SELF, caller_site: 'lyon', callee_site: 'paris', reporter: 'callee', action: 'http',
      requests: 3, errors: 0, denials: 1, bytes_in: 2000, bytes_out: 100, latency_p50_ms: w1!.latency_p50_ms, latency_p99_ms: w1!.latency_p99_ms, paths_distinct: 2, first_seen: true,
    });
    expect(w1!.latency_p50_ms).toBeGreaterThanOrEqual(3);
    expect(w1!.latency_p50_ms).toBeLessThanOrEqual(4);
    expect(w2).toMatchObject({ caller: SELF, callee: 'spiffe://td/db', caller_site: 'paris', callee_site: 'unknown', reporter: 'caller', action: 'tcp', requests: 1, errors: 1 });
    expect(out).toHaveLength(1);
    // The next window starts empty; a reference kept across the close is redirected by current().
    expect(c.close()).toEqual([]);
    const again = callee.current(e);
    expect(again).not.toBe(e);
    again.requests++;
    expect(c.close()[0]).toMatchObject({ requests: 1, caller: PEER });
  });

  it('bounds the edges of a window and counts the calls it could not attribute', () => {
    const { c, dropped } = collector({ maxEdges: 3 });
    const lane = c.lane('callee', 'http');
    for (let i = 0; i < 5; i++) lane.edge(`spiffe://td/caller/${i}`).requests++;
    lane.edge('spiffe://td/caller/4').requests++;
    const w = c.close();
    expect(w.map((x) => x.caller)).toEqual(['spiffe://td/caller/0', 'spiffe://td/caller/1', 'spiffe://td/caller/2']);
    expect(dropped).toEqual([3]);
    // Bounded per window: the next one starts with room again.
    lane.edge('spiffe://td/caller/4').requests++;
    expect(c.close()).toHaveLength(1);
  });

  it('marks first_seen once per edge, remembers it across restarts (0600 file), and forgets the oldest past its bound', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-tel-'));
    dirs.push(dir);
    const a = collector({ dir, maxSeen: 2 }).c;
    const hit = (c: TelemetryCollector, peer: string): void => { c.lane('callee', 'http').edge(peer).requests++; };
    hit(a, PEER);
    expect(a.close()[0]!.first_seen).toBe(true);
    hit(a, PEER);
    expect(a.close()[0]!.first_seen).toBeUndefined();
    expect(statSync(join(dir, SEEN_FILE)).mode & 0o777).toBe(0o600);
    const b = collector({ dir, maxSeen: 2 }).c;
    hit(b, PEER);
    expect(b.close()[0]!.first_seen).toBeUndefined();
    // The same peer in another lane is another edge.
    b.lane('caller', 'tcp').edge(PEER).requests++;
    expect(b.close()[0]!.first_seen).toBe(true);
    hit(b, 'spiffe://td/third');
    expect(b.close()[0]!.first_seen).toBe(true);
    // Bound 2: the first edge was forgotten.
    hit(b, PEER);
    expect(b.close()[0]!.first_seen).toBe(true);
  });

  it('runs the meters before a window closes', () => {
    const { c } = collector();
    const lane = c.lane('caller', 'tcp');
    const remove = lane.meter(() => { lane.edge(PEER).bytesOut += 10; });
    expect(c.close()[0]).toMatchObject({ bytes_out: 10, requests: 0 });
    remove();
    expect(c.close()).toEqual([]);
  });

  it('refuses a bad window length', () => {
    expect(() => collector({ windowSeconds: 0 })).toThrow(/telemetry window/);
    expect(() => collector({ windowSeconds: 2.5 })).toThrow(/telemetry window/);
  });
});

function windowOf(i: number): TelemetryWindow {
  return {
    ts: new Date(i * 5000).toISOString(), window_s: 5, caller: PEER, callee: SELF, caller_site: 'a', callee_site: 'b', reporter: 'callee', action: 'http',
    requests: i, errors: 0, denials: 0, bytes_in: 0, bytes_out: 0, latency_p50_ms: 0, latency_p99_ms: 0, paths_distinct: 0,
  };
}

describe('TelemetryShipper', () => {
  it('ships in batches, one flush at a time, and keeps the newest windows within its bound while the control plane is away', async () => {
    let up = false;
    let inFlight = 0;
    let maxInFlight = 0;
    const got: number[] = [];
    const s = new TelemetryShipper({
      // A retry far later than the checks below, so none is in flight when the queue is counted.
      maxQueue: 5, maxBatch: 2, minRetryMs: 1000, maxRetryMs: 2000,
      ship: async (w) => {
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        await new Promise((r) => setTimeout(r, 5));
        inFlight--;
        if (!up) throw new TesseraError('TESSERA_SERVER_UNREACHABLE', 'down');
        got.push(...w.map((x) => x.requests));
      },
    });
    for (let i = 1; i <= 8; i++) s.enqueue([windowOf(i)]);
    await new Promise((r) => setTimeout(r, 30));
    expect(s.queued).toBe(5);
    expect(s.overflowed).toBe(3);
    up = true;
    void s.flush();
    const t0 = Date.now();
    while (s.queued > 0 && Date.now() - t0 < 3000) await new Promise((r) => setTimeout(r, 10));
    await s.flush();
    expect(got).toEqual([4, 5, 6, 7, 8]);
    expect(maxInFlight).toBe(1);
    expect(s.shipped).toBe(5);
    await s.stop();
  });

  it('drops a batch the control plane refuses (not retried) and waits a 429\'s Retry-After', async () => {
    const calls: number[] = [];
    let mode: 'refuse' | 'limit' | 'ok' = 'refuse';
    const s = new TelemetryShipper({
      minRetryMs: 10,
      ship: async () => {
        calls.push(Date.now());
        if (mode === 'refuse') throw new TesseraError('TESSERA_FORBIDDEN', 'not yours');
        if (mode === 'limit') {
          mode = 'ok';
          throw Object.assign(new TesseraError('TESSERA_RATE_LIMITED', 'slow down'), { retryAfterSeconds: 1 });
        }
      },
    });
    s.enqueue([windowOf(1)]);
    await s.flush();
    expect(s.rejected).toBe(1);
    expect(s.queued).toBe(0);
    mode = 'limit';
    s.enqueue([windowOf(2)]);
    const t0 = Date.now();
    while (s.shipped === 0 && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 20));
    expect(s.shipped).toBe(1);
    expect(calls.at(-1)! - calls.at(-2)!).toBeGreaterThanOrEqual(950);
    await s.stop();
  });
});
