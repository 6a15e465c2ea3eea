/**
 * The admin policy's compiler and decider alone: arbitrary text is either a valid admin policy or
 * TESSERA_POLICY_INVALID (never another error), the schema names every admin action with its group,
 * and decisions fail closed (unknown action, evaluation error in a forbid).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isTesseraError } from '../errors.js';
import { compileAdminPolicy, decideAdmin, type AdminContext } from './admin-engine.js';
import { ADMIN_ACTIONS, ADMIN_SCHEMA, adminSchemaText, DEFAULT_ADMIN_POLICY, type AdminAction } from './admin-schema.js';

const CTX: AdminContext = { mfa_age_seconds: 0, mfa_fresh: true, via: 'cert', target: '', time: 0, hour: 0, risk: 0 };
const ALICE = { type: 'User' as const, id: 'spiffe://example.org/user/alice', name: 'alice', groups: ['admins'] };

describe('admin policy compiler', () => {
  it('compiles the default policy without warnings', () => {
    expect(compileAdminPolicy(DEFAULT_ADMIN_POLICY).warnings).toEqual([]);
  });

  it('property: any text compiles or is refused with TESSERA_POLICY_INVALID', () => {
    const pieces = ['permit', 'forbid', '(', ')', 'principal', 'action', 'resource', ',', ';', 'when', '{', '}', 'context.mfa_fresh', '==', 'in',
      'Tessera::Group::"admins"', 'Tessera::Action::"admin:read"', 'Tessera::Action::"admin:entry.create"', 'is', 'Tessera::Admin', '"', '@id("x")', ' '];
    const text = fc.oneof(fc.string({ maxLength: 200 }), fc.array(fc.constantFrom(...pieces), { maxLength: 30 }).map((a) => a.join(' ')));
    fc.assert(fc.property(text, (t) => {
      try {
        compileAdminPolicy(t);
      } catch (e) {
        expect(isTesseraError(e) && e.code).toBe('TESSERA_POLICY_INVALID');
      }
    }), { numRuns: 100 });
  });

  it('has every admin action in the schema, in its group', () => {
    const text = adminSchemaText();
    const actions = (ADMIN_SCHEMA.Tessera as { actions: Record<string, { memberOf?: { id: string }[] }> }).actions;
    for (const [a, group] of Object.entries(ADMIN_ACTIONS)) {
      expect(text).toContain(`"${a}"`);
      expect(actions[a]!.memberOf).toEqual([{ id: `admin:${group}` }]);
    }
    expect(Object.keys(actions).length).toBe(Object.keys(ADMIN_ACTIONS).length + 2);
  });
});

describe('admin decisions fail closed', () => {
  it('denies an action that is not an admin action', () => {
    const p = compileAdminPolicy('permit (principal, action, resource);');
    expect(decideAdmin(p, ALICE, 'admin:nothing' as AdminAction, 'example.org', CTX)).toMatchObject({ allow: false });
    expect(decideAdmin(p, ALICE, 'admin:entry.list', 'example.org', CTX)).toMatchObject({ allow: true });
  });

  it('denies when a forbid errors at evaluation, where Cedar alone would skip it and allow', () => {
    // Overflow at evaluation time (the validator cannot see it): Cedar skips the erroring forbid.
    const p = compileAdminPolicy('permit (principal, action, resource);\nforbid (principal, action, resource) when { context.time * 9223372036854775807 > 0 };');
    const d = decideAdmin(p, ALICE, 'admin:entry.list', 'example.org', { ...CTX, time: 2 });
    expect(d.allow).toBe(false);
    expect(d.errors.length).toBeGreaterThan(0);
  });
});
