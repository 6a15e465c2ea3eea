/**
 * Issue 9, "smaller things found on the way", through the real `tessera` command (dist/) against a
 * real control plane: `id validate`, `svid validate-jwt` (offline with --bundle, and online with the
 * admin credential or an agent's SVID), the trust-domain ID refused as needing a path, and a
 * listen address in use as TESSERA_ADDRESS_IN_USE with exit status 2 for every process.
 */
import { spawn, spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleToJwks } from '../src/core/bundle.js';
import { signJwtSvid, type JwtSigningKey } from '../src/core/jwt-svid.js';
import { CLI, freePort, ServerProcess, waitFor } from './support/process.js';

interface Run { status: number | null; stdout: string; stderr: string; json: Record<string, any> }

let dir: string;
let server: ServerProcess;

function tessera(args: string[], opts: { input?: string } = {}): Run {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    env: { ...process.env, TESSERA_ADMIN_DIR: server.adminDir }, encoding: 'utf8', timeout: 30_000, ...(opts.input !== undefined ? { input: opts.input } : {}),
  });
  let json: Record<string, unknown> = {};
  try { json = JSON.parse(r.stdout) as Record<string, unknown>; } catch { /* human output */ }
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, json };
}

/** A TCP port held by this process for the duration of `fn`. */
async function withHeldPort<T>(fn: (port: number) => T | Promise<T>): Promise<T> {
  const holder: Server = createServer();
  await new Promise<void>((r) => holder.listen(0, '127.0.0.1', r));
  try {
    return await fn((holder.address() as AddressInfo).port);
  } finally {
    await new Promise<void>((r) => holder.close(() => r()));
  }
}

/** Registers `id`, joins an agent process with a token, stops it: its data directory holds an SVID. */
async function joinedAgent(id: string, name: string): Promise<string> {
  expect(tessera(['entry', 'create', '--spiffe-id', id, '--selector', `unix:uid:${process.getuid!()}`]).status).toBe(0);
  const token = tessera(['token', 'create', '--entry', id, '--json']).json.token as string;
  const agentDir = join(dir, name);
  const child = spawn(process.execPath, [CLI, 'agent', '--server', server.url, '--data-dir', agentDir, '--join-token', token, '--trust-bundle', join(server.dataDir, 'bundle.pem')], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
  try {
    await waitFor('agent to join', () => out.includes('joined'), 20_000);
  } finally {
    await new Promise<void>((r) => { child.once('exit', () => r()); child.kill('SIGTERM'); });
  }
  return agentDir;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tessera-checks-'));
  server = new ServerProcess(join(dir, 'server'), await freePort(), ['--trust-domain', 'example.org']);
  await server.start();
});

afterAll(async () => {
  await server?.stop(false);
  rmSync(dir, { recursive: true, force: true });
});

describe('tessera id validate', () => {
  it('prints the trust domain and path of a valid ID, exit 0', () => {
    const r = tessera(['id', 'validate', 'spiffe://example.org/shop/orders', '--json']);
    expect(r.status).toBe(0);
    expect(r.json).toEqual({ valid: true, spiffe_id: 'spiffe://example.org/shop/orders', trust_domain: 'example.org', path: '/shop/orders', workload: true });
    const human = tessera(['id', 'validate', 'spiffe://example.org/shop/orders']);
    expect(human.stdout).toContain('trust domain  example.org');
    expect(human.stdout).toContain('path          /shop/orders');
    // The trust-domain ID is a valid SPIFFE ID, but it names no workload.
    expect(tessera(['id', 'validate', 'spiffe://example.org', '--json']).json).toMatchObject({ valid: true, path: '', workload: false });
  });

  it('refuses invalid IDs with TESSERA_SPIFFE_ID_INVALID and the rule broken, exit 1; a missing argument is exit 2', () => {
    const cases: [string, RegExp][] = [
      ['spiffe://Example.org/x', /lowercase/],
      ['spiffe://example.org/a//b', /empty segments/],
      ['spiffe://example.org:443/x', /port/],
      ['', /empty/],
    ];
    for (const [id, why] of cases) {
      const r = tessera(['id', 'validate', id, '--json']);
      expect(r.status, id.slice(0, 40)).toBe(1);
      expect(r.json.error.code).toBe('TESSERA_SPIFFE_ID_INVALID');
      expect(r.json.error.message).toMatch(why);
    }
    const human = tessera(['id', 'validate', 'spiffe://example.org/a b']);
    expect(human.status).toBe(1);
    expect(human.stderr).toContain('TESSERA_SPIFFE_ID_INVALID');
    expect(tessera(['id', 'validate']).status).toBe(2);
  });
});

