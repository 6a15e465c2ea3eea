/**
 * The SQLite side of {@link DeviceStore}: tables `device_tokens`, `devices`, `posture_reports`, on
 * the SqliteStore's connection (so revoking a device writes the shared `revocations` table in the
 * same transaction).
 */
import type Database from 'better-sqlite3';
import { deviceRevocationId, type DeviceRecord, type DeviceRevokeResult, type DeviceStore, type DeviceTokenConsumeResult, type DeviceTokenRecord, type PostureReportRecord } from './store.js';

export const DEVICE_SCHEMA = `
CREATE TABLE IF NOT EXISTS device_tokens (
  hash TEXT PRIMARY KEY, device_id TEXT NOT NULL, owner TEXT, attributes TEXT NOT NULL, cert_ttl INTEGER NOT NULL,
  created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, used_at INTEGER
);
CREATE INDEX IF NOT EXISTS device_tokens_device ON device_tokens(device_id);
CREATE TABLE IF NOT EXISTS devices (
  id TEXT PRIMARY KEY, spiffe_id TEXT NOT NULL UNIQUE, owner TEXT, attributes TEXT NOT NULL, cert_ttl INTEGER NOT NULL,
  created_at INTEGER NOT NULL, token_ref TEXT NOT NULL, cert_serial TEXT NOT NULL, cert_not_after INTEGER NOT NULL,
  cert_spki BLOB NOT NULL, cert_issued_at INTEGER NOT NULL, revoked_at INTEGER, revoked_reason TEXT
);
CREATE TABLE IF NOT EXISTS posture_reports (
  id INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL, received_at INTEGER NOT NULL, reported_at INTEGER NOT NULL, report TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS posture_reports_device ON posture_reports(device_id, id);
`;

interface TokenRow { hash: string; device_id: string; owner: string | null; attributes: string; cert_ttl: number; created_at: number; expires_at: number; used_at: number | null }
interface DeviceRow {
  id: string; spiffe_id: string; owner: string | null; attributes: string; cert_ttl: number; created_at: number; token_ref: string;
  cert_serial: string; cert_not_after: number; cert_spki: Buffer; cert_issued_at: number; revoked_at: number | null; revoked_reason: string | null;
}
interface ReportRow { device_id: string; received_at: number; reported_at: number; report: string }

function tokenFromRow(r: TokenRow): DeviceTokenRecord {
  return {
    hash: r.hash, deviceId: r.device_id, owner: r.owner, attributes: JSON.parse(r.attributes) as Record<string, string>, certTtlSeconds: r.cert_ttl,
    createdAt: r.created_at, expiresAt: r.expires_at,
  };
}

function deviceFromRow(r: DeviceRow): DeviceRecord {
  return {
    id: r.id, spiffeId: r.spiffe_id, owner: r.owner, attributes: JSON.parse(r.attributes) as Record<string, string>, certTtlSeconds: r.cert_ttl,
    createdAt: r.created_at, tokenRef: r.token_ref, certSerial: r.cert_serial, certNotAfter: r.cert_not_after, certSpki: Buffer.from(r.cert_spki),
    certIssuedAt: r.cert_issued_at, ...(r.revoked_at !== null ? { revokedAt: r.revoked_at, revokedReason: r.revoked_reason ?? '' } : {}),
  };
}

export class SqliteDeviceStore implements DeviceStore {
  private readonly s;

