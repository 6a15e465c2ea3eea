/**
 * SPIFFE ID parsing, validation and normalization, following the SPIFFE-ID standard
 * (spiffe/spiffe, standards/SPIFFE-ID.md). Rules, and where they come from:
 *
 * - §2 "SPIFFE Identity": the scheme is `spiffe`, the trust domain (the URI authority) is
 *   non-empty, and there is no query or fragment. The path is optional, so the trust-domain
 *   ID `spiffe://example.org` is a valid SPIFFE ID (its `path` is ""); §3.1 "SVID Trust" even
 *   says the signing authority's ID SHOULD NOT have a path.
 * - §2.1 "Trust Domain": the host MUST NOT be empty; userinfo and port MUST be empty (so `@`
 *   and `:` never appear); the host MUST be lowercase, MUST contain only `[a-z0-9.-_]` and
 *   MUST NOT contain percent-encoded characters. IPv4 dotted quads therefore pass and IPv6
 *   literals (`[::1]`) fail. The standard restricts characters only, so we do no DNS-style
 *   label checks ("Implementations MUST NOT process trust domain names differently whether or
 *   not they are valid IP addresses and/or valid DNS names").
 * - §2.2 "Path": no percent-encoding; no empty, `.` or `..` segments; no trailing `/`;
 *   segments contain only `[a-zA-Z0-9.-_]`. (`...` or `.a` are ordinary segments.)
 * - §2.3 "Maximum SPIFFE ID Length": a trust domain is at most 255 bytes. Implementations
 *   MUST support IDs up to 2048 bytes and SHOULD NOT generate longer ones; Tessera rejects
 *   longer ones outright so nothing it accepts is something it could not re-issue, and so
 *   hostile input is bounded before it is scanned. Every accepted character is ASCII, so
 *   UTF-16 length equals byte length for every accepted ID.
 * - §2.4 "SPIFFE ID Parsing": "The scheme and trust domain name of the SPIFFE ID are
 *   case-insensitive. The path is case-sensitive." Together with §2.1 ("MUST be lowercase")
 *   this means an uppercase scheme or trust domain denotes the same identity but is not in
 *   the required form. {@link parseSpiffeId} is therefore strict and accepts only the
 *   canonical lowercase form (as go-spiffe does), so `id` is always byte-for-byte the
 *   canonical string and can be compared with `===` in policy and SAN matching;
 *   {@link normalizeSpiffeId} applies the §2.4 case-insensitivity by lowercasing (ASCII only)
 *   the scheme and trust domain and then validates strictly. The path is never case-folded.
 *
 * Parsing is a single left-to-right pass over char codes with a 128-entry lookup table:
 * no regular expressions, and on success no allocation besides the result (the `id` field is
 * the input string itself).
 */
import { TesseraError } from './errors.js';

export interface SpiffeId {
  readonly trustDomain: string;
  /** "" for the trust-domain ID, otherwise "/seg1/seg2..." */
  readonly path: string;
  /** full string */
  readonly id: string;
}

const SCHEME_PREFIX = 'spiffe://';
const PREFIX_LEN = 9; // SCHEME_PREFIX.length
const MAX_ID_BYTES = 2048; // §2.3
const MAX_TRUST_DOMAIN_BYTES = 255; // §2.3

const SLASH = 0x2f;
const DOT = 0x2e;

/** Bit flags per ASCII code: may appear in a trust domain (§2.1) / in a path segment (§2.2). */
const TD = 1;
const SEG = 2;
const CHAR_CLASS = new Uint8Array(128);
for (let c = 0x61; c <= 0x7a; c++) CHAR_CLASS[c] = TD | SEG; // a-z
for (let c = 0x41; c <= 0x5a; c++) CHAR_CLASS[c] = SEG; // A-Z (path only)
for (let c = 0x30; c <= 0x39; c++) CHAR_CLASS[c] = TD | SEG; // 0-9
CHAR_CLASS[DOT] = TD | SEG;
CHAR_CLASS[0x2d] = TD | SEG; // -
CHAR_CLASS[0x5f] = TD | SEG; // _

