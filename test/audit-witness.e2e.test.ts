/**
 * The fork test (issue 10): two control planes (real `tessera server` processes) that share a history
 * and then diverge — CP1 is stopped, its data directory (SQLite file and KEK, so the same log key and
 * CA) copied to CP2's, both started, and each given different records. An agent joined to CP1 witnesses
 * CP1's checkpoints on its policy stream; restarted against CP2 with the same data directory it is
 * shown CP2's checkpoint, raises the alarm (stable code in its log, the counter, an `audit.witness_alarm`
 * record at CP2, the control plane it reached) and keeps its state file unchanged. `tessera audit
 * witness --state` does the same from the admin's side, and cosigns what it verified.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgentNode, type AgentNode } from '../src/agent/node.js';
import { AgentMetrics } from '../src/agent/metrics.js';
import { WITNESS_STATE_FILE } from '../src/agent/witness.js';
import type { ApiClient } from '../src/common/api-client.js';
import { createLogger } from '../src/core/log.js';
import type { AuditCheckpointResponse, AuditListResponse } from '../src/core/wire/control-plane.js';
import { CLI, freePort, ServerProcess, waitFor } from './support/process.js';

const TD = 'example.org';
const ID = `spiffe://${TD}/shop/witness`;

interface Run { status: number | null; stdout: string; stderr: string; json: Record<string, any> }

let dir: string;
let cp1: ServerProcess;
let cp2: ServerProcess;
const clients: ApiClient[] = [];
let node: AgentNode | undefined;
let lines: string[] = [];

function tessera(server: ServerProcess, args: string[]): Run {
  const r = spawnSync(process.execPath, [CLI, '--server', server.url, ...args], {
    env: { ...process.env, TESSERA_ADMIN_DIR: server.adminDir }, encoding: 'utf8', timeout: 30_000,
  });
  let json: Record<string, unknown> = {};
  try { json = JSON.parse(r.stdout) as Record<string, unknown>; } catch { /* human output */ }
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, json };
}

function admin(server: ServerProcess): ApiClient {
  const c = server.admin();
  clients.push(c);
  return c;
}

async function grow(server: ServerProcess, n: number, tag: string): Promise<void> {
  const a = admin(server);
  for (let i = 0; i < n; i++) await a.call('POST', '/v1/entries', { spiffe_id: `spiffe://${TD}/${tag}/${i}` });
}

async function latestSize(server: ServerProcess): Promise<number> {
  return (await admin(server).call<AuditCheckpointResponse>('GET', '/v1/audit/checkpoint')).checkpoint.size;
}

let agentMetrics: AgentMetrics | undefined;

async function startAgent(server: ServerProcess, dataDir: string, joinToken?: string): Promise<AgentNode> {
  const log = createLogger({ level: 'debug', write: (l) => lines.push(l) });
  node = await startAgentNode({
    serverUrl: server.url, dataDir, log, trustBundleFile: join(server.dataDir, 'bundle.pem'), ...(joinToken ? { joinToken } : {}),
    sidecar: { policyWatchSeconds: 1 }, metrics: (agentMetrics = new AgentMetrics()),
  });
  return node;
}

const witnessed = (): { size: number }[] => lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'audit checkpoint witnessed') as unknown as { size: number }[];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tessera-fork-'));
  cp1 = new ServerProcess(join(dir, 'cp1'), await freePort(), ['--trust-domain', TD]);
  cp2 = new ServerProcess(join(dir, 'cp2'), await freePort(), ['--trust-domain', TD]);
  await cp1.start();
});

afterAll(async () => {
  await node?.close();
  for (const c of clients) c.close();
  await cp1?.stop(false);
  await cp2?.stop(false);
  rmSync(dir, { recursive: true, force: true });
});

