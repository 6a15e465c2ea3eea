/**
 * Several control-plane replicas on one store (issue 14): who does the single-writer work, and how
 * a change made through one replica reaches the others.
 *
 * LeaderLease: one lease row in the store (`Store.tryLease`, the store's clock). Every replica tries
 * to take or renew it each `renewEveryMs`; the holder runs the duties that must have one writer (the
 * CA schedule with its fenced activation, audit checkpoint signing, the risk engine and risk
 * expiry, grant expiry, federation fetches, the SIEM cursor, change-log pruning). A holder counts
 * its lease as held only until `ttlMs - marginMs` after it *sent* its last successful renewal, on
 * its own monotonic clock: a replica that cannot renew (store unreachable, a long pause, the lease
 * taken) stops those duties then — before any other replica can take the lease, which needs the
 * full `ttlMs` to lapse on the store's clock. CA activation is also fenced in the store (the epoch
 * must still be current in the transaction), so even a paused process cannot activate a CA late.
 *
 * ChangeFeed: the store's change log (`lastChange`, written by triggers in the transaction of each
 * change replicas cache) is the truth; on PostgreSQL a LISTEN connection on CHANGE_CHANNEL is the
 * doorbell that makes a replica look at once. A replica looks at the log every `pollMs` anyway, and
 * after its LISTEN connection comes back, so a missed notification costs at most `pollMs`.
 */
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import type { Logger } from '../core/log.js';
import type { LeaseFence, Store } from './store/store.js';
import { CHANGE_CHANNEL } from './store/postgres.js';

export const LEADER_LEASE = 'control-plane-leader';

export interface LeaseSettings {
  /** How long a lease lasts on the store's clock from each renewal (default 8 s). */
  ttlMs: number;
  /** How often the holder renews and others try (default 1 s). */
  renewEveryMs: number;
  /** How much earlier than `ttlMs` the holder stops counting on it (default 2 s). */
  marginMs: number;
}

// A holder counts on its lease for 6 s after sending a renewal it makes every second: five missed
// renewals (a store that does not answer, an event loop stalled on a saturated machine) before it
// steps down, and a dead leader replaced within about 8-9 s.
export const DEFAULT_LEASE_SETTINGS: LeaseSettings = { ttlMs: 8000, renewEveryMs: 1000, marginMs: 2000 };

/**
 * Emits `acquired` (epoch) when this replica becomes the leader and `lost` (reason) when it stops
 * being one; `held()` is the test every duty makes before each run.
 */
export class LeaderLease extends EventEmitter {
  readonly holder = `${hostname()}/${process.pid}/${randomBytes(6).toString('hex')}`;
  #epoch: number | undefined;
  #validUntil = 0;
  #leader: string | undefined;
  #timer: NodeJS.Timeout | undefined;
  #expiry: NodeJS.Timeout | undefined;
  #renewing: Promise<boolean> | undefined;
  #stopped = false;

  constructor(private readonly store: Store, private readonly settings: LeaseSettings, private readonly log: Logger, readonly name = LEADER_LEASE) {
    super();
    if (settings.marginMs <= 0 || settings.marginMs >= settings.ttlMs || settings.renewEveryMs >= settings.ttlMs - settings.marginMs) {
      throw new Error('lease settings: need 0 < margin < ttl and renewEvery < ttl - margin');
    }
  }

  held(): boolean {
    return this.#epoch !== undefined && performance.now() < this.#validUntil;
  }

