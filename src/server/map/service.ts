/**
 * The console's map (issue 12): sites → services → edges over the last minutes, from the stored
 * telemetry windows, the recorded decisions and the risk states. The store sums the windows and
 * decisions per edge (GROUP BY, Store.aggregateTelemetryEdges / aggregateDecisionEdges), so the
 * work here grows with the number of edges and services, never with the traffic.
 *
 * Paging: the services and edges form one ordered list, each service followed by the edges anchored
 * on it (its outgoing edges; with a site filter, an edge coming in from another site is anchored on
 * its callee). A page is `limit` items of that list; the cursor is the position (sort key) of the
 * last item given, so pages neither repeat nor skip an item that exists on both requests, whatever
 * arrives in between. `sites` and `site_edges` are whole on every page: a browser can draw the
 * site-level map from the first page and fetch services and edges as it needs them.
 */
import { TesseraError } from '../../core/errors.js';
import { LIMITS } from '../../core/policy/types.js';
import type { RiskState } from '../../core/risk/types.js';
import type {
  MapEdgeDecision, MapEdgeResponse, MapEdgeView, MapResponse, MapServiceView, MapSiteEdgeView, MapSiteView,
} from '../../core/wire/map.js';
import type { RegistryService } from '../registry/service.js';
import type { RiskService } from '../risk/service.js';
import type { Store, StoredAuditRecord, TelemetryEdgeAggregate } from '../store/store.js';

/** Items (services + edges) per page: default and bounds. */
export const MAP_PAGE_DEFAULT = 1000;
export const MAP_PAGE_MAX = 5000;
/** The window: default 5 minutes, from 10 s to 24 h. */
export const MAP_WINDOW_DEFAULT_MS = 5 * 60_000;
export const MAP_WINDOW_MIN_MS = 10_000;
export const MAP_WINDOW_MAX_MS = 24 * 3600_000;
/** Decisions listed for one edge: default and bound. */
export const EDGE_DECISIONS_DEFAULT = 50;
export const EDGE_DECISIONS_MAX = 500;

/** The sort key of one item of the ordered list: [site, anchor service, kind ('0' service, '1' edge), direction + other end]. */
export type MapPosition = [string, string, '0' | '1', string];

export interface MapQuery {
  windowMs: number;
  /** Only this site's services and the edges touching them; "" = services without a site. */
  site?: string;
  /** Start after this position (from the previous page's `next_cursor`). */
  after?: MapPosition;
  limit: number;
}

export interface MapDeps {
  store: Store;
  risk: Pick<RiskService, 'list'>;
  registry: Pick<RegistryService, 'list'>;
  now: () => number;
}

interface Service { id: string; site: string | null; registered: boolean }
interface Edge { caller: string; callee: string; requests: number; allowed: number; denied: number; errors: number; bytes: number; reportedBy: ('caller' | 'callee')[]; decisions: { allowed: number; denied: number } }
/** `sort` is the position's parts joined by NUL (in none of them, and below every character): string order = tuple order. */
type Item = { key: MapPosition; sort: string; service?: MapServiceView; edge?: MapEdgeView };

const sortKey = (k: MapPosition): string => k.join('\u0000');

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

function compareKeys(a: MapPosition, b: MapPosition): number {
  for (let i = 0; i < 4; i++) {
    if (a[i]! < b[i]!) return -1;
    if (a[i]! > b[i]!) return 1;
  }
  return 0;
}

/** The cursor of a position: base64url of its JSON (opaque to clients). */
export function encodeCursor(key: MapPosition): string {
  return Buffer.from(JSON.stringify(key), 'utf8').toString('base64url');
}

/** Longest cursor accepted: four SPIFFE-ID-sized strings, base64url-encoded. */
const MAX_CURSOR_CHARS = 12_000;

/** The position a cursor names, or TESSERA_BAD_REQUEST for anything this service did not write. */
export function decodeCursor(cursor: string): MapPosition {
  const invalid = new TesseraError('TESSERA_BAD_REQUEST', 'query "cursor" is not a cursor of this map (use next_cursor as given)');
  if (cursor.length === 0 || cursor.length > MAX_CURSOR_CHARS || !/^[A-Za-z0-9_-]+$/.test(cursor)) throw invalid;
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw invalid;
  }
  if (!Array.isArray(v) || v.length !== 4 || !v.every((s) => typeof s === 'string' && s.length <= 2100) || (v[2] !== '0' && v[2] !== '1')) throw invalid;
  return v as MapPosition;
}

