/** RegistryService rules, without HTTP: real SQLite file, fake clock, a counting stand-in for the policy bundle. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseSpiffeId } from '../../core/spiffe-id.js';
import { scratchNotes } from '../audit/audit.js';
import { SqliteStore } from '../store/sqlite.js';
import { RegistryService } from './service.js';
import { rejectionCode as codeOf } from '../../../test/support/server.js';

const TD = 'example.org';

describe('RegistryService', () => {
  let dir: string;
  let store: SqliteStore;
  let now: number;
  let published: number;
  let registry: RegistryService;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-registry-'));
    store = new SqliteStore(join(dir, 'tessera.db'));
    now = 1_700_000_000_000;
    published = 0;
    registry = new RegistryService({
      store, trustDomain: TD, now: () => now, defaults: { x509TtlSeconds: 3600, jwtTtlSeconds: 300 },
      policy: { entriesChanged: async () => ++published },
    });
  });
  afterEach(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const create = (path: string): ReturnType<RegistryService['create']> =>
    registry.create({ spiffeId: parseSpiffeId(`spiffe://${TD}${path}`), selectors: [], attributes: {} });

  it('creates entries with the defaults, publishes each change, and refuses a second entry for an ID', async () => {
    const e = await create('/orders');
    expect(e).toMatchObject({ spiffeId: `spiffe://${TD}/orders`, x509TtlSeconds: 3600, jwtTtlSeconds: 300, apikeyMaxTtlSeconds: 86400, createdAt: now });
    expect(published).toBe(1);
    expect(await codeOf(create('/orders'))).toBe('TESSERA_CONFLICT');
    expect(await codeOf(create('/tessera/admin'))).toBe('TESSERA_SPIFFE_ID_RESERVED');
    expect(await codeOf(registry.create({ spiffeId: parseSpiffeId('spiffe://other.org/x'), selectors: [], attributes: {} }))).toBe('TESSERA_SPIFFE_ID_INVALID');
    expect(await codeOf(create(''))).toBe('TESSERA_SPIFFE_ID_INVALID');
    expect(published).toBe(1);
    expect((await registry.lookup(e.spiffeId)).id).toBe(e.id);
    expect(await codeOf(registry.lookup('spiffe://example.org/nobody'))).toBe('TESSERA_ENTRY_NOT_FOUND');
  });

  it('revoking twice is a conflict and keeps the first revocation', async () => {
    const e = await create('/orders');
    const first = await registry.revoke(e.id, 'leaked');
    expect(first.entry.revokedReason).toBe('leaked');
    now += 1000;
    expect(await codeOf(registry.revoke(e.id, 'again'))).toBe('TESSERA_CONFLICT');
    expect((await registry.lookup(e.id)).revokedReason).toBe('leaked');
    expect((await registry.lookup(e.id)).revokedAt).toBe(first.entry.revokedAt);
    expect(await codeOf(registry.revoke('no-such-entry', 'x'))).toBe('TESSERA_ENTRY_NOT_FOUND');
    expect(await codeOf(registry.delete('no-such-entry'))).toBe('TESSERA_ENTRY_NOT_FOUND');
  });

  it('a join token works once, expires, and dies with its entry', async () => {
    const e = await create('/orders');
    const t = await registry.createJoinToken(e);
    expect(t.expiresAt).toBe(now + 600_000);
    const notes = scratchNotes();
    expect((await registry.consumeJoinToken(t.token, notes)).entry.id).toBe(e.id);
    expect(notes.detail.token_ref).toBe(t.ref);
    const again = scratchNotes();
    expect(await codeOf(registry.consumeJoinToken(t.token, again))).toBe('TESSERA_TOKEN_INVALID');
    expect(again.detail.reason).toBe('used');

    const late = await registry.createJoinToken(e, 10);
    now += 10_001;
    const expired = scratchNotes();
    expect(await codeOf(registry.consumeJoinToken(late.token, expired))).toBe('TESSERA_TOKEN_INVALID');
    expect(expired.detail.reason).toBe('expired');

    const orphan = await registry.createJoinToken(e);
    await registry.revoke(e.id, 'gone');
    const revoked = scratchNotes();
    expect(await codeOf(registry.consumeJoinToken(orphan.token, revoked))).toBe('TESSERA_TOKEN_INVALID');
    expect(revoked.detail.reason).toBe('entry revoked');
    expect(await codeOf(registry.createJoinToken(await registry.lookup(e.id)))).toBe('TESSERA_CONFLICT');
  });

  it('live entry: unknown, revoked, and a serial of a deleted entry are not live', async () => {
    expect(await registry.liveEntry(`spiffe://${TD}/orders`, 'AA')).toBe('unknown');
    const e = await create('/orders');
    await store.recordIssuedSvid({ serial: 'AA', entryId: e.id, spiffeId: e.spiffeId, notAfter: now + 3600_000, issuedAt: now });
    expect(await registry.liveEntry(e.spiffeId, 'AA')).toMatchObject({ id: e.id });
    await registry.delete(e.id);
    const again = await create('/orders');
    // Same SPIFFE ID, new entry: the old certificate stays refused, a new one is live.
    expect(await registry.liveEntry(e.spiffeId, 'AA')).toBe('revoked serial');
    expect(await registry.liveEntry(e.spiffeId, 'BB')).toMatchObject({ id: again.id });
    await registry.revoke(again.id, 'stop');
    expect(await registry.liveEntry(e.spiffeId, 'BB')).toBe('revoked');
  });
});