/** An internal, allocation-only-on-failure error result. Never escapes this module. */
class Invalid {
  constructor(readonly message: string) {}
}

function invalid(message: string): TesseraError {
  return new TesseraError('TESSERA_SPIFFE_ID_INVALID', message);
}

/** `"x"` for printable ASCII, `U+` and four hex digits for everything else (control chars, non-ASCII). */
function describeChar(s: string, i: number): string {
  const c = s.charCodeAt(i);
  if (c > 0x20 && c < 0x7f) return JSON.stringify(s[i]);
  const cp = s.codePointAt(i) ?? c;
  return `U+${cp.toString(16).toUpperCase().padStart(4, '0')}`;
}

/** Why a character that is not in the allowed set was rejected (shared by trust domain and path). */
function charProblem(s: string, i: number, where: string): Invalid {
  const c = s.charCodeAt(i);
  switch (c) {
    case 0x25: // %
      return new Invalid('SPIFFE IDs must not contain percent-encoded characters ("%")');
    case 0x3f: // ?
      return new Invalid('SPIFFE IDs must not have a query ("?")');
    case 0x23: // #
      return new Invalid('SPIFFE IDs must not have a fragment ("#")');
  }
  if (c >= 0x80) return new Invalid(`SPIFFE IDs must be ASCII; ${describeChar(s, i)} is not allowed`);
  return new Invalid(`${describeChar(s, i)} is not allowed in a SPIFFE ID ${where}`);
}

function trustDomainCharProblem(s: string, i: number): Invalid {
  const c = s.charCodeAt(i);
  if (c >= 0x41 && c <= 0x5a) return new Invalid('SPIFFE trust domain must be lowercase');
  if (c === 0x3a) return new Invalid('SPIFFE trust domain must not have a port (":" is not allowed)');
  if (c === 0x40) return new Invalid('SPIFFE trust domain must not have userinfo ("@" is not allowed)');
  return charProblem(s, i, 'trust domain (allowed: a-z 0-9 . - _)');
}

/**
 * Scans a trust domain starting at `start`. In an ID (`inId`) it ends at the first "/" or at
 * the end of the string; a bare trust domain runs to the end. Returns the end index.
 */
function scanTrustDomain(s: string, start: number, inId: boolean): number | Invalid {
  const len = s.length;
  let i = start;
  for (; i < len; i++) {
    const c = s.charCodeAt(i);
    if (c < 128 && ((CHAR_CLASS[c] as number) & TD) !== 0) continue;
    if (c === SLASH && inId) break;
    return trustDomainCharProblem(s, i);
  }
  if (i === start) return new Invalid('SPIFFE trust domain is missing');
  if (i - start > MAX_TRUST_DOMAIN_BYTES) {
    return new Invalid(`SPIFFE trust domain exceeds ${MAX_TRUST_DOMAIN_BYTES} bytes`);
  }
  return i;
}

/** Checks the segment s[from, to); `last` distinguishes a trailing "/" from an empty segment. */
function segmentProblem(s: string, from: number, to: number, last: boolean): Invalid | null {
  const n = to - from;
  if (n === 0) {
    return new Invalid(last ? 'SPIFFE ID path must not end with "/"' : 'SPIFFE ID path must not contain empty segments ("//")');
  }
  if (n <= 2 && s.charCodeAt(from) === DOT && (n === 1 || s.charCodeAt(from + 1) === DOT)) {
    return new Invalid(`SPIFFE ID path segment "${n === 1 ? '.' : '..'}" is not allowed`);
  }
  return null;
}

