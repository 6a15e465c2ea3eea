/**
 * Strict HTTP/1.x message heads for the sidecar's hot path (RFC 9112, RFC 9110), on Buffers as
 * they come off a socket. Only the head is ever parsed: bodies are streamed, and their end is
 * found by counting (Content-Length) or by {@link ChunkedBodyTracker} without buffering them.
 *
 * Strictness is the point: anything two HTTP implementations could read differently (request
 * smuggling) is refused with `TESSERA_BAD_REQUEST` (400): bare LF, obs-fold, whitespace before
 * the colon, Content-Length together with Transfer-Encoding, differing Content-Lengths, any
 * Transfer-Encoding but exactly `chunked`, a Connection header that nominates a framing header,
 * control characters anywhere. A request path an application could read differently from an
 * authorizer (see {@link parseRequestHead}) is `TESSERA_PROXY_PATH_REFUSED` (400). A head over
 * the size or header-count limit is `TESSERA_HEADERS_TOO_LARGE` (431). Nothing else is ever
 * thrown, whatever the bytes.
 *
 * Scanning the head for its end is one native `indexOf` per line; the checks that follow are
 * table lookups over char codes, and the only allocations are the strings of the result.
 */
import { TesseraError } from './errors.js';

export interface HeadLimits {
  /** Largest head, request line or status line included (default 16 KiB). */
  maxHeadBytes: number;
  /** Most header fields (default 100). */
  maxHeaders: number;
}

export const DEFAULT_HEAD_LIMITS: Readonly<HeadLimits> = Object.freeze({ maxHeadBytes: 16 * 1024, maxHeaders: 100 });

/**
 * Path shapes that are refused by default and that a listener may accept, for an application
 * known to read them the way its policy is written (see {@link parseRequestHead}).
 */
export interface PathAllowances {
  /** `;` (raw or `%3B`) in path segments, e.g. matrix parameters `/a;v=1/b`. */
  semicolon: boolean;
  /** Empty segments other than a trailing one (`/a//b`, `//a`, `/a//`). */
  emptySegments: boolean;
}

export const STRICT_PATH: Readonly<PathAllowances> = Object.freeze({ semicolon: false, emptySegments: false });

export type HttpVersion = 'HTTP/1.0' | 'HTTP/1.1';

interface HeadFields {
  version: HttpVersion;
  /** Field names as received (case kept), values with surrounding whitespace removed. */
  headers: Array<[string, string]>;
  /** Index just after the blank line that ends the head. */
  headEnd: number;
  /** The (single, or all-equal) Content-Length, when there is one. */
  contentLength: number | undefined;
  /** Transfer-Encoding is exactly `chunked`. */
  chunked: boolean;
  /** Whether the connection may carry another message after this one (version and Connection). */
  keepAlive: boolean;
  /** Lowercased options named by Connection headers (they name more hop-by-hop fields). */
  connection: string[];
}

export interface RequestHead extends HeadFields {
  method: string;
  /** The request-target, origin-form (`/path?query`). */
  target: string;
  /**
   * The target's path (before `?`), checked to be unambiguous (see {@link parseRequestHead}):
   * exactly the bytes that begin {@link target}, so what is authorized is what is forwarded.
   */
  path: string;
  /** Index of the first byte of the request line (after any leading empty lines). */
  headStart: number;
}

export interface ResponseHead extends HeadFields {
  status: number;
  /** The status line as received, without its CRLF (reason phrase kept verbatim). */
  statusLine: string;
  headStart: number;
  /**
   * Transfer-Encoding other than exactly `chunked` (allowed in responses: the body then lasts
   * until the connection closes, RFC 9112 §6.3 rule 4).
   */
  otherTransferEncoding: boolean;
}

// ---------------------------------------------------------------------------------------------
// Character classes (one table, bit flags per byte)
// ---------------------------------------------------------------------------------------------

const TCHAR = 1; // token characters (RFC 9110 §5.6.2)
const VCHAR = 2; // field-vchar: visible ASCII and obs-text (RFC 9110 §5.5)
const PCHAR = 4; // characters of an origin-form target (RFC 3986 pchar, '/', '?', '%')
const UNRESERVED = 8; // RFC 3986 §2.3
const HEX = 16;

const CLASS = new Uint8Array(256);
for (let c = 0x21; c <= 0x7e; c++) CLASS[c]! |= VCHAR;
for (let c = 0x80; c <= 0xff; c++) CLASS[c]! |= VCHAR;
for (const ch of "!#$%&'*+-.^_`|~") CLASS[ch.charCodeAt(0)]! |= TCHAR;
for (const ch of "-._~") CLASS[ch.charCodeAt(0)]! |= UNRESERVED;
for (const ch of "!$&'()*+,;=:@/?%") CLASS[ch.charCodeAt(0)]! |= PCHAR;
for (let c = 0x30; c <= 0x39; c++) CLASS[c]! |= TCHAR | PCHAR | UNRESERVED | HEX;
for (let c = 0x41; c <= 0x5a; c++) CLASS[c]! |= TCHAR | PCHAR | UNRESERVED;
for (let c = 0x61; c <= 0x7a; c++) CLASS[c]! |= TCHAR | PCHAR | UNRESERVED;
for (const ch of '-._~') CLASS[ch.charCodeAt(0)]! |= PCHAR;
for (const ch of 'abcdefABCDEF') CLASS[ch.charCodeAt(0)]! |= HEX;

const CR = 0x0d;
const LF = 0x0a;
const SP = 0x20;
const HTAB = 0x09;
const COLON = 0x3a;
const SLASH = 0x2f;
const QUESTION = 0x3f;
const PERCENT = 0x25;
const DOT = 0x2e;
const SEMICOLON = 0x3b;
const BACKSLASH = 0x5c;
const DEL = 0x7f;

function bad(message: string): TesseraError {
  return new TesseraError('TESSERA_BAD_REQUEST', message);
}

