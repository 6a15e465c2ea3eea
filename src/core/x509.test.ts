import { expectTesseraError } from '../../test/support/expect.js';
import { spawnSync } from 'node:child_process';
import { X509Certificate, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TesseraError } from './errors.js';
import {
  CertificateIssuer,
  certificateUriSans,
  createIntermediateCa,
  createSelfSignedCa,
  pemDecodeAll,
  pemEncode,
  spkiDer,
  type LeafSpec,
} from './x509.js';

const DAY = 86_400_000;
const NOW = new Date(Math.floor(Date.now() / 1000) * 1000);
const TD = 'spiffe://example.org';
const WORKLOAD = 'spiffe://example.org/ns/prod/sa/web';

let dir: string;
let n = 0;

function openssl(args: string[], files: Record<string, Buffer | string> = {}): { status: number | null; out: string } {
  const paths: Record<string, string> = {};
  for (const [name, content] of Object.entries(files)) {
    const p = join(dir, `${n++}-${name}`);
    writeFileSync(p, content);
    paths[name] = p;
  }
  const resolved = args.map((a) => (a.startsWith('@') ? (paths[a.slice(1)] as string) : a));
  const r = spawnSync('openssl', resolved, { encoding: 'utf8' });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

function opensslText(der: Buffer): string {
  const r = openssl(['x509', '-noout', '-text', '-in', '@c.pem'], { 'c.pem': pemEncode(der, 'CERTIFICATE') });
  expect(r.status).toBe(0);
  return r.out;
}

/** The lines of an extension block in `openssl x509 -text` output: header (with "critical") and value. */
function ext(text: string, name: string): { critical: boolean; value: string } {
  const lines = text.split('\n');
  const i = lines.findIndex((l) => l.trim().startsWith(`${name}:`));
  if (i < 0) throw new Error(`extension ${name} not in openssl output`);
  return { critical: (lines[i] as string).includes('critical'), value: (lines[i + 1] as string).trim() };
}

function expectCode(fn: () => unknown, code: string): void {
  expectTesseraError(fn, code);
}

function keyPair(kind: 'p256' | 'ed25519'): { privateKey: KeyObject; publicKey: KeyObject } {
  return kind === 'p256' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('ed25519');
}

function makeCa(kind: 'p256' | 'ed25519', pathLen?: number): { der: Buffer; key: KeyObject; pub: KeyObject } {
  const k = keyPair(kind);
  const der = createSelfSignedCa({
    ...k,
    commonName: `Tessera CA ${kind}`,
    organization: 'example.org',
    trustDomainUri: TD,
    notBefore: new Date(NOW.getTime() - DAY),
    notAfter: new Date(NOW.getTime() + 365 * DAY),
    ...(pathLen === undefined ? {} : { pathLen }),
  });
  return { der, key: k.privateKey, pub: k.publicKey };
}

function leafSpec(publicKey: KeyObject, extra: Partial<LeafSpec> = {}): LeafSpec {
  return { publicKey, notBefore: new Date(NOW.getTime() - 60_000), notAfter: new Date(NOW.getTime() + 3_600_000), uriSans: [WORKLOAD], ...extra };
}

function verifyChain(caDer: Buffer, leafDer: Buffer, untrusted?: Buffer): string {
  const files: Record<string, string> = { 'ca.pem': pemEncode(caDer, 'CERTIFICATE'), 'leaf.pem': pemEncode(leafDer, 'CERTIFICATE') };
  const args = ['verify', '-partial_chain', '-x509_strict', '-CAfile', '@ca.pem'];
  if (untrusted) {
    files['inter.pem'] = pemEncode(untrusted, 'CERTIFICATE');
    args.push('-untrusted', '@inter.pem');
  }
  args.push('@leaf.pem');
  return openssl(args, files).out;
}

let p256Ca: ReturnType<typeof makeCa>;
let edCa: ReturnType<typeof makeCa>;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'tessera-x509-'));
  p256Ca = makeCa('p256');
  edCa = makeCa('ed25519');
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('createSelfSignedCa', () => {
  it('makes a CA certificate that node and openssl accept', () => {
    const cert = new X509Certificate(p256Ca.der);
    expect(cert.ca).toBe(true);
    expect(cert.verify(p256Ca.pub)).toBe(true);
    expect(cert.checkIssued(cert)).toBe(true);
    expect(cert.subject).toBe('O=example.org\nCN=Tessera CA p256');
    expect(cert.issuer).toBe(cert.subject);
    expect(cert.subjectAltName).toBe(`URI:${TD}`);
    expect(new Date(cert.validFrom).getTime()).toBe(NOW.getTime() - DAY);
    expect(new Date(cert.validTo).getTime()).toBe(NOW.getTime() + 365 * DAY);

    const text = opensslText(p256Ca.der);
    expect(text).toContain('Version: 3 (0x2)');
    expect(text).toContain('Signature Algorithm: ecdsa-with-SHA256');
    expect(ext(text, 'X509v3 Basic Constraints')).toEqual({ critical: true, value: 'CA:TRUE, pathlen:0' });
    expect(ext(text, 'X509v3 Key Usage')).toEqual({ critical: true, value: 'Certificate Sign, CRL Sign' });
    expect(ext(text, 'X509v3 Subject Key Identifier').critical).toBe(false);
    expect(ext(text, 'X509v3 Subject Alternative Name')).toEqual({ critical: false, value: `URI:${TD}` });
    const self = openssl(['verify', '-x509_strict', '-CAfile', '@ca.pem', '@ca.pem'], { 'ca.pem': pemEncode(p256Ca.der, 'CERTIFICATE') });
    expect(self.out).toContain(': OK');
  });

  it('supports an Ed25519 root, a pathLen, a fixed serial and dates past 2049', () => {
    const k = keyPair('ed25519');
    const der = createSelfSignedCa({
      ...k,
      commonName: 'Root',
      notBefore: new Date('1949-06-01T00:00:00Z'),
      notAfter: new Date('2060-01-01T00:00:00Z'),
      pathLen: 2,
      serial: Buffer.from('00ff01', 'hex'),
    });
    const cert = new X509Certificate(der);
    expect(cert.verify(k.publicKey)).toBe(true);
    expect(cert.serialNumber.toUpperCase()).toBe('FF01'); // the Buffer is an unsigned magnitude
    expect(new Date(cert.validFrom).toISOString()).toBe('1949-06-01T00:00:00.000Z');
    expect(new Date(cert.validTo).toISOString()).toBe('2060-01-01T00:00:00.000Z');
    const text = opensslText(der);
    expect(text).toContain('Signature Algorithm: ED25519');
    expect(ext(text, 'X509v3 Basic Constraints').value).toBe('CA:TRUE, pathlen:2');
    expect(text).not.toContain('Subject Alternative Name');
  });

  it('refuses a public key that does not match', () => {
    const a = keyPair('p256');
    const b = keyPair('p256');
    expectCode(
      () => createSelfSignedCa({ privateKey: a.privateKey, publicKey: b.publicKey, commonName: 'x', notBefore: NOW, notAfter: NOW }),
      'TESSERA_INTERNAL',
    );
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 });
    expectCode(() => createSelfSignedCa({ ...rsa, commonName: 'x', notBefore: NOW, notAfter: NOW }), 'TESSERA_INTERNAL');
  });
});

