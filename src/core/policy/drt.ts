/**
 * Differential random testing of the in-process evaluator (evaluator.ts) against cedar-wasm, the
 * way the Cedar project tests its own implementations: fast-check generates entity stores
 * (hierarchies, attributes of strings, longs, bools, sets, records and entity references), policy
 * sets (scope constraints, `when`/`unless`, `like`, `has`, `in` over hierarchies, sets, records,
 * arithmetic up to i64 overflow, ill-typed and missing-attribute expressions that make a policy
 * error, extension calls that send a policy to cedar-wasm) and requests; {@link runCase} decides
 * each case both ways and compares the decision, the determining policies and the set of erroring
 * policy ids. Used by evaluator.drt.test.ts (`npm test`) and `bench/policy.ts --differential N`.
 * (Test support: not part of the public API.)
 */
import fc from 'fast-check';
import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import {
  MapEnv, PolicyEvaluator, EntityRef, combineAnswers, compilePolicy, contextFromJson, entityStore,
  type CompiledPolicy, type Construct, type EntityData,
} from './evaluator.js';

export interface DrtRequest {
  principal: cedar.TypeAndId;
  action: cedar.TypeAndId;
  resource: cedar.TypeAndId;
  context: Record<string, cedar.CedarValueJson>;
}

/** One entity store and policy set, and 1 to 4 requests decided against them. */
export interface DrtCase {
  entities: cedar.EntityJson[];
  /** Policy id → Cedar text. */
  policies: Record<string, string>;
  requests: DrtRequest[];
}

export interface DrtVerdict {
  decision: 'allow' | 'deny';
  reasons: string[];
  errored: string[];
}

export interface DrtResult {
  /** The first disagreement (request index, both answers); undefined when all agree. */
  disagreement: string | undefined;
  /** cedar-wasm's answer to each request. */
  references: (DrtVerdict | string)[];
  /** Policies compiled in process, and the constructs they use. */
  compiled: CompiledPolicy[];
  /** Ids of policies left to cedar-wasm. */
  fallback: string[];
}

// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

const TYPES = ['User', 'Group', 'NS::Res'] as const;
const IDS = ['a', 'b', 'c', '', 'é😀'] as const;
const ACTIONS = ['read', 'write', 'all'] as const;
const STRINGS = ['', 'a', 'ab', 'ba', 'aba', 'a*b', 'é', '😀x', 'b'] as const;
/** Longs that entities and contexts may carry (JS-safe, as Tessera's are). */
const LONGS = [0, 1, -1, 2, 7, -7, 100, 2 ** 31, 2 ** 40, 2 ** 52, -(2 ** 52), Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER] as const;
/** Long literals in policies: i64 edges too (those leave the policy to cedar-wasm). */
const LONG_LITERALS = ['0', '1', '-1', '2', '7', '100', '4294967296', '1099511627776', '4503599627370496', '9007199254740993', '9223372036854775807', '-9223372036854775808'] as const;
/** Attribute names and the type each one usually holds. */
const ATTRS = { s: 'string', n: 'long', b: 'bool', e: 'entity', st: 'set', r: 'record' } as const;
type AttrName = keyof typeof ATTRS;
const ATTR_NAMES = Object.keys(ATTRS) as AttrName[];

const uidArb = fc.record({ type: fc.constantFrom(...TYPES), id: fc.constantFrom(...IDS) });
const actionArb = fc.record({ type: fc.constant('Action'), id: fc.constantFrom(...ACTIONS) });

/** `build` memoized by its arguments: arbitraries are built once per kind and depth, not per generated value. */
function memo<A extends unknown[], T>(build: (...args: A) => fc.Arbitrary<T>): (...args: A) => fc.Arbitrary<T> {
  const built = new Map<string, fc.Arbitrary<T>>();
  return (...args) => {
    const k = args.join('/');
    let a = built.get(k);
    if (a === undefined) {
      a = build(...args);
      built.set(k, a);
    }
    return a;
  };
}

/** A JSON value for an attribute; `depth` bounds nesting. */
const jsonValue = memo(buildJsonValue);

function buildJsonValue(kind: string, depth: number): fc.Arbitrary<cedar.CedarValueJson> {
  switch (kind) {
    case 'string': return fc.constantFrom(...STRINGS);
    case 'long': return fc.constantFrom(...LONGS);
    case 'bool': return fc.boolean();
    case 'entity': return uidArb.map((u) => ({ __entity: u }));
    case 'set': return depth <= 0 ? fc.constant([]) : fc.oneof(
      fc.array(fc.constantFrom(...LONGS), { maxLength: 3 }),
      fc.array(fc.constantFrom(...STRINGS), { maxLength: 3 }),
      fc.array(uidArb.map((u) => ({ __entity: u })), { maxLength: 3 }),
      fc.array(anyJson(depth - 1), { maxLength: 2 }),
    );
    default: return depth <= 0 ? fc.constant({}) : attrsArb(depth - 1);
  }
}

