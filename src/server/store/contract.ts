/**
 * The core Store contract, as vitest cases run on every engine (sqlite.contract.test.ts,
 * postgres.contract.test.ts): the same calls must give the same answers — ordering, uniqueness
 * conflicts, limits, compare-and-set results, single use under concurrency, the audit tree's roots
 * and proofs. Each case gets a fresh, empty store from the factory; `reopen` opens the same data again.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { auditLeafData } from '../../core/audit-leaf.js';
import { EMPTY_ROOT, consistencyProof, inclusionProof, leafHash, rootOf, subtreeRoot, verifyConsistency, verifyInclusion } from '../../core/merkle.js';
import type { TelemetryWindow } from '../../core/risk/types.js';
import type { AuditRecord, CaRecord, EntryRecord, RiskStateRecord, Store, StoredAuditRecord } from './store.js';

export interface ContractStore {
  store: Store;
  /** The same data opened again (a restart). */
  reopen(): Promise<Store>;
}

const T0 = Date.parse('2026-01-02T03:04:05.000Z');

function entry(id: string, spiffeId: string, extra: Partial<EntryRecord> = {}): EntryRecord {
  return {
    id, spiffeId, selectors: ['unix:uid:1000', 'k8s:ns:prod'], attributes: { app: 'shop', site: 'eu-1' }, x509TtlSeconds: 3600, jwtTtlSeconds: 300,
    apikeyMaxTtlSeconds: 86_400, createdAt: T0, ...extra,
  };
}

function ca(id: string, createdAt: number, state: CaRecord['state'] = 'active'): CaRecord {
  return {
    id, state, certDer: Buffer.from([0x30, 0x82, 0, 0xff, id.length]), keySealed: Buffer.from(`sealed-${id}\u0000\u00ff`, 'latin1'), jwtKid: `kid-${id}`,
    jwtKeySealed: Buffer.alloc(48, 7), notBefore: createdAt, notAfter: createdAt + 86_400_000, createdAt, activateAt: null, activatedAt: createdAt, retiredAt: null,
  };
}

function rec(i: number, over: Partial<AuditRecord> = {}): AuditRecord {
  return {
    ts: T0 + i, actor: `spiffe://t.test/a/${i % 3}`, action: i % 2 ? 'entry.create' : 'join', target: `t-${i}`, outcome: i % 4 === 3 ? 'denied' : 'success',
    code: 'OK', detail: { i, nested: { b: [1, 'x', null], a: 'é\u2028' } }, ...over,
  };
}

function decision(actor: string, principal: string | undefined, i: number, outcome: AuditRecord['outcome'] = 'success', target = actor): AuditRecord {
  return { ts: T0 + i, actor, action: 'decision', target, outcome, code: outcome === 'success' ? 'ALLOW' : 'DENY', detail: { principal: principal ?? null, i },
    ...(principal !== undefined ? { principal } : {}) };
}

function recomputed(records: StoredAuditRecord[]): Buffer[] {
  return records.map((r) => leafHash(auditLeafData(r)));
}

function window(caller: string, callee: string, ts: number, n: number, reporter: 'caller' | 'callee' = 'caller'): TelemetryWindow {
  return {
    ts: new Date(ts).toISOString(), window_s: 5, caller, callee, caller_site: 'eu-1', callee_site: 'us-2', reporter, requests: n, errors: 1, denials: 2,
    bytes_in: 10 * n, bytes_out: 20 * n, latency_p50_ms: 1.5, latency_p99_ms: 9.25, paths_distinct: 3,
  };
}

function risk(spiffeId: string, state: RiskStateRecord['state'], score: number, since: number): RiskStateRecord {
  return { spiffeId, state, score, since, until: state === 'normal' ? null : since + 60_000, reasons: [{ kind: 'rate', n: score }], setBy: 'engine', actor: 'tessera/risk-engine', note: `n${score}` };
}

