/**
 * A real test CA (src/core/x509.ts) and a TlsSource fake backed by it, for tests that run the
 * sidecar proxies over real TLS on 127.0.0.1 without an agent.
 */
import { generateKeyPairSync } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { TlsMaterial, TlsSource } from '../../src/common/tls-source.js';
import { CertificateIssuer, createSelfSignedCa, pemEncode } from '../../src/core/x509.js';

const HOUR = 3_600_000;

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

  /** A TlsSource holding a fresh leaf for `spiffeId` (valid one hour) and this CA as bundle. */
  source(spiffeId: string): FakeTlsSource {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const now = Date.now();
    const der = this.#issuer.issueLeaf({ publicKey, uriSans: [spiffeId], notBefore: new Date(now - 60_000), notAfter: new Date(now + HOUR) });
    return new FakeTlsSource({ spiffeId, certPem: pemEncode(der, 'CERTIFICATE'), key: privateKey, bundlePem: this.pem });
  }
}

export class FakeTlsSource extends EventEmitter implements TlsSource {
  constructor(public material: TlsMaterial) {
    super();
  }

  current(): TlsMaterial {
    return { ...this.material };
  }
}