function anyJson(depth: number): fc.Arbitrary<cedar.CedarValueJson> {
  return fc.oneof(...(['string', 'long', 'bool', 'entity', 'set', 'record'] as const).map((k) => jsonValue(k, depth)));
}

/** A record of attributes: mostly each name with its usual type, sometimes another (type errors). */
const attrsArb = memo(buildAttrs);

function buildAttrs(depth: number): fc.Arbitrary<Record<string, cedar.CedarValueJson>> {
  const entries = ATTR_NAMES.map((name) => fc.option(
    fc.oneof({ weight: 6, arbitrary: jsonValue(ATTRS[name], depth) }, { weight: 1, arbitrary: anyJson(depth) }),
    { freq: 3, nil: undefined },
  ).map((v) => [name, v] as const));
  return fc.tuple(...entries).map((es) => {
    const o: Record<string, cedar.CedarValueJson> = {};
    for (const [k, v] of es) if (v !== undefined) o[k] = v;
    return o;
  });
}

const key = (u: cedar.TypeAndId): string => `${u.type}::${JSON.stringify(u.id)}`;

/** Entities: unique uids, each entity's parents drawn from the uids listed before it (acyclic), or not in the store at all. */
const entitiesArb: fc.Arbitrary<cedar.EntityJson[]> = fc.uniqueArray(uidArb, { selector: key, maxLength: 7 }).chain((uids) =>
  fc.tuple(...uids.map((uid, i) => fc.record({
    attrs: attrsArb(2),
    parents: fc.subarray([...uids.slice(0, i), { type: 'Group', id: 'outside' }], { maxLength: Math.min(3, i + 1) }),
  }).map(({ attrs, parents }) => ({ uid, attrs, parents }) as cedar.EntityJson))),
);

/** Action entities: `read` and `write` sometimes children of `all`. */
const actionEntitiesArb: fc.Arbitrary<cedar.EntityJson[]> = fc.tuple(fc.boolean(), fc.boolean(), attrsArb(1)).map(([r, w, attrs]) => [
  { uid: { type: 'Action', id: 'all' }, attrs: {}, parents: [] },
  { uid: { type: 'Action', id: 'read' }, attrs, parents: r ? [{ type: 'Action', id: 'all' }] : [] },
  { uid: { type: 'Action', id: 'write' }, attrs: {}, parents: w ? [{ type: 'Action', id: 'all' }] : [] },
]);

const str = (s: string): string => JSON.stringify(s);
const uidText = (u: cedar.TypeAndId): string => `${u.type}::${str(u.id)}`;
const uidTextArb = uidArb.map(uidText);

type Kind = 'bool' | 'long' | 'string' | 'entity' | 'set' | 'record';
const KINDS: Kind[] = ['bool', 'long', 'string', 'entity', 'set', 'record'];

/** Cedar text of an expression that usually has type `kind` (sometimes another: type errors). */
const expr = memo(buildExpr);

function buildExpr(kind: Kind, depth: number): fc.Arbitrary<string> {
  if (depth <= 0) return leaf(kind);
  return fc.oneof(
    { weight: 12, arbitrary: typed(kind, depth) },
    { weight: 1, arbitrary: fc.oneof(...KINDS.map((k) => typed(k, depth))) },
  );
}

/** An attribute of the variables (`principal.s`, `context.r.n`). */
function attrPath(kind: Kind): fc.Arbitrary<string> {
  const wanted = ATTR_NAMES.filter((n) => ATTRS[n] === kind);
  const name = fc.oneof({ weight: 5, arbitrary: fc.constantFrom(...(wanted.length > 0 ? wanted : ATTR_NAMES)) }, { weight: 1, arbitrary: fc.constantFrom(...ATTR_NAMES, 'missing') });
  const base = fc.constantFrom('principal', 'resource', 'context', 'action', 'context.r', 'principal.r', 'principal.e', 'context.e', 'User::"a"');
  return fc.tuple(base, name).map(([b, n]) => `${b}.${n}`);
}

