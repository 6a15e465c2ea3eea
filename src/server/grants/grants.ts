/**
 * Just-in-time grants with a two-person rule: one admin requests a grant (principal, action,
 * resource, duration, optional scheduled start, reason), another approves or denies it. An approved
 * grant goes into the signed policy bundle as a template-linked permit carrying its own window
 * (src/core/policy/grants.ts); its clock starts at approval, or at the scheduled start if later,
 * never at the request. Pending requests lapse after PENDING_TTL; approved grants leave the bundle
 * once expired (agents stop honouring them at expiry by their own clock anyway). Every step is
 * audited (`grant.request`, `grant.approve`, `grant.deny`, `grant.revoke`, `grant.expire`).
 *
 * Stored as one meta row per grant (`grant:<id>`), changed by compare-and-set so that two admins
 * (or two processes) racing on the same grant cannot both win. Ended grants are deleted after
 * GRANT_RETENTION_MS (`tessera server --grant-retention`).
 */
import { randomBytes } from 'node:crypto';
import { TesseraError } from '../../core/errors.js';
import { MAX_GRANT_SECONDS, type BundleGrant } from '../../core/policy/grants.js';
import { isPolicyAction, POLICY_ACTIONS, type PolicyAction } from '../../core/policy/types.js';
import { isSpiffeId, normalizeSpiffeId } from '../../core/spiffe-id.js';
import type { Store } from '../store/store.js';

const PREFIX = 'grant:';
/** A request not approved (or denied) within this time lapses. */
export const PENDING_TTL_MS = 24 * 3600_000;
/** The shortest grant an admin may request (a server option may lower it for tests). */
export const MIN_GRANT_SECONDS = 60;
/** How far ahead a start may be scheduled. */
export const MAX_SCHEDULE_AHEAD_MS = 30 * 86_400_000;
/**
 * Ended grants (expired, denied, revoked) are kept this long after they ended, for `grant list`, then
 * deleted from the store by the leader's sweep; the audit log keeps every step of their history.
 */
export const GRANT_RETENTION_MS = 30 * 86_400_000;
/** The leader deletes ended grants past their retention at most this often (a full listing each time). */
const PRUNE_EVERY_MS = 60_000;
/** Most grants kept pending or in force at once. */
export const MAX_OPEN_GRANTS = 1000;
const REASON = /^[\x20-\x7e]{1,256}$/;
/** A Cedar entity reference to a workload: `Tessera::Workload::"spiffe://..."`. */
const ENTITY_REF = /^Tessera::Workload::"([^"\\]+)"$/;

export type GrantState = 'pending' | 'approved' | 'denied' | 'revoked' | 'expired';
/** What `grant list` shows: an approved grant is `scheduled` before its start, `active` in its window. */
export type GrantView = 'pending' | 'scheduled' | 'active' | 'expired' | 'denied' | 'revoked';
export const GRANT_VIEWS: readonly GrantView[] = ['pending', 'scheduled', 'active', 'expired', 'denied', 'revoked'];

export interface GrantRecord {
  id: string;
  principal: string;
  action: PolicyAction;
  resource: string;
  durationSeconds: number;
  /** Scheduled start (ms), if the requester asked for one. */
  requestedStart: number | null;
  reason: string;
  requestedBy: string;
  requestedAt: number;
  state: GrantState;
  /** Window in seconds since the epoch, set at approval. */
  start?: number;
  expiry?: number;
  decidedBy?: string;
  decidedAt?: number;
  denyReason?: string;
  revokedBy?: string;
  revokedAt?: number;
  revokeReason?: string;
  expiredAt?: number;
}

export interface GrantRequest {
  principal: string;
  action: string;
  resource: string;
  durationSeconds: number;
  /** ISO 8601 time, in the future. */
  start?: string;
  reason: string;
}

function invalid(message: string): TesseraError {
  return new TesseraError('TESSERA_GRANT_INVALID', message);
}

/** A SPIFFE ID or a Cedar workload reference, as its normalized SPIFFE ID. */
function workload(v: string, what: string): string {
  const m = ENTITY_REF.exec(v);
  const id = m ? m[1]! : v;
  let out: string | undefined;
  try {
    if (id.length <= 2048) out = normalizeSpiffeId(id);
  } catch {
    out = undefined;
  }
  if (out === undefined || !isSpiffeId(out)) throw invalid(`${what} must be a SPIFFE ID or Tessera::Workload::"<SPIFFE ID>"`);
  return out;
}

export class GrantService {
  #prunedAt = -Infinity;

  constructor(private readonly store: Store, private readonly opts: { now: () => number; minSeconds: number; changed: () => Promise<number>; retentionMs?: number }) {}

