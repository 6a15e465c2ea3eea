import type { Socket } from 'node:net';
import type { FastifyError, FastifyReply } from 'fastify';
import { ERROR_CODES, TesseraError, isTesseraError } from '../../core/errors.js';

/**
 * Error mapping shared by every fastify-based HTTPS API of Tessera (the control plane, the key
 * server): one response shape `{ error: { code, message } }` with a stable code, also for what
 * fastify and Node's HTTP parser refuse before any route runs.
 */
const FASTIFY_CODES: Record<string, keyof typeof ERROR_CODES> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'TESSERA_UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_BODY_TOO_LARGE: 'TESSERA_PAYLOAD_TOO_LARGE',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'TESSERA_BAD_REQUEST',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'TESSERA_BAD_REQUEST',
  FST_ERR_CTP_INVALID_JSON_BODY: 'TESSERA_BAD_REQUEST',
};

/** Maps any error thrown in a route or by fastify to a TesseraError (unknown → TESSERA_INTERNAL). */
export function toTesseraError(err: FastifyError | Error): TesseraError {
  if (isTesseraError(err)) return err;
  const code = (err as FastifyError).code;
  if (code && FASTIFY_CODES[code]) return new TesseraError(FASTIFY_CODES[code]!);
  const status = (err as FastifyError).statusCode;
  if (err instanceof SyntaxError || (status !== undefined && status >= 400 && status < 500)) {
    return new TesseraError('TESSERA_BAD_REQUEST', 'the request body is not valid JSON');
  }
  return new TesseraError('TESSERA_INTERNAL');
}

/**
 * fastify's `clientErrorHandler`: errors below HTTP (oversized head, bad framing, timeouts) never
 * reach a route; answer them in the same shape, then close.
 */
export function clientError(err: NodeJS.ErrnoException, socket: Socket): void {
  const code = err.code === 'HPE_HEADER_OVERFLOW' ? 'TESSERA_HEADERS_TOO_LARGE'
    : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 'TESSERA_REQUEST_TIMEOUT' : 'TESSERA_BAD_REQUEST';
  if (socket.writable && !socket.destroyed) {
    const e = new TesseraError(code);
    const body = JSON.stringify({ error: e.toJSON() });
    const reason = e.status === 431 ? 'Request Header Fields Too Large' : e.status === 408 ? 'Request Timeout' : 'Bad Request';
    socket.end(`HTTP/1.1 ${e.status} ${reason}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
  } else {
    socket.destroy();
  }
}

/**
 * The fastify server options every Tessera HTTPS API shares (the control plane, the key server):
 * no fastify logger (bodies could carry secrets), prototype poisoning refused, bounded keep-alive
 * and request times, connections closed on shutdown, and router- and parser-level refusals in the
 * API's error shape. Callers add `https`, `bodyLimit` and anything of their own.
 */
export const HARDENED_SERVER_OPTIONS = {
  logger: false,
  onProtoPoisoning: 'error',
  onConstructorPoisoning: 'error',
  keepAliveTimeout: 65_000,
  requestTimeout: 30_000,
  return503OnClosing: true,
  forceCloseConnections: true,
  // Router-level refusals (bad URL encoding, over-long parameter) get the same error shape.
  frameworkErrors: (_err: unknown, _req: unknown, reply: unknown): void => {
    void (reply as FastifyReply).code(400).type('application/json').send({ error: new TesseraError('TESSERA_BAD_REQUEST', 'the request URL is malformed').toJSON() });
  },
  // Errors below HTTP (oversized head, bad framing, timeouts) never reach a route.
  clientErrorHandler: clientError,
} as const;
