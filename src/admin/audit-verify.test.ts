/**
 * The verifier of `tessera audit verify` over in-memory sources: every kind of tampering is found and
 * named at the right record id or tree size; an intact log verifies. The same code reads the SQLite
 * file and the admin API (test/audit-verify.e2e.test.ts runs both against a real control plane).
 */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { auditLeafData, type AuditLeafRecord } from '../core/audit-leaf.js';
import { auditLogOrigin, signCheckpoint } from '../core/checkpoint.js';
import { isTesseraError } from '../core/errors.js';
import { MerkleFrontier, leafHash } from '../core/merkle.js';
import { encodeVerifierKey } from '../core/signed-note.js';
import { recordFromView } from './audit-sources.js';
import { parseSavedCheckpoint, verifyAuditLog, type AuditVerifySource, type VerifyCheckpoint, type VerifyRecord } from './audit-verify.js';

const ORIGIN = auditLogOrigin('example.org');

function keyPair(): { priv: KeyObject; vkey: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { priv: privateKey, vkey: encodeVerifierKey(ORIGIN, publicKey) };
}
const logKey = keyPair();

function record(id: number): VerifyRecord {
  return { id, ts: 1_700_000_000_000 + id, actor: `spiffe://example.org/w${id % 3}`, action: 'entry.create', target: `e${id}`, outcome: 'success', code: 'OK', detail: { n: id }, principal: null };
}

const leafOf = (r: VerifyRecord): Buffer => leafHash(auditLeafData(r as AuditLeafRecord));

/** Records 1..n with stored leaf hashes, and checkpoints signed at `sizes` (roots of the records as given). */
function makeLog(n: number, sizes: number[], key = logKey.priv): { records: VerifyRecord[]; checkpoints: VerifyCheckpoint[] } {
  const records = Array.from({ length: n }, (_, i) => record(i + 1));
  for (const r of records) r.storedLeafHash = leafOf(r);
  return { records, checkpoints: sign(records, sizes, key) };
}

function sign(records: VerifyRecord[], sizes: number[], key: KeyObject): VerifyCheckpoint[] {
  const f = new MerkleFrontier();
  const roots = [f.root()];
  for (const r of records) {
    f.append(leafOf(r));
    roots.push(f.root());
  }
  return sizes.map((size) => ({ size, rootHash: roots[size]!, note: signCheckpoint({ origin: ORIGIN, size, rootHash: roots[size]! }, key) }));
}

function source(log: { records: VerifyRecord[]; checkpoints: VerifyCheckpoint[] }, extra: Partial<AuditVerifySource> = {}): AuditVerifySource {
  return {
    name: 'test', logKey: logKey.vkey,
    async *records() { yield* log.records; },
    async *checkpoints() { yield* log.checkpoints; },
    ...extra,
  };
}

