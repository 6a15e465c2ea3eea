/**
 * Federation relationships (issue 14, src/server/federation/): one row per foreign trust domain with
 * its bundle endpoint, profile and the last good bundle fetched from it (JWK Set text, never merged
 * with our own bundle). `revision` increases on every change of any row (add, new bundle, removal),
 * so agents long-polling the federated bundles wake on it. Its own small interface, so that a
 * PostgreSQL counterpart can be added next to this SQLite one.
 */
import type Database from 'better-sqlite3';

export interface FederationRecord {
  trustDomain: string;
  endpoint: string;
  profile: 'https_web' | 'https_spiffe';
  endpointId?: string;
  /** https_web: PEM roots to check the endpoint's certificate with (absent: the system's). */
  caPem?: string;
  /** The last good bundle (SPIFFE JWK Set text) and its sequence; absent until the first fetch. */
  bundleJson?: string;
  sequence?: number;
  refreshedAt?: number;
  lastError?: string;
  lastErrorAt?: number;
  createdAt: number;
  createdBy: string;
}

export interface FederationStore {
  /** false when the trust domain is already federated. */
  insertFederation(r: FederationRecord): Promise<boolean>;
  getFederation(trustDomain: string): Promise<FederationRecord | undefined>;
  listFederations(): Promise<FederationRecord[]>;
  /** Replaces the bundle (or records an error) of an existing row; false when there is none. */
  updateFederation(trustDomain: string, patch: Pick<FederationRecord, 'bundleJson' | 'sequence' | 'refreshedAt' | 'lastError' | 'lastErrorAt'>): Promise<boolean>;
  deleteFederation(trustDomain: string): Promise<boolean>;
  /** The change counter of the federated bundles (0 before any change). */
  federationRevision(): Promise<number>;
}

export const FEDERATION_SCHEMA = `
CREATE TABLE IF NOT EXISTS federations (
  trust_domain TEXT PRIMARY KEY, endpoint TEXT NOT NULL, profile TEXT NOT NULL, endpoint_id TEXT, ca_pem TEXT,
  bundle_json TEXT, sequence INTEGER, refreshed_at INTEGER, last_error TEXT, last_error_at INTEGER,
  created_at INTEGER NOT NULL, created_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS federation_revision (id INTEGER PRIMARY KEY CHECK (id = 1), revision INTEGER NOT NULL);
INSERT OR IGNORE INTO federation_revision(id, revision) VALUES (1, 0);
`;

interface Row {
  trust_domain: string; endpoint: string; profile: string; endpoint_id: string | null; ca_pem: string | null; bundle_json: string | null;
  sequence: number | null; refreshed_at: number | null; last_error: string | null; last_error_at: number | null; created_at: number; created_by: string;
}

function record(r: Row): FederationRecord {
  const out: FederationRecord = { trustDomain: r.trust_domain, endpoint: r.endpoint, profile: r.profile as FederationRecord['profile'], createdAt: r.created_at, createdBy: r.created_by };
  if (r.endpoint_id !== null) out.endpointId = r.endpoint_id;
  if (r.ca_pem !== null) out.caPem = r.ca_pem;
  if (r.bundle_json !== null) out.bundleJson = r.bundle_json;
  if (r.sequence !== null) out.sequence = r.sequence;
  if (r.refreshed_at !== null) out.refreshedAt = r.refreshed_at;
  if (r.last_error !== null) out.lastError = r.last_error;
  if (r.last_error_at !== null) out.lastErrorAt = r.last_error_at;
  return out;
}

export class SqliteFederationStore implements FederationStore {
  private readonly s;
  private readonly bump: () => void;

  constructor(db: Database.Database) {
    db.exec(FEDERATION_SCHEMA);
    this.s = {
      insert: db.prepare(`INSERT OR IGNORE INTO federations(trust_domain, endpoint, profile, endpoint_id, ca_pem, bundle_json, sequence, refreshed_at, created_at, created_by)
        VALUES (@trustDomain, @endpoint, @profile, @endpointId, @caPem, @bundleJson, @sequence, @refreshedAt, @createdAt, @createdBy)`),
      get: db.prepare<[string], Row>('SELECT * FROM federations WHERE trust_domain = ?'),
      list: db.prepare<[], Row>('SELECT * FROM federations ORDER BY trust_domain'),
      bundle: db.prepare('UPDATE federations SET bundle_json = @bundleJson, sequence = @sequence, refreshed_at = @refreshedAt, last_error = NULL, last_error_at = NULL WHERE trust_domain = @trustDomain'),
      error: db.prepare('UPDATE federations SET last_error = @lastError, last_error_at = @lastErrorAt WHERE trust_domain = @trustDomain'),
      del: db.prepare('DELETE FROM federations WHERE trust_domain = ?'),
      revision: db.prepare<[], { revision: number }>('SELECT revision FROM federation_revision WHERE id = 1'),
      bump: db.prepare('UPDATE federation_revision SET revision = revision + 1 WHERE id = 1'),
    };
    this.bump = () => void this.s.bump.run();
  }

  async insertFederation(r: FederationRecord): Promise<boolean> {
    const added = this.s.insert.run({ endpointId: null, caPem: null, bundleJson: null, sequence: null, refreshedAt: null, ...r }).changes === 1;
    if (added) this.bump();
    return added;
  }

  async getFederation(trustDomain: string): Promise<FederationRecord | undefined> {
    const r = this.s.get.get(trustDomain);
    return r ? record(r) : undefined;
  }

  async listFederations(): Promise<FederationRecord[]> {
    return this.s.list.all().map(record);
  }

  async updateFederation(trustDomain: string, patch: Pick<FederationRecord, 'bundleJson' | 'sequence' | 'refreshedAt' | 'lastError' | 'lastErrorAt'>): Promise<boolean> {
    if (patch.bundleJson !== undefined) {
      const changed = this.s.bundle.run({ trustDomain, bundleJson: patch.bundleJson, sequence: patch.sequence ?? 0, refreshedAt: patch.refreshedAt ?? null }).changes === 1;
      if (changed) this.bump();
      return changed;
    }
    return this.s.error.run({ trustDomain, lastError: patch.lastError ?? null, lastErrorAt: patch.lastErrorAt ?? null }).changes === 1;
  }

  async deleteFederation(trustDomain: string): Promise<boolean> {
    const gone = this.s.del.run(trustDomain).changes === 1;
    if (gone) this.bump();
    return gone;
  }

  async federationRevision(): Promise<number> {
    return this.s.revision.get()?.revision ?? 0;
  }
}
