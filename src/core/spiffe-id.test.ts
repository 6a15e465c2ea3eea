import { expectTesseraError } from '../../test/support/expect.js';
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { TesseraError } from './errors.js';
import {
  isMemberOf,
  isSpiffeId,
  normalizeSpiffeId,
  parseSpiffeId,
  parseTrustDomain,
  spiffeIdFromPath,
  type SpiffeId,
} from './spiffe-id.js';

const CODE = 'TESSERA_SPIFFE_ID_INVALID';

/** Runs `fn`, asserts it throws a TesseraError with the SPIFFE code, returns the error. */
function expectInvalid(fn: () => unknown): TesseraError {
  const err = expectTesseraError(fn, CODE);
  expect(err.status).toBe(400);
  return err;
}

const LOWER = 'abcdefghijklmnopqrstuvwxyz';
const UPPER = LOWER.toUpperCase();
const DIGITS = '0123456789';
const TD_CHARS = LOWER + DIGITS + '.-_';
const SEG_CHARS = LOWER + UPPER + DIGITS + '.-_';

/**
 * Independent reference oracle written from the standard's wording (regex is fine here; the
 * implementation must not use one). §2.1 chars, §2.2 chars and segment rules, §2.3 lengths.
 */
function oracle(s: string): boolean {
  const m = /^spiffe:\/\/([a-z0-9._-]+)((?:\/[A-Za-z0-9._-]+)*)$/.exec(s);
  if (m === null) return false;
  const td = m[1] as string;
  const path = m[2] as string;
  if (td.length > 255 || s.length > 2048) return false;
  return path.split('/').slice(1).every((seg) => seg !== '.' && seg !== '..');
}

// ---------------------------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------------------------

const TD_255 = 'a'.repeat(251) + '.org';
const TD_256 = 'a'.repeat(252) + '.org';
const ID_2048 = 'spiffe://example.org/' + 'a'.repeat(2048 - 'spiffe://example.org/'.length);

const VALID: Array<[string, string, string, string]> = [
  // [description, id, trustDomain, path]
  ['trust-domain ID, empty path (§2: path is optional)', 'spiffe://example.org', 'example.org', ''],
  ['§2 example', 'spiffe://trust-domain-name/path', 'trust-domain-name', '/path'],
  ['§2.2 example (services)', 'spiffe://staging.example.com/payments/mysql', 'staging.example.com', '/payments/mysql'],
  ['§2.2 example (web-fe)', 'spiffe://staging.example.com/payments/web-fe', 'staging.example.com', '/payments/web-fe'],
  ['§2.2 example (k8s)', 'spiffe://k8s-west.example.com/ns/staging/sa/default', 'k8s-west.example.com', '/ns/staging/sa/default'],
  ['§2.2 example (opaque)', 'spiffe://example.com/9eebccd2-12bf-40a6-b262-65fe0487d453', 'example.com', '/9eebccd2-12bf-40a6-b262-65fe0487d453'],
  ['§2.1.1 example (underscore)', 'spiffe://trust_domain_name.example.com/w', 'trust_domain_name.example.com', '/w'],
  ['§2.1 IPv4 dotted quad', 'spiffe://192.168.0.1/w', '192.168.0.1', '/w'],
  ['single-char trust domain', 'spiffe://a/b', 'a', '/b'],
  ['trust domain of only allowed punctuation (standard restricts chars only)', 'spiffe://-._/x', '-._', '/x'],
  ['path is case-sensitive and may use uppercase (§2.2, §2.4)', 'spiffe://example.org/Ns/PROD/sa/Web', 'example.org', '/Ns/PROD/sa/Web'],
  ['dots that are not . or .. segments', 'spiffe://example.org/.../.a/a./..a/a..', 'example.org', '/.../.a/a./..a/a..'],
  ['segment of punctuation', 'spiffe://example.org/-_.', 'example.org', '/-_.'],
  ['trust domain of exactly 255 bytes', `spiffe://${TD_255}/x`, TD_255, '/x'],
  ['ID of exactly 2048 bytes', ID_2048, 'example.org', ID_2048.slice('spiffe://example.org'.length)],
];

