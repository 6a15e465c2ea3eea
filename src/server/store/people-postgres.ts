/**
 * The PostgreSQL side of {@link PeopleStore}: the same tables as people-sqlite.ts (users, groups,
 * credentials, sessions, one-time tickets) in PostgreSQL types, with the same behaviour. Text keys
 * that are listed in order use the "C" collation, so the order is SQLite's (bytewise), whatever the
 * database's locale.
 */
import type { Pool, PoolClient } from 'pg';
import type { AuthTicketRecord, PeopleStore, SessionRecord, UserCredentialRecord, UserRecord } from './store.js';
import { inTransaction, num, numOrNull, pgLimit } from './pg-substore-util.js';

/** DDL of the people tables, in order; idempotent (IF NOT EXISTS), for the PostgreSQL migration runner. */
export const PEOPLE_MIGRATIONS: readonly string[] = [
  `CREATE TABLE IF NOT EXISTS users (
    username TEXT COLLATE "C" PRIMARY KEY, spiffe_id TEXT NOT NULL UNIQUE, source TEXT NOT NULL CHECK (source IN ('local', 'oidc')),
    oidc_issuer TEXT, oidc_subject TEXT, email TEXT, display_name TEXT, groups TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('active', 'disabled')), webauthn_id TEXT NOT NULL,
    created_at BIGINT NOT NULL, created_by TEXT NOT NULL, updated_at BIGINT NOT NULL, disabled_reason TEXT
  )`,
  'CREATE UNIQUE INDEX IF NOT EXISTS users_oidc ON users(oidc_issuer, oidc_subject) WHERE oidc_issuer IS NOT NULL',
  'CREATE TABLE IF NOT EXISTS groups (name TEXT COLLATE "C" PRIMARY KEY, source TEXT NOT NULL, created_at BIGINT NOT NULL)',
  `CREATE TABLE IF NOT EXISTS user_credentials (
    id TEXT COLLATE "C" PRIMARY KEY, username TEXT COLLATE "C" NOT NULL REFERENCES users(username) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('passkey', 'totp')), created_at BIGINT NOT NULL,
    public_key BYTEA, counter BIGINT NOT NULL DEFAULT 0, transports TEXT NOT NULL DEFAULT '[]',
    secret_sealed BYTEA, last_step BIGINT NOT NULL DEFAULT -1, last_used_at BIGINT
  )`,
  'CREATE INDEX IF NOT EXISTS user_credentials_user ON user_credentials(username)',
  `CREATE TABLE IF NOT EXISTS sessions (
    hash TEXT PRIMARY KEY, username TEXT COLLATE "C" NOT NULL REFERENCES users(username) ON DELETE CASCADE,
    source TEXT NOT NULL, created_at BIGINT NOT NULL, last_seen_at BIGINT NOT NULL, expires_at BIGINT NOT NULL,
    mfa_at BIGINT, csrf_hash TEXT NOT NULL
  )`,
  'CREATE INDEX IF NOT EXISTS sessions_user ON sessions(username)',
  'CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions(expires_at)',
  `CREATE TABLE IF NOT EXISTS auth_tickets (
    hash TEXT PRIMARY KEY, kind TEXT NOT NULL, username TEXT, data TEXT NOT NULL,
    created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, used_at BIGINT
  )`,
  'CREATE INDEX IF NOT EXISTS auth_tickets_expiry ON auth_tickets(expires_at)',
  'CREATE INDEX IF NOT EXISTS auth_tickets_user ON auth_tickets(username)',
];

type Big = string | number;
interface UserRow {
  username: string; spiffe_id: string; source: string; oidc_issuer: string | null; oidc_subject: string | null; email: string | null;
  display_name: string | null; groups: string; state: string; webauthn_id: string; created_at: Big; created_by: string; updated_at: Big; disabled_reason: string | null;
}
interface CredentialRow {
  id: string; username: string; kind: string; created_at: Big; public_key: Buffer | null; counter: Big; transports: string;
  secret_sealed: Buffer | null; last_step: Big; last_used_at: Big | null;
}
interface SessionRow { hash: string; username: string; source: string; created_at: Big; last_seen_at: Big; expires_at: Big; mfa_at: Big | null; csrf_hash: string }
interface TicketRow { hash: string; kind: string; username: string | null; data: string; created_at: Big; expires_at: Big; used_at: Big | null }

