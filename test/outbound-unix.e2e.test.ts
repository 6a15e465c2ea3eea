/**
 * The outbound proxy on a Unix socket (issue 9, finding 9): only a local process whose peer
 * credentials (SO_PEERCRED) match the entry's `unix:` selectors is carried, over real mTLS to a real
 * inbound proxy; anyone else is refused before a byte goes out. A client running as uid 65534 is
 * spawned the way test/workload-api.e2e.test.ts does it (node starts as root, then drops to 65534
 * before connecting, so the kernel records 65534 as the connecting process).
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, lstatSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect as netConnect, createServer as createNetServer, type AddressInfo, type Server as NetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startInbound, type Inbound } from '../src/agent/inbound/inbound.js';
import { startOutbound, type Outbound, type OutboundRefusal } from '../src/agent/outbound/outbound.js';
import { TestCa } from './support/tls-ca.js';

const TD = 'outbound-unix.test';
const CLIENT_ID = `spiffe://${TD}/shop/orders`;
const SERVER_ID = `spiffe://${TD}/shop/payments`;
const uid = process.getuid!();
const gid = process.getgid!();

let dir: string;
let ca: TestCa;
let app: NetServer;
let appConnections = 0;
let inbound: Inbound;
const callers: string[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tou-'));
  chmodSync(dir, 0o755); // so that a client running as another user can reach the sockets
  ca = new TestCa(TD);
  // The app behind the inbound proxy: an echo server.
  app = createNetServer((s) => {
    appConnections++;
    s.pipe(s);
  });
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
  inbound = await startInbound({
    listen: { host: '127.0.0.1', port: 0 },
    app: { host: '127.0.0.1', port: (app.address() as AddressInfo).port },
    mode: 'tcp',
    tls: ca.source(SERVER_ID),
    authorize: (r) => {
      callers.push(r.peer);
      return { allow: true };
    },
  });
});

afterAll(async () => {
  await inbound?.close();
  await new Promise<void>((r) => (app ? app.close(() => r()) : r()));
  rmSync(dir, { recursive: true, force: true });
});

async function outboundOn(path: string, selectors: () => readonly string[], refusals: OutboundRefusal[] = []): Promise<Outbound> {
  return startOutbound({
    listen: { path },
    entrySelectors: selectors,
    upstream: { host: '127.0.0.1', port: inbound.port, expectedId: SERVER_ID },
    tls: ca.source(CLIENT_ID),
    onRefused: (r) => refusals.push(r),
  });
}

/** Connects to `path` in this process, sends `ping`, returns what came back before the close. */
async function ping(path: string): Promise<string> {
  const c = netConnect(path);
  let out = '';
  c.on('data', (d: Buffer) => {
    out += d.toString();
    if (out.length >= 4) c.end();
  });
  c.on('error', () => {});
  c.write('ping');
  // Not events.once: it rejects on 'error' (EPIPE/ECONNRESET when a refused connection is closed).
  await new Promise((r) => c.once('close', r));
  return out;
}

/** The same from a child process running as uid/gid 65534. */
async function pingAsNobody(path: string): Promise<string> {
  const script = `
    const net = require('net');
    process.setgroups([]);
    process.setgid(65534);
    process.setuid(65534);
    const c = net.connect(${JSON.stringify(path)});
    let out = '';
    c.on('data', (d) => { out += d; if (out.length >= 4) c.end(); });
    c.on('error', () => {});
    c.on('close', () => console.log(JSON.stringify({ out, uid: process.getuid() })));
    c.write('ping');`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let stdout = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  await once(child, 'exit');
  const res = JSON.parse(stdout) as { out: string; uid: number };
  expect(res.uid).toBe(65534);
  return res.out;
}

