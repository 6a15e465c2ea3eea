/**
 * A small fabric for end-to-end tests: a real control plane in this process (its own temporary
 * directory, real SQLite, real TLS on 127.0.0.1), its admin client, registration entries, and
 * workloads (an Agent joined with a one-time token plus its sidecar), with plain apps behind them.
 * Everything it starts is stopped by `close()`, also after a failed test (call it from afterAll).
 *
 *   const f = await Fabric.start({ name: 'quarantine', entries: { [CALLER]: { app: 'frontend' } } });
 *   const app = await f.httpApp();
 *   const callee = await f.workload('orders', CALLEE, { inbound: inboundTo(app) });
 *
 * `startWorkload` is the same join-and-sidecar step for a control plane run elsewhere (a child process).
 */
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, get as httpGet, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, type AgentOptions } from '../../src/agent/agent.js';
import { startSidecar, type Sidecar, type SidecarOptions } from '../../src/agent/sidecar.js';
import { ApiClient } from '../../src/common/api-client.js';
import { silentLogger } from '../../src/core/log.js';
import { ControlPlane, type ControlPlaneOptions } from '../../src/server/server.js';
import type { FederationResponse } from '../../src/core/wire/federation.js';

/** Sidecar options as a test gives them (the data directory and logger come from the fabric). */
export type WorkloadOptions = Omit<SidecarOptions, 'dataDir' | 'log'>;

export interface Workload {
  agent: Agent;
  sidecar: Sidecar;
}

/** Where workloads join: the control plane's URL, its trust bundle file, an admin client, a directory for agents' data. */
export interface WorkloadHost {
  url: string;
  bundleFile: string;
  admin: ApiClient;
  dir: string;
}

/** The inbound proxy in front of a local app (any free port). */
export function inboundTo(appPort: number, mode: 'http' | 'tcp' = 'http'): NonNullable<SidecarOptions['inbound']> {
  return { listen: { host: '127.0.0.1', port: 0 }, app: { host: '127.0.0.1', port: appPort }, mode };
}

/** One outbound proxy (any free port) to `port`, expecting `expectedId` there. */
export function outboundTo(port: number, expectedId: string): NonNullable<SidecarOptions['outbounds']> {
  return [{ listen: { host: '127.0.0.1', port: 0 }, upstream: { host: '127.0.0.1', port, expectedId } }];
}

/**
 * Joins `spiffeId` (its entry must exist) with a fresh one-time token as an in-process Agent in
 * `host.dir/name`, and starts its sidecar with `opts`. The agent follows the trust bundle every 5 s.
 */
export async function startWorkload(host: WorkloadHost, name: string, spiffeId: string, opts: WorkloadOptions = {}, agentOpts: Partial<AgentOptions> = {}): Promise<Workload> {
  const { token } = await host.admin.call<{ token: string }>('POST', '/v1/tokens', { entry_id: spiffeId, ttl_seconds: 120 });
  const dataDir = join(host.dir, name);
  const agent = new Agent({ serverUrl: host.url, dataDir, log: silentLogger, watchSeconds: 5, trustBundleFile: host.bundleFile, joinToken: token, ...agentOpts });
  await agent.start();
  try {
    return { agent, sidecar: await startSidecar(agent, { dataDir, log: silentLogger, ...opts }) };
  } catch (err) {
    await agent.stop().catch(() => {});
    throw err;
  }
}

