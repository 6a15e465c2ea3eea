import type Database from 'better-sqlite3';
import type { AuthTicketRecord, PeopleStore, SessionRecord, UserCredentialRecord, UserRecord } from './store.js';

/**
 * The people tables (issue 12): users, groups, their sign-in credentials, sessions, and one-time
 * tickets (enrolment and console links, WebAuthn challenges, OIDC states, half-done sign-ins). Every
 * bearer secret is stored as its SHA-256 only (the `hash` columns); TOTP seeds are sealed with the KEK.
 */
export const PEOPLE_SCHEMA = `
CREATE TABLE IF NOT EXISTS users (
  username TEXT PRIMARY KEY, spiffe_id TEXT NOT NULL UNIQUE, source TEXT NOT NULL CHECK (source IN ('local', 'oidc')),
  oidc_issuer TEXT, oidc_subject TEXT, email TEXT, display_name TEXT, groups TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('active', 'disabled')), webauthn_id TEXT NOT NULL,
  created_at INTEGER NOT NULL, created_by TEXT NOT NULL, updated_at INTEGER NOT NULL, disabled_reason TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS users_oidc ON users(oidc_issuer, oidc_subject) WHERE oidc_issuer IS NOT NULL;
CREATE TABLE IF NOT EXISTS groups (name TEXT PRIMARY KEY, source TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS user_credentials (
  id TEXT PRIMARY KEY, username TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
  kind TEXT NOT NULL CHECK (kind IN ('passkey', 'totp')), created_at INTEGER NOT NULL,
  public_key BLOB, counter INTEGER NOT NULL DEFAULT 0, transports TEXT NOT NULL DEFAULT '[]',
  secret_sealed BLOB, last_step INTEGER NOT NULL DEFAULT -1, last_used_at INTEGER
);
CREATE INDEX IF NOT EXISTS user_credentials_user ON user_credentials(username);
CREATE TABLE IF NOT EXISTS sessions (
  hash TEXT PRIMARY KEY, username TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
  source TEXT NOT NULL, created_at INTEGER NOT NULL, last_seen_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
  mfa_at INTEGER, csrf_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions(username);
CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions(expires_at);
CREATE TABLE IF NOT EXISTS auth_tickets (
  hash TEXT PRIMARY KEY, kind TEXT NOT NULL, username TEXT, data TEXT NOT NULL,
  created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, used_at INTEGER
);
CREATE INDEX IF NOT EXISTS auth_tickets_expiry ON auth_tickets(expires_at);
CREATE INDEX IF NOT EXISTS auth_tickets_user ON auth_tickets(username);
`;

interface UserRow {
  username: string; spiffe_id: string; source: string; oidc_issuer: string | null; oidc_subject: string | null; email: string | null;
  display_name: string | null; groups: string; state: string; webauthn_id: string; created_at: number; created_by: string; updated_at: number; disabled_reason: string | null;
}
interface CredentialRow {
  id: string; username: string; kind: string; created_at: number; public_key: Buffer | null; counter: number; transports: string;
  secret_sealed: Buffer | null; last_step: number; last_used_at: number | null;
}
interface SessionRow { hash: string; username: string; source: string; created_at: number; last_seen_at: number; expires_at: number; mfa_at: number | null; csrf_hash: string }
interface TicketRow { hash: string; kind: string; username: string | null; data: string; created_at: number; expires_at: number; used_at: number | null }

const userFromRow = (r: UserRow): UserRecord => ({
  username: r.username, spiffeId: r.spiffe_id, source: r.source as UserRecord['source'], oidcIssuer: r.oidc_issuer, oidcSubject: r.oidc_subject,
  email: r.email, displayName: r.display_name, groups: JSON.parse(r.groups) as string[], state: r.state as UserRecord['state'], webauthnId: r.webauthn_id,
  createdAt: r.created_at, createdBy: r.created_by, updatedAt: r.updated_at, disabledReason: r.disabled_reason,
});
const userToRow = (u: UserRecord): UserRow => ({
  username: u.username, spiffe_id: u.spiffeId, source: u.source, oidc_issuer: u.oidcIssuer, oidc_subject: u.oidcSubject, email: u.email,
  display_name: u.displayName, groups: JSON.stringify(u.groups), state: u.state, webauthn_id: u.webauthnId, created_at: u.createdAt,
  created_by: u.createdBy, updated_at: u.updatedAt, disabled_reason: u.disabledReason,
});
const credFromRow = (r: CredentialRow): UserCredentialRecord => ({
  id: r.id, username: r.username, kind: r.kind as UserCredentialRecord['kind'], createdAt: r.created_at,
  publicKey: r.public_key === null ? null : Buffer.from(r.public_key), counter: r.counter, transports: JSON.parse(r.transports) as string[],
  secretSealed: r.secret_sealed === null ? null : Buffer.from(r.secret_sealed), lastStep: r.last_step, lastUsedAt: r.last_used_at,
});
const sessionFromRow = (r: SessionRow): SessionRecord => ({
  hash: r.hash, username: r.username, source: r.source as SessionRecord['source'], createdAt: r.created_at, lastSeenAt: r.last_seen_at,
  expiresAt: r.expires_at, mfaAt: r.mfa_at, csrfHash: r.csrf_hash,
});
const ticketFromRow = (r: TicketRow): AuthTicketRecord => ({
  hash: r.hash, kind: r.kind, username: r.username, data: r.data, createdAt: r.created_at, expiresAt: r.expires_at, usedAt: r.used_at,
});


