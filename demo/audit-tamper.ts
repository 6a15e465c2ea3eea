/**
 * What an attacker holding the control plane's SQLite file does to hide the tail of the audit log
 * without the control plane noticing at start: used by `npm run demo -- --tamper` and the tamper tests
 * (test/audit-verify.e2e.test.ts). Not product code: it exists to show what catches it — a checkpoint
 * signed before the cut (an auditor's saved copy, `tessera audit verify --from-checkpoint`) or one held
 * by a witness (every agent, on its policy stream).
 */
import type Database from 'better-sqlite3';
import { MerkleFrontier } from '../src/core/merkle.js';

/**
 * Cuts the audit log back to its first `keep` records, consistently: the append-only trigger dropped,
 * the records after `keep` deleted, the frontier (meta `audit_frontier`) recomputed from the stored
 * leaf hashes, and the subtrees, checkpoints and cosignatures that cover a record past `keep` deleted,
 * so that the start-up check (the stored tree extends the last stored checkpoint) passes. Returns how
 * many records were deleted.
 */
export function cutAuditLogBack(d: Database.Database, keep: number): number {
  if (!Number.isSafeInteger(keep) || keep < 0) throw new RangeError(`keep must be a whole number >= 0, not ${keep}`);
  d.exec('DROP TRIGGER IF EXISTS audit_no_delete');
  return d.transaction(() => {
    const removed = d.prepare('DELETE FROM audit WHERE id > ?').run(keep).changes;
    const f = new MerkleFrontier();
    for (const x of d.prepare<[], { leaf_hash: Buffer }>('SELECT leaf_hash FROM audit ORDER BY id').iterate()) f.append(x.leaf_hash);
    d.prepare("UPDATE meta SET value = ? WHERE key = 'audit_frontier'").run(JSON.stringify(f.toJSON()));
    // A stored subtree (level, idx) covers leaves [idx·2^level, (idx+1)·2^level).
    d.prepare('DELETE FROM audit_subtrees WHERE ((idx + 1) << level) > ?').run(keep);
    d.prepare('DELETE FROM audit_cosignatures WHERE size > ?').run(keep);
    d.prepare('DELETE FROM audit_checkpoints WHERE size > ?').run(keep);
    return removed;
  })();
}
