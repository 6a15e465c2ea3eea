/**
 * The signed policy bundle: what the control plane (Policy Administration Point) distributes to
 * agents (Policy Enforcement Points). One version of the policies, the schema they were validated
 * against and the workload attributes, signed by a trust-domain CA key so that an agent can check
 * it with nothing but its trust bundle, and refuse a replayed older version.
 *
 * Envelope (JSON): `{ payload, alg: "ES256", signer, signature }`, where `payload` is the base64url
 * of the bundle's canonical JSON, `signer` the hex SHA-256 of the signing CA certificate (DER), and
 * `signature` the base64url ECDSA P-256 / SHA-256 signature (IEEE P1363, r||s) over
 * `"tessera-policy-bundle-v1\n" + payload`. The prefix separates this signature from anything
 * else the CA key signs (certificates are DER and can never start with it).
 */
import { createHash } from 'node:crypto';
import { TesseraError } from '../errors.js';
import { canonicalJson } from '../canonical-json.js';
import { openEnvelope, signEnvelope, type EnvelopeKind, type EnvelopeSigner, type SignedEnvelope } from '../signed-envelope.js';
import { exactObject } from '../shape.js';
import { parseVerifierKey } from '../signed-note.js';
import { isSpiffeId } from '../spiffe-id.js';
import { checkGrant, MAX_BUNDLE_GRANTS, type BundleGrant } from './grants.js';
import { LIMITS, POLICY_FILE_NAME, checkEntityAttributes, type PolicyEntity, type RevokedIdentity, type RiskListed } from './types.js';

export interface PolicyBundle {
  /** Monotonic version (1, 2, ...): agents refuse anything older than what they hold. */
  version: number;
  /** ISO 8601 UTC (`2025-01-01T00:00:00.000Z`). */
  createdAt: string;
  author: string;
  reason: string;
  /** {@link policyHash} of `policies` and `schema`. */
  hash: string;
  /** Policy file name → Cedar policy text. */
  policies: Record<string, string>;
  /** Cedar JSON schema the policies were validated against. */
  schema: Record<string, unknown>;
  /** The workloads with a live registration entry (deleted and revoked entries are not here). */
  entities: PolicyEntity[];
  /**
   * The revocation list (deleted or revoked entries, their unexpired serials). Optional on the
   * wire: a bundle cached before revocation existed has none, which means an empty list.
   */
  revoked: RevokedIdentity[];
  /**
   * Identities in a non-normal risk state (step-up, quarantined). Optional on the wire and omitted
   * when empty, so agents that predate it keep accepting bundles until something is listed.
   */
  risk?: RiskListed[];
  /**
   * The audit log's C2SP verifier key (`<td>/tessera/audit+<key id>+<key>`), so agents witnessing the
   * log's checkpoints trust the key through the CA, not the wire. Optional: bundles of control planes
   * before the witness had none.
   */
  auditLogKey?: string;
  /**
   * Approved just-in-time grants (src/core/policy/grants.ts): each a template-linked permit with its
   * own window. Optional: absent means none.
   */
  grants?: BundleGrant[];
  /**
   * The live named admins (`tessera admin add`) and the serials of the certificates issued to them,
   * for key servers, which let them provision shares like the bootstrap admin. Optional: absent means
   * none (older agents refuse the field only once an admin is added).
   */
  admins?: BundleAdmin[];
}

/** A named admin as the bundle lists it: its SPIFFE ID and the certificate serials it may present. */
export interface BundleAdmin {
  id: string;
  /** Uppercase hex serials, at most MAX_ADMIN_SERIALS (the control plane keeps the last five). */
  serials: string[];
}

/** Most named admins a bundle lists, and serials per admin. */
export const MAX_BUNDLE_ADMINS = 1000;
export const MAX_ADMIN_SERIALS = 8;

/** A signed policy bundle: the one signed envelope (src/core/signed-envelope.ts) holding a {@link PolicyBundle}. */
export type SignedPolicyBundle = SignedEnvelope;

/** The active CA's key and certificate (DER), as for every signed envelope. */
export type PolicyBundleSigner = EnvelopeSigner;

export interface VerifyPolicyBundleOptions {
  /** Refuse versions below this (the version the agent already holds): no rollback. */
  minVersion?: number;
}

