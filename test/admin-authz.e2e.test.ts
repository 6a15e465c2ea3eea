/**
 * Admin authorization end to end (issue 12), over real HTTPS + mTLS and a real SQLite file, with the
 * built CLI as child processes: a named admin allowed by the default admin policy, refused once
 * `tessera admin policy set` takes the permission away (TESSERA_FORBIDDEN naming the action, exit 4),
 * allowed again after `tessera admin policy rollback`; a person's certificate in group `auditors`
 * (through the PeopleSource seam `tessera login` will use) reads but is refused a write, and refused
 * with TESSERA_MFA_REQUIRED once its MFA is stale; the bootstrap credential counted
 * (`tessera_admin_bootstrap_uses_total`), audited (`detail.bootstrap` in `tessera audit tail`) and
 * warned about, louder once named admins exist.
 */
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pemEncode } from '../src/core/x509.js';
import { ControlPlaneMetrics } from '../src/server/metrics.js';
import type { AdminPrincipal } from '../src/server/authz/principal.js';
import { CLI, runTessera } from './support/process.js';
import { rawRequest, startControlPlane, type TestControlPlane } from './support/server.js';

const TD = 'example.org';
const ALICE = `spiffe://${TD}/tessera/admin/alice`;
const CAROL = `spiffe://${TD}/user/carol`;
const DAVE = `spiffe://${TD}/user/dave`;

/** Named admins may only read: what `admin policy set` installs to take alice's writes away. */
const READ_ONLY = `@id("admins-read")
permit (principal in Tessera::Group::"admins", action in Tessera::Action::"admin:read", resource);
`;

