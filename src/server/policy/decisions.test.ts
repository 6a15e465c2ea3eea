/**
 * Decision ingestion that cannot be forged, and dry runs that cannot be flooded (issue 9, findings
 * 3 and 8), over real HTTPS + mTLS with a real SQLite store:
 *
 * - the enforcer of a shipped record is the caller (a live entry), never the body; an enforcer may
 *   only claim what it decides (its own resource, the secret policies it serves, its refusals);
 * - each identity is rate limited (429 TESSERA_RATE_LIMITED with Retry-After);
 * - a dry run replays a sample shared fairly between enforcers and, within one, between principals,
 *   and says how many decisions it replayed and over which time span;
 * - records the replay cannot use (older, larger, malformed rows) are skipped, never fatal;
 * - no body on POST /v1/decisions gets a 5xx (fast-check).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DecisionLog } from '../../agent/enforce/decision-log.js';
import { randomScalar, ready, split } from '../../core/secrets/index.js';
import {
  agentClient,
  errorCode,
  joinAgent,
  rawJson,
  rawRequest,
  startControlPlane,
  type JoinedAgent,
  type RawResponse,
  type TestControlPlane,
} from '../../../test/support/server.js';

const TD = 'example.org';
const FRONTEND = `spiffe://${TD}/shop/frontend`;
const ORDERS = `spiffe://${TD}/shop/orders`;
const ATTACKER = `spiffe://${TD}/shop/intruder`;
const KEYSERVER = `spiffe://${TD}/keyserver/1`;

const READ_ONLY: Record<string, string> = {
  'orders.cedar': `@id("frontend-reads-orders")
permit (principal, action == Tessera::Action::"http:request", resource)
when { principal has app && principal.app == "shop-frontend" && resource has app && resource.app == "orders" && context.method == "GET" };
`,
};
const READ_WRITE: Record<string, string> = {
  'orders.cedar': `${READ_ONLY['orders.cedar']}
@id("frontend-creates-orders")
permit (principal, action == Tessera::Action::"http:request", resource)
when { principal has app && principal.app == "shop-frontend" && resource has app && resource.app == "orders" && context.method == "POST" && context.path == "/orders" };
`,
};

interface AuditRow { id: number; actor: string; action: string; target: string; outcome: string; code: string; detail: Record<string, unknown> }
interface Flip { principal: string; action: string; resource: string; before: string; after: string; count: number; context: Record<string, unknown> }
interface DryRun { replayed: number; skipped: number; truncated: boolean; enforcers: number; span: { from: string; to: string } | null; flipped: number; flip_groups: number; flips: Flip[] }

function ctx(method: string, path: string): Record<string, string | number> {
  return { method, path, site: 'cloud-eu', time: 1767258000, hour: 9, risk: 0 };
}

function decision(principal: string, resource: string, method: string, path: string, allow: boolean, ts = Date.now()) {
  return { ts, principal, action: 'http:request', resource, context: ctx(method, path), allow, reasons: [] as string[] };
}

function expectError(res: RawResponse, status: number, code: string, what = ''): void {
  expect({ what, status: res.status, code: errorCode(res) }, res.text).toEqual({ what, status, code });
}

/** Ships as `who`; `who` undefined: the admin credential. */
function ship(t: TestControlPlane, who: JoinedAgent | undefined, body: unknown): Promise<RawResponse> {
  const cred = who ? { cert: who.certPem, key: who.keyPem } : { cert: t.adminTls.cert, key: t.adminTls.key };
  return rawJson(t.cp.url, { path: '/v1/decisions', json: body, ca: t.adminTls.ca, ...cred });
}

async function dryRun(t: TestControlPlane, files: Record<string, string>): Promise<DryRun> {
  const res = await rawJson(t.cp.url, { path: '/v1/policies', json: { files, reason: 'dry run', dry_run: true }, ca: t.adminTls.ca, cert: t.adminTls.cert, key: t.adminTls.key });
  expect(res.status, res.text).toBe(200);
  return res.json as DryRun;
}