const DOMAIN_PREFIX = 'tessera-policy-bundle-v1\n';
const MAX_AUTHOR = 256;
const MAX_REASON = 8192;
const HEX64 = /^[0-9a-f]{64}$/;
const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$/;
const BUNDLE_KEYS = ['admins', 'auditLogKey', 'author', 'createdAt', 'entities', 'grants', 'hash', 'policies', 'reason', 'revoked', 'risk', 'schema', 'version'] as const;
const OPTIONAL_BUNDLE_KEYS: ReadonlySet<string> = new Set(['revoked', 'auditLogKey', 'grants', 'risk', 'admins']);
/** Certificate serials: uppercase hex of a positive INTEGER of at most 20 octets (RFC 5280 §4.1.2.2). */
const SERIAL = /^[0-9A-F]{1,40}$/;
const REASON_TEXT = /^[\x20-\x7e]*$/;
const MAX_PAYLOAD_CHARS = Math.ceil((LIMITS.maxBundlePayloadBytes * 4) / 3);

function invalid(message: string): TesseraError {
  return new TesseraError('TESSERA_POLICY_BUNDLE_INVALID', message);
}

const BUNDLE_ENVELOPE: EnvelopeKind = { domain: DOMAIN_PREFIX, what: 'bundle', fail: invalid, maxPayloadChars: MAX_PAYLOAD_CHARS };

// ---------------------------------------------------------------------------------------------
// Hashes
// ---------------------------------------------------------------------------------------------

/**
 * The version identity of a policy set: lowercase hex SHA-256 of `canonicalJson({ policies, schema })`.
 *
 * @example policyHash({ 'a.cedar': 'permit(principal, action, resource);' }, TESSERA_SCHEMA)
 */
export function policyHash(policies: Record<string, string>, schema: object): string {
  return createHash('sha256').update(canonicalJson({ policies, schema }), 'utf8').digest('hex');
}

/**
 * Builds a bundle with its hash computed (`createdAt` defaults to now). Checked as agents check
 * it, so the control plane never signs a bundle its agents would refuse.
 *
 * @throws TesseraError TESSERA_POLICY_BUNDLE_INVALID
 */
export function createPolicyBundle(input: Omit<PolicyBundle, 'hash' | 'createdAt' | 'revoked'> & { createdAt?: string; revoked?: RevokedIdentity[] }): PolicyBundle {
  const bundle: PolicyBundle = {
    version: input.version,
    createdAt: input.createdAt ?? new Date().toISOString(),
    author: input.author,
    reason: input.reason,
    hash: '',
    policies: input.policies,
    schema: input.schema,
    entities: input.entities,
    revoked: input.revoked ?? [],
    ...(input.auditLogKey !== undefined ? { auditLogKey: input.auditLogKey } : {}),
    ...(input.grants !== undefined ? { grants: input.grants } : {}),
    ...(input.risk !== undefined && input.risk.length > 0 ? { risk: input.risk } : {}),
    ...(input.admins !== undefined && input.admins.length > 0 ? { admins: input.admins } : {}),
  };
  bundle.hash = policyHash(bundle.policies, bundle.schema);
  return checkBundle(bundle);
}

// ---------------------------------------------------------------------------------------------
// Sign
// ---------------------------------------------------------------------------------------------

/**
 * Signs a bundle with a trust-domain CA key (ES256). The bundle is checked first (shape, sizes,
 * hash) and the key must be the P-256 key of `signer.certDer`.
 *
 * @example
 * const signed = signPolicyBundle(createPolicyBundle({ version: 7, author, reason, policies, schema, entities }),
 *   { privateKey: ca.privateKey, certDer: ca.certDer });
 * @throws TesseraError TESSERA_POLICY_BUNDLE_INVALID
 */
export function signPolicyBundle(bundle: PolicyBundle, signer: PolicyBundleSigner): SignedPolicyBundle {
  return signEnvelope(checkBundle(bundle), signer, BUNDLE_ENVELOPE);
}

// ---------------------------------------------------------------------------------------------
// Verify
// ---------------------------------------------------------------------------------------------