function refused(message: string): TesseraError {
  return new TesseraError('TESSERA_PROXY_PATH_REFUSED', message);
}

function tooLarge(message: string): TesseraError {
  return new TesseraError('TESSERA_HEADERS_TOO_LARGE', message);
}

function hexValue(c: number): number {
  return c <= 0x39 ? c - 0x30 : (c | 0x20) - 0x57;
}

// ---------------------------------------------------------------------------------------------
// Finding the head
// ---------------------------------------------------------------------------------------------

/**
 * The index of the first byte after the empty lines (CRLF) at `start`: RFC 9112 §2.2 lets a
 * server ignore them before a request line (some clients send one after a body). Stops at a
 * trailing lone CR, which may be the start of another CRLF.
 */
export function skipEmptyLines(buf: Uint8Array, start: number, end: number = buf.length): number {
  let i = start;
  while (i + 1 < end && buf[i] === CR && buf[i + 1] === LF) i += 2;
  if (i < end && buf[i] === LF) throw bad('bare LF');
  return i;
}

/**
 * Where the head that starts at `start` ends: the index just after its blank line, or -1 when
 * the blank line has not arrived yet. `from` is where the previous call on the same (grown)
 * buffer stopped, so that feeding a head in pieces scans each byte once. Throws 431 when the
 * head is, or already would be, longer than `maxHeadBytes`; 400 on a bare LF.
 */
export function findHeadEnd(buf: Uint8Array, start: number, from: number, maxHeadBytes: number = DEFAULT_HEAD_LIMITS.maxHeadBytes): number {
  const b = buf as Buffer;
  const limit = Math.min(buf.length, start + maxHeadBytes);
  let i = b.indexOf(LF, from > start ? from : start);
  while (i !== -1 && i < limit) {
    if (i === start || b[i - 1] !== CR) throw bad('bare LF');
    if (i - start >= 3 && b[i - 2] === LF) return i + 1;
    i = b.indexOf(LF, i + 1);
  }
  if (buf.length - start >= maxHeadBytes) throw tooLarge('message head too large');
  return -1;
}

// ---------------------------------------------------------------------------------------------
// Header fields (shared by requests and responses)
// ---------------------------------------------------------------------------------------------

const enum TE {
  None = 0,
  Chunked = 1,
  Other = 2,
}

interface FieldState {
  headers: Array<[string, string]>;
  contentLength: number | undefined;
  te: TE;
  teCount: number;
  hostCount: number;
  connection: string[];
  close: boolean;
  keepAliveToken: boolean;
}

/**
 * Parses the header lines in [pos, headEnd - 2) (the last CRLF is the blank line). Every line
 * ends in CRLF (checked by findHeadEnd or here).
 */
function parseFields(buf: Buffer, pos: number, headEnd: number, maxHeaders: number, st: FieldState): void {
  const end = headEnd - 2;
  while (pos < end) {
    const lf = buf.indexOf(LF, pos);
    if (lf === -1 || lf >= headEnd || buf[lf - 1] !== CR) throw bad('bare LF');
    const lineEnd = lf - 1; // the CR
    const first = buf[pos]!;
    if (first === SP || first === HTAB) throw bad('obsolete line folding');
    let i = pos;
    while (i < lineEnd && (CLASS[buf[i]!]! & TCHAR) !== 0) i++;
    if (i === pos) throw bad('empty or invalid header name');
    if (i === lineEnd || buf[i] !== COLON) throw bad(buf[i] === SP || buf[i] === HTAB ? 'whitespace before colon' : 'invalid header name');
    const nameEnd = i;
    i++;
    while (i < lineEnd && (buf[i] === SP || buf[i] === HTAB)) i++;
    const valueStart = i;
    let valueEnd = i;
    for (; i < lineEnd; i++) {
      const c = buf[i]!;
      if ((CLASS[c]! & VCHAR) !== 0) valueEnd = i + 1;
      else if (c !== SP && c !== HTAB) throw bad('control character in a header value');
    }
    if (st.headers.length >= maxHeaders) throw tooLarge('too many header fields');
    const name = buf.toString('latin1', pos, nameEnd);
    const value = buf.toString('latin1', valueStart, valueEnd);
    st.headers.push([name, value]);
    noteField(name, value, st);
    pos = lf + 1;
  }
}

/** Records the fields that decide framing and connection handling. */
function noteField(name: string, value: string, st: FieldState): void {
  // Length first: most headers are none of these and are passed over without a comparison.
  switch (name.length) {
    case 4:
      if (equalsLower(name, 'host')) st.hostCount++;
      return;
    case 10:
      if (equalsLower(name, 'connection')) noteConnection(value, st);
      return;
    case 14:
      if (equalsLower(name, 'content-length')) st.contentLength = mergeContentLength(st.contentLength, value);
      return;
    case 17:
      if (equalsLower(name, 'transfer-encoding')) {
        st.teCount++;
        st.te = value.length === 7 && equalsLower(value, 'chunked') && st.teCount === 1 ? TE.Chunked : TE.Other;
      }
      return;
    default:
  }
}

/**
 * ASCII case-insensitive equality with `lower` (lowercase letters and '-' only), without
 * allocating: `c | 0x20` folds A-Z onto a-z, and no other character folds onto a letter or '-'
 * except CR onto '-', which a token never contains.
 */
function equalsLower(s: string, lower: string): boolean {
  if (s.length !== lower.length) return false;
  for (let i = 0; i < s.length; i++) if ((s.charCodeAt(i) | 0x20) !== lower.charCodeAt(i)) return false;
  return true;
}

const MAX_CONTENT_LENGTH_DIGITS = 15; // < 2^53: exact in a double