describe('witnesses and a forked control plane', () => {
  it('an agent and tessera audit witness follow CP1, then raise the alarm against CP2, keeping their state', async () => {
    // Shared history: the agent joins CP1 and witnesses a checkpoint.
    const a1 = admin(cp1);
    await a1.call('POST', '/v1/entries', { spiffe_id: ID });
    const { token } = await a1.call<{ token: string }>('POST', '/v1/tokens', { entry_id: ID });
    await grow(cp1, 3, 'shared');
    const agentDir = join(dir, 'agent');
    await startAgent(cp1, agentDir, token);
    await waitFor('the agent to witness a checkpoint', () => witnessed().length > 0, 20_000);
    const stateFile = join(agentDir, WITNESS_STATE_FILE);
    expect(statSync(stateFile).mode & 0o777).toBe(0o600);
    const cliState = join(dir, 'admin-witness.json');
    const first = tessera(cp1, ['audit', 'witness', '--state', cliState, '--json']);
    expect([first.status, first.json.result]).toEqual([0, 'created']);
    expect(statSync(cliState).mode & 0o777).toBe(0o600);
    await node!.close();
    node = undefined;

    // The fork: CP1's data directory copied while it is stopped, both started, different records each.
    await cp1.stop(false);
    cpSync(cp1.dataDir, cp2.dataDir, { recursive: true });
    await cp1.start();
    await cp2.start();
    // CP2's first checkpoint (signed at start) covers the whole copied tree: the shared history.
    const shared = await latestSize(cp2);
    await grow(cp1, 3, 'one');
    await grow(cp2, 30, 'two');

    // The agent follows CP1 forward (consistent), its witness state moves on.
    lines = [];
    const held0 = JSON.parse(readFileSync(stateFile, 'utf8')) as { size: number };
    // A checkpoint of CP1 beyond the shared history, so that what the agent holds is CP1's alone.
    const size1 = await waitFor('CP1 to sign past the fork', async () => { const n = await latestSize(cp1); return n > shared ? n : undefined; }, 20_000);
    await startAgent(cp1, agentDir);
    await waitFor('the agent to witness CP1 further', () => witnessed().some((w) => w.size >= size1), 20_000);
    const held = JSON.parse(readFileSync(stateFile, 'utf8')) as { size: number; root_hash: string };
    expect(held.size).toBeGreaterThan(held0.size);
    expect(node!.sidecar.witness.alarms).toBe(0);
    await node!.close();
    node = undefined;
    const cliForward = tessera(cp1, ['audit', 'witness', '--state', cliState, '--json']);
    expect([cliForward.status, cliForward.json.result]).toEqual([0, 'advanced']);

    // Shown CP2's checkpoint (larger, another history): the alarm, and the state is kept.
    await waitFor('CP2 to sign a checkpoint larger than the one held', async () => (await latestSize(cp2)) > held.size, 20_000);
    const stateBefore = readFileSync(stateFile, 'utf8');
    lines = [];
    const n2 = await startAgent(cp2, agentDir);
    const alarmLine = await waitFor('the agent\'s alarm', () => lines.find((l) => l.includes('TESSERA_AUDIT_WITNESS_ALARM')), 20_000);
    expect(JSON.parse(alarmLine)).toMatchObject({ level: 'error', code: 'TESSERA_AUDIT_WITNESS_ALARM', kind: 'fork', heldSize: held.size, heldRoot: held.root_hash, alarmsTotal: 1 });
    expect(n2.sidecar.witness.alarms).toBeGreaterThanOrEqual(1);
    const records = await waitFor('the alarm record at CP2', async () => {
      const r = await admin(cp2).call<AuditListResponse>('GET', '/v1/audit?action=audit.witness_alarm');
      return r.records.length > 0 ? r.records : undefined;
    }, 20_000);
    expect(records[0]).toMatchObject({ actor: ID, outcome: 'success', detail: { kind: 'fork', held: { size: held.size, root_hash: held.root_hash } } });
    // More watch periods: CP2 keeps signing (the alarm record grew it), each new checkpoint of the
    // forked history is one more alarm (one per distinct bad checkpoint); the state never moves.
    await new Promise((r) => setTimeout(r, 2500));
    const alarmLines = lines.filter((l) => l.includes('TESSERA_AUDIT_WITNESS_ALARM')).map((l) => JSON.parse(l) as { kind: string; alarmsTotal: number });
    expect(alarmLines.map((l) => l.kind)).toEqual(alarmLines.map(() => 'fork'));
    expect(alarmLines.map((l) => l.alarmsTotal)).toEqual(alarmLines.map((_l, i) => i + 1));
    expect(n2.sidecar.witness.alarms).toBe(alarmLines.length);
    // The same count is what Prometheus scrapes from the agent.
    expect(await agentMetrics!.registry.metrics()).toMatch(new RegExp(`^tessera_audit_witness_alarms_total ${alarmLines.length}$`, 'm'));
    expect(n2.sidecar.witness.witnessed).toBe(0);
    expect(readFileSync(stateFile, 'utf8')).toBe(stateBefore);
    await n2.close();
    node = undefined;

    // The admin's witness: the same alarm, exit 1 with the stable code, its state file unchanged.
    const cliBefore = readFileSync(cliState, 'utf8');
    const cliFork = tessera(cp2, ['audit', 'witness', '--state', cliState, '--json']);
    expect([cliFork.status, cliFork.json.error?.code]).toEqual([1, 'TESSERA_AUDIT_WITNESS_ALARM']);
    expect(cliFork.json.error?.message).toMatch(/^fork: /);
    expect(readFileSync(cliState, 'utf8')).toBe(cliBefore);
    const human = tessera(cp2, ['audit', 'witness', '--state', cliState]);
    expect(human.status).toBe(1);
    expect(human.stderr).toContain('TESSERA_AUDIT_WITNESS_ALARM');
    // Bounded generously: four control-plane starts and several CLI runs (about 15 s on an idle machine).
  }, 60_000);

  it('tessera audit witness cosigns what it verified; audit checkpoint serves and verifies the cosignature', () => {
    const state = join(dir, 'cosigner.json');
    const key = join(dir, 'witness.key');
    const r = tessera(cp1, ['audit', 'witness', '--state', state, '--cosign-key', key, '--name', 'example.org/witness/site-b', '--json']);
    expect(r.status).toBe(0);
    expect(r.json.cosignature).toMatchObject({ name: 'example.org/witness/site-b', key_created: true });
    expect(r.json.cosignature.witness_key).toMatch(/^example\.org\/witness\/site-b\+[0-9a-f]{8}\+/);
    expect(statSync(key).mode & 0o777).toBe(0o600);
    const shown = tessera(cp1, ['audit', 'checkpoint', '--size', String(r.json.size), '--json']);
    expect(shown.status).toBe(0);
    expect(shown.json.cosignatures).toEqual([expect.objectContaining({ name: 'example.org/witness/site-b', key_id: r.json.cosignature.key_id, verified: true })]);
    expect(shown.json.checkpoint.note).toContain('— example.org/witness/site-b ');
    const human = tessera(cp1, ['audit', 'checkpoint', '--size', String(r.json.size)]);
    expect(human.stdout).toMatch(/cosigned: {3}by example\.org\/witness\/site-b \(key [0-9a-f]{8}\) at .*: verified/);
    // Again with the same key: it is reused, not replaced.
    const again = tessera(cp1, ['audit', 'witness', '--state', state, '--cosign-key', key, '--name', 'example.org/witness/site-b', '--json']);
    expect([again.status, again.json.cosignature?.key_created, again.json.cosignature?.witness_key]).toEqual([0, false, r.json.cosignature.witness_key]);
  });

  it('refuses bad witness options with stable codes', () => {
    const state = join(dir, 'opts.json');
    const noName = tessera(cp1, ['audit', 'witness', '--state', state, '--cosign-key', join(dir, 'k2.key'), '--json']);
    expect([noName.status, noName.json.error?.code]).toEqual([2, 'TESSERA_CONFIG_INVALID']);
    const badKey = tessera(cp1, ['audit', 'witness', '--state', state, '--log-key', 'nope', '--json']);
    expect([badKey.status, badKey.json.error?.code]).toEqual([1, 'TESSERA_AUDIT_CHECKPOINT_INVALID']);
    const corrupt = join(dir, 'corrupt.json');
    writeFileSync(corrupt, '{"size": 3}');
    const bad = tessera(cp1, ['audit', 'witness', '--state', corrupt, '--json']);
    expect([bad.status, bad.json.error?.code]).toEqual([1, 'TESSERA_AUDIT_WITNESS_STATE_INVALID']);
  });
});
