/**
 * The Map page: sites → services → edges over the last minutes (GET /v1/map), coloured by risk,
 * quarantined services marked; an edge's decisions on click (GET /v1/map/edge).
 *
 * Scale (1,000 services, 5,000 edges): the overview asks for one item (`limit=1`) and draws the
 * sites and the aggregated traffic between them (`sites`, `site_edges`: whole on every page). A
 * site's view pages through that site's services and edges (`site=S`), draws at most
 * SITE_SERVICES_SHOWN services (the riskiest), at most SITE_EDGES_SHOWN edges among them (the most
 * denied), and one aggregated line per other site. Every edge drawn is also in a keyboard-usable table (the riskiest first).
 */
import { useEffect, useState } from 'preact/hooks';
import type { MapEdgeResponse, MapEdgeView, MapResponse, MapServiceView } from '../../../src/core/wire/map.js';
import { api, asApiError, type ApiError } from '../api.js';
import { byDenials, compact, edgeClass, edgeWidth, layoutGrid, layoutSites, riskClass, shortName, siteView } from '../map/layout.js';
import { Failure } from './need-sign-in.js';

const WINDOWS = ['1m', '5m', '15m', '1h'] as const;
/** Pages fetched for one site at most (5,000 items each). */
const MAX_PAGES = 10;
const W = 900;
const H = 620;

async function loadSite(window: string, site: string): Promise<{ services: MapServiceView[]; edges: MapEdgeView[]; truncated: boolean }> {
  const services: MapServiceView[] = [];
  const edges: MapEdgeView[] = [];
  let cursor: string | null = null;
  for (let page = 0; page < MAX_PAGES; page++) {
    const res: MapResponse = await api.get<MapResponse>(`/v1/map?window=${window}&site=${encodeURIComponent(site)}&limit=5000${cursor ? `&cursor=${cursor}` : ''}`);
    services.push(...res.services);
    edges.push(...res.edges);
    cursor = res.next_cursor;
    if (cursor === null) return { services, edges, truncated: false };
  }
  return { services, edges, truncated: true };
}

const siteLabel = (name: string | null | undefined): string => (name ? name : '(no site)');

/** How often the live map is fetched again, ms. */
const LIVE_MS = 5000;

export function MapPage() {
  const [window, setWindow] = useState<string>('5m');
  const [overview, setOverview] = useState<MapResponse | undefined>();
  const [site, setSite] = useState<string | undefined>();
  const [detail, setDetail] = useState<{ services: MapServiceView[]; edges: MapEdgeView[]; truncated: boolean } | undefined>();
  const [edge, setEdge] = useState<{ view: MapEdgeView; res?: MapEdgeResponse; error?: ApiError } | undefined>();
  const [error, setError] = useState<ApiError | undefined>();
  // Bumped after a step-up: load again.
  const [tick, setTick] = useState(0);
  // Live: while the tab is visible, the map is fetched again every LIVE_MS and redrawn in place.
  const [liveOn, setLiveOn] = useState(true);
  const [refresh, setRefresh] = useState(0);

  useEffect(() => {
    if (!liveOn) return;
    const id = setInterval(() => {
      if (document.visibilityState === 'visible') setRefresh((r) => r + 1);
    }, LIVE_MS);
    return () => clearInterval(id);
  }, [liveOn]);

  // A live refresh keeps what is shown until the new answer arrives (no flicker); a failed refresh
  // leaves it and the next one tries again.
  useEffect(() => {
    if (refresh === 0) return;
    let live = true;
    api.get<MapResponse>(`/v1/map?window=${window}&limit=1`).then((r) => live && setOverview(r), () => undefined);
    if (site !== undefined) loadSite(window, site).then((d) => live && setDetail(d), () => undefined);
    return () => {
      live = false;
    };
  }, [refresh]);

  useEffect(() => {
    let live = true;
    setError(undefined);
    setOverview(undefined);
    api.get<MapResponse>(`/v1/map?window=${window}&limit=1`).then((r) => live && setOverview(r), (e: unknown) => live && setError(asApiError(e)));
    return () => {
      live = false;
    };
  }, [window, tick]);

  useEffect(() => {
    if (site === undefined) return;
    let live = true;
    setDetail(undefined);
    loadSite(window, site).then((d) => live && setDetail(d), (e: unknown) => live && setError(asApiError(e)));
    return () => {
      live = false;
    };
  }, [window, site, tick]);

  const openEdge = (view: MapEdgeView): void => {
    setEdge({ view });
    api.get<MapEdgeResponse>(`/v1/map/edge?caller=${encodeURIComponent(view.caller)}&callee=${encodeURIComponent(view.callee)}&limit=50`)
      .then((res) => setEdge({ view, res }), (e: unknown) => setEdge({ view, error: asApiError(e) }));
  };

  if (error) return <Failure error={error} retry={() => setTick((t) => t + 1)} />;
  return (
    <div class="map-page">
      <div class="toolbar">
        <label for="map-window">Window</label>
        <select id="map-window" value={window} onChange={(e) => setWindow((e.target as HTMLSelectElement).value)}>
          {WINDOWS.map((w) => <option key={w} value={w}>last {w}</option>)}
        </select>
        <label class="live"><input type="checkbox" checked={liveOn} onChange={(e) => setLiveOn((e.target as HTMLInputElement).checked)} /> Live (every {LIVE_MS / 1000} s)</label>
        {site !== undefined && <button type="button" onClick={() => { setSite(undefined); setDetail(undefined); }}>All sites</button>}
        {overview && <span class="totals" role="status">{overview.totals.sites} sites · {overview.totals.services} services · {overview.totals.edges} edges</span>}
      </div>
      {edge && <EdgePanel edge={edge} onClose={() => setEdge(undefined)} />}
      {!overview ? <p role="status">Loading the map…</p>
        : site === undefined ? <SitesOverview map={overview} onSite={setSite} />
          : !detail ? <p role="status">Loading {siteLabel(site)}…</p>
            : <SiteDetail site={site} detail={detail} onEdge={openEdge} />}
      <Legend />
    </div>
  );
}

