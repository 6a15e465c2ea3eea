/**
 * Per-trust-domain trust for the sidecars once federation is on. OpenSSL verifies a peer's chain
 * against ONE store (our bundle plus every federated bundle), which alone would let a federated CA
 * vouch for an ID of our trust domain or of a third one. So after OpenSSL's verdict the leaf is also
 * checked to be signed by an authority of the bundle of the trust domain its SPIFFE ID names, and of
 * no other (SPIFFE_Trust_Domain_and_Bundle.md §3: a bundle is the trust domain's own; the federation
 * spec §3: bundles are kept per trust domain and never merged). One signature check per full handshake,
 * only when federated bundles exist; without federation the sidecars' path is unchanged.
 */
import { X509Certificate } from 'node:crypto';
import { pemDecodeAll } from './x509.js';
import { verifyPeerSvid } from './x509-svid.js';

export interface FederatedBundles {
  /** Trust domain -> PEM of its X.509 authorities. */
  readonly bundles: ReadonlyMap<string, string>;
}

/** Anchors by trust domain, built once per bundle change. */
export class TrustAnchors {
  private readonly anchors = new Map<string, X509Certificate[]>();
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
   * Whether `leafDer` (with the peer's intermediates, leaf first excluded) chains to an authority of
   * `trustDomain`'s own bundle, by signature. Intermediates are followed up to 4 deep.
   */
  chainsTo(trustDomain: string, leafDer: Buffer, intermediates: readonly Buffer[] = []): boolean {
    const roots = this.anchors.get(trustDomain);
    if (roots === undefined || roots.length === 0) return false;
    let cur: X509Certificate;
    try {
      cur = new X509Certificate(leafDer);
    } catch {
      return false;
    }
    const pool = intermediates.map((d) => new X509Certificate(d));
    for (let depth = 0; depth < 5; depth++) {
      for (const r of roots) if (signedBy(cur, r)) return true;
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
export function judgeFederatedPeer(trust: TrustAnchors, localTrustDomain: string, local: Verdict, der: Buffer | undefined, chainVerified: boolean, now: number): Verdict {
  if (der === undefined) return local;
  if (local.ok) return trust.chainsTo(localTrustDomain, der) ? local : NOT_ANCHORED;
  if (local.reason !== 'other trust domain') return local;
  for (const td of trust.trustDomains()) {
    if (td === localTrustDomain) continue;
    const v = verifyPeerSvid(der, chainVerified, { trustDomain: td }, now);
    if (v.ok) return trust.chainsTo(td, der) ? v : NOT_ANCHORED;
    if (v.reason !== 'other trust domain') return v;
  }
  return local;
}
