/**
 * The parsers of `tessera login` (login.ts): user codes (RFC 8628 §6.1) and the loopback redirect
 * URI (RFC 8252 §7.3), with property tests: never a throw other than the stable code, never an
 * accepted value outside the one shape.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isTesseraError } from '../../core/errors.js';
import { newUserCode, normaliseUserCode, parseLoopbackRedirect, s256, USER_CODE_ALPHABET } from './login.js';

describe('user codes', () => {
  it('are XXXX-XXXX of the consonant alphabet, and normalise back from any case, dash or spaces', () => {
    for (let i = 0; i < 200; i++) {
      const c = newUserCode();
      expect(c).toMatch(new RegExp(`^[${USER_CODE_ALPHABET}]{4}-[${USER_CODE_ALPHABET}]{4}$`));
      expect(normaliseUserCode(c.toLowerCase().replace('-', ' '))).toBe(c.replace('-', ''));
    }
    expect(normaliseUserCode('bcdf-ghjk')).toBe('BCDFGHJK');
    for (const bad of ['', 'BCDF-GHJ', 'BCDF-GHJKL', 'AEIO-UYBC', '1234-5678', 'BCDF_GHJK', 'x'.repeat(33)]) expect(normaliseUserCode(bad), bad).toBeUndefined();
  });

  it('normalise anything to undefined or 8 letters of the alphabet, without throwing', () => {
    fc.assert(fc.property(fc.string({ maxLength: 40 }), (s) => {
      const n = normaliseUserCode(s);
      return n === undefined || (n.length === 8 && [...n].every((c) => USER_CODE_ALPHABET.includes(c)));
    }), { numRuns: 2000 });
  });
});

describe('loopback redirect URI', () => {
  it('accepts exactly http://127.0.0.1:PORT/', () => {
    for (const ok of ['http://127.0.0.1:1/', 'http://127.0.0.1:8080/', 'http://127.0.0.1:65535/']) expect(parseLoopbackRedirect(ok)).toBe(ok);
    for (const bad of [undefined, 1, '', 'http://127.0.0.1:65536/', 'http://127.0.0.1:08080/', 'HTTP://127.0.0.1:8080/', 'http://127.0.0.1:8080/%2e', 'http://127.0.0.1:8080/ ']) {
      let code: string | undefined;
      try {
        parseLoopbackRedirect(bad);
      } catch (e) {
        code = isTesseraError(e) ? e.code : 'other';
      }
      expect(code, String(bad)).toBe('TESSERA_REDIRECT_INVALID');
    }
  });

  it('never accepts a URL whose host is not 127.0.0.1 or that has a path, query or fragment; never throws anything but its code', () => {
    fc.assert(fc.property(fc.oneof(fc.webUrl({ withQueryParameters: true, withFragments: true }), fc.string({ maxLength: 80 }).map((s) => `http://127.0.0.1:${s}`)), (u) => {
      try {
        const v = parseLoopbackRedirect(u);
        const url = new URL(v);
        return url.hostname === '127.0.0.1' && url.protocol === 'http:' && url.pathname === '/' && url.search === '' && url.hash === '' && url.username === '' && v === `${url.origin}/`;
      } catch (e) {
        return isTesseraError(e) && e.code === 'TESSERA_REDIRECT_INVALID';
      }
    }), { numRuns: 3000 });
  });
});

describe('PKCE S256', () => {
  it('is base64url(SHA-256(ASCII(verifier))) (RFC 7636 Appendix B)', () => {
    expect(s256('dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk')).toBe('E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM');
  });
});
