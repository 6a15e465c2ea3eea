/**
 * Tamper tests of `tessera audit verify` on a real SQLite file: a control plane runs as a process,
 * records are made through the CLI, the process is stopped, and a copy of its database is edited with
 * better-sqlite3 the way an attacker holding the file would (dropping the append-only triggers first).
 * Then `tessera audit verify --db` (and, where the control plane still starts, the restarted control
 * plane and `tessera audit verify` over the API) must exit 1 naming the right record id or tree size;
 * the untouched log verifies, records with odd details included. The start-up check refuses a store
 * that does not extend its last signed checkpoint.
 */
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cutAuditLogBack } from '../demo/audit-tamper.js';
import { auditLeafData } from '../src/core/audit-leaf.js';
import { auditLogOrigin, signCheckpoint } from '../src/core/checkpoint.js';
import { MerkleFrontier, leafHash } from '../src/core/merkle.js';
import { encodeVerifierKey } from '../src/core/signed-note.js';
import { SqliteStore } from '../src/server/store/sqlite.js';
import { CLI, freePort, ServerProcess, waitFor } from './support/process.js';

interface Run { status: number | null; stdout: string; stderr: string; json: Record<string, any> }

const ORIGIN = auditLogOrigin('example.org');
let dir: string;
let server: ServerProcess;
/** The control plane's data directory after the run, untouched; each test tampers a copy. */
let pristineDir: string;
let savedFile: string;
let savedSize: number;
let logKey: string;
let size: number;

function tessera(args: string[], adminDir = server.adminDir): Run {
  const r = spawnSync(process.execPath, [CLI, ...args], { env: { ...process.env, TESSERA_ADMIN_DIR: adminDir }, encoding: 'utf8', timeout: 60_000 });
  let json: Record<string, unknown> = {};
  try { json = JSON.parse(r.stdout) as Record<string, unknown>; } catch { /* human output */ }
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, json };
}

let copies = 0;
/** A copy of the pristine data directory (database, KEK, admin credential) to tamper with. */
function copyData(): { dataDir: string; db: string } {
  const dataDir = join(dir, `copy-${++copies}`);
  cpSync(pristineDir, dataDir, { recursive: true });
  return { dataDir, db: join(dataDir, 'tessera.db') };
}

/** Edits the database as an attacker: triggers dropped, then `fn`. */
function tamper(db: string, fn: (d: Database.Database) => void): void {
  const d = new Database(db);
  try {
    d.exec('DROP TRIGGER IF EXISTS audit_no_update; DROP TRIGGER IF EXISTS audit_no_delete;');
    fn(d);
  } finally {
    d.close();
  }
}