function leaf(kind: Kind): fc.Arbitrary<string> {
  switch (kind) {
    case 'bool': return fc.oneof(fc.constantFrom('true', 'false'), attrPath('bool'));
    case 'long': return fc.oneof(fc.constantFrom(...LONG_LITERALS), attrPath('long'));
    case 'string': return fc.oneof(fc.constantFrom(...STRINGS).map(str), attrPath('string'));
    case 'entity': return fc.oneof(fc.constantFrom('principal', 'resource', 'action'), uidTextArb, fc.constantFrom('Action::"all"', 'Action::"read"'), attrPath('entity'));
    case 'set': return fc.oneof(fc.constant('[]'), attrPath('set'), fc.constant('[1, 2]'), fc.constant('[User::"a", Group::"b"]'));
    default: return fc.oneof(fc.constantFrom('context', '{}', '{s: "a", n: 1}'), attrPath('record'));
  }
}

const like = fc.array(fc.constantFrom('a', 'b', '*', '\\*', 'é', '😀', 'x'), { maxLength: 5 }).map((ps) => `"${ps.join('')}"`);

function typed(kind: Kind, depth: number): fc.Arbitrary<string> {
  const d = depth - 1;
  const e = (k: Kind): fc.Arbitrary<string> => expr(k, d);
  const p = (a: fc.Arbitrary<string>): fc.Arbitrary<string> => a.map((s) => `(${s})`);
  const ite = fc.tuple(e('bool'), e(kind), e(kind)).map(([c, t, f]) => `(if ${c} then ${t} else ${f})`);
  switch (kind) {
    case 'bool': {
      const any = fc.oneof(...KINDS.map((k) => e(k)));
      const attrName = fc.oneof(fc.constantFrom(...ATTR_NAMES, 'missing'), fc.constant('"a b"'));
      return fc.oneof(
        leaf('bool'),
        fc.tuple(any, fc.constantFrom('==', '!='), any).map(([a, op, b]) => `${a} ${op} ${b}`).map((s) => `(${s})`),
        fc.tuple(e('long'), fc.constantFrom('<', '<=', '>', '>='), e('long')).map(([a, op, b]) => `(${a} ${op} ${b})`),
        fc.tuple(e('bool'), fc.constantFrom('&&', '||'), e('bool')).map(([a, op, b]) => `(${a} ${op} ${b})`),
        p(e('bool')).map((s) => `!${s}`),
        fc.tuple(e('string'), like).map(([s, pat]) => `(${s} like ${pat})`),
        fc.tuple(e('entity'), e('entity')).map(([a, b]) => `(${a} in ${b})`),
        fc.tuple(e('entity'), fc.array(e('entity'), { maxLength: 3 })).map(([a, bs]) => `(${a} in [${bs.join(', ')}])`),
        fc.tuple(e('entity'), e('set')).map(([a, b]) => `(${a} in ${b})`),
        fc.tuple(fc.oneof(e('entity'), e('record')), attrName).map(([a, n]) => `(${a} has ${n})`),
        fc.tuple(fc.oneof(e('entity'), e('record')), fc.constantFrom('r.n', 'r.s', 'e.s', 'r.r.b', 's.n')).map(([a, n]) => `(${a} has ${n})`),
        fc.tuple(e('entity'), fc.constantFrom(...TYPES)).map(([a, t]) => `(${a} is ${t})`),
        fc.tuple(e('entity'), fc.constantFrom(...TYPES), fc.oneof(e('entity'), e('set'))).map(([a, t, b]) => `(${a} is ${t} in ${b})`),
        // Receivers in parentheses: `-9223372036854775808.isEmpty()` is `-(9223372036854775808.isEmpty())`.
        fc.tuple(e('set'), any).map(([s, v]) => `(${s}).contains(${v})`),
        fc.tuple(e('set'), fc.constantFrom('containsAll', 'containsAny'), e('set')).map(([a, f, b]) => `(${a}).${f}(${b})`),
        e('set').map((s) => `(${s}).isEmpty()`),
        ite,
        // Extension functions: the in-process evaluator leaves these policies to cedar-wasm.
        fc.constantFrom('ip("10.0.0.1").isInRange(ip("10.0.0.0/8"))', 'decimal("1.5").lessThan(decimal("2.25"))', 'principal.hasTag("s")'),
      );
    }
    case 'long':
      return fc.oneof(
        leaf('long'),
        fc.tuple(e('long'), fc.constantFrom('+', '-', '*'), e('long')).map(([a, op, b]) => `(${a} ${op} ${b})`),
        p(e('long')).map((s) => `-${s}`),
        ite,
      );
    case 'string': return fc.oneof(leaf('string'), ite);
    case 'entity': return fc.oneof(leaf('entity'), ite);
    case 'set':
      return fc.oneof(
        leaf('set'),
        fc.array(fc.oneof(...KINDS.map((k) => e(k))), { maxLength: 3 }).map((xs) => `[${xs.join(', ')}]`),
        fc.array(e('entity'), { maxLength: 3 }).map((xs) => `[${xs.join(', ')}]`),
        ite,
      );
    default:
      return fc.oneof(
        leaf('record'),
        fc.tuple(e('string'), e('long'), fc.option(e('record'), { nil: undefined })).map(([s, n, r]) => `{s: ${s}, n: ${n}${r === undefined ? '' : `, r: ${r}`}}`),
        ite,
      );
  }
}

