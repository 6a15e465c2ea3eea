/**
 * Control-plane replicas on one PostgreSQL (issue 14): two `tessera server --store` processes of the
 * built CLI, each with its own port and data directory and the same KEK, on a real PostgreSQL
 * (test/support/postgres.ts).
 * - Exactly one holds the leader lease (GET /healthz `leader`); the other serves the same data.
 * - A policy change, a revocation and a quarantine made through one replica reach a policy
 *   enforcer long-polling the OTHER replica within a second (the change log's NOTIFY wakes it).
 * - With its LISTEN connection killed (pg_terminate_backend), a replica still catches up from the
 *   change log (its poll), and listens again.
 * - The leader SIGKILLed: the other takes the lease within the lease's TTL and runs the duties (it
 *   signs audit checkpoints); the killed one restarted comes back as a non-leader.
 * - A CA rotation asked of the non-leader is activated by the leader, once, and both replicas sign
 *   with the new CA; a clean stop gives the lease up at once.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../src/agent/agent.js';
import { PolicyEnforcer } from '../src/agent/enforce/policy.js';
import type { ApiClient } from '../src/common/api-client.js';
import { createLogger } from '../src/core/log.js';
import type { PolicyBundleResponse } from '../src/core/wire/control-plane.js';
import { queryDb, startPostgres, type TestPostgres } from './support/postgres.js';
import { freePort, ServerProcess, waitFor } from './support/process.js';

const TD = 'replicas.test';
const log = createLogger({ level: 'error' });
let pg: TestPostgres;
let url: string;
let dir: string;
const replicas: ServerProcess[] = [];
const admins: ApiClient[] = [];
let agent: Agent;
let enforcer: PolicyEnforcer;

interface Health { leader: boolean; replica: string; bundle_sequence: number }

async function health(r: ServerProcess): Promise<Health> {
  const a = r.admin();
  try {
    return await a.call<Health>('GET', '/healthz');
  } finally {
    a.close();
  }
}

function admin(i: number): ApiClient {
  admins[i]?.close();
  admins[i] = replicas[i]!.admin();
  return admins[i]!;
}

const env = { ...process.env, TESSERA_KEK: randomBytes(32).toString('hex') };

beforeAll(async () => {
  pg = await startPostgres();
  url = await pg.createDatabase();
  dir = mkdtempSync(join(tmpdir(), 'tessera-replicas-'));
  for (const name of ['a', 'b']) {
    const r = new ServerProcess(join(dir, name), await freePort(), ['--store', url, '--trust-domain', TD], env);
    replicas.push(r);
    await r.start();
  }
  // The workload: its agent and policy enforcer talk to replica B only.
  const entry = await admin(0).call<{ id: string }>('POST', '/v1/entries', { spiffe_id: `spiffe://${TD}/web`, selectors: ['unix:uid:1000'] });
  const { token } = await admin(0).call<{ token: string }>('POST', '/v1/tokens', { entry_id: entry.id });
  agent = new Agent({ serverUrl: replicas[1]!.url, dataDir: join(dir, 'agent'), log, joinToken: token, trustBundleFile: join(replicas[1]!.adminDir, 'bundle.pem') });
  await agent.start();
  enforcer = new PolicyEnforcer({
    dir: join(dir, 'enforcer'), site: 'default', log, trustedCas: () => agent.trustedCas(), watchSeconds: 30,
    fetch: (after, timeout) => agent.call<PolicyBundleResponse>('GET', `/v1/policy/bundle?after=${after}&timeout_seconds=${timeout}`, undefined, { timeoutMs: (timeout + 10) * 1000 }),
    ship: async () => {},
  });
  enforcer.start();
  await waitFor('the first bundle', () => enforcer.version > 0, 10_000);
}, 60_000);

afterAll(async () => {
  await enforcer?.stop();
  await agent?.stop();
  for (const a of admins) a?.close();
  for (const r of replicas) await r.stop();
  await pg?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
}, 30_000);

/**
 * The fan-out of `change` (made on replica A) to the enforcer long-polling replica B: `afterAnswer`,
 * ms from A's answer (the change is committed) until B's enforcer holds a bundle where `seen` holds
 * (0 when it already did: B often has it before A's answer arrives), and `total`, ms from sending the
 * admin call (an upper bound that includes the call's own work, e.g. compiling a policy).
 */
async function fanOut(change: () => Promise<unknown>, seen: () => boolean): Promise<{ afterAnswer: number; total: number }> {
  const sent = Date.now();
  await change();
  const answered = Date.now();
  await waitFor('the change at the enforcer on the other replica', seen, 5_000, 2);
  const at = Date.now();
  return { afterAnswer: at - answered, total: at - sent };
}

