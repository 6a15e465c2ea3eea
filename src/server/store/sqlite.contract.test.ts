/** The core Store contract (contract.ts) on SQLite files. */
import { sqliteTestFiles } from './test-files.js';
import { storeContract } from './contract.js';

const { tmpFile, open } = sqliteTestFiles('contract');

storeContract('SQLite', async () => {
  const file = tmpFile();
  return { store: open(file), reopen: async () => open(file) };
});
