import type { FastifyInstance } from 'fastify';
import { adminCaller, audited } from '../api/handlers.js';
import { queryInt, queryStr } from '../../common/api/validate.js';
import type { ServerContext } from '../context.js';
import type { AuditListResponse } from '../../core/wire/control-plane.js';

/** Reading the audit log: admin only (and itself audited). */
export function auditRoutes(app: FastifyInstance, ctx: ServerContext): void {
  app.get('/v1/audit', (req) => audited(ctx, req, 'audit.read', async (ev) => {
    adminCaller(ctx, req, ev);
    const limit = queryInt(req.query, 'limit', 100, 1, 10_000);
    const afterId = queryInt(req.query, 'after', 0, 0, Number.MAX_SAFE_INTEGER);
    const action = queryStr(req.query, 'action', /^[a-z0-9._-]{1,64}$/);
    const outcome = queryStr(req.query, 'outcome', /^(denied|success)$/) as 'denied' | 'success' | undefined;
    const records = await ctx.audit.read({ limit, afterId, ...(action ? { action } : {}), ...(outcome ? { outcome } : {}) });
    ev.succeed();
    return { records: records.map((r) => ({ ...r, ts: new Date(r.ts).toISOString() })) } satisfies AuditListResponse;
  }));
}
