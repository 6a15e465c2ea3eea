/**
 * PostgreSQL store (`tessera server --store postgres://...`): the same contract as {@link SqliteStore}
 * (src/server/store/contract.ts runs the same cases on both) over a `pg` Pool.
 *
 * - Schema: versioned migrations in `schema_migrations`, applied in one transaction under an advisory
 *   lock, so two replicas starting at once do not both migrate. Sub-stores add their own migrations
 *   (`PostgresStoreOptions.migrations`, versions of their own range).
 * - Types: BIGINT for times and ids (parsed to numbers: all are below 2^53), BYTEA for keys and
 *   hashes, TEXT COLLATE "C" for strings (bytewise order, as SQLite's), JSON kept as the exact text
 *   SQLite stores (the audit detail's text is part of its Merkle leaf).
 * - Transactions where SQLite has them; single-use tokens by `UPDATE ... RETURNING`; audit appends
 *   serialised by locking the frontier's meta row (`SELECT ... FOR UPDATE`).
 * - The audit tree's leaf source (synchronous for the proof code) is a per-process copy of the leaf
 *   hashes, brought up to date from the table before each use (`auditLeafSource()` is async here).
 */
import type { FederationStore } from './federation.sqlite.js';
import { inTransaction as withTransaction } from './pg-substore-util.js';
import pg from 'pg';
import { auditDetailJson, auditLeafHash } from '../../core/audit-leaf.js';
import { TesseraError } from '../../core/errors.js';
import { MerkleFrontier, type LeafHashSource } from '../../core/merkle.js';
import { parseStoreUrl, redactUrl } from './store-url.js';
import { shareEnforcers, shareQuota } from './decision-sample.js';
import { FRONTIER_KEY, SUBTREE_MIN_LEVEL, parseFrontier, treeStateInvalid } from './audit-frontier.js';
import type {
  ApiKeyRecord, AuditQuery, AuditRecord, AuditTreeHead, CaRecord, CheckpointRecord, CosignatureRecord, DecisionEdgeAggregate, DecisionSample,
  DecisionSampleQuery, DeviceStore, EntryRecord, GatewayStore, IssuedSvidRecord, JoinTokenRecord, LoginStore, PeopleStore, PolicyVersionRecord,
  RevocationRecord, RevokeResult, RiskHistoryRecord, RiskStateRecord, SecretPolicyRow, Store, StoredAuditRecord, StoredTelemetryRow,
  TelemetryEdgeAggregate, TelemetryQuery, TelemetryRetention, TelemetryRow, TokenConsumeResult, ChangeRecord, LeaseFence, LeaseGrant,
} from './store.js';

/** One schema change. Versions 1-99: the core store; 100 and up: the sub-stores (people, login, devices, gateways). */
export interface PgMigration {
  version: number;
  name: string;
  sql: string;
}

/** The sub-stores, built on the same pool (src/server/store/*-postgres.ts). */
export interface PostgresSubStores {
  people: PeopleStore;
  login: LoginStore;
  devices: DeviceStore;
  gateways: GatewayStore;
  federation: FederationStore;
}

export interface PostgresStoreOptions {
  /** Builds the sub-stores once the schema is migrated; the calls of a missing one are refused (TESSERA_CONFIG_INVALID). */
  subStores?: (pool: pg.Pool) => Partial<PostgresSubStores>;
  /** The sub-stores' migrations, applied with the core ones (same transaction and lock). */
  migrations?: readonly PgMigration[];
  /** Connect timeout (ms) of each connection; default 5000. */
  connectTimeoutMs?: number;
  /** Pool size; default 10. */
  maxConnections?: number;
  /** Called with pool errors (an idle connection lost): never the URL. */
  onError?: (err: Error) => void;
}

const T = 'TEXT COLLATE "C"';

/** The LISTEN/NOTIFY channel of the change log (payload: the change's sequence number). */
export const CHANGE_CHANNEL = 'tessera_changes';

