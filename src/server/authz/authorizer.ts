/**
 * Admin authorization (issue 12): every admin operation, from the CLI, the API or the console, is
 * decided by the admin policy (Cedar, see core/policy/admin-schema.ts), default deny, and needs fresh
 * MFA where the policy or this code says so. Routes call `authorize` through `adminCaller`; the result
 * is written on the route's own audit record (`detail.admin_authorize`), not as a record of its own.
 *
 * The bootstrap credential (`spiffe://<td>/tessera/admin`, DATA_DIR/admin/) is always allowed and
 * never asks the policy: it is the way back in when the admin policy locks everybody out (a bad
 * policy, or a policy that no longer compiles after an upgrade). Honouring it gives nobody new power:
 * it is written by the server into its own data directory, next to the database that holds the admin
 * policy, so whoever can read it could edit the policy there. Every use is loud: a WARN line naming the
 * action, `detail.bootstrap: true` on the audit record, and `tessera_admin_bootstrap_uses_total`.
 */
import { ADMIN_ACTIONS, NO_MFA_AGE_SECONDS, type AdminAction } from '../../core/policy/admin-schema.js';
import { compileAdminPolicy, decideAdmin, type AdminContext, type AdminDecision } from '../../core/policy/admin-engine.js';
import type { CompiledPolicySet } from '../../core/policy/engine.js';
import { TesseraError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import type { Caller } from '../../common/api/auth.js';
import type { AuditNotes } from '../audit/audit.js';
import type { AdminService } from '../grants/admins.js';
import type { ControlPlaneMetrics } from '../metrics.js';
import type { AdminPolicyService, AdminPolicyVersion } from './policy-service.js';
import type { AdminPrincipal } from './principal.js';

/** Default of `tessera server --admin-mfa-max-age`. */
export const DEFAULT_ADMIN_MFA_MAX_AGE_MS = 15 * 60_000;

export interface AdminAuthorizerOptions {
  trustDomain: string;
  /** SPIFFE ID of the bootstrap credential. */
  bootstrapId: string;
  /** How old an MFA may be and still count as fresh (`context.mfa_fresh`). */
  mfaMaxAgeMs: number;
  policies: AdminPolicyService;
  admins: AdminService;
  /** The principal's risk score, 0-100 (the risk service's standing). */
  riskScore: (spiffeId: string) => Promise<number>;
  log: Logger;
  metrics: ControlPlaneMetrics;
  now?: () => number;
}

/**
 * What people's sign-in (src/server/people/) plugs in: principals for person certificates from
 * `tessera login`, and whether any user exists (for the bootstrap warning).
 */
export interface PeopleSource {
  /** The principal of a certificate under `spiffe://<td>/user/...`, or undefined when it is not a live person's. */
  principalOfCert?(caller: Caller): AdminPrincipal | undefined;
  anyUser?(): Promise<boolean>;
}

export class AdminAuthorizer {
  readonly #o: AdminAuthorizerOptions & { now: () => number };
  #people: PeopleSource = {};
  /** The version in force and its compiled form; undefined compiled: it does not compile (fail closed). */
  #version = -1;
  #compiled: CompiledPolicySet | undefined;

  constructor(opts: AdminAuthorizerOptions) {
    this.#o = { now: Date.now, ...opts };
  }

  get mfaMaxAgeMs(): number {
    return this.#o.mfaMaxAgeMs;
  }

  /** The admin policy version this process decides with (-1 before the first sync). */
  get policyVersion(): number {
    return this.#version;
  }

  /** Plugs in people's sign-in (see PeopleSource). */
  usePeople(people: PeopleSource): void {
    this.#people = people;
  }

  /** Re-reads the version in force (at start, and every tick: another process may have set one). */
  async sync(): Promise<void> {
    const v = await this.#o.policies.currentVersion();
    if (v === this.#version) return;
    const rec = await this.#o.policies.version(v);
    if (rec === undefined) return;
    this.#install(rec, undefined);
  }

  /** Takes a version just stored by this process (set, rollback) into force at once. */
  installed(rec: AdminPolicyVersion, compiled: CompiledPolicySet): void {
    if (rec.version > this.#version) this.#install(rec, compiled);
  }

  #install(rec: AdminPolicyVersion, compiled: CompiledPolicySet | undefined): void {
    try {
      this.#compiled = compiled ?? compileAdminPolicy(rec.policy);
    } catch (err) {
      // Validated when it was set, so only a schema change (an upgrade) gets here: deny until an
      // admin with the bootstrap credential sets a policy that compiles.
      this.#compiled = undefined;
      this.#o.log.error('the admin policy in force does not compile: every admin action but the bootstrap credential\'s is refused', { version: rec.version, error: String(err) });
    }
    this.#version = rec.version;
  }

  /**
   * The admin principal of a client certificate: the bootstrap credential, a person's certificate
   * (PeopleSource), or a named admin (AdminService.check: TESSERA_ADMIN_REVOKED for a removed one,
   * TESSERA_FORBIDDEN for any other identity).
   */
  principalOfCert(caller: Caller): AdminPrincipal {
    if (caller.spiffeId === this.#o.bootstrapId) return { kind: 'bootstrap', spiffeId: caller.spiffeId, name: 'bootstrap', groups: ['admins'], via: 'cert' };
    const person = this.#people.principalOfCert?.(caller);
    if (person) return person;
    this.#o.admins.check(caller);
    const name = caller.spiffeId.slice(caller.spiffeId.lastIndexOf('/') + 1);
    return { kind: 'admin', spiffeId: caller.spiffeId, name, groups: ['admins'], via: 'cert' };
  }

  /**
   * Decides whether `principal` may perform `action` (on `target`, the object acted on; "" or
   * undefined when none) and writes the decision on `ev` (the route's audit record; undefined for
   * the unaudited bundle poll). Throws TESSERA_MFA_REQUIRED when fresh MFA would have allowed it,
   * TESSERA_FORBIDDEN otherwise.
   *
   * @example await ctx.adminAuthz.authorize(principal, 'admin:entry.create', undefined, ev)
   */
  async authorize(principal: AdminPrincipal, action: AdminAction, target: string | undefined, ev: AuditNotes | undefined): Promise<void> {
    if (ev) ev.actor = principal.spiffeId;
    if (!Object.hasOwn(ADMIN_ACTIONS, action)) throw new TesseraError('TESSERA_INTERNAL', `unknown admin action ${action}`);
    if (principal.kind === 'bootstrap') {
      await this.#bootstrapUsed(action, ev);
      return;
    }
    const now = this.#o.now();
    const mfa = mfaAge(principal.mfaAt, now, this.#o.mfaMaxAgeMs);
    const note = (decision: 'allow' | 'deny' | 'mfa_required', d?: AdminDecision): void => {
      if (!ev) return;
      ev.detail.admin_authorize = {
        action, decision, policy_version: this.#version, kind: principal.kind, via: principal.via,
        ...(principal.mfaAt !== undefined ? { mfa_age_seconds: mfa.ageSeconds } : {}),
        ...(d && d.reasons.length > 0 ? { reasons: d.reasons } : {}),
        ...(d && d.errors.length > 0 ? { errors: d.errors.slice(0, 5) } : {}),
      };
    };
    // People's sessions and certificates need fresh MFA for every action that changes something,
    // whatever the policy says (issue 12: "an admin action needs a session with MFA no older than a
    // configurable age"). Reads are the policy's: how recent an MFA they need (the default: the last
    // 12 hours, so a console-link session, which has none, reads nothing), or none at all for a
    // group the admin chose (a read-only viewer signed in by a one-time link an admin issued).
    if (principal.kind === 'user' && ADMIN_ACTIONS[action] === 'write' && !mfa.fresh) {
      note('mfa_required');
      throw mfaRequired(action, principal);
    }
    const compiled = this.#compiled;
    if (compiled === undefined) {
      note('deny', { allow: false, reasons: [], errors: ['the admin policy in force does not compile'] });
      throw new TesseraError('TESSERA_FORBIDDEN', `${action} refused: the admin policy in force (v${this.#version}) does not compile; set a new one with the bootstrap credential`);
    }
    const context: AdminContext = {
      mfa_age_seconds: mfa.ageSeconds, mfa_fresh: mfa.fresh, via: principal.via, target: (target ?? '').slice(0, 2048),
      time: Math.floor(now / 1000), hour: new Date(now).getUTCHours(), risk: await this.#o.riskScore(principal.spiffeId),
    };
    const subject = { type: principal.kind === 'user' ? 'User' as const : 'Admin' as const, id: principal.spiffeId, name: principal.name, groups: principal.groups };
    const d = decideAdmin(compiled, subject, action, this.#o.trustDomain, context);
    if (d.allow) {
      note('allow', d);
      return;
    }
    // Would fresh MFA have been enough? Then the answer is "step up", not "never".
    if (mfa.ageSeconds > 0 && decideAdmin(compiled, subject, action, this.#o.trustDomain, { ...context, mfa_age_seconds: 0, mfa_fresh: true }).allow) {
      note('mfa_required', d);
      throw mfaRequired(action, principal);
    }
    note('deny', d);
    throw new TesseraError('TESSERA_FORBIDDEN', `${action} is not permitted to ${principal.spiffeId} by the admin policy (v${this.#version})`);
  }

  async #bootstrapUsed(action: AdminAction, ev: AuditNotes | undefined): Promise<void> {
    if (ev) {
      ev.detail.bootstrap = true;
      ev.detail.admin_authorize = { action, decision: 'allow', policy_version: this.#version, kind: 'bootstrap', via: 'cert' };
    }
    this.#o.metrics.bootstrapAdminUsed(action);
    const others = this.#o.admins.namedAdmins() > 0 || (await this.#people.anyUser?.().catch(() => false)) === true;
    if (others) {
      this.#o.log.warn('BOOTSTRAP ADMIN CREDENTIAL USED although named admins or users exist: it is for the first start and break-glass only; use a named admin or `tessera login`', { action, break_glass: true });
    } else {
      this.#o.log.warn('bootstrap admin credential used', { action });
    }
  }
}

/** Age of an MFA in whole seconds (NO_MFA_AGE_SECONDS without one) and whether it is fresh. */
function mfaAge(mfaAt: number | undefined, now: number, maxAgeMs: number): { ageSeconds: number; fresh: boolean } {
  if (mfaAt === undefined || !Number.isFinite(mfaAt)) return { ageSeconds: NO_MFA_AGE_SECONDS, fresh: false };
  // An MFA time a little ahead of this clock (another replica's) counts as just now.
  const ageMs = Math.max(0, now - mfaAt);
  return { ageSeconds: Math.min(NO_MFA_AGE_SECONDS, Math.floor(ageMs / 1000)), fresh: ageMs <= maxAgeMs };
}

function mfaRequired(action: AdminAction, principal: AdminPrincipal): TesseraError {
  const how = principal.kind === 'admin'
    ? 'this named admin certificate carries no MFA: sign in as a person with `tessera login` (or ask for an admin policy that accepts it)'
    : principal.via === 'session' ? 'sign in again with your second factor (step-up) and retry' : 'run `tessera login --step-up` (fresh MFA) and retry';
  return new TesseraError('TESSERA_MFA_REQUIRED', `${action} needs fresh MFA: ${how}`);
}
