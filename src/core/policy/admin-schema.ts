/**
 * Admin rights as Cedar (issue 12): every admin operation of the API (and so of the CLI and the
 * console, which only call the API) is a Cedar action `Tessera::Action::"admin:<operation>"`, and the
 * admin policy decides who may perform it. Default deny.
 *
 * The admin policy is its own policy set with its own schema (this file), not part of the workload
 * policy bundle: the bundle goes to every agent (which has no business knowing who administers the
 * fabric), and `tessera policy apply` is itself an admin action, so a workload policy that dropped
 * the admin rules would lock every admin out of repairing it.
 *
 * ```cedar
 * permit (principal in Tessera::Group::"auditors", action in Tessera::Action::"admin:read", resource)
 * when { context.mfa_fresh };
 * ```
 *
 * Principals: `Tessera::User::"spiffe://<td>/user/<username>"` (a person: a session or a person
 * certificate from `tessera login`), `Tessera::Admin::"spiffe://<td>/tessera/admin/<name>"` (a named
 * admin's certificate, `tessera admin add`); both have parents `Tessera::Group::"<group>"`, and every
 * named admin is in group `admins`. Resource: `Tessera::Fabric::"<trust domain>"`; the object acted on
 * (an entry, a grant id, an admin name, ...) is `context.target` ("" when the operation has none).
 */
import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import { TesseraError } from '../errors.js';
import { deepFreeze } from './schema.js';

/** Read-only admin actions (members of the action group `admin:read`). */
const READ = [
  'entry.list', 'entry.show', 'ca.list', 'policy.history', 'policy.show', 'policy.bundle',
  'audit.read', 'audit.tail', 'audit.checkpoint', 'audit.checkpoints', 'audit.prove',
  'secret.policy.list', 'secret.policy.show', 'admin.list', 'admin.policy.show', 'admin.policy.history',
  'grant.list', 'risk.list', 'risk.show', 'risk.config.show', 'risk.config.history', 'telemetry.read', 'apikey.list', 'map.read', 'map.edge',
  'user.list', 'user.show', 'user.group_list', 'device.list', 'device.show', 'gateway.list',
  'federation.list', 'federation.show',
] as const;

/** Admin actions that change state (members of the action group `admin:write`). */
const WRITE = [
  'entry.create', 'entry.delete', 'entry.revoke', 'token.create', 'ca.rotate', 'policy.apply', 'policy.rollback',
  'secret.policy.create', 'secret.policy.refresh', 'secret.policy.retire',
  'admin.add', 'admin.renew', 'admin.remove', 'admin.policy.set', 'admin.policy.rollback',
  'grant.request', 'grant.approve', 'grant.deny', 'grant.revoke',
  'risk.quarantine', 'risk.step-up', 'risk.release', 'risk.config.set', 'risk.config.rollback',
  'apikey.revoke', 'audit.cosign', 'audit.witness_alarm',
  'user.add', 'user.remove', 'user.disable', 'user.enable', 'user.logout_all', 'user.enrol_link', 'console.link',
  'device.token.create', 'device.revoke', 'gateway.add', 'gateway.remove',
  'federation.add', 'federation.remove',
] as const;

/** An admin operation: `Tessera::Action::"admin:<op>"`; `<op>` is the audit action of its route. */
export type AdminAction = `admin:${(typeof READ)[number] | (typeof WRITE)[number]}`;

/** Every admin action with its group: `read` (changes nothing) or `write`. */
export const ADMIN_ACTIONS: Readonly<Record<AdminAction, 'read' | 'write'>> = Object.freeze(Object.fromEntries([
  ...READ.map((a) => [`admin:${a}`, 'read'] as const),
  ...WRITE.map((a) => [`admin:${a}`, 'write'] as const),
])) as Readonly<Record<AdminAction, 'read' | 'write'>>;

/** The action groups policies name with `action in ...`. */
export const ADMIN_READ_GROUP = 'admin:read';
export const ADMIN_WRITE_GROUP = 'admin:write';

export const ADMIN_USER_TYPE = 'Tessera::User';
export const ADMIN_ADMIN_TYPE = 'Tessera::Admin';
export const ADMIN_GROUP_TYPE = 'Tessera::Group';
export const ADMIN_FABRIC_TYPE = 'Tessera::Fabric';

/**
 * `context.mfa_age_seconds` of a principal with no MFA at all (a named admin's certificate): larger
 * than any real age (about 31 years), so `context.mfa_age_seconds <= N` is false for it without a `has`.
 */
export const NO_MFA_AGE_SECONDS = 1_000_000_000;

