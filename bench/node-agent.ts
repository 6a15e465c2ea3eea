/**
 * One agent per node (issue 13, item 5): what each additional workload costs a node agent, and SVID
 * rotation of every workload under continuous traffic.
 *
 *   node dist/bench/node-agent.js [--workloads N (2-200, default 50)] [--ttl S (10-300, default 20)]
 *                                 [--rate R (total requests/s, default 500)] [--json]   (npm run bench:node-agent)
 *
 * One control plane process, then three agent processes side by side:
 *   baseline: one per-workload sidecar process (`tessera agent --inbound --outbound`), what every
 *             workload costs today;
 *   node(1):  a node agent (`tessera agent --node`) serving one workload;
 *   node(N):  a node agent serving N workloads, workload i calling workload i+1 through its outbound
 *             and the other's inbound (http mode, every request decided by the real Cedar engine on a
 *             unique path), X.509-SVIDs of `--ttl` seconds (renewed at half life).
 * node(N) carries `--rate` requests/s spread over its N outbounds until every workload's SVID has
 * rotated at least once (its "SVID rotated" log lines) and for at least one SVID lifetime (every
 * certificate in use when the traffic started has expired under it), and the bench counts requests sent and failed
 * (any answer but 200, or a connection error); the baseline and node(1) carry the same rate per workload
 * meanwhile. Then the RSS (VmRSS of /proc/PID/status) of each; per additional workload =
 * (node(N) − node(1)) / (N − 1). The clients keep their connections alive and recycle each one
 * well before its certificate's end (like gRPC's MAX_CONNECTION_AGE; see connectionMaxAgeMs): the
 * proxies close a connection when the certificate it was admitted with expires, a kept-alive http one
 * 3 s before, whatever the node does.
 *
 * Bounded: a deadline; every child is stopped in `finally` and killed if this process exits first.
 * BENCH_KEEP_DIR=1 keeps the temporary directory (every process's log) and prints its path.
 */
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent as HttpAgent, createServer, request, type Server } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EXPIRING_PEER_MARGIN_MS } from '../src/agent/inbound/http.js';
import { ApiClient } from '../src/common/api-client.js';
import { CLI, Children, cleanEnv, type Child } from './procs.js';

const TD = 'bench.test';
const USAGE = 'usage: node dist/bench/node-agent.js [--workloads N (2-200, default 50)] [--ttl SECONDS (10-300, default 20)] [--rate REQUESTS_PER_SECOND (10-20000, default 500)] [--json]';

export interface NodeBenchOptions {
  workloads: number;
  ttlSeconds: number;
  /** Total requests per second over all workloads. */
  rate: number;
  /** The compiled CLI (default: dist/src/cli/main.js next to this file). */
  cli?: string;
  log?: (line: string) => void;
}

export interface NodeBenchResult {
  workloads: number;
  ttl_seconds: number;
  rate: number;
  cpus: number;
  load_before: number;
  rss_mb: { sidecar: number; node_1: number; node_n: number; per_additional_workload: number };
  /** baseline_*: the sidecar's and the 1-workload node's traffic in the same period (same rate per workload). */
  traffic: { seconds: number; sent: number; failed: number; failures: string[]; per_second: number; baseline_sent: number; baseline_failed: number };
  rotations: { total: number; min_per_workload: number; workloads_rotated: number };
  aims: { per_workload_mb: number; failed: number };
  meets: boolean;
}

function parseArgs(argv: string[]): NodeBenchOptions & { json: boolean } {
  const o = { workloads: 50, ttlSeconds: 20, rate: 500, json: false };
  const num = (v: string | undefined, lo: number, hi: number): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < lo || n > hi) {
      process.stderr.write(`bench/node-agent: bad value ${v}\n${USAGE}\n`);
      process.exit(2);
    }
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--workloads') o.workloads = num(argv[++i], 2, 200);
    else if (a === '--ttl') o.ttlSeconds = num(argv[++i], 10, 300);
    else if (a === '--rate') o.rate = num(argv[++i], 10, 20_000);
    else if (a === '--json') o.json = true;
    else {
      process.stderr.write(`bench/node-agent: unknown argument ${a}\n${USAGE}\n`);
      process.exit(2);
    }
  }
  return o;
}

