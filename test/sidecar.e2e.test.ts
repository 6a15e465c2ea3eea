/**
 * The sidecar proxies end to end over real TLS on 127.0.0.1, with certificates from a real test
 * CA (src/core/x509.ts): app ⇄ outbound ⇄ mTLS ⇄ inbound ⇄ app, in tcp and http modes, the
 * refusals with their stable outcomes, rotation, and hostile callers.
 */
import { createHash, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { EventEmitter, once } from 'node:events';
import { Agent as HttpAgent, createServer as createHttpServer, request as httpRequest, type IncomingHttpHeaders, type Server as HttpServer } from 'node:http';
import { connect as netConnect, createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parsePathAllowances, startInbound, type AuthorizeRequest, type DecisionRecord, type Inbound, type InboundOptions, type TlsMaterial, type TlsSource } from '../src/agent/inbound/inbound.js';
import { startOutbound, type Outbound } from '../src/agent/outbound/outbound.js';
import { FakeSource, TestCa } from './support/tls-ca.js';

// ---------------------------------------------------------------------------------------------
// Constants (the test CA and TlsSource fake: test/support/tls-ca.ts)
// ---------------------------------------------------------------------------------------------

const TD = 'sidecar.test';
const CLIENT_ID = `spiffe://${TD}/shop/orders`;
const SERVER_ID = `spiffe://${TD}/shop/payments`;
const HOUR = 3600_000;

let ca: TestCa;
let otherCa: TestCa;

function source(ca: TestCa, id: string, bundlePem = ca.pem): FakeSource {
  return ca.source(id, bundlePem);
}

// ---------------------------------------------------------------------------------------------
// The application behind the inbound proxy
// ---------------------------------------------------------------------------------------------

interface App {
  port: number;
  server: HttpServer;
  requests: number;
  connections: number;
  lastHeaders: IncomingHttpHeaders | undefined;
  lastRawHeaders: string[];
  lastRawTrailers: string[];
  lastUrl: string | undefined;
}

/** A tiny app: /hello (JSON about the request), /echo (streams the body back), /sha (digest of the body), /big (n bytes). */
async function startApp(): Promise<App> {
  const app: App = { port: 0, server: undefined as unknown as HttpServer, requests: 0, connections: 0, lastHeaders: undefined, lastRawHeaders: [], lastRawTrailers: [], lastUrl: undefined };
  const server = createHttpServer((req, res) => {
    app.requests++;
    app.lastHeaders = req.headers;
    app.lastRawHeaders = req.rawHeaders;
    app.lastUrl = req.url;
    app.lastRawTrailers = [];
    req.on('end', () => {
      app.lastRawTrailers = req.rawTrailers;
    });
    const url = new URL(req.url ?? '/', 'http://app');
    if (url.pathname === '/echo') {
      if (req.headers['content-length'] !== undefined) res.setHeader('content-length', req.headers['content-length']);
      req.pipe(res);
      return;
    }
    if (url.pathname === '/hang') {
      // Reads the request, never answers (a hung app); the server's close ends it.
      req.resume();
      return;
    }
    if (url.pathname === '/sha') {
      const h = createHash('sha256');
      let n = 0;
      req.on('data', (c: Buffer) => {
        h.update(c);
        n += c.length;
      });
      req.on('end', () => res.end(JSON.stringify({ sha: h.digest('hex'), length: n })));
      return;
    }
    if (url.pathname === '/big') {
      const n = Number(url.searchParams.get('n'));
      if (url.searchParams.get('cl') === '1') res.setHeader('content-length', n);
      let sent = 0;
      const block = Buffer.alloc(64 * 1024, 'x');
      const pump = (): void => {
        while (sent < n) {
          const chunk = block.subarray(0, Math.min(block.length, n - sent));
          sent += chunk.length;
          if (!res.write(chunk)) {
            res.once('drain', pump);
            return;
          }
        }
        res.end();
      };
      pump();
      return;
    }
    req.resume();
    req.on('end', () => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ method: req.method, url: req.url, id: req.headers['x-spiffe-id'] ?? null, remotePort: req.socket.remotePort }));
    });
  });
  server.on('connection', () => app.connections++);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  app.server = server;
  app.port = (server.address() as AddressInfo).port;
  return app;
}

async function startEchoTcpApp(): Promise<{ server: NetServer; port: number; connections: number }> {
  const state = { server: undefined as unknown as NetServer, port: 0, connections: 0 };
  // Echoes, and after the caller's half-close still answers "bye" before closing: proves the
  // half-close travels through both proxies and the other direction keeps working.
  state.server = createNetServer({ allowHalfOpen: true }, (s) => {
    state.connections++;
    s.on('data', (c) => s.write(c));
    s.on('end', () => s.end('bye'));
    s.on('error', () => {});
  });
  state.server.listen(0, '127.0.0.1');
  await once(state.server, 'listening');
  state.port = (state.server.address() as AddressInfo).port;
  return state;
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  localPort: number;
}

function request(port: number, agent: HttpAgent, opts: { method?: string; path: string; headers?: Record<string, string | string[]>; body?: Buffer | Buffer[] }): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, agent, method: opts.method ?? 'GET', path: opts.path, headers: opts.headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), localPort: req.socket?.localPort ?? 0 }));
    });
    req.on('error', reject);
    req.setTimeout(20_000, () => req.destroy(new Error('request timed out')));
    if (Array.isArray(opts.body)) {
      // Written in pieces without a Content-Length: chunked transfer coding.
      const parts = opts.body;
      let i = 0;
      const next = (): void => {
        while (i < parts.length) {
          if (!req.write(parts[i++]!)) {
            req.once('drain', next);
            return;
          }
        }
        req.end();
      };
      next();
    } else {
      req.end(opts.body);
    }
  });
}

interface RawResult {
  secure: boolean;
  data: Buffer;
  error: string | undefined;
  peerSerial: string | undefined;
}

