/**
 * The signed secret-policy record: what a sealer and an unsealer need to know about a blind-secret
 * policy (its public key P_p = commitments[0], the Feldman commitments, the threshold and the key
 * servers), signed by a trust-domain CA key so that anyone holding the trust bundle can check it
 * offline. The control plane only validates and signs: the dealer runs in the CLI and the control
 * plane never sees k_p or a share.
 *
 * Envelope: the policy bundle's (`{ payload, alg: "ES256", signer, signature }`), signature over
 * `"tessera-secret-policy-v1\n" + payload`, payload the base64url of the record's canonical JSON.
 *
 * `await ready()` (./index.js) once before checking a record: commitments are decoded as points.
 */
import { X509Certificate, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import { TesseraError } from '../errors.js';
import { canonicalJson, certificateFingerprint } from '../policy/bundle.js';
import { isSpiffeId } from '../spiffe-id.js';
import { MAX_SHARES, decodePoint, isSecretPolicyId } from './index.js';

export interface SecretPolicyServer {
  url: string;
  spiffeId: string;
  index: number;
}

export interface SecretPolicyRecord {
  id: string;
  epoch: number;
  t: number;
  n: number;
  /** base64url ristretto255 points; commitments[0] is the policy public key P_p. */
  commitments: string[];
  servers: SecretPolicyServer[];
  /** ISO 8601 UTC. */
  createdAt: string;
}

export interface SignedSecretPolicy {
  payload: string;
  alg: 'ES256';
  signer: string;
  signature: string;
}

export interface SecretPolicySigner {
  privateKey: KeyObject;
  certDer: Buffer;
}

export const SECRET_POLICY_DOMAIN = 'tessera-secret-policy-v1\n';
const MAX_EPOCH = 0xffffffff;
const MAX_PAYLOAD_CHARS = 256 * 1024;
const HEX64 = /^[0-9a-f]{64}$/;
const BASE64URL = /^[A-Za-z0-9_-]+$/;
const B64URL_32 = /^[A-Za-z0-9_-]{43}$/;
const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$/;
const RECORD_KEYS = ['commitments', 'createdAt', 'epoch', 'id', 'n', 'servers', 't'] as const;
const SERVER_KEYS = ['index', 'spiffeId', 'url'] as const;
const ENVELOPE_KEYS = ['alg', 'payload', 'signature', 'signer'] as const;
const utf8 = new TextDecoder('utf-8', { fatal: true });

function invalid(message: string): TesseraError {
  return new TesseraError('TESSERA_SECRET_POLICY_INVALID', message);
}

function exactObject<K extends string>(v: unknown, keys: readonly K[], what: string): Record<K, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw invalid(`${what} must be an object`);
  const allowed: ReadonlySet<string> = new Set(keys);
  for (const k of Object.keys(v)) {
    if (!allowed.has(k)) throw invalid(`${what}: unknown field ${JSON.stringify(k.slice(0, 64))}`);
  }
  for (const k of keys) {
    if (!Object.hasOwn(v, k)) throw invalid(`${what}: missing field ${k}`);
  }
  return v as Record<K, unknown>;
}

function isInt(v: unknown, min: number, max: number): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max;
}

function checkUrl(v: unknown, i: number): string {
  if (typeof v !== 'string' || v.length > 2048) throw invalid(`servers[${i}].url must be an https URL`);
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    throw invalid(`servers[${i}].url must be an https URL`);
  }
  if (u.protocol !== 'https:' || u.username !== '' || u.password !== '' || u.search !== '' || u.hash !== '') throw invalid(`servers[${i}].url must be an https URL without credentials, query or fragment`);
  return v;
}

/**
 * Checks a record's shape and content strictly and returns a clean copy: t ≤ n ≤ 255, exactly t
 * valid commitments, n servers with unique indices 1..n, https URLs, SPIFFE IDs.
 *
 * @throws TesseraError TESSERA_SECRET_POLICY_INVALID
 */
export function checkSecretPolicy(v: unknown): SecretPolicyRecord {
  try {
    return checkUnchecked(v);
  } catch (err) {
    if (err instanceof TesseraError && err.code === 'TESSERA_SECRET_POLICY_INVALID') throw err;
    throw invalid('the secret policy record is malformed');
  }
}

function checkUnchecked(v: unknown): SecretPolicyRecord {
  const r = exactObject(v, RECORD_KEYS, 'record');
  if (!isSecretPolicyId(r.id)) throw invalid('record: id must be 1..64 of [a-z0-9._-]');
  if (!isInt(r.epoch, 0, MAX_EPOCH)) throw invalid('record: epoch must be an integer in 0..2^32-1');
  if (!isInt(r.n, 1, MAX_SHARES)) throw invalid(`record: n must be an integer in 1..${MAX_SHARES}`);
  if (!isInt(r.t, 1, r.n)) throw invalid('record: t must be an integer in 1..n');
  if (typeof r.createdAt !== 'string' || !ISO_UTC.test(r.createdAt) || !Number.isFinite(Date.parse(r.createdAt))) throw invalid('record: createdAt must be an ISO 8601 UTC time');
  if (!Array.isArray(r.commitments) || r.commitments.length !== r.t) throw invalid('record: there must be exactly t commitments');
  const commitments = r.commitments.map((c: unknown, i: number) => {
    if (typeof c !== 'string' || !B64URL_32.test(c)) throw invalid(`record: commitments[${i}] must be 32 bytes of base64url`);
    const bytes = Buffer.from(c, 'base64url');
    if (bytes.toString('base64url') !== c) throw invalid(`record: commitments[${i}] is not canonical base64url`);
    try {
      decodePoint(new Uint8Array(bytes));
    } catch {
      throw invalid(`record: commitments[${i}] is not a valid group element`);
    }
    return c;
  });
  if (!Array.isArray(r.servers) || r.servers.length !== r.n) throw invalid('record: there must be exactly n servers');
  const indices = new Set<number>();
  const servers = r.servers.map((s: unknown, i: number) => {
    const o = exactObject(s, SERVER_KEYS, `record: servers[${i}]`);
    if (!isInt(o.index, 1, r.n as number)) throw invalid(`record: servers[${i}].index must be an integer in 1..n`);
    if (indices.has(o.index)) throw invalid(`record: servers[${i}] repeats index ${o.index}`);
    indices.add(o.index);
    if (typeof o.spiffeId !== 'string' || !isSpiffeId(o.spiffeId)) throw invalid(`record: servers[${i}].spiffeId must be a SPIFFE ID`);
    return { url: checkUrl(o.url, i), spiffeId: o.spiffeId, index: o.index };
  });
  return { id: r.id, epoch: r.epoch, t: r.t, n: r.n, commitments, servers, createdAt: r.createdAt };
}

