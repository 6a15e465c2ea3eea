import { createHash, randomBytes, randomUUID } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { TesseraError } from '../../core/errors.js';
import { parseSpiffeId, isMemberOf } from '../../core/spiffe-id.js';
import { adminCaller, audited } from '../api/handlers.js';
import { body, int, reqStr, str, strList } from '../../common/api/validate.js';
import type { ServerContext } from '../context.js';
import type { EntryAttributes, EntryRecord } from '../store/store.js';

const ATTRIBUTE_NAMES = ['app', 'site', 'compliance', 'location', 'env'] as const;
const ATTRIBUTE_VALUE = /^[A-Za-z0-9._:-]{1,128}$/;
const SELECTOR = /^[a-z0-9_-]{1,32}:[\x21-\x7e]{1,223}$/;
export const JOIN_TOKEN = /^tjt_[A-Za-z0-9_-]{43}$/;
const MAX_TTL_SECONDS = 30 * 86400;
/**
 * API keys are bearer credentials (not bound to a key the holder proves): an identity's keys live at
 * most its entry's `apikey_max_ttl_seconds` (default a day), and never more than a week.
 */
export const APIKEY_MAX_TTL_SECONDS = 7 * 86400;
export const APIKEY_DEFAULT_MAX_TTL_SECONDS = 86400;
/** A revocation reason: one line of printable text (it is shown to operators and travels in the bundle). */
const REASON = /^[\x20-\x7e]{1,256}$/;

export function entryView(e: EntryRecord): Record<string, unknown> {
  return {
    id: e.id, spiffe_id: e.spiffeId, selectors: e.selectors, attributes: e.attributes,
    x509_ttl_seconds: e.x509TtlSeconds, jwt_ttl_seconds: e.jwtTtlSeconds, apikey_max_ttl_seconds: e.apikeyMaxTtlSeconds, created_at: new Date(e.createdAt).toISOString(),
    ...(e.revokedAt ? { revoked_at: new Date(e.revokedAt).toISOString(), revoked_reason: e.revokedReason ?? '' } : {}),
  };
}

