import { describe, expect, it } from 'vitest';
import type { MapEdgeView, MapServiceView } from '../../../src/core/wire/map.js';
import { byRisk, compact, edgeClass, edgeWidth, layoutGrid, layoutSites, riskClass, shortName, siteView } from './layout.js';

const svc = (id: string, site: string | null, score = 0, quarantined = false): MapServiceView => ({
  id, site, registered: true, quarantined, risk: { state: quarantined ? 'quarantined' : 'normal', score, until: null },
});
const edge = (caller: string, callee: string, cs: string, ce: string, over: Partial<MapEdgeView> = {}): MapEdgeView => ({
  caller, callee, caller_site: cs, callee_site: ce, requests: 10, allowed: 10, denied: 0, errors: 0, bytes: 0, reported_by: ['callee'], decisions: { allowed: 0, denied: 0 }, ...over,
});

describe('map layout', () => {
  it('colours by risk, quarantine first', () => {
    expect(riskClass(svc('a', 'x', 95, true))).toBe('risk-quarantined');
    expect(riskClass(svc('a', 'x', 70))).toBe('risk-high');
    expect(riskClass(svc('a', 'x', 30))).toBe('risk-medium');
    expect(riskClass(svc('a', 'x', 29))).toBe('risk-low');
    expect([svc('b', 'x', 10), svc('a', 'x', 50), svc('c', 'x', 0, true)].sort(byRisk).map((s) => s.id)).toEqual(['c', 'a', 'b']);
  });

  it('draws edges by traffic and denials', () => {
    expect(edgeWidth(0)).toBe(1);
    expect(edgeWidth(1e12)).toBe(8);
    expect(edgeClass({ denied: 1, errors: 5 })).toBe('edge-denied');
    expect(edgeClass({ denied: 0, errors: 5 })).toBe('edge-errors');
    expect(edgeClass({ denied: 0, errors: 0 })).toBe('edge-ok');
  });

  it('lays sites on a circle inside the box, services on a grid', () => {
    const sites = layoutSites([{ name: 'a', services: 1, quarantined: 0, max_risk: 0 }, { name: null, services: 100, quarantined: 0, max_risk: 0 }], 800, 600);
    for (const p of sites.values()) {
      expect(p.x - p.r).toBeGreaterThanOrEqual(0);
      expect(p.y + p.r).toBeLessThanOrEqual(600);
    }
    expect(sites.get('')!.r).toBeGreaterThan(sites.get('a')!.r);
    expect([...layoutGrid(['a', 'b', 'c'], 2, 10).values()]).toEqual([{ x: 5, y: 5 }, { x: 15, y: 5 }, { x: 5, y: 15 }]);
  });

  it('a site view shows the riskiest services, inner edges among them, and one line per other site', () => {
    const services = [svc('a', 'eu', 5), svc('b', 'eu', 80), svc('c', 'eu', 1), svc('d', 'us')];
    const edges = [edge('a', 'b', 'eu', 'eu'), edge('a', 'c', 'eu', 'eu'), edge('a', 'd', 'eu', 'us', { denied: 2 }), edge('d', 'b', 'us', 'eu'), edge('d', 'd', 'us', 'us')];
    const v = siteView('eu', services, edges, 2);
    expect(v.services.map((s) => s.id)).toEqual(['b', 'a']);
    expect(v.hidden).toBe(1);
    expect(v.inner.map((e) => `${e.caller}${e.callee}`)).toEqual(['ab']);
    expect(v.outer).toEqual([{ site: 'us', requests: 20, denied: 2, edges: 2, inbound: 1, outbound: 1 }]);
    expect(v.hiddenEdges).toBe(0);
  });

  it('a site view draws at most `edgesShown` edges among its services, the most denied, then the busiest', () => {
    const services = ['a', 'b', 'c'].map((id) => svc(id, 'eu'));
    const edges = [
      edge('a', 'b', 'eu', 'eu', { requests: 5 }), edge('b', 'c', 'eu', 'eu', { denied: 1 }), edge('c', 'a', 'eu', 'eu', { requests: 50 }),
      edge('a', 'c', 'eu', 'eu', { requests: 50 }), edge('b', 'a', 'eu', 'eu', { denied: 3 }),
    ];
    const v = siteView('eu', services, edges, 3, 3);
    expect(v.inner.map((e) => `${e.caller}${e.callee}`)).toEqual(['ba', 'bc', 'ac']);
    expect(v.hiddenEdges).toBe(2);
    expect(siteView('eu', services, edges).inner).toHaveLength(5);
  });

  it('labels', () => {
    expect(shortName('spiffe://td/ns/prod/orders')).toBe('orders');
    expect(shortName('spiffe://td')).toBe('spiffe://td');
    expect([999, 1234, 56_000, 2_500_000].map(compact)).toEqual(['999', '1.2k', '56k', '2.5M']);
  });
});
