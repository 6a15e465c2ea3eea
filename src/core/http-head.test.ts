import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { TesseraError } from './errors.js';
import {
  ChunkedBodyTracker,
  HeadReader,
  findHeadEnd,
  forwardRequestHead,
  forwardResponseHead,
  STRICT_PATH,
  isIdHeaderName,
  parseRequest,
  parseResponseHead,
  responseFraming,
  type PathAllowances,
  type RequestHead,
} from './http-head.js';

const b = (s: string): Buffer => Buffer.from(s, 'latin1');

function req(s: string): RequestHead {
  const head = parseRequest(b(s));
  if (head === undefined) throw new Error('incomplete');
  return head;
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    expect(err).toBeInstanceOf(TesseraError);
    return (err as TesseraError).code;
  }
}

function response(s: string) {
  const buf = b(s);
  const end = findHeadEnd(buf, 0, 0);
  if (end === -1) throw new Error('incomplete');
  return parseResponseHead(buf, 0, end);
}

describe('parseRequest: accepted heads', () => {
  it('parses a GET with its fields, in order, case kept, values trimmed', () => {
    const h = req('GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: svc\r\nX-Thing:  v 1 \t\r\naccept:\r\n\r\n');
    expect(h).toMatchObject({
      method: 'GET', target: '/a/b?x=1&y=%20', path: '/a/b', version: 'HTTP/1.1',
      headers: [['Host', 'svc'], ['X-Thing', 'v 1'], ['accept', '']],
      headStart: 0, contentLength: undefined, chunked: false, keepAlive: true, connection: [],
    });
    expect(h.headEnd).toBe(b('GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: svc\r\nX-Thing:  v 1 \t\r\naccept:\r\n\r\n').length);
  });

  it.each([
    ['HTTP/1.1', '', true],
    ['HTTP/1.1', 'Connection: close\r\n', false],
    ['HTTP/1.1', 'Connection: Keep-Alive, X-Opt\r\n', true],
    ['HTTP/1.0', '', false],
    ['HTTP/1.0', 'Connection: keep-alive\r\n', true],
    ['HTTP/1.0', 'Connection: keep-alive, close\r\n', false],
  ])('%s with %j: keepAlive %s', (version, conn, keepAlive) => {
    expect(req(`GET / ${version}\r\nHost: h\r\n${conn}\r\n`).keepAlive).toBe(keepAlive);
  });

  it('records Connection options lowercased', () => {
    expect(req('GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, X-Foo\r\nconnection: ,x-bar,\r\n\r\n').connection).toEqual(['upgrade', 'x-foo', 'x-bar']);
  });

  it('reads Content-Length, and identical repeated values as one', () => {
    expect(req('POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 42\r\n\r\n').contentLength).toBe(42);
    expect(req('POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 007\r\ncontent-length: 7\r\n\r\n').contentLength).toBe(7);
    expect(req('POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n').contentLength).toBe(5);
    expect(req('POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 999999999999999\r\n\r\n').contentLength).toBe(999999999999999);
  });

  it('reads chunked transfer coding in any case', () => {
    const h = req('POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n');
    expect(h.chunked).toBe(true);
    expect(h.contentLength).toBeUndefined();
  });

  it('skips empty lines before the request line (RFC 9112 §2.2)', () => {
    const h = req('\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n');
    expect(h.headStart).toBe(4);
    expect(h.method).toBe('GET');
  });

  it('accepts obs-text in values and HTTP/1.0 without Host', () => {
    expect(req('GET / HTTP/1.0\r\nX: caf\xe9\r\n\r\n').headers).toEqual([['X', 'caf\xe9']]);
  });

  it('accepts allowed path escapes and odd but unambiguous paths', () => {
    for (const t of [
      '/', '/a/', '/a%20b', '/%E2%82%AC', '/%C3%A9t%C3%A9', '/%F0%9F%98%80', '/%ED%9F%BF', '/%EE%80%80', '/%F4%8F%BF%BF', '/%C2%80',
      '/a/.b/..c/...', "/!$&'()*+,=:@", '/?a=%2F&b=/../', '/a?b;c=d&e=%C0%AE', '/a%3Fb', '/a%25b',
    ]) {
      expect(req(`GET ${t} HTTP/1.1\r\nHost: h\r\n\r\n`).target).toBe(t);
    }
  });

  it('returns undefined while the head is incomplete', () => {
    expect(parseRequest(b('GET / HTTP/1.1\r\nHost: h\r\n'))).toBeUndefined();
    expect(parseRequest(b(''))).toBeUndefined();
    expect(parseRequest(b('\r\n'))).toBeUndefined();
  });
});

