/**
 * The life of a secret policy in the dealer mode (`--dealer`; DKG is test/secrets-dkg.e2e.test.ts), end to end: `tessera server` as a child process, three key servers
 * in this process (each its own Agent and Cedar enforcer), the CLI for the admin steps:
 * share refresh (same key, new shares, old shares gone), a refresh interrupted after publishing
 * and finished by the next run, key rotation (old blobs still open), retirement (they no longer
 * do), and a `policy create` that fails half way and takes back the shares it installed.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../src/agent/agent.js';
import type { ApiClient } from '../src/common/api-client.js';
import { KeyServerPool, unsealSealedText } from '../src/agent/secrets/unseal.js';
import { svidClient } from '../src/admin/clients.js';
import { refreshEpoch, type SecretAdmin } from '../src/admin/secrets.js';
import { startKeyServerNode, type KeyServerNode } from '../src/keyserver/node.js';
import { createLogger, silentLogger } from '../src/core/log.js';
import { baseMul, randomScalar, split } from '../src/core/secrets/index.js';
import { pemDecodeAll } from '../src/core/x509.js';
import { CLI, freePort, ServerProcess, runTessera, waitFor } from './support/process.js';

const TD = 'tessera.test';
const APP = `spiffe://${TD}/shop/orders`;
const KS = [1, 2, 3].map((i) => `spiffe://${TD}/keyserver/${i}`);
const PLAIN1 = 'db-password-epoch-1-lifecycle';
const PLAIN2 = 'db-password-epoch-2-lifecycle';
const CEDAR = `
@id("orders-unseal")
permit (principal == Tessera::Workload::"${APP}", action == Tessera::Action::"secret:unseal", resource);
`;

interface Run { status: number | null; stdout: string; stderr: string }

describe('secret policy lifecycle: refresh, rotate, retire, failed create', () => {
  let dir: string;
  let server: ServerProcess;
  let admin: ApiClient;
  const nodes: (KeyServerNode | undefined)[] = [];
  const agents: Agent[] = [];
  let appDir: string;
  let blob1: string;
  let servers: string;

  const tessera = (args: string[], input = ''): Promise<Run> => runTessera(args, { env: { TESSERA_ADMIN_DIR: server.adminDir }, input });
  const token = async (id: string): Promise<string> => (await admin.call<{ token: string }>('POST', '/v1/tokens', { entry_id: id, ttl_seconds: 120 })).token;

  async function startNode(i: number, joinToken?: string): Promise<KeyServerNode> {
    const port = nodes[i] ? nodes[i].keyServer.port : 0;
    const node = await startKeyServerNode({
      serverUrl: server.url, dataDir: join(dir, `ks${i + 1}`), listen: { host: '127.0.0.1', port },
      log: createLogger({ level: 'warn', write: () => {} }), env: {}, policyWatchSeconds: 5,
      ...(joinToken ? { joinToken, trustBundleFile: join(server.dataDir, 'bundle.pem') } : {}),
    });
    nodes[i] = node;
    return node;
  }

  async function unseal(text: string): Promise<Run> {
    return tessera(['secret', 'unseal', '--agent-dir', appDir], text);
  }

  function sharesOf(i: number): { policyId: string; epoch: number; generation: number; pending?: number }[] {
    return nodes[i]!.keyServer.store.list().map(({ policyId, epoch, generation, pending }) => ({ policyId, epoch, generation, ...(pending ? { pending } : {}) }));
  }

  beforeAll(async () => {
    expect(existsSync(CLI), 'run `npx tsc -p tsconfig.json` first').toBe(true);
    dir = mkdtempSync(join(tmpdir(), 'tessera-secret-life-'));
    server = new ServerProcess(join(dir, 'server'), await freePort(), ['--trust-domain', TD]);
    await server.start();
    admin = server.admin();
    for (const id of KS) await admin.call('POST', '/v1/entries', { spiffe_id: id, attributes: { app: 'keyserver' } });
    await admin.call('POST', '/v1/entries', { spiffe_id: APP, attributes: { app: 'orders' } });
    for (let i = 0; i < 3; i++) await startNode(i, await token(KS[i]!));
    const applied = await admin.call<{ bundle_version: number }>('POST', '/v1/policies', { files: { 'secrets.cedar': CEDAR }, reason: 'orders may unseal' });
    await waitFor('key servers to enforce the policy', () => nodes.every((n) => n!.sidecar.enforcer.version >= applied.bundle_version), 20_000);
    appDir = join(dir, 'app');
    const agent = new Agent({ serverUrl: server.url, dataDir: appDir, log: silentLogger, watchSeconds: 5, trustBundleFile: join(server.dataDir, 'bundle.pem'), joinToken: await token(APP) });
    agents.push(agent);
    await agent.start();
    servers = nodes.map((n, i) => `${n!.keyServer.url}@${KS[i]!}`).join(',');
    const created = await tessera(['secret', 'policy', 'create', 'db', '--dealer', '--threshold', '2', '--servers', servers]);
    expect(created.status, created.stderr).toBe(0);
    blob1 = (await tessera(['secret', 'seal', '--policy', 'db'], PLAIN1)).stdout;
    expect(blob1).toMatch(/^tessera-sealed:v1:/);
  }, 90_000);

  afterAll(async () => {
    for (const n of nodes) await n?.close().catch(() => {});
    for (const a of agents) await a.stop().catch(() => {});
    admin?.close();
    await server?.kill('SIGTERM');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('refresh: new shares of the same key on every server, the old ones gone, old blobs still open', async () => {
    const before = nodes.map((n) => Buffer.from(n!.keyServer.store.get('db', 1)!.value));
    const pk = JSON.parse((await tessera(['--json', 'secret', 'policy', 'show', 'db'])).stdout) as { payload: string };
    const r = await tessera(['--json', 'secret', 'policy', 'refresh', 'db', '--dealer']);
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { generation: number; public_key: string; committed: string[]; not_committed: unknown[] };
    expect(out.generation).toBe(2);
    expect(out.committed.sort()).toEqual([...KS].sort());
    expect(out.not_committed).toEqual([]);
    expect(out.public_key).toBe((JSON.parse(Buffer.from(pk.payload, 'base64url').toString('utf8')) as { commitments: string[] }).commitments[0]);
    for (let i = 0; i < 3; i++) {
      expect(sharesOf(i)).toEqual([{ policyId: 'db', epoch: 1, generation: 2 }]);
      expect(Buffer.from(nodes[i]!.keyServer.store.get('db', 1)!.value).equals(before[i]!)).toBe(false);
    }
    const opened = await unseal(blob1);
    expect(opened.status, opened.stderr).toBe(0);
    expect(opened.stdout).toBe(PLAIN1);
    const list = JSON.parse((await tessera(['--json', 'secret', 'policy', 'list'])).stdout) as { policies: { epoch: number; generation: number }[] };
    expect(list.policies).toEqual([expect.objectContaining({ epoch: 1, generation: 2, retired_at: null })]);
    // The control plane audited it.
    const recs = (await admin.call<{ records: { outcome: string }[] }>('GET', '/v1/audit?action=secret.policy.refresh')).records;
    expect(recs.some((x) => x.outcome === 'success')).toBe(true);
  }, 60_000);

  it('a refresh whose commit misses a server still unseals from the prepared share, and the next run finishes it', async () => {
    const bundle = readFileSync(join(server.adminDir, 'bundle.pem'), 'utf8');
    const adminCtx = (progress?: (line: string) => void): SecretAdmin => ({
      tls: { ca: bundle, cert: readFileSync(join(server.adminDir, 'admin.pem'), 'utf8'), key: readFileSync(join(server.adminDir, 'admin.key'), 'utf8') },
      control: admin, trusted: pemDecodeAll(bundle, 'CERTIFICATE'), ...(progress ? { progress } : {}),
    });
    // Server 3 goes away between prepare and commit.
    let stopped: Promise<void> | undefined;
    const res = await refreshEpoch(adminCtx((line) => {
      if (line.includes('prepared')) stopped = nodes[2]!.keyServer.close();
    }), 'db');
    await stopped;
    expect(res.record.generation).toBe(3);
    expect(res.commits.filter((c) => !c.ok).map((c) => c.spiffeId)).toEqual([KS[2]]);
    // Back up: it holds generation 2 and has 3 prepared; with server 1 down it must answer generation 3.
    await startNode(2);
    expect(sharesOf(2)).toEqual([{ policyId: 'db', epoch: 1, generation: 2, pending: 3 }]);
    await nodes[0]!.keyServer.close();
    const opened = await unseal(blob1);
    expect(opened.status, opened.stderr).toBe(0);
    expect(opened.stdout).toBe(PLAIN1);
    await startNode(0);
    // The next refresh commits server 3 first, then moves everyone to generation 4.
    const r = await tessera(['--json', 'secret', 'policy', 'refresh', 'db', '--dealer']);
    expect(r.status, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { generation: number }).generation).toBe(4);
    for (let i = 0; i < 3; i++) expect(sharesOf(i)).toEqual([{ policyId: 'db', epoch: 1, generation: 4 }]);
    expect((await unseal(blob1)).stdout).toBe(PLAIN1);
  }, 90_000);

  it('rotate: a new epoch for new seals; blobs of the old epoch still open', async () => {
    const r = await tessera(['--json', 'secret', 'policy', 'rotate', 'db', '--dealer']);
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { epoch: number; previous_epoch: number; t: number; n: number };
    expect([out.epoch, out.previous_epoch, out.t, out.n]).toEqual([2, 1, 2, 3]);
    for (let i = 0; i < 3; i++) expect(sharesOf(i).map((s) => s.epoch).sort()).toEqual([1, 2]);
    const blob2 = (await tessera(['secret', 'seal', '--policy', 'db'], PLAIN2)).stdout;
    const parsed = JSON.parse((await tessera(['--json', 'secret', 'policy', 'show', 'db'])).stdout) as { payload: string };
    expect((JSON.parse(Buffer.from(parsed.payload, 'base64url').toString('utf8')) as { epoch: number }).epoch).toBe(2);
    expect((await unseal(blob2)).stdout).toBe(PLAIN2);
    expect((await unseal(blob1)).stdout).toBe(PLAIN1);
    writeFileSync(join(dir, 'blob2'), blob2);
    // An allowed agent re-seals an old blob under the new epoch without the plaintext leaving the process.
    const resealed = await tessera(['secret', 'reseal', '--agent-dir', appDir], blob1);
    expect(resealed.status, resealed.stderr).toBe(0);
    expect(resealed.stderr).toContain('from key epoch 1 to 2');
    expect(resealed.stdout).not.toContain(PLAIN1);
    writeFileSync(join(dir, 'blob1-resealed'), resealed.stdout);
    expect((await unseal(resealed.stdout)).stdout).toBe(PLAIN1);
  }, 60_000);

  it('retire: the old epoch\'s shares are deleted and its blobs refused with a stable code; the only active epoch needs --force', async () => {
    // An agent that keeps a pool (as `agent --unseal` does) has epoch 1's record cached.
    const pool = new KeyServerPool();
    const agentTls = { certPem: readFileSync(join(appDir, 'svid.pem'), 'utf8'), keyPem: readFileSync(join(appDir, 'svid.key'), 'utf8'), bundlePem: readFileSync(join(appDir, 'bundle.pem'), 'utf8') };
    const app = svidClient(appDir, server.url);
    const viaPool = (text: string): Promise<Buffer> => unsealSealedText({ text, call: (m, p, b) => app.call(m, p, b), tls: agentTls, trustedCas: pemDecodeAll(agentTls.bundlePem, 'CERTIFICATE'), pool }).then((r) => r.plaintext);
    expect((await viaPool(blob1)).toString('utf8')).toBe(PLAIN1);
    const r = await tessera(['--json', 'secret', 'policy', 'retire', 'db', '--epoch', '1']);
    expect(r.status, r.stderr + r.stdout).toBe(0);
    expect((JSON.parse(r.stdout) as { retired: boolean; deleted: string[] }).deleted.sort()).toEqual([...KS].sort());
    for (let i = 0; i < 3; i++) expect(sharesOf(i).map((s) => s.epoch)).toEqual([2]);
    // The cached record is found out of date and fetched again: the stable code, not a bare threshold error.
    await expect(viaPool(blob1)).rejects.toMatchObject({ code: 'TESSERA_SECRET_EPOCH_RETIRED' });
    pool.close();
    app.close();
    const refused = await unseal(blob1);
    expect(refused.status).not.toBe(0);
    expect(refused.stdout).toBe('');
    expect(refused.stderr).toContain('TESSERA_SECRET_EPOCH_RETIRED');
    const shown = await tessera(['secret', 'policy', 'show', 'db', '--epoch', '1']);
    expect(shown.stderr).toContain('TESSERA_SECRET_EPOCH_RETIRED');
    const again = await tessera(['--json', 'secret', 'policy', 'retire', 'db', '--epoch', '1']);
    expect(again.status, again.stderr).toBe(0);
    expect((JSON.parse(again.stdout) as { retired: boolean }).retired).toBe(false);
    expect((await unseal(readFileSync(join(dir, 'blob2'), 'utf8'))).stdout).toBe(PLAIN2);
    expect((await unseal(readFileSync(join(dir, 'blob1-resealed'), 'utf8'))).stdout).toBe(PLAIN1);
    const lone = await tessera(['secret', 'policy', 'retire', 'db', '--epoch', '2']);
    expect(lone.status).toBe(2);
    expect(lone.stderr).toContain('TESSERA_CONFIG_INVALID');
    expect(lone.stderr).toContain('only active key epoch');
    for (let i = 0; i < 3; i++) expect(sharesOf(i).map((s) => s.epoch)).toEqual([2]);
  }, 60_000);

  it('the lifecycle commands refuse bad input with a stable code and exit status, and change nothing', async () => {
    const before = JSON.stringify(nodes.map((_, i) => sharesOf(i)));
    const cases: [string[], number, string][] = [
      [['secret', 'policy', 'rotate', 'nosuch'], 1, 'TESSERA_NOT_FOUND'],
      [['secret', 'policy', 'rotate', 'Bad/Name'], 2, 'TESSERA_CONFIG_INVALID'],
      [['secret', 'policy', 'rotate', 'db', '--threshold', '4'], 2, 'TESSERA_CONFIG_INVALID'],
      [['secret', 'policy', 'rotate', 'db', '--servers', 'http://x:1@spiffe://td/a'], 2, 'TESSERA_CONFIG_INVALID'],
      [['secret', 'policy', 'refresh', 'nosuch'], 1, 'TESSERA_NOT_FOUND'],
      [['secret', 'policy', 'refresh', 'db', '--epoch', 'x'], 2, 'TESSERA_CONFIG_INVALID'],
      [['secret', 'policy', 'refresh', 'db', '--epoch', '1'], 1, 'TESSERA_SECRET_EPOCH_RETIRED'],
      [['secret', 'policy', 'retire', 'db', '--epoch', '99'], 1, 'TESSERA_NOT_FOUND'],
      [['secret', 'policy', 'retire', 'db', '--epoch', '-1'], 2, 'TESSERA_CONFIG_INVALID'],
      [['secret', 'policy', 'retire', '.db', '--epoch', '1'], 2, 'TESSERA_CONFIG_INVALID'],
      [['secret', 'reseal', '--agent-dir', appDir], 1, 'TESSERA_SECRET_BLOB_INVALID'],
      // Epoch 1 is retired: the key servers no longer hold it and take new shares, the control plane
      // refuses the record, and the shares are taken back (the check after the loop).
      [['secret', 'policy', 'create', 'db', '--dealer', '--threshold', '2', '--servers', servers, '--epoch', '1'], 1, 'TESSERA_CONFLICT'],
    ];
    for (const [args, status, code] of cases) {
      const r = await tessera(args, 'tessera-sealed:v1:not-a-blob');
      expect([r.status, r.stderr.includes(code)], `${args.join(' ')}: ${r.stderr}`).toEqual([status, true]);
      expect(r.stdout).toBe('');
    }
    expect(JSON.stringify(nodes.map((_, i) => sharesOf(i)))).toBe(before);
  }, 60_000);

  it('a create that a key server refuses publishes nothing and takes back the shares already installed', async () => {
    // Server 3 already holds a share for db2 epoch 1 (of another key): it refuses the new one.
    const otherKey = split(randomScalar(), 2, 3);
    nodes[2]!.keyServer.store.put({ policyId: 'db2', epoch: 1, t: 2, n: 3, index: 3, value: otherKey.shares[2]!.value, commitments: otherKey.commitments });
    const r = await tessera(['secret', 'policy', 'create', 'db2', '--dealer', '--threshold', '2', '--servers', servers]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('TESSERA_SECRET_SHARE_INVALID');
    expect(r.stderr).toContain(`${KS[2]!}: TESSERA_CONFLICT`);
    expect(r.stderr).toContain('the shares already installed were removed');
    for (const i of [0, 1]) expect(sharesOf(i).filter((s) => s.policyId === 'db2')).toEqual([]);
    // The share that was there before is left alone.
    expect(sharesOf(2).filter((s) => s.policyId === 'db2')).toHaveLength(1);
    expect((await admin.call<{ policies: { id: string }[] }>('GET', '/v1/secret-policies')).policies.map((p) => p.id)).not.toContain('db2');
    // An unreachable server: the same.
    const dead = `https://127.0.0.1:${await freePort()}@spiffe://${TD}/keyserver/9`;
    const r2 = await tessera(['secret', 'policy', 'create', 'db3', '--dealer', '--threshold', '2', '--servers', `${servers.split(',').slice(0, 2).join(',')},${dead}`]);
    expect(r2.status).toBe(1);
    expect(r2.stderr).toContain('TESSERA_SERVER_UNREACHABLE');
    for (const i of [0, 1]) expect(sharesOf(i).filter((s) => s.policyId === 'db3')).toEqual([]);
  }, 60_000);

  it('a refresh the control plane refuses (another refresh won) drops the prepared shares on every server', async () => {
    const bundle = readFileSync(join(server.adminDir, 'bundle.pem'), 'utf8');
    const shown = await admin.call<{ generation: number; signed: { payload: string } }>('GET', '/v1/secret-policies/db?epoch=2');
    const rec = JSON.parse(Buffer.from(shown.signed.payload, 'base64url').toString('utf8')) as { commitments: string[] };
    // The control plane as this refresh sees it: just before its publish, someone else publishes the next generation.
    const racing = {
      call: async (method: string, path: string, body?: unknown): Promise<unknown> => {
        if (method === 'POST' && path.endsWith('/refresh')) {
          await admin.call('POST', path, { generation: shown.generation + 1, commitments: [rec.commitments[0], Buffer.from(baseMul(randomScalar())).toString('base64url')] });
        }
        return admin.call(method, path, body);
      },
    } as unknown as ApiClient;
    const ctx: SecretAdmin = {
      tls: { ca: bundle, cert: readFileSync(join(server.adminDir, 'admin.pem'), 'utf8'), key: readFileSync(join(server.adminDir, 'admin.key'), 'utf8') },
      control: racing, trusted: pemDecodeAll(bundle, 'CERTIFICATE'),
    };
    await expect(refreshEpoch(ctx, 'db', 2)).rejects.toMatchObject({ code: 'TESSERA_CONFLICT' });
    for (let i = 0; i < 3; i++) expect(sharesOf(i).find((x) => x.epoch === 2)).toEqual({ policyId: 'db', epoch: 2, generation: shown.generation });
  }, 60_000);
});
