import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { expectTesseraError } from '../../../test/support/expect.js';
import { TesseraError } from '../errors.js';
import { CertificateIssuer, createSelfSignedCa } from '../x509.js';
import { canonicalJson } from '../canonical-json.js';
import { certificateFingerprint } from '../x509.js';
import {
  createPolicyBundle,
  policyHash,
  signPolicyBundle,
  verifyPolicyBundle,
  type PolicyBundle,
  type SignedPolicyBundle,
} from './bundle.js';
import { SHOP_ENTITIES, SHOP_POLICIES } from './fixtures.js';
import { TESSERA_SCHEMA } from './schema.js';
import { encodeVerifierKey } from '../signed-note.js';

const BAD = 'TESSERA_POLICY_BUNDLE_INVALID';
const DAY = 86_400_000;

function makeCa(name: string, kind: 'p256' | 'ed25519' = 'p256'): { privateKey: KeyObject; certDer: Buffer } {
  const { privateKey, publicKey } = kind === 'p256' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('ed25519');
  const now = Date.now();
  const certDer = createSelfSignedCa({ privateKey, publicKey, commonName: name, trustDomainUri: 'spiffe://example.org', notBefore: new Date(now - DAY), notAfter: new Date(now + DAY) });
  return { privateKey, certDer };
}

const ca = makeCa('Tessera CA 1');
const other = makeCa('Other CA');

function bundle(over: Partial<PolicyBundle> = {}): PolicyBundle {
  return { ...createPolicyBundle({ version: 7, author: 'alice', reason: 'shop policies', policies: SHOP_POLICIES, schema: TESSERA_SCHEMA as Record<string, unknown>, entities: SHOP_ENTITIES, createdAt: '2026-01-01T00:00:00.000Z' }), ...over };
}

/** Signs any payload text exactly as signPolicyBundle does, to reach the checks behind the signature. */
function signRaw(payloadText: string, key = ca.privateKey, certDer = ca.certDer): SignedPolicyBundle {
  const payload = Buffer.from(payloadText, 'utf8').toString('base64url');
  const signature = sign('sha256', Buffer.from(`tessera-policy-bundle-v1\n${payload}`), { key, dsaEncoding: 'ieee-p1363' }).toString('base64url');
  return { payload, alg: 'ES256', signer: certificateFingerprint(certDer), signature };
}

const signed = signPolicyBundle(bundle(), ca);
const trusted = [other.certDer, ca.certDer];

