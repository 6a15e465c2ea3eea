/**
 * The soak's short version (issue 14 part 4): `node dist/bench/soak.js --short --json` as a child
 * process (the same code as `npm run soak`, built by `npm test`'s tsc): a real PostgreSQL, two
 * `tessera server --store` replicas, 20 real agents in two worker processes (2 of them in a network
 * namespace of their own, the site), a change every 3 s (policy published, entry revoked or
 * deleted, identity quarantined) through the replicas in turn, for 60 s, with one replica SIGKILLed
 * and restarted, PostgreSQL restarted and the site's link cut for 9 s. About 80 s on 2 cores.
 *
 * Failed requests are expected, and only inside the fault windows (until 5 s after each fault ends):
 * - a replica SIGKILLed: requests in flight on its connections are cut (a POST that may have run is
 *   not resent: a decision batch goes to the agent's spill file and is shipped again later, a renewal
 *   is retried with backoff; a GET moves to the other replica at once);
 * - PostgreSQL restarted: requests that reach the database while it is down fail (the store's pool
 *   reconnects);
 * - the site cut off: its agents' renewals, decision shipping and long polls time out until the link
 *   is back.
 * None may fail outside those windows, none may lose a record.
 *
 * Needs root (network namespaces): skipped otherwise.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import type { SoakResult } from '../bench/soak.js';

const SOAK = fileURLToPath(new URL('../dist/bench/soak.js', import.meta.url));
const isRoot = process.getuid?.() === 0;

describe.skipIf(!isRoot)('soak, short: faults under load lose no record', () => {
  let child: ChildProcess | undefined;

  afterAll(async () => {
    // The soak cleans up after itself on SIGINT (processes, namespace, PostgreSQL, temp dirs).
    if (child && child.exitCode === null && child.signalCode === null) {
      const gone = new Promise((r) => child!.once('exit', r));
      child.kill('SIGINT');
      const t = setTimeout(() => child!.kill('SIGKILL'), 20_000);
      await gone;
      clearTimeout(t);
    }
  }, 30_000);

  it('keeps every agent deciding, accounts for every record and brings every agent to the newest bundle', async () => {
    const run = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
      const c = spawn(process.execPath, [SOAK, '--short', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
      child = c;
      let stdout = '';
      let stderr = '';
      c.stdout!.on('data', (d: Buffer) => { stdout += d.toString(); });
      c.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
      c.on('error', reject);
      c.on('close', (code) => resolve({ code, stdout, stderr }));
    });
    expect(run.stdout, run.stderr.slice(-4000)).not.toBe('');
    const r = JSON.parse(run.stdout) as SoakResult;
    expect(r.problems, run.stderr.slice(-4000)).toEqual([]);
    expect(run.code).toBe(0);
    expect(r.ok).toBe(true);

    // The faults ran: one replica kill, one PostgreSQL restart, one site cut.
    expect(r.faults.map((f) => f.name.split(' ')[0])).toEqual(['replica', 'PostgreSQL', 'site']);

    // Records lost: 0, and each kind was really exercised.
    expect(r.records.lost).toBe(0);
    expect(r.records.issuances.seen).toBeGreaterThanOrEqual(3 * r.setup.agents); // the join and at least two rotations each
    expect(r.records.issuances.missing).toBe(0);
    expect(r.records.decisions.made).toBeGreaterThan(20 * r.setup.agents);
    expect(r.records.decisions.stored).toBe(r.records.decisions.made);
    expect(r.records.decisions.dropped_at_agents).toBe(0);
    expect(r.records.admin_changes.answered).toBeGreaterThanOrEqual(15);
    expect(r.records.admin_changes.missing).toBe(0);
    expect(r.records.audit_verify.ok).toBe(true);
    expect(r.records.audit_verify.problems).toBe(0);
    expect(r.records.checkpoint_polls).toBeGreaterThan(10);
    expect(r.records.checkpoint_regressions).toBe(0);

    // Every agent rejoined and holds the last bundle version.
    expect(r.convergence.agents_at_last_version).toBe(r.setup.agents);

    // The site kept serving from its caches while cut off: every site agent decided (allowed, with a
    // valid SVID in hand), then got the newest bundle once the link was back.
    expect(r.site_cut.cut_s).toBeGreaterThanOrEqual(5);
    expect(r.site_cut.agents_deciding).toBe(r.site_cut.agents);
    // One a second each (--short); at least half of them counted (reports wholly inside the cut only).
    expect(r.site_cut.decisions_during_cut).toBeGreaterThanOrEqual(r.site_cut.agents * Math.floor(r.site_cut.cut_s / 2));
    expect(r.site_cut.allowed_during_cut).toBe(r.site_cut.decisions_during_cut);
    expect(r.site_cut.with_valid_svid).toBe(r.site_cut.decisions_during_cut);
    expect(r.site_cut.rejoined).toBe(r.site_cut.agents);

    // Fan-out measured for every change answered, reaching every agent (the site's held back by the cut aside).
    expect(r.fan_out.changes_measured).toBe(r.records.admin_changes.answered);
    expect(r.fan_out.missed).toBe(0);
    expect(r.fan_out.all!.n + r.fan_out.held_by_cut).toBe(r.fan_out.changes_measured * r.setup.agents);

    // Failed requests: none outside the fault windows, a bounded number inside them.
    expect(r.failed_requests.by_window['no fault']).toBeUndefined();
    expect(r.failed_requests.by_window.setup).toBeUndefined();
    expect(r.failed_requests.total).toBeLessThanOrEqual(5 * r.setup.agents);
  }, 170_000);
});
