/**
 * For the store's tests: SQLite files in fresh temporary directories, and the stores opened on them,
 * closed and removed after each test (registers an `afterEach` in the calling test file).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach } from 'vitest';
import { SqliteStore } from './sqlite.js';

export function sqliteTestFiles(prefix: string): { tmpFile(): string; open(file: string): SqliteStore } {
  const dirs: string[] = [];
  const stores: SqliteStore[] = [];
  afterEach(async () => {
    for (const s of stores.splice(0)) await s.close();
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  return {
    tmpFile(): string {
      const d = mkdtempSync(join(tmpdir(), `tessera-${prefix}-`));
      dirs.push(d);
      return join(d, 'tessera.db');
    },
    open(file: string): SqliteStore {
      const s = new SqliteStore(file);
      stores.push(s);
      return s;
    },
  };
}
