/**
 * The admin authorizer against a real SQLite store: the default admin policy (admins allowed,
 * auditors read-only, strangers denied), MFA freshness (TESSERA_MFA_REQUIRED, never FORBIDDEN, when a
 * step-up would help), the bootstrap credential (always allowed, counted, audited, warned about),
 * and admin policy versions (bad policy refused at set, rollback, another process's version seen).
 */
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { isTesseraError, type ErrorCode } from '../../core/errors.js';
import { createLogger } from '../../core/log.js';
import { ADMIN_ACTIONS, NO_MFA_AGE_SECONDS, type AdminAction } from '../../core/policy/admin-schema.js';
import type { Caller } from '../../common/api/auth.js';
import { scratchNotes, type AuditNotes } from '../audit/audit.js';
import { TesseraError } from '../../core/errors.js';
import type { AdminService } from '../grants/admins.js';
import { ControlPlaneMetrics } from '../metrics.js';
import { sqliteTestFiles } from '../store/test-files.js';
import { AdminAuthorizer } from './authorizer.js';
import { AdminPolicyService } from './policy-service.js';
import { principalOfSession, type AdminPrincipal } from './principal.js';

const TD = 'example.org';
const BOOTSTRAP = `spiffe://${TD}/tessera/admin`;
const MAX_AGE = 15 * 60_000;
const files = sqliteTestFiles('authz');

/** Named admins as AdminService answers for them: `live` pass check, anything else is refused. */
function fakeAdmins(live: string[]): AdminService {
  return {
    namedAdmins: () => live.length,
    check: (c: Caller) => {
      if (!live.includes(c.spiffeId)) throw new TesseraError('TESSERA_FORBIDDEN', 'this operation needs an admin credential');
    },
  } as unknown as AdminService;
}

function setup(opts: { now?: () => number; live?: string[]; risk?: number } = {}) {
  const store = files.open(files.tmpFile());
  const policies = new AdminPolicyService(store, opts.now);
  const logs: string[] = [];
  const metrics = new ControlPlaneMetrics(new Registry());
  const authz = new AdminAuthorizer({
    trustDomain: TD, bootstrapId: BOOTSTRAP, mfaMaxAgeMs: MAX_AGE, policies, admins: fakeAdmins(opts.live ?? []),
    riskScore: async () => opts.risk ?? 0, log: createLogger({ level: 'debug', write: (l) => logs.push(l) }), metrics, now: opts.now ?? Date.now,
  });
  return { store, policies, authz, logs, metrics };
}

const person = (name: string, groups: string[], mfaAt?: number): AdminPrincipal => principalOfSession({ username: name, spiffeId: `spiffe://${TD}/user/${name}`, groups, mfaAt: mfaAt ?? null });
const named = (name: string): AdminPrincipal => ({ kind: 'admin', spiffeId: `spiffe://${TD}/tessera/admin/${name}`, name, groups: ['admins'], via: 'cert' });
const caller = (spiffeId: string): Caller => ({ spiffeId, notAfter: Date.now() + 3600_000, serial: '01', fingerprint: 'ab' });

/** The refusal code of `authorize`, or 'OK'; the audit notes it wrote. */
async function decide(authz: AdminAuthorizer, p: AdminPrincipal, action: AdminAction, target?: string): Promise<{ code: ErrorCode | 'OK'; ev: AuditNotes; message: string }> {
  const ev = scratchNotes();
  try {
    await authz.authorize(p, action, target, ev);
    return { code: 'OK', ev, message: '' };
  } catch (err) {
    if (!isTesseraError(err)) throw err;
    return { code: err.code, ev, message: err.message };
  }
}

const READS = (Object.keys(ADMIN_ACTIONS) as AdminAction[]).filter((a) => ADMIN_ACTIONS[a] === 'read');
const WRITES = (Object.keys(ADMIN_ACTIONS) as AdminAction[]).filter((a) => ADMIN_ACTIONS[a] === 'write');

