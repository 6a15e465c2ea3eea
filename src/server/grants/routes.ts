/**
 * Admin identities (`/v1/admins`) and just-in-time grants (`/v1/grants`). Every route needs an
 * admin credential (the bootstrap one or a named admin's) and is audited with that admin as actor.
 */
import type { FastifyInstance } from 'fastify';
import { parseCsrPem } from '../../core/csr.js';
import { TesseraError } from '../../core/errors.js';
import { pemEncode } from '../../core/x509.js';
import { body, int, queryStr, reqStr, str } from '../../common/api/validate.js';
import { adminCaller, audited } from '../api/handlers.js';
import type { ServerContext } from '../context.js';
import { ADMIN_NAME, BOOTSTRAP_ADMIN, type AdminRecord } from './admins.js';
import { GRANT_VIEWS, grantView, type GrantRecord, type GrantView } from './grants.js';

const REASON = /^[\x20-\x7e]{1,256}$/;
const GRANT_ID = /^g-[0-9a-f]{16}$/;

function adminView(a: AdminRecord): Record<string, unknown> {
  const iso = (ms: number | undefined): string | null => (ms === undefined ? null : new Date(ms).toISOString());
  const last = a.certs[a.certs.length - 1];
  return {
    name: a.name, spiffe_id: a.spiffeId, state: a.removedAt === undefined ? 'active' : 'removed',
    created_at: iso(a.createdAt), created_by: a.createdBy, not_after: iso(last?.notAfter),
    removed_at: iso(a.removedAt), removed_by: a.removedBy ?? null, removed_reason: a.removedReason ?? null,
  };
}

/** The CSR's key, after checking it names `expected` or nothing (the identity comes from the server). */
function csrKey(b: Record<string, unknown>, expected: string): ReturnType<typeof parseCsrPem>['publicKey'] {
  const csr = parseCsrPem(reqStr(b, 'csr', { max: 16 * 1024 }));
  if (csr.dnsSans.length > 0 || csr.uriSans.some((u) => u !== expected)) throw new TesseraError('TESSERA_CSR_IDENTITY_MISMATCH', `the CSR may name only ${expected}`);
  return csr.publicKey;
}

function grantParam(id: string): string {
  if (!GRANT_ID.test(id)) throw new TesseraError('TESSERA_NOT_FOUND', 'no such grant (ids are g- and 16 hex digits)');
  return id;
}

