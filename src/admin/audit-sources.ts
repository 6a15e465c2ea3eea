/**
 * Where `tessera audit verify` reads the log from (./audit-verify.ts does the checking):
 *
 * - {@link apiSource}: the admin API. The log is read up to the latest signed checkpoint at the start
 *   (a snapshot: the reads themselves are audited, so the log grows while it is read), in id windows
 *   of 10,000 (`GET /v1/audit?after=A&until=A+10000`) and checkpoints in pages of 1,000
 *   (`GET /v1/audit/checkpoints`). Records come without their stored leaf hash: an edited record is
 *   found by the first signed root that differs.
 * - {@link dbSource}: the SQLite file itself, opened read-only (no server, no KEK), for an auditor
 *   holding a copy: records with their stored leaf hashes, the frontier, the stored subtrees, the
 *   checkpoints and the log's verifier key the control plane keeps in clear (meta `audit_log_verifier_key`).
 */
import { existsSync } from 'node:fs';
import Database from 'better-sqlite3';
import type { ApiClient } from '../common/api-client.js';
import { TesseraError } from '../core/errors.js';
import { MerkleFrontier } from '../core/merkle.js';
import { decodeBase64Strict } from '../core/signed-note.js';
import type { AuditCheckpointResponse, AuditCheckpointsResponse, AuditListResponse, AuditRecordView } from '../core/wire/control-plane.js';
import type { AuditVerifySource, VerifyCheckpoint, VerifyRecord } from './audit-verify.js';

/** Meta key of the log's verifier key in clear (written by the control plane at start). */
export const LOG_VERIFIER_KEY_META = 'audit_log_verifier_key';
const RECORD_WINDOW = 10_000;
const CHECKPOINT_PAGE = 1000;
const DB_CHUNK = 1000;

function proofInvalid(message: string): TesseraError {
  return new TesseraError('TESSERA_AUDIT_PROOF_INVALID', message);
}

/**
 * A record read over the API, as the leaf encodes it: the ISO time back to milliseconds (the server
 * writes `new Date(ms).toISOString()`, exact to the millisecond), the principal when present, the
 * detail as parsed from the JSON answer (the same value the server parsed from its stored text).
 */
export function recordFromView(v: AuditRecordView): VerifyRecord {
  const ts = typeof v?.ts === 'string' ? Date.parse(v.ts) : NaN;
  return {
    id: v?.id, ts, actor: v?.actor, action: v?.action, target: v?.target, outcome: v?.outcome, code: v?.code,
    detail: v?.detail, principal: v?.principal ?? null,
  } as VerifyRecord;
}

function checkpointFromView(v: { note?: unknown; size?: unknown; root_hash?: unknown }): VerifyCheckpoint {
  const root = typeof v?.root_hash === 'string' ? decodeBase64Strict(v.root_hash) : undefined;
  if (typeof v?.note !== 'string' || typeof v.size !== 'number' || root === undefined) throw proofInvalid('the server sent a malformed checkpoint');
  return { size: v.size, rootHash: root, note: v.note };
}

/** The log over the admin API, up to the latest signed checkpoint when called. */
export async function apiSource(client: ApiClient, name: string): Promise<AuditVerifySource> {
  let latest: AuditCheckpointResponse | undefined;
  try {
    latest = await client.call<AuditCheckpointResponse>('GET', '/v1/audit/checkpoint');
  } catch (err) {
    if ((err as TesseraError).code !== 'TESSERA_NOT_FOUND') throw err;
  }
  const snapshot = latest ? checkpointFromView(latest.checkpoint).size : 0;
  return {
    name,
    logKey: typeof latest?.log_key === 'string' ? latest.log_key : undefined,
    async *records() {
      for (let after = 0; after < snapshot; after += RECORD_WINDOW) {
        const until = Math.min(after + RECORD_WINDOW, snapshot);
        const page = await client.call<AuditListResponse>('GET', `/v1/audit?after=${after}&until=${until}&limit=${RECORD_WINDOW}`);
        if (!Array.isArray(page?.records)) throw proofInvalid('the server sent a malformed record page');
        for (const v of page.records) yield recordFromView(v);
      }
    },
    async *checkpoints() {
      let after = -1;
      for (;;) {
        const q = after < 0 ? `limit=${CHECKPOINT_PAGE}` : `after_size=${after}&limit=${CHECKPOINT_PAGE}`;
        const page = await client.call<AuditCheckpointsResponse>('GET', `/v1/audit/checkpoints?${q}`);
        if (!Array.isArray(page?.checkpoints)) throw proofInvalid('the server sent a malformed checkpoint page');
        let progressed = false;
        for (const v of page.checkpoints) {
          const c = checkpointFromView(v);
          if (c.size > snapshot) return;
          if (c.size > after) { after = c.size; progressed = true; }
          yield c;
        }
        if (page.checkpoints.length < CHECKPOINT_PAGE || !progressed) return;
      }
    },
  };
}

