/**
 * `tessera gateway run` as a real child process (the CLI from dist/): it joins with a one-time token,
 * serves a route to a small app, forwards a signed-in person's request with an assertion the apps'
 * verifier accepts (against the JWKS the gateway serves), serves Prometheus metrics on
 * `--metrics-listen` (requests by route and outcome, decision cache, latency, session checks), and
 * stops cleanly on SIGTERM (exit status 0, both ports closed).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { IncomingHttpHeaders } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enrollDevice, sendPosture } from '../src/device/device.js';
import { createAssertionVerifier } from '../src/gateway/verify.js';
import { startHttpApp } from './support/fabric.js';
import { gatewayCert, signedInBrowser, type PeopleBrowser } from './support/gateway.js';
import { CLI, freePort, signalChild, waitFor } from './support/process.js';
import { applyPolicy, startControlPlane, type TestControlPlane } from './support/server.js';

const TD = 'tessera.test';
const GATEWAY_ID = `spiffe://${TD}/gateway/proc`;
const POLICY = `
@id("wiki-eng")
permit (principal in Tessera::Group::"eng", action == Tessera::Action::"gateway:request", resource == Tessera::App::"wiki");
@id("vault-fresh-mfa")
@stepup("60")
permit (principal in Tessera::Group::"eng", action == Tessera::Action::"gateway:request", resource == Tessera::App::"vault");
@id("lab-fresh-device")
permit (principal in Tessera::Group::"eng", action == Tessera::Action::"gateway:request", resource == Tessera::App::"lab")
when { context.device.enrolled && context.device.posture_state == "fresh" && context.device has posture_age_seconds && context.device.posture_age_seconds < 600 };
`;
/** A device's posture turns stale this long after its report (the control plane's --device-posture-stale). */
const STALE_MS = 6000;

let t: TestControlPlane;
let dir: string;
let port: number;
let metricsPort: number;
let ca: string;
let app: { port: number; close(): Promise<void> };
let child: ChildProcess | undefined;
let output = '';
let joinToken = '';
const seen: IncomingHttpHeaders[] = [];
const wiki = (path = '/'): string => `https://wiki.localhost:${port}${path}`;

async function scrape(): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
  expect(res.status).toBe(200);
  return res.text();
}

/** The value of one sample (`name{labels}`), 0 when absent. */
function sample(text: string, name: string, labels = ''): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels === '' ? '' : `{${labels}}`} `));
  return line === undefined ? 0 : Number(line.split(' ')[1]);
}

function refused(p: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(p, '127.0.0.1');
    s.once('connect', () => { s.destroy(); resolve(false); });
    s.once('error', () => resolve(true));
  });
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tessera-gateway-proc-'));
  t = await startControlPlane({ devices: { postureStaleMs: STALE_MS } });
  [port, metricsPort] = [await freePort(), await freePort()];
  const cert = gatewayCert(['wiki.localhost']);
  ca = `${t.adminTls.ca}\n${cert.caPem}`;
  writeFileSync(join(dir, 'gw.pem'), cert.certPem);
  writeFileSync(join(dir, 'gw.key'), cert.keyPem, { mode: 0o600 });
  app = await startHttpApp((req, res) => {
    seen.push(req.headers);
    req.resume();
    res.end(`app ${req.url}`);
  });
  await applyPolicy(t.admin, { 'gateway.cedar': POLICY });
  await t.admin.call('POST', '/v1/users', { username: 'ana', groups: ['eng'] });
  await t.admin.call('POST', '/v1/users', { username: 'bob', groups: ['sales'] });
  const entry = await t.admin.call<{ id: string }>('POST', '/v1/entries', { spiffe_id: GATEWAY_ID });
  const { token } = await t.admin.call<{ token: string }>('POST', '/v1/tokens', { entry_id: entry.id });
  joinToken = token;
  await t.admin.call('POST', '/v1/gateways', { name: 'proc', spiffe_id: GATEWAY_ID, urls: [`https://wiki.localhost:${port}`] });
  const upstream = `http://127.0.0.1:${app.port}`;
  child = spawn(process.execPath, [
    CLI, '--server', t.cp.url, 'gateway', 'run', '--name', 'proc', '--data-dir', join(dir, 'gw'), '--trust-bundle', join(t.cp.adminDir, 'bundle.pem'),
    '--listen', `127.0.0.1:${port}`, '--tls-cert', join(dir, 'gw.pem'), '--tls-key', join(dir, 'gw.key'),
    '--route', `wiki.localhost=${upstream}`, '--route', `vault:wiki.localhost/vault=${upstream}`, '--route', `lab:wiki.localhost/lab=${upstream}`,
    '--session-check', '1s', '--metrics-listen', `127.0.0.1:${metricsPort}`, '--log-level', 'info',
  ], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TESSERA_JOIN_TOKEN: token } });
  child.stdout!.on('data', (d: Buffer) => { output += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { output += d.toString(); });
  await waitFor('the gateway process to be ready', () => {
    if (child!.exitCode !== null) throw new Error(`tessera gateway run exited: ${output}`);
    return output.includes('gateway ready');
  }, 30_000, 100);
  // The signed bundle with the gateway policy reaches it (the decision metrics show the version).
  const version = (await t.admin.call<{ version: number }>('GET', '/v1/policy/bundle')).version;
  await waitFor('the gateway holds the policy', async () => sample(await scrape(), 'tessera_policy_bundle_version') >= version, 20_000, 200);
}, 60_000);

