import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isTesseraError } from '../core/errors.js';
import { parseGrantMin } from './grant.js';

describe('tessera server --grant-min', () => {
  it('takes whole seconds from 1 s to 1 h', () => {
    expect(parseGrantMin('1s')).toBe(1);
    expect(parseGrantMin('10s')).toBe(10);
    expect(parseGrantMin('1m')).toBe(60);
    expect(parseGrantMin('1h')).toBe(3600);
  });

  it('refuses zero, fractions of a second, more than an hour and anything not a duration with TESSERA_CONFIG_INVALID', () => {
    for (const bad of ['0', '0s', '1500ms', '1h1s', '2h', '', 'soon', '-5s', '1e3']) {
      expect(() => parseGrantMin(bad), bad).toThrow(expect.objectContaining({ code: 'TESSERA_CONFIG_INVALID' }) as Error);
    }
  });

  it('never throws anything but a TesseraError, and what it accepts is in range', () => {
    fc.assert(fc.property(fc.string({ maxLength: 40 }), (text) => {
      try {
        const s = parseGrantMin(text);
        expect(Number.isInteger(s) && s >= 1 && s <= 3600).toBe(true);
      } catch (err) {
        expect(isTesseraError(err) && err.code === 'TESSERA_CONFIG_INVALID').toBe(true);
      }
    }), { numRuns: 2000 });
  });
});
