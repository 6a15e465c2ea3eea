/**
 * The PostgreSQL sub-stores (people, login, devices, gateways) as the core PostgreSQL store plugs
 * them in: their migrations, in the order they must run (after the core tables: devices read
 * `svid_serials` and write `revocations`), and the stores on one pool.
 */
import type { ClientBase, Pool } from 'pg';
import { DEVICE_MIGRATIONS, PostgresDeviceStore } from './devices.postgres.js';
import { GATEWAY_MIGRATIONS, PostgresGatewayStore } from './gateways.postgres.js';
import { LOGIN_MIGRATIONS, PostgresLoginStore } from './login-postgres.js';
import { PEOPLE_MIGRATIONS, PostgresPeopleStore } from './people-postgres.js';

/** Every sub-store DDL statement, in order (people before login: person certificates reference users). Idempotent. */
export const SUBSTORE_MIGRATIONS: readonly string[] = [...PEOPLE_MIGRATIONS, ...LOGIN_MIGRATIONS, ...DEVICE_MIGRATIONS, ...GATEWAY_MIGRATIONS];

/** Runs {@link SUBSTORE_MIGRATIONS} on `client` (the caller holds the transaction and the migration lock). */
export async function migrateSubStores(client: ClientBase): Promise<void> {
  for (const sql of SUBSTORE_MIGRATIONS) await client.query(sql);
}

export interface PostgresSubStores {
  people: PostgresPeopleStore;
  login: PostgresLoginStore;
  devices: PostgresDeviceStore;
  gateways: PostgresGatewayStore;
}

/** The four sub-stores on one pool (the tables must exist: {@link migrateSubStores}). */
export function postgresSubStores(pool: Pool): PostgresSubStores {
  return { people: new PostgresPeopleStore(pool), login: new PostgresLoginStore(pool), devices: new PostgresDeviceStore(pool), gateways: new PostgresGatewayStore(pool) };
}
