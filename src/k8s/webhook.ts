/**
 * The mutating admission webhook's HTTPS server: `POST /mutate` (AdmissionReview v1) and
 * `GET /healthz`. Its serving certificate is the webhook agent's X509-SVID (which carries the
 * Service's DNS name, see the README), swapped in with `setSecureContext` whenever the agent renews
 * it or the trust bundle changes.
 *
 * Who may call it: `/mutate` only the API server, by its client certificate (client-auth.ts: the
 * chain to `--client-ca`, clientAuth usage, a subject CN of `--client-name`); anyone else gets 401
 * TESSERA_AUTH_REQUIRED / TESSERA_AUTH_INVALID or 403 TESSERA_FORBIDDEN before its body is read.
 *
 * What it answers:
 * - anything it does not own (another kind or resource, a subresource, a namespace not in
 *   `namespaces`, UPDATE and CONNECT, mirror pods, pods annotated `tessera.io/inject: disabled`):
 *   allowed, no patch. It never blocks the rest of the cluster.
 * - a pod CREATE in an allowed namespace: allowed with the JSONPatch of inject.ts, after the entry
 *   (created if absent) and a one-time join token were made; refused (allowed: false, the reason in
 *   the message) when the pod cannot be given an identity or the control plane cannot make the token:
 *   fail closed.
 * - a pod DELETE: its ref released (the entry deleted with its last pod); always allowed.
 * - a body that is not an AdmissionReview v1: HTTP 400 TESSERA_K8S_REVIEW_INVALID; too large: 413;
 *   not JSON content: 415; other paths: 404. Never a 500 for bad input.
 */
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { TesseraError, isTesseraError } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import { keyPem, listenOn, MIN_TLS_VERSION, requireMaterial, watchTlsSource, type TlsMaterial, type TlsSource } from '../common/tls-source.js';
import { admissionResponse, parseAdmissionReview, type AdmissionDecision, type AdmissionRequest } from './admission.js';
import { alreadyInjected, injectionPatch, skipsInjection, podIdentity, podRefOf, PodRefused, type InjectConfig } from './inject.js';
import { refuseCaller, type WebhookClientAuth } from './client-auth.js';
import { applyJsonPatch } from './jsonpatch.js';
import type { Registrar } from './registrar.js';

export const DEFAULT_MAX_BODY_BYTES = 3 * 1024 * 1024;

export interface WebhookOptions {
  listen: { host: string; port: number };
  tls: TlsSource;
  /** The DNS name the API server calls (the Service's): the serving certificate must carry it. */
  dnsName: string;
  inject: InjectConfig;
  /** The namespaces the webhook injects into (checked besides the configuration's namespaceSelector). */
  namespaces: ReadonlySet<string>;
  registrar: Registrar;
  /** Who may call `/mutate`: the API server's client certificate (required: there is no open mode). */
  clientAuth: WebhookClientAuth;
  log: Logger;
  maxBodyBytes?: number;
  /** More fields for `GET /healthz` (e.g. the caBundle patcher's status); answered to anyone: no secrets. */
  health?: () => Record<string, unknown>;
}

export interface WebhookServer {
  port: number;
  server: Server;
  /** Serial of the certificate being served (changes on renewal). */
  servingSerial(): string | undefined;
  close(): Promise<void>;
}

/** The DNS SANs of a PEM certificate (the leaf, first in the chain). */
export function dnsNamesOf(certPem: string): string[] {
  const san = new X509Certificate(certPem).subjectAltName ?? '';
  return san.split(', ').filter((s) => s.startsWith('DNS:')).map((s) => s.slice(4));
}

/** The secure context: the SVID, and the client CA (part of the context, so it must be in every swap). */
function contextOptions(m: TlsMaterial, clientCa: string): { cert: string; key: string; ca: string; minVersion: 'TLSv1.2' } {
  return { cert: m.certPem, key: keyPem(m.key), ca: clientCa, minVersion: MIN_TLS_VERSION };
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

function sendError(res: ServerResponse, err: TesseraError, close = false): void {
  if (close) res.setHeader('connection', 'close');
  sendJson(res, err.status, { error: err.toJSON() });
}

/** Reads the body up to `max` bytes; undefined (413 sent, connection closed) when larger. */
function readBody(req: IncomingMessage, res: ServerResponse, max: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length']);
    const tooLarge = (): void => {
      sendError(res, new TesseraError('TESSERA_PAYLOAD_TOO_LARGE', `the AdmissionReview exceeds ${max} bytes`), true);
      res.once('finish', () => req.destroy());
      resolve(undefined);
    };
    if (Number.isFinite(declared) && declared > max) return tooLarge();
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    req.on('data', (c: Buffer) => {
      if (done) return;
      size += c.length;
      if (size > max) {
        done = true;
        req.pause();
        tooLarge();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (!done) resolve(Buffer.concat(chunks));
    });
    req.on('error', reject);
  });
}

const ALLOW: AdmissionDecision = Object.freeze({ allowed: true });

