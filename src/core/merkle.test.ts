import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { expectTesseraError } from '../../test/support/expect.js';
import { TesseraError } from './errors.js';
import {
  EMPTY_ROOT,
  MemoryLeafSource,
  MerkleFrontier,
  consistencyProof,
  inclusionProof,
  leafHash,
  nodeHash,
  rootOf,
  subtreeRoot,
  verifyConsistency,
  verifyInclusion,
  type LeafHashSource,
} from './merkle.js';

const hx = (s: string): Buffer => Buffer.from(s, 'hex');
const hexes = (bs: readonly Uint8Array[]): string[] => bs.map((b) => Buffer.from(b).toString('hex'));

// ---------------------------------------------------------------------------------------------
// Published test vectors of the Certificate Transparency test tree (RFC 6962 hashing = RFC 9162
// §2.1): github.com/transparency-dev/merkle, testonly/constants.go (LeafInputs, NodeHashes,
// RootHashes, CompactTrees, EmptyRootHash; commit 582a6ad190b6848f1d26f8bf08ddef29955d9db1) and
// proof/verify_test.go (inclusionProofs, consistencyProofs; commit
// 02194e9afb6c1d95b5381350007963aa70fff472). The same tree and values are in
// google/certificate-transparency-go's merkletree tests. Hash values only (data), no code.
// ---------------------------------------------------------------------------------------------
const LEAF_INPUTS = ['', '00', '10', '2021', '3031', '40414243', '5051525354555657', '606162636465666768696a6b6c6d6e6f'].map(hx);

/** NODE_HASHES[level][index]: the complete subtrees of the 8-leaf tree. */
const NODE_HASHES = [
  [
    '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
    '96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7',
    '0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7',
    '07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7',
    'bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b',
    '4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658',
    'b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f',
    '46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1',
  ],
  [
    'fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125',
    '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e',
    '0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a',
    'ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0',
  ],
  ['d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7', '6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4'],
  ['5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328'],
];
const nh = (level: number, index: number): string => NODE_HASHES[level]![index]!;

/** ROOTS[size], size 0..8. */
const ROOTS = [
  'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
  '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
  'fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125',
  'aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77',
  'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
  '4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4',
  '76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef',
  'ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c',
  '5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328',
];
const root = (size: number): Buffer => hx(ROOTS[size]!);

/** COMPACT[size]: the compact range (the frontier's hashes) after `size` appends. */
const COMPACT = [[], [nh(0, 0)], [nh(1, 0)], [nh(1, 0), nh(0, 2)], [nh(2, 0)], [nh(2, 0), nh(0, 4)], [nh(2, 0), nh(1, 2)], [nh(2, 0), nh(1, 2), nh(0, 6)], [nh(3, 0)]];

/** verify_test.go's inclusionProofs, with its 1-based leaf turned into our 0-based index. */
const INCLUSION = [
  { index: 0, size: 1, proof: [] },
  { index: 0, size: 8, proof: [nh(0, 1), nh(1, 1), nh(2, 1)] },
  { index: 5, size: 8, proof: [nh(0, 4), nh(1, 3), nh(2, 0)] },
  { index: 2, size: 3, proof: [nh(1, 0)] },
  { index: 1, size: 5, proof: [nh(0, 0), nh(1, 1), nh(0, 4)] },
];
const INCLUSION_RAW_HEX = [
  [],
  ['96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7', '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e', '6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4'],
  ['bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b', 'ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0', 'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7'],
  ['fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125'],
  ['6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d', '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e', 'bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b'],
];

/** verify_test.go's consistencyProofs. */
const CONSISTENCY = [
  { m: 1, n: 1, proof: [] as string[] },
  { m: 1, n: 8, proof: ['96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7', '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e', '6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4'] },
  { m: 6, n: 8, proof: ['0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a', 'ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0', 'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7'] },
  { m: 2, n: 5, proof: ['5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e', 'bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b'] },
  { m: 6, n: 7, proof: ['0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a', 'b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f', 'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7'] },
];
const SOME_HASH = hx('abacaba000000000000000000000000000000000000000000060061e00123456');

function vectorSource(): MemoryLeafSource {
  const src = new MemoryLeafSource();
  for (const d of LEAF_INPUTS) src.append(leafHash(d));
  return src;
}

/** A source that counts what it is asked for. */
function countingSource(inner: LeafHashSource): LeafHashSource & { leavesRead: number; lookups: number } {
  const s = {
    leavesRead: 0,
    lookups: 0,
    leafHashes(start: number, end: number): Buffer[] {
      s.leavesRead += end - start;
      return inner.leafHashes(start, end);
    },
    ...(inner.subtreeHash
      ? {
          subtreeHash(level: number, index: number): Buffer | undefined {
            s.lookups++;
            return inner.subtreeHash!(level, index);
          },
        }
      : {}),
  };
  return s;
}

