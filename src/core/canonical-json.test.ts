import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { expectTesseraError } from '../../test/support/expect.js';
import { canonicalJson } from './canonical-json.js';

describe('canonicalJson', () => {
  it('sorts keys and drops whitespace', () => {
    expect(canonicalJson({ b: 1, a: [true, null, 'x', { d: -0.5, c: {} }] })).toBe('{"a":[true,null,"x",{"c":{},"d":-0.5}],"b":1}');
    expect(canonicalJson('é\u2028"')).toBe(JSON.stringify('é\u2028"'));
  });

  it('is stable under key reordering and idempotent (property)', () => {
    const shuffleKeys = (v: unknown, seed: number): unknown => {
      if (Array.isArray(v)) return v.map((x, i) => shuffleKeys(x, seed + i));
      if (typeof v === 'object' && v !== null) {
        const entries = Object.entries(v);
        const order = entries.map((e, i) => [e, (i * 7919 + seed) % (entries.length + 1)] as const).sort((x, y) => x[1] - y[1]);
        return Object.fromEntries(order.map(([[k, x]], i) => [k, shuffleKeys(x, seed + i)]));
      }
      return v;
    };
    fc.assert(
      fc.property(fc.jsonValue(), fc.nat(), (v, seed) => {
        const c = canonicalJson(v);
        expect(canonicalJson(shuffleKeys(v, seed))).toBe(c);
        expect(canonicalJson(JSON.parse(c))).toBe(c);
      }),
      { numRuns: 500 },
    );
  });

  it('refuses what is not JSON', () => {
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    let deep: unknown = 1;
    for (let i = 0; i < 100; i++) deep = [deep];
    // eslint-disable-next-line no-sparse-arrays
    for (const v of [undefined, () => 1, Symbol('s'), 1n, NaN, Infinity, new Date(0), new Map(), Buffer.from('x'), cyclic, deep, [1, , 2], { a: undefined }]) {
      expectTesseraError(() => canonicalJson(v), 'TESSERA_CANONICAL_JSON_INVALID');
    }
  });
});
