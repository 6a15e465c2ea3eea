/**
 * TLS session resumption between the outbound and the inbound proxy, over real TLS on 127.0.0.1
 * with certificates from a real test CA: the outbound offers the target's last ticket, the
 * connection resumes (no certificate exchange), and every identity check still runs on it —
 * the caller's SPIFFE ID reaches the policy and the app, a revoked or quarantined caller is refused
 * on a resumed session, a revoked target is refused by the outbound from the identity bound to its
 * ticket (Node gives a resumed client no server certificate), and rotations end resumption.
 */
import { once } from 'node:events';
import { createServer as createHttpServer, request as httpRequest, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startInbound, type AuthorizeRequest, type Inbound } from '../src/agent/inbound/inbound.js';
import { QUARANTINED_REFUSAL } from '../src/agent/inbound/rejudge.js';
import { startOutbound, type Outbound } from '../src/agent/outbound/outbound.js';
import type { PeerStanding } from '../src/agent/enforce/policy.js';
import { FakeSource, TestCa, sourceFor, type IssuedSvid } from './support/tls-ca.js';

const TD = 'resume.test';
const CLIENT_ID = `spiffe://${TD}/shop/frontend`;
const SERVER_ID = `spiffe://${TD}/shop/orders`;

let ca: TestCa;
beforeAll(() => {
  ca = new TestCa(TD);
});

interface Rig {
  app: HttpServer;
  inbound: Inbound;
  outbound: Outbound;
  clientSrc: FakeSource;
  serverSrc: FakeSource;
  clientSvid: IssuedSvid;
  serverSvid: IssuedSvid;
  /** Serials the revocation list holds, and quarantined IDs: read by both proxies' peerStatus. */
  revoked: Set<string>;
  quarantined: Set<string>;
  decisions: AuthorizeRequest[];
}

let rig: Rig | undefined;
afterEach(async () => {
  if (rig === undefined) return;
  await rig.outbound.close();
  await rig.inbound.close();
  await new Promise((r) => rig!.app.close(r));
  rig = undefined;
});

async function start(opts: { resumeSessions?: boolean } = {}): Promise<Rig> {
  const app = createHttpServer((req, res) => {
    req.resume();
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ id: req.headers['x-spiffe-id'] ?? null }));
  });
  app.listen(0, '127.0.0.1');
  await once(app, 'listening');
  const clientSvid = ca.issue([CLIENT_ID]);
  const serverSvid = ca.issue([SERVER_ID]);
  const clientSrc = sourceFor(ca, CLIENT_ID, clientSvid);
  const serverSrc = sourceFor(ca, SERVER_ID, serverSvid);
  const revoked = new Set<string>();
  const quarantined = new Set<string>();
  const decisions: AuthorizeRequest[] = [];
  const peerStatus = (id: string, serial?: string): PeerStanding => {
    if (serial !== undefined && revoked.has(serial)) return { ok: false, reason: 'revoked' };
    if (quarantined.has(id)) return { ok: false, reason: 'quarantined' };
    return { ok: true };
  };
  const inbound = await startInbound({
    listen: { host: '127.0.0.1', port: 0 }, app: { host: '127.0.0.1', port: (app.address() as AddressInfo).port }, mode: 'http',
    tls: serverSrc, peerStatus,
    authorize: (r) => {
      decisions.push(r);
      // The caller's current certificate only (the rig's, which a test may rotate).
      return { allow: r.peer === CLIENT_ID && r.serial === rig?.clientSvid.serial };
    },
  });
  const outbound = await startOutbound({
    listen: { host: '127.0.0.1', port: 0 }, upstream: { host: '127.0.0.1', port: inbound.port, expectedId: SERVER_ID },
    tls: clientSrc, peerStatus, ...(opts.resumeSessions !== undefined ? { resumeSessions: opts.resumeSessions } : {}),
  });
  rig = { app, inbound, outbound, clientSrc, serverSrc, clientSvid, serverSvid, revoked, quarantined, decisions };
  return rig;
}

/** One request on a new connection to the outbound (so a new mTLS connection to the inbound). */
function get(r: Rig, path = '/orders/1'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port: r.outbound.port, path, agent: false, headers: { connection: 'close' } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.setTimeout(5000, () => req.destroy(new Error('timed out')));
    req.end();
  });
}

/** A request the outbound refuses is a connection closed without an answer. */
async function refusedByOutbound(r: Rig): Promise<boolean> {
  try {
    await get(r);
    return false;
  } catch (err) {
    return (err as { code?: string }).code === 'ECONNRESET' || /socket hang up/.test((err as Error).message);
  }
}

