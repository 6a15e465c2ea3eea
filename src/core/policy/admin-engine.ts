/**
 * Decides admin requests with an admin policy (see admin-schema.ts). Admin calls are few (people
 * typing commands, a console clicking), so each decision asks cedar-wasm's `isAuthorized` directly,
 * with the three or four entities it needs; no cache, no pre-parsed slot. Default deny, and any
 * evaluation error denies (fail closed), as in the workload engine.
 */
import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import { PolicyEngine, type CompiledPolicySet } from './engine.js';
import {
  ADMIN_ACTIONS, ADMIN_ADMIN_TYPE, ADMIN_FABRIC_TYPE, ADMIN_GROUP_TYPE, ADMIN_READ_GROUP, ADMIN_SCHEMA, ADMIN_USER_TYPE, ADMIN_WRITE_GROUP, MAX_ADMIN_POLICY_BYTES, type AdminAction,
} from './admin-schema.js';
import { ACTION_TYPE as ADMIN_ACTION_TYPE } from './schema.js';
import { TesseraError } from '../errors.js';

/** The file name admin policy text is compiled under (policy ids default to `admin.cedar#<index>`). */
export const ADMIN_POLICY_FILE = 'admin.cedar';

/** A principal as the admin policy sees it. */
export interface AdminSubject {
  type: 'User' | 'Admin';
  /** SPIFFE ID: the entity id. */
  id: string;
  /** Username or admin name (`principal.name`). */
  name: string;
  groups: readonly string[];
}

export interface AdminContext {
  mfa_age_seconds: number;
  mfa_fresh: boolean;
  via: string;
  target: string;
  time: number;
  hour: number;
  risk: number;
}

export interface AdminDecision {
  allow: boolean;
  /** Ids of the determining policies. */
  reasons: string[];
  /** Errors that forced a deny. */
  errors: string[];
}

/**
 * Parses and strictly validates admin policy text against ADMIN_SCHEMA.
 *
 * @example compileAdminPolicy('permit (principal in Tessera::Group::"admins", action, resource);')
 * @throws TesseraError TESSERA_POLICY_INVALID naming the line and column of each problem
 */
export function compileAdminPolicy(text: string): CompiledPolicySet {
  if (typeof text !== 'string') throw new TesseraError('TESSERA_POLICY_INVALID', 'the admin policy must be Cedar text');
  if (Buffer.byteLength(text, 'utf8') > MAX_ADMIN_POLICY_BYTES) throw new TesseraError('TESSERA_POLICY_INVALID', `the admin policy is larger than ${MAX_ADMIN_POLICY_BYTES} bytes`);
  try {
    return PolicyEngine.compile({ policies: { [ADMIN_POLICY_FILE]: text }, schema: ADMIN_SCHEMA });
  } catch (e) {
    // Cedar reports a type error once per admin action the policy applies to (50-odd lines of the
    // same mistake): say it once, with the number of actions.
    if (!(e instanceof TesseraError)) throw e;
    const counts = new Map<string, number>();
    for (const line of e.message.split('\n').slice(1)) {
      const key = line.replace(/ for Tessera::Action::"[^"]*"/, '');
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
    const lines = [...counts].map(([line, n]) => (n > 1 ? `${line} (for ${n} actions)` : line));
    throw new TesseraError('TESSERA_POLICY_INVALID', `invalid admin policy:\n${lines.join('\n')}`);
  }
}

// One Wasm-side slot for the admin policy, parsed again only when the policy changes (about
// 10× cheaper per decision than `isAuthorized`, which parses the policy text every call).
const SLOT = 'tessera-admin-policy';
let slotHash: string | undefined;

function preparsed(policy: CompiledPolicySet): string {
  if (slotHash !== policy.hash) {
    slotHash = undefined;
    const r = cedar.preparsePolicySet(SLOT, { staticPolicies: { ...policy.policies } });
    if (r.type !== 'success') throw new TesseraError('TESSERA_POLICY_INVALID', `admin policy: ${r.errors.map((e) => e.message).join('; ')}`);
    slotHash = policy.hash;
  }
  return SLOT;
}

/** Decides one admin request with a compiled admin policy. */
export function decideAdmin(policy: CompiledPolicySet, subject: AdminSubject, action: AdminAction, fabric: string, context: AdminContext): AdminDecision {
  if (!Object.hasOwn(ADMIN_ACTIONS, action)) return { allow: false, reasons: [], errors: [`request: unknown admin action ${JSON.stringify(String(action).slice(0, 64))}`] };
  const actionUid = { type: ADMIN_ACTION_TYPE, id: action };
  const principal = { type: subject.type === 'User' ? ADMIN_USER_TYPE : ADMIN_ADMIN_TYPE, id: subject.id };
  const entities: cedar.EntityJson[] = [
    { uid: principal, attrs: { name: subject.name }, parents: subject.groups.map((g) => ({ type: ADMIN_GROUP_TYPE, id: g })) },
    ...subject.groups.map((g) => ({ uid: { type: ADMIN_GROUP_TYPE, id: g }, attrs: {}, parents: [] })),
    { uid: { type: ADMIN_FABRIC_TYPE, id: fabric }, attrs: {}, parents: [] },
    // The action and its group (admin:read or admin:write), as the schema declares them. The schema
    // itself is not passed: Cedar would parse all of it on every call (~40 ms); the request's types
    // are fixed by AdminContext and were checked against the schema when the policy was compiled.
    { uid: actionUid, attrs: {}, parents: [{ type: ADMIN_ACTION_TYPE, id: ADMIN_ACTIONS[action] === 'read' ? ADMIN_READ_GROUP : ADMIN_WRITE_GROUP }] },
  ];
  const r = cedar.statefulIsAuthorized({
    principal, action: actionUid, resource: { type: ADMIN_FABRIC_TYPE, id: fabric },
    context: { ...context }, preparsedPolicySetId: preparsed(policy), entities,
  });
  if (r.type !== 'success') return { allow: false, reasons: [], errors: r.errors.map((e) => `request: ${e.message}`) };
  const errors = r.response.diagnostics.errors.map((e) => `${e.policyId}: ${e.error.message}`);
  // Fail closed: Cedar skips an erroring policy (which may be a forbid) and may still allow.
  if (errors.length > 0) return { allow: false, reasons: [], errors };
  return { allow: r.response.decision === 'allow', reasons: r.response.diagnostics.reason, errors: [] };
}