/**
 * Verifies a signed bundle as received (parsed JSON of unknown shape) and returns its content.
 * The signer must be one of `trustedCas` (CA certificates, DER, from the agent's trust bundle),
 * the signature must verify with that certificate's key, the payload must be canonical JSON of a
 * well-formed bundle (unknown fields refused, sizes bounded), the hash must match the policies
 * and schema, and the version must be at least `opts.minVersion` (equal is an idempotent refetch).
 *
 * @example const bundle = verifyPolicyBundle(JSON.parse(body), trustBundleDers, { minVersion: current.version });
 * @throws TesseraError TESSERA_POLICY_BUNDLE_INVALID, whatever goes wrong
 */
export function verifyPolicyBundle(signed: unknown, trustedCas: readonly Buffer[], opts: VerifyPolicyBundleOptions = {}): PolicyBundle {
  try {
    return verifyUnchecked(signed, trustedCas, opts);
  } catch (err) {
    if (err instanceof TesseraError && err.code === 'TESSERA_POLICY_BUNDLE_INVALID') throw err;
    // A bug or an unexpected input reached a library: still a refusal, never a raw exception.
    throw invalid('the policy bundle cannot be verified');
  }
}

function verifyUnchecked(signed: unknown, trustedCas: readonly Buffer[], opts: VerifyPolicyBundleOptions): PolicyBundle {
  const minVersion = opts.minVersion;
  if (minVersion !== undefined && !Number.isSafeInteger(minVersion)) throw invalid('minVersion must be an integer');
  const bundle = checkBundle(openEnvelope(signed, trustedCas, BUNDLE_ENVELOPE));
  if (minVersion !== undefined && bundle.version < minVersion) {
    throw invalid(`rollback refused: bundle version ${bundle.version} is older than the version held (${minVersion})`);
  }
  return bundle;
}

// ---------------------------------------------------------------------------------------------
// Shape
// ---------------------------------------------------------------------------------------------


/** Checks a bundle's shape, sizes and hash; returns a clean copy (fresh objects, known fields only). */
function checkBundle(v: unknown): PolicyBundle {
  const b = exactObject(v, BUNDLE_KEYS, 'bundle', invalid, OPTIONAL_BUNDLE_KEYS);
  if (typeof b.version !== 'number' || !Number.isSafeInteger(b.version) || b.version < 1) throw invalid('bundle: version must be a positive integer');
  if (typeof b.createdAt !== 'string' || !ISO_UTC.test(b.createdAt) || !Number.isFinite(Date.parse(b.createdAt))) {
    throw invalid('bundle: createdAt must be an ISO 8601 UTC time');
  }
  if (typeof b.author !== 'string' || b.author.length === 0 || b.author.length > MAX_AUTHOR) throw invalid(`bundle: author must be a string of 1..${MAX_AUTHOR} characters`);
  if (typeof b.reason !== 'string' || b.reason.length > MAX_REASON) throw invalid(`bundle: reason must be a string of at most ${MAX_REASON} characters`);
  if (typeof b.hash !== 'string' || !HEX64.test(b.hash)) throw invalid('bundle: hash must be a lowercase hex SHA-256');

  if (typeof b.policies !== 'object' || b.policies === null || Array.isArray(b.policies)) throw invalid('bundle: policies must be an object');
  const files = Object.entries(b.policies);
  if (files.length > LIMITS.maxPolicyFiles) throw invalid(`bundle: more than ${LIMITS.maxPolicyFiles} policy files`);
  const policies: Record<string, string> = {};
  for (const [name, text] of files) {
    if (!POLICY_FILE_NAME.test(name)) throw invalid(`bundle: invalid policy file name ${JSON.stringify(name.slice(0, 64))}`);
    if (typeof text !== 'string') throw invalid(`bundle: policy file ${name} must be a string`);
    if (Buffer.byteLength(text, 'utf8') > LIMITS.maxPolicyFileBytes) throw invalid(`bundle: policy file ${name} is larger than ${LIMITS.maxPolicyFileBytes} bytes`);
    policies[name] = text;
  }

  if (typeof b.schema !== 'object' || b.schema === null || Array.isArray(b.schema)) throw invalid('bundle: schema must be an object');

  if (!Array.isArray(b.entities)) throw invalid('bundle: entities must be an array');
  if (b.entities.length > LIMITS.maxEntities) throw invalid(`bundle: more than ${LIMITS.maxEntities} entities`);
  const seen = new Set<string>();
  const entities: PolicyEntity[] = b.entities.map((e: unknown, i: number) => {
    const o = exactObject(e, ['id', 'attrs'] as const, `bundle: entities[${i}]`, invalid);
    if (typeof o.id !== 'string' || !isSpiffeId(o.id)) throw invalid(`bundle: entities[${i}].id must be a SPIFFE ID`);
    if (seen.has(o.id)) throw invalid(`bundle: entities[${i}] repeats ${o.id}`);
    seen.add(o.id);
    const attrs = checkEntityAttributes(o.attrs);
    if (typeof attrs === 'string') throw invalid(`bundle: entities[${i}]: ${attrs}`);
    return { id: o.id, attrs };
  });

  const revoked = checkRevoked(b.revoked ?? []);
  const risk = b.risk === undefined ? undefined : checkRisk(b.risk);
  if (b.auditLogKey !== undefined) {
    let ok = false;
    try {
      ok = parseVerifierKey(b.auditLogKey).type === 'ed25519';
    } catch {
      ok = false;
    }
    if (!ok) throw invalid('bundle: auditLogKey must be an Ed25519 signed-note verifier key');
  }

  // A fresh copy of the schema (canonical JSON refuses anything that is not plain JSON).
  let schemaText: string;
  try {
    schemaText = canonicalJson(b.schema);
  } catch {
    throw invalid('bundle: schema is not plain JSON');
  }
  const schema = JSON.parse(schemaText) as Record<string, unknown>;
  if (policyHash(policies, schema) !== b.hash) throw invalid('bundle: hash does not match the policies and schema');
  const out: PolicyBundle = { version: b.version, createdAt: b.createdAt, author: b.author, reason: b.reason, hash: b.hash, policies, schema, entities, revoked };
  if (b.auditLogKey !== undefined) out.auditLogKey = b.auditLogKey as string;
  if (b.grants !== undefined) out.grants = checkGrants(b.grants);
  if (risk !== undefined) out.risk = risk;
  if (b.admins !== undefined) out.admins = checkAdmins(b.admins);
  return out;
}

