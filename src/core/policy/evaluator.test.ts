/**
 * Hand-picked cases at the edges of the evaluator's semantics (exact i64 arithmetic past 2^53,
 * overflow at both ends, `like` escapes over non-BMP text, `has` paths, short-circuits that hide
 * errors, `in` over sets holding non-entities, fallbacks), each decided both ways by runCase and
 * compared with cedar-wasm. The random suite (evaluator.drt.test.ts) covers the rest.
 */
import { describe, expect, it } from 'vitest';
import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import { runCase, type DrtCase } from './drt.js';
import { compilePolicy } from './evaluator.js';

const P = { type: 'User', id: 'alice' };
const A = { type: 'Action', id: 'read' };
const R = { type: 'Doc', id: 'd1' };
const ENTITIES: cedar.EntityJson[] = [
  { uid: P, attrs: { n: 2 ** 52, name: 'a😀b*c', r: { s: 'x', inner: { k: 1 } } }, parents: [{ type: 'Group', id: 'eng' }] },
  { uid: { type: 'Group', id: 'eng' }, attrs: {}, parents: [{ type: 'Group', id: 'all' }] },
  { uid: R, attrs: { owner: { __entity: P } }, parents: [] },
];

function decide(when: string, context: Record<string, cedar.CedarValueJson> = {}): { decision: string; errored: string[]; fallback: string[] } {
  const c: DrtCase = { entities: ENTITIES, policies: { p: `permit (principal, action, resource) when { ${when} };` }, requests: [{ principal: P, action: A, resource: R, context }] };
  const r = runCase(c);
  expect(r.disagreement, when).toBeUndefined();
  const v = r.references[0]!;
  if (typeof v === 'string') throw new Error(v);
  return { decision: v.decision, errored: v.errored, fallback: r.fallback };
}

describe('in-process evaluator: edge cases, each checked against cedar-wasm', () => {
  it('computes exactly past 2^53 and errors on i64 overflow at both ends', () => {
    // principal.n is 2^52.
    expect(decide('principal.n * 1024 > principal.n * 1024 - 1')).toMatchObject({ decision: 'allow', errored: [] }); // 2^62
    expect(decide('principal.n * 2048 > 0')).toMatchObject({ decision: 'deny', errored: ['p'] }); // 2^63
    expect(decide('(0 - principal.n * 1024) - principal.n * 1024 < 0')).toMatchObject({ decision: 'allow', errored: [] }); // -2^63
    expect(decide('(0 - principal.n * 1024) - principal.n * 1024 - 1 < 0')).toMatchObject({ errored: ['p'] });
    expect(decide('-((0 - principal.n * 1024) - principal.n * 1024) > 0')).toMatchObject({ errored: ['p'] });
    expect(decide('principal.n * 1024 + 1 - 1 == principal.n * 1024 && principal.n * 1024 + 1 != principal.n * 1024')).toMatchObject({ decision: 'allow' });
  });

  it('leaves literals beyond ±2^53 and extension functions to cedar-wasm', () => {
    expect(decide('9223372036854775807 > 0')).toMatchObject({ decision: 'allow', fallback: ['p'] });
    expect(decide('ip("10.1.2.3").isInRange(ip("10.0.0.0/8"))')).toMatchObject({ decision: 'allow', fallback: ['p'] });
    expect(decide('principal.n > 0')).toMatchObject({ fallback: [] });
  });

  it('matches like patterns by characters, with escaped stars', () => {
    expect(decide('principal.name like "a*b\\*c"')).toMatchObject({ decision: 'allow' });
    expect(decide('principal.name like "a?b*"')).toMatchObject({ decision: 'deny' });
    expect(decide('principal.name like "*😀*"')).toMatchObject({ decision: 'allow' });
    expect(decide('principal.name like "a*b*c*"')).toMatchObject({ decision: 'allow' });
    expect(decide('principal.n like "*"')).toMatchObject({ errored: ['p'] });
  });

  it('follows has paths, and errors on attributes that are missing or of the wrong type', () => {
    expect(decide('principal has r.inner.k && principal.r.inner.k == 1')).toMatchObject({ decision: 'allow' });
    expect(decide('principal has r.s.k')).toMatchObject({ errored: ['p'] });
    expect(decide('principal has r.nope.k')).toMatchObject({ decision: 'deny', errored: [] });
    expect(decide('principal.nope == 1')).toMatchObject({ errored: ['p'] });
    expect(decide('Doc::"missing".owner == principal')).toMatchObject({ errored: ['p'] });
    expect(decide('Doc::"missing" has owner')).toMatchObject({ decision: 'deny', errored: [] });
    expect(decide('resource.owner == principal')).toMatchObject({ decision: 'allow' });
  });

  it('short-circuits &&, ||, if and is ... in the way Cedar does (hiding errors on the right)', () => {
    expect(decide('false && principal.nope')).toMatchObject({ decision: 'deny', errored: [] });
    expect(decide('true || principal.nope')).toMatchObject({ decision: 'allow', errored: [] });
    expect(decide('if true then true else principal.nope')).toMatchObject({ decision: 'allow' });
    expect(decide('principal is Doc in principal.nope')).toMatchObject({ decision: 'deny', errored: [] });
    expect(decide('principal is User in principal.nope')).toMatchObject({ errored: ['p'] });
    expect(decide('1 && true')).toMatchObject({ errored: ['p'] });
    expect(decide('[1] == [1, 1] && {a: 1} == {a: 1} && !({a: 1} == {a: 1, b: 2})')).toMatchObject({ decision: 'allow' });
  });

  it('walks the hierarchy for in, and errors on a set holding a non-entity even after a match', () => {
    expect(decide('principal in Group::"all"')).toMatchObject({ decision: 'allow' });
    expect(decide('principal in [Group::"x", Group::"all"]')).toMatchObject({ decision: 'allow' });
    expect(decide('principal in [Group::"all", 1]')).toMatchObject({ errored: ['p'] });
    expect(decide('Group::"eng" in principal')).toMatchObject({ decision: 'deny' });
    expect(decide('User::"bob" in User::"bob"')).toMatchObject({ decision: 'allow' });
  });

  it('reports what it does not support instead of compiling it', () => {
    const j = cedar.policyToJson('permit (principal, action, resource) when { principal.getTag("x") == 1 };');
    if (j.type !== 'success') throw new Error('parse');
    expect(compilePolicy('t', j.json)).toBe('getTag');
  });
});
