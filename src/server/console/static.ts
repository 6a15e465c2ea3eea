/**
 * The web console's built assets (`npm run build:console` → dist/console), served by the control
 * plane under `/console/`. The files are read once at start into memory: a request is answered by
 * looking its path up in that table, never by opening a path built from the request, so no URL can
 * reach a file outside the build (traversal is refused before the lookup anyway, with a 400).
 *
 * - `/console/` and every extension-less path below it (the console's client-side routes, e.g.
 *   `/console/map`) get index.html, with a strict Content-Security-Policy and `no-cache`.
 * - Hashed assets (`/console/assets/NAME-HASH.js`) are immutable: cached for a year.
 * - A missing asset is a 404 (TESSERA_NOT_FOUND); a console that was not built, a 503
 *   (TESSERA_CONSOLE_NOT_BUILT).
 */
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { TesseraError } from '../../core/errors.js';

/**
 * The console's CSP: its own scripts and styles only (no inline script or style element, no eval),
 * API calls to the same origin, and never framed (clickjacking).
 */
export const CONSOLE_CSP = [
  "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self'", "font-src 'self'", "connect-src 'self'",
  "object-src 'none'", "base-uri 'none'", "form-action 'self'", "frame-ancestors 'none'",
].join('; ');

const TYPES: Record<string, string> = {
  html: 'text/html; charset=utf-8', js: 'text/javascript; charset=utf-8', css: 'text/css; charset=utf-8', svg: 'image/svg+xml',
  png: 'image/png', ico: 'image/x-icon', woff2: 'font/woff2', json: 'application/json', txt: 'text/plain; charset=utf-8',
};
/** Bounds on what is loaded: a console build is a few hundred kilobytes. */
const MAX_FILES = 500;
const MAX_BYTES = 32 * 1024 * 1024;
/** Vite's hashed file names: NAME-HASH.EXT (the hash is 8 base64url characters). */
const HASHED = /^assets\/[^/]+-[A-Za-z0-9_-]{8}\.[a-z0-9]+$/;
/** A client-side route: lowercase words separated by `/` or `-`, no extension. */
const CLIENT_ROUTE = /^(?:[a-z0-9-]{1,64}(?:\/[a-z0-9-]{1,64}){0,3})?$/;

interface Asset {
  body: Buffer;
  type: string;
  etag: string;
  cache: string;
}

export interface ConsoleAssets {
  dir: string;
  files: ReadonlyMap<string, Asset>;
}

/** dist/console of this checkout: found from this module's own place (src/ under vitest, dist/src/ when built). */
export function defaultConsoleDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'package.json'))) return join(dir, 'dist', 'console');
    dir = dirname(dir);
  }
  return join(process.cwd(), 'dist', 'console');
}

/** The built console in `dir`, or undefined when it holds no index.html. Only regular files with known types are taken. */
export function loadConsoleAssets(dir: string): ConsoleAssets | undefined {
  if (!existsSync(join(dir, 'index.html'))) return undefined;
  const files = new Map<string, Asset>();
  let bytes = 0;
  const walk = (rel: string): void => {
    for (const name of readdirSync(join(dir, rel))) {
      const path = rel ? `${rel}/${name}` : name;
      const st = lstatSync(join(dir, path));
      if (st.isDirectory()) walk(path);
      if (!st.isFile()) continue; // symbolic links and specials are not part of a build
      const type = TYPES[name.slice(name.lastIndexOf('.') + 1)];
      if (!type || name.lastIndexOf('.') <= 0) continue;
      if (files.size >= MAX_FILES || (bytes += st.size) > MAX_BYTES) throw new TesseraError('TESSERA_CONFIG_INVALID', `${dir} holds more than a console build (${MAX_FILES} files, ${MAX_BYTES} bytes)`);
      const body = readFileSync(join(dir, path));
      files.set(path, {
        body, type,
        etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"`,
        cache: HASHED.test(path) ? 'public, max-age=31536000, immutable' : 'no-cache',
      });
    }
  };
  walk('');
  return { dir, files };
}

/**
 * The path below `/console/` a request names, decoded, or TESSERA_BAD_REQUEST for one that is not
 * in normal form: dot segments, empty segments, backslashes, encoded slashes, control characters.
 * Undefined for `/console` itself (redirected to `/console/`).
 */
export function consolePath(url: string): string | undefined {
  const raw = url.split('?')[0]!;
  if (raw === '/console') return undefined;
  const bad = (): TesseraError => new TesseraError('TESSERA_BAD_REQUEST', 'the console path is not in normal form');
  if (!raw.startsWith('/console/')) throw bad();
  const rest = raw.slice('/console/'.length);
  if (/%2f|%5c|%00/i.test(rest)) throw bad();
  let decoded: string;
  try {
    decoded = decodeURIComponent(rest);
  } catch {
    throw bad();
  }
  // eslint-disable-next-line no-control-regex
  if (/[\\\x00-\x1f\x7f]/.test(decoded)) throw bad();
  if (decoded !== '' && decoded.split('/').some((seg, i, all) => seg === '.' || seg === '..' || (seg === '' && i < all.length - 1))) throw bad();
  return decoded;
}

function send(reply: FastifyReply, req: FastifyRequest, asset: Asset): FastifyReply {
  void reply
    .header('content-security-policy', CONSOLE_CSP)
    .header('x-content-type-options', 'nosniff')
    .header('x-frame-options', 'DENY')
    .header('referrer-policy', 'no-referrer')
    .header('cross-origin-opener-policy', 'same-origin')
    .header('cross-origin-resource-policy', 'same-origin')
    .header('strict-transport-security', 'max-age=31536000')
    .header('cache-control', asset.cache)
    .header('etag', asset.etag);
  if (req.headers['if-none-match'] === asset.etag) return reply.code(304).send();
  return reply.code(200).type(asset.type).send(asset.body);
}

/**
 * Serves `assets` (undefined: not built) under `/console/`. Public routes: the console's code holds
 * no secret, and every piece of data it shows comes from the authenticated API.
 */
export function consoleRoutes(app: FastifyInstance, assets: ConsoleAssets | undefined): void {
  const handler = async (req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> => {
    const path = consolePath(req.url);
    if (path === undefined) return reply.code(308).header('location', '/console/').send();
    if (!assets) throw new TesseraError('TESSERA_CONSOLE_NOT_BUILT', 'the web console is not built: run npm run build:console (or npm run build)');
    const file = assets.files.get(path);
    if (file && path !== 'index.html') return send(reply, req, file);
    // History-API routing: a client-side route (no extension) gets the page, which routes itself.
    if (path === 'index.html' || CLIENT_ROUTE.test(path)) return send(reply, req, assets.files.get('index.html')!);
    throw new TesseraError('TESSERA_NOT_FOUND', 'no such console asset');
  };
  app.get('/console', handler);
  app.get('/console/*', handler);
}
