/**
 * The audit log's Merkle tree in SqliteStore (issue 10): leaf hashes and the frontier written in the
 * append's transaction, resumed after a restart, built once for a database from before the tree,
 * and the append-only triggers still in force afterwards. Real SQLite files.
 */
import Database from 'better-sqlite3';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { auditLeafData } from '../../core/audit-leaf.js';
import { EMPTY_ROOT, MemoryLeafSource, consistencyProof, inclusionProof, leafHash, rootOf, verifyInclusion } from '../../core/merkle.js';
import { AuditLog } from '../audit/audit.js';
import { SqliteStore } from './sqlite.js';
import { sqliteTestFiles } from './test-files.js';
import type { StoredAuditRecord } from './store.js';

const { tmpFile, open } = sqliteTestFiles('tree');

/** The leaf hashes recomputed from the records as read back (not from the stored column). */
function recomputed(records: StoredAuditRecord[]): Buffer[] {
  return records.map((r) => leafHash(auditLeafData(r)));
}

async function recordMany(log: AuditLog, n: number, tag: string): Promise<void> {
  await Promise.all(Array.from({ length: n }, (_, i) => {
    const ev = log.begin(`test.${tag}`, `spiffe://t.test/actor/${i % 3}`);
    ev.detail.i = i;
    ev.detail.nested = { b: [1, 'x'], a: null };
    if (i % 2 === 0) ev.succeed(`target-${i}`);
    return log.record(ev);
  }));
}

