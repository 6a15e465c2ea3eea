/**
 * Policy test cases: the file behind `tessera policy test -f cases.yaml`, a list of requests with
 * the decision each must get. YAML 1.2 (core schema, so JSON works too):
 *
 * ```yaml
 * entities:                      # optional: workloads and their attributes
 *   - id: spiffe://example.org/shop/frontend
 *     attrs: { app: shop, site: cloud-eu }
 * cases:
 *   - name: frontend reads orders
 *     principal: spiffe://example.org/shop/frontend
 *     action: http:request
 *     resource: spiffe://example.org/shop/orders
 *     context: { method: GET, path: /orders/42, site: cloud-eu, time: 1767225600, hour: 9, risk: 5 }
 *     expect: allow
 * ```
 *
 * Run them with an engine built on the file's entities:
 * `runCases(new PolicyEngine(compiled, cases.entities), cases)`.
 */
import { parseAllDocuments } from 'yaml';
import { TesseraError } from '../errors.js';
import { isSpiffeId } from '../spiffe-id.js';
import type { PolicyEngine } from './engine.js';
import { LIMITS, POLICY_ACTIONS, checkEntityAttributes, isPolicyAction, type PolicyAction, type PolicyContext, type PolicyEntity } from './types.js';

export interface PolicyCase {
  name: string;
  principal: string;
  action: PolicyAction;
  resource: string;
  context: PolicyContext;
  expect: 'allow' | 'deny';
}

export interface PolicyCases {
  entities: PolicyEntity[];
  cases: PolicyCase[];
}

export interface PolicyCaseResult {
  name: string;
  expected: 'allow' | 'deny';
  actual: 'allow' | 'deny';
  pass: boolean;
  /** Determining policy ids of the actual decision. */
  reasons: string[];
  /** Errors that forced a deny (bad context, evaluation errors). */
  errors: string[];
}

const MAX_TEXT_BYTES = 4 * 1024 * 1024;
const MAX_CASES = 10_000;
const MAX_NAME = 256;
const MAX_CONTEXT_KEYS = 64;
const MAX_CONTEXT_STRING = 4096;
const CONTEXT_KEY = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;
const CASE_KEYS: ReadonlySet<string> = new Set(['name', 'principal', 'action', 'resource', 'context', 'expect']);

function invalid(message: string): TesseraError {
  return new TesseraError('TESSERA_POLICY_CASES_INVALID', message);
}

/**
 * Parses and checks a test-case file (YAML or JSON). Unknown fields, bad SPIFFE IDs, unknown
 * actions, non-scalar context values, duplicate names and an `expect` other than allow/deny are
 * refused, naming the case by index and name.
 *
 * @example const cases = parseCases(readFileSync('cases.yaml', 'utf8'));
 * @throws TesseraError TESSERA_POLICY_CASES_INVALID
 */
export function parseCases(text: string): PolicyCases {
  try {
    return parseUnchecked(text);
  } catch (err) {
    if (err instanceof TesseraError && err.code === 'TESSERA_POLICY_CASES_INVALID') throw err;
    throw invalid('the test-case file cannot be read');
  }
}

