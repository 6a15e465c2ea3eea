import type { FastifyInstance } from 'fastify';
import { adminCaller, audited } from '../api/handlers.js';
import { body, int } from '../../common/api/validate.js';
import type { ServerContext } from '../context.js';
import type { CaListResponse, CaRotateResponse } from '../../core/wire/control-plane.js';

/** CA inspection and rotation: admin only. */
export function caRoutes(app: FastifyInstance, ctx: ServerContext): void {
  app.get('/v1/ca', (req) => audited(ctx, req, 'ca.list', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:ca.list');
    ev.succeed();
    return { trust_domain: ctx.trustDomain, bundle_sequence: ctx.ca.bundleSequence(), authorities: ctx.ca.list() } satisfies CaListResponse;
  }));

  app.post('/v1/ca/rotate', (req) => audited(ctx, req, 'ca.rotate', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:ca.rotate');
    const b = body(req.body ?? {}, ['grace_seconds']);
    const grace = int(b, 'grace_seconds', { min: 0, max: 30 * 86400, optional: true }) ?? 600;
    const prepared = await ctx.ca.rotate(grace * 1000);
    ev.target = prepared.id;
    ev.detail.activate_at = prepared.activateAt;
    ev.succeed();
    return { prepared, bundle_sequence: ctx.ca.bundleSequence() } satisfies CaRotateResponse;
  }));
}