describe('the default admin policy', () => {
  it('lets a person in group admins with fresh MFA do every admin action, and says so on the audit record', async () => {
    const { authz } = setup();
    await authz.sync();
    const alice = person('alice', ['admins'], Date.now() - 60_000);
    for (const a of Object.keys(ADMIN_ACTIONS) as AdminAction[]) expect((await decide(authz, alice, a)).code, a).toBe('OK');
    const { ev } = await decide(authz, alice, 'admin:entry.create', 'spiffe://example.org/shop/orders');
    expect(ev.actor).toBe(alice.spiffeId);
    expect(ev.detail.admin_authorize).toMatchObject({ action: 'admin:entry.create', decision: 'allow', policy_version: 0, kind: 'user', via: 'session', reasons: ['admins'] });
    expect((ev.detail.admin_authorize as { mfa_age_seconds: number }).mfa_age_seconds).toBeGreaterThanOrEqual(59);
    expect(ev.detail.bootstrap).toBeUndefined();
  });

  it('lets named admins (certificates, no MFA) do every admin action', async () => {
    const { authz } = setup();
    await authz.sync();
    for (const a of Object.keys(ADMIN_ACTIONS) as AdminAction[]) expect((await decide(authz, named('bob'), a)).code, a).toBe('OK');
    const { ev } = await decide(authz, named('bob'), 'admin:grant.approve');
    expect(ev.detail.admin_authorize).toMatchObject({ decision: 'allow', kind: 'admin', via: 'cert', reasons: ['named-admins'] });
  });

  it('lets auditors read and witness, and refuses them every other write with TESSERA_FORBIDDEN naming the action', async () => {
    const { authz } = setup();
    await authz.sync();
    const carol = person('carol', ['auditors'], Date.now());
    for (const a of READS) expect((await decide(authz, carol, a)).code, a).toBe('OK');
    for (const a of ['admin:audit.cosign', 'admin:audit.witness_alarm'] as const) expect((await decide(authz, carol, a)).code, a).toBe('OK');
    for (const a of WRITES.filter((w) => w !== 'admin:audit.cosign' && w !== 'admin:audit.witness_alarm')) {
      const r = await decide(authz, carol, a);
      expect(r.code, a).toBe('TESSERA_FORBIDDEN');
      expect(r.message).toContain(a);
      expect(r.ev.detail.admin_authorize).toMatchObject({ action: a, decision: 'deny' });
    }
  });

  it('denies everything to a person in no admin group (default deny), even with fresh MFA', async () => {
    const { authz } = setup();
    await authz.sync();
    const mallory = person('mallory', ['developers'], Date.now());
    for (const a of Object.keys(ADMIN_ACTIONS) as AdminAction[]) expect((await decide(authz, mallory, a)).code, a).toBe('TESSERA_FORBIDDEN');
  });
});