/** A TLS connection straight to the inbound proxy, sending `payload` (in timed pieces if asked), until it closes. */
function rawTls(port: number, creds: { certPem?: string; key?: KeyObject; ca: string }, payload: Array<string | Buffer> | string | Buffer | undefined, pieceDelayMs = 0, timeoutMs = 15_000): Promise<RawResult> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const result: RawResult = { secure: false, data: Buffer.alloc(0), error: undefined, peerSerial: undefined };
    const socket: TLSSocket = tlsConnect({
      host: '127.0.0.1', port, ca: creds.ca, cert: creds.certPem, key: creds.key?.export({ format: 'pem', type: 'pkcs8' }) as string | undefined,
      checkServerIdentity: () => undefined,
    });
    const timer = setTimeout(() => socket.destroy(new Error('test timeout')), timeoutMs);
    socket.on('secureConnect', () => {
      result.secure = true;
      result.peerSerial = socket.getPeerX509Certificate()?.serialNumber;
      const pieces = payload === undefined ? [] : Array.isArray(payload) ? payload : [payload];
      let i = 0;
      const send = (): void => {
        if (i >= pieces.length || socket.destroyed) return;
        socket.write(pieces[i++]!);
        if (pieceDelayMs > 0) setTimeout(send, pieceDelayMs);
        else send();
      };
      send();
    });
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', (err: Error & { code?: string }) => {
      result.error ??= err.code ?? err.message;
    });
    socket.on('close', () => {
      clearTimeout(timer);
      result.data = Buffer.concat(chunks);
      resolve(result);
    });
  });
}

/** Sends bytes to a plain TCP port, half-closes, and collects everything until close. */
function tcpRoundTrip(port: number, payload: Buffer): Promise<{ data: Buffer; error: string | undefined }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let error: string | undefined;
    const s: Socket = netConnect({ host: '127.0.0.1', port }, () => s.end(payload));
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('error', (e: Error & { code?: string }) => {
      error = e.code ?? e.message;
    });
    s.setTimeout(15_000, () => s.destroy(new Error('timeout')));
    s.on('close', () => resolve({ data: Buffer.concat(chunks), error }));
  });
}

function statusOf(raw: Buffer): number {
  const m = /^HTTP\/1\.1 (\d{3}) /.exec(raw.toString('latin1'));
  return m ? Number(m[1]) : 0;
}

