import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { expectTesseraError } from '../../../test/support/expect.js';
import { decodeProof, encodeProof, proveDleq, verifyDleq, type DleqProof } from './dleq.js';
import { GROUP_ORDER, baseMul, mul, randomScalar, ready, scalarAdd, scalarFromBigint, type Point, type Scalar } from './group.js';

beforeAll(ready);

interface Statement {
  k: Scalar;
  B: Point;
  K: Point;
  Z: Point;
  context: Uint8Array;
}

function statement(context = Buffer.from('tessera/test')): Statement {
  const k = randomScalar();
  const B = baseMul(randomScalar());
  return { k, B, K: baseMul(k), Z: mul(k, B), context };
}

describe('DLEQ', () => {
  it('honest proofs verify, for any context', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (context) => {
        const st = statement(Buffer.from(context));
        const proof = proveDleq(st.k, st.B, st.K, st.Z, st.context);
        expect(verifyDleq(proof, st.B, st.K, st.Z, st.context)).toBe(true);
      }),
      { numRuns: 30 },
    );
  });

  it('is hedged: two proofs of one statement differ, and both verify', () => {
    const st = statement();
    const p1 = proveDleq(st.k, st.B, st.K, st.Z, st.context);
    const p2 = proveDleq(st.k, st.B, st.K, st.Z, st.context);
    expect(Buffer.from(encodeProof(p1)).equals(Buffer.from(encodeProof(p2)))).toBe(false);
    expect(verifyDleq(p2, st.B, st.K, st.Z, st.context)).toBe(true);
  });

  it('fails with a wrong share, wrong B, wrong K, wrong Z or wrong context', () => {
    const st = statement();
    const other = randomScalar();
    // A server that used another share for Z, and proves with it: K no longer matches.
    const Zwrong = mul(other, st.B);
    expect(verifyDleq(proveDleq(other, st.B, st.K, Zwrong, st.context), st.B, st.K, Zwrong, st.context)).toBe(false);
    // ...or proves with its real share over the wrong Z.
    expect(verifyDleq(proveDleq(st.k, st.B, st.K, Zwrong, st.context), st.B, st.K, Zwrong, st.context)).toBe(false);
    const proof = proveDleq(st.k, st.B, st.K, st.Z, st.context);
    const B2 = baseMul(randomScalar());
    expect(verifyDleq(proof, B2, st.K, st.Z, st.context)).toBe(false);
    expect(verifyDleq(proof, B2, st.K, mul(st.k, B2), st.context)).toBe(false);
    expect(verifyDleq(proof, st.B, baseMul(other), st.Z, st.context)).toBe(false);
    expect(verifyDleq(proof, st.B, st.K, Zwrong, st.context)).toBe(false);
    expect(verifyDleq(proof, st.B, st.K, st.Z, Buffer.from('tessera/test2'))).toBe(false);
    expect(verifyDleq(proof, st.B, st.K, st.Z, new Uint8Array(0))).toBe(false);
    // Swapping the roles of (G, K) and (B, Z) is a different statement.
    expect(verifyDleq(proof, st.K, st.B, st.Z, st.context)).toBe(false);
  });

  it('fails for any mutation of c or s', () => {
    const st = statement();
    const proof = proveDleq(st.k, st.B, st.K, st.Z, st.context);
    const bytes = encodeProof(proof);
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 63 }), fc.integer({ min: 1, max: 255 }), (pos, mask) => {
        const m = new Uint8Array(bytes);
        m[pos] = m[pos]! ^ mask;
        expect(verifyDleq(decodeProof(m), st.B, st.K, st.Z, st.context)).toBe(false);
      }),
      { numRuns: 100 },
    );
    fc.assert(
      fc.property(fc.bigInt({ min: 1n, max: GROUP_ORDER - 1n }), fc.boolean(), (d, onC) => {
        const delta = scalarFromBigint(d);
        const mutated: DleqProof = onC ? { c: scalarAdd(proof.c, delta), s: proof.s } : { c: proof.c, s: scalarAdd(proof.s, delta) };
        expect(verifyDleq(mutated, st.B, st.K, st.Z, st.context)).toBe(false);
      }),
      { numRuns: 50 },
    );
    expect(verifyDleq({ c: proof.s, s: proof.c }, st.B, st.K, st.Z, st.context)).toBe(false);
  });

  it('returns false, never throws, on malformed proofs and points', () => {
    const st = statement();
    const proof = proveDleq(st.k, st.B, st.K, st.Z, st.context);
    const id = new Uint8Array(32);
    const notCanonical = new Uint8Array(32).fill(0xff);
    // s + ℓ (as an unreduced integer) would be accepted by a verifier that reduces; this one refuses it.
    const sPlusL = scalarFromBigint(0n);
    {
      let carry = 0;
      const L = scalarFromBigint(GROUP_ORDER - 1n);
      for (let i = 0; i < 32; i++) {
        const v = proof.s[i]! + L[i]! + carry + (i === 0 ? 1 : 0);
        sPlusL[i] = v & 0xff;
        carry = v >> 8;
      }
    }
    const cases: [DleqProof, Point, Point, Point][] = [
      [{ c: proof.c, s: sPlusL }, st.B, st.K, st.Z],
      [{ c: proof.c, s: new Uint8Array(32) }, st.B, st.K, st.Z],
      [{ c: new Uint8Array(32), s: proof.s }, st.B, st.K, st.Z],
      [{ c: proof.c.subarray(0, 31), s: proof.s }, st.B, st.K, st.Z],
      [proof, id, st.K, st.Z],
      [proof, st.B, id, st.Z],
      [proof, st.B, st.K, id],
      [proof, notCanonical, st.K, st.Z],
      [proof, st.B, st.K, notCanonical],
      [proof, st.B, st.K, st.Z.subarray(1)],
      [null as unknown as DleqProof, st.B, st.K, st.Z],
      [{} as DleqProof, st.B, st.K, st.Z],
    ];
    for (const [p, B, K, Z] of cases) expect(verifyDleq(p, B, K, Z, st.context)).toBe(false);
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 64, maxLength: 64 }), (junk) => {
        expect(verifyDleq(decodeProof(junk), st.B, st.K, st.Z, st.context)).toBe(false);
      }),
      { numRuns: 50 },
    );
  });

  it('encodes to 64 bytes and back; decodeProof refuses other lengths', () => {
    const st = statement();
    const proof = proveDleq(st.k, st.B, st.K, st.Z, st.context);
    const bytes = encodeProof(proof);
    expect(bytes).toHaveLength(64);
    const back = decodeProof(Buffer.from(bytes));
    expect(verifyDleq(back, st.B, st.K, st.Z, st.context)).toBe(true);
    bytes.fill(0);
    expect(verifyDleq(back, st.B, st.K, st.Z, st.context)).toBe(true);
    for (const len of [0, 63, 65]) expectTesseraError(() => decodeProof(new Uint8Array(len)), 'TESSERA_SECRET_PROOF_INVALID');
  });

  it('proving over an invalid B is the caller\'s error (TESSERA_SECRET_POINT_INVALID)', () => {
    const st = statement();
    expectTesseraError(() => proveDleq(st.k, new Uint8Array(32), st.K, st.Z, st.context), 'TESSERA_SECRET_POINT_INVALID');
  });
});
