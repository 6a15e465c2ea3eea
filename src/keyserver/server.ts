/**
 * `tessera keyserver`: the blind-secrets key server over HTTPS with mutual TLS. Its own identity
 * (certificate, key, trusted bundle) comes from a TlsSource (the Agent, in production); the TLS
 * context is rebuilt when the SVID or bundle rotates. Every route but /v1/healthz needs a client
 * SVID of the trust domain; a client without a certificate the bundle trusts fails the handshake.
 *
 * Request and response types: src/core/wire/keyserver.ts.
 *
 *   POST /v1/evaluate                 {policy, epoch, generation?, b}          → {index, generation, z, proof}
 *   GET  /v1/healthz                                                            → {status, shares}
 *
 * Provisioning, for the admins (the `provisioners` and `isProvisioner`) or a caller presenting a
 * provisioning authorization signed by the control plane (`provisionAuthorization`), each audited:
 *   PUT    /v1/shares/:policy/:epoch          {t, n, index, value, commitments} → 201 {policy, epoch, index, created}
 *   POST   /v1/shares/:policy/:epoch/refresh  {from, delta, d}                  → {policy, epoch, index, generation, commitments}
 *   POST   /v1/shares/:policy/:epoch/commit   {generation, commitments}         → {policy, epoch, generation, committed}
 *   DELETE /v1/shares/:policy/:epoch/pending                                    → {policy, epoch, aborted}
 *   DELETE /v1/shares/:policy/:epoch                                            → {policy, epoch, deleted}
 *   GET    /v1/shares                                                           → {shares: [{policy, epoch, generation, index, t, n, pending?}]}
 *          (public facts only; not audited, like /v1/healthz)
 *
 * Distributed key generation (src/core/wire/dkg.ts, src/keyserver/dkg.ts), same authorization,
 * audited as secret:dkg-start / -next / -commit / -abort with the session id; body limit 2 MiB:
 *   POST   /v1/dkg                    {params, certificates} → {session, round, message}
 *   POST   /v1/dkg/:session/next      {set}                  → {session, round, message, done?}
 *   POST   /v1/dkg/:session/commit    {record}               → {policy, epoch, generation, index, committed}
 *   POST   /v1/dkg/commit             {record}               → the same, for the finished session the record names
 *   DELETE /v1/dkg/:session                                   → {session, aborted}
 *
 * Binary fields are base64url. Request bodies are JSON, at most 64 KiB (DKG routes: 2 MiB), unknown fields refused.
 * Nothing carrying a point, share or proof is ever logged.
 */
import type { Server as HttpsServer } from 'node:https';
import { HARDENED_SERVER_OPTIONS, toTesseraError } from '../common/api/errors.js';
import Fastify, { type FastifyReply, type FastifyRequest, type RequestPayload } from 'fastify';
import { ERROR_CODES, TesseraError, isTesseraError, listenFailure } from '../core/errors.js';
import { ensurePrivateDir } from '../core/files.js';
import type { Logger } from '../core/log.js';
import { SECRET_POLICY_ID_RULE, encodeProof, isSecretPolicyId, ready } from '../core/secrets/index.js';
import { parseTrustDomain } from '../core/spiffe-id.js';
import { MIN_TLS_VERSION, keyPem, requireMaterial, watchTlsSource, type TlsSource } from '../common/tls-source.js';
import { authenticate } from '../common/api/auth.js';
import { body, int, reqStr } from '../common/api/validate.js';
import { KeyEncryptionKey } from '../common/kek.js';
import type { AbortShareResponse, CommitShareResponse, DeleteShareResponse, EvaluateResponse, InstallShareResponse, KeyServerHealthResponse, RefreshShareResponse, ShareListResponse } from '../core/wire/keyserver.js';
import { KeyService, type KeyAuditEvent, type KeyCaller, type KeyServiceOptions, type RateLimit } from './service.js';
import { ShareStore } from './store.js';
import { DkgSessions, type DkgSessionEvent } from './dkg.js';
import { isDkgSessionId } from '../core/secrets/dkg-params-wire.js';
import { pemDecodeAll } from '../core/x509.js';
import type { DkgAbortResponse, DkgCommitResponse, DkgNextResponse, DkgStartResponse } from '../core/wire/dkg.js';
import { PROVISION_AUTHORIZATION_HEADER, verifyProvisionAuthorization, type ShareAction } from '../core/secrets/provision-authorization.js';