describe('parseRequest: refused heads', () => {
  it.each([
    ['bare LF ending the request line', 'GET / HTTP/1.1\nHost: h\r\n\r\n'],
    ['bare LF ending a field', 'GET / HTTP/1.1\r\nHost: h\n\r\n'],
    ['bare CR inside a value', 'GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n'],
    ['obs-fold', 'GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n  b\r\n\r\n'],
    ['whitespace before the colon', 'GET / HTTP/1.1\r\nHost : h\r\n\r\n'],
    ['no colon', 'GET / HTTP/1.1\r\nHost h\r\n\r\n'],
    ['empty field name', 'GET / HTTP/1.1\r\n: h\r\nHost: h\r\n\r\n'],
    ['non-token field name', 'GET / HTTP/1.1\r\nHo(st: h\r\n\r\n'],
    ['NUL in a value', 'GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n'],
    ['DEL in a value', 'GET / HTTP/1.1\r\nHost: h\r\nX: a\x7fb\r\n\r\n'],
    ['CL and TE', 'POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n'],
    ['TE and CL', 'POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n'],
    ['differing CLs', 'POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n'],
    ['differing CL list', 'POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 4\r\n\r\n'],
    ['negative CL', 'POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n'],
    ['signed CL', 'POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n\r\n'],
    ['hex CL', 'POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x10\r\n\r\n'],
    ['empty CL', 'POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n'],
    ['CL with an empty list element', 'POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1,,1\r\n\r\n'],
    ['CL of 16 digits', 'POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000000000000\r\n\r\n'],
    ['TE gzip', 'POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n'],
    ['TE gzip, chunked', 'POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n'],
    ['TE chunked twice', 'POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n'],
    ['TE with a parameter-like suffix', 'POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked;q=1\r\n\r\n'],
    ['TE in HTTP/1.0', 'POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n'],
    ['HTTP/1.1 without Host', 'GET / HTTP/1.1\r\n\r\n'],
    ['two Hosts', 'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n'],
    ['Connection naming Content-Length', 'POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nConnection: content-length\r\n\r\n'],
    ['Connection naming Transfer-Encoding', 'POST / HTTP/1.1\r\nHost: h\r\nConnection: Transfer-Encoding\r\n\r\n'],
    ['Connection naming Host', 'GET / HTTP/1.1\r\nHost: h\r\nConnection: host\r\n\r\n'],
    ['invalid Connection option', 'GET / HTTP/1.1\r\nHost: h\r\nConnection: a b\r\n\r\n'],
    ['absolute-form target', 'GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n'],
    ['asterisk-form target', 'OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n'],
    ['authority-form target', 'CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n'],
    ['a space in the target', 'GET /a b HTTP/1.1\r\nHost: h\r\n\r\n'],
    ['two spaces after the method', 'GET  / HTTP/1.1\r\nHost: h\r\n\r\n'],
    ['a backslash in the target', 'GET /a\\b HTTP/1.1\r\nHost: h\r\n\r\n'],
    ['a fragment', 'GET /a#b HTTP/1.1\r\nHost: h\r\n\r\n'],
    ['non-ASCII in the target', 'GET /caf\xe9 HTTP/1.1\r\nHost: h\r\n\r\n'],
    ['HTTP/2.0', 'GET / HTTP/2.0\r\nHost: h\r\n\r\n'],
    ['HTTP/1.2', 'GET / HTTP/1.2\r\nHost: h\r\n\r\n'],
    ['lowercase version', 'GET / http/1.1\r\nHost: h\r\n\r\n'],
    ['trailing space after the version', 'GET / HTTP/1.1 \r\nHost: h\r\n\r\n'],
    ['HTTP/0.9 style', 'GET /\r\n\r\n'],
    ['empty method', ' / HTTP/1.1\r\nHost: h\r\n\r\n'],
    ['a raw NUL in the path', 'GET /a\x00b HTTP/1.1\r\nHost: h\r\n\r\n'],
    ['a raw DEL in the path', 'GET /a\x7fb HTTP/1.1\r\nHost: h\r\n\r\n'],
    ['a raw control byte in the query', 'GET /a?b\x01 HTTP/1.1\r\nHost: h\r\n\r\n'],
    ['malformed escape', 'GET /a%2 HTTP/1.1\r\nHost: h\r\n\r\n'],
    ['malformed escape in the query', 'GET /a?b=%zz HTTP/1.1\r\nHost: h\r\n\r\n'],
  ])('%s → 400', (_name, head) => {
    expect(codeOf(() => parseRequest(b(head)))).toBe('TESSERA_BAD_REQUEST');
  });

  it.each([
    ['dot segment', '/a/../b'],
    ['trailing dot segment', '/a/..'],
    ['single dot segment', '/./a'],
    ['escaped dot segment', '/a/%2e%2E/b'],
    ['half-escaped dot segment', '/a/.%2e/b'],
    ['escaped unreserved', '/%61dmin'],
    ['escaped slash', '/a%2Fb'],
    ['escaped backslash', '/a%5cb'],
    ['servlet parent `..;`', '/orders/..;/admin'],
    ['`;` parameter', '/a;b'],
    ['`;` parameter, trailing', '/a;'],
    ['`;` at the start', '/;jsessionid=1'],
    ['escaped `;`', '/a%3Bb'],
    ['escaped `;` after dots', '/orders/..%3b/admin'],
    ['%00', '/a%00b'],
    ['%00 at the end', '/a%00'],
    ['escaped TAB', '/a%09'],
    ['escaped LF', '/a%0Ab'],
    ['escaped CR LF', '/a%0d%0aX:%20y'],
    ['escaped US', '/a%1f'],
    ['escaped DEL', '/a%7F'],
    ['%00 in the query', '/a?b=%00'],
    ['escaped CR in the query', '/a?b=%0D'],
    ['escaped DEL in the query', '/a?%7f'],
    ['overlong `.` (C0 AE)', '/%C0%AE'],
    ['overlong `..` then a segment', '/%C0%AE%C0%AE/admin'],
    ['overlong C1', '/%C1%BF'],
    ['overlong 3 bytes', '/%E0%80%AE'],
    ['overlong 3 bytes, highest', '/%E0%9F%BF'],
    ['overlong 4 bytes', '/%F0%80%80%AE'],
    ['overlong 4 bytes, highest', '/%F0%8F%BF%BF'],
    ['UTF-16 surrogate', '/%ED%A0%80'],
    ['above U+10FFFF', '/%F4%90%80%80'],
    ['F5 lead byte', '/%F5%80%80%80'],
    ['FF byte', '/%FF'],
    ['lone continuation byte', '/%80'],
    ['continuation after a complete character', '/%C3%A9%A9'],
    ['truncated 2-byte sequence at the end', '/%C3'],
    ['truncated sequence before `/`', '/%C3/a'],
    ['truncated sequence before a letter', '/%E2%82x'],
    ['non-continuation in a sequence', '/%C3%28'],
    ['lead byte where a continuation belongs', '/%E2%C3%A9'],
    ['`//` alone', '//'],
    ['`//` at the start', '//admin'],
    ['`//` inside', '/a//b'],
    ['trailing `//`', '/a//'],
    ['`///`', '///'],
  ])('%s → 400 TESSERA_PROXY_PATH_REFUSED', (_name, target) => {
    expect(codeOf(() => parseRequest(b(`GET ${target} HTTP/1.1\r\nHost: h\r\n\r\n`)))).toBe('TESSERA_PROXY_PATH_REFUSED');
  });

  it('refuses a head over 16 KiB, and one with over 100 fields, with 431', () => {
    expect(codeOf(() => parseRequest(b(`GET / HTTP/1.1\r\nHost: h\r\nX: ${'a'.repeat(16 * 1024)}\r\n\r\n`)))).toBe('TESSERA_HEADERS_TOO_LARGE');
    // Still incomplete, but already too long.
    expect(codeOf(() => parseRequest(b(`GET / HTTP/1.1\r\nX: ${'a'.repeat(16 * 1024)}`)))).toBe('TESSERA_HEADERS_TOO_LARGE');
    const many = Array.from({ length: 101 }, (_, i) => `X-${i}: v\r\n`).join('');
    expect(codeOf(() => parseRequest(b(`GET / HTTP/1.1\r\nHost: h\r\n${many}\r\n`)))).toBe('TESSERA_HEADERS_TOO_LARGE');
    const fine = Array.from({ length: 99 }, (_, i) => `X-${i}: v\r\n`).join('');
    expect(req(`GET / HTTP/1.1\r\nHost: h\r\n${fine}\r\n`).headers).toHaveLength(100);
  });

  it('a head of exactly the limit is accepted, one byte more is not', () => {
    const base = 'GET / HTTP/1.1\r\nHost: h\r\nX: \r\n\r\n';
    const exact = base.replace('X: ', `X: ${'a'.repeat(16 * 1024 - base.length)}`);
    expect(exact.length).toBe(16 * 1024);
    expect(req(exact).headEnd).toBe(16 * 1024);
    expect(codeOf(() => parseRequest(b(exact.replace('X: ', 'X: a'))))).toBe('TESSERA_HEADERS_TOO_LARGE');
  });
});

