/**
 * The policy plane of the control plane over real HTTPS + mTLS with a real SQLite store:
 * versioned policy administration (apply, history, show, rollback, dry run), the signed bundle
 * agents long-poll, and the decision records they ship. Every refusal is checked for its HTTP
 * status and its stable error code.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyPolicyBundle, type PolicyBundle, type SignedPolicyBundle } from '../../core/policy/bundle.js';
import { pemDecodeAll } from '../../core/x509.js';
import {
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
const ADMIN_ID = `spiffe://${TD}/tessera/admin`;
const FRONTEND = `spiffe://${TD}/shop/frontend`;
const ORDERS = `spiffe://${TD}/shop/orders`;

/** The frontend may GET /orders/* on orders. */
const READ_ONLY: Record<string, string> = {
  'shop/orders.cedar': `// Read-only access for the storefront.
@id("frontend-reads-orders")
permit (principal, action == Tessera::Action::"http:request", resource)
when {
  principal has app && principal.app == "shop-frontend" && resource has app && resource.app == "orders" &&
  context.method == "GET" && context.path like "/orders/*"
};
`,
  'residency.cedar': `@id("same-site")
forbid (principal, action, resource)
unless { principal has site && resource has site && principal.site == resource.site };
`,
};

/** The same, plus POST /orders. */
const READ_WRITE: Record<string, string> = {
  ...READ_ONLY,
  'shop/orders.cedar': `${READ_ONLY['shop/orders.cedar']}
@id("frontend-creates-orders")
permit (principal, action == Tessera::Action::"http:request", resource)
when {
  principal has app && principal.app == "shop-frontend" && resource has app && resource.app == "orders" &&
  context.method == "POST" && context.path == "/orders"
};
`,
};

interface Version { version: number; createdAt: string; author: string; reason: string; hash: string }
interface History { versions: Version[]; bundle_version: number }
interface BundleAnswer { version: number; changed: boolean; bundle: SignedPolicyBundle }
interface AuditRow { id: number; actor: string; action: string; target: string; outcome: string; code: string; detail: Record<string, unknown> }

function httpContext(method: string, path: string): Record<string, string | number> {
  return { method, path, site: 'cloud-eu', time: 1767258000, hour: 9, risk: 0 };
}

/** Helpers bound to one control plane: admin, agent and anonymous requests with raw status codes. */
function clientsFor(t: TestControlPlane, trust: () => string = () => t.adminTls.ca) {
  const url = t.cp.url;
  const as = (who: { cert: string; key: string } | undefined) => ({
    get: (path: string): Promise<RawResponse> => rawRequest(url, { path, ca: trust(), ...(who ?? {}) }),
    post: (path: string, json: unknown): Promise<RawResponse> => rawJson(url, { path, json, ca: trust(), ...(who ?? {}) }),
  });
  return {
    admin: as({ cert: t.adminTls.cert, key: t.adminTls.key }),
    anon: as(undefined),
    agent: (a: JoinedAgent) => as({ cert: a.certPem, key: a.keyPem }),
  };
}

function expectError(res: RawResponse, status: number, code: string): void {
  expect({ status: res.status, code: errorCode(res) }, res.text).toEqual({ status, code });
}

async function trustedCas(t: TestControlPlane, ca = t.adminTls.ca): Promise<Buffer[]> {
  const pem = await rawRequest(t.cp.url, { path: '/v1/bundle?format=pem', ca });
  expect(pem.status).toBe(200);
  const ders = pemDecodeAll(pem.text, 'CERTIFICATE');
  expect(ders.length).toBeGreaterThan(0);
  return ders;
}

