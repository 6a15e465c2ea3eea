/**
 * The audit log's append rate with its Merkle tree (issue 10), against a plain batched insert of
 * the same records and the physical limit, all measured in the same run; then proof costs on a
 * real SQLite file of growing size.
 *
 *   npm run bench:audit -- [--seconds S] [--batches 1,10,100,1000] [--proof-sizes 10000,100000,1000000] [--json]
 *
 * 1. The limit: SHA-256 of a typical leaf (leafHash, node:crypto), and the commit rate of the
 *    smallest write transaction (one meta row upsert) on the disk the files are on, same pragmas.
 * 2. Per-record costs of the append path in memory: JSON.stringify of the detail, auditLeafData
 *    (canonical JSON), leafHash, MerkleFrontier.append.
 * 3. Appends: SqliteStore.appendAudit (leaf hashes, frontier, stored subtrees, one IMMEDIATE
 *    transaction per batch, as the AuditLog group commit and decision ingestion call it) with a
 *    checkpoint signed every second by the real TransparencyLog (KEK-sealed Ed25519 key), versus a
 *    plain insert of the same records into the same kind of file (same pragmas, the audit table
 *    and its indexes without the tree columns, one prepared statement, one transaction per batch).
 *    The two alternate round by round (5 rounds each, median), so a noisy neighbour hits both.
 * 4. Proofs: one store grown to each --proof-sizes size through appendAudit (batches of 1000),
 *    then inclusion and consistency proof generation from its leaf source (SQLite reads, stored
 *    subtrees) and their verification, 64 random indexes / first sizes in rotation.
 * 5. The verdict against the aims: at batches of 100 and more, at least half the plain insert
 *    rate and over 20,000 records/s.
 *
 * Records have the shapes the control plane writes: decision records shipped by enforcers (9 in
 * 10: detail of enforcer, principal, action, context, reasons; ~300-400 bytes of leaf data),
 * refused-connection records and admin records (AuditEvent details).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import Database from 'better-sqlite3';
import { KeyEncryptionKey } from '../src/common/kek.js';
import { auditLeafData } from '../src/core/audit-leaf.js';
import { MerkleFrontier, consistencyProof, inclusionProof, leafHash, verifyConsistency, verifyInclusion } from '../src/core/merkle.js';
import { AuditLog } from '../src/server/audit/audit.js';
import { TransparencyLog } from '../src/server/audit/tlog.js';
import { SqliteStore } from '../src/server/store/sqlite.js';
import type { AuditRecord } from '../src/server/store/store.js';
import { formatRateRows, measureRate, secondsArg, type RateRow } from './args.js';

const AIM_RATIO = 0.5;
const AIM_RATE = 20_000;
const TD = 'bench.test';

interface Options {
  seconds: number;
  batches: number[];
  proofSizes: number[];
  json: boolean;
}

const USAGE = 'usage: node dist/bench/audit.js [--seconds S] [--batches 1,10,100,1000] [--proof-sizes 10000,100000,1000000] [--json]';

function usage(msg: string): never {
  process.stderr.write(`bench/audit: ${msg}\n${USAGE}\n`);
  process.exit(2);
}

function intList(v: string | undefined, flag: string, min: number, max: number): number[] {
  const list = (v ?? '').split(',').map((s) => Number(s.trim()));
  if (list.length === 0 || list.some((n) => !Number.isSafeInteger(n) || n < min || n > max)) usage(`${flag} takes a comma-separated list of integers in [${min}, ${max}]`);
  return list;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { seconds: 2, batches: [1, 10, 100, 1000], proofSizes: [10_000, 100_000, 1_000_000], json: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--json') o.json = true;
    else if (a === '--seconds') o.seconds = secondsArg(argv[++i], usage);
    else if (a === '--batches') o.batches = intList(argv[++i], '--batches', 1, 10_000);
    else if (a === '--proof-sizes') o.proofSizes = intList(argv[++i], '--proof-sizes', 2, 10_000_000).sort((x, y) => x - y);
    else if (a === '--help' || a === '-h') {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    } else usage(`unknown argument ${a}`);
  }
  return o;
}

// ---------------------------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------------------------

/** A deterministic spread of values in [0, n) for number i. */
function pick(i: number, n: number): number {
  return Number((BigInt(i) * 2654435761n + 12345n) % BigInt(n));
}

