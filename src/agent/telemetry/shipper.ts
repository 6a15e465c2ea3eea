/**
 * Ships closed telemetry windows to the control plane (`POST /v1/telemetry`) in batches, like the
 * decision log: one flush in flight at a time, a bounded queue in memory while the control plane
 * is away (oldest windows dropped and counted), retries with exponential backoff, and a 429's
 * Retry-After honoured. A batch the control plane refuses as malformed or not ours (400, 403, 413)
 * would be refused forever: it is dropped and counted in `rejected`, never retried.
 *
 * The queue is in memory only: windows survive a control-plane restart or outage (up to
 * `maxQueue`), not a restart of the agent.
 */
import type { TelemetryWindow } from '../../core/risk/types.js';

export const DEFAULT_TELEMETRY_QUEUE = 10_000;
/** Windows per POST: the control plane takes up to 1000 (src/server/telemetry/service.ts). */
export const DEFAULT_TELEMETRY_BATCH = 500;
const MAX_BATCH_BYTES = 512 * 1024;

export interface TelemetryShipperOptions {
  /** Sends one batch; rejects when the control plane does not take it (errors carry `code`, and `retryAfterSeconds` on 429). */
  ship: (windows: TelemetryWindow[], dropped: number) => Promise<void>;
  maxQueue?: number;
  maxBatch?: number;
  /** First retry delay (default 1 s), doubled per failure up to maxRetryMs (default 30 s). */
  minRetryMs?: number;
  maxRetryMs?: number;
}

const REJECTED = new Set(['TESSERA_BAD_REQUEST', 'TESSERA_TELEMETRY_INVALID', 'TESSERA_FORBIDDEN', 'TESSERA_PAYLOAD_TOO_LARGE']);

export class TelemetryShipper {
  #queue: TelemetryWindow[] = [];
  #running: Promise<void> | undefined;
  #retryTimer: NodeJS.Timeout | undefined;
  #retryMs = 0;
  #stopped = false;
  /** Edge-bound drops reported by the collector, shipped with the next batch. */
  #pendingDropped = 0;
  readonly #maxQueue: number;
  readonly #maxBatch: number;
  /** Windows dropped because the queue was full (oldest first). */
  overflowed = 0;
  /** Windows the control plane refused (never retried). */
  rejected = 0;
  shipped = 0;
  /** Failed attempts (unreachable, 5xx, 429). */
  failures = 0;

  constructor(private readonly opts: TelemetryShipperOptions) {
    this.#maxQueue = opts.maxQueue ?? DEFAULT_TELEMETRY_QUEUE;
    this.#maxBatch = opts.maxBatch ?? DEFAULT_TELEMETRY_BATCH;
  }

  get queued(): number {
    return this.#queue.length;
  }

  /** Queues a window close's output and ships it (unless a flush runs or a retry waits). */
  enqueue(windows: readonly TelemetryWindow[], dropped = 0): void {
    this.#pendingDropped += dropped;
    if (windows.length === 0) return;
    for (const w of windows) this.#queue.push(w);
    const over = this.#queue.length - this.#maxQueue;
    if (over > 0) {
      this.#queue.splice(0, over);
      this.overflowed += over;
    }
    if (this.#retryTimer === undefined) void this.flush();
  }

  /** Ships everything queued; at most one flush at a time (a call during one returns it). Never throws. */
  flush(): Promise<void> {
    if (this.#running) return this.#running;
    if (this.#retryTimer) {
      clearTimeout(this.#retryTimer);
      this.#retryTimer = undefined;
    }
    this.#running = this.#run().finally(() => { this.#running = undefined; });
    return this.#running;
  }

  /** A last flush attempt, then no more retries. */
  async stop(): Promise<void> {
    this.#stopped = true;
    await this.flush();
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
  }

  async #run(): Promise<void> {
    while (this.#queue.length > 0) {
      // Taken out while in flight (enqueue may trim the queue meanwhile); put back in front on failure.
      const batch = this.#queue.splice(0, this.#batchLength());
      const dropped = this.#pendingDropped;
      try {
        await this.opts.ship(batch, dropped);
        this.shipped += batch.length;
        this.#pendingDropped -= dropped;
        this.#retryMs = 0;
      } catch (err) {
        const e = err as { code?: string; retryAfterSeconds?: number };
        if (e.code !== undefined && REJECTED.has(e.code)) {
          this.rejected += batch.length;
          continue;
        }
        this.failures++;
        this.#queue = batch.concat(this.#queue);
        const over = this.#queue.length - this.#maxQueue;
        if (over > 0) {
          this.#queue.splice(0, over);
          this.overflowed += over;
        }
        this.#scheduleRetry(e.retryAfterSeconds);
        return;
      }
    }
  }

  /**
   * Windows in the next batch: at most maxBatch, and about 512 KiB of JSON (the control plane
   * refuses bodies over 1 MiB with 413, and a refused batch is lost). SPIFFE IDs dominate a
   * window's size; the rest is under 400 bytes.
   */
  #batchLength(): number {
    let bytes = 0;
    const n = Math.min(this.#queue.length, this.#maxBatch);
    for (let i = 0; i < n; i++) {
      const w = this.#queue[i]!;
      bytes += 400 + w.caller.length + w.callee.length;
      if (bytes > MAX_BATCH_BYTES) return Math.max(1, i);
    }
    return n;
  }

  #scheduleRetry(retryAfterSeconds: number | undefined): void {
    if (this.#stopped) return;
    const max = this.opts.maxRetryMs ?? 30_000;
    this.#retryMs = Math.min(max, this.#retryMs === 0 ? (this.opts.minRetryMs ?? 1000) : this.#retryMs * 2);
    const wait = retryAfterSeconds !== undefined && Number.isFinite(retryAfterSeconds) ? Math.min(Math.max(retryAfterSeconds * 1000, this.#retryMs), 300_000) : this.#retryMs;
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      void this.flush();
    }, wait);
    this.#retryTimer.unref();
  }
}
