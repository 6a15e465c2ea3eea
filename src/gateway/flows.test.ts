import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isTesseraError } from '../core/errors.js';
import { DEFAULT_FLOW_LIMITS, FlowsLimited, SignInFlows, clientKey } from './flows.js';

const flow = (n: number) => ({ state: `s${n}`, verifier: `v${n}`, returnTo: `/r${n}`, redirectUri: 'https://wiki.example/_tessera/callback' });

describe('clientKey', () => {
  it('IPv4 as is, IPv4-mapped IPv6 as IPv4, IPv6 by its /64 (however it is written)', () => {
    expect(clientKey('203.0.113.7')).toBe('203.0.113.7');
    expect(clientKey('::ffff:203.0.113.7')).toBe('203.0.113.7');
    expect(clientKey('2001:db8:0:1::1')).toBe('2001:db8:0:1::/64');
    expect(clientKey('2001:0db8:0000:0001:ffff:1:2:3')).toBe('2001:db8:0:1::/64');
    expect(clientKey('2001:DB8:0:1:8000::')).toBe('2001:db8:0:1::/64');
    expect(clientKey('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
    expect(clientKey('::1')).toBe('0:0:0:0::/64');
    expect(clientKey(undefined)).toBe('-');
  });

  it('never throws, and two addresses of one /64 share a key', () => {
    fc.assert(fc.property(fc.ipV6(), fc.string(), (a, junk) => {
      expect(typeof clientKey(a)).toBe('string');
      expect(typeof clientKey(junk)).toBe('string');
    }));
    fc.assert(fc.property(fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 8, maxLength: 8 }), fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 4, maxLength: 4 }), (g, low) => {
      const a = g.map((x) => x.toString(16)).join(':');
      const b = [...g.slice(0, 4), ...low].map((x) => x.toString(16)).join(':');
      expect(clientKey(a)).toBe(clientKey(b));
    }));
  });
});

