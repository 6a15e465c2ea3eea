import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { expectTesseraError } from '../../test/support/expect.js';
import { baseMul, pointEquals, randomScalar, ready, refreshShares, split } from '../core/secrets/index.js';
import { KeyEncryptionKey } from '../server/ca/kek.js';
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
    expect(again.list()).toEqual([{ policyId: 'shop.db', epoch: 1, t: 2, n: 3, index: 2 }]);
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

  it('refuses to overwrite a policy epoch with another key, accepts a refresh of the same key', () => {
    const dir = tmp();
    const store = ShareStore.open(dir, KeyEncryptionKey.load(dir, { TESSERA_KEK: KEK_A }));
    const { shares, sharing } = dealt();
    store.put(shares[0]!);
    expectTesseraError(() => store.put(dealt().shares[0]!), 'TESSERA_CONFLICT');
    const refreshed = refreshShares(sharing.shares, sharing.commitments);
    expect(pointEquals(refreshed.commitments[0]!, sharing.commitments[0]!)).toBe(true);
    const r0 = refreshed.shares[0]!;
    expect(store.put({ ...shares[0]!, value: r0.value, commitments: refreshed.commitments })).toEqual({ created: false });
    const again = ShareStore.open(dir, KeyEncryptionKey.load(dir, { TESSERA_KEK: KEK_A }));
    expect(Buffer.from(again.get('shop.db', 1)!.value).equals(Buffer.from(r0.value))).toBe(true);
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
});
