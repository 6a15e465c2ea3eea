/**
 * One agent per node (`tessera agent --node FILE`): one process serves every workload of a host,
 * the way ambient meshes replace per-pod sidecars.
 *
 * Per workload (its own state directory DATA_DIR/workloads/NAME): an Agent (its registration
 * entry, join token, SVID, renewal at half life), its inbound and outbound proxies presenting that
 * SVID, its telemetry (the control plane accepts only edges the reporter is a party to), the
 * decision records about it (shipped as itself: the control plane accepts an enforcer's records
 * only about itself), and its unsealed files.
 *
 * Per node (DATA_DIR/node): one policy enforcer (one signed bundle long poll, one Cedar engine and
 * decision cache; a decision's resource is the workload called, context.site its own entry's
 * site), one audit log witness, one Workload API socket answering each caller with the SVID of the
 * workload whose entry selectors match it (selectEntryForCaller), one JWT bundle feed, one trust
 * bundle long poll (the first workload's agent follows it and hands every new bundle to the others;
 * each also gets the bundle with every renewal). The node's calls (policy stream, witness alarms, JWT
 * bundle) go out with the SVID of the first workload that holds a valid one.
 */
import { join } from 'node:path';
import { EventEmitter } from 'node:events';
import { TesseraError, isTesseraError } from '../../core/errors.js';
import { ensurePrivateDir } from '../../core/files.js';
import type { Logger } from '../../core/log.js';
import type { DecisionsRequest, DecisionsResponse, PolicyBundleResponse, WitnessAlarmRequest, WitnessAlarmResponse } from '../../core/wire/control-plane.js';
import { Agent, type AgentOptions, type BundleEvent } from '../agent.js';
import { DecisionLog, type DecisionRecord } from '../enforce/decision-log.js';
import { PolicyEnforcer } from '../enforce/policy.js';
import type { AgentMetrics } from '../metrics.js';
import { logAgentEvents, logListening } from '../node.js';
import { startSecretFiles, type SecretFiles } from '../secrets/files.js';
import { jwtBundleOf, startWorkloadProxies, workloadIdentity, type SidecarOptions, type WorkloadProxies } from '../sidecar.js';
import { Witness } from '../witness.js';
import { startWorkloadApi, type WorkloadApi } from '../workload-api/index.js';
import type { NodeConfig, NodeWorkloadConfig } from './config.js';

export interface NodeAgentOptions {
  serverUrl: string;
  /** The node's data directory: DATA_DIR/node (shared state) and DATA_DIR/workloads/NAME (each workload's). */
  dataDir: string;
  config: NodeConfig;
  log: Logger;
  trustBundleFile?: string;
  /** Settings every workload shares (the `tessera agent` flags). */
  allowSampleRate?: number;
  decisionBuffer?: number;
  inboundLimits?: SidecarOptions['inboundLimits'];
  policyWatchSeconds?: number;
  telemetry?: SidecarOptions['telemetry'];
  /** Prometheus metrics of the node (`--metrics-listen`; the caller serves its registry). */
  metrics?: AgentMetrics;
  /** Agent settings of every workload (tests and benchmarks: renewAt, watchSeconds). */
  agent?: Pick<AgentOptions, 'renewAt' | 'watchSeconds'>;
}

export interface NodeWorkload {
  name: string;
  agent: Agent;
  proxies: WorkloadProxies;
  /** The records about this workload, shipped as itself. */
  decisions: DecisionLog;
  secretFiles: SecretFiles;
}

export interface NodeAgent {
  workloads: readonly NodeWorkload[];
  enforcer: PolicyEnforcer;
  witness: Witness;
  workloadApi: WorkloadApi | undefined;
  /** Stops the Workload API, every workload's files and proxies, the enforcer (its last records shipped), then the agents. */
  close(): Promise<void>;
}

/** Workload identities joined (or loaded) at once: a join is a key generation and a round trip. */
const START_CONCURRENCY = 8;

/**
 * Starts a node agent for `opts.config` (already checked whole: see loadNodeConfig). Any failure
 * (a refused token, a port in use) stops what was started and throws, naming the workload.
 */
