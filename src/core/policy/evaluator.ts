/**
 * An in-process Cedar evaluator over Cedar's JSON policy format (the EST that cedar-wasm's
 * `policyToJson` returns), so that a decision costs closures, not a call into Wasm.
 *
 * Each policy is compiled once into a closure `(env) => boolean` (scope checks first, then the
 * `when`/`unless` clauses in order, as Cedar conjoins them). Evaluation errors (a missing
 * attribute, a type error, an integer overflow, an entity that is not in the store) are thrown as
 * one preallocated object (no stack trace) and make that one policy "errored": skipped, and
 * reported, exactly as Cedar does. A policy holding anything this file does not implement
 * (extension functions such as `ip()` or `decimal()`, entity tags, literals outside ±2^53) is
 * reported as unsupported at compile time; the caller decides it with cedar-wasm instead.
 *
 * Values: Bool = boolean; Long = number when a safe integer, else bigint (so that i64 arithmetic
 * is exact and `===` never has to compare a number with a bigint); String = string; entities =
 * {@link EntityRef}; sets = {@link CSet}; records = {@link CRecord}. `differential random testing`
 * against cedar-wasm (drt.ts, evaluator.drt.test.ts, `bench/policy.ts --differential`) is what
 * shows these semantics to be Cedar's.
 */
import type * as cedar from '@cedar-policy/cedar-wasm/nodejs';

/** An entity UID. `key` is unique per (type, id) and is what equality and ancestry compare. */
export class EntityRef {
  readonly key: string;
  constructor(readonly type: string, readonly id: string) {
    this.key = entityKey(type, id);
  }
}

/** A Cedar set: duplicates may be present (equality and membership are set semantics). */
export class CSet {
  constructor(readonly items: readonly Value[]) {}
}

/** A Cedar record: own properties of `o` (a null-prototype object or a JSON object). */
export class CRecord {
  constructor(public o: Record<string, Value>) {}
}

export type Value = boolean | number | bigint | string | EntityRef | CSet | CRecord;

export interface EntityData {
  readonly uid: EntityRef;
  readonly attrs: CRecord;
  /** Keys of every ancestor (transitive). */
  readonly ancestors: ReadonlySet<string>;
}

/** What a decision is evaluated against. Engines may reuse one object between decisions. */
export interface Env {
  principal: EntityRef;
  action: EntityRef;
  resource: EntityRef;
  context: CRecord;
  entity(key: string): EntityData | undefined;
}

export const entityKey = (type: string, id: string): string => `${type}::${JSON.stringify(id)}`;

/** The constructs a policy uses, for the differential suite's coverage counts. */
export type Construct =
  | 'scope==' | 'scopeIn' | 'scopeIs' | 'scopeIsIn' | 'actionIn' | 'when' | 'unless' | 'literal' | 'entityLiteral' | 'var'
  | 'attr' | 'has' | 'hasPath' | '==' | '!=' | 'compare' | '&&' | '||' | '!' | 'arith' | 'neg' | 'like' | 'in' | 'inSet'
  | 'is' | 'isIn' | 'contains' | 'containsAll' | 'containsAny' | 'isEmpty' | 'if' | 'set' | 'record';

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/** The one object thrown on an evaluation error; `message` says the last error. */
const FAIL = { message: '' };

function fail(message: string): never {
  FAIL.message = message;
  throw FAIL;
}

/** Thrown at compile time for a construct this evaluator does not implement. */
class Unsupported extends Error {}

const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;

// ---------------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------------

function typeName(v: Value): string {
  switch (typeof v) {
    case 'boolean': return 'bool';
    case 'number': case 'bigint': return 'long';
    case 'string': return 'string';
    default: return v instanceof EntityRef ? 'entity' : v instanceof CSet ? 'set' : 'record';
  }
}

function typeError(expected: string, got: Value): never {
  return fail(`type error: expected ${expected}, got ${typeName(got)}`);
}

export function valueEquals(a: Value, b: Value): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object') return false;
  if (a instanceof EntityRef) return b instanceof EntityRef && a.key === b.key;
  if (a instanceof CSet) return b instanceof CSet && subset(a, b) && subset(b, a);
  if (!(b instanceof CRecord) || !(a instanceof CRecord)) return false;
  const ka = Object.keys(a.o);
  if (ka.length !== Object.keys(b.o).length) return false;
  for (const k of ka) if (!Object.hasOwn(b.o, k) || !valueEquals(a.o[k]!, b.o[k]!)) return false;
  return true;
}