describe('policy administration, bundle and decisions', () => {
  let t: TestControlPlane;
  let c: ReturnType<typeof clientsFor>;
  let frontend: JoinedAgent;
  let orders: JoinedAgent;
  let v1: { version: number; hash: string; bundle_version: number };

  beforeAll(async () => {
    t = await startControlPlane({ trustDomain: TD });
    c = clientsFor(t);
    frontend = await joinAgent(t.cp, t.admin, FRONTEND, { entry: { attributes: { app: 'shop-frontend', site: 'cloud-eu', env: 'prod' } } });
    orders = await joinAgent(t.cp, t.admin, ORDERS, { entry: { attributes: { app: 'orders', site: 'cloud-eu', compliance: 'pci' } } });
  });

  afterAll(async () => {
    await t?.close();
    expect(t.logs.filter((l) => l.includes('"internal error"'))).toEqual([]);
  });

  async function history(): Promise<History> {
    const res = await c.admin.get('/v1/policies');
    expect(res.status).toBe(200);
    return res.json as History;
  }

  it('starts with no policy: an empty history and a deny-all bundle', async () => {
    const h = await history();
    expect(h.versions).toEqual([]);
    expect(h.bundle_version).toBeGreaterThanOrEqual(1);
    const res = await c.agent(frontend).get('/v1/policy/bundle');
    expect(res.status).toBe(200);
    const bundle = verifyPolicyBundle((res.json as BundleAnswer).bundle, await trustedCas(t));
    expect(bundle.policies).toEqual({});
    expect(bundle.reason).toMatch(/no policy yet/);
  });

  it('applies a valid policy as version 1, with author, reason and hash in the history', async () => {
    const before = (await history()).bundle_version;
    const res = await c.admin.post('/v1/policies', { files: READ_ONLY, reason: 'first shop policy' });
    expect(res.status, res.text).toBe(201);
    v1 = res.json as typeof v1;
    expect(v1).toMatchObject({ version: 1, hash: expect.stringMatching(/^[0-9a-f]{64}$/), replayed: 0, flips: [] });
    expect(v1.bundle_version).toBeGreaterThan(before);

    const h = await history();
    expect(h.versions).toHaveLength(1);
    expect(h.versions[0]).toMatchObject({ version: 1, author: ADMIN_ID, reason: 'first shop policy', hash: v1.hash });
    expect(Number.isNaN(Date.parse(h.versions[0]!.createdAt))).toBe(false);
    expect(h.bundle_version).toBe(v1.bundle_version);

    const show = await c.admin.get('/v1/policies/1');
    expect(show.status).toBe(200);
    expect(show.json).toMatchObject({ version: 1, author: ADMIN_ID, reason: 'first shop policy', hash: v1.hash, policies: READ_ONLY });
    expect((show.json as { schema: object }).schema).toHaveProperty('Tessera');

    // The apply itself is audited, with the hash and the reason.
    const audit = (await t.admin.call<{ records: AuditRow[] }>('GET', '/v1/audit?action=policy.apply')).records;
    expect(audit[0]).toMatchObject({ actor: ADMIN_ID, outcome: 'success', target: 'policy v1', detail: expect.objectContaining({ hash: v1.hash, reason: 'first shop policy' }) });
  });

  it('answers 404 for an unknown or malformed version', async () => {
    expectError(await c.admin.get('/v1/policies/999'), 404, 'TESSERA_NOT_FOUND');
    expectError(await c.admin.get('/v1/policies/abc'), 404, 'TESSERA_NOT_FOUND');
    expectError(await c.admin.get('/v1/policies/0'), 404, 'TESSERA_NOT_FOUND');
  });

  it('refuses invalid Cedar with TESSERA_POLICY_INVALID naming the file, and stores nothing', async () => {
    const before = await history();
    const cases: [string, Record<string, string>, RegExp][] = [
      ['syntax error', { 'ok.cedar': READ_ONLY['residency.cedar']!, 'broken.cedar': 'permit (principal, action, resource) when { principal.app == };' }, /broken\.cedar:1:\d+/],
      // (`principal has colour && ...` would pass: Cedar types `has` of an undeclared attribute as false.)
      ['unknown attribute', { 'attr.cedar': 'permit (principal, action, resource) when { principal.colour == "red" };' }, /attr\.cedar:1:\d+/],
      ['unknown context attribute', { 'ctx-attr.cedar': 'permit (principal, action == Tessera::Action::"http:request", resource) when { context.tenant == "a" };' }, /ctx-attr\.cedar:1:\d+/],
      ['unknown action', { 'shop/action.cedar': 'permit (principal, action == Tessera::Action::"http:fly", resource);' }, /shop\/action\.cedar/],
      ['unknown entity type', { 'type.cedar': 'permit (principal == Tessera::Spaceship::"alice", action, resource);' }, /type\.cedar/],
      ['context attribute of another action', { 'ctx.cedar': 'permit (principal, action == Tessera::Action::"tcp:connect", resource) when { context.method == "GET" };' }, /ctx\.cedar/],
    ];
    for (const [what, files, where] of cases) {
      const res = await c.admin.post('/v1/policies', { files, reason: what });
      expectError(res, 400, 'TESSERA_POLICY_INVALID');
      expect((res.json as { error: { message: string } }).error.message, what).toMatch(where);
      // A dry run is refused the same way.
      expectError(await c.admin.post('/v1/policies', { files, reason: what, dry_run: true }), 400, 'TESSERA_POLICY_INVALID');
    }
    // A schema that is not a Cedar schema.
    expectError(await c.admin.post('/v1/policies', { files: READ_ONLY, schema: { Tessera: { entityTypes: 5 } }, reason: 'bad schema' }), 400, 'TESSERA_POLICY_INVALID');
    expect(await history()).toEqual(before);
  });

  it('refuses malformed bodies with TESSERA_BAD_REQUEST, and stores nothing', async () => {
    const before = await history();
    const ok = { files: READ_ONLY, reason: 'x' };
    const bodies: [string, unknown][] = [
      ['files not an object (list)', { files: [READ_ONLY['residency.cedar']], reason: 'x' }],
      ['files not an object (string)', { files: 'permit (principal, action, resource);', reason: 'x' }],
      ['files null', { files: null, reason: 'x' }],
      ['files missing', { reason: 'x' }],
      ['path traversal', { files: { '../x.cedar': 'permit (principal, action, resource);' }, reason: 'x' }],
      ['nested traversal', { files: { 'shop/../../x.cedar': 'permit (principal, action, resource);' }, reason: 'x' }],
      ['absolute path', { files: { '/etc/x.cedar': 'permit (principal, action, resource);' }, reason: 'x' }],
      ['not .cedar', { files: { 'x.txt': 'permit (principal, action, resource);' }, reason: 'x' }],
      ['hash in name', { files: { 'a#b.cedar': 'permit (principal, action, resource);' }, reason: 'x' }],
      ['space in name', { files: { 'a b.cedar': 'permit (principal, action, resource);' }, reason: 'x' }],
      ['empty name', { files: { '': 'permit (principal, action, resource);' }, reason: 'x' }],
      ['leading underscore', { files: { '_x.cedar': 'permit (principal, action, resource);' }, reason: 'x' }],
      ['leading dot', { files: { '.x.cedar': 'permit (principal, action, resource);' }, reason: 'x' }],
      ['text a number', { files: { 'a.cedar': 5 }, reason: 'x' }],
      ['text null', { files: { 'a.cedar': null }, reason: 'x' }],
      ['text an object', { files: { 'a.cedar': { text: 'permit (principal, action, resource);' } }, reason: 'x' }],
      ['missing reason', { files: READ_ONLY }],
      ['empty reason', { ...ok, reason: '' }],
      ['reason not a string', { ...ok, reason: 42 }],
      ['reason too long', { ...ok, reason: 'r'.repeat(1025) }],
      ['unknown field', { ...ok, author: 'spiffe://example.org/mallory' }],
      ['schema not an object', { ...ok, schema: 'Tessera' }],
      ['schema a list', { ...ok, schema: [] }],
      ['dry_run not a boolean', { ...ok, dry_run: 'yes' }],
      ['dry_run a number', { ...ok, dry_run: 1 }],
      ['body a list', [ok]],
      ['body a string', 'files'],
    ];
    for (const [what, body] of bodies) {
      const res = await c.admin.post('/v1/policies', body);
      expect({ what, status: res.status, code: errorCode(res) }).toEqual({ what, status: 400, code: 'TESSERA_BAD_REQUEST' });
    }
    // Not JSON at all.
    const notJson = await rawRequest(t.cp.url, {
      method: 'POST', path: '/v1/policies', ca: t.adminTls.ca, cert: t.adminTls.cert, key: t.adminTls.key,
      headers: { 'content-type': 'application/json' }, body: '{"files": {',
    });
    expectError(notJson, 400, 'TESSERA_BAD_REQUEST');
    expect(await history()).toEqual(before);
  });

  it('rolls back to v1 as a new version with v1\'s hash; an unknown version is 404', async () => {
    const v2 = await c.admin.post('/v1/policies', { files: READ_WRITE, reason: 'allow order creation' });
    expect(v2.status).toBe(201);
    expect(v2.json).toMatchObject({ version: 2 });
    expect((v2.json as { hash: string }).hash).not.toBe(v1.hash);

    const rb = await c.admin.post('/v1/policies/rollback', { version: 1, reason: 'POST broke checkout' });
    expect(rb.status, rb.text).toBe(201);
    const v3 = rb.json as { version: number; hash: string; bundle_version: number };
    expect(v3).toMatchObject({ version: 3, hash: v1.hash });

    const h = await history();
    expect(h.versions.map((v) => v.version)).toEqual([3, 2, 1]);
    expect(h.versions[0]).toMatchObject({ author: ADMIN_ID, hash: v1.hash, reason: 'rollback to v1: POST broke checkout' });
    expect((await c.admin.get('/v1/policies/3')).json).toMatchObject({ policies: READ_ONLY });

    // The bundle agents get is v1's content again, under a newer bundle version.
    const res = await c.agent(frontend).get('/v1/policy/bundle');
    const answer = res.json as BundleAnswer;
    expect(answer.version).toBe(v3.bundle_version);
    const bundle = verifyPolicyBundle(answer.bundle, await trustedCas(t));
    expect(bundle).toMatchObject({ version: v3.bundle_version, hash: v1.hash, policies: READ_ONLY });
    expect(bundle.reason).toContain('policy v3');

    expectError(await c.admin.post('/v1/policies/rollback', { version: 999, reason: 'nope' }), 404, 'TESSERA_NOT_FOUND');
    expectError(await c.admin.post('/v1/policies/rollback', { version: '1', reason: 'nope' }), 400, 'TESSERA_BAD_REQUEST');
    expectError(await c.admin.post('/v1/policies/rollback', { version: 0, reason: 'nope' }), 400, 'TESSERA_BAD_REQUEST');
    expectError(await c.admin.post('/v1/policies/rollback', { version: 1 }), 400, 'TESSERA_BAD_REQUEST');
    expectError(await c.admin.post('/v1/policies/rollback', { version: 1, reason: 'x', files: {} }), 400, 'TESSERA_BAD_REQUEST');
    expect((await history()).versions).toHaveLength(3);
  });

  it('refuses every admin policy route to an agent SVID (403) and to a caller without a certificate (401)', async () => {
    const before = await history();
    const routes: [string, (x: ReturnType<typeof c.agent>) => Promise<RawResponse>][] = [
      ['apply', (x) => x.post('/v1/policies', { files: READ_WRITE, reason: 'sneaky' })],
      ['dry run', (x) => x.post('/v1/policies', { files: READ_WRITE, reason: 'sneaky', dry_run: true })],
      ['history', (x) => x.get('/v1/policies')],
      ['show', (x) => x.get('/v1/policies/1')],
      ['rollback', (x) => x.post('/v1/policies/rollback', { version: 2, reason: 'sneaky' })],
    ];
    for (const [what, call] of routes) {
      const asAgent = await call(c.agent(frontend));
      expect({ what, status: asAgent.status, code: errorCode(asAgent) }).toEqual({ what, status: 403, code: 'TESSERA_FORBIDDEN' });
      const anon = await call(c.anon);
      expect({ what, status: anon.status, code: errorCode(anon) }).toEqual({ what, status: 401, code: 'TESSERA_AUTH_REQUIRED' });
    }
    expect(await history()).toEqual(before);
    // The refusals are audited with the agent as actor.
    const denied = (await t.admin.call<{ records: AuditRow[] }>('GET', '/v1/audit?action=policy.apply&outcome=denied')).records;
    expect(denied.some((r) => r.actor === FRONTEND && r.code === 'TESSERA_FORBIDDEN')).toBe(true);
  });

  it('serves the signed bundle to SVIDs only: verifiable with the trust bundle, with the registry\'s entities', async () => {
    expectError(await c.anon.get('/v1/policy/bundle'), 401, 'TESSERA_AUTH_REQUIRED');
    expectError(await c.agent(frontend).get('/v1/policy/bundle?after=-1'), 400, 'TESSERA_BAD_REQUEST');
    expectError(await c.agent(frontend).get('/v1/policy/bundle?timeout_seconds=61'), 400, 'TESSERA_BAD_REQUEST');
    expectError(await c.agent(frontend).get('/v1/policy/bundle?after=x'), 400, 'TESSERA_BAD_REQUEST');

    const res = await c.agent(frontend).get('/v1/policy/bundle?after=0');
    expect(res.status).toBe(200);
    const answer = res.json as BundleAnswer;
    expect(Object.keys(answer).sort()).toEqual(['bundle', 'changed', 'version']);
    expect(answer.changed).toBe(true);
    const cas = await trustedCas(t);
    const bundle: PolicyBundle = verifyPolicyBundle(answer.bundle, cas, { minVersion: answer.version });
    expect(bundle.version).toBe(answer.version);
    expect(bundle.entities).toEqual(expect.arrayContaining([
      { id: FRONTEND, attrs: { app: 'shop-frontend', site: 'cloud-eu', env: 'prod' } },
      { id: ORDERS, attrs: { app: 'orders', site: 'cloud-eu', compliance: 'pci' } },
    ]));
    // Only the agents' trust bundle makes it verify.
    expect(() => verifyPolicyBundle(answer.bundle, [])).toThrow(/not in the trust bundle/);

    // The admin credential may read it too.
    expect((await c.admin.get('/v1/policy/bundle')).status).toBe(200);

    // A new entry bumps the bundle version, and its attributes are in the new bundle.
    const payments = `spiffe://${TD}/shop/payments`;
    await t.admin.call('POST', '/v1/entries', { spiffe_id: payments, attributes: { app: 'payments', site: 'edge-7', location: 'eu' } });
    const after = (await c.agent(frontend).get(`/v1/policy/bundle?after=${answer.version}`)).json as BundleAnswer;
    expect(after.version).toBe(answer.version + 1);
    expect(after.changed).toBe(true);
    const next = verifyPolicyBundle(after.bundle, cas, { minVersion: answer.version });
    expect(next.entities).toContainEqual({ id: payments, attrs: { app: 'payments', site: 'edge-7', location: 'eu' } });
    expect(next.hash).toBe(bundle.hash);
    // An agent holding the newer version refuses the older one (no rollback).
    expect(() => verifyPolicyBundle(answer.bundle, cas, { minVersion: after.version })).toThrow(/rollback refused/);

    // Deleting it bumps again and drops it.
    await t.admin.call('DELETE', `/v1/entries/${encodeURIComponent(payments)}`);
    const dropped = (await c.agent(frontend).get(`/v1/policy/bundle?after=${after.version}`)).json as BundleAnswer;
    expect(dropped.version).toBe(after.version + 1);
    expect(verifyPolicyBundle(dropped.bundle, cas).entities.map((e) => e.id)).not.toContain(payments);
  });

  it('long-polls: answers changed:false after timeout_seconds, and within ~1 s of an apply', async () => {
    const current = (await history()).bundle_version;
    const agent = c.agent(frontend);

    let t0 = Date.now();
    const idle = await agent.get(`/v1/policy/bundle?after=${current}&timeout_seconds=1`);
    const idleMs = Date.now() - t0;
    expect(idle.status).toBe(200);
    expect(idle.json).toMatchObject({ version: current, changed: false });
    expect(idleMs).toBeGreaterThanOrEqual(900);
    expect(idleMs).toBeLessThan(3000);

    t0 = Date.now();
    const poll = agent.get(`/v1/policy/bundle?after=${current}&timeout_seconds=20`).then((r) => ({ r, at: Date.now() }));
    await new Promise((r) => setTimeout(r, 300));
    const sentAt = Date.now();
    const applied = await c.admin.post('/v1/policies', { files: READ_WRITE, reason: 'long-poll check' });
    const appliedAt = Date.now();
    expect(applied.status).toBe(201);
    const { r, at } = await poll;
    const latencyMs = at - sentAt;
    console.log(`policy long-poll returned ${latencyMs} ms after the apply was sent (apply answered after ${appliedAt - sentAt} ms; poll open ${at - t0} ms)`);
    expect(r.status).toBe(200);
    const answer = r.json as BundleAnswer;
    expect(answer.changed).toBe(true);
    expect(answer.version).toBe((applied.json as { bundle_version: number }).bundle_version);
    expect(latencyMs).toBeLessThan(1000);
    expect(verifyPolicyBundle(answer.bundle, await trustedCas(t)).policies).toEqual(READ_WRITE);
  });

  it('records shipped decisions in the audit table: decisions by outcome, refused handshakes as connection.refused', async () => {
    // Orders' inbound sidecar records the calls it judged: the enforcer is orders.
    const agent = c.agent(orders);
    const now = Date.now();
    const res = await agent.post('/v1/decisions', {
      decisions: [
        { ts: now, principal: FRONTEND, action: 'http:request', resource: ORDERS, context: httpContext('GET', '/orders/7'), allow: true, reasons: ['frontend-reads-orders'] },
        { ts: now, principal: FRONTEND, action: 'http:request', resource: ORDERS, context: httpContext('DELETE', '/orders/7'), allow: false, reasons: [] },
        { ts: now, principal: '-', action: 'tls:handshake', resource: ORDERS, context: { site: 'cloud-eu', code: 'TESSERA_AUTH_INVALID', reason: 'unknown CA' }, allow: false, reasons: ['TESSERA_AUTH_INVALID'] },
      ],
    });
    expect(res.status, res.text).toBe(200);
    expect(res.json).toEqual({ accepted: 3, refused: 0 });

    const decisions = (await t.admin.call<{ records: AuditRow[] }>('GET', '/v1/audit?action=decision')).records;
    const allowed = decisions.find((r) => (r.detail.context as { path?: string }).path === '/orders/7' && r.outcome === 'success');
    const denied = decisions.find((r) => (r.detail.context as { method?: string }).method === 'DELETE');
    expect(allowed).toMatchObject({ actor: ORDERS, action: 'decision', target: ORDERS, outcome: 'success', code: 'ALLOW', detail: { enforcer: ORDERS, principal: FRONTEND, action: 'http:request', reasons: ['frontend-reads-orders'] } });
    expect(denied).toMatchObject({ actor: ORDERS, action: 'decision', target: ORDERS, outcome: 'denied', code: 'DENY' });
    const refused = (await t.admin.call<{ records: AuditRow[] }>('GET', '/v1/audit?action=connection.refused')).records;
    expect(refused).toHaveLength(1);
    expect(refused[0]).toMatchObject({ actor: ORDERS, target: ORDERS, outcome: 'denied', code: 'TESSERA_AUTH_INVALID', detail: { enforcer: ORDERS, reason: 'unknown CA', site: 'cloud-eu' } });
    // The shipment itself is audited too.
    const ship = (await t.admin.call<{ records: AuditRow[] }>('GET', '/v1/audit?action=decision.ship&outcome=success')).records;
    expect(ship[0]).toMatchObject({ actor: ORDERS, detail: expect.objectContaining({ count: 3 }) });
  });

  it('refuses malformed decision batches whole (400), and anonymous ones (401)', async () => {
    const agent = c.agent(orders);
    const count = async (): Promise<number> => (await t.admin.call<{ records: AuditRow[] }>('GET', '/v1/audit?action=decision&limit=10000')).records.length;
    const before = await count();
    const good = { ts: Date.now(), principal: FRONTEND, action: 'http:request', resource: ORDERS, context: httpContext('GET', '/x'), allow: false, reasons: [] };
    const batches: [string, unknown][] = [
      ['decisions not a list', { decisions: good }],
      ['decisions a string', { decisions: 'all of them' }],
      ['decisions missing', {}],
      ['more than 1000', { decisions: Array.from({ length: 1001 }, () => good) }],
      ['unknown top-level field', { decisions: [good], agent: FRONTEND }],
      ['principal not a SPIFFE ID', { decisions: [good, { ...good, principal: 'https://example.org/x' }] }],
      ['principal uppercase trust domain', { decisions: [{ ...good, principal: 'spiffe://Example.org/x' }] }],
      ['resource not a SPIFFE ID', { decisions: [{ ...good, resource: 'orders' }] }],
      ['resource "-"', { decisions: [{ ...good, principal: '-', action: 'tls:handshake', resource: '-' }] }],
      ['unknown action', { decisions: [{ ...good, action: 'http:fly' }] }],
      ['"-" principal for a request', { decisions: [{ ...good, principal: '-' }] }],
      ['context value an object', { decisions: [{ ...good, context: { method: { verb: 'GET' } } }] }],
      ['context value a list', { decisions: [{ ...good, context: { path: ['/a', '/b'] } }] }],
      ['context value null', { decisions: [{ ...good, context: { path: null } }] }],
      ['context a list', { decisions: [{ ...good, context: ['GET'] }] }],
      ['context a string', { decisions: [{ ...good, context: 'GET /x' }] }],
      ['context value too long', { decisions: [{ ...good, context: { path: 'x'.repeat(2049) } }] }],
      ['allow not a boolean', { decisions: [{ ...good, allow: 'false' }] }],
      ['allow missing', { decisions: [{ ...good, allow: undefined }] }],
      ['ts missing', { decisions: [{ ...good, ts: undefined }] }],
      ['ts negative', { decisions: [{ ...good, ts: -1 }] }],
      ['ts a string', { decisions: [{ ...good, ts: '2026-01-01' }] }],
      ['unknown record field', { decisions: [{ ...good, risk: 99 }] }],
      ['record not an object', { decisions: ['allow'] }],
    ];
    for (const [what, body] of batches) {
      const res = await agent.post('/v1/decisions', body);
      expect({ what, status: res.status, code: errorCode(res) }).toEqual({ what, status: 400, code: 'TESSERA_BAD_REQUEST' });
    }
    expectError(await c.anon.post('/v1/decisions', { decisions: [good] }), 401, 'TESSERA_AUTH_REQUIRED');
    // Nothing of any refused batch reached the audit table (one good record in a bad batch included).
    expect(await count()).toBe(before);
    // An empty batch is fine.
    expect((await agent.post('/v1/decisions', { decisions: [] })).json).toEqual({ accepted: 0, refused: 0 });
  });

  it('takes a full batch of 1000 decisions (an agent ships up to 500 at once)', async () => {
    const ts = Date.now();
    const decisions = Array.from({ length: 1000 }, (_, i) => ({
      ts, principal: FRONTEND, action: 'http:request', resource: ORDERS, context: httpContext('GET', `/orders/${i}/${'x'.repeat(100)}`), allow: false, reasons: [],
    }));
    const res = await c.agent(orders).post('/v1/decisions', { decisions });
    expect(res.status, res.text).toBe(200);
    expect(res.json).toEqual({ accepted: 1000, refused: 0 });
    // A context value of exactly 2048 characters is accepted (the agent clips to that).
    const edge = await c.agent(orders).post('/v1/decisions', { decisions: [{ ...decisions[0], context: httpContext('GET', 'p'.repeat(2048)) }] });
    expect(edge.status, edge.text).toBe(200);
    // Still bounded: a body over 1 MiB is refused before it is parsed.
    const huge = await c.agent(orders).post('/v1/decisions', { decisions: [{ ...decisions[0], context: { note: 'x'.repeat(1100 * 1024) } }] });
    expectError(huge, 413, 'TESSERA_PAYLOAD_TOO_LARGE');
  });
});

