/**
 * The webhook keeps its MutatingWebhookConfiguration's caBundle in step with the Tessera trust
 * bundle (src/k8s/cabundle.ts), end to end: a real control plane (SQLite, HTTPS on 127.0.0.1), the
 * real webhook node (startWebhookNode, its own agent joined with a token, its SVID served over
 * HTTPS) and, for the Kubernetes API, a STAND-IN (test/support/kube-api.ts): no kube-apiserver can
 * run here. The stand-in is an HTTPS server on 127.0.0.1 with its own CA (written with a token file
 * to a temporary "serviceaccount" directory the webhook reads as in a pod) holding the object of
 * deploy/kubernetes/mutatingwebhookconfiguration.yaml; it serves GET and JSON-Patch PATCH with
 * resourceVersion semantics (a failed `test` → 422, a write race → 409), checks the bearer token
 * and validates every patched object against the kubernetes-models schema.
 *
 * Shown: at start caBundle = base64(the agent's trust bundle) and the webhook's certificate verifies
 * against it by the Service's DNS name; nothing is written when nothing changed; a concurrent change
 * (422 from the test op, 409) is read again and not overwritten; a wrong token (401) and an API that
 * is down are retried and logged without crashing and without the token in any log line, and the
 * token file is read again on each call; an API server certificate that does not chain to ca.crt is
 * refused before any request is sent; a CA rotation puts the prepared CA into caBundle before it
 * is activated, and after activation the webhook's renewed SVID (signed by the new CA) verifies
 * against the caBundle the stand-in holds, where the caBundle of before the rotation refuses it.
 */
import { X509Certificate } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { get as request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { ApiClient } from '../src/common/api-client.js';
import { createLogger } from '../src/core/log.js';
import { pemDecodeAll } from '../src/core/x509.js';
import { checkKubeCredentials, KubeClient, kubeApiUrl } from '../src/k8s/cabundle.js';
import type { InjectConfig } from '../src/k8s/inject.js';
import { startWebhookNode, type WebhookNode } from '../src/k8s/node.js';
import { APISERVER_CN, makeClusterPki } from './support/k8s-pki.js';
import { startKubeApiStandIn, type KubeApiStandIn } from './support/kube-api.js';
import { waitFor } from './support/process.js';
import { startControlPlane, type TestControlPlane } from './support/server.js';

const TD = 'tessera.test';
const DNS = 'tessera-webhook.tessera.svc';
const INJECT: InjectConfig = {
  idTemplate: `spiffe://${TD}/ns/{namespace}/sa/{serviceAccount}`, attributes: [], serverUrl: 'https://tessera.tessera.svc:8443',
  image: 'registry.example/tessera:1.0', extraArgs: [], bundleConfigMap: 'tessera-bundle', sidecarUid: 65532, sidecarMode: 'native',
};

let t: TestControlPlane;
let dir: string;
let kube: KubeApiStandIn;
let node: WebhookNode;
const lines: string[] = [];
const tokensSeen: string[] = [];

const b64 = (pem: string): string => Buffer.from(pem, 'utf8').toString('base64');
const caBundles = (): (string | undefined)[] => kube.object().webhooks.map((w: Record<string, any>) => w.clientConfig.caBundle);
const agentBundle = (): string => node.agent.current()!.bundlePem;
/** The stand-in holds the bundle AND the patcher has taken the answer in (its status says so, no error). */
const inStep = (): boolean => caBundles().every((b) => b === b64(agentBundle())) && node.caBundle!.current().inStep && node.caBundle!.current().lastError === undefined;
const since = (n: number): string[] => kube.requests.slice(n).map((r) => `${r.method} ${r.status}`);
const stale = (): void => kube.mutate((o) => { o.webhooks[0].clientConfig.caBundle = b64(readFileSync(join(kube.credentialsDir, 'ca.crt'), 'utf8')); });

/** A TLS handshake with the webhook as the API server makes it: `caPem` as caBundle, the Service's DNS name. */
function handshake(caPem: string): Promise<X509Certificate> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port: node.webhook.port, servername: DNS, ca: caPem }, () => {
      const peer = new X509Certificate(s.getPeerCertificate().raw);
      s.destroy();
      resolve(peer);
    });
    s.once('error', reject);
  });
}

