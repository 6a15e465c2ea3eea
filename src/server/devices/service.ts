/**
 * Devices (issue 12): one-time enrolment tokens, X.509 device identities
 * (`spiffe://<td>/device/<id>`, issued by the CA like X509-SVIDs), signed posture reports, and the
 * posture context policies see. Mirrors the registry's join tokens and entries: tokens are stored
 * as hashes and spent once; revoking a device puts it on the policy bundle's revocation list.
 */
import { createHash, createPublicKey, randomBytes, verify as verifySignature, X509Certificate } from 'node:crypto';
import type { ParsedCsr } from '../../core/csr.js';
import { TesseraError } from '../../core/errors.js';
import type { RateLimit } from '../../core/rate-limit.js';
import { DEFAULT_POSTURE_RATE_LIMIT } from './limits.js';
import { DEVICE_ID, parsePostureReport, postureContext, postureReportJson, postureSigningInput, type DevicePostureContext, type PostureReport } from '../../core/devices/posture.js';
import { spkiDer } from '../../core/x509.js';
import type { AuditNotes } from '../audit/audit.js';
import type { CertificateAuthority } from '../ca/ca.js';
import type { PolicyService } from '../policy/service.js';
import { deviceRevocationId, type DeviceRecord, type PostureReportRecord, type Store } from '../store/store.js';

export const DEVICE_TOKEN = /^tdt_[A-Za-z0-9_-]{43}$/;

export interface DeviceSettings {
  /** A report older than this is `stale` (default 2 × the agent's default interval of 5 minutes). */
  postureStaleMs: number;
  /** Reports kept per device (the latest and a bounded history). */
  postureHistory: number;
  /** How far a report's time may be from the server clock. */
  reportSkewMs: number;
  /** Posture reports each device may send, per process (default DEFAULT_POSTURE_RATE_LIMIT: limits.ts). */
  postureRateLimit: RateLimit;
}

export const DEFAULT_DEVICE_SETTINGS: DeviceSettings = { postureStaleMs: 10 * 60_000, postureHistory: 20, reportSkewMs: 5 * 60_000, postureRateLimit: DEFAULT_POSTURE_RATE_LIMIT };
export const DEFAULT_DEVICE_TOKEN_TTL_SECONDS = 3600;
export const DEFAULT_DEVICE_CERT_TTL_SECONDS = 86400;

/** Why a caller is not a live device (audit detail; the caller only sees TESSERA_IDENTITY_REVOKED). */
export type NotLiveDevice = 'unknown' | 'revoked' | 'not its certificate' | 'revoked serial';

export interface NewDeviceToken {
  deviceId?: string;
  owner?: string;
  attributes: Record<string, string>;
  ttlSeconds?: number;
  certTtlSeconds?: number;
}

export interface IssuedDeviceCert {
  device: DeviceRecord;
  der: Buffer;
  notBefore: Date;
  notAfter: Date;
  bundlePem: string;
}

export interface DeviceDeps {
  store: Store;
  ca: CertificateAuthority;
  /** Revocations go into the signed bundle. */
  policy: Pick<PolicyService, 'entriesChanged'>;
  trustDomain: string;
  settings?: Partial<DeviceSettings>;
  now?: () => number;
}

