/**
 * The HAProxy data plane end to end (src/agent/haproxy): a real HAProxy process in front of a
 * real app, real mTLS on 127.0.0.1 with certificates of a real test CA, the agent's SPOE decision
 * service and runtime-API updates. Callers go through the Node outbound proxy (which checks the
 * server's SPIFFE ID, so HAProxy must present the agent's SVID) or a raw TLS client.
 */
import { X509Certificate, type KeyObject } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { Agent as HttpAgent, createServer as createHttpServer, request as httpRequest, type IncomingHttpHeaders, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { findHaproxy, startHaproxyInbound, type HaproxyInbound, type HaproxyInboundOptions } from '../src/agent/haproxy/inbound.js';
import type { AuthorizeRequest, DecisionRecord } from '../src/agent/inbound/inbound.js';
import { startOutbound, type Outbound } from '../src/agent/outbound/outbound.js';
import { TelemetryCollector } from '../src/agent/telemetry/collector.js';
import type { PeerStanding } from '../src/agent/enforce/policy.js';
import { FakeSource, TestCa } from './support/tls-ca.js';

const TD = 'haproxy.test';
const CLIENT_ID = `spiffe://${TD}/shop/orders`;
const SERVER_ID = `spiffe://${TD}/shop/payments`;
const HAPROXY = findHaproxy();

let ca: TestCa;
let otherCa: TestCa;
let app: { port: number; server: HttpServer; requests: number; lastHeaders: IncomingHttpHeaders | undefined; urls: string[] };
let dir: string;

beforeAll(async () => {
  ca = new TestCa(TD, 'haproxy test CA');
  otherCa = new TestCa(TD, 'unrelated CA with the same trust domain');
  dir = mkdtempSync(join(tmpdir(), 'tessera-hap-'));
  const state = { port: 0, server: undefined as unknown as HttpServer, requests: 0, lastHeaders: undefined as IncomingHttpHeaders | undefined, urls: [] as string[] };
  state.server = createHttpServer((req, res) => {
    state.requests++;
    state.lastHeaders = req.headers;
    state.urls.push(req.url ?? '');
    req.resume();
    req.on('end', () => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ method: req.method, url: req.url, id: req.headers['x-spiffe-id'] ?? null, ids: req.rawHeaders.filter((_, i) => i % 2 === 0 && /^x[-_]spiffe[-_]id$/i.test(req.rawHeaders[i]!)).length }));
    });
  });
  state.server.listen(0, '127.0.0.1');
  await once(state.server, 'listening');
  state.port = (state.server.address() as AddressInfo).port;
  app = state;
});

afterAll(async () => {
  app.server.closeAllConnections();
  await new Promise((r) => app.server.close(r));
  rmSync(dir, { recursive: true, force: true });
});

const cleanups: Array<() => Promise<unknown> | void> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

interface Harness {
  ib: HaproxyInbound;
  ob: Outbound;
  serverSrc: FakeSource;
  clientSrc: FakeSource;
  decisions: DecisionRecord[];
  asked: AuthorizeRequest[];
  /** The policy: a function of the request (replaceable). */
  policy: { allow: (r: AuthorizeRequest) => boolean };
  standing: Map<string, PeerStanding>;
  dataDir: string;
  refusals: string[];
}

let n = 0;
async function harness(extra: Partial<HaproxyInboundOptions> = {}): Promise<Harness> {
  const serverSrc = ca.source(SERVER_ID);
  const clientSrc = ca.source(CLIENT_ID);
  const decisions: DecisionRecord[] = [];
  const asked: AuthorizeRequest[] = [];
  const refusals: string[] = [];
  const policy = { allow: (_r: AuthorizeRequest): boolean => true };
  const standing = new Map<string, PeerStanding>();
  const dataDir = join(dir, `a${n++}`);
  const ib = await startHaproxyInbound({
    dataDir, listen: { host: '127.0.0.1', port: 0 }, app: { host: '127.0.0.1', port: app.port }, mode: 'http', tls: serverSrc,
    authorize: (r) => {
      asked.push(r);
      return { allow: policy.allow(r), reasons: ['test policy'] };
    },
    onDecision: (d) => decisions.push(d),
    onRefused: (r) => refusals.push(`${r.code}: ${r.reason}`),
    peerStatus: (id, serial) => standing.get(`${id} ${serial}`) ?? standing.get(id) ?? { ok: true },
    ...extra,
  });
  cleanups.push(() => ib.close());
  const ob = await startOutbound({ listen: { host: '127.0.0.1', port: 0 }, upstream: { host: '127.0.0.1', port: ib.port, expectedId: SERVER_ID }, tls: clientSrc });
  cleanups.push(() => ob.close());
  return { ib, ob, serverSrc, clientSrc, decisions, asked, policy, standing, dataDir, refusals };
}

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

