import type { FastifyInstance, FastifyRequest } from 'fastify';
import { TesseraError } from '../../core/errors.js';
import { isSpiffeId } from '../../core/spiffe-id.js';
import type { AuditEvent } from '../audit/audit.js';
import { audited, liveOrAdmin, liveSvidCaller } from '../api/handlers.js';
import { body, int, queryInt, queryStr, reqStr, str, strList } from '../../common/api/validate.js';
import type { ServerContext } from '../context.js';
import { APIKEY_MAX_TTL_SECONDS } from '../registry/service.js';
import type { ApiKeyRecord } from '../store/store.js';
import type { ApiKeyListResponse, ApiKeyView, CreateApiKeyResponse, VerifyApiKeyResponse } from '../../core/wire/control-plane.js';

const KEY_ID = /^[0-9a-f]{16}$/;
const SCOPE = /^[a-z0-9][a-z0-9._:/-]{0,127}$/;
const REASON = /^[^\x00-\x1f\x7f]{1,256}$/;
const OWNER = /^spiffe:\/\/[\x21-\x7e]{1,2039}$/;

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

function keyView(k: ApiKeyRecord, now: number): ApiKeyView {
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
async function keyHolder(ctx: ServerContext, req: FastifyRequest, ev: AuditEvent, action: 'admin:apikey.list' | 'admin:apikey.revoke'): Promise<string | undefined> {
  const { caller, admin } = await liveOrAdmin(ctx, req, ev, action);
  return admin ? undefined : caller.spiffeId;
}

/** API keys (the rules are the CredentialService's): a live workload creates its own; see keyHolder for list and revoke. */
export function apiKeyRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const { credentials } = ctx;

  app.post('/v1/apikeys', (req, reply) => audited(ctx, req, 'apikey.create', async (ev) => {
    const { caller, entry } = await liveSvidCaller(ctx, req, ev);
    ev.target = caller.spiffeId;
    const { scopes, ttlSeconds } = parseApiKeyRequest(req.body);
    const key = await credentials.create(caller.spiffeId, entry, scopes, ttlSeconds, ev);
    ev.succeed();
    return reply.code(201).send({ api_key: key.apiKey, id: key.id, owner: caller.spiffeId, scopes, expires_at: new Date(key.expiresAt).toISOString() } satisfies CreateApiKeyResponse);
  }));

  app.post('/v1/apikeys/verify', (req) => audited(ctx, req, 'apikey.verify', async (ev) => {
    await liveSvidCaller(ctx, req, ev);
    const b = body(req.body, ['api_key', 'scope']);
    const key = reqStr(b, 'api_key', { max: 128 });
    const scope = str(b, 'scope', { optional: true, max: 128, pattern: SCOPE });
    const rec = await credentials.verify(key, scope, ev);
    ev.succeed();
    return { valid: true, id: rec.id, owner: rec.owner, scopes: rec.scopes, expires_at: new Date(rec.expiresAt).toISOString() } satisfies VerifyApiKeyResponse;
  }));

  app.get('/v1/apikeys', (req) => audited(ctx, req, 'apikey.list', async (ev) => {
    const self = await keyHolder(ctx, req, ev, 'admin:apikey.list');
    const q = parseApiKeyListQuery(req.query);
    const keys = await credentials.list({ ...q, ...(self !== undefined ? { self } : {}) }, ev);
    const now = Date.now();
    ev.succeed();
    return { api_keys: keys.map((k) => keyView(k, now)) } satisfies ApiKeyListResponse;
  }));

  app.post<{ Params: { id: string } }>('/v1/apikeys/:id/revoke', (req) => audited(ctx, req, 'apikey.revoke', async (ev) => {
    const self = await keyHolder(ctx, req, ev, 'admin:apikey.revoke');
    const { id, reason } = parseRevokeRequest(req.params.id, req.body);
    ev.detail.key_id = id;
    const after = await credentials.revoke(id, reason, self, ev);
    ev.succeed();
    return keyView(after, Date.now());
  }));
}
