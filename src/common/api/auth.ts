import type { TLSSocket } from 'node:tls';
import type { FastifyRequest } from 'fastify';
import { TesseraError } from '../../core/errors.js';
import { verifyPeerSvid } from '../../core/x509-svid.js';

export interface Caller {
  spiffeId: string;
  notAfter: number;
  /** Serial of the caller's leaf, as node prints it (uppercase hex), for revocation checks. */
  serial: string;
  /** Hex SHA-256 fingerprint of the leaf, for audit records. */
  fingerprint: string;
}

/** TLS-level reasons that mean "not trusted" rather than "absent". Kept for audit details only. */
type CallerResult = { ok: true; caller: Caller } | { ok: false; error: TesseraError; reason: string };

// The peer certificate cannot change on a connection, so its verdict is computed once per socket.
const verdicts = new WeakMap<TLSSocket, CallerResult>();

function evaluate(socket: TLSSocket, trustDomain: string): CallerResult {
  const cert = socket.getPeerX509Certificate?.();
  if (!cert) return { ok: false, error: new TesseraError('TESSERA_AUTH_REQUIRED'), reason: 'no client certificate' };
  // The server asks for a certificate without requiring one (join and health need none), so the
  // chain verdict is OpenSSL's `authorized`, passed on to the one peer check.
  const v = verifyPeerSvid(cert.raw, socket.authorized, { trustDomain }, Date.now());
  if (!v.ok) {
    const reason = v.reason === 'chain not verified' ? String(socket.authorizationError ?? 'untrusted') : v.reason;
    return { ok: false, error: new TesseraError('TESSERA_AUTH_INVALID'), reason };
  }
  return { ok: true, caller: { spiffeId: v.spiffeId, notAfter: v.notAfter, serial: v.serial, fingerprint: cert.fingerprint256.replaceAll(':', '').toLowerCase() } };
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