function flipBit(b: Uint8Array, bitIndex: number): Buffer {
  const c = Buffer.from(b);
  c[Math.floor(bitIndex / 8) % c.length]! ^= 1 << bitIndex % 8;
  return c;
}

function distinctLeaves(n: number, salt = 0): Buffer[] {
  return Array.from({ length: n }, (_, i) => leafHash(Buffer.from(`record ${salt}/${i}`)));
}

function sourceOf(leaves: readonly Buffer[], cacheLevel?: number): MemoryLeafSource {
  const src = new MemoryLeafSource(cacheLevel === undefined ? {} : { cacheLevel });
  for (const h of leaves) src.append(h);
  return src;
}

/** Small sources, built once, shared by the properties (roots[k] = root at size k). */
const SHARED = (() => {
  const leaves = distinctLeaves(300, 7);
  const src = sourceOf(leaves);
  const roots = [EMPTY_ROOT];
  for (let k = 1; k <= leaves.length; k++) roots.push(rootOf(leaves.slice(0, k)));
  return { leaves, src, roots };
})();

describe('hashes (RFC 9162 §2.1.1)', () => {
  it('hashes leaves with 0x00 and nodes with 0x01, and the empty tree to SHA-256("")', () => {
    expect(hexes(LEAF_INPUTS.map(leafHash))).toEqual(NODE_HASHES[0]);
    expect(leafHash(new Uint8Array([1, 2])).toString('hex')).toBe(createHash('sha256').update(Buffer.from([0, 1, 2])).digest('hex'));
    expect(nodeHash(hx(nh(0, 0)), hx(nh(0, 1))).toString('hex')).toBe(nh(1, 0));
    expect(EMPTY_ROOT.toString('hex')).toBe(ROOTS[0]);
    expectTesseraError(() => nodeHash(Buffer.alloc(31), Buffer.alloc(32)), 'TESSERA_AUDIT_STATE_INVALID');
  });

  it('computes the published root of every prefix of the test tree, and every complete subtree', () => {
    const leaves = LEAF_INPUTS.map(leafHash);
    for (let size = 0; size <= 8; size++) expect(rootOf(leaves.slice(0, size)).toString('hex'), `size ${size}`).toBe(ROOTS[size]);
    const src = vectorSource();
    for (const [level, row] of NODE_HASHES.entries()) {
      for (const [index, h] of row.entries()) expect(subtreeRoot(src, index * 2 ** level, (index + 1) * 2 ** level).toString('hex')).toBe(h);
    }
    for (let size = 0; size <= 8; size++) expect(subtreeRoot(src, 0, size).toString('hex')).toBe(ROOTS[size]);
  });

  it('rootOf refuses a hash that is not 32 bytes, and returns copies', () => {
    expectTesseraError(() => rootOf([Buffer.alloc(32), Buffer.alloc(33)]), 'TESSERA_AUDIT_STATE_INVALID');
    const h = leafHash(Buffer.from('x'));
    const r = rootOf([h]);
    r[0] = r[0]! ^ 1;
    expect(h.equals(r)).toBe(false);
    const e = rootOf([]);
    e[0] = 0;
    expect(EMPTY_ROOT.toString('hex')).toBe(ROOTS[0]);
  });
});

