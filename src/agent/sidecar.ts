import { EventEmitter } from 'node:events';
import type { Logger } from '../core/log.js';
import type { BundleResponse, DecisionsRequest, DecisionsResponse, JwtSvidRequest, JwtSvidResponse, PolicyBundleResponse, WitnessAlarmRequest, WitnessAlarmResponse } from '../core/wire/control-plane.js';
import type { Agent } from './agent.js';
import type { AgentMetrics, ProxyMetrics } from './metrics.js';
import { PolicyEnforcer } from './enforce/policy.js';
import { Witness } from './witness.js';
import type { DecisionRecord } from './enforce/decision-log.js';
import { PerSecondSampler } from '../core/sampler.js';
import { DEFAULT_INBOUND_LIMITS, startInbound, type Inbound, type InboundLimits, type InboundOptions, type InboundStats, type PathAllowances, type PeerStatus } from './inbound/inbound.js';
import { QUARANTINED_REFUSAL } from './inbound/rejudge.js';
import { startHaproxyInbound } from './haproxy/inbound.js';
import { startOutbound, type Outbound, type OutboundListen, type OutboundRefusal } from './outbound/outbound.js';
import { startWorkloadApi, type IdentitySource } from './workload-api/index.js';
import { TelemetryCollector } from './telemetry/collector.js';
import { TelemetryShipper } from './telemetry/shipper.js';
import type { TelemetryRequest, TelemetryResponse } from '../core/wire/control-plane.js';

export interface SidecarOptions {
  dataDir: string;
  log: Logger;
  /** Inbound proxy: mTLS on `listen`, the app on `app` (plain, loopback). */
  inbound?: {
    listen: { host: string; port: number }; app: { host: string; port: number }; mode: 'tcp' | 'http'; allowPath?: Partial<PathAllowances>;
    /**
     * Who terminates the callers' mTLS: the agent itself (`node`, the default) or Debian's HAProxy
     * run by the agent, asking it for every decision over SPOE (`haproxy`, http mode only; src/agent/haproxy).
     */
    dataPlane?: 'node' | 'haproxy';
  };
  /** The inbound data plane can no longer serve (HAProxy keeps dying): the agent must stop. */
  onFatal?: (err: Error) => void;
  /**
   * Outbound proxies: the app talks plain to `listen`, the agent opens mTLS to `upstream`. On a
   * Unix socket only processes matching the entry's `unix:` selectors get through; on TCP any local user.
   */
  outbounds?: { listen: OutboundListen; upstream: { host: string; port: number; expectedId: string } }[];
  /** SPIFFE Workload API socket path. */
  workloadApiSocket?: string;
  /** Fraction of allowed decisions recorded (denials always are). */
  allowSampleRate?: number;
  /** Most decision records waiting in memory to be shipped (default 10,000; more are dropped and counted). */
  decisionBuffer?: number;
  /** Caps of the inbound proxy (defaults: DEFAULT_INBOUND_LIMITS). */
  inboundLimits?: Partial<InboundLimits>;
  /** Long-poll time of the policy watch. */
  policyWatchSeconds?: number;
  /** Prometheus metrics (`--metrics-listen`): the proxies report decisions, refusals and durations to it. */
  metrics?: AgentMetrics;
  /**
   * Telemetry windows shipped to the control plane (src/agent/telemetry): on by default with 5 s
   * windows; `false` turns it off (`--no-telemetry`).
   */
  telemetry?: false | { windowSeconds?: number; maxEdges?: number; maxQueue?: number };
}

export interface Sidecar {
  enforcer: PolicyEnforcer;
  /** The audit log witness: `witness.alarms` is the counter behind tessera_audit_witness_alarms_total. */
  witness: Witness;
  inbound: Inbound | undefined;
  outbounds: Outbound[];
  /** Telemetry collection and shipping, unless turned off. */
  telemetry: { collector: TelemetryCollector; shipper: TelemetryShipper } | undefined;
  close(): Promise<void>;
}

/**
 * Everything an agent runs next to its workload once it has an identity: the policy enforcer
 * (signed bundle, local Cedar decisions, decision log), the inbound and outbound mTLS proxies and
 * the Workload API. The proxies take their TLS material from the agent and rebuild their
 * contexts on every rotation.
 */
