/**
 * `tessera keyserver`: the blind-secrets key server over HTTPS with mutual TLS. Its own identity
 * (certificate, key, trusted bundle) comes from a TlsSource (the Agent, in production); the TLS
 * context is rebuilt when the SVID or bundle rotates. Every route but /v1/healthz needs a client
 * SVID of the trust domain; a client without a certificate the bundle trusts fails the handshake.
 *
 *   POST /v1/evaluate                 {policy, epoch, b}                       → {index, z, proof}
 *   PUT  /v1/shares/:policy/:epoch    {t, n, index, value, commitments}        → 201 {policy, epoch, index, created}
 *   GET  /v1/healthz                                                            → {status, shares}
 *
 * Binary fields are base64url. Request bodies are JSON, at most 64 KiB, unknown fields refused.
 * Nothing carrying a point, share or proof is ever logged.
 */
import type { Server as HttpsServer } from 'node:https';
import { clientError, toTesseraError } from '../server/api/errors.js';
import Fastify, { type FastifyReply, type FastifyRequest } from 'fastify';
import { ERROR_CODES, TesseraError, isTesseraError } from '../core/errors.js';
import { ensurePrivateDir } from '../core/files.js';
import type { Logger } from '../core/log.js';
import { encodeProof, isSecretPolicyId, ready } from '../core/secrets/index.js';
import { parseTrustDomain } from '../core/spiffe-id.js';
import { MIN_TLS_VERSION, keyPem, requireMaterial, watchTlsSource, type TlsSource } from '../agent/inbound/tls-source.js';
import { authenticate } from '../server/api/auth.js';
import { body, int, reqStr, strList } from '../server/api/validate.js';
import { KeyEncryptionKey } from '../server/ca/kek.js';
import { KeyService, type KeyAuditEvent, type KeyCaller, type RateLimit } from './service.js';
import { ShareStore } from './store.js';

export const BODY_LIMIT = 64 * 1024;
const B64URL_32 = /^[A-Za-z0-9_-]{43}$/;
const EPOCH_RE = /^(0|[1-9]\d{0,9})$/;

export interface KeyServerOptions {
  dataDir: string;
  listen: { host: string; port: number };
  tls: TlsSource;
  trustDomain: string;
  /** Whether `caller` may unseal under `policy` (wire to Cedar: action `secret:unseal`). */
  authorize: (caller: KeyCaller, policy: string) => boolean;
  /** SPIFFE IDs allowed to install shares (e.g. the admin). */
  provisioners: string[];
  log: Logger;
  env?: NodeJS.ProcessEnv;
  rateLimit?: RateLimit;
  /** Audit sink; default: an `info` log line per event (no point material is in an event). */
  onAudit?: (event: KeyAuditEvent) => void;
  /** Tests only: sees every raw request body as received. */
  onRequestBody?: (info: { method: string; url: string; body: string }) => void;
}

export interface KeyServer {
  port: number;
  url: string;
  store: ShareStore;
  service: KeyService;
  close(): Promise<void>;
}



function b64(v: string, what: string, re: RegExp): Uint8Array {
  if (!re.test(v)) throw new TesseraError('TESSERA_BAD_REQUEST', `"${what}" must be base64url of the right length`);
  return new Uint8Array(Buffer.from(v, 'base64url'));
}


