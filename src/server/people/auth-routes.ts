/**
 * The sign-in API of people (`/v1/auth/...`), JSON first: the sign-in pages (pages.ts) and the web
 * console call these. No client certificate here: a person's browser has none. Every request that
 * may change state checks its Origin (login CSRF included); those made with a session also need
 * the CSRF token (SessionService.requireSession). Each sign-in step is audited (`login.*`,
 * `user.enrol*`, `session.*`); the actor is the user once known.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { TesseraError } from '../../core/errors.js';
import { body, queryInt, reqStr, str } from '../../common/api/validate.js';
import { audited } from '../api/handlers.js';
import type { AuditEvent } from '../audit/audit.js';
import type { ServerContext } from '../context.js';
import type { UserRecord } from '../store/store.js';
import { cookieValue, serializeCookie } from '../../common/cookies.js';
import { parseReturnTo } from './return-to.js';
import { ENROLLING_TTL_MS, MFA_PENDING_TTL_MS, OIDC_FLOW_TTL_MS } from './service.js';
import { addCookie, type NewSession, type SessionInfo } from './sessions.js';
import { TOKEN } from './tickets.js';
import { USERNAME } from './users.js';

export const ENROL_COOKIE = '__Host-tessera_enrol';
export const MFA_COOKIE = '__Host-tessera_mfa';
/** SameSite=Lax: the provider's redirect back is a cross-site top-level navigation that must carry it. */
export const OIDC_COOKIE = '__Host-tessera_oidc';
const CODE = /^[0-9]{6}$/;

const iso = (ms: number | undefined): string | null => (ms === undefined ? null : new Date(ms).toISOString());

/** The JSON view of a session (no secret in it). */
export function sessionView(s: SessionInfo): Record<string, unknown> {
  return { username: s.username, spiffe_id: s.spiffeId, groups: s.groups, source: s.source, mfa_at: iso(s.mfaAt), created_at: iso(s.createdAt) };
}

function token(b: Record<string, unknown>, field: string): string {
  const t = reqStr(b, field, { max: 64 });
  if (!TOKEN.test(t)) throw new TesseraError('TESSERA_LINK_INVALID');
  return t;
}

