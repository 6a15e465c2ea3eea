/**
 * Risk states of identities (issue 11) and their enforcement in the control plane.
 *
 * States: `normal`, `step-up` (short-lived credentials, score visible to policy), `quarantined`
 * (refused everywhere). Changes come from the risk engine (`apply(change, ENGINE)`) or an admin
 * (`tessera risk quarantine|step-up|release`); each is stored with its history, audited with its
 * reasons (`risk.quarantine`, `risk.step-up`, `risk.release`) and published in the signed policy
 * bundle's `risk` list, which agents and key servers receive through their long poll.
 *
 * Rules:
 * - A quarantine ends only by an admin's release or at its TTL. The engine may raise a state and
 *   lower one it set itself (step-up → normal) but never lowers a quarantine or an admin's step-up.
 * - The end of a TTL is audited as `risk.release` with `detail.cause = "ttl"` (one action for every
 *   way out of a state, so "who was released, and how" is one query). The leader's tick does it.
 * - A state whose TTL has passed is `normal` to every check at once, tick or not.
 */
import { TesseraError } from '../../core/errors.js';
import type { RiskChange, RiskReason, RiskState } from '../../core/risk/types.js';
import type { RiskListed } from '../../core/policy/types.js';
import { LIMITS } from '../../core/policy/types.js';
import type { AuditLog, AuditNotes } from '../audit/audit.js';
import type { RiskSetter, RiskStateRecord, Store } from '../store/store.js';

/** TTLs the step-up state imposes, and the TTL of a state the engine sets. */
export interface RiskSettings {
  /** Longest X509-SVID issued in step-up (seconds; the entry's TTL if shorter). */
  stepUpX509TtlSeconds: number;
  /** Longest JWT-SVID minted in step-up (seconds). */
  stepUpJwtTtlSeconds: number;
  /** Longest API key derived in step-up (seconds). */
  stepUpApiKeyTtlSeconds: number;
  /** How long a quarantine decided by the engine lasts unless an admin releases it sooner (ms). */
  engineQuarantineTtlMs: number;
  /** How long a step-up decided by the engine lasts (ms). */
  engineStepUpTtlMs: number;
}

export const DEFAULT_RISK_SETTINGS: Readonly<RiskSettings> = Object.freeze({
  stepUpX509TtlSeconds: 300,
  stepUpJwtTtlSeconds: 60,
  stepUpApiKeyTtlSeconds: 300,
  engineQuarantineTtlMs: 3600_000,
  engineStepUpTtlMs: 3600_000,
});

/** Bounds of a TTL given by hand: a minute to 30 days. */
export const RISK_TTL_MIN_MS = 60_000;
export const RISK_TTL_MAX_MS = 30 * 86_400_000;
/** Reasons given by hand: printable ASCII (they travel in the signed bundle), 1..256 characters. */
export const RISK_REASON = /^[\x20-\x7e]{1,256}$/;
/** Reasons (RiskReason) kept per change: the strongest signals. */
const MAX_REASONS = 16;
/** Changes listed by `risk show`. */
export const RISK_HISTORY_LIMIT = 100;

/** The actor of the engine's changes in audit records and history. */
export const ENGINE_ACTOR = 'tessera/risk-engine';

/** What an identity is now, as every check sees it (an elapsed TTL is `normal`). */
export interface RiskStanding {
  state: RiskState;
  score: number;
  until: number | null;
}

const NORMAL: RiskStanding = Object.freeze({ state: 'normal', score: 0, until: null });

/** Who asks for a change: the engine, or an admin with a TTL and a reason. */
export type RiskActor =
  | { setBy: 'engine'; ttlMs?: number }
  | { setBy: 'admin'; actor: string; ttlMs?: number; reason: string };

export type ApplyResult = { applied: true; record: RiskStateRecord } | { applied: false; why: string; record: RiskStateRecord | undefined };

export interface RiskDeps {
  store: Store;
  /** Publishes a new policy bundle (its risk list changed); the version agents will get. */
  publish: () => Promise<number>;
  audit: AuditLog;
  now: () => number;
  /** The control plane's SPIFFE ID: the actor of TTL expiries. */
  serverId: string;
  settings?: Partial<RiskSettings>;
}

