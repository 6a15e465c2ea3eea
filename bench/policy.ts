/**
 * Policy decision cost: the engine's cached and uncached decisions next to the raw Cedar calls
 * they are made of, with 10 policies and 11 workload entities (the shop set), and the demo's
 * policy files (policies/*.cedar) with the demo's workloads.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/policy.js [--seconds S] [--json]
 *   node dist/bench/policy.js --differential N [--seed S] [--max-seconds T]
 *
 * `--differential N` runs N cases of differential random testing (src/core/policy/drt.ts): the
 * in-process evaluator against cedar-wasm on random entity stores and policy sets, each with 1 to
 * 4 random requests (every request decided both ways);
 * prints the disagreements (must be 0, each with its case), the coverage of constructs, and how
 * many policies were left to cedar-wasm. Stops early after --max-seconds (default: none) and
 * says how many cases ran. Replay with the printed --seed.
 *
 * Rows:
 * - raw isAuthorized: Cedar re-parses the 10 policies on every call (text in, all 11 entities,
 *   then only the 2 a request needs);
 * - raw statefulIsAuthorized: the policy set parsed once (`preparsePolicySet`), 2 and 11 entities,
 *   without and with Cedar's request validation against the schema;
 * - PolicyEngine.decide uncached (cache disabled), cedar-wasm (`inProcess: false`, the baseline):
 *   JS context check + statefulIsAuthorized with the 2 entities + building the Decision;
 * - PolicyEngine.decide uncached, in process: the same check, the compiled policies for the
 *   request's action evaluated in JS (evaluator.ts), the Decision built; and the same with the
 *   cache on and a unique path per request (`/orders/<n>`: every request a miss, as REST traffic
 *   with ids in its paths);
 * - PolicyEngine.decide cached: the same 8 requests over and over (the trie lookup), and the same
 *   with a new request object and a new path string per call, as an HTTP server produces them.
 * Single thread, after a warm-up; each row runs for --seconds (default 1) in 5 rounds and reports
 * the median round.
 */
import fc from 'fast-check';
import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import { PolicyEngine, type DecisionRequest } from '../src/core/policy/engine.js';
import { Coverage, caseArbitrary, runCase } from '../src/core/policy/drt.js';
import { DEMO_ENTITIES, DEMO_REQUESTS, IDS, SHOP_ENTITIES, SHOP_POLICIES, TD, baseContext, demoPolicies, httpContext } from '../src/core/policy/fixtures.js';
import { TESSERA_SCHEMA, WORKLOAD_TYPE } from '../src/core/policy/schema.js';
import type { PolicyEntity } from '../src/core/policy/types.js';
import { formatRateRows, measureRate, parseBenchArgs, type BenchArgs, type RateRow } from './args.js';

type Row = RateRow;

interface Args extends BenchArgs {
  differential: number | undefined;
  seed: number;
  maxSeconds: number | undefined;
}

function parseArgs(argv: string[]): Args {
  const usage = (msg: string): never => {
    process.stderr.write(`bench/policy: ${msg}\nusage: node dist/bench/policy.js [--seconds S] [--json] | --differential N [--seed S] [--max-seconds T]\n`);
    process.exit(2);
  };
  const rest: string[] = [];
  let differential: number | undefined;
  let seed = Date.now() % 2 ** 31;
  let maxSeconds: number | undefined;
  const int = (v: string | undefined, name: string, min: number): number => {
    const n = Number(v);
    return Number.isSafeInteger(n) && n >= min ? n : usage(`${name} must be an integer >= ${min}`);
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--differential') differential = int(argv[++i], '--differential', 1);
    else if (a === '--seed') seed = int(argv[++i], '--seed', 0);
    else if (a === '--max-seconds') maxSeconds = int(argv[++i], '--max-seconds', 1);
    else rest.push(a!);
  }
  return { ...parseBenchArgs(rest, 'policy', 1), differential, seed, maxSeconds };
}

