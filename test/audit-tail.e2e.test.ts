/**
 * `tessera audit tail` through the real command (dist/) against a real `tessera server --siem`
 * process shipping to a real rsyslogd: JSON lines and OCSF on stdout only, --follow until SIGTERM,
 * stable exit codes for bad flags; and nothing secret (join token, JWT-SVID, API key, private keys,
 * PEM of any kind) in any exported line: tail --json, tail --ocsf, or syslog.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, freePort, ServerProcess, waitFor } from './support/process.js';
import { parseReceived, Rsyslog } from './support/rsyslog.js';

interface Run { status: number | null; stdout: string; stderr: string }

let dir: string;
let server: ServerProcess;
let rsyslog: Rsyslog;

function tessera(args: string[], env: NodeJS.ProcessEnv = {}): Run {
  const r = spawnSync(process.execPath, [CLI, ...args], { env: { ...process.env, TESSERA_ADMIN_DIR: server.adminDir, ...env }, encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const jsonLines = (text: string): Record<string, any>[] => text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, any>);

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tessera-tail-'));
  rsyslog = new Rsyslog(join(dir, 'rsyslog'), await freePort());
  await rsyslog.start();
  server = new ServerProcess(join(dir, 'server'), await freePort(), ['--trust-domain', 'example.org', '--siem', `syslog+tcp://127.0.0.1:${rsyslog.port}`]);
  await server.start();
}, 60_000);

afterAll(async () => {
  await server?.stop(false);
  await rsyslog?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('tessera audit tail', () => {
  it('prints every record as a JSON line with its leaf hash, in id order, from --from', () => {
    expect(tessera(['entry', 'create', '--spiffe-id', 'spiffe://example.org/shop/orders']).status).toBe(0);
    const all = tessera(['audit', 'tail']);
    expect([all.status, all.stderr]).toEqual([0, '']);
    const records = jsonLines(all.stdout);
    expect(records.length).toBeGreaterThanOrEqual(2);
    records.forEach((r, i) => {
      expect(r.id).toBe(i + 1);
      expect(r.leaf_hash).toMatch(/^[A-Za-z0-9+/]{43}=$/);
    });
    expect(records[0]).toMatchObject({ action: 'entry.create', outcome: 'success', target: 'spiffe://example.org/shop/orders' });
    expect(records[records.length - 1]).toMatchObject({ action: 'audit.tail', detail: { after: 0, follow: false } });
    const from = tessera(['audit', 'tail', '--from', '2', '--json']);
    expect(from.status).toBe(0);
    expect(jsonLines(from.stdout)[0]!.id).toBe(2);
    const beyond = tessera(['audit', 'tail', '--from', '999999']);
    expect([beyond.status, beyond.stdout]).toEqual([0, '']);
  });

  it('prints OCSF events', () => {
    const events = jsonLines(tessera(['audit', 'tail', '--ocsf']).stdout);
    expect(events[0]).toMatchObject({ class_uid: 3004, activity_id: 1, type_uid: 300401, status_id: 1, metadata: { uid: '1', version: '1.1.0', product: { name: 'Tessera' } } });
    expect(events.every((e) => e.type_uid === e.class_uid * 100 + e.activity_id && typeof e.time === 'number')).toBe(true);
  });

  it('follows new records until SIGTERM, then exits 0 with only records on stdout', async () => {
    const child = spawn(process.execPath, [CLI, 'audit', 'tail', '--follow', '--from', '1'], { env: { ...process.env, TESSERA_ADMIN_DIR: server.adminDir }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      await waitFor('the backlog', () => out.includes('"action":"audit.tail"'), 15_000);
      expect(tessera(['entry', 'create', '--spiffe-id', 'spiffe://example.org/shop/followed']).status).toBe(0);
      await waitFor('the new record', () => out.includes('spiffe://example.org/shop/followed'), 15_000);
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
    expect(err).toBe('');
    const ids = jsonLines(out).map((r) => r.id as number);
    expect(ids).toEqual(ids.map((_, i) => i + 1));
  }, 40_000);

  it('refuses bad flags with exit 2 on stderr, and an unreachable server with exit 3', () => {
    for (const from of ['0', '-1', 'x', '1.5', '99999999999999999999']) {
      const r = tessera(['audit', 'tail', '--from', from]);
      expect(`${from}: ${r.status} ${r.stdout}`).toBe(`${from}: 2 `);
      expect(r.stderr).toContain('TESSERA_CONFIG_INVALID');
    }
    const both = tessera(['audit', 'tail', '--json', '--ocsf']);
    expect([both.status, both.stdout]).toEqual([2, '']);
    expect(both.stderr).toContain('TESSERA_CONFIG_INVALID');
    const down = tessera(['audit', 'tail', '--json', '--server', 'https://127.0.0.1:1']);
    expect([down.status, down.stdout]).toEqual([3, '']);
    expect(down.stderr).toContain('TESSERA_SERVER_UNREACHABLE');
  });
});

describe('tessera server --siem flags', () => {
  it('refuses a bad URL or flag combination with TESSERA_CONFIG_INVALID, exit 2, before touching the data directory', () => {
    const dataDir = join(dir, 'never');
    const cases: string[][] = [
      ['--siem', 'syslog+udp://127.0.0.1:514'], ['--siem', 'https://127.0.0.1:514'], ['--siem', 'syslog+tls://127.0.0.1'],
      ['--siem', 'syslog+tls://127.0.0.1:99999'], ['--siem', 'syslog+tcp://bad_host:514'], ['--siem', 'syslog+tls://h:514/path'],
      ['--siem-ca', join(dir, 'x.pem')], ['--siem', 'syslog+tcp://127.0.0.1:514', '--siem-ca', join(dir, 'x.pem')],
      ['--siem', 'syslog+tls://127.0.0.1:514', '--siem-ca', join(dir, 'missing.pem')],
      ['--siem', 'syslog+tls://127.0.0.1:514', '--siem-ca', join(dir, 'notpem.txt')],
      ['--siem', 'syslog+tls://127.0.0.1:514', '--siem-cert', join(dir, 'notpem.txt')],
      ['--siem', 'syslog+tcp://127.0.0.1:514', '--siem-settle', '1ms'],
    ];
    writeFileSync(join(dir, 'notpem.txt'), 'hello\n');
    for (const args of cases) {
      const r = tessera(['server', '--data-dir', dataDir, '--listen', '127.0.0.1:0', ...args, '--json']);
      expect(`${args.join(' ')}: ${r.status} ${/TESSERA_[A-Z_]+/.exec(r.stdout + r.stderr)?.[0]}`).toBe(`${args.join(' ')}: 2 TESSERA_CONFIG_INVALID`);
      expect(r.stdout + r.stderr).not.toContain('hello');
    }
    expect(existsSync(dataDir)).toBe(false);
  });
});

describe('nothing secret in any export', () => {
  it('has no token, JWT, API key, private key or PEM in tail --json, tail --ocsf or syslog', async () => {
    tessera(['entry', 'create', '--spiffe-id', 'spiffe://example.org/web', '--apikey-max-ttl', '2h']);
    const policyDir = join(dir, 'policies');
    mkdirSync(policyDir, { recursive: true });
    writeFileSync(join(policyDir, 'derive.cedar'), `permit (principal == Tessera::Workload::"spiffe://example.org/web", action == Tessera::Action::"credential:derive", resource)
when { context.audience == "payments" || context.scope == "orders:read" };`);
    expect(tessera(['policy', 'apply', '-f', policyDir]).status).toBe(0);
    const token = (JSON.parse(tessera(['--json', 'token', 'create', '--entry', 'spiffe://example.org/web', '--ttl', '2m']).stdout) as { token: string }).token;
    const unused = (JSON.parse(tessera(['--json', 'token', 'create', '--entry', 'spiffe://example.org/web', '--ttl', '2m']).stdout) as { token: string }).token;
    const agentDir = join(dir, 'agent-web');
    const agent = spawn(process.execPath, [CLI, 'agent', '--server', server.url, '--data-dir', agentDir, '--join-token', token, '--trust-bundle', join(server.dataDir, 'bundle.pem')], { stdio: ['ignore', 'pipe', 'pipe'] });
    let agentOut = '';
    agent.stdout.on('data', (d: Buffer) => { agentOut += d.toString(); });
    agent.stderr.on('data', (d: Buffer) => { agentOut += d.toString(); });
    try {
      await waitFor('the agent to join', () => agentOut.includes('joined'), 20_000);
      const jwt = (JSON.parse(tessera(['--json', 'svid', 'jwt', '--agent-dir', agentDir, '--audience', 'payments']).stdout) as { token: string }).token;
      const apiKey = (JSON.parse(tessera(['--json', 'svid', 'apikey', '--agent-dir', agentDir, '--scope', 'orders:read']).stdout) as { api_key: string }).api_key;
      // A refused join with a made-up token: the refusal is recorded, the token is not.
      const fake = `tjt_${'A'.repeat(43)}`;
      const refused = spawnSync(process.execPath, [CLI, 'agent', '--server', server.url, '--data-dir', join(dir, 'agent-x'), '--join-token', fake, '--trust-bundle', join(server.dataDir, 'bundle.pem')], { encoding: 'utf8', timeout: 20_000 });
      expect(refused.status).not.toBe(0);
      const pemBody = (file: string): string => readFileSync(file, 'utf8').split('\n').filter((l) => l && !l.startsWith('-----')).join('');
      const secrets = { token, unused, fake, jwt, apiKey, svidKey: pemBody(join(agentDir, 'svid.key')), adminKey: pemBody(join(server.adminDir, 'admin.key')) };
      for (const [name, v] of Object.entries(secrets)) expect(`${name}: ${typeof v === 'string' && v.length >= 20}`).toBe(`${name}: true`);

      const json = tessera(['audit', 'tail', '--json']).stdout;
      const ocsf = tessera(['audit', 'tail', '--ocsf']).stdout;
      const last = jsonLines(json).at(-1)!.id as number;
      await waitFor('syslog to catch up', () => rsyslog.lines().some((l) => parseReceived(l).sdId === last), 20_000, 200);
      const exports = { json, ocsf, syslog: rsyslog.lines().join('\n') };
      // The exports do describe these events (so the check below looks at the right lines).
      expect(jsonLines(json).map((r) => r.action)).toEqual(expect.arrayContaining(['token.create', 'svid.join', 'svid.jwt', 'apikey.create']));
      expect(jsonLines(json).some((r) => r.action === 'svid.join' && r.outcome === 'denied')).toBe(true);
      for (const [where, text] of Object.entries(exports)) {
        expect(text.length).toBeGreaterThan(1000);
        for (const [name, value] of Object.entries(secrets)) {
          expect(`${where} holds ${name}: ${text.includes(value) || text.includes(value.slice(0, 24))}`).toBe(`${where} holds ${name}: false`);
        }
        for (const marker of ['-----BEGIN', 'PRIVATE KEY', 'tjt_', 'tak_']) expect(`${where} holds ${marker}: ${text.includes(marker)}`).toBe(`${where} holds ${marker}: false`);
        // Any JWT (header.payload.), not only the one minted here; base64 leaf hashes cannot match (no '.').
        expect(`${where} holds a JWT: ${/eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\./.test(text)}`).toBe(`${where} holds a JWT: false`);
      }
    } finally {
      agent.kill('SIGTERM');
    }
  }, 90_000);
});
