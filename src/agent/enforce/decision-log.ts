import { appendFileSync, existsSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TesseraError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import type { DecisionRecord } from '../../core/wire/control-plane.js';

/** One local authorization decision, as shipped to the control plane's audit table (POST /v1/decisions). */
export type { DecisionRecord } from '../../core/wire/control-plane.js';

export interface DecisionLogOptions {
  /** Sends a batch; rejects when the control plane cannot take it. */
  ship: (records: DecisionRecord[]) => Promise<void>;
  /** Directory for the outage spill file. */
  dir: string;
  /** Fraction of allows recorded (denials are always recorded). Default 0.01. */
  allowSampleRate?: number;
  flushMs?: number;
  maxBatch?: number;
  /** Upper bound of one batch's JSON (the control plane refuses bodies over 1 MiB). Default 256 KiB. */
  maxBatchBytes?: number;
  /** Longest wait between retries while records wait on disk. Default 30 s. */
  maxRetryMs?: number;
  /** Upper bound of the spill file; the oldest half is dropped when it is exceeded. Default 8 MiB. */
  maxSpillBytes?: number;
  /**
   * Most records held in memory waiting to be shipped (default 10,000): under a flood of denials, or
   * while the control plane is away between retries, newer records beyond it are dropped and counted.
   */
  maxBuffer?: number;
  /** Receives a warning (at most one line per 10 s) while records are dropped for the buffer bound. */
  log?: Logger;
}

const SPILL = 'decisions.spill.jsonl';
const DEFAULT_MAX_BATCH_BYTES = 256 * 1024;
export const DEFAULT_DECISION_BUFFER = 10_000;
const OVERFLOW_WARN_MS = 10_000;

/**
 * Buffers decision records and ships them in batches. Denials are always kept, allows sampled.
 * While the control plane is unreachable, batches go to a bounded JSON-lines file on disk and are
 * sent first once it is back (retried with backoff, so they arrive even if no new decision comes);
 * when the bound is hit the oldest records are dropped and counted.
 *
 * Work per record is constant: at most one flush runs at a time (a full buffer while one runs is
 * taken by the next flush, started when it ends), and the buffer is bounded (`maxBuffer`), so a
 * flood of denials costs a push and a few comparisons per record, never a flush per record.
 */
export class DecisionLog {
  private buffer: DecisionRecord[] = [];
  private timer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private warnTimer: NodeJS.Timeout | undefined;
  /** The flush in progress. */
  private running: Promise<void> | undefined;
  /** flush() was called while one ran: one more pass before the running one resolves. */
  private again = false;
  private retryMs = 0;
  private stopped = false;
  private readonly spillPath: string;
  private readonly maxBatch: number;
  private readonly maxBuffer: number;
  /** `overflowed` when the last warning was logged. */
  private warned = 0;
  /** Records lost: the buffer bound (`overflowed`), the spill file's bound, torn spill lines. */
  dropped = 0;
  /** Records dropped because `maxBuffer` records were already waiting (included in `dropped`). */
  overflowed = 0;
  shipped = 0;
  /** Records the control plane refused as malformed (never retried). */
  rejected = 0;

  constructor(private readonly opts: DecisionLogOptions) {
    this.spillPath = join(opts.dir, SPILL);
    this.maxBatch = opts.maxBatch ?? 500;
    this.maxBuffer = opts.maxBuffer ?? DEFAULT_DECISION_BUFFER;
    if (!Number.isSafeInteger(this.maxBuffer) || this.maxBuffer < 1) throw new TesseraError('TESSERA_CONFIG_INVALID', 'decision log maxBuffer must be a positive integer');
  }

  record(r: DecisionRecord): void {
    if (this.keeps(r.allow)) this.push(r);
  }

  /**
   * Whether a decision with this outcome is to be recorded: denials always, allows with the
   * probability `allowSampleRate` (one draw per call). With {@link push}, a caller builds the record
   * only when it is kept.
   */
  keeps(allow: boolean): boolean {
    return !allow || Math.random() < (this.opts.allowSampleRate ?? 0.01);
  }

  /** Buffers a record {@link keeps} chose (no sampling here). */
  push(r: DecisionRecord): void {
    if (this.buffer.length >= this.maxBuffer) {
      this.overflow();
      return;
    }
    this.buffer.push(r);
    this.schedule();
  }

  /** Records waiting in memory. */
  get buffered(): number {
    return this.buffer.length;
  }

  /**
   * Ships what is buffered (and anything spilled earlier); resolves once the records buffered at
   * the call are shipped or spilled. Never throws. While a flush runs, a call makes it run one
   * more pass (never a second flush beside it).
   */
  flush(): Promise<void> {
    this.clearTimers();
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = this.run();
    return this.running;
  }

  /**
   * A last flush, then no more timers: what cannot be shipped stays on disk for the next
   * DecisionLog on this directory (the next run of the agent), which sends it.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.flush();
    this.clearTimers();
    if (this.warnTimer) clearTimeout(this.warnTimer);
    this.warnTimer = undefined;
  }

  get spilledBytes(): number {
    return existsSync(this.spillPath) ? statSync(this.spillPath).size : 0;
  }

  private async run(): Promise<void> {
    try {
      do {
        this.again = false;
        await this.doFlush();
      } while (this.again);
    } finally {
      this.running = undefined;
      this.schedule();
    }
  }

  /**
   * After a record or a flush: a full batch goes now, a partial one after flushMs. Nothing while a
   * flush runs (it schedules when it ends) or while a retry waits (the retry takes the buffer).
   */
  private schedule(): void {
    if (this.running || this.retryTimer || this.stopped || this.buffer.length === 0) return;
    if (this.buffer.length >= this.maxBatch) {
      void this.flush();
    } else if (!this.timer) {
      this.timer = setTimeout(() => void this.flush(), this.opts.flushMs ?? 1000);
      this.timer.unref();
    }
  }

  private clearTimers(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.retryTimer) {
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
    }
  }

  /** A record beyond maxBuffer: counted, and a warning now and then every 10 s while it goes on. */
  private overflow(): void {
    this.overflowed += 1;
    this.dropped += 1;
    if (this.warnTimer) return;
    const warn = (): void => {
      const n = this.overflowed - this.warned;
      if (n === 0) {
        this.warnTimer = undefined;
        return;
      }
      this.warned = this.overflowed;
      this.opts.log?.warn('decision log full: records dropped', { dropped: n, dropped_total: this.overflowed, max_buffer: this.maxBuffer });
      this.warnTimer = setTimeout(warn, OVERFLOW_WARN_MS);
      this.warnTimer.unref();
    };
    warn();
  }

  private async doFlush(): Promise<void> {
    const pending = this.batches(this.buffer);
    this.buffer = [];
    try {
      await this.drainSpill();
      while (pending.length > 0) {
        await this.shipOrReject(pending[0]!);
        pending.shift();
      }
      this.retryMs = 0;
    } catch {
      const rest = pending.flat();
      if (rest.length > 0) this.spill(rest);
      this.scheduleRetry();
    }
  }

  /**
   * Records wait on disk: try again later even if no new decision comes to trigger a flush
   * (backoff from flushMs up to maxRetryMs).
   */
  private scheduleRetry(): void {
    const base = this.opts.flushMs ?? 1000;
    this.retryMs = Math.min(this.opts.maxRetryMs ?? 30_000, this.retryMs === 0 ? base : this.retryMs * 2);
    if (this.stopped || this.retryTimer) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      void this.flush();
    }, this.retryMs);
    this.retryTimer.unref();
  }

  /** Batches of at most maxBatch records and about maxBatchBytes of JSON (a lone larger record goes alone). */
  private batches(records: DecisionRecord[]): DecisionRecord[][] {
    const maxCount = this.maxBatch;
    const maxBytes = this.opts.maxBatchBytes ?? DEFAULT_MAX_BATCH_BYTES;
    const out: DecisionRecord[][] = [];
    let current: DecisionRecord[] = [];
    let bytes = 0;
    for (const r of records) {
      const size = Buffer.byteLength(JSON.stringify(r), 'utf8') + 1;
      if (current.length > 0 && (current.length >= maxCount || bytes + size > maxBytes)) {
        out.push(current);
        current = [];
        bytes = 0;
      }
      current.push(r);
      bytes += size;
    }
    if (current.length > 0) out.push(current);
    return out;
  }

  /** Sends every spilled record, oldest first, until no spill file is left; throws if shipping fails. */
  private async drainSpill(): Promise<void> {
    const sending = `${this.spillPath}.sending`;
    for (;;) {
      // Rename first so that records spilled meanwhile land in a fresh file (a `.sending` file left
      // by a failed attempt is sent first). Flushes never overlap, so this loop ends.
      if (!existsSync(sending)) {
        if (!existsSync(this.spillPath)) return;
        renameSync(this.spillPath, sending);
      }
      const lines = readFileSync(sending, 'utf8').split('\n').filter(Boolean);
      const records: DecisionRecord[] = [];
      for (const line of lines) {
        try {
          records.push(JSON.parse(line) as DecisionRecord);
        } catch {
          this.dropped += 1; // a torn last line after a crash
        }
      }
      for (const batch of this.batches(records)) await this.shipOrReject(batch);
      unlinkSync(sending);
    }
  }

  /**
   * Ships one batch. A batch the control plane refuses as malformed (400/413) would be refused
   * forever and block everything behind it: it is counted in `rejected` and dropped. Any other
   * failure (unreachable, 5xx, an expired SVID) is thrown, so the batch waits on disk.
   */
  private async shipOrReject(batch: DecisionRecord[]): Promise<void> {
    try {
      await this.opts.ship(batch);
      this.shipped += batch.length;
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code !== 'TESSERA_BAD_REQUEST' && code !== 'TESSERA_PAYLOAD_TOO_LARGE') throw err;
      this.rejected += batch.length;
    }
  }

  private spill(batch: DecisionRecord[]): void {
    const max = this.opts.maxSpillBytes ?? 8 * 1024 * 1024;
    appendFileSync(this.spillPath, batch.map((r) => `${JSON.stringify(r)}\n`).join(''), { mode: 0o600 });
    if (statSync(this.spillPath).size > max) {
      const lines = readFileSync(this.spillPath, 'utf8').split('\n').filter(Boolean);
      const keep = lines.slice(Math.floor(lines.length / 2));
      this.dropped += lines.length - keep.length;
      writeFileSync(`${this.spillPath}.tmp`, keep.map((l) => `${l}\n`).join(''), { mode: 0o600 });
      renameSync(`${this.spillPath}.tmp`, this.spillPath);
    }
  }
}
