/**
 * What the webhook injects into a pod, as pure functions of the pod and the settings: the identity
 * (the entry template filled with the pod's namespace and service account, attributes from its
 * labels, the `unix:uid:N` selector the Workload API attests callers by) and the JSONPatch that adds
 * the agent sidecar, its one-time join token, the Workload API socket volume, and
 * SPIFFE_ENDPOINT_SOCKET on every app container.
 */
import { TesseraError } from '../core/errors.js';
import { parseSpiffeId } from '../core/spiffe-id.js';
import { DNS_SUBDOMAIN, isObject, pointerToken, type KubeObject, type PatchOp } from './admission.js';

/** The entry attributes the control plane knows (src/server/registry/routes.ts). */
export const ATTRIBUTE_NAMES = ['app', 'site', 'compliance', 'location', 'env'] as const;
export type AttributeName = (typeof ATTRIBUTE_NAMES)[number];
const ATTRIBUTE_VALUE = /^[A-Za-z0-9._:-]{1,128}$/;
/** A label key (optional prefix/ and name), as Kubernetes allows it. */
const LABEL_KEY = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;

export const ANNOTATION = {
  injected: 'tessera.io/injected',
  spiffeId: 'tessera.io/spiffe-id',
  /** The webhook's own reference of this pod (CREATE has no pod uid yet): the DELETE handler releases it. */
  podRef: 'tessera.io/pod-ref',
} as const;
export const SIDECAR_NAME = 'tessera-agent';
export const SOCKET_DIR = '/run/spiffe/workload';
export const SOCKET_PATH = `${SOCKET_DIR}/agent.sock`;
export const VOLUMES = { socket: 'tessera-workload-api', data: 'tessera-agent-data', bundle: 'tessera-bundle' } as const;
const DATA_DIR = '/var/lib/tessera-agent';
const BUNDLE_DIR = '/etc/tessera/bundle';

export interface AttributeRule { name: AttributeName; label: string }

export interface InjectConfig {
  /** e.g. `spiffe://prod.example/ns/{namespace}/sa/{serviceAccount}`. */
  idTemplate: string;
  attributes: AttributeRule[];
  /** The control plane URL the sidecar agents join. */
  serverUrl: string;
  image: string;
  /** More `tessera agent` arguments for the sidecar (e.g. --inbound/--app). */
  extraArgs: string[];
  /** ConfigMap (in the pod's namespace) holding `bundle.pem`, the trust bundle for the first connection. */
  bundleConfigMap: string;
  /** The sidecar's uid (non-root). */
  sidecarUid: number;
  /** native: an init container with restartPolicy Always (Kubernetes ≥ 1.29), started before the apps; container: appended to containers. */
  sidecarMode: 'native' | 'container';
}

/** Parses `--attribute NAME=label:KEY` (e.g. `app=label:app`). */
export function parseAttributeRule(spec: string): AttributeRule {
  const m = /^([a-z]+)=label:(.+)$/.exec(spec);
  if (!m || !(ATTRIBUTE_NAMES as readonly string[]).includes(m[1]!) || !LABEL_KEY.test(m[2]!)) {
    throw new TesseraError('TESSERA_CONFIG_INVALID', `--attribute must be NAME=label:KEY with NAME one of ${ATTRIBUTE_NAMES.join(', ')} and KEY a label key (got ${JSON.stringify(spec).slice(0, 80)})`);
  }
  return { name: m[1] as AttributeName, label: m[2]! };
}

/** Checks an ID template: only the placeholders `{namespace}` and `{serviceAccount}`, and a SPIFFE ID with a path once they are filled in. */
export function checkIdTemplate(template: string): void {
  const rest = template.replace(/\{namespace\}|\{serviceAccount\}/g, '');
  if (/[{}]/.test(rest)) throw new TesseraError('TESSERA_CONFIG_INVALID', '--id-template may use only {namespace} and {serviceAccount}');
  try {
    const id = parseSpiffeId(fillTemplate(template, 'ns', 'sa'));
    if (id.path === '') throw new Error('no path');
  } catch {
    throw new TesseraError('TESSERA_CONFIG_INVALID', `--id-template must be a SPIFFE ID with a path, e.g. spiffe://example.org/ns/{namespace}/sa/{serviceAccount}`);
  }
}