function SitesOverview({ map, onSite }: { map: MapResponse; onSite: (s: string) => void }) {
  const pos = layoutSites(map.sites, W, H);
  if (map.sites.length === 0) return <p>No services and no traffic in this window.</p>;
  return (
    <svg class="map" viewBox={`0 0 ${W} ${H}`} role="group" aria-label="Sites and the traffic between them">
      {map.site_edges.map((e) => {
        const a = pos.get(e.from ?? '');
        const b = pos.get(e.to ?? '');
        if (!a || !b || a === b) return null;
        return (
          <line key={`${e.from}>${e.to}`} x1={a.x} y1={a.y} x2={b.x} y2={b.y} class={`edge ${edgeClass(e)}`} stroke-width={edgeWidth(e.requests)}>
            <title>{`${siteLabel(e.from)} → ${siteLabel(e.to)}: ${e.edges} edges, ${e.allowed} allowed, ${e.denied} denied`}</title>
          </line>
        );
      })}
      {map.sites.map((s) => {
        const p = pos.get(s.name ?? '')!;
        const inner = map.site_edges.find((e) => e.from === s.name && e.to === s.name);
        const label = `${siteLabel(s.name)}: ${s.services} services, ${s.quarantined} quarantined, highest risk ${s.max_risk}${inner ? `, ${inner.denied} denied inside` : ''}`;
        const open = (): void => onSite(s.name ?? '');
        return (
          <g key={s.name ?? ''} class="site" role="button" tabindex={0} aria-label={label} onClick={open} onKeyDown={(e) => (e.key === 'Enter' || e.key === ' ') && (e.preventDefault(), open())}>
            <circle cx={p.x} cy={p.y} r={p.r} class={riskClass({ quarantined: false, risk: { score: s.max_risk, state: 'normal', until: null } })} />
            {s.quarantined > 0 && <circle cx={p.x} cy={p.y} r={p.r + 5} class="quarantine-ring" />}
          </g>
        );
      })}
      {/* Labels drawn over the buttons, out of the accessibility tree: each button's name says it all. */}
      <g aria-hidden="true" class="labels">
        {map.sites.map((s) => {
          const p = pos.get(s.name ?? '')!;
          return (
            <g key={s.name ?? ''}>
              <text x={p.x} y={p.y - p.r - 8} text-anchor="middle">{siteLabel(s.name)}</text>
              <text x={p.x} y={p.y + 4} text-anchor="middle" class="count">{s.services}</text>
            </g>
          );
        })}
      </g>
    </svg>
  );
}

