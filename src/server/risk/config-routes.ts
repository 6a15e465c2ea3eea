/**
 * The risk engine's configuration over the API (issue 11), admin only and audited like policy:
 * `PUT /v1/risk/config` sets a new version, `GET /v1/risk/config` the version in force,
 * `GET /v1/risk/config/history` the versions, `POST /v1/risk/config/rollback` a new version with an
 * old one's content. A bad body is TESSERA_BAD_REQUEST; a configuration the parser refuses is
 * TESSERA_CONFIG_INVALID with its message (both 400); an unknown version TESSERA_NOT_FOUND (404).
 */
import type { FastifyInstance } from 'fastify';
import { TesseraError } from '../../core/errors.js';
import type { RiskConfigHistoryResponse, RiskConfigResponse, RiskConfigVersionView } from '../../core/wire/risk.js';
import { body, int, queryInt, reqStr } from '../../common/api/validate.js';
import { adminCaller, audited } from '../api/handlers.js';
import type { ServerContext } from '../context.js';
import type { RiskConfigVersion } from './config-service.js';
import { RISK_REASON } from './service.js';

function view(v: RiskConfigVersion): RiskConfigVersionView {
  return { version: v.version, config: v.config, author: v.author, reason: v.reason, created_at: new Date(v.createdAt).toISOString(), hash: v.hash };
}

export function riskConfigRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const svc = ctx.riskConfig;

  app.get('/v1/risk/config', (req) => audited(ctx, req, 'risk.config.show', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:risk.config.show');
    const cur = await svc.current();
    ev.succeed(`risk config v${cur.version}`);
    const engine = ctx.riskEngine?.configVersion;
    return { ...view(cur), ...(engine !== undefined ? { engine_version: engine } : {}) } satisfies RiskConfigResponse;
  }));

  app.get('/v1/risk/config/history', (req) => audited(ctx, req, 'risk.config.history', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:risk.config.history');
    const limit = queryInt(req.query, 'limit', 50, 1, 1000);
    const versions = await svc.history(limit);
    ev.succeed();
    return { versions: versions.map(view), current: await svc.currentVersion() } satisfies RiskConfigHistoryResponse;
  }));

  app.put('/v1/risk/config', (req, reply) => audited(ctx, req, 'risk.config.set', async (ev) => {
    const admin = await adminCaller(ctx, req, ev, 'admin:risk.config.set');
    const b = body(req.body, ['config', 'reason']);
    if (typeof b.config !== 'object' || b.config === null || Array.isArray(b.config)) throw new TesseraError('TESSERA_BAD_REQUEST', '"config" must be a JSON object (the risk configuration)');
    const reason = reqStr(b, 'reason', { max: 256, pattern: RISK_REASON });
    const rec = await svc.set(b.config, admin.spiffeId, reason);
    ev.detail.hash = rec.hash;
    ev.detail.reason = reason;
    ev.succeed(`risk config v${rec.version}`);
    return reply.code(201).send(view(rec));
  }));

  app.post('/v1/risk/config/rollback', (req, reply) => audited(ctx, req, 'risk.config.rollback', async (ev) => {
    const admin = await adminCaller(ctx, req, ev, 'admin:risk.config.rollback');
    const b = body(req.body, ['version', 'reason']);
    const version = int(b, 'version', { min: 0, max: 1e9 })!;
    const reason = reqStr(b, 'reason', { max: 256, pattern: RISK_REASON });
    const rec = await svc.rollback(version, admin.spiffeId, reason);
    if (!rec) throw new TesseraError('TESSERA_NOT_FOUND', `no risk config version ${version}`);
    ev.detail.rolled_back_to = version;
    ev.detail.hash = rec.hash;
    ev.detail.reason = reason;
    ev.succeed(`risk config v${rec.version}`);
    return reply.code(201).send(view(rec));
  }));
}
