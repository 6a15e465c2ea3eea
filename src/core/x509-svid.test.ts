import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { issueOddLeaf, svidDefects } from '../../test/support/svid-defects.js';
import { expectTesseraError } from '../../test/support/expect.js';
import { derBitString, derBoolean, derInteger, derSequence } from './der.js';
import { TesseraError } from './errors.js';
import { verifyPeerSvid } from './x509-svid.js';
import { CertificateIssuer, KEY_USAGE, createSelfSignedCa, decodeBasicConstraints, decodeKeyUsage, readLeafFields } from './x509.js';

const TD = 'example.org';
const ID = `spiffe://${TD}/ns/prod/sa/web`;
const HOUR = 3_600_000;
const now = Date.now();
const caKey = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const ca = {
  certDer: createSelfSignedCa({ ...caKey, commonName: 'test CA', trustDomainUri: `spiffe://${TD}`, notBefore: new Date(now - HOUR), notAfter: new Date(now + HOUR) }),
  privateKey: caKey.privateKey,
};
const issuer = new CertificateIssuer(ca);
const goodDer = issuer.issueLeaf({ publicKey: generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey, notBefore: new Date(now - 60_000), notAfter: new Date(now + HOUR), uriSans: [ID] });

describe('verifyPeerSvid', () => {
  it('accepts an SVID leaf of the trust domain and reports its ID, expiry and serial', () => {
    const v = verifyPeerSvid(goodDer, true, { trustDomain: TD }, now);
    const cert = new X509Certificate(goodDer);
    expect(v).toEqual({ ok: true, spiffeId: ID, notAfter: Date.parse(cert.validTo), serial: cert.serialNumber });
    expect(verifyPeerSvid(goodDer, true, { trustDomain: `spiffe://${TD}`, id: ID }, now).ok).toBe(true);
  });

  it('accepts a leaf without basicConstraints (RFC 5280 §4.2.1.9: cA DEFAULT FALSE) and extra keyUsage bits §4.3 allows', () => {
    expect(verifyPeerSvid(issueOddLeaf(ca, { uris: [ID], cA: 'absent' }).der, true, { trustDomain: TD }, now).ok).toBe(true);
    const ku = KEY_USAGE.digitalSignature | KEY_USAGE.keyEncipherment | KEY_USAGE.keyAgreement;
    expect(verifyPeerSvid(issueOddLeaf(ca, { uris: [ID], keyUsage: ku }).der, true, { trustDomain: TD }, now).ok).toBe(true);
  });

  for (const d of svidDefects(TD, ID)) {
    it(`refuses ${d.name}: "${d.reason}"`, () => {
      expect(verifyPeerSvid(issueOddLeaf(ca, d.spec).der, true, { trustDomain: TD }, now)).toEqual({ ok: false, reason: d.reason });
    });
  }

  it('refuses a missing certificate, an unverified chain, garbage, and another expected ID', () => {
    expect(verifyPeerSvid(undefined, true, { trustDomain: TD }, now)).toEqual({ ok: false, reason: 'no peer certificate' });
    expect(verifyPeerSvid(goodDer, false, { trustDomain: TD }, now)).toEqual({ ok: false, reason: 'chain not verified' });
    expect(verifyPeerSvid(goodDer.subarray(1), true, { trustDomain: TD }, now)).toEqual({ ok: false, reason: 'malformed certificate' });
    expect(verifyPeerSvid(goodDer, true, { trustDomain: TD, id: `${ID}x` }, now)).toEqual({ ok: false, reason: 'not the expected SPIFFE ID' });
    expect(verifyPeerSvid(goodDer, true, { trustDomain: 'not a trust domain!' }, now)).toEqual({ ok: false, reason: 'other trust domain' });
  });

  it('applies the validity window as notBefore <= now < notAfter', () => {
    const f = readLeafFields(goodDer);
    expect(verifyPeerSvid(goodDer, true, { trustDomain: TD }, f.notBefore).ok).toBe(true);
    expect(verifyPeerSvid(goodDer, true, { trustDomain: TD }, f.notBefore - 1)).toEqual({ ok: false, reason: 'not yet valid' });
    expect(verifyPeerSvid(goodDer, true, { trustDomain: TD }, f.notAfter - 1).ok).toBe(true);
    expect(verifyPeerSvid(goodDer, true, { trustDomain: TD }, f.notAfter)).toEqual({ ok: false, reason: 'expired' });
    expect(verifyPeerSvid(goodDer, true, { trustDomain: TD }, NaN)).toEqual({ ok: false, reason: 'not yet valid' });
  });

  it('never throws, whatever the bytes (fast-check over mutations of a good leaf)', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }), (edits) => {
        const m = Buffer.from(goodDer);
        for (const [at, byte] of edits) m[at % m.length] = byte;
        const v = verifyPeerSvid(m, true, { trustDomain: TD }, now);
        expect(typeof v.ok).toBe('boolean');
      }),
      { numRuns: 2000 },
    );
  });
});

