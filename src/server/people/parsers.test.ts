/**
 * The parsers of people's sign-in, property-tested: the Cookie header, the return-to path, the
 * OIDC username rule, the OIDC groups claim; and TOTP against RFC 6238's own test vectors.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { cookieValue, parseCookies, serializeCookie } from '../../common/cookies.js';
import { parseReturnTo } from './return-to.js';
import { matchTotp, totpCode, totpStep, TOTP_DEFAULTS, type TotpParams } from './totp.js';
import { claimGroups, deriveUsername, USERNAME } from './users.js';

const ORIGIN = 'https://cp.example:8443';

describe('Cookie header', () => {
  it('never throws, and reads back what it was given', () => {
    fc.assert(fc.property(fc.string({ maxLength: 400 }), (h) => {
      parseCookies(h);
      cookieValue(h, '__Host-tessera_session');
    }));
    const token = fc.stringMatching(/^[A-Za-z0-9_-]{1,64}$/);
    fc.assert(fc.property(token, token, (a, b) => {
      const h = `x=1; __Host-tessera_session=${a}; other=${b}`;
      expect(cookieValue(h, '__Host-tessera_session')).toBe(a);
      expect(cookieValue(`${h}; __Host-tessera_session=${b}`, '__Host-tessera_session')).toBeUndefined();
    }));
  });

  it('skips malformed pairs and oversized headers', () => {
    expect(cookieValue('__Host-tessera_session', '__Host-tessera_session')).toBeUndefined();
    expect(cookieValue('__Host-tessera_session=a b', '__Host-tessera_session')).toBeUndefined();
    expect(cookieValue(`__Host-tessera_session=${'a'.repeat(20_000)}`, '__Host-tessera_session')).toBeUndefined();
    expect(cookieValue('__Host-tessera_session="abc"', '__Host-tessera_session')).toBe('abc');
  });

  it('writes __Host- cookies with Secure, Path=/ and no Domain', () => {
    const c = serializeCookie('__Host-x', 'v', { httpOnly: true, sameSite: 'Strict', maxAge: 60 });
    expect(c).toBe('__Host-x=v; Path=/; Secure; SameSite=Strict; HttpOnly; Max-Age=60');
    expect(() => serializeCookie('__Host-x', 'a;b', { httpOnly: true, sameSite: 'Lax' })).toThrow();
  });
});

describe('return-to', () => {
  it('whatever it accepts stays on the origin, as a path that is not scheme-relative', () => {
    fc.assert(fc.property(fc.oneof(fc.string({ maxLength: 80 }), fc.string({ maxLength: 80 }).map((s) => `/${s}`), fc.webUrl(), fc.webPath()), (v) => {
      let out: string;
      try {
        out = parseReturnTo(v, ORIGIN);
      } catch (e) {
        expect((e as { code: string }).code).toBe('TESSERA_REDIRECT_INVALID');
        return;
      }
      expect(out.startsWith('/')).toBe(true);
      expect(out.startsWith('//')).toBe(false);
      expect(out).not.toMatch(/[\\\s]/);
      // How a browser would resolve the Location header we send.
      expect(new URL(out, ORIGIN).origin).toBe(ORIGIN);
    }), { numRuns: 2000 });
  });

  it('refuses other hosts and the browser-normalised tricks; keeps plain paths', () => {
    for (const bad of ['https://evil.example', '//evil.example', '/\\evil.example', '\\\\evil.example', '/\t/evil.example', '/\n/evil.example', 'javascript:alert(1)',
      'evil', '/ok path', 42, null, {}, '/'.padEnd(3000, 'a')]) {
      expect(() => parseReturnTo(bad, ORIGIN), String(bad)).toThrow(expect.objectContaining({ code: 'TESSERA_REDIRECT_INVALID' }));
    }
    expect(parseReturnTo(undefined, ORIGIN)).toBe('/');
    expect(parseReturnTo('/console/map?x=1#y', ORIGIN)).toBe('/console/map?x=1#y');
    expect(parseReturnTo('/a/../b', ORIGIN)).toBe('/b');
    expect(parseReturnTo('/%2F%2Fevil.example', ORIGIN)).toBe('/%2F%2Fevil.example');
  });
});

describe('OIDC username and groups', () => {
  it('always yields a valid username, the same for the same claims', () => {
    const claims = fc.record({
      sub: fc.string({ minLength: 1, maxLength: 40 }),
      preferred_username: fc.option(fc.string({ maxLength: 80 }), { nil: undefined }),
      email: fc.option(fc.oneof(fc.emailAddress(), fc.string({ maxLength: 40 })), { nil: undefined }),
      email_verified: fc.option(fc.boolean(), { nil: undefined }),
    });
    fc.assert(fc.property(claims, (c) => {
      const name = deriveUsername(c, 'https://idp.example');
      expect(name).toMatch(USERNAME);
      expect(deriveUsername(c, 'https://idp.example')).toBe(name);
    }), { numRuns: 1000 });
  });

  it('follows the documented rule', () => {
    expect(deriveUsername({ sub: '1', preferred_username: 'Ada.Lovelace' }, 'i')).toBe('ada.lovelace');
    expect(deriveUsername({ sub: '1', preferred_username: '  Ada Lovelace' }, 'i')).toBe('ada-lovelace');
    expect(deriveUsername({ sub: '1', email: 'Grace@x.example', email_verified: true }, 'i')).toBe('grace');
    // An unverified email is not used; nor is a name with nothing usable.
    expect(deriveUsername({ sub: '1', email: 'grace@x.example' }, 'i')).toMatch(/^oidc-[0-9a-f]{16}$/);
    expect(deriveUsername({ sub: '1', preferred_username: '___' }, 'i')).toMatch(/^oidc-[0-9a-f]{16}$/);
    expect(deriveUsername({ sub: '1' }, 'i')).not.toBe(deriveUsername({ sub: '2' }, 'i'));
  });

  it('groups: a list or one string; invalid items dropped, sorted, deduplicated, at most 64', () => {
    expect(claimGroups({ groups: ['b', 'a', 'a', 7, '', 'x\ny'] }, 'groups')).toEqual(['a', 'b']);
    expect(claimGroups({ roles: 'ops' }, 'roles')).toEqual(['ops']);
    expect(claimGroups({ groups: { a: 1 } }, 'groups')).toEqual([]);
    expect(claimGroups({ groups: Array.from({ length: 100 }, (_, i) => `g${i}`) }, 'groups')).toHaveLength(64);
    fc.assert(fc.property(fc.anything(), (v) => {
      for (const g of claimGroups({ groups: v }, 'groups')) expect(typeof g).toBe('string');
    }));
  });
});

describe('TOTP (RFC 6238)', () => {
  // RFC 6238 Appendix B: the SHA-1 seed "12345678901234567890", 8 digits, X = 30, T0 = 0.
  const seed = Buffer.from('12345678901234567890');
  const rfc: TotpParams = { algorithm: 'SHA1', digits: 8, period: 30, window: 1 };
  const vectors: [number, string][] = [[59, '94287082'], [1111111109, '07081804'], [1111111111, '14050471'], [1234567890, '89005924'], [2000000000, '69279037'], [20000000000, '65353130']];

  it.each(vectors)('at %i s the code is %s (Appendix B), and it matches in its own step', (t, expected) => {
    expect(totpCode(seed, totpStep(t * 1000, rfc), rfc)).toBe(expected);
    expect(matchTotp(seed, expected, t * 1000, rfc)).toBe(totpStep(t * 1000, rfc));
  });

  it('the default is SHA-1, 6 digits, 30 s, one step either side', () => {
    expect(TOTP_DEFAULTS).toEqual({ algorithm: 'SHA1', digits: 6, period: 30, window: 1 });
    const now = 1_700_000_015_000;
    const step = totpStep(now);
    for (const d of [-1, 0, 1]) expect(matchTotp(seed, totpCode(seed, step + d), now)).toBe(step + d);
    for (const d of [-3, -2, 2, 3]) {
      const c = totpCode(seed, step + d);
      // A code of a step outside the window matches only if it happens to equal one inside.
      const inside = [-1, 0, 1].some((w) => totpCode(seed, step + w) === c);
      expect(matchTotp(seed, c, now) === undefined).toBe(!inside);
    }
  });

  it('refuses anything that is not exactly six ASCII digits', () => {
    fc.assert(fc.property(fc.string({ maxLength: 10 }), (s) => {
      const r = matchTotp(seed, s, 1_700_000_000_000);
      if (!/^[0-9]{6}$/.test(s)) expect(r).toBeUndefined();
    }));
    expect(matchTotp(seed, '１２３４５６', 0)).toBeUndefined();
  });
});