describe('verifyAuditLog', () => {
  it('verifies an intact log: every checkpoint checked, verified size the largest', async () => {
    const log = makeLog(20, [0, 1, 5, 16, 18]);
    const r = await verifyAuditLog(source(log));
    expect(r).toMatchObject({ ok: true, records: 20, verified_size: 18, checkpoints: 5, unsigned: 2, pinned: false, problem_count: 0 });
    const pinned = await verifyAuditLog(source(log), { logKey: logKey.vkey });
    expect(pinned.pinned).toBe(true);
    const empty = await verifyAuditLog(source(makeLog(0, [0])));
    expect(empty).toMatchObject({ ok: true, records: 0, checkpoints: 1 });
  });

  it('names an edited record by its stored leaf hash, and a second one too', async () => {
    const log = makeLog(20, [5, 10, 20]);
    log.records[6]!.actor = 'mallory';
    log.records[14]!.detail = { n: 999 };
    const r = await verifyAuditLog(source(log));
    expect(r.ok).toBe(false);
    expect(r.problems.map((p) => [p.kind, p.id])).toEqual([['edited', 7], ['edited', 15]]);
    expect(r.verified_size).toBe(5);
  });

  it('without stored leaf hashes (the API), names the first signed size whose root differs', async () => {
    const log = makeLog(20, [5, 10, 20]);
    for (const rec of log.records) delete rec.storedLeafHash;
    log.records[6]!.target = 'forged';
    const r = await verifyAuditLog(source(log));
    expect(r.problems[0]).toMatchObject({ kind: 'root', size: 10 });
    expect(r.problems[0]!.message).toContain('6..10');
    expect(r.verified_size).toBe(5);
  });

  it('names a deleted record, a duplicate and an out-of-order id', async () => {
    const del = makeLog(10, [10]);
    del.records.splice(3, 1);
    expect((await verifyAuditLog(source(del))).problems[0]).toMatchObject({ kind: 'missing', id: 4 });
    const dup = makeLog(10, [10]);
    dup.records.splice(5, 0, { ...dup.records[4]! });
    expect((await verifyAuditLog(source(dup))).problems[0]).toMatchObject({ kind: 'order', id: 5 });
    const swapped = makeLog(10, [10]);
    [swapped.records[2], swapped.records[3]] = [swapped.records[3]!, swapped.records[2]!];
    const s = await verifyAuditLog(source(swapped));
    expect(s.problems[0]).toMatchObject({ kind: 'missing', id: 3 });
    expect(s.problems.some((p) => p.kind === 'order' && p.id === 3)).toBe(true);
  });

  it('names records beyond the stored frontier, and a frontier that is not the records\' tree', async () => {
    const log = makeLog(8, [4]);
    const f = new MerkleFrontier();
    for (const rec of log.records.slice(0, 6)) f.append(leafOf(rec));
    const extra = await verifyAuditLog(source(log, { head: { size: 6, rootHash: f.root() } }));
    expect(extra.problems.map((p) => [p.kind, p.id])).toEqual([['extra', 7]]);
    const wrong = await verifyAuditLog(source(log, { head: { size: 8, rootHash: f.root() } }));
    expect(wrong.problems[0]).toMatchObject({ kind: 'frontier', size: 8 });
    const short = await verifyAuditLog(source({ records: log.records.slice(0, 5), checkpoints: [] }, { head: { size: 8, rootHash: f.root() } }));
    expect(short.problems[0]).toMatchObject({ kind: 'truncated', id: 6, size: 8 });
    const malformed = await verifyAuditLog(source(log, { head: { error: 'not JSON' } }));
    expect(malformed.problems[0]!.kind).toBe('frontier');
  });

  it('names a truncated tail below a stored checkpoint, and below a saved one only with it', async () => {
    const log = makeLog(12, [4, 8, 12]);
    const cut = await verifyAuditLog(source({ records: log.records.slice(0, 9), checkpoints: log.checkpoints }));
    expect(cut.problems).toEqual([expect.objectContaining({ kind: 'truncated', id: 10, size: 12 })]);
    // Records, frontier and checkpoints all cut back consistently: only a saved checkpoint tells.
    const prefix = { records: log.records.slice(0, 8), checkpoints: log.checkpoints.slice(0, 2) };
    expect((await verifyAuditLog(source(prefix))).ok).toBe(true);
    const saved = { note: log.checkpoints[2]!.note, logKey: logKey.vkey };
    const caught = await verifyAuditLog(source(prefix), { saved });
    expect(caught.problems[0]).toMatchObject({ kind: 'truncated', id: 9, size: 12 });
    expect(caught.from_checkpoint).toMatchObject({ size: 12, extended: false });
    const fine = await verifyAuditLog(source(log), { saved: { note: log.checkpoints[1]!.note } });
    expect(fine).toMatchObject({ ok: true, pinned: false, from_checkpoint: { size: 8, extended: true } });
  });

  it('catches a rewritten history against a saved checkpoint', async () => {
    const log = makeLog(10, [6, 10]);
    const saved = { note: log.checkpoints[0]!.note, logKey: logKey.vkey };
    const forged = makeLog(10, []);
    forged.records[1]!.actor = 'mallory';
    forged.records[1]!.storedLeafHash = leafOf(forged.records[1]!);
    forged.checkpoints = sign(forged.records, [6, 10], logKey.priv);
    const r = await verifyAuditLog(source(forged), { saved });
    expect(r.problems[0]).toMatchObject({ kind: 'root', size: 6 });
  });

  it('refuses checkpoints signed by another key when the key is pinned, or a bad signature', async () => {
    const other = keyPair();
    const log = makeLog(6, [3, 6], other.priv);
    const unpinned = await verifyAuditLog(source(log, { logKey: other.vkey }));
    expect(unpinned).toMatchObject({ ok: true, pinned: false });
    const pinned = await verifyAuditLog(source(log, { logKey: other.vkey }), { logKey: logKey.vkey });
    expect(pinned.problems[0]!.kind).toBe('key');
    expect(pinned.problems.filter((p) => p.kind === 'key' && p.size !== undefined).map((p) => p.size)).toEqual([3, 6]);
    const viaSaved = await verifyAuditLog(source(log, { logKey: other.vkey }), { saved: { note: makeLog(6, [3]).checkpoints[0]!.note, logKey: logKey.vkey } });
    expect(viaSaved.problems[0]!.kind).toBe('key');

    const bad = makeLog(6, [3, 6]);
    bad.checkpoints[1] = { ...bad.checkpoints[1]!, note: bad.checkpoints[1]!.note.replace(/— (\S+) (\S{10})\S/, (m, n: string, s: string) => `— ${n} ${s}${m.endsWith('A') ? 'B' : 'A'}`) };
    const sig = await verifyAuditLog(source(bad));
    expect(sig.problems[0]).toMatchObject({ kind: 'signature', size: 6 });
    const cols = makeLog(6, [3, 6]);
    cols.checkpoints[0] = { ...cols.checkpoints[0]!, rootHash: Buffer.alloc(32) };
    expect((await verifyAuditLog(source(cols))).problems[0]).toMatchObject({ kind: 'checkpoint', size: 3 });
  });

  it('reports a record that cannot be encoded, and refuses a bad --log-key or no key at all', async () => {
    const log = makeLog(4, [4]);
    log.records[1]!.detail = undefined;
    expect((await verifyAuditLog(source(log))).problems[0]).toMatchObject({ kind: 'edited', id: 2 });
    await expect(verifyAuditLog(source(log), { logKey: 'nope' })).rejects.toMatchObject({ code: 'TESSERA_CONFIG_INVALID' });
    await expect(verifyAuditLog(source(log, { logKey: undefined }))).rejects.toMatchObject({ code: 'TESSERA_CONFIG_INVALID' });
  });
});

