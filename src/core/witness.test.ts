import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { auditLogOrigin, signCheckpoint } from './checkpoint.js';
import { consistencyProof, leafHash, MemoryLeafSource } from './merkle.js';
import { appendSignatures, encodeVerifierKey, signatureLine } from './signed-note.js';
import { formatWitnessState, parseWitnessState, witnessStep, type WitnessState } from './witness.js';

const ORIGIN = auditLogOrigin('example.org');

/** A log: leaves, its key, and signed checkpoints with proofs, as the control plane gives them. */
class Log {
  readonly src = new MemoryLeafSource();
  readonly key: KeyObject;
  readonly vkey: string;
  constructor(key?: KeyObject) {
    this.key = key ?? generateKeyPairSync('ed25519').privateKey;
    this.vkey = encodeVerifierKey(ORIGIN, this.key);
  }
  add(n: number, tag = 'a'): this {
    for (let i = 0; i < n; i++) this.src.append(leafHash(Buffer.from(`${tag}-${this.src.size}`)));
    return this;
  }
  note(): string {
    return signCheckpoint({ origin: ORIGIN, size: this.src.size, rootHash: this.src.root() }, this.key);
  }
  proofFrom(m: number): string[] {
    return consistencyProof(this.src, m, this.src.size).map((h) => h.toString('base64'));
  }
}

function adopt(log: Log, held?: WitnessState): WitnessState {
  const v = witnessStep(held, log.vkey, log.note(), held ? log.proofFrom(held.size) : []);
  if (!v.ok) throw new Error(v.alarm.message);
  return v.state;
}

describe('witnessStep', () => {
  it('adopts a first checkpoint, then follows the log forward over many checkpoints', () => {
    const log = new Log().add(3);
    let state = adopt(log);
    expect(state.size).toBe(3);
    for (let i = 1; i <= 60; i++) {
      log.add(i % 7);
      const v = witnessStep(state, log.vkey, log.note(), log.proofFrom(state.size));
      expect(v.ok).toBe(true);
      if (!v.ok) return;
      expect(v.advanced).toBe(log.src.size > state.size);
      expect(v.from).toBe(state.size);
      state = v.state;
    }
    expect(state.size).toBe(log.src.size);
    expect(state.root_hash).toBe(log.src.root().toString('base64'));
  });

  it('the same tree again is not an advance, and keeps the held state', () => {
    const log = new Log().add(5);
    const state = adopt(log);
    const v = witnessStep(state, log.vkey, log.note(), []);
    expect(v.ok && !v.advanced && v.state === state).toBe(true);
  });

  it('a fork at the same size: another root is an alarm', () => {
    const a = new Log().add(4);
    const b = new Log(a.key).add(4, 'b');
    const state = adopt(a);
    const v = witnessStep(state, a.vkey, b.note(), []);
    expect(v.ok).toBe(false);
    if (v.ok) return;
    expect(v.alarm.kind).toBe('fork');
    expect(v.alarm.held).toEqual({ size: 4, root_hash: a.src.root().toString('base64') });
    expect(v.alarm.seen).toEqual({ size: 4, root_hash: b.src.root().toString('base64') });
    expect(v.alarm.message).toContain('size 4 root');
  });

  it('a fork at a larger size: the diverged history does not prove consistency', () => {
    const a = new Log().add(10);
    const b = new Log(a.key);
    for (let i = 0; i < 10; i++) b.src.append(a.src.leafHashes(i, i + 1)[0]!);
    a.add(3, 'a2');
    const state = adopt(a);
    b.add(5, 'b2');
    const v = witnessStep(state, a.vkey, b.note(), b.proofFrom(state.size));
    expect(!v.ok && v.alarm.kind).toBe('fork');
    // A proof that does verify for b's own prefix of 10 does not help it against a's 13.
    const honest = witnessStep(adopt(a, undefined), a.vkey, a.add(2).note(), a.proofFrom(13));
    expect(honest.ok).toBe(true);
  });

  it('a rewind (smaller tree) is an alarm', () => {
    const log = new Log().add(5);
    const small = log.note();
    log.add(3);
    const state = adopt(log);
    const v = witnessStep(state, log.vkey, small, []);
    expect(!v.ok && v.alarm.kind).toBe('rewind');
    if (!v.ok) expect([v.alarm.held.size, v.alarm.seen.size]).toEqual([8, 5]);
  });

  it('a checkpoint signed by another key, a bad signature, garbage and a changed log key are alarms', () => {
    const log = new Log().add(5);
    const state = adopt(log);
    const other = new Log().add(6);
    const resigned = witnessStep(state, log.vkey, other.note(), []);
    expect(!resigned.ok && resigned.alarm.kind).toBe('bad_signature');
    const note = log.add(1).note();
    const tampered = note.replace(/\n— (\S+) (\S)/, (_m, n: string, c: string) => `\n— ${n} ${c === 'A' ? 'B' : 'A'}`);
    const bad = witnessStep(state, log.vkey, tampered, log.proofFrom(5));
    expect(!bad.ok && bad.alarm.kind).toBe('bad_signature');
    for (const garbage of [undefined, 42, '', 'x\n', 'a'.repeat(20_000)]) {
      const g = witnessStep(state, log.vkey, garbage, []);
      expect(!g.ok && g.alarm.kind).toBe('bad_signature');
    }
    const changed = witnessStep(state, other.vkey, other.note(), []);
    expect(!changed.ok && changed.alarm.kind).toBe('key_changed');
    const garbageKey = witnessStep(state, 'nonsense', other.note(), []);
    expect(!garbageKey.ok && garbageKey.alarm.kind).toBe('key_changed');
  });

  it('a malformed proof is a fork alarm, never a throw', () => {
    const log = new Log().add(5);
    const state = adopt(log);
    log.add(4);
    for (const proof of [null, 'x', [1], ['not base64'], Array(200).fill(log.proofFrom(5)[0]), []]) {
      const v = witnessStep(state, log.vkey, log.note(), proof);
      expect(!v.ok && v.alarm.kind).toBe('fork');
    }
  });

  it('one alarm key per distinct note', () => {
    const a = new Log().add(4);
    const state = adopt(a);
    const b = new Log(a.key).add(4, 'b');
    const v1 = witnessStep(state, a.vkey, b.note(), []);
    const v2 = witnessStep(state, a.vkey, b.note(), []);
    const v3 = witnessStep(state, a.vkey, b.add(1, 'c').note(), []);
    expect(!v1.ok && !v2.ok && !v3.ok).toBe(true);
    if (v1.ok || v2.ok || v3.ok) return;
    expect(v1.alarm.note_hash).toBe(v2.alarm.note_hash);
    expect(v3.alarm.note_hash).not.toBe(v1.alarm.note_hash);
  });

  it('takes notes carrying witnesses\' cosignature lines', () => {
    const log = new Log().add(5);
    const state = adopt(log);
    log.add(2);
    const note = log.note();
    const text = note.slice(0, note.indexOf('\n\n') + 1);
    const w = generateKeyPairSync('ed25519').privateKey;
    const cosigned = appendSignatures(note, [signatureLine(text, { name: 'example.org/witness/b', privateKey: w }, 'cosignature/v1', 1_700_000_000)]);
    const v = witnessStep(state, log.vkey, cosigned, log.proofFrom(5));
    expect(v.ok && v.advanced).toBe(true);
  });
});