/** Scans a path; `s[start]` is known to be "/". */
function scanPath(s: string, start: number): Invalid | null {
  const len = s.length;
  let segStart = start + 1;
  for (let i = segStart; i < len; i++) {
    const c = s.charCodeAt(i);
    if (c < 128 && ((CHAR_CLASS[c] as number) & SEG) !== 0) continue;
    if (c === SLASH) {
      const problem = segmentProblem(s, segStart, i, false);
      if (problem !== null) return problem;
      segStart = i + 1;
      continue;
    }
    return charProblem(s, i, 'path (allowed: a-z A-Z 0-9 . - _)');
  }
  return segmentProblem(s, segStart, len, true);
}

/** Lowercase ASCII letter compare (`c | 0x20` only folds A-Z onto a-z for letters). */
function startsWithSpiffeColonIgnoringCase(s: string): boolean {
  if (s.length < 7 || s.charCodeAt(6) !== 0x3a) return false;
  for (let i = 0; i < 6; i++) {
    if ((s.charCodeAt(i) | 0x20) !== SCHEME_PREFIX.charCodeAt(i)) return false;
  }
  return true;
}

function schemeProblem(s: string): Invalid | null {
  let i = 0;
  while (i < PREFIX_LEN && s.charCodeAt(i) === SCHEME_PREFIX.charCodeAt(i)) i++;
  if (i === PREFIX_LEN) return null;
  if (!startsWithSpiffeColonIgnoringCase(s)) return new Invalid('SPIFFE ID scheme must be "spiffe"');
  if (s.charCodeAt(7) !== SLASH || s.charCodeAt(8) !== SLASH) {
    return new Invalid('SPIFFE ID must have "//" and a trust domain after "spiffe:"');
  }
  return new Invalid('SPIFFE ID scheme must be lowercase "spiffe"');
}

/** Validates a whole SPIFFE ID; returns the index where the trust domain ends. */
function scanId(s: unknown): number | Invalid {
  if (typeof s !== 'string') return new Invalid('SPIFFE ID must be a string');
  const len = s.length;
  if (len === 0) return new Invalid('SPIFFE ID is empty');
  // Before scanning anything, so hostile input costs O(1).
  if (len > MAX_ID_BYTES) return new Invalid(`SPIFFE ID exceeds ${MAX_ID_BYTES} bytes`);
  const scheme = schemeProblem(s);
  if (scheme !== null) return scheme;
  const tdEnd = scanTrustDomain(s, PREFIX_LEN, true);
  if (typeof tdEnd !== 'number') return tdEnd;
  if (tdEnd < len) {
    const path = scanPath(s, tdEnd);
    if (path !== null) return path;
  }
  return tdEnd;
}

/** "example.org" or the trust-domain ID "spiffe://example.org" to "example.org". */
function resolveTrustDomain(input: unknown): string | Invalid {
  if (typeof input !== 'string') return new Invalid('SPIFFE trust domain must be a string');
  if (input.includes('://') || startsWithSpiffeColonIgnoringCase(input)) {
    const tdEnd = scanId(input);
    if (typeof tdEnd !== 'number') return tdEnd;
    if (tdEnd !== input.length) {
      return new Invalid('expected a SPIFFE trust domain or trust-domain ID, not a SPIFFE ID with a path');
    }
    return input.slice(PREFIX_LEN);
  }
  // Bound the work before scanning (the longest valid bare trust domain is 255 bytes).
  if (input.length > MAX_TRUST_DOMAIN_BYTES) {
    return new Invalid(`SPIFFE trust domain exceeds ${MAX_TRUST_DOMAIN_BYTES} bytes`);
  }
  const end = scanTrustDomain(input, 0, false);
  return typeof end === 'number' ? input : end;
}

/**
 * Parses a SPIFFE ID in canonical form (lowercase scheme and trust domain). Throws
 * `TESSERA_SPIFFE_ID_INVALID` on anything the standard does not allow, and on uppercase in
 * the scheme or trust domain (use {@link normalizeSpiffeId} to canonicalize those first).
 */