async function audit(t: TestControlPlane, query: string): Promise<AuditRow[]> {
  return (await t.admin.call<{ records: AuditRow[] }>('GET', `/v1/audit?limit=10000&${query}`)).records;
}

describe('decision ingestion: an enforcer ships only what it decided', () => {
  let t: TestControlPlane;
  let frontend: JoinedAgent;
  let orders: JoinedAgent;
  let keyserver: JoinedAgent;

  beforeAll(async () => {
    t = await startControlPlane({ trustDomain: TD });
    frontend = await joinAgent(t.cp, t.admin, FRONTEND, { entry: { attributes: { app: 'shop-frontend', site: 'cloud-eu' } } });
    orders = await joinAgent(t.cp, t.admin, ORDERS, { entry: { attributes: { app: 'orders', site: 'cloud-eu' } } });
    keyserver = await joinAgent(t.cp, t.admin, KEYSERVER);
    await ready();
    const sharing = split(randomScalar(), 2, 2);
    await t.admin.call('POST', '/v1/secret-policies', {
      id: 'payments', epoch: 1, t: 2, n: 2, commitments: sharing.commitments.map((p) => Buffer.from(p).toString('base64url')),
      servers: [{ url: 'https://ks1.example:8443', spiffeId: KEYSERVER, index: 1 }, { url: 'https://ks2.example:8443', spiffeId: `spiffe://${TD}/keyserver/2`, index: 2 }],
    });
  });

  afterAll(async () => {
    await t?.close();
    expect(t.logs.filter((l) => l.includes('"internal error"'))).toEqual([]);
  });

  it('records the caller as the enforcer (actor and detail.enforcer); the body cannot name one', async () => {
    const res = await ship(t, orders, { decisions: [decision(FRONTEND, ORDERS, 'GET', '/orders/enforcer-check', true)] });
    expect(res.status, res.text).toBe(200);
    const rec = (await audit(t, 'action=decision')).find((r) => (r.detail.context as { path?: string }).path === '/orders/enforcer-check');
    expect(rec).toMatchObject({ actor: ORDERS, target: ORDERS, detail: { enforcer: ORDERS, principal: FRONTEND } });
    // No field of the body or of a record names the enforcer.
    expectError(await ship(t, orders, { decisions: [], enforcer: FRONTEND }), 400, 'TESSERA_BAD_REQUEST');
    expectError(await ship(t, orders, { decisions: [{ ...decision(FRONTEND, ORDERS, 'GET', '/x', true), enforcer: FRONTEND }] }), 400, 'TESSERA_BAD_REQUEST');
  });

  it('refuses a record about another workload\'s calls (dropped, counted, audited as decision.refused); the rest of the batch is kept', async () => {
    const before = (await audit(t, 'action=decision')).length;
    const forged: [string, unknown][] = [
      ['http:request about orders, shipped by the frontend', decision(FRONTEND, ORDERS, 'POST', '/orders', true)],
      ['tcp:connect about orders', { ...decision(FRONTEND, ORDERS, 'GET', '/', true), action: 'tcp:connect', context: { site: 'cloud-eu', time: 1, hour: 1, risk: 0 } }],
      ['a handshake refusal at orders', { ts: Date.now(), principal: '-', action: 'tls:handshake', resource: ORDERS, context: { code: 'TESSERA_AUTH_INVALID', reason: 'x' }, allow: false, reasons: [] }],
      ['a bundle refusal at orders', { ts: Date.now(), principal: '-', action: 'policy:bundle', resource: ORDERS, context: {}, allow: false, reasons: [] }],
      ['an upstream of another trust domain', { ts: Date.now(), principal: '-', action: 'tls:upstream', resource: 'spiffe://other.org/shop/orders', context: {}, allow: false, reasons: [] }],
      ['a secret:unseal decision of a key server it is not', { ...decision(FRONTEND, `spiffe://${TD}/tessera/secret/payments`, 'GET', '/', true), action: 'secret:unseal', context: {} }],
      ['a credential:derive decision (the control plane makes those)', { ...decision(FRONTEND, FRONTEND, 'GET', '/', true), action: 'credential:derive', context: {} }],
    ];
    for (const [what, record] of forged) {
      // With a good record of its own: that one is kept.
      const res = await ship(t, frontend, { decisions: [decision(ORDERS, FRONTEND, 'GET', `/own/${what}`, false), record] });
      expect({ what, status: res.status, json: res.json }).toEqual({ what, status: 200, json: { accepted: 1, refused: 1 } });
    }
    const stored = (await audit(t, 'action=decision')).slice(before);
    expect(stored).toHaveLength(forged.length);
    for (const r of stored) expect(r).toMatchObject({ actor: FRONTEND, target: FRONTEND, detail: { enforcer: FRONTEND, principal: ORDERS } });
    const refusals = (await audit(t, 'action=decision.refused')).filter((r) => r.actor === FRONTEND);
    expect(refusals).toHaveLength(forged.length);
    expect(refusals[0]).toMatchObject({ outcome: 'denied', code: 'TESSERA_FORBIDDEN', target: ORDERS, detail: { enforcer: FRONTEND, count: 1, reason: expect.stringContaining('only about itself') } });
  });

  it('takes what the caller may claim: its own calls and refusals, upstreams of its trust domain, the secret policies it serves', async () => {
    const now = Date.now();
    const res = await ship(t, frontend, {
      decisions: [
        decision(ORDERS, FRONTEND, 'GET', '/from-orders', false, now),
        { ts: now, principal: '-', action: 'tls:handshake', resource: FRONTEND, context: { code: 'TESSERA_AUTH_REQUIRED', reason: 'no certificate' }, allow: false, reasons: [] },
        { ts: now, principal: '-', action: 'tls:upstream', resource: ORDERS, context: { code: 'TESSERA_PROXY_PEER_IDENTITY', reason: 'wrong id' }, allow: false, reasons: [] },
      ],
    });
    expect(res.json, res.text).toEqual({ accepted: 3, refused: 0 });
    expect((await audit(t, 'action=upstream.refused'))[0]).toMatchObject({ actor: FRONTEND, target: ORDERS, detail: { enforcer: FRONTEND } });
    const unseal = { ts: now, principal: FRONTEND, action: 'secret:unseal', resource: `spiffe://${TD}/tessera/secret/payments`, context: { site: 'x', time: 1, hour: 1, risk: 0 }, allow: true, reasons: [] };
    expect((await ship(t, keyserver, { decisions: [unseal] })).json).toEqual({ accepted: 1, refused: 0 });
    // Not a policy it serves, not a secret resource at all, or a malformed policy name.
    for (const resource of [`spiffe://${TD}/tessera/secret/unknown`, ORDERS, KEYSERVER, `spiffe://${TD}/tessera/secret/a/b`]) {
      expect((await ship(t, keyserver, { decisions: [{ ...unseal, resource }] })).json, resource).toEqual({ accepted: 0, refused: 1 });
    }
  });

  it('refuses callers without a live registration entry: the admin, and an agent whose entry was deleted', async () => {
    expectError(await ship(t, undefined, { decisions: [] }), 403, 'TESSERA_IDENTITY_REVOKED');
    const gone = await joinAgent(t.cp, t.admin, `spiffe://${TD}/shop/gone`);
    expect((await ship(t, gone, { decisions: [] })).status).toBe(200);
    await t.admin.call('DELETE', `/v1/entries/${gone.entryId}`);
    expectError(await ship(t, gone, { decisions: [decision(ORDERS, gone.spiffeId, 'GET', '/', false)] }), 403, 'TESSERA_IDENTITY_REVOKED');
    expectError(await rawJson(t.cp.url, { path: '/v1/decisions', json: { decisions: [] }, ca: t.adminTls.ca }), 401, 'TESSERA_AUTH_REQUIRED');
  });

  it('refuses records larger than an agent makes (400): long or many context names, too many characters', async () => {
    const base = decision(FRONTEND, ORDERS, 'GET', '/', false);
    const cases: [string, unknown][] = [
      ['a context name of 1000 KB', { ...base, context: { ['k'.repeat(1000 * 1024)]: 'v' } }],
      ['a context name of 65 characters', { ...base, context: { ['k'.repeat(65)]: 'v' } }],
      ['17 context entries', { ...base, context: Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, i])) }],
      ['3 strings of 2048 characters', { ...base, context: { a: 'x'.repeat(2048), b: 'x'.repeat(2048), c: 'x'.repeat(2048) } }],
      ['a context null', { ...base, context: null }],
    ];
    for (const [what, record] of cases) expectError(await ship(t, orders, { decisions: [record] }), 400, 'TESSERA_BAD_REQUEST', what);
  });

  it('no odd body gets a 5xx (fast-check)', async () => {
    const scalar = fc.oneof(fc.string({ maxLength: 40 }), fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.constant(ORDERS), fc.constant('-'));
    // `undefined`: the field is left out of the JSON.
    const odd = fc.oneof(scalar, fc.constant(undefined), fc.jsonValue({ maxDepth: 3 }), fc.array(scalar, { maxLength: 3 }), fc.dictionary(fc.string({ maxLength: 70 }), scalar, { maxKeys: 20 }));
    // Mostly well-formed fields, so that each odd one is reached by the checks after the others.
    const field = <T,>(good: fc.Arbitrary<T>, bad: fc.Arbitrary<unknown> = odd) => fc.oneof({ arbitrary: good, weight: 4 }, { arbitrary: bad, weight: 1 });
    const oddContext = fc.oneof(odd, fc.constantFrom(null, [], 'GET', {}, { a: null }, { a: [] }, { ['k'.repeat(70)]: 1 }, { '': 1 }, { a: 'x'.repeat(2049) }));
    const record = fc.record({
      ts: field(fc.constant(Date.now())), principal: field(fc.constantFrom(FRONTEND, '-')),
      action: field(fc.constantFrom('http:request', 'tcp:connect', 'secret:unseal', 'credential:derive', 'tls:handshake', 'tls:upstream', 'policy:bundle')),
      resource: field(fc.constantFrom(ORDERS, `spiffe://${TD}/tessera/secret/payments`)),
      context: field(fc.constant(ctx('GET', '/')), oddContext), allow: field(fc.boolean()), reasons: field(fc.constant([])),
    });
    const batch = fc.oneof({ arbitrary: fc.record({ decisions: fc.array(record, { minLength: 1, maxLength: 4 }) }), weight: 4 }, fc.record({ decisions: odd }), odd);
    await fc.assert(fc.asyncProperty(batch, async (b) => {
      const res = await ship(t, orders, b);
      expect(res.status, res.text).toBeLessThan(500);
      if (res.status !== 200) expect(errorCode(res)).toMatch(/^TESSERA_/);
    }), { numRuns: 300 });
    // Not JSON at all.
    const raw = await rawRequest(t.cp.url, { method: 'POST', path: '/v1/decisions', headers: { 'content-type': 'application/json' }, body: '{"decisions": [', ca: t.adminTls.ca, cert: orders.certPem, key: orders.keyPem });
    expectError(raw, 400, 'TESSERA_BAD_REQUEST');
  }, 120_000);
});