const userFromRow = (r: UserRow): UserRecord => ({
  username: r.username, spiffeId: r.spiffe_id, source: r.source as UserRecord['source'], oidcIssuer: r.oidc_issuer, oidcSubject: r.oidc_subject,
  email: r.email, displayName: r.display_name, groups: JSON.parse(r.groups) as string[], state: r.state as UserRecord['state'], webauthnId: r.webauthn_id,
  createdAt: num(r.created_at), createdBy: r.created_by, updatedAt: num(r.updated_at), disabledReason: r.disabled_reason,
});
const credFromRow = (r: CredentialRow): UserCredentialRecord => ({
  id: r.id, username: r.username, kind: r.kind as UserCredentialRecord['kind'], createdAt: num(r.created_at),
  publicKey: r.public_key, counter: num(r.counter), transports: JSON.parse(r.transports) as string[],
  secretSealed: r.secret_sealed, lastStep: num(r.last_step), lastUsedAt: numOrNull(r.last_used_at),
});
const sessionFromRow = (r: SessionRow): SessionRecord => ({
  hash: r.hash, username: r.username, source: r.source as SessionRecord['source'], createdAt: num(r.created_at), lastSeenAt: num(r.last_seen_at),
  expiresAt: num(r.expires_at), mfaAt: numOrNull(r.mfa_at), csrfHash: r.csrf_hash,
});
const ticketFromRow = (r: TicketRow): AuthTicketRecord => ({
  hash: r.hash, kind: r.kind, username: r.username, data: r.data, createdAt: num(r.created_at), expiresAt: num(r.expires_at), usedAt: numOrNull(r.used_at),
});

/**
 * Records groups not yet known, in one statement, in sorted order: two transactions adding the same
 * new groups then take their row locks in the same order (in the caller's order they could deadlock).
 */
async function addGroups(c: PoolClient, groups: readonly string[], source: string, at: number): Promise<void> {
  if (groups.length === 0) return;
  const names = [...new Set(groups)].sort();
  await c.query('INSERT INTO groups(name, source, created_at) SELECT g, $2, $3 FROM unnest($1::text[]) AS g ON CONFLICT (name) DO NOTHING', [names, source, at]);
}

export class PostgresPeopleStore implements PeopleStore {
  constructor(private readonly pool: Pool) {}

  async insertUser(u: UserRecord): Promise<boolean> {
    return inTransaction(this.pool, async (c) => {
      // ON CONFLICT DO NOTHING with no target: any of the unique keys (name, SPIFFE ID, OIDC identity), as SQLite's OR IGNORE.
      const res = await c.query(
        `INSERT INTO users(username, spiffe_id, source, oidc_issuer, oidc_subject, email, display_name, groups, state, webauthn_id,
          created_at, created_by, updated_at, disabled_reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) ON CONFLICT DO NOTHING`,
        [u.username, u.spiffeId, u.source, u.oidcIssuer, u.oidcSubject, u.email, u.displayName, JSON.stringify(u.groups), u.state, u.webauthnId,
          u.createdAt, u.createdBy, u.updatedAt, u.disabledReason]);
      const ok = res.rowCount === 1;
      if (ok) await addGroups(c, u.groups, u.source, u.createdAt);
      return ok;
    });
  }

  async updateUser(u: UserRecord): Promise<boolean> {
    return inTransaction(this.pool, async (c) => {
      const res = await c.query(
        `UPDATE users SET email = $2, display_name = $3, groups = $4, state = $5, updated_at = $6, disabled_reason = $7 WHERE username = $1`,
        [u.username, u.email, u.displayName, JSON.stringify(u.groups), u.state, u.updatedAt, u.disabledReason]);
      const ok = res.rowCount === 1;
      if (ok) await addGroups(c, u.groups, u.source, u.updatedAt);
      return ok;
    });
  }

  async getUser(username: string): Promise<UserRecord | undefined> {
    const r = await this.pool.query<UserRow>('SELECT * FROM users WHERE username = $1', [username]);
    return r.rows[0] && userFromRow(r.rows[0]);
  }

  async getUserBySubject(issuer: string, subject: string): Promise<UserRecord | undefined> {
    const r = await this.pool.query<UserRow>('SELECT * FROM users WHERE oidc_issuer = $1 AND oidc_subject = $2', [issuer, subject]);
    return r.rows[0] && userFromRow(r.rows[0]);
  }

  async listUsers(limit: number): Promise<UserRecord[]> {
    const r = await this.pool.query<UserRow>('SELECT * FROM users ORDER BY username LIMIT $1', [pgLimit(limit)]);
    return r.rows.map(userFromRow);
  }

  async deleteUser(username: string): Promise<boolean> {
    return inTransaction(this.pool, async (c) => {
      await c.query('DELETE FROM auth_tickets WHERE username = $1', [username]);
      // Credentials, sessions and person certificates go with the user (ON DELETE CASCADE).
      return (await c.query('DELETE FROM users WHERE username = $1', [username])).rowCount === 1;
    });
  }

  async listGroups(): Promise<{ name: string; source: string; createdAt: number }[]> {
    const r = await this.pool.query<{ name: string; source: string; created_at: Big }>('SELECT name, source, created_at FROM groups ORDER BY name');
    return r.rows.map((g) => ({ name: g.name, source: g.source, createdAt: num(g.created_at) }));
  }

