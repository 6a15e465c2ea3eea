/**
 * Connections do not outlive what admitted them (issue 9, finding 4, connection side), over real
 * TLS on 127.0.0.1 with certificates from a real test CA: tcp-mode connections are re-judged when
 * the policy or revocation list changes, http-mode connections of a refused caller close after
 * their exchange, and both directions close at the peer certificate's expiry, even mid-exchange.
 */
import { once } from 'node:events';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { connect as netConnect, createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { connect as tlsConnect, createSecureContext, type SecureContext } from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startInbound, type AuthorizeRequest, type DecisionRecord, type Inbound, type InboundOptions, type PeerStatus, type RefusalRecord } from '../src/agent/inbound/inbound.js';
import { startOutbound, type Outbound, type OutboundRefusal } from '../src/agent/outbound/outbound.js';
import { TestCa, sourceFor, type IssuedSvid } from './support/tls-ca.js';

const TD = 'rejudge.test';
const CLIENT_ID = `spiffe://${TD}/shop/orders`;
const OTHER_ID = `spiffe://${TD}/shop/billing`;
const SERVER_ID = `spiffe://${TD}/shop/payments`;

let ca: TestCa;
const cleanups: Array<() => Promise<unknown> | void> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

// ---------------------------------------------------------------------------------------------
// Applications behind the inbound proxy
// ---------------------------------------------------------------------------------------------

/** Echoes every byte; counts connections and bytes received. */
interface EchoApp {
  port: number;
  connections: number;
  bytes: number;
}

