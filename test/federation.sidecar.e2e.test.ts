/**
 * Cross-domain calls through real sidecars: two control planes (alpha.test and beta.test) federated
 * both ways over https_spiffe, agents on each side receiving the federated bundles on their bundle
 * stream, and Cedar deciding on the foreign SPIFFE ID (default deny: a foreign ID gets nothing unless a
 * policy names it). Then a CA rotation in beta reaches alpha's sidecars without any restart, and
 * removing the federation refuses cross-domain calls again.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pemDecodeAll, pemEncode } from '../src/core/x509.js';
import { fetchBundleText } from '../src/core/federation.js';
import { X509Certificate } from 'node:crypto';
import type { CaListResponse } from '../src/core/wire/control-plane.js';
import type { FederationResponse } from '../src/core/wire/federation.js';
import { Fabric, federate, inboundTo, outboundTo, plainGet, type Workload } from './support/fabric.js';
import { waitFor } from './support/process.js';

const A = 'alpha.test';
const B = 'beta.test';
const API_A = `spiffe://${A}/shop/api`;
const CALLER_A = `spiffe://${A}/shop/caller`;
const CLIENT_B = `spiffe://${B}/partner/client`;
const OTHER_B = `spiffe://${B}/partner/other`;
const API_B = `spiffe://${B}/partner/api`;
const WL_B = `spiffe://${B}/partner/wl`;
const PROTO = fileURLToPath(new URL('../proto/workload.proto', import.meta.url));
const FAST = { federation: { minRefreshSeconds: 1, maxRefreshSeconds: 2, refreshHintSeconds: 1 } };

let a: Fabric;
let b: Fabric;
let apiA: Workload;
let clientB: Workload;
let otherB: Workload;
let callerA: Workload;
let wlB: Workload;
let sockDir: string;

const held = (w: Workload, td: string): number => {
  const f = w.agent.federatedBundles().get(td);
  return f === undefined ? 0 : (f.jwks.keys.filter((k) => k.use === 'x509-svid').length);
};

beforeAll(async () => {
  a = await Fabric.start({ name: 'fedsc-a', server: { trustDomain: A, ...FAST }, entries: { [API_A]: {}, [CALLER_A]: {} } });
  b = await Fabric.start({ name: 'fedsc-b', server: { trustDomain: B, ...FAST }, entries: { [CLIENT_B]: {}, [OTHER_B]: {}, [API_B]: {} } });
  // alpha lets beta's client (and nobody else of beta) call its API; beta names no alpha workload.
  await a.admin.call('POST', '/v1/policies', { reason: 'federation test', files: {
    'partner.cedar': `permit (principal == Tessera::Workload::"${CLIENT_B}", action == Tessera::Action::"http:request", resource == Tessera::Workload::"${API_A}");`,
  } });
  await b.admin.call('POST', '/v1/policies', { reason: 'federation test', files: {
    'local.cedar': `permit (principal in Tessera::Workload::"${CLIENT_B}", action == Tessera::Action::"http:request", resource == Tessera::Workload::"${API_B}");`,
  } });
  sockDir = mkdtempSync(join(tmpdir(), 'tfwa-'));
  await b.admin.call('POST', '/v1/entries', { spiffe_id: WL_B, selectors: [`unix:uid:${process.getuid!()}`] });
  await federate(a, b, B);
  await federate(b, a, A);
  apiA = await a.workload('api-a', API_A, { inbound: inboundTo(await a.httpApp()) });
  const apiB = await b.workload('api-b', API_B, { inbound: inboundTo(await b.httpApp()) });
  clientB = await b.workload('client-b', CLIENT_B, { outbounds: outboundTo(apiA.sidecar.inbound!.port, API_A) });
  otherB = await b.workload('other-b', OTHER_B, { outbounds: outboundTo(apiA.sidecar.inbound!.port, API_A) });
  callerA = await a.workload('caller-a', CALLER_A, { outbounds: outboundTo(apiB.sidecar.inbound!.port, API_B) });
  wlB = await b.workload('wl-b', WL_B, { workloadApiSocket: join(sockDir, 'b.sock') });
  await waitFor('federated bundles at every agent', () => held(wlB, A) > 0 && held(apiA, B) > 0 && held(clientB, A) > 0 && held(otherB, A) > 0 && held(callerA, B) > 0, 15_000, 100);
  await waitFor('policies in force', () => apiA.sidecar.enforcer.version > 0 && a.workloads.every((w) => w.sidecar.enforcer.version > 0) && b.workloads.every((w) => w.sidecar.enforcer.version > 0), 15_000, 100);
}, 60_000);

afterAll(async () => {
  await a?.close();
  await b?.close();
  if (sockDir) rmSync(sockDir, { recursive: true, force: true });
});

type Client = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

/** The first message of a Workload API stream. */
function first<T>(socket: string, method: string): Promise<T> {
  const def = protoLoader.loadSync(PROTO, { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
  const Ctor = (grpc.loadPackageDefinition(def) as unknown as Record<string, grpc.ServiceClientConstructor>).SpiffeWorkloadAPI!;
  const client = new Ctor(`unix:${socket}`, grpc.credentials.createInsecure()) as unknown as Client;
  const md = new grpc.Metadata();
  md.set('workload.spiffe.io', 'true');
  return new Promise<T>((resolve, reject) => {
    const stream = client[method]!({}, md) as grpc.ClientReadableStream<T>;
    stream.on('data', (m: T) => {
      resolve(m);
      stream.cancel();
      client.close();
    });
    stream.on('error', (e: grpc.ServiceError) => { if (e.code !== grpc.status.CANCELLED) reject(e); });
  });
}

describe('cross-domain calls through sidecars', () => {
  it('a foreign workload named by the policy is allowed; another of the same domain is denied; the reverse direction has no policy: denied', async () => {
    expect(await plainGet(clientB.sidecar.outbounds[0]!.port, '/hello')).toBe(200);
    expect(await plainGet(otherB.sidecar.outbounds[0]!.port, '/hello')).toBe(403);
    // alpha's caller reaches beta's API (its chain verified against alpha's bundle held by beta), but no policy of beta names it.
    expect(await plainGet(callerA.sidecar.outbounds[0]!.port, '/hello')).toBe(403);
  });

  it('the Workload API serves the federated bundles: X509SVIDResponse.federated_bundles and JWTBundlesResponse, each under its trust domain', async () => {
    const socket = join(sockDir, 'b.sock');
    const x = await first<{ svids: { spiffe_id: string; bundle: Buffer }[]; federated_bundles: Record<string, Buffer> }>(socket, 'FetchX509SVID');
    expect(x.svids[0]!.spiffe_id).toBe(WL_B);
    const alphaCas = Buffer.concat(pemDecodeAll(a.cp.ctx.ca.bundlePem(), 'CERTIFICATE'));
    expect(Object.keys(x.federated_bundles)).toEqual([`spiffe://${A}`]);
    expect(Buffer.from(x.federated_bundles[`spiffe://${A}`]!).equals(alphaCas)).toBe(true);
    // Never merged: beta's own bundle does not hold alpha's authority.
    expect(Buffer.from(x.svids[0]!.bundle).includes(alphaCas)).toBe(false);
    const j = await first<{ bundles: Record<string, Buffer> }>(socket, 'FetchJWTBundles');
    expect(Object.keys(j.bundles).sort()).toEqual([`spiffe://${A}`, `spiffe://${B}`]);
    const alphaJwt = JSON.parse(Buffer.from(j.bundles[`spiffe://${A}`]!).toString()) as { keys: { kid: string }[] };
    const served = (await a.admin.call<{ keys: { kid?: string; use: string }[] }>('GET', '/v1/bundle')).keys.filter((k) => k.use === 'jwt-svid').map((k) => k.kid);
    expect(alphaJwt.keys.map((k) => k.kid)).toEqual(served);
  });

  it('a CA rotation in beta reaches alpha\'s sidecars without a restart: the client renewed under the new CA is still allowed', async () => {
    const active = async (): Promise<string> => (await b.admin.call<CaListResponse>('GET', '/v1/ca')).authorities.find((c) => c.state === 'active')!.id;
    const before = await active();
    const heldBefore = new Set(apiA.agent.federatedBundles().get(B)!.jwks.keys.filter((k) => k.use === 'x509-svid').map((k) => k.x5c![0]));
    // No grace: the new CA signs from beta's next tick, likely before alpha's next fetch. Beta's
    // server certificate is also its https_spiffe bundle endpoint's; were it to move to the new CA
    // at once, alpha (holding the old bundle only) could never fetch again. It stays on the old CA
    // until the new one has been published for beta's refresh hint and a margin.
    await b.admin.call('POST', '/v1/ca/rotate', { grace_seconds: 0 });
    await waitFor('beta\'s new CA active', async () => (await active()) !== before, 15_000, 100);
    const oldBundlePem = [...heldBefore].map((d) => pemEncode(Buffer.from(d!, 'base64'), 'CERTIFICATE')).join('');
    const fetched = await fetchBundleText(`${b.url}/v1/bundle`, { profile: 'https_spiffe', endpointId: `spiffe://${B}/tessera/server`, trustPem: oldBundlePem, timeoutMs: 5000 });
    expect((JSON.parse(fetched) as { keys: { use: string }[] }).keys.filter((k) => k.use === 'x509-svid')).toHaveLength(2);
    await waitFor('alpha\'s API sidecar to hold both of beta\'s authorities', () => held(apiA, B) === 2, 15_000, 100);
    await clientB.agent.renew();
    const issuer = X509Certificate;
    const cert = new issuer(clientB.agent.current()!.certPem);
    const authorities = (await a.admin.call<FederationResponse>('GET', `/v1/federation/${B}`)).bundle!.keys.filter((k) => k.use === 'x509-svid').map((k) => new issuer(Buffer.from(k.x5c![0]!, 'base64')));
    // The renewed SVID comes from the new CA, which alpha's sidecar learnt from the refresh only.
    const signer = authorities.find((c) => cert.checkIssued(c) && cert.verify(c.publicKey));
    expect(signer).toBeDefined();
    expect(heldBefore.has(Buffer.from(signer!.raw).toString('base64'))).toBe(false);
    expect(await plainGet(clientB.sidecar.outbounds[0]!.port, '/hello')).toBe(200);
  }, 40_000);

  it('removing the federation refuses the cross-domain calls again', async () => {
    await a.admin.call('POST', `/v1/federation/${B}/remove`, {});
    await waitFor('alpha\'s agent to drop beta\'s bundle', () => held(apiA, B) === 0, 15_000, 100);
    expect(apiA.agent.current()!.trust).toBeUndefined();
    expect(await plainGet(clientB.sidecar.outbounds[0]!.port, '/hello')).not.toBe(200);
    expect(apiA.sidecar.inbound!.stats.handshakeFailures + apiA.sidecar.inbound!.stats.identityRefused).toBeGreaterThan(0);
  }, 30_000);
});