describe('MFA freshness', () => {
  it('default policy: an admin reads with an MFA of the last 12 hours, writes only with fresh MFA; no MFA at all (a console link) gets nothing', async () => {
    const { authz } = setup();
    await authz.sync();
    const twoHours = person('alice', ['admins'], Date.now() - 2 * 3600_000);
    for (const a of READS) expect((await decide(authz, twoHours, a)).code, a).toBe('OK');
    for (const a of WRITES) expect((await decide(authz, twoHours, a)).code, a).toBe('TESSERA_MFA_REQUIRED');
    const auditor = person('carol', ['auditors'], Date.now() - 2 * 3600_000);
    expect((await decide(authz, auditor, 'admin:audit.read')).code).toBe('OK');
    expect((await decide(authz, auditor, 'admin:audit.cosign')).code).toBe('TESSERA_MFA_REQUIRED');
    // Older than 12 hours: a step-up (fresh MFA would allow it), not a plain refusal.
    expect((await decide(authz, person('alice', ['admins'], Date.now() - 13 * 3600_000), 'admin:entry.list')).code).toBe('TESSERA_MFA_REQUIRED');
    const link = person('alice', ['admins']);
    for (const a of Object.keys(ADMIN_ACTIONS) as AdminAction[]) expect((await decide(authz, link, a)).code, a).toBe('TESSERA_MFA_REQUIRED');
  });

  it('refuses a person whose MFA is older than the maximum age with TESSERA_MFA_REQUIRED saying how to step up', async () => {
    const { authz } = setup();
    await authz.sync();
    const stale = person('alice', ['admins'], Date.now() - MAX_AGE - 5_000);
    const r = await decide(authz, stale, 'admin:entry.create');
    expect(r.code).toBe('TESSERA_MFA_REQUIRED');
    expect(r.message).toMatch(/admin:entry\.create needs fresh MFA: sign in again/);
    expect(r.ev.detail.admin_authorize).toMatchObject({ decision: 'mfa_required' });
    // Just inside the age: allowed.
    expect((await decide(authz, person('alice', ['admins'], Date.now() - MAX_AGE + 5_000), 'admin:entry.create')).code).toBe('OK');
  });

  it('refuses a person who never did MFA every write, whatever the policy permits (the floor is not the policy\'s to lower); reads are the policy\'s', async () => {
    const { authz, policies } = setup();
    const lax = 'permit (principal, action, resource);';
    const { version, compiled } = await policies.set(lax, BOOTSTRAP, 'everyone may');
    authz.installed(version, compiled);
    const noMfa = person('alice', ['admins']);
    for (const a of WRITES) expect((await decide(authz, noMfa, a)).code, a).toBe('TESSERA_MFA_REQUIRED');
    // This policy lets anyone read: a console-link session (no MFA) reads.
    expect((await decide(authz, noMfa, 'admin:entry.list')).code).toBe('OK');
    const cert: AdminPrincipal = { ...person('alice', ['admins'], Date.now() - MAX_AGE - 1000), via: 'cert' };
    // Reads with an older MFA are the policy's to allow (this one does); writes never are.
    expect((await decide(authz, cert, 'admin:entry.list')).code).toBe('OK');
    expect((await decide(authz, cert, 'admin:entry.create')).message).toContain('tessera login');
    // The same policy lets the named admin (no MFA floor for certificates that cannot carry one).
    expect((await decide(authz, named('bob'), 'admin:entry.list')).code).toBe('OK');
  });

  it('answers TESSERA_MFA_REQUIRED when a stricter policy would allow the action with a fresher MFA, and FORBIDDEN when nothing would', async () => {
    const { authz, policies } = setup();
    const strict = `
      permit (principal in Tessera::Group::"admins", action in Tessera::Action::"admin:read", resource) when { context.mfa_fresh };
      permit (principal in Tessera::Group::"admins", action == Tessera::Action::"admin:policy.apply", resource) when { context.mfa_age_seconds <= 60 };
    `;
    const { version, compiled } = await policies.set(strict, BOOTSTRAP, 'policy changes need MFA within a minute');
    authz.installed(version, compiled);
    const fiveMinutes = person('alice', ['admins'], Date.now() - 300_000);
    expect((await decide(authz, fiveMinutes, 'admin:entry.list')).code).toBe('OK');
    expect((await decide(authz, fiveMinutes, 'admin:policy.apply')).code).toBe('TESSERA_MFA_REQUIRED');
    expect((await decide(authz, person('alice', ['admins'], Date.now() - 10_000), 'admin:policy.apply')).code).toBe('OK');
    expect((await decide(authz, fiveMinutes, 'admin:entry.create')).code).toBe('TESSERA_FORBIDDEN');
    // A named admin's certificate never shows MFA: the step-up answer names what to do instead.
    const r = await decide(authz, named('bob'), 'admin:entry.list');
    expect(r.code).toBe('TESSERA_MFA_REQUIRED');
    expect(r.message).toContain('carries no MFA');
  });

  it('gives the policy the MFA age, the target, the time and the principal\'s risk score', async () => {
    let now = Date.UTC(2026, 0, 2, 3, 4, 5);
    const { authz, policies } = setup({ now: () => now, risk: 42 });
    const text = `permit (principal, action, resource) when {
      context.risk == 42 && context.hour == 3 && context.time == ${Math.floor(now / 1000)} &&
      context.target == "spiffe://example.org/shop/orders" && context.via == "session" && context.mfa_age_seconds == 30 };`;
    const { version, compiled } = await policies.set(text, BOOTSTRAP, 'context check');
    authz.installed(version, compiled);
    const alice = person('alice', [], now - 30_000);
    expect((await decide(authz, alice, 'admin:risk.release', 'spiffe://example.org/shop/orders')).code).toBe('OK');
    expect((await decide(authz, alice, 'admin:risk.release', 'spiffe://example.org/shop/other')).code).toBe('TESSERA_FORBIDDEN');
    now += 3600_000;
    expect((await decide(authz, person('alice', [], now - 30_000), 'admin:risk.release', 'spiffe://example.org/shop/orders')).code).toBe('TESSERA_FORBIDDEN');
    expect(NO_MFA_AGE_SECONDS).toBeGreaterThan(365 * 86_400 * 30);
  });
});

