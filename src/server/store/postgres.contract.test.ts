/** The core Store contract (contract.ts) on a real PostgreSQL (test/support/postgres.ts): a database per case. */
import { afterAll, beforeAll } from 'vitest';
import { startPostgres, type TestPostgres } from '../../../test/support/postgres.js';
import { storeContract } from './contract.js';
import { PostgresStore } from './postgres.js';

let pg: TestPostgres;
beforeAll(async () => { pg = await startPostgres(); });
afterAll(async () => { await pg?.stop(); });

storeContract('PostgreSQL', async () => {
  const url = await pg.createDatabase();
  return { store: await PostgresStore.open(url), reopen: () => PostgresStore.open(url) };
});