describe('CertificateIssuer.issueLeaf', () => {
  it('issues an X509-SVID that node verifies', () => {
    const issuer = new CertificateIssuer({ certDer: p256Ca.der, privateKey: p256Ca.key });
    const leafKey = keyPair('p256');
    const spec = leafSpec(leafKey.publicKey);
    const der = issuer.issueLeaf(spec);
    const cert = new X509Certificate(der);
    const ca = new X509Certificate(p256Ca.der);
    expect(cert.verify(p256Ca.pub)).toBe(true);
    expect(cert.checkIssued(ca)).toBe(true);
    expect(cert.ca).toBe(false);
    expect(cert.subject).toBeUndefined(); // empty subject
    expect(cert.issuer).toBe(ca.subject);
    expect(cert.subjectAltName).toBe(`URI:${WORKLOAD}`);
    expect(new Date(cert.validFrom).getTime()).toBe(spec.notBefore.getTime());
    expect(new Date(cert.validTo).getTime()).toBe(spec.notAfter.getTime());
    expect(cert.publicKey.equals(leafKey.publicKey)).toBe(true);
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']);
    // Default serial: 16 octets, positive.
    expect(cert.serialNumber).toMatch(/^[4-7][0-9A-F]{31}$/i);
    expect(issuer.issueLeaf(spec).equals(der)).toBe(false);
  });

  it('issues an X509-SVID that openssl verifies, with the required extensions', () => {
    const issuer = new CertificateIssuer({ certDer: p256Ca.der, privateKey: p256Ca.key });
    const der = issuer.issueLeaf(leafSpec(keyPair('p256').publicKey));
    expect(verifyChain(p256Ca.der, der)).toMatch(/leaf\.pem: OK/);
    const purposes = openssl(['verify', '-purpose', 'sslclient', '-CAfile', '@ca.pem', '@leaf.pem'], {
      'ca.pem': pemEncode(p256Ca.der, 'CERTIFICATE'),
      'leaf.pem': pemEncode(der, 'CERTIFICATE'),
    });
    expect(purposes.out).toContain(': OK');
    const text = opensslText(der);
    expect(text).toContain('Version: 3 (0x2)');
    expect(text).toContain('Signature Algorithm: ecdsa-with-SHA256');
    expect(text).toContain('Public Key Algorithm: id-ecPublicKey');
    expect(ext(text, 'X509v3 Basic Constraints')).toEqual({ critical: true, value: 'CA:FALSE' });
    expect(ext(text, 'X509v3 Key Usage')).toEqual({ critical: true, value: 'Digital Signature' });
    expect(ext(text, 'X509v3 Extended Key Usage')).toEqual({
      critical: false,
      value: 'TLS Web Server Authentication, TLS Web Client Authentication',
    });
    // Empty subject: the SAN must be critical (RFC 5280 4.2.1.6).
    expect(ext(text, 'X509v3 Subject Alternative Name')).toEqual({ critical: true, value: `URI:${WORKLOAD}` });
    const caText = opensslText(p256Ca.der);
    expect(ext(text, 'X509v3 Authority Key Identifier').value.replace(/^keyid:/, '')).toBe(ext(caText, 'X509v3 Subject Key Identifier').value);
    expect(ext(text, 'X509v3 Subject Key Identifier').critical).toBe(false);
  });

  it('signs with an Ed25519 CA key', () => {
    const issuer = new CertificateIssuer({ certDer: edCa.der, privateKey: edCa.key });
    const der = issuer.issueLeaf(leafSpec(keyPair('p256').publicKey));
    const cert = new X509Certificate(der);
    expect(cert.verify(edCa.pub)).toBe(true);
    expect(cert.checkIssued(new X509Certificate(edCa.der))).toBe(true);
    expect(verifyChain(edCa.der, der)).toMatch(/leaf\.pem: OK/);
    expect(opensslText(der)).toContain('Signature Algorithm: ED25519');
  });

  it('certifies an Ed25519 subject key', () => {
    for (const ca of [p256Ca, edCa]) {
      const leafKey = keyPair('ed25519');
      const der = new CertificateIssuer({ certDer: ca.der, privateKey: ca.key }).issueLeaf(leafSpec(leafKey.publicKey));
      const cert = new X509Certificate(der);
      expect(cert.publicKey.equals(leafKey.publicKey)).toBe(true);
      expect(cert.verify(ca.pub)).toBe(true);
      expect(verifyChain(ca.der, der)).toMatch(/leaf\.pem: OK/);
      expect(opensslText(der)).toContain('Public Key Algorithm: ED25519');
    }
  });

  it('encodes a subject, DNS and IP SANs for server certificates', () => {
    const issuer = new CertificateIssuer({ certDer: p256Ca.der, privateKey: p256Ca.key });
    const der = issuer.issueLeaf(
      leafSpec(keyPair('p256').publicKey, {
        subject: { commonName: 'tessera-server', organization: 'example.org' },
        uriSans: ['spiffe://example.org/tessera/server'],
        dnsSans: ['localhost', 'tessera.example.org'],
        ipSans: ['127.0.0.1', '::1', '2001:db8::a:b', '::ffff:10.1.2.3', 'fe80::1:2:3:4:5'],
        serial: Buffer.from('0102030405', 'hex'),
      }),
    );
    const cert = new X509Certificate(der);
    expect(cert.subject).toBe('O=example.org\nCN=tessera-server');
    expect(cert.serialNumber).toBe('0102030405');
    expect(cert.checkHost('tessera.example.org')).toBe('tessera.example.org');
    expect(cert.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(cert.checkIP('::1')).toBe('::1');
    expect(cert.checkIP('2001:db8::a:b')).toBe('2001:db8::a:b');
    expect(cert.checkIP('::ffff:10.1.2.3')).toBe('::ffff:10.1.2.3');
    expect(cert.checkIP('fe80::1:2:3:4:5')).toBe('fe80::1:2:3:4:5');
    expect(cert.checkIP('10.1.2.3')).toBeUndefined();
    const text = opensslText(der);
    const san = ext(text, 'X509v3 Subject Alternative Name');
    expect(san.critical).toBe(false);
    expect(san.value).toBe(
      'URI:spiffe://example.org/tessera/server, DNS:localhost, DNS:tessera.example.org, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, ' +
        'IP Address:2001:DB8:0:0:0:0:A:B, IP Address:0:0:0:0:0:FFFF:A01:203, IP Address:FE80:0:0:1:2:3:4:5',
    );
    expect(verifyChain(p256Ca.der, der)).toMatch(/leaf\.pem: OK/);
  });

  it('chains through an intermediate CA', () => {
    const root = makeCa('p256', 1);
    const interKey = keyPair('p256');
    const interDer = createIntermediateCa(
      { certDer: root.der, privateKey: root.key },
      { publicKey: interKey.publicKey, commonName: 'Intermediate', trustDomainUri: TD, notBefore: NOW, notAfter: new Date(NOW.getTime() + 30 * DAY) },
    );
    const inter = new X509Certificate(interDer);
    expect(inter.ca).toBe(true);
    expect(inter.checkIssued(new X509Certificate(root.der))).toBe(true);
    expect(inter.verify(root.pub)).toBe(true);
    const leaf = new CertificateIssuer({ certDer: interDer, privateKey: interKey.privateKey }).issueLeaf(leafSpec(keyPair('ed25519').publicKey));
    const out = openssl(['verify', '-x509_strict', '-CAfile', '@root.pem', '-untrusted', '@inter.pem', '@leaf.pem'], {
      'root.pem': pemEncode(root.der, 'CERTIFICATE'),
      'inter.pem': pemEncode(interDer, 'CERTIFICATE'),
      'leaf.pem': pemEncode(leaf, 'CERTIFICATE'),
    }).out;
    expect(out).toMatch(/leaf\.pem: OK/);
    // pathlen:0 on the root forbids the intermediate.
    const strictRoot = makeCa('p256', 0);
    const inter0 = createIntermediateCa(
      { certDer: strictRoot.der, privateKey: strictRoot.key },
      { publicKey: interKey.publicKey, commonName: 'Intermediate', notBefore: NOW, notAfter: new Date(NOW.getTime() + DAY) },
    );
    const leaf0 = new CertificateIssuer({ certDer: inter0, privateKey: interKey.privateKey }).issueLeaf(leafSpec(keyPair('p256').publicKey));
    const refused = verifyChain(strictRoot.der, leaf0, inter0);
    expect(refused).not.toMatch(/leaf\.pem: OK/);
    expect(refused).toContain('path length constraint exceeded');
  });

  it('validates the issuer material once', () => {
    const other = keyPair('p256');
    expectCode(() => new CertificateIssuer({ certDer: p256Ca.der, privateKey: other.privateKey }), 'TESSERA_CONFIG_INVALID');
    expectCode(() => new CertificateIssuer({ certDer: Buffer.from('garbage'), privateKey: p256Ca.key }), 'TESSERA_CONFIG_INVALID');
    const leafKey = keyPair('p256');
    const leaf = new CertificateIssuer({ certDer: p256Ca.der, privateKey: p256Ca.key }).issueLeaf(leafSpec(leafKey.publicKey));
    expectCode(() => new CertificateIssuer({ certDer: leaf, privateKey: leafKey.privateKey }), 'TESSERA_CONFIG_INVALID');
    const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' });
    expectCode(() => new CertificateIssuer({ certDer: p256Ca.der, privateKey: p384.privateKey }), 'TESSERA_CONFIG_INVALID');
  });

  it('refuses invalid specs', () => {
    const issuer = new CertificateIssuer({ certDer: p256Ca.der, privateKey: p256Ca.key });
    const k = keyPair('p256');
    const bad: Partial<LeafSpec>[] = [
      { uriSans: [] },
      { notAfter: new Date(NOW.getTime() - DAY) },
      { ipSans: ['300.1.1.1'] },
      { ipSans: ['fe80::1%eth0'] },
      { uriSans: ['spiffe://example.org/é'] },
      { serial: Buffer.alloc(4) },
      { serial: Buffer.alloc(21, 1) },
      { publicKey: k.privateKey },
    ];
    for (const b of bad) expectCode(() => issuer.issueLeaf(leafSpec(k.publicKey, b)), 'TESSERA_INTERNAL');
  });
});

describe('certificateUriSans', () => {
  it('reads the URI SANs from the DER', () => {
    const issuer = new CertificateIssuer({ certDer: p256Ca.der, privateKey: p256Ca.key });
    expect(certificateUriSans(issuer.issueLeaf(leafSpec(keyPair('p256').publicKey)))).toEqual([WORKLOAD]);
    expect(certificateUriSans(p256Ca.der)).toEqual([TD]);
    // A comma in a URI cannot be confused with a separator (as in node's subjectAltName string).
    const tricky = 'spiffe://example.org/a, URI:spiffe://example.org/b';
    const der = issuer.issueLeaf(leafSpec(keyPair('p256').publicKey, { uriSans: [tricky], dnsSans: ['x.example'] }));
    expect(certificateUriSans(der)).toEqual([tricky]);
    expect(certificateUriSans(new X509Certificate(der).raw)).toEqual([tricky]);
    const noSan = createSelfSignedCa({ ...keyPair('p256'), commonName: 'x', notBefore: NOW, notAfter: NOW });
    expect(certificateUriSans(noSan)).toEqual([]);
  });

  it('throws only TESSERA_AUTH_INVALID on garbage', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (b) => {
        expectCode(() => certificateUriSans(Buffer.from(b)), 'TESSERA_AUTH_INVALID');
      }),
      { numRuns: 1000 },
    );
    const leaf = new CertificateIssuer({ certDer: p256Ca.der, privateKey: p256Ca.key }).issueLeaf(leafSpec(keyPair('p256').publicKey));
    expectCode(() => certificateUriSans(leaf.subarray(0, leaf.length - 1)), 'TESSERA_AUTH_INVALID');
    expectCode(() => certificateUriSans(Buffer.concat([leaf, Buffer.from([0])])), 'TESSERA_AUTH_INVALID');
    fc.assert(
      fc.property(fc.nat(), fc.integer({ min: 0, max: 255 }), (at, byte) => {
        const m = Buffer.from(leaf);
        m[at % m.length] = byte;
        try {
          const uris = certificateUriSans(m);
          expect(Array.isArray(uris)).toBe(true);
        } catch (err) {
          expect(err).toBeInstanceOf(TesseraError);
          expect((err as TesseraError).code).toBe('TESSERA_AUTH_INVALID');
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe('spkiDer', () => {
  it('matches node\'s SPKI export for every key type', () => {
    const keys = [
      keyPair('p256').publicKey,
      keyPair('ed25519').publicKey,
      generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey,
      generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey,
    ];
    for (const k of keys) expect(spkiDer(k)).toEqual(k.export({ type: 'spki', format: 'der' }));
    // P-256 points whose coordinates have leading zero octets are still 32 octets each.
    for (let i = 0; i < 200; i++) {
      const k = keyPair('p256').publicKey;
      expect(spkiDer(k)).toEqual(k.export({ type: 'spki', format: 'der' }));
    }
  });
});

describe('PEM', () => {
  it('round-trips and matches node', () => {
    const pem = pemEncode(p256Ca.der, 'CERTIFICATE');
    expect(pem).toBe(new X509Certificate(p256Ca.der).toString());
    expect(pemDecodeAll(pem, 'CERTIFICATE')).toEqual([p256Ca.der]);
    const key = pemEncode(spkiDer(p256Ca.pub), 'PUBLIC KEY');
    expect(key).toBe(p256Ca.pub.export({ type: 'spki', format: 'pem' }));
    const bundle = `explanatory text\n${pem}\r\n${key}${pemEncode(edCa.der, 'CERTIFICATE').replace(/\n/g, '\r\n')}`;
    expect(pemDecodeAll(bundle, 'CERTIFICATE')).toEqual([p256Ca.der, edCa.der]);
    expect(pemDecodeAll(bundle, 'PUBLIC KEY')).toEqual([spkiDer(p256Ca.pub)]);
    expect(pemDecodeAll(bundle, 'PRIVATE KEY')).toEqual([]);
    expect(pemDecodeAll('', 'CERTIFICATE')).toEqual([]);
  });

  it('rejects garbage inside blocks', () => {
    const pem = pemEncode(Buffer.from('hello world!'), 'CERTIFICATE');
    const bad = [
      pem.replace('aGVs', 'aG*s'),
      pem.replace('-----END CERTIFICATE-----', '-----END PUBLIC KEY-----'),
      pem.replace('-----END CERTIFICATE-----', ''),
      pem.replace('-----BEGIN CERTIFICATE-----', ''),
      `-----BEGIN CERTIFICATE-----\n${pem}`,
      '-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n',
      '-----BEGIN CERTIFICATE-----\naGVsbG8=a\n-----END CERTIFICATE-----\n',
      '-----BEGIN CERTIFICATE-----\naGVsbG9=\n-----END CERTIFICATE-----\n', // non-canonical padding bits
      '-----BEGIN CERTIFICATE-----\naGVsbA\n-----END CERTIFICATE-----\n',
    ];
    for (const b of bad) expectCode(() => pemDecodeAll(b, 'CERTIFICATE'), 'TESSERA_BAD_REQUEST');
  });
});
