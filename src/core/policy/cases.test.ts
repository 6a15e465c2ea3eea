import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { expectTesseraError } from '../../../test/support/expect.js';
import { TesseraError } from '../errors.js';
import { isSpiffeId } from '../spiffe-id.js';
import { parseCases, runCases, type PolicyCases } from './cases.js';
import { PolicyEngine } from './engine.js';
import { IDS, SHOP_POLICIES } from './fixtures.js';
import { POLICY_ACTIONS } from './types.js';

const BAD = 'TESSERA_POLICY_CASES_INVALID';

const YAML_CASES = `
# Expected decisions for the shop.
entities:
  - id: ${IDS.frontendEu}
    attrs: { app: shop-frontend, site: cloud-eu }
  - id: ${IDS.ordersEu}
    attrs:
      app: orders
      site: cloud-eu
  - id: ${IDS.ordersEdge}
    attrs: { app: orders, site: edge-7 }
  - id: ${IDS.payments}
    attrs: { app: payments, site: cloud-eu, compliance: pci }
cases:
  - name: frontend reads orders
    principal: ${IDS.frontendEu}
    action: http:request
    resource: ${IDS.ordersEu}
    context: { method: GET, path: /orders/42, site: cloud-eu, time: 1767258000, hour: 9, risk: 5 }
    expect: allow
  - name: payments stays in its site
    principal: ${IDS.ordersEdge}
    action: http:request
    resource: ${IDS.payments}
    context: { method: POST, path: /charge, site: edge-7, time: 1767258000, hour: 9, risk: 5 }
    expect: deny
  - name: wrongly expected
    principal: ${IDS.frontendEu}
    action: tcp:connect
    resource: ${IDS.ordersEu}
    context: { site: cloud-eu, time: 1767258000, hour: 9, risk: 5 }
    expect: allow
  - name: no context is a deny
    principal: ${IDS.frontendEu}
    action: http:request
    resource: ${IDS.ordersEu}
    expect: deny
`;

