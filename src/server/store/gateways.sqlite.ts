/**
 * The SQLite side of {@link GatewayStore}: tables `gateways` and `gateway_codes`, on the SqliteStore's
 * connection.
 */
import type Database from 'better-sqlite3';
import type { GatewayCodeRecord, GatewayRecord, GatewayStore } from './store.js';

export const GATEWAY_SCHEMA = `
CREATE TABLE IF NOT EXISTS gateways (
  name TEXT PRIMARY KEY, spiffe_id TEXT NOT NULL UNIQUE, urls TEXT NOT NULL, created_at INTEGER NOT NULL, created_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS gateway_codes (
  hash TEXT PRIMARY KEY, gateway TEXT NOT NULL, session_hash TEXT NOT NULL, redirect_uri TEXT NOT NULL, challenge TEXT NOT NULL, expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS gateway_codes_expiry ON gateway_codes(expires_at);
`;

interface GatewayRow { name: string; spiffe_id: string; urls: string; created_at: number; created_by: string }
interface CodeRow { hash: string; gateway: string; session_hash: string; redirect_uri: string; challenge: string; expires_at: number }

const gateway = (r: GatewayRow): GatewayRecord => ({ name: r.name, spiffeId: r.spiffe_id, urls: JSON.parse(r.urls) as string[], createdAt: r.created_at, createdBy: r.created_by });

export class SqliteGatewayStore implements GatewayStore {
  private readonly s;
  private readonly takeTx: Database.Transaction<(hash: string) => CodeRow | undefined>;

  constructor(db: Database.Database) {
    db.exec(GATEWAY_SCHEMA);
    this.s = {
      insert: db.prepare('INSERT OR IGNORE INTO gateways(name, spiffe_id, urls, created_at, created_by) VALUES (@name, @spiffeId, @urls, @createdAt, @createdBy)'),
      get: db.prepare<[string], GatewayRow>('SELECT * FROM gateways WHERE name = ?'),
      bySpiffe: db.prepare<[string], GatewayRow>('SELECT * FROM gateways WHERE spiffe_id = ?'),
      list: db.prepare<[], GatewayRow>('SELECT * FROM gateways ORDER BY name'),
      del: db.prepare('DELETE FROM gateways WHERE name = ?'),
      delCodes: db.prepare('DELETE FROM gateway_codes WHERE gateway = ?'),
      insertCode: db.prepare('INSERT INTO gateway_codes(hash, gateway, session_hash, redirect_uri, challenge, expires_at) VALUES (@hash, @gateway, @sessionHash, @redirectUri, @challenge, @expiresAt)'),
      prune: db.prepare('DELETE FROM gateway_codes WHERE expires_at <= ?'),
      getCode: db.prepare<[string], CodeRow>('SELECT * FROM gateway_codes WHERE hash = ?'),
      delCode: db.prepare('DELETE FROM gateway_codes WHERE hash = ?'),
    };
    this.takeTx = db.transaction((hash: string) => {
      const row = this.s.getCode.get(hash);
      if (row) this.s.delCode.run(hash);
      return row;
    });
  }

  async insertGateway(g: GatewayRecord): Promise<boolean> {
    return this.s.insert.run({ ...g, urls: JSON.stringify(g.urls) }).changes === 1;
  }

  async getGateway(name: string): Promise<GatewayRecord | undefined> {
    const r = this.s.get.get(name);
    return r ? gateway(r) : undefined;
  }

  async gatewayBySpiffeId(spiffeId: string): Promise<GatewayRecord | undefined> {
    const r = this.s.bySpiffe.get(spiffeId);
    return r ? gateway(r) : undefined;
  }

  async listGateways(): Promise<GatewayRecord[]> {
    return this.s.list.all().map(gateway);
  }

  async deleteGateway(name: string): Promise<boolean> {
    this.s.delCodes.run(name);
    return this.s.del.run(name).changes === 1;
  }

  async insertGatewayCode(c: GatewayCodeRecord, now: number): Promise<void> {
    this.s.prune.run(now);
    this.s.insertCode.run(c);
  }

  async takeGatewayCode(hash: string): Promise<GatewayCodeRecord | undefined> {
    const r = this.takeTx(hash);
    return r ? { hash: r.hash, gateway: r.gateway, sessionHash: r.session_hash, redirectUri: r.redirect_uri, challenge: r.challenge, expiresAt: r.expires_at } : undefined;
  }
}