describe('outbound proxy on a Unix socket', () => {
  it('carries a process whose uid matches the entry over real mTLS, and refuses one whose uid does not before any byte goes out', async () => {
    const path = join(dir, 'payments.sock');
    let selectors: string[] = [`unix:uid:${uid}`];
    const refusals: OutboundRefusal[] = [];
    const out = await outboundOn(path, () => selectors, refusals);
    try {
      expect(out.socketPath).toBe(path);
      expect(lstatSync(path).isSocket()).toBe(true);
      expect(lstatSync(path).mode & 0o777).toBe(0o666);

      // Matching uid (and gid): carried to the app, the inbound saw our SPIFFE ID.
      selectors = [`unix:uid:${uid}`, `unix:gid:${gid}`];
      expect(await ping(path)).toBe('ping');
      expect(callers).toContain(CLIENT_ID);
      const before = { inbound: inbound.stats, app: appConnections, out: out.stats };

      // Not matching: closed at once, nothing sent upstream (no TLS connection, no app connection).
      selectors = [`unix:uid:${uid + 1}`];
      expect(await ping(path)).toBe('');
      selectors = [`unix:uid:${uid}`, 'k8s:ns:prod']; // a selector peer credentials cannot attest: nobody
      expect(await ping(path)).toBe('');
      selectors = [];
      expect(await ping(path)).toBe('');
      expect(out.stats.callerRefused).toBe(before.out.callerRefused + 3);
      expect(out.stats.connections).toBe(before.out.connections);
      expect(refusals.map((r) => r.code)).toEqual(['TESSERA_PROXY_LOCAL_CALLER', 'TESSERA_PROXY_LOCAL_CALLER', 'TESSERA_PROXY_LOCAL_CALLER']);
      expect(refusals[0]!.caller).toMatchObject({ uid, gid, pid: process.pid });

      // One more allowed connection: the inbound counts exactly one more, so the refused ones never reached it.
      selectors = [`unix:uid:${uid}`];
      expect(await ping(path)).toBe('ping');
      expect(inbound.stats.connections).toBe(before.inbound.connections + 1);
      expect(inbound.stats.handshakeFailures).toBe(before.inbound.handshakeFailures);
      expect(appConnections).toBe(before.app + 1);
    } finally {
      await out.close();
    }
    expect(() => lstatSync(path)).toThrow(); // removed at close
  });

  it.skipIf(uid !== 0)('carries a process running as another uid when the entry names that uid, and refuses it when it does not', async () => {
    const path = join(dir, 'nobody.sock');
    let selectors = ['unix:uid:65534', 'unix:gid:65534'];
    const refusals: OutboundRefusal[] = [];
    const out = await outboundOn(path, () => selectors, refusals);
    try {
      expect(await pingAsNobody(path)).toBe('ping');
      expect(await ping(path)).toBe(''); // root itself does not match this entry
      selectors = [`unix:uid:${uid}`];
      expect(await pingAsNobody(path)).toBe('');
      expect(refusals.map((r) => r.caller?.uid)).toEqual([uid, 65534]);
      expect(out.stats.callerRefused).toBe(2);
      expect(out.stats.connections).toBe(1);
    } finally {
      await out.close();
    }
  });

  it('removes a stale socket, refuses a live one (TESSERA_ADDRESS_IN_USE) and never removes a file that is not a socket', async () => {
    const d = mkdtempSync(join(tmpdir(), 'tous-'));
    try {
      // A stale socket: its owner was SIGKILLed, so the path is still there but nobody answers.
      const stale = join(d, 'stale.sock');
      const owner = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(stale)}, () => console.log('up'))`]);
      await once(owner.stdout!, 'data');
      owner.kill('SIGKILL');
      await once(owner, 'exit');
      expect(lstatSync(stale).isSocket()).toBe(true);
      const a = await outboundOn(stale, () => [`unix:uid:${uid}`]);
      expect(await ping(stale)).toBe('ping');
      await a.close();
      expect(() => lstatSync(stale)).toThrow();

      // A socket something answers on is not taken over.
      const live = createNetServer();
      const livePath = join(d, 'live.sock');
      await new Promise<void>((r) => live.listen(livePath, r));
      await expect(outboundOn(livePath, () => [])).rejects.toMatchObject({ code: 'TESSERA_ADDRESS_IN_USE' });
      expect(lstatSync(livePath).isSocket()).toBe(true);
      await new Promise<void>((r) => live.close(() => r()));

      // A file that is not a socket is never removed.
      const file = join(d, 'file.sock');
      writeFileSync(file, 'not a socket');
      await expect(outboundOn(file, () => [])).rejects.toMatchObject({ code: 'TESSERA_CONFIG_INVALID' });
      expect(lstatSync(file).isFile()).toBe(true);

      // The folder is created (0755) when missing.
      const nested = join(d, 'run', 'tessera', 'out.sock');
      const b = await outboundOn(nested, () => [`unix:uid:${uid}`]);
      expect(lstatSync(join(d, 'run', 'tessera')).mode & 0o777).toBe(0o755);
      await b.close();
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });

  it('refuses bad paths and a Unix socket without entry selectors as configuration errors', async () => {
    const d = mkdtempSync(join(tmpdir(), 'toub-'));
    try {
      writeFileSync(join(d, 'file'), 'x');
      for (const path of ['', `/tmp/${'x'.repeat(120)}.sock`, '/tmp/a\0b.sock', join(d, 'file', 'under-a-file.sock')]) {
        await expect(outboundOn(path, () => []), JSON.stringify(path)).rejects.toMatchObject({ code: 'TESSERA_CONFIG_INVALID' });
      }
      await expect(startOutbound({
        listen: { path: join(d, 'x.sock') },
        upstream: { host: '127.0.0.1', port: inbound.port, expectedId: SERVER_ID },
        tls: ca.source(CLIENT_ID),
      })).rejects.toMatchObject({ code: 'TESSERA_CONFIG_INVALID' });
      await expect(startOutbound({
        listen: { path: join(d, 'y.sock'), mode: 0o1777 },
        entrySelectors: () => [],
        upstream: { host: '127.0.0.1', port: inbound.port, expectedId: SERVER_ID },
        tls: ca.source(CLIENT_ID),
      })).rejects.toMatchObject({ code: 'TESSERA_CONFIG_INVALID' });
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });

  it('a TCP listen port in use is TESSERA_ADDRESS_IN_USE', async () => {
    const holder = createNetServer();
    await new Promise<void>((r) => holder.listen(0, '127.0.0.1', r));
    try {
      await expect(startOutbound({
        listen: { host: '127.0.0.1', port: (holder.address() as AddressInfo).port },
        upstream: { host: '127.0.0.1', port: inbound.port, expectedId: SERVER_ID },
        tls: ca.source(CLIENT_ID),
      })).rejects.toMatchObject({ code: 'TESSERA_ADDRESS_IN_USE' });
    } finally {
      await new Promise<void>((r) => holder.close(() => r()));
    }
  });
});