function errorCodeOf(raw: Buffer): string | undefined {
  const s = raw.toString('latin1');
  const body = s.slice(s.indexOf('\r\n\r\n') + 4);
  try {
    return (JSON.parse(body) as { error: { code: string } }).error.code;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

const cleanups: Array<() => Promise<unknown> | void> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

const allowAll = (): { allow: boolean } => ({ allow: true });

async function inbound(opts: Partial<InboundOptions> & { tls: TlsSource; app: { host: string; port: number } }): Promise<Inbound> {
  const ib = await startInbound({ listen: { host: '127.0.0.1', port: 0 }, mode: 'http', authorize: allowAll, ...opts });
  cleanups.push(() => ib.close());
  return ib;
}

async function outbound(port: number, tls: TlsSource, expectedId = SERVER_ID): Promise<Outbound> {
  const ob = await startOutbound({ listen: { host: '127.0.0.1', port: 0 }, upstream: { host: '127.0.0.1', port, expectedId }, tls });
  cleanups.push(() => ob.close());
  return ob;
}

function agent(): HttpAgent {
  const a = new HttpAgent({ keepAlive: true, maxSockets: 1 });
  cleanups.push(() => a.destroy());
  return a;
}

let app: App;

beforeAll(async () => {
  ca = new TestCa(TD, 'sidecar test CA');
  otherCa = new TestCa(TD, 'unrelated CA with the same trust domain');
  app = await startApp();
});

afterAll(async () => {
  app.server.closeAllConnections();
  await new Promise((r) => app.server.close(r));
});

function sha(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

// ---------------------------------------------------------------------------------------------
// Happy paths
// ---------------------------------------------------------------------------------------------

describe('tcp mode', () => {
  it('relays bytes both ways through outbound → mTLS → inbound, with half-close, and decides once per connection', async () => {
    const echo = await startEchoTcpApp();
    cleanups.push(() => new Promise((r) => echo.server.close(r)));
    const decisions: DecisionRecord[] = [];
    const ib = await inbound({ tls: source(ca, SERVER_ID), app: { host: '127.0.0.1', port: echo.port }, mode: 'tcp', onDecision: (d) => decisions.push(d) });
    const ob = await outbound(ib.port, source(ca, CLIENT_ID));
    const payload = randomBytes(3 * 1024 * 1024);
    const { data, error } = await tcpRoundTrip(ob.port, payload);
    expect(error).toBeUndefined();
    expect(data.length).toBe(payload.length + 3);
    expect(sha(data.subarray(0, payload.length))).toBe(sha(payload));
    expect(data.subarray(payload.length).toString()).toBe('bye');
    expect(decisions).toEqual([expect.objectContaining({ peer: CLIENT_ID, action: 'tcp:connect', allow: true })]);
    expect(ib.stats).toMatchObject({ connections: 1, allowed: 1, denied: 0 });
    expect(ob.stats).toMatchObject({ connections: 1, identityRefused: 0 });
  });

  it('carries kept-alive HTTP unchanged (no id header is added in tcp mode)', async () => {
    const ib = await inbound({ tls: source(ca, SERVER_ID), app: { host: '127.0.0.1', port: app.port }, mode: 'tcp' });
    const ob = await outbound(ib.port, source(ca, CLIENT_ID));
    const a = agent();
    const ports = new Set<number>();
    for (let i = 0; i < 5; i++) {
      const r = await request(ob.port, a, { path: `/hello?i=${i}` });
      expect(r.status).toBe(200);
      expect(JSON.parse(r.body.toString())).toMatchObject({ url: `/hello?i=${i}`, id: null });
      ports.add(r.localPort);
    }
    expect(ports.size).toBe(1);
    expect(ib.stats.connections).toBe(1);
  });

  it('closes a denied connection without reaching the app, after logging the decision', async () => {
    const echo = await startEchoTcpApp();
    cleanups.push(() => new Promise((r) => echo.server.close(r)));
    const decisions: DecisionRecord[] = [];
    const ib = await inbound({
      tls: source(ca, SERVER_ID), app: { host: '127.0.0.1', port: echo.port }, mode: 'tcp',
      authorize: () => ({ allow: false, reasons: ['no policy permits it'] }), onDecision: (d) => decisions.push(d),
    });
    const ob = await outbound(ib.port, source(ca, CLIENT_ID));
    const { data } = await tcpRoundTrip(ob.port, Buffer.from('hello'));
    expect(data.length).toBe(0);
    expect(echo.connections).toBe(0);
    expect(decisions).toEqual([expect.objectContaining({ peer: CLIENT_ID, action: 'tcp:connect', allow: false, reasons: ['no policy permits it'] })]);
    expect(ib.stats.denied).toBe(1);
  });
});

describe('http mode', () => {
  it('serves several requests per kept-alive connection and sets the verified caller ID', async () => {
    const seen: AuthorizeRequest[] = [];
    const ib = await inbound({ tls: source(ca, SERVER_ID), app: { host: '127.0.0.1', port: app.port }, authorize: (r) => (seen.push(r), { allow: true }) });
    const ob = await outbound(ib.port, source(ca, CLIENT_ID));
    const a = agent();
    const appPorts = new Set<number>();
    for (let i = 0; i < 10; i++) {
      const r = await request(ob.port, a, { method: i % 2 ? 'DELETE' : 'GET', path: `/hello/${i}?q=${i}` });
      expect(r.status).toBe(200);
      const body = JSON.parse(r.body.toString()) as { id: string; url: string; remotePort: number };
      expect(body).toMatchObject({ id: CLIENT_ID, url: `/hello/${i}?q=${i}` });
      appPorts.add(body.remotePort);
      // Hop-by-hop fields of the app's hop are not passed back.
      expect(r.headers['keep-alive']).toBeUndefined();
    }
    // The caller's certificate serial goes with every request, for the revocation list.
    expect(seen[3]).toEqual({ peer: CLIENT_ID, serial: expect.stringMatching(/^[0-9A-F]{32}$/), action: 'http:request', method: 'DELETE', path: '/hello/3' });
    expect(ib.stats).toMatchObject({ connections: 1, requests: 10, allowed: 10 });
    expect(appPorts.size).toBe(1); // one pooled connection to the app
  });

  it('overwrites the id header a caller sends, in any case and any number, and drops hop-by-hop fields', async () => {
    const ib = await inbound({ tls: source(ca, SERVER_ID), app: { host: '127.0.0.1', port: app.port } });
    const ob = await outbound(ib.port, source(ca, CLIENT_ID));
    const r = await request(ob.port, agent(), {
      path: '/hello',
      headers: { 'X-SPIFFE-ID': ['spiffe://sidecar.test/admin', 'spiffe://evil/x'], 'x-Spiffe-Id': 'spiffe://sidecar.test/root', Connection: 'keep-alive, X-Private', 'X-Private': 'secret', 'Proxy-Authorization': 'x', 'X-Kept': 'yes' },
    });
    expect(JSON.parse(r.body.toString())).toMatchObject({ id: CLIENT_ID });
    const names = app.lastRawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());
    expect(names.filter((n) => n === 'x-spiffe-id')).toHaveLength(1);
    expect(names).not.toContain('x-private');
    expect(names).not.toContain('proxy-authorization');
    expect(app.lastHeaders?.['x-kept']).toBe('yes');
  });

  it('uses a custom id header', async () => {
    const ib = await inbound({ tls: source(ca, SERVER_ID), app: { host: '127.0.0.1', port: app.port }, idHeader: 'X-Caller' });
    const ob = await outbound(ib.port, source(ca, CLIENT_ID));
    await request(ob.port, agent(), { path: '/hello', headers: { 'x-caller': 'forged' } });
    expect(app.lastHeaders?.['x-caller']).toBe(CLIENT_ID);
  });

  it('streams 5 MB bodies both ways, chunked and with Content-Length, on one connection', async () => {
    const ib = await inbound({ tls: source(ca, SERVER_ID), app: { host: '127.0.0.1', port: app.port } });
    const ob = await outbound(ib.port, source(ca, CLIENT_ID));
    const a = agent();
    const body = randomBytes(5 * 1024 * 1024);
    const pieces = Array.from({ length: 80 }, (_, i) => body.subarray(i * 65536, (i + 1) * 65536));

    const chunked = await request(ob.port, a, { method: 'POST', path: '/echo', body: pieces });
    expect(chunked.status).toBe(200);
    expect(chunked.headers['transfer-encoding']).toBe('chunked');
    expect(sha(chunked.body)).toBe(sha(body));

    const sized = await request(ob.port, a, { method: 'PUT', path: '/echo', body, headers: { 'content-length': String(body.length) } });
    expect(sized.headers['content-length']).toBe(String(body.length));
    expect(sha(sized.body)).toBe(sha(body));

    const digest = await request(ob.port, a, { method: 'POST', path: '/sha', body: pieces });
    expect(JSON.parse(digest.body.toString())).toEqual({ sha: sha(body), length: body.length });

    for (const cl of ['0', '1']) {
      const big = await request(ob.port, a, { path: `/big?n=${5 * 1024 * 1024}&cl=${cl}` });
      expect(big.body.length).toBe(5 * 1024 * 1024);
      expect(big.headers['transfer-encoding']).toBe(cl === '1' ? undefined : 'chunked');
    }
    expect(ib.stats.connections).toBe(1);
    expect(ib.stats.requests).toBe(5);
  });

  it('handles HEAD, 204-like answers and Expect: 100-continue', async () => {
    const ib = await inbound({ tls: source(ca, SERVER_ID), app: { host: '127.0.0.1', port: app.port } });
    const ob = await outbound(ib.port, source(ca, CLIENT_ID));
    const a = agent();
    const head = await request(ob.port, a, { method: 'HEAD', path: `/big?n=1000&cl=1` });
    expect(head.status).toBe(200);
    expect(head.headers['content-length']).toBe('1000');
    expect(head.body.length).toBe(0);
    // The interim 100 travels back, then the body, then the final answer; the connection stays.
    const body = randomBytes(200_000);
    const r = await new Promise<Reply>((resolve, reject) => {
      const req = httpRequest({ host: '127.0.0.1', port: ob.port, agent: a, method: 'POST', path: '/sha', headers: { expect: '100-continue', 'content-length': String(body.length) } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), localPort: req.socket?.localPort ?? 0 }));
      });
      req.on('error', reject);
      req.on('continue', () => req.end(body));
    });
    expect(JSON.parse(r.body.toString())).toEqual({ sha: sha(body), length: body.length });
    expect(r.localPort).toBe(head.localPort);
    expect(ib.stats.connections).toBe(1);
  });

  it('answers pipelined requests in order', async () => {
    const ib = await inbound({ tls: source(ca, SERVER_ID), app: { host: '127.0.0.1', port: app.port } });
    const client = source(ca, CLIENT_ID).current();
    const two = 'GET /hello/1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /sha HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /hello/3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n';
    const r = await rawTls(ib.port, { ...client, ca: ca.pem }, two);
    const text = r.data.toString('latin1');
    const order = [...text.matchAll(/"url":"([^"]+)"|"sha":"([0-9a-f]+)"/g)].map((m) => m[1] ?? 'sha');
    expect(order).toEqual(['/hello/1', 'sha', '/hello/3']);
    expect(text).toContain(sha(Buffer.from('abc')));
  });

  it('denies with 403 and the stable code, logs the decision, and keeps the connection for bodiless requests', async () => {
    const decisions: DecisionRecord[] = [];
    const before = app.requests;
    const ib = await inbound({
      tls: source(ca, SERVER_ID), app: { host: '127.0.0.1', port: app.port },
      authorize: (r) => (r.path === '/hello/admin' ? { allow: false, reasons: ['forbid rule 7'] } : { allow: true }),
      onDecision: (d) => decisions.push(d),
    });
    const ob = await outbound(ib.port, source(ca, CLIENT_ID));
    const a = agent();
    const denied = await request(ob.port, a, { path: '/hello/admin?x=1' });
    expect(denied.status).toBe(403);
    expect(JSON.parse(denied.body.toString())).toMatchObject({ error: { code: 'TESSERA_PROXY_DENIED' } });
    const ok = await request(ob.port, a, { path: '/hello/ok' });
    expect(ok.status).toBe(200);
    expect(ok.localPort).toBe(denied.localPort);
    const deniedWithBody = await request(ob.port, a, { method: 'POST', path: '/hello/admin', body: Buffer.alloc(1000) });
    expect(deniedWithBody.status).toBe(403);
    expect(deniedWithBody.headers.connection).toBe('close');
    expect(app.requests - before).toBe(1);
    expect(decisions.filter((d) => !d.allow)).toEqual([
      expect.objectContaining({ peer: CLIENT_ID, action: 'http:request', method: 'GET', path: '/hello/admin', allow: false, reasons: ['forbid rule 7'] }),
      expect.objectContaining({ method: 'POST', allow: false }),
    ]);
  });

  it('denies when the authorizer throws (fail closed)', async () => {
    const ib = await inbound({ tls: source(ca, SERVER_ID), app: { host: '127.0.0.1', port: app.port }, authorize: () => { throw new Error('engine down'); } });
    const ob = await outbound(ib.port, source(ca, CLIENT_ID));
    expect((await request(ob.port, agent(), { path: '/hello' })).status).toBe(403);
  });

  it('retries a bodiless request once on a new connection when the app dropped a pooled one', async () => {
    // An app that answers the first request of each connection and drops the connection,
    // unanswered, on the second: what a keep-alive timeout race looks like from the proxy.
    let conns = 0;
    const flaky = createNetServer((s) => {
      conns++;
      let seen = 0;
      let buf = '';
      s.on('data', (d: Buffer) => {
        buf += d.toString('latin1');
        while (buf.includes('\r\n\r\n')) {
          buf = buf.slice(buf.indexOf('\r\n\r\n') + 4);
          if (++seen === 1) s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
          else s.destroy();
        }
      });
      s.on('error', () => {});
    });
    flaky.listen(0, '127.0.0.1');
    await once(flaky, 'listening');
    cleanups.push(() => new Promise((r) => flaky.close(r)));
    const ib = await inbound({ tls: source(ca, SERVER_ID), app: { host: '127.0.0.1', port: (flaky.address() as AddressInfo).port } });
    const ob = await outbound(ib.port, source(ca, CLIENT_ID));
    const a = agent();
    for (let i = 0; i < 3; i++) {
      const r = await request(ob.port, a, { path: `/r${i}` });
      expect(r.status).toBe(200);
      expect(r.body.toString()).toBe('ok');
    }
    expect(conns).toBe(3);
    expect(ib.stats.upstreamErrors).toBe(0);
  });

  it('answers 504 when the app does not answer in time, drops that app connection, and serves the next request', async () => {
    const ib = await inbound({ tls: source(ca, SERVER_ID), app: { host: '127.0.0.1', port: app.port }, limits: { responseTimeoutMs: 800 } });
    const ob = await outbound(ib.port, source(ca, CLIENT_ID));
    const t0 = Date.now();
    const r = await request(ob.port, agent(), { path: '/hang' });
    expect(r.status).toBe(504);
    expect(JSON.parse(r.body.toString())).toMatchObject({ error: { code: 'TESSERA_PROXY_UPSTREAM_TIMEOUT' } });
    // Sweep precision (500 ms): between the limit and the limit + two sweeps.
    expect(Date.now() - t0).toBeGreaterThanOrEqual(800);
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(ib.stats.timeouts).toBe(1);
    const ok = await request(ob.port, agent(), { path: '/after-hang' });
    expect(ok.status).toBe(200);
  });

  it('answers 502 when the app is down', async () => {
    const ib = await inbound({ tls: source(ca, SERVER_ID), app: { host: '127.0.0.1', port: 1 } });
    const ob = await outbound(ib.port, source(ca, CLIENT_ID));
    const r = await request(ob.port, agent(), { path: '/hello' });
    expect(r.status).toBe(502);
    expect(JSON.parse(r.body.toString())).toMatchObject({ error: { code: 'TESSERA_PROXY_UPSTREAM' } });
    expect(ib.stats.upstreamErrors).toBeGreaterThan(0);
  });
});

