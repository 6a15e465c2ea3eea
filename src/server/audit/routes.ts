import type { FastifyInstance } from 'fastify';
import { TesseraError } from '../../core/errors.js';
import { adminCaller, audited } from '../api/handlers.js';
import { queryInt, queryStr } from '../../common/api/validate.js';
import type { ServerContext } from '../context.js';
import type {
  AuditCheckpointResponse, AuditCheckpointView, AuditCheckpointsResponse, AuditConsistencyResponse, AuditInclusionResponse, AuditListResponse, AuditRecordView,
} from '../../core/wire/control-plane.js';
import type { CheckpointRecord, StoredAuditRecord } from '../store/store.js';
import { auditTailRoute } from './tail.js';

const MAX_ID = Number.MAX_SAFE_INTEGER;

function recordView(r: StoredAuditRecord): AuditRecordView {
  return { ...r, ts: new Date(r.ts).toISOString() };
}

function checkpointView(origin: string, c: CheckpointRecord): AuditCheckpointView {
  return { note: c.note, origin, size: c.size, root_hash: c.rootHash.toString('base64'), created_at: new Date(c.createdAt).toISOString() };
}

const b64 = (hs: Buffer[]): string[] => hs.map((h) => h.toString('base64'));

/** Reading the audit log and its transparency-log proofs: admin only (and itself audited). */
export function auditRoutes(app: FastifyInstance, ctx: ServerContext): void {
  auditTailRoute(app, ctx);
  app.get('/v1/audit', (req) => audited(ctx, req, 'audit.read', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:audit.read');
    const limit = queryInt(req.query, 'limit', 100, 1, 10_000);
    const afterId = queryInt(req.query, 'after', 0, 0, MAX_ID);
    // `until` (ids ≤ it) lets a reader page forward: with `after` alone the newest `limit` are returned.
    const untilId = queryInt(req.query, 'until', MAX_ID, 0, MAX_ID);
    const action = queryStr(req.query, 'action', /^[a-z0-9._-]{1,64}$/);
    const outcome = queryStr(req.query, 'outcome', /^(denied|success)$/) as 'denied' | 'success' | undefined;
    const records = await ctx.audit.read({ limit, afterId, ...(untilId < MAX_ID ? { untilId } : {}), ...(action ? { action } : {}), ...(outcome ? { outcome } : {}) });
    ev.succeed();
    return { records: records.map(recordView) } satisfies AuditListResponse;
  }));

  app.get('/v1/audit/checkpoint', (req) => audited(ctx, req, 'audit.checkpoint', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:audit.checkpoint');
    const size = (req.query as Record<string, unknown> | undefined)?.size === undefined ? undefined : queryInt(req.query, 'size', 0, 0, MAX_ID);
    const cp = await ctx.tlog.checkpointOf(size);
    const { note, cosignatures } = await ctx.tlog.cosigned(cp);
    ev.detail.size = cp.size;
    ev.succeed();
    return {
      checkpoint: checkpointView(ctx.tlog.origin, { ...cp, note }), log_key: ctx.tlog.verifierKey,
      cosignatures: cosignatures.map((c) => ({ name: c.name, key_id: c.keyId, witness_key: c.witnessKey, timestamp: c.timestamp, line: c.line })),
    } satisfies AuditCheckpointResponse;
  }));

  // Every stored checkpoint, by size, in pages (what `tessera audit verify` checks one by one).
  app.get('/v1/audit/checkpoints', (req) => audited(ctx, req, 'audit.checkpoints', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:audit.checkpoints');
    const q = req.query as Record<string, unknown> | undefined;
    const limit = queryInt(q, 'limit', 100, 1, 1000);
    const afterSize = q?.after_size === undefined ? undefined : queryInt(q, 'after_size', 0, 0, MAX_ID);
    if (afterSize !== undefined) ev.detail.after_size = afterSize;
    const cps = await ctx.tlog.list(afterSize, limit);
    ev.succeed();
    return { checkpoints: cps.map((c) => checkpointView(ctx.tlog.origin, c)), log_key: ctx.tlog.verifierKey } satisfies AuditCheckpointsResponse;
  }));

  app.get('/v1/audit/proof/inclusion', (req) => audited(ctx, req, 'audit.prove', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:audit.prove');
    const id = queryInt(req.query, 'id', 0, 1, MAX_ID);
    if (id === 0) throw badRequest('query "id" is required');
    const size = (req.query as Record<string, unknown> | undefined)?.size === undefined ? undefined : queryInt(req.query, 'size', 0, 1, MAX_ID);
    ev.target = String(id);
    const r = await ctx.tlog.inclusion(id, size);
    ev.succeed();
    return {
      record: recordView(r.record), leaf_index: r.leafIndex, leaf_hash: r.leafHash.toString('base64'), proof: b64(r.proof),
      checkpoint: checkpointView(ctx.tlog.origin, r.checkpoint), log_key: ctx.tlog.verifierKey,
    } satisfies AuditInclusionResponse;
  }));

  app.get('/v1/audit/proof/consistency', (req) => audited(ctx, req, 'audit.prove', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:audit.prove');
    const q = req.query as Record<string, unknown> | undefined;
    if (q?.from === undefined || q.to === undefined) throw badRequest('queries "from" and "to" are required');
    const from = queryInt(q, 'from', 0, 0, MAX_ID);
    const to = queryInt(q, 'to', 0, 0, MAX_ID);
    ev.detail.from = from;
    ev.detail.to = to;
    const r = await ctx.tlog.consistency(from, to);
    ev.succeed();
    return { from, to, proof: b64(r.proof), checkpoint: checkpointView(ctx.tlog.origin, r.checkpoint), log_key: ctx.tlog.verifierKey } satisfies AuditConsistencyResponse;
  }));
}

function badRequest(message: string): TesseraError {
  return new TesseraError('TESSERA_BAD_REQUEST', message);
}
