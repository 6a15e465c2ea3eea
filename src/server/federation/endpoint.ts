/**
 * The `https_web` bundle endpoint (SPIFFE_Federation.md §5.2.1): a small HTTPS listener with a
 * certificate the operator gives (from a Web PKI CA), serving our SPIFFE bundle (JWK Set, with
 * `spiffe_sequence` and `spiffe_refresh_hint`) at `GET /` and `GET /v1/bundle`. Nothing else is served;
 * any other method or path gets 404/405 with a TESSERA_* body. Clients check it like any web server.
 *
 * It is public (anyone may fetch a bundle), so it is bounded: each client address gets a token
 * bucket (`rateLimit`, default 5 requests a second, burst 20: a federated control plane fetches
 * once per refresh hint) and is answered 429 TESSERA_RATE_LIMITED with Retry-After beyond it; at
 * most `maxConnections` (default 256) connections at once; TLS handshakes and requests time out.
 */
import { createServer, type Server } from 'node:https';
import { TesseraError } from '../../core/errors.js';
import { RateLimiter, type RateLimit } from '../../core/rate-limit.js';
import { listenOn } from '../../common/tls-source.js';

export const DEFAULT_BUNDLE_ENDPOINT_RATE: RateLimit = { perSecond: 5, burst: 20 };

export interface BundleEndpointOptions {
  host: string;
  port: number;
  certPem: string;
  keyPem: string;
  /** The bundle document, built by the caller (cached there per bundle sequence). */
  bundle: () => string;
  /** Requests per client address (default DEFAULT_BUNDLE_ENDPOINT_RATE). */
  rateLimit?: RateLimit;
  /** Connections open at once (default 256). */
  maxConnections?: number;
}

export async function startBundleEndpoint(o: BundleEndpointOptions): Promise<{ server: Server; port: number; close(): Promise<void> }> {
  const send = (res: import('node:http').ServerResponse, status: number, text: string): void => {
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  };
  const error = (code: 'TESSERA_NOT_FOUND' | 'TESSERA_BAD_REQUEST' | 'TESSERA_RATE_LIMITED', message?: string): string => JSON.stringify({ error: new TesseraError(code, message).toJSON() });
  const limiter = new RateLimiter(o.rateLimit ?? DEFAULT_BUNDLE_ENDPOINT_RATE);
  const server = createServer({ cert: o.certPem, key: o.keyPem, minVersion: 'TLSv1.2', requestTimeout: 10_000, headersTimeout: 10_000, maxHeaderSize: 8192, handshakeTimeout: 10_000 }, (req, res) => {
    const client = req.socket.remoteAddress ?? '';
    if (!limiter.take(client)) {
      res.setHeader('retry-after', String(limiter.retryAfterSeconds(client)));
      return send(res, 429, error('TESSERA_RATE_LIMITED', 'too many bundle requests from this address'));
    }
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/' && path !== '/v1/bundle') return send(res, 404, error('TESSERA_NOT_FOUND'));
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, error('TESSERA_BAD_REQUEST', 'the bundle endpoint answers GET only'));
    try {
      send(res, 200, o.bundle());
    } catch {
      send(res, 503, JSON.stringify({ error: new TesseraError('TESSERA_UNAVAILABLE').toJSON() }));
    }
  });
  server.maxConnections = o.maxConnections ?? 256;
  server.on('tlsClientError', (_err, socket) => socket.destroy());
  const port = await listenOn(server, o, 'the bundle endpoint', () => undefined);
  return {
    server, port,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}