async function startEcho(): Promise<EchoApp> {
  const state: EchoApp = { port: 0, connections: 0, bytes: 0 };
  const sockets = new Set<Socket>();
  const server: NetServer = createNetServer((s) => {
    state.connections++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('data', (c: Buffer) => {
      state.bytes += c.length;
      s.write(c);
    });
    s.on('error', () => {});
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  state.port = (server.address() as AddressInfo).port;
  cleanups.push(() => new Promise((r) => {
    for (const s of sockets) s.destroy();
    server.close(r);
  }));
  return state;
}

/** /sha reads the whole body then answers; /drip streams a chunk every 100 ms for 20 s; anything else answers at once. */
let httpApp: { server: HttpServer; port: number; answered: number };

async function startHttpApp(): Promise<typeof httpApp> {
  const state = { server: undefined as unknown as HttpServer, port: 0, answered: 0 };
  state.server = createHttpServer((req, res) => {
    if (req.url === '/drip') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      const timer = setInterval(() => res.write('drip\n'), 100);
      const stop = setTimeout(() => {
        clearInterval(timer);
        res.end();
      }, 20_000);
      res.on('close', () => {
        clearInterval(timer);
        clearTimeout(stop);
      });
      return;
    }
    let n = 0;
    req.on('data', (c: Buffer) => {
      n += c.length;
    });
    req.on('end', () => {
      state.answered++;
      res.end(JSON.stringify({ url: req.url, length: n }));
    });
  });
  state.server.listen(0, '127.0.0.1');
  await once(state.server, 'listening');
  state.port = (state.server.address() as AddressInfo).port;
  return state;
}

// ---------------------------------------------------------------------------------------------
// Clients: long-lived connections whose closing time we observe
// ---------------------------------------------------------------------------------------------

interface Conn {
  /** Everything received so far (latin1). */
  received(): string;
  write(data: string): void;
  /** Resolves with the time the connection closed. */
  closed: Promise<number>;
  isClosed(): boolean;
  /** Resolves once `text` has been received, rejects if the connection closes first or after 10 s. */
  waitFor(text: string): Promise<void>;
  destroy(): void;
}

function track(socket: Socket, ready: 'connect' | 'secureConnect'): Promise<Conn> {
  let data = '';
  let closedAt = 0;
  const waiters = new Set<() => void>();
  const closed = new Promise<number>((resolve) => {
    socket.on('close', () => {
      closedAt = Date.now();
      for (const w of waiters) w();
      resolve(closedAt);
    });
  });
  socket.on('error', () => {});
  socket.on('data', (c: Buffer) => {
    data += c.toString('latin1');
    for (const w of waiters) w();
  });
  const conn: Conn = {
    received: () => data,
    write: (d) => {
      socket.write(d);
    },
    closed,
    isClosed: () => closedAt !== 0,
    waitFor: (text) => new Promise((resolve, reject) => {
      const timer = setTimeout(() => done(new Error(`timed out waiting for ${JSON.stringify(text)}`)), 10_000);
      const check = (): void => {
        if (data.includes(text)) done(undefined);
        else if (closedAt !== 0) done(new Error(`closed before ${JSON.stringify(text)} arrived`));
      };
      const done = (err: Error | undefined): void => {
        clearTimeout(timer);
        waiters.delete(check);
        if (err) reject(err);
        else resolve();
      };
      waiters.add(check);
      check();
    }),
    destroy: () => socket.destroy(),
  };
  cleanups.push(() => { socket.destroy(); });
  return new Promise((resolve, reject) => {
    socket.once(ready, () => resolve(conn));
    socket.once('close', () => reject(new Error('closed before connecting')));
  });
}

/** One client context per SVID: building one per connection would dominate the load test. */
const contexts = new WeakMap<IssuedSvid, SecureContext>();

/** A TLS connection straight to the inbound proxy, presenting `svid`. */
function openTls(port: number, svid: IssuedSvid): Promise<Conn> {
  let secureContext = contexts.get(svid);
  if (secureContext === undefined) {
    secureContext = createSecureContext({ ca: ca.pem, cert: svid.certPem, key: svid.key.export({ format: 'pem', type: 'pkcs8' }) as string });
    contexts.set(svid, secureContext);
  }
  const socket = tlsConnect({ host: '127.0.0.1', port, secureContext, checkServerIdentity: () => undefined });
  return track(socket, 'secureConnect');
}

/** A plain connection to the outbound proxy (the app's side). */
function openPlain(port: number): Promise<Conn> {
  return track(netConnect({ host: '127.0.0.1', port }), 'connect');
}

/** Sends a token and waits for its echo: the connection carries bytes both ways. */
async function ping(conn: Conn, token: string): Promise<void> {
  conn.write(token);
  await conn.waitFor(token);
}

/** Resolves true if `conn` closes within `ms`. */
async function closesWithin(conn: Conn, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const r = await Promise.race([conn.closed.then(() => true), new Promise<boolean>((res) => { timer = setTimeout(() => res(false), ms); })]);
  clearTimeout(timer);
  return r;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

// ---------------------------------------------------------------------------------------------
// Proxies
// ---------------------------------------------------------------------------------------------

async function inbound(opts: Partial<InboundOptions> & { app: { host: string; port: number } }): Promise<Inbound> {
  const ib = await startInbound({ listen: { host: '127.0.0.1', port: 0 }, mode: 'tcp', tls: sourceFor(ca, SERVER_ID), authorize: () => ({ allow: true }), ...opts });
  cleanups.push(() => ib.close());
  return ib;
}

async function outbound(port: number, extra: { peerStatus?: PeerStatus; onRefused?: (r: OutboundRefusal) => void } = {}): Promise<Outbound> {
  const ob = await startOutbound({ listen: { host: '127.0.0.1', port: 0 }, upstream: { host: '127.0.0.1', port, expectedId: SERVER_ID }, tls: sourceFor(ca, CLIENT_ID), ...extra });
  cleanups.push(() => ob.close());
  return ob;
}

/** A revocation list the tests edit: IDs and serials refused as `revoked`. */
function revocations(): { ids: Set<string>; serials: Set<string>; peerStatus: PeerStatus } {
  const ids = new Set<string>();
  const serials = new Set<string>();
  return {
    ids, serials,
    peerStatus: (id, serial) => (ids.has(id) || (serial !== undefined && serials.has(serial)) ? { ok: false, reason: 'revoked' } : { ok: true }),
  };
}

beforeAll(async () => {
  ca = new TestCa(TD, 'rejudge test CA');
  httpApp = await startHttpApp();
});

afterAll(async () => {
  httpApp.server.closeAllConnections();
  await new Promise((r) => httpApp.server.close(r));
});

// ---------------------------------------------------------------------------------------------
// tcp mode
// ---------------------------------------------------------------------------------------------

describe('tcp mode: re-judging open connections', () => {
  it('closes a flowing connection the authorizer now refuses, within a second of rejudge(); an allowed one stays open', async () => {
    const echo = await startEcho();
    const denied = new Set<string>();
    const asked: AuthorizeRequest[] = [];
    const decisions: DecisionRecord[] = [];
    const ib = await inbound({
      app: { host: '127.0.0.1', port: echo.port },
      authorize: (r) => (asked.push(r), denied.has(r.peer) ? { allow: false, reasons: ['forbid: orders may no longer call payments'] } : { allow: true }),
      onDecision: (d) => decisions.push(d),
    });
    const a = await openTls(ib.port, ca.issue([CLIENT_ID]));
    const a2 = await openTls(ib.port, ca.issue([CLIENT_ID]));
    const b = await openTls(ib.port, ca.issue([OTHER_ID]));
    await ping(a, 'a1');
    await ping(a2, 'a2');
    await ping(b, 'b1');

    // Nothing changed: nothing closes.
    expect(ib.rejudge()).toEqual({ checked: 3, closed: 0, peers: 2 });
    await ping(a, 'a3');

    denied.add(CLIENT_ID);
    asked.length = 0;
    const t0 = Date.now();
    expect(ib.rejudge()).toEqual({ checked: 3, closed: 2, peers: 2 });
    // One authorizer call per distinct caller, not per connection.
    expect(asked).toEqual([{ peer: CLIENT_ID, action: 'tcp:connect' }, { peer: OTHER_ID, action: 'tcp:connect' }]);
    expect(await closesWithin(a, 1000)).toBe(true);
    expect(await closesWithin(a2, 1000)).toBe(true);
    expect((await a.closed) - t0).toBeLessThan(1000);
    await ping(b, 'b2');
    expect(b.isClosed()).toBe(false);

    expect(ib.stats).toMatchObject({ rejudged: 2, active: 1 });
    const denial = decisions.filter((d) => !d.allow);
    expect(denial).toHaveLength(1);
    expect(denial[0]).toMatchObject({ peer: CLIENT_ID, action: 'tcp:connect', allow: false });
    expect(denial[0]!.reasons).toEqual(['re-judged: denied after policy change', 'forbid: orders may no longer call payments', '2 open connection(s) closed']);
  });

  it('an authorizer that throws on rejudge closes the connection (fail closed)', async () => {
    const echo = await startEcho();
    let broken = false;
    const ib = await inbound({
      app: { host: '127.0.0.1', port: echo.port },
      authorize: () => {
        if (broken) throw new Error('engine gone');
        return { allow: true };
      },
    });
    const a = await openTls(ib.port, ca.issue([CLIENT_ID]));
    await ping(a, 'x');
    broken = true;
    expect(ib.rejudge().closed).toBe(1);
    expect(await closesWithin(a, 1000)).toBe(true);
  });

  it('closes the connections of a revoked certificate or identity, and refuses their new connections at the handshake', async () => {
    const echo = await startEcho();
    const rev = revocations();
    const refusals: RefusalRecord[] = [];
    const ib = await inbound({ app: { host: '127.0.0.1', port: echo.port }, peerStatus: rev.peerStatus, onRefused: (r) => refusals.push(r) });
    const oldSvid = ca.issue([CLIENT_ID]);
    const newSvid = ca.issue([CLIENT_ID]);
    const a = await openTls(ib.port, oldSvid);
    const a2 = await openTls(ib.port, newSvid);
    const b = await openTls(ib.port, ca.issue([OTHER_ID]));
    for (const [c, t] of [[a, 'a'], [a2, 'n'], [b, 'b']] as const) await ping(c, t);

    // One serial revoked: only the connection made with it closes.
    rev.serials.add(oldSvid.serial);
    expect(ib.rejudge()).toMatchObject({ checked: 3, closed: 1 });
    expect(await closesWithin(a, 1000)).toBe(true);
    await ping(a2, 'n2');
    const again = await openTls(ib.port, oldSvid);
    expect(await closesWithin(again, 2000)).toBe(true);
    expect(again.received()).toBe('');

    // The identity revoked: all its connections close, the other caller's stay.
    rev.ids.add(CLIENT_ID);
    expect(ib.rejudge()).toMatchObject({ checked: 2, closed: 1 });
    expect(await closesWithin(a2, 1000)).toBe(true);
    await ping(b, 'b2');
    const bytesBefore = echo.bytes;
    const fresh = await openTls(ib.port, ca.issue([CLIENT_ID]));
    fresh.write('should not reach the app');
    expect(await closesWithin(fresh, 2000)).toBe(true);
    expect(echo.bytes).toBe(bytesBefore);

    expect(ib.stats).toMatchObject({ rejudged: 2, identityRefused: 2 });
    expect(refusals.map((r) => [r.code, r.reason])).toEqual([['TESSERA_IDENTITY_REVOKED', 'peer revoked'], ['TESSERA_IDENTITY_REVOKED', 'peer revoked']]);
  });

  it('closes a connection at its caller\'s certificate expiry while another stays open', async () => {
    const echo = await startEcho();
    const ib = await inbound({ app: { host: '127.0.0.1', port: echo.port } });
    const short = ca.issue([CLIENT_ID], { notAfter: Date.now() + 3000 });
    const a = await openTls(ib.port, short);
    const b = await openTls(ib.port, ca.issue([OTHER_ID]));
    // Keep bytes flowing on the expiring connection until it is closed.
    let i = 0;
    const pinger = setInterval(() => { if (!a.isClosed()) a.write(`p${i++};`); }, 100);
    try {
      expect(await closesWithin(a, short.notAfter - Date.now() + 5000)).toBe(true);
    } finally {
      clearInterval(pinger);
    }
    const at = await a.closed;
    expect(at).toBeGreaterThanOrEqual(short.notAfter - 50);
    expect(at - short.notAfter).toBeLessThan(1500);
    expect(a.received()).toContain('p0;');
    await ping(b, 'still here');
    expect(ib.stats).toMatchObject({ expired: 1, active: 1 });
  }, 20_000);
});

// ---------------------------------------------------------------------------------------------
// http mode
// ---------------------------------------------------------------------------------------------

const UPLOAD_HEAD = 'POST /sha HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n';

describe('http mode', () => {
  it('closes a connection mid-upload at the caller\'s certificate expiry, answering 403 before the app does', async () => {
    const ib = await inbound({ app: { host: '127.0.0.1', port: httpApp.port }, mode: 'http' });
    const answered = httpApp.answered;
    const short = ca.issue([CLIENT_ID], { notAfter: Date.now() + 3000 });
    const c = await openTls(ib.port, short);
    c.write(UPLOAD_HEAD);
    const pump = setInterval(() => { if (!c.isClosed()) c.write('1\r\nx\r\n'); }, 100);
    try {
      expect(await closesWithin(c, short.notAfter - Date.now() + 5000)).toBe(true);
    } finally {
      clearInterval(pump);
    }
    const at = await c.closed;
    expect(at - short.notAfter).toBeLessThan(1500 + 2000 /* the lingering close */);
    expect(c.received()).toMatch(/^HTTP\/1\.1 403 /);
    expect(c.received()).toContain('TESSERA_PROXY_PEER_IDENTITY');
    expect(httpApp.answered).toBe(answered);
    expect(ib.stats.expired).toBe(1);
  }, 20_000);

  it('cuts a streaming response at the caller\'s certificate expiry', async () => {
    const ib = await inbound({ app: { host: '127.0.0.1', port: httpApp.port }, mode: 'http' });
    const short = ca.issue([CLIENT_ID], { notAfter: Date.now() + 3000 });
    const c = await openTls(ib.port, short);
    c.write('GET /drip HTTP/1.1\r\nHost: a\r\n\r\n');
    await c.waitFor('drip');
    expect(await closesWithin(c, short.notAfter - Date.now() + 5000)).toBe(true);
    const at = await c.closed;
    expect(at).toBeGreaterThanOrEqual(short.notAfter - 50);
    expect(at - short.notAfter).toBeLessThan(1500);
    expect(ib.stats.expired).toBe(1);
  }, 20_000);

  it('on rejudge, closes a revoked caller\'s idle connection at once and its in-flight one after the exchange', async () => {
    const rev = revocations();
    const decisions: DecisionRecord[] = [];
    const ib = await inbound({ app: { host: '127.0.0.1', port: httpApp.port }, mode: 'http', peerStatus: rev.peerStatus, onDecision: (d) => decisions.push(d) });
    const idle = await openTls(ib.port, ca.issue([CLIENT_ID]));
    idle.write('GET /one HTTP/1.1\r\nHost: a\r\n\r\n');
    await idle.waitFor('"url":"/one"');
    const busy = await openTls(ib.port, ca.issue([CLIENT_ID]));
    busy.write(`${UPLOAD_HEAD}3\r\nabc\r\n`);
    const other = await openTls(ib.port, ca.issue([OTHER_ID]));
    other.write('GET /two HTTP/1.1\r\nHost: a\r\n\r\n');
    await other.waitFor('"url":"/two"');
    await sleep(200); // the upload's first chunk is with the app

    // Policy alone changing closes nothing in http mode: each request is decided anyway.
    expect(ib.rejudge()).toMatchObject({ checked: 3, closed: 0 });

    rev.ids.add(CLIENT_ID);
    expect(ib.rejudge()).toMatchObject({ checked: 3, closed: 2 });
    expect(await closesWithin(idle, 1000)).toBe(true);
    expect(idle.received()).not.toContain('HTTP/1.1 403');
    // The upload in progress finishes and gets its answer, then the connection closes; a
    // pipelined request after it is not served.
    expect(busy.isClosed()).toBe(false);
    busy.write('2\r\nde\r\n0\r\n\r\nGET /after HTTP/1.1\r\nHost: a\r\n\r\n');
    await busy.waitFor('"length":5');
    expect(busy.received()).toMatch(/connection: close/i);
    expect(await closesWithin(busy, 3000)).toBe(true);
    expect(busy.received()).not.toContain('/after');
    // The other caller is untouched.
    other.write('GET /three HTTP/1.1\r\nHost: a\r\n\r\n');
    await other.waitFor('"url":"/three"');
    expect(ib.stats.rejudged).toBe(2);
    expect(decisions.filter((d) => !d.allow)).toEqual([expect.objectContaining({ peer: CLIENT_ID, action: 'http:request', reasons: ['re-judged: peer revoked', '2 open connection(s) closed'] })]);
    // And a new connection of the revoked caller is refused before any decision: its request gets
    // 403 TESSERA_IDENTITY_REVOKED (whatever the authorizer would say) and the connection closes.
    const fresh = await openTls(ib.port, ca.issue([CLIENT_ID]));
    fresh.write('GET /four HTTP/1.1\r\nHost: a\r\n\r\n');
    expect(await closesWithin(fresh, 2000)).toBe(true);
    expect(fresh.received()).toMatch(/^HTTP\/1\.1 403 /);
    expect(fresh.received()).toContain('TESSERA_IDENTITY_REVOKED');
    expect(fresh.received()).not.toContain('/four');
    expect(ib.stats.identityRefused).toBe(1);
  }, 20_000);
});

// ---------------------------------------------------------------------------------------------
// outbound
// ---------------------------------------------------------------------------------------------

describe('outbound', () => {
  it('closes an established connection at the target certificate\'s expiry', async () => {
    const echo = await startEcho();
    const short = ca.issue([SERVER_ID], { notAfter: Date.now() + 3000 });
    const ib = await inbound({ app: { host: '127.0.0.1', port: echo.port }, tls: sourceFor(ca, SERVER_ID, short) });
    const ob = await outbound(ib.port);
    const c = await openPlain(ob.port);
    await ping(c, 'hello');
    let i = 0;
    const pinger = setInterval(() => { if (!c.isClosed()) c.write(`p${i++};`); }, 100);
    try {
      expect(await closesWithin(c, short.notAfter - Date.now() + 5000)).toBe(true);
    } finally {
      clearInterval(pinger);
    }
    const at = await c.closed;
    expect(at).toBeGreaterThanOrEqual(short.notAfter - 50);
    expect(at - short.notAfter).toBeLessThan(1500);
    expect(ob.stats).toMatchObject({ expired: 1, connections: 1 });
    // The inbound did not close it (its caller's certificate is still valid).
    expect(ib.stats.expired).toBe(0);
  }, 20_000);

  it('refuses a revoked target before the app\'s bytes flow, and closes established connections to it on rejudge', async () => {
    const echo = await startEcho();
    const rev = revocations();
    const refusals: OutboundRefusal[] = [];
    const ib = await inbound({ app: { host: '127.0.0.1', port: echo.port } });
    const ob = await outbound(ib.port, { peerStatus: rev.peerStatus, onRefused: (r) => refusals.push(r) });
    const c = await openPlain(ob.port);
    const d = await openPlain(ob.port);
    await ping(c, 'one');
    await ping(d, 'two');
    expect(ob.rejudge()).toEqual({ checked: 2, closed: 0 });

    rev.ids.add(SERVER_ID);
    const t0 = Date.now();
    expect(ob.rejudge()).toEqual({ checked: 2, closed: 2 });
    expect(await closesWithin(c, 1000)).toBe(true);
    expect(await closesWithin(d, 1000)).toBe(true);
    expect((await c.closed) - t0).toBeLessThan(1000);

    const bytesBefore = echo.bytes;
    const e = await openPlain(ob.port);
    e.write('must not reach the target app');
    expect(await closesWithin(e, 3000)).toBe(true);
    expect(e.received()).toBe('');
    expect(echo.bytes).toBe(bytesBefore);
    expect(ob.stats).toMatchObject({ rejudged: 2, identityRefused: 1, connections: 2 });
    expect(refusals.map((r) => r.reason)).toEqual([
      're-judged: the target is refused (peer revoked); 2 open connection(s) closed',
      'the target is refused: peer revoked',
    ]);
  });
});

// ---------------------------------------------------------------------------------------------
// Cost
// ---------------------------------------------------------------------------------------------

describe('cost', () => {
  // 500 connections by default (each a real TLS handshake, slow on a loaded machine);
  // TESSERA_REJUDGE_CONNECTIONS=2000 for the figure in the README.
  const total = Math.max(40, Math.ceil(Number(process.env.TESSERA_REJUDGE_CONNECTIONS ?? 500) / 20) * 20);

  it(`re-judges ${total} open tcp connections of 20 callers with 20 authorizer calls, quickly`, async () => {
    const echo = await startEcho();
    const denied = new Set<string>();
    let calls = 0;
    const rev = revocations();
    const ib = await inbound({
      app: { host: '127.0.0.1', port: echo.port }, peerStatus: rev.peerStatus,
      authorize: (r) => (calls++, { allow: !denied.has(r.peer) }),
    });
    const callers = Array.from({ length: 20 }, (_, i) => ({ id: `spiffe://${TD}/load/c${i}`, svid: ca.issue([`spiffe://${TD}/load/c${i}`]) }));
    // Caller i holds connections i, i + 20, i + 40, ...
    const conns: Conn[] = [];
    for (let batch = 0; batch < total / 100; batch++) {
      conns.push(...await Promise.all(Array.from({ length: Math.min(100, total - conns.length) }, (_, k) => openTls(ib.port, callers[k % 20]!.svid))));
    }
    await ping(conns[0]!, 'warm');
    await ping(conns[total - 1]!, 'warm');
    expect(ib.stats.active).toBe(total);

    calls = 0;
    let t = performance.now();
    expect(ib.rejudge()).toEqual({ checked: total, closed: 0, peers: 20 });
    const keepMs = performance.now() - t;
    expect(calls).toBe(20);

    for (const c of callers.slice(0, 10)) denied.add(c.id);
    calls = 0;
    t = performance.now();
    expect(ib.rejudge()).toEqual({ checked: total, closed: total / 2, peers: 20 });
    const closeMs = performance.now() - t;
    expect(calls).toBe(20);
    console.log(`rejudge over ${total} open tcp connections (20 callers): ${keepMs.toFixed(2)} ms when all stay, ${closeMs.toFixed(2)} ms closing ${total / 2}`);
    // Generous bounds for a loaded machine; the figures are reported, these only catch a regression
    // to per-connection authorizer calls or quadratic work.
    expect(keepMs).toBeLessThan(250);
    expect(closeMs).toBeLessThan(1000);
    await Promise.all(conns.filter((_, k) => k % 20 < 10).map((c) => c.closed));
    expect(conns.filter((c, k) => k % 20 >= 10 && c.isClosed())).toHaveLength(0);
    for (const c of conns) c.destroy();
  }, 120_000);
});
