/**
 * Identity issuance: X509-SVIDs at join (a one-time token) and renewal (the current SVID), and
 * JWT-SVIDs derived from a live identity under policy (`credential:derive`).
 */
import { X509Certificate } from 'node:crypto';
import type { ParsedCsr } from '../../core/csr.js';
import { TesseraError } from '../../core/errors.js';
import type { AuditNotes } from '../audit/audit.js';
import type { CertificateAuthority } from '../ca/ca.js';
import { authorizeDerive, riskStanding, type DeriveDeps } from '../credentials/derive.js';
import type { RegistryService } from '../registry/service.js';
import type { EntryRecord, Store } from '../store/store.js';

/** An X509-SVID as issued, with the bundle when the caller needs it. */
export interface IssuedSvid {
  entry: EntryRecord;
  der: Buffer;
  notBefore: Date;
  notAfter: Date;
  bundleSequence: number;
  /** The CA bundle (PEM), absent when the caller said it holds the current one. */
  bundlePem?: string;
}

export interface SvidDeps extends DeriveDeps {
  store: Store;
  ca: CertificateAuthority;
  registry: RegistryService;
  /** The `iss` of JWT-SVIDs; read at each mint (it is known only once the server listens). */
  issuer: () => string;
}

/**
 * DNS SANs an entry's SVIDs carry besides the SPIFFE ID: its `dns:NAME` selectors (X509-SVID §2 allows
 * other SAN types). For servers a client checks by host name, e.g. the Kubernetes admission webhook
 * behind `tessera-webhook.tessera.svc`. Such a selector is never satisfied by caller attestation.
 */
export function entryDnsNames(entry: Pick<EntryRecord, 'selectors'>): string[] {
  return entry.selectors.filter((s) => s.startsWith('dns:')).map((s) => s.slice(4));
}

/** The CSR may name its SPIFFE ID (a URI SAN); when it does, it must be the entry's, and only that. */
export function checkCsrIdentity(csr: ParsedCsr, entry: EntryRecord): void {
  if (csr.uriSans.length > 1 || (csr.uriSans.length === 1 && csr.uriSans[0] !== entry.spiffeId)) {
    throw new TesseraError('TESSERA_CSR_IDENTITY_MISMATCH');
  }
}

export class SvidService {
  constructor(private readonly deps: SvidDeps) {}

  /**
   * An agent's first SVID: spends the join token (see RegistryService.consumeJoinToken), then
   * issues for the token's entry. The token is spent even when the CSR asks for another identity:
   * that attempt is suspicious. Notes the entry as target and `join:<token ref>` as actor.
   */
  async join(token: string, csr: ParsedCsr, notes: AuditNotes): Promise<IssuedSvid> {
    const { entry, ref } = await this.deps.registry.consumeJoinToken(token, notes);
    notes.target = entry.spiffeId;
    notes.actor = `join:${ref}`;
    checkCsrIdentity(csr, entry);
    return this.issue(csr, entry, notes);
  }

  /** A new SVID for a live entry's holder. `bundleSequence`: the bundle the caller holds, if any. */
  async renew(entry: EntryRecord, csr: ParsedCsr, notes: AuditNotes, bundleSequence?: number): Promise<IssuedSvid> {
    checkCsrIdentity(csr, entry);
    return this.issue(csr, entry, notes, bundleSequence);
  }

  /**
   * A JWT-SVID for `principal` (holding live `entry`) for every one of `audience`, if policy allows
   * each. A TTL longer than the entry's is clipped to it (JWT-SVID clients take the `exp` they get).
   */
  async mintJwt(principal: string, entry: EntryRecord, audience: string[], ttlSeconds: number | undefined, notes: AuditNotes): Promise<{ token: string; expiresAt: Date }> {
    const standing = await riskStanding(this.deps, notes, principal);
    let ttl = Math.min(ttlSeconds ?? entry.jwtTtlSeconds, entry.jwtTtlSeconds);
    // Step-up: the shortest lifetime, whatever was asked.
    if (standing.state === 'step-up') ttl = Math.min(ttl, this.deps.risk!.settings.stepUpJwtTtlSeconds);
    notes.detail.audience = audience;
    notes.detail.ttl_seconds = ttl;
    await authorizeDerive(this.deps, notes, principal, 'jwt', audience, ttl, standing.score);
    const jwt = this.deps.ca.signJwt(principal, audience, ttl, this.deps.issuer());
    notes.detail.expires_at = jwt.expiresAt.toISOString();
    return jwt;
  }

  /**
   * Issues the SVID. The bundle is included unless the caller says it already holds the current
   * one: renewals are the hot path and the bundle is most of the response.
   */
  private async issue(csr: ParsedCsr, entry: EntryRecord, notes: AuditNotes, callerSequence?: number): Promise<IssuedSvid> {
    const { ca, store } = this.deps;
    // A quarantined identity gets no SVID (join or renewal): it cannot renew its way out.
    const standing = await riskStanding(this.deps, notes, entry.spiffeId);
    const ttlSeconds = standing.state === 'step-up' ? Math.min(entry.x509TtlSeconds, this.deps.risk!.settings.stepUpX509TtlSeconds) : entry.x509TtlSeconds;
    const dnsSans = entryDnsNames(entry);
    const cert = ca.issue({ publicKey: csr.publicKey, uriSans: [entry.spiffeId], ...(dnsSans.length > 0 ? { dnsSans } : {}) }, ttlSeconds * 1000);
    // Every serial is recorded before the SVID leaves, so that revoking the entry can list it.
    const serial = new X509Certificate(cert.der).serialNumber.toUpperCase();
    await store.recordIssuedSvid({ serial, entryId: entry.id, spiffeId: entry.spiffeId, notAfter: cert.notAfter.getTime(), issuedAt: this.deps.now() });
    notes.detail.serial = serial;
    notes.detail.not_after = cert.notAfter.toISOString();
    notes.detail.ca_id = cert.caId;
    const bundleSequence = ca.bundleSequence();
    return {
      entry, der: cert.der, notBefore: cert.notBefore, notAfter: cert.notAfter, bundleSequence,
      ...(callerSequence === bundleSequence ? {} : { bundlePem: ca.bundlePem() }),
    };
  }
}
