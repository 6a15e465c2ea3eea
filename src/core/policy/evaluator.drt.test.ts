/**
 * Differential random testing: the in-process evaluator decides exactly as cedar-wasm over
 * generated entity stores, policy sets and requests (drt.ts). On a disagreement fast-check prints
 * the seed and the shrunk case; replay with DRT_SEED=<seed> (and DRT_PATH=<path>) or
 * `node dist/bench/policy.js --differential N --seed S`.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Coverage, caseArbitrary, runCase } from './drt.js';

/** Policy sets (with entity stores); each decides 1 to 4 requests. */
const RUNS = Number(process.env.DRT_RUNS ?? 1000);
const seed = process.env.DRT_SEED !== undefined ? Number(process.env.DRT_SEED) : undefined;
const path = process.env.DRT_PATH;

describe('in-process Cedar evaluator vs cedar-wasm (differential)', () => {
  it(`agrees on ${RUNS} random policy sets and their requests (decision, determining policies, erroring policies)`, () => {
    const coverage = new Coverage();
    fc.assert(
      fc.property(caseArbitrary, (c) => {
        const r = runCase(c, true);
        coverage.add(r);
        if (r.disagreement !== undefined) throw new Error(`${r.disagreement}\ncase: ${JSON.stringify(c)}`);
      }),
      { numRuns: RUNS, ...(seed !== undefined ? { seed } : {}), ...(path !== undefined ? { path } : {}) },
    );
    process.stdout.write(coverage.format());
    // The generator must reach every outcome and the constructs it is meant to cover.
    expect(coverage.cases.total).toBeGreaterThan(RUNS);
    // Generated text Cedar itself refuses (counted as agreement when both refuse) must stay rare.
    expect(coverage.cases.referenceFailures).toBeLessThan(coverage.cases.total / 100);
    expect(coverage.cases.allow).toBeGreaterThan(RUNS / 50);
    expect(coverage.cases.denyByForbid).toBeGreaterThan(RUNS / 50);
    expect(coverage.cases.withErrors).toBeGreaterThan(RUNS / 50);
    expect(coverage.fallbackPolicies).toBeGreaterThan(0);
    for (const k of ['like', 'has', 'hasPath', 'in', 'inSet', 'isIn', 'arith', 'neg', 'containsAll', 'containsAny', 'isEmpty', 'if', 'record', 'scopeIsIn', 'actionIn', 'unless'] as const) {
      expect(coverage.constructs.get(k) ?? 0, k).toBeGreaterThan(0);
    }
  }, 60_000);
});