describe('signed policy bundle', () => {
  it('round-trips', () => {
    expect(signed.alg).toBe('ES256');
    expect(signed.signer).toBe(certificateFingerprint(ca.certDer));
    expect(Buffer.from(signed.signature, 'base64url')).toHaveLength(64);
    const got = verifyPolicyBundle(JSON.parse(JSON.stringify(signed)), trusted, { minVersion: 6 });
    expect(got).toEqual(bundle());
    expect(got.hash).toBe(policyHash(SHOP_POLICIES, TESSERA_SCHEMA));
  });

  it('accepts the same version again (idempotent refetch) and refuses an older one (rollback)', () => {
    expect(verifyPolicyBundle(signed, trusted, { minVersion: 7 }).version).toBe(7);
    const err = expectTesseraError(() => verifyPolicyBundle(signed, trusted, { minVersion: 8 }), BAD);
    expect(err.message).toMatch(/rollback refused/);
  });

  it('refuses a tampered payload', () => {
    const evil = Buffer.from(canonicalJson({ ...bundle(), reason: 'evil' })).toString('base64url');
    expectTesseraError(() => verifyPolicyBundle({ ...signed, payload: evil }, trusted), BAD);
  });

  it('refuses a tampered signature', () => {
    const sig = Buffer.from(signed.signature, 'base64url');
    sig[10] = sig[10]! ^ 1;
    expectTesseraError(() => verifyPolicyBundle({ ...signed, signature: sig.toString('base64url') }, trusted), BAD);
  });

  it('refuses an unknown signer, and a signer that did not sign', () => {
    expect(expectTesseraError(() => verifyPolicyBundle(signed, [other.certDer]), BAD).message).toMatch(/not in the trust bundle/);
    expectTesseraError(() => verifyPolicyBundle({ ...signed, signer: certificateFingerprint(other.certDer) }, trusted), BAD);
    expectTesseraError(() => verifyPolicyBundle(signed, []), BAD);
  });

  it('refuses a wrong or missing algorithm', () => {
    for (const alg of ['ES384', 'none', 'HS256', 'es256', undefined]) {
      expectTesseraError(() => verifyPolicyBundle({ ...signed, alg }, trusted), BAD);
    }
  });

  it('refuses a hash that does not match the content, even when signed', () => {
    const b = bundle();
    expectTesseraError(() => signPolicyBundle({ ...b, hash: 'a'.repeat(64) }, ca), BAD);
    const forged = signRaw(canonicalJson({ ...b, policies: { 'all.cedar': 'permit(principal, action, resource);' } }));
    expect(expectTesseraError(() => verifyPolicyBundle(forged, trusted), BAD).message).toMatch(/hash/);
  });

  it('refuses unknown or missing fields, even when signed', () => {
    const b = bundle() as unknown as Record<string, unknown>;
    expectTesseraError(() => verifyPolicyBundle(signRaw(canonicalJson({ ...b, extra: 1 })), trusted), BAD);
    const { reason: _r, ...noReason } = b;
    expectTesseraError(() => verifyPolicyBundle(signRaw(canonicalJson(noReason)), trusted), BAD);
    expectTesseraError(() => verifyPolicyBundle(signRaw(canonicalJson({ ...b, entities: [{ id: 'spiffe://example.org/a', attrs: {}, parents: [] }] })), trusted), BAD);
    expectTesseraError(() => verifyPolicyBundle(signRaw(canonicalJson({ ...b, entities: [{ id: 'spiffe://example.org/a', attrs: { team: 'x' } }] })), trusted), BAD);
    expectTesseraError(() => verifyPolicyBundle(signRaw(canonicalJson({ ...b, entities: [{ id: 'not a spiffe id', attrs: {} }] })), trusted), BAD);
    expectTesseraError(() => verifyPolicyBundle({ ...signed, extra: 1 }, trusted), BAD);
  });

  it('refuses a payload that is not canonical JSON, even when signed', () => {
    expect(expectTesseraError(() => verifyPolicyBundle(signRaw(JSON.stringify(bundle(), null, 2)), trusted), BAD).message).toMatch(/canonical/);
    expectTesseraError(() => verifyPolicyBundle(signRaw('not json'), trusted), BAD);
    const invalidUtf8 = Buffer.from([0x7b, 0xff, 0x7d]).toString('base64url');
    const sig = sign('sha256', Buffer.from(`tessera-policy-bundle-v1\n${invalidUtf8}`), { key: ca.privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url');
    expectTesseraError(() => verifyPolicyBundle({ ...signed, payload: invalidUtf8, signature: sig }, trusted), BAD);
  });

  it('refuses oversized content', () => {
    const huge = 'A'.repeat(6 * 1024 * 1024);
    expect(expectTesseraError(() => verifyPolicyBundle({ ...signed, payload: huge }, trusted), BAD).message).toMatch(/larger than/);
    const many = Object.fromEntries(Array.from({ length: 1001 }, (_, i) => [`p${i}.cedar`, '']));
    expectTesseraError(() => signPolicyBundle(createPolicyBundle({ ...bundle(), policies: many }), ca), BAD);
    const b = bundle();
    expectTesseraError(() => verifyPolicyBundle(signRaw(canonicalJson({ ...b, policies: many, hash: policyHash(many, b.schema) })), trusted), BAD);
  });

  it('refuses garbage envelopes', () => {
    for (const g of [null, undefined, 'x', 42, [], {}, { payload: 1, alg: 'ES256', signer: 'x', signature: 'y' }, { ...signed, payload: '' }, { ...signed, payload: `${signed.payload}=` }, { ...signed, signature: `${signed.signature.slice(0, -1)}` }]) {
      expectTesseraError(() => verifyPolicyBundle(g, trusted), BAD);
    }
    expectTesseraError(() => verifyPolicyBundle(signed, [Buffer.from('not a certificate')]), BAD);
    expectTesseraError(() => verifyPolicyBundle(signed, trusted, { minVersion: 1.5 }), BAD);
  });

  it('refuses a signer certificate that is not a P-256 CA', () => {
    const ed = makeCa('Ed25519 CA', 'ed25519');
    expectTesseraError(() => signPolicyBundle(bundle(), ed), BAD);
    const byEd = { ...signRaw(canonicalJson(bundle())), signer: certificateFingerprint(ed.certDer) };
    expectTesseraError(() => verifyPolicyBundle(byEd, [ed.certDer]), BAD);
    // A leaf certificate whose key signed the bundle: in the list, but not a CA.
    const leafKey = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const leafDer = new CertificateIssuer({ certDer: ca.certDer, privateKey: ca.privateKey }).issueLeaf({
      publicKey: leafKey.publicKey, notBefore: new Date(Date.now() - DAY), notAfter: new Date(Date.now() + DAY), uriSans: ['spiffe://example.org/x'],
    });
    const byLeaf = signRaw(canonicalJson(bundle()), leafKey.privateKey, leafDer);
    expectTesseraError(() => verifyPolicyBundle(byLeaf, [leafDer]), BAD);
  });

  it('refuses to sign with a key that is not the certificate’s', () => {
    expectTesseraError(() => signPolicyBundle(bundle(), { privateKey: other.privateKey, certDer: ca.certDer }), BAD);
  });

  it('only ever throws TesseraError on arbitrary input (property)', () => {
    const envelopeLike = fc.record({
      payload: fc.oneof(fc.string(), fc.constant(signed.payload), fc.base64String()),
      alg: fc.oneof(fc.constant('ES256'), fc.string()),
      signer: fc.oneof(fc.constant(signed.signer), fc.string()),
      signature: fc.oneof(fc.constant(signed.signature), fc.string()),
    }, { requiredKeys: [] });
    fc.assert(
      fc.property(fc.oneof(fc.jsonValue(), fc.anything(), envelopeLike), fc.option(fc.integer(), { nil: undefined }), (v, minVersion) => {
        try {
          verifyPolicyBundle(v, trusted, minVersion === undefined ? {} : { minVersion });
        } catch (err) {
          expect(err).toBeInstanceOf(TesseraError);
          expect((err as TesseraError).code).toBe(BAD);
          return;
        }
        // Only the genuine envelope verifies.
        expect(v).toMatchObject(signed);
      }),
      { numRuns: 500 },
    );
  });

  it('refuses every single-character mutation of a valid envelope (property)', () => {
    const small = signPolicyBundle(createPolicyBundle({ version: 3, author: 'a', reason: 'r', policies: { 'a.cedar': 'permit(principal, action, resource);' }, schema: TESSERA_SCHEMA as Record<string, unknown>, entities: [] }), ca);
    const text = JSON.stringify(small);
    fc.assert(
      fc.property(fc.nat({ max: text.length - 1 }), fc.oneof(fc.string({ minLength: 1, maxLength: 1 }), fc.constantFrom('A', 'a', '0', '_', '-', '"', '=')), (i, ch) => {
        const mutated = text.slice(0, i) + ch + text.slice(i + 1);
        let parsed: unknown;
        try {
          parsed = JSON.parse(mutated);
        } catch {
          return;
        }
        if (canonicalJson(parsed) === canonicalJson(small)) return; // a no-op mutation
        try {
          verifyPolicyBundle(parsed, trusted);
        } catch (err) {
          expect(err).toBeInstanceOf(TesseraError);
          expect((err as TesseraError).code).toBe(BAD);
          return;
        }
        throw new Error(`mutation at ${i} (${JSON.stringify(ch)}) verified`);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('the revocation list in the bundle', () => {
  const ID = 'spiffe://example.org/shop/gone';
  const item = { id: ID, serials: ['4A01', '7F'], at: '2026-01-02T03:04:05.000Z', reason: 'entry deleted' };

  it('round-trips, and a bundle without one (signed before revocation existed) means an empty list', () => {
    const b = createPolicyBundle({ version: 8, author: 'a', reason: 'r', policies: SHOP_POLICIES, schema: TESSERA_SCHEMA as Record<string, unknown>, entities: SHOP_ENTITIES, revoked: [item] });
    expect(verifyPolicyBundle(signPolicyBundle(b, ca), trusted).revoked).toEqual([item]);
    const { revoked: _dropped, ...old } = bundle();
    expect(verifyPolicyBundle(signRaw(canonicalJson(old)), trusted).revoked).toEqual([]);
  });

  it('refuses a malformed or oversized list', () => {
    const many = (n: number, f: (i: number) => unknown) => Array.from({ length: n }, (_, i) => f(i));
    for (const revoked of [
      {},
      [{ ...item, id: 'not a spiffe id' }],
      [item, { ...item }],
      [{ ...item, serials: ['4a01'] }],
      [{ ...item, serials: ['0x4A'] }],
      [{ ...item, serials: ['A'.repeat(41)] }],
      [{ ...item, serials: 'A1' }],
      [{ ...item, at: 'yesterday' }],
      [{ ...item, reason: 'line\nbreak' }],
      [{ ...item, reason: 'x'.repeat(257) }],
      [{ ...item, extra: 1 }],
      [{ id: ID, serials: [], at: item.at }],
      [{ ...item, serials: many(257, (i) => (i + 1).toString(16).toUpperCase()) }],
      many(81, (i) => ({ ...item, id: `${ID}/${i}`, serials: many(250, (j) => (i * 1000 + j + 1).toString(16).toUpperCase()) })),
    ]) {
      expectTesseraError(() => verifyPolicyBundle(signRaw(canonicalJson({ ...bundle(), revoked })), trusted), BAD);
    }
  });
});

describe('the risk list in the bundle (issue 11)', () => {
  const ID = 'spiffe://example.org/shop/exfil';
  const item = { id: ID, state: 'quarantined' as const, score: 97, until: Date.UTC(2026, 0, 2), reason: 'bulk exfiltration' };

  it('round-trips; an empty list is omitted, and a bundle without one (older control plane) has none', () => {
    const b = createPolicyBundle({ ...bundle(), risk: [item, { ...item, id: `${ID}2`, state: 'step-up', score: 0 }] });
    expect(verifyPolicyBundle(signPolicyBundle(b, ca), trusted).risk).toEqual(b.risk);
    expect('risk' in createPolicyBundle({ ...bundle(), risk: [] })).toBe(false);
    expect(verifyPolicyBundle(signed, trusted).risk).toBeUndefined();
  });

  it('refuses a malformed or oversized list, even when signed', () => {
    for (const risk of [
      {}, 'x', [{ ...item, id: 'not a spiffe id' }], [item, { ...item }], [{ ...item, state: 'normal' }], [{ ...item, state: 'QUARANTINED' }],
      [{ ...item, score: 101 }], [{ ...item, score: -1 }], [{ ...item, score: 5.5 }], [{ ...item, score: '5' }],
      [{ ...item, until: -1 }], [{ ...item, until: 1.5 }], [{ ...item, until: '2026-01-01' }], [{ ...item, until: Date.UTC(10000, 0, 1) }],
      [{ ...item, reason: 'line\nbreak' }], [{ ...item, reason: 'x'.repeat(257) }], [{ ...item, extra: 1 }], [{ id: ID, state: 'quarantined', score: 1, until: 1 }],
      Array.from({ length: 10_001 }, (_, i) => ({ ...item, id: `${ID}/${i}` })),
    ]) {
      expectTesseraError(() => verifyPolicyBundle(signRaw(canonicalJson({ ...bundle(), risk })), trusted), BAD);
    }
  });

  it('never throws anything but TESSERA_POLICY_BUNDLE_INVALID on arbitrary risk items (property)', () => {
    fc.assert(fc.property(fc.array(fc.record({ id: fc.oneof(fc.constant(ID), fc.string()), state: fc.oneof(fc.constantFrom('step-up', 'quarantined'), fc.string()), score: fc.oneof(fc.integer({ min: -5, max: 105 }), fc.double({ noNaN: true, noDefaultInfinity: true })), until: fc.oneof(fc.nat(), fc.double({ noNaN: true, noDefaultInfinity: true }), fc.string()), reason: fc.string() }, { requiredKeys: [] }), { maxLength: 3 }), (risk) => {
      try {
        const b = verifyPolicyBundle(signRaw(canonicalJson({ ...bundle(), risk })), trusted);
        for (const r of b.risk ?? []) expect(r.score >= 0 && r.score <= 100 && Number.isInteger(r.score)).toBe(true);
      } catch (err) {
        expect((err as TesseraError).code).toBe(BAD);
      }
    }), { numRuns: 300 });
  });
});

describe('the audit log key in the bundle', () => {
  const logKey = encodeVerifierKey('example.org/tessera/audit', generateKeyPairSync('ed25519').publicKey);

  it('round-trips inside the signature; a bundle without one (signed before witnesses) has none', () => {
    const withKey = createPolicyBundle({ ...bundle(), auditLogKey: logKey });
    expect(verifyPolicyBundle(signPolicyBundle(withKey, ca), trusted).auditLogKey).toBe(logKey);
    expect('auditLogKey' in verifyPolicyBundle(signed, trusted)).toBe(false);
  });

  it('refuses a key that is not an Ed25519 signed-note verifier key, even when signed', () => {
    const cosignKey = encodeVerifierKey('example.org/witness', generateKeyPairSync('ed25519').publicKey, 'cosignature/v1');
    for (const bad of ['', 'nope', logKey.slice(0, -2), `${logKey} `, cosignKey, 7, null]) {
      expectTesseraError(() => verifyPolicyBundle(signRaw(canonicalJson({ ...bundle(), auditLogKey: bad })), trusted), BAD);
    }
  });
});
