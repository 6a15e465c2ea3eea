import { createHash, generateKeyPairSync, X509Certificate } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseJwksBundle, type SpiffeBundleJwks } from '../core/bundle.js';
import { TrustAnchors } from '../core/federation-trust.js';
import { writeFileAtomic } from '../core/files.js';
import type { FederatedBundlesFeed } from '../core/wire/federation.js';
import { createCsr } from '../core/csr.js';
import { TesseraError, isTesseraError } from '../core/errors.js';
import { createLogger, type Logger } from '../core/log.js';
import { parseSpiffeId } from '../core/spiffe-id.js';
import { pemDecodeAll, pemEncode } from '../core/x509.js';
import type { BundleWatchResponse, JoinRequest, RenewRequest, SvidResponse } from '../core/wire/control-plane.js';
import { ApiClient } from '../common/api-client.js';
import { StateDir, type AgentState, type Svid } from './svid/state.js';

export interface AgentOptions {
  serverUrl: string;
  dataDir: string;
  joinToken?: string;
  /** PEM file with the CA(s) to trust for the very first connection (before any bundle is on disk). */
  trustBundleFile?: string;
  /** Fraction of an SVID's life after which it is renewed (default 0.5: half life). */
  renewAt?: number;
  /** Long-poll time for bundle updates. */
  watchSeconds?: number;
  /**
   * Whether this agent long-polls the trust bundle itself (default true). A node agent lets one of its
   * workloads' agents follow it and hands new bundles to the others ({@link Agent.adoptBundle}).
   */
  followBundle?: boolean;
  log?: Logger;
}

export interface SvidEvent { spiffeId: string; notBefore: Date; notAfter: Date; serial: string; issuer: string; reason: 'join' | 'renew' | 'loaded' }
export interface BundleEvent { sequence: number; authorities: number }
/** The federated bundles held (trust domain -> JWK Set and PEM of its X.509 authorities). */
export interface FederatedBundle { jwks: SpiffeBundleJwks; pem: string }


const MIN_BACKOFF_MS = 500;
const FEDERATED_FILE = 'federated.json';
const MAX_BACKOFF_MS = 30_000;

/**
 * The workload's agent: bootstraps an identity from a one-time join token, keeps it fresh by
 * renewing over mTLS at half life (never with the token again), follows the trust bundle through
 * CA rotations, and keeps `svid.pem`, `svid.key` and `bundle.pem` on disk for legacy apps.
 *
 * Static stability: with a valid SVID on disk it starts and serves without the control plane;
 * outages only delay renewal, with backoff, until the SVID expires.
 */
export class Agent extends EventEmitter {
  private readonly files: StateDir;
  private readonly log: Logger;
  private state: AgentState | undefined;
  private svid: Svid | undefined;
  private bundlePem = '';
  private client: ApiClient | undefined;
  private renewTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private watchAbort = false;
  private renewFailures = 0;
  /** Federated bundles (issue 14): per trust domain, never merged with ours; `anchors` only when there are some. */
  private federated: ReadonlyMap<string, FederatedBundle> = new Map();
  private federationRevision = 0;
  /** The feed the federated bundles came from (a node agent hands it to its other workloads' agents). */
  private federatedFeedLast: FederatedBundlesFeed | undefined;
  private anchors: TrustAnchors | undefined;

  constructor(private readonly opts: AgentOptions) {
    super();
    this.files = new StateDir(opts.dataDir);
    this.log = opts.log ?? createLogger();
  }

  /** The current SVID and bundle, for building TLS contexts. Copies, not live state. */
  current(): { spiffeId: string; certPem: string; key: Svid['key']; bundlePem: string; notAfter: Date; trust?: TrustAnchors } | undefined {
    const s = this.svid;
    if (!s) return undefined;
    const m = { spiffeId: s.spiffeId, certPem: s.certPem, key: s.key, bundlePem: this.bundlePem, notAfter: new Date(s.notAfter) };
    return this.anchors ? { ...m, trust: this.anchors } : m;
  }

  /** The federated bundles held, by trust domain (the Workload API's federated_bundles). */
  federatedBundles(): ReadonlyMap<string, FederatedBundle> {
    return this.federated;
  }

  /** Whether `trustDomain` is another trust domain whose bundle this agent holds. */
  isFederated(trustDomain: string): boolean {
    return trustDomain !== this.state?.trustDomain && this.federated.has(trustDomain);
  }

  get spiffeId(): string | undefined {
    return this.svid?.spiffeId;
  }

