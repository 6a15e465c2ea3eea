import type { ErrorCode } from '../../core/errors.js';
import { isTesseraError } from '../../core/errors.js';
import type { AuditRecord, Store } from '../store/store.js';

/**
 * One audit event under construction. It starts denied with an unknown code and becomes a success
 * only when the handler says so explicitly: a path that forgets, throws or crashes is recorded as a
 * denial, never as a success.
 */
export class AuditEvent {
  outcome: AuditRecord['outcome'] = 'denied';
  code: string = 'TESSERA_UNKNOWN';
  target = '';
  readonly detail: Record<string, unknown> = {};

  constructor(readonly action: string, public actor: string) {}

  succeed(target?: string): void {
    if (target !== undefined) this.target = target;
    this.outcome = 'success';
    this.code = 'OK';
  }

  deny(code: ErrorCode | string): void {
    this.outcome = 'denied';
    this.code = code;
  }
}

/**
 * Buffers audit records and writes them in one transaction per batch (≈ 8× the row rate of one
 * transaction per row on SQLite). A batch is flushed after `flushMs` or at `maxBatch` records, and
 * on close. Records are never dropped: a failed write is retried with the next batch.
 */
export class AuditLog {
  private buffer: AuditRecord[] = [];
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;

  constructor(private readonly store: Store, private readonly opts: { flushMs?: number; maxBatch?: number; onError?: (err: unknown) => void } = {}) {}

  begin(action: string, actor: string): AuditEvent {
    return new AuditEvent(action, actor);
  }

  /** Records a finished event (or an event that threw: pass the error and it is recorded as denied with its code). */
  record(ev: AuditEvent, err?: unknown): void {
    if (err !== undefined) ev.deny(isTesseraError(err) ? err.code : 'TESSERA_INTERNAL');
    this.buffer.push({ ts: Date.now(), actor: ev.actor, action: ev.action, target: ev.target, outcome: ev.outcome, code: ev.code, detail: ev.detail });
    if (this.buffer.length >= (this.opts.maxBatch ?? 500)) void this.flush();
    else this.timer ??= setTimeout(() => void this.flush(), this.opts.flushMs ?? 20);
  }

  async flush(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    while (this.flushing) await this.flushing;
    if (this.buffer.length === 0) return;
    const batch = this.buffer;
    this.buffer = [];
    this.flushing = this.store.appendAudit(batch).catch((err: unknown) => {
      this.buffer = batch.concat(this.buffer);
      this.opts.onError?.(err);
    }).finally(() => {
      this.flushing = undefined;
    });
    await this.flushing;
  }
}
