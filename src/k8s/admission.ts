/**
 * AdmissionReview v1 (admission.k8s.io/v1), the JSON the Kubernetes API server POSTs to a webhook:
 * the strict parser of what the webhook reads, and the response it writes.
 *
 * The parser reads only the fields the webhook acts on and refuses a body it could misread
 * (TESSERA_K8S_REVIEW_INVALID, answered 400): not JSON, not an object, another apiVersion or kind, a
 * request without a uid, kind, operation or namespace, an object that is not an object. Every
 * other field is ignored (the API server adds fields over versions). It never throws anything else.
 */
import { TesseraError } from '../core/errors.js';

export const ADMISSION_API_VERSION = 'admission.k8s.io/v1';

export type Operation = 'CREATE' | 'UPDATE' | 'DELETE' | 'CONNECT';
const OPERATIONS: readonly string[] = ['CREATE', 'UPDATE', 'DELETE', 'CONNECT'];

export interface GroupVersionKind { group: string; version: string; kind: string }

/** A Kubernetes object as JSON (a Pod here); only its shape "an object" is checked by the parser. */
export type KubeObject = Record<string, unknown>;

export interface AdmissionRequest {
  uid: string;
  kind: GroupVersionKind;
  /** `request.resource.resource` (e.g. `pods`) and `subResource` (e.g. `ephemeralcontainers`), when given. */
  resource?: string;
  subResource?: string;
  operation: Operation;
  namespace: string;
  name?: string;
  /** The object being created (CREATE, UPDATE); null or absent for DELETE. */
  object?: KubeObject;
  /** The object as it was (DELETE, UPDATE). */
  oldObject?: KubeObject;
  dryRun: boolean;
}

/** A uid as the API server sends it (a UUID); bounded, printable, so it can be echoed back safely. */
const UID = /^[A-Za-z0-9-]{1,128}$/;
/** A DNS-1123 label: a namespace name. */
export const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
/** A DNS-1123 subdomain: a pod or service account name. */
export const DNS_SUBDOMAIN = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

const invalid = (why: string): TesseraError => new TesseraError('TESSERA_K8S_REVIEW_INVALID', `not an AdmissionReview v1 the webhook can answer: ${why}`);

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function str(o: Record<string, unknown>, key: string, where: string, optional = false): string | undefined {
  const v = o[key];
  if (v === undefined || (optional && v === null)) {
    if (optional) return undefined;
    throw invalid(`${where}.${key} is missing`);
  }
  if (typeof v !== 'string') throw invalid(`${where}.${key} is not a string`);
  return v;
}

function gvk(v: unknown, where: string): GroupVersionKind {
  if (!isObject(v)) throw invalid(`${where} is not an object`);
  return { group: str(v, 'group', where)!, version: str(v, 'version', where)!, kind: str(v, 'kind', where)! };
}

function objectField(r: Record<string, unknown>, key: string): KubeObject | undefined {
  const v = r[key];
  if (v === undefined || v === null) return undefined;
  if (!isObject(v)) throw invalid(`request.${key} is not an object`);
  return v;
}

/** Parses an AdmissionReview body (bytes or text). Throws TESSERA_K8S_REVIEW_INVALID only. */
export function parseAdmissionReview(body: Buffer | string): AdmissionRequest {
  let doc: unknown;
  try {
    doc = JSON.parse(typeof body === 'string' ? body : body.toString('utf8'));
  } catch {
    throw invalid('the body is not JSON');
  }
  if (!isObject(doc)) throw invalid('the body is not a JSON object');
  if (doc.apiVersion !== ADMISSION_API_VERSION) throw invalid(`apiVersion must be ${ADMISSION_API_VERSION}`);
  if (doc.kind !== 'AdmissionReview') throw invalid('kind must be AdmissionReview');
  const r = doc.request;
  if (!isObject(r)) throw invalid('request is missing');
  const uid = str(r, 'uid', 'request')!;
  if (!UID.test(uid)) throw invalid('request.uid is not a uid');
  const kind = gvk(r.kind, 'request.kind');
  const operation = str(r, 'operation', 'request')!;
  if (!OPERATIONS.includes(operation)) throw invalid('request.operation is not CREATE, UPDATE, DELETE or CONNECT');
  const namespace = str(r, 'namespace', 'request', true);
  // Cluster-scoped objects have no namespace: the webhook owns none of them, but the request is valid.
  if (namespace !== undefined && namespace !== '' && !DNS_LABEL.test(namespace)) throw invalid('request.namespace is not a namespace name');
  const name = str(r, 'name', 'request', true);
  const resource = isObject(r.resource) && typeof r.resource.resource === 'string' ? r.resource.resource : undefined;
  const subResource = str(r, 'subResource', 'request', true);
  if (r.dryRun !== undefined && r.dryRun !== null && typeof r.dryRun !== 'boolean') throw invalid('request.dryRun is not a boolean');
  const object = objectField(r, 'object');
  const oldObject = objectField(r, 'oldObject');
  return {
    uid, kind, operation: operation as Operation, namespace: namespace ?? '', dryRun: r.dryRun === true,
    ...(name ? { name } : {}), ...(resource !== undefined ? { resource } : {}), ...(subResource ? { subResource } : {}),
    ...(object ? { object } : {}), ...(oldObject ? { oldObject } : {}),
  };
}

/** A JSONPatch operation (RFC 6902), the only patch type admission v1 takes. */
export type PatchOp = { op: 'add' | 'replace'; path: string; value: unknown } | { op: 'remove'; path: string };

export interface AdmissionDecision {
  allowed: boolean;
  patch?: PatchOp[];
  /** Shown by kubectl when refused (and in the API server's log). */
  message?: string;
  /** HTTP-like code of the refusal status (403 by default). */
  code?: number;
  warnings?: string[];
}

/** The AdmissionReview response the API server expects for request `uid`. */
export function admissionResponse(uid: string, d: AdmissionDecision): Record<string, unknown> {
  const response: Record<string, unknown> = { uid, allowed: d.allowed };
  if (d.patch !== undefined && d.patch.length > 0) {
    response.patchType = 'JSONPatch';
    response.patch = Buffer.from(JSON.stringify(d.patch)).toString('base64');
  }
  if (!d.allowed || d.message !== undefined) response.status = { code: d.allowed ? 200 : (d.code ?? 403), message: d.message ?? '', ...(d.allowed ? {} : { reason: 'Forbidden' }) };
  if (d.warnings !== undefined && d.warnings.length > 0) response.warnings = d.warnings;
  return { apiVersion: ADMISSION_API_VERSION, kind: 'AdmissionReview', response };
}

/** Escapes a JSON Pointer token (RFC 6901): `~` → `~0`, `/` → `~1`. */
export function pointerToken(s: string): string {
  return s.replace(/~/g, '~0').replace(/\//g, '~1');
}
