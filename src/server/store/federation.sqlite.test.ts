/** The federation store contract (federation.contract.ts) on SQLite. */
import { federationStoreContract } from './federation.contract.js';
import { sqliteTestFiles } from './test-files.js';

const { tmpFile, open } = sqliteTestFiles('federation');

federationStoreContract('SqliteStore', async () => {
  const file = tmpFile();
  return { store: open(file), reopen: async () => open(file) };
});
