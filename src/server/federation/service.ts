/**
 * Federation with other trust domains (issue 14, SPIFFE_Federation.md). Each relationship names a
 * foreign trust domain, its bundle endpoint and profile; the leader fetches that endpoint at the
 * bundle's refresh hint (bounded), keeps the last good bundle per trust domain in the store (never
 * merged with ours), refuses a bundle of another trust domain or with a sequence going backwards, and
 * keeps the last good bundle when the endpoint fails. Every change bumps the store's revision, which
 * agents long-poll (GET /v1/bundle/watch?federation_after=REV) to receive the federated bundles.
 */
import { EventEmitter } from 'node:events';
import { bundleToJwks, parseJwksBundle, type BundleContent, type SpiffeBundleJwks } from '../../core/bundle.js';
import { TesseraError, isTesseraError } from '../../core/errors.js';
import {
  MAX_REFRESH_SECONDS, MIN_REFRESH_SECONDS, checkFederatedBundle, fetchBundleText, parseFederationSpec, refreshDelayMs, sameAuthorities,
} from '../../core/federation.js';
import type { Logger } from '../../core/log.js';
import { parseSpiffeId } from '../../core/spiffe-id.js';
import { pemEncode } from '../../core/x509.js';
import type { FederatedBundlesFeed, FederationView } from '../../core/wire/federation.js';
import type { FederationRecord, FederationStore } from '../store/federation.sqlite.js';

export interface FederationSettings {
  /** Bounds on the refresh interval, seconds (the foreign bundle's hint is clamped to them). */
  minRefreshSeconds: number;
  maxRefreshSeconds: number;
  /** Our own bundle's `spiffe_refresh_hint` (GET /v1/bundle and the https_web endpoint). */
  refreshHintSeconds: number;
  fetchTimeoutMs: number;
}

export const DEFAULT_FEDERATION_SETTINGS: FederationSettings = {
  minRefreshSeconds: 5, maxRefreshSeconds: MAX_REFRESH_SECONDS, refreshHintSeconds: 300, fetchTimeoutMs: 10_000,
};

interface Held { rec: FederationRecord; bundle?: BundleContent; jwks?: SpiffeBundleJwks; nextAt: number }

const pemOf = (b: BundleContent): string => b.x509Authorities.map((d) => pemEncode(d, 'CERTIFICATE')).join('');

export class FederationService extends EventEmitter {
  private held = new Map<string, Held>();
  private rev = -1;
  private feedCache: FederatedBundlesFeed | undefined;
  private refreshing = new Set<string>();
  readonly settings: FederationSettings;

  constructor(private readonly o: { store: FederationStore; trustDomain: string; now: () => number; log: Logger; settings?: Partial<FederationSettings> }) {
    super();
    this.setMaxListeners(0);
    this.settings = { ...DEFAULT_FEDERATION_SETTINGS, ...o.settings };
    const s = this.settings;
    if (!(s.minRefreshSeconds >= MIN_REFRESH_SECONDS && s.maxRefreshSeconds >= s.minRefreshSeconds && s.refreshHintSeconds >= 1)) {
      throw new TesseraError('TESSERA_CONFIG_INVALID', 'federation refresh bounds must satisfy 1 <= min <= max, and the refresh hint must be >= 1 s');
    }
  }

  /** The change counter agents long-poll. */
  revision(): number {
    return this.rev;
  }

  /** Reloads from the store when another process (or this one) changed it. Emits 'bundle' on change. */
  async sync(): Promise<void> {
    const rev = await this.o.store.federationRevision();
    if (rev === this.rev) return;
    const rows = await this.o.store.listFederations();
    const next = new Map<string, Held>();
    for (const rec of rows) {
      const before = this.held.get(rec.trustDomain);
      const h: Held = { rec, nextAt: before?.nextAt ?? this.o.now() };
      if (rec.bundleJson !== undefined) {
        try {
          h.bundle = parseJwksBundle(rec.bundleJson, rec.trustDomain);
          h.jwks = bundleToJwks(h.bundle);
        } catch (err) {
          this.o.log.error('stored federated bundle is unreadable', { trust_domain: rec.trustDomain, error: String(err) });
        }
      }
      next.set(rec.trustDomain, h);
    }
    this.held = next;
    this.rev = rev;
    this.feedCache = undefined;
    this.emit('bundle');
  }