function SiteDetail({ site, detail, onEdge }: { site: string; detail: { services: MapServiceView[]; edges: MapEdgeView[]; truncated: boolean }; onEdge: (e: MapEdgeView) => void }) {
  const view = siteView(site, detail.services, detail.edges);
  const columns = Math.max(1, Math.ceil(Math.sqrt(view.services.length * 1.6)));
  const cell = Math.max(24, Math.min(70, (W - 220) / columns));
  const pos = layoutGrid(view.services.map((s) => s.id), columns, cell, { x: cell / 2 + 10, y: cell / 2 + 30 });
  const rows = Math.ceil(view.services.length / columns);
  const height = Math.max(240, rows * cell + 60, view.outer.length * 40 + 60);
  const portals = new Map(view.outer.map((o, i) => [o.site, { x: W - 90, y: 50 + i * 40 }]));
  const ranked = [...view.inner, ...detail.edges.filter((e) => (e.caller_site ?? '') !== (e.callee_site ?? ''))]
    .sort(byDenials).slice(0, 50);
  return (
    <>
      <svg class="map" viewBox={`0 0 ${W} ${height}`} role="group" aria-label={`Services of site ${siteLabel(site)}`}>
        <text x={10} y={18} class="heading">{siteLabel(site)}: {view.services.length} services shown{view.hidden ? `, ${view.hidden} more (lower risk) not drawn` : ''}{view.hiddenEdges ? `; ${view.hiddenEdges} edges among them not drawn (fewer denials)` : ''}</text>
        {view.outer.map((o) => {
          const p = portals.get(o.site)!;
          return (
            <g key={`portal ${o.site}`}>
              <rect x={p.x - 70} y={p.y - 14} width={150} height={28} rx={6} class={`portal ${o.denied ? 'edge-denied' : ''}`} />
              <text x={p.x + 5} y={p.y + 4} text-anchor="middle">{siteLabel(o.site)} · {o.edges} edges</text>
            </g>
          );
        })}
        {view.inner.map((e) => {
          const a = pos.get(e.caller)!;
          const b = pos.get(e.callee)!;
          return (
            <line key={`${e.caller}>${e.callee}`} x1={a.x} y1={a.y} x2={b.x} y2={b.y} class={`edge ${edgeClass(e)} clickable`} stroke-width={edgeWidth(e.requests)} onClick={() => onEdge(e)}>
              <title>{`${shortName(e.caller)} → ${shortName(e.callee)}: ${e.allowed} allowed, ${e.denied} denied`}</title>
            </line>
          );
        })}
        {view.services.map((s) => {
          const p = pos.get(s.id)!;
          return (
            <g key={s.id} class="service">
              <circle cx={p.x} cy={p.y} r={Math.min(10, cell / 3)} class={riskClass(s)}>
                <title>{`${s.id}: risk ${s.risk.score} (${s.risk.state})`}</title>
              </circle>
              {s.quarantined && <text x={p.x} y={p.y + 4} text-anchor="middle" class="q-mark">Q</text>}
              {cell >= 50 && <text x={p.x} y={p.y + cell / 2 - 4} text-anchor="middle" class="label">{shortName(s.id).slice(0, 12)}</text>}
            </g>
          );
        })}
      </svg>
      {detail.truncated && <p class="notice">This site has more items than the console loads; the busiest are shown.</p>}
      <table class="edges">
        <caption>Edges of {siteLabel(site)}, most denied first (top {ranked.length})</caption>
        <thead><tr><th scope="col">Caller</th><th scope="col">Callee</th><th scope="col">Allowed</th><th scope="col">Denied</th><th scope="col">Errors</th><th scope="col"><span class="sr-only">Decisions</span></th></tr></thead>
        <tbody>
          {ranked.map((e) => (
            <tr key={`${e.caller}>${e.callee}`}>
              <td title={e.caller}>{shortName(e.caller)}</td>
              <td title={e.callee}>{shortName(e.callee)}</td>
              <td>{compact(e.allowed)}</td>
              <td>{compact(e.denied)}</td>
              <td>{compact(e.errors)}</td>
              <td><button type="button" onClick={() => onEdge(e)} aria-label={`Decisions of ${shortName(e.caller)} to ${shortName(e.callee)}`}>Decisions</button></td>
            </tr>
          ))}
        </tbody>
      </table>
    </>
  );
}

function EdgePanel({ edge, onClose }: { edge: { view: MapEdgeView; res?: MapEdgeResponse; error?: ApiError }; onClose: () => void }) {
  const { view, res, error } = edge;
  return (
    <section class="edge-panel" aria-labelledby="edge-heading">
      <h2 id="edge-heading">{shortName(view.caller)} → {shortName(view.callee)}</h2>
      <p class="ids">{view.caller} → {view.callee}</p>
      <p>{view.allowed} allowed, {view.denied} denied, {view.errors} errors over the window (reported by {view.reported_by.join(' and ') || 'decision records only'}).</p>
      {error ? <Failure error={error} /> : !res ? <p role="status">Loading decisions…</p> : (
        <table>
          <caption>Newest decisions</caption>
          <thead><tr><th scope="col">Time</th><th scope="col">Outcome</th><th scope="col">Request</th><th scope="col">Policies that decided</th></tr></thead>
          <tbody>
            {res.decisions.map((d) => (
              <tr key={d.id}>
                <td>{d.ts}</td>
                <td class={d.allow ? 'allow' : 'deny'}>{d.allow ? 'allow' : 'deny'}</td>
                <td>{d.method ?? d.action} {d.path ?? ''}</td>
                <td>{d.policies.length ? d.policies.join(', ') : '(none: default deny)'}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <button type="button" onClick={onClose}>Close</button>
    </section>
  );
}

function Legend() {
  return (
    <ul class="legend" aria-label="Legend">
      <li><span class="swatch risk-low" />risk below 30</li>
      <li><span class="swatch risk-medium" />30–69</li>
      <li><span class="swatch risk-high" />70 and above</li>
      <li><span class="swatch risk-quarantined" />quarantined (Q)</li>
      <li><span class="swatch edge-denied" />edge with denials</li>
    </ul>
  );
}
