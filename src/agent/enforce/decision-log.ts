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
  /** Upper bound of the spill file; the oldest half is dropped when it is exceeded. Default 8 MiB. */
  maxSpillBytes?: number;
}

const SPILL = 'decisions.spill.jsonl';

/**
 * Buffers decision records and ships them in batches. Denials are always kept, allows sampled.
 * While the control plane is unreachable, batches go to a bounded JSON-lines file on disk and are
 * sent first once it is back; when the bound is hit the oldest records are dropped and counted.
 */
export class DecisionLog {
  private buffer: DecisionRecord[] = [];
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  private readonly spillPath: string;
  dropped = 0;
  shipped = 0;

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
    while (this.flushing) await this.flushing;
    this.flushing = this.doFlush().finally(() => { this.flushing = undefined; });
    await this.flushing;
  }

  get spilledBytes(): number {
    return existsSync(this.spillPath) ? statSync(this.spillPath).size : 0;
  }

  private async doFlush(): Promise<void> {
    const batch = this.buffer;
    this.buffer = [];
    try {
      if (existsSync(this.spillPath) || existsSync(`${this.spillPath}.sending`)) await this.drainSpill();
      if (batch.length > 0) {
        await this.opts.ship(batch);
        this.shipped += batch.length;
      }
    } catch {
      if (batch.length > 0) this.spill(batch);
    }
  }

  private async drainSpill(): Promise<void> {
    // Rename first so that records spilled meanwhile land in a fresh file.
    const sending = `${this.spillPath}.sending`;
    if (!existsSync(sending)) renameSync(this.spillPath, sending);
    // (a `.sending` file left by a failed attempt is sent first; newer spills follow next time)
    const lines = readFileSync(sending, 'utf8').split('\n').filter(Boolean);
    const records: DecisionRecord[] = [];
    for (const line of lines) {
      try {
        records.push(JSON.parse(line) as DecisionRecord);
      } catch {
        this.dropped += 1; // a torn last line after a crash
      }
    }
    const max = this.opts.maxBatch ?? 500;
    for (let i = 0; i < records.length; i += max) await this.opts.ship(records.slice(i, i + max));
    this.shipped += records.length;
    unlinkSync(sending);
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