export async function startSidecar(agent: Agent, opts: SidecarOptions): Promise<Sidecar> {
  const { log, metrics } = opts;
  // The agent witnesses the audit log's checkpoints, which ride on the policy stream.
  const witness = new Witness({
    dir: opts.dataDir, log,
    report: (alarm) => agent.call<WitnessAlarmResponse>('POST', '/v1/audit/alarms', alarm satisfies WitnessAlarmRequest),
  });
  if (metrics) witness.on('alarm', () => metrics.recordWitnessAlarm());
  const enforcer = new PolicyEnforcer({
    dir: opts.dataDir,
    site: agent.entry?.attributes?.site ?? 'default',
    ...(agent.spiffeId ? { self: agent.spiffeId } : {}),
    log,
    trustedCas: () => agent.trustedCas(),
    federated: (td) => agent.isFederated(td),
    fetch: (after, timeout) => agent.call<PolicyBundleResponse>(
      'GET', `/v1/policy/bundle?after=${after}&timeout_seconds=${timeout}&witness=${witness.size}`, undefined, { timeoutMs: (timeout + 10) * 1000 }),
    onCheckpoint: (checkpoint, logKey) => witness.observe(checkpoint, logKey),
    ship: async (records: DecisionRecord[]) => { await agent.call<DecisionsResponse>('POST', '/v1/decisions', { decisions: records } satisfies DecisionsRequest); },
    ...(opts.allowSampleRate !== undefined ? { allowSampleRate: opts.allowSampleRate } : {}),
    ...(opts.decisionBuffer !== undefined ? { decisionBuffer: opts.decisionBuffer } : {}),
    ...(opts.policyWatchSeconds !== undefined ? { watchSeconds: opts.policyWatchSeconds } : {}),
  });
  enforcer.start();
  const closers: (() => Promise<void>)[] = [() => enforcer.stop()];
  let proxies: WorkloadProxies;
  try {
    proxies = await startWorkloadProxies(agent, enforcer, opts);
    closers.push(() => proxies.close());
    if (opts.workloadApiSocket) {
      const jwt = jwtBundleOf(agent, log);
      closers.push(async () => jwt.close());
      const source = workloadIdentity(agent, jwt);
      await jwt.refresh().catch(() => {});
      const api = await startWorkloadApi({ socketPath: opts.workloadApiSocket, log, source });
      closers.push(() => api.close());
      log.info('Workload API listening', { SPIFFE_ENDPOINT_SOCKET: `unix://${opts.workloadApiSocket}` });
    }
  } catch (err) {
    for (const c of closers.reverse()) await c().catch(() => {});
    throw err;
  }
  proxies.start();
  return {
    enforcer, witness, inbound: proxies.inbound, outbounds: proxies.outbounds, telemetry: proxies.telemetry,
    close: async () => {
      for (const c of closers.reverse()) await c().catch(() => {});
    },
  };
}

/** What runs per workload: its proxies and telemetry (see {@link startWorkloadProxies}). */
export type WorkloadProxiesOptions = Omit<SidecarOptions, 'workloadApiSocket' | 'allowSampleRate' | 'decisionBuffer' | 'policyWatchSeconds' | 'metrics'> & {
  /** What the proxies report to: the sidecar's metrics, or this workload's view of the node's. */
  metrics?: ProxyMetrics;
  /** context.site of this workload's decisions, when one enforcer serves workloads of several sites (default: the enforcer's). */
  site?: string;
};

export interface WorkloadProxies {
  inbound: Inbound | undefined;
  outbounds: Outbound[];
  telemetry: Sidecar['telemetry'];
  /** Starts the telemetry windows (once the caller has started everything else). */
  start(): void;
  close(): Promise<void>;
}

/**
 * One workload's inbound and outbound proxies and its telemetry, deciding with `enforcer` (its own
 * in a sidecar; the node's, shared by every workload, in a node agent) and presenting `agent`'s
 * SVID. Open connections are re-judged on every new policy bundle. Nothing is left running when
 * it throws (a port in use).
 */
