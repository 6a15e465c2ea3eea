/**
 * DKG signatures bound to X509-SVIDs: a relay that hands out a chain of its own, another ID's chain,
 * a CA certificate, an expired leaf or junk gets that participant's signatures refused.
 */
import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { TestCa } from '../../../test/support/tls-ca.js';
import { pemDecodeAll } from '../x509.js';
import { dkgSigner, dkgVerifier } from './dkg-identity.js';

const TD = 'example.org';
const KS1 = `spiffe://${TD}/keyserver/1`;
const KS2 = `spiffe://${TD}/keyserver/2`;
const b64 = (pem: string): string[] => pemDecodeAll(pem, 'CERTIFICATE').map((d) => d.toString('base64'));

describe('DKG identity: signatures checked against the sender\'s X509-SVID', () => {
  const ca = new TestCa(TD);
  const other = new TestCa(TD, 'another-ca');
  const trusted = pemDecodeAll(ca.pem, 'CERTIFICATE');
  const ks1 = ca.issue([KS1]);
  const ks2 = ca.issue([KS2]);
  const msg = new TextEncoder().encode('tessera-dkg-v1\n{"round":"hello"}');

  it('verifies a message signed with the SVID key of the claimed ID, and nothing else', () => {
    const v = dkgVerifier({ [KS1]: b64(ks1.certPem), [KS2]: b64(ks2.certPem) }, trusted, TD);
    expect(v.refused).toEqual([]);
    const sig = dkgSigner(ks1.key).sign(msg);
    expect(v.verify(KS1, msg, sig)).toBe(true);
    expect(v.verify(KS2, msg, sig)).toBe(false); // another sender
    expect(v.verify(`spiffe://${TD}/nobody`, msg, sig)).toBe(false);
    const changed = Uint8Array.from(msg);
    changed[changed.length - 2] = changed[changed.length - 2]! ^ 1;
    expect(v.verify(KS1, changed, sig)).toBe(false);
    expect(v.verify(KS1, msg, sig.subarray(0, 63))).toBe(false);
  });

  it('refuses chains a relay could substitute: another CA, another ID, a CA certificate, expired, junk', () => {
    const foreign = other.issue([KS1]);
    const expired = ca.issue([KS2], { notBefore: Date.now() - 7200_000, notAfter: Date.now() - 3600_000 });
    const v = dkgVerifier({
      [KS1]: b64(foreign.certPem),
      [KS2]: b64(expired.certPem),
      [`spiffe://${TD}/keyserver/3`]: b64(ks1.certPem), // KS1's leaf under another ID
      [`spiffe://${TD}/keyserver/4`]: b64(ca.pem), // the CA itself
      [`spiffe://${TD}/keyserver/5`]: ['not base64 DER!'],
      [`spiffe://${TD}/keyserver/6`]: [],
      [`spiffe://${TD}/keyserver/7`]: 'x' as never,
    }, trusted, TD);
    expect(v.refused.sort()).toEqual([KS1, KS2, ...[3, 4, 5, 6, 7].map((i) => `spiffe://${TD}/keyserver/${i}`)].sort());
    expect(v.verify(KS1, msg, dkgSigner(foreign.key).sign(msg))).toBe(false);
    expect(v.verify(KS2, msg, dkgSigner(expired.key).sign(msg))).toBe(false);
    expect(v.verify(`spiffe://${TD}/keyserver/3`, msg, dkgSigner(ks1.key).sign(msg))).toBe(false);
    // Another trust domain's verifier refuses this domain's SVIDs.
    expect(dkgVerifier({ [KS1]: b64(ks1.certPem) }, trusted, 'other.org').refused).toEqual([KS1]);
  });

  it('signs only with a P-256 key', () => {
    expect(() => dkgSigner(generateKeyPairSync('ed25519').privateKey)).toThrow(expect.objectContaining({ code: 'TESSERA_DKG_PARAMS_INVALID' }));
    expect(new X509Certificate(pemDecodeAll(ks1.certPem, 'CERTIFICATE')[0]!).publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
  });

  it('never throws on arbitrary certificate maps (fast-check)', () => {
    fc.assert(fc.property(fc.dictionary(fc.string(), fc.oneof(fc.array(fc.string()), fc.anything())), fc.uint8Array({ maxLength: 70 }), (certs, sig) => {
      const v = dkgVerifier(certs, trusted, TD);
      for (const id of Object.keys(certs)) expect(v.verify(id, msg, sig)).toBe(false);
    }), { numRuns: 200 });
  });
});