describe('responses', () => {
  it('parses the status line and framing', () => {
    const r = response('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n');
    expect(r).toMatchObject({ status: 200, statusLine: 'HTTP/1.1 200 OK', contentLength: 5, chunked: false, keepAlive: true });
    expect(responseFraming(r, 'GET')).toBe('length');
    expect(responseFraming(r, 'HEAD')).toBe('none');
  });

  it.each([
    ['HTTP/1.1 204 No Content\r\n\r\n', 'GET', 'none'],
    ['HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n', 'GET', 'none'],
    ['HTTP/1.1 100 Continue\r\n\r\n', 'POST', 'none'],
    ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n', 'GET', 'chunked'],
    ['HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n', 'GET', 'close'],
    ['HTTP/1.1 200 OK\r\n\r\n', 'GET', 'close'],
    ['HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n', 'GET', 'none'],
    ['HTTP/1.1 200\r\nContent-Length: 1\r\n\r\n', 'GET', 'length'],
  ])('%j to %s: %s', (head, method, framing) => {
    expect(responseFraming(response(head), method)).toBe(framing);
  });

  it.each([
    'HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n',
    'HTTP/1.1 20 OK\r\n\r\n',
    'HTTP/1.1 600 OK\r\n\r\n',
    'HTTP/1.1 200OK\r\n\r\n',
    'HTTP/2 200 OK\r\n\r\n',
    'HTTP/1.1 200 O\x01K\r\n\r\n',
  ])('refuses %j', (head) => {
    expect(codeOf(() => response(head))).toBe('TESSERA_BAD_REQUEST');
  });

  it('forwards without hop-by-hop fields, with the caller connection handling', () => {
    const r = response('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\nX-Keep: 2\r\n\r\n');
    expect(forwardResponseHead(r, false, 'HTTP/1.1').toString('latin1')).toBe('HTTP/1.1 200 OK\r\nX-Keep: 2\r\ncontent-length: 5\r\n\r\n');
    expect(forwardResponseHead(r, true, 'HTTP/1.1').toString('latin1')).toBe('HTTP/1.1 200 OK\r\nX-Keep: 2\r\ncontent-length: 5\r\nconnection: close\r\n\r\n');
    expect(forwardResponseHead(r, false, 'HTTP/1.0').toString('latin1')).toBe('HTTP/1.1 200 OK\r\nX-Keep: 2\r\ncontent-length: 5\r\nconnection: keep-alive\r\n\r\n');
  });
});