/** Differential random testing: N cases, disagreements and coverage. Exit status 1 on any disagreement. */
function differential(n: number, seed: number, maxSeconds: number | undefined): void {
  process.stdout.write(`differential: ${n} cases, seed ${seed}${maxSeconds !== undefined ? `, at most ${maxSeconds} s` : ''}, Cedar ${cedar.getCedarVersion()}, Node ${process.version}\n`);
  const coverage = new Coverage();
  const failures: string[] = [];
  const started = Date.now();
  let next = started + 10_000;
  const details = fc.check(fc.property(caseArbitrary, (c) => {
    const r = runCase(c, true);
    coverage.add(r);
    if (r.disagreement !== undefined) {
      if (failures.length < 5) failures.push(`${r.disagreement}\n  case: ${JSON.stringify(c)}`);
      else failures.push('');
    }
    if (Date.now() > next) {
      next += 10_000;
      process.stderr.write(`  ${coverage.sets} cases (${coverage.cases.total} decisions), ${failures.length} disagreements, ${Math.round((Date.now() - started) / 1000)} s\n`);
    }
    return true;
  }), { numRuns: n, seed, ...(maxSeconds !== undefined ? { interruptAfterTimeLimit: maxSeconds * 1000, markInterruptAsFailure: false } : {}) });
  const seconds = (Date.now() - started) / 1000;
  process.stdout.write(`ran ${coverage.sets} of ${n} cases (${coverage.cases.total} decisions) in ${seconds.toFixed(0)} s (${(seconds * 1e6 / Math.max(1, coverage.cases.total)).toFixed(0)} µs per decision, both ways, generation included)${details.interrupted ? ', stopped by --max-seconds' : ''}\n`);
  process.stdout.write(`disagreements: ${failures.length}\n`);
  for (const f of failures.filter((x) => x !== '')) process.stdout.write(`  ${f}\n`);
  process.stdout.write(coverage.format());
  if (failures.length > 0) {
    process.stdout.write(`replay: node dist/bench/policy.js --differential ${n} --seed ${seed}\n`);
    process.exitCode = 1;
  }
}

/** 10 policies: the shop's 5 and 5 more of the kinds Tessera is meant for. */
const POLICIES: Record<string, string> = {
  ...SHOP_POLICIES,
  'ops.cedar': `
permit (principal, action == Tessera::Action::"http:request", resource)
when { principal has app && principal.app == "prometheus" && context.method == "GET" && context.path == "/metrics" };

permit (principal, action == Tessera::Action::"http:request", resource)
when { principal has env && resource has env && principal.env == "staging" && resource.env == "staging" };

forbid (principal, action == Tessera::Action::"tcp:connect", resource)
when { resource has app && resource.app == "orders-db" && (context.hour < 1 || context.hour > 23) };

permit (principal, action == Tessera::Action::"secret:unseal", resource)
when { principal == resource && principal has compliance && principal.compliance == "pci" && context.risk < 20 };

permit (principal, action == Tessera::Action::"credential:derive", resource)
when { principal == resource && principal has location && principal.location == "eu" };
`,
};

/** 11 entities: the shop's 6 and 5 more. */
const ENTITIES: PolicyEntity[] = [
  ...SHOP_ENTITIES,
  { id: `${TD}/ops/prometheus`, attrs: { app: 'prometheus', site: 'cloud-eu', env: 'prod', location: 'eu' } },
  { id: `${TD}/staging/shop/frontend`, attrs: { app: 'shop-frontend', site: 'cloud-eu', env: 'staging', location: 'eu' } },
  { id: `${TD}/staging/shop/orders`, attrs: { app: 'orders', site: 'cloud-eu', env: 'staging', location: 'eu' } },
  { id: `${TD}/edge-7/cache`, attrs: { app: 'cache', site: 'edge-7', env: 'prod', location: 'eu' } },
  { id: `${TD}/shop/search`, attrs: { app: 'search', site: 'cloud-eu', env: 'prod', location: 'us' } },
];