const INVALID: Array<[string, string]> = [
  ['empty string', ''],
  ['no scheme', 'example.org/a'],
  ['wrong scheme http', 'http://example.org/a'],
  ['wrong scheme spiffes', 'spiffes://example.org/a'],
  ['uppercase scheme', 'SPIFFE://example.org/a'],
  ['mixed-case scheme', 'Spiffe://example.org/a'],
  ['missing // (opaque)', 'spiffe:example.org/a'],
  ['missing one /', 'spiffe:/example.org/a'],
  ['no trust domain', 'spiffe://'],
  ['no trust domain, with path', 'spiffe:///a'],
  ['uppercase trust domain', 'spiffe://Example.org/a'],
  ['all-uppercase trust domain', 'spiffe://EXAMPLE.ORG'],
  ['port', 'spiffe://example.org:8080/a'],
  ['empty port (":" present)', 'spiffe://example.org:/a'],
  ['userinfo', 'spiffe://user@example.org/a'],
  ['userinfo with password', 'spiffe://user:pw@example.org/a'],
  ['query', 'spiffe://example.org/a?x=1'],
  ['empty query', 'spiffe://example.org/a?'],
  ['query on trust-domain ID', 'spiffe://example.org?x=1'],
  ['fragment', 'spiffe://example.org/a#frag'],
  ['fragment on trust-domain ID', 'spiffe://example.org#f'],
  ['percent-encoding in path', 'spiffe://example.org/a%20b'],
  ['percent-encoded dot segment', 'spiffe://example.org/%2e'],
  ['percent-encoding in trust domain', 'spiffe://ex%61mple.org/a'],
  ['empty segment', 'spiffe://example.org//a'],
  ['empty segment in the middle', 'spiffe://example.org/a//b'],
  ['dot segment', 'spiffe://example.org/.'],
  ['dot-dot segment', 'spiffe://example.org/..'],
  ['inner dot segment', 'spiffe://example.org/a/./b'],
  ['inner dot-dot segment', 'spiffe://example.org/a/../b'],
  ['trailing dot-dot segment', 'spiffe://example.org/a/..'],
  ['trailing slash after trust domain', 'spiffe://example.org/'],
  ['trailing slash after path', 'spiffe://example.org/a/'],
  ['space in path', 'spiffe://example.org/a b'],
  ['colon in path', 'spiffe://example.org/pa:th'],
  ['@ in path', 'spiffe://example.org/pa@th'],
  ['sub-delims in path', "spiffe://example.org/p!a$t&h'(e)*+,;="],
  ['tilde in path', 'spiffe://example.org/~user'],
  ['brackets in path', 'spiffe://example.org/elem[ent]'],
  ['backslash in path', 'spiffe://example.org/a\\b'],
  ['NUL in path', 'spiffe://example.org/a\u0000b'],
  ['newline at end', 'spiffe://example.org/a\n'],
  ['leading space', ' spiffe://example.org/a'],
  ['space in trust domain', 'spiffe://exa mple.org/a'],
  ['! in trust domain', 'spiffe://ex!ample.org/a'],
  ['~ in trust domain', 'spiffe://example~org/a'],
  ['IPv6 literal trust domain (§2.1 excludes IPv6)', 'spiffe://[::1]/a'],
  ['backslash after trust domain', 'spiffe://example.org\\a'],
  ['trust domain of 256 bytes', `spiffe://${TD_256}/x`],
  ['trust-domain ID with 256-byte trust domain', `spiffe://${TD_256}`],
  ['ID of 2049 bytes', ID_2048 + 'a'],
  ['non-ASCII in trust domain', 'spiffe://exämple.org/a'],
  ['non-ASCII in path', 'spiffe://example.org/é'],
  ['astral (emoji) in path', 'spiffe://example.org/a\u{1F600}'],
  ['lone surrogate in path', 'spiffe://example.org/a\uD800'],
  ['KELVIN SIGN in trust domain', 'spiffe://\u212Aexample.org/a'],
  ['fullwidth solidus', 'spiffe://example.org\uFF0Fa'],
];

