/**
 * Quarantine propagation (issue 11): how long from the decision until every agent enforces it.
 * A control plane and N agents (each joined with its own entry, running its policy enforcer) in
 * this process, real HTTPS long polls on 127.0.0.1. Each run quarantines one identity through the
 * admin API and records, per agent, the time from the call until the agent's enforcer refuses the
 * identity (its bundle installed); then releases it and waits until every agent lets it through.
 * Prints p50/p99/max over every (run, agent) and the per-run "every agent" time.
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

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
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
  try {
    cp = await ControlPlane.start({ dataDir: join(dir, 'server'), port: 0, trustDomain: TD, log: silentLogger });
    const f = (n: string): string => readFileSync(join(cp!.adminDir, n), 'utf8');
    admin = new ApiClient(cp.url, { ca: f('bundle.pem'), cert: f('admin.pem'), key: f('admin.key') });
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
    await new Promise((r) => setTimeout(r, 200));

    const all: number[] = [];
    const everyAgent: number[] = [];
    const answers: number[] = [];
    for (let run = 0; run < o.runs; run++) {
      const t0 = performance.now();
      const enforced = Promise.all(sidecars.map((s) => whenEnforced(s, () => s.enforcer.isQuarantined(target), t0, 5_000)));
      await admin.call('POST', path('quarantine'), { ttl_seconds: 600, reason: `bench run ${run}` });
      answers.push(performance.now() - t0);
      const times = await enforced;
      all.push(...times);
      everyAgent.push(Math.max(...times));
      const t1 = performance.now();
      const released = Promise.all(sidecars.map((s) => whenEnforced(s, () => !s.enforcer.isQuarantined(target), t1, 5_000)));
      await admin.call('POST', path('release'), { reason: `bench run ${run}` });
      await released;
      await new Promise((r) => setTimeout(r, 100));
    }
    all.sort((a, b) => a - b);
    everyAgent.sort((a, b) => a - b);
    answers.sort((a, b) => a - b);
    const r = (v: number): number => Math.round(v * 10) / 10;
    const result = {
      agents: o.agents, runs: o.runs,
      api_answer_ms: { p50: r(percentile(answers, 50)), max: r(answers[answers.length - 1]!) },
      per_agent_ms: { p50: r(percentile(all, 50)), p99: r(percentile(all, 99)), max: r(all[all.length - 1]!) },
      every_agent_ms: { p50: r(percentile(everyAgent, 50)), p99: r(percentile(everyAgent, 99)), max: r(everyAgent[everyAgent.length - 1]!) },
    };
    if (o.json) process.stdout.write(`${JSON.stringify(result)}\n`);
    else {
      process.stdout.write(`quarantine → enforced, ${o.agents} in-process agents, ${o.runs} runs (from the admin API call)\n`);
      process.stdout.write(`  API answered:        p50 ${result.api_answer_ms.p50} ms, max ${result.api_answer_ms.max} ms\n`);
      process.stdout.write(`  per agent:           p50 ${result.per_agent_ms.p50} ms, p99 ${result.per_agent_ms.p99} ms, max ${result.per_agent_ms.max} ms\n`);
      process.stdout.write(`  every agent (a run): p50 ${result.every_agent_ms.p50} ms, p99 ${result.every_agent_ms.p99} ms, max ${result.every_agent_ms.max} ms\n`);
    }
  } finally {
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