function setHas(s: CSet, v: Value): boolean {
  for (const x of s.items) if (valueEquals(x, v)) return true;
  return false;
}

/** Every item of `a` is in `b`. */
function subset(a: CSet, b: CSet): boolean {
  for (const x of a.items) if (!setHas(b, x)) return false;
  return true;
}

function asBool(v: Value): boolean {
  return typeof v === 'boolean' ? v : typeError('bool', v);
}

function asSet(v: Value): CSet {
  return v instanceof CSet ? v : typeError('set', v);
}

function asEntity(v: Value): EntityRef {
  return v instanceof EntityRef ? v : typeError('entity', v);
}

function isLong(v: Value): v is number | bigint {
  return typeof v === 'number' || typeof v === 'bigint';
}

/** An i64 from a bigint: a number when safe, overflow error outside i64. */
function normLong(r: bigint, what: string): number | bigint {
  if (r < I64_MIN || r > I64_MAX) return fail(`integer overflow while attempting to ${what}`);
  const n = Number(r);
  return Number.isSafeInteger(n) ? n : r;
}

function arith(op: '+' | '-' | '*', a: Value, b: Value): number | bigint {
  if (typeof a === 'number' && typeof b === 'number') {
    const r = op === '+' ? a + b : op === '-' ? a - b : a * b;
    // Safe inputs: a result inside ±(2^53-1) is exact (and one outside it cannot round back in).
    if (Number.isSafeInteger(r)) return r === 0 ? 0 : r;
  }
  if (!isLong(a)) return typeError('long', a);
  if (!isLong(b)) return typeError('long', b);
  const x = BigInt(a);
  const y = BigInt(b);
  return normLong(op === '+' ? x + y : op === '-' ? x - y : x * y, op === '+' ? 'add' : op === '-' ? 'subtract' : 'multiply');
}

function entityIn(env: Env, l: EntityRef, r: EntityRef): boolean {
  if (l.key === r.key) return true;
  const d = env.entity(l.key);
  return d !== undefined && d.ancestors.has(r.key);
}

function attrOf(env: Env, v: Value, name: string): Value {
  let rec: CRecord;
  if (v instanceof EntityRef) {
    const d = env.entity(v.key);
    if (d === undefined) return fail(`entity ${v.key} does not exist`);
    rec = d.attrs;
  } else if (v instanceof CRecord) {
    rec = v;
  } else {
    return typeError('entity or record', v);
  }
  if (!Object.hasOwn(rec.o, name)) return fail(`${v instanceof EntityRef ? v.key : 'record'} does not have the attribute ${JSON.stringify(name)}`);
  return rec.o[name]!;
}

function hasAttr(env: Env, v: Value, name: string): boolean {
  if (v instanceof EntityRef) {
    const d = env.entity(v.key);
    return d !== undefined && Object.hasOwn(d.attrs.o, name);
  }
  if (v instanceof CRecord) return Object.hasOwn(v.o, name);
  return typeError('entity or record', v);
}

/** A `like` pattern as its literal runs between wildcards. Matching by UTF-16 units equals matching by chars for well-formed strings. */
function likeMatcher(elems: readonly cedar.PatternElem[]): (s: string) => boolean {
  const parts: string[] = [''];
  for (const e of elems) {
    if (e === 'Wildcard') parts.push('');
    else if (typeof e === 'object' && e !== null && typeof e.Literal === 'string') parts[parts.length - 1] += e.Literal;
    else throw new Unsupported('like pattern element');
  }
  if (parts.length === 1) {
    const exact = parts[0]!;
    return (s) => s === exact;
  }
  const first = parts[0]!;
  const last = parts[parts.length - 1]!;
  const middle = parts.slice(1, -1).filter((p) => p.length > 0);
  const fixed = first.length + last.length;
  return (s) => {
    if (s.length < fixed || !s.startsWith(first) || !s.endsWith(last)) return false;
    let at = first.length;
    const end = s.length - last.length;
    for (const m of middle) {
      const i = s.indexOf(m, at);
      if (i < 0 || i + m.length > end) return false;
      at = i + m.length;
    }
    return true;
  };
}