  constructor(private readonly db: Database.Database) {
    db.exec(DEVICE_SCHEMA);
    this.s = {
      insertToken: db.prepare(`INSERT INTO device_tokens(hash, device_id, owner, attributes, cert_ttl, created_at, expires_at)
        VALUES (@hash, @deviceId, @owner, @attributes, @certTtlSeconds, @createdAt, @expiresAt)`),
      getToken: db.prepare<[string], TokenRow>('SELECT * FROM device_tokens WHERE hash = ?'),
      useToken: db.prepare('UPDATE device_tokens SET used_at = ? WHERE hash = ? AND used_at IS NULL'),
      pendingToken: db.prepare<[string, number], { one: number }>('SELECT 1 AS one FROM device_tokens WHERE device_id = ? AND used_at IS NULL AND expires_at > ? LIMIT 1'),
      insertDevice: db.prepare(`INSERT OR IGNORE INTO devices(id, spiffe_id, owner, attributes, cert_ttl, created_at, token_ref, cert_serial, cert_not_after, cert_spki, cert_issued_at)
        VALUES (@id, @spiffeId, @owner, @attributes, @certTtlSeconds, @createdAt, @tokenRef, @certSerial, @certNotAfter, @certSpki, @certIssuedAt)`),
      getDevice: db.prepare<[string], DeviceRow>('SELECT * FROM devices WHERE id = ?'),
      listDevices: db.prepare<[number], DeviceRow>('SELECT * FROM devices ORDER BY id LIMIT ?'),
      updateCert: db.prepare(`UPDATE devices SET cert_serial = @certSerial, cert_not_after = @certNotAfter, cert_spki = @certSpki, cert_issued_at = @certIssuedAt
        WHERE id = @id AND revoked_at IS NULL`),
      deviceSerial: db.prepare<[string, string], { one: number }>('SELECT 1 AS one FROM svid_serials WHERE serial = ? AND entry_id = ?'),
      revoke: db.prepare('UPDATE devices SET revoked_at = ?, revoked_reason = ? WHERE id = ? AND revoked_at IS NULL'),
      insertRevocation: db.prepare('INSERT OR IGNORE INTO revocations(entry_id, spiffe_id, revoked_at, reason, deleted) VALUES (?, ?, ?, ?, 0)'),
      insertReport: db.prepare('INSERT INTO posture_reports(device_id, received_at, reported_at, report) VALUES (@deviceId, @receivedAt, @reportedAt, @report)'),
      pruneReports: db.prepare(`DELETE FROM posture_reports WHERE device_id = ? AND id <= (
        SELECT id FROM posture_reports WHERE device_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)`),
      listReports: db.prepare<[string, number], ReportRow>('SELECT device_id, received_at, reported_at, report FROM posture_reports WHERE device_id = ? ORDER BY id DESC LIMIT ?'),
    };
  }

  async insertDeviceToken(t: DeviceTokenRecord): Promise<void> {
    this.s.insertToken.run({ ...t, attributes: JSON.stringify(t.attributes) });
  }

  async consumeDeviceToken(hash: string, now: number): Promise<DeviceTokenConsumeResult> {
    return this.db.transaction((): DeviceTokenConsumeResult => {
      const row = this.s.getToken.get(hash);
      if (!row) return { ok: false, reason: 'unknown' };
      if (row.used_at !== null) return { ok: false, reason: 'used' };
      if (row.expires_at <= now) return { ok: false, reason: 'expired' };
      this.s.useToken.run(now, hash);
      return { ok: true, token: tokenFromRow(row) };
    }).immediate();
  }

  async hasPendingDeviceToken(deviceId: string, now: number): Promise<boolean> {
    return this.s.pendingToken.get(deviceId, now) !== undefined;
  }

  async insertDevice(d: DeviceRecord): Promise<boolean> {
    return this.s.insertDevice.run({ ...d, attributes: JSON.stringify(d.attributes) }).changes > 0;
  }

  async getDevice(id: string): Promise<DeviceRecord | undefined> {
    const r = this.s.getDevice.get(id);
    return r && deviceFromRow(r);
  }

  async listDevices(limit: number): Promise<DeviceRecord[]> {
    return this.s.listDevices.all(limit).map(deviceFromRow);
  }

  async isDeviceSerial(deviceId: string, serial: string): Promise<boolean> {
    return this.s.deviceSerial.get(serial, deviceRevocationId(deviceId)) !== undefined;
  }

  async updateDeviceCert(id: string, cert: Pick<DeviceRecord, 'certSerial' | 'certNotAfter' | 'certSpki' | 'certIssuedAt'>): Promise<boolean> {
    return this.s.updateCert.run({ id, ...cert }).changes > 0;
  }

  async revokeDevice(id: string, at: number, reason: string): Promise<DeviceRevokeResult> {
    return this.db.transaction((): DeviceRevokeResult => {
      const row = this.s.getDevice.get(id);
      if (!row) return { ok: false, reason: 'missing' };
      if (row.revoked_at !== null) return { ok: false, reason: 'already', device: deviceFromRow(row) };
      this.s.revoke.run(at, reason, id);
      this.s.insertRevocation.run(deviceRevocationId(id), row.spiffe_id, at, reason);
      return { ok: true, device: deviceFromRow({ ...row, revoked_at: at, revoked_reason: reason }) };
    }).immediate();
  }

  async insertPostureReport(rec: PostureReportRecord, keep: number): Promise<void> {
    this.db.transaction(() => {
      this.s.insertReport.run(rec);
      this.s.pruneReports.run(rec.deviceId, rec.deviceId, keep);
    }).immediate();
  }

  async listPostureReports(deviceId: string, limit: number): Promise<PostureReportRecord[]> {
    return this.s.listReports.all(deviceId, limit).map((r) => ({ deviceId: r.device_id, receivedAt: r.received_at, reportedAt: r.reported_at, report: r.report }));
  }
}
