import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { expectTesseraError } from '../../test/support/expect.js';
import { baseMul, dealRefresh, pointEquals, randomScalar, ready, refreshShares, split } from '../core/secrets/index.js';
import { combineScalars } from '../core/secrets/shamir.js';
import { KeyEncryptionKey } from '../common/kek.js';
import { ShareStore, type StoredShare } from './store.js';

beforeAll(ready);

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'tessera-ks-store-'));
  dirs.push(d);
  return d;
}

function dealt(t = 2, n = 3, policyId = 'shop.db', epoch = 1): { shares: StoredShare[]; sharing: ReturnType<typeof split> } {
  const sharing = split(randomScalar(), t, n);
  return { sharing, shares: sharing.shares.map((s) => ({ policyId, epoch, t, n, index: s.index, value: s.value, commitments: sharing.commitments })) };
}

const KEK_A = 'a'.repeat(64);
const KEK_B = 'b'.repeat(64);

describe('ShareStore', () => {
  it('round-trips a share across a restart, sealed at rest with 0600/0700 permissions', () => {
    const dir = tmp();
    const { shares } = dealt();
    const share = shares[1]!;
    const store = ShareStore.open(dir, KeyEncryptionKey.load(dir, { TESSERA_KEK: KEK_A }));
    expect(store.put(share)).toEqual({ created: true });

    const file = join(dir, 'shares', 'shop.db.1.json');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'shares')).mode & 0o777).toBe(0o700);
    const raw = readFileSync(file);
    const v = Buffer.from(share.value);
    for (const needle of [v, Buffer.from(v.toString('base64url')), Buffer.from(v.toString('base64')), Buffer.from(v.toString('hex'))]) {
      expect(raw.includes(needle)).toBe(false);
    }

    const again = ShareStore.open(dir, KeyEncryptionKey.load(dir, { TESSERA_KEK: KEK_A }));
    const got = again.get('shop.db', 1)!;
    expect(got.index).toBe(2);
    expect(got.t).toBe(2);
    expect(Buffer.from(got.value).equals(v)).toBe(true);
    expect(pointEquals(got.K, baseMul(share.value))).toBe(true);
    expect(again.get('shop.db', 2)).toBeUndefined();
    expect(again.list()).toEqual([{ policyId: 'shop.db', epoch: 1, generation: 1, t: 2, n: 3, index: 2 }]);
  });

  it('refuses to load with the wrong key-encryption key', () => {
    const dir = tmp();
    ShareStore.open(dir, KeyEncryptionKey.load(dir, { TESSERA_KEK: KEK_A })).put(dealt().shares[0]!);
    expectTesseraError(() => ShareStore.open(dir, KeyEncryptionKey.load(dir, { TESSERA_KEK: KEK_B })), 'TESSERA_KEK_INVALID');
  });

  it('refuses a share file moved to another policy or epoch (the AAD binds it)', () => {
    const dir = tmp();
    const kek = KeyEncryptionKey.load(dir, { TESSERA_KEK: KEK_A });
    ShareStore.open(dir, kek).put(dealt().shares[0]!);
    const f = join(dir, 'shares', 'shop.db.1.json');
    const o = JSON.parse(readFileSync(f, 'utf8')) as Record<string, unknown>;
    rmSync(f);
    writeFileSync(join(dir, 'shares', 'shop.db.2.json'), JSON.stringify({ ...o, epoch: 2 }), { mode: 0o600 });
    expectTesseraError(() => ShareStore.open(dir, kek), 'TESSERA_KEK_INVALID');
  });

  it('refuses a tampered share (value, index or commitments) with TESSERA_SECRET_SHARE_INVALID', () => {
    const dir = tmp();
    const store = ShareStore.open(dir, KeyEncryptionKey.load(dir, { TESSERA_KEK: KEK_A }));
    const { shares } = dealt();
    const s = shares[0]!;
    const flipped = new Uint8Array(s.value);
    flipped[0] = flipped[0]! ^ 1;
    expectTesseraError(() => store.put({ ...s, value: flipped }), 'TESSERA_SECRET_SHARE_INVALID');
    expectTesseraError(() => store.put({ ...s, index: 2 }), 'TESSERA_SECRET_SHARE_INVALID');
    expectTesseraError(() => store.put({ ...s, commitments: dealt().sharing.commitments }), 'TESSERA_SECRET_SHARE_INVALID');
    expectTesseraError(() => store.put({ ...s, commitments: s.commitments.slice(0, 1) }), 'TESSERA_SECRET_SHARE_INVALID');
    expectTesseraError(() => store.put({ ...s, policyId: '../etc' }), 'TESSERA_SECRET_SHARE_INVALID');
    expectTesseraError(() => store.put({ ...s, index: 4 }), 'TESSERA_SECRET_SHARE_INVALID');
    expect(readdirSync(join(dir, 'shares'))).toEqual([]);
  });

  it('refuses to overwrite a policy epoch with another share; the same share again is a no-op', () => {
    const dir = tmp();
    const store = ShareStore.open(dir, KeyEncryptionKey.load(dir, { TESSERA_KEK: KEK_A }));
    const { shares, sharing } = dealt();
    expect(store.put(shares[0]!)).toEqual({ created: true });
    expect(store.put({ ...shares[0]!, value: new Uint8Array(shares[0]!.value) })).toEqual({ created: false });
    expectTesseraError(() => store.put(dealt().shares[0]!), 'TESSERA_CONFLICT');
    // New shares of the same key go through a refresh, not a second install.
    const refreshed = refreshShares(sharing.shares, sharing.commitments);
    expectTesseraError(() => store.put({ ...shares[0]!, value: refreshed.shares[0]!.value, commitments: refreshed.commitments }), 'TESSERA_CONFLICT');
  });

  it('refreshes in two phases: prepared beside the current share (both answer), committed, old share gone; survives restarts', () => {
    const dir = tmp();
    const kek = KeyEncryptionKey.load(dir, { TESSERA_KEK: KEK_A });
    const stores = [1, 2, 3].map((i) => ShareStore.open(join(dir, `s${i}`), kek));
    const { shares, sharing } = dealt();
    stores.forEach((st, i) => st.put(shares[i]!));
    const deal = dealRefresh(2, 3);
    const prepared = stores.map((st, i) => st.prepareRefresh('shop.db', 1, 1, deal.deltas[i]!.value, deal.D));
    // Every server computes the same new commitments, with the same public key.
    const hex = (ps: Uint8Array[]): string[] => ps.map((p) => Buffer.from(p).toString('hex'));
    for (const p of prepared) expect(hex(p.commitments)).toEqual(hex(prepared[0]!.commitments));
    expect(pointEquals(prepared[0]!.commitments[0]!, sharing.commitments[0]!)).toBe(true);
    expect(stores[0]!.list()).toEqual([{ policyId: 'shop.db', epoch: 1, generation: 1, t: 2, n: 3, index: 1, pending: 2 }]);
    expect(readdirSync(join(dir, 's1', 'shares')).sort()).toEqual(['shop.db.1.json', 'shop.db.1.next.json']);
    expect(statSync(join(dir, 's1', 'shares', 'shop.db.1.next.json')).mode & 0o777).toBe(0o600);
    // Both generations answer while the refresh is under way; nothing else does.
    expect(stores[0]!.getGeneration('shop.db', 1, 1)?.generation).toBe(1);
    expect(stores[0]!.getGeneration('shop.db', 1, 2)?.generation).toBe(2);
    expect(stores[0]!.getGeneration('shop.db', 1, 3)).toBeUndefined();
    // A restart keeps the prepared generation.
    const reopened = ShareStore.open(join(dir, 's1'), kek);
    expect(reopened.list()[0]!.pending).toBe(2);
    // Commit needs the published commitments.
    expectTesseraError(() => reopened.commitRefresh('shop.db', 1, 2, sharing.commitments), 'TESSERA_CONFLICT');
    expectTesseraError(() => reopened.commitRefresh('shop.db', 1, 3, prepared[0]!.commitments), 'TESSERA_NOT_FOUND');
    const old = Buffer.from(reopened.get('shop.db', 1)!.value);
    expect(reopened.commitRefresh('shop.db', 1, 2, prepared[0]!.commitments)).toEqual({ committed: true });
    expect(reopened.commitRefresh('shop.db', 1, 2, prepared[0]!.commitments)).toEqual({ committed: false });
    expect(reopened.getGeneration('shop.db', 1, 1)).toBeUndefined();
    expect(readdirSync(join(dir, 's1', 'shares'))).toEqual(['shop.db.1.json']);
    const after = ShareStore.open(join(dir, 's1'), kek).get('shop.db', 1)!;
    expect(after.generation).toBe(2);
    expect(Buffer.from(after.value).equals(old)).toBe(false);
    // The new shares still recover the same key.
    stores[1]!.commitRefresh('shop.db', 1, 2, prepared[1]!.commitments);
    const k = combineScalars([{ index: 1, value: after.value }, { index: 2, value: stores[1]!.get('shop.db', 1)!.value }]);
    expect(pointEquals(baseMul(k), sharing.commitments[0]!)).toBe(true);
    // A refresh from a stale generation is refused.
    expectTesseraError(() => stores[1]!.prepareRefresh('shop.db', 1, 1, deal.deltas[1]!.value, deal.D), 'TESSERA_CONFLICT');
    expectTesseraError(() => stores[1]!.prepareRefresh('shop.db', 9, 2, deal.deltas[1]!.value, deal.D), 'TESSERA_NOT_FOUND');
  });

  it('aborts a prepared refresh, refuses a delta that does not match, and deletes an epoch', () => {
    const dir = tmp();
    const store = ShareStore.open(dir, KeyEncryptionKey.load(dir, { TESSERA_KEK: KEK_A }));
    const { shares } = dealt();
    store.put(shares[0]!);
    const deal = dealRefresh(2, 3);
    expectTesseraError(() => store.prepareRefresh('shop.db', 1, 1, deal.deltas[1]!.value, deal.D), 'TESSERA_SECRET_SHARE_INVALID');
    expect(readdirSync(join(dir, 'shares'))).toEqual(['shop.db.1.json']);
    store.prepareRefresh('shop.db', 1, 1, deal.deltas[0]!.value, deal.D);
    expect(store.abortRefresh('shop.db', 1)).toBe(true);
    expect(store.abortRefresh('shop.db', 1)).toBe(false);
    expect(store.get('shop.db', 1)!.generation).toBe(1);
    store.prepareRefresh('shop.db', 1, 1, deal.deltas[0]!.value, deal.D);
    expect(store.delete('shop.db', 1)).toBe(true);
    expect(store.delete('shop.db', 1)).toBe(false);
    expect(store.list()).toEqual([]);
    expect(readdirSync(join(dir, 'shares'))).toEqual([]);
  });

  it('refuses to start on a prepared refresh that does not follow its current share', () => {
    const dir = tmp();
    const kek = KeyEncryptionKey.load(dir, { TESSERA_KEK: KEK_A });
    const store = ShareStore.open(dir, kek);
    store.put(dealt().shares[0]!);
    const deal = dealRefresh(2, 3);
    store.prepareRefresh('shop.db', 1, 1, deal.deltas[0]!.value, deal.D);
    rmSync(join(dir, 'shares', 'shop.db.1.json'));
    expectTesseraError(() => ShareStore.open(dir, kek), 'TESSERA_SECRET_SHARE_INVALID');
  });

  it('refuses to start on a share file that is readable by others', () => {
    const dir = tmp();
    ShareStore.open(dir, KeyEncryptionKey.load(dir, { TESSERA_KEK: KEK_A })).put(dealt().shares[0]!);
    const f = join(dir, 'shares', 'shop.db.1.json');
    const text = readFileSync(f);
    rmSync(f);
    writeFileSync(f, text, { mode: 0o644 });
    expectTesseraError(() => ShareStore.open(dir, KeyEncryptionKey.load(dir, { TESSERA_KEK: KEK_A })), 'TESSERA_CONFIG_INVALID');
  });

  it('replaceCurrent (DKG commit): only over the generation the session started from, atomically, idempotent, survives a restart; deleteGeneration likewise', () => {
    const dir = tmp();
    const kek = () => KeyEncryptionKey.load(dir, { TESSERA_KEK: KEK_A });
    const store = ShareStore.open(dir, kek());
    const first = dealt(2, 3, 'shop.db', 5);
    // a new key: there must be no share yet
    expect(store.replaceCurrent({ ...first.shares[0]!, generation: 1 }, undefined)).toEqual({ committed: true });
    expect(store.replaceCurrent({ ...first.shares[0]!, value: new Uint8Array(first.shares[0]!.value), generation: 1 }, undefined)).toEqual({ committed: false });
    // a share of another key over it, claiming no current share: refused
    const other = dealt(2, 3, 'shop.db', 5);
    expectTesseraError(() => store.replaceCurrent({ ...other.shares[0]!, generation: 2 }, undefined), 'TESSERA_CONFLICT');
    expectTesseraError(() => store.replaceCurrent({ ...other.shares[0]!, generation: 2 }, 7), 'TESSERA_CONFLICT');
    // a share that does not match its commitments: refused
    expectTesseraError(() => store.replaceCurrent({ ...other.shares[0]!, commitments: first.sharing.commitments, generation: 2 }, 1), 'TESSERA_SECRET_SHARE_INVALID');
    // a dealt refresh pending: dropped by the replacement
    const { deltas, D } = dealRefresh(2, 3);
    store.prepareRefresh('shop.db', 5, 1, deltas[0]!.value, D);
    expect(store.list()[0]!.pending).toBe(2);
    const next = { ...other.shares[1]!, n: 3, generation: 2 };
    expect(store.replaceCurrent(next, 1)).toEqual({ committed: true });
    expect(store.list()).toEqual([{ policyId: 'shop.db', epoch: 5, generation: 2, t: 2, n: 3, index: 2 }]);
    expect(readdirSync(join(dir, 'shares')).sort()).toEqual(['shop.db.5.json']);
    const again = ShareStore.open(dir, kek());
    expect(again.get('shop.db', 5)!.generation).toBe(2);
    expect(Buffer.from(again.get('shop.db', 5)!.value).equals(Buffer.from(other.shares[1]!.value))).toBe(true);
    // a reshare leaving this server out
    expectTesseraError(() => again.deleteGeneration('shop.db', 5, 1), 'TESSERA_CONFLICT');
    expect(again.deleteGeneration('shop.db', 5, 2)).toBe(true);
    expect(again.deleteGeneration('shop.db', 5, 2)).toBe(false);
    expect(again.get('shop.db', 5)).toBeUndefined();
  });
});
