import type { FastifyInstance } from 'fastify';
import { bundleToJwks, jwtKeysAsJwks } from '../../core/bundle.js';
import { parseCsrPem, type ParsedCsr } from '../../core/csr.js';
import { TesseraError } from '../../core/errors.js';
import { pemEncode } from '../../core/x509.js';
import { audited, liveSvidCaller, waitFor } from '../api/handlers.js';
import { body, int, queryInt, queryStr, reqStr, strList } from '../../common/api/validate.js';
import type { ServerContext } from '../context.js';
import { entryView } from '../registry/routes.js';
import { JOIN_TOKEN } from '../registry/service.js';
import type { IssuedSvid } from './service.js';
import type { BundleWatchResponse, JwtSvidResponse, SvidResponse } from '../../core/wire/control-plane.js';

const AUDIENCE = /^[\x21-\x7e]{1,256}$/;

function csrFrom(b: Record<string, unknown>): ParsedCsr {
  return parseCsrPem(reqStr(b, 'csr', { max: 16 * 1024 }));
}

function svidView(svid: IssuedSvid): SvidResponse {
  return {
    spiffe_id: svid.entry.spiffeId,
    svid_pem: pemEncode(svid.der, 'CERTIFICATE'),
    not_before: svid.notBefore.toISOString(),
    not_after: svid.notAfter.toISOString(),
    bundle_sequence: svid.bundleSequence,
    ...(svid.bundlePem !== undefined ? { bundle_pem: svid.bundlePem } : {}),
    entry: entryView(svid.entry),
  };
}

/** Identity issuance (join, renewal), derived credentials (JWT-SVIDs) and the public trust material. */
export function svidRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const { svids } = ctx;

  app.post('/v1/agent/join', (req) => audited(ctx, req, 'svid.join', async (ev) => {
    const b = body(req.body, ['join_token', 'csr']);
    const token = b.join_token;
    // Validate the CSR before touching the token, so a malformed request does not burn it.
    const csr = csrFrom(b);
    if (typeof token !== 'string' || !JOIN_TOKEN.test(token)) {
      ev.detail.reason = 'malformed';
      throw new TesseraError('TESSERA_TOKEN_INVALID');
    }
    const svid = await svids.join(token, csr, ev);
    ev.succeed();
    return svidView(svid);
  }));

  app.post('/v1/svid/renew', (req) => audited(ctx, req, 'svid.renew', async (ev) => {
    const { entry } = await liveSvidCaller(ctx, req, ev);
    ev.target = entry.spiffeId;
    const b = body(req.body, ['csr', 'bundle_sequence']);
    const sequence = int(b, 'bundle_sequence', { min: 0, max: Number.MAX_SAFE_INTEGER, optional: true });
    const csr = csrFrom(b);
    const svid = await svids.renew(entry, csr, ev, sequence);
    ev.succeed();
    return svidView(svid);
  }));

  app.post('/v1/svid/jwt', (req) => audited(ctx, req, 'svid.jwt', async (ev) => {
    const { caller, entry } = await liveSvidCaller(ctx, req, ev);
    ev.target = caller.spiffeId;
    const b = body(req.body, ['audience', 'ttl_seconds']);
    const audience = strList(b, 'audience', { minItems: 1, maxItems: 16, maxLength: 256, pattern: AUDIENCE })!;
    const ttl = int(b, 'ttl_seconds', { min: 1, max: 86400, optional: true });
    const jwt = await svids.mintJwt(caller.spiffeId, entry, audience, ttl, ev);
    ev.succeed();
    return { token: jwt.token, spiffe_id: caller.spiffeId, audience, expires_at: jwt.expiresAt.toISOString() } satisfies JwtSvidResponse;
  }));

  app.get('/v1/bundle', async (req, reply) => {
    const format = queryStr(req.query, 'format', /^(jwks|pem)$/) ?? 'jwks';
    if (format === 'pem') return reply.type('application/x-pem-file').send(ctx.ca.bundlePem());
    // The https_spiffe bundle endpoint (SPIFFE_Federation.md §5.2.2): this listener, with the server's X509-SVID.
    return { ...bundleToJwks(ctx.ca.bundle()), spiffe_refresh_hint: ctx.federation.settings.refreshHintSeconds };
  });

  app.get('/v1/bundle/watch', async (req, reply) => {
    const after = queryInt(req.query, 'after', 0, 0, Number.MAX_SAFE_INTEGER);
    const timeout = queryInt(req.query, 'timeout_seconds', 25, 0, 60);
    // Agents ask for the federated bundles too (issue 14): they wake on either change.
    const fedAfter = (req.query as Record<string, unknown> | undefined)?.federation_after === undefined ? undefined : queryInt(req.query, 'federation_after', 0, 0, Number.MAX_SAFE_INTEGER);
    const fedChanged = (): boolean => fedAfter !== undefined && ctx.federation.revision() > fedAfter;
    await waitFor([ctx.ca, ctx.federation], 'bundle', () => ctx.ca.bundleSequence() > after || fedChanged(), timeout * 1000, reply);
    const sequence = ctx.ca.bundleSequence();
    const res: BundleWatchResponse = { sequence, changed: sequence > after, bundle_pem: ctx.ca.bundlePem(), jwks: bundleToJwks(ctx.ca.bundle()) };
    if (fedChanged()) res.federation = ctx.federation.feed();
    return res;
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
