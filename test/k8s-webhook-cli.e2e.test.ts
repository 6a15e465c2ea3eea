/**
 * `tessera k8s webhook` as a real child process (the built CLI) against a real control plane: it
 * joins with its token (TESSERA_JOIN_TOKEN), uses the admin directory given, answers an
 * AdmissionReview from the API server's client certificate over HTTPS with a patch (and refuses a
 * caller without one), sets its MutatingWebhookConfiguration's caBundle through the Kubernetes API
 * stand-in of test/support/kube-api.ts (--kube-api, --kube-credentials-dir: no kube-apiserver runs
 * here), and stops on SIGTERM; bad flags (the caBundle ones included: no API URL, no service account
 * files) are refused with exit status 2 before the one-time token is spent; --no-patch-ca-bundle
 * skips them; `--help` documents the flags.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, freePort, runTessera, signalChild, waitFor } from './support/process.js';
import { startControlPlane, type TestControlPlane } from './support/server.js';
import { APISERVER_CN, makeClusterPki, type ClusterPki } from './support/k8s-pki.js';
import { startKubeApiStandIn, type KubeApiStandIn } from './support/kube-api.js';
import { parse } from 'yaml';
import { readFileSync } from 'node:fs';

const DNS = 'tessera-webhook.tessera.svc';
let t: TestControlPlane;
let dir: string;
let token: string;
let child: ChildProcess | undefined;
let pki: ClusterPki;
let kube: KubeApiStandIn;

beforeAll(async () => {
  t = await startControlPlane();
  dir = mkdtempSync(join(tmpdir(), 'tessera-k8s-cli-'));
  pki = makeClusterPki(join(dir, 'pki'));
  writeFileSync(join(dir, 'leaf.pem'), pki.apiserver.cert);
  kube = await startKubeApiStandIn(join(dir, 'kube'), parse(readFileSync('deploy/kubernetes/mutatingwebhookconfiguration.yaml', 'utf8')));
  const entry = await t.admin.call<{ id: string }>('POST', '/v1/entries', { spiffe_id: 'spiffe://tessera.test/k8s/tessera-webhook', selectors: [`dns:${DNS}`] });
  token = (await t.admin.call<{ token: string }>('POST', '/v1/tokens', { entry_id: entry.id })).token;
});

afterAll(async () => {
  await signalChild(child, 'SIGKILL');
  await kube?.close();
  await t?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const flags = (port: number): string[] => [
  '--server', t.cp.url, '--admin-dir', t.cp.adminDir, '--json', 'k8s', 'webhook', '--data-dir', join(dir, 'wh'), '--dns-name', DNS,
  '--namespaces', 'shop', '--id-template', 'spiffe://tessera.test/ns/{namespace}/sa/{serviceAccount}', '--sidecar-image', 'tessera:test',
  '--attribute', 'app=label:app', '--listen', `127.0.0.1:${port}`, '--trust-bundle', join(t.cp.adminDir, 'bundle.pem'),
  '--client-ca', pki.caFile, '--client-name', APISERVER_CN, '--kube-api', kube.url, '--kube-credentials-dir', kube.credentialsDir,
];

describe('tessera k8s webhook', () => {
  it('--help documents the flags', async () => {
    const r = await runTessera(['k8s', 'webhook', '--help']);
    expect(r.status).toBe(0);
    for (const f of ['--client-ca', '--client-name', '--namespaces', '--id-template', '--attribute', '--sidecar-image', '--dns-name', '--token-ttl', 'dns:', '--patch-ca-bundle', '--no-patch-ca-bundle', '--webhook-configuration', '--kube-api', '--kube-credentials-dir']) expect(r.stdout).toContain(f);
  });

  it('refuses bad flags with exit status 2, before the join token is spent', async () => {
    const port = await freePort();
    const bad: [string, string][] = [['--namespaces', 'Bad_NS'], ['--id-template', 'spiffe://tessera.test/{pod}'], ['--attribute', 'owner=label:x'], ['--token-ttl', '2h'], ['--dns-name', 'UPPER.svc'], ['--client-ca', join(dir, 'leaf.pem')], ['--client-name', ' '],
      ['--webhook-configuration', 'Not_A_Name'], ['--kube-api', 'http://127.0.0.1:1'], ['--patch-ca-bundle', 'maybe']];
    // In parallel: each is a process start of its own (nothing listens, the token is not spent).
    await Promise.all(bad.map(async ([flag, value]) => {
      const args = flags(port);
      const i = args.indexOf(flag);
      if (i < 0) args.push(flag, value);
      else args.splice(i, 2, flag, value);
      const r = await runTessera(args, { env: { TESSERA_JOIN_TOKEN: token }, timeoutMs: 40_000 });
      expect(r.status, `${flag} ${value}: ${r.stdout} ${r.stderr}`).toBe(2);
      expect(r.stdout, r.stderr).not.toBe("");
      expect(JSON.parse(r.stdout).error.code).toBe("TESSERA_CONFIG_INVALID");
    }));
    // No --client-ca at all: there is no unauthenticated mode.
    const args = flags(port);
    args.splice(args.indexOf('--client-ca'), 2);
    const r = await runTessera(args, { env: { TESSERA_JOIN_TOKEN: token }, timeoutMs: 20_000 });
    expect(r.status).not.toBe(0);
    expect(r.stdout + r.stderr).toContain('--client-ca');
  }, 60_000);

  it('caBundle upkeep: refused at start when not in a pod; --no-patch-ca-bundle looks for nothing', async () => {
    const port = await freePort();
    // caBundle upkeep on (the default) but not in a pod: no API URL, or no service account files.
    for (const [drop, extra, code] of [['--kube-api', [], 'TESSERA_CONFIG_INVALID'], ['--kube-credentials-dir', ['--kube-credentials-dir', join(dir, 'no-such-dir')], 'TESSERA_CREDENTIAL_MISSING']] as const) {
      const args = flags(port);
      args.splice(args.indexOf(drop), 2, ...extra);
      const r = await runTessera(args, { env: { TESSERA_JOIN_TOKEN: token, KUBERNETES_SERVICE_HOST: '', KUBERNETES_SERVICE_PORT: '' }, timeoutMs: 20_000 });
      expect(r.status, `${drop}: ${r.stdout} ${r.stderr}`).toBe(2);
      expect(JSON.parse(r.stdout).error).toMatchObject({ code, message: expect.stringContaining('--no-patch-ca-bundle') });
    }
    // --no-patch-ca-bundle: neither is looked for; it goes on to join (a made-up token, refused by the control plane).
    {
      const args = flags(port).filter((a, i, all) => !['--kube-api', '--kube-credentials-dir'].includes(a) && !['--kube-api', '--kube-credentials-dir'].includes(all[i - 1]!));
      const r = await runTessera([...args, '--no-patch-ca-bundle'], { env: { TESSERA_JOIN_TOKEN: 'made-up-token', KUBERNETES_SERVICE_HOST: '' }, timeoutMs: 20_000 });
      expect(r.status).not.toBe(0);
      expect(JSON.parse(r.stdout).error.code).toBe('TESSERA_TOKEN_INVALID');
    }
  }, 60_000);

  it('runs: joins, sets caBundle, answers an AdmissionReview with a patch, stops on SIGTERM', async () => {
    const port = await freePort();
    let out = '';
    child = spawn(process.execPath, [CLI, ...flags(port)], { env: { ...process.env, TESSERA_JOIN_TOKEN: token }, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
    await waitFor('webhook ready', () => {
      if (child!.exitCode !== null) throw new Error(`webhook exited: ${out}`);
      return out.includes('webhook ready');
    }, 20_000);
    expect(out).not.toContain(token);
    // caBundle: set to the trust bundle through the (stand-in) Kubernetes API.
    const bundle = Buffer.from(readFileSync(join(dir, 'wh', 'agent', 'bundle.pem'), 'utf8')).toString('base64');
    await waitFor('caBundle set', () => kube.object().webhooks.every((w: Record<string, any>) => w.clientConfig.caBundle === bundle), 10_000);
    await waitFor('caBundle logged', () => out.includes('caBundle set to the trust bundle'), 5000);
    expect(out).not.toContain(kube.token);
    const body = JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: {
      uid: 'cli-1', kind: { group: '', version: 'v1', kind: 'Pod' }, resource: { group: '', version: 'v1', resource: 'pods' }, operation: 'CREATE', namespace: 'shop',
      object: { metadata: { labels: { app: 'web' } }, spec: { securityContext: { runAsUser: 1000 }, containers: [{ name: 'web', image: 'web:1' }] } },
    } });
    const send = (client: boolean): Promise<Record<string, any>> => new Promise((resolve, reject) => {
      const req = request({
        host: '127.0.0.1', port, servername: DNS, path: '/mutate', method: 'POST', ca: t.adminTls.ca, agent: false, headers: { 'content-type': 'application/json' },
        ...(client ? { cert: pki.apiserver.cert, key: pki.apiserver.key } : {}),
      }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, ...JSON.parse(Buffer.concat(chunks).toString('utf8')) }));
      });
      req.on('error', reject);
      req.end(body);
    });
    expect(await send(false)).toMatchObject({ status: 401, error: { code: 'TESSERA_AUTH_REQUIRED' } });
    const answer = await send(true);
    expect(answer.response).toMatchObject({ uid: 'cli-1', allowed: true, patchType: 'JSONPatch' });
    const entry = await t.admin.call<{ attributes: Record<string, string> }>('GET', `/v1/entries/${encodeURIComponent('spiffe://tessera.test/ns/shop/sa/default')}`);
    expect(entry.attributes).toEqual({ app: 'web' });
    await signalChild(child, 'SIGTERM');
    expect(child.exitCode).toBe(0);
  }, 40_000);
});
