/**
 * The risk engine inside the control plane: stored telemetry in, state changes applied through the
 * risk service (stored, audited, in the signed bundle); a person's release resets the engine's view
 * so the same old windows do not quarantine again. A real control plane and SQLite file; the link's
 * clock is the test's, so slots are judged without waiting for them.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../core/log.js';
import type { TelemetryWindow } from '../../core/risk/types.js';
import type { AuditListResponse } from '../../core/wire/control-plane.js';
import { startControlPlane, type TestControlPlane } from '../../../test/support/server.js';
import { RiskEngineLink } from './engine-link.js';

const TD = 'tessera.test';
const A = `spiffe://${TD}/shop/compromised`;
const B = `spiffe://${TD}/shop/orders`;
let t: TestControlPlane;
let clock: number;
let link: RiskEngineLink;

/** What orders' inbound saw from A in the window starting at `start`: a scan (denials, many paths). A's own sidecar reports nothing. */
function scanSeenByCallee(start: number): TelemetryWindow {
  return {
    ts: new Date(start).toISOString(), window_s: 5, caller: A, callee: B, caller_site: 'eu', callee_site: 'eu', reporter: 'callee', action: 'http',
    requests: 120, errors: 0, denials: 60, bytes_in: 40_000, bytes_out: 9_000, latency_p50_ms: 2, latency_p99_ms: 9, paths_distinct: 110,
  };
}

async function store(windows: TelemetryWindow[]): Promise<void> {
  await t.cp.store.insertTelemetry(windows.map((window) => ({ window, reportedBy: B, receivedAt: clock })), { maxRows: 200_000, maxAgeMs: 7 * 86_400_000, now: clock });
}

beforeAll(async () => {
  t = await startControlPlane({ trustDomain: TD });
  // The test drives its own link with its own clock; the control plane's own (wall-clock) link stands down.
  t.cp.ctx.riskEngine = undefined;
  clock = Math.ceil(Date.now() / 5000) * 5000;
  link = new RiskEngineLink({ store: t.cp.store, risk: t.cp.ctx.risk, log: createLogger({ write: () => {} }), now: () => clock });
  await link.init();
});
afterAll(async () => {
  await t?.close();
});

describe('RiskEngineLink', () => {
  it('quarantines a scanning identity from stored telemetry, audited and listed in the signed bundle', async () => {
    const base = clock + 5000;
    await store([0, 1, 2].map((k) => scanSeenByCallee(base + k * 5000)));
    clock = base + 7 * 5000;
    await link.step();
    const s = await t.cp.ctx.risk.standing(A);
    expect(s.state).toBe('quarantined');
    expect(link.applied).toBeGreaterThan(0);
    const { state } = await t.cp.ctx.risk.show(A);
    expect(state?.setBy).toBe('engine');
    expect((state?.reasons as { signal: string }[]).map((r) => r.signal)).toEqual(expect.arrayContaining(['paths', 'denials']));
    expect((await t.cp.ctx.risk.listed(Date.now())).map((r) => r.id)).toContain(A);
    const audit = await t.admin.call<AuditListResponse>('GET', '/v1/audit?action=risk.quarantine');
    expect(audit.records.some((r) => r.target === A && r.actor !== '')).toBe(true);
  });

  it('after a person releases it, the old windows do not quarantine it again; new evidence does', async () => {
    await t.cp.ctx.risk.apply({ identity: A, time: clock, score: 0, state: 'normal', previous: 'quarantined', reasons: [] }, { setBy: 'admin', actor: `spiffe://${TD}/tessera/admin`, reason: 'checked: a pen test' });
    clock += 5000;
    await link.step();
    clock += 5 * 5000;
    await link.step();
    expect((await t.cp.ctx.risk.standing(A)).state).toBe('normal');
    const base = clock + 5000;
    await store([0, 1, 2].map((k) => scanSeenByCallee(base + k * 5000)));
    clock = base + 7 * 5000;
    await link.step();
    expect((await t.cp.ctx.risk.standing(A)).state).toBe('quarantined');
  });

  it('refuses nothing fatal: a stored window of another length is counted and skipped', async () => {
    const before = link.refused;
    await store([{ ...scanSeenByCallee(clock + 5000), window_s: 10, caller: `spiffe://${TD}/shop/other` }]);
    clock += 5000;
    await link.step();
    expect(link.refused).toBe(before + 1);
  });
});