  view(g: GrantRecord, now = this.opts.now()): GrantView {
    // A lapsed request is expired as soon as it lapses, not only once the leader's sweep marks it.
    if (g.state === 'pending') return now >= g.requestedAt + PENDING_TTL_MS ? 'expired' : 'pending';
    if (g.state !== 'approved') return g.state;
    const s = Math.floor(now / 1000);
    if (s >= g.expiry!) return 'expired';
    return s < g.start! ? 'scheduled' : 'active';
  }

  async list(): Promise<GrantRecord[]> {
    return (await this.store.listMeta(PREFIX)).map((r) => JSON.parse(r.value) as GrantRecord);
  }

  async get(id: string): Promise<GrantRecord> {
    const v = await this.store.getMeta(PREFIX + id);
    if (v === undefined || !/^g-[0-9a-f]{16}$/.test(id)) throw new TesseraError('TESSERA_NOT_FOUND', `no grant ${id.slice(0, 64)}`);
    return JSON.parse(v) as GrantRecord;
  }

  /** Checks and stores a request (pending). */
  async request(req: GrantRequest, by: string): Promise<GrantRecord> {
    const now = this.opts.now();
    const principal = workload(req.principal, 'principal');
    const resource = workload(req.resource, 'resource');
    if (!isPolicyAction(req.action)) throw invalid(`action must be one of ${POLICY_ACTIONS.join(', ')}`);
    const d = req.durationSeconds;
    if (!Number.isSafeInteger(d) || d < this.opts.minSeconds || d > MAX_GRANT_SECONDS) {
      throw invalid(`duration must be ${this.opts.minSeconds} s to ${MAX_GRANT_SECONDS} s (7 days)`);
    }
    let requestedStart: number | null = null;
    if (req.start !== undefined) {
      const t = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?(Z|[+-]\d{2}:\d{2})$/.test(req.start) ? Date.parse(req.start) : NaN;
      if (!Number.isFinite(t)) throw invalid('start must be an ISO 8601 time with a zone (2026-01-02T09:00:00Z)');
      if (t <= now) throw invalid('start must be in the future');
      if (t > now + MAX_SCHEDULE_AHEAD_MS) throw invalid('start must be within 30 days');
      requestedStart = t;
    }
    if (!REASON.test(req.reason)) throw invalid('reason must be 1..256 printable characters');
    const open = (await this.list()).filter((g) => g.state === 'pending' || g.state === 'approved').length;
    if (open >= MAX_OPEN_GRANTS) throw new TesseraError('TESSERA_RATE_LIMITED', `${MAX_OPEN_GRANTS} grants are pending or in force: revoke some first`);
    const g: GrantRecord = {
      id: `g-${randomBytes(8).toString('hex')}`, principal, action: req.action, resource, durationSeconds: d, requestedStart,
      reason: req.reason, requestedBy: by, requestedAt: now, state: 'pending',
    };
    await this.store.setMeta(PREFIX + g.id, JSON.stringify(g));
    return g;
  }

  /** Approves a pending grant: by an admin other than its requester. The clock starts now, or at the scheduled start. */
  async approve(id: string, by: string): Promise<{ grant: GrantRecord; bundleVersion: number }> {
    const { old, g } = await this.pending(id, by, 'approve');
    const now = this.opts.now();
    const start = Math.max(Math.floor(now / 1000), g.requestedStart !== null ? Math.ceil(g.requestedStart / 1000) : 0);
    const next: GrantRecord = { ...g, state: 'approved', decidedBy: by, decidedAt: now, start, expiry: start + g.durationSeconds };
    await this.swap(id, old, next);
    return { grant: next, bundleVersion: await this.opts.changed() };
  }

  async deny(id: string, by: string, reason: string): Promise<GrantRecord> {
    if (!REASON.test(reason)) throw invalid('reason must be 1..256 printable characters');
    const { old, g } = await this.pending(id, by, 'deny');
    const next: GrantRecord = { ...g, state: 'denied', decidedBy: by, decidedAt: this.opts.now(), denyReason: reason };
    await this.swap(id, old, next);
    return next;
  }

  /** Revokes a pending or approved grant (any admin): it leaves the next bundle. */
  async revoke(id: string, by: string, reason: string): Promise<{ grant: GrantRecord; bundleVersion: number | undefined }> {
    if (!REASON.test(reason)) throw invalid('reason must be 1..256 printable characters');
    const g = await this.get(id);
    const old = JSON.stringify(g);
    const v = this.view(g);
    if (v !== 'pending' && v !== 'scheduled' && v !== 'active') throw new TesseraError('TESSERA_GRANT_STATE', `grant ${id} is ${v}: nothing to revoke`);
    const next: GrantRecord = { ...g, state: 'revoked', revokedBy: by, revokedAt: this.opts.now(), revokeReason: reason };
    await this.swap(id, old, next);
    return { grant: next, bundleVersion: g.state === 'approved' ? await this.opts.changed() : undefined };
  }

