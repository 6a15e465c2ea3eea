/**
 * Blind secrets end to end: `tessera server` as a child process, three key servers in this process
 * (each its own Agent with its own entry and join token, Cedar `secret:unseal` through its policy
 * enforcer), a 2-of-3 secret policy dealt by the CLI, then `tessera secret seal` and
 * `tessera secret unseal --agent-dir` for an allowed and a refused agent, and with one key server
 * stopped. The CLI runs with async spawn: the key servers live in this event loop.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../src/agent/agent.js';
import type { ApiClient } from '../src/common/api-client.js';
import { svidClient } from '../src/admin/clients.js';
import { startKeyServerNode, type KeyServerNode } from '../src/keyserver/node.js';
import { TesseraError } from '../src/core/errors.js';
import { combinePoints, evaluate, openWithPoint, parseSealedText, ready } from '../src/core/secrets/index.js';
import { createLogger, silentLogger } from '../src/core/log.js';
import type { KeyAuditEvent } from '../src/keyserver/service.js';
import { CLI, freePort, ServerProcess, waitFor, runTessera } from './support/process.js';

const TD = 'tessera.test';
const PCI = `spiffe://${TD}/shop/orders`;
const OTHER = `spiffe://${TD}/shop/frontend`;
const KS = [1, 2, 3].map((i) => `spiffe://${TD}/keyserver/${i}`);
const PLAIN = 'postgres://orders:s3cret-E2E-value@db.internal/orders';
const CEDAR = `
@id("pci-unseal-db")
permit (
  principal,
  action == Tessera::Action::"secret:unseal",
  resource == Tessera::Workload::"spiffe://${TD}/tessera/secret/db"
) when { principal has compliance && principal.compliance == "pci" };
`;

interface Run { status: number | null; stdout: string; stderr: string }

describe('blind secrets: key servers, secret policy CLI, seal and unseal', () => {
  let dir: string;
  let server: ServerProcess;
  let admin: ApiClient;
  const nodes: KeyServerNode[] = [];
  const ksLogs: string[][] = [[], [], []];
  const audits: KeyAuditEvent[][] = [[], [], []];
  const agents: Agent[] = [];
  let sealedFile: string;

  function tessera(args: string[], input = ''): Promise<Run> {
    return runTessera(args, { env: { TESSERA_ADMIN_DIR: server.adminDir }, input });
  }


  async function token(spiffeId: string): Promise<string> {
    return (await admin.call<{ token: string }>('POST', '/v1/tokens', { entry_id: spiffeId, ttl_seconds: 120 })).token;
  }

  async function startAgent(name: string, spiffeId: string): Promise<string> {
    const dataDir = join(dir, name);
    const agent = new Agent({ serverUrl: server.url, dataDir, log: silentLogger, watchSeconds: 5, trustBundleFile: join(server.dataDir, 'bundle.pem'), joinToken: await token(spiffeId) });
    agents.push(agent);
    await agent.start();
    return dataDir;
  }

  beforeAll(async () => {
    expect(existsSync(CLI), 'run `npx tsc -p tsconfig.json` first: the test runs dist/src/cli/main.js').toBe(true);
    dir = mkdtempSync(join(tmpdir(), 'tessera-secrets-e2e-'));
    server = new ServerProcess(join(dir, 'server'), await freePort(), ['--trust-domain', TD]);
    await server.start();
    admin = server.admin();
    for (const id of KS) await admin.call('POST', '/v1/entries', { spiffe_id: id, attributes: { app: 'keyserver' } });
    await admin.call('POST', '/v1/entries', { spiffe_id: PCI, attributes: { app: 'orders', compliance: 'pci' } });
    await admin.call('POST', '/v1/entries', { spiffe_id: OTHER, attributes: { app: 'frontend' } });
    for (let i = 0; i < 3; i++) {
      nodes.push(await startKeyServerNode({
        serverUrl: server.url, dataDir: join(dir, `ks${i + 1}`), listen: { host: '127.0.0.1', port: 0 },
        log: createLogger({ level: 'info', write: (line) => ksLogs[i]!.push(line) }),
        joinToken: await token(KS[i]!), trustBundleFile: join(server.dataDir, 'bundle.pem'), env: {},
        onAudit: (ev) => audits[i]!.push(ev), policyWatchSeconds: 5,
      }));
    }
    const applied = await admin.call<{ bundle_version: number }>('POST', '/v1/policies', { files: { 'secrets.cedar': CEDAR }, reason: 'secret:unseal for pci' });
    await waitFor('key servers to enforce the policy', () => nodes.every((n) => n.sidecar.enforcer.version >= applied.bundle_version), 20_000);
  }, 60_000);

  afterAll(async () => {
    for (const n of nodes) await n.close().catch(() => {});
    for (const a of agents) await a.stop().catch(() => {});
    admin?.close();
    await server?.kill('SIGTERM');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('creates a 2-of-3 policy through the CLI: shares on the key servers, a signed record on the control plane', async () => {
    const servers = nodes.map((n, i) => `${n.keyServer.url}@${KS[i]!}`).join(',');
    const r = await tessera(['--json', 'secret', 'policy', 'create', 'db', '--threshold', '2', '--servers', servers]);
    expect(r.stderr).toBe('');
    expect(r.status, r.stdout).toBe(0);
    const out = JSON.parse(r.stdout) as { public_key: string; t: number; n: number; record: { commitments: string[] } };
    expect(out.t).toBe(2);
    expect(out.record.commitments[0]).toBe(out.public_key);
    nodes.forEach((n, i) => expect(n.keyServer.store.list()).toEqual([{ policyId: 'db', epoch: 1, generation: 1, t: 2, n: 3, index: i + 1 }]));
    // The same (name, epoch) again is refused by the key servers before anything is published.
    const again = await tessera(['secret', 'policy', 'create', 'db', '--threshold', '2', '--servers', servers]);
    expect(again.status).not.toBe(0);
    const list = await tessera(['--json', 'secret', 'policy', 'list']);
    expect(JSON.parse(list.stdout).policies).toHaveLength(1);
    // The control plane audited the creation.
    const recs = (await admin.call<{ records: { action: string; outcome: string }[] }>('GET', '/v1/audit?action=secret.policy.create')).records;
    expect(recs.some((x) => x.outcome === 'success')).toBe(true);
  }, 60_000);

  it('seals online and offline (from a saved signed record) to the same policy, and refuses a tampered record', async () => {
    const plainFile = join(dir, 'plain.txt');
    writeFileSync(plainFile, PLAIN);
    sealedFile = join(dir, 'db.sealed');
    const online = await tessera(['secret', 'seal', '--policy', 'db', '--in', plainFile, '--out', sealedFile]);
    expect(online.status, online.stderr).toBe(0);
    expect(online.stdout).toBe('');
    expect(readFileSync(sealedFile, 'utf8')).toMatch(/^tessera-sealed:v1:/);

    const show = await tessera(['--json', 'secret', 'policy', 'show', 'db']);
    expect(show.status, show.stderr).toBe(0);
    const recFile = join(dir, 'rec.json');
    writeFileSync(recFile, show.stdout);
    const offline = await tessera(['secret', 'seal', '--policy', 'db', '--record', recFile], PLAIN);
    expect(offline.status, offline.stderr).toBe(0);
    expect(offline.stdout).toMatch(/^tessera-sealed:v1:/);
    expect(offline.stdout).not.toContain(PLAIN);

    const env = JSON.parse(show.stdout) as { payload: string };
    const rec = JSON.parse(Buffer.from(env.payload, 'base64url').toString('utf8')) as { t: number };
    rec.t = 1;
    writeFileSync(recFile, JSON.stringify({ ...env, payload: Buffer.from(JSON.stringify(rec)).toString('base64url') }));
    const tampered = await tessera(['secret', 'seal', '--policy', 'db', '--record', recFile], PLAIN);
    expect(tampered.status).not.toBe(0);
    expect(tampered.stderr).toContain('TESSERA_SECRET_POLICY_INVALID');
  }, 60_000);

  it('unseals for the pci agent, refuses the other agent (audited as denied by every key server)', async () => {
    const pciDir = await startAgent('pci', PCI);
    const otherDir = await startAgent('other', OTHER);

    const ok = await tessera(['secret', 'unseal', '--agent-dir', pciDir, '--in', sealedFile]);
    expect(ok.stderr).toBe('');
    expect(ok.status).toBe(0);
    expect(ok.stdout).toBe(PLAIN);

    const outFile = join(dir, 'plain.out');
    const toFile = await tessera(['secret', 'unseal', '--agent-dir', pciDir, '--out', outFile], readFileSync(sealedFile, 'utf8'));
    expect(toFile.status, toFile.stderr).toBe(0);
    expect(toFile.stdout).toBe('');
    expect(readFileSync(outFile, 'utf8')).toBe(PLAIN);
    expect(statSync(outFile).mode & 0o777).toBe(0o600);

    const refused = await tessera(['secret', 'unseal', '--agent-dir', otherDir, '--in', sealedFile]);
    expect(refused.status).not.toBe(0);
    expect(refused.stdout).toBe('');
    expect(refused.stderr).toMatch(/TESSERA_SECRET_THRESHOLD|TESSERA_FORBIDDEN/);
    // It gives up as soon as the threshold is out of reach: at least n - t + 1 = 2 refusals, named.
    expect(KS.filter((id) => refused.stderr.includes(`${id} (index`)).length).toBeGreaterThanOrEqual(2);
    expect(refused.stderr).toContain('TESSERA_FORBIDDEN');
    expect(refused.stderr).not.toContain(PLAIN);
    await waitFor('every key server to audit the denial', () => audits.every((a) => a.some((e) => e.actor === OTHER && e.outcome === 'denied' && e.code === 'TESSERA_FORBIDDEN')));
    for (let i = 0; i < 3; i++) {
      expect(audits[i]!.some((e) => e.actor === PCI && e.outcome === 'allowed')).toBe(true);
      const denied = ksLogs[i]!.filter((l) => l.includes('keyserver audit') && l.includes(OTHER) && l.includes('denied'));
      expect(denied.length).toBeGreaterThan(0);
    }
    // Nothing secret in the key servers' logs.
    for (const lines of ksLogs) expect(lines.join('\n')).not.toContain(PLAIN);
  }, 60_000);

  it('control plane: agents may read a record but not create or list; bad records are refused', async () => {
    const agent = svidClient(join(dir, 'pci'), server.url);
    const code = (p: Promise<unknown>): Promise<string> => p.then(() => 'ok', (e: unknown) => (e instanceof TesseraError ? e.code : String(e)));
    try {
      const got = await agent.call<{ id: string; epoch: number }>('GET', '/v1/secret-policies/db?epoch=1');
      expect([got.id, got.epoch]).toEqual(['db', 1]);
      expect(await code(agent.call('GET', '/v1/secret-policies'))).toBe('TESSERA_FORBIDDEN');
      expect(await code(agent.call('POST', '/v1/secret-policies', { id: 'x', epoch: 1, t: 1, n: 1, commitments: [], servers: [] }))).toBe('TESSERA_FORBIDDEN');
      expect(await code(agent.call('GET', '/v1/secret-policies/db?epoch=9'))).toBe('TESSERA_NOT_FOUND');
    } finally {
      agent.close();
    }
    const shown = await admin.call<{ signed: { payload: string } }>('GET', '/v1/secret-policies/db');
    const rec = JSON.parse(Buffer.from(shown.signed.payload, 'base64url').toString('utf8')) as { commitments: string[]; servers: unknown[] };
    const base = { id: 'db2', epoch: 1, t: 2, n: 3, commitments: rec.commitments, servers: rec.servers };
    expect(await code(admin.call('POST', '/v1/secret-policies', { ...base, t: 4 }))).toBe('TESSERA_SECRET_POLICY_INVALID');
    expect(await code(admin.call('POST', '/v1/secret-policies', { ...base, t: 3 }))).toBe('TESSERA_SECRET_POLICY_INVALID');
    expect(await code(admin.call('POST', '/v1/secret-policies', { ...base, id: 'db' }))).toBe('TESSERA_CONFLICT');
  }, 30_000);

  it('two colluding key servers of a 3-of-3 policy, pooling the shares they hold, cannot open its blob', async () => {
    const servers = nodes.map((n, i) => `${n.keyServer.url}@${KS[i]!}`).join(',');
    const created = await tessera(['secret', 'policy', 'create', 'vault', '--threshold', '3', '--servers', servers]);
    expect(created.status, created.stderr).toBe(0);
    const sealed = await tessera(['secret', 'seal', '--policy', 'vault'], PLAIN);
    expect(sealed.status, sealed.stderr).toBe(0);
    await ready();
    const parsed = parseSealedText(sealed.stdout.trim());
    // Servers 1 and 2 pool their real shares (taken from their stores) and evaluate R directly, unblinded.
    const stolen = [0, 1].map((i) => nodes[i]!.keyServer.store.get('vault', 1)!);
    const guess = combinePoints(stolen.map((sh) => ({ index: sh.index, point: evaluate(sh.value, parsed.R) })));
    expect(() => openWithPoint(parsed, guess)).toThrow(TesseraError);
    // With the third share it would open: the test can fail.
    const all = nodes.map((n) => n.keyServer.store.get('vault', 1)!);
    expect(openWithPoint(parsed, combinePoints(all.map((sh) => ({ index: sh.index, point: evaluate(sh.value, parsed.R) })))).toString('utf8')).toBe(PLAIN);
  }, 60_000);

  it('still unseals with one key server stopped, naming the missing server on stderr', async () => {
    await nodes[1]!.keyServer.close();
    const ok = await tessera(['secret', 'unseal', '--agent-dir', join(dir, 'pci'), '--in', sealedFile]);
    expect(ok.status, ok.stderr).toBe(0);
    expect(ok.stdout).toBe(PLAIN);
    expect(ok.stderr).toContain(KS[1]!);
    // Two stopped: below the threshold.
    await nodes[2]!.keyServer.close();
    const none = await tessera(['secret', 'unseal', '--agent-dir', join(dir, 'pci'), '--in', sealedFile]);
    expect(none.status).not.toBe(0);
    expect(none.stderr).toContain('TESSERA_SECRET_THRESHOLD');
    expect(none.stdout).toBe('');
  }, 60_000);
});
