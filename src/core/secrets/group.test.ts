import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { expectTesseraError } from '../../../test/support/expect.js';
import {
  GROUP_ORDER,
  add,
  baseMul,
  decodePoint,
  decodeScalar,
  hashToScalar,
  isIdentity,
  mul,
  pointEquals,
  randomScalar,
  ready,
  scalarAdd,
  scalarFromBigint,
  scalarFromInt,
  scalarInv,
  scalarMul,
  scalarNeg,
  scalarSub,
  sub,
} from './group.js';

const L = GROUP_ORDER;
const toBig = (s: Uint8Array): bigint => s.reduceRight((acc, b) => (acc << 8n) | BigInt(b), 0n);
const arbScalar = fc.bigInt({ min: 1n, max: L - 1n }).map(scalarFromBigint);
const IDENTITY = new Uint8Array(32);

describe('before ready()', () => {
  it('refuses to run, then works once ready() has resolved', async () => {
    expectTesseraError(() => baseMul(scalarFromInt(1)), 'TESSERA_INTERNAL');
    await ready();
    await ready();
    expect(baseMul(scalarFromInt(1))).toHaveLength(32);
  });
});

describe('scalars', () => {
  it('add, sub, mul, neg and inv agree with BigInt arithmetic mod ℓ', async () => {
    await ready();
    fc.assert(
      fc.property(arbScalar, arbScalar, (a, b) => {
        const A = toBig(a);
        const B = toBig(b);
        expect(toBig(scalarAdd(a, b))).toBe((A + B) % L);
        expect(toBig(scalarSub(a, b))).toBe((((A - B) % L) + L) % L);
        expect(toBig(scalarMul(a, b))).toBe((A * B) % L);
        expect(toBig(scalarNeg(a))).toBe((L - A) % L);
        expect(toBig(scalarMul(a, scalarInv(a)))).toBe(1n);
      }),
      { numRuns: 200 },
    );
  });

  it('randomScalar is never zero, canonical and not repeated', async () => {
    await ready();
    const seen = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const s = randomScalar();
      expect(toBig(s) > 0n && toBig(s) < L).toBe(true);
      seen.add(Buffer.from(s).toString('hex'));
    }
    expect(seen.size).toBe(200);
  });

  it('scalarFromInt / scalarFromBigint encode little-endian and reduce', async () => {
    await ready();
    expect(Array.from(scalarFromInt(258).subarray(0, 3))).toEqual([2, 1, 0]);
    expect(toBig(scalarFromBigint(L + 5n))).toBe(5n);
    expect(toBig(scalarFromBigint(-1n))).toBe(L - 1n);
    expectTesseraError(() => scalarFromInt(-1), 'TESSERA_INTERNAL');
    expectTesseraError(() => scalarFromInt(1.5), 'TESSERA_INTERNAL');
  });

  it('decodeScalar accepts 1..ℓ-1 and refuses zero, ℓ, values above ℓ and wrong lengths', async () => {
    await ready();
    expect(toBig(decodeScalar(scalarFromBigint(L - 1n)))).toBe(L - 1n);
    expect(toBig(decodeScalar(scalarFromInt(1)))).toBe(1n);
    const enc = (v: bigint): Uint8Array => {
      const out = new Uint8Array(32);
      for (let i = 0; i < 32; i++) out[i] = Number((v >> BigInt(8 * i)) & 0xffn);
      return out;
    };
    for (const v of [0n, L, L + 1n, 2n ** 256n - 1n]) expectTesseraError(() => decodeScalar(enc(v)), 'TESSERA_SECRET_POINT_INVALID');
    expectTesseraError(() => decodeScalar(new Uint8Array(31).fill(1)), 'TESSERA_SECRET_POINT_INVALID');
    expectTesseraError(() => scalarInv(new Uint8Array(32)), 'TESSERA_SECRET_POINT_INVALID');
    fc.assert(fc.property(fc.bigInt({ min: L, max: 2n ** 256n - 1n }), (v) => {
      expectTesseraError(() => decodeScalar(enc(v)), 'TESSERA_SECRET_POINT_INVALID');
    }));
  });

  it('hashToScalar separates domains and part boundaries, and is deterministic', async () => {
    await ready();
    const a = Buffer.from('ab');
    const h = (d: string, ...p: Uint8Array[]): string => Buffer.from(hashToScalar(d, ...p)).toString('hex');
    expect(h('d', a, Buffer.from('c'))).toBe(h('d', Buffer.from('ab'), Buffer.from('c')));
    expect(h('d', a, Buffer.from('c'))).not.toBe(h('d', Buffer.from('a'), Buffer.from('bc')));
    expect(h('d', a)).not.toBe(h('e', a));
    expect(h('d', a)).not.toBe(h('d', a, new Uint8Array(0)));
    expect(h('da', Buffer.from('b'))).not.toBe(h('d', Buffer.from('ab')));
    expect(toBig(hashToScalar('d', a)) < L).toBe(true);
  });
});