/** A mix of allows and denies, over all the actions' shapes. */
const REQUESTS: DecisionRequest[] = [
  { principal: IDS.frontendEu, action: 'http:request', resource: IDS.ordersEu, context: httpContext('GET', '/orders/42') },
  { principal: IDS.frontendEu, action: 'http:request', resource: IDS.ordersEu, context: httpContext('POST', '/orders/42') },
  { principal: IDS.frontendEdge, action: 'http:request', resource: IDS.ordersEu, context: httpContext('GET', '/orders/1') },
  { principal: IDS.ordersEu, action: 'http:request', resource: IDS.payments, context: httpContext('POST', '/charge') },
  { principal: IDS.ordersEdge, action: 'http:request', resource: IDS.payments, context: httpContext('POST', '/charge') },
  { principal: IDS.ordersEu, action: 'tcp:connect', resource: IDS.ordersDb, context: baseContext() },
  { principal: `${TD}/ops/prometheus`, action: 'http:request', resource: IDS.ordersEu, context: httpContext('GET', '/metrics') },
  { principal: IDS.stranger, action: 'tcp:connect', resource: IDS.ordersDb, context: baseContext() },
];

function measure(name: string, seconds: number, op: (i: number) => unknown): Row {
  return measureRate(name, seconds, op);
}

/** The same request with a fresh path string, as an HTTP server hands over each request. */
function freshCopy(r: DecisionRequest, i: number): DecisionRequest {
  const c = r.context;
  const path = `${String(c.path)}?${i & 1}`.slice(0, -2);
  return { principal: r.principal, action: r.action, resource: r.resource, context: { ...c, path } };
}