function parseUnchecked(text: string): PolicyCases {
  if (typeof text !== 'string') throw invalid('the test-case file must be text');
  if (Buffer.byteLength(text, 'utf8') > MAX_TEXT_BYTES) throw invalid(`the test-case file is larger than ${MAX_TEXT_BYTES} bytes`);
  const docs = parseAllDocuments(text, { schema: 'core', strict: true, uniqueKeys: true, stringKeys: true, prettyErrors: true, logLevel: 'silent' });
  if (!Array.isArray(docs) || docs.length === 0) throw invalid('the test-case file is empty');
  if (docs.length > 1) throw invalid('not valid YAML: the file holds more than one document');
  const doc = docs[0]!;
  const problem = doc.errors[0] ?? doc.warnings[0];
  if (problem !== undefined) throw invalid(`not valid YAML: ${problem.message.split('\n')[0]}`);
  let root: unknown;
  try {
    root = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    throw invalid(`not valid YAML: ${err instanceof Error ? err.message.split('\n')[0] : 'cannot be read'}`);
  }
  const top = record(root, 'the file');
  for (const k of Object.keys(top)) if (k !== 'entities' && k !== 'cases') throw invalid(`unknown top-level field ${quote(k)} (expected entities, cases)`);

  const entities: PolicyEntity[] = [];
  if (top.entities !== undefined && top.entities !== null) {
    if (!Array.isArray(top.entities)) throw invalid('entities must be a list');
    if (top.entities.length > LIMITS.maxEntities) throw invalid(`more than ${LIMITS.maxEntities} entities`);
    const seen = new Set<string>();
    top.entities.forEach((e: unknown, i: number) => {
      const where = `entities[${i}]`;
      const o = record(e, where);
      for (const k of Object.keys(o)) if (k !== 'id' && k !== 'attrs') throw invalid(`${where}: unknown field ${quote(k)} (expected id, attrs)`);
      if (typeof o.id !== 'string' || !isSpiffeId(o.id)) throw invalid(`${where}: id must be a SPIFFE ID`);
      if (seen.has(o.id)) throw invalid(`${where}: ${o.id} is listed twice`);
      seen.add(o.id);
      const attrs = checkEntityAttributes(o.attrs ?? {});
      if (typeof attrs === 'string') throw invalid(`${where} (${o.id}): ${attrs}`);
      entities.push({ id: o.id, attrs });
    });
  }

  if (!Array.isArray(top.cases)) throw invalid('cases must be a list');
  if (top.cases.length === 0) throw invalid('cases is empty');
  if (top.cases.length > MAX_CASES) throw invalid(`more than ${MAX_CASES} cases`);
  const names = new Set<string>();
  const cases = top.cases.map((c: unknown, i: number): PolicyCase => {
    let where = `cases[${i}]`;
    const o = record(c, where);
    if (typeof o.name !== 'string' || o.name.trim().length === 0 || o.name.length > MAX_NAME) throw invalid(`${where}: name must be a non-empty string of at most ${MAX_NAME} characters`);
    where = `cases[${i}] ${quote(o.name)}`;
    if (names.has(o.name)) throw invalid(`${where}: the name is used by an earlier case`);
    names.add(o.name);
    for (const k of Object.keys(o)) if (!CASE_KEYS.has(k)) throw invalid(`${where}: unknown field ${quote(k)} (expected ${[...CASE_KEYS].join(', ')})`);
    if (typeof o.principal !== 'string' || !isSpiffeId(o.principal)) throw invalid(`${where}: principal must be a SPIFFE ID`);
    if (typeof o.resource !== 'string' || !isSpiffeId(o.resource)) throw invalid(`${where}: resource must be a SPIFFE ID`);
    if (!isPolicyAction(o.action)) throw invalid(`${where}: action must be one of ${POLICY_ACTIONS.join(', ')}`);
    if (o.expect !== 'allow' && o.expect !== 'deny') throw invalid(`${where}: expect must be allow or deny`);
    const context: PolicyContext = {};
    if (o.context !== undefined && o.context !== null) {
      const ctx = record(o.context, `${where}: context`);
      const keys = Object.keys(ctx);
      if (keys.length > MAX_CONTEXT_KEYS) throw invalid(`${where}: context has more than ${MAX_CONTEXT_KEYS} entries`);
      for (const k of keys) {
        if (!CONTEXT_KEY.test(k) || k === '__proto__') throw invalid(`${where}: context key ${quote(k)} is not an identifier`);
        const v = ctx[k];
        if (typeof v === 'number') {
          if (!Number.isSafeInteger(v)) throw invalid(`${where}: context.${k} must be an integer`);
        } else if (typeof v === 'string') {
          if (v.length > MAX_CONTEXT_STRING) throw invalid(`${where}: context.${k} is longer than ${MAX_CONTEXT_STRING} characters`);
        } else if (typeof v !== 'boolean') {
          throw invalid(`${where}: context.${k} must be a string, an integer or a boolean`);
        }
        context[k] = v;
      }
    }
    return { name: o.name, principal: o.principal, action: o.action, resource: o.resource, context, expect: o.expect };
  });
  return { entities, cases };
}

/**
 * Decides every case with `engine` (built with the file's entities) and compares.
 *
 * @example
 * const results = runCases(new PolicyEngine(compiled, cases.entities), cases);
 * const failed = results.filter((r) => !r.pass);
 */
export function runCases(engine: PolicyEngine, cases: PolicyCases): PolicyCaseResult[] {
  return cases.cases.map((c) => {
    const d = engine.decide({ principal: c.principal, action: c.action, resource: c.resource, context: c.context });
    const actual = d.allow ? 'allow' : 'deny';
    return { name: c.name, expected: c.expect, actual, pass: actual === c.expect, reasons: [...d.reasons], errors: [...d.errors] };
  });
}

function record(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw invalid(`${what} must be a mapping`);
  // toJS builds plain objects, but a `__proto__` key would set the prototype: refuse it.
  if (Object.getPrototypeOf(v) !== Object.prototype && Object.getPrototypeOf(v) !== null) throw invalid(`${what} must be a plain mapping`);
  return v as Record<string, unknown>;
}

function quote(s: string): string {
  return JSON.stringify(s.length > 64 ? `${s.slice(0, 64)}…` : s);
}
