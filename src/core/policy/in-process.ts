/**
 * The policy engine's hot path for workload decisions: the bundle's policies (and its grants'
 * template links) compiled once into closures by evaluator.ts, evaluated against the two
 * entities a request involves. Policies the evaluator does not support are listed in
 * `fallback`: the engine preparses those alone into a cedar-wasm slot and merges the answers
 * (`combineAnswers`).
 */
import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import { CRecord, EntityRef, PolicyEvaluator, compilePolicy, type CompiledPolicy, type EntityData, type Env, type Value } from './evaluator.js';
import { grantPolicyId, grantTemplate, type BundleGrant } from './grants.js';
import { WORKLOAD_TYPE } from './schema.js';

const NO_ANCESTORS: ReadonlySet<string> = new Set();
const NO_ATTRS = new CRecord(Object.create(null) as Record<string, Value>);

export interface InProcessSet {
  evaluator: PolicyEvaluator;
  /** Policies (id → text) and grants left to cedar-wasm. */
  fallback: { policies: Record<string, string>; grants: BundleGrant[] } | undefined;
}

function compileText(id: string, json: cedar.PolicyToJsonAnswer, slots: Record<string, cedar.EntityUidJson> = {}): CompiledPolicy | undefined {
  if (json.type !== 'success') return undefined;
  try {
    const p = compilePolicy(id, json.json, slots);
    return typeof p === 'string' ? undefined : p;
  } catch {
    return undefined; // anything unexpected: cedar-wasm decides that policy
  }
}

/**
 * cedar-wasm's JSON form of a policy text, remembered per process (pure, and the costliest step of
 * installing a bundle whose policies mostly did not change). Bounded: cleared when full.
 */
const jsonCache = new Map<string, cedar.PolicyToJsonAnswer>();
const MAX_JSON = 4096;

function policyJson(text: string): cedar.PolicyToJsonAnswer {
  let json = jsonCache.get(text);
  if (json === undefined) {
    json = cedar.policyToJson(text);
    if (jsonCache.size >= MAX_JSON) jsonCache.clear();
    jsonCache.set(text, json);
  }
  return json;
}

/** Compiles a policy set and its grants; what cannot be compiled is listed for cedar-wasm. */
export function compileInProcess(policies: Readonly<Record<string, string>>, grants: readonly BundleGrant[]): InProcessSet {
  const compiled: CompiledPolicy[] = [];
  const fbPolicies: Record<string, string> = {};
  const fbGrants: BundleGrant[] = [];
  for (const [id, text] of Object.entries(policies)) {
    const p = compileText(id, policyJson(text));
    if (p === undefined) fbPolicies[id] = text;
    else compiled.push(p);
  }
  for (const g of grants) {
    const slots = { '?principal': { type: WORKLOAD_TYPE, id: g.principal }, '?resource': { type: WORKLOAD_TYPE, id: g.resource } };
    const p = compileText(grantPolicyId(g.id), cedar.templateToJson(grantTemplate(g)), slots);
    if (p === undefined) fbGrants.push(g);
    else compiled.push(p);
  }
  const fallback = Object.keys(fbPolicies).length > 0 || fbGrants.length > 0 ? { policies: fbPolicies, grants: fbGrants } : undefined;
  return { evaluator: new PolicyEvaluator(compiled), fallback };
}

/** A workload as the evaluator sees it (attributes are strings: the registration entry's). */
export function workloadData(id: string, attrs: Readonly<Record<string, unknown>>): EntityData {
  const o = Object.create(null) as Record<string, Value>;
  for (const k of Object.keys(attrs)) o[k] = attrs[k] as Value;
  return { uid: new EntityRef(WORKLOAD_TYPE, id), attrs: Object.keys(o).length > 0 ? new CRecord(o) : NO_ATTRS, ancestors: NO_ANCESTORS };
}

/** The two-entity store of a workload request, reused between decisions (evaluation is synchronous). */
export class WorkloadEnv implements Env {
  principal!: EntityRef;
  action!: EntityRef;
  resource!: EntityRef;
  readonly context = new CRecord(NO_ATTRS.o);
  #p: EntityData | undefined;
  #r: EntityData | undefined;

  set(p: EntityData, action: EntityRef, r: EntityData, context: Record<string, Value>): this {
    this.#p = p;
    this.#r = r;
    this.principal = p.uid;
    this.action = action;
    this.resource = r.uid;
    this.context.o = context;
    return this;
  }