export async function startWorkloadProxies(agent: Agent, enforcer: PolicyEnforcer, opts: WorkloadProxiesOptions): Promise<WorkloadProxies> {
  const { log, metrics } = opts;
  const peerStatus: PeerStatus = (id, serial) => enforcer.peerStatus(id, serial);

  const closers: (() => Promise<void>)[] = [];
  let telemetry: Sidecar['telemetry'];
  if (opts.telemetry !== false && agent.spiffeId !== undefined) {
    const t = opts.telemetry ?? {};
    const shipper = new TelemetryShipper({
      ship: async (windows, dropped) => { await agent.call<TelemetryResponse>('POST', '/v1/telemetry', { windows, ...(dropped > 0 ? { dropped } : {}) } satisfies TelemetryRequest); },
      ...(t.maxQueue !== undefined ? { maxQueue: t.maxQueue } : {}),
    });
    const collector = new TelemetryCollector({
      self: agent.spiffeId, selfSite: agent.entry?.attributes?.site ?? 'unknown', dir: opts.dataDir,
      peerSite: (id) => enforcer.siteOf(id),
      onWindows: (windows, dropped) => shipper.enqueue(windows, dropped),
      ...(t.windowSeconds !== undefined ? { windowSeconds: t.windowSeconds } : {}),
      ...(t.maxEdges !== undefined ? { maxEdges: t.maxEdges } : {}),
    });
    telemetry = { collector, shipper };
    // Closed after the proxies (closers run in reverse): the last window is shipped, once.
    closers.push(async () => {
      collector.stop();
      await shipper.stop();
    });
  }
  let inbound: Inbound | undefined;
  const outbounds: Outbound[] = [];
  // A new policy bundle (which carries the revocation list) re-judges every open connection:
  // what was allowed at its handshake may no longer be. Coalesced: one pass per burst of installs.
  let rejudgePending = false;
  const rejudge = (): void => {
    if (rejudgePending) return;
    rejudgePending = true;
    setImmediate(() => {
      rejudgePending = false;
      const r = inbound?.rejudge();
      let outClosed = 0;
      for (const o of outbounds) outClosed += o.rejudge().closed;
      if ((r?.closed ?? 0) > 0 || outClosed > 0) log.info('re-judged open connections', { inboundClosed: r?.closed ?? 0, inboundChecked: r?.checked ?? 0, outboundClosed: outClosed });
    });
  };
  enforcer.on('policy', rejudge);
  closers.push(async () => { enforcer.off('policy', rejudge); });
  try {
    if (opts.inbound) {
      const hooks = inboundPolicyHooks(enforcer, agent.spiffeId!, log, metrics, opts.site);
      const inboundOptions: InboundOptions = {
        listen: opts.inbound.listen, app: opts.inbound.app, mode: opts.inbound.mode, tls: agent, ...(opts.inboundLimits ? { limits: opts.inboundLimits } : {}),
        ...(opts.inbound.allowPath ? { allowPath: opts.inbound.allowPath } : {}),
        ...(metrics ? { metrics: metrics.inbound } : {}),
        ...(telemetry ? { telemetry: telemetry.collector.lane('callee', opts.inbound.mode) } : {}),
        authorize: hooks.authorize, onDecision: hooks.onDecision, onRefused: hooks.onRefused, peerStatus: hooks.peerStatus,
      };
      // The HAProxy data plane's decision cache is flushed by rejudge() on every policy bundle.
      inbound = opts.inbound.dataPlane === 'haproxy'
        ? await startHaproxyInbound({
          ...inboundOptions, dataDir: opts.dataDir,
          onWarning: (message, fields) => log.warn(message, fields),
          onFatal: (err) => {
            log.error('the inbound data plane is down', { code: err.code, error: err.message });
            opts.onFatal?.(err);
          },
        })
        : await startInbound(inboundOptions);
      const inb = inbound;
      closers.push(() => inb.close());
      if (opts.inbound.dataPlane === 'haproxy') {
        const stop = flushAtGrantBoundaries(enforcer, () => { inb.rejudge(); });
        closers.push(async () => stop());
      }
      const summary = summarizeSampling(inb, enforcer, hooks.deniedLines, log);
      closers.push(async () => clearInterval(summary));
    }
    // Each connection of the app (or of any local user) to an outbound listener can cause one:
    // sampled like the inbound's refusals (the outbound's stats count them all).
    const upstreamRefusals = new PerSecondSampler(opts.inboundLimits?.refusalRecordsPerSecond ?? DEFAULT_INBOUND_LIMITS.refusalRecordsPerSecond);
    for (const o of opts.outbounds ?? []) {
      const callerRefused = localCallerLog(log);
      const out = await startOutbound({
        listen: o.listen, upstream: o.upstream, tls: agent, peerStatus,
        ...(telemetry ? { telemetry: telemetry.collector.lane('caller', 'tcp') } : {}),
        selfRefusal: () => {
          const self = agent.spiffeId;
          return self !== undefined && enforcer.isQuarantined(self) ? QUARANTINED_REFUSAL : undefined;
        },
        entrySelectors: () => agent.entry?.selectors ?? [],
        onRefused: (r) => {
          metrics?.outboundRefused(r.code);
          if (r.code === 'TESSERA_PROXY_LOCAL_CALLER') return callerRefused(r);
          if (!upstreamRefusals.take(r.code, r.time)) return;
          log.warn('upstream refused', { code: r.code, reason: r.reason, expected: o.upstream.expectedId });
          enforcer.recordRefusal(o.upstream.expectedId, r.code, r.reason, 'tls:upstream', opts.site);
        },
      });
      outbounds.push(out);
      closers.push(() => out.close());
    }
  } catch (err) {
    for (const c of closers.reverse()) await c().catch(() => {});
    throw err;
  }
  return {
    inbound, outbounds, telemetry,
    start: () => telemetry?.collector.start(),
    close: async () => {
      for (const c of closers.reverse()) await c().catch(() => {});
    },
  };
}

