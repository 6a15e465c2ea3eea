/**
 * Gateway routes (issue 12). Admin: `POST /v1/gateways`, `GET /v1/gateways`, `POST /v1/gateways/:name/remove`.
 * Browser: `GET /v1/gateway/authorize` (the code flow, service.ts). A registered gateway's SVID:
 * `POST /v1/gateway/token`, `GET /v1/gateway/session?ref=`, `POST /v1/gateway/logout-all`,
 * `GET /v1/devices/posture?id=`.
 *
 * Session checks and posture reads are frequent (a gateway asks at most once per session or device
 * every few seconds): they are audited when refused, not when answered; everything else always.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { TesseraError } from '../../core/errors.js';
import { isSpiffeId } from '../../core/spiffe-id.js';
import { body, reqStr, strList } from '../../common/api/validate.js';
import {
  GATEWAY_NAME, PKCE_CHALLENGE, SESSION_REF,
  type AddGatewayResponse, type DevicePostureResponse, type GatewayListResponse, type GatewayLogoutAllResponse, type GatewaySessionResponse, type GatewayTokenResponse,
} from '../../core/wire/gateway.js';
import { adminCaller, audited, liveSvidCaller } from '../api/handlers.js';
import type { AuditEvent } from '../audit/audit.js';
import type { ServerContext } from '../context.js';
import type { GatewayRecord } from '../store/store.js';
import { MAX_GATEWAY_URLS, gatewayView, redirectUrisOf, type GatewayService } from './service.js';

const STATE = /^[A-Za-z0-9_-]{16,128}$/;

/** One query parameter as a single string (a repeated one is refused: which one would count?). */
function q1(req: FastifyRequest, name: string): string | undefined {
  const v = (req.query as Record<string, unknown> | undefined)?.[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new TesseraError('TESSERA_BAD_REQUEST', `query "${name}" must be given once`);
  return v;
}

export function gatewayRoutes(app: FastifyInstance, ctx: ServerContext, gateways: GatewayService): void {
  /** The calling gateway (a live entry named by a registration). */
  async function gatewayCaller(req: FastifyRequest, ev: AuditEvent): Promise<GatewayRecord> {
    const { caller } = await liveSvidCaller(ctx, req, ev);
    const g = await gateways.requireCaller(caller.spiffeId);
    ev.detail.gateway = g.name;
    return g;
  }

  /** Like `audited`, but an answered request leaves no record (volume); a refused one does. */
  async function auditedRefusals<T>(req: FastifyRequest, action: string, fn: (ev: AuditEvent) => Promise<T>): Promise<T> {
    const ev = ctx.audit.begin(action, `ip:${req.ip}`);
    try {
      return await fn(ev);
    } catch (err) {
      if (req.authFailure) ev.detail.auth_failure = req.authFailure;
      await ctx.audit.record(ev, err);
      throw err;
    }
  }

  app.post('/v1/gateways', (req, reply) => audited(ctx, req, 'gateway.add', async (ev) => {
    const caller = await adminCaller(ctx, req, ev, 'admin:gateway.add');
    const b = body(req.body, ['name', 'spiffe_id', 'urls']);
    const name = reqStr(b, 'name', { max: 63 });
    ev.target = name;
    const urls = strList(b, 'urls', { maxItems: MAX_GATEWAY_URLS, maxLength: 256, minItems: 1 })!;
    const g = await gateways.add({ name, spiffeId: reqStr(b, 'spiffe_id', { max: 2048 }), urls }, caller.spiffeId);
    ev.detail.spiffe_id = g.spiffeId;
    ev.detail.urls = g.urls.join(' ');
    ev.succeed();
    return reply.code(201).send({ gateway: gatewayView(g) } satisfies AddGatewayResponse);
  }));

  app.get('/v1/gateways', (req) => audited(ctx, req, 'gateway.list', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:gateway.list');
    const list = await gateways.list();
    ev.succeed();
    return { gateways: list.map(gatewayView) } satisfies GatewayListResponse;
  }));

  app.post<{ Params: { name: string } }>('/v1/gateways/:name/remove', (req) => audited(ctx, req, 'gateway.remove', async (ev) => {
    ev.target = req.params.name.slice(0, 63);
    await adminCaller(ctx, req, ev, 'admin:gateway.remove', ev.target);
    body(req.body ?? {}, []);
    const g = await gateways.remove(req.params.name);
    ev.succeed();
    return { gateway: gatewayView(g), removed: true };
  }));

  // The browser arrives from the gateway. Every check of the gateway and redirect URI comes before any
  // redirect: a request naming another redirect URI gets an error page, never a redirect (no open
  // redirect), and no code is issued without a signed-in session.
  app.get('/v1/gateway/authorize', (req, reply) => audited(ctx, req, 'gateway.authorize', async (ev) => {
    const name = q1(req, 'gateway') ?? '';
    if (!GATEWAY_NAME.test(name)) throw new TesseraError('TESSERA_GATEWAY_NOT_FOUND');
    ev.detail.gateway = name;
    const g = await gateways.require(name);
    const redirectUri = q1(req, 'redirect_uri');
    if (redirectUri === undefined || !redirectUrisOf(g).includes(redirectUri)) throw new TesseraError('TESSERA_REDIRECT_INVALID', 'redirect_uri is not a registered redirect URI of this gateway');
    const state = q1(req, 'state');
    if (state === undefined || !STATE.test(state)) throw new TesseraError('TESSERA_BAD_REQUEST', '"state" must be 16-128 base64url characters');
    const challenge = q1(req, 'code_challenge');
    // PKCE is required, and only S256 (RFC 7636 §4.2: "plain" gives nothing against a stolen code here).
    if (q1(req, 'code_challenge_method') !== 'S256' || challenge === undefined || !PKCE_CHALLENGE.test(challenge)) {
      throw new TesseraError('TESSERA_BAD_REQUEST', 'PKCE is required: code_challenge (43 base64url characters) with code_challenge_method=S256');
    }
    const stepUp = q1(req, 'step_up') === '1';
    const maxAgeText = q1(req, 'max_mfa_age');
    if (maxAgeText !== undefined && !/^\d{1,6}$/.test(maxAgeText)) throw new TesseraError('TESSERA_BAD_REQUEST', '"max_mfa_age" must be whole seconds');
    const maxMfaAgeMs = Number(maxAgeText ?? '0') * 1000;
    const back = req.url;
    const session = await ctx.sessions.fromRequest(req);
    const mfaStale = session !== undefined && stepUp && (session.mfaAt === undefined || ctx.people.now() - session.mfaAt > maxMfaAgeMs);
    if (session === undefined || mfaStale) {
      ev.detail.signin = mfaStale ? 'step-up' : 'required';
      ev.succeed();
      const to = `/auth/signin?${mfaStale ? 'step_up=1&' : ''}return_to=${encodeURIComponent(back)}`;
      return reply.code(303).header('location', to).header('cache-control', 'no-store').send();
    }
    ev.actor = session.spiffeId;
    ev.target = session.spiffeId;
    const ref = (await ctx.sessions.refOf(req))!;
    const code = await gateways.issueCode(g, ref, redirectUri, challenge);
    ev.detail.session = session.id;
    ev.succeed();
    const to = new URL(redirectUri);
    to.searchParams.set('code', code);
    to.searchParams.set('state', state);
    return reply.code(303).header('location', to.toString()).header('cache-control', 'no-store').header('referrer-policy', 'no-referrer').send();
  }));

  app.post('/v1/gateway/token', (req) => audited(ctx, req, 'gateway.token', async (ev) => {
    const g = await gatewayCaller(req, ev);
    const b = body(req.body, ['code', 'code_verifier', 'redirect_uri']);
    const ref = await gateways.redeem(g, reqStr(b, 'code', { max: 64 }), reqStr(b, 'code_verifier', { max: 128 }), reqStr(b, 'redirect_uri', { max: 512 }));
    const s = await ctx.sessions.byRef(ref);
    if (!s) throw new TesseraError('TESSERA_SESSION_REQUIRED', 'the session the code was issued for has ended');
    ev.target = s.info.spiffeId;
    ev.detail.session = s.info.id;
    ev.succeed();
    return {
      username: s.info.username, spiffe_id: s.info.spiffeId, groups: s.info.groups, mfa_at: s.info.mfaAt ?? null, session_ref: ref, session_expires_at: s.expiresAt,
    } satisfies GatewayTokenResponse;
  }));

  app.get('/v1/gateway/session', (req) => auditedRefusals(req, 'gateway.session', async (ev) => {
    await gatewayCaller(req, ev);
    const ref = q1(req, 'ref');
    if (ref === undefined || !SESSION_REF.test(ref)) throw new TesseraError('TESSERA_BAD_REQUEST', '"ref" must be a session reference');
    const s = await ctx.sessions.byRef(ref);
    if (!s) throw new TesseraError('TESSERA_SESSION_REQUIRED');
    return { live: true, username: s.info.username, groups: s.info.groups, mfa_at: s.info.mfaAt ?? null } satisfies GatewaySessionResponse;
  }));

  app.post('/v1/gateway/logout-all', (req) => audited(ctx, req, 'gateway.logout_all', async (ev) => {
    await gatewayCaller(req, ev);
    const ref = reqStr(body(req.body, ['session_ref']), 'session_ref', { max: 64, pattern: SESSION_REF });
    const s = await ctx.sessions.byRef(ref);
    if (!s) throw new TesseraError('TESSERA_SESSION_REQUIRED');
    ev.target = s.info.spiffeId;
    const ended = await ctx.sessions.endAll(s.info.username);
    ev.detail.sessions_ended = ended;
    ev.succeed();
    return { username: s.info.username, sessions_ended: ended } satisfies GatewayLogoutAllResponse;
  }));

  app.get('/v1/devices/posture', (req) => auditedRefusals(req, 'gateway.posture', async (ev) => {
    await gatewayCaller(req, ev);
    const id = q1(req, 'id');
    if (id === undefined || id.length > 2048 || !isSpiffeId(id)) throw new TesseraError('TESSERA_BAD_REQUEST', '"id" must be a device SPIFFE ID');
    ev.target = id;
    return { device: await ctx.devices.postureContext(id) } satisfies DevicePostureResponse;
  }));
}