  async replaceCredentials(username: string, creds: readonly UserCredentialRecord[]): Promise<void> {
    await inTransaction(this.pool, async (c) => {
      await c.query('DELETE FROM user_credentials WHERE username = $1', [username]);
      for (const k of creds) {
        await c.query(
          `INSERT INTO user_credentials(id, username, kind, created_at, public_key, counter, transports, secret_sealed, last_step, last_used_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
          [k.id, k.username, k.kind, k.createdAt, k.publicKey, k.counter, JSON.stringify(k.transports), k.secretSealed, k.lastStep, k.lastUsedAt]);
      }
    });
  }

  async getCredential(id: string): Promise<UserCredentialRecord | undefined> {
    const r = await this.pool.query<CredentialRow>('SELECT * FROM user_credentials WHERE id = $1', [id]);
    return r.rows[0] && credFromRow(r.rows[0]);
  }

  async listCredentials(username: string): Promise<UserCredentialRecord[]> {
    const r = await this.pool.query<CredentialRow>('SELECT * FROM user_credentials WHERE username = $1 ORDER BY created_at, id', [username]);
    return r.rows.map(credFromRow);
  }

  async setPasskeyCounter(id: string, from: number, to: number, at: number): Promise<boolean> {
    const r = await this.pool.query('UPDATE user_credentials SET counter = $1, last_used_at = $2 WHERE id = $3 AND counter = $4', [to, at, id, from]);
    return r.rowCount === 1;
  }

  async advanceTotpStep(id: string, step: number, at: number): Promise<boolean> {
    const r = await this.pool.query('UPDATE user_credentials SET last_step = $1, last_used_at = $2 WHERE id = $3 AND last_step < $1', [step, at, id]);
    return r.rowCount === 1;
  }

  async insertSession(rec: SessionRecord, now: number): Promise<void> {
    await this.pool.query('DELETE FROM sessions WHERE expires_at < $1', [now]);
    await this.pool.query(
      `INSERT INTO sessions(hash, username, source, created_at, last_seen_at, expires_at, mfa_at, csrf_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
      [rec.hash, rec.username, rec.source, rec.createdAt, rec.lastSeenAt, rec.expiresAt, rec.mfaAt, rec.csrfHash]);
  }

  async getSession(hash: string): Promise<SessionRecord | undefined> {
    const r = await this.pool.query<SessionRow>('SELECT * FROM sessions WHERE hash = $1', [hash]);
    return r.rows[0] && sessionFromRow(r.rows[0]);
  }

  async touchSession(hash: string, at: number): Promise<void> {
    await this.pool.query('UPDATE sessions SET last_seen_at = $1 WHERE hash = $2', [at, hash]);
  }

  async deleteSession(hash: string): Promise<boolean> {
    return (await this.pool.query('DELETE FROM sessions WHERE hash = $1', [hash])).rowCount === 1;
  }

  async deleteSessionsOf(username: string): Promise<number> {
    return (await this.pool.query('DELETE FROM sessions WHERE username = $1', [username])).rowCount ?? 0;
  }

  async insertTicket(t: Omit<AuthTicketRecord, 'usedAt'>, now: number): Promise<void> {
    // Expired tickets go at the next insert: the table holds at most what the TTLs allow.
    await this.pool.query('DELETE FROM auth_tickets WHERE expires_at < $1', [now]);
    await this.pool.query('INSERT INTO auth_tickets(hash, kind, username, data, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)',
      [t.hash, t.kind, t.username, t.data, t.createdAt, t.expiresAt]);
  }

  async consumeTicket(hash: string, kind: string, now: number): Promise<AuthTicketRecord | undefined> {
    // One statement: under concurrent consumers PostgreSQL re-checks `used_at IS NULL` after the first commits, so one wins.
    const r = await this.pool.query<TicketRow>(
      'UPDATE auth_tickets SET used_at = $1 WHERE hash = $2 AND kind = $3 AND used_at IS NULL AND expires_at > $1 RETURNING *', [now, hash, kind]);
    return r.rows[0] && ticketFromRow(r.rows[0]);
  }

  async getTicket(hash: string, kind: string): Promise<AuthTicketRecord | undefined> {
    const r = await this.pool.query<TicketRow>('SELECT * FROM auth_tickets WHERE hash = $1 AND kind = $2', [hash, kind]);
    return r.rows[0] && ticketFromRow(r.rows[0]);
  }

  async countLiveTickets(kinds: readonly string[], now: number): Promise<number> {
    if (kinds.length === 0) return 0;
    const r = await this.pool.query<{ n: Big }>('SELECT COUNT(*) AS n FROM auth_tickets WHERE kind = ANY($1) AND used_at IS NULL AND expires_at > $2', [kinds, now]);
    return num(r.rows[0]!.n);
  }

  async replaceTicketData(hash: string, from: string, to: string): Promise<boolean> {
    const r = await this.pool.query('UPDATE auth_tickets SET data = $1 WHERE hash = $2 AND data = $3 AND used_at IS NULL', [to, hash, from]);
    return r.rowCount === 1;
  }
}