// ---------------------------------------------------------------------------------------------
// JSON values (entity attributes, context, `Value` literals)
// ---------------------------------------------------------------------------------------------

/**
 * A Cedar JSON value (entities and context, `__entity` escapes) as a {@link Value}, or undefined
 * when it holds something this evaluator does not represent (extension values, non-integral or
 * out-of-range numbers, null).
 */
export function fromJson(v: unknown): Value | undefined {
  switch (typeof v) {
    case 'boolean': case 'string': return v;
    case 'number': return Number.isSafeInteger(v) ? (v === 0 ? 0 : v) : undefined;
    case 'object': {
      if (v === null) return undefined;
      if (Array.isArray(v)) {
        const items: Value[] = [];
        for (const x of v) {
          const y = fromJson(x);
          if (y === undefined) return undefined;
          items.push(y);
        }
        return new CSet(items);
      }
      const o = v as Record<string, unknown>;
      if (Object.hasOwn(o, '__extn')) return undefined;
      if (Object.hasOwn(o, '__entity')) {
        const e = o.__entity as { type?: unknown; id?: unknown } | null;
        if (Object.keys(o).length !== 1 || typeof e !== 'object' || e === null || typeof e.type !== 'string' || typeof e.id !== 'string') return undefined;
        return new EntityRef(e.type, e.id);
      }
      const out: Record<string, Value> = Object.create(null) as Record<string, Value>;
      for (const k of Object.keys(o)) {
        const y = fromJson(o[k]);
        if (y === undefined) return undefined;
        out[k] = y;
      }
      return new CRecord(out);
    }
    default: return undefined;
  }
}

/** A context object as a record, or undefined when {@link fromJson} cannot represent it. */
export function contextFromJson(ctx: unknown): CRecord | undefined {
  if (typeof ctx !== 'object' || ctx === null || Array.isArray(ctx)) return undefined;
  const v = fromJson(ctx);
  return v instanceof CRecord ? v : undefined;
}

/** `{type, id}` or `{__entity: {type, id}}` as an entity. */
function uidOf(u: unknown): EntityRef {
  const o = u as { type?: unknown; id?: unknown; __entity?: { type?: unknown; id?: unknown } } | null;
  const t = o?.__entity ?? o;
  if (typeof t?.type !== 'string' || typeof t.id !== 'string') throw new Unsupported('entity reference');
  return new EntityRef(t.type, t.id);
}

/**
 * An entity store from Cedar's entity JSON (parents computed transitively). Returns undefined
 * when an attribute holds a value {@link fromJson} cannot represent. Callers keep the hierarchy
 * acyclic (cedar-wasm refuses a cycle).
 */