const ORDER: Record<RiskState, number> = { normal: 0, 'step-up': 1, quarantined: 2 };

function clampScore(score: number): number {
  return Number.isFinite(score) ? Math.max(0, Math.min(100, Math.round(score))) : 100;
}

/** Printable ASCII of at most 256 characters: what the bundle's `reason` field accepts. */
export function bundleReason(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[^\x20-\x7e]/g, '?').slice(0, LIMITS.maxRevocationReason);
}

/** The engine's reasons as one line: the strongest signals first. */
function summarize(reasons: readonly RiskReason[]): string {
  return reasons.length === 0 ? 'risk engine' : reasons.slice(0, 4).map((r) => r.text).join('; ');
}

export class RiskService {
  readonly settings: RiskSettings;
  readonly #listeners: ((rec: RiskStateRecord, previous: RiskState) => void)[] = [];

  /** Called after every stored state change (the engine's link follows people's actions and TTLs). */
  onChange(fn: (rec: RiskStateRecord, previous: RiskState) => void): void {
    this.#listeners.push(fn);
  }

  #changed(rec: RiskStateRecord, previous: RiskState): void {
    for (const fn of this.#listeners) fn(rec, previous);
  }

  constructor(private readonly deps: RiskDeps) {
    this.settings = { ...DEFAULT_RISK_SETTINGS, ...deps.settings };
  }

  /** The effective state of `spiffeId` now: `normal` when it has none or its TTL passed. */
  async standing(spiffeId: string): Promise<RiskStanding> {
    const r = await this.deps.store.getRiskState(spiffeId);
    if (r === undefined) return NORMAL;
    if (r.state !== 'normal' && r.until !== null && r.until <= this.deps.now()) return { state: 'normal', score: r.score, until: null };
    return { state: r.state, score: r.score, until: r.until };
  }

  /**
   * Throws TESSERA_IDENTITY_QUARANTINED when `spiffeId` is quarantined (renewals, JWT-SVIDs, API
   * keys and their verification); otherwise returns its standing (step-up shortens TTLs).
   */
  async assertNotQuarantined(spiffeId: string, notes: AuditNotes): Promise<RiskStanding> {
    const s = await this.standing(spiffeId);
    if (s.state === 'quarantined') {
      notes.detail.risk = 'quarantined';
      throw new TesseraError('TESSERA_IDENTITY_QUARANTINED', `${spiffeId} is quarantined until ${new Date(s.until ?? 0).toISOString()}`);
    }
    if (s.state === 'step-up') notes.detail.risk = 'step-up';
    return s;
  }

  /** Every identity with a state or a score (non-normal first, then by score). */
  list(limit = LIMITS.maxRisk): Promise<RiskStateRecord[]> {
    return this.deps.store.listRiskStates(limit);
  }

  async show(spiffeId: string): Promise<{ state: RiskStateRecord | undefined; history: Awaited<ReturnType<Store['listRiskHistory']>> }> {
    return { state: await this.deps.store.getRiskState(spiffeId), history: await this.deps.store.listRiskHistory(spiffeId, RISK_HISTORY_LIMIT) };
  }

  /** The bundle's risk list: step-up and quarantined identities whose TTL has not passed. */
  async listed(now: number): Promise<RiskListed[]> {
    const out: RiskListed[] = [];
    for (const r of await this.deps.store.listRiskStates(LIMITS.maxRisk)) {
      if (r.state === 'normal') break; // non-normal rows come first
      if (r.until === null || r.until <= now) continue;
      out.push({ id: r.spiffeId, state: r.state, score: r.score, until: r.until, reason: bundleReason(r.note) });
    }
    return out;
  }

