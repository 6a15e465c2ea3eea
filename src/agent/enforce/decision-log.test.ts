import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
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