describe('parseCases', () => {
  it('reads a YAML file', () => {
    const c = parseCases(YAML_CASES);
    expect(c.entities).toHaveLength(4);
    expect(c.entities[3]).toEqual({ id: IDS.payments, attrs: { app: 'payments', site: 'cloud-eu', compliance: 'pci' } });
    expect(c.cases).toHaveLength(4);
    expect(c.cases[0]).toEqual({
      name: 'frontend reads orders', principal: IDS.frontendEu, action: 'http:request', resource: IDS.ordersEu,
      context: { method: 'GET', path: '/orders/42', site: 'cloud-eu', time: 1767258000, hour: 9, risk: 5 }, expect: 'allow',
    });
    expect(c.cases[3]!.context).toEqual({});
  });

  it('reads the same file as JSON', () => {
    const c = parseCases(YAML_CASES);
    expect(parseCases(JSON.stringify(c))).toEqual(c);
  });

  const one = (fields: string): string => `cases:\n  - name: the case\n    principal: ${IDS.frontendEu}\n    action: http:request\n    resource: ${IDS.ordersEu}\n${fields}`;
  it.each([
    ['a bad expect', one('    expect: maybe\n'), /cases\[0\] "the case": expect must be allow or deny/],
    ['a missing expect', one(''), /cases\[0\] "the case": expect/],
    ['an unknown field', one('    expect: deny\n    exepct: allow\n'), /cases\[0\] "the case": unknown field "exepct"/],
    ['an unknown action', one('    expect: deny\n').replace('http:request', 'http:get'), /action must be one of/],
    ['a bad principal', one('    expect: deny\n').replace(IDS.frontendEu, 'spiffe://Example.org/x'), /principal must be a SPIFFE ID/],
    ['a nested context value', one('    expect: deny\n    context: { risk: [1] }\n'), /context\.risk must be a string, an integer or a boolean/],
    ['a fractional context value', one('    expect: deny\n    context: { risk: 0.5 }\n'), /context\.risk must be an integer/],
    ['a bad context key', one('    expect: deny\n    context: { "a b": 1 }\n'), /not an identifier/],
    ['a __proto__ context key', one('    expect: deny\n    context: { __proto__: 1 }\n'), /not an identifier/],
    ['a duplicate YAML key', one('    expect: deny\n    expect: allow\n'), /not valid YAML/],
    ['an unknown top-level field', `${one('    expect: deny\n')}extra: 1\n`, /unknown top-level field "extra"/],
    ['no cases', 'cases: []\n', /cases is empty/],
    ['no list', 'cases: 3\n', /cases must be a list/],
    ['a scalar document', 'hello', /the file must be a mapping/],
    ['two documents', `${one('    expect: deny\n')}---\n${one('    expect: deny\n')}`, /not valid YAML/],
    ['an unnamed case', 'cases:\n  - expect: deny\n', /cases\[0\]: name must be/],
    ['a repeated name', `${one('    expect: deny\n')}  - { name: the case, principal: ${IDS.frontendEu}, action: tcp:connect, resource: ${IDS.ordersEu}, expect: deny }\n`, /cases\[1\] "the case": the name is used/],
    ['an unknown attribute', `entities:\n  - { id: ${IDS.ordersEu}, attrs: { team: x } }\n${one('    expect: deny\n')}`, /entities\[0\].*unknown attribute "team"/],
    ['a repeated entity', `entities:\n  - { id: ${IDS.ordersEu} }\n  - { id: ${IDS.ordersEu} }\n${one('    expect: deny\n')}`, /entities\[1\].*listed twice/],
    ['a custom tag', one('    expect: !!binary aGVsbG8=\n'), /./],
  ])('refuses %s, naming the case', (_name, text, message) => {
    expect(expectTesseraError(() => parseCases(text), BAD).message).toMatch(message);
  });

  it('refuses an alias bomb', () => {
    const bomb = ['a: &a ["x","x","x","x","x","x","x","x","x"]', ...Array.from({ length: 9 }, (_, i) => `${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)}]`), 'cases: *j'].join('\n');
    expectTesseraError(() => parseCases(bomb), BAD);
  });

  function expectValid(c: PolicyCases): void {
    for (const e of c.entities) expect(isSpiffeId(e.id)).toBe(true);
    expect(c.cases.length).toBeGreaterThan(0);
    for (const k of c.cases) {
      expect(isSpiffeId(k.principal) && isSpiffeId(k.resource)).toBe(true);
      expect(POLICY_ACTIONS).toContain(k.action);
      expect(['allow', 'deny']).toContain(k.expect);
      for (const v of Object.values(k.context)) expect(['string', 'number', 'boolean']).toContain(typeof v);
    }
  }

  function check(text: string): void {
    let c: PolicyCases;
    try {
      c = parseCases(text);
    } catch (err) {
      expect(err).toBeInstanceOf(TesseraError);
      expect((err as TesseraError).code).toBe(BAD);
      return;
    }
    expectValid(c);
  }

  it('only ever throws TESSERA_POLICY_CASES_INVALID or returns a valid structure (arbitrary strings)', () => {
    fc.assert(fc.property(fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.string({ unit: 'grapheme-ascii', maxLength: 200 })), check), { numRuns: 1000 });
  });

  it('... and on mutations of a valid file (property)', () => {
    const tokens = fc.constantFrom(':', '-', ' ', '\n', '  ', '{', '}', '[', ']', ',', '&a', '*a', '!!str', '"', "'", '#', '|', '>', '? ', 'null', '~', '1.5', '0x10', 'true', 'allow', 'deny', 'http:request', IDS.ordersEu);
    fc.assert(
      fc.property(fc.nat({ max: YAML_CASES.length }), fc.nat({ max: 20 }), fc.array(tokens, { maxLength: 4 }), (at, cut, insert) => {
        check(YAML_CASES.slice(0, at) + insert.join('') + YAML_CASES.slice(Math.min(YAML_CASES.length, at + cut)));
      }),
      { numRuns: 1000 },
    );
  });
});

describe('runCases', () => {
  it('decides every case and reports mismatches', () => {
    const cases = parseCases(YAML_CASES);
    const engine = new PolicyEngine(PolicyEngine.compile({ policies: SHOP_POLICIES }), cases.entities);
    const results = runCases(engine, cases);
    expect(results.map((r) => [r.name, r.expected, r.actual, r.pass])).toEqual([
      ['frontend reads orders', 'allow', 'allow', true],
      ['payments stays in its site', 'deny', 'deny', true],
      ['wrongly expected', 'allow', 'deny', false],
      ['no context is a deny', 'deny', 'deny', true],
    ]);
    expect(results[0]!.reasons).toEqual(['frontend-reads-orders']);
    expect(results[1]!.reasons).toEqual(['residency.cedar#0']);
    expect(results[3]!.errors[0]).toMatch(/^request: context is missing/);
  });
});
