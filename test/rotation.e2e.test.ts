import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, createServer, type Server, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../src/agent/agent.js';
import { ApiClient } from '../src/common/api-client.js';
import { silentLogger } from '../src/core/log.js';
import { certificateUriSans } from '../src/core/x509.js';
import { ControlPlane } from '../src/server/server.js';
import { readFileSync } from 'node:fs';

const SERVER_ID = 'spiffe://tessera.test/orders/db';
const CLIENT_ID = 'spiffe://tessera.test/orders/api';

describe('CA rotation under live mTLS traffic', () => {
  let dir: string;
  let cp: ControlPlane;
  let admin: ApiClient;
  let tlsServer: Server;
  const agents: Agent[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-rotation-'));
    cp = await ControlPlane.start({ dataDir: join(dir, 'server'), port: 0, log: silentLogger });
    const f = (n: string): string => readFileSync(join(cp.adminDir, n), 'utf8');
    admin = new ApiClient(cp.url, { ca: f('bundle.pem'), cert: f('admin.pem'), key: f('admin.key') });
  });

  afterAll(async () => {
    for (const a of agents) await a.stop();
    tlsServer?.close();
    admin.close();
    await cp.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  async function startAgent(id: string): Promise<Agent> {
    await admin.call('POST', '/v1/entries', { spiffe_id: id, x509_ttl_seconds: 10 });
    const { token } = await admin.call<{ token: string }>('POST', '/v1/tokens', { entry_id: id });
    const agent = new Agent({ serverUrl: cp.url, dataDir: join(dir, id.split('/').pop()!), joinToken: token, trustBundleFile: join(cp.dataDir, 'bundle.pem'), log: silentLogger });
    agents.push(agent);
    await agent.start();
    return agent;
  }

  it('keeps every handshake working while a new CA is prepared, activated and used', async () => {
    const serverAgent = await startAgent(SERVER_ID);
    const clientAgent = await startAgent(CLIENT_ID);

    // A workload server using its agent's SVID, rebuilding its context on every rotation.
    const material = (): { key: string; cert: string; ca: string } => {
      const c = serverAgent.current()!;
      return { key: c.key.export({ format: 'pem', type: 'pkcs8' }) as string, cert: c.certPem, ca: c.bundlePem };
    };
    tlsServer = createServer({ ...material(), requestCert: true, rejectUnauthorized: true }, (s) => s.end('ok'));
    const refresh = (): void => tlsServer.setSecureContext(material());
    serverAgent.on('svid', refresh);
    serverAgent.on('bundle', refresh);
    await new Promise<void>((r) => tlsServer.listen(0, '127.0.0.1', r));
    const port = (tlsServer.address() as { port: number }).port;

    const handshake = (): Promise<void> => new Promise((resolve, reject) => {
      const c = clientAgent.current()!;
      const socket: TLSSocket = connect({
        host: '127.0.0.1', port, ca: c.bundlePem, cert: c.certPem, key: c.key.export({ format: 'pem', type: 'pkcs8' }) as string,
        checkServerIdentity: (_h, cert) => (certificateUriSans(cert.raw)[0] === SERVER_ID ? undefined : new Error('wrong server identity')),
      }, () => {
        socket.once('data', () => { socket.destroy(); resolve(); });
      });
      socket.once('error', reject);
    });

    let ok = 0;
    const failures: string[] = [];
    const oldCa = cp.ctx.ca.active().rec.id;
    let rotated = false;
    // Ends as soon as the rotation is through with more than 500 handshakes; the deadline only bounds a loaded machine.
    const deadline = Date.now() + 50_000;
    while (Date.now() < deadline) {
      try {
        await handshake();
        ok += 1;
      } catch (err) {
        failures.push((err as Error).message);
      }
      if (!rotated && ok > 50) {
        await admin.call('POST', '/v1/ca/rotate', { grace_seconds: 2 });
        rotated = true;
      }
      // Done once both agents hold SVIDs from the new CA and have renewed at least once more.
      const active = cp.ctx.ca.active();
      if (rotated && active.rec.id !== oldCa) {
        const newCa = new X509Certificate(active.rec.certDer);
        const fromNew = [serverAgent, clientAgent].every((a) => new X509Certificate(a.current()!.certPem).verify(newCa.publicKey));
        if (fromNew && ok > 500) break;
      }
    }
    expect(rotated).toBe(true);
    expect(cp.ctx.ca.active().rec.id).not.toBe(oldCa);
    const newCa = new X509Certificate(cp.ctx.ca.active().rec.certDer);
    for (const a of [serverAgent, clientAgent]) expect(new X509Certificate(a.current()!.certPem).verify(newCa.publicKey)).toBe(true);
    // The old CA stays in the bundle until everything it signed has expired.
    expect(cp.ctx.ca.list().filter((c) => c.inBundle)).toHaveLength(2);
    expect(failures).toEqual([]);
    expect(ok).toBeGreaterThan(500);
  }, 70_000);
});
