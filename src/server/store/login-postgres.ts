/**
 * The PostgreSQL side of {@link LoginStore}: the same tables as login-sqlite.ts (login requests,
 * person certificates), with the same behaviour. Needs the people tables (PEOPLE_MIGRATIONS) first.
 * The caps on requests (per client address, in all) hold across replicas: the count and the insert
 * run in one transaction that holds a lock only inserters take, so two inserts never both see room.
 */
import type { Pool } from 'pg';
import type { LoginRequestRecord, LoginStore, UserCertRecord } from './store.js';
import { inTransaction, num, numOrNull } from './pg-substore-util.js';

/** DDL of the login tables, in order (after PEOPLE_MIGRATIONS); idempotent, for the PostgreSQL migration runner. */
export const LOGIN_MIGRATIONS: readonly string[] = [
  `CREATE TABLE IF NOT EXISTS login_requests (
    hash TEXT PRIMARY KEY, kind TEXT NOT NULL CHECK (kind IN ('code', 'device')), user_code_hash TEXT UNIQUE,
    state TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'used')), username TEXT, mfa_at BIGINT,
    client_ip TEXT NOT NULL, key_thumbprint TEXT NOT NULL, ttl_ms BIGINT NOT NULL, step_up BOOLEAN NOT NULL,
    code_challenge TEXT, redirect_uri TEXT, interval_s BIGINT NOT NULL, last_poll_at BIGINT, serial TEXT,
    created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL
  )`,
  'CREATE INDEX IF NOT EXISTS login_requests_expiry ON login_requests(expires_at)',
  'CREATE INDEX IF NOT EXISTS login_requests_ip ON login_requests(client_ip)',
  `CREATE TABLE IF NOT EXISTS user_certs (
    serial TEXT COLLATE "C" PRIMARY KEY, username TEXT COLLATE "C" NOT NULL REFERENCES users(username) ON DELETE CASCADE, spiffe_id TEXT NOT NULL,
    groups TEXT NOT NULL, mfa_at BIGINT, issued_at BIGINT NOT NULL, not_after BIGINT NOT NULL,
    flow TEXT NOT NULL CHECK (flow IN ('browser', 'device')), client_ip TEXT NOT NULL, revoked_at BIGINT, revoked_reason TEXT
  )`,
  'CREATE INDEX IF NOT EXISTS user_certs_user ON user_certs(username)',
  'CREATE INDEX IF NOT EXISTS user_certs_expiry ON user_certs(not_after)',
];

/** How long an expired request stays (its answer is "expired", not "unknown"); as login-sqlite.ts. */
const EXPIRED_KEPT_MS = 15 * 60_000;

type Big = string | number;
interface RequestRow {
  hash: string; kind: string; user_code_hash: string | null; state: string; username: string | null; mfa_at: Big | null; client_ip: string;
  key_thumbprint: string; ttl_ms: Big; step_up: boolean; code_challenge: string | null; redirect_uri: string | null; interval_s: Big;
  last_poll_at: Big | null; serial: string | null; created_at: Big; expires_at: Big;
}
interface CertRow {
  serial: string; username: string; spiffe_id: string; groups: string; mfa_at: Big | null; issued_at: Big; not_after: Big;
  flow: string; client_ip: string; revoked_at: Big | null; revoked_reason: string | null;
}

const requestFromRow = (r: RequestRow): LoginRequestRecord => ({
  hash: r.hash, kind: r.kind as LoginRequestRecord['kind'], userCodeHash: r.user_code_hash, state: r.state as LoginRequestRecord['state'],
  username: r.username, mfaAt: numOrNull(r.mfa_at), clientIp: r.client_ip, keyThumbprint: r.key_thumbprint, ttlMs: num(r.ttl_ms), stepUp: r.step_up,
  codeChallenge: r.code_challenge, redirectUri: r.redirect_uri, intervalS: num(r.interval_s), lastPollAt: numOrNull(r.last_poll_at), serial: r.serial,
  createdAt: num(r.created_at), expiresAt: num(r.expires_at),
});
const certFromRow = (r: CertRow): UserCertRecord => ({
  serial: r.serial, username: r.username, spiffeId: r.spiffe_id, groups: JSON.parse(r.groups) as string[], mfaAt: numOrNull(r.mfa_at),
  issuedAt: num(r.issued_at), notAfter: num(r.not_after), flow: r.flow as UserCertRecord['flow'], clientIp: r.client_ip,
  revokedAt: numOrNull(r.revoked_at), revokedReason: r.revoked_reason,
});

/** Patchable fields → columns (a fixed map: never a caller's string in the SQL). */
const PATCHABLE = { state: 'state', username: 'username', mfaAt: 'mfa_at', intervalS: 'interval_s', lastPollAt: 'last_poll_at', serial: 'serial' } as const;
const LIVE = `state IN ('pending', 'approved')`;

export class PostgresLoginStore implements LoginStore {
  constructor(private readonly pool: Pool) {}