const principalScope = (v: 'principal' | 'resource'): fc.Arbitrary<string> => fc.oneof(
  { weight: 5, arbitrary: fc.constant(v) },
  uidTextArb.map((u) => `${v} == ${u}`),
  uidTextArb.map((u) => `${v} in ${u}`),
  fc.constantFrom(...TYPES).map((t) => `${v} is ${t}`),
  fc.tuple(fc.constantFrom(...TYPES), uidTextArb).map(([t, u]) => `${v} is ${t} in ${u}`),
);

const actionScope = fc.oneof(
  { weight: 4, arbitrary: fc.constant('action') },
  fc.constantFrom(...ACTIONS).map((a) => `action == Action::${str(a)}`),
  fc.constantFrom(...ACTIONS).map((a) => `action in Action::${str(a)}`),
  fc.subarray([...ACTIONS], { minLength: 1 }).map((as) => `action in [${as.map((a) => `Action::${str(a)}`).join(', ')}]`),
);

const policyArb: fc.Arbitrary<string> = fc.tuple(
  fc.constantFrom('permit', 'forbid', 'permit'),
  principalScope('principal'), actionScope, principalScope('resource'),
  fc.array(fc.tuple(fc.constantFrom('when', 'unless', 'when'), fc.oneof(expr('bool', 1), expr('bool', 2), expr('bool', 3))), { maxLength: 2 }),
).map(([effect, p, a, r, conds]) => `${effect} (${p}, ${a}, ${r})${conds.map(([k, b]) => ` ${k} { ${b} }`).join('')};`);

const requestArb: fc.Arbitrary<DrtRequest> = fc.record({ principal: uidArb, action: actionArb, resource: uidArb, context: attrsArb(2) });

/** A whole case: entities, 1 to 6 policies, and 1 to 4 requests. */
export const caseArbitrary: fc.Arbitrary<DrtCase> = fc.record({
  entities: entitiesArb,
  actions: actionEntitiesArb,
  policies: fc.array(policyArb, { minLength: 1, maxLength: 6 }),
  requests: fc.array(requestArb, { minLength: 1, maxLength: 4 }),
}).map(({ entities, actions, policies, requests }) => ({
  entities: [...entities, ...actions],
  policies: Object.fromEntries(policies.map((p, i) => [`p${i}`, p])),
  requests,
}));

// ---------------------------------------------------------------------------------------------
// Running a case both ways
// ---------------------------------------------------------------------------------------------

function verdict(a: cedar.AuthorizationAnswer): DrtVerdict | string {
  if (a.type !== 'success') return `failure: ${a.errors.map((e) => e.message).join('; ')}`;
  return { decision: a.response.decision, reasons: [...a.response.diagnostics.reason].sort(), errored: [...new Set(a.response.diagnostics.errors.map((e) => e.policyId))].sort() };
}

const FALLBACK_SET = 'tessera-drt-fallback';

/**
 * Decides each request of a case with cedar-wasm (`isAuthorized`, every policy, no schema) and
 * with the in-process evaluator (policies compiled once per case; those it does not support
 * preparsed alone and decided by cedar-wasm's `statefulIsAuthorized`, merged as the engine merges
 * them), and compares.
 */