export const BODY_LIMIT = 64 * 1024;
/** The DKG routes' own body limit: a round's message set for n = 32 is several hundred KiB. */
export const DKG_BODY_LIMIT = 2 * 1024 * 1024;
const B64URL_32 = /^[A-Za-z0-9_-]{43}$/;
const EPOCH_RE = /^(0|[1-9]\d{0,9})$/;

export interface KeyServerOptions {
  dataDir: string;
  listen: { host: string; port: number };
  tls: TlsSource;
  trustDomain: string;
  /** Whether `caller` may unseal under `policy` (wire to Cedar: action `secret:unseal`); `'quarantined'` see KeyServiceOptions. */
  authorize: KeyServiceOptions['authorize'];
  /** SPIFFE IDs allowed to install shares (e.g. the admin). */
  provisioners: string[];
  /**
   * Callers allowed to provision besides `provisioners`: the node lets the live named admins of the
   * signed policy bundle (`tessera admin add`), checked by SPIFFE ID and certificate serial.
   */
  isProvisioner?: (caller: KeyCaller) => boolean;
  /**
   * Accept other callers (a person's `tessera login` certificate) that present a provisioning
   * authorization (src/core/secrets/provision-authorization.ts) in the PROVISION_AUTHORIZATION_HEADER:
   * signed by a CA of `trustedCas()`, for `self()` (this key server's SPIFFE ID), the caller's
   * certificate, the policy, epoch and operation. Absent: only `provisioners` and `isProvisioner`.
   */
  provisionAuthorization?: { self: () => string | undefined; trustedCas: () => Buffer[] };
  log: Logger;
  env?: NodeJS.ProcessEnv;
  rateLimit?: RateLimit;
  /** Audit sink; default: an `info` log line per event (no point material is in an event). */
  onAudit?: (event: KeyAuditEvent) => void;
  /** Seconds taken by each POST /v1/evaluate answer (metrics). */
  observeEvaluate?: (seconds: number) => void;
  /**
   * Unseal telemetry (README "Telemetry", key servers): the counters of the edge caller → this key
   * server in the current window, one call per answered POST /v1/evaluate of an authenticated caller.
   * The node wires it to its sidecar's telemetry collector (lane `callee`, action class `unseal`).
   */
  unsealTelemetry?: UnsealTelemetry;
  /**
   * Distributed key generation (src/keyserver/dkg.ts): session TTL (default 10 min) and the most
   * sessions at once (default 8).
   */
  dkg?: { ttlMs?: number; maxSessions?: number };
  /** DKG session lifecycle events (metrics). */
  observeDkg?: (event: DkgSessionEvent) => void;
  /** Tests only: sees every raw request body as received. */
  onRequestBody?: (info: { method: string; url: string; body: string }) => void;
}

/** The per-window counters of one caller's unseals (structurally the sidecar's EdgeStats). */
export interface UnsealCounters {
  requests: number;
  errors: number;
  denials: number;
  /** Bytes received from the caller (request bodies) / sent to it (answers). */
  bytesIn: number;
  bytesOut: number;
  latency(ms: number): void;
  /** One secret policy id: the window reports their distinct count as `paths_distinct`. */
  path(p: string): void;
}
export interface UnsealTelemetry {
  edge(caller: string): UnsealCounters;
}

