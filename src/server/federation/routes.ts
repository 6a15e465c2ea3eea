/**
 * Federation routes (issue 14). Admin (audited, admin policy actions `admin:federation.*`):
 * `POST /v1/federation`, `GET /v1/federation`, `GET /v1/federation/:td`, `POST /v1/federation/:td/remove`.
 * The bundle endpoint itself is GET /v1/bundle (https_spiffe: this listener, authenticated by the
 * server's X509-SVID) and, with --bundle-endpoint, a separate https_web listener (endpoint.ts).
 */
import type { FastifyInstance } from 'fastify';
import { TesseraError } from '../../core/errors.js';
import { body, str } from '../../common/api/validate.js';
import type { FederationListResponse, FederationResponse } from '../../core/wire/federation.js';
import { adminCaller, audited } from '../api/handlers.js';
import type { ServerContext } from '../context.js';

const TD_PARAM = /^[a-z0-9._-]{1,255}$/;

function tdParam(td: string): string {
  if (!TD_PARAM.test(td)) throw new TesseraError('TESSERA_FEDERATION_NOT_FOUND', 'not a trust domain name');
  return td;
}

export function federationRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const fed = ctx.federation;

  app.post('/v1/federation', (req, reply) => audited(ctx, req, 'federation.add', async (ev) => {
    const b = body(req.body, ['trust_domain', 'endpoint', 'profile', 'endpoint_id', 'bundle', 'ca_pem']);
    ev.target = typeof b.trust_domain === 'string' ? b.trust_domain.slice(0, 255) : '';
    const caller = await adminCaller(ctx, req, ev, 'admin:federation.add');
    const bundle = str(b, 'bundle', { max: 1024 * 1024, optional: true });
    const caPem = str(b, 'ca_pem', { max: 256 * 1024, optional: true });
    const added = await fed.add({ trustDomain: b.trust_domain, endpoint: b.endpoint, profile: b.profile, endpointId: b.endpoint_id, ...(bundle !== undefined ? { bundle } : {}), ...(caPem !== undefined ? { caPem } : {}) }, caller.spiffeId);
    ev.detail.endpoint = added.view.endpoint;
    ev.detail.profile = added.view.profile;
    if (added.view.endpoint_id) ev.detail.endpoint_id = added.view.endpoint_id;
    if (added.view.sequence !== undefined) ev.detail.sequence = added.view.sequence;
    ev.succeed();
    return reply.code(201).send({ federation: added.view } satisfies FederationResponse);
  }));

  app.get('/v1/federation', (req) => audited(ctx, req, 'federation.list', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:federation.list');
    ev.succeed();
    return { federations: fed.list() } satisfies FederationListResponse;
  }));

  app.get<{ Params: { td: string } }>('/v1/federation/:td', (req) => audited(ctx, req, 'federation.show', async (ev) => {
    ev.target = req.params.td.slice(0, 255);
    await adminCaller(ctx, req, ev, 'admin:federation.show', ev.target);
    const shown = fed.show(tdParam(req.params.td));
    ev.succeed();
    return { federation: shown.view, ...(shown.jwks ? { bundle: shown.jwks } : {}) } satisfies FederationResponse;
  }));

  app.post<{ Params: { td: string } }>('/v1/federation/:td/remove', (req) => audited(ctx, req, 'federation.remove', async (ev) => {
    ev.target = req.params.td.slice(0, 255);
    await adminCaller(ctx, req, ev, 'admin:federation.remove', ev.target);
    body(req.body ?? {}, []);
    const view = await fed.remove(tdParam(req.params.td));
    ev.succeed();
    return { federation: view, removed: true };
  }));
}
