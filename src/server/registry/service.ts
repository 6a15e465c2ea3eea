/**
 * The registry: registration entries (who is a workload, with which attributes and lifetimes) and
 * the one-time join tokens that bind an agent to an entry. Every change that affects the policy
 * bundle (an entry created, deleted or revoked) is published through the PolicyService.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { TesseraError } from '../../core/errors.js';
import { isMemberOf, type SpiffeId } from '../../core/spiffe-id.js';
import type { AuditNotes } from '../audit/audit.js';
import type { PolicyService } from '../policy/service.js';
import type { EntryAttributes, EntryRecord, Store } from '../store/store.js';

export const JOIN_TOKEN = /^tjt_[A-Za-z0-9_-]{43}$/;
/** Lifetime of a join token when the request names none. */
const DEFAULT_TOKEN_TTL_SECONDS = 600;
/**
 * API keys are bearer credentials (not bound to a key the holder proves): an identity's keys live at
 * most its entry's `apikey_max_ttl_seconds` (default a day), and never more than a week.
 */
export const APIKEY_MAX_TTL_SECONDS = 7 * 86400;
export const APIKEY_DEFAULT_MAX_TTL_SECONDS = 86400;

export function tokenHash(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

/** A short, non-secret reference to a token for audit records and CLI output: the first hash bytes. */
export function tokenRef(hash: string): string {
  return hash.slice(0, 12);
}

/** Why a caller has no live entry (see {@link RegistryService.liveEntry}). */
export type NotLive = 'unknown' | 'revoked' | 'revoked serial';

export interface NewEntry {
  spiffeId: SpiffeId;
  selectors: string[];
  attributes: EntryAttributes;
  x509TtlSeconds?: number;
  jwtTtlSeconds?: number;
  apikeyMaxTtlSeconds?: number;
}

export interface RegistryDeps {
  store: Store;
  /** Entry changes go into the signed bundle (attributes, revocation list). */
  policy: Pick<PolicyService, 'entriesChanged'>;
  trustDomain: string;
  /** Lifetimes of an entry's SVIDs when it names none. */
  defaults: { x509TtlSeconds: number; jwtTtlSeconds: number };
  now?: () => number;
}

export class RegistryService {
  private readonly store: Store;
  private readonly policy: Pick<PolicyService, 'entriesChanged'>;
  private readonly trustDomain: string;
  private readonly defaults: { x509TtlSeconds: number; jwtTtlSeconds: number };
  private readonly now: () => number;

  constructor(deps: RegistryDeps) {
    this.store = deps.store;
    this.policy = deps.policy;
    this.trustDomain = deps.trustDomain;
    this.defaults = deps.defaults;
    this.now = deps.now ?? Date.now;
  }

  /**
   * Throws unless `id` may name a workload here: in this trust domain, with a path, and outside the
   * reserved `/tessera` tree (the control plane's own identities) and `/device` tree (enrolled devices).
   */
  checkWorkloadId(id: SpiffeId): void {
    if (!isMemberOf(id, this.trustDomain)) throw new TesseraError('TESSERA_SPIFFE_ID_INVALID', `the SPIFFE ID must be in trust domain ${this.trustDomain}`);
    // The trust-domain ID names the trust domain, not a workload (X509-SVID §5.2 refuses it in a leaf).
    if (id.path === '') throw new TesseraError('TESSERA_SPIFFE_ID_INVALID', `the SPIFFE ID needs a path naming the workload, e.g. spiffe://${this.trustDomain}/payments`);
    if (id.path === '/tessera' || id.path.startsWith('/tessera/')) throw new TesseraError('TESSERA_SPIFFE_ID_RESERVED');
    // People's principals (issue 12, src/server/people/): spiffe://<td>/user/<username>.
    if (id.path === '/user' || id.path.startsWith('/user/')) throw new TesseraError('TESSERA_SPIFFE_ID_RESERVED', 'the /user tree names people (tessera user add), not workloads');
    // Devices (issue 12) get `/device/<id>` by enrolment (src/server/devices/), never by a workload entry.
    if (id.path === '/device' || id.path.startsWith('/device/')) throw new TesseraError('TESSERA_SPIFFE_ID_RESERVED', 'the /device path tree is reserved for enrolled devices');
  }

  /** Registers a workload. TESSERA_CONFLICT if its SPIFFE ID already has an entry (revoked ones too). */
  async create(input: NewEntry): Promise<EntryRecord> {
    this.checkWorkloadId(input.spiffeId);
    const entry: EntryRecord = {
      id: randomUUID(),
      spiffeId: input.spiffeId.id,
      selectors: input.selectors,
      attributes: input.attributes,
      x509TtlSeconds: input.x509TtlSeconds ?? this.defaults.x509TtlSeconds,
      jwtTtlSeconds: input.jwtTtlSeconds ?? this.defaults.jwtTtlSeconds,
      apikeyMaxTtlSeconds: input.apikeyMaxTtlSeconds ?? APIKEY_DEFAULT_MAX_TTL_SECONDS,
      createdAt: this.now(),
    };
    if (await this.store.getEntryBySpiffeId(entry.spiffeId)) throw new TesseraError('TESSERA_CONFLICT', `an entry for ${entry.spiffeId} already exists`);
    await this.store.insertEntry(entry);
    await this.policy.entriesChanged();
    return entry;
  }

  list(): Promise<EntryRecord[]> {
    return this.store.listEntries();
  }

  /** The entry named by its id or its SPIFFE ID; TESSERA_ENTRY_NOT_FOUND otherwise. */
  async lookup(ref: string): Promise<EntryRecord> {
    if (ref.length > 2048) throw new TesseraError('TESSERA_ENTRY_NOT_FOUND');
    const entry = (await this.store.getEntry(ref)) ?? (ref.startsWith('spiffe://') ? await this.store.getEntryBySpiffeId(ref) : undefined);
    if (!entry) throw new TesseraError('TESSERA_ENTRY_NOT_FOUND');
    return entry;
  }

  /**
   * Deletes an entry; deleting revokes (its SPIFFE ID and the SVIDs it was issued go on the
   * revocation list). Returns the bundle version that carries the change.
   */
  async delete(entryId: string): Promise<number> {
    if (!(await this.store.deleteEntry(entryId, this.now()))) throw new TesseraError('TESSERA_ENTRY_NOT_FOUND');
    return this.policy.entriesChanged();
  }

  /**
   * Revokes an entry: it is kept (so its SPIFFE ID cannot be re-registered by mistake) but its
   * current and future SVIDs are refused everywhere. Revoking twice is TESSERA_CONFLICT: the first
   * revocation's time and reason stand.
   */
  async revoke(entryId: string, reason: string): Promise<{ entry: EntryRecord; bundleVersion: number }> {
    const res = await this.store.revokeEntry(entryId, this.now(), reason);
    if (!res.ok && res.reason === 'missing') throw new TesseraError('TESSERA_ENTRY_NOT_FOUND');
    if (!res.ok) throw new TesseraError('TESSERA_CONFLICT', `the entry was already revoked at ${new Date(res.entry!.revokedAt!).toISOString()}`);
    return { entry: res.entry, bundleVersion: await this.policy.entriesChanged() };
  }

  /**
   * Throws TESSERA_CONFLICT if the entry may not get a join token (it is revoked). Also enforced by
   * {@link createJoinToken}; routes call it first to keep their order of checks.
   */
  checkJoinable(entry: EntryRecord): void {
    if (entry.revokedAt) throw new TesseraError('TESSERA_CONFLICT', 'the entry is revoked: it gets no join token');
  }

  /** A new one-time join token for `entry`. Only its hash is stored; the token is returned once. */
  async createJoinToken(entry: EntryRecord, ttlSeconds = DEFAULT_TOKEN_TTL_SECONDS): Promise<{ token: string; ref: string; expiresAt: number }> {
    this.checkJoinable(entry);
    const token = `tjt_${randomBytes(32).toString('base64url')}`;
    const hash = tokenHash(token);
    const now = this.now();
    const expiresAt = now + ttlSeconds * 1000;
    await this.store.insertJoinToken({ hash, entryId: entry.id, createdAt: now, expiresAt });
    return { token, ref: tokenRef(hash), expiresAt };
  }

  /**
   * Spends a join token (once, even when what follows fails) and returns the live entry it was made
   * for. Every refusal is TESSERA_TOKEN_INVALID; `notes.detail.reason` says which (unknown, used,
   * expired, entry revoked, entry deleted). `ref` names the token in audit records.
   */
  async consumeJoinToken(token: string, notes: AuditNotes): Promise<{ entry: EntryRecord; ref: string }> {
    const hash = tokenHash(token);
    const ref = tokenRef(hash);
    notes.detail.token_ref = ref;
    const used = await this.store.consumeJoinToken(hash, this.now());
    if (!used.ok) {
      notes.detail.reason = used.reason;
      throw new TesseraError('TESSERA_TOKEN_INVALID');
    }
    const entry = await this.store.getEntry(used.entryId);
    if (!entry || entry.revokedAt) {
      notes.detail.reason = entry ? 'entry revoked' : 'entry deleted';
      throw new TesseraError('TESSERA_TOKEN_INVALID');
    }
    return { entry, ref };
  }

  /**
   * The live registration entry of an SVID holder, or why it has none: the entry must exist and not
   * be revoked, and the certificate (`serial`) must not be one issued for a revoked or deleted entry
   * (re-creating an entry with the same SPIFFE ID does not bring its old SVIDs back). DESIGN.md,
   * "Revocation and quarantine": an identity without a live entry is not a workload.
   */
  async liveEntry(spiffeId: string, serial: string): Promise<EntryRecord | NotLive> {
    const entry = await this.store.getEntryBySpiffeId(spiffeId);
    if (!entry) return 'unknown';
    if (entry.revokedAt) return 'revoked';
    if (await this.store.isSerialRevoked(serial)) return 'revoked serial';
    return entry;
  }

  /** The entry a SPIFFE ID holds now, revoked or not (API key owners). */
  bySpiffeId(spiffeId: string): Promise<EntryRecord | undefined> {
    return this.store.getEntryBySpiffeId(spiffeId);
  }
}
