/**
 * `tessera login | whoami | logout` as a person runs them: the real CLI (dist/) as a child process
 * against a real control plane; the person approves in a browser-like client with a passkey + TOTP
 * session. Both flows: --device-code (the CLI polls) and the browser flow (the CLI's loopback
 * listener receives the code). Then every admin command uses the login credential.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser } from './support/http-browser.js';
import { PeopleDriver, TestClock } from './support/people.js';
import { CLI, waitFor } from './support/process.js';
import { startControlPlane, type TestControlPlane } from './support/server.js';

let t: TestControlPlane;
let home: string;
let bundle: string;
let alice: Browser;
const children: ChildProcess[] = [];

interface Run { status: number | null; stdout: string; stderr: string }

/** Starts the CLI in an empty working directory (no default admin credential there) with TESSERA_HOME. */
function tessera(args: string[]): { child: ChildProcess; out: { stdout: string; stderr: string }; done: Promise<Run> } {
  // No admin directory named, no desktop to open a browser on.
  const env: NodeJS.ProcessEnv = { ...process.env, TESSERA_HOME: home };
  for (const k of ['TESSERA_ADMIN_DIR', 'TESSERA_SERVER', 'DISPLAY', 'WAYLAND_DISPLAY']) delete env[k];
  const child = spawn(process.execPath, [CLI, ...args], { cwd: home, env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  const out = { stdout: '', stderr: '' };
  child.stdout!.on('data', (d: Buffer) => { out.stdout += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { out.stderr += d.toString(); });
  const done = new Promise<Run>((resolve) => child.on('close', (status) => resolve({ status, ...out })));
  return { child, out, done };
}

beforeAll(async () => {
  const clock = new TestClock();
  t = await startControlPlane({ people: { now: clock.now } });
  home = mkdtempSync(join(tmpdir(), 'tessera-login-'));
  bundle = join(home, 'bundle.pem');
  writeFileSync(bundle, t.adminTls.ca);
  const p = new PeopleDriver(t, clock);
  ({ browser: alice } = await p.enrol('alice', ['admins']));
}, 60_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await t?.close();
  if (home) rmSync(home, { recursive: true, force: true });
});

describe('tessera login', () => {
  it('--device-code: shows a user code, polls until the person approves, stores key 0600 in a 0700 directory; admin commands then use it', async () => {
    const run = tessera(['login', '--device-code', '--server', t.cp.url, '--trust-bundle', bundle, '--ttl', '30m', '--json']);
    const userCode = await waitFor('the user code', () => /enter the code ([A-Z]{4}-[A-Z]{4})/.exec(run.out.stderr)?.[1], 20_000);
    expect(run.out.stderr).toContain(`${t.cp.url}/auth/device`);
    const look = await alice.post('/v1/login/device/lookup', { user_code: userCode });
    expect(look.status, look.text).toBe(200);
    expect((await alice.post('/v1/login/device/decide', { user_code: userCode, approve: true })).status).toBe(200);
    const r = await run.done;
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { username: string; spiffe_id: string; not_after: string; dir: string };
    expect(out).toMatchObject({ username: 'alice', spiffe_id: 'spiffe://tessera.test/user/alice', dir: join(home, 'login') });
    expect(Date.parse(out.not_after) - Date.now()).toBeLessThan(31 * 60_000);
    expect(statSync(join(home, 'login')).mode & 0o777).toBe(0o700);
    expect(statSync(join(home, 'login', 'key.pem')).mode & 0o777).toBe(0o600);
    expect(r.stdout + r.stderr).not.toContain('PRIVATE KEY');
    // An admin command with no credential flag: the login certificate (the audit names alice).
    const list = await tessera(['entry', 'list', '--json']).done;
    expect(list.status, list.stderr).toBe(0);
    const who = await tessera(['whoami', '--json']).done;
    expect(who.status, who.stderr).toBe(0);
    expect(JSON.parse(who.stdout)).toMatchObject({ kind: 'login', username: 'alice', groups: ['admins'], flow: 'device' });
    // An explicit --admin-dir wins over the login.
    const explicit = await tessera(['whoami', '--json', '--admin-dir', t.cp.adminDir]).done;
    expect(JSON.parse(explicit.stdout)).toMatchObject({ kind: 'admin-dir', admin_dir: t.cp.adminDir });
    const viaDir = await tessera(['entry', 'list', '--json', '--admin-dir', t.cp.adminDir]).done;
    expect(viaDir.status, viaDir.stderr).toBe(0);
    // logout: the server revokes it, the files go; then there is no credential here.
    const serial = JSON.parse(readFileSync(join(home, 'login', 'login.json'), 'utf8')).serial as string;
    const bye = await tessera(['logout', '--json']).done;
    expect(bye.status, bye.stderr).toBe(0);
    expect(JSON.parse(bye.stdout)).toMatchObject({ deleted: true, server: { revoked: 1 } });
    expect((await t.cp.store.login.getUserCert(serial))?.revokedReason).toBe('tessera logout');
    const none = await tessera(['entry', 'list', '--json']).done;
    expect(none.status).toBe(2);
    expect(JSON.parse(none.stdout).error.code).toBe('TESSERA_CREDENTIAL_MISSING');
  }, 60_000);

  it('the browser flow: one loopback redirect with the right state ends it; the code is redeemed with the verifier', async () => {
    const run = tessera(['login', '--no-open', '--server', t.cp.url, '--trust-bundle', bundle]);
    const url = new URL(await waitFor('the approval URL', () => /Approve this login in your browser: (\S+)/.exec(run.out.stderr)?.[1], 20_000));
    expect(url.origin + url.pathname).toBe(`${t.cp.url}/auth/cli`);
    const q = url.searchParams;
    expect(q.get('code_challenge_method')).toBe('S256');
    expect(q.get('redirect_uri')).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    // A request to the loopback without the state is ignored (404), the login goes on.
    expect(await get(`${q.get('redirect_uri')}?code=forged&state=wrong`)).toBe(404);
    const a = await alice.post('/v1/login/authorize', {
      redirect_uri: q.get('redirect_uri'), state: q.get('state'), code_challenge: q.get('code_challenge'), code_challenge_method: 'S256',
      key_thumbprint: q.get('key_thumbprint'), approve: true,
    });
    expect(a.status, a.text).toBe(200);
    expect(await get((a.json as { redirect: string }).redirect)).toBe(200);
    const r = await run.done;
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('signed in: alice');
    const who = await tessera(['whoami', '--json']).done;
    expect(JSON.parse(who.stdout)).toMatchObject({ username: 'alice', flow: 'browser' });
    // Expired on disk: refused with its own code rather than another credential used silently.
    const file = join(home, 'login', 'login.json');
    const info = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    writeFileSync(file, JSON.stringify({ ...info, not_after: new Date(Date.now() - 1000).toISOString() }));
    const expired = await tessera(['entry', 'list', '--json']).done;
    expect(expired.status).toBe(4);
    expect(JSON.parse(expired.stdout).error.code).toBe('TESSERA_CREDENTIAL_EXPIRED');
    writeFileSync(file, JSON.stringify(info));
    // logout --all: this certificate and the browser sessions.
    const bye = await tessera(['logout', '--all', '--json']).done;
    expect(JSON.parse(bye.stdout)).toMatchObject({ deleted: true, server: { certs_revoked: 1, sessions_ended: 1 } });
  }, 60_000);

  it('a denied browser login exits with TESSERA_LOGIN_DENIED', async () => {
    const run = tessera(['login', '--no-open', '--server', t.cp.url, '--trust-bundle', bundle, '--json']);
    const url = new URL(await waitFor('the approval URL', () => /Approve this login in your browser: (\S+)/.exec(run.out.stderr)?.[1], 20_000));
    const redirect = `${url.searchParams.get('redirect_uri')}?state=${url.searchParams.get('state')}&error=access_denied`;
    expect(await get(redirect)).toBe(200);
    const r = await run.done;
    expect(r.status).toBe(4);
    expect(JSON.parse(r.stdout).error.code).toBe('TESSERA_LOGIN_DENIED');
  }, 60_000);
});

function get(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}