describe('tessera entry create', () => {
  it('says that the trust-domain ID needs a path (not that it is reserved)', () => {
    const r = tessera(['entry', 'create', '--spiffe-id', 'spiffe://example.org', '--json']);
    expect(r.status).toBe(1);
    expect(r.json.error.code).toBe('TESSERA_SPIFFE_ID_INVALID');
    expect(r.json.error.message).toMatch(/needs a path/);
    expect(tessera(['entry', 'create', '--spiffe-id', 'spiffe://example.org/tessera/x', '--json']).json.error.code).toBe('TESSERA_SPIFFE_ID_RESERVED');
  });
});

describe('tessera svid validate-jwt', () => {
  const TD = 'offline.test';
  const SUB = `spiffe://${TD}/shop/orders`;
  let key: JwtSigningKey;
  let bundleFile: string;

  beforeAll(() => {
    const k = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    key = { kid: 'k1', privateKey: k.privateKey, alg: 'ES256' };
    bundleFile = join(dir, 'bundle.jwks.json');
    writeFileSync(bundleFile, JSON.stringify(bundleToJwks({ trustDomain: TD, x509Authorities: [], jwtAuthorities: [{ kid: 'k1', publicKey: k.publicKey }], sequence: 1 })));
  });

  const offline = (token: string, extra: string[] = [], input?: string): Run =>
    tessera(['svid', 'validate-jwt', '--audience', 'payments', '--bundle', bundleFile, '--trust-domain', TD, ...extra, token], input !== undefined ? { input } : {});

  function expectNoToken(r: Run, token: string): void {
    const signature = token.split('.')[2] ?? '';
    for (const text of [r.stdout, r.stderr]) {
      expect(text).not.toContain(token);
      if (signature.length >= 20) expect(text).not.toContain(signature.slice(0, 20));
    }
  }

  it('offline: a valid token prints sub, aud and exp (exit 0), from the argument or from stdin, never the token', () => {
    const { token, expiresAt } = signJwtSvid(key, { sub: SUB, aud: ['payments', 'audit'], ttlSeconds: 300 });
    const r = offline(token, ['--json']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.json).toEqual({ valid: true, sub: SUB, aud: ['payments', 'audit'], exp: Math.floor(expiresAt.getTime() / 1000), expires_at: expiresAt.toISOString() });
    expectNoToken(r, token);
    const fromStdin = offline('-', [], `${token}\n`);
    expect(fromStdin.status).toBe(0);
    expect(fromStdin.stdout).toContain(`sub  ${SUB}`);
    expect(fromStdin.stdout).toContain('aud  payments, audit');
    expectNoToken(fromStdin, token);
  });

  it('offline: refuses a wrong audience, an expired token, a bad signature, another trust domain and malformed tokens (exit 1)', () => {
    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const good = signJwtSvid(key, { sub: SUB, aud: ['payments'], ttlSeconds: 300 }).token;
    const [h, p] = good.split('.') as [string, string, string];
    const cases: [string, string][] = [
      [signJwtSvid(key, { sub: SUB, aud: ['billing'], ttlSeconds: 300 }).token, 'TESSERA_JWT_AUDIENCE'],
      [signJwtSvid(key, { sub: SUB, aud: ['payments'], ttlSeconds: 60, now: Date.now() - 3_600_000 }).token, 'TESSERA_JWT_EXPIRED'],
      // Same kid, another key: the signature does not verify.
      [signJwtSvid({ kid: 'k1', privateKey: other.privateKey, alg: 'ES256' }, { sub: SUB, aud: ['payments'], ttlSeconds: 300 }).token, 'TESSERA_JWT_INVALID'],
      [signJwtSvid(key, { sub: 'spiffe://elsewhere.test/shop/orders', aud: ['payments'], ttlSeconds: 300 }).token, 'TESSERA_JWT_INVALID'],
      [`${h}.${p}.${Buffer.alloc(64).toString('base64url')}`, 'TESSERA_JWT_INVALID'],
      [`${Buffer.from('{"alg":"none","kid":"k1"}').toString('base64url')}.${p}.`, 'TESSERA_JWT_INVALID'],
      ['not-a-jwt', 'TESSERA_JWT_INVALID'],
      [`${h}.${p}`, 'TESSERA_JWT_INVALID'],
    ];
    for (const [token, code] of cases) {
      const r = offline(token, ['--json']);
      expect(r.status, code).toBe(1);
      expect(r.json.error.code).toBe(code);
      expectNoToken(r, token);
    }
    // An empty or oversized stdin is refused, not waited on or echoed.
    expect(offline('-', ['--json'], '').json.error.code).toBe('TESSERA_JWT_INVALID');
    expect(offline('-', ['--json'], 'a'.repeat(100_000)).json.error.code).toBe('TESSERA_JWT_INVALID');
  });

  it('offline: a missing --trust-domain, a bad bundle file or a missing --audience are usage errors (exit 2)', () => {
    const token = signJwtSvid(key, { sub: SUB, aud: ['payments'], ttlSeconds: 300 }).token;
    const noTd = tessera(['svid', 'validate-jwt', '--audience', 'payments', '--bundle', bundleFile, token, '--json']);
    expect([noTd.status, noTd.json.error.code]).toEqual([2, 'TESSERA_CONFIG_INVALID']);
    const garbage = join(dir, 'garbage.json');
    writeFileSync(garbage, '{"keys": 42}');
    for (const file of [garbage, join(dir, 'missing.json')]) {
      const r = tessera(['svid', 'validate-jwt', '--audience', 'payments', '--bundle', file, '--trust-domain', TD, token, '--json']);
      expect([r.status, r.json.error.code]).toEqual([2, 'TESSERA_CONFIG_INVALID']);
    }
    expect(tessera(['svid', 'validate-jwt', '--bundle', bundleFile, '--trust-domain', TD, token]).status).toBe(2);
  });

  it('online: validates a real JWT-SVID against the control plane\'s bundle, with the admin credential or an agent\'s SVID', async () => {
    // Harmless today; keeps this test valid once JWT-SVID issuance is itself a policy decision.
    const policyDir = join(dir, 'policy');
    mkdirSync(policyDir, { recursive: true });
    writeFileSync(join(policyDir, 'derive.cedar'), 'permit (principal, action == Tessera::Action::"credential:derive", resource);\n');
    expect(tessera(['policy', 'apply', '-f', policyDir, '--reason', 'test']).status).toBe(0);
    const agentDir = await joinedAgent('spiffe://example.org/jwt-client', 'agent-jwt');
    const minted = tessera(['svid', 'jwt', '--agent-dir', agentDir, '--audience', 'payments', '--json']);
    expect(minted.status, minted.stderr).toBe(0);
    const token = minted.json.token as string;

    const admin = tessera(['svid', 'validate-jwt', '--audience', 'payments', '-', '--json'], { input: token });
    expect(admin.status, admin.stderr).toBe(0);
    expect(admin.json).toMatchObject({ valid: true, sub: 'spiffe://example.org/jwt-client', aud: ['payments'] });
    expectNoToken(admin, token);
    const asAgent = tessera(['svid', 'validate-jwt', '--agent-dir', agentDir, '--audience', 'payments', token, '--json']);
    expect(asAgent.json).toMatchObject({ valid: true, sub: 'spiffe://example.org/jwt-client' });
    const wrongAud = tessera(['svid', 'validate-jwt', '--audience', 'billing', token, '--json']);
    expect([wrongAud.status, wrongAud.json.error.code]).toEqual([1, 'TESSERA_JWT_AUDIENCE']);
    // The offline bundle (another trust domain's keys) does not accept the control plane's token.
    const foreign = offline(token, ['--json']);
    expect([foreign.status, foreign.json.error.code]).toEqual([1, 'TESSERA_JWT_INVALID']);
    const down = tessera(['svid', 'validate-jwt', '--server', 'https://127.0.0.1:1', '--audience', 'payments', token, '--json']);
    expect(down.status).toBe(3);
  }, 60_000);
});

