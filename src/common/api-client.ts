import { Agent as HttpsAgent, request } from 'node:https';
import type { PeerCertificate } from 'node:tls';
import { ERROR_CODES, TesseraError, type ErrorCode } from '../core/errors.js';
import { parseSpiffeId } from '../core/spiffe-id.js';
import { verifyPeerSvid, type PeerExpectation } from '../core/x509-svid.js';
import { certificateUriSans, pemDecodeAll } from '../core/x509.js';

export interface ClientTls {
  /** PEM of every trusted CA (the trust bundle). */
  ca: string;
  /** Client certificate chain and key (PEM), when calling as an SVID or admin. */
  cert?: string;
  key?: string;
  /** Expected SPIFFE ID of the server; by default `spiffe://<td>/tessera/server` for the bundle's trust domain. */
  serverId?: string;
}

/**
 * The control plane's SPIFFE ID when the caller did not name it: `spiffe://<td>/tessera/server`
 * for the one trust domain the bundle's CAs name (X509-SVID §3.2: a signing certificate carries
 * the trust-domain ID). undefined when the bundle names none or several.
 */
function serverIdFromBundle(caPem: string): string | undefined {
  const tds = new Set<string>();
  try {
    for (const der of pemDecodeAll(caPem, 'CERTIFICATE')) {
      for (const uri of certificateUriSans(der)) {
        const id = parseSpiffeId(uri);
        if (id.path === '') tds.add(id.trustDomain);
      }
    }
  } catch {
    return undefined;
  }
  return tds.size === 1 ? `spiffe://${[...tds][0]}/tessera/server` : undefined;
}

/**
 * Checks the server by its SPIFFE ID, not its host name: node calls this only once OpenSSL has
 * verified the chain to the bundle (hence `true`), and the one X509-SVID leaf check adds "is it
 * the control plane of our trust domain".
 */
function serverIdentityCheck(tls: ClientTls) {
  const expected = tls.serverId ?? serverIdFromBundle(tls.ca);
  let expect: PeerExpectation | undefined;
  try {
    if (expected !== undefined) expect = { trustDomain: parseSpiffeId(expected).trustDomain, id: expected };
  } catch {
    expect = undefined;
  }
  return (_host: string, cert: PeerCertificate): Error | undefined => {
    if (expect === undefined) return new Error('the server\'s SPIFFE ID is unknown: pass a valid server ID, or a trust bundle whose CAs name one trust domain');
    const v = verifyPeerSvid(cert.raw, true, expect, Date.now());
    return v.ok ? undefined : new Error(`server certificate refused (${v.reason}): the server must be ${expected}`);
  };
}

/** Most control-plane URLs one client takes (`--server A,B,C`: replicas). */
const MAX_SERVER_URLS = 16;

/**
 * The control plane's URLs from `--server`: one `https://HOST:PORT` URL, or several separated by
 * commas (replicas of one control plane). TESSERA_CONFIG_INVALID when one is not an https URL
 * without credentials, query or fragment, or when the list is empty or too long.
 */
export function parseServerUrls(spec: string): string[] {
  const parts = spec.split(',').map((s) => s.trim());
  if (parts.length > MAX_SERVER_URLS) throw new TesseraError('TESSERA_CONFIG_INVALID', `--server lists ${parts.length} URLs: at most ${MAX_SERVER_URLS}`);
  return parts.map((part) => {
    let u: URL;
    try {
      u = new URL(part);
    } catch {
      throw new TesseraError('TESSERA_CONFIG_INVALID', `--server: ${JSON.stringify(part.slice(0, 100))} is not a URL (expected https://HOST:PORT, several comma-separated)`);
    }
    if (u.protocol !== 'https:' || u.username !== '' || u.password !== '' || u.search !== '' || u.hash !== '') {
      throw new TesseraError('TESSERA_CONFIG_INVALID', `--server: ${u.protocol === 'https:' ? 'no credentials, query or fragment in' : 'https only, not'} ${u.protocol}//${u.host}`);
    }
    return `${u.origin}${u.pathname}`;
  });
}

/** Errors that mean nothing reached the server (a request sent to another replica cannot run twice). */
const NOT_SENT = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EADDRNOTAVAIL']);

/**
 * A small JSON-over-mTLS client for the control plane API, with kept-alive connections. Rebuild
 * it (or call {@link ApiClient.setTls}) when the SVID or the bundle changes.
 *
 * Given several URLs (replicas), it uses one until it cannot be reached, then the next: a request
 * that never reached a replica (connection refused, no route, unknown host) is sent to the next one
 * at once, as is a GET that failed in any way; any other request that failed mid-way is not resent
 * (it may have run) but fails, and the next call goes to the next replica. A long poll that is cut
 * fails too, and its caller's retry goes to the next replica.
 */
export class ApiClient {
  private agent: HttpsAgent;
  private retired: HttpsAgent[] = [];
  private readonly urls: readonly string[];
  private current = 0;

  constructor(servers: string, tls: ClientTls, private readonly timeoutMs = 15_000) {
    this.urls = parseServerUrls(servers);
    this.agent = ApiClient.makeAgent(tls);
  }

  /** The URL in use (the first of `--server` until one could not be reached). */
  get baseUrl(): string {
    return this.urls[this.current]!;
  }