function request(port: number, agent: HttpAgent, path: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, agent, method, path, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error('request timed out')));
    req.end();
  });
}

function keptAlive(): HttpAgent {
  const a = new HttpAgent({ keepAlive: true, maxSockets: 1 });
  cleanups.push(() => a.destroy());
  return a;
}

const codeOf = (r: Reply): string | undefined => {
  try {
    return (JSON.parse(r.body) as { error?: { code?: string } }).error?.code;
  } catch {
    return undefined;
  }
};

/** A TLS connection straight to HAProxy with `creds`, one request, everything until close. */
function rawTls(port: number, creds: { certPem?: string; key?: KeyObject }, payload: string, trust = ca.pem): Promise<{ secure: boolean; data: string; peerSerial: string | undefined }> {
  return new Promise((resolve) => {
    let data = '';
    const out = { secure: false, data: '', peerSerial: undefined as string | undefined };
    const s = tlsConnect({ host: '127.0.0.1', port, ca: trust, cert: creds.certPem, key: creds.key?.export({ format: 'pem', type: 'pkcs8' }) as string | undefined, checkServerIdentity: () => undefined });
    const timer = setTimeout(() => s.destroy(), 10_000);
    s.on('secureConnect', () => {
      out.secure = true;
      out.peerSerial = s.getPeerX509Certificate()?.serialNumber;
      s.write(payload);
    });
    s.on('data', (c: Buffer) => (data += c.toString('latin1')));
    s.on('error', () => {});
    s.on('close', () => {
      clearTimeout(timer);
      out.data = data;
      resolve(out);
    });
  });
}

const waitFor = async (what: string, cond: () => boolean, ms = 5000): Promise<void> => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

