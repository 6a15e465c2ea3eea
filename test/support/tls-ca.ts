/**
 * A real test CA (src/core/x509.ts) issuing X509-SVIDs, and a TlsSource fake that can rotate:
 * what sidecar proxy tests need to run them over real TLS without an agent.
 */
import { X509Certificate, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { TlsMaterial, TlsSource } from '../../src/common/tls-source.js';
import { CertificateIssuer, createSelfSignedCa, pemEncode } from '../../src/core/x509.js';

const HOUR = 3600_000;

export interface IssuedSvid {
  certPem: string;
  key: KeyObject;
  /** As `X509Certificate.serialNumber` (what the proxies pass to `peerStatus`). */
  serial: string;
  /** The certificate's notAfter in ms (whole seconds, as encoded). */
  notAfter: number;
}

export class TestCa {
  readonly pem: string;
  readonly #issuer: CertificateIssuer;

  constructor(readonly trustDomain: string, name = 'test-ca') {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const now = Date.now();
    const der = createSelfSignedCa({
      privateKey, publicKey, commonName: name, trustDomainUri: `spiffe://${trustDomain}`,
      notBefore: new Date(now - HOUR), notAfter: new Date(now + 24 * HOUR),
    });
    this.pem = pemEncode(der, 'CERTIFICATE');
    this.#issuer = new CertificateIssuer({ certDer: der, privateKey });
  }

  issue(uriSans: string[], validity: { notBefore?: number; notAfter?: number } = {}): IssuedSvid {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const now = Date.now();
    const der = this.#issuer.issueLeaf({
      publicKey, uriSans, notBefore: new Date(validity.notBefore ?? now - 60_000), notAfter: new Date(validity.notAfter ?? now + HOUR),
    });
    const cert = new X509Certificate(der);
    return { certPem: pemEncode(der, 'CERTIFICATE'), key: privateKey, serial: cert.serialNumber, notAfter: Date.parse(cert.validTo) };
  }

  /** A TlsSource holding a fresh leaf for `spiffeId` (valid one hour) and this CA as its bundle. */
  source(spiffeId: string, bundlePem = this.pem): FakeSource {
    const { certPem, key } = this.issue([spiffeId]);
    return new FakeSource({ spiffeId, certPem, key, bundlePem });
  }
}

export class FakeSource extends EventEmitter implements TlsSource {
  constructor(public material: TlsMaterial) {
    super();
  }

  current(): TlsMaterial {
    return { ...this.material };
  }

  rotate(material: Partial<TlsMaterial>, event: 'svid' | 'bundle' = 'svid'): void {
    this.material = { ...this.material, ...material };
    this.emit(event);
  }
}

/** A source holding `svid` (default: a fresh one-hour SVID for `id`) and `ca`'s bundle. */
export function sourceFor(ca: TestCa, id: string, svid: { certPem: string; key: KeyObject } = ca.issue([id])): FakeSource {
  return new FakeSource({ spiffeId: id, certPem: svid.certPem, key: svid.key, bundlePem: ca.pem });
}
