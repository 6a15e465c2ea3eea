/**
 * Scoped, expiring API keys derived from an SVID, for systems that only understand bearer keys.
 * Each scope is a Cedar `credential:derive` decision (default deny); the lifetime is bounded by the
 * owner's entry. The key is shown once; the store keeps its id and the SHA-256 of its secret part.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { TesseraError } from '../../core/errors.js';
import type { AuditNotes } from '../audit/audit.js';
import type { RegistryService } from '../registry/service.js';
import type { ApiKeyRecord, EntryRecord, Store } from '../store/store.js';
import { authorizeDerive, riskStanding, type DeriveDeps } from './derive.js';

const API_KEY = /^tak_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;
/** Lifetime of a key when the request names none: a day, or less if the entry's bound is lower. */
const DEFAULT_TTL_SECONDS = 86400;

export interface CredentialDeps extends DeriveDeps {
  store: Store;
  registry: Pick<RegistryService, 'bySpiffeId'>;
}

function hashSecret(secret: string): Buffer {
  return createHash('sha256').update(secret).digest();
}

/**
 * Why a key that matched its secret is no longer good, or undefined if it is. The owner must still
 * hold the entry it held when the key was made (deleted, revoked, or deleted and created again all
 * end its keys), and a lowered entry bound shortens keys already issued.
 */
export function apiKeyRefusal(rec: ApiKeyRecord, owner: EntryRecord | undefined, now: number): string | undefined {
  if (rec.revokedAt) return 'revoked';
  if (!owner) return 'owner_deleted';
  if (owner.revokedAt) return 'owner_revoked';
  if (owner.createdAt > rec.createdAt) return 'owner_replaced';
  if (Math.min(rec.expiresAt, rec.createdAt + owner.apikeyMaxTtlSeconds * 1000) <= now) return 'expired';
  return undefined;
}

export class CredentialService {
  constructor(private readonly deps: CredentialDeps) {}

  /**
   * A new API key for `owner` (holding live `entry`) carrying `scopes`, if policy allows each. A
   * lifetime above the entry's bound is refused rather than clipped: a caller that asked for a
   * month must not believe it holds one.
   */
  async create(owner: string, entry: EntryRecord, scopes: string[], ttlSeconds: number | undefined, notes: AuditNotes): Promise<{ apiKey: string; id: string; expiresAt: number }> {
    const standing = await riskStanding(this.deps, notes, owner);
    let ttl = ttlSeconds ?? Math.min(DEFAULT_TTL_SECONDS, entry.apikeyMaxTtlSeconds);
    // Step-up: the shortest lifetime (clipped, not refused: the answer's expires_at says so).
    if (standing.state === 'step-up') ttl = Math.min(ttl, this.deps.risk!.settings.stepUpApiKeyTtlSeconds);
    notes.detail.scopes = scopes;
    notes.detail.ttl_seconds = ttl;
    if (ttl > entry.apikeyMaxTtlSeconds) {
      notes.detail.reason = 'ttl';
      throw new TesseraError('TESSERA_CREDENTIAL_DENIED', `ttl_seconds ${ttl} is above this identity's API key bound of ${entry.apikeyMaxTtlSeconds} seconds`);
    }
    await authorizeDerive(this.deps, notes, owner, 'apikey', scopes, ttl, standing.score);
    const id = randomBytes(8).toString('hex');
    const secret = randomBytes(32).toString('base64url');
    const now = this.deps.now();
    const expiresAt = now + ttl * 1000;
    await this.deps.store.insertApiKey({ id, hash: hashSecret(secret).toString('hex'), owner, scopes, createdAt: now, expiresAt });
    notes.detail.key_id = id;
    return { apiKey: `tak_${id}_${secret}`, id, expiresAt };
  }

  /**
   * The record of a presented key if it is good (and carries `scope`, when given). Every bad key
   * gets the same TESSERA_APIKEY_INVALID (say as little as possible); `notes.detail.reason` says why.
   * A good key without the scope is TESSERA_FORBIDDEN.
   */
  async verify(key: string, scope: string | undefined, notes: AuditNotes): Promise<ApiKeyRecord> {
    const { store, registry } = this.deps;
    const m = API_KEY.exec(key);
    const rec = m ? await store.getApiKey(m[1]!) : undefined;
    const now = this.deps.now();
    let why: string | undefined;
    if (!m) why = 'malformed';
    else if (!rec) why = 'unknown';
    else if (!timingSafeEqual(hashSecret(m[2]!), Buffer.from(rec.hash, 'hex'))) why = 'secret';
    else why = apiKeyRefusal(rec, await registry.bySpiffeId(rec.owner), now);
    if (m) notes.detail.key_id = m[1];
    if (why !== undefined || !rec) {
      notes.detail.reason = why;
      if (rec) notes.target = rec.owner;
      throw new TesseraError('TESSERA_APIKEY_INVALID');
    }
    notes.target = rec.owner;
    // A good key of a quarantined owner: refused with a code that says so (the key is not bad).
    await riskStanding(this.deps, notes, rec.owner);
    if (scope !== undefined && !rec.scopes.includes(scope)) throw new TesseraError('TESSERA_FORBIDDEN', 'the API key does not carry this scope');
    return rec;
  }

  /**
   * Lists keys, newest first. `self`: the workload asking, limited to its own keys (undefined: the
   * admin, who may list anyone's, or all with no `owner`).
   */
  async list(q: { self?: string; owner?: string; limit: number }, notes: AuditNotes): Promise<ApiKeyRecord[]> {
    if (q.self !== undefined && q.owner !== undefined && q.owner !== q.self) throw new TesseraError('TESSERA_FORBIDDEN', 'a workload may list only its own API keys');
    const owner = q.self ?? q.owner;
    if (owner !== undefined) notes.target = owner;
    const keys = await this.deps.store.listApiKeys({ ...(owner !== undefined ? { owner } : {}), limit: q.limit });
    notes.detail.count = keys.length;
    return keys;
  }

  /**
   * Revokes key `id`. Idempotent: revoking a revoked key keeps its first time and reason
   * (`notes.detail.already_revoked`). `self` as in {@link list}: another workload's key is "not
   * found", so a workload learns nothing about keys it does not own.
   */
  async revoke(id: string, reason: string | undefined, self: string | undefined, notes: AuditNotes): Promise<ApiKeyRecord> {
    const { store } = this.deps;
    const rec = await store.getApiKey(id);
    if (!rec || (self !== undefined && rec.owner !== self)) throw new TesseraError('TESSERA_APIKEY_NOT_FOUND');
    notes.target = rec.owner;
    const after = (await store.revokeApiKey(id, this.deps.now(), reason ?? 'no reason given'))!;
    notes.detail.reason = after.revokedReason;
    notes.detail.already_revoked = Boolean(rec.revokedAt);
    return after;
  }
}