  /** The federated bundles for agents (cached per revision). */
  feed(): FederatedBundlesFeed {
    if (this.feedCache === undefined) {
      const bundles: Record<string, SpiffeBundleJwks> = {};
      for (const [td, h] of this.held) if (h.jwks !== undefined) bundles[td] = h.jwks;
      this.feedCache = { revision: this.rev, bundles };
    }
    return this.feedCache;
  }

  list(): FederationView[] {
    return [...this.held.values()].map((h) => this.view(h));
  }

  show(trustDomain: string): { view: FederationView; jwks?: SpiffeBundleJwks } {
    const h = this.held.get(trustDomain);
    if (h === undefined) throw new TesseraError('TESSERA_FEDERATION_NOT_FOUND', `no federation with ${trustDomain.slice(0, 255)}`);
    return { view: this.view(h), ...(h.jwks ? { jwks: h.jwks } : {}) };
  }

  /**
   * Adds a relationship. A bootstrap bundle (JWK Set text) is checked and stored first; then the
   * endpoint is fetched once: when that fails nothing is added (a wrong URL, profile or endpoint ID
   * is told at once, not found later in `federation show`). Later failures keep the last good bundle.
   */
  async add(input: { trustDomain: unknown; endpoint: unknown; profile: unknown; endpointId?: unknown; bundle?: string; caPem?: string }, by: string): Promise<{ view: FederationView }> {
    const spec = parseFederationSpec(input, this.o.trustDomain);
    if (spec.profile === 'https_spiffe') {
      const endpointTd = parseSpiffeId(spec.endpointId!).trustDomain;
      if (endpointTd !== spec.trustDomain && endpointTd !== this.o.trustDomain && !this.held.has(endpointTd)) {
        throw new TesseraError('TESSERA_FEDERATION_INVALID', `the endpoint SPIFFE ID's trust domain ${endpointTd} is neither ${spec.trustDomain} nor federated`);
      }
      if (endpointTd === spec.trustDomain && input.bundle === undefined) throw new TesseraError('TESSERA_FEDERATION_INVALID', 'https_spiffe needs a bootstrap bundle of the endpoint\'s trust domain (--bundle FILE)');
    }
    if (input.caPem !== undefined && spec.profile !== 'https_web') throw new TesseraError('TESSERA_FEDERATION_INVALID', '--ca applies to the https_web profile only');
    if (input.caPem !== undefined && !/-----BEGIN CERTIFICATE-----/.test(input.caPem)) throw new TesseraError('TESSERA_FEDERATION_INVALID', '--ca must be a PEM file of CA certificates');
    const boot = input.bundle !== undefined ? checkFederatedBundle(spec.trustDomain, input.bundle) : undefined;
    const rec: FederationRecord = {
      trustDomain: spec.trustDomain, endpoint: spec.endpoint, profile: spec.profile, createdAt: this.o.now(), createdBy: by,
      ...(spec.endpointId ? { endpointId: spec.endpointId } : {}), ...(input.caPem ? { caPem: input.caPem } : {}),
      ...(boot ? { bundleJson: JSON.stringify(bundleToJwks(boot)), sequence: boot.sequence, refreshedAt: this.o.now() } : {}),
    };
    if (!(await this.o.store.insertFederation(rec))) throw new TesseraError('TESSERA_CONFLICT', `${spec.trustDomain} is already federated (remove it first)`);
    await this.sync();
    try {
      await this.refresh(spec.trustDomain);
    } catch (err) {
      await this.o.store.deleteFederation(spec.trustDomain);
      await this.sync();
      throw err;
    }
    return { view: this.show(spec.trustDomain).view };
  }

  async remove(trustDomain: string): Promise<FederationView> {
    const { view } = this.show(trustDomain);
    if (!(await this.o.store.deleteFederation(trustDomain))) throw new TesseraError('TESSERA_FEDERATION_NOT_FOUND');
    await this.sync();
    return view;
  }