function fillTemplate(template: string, namespace: string, serviceAccount: string): string {
  return template.replace(/\{namespace\}/g, namespace).replace(/\{serviceAccount\}/g, serviceAccount);
}

export interface PodIdentity {
  spiffeId: string;
  serviceAccount: string;
  attributes: Partial<Record<AttributeName, string>>;
  /** `unix:uid:N`: the uid every app container runs as (the Workload API admits only it). */
  selector: string;
}

/** Why a pod of an opted-in namespace cannot be given an identity (the refusal shown by kubectl). */
export class PodRefused extends Error {}

const spec = (pod: KubeObject): Record<string, unknown> => (isObject(pod.spec) ? pod.spec : {});
const metadata = (pod: KubeObject): Record<string, unknown> => (isObject(pod.metadata) ? pod.metadata : {});
const list = (v: unknown): Record<string, unknown>[] => (Array.isArray(v) ? v.filter(isObject) : []);

function runAsUser(ctx: unknown): number | undefined {
  return isObject(ctx) && Number.isSafeInteger(ctx.runAsUser) ? (ctx.runAsUser as number) : undefined;
}

/** The identity of `pod` in `namespace`, or PodRefused. */
export function podIdentity(cfg: InjectConfig, namespace: string, pod: KubeObject): PodIdentity {
  const s = spec(pod);
  if (list(s.containers).length === 0) throw new PodRefused('the pod has no containers');
  const sa = typeof s.serviceAccountName === 'string' && s.serviceAccountName !== '' ? s.serviceAccountName : 'default';
  if (!DNS_SUBDOMAIN.test(sa)) throw new PodRefused(`the pod's serviceAccountName ${JSON.stringify(sa).slice(0, 80)} is not a valid name`);
  let spiffeId: string;
  try {
    spiffeId = parseSpiffeId(fillTemplate(cfg.idTemplate, namespace, sa)).id;
  } catch {
    throw new PodRefused(`the entry template gives no valid SPIFFE ID for namespace ${namespace} and service account ${sa}`);
  }
  const labels = isObject(metadata(pod).labels) ? (metadata(pod).labels as Record<string, unknown>) : {};
  const attributes: PodIdentity['attributes'] = {};
  for (const rule of cfg.attributes) {
    const v = labels[rule.label];
    if (typeof v !== 'string' || v === '') continue;
    if (!ATTRIBUTE_VALUE.test(v)) throw new PodRefused(`label ${rule.label} cannot be the entry attribute ${rule.name} (letters, digits, . _ : - only)`);
    attributes[rule.name] = v;
  }
  const podUid = runAsUser(s.securityContext);
  const uids = new Set<number | undefined>(list(s.containers).map((c) => runAsUser(c.securityContext) ?? podUid));
  if (uids.size !== 1 || uids.has(undefined)) {
    throw new PodRefused('every app container must run as one known uid (securityContext.runAsUser on the pod or on each container): the Workload API admits callers by uid');
  }
  return { spiffeId, serviceAccount: sa, attributes, selector: `unix:uid:${[...uids][0]!}` };
}

/**
 * Pods the webhook leaves alone in an opted-in namespace: mirror pods of static pods (the kubelet
 * creates them; the API server refuses changes to them) and pods that opt out with the annotation
 * `tessera.io/inject: disabled`.
 */
export function skipsInjection(pod: KubeObject): boolean {
  const ann = metadata(pod).annotations;
  return isObject(ann) && (ann['kubernetes.io/config.mirror'] !== undefined || ann['tessera.io/inject'] === 'disabled');
}

/** True when the pod already carries the injection (a reinvoked webhook, or a pod re-created from its own spec). */
export function alreadyInjected(pod: KubeObject): boolean {
  const ann = metadata(pod).annotations;
  if (isObject(ann) && ann[ANNOTATION.injected] !== undefined) return true;
  return [...list(spec(pod).containers), ...list(spec(pod).initContainers)].some((c) => c.name === SIDECAR_NAME);
}

/** The pod reference the webhook wrote at CREATE (for DELETE), when it is one. */
export function podRefOf(pod: KubeObject | undefined): { ref: string; spiffeId: string } | undefined {
  const ann = pod === undefined ? undefined : metadata(pod).annotations;
  if (!isObject(ann)) return undefined;
  const ref = ann[ANNOTATION.podRef];
  const id = ann[ANNOTATION.spiffeId];
  return typeof ref === 'string' && /^[A-Za-z0-9_-]{16,64}$/.test(ref) && typeof id === 'string' ? { ref, spiffeId: id } : undefined;
}

