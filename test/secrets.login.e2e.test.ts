/**
 * A person provisions key servers with a `tessera login` certificate (no long-lived admin key): a
 * real control plane, two `tessera keyserver` child processes, the real CLI. The CLI asks the
 * control plane for a provisioning authorization per phase (the admin policy decides, writes need
 * fresh MFA) and presents it to each key server beside its certificate. Then a workload unseals.
 * A person without the admin right, and one whose MFA is stale, are refused with the admin
 * policy's codes and nothing reaches the key servers; a person's certificate without an
 * authorization, or with one for another policy, is refused by the key server itself.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../src/agent/agent.js';
import { silentLogger } from '../src/core/log.js';
import { PROVISION_AUTHORIZATION_HEADER } from '../src/core/secrets/provision-authorization.js';
import type { Browser } from './support/http-browser.js';
import { PeopleDriver, TestClock } from './support/people.js';
import { CLI, freePort, waitFor } from './support/process.js';
import { startControlPlane, type TestControlPlane } from './support/server.js';

const TD = 'tessera.test';
const KS = [1, 2].map((i) => `spiffe://${TD}/keyserver/${i}`);
const PCI = `spiffe://${TD}/shop/orders`;
const PLAIN = 'the-e2e-secret-value';
const CEDAR = `
permit (
  principal,
  action == Tessera::Action::"secret:unseal",
  resource == Tessera::Workload::"spiffe://${TD}/tessera/secret/db"
) when { principal has compliance && principal.compliance == "pci" };
`;

interface Run { status: number | null; stdout: string; stderr: string }

let t: TestControlPlane;
let clock: TestClock;
let people: PeopleDriver;
let dir: string;
let bundle: string;
const ks: { child: ChildProcess; url: string; out: string[] }[] = [];
const children: ChildProcess[] = [];
const agents: Agent[] = [];

/** The CLI as a person runs it: TESSERA_HOME holds their login, no admin directory anywhere. */
function tessera(home: string, args: string[]): { out: { stdout: string; stderr: string }; done: Promise<Run> } {
  const env: NodeJS.ProcessEnv = { ...process.env, TESSERA_HOME: home };
  for (const k of ['TESSERA_ADMIN_DIR', 'TESSERA_SERVER', 'DISPLAY', 'WAYLAND_DISPLAY']) delete env[k];
  const child = spawn(process.execPath, [CLI, ...args], { cwd: home, env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  const out = { stdout: '', stderr: '' };
  child.stdout!.on('data', (d: Buffer) => { out.stdout += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { out.stderr += d.toString(); });
  return { out, done: new Promise<Run>((resolve) => child.on('close', (status) => resolve({ status, ...out }))) };
}

/** `tessera login --device-code` for a person whose browser is signed in; returns their TESSERA_HOME. */
async function login(name: string, browser: Browser): Promise<string> {
  const home = mkdtempSync(join(dir, `home-${name}-`));
  const run = tessera(home, ['login', '--device-code', '--server', t.cp.url, '--trust-bundle', bundle, '--ttl', '2h', '--json']);
  const userCode = await waitFor('the user code', () => /enter the code ([A-Z]{4}-[A-Z]{4})/.exec(run.out.stderr)?.[1], 20_000);
  expect((await browser.post('/v1/login/device/lookup', { user_code: userCode })).status).toBe(200);
  expect((await browser.post('/v1/login/device/decide', { user_code: userCode, approve: true })).status).toBe(200);
  const r = await run.done;
  expect(r.status, r.stderr).toBe(0);
  return home;
}

const servers = (): string => ks.map((k, i) => `${k.url}@${KS[i]!}`).join(',');
const code = (r: Run): string => (JSON.parse(r.stdout) as { error: { code: string } }).error.code;

/** A raw request to a key server with the credential in `home`'s login directory. */
function keyServerCall(home: string, url: string, method: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number; code?: string }> {
  const l = join(home, 'login');
  return new Promise((resolve, reject) => {
    const req = httpsRequest(new URL(path, url), {
      method, headers, ca: readFileSync(join(l, 'bundle.pem')), cert: readFileSync(join(l, 'cert.pem')), key: readFileSync(join(l, 'key.pem')),
      checkServerIdentity: () => undefined,
    }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => { text += d.toString(); });
      res.on('end', () => {
        let c: string | undefined;
        try { c = (JSON.parse(text) as { error?: { code?: string } }).error?.code; } catch { c = undefined; }
        resolve({ status: res.statusCode ?? 0, ...(c ? { code: c } : {}) });
      });
    });
    req.on('error', reject);
    req.end();
  });
}

beforeAll(async () => {
  clock = new TestClock();
  t = await startControlPlane({ trustDomain: TD, people: { now: clock.now } });
  people = new PeopleDriver(t, clock);
  dir = mkdtempSync(join(tmpdir(), 'tessera-secrets-login-'));
  bundle = join(dir, 'bundle.pem');
  writeFileSync(bundle, t.adminTls.ca);
  for (const id of KS) await t.admin.call('POST', '/v1/entries', { spiffe_id: id, attributes: { app: 'keyserver' } });
  await t.admin.call('POST', '/v1/entries', { spiffe_id: PCI, attributes: { app: 'orders', compliance: 'pci' } });
  await t.admin.call('POST', '/v1/policies', { files: { 'secrets.cedar': CEDAR }, reason: 'pci may unseal db' });
  for (let i = 0; i < KS.length; i++) {
    const port = await freePort();
    const { token } = await t.admin.call<{ token: string }>('POST', '/v1/tokens', { entry_id: KS[i], ttl_seconds: 120 });
    const child = spawn(process.execPath, [CLI, '--server', t.cp.url, 'keyserver', '--data-dir', join(dir, `ks${i + 1}`), '--listen', `127.0.0.1:${port}`,
      '--trust-bundle', join(t.dataDir, 'bundle.pem'), '--no-telemetry'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TESSERA_JOIN_TOKEN: token } });
    const out: string[] = [];
    child.stdout!.on('data', (d: Buffer) => out.push(d.toString()));
    child.stderr!.on('data', (d: Buffer) => out.push(d.toString()));
    ks.push({ child, url: `https://127.0.0.1:${port}`, out });
    await waitFor('the key server to be ready', () => {
      if (child.exitCode !== null) throw new Error(`key server exited: ${out.join('')}`);
      return out.join('').includes('key server ready');
    }, 30_000);
  }
}, 90_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  for (const k of ks) {
    if (k.child.exitCode === null) {
      k.child.kill('SIGTERM');
      await new Promise((r) => k.child.once('close', r));
    }
  }
  for (const a of agents) await a.stop().catch(() => {});
  await t?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('secret policies by a person signed in with tessera login', () => {
  let aliceHome: string;
  let aliceBrowser: Browser;

  it('creates a 2-of-2 policy on real key server processes with a login certificate; a workload then unseals', async () => {
    const { browser } = await people.enrol('alice', ['admins']);
    aliceBrowser = browser;
    aliceHome = await login('alice', browser);
    const r = await tessera(aliceHome, ['--json', 'secret', 'policy', 'create', 'db', '--threshold', '2', '--servers', servers()]).done;
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { t: number }).t).toBe(2);
    // Both sides audited: the control plane's authorization (actor alice) and each key server's DKG commit under it.
    const recs = (await t.admin.call<{ records: { action: string; outcome: string; actor: string; detail: Record<string, unknown> }[] }>('GET', '/v1/audit?action=secret.provision.authorize')).records;
    const granted = recs.filter((x) => x.outcome === 'success' && x.actor === `spiffe://${TD}/user/alice`);
    expect(granted.length).toBeGreaterThan(0);
    const jti = String(granted[0]!.detail.jti);
    for (const k of ks) {
      await waitFor('the key server audit line', () => k.out.join('').split('\n').some((l) => l.includes('keyserver audit') && l.includes('secret:dkg-commit') && l.includes(`spiffe://${TD}/user/alice`) && l.includes(jti)), 5_000);
    }

    // Seal with the login credential, unseal as the pci workload.
    const plain = join(dir, 'plain.txt');
    writeFileSync(plain, PLAIN);
    const sealed = join(dir, 'db.sealed');
    const s = await tessera(aliceHome, ['secret', 'seal', '--policy', 'db', '--in', plain, '--out', sealed]).done;
    expect(s.status, s.stderr).toBe(0);
    const { token } = await t.admin.call<{ token: string }>('POST', '/v1/tokens', { entry_id: PCI, ttl_seconds: 120 });
    const agent = new Agent({ serverUrl: t.cp.url, dataDir: join(dir, 'pci'), log: silentLogger, watchSeconds: 5, trustBundleFile: join(t.dataDir, 'bundle.pem'), joinToken: token });
    agents.push(agent);
    await agent.start();
    const u = await tessera(aliceHome, ['secret', 'unseal', '--agent-dir', join(dir, 'pci'), '--in', sealed]).done;
    expect(u.status, u.stderr).toBe(0);
    expect(u.stdout).toBe(PLAIN);

    // A refresh (list, prepare, publish, commit) and a rotation work the same way.
    const f = await tessera(aliceHome, ['--json', 'secret', 'policy', 'refresh', 'db']).done;
    expect(f.status, f.stdout + f.stderr).toBe(0);
    const u2 = await tessera(aliceHome, ['secret', 'unseal', '--agent-dir', join(dir, 'pci'), '--in', sealed]).done;
    expect(u2.stdout).toBe(PLAIN);
    // A reshare (its share lists read first, under an authorization of their own) and a later commit too.
    const rs = await tessera(aliceHome, ['--json', 'secret', 'policy', 'reshare', 'db', '--threshold', '2', '--servers', servers()]).done;
    expect(rs.status, rs.stdout + rs.stderr).toBe(0);
    const c = await tessera(aliceHome, ['--json', 'secret', 'policy', 'commit', 'db']).done;
    expect(c.status, c.stdout + c.stderr).toBe(0);
    expect(JSON.parse(c.stdout)).toMatchObject({ generation: 3, committed: [], failed: [] });
    const u3 = await tessera(aliceHome, ['secret', 'unseal', '--agent-dir', join(dir, 'pci'), '--in', sealed]).done;
    expect(u3.stdout).toBe(PLAIN);
  }, 120_000);

  it('the key server refuses a login certificate without an authorization, or with one for another policy', async () => {
    const none = await keyServerCall(aliceHome, ks[0]!.url, 'DELETE', '/v1/shares/db/1');
    expect(none).toEqual({ status: 403, code: 'TESSERA_FORBIDDEN' });
    const list = await keyServerCall(aliceHome, ks[0]!.url, 'GET', '/v1/shares');
    expect(list).toEqual({ status: 403, code: 'TESSERA_FORBIDDEN' });
    // Ask for one to retire "other" epoch 1 and present it to delete db epoch 1: refused, and db still opens.
    const a = await tessera(aliceHome, ['--json', 'secret', 'policy', 'list']).done;
    expect(a.status, a.stderr).toBe(0);
    const l = join(aliceHome, 'login');
    const res = await new Promise<{ authorization: string }>((resolve, reject) => {
      const body = JSON.stringify({ epoch: 1, op: 'retire', key_servers: KS });
      const req = httpsRequest(new URL('/v1/secret-policies/other/provision-authorization', t.cp.url), {
        method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
        ca: readFileSync(join(l, 'bundle.pem')), cert: readFileSync(join(l, 'cert.pem')), key: readFileSync(join(l, 'key.pem')), checkServerIdentity: () => undefined,
      }, (r) => {
        let text = '';
        r.on('data', (d: Buffer) => { text += d.toString(); });
        r.on('end', () => (r.statusCode === 200 ? resolve(JSON.parse(text) as { authorization: string }) : reject(new Error(`${r.statusCode} ${text}`))));
      });
      req.on('error', reject);
      req.end(body);
    });
    const wrong = await keyServerCall(aliceHome, ks[0]!.url, 'DELETE', '/v1/shares/db/1', { [PROVISION_AUTHORIZATION_HEADER]: res.authorization });
    expect(wrong).toEqual({ status: 403, code: 'TESSERA_PROVISION_AUTHORIZATION_INVALID' });
    // A console session (no certificate to bind to) gets none, even with the admin right and fresh MFA.
    const viaSession = await aliceBrowser.post('/v1/secret-policies/db/provision-authorization', { epoch: 1, op: 'retire', key_servers: KS });
    expect(viaSession.status, viaSession.text).toBe(403);
    expect((viaSession.json as { error: { code: string } }).error.code).toBe('TESSERA_FORBIDDEN');
    const garbage = await keyServerCall(aliceHome, ks[0]!.url, 'DELETE', '/v1/shares/db/1', { [PROVISION_AUTHORIZATION_HEADER]: 'AAAA' });
    expect(garbage).toEqual({ status: 403, code: 'TESSERA_PROVISION_AUTHORIZATION_INVALID' });
    const u = await tessera(aliceHome, ['secret', 'unseal', '--agent-dir', join(dir, 'pci'), '--in', join(dir, 'db.sealed')]).done;
    expect(u.stdout).toBe(PLAIN);
  }, 60_000);

  it('a person without the admin right is refused by the admin policy (TESSERA_FORBIDDEN); nothing reaches the key servers', async () => {
    const { browser } = await people.enrol('bob', ['staff']);
    const home = await login('bob', browser);
    const before = ks.map((k) => k.out.join('').split('\n').filter((x) => x.includes('keyserver audit')).length);
    const r = await tessera(home, ['--json', 'secret', 'policy', 'create', 'bobs', '--threshold', '2', '--servers', servers()]).done;
    expect(r.status).not.toBe(0);
    expect(code(r), r.stdout).toBe('TESSERA_FORBIDDEN');
    expect(ks.map((k) => k.out.join('').split('\n').filter((x) => x.includes('keyserver audit')).length)).toEqual(before);
  }, 60_000);

  it('a person whose MFA is stale is refused with TESSERA_MFA_REQUIRED before any key server is asked', async () => {
    // Carol signs in (passkey + TOTP) 30 minutes ago by the people clock: older than --admin-mfa-max-age (15m).
    clock.t = Date.now() - 30 * 60_000;
    const { browser } = await people.enrol('carol', ['admins']);
    const home = await login('carol', browser);
    const r = await tessera(home, ['--json', 'secret', 'policy', 'create', 'carols', '--threshold', '2', '--servers', servers()]).done;
    expect(r.status).not.toBe(0);
    expect(code(r)).toBe('TESSERA_MFA_REQUIRED');
    const recs = (await t.admin.call<{ records: { action: string; outcome: string; actor: string }[] }>('GET', '/v1/audit?action=secret.provision.authorize')).records;
    expect(recs.some((x) => x.actor === `spiffe://${TD}/user/carol` && x.outcome !== 'success')).toBe(true);
  }, 60_000);
});
