/**
 * The PostgreSQL side of {@link DeviceStore}: tables `device_tokens`, `devices`, `posture_reports`,
 * the same as devices.sqlite.ts. Like the SQLite side it reads the core store's `svid_serials` and
 * writes its `revocations` (revoking a device adds its row in the same transaction), so the core
 * tables must be migrated first.
 */
import type { Pool } from 'pg';
import { deviceRevocationId, type DeviceRecord, type DeviceRevokeResult, type DeviceStore, type DeviceTokenConsumeResult, type DeviceTokenRecord, type PostureReportRecord } from './store.js';
import { inTransaction, num, pgLimit } from './pg-substore-util.js';

/** DDL of the device tables, in order (after the core tables); idempotent, for the PostgreSQL migration runner. */
export const DEVICE_MIGRATIONS: readonly string[] = [
  `CREATE TABLE IF NOT EXISTS device_tokens (
    hash TEXT PRIMARY KEY, device_id TEXT NOT NULL, owner TEXT, attributes TEXT NOT NULL, cert_ttl BIGINT NOT NULL,
    created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, used_at BIGINT
  )`,
  'CREATE INDEX IF NOT EXISTS device_tokens_device ON device_tokens(device_id)',
  `CREATE TABLE IF NOT EXISTS devices (
    id TEXT COLLATE "C" PRIMARY KEY, spiffe_id TEXT NOT NULL UNIQUE, owner TEXT, attributes TEXT NOT NULL, cert_ttl BIGINT NOT NULL,
    created_at BIGINT NOT NULL, token_ref TEXT NOT NULL, cert_serial TEXT NOT NULL, cert_not_after BIGINT NOT NULL,
    cert_spki BYTEA NOT NULL, cert_issued_at BIGINT NOT NULL, revoked_at BIGINT, revoked_reason TEXT
  )`,
  `CREATE TABLE IF NOT EXISTS posture_reports (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, device_id TEXT NOT NULL, received_at BIGINT NOT NULL, reported_at BIGINT NOT NULL, report TEXT NOT NULL
  )`,
  'CREATE INDEX IF NOT EXISTS posture_reports_device ON posture_reports(device_id, id)',
];

/** First key of the per-device advisory lock of posture writes (the two-integer lock space; the core store's locks use one bigint). */
const POSTURE_LOCK_CLASS = 0x7e55_0001;

type Big = string | number;
interface TokenRow { hash: string; device_id: string; owner: string | null; attributes: string; cert_ttl: Big; created_at: Big; expires_at: Big; used_at: Big | null }
interface DeviceRow {
  id: string; spiffe_id: string; owner: string | null; attributes: string; cert_ttl: Big; created_at: Big; token_ref: string;
  cert_serial: string; cert_not_after: Big; cert_spki: Buffer; cert_issued_at: Big; revoked_at: Big | null; revoked_reason: string | null;
}
interface ReportRow { device_id: string; received_at: Big; reported_at: Big; report: string }

const tokenFromRow = (r: TokenRow): DeviceTokenRecord => ({
  hash: r.hash, deviceId: r.device_id, owner: r.owner, attributes: JSON.parse(r.attributes) as Record<string, string>, certTtlSeconds: num(r.cert_ttl),
  createdAt: num(r.created_at), expiresAt: num(r.expires_at),
});

const deviceFromRow = (r: DeviceRow): DeviceRecord => ({
  id: r.id, spiffeId: r.spiffe_id, owner: r.owner, attributes: JSON.parse(r.attributes) as Record<string, string>, certTtlSeconds: num(r.cert_ttl),
  createdAt: num(r.created_at), tokenRef: r.token_ref, certSerial: r.cert_serial, certNotAfter: num(r.cert_not_after), certSpki: r.cert_spki,
  certIssuedAt: num(r.cert_issued_at), ...(r.revoked_at !== null ? { revokedAt: num(r.revoked_at), revokedReason: r.revoked_reason ?? '' } : {}),
});

export class PostgresDeviceStore implements DeviceStore {
  constructor(private readonly pool: Pool) {}

  async insertDeviceToken(t: DeviceTokenRecord): Promise<void> {
    await this.pool.query(
      'INSERT INTO device_tokens(hash, device_id, owner, attributes, cert_ttl, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)',
      [t.hash, t.deviceId, t.owner, JSON.stringify(t.attributes), t.certTtlSeconds, t.createdAt, t.expiresAt]);
  }

  async consumeDeviceToken(hash: string, now: number): Promise<DeviceTokenConsumeResult> {
    return inTransaction(this.pool, async (c): Promise<DeviceTokenConsumeResult> => {
      // The row lock makes a concurrent spend wait here, then read it used.
      const row = (await c.query<TokenRow>('SELECT * FROM device_tokens WHERE hash = $1 FOR UPDATE', [hash])).rows[0];
      if (!row) return { ok: false, reason: 'unknown' };
      if (row.used_at !== null) return { ok: false, reason: 'used' };
      if (num(row.expires_at) <= now) return { ok: false, reason: 'expired' };
      await c.query('UPDATE device_tokens SET used_at = $1 WHERE hash = $2', [now, hash]);
      return { ok: true, token: tokenFromRow(row) };
    });
  }

