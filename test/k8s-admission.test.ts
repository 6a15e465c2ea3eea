/**
 * The webhook's pure parts: the AdmissionReview v1 parser (fast-check: any bytes or JSON give a
 * request or TESSERA_K8S_REVIEW_INVALID, nothing else; a valid review reads back what it holds), the
 * injection patch (fast-check over pod shapes: it applies, the result passes the Kubernetes Pod
 * schema, app containers get the socket and env exactly once, the sidecar is added once, nothing of
 * the pod is lost) in both sidecar modes, and the flag parsers.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Pod } from 'kubernetes-models/v1/Pod';
import { isTesseraError } from '../src/core/errors.js';
import { admissionResponse, parseAdmissionReview } from '../src/k8s/admission.js';
import { alreadyInjected, checkIdTemplate, injectionPatch, parseAttributeRule, podIdentity, PodRefused, SIDECAR_NAME, type InjectConfig } from '../src/k8s/inject.js';
import { applyJsonPatch } from '../src/k8s/jsonpatch.js';
import { parseNamespaces } from '../src/cli/k8s.js';
import { expectTesseraError } from './support/expect.js';

const CFG: InjectConfig = {
  idTemplate: 'spiffe://example.org/ns/{namespace}/sa/{serviceAccount}', attributes: [{ name: 'app', label: 'app.kubernetes.io/name' }],
  serverUrl: 'https://tessera.tessera.svc:8443', image: 'tessera:1', extraArgs: ['--inbound', '0.0.0.0:9443', '--app', '127.0.0.1:8080'],
  bundleConfigMap: 'tessera-bundle', sidecarUid: 65532, sidecarMode: 'native',
};

function parseOutcome(body: string | Buffer): 'ok' | 'invalid' {
  try {
    parseAdmissionReview(body);
    return 'ok';
  } catch (err) {
    if (isTesseraError(err) && err.code === 'TESSERA_K8S_REVIEW_INVALID') return 'invalid';
    throw err;
  }
}

describe('parseAdmissionReview', () => {
  it('never throws anything but TESSERA_K8S_REVIEW_INVALID, for any bytes or any JSON', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), (b) => {
      parseOutcome(Buffer.from(b));
    }), { numRuns: 500 });
    fc.assert(fc.property(fc.jsonValue({ maxDepth: 4 }), (v) => {
      parseOutcome(JSON.stringify(v));
    }), { numRuns: 500 });
    // Near-misses: a valid envelope with arbitrary request fields.
    fc.assert(fc.property(fc.dictionary(fc.constantFrom('uid', 'kind', 'operation', 'namespace', 'name', 'object', 'oldObject', 'dryRun', 'subResource', 'resource'), fc.jsonValue({ maxDepth: 2 })), (request) => {
      parseOutcome(JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request }));
    }), { numRuns: 1000 });
  });

  it('reads back what a valid review holds', () => {
    const ns = fc.stringMatching(/^[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?$/);
    fc.assert(fc.property(fc.uuid(), fc.constantFrom('CREATE', 'UPDATE', 'DELETE', 'CONNECT'), ns, fc.boolean(), fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 2 })), (uid, operation, namespace, dryRun, object) => {
      const r = parseAdmissionReview(JSON.stringify({
        apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview',
        request: { uid, kind: { group: '', version: 'v1', kind: 'Pod' }, resource: { group: '', version: 'v1', resource: 'pods' }, operation, namespace, dryRun, object, userInfo: { username: 'x' } },
      }));
      expect(r).toMatchObject({ uid, operation, namespace, dryRun, resource: 'pods', kind: { kind: 'Pod' } });
      expect(r.object).toEqual(JSON.parse(JSON.stringify(object)));
    }), { numRuns: 300 });
  });

  it('refuses the specific wrong shapes', () => {
    const base = { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: { uid: 'u1', kind: { group: '', version: 'v1', kind: 'Pod' }, operation: 'CREATE', namespace: 'a' } };
    expect(parseOutcome(JSON.stringify(base))).toBe('ok');
    for (const bad of [
      { ...base, apiVersion: 'admission.k8s.io/v1beta1' }, { ...base, kind: 'Pod' }, { ...base, request: null },
      { ...base, request: { ...base.request, uid: 'a b' } }, { ...base, request: { ...base.request, uid: 'x'.repeat(200) } },
      { ...base, request: { ...base.request, kind: 'Pod' } }, { ...base, request: { ...base.request, operation: 'create' } },
      { ...base, request: { ...base.request, namespace: 'Not_A_Namespace' } }, { ...base, request: { ...base.request, dryRun: 'yes' } },
      { ...base, request: { ...base.request, object: 'pod' } }, [base],
    ]) expect(parseOutcome(JSON.stringify(bad)), JSON.stringify(bad)).toBe('invalid');
    expect(parseOutcome('\u0000')).toBe('invalid');
  });

  it('writes responses the API server reads: patch base64 JSON, refusal status', () => {
    const ok = admissionResponse('u1', { allowed: true, patch: [{ op: 'add', path: '/a', value: 1 }] });
    expect(ok).toEqual({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response: { uid: 'u1', allowed: true, patchType: 'JSONPatch', patch: Buffer.from('[{"op":"add","path":"/a","value":1}]').toString('base64') } });
    expect(admissionResponse('u2', { allowed: false, message: 'no' }).response).toEqual({ uid: 'u2', allowed: false, status: { code: 403, message: 'no', reason: 'Forbidden' } });
  });
});

const name = fc.stringMatching(/^[a-z]([a-z0-9-]{0,10}[a-z0-9])?$/);
const container = fc.record({
  name, image: fc.constant('app:1'),
  env: fc.option(fc.array(fc.record({ name: fc.stringMatching(/^[A-Z][A-Z0-9_]{0,8}$/), value: fc.string({ maxLength: 5 }) }), { maxLength: 3 }), { nil: undefined }),
  volumeMounts: fc.option(fc.array(fc.record({ name: fc.constant('data'), mountPath: fc.constantFrom('/data', '/cache') }), { maxLength: 1 }), { nil: undefined }),
}, { requiredKeys: ['name', 'image'] });

const podArb = fc.record({
  labels: fc.option(fc.dictionary(fc.constantFrom('app.kubernetes.io/name', 'tier'), fc.stringMatching(/^[a-z0-9]{1,10}$/)), { nil: undefined }),
  annotations: fc.option(fc.dictionary(fc.constantFrom('a.example/x', 'b'), fc.string({ maxLength: 5 })), { nil: undefined }),
  containers: fc.uniqueArray(container, { minLength: 1, maxLength: 4, selector: (c) => c.name }),
  initContainers: fc.option(fc.array(fc.record({ name: fc.constantFrom('init-a', 'init-b'), image: fc.constant('init:1') }), { maxLength: 1 }), { nil: undefined }),
  volumes: fc.option(fc.constant([{ name: 'data', emptyDir: {} }]), { nil: undefined }),
  sa: fc.option(name, { nil: undefined }),
  mode: fc.constantFrom<'native' | 'container'>('native', 'container'),
}).map((p) => ({
  mode: p.mode,
  pod: {
    apiVersion: 'v1', kind: 'Pod',
    metadata: { generateName: 'p-', ...(p.labels ? { labels: p.labels } : {}), ...(p.annotations ? { annotations: p.annotations } : {}) },
    spec: {
      ...(p.sa ? { serviceAccountName: p.sa } : {}), securityContext: { runAsUser: 1000 },
      containers: p.containers, ...(p.initContainers ? { initContainers: p.initContainers } : {}), ...(p.volumes ? { volumes: p.volumes } : {}),
    },
  } as Record<string, any>,
}));

describe('injectionPatch', () => {
  it('applies to any pod shape and yields a schema-valid Pod with the injection exactly once', () => {
    fc.assert(fc.property(podArb, ({ pod, mode }) => {
      const cfg = { ...CFG, sidecarMode: mode };
      const id = podIdentity(cfg, 'shop', pod);
      expect(id.spiffeId).toBe(`spiffe://example.org/ns/shop/sa/${pod.spec.serviceAccountName ?? 'default'}`);
      const patch = injectionPatch(cfg, pod, { spiffeId: id.spiffeId, token: 'tjt_x', podRef: 'r'.repeat(24) });
      const out = applyJsonPatch(pod, patch);
      new Pod(out).validate();
      expect(alreadyInjected(out)).toBe(true);
      const all = [...out.spec.containers, ...(out.spec.initContainers ?? [])];
      expect(all.filter((c: { name: string }) => c.name === SIDECAR_NAME)).toHaveLength(1);
      const apps = out.spec.containers.filter((c: { name: string }) => c.name !== SIDECAR_NAME);
      expect(apps.map((c: { name: string }) => c.name)).toEqual(pod.spec.containers.map((c: { name: string }) => c.name));
      for (const [i, c] of apps.entries()) {
        expect(c.env.filter((e: { name: string }) => e.name === 'SPIFFE_ENDPOINT_SOCKET').length).toBe(1);
        expect(c.volumeMounts.filter((m: { name: string }) => m.name === 'tessera-workload-api')).toHaveLength(1);
        // What the container had is kept, in order.
        expect(c.volumeMounts.slice(0, pod.spec.containers[i].volumeMounts?.length ?? 0)).toEqual(pod.spec.containers[i].volumeMounts ?? []);
      }
      if (mode === 'native') expect(out.spec.initContainers[0].name).toBe(SIDECAR_NAME);
      expect(out.metadata.annotations).toMatchObject(pod.metadata.annotations ?? {});
      expect(pod.spec.volumes?.length ?? 0).toBe(out.spec.volumes.length - 3);
    }), { numRuns: 300 });
  });

  it('refuses pods it cannot give an identity', () => {
    const base = { metadata: {}, spec: { securityContext: { runAsUser: 1 }, containers: [{ name: 'a', image: 'x' }] } };
    expect(podIdentity(CFG, 'ns', base).selector).toBe('unix:uid:1');
    const cases: Record<string, unknown>[] = [
      { spec: { containers: [] } },
      { spec: { containers: [{ name: 'a', securityContext: { runAsUser: 1 } }, { name: 'b', securityContext: { runAsUser: 2 } }] } },
      { spec: { containers: [{ name: 'a' }] } },
      { ...base, spec: { ...base.spec, serviceAccountName: 'Bad_SA' } },
      { ...base, metadata: { labels: { 'app.kubernetes.io/name': 'a b' } } },
    ];
    for (const p of cases) expect(() => podIdentity(CFG, 'ns', p), JSON.stringify(p)).toThrow(PodRefused);
  });
});

describe('applyJsonPatch', () => {
  it('refuses paths that do not resolve, without touching its input', () => {
    const doc = { a: [1], b: { c: 1 } };
    for (const op of [{ op: 'add', path: '/x/y', value: 1 }, { op: 'replace', path: '/b/z', value: 1 }, { op: 'add', path: '/a/5', value: 1 }, { op: 'remove', path: '' }, { op: 'add', path: 'a', value: 1 }] as const) {
      expectTesseraError(() => applyJsonPatch(doc, [op]), 'TESSERA_INTERNAL');
    }
    expect(applyJsonPatch(doc, [{ op: 'add', path: '/a/-', value: 2 }, { op: 'add', path: '/b/d~1e', value: 3 }, { op: 'remove', path: '/b/c' }])).toEqual({ a: [1, 2], b: { 'd/e': 3 } });
    expect(doc).toEqual({ a: [1], b: { c: 1 } });
  });
});

describe('flags', () => {
  it('--attribute, --id-template, --namespaces', () => {
    expect(parseAttributeRule('app=label:app.kubernetes.io/name')).toEqual({ name: 'app', label: 'app.kubernetes.io/name' });
    for (const bad of ['app', 'owner=label:x', 'app=annotation:x', 'app=label:', 'app=label:-x']) expectTesseraError(() => parseAttributeRule(bad), 'TESSERA_CONFIG_INVALID');
    checkIdTemplate('spiffe://example.org/ns/{namespace}/sa/{serviceAccount}');
    for (const bad of ['spiffe://example.org/ns/{pod}', 'https://example.org/{namespace}', 'spiffe://example.org', 'spiffe://Example.org/{namespace}']) expectTesseraError(() => checkIdTemplate(bad), 'TESSERA_CONFIG_INVALID');
    expect([...parseNamespaces('shop, payments')]).toEqual(['shop', 'payments']);
    for (const bad of ['', ',', 'Shop', '*']) expectTesseraError(() => parseNamespaces(bad), 'TESSERA_CONFIG_INVALID');
  });
});
