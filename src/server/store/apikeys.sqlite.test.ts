/**
 * SqliteStore's API keys and the entry's API key bound: the migration of a database from before
 * them (ADDED_COLUMNS), listing, and revocation that keeps the key and its first reason.
 */
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { SqliteStore } from './sqlite.js';
import { sqliteTestFiles } from './test-files.js';

const T0 = Date.parse('2026-01-02T03:04:05.000Z');
const { tmpFile, open } = sqliteTestFiles('apikeys');

const key = (id: string, owner: string, createdAt: number) => ({ id, hash: 'ab'.repeat(32), owner, scopes: ['orders:read'], createdAt, expiresAt: createdAt + 3600_000 });

describe('SqliteStore: API keys', () => {
  it('migrates a database from before API key bounds and revocation: old rows get the 1-day bound and are not revoked', async () => {
    const file = tmpFile();
    const db = new Database(file);
    db.exec(`CREATE TABLE entries (id TEXT PRIMARY KEY, spiffe_id TEXT NOT NULL UNIQUE, selectors TEXT NOT NULL, attributes TEXT NOT NULL,
      x509_ttl INTEGER NOT NULL, jwt_ttl INTEGER NOT NULL, created_at INTEGER NOT NULL);
      CREATE TABLE api_keys (id TEXT PRIMARY KEY, hash TEXT NOT NULL, owner TEXT NOT NULL, scopes TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL);`);
    db.prepare('INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)').run('e1', 'spiffe://td/a', '[]', '{}', 3600, 300, T0);
    db.prepare('INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?)').run('0123456789abcdef', 'ab'.repeat(32), 'spiffe://td/a', '["x"]', T0, T0 + 1000);
    db.close();
    const store = open(file);
    expect((await store.getEntry('e1'))?.apikeyMaxTtlSeconds).toBe(86400);
    expect(await store.getApiKey('0123456789abcdef')).toMatchObject({ owner: 'spiffe://td/a', scopes: ['x'], revokedAt: null, revokedReason: null });
    // New rows on the migrated database.
    await store.insertEntry({ id: 'e2', spiffeId: 'spiffe://td/b', selectors: [], attributes: {}, x509TtlSeconds: 60, jwtTtlSeconds: 60, apikeyMaxTtlSeconds: 600, createdAt: T0 });
    expect((await store.getEntry('e2'))?.apikeyMaxTtlSeconds).toBe(600);
  });

  it('lists newest first, by owner, within the limit', async () => {
    const store = open(tmpFile());
    await store.insertApiKey(key('000000000000000a', 'spiffe://td/a', T0));
    await store.insertApiKey(key('000000000000000b', 'spiffe://td/b', T0 + 1));
    await store.insertApiKey(key('000000000000000c', 'spiffe://td/a', T0 + 2));
    expect((await store.listApiKeys({ limit: 10 })).map((k) => k.id)).toEqual(['000000000000000c', '000000000000000b', '000000000000000a']);
    expect((await store.listApiKeys({ owner: 'spiffe://td/a', limit: 10 })).map((k) => k.id)).toEqual(['000000000000000c', '000000000000000a']);
    expect((await store.listApiKeys({ limit: 1 })).map((k) => k.id)).toEqual(['000000000000000c']);
    expect(await store.listApiKeys({ owner: 'spiffe://td/nobody', limit: 10 })).toEqual([]);
  });

  it('revokes once: the key stays, with the first time and reason; an unknown key is undefined', async () => {
    const store = open(tmpFile());
    await store.insertApiKey(key('000000000000000a', 'spiffe://td/a', T0));
    expect(await store.revokeApiKey('000000000000000a', T0 + 5, 'leaked')).toMatchObject({ id: '000000000000000a', revokedAt: T0 + 5, revokedReason: 'leaked' });
    expect(await store.revokeApiKey('000000000000000a', T0 + 9, 'again')).toMatchObject({ revokedAt: T0 + 5, revokedReason: 'leaked' });
    expect(await store.getApiKey('000000000000000a')).toMatchObject({ revokedAt: T0 + 5, revokedReason: 'leaked', scopes: ['orders:read'] });
    expect(await store.revokeApiKey('ffffffffffffffff', T0, 'x')).toBeUndefined();
  });
});