// ---------------------------------------------------------------------------------------------
// Refusals
// ---------------------------------------------------------------------------------------------

describe('refusals', () => {
  const request1 = 'GET /hello HTTP/1.1\r\nHost: a\r\n\r\n';

  async function refusedByInbound(creds: { certPem?: string; key?: KeyObject }, counter: 'handshakeFailures' | 'identityRefused'): Promise<void> {
    const before = app.requests;
    const ib = await inbound({ tls: source(ca, SERVER_ID), app: { host: '127.0.0.1', port: app.port } });
    const r = await rawTls(ib.port, { ...creds, ca: ca.pem }, request1);
    expect(r.data.length).toBe(0);
    expect(app.requests).toBe(before);
    // The counters are updated as the server sees the failure, which may be just after the client does.
    for (let i = 0; i < 50 && ib.stats[counter] === 0; i++) await new Promise((res) => setTimeout(res, 20));
    expect(ib.stats[counter]).toBe(1);
    expect(ib.stats.connections).toBe(0);
  }

  it('refuses a caller without a client certificate', async () => {
    await refusedByInbound({}, 'handshakeFailures');
  });

  it('refuses a client certificate from another CA', async () => {
    await refusedByInbound(otherCa.issue([CLIENT_ID]), 'handshakeFailures');
  });

  it('refuses an expired client SVID', async () => {
    const now = Date.now();
    await refusedByInbound(ca.issue([CLIENT_ID], { notBefore: now - 2 * HOUR, notAfter: now - HOUR }), 'handshakeFailures');
  });

  it('refuses a client SVID that is not yet valid', async () => {
    const now = Date.now();
    await refusedByInbound(ca.issue([CLIENT_ID], { notBefore: now + HOUR, notAfter: now + 2 * HOUR }), 'handshakeFailures');
  });

  it('refuses a trusted certificate with two URI SANs, or with an ID of another trust domain', async () => {
    await refusedByInbound(ca.issue([CLIENT_ID, `spiffe://${TD}/other`]), 'identityRefused');
    await refusedByInbound(ca.issue(['spiffe://elsewhere.test/shop/orders']), 'identityRefused');
  });

  it('outbound refuses a target whose SPIFFE ID is not the expected one, before sending anything', async () => {
    const before = app.requests;
    const ib = await inbound({ tls: source(ca, `spiffe://${TD}/impostor`), app: { host: '127.0.0.1', port: app.port } });
    const ob = await outbound(ib.port, source(ca, CLIENT_ID));
    const { data } = await tcpRoundTrip(ob.port, Buffer.from(request1));
    expect(data.length).toBe(0);
    expect(ob.stats).toMatchObject({ identityRefused: 1, connections: 0 });
    expect(app.requests).toBe(before);
    expect(ib.stats.requests).toBe(0);
  });

  it('outbound refuses a target whose certificate comes from another CA', async () => {
    const ib = await inbound({ tls: source(otherCa, SERVER_ID, `${otherCa.pem}${ca.pem}`), app: { host: '127.0.0.1', port: app.port } });
    const ob = await outbound(ib.port, source(ca, CLIENT_ID));
    const { data } = await tcpRoundTrip(ob.port, Buffer.from(request1));
    expect(data.length).toBe(0);
    expect(ob.stats).toMatchObject({ handshakeFailures: 1, connections: 0 });
  });
});

