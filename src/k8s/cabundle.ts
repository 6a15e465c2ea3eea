/**
 * Keeps `webhooks[*].clientConfig.caBundle` of the webhook's MutatingWebhookConfiguration equal to
 * base64(the webhook agent's trust bundle PEM), through the Kubernetes API, so that a Tessera CA
 * rotation never leaves the API server with a caBundle that cannot verify the webhook's renewed
 * SVID (failurePolicy Fail: every pod of an opted-in namespace would be refused).
 *
 * When: at start, on every agent `bundle` event (a prepared CA is published in the bundle before it
 * signs anything, so patching then is in time), and every `resyncMs` (a GET only; it repairs a
 * caBundle someone overwrote, e.g. with an old copy).
 *
 * How: GET the object; when a webhook's caBundle differs, one JSON Patch
 * (`application/json-patch+json`) with a `test` of `/metadata/resourceVersion` (so a concurrent
 * writer's change is never overwritten blindly) and a `replace` (or `add`) of each differing
 * caBundle. Nothing is written when every caBundle already holds the bundle. A 409 Conflict or a 422
 * (the API server's answer to a failed `test`) means the object changed: GET again at once (a few
 * times). Any other failure (unreachable, timeout, 401, 403, 5xx) is logged and retried with
 * exponential backoff; a newer bundle starts a new attempt at once. It never throws to its caller.
 *
 * Credentials as in-cluster Kubernetes clients read them: the API at
 * https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT, the service account's token file (read
 * again on every call: projected tokens rotate) sent as a bearer token, and its ca.crt checked as
 * the API server's CA. The token is never logged nor kept beyond one call.
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { TesseraError, isTesseraError } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import { pemDecodeAll } from '../core/x509.js';
import { MIN_TLS_VERSION } from '../common/tls-source.js';
import type { PatchOp } from './admission.js';

export const IN_CLUSTER_CREDENTIALS_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';
export const DEFAULT_WEBHOOK_CONFIGURATION = 'tessera-webhook';
const MWC_PATH = '/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/';
const MAX_RESPONSE_BYTES = 1024 * 1024;
/** Immediate re-GETs after a conflict before falling back to the backoff. */
const CONFLICT_RETRIES = 4;

export interface KubeApiOptions {
  /** https://HOST:PORT of the API server; default from KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT. */
  apiUrl?: string;
  /** Directory with `token` and `ca.crt`; default the in-cluster service account mount. */
  credentialsDir?: string;
  /** Per-request bound (connect + answer), default 10 s. */
  timeoutMs?: number;
}

/** The API URL of `opts`, or of the in-cluster environment; TESSERA_CONFIG_INVALID when neither says. */
export function kubeApiUrl(apiUrl: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  let raw = apiUrl;
  if (raw === undefined) {
    const host = env.KUBERNETES_SERVICE_HOST;
    const port = env.KUBERNETES_SERVICE_PORT;
    if (!host || !port) {
      throw new TesseraError('TESSERA_CONFIG_INVALID', 'keeping caBundle in step needs the Kubernetes API: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set (not in a pod?); pass --kube-api https://HOST:PORT, or --no-patch-ca-bundle');
    }
    raw = `https://${host.includes(':') ? `[${host}]` : host}:${port}`;
  }
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new TesseraError('TESSERA_CONFIG_INVALID', '--kube-api must be an https:// URL');
  }
  if (url.protocol !== 'https:' || url.username || url.password || url.search || url.hash) {
    throw new TesseraError('TESSERA_CONFIG_INVALID', '--kube-api must be an https:// URL without credentials, query or fragment');
  }
  return url.origin + url.pathname.replace(/\/+$/, '');
}