/** Starts `tessera server` on a data directory that must be refused: its exit status and output. */
async function refusedStart(dataDir: string): Promise<{ status: number | null; output: string }> {
  const r = spawnSync(process.execPath, [CLI, 'server', '--data-dir', dataDir, '--listen', `127.0.0.1:${await freePort()}`], { encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, output: r.stdout + r.stderr };
}

function verifyDb(db: string, ...extra: string[]): Run {
  return tessera(['audit', 'verify', '--db', db, '--json', ...extra]);
}

interface Row { id: number; ts: number; actor: string; action: string; target: string; outcome: string; code: string; detail: string; principal: string | null }
const rowLeaf = (r: Row): Buffer => leafHash(auditLeafData({ ...r, outcome: r.outcome as 'success', detail: JSON.parse(r.detail) as Record<string, unknown> }));

/**
 * What a thorough attacker does after changing rows: recompute every leaf hash, the frontier and the
 * subtrees, and re-sign every checkpoint with `key` (the log key is sealed by the KEK: they use their own).
 */
function rebuild(d: Database.Database, key: KeyObject): void {
  const rows = d.prepare<[], Row>('SELECT id, ts, actor, action, target, outcome, code, detail, principal FROM audit ORDER BY id').all();
  const f = new MerkleFrontier();
  const roots = [f.root()];
  const set = d.prepare('UPDATE audit SET leaf_hash = ? WHERE id = ?');
  for (const r of rows) {
    const h = rowLeaf(r);
    set.run(h, r.id);
    f.append(h);
    roots.push(f.root());
  }
  d.prepare("UPDATE meta SET value = ? WHERE key = 'audit_frontier'").run(JSON.stringify(f.toJSON()));
  d.exec('DELETE FROM audit_subtrees');
  const sizes = d.prepare<[], { size: number }>('SELECT size FROM audit_checkpoints').all();
  const up = d.prepare('UPDATE audit_checkpoints SET root = ?, note = ? WHERE size = ?');
  for (const { size: s } of sizes) up.run(roots[s]!, signCheckpoint({ origin: ORIGIN, size: s, rootHash: roots[s]! }, key), s);
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tessera-verify-'));
  const dataDir = join(dir, 'server');
  server = new ServerProcess(dataDir, await freePort(), ['--trust-domain', 'example.org']);
  await server.start();
  for (const p of ['a', 'b', 'c', 'd']) expect(tessera(['entry', 'create', '--spiffe-id', `spiffe://example.org/shop/${p}`]).status).toBe(0);
  await server.stop(false);
  // Records with odd details, appended the way the control plane appends (leaf hash and frontier in
  // the same transaction): read back over the API, they must re-encode to exactly the bytes hashed.
  const store = new SqliteStore(join(dataDir, 'tessera.db'));
  await store.appendAudit([
    { ts: 1_700_000_000_001, actor: 'spiffe://example.org/ünï', action: 'test.odd', target: '☃ 𝄞', outcome: 'success', code: 'OK', detail: { s: 'é \u0000 \u2028 "\\ 𝄞', nested: { a: [1, { b: [null, true, false] }], '': 'empty key' } } },
    { ts: 1_700_000_000_002, actor: 'x', action: 'test.odd', target: '', outcome: 'denied', code: 'TESSERA_FORBIDDEN', detail: { n: [0, -1, 0.1, 1e21, 1e-7, 2 ** 53 - 1, 123456789.125, 5e-324] }, principal: 'spiffe://example.org/p' },
    { ts: 1_700_000_000_003, actor: 'x', action: 'test.odd', target: '', outcome: 'success', code: 'OK', detail: JSON.parse('{"__proto__": {"x": 1}, "deep": {"a": {"b": {"c": {"d": "e"}}}}}') as Record<string, unknown> },
  ]);
  const odd = (await store.auditTreeHead()).size;
  await store.close();
  await server.start();
  const cp = await waitFor('a checkpoint of the odd records', () => {
    const r = tessera(['audit', 'checkpoint', '--json']);
    return r.status === 0 && (r.json.checkpoint.size as number) >= odd ? r : undefined;
  }, 15_000);
  savedFile = join(dir, 'saved.json');
  writeFileSync(savedFile, cp.stdout);
  savedSize = cp.json.checkpoint.size as number;
  logKey = cp.json.log_key as string;
  await server.stop(false);
  pristineDir = join(dir, 'pristine');
  cpSync(dataDir, pristineDir, { recursive: true });
  const d = new Database(join(pristineDir, 'tessera.db'), { readonly: true });
  size = d.prepare<[], { n: number }>('SELECT COUNT(*) AS n FROM audit').get()!.n;
  d.close();
}, 120_000);

afterAll(async () => {
  await server?.stop(false);
  rmSync(dir, { recursive: true, force: true });
});

describe('tessera audit verify on an untouched log', () => {
  it('verifies over the API and offline, pinned by the saved checkpoint, odd details included', async () => {
    const { db } = copyData();
    const offline = verifyDb(db, '--from-checkpoint', savedFile);
    expect(offline.status).toBe(0);
    expect(offline.json).toMatchObject({ ok: true, records: size, pinned: true, from_checkpoint: { size: savedSize, extended: true }, problem_count: 0 });
    expect(offline.json.verified_size).toBeGreaterThanOrEqual(savedSize);
    const human = tessera(['audit', 'verify', '--db', db]);
    expect(human.status).toBe(0);
    expect(human.stdout).toContain(`audit log verified (${db}): ${size} records`);
    expect(human.stdout).toContain('NOT pinned');

    await server.start();
    try {
      const online = tessera(['audit', 'verify', '--json', '--log-key', logKey, '--from-checkpoint', savedFile]);
      expect(online.status).toBe(0);
      expect(online.json).toMatchObject({ ok: true, pinned: true, from_checkpoint: { extended: true } });
      expect(online.json.records).toBeGreaterThanOrEqual(savedSize);
      const checkpoints = await server.admin().call<{ checkpoints: { size: number }[] }>('GET', '/v1/audit/checkpoints?limit=2');
      expect(checkpoints.checkpoints.map((c) => c.size)).toEqual([...checkpoints.checkpoints.map((c) => c.size)].sort((a, b) => a - b));
      for (const q of ['limit=0', 'limit=1001', 'after_size=-1', 'after_size=x', 'limit=1.5']) {
        await expect(server.admin().call('GET', `/v1/audit/checkpoints?${q}`)).rejects.toMatchObject({ code: 'TESSERA_BAD_REQUEST' });
      }
      await expect(server.admin().call('GET', '/v1/audit?until=x')).rejects.toMatchObject({ code: 'TESSERA_BAD_REQUEST' });
    } finally {
      await server.stop(false);
    }
  });

  it('refuses bad arguments with stable codes', () => {
    const { db } = copyData();
    const missing = tessera(['audit', 'verify', '--db', join(dir, 'nope.db'), '--json']);
    expect([missing.status, missing.json.error?.code]).toEqual([2, 'TESSERA_CONFIG_INVALID']);
    const notDb = join(dir, 'not.db');
    writeFileSync(notDb, 'hello');
    expect(tessera(['audit', 'verify', '--db', notDb, '--json']).json.error?.code).toBe('TESSERA_CONFIG_INVALID');
    expect(verifyDb(db, '--log-key', 'nope').json.error?.code).toBe('TESSERA_CONFIG_INVALID');
    expect(verifyDb(db, '--from-checkpoint', join(dir, 'nope.json')).json.error?.code).toBe('TESSERA_CONFIG_INVALID');
  });
});

