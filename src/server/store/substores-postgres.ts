/**
 * The PostgreSQL sub-stores (people, login, devices, gateways) as the core PostgreSQL store plugs
 * them in: `PostgresStore.open(url, { migrations: SUBSTORE_MIGRATIONS, subStores: postgresSubStores })`.
 */
import type { Pool } from 'pg';
import { DEVICE_MIGRATIONS, PostgresDeviceStore } from './devices.postgres.js';
import { GATEWAY_MIGRATIONS, PostgresGatewayStore } from './gateways.postgres.js';
import { FEDERATION_MIGRATIONS, PostgresFederationStore } from './federation.postgres.js';
import { LOGIN_MIGRATIONS, PostgresLoginStore } from './login-postgres.js';
import { PEOPLE_MIGRATIONS, PostgresPeopleStore } from './people-postgres.js';

/**
 * The sub-stores' schema as versioned migrations (versions 100 and up: the core store's are below),
 * run by the core store's migration runner after its own: devices read its `svid_serials` and write
 * its `revocations`; login's person certificates reference people's users.
 */
export const SUBSTORE_MIGRATIONS: readonly { version: number; name: string; sql: string }[] = [
  { version: 100, name: 'people: users, groups, credentials, sessions, tickets', sql: PEOPLE_MIGRATIONS.join(';\n') },
  { version: 101, name: 'login: requests, person certificates', sql: LOGIN_MIGRATIONS.join(';\n') },
  { version: 102, name: 'devices: enrolment tokens, devices, posture reports', sql: DEVICE_MIGRATIONS.join(';\n') },
  { version: 103, name: 'gateways: gateways, one-time codes', sql: GATEWAY_MIGRATIONS.join(';\n') },
  { version: 110, name: 'federation: relationships, federated bundles, revision', sql: FEDERATION_MIGRATIONS.join(';\n') },
  // The change log (core migration 2) also records what replicas cache from the sub-stores.
  { version: 120, name: 'change log: person certificates, federation', sql: `
DROP TRIGGER IF EXISTS user_certs_changes ON user_certs;
CREATE TRIGGER user_certs_changes AFTER INSERT OR UPDATE OR DELETE ON user_certs FOR EACH STATEMENT EXECUTE FUNCTION tessera_log_change('user_certs');
DROP TRIGGER IF EXISTS federation_changes ON federation_revision;
CREATE TRIGGER federation_changes AFTER INSERT OR UPDATE OR DELETE ON federation_revision FOR EACH STATEMENT EXECUTE FUNCTION tessera_log_change('federation');` },
];

/** The four sub-stores on one pool (their tables migrated: {@link SUBSTORE_MIGRATIONS}). */
export function postgresSubStores(pool: Pool): { people: PostgresPeopleStore; login: PostgresLoginStore; devices: PostgresDeviceStore; gateways: PostgresGatewayStore; federation: PostgresFederationStore } {
  return { people: new PostgresPeopleStore(pool), login: new PostgresLoginStore(pool), devices: new PostgresDeviceStore(pool), gateways: new PostgresGatewayStore(pool), federation: new PostgresFederationStore(pool) };
}
