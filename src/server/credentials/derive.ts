/**
 * Derived credentials under policy: before the control plane mints an API key or a JWT-SVID, Cedar
 * decides `credential:derive` once per requested scope (API key) or audience (JWT), and every one
 * must be allowed. Default deny: an identity holds only the scopes and audiences policy grants.
 *
 * ```cedar
 * permit (principal, action == Tessera::Action::"credential:derive",
 *         resource == Tessera::Workload::"spiffe://example.org/tessera/credential/apikey")
 * when { principal has app && principal.app == "orders" && context.scope like "orders:*" && context.ttl_seconds <= 86400 };
 * ```
 */
import { TesseraError } from '../../core/errors.js';
import type { PolicyContext } from '../../core/policy/types.js';
import type { AuditNotes } from '../audit/audit.js';
import type { PolicyService } from '../policy/service.js';
import type { RiskService, RiskStanding } from '../risk/service.js';

export type CredentialKind = 'apikey' | 'jwt';

/** What a `credential:derive` decision needs: the policy (followed across processes) and the clock. */
export interface DeriveDeps {
  policy: Pick<PolicyService, 'sync' | 'decide'>;
  trustDomain: string;
  now: () => number;
  /** Risk states (issue 11): a quarantined identity derives nothing, step-up shortens TTLs. Absent: everyone is normal. */
  risk?: Pick<RiskService, 'assertNotQuarantined' | 'settings'>;
}

const NORMAL: RiskStanding = Object.freeze({ state: 'normal', score: 0, until: null });

/**
 * The risk standing of `principal` before anything is derived or issued for it: throws
 * TESSERA_IDENTITY_QUARANTINED when it is quarantined.
 */
export function riskStanding(deps: Pick<DeriveDeps, 'risk'>, notes: AuditNotes, principal: string): Promise<RiskStanding> {
  return deps.risk === undefined ? Promise.resolve(NORMAL) : deps.risk.assertNotQuarantined(principal, notes);
}

/** The resource of a `credential:derive` decision: `spiffe://<td>/tessera/credential/<kind>`. */
export function credentialResource(trustDomain: string, kind: CredentialKind): string {
  return `spiffe://${trustDomain}/tessera/credential/${kind}`;
}

/**
 * The site the control plane decides at, in the decision context (the control plane has no site
 * of its own; policies on `context.site` for derived credentials can match it).
 */
export const CONTROL_PLANE_SITE = 'control-plane';

/**
 * `risk`: the principal's risk score (context.risk).
 * Throws TESSERA_CREDENTIAL_DENIED unless policy allows `principal` to derive a `kind` credential
 * for every one of `values` (scopes or audiences) with this lifetime. The decisions go into the
 * audit notes (policy ids, never the credential).
 */
export async function authorizeDerive(deps: DeriveDeps, ev: AuditNotes, principal: string, kind: CredentialKind, values: readonly string[], ttlSeconds: number, risk = 0): Promise<void> {
  // Another process (cluster worker) may have applied a policy: follow it before deciding.
  await deps.policy.sync();
  const resource = credentialResource(deps.trustDomain, kind);
  const now = deps.now();
  const base = { site: CONTROL_PLANE_SITE, time: Math.floor(now / 1000), hour: new Date(now).getUTCHours(), risk };
  const denied: string[] = [];
  const reasons = new Set<string>();
  for (const value of values) {
    const context: PolicyContext = { kind, scope: kind === 'apikey' ? value : '', audience: kind === 'jwt' ? value : '', ttl_seconds: ttlSeconds, ...base };
    const d = deps.policy.decide({ principal, action: 'credential:derive', resource, context });
    for (const r of d.reasons) reasons.add(r);
    if (!d.allow) {
      denied.push(value);
      if (d.errors.length > 0) ev.detail.policy_errors = d.errors.slice(0, 4);
    }
  }
  ev.detail.policy = [...reasons].slice(0, 16);
  if (denied.length > 0) {
    ev.detail.reason = 'policy';
    ev.detail.denied = denied;
    const what = kind === 'apikey' ? 'scope' : 'audience';
    throw new TesseraError('TESSERA_CREDENTIAL_DENIED', `policy does not permit this identity ${kind === 'apikey' ? 'an API key' : 'a JWT-SVID'} for ${what}${denied.length > 1 ? 's' : ''} ${denied.map((v) => JSON.stringify(v)).join(', ')} (credential:derive)`);
  }
}