  /** The registration entry this agent's identity came from (attributes such as site), as last seen. */
  get entry(): { attributes?: Record<string, string>; selectors?: string[] } | undefined {
    return this.state?.entry as { attributes?: Record<string, string>; selectors?: string[] } | undefined;
  }

  get trustDomain(): string | undefined {
    return this.state?.trustDomain;
  }

  /** The CA certificates (DER) of the current trust bundle. */
  trustedCas(): Buffer[] {
    return this.bundlePem ? pemDecodeAll(this.bundlePem, 'CERTIFICATE') : [];
  }

  /** Calls the control plane over mTLS with the current SVID (for the policy, decision and JWT paths). */
  call<T = Record<string, unknown>>(method: string, path: string, body?: unknown, opts?: { timeoutMs?: number }): Promise<T> {
    if (!this.client) return Promise.reject(new TesseraError('TESSERA_CREDENTIAL_MISSING', 'agent has no identity yet'));
    return this.client.call<T>(method, path, body, opts);
  }

  async start(): Promise<void> {
    this.state = this.files.readState();
    this.bundlePem = this.files.readBundle() ?? '';
    this.loadFederated();
    const tokenHash = this.opts.joinToken ? createHash('sha256').update(this.opts.joinToken).digest('hex') : undefined;
    if (this.state) {
      this.svid = this.files.readSvid(this.state.spiffeId);
      if (this.state.serverUrl !== this.opts.serverUrl) {
        this.log.warn('server URL differs from the one in the agent state; using the new one', { server: this.opts.serverUrl });
      }
    }
    const now = Date.now();
    const usable = this.svid && this.svid.notAfter > now;
    if (!usable && this.opts.joinToken && tokenHash !== this.state?.joinTokenHash) {
      await this.join(this.opts.joinToken, tokenHash!);
    } else if (this.svid && this.state) {
      this.buildClient();
      this.emitSvid('loaded');
      if (!usable) this.reportExpired();
    } else {
      throw new TesseraError('TESSERA_CONFIG_INVALID', this.opts.joinToken
        ? 'this join token was already used by this agent and there is no SVID on disk; create a new token'
        : 'no identity on disk: start the agent with --join-token (create one with `tessera token create --entry ID`)');
    }
    this.scheduleRenewal();
    if (this.opts.followBundle !== false) void this.watchBundle();
  }

  /**
   * A trust bundle another agent of this process received (a node agent follows the bundle once for
   * all its workloads): installed as if this agent had fetched it, never rolling back.
   */
  /** The federated bundles' feed last installed, if any (for {@link adoptFederated} by another agent). */
  federatedFeed(): FederatedBundlesFeed | undefined {
    return this.federatedFeedLast;
  }

  /**
   * Takes federated bundles another agent of the same node received (a newer revision only), as
   * {@link adoptBundle} does for the trust bundle: one bundle stream per node.
   */
  adoptFederated(feed: FederatedBundlesFeed): void {
    if (this.stopped || !this.state) return;
    this.applyFederated(feed);
  }

  adoptBundle(pem: string, sequence: number): void {
    if (this.stopped || !this.svid || !this.state || sequence <= this.state.bundleSequence) return;
    this.applyBundle(pem, sequence);
    this.buildClient();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.watchAbort = true;
    if (this.renewTimer) clearTimeout(this.renewTimer);
    this.client?.close();
  }

  /** Renews now (also used by tests and `kill -HUP`-style triggers). */
  async renew(): Promise<void> {
    if (!this.client || !this.state) throw new TesseraError('TESSERA_CREDENTIAL_MISSING', 'agent has no identity yet');
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const csr = pemEncode(createCsr({ privateKey, publicKey, uriSan: this.state.spiffeId }), 'CERTIFICATE REQUEST');
    const res = await this.client.call<SvidResponse>('POST', '/v1/svid/renew', { csr, bundle_sequence: this.state.bundleSequence } satisfies RenewRequest);
    this.accept(res, privateKey, 'renew');
  }