function main(): void {
  const { seconds, json, differential: cases, seed, maxSeconds } = parseArgs(process.argv.slice(2));
  if (cases !== undefined) {
    differential(cases, seed, maxSeconds);
    return;
  }
  const compiled = PolicyEngine.compile({ policies: POLICIES });
  const policyCount = Object.keys(compiled.policies).length;
  const uncachedEngine = new PolicyEngine(compiled, ENTITIES, { cacheSize: 0 });
  const wasmEngine = new PolicyEngine(compiled, ENTITIES, { cacheSize: 0, inProcess: false });
  const cachedEngine = new PolicyEngine(compiled, ENTITIES);

  // The raw Cedar calls, with the same requests and the same policy ids as the engine.
  const entityJson = new Map(ENTITIES.map((e) => [e.id, { uid: { type: WORKLOAD_TYPE, id: e.id }, attrs: { ...e.attrs }, parents: [] as cedar.EntityUidJson[] }]));
  const entityOf = (id: string): cedar.EntityJson => entityJson.get(id) ?? { uid: { type: WORKLOAD_TYPE, id }, attrs: {}, parents: [] };
  const all = [...entityJson.values()];
  const calls = REQUESTS.map((r) => ({
    principal: { type: WORKLOAD_TYPE, id: r.principal },
    action: { type: 'Tessera::Action', id: r.action },
    resource: { type: WORKLOAD_TYPE, id: r.resource },
    context: r.context,
    two: [entityOf(r.principal), entityOf(r.resource)],
  }));
  const staticPolicies = { ...compiled.policies };
  if (cedar.preparsePolicySet('bench-policies', { staticPolicies }).type !== 'success') throw new Error('preparsePolicySet failed');
  if (cedar.preparseSchema('bench-schema', TESSERA_SCHEMA as cedar.SchemaJson<string>).type !== 'success') throw new Error('preparseSchema failed');

  // Sanity: the engine and the raw call agree on every request.
  for (const [i, r] of REQUESTS.entries()) {
    const c = calls[i]!;
    const raw = cedar.statefulIsAuthorized({ principal: c.principal, action: c.action, resource: c.resource, context: c.context, preparsedPolicySetId: 'bench-policies', entities: c.two });
    if (raw.type !== 'success' || (raw.response.decision === 'allow') !== uncachedEngine.decide(r).allow) throw new Error(`engine and Cedar disagree on request ${i}`);
    if (JSON.stringify(wasmEngine.decide(r)) !== JSON.stringify(uncachedEngine.decide(r))) throw new Error(`in-process and cedar-wasm engines disagree on request ${i}`);
  }
  const allows = REQUESTS.filter((r) => uncachedEngine.decide(r).allow).length;

  const at = (i: number): (typeof calls)[number] => calls[i % calls.length]!;
  const rows: Row[] = [
    measure('raw isAuthorized (policies re-parsed), 11 entities', seconds, (i) => {
      const c = at(i);
      return cedar.isAuthorized({ principal: c.principal, action: c.action, resource: c.resource, context: c.context, policies: { staticPolicies }, entities: all });
    }),
    measure('raw isAuthorized (policies re-parsed), 2 entities', seconds, (i) => {
      const c = at(i);
      return cedar.isAuthorized({ principal: c.principal, action: c.action, resource: c.resource, context: c.context, policies: { staticPolicies }, entities: c.two });
    }),
    measure('raw statefulIsAuthorized, 11 entities', seconds, (i) => {
      const c = at(i);
      return cedar.statefulIsAuthorized({ principal: c.principal, action: c.action, resource: c.resource, context: c.context, preparsedPolicySetId: 'bench-policies', entities: all });
    }),
    measure('raw statefulIsAuthorized, 2 entities, + schema validation', seconds, (i) => {
      const c = at(i);
      return cedar.statefulIsAuthorized({ principal: c.principal, action: c.action, resource: c.resource, context: c.context, preparsedPolicySetId: 'bench-policies', preparsedSchemaName: 'bench-schema', validateRequest: true, entities: c.two });
    }),
    measure('raw statefulIsAuthorized, 2 entities', seconds, (i) => {
      const c = at(i);
      return cedar.statefulIsAuthorized({ principal: c.principal, action: c.action, resource: c.resource, context: c.context, preparsedPolicySetId: 'bench-policies', entities: c.two });
    }),
    measure('PolicyEngine.decide, uncached, cedar-wasm (baseline)', seconds, (i) => wasmEngine.decide(REQUESTS[i % REQUESTS.length]!)),
    measure('PolicyEngine.decide, uncached, in process', seconds, (i) => uncachedEngine.decide(REQUESTS[i % REQUESTS.length]!)),
    measure('PolicyEngine.decide, cached', seconds, (i) => cachedEngine.decide(REQUESTS[i % REQUESTS.length]!)),
    measure('PolicyEngine.decide, cached, request object built per call', seconds, (i) => cachedEngine.decide(freshCopy(REQUESTS[i % REQUESTS.length]!, i))),
  ];
  const demo = demoRows(seconds);

  const setup = { policies: policyCount, entities: ENTITIES.length, requests: REQUESTS.length, allows, seconds, node: process.version, cedar: cedar.getCedarVersion() };
  if (json) {
    process.stdout.write(`${JSON.stringify({ setup, rows, demo }, null, 2)}\n`);
    return;
  }
  process.stdout.write(`policy decisions: ${policyCount} policies, ${ENTITIES.length} entities, ${REQUESTS.length} requests in rotation (${allows} allow), Node ${process.version}, Cedar ${setup.cedar}\n\n`);
  process.stdout.write(formatRateRows(rows, 'call', 'µs/decision'));
  const cached = rows[rows.length - 2]!;
  const stateful = rows[4]!;
  const engine = rows[5]!;
  const inProcess = rows[6]!;
  process.stdout.write(`\nparsed once vs re-parsed (2 entities): ${(rows[1]!.usPerOp / stateful.usPerOp).toFixed(1)}× faster; `);
  process.stdout.write(`cedar-wasm engine overhead over the raw call: ${(engine.usPerOp - stateful.usPerOp).toFixed(1)} µs; `);
  process.stdout.write(`in process: ${(engine.usPerOp / inProcess.usPerOp).toFixed(0)}× faster than cedar-wasm uncached; `);
  process.stdout.write(`cached decision: ${cached.usPerOp < 2 ? 'under' : 'OVER'} the 2 µs aim (${(inProcess.usPerOp / cached.usPerOp).toFixed(1)}× cheaper than uncached in process)\n`);

  process.stdout.write(`\ndemo policy set: ${demo.setup.policies} policies (policies/*.cedar, ${demo.setup.fallback} left to cedar-wasm), ${demo.setup.entities} entities, ${demo.setup.requests} requests in rotation (${demo.setup.allows} allow)\n\n`);
  process.stdout.write(formatRateRows(demo.rows, 'call', 'µs/decision'));
  const [dWasm, dIn, dUniqueOff, dUnique, dCached] = demo.rows as [Row, Row, Row, Row, Row];
  process.stdout.write(`\nuncached in process: ${dIn.usPerOp.toFixed(2)} µs, ${dIn.usPerOp <= 5 ? 'within' : 'OVER'} the 5 µs aim, ${(dWasm.usPerOp / dIn.usPerOp).toFixed(0)}× faster than cedar-wasm; `);
  process.stdout.write(`unique paths: ${dUniqueOff.usPerOp.toFixed(2)} µs with the cache off, ${dUnique.usPerOp.toFixed(2)} µs with it on (every request a miss and an insertion); cached: ${dCached.usPerOp.toFixed(2)} µs\n`);
}