/** GET /healthz, the webhook's certificate checked by the Service's name (as the kubelet does not). */
function healthz(): Promise<Record<string, any>> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: node.webhook.port, servername: DNS, path: '/healthz', ca: agentBundle(), agent: false }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => { text += d.toString('utf8'); });
      res.on('end', () => resolve({ status: res.statusCode, ...JSON.parse(text) }));
    });
    req.once('error', reject);
    req.end();
  });
}

beforeAll(async () => {
  t = await startControlPlane({ trustDomain: TD });
  dir = mkdtempSync(join(tmpdir(), 'tessera-k8s-cabundle-'));
  const pki = makeClusterPki(join(dir, 'pki'));
  kube = await startKubeApiStandIn(join(dir, 'kube'), parse(readFileSync('deploy/kubernetes/mutatingwebhookconfiguration.yaml', 'utf8')));
  tokensSeen.push(kube.token);
  // SVIDs of 10 s (renewed at half life), so the rotation below sees a renewal by the new CA quickly.
  const entry = await t.admin.call<{ id: string }>('POST', '/v1/entries', { spiffe_id: `spiffe://${TD}/k8s/tessera-webhook`, selectors: [`dns:${DNS}`], x509_ttl_seconds: 10 });
  const { token } = await t.admin.call<{ token: string }>('POST', '/v1/tokens', { entry_id: entry.id });
  node = await startWebhookNode({
    serverUrl: t.cp.url, dataDir: join(dir, 'webhook'), listen: { host: '127.0.0.1', port: 0 }, dnsName: DNS, inject: INJECT,
    namespaces: new Set(['shop']), clientAuth: { caPem: pki.caPem, names: new Set([APISERVER_CN]) }, admin: new ApiClient(t.cp.url, t.adminTls),
    tokenTtlSeconds: 60, log: createLogger({ level: 'debug', write: (l) => lines.push(l) }), joinToken: token, trustBundleFile: join(t.cp.adminDir, 'bundle.pem'),
    caBundle: { configuration: 'tessera-webhook', kube: { apiUrl: kube.url, credentialsDir: kube.credentialsDir, timeoutMs: 2000 }, retryMinMs: 100, retryMaxMs: 800, resyncMs: 0 },
  });
}, 30_000);

