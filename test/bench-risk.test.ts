import { describe, expect, it } from 'vitest';
import { ATTACK_KINDS, formatRiskBench, runRiskBench } from '../bench/risk.js';
import { parseRiskConfig } from '../src/core/risk/config.js';

describe('bench/risk core on a tiny fleet (5 identities, 1 simulated day, 6 h learning)', () => {
  it('quarantines every attack kind within the aims (a key server pulling unseals included), no false quarantine', () => {
    const res = runRiskBench({ identities: 5, days: 1, seed: 7, config: parseRiskConfig({ learning_period: '6h' }) }, 0.1);
    expect(res.engine.attacks.map((r) => r.kind)).toEqual([...ATTACK_KINDS]);
    for (const r of res.engine.attacks) {
      expect(r, r.kind).toMatchObject({ simulated: true, attacks: 1, quarantined: 1, detected: 1 });
      expect(r.quarantineDelayS[0]!, r.kind).toBeLessThanOrEqual(r.kind === 'slow_exfil' ? res.aims.slowS : res.aims.blatantS);
      expect(r.signals.length, r.kind).toBeGreaterThan(0);
    }
    expect(res.engine.attacks.find((r) => r.kind === 'stolen_svid')!.signals[0]).toBe('unreported_by_caller');
    expect(res.engine.attacks.find((r) => r.kind === 'unseal_pull')!.signals[0]).toBe('unseal_pull');
    // Five services and three key servers.
    expect(res.setup.identities).toBe(8);
    expect(res.engine.calm.quarantines).toBe(0);
    expect(res.engine.calm.identityDays).toBeGreaterThan(0);
    // The naive baseline cannot see a stolen SVID: its bytes out are tiny.
    expect(res.naive.every((n) => n.attacks.find((r) => r.kind === 'stolen_svid')!.detected === 0)).toBe(true);
    expect(res.meetsAims).toBe(true);
    expect(res.engine.windowsPerSec).toBeGreaterThan(0);
    const text = formatRiskBench(res);
    expect(text).not.toContain('not simulated');
    expect(text).toMatch(/key server pulling unseals\s+1\/1 q/);
    expect(text).toMatch(/verdict: MEETS/);
  }, 30_000);
});
