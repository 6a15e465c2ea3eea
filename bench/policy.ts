/**
 * Policy decision cost: the engine's cached and uncached decisions next to the raw Cedar calls
 * they are made of, with 10 policies and 11 workload entities.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/policy.js [--seconds S] [--json]
 *
 * Rows:
 * - raw isAuthorized: Cedar re-parses the 10 policies on every call (text in, all 11 entities,
 *   then only the 2 a request needs);
 * - raw statefulIsAuthorized: the policy set parsed once (`preparsePolicySet`), 2 and 11 entities,
 *   without and with Cedar's request validation against the schema;
 * - PolicyEngine.decide uncached (cache disabled): JS context check + statefulIsAuthorized with
 *   the 2 entities + building the Decision;
 * - PolicyEngine.decide cached: the same 8 requests over and over (the trie lookup), and the same
 *   with a new request object and a new path string per call, as an HTTP server produces them.
 * Single thread, after a warm-up; each row runs for --seconds (default 1) in 5 rounds and reports
 * the median round.
 */
import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import { PolicyEngine, type DecisionRequest } from '../src/core/policy/engine.js';
import { IDS, SHOP_ENTITIES, SHOP_POLICIES, TD, baseContext, httpContext } from '../src/core/policy/fixtures.js';
import { TESSERA_SCHEMA, WORKLOAD_TYPE } from '../src/core/policy/schema.js';
import type { PolicyEntity } from '../src/core/policy/types.js';
import { formatRateRows, measureRate, parseBenchArgs, type BenchArgs, type RateRow } from './args.js';

type Row = RateRow;

function parseArgs(argv: string[]): BenchArgs {
  return parseBenchArgs(argv, 'policy', 1);
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
  const { seconds, json } = parseArgs(process.argv.slice(2));
  const compiled = PolicyEngine.compile({ policies: POLICIES });
  const policyCount = Object.keys(compiled.policies).length;
  const uncachedEngine = new PolicyEngine(compiled, ENTITIES, { cacheSize: 0 });
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
    measure('PolicyEngine.decide, uncached', seconds, (i) => uncachedEngine.decide(REQUESTS[i % REQUESTS.length]!)),
    measure('PolicyEngine.decide, cached', seconds, (i) => cachedEngine.decide(REQUESTS[i % REQUESTS.length]!)),
    measure('PolicyEngine.decide, cached, request object built per call', seconds, (i) => cachedEngine.decide(freshCopy(REQUESTS[i % REQUESTS.length]!, i))),
  ];

  const setup = { policies: policyCount, entities: ENTITIES.length, requests: REQUESTS.length, allows, seconds, node: process.version, cedar: cedar.getCedarVersion() };
  if (json) {
    process.stdout.write(`${JSON.stringify({ setup, rows }, null, 2)}\n`);
    return;
  }
  process.stdout.write(`policy decisions: ${policyCount} policies, ${ENTITIES.length} entities, ${REQUESTS.length} requests in rotation (${allows} allow), Node ${process.version}, Cedar ${setup.cedar}\n\n`);
  process.stdout.write(formatRateRows(rows, 'call', 'µs/decision'));
  const cached = rows[rows.length - 2]!;
  const stateful = rows[4]!;
  const engine = rows[5]!;
  process.stdout.write(`\nparsed once vs re-parsed (2 entities): ${(rows[1]!.usPerOp / stateful.usPerOp).toFixed(1)}× faster; `);
  process.stdout.write(`engine overhead over the raw call: ${(engine.usPerOp - stateful.usPerOp).toFixed(1)} µs; `);
  process.stdout.write(`cached decision: ${cached.usPerOp < 2 ? 'under' : 'OVER'} the 2 µs aim (${(engine.usPerOp / cached.usPerOp).toFixed(0)}× cheaper than uncached)\n`);
}

main();
