/**
 * A stand-in for the Kubernetes API server, for the webhook's caBundle upkeep (src/k8s/cabundle.ts):
 * no kube-apiserver can run here, so this is a small HTTPS server on 127.0.0.1 that holds ONE
 * MutatingWebhookConfiguration and serves what the webhook calls, with the API server's semantics
 * for them:
 *   GET   /apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/NAME
 *   PATCH the same, Content-Type application/json-patch+json (RFC 6902 add/replace/remove/test)
 * - `Authorization: Bearer TOKEN` checked: 401 Status (reason Unauthorized) otherwise;
 * - another name: 404 NotFound; another path: 404; another method: 405; another patch type: 415;
 * - a failed `test` op: 422 Status (reason Invalid, "testing value ... failed"), as the real API;
 *   `conflictOnce()` answers the next PATCH 409 Conflict (the API server's own precondition race);
 * - each write bumps metadata.resourceVersion (and generation); the patched object must still
 *   validate against the kubernetes-models MutatingWebhookConfiguration schema, and every caBundle
 *   must be base64 of PEM certificates: 422 otherwise;
 * - `afterNextGet(fn)` runs fn just after a GET was answered: a concurrent writer between the
 *   webhook's GET and its PATCH.
 * Its CA (openssl, P-256) is written with a token file to a temporary "serviceaccount" directory
 * (`ca.crt`, `token` 0600, `namespace`) as the kubelet mounts them in a pod.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { MutatingWebhookConfiguration } from 'kubernetes-models/admissionregistration.k8s.io/v1/MutatingWebhookConfiguration';
import { applyJsonPatch } from '../../src/k8s/jsonpatch.js';
import type { PatchOp } from '../../src/k8s/admission.js';

type Obj = Record<string, any>;
const PREFIX = '/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/';

export interface KubeRequest { method: string; path: string; status: number; authorized: boolean; patch?: unknown[] }

export interface KubeApiStandIn {
  /** https://127.0.0.1:PORT */
  url: string;
  /** The "serviceaccount" directory: ca.crt, token, namespace. */
  credentialsDir: string;
  /** The token the server accepts (also in credentialsDir/token at start). */
  token: string;
  /** Every request answered, in order. */
  requests: KubeRequest[];
  /** The object as held now (a copy). */
  object(): Obj;
  /** Changes the object as another writer would (the resourceVersion is bumped). */
  mutate(fn: (o: Obj) => void): void;
  /** The server accepts only this token from now on (the file is not changed). */
  setToken(token: string): void;
  /** Writes the token file (0600), as the kubelet does when it rotates a projected token. */
  writeTokenFile(token: string): void;
  afterNextGet(fn: () => void): void;
  conflictOnce(): void;
  /** Stops listening (an API that is down); `resume` listens again on the same port. */
  pause(): Promise<void>;
  resume(): Promise<void>;
  close(): Promise<void>;
}

function makeServerPki(dir: string): { ca: string; cert: string; key: string } {
  const ssl = (args: string[]): void => {
    const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`openssl ${args[0]} failed: ${r.stderr}`);
  };
  writeFileSync(join(dir, 'server.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n');
  ssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'kube-ca.key', '-out', 'kube-ca.pem', '-days', '2', '-subj', '/CN=kubernetes']);
  ssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'apiserver.key', '-out', 'apiserver.csr', '-subj', '/CN=kube-apiserver']);
  ssl(['x509', '-req', '-in', 'apiserver.csr', '-CA', 'kube-ca.pem', '-CAkey', 'kube-ca.key', '-CAcreateserial', '-out', 'apiserver.pem', '-days', '2', '-extfile', 'server.cnf']);
  const f = (n: string): string => readFileSync(join(dir, n), 'utf8');
  return { ca: f('kube-ca.pem'), cert: f('apiserver.pem'), key: f('apiserver.key') };
}

function statusBody(code: number, reason: string, message: string): Obj {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

/** The value at a JSON pointer, or undefined. */
function pointer(doc: unknown, path: string): unknown {
  let v: unknown = doc;
  for (const t of path.slice(1).split('/').map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))) {
    if (typeof v !== 'object' || v === null || !Object.hasOwn(v, t)) return undefined;
    v = (v as Obj)[t];
  }
  return v;
}

function checkCaBundles(o: Obj): string | undefined {
  for (const [i, w] of (o.webhooks as Obj[]).entries()) {
    const b = w.clientConfig?.caBundle;
    if (b === undefined) continue;
    const pem = typeof b === 'string' && /^[A-Za-z0-9+/]*={0,2}$/.test(b) ? Buffer.from(b, 'base64').toString('utf8') : '';
    if (!/^(-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]+-----END CERTIFICATE-----\n?)+$/.test(pem)) return `webhooks[${i}].clientConfig.caBundle: Invalid value: not base64 PEM certificates`;
  }
  return undefined;
}