/** Checks the named admins: bounded, one item per SPIFFE ID, a few uppercase hex serials each. */
function checkAdmins(v: unknown): BundleAdmin[] {
  if (!Array.isArray(v) || v.length > MAX_BUNDLE_ADMINS) throw invalid(`bundle: admins must be an array of at most ${MAX_BUNDLE_ADMINS}`);
  const seen = new Set<string>();
  return v.map((e: unknown, i: number) => {
    const o = exactObject(e, ['id', 'serials'] as const, `bundle: admins[${i}]`, invalid);
    if (typeof o.id !== 'string' || !isSpiffeId(o.id)) throw invalid(`bundle: admins[${i}].id must be a SPIFFE ID`);
    if (seen.has(o.id)) throw invalid(`bundle: admins[${i}] repeats ${o.id}`);
    seen.add(o.id);
    if (!Array.isArray(o.serials) || o.serials.length > MAX_ADMIN_SERIALS || o.serials.some((x) => typeof x !== 'string' || !SERIAL.test(x))) {
      throw invalid(`bundle: admins[${i}].serials must be at most ${MAX_ADMIN_SERIALS} uppercase hex serials`);
    }
    return { id: o.id, serials: [...(o.serials as string[])] };
  });
}

/** Checks the grants: bounded, unique ids, each well formed (grants.ts `checkGrant`). */
function checkGrants(v: unknown): BundleGrant[] {
  if (!Array.isArray(v) || v.length > MAX_BUNDLE_GRANTS) throw invalid(`bundle: grants must be an array of at most ${MAX_BUNDLE_GRANTS}`);
  const seen = new Set<string>();
  return v.map((e: unknown, i: number) => {
    const g = checkGrant(e);
    if (typeof g === 'string') throw invalid(`bundle: grants[${i}]: ${g}`);
    if (seen.has(g.id)) throw invalid(`bundle: grants[${i}] repeats ${g.id}`);
    seen.add(g.id);
    return g;
  });
}

