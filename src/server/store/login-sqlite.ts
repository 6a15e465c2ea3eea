import type Database from 'better-sqlite3';
import type { LoginRequestRecord, LoginStore, UserCertRecord } from './store.js';

/**
 * `tessera login` (issue 12): requests under way (browser flow codes, device authorizations) and the
 * person certificates issued. Needs the people tables (users) first. Bearer values are stored as
 * their SHA-256 only; expired requests are deleted at the next insert, and inserts are capped per
 * client address and in all, so unauthenticated callers cannot grow the table without bound.
 */
export const LOGIN_SCHEMA = `
CREATE TABLE IF NOT EXISTS login_requests (
  hash TEXT PRIMARY KEY, kind TEXT NOT NULL CHECK (kind IN ('code', 'device')), user_code_hash TEXT UNIQUE,
  state TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'used')), username TEXT, mfa_at INTEGER,
  client_ip TEXT NOT NULL, key_thumbprint TEXT NOT NULL, ttl_ms INTEGER NOT NULL, step_up INTEGER NOT NULL,
  code_challenge TEXT, redirect_uri TEXT, interval_s INTEGER NOT NULL, last_poll_at INTEGER, serial TEXT,
  created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS login_requests_expiry ON login_requests(expires_at);
CREATE INDEX IF NOT EXISTS login_requests_ip ON login_requests(client_ip);
CREATE TABLE IF NOT EXISTS user_certs (
  serial TEXT PRIMARY KEY, username TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE, spiffe_id TEXT NOT NULL,
  groups TEXT NOT NULL, mfa_at INTEGER, issued_at INTEGER NOT NULL, not_after INTEGER NOT NULL,
  flow TEXT NOT NULL CHECK (flow IN ('browser', 'device')), client_ip TEXT NOT NULL, revoked_at INTEGER, revoked_reason TEXT
);
CREATE INDEX IF NOT EXISTS user_certs_user ON user_certs(username);
CREATE INDEX IF NOT EXISTS user_certs_expiry ON user_certs(not_after);
`;

/** How long an expired request stays (its answer is "expired", not "unknown"). */
const EXPIRED_KEPT_MS = 15 * 60_000;

interface RequestRow {
  hash: string; kind: string; user_code_hash: string | null; state: string; username: string | null; mfa_at: number | null; client_ip: string;
  key_thumbprint: string; ttl_ms: number; step_up: number; code_challenge: string | null; redirect_uri: string | null; interval_s: number;
  last_poll_at: number | null; serial: string | null; created_at: number; expires_at: number;
}
interface CertRow {
  serial: string; username: string; spiffe_id: string; groups: string; mfa_at: number | null; issued_at: number; not_after: number;
  flow: string; client_ip: string; revoked_at: number | null; revoked_reason: string | null;
}

const requestFromRow = (r: RequestRow): LoginRequestRecord => ({
  hash: r.hash, kind: r.kind as LoginRequestRecord['kind'], userCodeHash: r.user_code_hash, state: r.state as LoginRequestRecord['state'],
  username: r.username, mfaAt: r.mfa_at, clientIp: r.client_ip, keyThumbprint: r.key_thumbprint, ttlMs: r.ttl_ms, stepUp: r.step_up === 1,
  codeChallenge: r.code_challenge, redirectUri: r.redirect_uri, intervalS: r.interval_s, lastPollAt: r.last_poll_at, serial: r.serial,
  createdAt: r.created_at, expiresAt: r.expires_at,
});
const certFromRow = (r: CertRow): UserCertRecord => ({
  serial: r.serial, username: r.username, spiffeId: r.spiffe_id, groups: JSON.parse(r.groups) as string[], mfaAt: r.mfa_at,
  issuedAt: r.issued_at, notAfter: r.not_after, flow: r.flow as UserCertRecord['flow'], clientIp: r.client_ip,
  revokedAt: r.revoked_at, revokedReason: r.revoked_reason,
});

const PATCHABLE = { state: 'state', username: 'username', mfaAt: 'mfa_at', intervalS: 'interval_s', lastPollAt: 'last_poll_at', serial: 'serial' } as const;

export class SqliteLoginStore implements LoginStore {
  private readonly s;
  private readonly insertTx: Database.Transaction<(rec: LoginRequestRecord, now: number, caps: { perIp: number; total: number }) => 'ok' | 'ip_cap' | 'total_cap'>;