  /**
   * Marks lapsed requests and ended grants `expired` and returns them (the caller audits each);
   * publishes a bundle without the ended grants. Run by the leader every tick.
   */
  async sweep(): Promise<GrantRecord[]> {
    const now = this.opts.now();
    const out: GrantRecord[] = [];
    let ended = false;
    for (const g of await this.list()) {
      const lapsed = g.state === 'pending' && now >= g.requestedAt + PENDING_TTL_MS;
      const over = g.state === 'approved' && Math.floor(now / 1000) >= g.expiry!;
      if (!lapsed && !over) continue;
      const next: GrantRecord = { ...g, state: 'expired', expiredAt: now };
      if (!(await this.store.replaceMeta(PREFIX + g.id, JSON.stringify(g), JSON.stringify(next)))) continue;
      if (over) ended = true;
      out.push(next);
    }
    if (ended) await this.opts.changed();
    return out;
  }

  /**
   * Deletes ended grants (expired, denied, revoked) that ended more than the retention ago and returns
   * them; at most once a minute unless `force`. Compare and delete: a grant changed meanwhile stays.
   */
  async prune(force = false): Promise<GrantRecord[]> {
    const now = this.opts.now();
    if (!force && now - this.#prunedAt < PRUNE_EVERY_MS) return [];
    this.#prunedAt = now;
    const keepFrom = now - (this.opts.retentionMs ?? GRANT_RETENTION_MS);
    const out: GrantRecord[] = [];
    for (const row of await this.store.listMeta(PREFIX)) {
      const g = JSON.parse(row.value) as GrantRecord;
      const ended = endedAt(g);
      if (ended === undefined || ended > keepFrom) continue;
      if (await this.store.deleteMetaIf(row.key, row.value)) out.push(g);
    }
    return out;
  }

  /** The grants the bundle carries: approved, not yet expired. */
  async forBundle(now: number): Promise<BundleGrant[]> {
    const s = Math.floor(now / 1000);
    return (await this.list()).filter((g) => g.state === 'approved' && g.expiry! > s)
      .map((g) => ({ id: g.id, principal: g.principal, action: g.action, resource: g.resource, start: g.start!, expiry: g.expiry! }));
  }

  private async pending(id: string, by: string, step: 'approve' | 'deny'): Promise<{ old: string; g: GrantRecord }> {
    const g = await this.get(id);
    if (g.requestedBy === by) throw new TesseraError('TESSERA_GRANT_SELF_APPROVAL', `${by} requested grant ${id}: another admin must ${step} it`);
    const lapsed = g.state === 'pending' && this.opts.now() >= g.requestedAt + PENDING_TTL_MS;
    if (g.state !== 'pending' || lapsed) throw new TesseraError('TESSERA_GRANT_STATE', `grant ${id} is ${lapsed ? 'expired' : this.view(g)}, not pending`);
    return { old: JSON.stringify(g), g };
  }

  private async swap(id: string, old: string, next: GrantRecord): Promise<void> {
    if (!(await this.store.replaceMeta(PREFIX + id, old, JSON.stringify(next)))) throw new TesseraError('TESSERA_GRANT_STATE', `grant ${id} changed meanwhile`);
  }
}

/** When an ended grant ended (ms); undefined for one pending or approved (the sweep ends those first). */
export function endedAt(g: GrantRecord): number | undefined {
  switch (g.state) {
    case 'expired': return g.expiredAt ?? g.requestedAt;
    case 'denied': return g.decidedAt ?? g.requestedAt;
    case 'revoked': return g.revokedAt ?? g.requestedAt;
    default: return undefined;
  }
}

/** The JSON view of a grant (API and `grant list --json`). */
export function grantView(g: GrantRecord, state: GrantView): Record<string, unknown> {
  const iso = (ms: number | undefined): string | null => (ms === undefined ? null : new Date(ms).toISOString());
  return {
    id: g.id, state, principal: g.principal, action: g.action, resource: g.resource, duration_seconds: g.durationSeconds,
    requested_start: g.requestedStart === null ? null : iso(g.requestedStart), reason: g.reason,
    requested_by: g.requestedBy, requested_at: iso(g.requestedAt),
    start: g.start === undefined ? null : iso(g.start * 1000), expiry: g.expiry === undefined ? null : iso(g.expiry * 1000),
    decided_by: g.decidedBy ?? null, decided_at: iso(g.decidedAt), deny_reason: g.denyReason ?? null,
    revoked_by: g.revokedBy ?? null, revoked_at: iso(g.revokedAt), revoke_reason: g.revokeReason ?? null, expired_at: iso(g.expiredAt),
  };
}