export interface KeyServer {
  port: number;
  url: string;
  store: ShareStore;
  service: KeyService;
  dkg: DkgSessions;
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
  const isAdmin = (who: KeyCaller): boolean => provisioners.has(who.spiffeId) || (opts.isProvisioner?.(who) ?? false);
  /**
   * Whether `who` may make this provisioning call: an admin as before, else only with a valid
   * provisioning authorization bound to this request (its jti returned, for the audit).
   */
  const mayProvision = (req: FastifyRequest, who: KeyCaller, action: ShareAction, policy?: string, epoch?: number): { jti?: string } => {
    if (isAdmin(who)) return {};
    const header = req.headers[PROVISION_AUTHORIZATION_HEADER];
    const pa = opts.provisionAuthorization;
    if (header === undefined || pa === undefined) throw new TesseraError('TESSERA_FORBIDDEN', 'this caller may not provision key shares (a person asks the control plane for a provisioning authorization: tessera secret policy ...)');
    const self = pa.self();
    if (self === undefined) throw new TesseraError('TESSERA_UNAVAILABLE', 'the key server has no identity yet');
    const a = verifyProvisionAuthorization(header, pa.trustedCas(), { keyServer: self, caller: who.spiffeId, serial: who.serial, action, now: Math.floor(Date.now() / 1000), ...(policy !== undefined ? { policy, epoch: epoch ?? Number.NaN } : {}) });
    return { jti: a.jti };
  };
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
    ...HARDENED_SERVER_OPTIONS,
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

  const caller = (req: FastifyRequest): KeyCaller => {
    const c = authenticate(req, trustDomain);
    return { spiffeId: c.spiffeId, serial: c.serial };
  };

  const observe = opts.observeEvaluate;
  const unseals = opts.unsealTelemetry;
  /** The caller and policy of an evaluate request, set by its handler once known (telemetry). */
  const evaluating = new WeakMap<FastifyRequest, { caller: string; policy: string }>();
  if (observe || unseals) {
    app.addHook('onResponse', async (req, reply) => {
      if (req.routeOptions.url !== '/v1/evaluate') return;
      observe?.(reply.elapsedTime / 1000);
      const who = unseals ? evaluating.get(req) : undefined;
      if (who === undefined) return; // not authenticated or refused before its body was read: no edge to count
      // Counters only: a refused unseal (403, Cedar or quarantine) is a denial; any other failure
      // (rate limited, unknown share, stale generation, bad input) an error.
      const e = unseals!.edge(who.caller);
      e.requests++;
      const status = reply.statusCode;
      if (status === 403) e.denials++;
      else if (status >= 300) e.errors++;
      e.bytesIn += Number(req.headers['content-length'] ?? 0) || 0;
      e.bytesOut += Number(reply.getHeader('content-length') ?? 0) || 0;
      e.latency(reply.elapsedTime);
      if (who.policy !== '') e.path(who.policy);
    });
  }

  app.get('/v1/healthz', async () => ({ status: 'ok', shares: store.list().length }) satisfies KeyServerHealthResponse);

  app.post('/v1/evaluate', async (req) => {
    const who = caller(req);
    if (unseals) evaluating.set(req, { caller: who.spiffeId, policy: '' });
    const b = body(req.body, ['policy', 'epoch', 'generation', 'b']);
    const policy = reqStr(b, 'policy', { max: 64 });
    // Only well-formed policy ids count as distinct policies (random strings would inflate it).
    if (unseals && isSecretPolicyId(policy)) evaluating.set(req, { caller: who.spiffeId, policy });
    const epoch = int(b, 'epoch', { min: 0, max: 0xffffffff }) as number;
    const generation = int(b, 'generation', { min: 1, max: 0xffffffff, optional: true });
    const B = b64(reqStr(b, 'b', { max: 64 }), 'b', B64URL_32);
    const ev = service.evaluate(who, { policy, epoch, B, ...(generation === undefined ? {} : { generation }) });
    return { index: ev.index, generation: ev.generation, z: Buffer.from(ev.Z).toString('base64url'), proof: Buffer.from(encodeProof(ev.proof)).toString('base64url') } satisfies EvaluateResponse;
  });

