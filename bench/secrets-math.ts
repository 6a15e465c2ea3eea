/**
 * The raw cost of the blind-secret math (src/core/secrets), single thread, no network: the group
 * operations, the DLEQ proof, seal, and what one unseal costs the agent and each key server. This is
 * the limit a network benchmark of the key servers is compared against.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/secrets-math.js [--seconds S] [--json]
 *
 * Each row runs for --seconds (default 1) split into 5 rounds after a warm-up, and reports the
 * median round. Unseal rows time only the agent's part (parse, blind, t DLEQ verifications,
 * Lagrange combination, unblind, open); the servers' evaluate + prove is timed in its own row.
 */
import { performance } from 'node:perf_hooks';
import sodium from 'libsodium-wrappers-sumo';
import { blind, combineAndUnblind, combineEvaluations, evaluateAndProve, unblind, unsealContext } from '../src/core/secrets/blind.js';
import { openWithPoint, parseBlob, seal } from '../src/core/secrets/blob.js';
import { proveDleq, verifyDleq } from '../src/core/secrets/dleq.js';
import { fakePolicy, type FakePolicy } from '../src/core/secrets/fixtures.js';
import { add, baseMul, decodePoint, hashToScalar, mul, randomScalar, ready, scalarInv } from '../src/core/secrets/group.js';
import { publicShare } from '../src/core/secrets/shamir.js';
import { parseBenchArgs, type BenchArgs, type RateRow } from './args.js';

type Row = RateRow;

function parseArgs(argv: string[]): BenchArgs {
  return parseBenchArgs(argv, 'secrets-math', 1);
}

/**
 * `op` returns the microseconds it wants counted, or undefined to count its whole wall time (so an
 * unseal row can leave the simulated servers' work out).
 */
function measure(name: string, seconds: number, op: (i: number) => number | void): Row {
  const warmUntil = performance.now() + Math.max(100, seconds * 100);
  let i = 0;
  while (performance.now() < warmUntil || i < 20) op(i++);
  const rounds: number[] = [];
  for (let r = 0; r < 5; r++) {
    let n = 0;
    let counted = 0;
    const end = performance.now() + (seconds * 1000) / 5;
    for (;;) {
      const t0 = performance.now();
      if (t0 >= end) break;
      const own = op(n++);
      counted += typeof own === 'number' ? own : (performance.now() - t0) * 1000;
    }
    rounds.push(counted / n);
  }
  rounds.sort((a, b) => a - b);
  const us = rounds[2]!;
  return { name, usPerOp: us, opsPerSecond: 1e6 / us };
}

/** One whole unseal; returns the agent's share of the time in µs. */
function unsealOnce(p: FakePolicy, blob: Uint8Array, expected: number, fused = false): number {
  const t0 = performance.now();
  const parsed = parseBlob(blob);
  const { b, B } = blind(parsed.R);
  const context = unsealContext(parsed.policyId, parsed.epoch);
  const t1 = performance.now();
  const evals = p.servers.slice(0, p.t).map((s) => s.answer(B, context));
  const t2 = performance.now();
  const kR = fused ? combineAndUnblind(evals, p.commitments, { b, B }, p.t, context).point : unblind(combineEvaluations(evals, p.commitments, B, p.t, context).point, b);
  const plain = openWithPoint(parsed, kR);
  const t3 = performance.now();
  if (plain.length !== expected) throw new Error('unseal returned the wrong plaintext');
  return (t1 - t0 + (t3 - t2)) * 1000;
}

