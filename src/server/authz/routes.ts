/**
 * The admin policy over the API (issue 12), versioned and audited like the risk configuration:
 * `GET /v1/admin/policy` the version in force (with the schema and the MFA age counted as fresh),
 * `PUT /v1/admin/policy {policy, reason}` a new version, `GET /v1/admin/policy/history` the versions,
 * `POST /v1/admin/policy/rollback {version, reason}` a new version with an old one's text. Each is
 * itself an admin action the admin policy decides (`admin:admin.policy.*`). A policy that does not
 * validate against the admin schema is 400 TESSERA_POLICY_INVALID (nothing stored); a bad body 400
 * TESSERA_BAD_REQUEST; an unknown version 404 TESSERA_NOT_FOUND.
 */
import type { FastifyInstance } from 'fastify';
import { TesseraError } from '../../core/errors.js';
import { adminSchemaText, MAX_ADMIN_POLICY_BYTES } from '../../core/policy/admin-schema.js';
import type { AdminPolicyHistoryResponse, AdminPolicyResponse, AdminPolicyVersionView } from '../../core/wire/admin.js';
import { body, int, queryInt, reqStr } from '../../common/api/validate.js';
import { adminCaller, audited } from '../api/handlers.js';
import type { ServerContext } from '../context.js';
import type { AdminPolicyVersion } from './policy-service.js';

/** Printable ASCII, 1-256 characters (as risk config and policy reasons). */
const REASON = /^[\x20-\x7e]{1,256}$/;
/** Room for the policy text escaped as a JSON string, and the reason. */
const BODY_LIMIT = 3 * MAX_ADMIN_POLICY_BYTES;

function view(v: AdminPolicyVersion): AdminPolicyVersionView {
  return { version: v.version, policy: v.policy, author: v.author, reason: v.reason, created_at: new Date(v.createdAt).toISOString(), hash: v.hash };
}

export function adminPolicyRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const svc = ctx.adminPolicy;

  app.get('/v1/admin/policy', (req) => audited(ctx, req, 'admin.policy.show', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:admin.policy.show');
    const cur = await svc.current();
    ev.succeed(`admin policy v${cur.version}`);
    return { ...view(cur), mfa_max_age_seconds: Math.floor(ctx.adminAuthz.mfaMaxAgeMs / 1000), schema: adminSchemaText() } satisfies AdminPolicyResponse;
  }));

  app.get('/v1/admin/policy/history', (req) => audited(ctx, req, 'admin.policy.history', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:admin.policy.history');
    const limit = queryInt(req.query, 'limit', 50, 1, 1000);
    const versions = await svc.history(limit);
    ev.succeed();
    return { versions: versions.map((v) => { const { policy: _, ...rest } = view(v); return rest; }), current: await svc.currentVersion() } satisfies AdminPolicyHistoryResponse;
  }));

  app.put('/v1/admin/policy', { bodyLimit: BODY_LIMIT }, (req, reply) => audited(ctx, req, 'admin.policy.set', async (ev) => {
    const admin = await adminCaller(ctx, req, ev, 'admin:admin.policy.set');
    const b = body(req.body, ['policy', 'reason']);
    if (typeof b.policy !== 'string') throw new TesseraError('TESSERA_BAD_REQUEST', '"policy" must be a string (Cedar text)');
    const reason = reqStr(b, 'reason', { max: 256, pattern: REASON });
    ev.detail.reason = reason;
    const { version, compiled } = await svc.set(b.policy, admin.spiffeId, reason);
    ctx.adminAuthz.installed(version, compiled);
    ev.detail.hash = version.hash;
    ev.succeed(`admin policy v${version.version}`);
    return reply.code(201).send(view(version));
  }));

  app.post('/v1/admin/policy/rollback', (req, reply) => audited(ctx, req, 'admin.policy.rollback', async (ev) => {
    const admin = await adminCaller(ctx, req, ev, 'admin:admin.policy.rollback');
    const b = body(req.body, ['version', 'reason']);
    const version = int(b, 'version', { min: 0, max: 1e9 })!;
    const reason = reqStr(b, 'reason', { max: 256, pattern: REASON });
    ev.detail.rolled_back_to = version;
    ev.detail.reason = reason;
    const res = await svc.rollback(version, admin.spiffeId, reason);
    if (!res) throw new TesseraError('TESSERA_NOT_FOUND', `no admin policy version ${version}`);
    ctx.adminAuthz.installed(res.version, res.compiled);
    ev.detail.hash = res.version.hash;
    ev.succeed(`admin policy v${res.version.version}`);
    return reply.code(201).send(view(res.version));
  }));
}
