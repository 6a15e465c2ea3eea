import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PolicyEngine } from './engine.js';
import { postureAgeClass, postureAgeThresholds } from './posture-age.js';

const P = (when: string): string => `permit (principal, action == Tessera::Action::"gateway:request", resource) when { ${when} };`;
const AGE = 'context.device has posture_age_seconds && context.device.posture_age_seconds';

function engine(...policies: string[]): PolicyEngine {
  return new PolicyEngine(PolicyEngine.compile({ policies: Object.fromEntries(policies.map((p, i) => [`p${i}.cedar`, p])) }), []);
}
const ctx = (device: Record<string, unknown>) => ({ method: 'GET', path: '/', site: 'hq', time: 1767225600, hour: 9, risk: 0, device });
const fresh = (age: number) => ({ id: 'spiffe://td/device/lap', enrolled: true, posture_state: 'fresh', posture_age_seconds: age, disk_encrypted: true });
const ask = (e: PolicyEngine, device: Record<string, unknown>) => e.decidePerson({ user: 'spiffe://td/user/ana', groups: ['eng'], app: 'wiki', context: ctx(device) });

describe('posture age thresholds', () => {
  it('collects the literals the age is compared with, either side, and none without the age', () => {
    expect(postureAgeThresholds([P(`${AGE} < 600 && 30 <= context.device.posture_age_seconds`), P('context.device.enrolled'), P(`${AGE} == 30`)])).toEqual([30, 600]);
    expect(postureAgeThresholds([P('context.device.enrolled && context.risk < 50')])).toEqual([]);
  });

  it('gives up (exact age) on arithmetic, a comparison with another attribute, or a whole record used', () => {
    expect(postureAgeThresholds([P(`context.device has posture_age_seconds && context.device.posture_age_seconds + 10 < 600`)])).toBeUndefined();
    expect(postureAgeThresholds([P(`${AGE} < context.risk`)])).toBeUndefined();
    expect(postureAgeThresholds([P('context.device == {"enrolled": true, "posture_state": "fresh"}'), P(`${AGE} < 5`)])).toBeUndefined();
  });

  it('classes: ages compare alike with every threshold exactly when their classes are equal (fast-check)', () => {
    fc.assert(fc.property(fc.uniqueArray(fc.integer({ min: 0, max: 2000 }), { maxLength: 6 }), fc.integer({ min: 0, max: 2000 }), fc.integer({ min: 0, max: 2000 }), (raw, a, b) => {
      const t = [...raw].sort((x, y) => x - y);
      const alike = t.every((c) => Math.sign(a - c) === Math.sign(b - c));
      expect(postureAgeClass(a, t) === postureAgeClass(b, t)).toBe(alike);
    }));
  });
});

describe('the people decision cache and the posture age', () => {
  it('hits across seconds, and still denies once the age crosses the threshold or the posture turns stale', () => {
    const e = engine(P(`context.device.posture_state == "fresh" && ${AGE} < 600`));
    const first = ask(e, fresh(10));
    expect(first).toMatchObject({ allow: true, cached: false });
    // Other seconds, same class: answered from the cache.
    expect(ask(e, fresh(11))).toMatchObject({ allow: true, cached: true });
    expect(ask(e, fresh(599))).toMatchObject({ allow: true, cached: true });
    // At the threshold and past it: another class, decided again, denied.
    expect(ask(e, fresh(600))).toMatchObject({ allow: false, cached: false });
    expect(ask(e, fresh(601)).allow).toBe(false);
    // The posture turned stale (the control plane drops the facts too): never the cached allow.
    expect(ask(e, { id: 'spiffe://td/device/lap', enrolled: true, posture_state: 'stale', posture_age_seconds: 20 })).toMatchObject({ allow: false, cached: false });
    // A fact changing changes the key as well.
    expect(ask(e, { ...fresh(12), disk_encrypted: false })).toMatchObject({ cached: false });
  });

  it('keys on the exact age when the policies use it in a way the analysis cannot class', () => {
    const e = engine(P(`${AGE} + 10 < 600`));
    expect(ask(e, fresh(10))).toMatchObject({ allow: true, cached: false });
    expect(ask(e, fresh(11))).toMatchObject({ allow: true, cached: false });
    expect(ask(e, fresh(590))).toMatchObject({ allow: false, cached: false });
    expect(ask(e, fresh(10))).toMatchObject({ allow: true, cached: true });
  });

  it('a policy set that never reads the age caches across every age', () => {
    const e = engine(P('context.device.posture_state == "fresh"'));
    expect(ask(e, fresh(1)).cached).toBe(false);
    expect(ask(e, fresh(5000))).toMatchObject({ allow: true, cached: true });
  });
});