describe('SignInFlows', () => {
  it('a flow is taken once, with what was stored; an expired one is not returned', () => {
    let t = 1_000_000;
    const f = new SignInFlows({ ttlMs: 60_000, max: 10, maxPerAddress: 5 }, () => t);
    f.add('198.51.100.1', 'k1', flow(1));
    f.add('198.51.100.1', 'k2', flow(2));
    expect(f.take('k1')).toEqual({ ...flow(1), expiresAt: t + 60_000 });
    expect(f.take('k1')).toBeUndefined();
    expect(f.pendingFor('198.51.100.1')).toBe(1);
    t += 60_000;
    expect(f.take('k2')).toBeUndefined();
    expect(f.size).toBe(0);
    expect(f.pendingFor('198.51.100.1')).toBe(0);
  });

  it('one address over its limit is refused with TESSERA_RATE_LIMITED and the seconds until its oldest flow expires; others are untouched', () => {
    let t = 5_000_000;
    const f = new SignInFlows({ ttlMs: 600_000, max: 1000, maxPerAddress: 3 }, () => t);
    f.add('192.0.2.9', 'victim', flow(0));
    for (let i = 0; i < 3; i++) {
      f.add('198.51.100.1', `a${i}`, flow(i));
      t += 10_000;
    }
    let refused: unknown;
    try {
      f.add('198.51.100.1', 'a3', flow(3));
    } catch (err) {
      refused = err;
    }
    expect(refused).toBeInstanceOf(FlowsLimited);
    expect(isTesseraError(refused) && refused.code).toBe('TESSERA_RATE_LIMITED');
    expect(isTesseraError(refused) && refused.status).toBe(429);
    // The oldest (a0) was added 30 s ago and lives 600 s.
    expect((refused as FlowsLimited).retryAfterSeconds).toBe(570);
    // Its own flows are kept (no self-eviction), and another address still signs in.
    expect(f.pendingFor('198.51.100.1')).toBe(3);
    expect(f.take('victim')).toMatchObject({ state: 's0' });
    f.add('192.0.2.10', 'other', flow(9));
    // One flow ends (its callback): room for one more.
    expect(f.take('a1')).toBeDefined();
    f.add('198.51.100.1', 'a3', flow(3));
    expect(() => f.add('198.51.100.1', 'a4', flow(4))).toThrow(FlowsLimited);
    // Once the oldest expires, the address has room again without any callback.
    t += 600_000;
    f.add('198.51.100.1', 'a5', flow(5));
    expect(f.pendingFor('198.51.100.1')).toBe(1);
  });

  it('every address of one IPv6 /64 shares the limit', () => {
    const f = new SignInFlows({ ttlMs: 60_000, max: 1000, maxPerAddress: 2 });
    f.add('2001:db8:1:2::1', 'x1', flow(1));
    f.add('2001:db8:1:2::2', 'x2', flow(2));
    expect(() => f.add('2001:db8:1:2:ffff::3', 'x3', flow(3))).toThrow(FlowsLimited);
    f.add('2001:db8:1:3::1', 'y1', flow(4));
  });

  it('full in all: the oldest flow is dropped (and its address count with it)', () => {
    let t = 0;
    const f = new SignInFlows({ ttlMs: 60_000, max: 3, maxPerAddress: 3 }, () => t++);
    f.add('10.0.0.1', 'a', flow(1));
    f.add('10.0.0.2', 'b', flow(2));
    f.add('10.0.0.3', 'c', flow(3));
    f.add('10.0.0.4', 'd', flow(4));
    expect(f.size).toBe(3);
    expect(f.take('a')).toBeUndefined();
    expect(f.pendingFor('10.0.0.1')).toBe(0);
    expect(f.take('b')).toBeDefined();
  });

  it('random adds, takes and clock moves keep the bounds and the counts consistent', () => {
    fc.assert(fc.property(fc.array(fc.oneof(
      fc.record({ op: fc.constant('add' as const), addr: fc.integer({ min: 0, max: 5 }) }),
      fc.record({ op: fc.constant('take' as const), n: fc.nat(40) }),
      fc.record({ op: fc.constant('tick' as const), ms: fc.integer({ min: 0, max: 30_000 }) }),
    ), { maxLength: 200 }), (ops) => {
      let t = 0;
      const f = new SignInFlows({ ttlMs: 60_000, max: 12, maxPerAddress: 4 }, () => t);
      const live = new Map<string, { addr: string; expiresAt: number }>();
      let n = 0;
      for (const o of ops) {
        if (o.op === 'tick') t += o.ms;
        else if (o.op === 'take') {
          const key = `k${o.n}`;
          const got = f.take(key);
          const want = live.get(key);
          live.delete(key);
          // Taken only if still live in the model (it may have been dropped as the oldest).
          if (got !== undefined) expect(want !== undefined && want.expiresAt > t).toBe(true);
        } else {
          const addr = `10.0.0.${o.addr}`;
          const key = `k${n++}`;
          try {
            f.add(addr, key, flow(n));
            live.set(key, { addr, expiresAt: t + 60_000 });
          } catch (err) {
            expect(err).toBeInstanceOf(FlowsLimited);
            expect(f.pendingFor(addr)).toBe(4);
          }
        }
        expect(f.size).toBeLessThanOrEqual(12);
        for (let a = 0; a <= 5; a++) expect(f.pendingFor(`10.0.0.${a}`)).toBeLessThanOrEqual(4);
      }
    }));
  });

  it('a full table costs no more per sign-in than an empty one (no scan of the whole table)', () => {
    let t = 0;
    const limits = { ...DEFAULT_FLOW_LIMITS, max: 20_000, maxPerAddress: 1 };
    const f = new SignInFlows(limits, () => t);
    const time = (start: number, count: number): number => {
      const t0 = performance.now();
      for (let i = start; i < start + count; i++) f.add(`a${i}`, `k${i}`, flow(i));
      return performance.now() - t0;
    };
    time(0, 2000); // warm-up
    const emptyish = time(2000, 5000);
    time(7000, 20_000 - 7000); // full now
    expect(f.size).toBe(20_000);
    t += 1000; // nothing expired: each add drops the oldest
    const full = time(20_000, 5000);
    expect(f.size).toBe(20_000);
    // The old code swept all 20,000 entries on each add when full: hundreds of times slower.
    expect(full).toBeLessThan(emptyish * 10 + 20);
  });
});