describe('forwardRequestHead', () => {
  it('drops hop-by-hop fields and every incoming id header, then sets the verified one', () => {
    const h = req([
      'POST /x?y HTTP/1.1', 'Host: h', 'X-SPIFFE-ID: spiffe://evil/forged', 'Connection: keep-alive, X-Secret', 'X-Secret: s',
      'Keep-Alive: 5', 'Proxy-Authorization: basic x', 'Proxy-Connection: k', 'TE: trailers', 'Trailer: X', 'Upgrade: websocket',
      'x-spiffe-id: spiffe://evil/again', 'Content-Length: 3', 'content-length: 3', 'Accept: */*', '', '',
    ].join('\r\n'));
    const out = forwardRequestHead(h, 'x-spiffe-id', 'spiffe://td/caller').toString('latin1');
    expect(out).toBe('POST /x?y HTTP/1.1\r\nHost: h\r\nAccept: */*\r\ncontent-length: 3\r\nx-spiffe-id: spiffe://td/caller\r\n\r\n');
    // What is forwarded parses back with the same meaning.
    expect(req(out)).toMatchObject({ method: 'POST', target: '/x?y', contentLength: 3, keepAlive: true });
  });

  it('drops every spelling of the id header that folds to it with `_` read as `-` (CGI/WSGI HTTP_X_SPIFFE_ID)', () => {
    const h = req([
      'GET / HTTP/1.1', 'Host: h', 'x_spiffe_id: spiffe://evil/underscore', 'X_SPIFFE-ID: spiffe://evil/mixed', 'x-Spiffe_Id: spiffe://evil/one',
      'x-spiffe-idx: kept', 'xspiffe-id: kept', 'x-spiffe: kept', 'x__spiffe-id: kept', '', '',
    ].join('\r\n'));
    expect(forwardRequestHead(h, 'x-spiffe-id', 'spiffe://td/caller').toString('latin1')).toBe(
      'GET / HTTP/1.1\r\nHost: h\r\nx-spiffe-idx: kept\r\nxspiffe-id: kept\r\nx-spiffe: kept\r\nx__spiffe-id: kept\r\nx-spiffe-id: spiffe://td/caller\r\n\r\n',
    );
    // A configured name with `_` folds the same way.
    const c = req('GET / HTTP/1.1\r\nHost: h\r\nX-Caller: forged\r\nx_caller: forged\r\n\r\n');
    expect(forwardRequestHead(c, 'x_caller', 'spiffe://td/a').toString('latin1')).toBe('GET / HTTP/1.1\r\nHost: h\r\nx_caller: spiffe://td/a\r\n\r\n');
  });

  it('isIdHeaderName is ASCII case folding with `_` as `-`, nothing more', () => {
    const nameChar = fc.constantFrom(...'aAzZ-_^~`|.09!'.split(''));
    const name = fc.array(nameChar, { minLength: 1, maxLength: 6 }).map((a) => a.join(''));
    const fold = (n: string): string => n.replace(/[A-Z]/g, (ch) => ch.toLowerCase()).replaceAll('_', '-');
    fc.assert(fc.property(name, name, (x, y) => {
      expect(isIdHeaderName(x, y)).toBe(fold(x) === fold(y));
      expect(isIdHeaderName(x, fold(x).toUpperCase().replaceAll('-', '_').toLowerCase())).toBe(true);
    }), { numRuns: 2000 });
  });

  it('keeps Transfer-Encoding: chunked and asks an HTTP/1.0 upstream to keep the pooled connection', () => {
    const h = req('POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n');
    expect(forwardRequestHead(h, 'x-id', 'spiffe://td/a').toString('latin1')).toBe('POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nx-id: spiffe://td/a\r\n\r\n');
    const h10 = req('GET / HTTP/1.0\r\n\r\n');
    expect(forwardRequestHead(h10, 'x-id', 'spiffe://td/a').toString('latin1')).toBe('GET / HTTP/1.0\r\nx-id: spiffe://td/a\r\nconnection: keep-alive\r\n\r\n');
  });
});

