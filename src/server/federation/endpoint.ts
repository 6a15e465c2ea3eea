/**
 * The `https_web` bundle endpoint (SPIFFE_Federation.md §5.2.1): a small HTTPS listener with a
 * certificate the operator gives (from a Web PKI CA), serving our SPIFFE bundle (JWK Set, with
 * `spiffe_sequence` and `spiffe_refresh_hint`) at `GET /` and `GET /v1/bundle`. Nothing else is served;
 * any other method or path gets 404/405 with a TESSERA_* body. Clients check it like any web server.
 */
import { createServer, type Server } from 'node:https';
import { TesseraError } from '../../core/errors.js';
import { listenOn } from '../../common/tls-source.js';

export interface BundleEndpointOptions {
  host: string;
  port: number;
  certPem: string;
  keyPem: string;
  /** The bundle document, built by the caller (cached there per bundle sequence). */
  bundle: () => string;
}

export async function startBundleEndpoint(o: BundleEndpointOptions): Promise<{ server: Server; port: number; close(): Promise<void> }> {
  const send = (res: import('node:http').ServerResponse, status: number, text: string): void => {
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  };
  const error = (code: 'TESSERA_NOT_FOUND' | 'TESSERA_BAD_REQUEST', message?: string): string => JSON.stringify({ error: new TesseraError(code, message).toJSON() });
  const server = createServer({ cert: o.certPem, key: o.keyPem, minVersion: 'TLSv1.2', requestTimeout: 10_000, headersTimeout: 10_000, maxHeaderSize: 8192 }, (req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/' && path !== '/v1/bundle') return send(res, 404, error('TESSERA_NOT_FOUND'));
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, error('TESSERA_BAD_REQUEST', 'the bundle endpoint answers GET only'));
    try {
      send(res, 200, o.bundle());
    } catch {
      send(res, 503, JSON.stringify({ error: new TesseraError('TESSERA_UNAVAILABLE').toJSON() }));
    }
  });
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