function readCredential(dir: string, name: 'token' | 'ca.crt'): string {
  let text: string;
  try {
    text = readFileSync(join(dir, name), 'utf8');
  } catch (err) {
    throw new TesseraError('TESSERA_CREDENTIAL_MISSING', `the Kubernetes service account ${name} cannot be read from ${dir} (${(err as NodeJS.ErrnoException).code ?? 'error'}): mount the webhook's service account token (automountServiceAccountToken: true), pass --kube-credentials-dir, or --no-patch-ca-bundle`);
  }
  if (name === 'token') {
    const token = text.trim();
    if (token === '' || /\s/.test(token)) throw new TesseraError('TESSERA_CREDENTIAL_MISSING', `the Kubernetes service account token in ${dir} is empty or not one token`);
    return token;
  }
  if (pemDecodeAll(text, 'CERTIFICATE').length === 0) throw new TesseraError('TESSERA_CREDENTIAL_MISSING', `${join(dir, 'ca.crt')} holds no PEM certificate (the Kubernetes API server's CA)`);
  return text;
}

/** Checks, at start, that the in-cluster credentials are there (the token and CA are read again on every call). */
export function checkKubeCredentials(dir: string): void {
  readCredential(dir, 'ca.crt');
  readCredential(dir, 'token');
}

/** A failed Kubernetes API call: `status` 0 when no HTTP answer came (unreachable, timeout, TLS). */
export class KubeApiError extends Error {
  constructor(readonly status: number, readonly reason: string, message: string) {
    super(message);
  }
}

interface KubeAnswer { status: number; body: Record<string, any> }

/** The few Kubernetes API calls the webhook makes, with in-cluster credentials. */
export class KubeClient {
  readonly url: string;
  private readonly dir: string;
  private readonly timeoutMs: number;

  constructor(opts: KubeApiOptions = {}, env: NodeJS.ProcessEnv = process.env) {
    this.url = kubeApiUrl(opts.apiUrl, env);
    this.dir = opts.credentialsDir ?? IN_CLUSTER_CREDENTIALS_DIR;
    this.timeoutMs = opts.timeoutMs ?? 10_000;
  }

  /** One call: 2xx → its JSON body; anything else → KubeApiError (the token never in it). */
  async call(method: 'GET' | 'PATCH', path: string, body?: { type: string; json: unknown }, signal?: AbortSignal): Promise<Record<string, any>> {
    const ca = readCredential(this.dir, 'ca.crt');
    const token = readCredential(this.dir, 'token');
    const scrub = (s: string): string => s.split(token).join('[token]');
    const answer = await new Promise<KubeAnswer>((resolve, reject) => {
      const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body.json));
      const target = new URL(this.url + path);
      const req = request(target, {
        method, ca, agent: false, minVersion: MIN_TLS_VERSION, timeout: this.timeoutMs, ...(signal ? { signal } : {}),
        headers: {
          accept: 'application/json', authorization: `Bearer ${token}`, 'user-agent': 'tessera-k8s-webhook',
          ...(payload ? { 'content-type': body!.type, 'content-length': payload.length } : {}),
        },
      }, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_RESPONSE_BYTES) req.destroy(new Error(`the answer exceeds ${MAX_RESPONSE_BYTES} bytes`));
          else chunks.push(c);
        });
        res.on('end', () => {
          let parsed: Record<string, any> = {};
          try {
            const text = Buffer.concat(chunks).toString('utf8');
            parsed = text ? JSON.parse(text) as Record<string, any> : {};
          } catch {
            parsed = {};
          }
          resolve({ status: res.statusCode ?? 0, body: typeof parsed === 'object' && parsed !== null ? parsed : {} });
        });
        res.on('error', reject);
      });
      const deadline = setTimeout(() => req.destroy(new Error(`no answer within ${this.timeoutMs} ms`)), this.timeoutMs);
      req.on('timeout', () => req.destroy(new Error(`no answer within ${this.timeoutMs} ms`)));
      req.on('error', (err) => reject(err));
      req.on('close', () => clearTimeout(deadline));
      req.end(payload);
    }).catch((err: unknown) => {
      const e = err as NodeJS.ErrnoException;
      throw new KubeApiError(0, e.code === 'ECONNREFUSED' || e.code === 'ENOTFOUND' || e.code === 'EHOSTUNREACH' ? 'unreachable' : 'transport', scrub(`${method} ${path}: ${e.code ? `${e.code} ` : ''}${e.message}`));
    });
    if (answer.status >= 200 && answer.status < 300) return answer.body;
    // A Kubernetes Status object: its reason (Unauthorized, Forbidden, Conflict, Invalid, NotFound...) and message.
    const reason = typeof answer.body.reason === 'string' ? answer.body.reason : `HTTP${answer.status}`;
    const message = typeof answer.body.message === 'string' ? answer.body.message.slice(0, 300) : '';
    throw new KubeApiError(answer.status, reason, scrub(`${method} ${path}: ${answer.status} ${reason}${message ? `: ${message}` : ''}`));
  }
}