export function parseSpiffeId(input: string): SpiffeId {
  const tdEnd = scanId(input);
  if (typeof tdEnd !== 'number') throw invalid(tdEnd.message);
  return Object.freeze({
    trustDomain: input.slice(PREFIX_LEN, tdEnd),
    path: tdEnd === input.length ? '' : input.slice(tdEnd),
    id: input,
  });
}

/** True iff {@link parseSpiffeId} would accept `input`. Never throws. */
export function isSpiffeId(input: string): boolean {
  return typeof scanId(input) === 'number';
}

/**
 * Returns the canonical form of a SPIFFE ID: the scheme and trust domain are lowercased
 * (ASCII A-Z only, per §2.4 they are case-insensitive; the path is left untouched because it
 * is case-sensitive), then the result is validated strictly. Anything other than case in the
 * scheme or trust domain still throws `TESSERA_SPIFFE_ID_INVALID`. Idempotent.
 */
export function normalizeSpiffeId(input: string): string {
  if (typeof input !== 'string' || input.length > MAX_ID_BYTES) return parseSpiffeId(input).id; // throws
  const sep = input.indexOf('://');
  if (sep < 0) return parseSpiffeId(input).id; // throws unless already valid (it cannot be)
  let end = input.indexOf('/', sep + 3);
  if (end < 0) end = input.length;
  let needsLowering = false;
  for (let i = 0; i < end; i++) {
    const c = input.charCodeAt(i);
    if (c >= 0x41 && c <= 0x5a) {
      needsLowering = true;
      break;
    }
  }
  if (!needsLowering) return parseSpiffeId(input).id;
  // ASCII-only lowering: String#toLowerCase would map e.g. KELVIN SIGN (U+212A) to "k" and
  // so turn an invalid non-ASCII trust domain into a valid, different one.
  let head = '';
  for (let i = 0; i < end; i++) {
    const c = input.charCodeAt(i);
    head += c >= 0x41 && c <= 0x5a ? String.fromCharCode(c | 0x20) : input[i];
  }
  return parseSpiffeId(head + input.slice(end)).id;
}

/**
 * Validates a trust domain given as "example.org" or as the trust-domain ID
 * "spiffe://example.org", and returns the bare name. Strict like {@link parseSpiffeId}: no
 * uppercase, and a SPIFFE ID with a path is rejected (unlike go-spiffe, which drops the path)
 * because a trust-domain setting that carries a path is almost certainly a mistake.
 */
export function parseTrustDomain(input: string): string {
  const td = resolveTrustDomain(input);
  if (typeof td !== 'string') throw invalid(td.message);
  return td;
}

/**
 * Builds and validates `spiffe://<trustDomain><path>`. `trustDomain` is accepted in either
 * form {@link parseTrustDomain} accepts; `path` must be "" (the trust-domain ID) or start
 * with "/" and satisfy §2.2.
 */
export function spiffeIdFromPath(trustDomain: string, path: string): SpiffeId {
  const td = resolveTrustDomain(trustDomain);
  if (typeof td !== 'string') throw invalid(td.message);
  if (typeof path !== 'string') throw invalid('SPIFFE ID path must be a string');
  if (path.length > 0 && path.charCodeAt(0) !== SLASH) throw invalid('SPIFFE ID path must be empty or start with "/"');
  return parseSpiffeId(SCHEME_PREFIX + td + path);
}

/**
 * True iff `id` is a valid SPIFFE ID in `trustDomain` (given as "example.org" or
 * "spiffe://example.org"). Never throws: an invalid ID or trust domain is simply not a
 * member (fail closed). A `SpiffeId` object is trusted to come from this module.
 */
export function isMemberOf(id: SpiffeId | string, trustDomain: string): boolean {
  const td = resolveTrustDomain(trustDomain);
  if (typeof td !== 'string') return false;
  if (typeof id === 'string') {
    const tdEnd = scanId(id);
    return typeof tdEnd === 'number' && tdEnd - PREFIX_LEN === td.length && id.startsWith(td, PREFIX_LEN);
  }
  if (id === null || typeof id !== 'object') return false;
  return id.trustDomain === td;
}