afterAll(async () => {
  await signalChild(child, 'SIGKILL');
  await app?.close();
  await t?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('tessera gateway run (a child process)', () => {
  let ana: PeopleBrowser;

  it('joined with the token: a signed-in request reaches the app with an assertion the verifier accepts', async () => {
    // The token came through $TESSERA_JOIN_TOKEN and is never logged.
    expect(joinToken.length).toBeGreaterThan(16);
    expect(output).not.toContain(joinToken);
    expect(output).toContain(GATEWAY_ID);
    ana = await signedInBrowser(t, ca, 'ana');
    const hops = await ana.navigate(wiki('/hello'));
    expect(hops.map((h) => h.status)).toEqual([303, 303, 303, 200]);
    expect(hops[hops.length - 1]!.text).toBe('app /hello');
    const jwks = JSON.parse((await ana.fetch(wiki('/.well-known/jwks.json'))).text) as never;
    const verify = createAssertionVerifier({ jwks, issuer: GATEWAY_ID, audience: `spiffe://${TD}/tessera/gateway/proc/app/wiki` });
    const claims = await verify(seen[seen.length - 1]!['x-tessera-user-assertion']);
    expect(claims).toMatchObject({ sub: `spiffe://${TD}/user/ana`, username: 'ana', groups: ['eng'] });
  }, 30_000);

  it('--metrics-listen: requests by route and outcome, decision cache hits, latency, session checks', async () => {
    // Same path three times: within one minute (the decision's time granularity) the later ones hit the cache.
    for (let i = 0; i < 3; i++) expect((await ana.fetch(wiki('/same'))).status).toBe(200);
    const bob = await signedInBrowser(t, ca, 'bob');
    const denied = await bob.navigate(wiki('/'));
    expect(denied[denied.length - 1]!.status).toBe(403);
    // The @stepup route with a link session (no MFA): sent to step up.
    const stepUp = await ana.fetch(wiki('/vault/x'));
    expect(stepUp.status).toBe(303);
    expect(new URL(stepUp.headers.location as string).searchParams.get('step_up')).toBe('1');
    // A session check against the control plane once --session-check (1 s) has passed.
    await new Promise((r) => setTimeout(r, 1200));
    expect((await ana.fetch(wiki('/later'))).status).toBe(200);
    const m = await scrape();
    expect(sample(m, 'tessera_gateway_requests_total', 'route="wiki",outcome="allowed"')).toBeGreaterThanOrEqual(5);
    // ana's and bob's first requests: sent to sign in.
    expect(sample(m, 'tessera_gateway_requests_total', 'route="wiki",outcome="unauthenticated"')).toBe(2);
    expect(sample(m, 'tessera_gateway_requests_total', 'route="wiki",outcome="denied"')).toBe(1);
    expect(sample(m, 'tessera_gateway_requests_total', 'route="vault",outcome="step_up"')).toBe(1);
    expect(sample(m, 'tessera_gateway_decision_cache_total', 'result="hit"')).toBeGreaterThanOrEqual(1);
    expect(sample(m, 'tessera_gateway_decision_cache_total', 'result="miss"')).toBeGreaterThanOrEqual(1);
    expect(sample(m, 'tessera_gateway_session_checks_total', 'result="ok"')).toBeGreaterThanOrEqual(1);
    expect(sample(m, 'tessera_gateway_request_duration_seconds_count', 'outcome="allowed"')).toBe(sample(m, 'tessera_gateway_requests_total', 'route="wiki",outcome="allowed"'));
    expect(sample(m, 'tessera_svid_time_to_expiry_seconds')).toBeGreaterThan(0);
    // Nothing secret in the exposition: no cookie, no assertion.
    expect(m).not.toMatch(/__Host-tessera|eyJ/);
  }, 30_000);

  it('the decision cache hits across seconds with a device (posture age by threshold class), and denies once the posture turns stale', async () => {
    const tok = await t.admin.call<{ token: string }>('POST', '/v1/devices/tokens', { device_id: 'lap-9', owner: 'ana' });
    const device = await enrollDevice({ serverUrl: t.cp.url, token: tok.token, dataDir: join(dir, 'lap-9'), trustBundlePem: t.adminTls.ca });
    const cert = { cert: device.certPem, key: device.key.export({ format: 'pem', type: 'pkcs8' }) as string };
    // The decision's `time` is rounded to the minute: keep the next seconds inside one minute.
    if (new Date().getUTCSeconds() > 45) await new Promise((r) => setTimeout(r, (61 - new Date().getUTCSeconds()) * 1000));
    await sendPosture(device, { os: { value: 'linux', observedAt: Date.now() } });
    const hits = async (): Promise<number> => sample(await scrape(), 'tessera_gateway_decision_cache_total', 'result="hit"');
    expect((await ana.fetch(wiki('/lab/a'), cert)).status).toBe(200);
    const before = await hits();
    // Two more requests, each in a later second (the posture age grew): answered from the cache.
    for (let i = 0; i < 2; i++) {
      await new Promise((r) => setTimeout(r, 1100));
      expect((await ana.fetch(wiki('/lab/a'), cert)).status).toBe(200);
    }
    expect(await hits()).toBe(before + 2);
    // No new report: past STALE_MS (plus the gateway's 5 s posture cache) the posture is stale and the
    // same request is denied; the cached allow of the fresh posture is never used for it.
    await waitFor('the stale posture denied', async () => (await ana.fetch(wiki('/lab/a'), cert)).status === 403, STALE_MS + 15_000, 250);
    expect((await ana.fetch(wiki('/lab/a'), cert)).status).toBe(403);
  }, 40_000);

  it('SIGTERM stops it cleanly: exit status 0, the HTTPS and metrics ports closed', async () => {
    const exited = new Promise<number | null>((resolve) => child!.once('exit', (code) => resolve(code)));
    child!.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(await refused(port)).toBe(true);
    expect(await refused(metricsPort)).toBe(true);
  }, 20_000);
});