export const CORE_MIGRATIONS: readonly PgMigration[] = [{
  version: 1,
  name: 'core store',
  sql: `
CREATE TABLE meta (key ${T} PRIMARY KEY, value ${T} NOT NULL);
CREATE TABLE cas (
  id ${T} PRIMARY KEY, state ${T} NOT NULL, cert_der BYTEA NOT NULL, key_sealed BYTEA NOT NULL,
  jwt_kid ${T} NOT NULL, jwt_key_sealed BYTEA NOT NULL, not_before BIGINT NOT NULL, not_after BIGINT NOT NULL,
  created_at BIGINT NOT NULL, activate_at BIGINT, activated_at BIGINT, retired_at BIGINT
);
CREATE TABLE entries (
  id ${T} PRIMARY KEY, spiffe_id ${T} NOT NULL UNIQUE, selectors ${T} NOT NULL, attributes ${T} NOT NULL,
  x509_ttl BIGINT NOT NULL, jwt_ttl BIGINT NOT NULL, apikey_max_ttl BIGINT NOT NULL DEFAULT 86400, created_at BIGINT NOT NULL,
  revoked_at BIGINT, revoked_reason ${T}
);
CREATE TABLE join_tokens (
  hash ${T} PRIMARY KEY, entry_id ${T} NOT NULL, created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, used_at BIGINT
);
CREATE TABLE api_keys (
  id ${T} PRIMARY KEY, hash ${T} NOT NULL, owner ${T} NOT NULL, scopes ${T} NOT NULL, created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL,
  revoked_at BIGINT, revoked_reason ${T}
);
CREATE INDEX api_keys_owner ON api_keys(owner, created_at);
CREATE TABLE audit (
  id BIGINT PRIMARY KEY, ts BIGINT NOT NULL, actor ${T} NOT NULL, action ${T} NOT NULL, target ${T} NOT NULL,
  outcome ${T} NOT NULL CHECK (outcome IN ('denied', 'success')), code ${T} NOT NULL, detail ${T} NOT NULL,
  principal ${T}, leaf_hash BYTEA NOT NULL
);
CREATE INDEX audit_action ON audit(action, id);
CREATE INDEX audit_decision_sample ON audit(action, actor, principal, id);
CREATE INDEX audit_decision_ts ON audit(ts) WHERE action = 'decision';
CREATE FUNCTION tessera_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'audit is append-only'; END $$;
CREATE TRIGGER audit_no_update BEFORE UPDATE OR DELETE ON audit FOR EACH ROW EXECUTE FUNCTION tessera_audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit FOR EACH STATEMENT EXECUTE FUNCTION tessera_audit_append_only();
CREATE TABLE policy_versions (
  version BIGINT PRIMARY KEY, created_at BIGINT NOT NULL, author ${T} NOT NULL, reason ${T} NOT NULL,
  hash ${T} NOT NULL, policies ${T} NOT NULL, schema ${T} NOT NULL
);
CREATE TABLE secret_policies (
  id ${T} NOT NULL, epoch BIGINT NOT NULL, signed ${T} NOT NULL, created_at BIGINT NOT NULL,
  generation BIGINT NOT NULL DEFAULT 1, retired_at BIGINT, PRIMARY KEY (id, epoch)
);
CREATE TABLE svid_serials (
  serial ${T} PRIMARY KEY, entry_id ${T} NOT NULL, spiffe_id ${T} NOT NULL, not_after BIGINT NOT NULL, issued_at BIGINT NOT NULL
);
CREATE INDEX svid_serials_entry ON svid_serials(entry_id, not_after);
CREATE TABLE revocations (
  entry_id ${T} PRIMARY KEY, spiffe_id ${T} NOT NULL, revoked_at BIGINT NOT NULL, reason ${T} NOT NULL, deleted SMALLINT NOT NULL
);
CREATE TABLE audit_checkpoints (size BIGINT PRIMARY KEY, root BYTEA NOT NULL, note ${T} NOT NULL, created_at BIGINT NOT NULL);
CREATE TABLE audit_cosignatures (
  size BIGINT NOT NULL, witness_key ${T} NOT NULL, name ${T} NOT NULL, key_id ${T} NOT NULL, timestamp BIGINT NOT NULL,
  line ${T} NOT NULL, created_at BIGINT NOT NULL, PRIMARY KEY (size, witness_key)
);
CREATE TABLE audit_subtrees (level INT NOT NULL, idx BIGINT NOT NULL, hash BYTEA NOT NULL, PRIMARY KEY (level, idx));
CREATE TABLE telemetry_windows (
  id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, ts BIGINT NOT NULL, received_at BIGINT NOT NULL, reported_by ${T} NOT NULL,
  caller ${T} NOT NULL, callee ${T} NOT NULL, "window" ${T} NOT NULL, reporter ${T} NOT NULL DEFAULT '', caller_site ${T} NOT NULL DEFAULT '',
  callee_site ${T} NOT NULL DEFAULT '', requests BIGINT NOT NULL DEFAULT 0, denials BIGINT NOT NULL DEFAULT 0, errors BIGINT NOT NULL DEFAULT 0,
  bytes BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX telemetry_by_caller ON telemetry_windows(caller, id);
CREATE INDEX telemetry_by_callee ON telemetry_windows(callee, id);
CREATE INDEX telemetry_by_received ON telemetry_windows(received_at);
CREATE INDEX telemetry_by_ts ON telemetry_windows(ts);
CREATE TABLE risk_states (
  spiffe_id ${T} PRIMARY KEY, state ${T} NOT NULL, score INT NOT NULL, since BIGINT NOT NULL, until BIGINT,
  reasons ${T} NOT NULL, set_by ${T} NOT NULL, actor ${T} NOT NULL, note ${T} NOT NULL
);
CREATE TABLE risk_history (
  id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, spiffe_id ${T} NOT NULL, at BIGINT NOT NULL, state ${T} NOT NULL, previous ${T} NOT NULL,
  score INT NOT NULL, until BIGINT, reasons ${T} NOT NULL, set_by ${T} NOT NULL, actor ${T} NOT NULL, note ${T} NOT NULL
);
CREATE INDEX risk_history_id ON risk_history(spiffe_id, id);
`,
}, {
  version: 2,
  name: 'replicas: leader lease, change log, one prepared and one active CA',
  sql: `
CREATE TABLE leases (name ${T} PRIMARY KEY, holder ${T} NOT NULL, epoch BIGINT NOT NULL, expires_at BIGINT NOT NULL);
CREATE TABLE change_log (seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, topic ${T} NOT NULL, at BIGINT NOT NULL);
CREATE UNIQUE INDEX cas_one_prepared ON cas(state) WHERE state = 'prepared';
CREATE UNIQUE INDEX cas_one_active ON cas(state) WHERE state = 'active';
-- The change log row and the doorbell, in the transaction of the change (NOTIFY is sent at commit).
CREATE FUNCTION tessera_log_change() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE s BIGINT;
BEGIN
  INSERT INTO change_log(topic, at) VALUES (TG_ARGV[0], (extract(epoch FROM clock_timestamp()) * 1000)::bigint) RETURNING seq INTO s;
  PERFORM pg_notify('${CHANGE_CHANNEL}', s::text);
  RETURN NULL;
END $fn$;
CREATE TRIGGER meta_changes_write AFTER INSERT OR UPDATE ON meta FOR EACH ROW
  WHEN (NEW.key IN ('bundle_sequence', 'policy_bundle_version', 'admin_policy:current') OR starts_with(NEW.key, 'admin:'))
  EXECUTE FUNCTION tessera_log_change('meta');
CREATE TRIGGER meta_changes_delete AFTER DELETE ON meta FOR EACH ROW
  WHEN (OLD.key IN ('bundle_sequence', 'policy_bundle_version', 'admin_policy:current') OR starts_with(OLD.key, 'admin:'))
  EXECUTE FUNCTION tessera_log_change('meta');
`,
}];

/** Key of the advisory lock held while migrating (any 64-bit constant of ours). */
const MIGRATION_LOCK = 7_405_311_029_141;

/** BIGINT and COUNT(*) as numbers (times, ids and counts are all below 2^53). */
const TYPES = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') => (oid === 20 ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format))) as typeof pg.types.getTypeParser,
};

function unavailable(err: unknown, url: string): TesseraError {
  const e = err as { code?: string; message?: string };
  // 28P01 wrong password, 28000 no pg_hba entry, 3D000 no such database: configuration, not outage.
  const code = e.code === '28P01' || e.code === '28000' || e.code === '3D000' ? 'TESSERA_CONFIG_INVALID' : 'TESSERA_UNAVAILABLE';
  const message = (e.message ?? String(err)).split(url).join(redactUrl(url));
  return new TesseraError(code, `cannot use the PostgreSQL store ${redactUrl(url)}: ${message}`);
}

/** Applies the migrations not yet applied, in order, in one transaction under an advisory lock. Returns the versions applied. */
export async function migrate(pool: pg.Pool, migrations: readonly PgMigration[]): Promise<number[]> {
  const sorted = [...migrations].sort((a, b) => a.version - b.version);
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i]!.version === sorted[i - 1]!.version) throw new TesseraError('TESSERA_INTERNAL', `two migrations have version ${sorted[i]!.version}`);
  }
  return withTransaction(pool, async (c) => {
    await c.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
    await c.query('CREATE TABLE IF NOT EXISTS schema_migrations (version INT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)');
    const done = new Set((await c.query<{ version: number }>('SELECT version FROM schema_migrations')).rows.map((r) => r.version));
    const known = new Set(sorted.map((m) => m.version));
    const unknown = [...done].filter((v) => !known.has(v));
    if (unknown.length > 0) {
      throw new TesseraError('TESSERA_CONFIG_INVALID', `the database has schema versions this tessera does not know (${unknown.join(', ')}): it belongs to a newer release`);
    }
    const applied: number[] = [];
    for (const m of sorted) {
      if (done.has(m.version)) continue;
      await c.query(m.sql);
      await c.query('INSERT INTO schema_migrations(version, name, applied_at) VALUES ($1, $2, $3)', [m.version, m.name, Date.now()]);
      applied.push(m.version);
    }
    return applied;
  });
}

