/**
 * Telemetry ingestion at the control plane (POST /v1/telemetry, GET /v1/telemetry), over real
 * HTTPS + mTLS with a real SQLite store: the reporter is the caller's live SVID and only reports
 * edges it is a party to; bodies are strictly checked (400 with a stable code), bounded (413) and
 * rate limited (429 with Retry-After); accepted windows are stored (bounded table) and go to the
 * sink; refusals are audited, sampled; no body gets a 5xx (fast-check).
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TelemetryWindow } from '../../core/risk/types.js';
import type { TelemetryListResponse } from '../../core/wire/control-plane.js';
import { errorCode, joinAgent, rawJson, rawRequest, startControlPlane, type JoinedAgent, type RawResponse, type TestControlPlane } from '../../../test/support/server.js';
import { validateTelemetryWindow } from '../../core/risk/telemetry.js';

/** The ingestion endpoint's check of the i-th window of a batch: the interchange format's one rule set. */
const checkShippedWindow = (v: unknown, i: number): TelemetryWindow => validateTelemetryWindow(v, { window: i });

const TD = 'example.org';
const FRONTEND = `spiffe://${TD}/shop/frontend`;
const ORDERS = `spiffe://${TD}/shop/orders`;
const OTHER = `spiffe://${TD}/shop/other`;

function win(over: Partial<TelemetryWindow> = {}): TelemetryWindow {
  return {
    ts: '2026-12-03T10:00:05.000Z', window_s: 5, caller: FRONTEND, callee: ORDERS, caller_site: 'eu', callee_site: 'eu', reporter: 'callee', action: 'http',
    requests: 10, errors: 1, denials: 2, bytes_in: 1000, bytes_out: 5000, latency_p50_ms: 2.5, latency_p99_ms: 40, paths_distinct: 3, ...over,
  };
}

function expectError(res: RawResponse, status: number, code: string): void {
  expect({ status: res.status, code: errorCode(res) }, res.text).toEqual({ status, code });
}

const arbWindow: fc.Arbitrary<TelemetryWindow> = fc.record({
  ts: fc.integer({ min: 0, max: 4_000_000_000_000 }).map((t) => new Date(t).toISOString()),
  window_s: fc.integer({ min: 1, max: 3600 }),
  caller: fc.constantFrom(FRONTEND, ORDERS, 'spiffe://td/a/b'), callee: fc.constantFrom(ORDERS, 'spiffe://td/x'),
  caller_site: fc.stringMatching(/^[a-z0-9][a-z0-9._-]{0,20}$/), callee_site: fc.constantFrom('eu', 'unknown'),
  reporter: fc.constantFrom('caller' as const, 'callee' as const), action: fc.constantFrom('http', 'tcp'),
  requests: fc.nat(), errors: fc.nat(), denials: fc.constant(0), bytes_in: fc.nat(), bytes_out: fc.nat(),
  latency_p50_ms: fc.constant(1), latency_p99_ms: fc.double({ min: 1, max: 3_600_000, noNaN: true }), paths_distinct: fc.nat(),
}).map((w) => ({ ...w, paths_distinct: Math.min(w.paths_distinct, w.requests) }));

