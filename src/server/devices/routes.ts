import type { FastifyInstance, FastifyRequest } from 'fastify';
import { parseCsrPem } from '../../core/csr.js';
import { TesseraError } from '../../core/errors.js';
import { RateLimiter } from '../../core/rate-limit.js';
import { parsePostureSubmission, postureReportJson, type PostureReport } from '../../core/devices/posture.js';
import { pemEncode } from '../../core/x509.js';
import { authenticate } from '../../common/api/auth.js';
import { body, int, queryInt, reqStr, str } from '../../common/api/validate.js';
import type { AuditEvent } from '../audit/audit.js';
import { adminCaller, audited } from '../api/handlers.js';
import type { ServerContext } from '../context.js';
import type { DeviceRecord } from '../store/store.js';
import { DEVICE_TOKEN, type IssuedDeviceCert } from './service.js';
import type {
  CreateDeviceTokenResponse, DeviceCertResponse, DeviceListResponse, DeviceShowResponse, DeviceView, PostureAcceptedResponse, RevokeDeviceResponse,
} from '../../core/wire/devices.js';

const USERNAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const ATTRIBUTE_NAME = /^[a-z][a-z0-9_]{0,31}$/;
const ATTRIBUTE_VALUE = /^[\x20-\x7e]{1,128}$/;
const MAX_ATTRIBUTES = 16;
/** A revocation reason: one line of printable text (it travels in the bundle). */
const REASON = /^[\x20-\x7e]{1,256}$/;

function parseAttributes(v: unknown): Record<string, string> {
  if (v === undefined) return {};
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new TesseraError('TESSERA_BAD_REQUEST', '"attributes" must be an object of strings');
  const entries = Object.entries(v as Record<string, unknown>);
  if (entries.length > MAX_ATTRIBUTES) throw new TesseraError('TESSERA_BAD_REQUEST', `"attributes" may hold at most ${MAX_ATTRIBUTES} names`);
  const out: Record<string, string> = {};
  for (const [k, value] of entries) {
    if (!ATTRIBUTE_NAME.test(k)) throw new TesseraError('TESSERA_BAD_REQUEST', 'attribute names are 1-32 of a-z 0-9 _ starting with a letter');
    if (typeof value !== 'string' || !ATTRIBUTE_VALUE.test(value)) throw new TesseraError('TESSERA_BAD_REQUEST', `attribute ${k} must be printable text of 1..128 characters`);
    out[k] = value;
  }
  return out;
}

function certView(c: IssuedDeviceCert): DeviceCertResponse {
  return {
    device_id: c.device.id, spiffe_id: c.device.spiffeId, cert_pem: pemEncode(c.der, 'CERTIFICATE'),
    not_before: c.notBefore.toISOString(), not_after: c.notAfter.toISOString(), bundle_pem: c.bundlePem,
  };
}

/**
 * Authenticates the mTLS caller as a live device (DeviceService.liveDevice). A caller that is not
 * a device at all is TESSERA_FORBIDDEN; a device unknown, revoked, or presenting a certificate not
 * (or no longer) its own is TESSERA_IDENTITY_REVOKED, the audit record saying which.
 */
async function deviceCaller(ctx: ServerContext, req: FastifyRequest, ev: AuditEvent): Promise<DeviceRecord> {
  const caller = authenticate(req, ctx.trustDomain);
  ev.actor = caller.spiffeId;
  if (ctx.devices.deviceIdOf(caller.spiffeId) === undefined) throw new TesseraError('TESSERA_FORBIDDEN', 'only an enrolled device may call this');
  const device = await ctx.devices.liveDevice(caller.spiffeId, caller.serial);
  if (typeof device === 'string') {
    ev.detail.identity = device;
    throw new TesseraError('TESSERA_IDENTITY_REVOKED', 'this device is not live');
  }
  ev.target = device.spiffeId;
  return device;
}

/** The device SPIFFE ID of the caller's verified certificate, without a refusal or an audit record; undefined for anyone else. */
function deviceCertificateId(ctx: ServerContext, req: FastifyRequest): string | undefined {
  let id: string;
  try {
    id = authenticate(req, ctx.trustDomain).spiffeId;
  } catch {
    return undefined;
  }
  return ctx.devices.deviceIdOf(id) === undefined ? undefined : id;
}

async function deviceView(ctx: ServerContext, d: DeviceRecord, latest?: { reportedAt: number; receivedAt: number; report: PostureReport }): Promise<DeviceView> {
  return {
    device_id: d.id, spiffe_id: d.spiffeId, owner: d.owner, attributes: d.attributes, state: d.revokedAt ? 'revoked' : 'live',
    created_at: new Date(d.createdAt).toISOString(), cert_serial: d.certSerial, cert_not_after: new Date(d.certNotAfter).toISOString(), cert_ttl_seconds: d.certTtlSeconds,
    ...(d.revokedAt ? { revoked_at: new Date(d.revokedAt).toISOString(), revoked_reason: d.revokedReason ?? '' } : {}),
    posture: ctx.devices.contextOf(d, latest?.report),
    ...(latest ? { last_report_at: new Date(latest.reportedAt).toISOString(), last_received_at: new Date(latest.receivedAt).toISOString() } : {}),
  };
}

async function latestOf(ctx: ServerContext, d: DeviceRecord): Promise<{ reportedAt: number; receivedAt: number; report: PostureReport } | undefined> {
  const [r] = await ctx.devices.reports(d.id, 1);
  return r && { reportedAt: r.record.reportedAt, receivedAt: r.record.receivedAt, report: r.report };
}

/**
 * Device enrolment and identity (the device agent: enroll anonymously with a one-time token, then
 * renew and report posture as the device), and the admin's tokens, views and revocation.
 */