/** Runs `fn` in a transaction on one connection of the pool (rolled back if it throws); one helper for every PostgreSQL store. */
export { withTransaction };

type Q = pg.Pool | pg.PoolClient;
/** Names of prepared statements by text, process-wide (stores sharing a pool must agree on them). */
const STATEMENT_NAMES = new Map<string, string>();
type Row = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const caFromRow = (r: Row): CaRecord => ({
  id: r.id, state: r.state, certDer: r.cert_der, keySealed: r.key_sealed, jwtKid: r.jwt_kid, jwtKeySealed: r.jwt_key_sealed,
  notBefore: r.not_before, notAfter: r.not_after, createdAt: r.created_at, activateAt: r.activate_at, activatedAt: r.activated_at, retiredAt: r.retired_at,
});
const entryFromRow = (r: Row): EntryRecord => ({
  id: r.id, spiffeId: r.spiffe_id, selectors: JSON.parse(r.selectors), attributes: JSON.parse(r.attributes), x509TtlSeconds: r.x509_ttl,
  jwtTtlSeconds: r.jwt_ttl, apikeyMaxTtlSeconds: r.apikey_max_ttl, createdAt: r.created_at,
  ...(r.revoked_at !== null ? { revokedAt: r.revoked_at, revokedReason: r.revoked_reason ?? '' } : {}),
});
const apiKeyFromRow = (r: Row): ApiKeyRecord => ({
  id: r.id, hash: r.hash, owner: r.owner, scopes: JSON.parse(r.scopes), createdAt: r.created_at, expiresAt: r.expires_at,
  revokedAt: r.revoked_at, revokedReason: r.revoked_reason,
});
const policyFromRow = (r: Row): PolicyVersionRecord => ({
  version: r.version, createdAt: r.created_at, author: r.author, reason: r.reason, hash: r.hash, policies: JSON.parse(r.policies), schema: JSON.parse(r.schema),
});
const secretFromRow = (r: Row): SecretPolicyRow => ({ id: r.id, epoch: r.epoch, generation: r.generation, signed: r.signed, createdAt: r.created_at, retiredAt: r.retired_at });
const riskFromRow = (r: Row): RiskStateRecord => ({
  spiffeId: r.spiffe_id, state: r.state, score: r.score, since: r.since, until: r.until, reasons: JSON.parse(r.reasons), setBy: r.set_by, actor: r.actor, note: r.note,
});
const auditFromRow = (r: Row): StoredAuditRecord => ({
  id: r.id, ts: r.ts, actor: r.actor, action: r.action, target: r.target, outcome: r.outcome, code: r.code,
  detail: JSON.parse(r.detail), ...(r.principal != null ? { principal: r.principal } : {}),
});
const checkpointFromRow = (r: Row): CheckpointRecord => ({ size: r.size, rootHash: r.root, note: r.note, createdAt: r.created_at });

/**
 * Stands in for a sub-store the PostgreSQL store does not hold yet (until its tables are ported):
 * reads answer what is true of a store that can hold nothing (no rows: undefined, [], 0, false), so
 * the server starts and serves everything else; every write is refused with TESSERA_CONFIG_INVALID
 * saying why.
 */
function missingSubStore<T extends object>(name: string): T {
  const refuse = (): Promise<never> => Promise.reject(new TesseraError('TESSERA_CONFIG_INVALID',
    `the PostgreSQL store does not hold ${name} yet: use the SQLite store (--data-dir without --store) for them`));
  const read = (method: string): (() => Promise<unknown>) | undefined => {
    if (/^(list|live)/.test(method)) return async () => [];
    if (/^count/.test(method)) return async () => 0;
    if (/^(has|is)[A-Z]/.test(method)) return async () => false;
    if (/^(get|gatewayBy)/.test(method)) return async () => undefined;
    return undefined;
  };
  return new Proxy({}, {
    get: (_t, prop) => (prop === 'then' || typeof prop === 'symbol' ? undefined : read(prop) ?? refuse),
  }) as T;
}

export class PostgresStore implements Store {
  readonly #subs: Partial<PostgresSubStores>;
  /** The frontier this process last wrote, with its stored text (reused while the stored text is unchanged). */
  private frontierCache: { text: string; frontier: MerkleFrontier } | undefined;
  /** This process's copy of the audit leaf hashes (index = id − 1) and stored subtrees, for proofs. */
  private readonly leaves: Buffer[] = [];
  private readonly subtrees = new Map<string, Buffer>();

  constructor(readonly pool: pg.Pool, subStores: Partial<PostgresSubStores> = {}) {
    this.#subs = subStores;
  }

  /**
   * Connects (bounded by the connect timeout), migrates and checks the audit tree. Errors are
   * TesseraErrors whose messages never hold the URL's password: TESSERA_CONFIG_INVALID for a bad
   * URL, wrong credentials or a missing database, TESSERA_UNAVAILABLE when the server cannot be reached.
   */
  static async open(url: string, opts: PostgresStoreOptions = {}): Promise<PostgresStore> {
    parseStoreUrl(url);
    const pool = new pg.Pool({
      connectionString: url, connectionTimeoutMillis: opts.connectTimeoutMs ?? 5000, max: opts.maxConnections ?? 10,
      idleTimeoutMillis: 30_000, types: TYPES, application_name: 'tessera',
    });
    pool.on('error', (err) => opts.onError?.(unavailable(err, url)));
    try {
      await pool.query('SELECT 1');
    } catch (err) {
      await pool.end().catch(() => undefined);
      throw unavailable(err, url);
    }
    try {
      await migrate(pool, [...CORE_MIGRATIONS, ...(opts.migrations ?? [])]);
      const store = new PostgresStore(pool, opts.subStores?.(pool) ?? {});
      await store.checkAuditTree();
      return store;
    } catch (err) {
      await pool.end().catch(() => undefined);
      throw err instanceof TesseraError ? err : unavailable(err, url);
    }
  }

