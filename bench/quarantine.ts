/**
 * Quarantine propagation (issue 11): how long from the decision until every agent enforces it.
 * A control plane and N agents (each joined with its own entry, running its policy enforcer) in
 * this process, real HTTPS long polls on 127.0.0.1. Each run quarantines one identity through the
 * admin API and records, per agent, the time from the call until the agent's enforcer refuses the
 * identity (its bundle installed); then releases it and waits until every agent lets it through.
 * Prints p50/p99/max over every (run, agent) and the per-run "every agent" time, beside the limit
 * measured in the same runs: a bare long-poll client (bench/quarantine-fleet.ts BundleWatcher) that
 * only receives the new bundle, and the round trip of GET /healthz on an already open connection.
 * `npm run bench:quarantine-e2e` measures the same with agent processes and the risk engine deciding.
 *
 *   node dist/bench/quarantine.js [--agents N] [--runs R] [--json]
 *
 * In-process agents share one event loop with the control plane: on a small machine this measures
 * an upper bound of what separate processes see.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Agent } from '../src/agent/agent.js';
import { startSidecar, type Sidecar } from '../src/agent/sidecar.js';
import { ApiClient } from '../src/common/api-client.js';
import { silentLogger } from '../src/core/log.js';
import { ControlPlane } from '../src/server/server.js';
import { BundleWatcher, openConnectionRtts, spread } from './quarantine-fleet.js';

const TD = 'bench.test';

function usage(msg: string): never {
  process.stderr.write(`bench/quarantine: ${msg}\nusage: node dist/bench/quarantine.js [--agents N (1-200, default 20)] [--runs R (1-100, default 10)] [--json]\n`);
  process.exit(2);
}

function parseArgs(argv: string[]): { agents: number; runs: number; json: boolean } {
  const o = { agents: 20, runs: 10, json: false };
  const int = (v: string | undefined, max: number, name: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1 || n > max) usage(`${name} must be a whole number from 1 to ${max}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--json') o.json = true;
    else if (a === '--agents') o.agents = int(argv[++i], 200, '--agents');
    else if (a === '--runs') o.runs = int(argv[++i], 100, '--runs');
    else usage(`unknown argument ${a}`);
  }
  return o;
}

/** Resolves with the ms from `t0` at which `done()` first holds, checked at each 'policy' event. */
function whenEnforced(sidecar: Sidecar, done: () => boolean, t0: number, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const check = (): void => {
      if (!done()) return;
      clearTimeout(timer);
      sidecar.enforcer.off('policy', check);
      resolve(performance.now() - t0);
    };
    const timer = setTimeout(() => {
      sidecar.enforcer.off('policy', check);
      reject(new Error(`an agent did not enforce within ${timeoutMs} ms`));
    }, timeoutMs);
    sidecar.enforcer.on('policy', check);
    check();
  });
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const dir = mkdtempSync(join(tmpdir(), 'tessera-bench-quarantine-'));
  const agents: Agent[] = [];
  const sidecars: Sidecar[] = [];
  let cp: ControlPlane | undefined;
  let admin: ApiClient | undefined;
  let watcher: BundleWatcher | undefined;
  try {
    cp = await ControlPlane.start({ dataDir: join(dir, 'server'), port: 0, trustDomain: TD, log: silentLogger });
    const f = (n: string): string => readFileSync(join(cp!.adminDir, n), 'utf8');
    const adminTls = { ca: f('bundle.pem'), cert: f('admin.pem'), key: f('admin.key') };
    admin = new ApiClient(cp.url, adminTls);
    for (let i = 0; i < o.agents; i++) {
      const id = `spiffe://${TD}/fleet/w${i}`;
      await admin.call('POST', '/v1/entries', { spiffe_id: id });
      const { token } = await admin.call<{ token: string }>('POST', '/v1/tokens', { entry_id: id });
      const agent = new Agent({ serverUrl: cp.url, dataDir: join(dir, `a${i}`), joinToken: token, trustBundleFile: join(cp.dataDir, 'bundle.pem'), log: silentLogger, watchSeconds: 25 });
      agents.push(agent);
      await agent.start();
      sidecars.push(await startSidecar(agent, { dataDir: join(dir, `a${i}`), log: silentLogger, policyWatchSeconds: 25 }));
    }
    const target = `spiffe://${TD}/fleet/w0`;
    const path = (verb: string): string => `/v1/risk/${encodeURIComponent(target)}/${verb}`;
    // Every agent holds the current bundle and is long-polling before the first run.
    const current = (): number => cp!.ctx.policy.current().version;
    await Promise.all(sidecars.map((s) => whenEnforced(s, () => s.enforcer.version === current(), performance.now(), 10_000)));
    watcher = new BundleWatcher(cp.url, adminTls);
    watcher.start(current());
    await new Promise((r) => setTimeout(r, 200));

    const all: number[] = [];
    const everyAgent: number[] = [];
    const answers: number[] = [];
    const wakes: number[] = [];
    const rtts: number[] = [];
    for (let run = 0; run < o.runs; run++) {
      rtts.push(...await openConnectionRtts(admin, 10));
      const wall = Date.now();
      const t0 = performance.now();
      const enforced = Promise.all(sidecars.map((s) => whenEnforced(s, () => s.enforcer.isQuarantined(target), t0, 5_000)));
      const res = await admin.call<{ bundle_version?: number }>('POST', path('quarantine'), { ttl_seconds: 600, reason: `bench run ${run}` });
      answers.push(performance.now() - t0);
      const times = await enforced;
      all.push(...times);
      everyAgent.push(Math.max(...times));
      const seen = watcher.firstAt(res.bundle_version ?? Infinity);
      if (seen !== undefined) wakes.push(seen - wall);
      const t1 = performance.now();
      const released = Promise.all(sidecars.map((s) => whenEnforced(s, () => !s.enforcer.isQuarantined(target), t1, 5_000)));
      await admin.call('POST', path('release'), { reason: `bench run ${run}` });
      await released;
      await new Promise((r) => setTimeout(r, 100));
    }
    const result = {
      agents: o.agents, runs: o.runs,
      api_answer_ms: spread(answers),
      per_agent_ms: spread(all),
      every_agent_ms: spread(everyAgent),
      limit_long_poll_wake_ms: spread(wakes),
      limit_open_https_rtt_ms: spread(rtts),
    };
    const line = (name: string, s: ReturnType<typeof spread>): string => `  ${name.padEnd(54)} ${s ? `p50 ${s.p50} ms, p99 ${s.p99} ms, max ${s.max} ms` : '-'}\n`;
    if (o.json) process.stdout.write(`${JSON.stringify(result)}\n`);
    else {
      process.stdout.write(`quarantine → enforced, ${o.agents} in-process agents, ${o.runs} runs (from the admin API call)\n`);
      process.stdout.write(line('API answered', result.api_answer_ms) + line('per agent', result.per_agent_ms) + line('every agent (a run)', result.every_agent_ms)
        + line('limit: a bare long-poll client has the bundle', result.limit_long_poll_wake_ms) + line('limit: HTTPS round trip on an open connection (/healthz)', result.limit_open_https_rtt_ms));
    }
  } finally {
    await watcher?.stop();
    for (const s of sidecars) await s.close().catch(() => {});
    for (const a of agents) await a.stop().catch(() => {});
    admin?.close();
    await cp?.stop().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench/quarantine: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