describe('ChunkedBodyTracker', () => {
  const body = '5\r\nhello\r\n1a;ext=1; q="x y"\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nTrailer-A: 1\r\nB: 2\r\n\r\n';

  it('finds the end of a body fed at once, and says where the next message starts', () => {
    const t = new ChunkedBodyTracker();
    const buf = b(`${body}GET / HTTP/1.1\r\n`);
    expect(t.feed(buf, 0, buf.length)).toBe(body.length);
    expect(t.done).toBe(true);
  });

  it('finds the same end fed one byte at a time', () => {
    const t = new ChunkedBodyTracker();
    const buf = b(body);
    for (let i = 0; i < buf.length; i++) {
      const r = t.feed(buf, i, i + 1);
      expect(r).toBe(i === buf.length - 1 ? i + 1 : -1);
    }
  });

  it('accepts the shortest body and BWS before an extension', () => {
    const t = new ChunkedBodyTracker();
    expect(t.feed(b('0\r\n\r\n'), 0, 5)).toBe(5);
    t.reset();
    expect(t.feed(b('1 ;a\r\nx\r\n0\r\n\r\n'), 0, 14)).toBe(14);
  });

  it.each([
    ['no size', '\r\n'],
    ['non-hex size', 'g\r\n'],
    ['size then space then CRLF', '5 \r\nhello\r\n'],
    ['bare LF after size', '5\nhello\r\n'],
    ['data longer than size', '2\r\nabc\r\n'],
    ['data not followed by CRLF', '2\r\nab\n'],
    ['size too large', 'fffffffffffffff\r\n'],
    ['negative size', '-1\r\n'],
    ['NUL in extension', '1;a\x00\r\n'],
    ['bare CR at the end', '0\r\n\rX'],
    ['obs-fold in trailer', '0\r\nA: 1\r\n b\r\n\r\n'],
    ['non-token trailer start', '0\r\n(: 1\r\n\r\n'],
    ['control in trailer', '0\r\nA: \x01\r\n\r\n'],
  ])('%s → 400', (_name, s) => {
    const t = new ChunkedBodyTracker();
    expect(codeOf(() => t.feed(b(s), 0, s.length))).toBe('TESSERA_BAD_REQUEST');
  });

  it.each([
    ['trailer without a colon', '0\r\nX-A 1\r\n\r\n'],
    ['whitespace before the colon in a trailer', '0\r\nX-A : 1\r\n\r\n'],
    ['non-token character in a trailer name', '0\r\nX(A: 1\r\n\r\n'],
  ])('%s → 400', (_name, s) => {
    for (const t of [new ChunkedBodyTracker(), new ChunkedBodyTracker('x-spiffe-id')]) expect(codeOf(() => t.feed(b(s), 0, s.length))).toBe('TESSERA_BAD_REQUEST');
  });

  /** What a stripping tracker lets through for `buf` fed in pieces of the given sizes: the bytes and the end. */
  function strip(buf: Buffer, cuts: number[], drop = 'x-spiffe-id'): { out: string; end: number } {
    const t = new ChunkedBodyTracker(drop);
    const out: Buffer[] = [];
    let pos = 0;
    let k = 0;
    let end = -1;
    while (end === -1 && pos < buf.length) {
      const n = Math.min(cuts[k++ % cuts.length]!, buf.length - pos);
      end = t.feed(buf, pos, pos + n);
      out.push(buf.subarray(pos, t.passEnd));
      pos += n;
    }
    if (t.done) out.push(t.takeTrailers() ?? Buffer.alloc(0));
    return { out: Buffer.concat(out).toString('latin1'), end };
  }

  it('with dropTrailer, removes id-header trailers (any case, `_` for `-`) and keeps the rest, in any split', () => {
    const data = '5\r\nhello\r\n0\r\n';
    const withTrailers = `${data}x-spiffe-id: spiffe://evil/a\r\nX-Other: kept\r\nX_SPIFFE_ID: spiffe://evil/b\r\nx-spiffe-idx: kept too\r\n\r\n`;
    const expected = `${data}X-Other: kept\r\nx-spiffe-idx: kept too\r\n\r\n`;
    for (const cuts of [[withTrailers.length + 3], [1], [2], [3], [7], [data.length, 5, 100]]) {
      expect(strip(b(`${withTrailers}GET`), cuts)).toEqual({ out: expected, end: withTrailers.length });
    }
    // Only id-header trailers: the section shrinks to its final CRLF.
    expect(strip(b(`${data}X-Spiffe-Id: x\r\n\r\n`), [1000]).out).toBe(`${data}\r\n`);
  });

  it('with dropTrailer, a body without trailers passes through whole, nothing held', () => {
    const t = new ChunkedBodyTracker('x-spiffe-id');
    const buf = b('5\r\nhello\r\n0\r\n\r\nGET');
    expect(t.feed(buf, 0, buf.length)).toBe(buf.length - 3);
    expect(t.passEnd).toBe(buf.length - 3);
    expect(t.takeTrailers()).toBeUndefined();
    // Without dropTrailer, trailers pass through as they are.
    const plain = new ChunkedBodyTracker();
    const tb = b('0\r\nx-spiffe-id: a\r\n\r\n');
    expect(plain.feed(tb, 0, tb.length)).toBe(tb.length);
    expect(plain.passEnd).toBe(tb.length);
    expect(plain.takeTrailers()).toBeUndefined();
  });

  it('bounds extensions and trailers', () => {
    const t = new ChunkedBodyTracker();
    const ext = `1;${'a'.repeat(5000)}\r\n`;
    expect(codeOf(() => t.feed(b(ext), 0, ext.length))).toBe('TESSERA_BAD_REQUEST');
    t.reset();
    const trailers = `0\r\n${'X: y\r\n'.repeat(5000)}\r\n`;
    expect(codeOf(() => t.feed(b(trailers), 0, trailers.length))).toBe('TESSERA_BAD_REQUEST');
  });
});

describe('HeadReader', () => {
  it('hands over the buffer of a completed head: later heads never overwrite it', () => {
    const reader = new HeadReader('request');
    expect(reader.push(b('POST / HTTP/1.1\r\nHo'))).toBeUndefined();
    expect(reader.pending).toBeGreaterThan(0);
    const h1 = reader.push(b('st: a\r\nContent-Length: 4\r\n\r\nBODY'))!;
    const first = reader.buffer;
    const body1 = first.subarray(reader.bodyStart).toString();
    expect(reader.push(b('GET /other HTTP/1.1\r\nHo'))).toBeUndefined();
    expect(reader.push(b('st: b\r\n\r\nXYZW'))!.target).toBe('/other');
    expect(h1.contentLength).toBe(4);
    expect(body1).toBe('BODY');
    expect(first.subarray(h1.headEnd).toString()).toBe('BODY');
    expect(reader.pending).toBe(0);
  });

  it('reads a 16 KiB head fed one byte at a time, and refuses one byte more with 431', () => {
    const base = 'GET / HTTP/1.1\r\nHost: h\r\nX: \r\n\r\n';
    const exact = b(base.replace('X: ', `X: ${'a'.repeat(16 * 1024 - base.length)}`));
    const reader = new HeadReader('request');
    let head: RequestHead | undefined;
    for (let i = 0; i < exact.length; i++) head = reader.push(exact.subarray(i, i + 1));
    expect(head?.headEnd).toBe(16 * 1024);
    const over = new HeadReader('request');
    expect(codeOf(() => {
      for (let i = 0; i <= exact.length; i++) over.push(b('a'));
    })).toBe('TESSERA_HEADERS_TOO_LARGE');
  });

  it('drops empty lines between messages but counts them against the limit', () => {
    const reader = new HeadReader('request');
    expect(reader.push(b('\r\n\r'))).toBeUndefined();
    expect(reader.push(b('\nGET / HTTP/1.1\r\nHost: h\r\n\r\n'))?.method).toBe('GET');
    expect(codeOf(() => {
      for (let i = 0; i < 9000; i++) reader.push(b('\r\n'));
    })).toBe('TESSERA_HEADERS_TOO_LARGE');
  });
});

