import { chmodSync } from 'node:fs';
import Database from 'better-sqlite3';
import type {
  PolicyVersionRecord, SecretPolicyRow,
  ApiKeyRecord, AuditQuery, AuditRecord, CaRecord, DecisionSample, DecisionSampleQuery, EntryRecord, JoinTokenRecord, Store, StoredAuditRecord, TokenConsumeResult,
} from './store.js';

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
CREATE TABLE IF NOT EXISTS policy_versions (
  version INTEGER PRIMARY KEY, created_at INTEGER NOT NULL, author TEXT NOT NULL, reason TEXT NOT NULL,
  hash TEXT NOT NULL, policies TEXT NOT NULL, schema TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS secret_policies (
  id TEXT NOT NULL, epoch INTEGER NOT NULL, signed TEXT NOT NULL, created_at INTEGER NOT NULL, PRIMARY KEY (id, epoch)
);
-- The audit table is append-only: the database itself refuses edits and deletions.
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
`;

interface CaRow {
  id: string; state: string; cert_der: Buffer; key_sealed: Buffer; jwt_kid: string; jwt_key_sealed: Buffer;
  not_before: number; not_after: number; created_at: number; activate_at: number | null; activated_at: number | null; retired_at: number | null;
}
interface EntryRow { id: string; spiffe_id: string; selectors: string; attributes: string; x509_ttl: number; jwt_ttl: number; created_at: number }
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
  { table: 'audit', column: 'principal', ddl: 'principal TEXT' },
];
/** Indexes on added columns: created once the columns exist. */
const ADDED_INDEXES = `
CREATE INDEX IF NOT EXISTS audit_decision_sample ON audit(action, actor, principal, id);
`;

interface AuditRow { id: number; ts: number; actor: string; action: string; target: string; outcome: string; code: string; detail: string }

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
    attributes: JSON.parse(r.attributes) as EntryRecord['attributes'], x509TtlSeconds: r.x509_ttl, jwtTtlSeconds: r.jwt_ttl, createdAt: r.created_at,
  };
}

/** SQLite store (better-sqlite3, WAL). One file, one process; statements prepared once. */
export class SqliteStore implements Store {
  private readonly db: Database.Database;
  private readonly stmts;

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
    for (const c of ADDED_COLUMNS) {
      const have = this.db.prepare<[], { name: string }>(`PRAGMA table_info(${c.table})`).all().some((r) => r.name === c.column);
      if (!have) this.db.exec(`ALTER TABLE ${c.table} ADD COLUMN ${c.ddl}`);
    }
    this.db.exec(ADDED_INDEXES);
    const db = this.db;
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
      insertEntry: db.prepare('INSERT INTO entries VALUES (@id, @spiffeId, @selectors, @attributes, @x509TtlSeconds, @jwtTtlSeconds, @createdAt)'),
      getEntry: db.prepare<[string], EntryRow>('SELECT * FROM entries WHERE id = ?'),
      getEntryBySpiffe: db.prepare<[string], EntryRow>('SELECT * FROM entries WHERE spiffe_id = ?'),
      listEntries: db.prepare<[], EntryRow>('SELECT * FROM entries ORDER BY spiffe_id'),
      deleteEntry: db.prepare('DELETE FROM entries WHERE id = ?'),
      deleteEntryTokens: db.prepare('DELETE FROM join_tokens WHERE entry_id = ? AND used_at IS NULL'),
      insertToken: db.prepare('INSERT INTO join_tokens(hash, entry_id, created_at, expires_at) VALUES (@hash, @entryId, @createdAt, @expiresAt)'),
      getToken: db.prepare<[string], { entry_id: string; expires_at: number; used_at: number | null }>(
        'SELECT entry_id, expires_at, used_at FROM join_tokens WHERE hash = ?'),
      useToken: db.prepare('UPDATE join_tokens SET used_at = ? WHERE hash = ? AND used_at IS NULL'),
      insertApiKey: db.prepare('INSERT INTO api_keys VALUES (@id, @hash, @owner, @scopes, @createdAt, @expiresAt)'),
      getApiKey: db.prepare<[string], { id: string; hash: string; owner: string; scopes: string; created_at: number; expires_at: number }>(
        'SELECT * FROM api_keys WHERE id = ?'),
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
      insertAudit: db.prepare('INSERT INTO audit(ts, actor, action, target, outcome, code, detail, principal) VALUES (?, ?, ?, ?, ?, ?, ?, ?)'),
      // Decision sampling: each statement is a seek or a short range scan of audit_decision_sample.
      nextEnforcer: db.prepare<[string], { v: string | null }>("SELECT MIN(actor) AS v FROM audit WHERE action = 'decision' AND actor > ?"),
      nextPrincipal: db.prepare<[string, string], { v: string | null }>("SELECT MIN(principal) AS v FROM audit WHERE action = 'decision' AND actor = ? AND principal > ?"),
      hasUnindexed: db.prepare<[string], { v: number }>("SELECT 1 AS v FROM audit WHERE action = 'decision' AND actor = ? AND principal IS NULL LIMIT 1"),
      groupIds: db.prepare<[string, string | null, number, number], { id: number }>(
        "SELECT id FROM audit WHERE action = 'decision' AND actor = ? AND principal IS ? AND id < ? ORDER BY id DESC LIMIT ?"),
      sampledRows: db.prepare<[number, string], Omit<AuditRow, 'detail'> & { detail: string | null }>(
        `SELECT id, ts, actor, action, target, outcome, code, CASE WHEN length(detail) <= ? THEN detail END AS detail
         FROM audit WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id`),
    };
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

  async insertEntry(e: EntryRecord): Promise<void> {
    this.stmts.insertEntry.run({ ...e, selectors: JSON.stringify(e.selectors), attributes: JSON.stringify(e.attributes) });
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

  async deleteEntry(id: string): Promise<boolean> {
    return this.db.transaction(() => {
      this.stmts.deleteEntryTokens.run(id);
      return this.stmts.deleteEntry.run(id).changes > 0;
    })();
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
    return r && {
      id: r.id, hash: r.hash, owner: r.owner, scopes: JSON.parse(r.scopes) as string[], createdAt: r.created_at, expiresAt: r.expires_at,
    };
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
    this.db.transaction(() => {
      for (const r of records) {
        this.stmts.insertAudit.run(r.ts, r.actor, r.action, r.target, r.outcome, r.code, JSON.stringify(r.detail), r.principal ?? null);
      }
    })();
  }

  async listAudit(q: AuditQuery): Promise<StoredAuditRecord[]> {
    const where: string[] = [];
    const args: (string | number)[] = [];
    if (q.afterId !== undefined) { where.push('id > ?'); args.push(q.afterId); }
    if (q.action !== undefined) { where.push('action = ?'); args.push(q.action); }
    if (q.outcome !== undefined) { where.push('outcome = ?'); args.push(q.outcome); }
    const limit = Math.min(Math.max(q.limit ?? 100, 1), 10_000);
    const sql = `SELECT * FROM audit ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT ${limit}`;
    const rows = this.db.prepare<(string | number)[], AuditRow>(sql).all(...args);
    return rows.reverse().map((r) => ({
      id: r.id, ts: r.ts, actor: r.actor, action: r.action, target: r.target, outcome: r.outcome as AuditRecord['outcome'],
      code: r.code, detail: JSON.parse(r.detail) as Record<string, unknown>,
    }));
  }

  async sampleDecisions(q: DecisionSampleQuery): Promise<DecisionSample> {
    const maxTotal = Math.max(0, Math.floor(q.maxTotal));
    const enforcers: string[] = [];
    for (let e = this.stmts.nextEnforcer.get('')?.v; e != null && enforcers.length < maxTotal; e = this.stmts.nextEnforcer.get(e)?.v) enforcers.push(e);
    const ids: number[] = [];
    enforcers.forEach((enforcer, i) => {
      // An equal share of what is left; what an enforcer leaves unused goes to the ones after it.
      const quota = Math.min(q.perEnforcer, Math.ceil((maxTotal - ids.length) / (enforcers.length - i)));
      if (quota > 0) ids.push(...this.sampleEnforcer(enforcer, quota));
    });
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

  /**
   * The ids of up to `quota` decisions of one enforcer, its principals sharing the quota equally
   * (newest first within each). Rows stored before the principal column existed form one group.
   * Rounds: every principal still holding rows gets an equal share of what is left; one that has
   * fewer is done, and the rest is shared again, so few rounds and at most quota + principals rows.
   */
  private sampleEnforcer(enforcer: string, quota: number): number[] {
    const groups: { principal: string | null; before: number; done: boolean }[] = [];
    if (this.stmts.hasUnindexed.get(enforcer)) groups.push({ principal: null, before: Number.MAX_SAFE_INTEGER, done: false });
    for (let p = this.stmts.nextPrincipal.get(enforcer, '')?.v; p != null && groups.length < quota; p = this.stmts.nextPrincipal.get(enforcer, p)?.v) {
      groups.push({ principal: p, before: Number.MAX_SAFE_INTEGER, done: false });
    }
    const out: number[] = [];
    for (let active = groups; active.length > 0 && out.length < quota; active = active.filter((g) => !g.done)) {
      const share = Math.max(1, Math.floor((quota - out.length) / active.length));
      for (const g of active) {
        const room = Math.min(share, quota - out.length);
        if (room <= 0) return out;
        const rows = this.stmts.groupIds.all(enforcer, g.principal, g.before, room);
        for (const r of rows) out.push(r.id);
        if (rows.length < room) g.done = true;
        else g.before = rows[rows.length - 1]!.id;
      }
    }
    return out;
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }
}
