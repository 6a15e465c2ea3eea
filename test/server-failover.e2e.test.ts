/**
 * Several control-plane URLs (`--server A,B`): the agent's client moves to the next replica when
 * one cannot be reached, with no restart. Here the "replicas" are two TCP relays in front of one
 * control plane process, so one can die while the control plane lives on (several control-plane
 * processes on one database come with the PostgreSQL store).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent, type SvidEvent } from '../src/agent/agent.js';
import { ApiClient, parseServerUrls } from '../src/common/api-client.js';
import { isTesseraError } from '../src/core/errors.js';
import { silentLogger } from '../src/core/log.js';
import { expectTesseraError } from './support/expect.js';
import { freePort, ServerProcess } from './support/process.js';

const ID = 'spiffe://tessera.test/shop/replicated';

interface Relay { port: number; connections: number; kill(): Promise<void> }

/** A TCP relay to `target` on 127.0.0.1 (or, with `reset`, one that accepts and drops every connection). */
async function relay(target: number, reset = false): Promise<Relay> {
  const sockets = new Set<Socket>();
  const state = { connections: 0 };
  const server: Server = createServer((client) => {
    state.connections++;
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => {});
    if (reset) {
      client.resetAndDestroy();
      return;
    }
    const up = connect(target, '127.0.0.1');
    sockets.add(up);
    up.on('close', () => sockets.delete(up));
    up.on('error', () => client.destroy());
    client.pipe(up).pipe(client);
  });
  server.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  const port = (server.address() as { port: number }).port;
  return {
    port,
    get connections() { return state.connections; },
    kill: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

describe('parseServerUrls', () => {
  it('takes one https URL or several comma-separated, and refuses anything else with TESSERA_CONFIG_INVALID', () => {
    expect(parseServerUrls('https://127.0.0.1:8443')).toEqual(['https://127.0.0.1:8443/']);
    expect(parseServerUrls('https://a.example:1, https://b.example:2')).toEqual(['https://a.example:1/', 'https://b.example:2/']);
    for (const bad of ['', 'http://a:1', 'https://a:1,', 'https://u:p@a:1', 'https://a:1/?q=1', 'https://a:1/#f', 'ftp://a', 'a:1', Array(17).fill('https://a:1').join(',')]) {
      expectTesseraError(() => parseServerUrls(bad), 'TESSERA_CONFIG_INVALID');
    }
  });

  it('never throws anything but TESSERA_CONFIG_INVALID (property)', () => {
    fc.assert(fc.property(fc.string({ maxLength: 300 }), (s) => {
      try {
        for (const u of parseServerUrls(s)) expect(u.startsWith('https://')).toBe(true);
      } catch (err) {
        expect(isTesseraError(err) && err.code === 'TESSERA_CONFIG_INVALID').toBe(true);
      }
    }), { numRuns: 500 });
  });
});

describe('an agent given several control-plane URLs', () => {
  let dir: string;
  let server: ServerProcess;
  let admin: ApiClient;
  const agents: Agent[] = [];
  const relays: Relay[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-failover-'));
    server = new ServerProcess(join(dir, 'server'), await freePort());
    await server.start();
    admin = server.admin();
    await admin.call('POST', '/v1/entries', { spiffe_id: ID, attributes: { app: 'shop' }, x509_ttl_seconds: 10 });
  });

  afterAll(async () => {
    for (const a of agents) await a.stop();
    for (const r of relays) await r.kill().catch(() => {});
    admin.close();
    await server.stop(false);
    rmSync(dir, { recursive: true, force: true });
  });

  it('joins through the first, then renews through the second once the first dies, with no restart', async () => {
    const a = await relay(server.port);
    const b = await relay(server.port);
    relays.push(a, b);
    const { token } = await admin.call<{ token: string }>('POST', '/v1/tokens', { entry_id: ID, ttl_seconds: 60 });
    const agent = new Agent({
      serverUrl: `https://127.0.0.1:${a.port},https://127.0.0.1:${b.port}`, dataDir: join(dir, 'agent'), log: silentLogger, watchSeconds: 1,
      trustBundleFile: join(server.dataDir, 'bundle.pem'), joinToken: token,
    });
    agents.push(agent);
    const events: SvidEvent[] = [];
    agent.on('svid', (e: SvidEvent) => events.push(e));
    await agent.start();
    expect(events[0]?.reason).toBe('join');
    expect(a.connections).toBeGreaterThan(0);
    expect(b.connections).toBe(0);

    await a.kill();
    const before = events.length;
    // 10 s SVIDs renew at about half life: two renewals after the first replica died.
    const deadline = Date.now() + 30_000;
    while (events.filter((e, i) => i >= before && e.reason === 'renew').length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(events.slice(before).filter((e) => e.reason === 'renew').length).toBeGreaterThanOrEqual(2);
    expect(b.connections).toBeGreaterThan(0);
  }, 60_000);

  it('sends a request that never reached a replica to the next at once; one that may have run is not resent', async () => {
    const dead = await freePort();
    const live = await relay(server.port);
    const dropping = await relay(server.port, true);
    relays.push(live, dropping);
    const tls = { ca: readFileSync(join(server.dataDir, 'bundle.pem'), 'utf8') };
    // Connection refused on the first: the POST goes to the second at once.
    const c1 = new ApiClient(`https://127.0.0.1:${dead},https://127.0.0.1:${live.port}`, tls);
    const refused = await c1.call('POST', '/v1/agent/join', { token: 'x', csr: 'y' }).catch((e: unknown) => e);
    // An answer from the live replica (the token is bad): it got there.
    expect(isTesseraError(refused) && refused.code !== 'TESSERA_SERVER_UNREACHABLE').toBe(true);
    expect(c1.baseUrl).toBe(`https://127.0.0.1:${live.port}/`);
    c1.close();
    // Accepted then dropped (it may have run): the POST fails, the next call goes to the other replica.
    const c2 = new ApiClient(`https://127.0.0.1:${dropping.port},https://127.0.0.1:${live.port}`, tls);
    const dropped = await c2.call('POST', '/v1/agent/join', { token: 'x', csr: 'y' }).catch((e: unknown) => e);
    expect(isTesseraError(dropped) && dropped.code).toBe('TESSERA_SERVER_UNREACHABLE');
    expect(c2.baseUrl).toBe(`https://127.0.0.1:${live.port}/`);
    const again = await c2.call('POST', '/v1/agent/join', { token: 'x', csr: 'y' }).catch((e: unknown) => e);
    expect(isTesseraError(again) && again.code !== 'TESSERA_SERVER_UNREACHABLE').toBe(true);
    // A GET is resent on any failure.
    const c3 = new ApiClient(`https://127.0.0.1:${dropping.port},https://127.0.0.1:${live.port}`, tls);
    const bundle = await c3.call<{ keys?: unknown[] }>('GET', '/v1/bundle');
    expect(Array.isArray(bundle.keys)).toBe(true);
    c3.close();
    c2.close();
  });
});