  /** Audits a provisioning call that did not go through (denied: an authorization refusal; else error) and rethrows. */
  const auditFailure = (audit: (outcome: KeyAuditEvent['outcome'], code?: keyof typeof ERROR_CODES) => void, err: unknown): never => {
    const code = isTesseraError(err) ? err.code : 'TESSERA_INTERNAL';
    audit(code === 'TESSERA_FORBIDDEN' || code === 'TESSERA_PROVISION_AUTHORIZATION_INVALID' ? 'denied' : 'error', code);
    throw err;
  };
  /** A provisioning route: admin only, (policy, epoch) from the path, audited whatever happens. */
  type Params = { Params: { policy: string; epoch: string } };
  const provisioning = async <T>(req: FastifyRequest<Params>, action: KeyAuditEvent['action'] & ShareAction, fn: (policy: string, epoch: number) => T): Promise<T> => {
    const who = caller(req);
    const { policy, epoch: epochText } = req.params;
    let authorization: string | undefined;
    const audit = (outcome: KeyAuditEvent['outcome'], code?: keyof typeof ERROR_CODES): void => {
      const ev: KeyAuditEvent = { at: new Date().toISOString(), action, actor: who.spiffeId, policy: isSecretPolicyId(policy) ? policy : '(invalid)', epoch: EPOCH_RE.test(epochText) && Number(epochText) <= 0xffffffff ? Number(epochText) : -1, outcome, ...(code ? { code } : {}), ...(authorization ? { authorization } : {}) };
      try { onAudit(ev); } catch { /* the sink reports its own failures */ }
    };
    try {
      authorization = mayProvision(req, who, action, policy, EPOCH_RE.test(epochText) ? Number(epochText) : Number.NaN).jti;
      if (!isSecretPolicyId(policy)) throw new TesseraError('TESSERA_BAD_REQUEST', `the policy id must be ${SECRET_POLICY_ID_RULE}`);
      if (!EPOCH_RE.test(epochText) || Number(epochText) > 0xffffffff) throw new TesseraError('TESSERA_BAD_REQUEST', 'the key epoch must be an integer in 0..2^32-1');
      const out = fn(policy, Number(epochText));
      audit('allowed');
      return out;
    } catch (err) {
      return auditFailure(audit, err);
    }
  };
  /** An exact list of distinct base64url points (never a bare string, never deduplicated silently). */
  const points = (b: Record<string, unknown>, field: string, min: number): Uint8Array[] => {
    const v = b[field];
    if (!Array.isArray(v) || v.length < min || v.length > 255) throw new TesseraError('TESSERA_BAD_REQUEST', `"${field}" must be a list of ${min} to 255 base64url points`);
    if (new Set(v).size !== v.length) throw new TesseraError('TESSERA_BAD_REQUEST', `"${field}" repeats a point`);
    return v.map((c: unknown) => b64(typeof c === 'string' ? c : '', field, B64URL_32));
  };
  const b64list = (ps: Uint8Array[]): string[] => ps.map((p) => Buffer.from(p).toString('base64url'));

  app.get('/v1/shares', async (req) => {
    const who = caller(req);
    mayProvision(req, who, 'secret:share-list');
    return { shares: store.list().map((s) => ({ policy: s.policyId, epoch: s.epoch, generation: s.generation, index: s.index, t: s.t, n: s.n, ...(s.pending ? { pending: s.pending } : {}) })) } satisfies ShareListResponse;
  });

  app.post<Params>('/v1/shares/:policy/:epoch/refresh', (req) => provisioning(req, 'secret:share-refresh', (policy, epoch) => {
    const b = body(req.body, ['from', 'delta', 'd']);
    const from = int(b, 'from', { min: 1, max: 0xffffffff - 1 }) as number;
    const delta = b64(reqStr(b, 'delta', { max: 64 }), 'delta', B64URL_32);
    try {
      const r = store.prepareRefresh(policy, epoch, from, delta, points(b, 'd', 1));
      return { policy, epoch, index: r.index, generation: r.generation, commitments: b64list(r.commitments) } satisfies RefreshShareResponse;
    } finally {
      delta.fill(0);
    }
  }));

  app.post<Params>('/v1/shares/:policy/:epoch/commit', (req) => provisioning(req, 'secret:share-commit', (policy, epoch) => {
    const b = body(req.body, ['generation', 'commitments']);
    const generation = int(b, 'generation', { min: 1, max: 0xffffffff }) as number;
    const { committed } = store.commitRefresh(policy, epoch, generation, points(b, 'commitments', 1));
    return { policy, epoch, generation, committed } satisfies CommitShareResponse;
  }));

