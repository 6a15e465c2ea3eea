import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../core/log.js';
import { DecisionLog, type DecisionRecord } from './decision-log.js';

const rec = (allow: boolean, i = 0): DecisionRecord => ({
  ts: 1, principal: `spiffe://td/p${i}`, action: 'http:request', resource: 'spiffe://td/r', context: { method: 'GET', path: '/x' }, allow, reasons: [],
});

describe('DecisionLog', () => {
  let dir: string;
  beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'tessera-dlog-')); });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('always keeps denials, samples allows, ships in batches', async () => {
    const got: DecisionRecord[][] = [];
    const log = new DecisionLog({ dir, allowSampleRate: 0, ship: async (b) => { got.push(b); } });
    for (let i = 0; i < 10; i++) log.record(rec(false, i));
    for (let i = 0; i < 10; i++) log.record(rec(true, i));
    await log.flush();
    expect(got).toHaveLength(1);
    expect(got[0]!.every((r) => !r.allow)).toBe(true);
    expect(got[0]).toHaveLength(10);
  });

  it('keeps() says which records to build: denials always, allows at the sample rate; push() does not sample again', async () => {
    const got: DecisionRecord[] = [];
    const none = new DecisionLog({ dir, allowSampleRate: 0, ship: async (b) => { got.push(...b); } });
    const all = new DecisionLog({ dir, allowSampleRate: 1, ship: async (b) => { got.push(...b); } });
    const tenth = new DecisionLog({ dir, allowSampleRate: 0.1, ship: async () => undefined });
    for (let i = 0; i < 100; i++) {
      expect(none.keeps(false)).toBe(true);
      expect(none.keeps(true)).toBe(false);
      expect(all.keeps(true)).toBe(true);
    }
    let kept = 0;
    for (let i = 0; i < 20_000; i++) if (tenth.keeps(true)) kept++;
    expect(kept).toBeGreaterThan(1600);
    expect(kept).toBeLessThan(2400);
    none.push(rec(true, 1));
    await none.flush();
    expect(got.map((r) => r.principal)).toEqual(['spiffe://td/p1']);
  });

  it('spills to disk while the control plane is away and sends the spill first when it is back', async () => {
    let up = false;
    const got: DecisionRecord[] = [];
    const log = new DecisionLog({ dir, ship: async (b) => { if (!up) throw new Error('down'); got.push(...b); } });
    for (let i = 0; i < 5; i++) log.record(rec(false, i));
    await log.flush();
    expect(log.spilledBytes).toBeGreaterThan(0);
    up = true;
    log.record(rec(false, 99));
    await log.flush();
    expect(got.map((r) => r.principal)).toEqual([0, 1, 2, 3, 4, 99].map((i) => `spiffe://td/p${i}`));
    expect(log.spilledBytes).toBe(0);
  });

  it('bounds the spill file and counts what it drops', async () => {
    const log = new DecisionLog({ dir, maxSpillBytes: 4096, ship: async () => { throw new Error('down'); } });
    for (let round = 0; round < 20; round++) {
      for (let i = 0; i < 20; i++) log.record(rec(false, i));
      await log.flush();
    }
    expect(log.spilledBytes).toBeLessThanOrEqual(4096 + 20 * 200);
    expect(log.dropped).toBeGreaterThan(0);
  });
});

describe('DecisionLog and a control plane that refuses a batch', () => {
  let dir: string;
  beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'tessera-dlog-')); });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('drops a batch refused as malformed instead of retrying it forever, and keeps shipping', async () => {
    const got: DecisionRecord[] = [];
    const log = new DecisionLog({
      dir,
      ship: async (b) => {
        if (b.some((r) => r.principal.endsWith('/bad'))) throw Object.assign(new Error('refused'), { code: 'TESSERA_BAD_REQUEST' });
        got.push(...b);
      },
    });
    log.record({ ...rec(false), principal: 'spiffe://td/bad' });
    await log.flush();
    expect(log.rejected).toBe(1);
    expect(log.spilledBytes).toBe(0);
    log.record(rec(false, 7));
    await log.flush();
    expect(got.map((r) => r.principal)).toEqual(['spiffe://td/p7']);
  });
});

