/** The federation store contract (federation.contract.ts) on a real PostgreSQL (test/support/postgres.ts), wired as the server wires it. */
import { afterAll, beforeAll } from 'vitest';
import { startPostgres, type TestPostgres } from '../../../test/support/postgres.js';
import { federationStoreContract } from './federation.contract.js';
import { PostgresStore } from './postgres.js';
import { SUBSTORE_MIGRATIONS, postgresSubStores } from './substores-postgres.js';

let server: TestPostgres;
beforeAll(async () => { server = await startPostgres(); });
afterAll(async () => { await server?.stop(); });

federationStoreContract('PostgresStore', async () => {
  const url = await server.createDatabase();
  const open = (): Promise<PostgresStore> => PostgresStore.open(url, { migrations: SUBSTORE_MIGRATIONS, subStores: postgresSubStores });
  return { store: await open(), reopen: open };
});