export async function startWebhook(opts: WebhookOptions): Promise<WebhookServer> {
  const { log, inject, registrar } = opts;
  const max = opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const first = requireMaterial(opts.tls);
  const checkDns = (m: TlsMaterial): void => {
    if (!dnsNamesOf(m.certPem).includes(opts.dnsName)) {
      throw new TesseraError('TESSERA_CONFIG_INVALID', `the webhook's SVID (${m.spiffeId}) does not carry the DNS name ${opts.dnsName}: the API server would refuse it. Give the webhook's entry the selector dns:${opts.dnsName}`);
    }
  };
  checkDns(first);
  let serving = first;

  async function decide(r: AdmissionRequest): Promise<AdmissionDecision> {
    const isPod = r.kind.group === '' && r.kind.version === 'v1' && r.kind.kind === 'Pod' && (r.resource === undefined || r.resource === 'pods');
    if (!isPod || r.subResource !== undefined || !opts.namespaces.has(r.namespace)) return ALLOW;
    if (r.operation === 'DELETE') {
      const held = podRefOf(r.oldObject);
      if (held === undefined || r.dryRun) return ALLOW;
      try {
        await registrar.release(held.spiffeId, held.ref, r.namespace);
      } catch (err) {
        // A deletion is never blocked: the entry stays until the next release of its pods or an operator removes it.
        log.warn('pod deleted but its entry could not be released', { namespace: r.namespace, spiffe_id: held.spiffeId, code: isTesseraError(err) ? err.code : 'ERROR' });
      }
      return ALLOW;
    }
    if (r.operation !== 'CREATE') return ALLOW;
    const pod = r.object;
    if (pod === undefined) return { allowed: false, code: 400, message: 'tessera: the pod CREATE carries no object' };
    if (skipsInjection(pod)) return ALLOW;
    if (alreadyInjected(pod)) {
      return { allowed: false, message: 'tessera: the pod already carries a Tessera injection (copied from another pod?): remove the tessera-agent container and the tessera.io/ annotations' };
    }
    try {
      const id = podIdentity(inject, r.namespace, pod);
      const admitted = r.dryRun
        ? { token: 'dry-run', podRef: 'dry-run', warnings: [] as string[] }
        : await registrar.admit(id, r.namespace);
      const patch = injectionPatch(inject, pod, { spiffeId: id.spiffeId, token: admitted.token, podRef: admitted.podRef });
      applyJsonPatch(pod, patch);
      return { allowed: true, patch, warnings: admitted.warnings };
    } catch (err) {
      if (err instanceof PodRefused) return { allowed: false, message: `tessera: ${err.message}` };
      const code = isTesseraError(err) ? err.code : 'TESSERA_INTERNAL';
      log.warn('pod refused: no join token could be made', { namespace: r.namespace, code });
      return { allowed: false, code: 500, message: `tessera: no identity could be made for this pod (${code}); the namespace is opted in to injection, so the pod is refused` };
    }
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '').split('?')[0];
    if (path === '/healthz' && (req.method === 'GET' || req.method === 'HEAD')) {
      return sendJson(res, 200, { ok: true, spiffe_id: serving.spiffeId, ...opts.health?.() });
    }
    if (path !== '/mutate' || req.method !== 'POST') {
      req.resume();
      return sendError(res, new TesseraError('TESSERA_NOT_FOUND', 'the webhook serves POST /mutate and GET /healthz'));
    }
    const refused = refuseCaller(req.socket as TLSSocket, opts.clientAuth);
    if (refused !== undefined) {
      req.resume();
      log.warn('AdmissionReview refused: the caller is not the API server', { code: refused.code, remote: req.socket.remoteAddress });
      return sendError(res, refused, true);
    }
    const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    if (type !== 'application/json') {
      req.resume();
      return sendError(res, new TesseraError('TESSERA_UNSUPPORTED_MEDIA_TYPE', 'the AdmissionReview must be sent as application/json'));
    }
    const body = await readBody(req, res, max);
    if (body === undefined) return;
    let review: AdmissionRequest;
    try {
      review = parseAdmissionReview(body);
    } catch (err) {
      return sendError(res, err as TesseraError);
    }
    const decision = await decide(review);
    if (!decision.allowed) log.info('pod refused', { namespace: review.namespace, reason: decision.message });
    sendJson(res, 200, admissionResponse(review.uid, decision));
  }

  // requestCert without rejectUnauthorized: the kubelet's /healthz probes present no certificate;
  // refuseCaller decides for /mutate. The handshake timeout bounds connections that never finish one.
  const server = createServer({ ...contextOptions(first, opts.clientAuth.caPem), requestCert: true, rejectUnauthorized: false, handshakeTimeout: 10_000 }, (req, res) => {
    handle(req, res).catch((err: unknown) => {
      log.error('webhook request failed', { error: (err as Error).message });
      if (!res.headersSent) sendError(res, new TesseraError('TESSERA_INTERNAL', 'the webhook failed to answer'));
      else res.destroy();
    });
  });
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  server.keepAliveTimeout = 30_000;
  const stopWatching = watchTlsSource(opts.tls, () => {
    const m = requireMaterial(opts.tls);
    checkDns(m);
    server.setSecureContext(contextOptions(m, opts.clientAuth.caPem));
    serving = m;
    log.info('webhook serving certificate swapped', { serial: new X509Certificate(m.certPem).serialNumber });
  }, (err) => log.error('the renewed certificate cannot be served; the previous one stays', { error: (err as Error).message }));
  let port: number;
  try {
    port = await listenOn(server, opts.listen, 'the webhook', () => undefined);
  } catch (err) {
    stopWatching();
    throw err;
  }
  log.info('webhook listening', { port, dns_name: opts.dnsName, namespaces: [...opts.namespaces].join(' ') });
  return {
    port,
    server,
    servingSerial: () => new X509Certificate(serving.certPem).serialNumber,
    close: async () => {
      stopWatching();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
