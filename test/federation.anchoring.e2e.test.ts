/**
 * Per-trust-domain anchoring in the real proxies (TLS on 127.0.0.1, certificates from real test CAs):
 * once a federated bundle is held, OpenSSL's store holds both domains' authorities, and the sidecar must
 * still hold each peer to ITS trust domain's bundle. A partner CA vouching for one of our IDs, our CA
 * vouching for a partner ID, or a partner ID without federation: all refused at the inbound and the
 * outbound proxy. Both CAs have the same subject name on purpose (name-based chain building must not help).
 */
import { once } from 'node:events';
import { createServer, get as httpGet, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startInbound, type Inbound } from '../src/agent/inbound/inbound.js';
import { startOutbound } from '../src/agent/outbound/outbound.js';
import { TrustAnchors } from '../src/core/federation-trust.js';
import { FakeSource, TestCa } from './support/tls-ca.js';

const ME = 'me.test';
const PARTNER = 'partner.test';
const API = `spiffe://${ME}/api`;

let me: TestCa;
let partner: TestCa;
let app: Server;
let appPort = 0;
const cleanups: (() => Promise<unknown>)[] = [];

/** A source for `id` issued by `ca`, holding our bundle plus (when `federated`) the partner's. */
function sourceOf(ca: TestCa, id: string, localTd: string, localPem: string, federated?: Map<string, string>): FakeSource {
  const svid = ca.issue([id]);
  const m = { spiffeId: id, certPem: svid.certPem, key: svid.key, bundlePem: localPem };
  return new FakeSource(federated ? { ...m, trust: new TrustAnchors(localTd, localPem, federated) } : m);
}

async function inbound(tls: FakeSource): Promise<Inbound> {
  const ib = await startInbound({ listen: { host: '127.0.0.1', port: 0 }, mode: 'http', app: { host: '127.0.0.1', port: appPort }, tls, authorize: () => ({ allow: true }) } as never);
  cleanups.push(() => ib.close());
  return ib;
}

/** Through an outbound proxy of `tls` expecting `expectedId` at `port`: the HTTP status, 0 when refused. */
async function callThrough(tls: FakeSource, port: number, expectedId: string): Promise<number> {
  const ob = await startOutbound({ listen: { host: '127.0.0.1', port: 0 }, upstream: { host: '127.0.0.1', port, expectedId }, tls });
  cleanups.push(() => ob.close());
  return new Promise((resolve) => {
    const req = httpGet({ host: '127.0.0.1', port: ob.port, path: '/', agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', () => resolve(0));
    req.setTimeout(5_000, () => req.destroy());
  });
}

beforeAll(async () => {
  me = new TestCa(ME, 'tessera-ca');
  partner = new TestCa(PARTNER, 'tessera-ca');
  app = createServer((req, res) => {
    req.resume();
    res.end('ok');
  });
  app.listen(0, '127.0.0.1');
  await once(app, 'listening');
  appPort = (app.address() as AddressInfo).port;
});

afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
  await new Promise((r) => app.close(r));
});

describe('inbound: each caller against its own trust domain\'s bundle', () => {
  it('federated: a partner workload from the partner CA gets through; our ID from the partner CA and a partner ID from our CA do not', async () => {
    const ib = await inbound(sourceOf(me, API, ME, me.pem, new Map([[PARTNER, partner.pem]])));
    const partnerSide = new Map([[ME, me.pem]]);
    expect(await callThrough(sourceOf(partner, `spiffe://${PARTNER}/client`, PARTNER, partner.pem, partnerSide), ib.port, API)).toBe(200);
    const refusedBefore = ib.stats.identityRefused;
    // The partner's CA vouching for an ID of ours (it would pass OpenSSL: its CA is in the store).
    expect(await callThrough(sourceOf(partner, `spiffe://${ME}/impostor`, PARTNER, partner.pem, partnerSide), ib.port, API)).not.toBe(200);
    // Our CA vouching for a partner ID.
    expect(await callThrough(sourceOf(me, `spiffe://${PARTNER}/impostor`, PARTNER, partner.pem, partnerSide), ib.port, API)).not.toBe(200);
    expect(ib.stats.identityRefused - refusedBefore).toBe(2);
    // Our own workloads still get through.
    expect(await callThrough(sourceOf(me, `spiffe://${ME}/web`, ME, me.pem, new Map([[PARTNER, partner.pem]])), ib.port, API)).toBe(200);
  });

  it('not federated: a partner workload is refused at the handshake', async () => {
    const ib = await inbound(sourceOf(me, API, ME, me.pem));
    expect(await callThrough(sourceOf(partner, `spiffe://${PARTNER}/client`, PARTNER, partner.pem, new Map([[ME, me.pem]])), ib.port, API)).not.toBe(200);
    expect(ib.stats.handshakeFailures).toBeGreaterThan(0);
  });
});

describe('outbound: the target against its own trust domain\'s bundle', () => {
  it('a target claiming a partner ID with a certificate from our CA is refused; the genuine one is reached', async () => {
    const theirs = `spiffe://${PARTNER}/api`;
    const partnerFederated = new Map([[ME, me.pem]]);
    const genuine = await inbound(sourceOf(partner, theirs, PARTNER, partner.pem, partnerFederated));
    const forged = await inbound(sourceOf(me, theirs, ME, me.pem, new Map([[PARTNER, partner.pem]])));
    const caller = (): FakeSource => sourceOf(me, `spiffe://${ME}/web`, ME, me.pem, new Map([[PARTNER, partner.pem]]));
    expect(await callThrough(caller(), genuine.port, theirs)).toBe(200);
    expect(await callThrough(caller(), forged.port, theirs)).not.toBe(200);
  });
});