async function main(): Promise<void> {
  const { seconds, json } = parseArgs(process.argv.slice(2));
  await ready();

  const k = randomScalar();
  const s2 = randomScalar();
  const P = baseMul(randomScalar());
  const Q = baseMul(randomScalar());
  const B = baseMul(randomScalar());
  const K = baseMul(k);
  const Z = mul(k, B);
  const context = unsealContext('shop.db', 1);
  const proof = proveDleq(k, B, K, Z, context);
  if (!verifyDleq(proof, B, K, Z, context)) throw new Error('DLEQ self-check failed');

  const p23 = fakePolicy(2, 3);
  const p35 = fakePolicy(3, 5);
  const small = Buffer.alloc(64, 0x61);
  const big = Buffer.alloc(64 * 1024, 0x62);
  const blob23 = seal(small, { id: p23.id, epoch: p23.epoch, publicKey: p23.publicKey });
  const blob35 = seal(small, { id: p35.id, epoch: p35.epoch, publicKey: p35.publicKey });
  const parsed23 = parseBlob(blob23);
  const Z23 = mul(p23.k, parsed23.R);
  const server = p23.servers[0]!;

  const rows: Row[] = [
    measure('raw libsodium crypto_scalarmult_ristretto255', seconds, () => void sodium.crypto_scalarmult_ristretto255(k, P)),
    measure('scalarmult, variable base (mul)', seconds, () => void mul(k, P)),
    measure('base mult (baseMul)', seconds, () => void baseMul(s2)),
    measure('point add', seconds, () => void add(P, Q)),
    measure('point decode + validate (decodePoint)', seconds, () => void decodePoint(P)),
    measure('scalar invert', seconds, () => void scalarInv(s2)),
    measure('hashToScalar (SHA-512, 6 parts)', seconds, () => void hashToScalar('tessera/v1/dleq/challenge', K, B, Z, P, Q, context)),
    measure('DLEQ prove', seconds, () => void proveDleq(k, B, K, Z, context)),
    measure('DLEQ verify', seconds, () => void verifyDleq(proof, B, K, Z, context)),
    measure('publicShare, 3-of-5 (cold; memoized per policy in combine)', seconds, (i) => void publicShare((i % 5) + 1, p35.commitments)),
    measure('seal, 64 B', seconds, () => void seal(small, { id: p23.id, epoch: 1, publicKey: p23.publicKey })),
    measure('seal, 64 KiB', seconds, () => void seal(big, { id: p23.id, epoch: 1, publicKey: p23.publicKey })),
    measure('parse + open with the point, 64 B', seconds, () => void openWithPoint(parseBlob(blob23), Z23)),
    measure('key server: evaluate + prove (K precomputed)', seconds, () => void evaluateAndProve(server.share, B, context, server.K)),
    measure('agent: 2-of-3 unseal (parse, blind, 2 verifies, combine, unblind, open)', seconds, () => unsealOnce(p23, blob23, small.length)),
    measure('agent: 3-of-5 unseal (parse, blind, 3 verifies, combine, unblind, open)', seconds, () => unsealOnce(p35, blob35, small.length)),
    measure('agent: 2-of-3 unseal, combineAndUnblind', seconds, () => unsealOnce(p23, blob23, small.length, true)),
    measure('agent: 3-of-5 unseal, combineAndUnblind', seconds, () => unsealOnce(p35, blob35, small.length, true)),
  ];

  const by = (prefix: string): number => rows.find((r) => r.name.startsWith(prefix))!.usPerOp;
  const m = by('scalarmult');
  const g = by('base mult');
  const a = by('point add');
  const inv = by('scalar invert');
  // Group operations in an agent's unseal: blind 1 mul; per verify 1 base + 3 mul + 2 add;
  // combine t mul + (t-1) add; unblind 1 invert + 1 mul.
  const model = (t: number): number => m + t * (g + 3 * m + 2 * a) + t * m + (t - 1) * a + inv + m;
  const setup = { node: process.version, seconds, libsodium: sodium.SODIUM_VERSION_STRING, designAnchors: { scalarmultUs: 150, baseMultUs: 60 } };
  const models = { agent23Us: model(2), agent35Us: model(3) };

  if (json) {
    process.stdout.write(`${JSON.stringify({ setup, rows, models }, null, 2)}\n`);
    return;
  }
  process.stdout.write(`blind-secret math: ristretto255 via libsodium ${setup.libsodium} (WebAssembly), Node ${process.version}, single thread\n\n`);
  const width = Math.max(...rows.map((r) => r.name.length));
  process.stdout.write(`${'operation'.padEnd(width)}  ${'µs/op'.padStart(9)}  ${'ops/s'.padStart(9)}\n`);
  for (const r of rows) {
    process.stdout.write(`${r.name.padEnd(width)}  ${r.usPerOp.toFixed(1).padStart(9)}  ${Math.round(r.opsPerSecond).toLocaleString('en-US').padStart(9)}\n`);
  }
  process.stdout.write(
    `\nagent unseal from the group operations alone: 2-of-3 ≈ ${models.agent23Us.toFixed(0)} µs (measured ${by('agent: 2-of-3').toFixed(0)}), ` +
      `3-of-5 ≈ ${models.agent35Us.toFixed(0)} µs (measured ${by('agent: 3-of-5').toFixed(0)}); ` +
      `DESIGN.md anchors: scalarmult ≈ 150 µs (here ${m.toFixed(0)}), base mult ≈ 60 µs (here ${g.toFixed(0)})\n`,
  );
  const server1 = by('key server');
  process.stdout.write(`one key server core answers ≈ ${Math.round(1e6 / server1).toLocaleString('en-US')} evaluations/s (math only)\n`);
}

await main();
