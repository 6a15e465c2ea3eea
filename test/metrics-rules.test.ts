/**
 * The sample alert rules (deploy/prometheus/) are valid for Prometheus (`promtool check rules`) and
 * fire on the series they are for (`promtool test rules`), and every metric the four processes
 * register, and every metric the rules use, is documented in the README's "Metrics" section.
 */
import { spawnSync } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { AgentMetrics } from '../src/agent/metrics.js';
import type { Agent } from '../src/agent/agent.js';
import type { PolicyEnforcer } from '../src/agent/enforce/policy.js';
import { GatewayMetrics } from '../src/gateway/metrics.js';
import { KeyServerMetrics } from '../src/keyserver/metrics.js';
import { ControlPlaneMetrics } from '../src/server/metrics.js';

const root = (p: string): string => fileURLToPath(new URL(`../${p}`, import.meta.url));
const RULES = root('deploy/prometheus/tessera-alerts.yml');
const hasPromtool = spawnSync('promtool', ['--version']).status === 0;

function metricsSection(): string {
  const readme = readFileSync(root('README.md'), 'utf8');
  const from = readme.indexOf('### Metrics');
  return readme.slice(from, readme.indexOf('\n## ', from));
}

describe('alert rules and metric documentation', () => {
  it.skipIf(!hasPromtool)('promtool checks the rules and their unit tests', () => {
    const check = spawnSync('promtool', ['check', 'rules', RULES], { encoding: 'utf8' });
    expect(check.status, check.stdout + check.stderr).toBe(0);
    expect(check.stdout).toMatch(/SUCCESS: \d+ rules found/);
    const test = spawnSync('promtool', ['test', 'rules', root('deploy/prometheus/tessera-alerts.test.yml')], { encoding: 'utf8' });
    expect(test.status, test.stdout + test.stderr).toBe(0);
  });

  it('documents every metric registered and every metric the rules use', async () => {
    const docs = metricsSection();
    const cp = new ControlPlaneMetrics();
    cp.watch({ bundleVersion: () => 1, auditTreeHead: async () => ({ size: 1, rootHash: Buffer.alloc(32) }), latestCheckpoint: async () => undefined });
    const agentMetrics = new AgentMetrics();
    const fakeAgent = Object.assign(new EventEmitter(), { spiffeId: 'spiffe://td/a', current: () => undefined }) as unknown as Agent;
    agentMetrics.attachAgent(fakeAgent);
    const ks = new KeyServerMetrics();
    ks.attach(fakeAgent, { version: 1 } as PolicyEnforcer);
    const gw = new GatewayMetrics();
    gw.attach(fakeAgent, () => ({ version: 1 }));
    const names = new Set<string>();
    for (const r of [cp.registry, agentMetrics.registry, ks.registry, gw.registry]) {
      for (const m of await r.getMetricsAsJSON()) if (!/^tessera_(process|nodejs)_/.test(m.name)) names.add(m.name);
    }
    expect(names.size).toBeGreaterThan(20);
    const undocumented = [...names].filter((n) => !docs.includes(`\`${n}`));
    expect(undocumented).toEqual([]);
    const used = new Set(readFileSync(RULES, 'utf8').match(/tessera_[a-z_]+/g));
    expect(used.size).toBeGreaterThan(4);
    for (const n of used) expect(names.has(n) || names.has(n.replace(/_(count|sum|bucket)$/, '')), n).toBe(true);
  });
});
