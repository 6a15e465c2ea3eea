import type { ErrorCode } from '../../core/errors.js';
import { isTesseraError, TesseraError } from '../../core/errors.js';
import type { AuditQuery, AuditRecord, Store, StoredAuditRecord } from '../store/store.js';

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
 * The part of an audit event a service may write: who and what it concerns, and the facts only the
 * service knows (why a token was refused, the serial it issued, the policies that decided). The
 * outcome is not part of it: the route marks success (`succeed()`) once it has a response to send,
 * so a service can never record a success the client did not get.
 */
export type AuditNotes = Pick<AuditEvent, 'target' | 'actor' | 'detail'>;

/** Notes that go nowhere, for callers (tests, tools) that do not audit. */
export function scratchNotes(): AuditNotes {
  return { target: '', actor: '', detail: {} };
}

/**
 * Group commit for audit records: every record produced in one turn of the event loop is written in
 * one transaction (≈ 8× the row rate of a transaction per row on SQLite), and `record()` resolves
 * only once its record is durable, so a response never leaves before its audit record is stored —
 * even if the process is killed right after. A failed write rejects its callers (the request fails
 * closed) and keeps the records for the next batch.
 */
export class AuditLog {
  private buffer: AuditRecord[] = [];
  private waiters: { resolve: () => void; reject: (err: unknown) => void }[] = [];
  private scheduled = false;
  private writing: Promise<void> = Promise.resolve();

  constructor(private readonly store: Store, private readonly opts: { onError?: (err: unknown) => void } = {}) {}

  begin(action: string, actor: string): AuditEvent {
    return new AuditEvent(action, actor);
  }

  /** Records a finished event (pass the error of a failed handler: it is recorded as denied with its code). */
  record(ev: AuditEvent, err?: unknown): Promise<void> {
    if (err !== undefined) ev.deny(isTesseraError(err) ? err.code : 'TESSERA_INTERNAL');
    this.buffer.push({ ts: Date.now(), actor: ev.actor, action: ev.action, target: ev.target, outcome: ev.outcome, code: ev.code, detail: ev.detail });
    const done = new Promise<void>((resolve, reject) => this.waiters.push({ resolve, reject }));
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => void this.flush());
    }
    return done;
  }

  /** Writes everything buffered so far; resolves when it is stored. */
  async flush(): Promise<void> {
    this.scheduled = false;
    const batch = this.buffer;
    const waiters = this.waiters;
    this.buffer = [];
    this.waiters = [];
    const previous = this.writing;
    this.writing = (async () => {
      await previous.catch(() => {});
      if (batch.length === 0) return;
      try {
        await this.store.appendAudit(batch);
        for (const w of waiters) w.resolve();
      } catch (err) {
        this.buffer = batch.concat(this.buffer);
        this.opts.onError?.(err);
        for (const w of waiters) w.reject(err);
      }
    })();
    await this.writing;
  }

  /**
   * Stores records made elsewhere (decision records shipped by enforcers) at once, in one
   * transaction of their own outside the group commit: a batch is already one write.
   */
  async append(records: readonly AuditRecord[]): Promise<void> {
    await this.store.appendAudit(records);
  }

  /**
   * The first `limit` stored records after `afterId`, oldest first, each with its Merkle leaf hash
   * (for the SIEM export). Only what is already stored: nothing is flushed, so a page never waits
   * for a write. Work and memory are bounded by `limit`.
   */
  async page(afterId: number, limit: number): Promise<{ record: StoredAuditRecord; leafHash: Buffer }[]> {
    const records = await this.store.listAudit({ afterId, limit, oldestFirst: true });
    if (records.length === 0) return [];
    // Ids are leaf positions + 1 without gaps; bounded by the last id read, so a record appended
    // meanwhile (by this or another process) cannot shift the hashes.
    const hashes = (await this.store.auditLeafSource()).leafHashes(afterId, records[records.length - 1]!.id);
    return records.map((record, i) => {
      if (record.id !== afterId + 1 + i) throw new TesseraError('TESSERA_AUDIT_STATE_INVALID', `audit record ids are not contiguous after ${afterId}`);
      return { record, leafHash: hashes[i]! };
    });
  }

  /** Reads stored records (everything recorded so far is flushed first, so a reader sees its own writes). */
  async read(query: AuditQuery): Promise<StoredAuditRecord[]> {
    await this.flush();
    return this.store.listAudit(query);
  }
}