describe('MerkleFrontier', () => {
  it('holds the published compact range and root after each append of the test tree', () => {
    const f = new MerkleFrontier();
    expect(f.toJSON()).toEqual({ size: 0, hashes: [] });
    expect(f.root().toString('hex')).toBe(ROOTS[0]);
    for (const [i, d] of LEAF_INPUTS.entries()) {
      f.append(leafHash(d));
      expect(f.size).toBe(i + 1);
      expect(f.toJSON()).toEqual({ size: i + 1, hashes: COMPACT[i + 1] });
      expect(f.root().toString('hex')).toBe(ROOTS[i + 1]);
    }
  });

  it('reports each complete subtree an append forms, which are the published node hashes', () => {
    const f = new MerkleFrontier();
    const seen: string[] = [];
    for (const d of LEAF_INPUTS) f.append(leafHash(d), (level, index, h) => seen.push(`${level}/${index}/${h.toString('hex')}`));
    const expected = [
      [1, 0],
      [1, 1],
      [2, 0],
      [1, 2],
      [1, 3],
      [2, 1],
      [3, 0],
    ].map(([l, i]) => `${l}/${i}/${nh(l!, i!)}`);
    expect(seen).toEqual(expected);
  });

  it('refuses a leaf hash that is not 32 bytes and leaves its state alone', () => {
    const f = new MerkleFrontier();
    f.append(Buffer.alloc(32, 1));
    expectTesseraError(() => f.append(Buffer.alloc(31)), 'TESSERA_AUDIT_STATE_INVALID');
    expectTesseraError(() => f.append('x'.repeat(32) as unknown as Buffer), 'TESSERA_AUDIT_STATE_INVALID');
    expect(f.size).toBe(1);
  });

  it('copies what it is given and what it returns', () => {
    const h = Buffer.alloc(32, 5);
    const f = new MerkleFrontier();
    f.append(h);
    h.fill(0);
    expect(f.root().equals(Buffer.alloc(32, 5))).toBe(true);
    f.root().fill(9);
    expect(f.root().equals(Buffer.alloc(32, 5))).toBe(true);
    const c = f.clone();
    c.append(h);
    expect(f.size).toBe(1);
    expect(c.size).toBe(2);
  });

  it('property: its root equals rootOf for any sequence of leaves, and it resumes from toJSON/fromJSON', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 40 }), { maxLength: 200 }), fc.nat(), (datas, cut) => {
        const leaves = datas.map(leafHash);
        const f = new MerkleFrontier();
        const k = leaves.length === 0 ? 0 : cut % (leaves.length + 1);
        for (const h of leaves.slice(0, k)) f.append(h);
        // A restart: the state goes through JSON text, as the control plane stores it.
        const resumed = MerkleFrontier.fromJSON(JSON.parse(JSON.stringify(f)));
        expect(resumed.size).toBe(k);
        expect(resumed.root().equals(f.root())).toBe(true);
        for (const h of leaves.slice(k)) resumed.append(h);
        expect(resumed.root().equals(rootOf(leaves))).toBe(true);
        expect(MerkleFrontier.fromSource(sourceOf(leaves), leaves.length).toJSON()).toEqual(resumed.toJSON());
      }),
      { numRuns: 200 },
    );
  });

  const good = { size: 3, hashes: [nh(1, 0), nh(0, 2)] };
  const bad: [string, unknown][] = [
    ['null', null],
    ['an array', [3, []]],
    ['a string', JSON.stringify(good)],
    ['a missing field', { size: 3 }],
    ['an extra field', { ...good, alg: 'sha256' }],
    ['a negative size', { size: -1, hashes: [] }],
    ['a fractional size', { size: 1.5, hashes: [nh(0, 0)] }],
    ['a size beyond 2^53', { size: 2 ** 53, hashes: [nh(0, 0)] }],
    ['a string size', { size: '3', hashes: good.hashes }],
    ['hashes not an array', { size: 1, hashes: nh(0, 0) }],
    ['too few hashes for the size', { size: 3, hashes: [nh(1, 0)] }],
    ['too many hashes for the size', { size: 4, hashes: good.hashes }],
    ['uppercase hex', { size: 1, hashes: [nh(0, 0).toUpperCase()] }],
    ['a short hash', { size: 1, hashes: [nh(0, 0).slice(2)] }],
    ['a long hash', { size: 1, hashes: [`${nh(0, 0)}00`] }],
    ['a non-hex hash', { size: 1, hashes: [`${nh(0, 0).slice(1)}g`] }],
    ['a number as hash', { size: 1, hashes: [1] }],
  ];
  it.each(bad)('fromJSON refuses %s', (_name, state) => {
    expectTesseraError(() => MerkleFrontier.fromJSON(state), 'TESSERA_AUDIT_STATE_INVALID');
  });

  it('fromJSON accepts the stored form and nothing else, whatever it is given (fast-check)', () => {
    expect(MerkleFrontier.fromJSON(good).root().toString('hex')).toBe(ROOTS[3]);
    fc.assert(
      fc.property(fc.anything(), (state) => {
        try {
          const f = MerkleFrontier.fromJSON(state);
          expect(f.toJSON()).toEqual(state);
        } catch (err) {
          expect(err).toBeInstanceOf(TesseraError);
          expect((err as TesseraError).code).toBe('TESSERA_AUDIT_STATE_INVALID');
        }
      }),
      { numRuns: 500 },
    );
    // Valid-looking states with a random size: accepted iff the hash count is the popcount.
    fc.assert(
      fc.property(fc.maxSafeNat(), fc.nat({ max: 60 }), (size, count) => {
        const state = { size, hashes: Array.from({ length: count }, () => nh(0, 0)) };
        const popcount = size.toString(2).split('1').length - 1;
        if (count === popcount) expect(MerkleFrontier.fromJSON(state).size).toBe(size);
        else expectTesseraError(() => MerkleFrontier.fromJSON(state), 'TESSERA_AUDIT_STATE_INVALID');
      }),
    );
  });

  it('appends past 2^32 leaves with exact (non-32-bit) arithmetic', () => {
    // A frontier resumed at 2^32 + 1 leaves (all-zero stand-in hashes) merges like a binary counter.
    const f = MerkleFrontier.fromJSON({ size: 2 ** 32 + 1, hashes: [nh(0, 0), nh(0, 1)] });
    const seen: string[] = [];
    f.append(hx(nh(0, 2)), (level, index) => seen.push(`${level}/${index}`));
    expect(seen).toEqual(['1/2147483648']);
    expect(f.toJSON()).toEqual({ size: 2 ** 32 + 2, hashes: [nh(0, 0), nodeHash(hx(nh(0, 1)), hx(nh(0, 2))).toString('hex')] });
  });
});

