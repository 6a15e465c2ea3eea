import { describe, expect, it } from 'vitest';
import { isTesseraError } from '../core/errors.js';
import { peopleOptions } from './people-options.js';

function code(o: Record<string, unknown>): string | undefined {
  try {
    peopleOptions(o);
    return undefined;
  } catch (e) {
    return isTesseraError(e) ? e.code : 'other';
  }
}

describe('tessera server --login-max-ttl --signin-rate-limit', () => {
  it('parses them, within bounds', () => {
    expect(peopleOptions({ loginMaxTtl: '2h', signinRateLimit: '10:100' })).toEqual({ login: { maxTtlMs: 7_200_000 }, signInLimits: { rateLimit: { perSecond: 10, burst: 100 } } });
    expect(peopleOptions({})).toBeUndefined();
    for (const bad of [{ loginMaxTtl: '1m' }, { loginMaxTtl: '25h' }, { loginMaxTtl: 'soon' }, { signinRateLimit: '0' }, { signinRateLimit: 'x:1' }, { signinRateLimit: '5:0' }]) {
      expect(code(bad), JSON.stringify(bad)).toBe('TESSERA_CONFIG_INVALID');
    }
  });
});
