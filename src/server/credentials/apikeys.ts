import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { TesseraError } from '../../core/errors.js';
import { audited, liveSvidCaller } from '../api/handlers.js';
import { body, int, reqStr, str, strList } from '../api/validate.js';
import type { ServerContext } from '../context.js';

const API_KEY = /^tak_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;
const SCOPE = /^[a-z0-9][a-z0-9._:/-]{0,127}$/;

function hashSecret(secret: string): Buffer {
  return createHash('sha256').update(secret).digest();
}

/**
 * Scoped, expiring API keys derived from an SVID, for systems that only understand bearer keys.
 * The key is shown once; the store keeps its id and the SHA-256 of its secret part.
 */
export function apiKeyRoutes(app: FastifyInstance, ctx: ServerContext): void {
  app.post('/v1/apikeys', (req, reply) => audited(ctx, req, 'apikey.create', async (ev) => {
    const { caller } = await liveSvidCaller(ctx, req, ev);
    ev.target = caller.spiffeId;
    const b = body(req.body, ['scopes', 'ttl_seconds']);
    const scopes = strList(b, 'scopes', { minItems: 1, maxItems: 32, maxLength: 128, pattern: SCOPE })!;
    const ttl = int(b, 'ttl_seconds', { min: 60, max: 90 * 86400, optional: true }) ?? 86400;
    const id = randomBytes(8).toString('hex');
    const secret = randomBytes(32).toString('base64url');
    const now = Date.now();
    await ctx.store.insertApiKey({ id, hash: hashSecret(secret).toString('hex'), owner: caller.spiffeId, scopes, createdAt: now, expiresAt: now + ttl * 1000 });
    ev.detail.key_id = id;
    ev.detail.scopes = scopes;
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
    // Same answer for unknown id, wrong secret and expiry: say as little as possible.
    if (!m || !rec || !timingSafeEqual(hashSecret(m[2]!), Buffer.from(rec.hash, 'hex')) || rec.expiresAt <= Date.now()) {
      if (m) ev.detail.key_id = m[1];
      throw new TesseraError('TESSERA_APIKEY_INVALID');
    }
    ev.target = rec.owner;
    ev.detail.key_id = rec.id;
    if (scope !== undefined && !rec.scopes.includes(scope)) throw new TesseraError('TESSERA_FORBIDDEN', 'the API key does not carry this scope');
    ev.succeed();
    return { valid: true, id: rec.id, owner: rec.owner, scopes: rec.scopes, expires_at: new Date(rec.expiresAt).toISOString() };
  }));
}