  async insertLoginRequest(rec: LoginRequestRecord, now: number, caps: { perIp: number; total: number }): Promise<'ok' | 'ip_cap' | 'total_cap'> {
    return inTransaction(this.pool, async (c) => {
      // Inserters queue on this lock (it conflicts with itself and with writes; plain reads go on), so the counts below
      // stay true until this transaction's insert commits: the caps hold under concurrency and across replicas.
      await c.query('LOCK TABLE login_requests IN SHARE ROW EXCLUSIVE MODE');
      // Kept a while past expiry, so a late poll hears "expired" (RFC 8628 expired_token), not "unknown".
      await c.query('DELETE FROM login_requests WHERE expires_at <= $1', [now - EXPIRED_KEPT_MS]);
      const ip = await c.query<{ n: Big }>(`SELECT COUNT(*) AS n FROM login_requests WHERE client_ip = $1 AND expires_at > $2 AND ${LIVE}`, [rec.clientIp, now]);
      if (num(ip.rows[0]!.n) >= caps.perIp) return 'ip_cap';
      const all = await c.query<{ n: Big }>(`SELECT COUNT(*) AS n FROM login_requests WHERE expires_at > $1 AND ${LIVE}`, [now]);
      if (num(all.rows[0]!.n) >= caps.total) return 'total_cap';
      await c.query(
        `INSERT INTO login_requests(hash, kind, user_code_hash, state, username, mfa_at, client_ip, key_thumbprint, ttl_ms, step_up, code_challenge,
          redirect_uri, interval_s, last_poll_at, serial, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)`,
        [rec.hash, rec.kind, rec.userCodeHash, rec.state, rec.username, rec.mfaAt, rec.clientIp, rec.keyThumbprint, rec.ttlMs, rec.stepUp,
          rec.codeChallenge, rec.redirectUri, rec.intervalS, rec.lastPollAt, rec.serial, rec.createdAt, rec.expiresAt]);
      return 'ok';
    });
  }

  async getLoginRequest(hash: string): Promise<LoginRequestRecord | undefined> {
    const r = await this.pool.query<RequestRow>('SELECT * FROM login_requests WHERE hash = $1', [hash]);
    return r.rows[0] && requestFromRow(r.rows[0]);
  }

  async getLoginRequestByUserCode(userCodeHash: string): Promise<LoginRequestRecord | undefined> {
    const r = await this.pool.query<RequestRow>('SELECT * FROM login_requests WHERE user_code_hash = $1', [userCodeHash]);
    return r.rows[0] && requestFromRow(r.rows[0]);
  }

  async updateLoginRequest(hash: string, from: LoginRequestRecord['state'], patch: Partial<Pick<LoginRequestRecord, 'state' | 'username' | 'mfaAt' | 'intervalS' | 'lastPollAt' | 'serial'>>): Promise<boolean> {
    const keys = (Object.keys(patch) as (keyof typeof PATCHABLE)[]).filter((k) => Object.hasOwn(PATCHABLE, k));
    if (keys.length === 0) return false;
    const values: unknown[] = [hash, from];
    const sets = keys.map((k) => {
      values.push(patch[k] ?? null);
      return `${PATCHABLE[k]} = $${values.length}`;
    }).join(', ');
    const r = await this.pool.query(`UPDATE login_requests SET ${sets} WHERE hash = $1 AND state = $2`, values);
    return r.rowCount === 1;
  }

  async recordPoll(hash: string, lastPollAt: number | null, now: number, intervalS: number): Promise<boolean> {
    const r = await this.pool.query('UPDATE login_requests SET last_poll_at = $1, interval_s = $2 WHERE hash = $3 AND last_poll_at IS NOT DISTINCT FROM $4::bigint',
      [now, intervalS, hash, lastPollAt]);
    return r.rowCount === 1;
  }

  async insertUserCert(rec: UserCertRecord): Promise<void> {
    // Certificates expired over a day ago are of no use to anyone (the audit log keeps their history).
    await this.pool.query('DELETE FROM user_certs WHERE not_after < $1', [rec.issuedAt - 86_400_000]);
    await this.pool.query(
      `INSERT INTO user_certs(serial, username, spiffe_id, groups, mfa_at, issued_at, not_after, flow, client_ip, revoked_at, revoked_reason)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
      [rec.serial, rec.username, rec.spiffeId, JSON.stringify(rec.groups), rec.mfaAt, rec.issuedAt, rec.notAfter, rec.flow, rec.clientIp,
        rec.revokedAt, rec.revokedReason]);
  }

  async getUserCert(serial: string): Promise<UserCertRecord | undefined> {
    const r = await this.pool.query<CertRow>('SELECT * FROM user_certs WHERE serial = $1', [serial]);
    return r.rows[0] && certFromRow(r.rows[0]);
  }

  async liveUserCerts(now: number): Promise<UserCertRecord[]> {
    const r = await this.pool.query<CertRow>(
      `SELECT c.serial, c.username, c.spiffe_id, u.groups, c.mfa_at, c.issued_at, c.not_after, c.flow, c.client_ip, c.revoked_at, c.revoked_reason
       FROM user_certs c JOIN users u ON u.username = c.username
       WHERE c.revoked_at IS NULL AND c.not_after > $1 AND u.state = 'active' ORDER BY c.serial`, [now]);
    return r.rows.map(certFromRow);
  }

  async revokeUserCert(serial: string, at: number, reason: string): Promise<boolean> {
    const r = await this.pool.query('UPDATE user_certs SET revoked_at = $1, revoked_reason = $2 WHERE serial = $3 AND revoked_at IS NULL', [at, reason, serial]);
    return r.rowCount === 1;
  }

  async revokeUserCerts(username: string, at: number, reason: string): Promise<number> {
    const r = await this.pool.query('UPDATE user_certs SET revoked_at = $1, revoked_reason = $2 WHERE username = $3 AND revoked_at IS NULL', [at, reason, username]);
    return r.rowCount ?? 0;
  }
}