  constructor(private readonly db: Database.Database) {
    db.exec(LOGIN_SCHEMA);
    this.s = {
      prune: db.prepare('DELETE FROM login_requests WHERE expires_at <= ?'),
      countIp: db.prepare<[string, number], { n: number }>(`SELECT COUNT(*) AS n FROM login_requests WHERE client_ip = ? AND expires_at > ? AND state IN ('pending', 'approved')`),
      countAll: db.prepare<[number], { n: number }>(`SELECT COUNT(*) AS n FROM login_requests WHERE expires_at > ? AND state IN ('pending', 'approved')`),
      insert: db.prepare(`INSERT INTO login_requests VALUES (@hash, @kind, @user_code_hash, @state, @username, @mfa_at, @client_ip, @key_thumbprint,
        @ttl_ms, @step_up, @code_challenge, @redirect_uri, @interval_s, @last_poll_at, @serial, @created_at, @expires_at)`),
      get: db.prepare<[string], RequestRow>('SELECT * FROM login_requests WHERE hash = ?'),
      getByUserCode: db.prepare<[string], RequestRow>('SELECT * FROM login_requests WHERE user_code_hash = ?'),
      recordPoll: db.prepare('UPDATE login_requests SET last_poll_at = ?, interval_s = ? WHERE hash = ? AND last_poll_at IS ?'),
      insertCert: db.prepare(`INSERT INTO user_certs VALUES (@serial, @username, @spiffe_id, @groups, @mfa_at, @issued_at, @not_after, @flow,
        @client_ip, @revoked_at, @revoked_reason)`),
      getCert: db.prepare<[string], CertRow>('SELECT * FROM user_certs WHERE serial = ?'),
      liveCerts: db.prepare<[number], CertRow>(`SELECT c.serial, c.username, c.spiffe_id, u.groups, c.mfa_at, c.issued_at, c.not_after, c.flow, c.client_ip,
        c.revoked_at, c.revoked_reason FROM user_certs c JOIN users u ON u.username = c.username
        WHERE c.revoked_at IS NULL AND c.not_after > ? AND u.state = 'active' ORDER BY c.serial`),
      revokeCert: db.prepare('UPDATE user_certs SET revoked_at = ?, revoked_reason = ? WHERE serial = ? AND revoked_at IS NULL'),
      revokeCerts: db.prepare('UPDATE user_certs SET revoked_at = ?, revoked_reason = ? WHERE username = ? AND revoked_at IS NULL'),
      pruneCerts: db.prepare('DELETE FROM user_certs WHERE not_after < ?'),
    };
    this.insertTx = db.transaction((rec: LoginRequestRecord, now: number, caps: { perIp: number; total: number }) => {
      // Kept a while past expiry, so a late poll hears "expired" (RFC 8628 expired_token), not "unknown".
      this.s.prune.run(now - EXPIRED_KEPT_MS);
      if (this.s.countIp.get(rec.clientIp, now)!.n >= caps.perIp) return 'ip_cap' as const;
      if (this.s.countAll.get(now)!.n >= caps.total) return 'total_cap' as const;
      this.s.insert.run({
        hash: rec.hash, kind: rec.kind, user_code_hash: rec.userCodeHash, state: rec.state, username: rec.username, mfa_at: rec.mfaAt,
        client_ip: rec.clientIp, key_thumbprint: rec.keyThumbprint, ttl_ms: rec.ttlMs, step_up: rec.stepUp ? 1 : 0, code_challenge: rec.codeChallenge,
        redirect_uri: rec.redirectUri, interval_s: rec.intervalS, last_poll_at: rec.lastPollAt, serial: rec.serial, created_at: rec.createdAt, expires_at: rec.expiresAt,
      });
      return 'ok' as const;
    });
  }

  async insertLoginRequest(rec: LoginRequestRecord, now: number, caps: { perIp: number; total: number }): Promise<'ok' | 'ip_cap' | 'total_cap'> {
    return this.insertTx(rec, now, caps);
  }

  async getLoginRequest(hash: string): Promise<LoginRequestRecord | undefined> {
    const r = this.s.get.get(hash);
    return r && requestFromRow(r);
  }

  async getLoginRequestByUserCode(userCodeHash: string): Promise<LoginRequestRecord | undefined> {
    const r = this.s.getByUserCode.get(userCodeHash);
    return r && requestFromRow(r);
  }

  async updateLoginRequest(hash: string, from: LoginRequestRecord['state'], patch: Partial<Pick<LoginRequestRecord, 'state' | 'username' | 'mfaAt' | 'intervalS' | 'lastPollAt' | 'serial'>>): Promise<boolean> {
    const keys = (Object.keys(patch) as (keyof typeof PATCHABLE)[]).filter((k) => Object.hasOwn(PATCHABLE, k));
    if (keys.length === 0) return false;
    const sets = keys.map((k) => `${PATCHABLE[k]} = @${k}`).join(', ');
    const values: Record<string, unknown> = { hash, from };
    for (const k of keys) values[k] = patch[k] ?? null;
    return this.db.prepare(`UPDATE login_requests SET ${sets} WHERE hash = @hash AND state = @from`).run(values).changes === 1;
  }

  async recordPoll(hash: string, lastPollAt: number | null, now: number, intervalS: number): Promise<boolean> {
    return this.s.recordPoll.run(now, intervalS, hash, lastPollAt).changes === 1;
  }

  async insertUserCert(rec: UserCertRecord): Promise<void> {
    // Certificates expired over a day ago are of no use to anyone (the audit log keeps their history).
    this.s.pruneCerts.run(rec.issuedAt - 86_400_000);
    this.s.insertCert.run({
      serial: rec.serial, username: rec.username, spiffe_id: rec.spiffeId, groups: JSON.stringify(rec.groups), mfa_at: rec.mfaAt,
      issued_at: rec.issuedAt, not_after: rec.notAfter, flow: rec.flow, client_ip: rec.clientIp, revoked_at: rec.revokedAt, revoked_reason: rec.revokedReason,
    });
  }

  async getUserCert(serial: string): Promise<UserCertRecord | undefined> {
    const r = this.s.getCert.get(serial);
    return r && certFromRow(r);
  }

  async liveUserCerts(now: number): Promise<UserCertRecord[]> {
    return this.s.liveCerts.all(now).map(certFromRow);
  }

  async revokeUserCert(serial: string, at: number, reason: string): Promise<boolean> {
    return this.s.revokeCert.run(at, reason, serial).changes === 1;
  }

  async revokeUserCerts(username: string, at: number, reason: string): Promise<number> {
    return this.s.revokeCerts.run(at, reason, username).changes;
  }
}