export interface Injection { spiffeId: string; token: string; podRef: string }

/** The sidecar container, with the join token as its only secret. */
export function sidecarContainer(cfg: InjectConfig, token: string): Record<string, unknown> {
  return {
    name: SIDECAR_NAME,
    image: cfg.image,
    imagePullPolicy: 'IfNotPresent',
    args: ['agent', '--server', cfg.serverUrl, '--data-dir', DATA_DIR, '--trust-bundle', `${BUNDLE_DIR}/bundle.pem`, '--workload-api-socket', SOCKET_PATH, ...cfg.extraArgs],
    env: [{ name: 'TESSERA_JOIN_TOKEN', value: token }],
    volumeMounts: [
      { name: VOLUMES.socket, mountPath: SOCKET_DIR },
      { name: VOLUMES.data, mountPath: DATA_DIR },
      { name: VOLUMES.bundle, mountPath: BUNDLE_DIR, readOnly: true },
    ],
    securityContext: { runAsNonRoot: true, runAsUser: cfg.sidecarUid, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } },
    resources: { requests: { cpu: '10m', memory: '48Mi' }, limits: { memory: '256Mi' } },
    ...(cfg.sidecarMode === 'native' ? { restartPolicy: 'Always' } : {}),
  };
}

/** The JSONPatch injecting `inj` into `pod` (which must not be injected already). */
export function injectionPatch(cfg: InjectConfig, pod: KubeObject, inj: Injection): PatchOp[] {
  const ops: PatchOp[] = [];
  const meta = metadata(pod);
  const s = spec(pod);
  const ann = { [ANNOTATION.injected]: 'true', [ANNOTATION.spiffeId]: inj.spiffeId, [ANNOTATION.podRef]: inj.podRef };
  if (!isObject(pod.metadata)) ops.push({ op: 'add', path: '/metadata', value: { annotations: ann } });
  else if (!isObject(meta.annotations)) ops.push({ op: 'add', path: '/metadata/annotations', value: ann });
  else for (const [k, v] of Object.entries(ann)) ops.push({ op: 'add', path: `/metadata/annotations/${pointerToken(k)}`, value: v });

  const volumes = [
    { name: VOLUMES.socket, emptyDir: { medium: 'Memory', sizeLimit: '1Mi' } },
    { name: VOLUMES.data, emptyDir: { medium: 'Memory', sizeLimit: '8Mi' } },
    { name: VOLUMES.bundle, configMap: { name: cfg.bundleConfigMap, items: [{ key: 'bundle.pem', path: 'bundle.pem' }] } },
  ];
  appendAll(ops, '/spec/volumes', s.volumes, volumes);

  const mount = { name: VOLUMES.socket, mountPath: SOCKET_DIR, readOnly: true };
  const env = { name: 'SPIFFE_ENDPOINT_SOCKET', value: `unix://${SOCKET_PATH}` };
  list(s.containers).forEach((c, i) => {
    const at = `/spec/containers/${i}`;
    const envs = list(c.env);
    if (!envs.some((e) => e.name === env.name)) appendAll(ops, `${at}/env`, c.env, [env]);
    appendAll(ops, `${at}/volumeMounts`, c.volumeMounts, [mount]);
  });
  const sidecar = sidecarContainer(cfg, inj.token);
  if (cfg.sidecarMode === 'native') {
    // First of the init containers: it runs (restartPolicy Always) before and beside the others and the apps.
    if (Array.isArray(s.initContainers)) ops.push({ op: 'add', path: '/spec/initContainers/0', value: sidecar });
    else ops.push({ op: 'add', path: '/spec/initContainers', value: [sidecar] });
  } else {
    appendAll(ops, '/spec/containers', s.containers, [sidecar]);
  }
  return ops;
}

function appendAll(ops: PatchOp[], path: string, existing: unknown, values: unknown[]): void {
  if (Array.isArray(existing)) for (const v of values) ops.push({ op: 'add', path: `${path}/-`, value: v });
  else ops.push({ op: 'add', path, value: values });
}
