import { X509Certificate, createPrivateKey, generateKeyPairSync } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { bundleToJwks } from '../../core/bundle.js';
import { TesseraError } from '../../core/errors.js';
import { CertificateIssuer, createIntermediateCa, createSelfSignedCa, pemEncode } from '../../core/x509.js';
import { workloadApiService } from './proto.js';
import { fingerprint, jwtBundlesResponse, toStruct, x509BundlesResponse, x509SvidResponse, type IdentitySnapshot } from './responses.js';
import { grpcErrorOf } from './status.js';

const TD = 'example.org';
const ID = 'spiffe://example.org/web';
const now = Date.now();

function key() {
  return generateKeyPairSync('ec', { namedCurve: 'P-256' });
}

// Root -> intermediate -> leaf, so the chain order of x509_svid is visible.
const root = key();
const rootDer = createSelfSignedCa({ ...root, commonName: 'root', notBefore: new Date(now - 60_000), notAfter: new Date(now + 86_400_000), pathLen: 1 });
const inter = key();
const interDer = createIntermediateCa(
  { certDer: rootDer, privateKey: root.privateKey },
  { publicKey: inter.publicKey, commonName: 'intermediate', notBefore: new Date(now - 60_000), notAfter: new Date(now + 86_400_000) },
);
const leafKey = key();
const leafDer = new CertificateIssuer({ certDer: interDer, privateKey: inter.privateKey }).issueLeaf({
  publicKey: leafKey.publicKey,
  notBefore: new Date(now - 10_000),
  notAfter: new Date(now + 3_600_000),
  uriSans: [ID],
});
const snap: IdentitySnapshot = {
  spiffeId: ID,
  certPem: pemEncode(leafDer, 'CERTIFICATE') + pemEncode(interDer, 'CERTIFICATE'),
  key: leafKey.privateKey,
  bundlePem: pemEncode(rootDer, 'CERTIFICATE'),
  notAfter: new Date(now + 3_600_000),
};

/** Encodes and decodes a message with the service's own serializers (what goes on the wire). */
function roundTrip(method: string, message: unknown): Record<string, unknown> {
  const m = workloadApiService()[method]!;
  return m.responseDeserialize(m.responseSerialize(message)) as Record<string, unknown>;
}

describe('x509SvidResponse', () => {
  it('holds the chain leaf first as concatenated DER, the key as PKCS#8 DER, and the bundle', () => {
    const r = x509SvidResponse(snap);
    const svid = r.svids[0]!;
    expect(svid.x509_svid).toEqual(Buffer.concat([leafDer, interDer]));
    expect(svid.bundle).toEqual(rootDer);
    const k = createPrivateKey({ key: svid.x509_svid_key, format: 'der', type: 'pkcs8' });
    expect(new X509Certificate(leafDer).checkPrivateKey(k)).toBe(true);
    const wire = roundTrip('FetchX509SVID', r) as { svids: { spiffe_id: string; x509_svid: Buffer }[] };
    expect(wire.svids[0]!.spiffe_id).toBe(ID);
    expect(Buffer.from(wire.svids[0]!.x509_svid)).toEqual(svid.x509_svid);
  });

  it('refuses incomplete material (UNAVAILABLE to the caller), never a public key as the SVID key', () => {
    expect(() => x509SvidResponse({ ...snap, bundlePem: '' })).toThrow(TesseraError);
    expect(grpcErrorOf(catchErr(() => x509SvidResponse({ ...snap, bundlePem: '' }))).code).toBe(grpc.status.UNAVAILABLE);
    expect(() => x509SvidResponse({ ...snap, certPem: 'garbage' })).toThrow(TesseraError);
    expect(() => x509SvidResponse({ ...snap, key: leafKey.publicKey })).toThrow(TesseraError);
  });
});

function catchErr(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('did not throw');
}

