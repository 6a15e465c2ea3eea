import { X509Certificate } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { bundleToJwks, jwtKeysAsJwks } from '../../core/bundle.js';
import { parseCsrPem, type ParsedCsr } from '../../core/csr.js';
import { TesseraError } from '../../core/errors.js';
import { pemEncode } from '../../core/x509.js';
import type { AuditEvent } from '../audit/audit.js';
import { audited, liveSvidCaller, waitFor } from '../api/handlers.js';
import { body, int, queryInt, queryStr, reqStr, strList } from '../../common/api/validate.js';
import type { ServerContext } from '../context.js';
import { authorizeDerive } from '../credentials/derive.js';
import { entryView, JOIN_TOKEN, tokenHash, tokenRef } from '../registry/routes.js';
import type { EntryRecord } from '../store/store.js';

const AUDIENCE = /^[\x21-\x7e]{1,256}$/;

function csrFrom(b: Record<string, unknown>): ParsedCsr {
  return parseCsrPem(reqStr(b, 'csr', { max: 16 * 1024 }));
}

/** The CSR may name its SPIFFE ID (a URI SAN); when it does, it must be the entry's, and only that. */
function checkCsrIdentity(csr: ParsedCsr, entry: EntryRecord): void {
  if (csr.uriSans.length > 1 || (csr.uriSans.length === 1 && csr.uriSans[0] !== entry.spiffeId)) {
    throw new TesseraError('TESSERA_CSR_IDENTITY_MISMATCH');
  }
}

/**
 * Issues the SVID. The bundle is included unless the caller says it already holds the current
 * one (`bundle_sequence`): renewals are the hot path and the bundle is most of the response.
 */
async function issueSvid(ctx: ServerContext, csr: ParsedCsr, entry: EntryRecord, ev: AuditEvent, callerSequence?: number): Promise<Record<string, unknown>> {
  const cert = ctx.ca.issue({ publicKey: csr.publicKey, uriSans: [entry.spiffeId] }, entry.x509TtlSeconds * 1000);
  // Every serial is recorded before the SVID leaves, so that revoking the entry can list it.
  const serial = new X509Certificate(cert.der).serialNumber.toUpperCase();
  await ctx.store.recordIssuedSvid({ serial, entryId: entry.id, spiffeId: entry.spiffeId, notAfter: cert.notAfter.getTime(), issuedAt: Date.now() });
  ev.detail.serial = serial;
  ev.detail.not_after = cert.notAfter.toISOString();
  ev.detail.ca_id = cert.caId;
  return {
    spiffe_id: entry.spiffeId,
    svid_pem: pemEncode(cert.der, 'CERTIFICATE'),
    not_before: cert.notBefore.toISOString(),
    not_after: cert.notAfter.toISOString(),
    bundle_sequence: ctx.ca.bundleSequence(),
    ...(callerSequence === ctx.ca.bundleSequence() ? {} : { bundle_pem: ctx.ca.bundlePem() }),
    entry: entryView(entry),
  };
}