describe('admin authorization (Cedar admin policy) end to end', () => {
  let t: TestControlPlane;
  let aliceDir: string;
  const boot = (): string => t.cp.adminDir;

  async function tessera(adminDir: string, args: string[]): Promise<{ status: number | null; stdout: string; stderr: string; json: any }> {
    const r = await runTessera(['--json', ...args], { env: { TESSERA_ADMIN_DIR: adminDir }, timeoutMs: 20_000 });
    let json: unknown;
    try { json = JSON.parse(r.stdout); } catch { json = undefined; }
    return { ...r, json };
  }

  /** A person's client certificate (what `tessera login` will issue), written as a CLI credential directory. */
  function personDir(name: string, spiffeId: string): string {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const issued = t.cp.ctx.ca.issue({ publicKey, uriSans: [spiffeId], subject: { commonName: name } }, 600_000);
    const dir = join(t.dataDir, 'people', name);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    writeFileSync(join(dir, 'admin.key'), privateKey.export({ format: 'pem', type: 'pkcs8' }) as string, { mode: 0o600 });
    writeFileSync(join(dir, 'admin.pem'), pemEncode(issued.der, 'CERTIFICATE'), { mode: 0o600 });
    writeFileSync(join(dir, 'bundle.pem'), t.adminTls.ca);
    writeFileSync(join(dir, 'server.json'), JSON.stringify({ url: t.cp.url, trust_domain: TD }));
    return dir;
  }

  beforeAll(async () => {
    expect(existsSync(CLI), 'run `npx tsc -p tsconfig.json` first: the test runs dist/src/cli/main.js').toBe(true);
    t = await startControlPlane({ trustDomain: TD, metrics: new ControlPlaneMetrics() });
    // People: carol an auditor with fresh MFA, dave an admin whose MFA is an hour old.
    const people: Record<string, AdminPrincipal> = {
      [CAROL]: { kind: 'user', spiffeId: CAROL, name: 'carol', groups: ['auditors'], mfaAt: Date.now(), via: 'cert' },
      [DAVE]: { kind: 'user', spiffeId: DAVE, name: 'dave', groups: ['admins'], mfaAt: Date.now() - 3600_000, via: 'cert' },
    };
    t.cp.ctx.adminAuthz.usePeople({ principalOfCert: (c) => people[c.spiffeId], anyUser: async () => false });
    aliceDir = join(t.dataDir, 'alice');
    const added = await tessera(boot(), ['admin', 'add', 'alice', '--out', aliceDir]);
    expect(added.status, added.stderr).toBe(0);
  }, 60_000);

  afterAll(async () => {
    await t?.close();
  }, 120_000);

  it('allows a named admin by the default policy, refuses it after `admin policy set`, and allows it again after rollback', async () => {
    const create = (n: string) => tessera(aliceDir, ['entry', 'create', '--spiffe-id', `spiffe://${TD}/shop/${n}`]);
    const first = await create('a');
    expect(first.status, first.stderr).toBe(0);

    const file = join(t.dataDir, 'read-only.cedar');
    writeFileSync(file, READ_ONLY);
    const set = await tessera(boot(), ['admin', 'policy', 'set', file, '--reason', 'freeze changes']);
    expect(set.status, set.stderr).toBe(0);
    expect(set.json).toMatchObject({ version: 1, author: `spiffe://${TD}/tessera/admin`, reason: 'freeze changes' });

    const refused = await create('b');
    expect(refused.status).toBe(4);
    expect(refused.json.error.code).toBe('TESSERA_FORBIDDEN');
    expect(refused.json.error.message).toContain('admin:entry.create');
    // Reads are still permitted; so is nothing else that writes, the admin policy included.
    expect((await tessera(aliceDir, ['entry', 'list'])).status).toBe(0);
    const selfHelp = await tessera(aliceDir, ['admin', 'policy', 'rollback', '0', '--reason', 'let me back in']);
    expect(selfHelp.status).toBe(4);
    expect(selfHelp.json.error.code).toBe('TESSERA_FORBIDDEN');

    const shown = await tessera(aliceDir, ['admin', 'policy', 'show']);
    expect(shown.json).toMatchObject({ version: 1, policy: READ_ONLY, mfa_max_age_seconds: 900 });
    expect(shown.json.schema).toContain('admin:entry.create');

    const back = await tessera(boot(), ['admin', 'policy', 'rollback', '0', '--reason', 'thaw']);
    expect(back.status, back.stderr).toBe(0);
    expect(back.json).toMatchObject({ version: 2, reason: 'rollback to v0: thaw' });
    const again = await create('b');
    expect(again.status, again.stderr).toBe(0);
    const history = await tessera(aliceDir, ['admin', 'policy', 'history']);
    expect(history.json).toMatchObject({ current: 2, versions: [{ version: 2 }, { version: 1 }] });

    // Each decision is on the action's own audit record.
    const audit = await t.admin.call<{ records: { action: string; actor: string; outcome: string; code: string; detail: Record<string, any> }[] }>('GET', '/v1/audit?action=entry.create&limit=10');
    const byAlice = audit.records.filter((r) => r.actor === ALICE);
    expect(byAlice.map((r) => [r.outcome, r.detail.admin_authorize?.decision, r.detail.admin_authorize?.policy_version])).toEqual(
      expect.arrayContaining([['success', 'allow', 0], ['denied', 'deny', 1], ['success', 'allow', 2]]),
    );
    expect(byAlice.find((r) => r.outcome === 'denied')!.code).toBe('TESSERA_FORBIDDEN');
  }, 120_000);

  it('refuses a bad admin policy at set (CLI and API), leaving the version in force', async () => {
    const file = join(t.dataDir, 'bad.cedar');
    writeFileSync(file, 'permit (principal, action == Tessera::Action::"http:request", resource);');
    const before = (await tessera(boot(), ['admin', 'policy', 'show'])).json.version;
    const cli = await tessera(boot(), ['admin', 'policy', 'set', file, '--reason', 'oops']);
    expect(cli.status).toBe(1);
    expect(cli.json.error.code).toBe('TESSERA_POLICY_INVALID');
    const api = await rawRequest(t.cp.url, {
      method: 'PUT', path: '/v1/admin/policy', ca: t.adminTls.ca, cert: t.adminTls.cert, key: t.adminTls.key,
      headers: { 'content-type': 'application/json' }, body: JSON.stringify({ policy: 'permit (principal, action, resource) when { context.nope };', reason: 'oops' }),
    });
    expect(api.status).toBe(400);
    expect((api.json as any).error.code).toBe('TESSERA_POLICY_INVALID');
    for (const [body, code] of [[{ policy: 42, reason: 'x' }, 'TESSERA_BAD_REQUEST'], [{ policy: READ_ONLY }, 'TESSERA_BAD_REQUEST'], [{ policy: READ_ONLY, reason: 'x', extra: 1 }, 'TESSERA_BAD_REQUEST']] as const) {
      const r = await rawRequest(t.cp.url, { method: 'PUT', path: '/v1/admin/policy', ca: t.adminTls.ca, cert: t.adminTls.cert, key: t.adminTls.key, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      expect({ status: r.status, code: (r.json as any)?.error?.code }).toEqual({ status: 400, code });
    }
    const missing = await tessera(boot(), ['admin', 'policy', 'rollback', '99', '--reason', 'none']);
    expect(missing.json.error.code).toBe('TESSERA_NOT_FOUND');
    expect((await tessera(boot(), ['admin', 'policy', 'show'])).json.version).toBe(before);
  }, 120_000);

  it('refuses bad `tessera admin policy` and `--admin-mfa-max-age` input with clear exit statuses, before sending anything', async () => {
    const cases: [string[], number, string][] = [
      [['admin', 'policy', 'set', join(t.dataDir, 'no-such.cedar'), '--reason', 'x'], 2, 'TESSERA_CONFIG_INVALID'],
      [['admin', 'policy', 'set', join(t.dataDir, 'read-only.cedar'), '--reason', 'tab\there'], 2, 'TESSERA_CONFIG_INVALID'],
      [['admin', 'policy', 'rollback', 'v1', '--reason', 'x'], 2, 'TESSERA_CONFIG_INVALID'],
      [['admin', 'policy', 'history', '--limit', '0'], 2, 'TESSERA_CONFIG_INVALID'],
      [['server', '--data-dir', join(t.dataDir, 'unused'), '--admin-mfa-max-age', '25h'], 2, 'TESSERA_CONFIG_INVALID'],
      [['server', '--data-dir', join(t.dataDir, 'unused'), '--admin-mfa-max-age', 'soon'], 2, 'TESSERA_CONFIG_INVALID'],
    ];
    writeFileSync(join(t.dataDir, 'read-only.cedar'), READ_ONLY);
    for (const [args, status, code] of cases) {
      const r = await tessera(boot(), args);
      expect({ args, status: r.status, code: r.json?.error?.code }).toEqual({ args, status, code });
    }
    expect(existsSync(join(t.dataDir, 'unused'))).toBe(false);
  }, 120_000);

  it('lets an auditor (a person\'s certificate, group auditors) read but refuses it a write; a write with stale MFA is TESSERA_MFA_REQUIRED', async () => {
    const carol = personDir('carol', CAROL);
    expect((await tessera(carol, ['entry', 'list'])).status).toBe(0);
    expect((await tessera(carol, ['audit', 'list', '--limit', '1'])).status).toBe(0);
    const write = await tessera(carol, ['entry', 'create', '--spiffe-id', `spiffe://${TD}/shop/carol`]);
    expect(write.status).toBe(4);
    expect(write.json.error).toMatchObject({ code: 'TESSERA_FORBIDDEN' });
    expect(write.json.error.message).toContain('admin:entry.create');

    const dave = personDir('dave', DAVE);
    // An hour-old MFA reads (the default policy: MFA of the last 12 hours) but does not write.
    expect((await runTessera(['entry', 'list'], { env: { TESSERA_ADMIN_DIR: dave }, timeoutMs: 20_000 })).status).toBe(0);
    const stale = await runTessera(['entry', 'create', '--spiffe-id', `spiffe://${TD}/shop/dave`], { env: { TESSERA_ADMIN_DIR: dave }, timeoutMs: 20_000 });
    expect(stale.status).toBe(4);
    expect(stale.stderr).toContain('TESSERA_MFA_REQUIRED');
    expect(stale.stderr).toContain('tessera login');
    // A person who is not a live person (the PeopleSource does not know it) is no admin at all.
    const stranger = personDir('erin', `spiffe://${TD}/user/erin`);
    const r = await tessera(stranger, ['entry', 'list']);
    expect(r.json.error.code).toBe('TESSERA_FORBIDDEN');
  }, 120_000);

  it('counts, audits and loudly logs every use of the bootstrap credential', async () => {
    const before = await t.cp.ctx.metrics.registry.metrics();
    const count = (text: string, action: string): number => Number(new RegExp(`tessera_admin_bootstrap_uses_total\\{action="${action.replace('.', '\\.')}"\\} (\\d+)`).exec(text)?.[1] ?? 0);
    const listed = await tessera(boot(), ['entry', 'list']);
    expect(listed.status).toBe(0);
    const after = await t.cp.ctx.metrics.registry.metrics();
    expect(count(after, 'admin:entry.list')).toBe(count(before, 'admin:entry.list') + 1);
    expect(count(after, 'admin:admin.add')).toBe(1);
    // Named admins exist (alice): the warning says break-glass.
    const warns = t.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.level === 'warn' && String(l.msg).toLowerCase().includes('bootstrap admin credential used'));
    expect(warns.find((w) => w.action === 'admin:admin.add')).toBeDefined();
    expect(warns.filter((w) => w.action === 'admin:entry.list').at(-1)).toMatchObject({ break_glass: true });

    const tail = await runTessera(['audit', 'tail'], { env: { TESSERA_ADMIN_DIR: boot() }, timeoutMs: 20_000 });
    expect(tail.status, tail.stderr).toBe(0);
    const records = tail.stdout.trim().split('\n').map((l) => JSON.parse(l) as { action: string; actor: string; detail: Record<string, unknown> });
    const setRec = records.find((r) => r.action === 'admin.policy.set' && r.detail.reason === 'freeze changes');
    expect(setRec).toMatchObject({ actor: `spiffe://${TD}/tessera/admin`, detail: { bootstrap: true, admin_authorize: { action: 'admin:admin.policy.set', decision: 'allow', kind: 'bootstrap' } } });
    // Named admins' records carry no bootstrap mark.
    const aliceRec = records.find((r) => r.actor === ALICE);
    expect(aliceRec?.detail.bootstrap).toBeUndefined();
  }, 120_000);
});
