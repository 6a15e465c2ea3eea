import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PerSecondSampler } from './sampler.js';

describe('PerSecondSampler', () => {
  it('passes at most perSecond events per kind and second and counts the rest', () => {
    const s = new PerSecondSampler(3);
    const t = 1_000_000;
    expect([1, 2, 3, 4, 5].map(() => s.take('a', t))).toEqual([true, true, true, false, false]);
    expect(s.take('b', t + 999)).toBe(true);
    expect(s.skipped).toBe(2);
    expect(s.take('a', t + 1000)).toBe(true);
  });

  it('never passes more than perSecond per kind in any second, and counts every event once', () => {
    fc.assert(fc.property(
      fc.integer({ min: 1, max: 5 }),
      fc.array(fc.tuple(fc.constantFrom('x', 'y', 'z'), fc.integer({ min: 0, max: 400 })), { maxLength: 200 }),
      (perSecond, steps) => {
        const s = new PerSecondSampler(perSecond);
        const passed = new Map<string, number>();
        let now = 5_000;
        let yes = 0;
        for (const [kind, dt] of steps) {
          now += dt;
          if (s.take(kind, now)) {
            yes++;
            const key = `${kind}@${Math.floor(now / 1000)}`;
            passed.set(key, (passed.get(key) ?? 0) + 1);
          }
        }
        expect(yes + s.skipped).toBe(steps.length);
        for (const n of passed.values()) expect(n).toBeLessThanOrEqual(perSecond);
      },
    ));
  });
});
