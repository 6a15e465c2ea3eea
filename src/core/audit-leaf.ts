/**
 * The bytes an audit record contributes to the transparency log (issue 10): one Merkle leaf per
 * record, leaf hash = SHA-256(0x00 ‖ these bytes) (RFC 9162 §2.1.1). The encoding is canonical JSON
 * (src/core/canonical-json.ts) of every stored field, the record id included, behind a domain and
 * version line, so that:
 * - editing any field (detail included, key order aside) changes the leaf;
 * - a record moved to another id, or two records swapped, changes the leaves at both positions;
 * - the same stored record always gives the same bytes, in any process and after any restart.
 *
 * The record is encoded as stored (the detail as parsed back from its JSON text), so what a verifier
 * recomputes from the database is exactly what was hashed when it was appended.
 */
import { canonicalJson } from './canonical-json.js';
import { TesseraError } from './errors.js';

/** A stored audit record, as the log hashes it. */
export interface AuditLeafRecord {
  /** The record's id: its 1-based position in the log (leaf index = id - 1). */
  id: number;
  /** Milliseconds since the epoch. */
  ts: number;
  actor: string;
  action: string;
  target: string;
  outcome: 'denied' | 'success';
  code: string;
  detail: Record<string, unknown>;
  /** The decision's principal where the store indexes it (decision records), else null. */
  principal?: string | null;
}

const DOMAIN = 'tessera-audit-record-v1\n';

/**
 * The leaf data of one record.
 *
 * @example auditLeafData({ id: 1, ts: 0, actor: 'a', action: 'x', target: '', outcome: 'success', code: 'OK', detail: {} })
 * // Buffer of 'tessera-audit-record-v1\n{"action":"x","actor":"a","code":"OK","detail":{},"id":1,...}'
 * @throws TesseraError TESSERA_CANONICAL_JSON_INVALID when the detail is not plain JSON
 */
export function auditLeafData(r: AuditLeafRecord): Buffer {
  if (!Number.isSafeInteger(r.id) || r.id < 1 || !Number.isSafeInteger(r.ts)) {
    throw new TesseraError('TESSERA_CANONICAL_JSON_INVALID', 'an audit record needs a positive integer id and an integer time');
  }
  const body = canonicalJson({
    id: r.id, ts: r.ts, actor: r.actor, action: r.action, target: r.target, outcome: r.outcome, code: r.code,
    detail: r.detail, principal: r.principal ?? null,
  });
  return Buffer.from(DOMAIN + body, 'utf8');
}
