import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { expectTesseraError } from '../../test/support/expect.js';
import { canonicalJson, canonicalJsonChecked, jsonString, tryCanonicalJson } from './canonical-json.js';

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

  describe('the fast path is the checked encoder (byte-identical output, the same refusals)', () => {
    /** The checked encoder's result: its text, or its error's code and message. */
    const reference = (v: unknown): { text: string } | { code: string; message: string } => {
      try {
        return { text: canonicalJsonChecked(v) };
      } catch (err) {
        const e = err as { code: string; message: string };
        return { code: e.code, message: e.message };
      }
    };
    const same = (v: unknown): void => {
      const ref = reference(v);
      const fast = tryCanonicalJson(v);
      if ('text' in ref) {
        expect(fast).toBe(ref.text);
        expect(canonicalJson(v)).toBe(ref.text);
      } else {
        expect(fast).toBeUndefined();
        // canonicalJson still names the problem as the checked encoder does.
        expect(() => canonicalJson(v)).toThrow(ref.message);
        expectTesseraError(() => canonicalJson(v), 'TESSERA_CANONICAL_JSON_INVALID');
      }
    };
    // Keys that sort differently by code unit than by code point or locale, need escaping, look
    // like array indexes (Object.keys lists those first), or are special to objects.
    const key = fc.oneof(
      fc.string({ maxLength: 6 }),
      fc.string({ unit: 'binary', maxLength: 4 }),
      fc.constantFrom('10', '9', '0', '-1', '1.5', '__proto__', 'constructor', 'toJSON', 'a', 'B', 'é', '\uffff', '\u{1f600}', '\ud800', '"', '\\', '\n', ''),
    );
    const leaf = fc.oneof(
      fc.jsonValue({ maxDepth: 2 }),
      fc.string({ unit: 'binary' }),
      fc.double(),
      fc.constantFrom(-0, 1e21, 5e-324, Number.MAX_SAFE_INTEGER, -1e-7, NaN, Infinity, undefined, null, true),
      fc.constantFrom(new Date(0), new Map(), Buffer.from('x'), Symbol('s'), 1n, () => 1, [1, , 2], Object.create(null) as object, new (class Custom {})()),
    );
    const value = fc.letrec((tie) => ({
      v: fc.oneof({ depthSize: 'small', withCrossShrink: true }, leaf, fc.array(tie('v'), { maxLength: 5 }), fc.dictionary(key, tie('v'), { maxKeys: 6 }), tie('nullProto'), tie('wide')),
      // An object without a prototype is plain; one with many keys takes the other sort.
      nullProto: fc.dictionary(key, tie('v'), { maxKeys: 4 }).map((d) => Object.assign(Object.create(null) as object, d)),
      wide: fc.uniqueArray(key, { minLength: 17, maxLength: 30 }).map((ks) => Object.fromEntries(ks.map((k, i) => [k, i]))),
    })).v;

    it('on arbitrary values, JSON and not (property)', () => {
      fc.assert(fc.property(value, (v) => same(v)), { numRuns: 3000 });
      fc.assert(fc.property(fc.anything({ withBigInt: true, withDate: true, withMap: true, withSet: true, withTypedArray: true, withNullPrototype: true, withSparseArray: true, withObjectString: true, withBoxedValues: true, withUnicodeString: true }), (v) => same(v)), { numRuns: 2000 });
    });

    it('jsonString is JSON.stringify of any string (property)', () => {
      fc.assert(fc.property(fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.string({ unit: fc.constantFrom('a', '"', '\\', '\n', '\u0000', '\u001f', '\u007f', '\u2028', '\ud800', '\udfff', '\ud83d\ude00', 'é') })), (s) => {
        expect(jsonString(s)).toBe(JSON.stringify(s));
      }), { numRuns: 3000 });
    });

    it('on the edges: own __proto__ keys, symbol keys, cycles, shared references, the depth limit', () => {
      same(JSON.parse('{"__proto__":{"b":1},"a":[1]}'));
      same(Object.defineProperty({ a: 1 }, Symbol('s'), { value: 1, enumerable: false }));
      same({ [Symbol('s')]: 1, a: 1 });
      same(Object.defineProperty({ b: 1 }, 'hidden', { value: () => 1, enumerable: false }));
      const cyclic: Record<string, unknown> = { a: 1 };
      cyclic.z = { back: cyclic };
      same(cyclic);
      const arr: unknown[] = [];
      arr.push(arr);
      same(arr);
      const shared = { x: 1 };
      same({ a: shared, b: [shared, shared] });
      for (const depth of [62, 63, 64, 65]) {
        let deep: unknown = { leaf: 1 };
        for (let i = 0; i < depth; i++) deep = i % 2 ? [deep] : { d: deep };
        same(deep);
      }
      const extra = Object.assign([1, 2], { extra: 3 });
      same(extra);
    });
  });
});
