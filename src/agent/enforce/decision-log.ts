import { appendFileSync, existsSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** One local authorization decision, as shipped to the control plane's audit table. */
export interface DecisionRecord {
  ts: number;
  principal: string;
  action: string;
  resource: string;
  context: Record<string, string | number | boolean>;
  allow: boolean;
  reasons: string[];
}

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
}

const SPILL = 'decisions.spill.jsonl';
const DEFAULT_MAX_BATCH_BYTES = 256 * 1024;

/**
 * Buffers decision records and ships them in batches. Denials are always kept, allows sampled.
 * While the control plane is unreachable, batches go to a bounded JSON-lines file on disk and are
 * sent first once it is back (retried with backoff, so they arrive even if no new decision comes);
 * when the bound is hit the oldest records are dropped and counted.
 */
export class DecisionLog {
  private buffer: DecisionRecord[] = [];
  private timer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  private retryMs = 0;
  private stopped = false;
  private readonly spillPath: string;
  dropped = 0;
  shipped = 0;
  /** Records the control plane refused as malformed (never retried). */
  rejected = 0;

  constructor(private readonly opts: DecisionLogOptions) {
    this.spillPath = join(opts.dir, SPILL);
  }

  record(r: DecisionRecord): void {
    if (r.allow && Math.random() >= (this.opts.allowSampleRate ?? 0.01)) return;
    this.buffer.push(r);
    if (this.buffer.length >= (this.opts.maxBatch ?? 500)) void this.flush();
    else if (!this.timer) {
      this.timer = setTimeout(() => void this.flush(), this.opts.flushMs ?? 1000);
      this.timer.unref();
    }
  }

  /** Ships what is buffered (and anything spilled earlier). Never throws. */
  async flush(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.retryTimer) {
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
    }
    while (this.flushing) await this.flushing;
    this.flushing = this.doFlush().finally(() => { this.flushing = undefined; });
    await this.flushing;
  }

  /**
   * A last flush, then no more timers: what cannot be shipped stays on disk for the next
   * DecisionLog on this directory (the next run of the agent), which sends it.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.flush();
  }

  get spilledBytes(): number {
    return existsSync(this.spillPath) ? statSync(this.spillPath).size : 0;
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
    const maxCount = this.opts.maxBatch ?? 500;
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
