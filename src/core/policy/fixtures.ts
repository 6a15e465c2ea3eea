/**
 * A realistic policy set and workloads, shared by the policy tests and `bench/policy.ts`.
 * (Test support: not part of the public API.)
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readPolicyDir } from '../../admin/policy-dir.js';
import type { PolicyAction, PolicyContext, PolicyEntity } from './types.js';

export const TD = 'spiffe://example.org';

export const IDS = {
  frontendEu: `${TD}/shop/frontend`,
  frontendEdge: `${TD}/edge-7/shop/frontend`,
  ordersEu: `${TD}/shop/orders`,
  ordersEdge: `${TD}/edge-7/shop/orders`,
  payments: `${TD}/shop/payments`,
  ordersDb: `${TD}/shop/orders-db`,
  stranger: `${TD}/unknown/thing`,
} as const;

export const SHOP_ENTITIES: PolicyEntity[] = [
  { id: IDS.frontendEu, attrs: { app: 'shop-frontend', site: 'cloud-eu', env: 'prod', location: 'eu' } },
  { id: IDS.frontendEdge, attrs: { app: 'shop-frontend', site: 'edge-7', env: 'prod', location: 'eu' } },
  { id: IDS.ordersEu, attrs: { app: 'orders', site: 'cloud-eu', env: 'prod', location: 'eu' } },
  { id: IDS.ordersEdge, attrs: { app: 'orders', site: 'edge-7', env: 'prod', location: 'eu' } },
  { id: IDS.payments, attrs: { app: 'payments', site: 'cloud-eu', compliance: 'pci', env: 'prod', location: 'eu' } },
  { id: IDS.ordersDb, attrs: { app: 'orders-db', site: 'cloud-eu', env: 'prod', location: 'eu' } },
];

export const SHOP_POLICIES: Record<string, string> = {
  'shop/orders.cedar': `
// The shop frontend may read orders (GET /orders/*) from an orders service in its own site.
@id("frontend-reads-orders")
permit (
  principal,
  action == Tessera::Action::"http:request",
  resource
) when {
  principal has app && principal.app == "shop-frontend" &&
  resource has app && resource.app == "orders" &&
  principal has site && resource has site && principal.site == resource.site &&
  context.method == "GET" && context.path like "/orders/*"
};

// Orders calls payments, any method and path.
permit (
  principal,
  action == Tessera::Action::"http:request",
  resource == Tessera::Workload::"spiffe://example.org/shop/payments"
) when { principal has app && principal.app == "orders" };

// Only orders may open TCP connections to the orders database.
permit (
  principal,
  action == Tessera::Action::"tcp:connect",
  resource
) when {
  principal has app && principal.app == "orders" &&
  resource has app && resource.app == "orders-db"
};
`,
  'residency.cedar': `
// Data residency: PCI services are only reachable from their own site.
forbid (principal, action, resource)
when { resource has compliance && resource.compliance == "pci" }
unless { principal has site && resource has site && principal.site == resource.site };

// Risky callers get nothing.
forbid (principal, action, resource) when { context.risk >= 80 };
`,
};

/** A context for `http:request` with defaults (site cloud-eu, 2026-01-01 09:00 UTC, risk 5). */
export function httpContext(method: string, path: string, over: Partial<Record<'site' | 'time' | 'hour' | 'risk', string | number>> = {}): PolicyContext {
  return { method, path, site: 'cloud-eu', time: 1767258000, hour: 9, risk: 5, ...over };
}

/** A context for `credential:derive` (an API key scope, or a JWT audience), with {@link baseContext}'s defaults. */
export function deriveContext(kind: 'apikey' | 'jwt', value: string, ttlSeconds = 3600, over: Partial<Record<'site' | 'time' | 'hour' | 'risk', string | number>> = {}): PolicyContext {
  return { kind, scope: kind === 'apikey' ? value : '', audience: kind === 'jwt' ? value : '', ttl_seconds: ttlSeconds, ...baseContext(over) };
}

/** A context for `tcp:connect`, `secret:unseal`. */
export function baseContext(over: Partial<Record<'site' | 'time' | 'hour' | 'risk', string | number>> = {}): PolicyContext {
  return { site: 'cloud-eu', time: 1767258000, hour: 9, risk: 5, ...over };
}

/** The demo's workloads (demo/main.ts registers them with these attributes), for `policies/*.cedar`. */
export const DEMO_TD = 'spiffe://tessera.test';
export const DEMO_ENTITIES: PolicyEntity[] = [
  { id: `${DEMO_TD}/shop/frontend`, attrs: { app: 'shop', site: 'cloud-eu', compliance: 'standard', location: 'eu', env: 'demo' } },
  { id: `${DEMO_TD}/shop/orders`, attrs: { app: 'shop', site: 'cloud-eu', compliance: 'pci', location: 'eu', env: 'demo' } },
  { id: `${DEMO_TD}/shop/inventory`, attrs: { app: 'shop', site: 'edge-7', compliance: 'standard', location: 'eu', env: 'demo' } },
  { id: `${DEMO_TD}/keyserver/1`, attrs: { site: 'cloud-eu', location: 'eu' } },
];

/** Requests over the demo's policies, as its sidecars, key servers and control plane make them (allows and denies). */
export const DEMO_REQUESTS: { principal: string; action: PolicyAction; resource: string; context: PolicyContext }[] = [
  { principal: `${DEMO_TD}/shop/frontend`, action: 'http:request', resource: `${DEMO_TD}/shop/orders`, context: httpContext('GET', '/orders/81723') },
  { principal: `${DEMO_TD}/shop/frontend`, action: 'http:request', resource: `${DEMO_TD}/shop/orders`, context: httpContext('POST', '/orders') },
  { principal: `${DEMO_TD}/shop/inventory`, action: 'http:request', resource: `${DEMO_TD}/shop/orders`, context: httpContext('GET', '/orders/42') },
  { principal: `${DEMO_TD}/shop/frontend`, action: 'http:request', resource: `${DEMO_TD}/shop/inventory`, context: httpContext('GET', '/items/7') },
  { principal: `${DEMO_TD}/shop/orders`, action: 'http:request', resource: `${DEMO_TD}/shop/inventory`, context: httpContext('POST', '/stock/7') },
  { principal: `${DEMO_TD}/shop/orders`, action: 'secret:unseal', resource: `${DEMO_TD}/tessera/secret/db`, context: baseContext() },
  { principal: `${DEMO_TD}/shop/inventory`, action: 'secret:unseal', resource: `${DEMO_TD}/tessera/secret/db`, context: baseContext({ site: 'edge-7' }) },
  { principal: `${DEMO_TD}/shop/frontend`, action: 'credential:derive', resource: `${DEMO_TD}/tessera/credential/jwt`, context: deriveContext('jwt', 'orders-api') },
];

/** The demo's policy files (the repository's `policies/` directory, found from here or from dist/), named `demo/<file>`. */
export function demoPolicies(): Record<string, string> {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'policies', 'shop.cedar'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('policies/ not found');
    dir = up;
  }
  const { policies } = readPolicyDir(join(dir, 'policies'));
  return Object.fromEntries(Object.entries(policies).map(([k, v]) => [`demo/${k}`, v]));
}