describe('validateTelemetryWindow on shipped windows (untrusted input)', () => {
  it('accepts every well-formed window unchanged', () => {
    fc.assert(fc.property(arbWindow, (w) => { expect(checkShippedWindow(w, 0)).toEqual(w); }), { numRuns: 300 });
  });

  it('throws only TESSERA_TELEMETRY_INVALID for anything else (random JSON, one field broken)', () => {
    fc.assert(fc.property(fc.jsonValue(), (v) => {
      try {
        checkShippedWindow(v, 0);
      } catch (err) {
        expect((err as { code?: string }).code).toBe('TESSERA_TELEMETRY_INVALID');
      }
    }), { numRuns: 500 });
    const broken = fc.tuple(arbWindow, fc.constantFrom<keyof TelemetryWindow | 'extra'>('ts', 'window_s', 'caller', 'callee_site', 'reporter', 'action', 'requests', 'bytes_out', 'latency_p99_ms', 'first_seen', 'extra'),
      fc.oneof(fc.string(), fc.integer({ min: -5, max: -1 }), fc.double(), fc.constant(null), fc.constant({}), fc.constant(1e300)));
    fc.assert(fc.property(broken, ([w, field, value]) => {
      const bad = { ...w, [field]: value } as Record<string, unknown>;
      let ok = true;
      try {
        checkShippedWindow(bad, 7);
      } catch (err) {
        ok = false;
        expect((err as { code?: string; message: string }).code).toBe('TESSERA_TELEMETRY_INVALID');
        expect((err as Error).message).toMatch(/^window 7: /);
      }
      // Some replacements are valid values (a string site, a double latency...): then the result is the window as given.
      if (ok) expect(checkShippedWindow(bad, 7)).toMatchObject({ caller: w.caller });
    }), { numRuns: 500 });
  });

  it('names the problem', () => {
    expect(() => checkShippedWindow(win({ denials: 11 }), 0)).toThrow(/denials/);
    expect(() => checkShippedWindow(win({ latency_p50_ms: 50 }), 0)).toThrow(/latency_p99_ms/);
    expect(() => checkShippedWindow({ ...win(), ts: '2026-12-03 10:00:05' }, 0)).toThrow(/"ts"/);
    expect(() => checkShippedWindow({ ...win(), caller: 'https://x' }, 0)).toThrow(/"caller"/);
    expect(checkShippedWindow({ ...win(), action: undefined }, 0).action).toBeUndefined();
    expect(() => checkShippedWindow(win({ paths_distinct: 11 }), 0)).toThrow(/paths_distinct/);
    expect(() => checkShippedWindow(win({ latency_p99_ms: 3_600_001 }), 0)).toThrow(/latency_p99_ms/);
    expect(() => checkShippedWindow(win({ action: 'unseal', reporter: 'caller' }), 0)).toThrow(/"reporter"/);
    // A failure is counted when it happens: a connection opened in an earlier window may reset in this one.
    expect(checkShippedWindow(win({ requests: 0, errors: 1, denials: 0, paths_distinct: 0 }), 0).errors).toBe(1);
  });
});

