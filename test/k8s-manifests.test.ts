/**
 * Offline checks of deploy/kubernetes/ and deploy/helm/tessera/ (no cluster, no helm here): every
 * object validates against the Kubernetes OpenAPI schemas of kubernetes-models; the webhook
 * configuration fails closed only for opted-in namespaces and never blocks pod deletion; the
 * Deployment's arguments are accepted by the real CLI (it gets as far as looking for the admin
 * credential); the Helm chart, rendered by test/support/helm-lite.ts (the subset the chart keeps to),
 * yields valid objects that agree with the static manifests. The API server's side (deploy/kubernetes/
 * apiserver/: AdmissionConfiguration and the kubeconfig with its client certificate) has no OpenAPI
 * schema (it is a file kube-apiserver reads, not an API object): its structure and its agreement
 * with the webhook's Service and --client-* flags are checked instead. The webhook's own RBAC (get and
 * patch of its MutatingWebhookConfiguration, for caBundle) is checked exact, in both, with the token
 * mounted on the webhook's pod only.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { Namespace } from 'kubernetes-models/v1/Namespace';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { Service } from 'kubernetes-models/v1/Service';
import { PersistentVolumeClaim } from 'kubernetes-models/v1/PersistentVolumeClaim';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { DaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import { ClusterRole } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole';
import { ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding';
import { Role } from 'kubernetes-models/rbac.authorization.k8s.io/v1/Role';
import { RoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/RoleBinding';
import { MutatingWebhookConfiguration } from 'kubernetes-models/admissionregistration.k8s.io/v1/MutatingWebhookConfiguration';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy';
import { parseOnOff } from '../src/cli/k8s.js';
import { renderTemplate } from './support/helm-lite.js';
import { makeClusterPki } from './support/k8s-pki.js';

type Obj = Record<string, any>;
const MODELS: Record<string, new (o: any) => { validate(): void }> = {
  'v1/Namespace': Namespace, 'v1/ServiceAccount': ServiceAccount, 'v1/Service': Service, 'v1/PersistentVolumeClaim': PersistentVolumeClaim,
  'apps/v1/Deployment': Deployment, 'apps/v1/DaemonSet': DaemonSet,
  'rbac.authorization.k8s.io/v1/ClusterRole': ClusterRole, 'rbac.authorization.k8s.io/v1/ClusterRoleBinding': ClusterRoleBinding,
  'rbac.authorization.k8s.io/v1/Role': Role, 'rbac.authorization.k8s.io/v1/RoleBinding': RoleBinding,
  'admissionregistration.k8s.io/v1/MutatingWebhookConfiguration': MutatingWebhookConfiguration,
  'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy,
};

function validate(o: Obj): void {
  const Model = MODELS[`${o.apiVersion}/${o.kind}`];
  if (!Model) throw new Error(`no schema for ${o.apiVersion} ${o.kind}`);
  new Model(o).validate();
}

function docs(text: string, where: string): Obj[] {
  return parseAllDocuments(text).map((d) => {
    if (d.errors.length > 0) throw new Error(`${where}: ${d.errors[0]!.message}`);
    return d.toJS() as Obj;
  }).filter((o) => o !== null);
}

const DIR = 'deploy/kubernetes';
const manifests = readdirSync(DIR).filter((f) => f.endsWith('.yaml')).flatMap((f) => docs(readFileSync(join(DIR, f), 'utf8'), f));
const find = (objs: Obj[], kind: string, name: string): Obj => {
  const o = objs.find((x) => x.kind === kind && x.metadata.name === name);
  if (!o) throw new Error(`no ${kind} ${name}`);
  return o;
};

/**
 * The webhook's RBAC in `objs` (static or rendered): exactly get and patch of its own
 * MutatingWebhookConfiguration, bound to its ServiceAccount and to nothing else; the token mounted
 * on its pod only; the flags naming that object. Returns the role and binding for comparisons.
 */