describe('a listen address in use is TESSERA_ADDRESS_IN_USE, exit 2', () => {
  it('tessera server', async () => {
    await withHeldPort((port) => {
      const r = tessera(['server', '--data-dir', join(dir, 'server-2'), '--listen', `127.0.0.1:${port}`, '--json']);
      expect(r.status, r.stdout + r.stderr).toBe(2);
      expect(r.stdout).toContain('"code":"TESSERA_ADDRESS_IN_USE"');
    });
  }, 40_000);

  it('tessera server --workers 2: the primary reports the worker\'s error once, with its code and status', async () => {
    await withHeldPort((port) => {
      const r = tessera(['server', '--workers', '2', '--data-dir', join(dir, 'server-3'), '--listen', `127.0.0.1:${port}`, '--json']);
      expect(r.status, r.stdout + r.stderr).toBe(2);
      expect(r.stdout.match(/"code":"TESSERA_ADDRESS_IN_USE"/g), r.stdout).toHaveLength(1);
    });
  }, 40_000);

  it('tessera agent: inbound, outbound (TCP and Unix socket), Workload API socket; a relative outbound socket path is a config error', async () => {
    expect(tessera(['agent', '--help']).stdout).toMatch(/ANY local user\s+can use it/);
    const agentDir = await joinedAgent('spiffe://example.org/busy', 'agent-busy');
    const agent = (extra: string[]): Run => tessera(['agent', '--server', server.url, '--data-dir', agentDir, '--json', ...extra]);
    const target = '127.0.0.1:9=127.0.0.1:9@spiffe://example.org/x';
    const sockDir = mkdtempSync(join(tmpdir(), 'tcs-'));
    const live = createServer();
    const livePath = join(sockDir, 'live.sock');
    await new Promise<void>((r) => live.listen(livePath, r));
    try {
      await withHeldPort((port) => {
        const expectInUse = (r: Run, code = 'TESSERA_ADDRESS_IN_USE'): void => {
          expect(r.status, r.stdout + r.stderr).toBe(2);
          expect(r.stdout).toContain(`"code":"${code}"`);
        };
        expectInUse(agent(['--inbound', `127.0.0.1:${port}`, '--app', '127.0.0.1:9']));
        expectInUse(agent(['--outbound', `127.0.0.1:${port}=${target.slice(target.indexOf('=') + 1)}`]));
        expectInUse(agent(['--outbound', `unix:${livePath}=${target.slice(target.indexOf('=') + 1)}`]));
        expectInUse(agent(['--workload-api-socket', livePath]), 'TESSERA_WORKLOAD_API_SOCKET_IN_USE');
      });
      const relative = agent(['--outbound', 'unix:run/out.sock=127.0.0.1:9@spiffe://example.org/x']);
      expect([relative.status, relative.stdout.includes('"code":"TESSERA_CONFIG_INVALID"')]).toEqual([2, true]);
    } finally {
      await new Promise<void>((r) => live.close(() => r()));
      rmSync(sockDir, { recursive: true, force: true });
    }
  }, 90_000);

  it('tessera agent --policy-watch: bad periods refused before the join (the token stays usable); 1s witnesses the growing log within seconds', async () => {
    expect(tessera(['agent', '--help']).stdout).toContain('--policy-watch <duration>');
    const id = 'spiffe://example.org/watcher';
    expect(tessera(['entry', 'create', '--spiffe-id', id, '--selector', `unix:uid:${process.getuid!()}`]).status).toBe(0);
    const token = tessera(['token', 'create', '--entry', id, '--json']).json.token as string;
    const agentDir = join(dir, 'agent-watcher');
    const base = ['--json', 'agent', '--server', server.url, '--data-dir', agentDir, '--join-token', token, '--trust-bundle', join(server.dataDir, 'bundle.pem')];
    for (const bad of ['0', '0s', '500ms', '1500ms', '61s', '2m', 'soon', '']) {
      const r = tessera([...base, '--policy-watch', bad]);
      expect([bad, r.status, r.json.error?.code]).toEqual([bad, 2, 'TESSERA_CONFIG_INVALID']);
    }
    const child = spawn(process.execPath, [CLI, ...base, '--policy-watch', '1s'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
    const sizes = (): number[] => [...out.matchAll(/"msg":"audit checkpoint witnessed".*?"size":(\d+)/g)].map((m) => Number(m[1]));
    try {
      await waitFor('the agent to witness a checkpoint', () => sizes().length > 0, 20_000);
      const first = sizes()[0]!;
      // Audited reads grow the log without changing the policy: only the 1 s long poll shows it.
      for (let i = 0; i < 3; i++) expect(tessera(['audit', 'list', '--limit', '1']).status).toBe(0);
      const t0 = Date.now();
      await waitFor('a larger checkpoint witnessed', () => sizes().some((n) => n > first), 8000);
      expect(Date.now() - t0).toBeLessThan(8000);
    } finally {
      await new Promise<void>((r) => { child.once('exit', () => r()); child.kill('SIGTERM'); });
    }
  }, 60_000);

  it('tessera keyserver', async () => {
    expect(tessera(['entry', 'create', '--spiffe-id', 'spiffe://example.org/keyserver/1']).status).toBe(0);
    const token = tessera(['token', 'create', '--entry', 'spiffe://example.org/keyserver/1', '--json']).json.token as string;
    await withHeldPort((port) => {
      const r = spawnSync(process.execPath, [CLI, '--server', server.url, '--json', 'keyserver', '--data-dir', join(dir, 'ks1'), '--join-token', token, '--trust-bundle', join(server.dataDir, 'bundle.pem'), '--listen', `127.0.0.1:${port}`], {
        encoding: 'utf8', timeout: 30_000, env: { ...process.env, TESSERA_KEK: 'a'.repeat(64) },
      });
      expect(r.status, r.stdout + r.stderr).toBe(2);
      expect(r.stdout).toContain('"code":"TESSERA_ADDRESS_IN_USE"');
    });
  }, 40_000);
});
