import type { FastifyInstance } from 'fastify';
import { TesseraError } from '../../core/errors.js';
import { parseSpiffeId } from '../../core/spiffe-id.js';
import { adminCaller, audited } from '../api/handlers.js';
import { body, int, reqStr, str, strList } from '../../common/api/validate.js';
import type { ServerContext } from '../context.js';
import type { EntryAttributes, EntryRecord } from '../store/store.js';
import { APIKEY_MAX_TTL_SECONDS } from './service.js';
import type { CreateTokenResponse, DeleteEntryResponse, EntryListResponse, EntryView, RevokeEntryResponse } from '../../core/wire/control-plane.js';

const ATTRIBUTE_NAMES = ['app', 'site', 'compliance', 'location', 'env'] as const;
const ATTRIBUTE_VALUE = /^[A-Za-z0-9._:-]{1,128}$/;
const SELECTOR = /^[a-z0-9_-]{1,32}:[\x21-\x7e]{1,223}$/;
/** A `dns:` selector (a DNS SAN of the entry's SVIDs): a lower-case host name, no wildcard. */
const DNS_SELECTOR = /^dns:(?=.{1,253}$)[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$/;
const MAX_TTL_SECONDS = 30 * 86400;
/** A revocation reason: one line of printable text (it is shown to operators and travels in the bundle). */
const REASON = /^[\x20-\x7e]{1,256}$/;

export function entryView(e: EntryRecord): EntryView {
  return {
    id: e.id, spiffe_id: e.spiffeId, selectors: e.selectors, attributes: e.attributes,
    x509_ttl_seconds: e.x509TtlSeconds, jwt_ttl_seconds: e.jwtTtlSeconds, apikey_max_ttl_seconds: e.apikeyMaxTtlSeconds, created_at: new Date(e.createdAt).toISOString(),
    ...(e.revokedAt ? { revoked_at: new Date(e.revokedAt).toISOString(), revoked_reason: e.revokedReason ?? '' } : {}),
  };
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

/** Registration entries and join tokens: admin only. The rules are the RegistryService's. */
export function registryRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const { registry } = ctx;

  app.post('/v1/entries', (req, reply) => audited(ctx, req, 'entry.create', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:entry.create');
    const b = body(req.body, ['spiffe_id', 'selectors', 'attributes', 'x509_ttl_seconds', 'jwt_ttl_seconds', 'apikey_max_ttl_seconds']);
    const id = parseSpiffeId(reqStr(b, 'spiffe_id', { max: 2048 }));
    ev.target = id.id;
    registry.checkWorkloadId(id);
    const selectors = strList(b, 'selectors', { maxItems: 32, maxLength: 256, pattern: SELECTOR, optional: true }) ?? [];
    const badDns = selectors.find((s) => s.startsWith('dns:') && !DNS_SELECTOR.test(s));
    if (badDns !== undefined) throw new TesseraError('TESSERA_BAD_REQUEST', `selector ${badDns.slice(0, 80)} is not dns:HOSTNAME (lower case, no wildcard)`);
    const attributes = parseAttributes(b.attributes);
    const x509TtlSeconds = int(b, 'x509_ttl_seconds', { min: 10, max: MAX_TTL_SECONDS, optional: true });
    const jwtTtlSeconds = int(b, 'jwt_ttl_seconds', { min: 10, max: 86400, optional: true });
    const apikeyMaxTtlSeconds = int(b, 'apikey_max_ttl_seconds', { min: 60, max: APIKEY_MAX_TTL_SECONDS, optional: true });
    const entry = await registry.create({
      spiffeId: id, selectors, attributes,
      ...(x509TtlSeconds !== undefined ? { x509TtlSeconds } : {}),
      ...(jwtTtlSeconds !== undefined ? { jwtTtlSeconds } : {}),
      ...(apikeyMaxTtlSeconds !== undefined ? { apikeyMaxTtlSeconds } : {}),
    });
    ev.detail.entry_id = entry.id;
    ev.succeed();
    return reply.code(201).send(entryView(entry));
  }));

  app.get('/v1/entries', (req) => audited(ctx, req, 'entry.list', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:entry.list');
    const entries = await registry.list();
    ev.succeed();
    return { entries: entries.map(entryView) } satisfies EntryListResponse;
  }));

  app.get<{ Params: { id: string } }>('/v1/entries/:id', (req) => audited(ctx, req, 'entry.show', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:entry.show');
    const entry = await registry.lookup(req.params.id);
    ev.succeed(entry.spiffeId);
    return entryView(entry);
  }));

  // Deleting revokes: the entry's SPIFFE ID and the SVIDs it was issued go on the revocation list.
  app.delete<{ Params: { id: string } }>('/v1/entries/:id', (req) => audited(ctx, req, 'entry.delete', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:entry.delete');
    const entry = await registry.lookup(req.params.id);
    ev.target = entry.spiffeId;
    ev.detail.entry_id = entry.id;
    const bundleVersion = await registry.delete(entry.id);
    ev.detail.bundle_version = bundleVersion;
    ev.succeed();
    return { deleted: entry.id, spiffe_id: entry.spiffeId, bundle_version: bundleVersion } satisfies DeleteEntryResponse;
  }));

  // Revoking twice is a conflict (409): the first revocation's time and reason stand.
  app.post<{ Params: { id: string } }>('/v1/entries/:id/revoke', (req) => audited(ctx, req, 'entry.revoke', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:entry.revoke');
    const entry = await registry.lookup(req.params.id);
    ev.target = entry.spiffeId;
    ev.detail.entry_id = entry.id;
    const b = body(req.body, ['reason']);
    const reason = reqStr(b, 'reason', { max: 256, pattern: REASON });
    ev.detail.reason = reason;
    const res = await registry.revoke(entry.id, reason);
    ev.detail.bundle_version = res.bundleVersion;
    ev.succeed();
    return { ...entryView(res.entry), bundle_version: res.bundleVersion } satisfies RevokeEntryResponse;
  }));

  app.post('/v1/tokens', (req, reply) => audited(ctx, req, 'token.create', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:token.create');
    const b = body(req.body, ['entry_id', 'ttl_seconds']);
    const entry = await registry.lookup(reqStr(b, 'entry_id', { max: 2048 }));
    ev.target = entry.spiffeId;
    registry.checkJoinable(entry);
    const ttl = int(b, 'ttl_seconds', { min: 1, max: 86400, optional: true });
    const t = await registry.createJoinToken(entry, ttl);
    ev.detail.token_ref = t.ref;
    ev.succeed();
    return reply.code(201).send({
      token: t.token, token_ref: t.ref, entry_id: entry.id, spiffe_id: entry.spiffeId, expires_at: new Date(t.expiresAt).toISOString(),
    } satisfies CreateTokenResponse);
  }));
}