export async function startKubeApiStandIn(dir: string, initial: Obj): Promise<KubeApiStandIn> {
  mkdirSync(dir, { recursive: true });
  const pki = makeServerPki(dir);
  const credentialsDir = join(dir, 'serviceaccount');
  mkdirSync(credentialsDir, { recursive: true, mode: 0o700 });
  writeFileSync(join(credentialsDir, 'ca.crt'), pki.ca);
  writeFileSync(join(credentialsDir, 'namespace'), 'tessera');
  const writeTokenFile = (t: string): void => writeFileSync(join(credentialsDir, 'token'), t, { mode: 0o600 });
  let token = `kube-sa-${randomBytes(24).toString('base64url')}`;
  writeTokenFile(token);

  let rv = 1000;
  let obj: Obj = structuredClone(initial);
  obj.metadata = { ...obj.metadata, uid: '6b3c4c2e-0d0a-4d7e-9a51-7a8f3e0f0001', resourceVersion: String(rv), generation: 1, creationTimestamp: '2026-01-01T00:00:00Z' };
  new MutatingWebhookConfiguration(obj as never).validate();
  const write = (next: Obj): void => {
    next.metadata.resourceVersion = String(++rv);
    if (!isDeepStrictEqual(next.webhooks, obj.webhooks)) next.metadata.generation += 1;
    obj = next;
  };
  const requests: KubeRequest[] = [];
  let onGet: (() => void) | undefined;
  let conflict = false;

  const answer = (req: IncomingMessage, res: ServerResponse, status: number, body: Obj, extra: Partial<KubeRequest> = {}): void => {
    const path = (req.url ?? '').split('?')[0]!;
    requests.push({ method: req.method ?? '', path, status, authorized: status !== 401, ...extra });
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  };

  const handle = (req: IncomingMessage, res: ServerResponse, body: Buffer): void => {
    const path = (req.url ?? '').split('?')[0]!;
    if (req.headers.authorization !== `Bearer ${token}`) return answer(req, res, 401, statusBody(401, 'Unauthorized', 'Unauthorized'));
    if (!path.startsWith(PREFIX)) return answer(req, res, 404, statusBody(404, 'NotFound', 'the server could not find the requested resource'));
    const name = decodeURIComponent(path.slice(PREFIX.length));
    if (name !== obj.metadata.name) return answer(req, res, 404, statusBody(404, 'NotFound', `mutatingwebhookconfigurations.admissionregistration.k8s.io "${name}" not found`));
    if (req.method === 'GET') {
      answer(req, res, 200, obj);
      const fn = onGet;
      onGet = undefined;
      fn?.();
      return;
    }
    if (req.method !== 'PATCH') return answer(req, res, 405, statusBody(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource'));
    if ((req.headers['content-type'] ?? '').split(';')[0]!.trim() !== 'application/json-patch+json') return answer(req, res, 415, statusBody(415, 'UnsupportedMediaType', 'the body of the request was in an unknown format'));
    let ops: (PatchOp | { op: 'test'; path: string; value: unknown })[];
    try {
      ops = JSON.parse(body.toString('utf8'));
      if (!Array.isArray(ops)) throw new Error('not a list');
    } catch {
      return answer(req, res, 400, statusBody(400, 'BadRequest', 'error decoding patch'));
    }
    if (conflict) {
      conflict = false;
      return answer(req, res, 409, statusBody(409, 'Conflict', `Operation cannot be fulfilled on mutatingwebhookconfigurations.admissionregistration.k8s.io "${name}": the object has been modified; please apply your changes to the latest version and try again`), { patch: ops });
    }
    for (const op of ops) {
      if (op.op === 'test' && !isDeepStrictEqual(pointer(obj, op.path), op.value)) {
        return answer(req, res, 422, statusBody(422, 'Invalid', `the server rejected our request due to an error in our request: testing value ${op.path} failed`), { patch: ops });
      }
    }
    let next: Obj;
    try {
      next = applyJsonPatch(obj, ops.filter((op): op is PatchOp => op.op !== 'test'));
      new MutatingWebhookConfiguration(next as never).validate();
      const bad = checkCaBundles(next);
      if (bad) throw new Error(bad);
      if (next.metadata.resourceVersion !== obj.metadata.resourceVersion || next.metadata.name !== obj.metadata.name) throw new Error('metadata.resourceVersion and metadata.name may not be patched here');
    } catch (err) {
      return answer(req, res, 422, statusBody(422, 'Invalid', `MutatingWebhookConfiguration.admissionregistration.k8s.io "${name}" is invalid: ${(err as Error).message}`), { patch: ops });
    }
    write(next);
    answer(req, res, 200, obj, { patch: ops });
  };

  const server: Server = createServer({ cert: pki.cert, key: pki.key }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => handle(req, res, Buffer.concat(chunks)));
  });
  const listen = (port: number): Promise<number> => new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve((server.address() as { port: number }).port);
    });
  });
  const stop = (): Promise<void> => new Promise((resolve) => {
    server.closeAllConnections();
    if (!server.listening) return resolve();
    server.close(() => resolve());
  });
  const port = await listen(0);

  return {
    url: `https://127.0.0.1:${port}`,
    credentialsDir,
    get token() { return token; },
    requests,
    object: () => structuredClone(obj),
    mutate: (fn) => {
      const next = structuredClone(obj);
      fn(next);
      write(next);
    },
    setToken: (t) => { token = t; },
    writeTokenFile,
    afterNextGet: (fn) => { onGet = fn; },
    conflictOnce: () => { conflict = true; },
    pause: stop,
    resume: async () => { await listen(port); },
    close: stop,
  };
}
