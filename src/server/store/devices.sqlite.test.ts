/**
 * SqliteStore's devices: single-use tokens (atomic spend), bounded posture history, and revocation
 * that lands in the shared revocation list with the device's certificates.
 */
import { describe, expect, it } from 'vitest';
import type { DeviceRecord } from './store.js';
import { sqliteTestFiles } from './test-files.js';

const T0 = Date.parse('2026-12-01T00:00:00.000Z');
const { tmpFile, open } = sqliteTestFiles('devices');

const device = (id: string): DeviceRecord => ({
  id, spiffeId: `spiffe://td/device/${id}`, owner: 'alice', attributes: { site: 'berlin' }, certTtlSeconds: 600, createdAt: T0, tokenRef: 'abc',
  certSerial: `AA${id.length}`, certNotAfter: T0 + 600_000, certSpki: Buffer.from([1, 2, 3]), certIssuedAt: T0,
});

describe('SqliteStore: devices', () => {
  it('spends a token once, refuses an expired one, and says which', async () => {
    const store = open(tmpFile());
    const t = { hash: 'h1', deviceId: 'lap', owner: null, attributes: {}, certTtlSeconds: 60, createdAt: T0, expiresAt: T0 + 1000 };
    await store.devices.insertDeviceToken(t);
    await store.devices.insertDeviceToken({ ...t, hash: 'h2', expiresAt: T0 + 10 });
    expect(await store.devices.hasPendingDeviceToken('lap', T0)).toBe(true);
    const [a, b] = await Promise.all([store.devices.consumeDeviceToken('h1', T0), store.devices.consumeDeviceToken('h1', T0)]);
    expect([a.ok, b.ok].sort()).toEqual([false, true]);
    const won = a.ok ? a : b;
    expect(won.ok && won.token).toMatchObject({ deviceId: 'lap', certTtlSeconds: 60 });
    expect(await store.devices.consumeDeviceToken('h1', T0)).toEqual({ ok: false, reason: 'used' });
    expect(await store.devices.consumeDeviceToken('h2', T0 + 10)).toEqual({ ok: false, reason: 'expired' });
    expect(await store.devices.consumeDeviceToken('nope', T0)).toEqual({ ok: false, reason: 'unknown' });
    expect(await store.devices.hasPendingDeviceToken('lap', T0 + 10)).toBe(false);
  });

  it('keeps a device id once, and only the newest reports', async () => {
    const store = open(tmpFile());
    expect(await store.devices.insertDevice(device('lap'))).toBe(true);
    expect(await store.devices.insertDevice(device('lap'))).toBe(false);
    expect(await store.devices.getDevice('lap')).toEqual(device('lap'));
    for (let i = 0; i < 7; i++) {
      await store.devices.insertPostureReport({ deviceId: 'lap', receivedAt: T0 + i, reportedAt: T0 + i, report: `{"n":${i}}` }, 3);
    }
    await store.devices.insertPostureReport({ deviceId: 'other', receivedAt: T0, reportedAt: T0, report: '{}' }, 3);
    const kept = await store.devices.listPostureReports('lap', 10);
    expect(kept.map((r) => r.report)).toEqual(['{"n":6}', '{"n":5}', '{"n":4}']);
    expect(await store.devices.listPostureReports('other', 10)).toHaveLength(1);
  });

  it('revokes once, into the revocation list with its unexpired certificates; a revoked device gets no new certificate', async () => {
    const store = open(tmpFile());
    await store.devices.insertDevice(device('lap'));
    await store.recordIssuedSvid({ serial: 'AA3', entryId: 'device:lap', spiffeId: 'spiffe://td/device/lap', notAfter: T0 + 600_000, issuedAt: T0 });
    expect(await store.devices.isDeviceSerial('lap', 'AA3')).toBe(true);
    expect(await store.devices.isDeviceSerial('other', 'AA3')).toBe(false);
    const res = await store.devices.revokeDevice('lap', T0 + 5, 'lost');
    expect(res).toMatchObject({ ok: true, device: { revokedAt: T0 + 5, revokedReason: 'lost' } });
    expect(await store.devices.revokeDevice('lap', T0 + 6, 'again')).toMatchObject({ ok: false, reason: 'already' });
    expect(await store.devices.revokeDevice('none', T0, 'x')).toEqual({ ok: false, reason: 'missing' });
    expect(await store.isSerialRevoked('AA3')).toBe(true);
    const list = await store.listRevocations(T0 + 10, 3600_000);
    expect(list).toEqual([{ entryId: 'device:lap', spiffeId: 'spiffe://td/device/lap', revokedAt: T0 + 5, reason: 'lost', deleted: false, serials: [{ serial: 'AA3', notAfter: T0 + 600_000 }] }]);
    expect(await store.devices.updateDeviceCert('lap', { certSerial: 'BB', certNotAfter: T0, certSpki: Buffer.from([9]), certIssuedAt: T0 })).toBe(false);
  });
});