describe('policy bundle across a CA rotation', () => {
  let t: TestControlPlane;
  let c: ReturnType<typeof clientsFor>;
  let agent: JoinedAgent;
  let trust = '';

  beforeAll(async () => {
    t = await startControlPlane({ trustDomain: TD });
    trust = t.adminTls.ca;
    c = clientsFor(t, () => trust);
    agent = await joinAgent(t.cp, t.admin, FRONTEND, { entry: { attributes: { app: 'shop-frontend', site: 'cloud-eu' } } });
    expect((await c.admin.post('/v1/policies', { files: READ_ONLY, reason: 'before rotation' })).status).toBe(201);
  });

  afterAll(async () => {
    await t?.close();
  });

  it('re-signs the current bundle with the newly active CA, same version: an unchanged long-poll answer carries it', async () => {
    const before = (await c.agent(agent).get('/v1/policy/bundle')).json as BundleAnswer;
    const oldCas = await trustedCas(t);
    expect(oldCas).toHaveLength(1);
    expect((await c.admin.post('/v1/ca/rotate', { grace_seconds: 0 })).status).toBe(200);
    // Both CAs, as agents learn them from the bundle watch (the server's certificate changes issuer too).
    trust = readFileSync(join(t.cp.adminDir, 'bundle.pem'), 'utf8');
    expect(pemDecodeAll(trust, 'CERTIFICATE')).toHaveLength(2);
    const after = await waitForValue(async () => {
      const r = (await c.agent(agent).get(`/v1/policy/bundle?after=${before.version}&timeout_seconds=1`)).json as BundleAnswer;
      return r.bundle.signer !== before.bundle.signer ? r : undefined;
    }, 10_000);
    expect(after.version).toBe(before.version);
    expect(after.changed).toBe(false);
    const cas = await trustedCas(t, trust);
    const newCas = cas.filter((d) => !oldCas.some((o) => o.equals(d)));
    expect(newCas).toHaveLength(1);
    // Verifiable with the new CA alone (what agents keep once the old one is gone), same content.
    const resigned = verifyPolicyBundle(after.bundle, newCas, { minVersion: before.version });
    expect(resigned.hash).toBe(verifyPolicyBundle(before.bundle, oldCas).hash);
    expect(() => verifyPolicyBundle(after.bundle, oldCas)).toThrow(/not in the trust bundle/);
  }, 20_000);
});

