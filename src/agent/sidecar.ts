import { EventEmitter } from 'node:events';
import type { Logger } from '../core/log.js';
import type { SignedPolicyBundle } from '../core/policy/bundle.js';
import type { Agent } from './agent.js';
import { PolicyEnforcer } from './enforce/policy.js';
import type { DecisionRecord } from './enforce/decision-log.js';
import { startInbound, type Inbound } from './inbound/inbound.js';
import { startOutbound, type Outbound } from './outbound/outbound.js';
import { startWorkloadApi } from './workload-api/index.js';

export interface SidecarOptions {
  dataDir: string;
  log: Logger;
  /** Inbound proxy: mTLS on `listen`, the app on `app` (plain, loopback). */
  inbound?: { listen: { host: string; port: number }; app: { host: string; port: number }; mode: 'tcp' | 'http' };
  /** Outbound proxies: the app talks plain to `listen`, the agent opens mTLS to `upstream`. */
  outbounds?: { listen: { host: string; port: number }; upstream: { host: string; port: number; expectedId: string } }[];
  /** SPIFFE Workload API socket path. */
  workloadApiSocket?: string;
  /** Fraction of allowed decisions recorded (denials always are). */
  allowSampleRate?: number;
  /** Long-poll time of the policy watch. */
  policyWatchSeconds?: number;
}

export interface Sidecar {
  enforcer: PolicyEnforcer;
  inbound: Inbound | undefined;
  outbounds: Outbound[];
  close(): Promise<void>;
}

/**
 * Everything an agent runs next to its workload once it has an identity: the policy enforcer
 * (signed bundle, local Cedar decisions, decision log), the inbound and outbound mTLS proxies and
 * the Workload API. The proxies take their TLS material from the agent and rebuild their
 * contexts on every rotation.
 */
export async function startSidecar(agent: Agent, opts: SidecarOptions): Promise<Sidecar> {
  const { log } = opts;
  const enforcer = new PolicyEnforcer({
    dir: opts.dataDir,
    site: agent.entry?.attributes?.site ?? 'default',
    ...(agent.spiffeId ? { self: agent.spiffeId } : {}),
    log,
    trustedCas: () => agent.trustedCas(),
    fetch: (after, timeout) => agent.call<{ version: number; changed: boolean; bundle: SignedPolicyBundle }>(
      'GET', `/v1/policy/bundle?after=${after}&timeout_seconds=${timeout}`, undefined, { timeoutMs: (timeout + 10) * 1000 }),
    ship: async (records: DecisionRecord[]) => { await agent.call('POST', '/v1/decisions', { decisions: records }); },
    ...(opts.allowSampleRate !== undefined ? { allowSampleRate: opts.allowSampleRate } : {}),
    ...(opts.policyWatchSeconds !== undefined ? { watchSeconds: opts.policyWatchSeconds } : {}),
  });
  enforcer.start();

  const closers: (() => Promise<void>)[] = [() => enforcer.stop()];
  let inbound: Inbound | undefined;
  const outbounds: Outbound[] = [];
  try {
    if (opts.inbound) {
      const self = agent.spiffeId!;
      inbound = await startInbound({
        listen: opts.inbound.listen, app: opts.inbound.app, mode: opts.inbound.mode, tls: agent,
        authorize: (r) => enforcer.authorize({ principal: r.peer, serial: r.serial, action: r.action, resource: self, ...(r.method !== undefined ? { method: r.method } : {}), ...(r.path !== undefined ? { path: r.path } : {}) }),
        onDecision: (r) => { if (!r.allow) log.info('denied', { peer: r.peer, action: r.action, method: r.method, path: r.path, reasons: r.reasons }); },
        onRefused: (r) => {
          log.info('connection refused', { code: r.code, reason: r.reason, remote: r.remote });
          enforcer.recordRefusal(self, r.code, r.reason);
        },
      });
      const inb = inbound;
      closers.push(() => inb.close());
    }
    for (const o of opts.outbounds ?? []) {
      const out = await startOutbound({
        listen: o.listen, upstream: o.upstream, tls: agent,
        peerStatus: (id, serial) => enforcer.peerStatus(id, serial),
        onRefused: (r) => {
          log.warn('upstream refused', { code: r.code, reason: r.reason, expected: o.upstream.expectedId });
          enforcer.recordRefusal(o.upstream.expectedId, r.code, r.reason, 'tls:upstream');
        },
      });
      outbounds.push(out);
      closers.push(() => out.close());
    }
    if (opts.workloadApiSocket) {
      const bus = new EventEmitter();
      let jwks: { keys: object[] } = { keys: [] };
      const refresh = async (): Promise<void> => {
        jwks = await agent.call<{ keys: object[] }>('GET', '/v1/bundle');
        bus.emit('bundle');
      };
      agent.on('svid', () => bus.emit('svid'));
      agent.on('bundle', () => void refresh().catch((e: { code?: string }) => log.warn('JWT bundle refresh failed', { code: e.code })));
      await refresh().catch(() => {});
      const api = await startWorkloadApi({
        socketPath: opts.workloadApiSocket, log,
        source: {
          get trustDomain() { return agent.trustDomain ?? ''; },
          current: () => agent.current(),
          jwtBundle: () => jwks,
          mintJwt: (audience) => agent.call<{ token: string }>('POST', '/v1/svid/jwt', { audience }),
          entrySelectors: () => agent.entry?.selectors ?? [],
          on: (e, f) => bus.on(e, f),
          off: (e, f) => bus.off(e, f),
        },
      });
      closers.push(() => api.close());
      log.info('Workload API listening', { SPIFFE_ENDPOINT_SOCKET: `unix://${opts.workloadApiSocket}` });
    }
  } catch (err) {
    for (const c of closers.reverse()) await c().catch(() => {});
    throw err;
  }
  return {
    enforcer, inbound, outbounds,
    close: async () => {
      for (const c of closers.reverse()) await c().catch(() => {});
    },
  };
}
