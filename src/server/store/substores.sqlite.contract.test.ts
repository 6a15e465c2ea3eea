/**
 * The sub-store contract (substores.contract.ts) on SQLite: the SqliteStore's people, login,
 * devices and gateways on a fresh temporary file per case.
 */
import { subStoreContract } from './substores.contract.js';
import { sqliteTestFiles } from './test-files.js';

const { tmpFile, open } = sqliteTestFiles('substores');

subStoreContract('SQLite sub-stores', async () => {
  const store = open(tmpFile());
  return { people: store.people, login: store.login, devices: store.devices, gateways: store.gateways, core: store };
});
