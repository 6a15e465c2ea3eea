/**
 * Who signs DKG messages, and how everyone checks them (issue 15): each key server signs with its
 * X509-SVID's private key (ECDSA P-256, SHA-256, IEEE P1363 signatures), and every participant (and
 * the control plane) checks a message against the SVID of the SPIFFE ID it claims to come from.
 *
 * The relay hands everyone the participants' certificate chains (as it saw them in TLS), so it could
 * try to substitute a key of its own: {@link dkgVerifier} takes a chain only when it verifies to a CA
 * of the checker's own trust bundle, its leaf is an X509-SVID of exactly that SPIFFE ID (the one
 * check of src/core/x509-svid.ts), and it is valid now. Anything else makes that participant's
 * signatures fail, which the protocol treats as a participant that said nothing.
 */
import { X509Certificate, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import { fail } from '../errors.js';
import { verifyPeerSvid } from '../x509-svid.js';
import type { DkgSigner, DkgVerifier } from './dkg-wire.js';

/** Most certificates in one participant's chain (leaf and intermediates). */
export const MAX_DKG_CHAIN = 4;

function isP256(key: KeyObject): boolean {
  return key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1';
}

/** Signs with this key server's SVID key (P-256). The key never leaves the process. */
export function dkgSigner(privateKey: KeyObject): DkgSigner {
  if (privateKey.type !== 'private' || !isP256(createPublicKey(privateKey))) throw fail('TESSERA_DKG_PARAMS_INVALID', 'a DKG signer needs a P-256 private key');
  return { sign: (bytes) => new Uint8Array(sign('sha256', bytes, { key: privateKey, dsaEncoding: 'ieee-p1363' })) };
}

/**
 * The signing key of `spiffeId` from its chain (leaf first, base64 DER), or undefined when the chain
 * does not verify to one of `trustedCas` at `now`, or its leaf is not an X509-SVID of that ID.
 */
export function svidKeyOf(spiffeId: string, chain: unknown, trustedCas: readonly Buffer[], trustDomain: string, now: number): KeyObject | undefined {
  if (!Array.isArray(chain) || chain.length === 0 || chain.length > MAX_DKG_CHAIN) return undefined;
  let certs: X509Certificate[];
  try {
    certs = chain.map((c: unknown) => {
      if (typeof c !== 'string' || c.length > 16_384) throw new Error('not a certificate');
      const der = Buffer.from(c, 'base64');
      if (der.toString('base64') !== c) throw new Error('not canonical base64');
      return new X509Certificate(der);
    });
  } catch {
    return undefined;
  }
  const leaf = certs[0]!;
  if (!verifyPeerSvid(leaf.raw, chainVerifies(certs, trustedCas, now), { trustDomain, id: spiffeId }, now).ok) return undefined;
  return isP256(leaf.publicKey) ? leaf.publicKey : undefined;
}

/** Each certificate signed by the next, the last by a trusted CA; every one a CA but the leaf, all valid at `now`. */
function chainVerifies(certs: X509Certificate[], trustedCas: readonly Buffer[], now: number): boolean {
  const valid = (c: X509Certificate): boolean => now >= Date.parse(c.validFrom) && now < Date.parse(c.validTo);
  for (let i = 0; i < certs.length; i++) {
    const c = certs[i]!;
    if (!valid(c)) return false;
    if (i > 0 && !c.ca) return false;
    const issuer = certs[i + 1];
    if (issuer !== undefined) {
      if (!c.checkIssued(issuer) || !c.verify(issuer.publicKey)) return false;
      continue;
    }
    for (const der of trustedCas) {
      let ca: X509Certificate;
      try {
        ca = new X509Certificate(der);
      } catch {
        continue;
      }
      if (ca.ca && valid(ca) && c.checkIssued(ca) && c.verify(ca.publicKey)) return true;
    }
    return false;
  }
  return false;
}

/**
 * Checks DKG signatures against the participants' SVIDs, as given by the relay (`certificates`:
 * SPIFFE ID → chain, leaf first, base64 DER). Chains are judged once, here, at `now`; a participant
 * whose chain does not pass has every signature refused.
 */
export function dkgVerifier(certificates: Readonly<Record<string, unknown>>, trustedCas: readonly Buffer[], trustDomain: string, now = Date.now()): DkgVerifier & { refused: string[] } {
  const keys = new Map<string, KeyObject>();
  const refused: string[] = [];
  if (typeof certificates === 'object' && certificates !== null) {
    for (const [id, chain] of Object.entries(certificates)) {
      const key = svidKeyOf(id, chain, trustedCas, trustDomain, now);
      if (key === undefined) refused.push(id);
      else keys.set(id, key);
    }
  }
  return {
    refused,
    verify(spiffeId, bytes, signature) {
      const key = keys.get(spiffeId);
      if (key === undefined || signature.length !== 64) return false;
      try {
        return verify('sha256', bytes, { key, dsaEncoding: 'ieee-p1363' }, signature);
      } catch {
        return false;
      }
    },
  };
}