describe('readLeafFields', () => {
  it('agrees with node on serial and validity', () => {
    for (const der of [goodDer, ca.certDer, issueOddLeaf(ca, { uris: [ID] }).der]) {
      const cert = new X509Certificate(der);
      const f = readLeafFields(der);
      expect(f.serial).toBe(cert.serialNumber);
      expect(f.notBefore).toBe(Date.parse(cert.validFrom));
      expect(f.notAfter).toBe(Date.parse(cert.validTo));
    }
    for (const serial of ['ff01', '0102030405', '7f', '80', '01']) {
      const der = issuer.issueLeaf({ publicKey: caKey.publicKey, notBefore: new Date(now), notAfter: new Date(now + HOUR), uriSans: [ID], serial: Buffer.from(serial, 'hex') });
      expect(readLeafFields(der).serial).toBe(new X509Certificate(der).serialNumber);
    }
  });

  it('reads cA and keyUsage from a leaf and from a CA', () => {
    expect(readLeafFields(goodDer)).toMatchObject({ uris: [ID], cA: false, keyUsage: KEY_USAGE.digitalSignature });
    expect(readLeafFields(ca.certDer)).toMatchObject({ uris: [`spiffe://${TD}`], cA: true, keyUsage: KEY_USAGE.keyCertSign | KEY_USAGE.cRLSign });
    expect(readLeafFields(issueOddLeaf(ca, { uris: [ID], cA: 'absent', keyUsage: 'absent' }).der)).toMatchObject({ cA: undefined, keyUsage: undefined });
  });

  it('throws only TESSERA_AUTH_INVALID on garbage', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (b) => {
        expectTesseraError(() => readLeafFields(Buffer.from(b)), 'TESSERA_AUTH_INVALID');
      }),
      { numRuns: 500 },
    );
    fc.assert(
      fc.property(fc.nat(), fc.integer({ min: 0, max: 255 }), (at, byte) => {
        const m = Buffer.from(goodDer);
        m[at % m.length] = byte;
        try {
          readLeafFields(m);
        } catch (err) {
          expect(err).toBeInstanceOf(TesseraError);
          expect((err as TesseraError).code).toBe('TESSERA_AUTH_INVALID');
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe('decodeKeyUsage', () => {
  it('numbers bits from the first one (RFC 5280 §4.2.1.3)', () => {
    expect(decodeKeyUsage(derBitString(Buffer.from([0x80]), 7), 'TESSERA_AUTH_INVALID')).toBe(KEY_USAGE.digitalSignature);
    expect(decodeKeyUsage(derBitString(Buffer.from([0x06]), 1), 'TESSERA_AUTH_INVALID')).toBe(KEY_USAGE.keyCertSign | KEY_USAGE.cRLSign);
    expect(decodeKeyUsage(derBitString(Buffer.from([0x00, 0x80]), 7), 'TESSERA_AUTH_INVALID')).toBe(KEY_USAGE.decipherOnly);
    expect(decodeKeyUsage(derBitString(Buffer.from([0x80, 0x00])), 'TESSERA_AUTH_INVALID')).toBe(KEY_USAGE.digitalSignature);
    expect(decodeKeyUsage(derBitString(Buffer.alloc(0)), 'TESSERA_AUTH_INVALID')).toBe(0);
  });

  it('refuses what is not a BIT STRING of a few octets, with the given code only', () => {
    for (const bad of [derSequence(), derBitString(Buffer.alloc(5)), Buffer.from([0x03, 0x02, 0x08, 0x00]), Buffer.from([0x03, 0x02, 0x01, 0x81]), Buffer.from([0x03])]) {
      expectTesseraError(() => decodeKeyUsage(bad, 'TESSERA_BAD_REQUEST'), 'TESSERA_BAD_REQUEST');
    }
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 12 }), (b) => {
        try {
          const m = decodeKeyUsage(Buffer.from(b), 'TESSERA_AUTH_INVALID');
          expect(m >= 0 && m < 512).toBe(true);
        } catch (err) {
          expect((err as TesseraError).code).toBe('TESSERA_AUTH_INVALID');
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe('decodeBasicConstraints', () => {
  it('reads cA (DEFAULT FALSE) and pathLenConstraint (RFC 5280 §4.2.1.9)', () => {
    const c = 'TESSERA_AUTH_INVALID';
    expect(decodeBasicConstraints(derSequence(), c)).toEqual({ cA: false, pathLen: undefined });
    expect(decodeBasicConstraints(derSequence(derBoolean(true)), c)).toEqual({ cA: true, pathLen: undefined });
    expect(decodeBasicConstraints(derSequence(derBoolean(false)), c)).toEqual({ cA: false, pathLen: undefined });
    expect(decodeBasicConstraints(derSequence(derBoolean(true), derInteger(0n)), c)).toEqual({ cA: true, pathLen: 0 });
    expect(decodeBasicConstraints(derSequence(derInteger(3n)), c)).toEqual({ cA: false, pathLen: 3 });
  });

  it('refuses other shapes, with the given code only', () => {
    const bad = [
      derSequence(derBoolean(true), derInteger(-1n)),
      derSequence(derBoolean(true), derInteger(1n), derInteger(1n)),
      derSequence(derInteger(1n), derBoolean(true)),
      derSequence(derBoolean(true), derBoolean(true)),
      derInteger(1n),
      Buffer.from([0x30, 0x03, 0x01, 0x01, 0x01]),
    ];
    for (const b of bad) expectTesseraError(() => decodeBasicConstraints(b, 'TESSERA_BAD_REQUEST'), 'TESSERA_BAD_REQUEST');
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 16 }), (b) => {
        try {
          const r = decodeBasicConstraints(Buffer.from(b), 'TESSERA_AUTH_INVALID');
          expect(typeof r.cA).toBe('boolean');
        } catch (err) {
          expect((err as TesseraError).code).toBe('TESSERA_AUTH_INVALID');
        }
      }),
      { numRuns: 2000 },
    );
  });
});