/**
 * How the sidecar connects its inbound proxy to the policy enforcer (`self`: this workload's SPIFFE ID,
 * the resource of every decision): each request or connection decided by the enforcer (revocation,
 * quarantine, Cedar, decision log), decisions counted for metrics, one 'denied' log line per caller and
 * second at most (a caller can send denied requests at will), refusals logged and recorded. `site`:
 * context.site of the decisions, when one enforcer serves workloads of several sites (a node agent).
 * bench/sidecar wires its Tessera rows with this too, so they decide as a deployed agent does.
 */
export function inboundPolicyHooks(enforcer: PolicyEnforcer, self: string, log: Logger, metrics?: ProxyMetrics, site?: string): {
  authorize: NonNullable<InboundOptions['authorize']>;
  onDecision: NonNullable<InboundOptions['onDecision']>;
  onRefused: NonNullable<InboundOptions['onRefused']>;
  peerStatus: PeerStatus;
  deniedLines: PerSecondSampler;
} {
  const deniedLines = new PerSecondSampler(1);
  return {
    deniedLines,
    peerStatus: (id, serial) => enforcer.peerStatus(id, serial),
    authorize: (r) => enforcer.decide(r.peer, r.serial, r.action, self, r.method, r.path, site),
    onDecision: (r) => {
      metrics?.decision(r.peer, r.allow);
      if (!r.allow && deniedLines.take(r.peer, r.time)) log.info('denied', { peer: r.peer, action: r.action, method: r.method, path: r.path, reasons: r.reasons });
    },
    onRefused: (r) => {
      log.info('connection refused', { code: r.code, reason: r.reason, remote: r.remote });
      enforcer.recordRefusal(self, r.code, r.reason, 'tls:handshake', site);
    },
  };
}

/** The trust domain's JWT bundle (JWKS), fetched through `agent` at start and on every bundle change; 'bundle' when it changed. */
export interface JwtBundleFeed extends EventEmitter {
  readonly jwks: { keys: object[] };
  refresh(): Promise<void>;
  close(): void;
}

export function jwtBundleOf(agent: Pick<Agent, 'call' | 'on' | 'off'>, log: Logger): JwtBundleFeed {
  const feed = new EventEmitter() as JwtBundleFeed & { jwks: { keys: object[] } };
  feed.setMaxListeners(0); // one listener per workload of a node agent
  feed.jwks = { keys: [] };
  feed.refresh = async () => {
    feed.jwks = await agent.call<BundleResponse>('GET', '/v1/bundle');
    feed.emit('bundle');
  };
  const onBundle = (): void => void feed.refresh().catch((e: { code?: string }) => log.warn('JWT bundle refresh failed', { code: e.code }));
  agent.on('bundle', onBundle);
  feed.close = () => { agent.off('bundle', onBundle); };
  return feed;
}

