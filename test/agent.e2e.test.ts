import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent, type SvidEvent } from '../src/agent/agent.js';
import type { ApiClient } from '../src/common/api-client.js';
import { silentLogger } from '../src/core/log.js';
import { freePort, ServerProcess, waitFor } from './support/process.js';

const ID = 'spiffe://tessera.test/shop/api';

function nextSvid(agent: Agent, reason?: SvidEvent['reason']): Promise<SvidEvent> {
  return new Promise((resolve) => {
    const on = (e: SvidEvent): void => {
      if (reason && e.reason !== reason) return;
      agent.off('svid', on);
      resolve(e);
    };
    agent.on('svid', on);
  });
}

describe('agent against a control plane that is killed and restarted', () => {
  let dir: string;
  let server: ServerProcess;
  let admin: ApiClient;
  const agents: Agent[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-e2e-'));
    server = new ServerProcess(join(dir, 'server'), await freePort());
    await server.start();
    admin = server.admin();
    await admin.call('POST', '/v1/entries', { spiffe_id: ID, attributes: { app: 'shop', site: 'eu-1' }, x509_ttl_seconds: 10 });
  });

  afterAll(async () => {
    for (const a of agents) await a.stop();
    admin.close();
    await server.stop(false);
    rmSync(dir, { recursive: true, force: true });
  });

  async function token(): Promise<string> {
    const res = await admin.call<{ token: string }>('POST', '/v1/tokens', { entry_id: ID, ttl_seconds: 60 });
    return res.token;
  }

  function agentFor(dataDir: string, joinToken?: string): Agent {
    const a = new Agent({
      serverUrl: server.url, dataDir, log: silentLogger, watchSeconds: 2,
      trustBundleFile: join(server.dataDir, 'bundle.pem'), ...(joinToken ? { joinToken } : {}),
    });
    agents.push(a);
    return a;
  }

  it('joins, writes files for legacy apps, rotates, survives SIGKILL of the server and its own restart', async () => {
    const dataDir = join(dir, 'agent-1');
    const agent = agentFor(dataDir, await token());
    const joined = nextSvid(agent, 'join');
    await agent.start();
    const first = await joined;
    expect(first.spiffeId).toBe(ID);

    // Files: key 0600, certificate verifiable by openssl against the bundle, exactly our identity.
    expect(statSync(join(dataDir, 'svid.key')).mode & 0o777).toBe(0o600);
    const verify = execFileSync('openssl', ['verify', '-partial_chain', '-CAfile', join(dataDir, 'bundle.pem'), join(dataDir, 'svid.pem')]).toString();
    expect(verify).toContain(': OK');
    const leaf = new X509Certificate(readFileSync(join(dataDir, 'svid.pem')));
    expect(leaf.subjectAltName).toBe(`URI:${ID}`);
    expect(leaf.ca).toBe(false);

    // Rotation at half life (10 s TTL → about 5 s), over mTLS.
    const renewed = await nextSvid(agent, 'renew');
    expect(renewed.serial).not.toBe(first.serial);
    expect(renewed.notAfter.getTime()).toBeGreaterThan(first.notAfter.getTime());

    // Kill the control plane: the agent keeps its identity and files, and retries.
    await server.kill('SIGKILL');
    const failed = await new Promise<{ retryInMs: number }>((resolve) => agent.once('renew-failed', resolve));
    expect(failed.retryInMs).toBeGreaterThan(0);
    expect(agent.current()?.spiffeId).toBe(ID);
    expect(new X509Certificate(readFileSync(join(dataDir, 'svid.pem'))).serialNumber).toBe(agent.current() && new X509Certificate(agent.current()!.certPem).serialNumber);

    // Bring it back on the same port and data: the agent renews again by itself.
    const back = nextSvid(agent, 'renew');
    await server.start();
    const afterOutage = await back;
    expect(afterOutage.notAfter.getTime()).toBeGreaterThan(Date.now());

    // The agent restarts from disk: no token needed, same identity, renews later as usual.
    await agent.stop();
    const again = agentFor(dataDir);
    const loaded = nextSvid(again, 'loaded');
    await again.start();
    expect((await loaded).serial).toBe(afterOutage.serial);
    const renewedAfterRestart = await nextSvid(again, 'renew');
    expect(renewedAfterRestart.serial).not.toBe(afterOutage.serial);

    // Audit: the join and renewals are recorded as successes.
    const audit = await admin.call<{ records: { action: string; outcome: string; target: string }[] }>('GET', '/v1/audit?limit=1000');
    expect(audit.records.filter((r) => r.action === 'svid.join' && r.outcome === 'success' && r.target === ID)).toHaveLength(1);
    expect(audit.records.filter((r) => r.action === 'svid.renew' && r.outcome === 'success').length).toBeGreaterThanOrEqual(3);
    // Three renewals at half life of a 10 s SVID, an outage and two restarts: ~20 s idle, more on a loaded machine.
  }, 90_000);

  it('never reuses a spent join token: a restart with the same flag loads from disk', async () => {
    const dataDir = join(dir, 'agent-2');
    const t = await token();
    const a = agentFor(dataDir, t);
    await a.start();
    await a.stop();
    const b = agentFor(dataDir, t);
    const loaded = nextSvid(b, 'loaded');
    await b.start();
    expect((await loaded).spiffeId).toBe(ID);
    await b.stop();
    const audit = await admin.call<{ records: { action: string; outcome: string }[] }>('GET', '/v1/audit?action=svid.join&limit=1000');
    expect(audit.records.filter((r) => r.outcome === 'denied')).toHaveLength(0);
  }, 30_000);

  it('refuses a second agent that replays a spent token, with a stable code', async () => {
    const t = await token();
    const a = agentFor(join(dir, 'agent-3'), t);
    await a.start();
    const b = agentFor(join(dir, 'agent-4'), t);
    await expect(b.start()).rejects.toMatchObject({ code: 'TESSERA_TOKEN_INVALID' });
    const audit = await admin.call<{ records: { action: string; outcome: string; detail: { reason?: string } }[] }>('GET', '/v1/audit?action=svid.join&outcome=denied');
    expect(audit.records.some((r) => r.detail.reason === 'used')).toBe(true);
  }, 30_000);

  it('says clearly when its SVID has expired while the control plane is away, and keeps retrying', async () => {
    const dataDir = join(dir, 'agent-5');
    const a = agentFor(dataDir, await token());
    await a.start();
    await a.stop();
    await server.kill('SIGKILL');
    const notAfter = new X509Certificate(readFileSync(join(dataDir, 'svid.pem'))).validTo;
    await waitFor('SVID to expire', () => Date.parse(notAfter) < Date.now(), 15_000, 200);
    const b = agentFor(dataDir);
    const expired = new Promise<{ spiffeId: string }>((resolve) => b.once('expired', resolve));
    await b.start();
    expect((await expired).spiffeId).toBe(ID);
    const retry = await new Promise<{ retryInMs: number }>((resolve) => b.once('renew-failed', resolve));
    expect(retry.retryInMs).toBeGreaterThan(0);
    await server.start();
  }, 40_000);
});
