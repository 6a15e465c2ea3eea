import { Agent as HttpsAgent, request } from 'node:https';
import type { PeerCertificate } from 'node:tls';
import { ERROR_CODES, TesseraError, type ErrorCode } from '../core/errors.js';
import { certificateUriSans } from '../core/x509.js';

export interface ClientTls {
  /** PEM of every trusted CA (the trust bundle). */
  ca: string;
  /** Client certificate chain and key (PEM), when calling as an SVID or admin. */
  cert?: string;
  key?: string;
  /** Expected SPIFFE ID of the server; by default any `spiffe://<td>/tessera/server`. */
  serverId?: string;
}

/**
 * Checks the server by its SPIFFE ID (URI SAN), not its host name: the chain is verified against
 * the bundle by OpenSSL, and this adds "is it the control plane of our trust domain".
 */
function serverIdentityCheck(expected: string | undefined) {
  return (_host: string, cert: PeerCertificate): Error | undefined => {
    let uris: string[];
    try {
      uris = certificateUriSans(cert.raw);
    } catch {
      return new Error('server certificate is malformed');
    }
    const ok = uris.length === 1 && (expected ? uris[0] === expected : /^spiffe:\/\/[^/]+\/tessera\/server$/.test(uris[0]!));
    return ok ? undefined : new Error(`server certificate does not carry the control plane's SPIFFE ID${expected ? ` (${expected})` : ''}`);
  };
}

/**
 * A small JSON-over-mTLS client for the control plane API, with kept-alive connections. Rebuild
 * it (or call {@link ApiClient.setTls}) when the SVID or the bundle changes.
 */
export class ApiClient {
  private agent: HttpsAgent;
  private retired: HttpsAgent[] = [];

  constructor(readonly baseUrl: string, tls: ClientTls, private readonly timeoutMs = 15_000) {
    this.agent = ApiClient.makeAgent(tls);
  }

  private static makeAgent(tls: ClientTls): HttpsAgent {
    return new HttpsAgent({
      keepAlive: true,
      maxSockets: 16,
      ca: tls.ca,
      ...(tls.cert ? { cert: tls.cert } : {}),
      ...(tls.key ? { key: tls.key } : {}),
      checkServerIdentity: serverIdentityCheck(tls.serverId),
      minVersion: 'TLSv1.2',
    });
  }

  /**
   * Switches to new TLS material. Requests in flight (a bundle long-poll) finish on the old
   * connections, which are closed a little later instead of being cut.
   */
  setTls(tls: ClientTls): void {
    const old = this.agent;
    this.agent = ApiClient.makeAgent(tls);
    this.retired.push(old);
    setTimeout(() => {
      old.destroy();
      this.retired = this.retired.filter((a) => a !== old);
    }, 70_000).unref();
  }

  close(): void {
    this.agent.destroy();
    for (const a of this.retired) a.destroy();
    this.retired = [];
  }

  async call<T = Record<string, unknown>>(method: string, path: string, body?: unknown, opts: { timeoutMs?: number } = {}): Promise<T> {
    const url = new URL(path, this.baseUrl);
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise<T>((resolve, reject) => {
      const req = request(url, {
        method,
        agent: this.agent,
        headers: payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {},
        timeout: opts.timeoutMs ?? this.timeoutMs,
      }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (err) => reject(new TesseraError('TESSERA_SERVER_UNREACHABLE', `connection to ${url.host} failed: ${err.message}`)));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown;
          try {
            json = text ? JSON.parse(text) : {};
          } catch {
            reject(new TesseraError('TESSERA_SERVER_UNREACHABLE', `unexpected non-JSON answer (HTTP ${res.statusCode}) from ${url.host}`));
            return;
          }
          if ((res.statusCode ?? 500) >= 400) {
            const err = (json as { error?: { code?: string; message?: string } }).error;
            const code = err?.code && err.code in ERROR_CODES ? (err.code as ErrorCode) : 'TESSERA_INTERNAL';
            reject(new TesseraError(code, err?.message));
            return;
          }
          resolve(json as T);
        });
      });
      req.on('timeout', () => req.destroy(new Error('timed out')));
      req.on('error', (err) => reject(new TesseraError('TESSERA_SERVER_UNREACHABLE', `cannot reach the control plane at ${url.host}: ${err.message}`)));
      req.end(payload);
    });
  }
}
