import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PW_PASSWORD, PW_ROLE, startPostgres, type TestPostgres } from './support/postgres.js';

describe('test PostgreSQL (test/support/postgres.ts)', () => {
  let server: TestPostgres;
  beforeAll(async () => { server = await startPostgres(); });
  afterAll(async () => { await server?.stop(); });

  it('serves separate databases on 127.0.0.1, trust for its own role only', async () => {
    const a = await server.createDatabase();
    const b = await server.createDatabase();
    expect(a).not.toBe(b);
    expect(new URL(a).hostname).toBe('127.0.0.1');
    const c = new pg.Client({ connectionString: a });
    await c.connect();
    await c.query('CREATE TABLE t (x INT)');
    expect((await c.query<{ db: string }>('SELECT current_database() AS db')).rows[0]!.db).toBe(new URL(a).pathname.slice(1));
    await c.end();
    const d = new pg.Client({ connectionString: b });
    await d.connect();
    expect((await d.query("SELECT to_regclass('t') AS r")).rows[0].r).toBeNull();
    await d.end();
    // The password role: refused without the right password, accepted with it.
    const port = new URL(a).port;
    const wrong = new pg.Client({ connectionString: `postgres://${PW_ROLE}:nope@127.0.0.1:${port}/postgres` });
    await expect(wrong.connect()).rejects.toThrow(/password authentication failed/);
    await wrong.end().catch(() => undefined);
    const right = new pg.Client({ connectionString: `postgres://${PW_ROLE}:${PW_PASSWORD}@127.0.0.1:${port}/postgres` });
    await right.connect();
    await right.end();
  });

  it('stop() ends the server: connections are refused afterwards', async () => {
    const other = await startPostgres();
    await other.stop();
    const c = new pg.Client({ connectionString: other.url, connectionTimeoutMillis: 2000 });
    await expect(c.connect()).rejects.toThrow(/ECONNREFUSED/);
  });
});