describe('SqliteStore: the audit Merkle tree', () => {
  it('starts empty: size 0, the empty root', async () => {
    const store = open(tmpFile());
    const head = await store.auditTreeHead();
    expect(head.size).toBe(0);
    expect(head.rootHash.equals(EMPTY_ROOT)).toBe(true);
  });

  it('records appended through AuditLog: root = rootOf(recomputed leaves), proofs verify against it', async () => {
    const store = open(tmpFile());
    const log = new AuditLog(store);
    await recordMany(log, 37, 'a');
    await log.append([{ ts: 5, actor: 'enf', action: 'decision', target: 'r', outcome: 'success', code: 'ALLOW', detail: { principal: 'p' }, principal: 'p' }]);
    const records = await log.read({ limit: 10_000 });
    expect(records.map((r) => r.id)).toEqual(Array.from({ length: 38 }, (_, i) => i + 1));
    const leaves = recomputed(records);
    const head = await store.auditTreeHead();
    expect(head.size).toBe(38);
    expect(head.rootHash.equals(rootOf(leaves))).toBe(true);
    const src = store.auditLeafSource();
    expect(src.leafHashes(0, 38).map((h) => h.toString('hex'))).toEqual(leaves.map((h) => h.toString('hex')));
    for (const i of [0, 17, 37]) {
      expect(verifyInclusion(leaves[i]!, i, 38, inclusionProof(src, i, 38), head.rootHash)).toBe(true);
    }
  });

  it('a restart resumes the frontier: appends after reopening extend the same tree', async () => {
    const file = tmpFile();
    const first = open(file);
    await recordMany(new AuditLog(first), 10, 'b');
    await first.close();
    const second = open(file);
    expect((await second.auditTreeHead()).size).toBe(10);
    const log = new AuditLog(second);
    await recordMany(log, 5, 'c');
    const records = await log.read({ limit: 100 });
    const head = await second.auditTreeHead();
    expect(head.size).toBe(15);
    expect(head.rootHash.equals(rootOf(recomputed(records)))).toBe(true);
  });

  it('a stored leaf hash matches the record: an edited row (outside the triggers) no longer does', async () => {
    const file = tmpFile();
    const store = open(file);
    const log = new AuditLog(store);
    await recordMany(log, 3, 'd');
    await store.close();
    const db = new Database(file);
    expect(() => db.prepare("UPDATE audit SET actor = 'mallory' WHERE id = 2").run()).toThrow(/append-only/);
    expect(() => db.prepare('DELETE FROM audit WHERE id = 2').run()).toThrow(/append-only/);
    db.close();
  });

  it('migrates a database from before the tree: hashes the old rows once, in id order, keeps the triggers', async () => {
    const file = tmpFile();
    const db = new Database(file);
    db.exec(`CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
      CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,
        outcome TEXT NOT NULL CHECK (outcome IN ('denied', 'success')), code TEXT NOT NULL, detail TEXT NOT NULL, principal TEXT);
      CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
      CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;`);
    const ins = db.prepare('INSERT INTO audit(ts, actor, action, target, outcome, code, detail, principal) VALUES (?, ?, ?, ?, ?, ?, ?, ?)');
    for (let i = 0; i < 1203; i++) ins.run(1000 + i, 'old', 'x', `t${i}`, i % 2 ? 'denied' : 'success', 'OK', JSON.stringify({ z: i, a: 'é' }), i % 5 ? null : 'p');
    db.close();

    const store = open(file);
    const log = new AuditLog(store);
    const old = await log.read({ limit: 10_000 });
    expect(old).toHaveLength(1203);
    expect(old[0]!.principal).toBe('p');
    expect((await store.auditTreeHead()).rootHash.equals(rootOf(recomputed(old)))).toBe(true);
    await recordMany(log, 4, 'new');
    await store.close();

    const raw = new Database(file);
    expect(() => raw.prepare("UPDATE audit SET actor = 'mallory' WHERE id = 1").run()).toThrow(/append-only/);
    const nulls = raw.prepare<[], { n: number }>('SELECT COUNT(*) AS n FROM audit WHERE leaf_hash IS NULL').get()!.n;
    raw.close();
    expect(nulls).toBe(0);
    const again = open(file);
    expect((await again.auditTreeHead()).size).toBe(1207);
    // Subtrees of 256+ leaves were stored at migration and on append; proofs that use them are the
    // proofs computed from every leaf (no cache), and they read far fewer leaves.
    const all = await new AuditLog(again).read({ limit: 10_000 });
    const mem = new MemoryLeafSource();
    for (const h of recomputed(all)) mem.append(h);
    const src = again.auditLeafSource();
    expect(src.subtreeHash!(8, 0)).toBeDefined();
    expect(src.subtreeHash!(10, 0)).toBeDefined();
    let leavesRead = 0;
    const counting = { leafHashes: (a: number, b: number) => { leavesRead += b - a; return src.leafHashes(a, b); }, subtreeHash: src.subtreeHash! };
    for (const [i, n] of [[0, 1207], [700, 1207], [1206, 1207], [5, 1024], [300, 513]] as const) {
      expect(inclusionProof(counting, i, n).map((h) => h.toString('hex'))).toEqual(inclusionProof(mem, i, n).map((h) => h.toString('hex')));
    }
    for (const [m, n] of [[1, 1207], [256, 1207], [1000, 1207], [513, 1024]] as const) {
      expect(consistencyProof(counting, m, n).map((h) => h.toString('hex'))).toEqual(consistencyProof(mem, m, n).map((h) => h.toString('hex')));
    }
    // Without the stored subtrees these nine proofs read ~9,800 leaf hashes (every leaf of each tree); with them ~2,900.
    expect(leavesRead).toBeLessThan(4000);
  });

  it('refuses to build the tree over ids with a gap (the leaf index would not be id - 1)', () => {
    const file = tmpFile();
    const db = new Database(file);
    db.exec(`CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,
        outcome TEXT NOT NULL, code TEXT NOT NULL, detail TEXT NOT NULL)`);
    db.prepare("INSERT INTO audit VALUES (1, 1, 'a', 'x', '', 'success', 'OK', '{}'), (3, 2, 'a', 'x', '', 'success', 'OK', '{}')").run();
    db.close();
    expect(() => new SqliteStore(file)).toThrow(expect.objectContaining({ code: 'TESSERA_AUDIT_STATE_INVALID' }));
  });

  it('stores checkpoints once per size and returns the latest or the one asked for', async () => {
    const store = open(tmpFile());
    expect(await store.getCheckpoint()).toBeUndefined();
    const root = Buffer.alloc(32, 7);
    expect(await store.insertCheckpoint({ size: 3, rootHash: root, note: 'n3', createdAt: 1 })).toBe(true);
    expect(await store.insertCheckpoint({ size: 3, rootHash: root, note: 'other', createdAt: 2 })).toBe(false);
    expect(await store.insertCheckpoint({ size: 9, rootHash: root, note: 'n9', createdAt: 3 })).toBe(true);
    expect((await store.getCheckpoint())?.note).toBe('n9');
    expect((await store.getCheckpoint(3))?.note).toBe('n3');
    expect(await store.getCheckpoint(4)).toBeUndefined();
    expect(await store.setMetaIfAbsent('k', 'first')).toBe('first');
    expect(await store.setMetaIfAbsent('k', 'second')).toBe('first');
  });
});

describe('SqliteStore: a frontier that disagrees with the table', () => {
  it('is refused at open with TESSERA_AUDIT_STATE_INVALID (appends would otherwise all fail)', async () => {
    const file = tmpFile();
    const store = open(file);
    await recordMany(new AuditLog(store), 3, 'e');
    await store.close();
    const db = new Database(file);
    db.prepare("UPDATE meta SET value = ? WHERE key = 'audit_frontier'").run(JSON.stringify({ size: 0, hashes: [] }));
    db.close();
    expect(() => new SqliteStore(file)).toThrow(expect.objectContaining({ code: 'TESSERA_AUDIT_STATE_INVALID' }));
  });
});

