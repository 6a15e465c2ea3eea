/**
 * SqliteStore's secret-policy rows: the migration of a database created before share generations
 * and retirement (ADDED_COLUMNS), and the compare-and-set semantics of
 * replaceSecretPolicyGeneration / retireSecretPolicy on it and on a fresh database.
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { SqliteStore } from './sqlite.js';

const OLD_SCHEMA = 'CREATE TABLE secret_policies (id TEXT NOT NULL, epoch INTEGER NOT NULL, signed TEXT NOT NULL, created_at INTEGER NOT NULL, PRIMARY KEY (id, epoch))';
const CREATED = Date.parse('2024-05-06T07:08:09.000Z');

const dirs: string[] = [];
const stores: SqliteStore[] = [];
afterEach(async () => {
  for (const s of stores.splice(0)) await s.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function tmpFile(): string {
  const d = mkdtempSync(join(tmpdir(), 'tessera-sqlite-'));
  dirs.push(d);
  return join(d, 'tessera.db');
}

function open(file: string): SqliteStore {
  const s = new SqliteStore(file);
  stores.push(s);
  return s;
}

/** A database file as written before generations: the old secret_policies table and two rows. */
function oldDatabase(): string {
  const file = tmpFile();
  const db = new Database(file);
  db.exec(OLD_SCHEMA);
  const insert = db.prepare('INSERT INTO secret_policies VALUES (?, ?, ?, ?)');
  insert.run('shop.db', 1, '{"old":1}', CREATED);
  insert.run('shop.db', 2, '{"old":2}', CREATED + 1000);
  db.close();
  return file;
}

function columns(file: string): string[] {
  const db = new Database(file, { readonly: true });
  try {
    return db.prepare<[], { name: string }>('PRAGMA table_info(secret_policies)').all().map((r) => r.name);
  } finally {
    db.close();
  }
}

