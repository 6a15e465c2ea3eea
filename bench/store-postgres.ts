/**
 * The PostgreSQL store (issue 14) against the SQLite store, same calls, same run:
 *
 *   npm run bench:store-postgres -- [--seconds S] [--json]
 *
 * Rows (each for SQLite, the baseline, and PostgreSQL; 1 caller, then 16 concurrent callers):
 * - getEntry: one primary-key read.
 * - consumeJoinToken: the single-use update (fresh tokens).
 * - appendAudit x100: one batch of 100 records with leaf hashes, subtrees and frontier, in one transaction.
 * The limit: PostgreSQL's `SELECT 1` round trip on the same pool (no store can beat one round trip
 * per call), and for appends the in-memory hashing (auditLeafHash + frontier) of 100 records.
 * The PostgreSQL server is a local one started for the run (test/support/postgres.ts: fsync off,
 * 127.0.0.1, so this measures the store's own cost and the round trips, not a disk).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { auditDetailJson, auditLeafHash } from '../src/core/audit-leaf.js';
import { MerkleFrontier } from '../src/core/merkle.js';
import { PostgresStore } from '../src/server/store/postgres.js';
import { SqliteStore } from '../src/server/store/sqlite.js';
import type { AuditRecord, Store } from '../src/server/store/store.js';
import { startPostgres } from '../test/support/postgres.js';
import { parseBenchArgs } from './args.js';

const args = parseBenchArgs(process.argv.slice(2), 'store-postgres', 2);

interface Row { name: string; sqlite?: number; postgres?: number; limit?: number }

/** Calls per second of `op` with `concurrency` callers for `seconds` (after a short warm-up). */
async function rate(seconds: number, concurrency: number, op: (i: number) => Promise<unknown>): Promise<number> {
  let i = 0;
  const warm = performance.now() + 200;
  while (performance.now() < warm) await op(i++);
  let done = 0;
  const end = performance.now() + seconds * 1000;
  const start = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (performance.now() < end) {
      await op(i++);
      done++;
    }
  }));
  return done / ((performance.now() - start) / 1000);
}

const record = (i: number): AuditRecord => ({
  ts: 1_700_000_000_000 + i, actor: 'spiffe://bench.test/enforcer/1', action: 'decision', target: 'spiffe://bench.test/api', outcome: i % 7 ? 'success' : 'denied',
  code: 'ALLOW', principal: `spiffe://bench.test/web/${i % 50}`, detail: { principal: `spiffe://bench.test/web/${i % 50}`, action: 'http:request', context: { path: `/items/${i}`, method: 'GET' }, reasons: ['policy0'] },
});

async function measure(store: Store, tag: string, rows: Map<string, Row>): Promise<void> {
  const set = (name: string, v: number): void => {
    const r = rows.get(name) ?? { name };
    (r as unknown as Record<string, number>)[tag] = v;
    rows.set(name, r);
  };
  await store.insertEntry({ id: 'e1', spiffeId: 'spiffe://bench.test/e1', selectors: [], attributes: {}, x509TtlSeconds: 3600, jwtTtlSeconds: 300, apikeyMaxTtlSeconds: 86_400, createdAt: 0 });
  let token = 0;
  const newToken = async (): Promise<string> => {
    const hash = `${tag}-${token++}`;
    await store.insertJoinToken({ hash, entryId: 'e1', createdAt: 0, expiresAt: Number.MAX_SAFE_INTEGER });
    return hash;
  };
  for (const c of [1, 16]) {
    set(`getEntry, ${c} caller(s)`, await rate(args.seconds, c, () => store.getEntry('e1')));
    // Tokens made ahead so that the rate is the consume alone.
    const tokens = await Promise.all(Array.from({ length: 20_000 }, () => newToken()));
    let k = 0;
    set(`consumeJoinToken, ${c} caller(s)`, await rate(args.seconds, c, async () => {
      const r = await store.consumeJoinToken(tokens[k++ % tokens.length]!, 1);
      if (!r.ok && k < tokens.length) throw new Error('token refused');
    }));
    set(`appendAudit x100 (records/s), ${c} caller(s)`, 100 * await rate(args.seconds, c, (i) => store.appendAudit(Array.from({ length: 100 }, (_, j) => record(i * 100 + j)))));
  }
}

const rows = new Map<string, Row>();
const dir = mkdtempSync(join(tmpdir(), 'tessera-bench-store-'));
const sqlite = new SqliteStore(join(dir, 'tessera.db'));
const pgServer = await startPostgres();
try {
  await measure(sqlite, 'sqlite', rows);
  const store = await PostgresStore.open(await pgServer.createDatabase(), { maxConnections: 16 });
  try {
    await measure(store, 'postgres', rows);
    for (const c of [1, 16]) {
      const limit = await rate(args.seconds, c, () => store.pool.query('SELECT 1'));
      for (const name of [`getEntry, ${c} caller(s)`, `consumeJoinToken, ${c} caller(s)`]) rows.get(name)!.limit = limit;
    }
    const f = new MerkleFrontier();
    const hashRate = 100 * await rate(args.seconds, 1, async (i) => {
      for (let j = 0; j < 100; j++) {
        const r = record(i * 100 + j);
        f.append(auditLeafHash(f.size + 1, r, auditDetailJson(r.detail).canonical));
      }
    });
    for (const c of [1, 16]) rows.get(`appendAudit x100 (records/s), ${c} caller(s)`)!.limit = hashRate;
  } finally {
    await store.close();
  }
} finally {
  await sqlite.close();
  await pgServer.stop();
  rmSync(dir, { recursive: true, force: true });
}

const list = [...rows.values()];
if (args.json) {
  process.stdout.write(`${JSON.stringify({ rows: list, cores: availableParallelism(), load: loadavg()[0] })}\n`);
} else {
  const w = Math.max(...list.map((r) => r.name.length));
  const n = (v: number | undefined): string => (v === undefined ? '-' : Math.round(v).toLocaleString('en-US')).padStart(14);
  process.stdout.write(`${'operation (calls/s)'.padEnd(w)}  ${'SQLite'.padStart(14)}  ${'PostgreSQL'.padStart(14)}  ${'limit'.padStart(14)}\n`);
  for (const r of list) process.stdout.write(`${r.name.padEnd(w)}  ${n(r.sqlite)}  ${n(r.postgres)}  ${n(r.limit)}\n`);
  process.stdout.write(`limit: PostgreSQL SELECT 1 round trips (reads, tokens); in-memory leaf hashing + frontier (appends). ${availableParallelism()} cores, load ${loadavg()[0]!.toFixed(2)}\n`);
}
