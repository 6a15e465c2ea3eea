/**
 * The sub-store contract (substores.contract.ts) on a real PostgreSQL (test/support/postgres.ts),
 * wired as the server wires it: `PostgresStore.open(url, { migrations: SUBSTORE_MIGRATIONS,
 * subStores: postgresSubStores })`. Each case gets a database whose default collation is ICU's
 * en-US (linguistic: 'alice' before 'Bob'), so the bytewise order SQLite gives is checked to come
 * from the tables' own "C" collation, not from the database's locale.
 */
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startPostgres, type TestPostgres } from '../../../test/support/postgres.js';
import { PostgresStore } from './postgres.js';
import { subStoreContract } from './substores.contract.js';
import { SUBSTORE_MIGRATIONS, postgresSubStores } from './substores-postgres.js';

let server: TestPostgres;
let n = 0;
const stores: PostgresStore[] = [];
beforeAll(async () => { server = await startPostgres(); });
afterEach(async () => { for (const s of stores.splice(0)) await s.close(); });
afterAll(async () => { await server?.stop(); });

/** A new database with a linguistic default collation; returns its URL. */
async function icuDatabase(): Promise<string> {
  const name = `subs_icu_${process.pid}_${++n}`;
  const admin = new pg.Client({ connectionString: server.url });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'`);
  } finally {
    await admin.end();
  }
  return server.url.replace(/\/postgres$/, `/${name}`);
}

async function open(url: string): Promise<PostgresStore> {
  const store = await PostgresStore.open(url, { migrations: SUBSTORE_MIGRATIONS, subStores: postgresSubStores });
  stores.push(store);
  return store;
}

subStoreContract('PostgreSQL sub-stores', async () => {
  const store = await open(await icuDatabase());
  return { people: store.people, login: store.login, devices: store.devices, gateways: store.gateways, core: store };
});

describe('PostgreSQL sub-stores: migrations', () => {
  it('the database collates linguistically (so the ordering cases above can fail)', async () => {
    const store = await open(await icuDatabase());
    const { rows } = await store.pool.query<{ w: string }>(`SELECT w FROM (VALUES ('alice'), ('Bob')) v(w) ORDER BY w`);
    expect(rows.map((r) => r.w)).toEqual(['alice', 'Bob']);
  });

  it('applies 100-103 once; a second opening (another replica) finds them applied and keeps the data', async () => {
    const url = await icuDatabase();
    const first = await open(url);
    const { rows } = await first.pool.query<{ version: number }>('SELECT version FROM schema_migrations WHERE version >= 100 ORDER BY version');
    expect(rows.map((r) => Number(r.version))).toEqual([100, 101, 102, 103, 110, 120]);
    // 120: the change log also records person certificates and federation (what replicas cache).
    const triggers = await first.pool.query<{ tgname: string }>("SELECT tgname FROM pg_trigger WHERE tgname IN ('user_certs_changes', 'federation_changes') ORDER BY tgname");
    expect(triggers.rows.map((r) => r.tgname)).toEqual(['federation_changes', 'user_certs_changes']);
    const before = await first.lastChange();
    await first.pool.query('UPDATE federation_revision SET revision = revision + 1');
    expect(await first.lastChange()).toBeGreaterThan(before);
    expect(await first.gateways.insertGateway({ name: 'web', spiffeId: 'spiffe://td/gateway/web', urls: [], createdAt: 1, createdBy: 'a' })).toBe(true);
    const [second, third] = await Promise.all([open(url), open(url)]);
    expect((await second.gateways.listGateways()).map((g) => g.name)).toEqual(['web']);
    expect(await third.gateways.takeGatewayCode('none')).toBeUndefined();
    // The DDL itself is idempotent too (IF NOT EXISTS), should a runner replay it.
    for (const m of SUBSTORE_MIGRATIONS) await first.pool.query(m.sql);
  });

  it('two replicas (two pools) spend a ticket, a device token, a gateway code and a TOTP step once between them', async () => {
    const url = await icuDatabase();
    const [a, b] = [await open(url), await open(url)];
    await a.people.insertTicket({ hash: 't', kind: 'enrol', username: null, data: '{}', createdAt: 0, expiresAt: 10 }, 0);
    await a.devices.insertDeviceToken({ hash: 'd', deviceId: 'lap', owner: null, attributes: {}, certTtlSeconds: 60, createdAt: 0, expiresAt: 10 });
    const tickets = await Promise.all([a.people.consumeTicket('t', 'enrol', 1), b.people.consumeTicket('t', 'enrol', 1)]);
    expect(tickets.filter((t) => t !== undefined)).toHaveLength(1);
    const tokens = await Promise.all([a.devices.consumeDeviceToken('d', 1), b.devices.consumeDeviceToken('d', 1)]);
    expect(tokens.map((t) => t.ok).sort()).toEqual([false, true]);
    await a.gateways.insertGatewayCode({ hash: 'c', gateway: 'web', sessionHash: 's', redirectUri: 'https://web/_tessera/callback', challenge: 'x', expiresAt: 10 }, 0);
    const codes = await Promise.all([a.gateways.takeGatewayCode('c'), b.gateways.takeGatewayCode('c')]);
    expect(codes.filter((c) => c !== undefined)).toHaveLength(1);
    await a.people.insertUser({
      username: 'ana', spiffeId: 'spiffe://td/user/ana', source: 'local', oidcIssuer: null, oidcSubject: null, email: null, displayName: null, groups: [],
      state: 'active', webauthnId: 'w', createdAt: 0, createdBy: 'admin', updatedAt: 0, disabledReason: null,
    });
    await a.people.replaceCredentials('ana', [{
      id: 'totp:ana', username: 'ana', kind: 'totp', createdAt: 0, publicKey: null, counter: 0, transports: [], secretSealed: Buffer.alloc(8), lastStep: -1, lastUsedAt: null,
    }]);
    const steps = await Promise.all([a.people.advanceTotpStep('totp:ana', 5, 1), b.people.advanceTotpStep('totp:ana', 5, 1)]);
    expect(steps.sort()).toEqual([false, true]);
  });
});
