/**
 * The PostgreSQL side of {@link FederationStore}: tables `federations` and `federation_revision`, the
 * same as federation.sqlite.ts. Each change and its revision bump are one transaction, so replicas
 * reading the revision never see a change without its bump (or the reverse).
 */
import type { Pool } from 'pg';
import type { FederationRecord, FederationStore } from './federation.sqlite.js';
import { inTransaction, num } from './pg-substore-util.js';

/** DDL of the federation tables, in order; idempotent, for the PostgreSQL migration runner. */
export const FEDERATION_MIGRATIONS: readonly string[] = [
  `CREATE TABLE IF NOT EXISTS federations (
    trust_domain TEXT COLLATE "C" PRIMARY KEY, endpoint TEXT NOT NULL, profile TEXT NOT NULL, endpoint_id TEXT, ca_pem TEXT,
    bundle_json TEXT, sequence BIGINT, refreshed_at BIGINT, last_error TEXT, last_error_at BIGINT,
    created_at BIGINT NOT NULL, created_by TEXT NOT NULL
  )`,
  'CREATE TABLE IF NOT EXISTS federation_revision (id INTEGER PRIMARY KEY CHECK (id = 1), revision BIGINT NOT NULL)',
  'INSERT INTO federation_revision(id, revision) VALUES (1, 0) ON CONFLICT DO NOTHING',
];

type Big = string | number;
interface Row {
  trust_domain: string; endpoint: string; profile: string; endpoint_id: string | null; ca_pem: string | null; bundle_json: string | null;
  sequence: Big | null; refreshed_at: Big | null; last_error: string | null; last_error_at: Big | null; created_at: Big; created_by: string;
}

function record(r: Row): FederationRecord {
  const out: FederationRecord = { trustDomain: r.trust_domain, endpoint: r.endpoint, profile: r.profile as FederationRecord['profile'], createdAt: num(r.created_at), createdBy: r.created_by };
  if (r.endpoint_id !== null) out.endpointId = r.endpoint_id;
  if (r.ca_pem !== null) out.caPem = r.ca_pem;
  if (r.bundle_json !== null) out.bundleJson = r.bundle_json;
  if (r.sequence !== null) out.sequence = num(r.sequence);
  if (r.refreshed_at !== null) out.refreshedAt = num(r.refreshed_at);
  if (r.last_error !== null) out.lastError = r.last_error;
  if (r.last_error_at !== null) out.lastErrorAt = num(r.last_error_at);
  return out;
}

const BUMP = 'UPDATE federation_revision SET revision = revision + 1 WHERE id = 1';

export class PostgresFederationStore implements FederationStore {
  constructor(private readonly pool: Pool) {}

  async insertFederation(r: FederationRecord): Promise<boolean> {
    return inTransaction(this.pool, async (c) => {
      const added = (await c.query(`INSERT INTO federations(trust_domain, endpoint, profile, endpoint_id, ca_pem, bundle_json, sequence, refreshed_at, created_at, created_by)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING`,
      [r.trustDomain, r.endpoint, r.profile, r.endpointId ?? null, r.caPem ?? null, r.bundleJson ?? null, r.sequence ?? null, r.refreshedAt ?? null, r.createdAt, r.createdBy])).rowCount === 1;
      if (added) await c.query(BUMP);
      return added;
    });
  }

  async getFederation(trustDomain: string): Promise<FederationRecord | undefined> {
    const r = (await this.pool.query<Row>('SELECT * FROM federations WHERE trust_domain = $1', [trustDomain])).rows[0];
    return r && record(r);
  }

  async listFederations(): Promise<FederationRecord[]> {
    return (await this.pool.query<Row>('SELECT * FROM federations ORDER BY trust_domain')).rows.map(record);
  }

  async updateFederation(trustDomain: string, patch: Pick<FederationRecord, 'bundleJson' | 'sequence' | 'refreshedAt' | 'lastError' | 'lastErrorAt'>): Promise<boolean> {
    if (patch.bundleJson === undefined) {
      return (await this.pool.query('UPDATE federations SET last_error = $2, last_error_at = $3 WHERE trust_domain = $1', [trustDomain, patch.lastError ?? null, patch.lastErrorAt ?? null])).rowCount === 1;
    }
    return inTransaction(this.pool, async (c) => {
      const changed = (await c.query('UPDATE federations SET bundle_json = $2, sequence = $3, refreshed_at = $4, last_error = NULL, last_error_at = NULL WHERE trust_domain = $1',
        [trustDomain, patch.bundleJson, patch.sequence ?? 0, patch.refreshedAt ?? null])).rowCount === 1;
      if (changed) await c.query(BUMP);
      return changed;
    });
  }

  async deleteFederation(trustDomain: string): Promise<boolean> {
    return inTransaction(this.pool, async (c) => {
      const gone = (await c.query('DELETE FROM federations WHERE trust_domain = $1', [trustDomain])).rowCount === 1;
      if (gone) await c.query(BUMP);
      return gone;
    });
  }

  async federationRevision(): Promise<number> {
    const r = (await this.pool.query<{ revision: Big }>('SELECT revision FROM federation_revision WHERE id = 1')).rows[0];
    return r ? num(r.revision) : 0;
  }
}
