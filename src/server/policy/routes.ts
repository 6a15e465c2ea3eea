import type { FastifyInstance } from 'fastify';
import { TesseraError } from '../../core/errors.js';
import { adminCaller, audited, liveOrAdminCaller, liveSvidCaller, waitFor } from '../api/handlers.js';
import { body, int, queryInt, reqStr } from '../../common/api/validate.js';
import type { ServerContext } from '../context.js';
import type { ApplyPolicyResponse, DecisionsResponse, PolicyBundleResponse, PolicyHistoryResponse, PolicyVersionResponse, RollbackPolicyResponse } from '../../core/wire/control-plane.js';
import { DECISIONS_BODY_LIMIT, DEFAULT_DECISION_SETTINGS, DecisionIngest, type DecisionSettings } from './decisions.js';
import { BundlePollGate, DEFAULT_BUNDLE_POLL_SETTINGS, PollRefused, type BundlePollSettings } from './poll-gate.js';

// Starts with a letter or digit, as the bundle requires (no `/abs`, `.hidden`, `_x`): a bad name is a bad request.
const FILE_NAME = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}\.cedar$/;

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

/** Policy administration (admin), the signed bundle for agents, and decision records from agents. */
export function policyRoutes(
  app: FastifyInstance, ctx: ServerContext, settings: DecisionSettings = DEFAULT_DECISION_SETTINGS, polls: BundlePollSettings = DEFAULT_BUNDLE_POLL_SETTINGS,
): void {
  const ingest = new DecisionIngest(ctx.trustDomain, ctx.secrets, settings, async (id) => (await ctx.gateways.ofIdentity(id))?.name);
  const gate = new BundlePollGate(polls);

  app.post('/v1/policies', (req, reply) => audited(ctx, req, 'policy.apply', async (ev) => {
    const caller = await adminCaller(ctx, req, ev, 'admin:policy.apply');
    const b = body(req.body, ['files', 'schema', 'reason', 'dry_run']);
    const policies = policyFiles(b.files);
    const schema = schemaOf(b.schema);
    const reason = reqStr(b, 'reason', { max: 1024 });
    // No coercion: a dry run asked for as "yes" or 1 must not apply the policy.
    if (b.dry_run !== undefined && typeof b.dry_run !== 'boolean') throw new TesseraError('TESSERA_BAD_REQUEST', '"dry_run" must be a boolean');
    const diff = await ctx.policy.dryRun(policies, schema, settings.replay);
    if (b.dry_run === true) {
      ev.detail.dry_run = true;
      ev.succeed();
      return { dry_run: true, ...diff } satisfies ApplyPolicyResponse;
    }
    const rec = await ctx.policy.apply({ policies, ...(schema ? { schema } : {}), author: caller.spiffeId, reason });
    ev.target = `policy v${rec.version}`;
    ev.detail.hash = rec.hash;
    ev.detail.reason = reason;
    ev.succeed();
    return reply.code(201).send({ version: rec.version, hash: rec.hash, bundle_version: ctx.policy.current().version, ...diff } satisfies ApplyPolicyResponse);
  }));

  app.get('/v1/policies', (req) => audited(ctx, req, 'policy.history', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:policy.history');
    const limit = queryInt(req.query, 'limit', 50, 1, 1000);
    const versions = await ctx.policy.history(limit);
    ev.succeed();
    return { versions: versions.map((v) => ({ ...v, createdAt: new Date(v.createdAt).toISOString() })), bundle_version: ctx.policy.current().version } satisfies PolicyHistoryResponse;
  }));

  app.get<{ Params: { version: string } }>('/v1/policies/:version', (req) => audited(ctx, req, 'policy.show', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:policy.show');
    const version = /^\d{1,9}$/.test(req.params.version) ? Number(req.params.version) : NaN;
    const rec = Number.isFinite(version) ? await ctx.policy.version(version) : undefined;
    if (!rec) throw new TesseraError('TESSERA_NOT_FOUND', 'no such policy version');
    ev.succeed(`policy v${rec.version}`);
    return { ...rec, createdAt: new Date(rec.createdAt).toISOString() } satisfies PolicyVersionResponse;
  }));

  app.post('/v1/policies/rollback', (req, reply) => audited(ctx, req, 'policy.rollback', async (ev) => {
    const caller = await adminCaller(ctx, req, ev, 'admin:policy.rollback');
    const b = body(req.body, ['version', 'reason']);
    const version = int(b, 'version', { min: 1, max: 1e9 })!;
    const reason = reqStr(b, 'reason', { max: 1024 });
    const rec = await ctx.policy.rollback(version, caller.spiffeId, reason);
    if (!rec) throw new TesseraError('TESSERA_NOT_FOUND', 'no such policy version');
    ev.target = `policy v${rec.version}`;
    ev.detail.rolled_back_to = version;
    ev.succeed();
    return reply.code(201).send({ version: rec.version, hash: rec.hash, bundle_version: ctx.policy.current().version } satisfies RollbackPolicyResponse);
  }));

  // The signed bundle, for agents (any SVID of the trust domain) and the admin. Long-polls with ?after=.
  app.get('/v1/policy/bundle', async (req, reply) => {
    // Frequent (long polls): authenticated, not audited. A revoked or unknown identity gets nothing.
    const caller = await liveOrAdminCaller(ctx, req, undefined, 'admin:policy.bundle');
    const after = queryInt(req.query, 'after', 0, 0, Number.MAX_SAFE_INTEGER);
    const timeout = queryInt(req.query, 'timeout_seconds', 0, 0, 60);
    const held = queryInt(req.query, 'witness', -1, 0, Number.MAX_SAFE_INTEGER);
    // Per identity: a token per request, a slot per long poll (poll-gate.ts). Not audited: a flood
    // would flood the log; the refusals count in tessera_api_requests_total (this route, 4xx).
    let release: () => void;
    try {
      release = gate.admit(caller.spiffeId, timeout > 0);
    } catch (err) {
      if (err instanceof PollRefused) void reply.header('retry-after', String(err.retryAfterSeconds));
      throw err;
    }
    try {
      if (timeout > 0) await waitFor(ctx.policy, 'bundle', () => ctx.policy.current().version > after, timeout * 1000, reply);
    } finally {
      release();
    }
    // Woken by its connection closing (the caller left, or the control plane is stopping and its store
    // may already be closed): nobody to answer, and nothing to read.
    if (reply.raw.destroyed) return reply.hijack();
    const { version, signed } = ctx.policy.current();
    // The agents' witnesses: the latest checkpoint rides along (changed or not), with the proof from the
    // size the agent holds. The long poll does not wake for a checkpoint (the leader signs one a second):
    // a witness sees the log at most one watch period late.
    const checkpoint = held >= 0 ? await ctx.tlog.forWitness(held) : undefined;
    return { version, changed: version > after, bundle: signed, ...(checkpoint ? { checkpoint } : {}) } satisfies PolicyBundleResponse;
  });

  // Enforcers ship the decisions they made: the caller must be a live entry, and is the enforcer (decisions.ts).
  app.post('/v1/decisions', { bodyLimit: DECISIONS_BODY_LIMIT }, (req, reply) => audited(ctx, req, 'decision.ship', async (ev) => {
    const { caller } = await liveSvidCaller(ctx, req, ev);
    let batch;
    try {
      batch = await ingest.accept(caller.spiffeId, req.body);
    } catch (err) {
      const retry = (err as { retryAfterSeconds?: number }).retryAfterSeconds;
      if (retry !== undefined) void reply.header('retry-after', String(retry));
      throw err;
    }
    await ctx.audit.append(batch.refusal ? [...batch.records, batch.refusal] : batch.records);
    ctx.metrics.decisionsIngested(batch.records, batch.refused);
    ev.detail.count = batch.records.length;
    if (batch.refused > 0) ev.detail.refused = batch.refused;
    ev.succeed();
    return { accepted: batch.records.length, refused: batch.refused } satisfies DecisionsResponse;
  }));
}