  private async join(token: string, tokenHash: string): Promise<void> {
    const bootstrapCa = this.opts.trustBundleFile ? readFileSync(this.opts.trustBundleFile, 'utf8') : this.bundlePem;
    if (!bootstrapCa || pemDecodeAll(bootstrapCa, 'CERTIFICATE').length === 0) {
      throw new TesseraError('TESSERA_CREDENTIAL_MISSING', 'to join, pass --trust-bundle with the control plane\'s bundle.pem (it is in the server\'s data directory)');
    }
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const csr = pemEncode(createCsr({ privateKey, publicKey }), 'CERTIFICATE REQUEST');
    const client = new ApiClient(this.opts.serverUrl, { ca: bootstrapCa });
    let attempt = 0;
    try {
      for (;;) {
        try {
          const res = await client.call<SvidResponse>('POST', '/v1/agent/join', { join_token: token, csr } satisfies JoinRequest);
          const id = parseSpiffeId(res.spiffe_id);
          this.state = { spiffeId: id.id, trustDomain: id.trustDomain, serverUrl: this.opts.serverUrl, bundleSequence: 0, joinTokenHash: tokenHash };
          this.accept(res, privateKey, 'join');
          return;
        } catch (err) {
          // Only an unreachable server is worth retrying: a refused token stays refused.
          if (!isTesseraError(err) || err.code !== 'TESSERA_SERVER_UNREACHABLE' || this.stopped) throw err;
          const wait = backoff(attempt++);
          this.log.warn('control plane unreachable; retrying join', { in_ms: wait, error: err.message });
          await sleep(wait);
        }
      }
    } finally {
      client.close();
    }
  }

  private accept(res: SvidResponse, key: Svid['key'], reason: SvidEvent['reason']): void {
    const state = this.state!;
    if (res.spiffe_id !== state.spiffeId) throw new TesseraError('TESSERA_CSR_IDENTITY_MISMATCH', 'the control plane issued an unexpected identity');
    const cert = new X509Certificate(res.svid_pem);
    if (!cert.checkPrivateKey(key)) throw new TesseraError('TESSERA_INTERNAL', 'issued certificate does not match our key');
    this.svid = { spiffeId: res.spiffe_id, certPem: res.svid_pem, key, notBefore: Date.parse(cert.validFrom), notAfter: Date.parse(cert.validTo), serial: cert.serialNumber };
    this.files.writeSvid(this.svid);
    if (res.bundle_pem !== undefined) this.applyBundle(res.bundle_pem, res.bundle_sequence);
    this.state = { ...state, serverUrl: this.opts.serverUrl, ...(res.entry ? { entry: res.entry } : {}) };
    this.files.writeState(this.state);
    this.buildClient();
    this.renewFailures = 0;
    this.emitSvid(reason);
  }

  private applyBundle(pem: string, sequence: number): void {
    if (!this.state || sequence < this.state.bundleSequence) return; // never roll back
    const changed = pem !== this.bundlePem;
    this.state.bundleSequence = sequence;
    if (!changed) return;
    if (pemDecodeAll(pem, 'CERTIFICATE').length === 0) throw new TesseraError('TESSERA_BAD_REQUEST', 'empty bundle from the control plane');
    this.bundlePem = pem;
    this.rebuildAnchors();
    this.files.writeBundle(pem);
    this.files.writeState(this.state);
    this.emit('bundle', { sequence, authorities: pemDecodeAll(pem, 'CERTIFICATE').length } satisfies BundleEvent);
  }

  /**
   * Installs the federated bundles of `feed` (a newer revision only). A bundle that does not parse is
   * left out (and logged): its trust domain's workloads are refused rather than trusted wrongly.
   */
  private applyFederated(feed: FederatedBundlesFeed, persist = true): void {
    if (typeof feed !== 'object' || feed === null || !Number.isSafeInteger(feed.revision) || feed.revision <= this.federationRevision && persist) return;
    const next = new Map<string, FederatedBundle>();
    for (const [td, jwks] of Object.entries(feed.bundles ?? {})) {
      if (td === this.state?.trustDomain) continue;
      try {
        const b = parseJwksBundle(jwks, td);
        next.set(td, { jwks, pem: b.x509Authorities.map((d) => pemEncode(d, 'CERTIFICATE')).join('') });
      } catch (err) {
        this.log.warn('federated bundle refused', { trust_domain: td, error: (err as Error).message });
      }
    }
    this.federated = next;
    this.federationRevision = feed.revision;
    this.federatedFeedLast = feed;
    this.rebuildAnchors();
    if (persist) writeFileAtomic(join(this.opts.dataDir, FEDERATED_FILE), `${JSON.stringify(feed)}\n`, 0o644);
    this.emit('federated', { revision: feed.revision, trustDomains: [...next.keys()] });
    // Sidecars rebuild their TLS contexts on 'bundle' (the trusted authorities changed).
    this.emit('bundle', { sequence: this.state?.bundleSequence ?? 0, authorities: this.trustedCas().length } satisfies BundleEvent);
  }

