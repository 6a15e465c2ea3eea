/**
 * Audit records as a SIEM receives them (issue 10): Tessera's own record schema (one JSON object a
 * line, with the record id and leaf hash so a receiver can later ask for an inclusion proof), the
 * same record mapped to OCSF 1.1.0, and as an RFC 5424 syslog message. Pure: no I/O.
 *
 * Records hold no secrets by construction (tokens, keys and sealed text are never put in an audit
 * record: only references such as token_ref and key_id); the export adds nothing but the leaf hash.
 */
import type { AuditLeafRecord } from './audit-leaf.js';
import { formatSdElement, formatSyslog5424, SEVERITY } from './syslog.js';
import type { AuditExportRecord } from './wire/control-plane.js';

/** Tessera's version as reported to SIEMs (OCSF metadata.product.version) and by `tessera --version`. */
export const PRODUCT_VERSION = '0.1.0';
/** The OCSF schema version the mapping follows. */
export const OCSF_VERSION = '1.1.0';
/**
 * The SD-ID of Tessera's structured data (RFC 5424 §7.2.2: NAME@<private enterprise number>).
 * 32473 is the example enterprise number IANA reserves for documentation (RFC 5612), as used in
 * RFC 5424's own examples: an operator who needs a registered one can map it at the receiver.
 */
export const SD_ID = 'tessera@32473';

/** A stored record with its Merkle leaf hash, in the export schema (ts as ISO 8601, hash base64). */
export function exportRecord(r: AuditLeafRecord, leafHash: Buffer): AuditExportRecord {
  return {
    id: r.id, ts: new Date(r.ts).toISOString(), actor: r.actor, action: r.action, target: r.target, outcome: r.outcome, code: r.code,
    detail: r.detail, ...(r.principal != null ? { principal: r.principal } : {}), leaf_hash: leafHash.toString('base64'),
  };
}

/**
 * JSON text with every non-ASCII character as a \u escape: the same JSON value, in pure US-ASCII,
 * so a syslog MSG needs no BOM (RFC 5424 §6.4) and no receiver can mangle its encoding.
 */
