/** `tessera risk replay`: the built CLI over telemetry files written by the simulator. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SIM_START, simulate, svc } from '../src/core/risk/simulate.js';
import { runTessera } from './support/process.js';

const MIN = 60_000;
const AT = 70 * MIN;

describe('tessera risk replay', () => {
  let dir: string;
  let file: string;
  let lines: string[];
  let config: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-replay-'));
    // One hour of learning (config), then payments' SVID is used from outside its sidecar.
    lines = [...simulate({ seed: 5, durationMs: AT + 3 * MIN, injections: [{ kind: 'stolen_svid', identity: svc('payments'), callee: svc('db'), at: AT, durationMs: MIN, requests: 30 }] })]
      .map((w) => JSON.stringify(w));
    file = join(dir, 'telemetry.jsonl');
    writeFileSync(file, `${lines.join('\n')}\n`);
    config = join(dir, 'risk.json');
    writeFileSync(config, JSON.stringify({ learning_period: '1h', quarantine_ttl: '2m' }));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('prints every state change, human and --json, with the file\'s clock', async () => {
    const human = await runTessera(['risk', 'replay', file, '--config', config]);
    expect(human.status).toBe(0);
    expect(human.stdout).toContain(`${new Date(SIM_START + AT + 10_000).toISOString()}  ${svc('payments')}  normal -> quarantined  score 100`);
    expect(human.stdout).toContain('unreported_by_caller (+100):');
    expect(human.stderr).toMatch(/replayed \d+ windows, 5 identities, \d+ edges: 2 state changes/);

    const json = await runTessera(['--json', 'risk', 'replay', file, '--config', config, '--as-fast-as-possible']);
    expect(json.status).toBe(0);
    const changes = json.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(changes.map((c) => [c.identity, c.previous, c.state])).toEqual([[svc('payments'), 'normal', 'quarantined'], [svc('payments'), 'quarantined', 'normal']]);
    expect(changes[0]!.time).toBe(new Date(SIM_START + AT + 10_000).toISOString());
    expect((changes[0]!.reasons as { signal: string }[])[0]!.signal).toBe('unreported_by_caller');
    expect((changes[1]!.reasons as { signal: string }[])[0]!.signal).toBe('ttl_expired');
  }, 60_000);

  it('reads stdin with -, and sorts out-of-order lines by ts (same result)', async () => {
    const shuffled = [...lines].reverse();
    const res = await runTessera(['--json', 'risk', 'replay', '-', '--config', config], { input: shuffled.join('\r\n') });
    const sorted = await runTessera(['--json', 'risk', 'replay', file, '--config', config]);
    expect(res.status).toBe(0);
    expect(res.stdout).toBe(sorted.stdout);
    expect(res.stdout).toContain('"state":"quarantined"');
  }, 60_000);

  it('--speed N sleeps between windows (N× real time)', async () => {
    const short = join(dir, 'short.jsonl');
    writeFileSync(short, `${lines.slice(0, 40).join('\n')}\n`); // 4 windows of 5 s, about 20 s of telemetry
    const started = Date.now();
    const res = await runTessera(['risk', 'replay', short, '--speed', '40']);
    expect(res.status).toBe(0);
    expect(Date.now() - started).toBeGreaterThanOrEqual(15_000 / 40);
  }, 60_000);

  it('a bad line stops the replay before any output: exit 1, the stable code and the line number', async () => {
    const bad = join(dir, 'bad.jsonl');
    writeFileSync(bad, `${lines[0]}\n${lines[1]}\n${lines[2]!.replace('"requests":', '"requests":-')}\n`);
    const res = await runTessera(['risk', 'replay', bad]);
    expect(res.status).toBe(1);
    expect(res.stdout).toBe('');
    expect(res.stderr).toContain('telemetry line 3: field "requests"');
    expect(res.stderr).toContain('[TESSERA_TELEMETRY_INVALID]');
    const json = await runTessera(['--json', 'risk', 'replay', '-'], { input: `${lines[0]}\n{"ts":` });
    expect(json.status).toBe(1);
    expect(JSON.parse(json.stdout)).toMatchObject({ error: { code: 'TESSERA_TELEMETRY_INVALID', message: expect.stringContaining('line 2') } });
    const other = await runTessera(['risk', 'replay', '-'], { input: lines[0]!.replace('"window_s":5', '"window_s":10') });
    expect(other.status).toBe(1);
    expect(other.stderr).toContain('telemetry line 1: field "window_s"');
  }, 60_000);

  it('bad options and config files: exit 2 with TESSERA_CONFIG_INVALID', async () => {
    const badConfig = join(dir, 'bad-config.json');
    writeFileSync(badConfig, JSON.stringify({ quarantine_at: 10, step_up_at: 40 }));
    for (const args of [['--speed', '0'], ['--speed', 'fast'], ['--speed', '2', '--as-fast-as-possible'], ['--config', badConfig], ['--config', join(dir, 'missing.json')]]) {
      const res = await runTessera(['risk', 'replay', file, ...args]);
      expect(res.status, args.join(' ')).toBe(2);
      expect(res.stderr).toContain('[TESSERA_CONFIG_INVALID]');
    }
    const missing = await runTessera(['risk', 'replay', join(dir, 'nope.jsonl')]);
    expect(missing.status).toBe(2);
    expect(missing.stderr).toContain('cannot read it (ENOENT)');
  }, 60_000);
});