/** `n` records as the control plane writes them: 90 % shipped decisions, 5 % refusals, 5 % admin events. */
function makeRecords(n: number): AuditRecord[] {
  const out: AuditRecord[] = [];
  const now = Date.now();
  for (let i = 0; i < n; i++) {
    const enforcer = `spiffe://${TD}/ns/prod/sa/api-${pick(i, 8)}`;
    const principal = `spiffe://${TD}/ns/prod/sa/client-${pick(i + 1, 40)}`;
    const kind = i % 20;
    if (kind < 18) {
      const allow = pick(i + 2, 10) < 8;
      out.push({
        ts: now + i, actor: enforcer, action: 'decision', target: enforcer, outcome: allow ? 'success' : 'denied', code: allow ? 'ALLOW' : 'DENY',
        principal,
        detail: {
          enforcer, principal, action: 'http:request',
          context: { method: i % 3 === 0 ? 'POST' : 'GET', path: `/v1/orders/${pick(i, 100_000)}`, sni: `api-${pick(i, 8)}.${TD}`, bytes_in: pick(i, 5000), peer: `10.0.${pick(i, 8)}.${pick(i + 3, 250)}:${40000 + pick(i, 20000)}` },
          reasons: allow ? ['policy0.cedar#orders-read'] : [],
        },
      });
    } else if (kind === 18) {
      out.push({
        ts: now + i, actor: enforcer, action: 'connection.refused', target: enforcer, outcome: 'denied', code: 'TESSERA_AUTH_INVALID',
        detail: { enforcer, reason: 'peer certificate chain does not verify against the trust bundle', site: 'sidecar.inbound' },
      });
    } else {
      out.push({
        ts: now + i, actor: `spiffe://${TD}/admin/ops`, action: 'svid.renew', target: principal, outcome: 'success', code: 'OK',
        detail: { serial: (i * 7919).toString(16).padStart(32, '0'), not_after: new Date(now + 3_600_000).toISOString(), entry_id: `e-${pick(i, 1000)}`, key_type: 'ec-p256' },
      });
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The plain insert: the same records into the same kind of file, without the tree
// ---------------------------------------------------------------------------------------------

/** The audit table as it was before the tree (sqlite.ts SCHEMA and ADDED_COLUMNS less leaf_hash), its indexes, the same pragmas. */
class PlainAudit {
  readonly db: Database.Database;
  private readonly insert;
  private readonly appendTx;

  constructor(file: string) {
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('busy_timeout = 5000');
    this.db.pragma('foreign_keys = ON');
    this.db.exec(`
      CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,
        outcome TEXT NOT NULL CHECK (outcome IN ('denied', 'success')), code TEXT NOT NULL, detail TEXT NOT NULL, principal TEXT
      );
      CREATE INDEX audit_action ON audit(action, id);
      CREATE INDEX audit_decision_sample ON audit(action, actor, principal, id);
      CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
      CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
    `);
    this.insert = this.db.prepare('INSERT INTO audit(ts, actor, action, target, outcome, code, detail, principal) VALUES (?, ?, ?, ?, ?, ?, ?, ?)');
    this.appendTx = this.db.transaction((records: readonly AuditRecord[]) => {
      for (const r of records) this.insert.run(r.ts, r.actor, r.action, r.target, r.outcome, r.code, JSON.stringify(r.detail), r.principal ?? null);
    });
  }

  append(records: readonly AuditRecord[]): void {
    this.appendTx.immediate(records);
  }
}

// ---------------------------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------------------------

interface AppendRow {
  batch: number;
  treeRecordsPerSec: number;
  plainRecordsPerSec: number;
  ratio: number;
  treeUsPerRecord: number;
  plainUsPerRecord: number;
  /** CPU time (user + system) of this process per record: what the code costs, less the wait for a shared core. */
  treeCpuUsPerRecord: number;
  plainCpuUsPerRecord: number;
  checkpoints: number;
}

interface Round {
  recordsPerSec: number;
  cpuUsPerRecord: number;
}

/** Records/s of `append` over one round of `ms`, every batch a slice of the pool in rotation, and its CPU time per record. */
async function round(ms: number, batches: readonly (readonly AuditRecord[])[], append: (b: readonly AuditRecord[]) => Promise<void> | void, tick?: () => Promise<void>): Promise<Round> {
  let n = 0;
  let k = 0;
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  const end = start + ms;
  let now = start;
  let nextTick = start + 1000;
  while (now < end) {
    const b = batches[k++ % batches.length]!;
    await append(b);
    n += b.length;
    now = performance.now();
    if (tick && now >= nextTick) {
      await tick();
      nextTick += 1000;
      now = performance.now();
    }
  }
  const cpu = process.cpuUsage(cpu0);
  return { recordsPerSec: (n * 1000) / (now - start), cpuUsPerRecord: (cpu.user + cpu.system) / n };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function batchesOf(pool: readonly AuditRecord[], size: number): AuditRecord[][] {
  const out: AuditRecord[][] = [];
  for (let i = 0; i + size <= pool.length; i += size) out.push(pool.slice(i, i + size));
  return out;
}

async function measureAppends(dir: string, pool: readonly AuditRecord[], opts: Options): Promise<AppendRow[]> {
  const store = new SqliteStore(join(dir, 'tree.db'));
  const plain = new PlainAudit(join(dir, 'plain.db'));
  const tlog = new TransparencyLog(store, KeyEncryptionKey.load(dir, {}), TD, new AuditLog(store));
  await tlog.init();
  let checkpoints = 0;
  // As the leader's 1 s tick: sign when the tree grew.
  const tick = async (): Promise<void> => {
    if (await tlog.checkpoint()) checkpoints++;
  };
  const rows: AppendRow[] = [];
  try {
    for (const size of opts.batches) {
      const batches = batchesOf(pool, size);
      // Rounds of at least a second where checkpoints are signed, so every round signs some.
      const ms = Math.max(1000, (opts.seconds * 1000) / 5);
      // Warm-up of both paths (JIT, page cache), not counted.
      await round(Math.min(300, ms), batches, (b) => store.appendAudit(b));
      await round(Math.min(300, ms), batches, (b) => plain.append(b));
      const tree: Round[] = [];
      const flat: Round[] = [];
      const before = checkpoints;
      for (let r = 0; r < 5; r++) {
        tree.push(await round(ms, batches, (b) => store.appendAudit(b), tick));
        flat.push(await round(ms, batches, (b) => plain.append(b)));
      }
      const t = median(tree.map((x) => x.recordsPerSec));
      const p = median(flat.map((x) => x.recordsPerSec));
      rows.push({
        batch: size, treeRecordsPerSec: t, plainRecordsPerSec: p, ratio: t / p, treeUsPerRecord: 1e6 / t, plainUsPerRecord: 1e6 / p,
        treeCpuUsPerRecord: median(tree.map((x) => x.cpuUsPerRecord)), plainCpuUsPerRecord: median(flat.map((x) => x.cpuUsPerRecord)), checkpoints: checkpoints - before,
      });
    }
    // The tree on disk must still be the tree of the records: a checkpoint of everything verifies
    // an inclusion proof of the last record.
    await tick();
    const head = await store.auditTreeHead();
    const cp = await tlog.latest();
    if (cp.size !== head.size || !cp.rootHash.equals(head.rootHash)) throw new Error('the latest checkpoint is not the tree head');
    const incl = await tlog.inclusion(head.size);
    if (!verifyInclusion(incl.leafHash, incl.leafIndex, cp.size, incl.proof, cp.rootHash)) throw new Error('an inclusion proof does not verify');
  } finally {
    await store.close();
    plain.db.close();
  }
  return rows;
}

/** The limit: SHA-256 of a leaf, and the smallest write transaction's commit on this disk. */
function measureLimits(dir: string, pool: readonly AuditRecord[], seconds: number): { rows: RateRow[]; leafBytes: number } {
  const leaves = pool.slice(0, 256).map((r, i) => auditLeafData({ ...r, id: i + 1 }));
  const leafBytes = leaves.reduce((a, l) => a + l.length, 0) / leaves.length;
  const db = new Database(join(dir, 'limit.db'));
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.exec('CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)');
  const upsert = db.prepare('INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value');
  const commit = db.transaction((i: number) => upsert.run('k', String(i)));
  const rows = [
    measureRate(`SHA-256 leaf hash (${Math.round(leafBytes)}-byte leaf)`, seconds, (i) => leafHash(leaves[i & 255]!), { batch: 256 }),
    measureRate('commit of the smallest write transaction', seconds, (i) => commit.immediate(i), { batch: 16 }),
  ];
  db.close();
  return { rows, leafBytes };
}

/** What each step of the append costs per record, in memory. */
function measureSteps(pool: readonly AuditRecord[], seconds: number): RateRow[] {
  const n = 1024;
  const leaves = pool.slice(0, n).map((r, i) => auditLeafData({ ...r, id: i + 1 }));
  const hashes = leaves.map((l) => leafHash(l));
  let frontier = new MerkleFrontier();
  return [
    measureRate('JSON.stringify(detail)', seconds, (i) => JSON.stringify(pool[i % n]!.detail), { batch: 256 }),
    measureRate('auditLeafData (canonical JSON of the record)', seconds, (i) => auditLeafData({ ...pool[i % n]!, id: i + 1 }), { batch: 256 }),
    measureRate('MerkleFrontier.append', seconds, (i) => {
      if (frontier.size >= 1 << 24) frontier = new MerkleFrontier();
      frontier.append(hashes[i % n]!);
    }, { batch: 1024 }),
  ];
}

interface ProofRow {
  size: number;
  buildSeconds: number;
  inclusionUs: number;
  verifyInclusionUs: number;
  consistencyUs: number;
  verifyConsistencyUs: number;
}

/** One store grown through appendAudit to each size in turn; proofs measured at each. */
async function measureProofs(dir: string, pool: readonly AuditRecord[], opts: Options): Promise<ProofRow[]> {
  const store = new SqliteStore(join(dir, 'proofs.db'));
  const batches = batchesOf(pool, 1000);
  const rows: ProofRow[] = [];
  const perRow = Math.max(0.2, opts.seconds / 4);
  try {
    let k = 0;
    for (const size of opts.proofSizes) {
      const t0 = performance.now();
      for (let have = (await store.auditTreeHead()).size; have < size;) {
        const b = batches[k++ % batches.length]!;
        const part = b.length <= size - have ? b : b.slice(0, size - have);
        await store.appendAudit(part);
        have += part.length;
      }
      const buildSeconds = (performance.now() - t0) / 1000;
      const src = store.auditLeafSource();
      const { rootHash } = await store.auditTreeHead();
      const SAMPLES = 64;
      const indexes = Array.from({ length: SAMPLES }, (_, i) => pick(i + 1000, size));
      const firsts = Array.from({ length: SAMPLES }, (_, i) => 1 + pick(i, size - 1));
      const leafOf = indexes.map((x) => src.leafHashes(x, x + 1)[0]!);
      const firstRoots = firsts.map((m) => MerkleFrontier.fromSource(src, m).root());
      const incl = indexes.map((x) => inclusionProof(src, x, size));
      const cons = firsts.map((m) => consistencyProof(src, m, size));
      for (let s = 0; s < SAMPLES; s++) {
        if (!verifyInclusion(leafOf[s]!, indexes[s]!, size, incl[s]!, rootHash)) throw new Error(`an inclusion proof at ${size} does not verify`);
        if (!verifyConsistency(firsts[s]!, size, firstRoots[s]!, rootHash, cons[s]!)) throw new Error(`a consistency proof at ${size} does not verify`);
      }
      const r = (name: string, batch: number, op: (i: number) => unknown): number => measureRate(name, perRow, op, { batch, minWarmOps: 3 }).usPerOp;
      rows.push({
        size, buildSeconds,
        inclusionUs: r('inclusionProof', 4, (i) => inclusionProof(src, indexes[i % SAMPLES]!, size)),
        verifyInclusionUs: r('verifyInclusion', 256, (i) => verifyInclusion(leafOf[i % SAMPLES]!, indexes[i % SAMPLES]!, size, incl[i % SAMPLES]!, rootHash)),
        consistencyUs: r('consistencyProof', 4, (i) => consistencyProof(src, firsts[i % SAMPLES]!, size)),
        verifyConsistencyUs: r('verifyConsistency', 256, (i) => verifyConsistency(firsts[i % SAMPLES]!, size, firstRoots[i % SAMPLES]!, rootHash, cons[i % SAMPLES]!)),
      });
    }
  } finally {
    await store.close();
  }
  return rows;
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

const fmtInt = (n: number): string => Math.round(n).toLocaleString('en-US');
const fmtUs = (n: number): string => n.toFixed(n < 10 ? 2 : 1);

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const dir = mkdtempSync(join(tmpdir(), 'tessera-bench-audit-'));
  const started = performance.now();
  const loadBefore = loadavg()[0]!;
  try {
    const pool = makeRecords(Math.max(10_000, ...opts.batches) * 2);
    const limits = measureLimits(dir, pool, Math.min(opts.seconds, 2));
    const steps = measureSteps(pool, Math.min(opts.seconds, 2));
    const appends = await measureAppends(dir, pool, opts);
    const proofs = await measureProofs(dir, pool, opts);
    const [hashRow, commitRow] = limits.rows as [RateRow, RateRow];
    const verdictRows = appends.filter((a) => a.batch >= 100);
    const meets = verdictRows.length > 0 && verdictRows.every((a) => a.ratio >= AIM_RATIO && a.treeRecordsPerSec > AIM_RATE);
    const setup = { node: process.version, cores: availableParallelism(), loadBefore, seconds: opts.seconds, leafBytesAvg: Math.round(limits.leafBytes), pool: pool.length, totalSeconds: 0 };
    setup.totalSeconds = Math.round((performance.now() - started) / 100) / 10;
    if (opts.json) {
      process.stdout.write(`${JSON.stringify({ setup, limits: limits.rows, steps, appends, proofs, aim: { ratio: AIM_RATIO, recordsPerSec: AIM_RATE }, meetsAim: meets }, null, 2)}\n`);
      return;
    }
    const out: string[] = [];
    out.push(`audit log appends, SQLite WAL (synchronous = NORMAL), Node ${process.version}, single thread, ${setup.leafBytesAvg}-byte leaves on average`);
    out.push(`machine: ${availableParallelism()} cores, load average ${loadBefore.toFixed(2)} before the run (other processes share the cores: compare the CPU µs columns)`);
    out.push('records: 90 % shipped decisions, 5 % refusals, 5 % admin events; medians of 5 alternating rounds\n');
    out.push('the limit on this machine:');
    out.push(formatRateRows(limits.rows, 'operation', 'µs/op'));
    out.push('per record, in memory:');
    out.push(formatRateRows(steps, 'step', 'µs/record'));
    const w = 'records per batch'.length;
    out.push(`appendAudit (tree, subtrees, checkpoint each second) vs plain insert, records/s:`);
    out.push(`${'records per batch'.padEnd(w)}  ${'tree'.padStart(9)}  ${'µs/rec'.padStart(7)}  ${'CPU µs'.padStart(7)}  ${'plain'.padStart(9)}  ${'µs/rec'.padStart(7)}  ${'CPU µs'.padStart(7)}  ${'tree/plain'.padStart(10)}  ${'limit'.padStart(9)}  ${'checkpoints'.padStart(11)}`);
    for (const a of appends) {
      // The limit for this batch size: one commit per batch plus one leaf hash per record.
      const limit = 1e6 / (hashRow.usPerOp + commitRow.usPerOp / a.batch);
      out.push(`${String(a.batch).padEnd(w)}  ${fmtInt(a.treeRecordsPerSec).padStart(9)}  ${fmtUs(a.treeUsPerRecord).padStart(7)}  ${fmtUs(a.treeCpuUsPerRecord).padStart(7)}  ${fmtInt(a.plainRecordsPerSec).padStart(9)}  ${fmtUs(a.plainUsPerRecord).padStart(7)}  ${fmtUs(a.plainCpuUsPerRecord).padStart(7)}  ${a.ratio.toFixed(2).padStart(10)}  ${fmtInt(limit).padStart(9)}  ${String(a.checkpoints).padStart(11)}`);
    }
    out.push('(µs/rec = wall clock; CPU µs = this process\'s user + system time per record, what the code costs whatever the');
    out.push(' neighbours take; limit = one smallest commit per batch + one SHA-256 leaf hash per record)\n');
    out.push('proofs from the SQLite leaf source (stored subtrees ≥ 256 leaves), µs:');
    out.push(`${'records'.padStart(10)}  ${'built in s'.padStart(10)}  ${'inclusion'.padStart(9)}  ${'verify'.padStart(7)}  ${'consistency'.padStart(11)}  ${'verify'.padStart(7)}`);
    for (const p of proofs) {
      out.push(`${fmtInt(p.size).padStart(10)}  ${p.buildSeconds.toFixed(1).padStart(10)}  ${fmtUs(p.inclusionUs).padStart(9)}  ${fmtUs(p.verifyInclusionUs).padStart(7)}  ${fmtUs(p.consistencyUs).padStart(11)}  ${fmtUs(p.verifyConsistencyUs).padStart(7)}`);
    }
    out.push('');
    const worst = verdictRows.reduce<AppendRow | undefined>((m, a) => (!m || a.ratio < m.ratio ? a : m), undefined);
    out.push(worst
      ? `verdict: at ${verdictRows.map((a) => a.batch).join(' and ')} records per batch, ${verdictRows.map((a) => `${fmtInt(a.treeRecordsPerSec)}/s = ${a.ratio.toFixed(2)}× plain`).join(', ')}: ${meets ? 'MEETS' : 'BELOW'} the aims (≥ ${AIM_RATIO}× the plain insert rate and > ${fmtInt(AIM_RATE)} records/s)`
      : 'verdict: none (no batch of 100 records or more measured)');
    if (verdictRows.length > 0) {
      // On a shared machine the wall-clock rates swing with the neighbours; CPU time per record does less.
      out.push(`on CPU time per record: ${verdictRows.map((a) => `${a.batch}: tree/plain = ${(a.plainCpuUsPerRecord / a.treeCpuUsPerRecord).toFixed(2)}, ${fmtInt(1e6 / a.treeCpuUsPerRecord)} records per CPU-second`).join('; ')}`);
    }
    out.push(`(ran in ${setup.totalSeconds} s)`);
    process.stdout.write(`${out.join('\n')}\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench/audit: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(1);
});
