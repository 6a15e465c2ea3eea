/**
 * The Kubernetes admission webhook end to end, over real HTTPS on 127.0.0.1 with a real control
 * plane (SQLite): the webhook's own agent joins with a join token for an entry carrying
 * `dns:tessera-webhook.tessera.svc`, and clients verify its certificate by that host name as the API
 * server does (caBundle = the trust bundle). AdmissionReview v1 requests: a pod CREATE in an opted-in
 * namespace gets a patch (applied and validated against the Kubernetes Pod schema) whose join token a
 * real agent joins with; entries are created with the first pod and deleted with the last (DELETE
 * twice is harmless); other namespaces, other kinds, UPDATE and dry runs get no side effect; a pod
 * without a uid and a control plane that refuses are refused (fail closed); malformed, oversized,
 * non-JSON bodies and other paths get 4xx with stable codes; a renewed SVID is served. Only the API
 * server may call /mutate: its client certificate (test/support/k8s-pki.ts) is presented by every
 * request here, and the caller checks refuse no certificate, another CA, another CN of the same CA
 * (a kubelet's) and a serverAuth-only certificate, before and after the serving certificate rotates.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Pod } from 'kubernetes-models/v1/Pod';
import { Agent } from '../src/agent/agent.js';
import { ApiClient } from '../src/common/api-client.js';
import { createLogger } from '../src/core/log.js';
import type { PatchOp } from '../src/k8s/admission.js';
import { ANNOTATION, SIDECAR_NAME, type InjectConfig } from '../src/k8s/inject.js';
import { applyJsonPatch } from '../src/k8s/jsonpatch.js';
import { startWebhookNode, type WebhookNode } from '../src/k8s/node.js';
import { Registrar } from '../src/k8s/registrar.js';
import { startWebhook, type WebhookServer } from '../src/k8s/webhook.js';
import { waitFor } from './support/process.js';
import { APISERVER_CN, makeClusterPki, type ClientCert, type ClusterPki } from './support/k8s-pki.js';
import { DEFAULT_ADMIN_POLICY } from '../src/core/policy/admin-schema.js';
import { makeCsrPem, startControlPlane, type TestControlPlane } from './support/server.js';

const TD = 'tessera.test';
const DNS = 'tessera-webhook.tessera.svc';
const WEBHOOK_ID = `spiffe://${TD}/k8s/tessera-webhook`;
const log = createLogger({ level: 'error' });

const INJECT: InjectConfig = {
  idTemplate: `spiffe://${TD}/ns/{namespace}/sa/{serviceAccount}`,
  attributes: [{ name: 'app', label: 'app' }, { name: 'env', label: 'tier' }],
  serverUrl: 'https://tessera.tessera.svc:8443', image: 'registry.example/tessera:1.0', extraArgs: [],
  bundleConfigMap: 'tessera-bundle', sidecarUid: 65532, sidecarMode: 'native',
};

let t: TestControlPlane;
let dir: string;
let node: WebhookNode;
let webhookAdmin: ApiClient;
let pki: ClusterPki;
const clientAuth = (): { caPem: string; names: Set<string> } => ({ caPem: pki.caPem, names: new Set([APISERVER_CN]) });

interface Answer { status: number; json: Record<string, any>; serial?: string }

/** A request as the API server makes it (its client certificate unless `client` says otherwise; null: none). */
function post(port: number, body: string | Buffer, opts: { path?: string; method?: string; type?: string; servername?: string; client?: ClientCert | null } = {}): Promise<Answer> {
  const client = opts.client === undefined ? pki.apiserver : opts.client;
  return new Promise((resolve, reject) => {
    const req = request({
      host: '127.0.0.1', port, servername: opts.servername ?? DNS, path: opts.path ?? '/mutate', method: opts.method ?? 'POST', ca: t.adminTls.ca, agent: false,
      ...(client !== null ? { cert: client.cert, key: client.key } : {}),
      headers: { 'content-type': opts.type ?? 'application/json', 'content-length': Buffer.byteLength(body) },
      // The API server's check: the chain to the caBundle and the Service's DNS name (Node's default identity check).
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        const serial = (res.socket as import('node:tls').TLSSocket).getPeerCertificate?.()?.serialNumber;
        try {
          resolve({ status: res.statusCode ?? 0, json: text ? JSON.parse(text) : {}, ...(serial ? { serial } : {}) });
        } catch {
          reject(new Error(`not JSON: ${text.slice(0, 200)}`));
        }
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

let uidSeq = 0;
function review(request: Record<string, unknown>): string {
  return JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: { uid: `0000-${++uidSeq}`, kind: { group: '', version: 'v1', kind: 'Pod' }, resource: { group: '', version: 'v1', resource: 'pods' }, ...request } });
}

function pod(sa: string, labels: Record<string, string> = { app: 'shop-web', tier: 'prod' }, uid: number | null = 1000): Record<string, any> {
  return {
    apiVersion: 'v1', kind: 'Pod',
    metadata: { generateName: `${sa}-`, namespace: 'shop', labels },
    spec: {
      serviceAccountName: sa,
      ...(uid !== null ? { securityContext: { runAsUser: uid } } : {}),
      containers: [{ name: 'web', image: 'nginx:1.27', ports: [{ containerPort: 8080 }] }, { name: 'log', image: 'busybox', env: [{ name: 'A', value: 'b' }] }],
    },
  };
}

function patchOf(a: Answer): PatchOp[] {
  expect(a.json.response.patchType).toBe('JSONPatch');
  return JSON.parse(Buffer.from(a.json.response.patch, 'base64').toString('utf8')) as PatchOp[];
}

const entryStatus = async (id: string): Promise<string> => t.admin.call('GET', `/v1/entries/${encodeURIComponent(id)}`).then(() => 'present', (e: { code: string }) => e.code);

beforeAll(async () => {
  t = await startControlPlane({ trustDomain: TD });
  dir = mkdtempSync(join(tmpdir(), 'tessera-k8s-'));
  pki = makeClusterPki(join(dir, 'pki'));
  // Short SVIDs (20 s, renewed at half life) so the rotation test sees a renewal.
  const entry = await t.admin.call<{ id: string }>('POST', '/v1/entries', { spiffe_id: WEBHOOK_ID, selectors: [`dns:${DNS}`], x509_ttl_seconds: 20 });
  const { token } = await t.admin.call<{ token: string }>('POST', '/v1/tokens', { entry_id: entry.id });
  // The scoped admin credential: a named admin the admin policy of deploy/kubernetes allows only entries and tokens.
  const csr = makeCsrPem();
  const added = await t.admin.call<{ cert_pem: string }>('POST', '/v1/admins', { name: 'k8s-webhook', csr: csr.pem });
  const scoped = readFileSync('deploy/kubernetes/webhook-admin-policy.cedar', 'utf8');
  const withoutNamedAdmins = DEFAULT_ADMIN_POLICY.replace(/@id\("named-admins"\)[\s\S]*?\);\n/, '');
  expect(withoutNamedAdmins).not.toContain('named-admins');
  await t.admin.call('PUT', '/v1/admin/policy', { policy: `${withoutNamedAdmins}\n${scoped}`, reason: 'k8s webhook credential' });
  webhookAdmin = new ApiClient(t.cp.url, { ca: t.adminTls.ca, cert: added.cert_pem, key: csr.keyPem });
  node = await startWebhookNode({
    serverUrl: t.cp.url, dataDir: join(dir, 'webhook'), listen: { host: '127.0.0.1', port: 0 }, dnsName: DNS, inject: INJECT,
    namespaces: new Set(['shop']), clientAuth: clientAuth(), admin: webhookAdmin, tokenTtlSeconds: 120, log, joinToken: token,
    trustBundleFile: join(t.cp.adminDir, 'bundle.pem'), maxBodyBytes: 256 * 1024,
  });
}, 30_000);

afterAll(async () => {
  await node?.close();
  await t?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('serving certificate', () => {
  it('is the webhook SVID with the Service DNS name, verified by host name; another name is refused', async () => {
    const a = await post(node.webhook.port, '', { path: '/healthz', method: 'GET' });
    expect(a.status).toBe(200);
    expect(a.json.spiffe_id).toBe(WEBHOOK_ID);
    await expect(post(node.webhook.port, '', { path: '/healthz', method: 'GET', servername: 'evil.tessera.svc' })).rejects.toThrow(/altnames|does not match/i);
  });

  it('a webhook whose SVID lacks the DNS name does not start', async () => {
    const registrar = new Registrar(t.admin, { stateFile: join(dir, 'x.json'), tokenTtlSeconds: 60, log });
    await expect(startWebhook({ listen: { host: '127.0.0.1', port: 0 }, tls: node.agent, dnsName: 'other.tessera.svc', inject: INJECT, namespaces: new Set(['shop']), registrar, clientAuth: clientAuth(), log }))
      .rejects.toMatchObject({ code: 'TESSERA_CONFIG_INVALID' });
  });
});

describe('who may call /mutate: the API server only', () => {
  const intruder = `spiffe://${TD}/ns/shop/sa/intruder`;
  const forged = (): string => review({ operation: 'CREATE', namespace: 'shop', object: pod('intruder') });

  it('no client certificate, another CA, a kubelet\'s certificate, a serverAuth-only one: refused before the body is read, no token made', async () => {
    const code = (a: Answer): [number, string, unknown] => [a.status, a.json.error?.code, a.json.response];
    expect(code(await post(node.webhook.port, forged(), { client: null }))).toEqual([401, 'TESSERA_AUTH_REQUIRED', undefined]);
    expect(code(await post(node.webhook.port, forged(), { client: pki.foreign }))).toEqual([401, 'TESSERA_AUTH_INVALID', undefined]);
    expect(code(await post(node.webhook.port, forged(), { client: pki.kubelet }))).toEqual([403, 'TESSERA_FORBIDDEN', undefined]);
    expect(code(await post(node.webhook.port, forged(), { client: pki.serverOnly }))).toEqual([401, 'TESSERA_AUTH_INVALID', undefined]);
    // A DELETE is refused as well (it would release another pod's ref).
    expect((await post(node.webhook.port, review({ operation: 'DELETE', namespace: 'shop', oldObject: pod('intruder') }), { client: null })).status).toBe(401);
    expect(await entryStatus(intruder)).toBe('TESSERA_ENTRY_NOT_FOUND');
    expect(node.registrar.podsOf(intruder)).toBe(0);
  });

  it('the API server\'s certificate is answered; /healthz needs none (the kubelet\'s probes)', async () => {
    expect((await post(node.webhook.port, '', { path: '/healthz', method: 'GET', client: null })).status).toBe(200);
    const a = await post(node.webhook.port, review({ operation: 'CREATE', namespace: 'shop', dryRun: true, object: pod('intruder') }));
    expect(a.json.response.allowed).toBe(true);
  });

  it('a client CA that is not a CA, a file that is not PEM, a missing file and an empty --client-name are refused at start', async () => {
    const { loadClientCa, parseClientNames } = await import('../src/k8s/client-auth.js');
    const { writeFileSync } = await import('node:fs');
    writeFileSync(join(dir, 'leaf.pem'), pki.apiserver.cert);
    writeFileSync(join(dir, 'junk.pem'), '-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n');
    writeFileSync(join(dir, 'empty.pem'), 'nothing here\n');
    expect(() => loadClientCa(join(dir, 'leaf.pem'))).toThrow(expect.objectContaining({ code: 'TESSERA_CONFIG_INVALID', message: expect.stringMatching(/not a CA/) }));
    expect(() => loadClientCa(join(dir, 'junk.pem'))).toThrow(expect.objectContaining({ code: 'TESSERA_CONFIG_INVALID' }));
    expect(() => loadClientCa(join(dir, 'empty.pem'))).toThrow(expect.objectContaining({ code: 'TESSERA_CONFIG_INVALID' }));
    expect(() => loadClientCa(join(dir, 'absent.pem'))).toThrow(expect.objectContaining({ code: 'TESSERA_CREDENTIAL_MISSING' }));
    expect(loadClientCa(pki.caFile)).toContain('BEGIN CERTIFICATE');
    expect(() => parseClientNames([' , '])).toThrow(expect.objectContaining({ code: 'TESSERA_CONFIG_INVALID' }));
    expect(() => parseClientNames(['a\u0000b'])).toThrow(expect.objectContaining({ code: 'TESSERA_CONFIG_INVALID' }));
    expect([...parseClientNames(['a,b', 'c'])]).toEqual(['a', 'b', 'c']);
  });
});

describe('pod CREATE in an opted-in namespace', () => {
  let first: PatchOp[];
  const id = `spiffe://${TD}/ns/shop/sa/web`;

  it('answers a patch that yields a valid Pod with the sidecar, token, socket volume and env', async () => {
    const a = await post(node.webhook.port, review({ operation: 'CREATE', namespace: 'shop', object: pod('web') }));
    expect(a.status).toBe(200);
    expect(a.json).toMatchObject({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response: { uid: `0000-${uidSeq}`, allowed: true } });
    first = patchOf(a);
    const patched = applyJsonPatch(pod('web'), first);
    new Pod(patched).validate();
    const sidecar = patched.spec.initContainers[0];
    expect(sidecar).toMatchObject({ name: SIDECAR_NAME, image: INJECT.image, restartPolicy: 'Always' });
    expect(sidecar.args).toEqual(expect.arrayContaining(['--workload-api-socket', '/run/spiffe/workload/agent.sock', '--server', INJECT.serverUrl]));
    for (const c of patched.spec.containers) {
      expect(c.env).toContainEqual({ name: 'SPIFFE_ENDPOINT_SOCKET', value: 'unix:///run/spiffe/workload/agent.sock' });
      expect(c.volumeMounts).toContainEqual({ name: 'tessera-workload-api', mountPath: '/run/spiffe/workload', readOnly: true });
      expect(c.env.find((e: { name: string }) => e.name === 'TESSERA_JOIN_TOKEN')).toBeUndefined();
    }
    expect(patched.spec.volumes.map((v: { name: string }) => v.name)).toEqual(['tessera-workload-api', 'tessera-agent-data', 'tessera-bundle']);
    expect(patched.metadata.annotations[ANNOTATION.spiffeId]).toBe(id);
    // The entry exists now, with the pod's uid as selector and attributes from labels.
    const entry = await t.admin.call<{ selectors: string[]; attributes: Record<string, string> }>('GET', `/v1/entries/${encodeURIComponent(id)}`);
    expect(entry.selectors).toEqual(['unix:uid:1000']);
    expect(entry.attributes).toEqual({ app: 'shop-web', env: 'prod' });
    expect(node.registrar.podsOf(id)).toBe(1);
  });

  it('the injected token is a real one-time join token for that entry', async () => {
    const patched = applyJsonPatch(pod('web'), first);
    const token = patched.spec.initContainers[0].env.find((e: { name: string }) => e.name === 'TESSERA_JOIN_TOKEN').value as string;
    expect(token).toMatch(/^tjt_/);
    const agent = new Agent({ serverUrl: t.cp.url, dataDir: join(dir, 'pod-agent'), log, joinToken: token, trustBundleFile: join(t.cp.adminDir, 'bundle.pem') });
    await agent.start();
    try {
      expect(agent.spiffeId).toBe(id);
    } finally {
      await agent.stop();
    }
    const again = new Agent({ serverUrl: t.cp.url, dataDir: join(dir, 'pod-agent-2'), log, joinToken: token, trustBundleFile: join(t.cp.adminDir, 'bundle.pem') });
    await expect(again.start()).rejects.toMatchObject({ code: 'TESSERA_TOKEN_INVALID' });
    await again.stop();
  });

  it('a second pod shares the entry; the entry goes with the last pod, DELETE twice is harmless', async () => {
    const a2 = await post(node.webhook.port, review({ operation: 'CREATE', namespace: 'shop', object: pod('web', { app: 'shop-web', tier: 'staging' }) }));
    expect(a2.json.response.allowed).toBe(true);
    expect(a2.json.response.warnings?.[0]).toMatch(/keeps the attributes of its first pod \(env differ/);
    expect(node.registrar.podsOf(id)).toBe(2);
    const p1 = applyJsonPatch(pod('web'), first);
    const p2 = applyJsonPatch(pod('web'), patchOf(a2));
    const del = (p: unknown): Promise<Answer> => post(node.webhook.port, review({ operation: 'DELETE', namespace: 'shop', name: 'web-abc', oldObject: p }));
    expect((await del(p1)).json.response).toEqual({ uid: `0000-${uidSeq}`, allowed: true });
    expect(node.registrar.podsOf(id)).toBe(1);
    expect((await del(p1)).json.response.allowed).toBe(true);
    expect(node.registrar.podsOf(id)).toBe(1);
    expect(await entryStatus(id)).toBe('present');
    // The same ref replayed from another namespace is not ours to release.
    const replay = await post(node.webhook.port, review({ operation: 'DELETE', namespace: 'other', oldObject: p2 }));
    expect(replay.json.response.allowed).toBe(true);
    expect(node.registrar.podsOf(id)).toBe(1);
    await del(p2);
    expect(node.registrar.podsOf(id)).toBe(0);
    expect(await entryStatus(id)).toBe('TESSERA_ENTRY_NOT_FOUND');
    await del(p2);
    expect(await entryStatus(id)).toBe('TESSERA_ENTRY_NOT_FOUND');
    // The next pod re-creates it.
    const a3 = await post(node.webhook.port, review({ operation: 'CREATE', namespace: 'shop', object: pod('web') }));
    expect(a3.json.response.allowed).toBe(true);
    expect(await entryStatus(id)).toBe('present');
    await del(applyJsonPatch(pod('web'), patchOf(a3)));
  });

  it('a dry run gets a valid patch and creates nothing', async () => {
    const a = await post(node.webhook.port, review({ operation: 'CREATE', namespace: 'shop', dryRun: true, object: pod('dry') }));
    expect(a.json.response.allowed).toBe(true);
    new Pod(applyJsonPatch(pod('dry'), patchOf(a))).validate();
    expect(await entryStatus(`spiffe://${TD}/ns/shop/sa/dry`)).toBe('TESSERA_ENTRY_NOT_FOUND');
  });

  it('refuses, with a clear message, a pod whose containers have no single uid, and a pod already injected', async () => {
    const noUid = await post(node.webhook.port, review({ operation: 'CREATE', namespace: 'shop', object: pod('nouid', {}, null) }));
    expect(noUid.json.response).toMatchObject({ allowed: false, status: { code: 403, message: expect.stringMatching(/runAsUser/) } });
    expect(await entryStatus(`spiffe://${TD}/ns/shop/sa/nouid`)).toBe('TESSERA_ENTRY_NOT_FOUND');
    const copied = applyJsonPatch(pod('web'), first);
    const again = await post(node.webhook.port, review({ operation: 'CREATE', namespace: 'shop', object: copied }));
    expect(again.json.response).toMatchObject({ allowed: false, status: { message: expect.stringMatching(/already carries a Tessera injection/) } });
  });
});

describe('the scoped admin credential', () => {
  it('may create entries and tokens (above) but not list entries, read the audit log or add admins', async () => {
    for (const [method, path, body] of [['GET', '/v1/entries', undefined], ['GET', '/v1/audit?limit=1', undefined], ['POST', '/v1/admins', { name: 'x', csr: makeCsrPem().pem }]] as const) {
      // MFA_REQUIRED where the people's rules (group admins, fresh MFA) would permit it: a certificate never has MFA.
      await expect(webhookAdmin.call(method, path, body), path).rejects.toMatchObject({ code: expect.stringMatching(/^TESSERA_(FORBIDDEN|MFA_REQUIRED)$/) });
    }
  });

  it('an entry\'s dns: selector must be a host name', async () => {
    for (const sel of ['dns:*.tessera.svc', 'dns:UPPER.svc', 'dns:-x.svc']) {
      await expect(t.admin.call('POST', '/v1/entries', { spiffe_id: `spiffe://${TD}/k8s/bad`, selectors: [sel] }), sel).rejects.toMatchObject({ code: 'TESSERA_BAD_REQUEST' });
    }
  });
});

describe('what the webhook does not own is allowed untouched', () => {
  it('another namespace, another kind, UPDATE, a subresource, an opted-out pod, a mirror pod', async () => {
    const cases = [
      review({ operation: 'CREATE', namespace: 'default', object: pod('web') }),
      review({ operation: 'CREATE', namespace: 'shop', kind: { group: 'apps', version: 'v1', kind: 'Deployment' }, resource: { group: 'apps', version: 'v1', resource: 'deployments' }, object: { spec: {} } }),
      review({ operation: 'UPDATE', namespace: 'shop', object: pod('web'), oldObject: pod('web') }),
      review({ operation: 'CREATE', namespace: 'shop', subResource: 'binding', object: { target: {} } }),
      review({ operation: 'CREATE', namespace: '', kind: { group: '', version: 'v1', kind: 'Namespace' }, object: { metadata: { name: 'x' } } }),
      review({ operation: 'CREATE', namespace: 'shop', object: { ...pod('optout'), metadata: { annotations: { 'tessera.io/inject': 'disabled' } } } }),
      review({ operation: 'CREATE', namespace: 'shop', object: { ...pod('mirror'), metadata: { annotations: { 'kubernetes.io/config.mirror': 'abc' } } } }),
    ];
    for (const body of cases) {
      const a = await post(node.webhook.port, body);
      expect(a.status).toBe(200);
      expect(a.json.response).toEqual({ uid: JSON.parse(body).request.uid, allowed: true });
    }
    expect(await entryStatus(`spiffe://${TD}/ns/default/sa/web`)).toBe('TESSERA_ENTRY_NOT_FOUND');
    expect(await entryStatus(`spiffe://${TD}/ns/shop/sa/optout`)).toBe('TESSERA_ENTRY_NOT_FOUND');
  });
});

describe('bad requests', () => {
  it('get 4xx with stable codes, never a 500', async () => {
    const port = node.webhook.port;
    const code = (a: Answer): [number, string] => [a.status, a.json.error?.code];
    expect(code(await post(port, '{"apiVersion":'))).toEqual([400, 'TESSERA_K8S_REVIEW_INVALID']);
    expect(code(await post(port, JSON.stringify({ apiVersion: 'admission.k8s.io/v1beta1', kind: 'AdmissionReview', request: { uid: 'a' } })))).toEqual([400, 'TESSERA_K8S_REVIEW_INVALID']);
    expect(code(await post(port, JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'ConversionReview', request: {} })))).toEqual([400, 'TESSERA_K8S_REVIEW_INVALID']);
    expect(code(await post(port, review({ operation: 'PATCH', namespace: 'shop' })))).toEqual([400, 'TESSERA_K8S_REVIEW_INVALID']);
    expect(code(await post(port, review({ operation: 'CREATE', namespace: 'shop', object: [1] })))).toEqual([400, 'TESSERA_K8S_REVIEW_INVALID']);
    expect(code(await post(port, 'apiVersion: v1', { type: 'application/yaml' }))).toEqual([415, 'TESSERA_UNSUPPORTED_MEDIA_TYPE']);
    expect(code(await post(port, '', { method: 'GET' }))).toEqual([404, 'TESSERA_NOT_FOUND']);
    expect(code(await post(port, '{}', { path: '/validate' }))).toEqual([404, 'TESSERA_NOT_FOUND']);
    const big = review({ operation: 'CREATE', namespace: 'shop', object: { ...pod('web'), pad: 'x'.repeat(300 * 1024) } });
    expect(code(await post(port, big))).toEqual([413, 'TESSERA_PAYLOAD_TOO_LARGE']);
    // The same without a content-length (chunked): cut off once the limit is passed.
    const chunked = await new Promise<number>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, servername: DNS, path: '/mutate', method: 'POST', ca: t.adminTls.ca, cert: pki.apiserver.cert, key: pki.apiserver.key, agent: false, headers: { 'content-type': 'application/json' } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      for (let i = 0; i < 40; i++) req.write('x'.repeat(16 * 1024));
      req.end();
    });
    expect(chunked).toBe(413);
    // Still serving.
    expect((await post(port, '', { path: '/healthz', method: 'GET' })).status).toBe(200);
  });
});

describe('fail closed', () => {
  it('a control plane that cannot be reached refuses pods of opted-in namespaces only', async () => {
    const dead = new ApiClient('https://127.0.0.1:1', t.adminTls, 2000);
    const registrar = new Registrar(dead, { stateFile: join(dir, 'dead.json'), tokenTtlSeconds: 60, log });
    const hook = await startWebhook({ listen: { host: '127.0.0.1', port: 0 }, tls: node.agent, dnsName: DNS, inject: INJECT, namespaces: new Set(['shop']), registrar, clientAuth: clientAuth(), log });
    try {
      const a = await post(hook.port, review({ operation: 'CREATE', namespace: 'shop', object: pod('web') }));
      expect(a.json.response).toMatchObject({ allowed: false, status: { code: 500, message: expect.stringMatching(/TESSERA_SERVER_UNREACHABLE.*refused/) } });
      const other = await post(hook.port, review({ operation: 'CREATE', namespace: 'kube-system', object: pod('web') }));
      expect(other.json.response).toEqual({ uid: `0000-${uidSeq}`, allowed: true });
    } finally {
      dead.close();
      await hook.close();
    }
  });
});

describe('rotation', () => {
  it('serves the renewed SVID without a restart', async () => {
    const before = (await post(node.webhook.port, '', { path: '/healthz', method: 'GET' })).serial!;
    expect(before).toBe(node.webhook.servingSerial());
    const after = await waitFor('a renewed certificate served', async () => {
      const s = (await post(node.webhook.port, '', { path: '/healthz', method: 'GET' })).serial!;
      return s !== before ? s : undefined;
    }, 20_000, 250);
    expect(after).toBe(node.webhook.servingSerial());
    // The swapped secure context still carries the client CA: the API server is answered, others are not.
    expect((await post(node.webhook.port, review({ operation: 'CREATE', namespace: 'shop', dryRun: true, object: pod('web') }))).json.response.allowed).toBe(true);
    expect((await post(node.webhook.port, review({ operation: 'CREATE', namespace: 'shop', object: pod('intruder') }), { client: pki.foreign })).status).toBe(401);
    expect((await post(node.webhook.port, review({ operation: 'CREATE', namespace: 'shop', object: pod('intruder') }), { client: null })).status).toBe(401);
  }, 25_000);
});
