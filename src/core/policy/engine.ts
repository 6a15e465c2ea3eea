/**
 * The Cedar policy engine: compiles (parses and strictly validates) policy files against the
 * schema, and decides requests locally, fast, and closed.
 *
 * - Workload decisions are evaluated in process (evaluator.ts, in-process.ts): each policy is
 *   compiled once per engine from Cedar's JSON form into closures, indexed by action, and run
 *   against the two entities a request involves, in a few µs (`bench/policy.ts`). A policy the
 *   evaluator does not support (extension functions, tags, huge literals) is preparsed alone into
 *   a cedar-wasm slot and decided there, the answers merged as Cedar would. Differential random
 *   testing against cedar-wasm (drt.ts) shows both decide alike.
 * - cedar-wasm remains the parser, the validator and the reference: the whole set is parsed into
 *   its Wasm heap once (`preparsePolicySet`, see `loadSlot`) for requests the JS checks cannot
 *   validate (custom schemas; people's requests that do not certainly conform to Tessera's schema,
 *   which Cedar then validates and refuses with its own message) and for strings that are not
 *   well-formed UTF-16.
 * - The context is checked against the schema here, in JS, for the actions whose context is a
 *   record of scalars (all of Tessera's), instead of asking Cedar to validate the request, which
 *   costs ~40 % more per call. Other schemas fall back to Cedar's request validation.
 * - Default deny; any error (bad context, evaluation error in any policy) denies (fail closed),
 *   even where Cedar would ignore an erroring `forbid` and allow.
 * - Identical requests are answered from a bounded cache: a trie of Maps keyed by the request's
 *   own values (principal, action, resource, then each context name and value), so a hit costs a
 *   dozen Map lookups of strings whose hashes V8 already holds, and no key is built at all
 *   (a string key costs ~1 µs to build and hash; this ~0.15 µs). Cleared when full.
 */
import { createHash } from 'node:crypto';
import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import { TesseraError } from '../errors.js';
import { canonicalJson } from '../canonical-json.js';
import { policyHash } from './bundle.js';
import { postureAgeClass, postureAgeThresholds } from './posture-age.js';
import { grantPolicyId, grantPolicyParts, type BundleGrant } from './grants.js';
import { allWellFormed, compileInProcess, conforms, entityData, typeSpec, wellFormed, workloadData, WorkloadEnv, type InProcessSet, type TypeSpec } from './in-process.js';
import { EntityRef, MapEnv, combineAnswers, contextFromJson, type CedarAnswer, type EntityData, type Value } from './evaluator.js';
import { ACTION_TYPE, APP_TYPE, GROUP_TYPE, TESSERA_SCHEMA, USER_TYPE, WORKLOAD_TYPE } from './schema.js';
import { LIMITS, POLICY_ACTIONS, POLICY_FILE_NAME, checkEntityAttributes, isPolicyAction, type PolicyAction, type PolicyContext, type PolicyEntity } from './types.js';

export interface CompileInput {
  /** Policy file name → Cedar policy text (one file may hold many policies). */
  policies: Record<string, string>;
  /** Cedar JSON schema; defaults to {@link TESSERA_SCHEMA}. */
  schema?: object;
}

/** Where a policy came from: its file and its position (0-based) among the file's policies. */
export interface PolicyOrigin {
  file: string;
  index: number;
}

/** The output of {@link PolicyEngine.compile}: validated, with unique policy ids. Plain data. */
export interface CompiledPolicySet {
  /** {@link policyHash} of the input files and schema: the version identity. */
  readonly hash: string;
  /** Policy id (`<file>#<index>` or the policy's `@id`) → Cedar text of that one policy. */
  readonly policies: Readonly<Record<string, string>>;
  readonly origins: Readonly<Record<string, PolicyOrigin>>;
  readonly schema: Readonly<Record<string, unknown>>;
  /** Validator warnings (`file:line:col: [id] message`): not fatal, worth showing on apply. */
  readonly warnings: readonly string[];
}

export interface DecisionRequest {
  /** SPIFFE ID of the caller. */
  principal: string;
  action: PolicyAction;
  /** SPIFFE ID of the workload being called. */
  resource: string;
  context: PolicyContext;
}

/**
 * A decision. Decisions returned by the engine are frozen (arrays included), since cached ones are
 * shared between callers: copy before changing anything.
 */
export interface Decision {
  readonly allow: boolean;
  /** Ids of the determining policies (the permits for an allow, the forbids for a deny by forbid). */
  readonly reasons: string[];
  /** Errors that forced a deny (`<policy id>: <message>`, or `request: <message>`). */
  readonly errors: string[];
  /** True when answered from the decision cache. */
  readonly cached: boolean;
}

/** A person's request through a gateway (see {@link PolicyEngine.decidePerson}). */
export interface PersonRequest {
  /** The person's SPIFFE ID (`spiffe://<td>/user/<username>`). */
  user: string;
  groups: readonly string[];
  /** The app's route name (`Tessera::App` id). */
  app: string;
  /** `gateway:request`'s context, `device` a record (Tessera::DevicePosture). */
  context: Record<string, unknown>;
}

export interface PolicyEngineOptions {
  /** Decisions kept in the cache before it is cleared (default 10,000; 0 disables the cache). */
  cacheSize?: number;
  /** Just-in-time grants of the bundle: template-linked permits with their own windows (grants.ts). */
  grants?: readonly BundleGrant[];
  /**
   * Decide workload requests with the in-process evaluator (default true). false: every decision
   * is a cedar-wasm call, as before the evaluator existed (the baseline of `bench/policy.ts`).
   */
  inProcess?: boolean;
  /**
   * One in how many decisions made wholly in process (no cedar-wasm) are kept in the cache (default
   * 8; 1 keeps every one). Such a decision costs about a microsecond, a cache insertion several (a
   * new Map entry, a retained path string, the garbage of a clear every `cacheSize` decisions), and
   * with REST ids in paths most requests are new: admitting one in eight keeps unique-path traffic
   * near the in-process cost, while a request that repeats is admitted after a few misses and hit
   * from then on. Decisions that needed cedar-wasm (tens to hundreds of µs) are always kept.
   */
  cacheAdmission?: number;
}

