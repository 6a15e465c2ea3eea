/**
 * LeaderLease and ChangeFeed on a real store (SQLite in a temp file): one holder among contenders;
 * a holder whose store stops answering (its renewal hangs) stops counting on the lease at
 * `ttl - margin` after its last renewal was sent, before anyone else can take it (`ttl`); a lease
 * taken over is noticed at the next renewal; a clean stop hands it over; the change feed syncs when
 * the log moves and only then (apart from the periodic full sync).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../core/log.js';
import { ChangeFeed, LeaderLease } from './replica.js';
import { SqliteStore } from './store/sqlite.js';
import type { Store } from './store/store.js';

const log = createLogger({ level: 'error' });
const SETTINGS = { ttlMs: 600, renewEveryMs: 100, marginMs: 200 };
let dir: string;
let store: SqliteStore;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'tessera-lease-'));
  store = new SqliteStore(join(dir, 'tessera.db'));
});
afterEach(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The store, except that `tryLease` can be made to hang (a store that stops answering). */
function hangable(s: Store): { store: Store; hang(): void } {
  let hung = false;
  const wrapped = new Proxy(s, {
    get(target, prop, receiver) {
      if (prop === 'tryLease') {
        return (...args: Parameters<Store['tryLease']>) => (hung ? new Promise(() => undefined) : target.tryLease(...args));
      }
      const v = Reflect.get(target, prop, receiver) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  return { store: wrapped, hang: () => { hung = true; } };
}

describe('LeaderLease', () => {
  it('one holder among contenders; the others see who leads', async () => {
    const leases = [0, 1, 2].map(() => new LeaderLease(store, SETTINGS, log));
    const held = await Promise.all(leases.map((l) => l.renew()));
    expect(held.filter(Boolean)).toHaveLength(1);
    const leader = leases.find((l) => l.held())!;
    for (const l of leases) expect(l.leader()).toBe(leader.holder);
    expect(leader.fence()).toEqual({ name: leader.name, holder: leader.holder, epoch: 1 });
    for (const l of leases.filter((x) => x !== leader)) expect(l.fence()).toBeUndefined();
    for (const l of leases) await l.stop();
  });

  it('a holder whose store hangs stops counting on the lease before another can take it', async () => {
    const h = hangable(store);
    const a = new LeaderLease(h.store, SETTINGS, log);
    const b = new LeaderLease(store, SETTINGS, log);
    expect(await a.renew()).toBe(true);
    const sentAt = Date.now();
    h.hang();
    a.start();
    const lost = new Promise<number>((resolve) => a.once('lost', () => resolve(Date.now())));
    const lostAt = await lost;
    expect(a.held()).toBe(false);
    expect(a.fence()).toBeUndefined();
    // ttl - margin (400 ms) after the last renewal was sent; the store's lease runs for ttl (600 ms).
    expect(lostAt - sentAt).toBeGreaterThanOrEqual(350);
    expect(lostAt - sentAt).toBeLessThan(600);
    expect(await b.renew()).toBe(false);
    await sleep(650 - (Date.now() - sentAt));
    expect(await b.renew()).toBe(true);
    const fence = b.fence()!;
    expect(fence.epoch).toBe(2);
    await b.stop();
  });

  it('a lease taken over (lapsed while the holder was paused) is noticed at the next renewal', async () => {
    const a = new LeaderLease(store, SETTINGS, log);
    expect(await a.renew()).toBe(true);
    const events: string[] = [];
    a.on('lost', (why: string) => events.push(why));
    // Another replica takes it as if it had lapsed.
    await store.releaseLease(a.name, a.holder);
    const b = new LeaderLease(store, SETTINGS, log);
    expect(await b.renew()).toBe(true);
    expect(await a.renew()).toBe(false);
    expect(events).toEqual([`the lease is held by ${b.holder}`]);
    await a.stop();
    await b.stop();
  });

  it('a clean stop gives the lease up: another takes it at once', async () => {
    const a = new LeaderLease(store, SETTINGS, log);
    const b = new LeaderLease(store, SETTINGS, log);
    expect(await a.renew()).toBe(true);
    expect(await b.renew()).toBe(false);
    await a.stop();
    expect(a.held()).toBe(false);
    expect(await a.renew()).toBe(false);
    expect(await b.renew()).toBe(true);
    await b.stop();
  });

  it('refuses settings where the holder could count on it past its lapse', () => {
    expect(() => new LeaderLease(store, { ttlMs: 1000, renewEveryMs: 900, marginMs: 200 }, log)).toThrow(/renewEvery/);
    expect(() => new LeaderLease(store, { ttlMs: 1000, renewEveryMs: 100, marginMs: 1000 }, log)).toThrow(/margin/);
  });
});

describe('ChangeFeed', () => {
  it('syncs when the change log moves, not otherwise', async () => {
    let syncs = 0;
    const feed = new ChangeFeed({ store, log, pollMs: 20, fullSyncMs: 60_000, sync: async () => { syncs++; } });
    await feed.start();
    await sleep(120);
    expect(syncs).toBe(0);
    await store.setMeta('siem_cursor', '9'); // not a change replicas cache
    await sleep(120);
    expect(syncs).toBe(0);
    await store.incrementMeta('policy_bundle_version');
    await sleep(120);
    expect(syncs).toBe(1);
    expect(feed.catchUps).toBe(1);
    await feed.stop();
  });

  it('a failed sync is retried at the next poll', async () => {
    let calls = 0;
    const feed = new ChangeFeed({ store, log, pollMs: 20, fullSyncMs: 60_000, sync: async () => {
      calls++;
      if (calls === 1) throw new Error('store hiccup');
    } });
    await feed.start();
    await store.incrementMeta('bundle_sequence');
    await sleep(150);
    expect(calls).toBe(2);
    await feed.stop();
  });
});