function isP256(key: KeyObject): boolean {
  return key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1';
}

/**
 * Signs a record with a trust-domain CA key (ES256, P1363). Checked first.
 *
 * @throws TesseraError TESSERA_SECRET_POLICY_INVALID
 */
export function signSecretPolicy(record: SecretPolicyRecord, signer: SecretPolicySigner): SignedSecretPolicy {
  const checked = checkSecretPolicy(record);
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(signer.certDer);
  } catch {
    throw invalid('the signer certificate cannot be parsed');
  }
  if (!isP256(cert.publicKey)) throw invalid('the signer certificate does not hold a P-256 key');
  let matches = false;
  try {
    matches = signer.privateKey.type === 'private' && createPublicKey(signer.privateKey).equals(cert.publicKey);
  } catch {
    matches = false;
  }
  if (!matches) throw invalid('the signing key does not belong to the signer certificate');
  const payload = Buffer.from(canonicalJson(checked), 'utf8').toString('base64url');
  const signature = sign('sha256', Buffer.from(SECRET_POLICY_DOMAIN + payload, 'latin1'), { key: signer.privateKey, dsaEncoding: 'ieee-p1363' });
  return { payload, alg: 'ES256', signer: certificateFingerprint(signer.certDer), signature: signature.toString('base64url') };
}

/**
 * Verifies a signed record as received (unknown shape) against the CA certificates (DER) of a
 * trust bundle, and returns its content.
 *
 * @throws TesseraError TESSERA_SECRET_POLICY_INVALID, whatever goes wrong
 */
export function verifySecretPolicy(signed: unknown, trustedCas: readonly Buffer[]): SecretPolicyRecord {
  try {
    return verifyUnchecked(signed, trustedCas);
  } catch (err) {
    if (err instanceof TesseraError && err.code === 'TESSERA_SECRET_POLICY_INVALID') throw err;
    throw invalid('the secret policy record cannot be verified');
  }
}

function decodeBase64url(s: string, what: string): Buffer {
  const b = Buffer.from(s, 'base64url');
  if (b.toString('base64url') !== s) throw invalid(`envelope: ${what} is not canonical base64url`);
  return b;
}

function verifyUnchecked(signed: unknown, trustedCas: readonly Buffer[]): SecretPolicyRecord {
  const env = exactObject(signed, ENVELOPE_KEYS, 'envelope');
  if (env.alg !== 'ES256') throw invalid('envelope: alg must be ES256');
  if (typeof env.signer !== 'string' || !HEX64.test(env.signer)) throw invalid('envelope: signer must be a lowercase hex SHA-256 fingerprint');
  if (typeof env.signature !== 'string' || env.signature.length !== 86 || !BASE64URL.test(env.signature)) throw invalid('envelope: signature must be 64 bytes of base64url');
  if (typeof env.payload !== 'string' || env.payload.length === 0 || env.payload.length > MAX_PAYLOAD_CHARS || !BASE64URL.test(env.payload)) throw invalid('envelope: payload must be base64url');

  const signerDer = trustedCas.find((der) => Buffer.isBuffer(der) && certificateFingerprint(der) === env.signer);
  if (signerDer === undefined) throw invalid('the record is signed by a CA that is not in the trust bundle');
  let publicKey: KeyObject;
  try {
    const cert = new X509Certificate(signerDer);
    if (!cert.ca) throw new Error('not a CA');
    publicKey = cert.publicKey;
  } catch {
    throw invalid('the signer certificate in the trust bundle cannot be used');
  }
  if (!isP256(publicKey)) throw invalid('the signer certificate does not hold a P-256 key');
  const signature = decodeBase64url(env.signature, 'signature');
  if (!verify('sha256', Buffer.from(SECRET_POLICY_DOMAIN + env.payload, 'latin1'), { key: publicKey, dsaEncoding: 'ieee-p1363' }, signature)) {
    throw invalid('the record signature does not verify');
  }
  const bytes = decodeBase64url(env.payload, 'payload');
  let text: string;
  let parsed: unknown;
  try {
    text = utf8.decode(bytes);
    parsed = JSON.parse(text);
  } catch {
    throw invalid('payload is not UTF-8 JSON');
  }
  let canonical: string;
  try {
    canonical = canonicalJson(parsed);
  } catch {
    throw invalid('payload is not canonical JSON');
  }
  if (canonical !== text) throw invalid('payload is not canonical JSON');
  return checkSecretPolicy(parsed);
}
