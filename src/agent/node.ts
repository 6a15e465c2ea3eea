/**
 * An agent node, as `tessera agent` runs it: the Agent (join, SVID renewal, trust bundle), its
 * events logged, the sidecar (policy enforcer, inbound and outbound proxies, Workload API) and the
 * `--unseal` secret files; stopped in the reverse order.
 */
import type { Logger } from '../core/log.js';
import { Agent, type BundleEvent, type SvidEvent } from './agent.js';
import type { AgentMetrics } from './metrics.js';
import { startSecretFiles, type SecretFiles, type SecretFileSpec } from './secrets/files.js';
import { startSidecar, type Sidecar, type SidecarOptions } from './sidecar.js';

export interface AgentNodeOptions {
  serverUrl: string;
  dataDir: string;
  log: Logger;
  joinToken?: string;
  trustBundleFile?: string;
  /** What the sidecar runs (its data directory and logger are the node's). */
  sidecar?: Omit<SidecarOptions, 'dataDir' | 'log'>;
  /** Sealed files to open for the app (`--unseal`). */
  unseal?: SecretFileSpec[];
  /** Prometheus metrics of this agent (`--metrics-listen`; the caller serves its registry). */
  metrics?: AgentMetrics;
}

export interface AgentNode {
  agent: Agent;
  sidecar: Sidecar;
  secretFiles: SecretFiles;
  /** Stops the secret files, the sidecar, then the agent. */
  close(): Promise<void>;
}

const hostPort = (a: { host: string; port: number }): string => (a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`);

/** The agent's identity events as log lines (joined, loaded, rotated; trust bundle updated). */
export function logAgentEvents(agent: Agent, log: Logger): void {
  agent.on('svid', (e: SvidEvent) => log.info(e.reason === 'loaded' ? 'SVID loaded from disk' : e.reason === 'join' ? 'joined: SVID issued' : 'SVID rotated', {
    spiffe_id: e.spiffeId, serial: e.serial, not_after: e.notAfter.toISOString(), issuer: e.issuer,
  }));
  agent.on('bundle', (e: BundleEvent) => log.info('trust bundle updated', { sequence: e.sequence, authorities: e.authorities }));
}

/** One line per listening proxy (scripts and tests read the ports from them). */
export function logListening(p: Pick<Sidecar, 'inbound' | 'outbounds'>, inbound: SidecarOptions['inbound'], log: Logger): void {
  if (p.inbound && inbound) log.info('inbound proxy listening', { port: p.inbound.port, mode: inbound.mode, app: hostPort(inbound.app) });
  for (const out of p.outbounds) log.info('outbound proxy listening', out.socketPath ? { socket: out.socketPath } : { port: out.port, warning: 'any local user can use this port; prefer --outbound unix:PATH' });
}

/**
 * Starts an agent node. The caller checks its options first: a bad option must fail before the
 * agent joins (it would spend the one-time join token). A sidecar that cannot start (a port in
 * use) stops the agent again, so the caller gets the error instead of a half-started node.
 */
export async function startAgentNode(opts: AgentNodeOptions): Promise<AgentNode> {
  const { log } = opts;
  const agent = new Agent({
    serverUrl: opts.serverUrl, dataDir: opts.dataDir, log,
    ...(opts.joinToken ? { joinToken: opts.joinToken } : {}),
    ...(opts.trustBundleFile ? { trustBundleFile: opts.trustBundleFile } : {}),
  });
  logAgentEvents(agent, log);
  await agent.start();
  opts.metrics?.attachAgent(agent);
  const sidecar = await startSidecar(agent, { ...opts.sidecar, dataDir: opts.dataDir, log, ...(opts.metrics ? { metrics: opts.metrics } : {}) }).catch(async (err: unknown) => {
    await agent.stop();
    throw err;
  });
  opts.metrics?.attachSidecar(sidecar);
  sidecar.enforcer.on('policy', (e: { version: number; reason: string; source: string }) => log.info('policy bundle in force', { version: e.version, reason: e.reason, from: e.source }));
  // A bundle loaded from the cache at start (static stability) was installed before the listener above.
  if (sidecar.enforcer.version > 0) log.info('policy bundle in force', { version: sidecar.enforcer.version, from: 'cache' });
  logListening(sidecar, opts.sidecar?.inbound, log);
  const secretFiles = startSecretFiles(agent, opts.unseal ?? [], log);
  return {
    agent, sidecar, secretFiles,
    async close() {
      secretFiles.close();
      await sidecar.close();
      await agent.stop();
    },
  };
}