describe('decision ingestion: per-identity rate limit', () => {
  let t: TestControlPlane;
  let orders: JoinedAgent;
  let frontend: JoinedAgent;

  beforeAll(async () => {
    t = await startControlPlane({ trustDomain: TD, decisions: { rateLimit: { perSecond: 1, burst: 1000 } } });
    orders = await joinAgent(t.cp, t.admin, ORDERS);
    frontend = await joinAgent(t.cp, t.admin, FRONTEND);
  });

  afterAll(async () => {
    await t?.close();
  });

  it('answers 429 TESSERA_RATE_LIMITED with Retry-After once an identity\'s records exceed its bucket; others are unaffected', async () => {
    const full = Array.from({ length: 1000 }, (_, i) => decision(FRONTEND, ORDERS, 'GET', `/orders/${i}`, false));
    expect((await ship(t, orders, { decisions: full })).status).toBe(200);
    const limited = await ship(t, orders, { decisions: full.slice(0, 10) });
    expectError(limited, 429, 'TESSERA_RATE_LIMITED');
    expect(Number(limited.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    // Another enforcer has its own bucket.
    expect((await ship(t, frontend, { decisions: [decision(ORDERS, FRONTEND, 'GET', '/', false)] })).status).toBe(200);
    const refused = await audit(t, 'action=decision.ship&outcome=denied');
    expect(refused.some((r) => r.actor === ORDERS && r.code === 'TESSERA_RATE_LIMITED')).toBe(true);
  });

  it('is backpressure for the agent\'s decision log: a 429 batch waits on disk (not dropped, not rejected)', async () => {
    const stock = await joinAgent(t.cp, t.admin, `spiffe://${TD}/shop/stock`);
    const client = agentClient(t.cp, stock);
    const dir = mkdtempSync(join(tmpdir(), 'tessera-decision-log-'));
    const log = new DecisionLog({ dir, allowSampleRate: 1, flushMs: 50, maxRetryMs: 100, ship: async (records) => { await client.call('POST', '/v1/decisions', { decisions: records }); } });
    try {
      const rec = () => ({ ...decision(FRONTEND, stock.spiffeId, 'GET', '/', false), reasons: [] });
      for (let i = 0; i < 1000; i++) log.record(rec());
      await log.flush();
      expect(log.shipped).toBe(1000);
      for (let i = 0; i < 10; i++) log.record(rec());
      await log.flush();
      expect({ shipped: log.shipped, rejected: log.rejected, dropped: log.dropped }).toEqual({ shipped: 1000, rejected: 0, dropped: 0 });
      expect(log.spilledBytes).toBeGreaterThan(0);
    } finally {
      await log.stop();
      client.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('dry runs replay a sample no identity can flood', () => {
  let t: TestControlPlane;
  let orders: JoinedAgent;
  let attacker: JoinedAgent;

  beforeAll(async () => {
    t = await startControlPlane({ trustDomain: TD, decisions: { rateLimit: { perSecond: 1000, burst: 100_000 }, replay: { perEnforcer: 1000, maxTotal: 10_000 } } });
    await t.admin.call('POST', '/v1/entries', { spiffe_id: FRONTEND, attributes: { app: 'shop-frontend', site: 'cloud-eu' } });
    orders = await joinAgent(t.cp, t.admin, ORDERS, { entry: { attributes: { app: 'orders', site: 'cloud-eu' } } });
    attacker = await joinAgent(t.cp, t.admin, ATTACKER, { entry: { attributes: { app: 'orders', site: 'cloud-eu' } } });
    const applied = await rawJson(t.cp.url, { path: '/v1/policies', json: { files: READ_ONLY, reason: 'v1' }, ca: t.adminTls.ca, cert: t.adminTls.cert, key: t.adminTls.key });
    expect(applied.status, applied.text).toBe(201);
  });

  afterAll(async () => {
    await t?.close();
    expect(t.logs.filter((l) => l.includes('"internal error"'))).toEqual([]);
  });

  it('5000 decisions shipped by one identity do not push out another enforcer\'s decision: the flip is reported, with count and time span', async () => {
    const realTs = Date.parse('2026-12-01T10:00:00Z');
    expect((await ship(t, orders, { decisions: [decision(FRONTEND, ORDERS, 'POST', '/orders', false, realTs)] })).status).toBe(200);
    // The flood: 5000 newer records the attacker may ship about itself, every one a flip-to-be
    // (recorded as denied, allowed under the candidate) in its own group.
    for (let b = 0; b < 5; b++) {
      const batch = Array.from({ length: 1000 }, (_, i) => decision(FRONTEND, ATTACKER, 'POST', '/orders', false, realTs + 1000 + b * 1000 + i));
      const res = await ship(t, attacker, { decisions: batch });
      expect(res.status, res.text).toBe(200);
    }
    const res = await dryRun(t, READ_WRITE);
    const real = res.flips.find((f) => f.resource === ORDERS);
    expect(real).toMatchObject({ principal: FRONTEND, before: 'deny', after: 'allow', count: 1, context: { method: 'POST', path: '/orders' } });
    // The attacker's share is bounded by the per-enforcer limit.
    expect(res.flips.find((f) => f.resource === ATTACKER)?.count).toBe(1000);
    expect(res).toMatchObject({ replayed: 1001, enforcers: 2, flipped: 1001, skipped: 0, truncated: false });
    // The span: from the real decision to the attacker's newest.
    expect(res.span).toEqual({ from: new Date(realTs).toISOString(), to: new Date(realTs + 1000 + 4 * 1000 + 999).toISOString() });
  });

  it('within one enforcer, a caller flooding it with denied calls does not push out another caller\'s decisions', async () => {
    // Orders really denied the intruder 3000 times, after one decision about the frontend.
    const ts = Date.now();
    expect((await ship(t, orders, { decisions: [decision(FRONTEND, ORDERS, 'POST', '/orders', false, ts)] })).status).toBe(200);
    for (let b = 0; b < 3; b++) {
      const batch = Array.from({ length: 1000 }, (_, i) => decision(ATTACKER, ORDERS, 'DELETE', `/orders/${b}-${i}`, false, ts + 1 + i));
      expect((await ship(t, orders, { decisions: batch })).status).toBe(200);
    }
    const res = await dryRun(t, READ_WRITE);
    // Both of orders' frontend decisions are still replayed (and flip); orders' share is 1000.
    expect(res.flips.find((f) => f.resource === ORDERS && f.principal === FRONTEND)?.count).toBe(2);
    expect(res.replayed).toBe(2000);
  });

  it('skips stored rows a replay cannot use (larger than ingestion allows, malformed) instead of failing', async () => {
    const ts = Date.now();
    // Rows as an older control plane may have stored them (straight into the store).
    await t.cp.store.appendAudit([
      { ts, actor: ORDERS, action: 'decision', target: ORDERS, outcome: 'denied', code: 'DENY', principal: FRONTEND, detail: { principal: FRONTEND, action: 'http:request', context: { ['k'.repeat(200_000)]: 'v' }, reasons: [] } },
      { ts, actor: ORDERS, action: 'decision', target: ORDERS, outcome: 'denied', code: 'DENY', principal: FRONTEND, detail: { principal: FRONTEND, action: 'http:fly', context: {} } },
      { ts, actor: ORDERS, action: 'decision', target: ORDERS, outcome: 'denied', code: 'DENY', principal: FRONTEND, detail: { principal: FRONTEND, action: 'http:request', context: [1, 2] } },
      { ts, actor: ORDERS, action: 'decision', target: ORDERS, outcome: 'denied', code: 'DENY', detail: { principal: 42 } },
    ]);
    const res = await dryRun(t, READ_WRITE);
    expect(res.skipped).toBe(4);
    expect(res.flips.find((f) => f.resource === ORDERS && f.principal === FRONTEND)?.count).toBe(2);
  });
});
