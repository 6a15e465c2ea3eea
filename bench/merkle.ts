/**
 * The audit log's Merkle tree (src/core/merkle.ts) on its own, in memory: what the write path
 * pays per record and what a proof costs at n = 100,000 leaves.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/merkle.js [--seconds S] [--json]
 *
 * Rows:
 * - leafHash of a 300-byte record (the canonical JSON of an audit record is about that size);
 * - MerkleFrontier.append of a precomputed leaf hash (the write path's extra work per record,
 *   besides leafHash), and append + root() per batch of 100 (a checkpoint every batch);
 * - inclusion and consistency proof generation at n = 100,000 from a MemoryLeafSource, without a
 *   subtree cache (every leaf is read and hashed: the worst case) and with every complete subtree
 *   of ≥ 256 leaves (cacheLevel 8, 1/128 stored row per leaf) or ≥ 16 leaves (cacheLevel 4, 1/8
 *   row per leaf) stored, 64 random indexes / first sizes in rotation;
 * - their verification (RFC 9162 §2.1.3.2 / §2.1.4.2).
 * Single thread, after a warm-up; each row runs for --seconds (default 1) in 5 rounds and reports
 * the median round.
 */
import { MemoryLeafSource, MerkleFrontier, consistencyProof, inclusionProof, leafHash, verifyConsistency, verifyInclusion } from '../src/core/merkle.js';
import { formatRateRows, measureRate, parseBenchArgs, type RateRow } from './args.js';

const N = 100_000;

function measure(name: string, seconds: number, batch: number, op: (i: number) => unknown): RateRow {
  return measureRate(name, seconds, op, { batch, minWarmOps: 3 });
}

/** A deterministic spread of values in [0, n) for op number i. */
function pick(i: number, n: number): number {
  return Number((BigInt(i) * 2654435761n + 12345n) % BigInt(n));
}

function main(): void {
  const { seconds, json } = parseBenchArgs(process.argv.slice(2), 'merkle', 1);
  const record = Buffer.alloc(300, 0x61);
  const leaves = Array.from({ length: N }, (_, i) => {
    record.writeUInt32BE(i, 0);
    return leafHash(record);
  });
  const plain = new MemoryLeafSource();
  const cached = new MemoryLeafSource({ cacheLevel: 8 });
  const cached4 = new MemoryLeafSource({ cacheLevel: 4 });
  for (const h of leaves) {
    plain.append(h);
    cached.append(h);
    cached4.append(h);
  }
  const rootN = plain.root();
  // Roots of the first sizes used by the consistency rows, and proofs to verify.
  const SAMPLES = 64;
  const firstSizes = Array.from({ length: SAMPLES }, (_, i) => 1 + pick(i, N - 1));
  const firstRoots = firstSizes.map((m) => MerkleFrontier.fromSource(cached, m).root());
  const indexes = Array.from({ length: SAMPLES }, (_, i) => pick(i + 1000, N));
  const inclusionProofs = indexes.map((x) => inclusionProof(cached, x, N));
  const consistencyProofs = firstSizes.map((m) => consistencyProof(cached, m, N));
  for (let s = 0; s < SAMPLES; s++) {
    if (!verifyInclusion(leaves[indexes[s]!]!, indexes[s]!, N, inclusionProofs[s]!, rootN)) throw new Error('an inclusion proof does not verify');
    if (!verifyConsistency(firstSizes[s]!, N, firstRoots[s]!, rootN, consistencyProofs[s]!)) throw new Error('a consistency proof does not verify');
    // The uncached proof reads every leaf: a few comparisons are enough.
    if (s < 4 && inclusionProof(plain, indexes[s]!, N).some((h, k) => !h.equals(inclusionProofs[s]![k]!))) throw new Error('cached and uncached proofs differ');
  }

  let frontier = new MerkleFrontier();
  const rows: RateRow[] = [
    measure('leafHash (300-byte record)', seconds, 256, () => leafHash(record)),
    measure('MerkleFrontier.append', seconds, 1024, (i) => {
      if (frontier.size >= 1 << 24) frontier = new MerkleFrontier();
      frontier.append(leaves[i % N]!);
    }),
    measure('batch of 100: 100 × append + root()', seconds, 4, (i) => {
      for (let k = 0; k < 100; k++) frontier.append(leaves[(i * 100 + k) % N]!);
      return frontier.root();
    }),
    measure(`inclusionProof, n = ${N}, no subtree cache`, seconds, 1, (i) => inclusionProof(plain, indexes[i % SAMPLES]!, N)),
    measure(`inclusionProof, n = ${N}, subtrees ≥ 256 stored`, seconds, 64, (i) => inclusionProof(cached, indexes[i % SAMPLES]!, N)),
    measure(`inclusionProof, n = ${N}, subtrees ≥ 16 stored`, seconds, 64, (i) => inclusionProof(cached4, indexes[i % SAMPLES]!, N)),
    measure('verifyInclusion', seconds, 256, (i) => verifyInclusion(leaves[indexes[i % SAMPLES]!]!, indexes[i % SAMPLES]!, N, inclusionProofs[i % SAMPLES]!, rootN)),
    measure(`consistencyProof, n = ${N}, no subtree cache`, seconds, 1, (i) => consistencyProof(plain, firstSizes[i % SAMPLES]!, N)),
    measure(`consistencyProof, n = ${N}, subtrees ≥ 256 stored`, seconds, 64, (i) => consistencyProof(cached, firstSizes[i % SAMPLES]!, N)),
    measure(`consistencyProof, n = ${N}, subtrees ≥ 16 stored`, seconds, 64, (i) => consistencyProof(cached4, firstSizes[i % SAMPLES]!, N)),
    measure('verifyConsistency', seconds, 256, (i) => verifyConsistency(firstSizes[i % SAMPLES]!, N, firstRoots[i % SAMPLES]!, rootN, consistencyProofs[i % SAMPLES]!)),
  ];

  const setup = { leaves: N, proofLengthAvg: inclusionProofs.reduce((a, p) => a + p.length, 0) / SAMPLES, seconds, node: process.version };
  if (json) {
    process.stdout.write(`${JSON.stringify({ setup, rows }, null, 2)}\n`);
    return;
  }
  process.stdout.write(`Merkle tree (RFC 9162 §2.1), in memory, n = ${N.toLocaleString('en-US')}, Node ${process.version}\n\n`);
  process.stdout.write(formatRateRows(rows, 'operation', 'µs/op'));
}

main();
