import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { TesseraError } from '../../core/errors.js';
import { isSpiffeId } from '../../core/spiffe-id.js';
import type { AuditEvent } from '../audit/audit.js';
import { audited, liveSvidCaller, svidCaller } from '../api/handlers.js';
import { body, int, queryInt, queryStr, reqStr, str, strList } from '../../common/api/validate.js';
import type { ServerContext } from '../context.js';
import { APIKEY_MAX_TTL_SECONDS } from '../registry/routes.js';
import type { ApiKeyRecord, EntryRecord } from '../store/store.js';
import { authorizeDerive } from './derive.js';

const API_KEY = /^tak_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;
const KEY_ID = /^[0-9a-f]{16}$/;
const SCOPE = /^[a-z0-9][a-z0-9._:/-]{0,127}$/;
const REASON = /^[^\x00-\x1f\x7f]{1,256}$/;
const OWNER = /^spiffe:\/\/[\x21-\x7e]{1,2039}$/;
/** Lifetime of a key when the request names none: a day, or less if the entry's bound is lower. */
const DEFAULT_TTL_SECONDS = 86400;

function hashSecret(secret: string): Buffer {
  return createHash('sha256').update(secret).digest();
}

/** `POST /v1/apikeys` body: 1..32 distinct scopes, and a lifetime of 60 s to {@link APIKEY_MAX_TTL_SECONDS}. */
export function parseApiKeyRequest(input: unknown): { scopes: string[]; ttlSeconds?: number } {
  const b = body(input, ['scopes', 'ttl_seconds']);
  const scopes = strList(b, 'scopes', { minItems: 1, maxItems: 32, maxLength: 128, pattern: SCOPE })!;
  const ttlSeconds = int(b, 'ttl_seconds', { min: 60, max: APIKEY_MAX_TTL_SECONDS, optional: true });
  return ttlSeconds === undefined ? { scopes } : { scopes, ttlSeconds };
}

/** `GET /v1/apikeys` query: `owner` (a SPIFFE ID) and `limit` (1..1000, default 100). */
export function parseApiKeyListQuery(query: unknown): { owner?: string; limit: number } {
  const owner = queryStr(query, 'owner', OWNER);
  if (owner !== undefined && !isSpiffeId(owner)) throw new TesseraError('TESSERA_BAD_REQUEST', 'query "owner" must be a SPIFFE ID');
  const limit = queryInt(query, 'limit', 100, 1, 1000);
  return owner === undefined ? { limit } : { owner, limit };
}

/** `POST /v1/apikeys/:id/revoke`: a key id (16 hex digits) and an optional reason (printable, up to 256 characters). */
export function parseRevokeRequest(id: unknown, input: unknown): { id: string; reason?: string } {
  if (typeof id !== 'string' || !KEY_ID.test(id)) throw new TesseraError('TESSERA_BAD_REQUEST', 'the API key id must be 16 hex digits');
  const b = body(input ?? {}, ['reason']);
  const reason = str(b, 'reason', { optional: true, max: 256, pattern: REASON });
  return reason === undefined ? { id } : { id, reason };
}

function keyView(k: ApiKeyRecord, now: number): Record<string, unknown> {
  return {
    id: k.id, owner: k.owner, scopes: k.scopes, created_at: new Date(k.createdAt).toISOString(), expires_at: new Date(k.expiresAt).toISOString(),
    state: k.revokedAt ? 'revoked' : k.expiresAt <= now ? 'expired' : 'active',
    ...(k.revokedAt ? { revoked_at: new Date(k.revokedAt).toISOString(), revoked_reason: k.revokedReason ?? null } : {}),
  };
}

/**
 * Who may list and revoke keys: the admin (every key), or a live workload (its own keys only, so
 * that it can revoke a key it leaked without waiting for an operator). Returns the owner the caller
 * is limited to, or undefined for the admin.
 */
