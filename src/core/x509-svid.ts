/**
 * The one peer-certificate check of Tessera: "is this certificate an X509-SVID leaf of this trust
 * domain (and, when asked, exactly this SPIFFE ID)?". The control plane, the key servers, both
 * sidecar directions and the control-plane client all call {@link verifyPeerSvid}; nothing else
 * decides who a TLS peer is.
 *
 * Rules, from the X509-SVID standard (spiffe/spiffe, standards/X509-SVID.md):
 * - §5.1 Path validation: RFC 5280 path validation to the trust bundle. OpenSSL does it during
 *   the handshake (every caller gives it the bundle as `ca`); this function does not repeat it but
 *   takes its outcome (`chainVerified`) and refuses when it is false, so no caller can skip it.
 * - §5.2 Leaf validation: basicConstraints cA false (§4.1; an absent extension means cA false,
 *   RFC 5280 §4.2.1.9 "DEFAULT FALSE"); keyCertSign and cRLSign not set (§4.3 also: "Leaf SVIDs
 *   MUST NOT set keyCertSign or cRLSign"); scheme `spiffe` and a non-root path (§3.1 "Leaf
 *   certificate SPIFFE IDs MUST have a non-root path component"); more than one URI SAN
 *   rejected (§2: "MUST contain exactly one URI SAN").
 * - §4.3 Key usage: "The key usage extension MUST be set on all SVIDs" and "Leaf SVIDs MUST set
 *   digitalSignature", so a leaf without the extension, or without that bit, is not an SVID.
 *   (Its criticality is an issuer duty that §5.2 does not ask validators to check.)
 * - The validity window (RFC 5280 §4.1.2.5) at `now`: OpenSSL checked it at the handshake, but a
 *   kept-alive connection outlives that moment, so callers pass the time they judge at.
 *
 * Cost: one pass over the leaf's DER with the strict reader of src/core/der.ts, no crypto and no
 * node X509Certificate; callers that judge per connection cache the verdict per socket.
 */
import { isMemberOf, parseSpiffeId } from './spiffe-id.js';
import { KEY_USAGE, readLeafFields } from './x509.js';

/** Short, stable reasons for a refusal (they go into audit records and refusal logs). */
export type SvidRefusal =
  | 'no peer certificate'
  | 'chain not verified'
  | 'malformed certificate'
  | 'no URI SAN'
  | 'more than one URI SAN'
  | 'URI SAN is not a SPIFFE ID'
  | 'other trust domain'
  | 'trust-domain ID without a path'
  | 'CA certificate'
  | 'no keyUsage'
  | 'keyUsage lacks digitalSignature'
  | 'keyUsage has keyCertSign'
  | 'keyUsage has cRLSign'
  | 'not yet valid'
  | 'expired'
  | 'not the expected SPIFFE ID';

export type PeerSvid =
  | {
      ok: true;
      spiffeId: string;
      /** Milliseconds since the epoch: the caller must stop trusting the peer at this time. */
      notAfter: number;
      /** As node's X509Certificate.serialNumber: uppercase hex (revocation lists use it). */
      serial: string;
    }
  | { ok: false; reason: SvidRefusal };

export interface PeerExpectation {
  /** The trust domain the peer must belong to (`example.org`, no scheme). */
  trustDomain: string;
  /** When set, the peer must be exactly this SPIFFE ID (a server the caller chose to reach). */
  id?: string;
}

/**
 * Judges a TLS peer's leaf certificate. `chainVerified` is OpenSSL's verdict on the chain to the
 * bundle (`socket.authorized`, or `true` inside a `checkServerIdentity` callback, which node only
 * calls once the chain has verified); `now` is in milliseconds.
 *
 * @example
 * const v = verifyPeerSvid(socket.getPeerX509Certificate()?.raw, socket.authorized, { trustDomain: 'example.org' }, Date.now());
 * if (!v.ok) refuse(v.reason);
 */
export function verifyPeerSvid(der: Buffer | undefined, chainVerified: boolean, expect: PeerExpectation, now: number): PeerSvid {
  if (der === undefined || der.length === 0) return refuse('no peer certificate');
  if (chainVerified !== true) return refuse('chain not verified');
  let f: ReturnType<typeof readLeafFields>;
  try {
    f = readLeafFields(der);
  } catch {
    return refuse('malformed certificate');
  }
  // §5.2: a leaf, not a signing certificate.
  if (f.cA === true) return refuse('CA certificate');
  if (f.keyUsage === undefined) return refuse('no keyUsage');
  if ((f.keyUsage & KEY_USAGE.keyCertSign) !== 0) return refuse('keyUsage has keyCertSign');
  if ((f.keyUsage & KEY_USAGE.cRLSign) !== 0) return refuse('keyUsage has cRLSign');
  if ((f.keyUsage & KEY_USAGE.digitalSignature) === 0) return refuse('keyUsage lacks digitalSignature');
  // §2, §5.2: exactly one URI SAN, a SPIFFE ID with a path, in the expected trust domain.
  if (f.uris.length === 0) return refuse('no URI SAN');
  if (f.uris.length > 1) return refuse('more than one URI SAN');
  let id: ReturnType<typeof parseSpiffeId>;
  try {
    id = parseSpiffeId(f.uris[0] as string);
  } catch {
    return refuse('URI SAN is not a SPIFFE ID');
  }
  if (!isMemberOf(id, expect.trustDomain)) return refuse('other trust domain');
  if (id.path === '') return refuse('trust-domain ID without a path');
  if (expect.id !== undefined && id.id !== expect.id) return refuse('not the expected SPIFFE ID');
  if (!(now >= f.notBefore)) return refuse('not yet valid');
  if (!(now < f.notAfter)) return refuse('expired');
  return { ok: true, spiffeId: id.id, notAfter: f.notAfter, serial: f.serial };
}

// One frozen object per reason: a refusal allocates nothing.
const REFUSALS = new Map<SvidRefusal, { ok: false; reason: SvidRefusal }>();
function refuse(reason: SvidRefusal): { ok: false; reason: SvidRefusal } {
  let r = REFUSALS.get(reason);
  if (r === undefined) {
    r = Object.freeze({ ok: false as const, reason });
    REFUSALS.set(reason, r);
  }
  return r;
}