  async hasPendingDeviceToken(deviceId: string, now: number): Promise<boolean> {
    const r = await this.pool.query('SELECT 1 FROM device_tokens WHERE device_id = $1 AND used_at IS NULL AND expires_at > $2 LIMIT 1', [deviceId, now]);
    return r.rows.length > 0;
  }

  async insertDevice(d: DeviceRecord): Promise<boolean> {
    // Any taken key (id, SPIFFE ID): nothing stored, as SQLite's OR IGNORE.
    const r = await this.pool.query(
      `INSERT INTO devices(id, spiffe_id, owner, attributes, cert_ttl, created_at, token_ref, cert_serial, cert_not_after, cert_spki, cert_issued_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING`,
      [d.id, d.spiffeId, d.owner, JSON.stringify(d.attributes), d.certTtlSeconds, d.createdAt, d.tokenRef, d.certSerial, d.certNotAfter, d.certSpki, d.certIssuedAt]);
    return (r.rowCount ?? 0) > 0;
  }

  async getDevice(id: string): Promise<DeviceRecord | undefined> {
    const r = await this.pool.query<DeviceRow>('SELECT * FROM devices WHERE id = $1', [id]);
    return r.rows[0] && deviceFromRow(r.rows[0]);
  }

  async listDevices(limit: number): Promise<DeviceRecord[]> {
    const r = await this.pool.query<DeviceRow>('SELECT * FROM devices ORDER BY id LIMIT $1', [pgLimit(limit)]);
    return r.rows.map(deviceFromRow);
  }

  async isDeviceSerial(deviceId: string, serial: string): Promise<boolean> {
    const r = await this.pool.query('SELECT 1 FROM svid_serials WHERE serial = $1 AND entry_id = $2', [serial, deviceRevocationId(deviceId)]);
    return r.rows.length > 0;
  }

  async updateDeviceCert(id: string, cert: Pick<DeviceRecord, 'certSerial' | 'certNotAfter' | 'certSpki' | 'certIssuedAt'>): Promise<boolean> {
    const r = await this.pool.query(
      'UPDATE devices SET cert_serial = $2, cert_not_after = $3, cert_spki = $4, cert_issued_at = $5 WHERE id = $1 AND revoked_at IS NULL',
      [id, cert.certSerial, cert.certNotAfter, cert.certSpki, cert.certIssuedAt]);
    return (r.rowCount ?? 0) > 0;
  }

  async revokeDevice(id: string, at: number, reason: string): Promise<DeviceRevokeResult> {
    return inTransaction(this.pool, async (c): Promise<DeviceRevokeResult> => {
      const row = (await c.query<DeviceRow>('SELECT * FROM devices WHERE id = $1 FOR UPDATE', [id])).rows[0];
      if (!row) return { ok: false, reason: 'missing' };
      if (row.revoked_at !== null) return { ok: false, reason: 'already', device: deviceFromRow(row) };
      await c.query('UPDATE devices SET revoked_at = $1, revoked_reason = $2 WHERE id = $3', [at, reason, id]);
      // deleted = 0: the device is kept (revoked, refused), as an entry revoked rather than deleted.
      await c.query(`INSERT INTO revocations(entry_id, spiffe_id, revoked_at, reason, deleted) VALUES ($1, $2, $3, $4, 0) ON CONFLICT DO NOTHING`,
        [deviceRevocationId(id), row.spiffe_id, at, reason]);
      return { ok: true, device: deviceFromRow({ ...row, revoked_at: at, revoked_reason: reason }) };
    });
  }

  async insertPostureReport(rec: PostureReportRecord, keep: number): Promise<void> {
    await inTransaction(this.pool, async (c) => {
      // One writer per device at a time (a transaction-scoped advisory lock on the device id): reports arriving
      // together then each see the others' rows, and the device keeps `keep` of them, as on SQLite.
      await c.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [POSTURE_LOCK_CLASS, rec.deviceId]);
      await c.query('INSERT INTO posture_reports(device_id, received_at, reported_at, report) VALUES ($1, $2, $3, $4)',
        [rec.deviceId, rec.receivedAt, rec.reportedAt, rec.report]);
      await c.query(`DELETE FROM posture_reports WHERE device_id = $1 AND id <= (
        SELECT id FROM posture_reports WHERE device_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)`, [rec.deviceId, keep]);
    });
  }

  async listPostureReports(deviceId: string, limit: number): Promise<PostureReportRecord[]> {
    const r = await this.pool.query<ReportRow>(
      'SELECT device_id, received_at, reported_at, report FROM posture_reports WHERE device_id = $1 ORDER BY id DESC LIMIT $2', [deviceId, pgLimit(limit)]);
    return r.rows.map((x) => ({ deviceId: x.device_id, receivedAt: num(x.received_at), reportedAt: num(x.reported_at), report: x.report }));
  }
}