export function grantRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const { admins, grants } = ctx;
  const out = (g: GrantRecord): Record<string, unknown> => grantView(g, grants.view(g));

  app.post('/v1/admins', (req, reply) => audited(ctx, req, 'admin.add', async (ev) => {
    const caller = await adminCaller(ctx, req, ev, 'admin:admin.add');
    const b = body(req.body, ['name', 'csr']);
    const name = reqStr(b, 'name', { max: 63 });
    if (!ADMIN_NAME.test(name) || name === BOOTSTRAP_ADMIN) throw new TesseraError('TESSERA_BAD_REQUEST', `admin name must be 1..63 of a-z 0-9 . _ - starting with a letter or digit, and not "${BOOTSTRAP_ADMIN}"`);
    ev.target = admins.idOf(name);
    const key = csrKey(b, admins.idOf(name));
    const r = await admins.add(name, key, caller.spiffeId);
    ev.succeed();
    return reply.code(201).send({ ...adminView(r.admin), cert_pem: pemEncode(r.der, 'CERTIFICATE'), bundle_pem: ctx.ca.bundlePem() });
  }));

  app.post('/v1/admins/renew', (req) => audited(ctx, req, 'admin.renew', async (ev) => {
    const caller = await adminCaller(ctx, req, ev, 'admin:admin.renew');
    ev.target = caller.spiffeId;
    const key = csrKey(body(req.body, ['csr']), caller.spiffeId);
    const r = await admins.renew(caller.spiffeId, key);
    ev.succeed();
    return { ...adminView(r.admin), cert_pem: pemEncode(r.der, 'CERTIFICATE'), bundle_pem: ctx.ca.bundlePem() };
  }));

  app.get('/v1/admins', (req) => audited(ctx, req, 'admin.list', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:admin.list');
    const list = (await admins.list()).map(adminView);
    ev.succeed();
    return { admins: [{ name: BOOTSTRAP_ADMIN, spiffe_id: ctx.adminId, state: 'active', created_at: null, created_by: null, not_after: null, removed_at: null, removed_by: null, removed_reason: null }, ...list] };
  }));

  app.post<{ Params: { name: string } }>('/v1/admins/:name/remove', (req) => audited(ctx, req, 'admin.remove', async (ev) => {
    const caller = await adminCaller(ctx, req, ev, 'admin:admin.remove');
    const name = req.params.name;
    if (ADMIN_NAME.test(name)) ev.target = admins.idOf(name);
    const reason = reqStr(body(req.body, ['reason']), 'reason', { max: 256, pattern: REASON });
    ev.detail.reason = reason;
    if (ev.target === caller.spiffeId) throw new TesseraError('TESSERA_FORBIDDEN', 'an admin cannot remove itself: ask another admin');
    const a = await admins.remove(name, caller.spiffeId, reason);
    ev.succeed();
    return adminView(a);
  }));

  app.post('/v1/grants', (req, reply) => audited(ctx, req, 'grant.request', async (ev) => {
    const caller = await adminCaller(ctx, req, ev, 'admin:grant.request');
    const b = body(req.body, ['principal', 'action', 'resource', 'duration_seconds', 'start', 'reason']);
    const g = await grants.request({
      principal: reqStr(b, 'principal', { max: 4096 }), action: reqStr(b, 'action', { max: 64 }), resource: reqStr(b, 'resource', { max: 4096 }),
      durationSeconds: int(b, 'duration_seconds', { min: 0, max: Number.MAX_SAFE_INTEGER })!,
      ...(b.start !== undefined ? { start: str(b, 'start', { max: 64 })! } : {}),
      reason: reqStr(b, 'reason', { max: 256 }),
    }, caller.spiffeId);
    ev.target = g.id;
    Object.assign(ev.detail, { principal: g.principal, action: g.action, resource: g.resource, duration_seconds: g.durationSeconds, reason: g.reason });
    if (g.requestedStart !== null) ev.detail.requested_start = new Date(g.requestedStart).toISOString();
    ev.succeed();
    return reply.code(201).send(out(g));
  }));

  app.get('/v1/grants', (req) => audited(ctx, req, 'grant.list', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:grant.list');
    const state = queryStr(req.query, 'state', /^[a-z]{1,16}$/);
    if (state !== undefined && !GRANT_VIEWS.includes(state as GrantView)) throw new TesseraError('TESSERA_BAD_REQUEST', `state must be one of ${GRANT_VIEWS.join(', ')}`);
    const now = Date.now();
    const list = (await grants.list()).map((g) => grantView(g, grants.view(g, now))).filter((g) => state === undefined || g.state === state);
    ev.succeed();
    return { grants: list };
  }));

  app.post<{ Params: { id: string } }>('/v1/grants/:id/approve', (req) => audited(ctx, req, 'grant.approve', async (ev) => {
    const caller = await adminCaller(ctx, req, ev, 'admin:grant.approve');
    ev.target = grantParam(req.params.id);
    body(req.body ?? {}, []);
    const r = await grants.approve(ev.target, caller.spiffeId);
    Object.assign(ev.detail, { principal: r.grant.principal, action: r.grant.action, resource: r.grant.resource, requested_by: r.grant.requestedBy, start: new Date(r.grant.start! * 1000).toISOString(), expiry: new Date(r.grant.expiry! * 1000).toISOString(), bundle_version: r.bundleVersion });
    ev.succeed();
    return { ...out(r.grant), bundle_version: r.bundleVersion };
  }));

  app.post<{ Params: { id: string } }>('/v1/grants/:id/deny', (req) => audited(ctx, req, 'grant.deny', async (ev) => {
    const caller = await adminCaller(ctx, req, ev, 'admin:grant.deny');
    ev.target = grantParam(req.params.id);
    const reason = reqStr(body(req.body, ['reason']), 'reason', { max: 256, pattern: REASON });
    ev.detail.reason = reason;
    const g = await grants.deny(ev.target, caller.spiffeId, reason);
    ev.detail.requested_by = g.requestedBy;
    ev.succeed();
    return out(g);
  }));

  app.post<{ Params: { id: string } }>('/v1/grants/:id/revoke', (req) => audited(ctx, req, 'grant.revoke', async (ev) => {
    const caller = await adminCaller(ctx, req, ev, 'admin:grant.revoke');
    ev.target = grantParam(req.params.id);
    const reason = reqStr(body(req.body, ['reason']), 'reason', { max: 256, pattern: REASON });
    ev.detail.reason = reason;
    const r = await grants.revoke(ev.target, caller.spiffeId, reason);
    if (r.bundleVersion !== undefined) ev.detail.bundle_version = r.bundleVersion;
    ev.succeed();
    return { ...out(r.grant), ...(r.bundleVersion !== undefined ? { bundle_version: r.bundleVersion } : {}) };
  }));
}

/** Audits grants the leader's sweep marked expired (`grant.expire`, actor `tessera`). */
export async function auditExpired(ctx: ServerContext, expired: readonly GrantRecord[]): Promise<void> {
  for (const g of expired) {
    const ev = ctx.audit.begin('grant.expire', 'tessera');
    ev.target = g.id;
    Object.assign(ev.detail, { was: g.start === undefined ? 'pending' : 'approved', principal: g.principal, action: g.action, resource: g.resource });
    if (g.expiry !== undefined) ev.detail.expiry = new Date(g.expiry * 1000).toISOString();
    ev.succeed();
    await ctx.audit.record(ev);
  }
}