  /** Drops the request's references once decided. */
  clear(): void {
    this.#p = undefined;
    this.#r = undefined;
    this.context.o = NO_ATTRS.o;
  }

  entity(key: string): EntityData | undefined {
    if (this.#p !== undefined && this.#p.uid.key === key) return this.#p;
    if (this.#r !== undefined && this.#r.uid.key === key) return this.#r;
    return undefined;
  }
}

type WellFormed = (this: string) => boolean;
/** Node 20 has String.prototype.isWellFormed; the regex (any surrogate) only sends more requests to cedar-wasm. */
const isWellFormed: WellFormed = (String.prototype as unknown as { isWellFormed?: WellFormed }).isWellFormed ?? function (this: string) {
  return !/[\ud800-\udfff]/.test(this);
};

/**
 * True when every string of the request is well-formed UTF-16 (no lone surrogate), so that the
 * evaluator sees the same strings as Cedar (which holds UTF-8): else the engine asks cedar-wasm.
 */
export function wellFormed(principal: string, resource: string, context: Readonly<Record<string, unknown>>): boolean {
  if (!isWellFormed.call(principal) || !isWellFormed.call(resource)) return false;
  for (const k of Object.keys(context)) {
    if (!isWellFormed.call(k)) return false;
    const v = context[k];
    if (typeof v === 'string' && !isWellFormed.call(v)) return false;
  }
  return true;
}

/** A schema type the JS request check understands: scalars and records of them (common types resolved). */
export type TypeSpec = 'String' | 'Long' | 'Boolean' | { readonly attrs: ReadonlyMap<string, readonly [TypeSpec, boolean]> };

/** The spec of a Cedar JSON schema type in namespace `ns`, or undefined for anything else (sets, entities, extensions, open records). */
export function typeSpec(ns: Readonly<Record<string, unknown>>, t: unknown, depth = 0): TypeSpec | undefined {
  if (depth > 8 || typeof t !== 'object' || t === null) return undefined;
  const type = (t as { type?: unknown }).type;
  if (type === 'String' || type === 'Long' || type === 'Boolean') return type;
  if (type === 'Record') {
    const r = t as { attributes?: unknown; additionalAttributes?: unknown };
    if (r.additionalAttributes === true || typeof r.attributes !== 'object' || r.attributes === null) return undefined;
    const attrs = new Map<string, readonly [TypeSpec, boolean]>();
    for (const [name, a] of Object.entries(r.attributes)) {
      const s = typeSpec(ns, a, depth + 1);
      if (s === undefined) return undefined;
      attrs.set(name, [s, (a as { required?: unknown }).required !== false]);
    }
    return { attrs };
  }
  const common = (ns.commonTypes as Record<string, unknown> | undefined)?.[String(type)];
  return typeof type === 'string' && common !== undefined && Object.hasOwn(ns.commonTypes as object, type) ? typeSpec(ns, common, depth + 1) : undefined;
}

/**
 * True when `v` certainly conforms to `spec` as Cedar's request validation sees it (strings
 * well-formed, longs safe integers, records with exactly declared attributes and every required
 * one). False only means "let Cedar validate it".
 */
export function conforms(spec: TypeSpec, v: unknown): boolean {
  switch (spec) {
    case 'String': return typeof v === 'string' && isWellFormed.call(v);
    case 'Long': return Number.isSafeInteger(v);
    case 'Boolean': return typeof v === 'boolean';
    default: {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
      const o = v as Record<string, unknown>;
      let present = 0;
      for (const k of Object.keys(o)) {
        const a = spec.attrs.get(k);
        if (a === undefined || !conforms(a[0], o[k])) return false;
        if (a[1]) present++;
      }
      let required = 0;
      for (const a of spec.attrs.values()) if (a[1]) required++;
      return present === required;
    }
  }
}

/** Whether every string is well-formed UTF-16 (see {@link wellFormed}). */
export function allWellFormed(strings: readonly unknown[]): boolean {
  for (const s of strings) if (typeof s !== 'string' || !isWellFormed.call(s)) return false;
  return true;
}

/** An entity with parents (transitively: the caller lists every ancestor). */
export function entityData(type: string, id: string, ancestors: ReadonlySet<string> = NO_ANCESTORS): EntityData {
  return { uid: new EntityRef(type, id), attrs: NO_ATTRS, ancestors };
}
