import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { expectTesseraError } from '../../../test/support/expect.js';
import { PolicyEngine, type DecisionRequest } from './engine.js';
import { IDS, SHOP_ENTITIES, SHOP_POLICIES, baseContext, deriveContext, httpContext } from './fixtures.js';
import { TESSERA_SCHEMA, schemaText } from './schema.js';
import type { PolicyAction, PolicyContext } from './types.js';

const shop = (): PolicyEngine => new PolicyEngine(PolicyEngine.compile({ policies: SHOP_POLICIES }), SHOP_ENTITIES);

function req(principal: string, action: PolicyAction, resource: string, context: PolicyContext): DecisionRequest {
  return { principal, action, resource, context };
}

describe('schema', () => {
  it('declares the workload entity and the four actions', () => {
    const text = schemaText();
    expect(text).toContain('namespace Tessera');
    expect(text).toMatch(/entity Workload/);
    for (const a of ['http:request', 'tcp:connect', 'secret:unseal', 'credential:derive']) expect(text).toContain(`"${a}"`);
    expect(Object.isFrozen(TESSERA_SCHEMA)).toBe(true);
  });
});

describe('PolicyEngine: a realistic policy set', () => {
  const engine = shop();
  const table: [string, DecisionRequest, boolean, string[]][] = [
    ['frontend GETs an order in its site', req(IDS.frontendEu, 'http:request', IDS.ordersEu, httpContext('GET', '/orders/42')), true, ['frontend-reads-orders']],
    ['frontend POSTs an order', req(IDS.frontendEu, 'http:request', IDS.ordersEu, httpContext('POST', '/orders/42')), false, []],
    ['frontend GETs another path', req(IDS.frontendEu, 'http:request', IDS.ordersEu, httpContext('GET', '/admin')), false, []],
    ['frontend of another site', req(IDS.frontendEdge, 'http:request', IDS.ordersEu, httpContext('GET', '/orders/1')), false, []],
    ['orders calls payments in its site', req(IDS.ordersEu, 'http:request', IDS.payments, httpContext('POST', '/charge')), true, ['shop/orders.cedar#1']],
    ['orders of another site calls payments (residency)', req(IDS.ordersEdge, 'http:request', IDS.payments, httpContext('POST', '/charge')), false, ['residency.cedar#0']],
    ['a stranger calls payments (no attributes: residency)', req(IDS.stranger, 'http:request', IDS.payments, httpContext('GET', '/')), false, ['residency.cedar#0']],
    ['orders connects to the db', req(IDS.ordersEu, 'tcp:connect', IDS.ordersDb, baseContext()), true, ['shop/orders.cedar#2']],
    ['frontend connects to the db', req(IDS.frontendEu, 'tcp:connect', IDS.ordersDb, baseContext()), false, []],
    ['a stranger connects to the db', req(IDS.stranger, 'tcp:connect', IDS.ordersDb, baseContext()), false, []],
    ['risky orders calls payments', req(IDS.ordersEu, 'http:request', IDS.payments, httpContext('POST', '/charge', { risk: 90 })), false, ['residency.cedar#1']],
    ['nobody may unseal (no policy)', req(IDS.ordersEu, 'secret:unseal', IDS.payments, baseContext()), false, []],
    ['nobody may derive credentials (no policy)', req(IDS.ordersEu, 'credential:derive', IDS.ordersEu, deriveContext('jwt', 'payments')), false, []],
  ];
  it.each(table)('%s', (_name, r, allow, reasons) => {
    const d = engine.decide(r);
    expect(d).toEqual({ allow, reasons, errors: [], cached: false });
  });

  it('gives policies traceable ids and file origins', () => {
    const c = PolicyEngine.compile({ policies: SHOP_POLICIES });
    expect(Object.keys(c.policies).sort()).toEqual(['frontend-reads-orders', 'residency.cedar#0', 'residency.cedar#1', 'shop/orders.cedar#1', 'shop/orders.cedar#2']);
    expect(c.origins['frontend-reads-orders']).toEqual({ file: 'shop/orders.cedar', index: 0 });
    expect(c.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(c.warnings).toEqual([]);
  });

  it('numbers policies in file order, past ten', () => {
    const text = Array.from({ length: 12 }, (_, i) => `permit(principal, action == Tessera::Action::"tcp:connect", resource) when { context.risk == ${i} };`).join('\n');
    const e = new PolicyEngine(PolicyEngine.compile({ policies: { 'many.cedar': text } }), []);
    for (let i = 0; i < 12; i++) expect(e.decide(req(IDS.ordersEu, 'tcp:connect', IDS.ordersDb, baseContext({ risk: i }))).reasons).toEqual([`many.cedar#${i}`]);
  });

  it('keeps many live engines correct (they share a bounded set of Wasm slots)', () => {
    const engines = Array.from({ length: 20 }, (_, i) => new PolicyEngine(PolicyEngine.compile({
      policies: { 'risk.cedar': `permit(principal, action == Tessera::Action::"tcp:connect", resource) when { context.risk == ${i} };` },
    }), [], { cacheSize: 0 }));
    for (let round = 0; round < 2; round++) {
      engines.forEach((e, i) => {
        expect(e.decide(req(IDS.ordersEu, 'tcp:connect', IDS.ordersDb, baseContext({ risk: i }))).reasons).toEqual(['risk.cedar#0']);
        expect(e.decide(req(IDS.ordersEu, 'tcp:connect', IDS.ordersDb, baseContext({ risk: i + 1 }))).allow).toBe(false);
      });
    }
  });

  it('decides a workload calling itself (one entity)', () => {
    const e = new PolicyEngine(PolicyEngine.compile({ policies: { 'self.cedar': 'permit(principal, action, resource) when { principal == resource && principal has app && principal.app == "orders" };' } }), SHOP_ENTITIES);
    expect(e.decide(req(IDS.ordersEu, 'credential:derive', IDS.ordersEu, deriveContext('jwt', 'payments'))).allow).toBe(true);
    expect(e.decide(req(IDS.ordersEu, 'credential:derive', IDS.payments, deriveContext('jwt', 'payments'))).allow).toBe(false);
  });
});

describe('PolicyEngine: default deny and fail closed', () => {
  it('denies everything with an empty policy set', () => {
    const sets: Record<string, string>[] = [{}, { 'empty.cedar': '' }, { 'comments.cedar': '// nothing yet\n' }];
    for (const policies of sets) {
      const e = new PolicyEngine(PolicyEngine.compile({ policies }), SHOP_ENTITIES);
      expect(e.decide(req(IDS.frontendEu, 'http:request', IDS.ordersEu, httpContext('GET', '/orders/1')))).toEqual({ allow: false, reasons: [], errors: [], cached: false });
    }
  });

  it('denies on an evaluation error, even when a permit matches (Cedar alone would allow)', () => {
    const e = new PolicyEngine(PolicyEngine.compile({
      policies: {
        'p.cedar': 'permit(principal, action == Tessera::Action::"tcp:connect", resource);',
        'f.cedar': 'forbid(principal, action, resource) when { context.time * 1000000000000 > 0 };',
      },
    }), []);
    const ok = e.decide(req(IDS.ordersEu, 'tcp:connect', IDS.ordersDb, baseContext({ time: 1000 })));
    expect(ok.allow).toBe(false); // 1000 * 1e12 > 0: the forbid applies
    const d = e.decide(req(IDS.ordersEu, 'tcp:connect', IDS.ordersDb, baseContext({ time: 1767258000 })));
    expect(d.allow).toBe(false);
    expect(d.reasons).toEqual([]);
    expect(d.errors).toHaveLength(1);
    expect(d.errors[0]).toMatch(/^f\.cedar#0: .*overflow/);
  });

  it.each([
    ['a missing attribute', { site: 'cloud-eu', time: 1, hour: 1 }, /missing risk/],
    ['an undeclared attribute', { ...baseContext(), extra: 'x' }, /"extra" is not declared/],
    ['a string for a Long', { ...baseContext(), risk: '5' }, /context\.risk must be an integer/],
    ['a fraction for a Long', { ...baseContext(), risk: 5.5 }, /context\.risk must be an integer/],
    ['a number for a String', { ...baseContext(), site: 7 }, /context\.site must be a string/],
  ])('denies a context with %s', (_name, context, message) => {
    const e = new PolicyEngine(PolicyEngine.compile({ policies: { 'all.cedar': 'permit(principal, action, resource);' } }), []);
    const d = e.decide(req(IDS.ordersEu, 'tcp:connect', IDS.ordersDb, context as PolicyContext));
    expect(d.allow).toBe(false);
    expect(d.errors[0]).toMatch(message);
    expect(e.decide(req(IDS.ordersEu, 'tcp:connect', IDS.ordersDb, baseContext())).allow).toBe(true);
  });

  it('denies malformed requests instead of throwing', () => {
    const e = new PolicyEngine(PolicyEngine.compile({ policies: { 'all.cedar': 'permit(principal, action, resource);' } }), []);
    const bad: unknown[] = [
      null,
      { principal: IDS.ordersEu, action: 'http:get', resource: IDS.ordersDb, context: baseContext() },
      { principal: '', action: 'tcp:connect', resource: IDS.ordersDb, context: baseContext() },
      { principal: IDS.ordersEu, action: 'tcp:connect', resource: 42, context: baseContext() },
      { principal: IDS.ordersEu, action: 'tcp:connect', resource: IDS.ordersDb, context: null },
      { principal: IDS.ordersEu, action: 'tcp:connect', resource: IDS.ordersDb, context: { ...baseContext(), risk: { nested: 1 } } },
    ];
    for (const r of bad) {
      const d = e.decide(r as DecisionRequest);
      expect(d.allow).toBe(false);
      expect(d.errors.length).toBeGreaterThan(0);
    }
  });

  it('falls back to Cedar request validation for a context it cannot check itself', () => {
    const schema = structuredClone(TESSERA_SCHEMA) as { Tessera: { actions: Record<string, { appliesTo: { context: { attributes: Record<string, unknown> } } }> } };
    schema.Tessera.actions['tcp:connect']!.appliesTo.context.attributes.tags = { type: 'Set', element: { type: 'String' } };
    const e = new PolicyEngine(PolicyEngine.compile({ policies: { 'a.cedar': 'permit(principal, action == Tessera::Action::"tcp:connect", resource) when { context.tags.contains("db") };' }, schema }), []);
    expect(e.decide(req(IDS.ordersEu, 'tcp:connect', IDS.ordersDb, baseContext())).errors[0]).toMatch(/^request: .*tags/);
  });

  it('refuses bad entities when the engine is built', () => {
    const c = PolicyEngine.compile({ policies: {} });
    expectTesseraError(() => new PolicyEngine(c, [{ id: IDS.ordersEu, attrs: { team: 'x' } as never }]), 'TESSERA_POLICY_INVALID');
    expectTesseraError(() => new PolicyEngine(c, [{ id: IDS.ordersEu, attrs: {} }, { id: IDS.ordersEu, attrs: {} }]), 'TESSERA_POLICY_INVALID');
  });
});

describe('PolicyEngine.compile: validation on every write', () => {
  it('refuses an unknown attribute, naming the file and position', () => {
    const err = expectTesseraError(() => PolicyEngine.compile({
      policies: { ...SHOP_POLICIES, 'team.cedar': 'permit(principal, action, resource)\nwhen { principal.team == "payments" };' },
    }), 'TESSERA_POLICY_INVALID');
    expect(err.message).toMatch(/team\.cedar:2:8: \[team\.cedar#0\] .*team/);
  });

  it('refuses an unknown action', () => {
    const err = expectTesseraError(() => PolicyEngine.compile({ policies: { 'a.cedar': 'permit(principal, action == Tessera::Action::"http:get", resource);' } }), 'TESSERA_POLICY_INVALID');
    expect(err.message).toMatch(/a\.cedar:1:\d+: .*http:get/);
  });

  it('refuses an optional attribute read without `has` (strict mode)', () => {
    const err = expectTesseraError(() => PolicyEngine.compile({ policies: { 'r.cedar': 'forbid(principal, action, resource) unless { principal.site == resource.site };' } }), 'TESSERA_POLICY_INVALID');
    expect(err.message).toMatch(/r\.cedar:1:\d+: .*optional attribute `site`.*help/);
  });

  it('names file, line and column of a syntax error (UTF-8 before it counted as characters)', () => {
    const err = expectTesseraError(() => PolicyEngine.compile({
      policies: { 'ok.cedar': 'permit(principal, action, resource);', 'bad.cedar': '// schön\npermit(principal, action, resource)\n  when { principal == };' },
    }), 'TESSERA_POLICY_INVALID');
    expect(err.message).toMatch(/bad\.cedar:3:23: unexpected token `}`/);
    expect(err.message).not.toMatch(/ok\.cedar/);
  });

  it('reports every problem of every file', () => {
    const err = expectTesseraError(() => PolicyEngine.compile({ policies: { 'a.cedar': 'permit(', 'b.cedar': 'permit(principal, action, resource) when { context.nope };' } }), 'TESSERA_POLICY_INVALID');
    expect(err.message).toMatch(/a\.cedar:1:\d+/);
    expect(err.message).toMatch(/b\.cedar:1:\d+/);
  });

  it('refuses duplicate @id, templates, bad file names and bad schemas', () => {
    expectTesseraError(() => PolicyEngine.compile({ policies: { 'a.cedar': '@id("x") permit(principal, action, resource);', 'b.cedar': '@id("x") forbid(principal, action, resource);' } }), 'TESSERA_POLICY_INVALID');
    expectTesseraError(() => PolicyEngine.compile({ policies: { 'a.cedar': 'permit(principal == ?principal, action, resource);' } }), 'TESSERA_POLICY_INVALID');
    expectTesseraError(() => PolicyEngine.compile({ policies: { 'a.cedar': '@id("") permit(principal, action, resource);' } }), 'TESSERA_POLICY_INVALID');
    expectTesseraError(() => PolicyEngine.compile({ policies: { 'a.cedar': '@id("a\\nb") permit(principal, action, resource);' } }), 'TESSERA_POLICY_INVALID');
    for (const name of ['a#1.cedar', '', '../x', '__proto__', '/abs.cedar']) {
      expectTesseraError(() => PolicyEngine.compile({ policies: { [name]: '' } }), 'TESSERA_POLICY_INVALID');
    }
    expectTesseraError(() => PolicyEngine.compile({ policies: {}, schema: { Tessera: { entityTypes: {}, actions: {}, bogus: 1 } } }), 'TESSERA_POLICY_INVALID');
    expectTesseraError(() => PolicyEngine.compile({ policies: { 'a.cedar': 42 as never } }), 'TESSERA_POLICY_INVALID');
  });
});

describe('PolicyEngine.compile: remembered per process', () => {
  it('gives the same result for the same files, judges a remembered file again under another schema, and keeps refusing a bad one', () => {
    const first = PolicyEngine.compile({ policies: SHOP_POLICIES });
    const again = PolicyEngine.compile({ policies: { ...SHOP_POLICIES } });
    expect(again).toEqual(first);
    // The same file and text, moved to another file name: its ids follow the name.
    const [name, text] = Object.entries(SHOP_POLICIES).find(([, t]) => !t.includes('@id'))!;
    expect(Object.keys(PolicyEngine.compile({ policies: { 'moved.cedar': text } }).policies)[0]).toMatch(/^moved\.cedar#/);
    expect(Object.keys(PolicyEngine.compile({ policies: { [name]: text } }).policies)[0]).toMatch(new RegExp(`^${name.replace('.', '\\.')}#`));
    // Valid under the Tessera schema, invalid under one without context.path: validated again.
    const uses = '@id("p") permit(principal, action == Tessera::Action::"http:request", resource) when { context.path == "/x" };';
    PolicyEngine.compile({ policies: { 'p.cedar': uses } });
    const narrow = JSON.parse(JSON.stringify(TESSERA_SCHEMA)) as { Tessera: { actions: Record<string, { appliesTo: { context: { attributes: Record<string, unknown> } } }> } };
    delete narrow.Tessera.actions['http:request']!.appliesTo.context.attributes.path;
    expectTesseraError(() => PolicyEngine.compile({ policies: { 'p.cedar': uses }, schema: narrow }), 'TESSERA_POLICY_INVALID');
    PolicyEngine.compile({ policies: { 'p.cedar': uses } });
    // A refused file is refused every time, and a refused schema too.
    const bad = { 'a.cedar': 'permit(principal, action, resource) when { context.nope == 1 };' };
    for (let i = 0; i < 2; i++) expectTesseraError(() => PolicyEngine.compile({ policies: bad }), 'TESSERA_POLICY_INVALID');
    for (let i = 0; i < 2; i++) expectTesseraError(() => PolicyEngine.compile({ policies: {}, schema: { Tessera: { entityTypes: {}, actions: {}, bogus: 1 } } }), 'TESSERA_POLICY_INVALID');
    // Remembered results are shared: nobody can change them under another engine.
    expect(Object.isFrozen(first.schema)).toBe(true);
  });
});

describe('PolicyEngine: decision cache', () => {
  it('answers an identical request from the cache until cleared', () => {
    const e = new PolicyEngine(PolicyEngine.compile({ policies: SHOP_POLICIES }), SHOP_ENTITIES, { cacheAdmission: 1 });
    const r = req(IDS.frontendEu, 'http:request', IDS.ordersEu, httpContext('GET', '/orders/42'));
    const first = e.decide(r);
    const second = e.decide({ ...r, context: { ...r.context } });
    expect(first.cached).toBe(false);
    expect(second).toEqual({ ...first, cached: true });
    expect(Object.isFrozen(second) && Object.isFrozen(second.reasons)).toBe(true);
    expect(e.cacheSize).toBe(1);
    e.clearCache();
    expect(e.cacheSize).toBe(0);
    expect(e.decide(r).cached).toBe(false);
  });

  it('is bounded: cleared when full', () => {
    const e = new PolicyEngine(PolicyEngine.compile({ policies: SHOP_POLICIES }), SHOP_ENTITIES, { cacheSize: 3, cacheAdmission: 1 });
    const r = (path: string): DecisionRequest => req(IDS.frontendEu, 'http:request', IDS.ordersEu, httpContext('GET', path));
    e.decide(r('/a'));
    e.decide(r('/b'));
    e.decide(r('/c'));
    expect(e.decide(r('/a')).cached).toBe(true);
    expect(e.cacheSize).toBe(3);
    e.decide(r('/d')); // full: the cache starts over with /d
    expect(e.cacheSize).toBe(1);
    expect(e.decide(r('/d')).cached).toBe(true);
    expect(e.decide(r('/a')).cached).toBe(false);
    const off = new PolicyEngine(PolicyEngine.compile({ policies: SHOP_POLICIES }), SHOP_ENTITIES, { cacheSize: 0 });
    off.decide(r('/a'));
    expect(off.decide(r('/a')).cached).toBe(false);
  });

  it('admits one in cacheAdmission of the decisions made in process; a repeated request gets in after a few misses; cedar-wasm decisions always', () => {
    const compiled = PolicyEngine.compile({ policies: SHOP_POLICIES });
    const e = new PolicyEngine(compiled, SHOP_ENTITIES);
    const r = (path: string): DecisionRequest => req(IDS.frontendEu, 'http:request', IDS.ordersEu, httpContext('GET', path));
    for (let i = 0; i < 4000; i++) expect(e.decide(r(`/orders/${i}`)).cached).toBe(false);
    // Default 1 in 8: 500 expected (a xorshift draw, so not exactly).
    expect(e.cacheSize).toBeGreaterThan(350);
    expect(e.cacheSize).toBeLessThan(650);
    let misses = 0;
    while (!e.decide(r('/orders/again')).cached) misses++;
    expect(misses).toBeGreaterThan(0);
    expect(misses).toBeLessThan(100);
    // Interleaved with unique requests (a pattern a counter could fall into step with), it still gets in.
    let repeatHits = 0;
    for (let i = 0; i < 400; i++) {
      e.decide(r(`/orders/u${i}`));
      if (e.decide(r('/orders/every-other')).cached) repeatHits++;
    }
    expect(repeatHits).toBeGreaterThan(300);
    // Every decision of the cedar-wasm engine is kept (each costs far more than an insertion).
    const wasm = new PolicyEngine(compiled, SHOP_ENTITIES, { inProcess: false });
    for (let i = 0; i < 50; i++) wasm.decide(r(`/orders/${i}`));
    expect(wasm.cacheSize).toBe(50);
    for (const bad of [0, -1, 1.5, 2 ** 21, Number.NaN]) {
      expectTesseraError(() => new PolicyEngine(compiled, SHOP_ENTITIES, { cacheAdmission: bad }), 'TESSERA_CONFIG_INVALID');
    }
  });

  it('a request that ends where a longer one continues keeps its own decision (leaf moved under a node)', () => {
    const e = new PolicyEngine(PolicyEngine.compile({ policies: SHOP_POLICIES }), SHOP_ENTITIES, { cacheAdmission: 1 });
    const short = req(IDS.frontendEu, 'tcp:connect', IDS.ordersEu, baseContext());
    const long = req(IDS.frontendEu, 'tcp:connect', IDS.ordersEu, { ...baseContext(), extra: 'x' } as PolicyContext);
    // The long request has a context attribute the schema does not declare: denied (and cached: the
    // fault is the request's), its trie path running through the short request's last key.
    const a = e.decide(short);
    const b = e.decide(long);
    expect(b.allow).toBe(false);
    expect(b.errors.join()).toMatch(/not declared/);
    expect(e.cacheSize).toBe(2);
    expect(e.decide(short)).toEqual({ ...a, cached: true });
    expect(e.decide(long)).toEqual({ ...b, cached: true });
    // And the other way round: the longer one first, then the one ending inside its path.
    const f = new PolicyEngine(PolicyEngine.compile({ policies: SHOP_POLICIES }), SHOP_ENTITIES, { cacheAdmission: 1 });
    f.decide(long);
    expect(f.decide(short)).toEqual(a);
    expect(f.decide(short)).toEqual({ ...a, cached: true });
    expect(f.decide(long)).toEqual({ ...b, cached: true });
  });

  it('does not cache requests with non-scalar or oversized values', () => {
    const e = shop();
    const long = req(IDS.frontendEu, 'http:request', IDS.ordersEu, httpContext('GET', `/orders/${'x'.repeat(2000)}`));
    e.decide(long);
    expect(e.decide(long).cached).toBe(false);
    const nested = req(IDS.frontendEu, 'http:request', IDS.ordersEu, { ...httpContext('GET', '/orders/1'), path: ['/orders/1'] as never });
    expect(e.decide(nested).allow).toBe(false);
    expect(e.decide(nested).cached).toBe(false);
    expect(e.cacheSize).toBe(0);
  });

  it('never answers one request with the decision of another (property)', () => {
    const cached = shop();
    const fresh = new PolicyEngine(PolicyEngine.compile({ policies: SHOP_POLICIES }), SHOP_ENTITIES, { cacheSize: 0 });
    const id = fc.constantFrom(...Object.values(IDS), `${IDS.ordersEu}x`, 'spiffe://example.org/s1', 'spiffe://example.org/s');
    const piece = fc.constantFrom('', 's', '1', ':', '1:', 's1:', 'GET', '/orders/', '/orders/1', 'n1;');
    const str = fc.array(piece, { maxLength: 4 }).map((a) => a.join(''));
    const value = fc.oneof(str, fc.integer({ min: -3, max: 100 }), fc.boolean());
    const context = fc.dictionary(fc.constantFrom('method', 'path', 'site', 'time', 'hour', 'risk', 'x', 'ss'), value, { maxKeys: 7 });
    const request = fc.record({ principal: id, action: fc.constantFrom<PolicyAction>('http:request', 'tcp:connect'), resource: id, context });
    const full = fc.record({ principal: id, action: fc.constant<PolicyAction>('http:request'), resource: id, context: fc.record({ method: fc.constantFrom('GET', 'POST'), path: str, site: str, time: fc.integer(), hour: fc.integer({ min: 0, max: 23 }), risk: fc.integer({ min: 0, max: 100 }) }) });
    fc.assert(
      fc.property(fc.array(fc.oneof(request, full), { minLength: 1, maxLength: 30 }), (reqs) => {
        for (const r of [...reqs, ...reqs]) {
          const a = cached.decide(r);
          const b = fresh.decide(r);
          expect({ ...a, cached: false }).toEqual(b);
        }
      }),
      { numRuns: 200 },
    );
  });
});