  private loadFederated(): void {
    const file = join(this.opts.dataDir, FEDERATED_FILE);
    if (!existsSync(file)) return;
    try {
      this.applyFederated(JSON.parse(readFileSync(file, 'utf8')) as FederatedBundlesFeed, false);
    } catch (err) {
      this.log.warn('federated bundles on disk are unreadable; waiting for the control plane', { error: (err as Error).message });
    }
  }

  private rebuildAnchors(): void {
    this.anchors = this.federated.size > 0 && this.state ? new TrustAnchors(this.state.trustDomain, this.bundlePem, new Map([...this.federated].map(([td, f]) => [td, f.pem]))) : undefined;
  }

  private buildClient(): void {
    const tls = { ca: this.bundlePem, cert: this.svid!.certPem, key: this.svid!.key.export({ format: 'pem', type: 'pkcs8' }) as string, serverId: `spiffe://${this.state!.trustDomain}/tessera/server` };
    if (this.client) this.client.setTls(tls);
    else this.client = new ApiClient(this.opts.serverUrl, tls);
  }

  private emitSvid(reason: SvidEvent['reason']): void {
    const s = this.svid!;
    const issuer = /CN=([^\n]+)/.exec(new X509Certificate(s.certPem).issuer)?.[1] ?? '';
    this.emit('svid', { spiffeId: s.spiffeId, notBefore: new Date(s.notBefore), notAfter: new Date(s.notAfter), serial: s.serial, issuer, reason } satisfies SvidEvent);
  }

  private reportExpired(): void {
    const msg = 'SVID expired: the agent cannot renew it. Create a new join token (tessera token create --entry ID) and restart the agent with --join-token';
    this.log.error(msg, { spiffe_id: this.svid?.spiffeId, expired_at: new Date(this.svid?.notAfter ?? 0).toISOString() });
    this.emit('expired', { spiffeId: this.svid?.spiffeId, notAfter: new Date(this.svid?.notAfter ?? 0) });
  }

  private scheduleRenewal(delayMs?: number): void {
    if (this.stopped || !this.svid) return;
    const { notBefore, notAfter } = this.svid;
    const at = notBefore + (notAfter - notBefore) * (this.opts.renewAt ?? 0.5);
    const wait = delayMs ?? Math.max(0, at - Date.now());
    if (this.renewTimer) clearTimeout(this.renewTimer);
    this.renewTimer = setTimeout(() => void this.renewLoop(), Math.min(wait, 2 ** 31 - 1));
    this.renewTimer.unref?.();
  }

  private async renewLoop(): Promise<void> {
    if (this.stopped) return;
    try {
      await this.renew();
      this.scheduleRenewal();
    } catch (err) {
      if (this.stopped) return;
      const expired = (this.svid?.notAfter ?? 0) <= Date.now();
      if (expired) this.reportExpired();
      const remaining = (this.svid?.notAfter ?? 0) - Date.now();
      // Back off, but retry often enough to renew before expiry while the control plane is away.
      const wait = Math.min(backoff(this.renewFailures++), expired ? MAX_BACKOFF_MS : Math.max(MIN_BACKOFF_MS, remaining / 4));
      this.log.warn('renewal failed; will retry', { code: isTesseraError(err) ? err.code : 'ERROR', error: (err as Error).message, retry_in_ms: Math.round(wait) });
      this.emit('renew-failed', { error: err, retryInMs: wait });
      this.scheduleRenewal(wait);
    }
  }

  /** Long-polls the bundle so that CA rotations reach the agent within a second. */
  private async watchBundle(): Promise<void> {
    let failures = 0;
    const seconds = this.opts.watchSeconds ?? 25;
    while (!this.watchAbort) {
      try {
        const after = this.state?.bundleSequence ?? 0;
        const res = await this.client!.call<BundleWatchResponse>('GET', `/v1/bundle/watch?after=${after}&timeout_seconds=${seconds}&federation_after=${this.federationRevision}`, undefined, { timeoutMs: (seconds + 10) * 1000 });
        if (res.changed) {
          this.applyBundle(res.bundle_pem, res.sequence);
          this.buildClient();
        }
        if (res.federation !== undefined) this.applyFederated(res.federation);
        failures = 0;
      } catch (err) {
        if (this.watchAbort) return;
        const wait = backoff(failures++);
        this.log.debug('bundle watch failed; will retry', { error: (err as Error).message, retry_in_ms: Math.round(wait) });
        await sleep(wait);
      }
    }
  }
}

function backoff(attempt: number): number {
  const base = Math.min(MAX_BACKOFF_MS, MIN_BACKOFF_MS * 2 ** Math.min(attempt, 10));
  return base / 2 + Math.random() * (base / 2);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref?.());
}