  get people(): PeopleStore { return this.#subs.people ?? missingSubStore<PeopleStore>('people'); }
  get login(): LoginStore { return this.#subs.login ?? missingSubStore<LoginStore>('logins'); }
  get devices(): DeviceStore { return this.#subs.devices ?? missingSubStore<DeviceStore>('devices'); }
  get gateways(): GatewayStore { return this.#subs.gateways ?? missingSubStore<GatewayStore>('gateways'); }
  get federation(): FederationStore { return this.#subs.federation ?? missingSubStore<FederationStore>('federation'); }

  /** Stores the empty frontier of a new database; refuses a table and frontier that disagree. */
  private async checkAuditTree(): Promise<void> {
    await this.changes('INSERT INTO meta(key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING', [FRONTIER_KEY, JSON.stringify(new MerkleFrontier().toJSON())]);
    // One statement, one snapshot: another replica appending meanwhile moves both together (two reads
    // could see its frontier before or its rows after, and refuse a sound log).
    const { rows } = await this.pool.query<{ frontier: string | null; top: number | null }>(
      'SELECT (SELECT value FROM meta WHERE key = $1) AS frontier, (SELECT MAX(id) FROM audit) AS top', [FRONTIER_KEY]);
    const size = parseFrontier(rows[0]!.frontier ?? undefined).size;
    const top = rows[0]!.top ?? 0;
    if (top !== size) throw treeStateInvalid(`the audit tree holds ${size} leaves but the table's last id is ${top}`);
  }

  /** Runs `fn` in a transaction on one connection. */
  private tx<R>(fn: (c: Q) => Promise<R>): Promise<R> {
    return withTransaction(this.pool, fn);
  }

  /**
   * Runs a statement as a named prepared statement (parsed once per connection, not per call). Every
   * text passed here comes from a bounded set (values are parameters, never spliced in).
   */
  private run(sql: string, args: unknown[], q: Q): Promise<pg.QueryResult<Row>> {
    let name = STATEMENT_NAMES.get(sql);
    if (name === undefined) STATEMENT_NAMES.set(sql, (name = `tessera_${STATEMENT_NAMES.size + 1}`));
    return q.query<Row>({ name, text: sql, values: args });
  }

  private async rows(sql: string, args: unknown[] = [], q: Q = this.pool): Promise<Row[]> {
    return (await this.run(sql, args, q)).rows;
  }

  private async one(sql: string, args: unknown[] = [], q: Q = this.pool): Promise<Row | undefined> {
    return (await this.run(sql, args, q)).rows[0];
  }

  private async changes(sql: string, args: unknown[] = [], q: Q = this.pool): Promise<number> {
    return (await this.run(sql, args, q)).rowCount ?? 0;
  }

  async getMeta(key: string): Promise<string | undefined> {
    return (await this.one('SELECT value FROM meta WHERE key = $1', [key]))?.value;
  }

  async setMeta(key: string, value: string): Promise<void> {
    await this.changes('INSERT INTO meta(key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value', [key, value]);
  }

  async incrementMeta(key: string): Promise<number> {
    // Like SQLite's CAST: a value that is not an integer counts as 0.
    const r = await this.one(`INSERT INTO meta(key, value) VALUES ($1, '1') ON CONFLICT (key) DO UPDATE SET
      value = ((CASE WHEN meta.value ~ '^\\s*[-+]?[0-9]{1,18}' THEN substring(meta.value from '^\\s*([-+]?[0-9]{1,18})')::bigint ELSE 0 END) + 1)::text RETURNING value`, [key]);
    return Number(r!.value);
  }

  async setMetaIfAbsent(key: string, value: string): Promise<string> {
    await this.changes('INSERT INTO meta(key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING', [key, value]);
    return (await this.getMeta(key))!;
  }

  async listMeta(prefix: string): Promise<{ key: string; value: string }[]> {
    return (await this.rows('SELECT key, value FROM meta WHERE starts_with(key, $1) ORDER BY key', [prefix])) as { key: string; value: string }[];
  }

  async replaceMeta(key: string, expected: string, value: string): Promise<boolean> {
    return (await this.changes('UPDATE meta SET value = $1 WHERE key = $2 AND value = $3', [value, key, expected])) === 1;
  }

  async deleteMetaIf(key: string, expected: string): Promise<boolean> {
    return (await this.changes('DELETE FROM meta WHERE key = $1 AND value = $2', [key, expected])) === 1;
  }

  async listCas(): Promise<CaRecord[]> {
    return (await this.rows('SELECT * FROM cas ORDER BY created_at')).map(caFromRow);
  }

  async insertCa(ca: CaRecord): Promise<void> {
    await this.changes('INSERT INTO cas VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)', [
      ca.id, ca.state, ca.certDer, ca.keySealed, ca.jwtKid, ca.jwtKeySealed, ca.notBefore, ca.notAfter, ca.createdAt, ca.activateAt, ca.activatedAt, ca.retiredAt,
    ]);
  }

  async updateCaState(id: string, p: Pick<CaRecord, 'state' | 'activatedAt' | 'retiredAt'>): Promise<void> {
    await this.changes('UPDATE cas SET state = $1, activated_at = $2, retired_at = $3 WHERE id = $4', [p.state, p.activatedAt, p.retiredAt, id]);
  }

  async deleteCa(id: string): Promise<void> {
    await this.changes('DELETE FROM cas WHERE id = $1', [id]);
  }

  // The lease's times are the database's clock, so replicas on machines whose clocks differ agree.
  async tryLease(name: string, holder: string, ttlMs: number): Promise<LeaseGrant> {
    const row = await this.one(`WITH now AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS ms)
      INSERT INTO leases AS l (name, holder, epoch, expires_at) SELECT $1, $2, 1, now.ms + $3 FROM now
      ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
        epoch = CASE WHEN l.holder = excluded.holder AND l.expires_at > (SELECT ms FROM now) THEN l.epoch ELSE l.epoch + 1 END,
        expires_at = excluded.expires_at
      WHERE l.holder = excluded.holder OR l.expires_at <= (SELECT ms FROM now)
      RETURNING l.epoch, l.expires_at`, [name, holder, ttlMs]);
    if (row) return { held: true, holder, epoch: row.epoch, expiresAt: row.expires_at };
    const cur = (await this.one('SELECT holder, epoch, expires_at FROM leases WHERE name = $1', [name]))!;
    return { held: false, holder: cur.holder, epoch: cur.epoch, expiresAt: cur.expires_at };
  }

  async releaseLease(name: string, holder: string): Promise<void> {
    await this.changes('UPDATE leases SET expires_at = 0 WHERE name = $1 AND holder = $2', [name, holder]);
  }

  async lastChange(): Promise<number> {
    return (await this.one('SELECT COALESCE(MAX(seq), 0) AS seq FROM change_log'))!.seq;
  }

  async changesSince(seq: number, limit: number): Promise<ChangeRecord[]> {
    return (await this.rows('SELECT seq, topic, at FROM change_log WHERE seq > $1 ORDER BY seq LIMIT $2', [seq, limit])) as ChangeRecord[];
  }

  async pruneChanges(before: number): Promise<number> {
    return this.changes('DELETE FROM change_log WHERE at < $1 AND seq < (SELECT MAX(seq) FROM change_log)', [before]);
  }

  async activateCa(id: string, at: number, fence?: LeaseFence): Promise<number | undefined> {
    return this.tx(async (c) => {
      // FOR UPDATE: a replica taking the lease over waits for this transaction, so the fence holds to its end.
      if (fence && !(await this.one(`SELECT 1 FROM leases WHERE name = $1 AND holder = $2 AND epoch = $3
        AND expires_at > (extract(epoch FROM clock_timestamp()) * 1000)::bigint FOR UPDATE`, [fence.name, fence.holder, fence.epoch], c))) return undefined;
      if ((await this.one('SELECT state FROM cas WHERE id = $1 FOR UPDATE', [id], c))?.state !== 'prepared') return undefined;
      await this.changes("UPDATE cas SET state = 'retired', retired_at = $1 WHERE state = 'active'", [at], c);
      await this.changes("UPDATE cas SET state = 'active', activated_at = $1, retired_at = NULL WHERE id = $2", [at, id], c);
      const r = await this.one(`INSERT INTO meta(key, value) VALUES ('bundle_sequence', '1') ON CONFLICT (key) DO UPDATE SET
        value = (meta.value::bigint + 1)::text RETURNING value`, [], c);
      return Number(r!.value);
    });
  }

  async insertEntry(e: EntryRecord): Promise<void> {
    await this.changes(`INSERT INTO entries(id, spiffe_id, selectors, attributes, x509_ttl, jwt_ttl, apikey_max_ttl, created_at, revoked_at, revoked_reason)
      VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`, [
      e.id, e.spiffeId, JSON.stringify(e.selectors), JSON.stringify(e.attributes), e.x509TtlSeconds, e.jwtTtlSeconds, e.apikeyMaxTtlSeconds, e.createdAt,
      e.revokedAt ?? null, e.revokedReason ?? null,
    ]);
  }

  async getEntry(id: string): Promise<EntryRecord | undefined> {
    const r = await this.one('SELECT * FROM entries WHERE id = $1', [id]);
    return r && entryFromRow(r);
  }

  async getEntryBySpiffeId(spiffeId: string): Promise<EntryRecord | undefined> {
    const r = await this.one('SELECT * FROM entries WHERE spiffe_id = $1', [spiffeId]);
    return r && entryFromRow(r);
  }

  async listEntries(): Promise<EntryRecord[]> {
    return (await this.rows('SELECT * FROM entries ORDER BY spiffe_id')).map(entryFromRow);
  }

  private static readonly INSERT_REVOCATION = `INSERT INTO revocations(entry_id, spiffe_id, revoked_at, reason, deleted) VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (entry_id) DO UPDATE SET deleted = GREATEST(revocations.deleted, excluded.deleted)`;

  async deleteEntry(id: string, at = Date.now()): Promise<boolean> {
    return this.tx(async (c) => {
      const row = await this.one('SELECT spiffe_id FROM entries WHERE id = $1 FOR UPDATE', [id], c);
      if (!row) return false;
      await this.changes(PostgresStore.INSERT_REVOCATION, [id, row.spiffe_id, at, 'entry deleted', 1], c);
      await this.changes('DELETE FROM join_tokens WHERE entry_id = $1 AND used_at IS NULL', [id], c);
      return (await this.changes('DELETE FROM entries WHERE id = $1', [id], c)) > 0;
    });
  }

  async revokeEntry(id: string, at: number, reason: string): Promise<RevokeResult> {
    return this.tx(async (c): Promise<RevokeResult> => {
      const row = await this.one('SELECT * FROM entries WHERE id = $1 FOR UPDATE', [id], c);
      if (!row) return { ok: false, reason: 'missing' };
      if (row.revoked_at !== null) return { ok: false, reason: 'already', entry: entryFromRow(row) };
      await this.changes('UPDATE entries SET revoked_at = $1, revoked_reason = $2 WHERE id = $3', [at, reason, id], c);
      await this.changes(PostgresStore.INSERT_REVOCATION, [id, row.spiffe_id, at, reason, 0], c);
      return { ok: true, entry: entryFromRow({ ...row, revoked_at: at, revoked_reason: reason }) };
    });
  }

  async recordIssuedSvid(rec: IssuedSvidRecord): Promise<void> {
    await this.changes('INSERT INTO svid_serials(serial, entry_id, spiffe_id, not_after, issued_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING',
      [rec.serial, rec.entryId, rec.spiffeId, rec.notAfter, rec.issuedAt]);
  }

  async isSerialRevoked(serial: string): Promise<boolean> {
    return (await this.one('SELECT 1 FROM svid_serials s JOIN revocations r ON r.entry_id = s.entry_id WHERE s.serial = $1', [serial])) !== undefined;
  }

  async listRevocations(now: number, graceMs: number): Promise<RevocationRecord[]> {
    return this.tx(async (c) => {
      await this.changes('DELETE FROM svid_serials WHERE not_after < $1', [now - graceMs], c);
      await this.changes(`DELETE FROM revocations WHERE deleted = 1 AND revoked_at < $1
        AND NOT EXISTS (SELECT 1 FROM svid_serials s WHERE s.entry_id = revocations.entry_id)`, [now - graceMs], c);
      const serials = new Map<string, { serial: string; notAfter: number }[]>();
      for (const s of await this.rows(`SELECT s.entry_id, s.serial, s.not_after FROM svid_serials s JOIN revocations r ON r.entry_id = s.entry_id
          WHERE s.not_after > $1 ORDER BY s.not_after DESC, s.serial`, [now], c)) {
        let list = serials.get(s.entry_id);
        if (!list) serials.set(s.entry_id, (list = []));
        list.push({ serial: s.serial, notAfter: s.not_after });
      }
      return (await this.rows('SELECT * FROM revocations ORDER BY revoked_at DESC, entry_id', [], c)).map((r) => ({
        entryId: r.entry_id, spiffeId: r.spiffe_id, revokedAt: r.revoked_at, reason: r.reason, deleted: r.deleted === 1, serials: serials.get(r.entry_id) ?? [],
      }));
    });
  }

  async insertJoinToken(t: JoinTokenRecord): Promise<void> {
    await this.changes('INSERT INTO join_tokens(hash, entry_id, created_at, expires_at) VALUES ($1, $2, $3, $4)', [t.hash, t.entryId, t.createdAt, t.expiresAt]);
  }

  async consumeJoinToken(hash: string, now: number): Promise<TokenConsumeResult> {
    // One statement: of concurrent consumers exactly one sees its row updated.
    const used = await this.one('UPDATE join_tokens SET used_at = $1 WHERE hash = $2 AND used_at IS NULL AND expires_at > $1 RETURNING entry_id', [now, hash]);
    if (used) return { ok: true, entryId: used.entry_id };
    const row = await this.one('SELECT used_at FROM join_tokens WHERE hash = $1', [hash]);
    if (!row) return { ok: false, reason: 'unknown' };
    return { ok: false, reason: row.used_at !== null ? 'used' : 'expired' };
  }

  async insertApiKey(k: ApiKeyRecord): Promise<void> {
    await this.changes('INSERT INTO api_keys(id, hash, owner, scopes, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)',
      [k.id, k.hash, k.owner, JSON.stringify(k.scopes), k.createdAt, k.expiresAt]);
  }

  async getApiKey(id: string): Promise<ApiKeyRecord | undefined> {
    const r = await this.one('SELECT * FROM api_keys WHERE id = $1', [id]);
    return r && apiKeyFromRow(r);
  }

  async listApiKeys(q: { owner?: string; limit: number }): Promise<ApiKeyRecord[]> {
    const rows = q.owner === undefined
      ? await this.rows('SELECT * FROM api_keys ORDER BY created_at DESC, id LIMIT $1', [sqlLimit(q.limit)])
      : await this.rows('SELECT * FROM api_keys WHERE owner = $1 ORDER BY created_at DESC, id LIMIT $2', [q.owner, sqlLimit(q.limit)]);
    return rows.map(apiKeyFromRow);
  }

  async revokeApiKey(id: string, at: number, reason: string): Promise<ApiKeyRecord | undefined> {
    const r = (await this.one('UPDATE api_keys SET revoked_at = $1, revoked_reason = $2 WHERE id = $3 AND revoked_at IS NULL RETURNING *', [at, reason, id]))
      ?? (await this.one('SELECT * FROM api_keys WHERE id = $1', [id]));
    return r && apiKeyFromRow(r);
  }

  async insertPolicyVersion(rec: Omit<PolicyVersionRecord, 'version'>): Promise<PolicyVersionRecord> {
    // The lock serialises writers (SQLite has one writer): each gets the previous highest + 1.
    const version = await this.tx(async (c) => {
      await this.changes('LOCK TABLE policy_versions IN EXCLUSIVE MODE', [], c);
      return (await this.one(`INSERT INTO policy_versions(version, created_at, author, reason, hash, policies, schema)
        VALUES ((SELECT COALESCE(MAX(version), 0) + 1 FROM policy_versions), $1, $2, $3, $4, $5, $6) RETURNING version`,
      [rec.createdAt, rec.author, rec.reason, rec.hash, JSON.stringify(rec.policies), JSON.stringify(rec.schema)], c))!.version as number;
    });
    return { ...rec, version };
  }

  async getPolicyVersion(version: number): Promise<PolicyVersionRecord | undefined> {
    if (!Number.isSafeInteger(version)) return undefined;
    const r = await this.one('SELECT * FROM policy_versions WHERE version = $1', [version]);
    return r && policyFromRow(r);
  }

  async latestPolicyVersion(): Promise<PolicyVersionRecord | undefined> {
    const r = await this.one('SELECT * FROM policy_versions ORDER BY version DESC LIMIT 1');
    return r && policyFromRow(r);
  }

  async listPolicyVersions(limit: number): Promise<Omit<PolicyVersionRecord, 'policies' | 'schema'>[]> {
    return (await this.rows('SELECT version, created_at, author, reason, hash FROM policy_versions ORDER BY version DESC LIMIT $1', [sqlLimit(limit)]))
      .map((r) => ({ version: r.version, createdAt: r.created_at, author: r.author, reason: r.reason, hash: r.hash }));
  }

  async insertSecretPolicy(row: SecretPolicyRow): Promise<boolean> {
    return (await this.changes('INSERT INTO secret_policies(id, epoch, signed, created_at, generation) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING',
      [row.id, row.epoch, row.signed, row.createdAt, row.generation])) > 0;
  }

  async getSecretPolicy(id: string, epoch?: number): Promise<SecretPolicyRow | undefined> {
    const r = epoch === undefined
      ? await this.one('SELECT * FROM secret_policies WHERE id = $1 AND retired_at IS NULL ORDER BY epoch DESC LIMIT 1', [id])
      : await this.one('SELECT * FROM secret_policies WHERE id = $1 AND epoch = $2', [id, epoch]);
    return r && secretFromRow(r);
  }

  async replaceSecretPolicyGeneration(id: string, epoch: number, fromGeneration: number, generation: number, signed: string): Promise<boolean> {
    return (await this.changes('UPDATE secret_policies SET signed = $1, generation = $2 WHERE id = $3 AND epoch = $4 AND generation = $5 AND retired_at IS NULL',
      [signed, generation, id, epoch, fromGeneration])) > 0;
  }

  async retireSecretPolicy(id: string, epoch: number, at: number): Promise<boolean> {
    return (await this.changes('UPDATE secret_policies SET retired_at = $1 WHERE id = $2 AND epoch = $3 AND retired_at IS NULL', [at, id, epoch])) > 0;
  }

  async listSecretPolicies(): Promise<SecretPolicyRow[]> {
    return (await this.rows('SELECT * FROM secret_policies ORDER BY id, epoch')).map(secretFromRow);
  }

  async appendAudit(records: readonly AuditRecord[]): Promise<void> {
    if (records.length === 0) return;
    await this.tx(async (c) => {
      // The frontier's row lock serialises appends (all replicas): every id is the tree size + 1.
      const text = (await this.one('SELECT value FROM meta WHERE key = $1 FOR UPDATE', [FRONTIER_KEY], c))?.value as string | undefined;
      const cached = this.frontierCache;
      this.frontierCache = undefined;
      const frontier = cached !== undefined && cached.text === text ? cached.frontier : parseFrontier(text);
      const cols: unknown[][] = [[], [], [], [], [], [], [], [], [], []];
      const subtrees: [number, number, Buffer][] = [];
      for (const r of records) {
        const id = frontier.size + 1;
        const detail = auditDetailJson(r.detail);
        const h = auditLeafHash(id, r, detail.canonical);
        [id, r.ts, r.actor, r.action, r.target, r.outcome, r.code, detail.text, r.principal ?? null, h].forEach((v, i) => cols[i]!.push(v));
        frontier.append(h, (level, index, hash) => { if (level >= SUBTREE_MIN_LEVEL) subtrees.push([level, index, hash]); });
      }
      await this.changes(`INSERT INTO audit(id, ts, actor, action, target, outcome, code, detail, principal, leaf_hash)
        SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::bytea[])`, cols, c);
      if (subtrees.length > 0) {
        await this.changes(`INSERT INTO audit_subtrees(level, idx, hash) SELECT * FROM unnest($1::int[], $2::bigint[], $3::bytea[])
          ON CONFLICT (level, idx) DO UPDATE SET hash = excluded.hash`, [subtrees.map((s) => s[0]), subtrees.map((s) => s[1]), subtrees.map((s) => s[2])], c);
      }
      const next = JSON.stringify(frontier.toJSON());
      await this.changes('UPDATE meta SET value = $1 WHERE key = $2', [next, FRONTIER_KEY], c);
      this.frontierCache = { text: next, frontier };
    });
  }

  async auditTreeHead(): Promise<AuditTreeHead> {
    const f = parseFrontier(await this.getMeta(FRONTIER_KEY));
    return { size: f.size, rootHash: f.root() };
  }

  /**
   * Brings this process's copy of the leaf hashes up to the table (the rows appended since, by any
   * replica) and returns a synchronous source over it. Rows are immutable and ids contiguous, so
   * the copy only grows.
   */
  async auditLeafSource(): Promise<LeafHashSource> {
    const have = this.leaves.length;
    const rows = await this.rows('SELECT id, leaf_hash FROM audit WHERE id > $1 ORDER BY id', [have]);
    for (const r of rows) {
      // Rows a concurrent call already added are skipped; a gap is a broken table.
      if (r.id <= this.leaves.length) continue;
      if (r.id !== this.leaves.length + 1) throw treeStateInvalid(`audit ids are not contiguous at ${String(r.id)}`);
      this.leaves.push(r.leaf_hash as Buffer);
    }
    const size = this.leaves.length;
    if (size > have) {
      // Bounded by [have, size]: a concurrent call covering other bounds loads its own.
      for (const s of await this.rows(`SELECT level, idx, hash FROM audit_subtrees
          WHERE (idx + 1) * (1::bigint << level) > $1 AND (idx + 1) * (1::bigint << level) <= $2`, [have, size])) {
        this.subtrees.set(`${String(s.level)}/${String(s.idx)}`, s.hash as Buffer);
      }
    }
    const leaves = this.leaves;
    const subtrees = this.subtrees;
    return {
      leafHashes: (start, end) => (end <= size ? leaves.slice(start, end) : []),
      subtreeHash: (level, index) => ((index + 1) * 2 ** level <= size ? subtrees.get(`${level}/${index}`) : undefined),
    };
  }

  async insertCheckpoint(rec: CheckpointRecord): Promise<boolean> {
    return (await this.changes('INSERT INTO audit_checkpoints(size, root, note, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING',
      [rec.size, rec.rootHash, rec.note, rec.createdAt])) > 0;
  }

  async getCheckpoint(size?: number): Promise<CheckpointRecord | undefined> {
    const r = size === undefined
      ? await this.one('SELECT * FROM audit_checkpoints ORDER BY size DESC LIMIT 1')
      : await this.one('SELECT * FROM audit_checkpoints WHERE size = $1', [size]);
    return r && checkpointFromRow(r);
  }

  async putCosignature(rec: CosignatureRecord, maxPerCheckpoint: number): Promise<boolean> {
    return this.tx(async (c) => {
      // Serialises writers of one checkpoint's cosignatures, so the cap holds across replicas.
      await this.changes("SELECT pg_advisory_xact_lock(hashtextextended('tessera:cosignatures:' || $1::text, 0))", [rec.size], c);
      const has = await this.one('SELECT 1 FROM audit_cosignatures WHERE size = $1 AND witness_key = $2', [rec.size, rec.witnessKey], c);
      if (!has && (await this.one('SELECT COUNT(*) AS n FROM audit_cosignatures WHERE size = $1', [rec.size], c))!.n >= maxPerCheckpoint) return false;
      await this.changes(`INSERT INTO audit_cosignatures(size, witness_key, name, key_id, timestamp, line, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (size, witness_key) DO UPDATE SET timestamp = excluded.timestamp, line = excluded.line, created_at = excluded.created_at
        WHERE excluded.timestamp > audit_cosignatures.timestamp`, [rec.size, rec.witnessKey, rec.name, rec.keyId, rec.timestamp, rec.line, rec.createdAt], c);
      return true;
    });
  }

  async listCosignatures(size: number): Promise<CosignatureRecord[]> {
    return (await this.rows('SELECT * FROM audit_cosignatures WHERE size = $1 ORDER BY created_at, witness_key', [size])).map((r) => ({
      size: r.size, witnessKey: r.witness_key, name: r.name, keyId: r.key_id, timestamp: r.timestamp, line: r.line, createdAt: r.created_at,
    }));
  }

  async listCheckpoints(afterSize: number | undefined, limit: number): Promise<CheckpointRecord[]> {
    return (await this.rows('SELECT * FROM audit_checkpoints WHERE size > $1 ORDER BY size LIMIT $2', [afterSize ?? -1, sqlLimit(limit)])).map(checkpointFromRow);
  }

  async listAudit(q: AuditQuery): Promise<StoredAuditRecord[]> {
    const where: string[] = [];
    const args: (string | number)[] = [];
    const add = (cond: string, v: string | number): void => { args.push(v); where.push(cond.replace('?', `$${args.length}`)); };
    if (q.afterId !== undefined) add('id > ?', q.afterId);
    if (q.untilId !== undefined) add('id <= ?', q.untilId);
    if (q.action !== undefined) add('action = ?', q.action);
    if (q.outcome !== undefined) add('outcome = ?', q.outcome);
    const limit = Math.min(Math.max(q.limit ?? 100, 1), 10_000);
    args.push(limit);
    const rows = await this.rows(`SELECT * FROM audit ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id ${q.oldestFirst ? 'ASC' : 'DESC'} LIMIT $${args.length}`, args);
    if (!q.oldestFirst) rows.reverse();
    return rows.map(auditFromRow);
  }

  async sampleDecisions(q: DecisionSampleQuery): Promise<DecisionSample> {
    const maxTotal = Math.max(0, Math.floor(q.maxTotal));
    const next = async (after: string): Promise<string | null> =>
      (await this.one("SELECT MIN(actor) AS v FROM audit WHERE action = 'decision' AND actor > $1", [after]))?.v ?? null;
    const enforcers: string[] = [];
    for (let e = await next(''); e != null && enforcers.length < maxTotal; e = await next(e)) enforcers.push(e);
    const ids = await shareEnforcers(enforcers, q.perEnforcer, maxTotal, (enforcer, quota) => this.sampleEnforcer(enforcer, quota));
    let oversized = 0;
    const records: StoredAuditRecord[] = [];
    for (let i = 0; i < ids.length; i += 1000) {
      for (const r of await this.rows(`SELECT id, ts, actor, action, target, outcome, code, CASE WHEN length(detail) <= $1 THEN detail END AS detail
          FROM audit WHERE id = ANY($2::bigint[]) ORDER BY id`, [q.maxDetailChars, ids.slice(i, i + 1000)])) {
        if (r.detail === null) {
          oversized += 1;
          continue;
        }
        records.push({ id: r.id, ts: r.ts, actor: r.actor, action: r.action, target: r.target, outcome: r.outcome, code: r.code, detail: JSON.parse(r.detail) });
      }
    }
    records.sort((a, b) => a.id - b.id);
    return { records, enforcers: enforcers.length, oversized };
  }

  /** The ids of up to `quota` decisions of one enforcer (shareQuota); rows without a principal form one group. */
  private async sampleEnforcer(enforcer: string, quota: number): Promise<number[]> {
    const principals: (string | null)[] = [];
    if (await this.one("SELECT 1 FROM audit WHERE action = 'decision' AND actor = $1 AND principal IS NULL LIMIT 1", [enforcer])) principals.push(null);
    const nextPrincipal = async (after: string): Promise<string | null> =>
      (await this.one("SELECT MIN(principal) AS v FROM audit WHERE action = 'decision' AND actor = $1 AND principal > $2", [enforcer, after]))?.v ?? null;
    for (let p = await nextPrincipal(''); p != null && principals.length < quota; p = await nextPrincipal(p)) principals.push(p);
    return shareQuota(principals, quota, async (principal, before, room) => (await this.rows(`SELECT id FROM audit
      WHERE action = 'decision' AND actor = $1 AND principal IS NOT DISTINCT FROM $2 AND id < $3 ORDER BY id DESC LIMIT $4`, [enforcer, principal, before, room])).map((r) => r.id as number));
  }

  async insertTelemetry(rows: readonly TelemetryRow[], keep: TelemetryRetention): Promise<void> {
    await this.tx(async (c) => {
      if (rows.length > 0) {
        const cols: unknown[][] = Array.from({ length: 13 }, () => []);
        for (const r of rows) {
          const w = r.window;
          [Date.parse(w.ts), r.receivedAt, r.reportedBy, w.caller, w.callee, JSON.stringify(w), w.reporter, w.caller_site, w.callee_site,
            w.requests, w.denials, w.errors, w.bytes_in + w.bytes_out].forEach((v, i) => cols[i]!.push(v));
        }
        await this.changes(`INSERT INTO telemetry_windows(ts, received_at, reported_by, caller, callee, "window", reporter, caller_site, callee_site, requests, denials, errors, bytes)
          SELECT a, b, c, d, e, f, g, h, i, j, k, l, m FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::text[], $10::bigint[], $11::bigint[], $12::bigint[], $13::bigint[]) WITH ORDINALITY AS t(a, b, c, d, e, f, g, h, i, j, k, l, m, n)
          ORDER BY n`, cols, c);
      }
      const last = (await this.one('SELECT MAX(id) AS id FROM telemetry_windows', [], c))?.id ?? 0;
      await this.changes('DELETE FROM telemetry_windows WHERE id <= $1', [last - keep.maxRows], c);
      await this.changes('DELETE FROM telemetry_windows WHERE received_at < $1', [keep.now - keep.maxAgeMs], c);
    });
  }

  async listTelemetry(q: TelemetryQuery): Promise<StoredTelemetryRow[]> {
    const where: string[] = [];
    const args: (string | number)[] = [];
    if (q.identity !== undefined) { args.push(q.identity); where.push(`(caller = $${args.length} OR callee = $${args.length})`); }
    if (q.since !== undefined) { args.push(q.since); where.push(`ts >= $${args.length}`); }
    if (q.after !== undefined) { args.push(q.after); where.push(`id > $${args.length}`); }
    const limit = Math.min(Math.max(Math.floor(q.limit), 1), 10_000);
    const order = q.after !== undefined ? 'ASC' : 'DESC';
    const rows = await this.rows(`SELECT id, received_at, reported_by, "window" FROM telemetry_windows ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
      ORDER BY id ${order} LIMIT $${args.length + 1}`, [...args, limit]);
    if (order === 'DESC') rows.reverse();
    return rows.map((r) => ({ id: r.id, receivedAt: r.received_at, reportedBy: r.reported_by, window: JSON.parse(r.window) }));
  }

  async getRiskState(spiffeId: string): Promise<RiskStateRecord | undefined> {
    const r = await this.one('SELECT * FROM risk_states WHERE spiffe_id = $1', [spiffeId]);
    return r && riskFromRow(r);
  }

  async listRiskStates(limit: number): Promise<RiskStateRecord[]> {
    return (await this.rows("SELECT * FROM risk_states ORDER BY state = 'normal', score DESC, spiffe_id LIMIT $1", [sqlLimit(limit)])).map(riskFromRow);
  }

  async putRiskState(rec: RiskStateRecord, previous: RiskStateRecord['state'], expect?: { state: RiskStateRecord['state']; since: number }): Promise<boolean> {
    return this.tx(async (c) => {
      if (expect !== undefined) {
        const cur = await this.one('SELECT state, since FROM risk_states WHERE spiffe_id = $1 FOR UPDATE', [rec.spiffeId], c);
        if (cur === undefined || cur.state !== expect.state || cur.since !== expect.since) return false;
      }
      const reasons = JSON.stringify(rec.reasons);
      await this.changes(`INSERT INTO risk_states(spiffe_id, state, score, since, until, reasons, set_by, actor, note) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        ON CONFLICT (spiffe_id) DO UPDATE SET state = excluded.state, score = excluded.score, since = excluded.since, until = excluded.until,
        reasons = excluded.reasons, set_by = excluded.set_by, actor = excluded.actor, note = excluded.note`,
      [rec.spiffeId, rec.state, rec.score, rec.since, rec.until, reasons, rec.setBy, rec.actor, rec.note], c);
      await this.changes(`INSERT INTO risk_history(spiffe_id, at, state, previous, score, until, reasons, set_by, actor, note) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
        [rec.spiffeId, rec.since, rec.state, previous, rec.score, rec.until, reasons, rec.setBy, rec.actor, rec.note], c);
      return true;
    });
  }

  async listRiskHistory(spiffeId: string, limit: number): Promise<RiskHistoryRecord[]> {
    return (await this.rows('SELECT * FROM risk_history WHERE spiffe_id = $1 ORDER BY id DESC LIMIT $2', [spiffeId, sqlLimit(limit)])).map((r) => {
      const { since: _since, ...rest } = riskFromRow({ ...r, since: r.at });
      return { ...rest, at: r.at, previous: r.previous };
    });
  }

  async aggregateTelemetryEdges(since: number, until: number): Promise<TelemetryEdgeAggregate[]> {
    return (await this.rows(`SELECT caller, callee, reporter, MAX(caller_site) AS "callerSite", MAX(callee_site) AS "calleeSite", COUNT(*) AS windows,
        SUM(requests)::bigint AS requests, SUM(denials)::bigint AS denials, SUM(errors)::bigint AS errors, SUM(bytes)::bigint AS bytes
      FROM telemetry_windows WHERE ts >= $1 AND ts < $2 GROUP BY caller, callee, reporter`, [since, until])) as TelemetryEdgeAggregate[];
  }

  async aggregateDecisionEdges(since: number, until: number): Promise<DecisionEdgeAggregate[]> {
    return (await this.rows(`SELECT principal AS caller, target AS callee,
        COUNT(*) FILTER (WHERE outcome = 'success') AS allowed, COUNT(*) FILTER (WHERE outcome = 'denied') AS denied
      FROM audit WHERE action = 'decision' AND ts >= $1 AND ts < $2 AND actor = target AND principal IS NOT NULL GROUP BY principal, target`, [since, until])) as DecisionEdgeAggregate[];
  }

  async listEdgeDecisions(caller: string, callee: string, limit: number): Promise<StoredAuditRecord[]> {
    const n = Math.min(Math.max(Math.floor(limit), 1), 1000);
    return (await this.rows(`SELECT id, ts, actor, action, target, outcome, code, detail, principal FROM audit
      WHERE action = 'decision' AND actor = $1 AND principal = $2 AND target = actor ORDER BY id DESC LIMIT $3`, [callee, caller, n])).map(auditFromRow);
  }

  async close(): Promise<void> {
    if (!this.pool.ended) await this.pool.end();
  }
}

/** SQLite's LIMIT with a negative value means no limit; PostgreSQL refuses it. */
function sqlLimit(limit: number): number | null {
  return limit < 0 ? null : Math.floor(limit);
}