/** `agent`'s identity as the Workload API serves it: its SVID and entry selectors, the node's JWT bundle. */
export function workloadIdentity(agent: Agent, jwt: JwtBundleFeed): IdentitySource {
  const bus = new EventEmitter();
  agent.on('svid', () => bus.emit('svid'));
  jwt.on('bundle', () => bus.emit('bundle'));
  agent.on('federated', () => bus.emit('bundle'));
  return {
    get trustDomain() { return agent.trustDomain ?? ''; },
    current: () => agent.current(),
    jwtBundle: () => jwt.jwks,
    mintJwt: (audience) => agent.call<JwtSvidResponse>('POST', '/v1/svid/jwt', { audience } satisfies JwtSvidRequest),
    entrySelectors: () => agent.entry?.selectors ?? [],
    federatedBundles: () => agent.federatedBundles(),
    on: (e, f) => bus.on(e, f),
    off: (e, f) => bus.off(e, f),
  };
}

const SUMMARY_MS = 5000;

/**
 * Every 5 s in which something was sampled away (refusals not recorded one by one, 'denied' lines
 * not logged, decision records dropped), one warning with the counts of that period.
 */
function summarizeSampling(inbound: Inbound, enforcer: PolicyEnforcer, deniedLines: PerSecondSampler, log: Logger): NodeJS.Timeout {
  const snapshot = (): { s: InboundStats; notLogged: number; dropped: number } => ({ s: inbound.stats, notLogged: deniedLines.skipped, dropped: enforcer.decisions.dropped });
  let last = snapshot();
  const timer = setInterval(() => {
    const now = snapshot();
    const notRecorded = now.s.refusalsNotRecorded - last.s.refusalsNotRecorded;
    const notLogged = now.notLogged - last.notLogged;
    const dropped = now.dropped - last.dropped;
    if (notRecorded + notLogged + dropped > 0) {
      log.warn('inbound refusals and denials sampled', {
        seconds: SUMMARY_MS / 1000,
        handshake_failures: now.s.handshakeFailures - last.s.handshakeFailures,
        identity_refused: now.s.identityRefused - last.s.identityRefused,
        denied: now.s.denied - last.s.denied,
        not_recorded: notRecorded,
        not_logged: notLogged,
        decisions_dropped: dropped,
      });
    }
    last = now;
  }, SUMMARY_MS);
  timer.unref();
  return timer;
}

/**
 * Logs local processes refused by an outbound Unix socket: the first at once, then at most one line
 * every 10 s with the count in between, so that a local user connecting in a loop cannot flood the log.
 */
function localCallerLog(log: Logger): (r: OutboundRefusal) => void {
  let last = 0;
  let suppressed = 0;
  return (r) => {
    if (r.time - last < 10_000) {
      suppressed++;
      return;
    }
    log.warn('local caller refused by the outbound socket', { reason: r.reason, ...r.caller, refused_since_last: suppressed });
    last = r.time;
    suppressed = 0;
  };
}

/**
 * HAProxy keys its cached allows by the minute, not by the enforcer's decision clock, which never
 * rounds across a grant's start or expiry: without a flush at each such boundary an allow made under
 * a just-in-time grant would be served until the minute ends, after the grant. `flush` is called at
 * every boundary of the bundle in force (re-planned on each new bundle); returns the stopper.
 */
export function flushAtGrantBoundaries(enforcer: PolicyEnforcer, flush: () => void): () => void {
  let timer: NodeJS.Timeout | undefined;
  const plan = (): void => {
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
    const now = Date.now();
    const at = enforcer.nextGrantBoundary(now);
    if (at === undefined) return;
    // setTimeout holds at most 2^31-1 ms (~24.8 days): wake then and plan again.
    timer = setTimeout(() => {
      timer = undefined;
      if (Date.now() >= at) flush();
      plan();
    }, Math.min(Math.max(0, at - now), 2 ** 31 - 1));
    timer.unref();
  };
  plan();
  enforcer.on('policy', plan);
  return () => {
    enforcer.off('policy', plan);
    if (timer !== undefined) clearTimeout(timer);
  };
}
