/**
 * PostgresStore beyond the shared contract (contract.ts): migrations (versioned, once, two replicas
 * opening a new database at once, a newer schema refused, sub-store migrations and factories plugged
 * in), two replicas appending to one audit tree, the append-only audit table, and the stand-ins for
 * sub-stores not ported yet. A real PostgreSQL (test/support/postgres.ts).
 */
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { queryDb, startPostgres, type TestPostgres } from '../../../test/support/postgres.js';
import { auditLeafData } from '../../core/audit-leaf.js';
import { leafHash, rootOf } from '../../core/merkle.js';
import { CORE_MIGRATIONS, PostgresStore, type PgMigration } from './postgres.js';
import type { GatewayStore } from './store.js';

let server: TestPostgres;
beforeAll(async () => { server = await startPostgres(); });
afterAll(async () => { await server?.stop(); });
const opened: PostgresStore[] = [];
afterEach(async () => { for (const s of opened.splice(0)) await s.close(); });

async function open(url: string, opts: Parameters<typeof PostgresStore.open>[1] = {}): Promise<PostgresStore> {
  const s = await PostgresStore.open(url, opts);
  opened.push(s);
  return s;
}


describe('PostgresStore: migrations', () => {
  it('apply once; reopening applies nothing; four replicas opening a new database at once migrate it once', async () => {
    const url = await server.createDatabase();
    await Promise.all(Array.from({ length: 4 }, () => open(url)));
    const rows = await queryDb<{ version: number; name: string }>(url, 'SELECT version, name FROM schema_migrations ORDER BY version');
    expect(rows).toEqual(CORE_MIGRATIONS.map((m) => ({ version: m.version, name: m.name })));
    const again = await open(url);
    await again.setMeta('x', 'y');
    expect(await queryDb(url, 'SELECT version FROM schema_migrations')).toHaveLength(CORE_MIGRATIONS.length);
  });

  it('sub-store migrations and factories plug in: their tables on the same pool', async () => {
    const url = await server.createDatabase();
    const extra: PgMigration = { version: 100, name: 'gateways (test)', sql: 'CREATE TABLE gw_test (name TEXT PRIMARY KEY)' };
    let poolSeen: pg.Pool | undefined;
    const gateways = { listGateways: async () => [{ name: 'from-factory' }] } as unknown as GatewayStore;
    const store = await open(url, { migrations: [extra], subStores: (pool) => { poolSeen = pool; return { gateways }; } });
    expect(poolSeen).toBe(store.pool);
    expect(await store.gateways.listGateways()).toEqual([{ name: 'from-factory' }]);
    expect((await queryDb<{ version: number }>(url, 'SELECT version FROM schema_migrations ORDER BY version')).map((r) => r.version)).toEqual([1, 2, 100]);
    await store.pool.query("INSERT INTO gw_test VALUES ('a')");
    // A release without that migration refuses the database (it belongs to a newer release).
    await expect(PostgresStore.open(url)).rejects.toMatchObject({ code: 'TESSERA_CONFIG_INVALID', message: expect.stringMatching(/100/) });
    // Two migrations with one version: a bug, refused before anything is applied.
    await expect(PostgresStore.open(await server.createDatabase(), { migrations: [{ ...extra, version: 1 }] })).rejects.toMatchObject({ code: 'TESSERA_INTERNAL' });
  });

  it('a failing migration rolls back whole: no table, no version recorded, the next open retries', async () => {
    const url = await server.createDatabase();
    const bad: PgMigration = { version: 101, name: 'bad', sql: 'CREATE TABLE half_done (x INT); SELECT no_such_function()' };
    await expect(PostgresStore.open(url, { migrations: [bad] })).rejects.toThrow(/no_such_function/);
    expect((await queryDb<{ r: string | null }>(url, "SELECT to_regclass('half_done') AS r"))[0]!.r).toBeNull();
    expect((await queryDb<{ r: string | null }>(url, "SELECT to_regclass('entries') AS r"))[0]!.r).toBeNull();
    await open(url, { migrations: [{ ...bad, sql: 'CREATE TABLE half_done (x INT)' }] });
    expect((await queryDb<{ version: number }>(url, 'SELECT version FROM schema_migrations ORDER BY version')).map((r) => r.version)).toEqual([1, 2, 101]);
  });
});