afterAll(async () => {
  await node?.close();
  await kube?.close();
  await t?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('caBundle kept in step by the webhook', () => {
  it('at start: set to the agent\'s trust bundle with one JSON Patch guarded by resourceVersion; the webhook verifies against it', async () => {
    await waitFor('caBundle set at start', inStep, 10_000);
    expect(kube.requests.map((r) => `${r.method} ${r.status}`)).toEqual(['GET 200', 'PATCH 200']);
    // The manifest has no caBundle: `add` on each webhook, after the `test` of the resourceVersion read.
    expect(kube.requests[1]!.patch).toEqual([
      { op: 'test', path: '/metadata/resourceVersion', value: '1000' },
      { op: 'add', path: '/webhooks/0/clientConfig/caBundle', value: b64(agentBundle()) },
      { op: 'add', path: '/webhooks/1/clientConfig/caBundle', value: b64(agentBundle()) },
    ]);
    const served = await handshake(Buffer.from(caBundles()[0]!, 'base64').toString('utf8'));
    expect(served.subjectAltName).toContain(`DNS:${DNS}`);
    // The API server's other check, the Service name, still applies: another name is refused.
    await expect(new Promise((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port: node.webhook.port, servername: 'evil.tessera.svc', ca: agentBundle() }, () => { s.destroy(); resolve(undefined); });
      s.once('error', reject);
    })).rejects.toThrow(/altnames|does not match/i);
    expect(node.caBundle!.current()).toMatchObject({ inStep: true, patches: 1, sequence: expect.any(Number) });
    const h = await healthz();
    expect(h.ca_bundle).toMatchObject({ in_step: true, patches: 1, last_error: null });
    expect(lines.some((l) => l.includes('caBundle set to the trust bundle'))).toBe(true);
  });

  it('writes nothing when caBundle already holds the bundle (a sync, a bundle event with the same PEM)', async () => {
    const n = kube.requests.length;
    const rv = kube.object().metadata.resourceVersion;
    await node.caBundle!.sync();
    // The agent emits `bundle` with an unchanged PEM too (e.g. when federated bundles change).
    node.agent.emit('bundle', { sequence: node.caBundle!.current().sequence ?? 0, authorities: 1 });
    await waitFor('the second GET', () => kube.requests.length >= n + 2, 5000);
    await node.caBundle!.sync();
    expect(since(n)).toEqual(['GET 200', 'GET 200', 'GET 200']);
    expect(kube.object().metadata.resourceVersion).toBe(rv);
    expect(node.caBundle!.current().patches).toBe(1);
  });

  it('a concurrent change between GET and PATCH (422 from the test op, then a 409) is read again and kept', async () => {
    stale();
    kube.afterNextGet(() => kube.mutate((o) => { o.metadata.labels = { ...o.metadata.labels, 'example.com/touched': 'yes' }; }));
    let n = kube.requests.length;
    await node.caBundle!.sync();
    expect(since(n)).toEqual(['GET 200', 'PATCH 422', 'GET 200', 'PATCH 200']);
    expect(inStep()).toBe(true);
    expect(kube.object().metadata.labels['example.com/touched']).toBe('yes');
    // Only the stale webhook is written: `replace`, with the resourceVersion of the second read.
    const last = kube.requests[kube.requests.length - 1]!.patch!;
    expect(last).toEqual([{ op: 'test', path: '/metadata/resourceVersion', value: expect.any(String) }, { op: 'replace', path: '/webhooks/0/clientConfig/caBundle', value: b64(agentBundle()) }]);

    stale();
    kube.conflictOnce();
    n = kube.requests.length;
    await node.caBundle!.sync();
    expect(since(n)).toEqual(['GET 200', 'PATCH 409', 'GET 200', 'PATCH 200']);
    expect(inStep()).toBe(true);
  });

  it('a wrong token (401) is retried with backoff, logged without the token; the token file is read again on each call', async () => {
    const fresh = `kube-sa-rotated-${Date.now()}-secretpart`;
    tokensSeen.push(fresh);
    kube.setToken(fresh);
    stale();
    const n = kube.requests.length;
    await node.caBundle!.sync();
    expect(node.caBundle!.current().lastError).toMatchObject({ status: 401, reason: 'Unauthorized' });
    await waitFor('a retry', () => kube.requests.slice(n).filter((r) => r.status === 401).length >= 2, 5000);
    // The webhook keeps serving meanwhile, and says why caBundle is not in step.
    expect((await healthz()).ca_bundle).toMatchObject({ in_step: false, last_error: { status: 401, reason: 'Unauthorized' } });
    expect(lines.some((l) => l.includes('caBundle could not be set') && l.includes('"status":401'))).toBe(true);
    kube.writeTokenFile(fresh); // as the kubelet rotates a projected token
    await waitFor('caBundle after the token rotated', inStep, 10_000);
    expect(node.caBundle!.current().lastError).toBeUndefined();
  });

  it('the API server\'s certificate is checked against ca.crt: another CA, and the token is never sent', async () => {
    const caFile = join(kube.credentialsDir, 'ca.crt');
    const kubeCa = readFileSync(caFile, 'utf8');
    writeFileSync(caFile, readFileSync(join(dir, 'pki', 'cluster-ca.pem'), 'utf8'));
    try {
      stale();
      const n = kube.requests.length;
      await node.caBundle!.sync();
      expect(node.caBundle!.current().lastError).toMatchObject({ status: 0, reason: 'transport', message: expect.stringMatching(/certificate|verify|issuer/i) });
      expect(kube.requests.length).toBe(n); // no request reached the server: the TLS handshake failed first
    } finally {
      writeFileSync(caFile, kubeCa);
    }
    await waitFor('caBundle with the right CA back', inStep, 10_000);
  });

  it('an API that is down is retried and logged, the webhook keeps serving, and caBundle is set once it is back', async () => {
    await kube.pause();
    stale();
    const warned = lines.length;
    void node.caBundle!.sync();
    await waitFor('two failed attempts', () => lines.slice(warned).filter((l) => l.includes('caBundle could not be set') && l.includes('"status":0')).length >= 2, 10_000);
    expect(node.caBundle!.current().lastError).toMatchObject({ status: 0, reason: 'unreachable' });
    expect(await healthz()).toMatchObject({ status: 200, ok: true, ca_bundle: { in_step: false, last_error: { status: 0, reason: 'unreachable' } } });
    await kube.resume();
    await waitFor('caBundle after the API came back', inStep, 10_000);
  });

  it('a CA rotation: the prepared CA is in caBundle before it signs; after activation the renewed SVID verifies against caBundle', async () => {
    const before = Buffer.from(caBundles()[0]!, 'base64').toString('utf8');
    const beforeCas = pemDecodeAll(before, 'CERTIFICATE').map((d) => d.toString('base64'));
    const patchesBefore = node.caBundle!.current().patches;

    const { prepared } = await t.admin.call<{ prepared: { id: string; activateAt: string } }>('POST', '/v1/ca/rotate', { grace_seconds: 5 });
    await waitFor('the prepared CA in caBundle', () => pemDecodeAll(Buffer.from(caBundles()[0]!, 'base64').toString('utf8'), 'CERTIFICATE').length === beforeCas.length + 1 && inStep(), 10_000);
    // Still prepared, not yet signing, when the API server already trusts it.
    expect(t.cp.ctx.ca.active().rec.id).not.toBe(prepared.id);
    expect(Date.now()).toBeLessThan(Date.parse(prepared.activateAt));
    expect(inStep()).toBe(true);
    const newCaDer = pemDecodeAll(Buffer.from(caBundles()[0]!, 'base64').toString('utf8'), 'CERTIFICATE').find((d) => !beforeCas.includes(d.toString('base64')))!;
    const newCa = new X509Certificate(newCaDer);

    // Activation, then the webhook's next renewal is signed by the new CA and served.
    await waitFor('the webhook serving an SVID of the new CA', async () => {
      const served = await handshake(agentBundle());
      return served.checkIssued(newCa) && served.verify(newCa.publicKey);
    }, 25_000, 250);
    expect(t.cp.ctx.ca.active().rec.id).toBe(prepared.id);
    // What the API server holds verifies it (node:tls, chain and Service name) ...
    const caBundlePem = Buffer.from(caBundles()[0]!, 'base64').toString('utf8');
    const served = await handshake(caBundlePem);
    expect(served.checkIssued(newCa) && served.verify(newCa.publicKey)).toBe(true);
    expect(caBundles()[1]).toBe(caBundles()[0]);
    // ... where the caBundle of before the rotation (the hand-patched copy) would have refused it.
    await expect(handshake(before)).rejects.toThrow(/certificate|issuer/i);
    expect(node.caBundle!.current().patches).toBe(patchesBefore + 1);
  }, 45_000);

  it('no log line holds a token', () => {
    expect(lines.length).toBeGreaterThan(10);
    for (const token of tokensSeen) expect(lines.filter((l) => l.includes(token))).toEqual([]);
  });
});

