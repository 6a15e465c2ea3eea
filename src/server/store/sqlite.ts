import { chmodSync } from 'node:fs';
import Database from 'better-sqlite3';
import { auditDetailJson, auditLeafData, auditLeafHash } from '../../core/audit-leaf.js';
import { MerkleFrontier, leafHash, type LeafHashSource } from '../../core/merkle.js';
import type {
  PolicyVersionRecord, SecretPolicyRow, IssuedSvidRecord, RevocationRecord, RevokeResult,
  ApiKeyRecord, AuditQuery, RiskStateRecord, RiskHistoryRecord, AuditRecord, AuditTreeHead, CaRecord, CheckpointRecord, CosignatureRecord, EntryRecord, JoinTokenRecord, Store, StoredAuditRecord, TokenConsumeResult, DecisionSample, DecisionSampleQuery,
  StoredTelemetryRow, TelemetryQuery, TelemetryRetention, TelemetryRow, TelemetryEdgeAggregate, DecisionEdgeAggregate,
  ChangeRecord, LeaseFence, LeaseGrant,
} from './store.js';
import type { PeopleStore } from './store.js';
import { SqlitePeopleStore } from './people-sqlite.js';
import { SqliteDeviceStore } from './devices.sqlite.js';
import { SqliteGatewayStore } from './gateways.sqlite.js';
import { SqliteFederationStore } from './federation.sqlite.js';
import { SqliteLoginStore } from './login-sqlite.js';
import { shareEnforcers, shareQuota } from './decision-sample.js';
import { FRONTIER_KEY, SUBTREE_MIN_LEVEL, parseFrontier, treeStateInvalid } from './audit-frontier.js';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cas (
  id TEXT PRIMARY KEY, state TEXT NOT NULL, cert_der BLOB NOT NULL, key_sealed BLOB NOT NULL,
  jwt_kid TEXT NOT NULL, jwt_key_sealed BLOB NOT NULL, not_before INTEGER NOT NULL, not_after INTEGER NOT NULL,
  created_at INTEGER NOT NULL, activate_at INTEGER, activated_at INTEGER, retired_at INTEGER
);
CREATE TABLE IF NOT EXISTS entries (
  id TEXT PRIMARY KEY, spiffe_id TEXT NOT NULL UNIQUE, selectors TEXT NOT NULL, attributes TEXT NOT NULL,
  x509_ttl INTEGER NOT NULL, jwt_ttl INTEGER NOT NULL, created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS join_tokens (
  hash TEXT PRIMARY KEY, entry_id TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, used_at INTEGER
);
CREATE TABLE IF NOT EXISTS api_keys (
  id TEXT PRIMARY KEY, hash TEXT NOT NULL, owner TEXT NOT NULL, scopes TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
  id INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,
  outcome TEXT NOT NULL CHECK (outcome IN ('denied', 'success')), code TEXT NOT NULL, detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_action ON audit(action, id);
CREATE INDEX IF NOT EXISTS api_keys_owner ON api_keys(owner, created_at);
CREATE TABLE IF NOT EXISTS policy_versions (
  version INTEGER PRIMARY KEY, created_at INTEGER NOT NULL, author TEXT NOT NULL, reason TEXT NOT NULL,
  hash TEXT NOT NULL, policies TEXT NOT NULL, schema TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS secret_policies (
  id TEXT NOT NULL, epoch INTEGER NOT NULL, signed TEXT NOT NULL, created_at INTEGER NOT NULL, PRIMARY KEY (id, epoch)
);
-- Every X509-SVID issued per entry (join, renewal), so that revoking the entry can list them.
CREATE TABLE IF NOT EXISTS svid_serials (
  serial TEXT PRIMARY KEY, entry_id TEXT NOT NULL, spiffe_id TEXT NOT NULL, not_after INTEGER NOT NULL, issued_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS svid_serials_entry ON svid_serials(entry_id, not_after);
-- Revoked entries (kept) and deleted ones: the revocation list. No foreign key: it outlives the entry.
CREATE TABLE IF NOT EXISTS revocations (
  entry_id TEXT PRIMARY KEY, spiffe_id TEXT NOT NULL, revoked_at INTEGER NOT NULL, reason TEXT NOT NULL, deleted INTEGER NOT NULL
);
-- Signed checkpoints of the audit log's Merkle tree (C2SP tlog-checkpoint), one per tree size.
CREATE TABLE IF NOT EXISTS audit_checkpoints (
  size INTEGER PRIMARY KEY, root BLOB NOT NULL, note TEXT NOT NULL, created_at INTEGER NOT NULL
);
-- Witnesses' cosignatures (C2SP tlog-cosignature v1) of stored checkpoints: one per witness key and size.
CREATE TABLE IF NOT EXISTS audit_cosignatures (
  size INTEGER NOT NULL, witness_key TEXT NOT NULL, name TEXT NOT NULL, key_id TEXT NOT NULL, timestamp INTEGER NOT NULL,
  line TEXT NOT NULL, created_at INTEGER NOT NULL, PRIMARY KEY (size, witness_key)
);
-- Roots of complete subtrees of the audit tree of level >= SUBTREE_MIN_LEVEL (2^8 leaves and up), so a
-- proof reads O(log n) of these plus a few hundred leaf hashes instead of every leaf.
CREATE TABLE IF NOT EXISTS audit_subtrees (
  level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL, PRIMARY KEY (level, idx)
) WITHOUT ROWID;
-- Sidecar telemetry windows (issue 11): a bounded table, pruned by count and age at each insert.
CREATE TABLE IF NOT EXISTS telemetry_windows (
  id INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER NOT NULL, received_at INTEGER NOT NULL, reported_by TEXT NOT NULL,
  caller TEXT NOT NULL, callee TEXT NOT NULL, window TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS telemetry_by_caller ON telemetry_windows(caller, id);
CREATE INDEX IF NOT EXISTS telemetry_by_callee ON telemetry_windows(callee, id);
CREATE INDEX IF NOT EXISTS telemetry_by_received ON telemetry_windows(received_at);
-- Risk states (issue 11): one row per identity scored or set by hand, and every change.
CREATE TABLE IF NOT EXISTS risk_states (
  spiffe_id TEXT PRIMARY KEY, state TEXT NOT NULL, score INTEGER NOT NULL, since INTEGER NOT NULL, until INTEGER,
  reasons TEXT NOT NULL, set_by TEXT NOT NULL, actor TEXT NOT NULL, note TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS risk_history (
  id INTEGER PRIMARY KEY AUTOINCREMENT, spiffe_id TEXT NOT NULL, at INTEGER NOT NULL, state TEXT NOT NULL, previous TEXT NOT NULL,
  score INTEGER NOT NULL, until INTEGER, reasons TEXT NOT NULL, set_by TEXT NOT NULL, actor TEXT NOT NULL, note TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS risk_history_id ON risk_history(spiffe_id, id);
-- The audit table is append-only: the database itself refuses edits and deletions.
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
`;

interface CaRow {
  id: string; state: string; cert_der: Buffer; key_sealed: Buffer; jwt_kid: string; jwt_key_sealed: Buffer;
  not_before: number; not_after: number; created_at: number; activate_at: number | null; activated_at: number | null; retired_at: number | null;
}
interface EntryRow { id: string; spiffe_id: string; selectors: string; attributes: string; x509_ttl: number; jwt_ttl: number; apikey_max_ttl: number; created_at: number;
  revoked_at: number | null; revoked_reason: string | null;
}
interface ApiKeyRow {
  id: string; hash: string; owner: string; scopes: string; created_at: number; expires_at: number; revoked_at: number | null; revoked_reason: string | null;
}

function apiKeyFromRow(r: ApiKeyRow): ApiKeyRecord {
  return {
    id: r.id, hash: r.hash, owner: r.owner, scopes: JSON.parse(r.scopes) as string[], createdAt: r.created_at, expiresAt: r.expires_at,
    revokedAt: r.revoked_at, revokedReason: r.revoked_reason,
  };
}
interface RiskRow { spiffe_id: string; state: string; score: number; since: number; until: number | null; reasons: string; set_by: string; actor: string; note: string }
interface RiskHistoryRow extends Omit<RiskRow, 'since'> { id: number; at: number; previous: string }

function riskFromRow(r: RiskRow): RiskStateRecord {
  return {
    spiffeId: r.spiffe_id, state: r.state as RiskStateRecord['state'], score: r.score, since: r.since, until: r.until,
    reasons: JSON.parse(r.reasons) as unknown[], setBy: r.set_by as RiskStateRecord['setBy'], actor: r.actor, note: r.note,
  };
}
interface RevocationRow { entry_id: string; spiffe_id: string; revoked_at: number; reason: string; deleted: number }
interface PolicyRow { version: number; created_at: number; author: string; reason: string; hash: string; policies: string; schema: string }

function policyFromRow(r: PolicyRow): PolicyVersionRecord {
  return {
    version: r.version, createdAt: r.created_at, author: r.author, reason: r.reason, hash: r.hash,
    policies: JSON.parse(r.policies) as Record<string, string>, schema: JSON.parse(r.schema) as Record<string, unknown>,
  };
}

interface SecretRow { id: string; epoch: number; signed: string; created_at: number; generation: number; retired_at: number | null }
const secretFromRow = (r: SecretRow): SecretPolicyRow => ({ id: r.id, epoch: r.epoch, generation: r.generation, signed: r.signed, createdAt: r.created_at, retiredAt: r.retired_at });

/** Columns added after a table first shipped: ALTER TABLE on databases created before them. */
const ADDED_COLUMNS: { table: string; column: string; ddl: string }[] = [
  { table: 'secret_policies', column: 'generation', ddl: 'generation INTEGER NOT NULL DEFAULT 1' },
  { table: 'secret_policies', column: 'retired_at', ddl: 'retired_at INTEGER' },
  { table: 'entries', column: 'apikey_max_ttl', ddl: 'apikey_max_ttl INTEGER NOT NULL DEFAULT 86400' },
  { table: 'api_keys', column: 'revoked_at', ddl: 'revoked_at INTEGER' },
  { table: 'api_keys', column: 'revoked_reason', ddl: 'revoked_reason TEXT' },
  { table: 'entries', column: 'revoked_at', ddl: 'revoked_at INTEGER' },
  { table: 'entries', column: 'revoked_reason', ddl: 'revoked_reason TEXT' },
  { table: 'audit', column: 'principal', ddl: 'principal TEXT' },
  // SHA-256(0x00 ‖ auditLeafData(row)): the row's Merkle leaf (RFC 9162 §2.1.1). Rows of a database
  // made before it are hashed once by migrateAuditTree.
  { table: 'audit', column: 'leaf_hash', ddl: 'leaf_hash BLOB' },
  // The map's figures of a window as columns: summing them is ~20x faster than reading the JSON.
  // Rows stored before these columns are filled from their JSON once (TELEMETRY_COLUMNS_BACKFILL).
  { table: 'telemetry_windows', column: 'reporter', ddl: "reporter TEXT NOT NULL DEFAULT ''" },
  { table: 'telemetry_windows', column: 'caller_site', ddl: "caller_site TEXT NOT NULL DEFAULT ''" },
  { table: 'telemetry_windows', column: 'callee_site', ddl: "callee_site TEXT NOT NULL DEFAULT ''" },
  { table: 'telemetry_windows', column: 'requests', ddl: 'requests INTEGER NOT NULL DEFAULT 0' },
  { table: 'telemetry_windows', column: 'denials', ddl: 'denials INTEGER NOT NULL DEFAULT 0' },
  { table: 'telemetry_windows', column: 'errors', ddl: 'errors INTEGER NOT NULL DEFAULT 0' },
  { table: 'telemetry_windows', column: 'bytes', ddl: 'bytes INTEGER NOT NULL DEFAULT 0' },
];

const TELEMETRY_COLUMNS_BACKFILL = `UPDATE telemetry_windows SET reporter = window ->> '$.reporter', caller_site = window ->> '$.caller_site',
  callee_site = window ->> '$.callee_site', requests = window ->> '$.requests', denials = window ->> '$.denials', errors = window ->> '$.errors',
  bytes = (window ->> '$.bytes_in') + (window ->> '$.bytes_out') WHERE reporter = ''`;

const NO_UPDATE_TRIGGER = "CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;";

/** The leaf hash of a row as stored: the detail as its JSON text parses back, the principal or null. */
function rowLeafHash(r: { id: number; ts: number; actor: string; action: string; target: string; outcome: string; code: string; detail: string; principal: string | null }): Buffer {
  return leafHash(auditLeafData({
    id: r.id, ts: r.ts, actor: r.actor, action: r.action, target: r.target, outcome: r.outcome as AuditRecord['outcome'], code: r.code,
    detail: JSON.parse(r.detail) as Record<string, unknown>, principal: r.principal,
  }));
}

/** Indexes on added columns: created once the columns exist. */
const ADDED_INDEXES = `
CREATE INDEX IF NOT EXISTS audit_decision_sample ON audit(action, actor, principal, id);
-- The console's map: telemetry and decisions of the last minutes (a range of ts, not of ids).
CREATE INDEX IF NOT EXISTS telemetry_by_ts ON telemetry_windows(ts);
CREATE INDEX IF NOT EXISTS audit_decision_ts ON audit(ts) WHERE action = 'decision';
-- At most one prepared and one active CA, whatever process writes (activation is one transaction).
CREATE UNIQUE INDEX IF NOT EXISTS cas_one_prepared ON cas(state) WHERE state = 'prepared';
CREATE UNIQUE INDEX IF NOT EXISTS cas_one_active ON cas(state) WHERE state = 'active';
`;

/**
 * Replicas (issue 14): the leader lease and the change log. The log's rows are written by triggers
 * in the transaction of each change other processes cache (the meta keys of the CA bundle, the
 * policy bundle, the admin policy and the admins; person certificates; federation), so no code path
 * can change one without a log row. SQLite has no NOTIFY: processes poll \`lastChange()\`.
 */
const NOW_MS_SQL = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";
const LOGGED_META = "IN ('bundle_sequence', 'policy_bundle_version', 'admin_policy:current') OR substr(%.key, 1, 6) = 'admin:'";
const REPLICA_SCHEMA = `
CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, epoch INTEGER NOT NULL, expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS change_log (seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, at INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS meta_changes_insert AFTER INSERT ON meta WHEN NEW.key ${LOGGED_META.replace('%', 'NEW')}
  BEGIN INSERT INTO change_log(topic, at) VALUES ('meta', ${NOW_MS_SQL}); END;
CREATE TRIGGER IF NOT EXISTS meta_changes_update AFTER UPDATE ON meta WHEN NEW.key ${LOGGED_META.replace('%', 'NEW')}
  BEGIN INSERT INTO change_log(topic, at) VALUES ('meta', ${NOW_MS_SQL}); END;
CREATE TRIGGER IF NOT EXISTS meta_changes_delete AFTER DELETE ON meta WHEN OLD.key ${LOGGED_META.replace('%', 'OLD')}
  BEGIN INSERT INTO change_log(topic, at) VALUES ('meta', ${NOW_MS_SQL}); END;
${['INSERT', 'UPDATE', 'DELETE'].map((op) => `
CREATE TRIGGER IF NOT EXISTS user_certs_changes_${op.toLowerCase()} AFTER ${op} ON user_certs
  BEGIN INSERT INTO change_log(topic, at) VALUES ('user_certs', ${NOW_MS_SQL}); END;
CREATE TRIGGER IF NOT EXISTS federation_changes_${op.toLowerCase()} AFTER ${op} ON federation_revision
  BEGIN INSERT INTO change_log(topic, at) VALUES ('federation', ${NOW_MS_SQL}); END;`).join('')}
`;

interface AuditRow { id: number; ts: number; actor: string; action: string; target: string; outcome: string; code: string; detail: string; principal?: string | null }

function caFromRow(r: CaRow): CaRecord {
  return {
    id: r.id, state: r.state as CaRecord['state'], certDer: Buffer.from(r.cert_der), keySealed: Buffer.from(r.key_sealed),
    jwtKid: r.jwt_kid, jwtKeySealed: Buffer.from(r.jwt_key_sealed), notBefore: r.not_before, notAfter: r.not_after,
    createdAt: r.created_at, activateAt: r.activate_at, activatedAt: r.activated_at, retiredAt: r.retired_at,
  };
}

function entryFromRow(r: EntryRow): EntryRecord {
  return {
    id: r.id, spiffeId: r.spiffe_id, selectors: JSON.parse(r.selectors) as string[],
    attributes: JSON.parse(r.attributes) as EntryRecord['attributes'], x509TtlSeconds: r.x509_ttl, jwtTtlSeconds: r.jwt_ttl, apikeyMaxTtlSeconds: r.apikey_max_ttl, createdAt: r.created_at,
    ...(r.revoked_at !== null ? { revokedAt: r.revoked_at, revokedReason: r.revoked_reason ?? '' } : {}),
  };
}

/** SQLite store (better-sqlite3, WAL). One file, one process; statements prepared once. */
export class SqliteStore implements Store {
  private readonly db: Database.Database;
  private readonly stmts;
  /** {@link appendBatch} as a transaction, made once (not per batch). */
  private readonly riskStmts;
  private readonly putRiskTx: Database.Transaction<(rec: RiskStateRecord, previous: string, expect?: { state: string; since: number }) => boolean>;
  private readonly appendAuditTx: Database.Transaction<(records: readonly AuditRecord[]) => void>;
  readonly people: PeopleStore;
  readonly login: SqliteLoginStore;
  readonly devices: SqliteDeviceStore;
  readonly gateways: SqliteGatewayStore;
  readonly federation: SqliteFederationStore;

  constructor(file: string) {
    this.db = new Database(file);
    // The database holds sealed CA keys and token hashes: owner-only, before the WAL files exist
    // (SQLite gives them the database file's mode).
    if (file !== ':memory:') chmodSync(file, 0o600);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('busy_timeout = 5000');
    this.db.pragma('foreign_keys = ON');
    this.db.exec(SCHEMA);
    let backfillTelemetry = false;
    for (const c of ADDED_COLUMNS) {
      const have = this.db.prepare<[], { name: string }>(`PRAGMA table_info(${c.table})`).all().some((r) => r.name === c.column);
      if (!have) this.db.exec(`ALTER TABLE ${c.table} ADD COLUMN ${c.ddl}`);
      if (!have && c.table === 'telemetry_windows') backfillTelemetry = true;
    }
    if (backfillTelemetry) this.db.exec(TELEMETRY_COLUMNS_BACKFILL);
    this.db.exec(ADDED_INDEXES);
    this.migrateAuditTree();
    this.devices = new SqliteDeviceStore(this.db);
    this.gateways = new SqliteGatewayStore(this.db);
    this.federation = new SqliteFederationStore(this.db);
    const db = this.db;
    this.people = new SqlitePeopleStore(db);
    this.login = new SqliteLoginStore(db);
    // After the sub-stores: the triggers are on their tables too.
    db.exec(REPLICA_SCHEMA);
    this.stmts = {
      getMeta: db.prepare<[string], { value: string }>('SELECT value FROM meta WHERE key = ?'),
      setMeta: db.prepare('INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value'),
      incrementMeta: db.prepare<[string], { value: string }>(`INSERT INTO meta(key, value) VALUES (?, '1')
        ON CONFLICT(key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) RETURNING value`),
      listCas: db.prepare<[], CaRow>('SELECT * FROM cas ORDER BY created_at'),
      insertCa: db.prepare(`INSERT INTO cas VALUES (@id, @state, @certDer, @keySealed, @jwtKid, @jwtKeySealed, @notBefore, @notAfter,
        @createdAt, @activateAt, @activatedAt, @retiredAt)`),
      updateCa: db.prepare('UPDATE cas SET state = @state, activated_at = @activatedAt, retired_at = @retiredAt WHERE id = @id'),
      deleteCa: db.prepare('DELETE FROM cas WHERE id = ?'),
      takeLease: db.prepare<[{ name: string; holder: string; now: number; ttl: number }], { epoch: number; expires_at: number }>(`INSERT INTO leases(name, holder, epoch, expires_at)
        VALUES (@name, @holder, 1, @now + @ttl)
        ON CONFLICT(name) DO UPDATE SET holder = excluded.holder,
          epoch = CASE WHEN leases.holder = excluded.holder AND leases.expires_at > @now THEN leases.epoch ELSE leases.epoch + 1 END,
          expires_at = excluded.expires_at
        WHERE leases.holder = excluded.holder OR leases.expires_at <= @now
        RETURNING epoch, expires_at`),
      getLease: db.prepare<[string], { holder: string; epoch: number; expires_at: number }>('SELECT holder, epoch, expires_at FROM leases WHERE name = ?'),
      releaseLease: db.prepare('UPDATE leases SET expires_at = 0 WHERE name = ? AND holder = ?'),
      fenceHeld: db.prepare<[string, string, number, number], { n: number }>('SELECT 1 AS n FROM leases WHERE name = ? AND holder = ? AND epoch = ? AND expires_at > ?'),
      lastChange: db.prepare<[], { seq: number | null }>('SELECT MAX(seq) AS seq FROM change_log'),
      changesSince: db.prepare<[number, number], { seq: number; topic: string; at: number }>('SELECT seq, topic, at FROM change_log WHERE seq > ? ORDER BY seq LIMIT ?'),
      pruneChanges: db.prepare('DELETE FROM change_log WHERE at < ? AND seq < (SELECT MAX(seq) FROM change_log)'),
      caState: db.prepare<[string], { state: string }>('SELECT state FROM cas WHERE id = ?'),
      retireActive: db.prepare("UPDATE cas SET state = 'retired', retired_at = ? WHERE state = 'active'"),
      activate: db.prepare("UPDATE cas SET state = 'active', activated_at = ?, retired_at = NULL WHERE id = ?"),
      insertEntry: db.prepare(`INSERT INTO entries(id, spiffe_id, selectors, attributes, x509_ttl, jwt_ttl, apikey_max_ttl, created_at, revoked_at, revoked_reason)
        VALUES (@id, @spiffeId, @selectors, @attributes, @x509TtlSeconds, @jwtTtlSeconds, @apikeyMaxTtlSeconds, @createdAt, @revokedAt, @revokedReason)`),
      revokeEntry: db.prepare('UPDATE entries SET revoked_at = ?, revoked_reason = ? WHERE id = ? AND revoked_at IS NULL'),
      // Deleting an entry already revoked keeps the first revocation's time and reason.
      insertRevocation: db.prepare(`INSERT INTO revocations(entry_id, spiffe_id, revoked_at, reason, deleted) VALUES (?, ?, ?, ?, ?)
        ON CONFLICT(entry_id) DO UPDATE SET deleted = MAX(deleted, excluded.deleted)`),
      insertSerial: db.prepare('INSERT OR IGNORE INTO svid_serials(serial, entry_id, spiffe_id, not_after, issued_at) VALUES (@serial, @entryId, @spiffeId, @notAfter, @issuedAt)'),
      serialRevoked: db.prepare<[string], { one: number }>('SELECT 1 AS one FROM svid_serials s JOIN revocations r ON r.entry_id = s.entry_id WHERE s.serial = ?'),
      pruneSerials: db.prepare('DELETE FROM svid_serials WHERE not_after < ?'),
      pruneRevocations: db.prepare(`DELETE FROM revocations WHERE deleted = 1 AND revoked_at < ?
        AND NOT EXISTS (SELECT 1 FROM svid_serials s WHERE s.entry_id = revocations.entry_id)`),
      listRevocations: db.prepare<[], RevocationRow>('SELECT * FROM revocations ORDER BY revoked_at DESC, entry_id'),
      listRevokedSerials: db.prepare<[number], { entry_id: string; serial: string; not_after: number }>(
        `SELECT s.entry_id, s.serial, s.not_after FROM svid_serials s JOIN revocations r ON r.entry_id = s.entry_id
         WHERE s.not_after > ? ORDER BY s.not_after DESC, s.serial`),
      getEntry: db.prepare<[string], EntryRow>('SELECT * FROM entries WHERE id = ?'),
      getEntryBySpiffe: db.prepare<[string], EntryRow>('SELECT * FROM entries WHERE spiffe_id = ?'),
      listEntries: db.prepare<[], EntryRow>('SELECT * FROM entries ORDER BY spiffe_id'),
      deleteEntry: db.prepare('DELETE FROM entries WHERE id = ?'),
      deleteEntryTokens: db.prepare('DELETE FROM join_tokens WHERE entry_id = ? AND used_at IS NULL'),
      insertToken: db.prepare('INSERT INTO join_tokens(hash, entry_id, created_at, expires_at) VALUES (@hash, @entryId, @createdAt, @expiresAt)'),
      getToken: db.prepare<[string], { entry_id: string; expires_at: number; used_at: number | null }>(
        'SELECT entry_id, expires_at, used_at FROM join_tokens WHERE hash = ?'),
      useToken: db.prepare('UPDATE join_tokens SET used_at = ? WHERE hash = ? AND used_at IS NULL'),
      insertApiKey: db.prepare(`INSERT INTO api_keys (id, hash, owner, scopes, created_at, expires_at)
        VALUES (@id, @hash, @owner, @scopes, @createdAt, @expiresAt)`),
      getApiKey: db.prepare<[string], ApiKeyRow>('SELECT * FROM api_keys WHERE id = ?'),
      listApiKeys: db.prepare<[number], ApiKeyRow>('SELECT * FROM api_keys ORDER BY created_at DESC, id LIMIT ?'),
      listApiKeysOf: db.prepare<[string, number], ApiKeyRow>('SELECT * FROM api_keys WHERE owner = ? ORDER BY created_at DESC, id LIMIT ?'),
      revokeApiKey: db.prepare<[number, string, string], ApiKeyRow>(
        'UPDATE api_keys SET revoked_at = ?, revoked_reason = ? WHERE id = ? AND revoked_at IS NULL RETURNING *'),
      insertPolicy: db.prepare<[number, string, string, string, string, string], { version: number }>(`INSERT INTO policy_versions(version, created_at, author, reason, hash, policies, schema)
        VALUES ((SELECT COALESCE(MAX(version), 0) + 1 FROM policy_versions), ?, ?, ?, ?, ?, ?) RETURNING version`),
      getPolicy: db.prepare<[number], PolicyRow>('SELECT * FROM policy_versions WHERE version = ?'),
      latestPolicy: db.prepare<[], PolicyRow>('SELECT * FROM policy_versions ORDER BY version DESC LIMIT 1'),
      listPolicies: db.prepare<[number], Omit<PolicyRow, 'policies' | 'schema'>>(
        'SELECT version, created_at, author, reason, hash FROM policy_versions ORDER BY version DESC LIMIT ?'),
      insertSecret: db.prepare('INSERT OR IGNORE INTO secret_policies(id, epoch, signed, created_at, generation) VALUES (?, ?, ?, ?, ?)'),
      getSecret: db.prepare<[string, number], SecretRow>('SELECT * FROM secret_policies WHERE id = ? AND epoch = ?'),
      latestSecret: db.prepare<[string], SecretRow>('SELECT * FROM secret_policies WHERE id = ? AND retired_at IS NULL ORDER BY epoch DESC LIMIT 1'),
      newGeneration: db.prepare('UPDATE secret_policies SET signed = ?, generation = ? WHERE id = ? AND epoch = ? AND generation = ? AND retired_at IS NULL'),
      retireSecret: db.prepare('UPDATE secret_policies SET retired_at = ? WHERE id = ? AND epoch = ? AND retired_at IS NULL'),
      listSecrets: db.prepare<[], SecretRow>('SELECT * FROM secret_policies ORDER BY id, epoch'),
      // Ids are given, not left to AUTOINCREMENT: the id is part of the leaf, hashed before the insert.
      insertAudit: db.prepare('INSERT INTO audit(id, ts, actor, action, target, outcome, code, detail, principal, leaf_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)'),
      leafHashes: db.prepare<[number, number], { leaf_hash: Buffer | null }>('SELECT leaf_hash FROM audit WHERE id > ? AND id <= ? ORDER BY id'),
      insertSubtree: db.prepare('INSERT OR REPLACE INTO audit_subtrees(level, idx, hash) VALUES (?, ?, ?)'),
      getSubtree: db.prepare<[number, number], { hash: Buffer }>('SELECT hash FROM audit_subtrees WHERE level = ? AND idx = ?'),
      insertCheckpoint: db.prepare('INSERT OR IGNORE INTO audit_checkpoints(size, root, note, created_at) VALUES (?, ?, ?, ?)'),
      getCheckpoint: db.prepare<[number], { size: number; root: Buffer; note: string; created_at: number }>('SELECT * FROM audit_checkpoints WHERE size = ?'),
      listCheckpoints: db.prepare<[number, number], { size: number; root: Buffer; note: string; created_at: number }>('SELECT * FROM audit_checkpoints WHERE size > ? ORDER BY size LIMIT ?'),
      latestCheckpoint: db.prepare<[], { size: number; root: Buffer; note: string; created_at: number }>('SELECT * FROM audit_checkpoints ORDER BY size DESC LIMIT 1'),
      countCosignatures: db.prepare<[number], { n: number }>('SELECT COUNT(*) AS n FROM audit_cosignatures WHERE size = ?'),
      hasCosignature: db.prepare<[number, string], { one: number }>('SELECT 1 AS one FROM audit_cosignatures WHERE size = ? AND witness_key = ?'),
      putCosignature: db.prepare(`INSERT INTO audit_cosignatures(size, witness_key, name, key_id, timestamp, line, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT(size, witness_key) DO UPDATE SET timestamp = excluded.timestamp, line = excluded.line, created_at = excluded.created_at
        WHERE excluded.timestamp > audit_cosignatures.timestamp`),
      listCosignatures: db.prepare<[number], { size: number; witness_key: string; name: string; key_id: string; timestamp: number; line: string; created_at: number }>(
        'SELECT * FROM audit_cosignatures WHERE size = ? ORDER BY created_at, witness_key'),
      insertMetaIfAbsent: db.prepare('INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)'),
      // Decision sampling: each statement is a seek or a short range scan of audit_decision_sample.
      nextEnforcer: db.prepare<[string], { v: string | null }>("SELECT MIN(actor) AS v FROM audit WHERE action = 'decision' AND actor > ?"),
      nextPrincipal: db.prepare<[string, string], { v: string | null }>("SELECT MIN(principal) AS v FROM audit WHERE action = 'decision' AND actor = ? AND principal > ?"),
      hasUnindexed: db.prepare<[string], { v: number }>("SELECT 1 AS v FROM audit WHERE action = 'decision' AND actor = ? AND principal IS NULL LIMIT 1"),
      groupIds: db.prepare<[string, string | null, number, number], { id: number }>(
        "SELECT id FROM audit WHERE action = 'decision' AND actor = ? AND principal IS ? AND id < ? ORDER BY id DESC LIMIT ?"),
      sampledRows: db.prepare<[number, string], Omit<AuditRow, 'detail' | 'principal'> & { detail: string | null }>(
        `SELECT id, ts, actor, action, target, outcome, code, CASE WHEN length(detail) <= ? THEN detail END AS detail
         FROM audit WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id`),
    };
    this.riskStmts = {
      get: db.prepare<[string], RiskRow>('SELECT * FROM risk_states WHERE spiffe_id = ?'),
      list: db.prepare<[number], RiskRow>("SELECT * FROM risk_states ORDER BY state = 'normal', score DESC, spiffe_id LIMIT ?"),
      upsert: db.prepare(`INSERT INTO risk_states(spiffe_id, state, score, since, until, reasons, set_by, actor, note)
        VALUES (@spiffeId, @state, @score, @since, @until, @reasons, @setBy, @actor, @note)
        ON CONFLICT(spiffe_id) DO UPDATE SET state = excluded.state, score = excluded.score, since = excluded.since, until = excluded.until,
        reasons = excluded.reasons, set_by = excluded.set_by, actor = excluded.actor, note = excluded.note`),
      history: db.prepare(`INSERT INTO risk_history(spiffe_id, at, state, previous, score, until, reasons, set_by, actor, note)
        VALUES (@spiffeId, @since, @state, @previous, @score, @until, @reasons, @setBy, @actor, @note)`),
      listHistory: db.prepare<[string, number], RiskHistoryRow>('SELECT * FROM risk_history WHERE spiffe_id = ? ORDER BY id DESC LIMIT ?'),
    };
    this.putRiskTx = db.transaction((rec: RiskStateRecord, previous: string, expect?: { state: string; since: number }): boolean => {
      if (expect !== undefined) {
        const cur = this.riskStmts.get.get(rec.spiffeId);
        if (cur === undefined || cur.state !== expect.state || cur.since !== expect.since) return false;
      }
      const row = { ...rec, reasons: JSON.stringify(rec.reasons) };
      this.riskStmts.upsert.run(row);
      this.riskStmts.history.run({ ...row, previous });
      return true;
    });
    this.appendAuditTx = db.transaction((records: readonly AuditRecord[]) => this.appendBatch(records));
  }

  async getMeta(key: string): Promise<string | undefined> {
    return this.stmts.getMeta.get(key)?.value;
  }

  async setMeta(key: string, value: string): Promise<void> {
    this.stmts.setMeta.run(key, value);
  }

  async incrementMeta(key: string): Promise<number> {
    return Number(this.stmts.incrementMeta.get(key)!.value);
  }

  async listCas(): Promise<CaRecord[]> {
    return this.stmts.listCas.all().map(caFromRow);
  }

  async insertCa(ca: CaRecord): Promise<void> {
    this.stmts.insertCa.run(ca);
  }

  async updateCaState(id: string, patch: Pick<CaRecord, 'state' | 'activatedAt' | 'retiredAt'>): Promise<void> {
    this.stmts.updateCa.run({ id, ...patch });
  }

  async deleteCa(id: string): Promise<void> {
    this.stmts.deleteCa.run(id);
  }

  async tryLease(name: string, holder: string, ttlMs: number): Promise<LeaseGrant> {
    // One machine, one clock: SQLite's processes share the host's.
    const row = this.stmts.takeLease.get({ name, holder, now: Date.now(), ttl: ttlMs });
    if (row) return { held: true, holder, epoch: row.epoch, expiresAt: row.expires_at };
    const cur = this.stmts.getLease.get(name)!;
    return { held: false, holder: cur.holder, epoch: cur.epoch, expiresAt: cur.expires_at };
  }

  async releaseLease(name: string, holder: string): Promise<void> {
    this.stmts.releaseLease.run(name, holder);
  }

  async lastChange(): Promise<number> {
    return this.stmts.lastChange.get()?.seq ?? 0;
  }

  async changesSince(seq: number, limit: number): Promise<ChangeRecord[]> {
    return this.stmts.changesSince.all(seq, limit);
  }

  async pruneChanges(before: number): Promise<number> {
    return this.stmts.pruneChanges.run(before).changes;
  }

  async activateCa(id: string, at: number, fence?: LeaseFence): Promise<number | undefined> {
    return this.db.transaction((): number | undefined => {
      if (fence && !this.stmts.fenceHeld.get(fence.name, fence.holder, fence.epoch, Date.now())) return undefined;
      if (this.stmts.caState.get(id)?.state !== 'prepared') return undefined;
      this.stmts.retireActive.run(at);
      this.stmts.activate.run(at, id);
      return Number(this.stmts.incrementMeta.get('bundle_sequence')!.value);
    }).immediate();
  }

  async insertEntry(e: EntryRecord): Promise<void> {
    this.stmts.insertEntry.run({
      ...e, selectors: JSON.stringify(e.selectors), attributes: JSON.stringify(e.attributes), revokedAt: e.revokedAt ?? null, revokedReason: e.revokedReason ?? null,
    });
  }

  async getEntry(id: string): Promise<EntryRecord | undefined> {
    const r = this.stmts.getEntry.get(id);
    return r && entryFromRow(r);
  }

  async getEntryBySpiffeId(spiffeId: string): Promise<EntryRecord | undefined> {
    const r = this.stmts.getEntryBySpiffe.get(spiffeId);
    return r && entryFromRow(r);
  }

  async listEntries(): Promise<EntryRecord[]> {
    return this.stmts.listEntries.all().map(entryFromRow);
  }

  async deleteEntry(id: string, at = Date.now()): Promise<boolean> {
    return this.db.transaction(() => {
      const row = this.stmts.getEntry.get(id);
      if (!row) return false;
      this.stmts.insertRevocation.run(id, row.spiffe_id, at, 'entry deleted', 1);
      this.stmts.deleteEntryTokens.run(id);
      return this.stmts.deleteEntry.run(id).changes > 0;
    }).immediate();
  }

  async revokeEntry(id: string, at: number, reason: string): Promise<RevokeResult> {
    return this.db.transaction((): RevokeResult => {
      const row = this.stmts.getEntry.get(id);
      if (!row) return { ok: false, reason: 'missing' };
      if (row.revoked_at !== null) return { ok: false, reason: 'already', entry: entryFromRow(row) };
      this.stmts.revokeEntry.run(at, reason, id);
      this.stmts.insertRevocation.run(id, row.spiffe_id, at, reason, 0);
      return { ok: true, entry: entryFromRow({ ...row, revoked_at: at, revoked_reason: reason }) };
    }).immediate();
  }

  async recordIssuedSvid(rec: IssuedSvidRecord): Promise<void> {
    this.stmts.insertSerial.run(rec);
  }

  async isSerialRevoked(serial: string): Promise<boolean> {
    return this.stmts.serialRevoked.get(serial) !== undefined;
  }

  async listRevocations(now: number, graceMs: number): Promise<RevocationRecord[]> {
    return this.db.transaction(() => {
      this.stmts.pruneSerials.run(now - graceMs);
      this.stmts.pruneRevocations.run(now - graceMs);
      const serials = new Map<string, { serial: string; notAfter: number }[]>();
      for (const s of this.stmts.listRevokedSerials.all(now)) {
        let list = serials.get(s.entry_id);
        if (!list) serials.set(s.entry_id, (list = []));
        list.push({ serial: s.serial, notAfter: s.not_after });
      }
      return this.stmts.listRevocations.all().map((r) => ({
        entryId: r.entry_id, spiffeId: r.spiffe_id, revokedAt: r.revoked_at, reason: r.reason, deleted: r.deleted === 1, serials: serials.get(r.entry_id) ?? [],
      }));
    }).immediate();
  }

  async insertJoinToken(t: JoinTokenRecord): Promise<void> {
    this.stmts.insertToken.run(t);
  }

  async consumeJoinToken(hash: string, now: number): Promise<TokenConsumeResult> {
    return this.db.transaction((): TokenConsumeResult => {
      const row = this.stmts.getToken.get(hash);
      if (!row) return { ok: false, reason: 'unknown' };
      if (row.used_at !== null) return { ok: false, reason: 'used' };
      if (row.expires_at <= now) return { ok: false, reason: 'expired' };
      this.stmts.useToken.run(now, hash);
      return { ok: true, entryId: row.entry_id };
    }).immediate();
  }

  async insertApiKey(k: ApiKeyRecord): Promise<void> {
    this.stmts.insertApiKey.run({ ...k, scopes: JSON.stringify(k.scopes) });
  }

  async getApiKey(id: string): Promise<ApiKeyRecord | undefined> {
    const r = this.stmts.getApiKey.get(id);
    return r && apiKeyFromRow(r);
  }

  async listApiKeys(q: { owner?: string; limit: number }): Promise<ApiKeyRecord[]> {
    const rows = q.owner === undefined ? this.stmts.listApiKeys.all(q.limit) : this.stmts.listApiKeysOf.all(q.owner, q.limit);
    return rows.map(apiKeyFromRow);
  }

  async revokeApiKey(id: string, at: number, reason: string): Promise<ApiKeyRecord | undefined> {
    const r = this.stmts.revokeApiKey.get(at, reason, id) ?? this.stmts.getApiKey.get(id);
    return r && apiKeyFromRow(r);
  }

  async insertPolicyVersion(rec: Omit<PolicyVersionRecord, 'version'>): Promise<PolicyVersionRecord> {
    const { version } = this.stmts.insertPolicy.get(rec.createdAt, rec.author, rec.reason, rec.hash, JSON.stringify(rec.policies), JSON.stringify(rec.schema))!;
    return { ...rec, version };
  }

  async getPolicyVersion(version: number): Promise<PolicyVersionRecord | undefined> {
    const r = this.stmts.getPolicy.get(version);
    return r && policyFromRow(r);
  }

  async latestPolicyVersion(): Promise<PolicyVersionRecord | undefined> {
    const r = this.stmts.latestPolicy.get();
    return r && policyFromRow(r);
  }

  async listPolicyVersions(limit: number): Promise<Omit<PolicyVersionRecord, 'policies' | 'schema'>[]> {
    return this.stmts.listPolicies.all(limit).map((r) => ({ version: r.version, createdAt: r.created_at, author: r.author, reason: r.reason, hash: r.hash }));
  }

  async insertSecretPolicy(row: SecretPolicyRow): Promise<boolean> {
    return this.stmts.insertSecret.run(row.id, row.epoch, row.signed, row.createdAt, row.generation).changes > 0;
  }

  async replaceSecretPolicyGeneration(id: string, epoch: number, fromGeneration: number, generation: number, signed: string): Promise<boolean> {
    return this.stmts.newGeneration.run(signed, generation, id, epoch, fromGeneration).changes > 0;
  }

  async retireSecretPolicy(id: string, epoch: number, at: number): Promise<boolean> {
    return this.stmts.retireSecret.run(at, id, epoch).changes > 0;
  }

  async getSecretPolicy(id: string, epoch?: number): Promise<SecretPolicyRow | undefined> {
    const r = epoch === undefined ? this.stmts.latestSecret.get(id) : this.stmts.getSecret.get(id, epoch);
    return r && secretFromRow(r);
  }

  async listSecretPolicies(): Promise<SecretPolicyRow[]> {
    return this.stmts.listSecrets.all().map(secretFromRow);
  }

  async appendAudit(records: readonly AuditRecord[]): Promise<void> {
    if (records.length === 0) return;
    // IMMEDIATE: the frontier is read and written under the write lock, so processes sharing the file
    // (`--workers`) append one after the other and every id is the tree size + 1.
    this.appendAuditTx.immediate(records);
  }

  /**
   * The frontier as this process last wrote it, with its stored text: reused while the stored text
   * is still that text (no other process appended since, no failed commit), so a batch does not
   * parse and hex-decode the frontier again.
   */
  private frontierCache: { text: string; frontier: MerkleFrontier } | undefined;

  /** One batch, inside {@link appendAuditTx}: rows with their leaf hashes, subtrees, and the frontier. */
  private appendBatch(records: readonly AuditRecord[]): void {
    const text = this.stmts.getMeta.get(FRONTIER_KEY)?.value;
    const cached = this.frontierCache;
    // Mutated below: dropped until this transaction has written its state.
    this.frontierCache = undefined;
    const frontier = cached !== undefined && cached.text === text ? cached.frontier : parseFrontier(text);
    for (const r of records) {
      const id = frontier.size + 1;
      // The detail is encoded once: its canonical JSON is the stored text and the leaf's detail.
      const detail = auditDetailJson(r.detail);
      const h = auditLeafHash(id, r, detail.canonical);
      this.stmts.insertAudit.run(id, r.ts, r.actor, r.action, r.target, r.outcome, r.code, detail.text, r.principal ?? null, h);
      frontier.append(h, this.subtreeSink);
    }
    const next = JSON.stringify(frontier.toJSON());
    this.stmts.setMeta.run(FRONTIER_KEY, next);
    this.frontierCache = { text: next, frontier };
  }

  async auditTreeHead(): Promise<AuditTreeHead> {
    const f = this.readFrontier();
    return { size: f.size, rootHash: f.root() };
  }

  auditLeafSource(): LeafHashSource {
    return {
      leafHashes: (start, end) => this.stmts.leafHashes.all(start, end).map((r) => {
        if (r.leaf_hash === null) throw treeStateInvalid('an audit record has no leaf hash');
        return Buffer.from(r.leaf_hash);
      }),
      subtreeHash: (level, index) => {
        const r = level >= SUBTREE_MIN_LEVEL ? this.stmts.getSubtree.get(level, index) : undefined;
        return r && Buffer.from(r.hash);
      },
    };
  }

  /** Stores the complete subtrees an append forms, from SUBTREE_MIN_LEVEL up (MerkleFrontier.append). */
  private readonly subtreeSink = (level: number, index: number, hash: Buffer): void => {
    if (level >= SUBTREE_MIN_LEVEL) this.stmts.insertSubtree.run(level, index, hash);
  };

  async insertCheckpoint(rec: CheckpointRecord): Promise<boolean> {
    return this.stmts.insertCheckpoint.run(rec.size, rec.rootHash, rec.note, rec.createdAt).changes > 0;
  }

  async getCheckpoint(size?: number): Promise<CheckpointRecord | undefined> {
    const r = size === undefined ? this.stmts.latestCheckpoint.get() : this.stmts.getCheckpoint.get(size);
    return r && { size: r.size, rootHash: Buffer.from(r.root), note: r.note, createdAt: r.created_at };
  }

  async putCosignature(rec: CosignatureRecord, maxPerCheckpoint: number): Promise<boolean> {
    return this.db.transaction(() => {
      if (!this.stmts.hasCosignature.get(rec.size, rec.witnessKey) && this.stmts.countCosignatures.get(rec.size)!.n >= maxPerCheckpoint) return false;
      this.stmts.putCosignature.run(rec.size, rec.witnessKey, rec.name, rec.keyId, rec.timestamp, rec.line, rec.createdAt);
      return true;
    }).immediate();
  }

  async listCosignatures(size: number): Promise<CosignatureRecord[]> {
    return this.stmts.listCosignatures.all(size).map((r) => ({
      size: r.size, witnessKey: r.witness_key, name: r.name, keyId: r.key_id, timestamp: r.timestamp, line: r.line, createdAt: r.created_at,
    }));
  }

  async listCheckpoints(afterSize: number | undefined, limit: number): Promise<CheckpointRecord[]> {
    return this.stmts.listCheckpoints.all(afterSize ?? -1, limit).map((r) => ({ size: r.size, rootHash: Buffer.from(r.root), note: r.note, createdAt: r.created_at }));
  }

  async listMeta(prefix: string): Promise<{ key: string; value: string }[]> {
    // substr, not LIKE: a prefix holding % or _ is taken literally.
    return this.db.prepare<[number, string], { key: string; value: string }>('SELECT key, value FROM meta WHERE substr(key, 1, ?) = ? ORDER BY key')
      .all(prefix.length, prefix);
  }

  async replaceMeta(key: string, expected: string, value: string): Promise<boolean> {
    return this.db.prepare('UPDATE meta SET value = ? WHERE key = ? AND value = ?').run(value, key, expected).changes === 1;
  }

  async deleteMetaIf(key: string, expected: string): Promise<boolean> {
    return this.db.prepare('DELETE FROM meta WHERE key = ? AND value = ?').run(key, expected).changes === 1;
  }

  async setMetaIfAbsent(key: string, value: string): Promise<string> {
    this.stmts.insertMetaIfAbsent.run(key, value);
    return this.stmts.getMeta.get(key)!.value;
  }

  private readFrontier(): MerkleFrontier {
    return parseFrontier(this.stmts.getMeta.get(FRONTIER_KEY)?.value);
  }

  /**
   * Builds the audit tree of a database that has none yet (new, or made before the tree existed):
   * hashes every row in id order once and stores the frontier, in one transaction. The append-only
   * trigger is dropped and re-created inside that transaction for the one-time leaf-hash update, so
   * no other writer ever sees the table without it. Ids must run 1..n without gaps (leaf index =
   * id − 1); a database where they do not is refused.
   */
  private migrateAuditTree(): void {
    this.db.transaction(() => {
      const { n, top } = this.db.prepare<[], { n: number; top: number | null }>('SELECT COUNT(*) AS n, MAX(id) AS top FROM audit').get()!;
      const stored = this.db.prepare<[string], { value: string }>('SELECT value FROM meta WHERE key = ?').get(FRONTIER_KEY);
      if (stored) {
        // The next id is the frontier's size + 1: a table and a frontier that disagree (a restored or
        // edited file) would make every append fail, so say why at start instead.
        let size: unknown;
        try {
          size = (JSON.parse(stored.value) as { size?: unknown } | null)?.size;
        } catch {
          throw treeStateInvalid('the audit tree frontier is not JSON');
        }
        if (size !== n || (top ?? 0) !== n) throw treeStateInvalid(`the audit tree holds ${String(size)} leaves but the table ${n} records (last id ${top ?? 0})`);
        return;
      }
      if ((top ?? 0) !== n) throw treeStateInvalid(`audit ids are not 1..${n} without gaps: the log cannot be rebuilt`);
      const frontier = new MerkleFrontier();
      if (n > 0) {
        this.db.exec('DROP TRIGGER IF EXISTS audit_no_update');
        const update = this.db.prepare('UPDATE audit SET leaf_hash = ? WHERE id = ?');
        const subtree = this.db.prepare('INSERT OR REPLACE INTO audit_subtrees(level, idx, hash) VALUES (?, ?, ?)');
        const sink = (level: number, index: number, hash: Buffer): void => {
          if (level >= SUBTREE_MIN_LEVEL) subtree.run(level, index, hash);
        };
        // In chunks: better-sqlite3 cannot update while a SELECT is being iterated, and a whole
        // table in memory at once is not needed.
        const rows = this.db.prepare<[number, number], AuditRow & { principal: string | null }>(
          'SELECT id, ts, actor, action, target, outcome, code, detail, principal FROM audit WHERE id > ? AND id <= ? ORDER BY id');
        for (let after = 0; after < n; after += 1000) {
          for (const r of rows.all(after, after + 1000)) {
            const h = rowLeafHash(r);
            update.run(h, r.id);
            frontier.append(h, sink);
          }
        }
        this.db.exec(NO_UPDATE_TRIGGER);
      }
      this.db.prepare('INSERT INTO meta(key, value) VALUES (?, ?)').run(FRONTIER_KEY, JSON.stringify(frontier.toJSON()));
    }).immediate();
  }

  async listAudit(q: AuditQuery): Promise<StoredAuditRecord[]> {
    const where: string[] = [];
    const args: (string | number)[] = [];
    if (q.afterId !== undefined) { where.push('id > ?'); args.push(q.afterId); }
    if (q.untilId !== undefined) { where.push('id <= ?'); args.push(q.untilId); }
    if (q.action !== undefined) { where.push('action = ?'); args.push(q.action); }
    if (q.outcome !== undefined) { where.push('outcome = ?'); args.push(q.outcome); }
    const limit = Math.min(Math.max(q.limit ?? 100, 1), 10_000);
    const sql = `SELECT * FROM audit ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id ${q.oldestFirst ? 'ASC' : 'DESC'} LIMIT ${limit}`;
    const rows = this.db.prepare<(string | number)[], AuditRow>(sql).all(...args);
    if (q.oldestFirst) rows.reverse();
    // The principal is returned when set: it is part of the record's Merkle leaf (auditLeafData).
    return rows.reverse().map((r) => ({
      id: r.id, ts: r.ts, actor: r.actor, action: r.action, target: r.target, outcome: r.outcome as AuditRecord['outcome'],
      code: r.code, detail: JSON.parse(r.detail) as Record<string, unknown>, ...(r.principal != null ? { principal: r.principal } : {}),
    }));
  }

  async sampleDecisions(q: DecisionSampleQuery): Promise<DecisionSample> {
    const maxTotal = Math.max(0, Math.floor(q.maxTotal));
    const enforcers: string[] = [];
    for (let e = this.stmts.nextEnforcer.get('')?.v; e != null && enforcers.length < maxTotal; e = this.stmts.nextEnforcer.get(e)?.v) enforcers.push(e);
    const ids = await shareEnforcers(enforcers, q.perEnforcer, maxTotal, (enforcer, quota) => this.sampleEnforcer(enforcer, quota));
    let oversized = 0;
    const records: StoredAuditRecord[] = [];
    // json_each takes the ids as one JSON array; in chunks so no single statement holds too many.
    for (let i = 0; i < ids.length; i += 1000) {
      for (const r of this.stmts.sampledRows.all(q.maxDetailChars, JSON.stringify(ids.slice(i, i + 1000)))) {
        if (r.detail === null) {
          oversized += 1;
          continue;
        }
        records.push({ ...r, outcome: r.outcome as AuditRecord['outcome'], detail: JSON.parse(r.detail) as Record<string, unknown> });
      }
    }
    records.sort((a, b) => a.id - b.id);
    return { records, enforcers: enforcers.length, oversized };
  }

  /** The ids of up to `quota` decisions of one enforcer (shareQuota); rows stored before the principal column form one group. */
  private sampleEnforcer(enforcer: string, quota: number): Promise<number[]> {
    const principals: (string | null)[] = [];
    if (this.stmts.hasUnindexed.get(enforcer)) principals.push(null);
    for (let p = this.stmts.nextPrincipal.get(enforcer, '')?.v; p != null && principals.length < quota; p = this.stmts.nextPrincipal.get(enforcer, p)?.v) principals.push(p);
    return shareQuota(principals, quota, (principal, before, room) => this.stmts.groupIds.all(enforcer, principal, before, room).map((r) => r.id));
  }

  async insertTelemetry(rows: readonly TelemetryRow[], keep: TelemetryRetention): Promise<void> {
    const db = this.db;
    const insert = db.prepare(`INSERT INTO telemetry_windows(ts, received_at, reported_by, caller, callee, window, reporter, caller_site, callee_site, requests, denials, errors, bytes)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`);
    db.transaction(() => {
      for (const r of rows) {
        const w = r.window;
        insert.run(Date.parse(w.ts), r.receivedAt, r.reportedBy, w.caller, w.callee, JSON.stringify(w), w.reporter, w.caller_site, w.callee_site, w.requests, w.denials, w.errors, w.bytes_in + w.bytes_out);
      }
      const last = db.prepare<[], { id: number | null }>('SELECT MAX(id) AS id FROM telemetry_windows').get()?.id ?? 0;
      // Both prunes are range deletions on an index (the rowid, received_at).
      db.prepare('DELETE FROM telemetry_windows WHERE id <= ?').run(last - keep.maxRows);
      db.prepare('DELETE FROM telemetry_windows WHERE received_at < ?').run(keep.now - keep.maxAgeMs);
    })();
  }

  async listTelemetry(q: TelemetryQuery): Promise<StoredTelemetryRow[]> {
    const where: string[] = [];
    const args: (string | number)[] = [];
    if (q.identity !== undefined) { where.push('(caller = ? OR callee = ?)'); args.push(q.identity, q.identity); }
    if (q.since !== undefined) { where.push('ts >= ?'); args.push(q.since); }
    if (q.after !== undefined) { where.push('id > ?'); args.push(q.after); }
    const limit = Math.min(Math.max(Math.floor(q.limit), 1), 10_000);
    const order = q.after !== undefined ? 'ASC' : 'DESC';
    const rows = this.db.prepare<(string | number)[], { id: number; received_at: number; reported_by: string; window: string }>(
      `SELECT id, received_at, reported_by, window FROM telemetry_windows ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id ${order} LIMIT ${limit}`).all(...args);
    if (order === 'DESC') rows.reverse();
    return rows.map((r) => ({ id: r.id, receivedAt: r.received_at, reportedBy: r.reported_by, window: JSON.parse(r.window) as StoredTelemetryRow['window'] }));
  }

  async getRiskState(spiffeId: string): Promise<RiskStateRecord | undefined> {
    const r = this.riskStmts.get.get(spiffeId);
    return r && riskFromRow(r);
  }

  async listRiskStates(limit: number): Promise<RiskStateRecord[]> {
    return this.riskStmts.list.all(limit).map(riskFromRow);
  }

  async putRiskState(rec: RiskStateRecord, previous: RiskStateRecord['state'], expect?: { state: RiskStateRecord['state']; since: number }): Promise<boolean> {
    return this.putRiskTx(rec, previous, expect);
  }

  async listRiskHistory(spiffeId: string, limit: number): Promise<RiskHistoryRecord[]> {
    return this.riskStmts.listHistory.all(spiffeId, limit).map((r) => {
      const { since: _since, ...rest } = riskFromRow({ ...r, since: r.at });
      return { ...rest, at: r.at, previous: r.previous as RiskHistoryRecord['previous'] };
    });
  }

  async aggregateTelemetryEdges(since: number, until: number): Promise<TelemetryEdgeAggregate[]> {
    return this.mapStmts.telemetry.all(since, until);
  }

  async aggregateDecisionEdges(since: number, until: number): Promise<DecisionEdgeAggregate[]> {
    return this.mapStmts.decisions.all(since, until);
  }

  async listEdgeDecisions(caller: string, callee: string, limit: number): Promise<StoredAuditRecord[]> {
    const n = Math.min(Math.max(Math.floor(limit), 1), 1000);
    return this.mapStmts.edgeDecisions.all(callee, caller, n).map((r) => ({
      id: r.id, ts: r.ts, actor: r.actor, action: r.action, target: r.target, outcome: r.outcome as AuditRecord['outcome'],
      code: r.code, detail: JSON.parse(r.detail) as Record<string, unknown>, ...(r.principal != null ? { principal: r.principal } : {}),
    }));
  }

  /** The map's statements (made on first use: most stores never serve the console). */
  private get mapStmts() {
    this.#mapStmts ??= {
      // One pass over the windows of the range (telemetry_by_ts), reading the figures' columns.
      telemetry: this.db.prepare<[number, number], TelemetryEdgeAggregate>(`SELECT caller, callee, reporter,
          MAX(caller_site) AS callerSite, MAX(callee_site) AS calleeSite, COUNT(*) AS windows,
          SUM(requests) AS requests, SUM(denials) AS denials, SUM(errors) AS errors, SUM(bytes) AS bytes
        FROM telemetry_windows WHERE ts >= ? AND ts < ? GROUP BY caller, callee, reporter`),
      // audit_decision_ts (partial: decisions only). actor = target: a sidecar's decision about a call to itself.
      decisions: this.db.prepare<[number, number], DecisionEdgeAggregate>(`SELECT principal AS caller, target AS callee,
          SUM(outcome = 'success') AS allowed, SUM(outcome = 'denied') AS denied
        FROM audit WHERE action = 'decision' AND ts >= ? AND ts < ? AND actor = target AND principal IS NOT NULL GROUP BY principal, target`),
      // audit_decision_sample (action, actor, principal, id): a seek, then the newest rows.
      edgeDecisions: this.db.prepare<[string, string, number], AuditRow>(
        "SELECT id, ts, actor, action, target, outcome, code, detail, principal FROM audit WHERE action = 'decision' AND actor = ? AND principal = ? AND target = actor ORDER BY id DESC LIMIT ?"),
    };
    return this.#mapStmts;
  }

  #mapStmts: { telemetry: Database.Statement<[number, number], TelemetryEdgeAggregate>; decisions: Database.Statement<[number, number], DecisionEdgeAggregate>; edgeDecisions: Database.Statement<[string, string, number], AuditRow> } | undefined;

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }
}