export class SqlitePeopleStore implements PeopleStore {
  private readonly s;
  private readonly replaceCredentialsTx: Database.Transaction<(username: string, creds: readonly UserCredentialRecord[]) => void>;

  constructor(private readonly db: Database.Database) {
    db.exec(PEOPLE_SCHEMA);
    this.s = {
      insertUser: db.prepare(`INSERT OR IGNORE INTO users VALUES (@username, @spiffe_id, @source, @oidc_issuer, @oidc_subject, @email, @display_name,
        @groups, @state, @webauthn_id, @created_at, @created_by, @updated_at, @disabled_reason)`),
      updateUser: db.prepare(`UPDATE users SET email = @email, display_name = @display_name, groups = @groups, state = @state,
        updated_at = @updated_at, disabled_reason = @disabled_reason WHERE username = @username`),
      getUser: db.prepare<[string], UserRow>('SELECT * FROM users WHERE username = ?'),
      getUserBySubject: db.prepare<[string, string], UserRow>('SELECT * FROM users WHERE oidc_issuer = ? AND oidc_subject = ?'),
      listUsers: db.prepare<[number], UserRow>('SELECT * FROM users ORDER BY username LIMIT ?'),
      deleteUser: db.prepare('DELETE FROM users WHERE username = ?'),
      deleteUserTickets: db.prepare('DELETE FROM auth_tickets WHERE username = ?'),
      upsertGroup: db.prepare('INSERT OR IGNORE INTO groups(name, source, created_at) VALUES (?, ?, ?)'),
      listGroups: db.prepare<[], { name: string; source: string; created_at: number }>('SELECT * FROM groups ORDER BY name'),
      insertCredential: db.prepare(`INSERT INTO user_credentials(id, username, kind, created_at, public_key, counter, transports, secret_sealed, last_step, last_used_at)
        VALUES (@id, @username, @kind, @created_at, @public_key, @counter, @transports, @secret_sealed, @last_step, @last_used_at)`),
      deleteCredentials: db.prepare('DELETE FROM user_credentials WHERE username = ?'),
      getCredential: db.prepare<[string], CredentialRow>('SELECT * FROM user_credentials WHERE id = ?'),
      listCredentials: db.prepare<[string], CredentialRow>('SELECT * FROM user_credentials WHERE username = ? ORDER BY created_at, id'),
      setCounter: db.prepare('UPDATE user_credentials SET counter = ?, last_used_at = ? WHERE id = ? AND counter = ?'),
      advanceStep: db.prepare('UPDATE user_credentials SET last_step = ?, last_used_at = ? WHERE id = ? AND last_step < ?'),
      insertSession: db.prepare(`INSERT INTO sessions(hash, username, source, created_at, last_seen_at, expires_at, mfa_at, csrf_hash)
        VALUES (@hash, @username, @source, @createdAt, @lastSeenAt, @expiresAt, @mfaAt, @csrfHash)`),
      getSession: db.prepare<[string], SessionRow>('SELECT * FROM sessions WHERE hash = ?'),
      touchSession: db.prepare('UPDATE sessions SET last_seen_at = ? WHERE hash = ?'),
      deleteSession: db.prepare('DELETE FROM sessions WHERE hash = ?'),
      deleteSessionsOf: db.prepare('DELETE FROM sessions WHERE username = ?'),
      pruneSessions: db.prepare('DELETE FROM sessions WHERE expires_at < ?'),
      insertTicket: db.prepare(`INSERT INTO auth_tickets(hash, kind, username, data, created_at, expires_at)
        VALUES (@hash, @kind, @username, @data, @createdAt, @expiresAt)`),
      consumeTicket: db.prepare<[number, string, string, number], TicketRow>(
        'UPDATE auth_tickets SET used_at = ? WHERE hash = ? AND kind = ? AND used_at IS NULL AND expires_at > ? RETURNING *'),
      getTicket: db.prepare<[string, string], TicketRow>('SELECT * FROM auth_tickets WHERE hash = ? AND kind = ?'),
      replaceTicketData: db.prepare('UPDATE auth_tickets SET data = ? WHERE hash = ? AND data = ? AND used_at IS NULL'),
      pruneTickets: db.prepare('DELETE FROM auth_tickets WHERE expires_at < ?'),
    };
    this.replaceCredentialsTx = db.transaction((username: string, creds: readonly UserCredentialRecord[]) => {
      this.s.deleteCredentials.run(username);
      for (const c of creds) {
        this.s.insertCredential.run({
          id: c.id, username: c.username, kind: c.kind, created_at: c.createdAt, public_key: c.publicKey, counter: c.counter,
          transports: JSON.stringify(c.transports), secret_sealed: c.secretSealed, last_step: c.lastStep, last_used_at: c.lastUsedAt,
        });
      }
    });
  }

