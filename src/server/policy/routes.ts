import type { FastifyInstance } from 'fastify';
import { TesseraError } from '../../core/errors.js';
import { isSpiffeId } from '../../core/spiffe-id.js';
import { adminCaller, audited, liveOrAdminCaller, liveSvidCaller, waitFor } from '../api/handlers.js';
import { body, int, queryInt, reqStr } from '../../common/api/validate.js';
import type { ServerContext } from '../context.js';
import type { AuditRecord } from '../store/store.js';

const ACTIONS = new Set(['http:request', 'tcp:connect', 'secret:unseal', 'credential:derive']);
// Starts with a letter or digit, as the bundle requires (no `/abs`, `.hidden`, `_x`): a bad name is a bad request.
const FILE_NAME = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}\.cedar$/;
/**
 * Refusals agents record before (or instead of) a policy decision, and their audit actions: a
 * caller's handshake refused by the inbound proxy, a server refused by the outbound proxy (wrong
 * SPIFFE ID, untrusted), a policy bundle refused by the enforcer (bad signature, older version).
 */
const REFUSALS: Record<string, string> = {
  'tls:handshake': 'connection.refused',
  'tls:upstream': 'upstream.refused',
  'policy:bundle': 'policy.bundle.refused',
};
/** How many recent decisions a dry run replays. */
const REPLAY_LIMIT = 5000;
/**
 * Body limit of POST /v1/decisions: a batch of up to 1000 records (~300 bytes each) does not fit
 * the API's default 64 KiB, and a batch refused as too large would be spilled and retried forever.
 */
const DECISIONS_BODY_LIMIT = 1024 * 1024;

function policyFiles(v: unknown): Record<string, string> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new TesseraError('TESSERA_BAD_REQUEST', '"files" must be an object of file name → Cedar text');
  const entries = Object.entries(v as Record<string, unknown>);
  if (entries.length > 1000) throw new TesseraError('TESSERA_BAD_REQUEST', 'at most 1000 policy files');
  const out: Record<string, string> = {};
  for (const [name, text] of entries) {
    if (!FILE_NAME.test(name) || name.includes('..')) throw new TesseraError('TESSERA_BAD_REQUEST', `invalid policy file name "${name.slice(0, 64)}"`);
    if (typeof text !== 'string' || text.length > 1024 * 1024) throw new TesseraError('TESSERA_BAD_REQUEST', `policy file ${name} must be text up to 1 MiB`);
    out[name] = text;
  }
  return out;
}

function schemaOf(v: unknown): Record<string, unknown> | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new TesseraError('TESSERA_BAD_REQUEST', '"schema" must be a Cedar JSON schema object');
  return v as Record<string, unknown>;
}

/** Parses one shipped decision strictly; anything off is a 400 for the whole batch. */
function decisionRecord(v: unknown, agent: string): AuditRecord {
  const b = body(v, ['ts', 'principal', 'action', 'resource', 'context', 'allow', 'reasons']);
  const principal = reqStr(b, 'principal', { max: 2048 });
  const resource = reqStr(b, 'resource', { max: 2048 });
  const action = reqStr(b, 'action', { max: 64 });
  // A refusal before any policy decision has no authenticated principal: principal "-".
  const refusal = principal === '-' ? REFUSALS[action] : undefined;
  if ((!refusal && (!isSpiffeId(principal) || !ACTIONS.has(action))) || !isSpiffeId(resource)) throw new TesseraError('TESSERA_BAD_REQUEST', 'invalid decision record');
  if (typeof b.allow !== 'boolean') throw new TesseraError('TESSERA_BAD_REQUEST', '"allow" must be a boolean');
  const ts = int(b, 'ts', { min: 0, max: 8.64e15 })!;
  const context = b.context === undefined ? {} : body(b.context, Object.keys(b.context as object).slice(0, 32));
  for (const value of Object.values(context)) {
    if (!['string', 'number', 'boolean'].includes(typeof value) || (typeof value === 'string' && value.length > 2048)) {
      throw new TesseraError('TESSERA_BAD_REQUEST', 'decision context values must be short scalars');
    }
  }
  const reasons = Array.isArray(b.reasons) ? b.reasons.filter((r): r is string => typeof r === 'string').slice(0, 16).map((r) => r.slice(0, 256)) : [];
  if (refusal) {
    return {
      ts, actor: agent, action: refusal, target: resource, outcome: 'denied', code: String(context.code ?? 'TESSERA_AUTH_INVALID').slice(0, 64),
      detail: { reason: context.reason, site: context.site },
    };
  }
  return {
    ts, actor: agent, action: 'decision', target: resource, outcome: b.allow ? 'success' : 'denied', code: b.allow ? 'ALLOW' : 'DENY',
    detail: { principal, action, context, reasons },
  };
}

