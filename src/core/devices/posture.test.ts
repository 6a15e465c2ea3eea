import { generateKeyPairSync, sign, verify } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { TesseraError } from '../errors.js';
import {
  POSTURE_FACT_NAMES, parsePostureFacts, parsePostureReport, parsePostureSubmission, postureContext, postureReportJson, postureSigningInput, type PostureReport,
} from './posture.js';

const T0 = Date.parse('2026-12-01T10:00:00.000Z');
const ID = 'spiffe://example.org/device/lap-1';

function report(over: Partial<PostureReport> = {}): PostureReport {
  const at = (value: unknown) => ({ value, observedAt: T0 }) as never;
  return {
    deviceId: ID, reportedAt: T0,
    facts: { os: at('linux'), os_version: at('debian/12'), disk_encrypted: at(true), screen_lock: at(null), firewall: at(false), patch_age_days: at(3), agent_version: at('0.1.0') },
    ...over,
  };
}

function code(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    return err instanceof TesseraError ? err.code : `not a TesseraError: ${String(err)}`;
  }
}

describe('posture report parsing', () => {
  it('round-trips a report through its wire form', () => {
    const r = report();
    expect(parsePostureReport(JSON.parse(JSON.stringify(postureReportJson(r))))).toEqual(r);
  });

  it('keeps unknown facts as null (never a guess) and allows a report with no facts', () => {
    const wire = postureReportJson(report());
    expect(wire.facts.screen_lock).toEqual({ value: null, observed_at: '2026-12-01T10:00:00.000Z' });
    expect(parsePostureReport({ ...wire, facts: {} }).facts).toEqual({});
  });

  it.each([
    ['not an object', 'x'],
    ['an array', []],
    ['an unknown top-level field', { ...postureReportJson(report()), extra: 1 }],
    ['a missing field', { device_id: ID, facts: {} }],
    ['a workload id', { ...postureReportJson(report()), device_id: 'spiffe://example.org/shop/orders' }],
    ['a device id with capitals', { ...postureReportJson(report()), device_id: 'spiffe://example.org/device/Lap' }],
    ['a time without zone', { ...postureReportJson(report()), reported_at: '2026-12-01T10:00:00' }],
    ['an impossible date', { ...postureReportJson(report()), reported_at: '2026-13-45T10:00:00Z' }],
    ['an unknown fact', { ...postureReportJson(report()), facts: { colour: { value: 'red', observed_at: '2026-12-01T10:00:00Z' } } }],
    ['a fact of the wrong type', { ...postureReportJson(report()), facts: { disk_encrypted: { value: 'yes', observed_at: '2026-12-01T10:00:00Z' } } }],
    ['a negative patch age', { ...postureReportJson(report()), facts: { patch_age_days: { value: -1, observed_at: '2026-12-01T10:00:00Z' } } }],
    ['a fractional patch age', { ...postureReportJson(report()), facts: { patch_age_days: { value: 1.5, observed_at: '2026-12-01T10:00:00Z' } } }],
    ['a control character', { ...postureReportJson(report()), facts: { os: { value: 'linux\n', observed_at: '2026-12-01T10:00:00Z' } } }],
    ['a fact without time', { ...postureReportJson(report()), facts: { os: { value: 'linux' } } }],
    ['a __proto__ fact', JSON.parse(`{"device_id":"${ID}","reported_at":"2026-12-01T10:00:00Z","facts":{"__proto__":{"value":1,"observed_at":"2026-12-01T10:00:00Z"}}}`)],
  ])('refuses %s with TESSERA_POSTURE_INVALID', (_what, input) => {
    expect(code(() => parsePostureReport(input))).toBe('TESSERA_POSTURE_INVALID');
  });

  it('refuses a submission with a signature that is not base64url', () => {
    const wire = postureReportJson(report());
    expect(code(() => parsePostureSubmission({ report: wire, signature: 'a b' }))).toBe('TESSERA_POSTURE_INVALID');
    expect(code(() => parsePostureSubmission({ report: wire }))).toBe('TESSERA_POSTURE_INVALID');
    expect(code(() => parsePostureSubmission({ report: wire, signature: 'A'.repeat(200) }))).toBe('TESSERA_POSTURE_INVALID');
  });

  it('property: any JSON value is parsed or refused with TESSERA_POSTURE_INVALID, nothing else', () => {
    const factArb = fc.record({ value: fc.oneof(fc.boolean(), fc.integer(), fc.string(), fc.constant(null), fc.double()), observed_at: fc.oneof(fc.date({ noInvalidDate: true }).map((d) => d.toISOString()), fc.string()) });
    const reportArb = fc.record({
      device_id: fc.oneof(fc.constant(ID), fc.string(), fc.webUrl()),
      reported_at: fc.oneof(fc.date({ noInvalidDate: true }).map((d) => d.toISOString()), fc.string()),
      facts: fc.dictionary(fc.oneof(fc.constantFrom(...POSTURE_FACT_NAMES), fc.string()), fc.oneof(factArb, fc.jsonValue())),
    }, { requiredKeys: [] });
    fc.assert(fc.property(fc.oneof(reportArb, fc.jsonValue()), (input) => {
      const c = code(() => parsePostureReport(input));
      expect(c === undefined || c === 'TESSERA_POSTURE_INVALID').toBe(true);
    }), { numRuns: 800 });
  });

  it('property: a parsed report re-encodes to a form that parses to the same report', () => {
    const arb = fc.record({
      reportedAt: fc.date({ min: new Date('2000-01-01'), max: new Date('2100-01-01'), noInvalidDate: true }).map((d) => d.getTime()),
      os: fc.option(fc.stringMatching(/^[\x20-\x7e]{1,128}$/), { nil: null }),
      disk: fc.option(fc.boolean(), { nil: null }),
      patch: fc.option(fc.integer({ min: 0, max: 10_000 }), { nil: null }),
    });
    fc.assert(fc.property(arb, ({ reportedAt, os, disk, patch }) => {
      const r: PostureReport = { deviceId: ID, reportedAt, facts: { os: { value: os, observedAt: reportedAt }, disk_encrypted: { value: disk, observedAt: reportedAt }, patch_age_days: { value: patch, observedAt: reportedAt } } };
      const back = parsePostureReport(JSON.parse(JSON.stringify(postureReportJson(r))));
      expect(back).toEqual(r);
      expect(postureSigningInput(back).equals(postureSigningInput(r))).toBe(true);
    }), { numRuns: 500 });
  });
});

