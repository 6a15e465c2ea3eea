/**
 * A key server node, as `tessera keyserver` runs it: an Agent (its SVID and trust bundle, which the
 * key server's mTLS uses and follows through rotations), the sidecar's policy enforcer (Cedar
 * `secret:unseal` decisions, from the signed policy bundle), and the key server itself.
 *
 * Importing src/agent here is intended: a key server node runs an agent for its identity and its
 * policy, exactly as a workload does. The key server proper (server.ts, service.ts, store.ts)
 * depends on neither; it takes a TlsSource and an authorize function.
 */
import { Agent } from '../agent/agent.js';
import { startSidecar, type Sidecar } from '../agent/sidecar.js';
import type { Logger } from '../core/log.js';
import type { RateLimit } from '../core/rate-limit.js';
import { secretResource } from './authorize.js';
import { startKeyServer, type KeyServer } from './server.js';
import type { KeyAuditEvent } from './service.js';
import type { KeyServerMetrics } from './metrics.js';
import type { DkgSessionEvent } from './dkg.js';

export interface KeyServerNodeOptions {
  serverUrl: string;
  dataDir: string;
  listen: { host: string; port: number };
  log: Logger;
  joinToken?: string;
  trustBundleFile?: string;
  env?: NodeJS.ProcessEnv;
  /** Extra audit sink (tests); every event is also logged. */
  onAudit?: (event: KeyAuditEvent) => void;
  policyWatchSeconds?: number;
  /** Per-caller rate limit of /v1/evaluate (default DEFAULT_RATE_LIMIT; benchmarks raise it). */
  rateLimit?: RateLimit;
  /** Prometheus metrics (`--metrics-listen`; the caller serves its registry). */
  metrics?: KeyServerMetrics;
  /**
   * Unseal telemetry: per window and caller, the key server's evaluate answers are shipped to the
   * control plane as `reporter: callee`, `action: unseal` windows by its sidecar's collector and
   * shipper (default 5 s windows); `false` turns it off (`--no-telemetry`).
   */
  telemetry?: false | { windowSeconds?: number };
}

export interface KeyServerNode {
  agent: Agent;
  sidecar: Sidecar;
  keyServer: KeyServer;
  close(): Promise<void>;
}

export async function startKeyServerNode(opts: KeyServerNodeOptions): Promise<KeyServerNode> {
  const { log } = opts;
  const agent = new Agent({
    serverUrl: opts.serverUrl, dataDir: opts.dataDir, log,
    ...(opts.joinToken ? { joinToken: opts.joinToken } : {}),
    ...(opts.trustBundleFile ? { trustBundleFile: opts.trustBundleFile } : {}),
  });
  await agent.start();
  let sidecar: Sidecar | undefined;
  try {
    sidecar = await startSidecar(agent, {
      dataDir: opts.dataDir, log, allowSampleRate: 1,
      ...(opts.policyWatchSeconds !== undefined ? { policyWatchSeconds: opts.policyWatchSeconds } : {}),
      ...(opts.telemetry !== undefined ? { telemetry: opts.telemetry } : {}),
    });
    const enforcer = sidecar.enforcer;
    const metrics = opts.metrics;
    metrics?.attach(agent, enforcer);
    const td = agent.trustDomain!;
    const keyServer = await startKeyServer({
      dataDir: opts.dataDir,
      listen: opts.listen,
      tls: agent,
      trustDomain: td,
      provisioners: [`spiffe://${td}/tessera/admin`],
      // Named admins as the signed bundle lists them: one removed is refused once the bundle without
      // it arrives (within a second while the control plane is reachable).
      isProvisioner: (caller) => enforcer.isNamedAdmin(caller.spiffeId, caller.serial),
      // Anyone else (a person's `tessera login` certificate) with a provisioning authorization the
      // control plane signed after the admin policy allowed the operation (README "Secrets").
      provisionAuthorization: { self: () => agent.spiffeId, trustedCas: () => agent.trustedCas() },
      authorize: (caller, policy) => {
        const d = enforcer.authorize({ principal: caller.spiffeId, ...(caller.serial !== undefined ? { serial: caller.serial } : {}), action: 'secret:unseal', resource: secretResource(td, policy) });
        return d.allow || (d.reasons[0] === 'quarantined' ? 'quarantined' : false);
      },
      log,
      ...(opts.env ? { env: opts.env } : {}),
      ...(opts.rateLimit ? { rateLimit: opts.rateLimit } : {}),
      ...(metrics ? { observeEvaluate: (s: number) => metrics.observeEvaluate(s), observeDkg: (e: DkgSessionEvent) => metrics.observeDkg(e) } : {}),
      ...(sidecar.telemetry ? { unsealTelemetry: sidecar.telemetry.collector.lane('callee', 'unseal') } : {}),
      onAudit: (ev) => {
        metrics?.audit(ev);
        // No point material is in an event: who, which policy and epoch, the outcome.
        log.info('keyserver audit', { ...ev });
        opts.onAudit?.(ev);
      },
    });
    const sc = sidecar;
    return {
      agent, sidecar: sc, keyServer,
      async close() {
        await keyServer.close().catch(() => {});
        await sc.close();
        await agent.stop();
      },
    };
  } catch (err) {
    await sidecar?.close().catch(() => {});
    await agent.stop().catch(() => {});
    throw err;
  }
}
