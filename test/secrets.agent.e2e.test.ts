/**
 * `tessera agent --unseal SEALED=OUT`: the agent opens a sealed file for its app once it has its
 * identity. A control plane (child process), three key servers in this process (2-of-3 policy, Cedar
 * secret:unseal for compliance == "pci"), then two agents as child processes: the pci agent writes
 * the plaintext 0600 in a 0700 directory and logs only the policy and path; the other agent is
 * refused, writes nothing, retries and keeps running. Then a pci identity is revoked: every key
 * server refuses its unseal within a second.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiClient } from '../src/common/api-client.js';
import { unsealSealedText } from '../src/agent/secrets/unseal.js';
import { TesseraError } from '../src/core/errors.js';
import { pemDecodeAll } from '../src/core/x509.js';
import { makeCsrPem } from './support/server.js';
import { parseUnsealSpec } from '../src/agent/secrets/files.js';
import { startKeyServerNode, type KeyServerNode } from '../src/keyserver/node.js';
import { silentLogger } from '../src/core/log.js';
import { CLI, freePort, ServerProcess, waitFor, runTessera } from './support/process.js';

const TD = 'tessera.test';
const PCI = `spiffe://${TD}/shop/orders`;
const OTHER = `spiffe://${TD}/shop/frontend`;
const KS = [1, 2, 3].map((i) => `spiffe://${TD}/keyserver/${i}`);
const PLAIN = 'postgres://orders:agent-file-s3cret@db.internal/orders';
const CEDAR = `
@id("pci-unseal-db")
permit (
  principal,
  action == Tessera::Action::"secret:unseal",
  resource == Tessera::Workload::"spiffe://${TD}/tessera/secret/db"
) when { principal has compliance && principal.compliance == "pci" };
`;

interface Proc { child: ChildProcess; out: string }

describe('agent --unseal: sealed files opened for the app', () => {
  let dir: string;
  let server: ServerProcess;
  let admin: ApiClient;
  const nodes: KeyServerNode[] = [];
  const procs: Proc[] = [];
  let sealedFile: string;

  function tessera(args: string[], input = ''): Promise<{ status: number | null; stdout: string; stderr: string }> {
    return runTessera(args, { env: { TESSERA_ADMIN_DIR: server.adminDir }, input });
  }


  async function token(spiffeId: string): Promise<string> {
    return (await admin.call<{ token: string }>('POST', '/v1/tokens', { entry_id: spiffeId, ttl_seconds: 120 })).token;
  }

  async function agentProcess(name: string, spiffeId: string, unseal: string): Promise<Proc> {
    const child = spawn(process.execPath, [CLI, '--json', '--server', server.url, 'agent', '--data-dir', join(dir, name), '--join-token', await token(spiffeId),
      '--trust-bundle', join(server.dataDir, 'bundle.pem'), '--unseal', unseal], { stdio: ['ignore', 'pipe', 'pipe'] });
    const p: Proc = { child, out: '' };
    child.stdout!.on('data', (d: Buffer) => { p.out += d.toString(); });
    child.stderr!.on('data', (d: Buffer) => { p.out += d.toString(); });
    procs.push(p);
    return p;
  }

  beforeAll(async () => {
    expect(existsSync(CLI), 'run `npx tsc -p tsconfig.json` first: the test runs dist/src/cli/main.js').toBe(true);
    dir = mkdtempSync(join(tmpdir(), 'tessera-secrets-agent-e2e-'));
    server = new ServerProcess(join(dir, 'server'), await freePort(), ['--trust-domain', TD]);
    await server.start();
    admin = server.admin();
    for (const id of KS) await admin.call('POST', '/v1/entries', { spiffe_id: id, attributes: { app: 'keyserver' } });
    await admin.call('POST', '/v1/entries', { spiffe_id: PCI, attributes: { app: 'orders', compliance: 'pci' } });
    await admin.call('POST', '/v1/entries', { spiffe_id: OTHER, attributes: { app: 'frontend' } });
    for (let i = 0; i < 3; i++) {
      nodes.push(await startKeyServerNode({
        serverUrl: server.url, dataDir: join(dir, `ks${i + 1}`), listen: { host: '127.0.0.1', port: 0 }, log: silentLogger,
        joinToken: await token(KS[i]!), trustBundleFile: join(server.dataDir, 'bundle.pem'), env: {}, policyWatchSeconds: 5,
      }));
    }
    const applied = await admin.call<{ bundle_version: number }>('POST', '/v1/policies', { files: { 'secrets.cedar': CEDAR }, reason: 'secret:unseal for pci' });
    await waitFor('key servers to enforce the policy', () => nodes.every((n) => n.sidecar.enforcer.version >= applied.bundle_version), 20_000);
    const servers = nodes.map((n, i) => `${n.keyServer.url}@${KS[i]!}`).join(',');
    const created = await tessera(['secret', 'policy', 'create', 'db', '--threshold', '2', '--servers', servers]);
    expect(created.status, created.stderr).toBe(0);
    sealedFile = join(dir, 'db.sealed');
    const sealed = await tessera(['secret', 'seal', '--policy', 'db', '--out', sealedFile], PLAIN);
    expect(sealed.status, sealed.stderr).toBe(0);
  }, 90_000);

  afterAll(async () => {
    for (const p of procs) {
      if (p.child.exitCode === null && p.child.signalCode === null) {
        await new Promise<void>((res) => { p.child.once('exit', () => res()); p.child.kill('SIGTERM'); setTimeout(() => p.child.kill('SIGKILL'), 5000).unref(); });
      }
    }
    for (const n of nodes) await n.close().catch(() => {});
    admin?.close();
    await server?.kill('SIGTERM');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('parses SEALED=OUTPUT specs', () => {
    expect(parseUnsealSpec('/a/b.sealed=/run/x')).toEqual({ sealedFile: '/a/b.sealed', outputPath: '/run/x' });
    expect(() => parseUnsealSpec('nofile')).toThrow(/SEALED_FILE=OUTPUT_PATH/);
    expect(() => parseUnsealSpec('=x')).toThrow();
    expect(() => parseUnsealSpec('x=')).toThrow();
  });

  it('the pci agent writes the plaintext 0600 in a 0700 directory and logs only the policy and path', async () => {
    const out = join(dir, 'pci-run', 'secrets', 'db-url');
    const p = await agentProcess('pci', PCI, `${sealedFile}=${out}`);
    await waitFor('the secret file', () => {
      if (p.child.exitCode !== null) throw new Error(`agent exited: ${p.out}`);
      return p.out.includes('secret opened');
    }, 30_000);
    expect(readFileSync(out, 'utf8')).toBe(PLAIN);
    expect(statSync(out).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'pci-run', 'secrets')).mode & 0o777).toBe(0o700);
    const line = p.out.split('\n').find((l) => l.includes('secret opened'))!;
    const rec = JSON.parse(line) as Record<string, unknown>;
    expect(rec.policy).toBe('db');
    expect(rec.output).toBe(out);
    expect(p.out).not.toContain(PLAIN);
    expect(p.out).not.toContain('secret unseal failed');
    expect(p.child.exitCode).toBeNull();

    // The key is rotated and the file re-sealed under the new epoch: the agent opens it again.
    const rotated = await tessera(['secret', 'policy', 'rotate', 'db']);
    expect(rotated.status, rotated.stderr).toBe(0);
    const PLAIN2 = `${PLAIN}-rotated`;
    const resealed = await tessera(['secret', 'seal', '--policy', 'db', '--out', sealedFile], PLAIN2);
    expect(resealed.status, resealed.stderr).toBe(0);
    await waitFor('the re-opened secret file', () => p.out.includes('secret re-opened'), 20_000);
    expect(readFileSync(out, 'utf8')).toBe(PLAIN2);
    const again = JSON.parse(p.out.split('\n').find((l) => l.includes('secret re-opened'))!) as Record<string, unknown>;
    expect(again.epoch).toBe(2);
    expect(p.out).not.toContain(PLAIN2);
  }, 60_000);

  it('a sealed file that appears while the agent backs off is opened at once, not at the next retry', async () => {
    const later = join(dir, 'later', 'db.sealed');
    const out = join(dir, 'late-run', 'db-url');
    const p = await agentProcess('late', PCI, `${later}=${out}`);
    const failures = (): Record<string, unknown>[] => p.out.split('\n').filter((l) => l.includes('secret unseal failed')).map((l) => JSON.parse(l) as Record<string, unknown>);
    // Retries after 1, 2, 4, 8 s: wait until the agent is in its 8 s wait (the fourth failure).
    await waitFor('four failed attempts', () => {
      if (p.child.exitCode !== null) throw new Error(`agent exited: ${p.out}`);
      return failures().length >= 4;
    }, 30_000);
    expect(failures()[0]!.code).toBe('TESSERA_SECRET_BLOB_INVALID');
    expect(failures()[3]!.retry_in_ms).toBe(8000);
    const t0 = Date.now();
    mkdirSync(join(dir, 'later'));
    copyFileSync(sealedFile, later);
    // Seen by the 2 s poll and opened at once, well before the retry 8 s after the failure.
    await waitFor('the secret file', () => p.out.includes('secret opened'), 15_000);
    expect(Date.now() - t0).toBeLessThan(5500);
    expect(readFileSync(out, 'utf8')).toContain(PLAIN);
  }, 60_000);

  it('the refused agent writes nothing, logs the code, retries and keeps running', async () => {
    const out = join(dir, 'other-run', 'db-url');
    const p = await agentProcess('other', OTHER, `${sealedFile}=${out}`);
    await waitFor('two failed attempts', () => {
      if (p.child.exitCode !== null) throw new Error(`agent exited: ${p.out}`);
      return p.out.split('\n').filter((l) => l.includes('secret unseal failed')).length >= 2;
    }, 30_000);
    const failed = p.out.split('\n').filter((l) => l.includes('secret unseal failed')).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(failed[0]!.code).toMatch(/TESSERA_SECRET_THRESHOLD|TESSERA_FORBIDDEN/);
    expect(p.out).toContain('TESSERA_FORBIDDEN');
    expect(existsSync(out)).toBe(false);
    expect(p.out).not.toContain('secret opened');
    expect(p.child.exitCode).toBeNull();
    // Still serving as an agent: the SVID is on disk and it stops cleanly on SIGTERM.
    expect(existsSync(join(dir, 'other', 'svid.pem'))).toBe(true);
    const code = await new Promise<number | null>((res) => { p.child.once('exit', (c) => res(c)); p.child.kill('SIGTERM'); });
    expect(code).toBe(0);
  }, 40_000);

  it('the key servers refuse the unseal of a revoked identity (the revocation list reaches them within a second)', async () => {
    const id = `spiffe://${TD}/shop/orders-2`;
    await admin.call('POST', '/v1/entries', { spiffe_id: id, attributes: { app: 'orders', compliance: 'pci' } });
    const bundlePem = readFileSync(join(server.dataDir, 'bundle.pem'), 'utf8');
    const csr = makeCsrPem();
    const anon = new ApiClient(server.url, { ca: bundlePem });
    const joined = await anon.call<{ svid_pem: string }>('POST', '/v1/agent/join', { join_token: await token(id), csr: csr.pem }).finally(() => anon.close());
    await waitFor('the key servers to know the new entry', () => nodes.every((n) => n.sidecar.enforcer.peerStatus(id).ok), 5_000);
    // The signed record is fetched as the admin, so that only the key servers' check is exercised.
    const unseal = () => unsealSealedText({
      text: readFileSync(sealedFile, 'utf8'), call: (method, path, body) => admin.call(method, path, body),
      tls: { certPem: joined.svid_pem, keyPem: csr.keyPem, bundlePem }, trustedCas: pemDecodeAll(bundlePem, 'CERTIFICATE'),
    });
    expect((await unseal()).plaintext.toString()).toContain('agent-file-s3cret');

    const since = Date.now();
    const revoked = await admin.call<{ bundle_version: number }>('POST', `/v1/entries/${encodeURIComponent(id)}/revoke`, { reason: 'host compromised' });
    await waitFor('every key server to hold the revocation', () => nodes.every((n) => n.sidecar.enforcer.version >= revoked.bundle_version), 1_000, 10);
    console.log(`revoke → all three key servers hold the list after ${Date.now() - since} ms`);
    const err = await unseal().then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(TesseraError);
    expect((err as TesseraError).code).toBe('TESSERA_SECRET_THRESHOLD');
    const failures = (err as TesseraError & { failures?: { code: string }[] }).failures ?? [];
    expect(failures.length).toBeGreaterThanOrEqual(2);
    expect(failures.every((f) => f.code === 'TESSERA_FORBIDDEN')).toBe(true);
    for (const n of nodes) expect(n.sidecar.enforcer.peerStatus(id)).toEqual({ ok: false, reason: 'revoked' });
  }, 30_000);

  it('the key servers refuse the unseals of a quarantined identity, and serve it again once released (issue 11)', async () => {
    const id = `spiffe://${TD}/shop/orders-3`;
    await admin.call('POST', '/v1/entries', { spiffe_id: id, attributes: { app: 'orders', compliance: 'pci' } });
    const bundlePem = readFileSync(join(server.dataDir, 'bundle.pem'), 'utf8');
    const csr = makeCsrPem();
    const anon = new ApiClient(server.url, { ca: bundlePem });
    const joined = await anon.call<{ svid_pem: string }>('POST', '/v1/agent/join', { join_token: await token(id), csr: csr.pem }).finally(() => anon.close());
    await waitFor('the key servers to know the new entry', () => nodes.every((n) => n.sidecar.enforcer.peerStatus(id).ok), 5_000);
    const unseal = () => unsealSealedText({
      text: readFileSync(sealedFile, 'utf8'), call: (method, path, body) => admin.call(method, path, body),
      tls: { certPem: joined.svid_pem, keyPem: csr.keyPem, bundlePem }, trustedCas: pemDecodeAll(bundlePem, 'CERTIFICATE'),
    });
    expect((await unseal()).plaintext.toString()).toContain('agent-file-s3cret');

    const since = Date.now();
    const q = await admin.call<{ bundle_version: number }>('POST', `/v1/risk/${encodeURIComponent(id)}/quarantine`, { ttl_seconds: 600, reason: 'pulling unseals' });
    await waitFor('every key server to hold the quarantine', () => nodes.every((n) => n.sidecar.enforcer.version >= q.bundle_version), 1_000, 10);
    console.log(`quarantine → all three key servers hold it after ${Date.now() - since} ms`);
    for (const n of nodes) expect(n.sidecar.enforcer.peerStatus(id)).toEqual({ ok: false, reason: 'quarantined' });
    const err = await unseal().then(() => undefined, (e: unknown) => e);
    expect((err as TesseraError).code).toBe('TESSERA_SECRET_THRESHOLD');
    expect(((err as TesseraError & { failures?: { code: string }[] }).failures ?? []).every((f) => f.code === 'TESSERA_IDENTITY_QUARANTINED')).toBe(true);

    const r = await admin.call<{ bundle_version: number }>('POST', `/v1/risk/${encodeURIComponent(id)}/release`, { reason: 'checked' });
    await waitFor('every key server to hold the release', () => nodes.every((n) => n.sidecar.enforcer.version >= r.bundle_version), 1_000, 10);
    expect((await unseal()).plaintext.toString()).toContain('agent-file-s3cret');
  }, 30_000);
});