  /**
   * Applies a state change decided by the engine or an admin. Audits it (into `notes` when the
   * caller is a route that audits, else a record of its own) and publishes the bundle when the
   * risk list changes. The engine's changes that the rules above refuse return `applied: false`.
   */
  async apply(change: RiskChange, by: RiskActor, notes?: AuditNotes): Promise<ApplyResult> {
    const { store, now } = this.deps;
    const at = now();
    const current = await store.getRiskState(change.identity);
    const effective: RiskState = current === undefined || (current.state !== 'normal' && current.until !== null && current.until <= at) ? 'normal' : current.state;
    if (by.setBy === 'engine' && ORDER[change.state] < ORDER[effective]) {
      if (effective === 'quarantined') return { applied: false, why: 'a quarantine ends only by an admin\'s release or its TTL', record: current };
      if (current?.setBy === 'admin') return { applied: false, why: 'an admin set this state: only an admin or its TTL lifts it', record: current };
    }
    const ttlMs = change.state === 'normal' ? undefined
      : by.ttlMs ?? (change.state === 'quarantined' ? this.settings.engineQuarantineTtlMs : this.settings.engineStepUpTtlMs);
    const reasons = change.reasons.slice(0, MAX_REASONS);
    const record: RiskStateRecord = {
      spiffeId: change.identity,
      state: change.state,
      score: clampScore(change.score),
      // A refresh of the same state keeps when it began.
      since: current !== undefined && effective === change.state ? current.since : at,
      until: ttlMs === undefined ? null : at + ttlMs,
      reasons,
      setBy: by.setBy,
      actor: by.setBy === 'admin' ? by.actor : ENGINE_ACTOR,
      note: bundleReason(by.setBy === 'admin' ? by.reason : summarize(reasons)),
    };
    await store.putRiskState(record, effective);
    this.#changed(record, effective);
    // A score update of a normal identity is no state change: kept (list, history), not audited, not published.
    if (effective === 'normal' && record.state === 'normal') return { applied: true, record };
    const listedBefore = effective !== 'normal';
    const bundleVersion = listedBefore || record.state !== 'normal' ? await this.deps.publish() : undefined;
    const action = record.state === 'quarantined' ? 'risk.quarantine' : record.state === 'step-up' ? 'risk.step-up' : 'risk.release';
    await this.audit(action, record.actor, notes, (n) => {
      n.target = record.spiffeId;
      Object.assign(n.detail, {
        state: record.state, previous: effective, score: record.score, set_by: record.setBy, reason: record.note,
        ...(record.until !== null ? { until: new Date(record.until).toISOString(), ttl_seconds: Math.round((record.until - at) / 1000) } : {}),
        ...(reasons.length > 0 ? { reasons } : {}),
        ...(bundleVersion !== undefined ? { bundle_version: bundleVersion } : {}),
      });
    });
    return { applied: true, record };
  }

  /**
   * Ends every step-up and quarantine whose TTL has passed (the leader's tick): back to `normal`
   * with its score kept, one `risk.release` record each with `detail.cause = "ttl"`. Returns how
   * many ended.
   */
  async expire(): Promise<number> {
    const { store, now } = this.deps;
    const at = now();
    let ended = 0;
    for (const r of await store.listRiskStates(LIMITS.maxRisk)) {
      if (r.state === 'normal') break;
      if (r.until === null || r.until > at) continue;
      const next: RiskStateRecord = { ...r, state: 'normal', since: at, until: null, reasons: [], setBy: 'expiry' satisfies RiskSetter, actor: this.deps.serverId, note: `${r.state} TTL ended` };
      // Compare-and-set: an admin's change meanwhile wins.
      if (!(await store.putRiskState(next, r.state, { state: r.state, since: r.since }))) continue;
      this.#changed(next, r.state);
      ended++;
      await this.audit('risk.release', this.deps.serverId, undefined, (n) => {
        n.target = r.spiffeId;
        Object.assign(n.detail, { state: 'normal', previous: r.state, cause: 'ttl', score: r.score, until: new Date(r.until!).toISOString(), set_by: 'expiry', reason: r.note });
      });
    }
    if (ended > 0) await this.deps.publish();
    return ended;
  }

  /** Fills `notes` (a route's audit event) or records an event of the service's own. */
  private async audit(action: string, actor: string, notes: AuditNotes | undefined, fill: (n: AuditNotes) => void): Promise<void> {
    if (notes !== undefined) {
      fill(notes);
      return;
    }
    const ev = this.deps.audit.begin(action, actor);
    fill(ev);
    ev.succeed();
    await this.deps.audit.record(ev);
  }
}
