/**
 * The map's aggregation (MapService over a real SQLite file): which report counts, decisions,
 * risk states, sites, the site filter, paging, and what a decision view leaves out.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import Database from 'better-sqlite3';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { TelemetryWindow } from '../../core/risk/types.js';
import type { MapResponse } from '../../core/wire/map.js';
import { SqliteStore } from '../store/sqlite.js';
import type { EntryRecord, RiskStateRecord } from '../store/store.js';
import { MapService, decodeCursor, encodeCursor, type MapQuery } from './service.js';
import { NOW, TD, decision, window } from './test-fabric.js';

function risk(id: string, state: RiskStateRecord['state'], score: number, until: number | null): RiskStateRecord {
  return { spiffeId: id, state, score, since: NOW - 1000, until, reasons: [], setBy: 'admin', actor: `${TD}/tessera/admin`, note: 'test' };
}

describe('MapService', () => {
  let dir: string;
  let store: SqliteStore;
  let entries: EntryRecord[];
  let map: MapService;
  const q = (over: Partial<MapQuery> = {}): Promise<MapResponse> => map.map({ windowMs: 5 * 60_000, limit: 1000, ...over });
  const keep = { maxRows: 1_000_000, maxAgeMs: 1e12, now: NOW };

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-map-'));
    store = new SqliteStore(join(dir, 'tessera.db'));
    entries = [];
    map = new MapService({ store, risk: { list: (n?: number) => store.listRiskStates(n ?? 10_000) }, registry: { list: async () => entries }, now: () => NOW });
  });
  afterEach(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('counts the callee\'s report of an edge, else the caller\'s, and sums windows of the time window only', async () => {
    const a = `${TD}/a`;
    const b = `${TD}/b`;
    const c = `${TD}/c`;
    await store.insertTelemetry([
      // a → b: both sides report; the callee saw the denials.
      window(a, b, 'caller', { requests: 12, denials: 0 }),
      window(a, b, 'callee', { requests: 10, denials: 3, errors: 1 }),
      window(a, b, 'callee', { requests: 5, denials: 1, ts: new Date(NOW - 120_000).toISOString() }),
      // Older than the window: not counted.
      window(a, b, 'callee', { requests: 1000, denials: 1000, ts: new Date(NOW - 10 * 60_000).toISOString() }),
      // b → c: only the caller reported.
      window(b, c, 'caller', { requests: 7, callee_site: 'us' }),
    ].map((w) => ({ reportedBy: w.reporter === 'callee' ? w.callee : w.caller, receivedAt: NOW, window: w })), keep);
    const res = await q();
    expect(res.totals).toEqual({ sites: 2, services: 3, edges: 2 });
    const ab = res.edges.find((e) => e.caller === a && e.callee === b)!;
    expect(ab).toMatchObject({ requests: 15, denied: 4, allowed: 11, errors: 1, bytes: 600, reported_by: ['caller', 'callee'] });
    const bc = res.edges.find((e) => e.caller === b)!;
    expect(bc).toMatchObject({ requests: 7, allowed: 7, denied: 0, reported_by: ['caller'], caller_site: 'eu', callee_site: 'us' });
    expect(res.sites.map((s) => [s.name, s.services])).toEqual([['eu', 2], ['us', 1]]);
    expect(res.site_edges).toEqual([
      { from: 'eu', to: 'eu', edges: 1, requests: 15, allowed: 11, denied: 4, errors: 1, bytes: 600 },
      { from: 'eu', to: 'us', edges: 1, requests: 7, allowed: 7, denied: 0, errors: 0, bytes: 300 },
    ]);
    expect(res.next_cursor).toBeNull();
    // A longer window takes the old window in.
    expect((await q({ windowMs: 3600_000 })).edges.find((e) => e.callee === b)!.requests).toBe(1015);
  });

  it('adds the decisions recorded on each edge; an edge known only from decisions is on the map', async () => {
    const a = `${TD}/a`;
    const b = `${TD}/b`;
    await store.insertTelemetry([{ reportedBy: b, receivedAt: NOW, window: window(a, b, 'callee') }], keep);
    await store.appendAudit([
      decision(a, b, true), decision(a, b, false), decision(a, b, true),
      decision(b, a, false),
      // Outside the window, a key server's unseal decision (resource ≠ enforcer), a refusal: none counts.
      decision(a, b, true, { ts: NOW - 3600_000 }),
      decision(a, `${TD}/tessera/secret/p`, true, { actor: `${TD}/ks`, target: `${TD}/tessera/secret/p` }),
      { ts: NOW - 1000, actor: b, action: 'connection.refused', target: b, outcome: 'denied', code: 'TESSERA_AUTH_INVALID', detail: {} },
    ]);
    const res = await q();
    expect(res.edges.find((e) => e.caller === a)!.decisions).toEqual({ allowed: 2, denied: 1 });
    expect(res.edges.find((e) => e.caller === b)).toMatchObject({ requests: 1, allowed: 0, denied: 1, reported_by: [], decisions: { allowed: 0, denied: 1 } });
    expect(res.totals.edges).toBe(2);
  });

  it('marks risk: quarantined services, scores, a lapsed quarantine as normal; registered sites win', async () => {
    const a = `${TD}/a`;
    const b = `${TD}/b`;
    const q1 = `${TD}/quiet`;
    const lapsed = `${TD}/lapsed`;
    entries = [
      { id: 'e1', spiffeId: a, selectors: [], attributes: { site: 'registered-site' }, x509TtlSeconds: 3600, jwtTtlSeconds: 300, apikeyMaxTtlSeconds: 60, createdAt: 0 },
      { id: 'e2', spiffeId: `${TD}/revoked`, selectors: [], attributes: {}, x509TtlSeconds: 3600, jwtTtlSeconds: 300, apikeyMaxTtlSeconds: 60, createdAt: 0, revokedAt: 1 },
    ];
    await store.insertTelemetry([{ reportedBy: b, receivedAt: NOW, window: window(a, b, 'callee') }], keep);
    await store.putRiskState(risk(b, 'quarantined', 91, NOW + 3600_000), 'normal');
    await store.putRiskState(risk(q1, 'step-up', 70, NOW + 3600_000), 'normal');
    await store.putRiskState(risk(lapsed, 'quarantined', 95, NOW - 1), 'normal');
    const res = await q();
    const byId = new Map(res.services.map((s) => [s.id, s]));
    expect(byId.get(a)).toMatchObject({ site: 'registered-site', registered: true, quarantined: false, risk: { state: 'normal', score: 0 } });
    expect(byId.get(b)).toMatchObject({ site: 'eu', registered: false, quarantined: true, risk: { state: 'quarantined', score: 91, until: new Date(NOW + 3600_000).toISOString() } });
    // No traffic, but in step-up: on the map, without a site.
    expect(byId.get(q1)).toMatchObject({ site: null, risk: { state: 'step-up', score: 70 } });
    expect(byId.has(lapsed)).toBe(false);
    expect(byId.has(`${TD}/revoked`)).toBe(false);
    expect(res.sites.find((s) => s.name === 'eu')).toEqual({ name: 'eu', services: 1, quarantined: 1, max_risk: 91 });
    // site="" selects the services without a site.
    expect((await q({ site: '' })).services.map((s) => s.id)).toEqual([q1]);
  });

  it('filters by site: the site\'s services, their outgoing edges and the edges coming in from other sites, each once', async () => {
    const ids = ['a', 'b', 'c', 'd'].map((n) => `${TD}/${n}`);
    const [a, b, c, d] = ids as [string, string, string, string];
    const site: Record<string, string> = { [a]: 'eu', [b]: 'eu', [c]: 'us', [d]: 'us' };
    const w = (x: string, y: string): TelemetryWindow => window(x, y, 'callee', { caller_site: site[x], callee_site: site[y] });
    await store.insertTelemetry([w(a, b), w(a, c), w(c, b), w(c, d)].map((x) => ({ reportedBy: x.callee, receivedAt: NOW, window: x })), keep);
    const eu = await q({ site: 'eu' });
    expect(eu.services.map((s) => s.id)).toEqual([a, b]);
    expect(eu.edges.map((e) => `${e.caller.slice(-1)}>${e.callee.slice(-1)}`).sort()).toEqual(['a>b', 'a>c', 'c>b']);
    expect(eu.totals).toEqual({ sites: 2, services: 2, edges: 3 });
    expect((await q({ site: 'nowhere' })).totals).toEqual({ sites: 2, services: 0, edges: 0 });
  });

  it('pages the ordered list: no item twice, none missed, also when data arrives between pages', async () => {
    const ids = Array.from({ length: 30 }, (_, i) => `${TD}/s${String(i).padStart(2, '0')}`);
    const rows = ids.flatMap((x, i) => [1, 2, 3].map((k) => window(x, ids[(i + k) % ids.length]!, 'callee', { caller_site: `site${i % 3}`, callee_site: `site${((i + k) % ids.length) % 3}` })));
    await store.insertTelemetry(rows.map((x) => ({ reportedBy: x.callee, receivedAt: NOW, window: x })), keep);
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const res: MapResponse = await q({ limit: 7, ...(cursor ? { after: decodeCursor(cursor) } : {}) });
      expect(res.services.length + res.edges.length).toBeLessThanOrEqual(7);
      for (const s of res.services) seen.push(`s ${s.id}`);
      for (const e of res.edges) seen.push(`e ${e.caller} ${e.callee}`);
      cursor = res.next_cursor;
      pages += 1;
      // New traffic between pages: a new edge sorted before the cursor is not shown, nothing is repeated.
      if (pages === 2) await store.insertTelemetry([{ reportedBy: ids[1]!, receivedAt: NOW, window: window(ids[0]!, ids[15]!, 'caller', { caller_site: 'site0', callee_site: 'site0' }) }], keep);
    } while (cursor !== null && pages < 100);
    expect(pages).toBe(Math.ceil(120 / 7));
    expect(new Set(seen).size).toBe(seen.length);
    expect(seen.filter((s) => s.startsWith('s ')).length).toBe(30);
    expect(seen.filter((s) => s.startsWith('e ')).length).toBe(90);
    // Each service comes before the edges anchored on it.
    for (const [i, item] of seen.entries()) {
      if (item.startsWith('e ')) expect(seen.slice(0, i)).toContain(`s ${item.split(' ')[1]}`);
    }
  });

  it('a database made before the figures\' columns: its rows are filled from their JSON when opened', async () => {
    await store.close();
    const file = join(dir, 'old.db');
    const old = new Database(file);
    old.exec(`CREATE TABLE telemetry_windows (id INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER NOT NULL, received_at INTEGER NOT NULL, reported_by TEXT NOT NULL,
      caller TEXT NOT NULL, callee TEXT NOT NULL, window TEXT NOT NULL)`);
    const w = window(`${TD}/a`, `${TD}/b`, 'callee', { requests: 9, denials: 2, errors: 1, callee_site: 'us' });
    old.prepare('INSERT INTO telemetry_windows(ts, received_at, reported_by, caller, callee, window) VALUES (?, ?, ?, ?, ?, ?)').run(Date.parse(w.ts), NOW, w.callee, w.caller, w.callee, JSON.stringify(w));
    old.close();
    store = new SqliteStore(file);
    expect(await store.aggregateTelemetryEdges(NOW - 300_000, NOW)).toEqual([
      { caller: `${TD}/a`, callee: `${TD}/b`, reporter: 'callee', callerSite: 'eu', calleeSite: 'us', windows: 1, requests: 9, denials: 2, errors: 1, bytes: 300 },
    ]);
  });

  it('cursors: round trip, and anything else refused with TESSERA_BAD_REQUEST', () => {
    const key = ['eu', `${TD}/a`, '1', `o${TD}/b`] as const;
    expect(decodeCursor(encodeCursor([...key]))).toEqual(key);
    const bad = ['', '!!!', 'a'.repeat(12_001), Buffer.from('{"a":1}').toString('base64url'), Buffer.from('["a","b","2",""]').toString('base64url'),
      Buffer.from('["a","b","0"]').toString('base64url'), Buffer.from('["a","b","0",5]').toString('base64url'), Buffer.from('not json').toString('base64url')];
    for (const c of bad) expect(() => decodeCursor(c), c.slice(0, 40)).toThrow(expect.objectContaining({ code: 'TESSERA_BAD_REQUEST' }));
  });

  it('lists an edge\'s decisions newest first with the deciding policies, without query strings or other context', async () => {
    const a = `${TD}/a`;
    const b = `${TD}/b`;
    await store.appendAudit([decision(a, b, true, {}, ['allow-orders']), decision(a, b, false, {}, []), decision(b, a, true), decision(a, `${TD}/c`, true)]);
    const res = await map.edge(a, b, 10);
    expect(res.decisions.map((d) => [d.allow, d.policies])).toEqual([[false, []], [true, ['allow-orders']]]);
    expect(res.decisions[0]).toEqual({ id: 2, ts: new Date(NOW - 30_000).toISOString(), allow: false, action: 'http:request', policies: [], method: 'GET', path: '/orders' });
    expect(JSON.stringify(res)).not.toContain('token');
    expect((await map.edge(a, b, 1)).decisions).toHaveLength(1);
    expect((await map.edge(b, b, 10)).decisions).toEqual([]);
  });
});
