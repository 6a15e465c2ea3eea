import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { auditLogOrigin, signCheckpoint } from '../core/checkpoint.js';
import { createLogger } from '../core/log.js';
import { consistencyProof, leafHash, MemoryLeafSource } from '../core/merkle.js';
import { encodeVerifierKey } from '../core/signed-note.js';
import type { WitnessAlarm } from '../core/witness.js';
import { Witness, WITNESS_STATE_FILE } from './witness.js';

const ORIGIN = auditLogOrigin('example.org');

class Log {
  readonly src = new MemoryLeafSource();
  readonly vkey: string;
  constructor(readonly key: KeyObject = generateKeyPairSync('ed25519').privateKey) {
    this.vkey = encodeVerifierKey(ORIGIN, key);
  }
  add(n: number, tag = 'a'): this {
    for (let i = 0; i < n; i++) this.src.append(leafHash(Buffer.from(`${tag}-${this.src.size}`)));
    return this;
  }
  /** What the policy stream sends an agent holding `held`. */
  shown(held: number): { note: string; consistency: string[] } {
    const note = signCheckpoint({ origin: ORIGIN, size: this.src.size, rootHash: this.src.root() }, this.key);
    return { note, consistency: held > this.src.size ? [] : consistencyProof(this.src, held, this.src.size).map((h) => h.toString('base64')) };
  }
}

let dir: string;
let lines: string[];
const log = (): ReturnType<typeof createLogger> => createLogger({ level: 'debug', write: (l) => lines.push(l) });

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'tessera-witness-'));
  lines = [];
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('Witness (agent)', () => {
  it('keeps the newest consistent checkpoint in a 0600 file and follows the log across restarts', () => {
    const log1 = new Log().add(4);
    const w = new Witness({ dir, log: log() });
    const seen: unknown[] = [];
    w.on('checkpoint', (c) => seen.push(c));
    w.observe(log1.shown(w.size), log1.vkey);
    expect(w.size).toBe(4);
    const file = join(dir, WITNESS_STATE_FILE);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    for (let i = 0; i < 20; i++) {
      log1.add(i % 3);
      w.observe(log1.shown(w.size), log1.vkey);
    }
    expect(w.size).toBe(log1.src.size);
    expect(w.alarms).toBe(0);
    expect(seen.length).toBe(w.witnessed);
    expect(lines.filter((l) => l.includes('audit checkpoint witnessed'))).toHaveLength(w.witnessed);
    // A restarted agent picks up where it was.
    const again = new Witness({ dir, log: log() });
    expect(again.size).toBe(log1.src.size);
    expect(readdirSync(dir)).toEqual([WITNESS_STATE_FILE]);
  });

  it('raises one alarm per distinct bad checkpoint, keeps its state, counts and reports it', async () => {
    const a = new Log().add(6);
    const reported: WitnessAlarm[] = [];
    let failNext = true;
    const w = new Witness({
      dir, log: log(),
      report: async (alarm) => {
        if (failNext) {
          failNext = false;
          throw new Error('control plane away');
        }
        reported.push(alarm);
      },
    });
    const alarms: WitnessAlarm[] = [];
    w.on('alarm', (x: WitnessAlarm) => alarms.push(x));
    w.observe(a.shown(0), a.vkey);
    const file = join(dir, WITNESS_STATE_FILE);
    const before = readFileSync(file, 'utf8');

    const fork = new Log(a.key).add(8, 'fork');
    w.observe(fork.shown(6), a.vkey);
    w.observe(fork.shown(6), a.vkey);
    expect(w.alarms).toBe(1);
    expect(alarms[0]?.kind).toBe('fork');
    expect(readFileSync(file, 'utf8')).toBe(before);
    const line = lines.find((l) => l.includes('TESSERA_AUDIT_WITNESS_ALARM'));
    expect(JSON.parse(line!)).toMatchObject({ level: 'error', code: 'TESSERA_AUDIT_WITNESS_ALARM', kind: 'fork', heldSize: 6, seenSize: 8 });
    await new Promise((r) => setTimeout(r, 20));
    expect(reported).toHaveLength(0); // the first report failed: kept for the next checkpoint

    const rewind = new Log(a.key).add(2);
    w.observe(rewind.shown(6), a.vkey);
    w.observe(new Log().add(9).shown(6), a.vkey); // another key's signature
    w.observe(a.add(1).shown(6), new Log().vkey); // the bundle names another log key
    await new Promise((r) => setTimeout(r, 20));
    expect(alarms.map((x) => x.kind)).toEqual(['fork', 'rewind', 'bad_signature', 'key_changed']);
    expect(w.alarms).toBe(4);
    expect(reported.map((x) => x.kind)).toEqual(['fork', 'rewind', 'bad_signature', 'key_changed']);
    expect(readFileSync(file, 'utf8')).toBe(before);
    // The honest log moving on is still followed.
    w.observe(a.add(2).shown(6), a.vkey);
    expect(w.size).toBe(9);
  });

  it('does nothing without a log key in the bundle (says so once), and moves a corrupt state aside', () => {
    const a = new Log().add(3);
    const w = new Witness({ dir, log: log() });
    w.observe(a.shown(0), undefined);
    w.observe(a.shown(0), undefined);
    expect(w.size).toBe(0);
    expect(lines.filter((l) => l.includes('names no audit log key'))).toHaveLength(1);

    writeFileSync(join(dir, WITNESS_STATE_FILE), '{"log_key":"x"}', { mode: 0o600 });
    const w2 = new Witness({ dir, log: log() });
    expect(w2.size).toBe(0);
    expect(lines.some((l) => l.includes('TESSERA_AUDIT_WITNESS_STATE_INVALID'))).toBe(true);
    expect(readdirSync(dir).some((f) => f.startsWith(`${WITNESS_STATE_FILE}.invalid-`))).toBe(true);
    w2.observe(a.shown(0), a.vkey);
    expect(w2.size).toBe(3);
  });
});