/**
 * How long the load generator keeps a connection: a connection made just before its workload's
 * renewal (at half life) has half an SVID lifetime left, and the inbound proxy closes a kept-alive
 * connection once idle EXPIRING_PEER_MARGIN_MS (3 s) before the caller's certificate expires. A
 * request sent at that instant meets a closing connection (the HTTP keep-alive race; clients that
 * retry an idempotent request on a reused connection never see it, Node's does not retry), so the
 * clients recycle their connections first, allowing for a renewal up to RENEWAL_LATENESS_MS late
 * (seen on a loaded 2-core machine: the renewal's key generation and round trip take that long).
 */
const RENEWAL_LATENESS_MS = 3000;

export function connectionMaxAgeMs(ttlSeconds: number): number {
  return Math.max(500, Math.min((ttlSeconds * 1000) / 4, (ttlSeconds * 1000) / 2 - EXPIRING_PEER_MARGIN_MS - RENEWAL_LATENESS_MS));
}

/** VmRSS of a process in MB (Linux). */
function rssMb(pid: number | undefined): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) / 1024;
}

async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(Array.from({ length: n }, async () => {
    const s = createNetServer();
    s.listen(0, '127.0.0.1');
    await once(s, 'listening');
    return s;
  }));
  const ports = servers.map((s) => (s.address() as AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

type Json = Record<string, unknown>;

/** The JSON log lines of a child so far. */
function logLines(c: Child): Json[] {
  const out: Json[] = [];
  for (const line of readFileSync(c.logFile, 'utf8').split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as Json);
    } catch {
      // a line being written
    }
  }
  return out;
}

/** Paced keep-alive HTTP load on `ports` (round robin), each connection recycled after `maxAgeMs`. */
class Load {
  sent = 0;
  failed = 0;
  readonly failures: string[] = [];
  private stopped = false;
  private readonly agents: HttpAgent[];
  private readonly born = new WeakMap<Socket, number>();
  private readonly loops: Promise<void>[];

  constructor(private readonly ports: number[], rate: number, private readonly maxAgeMs: number) {
    this.agents = ports.map(() => new HttpAgent({ keepAlive: true, maxSockets: 1 }));
    // One sequential client per port, each paced to its share of the rate.
    const intervalMs = (1000 * ports.length) / rate;
    this.loops = ports.map((_, i) => this.loop(i, intervalMs));
  }

  private async loop(i: number, intervalMs: number): Promise<void> {
    let next = Date.now() + Math.random() * intervalMs;
    while (!this.stopped) {
      const wait = next - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      if (this.stopped) return;
      next += intervalMs;
      if (next < Date.now() - 1000) next = Date.now(); // fell behind: no burst to catch up
      await this.one(i);
    }
  }