/** What the trust bundle comes from: the webhook's agent (its `bundle` event and current PEM). */
export interface BundleSource {
  current(): { bundlePem: string } | undefined;
  on(event: 'bundle', fn: (e: { sequence: number }) => void): unknown;
  off(event: 'bundle', fn: (e: { sequence: number }) => void): unknown;
}

export interface CaBundleStatus {
  /** Whether caBundle was last seen equal to the trust bundle (after a patch or a GET). */
  inStep: boolean;
  /** Bundle sequence of the last bundle written or found in place (undefined: not yet). */
  sequence?: number;
  /** SHA-256 fingerprints of the CAs in it. */
  authorities?: string[];
  patches: number;
  lastPatchedAt?: string;
  lastCheckedAt?: string;
  /** The last failure, until a later attempt succeeds (HTTP status 0: no answer). */
  lastError?: { at: string; status: number; reason: string; message: string };
}

export interface CaBundlePatcherOptions {
  source: BundleSource;
  kube: KubeClient;
  /** The MutatingWebhookConfiguration's name. */
  configuration: string;
  log: Logger;
  /** The bundle sequence the source holds at start (the agent emits none for it). */
  initialSequence?: number;
  retryMinMs?: number;
  retryMaxMs?: number;
  /** Every so often, GET and patch if someone changed caBundle (0: never). Default 5 min. */
  resyncMs?: number;
}

/** The JSON Patch that makes every webhook's caBundle `want` (empty when nothing differs). */
export function caBundlePatch(obj: Record<string, any>, want: string): PatchOp[] {
  const webhooks: unknown = obj.webhooks;
  if (!Array.isArray(webhooks)) return [];
  const ops: PatchOp[] = [];
  webhooks.forEach((w: any, i) => {
    const cc = w?.clientConfig;
    if (typeof cc !== 'object' || cc === null || cc.caBundle === want) return;
    ops.push({ op: cc.caBundle === undefined ? 'add' : 'replace', path: `/webhooks/${i}/clientConfig/caBundle`, value: want });
  });
  return ops;
}

function fingerprints(pem: string): string[] {
  return pemDecodeAll(pem, 'CERTIFICATE').map((der) => new X509Certificate(der).fingerprint256);
}

export class CaBundlePatcher {
  private readonly status: CaBundleStatus = { inStep: false, patches: 0 };
  private sequence: number | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private failures = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private resyncTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** Ends a call in flight at stop(). */
  private readonly abort = new AbortController();
  private readonly onBundle = (e: { sequence: number }): void => {
    this.sequence = e.sequence;
    this.failures = 0; // a new bundle is worth trying at once
    void this.sync();
  };

  constructor(private readonly opts: CaBundlePatcherOptions) {
    this.sequence = opts.initialSequence;
  }

  /** Subscribes to the source and makes the first attempt (in the background). */
  start(): void {
    this.opts.source.on('bundle', this.onBundle);
    const every = this.opts.resyncMs ?? 300_000;
    if (every > 0) {
      this.resyncTimer = setInterval(() => void this.sync(), every);
      this.resyncTimer.unref();
    }
    void this.sync();
  }

