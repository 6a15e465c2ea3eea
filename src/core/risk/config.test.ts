/** riskConfigJson: the stored form of a risk configuration reads back into the same configuration. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DEFAULT_RISK_CONFIG, SIGNALS, parseRiskConfig, riskConfigJson } from './config.js';

describe('riskConfigJson', () => {
  it('writes every key, durations as parseDuration reads them', () => {
    const j = riskConfigJson(DEFAULT_RISK_CONFIG);
    expect(j.quarantine_ttl).toBe('3600s');
    expect(j.half_life).toBe('180s');
    expect(Object.keys(j)).toHaveLength(18);
    expect(riskConfigJson(parseRiskConfig({ learning_period: 0, half_life: '1500ms', new_edge_horizon: '1s1ms' }))).toMatchObject({ learning_period: 0, half_life: '1s500ms', new_edge_horizon: '1s1ms' });
  });

  it('round trip (fast-check): parse(json(parse(x))) equals parse(x)', () => {
    const dur = fc.tuple(fc.integer({ min: 0, max: 20 }), fc.integer({ min: 0, max: 999 })).filter(([h, ms]) => h + ms > 0).map(([h, ms]) => `${h > 0 ? `${h}h` : ''}${ms > 0 ? `${ms}ms` : ''}`);
    const input = fc.record({
      quarantine_ttl: dur, half_life: dur, new_edge_horizon: dur, learning_period: fc.oneof(fc.constant(0), dur),
      quarantine_at: fc.integer({ min: 70, max: 100 }), step_up_at: fc.integer({ min: 20, max: 70 }), sustain_gain: fc.double({ min: 0, max: 1, noNaN: true }),
      weights: fc.record(Object.fromEntries(SIGNALS.map((s) => [s, fc.integer({ min: 0, max: 100 })]))),
    }, { requiredKeys: [] });
    fc.assert(fc.property(input, (x) => {
      const c = parseRiskConfig(x);
      expect(parseRiskConfig(riskConfigJson(c))).toEqual(c);
    }));
  });
});
