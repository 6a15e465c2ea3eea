import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, freePort, ServerProcess, waitFor } from './support/process.js';

interface Run { status: number | null; stdout: string; stderr: string; json: Record<string, any> }

describe('tessera CLI against a real control plane', () => {
  let dir: string;
  let server: ServerProcess;
  const env = (): NodeJS.ProcessEnv => ({ ...process.env, TESSERA_ADMIN_DIR: server.adminDir });

  function tessera(args: string[], extraEnv: NodeJS.ProcessEnv = {}): Run {
    const r = spawnSync(process.execPath, [CLI, ...args], { env: { ...env(), ...extraEnv }, encoding: 'utf8', timeout: 20_000 });
    let json: Record<string, unknown> = {};
    try { json = JSON.parse(r.stdout) as Record<string, unknown>; } catch { /* human output */ }
    return { status: r.status, stdout: r.stdout, stderr: r.stderr, json };
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-cli-'));
    server = new ServerProcess(join(dir, 'server'), await freePort(), ['--trust-domain', 'example.org']);
    await server.start();
  });
  afterAll(async () => {
    await server.stop(false);
    rmSync(dir, { recursive: true, force: true });
  });

  it('helps', () => {
    const r = tessera(['--help']);
    expect(r.status).toBe(0);
    for (const c of ['server', 'agent', 'entry', 'token', 'ca', 'audit', 'svid']) expect(r.stdout).toContain(c);
    expect(tessera(['token', 'create', '--help']).stdout).toContain('--ttl');
  });

  it('manages entries with --json output and stable error codes', () => {
    const created = tessera(['entry', 'create', '--json', '--spiffe-id', 'spiffe://example.org/billing/api', '--app', 'billing', '--site', 'edge-7', '--compliance', 'pci', '--selector', 'unix:uid:1000', '--x509-ttl', '30m']);
    expect(created.status).toBe(0);
    expect(created.json).toMatchObject({ spiffe_id: 'spiffe://example.org/billing/api', attributes: { app: 'billing', site: 'edge-7', compliance: 'pci' }, selectors: ['unix:uid:1000'], x509_ttl_seconds: 1800 });
    const id = created.json.id as string;
    expect(tessera(['entry', 'list', '--json']).json.entries.map((e: { id: string }) => e.id)).toContain(id);
    expect(tessera(['entry', 'show', 'spiffe://example.org/billing/api', '--json']).json.id).toBe(id);
    expect(tessera(['entry', 'show', id]).stdout).toContain('spiffe://example.org/billing/api');

    const dup = tessera(['entry', 'create', '--json', '--spiffe-id', 'spiffe://example.org/billing/api']);
    expect(dup.status).toBe(1);
    expect(dup.json.error.code).toBe('TESSERA_CONFLICT');
    const bad = tessera(['entry', 'create', '--spiffe-id', 'spiffe://Example.org/x']);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toContain('TESSERA_SPIFFE_ID_INVALID');

    expect(tessera(['entry', 'delete', id, '--json']).json.deleted).toBe(id);
    expect(tessera(['entry', 'show', id, '--json']).json.error.code).toBe('TESSERA_ENTRY_NOT_FOUND');
  });

  it('exits 2 on usage errors and missing credentials, 3 when the server is unreachable', () => {
    expect(tessera(['entry', 'frobnicate']).status).toBe(2);
    expect(tessera(['token', 'create', '--entry', 'x', '--ttl', 'soon']).status).toBe(2);
    const noCreds = tessera(['entry', 'list', '--json'], { TESSERA_ADMIN_DIR: join(dir, 'nope') });
    expect(noCreds.status).toBe(2);
    expect(noCreds.json.error.code).toBe('TESSERA_CREDENTIAL_MISSING');
    const down = tessera(['entry', 'list', '--json', '--server', 'https://127.0.0.1:1']);
    expect(down.status).toBe(3);
    expect(down.json.error.code).toBe('TESSERA_SERVER_UNREACHABLE');
  });

  it('bootstraps an agent process from a token, never prints the token, refuses a replay with exit 4', async () => {
    tessera(['entry', 'create', '--spiffe-id', 'spiffe://example.org/web', '--app', 'web', '--site', 'cloud-eu', '--apikey-max-ttl', '2h']);
    // Derived credentials are default deny: web may hold JWT-SVIDs for payments and orders:read API keys.
    const policyDir = join(dir, 'policies');
    mkdirSync(policyDir, { recursive: true });
    writeFileSync(join(policyDir, 'derive.cedar'), `permit (principal == Tessera::Workload::"spiffe://example.org/web", action == Tessera::Action::"credential:derive", resource)
when { context.audience == "payments" || context.scope == "orders:read" };`);
    expect(tessera(['policy', 'apply', '-f', policyDir]).status).toBe(0);
    const tok = tessera(['token', 'create', '--entry', 'spiffe://example.org/web', '--ttl', '2m', '--json']);
    expect(tok.status).toBe(0);
    const token = tok.json.token as string;
    expect(token).toMatch(/^tjt_/);

    const agentDir = join(dir, 'agent-web');
    const child = spawn(process.execPath, [CLI, 'agent', '--server', server.url, '--data-dir', agentDir, '--join-token', token, '--trust-bundle', join(server.dataDir, 'bundle.pem')], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
    await waitFor('agent to join', () => out.includes('joined'), 15_000);
    expect(existsSync(join(agentDir, 'svid.pem'))).toBe(true);

    // A JWT-SVID and an API key derived with the agent's SVID.
    const jwt = tessera(['svid', 'jwt', '--agent-dir', agentDir, '--audience', 'payments', '--json']);
    expect(jwt.status).toBe(0);
    expect(jwt.json.spiffe_id).toBe('spiffe://example.org/web');
    const key = tessera(['svid', 'apikey', '--agent-dir', agentDir, '--scope', 'orders:read', '--json']);
    expect(key.json.api_key).toMatch(/^tak_/);
    // Outside policy, or beyond the entry's bound: refused with a code, exit 1.
    const outside = tessera(['svid', 'jwt', '--agent-dir', agentDir, '--audience', 'billing', '--json']);
    expect([outside.status, outside.json.error.code]).toEqual([1, 'TESSERA_CREDENTIAL_DENIED']);
    const tooLong = tessera(['svid', 'apikey', '--agent-dir', agentDir, '--scope', 'orders:read', '--ttl', '3h', '--json']);
    expect([tooLong.status, tooLong.json.error.code]).toEqual([1, 'TESSERA_CREDENTIAL_DENIED']);
    // apikey list / revoke: the admin, and the workload for its own keys.
    const listed = tessera(['apikey', 'list', '--owner', 'spiffe://example.org/web', '--json']);
    expect(listed.json.api_keys).toEqual([expect.objectContaining({ id: key.json.id, state: 'active', scopes: ['orders:read'] })]);
    expect(tessera(['apikey', 'list', '--agent-dir', agentDir]).stdout).toContain(key.json.id as string);
    const revoked = tessera(['apikey', 'revoke', key.json.id as string, '--reason', 'rotated', '--json']);
    expect(revoked.json).toMatchObject({ id: key.json.id, state: 'revoked', revoked_reason: 'rotated' });
    const unknown = tessera(['apikey', 'revoke', 'ffffffffffffffff', '--json']);
    expect([unknown.status, unknown.json.error.code]).toEqual([1, 'TESSERA_APIKEY_NOT_FOUND']);
    expect(tessera(['apikey', 'revoke', 'nope', '--json']).json.error.code).toBe('TESSERA_BAD_REQUEST');

    await new Promise<void>((r) => { child.once('exit', () => r()); child.kill('SIGTERM'); });

    const replay = spawnSync(process.execPath, [CLI, 'agent', '--server', server.url, '--data-dir', join(dir, 'agent-thief'), '--join-token', token, '--trust-bundle', join(server.dataDir, 'bundle.pem')], { encoding: 'utf8', timeout: 20_000 });
    expect(replay.status).toBe(4);
    expect(replay.stderr).toContain('TESSERA_TOKEN_INVALID');

    // Nothing secret in any output: not the token, not the API key, not a private key.
    const audit = tessera(['audit', 'list', '--limit', '1000', '--json']);
    for (const text of [out, replay.stdout, replay.stderr, server.output, audit.stdout]) {
      expect(text).not.toContain(token);
      expect(text).not.toContain(token.slice(4, 20));
      expect(text).not.toContain(key.json.api_key as string);
      expect(text).not.toContain('PRIVATE KEY');
    }
    const denied = audit.json.records.filter((r: { action: string; outcome: string }) => r.action === 'svid.join' && r.outcome === 'denied');
    expect(denied).toHaveLength(1);
    expect(denied[0].code).toBe('TESSERA_TOKEN_INVALID');
    expect(readFileSync(join(agentDir, 'svid.key'), 'utf8')).toContain('PRIVATE KEY');
  }, 90_000);

  it('lists and rotates CAs', () => {
    const before = tessera(['ca', 'list', '--json']);
    expect(before.json.authorities).toHaveLength(1);
    const rot = tessera(['ca', 'rotate', '--grace', '1h', '--json']);
    expect(rot.status).toBe(0);
    expect(rot.json.prepared.state).toBe('prepared');
    expect(tessera(['ca', 'list', '--json']).json.authorities).toHaveLength(2);
    const again = tessera(['ca', 'rotate', '--json']);
    expect(again.json.error.code).toBe('TESSERA_CA_ROTATION_IN_PROGRESS');
  });
});

describe('tessera secret policy create', () => {
  it('refuses a threshold of 1 (one key server could decrypt alone) with exit 2', () => {
    const r = spawnSync(process.execPath, [CLI, 'secret', 'policy', 'create', 'db', '--threshold', '1', '--servers', 'https://127.0.0.1:1@spiffe://tessera.test/ks/1', '--json'], { encoding: 'utf8', timeout: 20_000 });
    expect(r.status).toBe(2);
    expect(JSON.parse(r.stdout).error.code).toBe('TESSERA_CONFIG_INVALID');
  });
});