function checkWebhookRbac(objs: Obj[]): { role: Obj; binding: Obj } {
  const dep = find(objs, 'Deployment', 'tessera-webhook');
  const pod = dep.spec.template.spec;
  const args: string[] = pod.containers[0].args;
  const mwc = objs.find((o) => o.kind === 'MutatingWebhookConfiguration')!;
  const role = find(objs, 'ClusterRole', 'tessera-webhook-cabundle');
  expect(role.rules).toEqual([{ apiGroups: ['admissionregistration.k8s.io'], resources: ['mutatingwebhookconfigurations'], resourceNames: [mwc.metadata.name], verbs: ['get', 'patch'] }]);
  const binding = find(objs, 'ClusterRoleBinding', 'tessera-webhook-cabundle');
  expect(binding.roleRef).toEqual({ apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role.metadata.name });
  expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: pod.serviceAccountName, namespace: dep.metadata.namespace }]);
  // No other binding grants anything to a service account (Tessera's pods get this role only).
  const toServiceAccounts = objs.filter((o) => /RoleBinding$/.test(o.kind) && o.subjects.some((x: Obj) => x.kind === 'ServiceAccount'));
  expect(toServiceAccounts.map((o) => o.metadata.name)).toEqual([binding.metadata.name]);
  expect(args).toEqual(expect.arrayContaining(['--patch-ca-bundle=true', `--webhook-configuration=${mwc.metadata.name}`]));
  // The token on the webhook's pod only: the ServiceAccounts and the node agent mount none.
  expect(pod.automountServiceAccountToken).toBe(true);
  for (const sa of objs.filter((o) => o.kind === 'ServiceAccount')) expect(sa.automountServiceAccountToken).toBe(false);
  for (const ds of objs.filter((o) => o.kind === 'DaemonSet')) expect(ds.spec.template.spec.automountServiceAccountToken).toBe(false);
  return { role, binding };
}

