/**
 * Devices end to end with real processes: `tessera server` and the `tessera device ...` commands
 * (token create, enroll, run, show, list, revoke, renew, report) as child processes on 127.0.0.1.
 *
 * Checked: enrolment with a one-time token (reuse and expiry refused), the key file 0600 and never
 * sent (its secret is nowhere in the control plane's database), the device agent's signed posture
 * reports visible in `device show`, a report signed by another device's key and an altered report
 * refused, posture going stale once the agent stops, and a revoked device refused for renewal and
 * posture, listed in the signed bundle's revocation list, its agent stopping by itself.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { createPrivateKey } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ApiClient } from '../src/common/api-client.js';
import type { PolicyBundle } from '../src/core/policy/bundle.js';
import type { DeviceListResponse, DeviceShowResponse } from '../src/core/wire/devices.js';
import { deviceClient, loadDevice, signPostureReport } from '../src/device/device.js';
import { CLI, freePort, runTessera, ServerProcess, signalChild, waitFor } from './support/process.js';
import { rejectionCode } from './support/server.js';

const TD = 'tessera.test';
/** The server's --device-posture-rate-limit burst here (one report per 20 s after it). */
const POSTURE_BURST = 40;

describe('devices end to end (real processes)', () => {
  let dir: string;
  let server: ServerProcess;
  let admin: ApiClient;
  const children: ChildProcess[] = [];
  const env = (): NodeJS.ProcessEnv => ({ TESSERA_ADMIN_DIR: server.adminDir });
  const tessera = (args: string[]) => runTessera(args, { env: env() });

  async function tokenFor(name: string, extra: string[] = []): Promise<string> {
    const res = await tessera(['--json', 'device', 'token', 'create', '--name', name, '--owner', 'alice', '--attr', 'site=berlin', ...extra]);
    expect(res.status, res.stderr + res.stdout).toBe(0);
    return (JSON.parse(res.stdout) as { token: string }).token;
  }

  function enroll(token: string, dataDir: string) {
    return tessera(['--json', '--server', server.url, 'device', 'enroll', '--token', token, '--data-dir', dataDir, '--trust-bundle', join(server.dataDir, 'bundle.pem')]);
  }

  function deviceRun(dataDir: string, postureFile: string): { child: ChildProcess; out: () => string } {
    const child = spawn(process.execPath, [CLI, 'device', 'run', '--data-dir', dataDir, '--interval', '1s', '--posture-file', postureFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
    children.push(child);
    return { child, out: () => out };
  }

  async function show(id: string): Promise<DeviceShowResponse> {
    const res = await tessera(['--json', 'device', 'show', id]);
    expect(res.status, res.stderr).toBe(0);
    return JSON.parse(res.stdout) as DeviceShowResponse;
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-devices-e2e-'));
    server = new ServerProcess(join(dir, 'server'), await freePort(), ['--trust-domain', TD, '--device-posture-stale', '6s', '--device-posture-rate-limit', `0.05:${POSTURE_BURST}`]);
    await server.start();
    admin = server.admin();
  }, 60_000);

  afterAll(async () => {
    admin?.close();
    for (const c of children) await signalChild(c, 'SIGTERM');
    await server?.stop(false);
    rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it('enrols with a one-time token; the key is generated on the device, 0600, and never sent', async () => {
    const token = await tokenFor('lap-e2e');
    const dataDir = join(dir, 'lap-e2e');
    const res = await enroll(token, dataDir);
    expect(res.status, res.stderr).toBe(0);
    expect(JSON.parse(res.stdout)).toMatchObject({ spiffe_id: `spiffe://${TD}/device/lap-e2e`, device_id: 'lap-e2e' });
    expect(statSync(join(dataDir, 'device.key')).mode & 0o777).toBe(0o600);
    expect(statSync(join(dataDir, 'device.pem')).mode & 0o777).toBe(0o600);
    expect(statSync(dataDir).mode & 0o077).toBe(0);
    // The private scalar appears nowhere in what the control plane stored (database, WAL, audit).
    const d = createPrivateKey(readFileSync(join(dataDir, 'device.key'), 'utf8')).export({ format: 'jwk' }).d!;
    const secretForms = [d, Buffer.from(d, 'base64url').toString('hex'), Buffer.from(d, 'base64url').toString('base64')];
    for (const f of readdirSync(server.dataDir).filter((n) => n.startsWith('tessera.db'))) {
      const bytes = readFileSync(join(server.dataDir, f)).toString('latin1');
      for (const s of secretForms) expect(bytes.includes(s), f).toBe(false);
      expect(bytes.includes(Buffer.from(d, 'base64url').toString('latin1')), f).toBe(false);
    }
    // The token is single use: a second enrolment with it is refused (exit status 4).
    const again = await enroll(token, join(dir, 'lap-e2e-again'));
    expect(again.status).toBe(4);
    expect(again.stdout).toContain('TESSERA_TOKEN_INVALID');
  }, 60_000);

  it('refuses an expired token', async () => {
    const token = await tokenFor('lap-late', ['--ttl', '1s']);
    await new Promise((r) => setTimeout(r, 1500));
    const res = await enroll(token, join(dir, 'lap-late'));
    expect(res.status).toBe(4);
    expect(res.stdout).toContain('TESSERA_TOKEN_INVALID');
  }, 30_000);

  it('the device agent sends signed posture on a schedule: visible in device show; stale once the agent stops', async () => {
    const postureFile = join(dir, 'mdm.json');
    writeFileSync(postureFile, JSON.stringify({ disk_encrypted: true, screen_lock: true, firewall: true }));
    const agent = deviceRun(join(dir, 'lap-e2e'), postureFile);
    const fresh = await waitFor('a fresh posture', async () => {
      // Bare values in a posture file are observed at the file's modification time: an MDM keeps
      // rewriting it, or its facts drop out of context.device after the staleness threshold.
      utimesSync(postureFile, new Date(), new Date());
      const s = await show('lap-e2e');
      return s.posture.posture_state === 'fresh' && s.history.length >= 2 && 'disk_encrypted' in s.posture ? s : undefined;
    }, 20_000, 250);
    expect(fresh.posture).toMatchObject({ enrolled: true, disk_encrypted: true, screen_lock: true, firewall: true, os: 'linux' });
    expect(fresh.report?.facts.agent_version?.value).toMatch(/^\d+\.\d+\.\d+/);
    expect(fresh.last_report_at).toBeDefined();
    // Human output names the state and the facts.
    const human = await tessera(['device', 'show', 'lap-e2e']);
    expect(human.stdout).toMatch(/lap-e2e\s+alice\s+live\s+fresh/);
    expect(human.stdout).toMatch(/disk_encrypted\s+true/);
    await signalChild(agent.child, 'SIGTERM');
    expect(agent.child.exitCode).toBe(0);
    const stale = await waitFor('stale posture', async () => {
      const s = await show('lap-e2e');
      return s.posture.posture_state === 'stale' ? s : undefined;
    }, 20_000, 250);
    expect('disk_encrypted' in stale.posture).toBe(false);
    const list = await tessera(['--json', 'device', 'list']);
    expect((JSON.parse(list.stdout) as DeviceListResponse).devices.find((x) => x.device_id === 'lap-e2e')?.posture.posture_state).toBe('stale');
  }, 60_000);

  it('refuses a report signed by another device\'s key and an altered report', async () => {
    const other = join(dir, 'lap-other');
    expect((await enroll(await tokenFor('lap-other'), other)).status).toBe(0);
    const a = loadDevice(join(dir, 'lap-e2e'));
    const b = loadDevice(other);
    const client = deviceClient(a, server.url);
    try {
      const now = Date.now();
      const facts = { disk_encrypted: { value: true, observedAt: now } };
      const forged = signPostureReport(b.key, { deviceId: a.state.spiffeId, reportedAt: now, facts });
      expect(await rejectionCode(client.call('POST', '/v1/device/posture', forged))).toBe('TESSERA_POSTURE_INVALID');
      const signed = signPostureReport(a.key, { deviceId: a.state.spiffeId, reportedAt: now, facts: { disk_encrypted: { value: false, observedAt: now } } });
      const altered = { ...signed, report: { ...signed.report, facts: { disk_encrypted: { value: true, observed_at: signed.report.facts.disk_encrypted!.observed_at } } } };
      expect(await rejectionCode(client.call('POST', '/v1/device/posture', altered))).toBe('TESSERA_POSTURE_INVALID');
    } finally {
      client.close();
    }
    // One report on the command line goes through.
    const once = await tessera(['--json', 'device', 'report', '--data-dir', other]);
    expect(once.status, once.stderr).toBe(0);
    expect(JSON.parse(once.stdout)).toMatchObject({ accepted: true, posture: { posture_state: 'fresh' } });
  }, 60_000);

  it('--device-posture-rate-limit: a device gets its burst, then 429 TESSERA_RATE_LIMITED; a bad value stops the server with exit 2', async () => {
    const dataDir = join(dir, 'lap-chatty');
    expect((await enroll(await tokenFor('lap-chatty'), dataDir)).status).toBe(0);
    const d = loadDevice(dataDir);
    const client = deviceClient(d, server.url);
    const outcomes: string[] = [];
    try {
      const t0 = Date.now();
      for (let i = 0; i < POSTURE_BURST + 3; i++) {
        const report = signPostureReport(d.key, { deviceId: d.state.spiffeId, reportedAt: t0 + i, facts: { firewall: { value: true, observedAt: t0 } } });
        outcomes.push(await client.call('POST', '/v1/device/posture', report).then(() => 'ok', (err: unknown) => (err as { code: string }).code));
      }
    } finally {
      client.close();
    }
    expect(outcomes).toEqual([...Array<string>(POSTURE_BURST).fill('ok'), ...Array<string>(3).fill('TESSERA_RATE_LIMITED')]);
    const bad = ['0', '1:0', 'fast'];
    const runs = await Promise.all(bad.map((v) => runTessera(['server', '--data-dir', join(dir, 'never'), '--listen', '127.0.0.1:0', '--device-posture-rate-limit', v])));
    expect(runs.map((r) => [r.status, /TESSERA_CONFIG_INVALID/.test(r.stderr)])).toEqual(bad.map(() => [2, true]));
  }, 60_000);

  it('a revoked device is refused for renewal and posture, is on the bundle\'s revocation list, and its agent stops', async () => {
    const dataDir = join(dir, 'lap-other');
    expect((await tessera(['device', 'renew', '--data-dir', dataDir])).status).toBe(0);
    const postureFile = join(dir, 'mdm.json');
    const agent = deviceRun(dataDir, postureFile);
    await waitFor('the agent\'s first report', () => agent.out().includes('posture reported'), 20_000);
    const serial = loadDevice(dataDir).serial;
    const revoke = await tessera(['--json', 'device', 'revoke', 'lap-other', '--reason', 'lost at the airport']);
    expect(revoke.status, revoke.stderr).toBe(0);
    expect(JSON.parse(revoke.stdout)).toMatchObject({ state: 'revoked', revoked_reason: 'lost at the airport' });
    const renew = await tessera(['device', 'renew', '--data-dir', dataDir]);
    expect(renew.status).toBe(1);
    expect(renew.stderr).toContain('TESSERA_IDENTITY_REVOKED');
    const report = await tessera(['device', 'report', '--data-dir', dataDir]);
    expect(report.stderr).toContain('TESSERA_IDENTITY_REVOKED');
    // The device agent stops by itself at its next round.
    await waitFor('the revoked agent to exit', () => agent.child.exitCode !== null, 15_000);
    expect(agent.child.exitCode).toBe(1);
    expect(agent.out()).toContain('TESSERA_IDENTITY_REVOKED');
    // Every agent learns it from the signed bundle.
    const res = await admin.call<{ bundle: { payload: string } }>('GET', '/v1/policy/bundle');
    const bundle = JSON.parse(Buffer.from(res.bundle.payload, 'base64url').toString('utf8')) as PolicyBundle;
    const listed = bundle.revoked.find((r) => r.id === `spiffe://${TD}/device/lap-other`);
    expect(listed?.reason).toBe('lost at the airport');
    expect(listed?.serials).toContain(serial);
    const list = await tessera(['device', 'list']);
    expect(list.stdout).toMatch(/lap-other\s+alice\s+revoked/);
  }, 60_000);
});