describe('POST /v1/telemetry and GET /v1/telemetry', () => {
  let t: TestControlPlane;
  let frontend: JoinedAgent;
  let orders: JoinedAgent;
  let other: JoinedAgent;
  const sunk: { reporter: string; n: number }[] = [];

  const ship = (who: JoinedAgent, json: unknown): Promise<RawResponse> =>
    rawJson(t.cp.url, { path: '/v1/telemetry', json, ca: t.adminTls.ca, cert: who.certPem, key: who.keyPem });
  const list = (q: string): Promise<TelemetryListResponse> => t.admin.call<TelemetryListResponse>('GET', `/v1/telemetry?${q}`);

  beforeAll(async () => {
    t = await startControlPlane({ trustDomain: TD, telemetry: { rateLimit: { perSecond: 1, burst: 1000 }, maxRows: 50 } });
    frontend = await joinAgent(t.cp, t.admin, FRONTEND);
    orders = await joinAgent(t.cp, t.admin, ORDERS);
    other = await joinAgent(t.cp, t.admin, OTHER);
    t.cp.ctx.telemetry.onWindows((w, reporter) => sunk.push({ reporter, n: w.length }));
  });

  afterAll(async () => {
    await t?.close();
    if (t) expect(t.logs.filter((l) => l.includes('"internal error"'))).toEqual([]);
  });

  it('stores the windows of both ends, hands them to the sink, and lists them for the admin only', async () => {
    const res = await ship(orders, { windows: [win(), win({ ts: '2026-12-03T10:00:10.000Z' })] });
    expect(res.status, res.text).toBe(200);
    expect(res.json).toEqual({ accepted: 2 });
    const res2 = await ship(frontend, { windows: [win({ reporter: 'caller', action: 'tcp', first_seen: true })], dropped: 3 });
    expect(res2.status, res2.text).toBe(200);
    expect(sunk).toEqual([{ reporter: ORDERS, n: 2 }, { reporter: FRONTEND, n: 1 }]);
    expect(t.cp.ctx.telemetry.unattributed).toBe(3);
    const got = await list(`identity=${encodeURIComponent(ORDERS)}&limit=10`);
    expect(got.windows.map((w) => [w.reporter, w.reported_by, w.ts])).toEqual([
      ['callee', ORDERS, '2026-12-03T10:00:05.000Z'], ['callee', ORDERS, '2026-12-03T10:00:10.000Z'], ['caller', FRONTEND, '2026-12-03T10:00:05.000Z']]);
    expect(got.windows[2]).toMatchObject({ ...win({ reporter: 'caller', action: 'tcp', first_seen: true }) });
    // Paging forward and by time.
    expect((await list(`after=${got.windows[0]!.id}&limit=1`)).windows.map((w) => w.id)).toEqual([got.windows[1]!.id]);
    expect((await list(`since=${Date.parse('2026-12-03T10:00:10.000Z')}`)).windows).toHaveLength(1);
    expect((await list(`identity=${encodeURIComponent(OTHER)}`)).windows).toEqual([]);
    expectError(await rawRequest(t.cp.url, { path: '/v1/telemetry', ca: t.adminTls.ca, cert: orders.certPem, key: orders.keyPem }), 403, 'TESSERA_FORBIDDEN');
    expectError(await rawRequest(t.cp.url, { path: '/v1/telemetry?identity=nope', ca: t.adminTls.ca, cert: t.adminTls.cert, key: t.adminTls.key }), 400, 'TESSERA_BAD_REQUEST');
    expectError(await rawRequest(t.cp.url, { path: '/v1/telemetry?limit=0', ca: t.adminTls.ca, cert: t.adminTls.cert, key: t.adminTls.key }), 400, 'TESSERA_BAD_REQUEST');
  });

  it('refuses a window about an edge the reporter is not a party to (403), nothing of the batch stored; refusals audited, sampled', async () => {
    const before = (await list('limit=1000')).windows.length;
    expectError(await ship(other, { windows: [win()] }), 403, 'TESSERA_FORBIDDEN');
    expectError(await ship(orders, { windows: [win({ caller: OTHER, callee: FRONTEND })] }), 403, 'TESSERA_FORBIDDEN');
    // The callee reporting as the caller of the edge: it is the callee, not the caller.
    expectError(await ship(orders, { windows: [win(), win({ reporter: 'caller' })] }), 403, 'TESSERA_FORBIDDEN');
    expectError(await ship(frontend, { windows: [win({ reporter: 'callee' })] }), 403, 'TESSERA_FORBIDDEN');
    // Unseal windows: only from a key server a secret-policy record names (none here), as the callee.
    const unsealRefused = await ship(orders, { windows: [win(), win({ action: 'unseal' })] });
    expectError(unsealRefused, 403, 'TESSERA_FORBIDDEN');
    expect(unsealRefused.text).toMatch(/key server/);
    expectError(await ship(frontend, { windows: [win({ action: 'unseal', reporter: 'caller' })] }), 400, 'TESSERA_TELEMETRY_INVALID');
    expect((await list('limit=1000')).windows.length).toBe(before);
    // A burst of refusals: at most one audit record per reporter, code and second.
    for (let i = 0; i < 10; i++) await ship(other, { windows: [win()] });
    const audit = (await t.admin.call<{ records: { actor: string; action: string; outcome: string; code: string; detail: Record<string, unknown> }[] }>('GET', '/v1/audit?action=telemetry.ship&limit=1000')).records;
    const refusals = audit.filter((r) => r.actor === OTHER);
    expect(refusals.length).toBeGreaterThanOrEqual(1);
    expect(refusals.length).toBeLessThan(11);
    expect(refusals[0]).toMatchObject({ outcome: 'denied', code: 'TESSERA_FORBIDDEN' });
    expect(String(refusals[0]!.detail.reason)).toMatch(/party/);
    // Accepted batches are not audited.
    expect(audit.filter((r) => r.outcome === 'success')).toEqual([]);
  });

  it('refuses malformed bodies (400), oversized ones (413) and a revoked reporter (403)', async () => {
    expectError(await ship(orders, []), 400, 'TESSERA_BAD_REQUEST');
    expectError(await ship(orders, { windows: 'x' }), 400, 'TESSERA_BAD_REQUEST');
    expectError(await ship(orders, { windows: [], extra: 1 }), 400, 'TESSERA_BAD_REQUEST');
    expectError(await ship(orders, { windows: [], dropped: -1 }), 400, 'TESSERA_BAD_REQUEST');
    expectError(await ship(orders, { windows: Array.from({ length: 1001 }, () => win()) }), 400, 'TESSERA_BAD_REQUEST');
    expectError(await ship(orders, { windows: [win(), { ...win(), requests: -1 }] }), 400, 'TESSERA_TELEMETRY_INVALID');
    expectError(await ship(orders, { windows: [{ ...win(), secret: 'x' }] }), 400, 'TESSERA_TELEMETRY_INVALID');
    expectError(await ship(orders, { windows: [win({ caller_site: 'x'.repeat(65) })] }), 400, 'TESSERA_TELEMETRY_INVALID');
    // The format's cross-field rules (the same function as `tessera risk replay`'s parser).
    expectError(await ship(orders, { windows: [win({ paths_distinct: 11 })] }), 400, 'TESSERA_TELEMETRY_INVALID');
    expectError(await ship(orders, { windows: [win({ denials: 11 })] }), 400, 'TESSERA_TELEMETRY_INVALID');
    expectError(await ship(orders, { windows: [win({ latency_p50_ms: 50 })] }), 400, 'TESSERA_TELEMETRY_INVALID');
    expectError(await ship(orders, { windows: [win({ caller_site: '.eu' })] }), 400, 'TESSERA_TELEMETRY_INVALID');
    expectError(await ship(orders, { windows: [win({ action: 'udp' })] }), 400, 'TESSERA_TELEMETRY_INVALID');
    expectError(await ship(orders, { windows: [win({ ts: '2026-02-30T10:00:00Z' })] }), 400, 'TESSERA_TELEMETRY_INVALID');
    expectError(await ship(orders, { windows: [win({ caller: `${FRONTEND}/${'a'.repeat(1_100_000)}` })] }), 413, 'TESSERA_PAYLOAD_TOO_LARGE');
    const raw = await rawRequest(t.cp.url, { method: 'POST', path: '/v1/telemetry', headers: { 'content-type': 'application/json' }, body: '{"windows": [', ca: t.adminTls.ca, cert: orders.certPem, key: orders.keyPem });
    expectError(raw, 400, 'TESSERA_BAD_REQUEST');
    const gone = await joinAgent(t.cp, t.admin, `spiffe://${TD}/shop/gone`);
    const ok = await ship(gone, { windows: [win({ callee: gone.spiffeId })] });
    expect(ok.status, ok.text).toBe(200);
    await t.admin.call('POST', `/v1/entries/${gone.entryId}/revoke`, { reason: 'test' });
    expectError(await ship(gone, { windows: [win({ callee: gone.spiffeId })] }), 403, 'TESSERA_IDENTITY_REVOKED');
  });

  it('no body gets a 5xx (fast-check)', async () => {
    await fc.assert(fc.asyncProperty(fc.oneof(fc.jsonValue(), fc.record({ windows: fc.array(fc.oneof(fc.jsonValue(), arbWindow), { maxLength: 3 }) })), async (body) => {
      const res = await ship(orders, body);
      expect(res.status, res.text).toBeLessThan(500);
    }), { numRuns: 40 });
  });

  it('rate limits each identity (429 with Retry-After) and keeps the table bounded', async () => {
    // Burst 1000, 1/s: the first 1000 windows pass (in batches), the next batch is refused.
    let status = 200;
    let res: RawResponse | undefined;
    for (let i = 0; i < 3 && status === 200; i++) {
      res = await ship(frontend, { windows: Array.from({ length: 500 }, (_, k) => win({ reporter: 'caller', requests: k + 10 })) });
      status = res.status;
    }
    expectError(res!, 429, 'TESSERA_RATE_LIMITED');
    expect(Number(res!.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    // maxRows 50: the table holds the newest 50.
    const rows = (await list('limit=10000')).windows;
    expect(rows.length).toBe(50);
    expect(rows.at(-1)!.requests).toBe(509);
  });
});
