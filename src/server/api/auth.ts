import type { TLSSocket } from 'node:tls';
import type { FastifyRequest } from 'fastify';
import { TesseraError } from '../../core/errors.js';
import { isMemberOf, parseSpiffeId } from '../../core/spiffe-id.js';
import { certificateUriSans } from '../../core/x509.js';

export interface Caller {
  spiffeId: string;
  notAfter: number;
  /** Hex SHA-256 fingerprint of the leaf, for audit records. */
  fingerprint: string;
  /** The leaf's serial (uppercase hex): revocation lists name SVIDs by it. */
  serial: string;
}

/** TLS-level reasons that mean "not trusted" rather than "absent". Kept for audit details only. */
type CallerResult = { ok: true; caller: Caller } | { ok: false; error: TesseraError; reason: string };

// The peer certificate cannot change on a connection, so its verdict is computed once per socket.
const verdicts = new WeakMap<TLSSocket, CallerResult>();

function evaluate(socket: TLSSocket, trustDomain: string): CallerResult {
  const cert = socket.getPeerX509Certificate?.();
  if (!cert) return { ok: false, error: new TesseraError('TESSERA_AUTH_REQUIRED'), reason: 'no client certificate' };
  if (!socket.authorized) {
    const reason = String(socket.authorizationError ?? 'untrusted');
    return { ok: false, error: new TesseraError('TESSERA_AUTH_INVALID'), reason };
  }
  let uris: string[];
  try {
    uris = certificateUriSans(cert.raw);
  } catch {
    return { ok: false, error: new TesseraError('TESSERA_AUTH_INVALID'), reason: 'malformed certificate' };
  }
  if (uris.length !== 1) return { ok: false, error: new TesseraError('TESSERA_AUTH_INVALID'), reason: 'certificate must carry exactly one URI SAN' };
  let id: string;
  try {
    id = parseSpiffeId(uris[0]!).id;
  } catch {
    return { ok: false, error: new TesseraError('TESSERA_AUTH_INVALID'), reason: 'URI SAN is not a SPIFFE ID' };
  }
  if (!isMemberOf(id, trustDomain)) return { ok: false, error: new TesseraError('TESSERA_AUTH_INVALID'), reason: 'other trust domain' };
  if (cert.ca) return { ok: false, error: new TesseraError('TESSERA_AUTH_INVALID'), reason: 'CA certificate used as client' };
  return { ok: true, caller: { spiffeId: id, notAfter: Date.parse(cert.validTo), fingerprint: cert.fingerprint256.replaceAll(':', '').toLowerCase(), serial: cert.serialNumber.toUpperCase() } };
}

/**
 * The authenticated caller of a request, from its TLS client certificate. The chain was checked by
 * OpenSSL against the current bundle at handshake; here we add the SPIFFE checks and, because a
 * kept-alive connection can outlive its certificate, the expiry at every request.
 */
export function authenticate(req: FastifyRequest, trustDomain: string): Caller {
  const socket = req.raw.socket as TLSSocket;
  let verdict = verdicts.get(socket);
  if (!verdict) {
    verdict = evaluate(socket, trustDomain);
    verdicts.set(socket, verdict);
  }
  if (!verdict.ok) {
    req.authFailure = verdict.reason;
    throw verdict.error;
  }
  if (verdict.caller.notAfter <= Date.now()) {
    req.authFailure = 'certificate expired during the connection';
    throw new TesseraError('TESSERA_AUTH_INVALID');
  }
  return verdict.caller;
}

declare module 'fastify' {
  interface FastifyRequest {
    authFailure?: string;
  }
}