describe('SqliteStore: the tree migration is all or nothing', () => {
  it('a row that cannot be hashed aborts it: no leaf hash written, the update trigger still in force', () => {
    const file = tmpFile();
    const db = new Database(file);
    db.exec(`CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,
        outcome TEXT NOT NULL, code TEXT NOT NULL, detail TEXT NOT NULL);
      CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;`);
    const ins = db.prepare("INSERT INTO audit(ts, actor, action, target, outcome, code, detail) VALUES (1, 'a', 'x', '', 'success', 'OK', ?)");
    ins.run('{}');
    // Nested deeper than canonical JSON allows (64): this row has no leaf.
    ins.run(`${'['.repeat(70)}${']'.repeat(70)}`.replace(/^/, '{"deep":').concat('}'));
    db.close();
    expect(() => new SqliteStore(file)).toThrow(expect.objectContaining({ code: 'TESSERA_CANONICAL_JSON_INVALID' }));
    const raw = new Database(file);
    try {
      expect(() => raw.prepare("UPDATE audit SET actor = 'mallory' WHERE id = 1").run()).toThrow(/append-only/);
      expect(raw.prepare<[], { n: number }>('SELECT COUNT(*) AS n FROM audit WHERE leaf_hash IS NOT NULL').get()!.n).toBe(0);
      expect(raw.prepare<[], { n: number }>("SELECT COUNT(*) AS n FROM meta WHERE key = 'audit_frontier'").get()!.n).toBe(0);
    } finally {
      raw.close();
    }
  });
});

describe('SqliteStore: property', () => {
  it('after any sequence of batches the stored root is rootOf the records as read back, across a reopen', async () => {
    const record = fc.record({
      ts: fc.integer({ min: 0, max: 8.64e15 }),
      actor: fc.string({ maxLength: 20 }),
      action: fc.constantFrom('svid.join', 'decision', 'audit.read'),
      target: fc.string({ maxLength: 20 }),
      outcome: fc.constantFrom('denied' as const, 'success' as const),
      code: fc.constantFrom('OK', 'ALLOW', 'TESSERA_FORBIDDEN'),
      detail: fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 3 })),
      principal: fc.option(fc.string({ maxLength: 10 }), { nil: undefined }),
    });
    await fc.assert(fc.asyncProperty(fc.array(fc.array(record, { minLength: 1, maxLength: 12 }), { maxLength: 6 }), async (batches) => {
      const file = tmpFile();
      let store = open(file);
      for (const [i, batch] of batches.entries()) {
        await store.appendAudit(batch);
        if (i === 2) {
          await store.close();
          store = open(file);
        }
      }
      const all = await store.listAudit({ limit: 10_000 });
      expect(all).toHaveLength(batches.flat().length);
      expect((await store.auditTreeHead()).rootHash.equals(rootOf(recomputed(all)))).toBe(true);
    }), { numRuns: 25 });
  });
});

describe('SqliteStore: the append path', () => {
  const rec = (i: number, detail: Record<string, unknown> = { i, z: 'last', a: { y: 1, x: [i] } }) => ({
    ts: 1_767_225_600_000 + i, actor: `spiffe://t.test/w/${i % 3}`, action: 'decision', target: 't', outcome: 'success' as const, code: 'ALLOW', detail,
  });

  it('two stores appending to one file in turn (--workers) keep one tree: the frontier is re-read when another wrote it', async () => {
    const file = tmpFile();
    const a = open(file);
    const b = open(file);
    for (let i = 0; i < 40; i++) await (i % 3 === 0 ? b : a).appendAudit(Array.from({ length: 1 + (i % 5) }, (_, k) => rec(i * 10 + k)));
    const all = await a.listAudit({ limit: 10_000 });
    expect(all.map((r) => r.id)).toEqual(all.map((_, i) => i + 1));
    const root = rootOf(recomputed(all));
    expect((await a.auditTreeHead()).rootHash.equals(root)).toBe(true);
    expect((await b.auditTreeHead()).rootHash.equals(root)).toBe(true);
  });

  it('a batch that fails rolls back whole and the next one extends the tree from before it', async () => {
    const store = open(tmpFile());
    await store.appendAudit([rec(1), rec(2)]);
    let deep: unknown = 1;
    for (let i = 0; i < 100; i++) deep = [deep];
    await expect(store.appendAudit([rec(3), rec(4, { deep })])).rejects.toMatchObject({ code: 'TESSERA_CANONICAL_JSON_INVALID' });
    await store.appendAudit([rec(5)]);
    const all = await store.listAudit({ limit: 100 });
    expect(all.map((r) => [r.id, r.ts - 1_767_225_600_000])).toEqual([[1, 1], [2, 2], [3, 5]]);
    expect((await store.auditTreeHead()).rootHash.equals(rootOf(recomputed(all)))).toBe(true);
  });

  it('stores a plain detail as its canonical JSON, and one with undefined members as JSON.stringify writes it', async () => {
    const file = tmpFile();
    const store = open(file);
    await store.appendAudit([rec(1, { b: 1, a: { d: 2, c: 3 } }), rec(2, { b: undefined, a: 1 })]);
    await store.close();
    const raw = new Database(file, { readonly: true });
    try {
      expect(raw.prepare<[], { detail: string }>('SELECT detail FROM audit ORDER BY id').all().map((r) => r.detail)).toEqual(['{"a":{"c":3,"d":2},"b":1}', '{"a":1}']);
    } finally {
      raw.close();
    }
    const again = open(file);
    expect((await again.auditTreeHead()).rootHash.equals(rootOf(recomputed(await again.listAudit({ limit: 10 }))))).toBe(true);
  });
});