function mergeContentLength(prev: number | undefined, value: string): number {
  // RFC 9110 §8.6: a list of identical values may be taken as that value; anything else is an error.
  let result = prev;
  let i = 0;
  const n = value.length;
  for (;;) {
    while (i < n && (value.charCodeAt(i) === SP || value.charCodeAt(i) === HTAB)) i++;
    const s = i;
    let v = 0;
    while (i < n) {
      const c = value.charCodeAt(i);
      if (c < 0x30 || c > 0x39) break;
      v = v * 10 + (c - 0x30);
      i++;
    }
    if (i === s || i - s > MAX_CONTENT_LENGTH_DIGITS) throw bad('invalid Content-Length');
    if (result !== undefined && result !== v) throw bad('differing Content-Length values');
    result = v;
    while (i < n && (value.charCodeAt(i) === SP || value.charCodeAt(i) === HTAB)) i++;
    if (i === n) return result;
    if (value.charCodeAt(i) !== 0x2c) throw bad('invalid Content-Length');
    i++;
  }
}

function noteConnection(value: string, st: FieldState): void {
  // Fast path for the two values nearly every message carries.
  if (value.length === 10 || value.length === 5) {
    const v = value.toLowerCase();
    if (v === 'keep-alive' || v === 'close') {
      if (v === 'close') st.close = true;
      else st.keepAliveToken = true;
      if (!st.connection.includes(v)) st.connection.push(v);
      return;
    }
  }
  for (const raw of value.split(',')) {
    const token = raw.trim().toLowerCase();
    if (token === '') continue;
    for (let i = 0; i < token.length; i++) {
      const c = token.charCodeAt(i);
      if (c > 0xff || (CLASS[c]! & TCHAR) === 0) throw bad('invalid Connection option');
    }
    // A proxy drops the fields Connection names. Letting it name framing or routing fields
    // would let a client make the proxy and the application frame the body differently.
    if (token === 'content-length' || token === 'transfer-encoding' || token === 'host') throw bad(`Connection may not name ${token}`);
    if (token === 'close') st.close = true;
    else if (token === 'keep-alive') st.keepAliveToken = true;
    if (!st.connection.includes(token)) st.connection.push(token);
  }
}

function newFieldState(): FieldState {
  return { headers: [], contentLength: undefined, te: TE.None, teCount: 0, hostCount: 0, connection: [], close: false, keepAliveToken: false };
}