  async insertUser(u: UserRecord): Promise<boolean> {
    return this.db.transaction(() => {
      const ok = this.s.insertUser.run(userToRow(u)).changes === 1;
      if (ok) for (const g of u.groups) this.s.upsertGroup.run(g, u.source, u.createdAt);
      return ok;
    })();
  }

  async updateUser(u: UserRecord): Promise<boolean> {
    return this.db.transaction(() => {
      const ok = this.s.updateUser.run(userToRow(u)).changes === 1;
      if (ok) for (const g of u.groups) this.s.upsertGroup.run(g, u.source, u.updatedAt);
      return ok;
    })();
  }

  async getUser(username: string): Promise<UserRecord | undefined> {
    const r = this.s.getUser.get(username);
    return r && userFromRow(r);
  }

  async getUserBySubject(issuer: string, subject: string): Promise<UserRecord | undefined> {
    const r = this.s.getUserBySubject.get(issuer, subject);
    return r && userFromRow(r);
  }

  async listUsers(limit: number): Promise<UserRecord[]> {
    return this.s.listUsers.all(limit).map(userFromRow);
  }

  async deleteUser(username: string): Promise<boolean> {
    return this.db.transaction(() => {
      this.s.deleteUserTickets.run(username);
      // Credentials and sessions go with the user (ON DELETE CASCADE).
      return this.s.deleteUser.run(username).changes === 1;
    })();
  }

  async listGroups(): Promise<{ name: string; source: string; createdAt: number }[]> {
    return this.s.listGroups.all().map((r) => ({ name: r.name, source: r.source, createdAt: r.created_at }));
  }

  async replaceCredentials(username: string, creds: readonly UserCredentialRecord[]): Promise<void> {
    this.replaceCredentialsTx(username, creds);
  }

  async getCredential(id: string): Promise<UserCredentialRecord | undefined> {
    const r = this.s.getCredential.get(id);
    return r && credFromRow(r);
  }

  async listCredentials(username: string): Promise<UserCredentialRecord[]> {
    return this.s.listCredentials.all(username).map(credFromRow);
  }

  async setPasskeyCounter(id: string, from: number, to: number, at: number): Promise<boolean> {
    return this.s.setCounter.run(to, at, id, from).changes === 1;
  }

  async advanceTotpStep(id: string, step: number, at: number): Promise<boolean> {
    return this.s.advanceStep.run(step, at, id, step).changes === 1;
  }

  async insertSession(rec: SessionRecord, now: number): Promise<void> {
    this.s.pruneSessions.run(now);
    this.s.insertSession.run(rec);
  }

  async getSession(hash: string): Promise<SessionRecord | undefined> {
    const r = this.s.getSession.get(hash);
    return r && sessionFromRow(r);
  }

  async touchSession(hash: string, at: number): Promise<void> {
    this.s.touchSession.run(at, hash);
  }

  async deleteSession(hash: string): Promise<boolean> {
    return this.s.deleteSession.run(hash).changes === 1;
  }

  async deleteSessionsOf(username: string): Promise<number> {
    return this.s.deleteSessionsOf.run(username).changes;
  }

  async insertTicket(t: Omit<AuthTicketRecord, 'usedAt'>, now: number): Promise<void> {
    // Expired tickets go at the next insert: the table holds at most what the TTLs allow.
    this.s.pruneTickets.run(now);
    this.s.insertTicket.run(t);
  }

  async consumeTicket(hash: string, kind: string, now: number): Promise<AuthTicketRecord | undefined> {
    const r = this.s.consumeTicket.get(now, hash, kind, now);
    return r && ticketFromRow(r);
  }

  async getTicket(hash: string, kind: string): Promise<AuthTicketRecord | undefined> {
    const r = this.s.getTicket.get(hash, kind);
    return r && ticketFromRow(r);
  }

  async countLiveTickets(kinds: readonly string[], now: number): Promise<number> {
    if (kinds.length === 0) return 0;
    const marks = kinds.map(() => '?').join(', ');
    return this.db.prepare<unknown[], { n: number }>(`SELECT COUNT(*) AS n FROM auth_tickets WHERE kind IN (${marks}) AND used_at IS NULL AND expires_at > ?`).get(...kinds, now)!.n;
  }

  async replaceTicketData(hash: string, from: string, to: string): Promise<boolean> {
    return this.s.replaceTicketData.run(to, hash, from).changes === 1;
  }
}
