/**
 * The PostgreSQL side of {@link GatewayStore}: tables `gateways` and `gateway_codes`, the same as
 * gateways.sqlite.ts. A code is taken with one DELETE ... RETURNING, so of two concurrent takes
 * (on any replicas) exactly one gets it.
 */
import type { Pool } from 'pg';
import type { GatewayCodeRecord, GatewayRecord, GatewayStore } from './store.js';
import { inTransaction, num } from './pg-substore-util.js';

/** DDL of the gateway tables, in order; idempotent, for the PostgreSQL migration runner. */
export const GATEWAY_MIGRATIONS: readonly string[] = [
  `CREATE TABLE IF NOT EXISTS gateways (
    name TEXT COLLATE "C" PRIMARY KEY, spiffe_id TEXT NOT NULL UNIQUE, urls TEXT NOT NULL, created_at BIGINT NOT NULL, created_by TEXT NOT NULL
  )`,
  `CREATE TABLE IF NOT EXISTS gateway_codes (
    hash TEXT PRIMARY KEY, gateway TEXT NOT NULL, session_hash TEXT NOT NULL, redirect_uri TEXT NOT NULL, challenge TEXT NOT NULL, expires_at BIGINT NOT NULL
  )`,
  'CREATE INDEX IF NOT EXISTS gateway_codes_expiry ON gateway_codes(expires_at)',
];

type Big = string | number;
interface GatewayRow { name: string; spiffe_id: string; urls: string; created_at: Big; created_by: string }
interface CodeRow { hash: string; gateway: string; session_hash: string; redirect_uri: string; challenge: string; expires_at: Big }

const gateway = (r: GatewayRow): GatewayRecord => ({ name: r.name, spiffeId: r.spiffe_id, urls: JSON.parse(r.urls) as string[], createdAt: num(r.created_at), createdBy: r.created_by });

export class PostgresGatewayStore implements GatewayStore {
  constructor(private readonly pool: Pool) {}

  async insertGateway(g: GatewayRecord): Promise<boolean> {
    const r = await this.pool.query('INSERT INTO gateways(name, spiffe_id, urls, created_at, created_by) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING',
      [g.name, g.spiffeId, JSON.stringify(g.urls), g.createdAt, g.createdBy]);
    return r.rowCount === 1;
  }

  async getGateway(name: string): Promise<GatewayRecord | undefined> {
    const r = await this.pool.query<GatewayRow>('SELECT * FROM gateways WHERE name = $1', [name]);
    return r.rows[0] && gateway(r.rows[0]);
  }

  async gatewayBySpiffeId(spiffeId: string): Promise<GatewayRecord | undefined> {
    const r = await this.pool.query<GatewayRow>('SELECT * FROM gateways WHERE spiffe_id = $1', [spiffeId]);
    return r.rows[0] && gateway(r.rows[0]);
  }

  async listGateways(): Promise<GatewayRecord[]> {
    return (await this.pool.query<GatewayRow>('SELECT * FROM gateways ORDER BY name')).rows.map(gateway);
  }

  async deleteGateway(name: string): Promise<boolean> {
    return inTransaction(this.pool, async (c) => {
      await c.query('DELETE FROM gateway_codes WHERE gateway = $1', [name]);
      return (await c.query('DELETE FROM gateways WHERE name = $1', [name])).rowCount === 1;
    });
  }

  async insertGatewayCode(c: GatewayCodeRecord, now: number): Promise<void> {
    await this.pool.query('DELETE FROM gateway_codes WHERE expires_at <= $1', [now]);
    await this.pool.query('INSERT INTO gateway_codes(hash, gateway, session_hash, redirect_uri, challenge, expires_at) VALUES ($1, $2, $3, $4, $5, $6)',
      [c.hash, c.gateway, c.sessionHash, c.redirectUri, c.challenge, c.expiresAt]);
  }

  async takeGatewayCode(hash: string): Promise<GatewayCodeRecord | undefined> {
    const r = (await this.pool.query<CodeRow>('DELETE FROM gateway_codes WHERE hash = $1 RETURNING *', [hash])).rows[0];
    return r ? { hash: r.hash, gateway: r.gateway, sessionHash: r.session_hash, redirectUri: r.redirect_uri, challenge: r.challenge, expiresAt: num(r.expires_at) } : undefined;
  }
}