// ---------------------------------------------------------------------------------------------
// Rotation
// ---------------------------------------------------------------------------------------------

describe('rotation', () => {
  it('new connections use new SVIDs and bundles while established ones keep working', async () => {
    const serverSrc = source(ca, SERVER_ID);
    const clientSrc = source(ca, CLIENT_ID);
    const ib = await inbound({ tls: serverSrc, app: { host: '127.0.0.1', port: app.port } });
    const ob = await outbound(ib.port, clientSrc);
    const kept = agent();
    const first = await request(ob.port, kept, { path: '/hello/1' });
    expect(first.status).toBe(200);

    // A new CA appears in both bundles, then both sides get SVIDs from it.
    const ca2 = new TestCa(TD, 'sidecar test CA 2');
    const both = `${ca.pem}${ca2.pem}`;
    serverSrc.rotate({ bundlePem: both }, 'bundle');
    clientSrc.rotate({ bundlePem: both }, 'bundle');
    const newServer = ca2.issue([SERVER_ID]);
    serverSrc.rotate(newServer);
    clientSrc.rotate(ca2.issue([CLIENT_ID]));

    // A direct connection sees the new server certificate.
    const direct = await rawTls(ib.port, { ...clientSrc.current(), ca: both }, 'GET /hello HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    expect(statusOf(direct.data)).toBe(200);
    const { X509Certificate } = await import('node:crypto');
    expect(direct.peerSerial).toBe(new X509Certificate(newServer.certPem).serialNumber);

    // The old CA leaves the inbound's bundle: only a client using its new SVID can connect.
    serverSrc.rotate({ bundlePem: ca2.pem }, 'bundle');
    const fresh = await request(ob.port, agent(), { path: '/hello/2' });
    expect(fresh.status).toBe(200);
    expect(JSON.parse(fresh.body.toString())).toMatchObject({ id: CLIENT_ID });
    const stale = await rawTls(ib.port, { ...ca.issue([CLIENT_ID]), ca: both }, 'GET / HTTP/1.1\r\nHost: a\r\n\r\n');
    expect(stale.data.length).toBe(0);

    // The connection made before all this still works.
    const again = await request(ob.port, kept, { path: '/hello/3' });
    expect(again.status).toBe(200);
    expect(again.localPort).toBe(first.localPort);
    expect(ib.stats.connections).toBe(3);
  });

  it('http mode closes an idle kept-alive connection before the caller\'s certificate expires, so the next request uses the renewed SVID', async () => {
    const now = Date.now();
    const clientSrc = source(ca, CLIENT_ID);
    clientSrc.rotate(ca.issue([CLIENT_ID], { notAfter: now + 4500 }));
    const ib = await inbound({ tls: source(ca, SERVER_ID), app: { host: '127.0.0.1', port: app.port } });
    const ob = await outbound(ib.port, clientSrc);
    const kept = agent();
    const first = await request(ob.port, kept, { path: '/expiring/1' });
    expect(first.status).toBe(200);
    // The agent renews (at half life in real life); the kept-alive connection still carries the old SVID.
    clientSrc.rotate(ca.issue([CLIENT_ID]));
    // Past the old certificate's expiry, the same keep-alive pool gets a 200 on a new connection,
    // never a refusal on the old one.
    await new Promise((res) => setTimeout(res, Math.max(0, now + 5000 - Date.now())));
    const after = await request(ob.port, kept, { path: '/expiring/2' });
    expect(after.status).toBe(200);
    expect(after.localPort).not.toBe(first.localPort);
    expect(ib.stats.identityRefused).toBe(0);
    expect(ib.stats.connections).toBe(2);
  }, 15_000);

  it('http mode answers a caller whose certificate ends within the margin with connection: close (its client does not reuse the connection)', async () => {
    const ib = await inbound({ tls: source(ca, SERVER_ID), app: { host: '127.0.0.1', port: app.port } });
    const soon = { ...ca.issue([CLIENT_ID], { notAfter: Date.now() + 2500 }), ca: ca.pem };
    const res = await rawTls(ib.port, soon, 'GET /hello HTTP/1.1\r\nHost: a\r\n\r\n');
    expect(statusOf(res.data)).toBe(200);
    expect(res.data.toString('latin1').split('\r\n\r\n')[0]!.split('\r\n')).toContain('connection: close');
    const later = { ...ca.issue([CLIENT_ID], { notAfter: Date.now() + 60_000 }), ca: ca.pem };
    const kept = await rawTls(ib.port, later, 'GET /hello HTTP/1.1\r\nHost: a\r\n\r\nGET /hello HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    // Two answers on one connection: the first did not close it.
    expect(kept.data.toString('latin1').match(/HTTP\/1\.1 200/g)?.length).toBe(2);
  });
});

// ---------------------------------------------------------------------------------------------
// Hostile callers
// ---------------------------------------------------------------------------------------------

describe('malformed, slow and oversized requests', () => {
  it('answers 400 to smuggling shapes and garbage, without the app seeing them', async () => {
    const before = app.requests;
    const ib = await inbound({ tls: source(ca, SERVER_ID), app: { host: '127.0.0.1', port: app.port } });
    const creds = { ...source(ca, CLIENT_ID).current(), ca: ca.pem };
    for (const bad of [
      'POST /sha HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
      'POST /sha HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde',
      'POST /sha HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n',
      'GET / HTTP/1.1\nHost: a\n\n',
      '\x16\x03\x01garbage\r\n\r\n',
    ]) {
      const r = await rawTls(ib.port, creds, bad);
      expect(statusOf(r.data)).toBe(400);
      expect(errorCodeOf(r.data)).toBe('TESSERA_BAD_REQUEST');
    }
    expect(app.requests).toBe(before);
    expect(ib.stats.badRequests).toBe(5);
  });

  it('refuses a malformed chunked body after the head was forwarded, and closes', async () => {
    const ib = await inbound({ tls: source(ca, SERVER_ID), app: { host: '127.0.0.1', port: app.port } });
    const creds = { ...source(ca, CLIENT_ID).current(), ca: ca.pem };
    const r = await rawTls(ib.port, creds, 'POST /sha HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nZZ\r\n');
    expect(statusOf(r.data)).toBe(400);
  });

  it('answers 431 to an oversized head and 408 to a slow one', async () => {
    const ib = await inbound({ tls: source(ca, SERVER_ID), app: { host: '127.0.0.1', port: app.port }, limits: { headTimeoutMs: 1000 } });
    const creds = { ...source(ca, CLIENT_ID).current(), ca: ca.pem };
    const big = await rawTls(ib.port, creds, `GET / HTTP/1.1\r\nHost: a\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    expect(statusOf(big.data)).toBe(431);
    expect(errorCodeOf(big.data)).toBe('TESSERA_HEADERS_TOO_LARGE');
    const many = await rawTls(ib.port, creds, `GET / HTTP/1.1\r\nHost: a\r\n${'X: 1\r\n'.repeat(150)}\r\n`);
    expect(statusOf(many.data)).toBe(431);

    // Slowloris: a byte every 100 ms keeps the connection busy but never completes the head.
    const started = Date.now();
    const slow = await rawTls(ib.port, creds, [...'GET / HTTP/1.1\r\nHost: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'], 100);
    expect(statusOf(slow.data)).toBe(408);
    expect(errorCodeOf(slow.data)).toBe('TESSERA_REQUEST_TIMEOUT');
    expect(Date.now() - started).toBeGreaterThanOrEqual(1000);
    expect(Date.now() - started).toBeLessThan(4000);
    expect(ib.stats.timeouts).toBe(1);
  });

  it('stays up with bounded memory after 200 bad requests', async () => {
    const ib = await inbound({ tls: source(ca, SERVER_ID), app: { host: '127.0.0.1', port: app.port }, limits: { headTimeoutMs: 200 } });
    const creds = { ...source(ca, CLIENT_ID).current(), ca: ca.pem };
    const bad = [
      `GET / HTTP/1.1\r\nHost: a\r\nX: ${'b'.repeat(64 * 1024)}\r\n\r\n`,
      'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n',
      Buffer.from(randomBytes(4096)),
      `POST /sha HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n${'f'.repeat(40)}\r\n`,
      'GET / HTTP/1.1\r\nHost: a\r\n',
    ];
    const rss0 = process.memoryUsage().rss;
    let refused = 0;
    for (let i = 0; i < 200; i += 25) {
      const batch = await Promise.all(Array.from({ length: 25 }, (_, k) => rawTls(ib.port, creds, bad[(i + k) % bad.length]!)));
      refused += batch.filter((r) => [400, 408, 431].includes(statusOf(r.data))).length;
    }
    expect(refused).toBe(200);
    const ok = await request((await outbound(ib.port, source(ca, CLIENT_ID))).port, agent(), { path: '/hello' });
    expect(ok.status).toBe(200);
    const rss1 = process.memoryUsage().rss;
    expect(rss1 - rss0).toBeLessThan(96 * 1024 * 1024);
    expect(rss1).toBeLessThan(1024 * 1024 * 1024);
    expect(ib.stats.internalErrors).toBe(0);
    expect(ib.stats.active).toBeLessThanOrEqual(1);
  });
});

describe('paths and identity headers', () => {
  const REFUSED_TARGETS = ['/orders/..;/admin', '/a;b', '/a%3Bb', '/a%00b', '/a?b=%00', '/%C0%AE%C0%AE/admin', '/%ED%A0%80', '/a//b', '//admin', '/a//', '/%2e%2e/admin'];

  it('refuses ambiguous paths with 400 TESSERA_PROXY_PATH_REFUSED before the authorizer, and the app never sees them', async () => {
    const before = app.requests;
    const seen: AuthorizeRequest[] = [];
    const ib = await inbound({ tls: source(ca, SERVER_ID), app: { host: '127.0.0.1', port: app.port }, authorize: (r) => (seen.push(r), { allow: true }) });
    const creds = { ...source(ca, CLIENT_ID).current(), ca: ca.pem };
    for (const target of REFUSED_TARGETS) {
      const r = await rawTls(ib.port, creds, `GET ${target} HTTP/1.1\r\nHost: a\r\n\r\n`);
      expect(statusOf(r.data), target).toBe(400);
      expect(errorCodeOf(r.data), target).toBe('TESSERA_PROXY_PATH_REFUSED');
    }
    expect(seen).toEqual([]);
    expect(app.requests).toBe(before);
    expect(ib.stats.badRequests).toBe(REFUSED_TARGETS.length);
    // A clean path on the same proxy goes through, as received.
    const ok = await rawTls(ib.port, creds, 'GET /hello/%C3%A9t%C3%A9?x=%C0%AE;y HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    expect(statusOf(ok.data)).toBe(200);
    expect(app.lastUrl).toBe('/hello/%C3%A9t%C3%A9?x=%C0%AE;y');
    expect(seen).toEqual([expect.objectContaining({ path: '/hello/%C3%A9t%C3%A9' })]);
  });

  it('with allowPath, forwards `;` and `//` paths exactly as authorized, and still refuses `..;` and control bytes', async () => {
    const seen: AuthorizeRequest[] = [];
    const ib = await inbound({
      tls: source(ca, SERVER_ID), app: { host: '127.0.0.1', port: app.port }, allowPath: { semicolon: true, emptySegments: true },
      authorize: (r) => (seen.push(r), { allow: true }),
    });
    const creds = { ...source(ca, CLIENT_ID).current(), ca: ca.pem };
    for (const target of ['/a;v=1/b', '/a//b']) {
      const r = await rawTls(ib.port, creds, `GET ${target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`);
      expect(statusOf(r.data)).toBe(200);
      expect(app.lastUrl).toBe(target);
      expect(seen.at(-1)?.path).toBe(target);
    }
    for (const target of ['/orders/..;/admin', '/a%00;b', '/%C0%AE;x']) {
      const r = await rawTls(ib.port, creds, `GET ${target} HTTP/1.1\r\nHost: a\r\n\r\n`);
      expect(errorCodeOf(r.data), target).toBe('TESSERA_PROXY_PATH_REFUSED');
    }
    await expect(inbound({ tls: source(ca, SERVER_ID), app: { host: '127.0.0.1', port: app.port }, allowPath: { dots: true } as never })).rejects.toMatchObject({ code: 'TESSERA_CONFIG_INVALID' });
    await expect(inbound({ tls: source(ca, SERVER_ID), app: { host: '127.0.0.1', port: app.port }, allowPath: { semicolon: 'yes' } as never })).rejects.toMatchObject({ code: 'TESSERA_CONFIG_INVALID' });
    await expect(inbound({ tls: source(ca, SERVER_ID), app: { host: '127.0.0.1', port: app.port }, mode: 'tcp', allowPath: { semicolon: true } })).rejects.toMatchObject({ code: 'TESSERA_CONFIG_INVALID' });
    // The --inbound-allow flag's list.
    expect(parsePathAllowances('semicolon')).toEqual({ semicolon: true, emptySegments: false });
    expect(parsePathAllowances('empty-segments, semicolon')).toEqual({ semicolon: true, emptySegments: true });
    for (const bad of ['', 'dots', 'semicolon,', 'toString', 'emptySegments']) expect(() => parsePathAllowances(bad)).toThrow(expect.objectContaining({ code: 'TESSERA_CONFIG_INVALID' }));
  });

  /** The app's view of the id header: every field whose name folds to x-spiffe-id as CGI/WSGI would (lowercase, `_` as `-`). */
  function idFields(raw: string[]): string[] {
    const out: string[] = [];
    for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase().replaceAll('_', '-') === 'x-spiffe-id') out.push(raw[i + 1]!);
    return out;
  }

  it('strips x_spiffe_id and other `_` spellings of the id header: the app sees exactly one, the real one', async () => {
    const ib = await inbound({ tls: source(ca, SERVER_ID), app: { host: '127.0.0.1', port: app.port } });
    const creds = { ...source(ca, CLIENT_ID).current(), ca: ca.pem };
    const r = await rawTls(ib.port, creds, 'GET /hello HTTP/1.1\r\nHost: a\r\nx_spiffe_id: spiffe://sidecar.test/admin\r\nX_SPIFFE-ID: spoofed\r\nX-Kept: yes\r\nConnection: close\r\n\r\n');
    expect(statusOf(r.data)).toBe(200);
    expect(idFields(app.lastRawHeaders)).toEqual([CLIENT_ID]);
    expect(app.lastHeaders?.['x-kept']).toBe('yes');
  });

  it('strips id-header trailers of a chunked request, also when the trailer section arrives in pieces, and keeps the others', async () => {
    const ib = await inbound({ tls: source(ca, SERVER_ID), app: { host: '127.0.0.1', port: app.port } });
    const creds = { ...source(ca, CLIENT_ID).current(), ca: ca.pem };
    const head = 'POST /sha HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: x-spiffe-id\r\nConnection: close\r\n\r\n';
    const body = '5\r\nhello\r\n0\r\nx-spiffe-id: spiffe://sidecar.test/admin\r\nX-Other: kept\r\nX_Spiffe_Id: spoofed\r\n\r\n';
    const whole = `${head}${body}`;
    const cut = whole.indexOf('x-spiffe-id: spiffe');
    for (const payload of [whole, [whole.slice(0, cut + 4), whole.slice(cut + 4, cut + 20), whole.slice(cut + 20, whole.length - 10), whole.slice(whole.length - 10)]]) {
      const r = await rawTls(ib.port, creds, payload, 30);
      expect(statusOf(r.data)).toBe(200);
      const s = r.data.toString('latin1');
      expect(JSON.parse(s.slice(s.indexOf('\r\n\r\n') + 4))).toEqual({ sha: sha(Buffer.from('hello')), length: 5 });
      expect(app.lastRawTrailers).toEqual(['X-Other', 'kept']);
      expect(idFields(app.lastRawHeaders)).toEqual([CLIENT_ID]);
    }
  });
});

describe('floods of denials and refusals', () => {
  const denyAdmin = (r: AuthorizeRequest): { allow: boolean } => ({ allow: r.path !== '/admin' });

  it('stops reading a caller that pipelines denied requests without reading the answers, and answers all of them once it reads', async () => {
    const N = 150_000;
    const ib = await inbound({ tls: source(ca, SERVER_ID), app: { host: '127.0.0.1', port: app.port }, authorize: denyAdmin });
    const creds = source(ca, CLIENT_ID).current();
    const s: TLSSocket = tlsConnect({ host: '127.0.0.1', port: ib.port, ca: ca.pem, cert: creds.certPem, key: creds.key.export({ format: 'pem', type: 'pkcs8' }) as string, checkServerIdentity: () => undefined });
    cleanups.push(() => { s.destroy(); });
    await once(s, 'secureConnect');
    s.pause();
    const burst = Buffer.from('GET /admin HTTP/1.1\r\nHost: a\r\n\r\n'.repeat(1000), 'latin1');
    for (let i = 0; i < N / 1000; i++) s.write(burst);
    // Until the proxy stops deciding: the answers fill the kernel's socket buffers, then it waits.
    let last = -1;
    for (let i = 0; i < 100 && ib.stats.denied !== last; i++) {
      last = ib.stats.denied;
      await new Promise((r) => setTimeout(r, 300));
    }
    expect(ib.stats.denied).toBeGreaterThan(0);
    expect(ib.stats.denied).toBeLessThan(N);
    expect(ib.stats.active).toBe(1);

    // Reading now: every request gets its 403, in order, on the same connection.
    let answers = 0;
    let tail = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`only ${answers} answers`)), 30_000);
      s.on('data', (d: Buffer) => {
        const text = tail + d.toString('latin1');
        let at = text.indexOf('HTTP/1.1 403 ');
        let end = 0;
        while (at >= 0) {
          answers++;
          end = at + 13;
          at = text.indexOf('HTTP/1.1 403 ', end);
        }
        tail = text.slice(Math.max(end, text.length - 13));
        if (answers === N) {
          clearTimeout(timer);
          resolve();
        }
      });
      s.resume();
    });
    expect(ib.stats.denied).toBe(N);
    expect(ib.stats.internalErrors).toBe(0);
    // The connection still serves an allowed request after the flood.
    s.write('GET /hello HTTP/1.1\r\nHost: a\r\n\r\n');
    const [d] = await once(s, 'data') as [Buffer];
    expect(statusOf(d)).toBe(200);
  }, 60_000);

  it('passes at most refusalRecordsPerSecond refusals per code on, and counts the rest', async () => {
    const refusals: string[] = [];
    const ib = await inbound({ tls: source(ca, SERVER_ID), app: { host: '127.0.0.1', port: app.port }, limits: { refusalRecordsPerSecond: 2 }, onRefused: (r) => refusals.push(r.code) });
    const t0 = Date.now();
    await Promise.all(Array.from({ length: 20 }, () => rawTls(ib.port, { ca: ca.pem }, 'GET / HTTP/1.1\r\nHost: a\r\n\r\n')));
    for (let i = 0; i < 50 && ib.stats.handshakeFailures < 20; i++) await new Promise((res) => setTimeout(res, 20));
    const seconds = Math.ceil((Date.now() - t0) / 1000) + 1;
    expect(ib.stats.handshakeFailures).toBe(20);
    expect(refusals.length).toBeGreaterThan(0);
    expect(refusals.length).toBeLessThanOrEqual(2 * seconds);
    expect(refusals.length + ib.stats.refusalsNotRecorded).toBe(20);
    expect(new Set(refusals)).toEqual(new Set(['TESSERA_AUTH_INVALID']));
  });

  it('refuses caps that are not positive numbers', async () => {
    for (const limits of [{ maxPendingDenials: 0 }, { refusalRecordsPerSecond: -1 }, { maxPendingDenials: Number.NaN }]) {
      await expect(startInbound({ listen: { host: '127.0.0.1', port: 0 }, mode: 'http', authorize: allowAll, tls: source(ca, SERVER_ID), app: { host: '127.0.0.1', port: app.port }, limits })).rejects.toMatchObject({ code: 'TESSERA_CONFIG_INVALID' });
    }
  });
});
