/**
 * The agent as a witness of the control plane's audit log (issue 10): every policy-stream answer
 * carries the latest signed checkpoint and a consistency proof from the one this agent holds
 * (GET /v1/policy/bundle?witness=N); the log's key comes from the CA-signed policy bundle. The agent
 * keeps the newest checkpoint it verified in its data directory and raises an alarm, keeping it, when
 * the log shows one that contradicts it (src/core/witness.ts). What this catches: a control plane
 * (or a copy of its database) showing this agent a history that is not an extension of what it showed
 * before — a fork, a rewind, a re-signed log. What it cannot: a record the log never took, or two
 * histories shown to two groups of witnesses that never compare notes (that is what cosignatures and
 * `tessera audit witness` at a second site are for). It sees the log at most one watch period late.
 */
import { EventEmitter } from 'node:events';
import { existsSync, readFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../core/files.js';
import type { Logger } from '../core/log.js';
import { formatWitnessState, parseWitnessState, witnessStep, type WitnessAlarm, type WitnessState } from '../core/witness.js';

export const WITNESS_STATE_FILE = 'audit-witness.json';
/** Distinct bad checkpoints remembered (one alarm each); older ones may alarm again. */
const MAX_REMEMBERED_ALARMS = 256;
/** Alarm reports waiting for the control plane to take them. */
const MAX_PENDING_REPORTS = 16;

export interface WitnessOptions {
  dir: string;
  log: Logger;
  /** Sends an alarm to the control plane (POST /v1/audit/alarms); retried at the next checkpoint if it fails. */
  report?: (alarm: WitnessAlarm) => Promise<unknown>;
  now?: () => Date;
}

export interface WitnessedCheckpoint {
  size: number;
  root_hash: string;
  from: number;
}

/**
 * Events: 'checkpoint' (a newer consistent checkpoint was adopted: {@link WitnessedCheckpoint}) and
 * 'alarm' ({@link WitnessAlarm}, once per distinct bad checkpoint). `alarms` counts the alarms raised
 * (the metric `tessera_audit_witness_alarms_total`), `witnessed` the checkpoints adopted.
 */
export class Witness extends EventEmitter {
  alarms = 0;
  witnessed = 0;
  private state: WitnessState | undefined;
  private readonly seenBad = new Set<string>();
  private pending: WitnessAlarm[] = [];
  private reporting = false;
  private warnedNoKey = false;
  readonly file: string;

  constructor(private readonly opts: WitnessOptions) {
    super();
    this.file = join(opts.dir, WITNESS_STATE_FILE);
    this.state = this.load();
  }

  /** The size of the held checkpoint (0 when none): what the agent sends as `witness=`. */
  get size(): number {
    return this.state?.size ?? 0;
  }

  get held(): Readonly<WitnessState> | undefined {
    return this.state;
  }

  /**
   * Checks a checkpoint from the policy stream with the log key of the bundle in force. Never throws:
   * anything wrong is an alarm or, for a missing key, a warning.
   */
  observe(checkpoint: { note?: unknown; consistency?: unknown } | undefined, logKey: string | undefined): void {
    if (checkpoint === undefined || typeof checkpoint !== 'object' || checkpoint === null) return;
    if (logKey === undefined) {
      if (!this.warnedNoKey) this.opts.log.warn('the policy bundle names no audit log key: checkpoints are not witnessed');
      this.warnedNoKey = true;
      return;
    }
    let verdict;
    try {
      verdict = witnessStep(this.state, logKey, checkpoint.note, checkpoint.consistency, this.opts.now?.() ?? new Date());
    } catch (err) {
      this.opts.log.warn('audit checkpoint not witnessed', { error: (err as Error).message });
      return;
    }
    if (!verdict.ok) {
      this.raise(verdict.alarm);
    } else if (verdict.advanced) {
      writeFileAtomic(this.file, formatWitnessState(verdict.state), 0o600);
      this.state = verdict.state;
      this.witnessed += 1;
      const seen: WitnessedCheckpoint = { size: verdict.state.size, root_hash: verdict.state.root_hash, from: verdict.from };
      this.opts.log.info('audit checkpoint witnessed', seen as unknown as Record<string, unknown>);
      this.emit('checkpoint', seen);
    }
    this.flushReports();
  }

  private raise(alarm: WitnessAlarm): void {
    if (this.seenBad.has(alarm.note_hash)) return;
    if (this.seenBad.size >= MAX_REMEMBERED_ALARMS) this.seenBad.delete(this.seenBad.values().next().value as string);
    this.seenBad.add(alarm.note_hash);
    this.alarms += 1;
    this.opts.log.error('audit log witness alarm: keeping the held checkpoint', {
      code: 'TESSERA_AUDIT_WITNESS_ALARM', kind: alarm.kind, message: alarm.message,
      heldSize: alarm.held.size, heldRoot: alarm.held.root_hash, seenSize: alarm.seen.size, seenRoot: alarm.seen.root_hash, alarmsTotal: this.alarms,
    });
    this.emit('alarm', alarm);
    if (this.opts.report) {
      if (this.pending.length >= MAX_PENDING_REPORTS) this.pending.shift();
      this.pending.push(alarm);
    }
  }

  /** Sends waiting alarm reports, oldest first; a failure keeps the rest for the next checkpoint. */
  private flushReports(): void {
    const report = this.opts.report;
    if (!report || this.reporting || this.pending.length === 0) return;
    this.reporting = true;
    void (async () => {
      try {
        while (this.pending.length > 0) {
          await report(this.pending[0]!);
          this.pending.shift();
        }
      } catch (err) {
        this.opts.log.warn('witness alarm not yet reported to the control plane; will retry', { error: (err as Error).message, pending: this.pending.length });
      } finally {
        this.reporting = false;
      }
    })();
  }

  /** The held checkpoint, checked; a corrupt file is moved aside (and said so) and witnessing starts afresh. */
  private load(): WitnessState | undefined {
    if (!existsSync(this.file)) return undefined;
    try {
      return parseWitnessState(readFileSync(this.file, 'utf8'));
    } catch (err) {
      const aside = `${this.file}.invalid-${Date.now()}`;
      try {
        renameSync(this.file, aside);
      } catch {
        // Leave it: the next adopted checkpoint replaces it atomically.
      }
      this.opts.log.error('witness state refused; witnessing starts afresh', { code: 'TESSERA_AUDIT_WITNESS_STATE_INVALID', error: (err as Error).message, movedTo: aside });
      return undefined;
    }
  }
}