describe('parseSpiffeId: valid IDs from the standard', () => {
  it.each(VALID)('%s', (_desc, id, trustDomain, path) => {
    const parsed = parseSpiffeId(id);
    expect(parsed).toEqual({ trustDomain, path, id });
    expect(Object.isFrozen(parsed)).toBe(true);
    expect(isSpiffeId(id)).toBe(true);
    expect(oracle(id)).toBe(true);
    expect(normalizeSpiffeId(id)).toBe(id);
    expect(spiffeIdFromPath(trustDomain, path)).toEqual(parsed);
    expect(isMemberOf(id, trustDomain)).toBe(true);
  });
});

describe('parseSpiffeId: invalid IDs', () => {
  it.each(INVALID)('%s', (_desc, id) => {
    const err = expectInvalid(() => parseSpiffeId(id));
    expect(err.message.length).toBeLessThan(200);
    expect(isSpiffeId(id)).toBe(false);
    expect(oracle(id)).toBe(false);
  });

  it('gives precise messages', () => {
    const msg = (id: string): string => expectInvalid(() => parseSpiffeId(id)).message;
    expect(msg('spiffe://example.org/a/./b')).toBe('SPIFFE ID path segment "." is not allowed');
    expect(msg('spiffe://example.org/..')).toBe('SPIFFE ID path segment ".." is not allowed');
    expect(msg('spiffe://example.org/a/')).toBe('SPIFFE ID path must not end with "/"');
    expect(msg('spiffe://example.org//a')).toBe('SPIFFE ID path must not contain empty segments ("//")');
    expect(msg('spiffe://example.org:8080/a')).toMatch(/port/);
    expect(msg('spiffe://user@example.org/a')).toMatch(/userinfo/);
    expect(msg('spiffe://example.org/a?x')).toMatch(/query/);
    expect(msg('spiffe://example.org/a#x')).toMatch(/fragment/);
    expect(msg('spiffe://example.org/a%41')).toMatch(/percent-encoded/);
    expect(msg('spiffe://Example.org/a')).toMatch(/lowercase/);
    expect(msg('SPIFFE://example.org/a')).toBe('SPIFFE ID scheme must be lowercase "spiffe"');
    expect(msg('http://example.org/a')).toBe('SPIFFE ID scheme must be "spiffe"');
    expect(msg('spiffe:/example.org')).toMatch(/"\/\/"/);
    expect(msg('spiffe://')).toMatch(/trust domain is missing/);
    expect(msg(`spiffe://${TD_256}`)).toMatch(/255 bytes/);
    expect(msg(ID_2048 + 'a')).toMatch(/2048 bytes/);
    expect(msg('spiffe://example.org/é')).toContain('U+00E9');
    expect(msg('spiffe://example.org/a\u{1F600}')).toContain('U+1F600');
    expect(msg('spiffe://example.org/a\nb')).toContain('U+000A');
    expect(msg('spiffe://example.org/a b')).toContain('U+0020');
    expect(msg('spiffe://example.org/a~b')).toBe('"~" is not allowed in a SPIFFE ID path (allowed: a-z A-Z 0-9 . - _)');
  });

  it('rejects huge input before scanning it', () => {
    const huge = 'spiffe://example.org/' + 'a'.repeat(10_000_000);
    const start = performance.now();
    expectInvalid(() => parseSpiffeId(huge));
    expect(isSpiffeId(huge)).toBe(false);
    expect(performance.now() - start).toBeLessThan(50);
  });

  it('rejects non-string input without throwing from the predicates', () => {
    for (const v of [undefined, null, 42, {}, ['spiffe://example.org']] as unknown[]) {
      expectInvalid(() => parseSpiffeId(v as string));
      expectInvalid(() => normalizeSpiffeId(v as string));
      expectInvalid(() => parseTrustDomain(v as string));
      expect(isSpiffeId(v as string)).toBe(false);
      expect(isMemberOf(v as string, 'example.org')).toBe(false);
      expect(isMemberOf('spiffe://example.org/a', v as string)).toBe(false);
    }
  });
});