  /** Moves to the next replica after `failed` (unless another call already did). */
  private failover(failed: number): void {
    if (this.urls.length > 1 && this.current === failed) this.current = (failed + 1) % this.urls.length;
  }

  private static makeAgent(tls: ClientTls): HttpsAgent {
    return new HttpsAgent({
      keepAlive: true,
      maxSockets: 16,
      ca: tls.ca,
      ...(tls.cert ? { cert: tls.cert } : {}),
      ...(tls.key ? { key: tls.key } : {}),
      checkServerIdentity: serverIdentityCheck(tls),
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

  /**
   * GET a newline-delimited JSON stream: `onLine` gets each non-empty line as it arrives (empty
   * lines are keep-alives). Resolves when the server ends the stream; rejects with the server's
   * error (HTTP ≥ 400), TESSERA_SERVER_UNREACHABLE when the connection fails or is cut, or when no
   * byte arrives for `idleMs`. Aborting `signal` ends it quietly (resolves).
   */
  stream(path: string, onLine: (line: string) => void | Promise<void>, opts: { signal?: AbortSignal; idleMs?: number } = {}): Promise<void> {
    const used = this.current;
    const url = new URL(path, this.baseUrl);
    return new Promise<void>((resolve, reject) => {
      const unreachable = (why: string): TesseraError => {
        this.failover(used);
        return new TesseraError('TESSERA_SERVER_UNREACHABLE', `stream from ${url.host} ${why}`);
      };
      const req = request(url, { method: 'GET', agent: this.agent, timeout: opts.idleMs ?? 60_000, ...(opts.signal ? { signal: opts.signal } : {}) }, (res) => {
        if ((res.statusCode ?? 500) >= 400) {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            let err: { code?: string; message?: string } | undefined;
            try { err = (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { error?: typeof err }).error; } catch { /* not JSON */ }
            const code = err?.code && err.code in ERROR_CODES ? (err.code as ErrorCode) : 'TESSERA_INTERNAL';
            reject(new TesseraError(code, err?.message ?? `HTTP ${res.statusCode}`));
          });
          return;
        }
        let rest = '';
        let chain = Promise.resolve();
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          const parts = (rest + chunk).split('\n');
          rest = parts.pop()!;
          // The consumer may be slower than the server (a pipe): pause until it has taken each line.
          res.pause();
          chain = chain.then(async () => {
            for (const line of parts) if (line !== '') await onLine(line);
            res.resume();
          });
          chain.catch((err: unknown) => {
            req.destroy();
            reject(err);
          });
        });
        res.on('end', () => void chain.then(() => (rest === '' ? resolve() : reject(unreachable('ended in the middle of a line'))), () => {}));
        const cut = (err?: Error): void => {
          if (opts.signal?.aborted) resolve();
          else reject(unreachable(`was cut: ${err?.message ?? 'connection closed'}`));
        };
        res.on('error', cut);
        res.on('close', () => { if (!res.complete) cut(); });
      });
      req.on('timeout', () => req.destroy(new Error('went quiet')));
      req.on('error', (err) => (opts.signal?.aborted ? resolve() : reject(unreachable(`failed: ${err.message}`))));
      req.end();
    });
  }

  async call<T = Record<string, unknown>>(method: string, path: string, body?: unknown, opts: { timeoutMs?: number; headers?: Record<string, string> } = {}): Promise<T> {
    for (let tried = 1; ; tried++) {
      const used = this.current;
      try {
        return await this.callOnce<T>(this.urls[used]!, method, path, body, opts);
      } catch (err) {
        const sent = (err as { sent?: boolean }).sent;
        if (sent === undefined) throw err; // an answer from the server: not a reason to move
        this.failover(used);
        if (tried >= this.urls.length || (sent && method !== 'GET')) throw err;
      }
    }
  }

  /** One request to one replica; a failure without an answer carries `sent` (whether it may have reached it). */
  private callOnce<T>(base: string, method: string, path: string, body: unknown, opts: { timeoutMs?: number; headers?: Record<string, string> }): Promise<T> {
    const url = new URL(path, base);
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise<T>((resolve, reject) => {
      const req = request(url, {
        method,
        agent: this.agent,
        headers: { ...opts.headers, ...(payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {}) },
        timeout: opts.timeoutMs ?? this.timeoutMs,
      }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (err) => reject(Object.assign(new TesseraError('TESSERA_SERVER_UNREACHABLE', `connection to ${url.host} failed: ${err.message}`), { sent: true })));
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
            const failure = new TesseraError(code, err?.message);
            // A 429's Retry-After (delay-seconds form, RFC 9110 §10.2.3) for callers that back off by it.
            const retryAfter = Number(res.headers['retry-after']);
            if (res.statusCode === 429 && Number.isFinite(retryAfter) && retryAfter >= 0) Object.assign(failure, { retryAfterSeconds: retryAfter });
            reject(failure);
            return;
          }
          resolve(json as T);
        });
      });
      req.on('timeout', () => req.destroy(new Error('timed out')));
      req.on('error', (err: NodeJS.ErrnoException) => reject(Object.assign(
        new TesseraError('TESSERA_SERVER_UNREACHABLE', `cannot reach the control plane at ${url.host}: ${err.message}`),
        { sent: !NOT_SENT.has(err.code ?? '') },
      )));
      req.end(payload);
    });
  }
}