describe('DecisionLog under a flood', () => {
  let dir: string;
  beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'tessera-dlog-')); });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('takes 50k denials in one turn with one flush at a time and a bounded buffer (no flush per record)', async () => {
    let calls = 0;
    let inFlight = 0;
    let maxInFlight = 0;
    let shippedRecords = 0;
    const log = new DecisionLog({
      dir,
      ship: async (b) => {
        calls++;
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        await new Promise((r) => setTimeout(r, 1));
        shippedRecords += b.length;
        inFlight--;
      },
    });
    const t0 = performance.now();
    for (let i = 0; i < 50_000; i++) log.record(rec(false, i % 7));
    const recordMs = performance.now() - t0;
    expect(log.buffered).toBeLessThanOrEqual(10_000);
    await log.flush();
    await log.stop();
    // 10,000 buffered at most (the default bound), in batches of 500; the rest counted.
    expect(shippedRecords + log.overflowed).toBe(50_000);
    expect(log.overflowed).toBeGreaterThanOrEqual(39_000);
    expect(log.dropped).toBe(log.overflowed);
    expect(calls).toBeLessThanOrEqual(Math.ceil(shippedRecords / 500) + 1);
    expect(maxInFlight).toBe(1);
    expect(recordMs).toBeLessThan(2000);
  }, 20_000);

  it('ships records that arrive while a flush runs with the next flush, not beside it', async () => {
    const releases: (() => void)[] = [];
    const batches: number[] = [];
    const log = new DecisionLog({ dir, maxBatch: 10, ship: (b) => new Promise<void>((r) => { batches.push(b.length); releases.push(r); }) });
    for (let i = 0; i < 10; i++) log.record(rec(false, i));
    await new Promise((r) => setTimeout(r, 10));
    expect(batches).toEqual([10]);
    // A full buffer and explicit flushes while the first ship is in flight: no second ship yet.
    for (let i = 0; i < 25; i++) log.record(rec(false, i));
    const a = log.flush();
    const b = log.flush();
    await new Promise((r) => setTimeout(r, 10));
    expect(batches).toEqual([10]);
    releases.shift()!();
    // The extra pass takes the 25 waiting records (batches of 10), one ship at a time.
    while (batches.length < 4) {
      await new Promise((r) => setTimeout(r, 1));
      releases.shift()?.();
    }
    await Promise.all([a, b]);
    expect(batches).toEqual([10, 10, 10, 5]);
    await log.stop();
  });

  it('bounds the buffer while the control plane is away, counts what it drops and warns at most once per 10 s', async () => {
    const lines: string[] = [];
    const logger = createLogger({ write: (l) => lines.push(l) });
    const log = new DecisionLog({ dir, maxBuffer: 100, maxBatch: 50, log: logger, ship: async () => { throw new Error('down'); } });
    log.record(rec(false, 0));
    await log.flush(); // in backoff now: nothing is shipped until the retry
    expect(log.spilledBytes).toBeGreaterThan(0);
    for (let i = 0; i < 1000; i++) log.record(rec(false, i));
    expect(log.buffered).toBe(100);
    expect(log.overflowed).toBe(900);
    expect(log.dropped).toBe(900);
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({ level: 'warn', msg: 'decision log full: records dropped', dropped: 1, max_buffer: 100 });
    // The buffered records go to the spill file at the next flush; the buffer takes records again.
    await log.stop();
    expect(log.buffered).toBe(0);
    expect(log.spilledBytes).toBeGreaterThan(0);
    log.record(rec(false, 1));
    expect(log.buffered).toBe(1);
  });

  it('rejects a bad maxBuffer', () => {
    expect(() => new DecisionLog({ dir, maxBuffer: 0, ship: async () => {} })).toThrow(/maxBuffer/);
  });
});
