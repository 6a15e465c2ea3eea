/**
 * A worker of the soak (bench/soak.ts): runs several real agents in one process (2 cores cannot
 * hold 200 agent processes). Each agent is an `Agent` (join with its one-time token, renewal at half
 * life over mTLS, trust bundle long poll, failover between the replicas) with its own
 * `PolicyEnforcer` (signed policy bundle long poll, local Cedar decisions, decision log shipped to
 * the control plane), its own data directory and its own HTTPS connections.
 *
 * Every agent decides one request about itself (as an inbound sidecar would: principal the fleet's
 * client, resource itself, a unique path) every `decideEveryMs`, with every decision recorded (allow
 * sampling 1), so the driver can find each one in the audit log. It reports to the driver over IPC:
 * each SVID (serial), each renewal's duration, each policy bundle installed, each failed request,
 * decision counts once a second. Nothing secret is logged: the join tokens arrive over IPC only.
 */
import { performance } from 'node:perf_hooks';
import { Agent, type SvidEvent } from '../src/agent/agent.js';
import { PolicyEnforcer } from '../src/agent/enforce/policy.js';
import type { Logger } from '../src/core/log.js';
import type { DecisionsRequest, PolicyBundleResponse } from '../src/core/wire/control-plane.js';
import type { FailureKind, FinalAgent, FromWorker, SoakAgentSpec, StartMessage, ToWorker } from './soak-wire.js';

interface Running {
  i: number;
  agent: Agent;
  enforcer: PolicyEnforcer;
  self: string;
  made: number;
  allowed: number;
  validSvid: number;
  reported: [number, number, number];
  timer: NodeJS.Timeout | undefined;
}

const JOIN_CONCURRENCY = 4;
const running: Running[] = [];
let deciding = true;

function send(m: FromWorker): void {
  process.send?.(m);
}

/** Warnings and errors go to this worker's log file (stdout); failures the driver counts go over IPC. */
function loggerFor(i: number, onDebug: (msg: string) => void): Logger {
  const line = (level: string, msg: string, fields?: Record<string, unknown>): void => {
    process.stdout.write(`${JSON.stringify({ ts: new Date().toISOString(), level, agent: i, msg, ...fields })}\n`);
  };
  const log: Logger = {
    debug: (msg) => onDebug(msg),
    info: () => {},
    warn: (msg, fields) => line('warn', msg, fields),
    error: (msg, fields) => line('error', msg, fields),
    child: () => log,
  };
  return log;
}

const codeOf = (err: unknown): string => (err as { code?: string }).code ?? 'ERROR';

async function startOne(spec: SoakAgentSpec, m: StartMessage): Promise<void> {
  const fail = (kind: FailureKind, err: unknown): void => send({ type: 'fail', i: spec.i, at: Date.now(), kind, code: codeOf(err) });
  const log = loggerFor(spec.i, (msg) => {
    if (msg.startsWith('bundle watch failed')) send({ type: 'fail', i: spec.i, at: Date.now(), kind: 'bundle-watch', code: 'UNREACHABLE' });
  });
  const agent = new Agent({ serverUrl: m.serverUrl, dataDir: spec.dataDir, joinToken: spec.token, trustBundleFile: m.trustBundleFile, watchSeconds: m.watchSeconds, log });
  // The agent's own renewal (at half life, from its timer), timed as the agent makes it.
  const renew = agent.renew.bind(agent);
  agent.renew = async (): Promise<void> => {
    const t0 = performance.now();
    try {
      await renew();
      send({ type: 'issue', i: spec.i, at: Date.now(), ms: performance.now() - t0, ok: true });
    } catch (err) {
      send({ type: 'issue', i: spec.i, at: Date.now(), ms: performance.now() - t0, ok: false });
      throw err;
    }
  };
  agent.on('svid', (e: SvidEvent) => send({ type: 'svid', i: spec.i, at: Date.now(), serial: e.serial.toUpperCase(), reason: e.reason }));
  agent.on('renew-failed', (e: { error: unknown }) => fail('renew', e.error));
  const t0 = performance.now();
  try {
    await agent.start();
  } catch (err) {
    fail('join', err);
    throw err;
  }
  const joinMs = performance.now() - t0;
  const self = agent.spiffeId!;
  /** When the long poll's answer reached this agent's code (response read and parsed). */
  let received = 0;
  const enforcer = new PolicyEnforcer({
    dir: spec.dataDir, self, site: agent.entry?.attributes?.site ?? 'default', log,
    trustedCas: () => agent.trustedCas(),
    fetch: async (after, timeout) => {
      try {
        const res = await agent.call<PolicyBundleResponse>('GET', `/v1/policy/bundle?after=${after}&timeout_seconds=${timeout}`, undefined, { timeoutMs: (timeout + 10) * 1000 });
        received = Date.now();
        return res;
      } catch (err) {
        fail('policy-poll', err);
        throw err;
      }
    },
    ship: async (records) => {
      try {
        await agent.call('POST', '/v1/decisions', { decisions: records } satisfies DecisionsRequest);
      } catch (err) {
        fail('decision-ship', err);
        throw err;
      }
    },
    allowSampleRate: 1,
    watchSeconds: m.watchSeconds,
  });
  const r: Running = { i: spec.i, agent, enforcer, self, made: 0, allowed: 0, validSvid: 0, reported: [0, 0, 0], timer: undefined };
  running.push(r);
  const installed = new Promise<void>((resolve) => enforcer.once('policy', () => resolve()));
  enforcer.on('policy', (e: { version: number }) => send({ type: 'policy', i: spec.i, at: Date.now(), received, version: e.version }));
  enforcer.start();
  await installed;
  send({ type: 'ready', i: spec.i, at: Date.now(), joinMs });
  // Spread the agents' decisions over the period (deterministic offsets).
  const offset = (spec.i * 997) % m.decideEveryMs;
  setTimeout(() => {
    if (!deciding) return;
    decide(r);
    r.timer = setInterval(() => decide(r), m.decideEveryMs);
  }, offset);
}