interface DbRecordRow {
  id: number; ts: number; actor: string; action: string; target: string; outcome: string; code: string; detail: string;
  principal: string | null; leaf_hash: Buffer | null;
}

/** An open read-only database source; close it when done. */
export interface DbSource extends AuditVerifySource {
  close(): void;
}

/**
 * The log in a SQLite file, opened read-only (`fileMustExist`): the database is never written (SQLite
 * may create its -wal/-shm side files when the directory is writable), and a copy in a read-only
 * directory works too.
 */
export function dbSource(file: string): DbSource {
  if (!existsSync(file)) throw new TesseraError('TESSERA_CONFIG_INVALID', `--db: no file at ${file}`);
  let db: Database.Database;
  try {
    db = new Database(file, { readonly: true, fileMustExist: true });
    db.pragma('busy_timeout = 5000');
  } catch (err) {
    throw new TesseraError('TESSERA_CONFIG_INVALID', `--db: cannot open ${file} as SQLite: ${(err as Error).message}`);
  }
  try {
    let tables: Set<string>;
    try {
      tables = new Set(db.prepare<[], { name: string }>("SELECT name FROM sqlite_master WHERE type = 'table'").all().map((r) => r.name));
    } catch (err) {
      throw new TesseraError('TESSERA_CONFIG_INVALID', `--db: ${file} is not a readable SQLite database: ${(err as Error).message}`);
    }
    for (const t of ['meta', 'audit', 'audit_checkpoints']) {
      if (!tables.has(t)) throw new TesseraError('TESSERA_CONFIG_INVALID', `--db: ${file} is not a Tessera control-plane database with an audit log (no table ${t})`);
    }
    const meta = db.prepare<[string], { value: string }>('SELECT value FROM meta WHERE key = ?');
    const frontierText = meta.get('audit_frontier')?.value;
    let head: AuditVerifySource['head'];
    if (frontierText !== undefined) {
      try {
        const f = MerkleFrontier.fromJSON(JSON.parse(frontierText));
        head = { size: f.size, rootHash: f.root() };
      } catch (err) {
        head = { error: (err as Error).message };
      }
    } else head = { error: 'missing' };
    const hasLeafHash = db.prepare<[], { name: string }>('PRAGMA table_info(audit)').all().some((c) => c.name === 'leaf_hash');
    const rows = db.prepare<[number, number], DbRecordRow>(
      `SELECT id, ts, actor, action, target, outcome, code, detail, principal, ${hasLeafHash ? 'leaf_hash' : 'NULL AS leaf_hash'} FROM audit WHERE id > ? ORDER BY id LIMIT ?`);
    const cps = db.prepare<[number, number], { size: number; root: Buffer; note: string }>('SELECT size, root, note FROM audit_checkpoints WHERE size > ? ORDER BY size LIMIT ?');
    const subtree = tables.has('audit_subtrees') ? db.prepare<[number, number], { hash: Buffer }>('SELECT hash FROM audit_subtrees WHERE level = ? AND idx = ?') : undefined;
    // Only the levels the store keeps (8 and up) are looked up: one query per 256 records, not per merge.
    const minLevel = subtree ? (db.prepare<[], { l: number | null }>('SELECT MIN(level) AS l FROM audit_subtrees').get()?.l ?? Infinity) : Infinity;
    return {
      name: file,
      logKey: meta.get(LOG_VERIFIER_KEY_META)?.value,
      head,
      async *records() {
        for (let after = 0; ;) {
          const chunk = rows.all(after, DB_CHUNK);
          for (const r of chunk) {
            let detail: Record<string, unknown> | undefined;
            try {
              detail = JSON.parse(r.detail) as Record<string, unknown>;
            } catch { /* not JSON: the verifier reports the record as edited */ }
            yield {
              id: r.id, ts: r.ts, actor: r.actor, action: r.action, target: r.target, outcome: r.outcome as VerifyRecord['outcome'], code: r.code,
              detail, principal: r.principal, storedLeafHash: r.leaf_hash === null ? null : Buffer.from(r.leaf_hash),
            };
          }
          if (chunk.length < DB_CHUNK) return;
          after = chunk[chunk.length - 1]!.id;
        }
      },
      async *checkpoints() {
        for (let after = -1; ;) {
          const chunk = cps.all(after, DB_CHUNK);
          for (const c of chunk) yield { size: c.size, rootHash: Buffer.from(c.root), note: c.note };
          if (chunk.length < DB_CHUNK) return;
          after = chunk[chunk.length - 1]!.size;
        }
      },
      ...(subtree ? {
        subtreeHash: (level: number, index: number) => {
          if (level < minLevel) return undefined;
          const r = subtree.get(level, index);
          return r && Buffer.from(r.hash);
        },
      } : {}),
      close: () => db.close(),
    };
  } catch (err) {
    db.close();
    throw err;
  }
}
