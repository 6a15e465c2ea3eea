/**
 * The demo (`npm run demo`): a control plane and three agents for services in two sites, as real
 * processes on 127.0.0.1, with short lifetimes so that rotations show within a minute. It prints
 * identities, rotations and a CA rotation as they happen. Ctrl-C stops everything.
 *
 * DEMO_SECONDS=N stops it after N seconds (used by the test of the demo).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { ApiClient } from '../src/agent/client.js';
import { verifyJwtSvid } from '../src/core/jwt-svid.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));
const DIR = join(ROOT, '.tessera', 'demo');
const TD = 'tessera.test';
const color = process.stdout.isTTY && !process.env.NO_COLOR;
const paint = (code: number, s: string): string => (color ? `\x1b[${code}m${s}\x1b[0m` : s);

const SERVICES = [
  { name: 'frontend', id: `spiffe://${TD}/shop/frontend`, site: 'cloud-eu', app: 'shop', compliance: 'standard', location: 'eu', colour: 36 },
  { name: 'orders', id: `spiffe://${TD}/shop/orders`, site: 'cloud-eu', app: 'shop', compliance: 'pci', location: 'eu', colour: 35 },
  { name: 'inventory', id: `spiffe://${TD}/shop/inventory`, site: 'edge-7', app: 'shop', compliance: 'standard', location: 'eu', colour: 33 },
];

const children: ChildProcess[] = [];
let stopping = false;

function say(who: string, colour: number, msg: string): void {
  const t = new Date().toISOString().slice(11, 19);
  process.stdout.write(`${paint(90, t)} ${paint(colour, who.padEnd(10))} ${msg}\n`);
}

function freePort(preferred: number): Promise<number> {
  const tryPort = (p: number): Promise<number> => new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(p, '127.0.0.1', () => {
      const addr = s.address();
      s.close(() => res(typeof addr === 'object' && addr ? addr.port : p));
    });
  });
  return tryPort(preferred).catch(() => tryPort(0));
}

function tessera(args: string[], onLine?: (obj: Record<string, unknown>) => void): ChildProcess {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], detached: false });
  children.push(child);
  for (const stream of [child.stdout!, child.stderr!]) {
    createInterface({ input: stream }).on('line', (line) => {
      try {
        onLine?.(JSON.parse(line) as Record<string, unknown>);
      } catch {
        if (line.trim()) process.stdout.write(`${line}\n`);
      }
    });
  }
  return child;
}

async function waitForFile(file: string, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!existsSync(file)) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${file}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function stopAll(code = 0): Promise<never> {
  if (!stopping) {
    stopping = true;
    process.stdout.write(`\n${paint(1, 'stopping')}: agents and control plane...\n`);
    await Promise.all(children.map((c) => new Promise<void>((r) => {
      if (c.exitCode !== null || c.signalCode !== null) return r();
      const t = setTimeout(() => c.kill('SIGKILL'), 5000);
      c.once('exit', () => { clearTimeout(t); r(); });
      c.kill('SIGTERM');
    })));
    process.stdout.write('stopped cleanly.\n');
  }
  process.exit(code);
}

async function main(): Promise<void> {
  process.on('SIGINT', () => void stopAll(0));
  process.on('SIGTERM', () => void stopAll(0));
  rmSync(DIR, { recursive: true, force: true });
  mkdirSync(DIR, { recursive: true });
  const port = await freePort(8443);
  const url = `https://127.0.0.1:${port}`;

  process.stdout.write(`${paint(1, 'Tessera demo')}: a control plane and three agents in two sites (cloud-eu, edge-7), all on 127.0.0.1.\n`);
  process.stdout.write(`SVIDs live 20 s (rotated at half life), the CA 4 min; a manual CA rotation follows at ~25 s. Ctrl-C stops everything.\n\n`);

  const serverDir = join(DIR, 'server');
  tessera(['server', '--json', '--data-dir', serverDir, '--listen', `127.0.0.1:${port}`, '--trust-domain', TD, '--ca-ttl', '4m', '--svid-ttl', '20s', '--log-level', 'info'], (o) => {
    if (o.msg === 'control plane listening') say('control', 1, `listening on ${String(o.url)} (trust domain ${TD})`);
    else if (o.msg === 'CA activated') say('control', 1, paint(32, `new CA is now signing (${String(o.ca).slice(0, 8)})`));
    else if (o.level === 'error' || o.level === 'warn') say('control', 31, `${String(o.msg)}`);
  });
  await waitForFile(join(serverDir, 'admin', 'server.json'));
  const adminDir = join(serverDir, 'admin');
  const f = (n: string): string => readFileSync(join(adminDir, n), 'utf8');
  const admin = new ApiClient(url, { ca: f('bundle.pem'), cert: f('admin.pem'), key: f('admin.key') });

  for (const s of SERVICES) {
    await admin.call('POST', '/v1/entries', {
      spiffe_id: s.id, selectors: [`unix:uid:${process.getuid?.() ?? 0}`],
      attributes: { app: s.app, site: s.site, compliance: s.compliance, location: s.location, env: 'demo' },
    });
    const { token } = await admin.call<{ token: string; token_ref: string }>('POST', '/v1/tokens', { entry_id: s.id, ttl_seconds: 120 });
    say(s.name, s.colour, `registered ${s.id} [site ${s.site}, compliance ${s.compliance}] and created a one-time join token`);
    tessera(['agent', '--json', '--server', url, '--data-dir', join(DIR, s.name), '--join-token', token, '--trust-bundle', join(serverDir, 'bundle.pem')], (o) => {
      if (o.msg === 'joined: SVID issued') say(s.name, s.colour, `joined → ${String(o.spiffe_id)}, serial ${String(o.serial).slice(0, 8)}, valid until ${String(o.not_after).slice(11, 19)}, signed by ${String(o.issuer)}`);
      else if (o.msg === 'SVID rotated') say(s.name, s.colour, `${paint(32, 'rotated')} SVID, serial ${String(o.serial).slice(0, 8)}, valid until ${String(o.not_after).slice(11, 19)}, signed by ${String(o.issuer)}`);
      else if (o.msg === 'trust bundle updated') say(s.name, s.colour, `trust bundle #${String(o.sequence)}: ${String(o.authorities)} CA(s)`);
      else if (o.level === 'warn' || o.level === 'error') say(s.name, 31, String(o.msg));
    });
  }

  // A derived credential: a JWT-SVID for an audience, checked against the public JWKS.
  setTimeout(() => void (async () => {
    const dir = join(DIR, 'frontend');
    const client = new ApiClient(url, { ca: readFileSync(join(dir, 'bundle.pem'), 'utf8'), cert: readFileSync(join(dir, 'svid.pem'), 'utf8'), key: readFileSync(join(dir, 'svid.key'), 'utf8') });
    try {
      const jwt = await client.call<{ token: string; expires_at: string }>('POST', '/v1/svid/jwt', { audience: ['orders-api'] });
      const jwks = await client.call<{ keys: object[] }>('GET', '/v1/bundle');
      const v = await verifyJwtSvid(jwt.token, jwks, { audience: 'orders-api', trustDomain: TD });
      say('frontend', 36, `JWT-SVID for audience "orders-api" verified: sub=${v.spiffeId}, expires ${jwt.expires_at.slice(11, 19)}`);
    } catch (err) {
      say('frontend', 31, `JWT-SVID demo failed: ${(err as Error).message}`);
    } finally {
      client.close();
    }
  })(), 6000).unref();

  setTimeout(() => void (async () => {
    const res = await admin.call<{ prepared: { id: string; activateAt: string } }>('POST', '/v1/ca/rotate', { grace_seconds: 10 });
    say('control', 1, paint(32, `CA rotation: prepared ${res.prepared.id.slice(0, 8)}, published in the bundle now, signing from ${res.prepared.activateAt.slice(11, 19)}`));
  })().catch((err: unknown) => say('control', 31, `CA rotation failed: ${(err as Error).message}`)), 25_000).unref();

  setInterval(() => {
    const rows = SERVICES.map((s) => {
      const file = join(DIR, s.name, 'svid.pem');
      if (!existsSync(file)) return `${s.name}: -`;
      const c = new X509Certificate(readFileSync(file));
      return `${s.name}: ${c.serialNumber.slice(0, 8)} until ${new Date(c.validTo).toISOString().slice(11, 19)}`;
    });
    say('files', 90, rows.join('  |  '));
  }, 15_000).unref();

  const seconds = Number(process.env.DEMO_SECONDS ?? 0);
  if (seconds > 0) setTimeout(() => void stopAll(0), seconds * 1000);
  setInterval(() => {}, 1 << 30);
}

main().catch((err: unknown) => {
  process.stderr.write(`demo failed: ${(err as Error).message}\n`);
  void stopAll(1);
});
