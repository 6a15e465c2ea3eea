import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent, type BundleEvent } from '../src/agent/agent.js';
import { silentLogger } from '../src/core/log.js';
import { freePort, ServerProcess, waitFor } from './support/process.js';

function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('tessera server --workers 2 (one store, one port, a leader and a follower)', () => {
  let dir: string;
  let server: ServerProcess;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-workers-'));
    server = new ServerProcess(join(dir, 'server'), await freePort(), ['--workers', '2']);
    await server.start();
    await waitFor('two workers', () => childPids(server.child!.pid!).length === 2);
  });
  afterAll(async () => {
    await server.stop(false);
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves one consistent registry and CA from both processes, and agents follow a rotation started on either', async () => {
    // Fresh connections are spread over the workers; each sees every write.
    for (let i = 0; i < 6; i++) {
      const admin = server.admin();
      await admin.call('POST', '/v1/entries', { spiffe_id: `spiffe://tessera.test/w/${i}`, x509_ttl_seconds: 60 });
      admin.close();
    }
    for (let i = 0; i < 6; i++) {
      const admin = server.admin();
      const { entries } = await admin.call<{ entries: unknown[] }>('GET', '/v1/entries');
      expect(entries).toHaveLength(6);
      admin.close();
    }

    const admin = server.admin();
    const { token } = await admin.call<{ token: string }>('POST', '/v1/tokens', { entry_id: 'spiffe://tessera.test/w/0' });
    admin.close();
    const agent = new Agent({ serverUrl: server.url, dataDir: join(dir, 'agent'), joinToken: token, trustBundleFile: join(server.dataDir, 'bundle.pem'), log: silentLogger, watchSeconds: 2 });
    await agent.start();
    const twoCas = new Promise<BundleEvent>((resolve) => {
      const on = (e: BundleEvent): void => { if (e.authorities === 2) { agent.off('bundle', on); resolve(e); } };
      agent.on('bundle', on);
    });

    const rotator = server.admin();
    await rotator.call('POST', '/v1/ca/rotate', { grace_seconds: 3600 });
    rotator.close();
    expect((await twoCas).authorities).toBe(2);
    // Whichever process answers, it knows about the prepared CA (followers sync from the store).
    for (let i = 0; i < 6; i++) {
      const c = server.admin();
      const again = await c.call<{ error?: unknown }>('POST', '/v1/ca/rotate', { grace_seconds: 60 }).catch((e: { code: string }) => e);
      expect((again as { code: string }).code).toBe('TESSERA_CA_ROTATION_IN_PROGRESS');
      c.close();
    }
    await agent.stop();
  }, 40_000);

  it('stops every worker on SIGTERM', async () => {
    const workers = childPids(server.child!.pid!);
    expect(workers).toHaveLength(2);
    await server.kill('SIGTERM');
    await waitFor('workers to exit', () => workers.every((p) => !alive(p)), 10_000);
  });
});
