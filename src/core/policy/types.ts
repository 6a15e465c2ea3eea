/**
 * Types and limits shared by the policy engine, the signed policy bundle and the test-case file.
 * No Cedar here, so `bundle.ts` (crypto and shape checks only) does not load the Wasm module.
 */

/** The Tessera actions, as declared in the schema (`Tessera::Action::"http:request"`, ...). */
export const POLICY_ACTIONS = ['http:request', 'tcp:connect', 'secret:unseal', 'credential:derive'] as const;
export type PolicyAction = (typeof POLICY_ACTIONS)[number];

/** The attributes a workload carries into policy: the registration entry's attributes. */
export const ENTITY_ATTRIBUTE_NAMES = ['app', 'site', 'compliance', 'location', 'env'] as const;
export type EntityAttributeName = (typeof ENTITY_ATTRIBUTE_NAMES)[number];
export type EntityAttributes = { [K in EntityAttributeName]?: string };

/** A workload as the policy engine sees it: its SPIFFE ID and its attributes. */
export interface PolicyEntity {
  id: string;
  attrs: EntityAttributes;
}

/**
 * A revoked identity, as the signed policy bundle lists it: an entry deleted or revoked, and the
 * X509-SVIDs it was issued that had not expired when the list was built. Every certificate whose
 * serial is listed is refused; the SPIFFE ID itself is refused unless the bundle also holds it as
 * a live entity (an entry re-created with the same ID: only its new SVIDs are good).
 */
export interface RevokedIdentity {
  id: string;
  /** Uppercase hex serials, as `X509Certificate.serialNumber` writes them. */
  serials: string[];
  /** ISO 8601 UTC. */
  at: string;
  reason: string;
}

/**
 * An identity in a non-normal risk state, as the signed policy bundle lists it (issue 11). Only
 * `step-up` and `quarantined` identities are listed, so the list stays small. Enforcement points
 * refuse a `quarantined` identity until `until` (their own clock: the control plane expires it at
 * the same time) or until a bundle no longer lists it; `score` is `context.risk` in Cedar.
 */
export interface RiskListed {
  id: string;
  state: 'step-up' | 'quarantined';
  /** Integer 0-100. */
  score: number;
  /** End of the state, milliseconds since the epoch. */
  until: number;
  /** Printable ASCII, at most LIMITS.maxRevocationReason characters. */
  reason: string;
}

/** Context values are a few scalars (Cedar String, Long or Boolean). */
export type PolicyContext = Record<string, string | number | boolean>;

/**
 * A policy file name (`orders.cedar`, `shop/frontend.cedar`): it names the policies it holds
 * (`<file>#<index>`), so `#` is excluded, and it never starts with `_` (no `__proto__`).
 */
export const POLICY_FILE_NAME = /^[A-Za-z0-9][A-Za-z0-9._\-/]{0,254}$/;

export const LIMITS = {
  /** Policy files in one policy set / bundle. */
  maxPolicyFiles: 1000,
  /** Bytes of one policy file. */
  maxPolicyFileBytes: 1024 * 1024,
  /** Workload entities in one bundle or test file. */
  maxEntities: 100_000,
  /** Characters of an attribute value. */
  maxAttributeLength: 256,
  /** Revoked identities in one bundle's revocation list. */
  maxRevoked: 10_000,
  /** Certificate serials listed for one revoked identity (its newest unexpired SVIDs). */
  maxSerialsPerRevoked: 256,
  /** Certificate serials in one bundle's revocation list, all identities together. */
  maxRevokedSerials: 20_000,
  /** Characters of a revocation reason. */
  maxRevocationReason: 256,
  /** Identities in one bundle's risk list (step-up and quarantined). */
  maxRisk: 10_000,
  /** Bytes of a bundle's decoded payload (the canonical JSON). */
  maxBundlePayloadBytes: 4 * 1024 * 1024,
} as const;

const ATTRIBUTE_SET: ReadonlySet<string> = new Set(ENTITY_ATTRIBUTE_NAMES);
const ACTION_SET: ReadonlySet<string> = new Set(POLICY_ACTIONS);

export function isPolicyAction(v: unknown): v is PolicyAction {
  return typeof v === 'string' && ACTION_SET.has(v);
}

export function isEntityAttributeName(v: string): v is EntityAttributeName {
  return ATTRIBUTE_SET.has(v);
}

/**
 * Checks an attribute object (only the five known names, string values of 1..256 characters) and
 * returns a clean copy, or a reason string when it is not acceptable.
 */
export function checkEntityAttributes(v: unknown): EntityAttributes | string {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return 'attrs must be an object';
  const out: EntityAttributes = {};
  for (const [k, value] of Object.entries(v)) {
    if (!isEntityAttributeName(k)) return `unknown attribute ${JSON.stringify(k.slice(0, 64))} (known: ${ENTITY_ATTRIBUTE_NAMES.join(', ')})`;
    if (typeof value !== 'string' || value.length === 0 || value.length > LIMITS.maxAttributeLength) {
      return `attribute ${k} must be a string of 1..${LIMITS.maxAttributeLength} characters`;
    }
    out[k] = value;
  }
  return out;
}
