import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES, TesseraError } from './errors.js';

describe('error codes', () => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');

  it.each(Object.entries(ERROR_CODES))('%s is documented in the README with its status', (code, { status }) => {
    expect(readme).toMatch(new RegExp(`\\| \`${code}\` \\| ${status} \\|`));
  });

  it('has a 4xx or 5xx status for every code and no code documented that does not exist', () => {
    for (const { status } of Object.values(ERROR_CODES)) expect(status >= 400 && status < 600).toBe(true);
    const documented = [...readme.matchAll(/\| `(TESSERA_[A-Z_]+)` \|/g)].map((m) => m[1]);
    expect(documented.filter((c) => !(c! in ERROR_CODES))).toEqual([]);
  });

  it('serializes to code and message only', () => {
    expect(JSON.parse(JSON.stringify(new TesseraError('TESSERA_NOT_FOUND')))).toEqual({ code: 'TESSERA_NOT_FOUND', message: ERROR_CODES.TESSERA_NOT_FOUND.description });
  });
});