/** The context of every admin decision (all attributes always present). */
const CONTEXT = {
  type: 'Record',
  attributes: {
    /** Seconds since the principal's last MFA; NO_MFA_AGE_SECONDS when it never did one. */
    mfa_age_seconds: { type: 'Long' },
    /** mfa_age_seconds is at most the server's `--admin-mfa-max-age`. */
    mfa_fresh: { type: 'Boolean' },
    /** "cert" (a client certificate) or "session" (a console session). */
    via: { type: 'String' },
    /** The object acted on: an entry id or SPIFFE ID, a grant id, an admin name, ...; "" when none. */
    target: { type: 'String' },
    /** Seconds since the epoch. */
    time: { type: 'Long' },
    /** Hour of the day, 0-23, UTC. */
    hour: { type: 'Long' },
    /** The principal's risk score, 0-100, from the risk service. */
    risk: { type: 'Long' },
  },
};

const PERSON = { type: 'Record', attributes: { name: { type: 'String' } } };

/** The admin policy's schema (Cedar JSON schema, namespace Tessera). Deeply frozen. */
export const ADMIN_SCHEMA: Readonly<Record<string, unknown>> = deepFreeze({
  Tessera: {
    entityTypes: {
      Group: {},
      User: { memberOfTypes: ['Group'], shape: PERSON },
      Admin: { memberOfTypes: ['Group'], shape: PERSON },
      Fabric: {},
    },
    actions: {
      [ADMIN_READ_GROUP]: {},
      [ADMIN_WRITE_GROUP]: {},
      ...Object.fromEntries(Object.entries(ADMIN_ACTIONS).map(([a, group]) => [a, {
        memberOf: [{ id: group === 'read' ? ADMIN_READ_GROUP : ADMIN_WRITE_GROUP }],
        appliesTo: { principalTypes: ['User', 'Admin'], resourceTypes: ['Fabric'], context: CONTEXT },
      }])),
    },
  },
});

/**
 * The admin policy in force until an admin sets one (version 0). Admin rights need fresh MFA,
 * except for named admins' certificates, which carry none: see the comment in the policy.
 */
export const DEFAULT_ADMIN_POLICY = `// Tessera admin policy (the built-in default, version 0). Default deny: what no rule permits is refused.
// Principals: Tessera::User (people signed in) and Tessera::Admin (named admins' certificates),
// both members of Tessera::Group entities; every named admin is in group "admins".

// People in group "admins": read with a sign-in that used MFA in the last 12 hours (a session, or a
// \`tessera login\` certificate), and change anything with MFA no older than --admin-mfa-max-age (the
// server asks for that fresh MFA of every write by a person, whatever this policy says).
@id("admins-read")
permit (
  principal in Tessera::Group::"admins",
  action in Tessera::Action::"admin:read",
  resource
) when { context.mfa_age_seconds <= 43200 };

@id("admins")
permit (
  principal in Tessera::Group::"admins",
  action in [Tessera::Action::"admin:read", Tessera::Action::"admin:write"],
  resource
) when { context.mfa_fresh };

// Named admins' certificates (tessera admin add): every admin action. These credentials are
// long-lived keys with no second factor, so they can never show fresh MFA; this rule keeps them
// working while people move to short-lived certificates from \`tessera login\`. Delete it (or
// add "&& context.mfa_fresh") to require MFA of every admin.
@id("named-admins")
permit (
  principal is Tessera::Admin in Tessera::Group::"admins",
  action in [Tessera::Action::"admin:read", Tessera::Action::"admin:write"],
  resource
);

// Auditors: read everything (MFA in the last 12 hours), and witness the audit log (cosign
// checkpoints, report alarms: writes, so with fresh MFA).
@id("auditors-read")
permit (
  principal in Tessera::Group::"auditors",
  action in Tessera::Action::"admin:read",
  resource
) when { context.mfa_age_seconds <= 43200 };

@id("auditors")
permit (
  principal in Tessera::Group::"auditors",
  action in [Tessera::Action::"admin:read", Tessera::Action::"admin:audit.cosign", Tessera::Action::"admin:audit.witness_alarm"],
  resource
) when { context.mfa_fresh };
`;

/** Bytes (UTF-8) of an admin policy text. */
export const MAX_ADMIN_POLICY_BYTES = 64 * 1024;

/**
 * The admin schema in Cedar's human-readable syntax (for `tessera admin policy show --schema` and docs).
 */
export function adminSchemaText(): string {
  const r = cedar.schemaToText(ADMIN_SCHEMA as cedar.Schema);
  if (r.type !== 'success') throw new TesseraError('TESSERA_POLICY_INVALID', `admin schema: ${r.errors.map((e) => e.message).join('; ')}`);
  return r.text;
}