describe('bundle responses', () => {
  it('key the X.509 bundle by the trust domain SPIFFE ID', () => {
    const r = x509BundlesResponse(TD, snap.bundlePem);
    expect(Object.keys(r.bundles)).toEqual(['spiffe://example.org']);
    expect(r.bundles['spiffe://example.org']).toEqual(rootDer);
  });

  it('keep only jwt-svid keys in the JWT bundle, as a plain JWK Set', () => {
    const jwt = key();
    const full = bundleToJwks({ trustDomain: TD, x509Authorities: [rootDer], jwtAuthorities: [{ kid: 'k1', publicKey: jwt.publicKey }], sequence: 7 });
    expect(full.keys).toHaveLength(2);
    const r = jwtBundlesResponse(TD, full);
    const doc = JSON.parse(r.bundles['spiffe://example.org']!.toString('utf8')) as { keys: { kid: string; use: string }[] };
    expect(Object.keys(doc)).toEqual(['keys']);
    expect(doc.keys).toHaveLength(1);
    expect(doc.keys[0]).toMatchObject({ kid: 'k1', use: 'jwt-svid' });
    expect(() => jwtBundlesResponse(TD, undefined as unknown as { keys: object[] })).toThrow(TesseraError);
  });
});

describe('toStruct', () => {
  it('survives the wire as google.protobuf.Struct, every JSON type included', () => {
    const claims = { sub: ID, aud: ['a', 'b'], exp: 1_900_000_000, iat: 1.5, admin: false, none: null, nested: { deep: [1, { x: 'y' }] } };
    const wire = roundTrip('ValidateJWTSVID', { spiffe_id: ID, claims: toStruct(claims) }) as { claims: { fields: Record<string, unknown> } };
    const back = (v: Record<string, unknown>): unknown => {
      if ('stringValue' in v) return v.stringValue;
      if ('numberValue' in v) return v.numberValue;
      if ('boolValue' in v) return v.boolValue;
      if ('nullValue' in v) return null;
      if ('listValue' in v) return ((v.listValue as { values: Record<string, unknown>[] }).values ?? []).map(back);
      if ('structValue' in v) return obj((v.structValue as { fields: Record<string, Record<string, unknown>> }).fields);
      throw new Error('unknown kind');
    };
    const obj = (fields: Record<string, Record<string, unknown>>): Record<string, unknown> =>
      Object.fromEntries(Object.entries(fields).map(([k, v]) => [k, back(v)]));
    expect(obj(wire.claims.fields as Record<string, Record<string, unknown>>)).toEqual(claims);
  });

  it('refuses values JSON cannot hold and absurd nesting', () => {
    expect(() => toStruct({ n: Number.NaN })).toThrow(TesseraError);
    expect(() => toStruct({ f: () => 1 })).toThrow(TesseraError);
    let deep: Record<string, unknown> = {};
    for (let i = 0; i < 100; i++) deep = { d: deep };
    expect(() => toStruct(deep)).toThrow(TesseraError);
  });
});

describe('fingerprint', () => {
  it('tells different contents apart, including across part boundaries', () => {
    expect(fingerprint(['ab', 'c'])).not.toBe(fingerprint(['a', 'bc']));
    expect(fingerprint([Buffer.from('x')])).toBe(fingerprint(['x']));
  });
});

describe('grpcErrorOf', () => {
  it('maps codes to the statuses of SPIFFE_Workload_Endpoint.md §6 and hides internal errors', () => {
    expect(grpcErrorOf(new TesseraError('TESSERA_JWT_INVALID'))).toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    expect(grpcErrorOf(new TesseraError('TESSERA_JWT_EXPIRED'))).toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    expect(grpcErrorOf(new TesseraError('TESSERA_BAD_REQUEST'))).toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    expect(grpcErrorOf(new TesseraError('TESSERA_SERVER_UNREACHABLE'))).toMatchObject({ code: grpc.status.UNAVAILABLE });
    expect(grpcErrorOf(new TesseraError('TESSERA_FORBIDDEN', 'secret detail'))).toEqual({ code: grpc.status.PERMISSION_DENIED, details: 'no identity issued' });
    expect(grpcErrorOf(new TesseraError('TESSERA_INTERNAL', 'stack detail'))).toEqual({ code: grpc.status.INTERNAL, details: 'internal error' });
    expect(grpcErrorOf(new Error('raw'))).toEqual({ code: grpc.status.INTERNAL, details: 'internal error' });
  });
});
