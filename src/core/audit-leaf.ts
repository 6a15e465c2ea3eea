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
import { hash } from 'node:crypto';
import { canonicalJson, canonicalJsonChecked, jsonString, tryCanonicalJson } from './canonical-json.js';
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

function badRecord(): TesseraError {
  return new TesseraError('TESSERA_CANONICAL_JSON_INVALID', 'an audit record needs a positive integer id and an integer time');
}

/**
 * The leaf data of one record.
 *
 * @example auditLeafData({ id: 1, ts: 0, actor: 'a', action: 'x', target: '', outcome: 'success', code: 'OK', detail: {} })
 * // Buffer of 'tessera-audit-record-v1\n{"action":"x","actor":"a","code":"OK","detail":{},"id":1,...}'
 * @throws TesseraError TESSERA_CANONICAL_JSON_INVALID when the detail is not plain JSON
 */
export function auditLeafData(r: AuditLeafRecord): Buffer {
  if (!Number.isSafeInteger(r.id) || r.id < 1 || !Number.isSafeInteger(r.ts)) throw badRecord();
  return Buffer.from(DOMAIN + leafBody(r, r.id, tryCanonicalJson(r.detail), r.detail), 'utf8');
}

/** A record as the store appends it: its detail is given as canonical JSON text. */
export type AuditLeafFields = Omit<AuditLeafRecord, 'id' | 'detail'>;

/**
 * The detail of a record as the store writes it (`text`, the detail column) and as its leaf hashes
 * it (`canonical`). Plain JSON (every record the control plane makes) is encoded once: its
 * canonical JSON is both. Anything else is stored as JSON.stringify writes it (undefined members
 * dropped, Dates as strings) and hashed as that text parses back, which is what a verifier reading
 * the row recomputes.
 *
 * @example auditDetailJson({ b: 1, a: 2 }) // { text: '{"a":2,"b":1}', canonical: '{"a":2,"b":1}' }
 * @throws TesseraError TESSERA_CANONICAL_JSON_INVALID when even the stored text is not plain JSON (nested deeper than 64)
 */
export function auditDetailJson(detail: Record<string, unknown>): { text: string; canonical: string } {
  const canonical = tryCanonicalJson(detail);
  if (canonical !== undefined) return { text: canonical, canonical };
  const text = JSON.stringify(detail);
  return { text, canonical: canonicalJson(JSON.parse(text)) };
}

/**
 * SHA-256(0x00 ‖ auditLeafData(record)) (RFC 9162 §2.1.1), the detail given as its canonical JSON
 * ({@link auditDetailJson}): the append path's leaf hash, the same bytes hashed without building
 * the leaf data buffer or re-encoding the detail.
 *
 * @throws TesseraError TESSERA_CANONICAL_JSON_INVALID as {@link auditLeafData}
 */
export function auditLeafHash(id: number, r: AuditLeafFields, canonicalDetail: string): Buffer {
  if (!Number.isSafeInteger(id) || id < 1 || !Number.isSafeInteger(r.ts)) throw badRecord();
  // A string hashes as its UTF-8 bytes, as Buffer.from(…, 'utf8') gives them; '\0' is the 0x00 prefix.
  // The detail is known to be canonical text: {} stands for it in a refusal's message.
  return hash('sha256', `\0${DOMAIN}${leafBody(r, id, canonicalDetail, {})}`, 'buffer');
}

/** A string field as canonicalJson writes it; anything else through the full encoder. */
function str(v: unknown): string | undefined {
  return typeof v === 'string' ? jsonString(v) : tryCanonicalJson(v);
}

/**
 * canonicalJson of { id, ts, actor, action, target, outcome, code, detail, principal }: its keys in
 * sorted order written out, each value by the canonical encoder, the detail's text given. When a
 * value is not plain JSON, the checked encoder runs on the whole object for the message (the JSON
 * path of the first bad field, as it always named it).
 */
function leafBody(r: AuditLeafFields, id: number, canonicalDetail: string | undefined, detail: unknown): string {
  const principal = r.principal ?? null;
  const action = str(r.action);
  const actor = str(r.actor);
  const code = str(r.code);
  const outcome = str(r.outcome);
  const target = str(r.target);
  const p = principal === null ? 'null' : str(principal);
  if (canonicalDetail === undefined || action === undefined || actor === undefined || code === undefined || outcome === undefined || target === undefined || p === undefined) {
    canonicalJsonChecked({ id, ts: r.ts, actor: r.actor, action: r.action, target: r.target, outcome: r.outcome, code: r.code, detail, principal });
    // Not reached: the fast and checked encoders refuse the same values (canonical-json.test.ts).
    throw new TesseraError('TESSERA_CANONICAL_JSON_INVALID', 'an audit record field is not plain JSON');
  }
  // Safe integers (checked by the callers) are written by canonicalJson as String writes them.
  return `{"action":${action},"actor":${actor},"code":${code},"detail":${canonicalDetail},"id":${id},"outcome":${outcome},"principal":${p},"target":${target},"ts":${r.ts}}`;
}