export async function startNodeAgent(opts: NodeAgentOptions): Promise<NodeAgent> {
  const { log, config } = opts;
  ensurePrivateDir(opts.dataDir);
  const nodeDir = join(opts.dataDir, 'node');
  ensurePrivateDir(nodeDir);
  ensurePrivateDir(join(opts.dataDir, 'workloads'));
  const closers: (() => Promise<void>)[] = [];
  const stopAll = async (): Promise<void> => {
    for (const c of closers.splice(0).reverse()) await c().catch(() => {});
  };
  try {
    const agents = await startAgents(opts, closers);
    // The node's own calls use the SVID of the first workload holding a valid one.
    const lead = (): Agent => agents.find((a) => (a.current()?.notAfter.getTime() ?? 0) > Date.now()) ?? agents[0]!;
    const witness = new Witness({
      dir: nodeDir, log,
      report: (alarm) => lead().call<WitnessAlarmResponse>('POST', '/v1/audit/alarms', alarm satisfies WitnessAlarmRequest),
    });
    const { metrics } = opts;
    if (metrics) witness.on('alarm', () => metrics.recordWitnessAlarm());
    // Each workload's records go out as itself: the node's enforcer hands them over (already sampled).
    const logs = new Map<string, DecisionLog>();
    const logOf = (a: Agent, dir: string): DecisionLog => new DecisionLog({
      dir, log, allowSampleRate: 1,
      ship: async (records: DecisionRecord[]) => { await a.call<DecisionsResponse>('POST', '/v1/decisions', { decisions: records } satisfies DecisionsRequest); },
      ...(opts.decisionBuffer !== undefined ? { maxBuffer: opts.decisionBuffer } : {}),
    });
    const workloadLogs = agents.map((a, i) => {
      const d = logOf(a, join(opts.dataDir, 'workloads', config.workloads[i]!.name));
      logs.set(a.spiffeId!, d);
      closers.push(() => d.stop());
      return d;
    });
    const first = agents[0]!;
    const enforcer = new PolicyEnforcer({
      dir: nodeDir, log,
      site: first.entry?.attributes?.site ?? 'default',
      self: first.spiffeId!,
      trustedCas: () => lead().trustedCas(),
      // Federated domains (issue 14): the first workload's agent holds the node's federated bundles.
      federated: (td) => first.isFederated(td),
      fetch: (after, timeout) => lead().call<PolicyBundleResponse>(
        'GET', `/v1/policy/bundle?after=${after}&timeout_seconds=${timeout}&witness=${witness.size}`, undefined, { timeoutMs: (timeout + 10) * 1000 }),
      onCheckpoint: (checkpoint, logKey) => witness.observe(checkpoint, logKey),
      // Records about another workload of this trust domain (a refused upstream) go out as the first one.
      ship: async (records) => { for (const r of records) (logs.get(r.resource) ?? workloadLogs[0]!).record(r); },
      ...(opts.allowSampleRate !== undefined ? { allowSampleRate: opts.allowSampleRate } : {}),
      ...(opts.decisionBuffer !== undefined ? { decisionBuffer: opts.decisionBuffer } : {}),
      ...(opts.policyWatchSeconds !== undefined ? { watchSeconds: opts.policyWatchSeconds } : {}),
    });
    // Every workload's proxies re-judge their connections on a new bundle: one listener each.
    enforcer.setMaxListeners(0);
    enforcer.on('policy', (e: { version: number; reason: string; source: string }) => log.info('policy bundle in force', { version: e.version, reason: e.reason, from: e.source }));
    enforcer.start();
    // Registered after the workloads' logs: stopped before them, so its last records reach them.
    closers.push(() => enforcer.stop());

    const workloads: NodeWorkload[] = [];
    for (const [i, w] of config.workloads.entries()) {
      const agent = agents[i]!;
      const wlog = log.child({ workload: w.name });
      const proxies = await named(w, () => startWorkloadProxies(agent, enforcer, {
        dataDir: join(opts.dataDir, 'workloads', w.name), log: wlog,
        site: agent.entry?.attributes?.site ?? 'default',
        ...(w.inbound ? { inbound: w.inbound } : {}),
        outbounds: w.outbounds,
        ...(opts.inboundLimits ? { inboundLimits: opts.inboundLimits } : {}),
        ...(opts.telemetry !== undefined ? { telemetry: opts.telemetry } : {}),
        ...(metrics ? { metrics: metrics.forWorkload(agent.spiffeId!) } : {}),
      }));
      closers.push(() => proxies.close());
      logListening(proxies, w.inbound, wlog);
      const secretFiles = startSecretFiles(agent, w.unseal, wlog);
      closers.push(async () => secretFiles.close());
      workloads.push({ name: w.name, agent, proxies, decisions: workloadLogs[i]!, secretFiles });
    }

    let workloadApi: WorkloadApi | undefined;
    if (config.workloadApiSocket) {
      const jwt = jwtBundleOf(first, log);
      closers.push(async () => jwt.close());
      const identities = agents.map((a) => workloadIdentity(a, jwt));
      const bus = new EventEmitter();
      bus.setMaxListeners(0);
      for (const a of agents) a.on('svid', () => bus.emit('svid'));
      jwt.on('bundle', () => bus.emit('bundle'));
      await jwt.refresh().catch(() => {});
      const api = await startWorkloadApi({
        socketPath: config.workloadApiSocket, log,
        source: { identities: () => identities, on: (e, f) => bus.on(e, f), off: (e, f) => bus.off(e, f) },
      });
      workloadApi = api;
      closers.push(() => api.close());
      log.info('Workload API listening', { SPIFFE_ENDPOINT_SOCKET: `unix://${config.workloadApiSocket}`, workloads: agents.length });
    }
    metrics?.attachNode({ agents, proxies: () => workloads.map((w) => w.proxies), enforcer, decisionLogs: workloadLogs });
    for (const w of workloads) w.proxies.start();
    log.info('node agent ready', { workloads: workloads.length });
    return {
      workloads, enforcer, witness, workloadApi,
      close: stopAll,
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}

/** Joins (or loads) every workload's identity, a few at a time; each agent is stopped by `closers`. */
async function startAgents(opts: NodeAgentOptions, closers: (() => Promise<void>)[]): Promise<Agent[]> {
  const { config, log } = opts;
  const agents: Agent[] = new Array<Agent>(config.workloads.length);
  let next = 0;
  let failed = false;
  const worker = async (): Promise<void> => {
    while (next < config.workloads.length && !failed) {
      const i = next++;
      const w = config.workloads[i]!;
      const wlog = log.child({ workload: w.name });
      const agent = new Agent({
        serverUrl: opts.serverUrl, dataDir: join(opts.dataDir, 'workloads', w.name), log: wlog,
        ...opts.agent,
        // One trust bundle long poll per node: the first workload's; the others adopt what it gets.
        followBundle: i === 0,
        ...(w.joinToken !== undefined ? { joinToken: w.joinToken } : {}),
        ...(opts.trustBundleFile !== undefined ? { trustBundleFile: opts.trustBundleFile } : {}),
      });
      logAgentEvents(agent, wlog);
      closers.push(() => agent.stop());
      await named(w, () => agent.start()).catch((err: unknown) => {
        failed = true;
        throw err;
      });
      agents[i] = agent;
    }
  };
  const results = await Promise.allSettled(Array.from({ length: Math.min(START_CONCURRENCY, config.workloads.length) }, worker));
  const refused = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (refused) throw refused.reason;
  const first = agents[0]!;
  first.on('bundle', (e: BundleEvent) => {
    const pem = first.current()?.bundlePem;
    if (pem !== undefined) for (const a of agents.slice(1)) a.adoptBundle(pem, e.sequence);
  });
  // The federated bundles come on the same stream: every workload's proxies and Workload API get them.
  const shareFederated = (): void => {
    const feed = first.federatedFeed();
    if (feed !== undefined) for (const a of agents.slice(1)) a.adoptFederated(feed);
  };
  first.on('federated', shareFederated);
  shareFederated();
  return agents;
}

/** Runs `f`; its error says which workload it is about (its code kept). */
async function named<T>(w: NodeWorkloadConfig, f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (err) {
    if (isTesseraError(err)) throw new TesseraError(err.code, `workload "${w.name}": ${err.message}`);
    throw err;
  }
}
