import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { expectTesseraError } from '../../test/support/expect.js';
import { TesseraError } from '../core/errors.js';
import { parseRateLimit, parseServers } from './secrets.js';

const onlyConfigErrors = (fn: () => unknown): void => {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(TesseraError);
    expect((err as TesseraError).code).toBe('TESSERA_CONFIG_INVALID');
  }
};

describe('--servers URL@SPIFFE_ID,...', () => {
  it('parses a list into indices 1..n in order, across commas and repeated flags', () => {
    expect(parseServers(['https://10.0.0.1:8600@spiffe://td/keyserver/1,https://ks2.example:8600/@spiffe://td/keyserver/2', ' https://[::1]:9@spiffe://td/ks/3 '])).toEqual([
      { url: 'https://10.0.0.1:8600', spiffeId: 'spiffe://td/keyserver/1', index: 1 },
      { url: 'https://ks2.example:8600', spiffeId: 'spiffe://td/keyserver/2', index: 2 },
      { url: 'https://[::1]:9', spiffeId: 'spiffe://td/ks/3', index: 3 },
    ]);
  });

  it('refuses what is not https URL@SPIFFE_ID with TESSERA_CONFIG_INVALID', () => {
    for (const bad of ['https://a:1', '@spiffe://td/x', 'http://a:1@spiffe://td/x', 'https://a:1@spiffe://TD/x', 'https://a:1@spiffe://td/', 'not a url@spiffe://td/x', 'https://a:1@spiffe://td/x/../y']) {
      expectTesseraError(() => parseServers([bad]), 'TESSERA_CONFIG_INVALID');
    }
  });

  it('on arbitrary input returns servers or throws TESSERA_CONFIG_INVALID, nothing else', () => {
    fc.assert(fc.property(fc.array(fc.string({ maxLength: 80 }), { maxLength: 4 }), (specs) => onlyConfigErrors(() => parseServers(specs))), { numRuns: 500 });
    fc.assert(fc.property(fc.webUrl({ validSchemes: ['https'] }), fc.stringMatching(/^[a-z0-9/._-]{0,20}$/), (url, path) => onlyConfigErrors(() => {
      const [s] = parseServers([`${url}@spiffe://td/${path}`]);
      expect(s!.url.startsWith('https://')).toBe(true);
    })), { numRuns: 300 });
  });
});

describe('--rate-limit PER_SECOND[:BURST]', () => {
  it('parses a rate, with a burst of twice the rate by default', () => {
    expect(parseRateLimit('20:40')).toEqual({ perSecond: 20, burst: 40 });
    expect(parseRateLimit('5')).toEqual({ perSecond: 5, burst: 10 });
    expect(parseRateLimit('0.2')).toEqual({ perSecond: 0.2, burst: 1 });
    expect(parseRateLimit(' 1000000:1000000 ')).toEqual({ perSecond: 1e6, burst: 1e6 });
  });

  it('refuses zero, negatives, garbage, a zero burst', () => {
    for (const bad of ['', '0', '-1', '1:0', 'x', '1:2:3', '1e3', '1:', ':5', 'NaN', 'Infinity']) expectTesseraError(() => parseRateLimit(bad), 'TESSERA_CONFIG_INVALID');
  });

  it('on arbitrary input returns a positive limit or throws TESSERA_CONFIG_INVALID', () => {
    fc.assert(fc.property(fc.string({ maxLength: 30 }), (v) => onlyConfigErrors(() => {
      const r = parseRateLimit(v);
      expect(r.perSecond).toBeGreaterThan(0);
      expect(r.burst).toBeGreaterThanOrEqual(1);
    })), { numRuns: 1000 });
  });
});
