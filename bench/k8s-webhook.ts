/**
 * Admission webhook benchmark: latency of AdmissionReview answers over HTTPS, side by side with the
 * limit (a `/healthz` round trip on the same kept-alive TLS connection: no parsing, no work) and
 * the baseline of the admission path (a review the webhook does not own: parsed and allowed, no
 * control-plane call), in the same run.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/k8s-webhook.js [--requests N] [--json]
 *
 * Rows (sequential requests, one kept-alive connection, like one API server calling):
 *   healthz       GET /healthz: the TLS + HTTP round trip floor
 *   not-owned     POST /mutate, a pod CREATE in a namespace not opted in: parse, allow
 *   create        a pod CREATE whose entry exists: entry lookup + join token (2 admin calls to the
 *                 control plane over mTLS), the pod ref written to the state file, the patch built and checked
 *   create-new    a pod CREATE of a new service account: lookup (404) + entry create + token
 *   delete        a pod DELETE releasing one of several refs (state file write, no control-plane call)
 * The control plane runs in this process (SQLite in a temp directory), as in the tests.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { Agent as HttpsAgent, request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { readFileSync } from 'node:fs';
import { ApiClient } from '../src/common/api-client.js';
import { createLogger } from '../src/core/log.js';
import { ControlPlane } from '../src/server/server.js';
import type { PatchOp } from '../src/k8s/admission.js';
import { applyJsonPatch } from '../src/k8s/jsonpatch.js';
import { startWebhookNode } from '../src/k8s/node.js';
import { APISERVER_CN, makeClusterPki } from '../test/support/k8s-pki.js';

const argv = process.argv.slice(2);
let n = 300;
let json = false;
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '--json') json = true;
  else if (argv[i] === '--requests' && Number(argv[i + 1]) >= 10 && Number(argv[i + 1]) <= 100_000) n = Number(argv[++i]);
  else {
    process.stderr.write('usage: node dist/bench/k8s-webhook.js [--requests N (10..100000)] [--json]\n');
    process.exit(2);
  }
}

const DNS = 'tessera-webhook.tessera.svc';
const log = createLogger({ level: 'error' });
const dir = mkdtempSync(join(tmpdir(), 'tessera-bench-k8s-'));
const cp = await ControlPlane.start({ trustDomain: 'bench.test', env: {}, log, dataDir: join(dir, 'cp'), host: '127.0.0.1', port: 0 });
const tls = { ca: readFileSync(join(cp.adminDir, 'bundle.pem'), 'utf8'), cert: readFileSync(join(cp.adminDir, 'admin.pem'), 'utf8'), key: readFileSync(join(cp.adminDir, 'admin.key'), 'utf8') };
const admin = new ApiClient(cp.url, tls);
const entry = await admin.call<{ id: string }>('POST', '/v1/entries', { spiffe_id: 'spiffe://bench.test/k8s/tessera-webhook', selectors: [`dns:${DNS}`] });
const { token } = await admin.call<{ token: string }>('POST', '/v1/tokens', { entry_id: entry.id });
// The API server's client certificate (the webhook answers /mutate to nobody else).
const pki = makeClusterPki(join(dir, 'pki'));
const node = await startWebhookNode({
  serverUrl: cp.url, dataDir: join(dir, 'webhook'), listen: { host: '127.0.0.1', port: 0 }, dnsName: DNS, namespaces: new Set(['shop']),
  inject: { idTemplate: 'spiffe://bench.test/ns/{namespace}/sa/{serviceAccount}', attributes: [{ name: 'app', label: 'app' }], serverUrl: cp.url, image: 'tessera:bench', extraArgs: [], bundleConfigMap: 'tessera-bundle', sidecarUid: 65532, sidecarMode: 'native' },
  clientAuth: { caPem: pki.caPem, names: new Set([APISERVER_CN]) }, admin, tokenTtlSeconds: 600, log, joinToken: token, trustBundleFile: join(cp.adminDir, 'bundle.pem'),
});
const agent = new HttpsAgent({ keepAlive: true, maxSockets: 1, ca: tls.ca, servername: DNS, cert: pki.apiserver.cert, key: pki.apiserver.key });

function call(path: string, body?: string): Promise<Record<string, any>> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: node.webhook.port, path, method: body === undefined ? 'GET' : 'POST', agent, servername: DNS, headers: body === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => (res.statusCode === 200 ? resolve(JSON.parse(Buffer.concat(chunks).toString('utf8'))) : reject(new Error(`HTTP ${res.statusCode}`))));
    });
    req.on('error', reject);
    req.end(body);
  });
}

let uid = 0;
const pod = (sa: string): Record<string, unknown> => ({ metadata: { generateName: `${sa}-`, labels: { app: sa } }, spec: { serviceAccountName: sa, securityContext: { runAsUser: 1000 }, containers: [{ name: 'app', image: 'app:1' }] } });
const review = (r: Record<string, unknown>): string => JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: { uid: `u-${++uid}`, kind: { group: '', version: 'v1', kind: 'Pod' }, resource: { group: '', version: 'v1', resource: 'pods' }, ...r } });
const patched = (a: Record<string, any>, p: Record<string, unknown>): Record<string, unknown> => applyJsonPatch(p, JSON.parse(Buffer.from(a.response.patch, 'base64').toString('utf8')) as PatchOp[]);

interface Row { name: string; p50: number; p99: number; perSecond: number }
async function measure(name: string, make: (i: number) => Promise<unknown>): Promise<Row> {
  for (let i = 0; i < 10; i++) await make(-1 - i); // warm-up
  const times: number[] = [];
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const s = performance.now();
    await make(i);
    times.push(performance.now() - s);
  }
  const total = performance.now() - t0;
  times.sort((a, b) => a - b);
  return { name, p50: times[Math.floor(n * 0.5)]!, p99: times[Math.min(n - 1, Math.floor(n * 0.99))]!, perSecond: n / (total / 1000) };
}

const created: Record<string, unknown>[] = [];
const rows: Row[] = [];
try {
  rows.push(await measure('healthz', () => call('/healthz')));
  rows.push(await measure('not-owned', () => call('/mutate', review({ operation: 'CREATE', namespace: 'default', object: pod('web') }))));
  rows.push(await measure('create', async () => {
    const p = pod('web');
    const a = await call('/mutate', review({ operation: 'CREATE', namespace: 'shop', object: p }));
    if (a.response.allowed !== true) throw new Error(a.response.status?.message);
    created.push(patched(a, p));
  }));
  rows.push(await measure('create-new', async (i) => {
    const p = pod(`sa-${i < 0 ? `w${-i}` : i}`);
    const a = await call('/mutate', review({ operation: 'CREATE', namespace: 'shop', object: p }));
    if (a.response.allowed !== true) throw new Error(a.response.status?.message);
  }));
  rows.push(await measure('delete', async () => {
    const p = created.pop();
    if (p === undefined) throw new Error('out of pods to delete');
    await call('/mutate', review({ operation: 'DELETE', namespace: 'shop', oldObject: p }));
  }));
} finally {
  agent.destroy();
  await node.close();
  await cp.stop();
  rmSync(dir, { recursive: true, force: true });
}

if (json) process.stdout.write(`${JSON.stringify({ requests: n, rows })}\n`);
else {
  process.stdout.write(`k8s webhook, ${n} sequential requests per row, one kept-alive TLS connection (control plane in this process)\n`);
  process.stdout.write(`${'row'.padEnd(12)}${'p50 ms'.padStart(9)}${'p99 ms'.padStart(9)}${'req/s'.padStart(9)}\n`);
  for (const r of rows) process.stdout.write(`${r.name.padEnd(12)}${r.p50.toFixed(2).padStart(9)}${r.p99.toFixed(2).padStart(9)}${r.perSecond.toFixed(0).padStart(9)}\n`);
}