describe('inclusion proofs (RFC 9162 §2.1.3)', () => {
  it('generates the published proofs and verifies them', () => {
    const src = vectorSource();
    for (const [i, v] of INCLUSION.entries()) {
      expect(v.proof, 'vector transcription').toEqual(INCLUSION_RAW_HEX[i]);
      const proof = inclusionProof(src, v.index, v.size);
      expect(hexes(proof), `${v.index}@${v.size}`).toEqual(v.proof);
      expect(verifyInclusion(leafHash(LEAF_INPUTS[v.index]!), v.index, v.size, proof, root(v.size))).toBe(true);
    }
  });

  it('fails the corrupted published proofs (verify_test.go corruptInclusionProof probes)', () => {
    for (const v of INCLUSION) {
      const leaf = leafHash(LEAF_INPUTS[v.index]!);
      const proof = v.proof.map(hx);
      const r = root(v.size);
      const probes: [string, number, number, Buffer[], Uint8Array, Uint8Array][] = [
        ['index - 1', v.index - 1, v.size, proof, r, leaf],
        ['index + 1', v.index + 1, v.size, proof, r, leaf],
        ['index ^ 2', v.index ^ 2, v.size, proof, r, leaf],
        ['size * 2', v.index, v.size * 2, proof, r, leaf],
        ['size / 2', v.index, Math.floor(v.size / 2), proof, r, leaf],
        ['wrong leaf', v.index, v.size, proof, r, Buffer.from('WrongLeaf')],
        ['empty root', v.index, v.size, proof, EMPTY_ROOT, leaf],
        ['random root', v.index, v.size, proof, SOME_HASH, leaf],
        ['trailing garbage', v.index, v.size, [...proof, Buffer.alloc(0)], r, leaf],
        ['trailing root', v.index, v.size, [...proof, r], r, leaf],
        ['preceding garbage', v.index, v.size, [Buffer.alloc(0), ...proof], r, leaf],
        ['preceding root', v.index, v.size, [r, ...proof], r, leaf],
        ...proof.map((_, i): [string, number, number, Buffer[], Uint8Array, Uint8Array] => ['flipped bit 3 of proof[i]', v.index, v.size, proof.map((p, j) => (j === i ? flipBit(p, 3) : p)), r, leaf]),
      ];
      if (proof.length > 0) probes.push(['removed component', v.index, v.size, proof.slice(0, -1), r, leaf]);
      if (proof.length > 1) probes.push(['inserted component', v.index, v.size, [proof[0]!, SOME_HASH, ...proof.slice(1)], r, leaf]);
      for (const [name, index, size, p, rt, lf] of probes) expect(verifyInclusion(lf, index, size, p, rt), `${v.index}@${v.size}: ${name}`).toBe(false);
    }
  });

  it('verifies the single-entry tree only with its own hash as root (verify_test.go)', () => {
    const h = leafHash(Buffer.from('data'));
    expect(verifyInclusion(h, 0, 1, [], h)).toBe(true);
    expect(verifyInclusion(h, 0, 1, [], Buffer.alloc(0))).toBe(false);
    expect(verifyInclusion(Buffer.alloc(0), 0, 1, [], h)).toBe(false);
    expect(verifyInclusion(Buffer.alloc(0), 0, 1, [], Buffer.alloc(0))).toBe(false);
    for (const [index, size] of [
      [0, 0],
      [1, 0],
      [2, 1],
      [1, 1],
    ] as const) {
      expect(verifyInclusion(SOME_HASH, index, size, [], EMPTY_ROOT), `${index}@${size}`).toBe(false);
      expect(verifyInclusion(EMPTY_ROOT, index, size, [], EMPTY_ROOT), `${index}@${size}`).toBe(false);
    }
  });

  it('returns false, never throws, for malformed arguments', () => {
    const { src, leaves, roots } = SHARED;
    const proof = inclusionProof(src, 3, 10);
    const ok = (): boolean => verifyInclusion(leaves[3]!, 3, 10, proof, roots[10]!);
    expect(ok()).toBe(true);
    const cases: [string, () => boolean][] = [
      ['index = size', () => verifyInclusion(leaves[3]!, 10, 10, proof, roots[10]!)],
      ['negative index', () => verifyInclusion(leaves[3]!, -1, 10, proof, roots[10]!)],
      ['fractional index', () => verifyInclusion(leaves[3]!, 3.5, 10, proof, roots[10]!)],
      ['NaN size', () => verifyInclusion(leaves[3]!, 3, Number.NaN, proof, roots[10]!)],
      ['huge size', () => verifyInclusion(leaves[3]!, 3, 2 ** 60, proof, roots[10]!)],
      ['a string index', () => verifyInclusion(leaves[3]!, '3' as unknown as number, 10, proof, roots[10]!)],
      ['a bigint size', () => verifyInclusion(leaves[3]!, 3, 10n as unknown as number, proof, roots[10]!)],
      ['proof not an array', () => verifyInclusion(leaves[3]!, 3, 10, null as unknown as Buffer[], roots[10]!)],
      ['a hex string in the proof', () => verifyInclusion(leaves[3]!, 3, 10, [proof[0]!.toString('hex') as unknown as Buffer, ...proof.slice(1)], roots[10]!)],
      ['a 33-byte proof hash', () => verifyInclusion(leaves[3]!, 3, 10, [Buffer.concat([proof[0]!, Buffer.alloc(1)]), ...proof.slice(1)], roots[10]!)],
      ['a 1,000-hash proof', () => verifyInclusion(leaves[3]!, 3, 10, Array.from({ length: 1000 }, () => proof[0]!), roots[10]!)],
      ['a short root', () => verifyInclusion(leaves[3]!, 3, 10, proof, roots[10]!.subarray(1))],
      ['a sparse proof array', () => verifyInclusion(leaves[3]!, 3, 10, new Array<Buffer>(proof.length), roots[10]!)],
      ['leaf undefined', () => verifyInclusion(undefined as unknown as Buffer, 3, 10, proof, roots[10]!)],
    ];
    for (const [name, run] of cases) expect(run(), name).toBe(false);
    // Any Uint8Array works, not only Buffers (a subarray at an offset too).
    const big = new Uint8Array(100);
    big.set(roots[10]!, 7);
    expect(verifyInclusion(new Uint8Array(leaves[3]!), 3, 10, proof.map((p) => new Uint8Array(p)), big.subarray(7, 39))).toBe(true);
    fc.assert(
      fc.property(fc.anything(), fc.anything(), fc.anything(), fc.anything(), fc.anything(), (a, b, c, d, e) => {
        expect(verifyInclusion(a as Buffer, b as number, c as number, d as Buffer[], e as Buffer)).toBe(false);
      }),
      { numRuns: 300 },
    );
  });

  it('property: every proof verifies, and fails for another index, another size\'s root, or any flipped bit', () => {
    const { src, leaves, roots } = SHARED;
    fc.assert(
      fc.property(fc.integer({ min: 1, max: leaves.length }), fc.nat(), fc.nat(), fc.nat(), fc.nat({ max: 255 }), (size, i, j, other, bitIndex) => {
        const index = i % size;
        const proof = inclusionProof(src, index, size);
        expect(proof.length).toBeLessThanOrEqual(Math.ceil(Math.log2(size)));
        const leaf = leaves[index]!;
        const r = roots[size]!;
        expect(verifyInclusion(leaf, index, size, proof, r)).toBe(true);
        const wrongIndex = j % (size + 2);
        if (wrongIndex !== index) expect(verifyInclusion(leaf, wrongIndex, size, proof, r)).toBe(false);
        const otherSize = 1 + (other % leaves.length);
        if (otherSize !== size) expect(verifyInclusion(leaf, index, otherSize, proof, roots[otherSize]!)).toBe(false);
        expect(verifyInclusion(flipBit(leaf, bitIndex), index, size, proof, r)).toBe(false);
        expect(verifyInclusion(leaf, index, size, proof, flipBit(r, bitIndex))).toBe(false);
        if (proof.length > 0) {
          const k = j % proof.length;
          expect(verifyInclusion(leaf, index, size, proof.map((p, x) => (x === k ? flipBit(p, bitIndex) : p)), r)).toBe(false);
          expect(verifyInclusion(leaf, index, size, proof.slice(0, -1), r)).toBe(false);
        }
        expect(verifyInclusion(leaf, index, size, [...proof, r], r)).toBe(false);
      }),
      { numRuns: 500 },
    );
  });

  it('refuses impossible ranges with TESSERA_AUDIT_RANGE', () => {
    const src = vectorSource();
    for (const [index, size] of [
      [0, 0],
      [1, 0],
      [2, 1],
      [8, 8],
      [-1, 4],
      [1.5, 4],
      [Number.NaN, 4],
      [0, 2 ** 53],
    ] as const) {
      expectTesseraError(() => inclusionProof(src, index, size), 'TESSERA_AUDIT_RANGE');
    }
    // A size beyond what the source holds.
    expectTesseraError(() => inclusionProof(src, 0, 9), 'TESSERA_AUDIT_RANGE');
    // A source that answers with fewer hashes than asked for, or a malformed one.
    const short: LeafHashSource = { leafHashes: (s, e) => src.leafHashes(s, Math.min(e, 8)).slice(0, Math.max(0, e - s - 1)) };
    expectTesseraError(() => inclusionProof(short, 0, 8), 'TESSERA_AUDIT_RANGE');
    const malformed: LeafHashSource = { leafHashes: (s, e) => src.leafHashes(s, e).map((h) => h.subarray(1)) };
    expectTesseraError(() => inclusionProof(malformed, 0, 8), 'TESSERA_AUDIT_STATE_INVALID');
    expectTesseraError(() => subtreeRoot(src, 3, 2), 'TESSERA_AUDIT_RANGE');
    expectTesseraError(() => subtreeRoot(src, 0, 9), 'TESSERA_AUDIT_RANGE');
    expectTesseraError(() => MerkleFrontier.fromSource(src, 9), 'TESSERA_AUDIT_RANGE');
    expectTesseraError(() => MerkleFrontier.fromSource(src, -1), 'TESSERA_AUDIT_RANGE');
  });
});

