/**
 * The risk engine's quarantine over real sidecars (issue 11, items 4 and 6): a control plane process
 * and four `tessera agent` processes (bench/quarantine-fleet.ts, the fleet `npm run
 * bench:quarantine-e2e` measures with twenty). The exfiltrator calls its callee through its own
 * outbound and the callee's inbound, calmly, then sends large bodies: both sidecars' telemetry reaches
 * the engine, which quarantines it; every agent then refuses it (its own outbound carries nothing,
 * every inbound answers 403 TESSERA_IDENTITY_QUARANTINED to its SVID); `tessera risk release` lets it
 * through everywhere again.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditListResponse } from '../src/core/wire/control-plane.js';
import { Children } from '../bench/procs.js';
import { EXFIL, calmThenExfiltrate, everyAgentAllows, everyAgentRefuses, installedAt, quarantinedState, riskOf, startFleet, type Fleet } from '../bench/quarantine-fleet.js';
import { CLI, runTessera, waitFor } from './support/process.js';

describe('quarantine by the risk engine, enforced by every agent process', () => {
  let dir: string;
  let children: Children;
  let fleet: Fleet | undefined;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-quarantine-sidecars-'));
    children = new Children(6);
    fleet = await startFleet({ agents: 4, dir, children, cli: CLI });
  }, 90_000);

  afterAll(async () => {
    await fleet?.close();
    await children?.stopAll(3000);
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, 30_000);

  it('exfiltration through a sidecar pair is quarantined, refused by every agent, and released by `tessera risk release`', async () => {
    const f = fleet!;
    expect(await everyAgentAllows(f)).toBe(true);
    const { first, sent, status } = await calmThenExfiltrate(f, 5, 30_000);
    // Refused by a sidecar, after more than the cold-start threshold went through (no earlier refusal).
    expect([0, 403]).toContain(status);
    expect(sent).toBeGreaterThan(524_288);

    const state = await quarantinedState(f, 10_000);
    expect(state).toMatchObject({ state: 'quarantined', set_by: 'engine' });
    expect(state.reasons.map((r) => r.signal)).toContain('bytes_out');
    const audit = (await f.admin.call<AuditListResponse>('GET', '/v1/audit?action=risk.quarantine&limit=100')).records.filter((r) => r.target === EXFIL);
    expect(audit).toHaveLength(1);
    const version = Number(audit[0]!.detail.bundle_version);
    expect(version).toBeGreaterThan(0);

    const decision = Date.parse(state.since);
    const at = await Promise.all(f.agents.map((a) => installedAt(a, version, 15_000)));
    const every = Math.max(...at) - decision;
    console.log(`first exfil request → decision ${decision - first} ms; decision → every agent enforces ${every} ms (${at.map((t) => t - decision).join(', ')})`);
    // Generous: the aim is a second on an idle machine; CI shares its cores.
    expect(every).toBeLessThan(5_000);

    // Real refusals through every sidecar.
    expect(await everyAgentRefuses(f)).toEqual({ refused: 4, of: 4, failures: [] });

    const r = await runTessera(['risk', 'release', EXFIL, '--reason', 'checked: a test'], { env: { TESSERA_ADMIN_DIR: join(dir, 'cp', 'admin') } });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('quarantined -> normal');
    await waitFor('every agent to let the exfiltrator through again', () => everyAgentAllows(f), 15_000, 100);
    expect((await riskOf(f)).state).toBe('normal');
  }, 90_000);

  it('bench:quarantine-e2e refuses bad arguments with exit 2 and its usage, before starting anything', () => {
    const bench = fileURLToPath(new URL('../dist/bench/quarantine-e2e.js', import.meta.url));
    for (const args of [['--agents', '2'], ['--agents', '61'], ['--runs', '0'], ['--runs', '1.5'], ['--agents'], ['--runs', 'x'], ['--seconds', '3']]) {
      const r = spawnSync(process.execPath, [bench, ...args], { encoding: 'utf8', timeout: 20_000 });
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr).toContain('usage: node dist/bench/quarantine-e2e.js');
    }
  });
});
