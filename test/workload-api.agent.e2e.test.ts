/**
 * The Workload API served by a real agent (`startSidecar` with a socket), checked by a client built
 * only from proto/workload.proto: the X.509-SVID the agent holds, and a JWT-SVID minted through the
 * control plane and validated through the same API.
 */
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../src/agent/agent.js';
import { startSidecar, type Sidecar } from '../src/agent/sidecar.js';
import { silentLogger } from '../src/core/log.js';
import { applyPolicy, startControlPlane, type TestControlPlane } from './support/server.js';

const ID = 'spiffe://tessera.test/shop/web';
const PROTO = fileURLToPath(new URL('../proto/workload.proto', import.meta.url));

type Client = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

function workloadClient(socket: string): Client {
  const def = protoLoader.loadSync(PROTO, { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as Record<string, grpc.ServiceClientConstructor>;
  const Ctor = pkg.SpiffeWorkloadAPI!;
  return new Ctor(`unix:${socket}`, grpc.credentials.createInsecure()) as unknown as Client;
}

function header(): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set('workload.spiffe.io', 'true');
  return md;
}

describe('Workload API on a real agent', () => {
  let t: TestControlPlane;
  let dir: string;
  let agent: Agent;
  let sidecar: Sidecar;
  let socket: string;

  beforeAll(async () => {
    t = await startControlPlane();
    dir = mkdtempSync(join(tmpdir(), 'twa-'));
    socket = join(dir, 'a.sock');
    await t.admin.call('POST', '/v1/entries', { spiffe_id: ID, selectors: [`unix:uid:${process.getuid!()}`], attributes: { site: 'cloud-eu' } });
    // JWT-SVIDs are derived credentials: web may get them for the audience "payments" only.
    await applyPolicy(t.admin, {
      'jwt.cedar': `permit (principal == Tessera::Workload::"${ID}", action == Tessera::Action::"credential:derive", resource) when { context.audience == "payments" };`,
    });
    const { token } = await t.admin.call<{ token: string }>('POST', '/v1/tokens', { entry_id: ID });
    agent = new Agent({ serverUrl: t.cp.url, dataDir: join(dir, 'agent'), joinToken: token, trustBundleFile: join(t.cp.dataDir, 'bundle.pem'), log: silentLogger });
    await agent.start();
    sidecar = await startSidecar(agent, { dataDir: join(dir, 'agent'), log: silentLogger, workloadApiSocket: socket });
  });
  afterAll(async () => {
    await sidecar.close();
    await agent.stop();
    await t.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('gives the caller its X.509-SVID, and a JWT-SVID that validates', async () => {
    const client = workloadClient(socket);
    const first = await new Promise<{ svids: { spiffe_id: string; x509_svid: Buffer }[] }>((resolve, reject) => {
      const stream = client.FetchX509SVID!({}, header()) as grpc.ClientReadableStream<{ svids: { spiffe_id: string; x509_svid: Buffer }[] }>;
      stream.once('data', (m) => { resolve(m); stream.cancel(); });
      stream.once('error', (e: grpc.ServiceError) => { if (e.code !== grpc.status.CANCELLED) reject(e); });
    });
    expect(first.svids[0]!.spiffe_id).toBe(ID);
    expect(new X509Certificate(first.svids[0]!.x509_svid).serialNumber).toBe(new X509Certificate(agent.current()!.certPem).serialNumber);

    const jwt = await new Promise<{ svids: { svid: string; spiffe_id: string }[] }>((resolve, reject) =>
      (client.FetchJWTSVID as (r: unknown, m: grpc.Metadata, cb: (e: Error | null, v: { svids: { svid: string; spiffe_id: string }[] }) => void) => void)(
        { audience: ['payments'] }, header(), (e, v) => (e ? reject(e) : resolve(v))));
    const validated = await new Promise<{ spiffe_id: string }>((resolve, reject) =>
      (client.ValidateJWTSVID as (r: unknown, m: grpc.Metadata, cb: (e: Error | null, v: { spiffe_id: string }) => void) => void)(
        { audience: 'payments', svid: jwt.svids[0]!.svid }, header(), (e, v) => (e ? reject(e) : resolve(v))));
    expect(jwt.svids[0]!.spiffe_id).toBe(ID);
    expect(validated.spiffe_id).toBe(ID);
    client.close();
  });

  it('a JWT-SVID for an audience policy does not permit is PermissionDenied, saying why', async () => {
    const client = workloadClient(socket);
    const err = await new Promise<grpc.ServiceError>((resolve, reject) =>
      (client.FetchJWTSVID as (r: unknown, m: grpc.Metadata, cb: (e: grpc.ServiceError | null) => void) => void)(
        { audience: ['payments', 'billing'] }, header(), (e) => (e ? resolve(e) : reject(new Error('minted a JWT-SVID policy does not permit')))));
    expect(err.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(err.details).toContain('TESSERA_CREDENTIAL_DENIED');
    expect(err.details).toContain('"billing"');
    client.close();
  });
});
