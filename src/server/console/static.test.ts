/**
 * The console's static serving on a real control plane: headers (CSP, caching, ETag), client-side
 * routes, 404 for missing assets, 503 when not built, and request paths that try to leave the build
 * (sent byte for byte: a URL parser would normalize them first).
 */
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startControlPlane, type TestControlPlane } from '../../../test/support/server.js';
import { CONSOLE_CSP, consolePath, loadConsoleAssets } from './static.js';

interface Res { status: number; headers: Record<string, string | string[] | undefined>; body: string }

/** GET `path` exactly as written (no URL normalization), without a client certificate. */
function getRaw(t: TestControlPlane, path: string, headers: Record<string, string> = {}): Promise<Res> {
  const { port } = new URL(t.cp.url);
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port, path, method: 'GET', headers, ca: t.adminTls.ca, agent: false, timeout: 10_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end();
  });
}

const INDEX = '<!doctype html><html lang="en"><head><title>t</title><script type="module" src="/console/assets/index-AbCd1234.js"></script></head><body></body></html>';

describe('console static serving', () => {
  let t: TestControlPlane;
  let bare: TestControlPlane;
  let dir: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-console-'));
    mkdirSync(join(dir, 'assets'));
    writeFileSync(join(dir, 'index.html'), INDEX);
    writeFileSync(join(dir, 'assets', 'index-AbCd1234.js'), 'console.log(1)');
    writeFileSync(join(dir, 'assets', 'style-XyZ_9-8a.css'), 'body{}');
    writeFileSync(join(dir, 'favicon.svg'), '<svg xmlns="http://www.w3.org/2000/svg"/>');
    // Not part of a build: a link out of the directory, a file of unknown type, a dotfile.
    symlinkSync('/etc/hostname', join(dir, 'assets', 'link-AbCd1234.js'));
    writeFileSync(join(dir, 'secret.key'), 'nope');
    writeFileSync(join(dir, '.env'), 'nope');
    t = await startControlPlane({ consoleDir: dir });
    bare = await startControlPlane({ consoleDir: join(dir, 'missing') });
  });
  afterAll(async () => {
    await t?.close();
    await bare?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves index.html with a strict CSP, no-cache and framing refused', async () => {
    for (const path of ['/console/', '/console/index.html']) {
      const res = await getRaw(t, path);
      expect(res.status, path).toBe(200);
      expect(res.body).toBe(INDEX);
      expect(res.headers['content-type']).toBe('text/html; charset=utf-8');
      expect(res.headers['content-security-policy']).toBe(CONSOLE_CSP);
      expect(res.headers['cache-control']).toBe('no-cache');
      expect(res.headers['x-frame-options']).toBe('DENY');
      expect(res.headers['x-content-type-options']).toBe('nosniff');
      expect(res.headers['referrer-policy']).toBe('no-referrer');
    }
    const csp = CONSOLE_CSP.split('; ');
    expect(csp).toContain("default-src 'self'");
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(CONSOLE_CSP).not.toMatch(/unsafe-inline|unsafe-eval|https?:|\*/);
  });

  it('answers client-side routes with the page, /console with a redirect', async () => {
    for (const path of ['/console/map', '/console/sign-in', '/console/risk/some-id', '/console/map?window=5m']) {
      const res = await getRaw(t, path);
      expect([res.status, res.body], path).toEqual([200, INDEX]);
    }
    const res = await getRaw(t, '/console');
    expect([res.status, res.headers.location]).toEqual([308, '/console/']);
  });

  it('caches hashed assets for a year and answers If-None-Match with 304', async () => {
    const js = await getRaw(t, '/console/assets/index-AbCd1234.js');
    expect([js.status, js.body, js.headers['content-type']]).toEqual([200, 'console.log(1)', 'text/javascript; charset=utf-8']);
    expect(js.headers['cache-control']).toBe('public, max-age=31536000, immutable');
    expect((await getRaw(t, '/console/assets/style-XyZ_9-8a.css')).headers['content-type']).toBe('text/css; charset=utf-8');
    const again = await getRaw(t, '/console/assets/index-AbCd1234.js', { 'if-none-match': String(js.headers.etag) });
    expect([again.status, again.body]).toEqual([304, '']);
    // A file without a content hash in its name is revalidated.
    expect((await getRaw(t, '/console/favicon.svg')).headers['cache-control']).toBe('no-cache');
  });

  it('404 for a missing asset and for files that are not part of a build', async () => {
    for (const path of ['/console/assets/nope-AbCd1234.js', '/console/assets/link-AbCd1234.js', '/console/secret.key', '/console/.env', '/console/Map', '/console/a.b/c', '/console/assets/']) {
      const res = await getRaw(t, path);
      expect([res.status, JSON.parse(res.body).error.code], path).toEqual([404, 'TESSERA_NOT_FOUND']);
    }
  });

  it('refuses paths that are not in normal form (traversal, encoded separators, control bytes) with 400', async () => {
    const bad = [
      '/console/../admin/admin.key', '/console/assets/../../tessera.db', '/console/./index.html', '/console/assets//index-AbCd1234.js',
      '/console/%2e%2e/tessera.db', '/console/%2E%2E%2Fbundle.pem', '/console/assets%2findex-AbCd1234.js', '/console/..%5c..%5ctessera.db',
      '/console/%00index.html', '/console/index.html%00.js', '/console/%ZZ', '/console/assets\\..\\index.html', '/console/%0aSet-Cookie:x',
    ];
    for (const path of bad) {
      const res = await getRaw(t, path);
      expect(res.status, path).toBe(400);
      expect(JSON.parse(res.body).error.code, path).toBe('TESSERA_BAD_REQUEST');
      expect(res.body).not.toContain('BEGIN');
    }
    expect(t.logs.filter((l) => l.includes('internal error'))).toEqual([]);
  });

  it('503 TESSERA_CONSOLE_NOT_BUILT when there is no build; the API is unaffected', async () => {
    const res = await getRaw(bare, '/console/map');
    expect([res.status, JSON.parse(res.body).error.code]).toEqual([503, 'TESSERA_CONSOLE_NOT_BUILT']);
    expect((await getRaw(bare, '/healthz')).status).toBe(200);
  });

  it('consolePath and loadConsoleAssets', () => {
    expect(consolePath('/console')).toBeUndefined();
    expect(consolePath('/console/')).toBe('');
    expect(consolePath('/console/assets/a%20b.js?x=1')).toBe('assets/a b.js');
    expect(() => consolePath('/consolex/a')).toThrow(expect.objectContaining({ code: 'TESSERA_BAD_REQUEST' }));
    expect(loadConsoleAssets(join(dir, 'missing'))).toBeUndefined();
    const files = [...loadConsoleAssets(dir)!.files.keys()].sort();
    expect(files).toEqual(['assets/index-AbCd1234.js', 'assets/style-XyZ_9-8a.css', 'favicon.svg', 'index.html']);
  });
});