describe.skipIf(HAPROXY === undefined)('HAProxy data plane', () => {
  it('forwards an allowed call with the verified x-spiffe-id (forged ones stripped), and keeps no key file on disk', async () => {
    const h = await harness();
    const a = keptAlive();
    const r = await request(h.ob.port, a, '/hello/1?x=1', { 'x-spiffe-id': 'spiffe://haproxy.test/forged', 'X_Spiffe_Id': 'forged-too' });
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toMatchObject({ id: CLIENT_ID, url: '/hello/1?x=1', ids: 1 });
    expect(h.asked[0]).toMatchObject({ peer: CLIENT_ID, action: 'http:request', method: 'GET', path: '/hello/1', serial: new X509Certificate(h.clientSrc.current().certPem).serialNumber });
    expect(h.decisions[0]).toMatchObject({ peer: CLIENT_ID, allow: true, path: '/hello/1' });
    // The SVID file (certificate and key) is gone once HAProxy read it; what stays is 0600.
    const files = readdirSync(join(h.dataDir, 'haproxy'));
    expect(files).not.toContain('svid.pem');
    expect(statSync(join(h.dataDir, 'haproxy')).mode & 0o777).toBe(0o700);
    for (const f of ['haproxy.cfg', 'bundle.pem']) expect(statSync(join(h.dataDir, 'haproxy', f)).mode & 0o777).toBe(0o600);
    // Telemetry and counters come from HAProxy's log lines.
    await waitFor('the log line', () => h.ib.stats.requests >= 1);
    expect(h.ib.bytes().sent).toBeGreaterThan(0);
  });

  it('denies by policy with 403 TESSERA_PROXY_DENIED before the app sees anything, refuses ambiguous paths with 400, and counts telemetry per caller', async () => {
    const collector = new TelemetryCollector({ self: SERVER_ID, selfSite: 'test', peerSite: () => undefined, onWindows: () => {} });
    const lane = collector.lane('callee', 'http');
    const h = await harness({ telemetry: lane });
    h.policy.allow = (r) => r.path !== '/admin';
    const before = app.requests;
    const a = keptAlive();
    const denied = await request(h.ob.port, a, '/admin');
    expect(denied.status).toBe(403);
    expect(codeOf(denied)).toBe('TESSERA_PROXY_DENIED');
    expect(h.decisions.at(-1)).toMatchObject({ allow: false, path: '/admin' });
    const dots = await request(h.ob.port, a, '/a/../admin');
    expect(dots.status).toBe(400);
    expect(codeOf(dots)).toBe('TESSERA_PROXY_PATH_REFUSED');
    const escaped = await request(h.ob.port, a, '/%61dmin');
    expect(codeOf(escaped)).toBe('TESSERA_PROXY_PATH_REFUSED');
    expect(app.requests).toBe(before);
    expect((await request(h.ob.port, a, '/fine')).status).toBe(200);
    expect((await request(h.ob.port, a, '/fine')).status).toBe(200); // from HAProxy's cache, counted all the same
    await waitFor('the log lines', () => (lane.map.get(CLIENT_ID)?.requests ?? 0) >= 3);
    await new Promise((r) => setTimeout(r, 100));
    // The refused paths are not the caller's requests (as in the Node data plane): 3 requests, 1 denial.
    const e = lane.map.get(CLIENT_ID)!;
    expect(e).toMatchObject({ requests: 3, denials: 1, errors: 0 });
    expect(e.bytesOut).toBeGreaterThan(0);
    expect(e.paths?.size).toBe(2);
    expect(e.samples).toBe(2);
    expect(h.ib.stats).toMatchObject({ requests: 3, allowed: 2, denied: 1, badRequests: 2 });
  });

  it('hostile request shapes (smuggling, bare LF, garbage, oversized or endless heads): refused, or normalized with every request decided; none reaches the app undecided', async () => {
    const h = await harness();
    h.policy.allow = (r) => !(r.path ?? '').startsWith('/smuggled');
    const creds = ca.issue([CLIENT_ID]);
    const smuggle = 'GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n';
    const shapes = [
      `POST /sha HTTP/1.1\r\nHost: a\r\nContent-Length: ${5 + smuggle.length}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${smuggle}`,
      `POST /sha HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: ${smuggle.length}\r\n\r\n${smuggle}`,
      `POST /sha HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n${smuggle}`,
      `POST /sha HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\nContent-Length: ${smuggle.length}\r\n\r\n${smuggle}`,
      `GET /lf HTTP/1.1\nHost: a\n\n${smuggle}`,
      '\x16\x03\x01garbage\r\n\r\n',
      `GET / HTTP/1.1\r\nHost: a\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`,
      `GET / HTTP/1.1\r\nHost: a\r\n${'X: 1\r\n'.repeat(150)}\r\n`,
    ];
    let served = 0;
    for (const bad of shapes) {
      const before = app.urls.length;
      // A last request closes the connection when the ones before it were served (else HAProxy closes it).
      const r = await rawTls(h.ib.port, creds, `${bad}GET /end HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`);
      expect(r.data).toMatch(/^HTTP\/1\.1 \d{3}/);
      // Every answer is a complete HTTP response (refusals 4xx), never a hang or a 5xx.
      for (const m of r.data.matchAll(/HTTP\/1\.1 (\d{3}) /g)) expect(Number(m[1])).toBeLessThan(500);
      // What reached the app was decided: the denied path never arrives, whatever the framing trick.
      const seen = app.urls.slice(before);
      expect(seen.filter((u) => u.startsWith('/smuggled'))).toEqual([]);
      for (const u of seen) expect(h.asked.some((a) => a.path === u.split('?')[0])).toBe(true);
      served += seen.length;
    }
    // Not all refused: HAProxy served some shapes normalized (bare LF heads; the body of CL + TE as chunked,
    // then closed), and the smuggled request, where HAProxy read it as one, was decided and denied.
    expect(served).toBeGreaterThan(0);
  });

  it('refuses a peer from another CA at the handshake, and an SVID of another trust domain or with two URI SANs after it', async () => {
    const h = await harness();
    const before = app.requests;
    const forged = await rawTls(h.ib.port, otherCa.issue([CLIENT_ID]), 'GET / HTTP/1.1\r\nHost: a\r\n\r\n');
    expect(forged.data).toBe('');
    const noCert = await rawTls(h.ib.port, {}, 'GET / HTTP/1.1\r\nHost: a\r\n\r\n');
    expect(noCert.data).toBe('');
    for (const sans of [['spiffe://other.test/x'], [CLIENT_ID, `spiffe://${TD}/second`]]) {
      const r = await rawTls(h.ib.port, ca.issue(sans), 'GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
      expect(r.secure).toBe(true);
      expect(r.data).toMatch(/^HTTP\/1\.1 403/);
      expect(r.data).toContain('TESSERA_PROXY_PEER_IDENTITY');
    }
    expect(app.requests).toBe(before);
    expect(h.ib.stats.identityRefused).toBe(2);
  });

  it('refuses a revoked and a quarantined peer with their codes, even with an allow cached for them', async () => {
    const h = await harness();
    const a = keptAlive();
    expect((await request(h.ob.port, a, '/x')).status).toBe(200);
    expect((await request(h.ob.port, a, '/x')).status).toBe(200);
    expect(h.asked).toHaveLength(1); // the second came from HAProxy's cache
    h.standing.set(CLIENT_ID, { ok: false, reason: 'quarantined' });
    await h.ib.flush();
    const q = await request(h.ob.port, a, '/x');
    expect(q.status).toBe(403);
    expect(codeOf(q)).toBe('TESSERA_IDENTITY_QUARANTINED');
    h.standing.set(CLIENT_ID, { ok: false, reason: 'revoked' });
    await h.ib.flush();
    const r = await request(h.ob.port, keptAlive(), '/x');
    expect(r.status).toBe(403);
    expect(codeOf(r)).toBe('TESSERA_IDENTITY_REVOKED');
    expect(h.asked).toHaveLength(3); // both refusals were put to the authorizer (and recorded)
    expect(h.decisions).toHaveLength(3);
  });

  it('a policy change flushes the decision cache: a stale allow never survives it', async () => {
    const h = await harness();
    const a = keptAlive();
    const paths = ['/orders/1', '/orders/2', '/orders/3'];
    for (const p of paths) expect((await request(h.ob.port, a, p)).status).toBe(200);
    const asked = h.asked.length;
    // The policy changes. Without a flush, HAProxy's cache would still answer (proved here: the
    // new policy is not consulted), so the test can tell a flush that works from one that does not.
    h.policy.allow = (r) => r.path !== '/orders/2';
    expect((await request(h.ob.port, a, '/orders/2')).status).toBe(200);
    expect(h.asked.length).toBe(asked);
    expect(await h.ib.runtime.tableUsed('tessera_cache')).toBe(3);
    await h.ib.flush();
    expect(await h.ib.runtime.tableUsed('tessera_cache')).toBe(0);
    const after = await request(h.ob.port, a, '/orders/2');
    expect(after.status).toBe(403);
    expect(codeOf(after)).toBe('TESSERA_PROXY_DENIED');
    expect((await request(h.ob.port, a, '/orders/1')).status).toBe(200);
    expect(h.asked.length).toBe(asked + 2);
  });

  it('takes rotated SVIDs and CAs by HAProxy\'s seamless reload (same master, new worker), with zero failed requests', async () => {
    const h = await harness();
    const pid = h.ib.pid;
    const worker = h.ib.workerPid;
    const a = keptAlive();
    let failures = 0;
    let ok = 0;
    let stop = false;
    const loop = (async () => {
      while (!stop) {
        const r = await request(h.ob.port, ok % 2 === 0 ? a : new HttpAgent(), `/r/${ok}`).catch((e: Error) => ({ status: 0, body: e.message }) as Reply);
        if (r.status === 200) ok++;
        else if (failures++ < 5) console.log('failed request', r.status, r.body);
      }
    })();
    cleanups.push(async () => {
      stop = true;
      await loop;
    });
    const served = async (trust: string): Promise<string | undefined> => (await rawTls(h.ib.port, h.clientSrc.current(), 'GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n', trust)).peerSerial;
    // SVID rotations.
    for (let i = 0; i < 5; i++) {
      h.serverSrc.rotate(ca.issue([SERVER_ID]));
      h.clientSrc.rotate(ca.issue([CLIENT_ID]));
      await h.ib.tlsSettled();
      expect(await served(ca.pem)).toBe(new X509Certificate(h.serverSrc.current().certPem).serialNumber);
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(h.ib.pid).toBe(pid);
    expect(h.ib.workerPid).not.toBe(worker);
    expect(h.ib.reloads).toBe(5);
    // CA rotations: a new CA joins both bundles, both sides move to SVIDs it issued, the old CA leaves.
    let current = ca;
    for (let i = 0; i < 3; i++) {
      const next = new TestCa(TD, `rotation CA ${i}`);
      const both = current.pem + next.pem;
      h.serverSrc.rotate({ bundlePem: both }, 'bundle');
      h.clientSrc.rotate({ bundlePem: both }, 'bundle');
      await h.ib.tlsSettled();
      h.serverSrc.rotate(next.issue([SERVER_ID]));
      h.clientSrc.rotate(next.issue([CLIENT_ID]));
      await h.ib.tlsSettled();
      expect(await served(next.pem)).toBe(new X509Certificate(h.serverSrc.current().certPem).serialNumber);
      h.serverSrc.rotate({ bundlePem: next.pem }, 'bundle');
      h.clientSrc.rotate({ bundlePem: next.pem }, 'bundle');
      await h.ib.tlsSettled();
      // The old CA's SVIDs are refused now.
      expect((await rawTls(h.ib.port, current.issue([CLIENT_ID]), 'GET / HTTP/1.1\r\nHost: a\r\n\r\n', next.pem)).data).toBe('');
      current = next;
      await new Promise((r) => setTimeout(r, 100));
    }
    stop = true;
    await loop;
    expect(failures).toBe(0);
    expect(ok).toBeGreaterThan(20);
    expect(h.ib.reloads).toBe(5 + 9);
    expect(h.ib.starts).toBe(1);
  }, 30_000);

  it('why no `commit ssl cert`: on HAProxy 2.6 it drops `verify required`; the agent still refuses callers without a certificate', async () => {
    const h = await harness();
    const before = app.requests;
    expect((await rawTls(h.ib.port, {}, 'GET / HTTP/1.1\r\nHost: a\r\n\r\n')).data).toBe('');
    const next = ca.issue([SERVER_ID]);
    const { keyPem } = await import('../src/common/tls-source.js');
    await h.ib.runtime.setCertificate(join(h.dataDir, 'haproxy', 'svid.pem'), next.certPem + keyPem(next.key));
    const r = await rawTls(h.ib.port, {}, 'GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    if (r.data !== '') {
      // HAProxy no longer asked for a client certificate (2.6.12 behaviour): refused by the agent.
      expect(r.data).toMatch(/^HTTP\/1\.1 403/);
      expect(r.data).toContain('TESSERA_PROXY_PEER_IDENTITY');
      expect(h.refusals).toContain('TESSERA_PROXY_PEER_IDENTITY: no peer certificate');
    }
    expect(app.requests).toBe(before);
  });

  it.each(['master', 'worker'] as const)('fails closed when HAProxy dies (%s killed: no listener), then restarts it', async (which) => {
    const h = await harness();
    expect((await request(h.ob.port, new HttpAgent(), '/before')).status).toBe(200);
    process.kill(which === 'master' ? h.ib.pid! : h.ib.workerPid!, 'SIGKILL');
    if (which === 'master') {
      await waitFor('HAProxy to be seen dead', () => h.ib.pid === undefined, 5000);
      const during = await rawTls(h.ib.port, h.clientSrc.current(), 'GET / HTTP/1.1\r\nHost: a\r\n\r\n');
      expect(during.secure).toBe(false);
    }
    // A dead worker under a live master: the agent's watchdog (runtime API, every second) restarts HAProxy.
    await waitFor('HAProxy to be restarted', () => h.ib.pid !== undefined && h.ib.starts === 2, 10_000);
    await new Promise((r) => setTimeout(r, 200));
    expect((await request(h.ob.port, new HttpAgent(), '/after')).status).toBe(200);
  });

  it('answers 503 TESSERA_UNAVAILABLE when the agent cannot decide in time (fail closed)', async () => {
    const h = await harness({ decisionTimeoutMs: 200 });
    h.policy.allow = (r) => {
      if (r.path === '/slow') {
        const until = Date.now() + 1500;
        while (Date.now() < until) { /* a decision that takes too long */ }
      }
      return true;
    };
    const before = app.requests;
    const r = await request(h.ob.port, new HttpAgent(), '/slow');
    expect(r.status).toBe(503);
    expect(codeOf(r)).toBe('TESSERA_UNAVAILABLE');
    expect(app.requests).toBe(before);
  });
});