describe('PostgresStore: the audit log shared by replicas', () => {
  it('two stores (two replicas) appending concurrently keep one tree: ids 1..n, root over the rows', async () => {
    const url = await server.createDatabase();
    const [a, b] = [await open(url), await open(url)];
    const rec = (i: number) => ({ ts: i, actor: 'spiffe://t.test/x', action: 'test', target: `t${i}`, outcome: 'success' as const, code: 'OK', detail: { i } });
    await Promise.all(Array.from({ length: 30 }, (_, i) => (i % 2 ? a : b).appendAudit([rec(i), rec(1000 + i)])));
    const all = await a.listAudit({ limit: 1000 });
    expect(all.map((r) => r.id)).toEqual(Array.from({ length: 60 }, (_, i) => i + 1));
    const root = rootOf(all.map((r) => leafHash(auditLeafData(r))));
    expect((await a.auditTreeHead()).rootHash.equals(root)).toBe(true);
    expect((await b.auditTreeHead()).rootHash.equals(root)).toBe(true);
    expect((await b.auditLeafSource()).leafHashes(0, 60)).toHaveLength(60);
  });

  it('the audit table refuses updates, deletes and truncation', async () => {
    const url = await server.createDatabase();
    const s = await open(url);
    await s.appendAudit([{ ts: 1, actor: 'a', action: 'x', target: '', outcome: 'success', code: 'OK', detail: {} }]);
    for (const stmt of ["UPDATE audit SET actor = 'b'", 'DELETE FROM audit', 'TRUNCATE audit']) {
      await expect(s.pool.query(stmt)).rejects.toThrow(/append-only/);
    }
    expect(await s.listAudit({ limit: 10 })).toHaveLength(1);
  });

  it('refuses at open a table and frontier that disagree (TESSERA_AUDIT_STATE_INVALID)', async () => {
    const url = await server.createDatabase();
    const s = await open(url);
    await s.appendAudit([{ ts: 1, actor: 'a', action: 'x', target: '', outcome: 'success', code: 'OK', detail: {} }]);
    await s.setMeta('audit_frontier', JSON.stringify({ size: 0, hashes: [] }));
    await expect(PostgresStore.open(url)).rejects.toMatchObject({ code: 'TESSERA_AUDIT_STATE_INVALID' });
  });
});

describe('PostgresStore: sub-stores not ported yet', () => {
  it('read as empty and refuse every write with TESSERA_CONFIG_INVALID', async () => {
    const s = await open(await server.createDatabase());
    expect(await s.people.getUser('alice')).toBeUndefined();
    expect(await s.people.listUsers(10)).toEqual([]);
    expect(await s.login.liveUserCerts(0)).toEqual([]);
    expect(await s.devices.hasPendingDeviceToken('d', 0)).toBe(false);
    expect(await s.gateways.gatewayBySpiffeId('spiffe://t.test/g')).toBeUndefined();
    expect(await s.people.countLiveTickets(['x'], 0)).toBe(0);
    await expect(s.gateways.insertGateway({ name: 'g', spiffeId: 's', urls: [], createdAt: 0, createdBy: 'x' })).rejects.toMatchObject({
      code: 'TESSERA_CONFIG_INVALID', message: expect.stringMatching(/gateways/),
    });
    await expect(s.devices.consumeDeviceToken('h', 0)).rejects.toMatchObject({ code: 'TESSERA_CONFIG_INVALID' });
    await expect(s.people.insertUser({} as never)).rejects.toMatchObject({ code: 'TESSERA_CONFIG_INVALID' });
  });
});
