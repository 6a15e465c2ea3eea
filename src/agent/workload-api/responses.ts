/**
 * Building Workload API response messages from the agent's identity material. Pure functions:
 * no I/O, no gRPC.
 */
import { createHash, type KeyObject } from 'node:crypto';
import { TesseraError } from '../../core/errors.js';
import { pemDecodeAll } from '../../core/x509.js';
import type { JwtBundlesResponse, StructMessage, StructValue, X509BundlesResponse, X509SvidResponse } from './proto.js';

/** What the agent holds for the workload (Agent.current()). */
export interface IdentitySnapshot {
  spiffeId: string;
  /** PEM: the leaf first, then any intermediates. */
  certPem: string;
  key: KeyObject;
  /** PEM: the trust domain's CA certificates. */
  bundlePem: string;
  notAfter: Date;
}

/** Federated bundles held by the agent (issue 14): trust domain -> JWK Set and PEM of its X.509 authorities. */
export type FederatedBundleMap = ReadonlyMap<string, { jwks: { keys: readonly object[] }; pem: string }>;

/** The X.509 authorities of each federated trust domain, keyed like the trust domain's own (§5.1). */
function federatedX509(federated: FederatedBundleMap | undefined): Record<string, Buffer> {
  const out: Record<string, Buffer> = {};
  if (federated === undefined) return out;
  for (const [td, f] of federated) {
    const ders = pemDecodeAll(f.pem, 'CERTIFICATE');
    if (ders.length > 0) out[trustDomainKey(td)] = Buffer.concat(ders);
  }
  return out;
}

/** `spiffe://<trust-domain>`: the key of bundle maps (SPIFFE_Workload_API.md §5.1, §6.1). */
export function trustDomainKey(trustDomain: string): string {
  return `spiffe://${trustDomain}`;
}

function certificatesDer(pem: string, what: string): Buffer {
  let ders: Buffer[];
  try {
    ders = pemDecodeAll(pem, 'CERTIFICATE');
  } catch {
    throw new TesseraError('TESSERA_UNAVAILABLE', `the ${what} is not valid PEM`);
  }
  if (ders.length === 0) throw new TesseraError('TESSERA_UNAVAILABLE', `the ${what} holds no certificate`);
  // X509SVID.x509_svid and .bundle are ASN.1 DER certificates concatenated (no outer wrapper).
  return Buffer.concat(ders);
}

function pkcs8Der(key: KeyObject): Buffer {
  if (key?.type !== 'private') throw new TesseraError('TESSERA_INTERNAL', 'the SVID key is not a private key');
  // MUST be unencrypted PKCS#8 (X509SVID.x509_svid_key).
  return key.export({ format: 'der', type: 'pkcs8' });
}

/** One X509SVIDResponse for the caller's single identity and the federated bundles (§5.1.1); no CRLs. */
export function x509SvidResponse(snap: IdentitySnapshot, federated?: FederatedBundleMap): X509SvidResponse {
  return {
    svids: [
      {
        spiffe_id: snap.spiffeId,
        x509_svid: certificatesDer(snap.certPem, 'X.509-SVID'),
        x509_svid_key: pkcs8Der(snap.key),
        bundle: certificatesDer(snap.bundlePem, 'trust bundle'),
      },
    ],
    crl: [],
    federated_bundles: federatedX509(federated),
  };
}

/** Our bundle and every federated one, each under its own trust domain (never merged). */
export function x509BundlesResponse(trustDomain: string, bundlePem: string, federated?: FederatedBundleMap): X509BundlesResponse {
  return { crl: [], bundles: { ...federatedX509(federated), [trustDomainKey(trustDomain)]: certificatesDer(bundlePem, 'trust bundle') } };
}

/**
 * The trust domain's JWT bundle as an RFC 7517 JWK Set. §6.2.2: "The server MUST NOT include keys
 * with other uses", so only `use: "jwt-svid"` elements (or ones with no `use`) are kept, and
 * SPIFFE-only members of the bundle document (spiffe_sequence, ...) are left out.
 */
export function jwtBundlesResponse(trustDomain: string, jwks: { keys: readonly object[] }, federated?: FederatedBundleMap): JwtBundlesResponse {
  if (typeof jwks !== 'object' || jwks === null || !Array.isArray(jwks.keys)) {
    throw new TesseraError('TESSERA_UNAVAILABLE', 'the JWT bundle is not available');
  }
  const jwtKeys = (set: { keys: readonly object[] }): Buffer => Buffer.from(JSON.stringify({ keys: set.keys.filter((k) => {
    const use = (k as { use?: unknown }).use;
    return typeof k === 'object' && k !== null && (use === undefined || use === 'jwt-svid');
  }) }), 'utf8');
  const bundles: Record<string, Buffer> = {};
  for (const [td, f] of federated ?? []) bundles[trustDomainKey(td)] = jwtKeys(f.jwks);
  bundles[trustDomainKey(trustDomain)] = jwtKeys(jwks);
  return { bundles };
}

/** A digest of a response's content, to skip pushing a message identical to the last one sent. */
export function fingerprint(parts: readonly (Buffer | string)[]): string {
  const h = createHash('sha256');
  for (const p of parts) {
    const b = typeof p === 'string' ? Buffer.from(p, 'utf8') : p;
    const len = Buffer.alloc(4);
    len.writeUInt32BE(b.length);
    h.update(len).update(b);
  }
  return h.digest('base64');
}

const MAX_STRUCT_DEPTH = 32;

function toValue(v: unknown, depth: number): StructValue {
  if (depth > MAX_STRUCT_DEPTH) throw new TesseraError('TESSERA_BAD_REQUEST', 'claims are nested too deeply');
  if (v === null) return { nullValue: 'NULL_VALUE' };
  switch (typeof v) {
    case 'string':
      return { stringValue: v };
    case 'number':
      if (!Number.isFinite(v)) throw new TesseraError('TESSERA_BAD_REQUEST', 'a claim is not a finite number');
      return { numberValue: v };
    case 'boolean':
      return { boolValue: v };
    case 'object':
      if (Array.isArray(v)) return { listValue: { values: v.map((e) => toValue(e, depth + 1)) } };
      return { structValue: toStructAt(v as Record<string, unknown>, depth + 1) };
    default:
      throw new TesseraError('TESSERA_BAD_REQUEST', 'a claim is not a JSON value');
  }
}

function toStructAt(obj: Record<string, unknown>, depth: number): StructMessage {
  const fields: Record<string, StructValue> = {};
  for (const [k, v] of Object.entries(obj)) fields[k] = toValue(v, depth);
  return { fields };
}

/** A JSON object (e.g. JWT claims) as a google.protobuf.Struct message (protobufjs object form). */
export function toStruct(obj: Record<string, unknown>): StructMessage {
  return toStructAt(obj, 0);
}