describe('parseSavedCheckpoint', () => {
  it('reads `tessera audit checkpoint --json`, a {note, log_key} file and a bare note', () => {
    const note = makeLog(1, [1]).checkpoints[0]!.note;
    expect(parseSavedCheckpoint(JSON.stringify({ checkpoint: { note }, log_key: logKey.vkey, verified: true }))).toEqual({ note, logKey: logKey.vkey });
    expect(parseSavedCheckpoint(JSON.stringify({ note, log_key: logKey.vkey }))).toEqual({ note, logKey: logKey.vkey });
    expect(parseSavedCheckpoint(note)).toEqual({ note });
    for (const bad of ['{', '{"checkpoint":{}}', '{"note":"x","log_key":5}']) {
      expect(() => parseSavedCheckpoint(bad)).toThrow(expect.objectContaining({ code: 'TESSERA_CONFIG_INVALID' }));
    }
  });

  it('never fails with anything but a stable code (fast-check)', () => {
    fc.assert(fc.property(fc.oneof(fc.string(), fc.json()), (text) => {
      try {
        parseSavedCheckpoint(text);
      } catch (err) {
        expect(isTesseraError(err) && err.code === 'TESSERA_CONFIG_INVALID').toBe(true);
      }
    }));
  });
});

describe('recordFromView', () => {
  it('re-encodes a record sent as JSON to exactly the bytes hashed (unicode, nesting, numbers)', () => {
    const odd: Record<string, unknown>[] = [
      { s: 'é ☃ 𝄞 \u0000 \u2028 "\\', nested: { a: [1, { b: [null, true, false] }], '': 'empty key', 'ü': 1 } },
      { n: [0, -1, 0.1, 1e21, 1e-7, 2 ** 53 - 1, -(2 ** 53) + 1, 123456789.125, 5e-324] },
      { ['__proto__']: { x: 1 }, deep: { a: { b: { c: { d: { e: 'f' } } } } } },
    ];
    for (const [i, detail] of odd.entries()) {
      // As stored (JSON text), as the server reads it back, as fastify sends it, as the client parses it.
      const storedText = JSON.stringify(detail);
      const stored: AuditLeafRecord = { id: i + 1, ts: 1_700_000_000_123, actor: 'a', action: 'x', target: 't', outcome: 'denied', code: 'C', detail: JSON.parse(storedText) as Record<string, unknown>, principal: i === 0 ? 'spiffe://example.org/p' : null };
      const wire = JSON.parse(JSON.stringify({ ...stored, ...(stored.principal ? {} : { principal: undefined }), ts: new Date(stored.ts).toISOString() }));
      expect(auditLeafData(recordFromView(wire) as AuditLeafRecord).equals(auditLeafData(stored))).toBe(true);
    }
  });
});