export function tokenHash(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

/** A short, non-secret reference to a token for audit records and CLI output: the first hash bytes. */
export function tokenRef(hash: string): string {
  return hash.slice(0, 12);
}

function parseAttributes(v: unknown): EntryAttributes {
  if (v === undefined) return {};
  const b = body(v, ATTRIBUTE_NAMES);
  const out: EntryAttributes = {};
  for (const name of ATTRIBUTE_NAMES) {
    const value = str(b, name, { optional: true, max: 128, pattern: ATTRIBUTE_VALUE });
    if (value !== undefined) out[name] = value;
  }
  return out;
}

async function lookupEntry(ctx: ServerContext, id: string): Promise<EntryRecord> {
  if (id.length > 2048) throw new TesseraError('TESSERA_ENTRY_NOT_FOUND');
  const entry = (await ctx.store.getEntry(id)) ?? (id.startsWith('spiffe://') ? await ctx.store.getEntryBySpiffeId(id) : undefined);
  if (!entry) throw new TesseraError('TESSERA_ENTRY_NOT_FOUND');
  return entry;
}

/** Registration entries and join tokens: admin only. */
export function registryRoutes(app: FastifyInstance, ctx: ServerContext): void {
  app.post('/v1/entries', (req, reply) => audited(ctx, req, 'entry.create', async (ev) => {
    adminCaller(ctx, req, ev);
    const b = body(req.body, ['spiffe_id', 'selectors', 'attributes', 'x509_ttl_seconds', 'jwt_ttl_seconds', 'apikey_max_ttl_seconds']);
    const id = parseSpiffeId(reqStr(b, 'spiffe_id', { max: 2048 }));
    ev.target = id.id;
    if (!isMemberOf(id, ctx.trustDomain)) throw new TesseraError('TESSERA_SPIFFE_ID_INVALID', `the SPIFFE ID must be in trust domain ${ctx.trustDomain}`);
    // The trust-domain ID names the trust domain, not a workload (X509-SVID §5.2 refuses it in a leaf).
    if (id.path === '') throw new TesseraError('TESSERA_SPIFFE_ID_INVALID', `the SPIFFE ID needs a path naming the workload, e.g. spiffe://${ctx.trustDomain}/payments`);
    if (id.path === '/tessera' || id.path.startsWith('/tessera/')) throw new TesseraError('TESSERA_SPIFFE_ID_RESERVED');
    const entry: EntryRecord = {
      id: randomUUID(),
      spiffeId: id.id,
      selectors: strList(b, 'selectors', { maxItems: 32, maxLength: 256, pattern: SELECTOR, optional: true }) ?? [],
      attributes: parseAttributes(b.attributes),
      x509TtlSeconds: int(b, 'x509_ttl_seconds', { min: 10, max: MAX_TTL_SECONDS, optional: true }) ?? ctx.defaults.x509TtlSeconds,
      jwtTtlSeconds: int(b, 'jwt_ttl_seconds', { min: 10, max: 86400, optional: true }) ?? ctx.defaults.jwtTtlSeconds,
      apikeyMaxTtlSeconds: int(b, 'apikey_max_ttl_seconds', { min: 60, max: APIKEY_MAX_TTL_SECONDS, optional: true }) ?? APIKEY_DEFAULT_MAX_TTL_SECONDS,
      createdAt: Date.now(),
    };
    if (await ctx.store.getEntryBySpiffeId(entry.spiffeId)) throw new TesseraError('TESSERA_CONFLICT', `an entry for ${entry.spiffeId} already exists`);
    await ctx.store.insertEntry(entry);
    await ctx.policy.entriesChanged();
    ev.detail.entry_id = entry.id;
    ev.succeed();
    return reply.code(201).send(entryView(entry));
  }));

  app.get('/v1/entries', (req) => audited(ctx, req, 'entry.list', async (ev) => {
    adminCaller(ctx, req, ev);
    const entries = await ctx.store.listEntries();
    ev.succeed();
    return { entries: entries.map(entryView) };
  }));

  app.get<{ Params: { id: string } }>('/v1/entries/:id', (req) => audited(ctx, req, 'entry.show', async (ev) => {
    adminCaller(ctx, req, ev);
    const entry = await lookupEntry(ctx, req.params.id);
    ev.succeed(entry.spiffeId);
    return entryView(entry);
  }));

  // Deleting revokes: the entry's SPIFFE ID and the SVIDs it was issued go on the revocation list.
  app.delete<{ Params: { id: string } }>('/v1/entries/:id', (req) => audited(ctx, req, 'entry.delete', async (ev) => {
    adminCaller(ctx, req, ev);
    const entry = await lookupEntry(ctx, req.params.id);
    ev.target = entry.spiffeId;
    ev.detail.entry_id = entry.id;
    if (!(await ctx.store.deleteEntry(entry.id, Date.now()))) throw new TesseraError('TESSERA_ENTRY_NOT_FOUND');
    const bundleVersion = await ctx.policy.entriesChanged();
    ev.detail.bundle_version = bundleVersion;
    ev.succeed();
    return { deleted: entry.id, spiffe_id: entry.spiffeId, bundle_version: bundleVersion };
  }));

  /**
   * Revokes an entry: it is kept (so its SPIFFE ID cannot be re-registered by mistake) but its
   * current and future SVIDs are refused everywhere. Revoking twice is a conflict (409): the first
   * revocation's time and reason stand.
   */
  app.post<{ Params: { id: string } }>('/v1/entries/:id/revoke', (req) => audited(ctx, req, 'entry.revoke', async (ev) => {
    adminCaller(ctx, req, ev);
    const entry = await lookupEntry(ctx, req.params.id);
    ev.target = entry.spiffeId;
    ev.detail.entry_id = entry.id;
    const b = body(req.body, ['reason']);
    const reason = reqStr(b, 'reason', { max: 256, pattern: REASON });
    ev.detail.reason = reason;
    const res = await ctx.store.revokeEntry(entry.id, Date.now(), reason);
    if (!res.ok && res.reason === 'missing') throw new TesseraError('TESSERA_ENTRY_NOT_FOUND');
    if (!res.ok) throw new TesseraError('TESSERA_CONFLICT', `the entry was already revoked at ${new Date(res.entry!.revokedAt!).toISOString()}`);
    const bundleVersion = await ctx.policy.entriesChanged();
    ev.detail.bundle_version = bundleVersion;
    ev.succeed();
    return { ...entryView(res.entry), bundle_version: bundleVersion };
  }));

  app.post('/v1/tokens', (req, reply) => audited(ctx, req, 'token.create', async (ev) => {
    adminCaller(ctx, req, ev);
    const b = body(req.body, ['entry_id', 'ttl_seconds']);
    const entry = await lookupEntry(ctx, reqStr(b, 'entry_id', { max: 2048 }));
    ev.target = entry.spiffeId;
    if (entry.revokedAt) throw new TesseraError('TESSERA_CONFLICT', 'the entry is revoked: it gets no join token');
    const ttl = int(b, 'ttl_seconds', { min: 1, max: 86400, optional: true }) ?? 600;
    const token = `tjt_${randomBytes(32).toString('base64url')}`;
    const hash = tokenHash(token);
    const now = Date.now();
    await ctx.store.insertJoinToken({ hash, entryId: entry.id, createdAt: now, expiresAt: now + ttl * 1000 });
    ev.detail.token_ref = tokenRef(hash);
    ev.succeed();
    return reply.code(201).send({
      token, token_ref: tokenRef(hash), entry_id: entry.id, spiffe_id: entry.spiffeId, expires_at: new Date(now + ttl * 1000).toISOString(),
    });
  }));
}