describe('posture signing input', () => {
  it('does not depend on the order of keys the report was sent with, and changes with any fact', () => {
    const wire = postureReportJson(report());
    const reordered = { facts: Object.fromEntries(Object.entries(wire.facts).reverse()), reported_at: wire.reported_at, device_id: wire.device_id };
    expect(postureSigningInput(parsePostureReport(reordered)).equals(postureSigningInput(report()))).toBe(true);
    const altered = report({ facts: { ...report().facts, disk_encrypted: { value: false, observedAt: T0 } } });
    expect(postureSigningInput(altered).equals(postureSigningInput(report()))).toBe(false);
  });

  it('starts with a domain line, so a posture signature verifies over nothing but a posture report', () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const input = postureSigningInput(report());
    expect(input.toString('utf8').startsWith('tessera device posture v1\n{')).toBe(true);
    const sig = sign('sha256', input, { key: privateKey, dsaEncoding: 'der' });
    expect(verify('sha256', input.subarray(input.indexOf('\n') + 1), { key: publicKey, dsaEncoding: 'der' }, sig)).toBe(false);
  });
});

describe('postureContext (context.device)', () => {
  const device = { spiffeId: ID, live: true };
  const STALE = 600_000;

  it('is missing, not enrolled, without a device', () => {
    expect(postureContext(undefined, undefined, T0, STALE)).toEqual({ enrolled: false, posture_state: 'missing' });
  });

  it('is missing for an enrolled device that never reported', () => {
    expect(postureContext(device, undefined, T0, STALE)).toEqual({ id: ID, enrolled: true, posture_state: 'missing' });
  });

  it('is fresh with every known fact within the threshold; unknown facts are absent', () => {
    const ctx = postureContext(device, report(), T0 + 30_000, STALE);
    expect(ctx).toEqual({
      id: ID, enrolled: true, posture_state: 'fresh', posture_age_seconds: 30,
      os: 'linux', os_version: 'debian/12', disk_encrypted: true, firewall: false, patch_age_days: 3, agent_version: '0.1.0',
    });
    expect('screen_lock' in ctx).toBe(false);
  });

  it('is stale after the threshold, with no facts at all', () => {
    expect(postureContext(device, report(), T0 + STALE + 1, STALE)).toEqual({ id: ID, enrolled: true, posture_state: 'stale', posture_age_seconds: 600 });
    // Exactly at the threshold it is still fresh.
    expect(postureContext(device, report(), T0 + STALE, STALE).posture_state).toBe('fresh');
  });

  it('leaves out a fact observed longer ago than the threshold in a fresh report (an old MDM export)', () => {
    const r = report({ reportedAt: T0 + STALE, facts: { ...report().facts, disk_encrypted: { value: true, observedAt: T0 - 1 } } });
    const ctx = postureContext(device, r, T0 + STALE, STALE);
    expect(ctx.posture_state).toBe('fresh');
    expect('disk_encrypted' in ctx).toBe(false);
  });

  it('a revoked device is not enrolled and its posture is missing', () => {
    expect(postureContext({ spiffeId: ID, live: false }, report(), T0, STALE)).toEqual({ id: ID, enrolled: false, posture_state: 'missing' });
  });
});

describe('parsePostureFacts (--posture-file)', () => {
  it('takes bare values stamped with the file time, and explicit observations', () => {
    expect(parsePostureFacts({ disk_encrypted: true, patch_age_days: { value: 4, observed_at: '2026-11-30T00:00:00Z' }, screen_lock: null }, T0)).toEqual({
      disk_encrypted: { value: true, observedAt: T0 },
      patch_age_days: { value: 4, observedAt: Date.parse('2026-11-30T00:00:00Z') },
      screen_lock: { value: null, observedAt: T0 },
    });
  });

  it.each([[[]], [{ colour: 'red' }], [{ firewall: 'on' }], [{ firewall: { value: true } }], [{ os: 5 }]])('refuses %j', (input) => {
    expect(code(() => parsePostureFacts(input, T0))).toBe('TESSERA_POSTURE_INVALID');
  });

  it('property: never throws anything but TESSERA_POSTURE_INVALID', () => {
    fc.assert(fc.property(fc.jsonValue(), (v) => {
      const c = code(() => parsePostureFacts(v, T0));
      expect(c === undefined || c === 'TESSERA_POSTURE_INVALID').toBe(true);
    }), { numRuns: 1000 });
  });
});