  /**
   * Fetches one endpoint now. A good bundle that differs from the held one replaces it; anything else
   * is recorded as the last error and the held bundle stays. Throws what the fetch or check threw.
   */
  async refresh(trustDomain: string): Promise<void> {
    const h = this.held.get(trustDomain);
    if (h === undefined) throw new TesseraError('TESSERA_FEDERATION_NOT_FOUND');
    const { rec } = h;
    const now = this.o.now();
    try {
      const text = await fetchBundleText(rec.endpoint, {
        profile: rec.profile, timeoutMs: this.settings.fetchTimeoutMs,
        ...(rec.caPem ? { caPem: rec.caPem } : {}),
        ...(rec.endpointId ? { endpointId: rec.endpointId, trustPem: this.endpointTrust(rec.endpointId) } : {}),
      });
      const b = checkFederatedBundle(trustDomain, text, h.bundle);
      h.nextAt = now + refreshDelayMs(b.refreshHintSeconds, { min: this.settings.minRefreshSeconds, max: this.settings.maxRefreshSeconds });
      if (h.bundle !== undefined && b.sequence === h.bundle.sequence && sameAuthorities(b, h.bundle)) return;
      await this.o.store.updateFederation(trustDomain, { bundleJson: JSON.stringify(bundleToJwks(b)), sequence: b.sequence, refreshedAt: now });
      this.o.log.info('federated bundle updated', { trust_domain: trustDomain, sequence: b.sequence });
      await this.sync();
    } catch (err) {
      // Keep the last good bundle; try again at the lower bound.
      h.nextAt = now + this.settings.minRefreshSeconds * 1000;
      const message = isTesseraError(err) ? err.message : String(err);
      await this.o.store.updateFederation(trustDomain, { lastError: message.slice(0, 512), lastErrorAt: now });
      h.rec = { ...h.rec, lastError: message.slice(0, 512), lastErrorAt: now };
      this.o.log.warn('federated bundle refresh failed; keeping the last good bundle', { trust_domain: trustDomain, error: message });
      throw err;
    }
  }

  /** Leader's tick: refreshes every relationship whose time has come (one fetch in flight per domain). */
  tick(): void {
    const now = this.o.now();
    for (const [td, h] of this.held) {
      if (h.nextAt > now || this.refreshing.has(td)) continue;
      this.refreshing.add(td);
      this.refresh(td).catch(() => undefined).finally(() => this.refreshing.delete(td));
    }
  }

  /** https_spiffe: the PEM to check the endpoint's chain with (its trust domain's bundle, never another). */
  private endpointTrust(endpointId: string): string {
    const td = parseSpiffeId(endpointId).trustDomain;
    const b = this.held.get(td)?.bundle;
    return b ? pemOf(b) : '';
  }

  private view(h: Held): FederationView {
    const r = h.rec;
    const iso = (t: number | undefined): string | undefined => (t === undefined ? undefined : new Date(t).toISOString());
    const v: FederationView = { trust_domain: r.trustDomain, endpoint: r.endpoint, profile: r.profile, created_at: iso(r.createdAt)!, created_by: r.createdBy };
    if (r.endpointId) v.endpoint_id = r.endpointId;
    if (r.profile === 'https_web') v.custom_ca = r.caPem !== undefined;
    if (h.bundle) {
      v.sequence = h.bundle.sequence;
      if (h.bundle.refreshHintSeconds !== undefined) v.refresh_hint_seconds = h.bundle.refreshHintSeconds;
      v.x509_authorities = h.bundle.x509Authorities.length;
      v.jwt_authorities = h.bundle.jwtAuthorities.length;
    }
    if (r.refreshedAt !== undefined) v.refreshed_at = iso(r.refreshedAt);
    v.next_refresh_at = iso(h.nextAt);
    if (r.lastError !== undefined) {
      v.last_error = r.lastError;
      v.last_error_at = iso(r.lastErrorAt);
    }
    return v;
  }
}