describe('the bootstrap credential', () => {
  it('is always allowed, even by a policy that forbids everything, and every use is counted, audited and logged at WARN', async () => {
    const { authz, policies, logs, metrics } = setup();
    const { version, compiled } = await policies.set('forbid (principal, action, resource);', BOOTSTRAP, 'lock everyone out');
    authz.installed(version, compiled);
    const boot = authz.principalOfCert(caller(BOOTSTRAP));
    expect(boot).toMatchObject({ kind: 'bootstrap', spiffeId: BOOTSTRAP });
    expect((await decide(authz, named('bob'), 'admin:entry.list')).code).toBe('TESSERA_FORBIDDEN');
    const r = await decide(authz, boot, 'admin:admin.policy.rollback');
    expect(r.code).toBe('OK');
    expect(r.ev.detail.bootstrap).toBe(true);
    expect(r.ev.detail.admin_authorize).toMatchObject({ action: 'admin:admin.policy.rollback', decision: 'allow', kind: 'bootstrap' });
    await decide(authz, boot, 'admin:entry.list');
    const text = await metrics.registry.metrics();
    expect(text).toContain('tessera_admin_bootstrap_uses_total{action="admin:admin.policy.rollback"} 1');
    expect(text).toContain('tessera_admin_bootstrap_uses_total{action="admin:entry.list"} 1');
    const warns = logs.map((l) => JSON.parse(l) as { level: string; msg: string; action?: string }).filter((l) => l.level === 'warn');
    expect(warns.map((w) => w.action)).toEqual(['admin:admin.policy.rollback', 'admin:entry.list']);
    expect(warns[0]!.msg).toBe('bootstrap admin credential used');
  });

  it('warns louder (break-glass) when named admins or users exist', async () => {
    const { authz, logs } = setup({ live: [`spiffe://${TD}/tessera/admin/bob`] });
    await authz.sync();
    await decide(authz, authz.principalOfCert(caller(BOOTSTRAP)), 'admin:entry.create');
    const people = setup();
    people.authz.usePeople({ anyUser: async () => true });
    await decide(people.authz, people.authz.principalOfCert(caller(BOOTSTRAP)), 'admin:entry.create');
    for (const l of [...logs, ...people.logs]) {
      expect(JSON.parse(l)).toMatchObject({ level: 'warn', action: 'admin:entry.create', break_glass: true });
      expect(l).toContain('BOOTSTRAP ADMIN CREDENTIAL USED');
    }
    expect(logs.length + people.logs.length).toBe(2);
  });
});

describe('principals from certificates', () => {
  it('maps named admins to kind admin in group admins and refuses other identities', async () => {
    const { authz } = setup({ live: [`spiffe://${TD}/tessera/admin/bob`] });
    expect(authz.principalOfCert(caller(`spiffe://${TD}/tessera/admin/bob`))).toEqual(named('bob'));
    expect(() => authz.principalOfCert(caller(`spiffe://${TD}/shop/orders`))).toThrow(expect.objectContaining({ code: 'TESSERA_FORBIDDEN' }));
  });

  it('asks the people source first for person certificates (the seam for `tessera login`)', async () => {
    const { authz } = setup();
    await authz.sync();
    const alice = { ...person('alice', ['auditors'], Date.now()), via: 'cert' as const };
    authz.usePeople({ principalOfCert: (c) => (c.spiffeId === alice.spiffeId ? alice : undefined) });
    const p = authz.principalOfCert(caller(alice.spiffeId));
    expect(p).toEqual(alice);
    expect((await decide(authz, p, 'admin:entry.list')).code).toBe('OK');
    expect((await decide(authz, p, 'admin:entry.create')).code).toBe('TESSERA_FORBIDDEN');
  });
});