describe('TLS session resumption between the proxies', () => {
  it('resumes the second connection, and the caller\'s SPIFFE ID and serial still reach the policy and the app', async () => {
    const r = await start();
    const first = await get(r);
    expect(first.status).toBe(200);
    expect(r.outbound.stats.resumed).toBe(0);
    expect(r.inbound.stats.resumed).toBe(0);
    for (let i = 0; i < 3; i++) {
      const res = await get(r, `/orders/${i + 2}`);
      expect(res.status).toBe(200);
      expect(JSON.parse(res.body)).toEqual({ id: CLIENT_ID });
    }
    expect(r.outbound.stats.resumed).toBe(3);
    expect(r.inbound.stats.resumed).toBe(3);
    expect(r.inbound.stats.connections).toBe(4);
    // Every decision, on resumed sessions too, names the caller and its certificate's serial.
    expect(r.decisions.map((d) => [d.peer, d.serial, d.path])).toEqual([1, 2, 3, 4].map((i) => [CLIENT_ID, r.clientSvid.serial, `/orders/${i}`]));
  });

  it('refuses a caller revoked, then quarantined, on a resumed session', async () => {
    const r = await start();
    expect((await get(r)).status).toBe(200);
    r.revoked.add(r.clientSvid.serial);
    const revoked = await get(r);
    expect(revoked.status).toBe(403);
    expect(revoked.body).toContain('TESSERA_IDENTITY_REVOKED');
    expect(r.inbound.stats.resumed).toBe(1);
    r.revoked.clear();
    r.quarantined.add(CLIENT_ID);
    const quarantined = await get(r);
    expect(quarantined.status).toBe(403);
    expect(quarantined.body).toContain('TESSERA_IDENTITY_QUARANTINED');
    expect(r.inbound.stats.resumed).toBe(2);
    expect(r.inbound.stats.identityRefused).toBe(2);
    r.quarantined.clear();
    expect((await get(r)).status).toBe(200);
    expect(QUARANTINED_REFUSAL).toBe('peer quarantined');
  });

  it('refuses a revoked target from the identity bound to the ticket, drops the ticket, and checks a full handshake next', async () => {
    const r = await start();
    expect((await get(r)).status).toBe(200);
    const before = r.outbound.stats;
    r.revoked.add(r.serverSvid.serial);
    expect(await refusedByOutbound(r)).toBe(true);
    let after = r.outbound.stats;
    // The resumed connection carried no certificate: the serial bound to the ticket was refused.
    expect(after.resumed).toBe(before.resumed + 1);
    expect(after.identityRefused).toBe(before.identityRefused + 1);
    expect(r.decisions).toHaveLength(1);
    // The ticket is gone: the next connection is a full handshake, refused on the certificate.
    expect(await refusedByOutbound(r)).toBe(true);
    after = r.outbound.stats;
    expect(after.resumed).toBe(before.resumed + 1);
    expect(after.identityRefused).toBe(before.identityRefused + 2);
    r.revoked.clear();
    expect((await get(r)).status).toBe(200);
    expect(r.outbound.stats.resumed).toBe(before.resumed + 1);
    expect((await get(r)).status).toBe(200);
    expect(r.outbound.stats.resumed).toBe(before.resumed + 2);
  });

  it('does not resume across a rotation of either side: the chain is verified against the new bundle', async () => {
    const r = await start();
    expect((await get(r)).status).toBe(200);
    expect((await get(r)).status).toBe(200);
    expect(r.inbound.stats.resumed).toBe(1);
    // The caller's agent rotates its SVID: its ticket is dropped.
    const renewed = ca.issue([CLIENT_ID]);
    r.clientSrc.rotate({ certPem: renewed.certPem, key: renewed.key });
    r.clientSvid = renewed;
    expect((await get(r)).status).toBe(200);
    expect(r.inbound.stats.resumed).toBe(1);
    expect(r.decisions.at(-1)?.serial).toBe(renewed.serial);
    expect((await get(r)).status).toBe(200);
    expect(r.inbound.stats.resumed).toBe(2);
    // The inbound's bundle changes: tickets sealed by its old context no longer open.
    r.serverSrc.rotate({ bundlePem: r.serverSrc.material.bundlePem }, 'bundle');
    expect((await get(r)).status).toBe(200);
    expect(r.inbound.stats.resumed).toBe(2);
    expect(r.outbound.stats.resumed).toBe(2);
  });

  it('never resumes with resumeSessions: false', async () => {
    const r = await start({ resumeSessions: false });
    for (let i = 0; i < 3; i++) expect((await get(r)).status).toBe(200);
    expect(r.outbound.stats.resumed).toBe(0);
    expect(r.inbound.stats.resumed).toBe(0);
  });
});
