/**
 * The federation checks (SPIFFE_Federation.md, SPIFFE_Trust_Domain_and_Bundle.md): the relationship an
 * admin gives, the bundle an endpoint answers (trust domain, sequence, size, garbage), the refresh
 * interval, and the per-trust-domain anchoring sidecars apply once federation is on.
 */
import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { bundleToJwks, type BundleContent } from './bundle.js';
import { isTesseraError } from './errors.js';
import { TrustAnchors, judgeFederatedPeer } from './federation-trust.js';
import { MAX_FEDERATED_BUNDLE_BYTES, checkFederatedBundle, parseFederationSpec, refreshDelayMs } from './federation.js';
import { CertificateIssuer, createSelfSignedCa, pemEncode } from './x509.js';
import { verifyPeerSvid } from './x509-svid.js';

const HOUR = 3600_000;

function ca(td: string | undefined): { der: Buffer; pem: string; issue(uri: string): Buffer } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const now = Date.now();
  const der = createSelfSignedCa({ privateKey, publicKey, commonName: 'same name', ...(td ? { trustDomainUri: `spiffe://${td}` } : {}), notBefore: new Date(now - HOUR), notAfter: new Date(now + HOUR) });
  const issuer = new CertificateIssuer({ certDer: der, privateKey });
  return {
    der, pem: pemEncode(der, 'CERTIFICATE'),
    issue: (uri) => issuer.issueLeaf({ publicKey: generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey, uriSans: [uri], notBefore: new Date(now - 60_000), notAfter: new Date(now + HOUR) }),
  };
}

function bundle(td: string, sequence: number, cas = [ca(td)]): BundleContent {
  const jwt = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { trustDomain: td, x509Authorities: cas.map((c) => c.der), jwtAuthorities: [{ kid: `k${sequence}`, publicKey: jwt.publicKey }], sequence, refreshHintSeconds: 60 };
}

const code = (fn: () => unknown): string | undefined => {
  try {
    fn();
    return undefined;
  } catch (err) {
    return isTesseraError(err) ? err.code : 'NOT A TESSERA ERROR';
  }
};

describe('parseFederationSpec', () => {
  const ok = { trustDomain: 'partner.example', endpoint: 'https://bundle.partner.example/v1/bundle', profile: 'https_web' };

  it('accepts both profiles; https_spiffe needs an endpoint SPIFFE ID with a path', () => {
    expect(parseFederationSpec(ok, 'me.example')).toEqual({ trustDomain: 'partner.example', endpoint: 'https://bundle.partner.example/v1/bundle', profile: 'https_web' });
    expect(parseFederationSpec({ ...ok, profile: 'https_spiffe', endpointId: 'spiffe://partner.example/tessera/server' }, 'me.example').endpointId).toBe('spiffe://partner.example/tessera/server');
    expect(code(() => parseFederationSpec({ ...ok, profile: 'https_spiffe' }, 'me.example'))).toBe('TESSERA_FEDERATION_INVALID');
    expect(code(() => parseFederationSpec({ ...ok, profile: 'https_spiffe', endpointId: 'spiffe://partner.example' }, 'me.example'))).toBe('TESSERA_FEDERATION_INVALID');
    expect(code(() => parseFederationSpec({ ...ok, endpointId: 'spiffe://partner.example/x' }, 'me.example'))).toBe('TESSERA_FEDERATION_INVALID');
  });

  it('takes the trust domain also as its SPIFFE ID form', () => {
    expect(parseFederationSpec({ ...ok, trustDomain: 'spiffe://partner.example' }, 'me.example').trustDomain).toBe('partner.example');
  });

  it('refuses our own trust domain, bad names, non-https URLs, credentials in the URL and unknown profiles', () => {
    for (const bad of [
      { ...ok, trustDomain: 'me.example' }, { ...ok, trustDomain: 'Partner.Example' }, { ...ok, trustDomain: '' }, { ...ok, trustDomain: 5 },
      { ...ok, endpoint: 'http://bundle.partner.example/' }, { ...ok, endpoint: 'https://user:pw@bundle.partner.example/' }, { ...ok, endpoint: 'https://x/#frag' },
      { ...ok, endpoint: 'not a url' }, { ...ok, endpoint: `https://x/${'a'.repeat(3000)}` }, { ...ok, endpoint: undefined },
      { ...ok, profile: 'HTTPS_WEB' }, { ...ok, profile: 'https' }, { ...ok, profile: undefined },
    ]) expect(code(() => parseFederationSpec(bad as typeof ok, 'me.example')), JSON.stringify(bad).slice(0, 120)).toBe('TESSERA_FEDERATION_INVALID');
  });

  it('never throws anything but TESSERA_FEDERATION_INVALID (fast-check)', () => {
    fc.assert(fc.property(fc.anything(), fc.anything(), fc.anything(), fc.anything(), (trustDomain, endpoint, profile, endpointId) => {
      const c = code(() => parseFederationSpec({ trustDomain, endpoint, profile, endpointId }, 'me.example'));
      return c === undefined || c === 'TESSERA_FEDERATION_INVALID';
    }), { numRuns: 500 });
  });
});

