/**
 * The Cedar schema of Tessera (Cedar JSON schema format, namespace `Tessera`). Every policy
 * written by a user is validated against it in strict mode (`PolicyEngine.compile`).
 *
 * Principals and resources are workloads, identified by their SPIFFE ID:
 *
 * ```cedar
 * permit (
 *   principal,
 *   action == Tessera::Action::"http:request",
 *   resource == Tessera::Workload::"spiffe://example.org/shop/orders"
 * ) when {
 *   principal has app && principal.app == "shop" &&
 *   context.method == "GET" && context.path like "/orders/*"
 * };
 * ```
 *
 * Workload attributes are optional (an entry may not set them, and a peer the agent does not know
 * has none), so strict validation requires `principal has site && ...` before `principal.site`.
 */
import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import { TesseraError } from '../errors.js';
import { ENTITY_ATTRIBUTE_NAMES, type PolicyAction } from './types.js';

export const TESSERA_NAMESPACE = 'Tessera';
/** Fully qualified entity type of principals and resources. */
export const WORKLOAD_TYPE = 'Tessera::Workload';
/** Entity types of people's requests through a gateway (`gateway:request`). */
export const USER_TYPE = 'Tessera::User';
export const GROUP_TYPE = 'Tessera::Group';
export const APP_TYPE = 'Tessera::App';
/** Fully qualified entity type of actions. */
export const ACTION_TYPE = 'Tessera::Action';

type Scalar = { type: 'String' } | { type: 'Long' } | { type: 'Boolean' };

/** Context shared by every action: where and when the decision is made, and how risky the caller is. */
const BASE_CONTEXT: Record<string, Scalar> = {
  /** The site of the agent making the decision (data residency). */
  site: { type: 'String' },
  /** Seconds since the epoch. */
  time: { type: 'Long' },
  /** Hour of the day, 0-23, UTC. */
  hour: { type: 'Long' },
  /** Risk score of the principal, 0-100. */
  risk: { type: 'Long' },
};

function action(context: Record<string, Scalar>): object {
  return {
    appliesTo: {
      principalTypes: ['Workload'],
      resourceTypes: ['Workload'],
      context: { type: 'Record', attributes: context },
    },
  };
}

const ACTIONS: Record<PolicyAction, object> = {
  'http:request': action({ method: { type: 'String' }, path: { type: 'String' }, ...BASE_CONTEXT }),
  'tcp:connect': action({ ...BASE_CONTEXT }),
  'secret:unseal': action({ ...BASE_CONTEXT }),
  /**
   * A derived credential the control plane is asked to mint for the principal: one decision per
   * API key scope or JWT audience. Resource `spiffe://<td>/tessera/credential/apikey` or `.../jwt`;
   * `scope` is "" for a JWT, `audience` is "" for an API key (every attribute is always present, so
   * policies need no `has`).
   */
  'credential:derive': action({
    kind: { type: 'String' }, scope: { type: 'String' }, audience: { type: 'String' }, ttl_seconds: { type: 'Long' }, ...BASE_CONTEXT,
  }),
};

/**
 * Device posture as policies see it in `context.device` (issue 12; src/core/devices/posture.ts
 * builds it). `enrolled` and `posture_state` ("fresh" | "stale" | "missing") are always there; every
 * fact is optional: absent when unknown, observed too long ago, or when posture is stale or missing,
 * so a policy reads `context.device has disk_encrypted && context.device.disk_encrypted`.
 */
const DEVICE_POSTURE = {
  type: 'Record',
  attributes: {
    id: { type: 'String', required: false },
    enrolled: { type: 'Boolean' },
    posture_state: { type: 'String' },
    posture_age_seconds: { type: 'Long', required: false },
    os: { type: 'String', required: false },
    os_version: { type: 'String', required: false },
    disk_encrypted: { type: 'Boolean', required: false },
    screen_lock: { type: 'Boolean', required: false },
    firewall: { type: 'Boolean', required: false },
    patch_age_days: { type: 'Long', required: false },
    agent_version: { type: 'String', required: false },
  },
};

/**
 * A person's request through the gateway (issue 12): principal a `User`, resource an `App`, with the
 * presenting device's posture in `context.device` (always present: `posture_state` "missing" and
 * `enrolled` false when no device certificate was shown). Not one of POLICY_ACTIONS: the agents'
 * engine does not decide it; the gateway does.
 */
const PEOPLE_ACTIONS = {
  'gateway:request': {
    appliesTo: {
      principalTypes: ['User'],
      resourceTypes: ['App'],
      context: { type: 'Record', attributes: { method: { type: 'String' }, path: { type: 'String' }, device: { type: 'DevicePosture' }, ...BASE_CONTEXT } },
    },
  },
};

/** The Tessera schema as Cedar JSON schema. Deeply frozen: copy it (structuredClone) to extend it. */
export const TESSERA_SCHEMA: Readonly<Record<string, unknown>> = deepFreeze({
  [TESSERA_NAMESPACE]: {
    commonTypes: { DevicePosture: DEVICE_POSTURE },
    entityTypes: {
      /** An enrolled device (`spiffe://<td>/device/<id>`): its owner's username and its labels. */
      Device: { shape: { type: 'Record', attributes: { owner: { type: 'String', required: false } } } },
      /** A person (`spiffe://<td>/user/<username>`), member of its groups: `principal in Tessera::Group::"eng"`. */
      User: { memberOfTypes: ['Group'] },
      /** A group of people (local or from the OIDC provider's claims), by name. */
      Group: {},
      /** An internal web app behind a gateway, named by its route: `resource == Tessera::App::"wiki"`. */
      App: {},
      Workload: {
        shape: {
          type: 'Record',
          attributes: Object.fromEntries(ENTITY_ATTRIBUTE_NAMES.map((a) => [a, { type: 'String', required: false }])),
        },
      },
    },
    actions: { ...ACTIONS, ...PEOPLE_ACTIONS },
  },
});

/**
 * The schema in Cedar's human-readable schema syntax (for `tessera policy schema` and docs).
 *
 * @example schemaText() // 'namespace Tessera {\n  entity Workload = { ... };\n  action "http:request" ...'
 */
export function schemaText(schema: object = TESSERA_SCHEMA): string {
  const r = cedar.schemaToText(schema as cedar.Schema);
  if (r.type !== 'success') {
    throw new TesseraError('TESSERA_POLICY_INVALID', `schema: ${r.errors.map((e) => e.message).join('; ')}`);
  }
  return r.text;
}

export function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null) {
    for (const child of Object.values(v)) deepFreeze(child);
    Object.freeze(v);
  }
  return v;
}