export async function startKeyServer(opts: KeyServerOptions): Promise<KeyServer> {
  await ready();
  const trustDomain = parseTrustDomain(opts.trustDomain);
  const provisioners = new Set(opts.provisioners);
  const log = opts.log.child({ component: 'keyserver' });
  ensurePrivateDir(opts.dataDir);
  const kek = KeyEncryptionKey.load(opts.dataDir, opts.env);
  const store = ShareStore.open(opts.dataDir, kek);
  const onAudit = opts.onAudit ?? ((ev: KeyAuditEvent) => log.info('evaluate', { ...ev }));
  const service = new KeyService({ store, authorize: opts.authorize, onAudit, ...(opts.rateLimit ? { rateLimit: opts.rateLimit } : {}) });

  const tlsOptions = () => {
    const m = requireMaterial(opts.tls);
    return { key: keyPem(m.key), cert: m.certPem, ca: m.bundlePem, requestCert: true, rejectUnauthorized: true, minVersion: MIN_TLS_VERSION } as const;
  };

  const app = Fastify({
    https: tlsOptions(),
    bodyLimit: BODY_LIMIT,
    logger: false,
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    keepAliveTimeout: 65_000,
    requestTimeout: 30_000,
    return503OnClosing: true,
    forceCloseConnections: true,
    frameworkErrors: (_err, _req, reply) => {
      void (reply as unknown as FastifyReply).code(400).type('application/json').send({ error: new TesseraError('TESSERA_BAD_REQUEST', 'the request URL is malformed').toJSON() });
    },
    clientErrorHandler: clientError,
  });

  const unwatch = watchTlsSource(opts.tls, () => {
    (app.server as HttpsServer).setSecureContext(tlsOptions());
    log.debug('TLS context rebuilt');
  }, (err) => log.error('TLS context rebuild failed; keeping the previous one', { error: String(err) }));

  app.removeContentTypeParser(['text/plain']);
  const jsonParser = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit: BODY_LIMIT }, (req, raw, done) => {
    opts.onRequestBody?.({ method: req.method, url: req.url, body: raw as string });
    jsonParser(req, raw as string, done);
  });

  app.setErrorHandler((err: Error, req, reply) => {
    const e = toTesseraError(err);
    if (e.code === 'TESSERA_INTERNAL') log.error('internal error', { route: req.routeOptions.url, error: err.message });
    void reply.code(e.status).type('application/json').send({ error: e.toJSON() });
  });
  app.setNotFoundHandler((_req, reply) => {
    void reply.code(404).send({ error: new TesseraError('TESSERA_NOT_FOUND').toJSON() });
  });

  const caller = (req: FastifyRequest): KeyCaller => ({ spiffeId: authenticate(req, trustDomain).spiffeId });

  app.get('/v1/healthz', async () => ({ status: 'ok', shares: store.list().length }));

  app.post('/v1/evaluate', async (req) => {
    const who = caller(req);
    const b = body(req.body, ['policy', 'epoch', 'b']);
    const policy = reqStr(b, 'policy', { max: 64 });
    const epoch = int(b, 'epoch', { min: 0, max: 0xffffffff }) as number;
    const B = b64(reqStr(b, 'b', { max: 64 }), 'b', B64URL_32);
    const ev = service.evaluate(who, { policy, epoch, B });
    return { index: ev.index, z: Buffer.from(ev.Z).toString('base64url'), proof: Buffer.from(encodeProof(ev.proof)).toString('base64url') };
  });

  app.put<{ Params: { policy: string; epoch: string } }>('/v1/shares/:policy/:epoch', async (req, reply) => {
    const who = caller(req);
    const { policy, epoch: epochText } = req.params;
    const audit = (outcome: KeyAuditEvent['outcome'], code?: keyof typeof ERROR_CODES): void => {
      const ev: KeyAuditEvent = { at: new Date().toISOString(), action: 'secret:share-install', actor: who.spiffeId, policy: isSecretPolicyId(policy) ? policy : '(invalid)', epoch: EPOCH_RE.test(epochText) ? Number(epochText) : -1, outcome, ...(code ? { code } : {}) };
      try { onAudit(ev); } catch { /* the sink reports its own failures */ }
    };
    try {
      if (!provisioners.has(who.spiffeId)) throw new TesseraError('TESSERA_FORBIDDEN', 'this caller may not install key shares');
      if (!isSecretPolicyId(policy)) throw new TesseraError('TESSERA_BAD_REQUEST', 'the policy id must be 1..64 of [a-z0-9._-]');
      if (!EPOCH_RE.test(epochText) || Number(epochText) > 0xffffffff) throw new TesseraError('TESSERA_BAD_REQUEST', 'the key epoch must be an integer in 0..2^32-1');
      const b = body(req.body, ['t', 'n', 'index', 'value', 'commitments']);
      const t = int(b, 't', { min: 1, max: 255 }) as number;
      const n = int(b, 'n', { min: 1, max: 255 }) as number;
      const index = int(b, 'index', { min: 1, max: 255 }) as number;
      const value = b64(reqStr(b, 'value', { max: 64 }), 'value', B64URL_32);
      const commitments = (strList(b, 'commitments', { maxItems: 255, minItems: 1, maxLength: 43, pattern: B64URL_32 }) as string[]).map((c) => b64(c, 'commitments', B64URL_32));
      if (commitments.length !== t) throw new TesseraError('TESSERA_SECRET_SHARE_INVALID', 'there must be exactly t distinct commitments');
      const { created } = store.put({ policyId: policy, epoch: Number(epochText), t, n, index, value, commitments });
      value.fill(0);
      audit('allowed');
      void reply.code(201);
      return { policy, epoch: Number(epochText), index, created };
    } catch (err) {
      const code = isTesseraError(err) ? err.code : 'TESSERA_INTERNAL';
      audit(code === 'TESSERA_FORBIDDEN' ? 'denied' : 'error', code);
      throw err;
    }
  });

  try {
    await app.listen({ host: opts.listen.host, port: opts.listen.port });
  } catch (err) {
    unwatch();
    throw new TesseraError('TESSERA_CONFIG_INVALID', `the key server cannot listen on ${opts.listen.host}:${opts.listen.port}: ${(err as Error).message}`);
  }
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : opts.listen.port;
  const hostPart = opts.listen.host.includes(':') ? `[${opts.listen.host}]` : opts.listen.host;
  log.info('key server listening', { url: `https://${hostPart}:${port}`, shares: store.list().length });
  return {
    port,
    url: `https://${hostPart}:${port}`,
    store,
    service,
    async close() {
      unwatch();
      await app.close();
    },
  };
}