async function waitForValue<T>(fn: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('policy dry run', () => {
  let t: TestControlPlane;
  let c: ReturnType<typeof clientsFor>;
  let frontend: JoinedAgent;
  let orders: JoinedAgent;

  beforeAll(async () => {
    t = await startControlPlane({ trustDomain: TD });
    c = clientsFor(t);
    frontend = await joinAgent(t.cp, t.admin, FRONTEND, { entry: { attributes: { app: 'shop-frontend', site: 'cloud-eu' } } });
    orders = await joinAgent(t.cp, t.admin, ORDERS, { entry: { attributes: { app: 'orders', site: 'cloud-eu' } } });
  });

  afterAll(async () => {
    await t?.close();
    expect(t.logs.filter((l) => l.includes('"internal error"'))).toEqual([]);
  });

  it('replays recorded decisions against a candidate and lists exactly the flips, applying nothing', async () => {
    const applied = await c.admin.post('/v1/policies', { files: READ_ONLY, reason: 'v1: read only' });
    expect(applied.status).toBe(201);
    const bundleVersion = (applied.json as { bundle_version: number }).bundle_version;

    // What orders' agent recorded under v1: two allowed GETs, one denied POST, one denied stranger.
    const ts = Date.now();
    const stranger = `spiffe://${TD}/unknown/thing`;
    const shipped = await c.agent(orders).post('/v1/decisions', {
      decisions: [
        { ts, principal: FRONTEND, action: 'http:request', resource: ORDERS, context: httpContext('GET', '/orders/1'), allow: true, reasons: ['frontend-reads-orders'] },
        { ts, principal: FRONTEND, action: 'http:request', resource: ORDERS, context: httpContext('GET', '/orders/1'), allow: true, reasons: ['frontend-reads-orders'] },
        { ts, principal: FRONTEND, action: 'http:request', resource: ORDERS, context: httpContext('POST', '/orders'), allow: false, reasons: [] },
        { ts, principal: stranger, action: 'http:request', resource: ORDERS, context: httpContext('POST', '/orders'), allow: false, reasons: [] },
        { ts, principal: '-', action: 'tls:handshake', resource: ORDERS, context: { site: 'cloud-eu', code: 'TESSERA_AUTH_REQUIRED', reason: 'no certificate' }, allow: false, reasons: [] },
      ],
    });
    expect(shipped.status).toBe(200);

    const dry = await c.admin.post('/v1/policies', { files: READ_WRITE, reason: 'would allow POST', dry_run: true });
    expect(dry.status, dry.text).toBe(200);
    const res = dry.json as { dry_run: boolean; replayed: number; flips: Record<string, unknown>[]; version?: number };
    expect(res.dry_run).toBe(true);
    expect(res.version).toBeUndefined();
    expect(res.replayed).toBe(4);
    expect(res.flips).toEqual([{
      principal: FRONTEND, action: 'http:request', resource: ORDERS, context: httpContext('POST', '/orders'), before: 'deny', after: 'allow', count: 1,
    }]);

    // The same candidate with nothing changed: no flips.
    const same = await c.admin.post('/v1/policies', { files: READ_ONLY, reason: 'no change', dry_run: true });
    expect((same.json as { flips: unknown[] }).flips).toEqual([]);

    // A stricter candidate flips the two GETs, counted once.
    const none = await c.admin.post('/v1/policies', { files: { 'residency.cedar': READ_ONLY['residency.cedar']! }, reason: 'deny all', dry_run: true });
    expect((none.json as { flips: unknown[] }).flips).toEqual([
      { principal: FRONTEND, action: 'http:request', resource: ORDERS, context: httpContext('GET', '/orders/1'), before: 'allow', after: 'deny', count: 2 },
    ]);

    // Nothing was applied: one version, same bundle.
    const h = (await c.admin.get('/v1/policies')).json as History;
    expect(h.versions.map((v) => v.version)).toEqual([1]);
    expect(h.bundle_version).toBe(bundleVersion);
    const bundle = (await c.agent(frontend).get('/v1/policy/bundle')).json as BundleAnswer;
    expect(bundle.version).toBe(bundleVersion);
    // The dry runs are audited as such.
    const audit = (await t.admin.call<{ records: AuditRow[] }>('GET', '/v1/audit?action=policy.apply')).records;
    expect(audit.filter((r) => r.detail.dry_run === true)).toHaveLength(3);
  });
});