/** Policy administration (admin), the signed bundle for agents, and decision records from agents. */
export function policyRoutes(app: FastifyInstance, ctx: ServerContext): void {
  app.post('/v1/policies', (req, reply) => audited(ctx, req, 'policy.apply', async (ev) => {
    const caller = adminCaller(ctx, req, ev);
    const b = body(req.body, ['files', 'schema', 'reason', 'dry_run']);
    const policies = policyFiles(b.files);
    const schema = schemaOf(b.schema);
    const reason = reqStr(b, 'reason', { max: 1024 });
    // No coercion: a dry run asked for as "yes" or 1 must not apply the policy.
    if (b.dry_run !== undefined && typeof b.dry_run !== 'boolean') throw new TesseraError('TESSERA_BAD_REQUEST', '"dry_run" must be a boolean');
    const recent = await ctx.store.listAudit({ action: 'decision', limit: REPLAY_LIMIT });
    const diff = await ctx.policy.dryRun(policies, schema, recent);
    if (b.dry_run === true) {
      ev.detail.dry_run = true;
      ev.succeed();
      return { dry_run: true, ...diff };
    }
    const rec = await ctx.policy.apply({ policies, ...(schema ? { schema } : {}), author: caller.spiffeId, reason });
    ev.target = `policy v${rec.version}`;
    ev.detail.hash = rec.hash;
    ev.detail.reason = reason;
    ev.succeed();
    return reply.code(201).send({ version: rec.version, hash: rec.hash, bundle_version: ctx.policy.current().version, ...diff });
  }));

  app.get('/v1/policies', (req) => audited(ctx, req, 'policy.history', async (ev) => {
    adminCaller(ctx, req, ev);
    const limit = queryInt(req.query, 'limit', 50, 1, 1000);
    const versions = await ctx.store.listPolicyVersions(limit);
    ev.succeed();
    return { versions: versions.map((v) => ({ ...v, createdAt: new Date(v.createdAt).toISOString() })), bundle_version: ctx.policy.current().version };
  }));

  app.get<{ Params: { version: string } }>('/v1/policies/:version', (req) => audited(ctx, req, 'policy.show', async (ev) => {
    adminCaller(ctx, req, ev);
    const version = /^\d{1,9}$/.test(req.params.version) ? Number(req.params.version) : NaN;
    const rec = Number.isFinite(version) ? await ctx.store.getPolicyVersion(version) : undefined;
    if (!rec) throw new TesseraError('TESSERA_NOT_FOUND', 'no such policy version');
    ev.succeed(`policy v${rec.version}`);
    return { ...rec, createdAt: new Date(rec.createdAt).toISOString() };
  }));

  app.post('/v1/policies/rollback', (req, reply) => audited(ctx, req, 'policy.rollback', async (ev) => {
    const caller = adminCaller(ctx, req, ev);
    const b = body(req.body, ['version', 'reason']);
    const version = int(b, 'version', { min: 1, max: 1e9 })!;
    const reason = reqStr(b, 'reason', { max: 1024 });
    const rec = await ctx.policy.rollback(version, caller.spiffeId, reason);
    if (!rec) throw new TesseraError('TESSERA_NOT_FOUND', 'no such policy version');
    ev.target = `policy v${rec.version}`;
    ev.detail.rolled_back_to = version;
    ev.succeed();
    return reply.code(201).send({ version: rec.version, hash: rec.hash, bundle_version: ctx.policy.current().version });
  }));

  // The signed bundle, for agents (any SVID of the trust domain) and the admin. Long-polls with ?after=.
  app.get('/v1/policy/bundle', async (req, reply) => {
    // Frequent (long polls): authenticated, not audited. A revoked or unknown identity gets nothing.
    await liveOrAdminCaller(ctx, req, undefined);
    const after = queryInt(req.query, 'after', 0, 0, Number.MAX_SAFE_INTEGER);
    const timeout = queryInt(req.query, 'timeout_seconds', 0, 0, 60);
    if (timeout > 0) await waitFor(ctx.policy, 'bundle', () => ctx.policy.current().version > after, timeout * 1000, reply);
    const { version, signed } = ctx.policy.current();
    return { version, changed: version > after, bundle: signed };
  });

  app.post('/v1/decisions', { bodyLimit: DECISIONS_BODY_LIMIT }, (req) => audited(ctx, req, 'decision.ship', async (ev) => {
    const { caller } = await liveSvidCaller(ctx, req, ev);
    const b = body(req.body, ['decisions']);
    if (!Array.isArray(b.decisions) || b.decisions.length > 1000) throw new TesseraError('TESSERA_BAD_REQUEST', '"decisions" must be a list of at most 1000 records');
    const records = b.decisions.map((d) => decisionRecord(d, caller.spiffeId));
    await ctx.store.appendAudit(records);
    ev.detail.count = records.length;
    ev.succeed();
    return { accepted: records.length };
  }));
}