// ---------------------------------------------------------------------------------------------
// Properties
describe('parseRequest: path options', () => {
  const parse = (target: string, allow: Partial<PathAllowances>): RequestHead | string | undefined => {
    try {
      return parseRequest(b(`GET ${target} HTTP/1.1\r\nHost: h\r\n\r\n`), undefined, { ...STRICT_PATH, ...allow });
    } catch (err) {
      return (err as TesseraError).code;
    }
  };
  const accepted = (target: string, allow: Partial<PathAllowances>): void => {
    expect(parse(target, allow)).toMatchObject({ target, path: target.split('?')[0] });
  };
  const refusedWith = (target: string, allow: Partial<PathAllowances>): void => {
    expect(parse(target, allow)).toBe('TESSERA_PROXY_PATH_REFUSED');
  };

  it('semicolon: accepts `;` and %3B in segments, the path kept as received', () => {
    for (const t of ['/a;b', '/a;v=1/b;c', '/a%3Bb', '/a;', '/;jsessionid=1', '/a/;x', '/a;b/..c', '/a;/b', '/a;..']) accepted(t, { semicolon: true });
    for (const t of ['/a//b', '/a%00;b', '/a;%C0%AE']) refusedWith(t, { semicolon: true });
  });

  it('semicolon: still refuses a segment whose name (before `;`) is a dot segment, or empty where empty segments are refused', () => {
    for (const t of ['/orders/..;/admin', '/orders/..;x=1/admin', '/a/.;/b', '/..;', '/a/..%3B/b', '/a/;x/b', '/;x/b']) refusedWith(t, { semicolon: true });
    accepted('/a/;x/b', { semicolon: true, emptySegments: true });
    refusedWith('/a/..;/b', { semicolon: true, emptySegments: true });
  });

  it('emptySegments: accepts `//` anywhere, still refuses `;` and dot segments', () => {
    for (const t of ['//', '//a', '/a//b', '/a//', '///']) accepted(t, { emptySegments: true });
    for (const t of ['/a//..', '//./a', '/a//b;c', '//%00']) refusedWith(t, { emptySegments: true });
  });

  it('never accepts control bytes, invalid UTF-8 or escaped unreserved characters, whatever the options', () => {
    for (const t of ['/a%00', '/a?%00', '/%C0%AE', '/%ED%A0%80', '/%2e%2e/a', '/%61']) refusedWith(t, { semicolon: true, emptySegments: true });
  });

  it('HeadReader applies its options', () => {
    const head = (allow?: PathAllowances) => new HeadReader('request', undefined, allow).push(b('GET /a;b//c HTTP/1.1\r\nHost: h\r\n\r\n'));
    expect(codeOf(() => head())).toBe('TESSERA_PROXY_PATH_REFUSED');
    expect(codeOf(() => head({ semicolon: true, emptySegments: false }))).toBe('TESSERA_PROXY_PATH_REFUSED');
    expect(head({ semicolon: true, emptySegments: true })?.path).toBe('/a;b//c');
  });
});

// ---------------------------------------------------------------------------------------------

const tokenChars = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".split('');
const token = fc.array(fc.constantFrom(...tokenChars), { minLength: 1, maxLength: 12 }).map((a) => a.join(''));
const segChars = "abcXYZ019-_~!$&'()*+,=:@".split('');
const segment = fc.array(fc.constantFrom(...segChars), { minLength: 1, maxLength: 8 }).map((a) => a.join(''));
const path = fc.array(segment, { maxLength: 4 }).map((segs) => `/${segs.join('/')}`);
const query = fc.option(fc.array(fc.constantFrom(...segChars, ';', '/', '?'), { maxLength: 10 }).map((a) => a.join('')), { nil: undefined });
const value = fc.array(fc.integer({ min: 0x20, max: 0xff }).filter((c) => c !== 0x7f), { maxLength: 20 })
  .map((cs) => String.fromCharCode(...cs).trim());
const reservedNames = new Set(['host', 'content-length', 'transfer-encoding', 'connection']);
const field = fc.tuple(token.filter((n) => !reservedNames.has(n.toLowerCase())), value);

interface Model {
  method: string;
  target: string;
  path: string;
  version: 'HTTP/1.0' | 'HTTP/1.1';
  headers: Array<[string, string]>;
  contentLength: number | undefined;
  chunked: boolean;
  close: boolean;
}

const model: fc.Arbitrary<Model> = fc.record({
  method: token,
  path,
  query,
  version: fc.constantFrom<'HTTP/1.0' | 'HTTP/1.1'>('HTTP/1.0', 'HTTP/1.1'),
  fields: fc.array(field, { maxLength: 10 }),
  framing: fc.oneof(fc.constant<'none'>('none'), fc.constant<'chunked'>('chunked'), fc.nat({ max: 1e12 })),
  close: fc.boolean(),
}).map(({ method, path: p, query: q, version, fields, framing, close }) => {
  const headers: Array<[string, string]> = [['Host', 'svc.local'], ...fields];
  const chunked = framing === 'chunked' && version === 'HTTP/1.1';
  const contentLength = typeof framing === 'number' ? framing : undefined;
  if (chunked) headers.push(['Transfer-Encoding', 'chunked']);
  if (contentLength !== undefined) headers.push(['Content-Length', String(contentLength)]);
  if (close) headers.push(['Connection', 'close']);
  return { method, target: q === undefined ? p : `${p}?${q}`, path: p, version, headers, contentLength, chunked, close };
});

function serialize(m: Model, pad = ''): Buffer {
  return b(`${pad}${m.method} ${m.target} ${m.version}\r\n${m.headers.map(([n, v]) => `${n}: ${v}\r\n`).join('')}\r\n`);
}