export function runCase(c: DrtCase, coverage = false): DrtResult {
  const compiled: CompiledPolicy[] = [];
  const fallback: string[] = [];
  const references: (DrtVerdict | string)[] = [];
  let disagreement: string | undefined;
  let prepared: { evaluator: PolicyEvaluator; store: Map<string, EntityData> } | string;
  try {
    for (const [id, text] of Object.entries(c.policies)) {
      const j = cedar.policyToJson(text);
      if (j.type !== 'success') throw new Error(`${id} does not parse: ${j.errors.map((e) => e.message).join('; ')}`);
      const p = compilePolicy(id, j.json, {}, coverage);
      if (typeof p === 'string') fallback.push(id);
      else compiled.push(p);
    }
    if (fallback.length > 0) {
      const ps = cedar.preparsePolicySet(FALLBACK_SET, { staticPolicies: Object.fromEntries(fallback.map((id) => [id, c.policies[id]!])) });
      if (ps.type !== 'success') throw new Error(`fallback set: ${ps.errors.map((e) => e.message).join('; ')}`);
    }
    const store = entityStore(c.entities);
    if (store === undefined) throw new Error('the entities cannot be represented');
    prepared = { evaluator: new PolicyEvaluator(compiled), store };
  } catch (err) {
    prepared = `error: ${err instanceof Error ? err.message : String(err)}`;
  }
  for (const [i, r] of c.requests.entries()) {
    const call = { principal: r.principal, action: r.action, resource: r.resource, context: r.context, entities: c.entities };
    const reference = verdict(cedar.isAuthorized({ ...call, policies: { staticPolicies: c.policies } }));
    references.push(reference);
    let ours: DrtVerdict | string;
    if (typeof prepared === 'string') ours = prepared;
    else {
      try {
        const context = contextFromJson(r.context);
        if (context === undefined) throw new Error('the context cannot be represented');
        const env = new MapEnv(new EntityRef(r.principal.type, r.principal.id), new EntityRef(r.action.type, r.action.id), new EntityRef(r.resource.type, r.resource.id), context, prepared.store);
        const outcome = prepared.evaluator.evaluate(env);
        let sub: cedar.Response | undefined;
        if (fallback.length > 0) {
          const a = cedar.statefulIsAuthorized({ ...call, preparsedPolicySetId: FALLBACK_SET });
          if (a.type !== 'success') throw new Error(`fallback failed: ${a.errors.map((e) => e.message).join('; ')}`);
          sub = a.response;
        }
        const answer = combineAnswers(outcome, sub);
        ours = { decision: answer.allow ? 'allow' : 'deny', reasons: [...answer.reasons].sort(), errored: [...new Set(answer.errors.map((e) => e[0]))].sort() };
      } catch (err) {
        ours = `error: ${err instanceof Error ? err.message : String(err)}`;
      }
    }
    // Both refusing the case (a policy Cedar cannot parse) is agreement; Coverage counts those.
    const bothFailed = typeof reference === 'string' && typeof ours === 'string';
    if (disagreement === undefined && !bothFailed && JSON.stringify(reference) !== JSON.stringify(ours)) {
      disagreement = `request ${i}: cedar-wasm ${JSON.stringify(reference)} vs in-process ${JSON.stringify(ours)}`;
    }
  }
  return { disagreement, references, compiled, fallback };
}

/** Per-construct and outcome counts over many cases (a case: one request decided both ways). */
export class Coverage {
  readonly cases = { total: 0, allow: 0, denyByForbid: 0, denyNoMatch: 0, withErrors: 0, referenceFailures: 0 };
  /** Policy sets generated (each decides 1 to 4 requests). */
  sets = 0;
  /** Cases in which some in-process policy used each construct. */
  readonly constructs = new Map<Construct, number>();
  policies = 0;
  fallbackPolicies = 0;

  add(r: DrtResult): void {
    this.sets++;
    this.policies += r.compiled.length + r.fallback.length;
    this.fallbackPolicies += r.fallback.length;
    for (const v of r.references) {
      this.cases.total++;
      if (typeof v === 'string') this.cases.referenceFailures++;
      else {
        if (v.decision === 'allow') this.cases.allow++;
        else if (v.reasons.length > 0) this.cases.denyByForbid++;
        else this.cases.denyNoMatch++;
        if (v.errored.length > 0) this.cases.withErrors++;
      }
    }
    const seen = new Set<Construct>();
    for (const p of r.compiled) for (const k of p.constructs ?? []) seen.add(k);
    for (const k of seen) this.constructs.set(k, (this.constructs.get(k) ?? 0) + r.references.length);
  }

  format(): string {
    const c = this.cases;
    const lines = [
      `cases ${c.total}: allow ${c.allow}, deny by forbid ${c.denyByForbid}, deny (nothing satisfied) ${c.denyNoMatch}, with erroring policies ${c.withErrors}, Cedar request failures ${c.referenceFailures}`,
      `policy sets ${this.sets}, policies ${this.policies}, left to cedar-wasm (unsupported constructs) ${this.fallbackPolicies}`,
      'cases exercising each construct in process:',
    ];
    const row = [...this.constructs].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ${n}`);
    for (let i = 0; i < row.length; i += 8) lines.push(`  ${row.slice(i, i + 8).join(', ')}`);
    return `${lines.join('\n')}\n`;
  }
}