  private one(i: number): Promise<void> {
    this.sent++;
    // A unique path: the decision cache cannot answer, as on real REST traffic.
    const path = `/items/${Math.floor(Math.random() * 1e9)}`;
    return new Promise((resolve) => {
      let socket: Socket | undefined;
      const fail = (why: string): void => {
        this.failed++;
        const age = socket !== undefined ? ` on a connection ${((Date.now() - (this.born.get(socket) ?? 0)) / 1000).toFixed(1)} s old` : '';
        if (this.failures.length < 10) this.failures.push(`workload ${i}: ${why}${age}, at ${new Date().toISOString().slice(11, 23)}`);
        resolve();
      };
      const req = request({ host: '127.0.0.1', port: this.ports[i], path, agent: this.agents[i] }, (res) => {
        res.resume();
        res.on('end', () => {
          if (res.statusCode !== 200) return fail(`HTTP ${res.statusCode} ${String(res.headers['x-tessera-error'] ?? '')}`);
          if (socket !== undefined && Date.now() - (this.born.get(socket) ?? 0) > this.maxAgeMs) socket.destroy(); // idle now: recycled cleanly
          resolve();
        });
        res.on('error', (e) => fail(e.message));
      });
      req.on('socket', (s: Socket) => {
        socket = s;
        if (!this.born.has(s)) this.born.set(s, Date.now());
      });
      req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
      req.on('error', (e) => fail(e.message));
      req.end();
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.loops);
    for (const a of this.agents) a.destroy();
  }
}

/** Runs the benchmark; every process it starts is stopped before it returns. */
export async function runNodeAgentBench(o: NodeBenchOptions): Promise<NodeBenchResult> {
  const cli = o.cli ?? CLI;
  const say = o.log ?? ((): void => {});
  const loadBefore = loadavg()[0]!;
  const dir = mkdtempSync(join(tmpdir(), 'tessera-bench-node-agent-'));
  const children = new Children(4);
  let admin: ApiClient | undefined;
  let app: Server | undefined;
  const loads: Load[] = [];
  try {
    const cpDir = join(dir, 'cp');
    const cp = children.spawn('control plane', cli, ['--json', 'server', '--data-dir', cpDir, '--listen', '127.0.0.1:0', '--trust-domain', TD], join(dir, 'cp.log'));
    const cpUrl = String((await children.waitForLine(cp, 'control plane listening', 60_000)).url);
    const rd = (n: string): string => readFileSync(join(cpDir, 'admin', n), 'utf8');
    admin = new ApiClient(cpUrl, { ca: rd('bundle.pem'), cert: rd('admin.pem'), key: rd('admin.key') });
    const bundleFile = join(cpDir, 'admin', 'bundle.pem');
    app = createServer((req, res) => {
      req.resume();
      req.on('end', () => res.end('ok'));
    });
    app.listen(0, '127.0.0.1');
    await once(app, 'listening');
    const appPort = (app.address() as AddressInfo).port;
    // Every workload may call every other: each request still goes through the Cedar engine.
    await admin.call('POST', '/v1/policies', { files: { 'calls.cedar': 'permit (principal, action == Tessera::Action::"http:request", resource);' }, reason: 'node agent bench' });
    const entry = async (id: string): Promise<string> => {
      await admin!.call('POST', '/v1/entries', { spiffe_id: id, attributes: { site: 'bench' }, x509_ttl_seconds: o.ttlSeconds });
      return (await admin!.call<{ token: string }>('POST', '/v1/tokens', { entry_id: id, ttl_seconds: 600 })).token;
    };
    const warmup = async (ports: number[]): Promise<void> => {
      const l = new Load(ports, Math.min(o.rate, 200 * ports.length), connectionMaxAgeMs(o.ttlSeconds));
      await new Promise((r) => setTimeout(r, 1000));
      await l.stop();
      if (l.failed > 0) throw new Error(`warm-up failed: ${l.failures.join('; ')}`);
    };

    // Baseline: one per-workload sidecar process, its outbound calling its own inbound.
    const startSidecar = async (): Promise<{ child: Child; outPorts: number[] }> => {
      const [sideIn] = await freePorts(1);
      const sideId = `spiffe://${TD}/sidecar/w0`;
      const child = children.spawn('sidecar', cli, ['--json', '--server', cpUrl, 'agent', '--data-dir', join(dir, 'sidecar'), '--trust-bundle', bundleFile,
        '--inbound', `127.0.0.1:${sideIn}`, '--app', `127.0.0.1:${appPort}`, '--outbound', `127.0.0.1:0=127.0.0.1:${sideIn}@${sideId}`], join(dir, 'sidecar.log'),
      cleanEnv({ TESSERA_JOIN_TOKEN: await entry(sideId) }));
      const port = Number((await children.waitForLine(child, 'outbound proxy listening', 60_000)).port);
      await children.waitForLine(child, 'policy bundle in force', 60_000);
      return { child, outPorts: [port] };
    };

    const startNode = async (name: string, n: number): Promise<{ child: Child; outPorts: number[] }> => {
      const ports = await freePorts(n);
      const ids = Array.from({ length: n }, (_, i) => `spiffe://${TD}/${name}/w${i}`);
      const tokens = await Promise.all(ids.map(entry));
      const workloads = ids.map((id, i) => {
        const tokenFile = join(dir, `${name}-w${i}.token`);
        writeFileSync(tokenFile, tokens[i]!, { mode: 0o600 });
        return {
          name: `w${i}`, join_token_file: tokenFile,
          inbound: { listen: `127.0.0.1:${ports[i]}`, app: `127.0.0.1:${appPort}`, mode: 'http' },
          outbounds: [`127.0.0.1:0=127.0.0.1:${ports[(i + 1) % n]}@${ids[(i + 1) % n]}`],
        };
      });
      const configFile = join(dir, `${name}.json`);
      writeFileSync(configFile, JSON.stringify({ workloads }));
      const child = children.spawn(name, cli, ['--json', '--server', cpUrl, 'agent', '--node', configFile, '--data-dir', join(dir, name), '--trust-bundle', bundleFile], join(dir, `${name}.log`));
      await children.waitForLine(child, 'node agent ready', 60_000 + n * 2000);
      await children.waitForLine(child, 'policy bundle in force', 60_000);
      const out = new Map<string, number>();
      for (const l of logLines(child)) if (l.msg === 'outbound proxy listening') out.set(String(l.workload), Number(l.port));
      return { child, outPorts: workloads.map((w) => out.get(w.name)!) };
    };

    say(`starting a per-workload sidecar process, a node agent serving 1 workload and one serving ${o.workloads}`);
    const [sidecar, node1, nodeN] = await Promise.all([startSidecar(), startNode('node1', 1), startNode('noden', o.workloads)]);
    await warmup([...sidecar.outPorts, ...node1.outPorts, ...nodeN.outPorts]);

    say(`traffic at ${o.rate} requests/s until every SVID has rotated`);
    const rotations = (): Map<string, number> => {
      const m = new Map<string, number>();
      for (const l of logLines(nodeN.child)) if (l.msg === 'SVID rotated') m.set(String(l.workload), (m.get(String(l.workload)) ?? 0) + 1);
      return m;
    };
    const before = rotations();
    const maxAgeMs = connectionMaxAgeMs(o.ttlSeconds);
    const load = new Load(nodeN.outPorts, o.rate, maxAgeMs);
    // The same traffic per workload through the baseline and the 1-workload node, so that all three
    // processes are measured after the same work.
    const companion = new Load([...sidecar.outPorts, ...node1.outPorts], Math.max(2, (2 * o.rate) / o.workloads), maxAgeMs);
    loads.push(load, companion);
    const started = Date.now();
    // Past the first rotation of each workload: half an SVID's life, plus time for the last renewal to settle.
    const deadline = started + o.ttlSeconds * 1500 + 30_000;
    let seen = rotations();
    const rotatedAll = (): boolean => Array.from({ length: o.workloads }, (_, i) => (seen.get(`w${i}`) ?? 0) - (before.get(`w${i}`) ?? 0)).every((c) => c >= 1);
    // At least one SVID lifetime under traffic: every certificate in use when it started has expired.
    while ((!rotatedAll() || Date.now() - started < o.ttlSeconds * 1000) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 250));
      seen = rotations();
    }
    await new Promise((r) => setTimeout(r, 1000)); // requests on the connections made just after the last rotation
    await load.stop();
    await companion.stop();
    const seconds = (Date.now() - started) / 1000;
    seen = rotations();
    const rssSidecar = rssMb(sidecar.child.proc.pid);
    const rssNode1 = rssMb(node1.child.proc.pid);
    const rssNodeN = rssMb(nodeN.child.proc.pid);
    const counts = Array.from({ length: o.workloads }, (_, i) => (seen.get(`w${i}`) ?? 0) - (before.get(`w${i}`) ?? 0));
    const perWorkload = (rssNodeN - rssNode1) / (o.workloads - 1);
    const r2 = (v: number): number => Math.round(v * 100) / 100;
    const result: NodeBenchResult = {
      workloads: o.workloads, ttl_seconds: o.ttlSeconds, rate: o.rate, cpus: cpus().length, load_before: r2(loadBefore),
      rss_mb: { sidecar: r2(rssSidecar), node_1: r2(rssNode1), node_n: r2(rssNodeN), per_additional_workload: r2(perWorkload) },
      traffic: { seconds: r2(seconds), sent: load.sent, failed: load.failed, failures: load.failures, per_second: Math.round(load.sent / seconds), baseline_sent: companion.sent, baseline_failed: companion.failed },
      rotations: { total: counts.reduce((a, b) => a + b, 0), min_per_workload: Math.min(...counts), workloads_rotated: counts.filter((c) => c >= 1).length },
      aims: { per_workload_mb: 5, failed: 0 },
      meets: false,
    };
    result.meets = perWorkload <= result.aims.per_workload_mb && load.failed === 0 && result.rotations.min_per_workload >= 1;
    return result;
  } finally {
    for (const l of loads) await l.stop();
    admin?.close();
    if (app) {
      app.closeAllConnections();
      await new Promise((r) => app!.close(r));
    }
    await children.stopAll(5000);
    if (process.env.BENCH_KEEP_DIR) say(`kept ${dir}`);
    else rmSync(dir, { recursive: true, force: true });
  }
}