/** Identity issuance (join, renewal), derived credentials (JWT-SVIDs) and the public trust material. */
export function svidRoutes(app: FastifyInstance, ctx: ServerContext): void {
  app.post('/v1/agent/join', (req) => audited(ctx, req, 'svid.join', async (ev) => {
    const b = body(req.body, ['join_token', 'csr']);
    const token = b.join_token;
    // Validate the CSR before touching the token, so a malformed request does not burn it.
    const csr = csrFrom(b);
    if (typeof token !== 'string' || !JOIN_TOKEN.test(token)) {
      ev.detail.reason = 'malformed';
      throw new TesseraError('TESSERA_TOKEN_INVALID');
    }
    const hash = tokenHash(token);
    ev.detail.token_ref = tokenRef(hash);
    const used = await ctx.store.consumeJoinToken(hash, Date.now());
    if (!used.ok) {
      ev.detail.reason = used.reason;
      throw new TesseraError('TESSERA_TOKEN_INVALID');
    }
    const entry = await ctx.store.getEntry(used.entryId);
    if (!entry || entry.revokedAt) {
      ev.detail.reason = entry ? 'entry revoked' : 'entry deleted';
      throw new TesseraError('TESSERA_TOKEN_INVALID');
    }
    ev.target = entry.spiffeId;
    ev.actor = `join:${tokenRef(hash)}`;
    // The token is spent even when the CSR asks for another identity: that attempt is suspicious.
    checkCsrIdentity(csr, entry);
    const out = await issueSvid(ctx, csr, entry, ev);
    ev.succeed();
    return out;
  }));

  app.post('/v1/svid/renew', (req) => audited(ctx, req, 'svid.renew', async (ev) => {
    const { entry } = await liveSvidCaller(ctx, req, ev);
    ev.target = entry.spiffeId;
    const b = body(req.body, ['csr', 'bundle_sequence']);
    const sequence = int(b, 'bundle_sequence', { min: 0, max: Number.MAX_SAFE_INTEGER, optional: true });
    const csr = csrFrom(b);
    checkCsrIdentity(csr, entry);
    const out = await issueSvid(ctx, csr, entry, ev, sequence);
    ev.succeed();
    return out;
  }));

  app.post('/v1/svid/jwt', (req) => audited(ctx, req, 'svid.jwt', async (ev) => {
    const { caller, entry } = await liveSvidCaller(ctx, req, ev);
    ev.target = caller.spiffeId;
    const b = body(req.body, ['audience', 'ttl_seconds']);
    const audience = strList(b, 'audience', { minItems: 1, maxItems: 16, maxLength: 256, pattern: AUDIENCE })!;
    // A longer TTL than the entry's is clipped to it (JWT-SVID clients take the `exp` they get).
    const ttl = Math.min(int(b, 'ttl_seconds', { min: 1, max: 86400, optional: true }) ?? entry.jwtTtlSeconds, entry.jwtTtlSeconds);
    ev.detail.audience = audience;
    ev.detail.ttl_seconds = ttl;
    await authorizeDerive(ctx, ev, caller.spiffeId, 'jwt', audience, ttl);
    const jwt = ctx.ca.signJwt(caller.spiffeId, audience, ttl, ctx.issuer);
    ev.detail.expires_at = jwt.expiresAt.toISOString();
    ev.succeed();
    return { token: jwt.token, spiffe_id: caller.spiffeId, audience, expires_at: jwt.expiresAt.toISOString() };
  }));

  app.get('/v1/bundle', async (req, reply) => {
    const format = queryStr(req.query, 'format', /^(jwks|pem)$/) ?? 'jwks';
    if (format === 'pem') return reply.type('application/x-pem-file').send(ctx.ca.bundlePem());
    return bundleToJwks(ctx.ca.bundle());
  });

  app.get('/v1/bundle/watch', async (req, reply) => {
    const after = queryInt(req.query, 'after', 0, 0, Number.MAX_SAFE_INTEGER);
    const timeout = queryInt(req.query, 'timeout_seconds', 25, 0, 60);
    await waitFor(ctx.ca, 'bundle', () => ctx.ca.bundleSequence() > after, timeout * 1000, reply);
    const sequence = ctx.ca.bundleSequence();
    return { sequence, changed: sequence > after, bundle_pem: ctx.ca.bundlePem(), jwks: bundleToJwks(ctx.ca.bundle()) };
  });

  app.get('/.well-known/openid-configuration', async () => ({
    issuer: ctx.issuer,
    jwks_uri: `${ctx.issuer}/keys`,
    id_token_signing_alg_values_supported: ['ES256'],
    response_types_supported: ['id_token'],
    subject_types_supported: ['public'],
  }));

  app.get('/keys', async () => jwtKeysAsJwks(ctx.ca.bundle()));
}
