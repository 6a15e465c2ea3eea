/**
 * Gateway benchmark: requests/s and latency of a signed-in person's requests through `tessera gateway`
 * versus straight to the app, in the same run, next to the physical limit of a Node TLS proxy.
 *
 *   npm run bench:gateway            (= tsc && node dist/bench/gateway.js [--seconds S] [--concurrency N] [--users N] [--json])
 *
 * Rows (the same node:http app answering 1 KB; the same load generator, a child process with N
 * kept-alive connections, one request in flight each):
 *   direct        client → app (plain HTTP)
 *   tls-proxy     client → a bare Node HTTPS server piping each request to the app (keep-alive agent):
 *                 TLS and one HTTP hop, no session, no policy, no assertion: the floor of any Node gateway
 *   gateway       client → tessera gateway (session cookie, session check cached, device none,
 *                 Cedar gateway:request, every decision recorded and shipped, an ES256 assertion
 *                 signed per request; people's telemetry off, see startGw) → app
 *   gateway-sampled  the same with `--allow-sample-rate 0.01` (1 % of allows shipped, denials all): the
 *                 control plane runs in this process, so shipping every decision also costs its audit
 *                 ingestion here
 *   gateway-unique   gateway, one person, every request on a path never seen before (`/orders/<n>`, as
 *                 REST ids are): the decision cache (keyed by the request's inputs, path included)
 *                 never answers, so each request is a Cedar evaluation: the uncached cliff
 *   gateway-users    gateway, `--users` people (default 200) signed in, requests spread over their
 *                 sessions round robin, one path: one cached decision per person, more sessions
 *   gateway-users-unique  both: many people, unique paths (the realistic worst case)
 * Every row sends `/1k` but the -unique ones.
 *
 * The control plane, the gateway and the bare proxy run in this process (the control plane is idle
 * while measuring but for a session check every 5 s, decision batches and telemetry windows); the
 * load generator is its own process. Each row is measured `--rounds` times (default 3), rows
 * interleaved, and the round with the median req/s is reported. Bounded: about
 * rows × rounds × (warm-up 1 s + S) plus ~10 s of set-up.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Agent as HttpAgent, createServer as createHttpServer, request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, createServer as createHttpsServer, request as httpsRequest } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { ApiClient } from '../src/common/api-client.js';
import { createLogger } from '../src/core/log.js';
import { startGatewayNode } from '../src/gateway/node.js';
import { parseRoute } from '../src/gateway/route-table.js';
import { ControlPlane } from '../src/server/server.js';
import { readAdminTls } from '../test/support/server.js';
import { PeopleBrowser, gatewayCert } from '../test/support/gateway.js';

interface Options { seconds: number; concurrency: number; rounds: number; users: number; json: boolean }
interface LoadResult { requests: number; errors: number; seconds: number; p50: number; p99: number; firstError?: string }
interface Row { name: string; rps: number; p50: number; p99: number; errors: number; all: number[] }

function usage(msg: string): never {
  process.stderr.write(`bench/gateway: ${msg}\nusage: node dist/bench/gateway.js [--seconds S (1-30)] [--concurrency N (1-256)] [--rounds N (1-7)] [--users N (2-2000)] [--json]\n`);
  process.exit(2);
}

function parseArgs(argv: string[]): Options {
  const o: Options = { seconds: 3, concurrency: 16, rounds: 3, users: 200, json: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const num = (lo: number, hi: number): number => {
      const v = Number(argv[++i]);
      if (!(Number.isInteger(v) && v >= lo && v <= hi)) usage(`${a} must be an integer from ${lo} to ${hi}`);
      return v;
    };
    if (a === '--json') o.json = true;
    else if (a === '--seconds') o.seconds = num(1, 30);
    else if (a === '--concurrency') o.concurrency = num(1, 256);
    else if (a === '--rounds') o.rounds = num(1, 7);
    else if (a === '--users') o.users = num(2, 2000);
    else usage(`unknown argument ${a}`);
  }
  return o;
}

/**
 * The load generator (child process): kept-alive GETs for `seconds` after a 1 s warm-up; prints JSON.
 * `cookies`: the sessions, used round robin, one per request; `unique`: every path new.
 */