  /** The fence for writes only the leader may make, while the lease is held. */
  fence(): LeaseFence | undefined {
    return this.held() ? { name: this.name, holder: this.holder, epoch: this.#epoch! } : undefined;
  }

  /** The holder last seen (this replica's id when it leads), if any. */
  leader(): string | undefined {
    return this.held() ? this.holder : this.#leader;
  }

  /** One attempt to take or renew the lease; true when held afterwards. Never throws. */
  renew(): Promise<boolean> {
    this.#renewing ??= this.#renew().finally(() => { this.#renewing = undefined; });
    return this.#renewing;
  }

  async #renew(): Promise<boolean> {
    if (this.#stopped) return false;
    const sent = performance.now();
    let grant;
    try {
      grant = await this.store.tryLease(this.name, this.holder, this.settings.ttlMs);
    } catch (err) {
      // Unreachable store: keep the lease until its local validity ends (the expiry timer), no longer.
      this.log.warn('leader lease: the store cannot be reached', { error: (err as Error).message });
      return this.held();
    }
    if (this.#stopped) return false;
    this.#leader = grant.holder;
    if (!grant.held) {
      if (this.#epoch !== undefined) this.#lose(`the lease is held by ${grant.holder}`);
      return false;
    }
    if (this.#epoch !== undefined && this.#epoch !== grant.epoch) this.#lose('the lease lapsed before it was renewed');
    const fresh = this.#epoch === undefined;
    this.#epoch = grant.epoch;
    this.#validUntil = sent + this.settings.ttlMs - this.settings.marginMs;
    clearTimeout(this.#expiry);
    this.#expiry = setTimeout(() => this.#lose('the lease was not renewed in time'), Math.max(0, this.#validUntil - performance.now()));
    this.#expiry.unref();
    if (fresh) {
      this.log.info('leader lease taken: this replica runs the single-writer duties', { holder: this.holder, epoch: grant.epoch });
      this.emit('acquired', grant.epoch);
    }
    return true;
  }

  #lose(reason: string): void {
    if (this.#epoch === undefined) return;
    this.#epoch = undefined;
    this.#validUntil = 0;
    clearTimeout(this.#expiry);
    this.log.warn('leader lease lost: single-writer duties stopped', { reason });
    this.emit('lost', reason);
  }

  start(): void {
    this.#timer = setInterval(() => void this.renew(), this.settings.renewEveryMs);
    this.#timer.unref();
  }

  /** Stops renewing and gives the lease up (another replica takes it at its next try). */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    await this.#renewing;
    this.#stopped = true;
    const wasHeld = this.#epoch !== undefined;
    this.#lose('stopping');
    if (wasHeld) await this.store.releaseLease(this.name, this.holder).catch(() => undefined);
  }
}

export interface ChangeFeedOptions {
  store: Store;
  /** What to do when the log moved (reload what this replica caches). */
  sync: () => Promise<void>;
  log: Logger;
  /** The PostgreSQL URL, for the LISTEN connection (none: poll only, as on SQLite). */
  listenUrl?: string;
  /** How often the log is looked at without a notification (default 250 ms). */
  pollMs?: number;
  /** Reload everything this often even when the log did not move (default 5 s). */
  fullSyncMs?: number;
}

/** Runs `sync` when the change log moves: at once on a NOTIFY, else at the next poll. */
export class ChangeFeed {
  #seen = 0;
  #running: Promise<void> | undefined;
  #again = false;
  #lastFull = 0;
  #timer: NodeJS.Timeout | undefined;
  #client: pg.Client | undefined;
  #reconnect: NodeJS.Timeout | undefined;
  #stopped = false;
  /** Notifications received (for metrics and tests). */
  notifications = 0;
  /** Times the log was found moved (a sync ran for it). */
  catchUps = 0;

  constructor(private readonly o: ChangeFeedOptions) {}

  async start(): Promise<void> {
    this.#seen = await this.o.store.lastChange();
    this.#lastFull = Date.now();
    this.#timer = setInterval(() => this.poke(), this.o.pollMs ?? 250);
    this.#timer.unref();
    if (this.o.listenUrl !== undefined) await this.#listen();
  }

  /** Looks at the log now (a sync follows if it moved); concurrent pokes fold into one more run. */
  poke(): void {
    if (this.#stopped) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = this.#check().catch((err: unknown) => this.o.log.error('change feed: sync failed', { error: String(err) }))
      .finally(() => {
        this.#running = undefined;
        if (this.#again) {
          this.#again = false;
          this.poke();
        }
      });
  }

  async #check(): Promise<void> {
    const last = await this.o.store.lastChange();
    const full = Date.now() - this.#lastFull >= (this.o.fullSyncMs ?? 5000);
    if (last === this.#seen && !full) return;
    if (last !== this.#seen) this.catchUps++;
    await this.o.sync();
    // Only after the sync: a failed sync is retried at the next poke.
    this.#seen = last;
    this.#lastFull = Date.now();
  }

  async #listen(): Promise<void> {
    const client = new pg.Client({ connectionString: this.o.listenUrl, connectionTimeoutMillis: 5000, application_name: 'tessera-change-feed' });
    const again = (why: string): void => {
      if (this.#stopped || this.#client !== client) return;
      this.#client = undefined;
      client.removeAllListeners();
      client.on('error', () => undefined);
      void client.end().catch(() => undefined);
      this.o.log.warn('change feed: LISTEN connection lost; polling the change log until it is back', { reason: why });
      this.#reconnect = setTimeout(() => void this.#listen(), 1000);
      this.#reconnect.unref();
    };
    this.#client = client;
    client.on('notification', () => {
      this.notifications++;
      this.poke();
    });
    client.on('error', (err) => again(err.message));
    client.on('end', () => again('connection ended'));
    try {
      await client.connect();
      await client.query(`LISTEN ${CHANGE_CHANNEL}`);
      // Whatever was missed while it was down is in the log.
      this.poke();
    } catch (err) {
      again((err as Error).message);
    }
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#timer);
    clearTimeout(this.#reconnect);
    const c = this.#client;
    this.#client = undefined;
    if (c) {
      c.removeAllListeners();
      c.on('error', () => undefined);
      await c.end().catch(() => undefined);
    }
    await this.#running;
  }
}