/** Checks the revocation list: bounded, one item per SPIFFE ID, serials as uppercase hex. */
function checkRevoked(v: unknown): RevokedIdentity[] {
  if (!Array.isArray(v)) throw invalid('bundle: revoked must be an array');
  if (v.length > LIMITS.maxRevoked) throw invalid(`bundle: more than ${LIMITS.maxRevoked} revoked identities`);
  const seen = new Set<string>();
  let serialCount = 0;
  return v.map((e: unknown, i: number) => {
    const o = exactObject(e, ['id', 'serials', 'at', 'reason'] as const, `bundle: revoked[${i}]`, invalid);
    if (typeof o.id !== 'string' || !isSpiffeId(o.id)) throw invalid(`bundle: revoked[${i}].id must be a SPIFFE ID`);
    if (seen.has(o.id)) throw invalid(`bundle: revoked[${i}] repeats ${o.id}`);
    seen.add(o.id);
    if (!Array.isArray(o.serials) || o.serials.length > LIMITS.maxSerialsPerRevoked) throw invalid(`bundle: revoked[${i}].serials must be an array of at most ${LIMITS.maxSerialsPerRevoked}`);
    serialCount += o.serials.length;
    if (serialCount > LIMITS.maxRevokedSerials) throw invalid(`bundle: more than ${LIMITS.maxRevokedSerials} revoked serials`);
    const serials = o.serials.map((s: unknown) => {
      if (typeof s !== 'string' || !SERIAL.test(s)) throw invalid(`bundle: revoked[${i}].serials must be uppercase hex serials`);
      return s;
    });
    if (typeof o.at !== 'string' || !ISO_UTC.test(o.at) || !Number.isFinite(Date.parse(o.at))) throw invalid(`bundle: revoked[${i}].at must be an ISO 8601 UTC time`);
    if (typeof o.reason !== 'string' || o.reason.length > LIMITS.maxRevocationReason || !REASON_TEXT.test(o.reason)) {
      throw invalid(`bundle: revoked[${i}].reason must be printable text of at most ${LIMITS.maxRevocationReason} characters`);
    }
    return { id: o.id, serials, at: o.at, reason: o.reason };
  });
}

/** Latest `until` a bundle may carry: far beyond any quarantine TTL, well inside a Date's range. */
const MAX_UNTIL_MS = Date.UTC(9999, 0, 1);

/** Checks the risk list (issue 11): bounded, one item per SPIFFE ID, known states, integer scores 0-100. */
function checkRisk(v: unknown): RiskListed[] {
  if (!Array.isArray(v)) throw invalid('bundle: risk must be an array');
  if (v.length > LIMITS.maxRisk) throw invalid(`bundle: more than ${LIMITS.maxRisk} risk items`);
  const seen = new Set<string>();
  return v.map((e: unknown, i: number) => {
    const o = exactObject(e, ['id', 'state', 'score', 'until', 'reason'] as const, `bundle: risk[${i}]`, invalid);
    if (typeof o.id !== 'string' || !isSpiffeId(o.id)) throw invalid(`bundle: risk[${i}].id must be a SPIFFE ID`);
    if (seen.has(o.id)) throw invalid(`bundle: risk[${i}] repeats ${o.id}`);
    seen.add(o.id);
    if (o.state !== 'step-up' && o.state !== 'quarantined') throw invalid(`bundle: risk[${i}].state must be step-up or quarantined`);
    if (typeof o.score !== 'number' || !Number.isInteger(o.score) || o.score < 0 || o.score > 100) throw invalid(`bundle: risk[${i}].score must be an integer 0-100`);
    if (typeof o.until !== 'number' || !Number.isSafeInteger(o.until) || o.until < 0 || o.until > MAX_UNTIL_MS) throw invalid(`bundle: risk[${i}].until must be a time in milliseconds`);
    if (typeof o.reason !== 'string' || o.reason.length > LIMITS.maxRevocationReason || !REASON_TEXT.test(o.reason)) {
      throw invalid(`bundle: risk[${i}].reason must be printable text of at most ${LIMITS.maxRevocationReason} characters`);
    }
    return { id: o.id, state: o.state, score: o.score, until: o.until, reason: o.reason };
  });
}