describe('in-cluster settings refused at start', () => {
  it('the API URL: from KUBERNETES_SERVICE_HOST/PORT (IPv6 bracketed), https only, required', () => {
    expect(kubeApiUrl(undefined, { KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' })).toBe('https://10.96.0.1');
    expect(kubeApiUrl(undefined, { KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '6443' })).toBe('https://[fd00::1]:6443');
    expect(kubeApiUrl('https://kube.example:6443/')).toBe('https://kube.example:6443');
    expect(() => kubeApiUrl(undefined, {})).toThrow(expect.objectContaining({ code: 'TESSERA_CONFIG_INVALID', message: expect.stringContaining('--no-patch-ca-bundle') }));
    for (const bad of ['http://10.0.0.1', 'https://u:p@10.0.0.1', 'not a url', 'https://10.0.0.1/?x=1']) {
      expect(() => new KubeClient({ apiUrl: bad })).toThrow(expect.objectContaining({ code: 'TESSERA_CONFIG_INVALID' }));
    }
  });

  it('the service account files: missing, empty token, a CA that is not PEM → TESSERA_CREDENTIAL_MISSING', () => {
    expect(() => checkKubeCredentials(join(dir, 'nowhere'))).toThrow(expect.objectContaining({ code: 'TESSERA_CREDENTIAL_MISSING' }));
    const sa = join(dir, 'sa-bad');
    mkdirSync(sa, { recursive: true });
    writeFileSync(join(sa, 'ca.crt'), readFileSync(join(kube.credentialsDir, 'ca.crt')));
    writeFileSync(join(sa, 'token'), '\n', { mode: 0o600 });
    expect(() => checkKubeCredentials(sa)).toThrow(expect.objectContaining({ code: 'TESSERA_CREDENTIAL_MISSING', message: expect.stringContaining('empty') }));
    writeFileSync(join(sa, 'token'), 'abc', { mode: 0o600 });
    writeFileSync(join(sa, 'ca.crt'), 'not a certificate');
    expect(() => checkKubeCredentials(sa)).toThrow(expect.objectContaining({ code: 'TESSERA_CREDENTIAL_MISSING', message: expect.stringContaining('ca.crt') }));
    expect(() => checkKubeCredentials(kube.credentialsDir)).not.toThrow();
  });
});
