/**
 * The one signed envelope the control plane uses for objects agents check offline against their
 * trust bundle (policy bundles, secret-policy records): `{ payload, alg: "ES256", signer, signature }`,
 * where `payload` is the base64url of the object's canonical JSON, `signer` the hex SHA-256 of the
 * signing CA certificate (DER) and `signature` an ECDSA P-256 / SHA-256 signature (IEEE P1363) over
 * `domain + payload`. Each kind of object has its own domain prefix, so a signature made for one
 * can never be taken for another (certificates are DER and can never start with a prefix either).
 */
import { X509Certificate, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import type { TesseraError } from './errors.js';
import { canonicalJson } from './canonical-json.js';
import { certificateFingerprint } from './x509.js';

export interface SignedEnvelope {
  payload: string;
  alg: 'ES256';
  signer: string;
  signature: string;
}

export interface EnvelopeSigner {
  /** The CA's P-256 private key. */
  privateKey: KeyObject;
  /** The CA's certificate (DER), as published in the trust bundle. */
  certDer: Buffer;
}

/** How a caller names its object in messages and which error it raises. */
export interface EnvelopeKind {
  domain: string;
  /** "bundle", "record": used in messages such as "the bundle signature does not verify". */
  what: string;
  fail: (message: string) => TesseraError;
  maxPayloadChars: number;
}

const ENVELOPE_KEYS: ReadonlySet<string> = new Set(['alg', 'payload', 'signature', 'signer']);
const HEX64 = /^[0-9a-f]{64}$/;
const BASE64URL = /^[A-Za-z0-9_-]+$/;
const utf8 = new TextDecoder('utf-8', { fatal: true });

function isP256(key: KeyObject): boolean {
  return key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1';
}

/** Signs already-checked content; the key must be the P-256 key of `signer.certDer`. */
export function signEnvelope(content: unknown, signer: EnvelopeSigner, kind: EnvelopeKind): SignedEnvelope {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(signer.certDer);
  } catch {
    throw kind.fail('the signer certificate cannot be parsed');
  }
  if (!isP256(cert.publicKey)) throw kind.fail('the signer certificate does not hold a P-256 key');
  let matches = false;
  try {
    matches = signer.privateKey.type === 'private' && createPublicKey(signer.privateKey).equals(cert.publicKey);
  } catch {
    matches = false;
  }
  if (!matches) throw kind.fail('the signing key does not belong to the signer certificate');
  const payload = Buffer.from(canonicalJson(content), 'utf8').toString('base64url');
  const signature = sign('sha256', Buffer.from(kind.domain + payload, 'latin1'), { key: signer.privateKey, dsaEncoding: 'ieee-p1363' });
  return { payload, alg: 'ES256', signer: certificateFingerprint(signer.certDer), signature: signature.toString('base64url') };
}

function decodeBase64url(s: string, what: string, kind: EnvelopeKind): Buffer {
  const b = Buffer.from(s, 'base64url');
  // Node's decoder is lenient; only the one canonical encoding is accepted.
  if (b.toString('base64url') !== s) throw kind.fail(`envelope: ${what} is not canonical base64url`);
  return b;
}

/**
 * The public keys of signer certificates already checked, by fingerprint (the SHA-256 of the DER, so
 * an entry can only ever stand for that exact certificate): every agent verifies each bundle, and
 * parsing the CA certificate again each time cost more than the signature check. Bounded: cleared
 * when full (a trust bundle holds a handful of CAs).
 */
const signerKeys = new Map<string, KeyObject>();
const MAX_SIGNER_KEYS = 64;

function signerKey(fingerprint: string, der: Buffer, kind: EnvelopeKind): KeyObject {
  const known = signerKeys.get(fingerprint);
  if (known !== undefined) return known;
  let publicKey: KeyObject;
  try {
    const cert = new X509Certificate(der);
    if (!cert.ca) throw new Error('not a CA');
    publicKey = cert.publicKey;
  } catch {
    throw kind.fail('the signer certificate in the trust bundle cannot be used');
  }
  if (!isP256(publicKey)) throw kind.fail('the signer certificate does not hold a P-256 key');
  if (signerKeys.size >= MAX_SIGNER_KEYS) signerKeys.clear();
  signerKeys.set(fingerprint, publicKey);
  return publicKey;
}

/**
 * Authenticates an envelope as received (unknown shape) and returns its payload, parsed: the
 * signer must be a CA of `trustedCas` (DER) holding a P-256 key, the signature must verify, and
 * the payload must be strict UTF-8 canonical JSON. The caller then checks the content's shape.
 */
export function openEnvelope(signed: unknown, trustedCas: readonly Buffer[], kind: EnvelopeKind): unknown {
  if (typeof signed !== 'object' || signed === null || Array.isArray(signed)) throw kind.fail('envelope must be an object');
  for (const k of Object.keys(signed)) if (!ENVELOPE_KEYS.has(k)) throw kind.fail(`envelope: unknown field "${k.slice(0, 32)}"`);
  const env = signed as Record<string, unknown>;
  if (env.alg !== 'ES256') throw kind.fail('envelope: alg must be ES256');
  if (typeof env.signer !== 'string' || !HEX64.test(env.signer)) throw kind.fail('envelope: signer must be a lowercase hex SHA-256 fingerprint');
  if (typeof env.signature !== 'string' || env.signature.length !== 86 || !BASE64URL.test(env.signature)) {
    throw kind.fail('envelope: signature must be 64 bytes of base64url');
  }
  if (typeof env.payload !== 'string' || env.payload.length === 0 || !BASE64URL.test(env.payload)) throw kind.fail('envelope: payload must be base64url');
  if (env.payload.length > kind.maxPayloadChars) throw kind.fail(`envelope: payload larger than ${kind.maxPayloadChars} characters`);

  // Authenticate before looking inside the payload.
  const signerDer = trustedCas.find((der) => Buffer.isBuffer(der) && certificateFingerprint(der) === env.signer);
  if (signerDer === undefined) throw kind.fail(`the ${kind.what} is signed by a CA that is not in the trust bundle`);
  const publicKey = signerKey(env.signer, signerDer, kind);
  const signature = decodeBase64url(env.signature, 'signature', kind);
  if (!verify('sha256', Buffer.from(kind.domain + env.payload, 'latin1'), { key: publicKey, dsaEncoding: 'ieee-p1363' }, signature)) {
    throw kind.fail(`the ${kind.what} signature does not verify`);
  }

  const bytes = decodeBase64url(env.payload, 'payload', kind);
  let text: string;
  let parsed: unknown;
  try {
    text = utf8.decode(bytes);
    parsed = JSON.parse(text);
  } catch {
    throw kind.fail('payload is not UTF-8 JSON');
  }
  let canonical: string;
  try {
    canonical = canonicalJson(parsed);
  } catch {
    throw kind.fail('payload is not canonical JSON');
  }
  if (canonical !== text) throw kind.fail('payload is not canonical JSON');
  return parsed;
}
