/**
 * Cross-domain calls through real sidecars: two control planes (alpha.test and beta.test) federated
 * both ways over https_spiffe, agents on each side receiving the federated bundles on their bundle
 * stream, and Cedar deciding on the foreign SPIFFE ID (default deny: a foreign ID gets nothing unless a
 * policy names it). Then a CA rotation in beta reaches alpha's sidecars without any restart, and
 * removing the federation refuses cross-domain calls again.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { X509Certificate } from 'node:crypto';
import type { CaListResponse } from '../src/core/wire/control-plane.js';
import type { FederationResponse } from '../src/core/wire/federation.js';
import { Fabric, inboundTo, outboundTo, plainGet, type Workload } from './support/fabric.js';
import { waitFor } from './support/process.js';

const A = 'alpha.test';
const B = 'beta.test';
const API_A = `spiffe://${A}/shop/api`;
const CALLER_A = `spiffe://${A}/shop/caller`;
const CLIENT_B = `spiffe://${B}/partner/client`;
const OTHER_B = `spiffe://${B}/partner/other`;
const API_B = `spiffe://${B}/partner/api`;
const FAST = { federation: { minRefreshSeconds: 1, maxRefreshSeconds: 2, refreshHintSeconds: 1 } };

let a: Fabric;
let b: Fabric;
let apiA: Workload;
let clientB: Workload;
let otherB: Workload;
let callerA: Workload;

async function federate(from: Fabric, to: Fabric, td: string): Promise<FederationResponse> {
  const bundle = JSON.stringify(await to.admin.call('GET', '/v1/bundle'));
  return from.admin.call<FederationResponse>('POST', '/v1/federation', { trust_domain: td, endpoint: `${to.url}/v1/bundle`, profile: 'https_spiffe', endpoint_id: `spiffe://${td}/tessera/server`, bundle });
}

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
  await federate(a, b, B);
  await federate(b, a, A);
  apiA = await a.workload('api-a', API_A, { inbound: inboundTo(await a.httpApp()) });
  const apiB = await b.workload('api-b', API_B, { inbound: inboundTo(await b.httpApp()) });
  clientB = await b.workload('client-b', CLIENT_B, { outbounds: outboundTo(apiA.sidecar.inbound!.port, API_A) });
  otherB = await b.workload('other-b', OTHER_B, { outbounds: outboundTo(apiA.sidecar.inbound!.port, API_A) });
  callerA = await a.workload('caller-a', CALLER_A, { outbounds: outboundTo(apiB.sidecar.inbound!.port, API_B) });
  await waitFor('federated bundles at every agent', () => held(apiA, B) > 0 && held(clientB, A) > 0 && held(otherB, A) > 0 && held(callerA, B) > 0, 15_000, 100);
  await waitFor('policies in force', () => apiA.sidecar.enforcer.version > 0 && a.workloads.every((w) => w.sidecar.enforcer.version > 0) && b.workloads.every((w) => w.sidecar.enforcer.version > 0), 15_000, 100);
}, 60_000);

afterAll(async () => {
  await a?.close();
  await b?.close();
});

describe('cross-domain calls through sidecars', () => {
  it('a foreign workload named by the policy is allowed; another of the same domain is denied; the reverse direction has no policy: denied', async () => {
    expect(await plainGet(clientB.sidecar.outbounds[0]!.port, '/hello')).toBe(200);
    expect(await plainGet(otherB.sidecar.outbounds[0]!.port, '/hello')).toBe(403);
    // alpha's caller reaches beta's API (its chain verified against alpha's bundle held by beta), but no policy of beta names it.
    expect(await plainGet(callerA.sidecar.outbounds[0]!.port, '/hello')).toBe(403);
  });

  it('a CA rotation in beta reaches alpha\'s sidecars without a restart: the client renewed under the new CA is still allowed', async () => {
    const active = async (): Promise<string> => (await b.admin.call<CaListResponse>('GET', '/v1/ca')).authorities.find((c) => c.state === 'active')!.id;
    const before = await active();
    const heldBefore = new Set(apiA.agent.federatedBundles().get(B)!.jwks.keys.filter((k) => k.use === 'x509-svid').map((k) => k.x5c![0]));
    await b.admin.call('POST', '/v1/ca/rotate', { grace_seconds: 1 });
    await waitFor('alpha\'s API sidecar to hold both of beta\'s authorities', () => held(apiA, B) === 2, 15_000, 100);
    await waitFor('beta\'s new CA active', async () => (await active()) !== before, 15_000, 200);
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