async function keyHolder(ctx: ServerContext, req: FastifyRequest, ev: AuditEvent): Promise<string | undefined> {
  if (svidCaller(ctx, req, ev).spiffeId === ctx.adminId) return undefined;
  return (await liveSvidCaller(ctx, req, ev)).caller.spiffeId;
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

/**
 * Scoped, expiring API keys derived from an SVID, for systems that only understand bearer keys.
 * Each scope is a Cedar `credential:derive` decision (default deny); the lifetime is bounded by the
 * owner's entry. The key is shown once; the store keeps its id and the SHA-256 of its secret part.
 */
export function apiKeyRoutes(app: FastifyInstance, ctx: ServerContext): void {
  app.post('/v1/apikeys', (req, reply) => audited(ctx, req, 'apikey.create', async (ev) => {
    const { caller, entry } = await liveSvidCaller(ctx, req, ev);
    ev.target = caller.spiffeId;
    const { scopes, ttlSeconds } = parseApiKeyRequest(req.body);
    const ttl = ttlSeconds ?? Math.min(DEFAULT_TTL_SECONDS, entry.apikeyMaxTtlSeconds);
    ev.detail.scopes = scopes;
    ev.detail.ttl_seconds = ttl;
    // Refused rather than clipped: a caller that asked for a month must not believe it holds one.
    if (ttl > entry.apikeyMaxTtlSeconds) {
      ev.detail.reason = 'ttl';
      throw new TesseraError('TESSERA_CREDENTIAL_DENIED', `ttl_seconds ${ttl} is above this identity's API key bound of ${entry.apikeyMaxTtlSeconds} seconds`);
    }
    await authorizeDerive(ctx, ev, caller.spiffeId, 'apikey', scopes, ttl);
    const id = randomBytes(8).toString('hex');
    const secret = randomBytes(32).toString('base64url');
    const now = Date.now();
    await ctx.store.insertApiKey({ id, hash: hashSecret(secret).toString('hex'), owner: caller.spiffeId, scopes, createdAt: now, expiresAt: now + ttl * 1000 });
    ev.detail.key_id = id;
    ev.succeed();
    return reply.code(201).send({ api_key: `tak_${id}_${secret}`, id, owner: caller.spiffeId, scopes, expires_at: new Date(now + ttl * 1000).toISOString() });
  }));

  app.post('/v1/apikeys/verify', (req) => audited(ctx, req, 'apikey.verify', async (ev) => {
    await liveSvidCaller(ctx, req, ev);
    const b = body(req.body, ['api_key', 'scope']);
    const key = reqStr(b, 'api_key', { max: 128 });
    const scope = str(b, 'scope', { optional: true, max: 128, pattern: SCOPE });
    const m = API_KEY.exec(key);
    const rec = m ? await ctx.store.getApiKey(m[1]!) : undefined;
    const now = Date.now();
    let why: string | undefined;
    if (!m) why = 'malformed';
    else if (!rec) why = 'unknown';
    else if (!timingSafeEqual(hashSecret(m[2]!), Buffer.from(rec.hash, 'hex'))) why = 'secret';
    else why = apiKeyRefusal(rec, await ctx.store.getEntryBySpiffeId(rec.owner), now);
    if (m) ev.detail.key_id = m[1];
    if (why !== undefined || !rec) {
      // The same answer for every reason (say as little as possible); the reason is audited.
      ev.detail.reason = why;
      if (rec) ev.target = rec.owner;
      throw new TesseraError('TESSERA_APIKEY_INVALID');
    }
    ev.target = rec.owner;
    if (scope !== undefined && !rec.scopes.includes(scope)) throw new TesseraError('TESSERA_FORBIDDEN', 'the API key does not carry this scope');
    ev.succeed();
    return { valid: true, id: rec.id, owner: rec.owner, scopes: rec.scopes, expires_at: new Date(rec.expiresAt).toISOString() };
  }));

  app.get('/v1/apikeys', (req) => audited(ctx, req, 'apikey.list', async (ev) => {
    const self = await keyHolder(ctx, req, ev);
    const q = parseApiKeyListQuery(req.query);
    if (self !== undefined && q.owner !== undefined && q.owner !== self) throw new TesseraError('TESSERA_FORBIDDEN', 'a workload may list only its own API keys');
    const owner = self ?? q.owner;
    if (owner !== undefined) ev.target = owner;
    const keys = await ctx.store.listApiKeys({ ...(owner !== undefined ? { owner } : {}), limit: q.limit });
    const now = Date.now();
    ev.detail.count = keys.length;
    ev.succeed();
    return { api_keys: keys.map((k) => keyView(k, now)) };
  }));

  app.post<{ Params: { id: string } }>('/v1/apikeys/:id/revoke', (req) => audited(ctx, req, 'apikey.revoke', async (ev) => {
    const self = await keyHolder(ctx, req, ev);
    const { id, reason } = parseRevokeRequest(req.params.id, req.body);
    ev.detail.key_id = id;
    const rec = await ctx.store.getApiKey(id);
    // Another workload's key is "not found": a workload learns nothing about keys it does not own.
    if (!rec || (self !== undefined && rec.owner !== self)) throw new TesseraError('TESSERA_APIKEY_NOT_FOUND');
    ev.target = rec.owner;
    const now = Date.now();
    const after = (await ctx.store.revokeApiKey(id, now, reason ?? 'no reason given'))!;
    ev.detail.reason = after.revokedReason;
    ev.detail.already_revoked = Boolean(rec.revokedAt);
    ev.succeed();
    return keyView(after, now);
  }));
}