/** GET through a local port (an outbound proxy) on a fresh connection: the status, or 0 when the connection is refused or fails. */
export function plainGet(port: number, path: string): Promise<number> {
  return new Promise((resolve) => {
    const req = httpGet({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', () => resolve(0));
    req.setTimeout(5_000, () => req.destroy());
  });
}

/** A plain HTTP app on 127.0.0.1 (default: reads the request, answers 200 `ok`). */
export async function startHttpApp(handler?: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ port: number; close(): Promise<void> }> {
  const server = createHttpServer(handler ?? ((req, res) => {
    req.resume();
    res.end('ok');
  }));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

/** A TCP echo app on 127.0.0.1 that counts the bytes it received and can drop every connection. */
export interface EchoApp {
  port: number;
  /** Bytes received so far. */
  readonly bytes: number;
  close(): Promise<void>;
}

export async function startTcpEcho(): Promise<EchoApp> {
  const sockets = new Set<Socket>();
  let bytes = 0;
  const server = createNetServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('data', (c: Buffer) => {
      bytes += c.length;
      s.write(c);
    });
    s.on('error', () => {});
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as AddressInfo).port,
    get bytes() { return bytes; },
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

export interface FabricOptions {
  /** Part of the temporary directory's name. */
  name: string;
  /** Control plane options besides its directory, port and logger. */
  server?: Partial<Omit<ControlPlaneOptions, 'dataDir' | 'port' | 'log'>>;
  /** Registration entries to create at start: SPIFFE ID → attributes. */
  entries?: Record<string, Record<string, string>>;
  /** Sidecar options every workload starts with (a workload's own options override them). */
  sidecar?: WorkloadOptions;
}

export class Fabric implements WorkloadHost {
  cp!: ControlPlane;
  admin!: ApiClient;
  readonly workloads: Workload[] = [];
  readonly #closers: (() => Promise<unknown>)[] = [];
  #port = 0;
  #running = false;

  private constructor(readonly dir: string, private readonly opts: FabricOptions) {}

  /** A control plane in a fresh temporary directory, with the entries asked for. */
  static async start(opts: FabricOptions): Promise<Fabric> {
    const f = new Fabric(mkdtempSync(join(tmpdir(), `tessera-${opts.name}-`)), opts);
    await f.startControlPlane();
    for (const [spiffeId, attributes] of Object.entries(opts.entries ?? {})) await f.admin.call('POST', '/v1/entries', { spiffe_id: spiffeId, attributes });
    return f;
  }

  get url(): string {
    return this.cp.url;
  }

  get bundleFile(): string {
    return join(this.cp.dataDir, 'bundle.pem');
  }

  /** The bootstrap admin's credential (trust bundle, certificate, key) as PEM text. */
  adminTls(): { ca: string; cert: string; key: string } {
    const f = (n: string): string => readFileSync(join(this.cp.adminDir, n), 'utf8');
    return { ca: f('bundle.pem'), cert: f('admin.pem'), key: f('admin.key') };
  }

  /** Starts the control plane (again, after stopControlPlane: same directory and port) and a new admin client. */
  async startControlPlane(): Promise<void> {
    // No environment: the KEK is the data directory's own file, whatever the developer's shell holds.
    this.cp = await ControlPlane.start({ env: {}, ...this.opts.server, dataDir: join(this.dir, 'server'), port: this.#port, log: silentLogger });
    this.#port = this.cp.port;
    this.#running = true;
    this.admin = new ApiClient(this.cp.url, this.adminTls());
  }

  /** Stops the control plane (the workloads keep running, cut off from it). */
  async stopControlPlane(): Promise<void> {
    this.admin.close();
    this.#running = false;
    await this.cp.stop();
  }

  /** A workload joined to this control plane, with the fabric's sidecar options and `opts`. */
  async workload(name: string, spiffeId: string, opts: WorkloadOptions = {}, agentOpts: Partial<AgentOptions> = {}): Promise<Workload> {
    const w = await startWorkload(this, name, spiffeId, { ...this.opts.sidecar, ...opts }, agentOpts);
    this.workloads.push(w);
    return w;
  }

  /** A plain HTTP app, closed with the fabric. */
  async httpApp(handler?: (req: IncomingMessage, res: ServerResponse) => void): Promise<number> {
    const app = await startHttpApp(handler);
    this.#closers.push(app.close);
    return app.port;
  }

  /** A TCP echo app, closed with the fabric. */
  async tcpEcho(): Promise<EchoApp> {
    const app = await startTcpEcho();
    this.#closers.push(app.close);
    return app;
  }

  /** Stops the sidecars, then the agents, the apps, the control plane; removes the directory. */
  async close(): Promise<void> {
    for (const w of this.workloads) await w.sidecar.close().catch(() => {});
    for (const w of this.workloads) await w.agent.stop().catch(() => {});
    for (const c of this.#closers) await c().catch(() => {});
    this.admin?.close();
    if (this.#running) await this.cp.stop().catch(() => {});
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** `from` trusts `to`'s trust domain `td` over https_spiffe, seeded with `to`'s bundle (as an admin does by hand). */
export async function federate(from: Fabric, to: Fabric, td: string): Promise<FederationResponse> {
  const bundle = JSON.stringify(await to.admin.call('GET', '/v1/bundle'));
  return from.admin.call<FederationResponse>('POST', '/v1/federation', { trust_domain: td, endpoint: `${to.url}/v1/bundle`, profile: 'https_spiffe', endpoint_id: `spiffe://${td}/tessera/server`, bundle });
}
