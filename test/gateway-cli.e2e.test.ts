/**
 * `tessera gateway add|list|remove` against a real control plane, their refusals, and `tessera gateway run`
 * refusing bad options before it joins (exit status 2).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runTessera } from './support/process.js';
import { startControlPlane, type TestControlPlane } from './support/server.js';

let t: TestControlPlane;
const cli = async (...args: string[]): Promise<{ status: number | null; json: Record<string, unknown>; stderr: string }> => {
  const r = await runTessera(['--json', ...args], { env: { TESSERA_ADMIN_DIR: t.cp.adminDir }, timeoutMs: 20_000 });
  return { status: r.status, json: JSON.parse(r.stdout || '{}') as Record<string, unknown>, stderr: r.stderr };
};
const code = (r: { json: Record<string, unknown> }): unknown => (r.json.error as { code?: string } | undefined)?.code;

beforeAll(async () => {
  t = await startControlPlane();
});
afterAll(async () => {
  await t?.close();
});

describe('tessera gateway', () => {
  it('adds, lists and removes a gateway registration; refuses bad ones', async () => {
    const add = await cli('gateway', 'add', 'apps', '--spiffe-id', 'spiffe://tessera.test/gateway/apps', '--url', 'https://wiki.example.com:8443', '--url', 'https://docs.example.com');
    expect(add.status, add.stderr).toBe(0);
    expect(add.json.gateway).toMatchObject({ name: 'apps', urls: ['https://wiki.example.com:8443', 'https://docs.example.com'], redirect_uris: ['https://wiki.example.com:8443/_tessera/callback', 'https://docs.example.com/_tessera/callback'] });
    expect(code(await cli('gateway', 'add', 'apps', '--spiffe-id', 'spiffe://tessera.test/gateway/other', '--url', 'https://x.example.com'))).toBe('TESSERA_CONFLICT');
    expect(code(await cli('gateway', 'add', 'b', '--spiffe-id', 'spiffe://tessera.test/gateway/b', '--url', 'http://x.example.com'))).toBe('TESSERA_BAD_REQUEST');
    expect(code(await cli('gateway', 'add', 'b', '--spiffe-id', 'spiffe://tessera.test/gateway/b', '--url', 'https://x.example.com/path'))).toBe('TESSERA_BAD_REQUEST');
    expect(code(await cli('gateway', 'add', 'b', '--spiffe-id', 'spiffe://other.test/gw', '--url', 'https://x.example.com'))).toBe('TESSERA_BAD_REQUEST');
    expect(code(await cli('gateway', 'add', 'b', '--spiffe-id', 'spiffe://tessera.test/tessera/gw', '--url', 'https://x.example.com'))).toBe('TESSERA_SPIFFE_ID_RESERVED');
    expect(code(await cli('gateway', 'add', 'B!', '--spiffe-id', 'spiffe://tessera.test/gateway/b', '--url', 'https://x.example.com'))).toBe('TESSERA_BAD_REQUEST');
    const list = await cli('gateway', 'list');
    expect((list.json.gateways as { name: string }[]).map((g) => g.name)).toEqual(['apps']);
    expect((await cli('gateway', 'remove', 'apps')).status).toBe(0);
    const gone = await cli('gateway', 'remove', 'apps');
    expect(gone.status).not.toBe(0);
    expect(code(gone)).toBe('TESSERA_GATEWAY_NOT_FOUND');
  }, 120_000);

  it('run: a bad route or listen address is refused before joining (exit 2)', async () => {
    const base = ['--server', t.cp.url, 'gateway', 'run', '--name', 'apps', '--data-dir', '/nonexistent/gw', '--tls-cert', 'c.pem', '--tls-key', 'k.pem'];
    const badRoute = await cli(...base, '--listen', '127.0.0.1:0', '--route', 'wiki=ftp://127.0.0.1:1');
    expect(badRoute.status).toBe(2);
    expect(code(badRoute)).toBe('TESSERA_CONFIG_INVALID');
    const badListen = await cli(...base, '--listen', 'nowhere', '--route', 'wiki.x.test=http://127.0.0.1:1');
    expect(badListen.status).toBe(2);
    const noCert = await cli(...base, '--listen', '127.0.0.1:0', '--route', 'wiki.x.test=http://127.0.0.1:1');
    expect(noCert.status).toBe(2);
    expect(code(noCert)).toBe('TESSERA_CONFIG_INVALID');
  }, 60_000);
});
