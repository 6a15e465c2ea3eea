/**
 * SqliteStore's secret-policy rows: the migration of a database created before share generations
 * and retirement (ADDED_COLUMNS), and the compare-and-set semantics of
 * replaceSecretPolicyGeneration / retireSecretPolicy on it and on a fresh database.
 */
import { statSync } from 'node:fs';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { SqliteStore } from './sqlite.js';
import { sqliteTestFiles } from './test-files.js';

const OLD_SCHEMA = 'CREATE TABLE secret_policies (id TEXT NOT NULL, epoch INTEGER NOT NULL, signed TEXT NOT NULL, created_at INTEGER NOT NULL, PRIMARY KEY (id, epoch))';
const CREATED = Date.parse('2024-05-06T07:08:09.000Z');

const { tmpFile, open } = sqliteTestFiles('sqlite');

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

describe('entries: revocation and issued serials', () => {
  const OLD_ENTRIES = `CREATE TABLE entries (
    id TEXT PRIMARY KEY, spiffe_id TEXT NOT NULL UNIQUE, selectors TEXT NOT NULL, attributes TEXT NOT NULL,
    x509_ttl INTEGER NOT NULL, jwt_ttl INTEGER NOT NULL, created_at INTEGER NOT NULL)`;
  const HOUR = 3600_000;

  it('migrates an entries table created before revocation, then revokes, lists and prunes', async () => {
    const file = tmpFile();
    const db = new Database(file);
    db.exec(OLD_ENTRIES);
    db.prepare('INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)').run('e1', 'spiffe://td/a', '[]', '{}', 3600, 300, CREATED);
    db.prepare('INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)').run('e2', 'spiffe://td/b', '[]', '{}', 3600, 300, CREATED);
    db.close();
    const s = open(file);
    const a = await s.getEntry('e1');
    expect(a).toMatchObject({ id: 'e1', spiffeId: 'spiffe://td/a' });
    expect(a!.revokedAt).toBeUndefined();
    const now = Date.now();
    await s.recordIssuedSvid({ serial: 'A1', entryId: 'e1', spiffeId: 'spiffe://td/a', notAfter: now + HOUR, issuedAt: now });
    await s.recordIssuedSvid({ serial: 'A2', entryId: 'e1', spiffeId: 'spiffe://td/a', notAfter: now - 2 * HOUR, issuedAt: now - 3 * HOUR });
    await s.recordIssuedSvid({ serial: 'B1', entryId: 'e2', spiffeId: 'spiffe://td/b', notAfter: now + 2 * HOUR, issuedAt: now });
    expect(await s.isSerialRevoked('A1')).toBe(false);

    expect(await s.revokeEntry('e1', now, 'leaked')).toMatchObject({ ok: true, entry: { revokedAt: now, revokedReason: 'leaked' } });
    expect(await s.revokeEntry('e1', now + 1, 'again')).toMatchObject({ ok: false, reason: 'already' });
    expect(await s.revokeEntry('nope', now, 'x')).toEqual({ ok: false, reason: 'missing' });
    expect(await s.deleteEntry('e2', now + 5)).toBe(true);
    expect(await s.deleteEntry('e2', now + 6)).toBe(false);
    expect(await s.isSerialRevoked('A1')).toBe(true);
    expect(await s.isSerialRevoked('B1')).toBe(true);

    // Only unexpired serials are listed; newest revocation first.
    expect(await s.listRevocations(now, HOUR)).toEqual([
      { entryId: 'e2', spiffeId: 'spiffe://td/b', revokedAt: now + 5, reason: 'entry deleted', deleted: true, serials: [{ serial: 'B1', notAfter: now + 2 * HOUR }] },
      { entryId: 'e1', spiffeId: 'spiffe://td/a', revokedAt: now, reason: 'leaked', deleted: false, serials: [{ serial: 'A1', notAfter: now + HOUR }] },
    ]);
    // Survives a reopen.
    await s.close();
    const again = open(file);
    expect((await again.getEntry('e1'))!.revokedReason).toBe('leaked');
    // A day later: the deleted entry (all serials expired for longer than the grace) is forgotten;
    // the revoked entry, still present, stays listed (without serials).
    expect(await again.listRevocations(now + 24 * HOUR, HOUR)).toEqual([
      { entryId: 'e1', spiffeId: 'spiffe://td/a', revokedAt: now, reason: 'leaked', deleted: false, serials: [] },
    ]);
  });
});
