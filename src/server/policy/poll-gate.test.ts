/**
 * Limits on the policy bundle stream per identity: the gate on its own (a fake clock), the agent's
 * retry delay after a 429, and the route over real HTTPS + mTLS (one identity flooding is refused
 * with stable codes and Retry-After while another's long poll still wakes on a change).
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TesseraError } from '../../core/errors.js';
import { retryDelayMs } from '../../agent/enforce/policy.js';
import { errorCode, joinAgent, rawRequest, startControlPlane, type JoinedAgent, type RawResponse, type TestControlPlane } from '../../../test/support/server.js';
import { BundlePollGate, DEFAULT_BUNDLE_POLL_SETTINGS, parseBundlePollSettings, PollRefused } from './poll-gate.js';

const TD = 'example.org';

function refusal(f: () => unknown): { code: string; retry: number } | undefined {
  try {
    f();
    return undefined;
  } catch (err) {
    expect(err).toBeInstanceOf(PollRefused);
    return { code: (err as PollRefused).code, retry: (err as PollRefused).retryAfterSeconds };
  }
}

describe('BundlePollGate', () => {
  it('takes a token per request and refuses past the burst, per identity, until the bucket refills', () => {
    let now = 0;
    const gate = new BundlePollGate({ rateLimit: { perSecond: 2, burst: 3 }, maxPolls: 4 }, () => now);
    for (let i = 0; i < 3; i++) gate.admit('a', false)();
    expect(refusal(() => gate.admit('a', false))).toEqual({ code: 'TESSERA_RATE_LIMITED', retry: 1 });
    // Another identity has its own bucket.
    expect(refusal(() => gate.admit('b', false))).toBeUndefined();
    now += 500;
    expect(refusal(() => gate.admit('a', false))).toBeUndefined();
    expect(refusal(() => gate.admit('a', false))?.code).toBe('TESSERA_RATE_LIMITED');
  });

  it('holds a slot per open long poll: over maxPolls is TESSERA_POLL_LIMIT, released slots (once each) are reused', () => {
    const gate = new BundlePollGate({ rateLimit: { perSecond: 1000, burst: 1000 }, maxPolls: 2 });
    const r1 = gate.admit('a', true);
    const r2 = gate.admit('a', true);
    expect(gate.openPolls('a')).toBe(2);
    expect(refusal(() => gate.admit('a', true))).toEqual({ code: 'TESSERA_POLL_LIMIT', retry: 1 });
    // Plain reads and other identities are not held back by a's slots.
    expect(refusal(() => gate.admit('a', false))).toBeUndefined();
    expect(refusal(() => gate.admit('b', true))).toBeUndefined();
    r1();
    r1(); // a second release of the same poll frees nothing more
    expect(gate.openPolls('a')).toBe(1);
    const r3 = gate.admit('a', true);
    expect(refusal(() => gate.admit('a', true))?.code).toBe('TESSERA_POLL_LIMIT');
    r2();
    r3();
    expect(gate.openPolls('a')).toBe(0);
  });

  it('a long poll refused for its slot does not spend a token', () => {
    const gate = new BundlePollGate({ rateLimit: { perSecond: 0.001, burst: 2 }, maxPolls: 1 });
    gate.admit('a', true);
    for (let i = 0; i < 10; i++) expect(refusal(() => gate.admit('a', true))?.code).toBe('TESSERA_POLL_LIMIT');
    expect(refusal(() => gate.admit('a', false))).toBeUndefined();
  });

  it('refuses bad settings', () => {
    expect(() => new BundlePollGate({ rateLimit: { perSecond: 1, burst: 1 }, maxPolls: 0 })).toThrow(TesseraError);
    expect(() => new BundlePollGate({ rateLimit: { perSecond: 0, burst: 1 }, maxPolls: 1 })).toThrow(TesseraError);
  });
});

describe('parseBundlePollSettings', () => {
  it('parses the flags and their defaults', () => {
    const d = DEFAULT_BUNDLE_POLL_SETTINGS;
    expect(parseBundlePollSettings(`${d.rateLimit.perSecond}:${d.rateLimit.burst}`, String(d.maxPolls))).toEqual(d);
    expect(parseBundlePollSettings('2', '1')).toEqual({ rateLimit: { perSecond: 2, burst: 4 }, maxPolls: 1 });
  });

  it('refuses anything else with TESSERA_CONFIG_INVALID, never a crash', () => {
    for (const [rate, polls] of [['0', '4'], ['x', '4'], ['5:50', '0'], ['5:50', '-1'], ['5:50', '1001'], ['5:50', '2.5'], ['5:50', '']]) {
      expect(() => parseBundlePollSettings(rate!, polls!), `${rate} ${polls}`).toThrow(expect.objectContaining({ code: 'TESSERA_CONFIG_INVALID' }));
    }
    fc.assert(fc.property(fc.string(), fc.string(), (rate, polls) => {
      try {
        const s = parseBundlePollSettings(rate, polls);
        return s.maxPolls >= 1 && s.maxPolls <= 1000 && s.rateLimit.perSecond > 0 && s.rateLimit.burst >= 1;
      } catch (err) {
        return (err as TesseraError).code === 'TESSERA_CONFIG_INVALID';
      }
    }));
  });
});

describe('the agent\'s policy watch retry delay', () => {
  it('doubles from 500 ms to 30 s, waits at least a 429\'s Retry-After (capped at 5 min), never 0', () => {
    expect([1, 2, 3, 7, 8, 50].map((f) => retryDelayMs(f, undefined))).toEqual([500, 1000, 2000, 30_000, 30_000, 30_000]);
    expect(retryDelayMs(1, 3)).toBe(3000);
    expect(retryDelayMs(7, 3)).toBe(30_000);
    expect(retryDelayMs(1, 86_400)).toBe(300_000);
    for (const bogus of [NaN, -1, 0, Infinity]) expect(retryDelayMs(1, bogus)).toBe(500);
    fc.assert(fc.property(fc.integer({ min: 0, max: 1000 }), fc.option(fc.double()), (f, ra) => retryDelayMs(f, ra ?? undefined) >= 500));
  });
});

describe('GET /v1/policy/bundle limits per identity', () => {
  let t: TestControlPlane;
  let flooder: JoinedAgent;
  let honest: JoinedAgent;

  beforeAll(async () => {
    t = await startControlPlane({ trustDomain: TD, bundlePolls: { rateLimit: { perSecond: 0.05, burst: 6 }, maxPolls: 2 } });
    flooder = await joinAgent(t.cp, t.admin, `spiffe://${TD}/flood`);
    honest = await joinAgent(t.cp, t.admin, `spiffe://${TD}/honest`);
  });

  afterAll(async () => {
    await t?.close();
  });

  const get = (who: JoinedAgent, path: string): Promise<RawResponse> => rawRequest(t.cp.url, { path, ca: t.adminTls.ca, cert: who.certPem, key: who.keyPem, timeoutMs: 20_000 });

  it('refuses a flood with 429 and Retry-After, while another identity\'s long poll wakes on a change', async () => {
    const current = ((await get(honest, '/v1/policy/bundle')).json as { version: number }).version;
    const honestPoll = get(honest, `/v1/policy/bundle?after=${current}&timeout_seconds=15`);
    // Two long polls hold the flooder's slots; a third is refused without waiting.
    const held = [1, 2].map(() => get(flooder, `/v1/policy/bundle?after=${current}&timeout_seconds=15`));
    await new Promise((r) => setTimeout(r, 300));
    const third = await get(flooder, `/v1/policy/bundle?after=${current}&timeout_seconds=15`);
    expect({ status: third.status, code: errorCode(third), retry: third.headers['retry-after'] }).toEqual({ status: 429, code: 'TESSERA_POLL_LIMIT', retry: '1' });
    // Proofs for made-up sizes: the bucket (6, minus the two polls) runs dry.
    const answers = await Promise.all(Array.from({ length: 12 }, (_, i) => get(flooder, `/v1/policy/bundle?witness=${1_000_000 + i}`)));
    const codes = answers.map((r) => (r.status === 200 ? 200 : `${r.status} ${errorCode(r)}`));
    expect(codes.filter((c) => c === 200).length).toBe(4);
    expect(codes.filter((c) => c !== 200)).toEqual(Array(8).fill('429 TESSERA_RATE_LIMITED'));
    // Retry-After: when the bucket (a token every 20 s) holds one again.
    for (const r of answers.filter((a) => a.status === 429)) expect(Number(r.headers['retry-after'])).toBeGreaterThanOrEqual(15);

    const t0 = Date.now();
    await t.admin.call('POST', '/v1/entries', { spiffe_id: `spiffe://${TD}/new-one` });
    const woken = await honestPoll;
    expect(woken.status).toBe(200);
    expect(woken.json).toMatchObject({ changed: true });
    expect(Date.now() - t0).toBeLessThan(5000);
    // The flooder's held polls wake too, and free their slots: a long poll is now refused for its
    // empty bucket (checked after the slots), no longer for want of a slot.
    for (const r of await Promise.all(held)) expect(r.status).toBe(200);
    expect(errorCode(await get(flooder, `/v1/policy/bundle?after=0&timeout_seconds=1`))).toBe('TESSERA_RATE_LIMITED');
    // The honest identity is untouched.
    expect((await get(honest, '/v1/policy/bundle?witness=0')).status).toBe(200);
  });

  it('still refuses bad queries with 400 before any limit', async () => {
    expect(errorCode(await get(honest, '/v1/policy/bundle?witness=-2'))).toBe('TESSERA_BAD_REQUEST');
  });
});