function checkAgainst(h: RequestHead | undefined, m: Model, len: number): void {
  expect(h).toBeDefined();
  expect(h!).toMatchObject({ method: m.method, target: m.target, path: m.path, version: m.version, headers: m.headers, contentLength: m.contentLength, chunked: m.chunked, headEnd: len });
  expect(h!.keepAlive).toBe(m.version === 'HTTP/1.1' && !m.close);
}

describe('properties', () => {
  it('never throws anything but a 400/431 TesseraError on arbitrary bytes', () => {
    const bytes = fc.oneof(
      fc.uint8Array({ maxLength: 300 }),
      // Mostly-valid heads with random bytes spliced in reach deeper into the parser.
      fc.tuple(model, fc.nat(), fc.uint8Array({ minLength: 1, maxLength: 4 })).map(([m, at, junk]) => {
        const base = serialize(m);
        const i = at % base.length;
        return Buffer.concat([base.subarray(0, i), junk, base.subarray(i)]);
      }),
    );
    fc.assert(fc.property(bytes, (u8) => {
      const buf = Buffer.from(u8);
      for (const fn of [() => parseRequest(buf), () => new HeadReader('request').push(buf), () => {
        const end = findHeadEnd(buf, 0, 0);
        if (end !== -1) parseResponseHead(buf, 0, end);
      }, () => new ChunkedBodyTracker().feed(buf, 0, buf.length)]) {
        try {
          fn();
        } catch (err) {
          if (!(err instanceof TesseraError) || !['TESSERA_BAD_REQUEST', 'TESSERA_PROXY_PATH_REFUSED', 'TESSERA_HEADERS_TOO_LARGE'].includes(err.code)) throw err;
        }
      }
    }), { numRuns: 3000 });
  });

  it('parses back every generated valid head (round trip)', () => {
    fc.assert(fc.property(model, fc.constantFrom('', '\r\n'), (m, pad) => {
      const buf = serialize(m, pad);
      checkAgainst(parseRequest(buf), m, buf.length);
    }), { numRuns: 1000 });
  });

  it('gives the same result fed byte by byte or in random pieces', () => {
    fc.assert(fc.property(model, fc.array(fc.integer({ min: 1, max: 40 }), { maxLength: 20 }), fc.boolean(), (m, cuts, byteByByte) => {
      const body = b('NEXT');
      const buf = Buffer.concat([serialize(m), body]);
      const reader = new HeadReader('request');
      let head: RequestHead | undefined;
      let pos = 0;
      let k = 0;
      while (head === undefined && pos < buf.length) {
        const n = byteByByte ? 1 : (cuts[k++ % Math.max(1, cuts.length)] ?? 7);
        const chunk = Buffer.from(buf.subarray(pos, pos + n)); // a copy, as sockets give
        pos += chunk.length;
        head = reader.push(chunk);
      }
      const rest = Buffer.concat([reader.buffer.subarray(reader.bodyStart), buf.subarray(pos)]);
      expect(rest.toString('latin1')).toBe('NEXT');
      expect(head).toMatchObject({ method: m.method, target: m.target, headers: m.headers, contentLength: m.contentLength, chunked: m.chunked });
    }), { numRuns: 500 });
  });

  it('finds the end of any generated chunked body in any split, and only there', () => {
    const chunk = fc.tuple(fc.uint8Array({ minLength: 1, maxLength: 50 }), fc.option(token, { nil: undefined }));
    fc.assert(fc.property(fc.array(chunk, { maxLength: 8 }), fc.array(field, { maxLength: 3 }), fc.array(fc.integer({ min: 1, max: 30 }), { minLength: 1, maxLength: 10 }), (chunks, trailers, cuts) => {
      const parts: Buffer[] = [];
      for (const [data, ext] of chunks) parts.push(b(`${data.length.toString(16)}${ext === undefined ? '' : `;${ext}`}\r\n`), Buffer.from(data), b('\r\n'));
      parts.push(b(`0\r\n${trailers.map(([n, v]) => `${n}: ${v}\r\n`).join('')}\r\n`));
      const body = Buffer.concat(parts);
      const buf = Buffer.concat([body, b('GET')]);
      const t = new ChunkedBodyTracker();
      let pos = 0;
      let k = 0;
      let end = -1;
      while (end === -1 && pos < buf.length) {
        const n = Math.min(cuts[k++ % cuts.length]!, buf.length - pos);
        end = t.feed(buf, pos, pos + n);
        pos += n;
      }
      expect(end).toBe(body.length);
    }), { numRuns: 500 });
  });

  it('a stripping tracker forwards the body with exactly the non-id trailers, in any split', () => {
    const idSpelling = fc.constantFrom('x-spiffe-id', 'X-SPIFFE-ID', 'x_spiffe_id', 'X_Spiffe-Id');
    const trailer = fc.oneof(field.map(([n, v]) => ({ line: `${n}: ${v}\r\n`, keep: fold(n) !== 'x-spiffe-id' })), fc.tuple(idSpelling, value).map(([n, v]) => ({ line: `${n}:${v}\r\n`, keep: false })));
    fc.assert(fc.property(fc.uint8Array({ maxLength: 40 }), fc.array(trailer, { maxLength: 4 }), fc.array(fc.integer({ min: 1, max: 30 }), { minLength: 1, maxLength: 10 }), (data, trailers, cuts) => {
      const head = data.length > 0 ? Buffer.concat([b(`${data.length.toString(16)}\r\n`), Buffer.from(data), b('\r\n')]) : Buffer.alloc(0);
      const body = Buffer.concat([head, b(`0\r\n${trailers.map((x) => x.line).join('')}\r\n`)]);
      const t = new ChunkedBodyTracker('x-spiffe-id');
      const buf = Buffer.concat([body, b('NEXT')]);
      const out: Buffer[] = [];
      let pos = 0;
      let k = 0;
      let end = -1;
      while (end === -1 && pos < buf.length) {
        const n = Math.min(cuts[k++ % cuts.length]!, buf.length - pos);
        end = t.feed(buf, pos, pos + n);
        expect(t.passEnd).toBeGreaterThanOrEqual(pos);
        expect(t.passEnd).toBeLessThanOrEqual(end === -1 ? pos + n : end);
        out.push(buf.subarray(pos, t.passEnd));
        pos += n;
      }
      expect(end).toBe(body.length);
      out.push(t.takeTrailers() ?? Buffer.alloc(0));
      const expected = Buffer.concat([head, b(`0\r\n${trailers.filter((x) => x.keep).map((x) => x.line).join('')}\r\n`)]);
      expect(Buffer.concat(out).toString('latin1')).toBe(expected.toString('latin1'));
    }), { numRuns: 500 });
  });
});