describe('consistency proofs (RFC 9162 §2.1.4)', () => {
  it('generates the published proofs and verifies them', () => {
    const src = vectorSource();
    for (const v of CONSISTENCY) {
      const proof = consistencyProof(src, v.m, v.n);
      expect(hexes(proof), `${v.m}→${v.n}`).toEqual(v.proof);
      expect(verifyConsistency(v.m, v.n, root(v.m), root(v.n), proof)).toBe(true);
    }
  });

  it('fails the corrupted published proofs (verify_test.go corruptConsistencyProof probes)', () => {
    for (const v of CONSISTENCY.filter((c) => c.proof.length > 0)) {
      const proof = v.proof.map(hx);
      const [r1, r2] = [root(v.m), root(v.n)];
      const wrong = Buffer.from('WrongRoot');
      const probes: [string, number, number, Uint8Array, Uint8Array, Uint8Array[]][] = [
        ['m - 1', v.m - 1, v.n, r1, r2, proof],
        ['m + 1', v.m + 1, v.n, r1, r2, proof],
        ['m ^ 2', v.m ^ 2, v.n, r1, r2, proof],
        ['n * 2', v.m, v.n * 2, r1, r2, proof],
        ['n / 2', v.m, Math.floor(v.n / 2), r1, r2, proof],
        ['wrong root1', v.m, v.n, wrong, r2, proof],
        ['wrong root2', v.m, v.n, r1, wrong, proof],
        ['swapped roots', v.m, v.n, r2, r1, proof],
        ['empty proof', v.m, v.n, r1, r2, []],
        ['trailing garbage', v.m, v.n, r1, r2, [...proof, Buffer.alloc(0)]],
        ['trailing root1', v.m, v.n, r1, r2, [...proof, r1]],
        ['trailing root2', v.m, v.n, r1, r2, [...proof, r2]],
        ['preceding garbage', v.m, v.n, r1, r2, [Buffer.alloc(0), ...proof]],
        ['preceding root1', v.m, v.n, r1, r2, [r1, ...proof]],
        ['preceding root2', v.m, v.n, r1, r2, [r2, ...proof]],
        ['preceding proof[0]', v.m, v.n, r1, r2, [proof[0]!, ...proof]],
        ['truncated proof', v.m, v.n, r1, r2, proof.slice(0, -1)],
        ...proof.map((_, i): [string, number, number, Uint8Array, Uint8Array, Uint8Array[]] => [`flipped bit 4 of proof[${i}]`, v.m, v.n, r1, r2, proof.map((p, j) => (j === i ? flipBit(p, 4) : p))]),
      ];
      for (const [name, m, n, a, b, p] of probes) expect(verifyConsistency(m, n, a, b, p), `${v.m}→${v.n}: ${name}`).toBe(false);
    }
  });

  it('decides the trivial cases m = 0 and m = n as §2.1.4.1 implies (verify_test.go TestVerifyConsistency)', () => {
    const r1 = root(1);
    const r2 = root(2);
    // m = n: the same tree; the proof is empty and the roots must be equal.
    expect(verifyConsistency(1, 1, r2, r2, [])).toBe(true);
    expect(verifyConsistency(5, 5, root(5), root(5), [])).toBe(true);
    expect(verifyConsistency(1, 1, r1, r2, [])).toBe(false);
    expect(verifyConsistency(1, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT])).toBe(false);
    // m = 0: the empty tree (root SHA-256("")) is a prefix of every tree; the proof is empty.
    expect(verifyConsistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])).toBe(true);
    expect(verifyConsistency(0, 1, EMPTY_ROOT, r2, [])).toBe(true);
    expect(verifyConsistency(0, 8, EMPTY_ROOT, root(8), [])).toBe(true);
    expect(verifyConsistency(0, 0, EMPTY_ROOT, r2, [])).toBe(false);
    expect(verifyConsistency(0, 0, r1, r1, [])).toBe(false);
    expect(verifyConsistency(0, 1, r1, r1, [])).toBe(false);
    expect(verifyConsistency(0, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT])).toBe(false);
    // Time travel to the past, and an empty proof between different sizes.
    expect(verifyConsistency(1, 0, r1, r2, [])).toBe(false);
    expect(verifyConsistency(2, 1, r1, r2, [])).toBe(false);
    expect(verifyConsistency(1, 2, r1, r2, [])).toBe(false);
    // And the generator agrees: empty proofs for both trivial cases.
    const src = vectorSource();
    expect(consistencyProof(src, 0, 0)).toEqual([]);
    expect(consistencyProof(src, 0, 8)).toEqual([]);
    expect(consistencyProof(src, 3, 3)).toEqual([]);
  });

  it('returns false, never throws, for malformed arguments', () => {
    const { src, roots } = SHARED;
    const proof = consistencyProof(src, 3, 10);
    expect(verifyConsistency(3, 10, roots[3]!, roots[10]!, proof)).toBe(true);
    const cases: [string, () => boolean][] = [
      ['m > n', () => verifyConsistency(10, 3, roots[10]!, roots[3]!, proof)],
      ['negative m', () => verifyConsistency(-3, 10, roots[3]!, roots[10]!, proof)],
      ['fractional n', () => verifyConsistency(3, 10.5, roots[3]!, roots[10]!, proof)],
      ['infinite n', () => verifyConsistency(3, Number.POSITIVE_INFINITY, roots[3]!, roots[10]!, proof)],
      ['a string m', () => verifyConsistency('3' as unknown as number, 10, roots[3]!, roots[10]!, proof)],
      ['proof not an array', () => verifyConsistency(3, 10, roots[3]!, roots[10]!, {} as unknown as Buffer[])],
      ['a null in the proof', () => verifyConsistency(3, 10, roots[3]!, roots[10]!, [null as unknown as Buffer, ...proof.slice(1)])],
      ['a 1,000-hash proof', () => verifyConsistency(3, 10, roots[3]!, roots[10]!, Array.from({ length: 1000 }, () => proof[0]!))],
      ['a 31-byte root', () => verifyConsistency(3, 10, roots[3]!.subarray(1), roots[10]!, proof)],
      ['a sparse proof array', () => verifyConsistency(3, 10, roots[3]!, roots[10]!, [proof[0]!, ...new Array<Buffer>(proof.length - 1)])],
    ];
    for (const [name, run] of cases) expect(run(), name).toBe(false);
    fc.assert(
      fc.property(fc.anything(), fc.anything(), fc.anything(), fc.anything(), fc.anything(), (a, b, c, d, e) => {
        expect(verifyConsistency(a as number, b as number, c as Buffer, d as Buffer, e as Buffer[])).toBe(false);
      }),
      { numRuns: 300 },
    );
  });

  it('property: every proof m ≤ n verifies, and fails for any flipped bit or other sizes with their roots', () => {
    const { src, roots } = SHARED;
    const max = roots.length - 1;
    fc.assert(
      fc.property(fc.nat({ max }), fc.nat({ max }), fc.nat({ max }), fc.nat({ max }), fc.nat({ max: 255 }), fc.nat(), (a, b, c, d, bitIndex, pick) => {
        const [m, n] = a <= b ? [a, b] : [b, a];
        const proof = consistencyProof(src, m, n);
        expect(verifyConsistency(m, n, roots[m]!, roots[n]!, proof)).toBe(true);
        // Any single-bit change in either root (m > 0: with m = 0 no proof binds rootN).
        expect(verifyConsistency(m, n, flipBit(roots[m]!, bitIndex), roots[n]!, proof)).toBe(false);
        if (m > 0) expect(verifyConsistency(m, n, roots[m]!, flipBit(roots[n]!, bitIndex), proof)).toBe(false);
        if (proof.length > 0) {
          const k = pick % proof.length;
          expect(verifyConsistency(m, n, roots[m]!, roots[n]!, proof.map((p, x) => (x === k ? flipBit(p, bitIndex) : p)))).toBe(false);
          expect(verifyConsistency(m, n, roots[m]!, roots[n]!, proof.slice(0, -1))).toBe(false);
        }
        expect(verifyConsistency(m, n, roots[m]!, roots[n]!, [...proof, roots[n]!])).toBe(false);
        // Other sizes, each with its own root (a checkpoint binds a size to its root): the proof
        // fails, except that an empty proof is right for any trivial pair (m' = 0 or m' = n').
        const [m2, n2] = c <= d ? [c, d] : [d, c];
        if ((m2 !== m || n2 !== n) && !(proof.length === 0 && (m2 === 0 || m2 === n2))) {
          expect(verifyConsistency(m2, n2, roots[m2]!, roots[n2]!, proof)).toBe(false);
        }
        if (m < n) expect(verifyConsistency(n, m, roots[n]!, roots[m]!, proof)).toBe(false);
      }),
      { numRuns: 1000 },
    );
  });

  it('verifies every pair of sizes up to 64 exhaustively, with the generator and verifier agreeing', () => {
    const { src, roots } = SHARED;
    for (let n = 0; n <= 64; n++) {
      for (let m = 0; m <= n; m++) {
        const proof = consistencyProof(src, m, n);
        if (!verifyConsistency(m, n, roots[m]!, roots[n]!, proof)) expect.fail(`${m}→${n}`);
      }
      for (let i = 0; i < n; i++) {
        if (!verifyInclusion(SHARED.leaves[i]!, i, n, inclusionProof(src, i, n), roots[n]!)) expect.fail(`${i}@${n}`);
      }
    }
  });

  it('refuses impossible ranges with TESSERA_AUDIT_RANGE', () => {
    const src = vectorSource();
    for (const [m, n] of [
      [5, 0],
      [9, 8],
      [-1, 3],
      [1, 2.5],
      [Number.NaN, 3],
    ] as const) {
      expectTesseraError(() => consistencyProof(src, m, n), 'TESSERA_AUDIT_RANGE');
    }
    expectTesseraError(() => consistencyProof(src, 3, 9), 'TESSERA_AUDIT_RANGE');
  });
});