describe('checkFederatedBundle', () => {
  it('accepts the trust domain\'s bundle and a later sequence of it', () => {
    const first = bundle('partner.example', 3);
    const b = checkFederatedBundle('partner.example', JSON.stringify(bundleToJwks(first)));
    expect(b.sequence).toBe(3);
    const next = checkFederatedBundle('partner.example', bundleToJwks(bundle('partner.example', 4)), b);
    expect(next.sequence).toBe(4);
    // The same bundle again (a refresh with no change) is fine.
    expect(checkFederatedBundle('partner.example', bundleToJwks(first), b).sequence).toBe(3);
  });

  it('refuses a sequence going backwards, and a change under the same sequence (the last good bundle stays)', () => {
    const held = checkFederatedBundle('partner.example', bundleToJwks(bundle('partner.example', 7)));
    expect(code(() => checkFederatedBundle('partner.example', bundleToJwks(bundle('partner.example', 6)), held))).toBe('TESSERA_FEDERATION_INVALID');
    expect(code(() => checkFederatedBundle('partner.example', bundleToJwks(bundle('partner.example', 7)), held))).toBe('TESSERA_FEDERATION_INVALID');
  });

  it('refuses an X.509 authority of another trust domain, and a bundle without authorities', () => {
    const doc = bundleToJwks(bundle('other.example', 1));
    expect(code(() => checkFederatedBundle('partner.example', doc))).toBe('TESSERA_FEDERATION_INVALID');
    expect(code(() => checkFederatedBundle('partner.example', { keys: [], spiffe_sequence: 1 }))).toBe('TESSERA_FEDERATION_INVALID');
    // An authority without a SPIFFE ID (a plain CA) is the domain's to vouch for.
    expect(checkFederatedBundle('partner.example', bundleToJwks(bundle('partner.example', 1, [ca(undefined)]))).x509Authorities).toHaveLength(1);
  });

  it('refuses oversized text and garbage with TESSERA_FEDERATION_INVALID', () => {
    expect(code(() => checkFederatedBundle('partner.example', ' '.repeat(MAX_FEDERATED_BUNDLE_BYTES + 1)))).toBe('TESSERA_FEDERATION_INVALID');
    for (const g of ['', '{', 'null', '[]', '{"keys":{}}', '{"keys":[],"spiffe_sequence":-1}', '{"keys":[{"kty":"EC","use":"x509-svid","x5c":["AAAA"]}]}']) {
      expect(code(() => checkFederatedBundle('partner.example', g)), g).toBe('TESSERA_FEDERATION_INVALID');
    }
  });

  it('never throws anything but TESSERA_FEDERATION_INVALID on arbitrary input (fast-check)', () => {
    const valid = bundleToJwks(bundle('partner.example', 2)) as unknown as Record<string, unknown>;
    const check = (doc: unknown): boolean => {
      const c = code(() => checkFederatedBundle('partner.example', doc));
      return c === undefined || c === 'TESSERA_FEDERATION_INVALID';
    };
    fc.assert(fc.property(fc.jsonValue(), check), { numRuns: 400 });
    fc.assert(fc.property(fc.string(), check), { numRuns: 200 });
    // Mutations of a valid bundle: a member replaced by anything.
    fc.assert(fc.property(fc.constantFrom('keys', 'spiffe_sequence', 'spiffe_refresh_hint'), fc.jsonValue(), (k, v) => check({ ...valid, [k]: v })), { numRuns: 300 });
    fc.assert(fc.property(fc.nat(1), fc.constantFrom('kty', 'use', 'x5c', 'x', 'y', 'crv', 'kid', 'd'), fc.jsonValue(), (i, k, v) => {
      const keys = (valid.keys as Record<string, unknown>[]).map((key, j) => (j === i ? { ...key, [k]: v } : key));
      return check({ ...valid, keys });
    }), { numRuns: 300 });
  });
});

describe('refreshDelayMs', () => {
  it('follows the hint within the bounds, and the default without one', () => {
    expect(refreshDelayMs(30, { min: 5, max: 3600 })).toBe(30_000);
    expect(refreshDelayMs(0, { min: 5, max: 3600 })).toBe(5_000);
    expect(refreshDelayMs(10 ** 9, { min: 5, max: 3600 })).toBe(3_600_000);
    expect(refreshDelayMs(undefined, { min: 5, max: 3600 })).toBe(300_000);
  });
});

describe('per-trust-domain anchoring (judgeFederatedPeer)', () => {
  const local = ca('me.example');
  const partner = ca('partner.example');
  const trust = new TrustAnchors('me.example', local.pem, new Map([['partner.example', partner.pem]]));
  const judge = (leaf: Buffer): ReturnType<typeof verifyPeerSvid> => {
    const now = Date.now();
    // OpenSSL verified the chain against the merged store (both CAs): `true` here, as in the sidecar.
    return judgeFederatedPeer(trust, 'me.example', verifyPeerSvid(leaf, true, { trustDomain: 'me.example' }, now), leaf, true, now);
  };

  it('accepts our IDs from our CA and the partner\'s IDs from the partner\'s CA', () => {
    expect(judge(local.issue('spiffe://me.example/a'))).toMatchObject({ ok: true, spiffeId: 'spiffe://me.example/a' });
    expect(judge(partner.issue('spiffe://partner.example/b'))).toMatchObject({ ok: true, spiffeId: 'spiffe://partner.example/b' });
  });

  it('refuses an ID of ours signed by the partner\'s CA, a partner ID signed by ours, and a third domain (same CA names on purpose)', () => {
    expect(judge(partner.issue('spiffe://me.example/a'))).toEqual({ ok: false, reason: 'chain not verified' });
    expect(judge(local.issue('spiffe://partner.example/b'))).toEqual({ ok: false, reason: 'chain not verified' });
    expect(judge(partner.issue('spiffe://third.example/c'))).toEqual({ ok: false, reason: 'other trust domain' });
  });

  it('the merged store for OpenSSL holds both, the anchors stay apart', () => {
    expect(trust.caPem).toContain(local.pem.trim());
    expect(trust.caPem).toContain(partner.pem.trim());
    expect(trust.chainsTo('partner.example', new X509Certificate(local.issue('spiffe://partner.example/x')).raw)).toBe(false);
  });
});