/** Registers the contract's cases for one engine. */
export function storeContract(engine: string, open: () => Promise<ContractStore>): void {
  const opened: Store[] = [];
  const fresh = async (): Promise<ContractStore> => {
    const c = await open();
    opened.push(c.store);
    return { store: c.store, reopen: async () => { const s = await c.reopen(); opened.push(s); return s; } };
  };
  afterEach(async () => {
    for (const s of opened.splice(0)) await s.close();
  });

  describe(`${engine} store contract`, () => {
    it('meta: set, overwrite, increment, first writer wins, prefix listing taken literally, compare-and-set', async () => {
      const { store } = await fresh();
      expect(await store.getMeta('k')).toBeUndefined();
      await store.setMeta('k', 'v1');
      await store.setMeta('k', 'v2');
      expect(await store.getMeta('k')).toBe('v2');
      expect(await store.incrementMeta('n')).toBe(1);
      expect(await store.incrementMeta('n')).toBe(2);
      expect(await Promise.all(Array.from({ length: 10 }, () => store.incrementMeta('n')))).toHaveLength(10);
      expect(await store.getMeta('n')).toBe('12');
      expect(await store.setMetaIfAbsent('first', 'a')).toBe('a');
      expect(await store.setMetaIfAbsent('first', 'b')).toBe('a');
      for (const k of ['grant:b', 'grant:a', 'grant%x', 'grant_y', 'grantZ', 'grants', 'Grant:c']) await store.setMeta(k, k.toUpperCase());
      expect((await store.listMeta('grant:')).map((r) => r.key)).toEqual(['grant:a', 'grant:b']);
      expect((await store.listMeta('grant%')).map((r) => r.key)).toEqual(['grant%x']);
      expect((await store.listMeta('grant_')).map((r) => r.key)).toEqual(['grant_y']);
      // Bytewise order: uppercase before lowercase, punctuation by code point.
      expect((await store.listMeta('grant')).map((r) => r.key)).toEqual(['grant%x', 'grant:a', 'grant:b', 'grantZ', 'grant_y', 'grants']);
      expect(await store.replaceMeta('k', 'v1', 'v3')).toBe(false);
      expect(await store.replaceMeta('k', 'v2', 'v3')).toBe(true);
      expect(await store.replaceMeta('missing', '', 'x')).toBe(false);
      expect(await store.deleteMetaIf('k', 'v2')).toBe(false);
      expect(await store.deleteMetaIf('k', 'v3')).toBe(true);
      expect(await store.getMeta('k')).toBeUndefined();
    });

    it('CAs: bytes round-trip, listed by creation, state updates, deletion', async () => {
      const { store } = await fresh();
      await store.insertCa(ca('b', T0 + 10, 'prepared'));
      await store.insertCa(ca('a', T0));
      await expect(store.insertCa(ca('a', T0 + 99))).rejects.toThrow();
      const [first, second] = await store.listCas();
      expect(first).toEqual(ca('a', T0));
      expect(Buffer.isBuffer(first!.keySealed)).toBe(true);
      expect(second!.id).toBe('b');
      await store.updateCaState('a', { state: 'retired', activatedAt: T0, retiredAt: T0 + 20 });
      await store.updateCaState('b', { state: 'active', activatedAt: T0 + 20, retiredAt: null });
      expect((await store.listCas()).map((c) => [c.id, c.state, c.activatedAt, c.retiredAt])).toEqual([['a', 'retired', T0, T0 + 20], ['b', 'active', T0 + 20, null]]);
      await store.deleteCa('a');
      expect((await store.listCas()).map((c) => c.id)).toEqual(['b']);
    });

    it('CAs: at most one prepared and one active, whoever writes', async () => {
      const { store } = await fresh();
      await store.insertCa(ca('a', T0));
      await store.insertCa(ca('p', T0 + 1, 'prepared'));
      await expect(store.insertCa(ca('q', T0 + 2, 'prepared'))).rejects.toThrow();
      await expect(store.insertCa(ca('b', T0 + 3))).rejects.toThrow();
      await expect(store.updateCaState('p', { state: 'active', activatedAt: T0 + 4, retiredAt: null })).rejects.toThrow();
      expect((await store.listCas()).map((c) => [c.id, c.state])).toEqual([['a', 'active'], ['p', 'prepared']]);
    });

    it('CA activation is one transaction, fenced by the leader lease', async () => {
      const { store } = await fresh();
      await store.setMeta('bundle_sequence', '7');
      await store.insertCa(ca('a', T0));
      await store.insertCa(ca('p', T0 + 1, 'prepared'));
      const lease = await store.tryLease('ca', 'r1', 60_000);
      // A stale epoch, another holder, an unknown or non-prepared CA: nothing changes.
      expect(await store.activateCa('p', T0 + 5, { name: 'ca', holder: 'r1', epoch: lease.epoch + 1 })).toBeUndefined();
      expect(await store.activateCa('p', T0 + 5, { name: 'ca', holder: 'r2', epoch: lease.epoch })).toBeUndefined();
      expect(await store.activateCa('nope', T0 + 5)).toBeUndefined();
      expect(await store.activateCa('a', T0 + 5)).toBeUndefined();
      expect((await store.listCas()).map((c) => c.state)).toEqual(['active', 'prepared']);
      expect(await store.getMeta('bundle_sequence')).toBe('7');
      expect(await store.activateCa('p', T0 + 5, { name: 'ca', holder: 'r1', epoch: lease.epoch })).toBe(8);
      expect((await store.listCas()).map((c) => [c.id, c.state, c.activatedAt, c.retiredAt])).toEqual([['a', 'retired', T0, T0 + 5], ['p', 'active', T0 + 5, null]]);
      // Done once: a second activation (another replica's late tick) changes nothing.
      expect(await store.activateCa('p', T0 + 6)).toBeUndefined();
      // A lapsed lease fences too.
      await store.insertCa(ca('n', T0 + 7, 'prepared'));
      await store.releaseLease('ca', 'r1');
      expect(await store.activateCa('n', T0 + 8, { name: 'ca', holder: 'r1', epoch: lease.epoch })).toBeUndefined();
      expect(await store.getMeta('bundle_sequence')).toBe('8');
    });

    it('leader lease: one holder; renewals keep the epoch; it changes hands only when lapsed or released', async () => {
      const { store } = await fresh();
      const a = await store.tryLease('leader', 'A', 60_000);
      expect(a).toMatchObject({ held: true, holder: 'A', epoch: 1 });
      expect(a.expiresAt).toBeGreaterThan(Date.now() + 50_000);
      const b = await store.tryLease('leader', 'B', 60_000);
      expect(b).toMatchObject({ held: false, holder: 'A', epoch: 1, expiresAt: a.expiresAt });
      const renewed = await store.tryLease('leader', 'A', 60_000);
      expect(renewed).toMatchObject({ held: true, holder: 'A', epoch: 1 });
      // Another lease name is independent.
      expect(await store.tryLease('other', 'B', 60_000)).toMatchObject({ held: true, holder: 'B', epoch: 1 });
      // Releasing by a non-holder does nothing; by the holder frees it at once.
      await store.releaseLease('leader', 'B');
      expect((await store.tryLease('leader', 'B', 60_000)).held).toBe(false);
      await store.releaseLease('leader', 'A');
      expect(await store.tryLease('leader', 'B', 60_000)).toMatchObject({ held: true, holder: 'B', epoch: 2 });
      // A lease that lapses (a short TTL) can be taken; its old holder taking it back starts a new epoch.
      expect(await store.tryLease('short', 'A', 1)).toMatchObject({ held: true, epoch: 1 });
      await new Promise((r) => setTimeout(r, 20));
      expect(await store.tryLease('short', 'B', 60_000)).toMatchObject({ held: true, holder: 'B', epoch: 2 });
      expect(await store.tryLease('short2', 'A', 1)).toMatchObject({ held: true, epoch: 1 });
      await new Promise((r) => setTimeout(r, 20));
      expect(await store.tryLease('short2', 'A', 60_000)).toMatchObject({ held: true, epoch: 2 });
    });

    it('leader lease: many contenders at once, exactly one holder', async () => {
      const { store } = await fresh();
      const results = await Promise.all(Array.from({ length: 12 }, (_, i) => store.tryLease('leader', `r${i}`, 60_000)));
      expect(results.filter((r) => r.held)).toHaveLength(1);
      const winner = results.find((r) => r.held)!.holder;
      for (const r of results) expect(r.holder).toBe(winner);
    });

    it('change log: written by the store for what replicas cache, not for hot keys; read in order; pruned', async () => {
      const { store } = await fresh();
      const start = await store.lastChange();
      expect(await store.changesSince(start, 100)).toEqual([]);
      await store.incrementMeta('policy_bundle_version');
      await store.setMeta('bundle_sequence', '3');
      await store.setMeta('admin:spiffe://t.test/x', '{}');
      await store.setMeta('admin_policy:current', '2');
      // Hot or local keys are not changes others must pick up.
      await store.setMeta('audit_frontier_x', '1');
      await store.setMeta('siem_cursor', '5');
      await store.setMeta('grant:g-1', '{}');
      await store.deleteMetaIf('admin:spiffe://t.test/x', '{}');
      const changes = await store.changesSince(start, 100);
      expect(changes.map((c) => c.topic)).toEqual(['meta', 'meta', 'meta', 'meta', 'meta']);
      expect(changes.map((c) => c.seq)).toEqual([...changes.map((c) => c.seq)].sort((x, y) => x - y));
      expect(new Set(changes.map((c) => c.seq)).size).toBe(5);
      expect(await store.lastChange()).toBe(changes[4]!.seq);
      for (const c of changes) expect(Math.abs(c.at - Date.now())).toBeLessThan(60_000);
      expect((await store.changesSince(changes[1]!.seq, 2)).map((c) => c.seq)).toEqual([changes[2]!.seq, changes[3]!.seq]);
      // Pruning keeps the newest, so lastChange never goes back.
      expect(await store.pruneChanges(Date.now() + 60_000)).toBe(4);
      expect(await store.lastChange()).toBe(changes[4]!.seq);
      expect(await store.changesSince(0, 100)).toEqual([changes[4]]);
    });

    it('entries: unique SPIFFE IDs, bytewise order, revoke once, delete records the revocation and drops unused tokens', async () => {
      const { store } = await fresh();
      await store.insertEntry(entry('e1', 'spiffe://t.test/b'));
      await store.insertEntry(entry('e2', 'spiffe://t.test/B'));
      await store.insertEntry(entry('e3', 'spiffe://t.test/a', { attributes: {} }));
      await expect(store.insertEntry(entry('e4', 'spiffe://t.test/b'))).rejects.toThrow();
      await expect(store.insertEntry(entry('e1', 'spiffe://t.test/c'))).rejects.toThrow();
      expect((await store.listEntries()).map((e) => e.spiffeId)).toEqual(['spiffe://t.test/B', 'spiffe://t.test/a', 'spiffe://t.test/b']);
      expect(await store.getEntry('e1')).toEqual(entry('e1', 'spiffe://t.test/b'));
      expect(await store.getEntryBySpiffeId('spiffe://t.test/a')).toEqual(entry('e3', 'spiffe://t.test/a', { attributes: {} }));
      expect(await store.getEntry('nope')).toBeUndefined();
      expect(await store.revokeEntry('nope', T0, 'x')).toEqual({ ok: false, reason: 'missing' });
      const r = await store.revokeEntry('e1', T0 + 5, 'stolen');
      expect(r).toEqual({ ok: true, entry: { ...entry('e1', 'spiffe://t.test/b'), revokedAt: T0 + 5, revokedReason: 'stolen' } });
      expect(await store.revokeEntry('e1', T0 + 6, 'again')).toMatchObject({ ok: false, reason: 'already', entry: { revokedAt: T0 + 5, revokedReason: 'stolen' } });
      // Tokens: the used one stays, the unused one goes with the entry.
      await store.insertJoinToken({ hash: 'h-used', entryId: 'e2', createdAt: T0, expiresAt: T0 + 1000 });
      await store.insertJoinToken({ hash: 'h-unused', entryId: 'e2', createdAt: T0, expiresAt: T0 + 1000 });
      expect(await store.consumeJoinToken('h-used', T0 + 1)).toEqual({ ok: true, entryId: 'e2' });
      expect(await store.deleteEntry('e2', T0 + 7)).toBe(true);
      expect(await store.deleteEntry('e2', T0 + 8)).toBe(false);
      expect(await store.consumeJoinToken('h-unused', T0 + 2)).toEqual({ ok: false, reason: 'unknown' });
      expect(await store.consumeJoinToken('h-used', T0 + 2)).toEqual({ ok: false, reason: 'used' });
      // Deleting a revoked entry keeps the first revocation's time and reason, now marked deleted.
      expect(await store.deleteEntry('e1', T0 + 9)).toBe(true);
      const revs = await store.listRevocations(T0, 0);
      expect(revs.map((v) => [v.entryId, v.revokedAt, v.reason, v.deleted])).toEqual([['e2', T0 + 7, 'entry deleted', true], ['e1', T0 + 5, 'stolen', true]]);
    });

    it('join tokens: unknown, expired at its expiry, used; single use under concurrency', async () => {
      const { store } = await fresh();
      await store.insertJoinToken({ hash: 'a', entryId: 'e', createdAt: T0, expiresAt: T0 + 100 });
      await expect(store.insertJoinToken({ hash: 'a', entryId: 'f', createdAt: T0, expiresAt: T0 + 100 })).rejects.toThrow();
      expect(await store.consumeJoinToken('zz', T0)).toEqual({ ok: false, reason: 'unknown' });
      expect(await store.consumeJoinToken('a', T0 + 100)).toEqual({ ok: false, reason: 'expired' });
      expect(await store.consumeJoinToken('a', T0 + 99)).toEqual({ ok: true, entryId: 'e' });
      // Used wins over expired.
      expect(await store.consumeJoinToken('a', T0 + 500)).toEqual({ ok: false, reason: 'used' });
      await store.insertJoinToken({ hash: 'race', entryId: 'r', createdAt: T0, expiresAt: T0 + 100 });
      const results = await Promise.all(Array.from({ length: 25 }, () => store.consumeJoinToken('race', T0 + 1)));
      expect(results.filter((x) => x.ok)).toEqual([{ ok: true, entryId: 'r' }]);
      expect(results.filter((x) => !x.ok)).toHaveLength(24);
      for (const x of results) if (!x.ok) expect(x.reason).toBe('used');
    });

    it('API keys: newest first (ties by id), by owner, limits; revoked once, first reason kept', async () => {
      const { store } = await fresh();
      const key = (id: string, owner: string, createdAt: number) => ({ id, hash: `h${id}`, owner, scopes: ['read', 'x:y'], createdAt, expiresAt: createdAt + 1000 });
      await store.insertApiKey(key('k2', 'alice', T0 + 1));
      await store.insertApiKey(key('k1', 'alice', T0 + 1));
      await store.insertApiKey(key('k3', 'bob', T0 + 2));
      await store.insertApiKey(key('k0', 'alice', T0));
      await expect(store.insertApiKey(key('k0', 'carol', T0))).rejects.toThrow();
      expect((await store.listApiKeys({ limit: 10 })).map((k) => k.id)).toEqual(['k3', 'k1', 'k2', 'k0']);
      expect((await store.listApiKeys({ owner: 'alice', limit: 2 })).map((k) => k.id)).toEqual(['k1', 'k2']);
      expect(await store.listApiKeys({ owner: 'nobody', limit: 5 })).toEqual([]);
      expect(await store.getApiKey('k3')).toEqual({ ...key('k3', 'bob', T0 + 2), revokedAt: null, revokedReason: null });
      expect(await store.revokeApiKey('k3', T0 + 50, 'leaked')).toMatchObject({ id: 'k3', revokedAt: T0 + 50, revokedReason: 'leaked' });
      expect(await store.revokeApiKey('k3', T0 + 60, 'again')).toMatchObject({ revokedAt: T0 + 50, revokedReason: 'leaked' });
      expect(await store.revokeApiKey('nope', T0, 'x')).toBeUndefined();
    });

    it('policy versions: numbered from 1 without gaps even when written concurrently; latest, list without text', async () => {
      const { store } = await fresh();
      expect(await store.latestPolicyVersion()).toBeUndefined();
      const p = (i: number) => ({ createdAt: T0 + i, author: `a${i}`, reason: `r${i}`, hash: `h${i}`, policies: { 'x.cedar': `permit(principal, action, resource); // ${i}` }, schema: { ns: { i } } });
      expect((await store.insertPolicyVersion(p(1))).version).toBe(1);
      const many = await Promise.all(Array.from({ length: 8 }, (_, i) => store.insertPolicyVersion(p(i + 2))));
      expect(many.map((v) => v.version).sort((a, b) => a - b)).toEqual([2, 3, 4, 5, 6, 7, 8, 9]);
      const latest = await store.latestPolicyVersion();
      expect(latest!.version).toBe(9);
      expect(await store.getPolicyVersion(1)).toEqual({ ...p(1), version: 1 });
      expect(await store.getPolicyVersion(10)).toBeUndefined();
      expect(await store.listPolicyVersions(2)).toEqual([9, 8].map((v) => {
        const m = many.find((x) => x.version === v)!;
        return { version: v, createdAt: m.createdAt, author: m.author, reason: m.reason, hash: m.hash };
      }));
    });

    it('secret policies: (id, epoch) once, newest unretired, generation compare-and-set, retire once', async () => {
      const { store } = await fresh();
      const row = (id: string, epoch: number) => ({ id, epoch, generation: 1, signed: `{"e":${epoch}}`, createdAt: T0 + epoch, retiredAt: null });
      expect(await store.insertSecretPolicy(row('db', 1))).toBe(true);
      expect(await store.insertSecretPolicy(row('db', 2))).toBe(true);
      expect(await store.insertSecretPolicy({ ...row('db', 2), signed: 'other' })).toBe(false);
      expect(await store.insertSecretPolicy(row('Ab', 1))).toBe(true);
      expect(await store.getSecretPolicy('db')).toEqual(row('db', 2));
      expect(await store.replaceSecretPolicyGeneration('db', 2, 2, 3, 'x')).toBe(false);
      expect(await store.replaceSecretPolicyGeneration('db', 2, 1, 2, '{"g":2}')).toBe(true);
      expect(await store.replaceSecretPolicyGeneration('db', 2, 1, 2, '{"g":2}')).toBe(false);
      expect(await store.retireSecretPolicy('db', 2, T0 + 9)).toBe(true);
      expect(await store.retireSecretPolicy('db', 2, T0 + 10)).toBe(false);
      expect(await store.retireSecretPolicy('db', 7, T0 + 10)).toBe(false);
      expect(await store.replaceSecretPolicyGeneration('db', 2, 2, 3, 'y')).toBe(false);
      expect(await store.getSecretPolicy('db')).toEqual(row('db', 1));
      expect(await store.getSecretPolicy('db', 2)).toEqual({ ...row('db', 2), generation: 2, signed: '{"g":2}', retiredAt: T0 + 9 });
      expect((await store.listSecretPolicies()).map((r) => `${r.id}/${r.epoch}`)).toEqual(['Ab/1', 'db/1', 'db/2']);
    });

    it('SVID serials and revocations: revoked serials, newest first, pruned after the grace period', async () => {
      const { store } = await fresh();
      await store.insertEntry(entry('e1', 'spiffe://t.test/one'));
      await store.insertEntry(entry('e2', 'spiffe://t.test/two'));
      const svid = (serial: string, entryId: string, notAfter: number) => ({ serial, entryId, spiffeId: `spiffe://t.test/${entryId}`, notAfter, issuedAt: T0 });
      await store.recordIssuedSvid(svid('0A', 'e1', T0 + 1000));
      await store.recordIssuedSvid(svid('0A', 'e2', T0 + 1));
      await store.recordIssuedSvid(svid('0B', 'e1', T0 + 3000));
      await store.recordIssuedSvid(svid('0C', 'e1', T0 + 100));
      await store.recordIssuedSvid(svid('1A', 'e2', T0 + 2000));
      expect(await store.isSerialRevoked('0A')).toBe(false);
      await store.revokeEntry('e1', T0 + 10, 'bad');
      expect(await store.isSerialRevoked('0A')).toBe(true);
      expect(await store.isSerialRevoked('1A')).toBe(false);
      await store.deleteEntry('e2', T0 + 20);
      let revs = await store.listRevocations(T0 + 500, 1000);
      expect(revs).toEqual([
        { entryId: 'e2', spiffeId: 'spiffe://t.test/two', revokedAt: T0 + 20, reason: 'entry deleted', deleted: true, serials: [{ serial: '1A', notAfter: T0 + 2000 }] },
        { entryId: 'e1', spiffeId: 'spiffe://t.test/one', revokedAt: T0 + 10, reason: 'bad', deleted: false, serials: [{ serial: '0B', notAfter: T0 + 3000 }, { serial: '0A', notAfter: T0 + 1000 }] },
      ]);
      // Past every SVID plus the grace: the deleted entry's revocation is forgotten, the revoked one kept.
      revs = await store.listRevocations(T0 + 10_000, 1000);
      expect(revs.map((v) => [v.entryId, v.serials.length])).toEqual([['e1', 0]]);
      expect(await store.isSerialRevoked('0B')).toBe(false);
    });

    it('audit: ids 1..n, queries (newest or oldest first, ranges, filters, limits), root and proofs over the records as read back', async () => {
      const { store, reopen } = await fresh();
      const head0 = await store.auditTreeHead();
      expect(head0.size).toBe(0);
      expect(head0.rootHash.equals(EMPTY_ROOT)).toBe(true);
      await store.appendAudit([]);
      await store.appendAudit(Array.from({ length: 10 }, (_, i) => rec(i + 1)));
      await store.appendAudit([rec(11, { principal: 'spiffe://t.test/p', detail: { b: 1, a: { d: [], c: 'x' } } })]);
      // Concurrent batches: still one tree, no gaps.
      await Promise.all(Array.from({ length: 6 }, (_, b) => store.appendAudit(Array.from({ length: 1 + b }, (_, k) => rec(100 + b * 10 + k)))));
      const all = await store.listAudit({ limit: 10_000 });
      expect(all.map((r) => r.id)).toEqual(Array.from({ length: 32 }, (_, i) => i + 1));
      expect(all[10]).toEqual({ id: 11, ...rec(11, { principal: 'spiffe://t.test/p', detail: { b: 1, a: { d: [], c: 'x' } } }) });
      expect(all[0]).not.toHaveProperty('principal');
      expect((await store.listAudit({ limit: 3 })).map((r) => r.id)).toEqual([30, 31, 32]);
      expect((await store.listAudit({ limit: 3, afterId: 5, oldestFirst: true })).map((r) => r.id)).toEqual([6, 7, 8]);
      expect((await store.listAudit({ limit: 3, untilId: 5 })).map((r) => r.id)).toEqual([3, 4, 5]);
      expect((await store.listAudit({ limit: 0, afterId: 31 })).map((r) => r.id)).toEqual([32]);
      const denied = all.filter((r) => r.action === 'entry.create' && r.outcome === 'denied').map((r) => r.id);
      expect(denied.length).toBeGreaterThan(3);
      expect((await store.listAudit({ action: 'entry.create', outcome: 'denied', limit: 100 })).map((r) => r.id)).toEqual(denied);
      expect((await store.listAudit({ action: 'entry.create', outcome: 'denied', limit: 2 })).map((r) => r.id)).toEqual(denied.slice(-2));
      const leaves = recomputed(all);
      const head = await store.auditTreeHead();
      expect(head.size).toBe(32);
      expect(head.rootHash.equals(rootOf(leaves))).toBe(true);
      const src = await store.auditLeafSource();
      expect(src.leafHashes(0, 32).map((h) => h.toString('hex'))).toEqual(leaves.map((h) => h.toString('hex')));
      for (const i of [0, 10, 31]) expect(verifyInclusion(leaves[i]!, i, 32, inclusionProof(src, i, 32), head.rootHash)).toBe(true);
      const root11 = rootOf(leaves.slice(0, 11));
      expect(verifyConsistency(11, 32, root11, head.rootHash, consistencyProof(src, 11, 32))).toBe(true);
      // A restart resumes the same tree.
      const again = await reopen();
      await again.appendAudit([rec(200)]);
      const after = await again.listAudit({ limit: 100 });
      expect(after.map((r) => r.id)).toEqual(Array.from({ length: 33 }, (_, i) => i + 1));
      expect((await again.auditTreeHead()).rootHash.equals(rootOf(recomputed(after)))).toBe(true);
      // Concurrent callers of a store not yet caught up get the same leaves.
      const fresh3 = await reopen();
      const sources = await Promise.all([1, 2, 3].map(() => fresh3.auditLeafSource()));
      for (const s of sources) expect(s.leafHashes(0, 33).map((h) => h.toString('hex'))).toEqual(recomputed(after).map((h) => h.toString('hex')));
      // The first store sees the other's append in its leaf source.
      expect((await store.auditLeafSource()).leafHashes(32, 33)[0]!.equals(recomputed(after)[32]!)).toBe(true);
    });

    it('audit: stored subtrees (2^8 leaves and up) equal the subtrees of the leaves', async () => {
      const { store } = await fresh();
      for (let b = 0; b < 6; b++) await store.appendAudit(Array.from({ length: 100 }, (_, i) => rec(b * 100 + i)));
      const leaves = recomputed(await store.listAudit({ limit: 10_000 }));
      const src = await store.auditLeafSource();
      const plain = { leafHashes: (s: number, e: number) => leaves.slice(s, e) };
      expect(src.subtreeHash!(8, 0)!.equals(subtreeRoot(plain, 0, 256))).toBe(true);
      expect(src.subtreeHash!(8, 1)!.equals(subtreeRoot(plain, 256, 512))).toBe(true);
      expect(src.subtreeHash!(9, 0)!.equals(subtreeRoot(plain, 0, 512))).toBe(true);
      expect(src.subtreeHash!(8, 2)).toBeUndefined();
      expect((await store.auditTreeHead()).rootHash.equals(rootOf(leaves))).toBe(true);
    });

    it('audit: a batch that fails rolls back whole', async () => {
      const { store } = await fresh();
      await store.appendAudit([rec(1)]);
      const deep: Record<string, unknown> = {};
      let cur = deep;
      for (let i = 0; i < 200; i++) cur = (cur.x = {}) as Record<string, unknown>;
      await expect(store.appendAudit([rec(2), rec(3, { detail: deep })])).rejects.toMatchObject({ code: 'TESSERA_CANONICAL_JSON_INVALID' });
      await store.appendAudit([rec(4)]);
      const all = await store.listAudit({ limit: 10 });
      expect(all.map((r) => [r.id, r.target])).toEqual([[1, 't-1'], [2, 't-4']]);
      expect((await store.auditTreeHead()).rootHash.equals(rootOf(recomputed(all)))).toBe(true);
    });

    it('decision sampling: enforcers and principals share the quota, oversized details counted', async () => {
      const { store } = await fresh();
      const recs: AuditRecord[] = [];
      for (let i = 0; i < 30; i++) recs.push(decision('spiffe://t.test/enf-a', 'spiffe://t.test/flood', i));
      for (let i = 0; i < 3; i++) recs.push(decision('spiffe://t.test/enf-a', 'spiffe://t.test/quiet', 100 + i));
      for (let i = 0; i < 2; i++) recs.push(decision('spiffe://t.test/enf-a', undefined, 200 + i));
      for (let i = 0; i < 5; i++) recs.push(decision('spiffe://t.test/enf-b', 'spiffe://t.test/x', 300 + i));
      recs.push({ ...decision('spiffe://t.test/enf-b', 'spiffe://t.test/x', 400), detail: { big: 'y'.repeat(500) } });
      recs.push(rec(1));
      await store.appendAudit(recs);
      const s = await store.sampleDecisions({ perEnforcer: 9, maxTotal: 16, maxDetailChars: 200 });
      expect(s.enforcers).toBe(2);
      expect(s.oversized).toBe(1);
      const ids = s.records.map((r) => r.id);
      expect(ids).toEqual([...ids].sort((a, b) => a - b));
      const count = (f: (r: StoredAuditRecord) => boolean) => s.records.filter(f).length;
      // 16 shared by 2: enf-a gets 8; enf-b takes what it has (5, and 1 too large).
      expect(count((r) => r.actor === 'spiffe://t.test/enf-a')).toBe(8);
      expect(count((r) => r.actor === 'spiffe://t.test/enf-b')).toBe(5);
      expect(count((r) => r.detail.principal === 'spiffe://t.test/quiet')).toBe(3);
      expect(count((r) => r.detail.principal === null)).toBe(2);
      expect(count((r) => r.detail.principal === 'spiffe://t.test/flood')).toBe(3);
      // The newest of the flood.
      expect(s.records.filter((r) => r.detail.principal === 'spiffe://t.test/flood').map((r) => r.detail.i)).toEqual([27, 28, 29]);
      expect((await store.sampleDecisions({ perEnforcer: 5, maxTotal: 0, maxDetailChars: 100 })).records).toEqual([]);
    });

    it('checkpoints and cosignatures: once per size, latest, paging; cosignatures capped, newer replaces older', async () => {
      const { store } = await fresh();
      const cp = (size: number) => ({ size, rootHash: Buffer.alloc(32, size), note: `note ${size}\n`, createdAt: T0 + size });
      expect(await store.getCheckpoint()).toBeUndefined();
      for (const n of [5, 1, 9]) expect(await store.insertCheckpoint(cp(n))).toBe(true);
      expect(await store.insertCheckpoint({ ...cp(5), note: 'other' })).toBe(false);
      expect(await store.getCheckpoint()).toEqual(cp(9));
      expect(await store.getCheckpoint(5)).toEqual(cp(5));
      expect(await store.getCheckpoint(6)).toBeUndefined();
      expect((await store.listCheckpoints(undefined, 10)).map((c) => c.size)).toEqual([1, 5, 9]);
      expect((await store.listCheckpoints(1, 1)).map((c) => c.size)).toEqual([5]);
      const cos = (witnessKey: string, timestamp: number, createdAt: number) => ({ size: 5, witnessKey, name: witnessKey.split('+')[0]!, keyId: 'abcd', timestamp, line: `— ${witnessKey} sig${timestamp}\n`, createdAt });
      expect(await store.putCosignature(cos('w2+k', 100, T0 + 1), 2)).toBe(true);
      expect(await store.putCosignature(cos('w1+k', 100, T0 + 1), 2)).toBe(true);
      expect(await store.putCosignature(cos('w3+k', 100, T0 + 2), 2)).toBe(false);
      // Known witness: accepted; a newer timestamp replaces, an older one does not.
      expect(await store.putCosignature(cos('w2+k', 200, T0 + 3), 2)).toBe(true);
      expect(await store.putCosignature(cos('w2+k', 150, T0 + 4), 2)).toBe(true);
      expect(await store.listCosignatures(5)).toEqual([cos('w1+k', 100, T0 + 1), cos('w2+k', 200, T0 + 3)]);
      expect(await store.listCosignatures(9)).toEqual([]);
      const capped = await Promise.all(Array.from({ length: 6 }, (_, i) => store.putCosignature({ ...cos(`c${i}+k`, 1, T0), size: 9 }, 3)));
      expect(capped.filter(Boolean)).toHaveLength(3);
      expect(await store.listCosignatures(9)).toHaveLength(3);
    });

    it('telemetry: stored in order, listed recent or after an id, by identity and time; pruned by count and age; edges summed', async () => {
      const { store } = await fresh();
      const rows = Array.from({ length: 8 }, (_, i) => ({ reportedBy: 'spiffe://t.test/r', receivedAt: T0 + i * 1000, window: window(`spiffe://t.test/c${i % 2}`, 'spiffe://t.test/s', T0 + i * 5000, i + 1) }));
      await store.insertTelemetry(rows.slice(0, 5), { maxRows: 100, maxAgeMs: 1e9, now: T0 });
      await store.insertTelemetry(rows.slice(5), { maxRows: 6, maxAgeMs: 1e9, now: T0 });
      const kept = await store.listTelemetry({ limit: 100 });
      expect(kept.map((r) => r.window.requests)).toEqual([3, 4, 5, 6, 7, 8]);
      expect(kept[0]).toEqual({ id: kept[0]!.id, ...rows[2] });
      expect((await store.listTelemetry({ limit: 2 })).map((r) => r.window.requests)).toEqual([7, 8]);
      expect((await store.listTelemetry({ limit: 2, after: kept[0]!.id })).map((r) => r.window.requests)).toEqual([4, 5]);
      expect((await store.listTelemetry({ limit: 100, identity: 'spiffe://t.test/c1' })).map((r) => r.window.requests)).toEqual([4, 6, 8]);
      expect((await store.listTelemetry({ limit: 100, since: T0 + 30_000 })).map((r) => r.window.requests)).toEqual([7, 8]);
      const agg = await store.aggregateTelemetryEdges(T0, T0 + 30_000);
      expect(agg.sort((a, b) => a.caller.localeCompare(b.caller))).toEqual([
        { caller: 'spiffe://t.test/c0', callee: 'spiffe://t.test/s', reporter: 'caller', callerSite: 'eu-1', calleeSite: 'us-2', windows: 2, requests: 8, denials: 4, errors: 2, bytes: 240 },
        { caller: 'spiffe://t.test/c1', callee: 'spiffe://t.test/s', reporter: 'caller', callerSite: 'eu-1', calleeSite: 'us-2', windows: 2, requests: 10, denials: 4, errors: 2, bytes: 300 },
      ]);
      await store.insertTelemetry([], { maxRows: 100, maxAgeMs: 3500, now: T0 + 7000 });
      expect((await store.listTelemetry({ limit: 100 })).map((r) => r.window.requests)).toEqual([5, 6, 7, 8]);
    });

    it('decision edges: counted per principal and enforcer, newest decisions of one edge', async () => {
      const { store } = await fresh();
      const e = 'spiffe://t.test/api';
      await store.appendAudit([
        decision(e, 'spiffe://t.test/web', 1), decision(e, 'spiffe://t.test/web', 2, 'denied'), decision(e, 'spiffe://t.test/web', 3),
        decision(e, 'spiffe://t.test/cron', 4, 'denied'), decision(e, 'spiffe://t.test/web', 5, 'success', 'spiffe://t.test/other'),
        decision(e, undefined, 6), decision(e, 'spiffe://t.test/web', 10_000),
      ]);
      const agg = await store.aggregateDecisionEdges(T0, T0 + 100);
      expect(agg.sort((a, b) => a.caller.localeCompare(b.caller))).toEqual([
        { caller: 'spiffe://t.test/cron', callee: e, allowed: 0, denied: 1 },
        { caller: 'spiffe://t.test/web', callee: e, allowed: 2, denied: 1 },
      ]);
      const edge = await store.listEdgeDecisions('spiffe://t.test/web', e, 2);
      expect(edge.map((r) => r.id)).toEqual([7, 3]);
      expect(edge[0]).toMatchObject({ principal: 'spiffe://t.test/web', action: 'decision', detail: { i: 10_000 } });
    });

    it('risk: states upserted with history, compare-and-set, non-normal first then by score', async () => {
      const { store } = await fresh();
      const id = 'spiffe://t.test/w';
      expect(await store.getRiskState(id)).toBeUndefined();
      expect(await store.putRiskState(risk(id, 'step-up', 60, T0), 'normal', { state: 'normal', since: 0 })).toBe(false);
      expect(await store.putRiskState(risk(id, 'step-up', 60, T0), 'normal')).toBe(true);
      expect(await store.putRiskState(risk(id, 'quarantined', 90, T0 + 1), 'step-up', { state: 'step-up', since: T0 + 5 })).toBe(false);
      const racing = await Promise.all([1, 2, 3].map((k) => store.putRiskState(risk(id, 'quarantined', 90 + k, T0 + 1 + k), 'step-up', { state: 'step-up', since: T0 })));
      expect(racing.filter(Boolean)).toHaveLength(1);
      expect(await store.getRiskState(id)).toMatchObject({ state: 'quarantined', until: expect.any(Number), reasons: [{ kind: 'rate' }] });
      await store.putRiskState(risk('spiffe://t.test/n1', 'normal', 40, T0), 'normal');
      await store.putRiskState(risk('spiffe://t.test/n2', 'normal', 50, T0), 'normal');
      await store.putRiskState(risk('spiffe://t.test/s', 'step-up', 10, T0), 'normal');
      expect((await store.listRiskStates(10)).map((r) => r.spiffeId)).toEqual([id, 'spiffe://t.test/s', 'spiffe://t.test/n2', 'spiffe://t.test/n1']);
      expect((await store.listRiskStates(1)).map((r) => r.spiffeId)).toEqual([id]);
      const history = await store.listRiskHistory(id, 10);
      expect(history.map((h) => [h.previous, h.state])).toEqual([['step-up', 'quarantined'], ['normal', 'step-up']]);
      expect(history[1]).toEqual({ spiffeId: id, state: 'step-up', score: 60, at: T0, until: T0 + 60_000, reasons: [{ kind: 'rate', n: 60 }], setBy: 'engine', actor: 'tessera/risk-engine', note: 'n60', previous: 'normal' });
      expect(await store.listRiskHistory(id, 1)).toHaveLength(1);
    });
  });
}