describe('tampering with the SQLite file', () => {
  it('an edited field names the record offline; over the API the first signed size after it', async () => {
    const { dataDir, db } = copyData();
    tamper(db, (d) => d.prepare("UPDATE audit SET actor = 'mallory' WHERE id = 3").run());
    const r = verifyDb(db);
    expect(r.status).toBe(1);
    expect(r.json.error.code).toBe('TESSERA_AUDIT_TAMPERED');
    expect(r.json.problems[0]).toMatchObject({ kind: 'edited', id: 3 });
    const human = tessera(['audit', 'verify', '--db', db]);
    expect(human.status).toBe(1);
    expect(human.stderr).toMatch(/edited: record 3 does not hash to its stored leaf.*\[TESSERA_AUDIT_TAMPERED\]/);

    // The stored hashes were left alone, so the control plane starts (its check is O(log n), it does
    // not rehash records); the full check over the API finds the root of the first checkpoint ≥ 3.
    const restarted = new ServerProcess(dataDir, await freePort());
    await restarted.start();
    try {
      const api = tessera(['audit', 'verify', '--json'], restarted.adminDir);
      expect(api.status).toBe(1);
      const first = api.json.problems[0];
      expect(first.kind).toBe('root');
      expect(first.size).toBeGreaterThanOrEqual(3);
      const d = new Database(db, { readonly: true });
      const expected = d.prepare<[], { size: number }>('SELECT MIN(size) AS size FROM audit_checkpoints WHERE size >= 3').get()!.size;
      d.close();
      expect(first.size).toBe(expected);
    } finally {
      await restarted.stop(false);
    }
  });

  it('a deleted record is named, and the control plane refuses to start on the file', async () => {
    const { dataDir, db } = copyData();
    tamper(db, (d) => d.prepare('DELETE FROM audit WHERE id = 4').run());
    const r = verifyDb(db);
    expect(r.status).toBe(1);
    expect(r.json.problems[0]).toMatchObject({ kind: 'missing', id: 4 });
    const refused = await refusedStart(dataDir);
    expect(refused.status).not.toBe(0);
    expect(refused.output).toContain('TESSERA_AUDIT_STATE_INVALID');
  });

  it('an inserted record beyond the frontier is named', () => {
    const { db } = copyData();
    tamper(db, (d) => {
      const row: Row = { id: size + 1, ts: Date.now(), actor: 'mallory', action: 'entry.delete', target: 'x', outcome: 'success', code: 'OK', detail: '{}', principal: null };
      d.prepare('INSERT INTO audit(id, ts, actor, action, target, outcome, code, detail, principal, leaf_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)')
        .run(row.id, row.ts, row.actor, row.action, row.target, row.outcome, row.code, row.detail, row.principal, rowLeaf(row));
    });
    const r = verifyDb(db);
    expect(r.status).toBe(1);
    expect(r.json.problems[0]).toMatchObject({ kind: 'extra', id: size + 1 });
  });

  it('two swapped records are both named, the first one first', () => {
    const { db } = copyData();
    tamper(db, (d) => {
      // Whole rows (leaf hash included) change places: each now sits at the other's id.
      d.exec(`UPDATE audit SET id = -1 WHERE id = 2; UPDATE audit SET id = 2 WHERE id = 5; UPDATE audit SET id = 5 WHERE id = -1;`);
    });
    const r = verifyDb(db);
    expect(r.status).toBe(1);
    expect(r.json.problems[0]).toMatchObject({ kind: 'edited', id: 2 });
    expect(r.json.problems.filter((p: { kind: string }) => p.kind === 'edited').map((p: { id: number }) => p.id)).toEqual([2, 5]);
  });

  it('a truncated tail is named; cut back consistently it needs the saved checkpoint, and the control plane starts on it', async () => {
    const keep = 3;
    const { db } = copyData();
    tamper(db, (d) => d.prepare('DELETE FROM audit WHERE id > ?').run(keep));
    const r = verifyDb(db);
    expect(r.status).toBe(1);
    expect(r.json.problems[0]).toMatchObject({ kind: 'truncated', id: keep + 1 });

    // Frontier, subtrees and checkpoints made to agree with the shorter log: nothing in the file
    // itself can tell (honest limit, README); the checkpoint saved earlier does.
    const { dataDir, db: consistent } = copyData();
    tamper(consistent, (d) => expect(cutAuditLogBack(d, keep)).toBe(size - keep));
    expect(verifyDb(consistent).status).toBe(0);
    const caught = verifyDb(consistent, '--from-checkpoint', savedFile);
    expect(caught.status).toBe(1);
    expect(caught.json.problems[0]).toMatchObject({ kind: 'truncated', id: keep + 1, size: savedSize });
    // The start-up check passes it (nothing stored is signed past the cut); over the API, the saved
    // checkpoint tells (before the restarted log, which grows by its own reads, regrows past it).
    const restarted = new ServerProcess(dataDir, await freePort());
    await restarted.start();
    try {
      const api = tessera(['audit', 'verify', '--json', '--from-checkpoint', savedFile], restarted.adminDir);
      expect(api.status).toBe(1);
      expect(api.json.problems[0]).toMatchObject({ kind: 'truncated', size: savedSize });
    } finally {
      await restarted.stop(false);
    }
  }, 60_000);

  it('a history rewritten and re-signed with another key passes unpinned, and is caught by the pinned key', async () => {
    const { dataDir, db } = copyData();
    const attacker = generateKeyPairSync('ed25519');
    tamper(db, (d) => {
      d.prepare("UPDATE audit SET actor = 'mallory' WHERE id = 2").run();
      rebuild(d, attacker.privateKey);
      d.prepare("UPDATE meta SET value = ? WHERE key = 'audit_log_verifier_key'").run(encodeVerifierKey(ORIGIN, attacker.publicKey));
    });
    const unpinned = verifyDb(db);
    expect(unpinned.status).toBe(0);
    expect(unpinned.json.pinned).toBe(false);
    const pinned = verifyDb(db, '--log-key', logKey);
    expect(pinned.status).toBe(1);
    expect(pinned.json.problems[0].kind).toBe('key');
    const d = new Database(db, { readonly: true });
    const smallest = d.prepare<[], { size: number }>('SELECT MIN(size) AS size FROM audit_checkpoints').get()!.size;
    d.close();
    const firstSize = pinned.json.problems.find((p: { size?: number }) => p.size !== undefined);
    expect(firstSize).toMatchObject({ kind: 'key', size: smallest });
    const saved = verifyDb(db, '--from-checkpoint', savedFile);
    expect(saved.status).toBe(1);
    expect(saved.json.problems[0].kind).toBe('key');
    // The control plane holds the real log key: it refuses to start on the re-signed file.
    const refused = await refusedStart(dataDir);
    expect(refused.status).not.toBe(0);
    expect(refused.output).toMatch(/does not verify with the log key.*\[TESSERA_AUDIT_STATE_INVALID\]/);
  });
});

