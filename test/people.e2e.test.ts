/**
 * The people commands end to end: `tessera user ...`, `tessera group list`, `tessera console link`
 * against a real control plane, and `tessera server`'s OIDC flags refused when incomplete or unsafe.
 */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, codeOf } from './support/http-browser.js';
import { runTessera } from './support/process.js';
import { startControlPlane, type TestControlPlane } from './support/server.js';

let t: TestControlPlane;
const cli = async (...args: string[]): Promise<{ status: number | null; json: Record<string, unknown>; stderr: string }> => {
  const r = await runTessera(['--json', ...args], { env: { TESSERA_ADMIN_DIR: t.cp.adminDir }, timeoutMs: 20_000 });
  return { status: r.status, json: JSON.parse(r.stdout || '{}') as Record<string, unknown>, stderr: r.stderr };
};

beforeAll(async () => {
  t = await startControlPlane();
});
afterAll(async () => {
  await t?.close();
});

describe('tessera user / group / console', () => {
  it('adds a user with groups and prints its enrolment link; lists, shows, disables, enables, removes', async () => {
    const add = await cli('user', 'add', 'lena', '--group', 'eng', '--group', 'ops', '--email', 'lena@example.com', '--enrol-ttl', '2h');
    expect(add.status, add.stderr).toBe(0);
    expect(String(add.json.enrolment_url)).toMatch(new RegExp(`^${t.cp.url}/auth/enrol#token=[A-Za-z0-9_-]{43}$`));
    const expires = Date.parse(String(add.json.enrolment_expires_at)) - Date.now();
    expect(expires).toBeGreaterThan(7_000_000);
    expect(expires).toBeLessThan(7_300_000);
    const again = await cli('user', 'add', 'lena');
    expect(again.status).toBe(1);
    expect((again.json.error as { code: string }).code).toBe('TESSERA_USER_CONFLICT');
    const bad = await cli('user', 'add', 'Lena!');
    expect((bad.json.error as { code: string }).code).toBe('TESSERA_BAD_REQUEST');

    expect(((await cli('user', 'list')).json.users as { username: string }[]).map((u) => u.username)).toEqual(['lena']);
    expect((await cli('user', 'show', 'lena')).json.user).toMatchObject({ groups: ['eng', 'ops'], email: 'lena@example.com', credentials: [] });
    expect(((await cli('group', 'list')).json.groups as { name: string; members: string[] }[]).map((g) => [g.name, g.members])).toEqual([['eng', ['lena']], ['ops', ['lena']]]);
    expect((await cli('user', 'disable', 'lena', '--reason', 'on leave')).status).toBe(0);
    expect((await cli('user', 'show', 'lena')).json.user).toMatchObject({ state: 'disabled', disabled_reason: 'on leave' });
    expect((await cli('user', 'enable', 'lena')).status).toBe(0);
    expect((await cli('user', 'logout-all', 'lena')).json.sessions_ended).toBe(0);
    const link = await cli('user', 'enrol-link', 'lena');
    expect(String(link.json.enrolment_url)).toContain('#token=');
    expect((await cli('user', 'remove', 'lena')).status).toBe(0);
    const gone = await cli('user', 'show', 'lena');
    expect((gone.json.error as { code: string }).code).toBe('TESSERA_NOT_FOUND');
  }, 180_000);

  it('console link: a one-time URL that signs in without MFA', async () => {
    const r = await cli('console', 'link', '--ttl', '5m');
    expect(r.status, r.stderr).toBe(0);
    expect(r.json.username).toBe('admin');
    const token = String(r.json.url).split('#token=')[1];
    const b = new Browser(t.cp.url, t.adminTls.ca);
    const s = await b.post('/v1/auth/link', { token });
    expect(s.status, s.text).toBe(200);
    expect((s.json as { session: { username: string; mfa_at: null } }).session).toMatchObject({ username: 'admin', mfa_at: null });
    expect(codeOf(await new Browser(t.cp.url, t.adminTls.ca).post('/v1/auth/link', { token }))).toBe('TESSERA_LINK_INVALID');
    const badTtl = await cli('console', 'link', '--ttl', '2d');
    expect(badTtl.status).toBe(2);
  }, 60_000);
});

describe('tessera server people flags', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-people-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('refuses incomplete or unsafe OIDC settings before starting', async () => {
    const secret = join(dir, 'secret');
    writeFileSync(secret, 'the-secret\n');
    chmodSync(secret, 0o644);
    const base = ['server', '--data-dir', join(dir, 'data'), '--listen', '127.0.0.1:0'];
    const cases: [string[], RegExp][] = [
      [['--oidc-issuer', 'https://idp.example'], /go together/],
      [['--oidc-issuer', 'http://idp.example', '--oidc-client-id', 'c', '--oidc-client-secret-file', secret], /https/],
      [['--oidc-issuer', 'https://idp.example', '--oidc-client-id', 'c', '--oidc-client-secret-file', secret], /chmod 600/],
      [['--oidc-issuer', 'https://idp.example', '--oidc-client-id', 'c', '--oidc-client-secret-file', join(dir, 'none')], /no file/],
      [['--oidc-groups-claim', 'roles'], /need --oidc-issuer/],
      [['--session-idle', '5s'], /--session-idle/],
    ];
    for (const [flags, message] of cases) {
      const r = await runTessera([...base, ...flags], { timeoutMs: 20_000 });
      expect(r.status, flags.join(' ')).toBe(2);
      expect(r.stderr).toMatch(message);
      expect(r.stderr).not.toContain('the-secret');
    }
  }, 120_000);
});