/** One decision about a request to this agent, as its inbound sidecar would make it. */
function decide(r: Running): void {
  if (!deciding) return;
  const d = r.enforcer.decide(client, undefined, 'http:request', r.self, 'GET', `/soak/${r.i}/${r.made}`);
  r.made += 1;
  if (d.allow) r.allowed += 1;
  const cur = r.agent.current();
  if (cur !== undefined && cur.notAfter.getTime() > Date.now()) r.validSvid += 1;
}

let client = '';

function reportDecisions(): void {
  const rows: [number, number, number, number][] = [];
  for (const r of running) {
    const [m, a, v] = r.reported;
    if (r.made === m) continue;
    rows.push([r.i, r.made - m, r.allowed - a, r.validSvid - v]);
    r.reported = [r.made, r.allowed, r.validSvid];
  }
  if (rows.length > 0) send({ type: 'decided', at: Date.now(), rows });
}

async function start(m: StartMessage): Promise<void> {
  client = m.client;
  const queue = [...m.agents];
  await Promise.all(Array.from({ length: JOIN_CONCURRENCY }, async () => {
    for (let spec = queue.shift(); spec !== undefined; spec = queue.shift()) await startOne(spec, m);
  }));
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Stops deciding, ships every record (retrying for up to a minute), reports, stops the agents. */
async function finish(): Promise<void> {
  deciding = false;
  for (const r of running) if (r.timer) clearInterval(r.timer);
  reportDecisions();
  const deadline = Date.now() + 60_000;
  await Promise.all(running.map(async (r) => {
    const log = r.enforcer.decisions;
    for (;;) {
      await log.flush();
      if ((log.buffered === 0 && log.spilledBytes === 0) || Date.now() > deadline) return;
      await sleep(500);
    }
  }));
  const agents: FinalAgent[] = running.map((r) => {
    const log = r.enforcer.decisions;
    return { i: r.i, made: r.made, shipped: log.shipped, dropped: log.dropped, rejected: log.rejected, buffered: log.buffered, spilledBytes: log.spilledBytes, version: r.enforcer.version };
  });
  for (const r of running) {
    await r.enforcer.stop();
    await r.agent.stop();
  }
  await new Promise<void>((resolve) => process.send!({ type: 'final', agents } satisfies FromWorker, () => resolve()));
  process.exit(0);
}

if (!process.send) {
  process.stderr.write('bench/soak-agents: run by bench/soak.ts (needs an IPC channel)\n');
  process.exit(2);
}
const reporter = setInterval(reportDecisions, 1000);
process.on('message', (m: ToWorker) => {
  if (m.type === 'start') {
    start(m).catch((err: unknown) => {
      send({ type: 'fatal', error: (err as Error).message });
    });
  } else if (m.type === 'finish') {
    clearInterval(reporter);
    finish().catch((err: unknown) => {
      send({ type: 'fatal', error: (err as Error).message });
      process.exit(1);
    });
  }
});
// The driver gone: nothing to report to.
process.on('disconnect', () => process.exit(0));