  app.delete<Params>('/v1/shares/:policy/:epoch/pending', (req) => provisioning(req, 'secret:share-abort', (policy, epoch) => ({ policy, epoch, aborted: store.abortRefresh(policy, epoch) }) satisfies AbortShareResponse));

  app.delete<Params>('/v1/shares/:policy/:epoch', (req) => provisioning(req, 'secret:share-delete', (policy, epoch) => ({ policy, epoch, deleted: store.delete(policy, epoch) }) satisfies DeleteShareResponse));

  app.put<Params>('/v1/shares/:policy/:epoch', (req, reply) => provisioning(req, 'secret:share-install', (policy, epoch) => {
    const b = body(req.body, ['t', 'n', 'index', 'value', 'commitments']);
    const t = int(b, 't', { min: 1, max: 255 }) as number;
    const n = int(b, 'n', { min: 1, max: 255 }) as number;
    const index = int(b, 'index', { min: 1, max: 255 }) as number;
    const value = b64(reqStr(b, 'value', { max: 64 }), 'value', B64URL_32);
    const commitments = points(b, 'commitments', 1);
    if (commitments.length !== t) throw new TesseraError('TESSERA_SECRET_SHARE_INVALID', 'there must be exactly t distinct commitments');
    try {
      const { created } = store.put({ policyId: policy, epoch, t, n, index, value, commitments });
      void reply.code(201);
      return { policy, epoch, index, created } satisfies InstallShareResponse;
    } finally {
      value.fill(0);
    }
  }));

  // --- Distributed key generation ---------------------------------------------------------------
  const dkg = new DkgSessions({
    store,
    identity: () => {
      const m = opts.tls.current();
      return m === undefined ? undefined : { spiffeId: m.spiffeId, key: m.key };
    },
    trustedCas: () => {
      const m = opts.tls.current();
      return m === undefined ? [] : pemDecodeAll(m.bundlePem, 'CERTIFICATE');
    },
    trustDomain,
    ...(opts.dkg?.ttlMs !== undefined ? { ttlMs: opts.dkg.ttlMs } : {}),
    ...(opts.dkg?.maxSessions !== undefined ? { maxSessions: opts.dkg.maxSessions } : {}),
    ...(opts.observeDkg ? { onEvent: opts.observeDkg } : {}),
  });
  dkg.startSweeper();
  type DkgTarget = { policy?: string; epoch?: number; session?: string };
  type DkgAction = 'secret:dkg-start' | 'secret:dkg-next' | 'secret:dkg-commit' | 'secret:dkg-abort';
  /**
   * A DKG route: authorized like `provisioning` (an admin, or a provisioning authorization bound to
   * the session's policy and epoch), audited with the session id whatever happens. The target is
   * known from the session (or, for a start, read loosely from the body before it is checked).
   */
  const dkgRoute = <T>(req: FastifyRequest, action: DkgAction, target: DkgTarget, fn: () => T & { excluded?: number[] }): T => {
    const who = caller(req);
    let authorization: string | undefined;
    let excluded: number[] | undefined;
    const audit = (outcome: KeyAuditEvent['outcome'], code?: keyof typeof ERROR_CODES): void => {
      const ev: KeyAuditEvent = {
        at: new Date().toISOString(), action, actor: who.spiffeId,
        policy: isSecretPolicyId(target.policy) ? target.policy : '(invalid)',
        epoch: Number.isInteger(target.epoch) && target.epoch! >= 0 && target.epoch! <= 0xffffffff ? target.epoch! : -1,
        outcome, ...(code ? { code } : {}), ...(authorization ? { authorization } : {}),
        ...(target.session !== undefined ? { session: target.session } : {}),
        ...(excluded !== undefined && excluded.length > 0 ? { excluded } : {}),
      };
      try { onAudit(ev); } catch { /* the sink reports its own failures */ }
    };
    try {
      const policy = isSecretPolicyId(target.policy) ? target.policy : undefined;
      authorization = mayProvision(req, who, action, policy, policy !== undefined ? target.epoch ?? Number.NaN : undefined).jti;
      const out = fn();
      if (out.excluded !== undefined) {
        excluded = out.excluded;
        delete out.excluded;
      }
      audit('allowed');
      return out;
    } catch (err) {
      return auditFailure(audit, err);
    }
  };
  /** What a session id in a path names (validity is checked by the manager). */
  const sessionTarget = (id: string): DkgTarget => {
    const info = dkg.info(id);
    return { session: isDkgSessionId(id) ? id : '(invalid)', ...(info ? { policy: info.policy, epoch: info.epoch } : {}) };
  };
  type SessionParams = { Params: { session: string } };
  /**
   * DKG bodies may reach DKG_BODY_LIMIT (2 MiB, against 64 KiB elsewhere): a caller that is neither an
   * admin nor carries a provisioning authorization is refused, and audited, before its body is read.
   */
  const dkgLimit = (action: DkgAction) => ({
    bodyLimit: DKG_BODY_LIMIT,
    preParsing: async (req: FastifyRequest, _reply: FastifyReply, payload: RequestPayload): Promise<RequestPayload> => {
      if (isAdmin(caller(req)) || req.headers[PROVISION_AUTHORIZATION_HEADER] !== undefined) return payload;
      const session = (req.params as { session?: string }).session;
      return dkgRoute(req, action, session === undefined ? {} : sessionTarget(session), () => {
        throw new TesseraError('TESSERA_FORBIDDEN', 'this caller may not run a key generation');
      });
    },
  });