describe('SqliteStore: secret policies on a database from before share generations', () => {
  it('adds generation and retired_at; old rows read back as generation 1, not retired', async () => {
    const file = oldDatabase();
    expect(columns(file)).toEqual(['id', 'epoch', 'signed', 'created_at']);
    const store = open(file);
    expect(columns(file)).toEqual(['id', 'epoch', 'signed', 'created_at', 'generation', 'retired_at']);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(await store.getSecretPolicy('shop.db', 1)).toEqual({ id: 'shop.db', epoch: 1, generation: 1, signed: '{"old":1}', createdAt: CREATED, retiredAt: null });
    // Without an epoch: the newest one not retired.
    expect(await store.getSecretPolicy('shop.db')).toEqual({ id: 'shop.db', epoch: 2, generation: 1, signed: '{"old":2}', createdAt: CREATED + 1000, retiredAt: null });
    expect(await store.getSecretPolicy('shop.db', 3)).toBeUndefined();
    expect(await store.getSecretPolicy('other')).toBeUndefined();
    expect((await store.listSecretPolicies()).map((r) => [r.id, r.epoch, r.generation, r.retiredAt])).toEqual([['shop.db', 1, 1, null], ['shop.db', 2, 1, null]]);
  });

  it('replaceSecretPolicyGeneration is a compare-and-set on the stored generation', async () => {
    const store = open(oldDatabase());
    // The wrong fromGeneration changes nothing.
    expect(await store.replaceSecretPolicyGeneration('shop.db', 1, 2, 3, '{"new":3}')).toBe(false);
    expect(await store.replaceSecretPolicyGeneration('shop.db', 1, 0, 1, '{"new":1}')).toBe(false);
    expect(await store.getSecretPolicy('shop.db', 1)).toMatchObject({ generation: 1, signed: '{"old":1}' });
    // The right one moves it, exactly once.
    expect(await store.replaceSecretPolicyGeneration('shop.db', 1, 1, 2, '{"new":2}')).toBe(true);
    expect(await store.replaceSecretPolicyGeneration('shop.db', 1, 1, 2, '{"other":2}')).toBe(false);
    expect(await store.getSecretPolicy('shop.db', 1)).toEqual({ id: 'shop.db', epoch: 1, generation: 2, signed: '{"new":2}', createdAt: CREATED, retiredAt: null });
    // Only that (id, epoch) changed.
    expect(await store.getSecretPolicy('shop.db', 2)).toMatchObject({ generation: 1, signed: '{"old":2}' });
    // Unknown rows: false, nothing created.
    expect(await store.replaceSecretPolicyGeneration('shop.db', 9, 1, 2, '{}')).toBe(false);
    expect(await store.replaceSecretPolicyGeneration('nope', 1, 1, 2, '{}')).toBe(false);
    expect(await store.listSecretPolicies()).toHaveLength(2);
  });

  it('retireSecretPolicy marks a row once; a retired row is no longer the latest and cannot be refreshed', async () => {
    const store = open(oldDatabase());
    expect(await store.retireSecretPolicy('shop.db', 2, CREATED + 5000)).toBe(true);
    expect(await store.retireSecretPolicy('shop.db', 2, CREATED + 9000)).toBe(false);
    expect(await store.getSecretPolicy('shop.db', 2)).toMatchObject({ generation: 1, retiredAt: CREATED + 5000 });
    expect(await store.getSecretPolicy('shop.db')).toMatchObject({ epoch: 1 });
    expect(await store.replaceSecretPolicyGeneration('shop.db', 2, 1, 2, '{"late":2}')).toBe(false);
    expect(await store.getSecretPolicy('shop.db', 2)).toMatchObject({ generation: 1, signed: '{"old":2}' });
    expect(await store.retireSecretPolicy('shop.db', 9, CREATED)).toBe(false);
    expect(await store.retireSecretPolicy('nope', 1, CREATED)).toBe(false);
    expect(await store.retireSecretPolicy('shop.db', 1, CREATED + 6000)).toBe(true);
    expect(await store.getSecretPolicy('shop.db')).toBeUndefined();
    expect((await store.listSecretPolicies()).map((r) => [r.epoch, r.retiredAt])).toEqual([[1, CREATED + 6000], [2, CREATED + 5000]]);
  });

  it('the migration runs once: reopening keeps the rows, their generations and retirements', async () => {
    const file = oldDatabase();
    const first = open(file);
    expect(await first.replaceSecretPolicyGeneration('shop.db', 1, 1, 2, '{"new":2}')).toBe(true);
    expect(await first.retireSecretPolicy('shop.db', 2, CREATED + 7000)).toBe(true);
    await first.close();
    const again = open(file);
    expect(columns(file)).toEqual(['id', 'epoch', 'signed', 'created_at', 'generation', 'retired_at']);
    expect((await again.listSecretPolicies()).map((r) => [r.epoch, r.generation, r.signed, r.retiredAt])).toEqual([[1, 2, '{"new":2}', null], [2, 1, '{"old":2}', CREATED + 7000]]);
    // New rows on a migrated database behave like on a fresh one.
    expect(await again.insertSecretPolicy({ id: 'shop.db', epoch: 3, generation: 1, signed: '{"e":3}', createdAt: CREATED + 8000, retiredAt: null })).toBe(true);
    expect(await again.insertSecretPolicy({ id: 'shop.db', epoch: 3, generation: 1, signed: '{"dup":3}', createdAt: CREATED + 9000, retiredAt: null })).toBe(false);
    expect(await again.getSecretPolicy('shop.db')).toEqual({ id: 'shop.db', epoch: 3, generation: 1, signed: '{"e":3}', createdAt: CREATED + 8000, retiredAt: null });
  });

  it('a fresh database has the same columns and semantics', async () => {
    const file = tmpFile();
    const store = open(file);
    expect(columns(file)).toEqual(['id', 'epoch', 'signed', 'created_at', 'generation', 'retired_at']);
    expect(await store.insertSecretPolicy({ id: 'a', epoch: 0, generation: 1, signed: '{}', createdAt: 1, retiredAt: null })).toBe(true);
    expect(await store.replaceSecretPolicyGeneration('a', 0, 1, 2, '{"g":2}')).toBe(true);
    expect(await store.replaceSecretPolicyGeneration('a', 0, 1, 2, '{"g":2}')).toBe(false);
    expect(await store.replaceSecretPolicyGeneration('a', 0, 2, 3, '{"g":3}')).toBe(true);
    expect(await store.getSecretPolicy('a', 0)).toMatchObject({ generation: 3, signed: '{"g":3}', retiredAt: null });
    expect(await store.retireSecretPolicy('a', 0, 42)).toBe(true);
    expect(await store.replaceSecretPolicyGeneration('a', 0, 3, 4, '{"g":4}')).toBe(false);
    expect(await store.getSecretPolicy('a', 0)).toMatchObject({ generation: 3, retiredAt: 42 });
  });
});
