/** `--store` / $TESSERA_STORE: which URLs are taken, and that printed forms never hold the password. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseStoreUrl, redactUrl, storeOption } from './store-url.js';

describe('store URL', () => {
  it('takes postgres:// and postgresql:// URLs with a host and a database; the flag wins over the environment', () => {
    expect(parseStoreUrl('postgres://u@127.0.0.1:5432/db').pathname).toBe('/db');
    expect(parseStoreUrl('postgresql://u:p@db.internal/tessera?sslmode=require').hostname).toBe('db.internal');
    expect(storeOption(undefined, undefined)).toBeUndefined();
    expect(storeOption(undefined, '')).toBeUndefined();
    expect(storeOption(undefined, 'postgres://e@h/d')).toBe('postgres://e@h/d');
    expect(storeOption('postgres://f@h/d', 'postgres://e@h/d')).toBe('postgres://f@h/d');
  });

  it('refuses other schemes, no host, no database, and non-URLs with TESSERA_CONFIG_INVALID', () => {
    for (const bad of ['mysql://u@h/db', 'sqlite:///tmp/x.db', 'postgres://u@h', 'postgres://u@h/', 'postgres:///db', 'not a url', '', 'file:///etc/passwd']) {
      expect(() => storeOption(bad, undefined), bad).toThrow(expect.objectContaining({ code: 'TESSERA_CONFIG_INVALID' }));
    }
    expect(() => storeOption(undefined, 'http://h/db')).toThrow(expect.objectContaining({ code: 'TESSERA_CONFIG_INVALID' }));
  });

  it('the printed form never holds the password (user info or ?password=), whatever it is', () => {
    fc.assert(fc.property(fc.string({ minLength: 1, maxLength: 40 }), fc.boolean(), (pw, inQuery) => {
      const enc = encodeURIComponent(`Zq${pw}`);
      const url = inQuery ? `postgres://u@127.0.0.1:5432/db?password=${enc}` : `postgres://u:${enc}@127.0.0.1:5432/db`;
      const shown = redactUrl(url);
      expect(shown).not.toContain(enc);
      expect(shown).toContain('***');
      expect(shown).toContain('127.0.0.1:5432/db');
    }), { numRuns: 300 });
    expect(redactUrl('::not a url:: secret')).not.toContain('secret');
  });
});