type EntityJson = cedar.EntityJson;
type ScalarType = 'String' | 'Long' | 'Boolean';
/** Context attribute name → [type, required]. */
type ContextSpec = Map<string, readonly [ScalarType, boolean]>;

const DEFAULT_CACHE_SIZE = 10_000;
/** See PolicyEngineOptions.cacheAdmission. */
const DEFAULT_CACHE_ADMISSION = 8;
/** Trie nodes (Maps) allowed per cached decision on average, which bounds the cache's memory. */
const NODES_PER_ENTRY = 8;
/** Requests with longer strings or more context entries are decided every time, not cached. */
const MAX_CACHED_STRING = 1024;
const MAX_CACHED_CONTEXT_ENTRIES = 16;
const MAX_REPORTED_ERRORS = 50;
/** Unregistered workloads (resources such as `.../tessera/secret/db`, unknown peers) kept as entities. */
const BARE_ENTITIES = 1024;
const POLICY_ID = /^[^\x00-\x1f\x7f]{1,256}$/;

export class PolicyEngine {
  /** Hash of the compiled policy set this engine decides with. */
  readonly hash: string;
  readonly #digest: string;
  readonly #policies: Readonly<Record<string, string>>;
  readonly #schema: Readonly<Record<string, unknown>>;
  readonly #grants: readonly BundleGrant[];
  #slot: number;
  readonly #inProcess: InProcessSet | undefined;
  /** The slot holding the policies left to cedar-wasm (fallback), and its content digest. */
  #fallbackSlot = -1;
  readonly #fallbackDigest: string;
  readonly #env = new WorkloadEnv();
  readonly #entityData = new Map<string, EntityData>();
  readonly #bareData = new Map<string, EntityData>();
  readonly #gatewayAction = new EntityRef(ACTION_TYPE, 'gateway:request');
  /** What a person's context must conform to for the in-process path (null: never; undefined: not computed yet). */
  #personSpec: TypeSpec | null | undefined;
  readonly #actionRefs = new Map<string, EntityRef>();
  readonly #entities = new Map<string, EntityJson>();
  readonly #contextSpecs = new Map<string, ContextSpec>();
  readonly #actionUids = new Map<string, cedar.EntityUidJson>();
  readonly #cache: DecisionCache;
  readonly #admission: number;
  /** xorshift32 state of the cache admission draw (a counter could fall into step with a caller's pattern). */
  #draw = 0x9e3779b9;
  /** Set by #evaluateInProcess: the last decision needed no cedar-wasm call. */
  #cheap = false;
  #stepUps: Map<string, number> | undefined;
  /** The thresholds the policies compare `context.device.posture_age_seconds` with (posture-age.ts); null: key on the exact age. */
  #ageThresholds: number[] | null | undefined;
  /** People's decisions (decidePerson) by their inputs; cleared when full. */
  readonly #people = new Map<string, Decision>();

  /**
   * Parses and validates every policy file against the schema (Cedar strict mode). Policy ids are
   * `<file>#<index>` (0-based, in file order) unless the policy carries `@id("...")`.
   *
   * @example
   * const compiled = PolicyEngine.compile({ policies: { 'orders.cedar': text } });
   * @throws TesseraError TESSERA_POLICY_INVALID naming the file, line and column of each problem
   */
  static compile(input: CompileInput): CompiledPolicySet {
    return compilePolicies(input);
  }

