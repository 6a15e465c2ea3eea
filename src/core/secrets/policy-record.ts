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
import type { KeyObject } from 'node:crypto';
import { TesseraError } from '../errors.js';
import { openEnvelope, signEnvelope, type EnvelopeKind } from '../signed-envelope.js';
import { exactObject } from '../shape.js';
import { isSpiffeId } from '../spiffe-id.js';
import { MAX_SHARES, SECRET_POLICY_ID_RULE, decodePoint, isSecretPolicyId } from './index.js';

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
  /**
   * Share generation, 1 when the key is dealt, +1 on each share refresh (same key, new shares and
   * commitments). Records signed before generations existed have none and are generation 1.
   */
  generation: number;
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
const B64URL_32 = /^[A-Za-z0-9_-]{43}$/;
const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$/;
const RECORD_KEYS = ['commitments', 'createdAt', 'epoch', 'generation', 'id', 'n', 'servers', 't'] as const;
/** Fields a record may lack (older records): generation defaults to 1. */
const OPTIONAL_KEYS: ReadonlySet<string> = new Set(['generation']);
export const MAX_GENERATION = 0xffffffff;
const SERVER_KEYS = ['index', 'spiffeId', 'url'] as const;

function invalid(message: string): TesseraError {
  return new TesseraError('TESSERA_SECRET_POLICY_INVALID', message);
}

const RECORD_ENVELOPE: EnvelopeKind = { domain: SECRET_POLICY_DOMAIN, what: 'record', fail: invalid, maxPayloadChars: MAX_PAYLOAD_CHARS };


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
 * Checks a record's shape and content strictly and returns a clean copy: t ≤ n ≤ 255, a share
 * generation ≥ 1 (1 if absent), exactly t valid commitments, n servers with unique indices 1..n, https URLs, SPIFFE IDs.
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
  const r = exactObject(v, RECORD_KEYS, 'record', invalid, OPTIONAL_KEYS);
  if (!isSecretPolicyId(r.id)) throw invalid(`record: id must be ${SECRET_POLICY_ID_RULE}`);
  if (!isInt(r.epoch, 0, MAX_EPOCH)) throw invalid('record: epoch must be an integer in 0..2^32-1');
  if (!isInt(r.n, 1, MAX_SHARES)) throw invalid(`record: n must be an integer in 1..${MAX_SHARES}`);
  if (!isInt(r.t, 1, r.n)) throw invalid('record: t must be an integer in 1..n');
  const generation = r.generation === undefined ? 1 : r.generation;
  if (!isInt(generation, 1, MAX_GENERATION)) throw invalid('record: generation must be an integer in 1..2^32-1');
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
    const o = exactObject(s, SERVER_KEYS, `record: servers[${i}]`, invalid);
    if (!isInt(o.index, 1, r.n as number)) throw invalid(`record: servers[${i}].index must be an integer in 1..n`);
    if (indices.has(o.index)) throw invalid(`record: servers[${i}] repeats index ${o.index}`);
    indices.add(o.index);
    if (typeof o.spiffeId !== 'string' || !isSpiffeId(o.spiffeId)) throw invalid(`record: servers[${i}].spiffeId must be a SPIFFE ID`);
    return { url: checkUrl(o.url, i), spiffeId: o.spiffeId, index: o.index };
  });
  return { id: r.id, epoch: r.epoch, t: r.t, n: r.n, generation, commitments, servers, createdAt: r.createdAt };
}

/**
 * Signs a record with a trust-domain CA key (ES256, P1363). Checked first.
 *
 * @throws TesseraError TESSERA_SECRET_POLICY_INVALID
 */
export function signSecretPolicy(record: SecretPolicyRecord, signer: SecretPolicySigner): SignedSecretPolicy {
  return signEnvelope(checkSecretPolicy(record), signer, RECORD_ENVELOPE);
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

function verifyUnchecked(signed: unknown, trustedCas: readonly Buffer[]): SecretPolicyRecord {
  return checkSecretPolicy(openEnvelope(signed, trustedCas, RECORD_ENVELOPE));
}
