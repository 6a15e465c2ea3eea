/**
 * The risk routes (issue 11), admin only and audited: list, show, and the states set by hand.
 * `:id` is a SPIFFE ID, URL-encoded (as `/v1/entries/:id`). A workload, quarantined or not, can
 * neither read nor change risk states: release needs the admin credential.
 */
import type { FastifyInstance } from 'fastify';
import { TesseraError } from '../../core/errors.js';
import { parseSpiffeId } from '../../core/spiffe-id.js';
import type { RiskState } from '../../core/risk/types.js';
import type { RiskChangeResponse, RiskHistoryView, RiskListResponse, RiskShowResponse, RiskStateView } from '../../core/wire/risk.js';
import { body, int, reqStr } from '../../common/api/validate.js';
import { adminCaller, audited } from '../api/handlers.js';
import type { ServerContext } from '../context.js';
import type { RiskHistoryRecord, RiskStateRecord } from '../store/store.js';
import { riskConfigRoutes } from './config-routes.js';
import { RISK_REASON, RISK_TTL_MAX_MS, RISK_TTL_MIN_MS, type RiskService } from './service.js';
import type { RiskReason } from '../../core/risk/types.js';

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

export function riskStateView(r: RiskStateRecord): RiskStateView {
  return {
    spiffe_id: r.spiffeId, state: r.state, score: r.score, since: iso(r.since)!, until: iso(r.until), set_by: r.setBy, actor: r.actor, reason: r.note, reasons: r.reasons as RiskReason[],
  };
}

function historyView(r: RiskHistoryRecord): RiskHistoryView {
  return {
    spiffe_id: r.spiffeId, state: r.state, previous: r.previous, score: r.score, at: iso(r.at)!, until: iso(r.until), set_by: r.setBy, actor: r.actor, reason: r.note, reasons: r.reasons as RiskReason[],
  };
}

/** The workload ID named by `:id`: a SPIFFE ID of this trust domain outside `/tessera` (else 400). */
function workloadId(ctx: ServerContext, raw: string): string {
  if (raw.length > 2048) throw new TesseraError('TESSERA_SPIFFE_ID_INVALID', 'the SPIFFE ID is longer than 2048 bytes');
  const id = parseSpiffeId(raw);
  ctx.registry.checkWorkloadId(id);
  return id.id;
}

export function riskRoutes(app: FastifyInstance, ctx: ServerContext, risk: RiskService): void {
  // Static paths: they take precedence over `/v1/risk/:id` (a SPIFFE ID is never the word "config").
  riskConfigRoutes(app, ctx);
  app.get('/v1/risk', (req) => audited(ctx, req, 'risk.list', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:risk.list');
    const rows = await risk.list();
    ev.detail.count = rows.length;
    ev.succeed();
    return { identities: rows.map(riskStateView) } satisfies RiskListResponse;
  }));

  app.get<{ Params: { id: string } }>('/v1/risk/:id', (req) => audited(ctx, req, 'risk.show', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:risk.show');
    const id = workloadId(ctx, req.params.id);
    ev.target = id;
    const { state, history } = await risk.show(id);
    if (state === undefined && (await ctx.registry.bySpiffeId(id)) === undefined) throw new TesseraError('TESSERA_ENTRY_NOT_FOUND', `${id} has no registration entry and no risk state`);
    ev.succeed();
    const now = Date.now();
    const view: RiskStateView = state === undefined
      ? { spiffe_id: id, state: 'normal', score: 0, since: iso(now)!, until: null, set_by: 'none', actor: '', reason: '', reasons: [] }
      : riskStateView(state);
    const engine = ctx.riskEngine?.engine.identity(id);
    return { spiffe_id: id, state: view, history: history.map(historyView), ...(engine ? { engine: engine as unknown as Record<string, unknown> } : {}) } satisfies RiskShowResponse;
  }));

  for (const state of ['quarantined', 'step-up'] as const) {
    const verb = state === 'quarantined' ? 'quarantine' : 'step-up';
    app.post<{ Params: { id: string } }>(`/v1/risk/:id/${verb}`, (req) => audited(ctx, req, `risk.${verb}`, async (ev) => {
      // Named before the caller is checked: a refused attempt (a workload releasing itself) says on whom.
      ev.target = req.params.id.slice(0, 2048);
      const admin = await adminCaller(ctx, req, ev, `admin:risk.${verb}` as const);
      const id = workloadId(ctx, req.params.id);
      ev.target = id;
      const b = body(req.body, ['ttl_seconds', 'reason', 'score', 'force']);
      const ttl = int(b, 'ttl_seconds', { min: RISK_TTL_MIN_MS / 1000, max: RISK_TTL_MAX_MS / 1000 })!;
      const reason = reqStr(b, 'reason', { max: 256, pattern: RISK_REASON });
      const score = int(b, 'score', { min: 0, max: 100, optional: true });
      if (b.force !== undefined && typeof b.force !== 'boolean') throw new TesseraError('TESSERA_BAD_REQUEST', 'force must be a boolean');
      // An ID with no entry is most likely a typo: refused unless forced (to pre-empt a workload not registered yet).
      if (b.force !== true && (await ctx.registry.bySpiffeId(id)) === undefined) {
        throw new TesseraError('TESSERA_ENTRY_NOT_FOUND', `${id} has no registration entry (force: true to ${verb} it anyway)`);
      }
      const res = await change(risk, id, state, score, { setBy: 'admin', actor: admin.spiffeId, ttlMs: ttl * 1000, reason }, ev);
      ev.succeed();
      return res;
    }));
  }

  app.post<{ Params: { id: string } }>('/v1/risk/:id/release', (req) => audited(ctx, req, 'risk.release', async (ev) => {
    ev.target = req.params.id.slice(0, 2048);
    const admin = await adminCaller(ctx, req, ev, 'admin:risk.release');
    const id = workloadId(ctx, req.params.id);
    ev.target = id;
    const b = body(req.body, ['reason']);
    const reason = reqStr(b, 'reason', { max: 256, pattern: RISK_REASON });
    const standing = await risk.standing(id);
    if (standing.state === 'normal') throw new TesseraError('TESSERA_CONFLICT', `${id} is neither stepped up nor quarantined`);
    const res = await change(risk, id, 'normal', undefined, { setBy: 'admin', actor: admin.spiffeId, reason }, ev);
    ev.succeed();
    return res;
  }));
}

async function change(risk: RiskService, id: string, state: RiskState, score: number | undefined, by: Parameters<RiskService['apply']>[1], ev: Parameters<RiskService['apply']>[2] & object): Promise<RiskChangeResponse> {
  const current = await risk.standing(id);
  const res = await risk.apply({ identity: id, time: Date.now(), score: score ?? current.score, state, previous: current.state, reasons: [] }, by, ev);
  // Admin changes are never refused by the engine's rules.
  if (!res.applied) throw new TesseraError('TESSERA_CONFLICT', res.why);
  const version = ev.detail.bundle_version;
  return { state: riskStateView(res.record), previous: current.state, ...(typeof version === 'number' ? { bundle_version: version } : {}) };
}