describe('witness state', () => {
  it('round-trips and refuses edits that the signed note does not back', () => {
    const log = new Log().add(3);
    const state = adopt(log);
    expect(parseWitnessState(formatWitnessState(state))).toEqual(state);
    const edited = { ...state, size: 99 };
    expect(() => parseWitnessState(formatWitnessState(edited))).toThrow(expect.objectContaining({ code: 'TESSERA_AUDIT_WITNESS_STATE_INVALID' }));
    const otherKey = { ...state, log_key: new Log().vkey };
    expect(() => parseWitnessState(formatWitnessState(otherKey))).toThrow(expect.objectContaining({ code: 'TESSERA_AUDIT_WITNESS_STATE_INVALID' }));
    expect(() => parseWitnessState(JSON.stringify({ ...state, extra: 1 }))).toThrow(expect.objectContaining({ code: 'TESSERA_AUDIT_WITNESS_STATE_INVALID' }));
  });

  it('parses any input to a state or a TESSERA_AUDIT_WITNESS_STATE_INVALID, never anything else (fast-check)', () => {
    const log = new Log().add(2);
    const good = formatWitnessState(adopt(log));
    const mutated = fc.tuple(fc.nat(good.length - 1), fc.string({ maxLength: 3 })).map(([i, s]) => good.slice(0, i) + s + good.slice(i + 1));
    fc.assert(fc.property(fc.oneof(fc.string(), fc.json(), mutated), (input) => {
      try {
        parseWitnessState(input);
      } catch (err) {
        expect((err as { code?: string }).code).toBe('TESSERA_AUDIT_WITNESS_STATE_INVALID');
      }
    }), { numRuns: 300 });
  });

  it('witnessStep never throws for anything the log sends (fast-check)', () => {
    const log = new Log().add(9);
    const state = adopt(log);
    fc.assert(fc.property(fc.anything(), fc.anything(), (note, proof) => {
      expect(witnessStep(state, log.vkey, note, proof).ok).toBe(false);
    }), { numRuns: 300 });
  });
});
