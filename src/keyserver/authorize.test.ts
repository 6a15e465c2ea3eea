import { describe, expect, it } from 'vitest';
import { PolicyEngine } from '../core/policy/engine.js';
import { defaultUnsealContext, policyAuthorizer } from './authorize.js';

const TD = 'tessera.test';
const ORDERS = `spiffe://${TD}/shop/orders`;

describe('policyAuthorizer (Cedar, action secret:unseal)', () => {
  const compiled = PolicyEngine.compile({
    policies: {
      'secrets.cedar': `
@id("orders-unseal-db")
permit (
  principal == Tessera::Workload::"${ORDERS}",
  action == Tessera::Action::"secret:unseal",
  resource == Tessera::Workload::"spiffe://${TD}/tessera/secret/shop.db"
) when { context.risk < 50 };
`,
    },
  });
  const engine = new PolicyEngine(compiled, [{ id: ORDERS, attrs: { app: 'orders', site: 'cloud-eu' } }]);
  let risk = 0;
  const authorize = policyAuthorizer(() => engine, TD, defaultUnsealContext('cloud-eu', () => risk));

  it('allows exactly what the policy permits', () => {
    expect(authorize({ spiffeId: ORDERS }, 'shop.db')).toBe(true);
    expect(authorize({ spiffeId: ORDERS }, 'shop.payments')).toBe(false);
    expect(authorize({ spiffeId: `spiffe://${TD}/shop/frontend` }, 'shop.db')).toBe(false);
    risk = 80;
    engine.clearCache();
    expect(authorize({ spiffeId: ORDERS }, 'shop.db')).toBe(false);
  });
});
