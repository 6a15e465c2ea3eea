/**
 * `GET /v1/map?window=5m[&site=S][&cursor=C][&limit=N]` and `GET /v1/map/edge?caller=ID&callee=ID[&limit=N]`:
 * the console's map (service.ts), admin only and audited (`map.read`, `map.edge`). Query parameters
 * are checked strictly: an unknown, repeated or malformed one is TESSERA_BAD_REQUEST naming it.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { TesseraError } from '../../core/errors.js';
import { isSpiffeId } from '../../core/spiffe-id.js';
import type { MapEdgeResponse, MapResponse } from '../../core/wire/map.js';
import { queryInt } from '../../common/api/validate.js';
import { adminCaller, audited } from '../api/handlers.js';
import type { ServerContext } from '../context.js';
import {
  EDGE_DECISIONS_DEFAULT, EDGE_DECISIONS_MAX, MAP_PAGE_DEFAULT, MAP_PAGE_MAX, MAP_WINDOW_DEFAULT_MS, MAP_WINDOW_MAX_MS, MAP_WINDOW_MIN_MS,
  decodeCursor, type MapQuery,
} from './service.js';

/** A site name as telemetry carries it (src/server/telemetry/validate.ts), or "" for services without one. */
const SITE = /^(?:[A-Za-z0-9][A-Za-z0-9._-]{0,63})?$/;
const UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3600_000 };

/** The query as a record of single strings; unknown names and repeated parameters are refused. */
function strictQuery(req: FastifyRequest, allowed: readonly string[]): Record<string, string> {
  const q = (req.query ?? {}) as Record<string, unknown>;
  for (const [k, v] of Object.entries(q)) {
    if (!allowed.includes(k)) throw new TesseraError('TESSERA_BAD_REQUEST', `unknown query parameter "${k.slice(0, 64)}" (allowed: ${allowed.join(', ')})`);
    if (typeof v !== 'string') throw new TesseraError('TESSERA_BAD_REQUEST', `query "${k}" must be given once`);
  }
  return q as Record<string, string>;
}

/** `window=N(s|m|h)`, 10s to 24h. */
export function parseWindow(v: string | undefined): number {
  if (v === undefined) return MAP_WINDOW_DEFAULT_MS;
  const m = /^(\d{1,5})([smh])$/.exec(v);
  const ms = m ? Number(m[1]) * UNITS[m[2]!]! : NaN;
  if (!(ms >= MAP_WINDOW_MIN_MS && ms <= MAP_WINDOW_MAX_MS)) throw new TesseraError('TESSERA_BAD_REQUEST', 'query "window" must be a duration from 10s to 24h, e.g. 30s, 5m, 1h');
  return ms;
}

function spiffeParam(q: Record<string, string>, name: string): string {
  const v = q[name];
  if (v === undefined || v.length > 2048 || !isSpiffeId(v)) throw new TesseraError('TESSERA_BAD_REQUEST', `query "${name}" must be a SPIFFE ID`);
  return v;
}

export function mapRoutes(app: FastifyInstance, ctx: ServerContext): void {
  app.get('/v1/map', (req) => audited(ctx, req, 'map.read', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:map.read');
    const q = strictQuery(req, ['window', 'site', 'cursor', 'limit']);
    const query: MapQuery = { windowMs: parseWindow(q.window), limit: queryInt(q, 'limit', MAP_PAGE_DEFAULT, 1, MAP_PAGE_MAX) };
    if (q.site !== undefined) {
      if (!SITE.test(q.site)) throw new TesseraError('TESSERA_BAD_REQUEST', 'query "site" must be a site name (letters, digits, . _ -; up to 64), or empty for services without a site');
      query.site = q.site;
    }
    if (q.cursor !== undefined) query.after = decodeCursor(q.cursor);
    const res = await ctx.map.map(query);
    ev.detail.count = res.services.length + res.edges.length;
    ev.succeed();
    return res satisfies MapResponse;
  }));

  app.get('/v1/map/edge', (req) => audited(ctx, req, 'map.edge', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:map.edge');
    const q = strictQuery(req, ['caller', 'callee', 'limit']);
    const caller = spiffeParam(q, 'caller');
    const callee = spiffeParam(q, 'callee');
    const limit = queryInt(q, 'limit', EDGE_DECISIONS_DEFAULT, 1, EDGE_DECISIONS_MAX);
    ev.target = callee;
    ev.detail.caller = caller;
    const res = await ctx.map.edge(caller, callee, limit);
    ev.detail.count = res.decisions.length;
    ev.succeed();
    return res satisfies MapEdgeResponse;
  }));
}