/** Reads `HTTP/1.0` or `HTTP/1.1` at `i` (exactly: RFC 9112 §2.3). */
function readVersion(buf: Buffer, i: number): HttpVersion | undefined {
  if (buf[i] === 0x48 && buf[i + 1] === 0x54 && buf[i + 2] === 0x54 && buf[i + 3] === 0x50 && buf[i + 4] === SLASH && buf[i + 5] === 0x31 && buf[i + 6] === DOT) {
    if (buf[i + 7] === 0x31) return 'HTTP/1.1';
    if (buf[i + 7] === 0x30) return 'HTTP/1.0';
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/**
 * Parses the request head in `buf[start, headEnd)` (`headEnd` from {@link findHeadEnd}).
 *
 * Request line: a method token, one SP, an origin-form target (`/` then RFC 3986 path and query
 * characters only: raw control bytes, spaces and non-ASCII are 400 `TESSERA_BAD_REQUEST`), one
 * SP, `HTTP/1.0` or `HTTP/1.1`; `%HH` escapes must be well-formed (400). The path must also be
 * unambiguous, so that what an authorizer sees is what the application routes on; otherwise
 * the request is refused, never rewritten, with 400 `TESSERA_PROXY_PATH_REFUSED`:
 * - no dot segments (`.`, `..`), nor escaped unreserved characters, `/` or `\` (`/%61dmin`,
 *   `/a%2Fb`, `/%2e%2e/`);
 * - no escaped control bytes (`%00`-`%1F`, `%7F`), in the path or the query;
 * - percent-decoded, the path is valid UTF-8 (RFC 3629 §3-4: no overlong forms such as
 *   `%C0%AE`, no surrogates, nothing above U+10FFFF, no stray or missing continuation bytes);
 * - no `;` (raw or `%3B`) unless `allow.semicolon`: servlet containers cut path parameters off
 *   each segment, so `/orders/..;/admin` would reach them as `/admin`. Even when allowed, a
 *   segment's name (before its first `;`) may not be `.` or `..`, nor empty where an empty
 *   segment is refused;
 * - no empty segment but a trailing one (`/a//b`, `//a` and `/a//` are refused, `/a/` is not)
 *   unless `allow.emptySegments`: many routers merge slashes, and `//host/x` reads as an authority.
 * The query is not part of the path an authorizer sees and is passed on as received, control
 * escapes aside.
 *
 * Framing (RFC 9112 §6): Transfer-Encoding must be exactly `chunked`, once, in HTTP/1.1 only,
 * and never with Content-Length; repeated Content-Lengths must agree. HTTP/1.1 needs exactly
 * one Host (§3.2). Errors: 400 (`TESSERA_BAD_REQUEST`) or 431 (`TESSERA_HEADERS_TOO_LARGE`).
 *
 * @example
 * const end = findHeadEnd(buf, 0, 0);
 * if (end !== -1) { const head = parseRequestHead(buf, 0, end); forward(buf.subarray(end)); }
 */
export function parseRequestHead(buf: Buffer, start: number, headEnd: number, limits: HeadLimits = DEFAULT_HEAD_LIMITS, allow: Readonly<PathAllowances> = STRICT_PATH): RequestHead {
  if (headEnd - start > limits.maxHeadBytes) throw tooLarge('message head too large');
  const lineLf = buf.indexOf(LF, start);
  if (lineLf === -1 || lineLf >= headEnd || buf[lineLf - 1] !== CR) throw bad('bare LF');
  const lineEnd = lineLf - 1;

  let i = start;
  while (i < lineEnd && (CLASS[buf[i]!]! & TCHAR) !== 0) i++;
  if (i === start || buf[i] !== SP) throw bad('invalid method');
  const method = buf.toString('latin1', start, i);
  i++;

  const targetStart = i;
  const { targetEnd, pathEnd } = readTarget(buf, i, lineEnd, allow);
  i = targetEnd;
  if (buf[i] !== SP) throw bad('invalid request target');
  const version = readVersion(buf, i + 1);
  if (version === undefined || i + 9 !== lineEnd) throw bad('unsupported HTTP version');
  const target = buf.toString('latin1', targetStart, targetEnd);
  const path = pathEnd === targetEnd ? target : target.slice(0, pathEnd - targetStart);

  const st = newFieldState();
  parseFields(buf, lineLf + 1, headEnd, limits.maxHeaders, st);

  if (version === 'HTTP/1.1' ? st.hostCount !== 1 : st.hostCount > 1) throw bad('HTTP/1.1 needs exactly one Host header');
  if (st.teCount > 0) {
    if (version === 'HTTP/1.0') throw bad('Transfer-Encoding in an HTTP/1.0 request');
    if (st.te !== TE.Chunked) throw bad('Transfer-Encoding other than chunked');
    if (st.contentLength !== undefined) throw bad('both Content-Length and Transfer-Encoding');
  }
  return {
    method,
    target,
    path,
    version,
    headers: st.headers,
    headStart: start,
    headEnd,
    contentLength: st.contentLength,
    chunked: st.te === TE.Chunked,
    keepAlive: version === 'HTTP/1.1' ? !st.close : st.keepAliveToken && !st.close,
    connection: st.connection,
  };
}

/**
 * The origin-form target starting at `buf[s]` (up to the first byte that cannot be in one, or
 * `end`), checked as {@link parseRequestHead} describes; the path is `buf[s, pathEnd)`.
 */
function readTarget(buf: Buffer, s: number, end: number, allow: Readonly<PathAllowances>): { targetEnd: number; pathEnd: number } {
  if (buf[s] !== SLASH) throw bad('request target must be in origin-form');
  let queryAt = -1;
  let i = s;
  for (; i < end; i++) {
    const c = buf[i]!;
    if ((CLASS[c]! & PCHAR) === 0) break;
    if (c === QUESTION && queryAt === -1) queryAt = i;
  }
  const pathEnd = queryAt === -1 ? i : queryAt;
  checkPath(buf, s, pathEnd, allow);
  if (queryAt !== -1) checkQuery(buf, queryAt, i);
  return { targetEnd: i, pathEnd };
}

/**
 * A request target received by another HTTP parser (the HAProxy data plane's, src/agent/haproxy),
 * put to the same rules as {@link parseRequestHead}'s: returns its path (without the query), or
 * throws 400 `TESSERA_BAD_REQUEST` / `TESSERA_PROXY_PATH_REFUSED`.
 */
export function checkRequestTarget(target: string, allow: Readonly<PathAllowances> = STRICT_PATH): string {
  const buf = Buffer.from(target, 'utf8');
  const { targetEnd, pathEnd } = readTarget(buf, 0, buf.length, allow);
  if (targetEnd !== buf.length) throw bad('invalid request target');
  return pathEnd === buf.length ? target : buf.toString('latin1', 0, pathEnd);
}

/** `%HH` escapes must be well-formed, and none may stand for a control byte. */
function checkQuery(buf: Buffer, s: number, e: number): void {
  for (let i = buf.indexOf(PERCENT, s); i !== -1 && i < e; i = buf.indexOf(PERCENT, i + 1)) {
    const v = escapedByte(buf, i, e);
    if (v < SP || v === DEL) throw refused('escaped control character in the query');
  }
}

/** The byte that the `%HH` at `i` stands for (`e`: end of the component). */
function escapedByte(buf: Buffer, i: number, e: number): number {
  if (i + 2 >= e || (CLASS[buf[i + 1]!]! & HEX) === 0 || (CLASS[buf[i + 2]!]! & HEX) === 0) throw bad('malformed percent-encoding');
  return hexValue(buf[i + 1]!) * 16 + hexValue(buf[i + 2]!);
}

/**
 * See parseRequestHead: the path must mean one thing only. One pass over the bytes; a segment
 * is checked at its end (the `/` after it, or the end of the path).
 */
function checkPath(buf: Buffer, s: number, e: number, allow: Readonly<PathAllowances>): void {
  let segStart = s + 1;
  /** Where the current segment's name ends: at its first `;` (allowed ones only), else -1. */
  let nameEnd = -1;
  let dots = 0; // dots in the current segment's name, -1 once anything else is seen
  // UTF-8 of the decoded path (RFC 3629 §4): continuation bytes still expected, and the range
  // the next one must fall in (narrowed after E0, ED, F0, F4 to exclude overlong forms,
  // surrogates and code points above U+10FFFF).
  let need = 0;
  let lo = 0x80;
  let hi = 0xbf;
  for (let i = s + 1; i <= e; i++) {
    const c = i === e ? SLASH : buf[i]!;
    if (c === PERCENT) {
      const v = escapedByte(buf, i, e);
      i += 2;
      // Any escape makes the name something other than dots (escaped dots are refused below).
      if (nameEnd === -1 && v !== SEMICOLON) dots = -1;
      if (need > 0) {
        if (v < lo || v > hi) throw refused('invalid or overlong UTF-8 in path');
        need--;
        lo = 0x80;
        hi = 0xbf;
      } else if (v >= 0x80) {
        if (v >= 0xc2 && v <= 0xdf) need = 1;
        else if (v >= 0xe0 && v <= 0xef) {
          need = 2;
          if (v === 0xe0) lo = 0xa0;
          else if (v === 0xed) hi = 0x9f;
        } else if (v >= 0xf0 && v <= 0xf4) {
          need = 3;
          if (v === 0xf0) lo = 0x90;
          else if (v === 0xf4) hi = 0x8f;
        } else throw refused(v === 0xc0 || v === 0xc1 ? 'overlong UTF-8 in path' : 'invalid UTF-8 in path');
      } else if (v < SP || v === DEL) throw refused('escaped control character in path');
      else if ((CLASS[v]! & UNRESERVED) !== 0 || v === SLASH || v === BACKSLASH) throw refused('ambiguous percent-encoding in path');
      else if (v === SEMICOLON) {
        // Decoded before the split by some stacks: the same rules as a raw `;`.
        if (!allow.semicolon) throw refused('`;` in a path segment');
        if (nameEnd === -1) nameEnd = i - 2;
      }
      continue;
    }
    if (need > 0) throw refused('truncated UTF-8 sequence in path');
    if (c === SLASH) {
      const nameLength = (nameEnd === -1 ? i : nameEnd) - segStart;
      if ((dots === 1 || dots === 2) && nameLength === dots) throw refused('dot segment in path');
      // A trailing empty segment (`/`, `/a/`) is a directory, not a merged slash.
      if (nameLength === 0 && i < e && !allow.emptySegments) throw refused('empty path segment');
      segStart = i + 1;
      nameEnd = -1;
      dots = 0;
      continue;
    }
    if (nameEnd !== -1) continue;
    if (c === DOT) {
      if (dots >= 0) dots++;
    } else if (c === SEMICOLON) {
      if (!allow.semicolon) throw refused('`;` in a path segment');
      nameEnd = i;
    } else dots = -1;
  }
}

/**
 * The request head at the start of `buf`, or undefined if it is not complete: a one-shot
 * convenience over {@link skipEmptyLines}, {@link findHeadEnd} and {@link parseRequestHead}.
 */
export function parseRequest(buf: Buffer, limits: HeadLimits = DEFAULT_HEAD_LIMITS, allow: Readonly<PathAllowances> = STRICT_PATH): RequestHead | undefined {
  const start = skipEmptyLines(buf, 0);
  if (start > limits.maxHeadBytes) throw tooLarge('message head too large');
  const end = findHeadEnd(buf, start, start, limits.maxHeadBytes);
  return end === -1 ? undefined : parseRequestHead(buf, start, end, limits, allow);
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

/**
 * Parses a response head in `buf[start, headEnd)`: `HTTP/1.x SP 3DIGIT SP reason CRLF` and header
 * fields as for requests. Both Content-Length and Transfer-Encoding, or differing lengths, are
 * 400s (the caller turns them into its own upstream error).
 */
export function parseResponseHead(buf: Buffer, start: number, headEnd: number, limits: HeadLimits = DEFAULT_HEAD_LIMITS): ResponseHead {
  if (headEnd - start > limits.maxHeadBytes) throw tooLarge('message head too large');
  const lineLf = buf.indexOf(LF, start);
  if (lineLf === -1 || lineLf >= headEnd || buf[lineLf - 1] !== CR) throw bad('bare LF');
  const lineEnd = lineLf - 1;
  const version = readVersion(buf, start);
  const d0 = buf[start + 9]! - 0x30;
  const d1 = buf[start + 10]! - 0x30;
  const d2 = buf[start + 11]! - 0x30;
  if (version === undefined || buf[start + 8] !== SP || !(d0 >= 1 && d0 <= 5) || !(d1 >= 0 && d1 <= 9) || !(d2 >= 0 && d2 <= 9)) {
    throw bad('invalid status line');
  }
  if (start + 12 !== lineEnd && buf[start + 12] !== SP) throw bad('invalid status line');
  for (let i = start + 13; i < lineEnd; i++) {
    const c = buf[i]!;
    if ((CLASS[c]! & VCHAR) === 0 && c !== SP && c !== HTAB) throw bad('control character in the reason phrase');
  }
  const status = d0 * 100 + d1 * 10 + d2;
  const st = newFieldState();
  parseFields(buf, lineLf + 1, headEnd, limits.maxHeaders, st);
  if (st.teCount > 0 && st.contentLength !== undefined) throw bad('both Content-Length and Transfer-Encoding');
  return {
    status,
    statusLine: buf.toString('latin1', start, lineEnd),
    version,
    headers: st.headers,
    headStart: start,
    headEnd,
    contentLength: st.contentLength,
    chunked: st.te === TE.Chunked,
    otherTransferEncoding: st.te === TE.Other,
    keepAlive: version === 'HTTP/1.1' ? !st.close : st.keepAliveToken && !st.close,
    connection: st.connection,
  };
}

/** How a response body is delimited (RFC 9112 §6.3). */
export type BodyFraming = 'none' | 'length' | 'chunked' | 'close';

export function responseFraming(res: ResponseHead, requestMethod: string): BodyFraming {
  if (requestMethod === 'HEAD' || res.status < 200 || res.status === 204 || res.status === 304) return 'none';
  if (res.chunked) return 'chunked';
  if (res.otherTransferEncoding) return 'close';
  if (res.contentLength !== undefined) return res.contentLength === 0 ? 'none' : 'length';
  return 'close';
}

// ---------------------------------------------------------------------------------------------
// Rewriting heads for the next hop
// ---------------------------------------------------------------------------------------------

/**
 * True for fields that describe one connection only and must not be forwarded (RFC 9110 §7.6.1):
 * Connection and what it names, Keep-Alive, Proxy-*, TE, Trailer, Upgrade. `lower` is lowercase.
 */
export function isHopByHop(lower: string, connection: readonly string[]): boolean {
  switch (lower) {
    case 'connection':
    case 'keep-alive':
    case 'te':
    case 'trailer':
    case 'upgrade':
      return true;
    default:
      return lower.startsWith('proxy-') || (connection.length > 0 && connection.includes(lower));
  }
}

/**
 * True when the field name `name` is `idHeader` once both are lowercased and `_` is read as `-`.
 * CGI, WSGI, Rack and PHP pass headers to applications as `HTTP_X_SPIFFE_ID`-style variables,
 * into which both `x-spiffe-id` and `x_spiffe_id` fold (the caller's copy first, in some stacks):
 * every spelling that can reach an application as the id header is treated as the id header.
 */
export function isIdHeaderName(name: string, idHeader: string): boolean {
  const n = name.length;
  if (n !== idHeader.length) return false;
  for (let i = 0; i < n; i++) if (foldName(name.charCodeAt(i)) !== foldName(idHeader.charCodeAt(i))) return false;
  return true;
}

/** A field-name character, ASCII-lowercased and with `_` read as `-`. */
function foldName(c: number): number {
  if (c >= 0x41 && c <= 0x5a) return c | 0x20;
  return c === 0x5f ? 0x2d : c;
}

/**
 * The head to send on to the application: the request line as received, hop-by-hop fields
 * dropped, Content-Length normalized to one field, every incoming `idHeader` field (in any case,
 * with `_` for `-`: {@link isIdHeaderName}) deleted and one set to `peerId` (so a caller can
 * never choose its own identity), and for HTTP/1.0 a
 * `connection: keep-alive` for the proxy's own pooled connection. `idHeader` must be a lowercase
 * token and `peerId` a verified SPIFFE ID. `body`, when given, is appended (the first body bytes).
 */
export function forwardRequestHead(head: RequestHead, idHeader: string, peerId: string, body?: Uint8Array): Buffer {
  let out = `${head.method} ${head.target} ${head.version}\r\n`;
  const hs = head.headers;
  for (let k = 0; k < hs.length; k++) {
    const h = hs[k]!;
    const name = h[0];
    if (isIdHeaderName(name, idHeader)) continue;
    if (isDropped(name, head.connection)) continue;
    out += `${name}: ${h[1]}\r\n`;
  }
  if (head.contentLength !== undefined) out += `content-length: ${head.contentLength}\r\n`;
  out += `${idHeader}: ${peerId}\r\n`;
  if (head.version === 'HTTP/1.0') out += 'connection: keep-alive\r\n';
  out += '\r\n';
  return withBody(out, body);
}

/**
 * The head string as latin1 bytes followed by `body`, in one buffer: one write, so one TLS
 * record and one syscall for a small message instead of two.
 */
function withBody(head: string, body: Uint8Array | undefined): Buffer {
  if (body === undefined || body.length === 0) return Buffer.from(head, 'latin1');
  const out = Buffer.allocUnsafe(head.length + body.length);
  out.write(head, 0, 'latin1');
  out.set(body, head.length);
  return out;
}

/** Hop-by-hop, or Content-Length (re-emitted once by the callers). */
function isDropped(name: string, connection: readonly string[]): boolean {
  const n = name.length;
  // Only names whose length matches a hop-by-hop field (or could be a Proxy-* or a Connection
  // option) are lowercased.
  if (n === 2 || n === 7 || n === 10 || n === 14 || n >= 6) {
    const lower = name.toLowerCase();
    return lower === 'content-length' || isHopByHop(lower, connection);
  }
  return connection.length > 0 && connection.includes(name.toLowerCase());
}

/**
 * The response head to send back to the caller: the status line as received, hop-by-hop fields
 * dropped, Content-Length normalized, and `connection: close` when the proxy will close the
 * caller's connection after this response (or `connection: keep-alive` for an HTTP/1.0 caller
 * whose connection stays open). `body`, when given, is appended (the first body bytes).
 */
export function forwardResponseHead(head: ResponseHead, closeAfter: boolean, callerVersion: HttpVersion, body?: Uint8Array): Buffer {
  let out = `${head.statusLine}\r\n`;
  const hs = head.headers;
  for (let k = 0; k < hs.length; k++) {
    const h = hs[k]!;
    if (isDropped(h[0], head.connection)) continue;
    out += `${h[0]}: ${h[1]}\r\n`;
  }
  if (head.contentLength !== undefined) out += `content-length: ${head.contentLength}\r\n`;
  if (closeAfter) out += 'connection: close\r\n';
  else if (callerVersion === 'HTTP/1.0') out += 'connection: keep-alive\r\n';
  out += '\r\n';
  return withBody(out, body);
}

// ---------------------------------------------------------------------------------------------
// Chunked bodies
// ---------------------------------------------------------------------------------------------

const enum CS {
  SizeStart,
  Size,
  SizeWs,
  Ext,
  SizeLf,
  Data,
  DataCr,
  DataLf,
  TrailerStart,
  TrailerName,
  Trailer,
  TrailerLf,
  EndLf,
  Done,
}

const MAX_SIZE_DIGITS = 13; // 16^13 = 2^52: exact in a double
const MAX_EXT_BYTES = 4096;
/** The whole trailer section, line ends included. */
const MAX_TRAILER_BYTES = 16 * 1024;

/**
 * Finds where a chunked body ends (RFC 9112 §7.1) as its bytes stream past, without keeping
 * them: chunk data is skipped by count, only size lines, extensions and trailers are read, each
 * bounded. Malformed framing throws `TESSERA_BAD_REQUEST`. One tracker per body; `reset()` to
 * reuse it.
 *
 * With `dropTrailer` (a request's id header), the trailer fields that {@link isIdHeaderName}
 * matches to it are removed: a trailer is merged into the headers by many servers, so a caller's
 * `x-spiffe-id` trailer would otherwise sit next to the verified one. The trailer section, when
 * there is one, is then held back (bounded by the trailer limit) instead of passing through:
 * {@link passEnd} says how much of each fed range to forward as it is, and once {@link done},
 * {@link takeTrailers} gives the filtered section (with the final CRLF) to forward after it.
 * A body without trailers passes through whole, as without `dropTrailer`.
 *
 * @example
 * const t = new ChunkedBodyTracker('x-spiffe-id');
 * const end = t.feed(chunk, 0, chunk.length); // -1: all of chunk is body, more to come
 * forward(chunk.subarray(0, t.passEnd));
 * if (t.done) forward(t.takeTrailers() ?? EMPTY);
 */
export class ChunkedBodyTracker {
  #state: CS = CS.SizeStart;
  #remaining = 0;
  #digits = 0;
  #lineBytes = 0;
  #trailerBytes = 0;
  #passEnd = 0;
  /** The held trailer section (from its first field on); undefined when nothing is held. */
  #held: Buffer | undefined;
  #heldLen = 0;

  /** `dropTrailer`: a lowercase field name whose trailer fields are removed (see the class). */
  constructor(readonly dropTrailer?: string) {}

  /** True once the last chunk, the trailers and the final CRLF have been seen. */
  get done(): boolean {
    return this.#state === CS.Done;
  }

  /**
   * After {@link feed}: the fed bytes before this index are to be forwarded as they are; those
   * from it to the end of what was consumed are held trailer bytes (only with `dropTrailer`).
   */
  get passEnd(): number {
    return this.#passEnd;
  }

  reset(): void {
    this.#state = CS.SizeStart;
    this.#remaining = 0;
    this.#digits = 0;
    this.#lineBytes = 0;
    this.#trailerBytes = 0;
    this.#passEnd = 0;
    this.#held = undefined;
    this.#heldLen = 0;
  }

  /**
   * The held trailer section without the dropped fields, final CRLF included, once {@link done};
   * undefined when none was held (it then passed through). Handed over: the tracker forgets it.
   */
  takeTrailers(): Buffer | undefined {
    const held = this.#held;
    if (held === undefined || this.#state !== CS.Done) return undefined;
    const len = this.#heldLen;
    this.#held = undefined;
    this.#heldLen = 0;
    // Every line ends in CRLF and every field line has a colon (checked by feed).
    let w = 0;
    for (let r = 0; r < len; ) {
      const next = held.indexOf(LF, r) + 1;
      const colon = held.indexOf(COLON, r);
      if (colon === -1 || colon > next || !isIdHeaderName(held.toString('latin1', r, colon), this.dropTrailer!)) {
        if (w !== r) held.copy(held, w, r, next);
        w += next - r;
      }
      r = next;
    }
    return held.subarray(0, w);
  }

  /**
   * Consumes `buf[start, end)`. Returns the index just after the body's last byte if the body
   * ends within it (bytes from there on belong to the next message), or -1 if all of it was body.
   */
  feed(buf: Uint8Array, start: number, end: number): number {
    let i = start;
    let state = this.#state;
    // Where this call's held bytes begin (-1: none held).
    let holdFrom = this.#held !== undefined && state !== CS.Done ? start : -1;
    while (i < end) {
      if (state === CS.Data) {
        const n = Math.min(this.#remaining, end - i);
        i += n;
        this.#remaining -= n;
        if (this.#remaining === 0) state = CS.DataCr;
        continue;
      }
      const c = buf[i]!;
      i++;
      switch (state) {
        case CS.SizeStart:
          if ((CLASS[c]! & HEX) === 0) throw bad('invalid chunk size');
          this.#remaining = hexValue(c);
          this.#digits = 1;
          this.#lineBytes = 0;
          state = CS.Size;
          break;
        case CS.Size:
          if ((CLASS[c]! & HEX) !== 0) {
            if (++this.#digits > MAX_SIZE_DIGITS) throw bad('chunk size too large');
            this.#remaining = this.#remaining * 16 + hexValue(c);
          } else if (c === CR) state = CS.SizeLf;
          else if (c === 0x3b) state = CS.Ext;
          else if (c === SP || c === HTAB) state = CS.SizeWs;
          else throw bad('invalid chunk size');
          break;
        case CS.SizeWs: // BWS is only allowed before a chunk extension
          if (c === 0x3b) state = CS.Ext;
          else if (c !== SP && c !== HTAB) throw bad('invalid chunk size line');
          break;
        case CS.Ext:
          if (c === CR) state = CS.SizeLf;
          else if ((CLASS[c]! & VCHAR) === 0 && c !== SP && c !== HTAB) throw bad('control character in a chunk extension');
          else if (++this.#lineBytes > MAX_EXT_BYTES) throw bad('chunk extension too long');
          break;
        case CS.SizeLf:
          if (c !== LF) throw bad('bare CR in chunk size line');
          state = this.#remaining === 0 ? CS.TrailerStart : CS.Data;
          break;
        case CS.DataCr:
          if (c !== CR) throw bad('chunk data longer than its size');
          state = CS.DataLf;
          break;
        case CS.DataLf:
          if (c !== LF) throw bad('chunk data not followed by CRLF');
          state = CS.SizeStart;
          break;
        case CS.TrailerStart:
          if (++this.#trailerBytes > MAX_TRAILER_BYTES) throw bad('trailer section too large');
          if (c === CR) state = CS.EndLf;
          else if (c === SP || c === HTAB) throw bad('obsolete line folding in trailer');
          else if ((CLASS[c]! & TCHAR) === 0) throw bad('invalid trailer field');
          else {
            state = CS.TrailerName;
            if (holdFrom === -1 && this.dropTrailer !== undefined) holdFrom = i - 1;
          }
          break;
        case CS.TrailerName: // field-name ":" (RFC 9112 §5.1: no whitespace before the colon)
          if (++this.#trailerBytes > MAX_TRAILER_BYTES) throw bad('trailer section too large');
          if (c === COLON) state = CS.Trailer;
          else if ((CLASS[c]! & TCHAR) === 0) throw bad('invalid trailer field name');
          break;
        case CS.Trailer:
          if (++this.#trailerBytes > MAX_TRAILER_BYTES) throw bad('trailer section too large');
          if (c === CR) state = CS.TrailerLf;
          else if ((CLASS[c]! & VCHAR) === 0 && c !== SP && c !== HTAB) throw bad('control character in a trailer field');
          break;
        case CS.TrailerLf:
          if (c !== LF) throw bad('bare CR in trailer');
          if (++this.#trailerBytes > MAX_TRAILER_BYTES) throw bad('trailer section too large');
          state = CS.TrailerStart;
          break;
        case CS.EndLf:
          if (c !== LF) throw bad('bare CR after the last chunk');
          this.#state = CS.Done;
          this.#settle(buf, start, holdFrom, i);
          return i;
        default:
          // CS.Done: feeding past the end is a caller bug; report the end again.
          this.#state = state;
          this.#passEnd = start;
          return i - 1;
      }
    }
    this.#state = state;
    this.#settle(buf, start, holdFrom, end);
    return -1;
  }

  /** Sets passEnd for a feed of buf[start, stop) and keeps buf[holdFrom, stop) when holding. */
  #settle(buf: Uint8Array, start: number, holdFrom: number, stop: number): void {
    if (holdFrom === -1) {
      this.#passEnd = stop;
      return;
    }
    this.#passEnd = holdFrom > start ? holdFrom : start;
    const n = stop - holdFrom;
    const len = this.#heldLen;
    let held = this.#held;
    if (held === undefined || held.length < len + n) {
      // Bounded: the trailer limit counts every byte of the section but the last LF.
      const grown = Buffer.allocUnsafe(Math.min(MAX_TRAILER_BYTES + 1, Math.max(256, 2 * (len + n))));
      if (held !== undefined) held.copy(grown, 0, 0, len);
      held = grown;
      this.#held = held;
    }
    held.set(buf.subarray(holdFrom, stop), len);
    this.#heldLen = len + n;
  }
}

// ---------------------------------------------------------------------------------------------
// Incremental reading
// ---------------------------------------------------------------------------------------------

/**
 * Collects a message head from chunks as they arrive, parsing it once complete. Holds at most
 * `maxHeadBytes` (plus one chunk while looking). When a head completes, {@link buffer} holds the
 * bytes it was parsed from and {@link bodyStart} the index of the first byte after it; those
 * belong to the body or the next message and are the caller's to forward.
 *
 * @example
 * const reader = new HeadReader('request');
 * socket.on('data', (chunk) => { const head = reader.push(chunk); if (head) use(head, reader.buffer.subarray(reader.bodyStart)); });
 */
export class HeadReader<K extends 'request' | 'response'> {
  /** The buffer the last completed head was parsed from. */
  buffer: Buffer = EMPTY;
  /** Index in {@link buffer} just after the last completed head. */
  bodyStart = 0;
  /**
   * A partial head: `#len` bytes at the start of `#store`, which grows by doubling so that a head
   * trickling in byte by byte costs linear, not quadratic, copying. Handed over (never reused)
   * once the head completes, since the caller may still be writing body bytes out of it.
   */
  #store: Buffer | undefined;
  #len = 0;
  #skipped = 0;

  constructor(
    readonly kind: K,
    readonly limits: HeadLimits = DEFAULT_HEAD_LIMITS,
    /** Request paths only: the shapes accepted beyond the strict rules of {@link parseRequestHead}. */
    readonly allowPath: Readonly<PathAllowances> = STRICT_PATH,
  ) {}

  /** Bytes of an incomplete head held so far. */
  get pending(): number {
    return this.#len;
  }

  /** Forgets any partial head. */
  reset(): void {
    this.#store = undefined;
    this.#len = 0;
    this.#skipped = 0;
    this.buffer = EMPTY;
    this.bodyStart = 0;
  }

  /** Adds `chunk`; returns the parsed head once it is complete, else undefined (bytes kept). */
  push(chunk: Buffer): (K extends 'request' ? RequestHead : ResponseHead) | undefined {
    let buf = chunk;
    const from = this.#len;
    if (from > 0) {
      const need = from + chunk.length;
      let store = this.#store!;
      if (store.length < need) {
        const grown = Buffer.allocUnsafe(Math.max(need, store.length * 2));
        store.copy(grown, 0, 0, from);
        store = grown;
        this.#store = store;
      }
      chunk.copy(store, from);
      buf = store.subarray(0, need);
    }
    const start = this.kind === 'request' ? skipEmptyLines(buf, 0) : 0;
    if (start > 0) {
      // Empty lines before a request line are dropped, but count towards the head's size.
      this.#skipped += start;
      if (this.#skipped > this.limits.maxHeadBytes) throw tooLarge('message head too large');
      if (start === buf.length) {
        this.#len = 0;
        return undefined;
      }
    }
    const end = findHeadEnd(buf, start, Math.max(start, from), this.limits.maxHeadBytes);
    if (end === -1) {
      this.#hold(buf, start);
      return undefined;
    }
    this.#store = undefined;
    this.#len = 0;
    this.buffer = buf;
    this.bodyStart = end;
    this.#skipped = 0;
    const head = this.kind === 'request' ? parseRequestHead(buf, start, end, this.limits, this.allowPath) : parseResponseHead(buf, start, end, this.limits);
    return head as K extends 'request' ? RequestHead : ResponseHead;
  }

  /** Keeps buf[start, ...) as the partial head. */
  #hold(buf: Buffer, start: number): void {
    const n = buf.length - start;
    let store = this.#store;
    if (store !== undefined && buf.buffer === store.buffer && buf.byteOffset === store.byteOffset) {
      // Already in the store (from the append above): drop skipped empty lines, if any.
      if (start > 0) store.copy(store, 0, start, buf.length);
    } else {
      if (store === undefined || store.length < n) {
        store = Buffer.allocUnsafe(Math.max(n * 2, 1024));
        this.#store = store;
      }
      buf.copy(store, 0, start);
    }
    this.#len = n;
  }
}

const EMPTY = Buffer.alloc(0);