  stop(): void {
    this.stopped = true;
    this.abort.abort();
    this.opts.source.off('bundle', this.onBundle);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.resyncTimer) clearInterval(this.resyncTimer);
  }

  /** A copy of the current status (for /healthz and logs). */
  current(): CaBundleStatus {
    return structuredClone(this.status);
  }

  /** Settles when the attempt under way (and one asked for meanwhile) is over. Never rejects. */
  sync(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (this.running) {
      this.again = true;
      return this.running;
    }
    if (this.retryTimer) {
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
    }
    this.running = (async () => {
      do {
        this.again = false;
        await this.attempt();
      } while (this.again && !this.stopped);
    })().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async attempt(): Promise<void> {
    const pem = this.opts.source.current()?.bundlePem ?? '';
    if (pemDecodeAll(pem, 'CERTIFICATE').length === 0) return; // no bundle yet: the first `bundle` event brings one
    const want = Buffer.from(pem, 'utf8').toString('base64');
    const sequence = this.sequence;
    const { kube, configuration, log } = this.opts;
    const path = MWC_PATH + encodeURIComponent(configuration);
    try {
      for (let conflicts = 0; ; conflicts++) {
        const obj = await kube.call('GET', path, undefined, this.abort.signal);
        const ops = caBundlePatch(obj, want);
        const now = new Date().toISOString();
        if (ops.length === 0) {
          const webhooks: unknown[] = Array.isArray(obj.webhooks) ? obj.webhooks : [];
          if (webhooks.length === 0 || !webhooks.every((w: any) => w?.clientConfig?.caBundle === want)) {
            throw new KubeApiError(200, 'NoClientConfig', `${configuration} has no webhooks with a clientConfig to set caBundle on`);
          }
          if (!this.status.inStep || this.status.sequence !== sequence) log.info('caBundle already holds the trust bundle', { configuration, bundle_sequence: sequence });
          this.succeed({ sequence, authorities: fingerprints(pem), lastCheckedAt: now });
          return;
        }
        const resourceVersion: unknown = obj.metadata?.resourceVersion;
        if (typeof resourceVersion !== 'string') throw new KubeApiError(200, 'NoResourceVersion', `${configuration} has no metadata.resourceVersion`);
        try {
          await kube.call('PATCH', path, { type: 'application/json-patch+json', json: [{ op: 'test', path: '/metadata/resourceVersion', value: resourceVersion }, ...ops] }, this.abort.signal);
        } catch (err) {
          // 409: the object changed under the write; 422: our `test` of resourceVersion failed. Read it again.
          if (err instanceof KubeApiError && (err.status === 409 || err.status === 422) && conflicts < CONFLICT_RETRIES && !this.stopped) {
            log.info('caBundle patch met a concurrent change; reading the object again', { configuration, status: err.status });
            continue;
          }
          throw err;
        }
        this.status.patches += 1;
        this.succeed({ sequence, authorities: fingerprints(pem), lastCheckedAt: now, lastPatchedAt: now });
        log.info('caBundle set to the trust bundle', { configuration, webhooks: ops.length, bundle_sequence: sequence, authorities: this.status.authorities!.length });
        return;
      }
    } catch (err) {
      // A KubeApiError, or the service account files unreadable (TESSERA_CREDENTIAL_MISSING: the token rotated away?).
      const e = err instanceof KubeApiError ? err : new KubeApiError(0, isTesseraError(err) ? err.code : 'error', (err as Error).message);
      this.status.inStep = false;
      this.status.lastError = { at: new Date().toISOString(), status: e.status, reason: e.reason, message: e.message };
      if (this.stopped) return;
      const base = Math.min(this.opts.retryMaxMs ?? 60_000, (this.opts.retryMinMs ?? 1000) * 2 ** Math.min(this.failures++, 16));
      const wait = Math.round(base / 2 + Math.random() * (base / 2));
      log.warn('caBundle could not be set; will retry', { configuration, status: e.status, reason: e.reason, error: e.message, retry_in_ms: wait, bundle_sequence: sequence });
      if (this.retryTimer) clearTimeout(this.retryTimer);
      this.retryTimer = setTimeout(() => {
        this.retryTimer = undefined;
        void this.sync();
      }, wait);
      this.retryTimer.unref();
    }
  }

  private succeed(s: Pick<CaBundleStatus, 'sequence' | 'authorities' | 'lastCheckedAt' | 'lastPatchedAt'>): void {
    this.failures = 0;
    delete this.status.lastError;
    this.status.inStep = true;
    if (s.sequence !== undefined) this.status.sequence = s.sequence;
    this.status.authorities = s.authorities;
    this.status.lastCheckedAt = s.lastCheckedAt;
    if (s.lastPatchedAt !== undefined) this.status.lastPatchedAt = s.lastPatchedAt;
  }
}