const show = (f: { afterAnswer: number; total: number }): string => `${f.afterAnswer} ms after A's answer (${f.total} ms from the call)`;

describe('two replicas on one PostgreSQL', () => {
  it('exactly one holds the leader lease', async () => {
    const [a, b] = [await health(replicas[0]!), await health(replicas[1]!)];
    expect([a.leader, b.leader]).toEqual([true, false]);
    expect(a.replica).not.toBe(b.replica);
    const lease = await queryDb<{ holder: string; epoch: string }>(url, 'SELECT holder, epoch FROM leases');
    expect(lease).toEqual([{ holder: a.replica, epoch: expect.anything() }]);
  });

  it('a policy change, a revocation and a quarantine on A reach an enforcer polling B within a second', async () => {
    const before = enforcer.version;
    const policyMs = await fanOut(
      () => admin(0).call('POST', '/v1/policies', { files: { 'p.cedar': `permit (principal == Tessera::Workload::"spiffe://${TD}/web", action, resource) when { false };` }, reason: 'replica fan-out' }),
      () => enforcer.version > before,
    );
    const victim = await admin(0).call<{ id: string }>('POST', '/v1/entries', { spiffe_id: `spiffe://${TD}/victim`, selectors: ['unix:uid:1001'] });
    await waitFor('the victim live on B', () => enforcer.peerStatus(`spiffe://${TD}/victim`).ok, 5_000, 5);
    const revokeMs = await fanOut(
      () => admin(0).call('POST', `/v1/entries/${victim.id}/revoke`, { reason: 'replica fan-out' }),
      () => !enforcer.peerStatus(`spiffe://${TD}/victim`).ok,
    );
    const quarantineMs = await fanOut(
      () => admin(0).call('POST', `/v1/risk/${encodeURIComponent(`spiffe://${TD}/web`)}/quarantine`, { ttl_seconds: 600, reason: 'replica fan-out' }),
      () => enforcer.peerStatus(`spiffe://${TD}/web`).ok === false,
    );
    console.log(`[replicas] fan-out A -> enforcer on B: policy ${show(policyMs)}, revocation ${show(revokeMs)}, quarantine ${show(quarantineMs)}`);
    for (const f of [policyMs, revokeMs, quarantineMs]) {
      expect(f.afterAnswer).toBeLessThan(1000);
      expect(f.total).toBeLessThan(3000);
    }
    await admin(0).call('POST', `/v1/risk/${encodeURIComponent(`spiffe://${TD}/web`)}/release`, { reason: 'done' });
    await waitFor('the release on B', () => enforcer.peerStatus(`spiffe://${TD}/web`).ok, 5_000, 5);
  });

  it('the change log records each change; a replica whose LISTEN connection dies catches up from the log and listens again', async () => {
    const seqBefore = Number((await queryDb<{ s: string }>(url, 'SELECT COALESCE(MAX(seq), 0) AS s FROM change_log'))[0]!.s);
    const killed = await queryDb<{ ok: boolean }>(url, "SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = 'tessera-change-feed'");
    expect(killed.length).toBe(2);
    const before = enforcer.version;
    const ms = await fanOut(
      () => admin(0).call('POST', '/v1/policies', { files: { 'p.cedar': 'forbid (principal, action, resource);' }, reason: 'while B is deaf' }),
      () => enforcer.version > before,
    );
    console.log(`[replicas] fan-out with B's LISTEN connection killed: ${show(ms)} (the change log's poll)`);
    expect(ms.afterAnswer).toBeLessThan(2000);
    expect(Number((await queryDb<{ s: string }>(url, 'SELECT COALESCE(MAX(seq), 0) AS s FROM change_log'))[0]!.s)).toBeGreaterThan(seqBefore);
    await waitFor('both replicas listening again', async () => (await queryDb(url, "SELECT pid FROM pg_stat_activity WHERE application_name = 'tessera-change-feed'")).length === 2, 10_000, 200);
    expect(replicas[1]!.output).toMatch(/LISTEN connection lost/);
  });

  it('a leader that loses its lease stops its duties at once: no checkpoint is signed while nobody holds it', async () => {
    const checkpoints = async (): Promise<number> => Number((await queryDb<{ n: string }>(url, 'SELECT COUNT(*) AS n FROM audit_checkpoints'))[0]!.n);
    // Another holder (as if A had paused past its lease and B had taken it), for the next 6 s.
    await queryDb(url, "UPDATE leases SET holder = 'elsewhere', epoch = epoch + 1, expires_at = (extract(epoch FROM clock_timestamp()) * 1000)::bigint + 6000");
    await waitFor('A to step down', async () => !(await health(replicas[0]!)).leader, 3_000, 50);
    expect((await health(replicas[1]!)).leader).toBe(false);
    const before = await checkpoints();
    await admin(0).call('POST', '/v1/entries', { spiffe_id: `spiffe://${TD}/while-leaderless` });
    await new Promise((r) => setTimeout(r, 2500));
    expect(await checkpoints()).toBe(before);
    // The foreign lease lapses: one of the two takes it and signs the tail.
    await waitFor('a leader again', async () => (await health(replicas[0]!)).leader || (await health(replicas[1]!)).leader, 10_000, 100);
    await waitFor('the tail signed', async () => (await checkpoints()) > before, 5_000, 100);
    // A (the replica that led before) should lead for the next test: if B took it, hand it back.
    if ((await health(replicas[1]!)).leader) {
      await replicas[1]!.kill('SIGTERM');
      await waitFor('A to lead', async () => (await health(replicas[0]!)).leader, 5_000, 50);
      await replicas[1]!.start();
    }
  }, 30_000);

  it('the leader SIGKILLed: the other takes the lease within its TTL and runs the duties; the old one comes back as a follower', async () => {
    const killedAt = Date.now();
    await replicas[0]!.kill('SIGKILL');
    await waitFor('B to lead', async () => (await health(replicas[1]!)).leader, 15_000, 100);
    const tookMs = Date.now() - killedAt;
    console.log(`[replicas] leader SIGKILLed: B took the lease after ${tookMs} ms (lease TTL 8 s)`);
    expect(tookMs).toBeLessThan(13_000);
    // B signs checkpoints now: an admin action on B, then a checkpoint covering it.
    await admin(1).call('POST', '/v1/entries', { spiffe_id: `spiffe://${TD}/after-failover` });
    const size = Number((await queryDb<{ top: string }>(url, 'SELECT MAX(id) AS top FROM audit'))[0]!.top);
    await waitFor('a checkpoint signed by B', async () => Number((await queryDb<{ s: string }>(url, 'SELECT COALESCE(MAX(size), 0) AS s FROM audit_checkpoints'))[0]!.s) >= size, 10_000, 200);
    await replicas[0]!.start();
    expect((await health(replicas[0]!)).leader).toBe(false);
    expect((await health(replicas[1]!)).leader).toBe(true);
  }, 30_000);

  it('a CA rotation asked of the non-leader is activated once by the leader; a clean stop hands the lease over at once', async () => {
    const rotated = await admin(0).call<{ prepared: { id: string } }>('POST', '/v1/ca/rotate', { grace_seconds: 2 });
    // A second rotation while one is prepared is refused, on either replica.
    await expect(admin(1).call('POST', '/v1/ca/rotate', { grace_seconds: 2 })).rejects.toMatchObject({ code: 'TESSERA_CA_ROTATION_IN_PROGRESS' });
    await waitFor('the prepared CA active', async () => {
      const cas = await queryDb<{ id: string; state: string }>(url, "SELECT id, state FROM cas WHERE state IN ('active', 'prepared')");
      return cas.length === 1 && cas[0]!.id === rotated.prepared.id && cas[0]!.state === 'active';
    }, 15_000, 200);
    // Both replicas follow: their CA lists show the same active CA.
    for (const i of [0, 1]) {
      await waitFor(`replica ${i} on the new CA`, async () => {
        const list = await admin(i).call<{ authorities: { id: string; state: string }[] }>('GET', '/v1/ca');
        return list.authorities.find((c) => c.state === 'active')?.id === rotated.prepared.id;
      }, 10_000, 100).catch(async (err: unknown) => {
        // What each replica was doing: leadership and its warnings and errors.
        const seen = await Promise.all([0, 1].map(async (j) => `replica ${j}: leader ${String((await health(replicas[j]!).catch(() => ({ leader: '?' }))).leader)}\n${
          replicas[j]!.output.split('\n').filter((l) => /"level":"(warn|error)"|lease|CA activated/.test(l)).slice(-15).join('\n')}`));
        throw new Error(`${(err as Error).message}\n${seen.join('\n')}`);
      });
    }
    const stoppedAt = Date.now();
    await replicas[1]!.kill('SIGTERM');
    await waitFor('A to lead', async () => (await health(replicas[0]!)).leader, 5_000, 50);
    const ms = Date.now() - stoppedAt;
    console.log(`[replicas] leader stopped cleanly: A took the lease after ${ms} ms`);
    expect(ms).toBeLessThan(3000);
    await replicas[1]!.start();
  }, 40_000);
});