describe('normalizeSpiffeId', () => {
  it.each([
    ['SPIFFE://example.org/a', 'spiffe://example.org/a'],
    ['Spiffe://Example.ORG/Payments/MySQL', 'spiffe://example.org/Payments/MySQL'],
    ['spiffe://EXAMPLE.ORG', 'spiffe://example.org'],
    ['spiffe://example.org/a', 'spiffe://example.org/a'],
  ])('%s -> %s (path case is preserved, §2.4)', (input, expected) => {
    expect(normalizeSpiffeId(input)).toBe(expected);
  });

  it.each([
    'HTTP://example.org/a',
    'SPIFFE://Example.org:8080/a',
    'SPIFFE://user@Example.org/a',
    'spiffe://Example.org/a/',
    'spiffe://Example.org/a%20b',
    'spiffe://Example.org/a?x',
    'SPIFFE:/example.org/a',
    'SPIFFE://',
    'spiffe://\u212Aexample.org/a', // KELVIN SIGN lowercases to "k" with String#toLowerCase
    'spiffe://\u0130example.org/a', // LATIN CAPITAL I WITH DOT ABOVE
    'example.org',
    '',
  ])('still rejects %j', (input) => {
    expectInvalid(() => normalizeSpiffeId(input));
  });
});

describe('parseTrustDomain', () => {
  it.each([
    ['example.org', 'example.org'],
    ['spiffe://example.org', 'example.org'],
    ['192.168.0.1', '192.168.0.1'],
    [TD_255, TD_255],
  ])('%s -> %s', (input, expected) => {
    expect(parseTrustDomain(input)).toBe(expected);
  });

  it.each([
    '',
    'Example.org',
    'SPIFFE://example.org',
    'spiffe://',
    'spiffe://example.org/a',
    'spiffe://example.org/',
    'spiffe:example.org',
    'http://example.org',
    'example.org/a',
    'example.org:8080',
    'user@example.org',
    'exa mple.org',
    'exämple.org',
    TD_256,
    'a'.repeat(100_000),
  ])('rejects %j', (input) => {
    expectInvalid(() => parseTrustDomain(input));
  });
});

describe('spiffeIdFromPath', () => {
  it('builds IDs', () => {
    expect(spiffeIdFromPath('example.org', '')).toEqual({ trustDomain: 'example.org', path: '', id: 'spiffe://example.org' });
    expect(spiffeIdFromPath('example.org', '/ns/prod/sa/web')).toEqual({
      trustDomain: 'example.org',
      path: '/ns/prod/sa/web',
      id: 'spiffe://example.org/ns/prod/sa/web',
    });
    expect(spiffeIdFromPath('spiffe://example.org', '/a').id).toBe('spiffe://example.org/a');
  });

  it.each([
    ['example.org', 'a'],
    ['example.org', '/'],
    ['example.org', '/a/'],
    ['example.org', '//a'],
    ['example.org', '/./a'],
    ['example.org', '/a?b'],
    ['example.org', '/a%2f'],
    ['Example.org', '/a'],
    ['', '/a'],
    ['spiffe://example.org/x', '/a'],
    ['example.org', '/' + 'a'.repeat(2048)],
  ])('rejects (%j, %j)', (td, path) => {
    expectInvalid(() => spiffeIdFromPath(td, path));
  });
});