export function entityStore(entities: readonly cedar.EntityJson[]): Map<string, EntityData> | undefined {
  const parents = new Map<string, string[]>();
  const raw: { uid: EntityRef; attrs: CRecord }[] = [];
  for (const e of entities) {
    const uid = uidOf(e.uid);
    const attrs = fromJson(e.attrs ?? {});
    if (!(attrs instanceof CRecord)) return undefined;
    if (e.tags !== undefined && Object.keys(e.tags).length > 0) return undefined;
    parents.set(uid.key, (e.parents ?? []).map((p) => uidOf(p).key));
    raw.push({ uid, attrs });
  }
  const out = new Map<string, EntityData>();
  for (const { uid, attrs } of raw) {
    const seen = new Set<string>();
    const stack = [...(parents.get(uid.key) ?? [])];
    while (stack.length > 0) {
      const k = stack.pop()!;
      if (seen.has(k)) continue;
      seen.add(k);
      for (const p of parents.get(k) ?? []) stack.push(p);
    }
    out.set(uid.key, { uid, attrs, ancestors: seen });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Compilation
// ---------------------------------------------------------------------------------------------

type Fn = (env: Env) => Value;
type Test = (env: Env) => boolean;

interface Ctx {
  /** Constructs used (for coverage), or undefined. */
  used: Set<Construct> | undefined;
  /** Values of template slots (`?principal`, `?resource`). */
  slots: Readonly<Record<string, EntityRef>>;
}

function note(c: Ctx, what: Construct): void {
  c.used?.add(what);
}

function constant(v: Value): Fn {
  return () => v;
}

function bin(e: Record<string, unknown>, op: string): { left: unknown; right: unknown } {
  const b = e[op] as { left?: unknown; right?: unknown } | undefined;
  if (typeof b !== 'object' || b === null || !('left' in b) || !('right' in b)) throw new Unsupported(`malformed ${op}`);
  return b as { left: unknown; right: unknown };
}

function compileExpr(e: unknown, c: Ctx): Fn {
  if (typeof e !== 'object' || e === null || Array.isArray(e)) throw new Unsupported('expression');
  const o = e as Record<string, unknown>;
  const keys = Object.keys(o);
  if (keys.length !== 1) throw new Unsupported('expression');
  const op = keys[0]!;
  switch (op) {
    case 'Value': {
      const v = fromJson(o.Value);
      if (v === undefined) throw new Unsupported('literal');
      note(c, v instanceof EntityRef ? 'entityLiteral' : 'literal');
      return constant(v);
    }
    case 'Var': {
      note(c, 'var');
      switch (o.Var) {
        case 'principal': return (env) => env.principal;
        case 'action': return (env) => env.action;
        case 'resource': return (env) => env.resource;
        case 'context': return (env) => env.context;
        default: throw new Unsupported('variable');
      }
    }
    case '!': {
      note(c, '!');
      const a = compileExpr((o['!'] as { arg?: unknown })?.arg, c);
      return (env) => !asBool(a(env));
    }
    case 'neg': {
      note(c, 'neg');
      const a = compileExpr((o.neg as { arg?: unknown })?.arg, c);
      return (env) => {
        const v = a(env);
        if (typeof v === 'number') return v === 0 ? 0 : -v;
        if (typeof v === 'bigint') return normLong(-v, 'negate');
        return typeError('long', v);
      };
    }
    case '==': case '!=': {
      note(c, op);
      const { left, right } = bin(o, op);
      const l = compileExpr(left, c);
      const r = compileExpr(right, c);
      return op === '==' ? (env) => valueEquals(l(env), r(env)) : (env) => !valueEquals(l(env), r(env));
    }
    case '<': case '<=': case '>': case '>=': {
      note(c, 'compare');
      const { left, right } = bin(o, op);
      const l = compileExpr(left, c);
      const r = compileExpr(right, c);
      const check = (a: Value, b: Value): void => {
        if (!isLong(a)) typeError('long', a);
        if (!isLong(b)) typeError('long', b);
      };
      switch (op) {
        case '<': return (env) => { const a = l(env); const b = r(env); check(a, b); return a < b; };
        case '<=': return (env) => { const a = l(env); const b = r(env); check(a, b); return a <= b; };
        case '>': return (env) => { const a = l(env); const b = r(env); check(a, b); return a > b; };
        default: return (env) => { const a = l(env); const b = r(env); check(a, b); return a >= b; };
      }
    }
    case '&&': {
      note(c, '&&');
      const { left, right } = bin(o, op);
      const l = compileExpr(left, c);
      const r = compileExpr(right, c);
      return (env) => asBool(l(env)) && asBool(r(env));
    }
    case '||': {
      note(c, '||');
      const { left, right } = bin(o, op);
      const l = compileExpr(left, c);
      const r = compileExpr(right, c);
      return (env) => asBool(l(env)) || asBool(r(env));
    }
    case '+': case '-': case '*': {
      note(c, 'arith');
      const { left, right } = bin(o, op);
      const l = compileExpr(left, c);
      const r = compileExpr(right, c);
      return (env) => arith(op, l(env), r(env));
    }
    case 'in': {
      const { left, right } = bin(o, op);
      const l = compileExpr(left, c);
      const r = compileExpr(right, c);
      note(c, 'in');
      if (typeof right === 'object' && right !== null && 'Set' in right) note(c, 'inSet');
      return (env) => inValue(env, l(env), r(env));
    }
    case 'contains': {
      note(c, 'contains');
      const { left, right } = bin(o, op);
      const l = compileExpr(left, c);
      const r = compileExpr(right, c);
      return (env) => { const s = asSet(l(env)); return setHas(s, r(env)); };
    }
    case 'containsAll': case 'containsAny': {
      note(c, op);
      const { left, right } = bin(o, op);
      const l = compileExpr(left, c);
      const r = compileExpr(right, c);
      if (op === 'containsAll') return (env) => { const a = l(env); const b = r(env); return subset(asSet(b), asSet(a)); };
      return (env) => {
        const a = l(env);
        const b = r(env);
        const sa = asSet(a);
        for (const x of asSet(b).items) if (setHas(sa, x)) return true;
        return false;
      };
    }
    case 'isEmpty': {
      note(c, 'isEmpty');
      const a = compileExpr((o.isEmpty as { arg?: unknown })?.arg, c);
      return (env) => asSet(a(env)).items.length === 0;
    }
    case '.': {
      note(c, 'attr');
      const d = o['.'] as { left?: unknown; attr?: unknown };
      if (typeof d?.attr !== 'string') throw new Unsupported('attribute');
      const l = compileExpr(d.left, c);
      const name = d.attr;
      return (env) => attrOf(env, l(env), name);
    }
    case 'has': {
      const d = o.has as { left?: unknown; attr?: unknown };
      const l = compileExpr(d?.left, c);
      if (typeof d.attr === 'string') {
        note(c, 'has');
        const name = d.attr;
        return (env) => hasAttr(env, l(env), name);
      }
      if (!Array.isArray(d.attr) || d.attr.length === 0 || d.attr.some((a) => typeof a !== 'string')) throw new Unsupported('has');
      // `e has a.b.c` is `e has a && e.a has b && e.a.b has c`.
      note(c, 'hasPath');
      const path = d.attr as string[];
      return (env) => {
        let v = l(env);
        for (let i = 0; i < path.length; i++) {
          if (!hasAttr(env, v, path[i]!)) return false;
          if (i < path.length - 1) v = attrOf(env, v, path[i]!);
        }
        return true;
      };
    }
    case 'like': {
      note(c, 'like');
      const d = o.like as { left?: unknown; pattern?: unknown };
      if (!Array.isArray(d?.pattern)) throw new Unsupported('like');
      const l = compileExpr(d.left, c);
      const m = likeMatcher(d.pattern as cedar.PatternElem[]);
      return (env) => { const v = l(env); return typeof v === 'string' ? m(v) : typeError('string', v); };
    }
    case 'is': {
      const d = o.is as { left?: unknown; entity_type?: unknown; in?: unknown };
      if (typeof d?.entity_type !== 'string') throw new Unsupported('is');
      const l = compileExpr(d.left, c);
      const t = d.entity_type;
      if (d.in === undefined) {
        note(c, 'is');
        return (env) => asEntity(l(env)).type === t;
      }
      note(c, 'isIn');
      const r = compileExpr(d.in, c);
      return (env) => {
        const v = l(env);
        return asEntity(v).type === t && inValue(env, v, r(env));
      };
    }
    case 'if-then-else': {
      note(c, 'if');
      const d = o['if-then-else'] as { if?: unknown; then?: unknown; else?: unknown };
      const i = compileExpr(d?.if, c);
      const t = compileExpr(d.then, c);
      const f = compileExpr(d.else, c);
      return (env) => (asBool(i(env)) ? t(env) : f(env));
    }
    case 'Set': {
      note(c, 'set');
      if (!Array.isArray(o.Set)) throw new Unsupported('set');
      const items = o.Set.map((x) => compileExpr(x, c));
      return (env) => {
        const out: Value[] = new Array<Value>(items.length);
        for (let i = 0; i < items.length; i++) out[i] = items[i]!(env);
        return new CSet(out);
      };
    }
    case 'Record': {
      note(c, 'record');
      const rec = o.Record as Record<string, unknown> | null;
      if (typeof rec !== 'object' || rec === null || Array.isArray(rec)) throw new Unsupported('record');
      const names = Object.keys(rec);
      const fns = names.map((n) => compileExpr(rec[n], c));
      return (env) => {
        const out = Object.create(null) as Record<string, Value>;
        for (let i = 0; i < names.length; i++) out[names[i]!] = fns[i]!(env);
        return new CRecord(out);
      };
    }
    default:
      // Extension functions (ip, decimal, datetime, ...), getTag/hasTag, Slot in a condition.
      throw new Unsupported(op);
  }
}

function inValue(env: Env, l: Value, r: Value): boolean {
  const le = asEntity(l);
  if (r instanceof EntityRef) return entityIn(env, le, r);
  if (!(r instanceof CSet)) return typeError('entity or set', r);
  for (const x of r.items) asEntity(x);
  for (const x of r.items) if (entityIn(env, le, x as EntityRef)) return true;
  return false;
}

type ScopeVar = 'principal' | 'resource' | 'action';

function scopeEntity(con: Record<string, unknown>, c: Ctx): EntityRef {
  if (typeof con.slot === 'string') {
    const v = c.slots[con.slot];
    if (v === undefined) throw new Unsupported(`unlinked slot ${con.slot}`);
    return v;
  }
  return uidOf(con.entity);
}

function compileScope(which: ScopeVar, con: unknown, c: Ctx): { test: Test | undefined; actionKey?: string } {
  const s = con as Record<string, unknown> | null;
  if (typeof s !== 'object' || s === null) throw new Unsupported('scope');
  const get = which === 'principal' ? (env: Env) => env.principal : which === 'resource' ? (env: Env) => env.resource : (env: Env) => env.action;
  switch (s.op) {
    case 'All': return { test: undefined };
    case '==': {
      note(c, 'scope==');
      const key = scopeEntity(s, c).key;
      return which === 'action' ? { test: undefined, actionKey: key } : { test: (env) => get(env).key === key };
    }
    case 'in': {
      if (which === 'action') {
        note(c, 'actionIn');
        const list = Array.isArray(s.entities) ? s.entities.map(uidOf) : [uidOf(s.entity)];
        return { test: (env) => { const a = env.action; for (const e of list) if (entityIn(env, a, e)) return true; return false; } };
      }
      note(c, 'scopeIn');
      const target = scopeEntity(s, c);
      return { test: (env) => entityIn(env, get(env), target) };
    }
    case 'is': {
      if (which === 'action' || typeof s.entity_type !== 'string') throw new Unsupported('scope is');
      const t = s.entity_type;
      if (s.in === undefined) {
        note(c, 'scopeIs');
        return { test: (env) => get(env).type === t };
      }
      note(c, 'scopeIsIn');
      const target = scopeEntity(s.in as Record<string, unknown>, c);
      return { test: (env) => { const v = get(env); return v.type === t && entityIn(env, v, target); } };
    }
    default: throw new Unsupported(`scope ${String(s.op)}`);
  }
}

export interface CompiledPolicy {
  readonly id: string;
  readonly forbid: boolean;
  /** The key of the action the scope names with `==`, or undefined (any action may match). */
  readonly actionKey: string | undefined;
  readonly test: Test;
  /** Constructs the policy uses (when compiled with coverage). */
  readonly constructs: ReadonlySet<Construct> | undefined;
}

/**
 * Compiles one policy (or a template with its link's slot values). Returns a string saying what
 * is unsupported when the policy must be decided by cedar-wasm.
 */
export function compilePolicy(id: string, json: cedar.PolicyJson, slots: Readonly<Record<string, cedar.EntityUidJson>> = {}, coverage = false): CompiledPolicy | string {
  const c: Ctx = { used: coverage ? new Set() : undefined, slots: {} };
  try {
    const linked: Record<string, EntityRef> = {};
    for (const [k, v] of Object.entries(slots)) linked[k] = uidOf(v);
    c.slots = linked;
    if (json.effect !== 'permit' && json.effect !== 'forbid') throw new Unsupported('effect');
    const p = compileScope('principal', json.principal, c);
    const a = compileScope('action', json.action, c);
    const r = compileScope('resource', json.resource, c);
    const tests: Test[] = [];
    for (const t of [p.test, a.test, r.test]) if (t !== undefined) tests.push(t);
    for (const clause of json.conditions ?? []) {
      const body = compileExpr(clause.body, c);
      if (clause.kind === 'when') {
        note(c, 'when');
        tests.push((env) => asBool(body(env)));
      } else if (clause.kind === 'unless') {
        note(c, 'unless');
        tests.push((env) => !asBool(body(env)));
      } else {
        throw new Unsupported('clause');
      }
    }
    return { id, forbid: json.effect === 'forbid', actionKey: a.actionKey, test: conjoin(tests), constructs: c.used };
  } catch (err) {
    if (err instanceof Unsupported) return err.message;
    throw err;
  }
}

function conjoin(tests: Test[]): Test {
  switch (tests.length) {
    case 0: return () => true;
    case 1: return tests[0]!;
    case 2: { const [a, b] = tests as [Test, Test]; return (env) => a(env) && b(env); }
    case 3: { const [a, b, d] = tests as [Test, Test, Test]; return (env) => a(env) && b(env) && d(env); }
    default: return (env) => { for (const t of tests) if (!t(env)) return false; return true; };
  }
}

/** The outcome of evaluating a set of policies, in Cedar's terms (before Tessera's fail-closed rule). */
export interface Outcome {
  /** Ids of satisfied permits, in policy order. */
  permits: string[];
  forbids: string[];
  /** [policy id, message] of each policy whose evaluation errored. */
  errors: [string, string][];
}

const NONE = Object.freeze([]) as unknown as never[];

/** Compiled policies indexed by the action their scope names. */
export class PolicyEvaluator {
  readonly #policies: readonly CompiledPolicy[];
  readonly #byAction = new Map<string, readonly CompiledPolicy[]>();

  constructor(policies: readonly CompiledPolicy[]) {
    this.#policies = policies;
  }

  get size(): number {
    return this.#policies.length;
  }

  /** The policies that can match a request for `actionKey`, in policy order (built once per action). */
  #forAction(actionKey: string): readonly CompiledPolicy[] {
    let list = this.#byAction.get(actionKey);
    if (list === undefined) {
      list = this.#policies.filter((p) => p.actionKey === undefined || p.actionKey === actionKey);
      if (this.#byAction.size < 1024) this.#byAction.set(actionKey, list);
    }
    return list;
  }

  /**
   * Evaluates every policy that can match the request. Never throws for evaluation errors. The
   * arrays of the outcome are one shared frozen empty array when empty (no allocation).
   */
  evaluate(env: Env): Outcome {
    const list = this.#forAction(env.action.key);
    let permits: string[] = NONE;
    let forbids: string[] = NONE;
    let errors: [string, string][] = NONE;
    for (let i = 0; i < list.length; i++) {
      const p = list[i]!;
      let ok: boolean;
      try {
        ok = p.test(env);
      } catch (err) {
        if (err !== FAIL) throw err;
        if (errors.length === 0) errors = [];
        errors.push([p.id, FAIL.message]);
        continue;
      }
      if (!ok) continue;
      if (p.forbid) {
        if (forbids.length === 0) forbids = [];
        forbids.push(p.id);
      } else {
        if (permits.length === 0) permits = [];
        permits.push(p.id);
      }
    }
    return { permits, forbids, errors };
  }
}

/** A store-backed environment (tests, the differential suite). */
export class MapEnv implements Env {
  constructor(
    public principal: EntityRef,
    public action: EntityRef,
    public resource: EntityRef,
    public context: CRecord,
    readonly store: ReadonlyMap<string, EntityData>,
  ) {}

  entity(key: string): EntityData | undefined {
    return this.store.get(key);
  }
}

/** A decision in Cedar's terms: Cedar's own rules, before Tessera's "any error denies". */
export interface CedarAnswer {
  allow: boolean;
  /** Determining policies: the satisfied forbids if any, else the satisfied permits of an allow; [] for a deny without a forbid. */
  reasons: string[];
  errors: [string, string][];
}

/**
 * Cedar's answer from the in-process outcome and, when some policies were left to cedar-wasm,
 * cedar-wasm's answer over those policies alone. A sub-answer tells enough: an allow names its
 * satisfied permits (and no forbid was satisfied); a deny names its satisfied forbids (none, when
 * neither a forbid nor a permit was satisfied).
 */
export function combineAnswers(js: Outcome, fallback?: cedar.Response): CedarAnswer {
  let { permits, forbids, errors } = js;
  if (fallback !== undefined) {
    const r = fallback.diagnostics.reason;
    if (fallback.decision === 'allow') permits = permits.concat(r);
    else if (r.length > 0) forbids = forbids.concat(r);
    if (fallback.diagnostics.errors.length > 0) errors = errors.concat(fallback.diagnostics.errors.map((e): [string, string] => [e.policyId, e.error.message]));
  }
  const allow = forbids.length === 0 && permits.length > 0;
  return { allow, reasons: forbids.length > 0 ? forbids : allow ? permits : [], errors };
}