export function deviceRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const { devices } = ctx;

  app.post('/v1/devices/tokens', (req, reply) => audited(ctx, req, 'device.token.create', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:device.token.create');
    const b = body(req.body, ['device_id', 'owner', 'attributes', 'ttl_seconds', 'cert_ttl_seconds']);
    const deviceId = str(b, 'device_id', { optional: true, max: 63 });
    const owner = str(b, 'owner', { optional: true, max: 63, pattern: USERNAME });
    const attributes = parseAttributes(b.attributes);
    const ttlSeconds = int(b, 'ttl_seconds', { min: 1, max: 7 * 86400, optional: true });
    const certTtlSeconds = int(b, 'cert_ttl_seconds', { min: 60, max: 30 * 86400, optional: true });
    const t = await devices.createToken({
      attributes, ...(deviceId !== undefined ? { deviceId } : {}), ...(owner !== undefined ? { owner } : {}),
      ...(ttlSeconds !== undefined ? { ttlSeconds } : {}), ...(certTtlSeconds !== undefined ? { certTtlSeconds } : {}),
    });
    ev.detail.token_ref = t.ref;
    ev.succeed(t.spiffeId);
    return reply.code(201).send({
      token: t.token, token_ref: t.ref, device_id: t.deviceId, spiffe_id: t.spiffeId, expires_at: new Date(t.expiresAt).toISOString(),
    } satisfies CreateDeviceTokenResponse);
  }));

  app.post('/v1/device/enroll', (req) => audited(ctx, req, 'device.enroll', async (ev) => {
    const b = body(req.body, ['token', 'csr']);
    // The CSR is checked before the token is touched, so a malformed request does not burn it.
    const csr = parseCsrPem(reqStr(b, 'csr', { max: 16 * 1024 }));
    if (typeof b.token !== 'string' || !DEVICE_TOKEN.test(b.token)) {
      ev.detail.reason = 'malformed';
      throw new TesseraError('TESSERA_TOKEN_INVALID');
    }
    const cert = await devices.enroll(b.token, csr, ev);
    ev.succeed();
    return certView(cert);
  }));

  app.post('/v1/device/renew', (req) => audited(ctx, req, 'device.renew', async (ev) => {
    const device = await deviceCaller(ctx, req, ev);
    const b = body(req.body, ['csr']);
    const cert = await devices.renew(device, parseCsrPem(reqStr(b, 'csr', { max: 16 * 1024 })), ev);
    ev.succeed();
    return certView(cert);
  }));

  const postureLimiter = new RateLimiter(devices.settings.postureRateLimit);
  app.post('/v1/device/posture', async (req, reply) => {
    // Over its limit, a device certificate's report is refused before it is read, judged or audited
    // (each report is otherwise an audit record, a refused one too: a revoked device's included).
    // Keyed by the SPIFFE ID TLS verified; any other caller goes on to be refused below.
    const id = deviceCertificateId(ctx, req);
    if (id !== undefined && !postureLimiter.take(id)) {
      void reply.header('retry-after', String(postureLimiter.retryAfterSeconds(id)));
      throw new TesseraError('TESSERA_RATE_LIMITED', 'too many posture reports from this device; retry later');
    }
    return audited(ctx, req, 'device.posture', async (ev) => {
      const device = await deviceCaller(ctx, req, ev);
      const { report, signature } = parsePostureSubmission(req.body);
      const res = await devices.acceptPosture(device, report, signature, ev);
      ev.detail.posture_state = res.posture.posture_state;
      ev.succeed();
      return { accepted: true, device_id: device.id, received_at: new Date(res.receivedAt).toISOString(), posture: res.posture } satisfies PostureAcceptedResponse;
    });
  });

  app.get('/v1/devices', (req) => audited(ctx, req, 'device.list', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:device.list');
    const limit = queryInt(req.query, 'limit', 1000, 1, 10_000);
    const list = await devices.list(limit);
    const views = [];
    for (const d of list) views.push(await deviceView(ctx, d, await latestOf(ctx, d)));
    ev.succeed();
    return { devices: views } satisfies DeviceListResponse;
  }));

  app.get<{ Params: { id: string } }>('/v1/devices/:id', (req) => audited(ctx, req, 'device.show', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:device.show');
    const d = await devices.lookup(req.params.id);
    const reports = await devices.reports(d.id);
    const latest = reports[0];
    const view = await deviceView(ctx, d, latest && { reportedAt: latest.record.reportedAt, receivedAt: latest.record.receivedAt, report: latest.report });
    ev.succeed(d.spiffeId);
    return {
      ...view,
      ...(latest ? { report: postureReportJson(latest.report) } : {}),
      history: reports.map((r) => ({ reported_at: new Date(r.record.reportedAt).toISOString(), received_at: new Date(r.record.receivedAt).toISOString() })),
    } satisfies DeviceShowResponse;
  }));

  // Revoking twice is a conflict (409): the first revocation's time and reason stand.
  app.post<{ Params: { id: string } }>('/v1/devices/:id/revoke', (req) => audited(ctx, req, 'device.revoke', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:device.revoke');
    const d = await devices.lookup(req.params.id);
    ev.target = d.spiffeId;
    const b = body(req.body, ['reason']);
    const reason = reqStr(b, 'reason', { max: 256, pattern: REASON });
    ev.detail.reason = reason;
    const res = await devices.revoke(d.id, reason);
    ev.detail.bundle_version = res.bundleVersion;
    ev.succeed();
    return { ...(await deviceView(ctx, res.device)), bundle_version: res.bundleVersion } satisfies RevokeDeviceResponse;
  }));
}
