/**
 * A gateway node, as `tessera gateway run` starts it: an Agent (the gateway's own SVID, from a join
 * token for its registration entry, renewed and following the trust bundle), the sidecar's policy
 * enforcer (the signed policy bundle: Cedar `gateway:request`, the revocation and risk lists; every
 * decision recorded and shipped to `POST /v1/decisions`), a telemetry collector per route (people →
 * app windows, `reporter: callee`, shipped to `POST /v1/telemetry`), the assertion signer, and the
 * HTTPS front (server.ts).
 *
 * Importing src/agent here is intended, as for the key server node (src/keyserver/node.ts): a gateway
 * runs an agent for its identity and its policy. The gateway proper (server.ts, sessions.ts,
 * route-table.ts, assertion.ts) depends on neither; it takes interfaces.
 */
import { readFileSync } from 'node:fs';
import { Agent } from '../agent/agent.js';
import { parseServerUrls } from '../common/api-client.js';
import { startSidecar, type Sidecar } from '../agent/sidecar.js';
import { TelemetryCollector } from '../agent/telemetry/collector.js';
import { TelemetryShipper } from '../agent/telemetry/shipper.js';
import { TesseraError } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import type { TelemetryRequest, TelemetryResponse } from '../core/wire/control-plane.js';
import { gatewayAppId, type DevicePostureResponse, type GatewayLogoutAllResponse, type GatewaySessionResponse, type GatewayTokenResponse } from '../core/wire/gateway.js';
import { AssertionSigner } from './assertion.js';
import type { GatewayMetrics } from './metrics.js';
import type { GatewayRoute } from './route-table.js';
import { startGatewayServer, type GatewayServer, type GatewayServerOptions } from './server.js';

export interface GatewayNodeOptions {
  serverUrl: string;
  /** Where browsers reach the control plane's sign-in (default `serverUrl`). */
  publicUrl?: string;
  dataDir: string;
  /** The gateway's registered name (`tessera gateway add NAME`). */
  name: string;
  listen: { host: string; port: number };
  tlsCertFile: string;
  tlsKeyFile: string;
  routes: GatewayRoute[];
  log: Logger;
  joinToken?: string;
  trustBundleFile?: string;
  policyWatchSeconds?: number;
  /** Fraction of allowed decisions shipped (default 1: every decision; denials always). */
  allowSampleRate?: number;
  /** People's telemetry windows (default 5 s); false: none. */
  telemetry?: false | { windowSeconds?: number };
  /** Assertion signing key rotation period (default 24 h). */
  keyRotationMs?: number;
  /** Prometheus metrics of this gateway (`--metrics-listen`; the caller serves its registry). */
  metrics?: GatewayMetrics;
  /** The HTTPS front's settings (`now`: its clock, for tests that age an MFA without waiting). */
  server?: Partial<Pick<GatewayServerOptions, 'sessions' | 'requestDeviceCert' | 'postureCacheSeconds' | 'stepUpMaxAgeSeconds' | 'upstreamTimeoutMs' | 'now'>>;
}

export interface GatewayNode {
  agent: Agent;
  sidecar: Sidecar;
  server: GatewayServer;
  signer: AssertionSigner;
  close(): Promise<void>;
}

export async function startGatewayNode(opts: GatewayNodeOptions): Promise<GatewayNode> {
  const { log } = opts;
  let cert: string;
  let key: string;
  try {
    cert = readFileSync(opts.tlsCertFile, 'utf8');
    key = readFileSync(opts.tlsKeyFile, 'utf8');
  } catch (err) {
    throw new TesseraError('TESSERA_CONFIG_INVALID', `the gateway's TLS certificate or key cannot be read: ${(err as Error).message}`);
  }
  const agent = new Agent({
    serverUrl: opts.serverUrl, dataDir: opts.dataDir, log,
    ...(opts.joinToken ? { joinToken: opts.joinToken } : {}),
    ...(opts.trustBundleFile ? { trustBundleFile: opts.trustBundleFile } : {}),
  });
  await agent.start();
  let sidecar: Sidecar | undefined;
  const collectors: TelemetryCollector[] = [];
  let shipper: TelemetryShipper | undefined;
  try {
    sidecar = await startSidecar(agent, {
      dataDir: opts.dataDir, log, telemetry: false, allowSampleRate: opts.allowSampleRate ?? 1,
      ...(opts.policyWatchSeconds !== undefined ? { policyWatchSeconds: opts.policyWatchSeconds } : {}),
    });
    const enforcer = sidecar.enforcer;
    opts.metrics?.attach(agent, () => enforcer);
    const td = agent.trustDomain!;
    const self = agent.spiffeId!;
    const signer = new AssertionSigner({ dir: opts.dataDir, issuer: self, ...(opts.keyRotationMs !== undefined ? { rotateMs: opts.keyRotationMs } : {}) });
    const call = <T>(method: string, path: string, body?: unknown): Promise<T> => agent.call<T>(method, path, body, { timeoutMs: 10_000 });
    let telemetry: GatewayServerOptions['telemetry'];
    if (opts.telemetry !== false) {
      const s = new TelemetryShipper({ ship: async (windows, dropped) => { await agent.call<TelemetryResponse>('POST', '/v1/telemetry', { windows, ...(dropped > 0 ? { dropped } : {}) } satisfies TelemetryRequest); } });
      shipper = s;
      // One collector per route: its "self" (the callee of every window) is the app's identity.
      const lanes = new Map<string, ReturnType<TelemetryCollector['lane']>>();
      for (const r of opts.routes) {
        const c = new TelemetryCollector({
          self: gatewayAppId(td, opts.name, r.name), selfSite: agent.entry?.attributes?.site ?? 'unknown', peerSite: () => undefined,
          onWindows: (w, dropped) => s.enqueue(w, dropped),
          ...(opts.telemetry?.windowSeconds !== undefined ? { windowSeconds: opts.telemetry.windowSeconds } : {}),
        });
        collectors.push(c);
        lanes.set(r.name, c.lane('callee', 'http'));
        c.start();
      }
      telemetry = (route, user) => lanes.get(route)!.edge(user);
    }
    const server = await startGatewayServer({
      listen: opts.listen, cert, key, tls: agent, trustDomain: td, name: opts.name, routes: opts.routes, signer, log,
      policy: enforcer,
      controlPlane: {
        publicUrl: opts.publicUrl ?? parseServerUrls(opts.serverUrl)[0]!,
        token: (req) => call<GatewayTokenResponse>('POST', '/v1/gateway/token', req),
        session: (ref) => call<GatewaySessionResponse>('GET', `/v1/gateway/session?ref=${ref}`),
        logoutAll: (ref) => call<GatewayLogoutAllResponse>('POST', '/v1/gateway/logout-all', { session_ref: ref }),
        posture: (id) => call<DevicePostureResponse>('GET', `/v1/devices/posture?id=${encodeURIComponent(id)}`),
      },
      ...(telemetry ? { telemetry } : {}),
      ...(opts.metrics ? { metrics: opts.metrics } : {}),
      ...opts.server,
    });
    const sc = sidecar;
    return {
      agent, sidecar: sc, server, signer,
      async close() {
        await server.close().catch(() => {});
        for (const c of collectors) c.stop();
        await shipper?.stop();
        await sc.close();
        await agent.stop();
      },
    };
  } catch (err) {
    for (const c of collectors) c.stop();
    await shipper?.stop().catch(() => {});
    await sidecar?.close().catch(() => {});
    await agent.stop().catch(() => {});
    throw err;
  }
}