async function runLoad(url: string, host: string, cookies: string[], unique: boolean, ca: string, concurrency: number, seconds: number): Promise<void> {
  const u = new URL(url);
  const tls = u.protocol === 'https:';
  const agent = tls ? new HttpsAgent({ keepAlive: true, maxSockets: concurrency, ca, servername: host }) : new HttpAgent({ keepAlive: true, maxSockets: concurrency });
  const lat: number[] = [];
  let measuring = false;
  let stop = false;
  let errors = 0;
  let n = 0;
  let firstError: string | undefined;
  // Unique across runs too (the gateway's cache outlives a run): a random prefix per load process.
  const prefix = Math.floor(Math.random() * 1e9);
  const one = (): Promise<void> => new Promise((resolve) => {
    const i = n++;
    const path = unique ? `/orders/${prefix}-${i}` : '/1k';
    const t0 = performance.now();
    const req = (tls ? httpsRequest : httpRequest)({ host: '127.0.0.1', port: Number(u.port), path, agent, headers: { host: `${host}:${u.port}`, cookie: cookies[i % cookies.length]!, accept: 'text/plain' } }, (res) => {
      res.resume();
      res.on('end', () => {
        if (res.statusCode !== 200) {
          errors++;
          firstError ??= `HTTP ${res.statusCode}${res.headers.location ? ` → ${res.headers.location.slice(0, 60)}` : ''}`;
        }
        else if (measuring) lat.push(performance.now() - t0);
        resolve();
      });
    });
    req.on('error', (err) => {
      errors++;
      firstError ??= err.message;
      resolve();
    });
    req.end();
  });
  const loop = async (): Promise<void> => {
    while (!stop) await one();
  };
  const loops = Array.from({ length: concurrency }, loop);
  await new Promise((r) => setTimeout(r, 1000));
  measuring = true;
  errors = 0;
  const start = performance.now();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  measuring = false;
  const elapsed = (performance.now() - start) / 1000;
  stop = true;
  await Promise.all(loops);
  lat.sort((a, b) => a - b);
  const pct = (p: number): number => (lat.length === 0 ? 0 : lat[Math.min(lat.length - 1, Math.floor(p * lat.length))]!);
  process.stdout.write(`${JSON.stringify({ requests: lat.length, errors, seconds: elapsed, p50: pct(0.5), p99: pct(0.99), ...(firstError ? { firstError } : {}) } satisfies LoadResult)}\n`);
  agent.destroy();
}

async function load(url: string, host: string, cookiesFile: string, unique: boolean, caFile: string, o: Options): Promise<LoadResult> {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--role', 'load', url, host, cookiesFile, unique ? 'unique' : 'fixed', caFile, String(o.concurrency), String(o.seconds)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  const timer = setTimeout(() => child.kill('SIGKILL'), (o.seconds + 30) * 1000);
  await once(child, 'exit');
  clearTimeout(timer);
  return JSON.parse(out.trim()) as LoadResult;
}