export function authRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const { sessions, people, users } = ctx;
  const now = (): number => people.now();

  /** Opens a session for `user` (a new id, replacing the request's old session) and answers with it. */
  async function signedIn(req: FastifyRequest, reply: FastifyReply, ev: AuditEvent, user: UserRecord, mfaAt: number | undefined): Promise<NewSession> {
    const s = await sessions.create(user, { mfaAt, replaces: req });
    sessions.setCookies(reply, s);
    ev.actor = user.spiffeId;
    ev.detail.session = s.info.id;
    ev.detail.mfa = mfaAt !== undefined;
    return s;
  }
  const sessionBody = (s: NewSession): Record<string, unknown> => ({ session: { ...sessionView(s.info), expires_at: iso(s.expiresAt) }, csrf_token: s.csrf });
  const flowCookie = (reply: FastifyReply, name: string, value: string, ttlMs: number, sameSite: 'Strict' | 'Lax' = 'Strict'): void =>
    addCookie(reply, serializeCookie(name, value, { httpOnly: true, sameSite, maxAge: value === '' ? 0 : ttlMs / 1000 }));

  app.get('/v1/auth/config', async () => ({ oidc: people.oidc !== undefined, public_url: ctx.issuer }));

  // `max_mfa_age_seconds`: also refuse (TESSERA_MFA_REQUIRED) unless the session's MFA is that recent,
  // so a page can offer the step-up before it attempts an action that needs it.
  app.get<{ Querystring: Record<string, unknown> }>('/v1/auth/session', async (req) => {
    const maxAge = queryInt(req.query, 'max_mfa_age_seconds', -1, 0, 30 * 86_400);
    const s = await sessions.requireSession(req, maxAge < 0 ? {} : { maxMfaAgeMs: maxAge * 1000 });
    return { session: sessionView(s), csrf_token: cookieValue(req.headers.cookie, '__Host-tessera_csrf') ?? null };
  });

  // --- Enrolment of a local user (the one-time link of `tessera user add`).
  app.post('/v1/auth/enrol/start', (req, reply) => audited(ctx, req, 'user.enrol_start', async (ev) => {
    sessions.checkOrigin(req);
    const r = await people.startEnrolment(token(body(req.body, ['token']), 'token'));
    ev.actor = r.user.spiffeId;
    ev.target = r.user.spiffeId;
    flowCookie(reply, ENROL_COOKIE, r.enrolling, ENROLLING_TTL_MS);
    ev.succeed();
    // The otpauth URI (with the seed) is shown this once; it is never stored or sent again in clear.
    return { username: r.user.username, passkey_options: r.passkeyOptions, totp_uri: r.totpUri };
  }));

  app.post('/v1/auth/enrol/passkey/options', (req) => audited(ctx, req, 'user.enrol_challenge', async (ev) => {
    sessions.checkOrigin(req);
    body(req.body ?? {}, []);
    const options = await people.enrolPasskeyOptions(cookieValue(req.headers.cookie, ENROL_COOKIE));
    ev.succeed();
    return { options };
  }));

  app.post('/v1/auth/enrol/passkey', (req) => audited(ctx, req, 'user.enrol_passkey', async (ev) => {
    sessions.checkOrigin(req);
    const b = body(req.body, ['response']);
    const user = await people.enrolPasskey(cookieValue(req.headers.cookie, ENROL_COOKIE), b.response);
    ev.actor = user.spiffeId;
    ev.target = user.spiffeId;
    ev.succeed();
    return { username: user.username, next: 'totp' };
  }));

  app.post('/v1/auth/enrol/totp', (req, reply) => audited(ctx, req, 'user.enrol', async (ev) => {
    sessions.checkOrigin(req);
    const code = reqStr(body(req.body, ['code']), 'code', { max: 6, pattern: CODE });
    const user = await people.enrolTotp(cookieValue(req.headers.cookie, ENROL_COOKIE), code);
    ev.target = user.spiffeId;
    flowCookie(reply, ENROL_COOKIE, '', 0);
    const s = await signedIn(req, reply, ev, user, now());
    ev.succeed();
    return sessionBody(s);
  }));

  // --- Local sign-in: passkey, then TOTP.
  app.post('/v1/auth/passkey/options', (req) => audited(ctx, req, 'login.challenge', async (ev) => {
    sessions.checkOrigin(req);
    const b = body(req.body ?? {}, ['username', 'step_up']);
    let username = str(b, 'username', { max: 63, optional: true, pattern: USERNAME });
    // A step-up is for the session's own user: the challenge is bound to it.
    if (b.step_up !== undefined && typeof b.step_up !== 'boolean') throw new TesseraError('TESSERA_BAD_REQUEST', '"step_up" must be a boolean');
    if (b.step_up === true) username = (await sessions.requireSession(req)).username;
    if (username) ev.target = users.idOf(username);
    const options = await people.passkeyOptions(username);
    ev.succeed();
    return { options };
  }));

  app.post('/v1/auth/passkey/verify', (req, reply) => audited(ctx, req, 'login.passkey', async (ev) => {
    sessions.checkOrigin(req);
    const b = body(req.body, ['response']);
    const r = await people.passkeySignIn(b.response);
    ev.actor = r.user.spiffeId;
    ev.target = r.user.spiffeId;
    flowCookie(reply, MFA_COOKIE, r.mfaToken, MFA_PENDING_TTL_MS);
    ev.succeed();
    return { username: r.user.username, next: 'totp' };
  }));

  app.post('/v1/auth/totp', (req, reply) => audited(ctx, req, 'login.totp', async (ev) => {
    sessions.checkOrigin(req);
    const code = reqStr(body(req.body, ['code']), 'code', { max: 6, pattern: CODE });
    const user = await people.totpSignIn(cookieValue(req.headers.cookie, MFA_COOKIE), code, ev.detail);
    ev.target = user.spiffeId;
    flowCookie(reply, MFA_COOKIE, '', 0);
    const s = await signedIn(req, reply, ev, user, now());
    ev.succeed();
    return sessionBody(s);
  }));

  // --- One-time console link (`tessera console link`): a session without MFA.
  app.post('/v1/auth/link', (req, reply) => audited(ctx, req, 'login.link', async (ev) => {
    sessions.checkOrigin(req);
    const user = await people.redeemConsoleLink(token(body(req.body, ['token']), 'token'));
    ev.target = user.spiffeId;
    const s = await signedIn(req, reply, ev, user, undefined);
    ev.succeed();
    return sessionBody(s);
  }));

  // --- OIDC: a browser navigation to the provider and back.
  app.get<{ Querystring: Record<string, unknown> }>('/v1/auth/oidc/start', (req, reply) => audited(ctx, req, 'login.oidc_start', async (ev) => {
    const returnTo = parseReturnTo(req.query.return_to, new URL(ctx.issuer).origin);
    const stepUp = req.query.step_up === '1';
    const r = await people.oidcStart(returnTo, stepUp);
    ev.detail.step_up = stepUp;
    flowCookie(reply, OIDC_COOKIE, r.state, OIDC_FLOW_TTL_MS, 'Lax');
    ev.succeed();
    return reply.code(302).header('location', r.url).header('cache-control', 'no-store').send();
  }));

  app.get<{ Querystring: Record<string, unknown> }>('/v1/auth/oidc/callback', (req, reply) => audited(ctx, req, 'login.oidc', async (ev) => {
    const q = req.url.indexOf('?');
    const query = q < 0 ? '' : req.url.slice(q + 1);
    flowCookie(reply, OIDC_COOKIE, '', 0, 'Lax');
    const r = await people.oidcFinish(query, req.query.state, cookieValue(req.headers.cookie, OIDC_COOKIE));
    ev.target = r.user.spiffeId;
    await signedIn(req, reply, ev, r.user, r.mfaAt);
    ev.succeed();
    return reply.code(303).header('location', r.returnTo).header('cache-control', 'no-store').send();
  }));

  // --- Logout.
  app.post('/v1/auth/logout', (req, reply) => audited(ctx, req, 'session.logout', async (ev) => {
    const s = await sessions.requireSession(req);
    ev.actor = s.spiffeId;
    ev.target = s.spiffeId;
    await sessions.end(req);
    sessions.clearCookies(reply);
    ev.succeed();
    return { ended: 1 };
  }));

  app.post('/v1/auth/logout-all', (req, reply) => audited(ctx, req, 'session.logout_all', async (ev) => {
    const s = await sessions.requireSession(req);
    ev.actor = s.spiffeId;
    ev.target = s.spiffeId;
    const ended = await sessions.endAll(s.username);
    sessions.clearCookies(reply);
    ev.detail.sessions_ended = ended;
    // Everywhere includes the command line: the person's `tessera login` certificates too.
    ev.detail.certs_revoked = await ctx.personCerts.revokeAll(s.username, 'logout everywhere');
    ev.succeed();
    return { ended };
  }));
}
