import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { formatDuration, parseDuration } from './duration.js';
import { TesseraError } from './errors.js';

describe('parseDuration', () => {
  it.each([
    ['30s', 30_000], ['10m', 600_000], ['24h', 86_400_000], ['1h30m', 5_400_000], ['250ms', 250], ['2d', 172_800_000], ['45', 45_000],
  ])('%s', (input, ms) => expect(parseDuration(input)).toBe(ms));

  it.each(['', 'abc', '10x', '-5s', '1.5h', 'h', '0s', '0', '000', '10m garbage', '9'.repeat(40)])('rejects %j', (input) => {
    expect(() => parseDuration(input)).toThrowError(expect.objectContaining({ code: 'TESSERA_CONFIG_INVALID' }));
  });

  it('round-trips through formatDuration for whole seconds', () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 10_000_000 }), (secs) => parseDuration(formatDuration(secs * 1000)) === secs * 1000));
  });

  it('only ever throws TesseraError', () => {
    fc.assert(fc.property(fc.string(), (s) => {
      try { parseDuration(s); } catch (e) { return e instanceof TesseraError; }
      return true;
    }));
  });
});
