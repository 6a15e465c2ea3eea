/**
 * SvidService and CredentialService rules, without HTTP: real SQLite file and CA, a stand-in
 * policy whose answer each test sets (the Cedar side of credential:derive is tested over HTTP in
 * credentials.security.test.ts).
 */
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseCsrPem } from '../../core/csr.js';
import { parseSpiffeId } from '../../core/spiffe-id.js';
import { KeyEncryptionKey } from '../../common/kek.js';
import { scratchNotes } from '../audit/audit.js';
import { CertificateAuthority } from '../ca/ca.js';
import { CredentialService } from '../credentials/service.js';
import type { PolicyService } from '../policy/service.js';
import { RegistryService } from '../registry/service.js';
import { SqliteStore } from '../store/sqlite.js';
import type { EntryRecord } from '../store/store.js';
import { SvidService } from './service.js';
import { makeCsrPem, rejectionCode } from '../../../test/support/server.js';

const TD = 'example.org';

describe('SvidService and CredentialService', () => {
  let dir: string;
  let store: SqliteStore;
  let now: number;
  let allow: boolean;
  let decisions: number;
  let registry: RegistryService;
  let svids: SvidService;
  let credentials: CredentialService;
  let orders: EntryRecord;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-svid-'));
    store = new SqliteStore(join(dir, 'tessera.db'));
    now = Date.now();
    allow = true;
    decisions = 0;
    const clock = (): number => now;
    const ca = new CertificateAuthority(store, KeyEncryptionKey.load(dir, {}), { trustDomain: TD, caTtlMs: 24 * 3600_000 });
    await ca.init();
    const policy: Pick<PolicyService, 'sync' | 'decide' | 'entriesChanged'> = {
      sync: async () => {},
      decide: () => {
        decisions += 1;
        return { allow, reasons: allow ? ['policy0'] : [], errors: [], cached: false };
      },
      entriesChanged: async () => 1,
    };
    registry = new RegistryService({ store, policy, trustDomain: TD, now: clock, defaults: { x509TtlSeconds: 3600, jwtTtlSeconds: 300 } });
    svids = new SvidService({ store, ca, registry, policy, trustDomain: TD, now: clock, issuer: () => 'https://cp.example.org' });
    credentials = new CredentialService({ store, registry, policy, trustDomain: TD, now: clock });
    orders = await registry.create({ spiffeId: parseSpiffeId(`spiffe://${TD}/orders`), selectors: [], attributes: {}, apikeyMaxTtlSeconds: 3600 });
  });
  afterEach(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const csr = (uriSan?: string): ReturnType<typeof parseCsrPem> => parseCsrPem(makeCsrPem(uriSan === undefined ? {} : { uriSan }).pem);

  it('join: a CSR for another identity is refused and still spends the token', async () => {
    const t = await registry.createJoinToken(orders);
    const notes = scratchNotes();
    expect(await rejectionCode(svids.join(t.token, csr(`spiffe://${TD}/payments`), notes))).toBe('TESSERA_CSR_IDENTITY_MISMATCH');
    expect(notes).toMatchObject({ target: orders.spiffeId, actor: `join:${t.ref}` });
    expect(await rejectionCode(svids.join(t.token, csr(), scratchNotes()))).toBe('TESSERA_TOKEN_INVALID');
  });

  it('join and renew record each serial (so revocation can list it) and send the bundle only to who lacks it', async () => {
    const t = await registry.createJoinToken(orders);
    const notes = scratchNotes();
    const joined = await svids.join(t.token, csr(orders.spiffeId), notes);
    const serial = new X509Certificate(joined.der).serialNumber.toUpperCase();
    expect(notes.detail.serial).toBe(serial);
    expect(joined.bundlePem).toContain('BEGIN CERTIFICATE');
    const renewed = await svids.renew(orders, csr(), scratchNotes(), joined.bundleSequence);
    expect(renewed.bundlePem).toBeUndefined();
    expect((await svids.renew(orders, csr(), scratchNotes(), joined.bundleSequence + 1)).bundlePem).toBeDefined();
    await registry.delete(orders.id);
    expect(await registry.liveEntry(orders.spiffeId, serial)).toBe('unknown');
    await registry.create({ spiffeId: parseSpiffeId(orders.spiffeId), selectors: [], attributes: {} });
    expect(await registry.liveEntry(orders.spiffeId, serial)).toBe('revoked serial');
  });

  it('JWT-SVIDs: the lifetime is clipped to the entry, and a denied audience gets nothing', async () => {
    const notes = scratchNotes();
    const jwt = await svids.mintJwt(orders.spiffeId, orders, ['payments'], 86400, notes);
    expect(jwt.expiresAt.getTime()).toBeLessThanOrEqual(Date.now() + 300_000 + 1000);
    expect(notes.detail).toMatchObject({ audience: ['payments'], ttl_seconds: 300, policy: ['policy0'] });
    allow = false;
    const denied = scratchNotes();
    expect(await rejectionCode(svids.mintJwt(orders.spiffeId, orders, ['payments', 'billing'], undefined, denied))).toBe('TESSERA_CREDENTIAL_DENIED');
    expect(denied.detail).toMatchObject({ reason: 'policy', denied: ['payments', 'billing'] });
  });

  it('API keys: a lifetime above the entry bound is refused before policy is asked', async () => {
    const notes = scratchNotes();
    expect(await rejectionCode(credentials.create(orders.spiffeId, orders, ['orders:read'], 7200, notes))).toBe('TESSERA_CREDENTIAL_DENIED');
    expect(notes.detail.reason).toBe('ttl');
    expect(decisions).toBe(0);
  });

  it('API keys: revoking twice keeps the first reason; another owner sees "not found"; a replaced owner ends the key', async () => {
    const key = await credentials.create(orders.spiffeId, orders, ['orders:read'], undefined, scratchNotes());
    expect((await credentials.verify(key.apiKey, 'orders:read', scratchNotes())).id).toBe(key.id);
    expect(await rejectionCode(credentials.verify(key.apiKey, 'orders:write', scratchNotes()))).toBe('TESSERA_FORBIDDEN');
    expect(await rejectionCode(credentials.revoke(key.id, 'mine now', `spiffe://${TD}/payments`, scratchNotes()))).toBe('TESSERA_APIKEY_NOT_FOUND');
    expect(await rejectionCode(credentials.list({ self: `spiffe://${TD}/payments`, owner: orders.spiffeId, limit: 10 }, scratchNotes()))).toBe('TESSERA_FORBIDDEN');

    const first = scratchNotes();
    expect((await credentials.revoke(key.id, 'leaked', orders.spiffeId, first)).revokedReason).toBe('leaked');
    expect(first.detail).toMatchObject({ reason: 'leaked', already_revoked: false });
    const second = scratchNotes();
    now += 1000;
    expect((await credentials.revoke(key.id, 'again', undefined, second)).revokedReason).toBe('leaked');
    expect(second.detail).toMatchObject({ reason: 'leaked', already_revoked: true });

    const other = await credentials.create(orders.spiffeId, orders, ['orders:read'], undefined, scratchNotes());
    await registry.delete(orders.id);
    now += 1000;
    await registry.create({ spiffeId: parseSpiffeId(orders.spiffeId), selectors: [], attributes: {} });
    const replaced = scratchNotes();
    expect(await rejectionCode(credentials.verify(other.apiKey, undefined, replaced))).toBe('TESSERA_APIKEY_INVALID');
    expect(replaced.detail.reason).toBe('owner_replaced');
  });
});
