import type { FastifyInstance } from 'fastify';
import { TesseraError } from '../../core/errors.js';
import { PerSecondSampler } from '../../core/sampler.js';
import { isSpiffeId } from '../../core/spiffe-id.js';
import type { TelemetryListResponse, TelemetryResponse } from '../../core/wire/control-plane.js';
import { adminCaller, audited, liveSvidCaller } from '../api/handlers.js';
import { queryInt } from '../../common/api/validate.js';
import type { ServerContext } from '../context.js';
import { TELEMETRY_BODY_LIMIT } from './service.js';

/** Refused batches audited per second and per reporter and code; the rest are counted in the next record's detail. */
const REFUSALS_AUDITED_PER_SECOND = 1;
const MAX_ID = Number.MAX_SAFE_INTEGER;

/**
 * `POST /v1/telemetry` (a live SVID ships its sidecar's windows: service.ts) and
 * `GET /v1/telemetry?identity=ID&since=T&after=N&limit=N` (admin: stored windows, oldest first; the
 * most recent `limit` without `after`, the `limit` after row N with it).
 */
export function telemetryRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const sampler = new PerSecondSampler(REFUSALS_AUDITED_PER_SECOND);
  let notAudited = 0;

  // Not audited when accepted (one POST per agent and window: volume without evidence value); a
  // refused batch is, sampled, like decision refusals: anyone with an SVID can cause them at will.
  app.post('/v1/telemetry', { bodyLimit: TELEMETRY_BODY_LIMIT }, async (req, reply) => {
    const ev = ctx.audit.begin('telemetry.ship', `ip:${req.ip}`);
    try {
      const { caller } = await liveSvidCaller(ctx, req, ev);
      const res = await ctx.telemetry.accept(caller.spiffeId, req.body);
      return res satisfies TelemetryResponse;
    } catch (err) {
      const retry = (err as { retryAfterSeconds?: number }).retryAfterSeconds;
      if (retry !== undefined) void reply.header('retry-after', String(retry));
      const code = err instanceof TesseraError ? err.code : 'TESSERA_INTERNAL';
      if (sampler.take(`${ev.actor} ${code}`, Date.now())) {
        if (err instanceof TesseraError && code !== 'TESSERA_INTERNAL') ev.detail.reason = err.message.slice(0, 256);
        if (req.authFailure) ev.detail.auth_failure = req.authFailure;
        if (notAudited > 0) ev.detail.refusals_not_audited = notAudited;
        notAudited = 0;
        await ctx.audit.record(ev, err);
      } else {
        notAudited++;
      }
      throw err;
    }
  });

  app.get('/v1/telemetry', (req) => audited(ctx, req, 'telemetry.read', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:telemetry.read');
    const q = (req.query ?? {}) as Record<string, unknown>;
    const identity = q.identity;
    if (identity !== undefined && (typeof identity !== 'string' || !isSpiffeId(identity))) throw new TesseraError('TESSERA_BAD_REQUEST', 'query "identity" must be a SPIFFE ID');
    const limit = queryInt(req.query, 'limit', 100, 1, 10_000);
    const after = q.after !== undefined ? queryInt(req.query, 'after', 0, 0, MAX_ID) : undefined;
    // Milliseconds since the epoch: 13 digits, beyond queryInt's 12.
    if (q.since !== undefined && (typeof q.since !== 'string' || !/^\d{1,15}$/.test(q.since))) throw new TesseraError('TESSERA_BAD_REQUEST', 'query "since" must be milliseconds since the epoch');
    const since = q.since !== undefined ? Number(q.since) : undefined;
    if (identity !== undefined) ev.target = identity;
    const rows = await ctx.telemetry.list({ limit, ...(identity !== undefined ? { identity } : {}), ...(after !== undefined ? { after } : {}), ...(since !== undefined ? { since } : {}) });
    ev.detail.count = rows.length;
    ev.succeed();
    return { windows: rows.map((r) => ({ ...r.window, id: r.id, reported_by: r.reportedBy })) } satisfies TelemetryListResponse;
  }));
}