export function asciiJson(value: unknown): string {
  return JSON.stringify(value).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

// --- OCSF ------------------------------------------------------------------------------------------

const CLASSES = {
  3002: { name: 'Authentication', category: 3 },
  3003: { name: 'Authorize Session', category: 3 },
  3004: { name: 'Entity Management', category: 3 },
  6003: { name: 'API Activity', category: 6 },
} as const;
type ClassUid = keyof typeof CLASSES;
const CATEGORIES: Record<number, string> = { 3: 'Identity & Access Management', 6: 'Application Activity' };

/** Activity names of the OCSF 1.1.0 classes used here. */
const ACTIVITIES: Record<ClassUid, Record<number, string>> = {
  3002: { 1: 'Logon', 4: 'Service Ticket Request', 5: 'Service Ticket Renew', 99: 'Other' },
  3003: { 99: 'Other' },
  3004: { 1: 'Create', 3: 'Update', 4: 'Delete', 99: 'Other' },
  6003: { 1: 'Create', 2: 'Read', 3: 'Update', 4: 'Delete', 99: 'Other' },
};

/** Tessera action → [class, activity, managed entity type (3004 only)]; the README's table. */
const ACTION_MAP = new Map<string, [ClassUid, number, string?]>(Object.entries({
  'svid.join': [3002, 1],
  'svid.renew': [3002, 5],
  'svid.jwt': [3002, 4],
  'apikey.verify': [3002, 99],
  'decision': [3003, 99],
  'decision.refused': [3003, 99],
  'entry.create': [3004, 1, 'Registration Entry'],
  'entry.revoke': [3004, 3, 'Registration Entry'],
  'entry.delete': [3004, 4, 'Registration Entry'],
  'token.create': [3004, 1, 'Join Token'],
  'apikey.create': [3004, 1, 'API Key'],
  'apikey.revoke': [3004, 3, 'API Key'],
  'policy.apply': [3004, 1, 'Policy Version'],
  'policy.rollback': [3004, 3, 'Policy'],
  'secret.policy.create': [3004, 1, 'Secret Policy'],
  'secret.policy.refresh': [3004, 3, 'Secret Policy'],
  'secret.policy.retire': [3004, 3, 'Secret Policy'],
  'ca.rotate': [3004, 1, 'Certificate Authority'],
  'decision.ship': [6003, 1],
} satisfies Record<string, [ClassUid, number, string?]>) as [string, [ClassUid, number, string?]][]);

/** Which OCSF class and activity a Tessera action maps to (see the README's table). */
export function ocsfClassOf(action: string): { classUid: ClassUid; activityId: number; entityType?: string } {
  // A Map, not an object: an action named like an Object.prototype member must not match.
  const m = ACTION_MAP.get(action);
  if (m) return { classUid: m[0], activityId: m[1], ...(m[2] ? { entityType: m[2] } : {}) };
  // Refusals an enforcer records before any decision (failed handshakes, refused identities).
  if (action.startsWith('refusal.') || action.startsWith('tls:')) return { classUid: 3003, activityId: 99 };
  // Every other admin call: reads (list, show, audit) and anything newer than this table.
  if (/\.(list|show|read|history|checkpoint|prove|tail|verify)$/.test(action) || action.startsWith('audit.')) return { classUid: 6003, activityId: 2 };
  return { classUid: 6003, activityId: 99 };
}

function ocsfUser(id: string): Record<string, unknown> {
  // OCSF user.type_id: 2 Admin, 3 System (a workload), 0 Unknown (an unauthenticated caller's address).
  const typeId = /^spiffe:\/\/[^/]+\/tessera\/admin$/.test(id) ? 2 : id.startsWith('spiffe://') ? 3 : 0;
  return { uid: id, name: id, type_id: typeId, type: ['Unknown', 'User', 'Admin', 'System'][typeId] };
}

/**
 * One record as an OCSF 1.1.0 event: category, class, activity, type_uid = class_uid·100 + activity_id,
 * severity (1 Informational for a success, 3 Medium for a denial), status (1 Success / 2 Failure),
 * time in ms, actor, metadata (product, schema version, uid = record id), and the rest in `unmapped`.
 */
export function toOcsf(r: AuditExportRecord): Record<string, unknown> {
  const { classUid, activityId, entityType } = ocsfClassOf(r.action);
  const cls = CLASSES[classUid];
  const activityName = activityId === 99 ? r.action : ACTIVITIES[classUid][activityId]!;
  const ok = r.outcome === 'success';
  const event: Record<string, unknown> = {
    category_uid: cls.category, category_name: CATEGORIES[cls.category],
    class_uid: classUid, class_name: cls.name,
    activity_id: activityId, activity_name: activityName,
    type_uid: classUid * 100 + activityId, type_name: `${cls.name}: ${activityName}`,
    severity_id: ok ? 1 : 3, severity: ok ? 'Informational' : 'Medium',
    status_id: ok ? 1 : 2, status: ok ? 'Success' : 'Failure', status_code: r.code,
    time: Date.parse(r.ts),
    message: `${r.action} ${r.outcome}${r.target ? ` ${r.target}` : ''}`,
    metadata: {
      product: { name: 'Tessera', vendor_name: 'Tessera', version: PRODUCT_VERSION },
      version: OCSF_VERSION, uid: String(r.id), log_name: 'audit',
    },
    actor: { user: ocsfUser(r.actor) },
  };
  if (r.actor.startsWith('ip:')) event.src_endpoint = { ip: r.actor.slice(3) };
  const principal = r.principal ?? (typeof r.detail.principal === 'string' ? r.detail.principal : undefined);
  switch (classUid) {
    case 3002:
      // The identity that authenticated: the SPIFFE ID the SVID or token is for, else the caller.
      event.user = ocsfUser(r.target.startsWith('spiffe://') ? r.target : r.actor);
      if (r.action === 'svid.join') event.auth_protocol = 'Join token';
      event.auth_protocol_id = 99;
      break;
    case 3003:
      event.user = ocsfUser(principal ?? r.actor);
      event.privileges = typeof r.detail.action === 'string' ? [`${r.detail.action} ${r.target}`] : [r.action];
      break;
    case 3004:
      event.entity = { type: entityType, name: r.target, uid: r.target };
      break;
    default:
      event.api = { operation: r.action };
  }
  event.unmapped = {
    action: r.action, target: r.target, outcome: r.outcome, detail: r.detail, leaf_hash: r.leaf_hash,
    ...(r.principal !== undefined ? { principal: r.principal } : {}),
  };
  return event;
}

// --- Syslog ---------------------------------------------------------------------------------------

/**
 * The record as one RFC 5424 message: MSGID = the action, STRUCTURED-DATA `[tessera@32473 id=…
 * leaf_hash=… outcome=… code=…]`, MSG = the record's JSON (ASCII, {@link asciiJson}).
 */
export function syslogMessage(r: AuditExportRecord, host: { hostname: string; procid: number }): string {
  return formatSyslog5424({
    ts: Date.parse(r.ts), hostname: host.hostname, procid: host.procid, msgid: r.action,
    severity: r.outcome === 'success' ? SEVERITY.informational : SEVERITY.notice,
    structuredData: formatSdElement(SD_ID, [['id', String(r.id)], ['leaf_hash', r.leaf_hash], ['outcome', r.outcome], ['code', r.code]]),
    msg: asciiJson(r),
  });
}