describe('admin policy versions', () => {
  it('refuses a policy that does not validate against the admin schema at set, storing nothing', async () => {
    const { policies } = setup();
    const bad = [
      'permit (principal, action == Tessera::Action::"http:request", resource);', // a workload action, not an admin one
      'permit (principal, action, resource) when { context.mfa_age_seconds == "x" };', // type error
      'permit (principal, action, resource) when { principal.app == "x" };', // no such attribute
      'permit (principal == Tessera::Workload::"spiffe://example.org/a", action, resource);', // no such entity type
      'permit (principal, action, resource', // syntax
      'x'.repeat(70 * 1024),
    ];
    for (const text of bad) {
      await expect(policies.set(text, BOOTSTRAP, 'bad'), text.slice(0, 60)).rejects.toMatchObject({ code: 'TESSERA_POLICY_INVALID' });
    }
    expect(await policies.currentVersion()).toBe(0);
    expect(await policies.history(10)).toEqual([]);
  });

  it('reports a type mistake once, not once per admin action', async () => {
    const { policies } = setup();
    const err = await policies.set('permit (principal, action, resource) when { context.nope };', BOOTSTRAP, 'bad').catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'TESSERA_POLICY_INVALID' });
    const lines = (err as Error).message.split('\n');
    // One line for the mistake (Cedar's own report stops at 50 problems: "... and N more" may follow).
    expect(lines.filter((l) => l.includes('nope'))).toHaveLength(1);
    expect(lines[1]).toMatch(/nope.*\(for \d+ actions\)/);
    expect(lines.length).toBeLessThanOrEqual(3);
  });

  it('versions, rolls back to an earlier version or to the default, and a process sees another\'s version at its next sync', async () => {
    const { store, policies, authz } = setup();
    await authz.sync();
    const v1 = await policies.set('permit (principal in Tessera::Group::"admins", action in Tessera::Action::"admin:read", resource);', 'spiffe://example.org/tessera/admin/alice', 'read-only for a while');
    expect(v1.version).toMatchObject({ version: 1, reason: 'read-only for a while', author: 'spiffe://example.org/tessera/admin/alice' });
    // Another process (sharing the store) decides with v0 until it syncs.
    expect((await decide(authz, named('bob'), 'admin:entry.create')).code).toBe('OK');
    await authz.sync();
    expect(authz.policyVersion).toBe(1);
    expect((await decide(authz, named('bob'), 'admin:entry.create')).code).toBe('TESSERA_FORBIDDEN');
    expect((await decide(authz, named('bob'), 'admin:entry.list')).code).toBe('OK');
    const back = await policies.rollback(0, BOOTSTRAP, 'restore');
    expect(back!.version).toMatchObject({ version: 2, reason: 'rollback to v0: restore' });
    expect(back!.version.policy).toBe((await policies.version(0))!.policy);
    await authz.sync();
    expect((await decide(authz, named('bob'), 'admin:entry.create')).code).toBe('OK');
    expect(await policies.rollback(7, BOOTSTRAP, 'none')).toBeUndefined();
    expect((await policies.history(10)).map((v) => v.version)).toEqual([2, 1]);
    // A stored version that no longer compiles (a schema change by an upgrade) denies all but the bootstrap credential.
    await store.setMeta('admin_policy:v:000000003', JSON.stringify({ ...v1.version, version: 3, policy: 'permit (principal, action, resource) when { context.gone };' }));
    await store.setMeta('admin_policy:current', '3');
    await authz.sync();
    const r = await decide(authz, named('bob'), 'admin:entry.list');
    expect(r.code).toBe('TESSERA_FORBIDDEN');
    expect(r.message).toContain('does not compile');
    expect((await decide(authz, authz.principalOfCert(caller(BOOTSTRAP)), 'admin:admin.policy.set')).code).toBe('OK');
  });
});