/** The demo's policy files and workloads: cedar-wasm vs in process, uncached, unique paths, cached. */
function demoRows(seconds: number): { setup: { policies: number; fallback: number; entities: number; requests: number; allows: number }; rows: Row[] } {
  const compiled = PolicyEngine.compile({ policies: demoPolicies() });
  const wasm = new PolicyEngine(compiled, DEMO_ENTITIES, { cacheSize: 0, inProcess: false });
  const uncached = new PolicyEngine(compiled, DEMO_ENTITIES, { cacheSize: 0 });
  const cachedEngine = new PolicyEngine(compiled, DEMO_ENTITIES);
  const reqs = DEMO_REQUESTS;
  for (const [i, r] of reqs.entries()) {
    if (JSON.stringify(wasm.decide(r)) !== JSON.stringify(uncached.decide(r))) throw new Error(`demo set: in-process and cedar-wasm engines disagree on request ${i}`);
  }
  /** The request with an id of its own in the path (or a new time for the actions without one): the cache cannot answer. */
  const unique = (r: DecisionRequest, i: number): DecisionRequest => {
    const c = r.context;
    const context = typeof c.path === 'string' ? { ...c, path: c.path.replace(/\/\d+$|\/?$/, `/${i}`) } : { ...c, time: (c.time as number) + i };
    return { principal: r.principal, action: r.action, resource: r.resource, context };
  };
  // Built before the clock starts (building one costs more than deciding it): 2^17 distinct requests,
  // over ten times the cache's 10,000 decisions, so a request comes round again only after the cache
  // has been cleared several times: every decision of the row is a miss and an insertion.
  const uniques = Array.from({ length: 1 << 17 }, (_, i) => unique(reqs[i % reqs.length]!, i));
  const rows = [
    measure('demo: PolicyEngine.decide, uncached, cedar-wasm (baseline)', seconds, (i) => wasm.decide(reqs[i % reqs.length]!)),
    measure('demo: PolicyEngine.decide, uncached, in process', seconds, (i) => uncached.decide(reqs[i % reqs.length]!)),
    measure('demo: PolicyEngine.decide, cache off, unique paths, in process', seconds, (i) => uncached.decide(uniques[i & (uniques.length - 1)]!)),
    measure('demo: PolicyEngine.decide, cache on, unique paths, in process', seconds, (i) => cachedEngine.decide(uniques[i & (uniques.length - 1)]!)),
    measure('demo: PolicyEngine.decide, cached', seconds, (i) => cachedEngine.decide(reqs[i % reqs.length]!)),
  ];
  cachedEngine.clearCache();
  const setup = { policies: Object.keys(compiled.policies).length, fallback: uncached.fallbackPolicyIds.length, entities: DEMO_ENTITIES.length, requests: reqs.length, allows: reqs.filter((r) => uncached.decide(r).allow).length };
  return { setup, rows };
}

main();