function tokenHash(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

export class DeviceService {
  readonly settings: DeviceSettings;
  private readonly now: () => number;

  constructor(private readonly deps: DeviceDeps) {
    this.settings = { ...DEFAULT_DEVICE_SETTINGS, ...deps.settings };
    this.now = deps.now ?? Date.now;
  }

  private get store(): Store['devices'] {
    return this.deps.store.devices;
  }

  spiffeIdOf(deviceId: string): string {
    return `spiffe://${this.deps.trustDomain}/device/${deviceId}`;
  }

  /** The device id of a SPIFFE ID of this trust domain's `/device` tree, else undefined. */
  deviceIdOf(spiffeId: string): string | undefined {
    const prefix = `spiffe://${this.deps.trustDomain}/device/`;
    if (!spiffeId.startsWith(prefix)) return undefined;
    const id = spiffeId.slice(prefix.length);
    return DEVICE_ID.test(id) ? id : undefined;
  }

  /**
   * A new one-time enrolment token for a device id not in use (TESSERA_CONFLICT otherwise, also
   * while an unspent token names it). Only its hash is stored; the token is returned once.
   */
  async createToken(input: NewDeviceToken): Promise<{ token: string; ref: string; deviceId: string; spiffeId: string; expiresAt: number }> {
    const now = this.now();
    const deviceId = input.deviceId ?? `dev-${randomBytes(6).toString('hex')}`;
    if (!DEVICE_ID.test(deviceId)) throw new TesseraError('TESSERA_BAD_REQUEST', 'a device id is 1-63 of a-z 0-9 . _ - starting with a letter or digit');
    if (await this.store.getDevice(deviceId)) throw new TesseraError('TESSERA_CONFLICT', `device ${deviceId} is already enrolled (revoked devices keep their id)`);
    if (await this.store.hasPendingDeviceToken(deviceId, now)) throw new TesseraError('TESSERA_CONFLICT', `an unused enrolment token already names device ${deviceId}`);
    const token = `tdt_${randomBytes(32).toString('base64url')}`;
    const hash = tokenHash(token);
    const expiresAt = now + (input.ttlSeconds ?? DEFAULT_DEVICE_TOKEN_TTL_SECONDS) * 1000;
    await this.store.insertDeviceToken({
      hash, deviceId, owner: input.owner ?? null, attributes: input.attributes, certTtlSeconds: input.certTtlSeconds ?? DEFAULT_DEVICE_CERT_TTL_SECONDS, createdAt: now, expiresAt,
    });
    return { token, ref: hash.slice(0, 12), deviceId, spiffeId: this.spiffeIdOf(deviceId), expiresAt };
  }

  /**
   * Enrols a device: spends the token (once, even when what follows fails; every refusal is
   * TESSERA_TOKEN_INVALID, `notes.detail.reason` says which), then issues the device's first
   * certificate for the CSR's key. The CSR may name only the device's own SPIFFE ID.
   */
  async enroll(token: string, csr: ParsedCsr, notes: AuditNotes): Promise<IssuedDeviceCert> {
    const hash = tokenHash(token);
    notes.detail.token_ref = hash.slice(0, 12);
    notes.actor = `device-token:${hash.slice(0, 12)}`;
    const used = await this.store.consumeDeviceToken(hash, this.now());
    if (!used.ok) {
      notes.detail.reason = used.reason;
      throw new TesseraError('TESSERA_TOKEN_INVALID');
    }
    const t = used.token;
    const spiffeId = this.spiffeIdOf(t.deviceId);
    notes.target = spiffeId;
    checkCsrFor(csr, spiffeId);
    const cert = this.issueCert(csr, spiffeId, t.certTtlSeconds);
    const device: DeviceRecord = {
      id: t.deviceId, spiffeId, owner: t.owner, attributes: t.attributes, certTtlSeconds: t.certTtlSeconds, createdAt: this.now(), tokenRef: hash.slice(0, 12),
      certSerial: cert.serial, certNotAfter: cert.notAfter.getTime(), certSpki: spkiDer(csr.publicKey), certIssuedAt: this.now(),
    };
    // Only a stored device's serials are recorded: a certificate issued in a lost race for the id
    // is known to no device, so every device route refuses it.
    if (!(await this.store.insertDevice(device))) throw new TesseraError('TESSERA_CONFLICT', `device ${t.deviceId} is already enrolled`);
    await this.recordSerial(device, cert);
    notes.detail.serial = cert.serial;
    notes.detail.not_after = cert.notAfter.toISOString();
    return { device, der: cert.der, notBefore: cert.notBefore, notAfter: cert.notAfter, bundlePem: this.deps.ca.bundlePem() };
  }

  /**
   * The live device presenting certificate `serial` as `spiffeId`, or why there is none: the device
   * must exist, not be revoked, and the certificate must be one issued to it and not revoked.
   */
  async liveDevice(spiffeId: string, serial: string): Promise<DeviceRecord | NotLiveDevice> {
    const id = this.deviceIdOf(spiffeId);
    const device = id === undefined ? undefined : await this.store.getDevice(id);
    if (!device) return 'unknown';
    if (device.revokedAt) return 'revoked';
    if (!(await this.store.isDeviceSerial(device.id, serial))) return 'not its certificate';
    if (await this.deps.store.isSerialRevoked(serial)) return 'revoked serial';
    return device;
  }

  /** A new certificate for a live device (the CSR may name only its own SPIFFE ID). */
  async renew(device: DeviceRecord, csr: ParsedCsr, notes: AuditNotes): Promise<IssuedDeviceCert> {
    checkCsrFor(csr, device.spiffeId);
    const cert = this.issueCert(csr, device.spiffeId, device.certTtlSeconds);
    const next = { certSerial: cert.serial, certNotAfter: cert.notAfter.getTime(), certSpki: spkiDer(csr.publicKey), certIssuedAt: this.now() };
    // Recorded first: if the device is revoked meanwhile, the revocation lists this serial too.
    await this.recordSerial(device, cert);
    if (!(await this.store.updateDeviceCert(device.id, next))) {
      notes.detail.identity = 'revoked';
      throw new TesseraError('TESSERA_IDENTITY_REVOKED', 'this device is revoked');
    }
    notes.detail.serial = cert.serial;
    notes.detail.not_after = cert.notAfter.toISOString();
    return { device: { ...device, ...next }, der: cert.der, notBefore: cert.notBefore, notAfter: cert.notAfter, bundlePem: this.deps.ca.bundlePem() };
  }

  /**
   * Accepts a signed posture report from live `device` (the mTLS caller). Refused with
   * TESSERA_POSTURE_INVALID (`notes.detail.reason` says why) when it names another device, its
   * signature does not verify with the device's current certificate key, its time is more than
   * `reportSkewMs` from the server clock, or it is not newer than the last stored report (replay).
   */
  async acceptPosture(device: DeviceRecord, report: PostureReport, signature: Buffer, notes: AuditNotes): Promise<{ receivedAt: number; posture: DevicePostureContext }> {
    const refuse = (reason: string): never => {
      notes.detail.reason = reason;
      throw new TesseraError('TESSERA_POSTURE_INVALID');
    };
    if (report.deviceId !== device.spiffeId) refuse('report names another device');
    const key = createPublicKey({ key: device.certSpki, format: 'der', type: 'spki' });
    let ok = false;
    try {
      ok = verifySignature('sha256', postureSigningInput(report), { key, dsaEncoding: 'der' }, signature);
    } catch {
      ok = false;
    }
    if (!ok) refuse('signature does not verify with the device key');
    const now = this.now();
    if (Math.abs(now - report.reportedAt) > this.settings.reportSkewMs) refuse('report time too far from the server clock');
    const [last] = await this.store.listPostureReports(device.id, 1);
    if (last && report.reportedAt <= last.reportedAt) refuse('not newer than the last report');
    await this.store.insertPostureReport({
      deviceId: device.id, receivedAt: now, reportedAt: report.reportedAt, report: JSON.stringify(postureReportJson(report)),
    }, this.settings.postureHistory);
    notes.detail.reported_at = new Date(report.reportedAt).toISOString();
    return { receivedAt: now, posture: postureContext({ spiffeId: device.spiffeId, live: true }, report, now, this.settings.postureStaleMs) };
  }

  list(limit: number): Promise<DeviceRecord[]> {
    return this.store.listDevices(limit);
  }

  /** The device named by its id or SPIFFE ID; TESSERA_DEVICE_NOT_FOUND otherwise. */
  async lookup(ref: string): Promise<DeviceRecord> {
    const id = ref.startsWith('spiffe://') ? this.deviceIdOf(ref) : ref;
    const device = id !== undefined && DEVICE_ID.test(id) ? await this.store.getDevice(id) : undefined;
    if (!device) throw new TesseraError('TESSERA_DEVICE_NOT_FOUND');
    return device;
  }

  /** The device's stored reports, newest first (the first is the latest). */
  async reports(deviceId: string, limit = this.settings.postureHistory): Promise<{ record: PostureReportRecord; report: PostureReport }[]> {
    return (await this.store.listPostureReports(deviceId, limit)).map((record) => ({ record, report: parsePostureReport(JSON.parse(record.report)) }));
  }

  /**
   * Revokes a device: kept, refused everywhere (renewals, posture reports, and every agent through
   * the bundle's revocation list, which gets its SPIFFE ID and unexpired certificates). Revoking
   * twice is TESSERA_CONFLICT. Returns the bundle version that carries the revocation.
   */
  async revoke(deviceId: string, reason: string): Promise<{ device: DeviceRecord; bundleVersion: number }> {
    const res = await this.store.revokeDevice(deviceId, this.now(), reason);
    if (!res.ok && res.reason === 'missing') throw new TesseraError('TESSERA_DEVICE_NOT_FOUND');
    if (!res.ok) throw new TesseraError('TESSERA_CONFLICT', `the device was already revoked at ${new Date(res.device!.revokedAt!).toISOString()}`);
    return { device: res.device, bundleVersion: await this.deps.policy.entriesChanged() };
  }

  /**
   * What policies see in `context.device` for a device (the gateway's part, issue 12): its
   * latest posture, `fresh`, `stale` or `missing` (unknown, revoked, or never reported: `missing`
   * with `enrolled` false for the first two). Never throws for an unknown or malformed ID.
   *
   * @example await ctx.devices.postureContext('spiffe://td/device/lap-1')
   * // → { id: 'spiffe://td/device/lap-1', enrolled: true, posture_state: 'fresh', posture_age_seconds: 42, disk_encrypted: true, ... }
   */
  async postureContext(deviceSpiffeId: string): Promise<DevicePostureContext> {
    const id = this.deviceIdOf(deviceSpiffeId);
    const device = id === undefined ? undefined : await this.store.getDevice(id);
    if (!device) return { enrolled: false, posture_state: 'missing' };
    const latest = device.revokedAt ? undefined : (await this.reports(device.id, 1))[0]?.report;
    return postureContext({ spiffeId: device.spiffeId, live: !device.revokedAt }, latest, this.now(), this.settings.postureStaleMs);
  }

  /** {@link postureContext} of a known record and its latest report (admin views). */
  contextOf(device: DeviceRecord, latest: PostureReport | undefined): DevicePostureContext {
    return postureContext({ spiffeId: device.spiffeId, live: !device.revokedAt }, device.revokedAt ? undefined : latest, this.now(), this.settings.postureStaleMs);
  }

  private issueCert(csr: ParsedCsr, spiffeId: string, ttlSeconds: number): { der: Buffer; notBefore: Date; notAfter: Date; serial: string } {
    // The same leaf profile as workload X509-SVIDs (one URI SAN, not a CA, digitalSignature):
    // agents and gateways verify a device exactly as they verify a workload.
    const cert = this.deps.ca.issue({ publicKey: csr.publicKey, uriSans: [spiffeId] }, ttlSeconds * 1000);
    return { ...cert, serial: new X509Certificate(cert.der).serialNumber.toUpperCase() };
  }

  private recordSerial(device: DeviceRecord, cert: { serial: string; notAfter: Date }): Promise<void> {
    return this.deps.store.recordIssuedSvid({ serial: cert.serial, entryId: deviceRevocationId(device.id), spiffeId: device.spiffeId, notAfter: cert.notAfter.getTime(), issuedAt: this.now() });
  }
}

/** The CSR may name its SPIFFE ID (a URI SAN); when it does, it must be the device's, and only that. */
function checkCsrFor(csr: ParsedCsr, spiffeId: string): void {
  if (csr.uriSans.length > 1 || (csr.uriSans.length === 1 && csr.uriSans[0] !== spiffeId)) throw new TesseraError('TESSERA_CSR_IDENTITY_MISMATCH');
}