describe('stored subtrees (LeafHashSource.subtreeHash)', () => {
  it('give the same proofs and roots as the leaves alone, reading few leaves', () => {
    const leaves = distinctLeaves(5000, 3);
    const plain = sourceOf(leaves);
    const cached = sourceOf(leaves, 4);
    fc.assert(
      fc.property(fc.integer({ min: 1, max: leaves.length }), fc.nat(), fc.nat(), (n, a, b) => {
        const index = a % n;
        const m = b % (n + 1);
        const counted = countingSource(cached);
        expect(hexes(inclusionProof(counted, index, n))).toEqual(hexes(inclusionProof(plain, index, n)));
        expect(hexes(consistencyProof(counted, m, n))).toEqual(hexes(consistencyProof(plain, m, n)));
        expect(subtreeRoot(counted, 0, n).equals(subtreeRoot(plain, 0, n))).toBe(true);
        // 3 operations, each O(log n) lookups and at most a few 2^4-leaf tiles read per level.
        expect(counted.leavesRead).toBeLessThan(3 * 2 * 16 * 14);
      }),
      { numRuns: 100 },
    );
    const counted = countingSource(cached);
    expect(MerkleFrontier.fromSource(counted, 4999).root().equals(rootOf(leaves.slice(0, 4999)))).toBe(true);
    expect(counted.leavesRead).toBeLessThan(64);
  });

  it('reads the leaves in bounded chunks when nothing is stored', () => {
    const { src } = SHARED;
    let largest = 0;
    const spy: LeafHashSource = {
      leafHashes(start, end) {
        largest = Math.max(largest, end - start);
        return src.leafHashes(start, end);
      },
    };
    inclusionProof(spy, 0, 300);
    expect(largest).toBeLessThanOrEqual(256);
  });

  it('refuses a stored subtree hash that is not 32 bytes', () => {
    const bad: LeafHashSource = { leafHashes: (s, e) => SHARED.src.leafHashes(s, e), subtreeHash: () => Buffer.alloc(3) };
    expectTesseraError(() => inclusionProof(bad, 0, 8), 'TESSERA_AUDIT_STATE_INVALID');
    expectTesseraError(() => new MemoryLeafSource({ cacheLevel: 0 }), 'TESSERA_AUDIT_RANGE');
  });
});
