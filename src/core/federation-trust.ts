/**
 * Per-trust-domain trust for the sidecars once federation is on. OpenSSL verifies a peer's chain
 * against ONE store (our bundle plus every federated bundle), which alone would let a federated CA
 * vouch for an ID of our trust domain or of a third one. So after OpenSSL's verdict the leaf is also
 * checked to be signed by an authority of the bundle of the trust domain its SPIFFE ID names, and of
 * no other (SPIFFE_Trust_Domain_and_Bundle.md §3: a bundle is the trust domain's own; the federation
 * spec §3: bundles are kept per trust domain and never merged). One signature check per full handshake,
 * only when federated bundles exist; without federation the sidecars' path is unchanged.
 */
import { X509Certificate, createHash } from 'node:crypto';
import { pemDecodeAll } from './x509.js';
import { verifyPeerSvid } from './x509-svid.js';

export interface FederatedBundles {
  /** Trust domain -> PEM of its X.509 authorities. */
  readonly bundles: ReadonlyMap<string, string>;
}

const MAX_VERDICTS = 4096;

/** Anchors by trust domain, built once per bundle change. */
export class TrustAnchors {
  private readonly anchors = new Map<string, X509Certificate[]>();
  private readonly verdicts = new Map<string, boolean>();
  /** Every authority of every trust domain, for OpenSSL's store. */
  readonly caPem: string;

  constructor(localTrustDomain: string, localPem: string, federated: ReadonlyMap<string, string>) {
    this.anchors.set(localTrustDomain, certs(localPem));
    const pems = [localPem];
    for (const [td, pem] of federated) {
      if (td === localTrustDomain) continue;
      this.anchors.set(td, certs(pem));
      pems.push(pem);
    }
    this.caPem = pems.map((p) => (p.endsWith('\n') ? p : `${p}\n`)).join('');
  }

  /** The trust domains peers may come from (ours first). */
  trustDomains(): IterableIterator<string> {
    return this.anchors.keys();
  }

  has(trustDomain: string): boolean {
    return this.anchors.has(trustDomain);
  }

  /**
   * Whether `leaf` (with the peer's intermediates as DER) chains to an authority of `trustDomain`'s
   * own bundle, by signature. Intermediates are followed up to 4 deep. Verdicts are kept per leaf
   * (its SHA-256) for the life of these anchors (a bundle change builds new ones), so a peer that
   * reconnects costs a hash, not a signature check; at most MAX_VERDICTS, then the memo starts over.
   */
  chainsTo(trustDomain: string, leaf: Buffer | X509Certificate, intermediates: readonly Buffer[] = []): boolean {
    const roots = this.anchors.get(trustDomain);
    if (roots === undefined || roots.length === 0) return false;
    const raw = Buffer.isBuffer(leaf) ? leaf : leaf.raw;
    const key = `${trustDomain} ${createHash('sha256').update(raw).digest('base64')}`;
    const memo = this.verdicts.get(key);
    if (memo !== undefined) return memo;
    const verdict = this.walk(roots, leaf, intermediates);
    if (this.verdicts.size >= MAX_VERDICTS) this.verdicts.clear();
    this.verdicts.set(key, verdict);
    return verdict;
  }

  private walk(roots: readonly X509Certificate[], leaf: Buffer | X509Certificate, intermediates: readonly Buffer[]): boolean {
    let cur: X509Certificate;
    try {
      cur = Buffer.isBuffer(leaf) ? new X509Certificate(leaf) : leaf;
    } catch {
      return false;
    }
    let pool: X509Certificate[] | undefined;
    for (let depth = 0; depth < 5; depth++) {
      for (const r of roots) if (signedBy(cur, r)) return true;
      if (intermediates.length === 0) return false;
      try {
        pool ??= intermediates.map((d) => new X509Certificate(d));
      } catch {
        return false;
      }
      const next = pool.find((c) => c.ca && signedBy(cur, c));
      if (next === undefined) return false;
      cur = next;
    }
    return false;
  }
}

function signedBy(cert: X509Certificate, issuer: X509Certificate): boolean {
  try {
    return cert.checkIssued(issuer) && cert.verify(issuer.publicKey);
  } catch {
    return false;
  }
}

function certs(pem: string): X509Certificate[] {
  return pemDecodeAll(pem, 'CERTIFICATE').map((d) => new X509Certificate(d));
}

/** The peer chain Node reports on a PeerCertificate (detailed form), leaf excluded, as DER. */
export function peerIntermediates(cert: { raw: Buffer; issuerCertificate?: { raw: Buffer; issuerCertificate?: unknown } }): Buffer[] {
  const out: Buffer[] = [];
  let cur = cert;
  for (let i = 0; i < 5; i++) {
    const next = cur.issuerCertificate as typeof cert | undefined;
    if (next === undefined || next === cur || next.raw.equals(cur.raw)) break;
    out.push(next.raw);
    cur = next;
  }
  return out;
}

type Verdict = ReturnType<typeof verifyPeerSvid>;
const NOT_ANCHORED: Verdict = Object.freeze({ ok: false as const, reason: 'chain not verified' as const });

/**
 * A peer's verdict once federation is on: `local` is verifyPeerSvid's verdict for our trust domain.
 * An ID of ours must chain to our bundle; an ID of a federated trust domain is judged as an X509-SVID of
 * that domain and must chain to that domain's bundle; any other is refused as before.
 */
export function judgeFederatedPeer(trust: TrustAnchors, localTrustDomain: string, local: Verdict, peer: Buffer | X509Certificate | undefined, chainVerified: boolean, now: number): Verdict {
  if (peer === undefined) return local;
  if (local.ok) return trust.chainsTo(localTrustDomain, peer) ? local : NOT_ANCHORED;
  const der = Buffer.isBuffer(peer) ? peer : peer.raw;
  if (local.reason !== 'other trust domain') return local;
  for (const td of trust.trustDomains()) {
    if (td === localTrustDomain) continue;
    const v = verifyPeerSvid(der, chainVerified, { trustDomain: td }, now);
    if (v.ok) return trust.chainsTo(td, peer) ? v : NOT_ANCHORED;
    if (v.reason !== 'other trust domain') return v;
  }
  return local;
}
