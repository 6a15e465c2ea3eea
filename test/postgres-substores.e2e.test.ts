/**
 * The control plane on PostgreSQL (`--store postgres://...`, issue 14) with the ported sub-stores:
 * people, device enrolment and posture, `tessera login` requests and gateways go through the
 * admin and public APIs of a real control plane and land in the real PostgreSQL's tables
 * (test/support/postgres.ts); a revoked device's certificate is on the revocation list.
 */
import { createHash, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enrollDevice, sendPosture } from '../src/device/device.js';
import { PostgresStore } from '../src/server/store/postgres.js';
import { startPostgres, type TestPostgres } from './support/postgres.js';
import { rawJson, startControlPlane } from './support/server.js';

let server: TestPostgres;
const dirs: string[] = [];
beforeAll(async () => { server = await startPostgres(); });
afterAll(async () => {
  await server?.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('control plane on PostgreSQL: people, devices, login, gateways', () => {
  it('adds a user, enrols and revokes a device, starts a login and registers a gateway, all in PostgreSQL', async () => {
    const url = await server.createDatabase();
    const t = await startControlPlane({ store: url });
    // The control plane's own pool: what it wrote, as PostgreSQL holds it.
    const query = async <T,>(sql: string): Promise<T[]> => (await (t.cp.store as PostgresStore).pool.query(sql)).rows as T[];
    try {
      // People.
      await t.admin.call('POST', '/v1/users', { username: 'ana', groups: ['ops', 'eng'] });
      const users = await t.admin.call<{ users: { username: string }[] }>('GET', '/v1/users');
      expect(users.users.map((u) => u.username)).toEqual(['ana']);
      const stored = await query<{ username: string; groups: string }>('SELECT username, groups FROM users');
      expect(stored.map((u) => [u.username, (JSON.parse(u.groups) as string[]).sort()])).toEqual([['ana', ['eng', 'ops']]]);
      expect((await query<{ name: string }>('SELECT name FROM groups ORDER BY name')).map((g) => g.name)).toEqual(['eng', 'ops']);

      // Devices: a one-time token, a real enrolment (CSR over HTTPS), a posture report, then revocation.
      const tok = await t.admin.call<{ token: string }>('POST', '/v1/devices/tokens', { device_id: 'lap-1', owner: 'ana' });
      const dir = mkdtempSync(join(tmpdir(), 'tessera-pgsub-'));
      dirs.push(dir);
      const device = await enrollDevice({ serverUrl: t.cp.url, token: tok.token, dataDir: join(dir, 'lap-1'), trustBundlePem: t.adminTls.ca });
      await sendPosture(device, { disk_encrypted: { value: true, observedAt: Date.now() } });
      expect(await query('SELECT id, owner FROM devices')).toEqual([{ id: 'lap-1', owner: 'ana' }]);
      expect(await query('SELECT COUNT(*)::int AS n FROM device_tokens WHERE used_at IS NOT NULL')).toEqual([{ n: 1 }]);
      expect(await query('SELECT COUNT(*)::int AS n FROM posture_reports')).toEqual([{ n: 1 }]);
      // The spent token is refused the second time.
      await expect(enrollDevice({ serverUrl: t.cp.url, token: tok.token, dataDir: join(dir, 'again'), trustBundlePem: t.adminTls.ca })).rejects.toMatchObject({ code: 'TESSERA_TOKEN_INVALID' });
      await t.admin.call('POST', '/v1/devices/lap-1/revoke', { reason: 'lost' });
      expect(await query(`SELECT entry_id, reason, deleted FROM revocations WHERE entry_id = 'device:lap-1'`))
        .toEqual([{ entry_id: 'device:lap-1', reason: 'lost', deleted: 0 }]);
      // Its certificate is on the revocation list the signed bundle is built from (the core store joining the device's rows).
      expect(await t.cp.store.isSerialRevoked(device.serial)).toBe(true);
      expect((await t.cp.store.listRevocations(Date.now(), 0)).map((r) => [r.spiffeId, r.serials.map((x) => x.serial)]))
        .toEqual([['spiffe://tessera.test/device/lap-1', [device.serial]]]);

      // `tessera login` (device flow): an anonymous start stores the request as hashes only.
      const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const thumbprint = createHash('sha256').update(publicKey.export({ format: 'der', type: 'spki' })).digest('base64url');
      const started = await rawJson(t.cp.url, { path: '/v1/login/device', json: { key_thumbprint: thumbprint }, ca: t.adminTls.ca });
      expect(started.status, started.text).toBe(200);
      const { device_code: deviceCode } = started.json as { device_code: string };
      const rows = await query<{ hash: string; key_thumbprint: string }>('SELECT hash, key_thumbprint FROM login_requests');
      expect(rows).toEqual([{ hash: createHash('sha256').update(deviceCode).digest('hex'), key_thumbprint: thumbprint }]);

      // Gateways.
      await t.admin.call('POST', '/v1/gateways', { name: 'apps', spiffe_id: 'spiffe://tessera.test/gw/apps', urls: ['https://apps.example.com'] });
      const gws = await t.admin.call<{ gateways: { name: string }[] }>('GET', '/v1/gateways');
      expect(gws.gateways.map((g) => g.name)).toEqual(['apps']);
      expect(await query('SELECT name, spiffe_id FROM gateways')).toEqual([{ name: 'apps', spiffe_id: 'spiffe://tessera.test/gw/apps' }]);
      // The sub-stores' migrations (100-103) were applied, beside the others (110: federation).
      expect(await query('SELECT version FROM schema_migrations WHERE version BETWEEN 100 AND 109 ORDER BY version')).toEqual(
        [{ version: 100 }, { version: 101 }, { version: 102 }, { version: 103 }]);
    } finally {
      await t.close();
    }
  }, 60_000);
});