describe('deploy/kubernetes', () => {
  it('every object validates against the Kubernetes schema', () => {
    expect(manifests.length).toBeGreaterThanOrEqual(15);
    for (const o of manifests) validate(o);
    expect(new Set(manifests.map((o) => o.kind))).toEqual(new Set(['Namespace', 'ServiceAccount', 'ClusterRole', 'Role', 'RoleBinding', 'ClusterRoleBinding', 'PersistentVolumeClaim', 'Deployment', 'Service', 'MutatingWebhookConfiguration', 'DaemonSet', 'NetworkPolicy']));
  });

  it('the validator does catch a broken object (so the check above can fail)', () => {
    const d = structuredClone(find(manifests, 'Deployment', 'tessera-webhook'));
    delete d.spec.template.spec.containers[0].name;
    expect(() => validate(d)).toThrow(/name/);
    const m = structuredClone(find(manifests, 'MutatingWebhookConfiguration', 'tessera-webhook'));
    m.webhooks[0].timeoutSeconds = 'ten';
    expect(() => validate(m)).toThrow(/timeoutSeconds/);
    const n = structuredClone(find(manifests, 'NetworkPolicy', 'tessera-webhook'));
    n.spec.ingress[0].from[0].ipBlock = {};
    expect(() => validate(n)).toThrow(/cidr/);
  });

  it('the NetworkPolicy admits only the webhook port of the webhook pods, from the API server CIDR', () => {
    const n = find(manifests, 'NetworkPolicy', 'tessera-webhook');
    const dep = find(manifests, 'Deployment', 'tessera-webhook');
    const container = dep.spec.template.spec.containers[0];
    expect(n.metadata.namespace).toBe(dep.metadata.namespace);
    expect(n.spec.podSelector.matchLabels).toEqual(dep.spec.selector.matchLabels);
    expect(n.spec.policyTypes).toEqual(['Ingress']);
    expect(n.spec.ingress).toHaveLength(1);
    expect(n.spec.ingress[0].ports).toEqual([{ protocol: 'TCP', port: container.ports[0].containerPort }]);
    expect(container.args).toContain(`--listen=0.0.0.0:${container.ports[0].containerPort}`);
    expect(n.spec.ingress[0].from.every((f: Obj) => Object.keys(f).join() === 'ipBlock' && /^[0-9.]+\/\d+$/.test(f.ipBlock.cidr))).toBe(true);
  });

  it('the API server presents the client certificate the webhook asks for (deploy/kubernetes/apiserver)', () => {
    const ac = parse(readFileSync(join(DIR, 'apiserver/admission-configuration.yaml'), 'utf8')) as Obj;
    expect(ac).toMatchObject({ apiVersion: 'apiserver.config.k8s.io/v1', kind: 'AdmissionConfiguration' });
    const plugin = ac.plugins.find((p: Obj) => p.name === 'MutatingAdmissionWebhook');
    expect(plugin.configuration).toMatchObject({ apiVersion: 'apiserver.config.k8s.io/v1', kind: 'WebhookAdmissionConfiguration' });
    expect(plugin.configuration.kubeConfigFile).toMatch(/\/webhook-kubeconfig\.yaml$/);
    const kc = parse(readFileSync(join(DIR, 'apiserver/webhook-kubeconfig.yaml'), 'utf8')) as Obj;
    expect(kc).toMatchObject({ apiVersion: 'v1', kind: 'Config' });
    const svc = find(manifests, 'Service', 'tessera-webhook');
    // The API server picks the credential whose user name is the Service's DNS name.
    expect(kc.users).toEqual([{ name: `${svc.metadata.name}.${svc.metadata.namespace}.svc`, user: { 'client-certificate': expect.stringMatching(/\.crt$/), 'client-key': expect.stringMatching(/\.key$/) } }]);
    const dep = find(manifests, 'Deployment', 'tessera-webhook');
    const args: string[] = dep.spec.template.spec.containers[0].args;
    expect(args).toContain('--client-name=tessera-webhook-apiserver');
    const caArg = args.find((a) => a.startsWith('--client-ca='))!.slice('--client-ca='.length);
    const mount = dep.spec.template.spec.containers[0].volumeMounts.find((m: Obj) => caArg.startsWith(`${m.mountPath}/`));
    const volume = dep.spec.template.spec.volumes.find((v: Obj) => v.name === mount.name);
    expect(volume.configMap.name).toBe('tessera-apiserver-client-ca');
    expect(caArg.slice(mount.mountPath.length + 1)).toBe('ca.crt');
  });

  it('the webhook\'s RBAC is exactly get and patch of its MutatingWebhookConfiguration; only its pod mounts the token', () => {
    checkWebhookRbac(manifests);
    // The people's role (rbac.yaml) is bound to a group, not to a pod.
    expect(find(manifests, 'ClusterRoleBinding', 'tessera-operator').subjects).toEqual([{ apiGroup: 'rbac.authorization.k8s.io', kind: 'Group', name: 'tessera-operators' }]);
  });

  it('fails closed only for opted-in namespaces, and never blocks pod deletion', () => {
    const m = find(manifests, 'MutatingWebhookConfiguration', 'tessera-webhook');
    const [create, del] = m.webhooks;
    expect(create).toMatchObject({ failurePolicy: 'Fail', sideEffects: 'NoneOnDryRun', admissionReviewVersions: ['v1'], namespaceSelector: { matchLabels: { 'tessera.io/inject': 'enabled' } }, rules: [{ operations: ['CREATE'], resources: ['pods'] }] });
    expect(del).toMatchObject({ failurePolicy: 'Ignore', namespaceSelector: { matchLabels: { 'tessera.io/inject': 'enabled' } }, rules: [{ operations: ['DELETE'], resources: ['pods'] }] });
    const svc = find(manifests, 'Service', 'tessera-webhook');
    const args: string[] = find(manifests, 'Deployment', 'tessera-webhook').spec.template.spec.containers[0].args;
    for (const w of m.webhooks) expect(w.clientConfig.service).toEqual({ name: svc.metadata.name, namespace: svc.metadata.namespace, path: '/mutate', port: svc.spec.ports[0].port });
    expect(args).toContain(`--dns-name=${svc.metadata.name}.${svc.metadata.namespace}.svc`);
    // The webhook's own namespace is not opted in.
    expect(find(manifests, 'Namespace', 'tessera').metadata.labels?.['tessera.io/inject']).toBeUndefined();
  });

  it('the Deployment\'s arguments are accepted by the CLI (it stops only for the missing admin credential)', () => {
    const args: string[] = find(manifests, 'Deployment', 'tessera-webhook').spec.template.spec.containers[0].args;
    const tmp = mkdtempSync(join(tmpdir(), 'tessera-k8s-manifest-'));
    const pki = makeClusterPki(tmp);
    const local = args.map((a) => a.replace('--admin-dir=/etc/tessera/admin', '--admin-dir=/nonexistent/tessera-admin').replace(/^--client-ca=.*$/, `--client-ca=${pki.caFile}`));
    let out = '';
    let status = 0;
    try {
      execFileSync(process.execPath, ['dist/src/cli/main.js', ...local], { encoding: 'utf8', timeout: 15_000, env: { ...process.env, TESSERA_JOIN_TOKEN: '' } });
    } catch (err) {
      out = String((err as { stdout?: string }).stdout ?? '');
      status = (err as { status: number }).status;
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
    expect(status).toBe(2);
    expect(JSON.parse(out).error.code).toBe('TESSERA_CREDENTIAL_MISSING');
  });
});

describe('deploy/helm/tessera', () => {
  const CHART = 'deploy/helm/tessera';
  const chart = parse(readFileSync(join(CHART, 'Chart.yaml'), 'utf8')) as Obj;
  const values = parse(readFileSync(join(CHART, 'values.yaml'), 'utf8')) as Obj;
  const renderAll = (v: Obj, namespace = 'tessera'): Obj[] => readdirSync(join(CHART, 'templates')).filter((f) => f.endsWith('.yaml'))
    .flatMap((f) => docs(renderTemplate(readFileSync(join(CHART, 'templates', f), 'utf8'), { Values: v, Release: { Name: 'tessera', Namespace: namespace }, Chart: { Name: chart.name, AppVersion: chart.appVersion } }), f));

  it('Chart.yaml is a v2 application chart', () => {
    expect(chart).toMatchObject({ apiVersion: 'v2', name: 'tessera', type: 'application' });
    expect(chart.version).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it('renders with the default values to valid objects that agree with deploy/kubernetes', () => {
    const objs = renderAll(values);
    for (const o of objs) validate(o);
    expect(objs.some((o) => o.kind === 'DaemonSet')).toBe(false);
    const mwc = find(objs, 'MutatingWebhookConfiguration', 'tessera-webhook');
    const staticMwc = find(manifests, 'MutatingWebhookConfiguration', 'tessera-webhook');
    expect(mwc.webhooks).toEqual(staticMwc.webhooks);
    const dep = find(objs, 'Deployment', 'tessera-webhook');
    const staticDep = find(manifests, 'Deployment', 'tessera-webhook');
    expect(dep.spec.template.spec.volumes).toEqual(staticDep.spec.template.spec.volumes);
    expect(find(objs, 'NetworkPolicy', 'tessera-webhook').spec).toEqual(find(manifests, 'NetworkPolicy', 'tessera-webhook').spec);
    expect(dep.spec.template.spec.containers[0].args).toEqual(expect.arrayContaining(staticDep.spec.template.spec.containers[0].args.filter((a: string) => !a.startsWith('--server') && !a.startsWith('--sidecar-image'))));
    const rbac = checkWebhookRbac(objs);
    const staticRbac = checkWebhookRbac(manifests);
    expect(rbac.role.rules).toEqual(staticRbac.role.rules);
    expect(rbac.binding.subjects).toEqual(staticRbac.binding.subjects);
    expect(dep.spec.template.spec.automountServiceAccountToken).toBe(staticDep.spec.template.spec.automountServiceAccountToken);
  });

  it('with webhook.patchCaBundle false: no role, no token, --patch-ca-bundle=false (which the CLI accepts)', () => {
    const v = structuredClone(values);
    v.webhook.patchCaBundle = false;
    const objs = renderAll(v);
    for (const o of objs) validate(o);
    expect(objs.filter((o) => /Role/.test(o.kind))).toEqual([]);
    const pod = find(objs, 'Deployment', 'tessera-webhook').spec.template.spec;
    expect(pod.automountServiceAccountToken).toBe(false);
    expect(pod.containers[0].args).toContain('--patch-ca-bundle=false');
    expect(parseOnOff('false')).toBe(false);
    expect(parseOnOff('true')).toBe(true);
    expect(() => parseOnOff('no')).toThrow(/true or false/);
  });

  it('renders every option: caBundle, the node agent, lists, another namespace', () => {
    const v = structuredClone(values);
    v.webhook.caBundle = Buffer.from('-----BEGIN CERTIFICATE-----\n').toString('base64');
    v.webhook.namespaces = ['a', 'b'];
    v.webhook.sidecarArgs = ['--inbound', '0.0.0.0:9443'];
    v.nodeAgent.enabled = true;
    v.webhook.clientNames = ['apiserver-a', 'apiserver-b'];
    v.webhook.apiServerCidrs = ['10.1.0.0/24', '192.168.7.0/28'];
    const objs = renderAll(v, 'platform');
    for (const o of objs) validate(o);
    const mwc = find(objs, 'MutatingWebhookConfiguration', 'tessera-webhook');
    for (const w of mwc.webhooks) expect(w.clientConfig).toMatchObject({ caBundle: v.webhook.caBundle, service: { namespace: 'platform' } });
    const args: string[] = find(objs, 'Deployment', 'tessera-webhook').spec.template.spec.containers[0].args;
    expect(args).toEqual(expect.arrayContaining(['--namespaces=a,b', '--dns-name=tessera-webhook.platform.svc', '--sidecar-arg=--inbound', '--sidecar-arg=0.0.0.0:9443', '--attribute=app=label:app.kubernetes.io/name', '--client-name=apiserver-a,apiserver-b']));
    expect(find(objs, 'NetworkPolicy', 'tessera-webhook').spec.ingress[0].from).toEqual([{ ipBlock: { cidr: '10.1.0.0/24' } }, { ipBlock: { cidr: '192.168.7.0/28' } }]);
    expect(find(objs, 'DaemonSet', 'tessera-node-agent').metadata.namespace).toBe('platform');
    expect(checkWebhookRbac(objs).binding.subjects).toEqual([{ kind: 'ServiceAccount', name: 'tessera-webhook', namespace: 'platform' }]);
  });

  it('the renderer refuses what it does not implement', () => {
    const ctx = { Values: { a: 1 }, Release: { Name: 'r', Namespace: 'n' }, Chart: {} };
    expect(() => renderTemplate('{{ include "x" . }}', ctx)).toThrow(/unsupported/);
    expect(() => renderTemplate('{{ .Values.b }}', ctx)).toThrow(/no value/);
    expect(() => renderTemplate('{{ .Values.a | b64enc }}', ctx)).toThrow(/unsupported/);
    expect(() => renderTemplate('{{ if .Values.a }}x', ctx)).toThrow(/unclosed/);
    expect(renderTemplate('a\n  {{- if .Values.a }}\n  b: {{ .Values.a | quote }}\n  {{- end }}\n', ctx)).toBe('a\n  b: "1"\n');
  });
});