describe('isMemberOf', () => {
  it('matches the trust domain exactly', () => {
    const id = parseSpiffeId('spiffe://example.org/a');
    expect(isMemberOf(id, 'example.org')).toBe(true);
    expect(isMemberOf('spiffe://example.org/a', 'example.org')).toBe(true);
    expect(isMemberOf('spiffe://example.org', 'example.org')).toBe(true);
    expect(isMemberOf('spiffe://example.org/a', 'spiffe://example.org')).toBe(true);
    expect(isMemberOf(id, 'other.org')).toBe(false);
    expect(isMemberOf('spiffe://example.org.evil.com/a', 'example.org')).toBe(false);
    expect(isMemberOf('spiffe://evilexample.org/a', 'example.org')).toBe(false);
    expect(isMemberOf('spiffe://sub.example.org/a', 'example.org')).toBe(false);
    expect(isMemberOf('spiffe://example.org/a', 'sub.example.org')).toBe(false);
    expect(isMemberOf('spiffe://example.or/a', 'example.org')).toBe(false);
  });

  it('fails closed on invalid input', () => {
    expect(isMemberOf('spiffe://Example.org/a', 'example.org')).toBe(false);
    expect(isMemberOf('spiffe://example.org/a/', 'example.org')).toBe(false);
    expect(isMemberOf('spiffe://example.org:80/a', 'example.org')).toBe(false);
    expect(isMemberOf('spiffe://example.org/a', 'Example.org')).toBe(false);
    expect(isMemberOf('spiffe://example.org/a', '')).toBe(false);
    expect(isMemberOf('spiffe://example.org/a', 'spiffe://example.org/a')).toBe(false);
    expect(isMemberOf(null as unknown as SpiffeId, 'example.org')).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

const tdArb = (maxLength: number): fc.Arbitrary<string> =>
  fc.string({ unit: fc.constantFrom(...TD_CHARS), minLength: 1, maxLength });
const segArb = fc
  .string({ unit: fc.constantFrom(...SEG_CHARS), minLength: 1, maxLength: 20 })
  .filter((s) => s !== '.' && s !== '..');
const pathArb = (minSegments = 0): fc.Arbitrary<string> =>
  fc.array(segArb, { minLength: minSegments, maxLength: 8 }).map((segs) => segs.map((s) => '/' + s).join(''));
const validParts = fc.record({ td: tdArb(63), path: pathArb() });
const validId = validParts.map(({ td, path }) => `spiffe://${td}${path}`);

/** Any code point (lone surrogates included) that is neither a segment character nor "/". */
const forbiddenPathChar = fc.oneof(
  fc.constantFrom(...' !"#$%&\'()*+,:;<=>?@[\\]^`{|}~\u0000\t\n\r\u007f'),
  fc
    .integer({ min: 0, max: 0x10ffff })
    .map((cp) => String.fromCodePoint(cp))
    .filter((ch) => ch !== '/' && !SEG_CHARS.includes(ch)),
);

/** A valid ID with one character inserted, deleted or replaced. */
const mutatedId = fc
  .tuple(
    validId,
    fc.nat(),
    fc.constantFrom('insert', 'delete', 'replace'),
    fc.oneof(fc.constantFrom(...'/.:@%?#AZaz09-_ \\~'), fc.string({ unit: 'binary', minLength: 1, maxLength: 1 })),
  )
  .map(([id, n, op, ch]) => {
    const i = n % (id.length + 1);
    if (op === 'insert') return id.slice(0, i) + ch + id.slice(i);
    if (op === 'delete') return id.slice(0, i) + id.slice(i + 1);
    return id.slice(0, i) + ch + id.slice(i + 1);
  });

const anyString = fc.oneof(
  fc.string(),
  fc.string({ unit: 'binary' }),
  fc.string({ unit: 'grapheme' }),
  fc.string({ unit: fc.constantFrom(...'spifeSPIFE:/.%?#@a-_Z0 ') }),
  fc.string({ unit: fc.constantFrom(...'/.aA:%'), maxLength: 30 }).map((s) => 'spiffe://example.org' + s),
  fc.string({ unit: 'binary' }).map((s) => 'spiffe://' + s),
  mutatedId,
);

function tryParse(s: string): SpiffeId | TesseraError {
  try {
    return parseSpiffeId(s);
  } catch (err) {
    if (err instanceof TesseraError && err.code === CODE) return err;
    throw err; // anything else fails the property
  }
}

describe('properties', () => {
  it('(1) IDs built from valid trust-domain characters and segments round-trip', () => {
    fc.assert(
      fc.property(fc.oneof(validParts, fc.record({ td: tdArb(255), path: pathArb() })), ({ td, path }) => {
        const s = `spiffe://${td}${path}`;
        const parsed = parseSpiffeId(s);
        expect(parsed.id).toBe(s);
        expect(parsed.trustDomain).toBe(td);
        expect(parsed.path).toBe(path);
        expect(isSpiffeId(s)).toBe(true);
        expect(normalizeSpiffeId(s)).toBe(s);
        expect(parseTrustDomain(td)).toBe(td);
        expect(spiffeIdFromPath(td, path)).toEqual(parsed);
        expect(isMemberOf(s, td)).toBe(true);
        expect(isMemberOf(parsed, td)).toBe(true);
      }),
      { numRuns: 500 },
    );
  });

  it('(2) parseSpiffeId throws nothing but TesseraError and agrees with the reference oracle', () => {
    fc.assert(
      fc.property(anyString, (s) => {
        const r = tryParse(s);
        const ok = !(r instanceof TesseraError);
        expect(ok).toBe(oracle(s));
        expect(isSpiffeId(s)).toBe(ok);
        if (!(r instanceof TesseraError)) {
          expect(r.id).toBe(s);
          expect(`spiffe://${r.trustDomain}${r.path}`).toBe(s);
        }
      }),
      { numRuns: 3000 },
    );
  });

  it('(3) inserting any forbidden character into a valid path makes the ID invalid', () => {
    fc.assert(
      fc.property(fc.record({ td: tdArb(63), path: pathArb(1) }), fc.nat(), forbiddenPathChar, ({ td, path }, n, ch) => {
        const prefix = `spiffe://${td}/`;
        const rest = path.slice(1);
        const i = n % (rest.length + 1);
        const s = prefix + rest.slice(0, i) + ch + rest.slice(i);
        expectInvalid(() => parseSpiffeId(s));
        expect(isSpiffeId(s)).toBe(false);
      }),
      { numRuns: 1000 },
    );
  });

  it('(3b) inserting any forbidden character into a valid trust domain makes the ID invalid', () => {
    const forbiddenTdChar = forbiddenPathChar.filter((ch) => !TD_CHARS.includes(ch));
    fc.assert(
      fc.property(validParts, fc.nat(), fc.oneof(forbiddenTdChar, fc.constantFrom(...UPPER)), ({ td, path }, n, ch) => {
        const i = n % (td.length + 1);
        const s = `spiffe://${td.slice(0, i)}${ch}${td.slice(i)}${path}`;
        expectInvalid(() => parseSpiffeId(s));
      }),
      { numRuns: 1000 },
    );
  });

  it('(4) normalizeSpiffeId canonicalizes case, is idempotent and its output always parses', () => {
    const caseVariant = fc
      .tuple(validParts, fc.array(fc.boolean(), { minLength: 300, maxLength: 300 }))
      .map(([{ td, path }, flips]) => {
        const head = `spiffe://${td}`;
        const mixed = [...head].map((ch, i) => (flips[i] ? ch.toUpperCase() : ch)).join('');
        return { input: mixed + path, canonical: head + path };
      });
    fc.assert(
      fc.property(caseVariant, ({ input, canonical }) => {
        expect(normalizeSpiffeId(input)).toBe(canonical);
      }),
      { numRuns: 500 },
    );
    fc.assert(
      fc.property(fc.oneof(anyString, caseVariant.map((v) => v.input)), (s) => {
        let out: string;
        try {
          out = normalizeSpiffeId(s);
        } catch (err) {
          expect(err).toBeInstanceOf(TesseraError);
          expect((err as TesseraError).code).toBe(CODE);
          return;
        }
        expect(parseSpiffeId(out).id).toBe(out);
        expect(normalizeSpiffeId(out)).toBe(out);
        // Only the scheme and trust domain may change, and only by ASCII case.
        expect(out.length).toBe(s.length);
        expect(out.toLowerCase()).toBe(s.toLowerCase());
        expect(parseSpiffeId(out).path).toBe(s.slice(s.length - parseSpiffeId(out).path.length));
      }),
      { numRuns: 3000 },
    );
  });
});
