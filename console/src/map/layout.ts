/**
 * Pure layout and colour rules of the Map page (no DOM): tested by vitest beside it.
 *
 * What keeps the page usable at 1,000 services and 5,000 edges: the overview draws only sites and
 * the traffic between sites (the server's `site_edges`, a few dozen lines at most); a site's view
 * draws that site's services (a grid, at most SITE_SERVICES_SHOWN at once, the riskiest first), the
 * edges between them (at most SITE_EDGES_SHOWN, the most denied first), and one aggregated line per
 * other site it talks to. test/console-map-scale.e2e.test.ts measures it in Chromium.
 */
import type { MapEdgeView, MapServiceView, MapSiteView } from '../../../src/core/wire/map.js';

export const SITE_SERVICES_SHOWN = 300;
/**
 * Edges among the shown services drawn at most: 300 services with 5 edges each among them would
 * otherwise be 1,500 lines (each with its title), more than the services themselves.
 */
export const SITE_EDGES_SHOWN = 400;

export interface Point { x: number; y: number }

/** Sites on a circle, each a disc whose area grows with its number of services. */
export function layoutSites(sites: readonly MapSiteView[], width: number, height: number): Map<string, Point & { r: number }> {
  const out = new Map<string, Point & { r: number }>();
  const cx = width / 2;
  const cy = height / 2;
  const ring = sites.length <= 1 ? 0 : Math.min(width, height) / 2 - 70;
  const most = Math.max(1, ...sites.map((s) => s.services));
  sites.forEach((s, i) => {
    const a = (2 * Math.PI * i) / Math.max(1, sites.length) - Math.PI / 2;
    out.set(s.name ?? '', { x: cx + ring * Math.cos(a), y: cy + ring * Math.sin(a), r: 18 + 32 * Math.sqrt(s.services / most) });
  });
  return out;
}

/** Services in a grid, `columns` wide, `cell` pixels apart. */
export function layoutGrid(ids: readonly string[], columns: number, cell: number, origin: Point = { x: cell / 2, y: cell / 2 }): Map<string, Point> {
  const out = new Map<string, Point>();
  ids.forEach((id, i) => out.set(id, { x: origin.x + (i % columns) * cell, y: origin.y + Math.floor(i / columns) * cell }));
  return out;
}

/** The riskiest first (quarantined, then by score), then by id: what is shown when a site is too large. */
export function byRisk(a: MapServiceView, b: MapServiceView): number {
  return Number(b.quarantined) - Number(a.quarantined) || b.risk.score - a.risk.score || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

/** Risk colour classes: low < 30 ≤ medium < 70 ≤ high; quarantined has its own. */
export function riskClass(s: Pick<MapServiceView, 'quarantined' | 'risk'>): 'risk-quarantined' | 'risk-high' | 'risk-medium' | 'risk-low' {
  if (s.quarantined) return 'risk-quarantined';
  if (s.risk.score >= 70) return 'risk-high';
  if (s.risk.score >= 30) return 'risk-medium';
  return 'risk-low';
}

/** Line width for a request count: logarithmic, 1 to 8 px. */
export function edgeWidth(requests: number): number {
  return Math.min(8, 1 + Math.log10(1 + Math.max(0, requests)));
}

/** Edges with denials are drawn as such, whatever else they carry. */
export function edgeClass(e: Pick<MapEdgeView, 'denied' | 'errors'>): 'edge-denied' | 'edge-errors' | 'edge-ok' {
  return e.denied > 0 ? 'edge-denied' : e.errors > 0 ? 'edge-errors' : 'edge-ok';
}

/** The last path segment of a SPIFFE ID: the label drawn on the map (the whole ID is in the title). */
export function shortName(id: string): string {
  const path = id.replace(/^spiffe:\/\/[^/]+/, '');
  const last = path.split('/').filter(Boolean).pop();
  return last ?? id;
}

/** A count for people: 1234 → "1.2k". */
export function compact(n: number): string {
  if (n < 1000) return String(n);
  if (n < 1_000_000) return `${(n / 1000).toFixed(n < 10_000 ? 1 : 0)}k`;
  return `${(n / 1_000_000).toFixed(1)}M`;
}

/** The most denied first, then the busiest, then by caller and callee: which edges are drawn when there are too many. */
export function byDenials(a: MapEdgeView, b: MapEdgeView): number {
  const ka = `${a.caller} ${a.callee}`;
  const kb = `${b.caller} ${b.callee}`;
  return b.denied - a.denied || b.requests - a.requests || (ka < kb ? -1 : ka > kb ? 1 : 0);
}

/**
 * A site's view: the services shown (the riskiest `shown`), the edges between shown services (the
 * most denied `edgesShown`), and per other site one line summing the edges to and from it.
 */
export function siteView(site: string, services: readonly MapServiceView[], edges: readonly MapEdgeView[], shown = SITE_SERVICES_SHOWN, edgesShown = SITE_EDGES_SHOWN): {
  services: MapServiceView[];
  hidden: number;
  inner: MapEdgeView[];
  /** Edges among the shown services left out (fewer denials). */
  hiddenEdges: number;
  outer: { site: string; requests: number; denied: number; edges: number; inbound: number; outbound: number }[];
} {
  const mine = services.filter((s) => (s.site ?? '') === site).sort(byRisk);
  const visible = mine.slice(0, shown);
  const ids = new Set(visible.map((s) => s.id));
  const inner: MapEdgeView[] = [];
  const outer = new Map<string, { site: string; requests: number; denied: number; edges: number; inbound: number; outbound: number }>();
  for (const e of edges) {
    const from = e.caller_site ?? '';
    const to = e.callee_site ?? '';
    if (from === site && to === site) {
      if (ids.has(e.caller) && ids.has(e.callee)) inner.push(e);
      continue;
    }
    const other = from === site ? to : to === site ? from : undefined;
    if (other === undefined) continue;
    const row = outer.get(other) ?? { site: other, requests: 0, denied: 0, edges: 0, inbound: 0, outbound: 0 };
    row.requests += e.requests;
    row.denied += e.denied;
    row.edges += 1;
    if (from === site) row.outbound += 1;
    else row.inbound += 1;
    outer.set(other, row);
  }
  inner.sort(byDenials);
  return { services: visible, hidden: mine.length - visible.length, inner: inner.slice(0, edgesShown), hiddenEdges: Math.max(0, inner.length - edgesShown), outer: [...outer.values()].sort((a, b) => (a.site < b.site ? -1 : 1)) };
}