describe('the start-up check', () => {
  it('refuses a store cut back below its last signed checkpoint, naming the size', async () => {
    const { dataDir, db } = copyData();
    let last = 0;
    tamper(db, (d) => {
      last = d.prepare<[], { size: number }>('SELECT MAX(size) AS size FROM audit_checkpoints').get()!.size;
      d.prepare('DELETE FROM audit WHERE id > ?').run(last - 2);
      const f = new MerkleFrontier();
      for (const x of d.prepare<[], { leaf_hash: Buffer }>('SELECT leaf_hash FROM audit ORDER BY id').all()) f.append(x.leaf_hash);
      d.prepare("UPDATE meta SET value = ? WHERE key = 'audit_frontier'").run(JSON.stringify(f.toJSON()));
    });
    const refused = await refusedStart(dataDir);
    expect(refused.status).not.toBe(0);
    expect(refused.output).toContain('TESSERA_AUDIT_STATE_INVALID');
    expect(refused.output).toContain(`last signed checkpoint (size ${last})`);
  });

  it('refuses stored leaf hashes rewritten below the checkpoint, and starts on an intact copy', async () => {
    const { dataDir, db } = copyData();
    tamper(db, (d) => d.prepare('UPDATE audit SET leaf_hash = ? WHERE id = 2').run(Buffer.alloc(32, 7)));
    const refused = await refusedStart(dataDir);
    expect(refused.status).not.toBe(0);
    expect(refused.output).toMatch(/not an extension of it.*\[TESSERA_AUDIT_STATE_INVALID\]/);

    const good = new ServerProcess(copyData().dataDir, await freePort());
    await good.start();
    await good.stop(false);
  });
});
