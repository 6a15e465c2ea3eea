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

/** Compiles a policy set and its grants; what cannot be compiled is listed for cedar-wasm. */
export function compileInProcess(policies: Readonly<Record<string, string>>, grants: readonly BundleGrant[]): InProcessSet {
  const compiled: CompiledPolicy[] = [];
  const fbPolicies: Record<string, string> = {};
  const fbGrants: BundleGrant[] = [];
  for (const [id, text] of Object.entries(policies)) {
    const p = compileText(id, cedar.policyToJson(text));
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