export function formatNodeAgentBench(r: NodeBenchResult): string {
  const pad = (s: string, n: number): string => s.padEnd(n);
  const lines = [
    `bench/node-agent: one node agent serving ${r.workloads} workloads (X.509-SVID TTL ${r.ttl_seconds} s), ${r.cpus} CPUs shared, load before ${r.load_before}`,
    '',
    `${pad('memory (VmRSS)', 46)}MB`,
    `${pad('  per-workload sidecar process (baseline)', 46)}${r.rss_mb.sidecar.toFixed(1)}`,
    `${pad('  node agent, 1 workload', 46)}${r.rss_mb.node_1.toFixed(1)}`,
    `${pad(`  node agent, ${r.workloads} workloads`, 46)}${r.rss_mb.node_n.toFixed(1)}`,
    `${pad('  per additional workload (aim <= 5)', 46)}${r.rss_mb.per_additional_workload.toFixed(2)}   (a sidecar each: ${r.rss_mb.sidecar.toFixed(1)})`,
    '',
    `traffic during rotation: ${r.traffic.sent} requests in ${r.traffic.seconds} s (${r.traffic.per_second}/s, unique paths, every one decided by Cedar), failed ${r.traffic.failed} (aim 0)`,
    ...r.traffic.failures.map((f) => `  ${f}`),
    `  same period, same rate per workload, through the sidecar and the 1-workload node: ${r.traffic.baseline_sent} requests, failed ${r.traffic.baseline_failed}`,
    `rotations seen: ${r.rotations.total} (${r.rotations.workloads_rotated}/${r.workloads} workloads rotated, at least ${r.rotations.min_per_workload} each)`,
    '',
    `verdict: ${r.meets ? 'MEETS' : 'DOES NOT MEET'} the aims (<= ${r.aims.per_workload_mb} MB per additional workload, ${r.aims.failed} failed requests, every SVID rotated)`,
  ];
  return `${lines.join('\n')}\n`;
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const deadline = setTimeout(() => {
    process.stderr.write('bench/node-agent: deadline exceeded\n');
    process.exit(3);
  }, (300 + o.workloads * 5 + o.ttlSeconds * 3) * 1000);
  deadline.unref();
  const r = await runNodeAgentBench({ ...o, log: (l) => process.stderr.write(`bench/node-agent: ${l}\n`) });
  clearTimeout(deadline);
  process.stdout.write(o.json ? `${JSON.stringify(r)}\n` : formatNodeAgentBench(r));
  if (!r.meets) process.exitCode = 1;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => {
    process.stderr.write(`bench/node-agent: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
}