/** `{ windows of one reporter }` → the edge's counts; the callee's view wins (its sidecar decides). */
function mergeReports(reports: TelemetryEdgeAggregate[]): Pick<Edge, 'requests' | 'allowed' | 'denied' | 'errors' | 'bytes' | 'reportedBy'> {
  const callee = reports.find((r) => r.reporter === 'callee');
  const chosen = callee ?? reports[0]!;
  const requests = Number(chosen.requests) || 0;
  const denied = Math.min(requests, Number(chosen.denials) || 0);
  return {
    requests, denied, allowed: requests - denied, errors: Number(chosen.errors) || 0, bytes: Number(chosen.bytes) || 0,
    reportedBy: (['caller', 'callee'] as const).filter((side) => reports.some((r) => r.reporter === side)),
  };
}

export class MapService {
  constructor(private readonly deps: MapDeps) {}

  /** One page of the map (see the file comment). */
  async map(q: MapQuery): Promise<MapResponse> {
    const { store, registry, risk, now } = this.deps;
    const until = now();
    const since = until - q.windowMs;
    const [telemetry, decisions, entries, states] = await Promise.all([
      store.aggregateTelemetryEdges(since, until + 1),
      store.aggregateDecisionEdges(since, until + 1),
      registry.list(),
      risk.list(LIMITS.maxRisk),
    ]);

    // Services: live entries (their registered site first), then every end of an edge and every
    // identity in step-up or quarantine, placed in the site their telemetry names.
    const services = new Map<string, Service>();
    for (const e of entries) if (e.revokedAt == null) services.set(e.spiffeId, { id: e.spiffeId, site: e.attributes.site ?? null, registered: true });
    const place = (id: string, site: string | null): void => {
      const s = services.get(id);
      if (!s) services.set(id, { id, site, registered: false });
      else if (s.site === null && site !== null) s.site = site;
    };

    const reports = new Map<string, TelemetryEdgeAggregate[]>();
    for (const t of telemetry) {
      const k = `${t.caller}\n${t.callee}`;
      const list = reports.get(k);
      if (list) list.push(t);
      else reports.set(k, [t]);
      place(t.caller, t.callerSite || null);
      place(t.callee, t.calleeSite || null);
    }
    const edges = new Map<string, Edge>();
    for (const [k, list] of reports) {
      edges.set(k, { caller: list[0]!.caller, callee: list[0]!.callee, ...mergeReports(list), decisions: { allowed: 0, denied: 0 } });
    }
    for (const d of decisions) {
      const k = `${d.caller}\n${d.callee}`;
      const counts = { allowed: Number(d.allowed) || 0, denied: Number(d.denied) || 0 };
      const e = edges.get(k);
      if (e) e.decisions = counts;
      // No sidecar reported telemetry for it: the decision records are all the map knows.
      else edges.set(k, { caller: d.caller, callee: d.callee, requests: counts.allowed + counts.denied, ...counts, errors: 0, bytes: 0, reportedBy: [], decisions: counts });
      place(d.caller, null);
      place(d.callee, null);
    }

    const standing = new Map<string, { state: RiskState; score: number; until: number | null }>();
    for (const r of states) {
      // A state whose TTL has passed is normal to every check (RiskService.standing).
      const lapsed = r.state !== 'normal' && r.until !== null && r.until <= until;
      standing.set(r.spiffeId, lapsed ? { state: 'normal', score: r.score, until: null } : { state: r.state, score: r.score, until: r.until });
      if (!lapsed && r.state !== 'normal') place(r.spiffeId, null);
    }
    const views = new Map<string, MapServiceView>();
    const view = (s: Service): MapServiceView => {
      const known = views.get(s.id);
      if (known) return known;
      const st = standing.get(s.id) ?? { state: 'normal' as const, score: 0, until: null };
      const v: MapServiceView = { id: s.id, site: s.site, risk: { state: st.state, score: st.score, until: iso(st.until) }, quarantined: st.state === 'quarantined', registered: s.registered };
      views.set(s.id, v);
      return v;
    };

    const siteOf = (id: string): string | null => services.get(id)?.site ?? null;
    const sites = new Map<string, MapSiteView>();
    for (const s of services.values()) {
      const key = s.site ?? '';
      const v = view(s);
      const row = sites.get(key) ?? { name: s.site, services: 0, quarantined: 0, max_risk: 0 };
      row.services += 1;
      if (v.quarantined) row.quarantined += 1;
      row.max_risk = Math.max(row.max_risk, v.risk.score);
      sites.set(key, row);
    }
    const siteEdges = new Map<string, MapSiteEdgeView>();
    for (const e of edges.values()) {
      const from = siteOf(e.caller);
      const to = siteOf(e.callee);
      const key = `${from ?? ''}\n${to ?? ''}`;
      const row = siteEdges.get(key) ?? { from, to, edges: 0, requests: 0, allowed: 0, denied: 0, errors: 0, bytes: 0 };
      row.edges += 1;
      row.requests += e.requests;
      row.allowed += e.allowed;
      row.denied += e.denied;
      row.errors += e.errors;
      row.bytes += e.bytes;
      siteEdges.set(key, row);
    }

    // The ordered list of this query's items.
    const inFilter = (id: string): boolean => q.site === undefined || (siteOf(id) ?? '') === q.site;
    const items: Item[] = [];
    for (const s of services.values()) {
      if (!inFilter(s.id)) continue;
      const key: MapPosition = [s.site ?? '', s.id, '0', ''];
      items.push({ key, sort: sortKey(key), service: view(s) });
    }
    for (const e of edges.values()) {
      const outgoing = inFilter(e.caller);
      if (!outgoing && !inFilter(e.callee)) continue;
      const anchor = outgoing ? e.caller : e.callee;
      const key: MapPosition = [siteOf(anchor) ?? '', anchor, '1', outgoing ? `o${e.callee}` : `i${e.caller}`];
      items.push({
        key,
        sort: sortKey(key),
        edge: {
          caller: e.caller, callee: e.callee, caller_site: siteOf(e.caller), callee_site: siteOf(e.callee),
          requests: e.requests, allowed: e.allowed, denied: e.denied, errors: e.errors, bytes: e.bytes, reported_by: e.reportedBy, decisions: e.decisions,
        },
      });
    }
    items.sort((a, b) => (a.sort < b.sort ? -1 : a.sort > b.sort ? 1 : 0));
    let start = 0;
    if (q.after) {
      // The first item after the cursor's position (binary search: the list is sorted by key).
      const after = sortKey(q.after);
      let lo = 0;
      let hi = items.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (items[mid]!.sort <= after) lo = mid + 1;
        else hi = mid;
      }
      start = lo;
    }
    const page = items.slice(start, start + q.limit);
    const more = start + page.length < items.length;
    let serviceCount = 0;
    for (const it of items) if (it.service) serviceCount += 1;
    const sortSite = <T extends { name?: string | null; from?: string | null; to?: string | null }>(a: T, b: T): number =>
      compareKeys([a.name ?? a.from ?? '', a.to ?? '', '0', ''], [b.name ?? b.from ?? '', b.to ?? '', '0', '']);
    return {
      window_s: Math.round(q.windowMs / 1000),
      since: iso(since)!,
      until: iso(until)!,
      site: q.site ?? null,
      totals: { sites: sites.size, services: serviceCount, edges: items.length - serviceCount },
      sites: [...sites.values()].sort(sortSite),
      site_edges: [...siteEdges.values()].sort(sortSite),
      services: page.flatMap((it) => (it.service ? [it.service] : [])),
      edges: page.flatMap((it) => (it.edge ? [it.edge] : [])),
      next_cursor: more && page.length > 0 ? encodeCursor(page[page.length - 1]!.key) : null,
    };
  }

  /** The newest `limit` decisions recorded on the edge caller → callee, newest first. */
  async edge(caller: string, callee: string, limit: number): Promise<MapEdgeResponse> {
    const rows = await this.deps.store.listEdgeDecisions(caller, callee, limit);
    return { caller, callee, decisions: rows.map(decisionView) };
  }
}

/**
 * What the console shows of one decision record: the outcome, the action, the deciding policies,
 * and the request's method and path without its query (a query string can carry a token).
 */
function decisionView(r: StoredAuditRecord): MapEdgeDecision {
  const d = r.detail;
  const ctx = (typeof d.context === 'object' && d.context !== null ? d.context : {}) as Record<string, unknown>;
  const out: MapEdgeDecision = {
    id: r.id, ts: new Date(r.ts).toISOString(), allow: r.outcome === 'success', action: typeof d.action === 'string' ? d.action : '',
    policies: Array.isArray(d.reasons) ? d.reasons.filter((x): x is string => typeof x === 'string') : [],
  };
  if (typeof ctx.method === 'string' && ctx.method) out.method = ctx.method;
  if (typeof ctx.path === 'string' && ctx.path) out.path = ctx.path.split('?')[0]!;
  return out;
}
