/**
 * The federation store contract (SQLite and PostgreSQL): one row per trust domain, the last good bundle replaced in
 * place, errors recorded without touching the bundle, and the revision agents long-poll bumped on every
 * change that reaches them (add, new bundle, removal) and not on a recorded error.
 */
import { describe, expect, it } from 'vitest';
import type { FederationRecord, FederationStore } from './federation.sqlite.js';

const T0 = Date.parse('2026-12-01T00:00:00.000Z');

const rec = (td: string): FederationRecord => ({ trustDomain: td, endpoint: `https://${td}/v1/bundle`, profile: 'https_spiffe', endpointId: `spiffe://${td}/tessera/server`, createdAt: T0, createdBy: 'spiffe://me/tessera/admin' });

/** Opens a fresh store (`reopen`: the same database again, as a restart or another replica). */
export interface FederationContractStore { federation: FederationStore; close(): Promise<void> }

export function federationStoreContract(name: string, fresh: () => Promise<{ store: FederationContractStore; reopen: () => Promise<FederationContractStore> }>): void {
describe(`${name}: federation`, () => {
  it('adds once per trust domain, replaces the bundle, records errors apart, removes; the revision follows what agents see', async () => {
    const { store, reopen } = await fresh();
    const f = store.federation;
    expect(await f.federationRevision()).toBe(0);
    expect(await f.insertFederation(rec('b.example'))).toBe(true);
    expect(await f.insertFederation(rec('b.example'))).toBe(false);
    expect(await f.federationRevision()).toBe(1);
    expect(await f.updateFederation('b.example', { bundleJson: '{"keys":[]}', sequence: 4, refreshedAt: T0 + 1 })).toBe(true);
    expect(await f.federationRevision()).toBe(2);
    expect(await f.updateFederation('b.example', { lastError: 'down', lastErrorAt: T0 + 2 })).toBe(true);
    expect(await f.federationRevision()).toBe(2);
    expect(await f.getFederation('b.example')).toEqual({ ...rec('b.example'), bundleJson: '{"keys":[]}', sequence: 4, refreshedAt: T0 + 1, lastError: 'down', lastErrorAt: T0 + 2 });
    // A new bundle clears the error.
    await f.updateFederation('b.example', { bundleJson: '{"keys":[1]}', sequence: 5, refreshedAt: T0 + 3 });
    expect((await f.getFederation('b.example'))?.lastError).toBeUndefined();
    await f.insertFederation({ ...rec('a.example'), profile: 'https_web', caPem: 'PEM' });
    expect((await f.listFederations()).map((r) => r.trustDomain)).toEqual(['a.example', 'b.example']);
    expect(await f.updateFederation('nobody.example', { bundleJson: '{}', sequence: 1 })).toBe(false);
    expect(await f.deleteFederation('b.example')).toBe(true);
    expect(await f.deleteFederation('b.example')).toBe(false);
    const rev = await f.federationRevision();
    expect(rev).toBe(5);
    await store.close();
    // Persisted: a restarted control plane (or another replica) sees the same rows and revision.
    const again = await reopen();
    expect(await again.federation.federationRevision()).toBe(rev);
    expect((await again.federation.listFederations()).map((r) => r.trustDomain)).toEqual(['a.example']);
    await again.close();
  });
});
}