async function main(): Promise<void> {
  if (process.argv[2] === '--role') {
    const [url, host, cookiesFile, paths, caFile, conc, secs] = process.argv.slice(4);
    const { readFileSync } = await import('node:fs');
    const cookies = JSON.parse(readFileSync(cookiesFile!, 'utf8')) as string[];
    await runLoad(url!, host!, cookies.length > 0 ? cookies : [''], paths === 'unique', readFileSync(caFile!, 'utf8'), Number(conc), Number(secs));
    return;
  }
  const o = parseArgs(process.argv.slice(2));
  const say = (s: string): void => { if (!o.json) process.stdout.write(`${s}\n`); };
  const dir = mkdtempSync(join(tmpdir(), 'tessera-bench-gateway-'));
  const closers: (() => Promise<void>)[] = [];
  try {
    const body = Buffer.alloc(1024, 'x');
    const app = createHttpServer((req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
      res.end(body);
    });
    app.listen(0, '127.0.0.1');
    await once(app, 'listening');
    closers.push(() => new Promise((r) => app.close(() => r())));
    const appPort = (app.address() as AddressInfo).port;

    // The control plane (quiet), a person, the gateway's entry, join token and registration.
    const log = createLogger({ level: 'error' });
    const cp = await ControlPlane.start({ trustDomain: 'bench.test', env: {}, log, dataDir: join(dir, 'cp'), host: '127.0.0.1', port: 0, decisions: { rateLimit: { perSecond: 100_000, burst: 100_000 }, replay: { perEnforcer: 1000, maxTotal: 10_000 } },
      // --users people sign in from this one address: the per-address sign-in limit would pace the set-up.
      people: { signInLimits: { rateLimit: { perSecond: 100_000, burst: 100_000 } } } });
    closers.push(() => cp.stop());
    const tlsAdmin = readAdminTls(cp);
    const admin = new ApiClient(cp.url, tlsAdmin);
    closers.push(async () => admin.close());
    await admin.call('POST', '/v1/policies', { files: { 'gateway.cedar': 'permit (principal in Tessera::Group::"eng", action == Tessera::Action::"gateway:request", resource == Tessera::App::"wiki");' }, reason: 'bench' });
    await admin.call('POST', '/v1/users', { username: 'ana', groups: ['eng'] });
    const people = Array.from({ length: o.users }, (_v, i) => `p${i}`);
    for (const username of people) await admin.call('POST', '/v1/users', { username, groups: ['eng'] });
    const cert = gatewayCert(['wiki.localhost']);
    writeFileSync(join(dir, 'gw.pem'), cert.certPem);
    writeFileSync(join(dir, 'gw.key'), cert.keyPem, { mode: 0o600 });
    const caFile = join(dir, 'ca.pem');
    writeFileSync(caFile, `${tlsAdmin.ca}\n${cert.caPem}`);
    const freePort = (): Promise<number> => new Promise<number>((resolve) => {
      const s = createHttpServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    /** A gateway node `name` shipping `rate` of its allowed decisions (denials always). */
    const startGw = async (name: string, rate: number): Promise<number> => {
      const id = `spiffe://bench.test/gateway/${name}`;
      const entry = await admin.call<{ id: string }>('POST', '/v1/entries', { spiffe_id: id });
      const { token } = await admin.call<{ token: string }>('POST', '/v1/tokens', { entry_id: entry.id });
      const port = await freePort();
      await admin.call('POST', '/v1/gateways', { name, spiffe_id: id, urls: [`https://wiki.localhost:${port}`] });
      const node = await startGatewayNode({
        serverUrl: cp.url, dataDir: join(dir, name), name, listen: { host: '127.0.0.1', port }, tlsCertFile: join(dir, 'gw.pem'), tlsKeyFile: join(dir, 'gw.key'),
        joinToken: token, trustBundleFile: join(cp.adminDir, 'bundle.pem'), routes: [parseRoute(`wiki.localhost=http://127.0.0.1:${appPort}`)], log, policyWatchSeconds: 5,
        server: { requestDeviceCert: false }, allowSampleRate: rate,
        // No people's telemetry: the risk engine (rightly) quarantines a person who requests thousands
        // of distinct paths, which would turn the -unique rows, and every later row of that person, into 403s.
        telemetry: false,
      });
      closers.push(() => node.close());
      const version = (await admin.call<{ version: number }>('GET', '/v1/policy/bundle')).version;
      for (let i = 0; i < 200 && node.sidecar.enforcer.version < version; i++) await new Promise((r) => setTimeout(r, 50));
      return port;
    };
    const gwPort = await startGw('apps', 1);
    const sampledPort = await startGw('sampled', 0.01);

    // Sign in: a console link at the control plane, then the gateway's code flow.
    const signedIn = async (username: string): Promise<PeopleBrowser> => {
      const link = await admin.call<{ url: string }>('POST', '/v1/console/links', { username });
      const browser = new PeopleBrowser(`${tlsAdmin.ca}\n${cert.caPem}`);
      await browser.fetch(`${cp.url}/v1/auth/link`, { method: 'POST', headers: { origin: new URL(cp.url).origin, 'content-type': 'application/json' }, body: JSON.stringify({ token: link.url.split('#token=')[1] }) });
      return browser;
    };
    const signIn = async (browser: PeopleBrowser, port: number): Promise<string> => {
      browser.cookies('wiki.localhost').clear();
      const hops = await browser.navigate(`https://wiki.localhost:${port}/`);
      if (hops[hops.length - 1]!.status !== 200) throw new Error(`sign-in through the gateway failed: ${hops.map((h) => h.status).join(' → ')}`);
      return `__Host-tessera_gw=${browser.cookies('wiki.localhost').get('__Host-tessera_gw')}`;
    };
    const ana = await signedIn('ana');
    const many: string[] = [];
    for (const username of people) many.push(await signIn(await signedIn(username), gwPort));
    const cookieFile = (name: string, list: string[]): string => {
      const file = join(dir, `${name}.cookies.json`);
      writeFileSync(file, JSON.stringify(list), { mode: 0o600 });
      return file;
    };
    const anaGw = cookieFile('gateway', [await signIn(ana, gwPort)]);
    const cookies: Record<string, string> = { none: cookieFile('none', []), gateway: anaGw, 'gateway-sampled': cookieFile('sampled', [await signIn(ana, sampledPort)]), many: cookieFile('many', many) };

    // The physical limit: a bare Node HTTPS proxy to the same app.
    const upstream = new HttpAgent({ keepAlive: true, maxSockets: 256 });
    const bare = createHttpsServer({ cert: cert.certPem, key: cert.keyPem }, (req, res) => {
      const up = httpRequest({ host: '127.0.0.1', port: appPort, method: req.method, path: req.url, headers: req.headers, agent: upstream }, (ures) => {
        res.writeHead(ures.statusCode ?? 502, ures.headers);
        ures.pipe(res);
      });
      up.on('error', () => res.destroy());
      req.pipe(up);
    });
    bare.listen(0, '127.0.0.1');
    await once(bare, 'listening');
    closers.push(async () => {
      bare.closeAllConnections();
      await new Promise<void>((r) => bare.close(() => r()));
      upstream.destroy();
    });
    const barePort = (bare.address() as AddressInfo).port;

    const gateway = `https://127.0.0.1:${gwPort}`;
    const targets: Record<string, { url: string; host: string; cookies: string; unique?: true }> = {
      direct: { url: `http://127.0.0.1:${appPort}`, host: '127.0.0.1', cookies: cookies.none! },
      'tls-proxy': { url: `https://127.0.0.1:${barePort}`, host: 'wiki.localhost', cookies: cookies.none! },
      gateway: { url: gateway, host: 'wiki.localhost', cookies: cookies.gateway! },
      'gateway-sampled': { url: `https://127.0.0.1:${sampledPort}`, host: 'wiki.localhost', cookies: cookies['gateway-sampled']! },
      'gateway-unique': { url: gateway, host: 'wiki.localhost', cookies: cookies.gateway!, unique: true },
      'gateway-users': { url: gateway, host: 'wiki.localhost', cookies: cookies.many! },
      'gateway-users-unique': { url: gateway, host: 'wiki.localhost', cookies: cookies.many!, unique: true },
    };
    const results = new Map<string, LoadResult[]>();
    say(`gateway bench: ${o.concurrency} connections, ${o.seconds} s per run, ${o.rounds} rounds, rows interleaved; ${o.users} people in the -users rows`);
    for (let r = 0; r < o.rounds; r++) {
      for (const [name, tg] of Object.entries(targets)) {
        const res = await load(tg.url, tg.host, tg.cookies, tg.unique === true, caFile, o);
        results.set(name, [...(results.get(name) ?? []), res]);
        say(`  round ${r + 1} ${name.padEnd(20)} ${(res.requests / res.seconds).toFixed(0).padStart(7)} req/s  p50 ${res.p50.toFixed(2)} ms  p99 ${res.p99.toFixed(2)} ms${res.errors > 0 ? `  errors ${res.errors} (first: ${res.firstError ?? '?'})` : ''}`);
      }
    }
    const rows: Row[] = [...results].map(([name, runs]) => {
      const sorted = [...runs].sort((a, b) => a.requests / a.seconds - b.requests / b.seconds);
      const med = sorted[Math.floor(sorted.length / 2)]!;
      return { name, rps: med.requests / med.seconds, p50: med.p50, p99: med.p99, errors: runs.reduce((n, x) => n + x.errors, 0), all: runs.map((x) => Math.round(x.requests / x.seconds)) };
    });
    const direct = rows.find((x) => x.name === 'direct')!;
    if (o.json) {
      process.stdout.write(`${JSON.stringify({ concurrency: o.concurrency, seconds: o.seconds, rounds: o.rounds, rows: rows.map((x) => ({ ...x, added_p50_ms: x.p50 - direct.p50, added_p99_ms: x.p99 - direct.p99 })) }, null, 2)}\n`);
    } else {
      say('');
      say(`${'row'.padEnd(20)} ${'req/s'.padStart(8)} ${'p50 ms'.padStart(8)} ${'p99 ms'.padStart(8)} ${'+p50 ms'.padStart(8)} ${'+p99 ms'.padStart(8)}  runs (req/s)`);
      for (const x of rows) say(`${x.name.padEnd(20)} ${x.rps.toFixed(0).padStart(8)} ${x.p50.toFixed(2).padStart(8)} ${x.p99.toFixed(2).padStart(8)} ${(x.p50 - direct.p50).toFixed(2).padStart(8)} ${(x.p99 - direct.p99).toFixed(2).padStart(8)}  ${x.all.join(' ')}${x.errors > 0 ? `  errors ${x.errors}` : ''}`);
      const gw = rows.find((x) => x.name === 'gateway')!;
      const floor = rows.find((x) => x.name === 'tls-proxy')!;
      say(`\ngateway / tls-proxy: ${(gw.rps / floor.rps).toFixed(2)}× the requests/s of a bare Node TLS proxy`);
      const uniq = rows.find((x) => x.name === 'gateway-unique')!;
      const usersU = rows.find((x) => x.name === 'gateway-users-unique')!;
      say(`gateway-unique / gateway: ${(uniq.rps / gw.rps).toFixed(2)}× (every decision a Cedar evaluation); gateway-users-unique / gateway: ${(usersU.rps / gw.rps).toFixed(2)}×`);
    }
  } finally {
    for (const c of closers.reverse()) await c().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
