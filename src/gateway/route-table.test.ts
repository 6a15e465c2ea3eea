import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { TesseraError } from '../core/errors.js';
import { RouteTable, hostOf, parseRoute } from './route-table.js';

describe('--route', () => {
  it('parses host, prefix, name and app address; derives the name', () => {
    expect(parseRoute('wiki.example.com=http://127.0.0.1:3000')).toEqual({ name: 'wiki', host: 'wiki.example.com', prefix: '/', upstream: { host: '127.0.0.1', port: 3000 } });
    expect(parseRoute('Wiki.Example.com/docs/v2/=http://127.0.0.1:80')).toMatchObject({ name: 'wiki-docs-v2', host: 'wiki.example.com', prefix: '/docs/v2', upstream: { port: 80 } });
    expect(parseRoute('adm:wiki.example.com/admin=http://[::1]:9')).toMatchObject({ name: 'adm', prefix: '/admin', upstream: { host: '::1', port: 9 } });
  });

  it('refuses malformed routes with TESSERA_CONFIG_INVALID', () => {
    for (const bad of ['', 'wiki', '=http://127.0.0.1:1', 'wiki.example.com=https://127.0.0.1:1', 'wiki.example.com=http://127.0.0.1:1/path', 'wiki.example.com/../x=http://127.0.0.1:1',
      'wi ki=http://127.0.0.1:1', 'Bad_Name:wiki=http://127.0.0.1:1', 'wiki.example.com/a%2f=http://127.0.0.1:1', 'wiki=not a url', 'x:-bad-.com=http://127.0.0.1:1']) {
      expect(() => parseRoute(bad), bad).toThrow(TesseraError);
    }
  });

  it('never throws anything but a TesseraError (fast-check)', () => {
    fc.assert(fc.property(fc.string({ maxLength: 80 }), (s) => {
      try {
        parseRoute(s);
      } catch (err) {
        expect(err).toBeInstanceOf(TesseraError);
        expect((err as TesseraError).code).toBe('TESSERA_CONFIG_INVALID');
      }
    }), { numRuns: 2000 });
  });
});

describe('RouteTable', () => {
  const table = new RouteTable(['wiki.x.test=http://127.0.0.1:1', 'docs:wiki.x.test/docs=http://127.0.0.1:2', 'deep:wiki.x.test/docs/api=http://127.0.0.1:3', 'other.x.test=http://127.0.0.1:4'].map(parseRoute));

  it('picks the host\'s longest prefix on a segment boundary, ignoring the port and case', () => {
    expect(table.match('wiki.x.test', '/')?.name).toBe('wiki');
    expect(table.match('WIKI.x.test:8443', '/docs')?.name).toBe('docs');
    expect(table.match('wiki.x.test', '/docs/a')?.name).toBe('docs');
    expect(table.match('wiki.x.test', '/docs/api/v1')?.name).toBe('deep');
    expect(table.match('wiki.x.test', '/docsx')?.name).toBe('wiki');
    expect(table.match('other.x.test', '/docs')?.name).toBe('other');
    expect(table.match('nope.x.test', '/')).toBeUndefined();
    expect(table.match(undefined, '/')).toBeUndefined();
    expect(table.match('wiki.x.test:99999999', '/')).toBeUndefined();
  });

  it('refuses two routes with one name or one host and prefix', () => {
    expect(() => new RouteTable([parseRoute('a:x.test=http://127.0.0.1:1'), parseRoute('a:y.test=http://127.0.0.1:1')])).toThrow(/named a/);
    expect(() => new RouteTable([parseRoute('a:x.test/p=http://127.0.0.1:1'), parseRoute('b:x.test/p/=http://127.0.0.1:1')])).toThrow(/two routes/);
  });

  it('hostOf takes the name of a Host header', () => {
    expect(hostOf('A.b:1')).toBe('a.b');
    expect(hostOf('a b')).toBeUndefined();
    expect(hostOf('[::1]:3')).toBeUndefined();
  });
});
