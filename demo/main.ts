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
import { Agent as HttpAgent, createServer as createHttpServer, request as httpRequest, type Server as HttpServer } from 'node:http';
import { ApiClient } from '../src/agent/client.js';
import { readPolicyDir } from '../src/cli/policy.js';
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
const apps: HttpServer[] = [];
const timers: NodeJS.Timeout[] = [];
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

/** A tiny application: answers who called it, as the sidecar told it (x-spiffe-id). */
function startApp(name: string): Promise<number> {
  const server = createHttpServer((req, res) => {
    req.resume();
    req.on('end', () => res.end(`${name} served ${req.method} ${req.url} for ${String(req.headers['x-spiffe-id'])}`));
  });
  apps.push(server);
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)));
}

const keepAlive = new HttpAgent({ keepAlive: true, maxSockets: 4 });

/** One plain HTTP call to a local outbound port (what the app would do): status and body. */
function call(port: number, method: string, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve) => {
    const req = httpRequest({ host: '127.0.0.1', port, method, path, agent: keepAlive, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err) => resolve({ status: 0, body: err.message }));
    req.end(method === 'POST' ? '{"sku":"sku-1","qty":1}' : undefined);
  });
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
    for (const t of timers) clearInterval(t);
    for (const a of apps) a.close();
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

  process.stdout.write(`${paint(1, 'Tessera demo')}: a control plane and three services with sidecars in two sites (cloud-eu, edge-7), all on 127.0.0.1.\n`);
  process.stdout.write(`SVIDs live 20 s (rotated at half life), the CA 4 min; a policy change at ~10 s and a CA rotation at ~30 s. Ctrl-C stops everything.\n\n`);

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
    say(s.name, s.colour, `registered ${s.id} [site ${s.site}, compliance ${s.compliance}]`);
  }

  // Policy as code: the repository's policies/ directory, applied as version 1.
  const policyDir = join(ROOT, 'policies');
  const v1 = readPolicyDir(policyDir);
  const applied = await admin.call<{ version: number }>('POST', '/v1/policies', { files: v1.policies, reason: 'demo: initial policy from policies/' });
  say('control', 1, `policy v${applied.version} applied from policies/ (${Object.keys(v1.policies).join(', ')}): default deny, frontend reads, PCI data stays in its site`);

  // Applications and their sidecars: orders (cloud-eu, PCI) and inventory (edge-7) serve over
  // inbound mTLS proxies; frontend and inventory call out through outbound proxies.
  const [ordersApp, inventoryApp] = [await startApp('orders'), await startApp('inventory')];
  const [ordersIn, inventoryIn, feToOrders, feToInventory, invToOrders] = [await freePort(0), await freePort(0), await freePort(0), await freePort(0), await freePort(0)];
  const sidecarArgs: Record<string, string[]> = {
    orders: ['--inbound', `127.0.0.1:${ordersIn}`, '--app', `127.0.0.1:${ordersApp}`, '--mode', 'http'],
    inventory: ['--inbound', `127.0.0.1:${inventoryIn}`, '--app', `127.0.0.1:${inventoryApp}`, '--mode', 'http',
      '--outbound', `127.0.0.1:${invToOrders}=127.0.0.1:${ordersIn}@${SERVICES[1]!.id}`],
    frontend: ['--outbound', `127.0.0.1:${feToOrders}=127.0.0.1:${ordersIn}@${SERVICES[1]!.id}`, `127.0.0.1:${feToInventory}=127.0.0.1:${inventoryIn}@${SERVICES[2]!.id}`],
  };
  let ready = 0;
  for (const s of SERVICES) {
    const { token } = await admin.call<{ token: string }>('POST', '/v1/tokens', { entry_id: s.id, ttl_seconds: 120 });
    tessera(['agent', '--json', '--server', url, '--data-dir', join(DIR, s.name), '--join-token', token, '--trust-bundle', join(serverDir, 'bundle.pem'), ...sidecarArgs[s.name]!], (o) => {
      if (o.msg === 'joined: SVID issued') say(s.name, s.colour, `joined → ${String(o.spiffe_id)}, serial ${String(o.serial).slice(0, 8)}, valid until ${String(o.not_after).slice(11, 19)}, signed by ${String(o.issuer)}`);
      else if (o.msg === 'SVID rotated') say(s.name, s.colour, `${paint(32, 'rotated')} SVID, serial ${String(o.serial).slice(0, 8)}, valid until ${String(o.not_after).slice(11, 19)}, signed by ${String(o.issuer)}`);
      else if (o.msg === 'trust bundle updated') say(s.name, s.colour, `trust bundle #${String(o.sequence)}: ${String(o.authorities)} CA(s)`);
      else if (o.msg === 'policy bundle in force') {
        say(s.name, s.colour, `policy bundle ${String(o.version)} in force (${String(o.reason)})`);
        ready += 1;
      } else if (o.msg === 'denied') say(s.name, s.colour, `${paint(31, 'sidecar denied')} ${String(o.peer)} ${String(o.method)} ${String(o.path)}${Array.isArray(o.reasons) && o.reasons.length ? ` by ${o.reasons.join(', ')}` : ' (no permit)'}`);
      else if (o.level === 'warn' || o.level === 'error') say(s.name, 31, String(o.msg));
    });
  }
  const until = Date.now() + 20_000;
  while (ready < SERVICES.length && Date.now() < until) await new Promise((r) => setTimeout(r, 50));

  const calls: [string, number, string, string, number][] = [
    ['frontend', feToOrders, 'GET', '/orders/42', 36],
    ['frontend', feToOrders, 'POST', '/orders', 36],
    ['frontend', feToInventory, 'GET', '/stock/sku-1', 36],
    ['inventory', invToOrders, 'GET', '/orders/42', 33],
  ];
  const target = (port: number): string => (port === feToInventory ? 'inventory' : 'orders');
  const traffic = async (): Promise<void> => {
    for (const [from, port, method, path, colour] of calls) {
      const r = await call(port, method, path);
      const verdict = r.status === 200 ? paint(32, `${r.status} allowed`) : paint(31, `${r.status} denied`);
      const why = r.status === 200 ? r.body : (/"code":"([A-Z_]+)"/.exec(r.body)?.[1] ?? r.body.slice(0, 80));
      say(from, colour, `→ ${target(port)} ${method} ${path}: ${verdict} (${why})`);
    }
  };
  await traffic();
  timers.push(setInterval(() => void (stopping ? undefined : traffic()), 5000));

  // A policy change: frontend may now create orders. Measure until the sidecar lets it through.
  setTimeout(() => void (async () => {
    const v2 = { ...v1.policies, 'frontend-writes.cedar': `@id("frontend-creates-orders")
permit (
  principal == Tessera::Workload::"${SERVICES[0]!.id}",
  action == Tessera::Action::"http:request",
  resource == Tessera::Workload::"${SERVICES[1]!.id}"
) when { context.method == "POST" && context.path == "/orders" };
` };
    const diff = await admin.call<{ flips: { before: string; after: string; principal: string; context: { method?: string; path?: string } }[]; replayed: number }>(
      'POST', '/v1/policies', { files: v2, reason: 'demo: frontend may create orders', dry_run: true });
    say('control', 1, `policy diff (replayed ${diff.replayed} recorded decisions): ${diff.flips.map((f) => `${f.context.method ?? ''} ${f.context.path ?? ''} ${f.before}→${f.after}`).join(', ') || 'no flips'}`);
    const t0 = Date.now();
    const res = await admin.call<{ version: number }>('POST', '/v1/policies', { files: v2, reason: 'demo: frontend may create orders' });
    say('control', 1, paint(32, `policy v${res.version} applied: frontend may POST /orders`));
    for (;;) {
      const r = await call(feToOrders, 'POST', '/orders');
      if (r.status === 200) {
        say('frontend', 36, paint(32, `POST /orders allowed ${Date.now() - t0} ms after the policy change`));
        break;
      }
      if (Date.now() - t0 > 10_000) {
        say('frontend', 31, 'the policy change did not take effect within 10 s');
        break;
      }
      await new Promise((r2) => setTimeout(r2, 20));
    }
  })().catch((err: unknown) => say('control', 31, `policy change failed: ${(err as Error).message}`)), 10_000).unref();

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
  })().catch((err: unknown) => say('control', 31, `CA rotation failed: ${(err as Error).message}`)), 30_000).unref();

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