describe('points', () => {
  it('(a+b)·G = a·G + b·G, a·(b·G) = (ab)·G, b⁻¹·(b·P) = P, (a-b)·G = a·G - b·G', async () => {
    await ready();
    fc.assert(
      fc.property(arbScalar, arbScalar, arbScalar, (a, b, p) => {
        fc.pre(toBig(a) !== toBig(b) && (toBig(a) + toBig(b)) % L !== 0n);
        const P = baseMul(p);
        expect(pointEquals(baseMul(scalarAdd(a, b)), add(baseMul(a), baseMul(b)))).toBe(true);
        expect(pointEquals(mul(a, baseMul(b)), baseMul(scalarMul(a, b)))).toBe(true);
        expect(pointEquals(mul(scalarInv(b), mul(b, P)), P)).toBe(true);
        expect(pointEquals(baseMul(scalarSub(a, b)), sub(baseMul(a), baseMul(b)))).toBe(true);
      }),
      { numRuns: 40 },
    );
  });

  it('P + (−P) is the identity, which add allows but mul and decodePoint refuse', async () => {
    await ready();
    const a = randomScalar();
    const Z = add(baseMul(a), baseMul(scalarNeg(a)));
    expect(isIdentity(Z)).toBe(true);
    expectTesseraError(() => mul(randomScalar(), Z), 'TESSERA_SECRET_POINT_INVALID');
    expectTesseraError(() => decodePoint(Z), 'TESSERA_SECRET_POINT_INVALID');
    expect(pointEquals(add(baseMul(a), IDENTITY), baseMul(a))).toBe(true);
  });

  it('mul and baseMul refuse a zero scalar (the product would be the identity)', async () => {
    await ready();
    expectTesseraError(() => baseMul(new Uint8Array(32)), 'TESSERA_SECRET_POINT_INVALID');
    expectTesseraError(() => mul(new Uint8Array(32), baseMul(randomScalar())), 'TESSERA_SECRET_POINT_INVALID');
    expectTesseraError(() => mul(scalarFromBigint(L), baseMul(randomScalar())), 'TESSERA_SECRET_POINT_INVALID');
  });

  it('decodePoint, mul and add refuse non-canonical and invalid encodings; decodePoint returns a copy', async () => {
    await ready();
    const P = baseMul(randomScalar());
    const copy = decodePoint(P);
    expect(copy).toEqual(P);
    copy[0] = copy[0]! ^ 1;
    expect(P).not.toEqual(copy);
    // 0xff…ff is above p = 2^255 − 19: not canonical. Odd "s" (low bit set) is never canonical either.
    const tooBig = new Uint8Array(32).fill(0xff);
    const odd = new Uint8Array(P);
    odd[0] = odd[0]! | 1;
    for (const bad of [tooBig, odd, new Uint8Array(31), new Uint8Array(33)]) {
      expectTesseraError(() => decodePoint(bad), 'TESSERA_SECRET_POINT_INVALID');
      expectTesseraError(() => mul(randomScalar(), bad), 'TESSERA_SECRET_POINT_INVALID');
    }
    expectTesseraError(() => add(P, tooBig), 'TESSERA_SECRET_POINT_INVALID');
    expectTesseraError(() => sub(tooBig, P), 'TESSERA_SECRET_POINT_INVALID');
  });

  it('random 32-byte strings are either refused or valid non-identity points, never anything else', async () => {
    await ready();
    let valid = 0;
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), (bytes) => {
        let P: Uint8Array | undefined;
        try {
          P = decodePoint(bytes);
        } catch (err) {
          expect((err as { code?: string }).code).toBe('TESSERA_SECRET_POINT_INVALID');
          return;
        }
        valid++;
        expect(isIdentity(P)).toBe(false);
        expect(mul(scalarFromInt(1), P)).toEqual(P);
      }),
      { numRuns: 300 },
    );
    // About 1 in 8 random strings is a valid encoding; mostly checking both branches ran.
    expect(valid).toBeGreaterThan(0);
  });

  it('pointEquals compares bytes, and false on different lengths', async () => {
    await ready();
    const P = baseMul(randomScalar());
    expect(pointEquals(P, new Uint8Array(P))).toBe(true);
    expect(pointEquals(P, baseMul(randomScalar()))).toBe(false);
    expect(pointEquals(P, P.subarray(0, 31))).toBe(false);
  });
});