  /**
   * @param compiled the output of {@link PolicyEngine.compile}
   * @param entities the workloads with attributes (registration entries); any other SPIFFE ID
   *   is still decided on, as a workload with no attributes
   * @throws TesseraError TESSERA_POLICY_INVALID if the set or the entities cannot be loaded
   */
  constructor(compiled: CompiledPolicySet, entities: readonly PolicyEntity[], opts: PolicyEngineOptions = {}) {
    const cacheSize = opts.cacheSize ?? DEFAULT_CACHE_SIZE;
    if (!Number.isSafeInteger(cacheSize) || cacheSize < 0) throw new TesseraError('TESSERA_CONFIG_INVALID', 'cacheSize must be a non-negative integer');
    this.#cache = new DecisionCache(cacheSize);
    const admission = opts.cacheAdmission ?? DEFAULT_CACHE_ADMISSION;
    if (!Number.isSafeInteger(admission) || admission < 1 || admission > 1 << 20) throw new TesseraError('TESSERA_CONFIG_INVALID', 'cacheAdmission must be an integer from 1 to 1048576');
    this.#admission = admission;
    this.hash = compiled.hash;
    this.#policies = Object.freeze({ ...compiled.policies });
    this.#schema = compiled.schema;
    this.#grants = opts.grants ?? [];
    // The grants are part of what the slot holds: without any, the digest is what it always was.
    const content = this.#grants.length > 0 ? { policies: this.#policies, schema: this.#schema, grants: this.#grants } : { policies: this.#policies, schema: this.#schema };
    this.#digest = createHash('sha256').update(canonicalJson(content), 'utf8').digest('hex');
    this.#slot = loadSlot(this.#digest, this.#policies, this.#schema, this.#grants);
    this.#inProcess = opts.inProcess === false ? undefined : compileInProcess(this.#policies, this.#grants);
    this.#fallbackDigest = `${this.#digest}:fallback`;
    const fb = this.#inProcess?.fallback;
    if (fb !== undefined) this.#fallbackSlot = loadSlot(this.#fallbackDigest, fb.policies, this.#schema, fb.grants);

    for (const a of POLICY_ACTIONS) {
      this.#actionUids.set(a, { type: ACTION_TYPE, id: a });
      this.#actionRefs.set(a, new EntityRef(ACTION_TYPE, a));
      const spec = contextSpecOf(compiled.schema, a);
      if (spec !== undefined) this.#contextSpecs.set(a, spec);
    }
    for (const e of entities) {
      if (typeof e?.id !== 'string' || e.id.length === 0) throw new TesseraError('TESSERA_POLICY_INVALID', 'entity ids must be non-empty strings');
      if (this.#entities.has(e.id)) throw new TesseraError('TESSERA_POLICY_INVALID', `entity ${e.id} is listed twice`);
      const attrs = checkEntityAttributes(e.attrs);
      if (typeof attrs === 'string') throw new TesseraError('TESSERA_POLICY_INVALID', `entity ${e.id}: ${attrs}`);
      this.#entities.set(e.id, { uid: { type: WORKLOAD_TYPE, id: e.id }, attrs, parents: [] });
      this.#entityData.set(e.id, workloadData(e.id, attrs));
    }
  }

  /**
   * Decides one request. Never throws: anything wrong with the request denies, with the reason
   * in `errors`.
   *
   * @example
   * engine.decide({ principal: 'spiffe://example.org/shop/frontend', action: 'http:request',
   *   resource: 'spiffe://example.org/shop/orders',
   *   context: { method: 'GET', path: '/orders/42', site: 'cloud-eu', time: 1767225600, hour: 0, risk: 10 } })
   * // → { allow: true, reasons: ['orders.cedar#0'], errors: [], cached: false }
   */
  decide(req: DecisionRequest): Decision {
    const hit = this.#cache.get(req);
    if (hit !== undefined) return hit;
    this.#cheap = false;
    const decision = this.#evaluate(req);
    if (!this.#cheap || this.#admit()) this.#cache.set(req, decision);
    return decision;
  }

  /** Whether to cache a decision made in process: one draw in `cacheAdmission`. */
  #admit(): boolean {
    if (this.#admission === 1) return true;
    let x = this.#draw;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#draw = x >>> 0;
    return this.#draw % this.#admission === 0;
  }

  /**
   * Decides a person's request through a gateway (`gateway:request`): principal `Tessera::User`
   * (member of its `Tessera::Group`s), resource `Tessera::App` (the gateway's route name), and the
   * context (`method`, `path`, `site`, `time`, `hour`, `risk`, and the `device` posture record),
   * validated by Cedar against the bundle's schema. Never throws; anything wrong denies. Cached by
   * its inputs, the posture age by its class among the policies' thresholds (posture-age.ts).
   *
   * @example
   * engine.decidePerson({ user: 'spiffe://td/user/ana', groups: ['eng'], app: 'wiki',
   *   context: { method: 'GET', path: '/', site: 'hq', time: 1767225600, hour: 9, risk: 0, device: { enrolled: false, posture_state: 'missing' } } })
   */
  decidePerson(req: PersonRequest): Decision {
    // Cached by every input (this engine's policies are fixed; `time` comes rounded to the minute):
    // an uncached decision with request validation costs a few hundred µs, a hit a string key.
    // The device's posture age is keyed by its class among the policies' age thresholds, not to the
    // second (posture-age.ts states why that cannot change the answer), so the cache hits across
    // seconds and a cached allow ends when the age crosses a threshold (or the state, a fact changes).
    let key: string | undefined;
    try {
      let context = req.context;
      const device = context.device as Record<string, unknown> | undefined;
      if (device !== undefined && typeof device === 'object' && typeof device.posture_age_seconds === 'number') {
        if (this.#ageThresholds === undefined) {
          const texts = Object.values(this.#policies);
          this.#ageThresholds = this.#grants.length > 0 && JSON.stringify(this.#grants).includes('posture_age_seconds') ? null : postureAgeThresholds(texts) ?? null;
        }
        const t = this.#ageThresholds;
        if (t !== null) context = { ...context, device: { ...device, posture_age_seconds: `class:${postureAgeClass(device.posture_age_seconds, t)}` } };
      }
      key = JSON.stringify([req.user, req.groups, req.app, context]);
    } catch {
      key = undefined;
    }
    if (key !== undefined && key.length > 4096) key = undefined;
    const hit = key === undefined ? undefined : this.#people.get(key);
    if (hit !== undefined) return hit;
    if (slotHolder[this.#slot] !== this.#digest) {
      try {
        this.#slot = loadSlot(this.#digest, this.#policies, this.#schema, this.#grants);
      } catch (err) {
        return deny([`request: ${err instanceof Error ? err.message : 'the policy set cannot be loaded'}`]);
      }
    }
    const principal = { type: USER_TYPE, id: req.user };
    const inProcess = this.#decidePersonInProcess(req);
    if (inProcess !== undefined) {
      if (key !== undefined && !TRANSIENT.has(inProcess)) {
        if (this.#people.size >= DEFAULT_CACHE_SIZE) this.#people.clear();
        this.#people.set(key, Object.freeze({ ...inProcess, cached: true }));
      }
      return inProcess;
    }
    const entities = personEntities(req);
    let answer: cedar.AuthorizationAnswer;
    try {
      answer = cedar.statefulIsAuthorized({
        principal, action: { type: ACTION_TYPE, id: 'gateway:request' }, resource: { type: APP_TYPE, id: req.app },
        context: req.context as cedar.Context, preparsedPolicySetId: POLICY_SLOT_NAMES[this.#slot]!,
        preparsedSchemaName: SCHEMA_SLOT_NAMES[this.#slot]!, validateRequest: true, entities,
      });
    } catch (err) {
      return deny([`request: ${err instanceof Error ? err.message : 'evaluation failed'}`]);
    }
    let out: Decision;
    if (answer.type !== 'success') out = deny(answer.errors.map((e) => `request: ${e.message}`));
    else {
      const { decision, diagnostics } = answer.response;
      const errors = diagnostics.errors.map((e) => `${e.policyId}: ${e.error.message}`).sort();
      const reasons = [...diagnostics.reason].sort();
      out = errors.length > 0 ? deny(errors, decision === 'deny' ? reasons : []) : Object.freeze({ allow: decision === 'allow', reasons: Object.freeze(reasons) as string[], errors: NO_ERRORS, cached: false });
    }
    if (key !== undefined) {
      if (this.#people.size >= DEFAULT_CACHE_SIZE) this.#people.clear();
      this.#people.set(key, Object.freeze({ ...out, cached: true }));
    }
    return out;
  }

  /**
   * The freshest MFA the determining policies of an allow ask for: the smallest `@stepup("SECONDS")`
   * annotation among `reasons` (policy ids), or undefined when none carries one. A gateway then
   * requires the session's MFA to be at most that old (else it sends the person to step up).
   * Annotations are read once per engine, lazily.
   */
  stepUpSeconds(reasons: readonly string[]): number | undefined {
    if (this.#stepUps === undefined) {
      const m = new Map<string, number>();
      for (const [id, text] of Object.entries(this.#policies)) {
        if (!text.includes('@stepup')) continue;
        const j = cedar.policyToJson(text);
        const v = j.type === 'success' ? j.json.annotations?.stepup : undefined;
        const n = typeof v === 'string' && /^\d{1,6}$/.test(v) ? Number(v) : NaN;
        // A malformed value asks for MFA now (fail closed): `@stepup("")`, `@stepup("soon")`.
        m.set(id, Number.isFinite(n) ? n : 0);
      }
      this.#stepUps = m;
    }
    let out: number | undefined;
    for (const r of reasons) {
      const s = this.#stepUps.get(r);
      if (s !== undefined && (out === undefined || s < out)) out = s;
    }
    return out;
  }

  /**
   * Ids of the policies (and grant links) this engine leaves to cedar-wasm because the in-process
   * evaluator does not support a construct they use (extension functions, tags, literals beyond ±2^53);
   * every one with `inProcess: false`.
   */
  get fallbackPolicyIds(): string[] {
    if (this.#inProcess === undefined) return [...Object.keys(this.#policies), ...this.#grants.map((g) => grantPolicyId(g.id))].sort();
    const fb = this.#inProcess.fallback;
    return fb === undefined ? [] : [...Object.keys(fb.policies), ...fb.grants.map((g) => grantPolicyId(g.id))].sort();
  }

  /** Forgets every cached decision. */
  clearCache(): void {
    this.#cache.clear();
  }

  /** Decisions currently cached. */
  get cacheSize(): number {
    return this.#cache.size;
  }

  #evaluate(req: DecisionRequest): Decision {
    if (typeof req !== 'object' || req === null) return deny(['request: not an object']);
    const { principal, action, resource, context } = req;
    if (typeof principal !== 'string' || principal.length === 0) return deny(['request: principal must be a SPIFFE ID']);
    if (typeof resource !== 'string' || resource.length === 0) return deny(['request: resource must be a SPIFFE ID']);
    if (!isPolicyAction(action)) return deny([`request: unknown action ${JSON.stringify(String(action)).slice(0, 64)}`]);
    if (typeof context !== 'object' || context === null || Array.isArray(context)) return deny(['request: context must be an object']);
    const spec = this.#contextSpecs.get(action);
    if (spec !== undefined) {
      const problem = checkContext(spec, context);
      if (problem !== undefined) return deny([`request: ${problem}`]);
      const ip = this.#inProcess;
      if (ip !== undefined && wellFormed(principal, resource, context)) return this.#evaluateInProcess(ip, principal, action, resource, context);
    }
    if (slotHolder[this.#slot] !== this.#digest) {
      // A newer engine took this engine's slot: parse the set again.
      try {
        this.#slot = loadSlot(this.#digest, this.#policies, this.#schema, this.#grants);
      } catch (err) {
        return transient(deny([`request: ${err instanceof Error ? err.message : 'the policy set cannot be loaded'}`]));
      }
    }
    const p = this.#entities.get(principal) ?? bareEntity(principal);
    const entities = principal === resource ? [p] : [p, this.#entities.get(resource) ?? bareEntity(resource)];
    const call: cedar.StatefulAuthorizationCall = {
      principal: p.uid,
      action: this.#actionUids.get(action)!,
      resource: entities[entities.length - 1]!.uid,
      context,
      preparsedPolicySetId: POLICY_SLOT_NAMES[this.#slot]!,
      entities,
    };
    if (spec === undefined) {
      // Not a context shape checked above: let Cedar validate the request against the schema.
      call.preparsedSchemaName = SCHEMA_SLOT_NAMES[this.#slot]!;
      call.validateRequest = true;
    }
    let answer: cedar.AuthorizationAnswer;
    try {
      answer = cedar.statefulIsAuthorized(call);
    } catch (err) {
      return transient(deny([`request: ${err instanceof Error ? err.message : 'evaluation failed'}`]));
    }
    if (answer.type !== 'success') return deny(answer.errors.map((e) => `request: ${e.message}`));
    const { decision, diagnostics } = answer.response;
    // Cedar's order is a hash set's: sort, so that equal requests get equal (auditable) answers.
    const errors = diagnostics.errors.map((e) => `${e.policyId}: ${e.error.message}`).sort();
    const reasons = diagnostics.reason.length > 1 ? diagnostics.reason.sort() : diagnostics.reason;
    if (errors.length > 0) {
      // Fail closed: an erroring policy might have been a forbid meant for this very request.
      return deny(errors, decision === 'deny' ? reasons : []);
    }
    return Object.freeze({ allow: decision === 'allow', reasons: Object.freeze(reasons) as string[], errors: NO_ERRORS, cached: false });
  }

  /**
   * A person's request decided in process, or undefined when Cedar must validate it: the bundle's
   * schema is not Tessera's own, or the request does not certainly conform to it (then cedar-wasm
   * validates and decides it, with its exact errors).
   */
  #decidePersonInProcess(req: PersonRequest): Decision | undefined {
    const ip = this.#inProcess;
    if (ip === undefined) return undefined;
    if (this.#personSpec === undefined) {
      const ns = obj(this.#schema.Tessera);
      const applies = obj(obj(obj(ns?.actions)?.['gateway:request'])?.appliesTo);
      this.#personSpec = ns !== undefined && canonicalJson(this.#schema) === canonicalJson(TESSERA_SCHEMA) ? typeSpec(ns, applies?.context) ?? null : null;
    }
    const spec = this.#personSpec;
    const { user, groups, app, context } = req;
    if (spec === null || !Array.isArray(groups) || !allWellFormed([user, app, ...groups]) || new Set(groups).size !== groups.length || !conforms(spec, context)) return undefined;
    const ctx = contextFromJson(context);
    if (ctx === undefined) return undefined;
    const store = new Map<string, EntityData>();
    const groupData = groups.map((g) => entityData(GROUP_TYPE, g));
    for (const g of groupData) store.set(g.uid.key, g);
    const u = entityData(USER_TYPE, user, new Set(groupData.map((g) => g.uid.key)));
    const a = entityData(APP_TYPE, app);
    store.set(u.uid.key, u);
    store.set(a.uid.key, a);
    const outcome = ip.evaluator.evaluate(new MapEnv(u.uid, this.#gatewayAction, a.uid, ctx, store));
    let sub: cedar.Response | undefined;
    if (ip.fallback !== undefined) {
      const answer = this.#fallbackAnswer(ip.fallback, {
        principal: { type: USER_TYPE, id: user }, action: { type: ACTION_TYPE, id: 'gateway:request' }, resource: { type: APP_TYPE, id: app },
        context: context as cedar.Context, entities: personEntities(req),
      }, true);
      if ('allow' in answer) return answer;
      sub = answer;
    }
    return answerDecision(combineAnswers(outcome, sub));
  }

  /**
   * cedar-wasm's answer over the policies left to it (their own slot, loaded again if a newer engine
   * took it), or the denial when it cannot answer (never cached when the fault is not the request's).
   */
  #fallbackAnswer(fb: NonNullable<InProcessSet['fallback']>, call: Omit<cedar.StatefulAuthorizationCall, 'preparsedPolicySetId'>, validate: boolean): cedar.Response | Decision {
    if (slotHolder[this.#fallbackSlot] !== this.#fallbackDigest) {
      try {
        this.#fallbackSlot = loadSlot(this.#fallbackDigest, fb.policies, this.#schema, fb.grants);
      } catch (err) {
        return transient(deny([`request: ${err instanceof Error ? err.message : 'the policy set cannot be loaded'}`]));
      }
    }
    let answer: cedar.AuthorizationAnswer;
    try {
      answer = cedar.statefulIsAuthorized({
        ...call, preparsedPolicySetId: POLICY_SLOT_NAMES[this.#fallbackSlot]!,
        ...(validate ? { preparsedSchemaName: SCHEMA_SLOT_NAMES[this.#fallbackSlot]!, validateRequest: true } : {}),
      });
    } catch (err) {
      return transient(deny([`request: ${err instanceof Error ? err.message : 'evaluation failed'}`]));
    }
    if (answer.type !== 'success') return deny(answer.errors.map((e) => `request: ${e.message}`));
    return answer.response;
  }

  /** A workload with no registration entry (no attributes), kept for its next request (bounded). */
  #bare(id: string): EntityData {
    let d = this.#bareData.get(id);
    if (d === undefined) {
      if (this.#bareData.size >= BARE_ENTITIES) this.#bareData.clear();
      d = workloadData(id, {});
      this.#bareData.set(id, d);
    }
    return d;
  }

  /** A checked workload request (scalar context), decided by the compiled policies (+ cedar-wasm for any left to it). */
  #evaluateInProcess(ip: InProcessSet, principal: string, action: PolicyAction, resource: string, context: PolicyContext): Decision {
    const p = this.#entityData.get(principal) ?? this.#bare(principal);
    const r = principal === resource ? p : this.#entityData.get(resource) ?? this.#bare(resource);
    const env = this.#env.set(p, this.#actionRefs.get(action)!, r, context as Record<string, Value>);
    let outcome;
    try {
      outcome = ip.evaluator.evaluate(env);
    } finally {
      env.clear();
    }
    let sub: cedar.Response | undefined;
    if (ip.fallback === undefined) this.#cheap = true;
    else {
      const pe = this.#entities.get(principal) ?? bareEntity(principal);
      const entities = principal === resource ? [pe] : [pe, this.#entities.get(resource) ?? bareEntity(resource)];
      const answer = this.#fallbackAnswer(ip.fallback, { principal: pe.uid, action: this.#actionUids.get(action)!, resource: entities[entities.length - 1]!.uid, context, entities }, false);
      if ('allow' in answer) return answer;
      sub = answer;
    }
    return answerDecision(combineAnswers(outcome, sub));
  }
}

/**
 * cedar-wasm keeps preparsed policy sets and schemas in a table keyed by name, with no way to drop
 * an entry; preparsing under a name in use replaces (frees) what it held. Engines share a ring of
 * SLOTS names, so the table never holds more than SLOTS sets however many versions come and go
 * (a distinct set costs ~100 KB of Wasm memory that is never returned). Engines for the same
 * content share a slot; an engine whose slot a newer one took parses its set again (~1 ms) on its
 * next uncached decision.
 */
const SLOTS = 8;
const POLICY_SLOT_NAMES = Array.from({ length: SLOTS }, (_, i) => `tessera-policies-${i}`);
const SCHEMA_SLOT_NAMES = Array.from({ length: SLOTS }, (_, i) => `tessera-schema-${i}`);
/** Content digest held by each slot (undefined: empty or being loaded). */
const slotHolder: (string | undefined)[] = new Array<string | undefined>(SLOTS).fill(undefined);
let nextSlot = 0;

function loadSlot(digest: string, policies: Readonly<Record<string, string>>, schema: Readonly<Record<string, unknown>>, grants: readonly BundleGrant[]): number {
  const held = slotHolder.indexOf(digest);
  if (held >= 0) return held;
  const slot = nextSlot;
  nextSlot = (nextSlot + 1) % SLOTS;
  slotHolder[slot] = undefined;
  const ps = cedar.preparsePolicySet(POLICY_SLOT_NAMES[slot]!, { staticPolicies: { ...policies }, ...(grants.length > 0 ? grantPolicyParts(grants, WORKLOAD_TYPE) : {}) });
  if (ps.type !== 'success') throw new TesseraError('TESSERA_POLICY_INVALID', `policy set: ${ps.errors.map((e) => e.message).join('; ')}`);
  const sc = cedar.preparseSchema(SCHEMA_SLOT_NAMES[slot]!, schema as cedar.SchemaJson<string>);
  if (sc.type !== 'success') throw new TesseraError('TESSERA_POLICY_INVALID', `schema: ${sc.errors.map((e) => e.message).join('; ')}`);
  slotHolder[slot] = digest;
  return slot;
}

const NO_ERRORS = Object.freeze([]) as unknown as string[];

/** Denials caused by something other than the request itself: answered, but never cached. */
const TRANSIENT = new WeakSet<Decision>();

function transient(d: Decision): Decision {
  TRANSIENT.add(d);
  return d;
}

function deny(errors: string[], reasons: string[] = []): Decision {
  return Object.freeze({ allow: false, reasons: Object.freeze(reasons) as string[], errors: Object.freeze(errors) as string[], cached: false });
}

/** Tessera's decision from Cedar's answer: sorted, and any error denies (fail closed, as in #evaluate). */
function answerDecision(a: CedarAnswer): Decision {
  const reasons = a.reasons.length > 1 ? a.reasons.sort() : a.reasons;
  if (a.errors.length > 0) return deny(a.errors.map(([id, m]) => `${id}: ${m}`).sort(), a.allow ? [] : reasons);
  return Object.freeze({ allow: a.allow, reasons: Object.freeze(reasons) as string[], errors: NO_ERRORS, cached: false });
}

/** The entities of a person's request: the user (member of its groups), the groups, the app. */
function personEntities(req: PersonRequest): EntityJson[] {
  return [
    { uid: { type: USER_TYPE, id: req.user }, attrs: {}, parents: req.groups.map((g) => ({ type: GROUP_TYPE, id: g })) },
    ...req.groups.map((g) => ({ uid: { type: GROUP_TYPE, id: g }, attrs: {}, parents: [] })),
    { uid: { type: APP_TYPE, id: req.app }, attrs: {}, parents: [] },
  ];
}

function bareEntity(id: string): EntityJson {
  return { uid: { type: WORKLOAD_TYPE, id }, attrs: {}, parents: [] };
}

/** Holds the decision of a request that ends at a node other requests continue through. */
const LEAF = Symbol('decision');
type TrieNode = Map<unknown, unknown>;

/**
 * Cached decisions in a trie of Maps: principal → action → resource → (context name → value)* →
 * decision. Map keys compare by SameValueZero, so `1` and `"1"` differ, names and values sit on
 * alternate levels, and two different requests can never reach the same node. A request's last
 * key maps straight to its (frozen, non-Map) decision, so a request with a new path costs one Map
 * entry and no new Map (with REST ids in paths nearly every request is new: the Map per entry was
 * most of an insertion's cost, which exceeded an in-process decision's); when a longer request
 * continues through that key, the decision moves under LEAF of a new node. Context entries are
 * walked in insertion order (another order only costs a miss). Only requests made of strings and
 * numbers and booleans are cached; when the decision count or the node budget is reached, the
 * whole cache is dropped (cheaper than LRU bookkeeping on every hit).
 */
class DecisionCache {
  #root: TrieNode = new Map();
  #entries = 0;
  #nodes = 0;
  readonly #maxEntries: number;
  readonly #maxNodes: number;

  constructor(maxEntries: number) {
    this.#maxEntries = maxEntries;
    this.#maxNodes = maxEntries * NODES_PER_ENTRY + 64;
  }

  get size(): number {
    return this.#entries;
  }

  clear(): void {
    this.#root = new Map();
    this.#entries = 0;
    this.#nodes = 0;
  }

  get(req: DecisionRequest): Decision | undefined {
    if (this.#entries === 0 || typeof req !== 'object' || req === null) return undefined;
    const context = req.context;
    if (typeof context !== 'object' || context === null) return undefined;
    let v = this.#root.get(req.principal);
    if (!(v instanceof Map)) return undefined;
    v = v.get(req.action);
    if (!(v instanceof Map)) return undefined;
    v = v.get(req.resource);
    for (const name of Object.keys(context)) {
      if (!(v instanceof Map)) return undefined;
      v = v.get(name);
      if (!(v instanceof Map)) return undefined;
      v = v.get(context[name]);
    }
    return (v instanceof Map ? v.get(LEAF) : v) as Decision | undefined;
  }

  set(req: DecisionRequest, decision: Decision): void {
    if (this.#maxEntries === 0 || TRANSIENT.has(decision) || !cacheable(req)) return;
    if (this.#entries >= this.#maxEntries) this.clear();
    this.#insert(req, decision);
    if (this.#nodes > this.#maxNodes) {
      this.clear();
      this.#insert(req, decision);
    }
  }

  #insert(req: DecisionRequest, decision: Decision): void {
    // Field by field: an object spread here cost more than the in-process decision it caches.
    const leaf = Object.freeze({ allow: decision.allow, reasons: decision.reasons, errors: decision.errors, cached: true });
    const context = req.context;
    let node = this.#step(this.#step(this.#root, req.principal), req.action);
    let last: unknown = req.resource;
    for (const name of Object.keys(context)) {
      node = this.#step(this.#step(node, last), name);
      last = context[name];
    }
    const old = node.get(last);
    if (old instanceof Map) {
      if (!old.has(LEAF)) this.#entries++;
      old.set(LEAF, leaf);
    } else {
      if (old === undefined) this.#entries++;
      node.set(last, leaf);
    }
  }

  /** The node under `key` in `node`, made when missing (holding under LEAF a decision that ended there). */
  #step(node: TrieNode, key: unknown): TrieNode {
    const v = node.get(key);
    if (v instanceof Map) return v;
    const next: TrieNode = new Map();
    if (v !== undefined) next.set(LEAF, v);
    node.set(key, next);
    this.#nodes++;
    return next;
  }
}

function cacheable(req: DecisionRequest): boolean {
  if (typeof req !== 'object' || req === null) return false;
  const { principal, action, resource, context } = req;
  if (typeof principal !== 'string' || typeof action !== 'string' || typeof resource !== 'string') return false;
  if (principal.length > MAX_CACHED_STRING || resource.length > MAX_CACHED_STRING) return false;
  if (typeof context !== 'object' || context === null || Array.isArray(context)) return false;
  let n = 0;
  for (const name of Object.keys(context)) {
    if (++n > MAX_CACHED_CONTEXT_ENTRIES || name.length > MAX_CACHED_STRING) return false;
    const v = context[name];
    if (typeof v === 'string') {
      if (v.length > MAX_CACHED_STRING) return false;
    } else if (typeof v !== 'number' && typeof v !== 'boolean') {
      return false;
    }
  }
  return true;
}

/** Required attributes per context spec (counted once). */
const REQUIRED = new WeakMap<ContextSpec, number>();

function checkContext(spec: ContextSpec, context: PolicyContext): string | undefined {
  let present = 0;
  for (const name of Object.keys(context)) {
    const t = spec.get(name);
    if (t === undefined) return `context attribute ${JSON.stringify(name).slice(0, 64)} is not declared for this action`;
    const v = context[name];
    switch (t[0]) {
      case 'String':
        if (typeof v !== 'string') return `context.${name} must be a string`;
        break;
      case 'Long':
        if (typeof v !== 'number' || !Number.isSafeInteger(v)) return `context.${name} must be an integer`;
        break;
      case 'Boolean':
        if (typeof v !== 'boolean') return `context.${name} must be a boolean`;
        break;
    }
    if (t[1]) present++;
  }
  let required = REQUIRED.get(spec);
  if (required === undefined) {
    required = 0;
    for (const t of spec.values()) if (t[1]) required++;
    REQUIRED.set(spec, required);
  }
  if (present !== required) {
    const missing = [...spec].filter(([n, t]) => t[1] && !Object.hasOwn(context, n)).map(([n]) => n);
    return `context is missing ${missing.join(', ')}`;
  }
  return undefined;
}

/**
 * The context shape of `action` when the JS check above can stand in for Cedar's request
 * validation: the schema's namespace `Tessera` declares the action for Workload principals and
 * resources, with a record of String/Long/Boolean attributes, and no action groups exist.
 */
function contextSpecOf(schema: Readonly<Record<string, unknown>>, action: string): ContextSpec | undefined {
  const ns = obj(schema.Tessera);
  const actions = obj(ns?.actions);
  if (ns === undefined || actions === undefined) return undefined;
  for (const a of Object.values(actions)) if (obj(a)?.memberOf !== undefined) return undefined;
  const applies = obj(obj(actions[action])?.appliesTo);
  if (applies === undefined) return undefined;
  const isWorkload = (types: unknown): boolean => Array.isArray(types) && types.some((t) => t === 'Workload' || t === WORKLOAD_TYPE);
  if (!isWorkload(applies.principalTypes) || !isWorkload(applies.resourceTypes)) return undefined;
  const spec: ContextSpec = new Map();
  if (applies.context === undefined) return spec;
  const ctx = obj(applies.context);
  if (ctx?.type !== 'Record' || ctx.additionalAttributes === true) return undefined;
  const attrs = obj(ctx.attributes) ?? {};
  for (const [name, t] of Object.entries(attrs)) {
    const type = obj(t)?.type;
    if (type !== 'String' && type !== 'Long' && type !== 'Boolean') return undefined;
    spec.set(name, [type, obj(t)?.required !== false]);
  }
  return spec;
}

function obj(v: unknown): Record<string, unknown> | undefined {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
}

// ---------------------------------------------------------------------------------------------
// Compilation
// ---------------------------------------------------------------------------------------------

function compileFail(problems: string[]): TesseraError {
  const shown = problems.slice(0, MAX_REPORTED_ERRORS);
  const more = problems.length > shown.length ? `\n  ... and ${problems.length - shown.length} more` : '';
  return new TesseraError('TESSERA_POLICY_INVALID', `invalid policy set:\n  ${shown.join('\n  ')}${more}`);
}

function compilePolicies(input: CompileInput): CompiledPolicySet {
  const files = obj(input?.policies);
  if (files === undefined) throw compileFail(['policies must be an object of file name → Cedar text']);
  const names = Object.keys(files).sort();
  if (names.length > LIMITS.maxPolicyFiles) throw compileFail([`more than ${LIMITS.maxPolicyFiles} policy files`]);
  for (const name of names) {
    if (!POLICY_FILE_NAME.test(name)) throw compileFail([`${JSON.stringify(name.slice(0, 64))}: invalid policy file name (letters, digits, . _ - /; no #)`]);
    const text = files[name];
    if (typeof text !== 'string') throw compileFail([`${name}: policy text must be a string`]);
    if (Buffer.byteLength(text, 'utf8') > LIMITS.maxPolicyFileBytes) throw compileFail([`${name}: larger than ${LIMITS.maxPolicyFileBytes} bytes`]);
  }
  const texts = files as Record<string, string>;

  const { schema, key: schemaKey } = checkedSchema(input.schema ?? TESSERA_SCHEMA);

  const problems: string[] = [];
  const warnings: string[] = [];
  const policies: Record<string, string> = {};
  const origins: Record<string, PolicyOrigin> = {};
  for (const file of names) {
    const text = texts[file]!;
    const c = compileFile(file, text, schema, schemaKey);
    if (typeof c.parsed === 'string') {
      problems.push(c.parsed);
      continue;
    }
    c.ids.forEach((id, index) => {
      if (!POLICY_ID.test(id)) {
        problems.push(`${file}: policy #${index} has an @id that is empty, longer than 256 characters or holds control characters`);
        return;
      }
      if (Object.hasOwn(policies, id)) {
        problems.push(`${file}: policy #${index} has id ${JSON.stringify(id)}, already used by ${origins[id]!.file}#${origins[id]!.index}`);
        return;
      }
      policies[id] = c.parsed[index]!;
      origins[id] = { file, index };
    });
    problems.push(...c.problems);
    warnings.push(...c.warnings);
  }
  if (problems.length > 0) throw compileFail(problems);
  return Object.freeze({
    hash: policyHash(texts, schema),
    policies: Object.freeze(policies),
    origins: Object.freeze(origins),
    schema,
    warnings: Object.freeze(warnings),
  });
}

/**
 * Compiling is pure: the same schema gives the same verdict, the same file under the same schema the
 * same policies, ids and validation outcome. Every agent compiles each bundle it installs, and a
 * policy change usually touches one file of many, so both are remembered per process (bounded:
 * cleared when full). The keys are the canonical schema and SHA-256 digests of it and of the text.
 */
interface CheckedSchema { schema: Record<string, unknown>; key: string }
interface CompiledFile { parsed: string[] | string; ids: string[]; problems: string[]; warnings: string[] }
const schemaCache = new Map<string, CheckedSchema | string[]>();
const fileCache = new Map<string, CompiledFile>();
const MAX_SCHEMAS = 16;
const MAX_FILES = 1024;

function remember<V>(cache: Map<string, V>, max: number, key: string, value: V): V {
  if (cache.size >= max) cache.clear();
  cache.set(key, value);
  return value;
}

function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const x of Object.values(v)) deepFreeze(x);
  }
  return v;
}

function checkedSchema(s: unknown): CheckedSchema {
  let canonical: string;
  try {
    if (obj(s) === undefined) throw new Error('not an object');
    canonical = canonicalJson(s);
  } catch {
    throw compileFail(['schema: must be a Cedar JSON schema (a plain JSON object)']);
  }
  let known = schemaCache.get(canonical);
  if (known === undefined) {
    const schema = deepFreeze(JSON.parse(canonical) as Record<string, unknown>);
    const sc = cedar.checkParseSchema(schema as cedar.SchemaJson<string>);
    known = remember(schemaCache, MAX_SCHEMAS, canonical, sc.type === 'success'
      ? { schema, key: createHash('sha256').update(canonical, 'utf8').digest('hex') }
      : sc.errors.map((e) => `schema: ${describe(e)}`));
  }
  if (Array.isArray(known)) throw compileFail(known);
  return known;
}

/** One file's policies (file order), their ids, and its validation problems and warnings under `schema`. */
function compileFile(file: string, text: string, schema: Record<string, unknown>, schemaKey: string): CompiledFile {
  const key = `${schemaKey}\n${createHash('sha256').update(text, 'utf8').digest('hex')}\n${file}`;
  const known = fileCache.get(key);
  if (known !== undefined) return known;
  const parsed = splitPolicies(file, text);
  if (typeof parsed === 'string' || parsed.length === 0) return remember(fileCache, MAX_FILES, key, { parsed, ids: [], problems: [], warnings: [] });
  const ids = parsed.map((p, index) => annotatedId(p) ?? `${file}#${index}`);
  const v = cedar.validate({ schema: schema as cedar.SchemaJson<string>, policies: { staticPolicies: text }, validationSettings: { mode: 'strict' } });
  if (v.type !== 'success') return remember(fileCache, MAX_FILES, key, { parsed, ids, problems: v.errors.map((e) => `${file}: ${describe(e)}`), warnings: [] });
  const where = (e: cedar.ValidationError): string => {
    const index = /^policy(\d+)$/.exec(e.policyId);
    const id = index ? ids[Number(index[1])] : undefined;
    return `${position(file, text, e.error)}: ${id !== undefined ? `[${id}] ` : ''}${describe(e.error)}`;
  };
  return remember(fileCache, MAX_FILES, key, {
    parsed, ids,
    problems: v.validationErrors.map(where),
    warnings: [...v.validationWarnings.map(where), ...v.otherWarnings.map((e) => `${file}: ${describe(e)}`)],
  });
}

/**
 * Splits one file into its policies, in file order, or returns the syntax error. Cedar returns
 * the parts sorted by their generated ids (`policy0`, `policy1`, `policy10`, `policy2`, ...):
 * put them back in file order, and check that ordering by splitting the result again.
 */
function splitPolicies(file: string, text: string): string[] | string {
  const r = cedar.policySetTextToParts(text);
  if (r.type !== 'success') {
    const e = r.errors[0];
    return e === undefined ? `${file}: cannot be parsed` : `${position(file, text, e)}: ${describe(e)}`;
  }
  if (r.policy_templates.length > 0) return `${file}: templates (policies with ?principal or ?resource slots) are not supported`;
  const n = r.policies.length;
  const order = Array.from({ length: n }, (_, i) => `policy${i}`).sort();
  const inFileOrder: string[] = new Array<string>(n);
  order.forEach((id, k) => {
    inFileOrder[Number(id.slice('policy'.length))] = r.policies[k]!;
  });
  const again = cedar.policySetTextToParts(inFileOrder.join('\n'));
  if (again.type !== 'success' || again.policies.length !== n || again.policies.some((p, k) => p !== r.policies[k])) {
    throw new TesseraError('TESSERA_INTERNAL', 'cedar-wasm changed how it orders policies: policy ids cannot be assigned');
  }
  return inFileOrder;
}

/** The policy's `@id("...")` annotation, if any. */
function annotatedId(policyText: string): string | undefined {
  if (!policyText.includes('@id')) return undefined;
  const j = cedar.policyToJson(policyText);
  if (j.type !== 'success') return undefined;
  const id = j.json.annotations?.id;
  return typeof id === 'string' ? id : undefined;
}

/** `file:line:col` of a Cedar error (offsets are UTF-8 byte offsets into the file). */
function position(file: string, text: string, e: cedar.DetailedError): string {
  const loc = e.sourceLocations?.[0] ?? e.related?.find((r) => r.sourceLocations?.[0] !== undefined)?.sourceLocations?.[0];
  if (loc === undefined) return file;
  const before = Buffer.from(text, 'utf8').subarray(0, loc.start).toString('utf8');
  const lines = before.split('\n');
  const last = lines[lines.length - 1] ?? '';
  return `${file}:${lines.length}:${Array.from(last).length + 1}`;
}

/** Cedar's message without its generated policy id, with the labels, related errors and help. */
function describe(e: cedar.DetailedError): string {
  let s = e.message.replace(/^for policy `policy\d+`, /, '');
  const label = e.sourceLocations?.[0]?.label;
  if (label) s += ` (${label})`;
  for (const r of e.related ?? []) {
    const rl = r.sourceLocations?.[0]?.label;
    s += `; ${r.message}${rl ? ` (${rl})` : ''}`;
  }
  if (e.help) s += ` (help: ${e.help})`;
  return s;
}