  app.post('/v1/dkg', dkgLimit('secret:dkg-start'), async (req) => {
    const p = (typeof req.body === 'object' && req.body !== null ? (req.body as { params?: unknown }).params : undefined) as { policy?: unknown; epoch?: unknown; session?: unknown } | undefined;
    const loose: DkgTarget = typeof p === 'object' && p !== null
      ? { ...(typeof p.policy === 'string' ? { policy: p.policy } : {}), ...(typeof p.epoch === 'number' ? { epoch: p.epoch } : {}), ...(p.session !== undefined ? { session: isDkgSessionId(p.session) ? p.session : '(invalid)' } : {}) }
      : {};
    return dkgRoute(req, 'secret:dkg-start', loose, () => dkg.start(req.body) satisfies DkgStartResponse);
  });
  app.post<SessionParams>('/v1/dkg/:session/next', dkgLimit('secret:dkg-next'), async (req) => dkgRoute(req, 'secret:dkg-next', sessionTarget(req.params.session), () => {
    const r = dkg.next(req.params.session, req.body);
    const excluded = r.done?.excluded.map((e) => e.index);
    return { ...r, ...(excluded ? { excluded } : {}) } satisfies DkgNextResponse;
  }));
  // A commit the relay could not deliver, found by the record it names (tessera secret policy commit).
  app.post('/v1/dkg/commit', dkgLimit('secret:dkg-commit'), async (req) => {
    // Verified once: its policy and epoch are what a provisioning authorization must name.
    const record = dkg.verifiedRecord(req.body);
    return dkgRoute(req, 'secret:dkg-commit', record ? { policy: record.id, epoch: record.epoch } : {}, () => dkg.commitRecord(req.body, record) satisfies DkgCommitResponse);
  });
  app.post<SessionParams>('/v1/dkg/:session/commit', dkgLimit('secret:dkg-commit'), async (req) => dkgRoute(req, 'secret:dkg-commit', sessionTarget(req.params.session), () => dkg.commit(req.params.session, req.body) satisfies DkgCommitResponse));
  app.delete<SessionParams>('/v1/dkg/:session', async (req) => dkgRoute(req, 'secret:dkg-abort', sessionTarget(req.params.session), () => dkg.abort(req.params.session) satisfies DkgAbortResponse));

  try {
    await app.listen({ host: opts.listen.host, port: opts.listen.port });
  } catch (err) {
    unwatch();
    dkg.close();
    throw listenFailure(err, 'the key server', `${opts.listen.host}:${opts.listen.port}`);
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
    dkg,
    async close() {
      unwatch();
      dkg.close();
      await app.close();
    },
  };
}