// ---------------------------------------------------------------------------------------------
// Path properties
// ---------------------------------------------------------------------------------------------

function fold(name: string): string {
  return name.replace(/[A-Z]/g, (ch) => ch.toLowerCase()).replaceAll('_', '-');
}

/** The bytes a path stands for once its escapes are decoded. */
function decodePath(p: string): Buffer {
  const out: number[] = [];
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '%') {
      out.push(parseInt(p.slice(i + 1, i + 3), 16));
      i += 2;
    } else out.push(p.charCodeAt(i));
  }
  return Buffer.from(out);
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

describe('path properties', () => {
  // Pieces chosen to build every refused shape and plenty of accepted ones.
  const piece = fc.constantFrom(
    'a', 'b', '.', '..', '/', '/', ';', '=', '%2e', '%2E', '%3B', '%3b', '%00', '%1f', '%7F', '%0A', '%20', '%25', '%2F', '%41',
    '%C0', '%AE', '%C3', '%A9', '%E2', '%82', '%AC', '%E0', '%A0', '%ED', '%9F', '%BF', '%F0', '%9F', '%98', '%F4', '%8F', '%90', '%80', '%FF',
  );
  const rawPath = fc.array(piece, { maxLength: 12 }).map((ps) => `/${ps.join('')}`);
  const allowances = fc.record({ semicolon: fc.boolean(), emptySegments: fc.boolean() });

  it('any path the parser accepts decodes to valid UTF-8 without control bytes, dot segments, and (unless allowed) `;` or empty segments; what is authorized is what is forwarded', () => {
    fc.assert(fc.property(rawPath, fc.option(fc.constantFrom('x=1', 'a=%00', 'q=%C0%AE;b', '%7f'), { nil: undefined }), allowances, (p, q, allow) => {
      const target = q === undefined ? p : `${p}?${q}`;
      let head: RequestHead | undefined;
      try {
        head = parseRequest(b(`GET ${target} HTTP/1.1\r\nHost: h\r\n\r\n`), undefined, allow);
      } catch (err) {
        expect((err as TesseraError).code).toMatch(/^TESSERA_(BAD_REQUEST|PROXY_PATH_REFUSED)$/);
        return;
      }
      expect(head!.path).toBe(p);
      const decoded = decodePath(p);
      expect(() => utf8.decode(decoded)).not.toThrow();
      for (const c of decoded) expect(c >= 0x20 && c !== 0x7f).toBe(true);
      for (const c of decodePath(q ?? '')) expect(c >= 0x20 && c !== 0x7f).toBe(true);
      if (!allow.semicolon) expect(decoded.includes(0x3b)).toBe(false);
      const segments = p.slice(1).split('/');
      segments.forEach((seg, i) => {
        const name = decodePath(seg.split(/;|%3b/i)[0]!).toString('latin1');
        expect(name === '.' || name === '..').toBe(false);
        if (!allow.emptySegments && i < segments.length - 1) expect(name).not.toBe('');
      });
      // The authorizer gets head.path; the app gets the forwarded request line.
      const line = forwardRequestHead(head!, 'x-spiffe-id', 'spiffe://td/a').toString('latin1').split('\r\n')[0]!;
      expect(line).toBe(`GET ${target} HTTP/1.1`);
      expect(line.slice(4, 4 + head!.path.length)).toBe(head!.path);
      expect([' ', '?']).toContain(line[4 + head!.path.length]);
      // Options only ever widen what is accepted.
      expect(() => parseRequest(b(`GET ${target} HTTP/1.1\r\nHost: h\r\n\r\n`), undefined, { semicolon: true, emptySegments: true })).not.toThrow();
    }), { numRuns: 5000 });
  });

  it('accepts every path of plain segments and well-formed UTF-8 escapes', () => {
    const char = fc.oneof(fc.constantFrom('a', 'Z', '0', '-', '.', '~', '%20', '%25', '%3F'), fc.integer({ min: 0x80, max: 0x10ffff }).filter((cp) => cp < 0xd800 || cp > 0xdfff)
      .map((cp) => [...Buffer.from(String.fromCodePoint(cp), 'utf8')].map((x) => `%${x.toString(16).toUpperCase().padStart(2, '0')}`).join('')));
    const seg = fc.array(char, { minLength: 1, maxLength: 5 }).map((a) => a.join('')).filter((x) => x !== '.' && x !== '..');
    fc.assert(fc.property(fc.array(seg, { maxLength: 4 }), fc.boolean(), (segs, slash) => {
      const p = `/${segs.join('/')}${slash && segs.length > 0 ? '/' : ''}`;
      expect(req(`GET ${p} HTTP/1.1\r\nHost: h\r\n\r\n`).path).toBe(p);
    }), { numRuns: 1000 });
  });
});
