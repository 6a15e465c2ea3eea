/**
 * Admin API for people (`/v1/users`, `/v1/groups`, `/v1/console/links`): an admin credential
 * (client certificate, adminCaller) as for every admin route today; audited `user.*`, `console.*`.
 */
import type { FastifyInstance } from 'fastify';
import { TesseraError } from '../../core/errors.js';
import { body, int, reqStr, str, strList } from '../../common/api/validate.js';
import { adminCaller, audited } from '../api/handlers.js';
import type { ServerContext } from '../context.js';
import type { UserRecord } from '../store/store.js';
import { CONSOLE_LINK_MAX_TTL_MS, CONSOLE_LINK_TTL_MS, ENROL_TTL_MS } from './service.js';
import { GROUP, USERNAME } from './users.js';

const REASON = /^[\x20-\x7e]{1,256}$/;
const EMAIL = /^[^\s@]{1,64}@[^\s@]{1,189}$/;
const DISPLAY = /^[^\x00-\x1f\x7f]{1,128}$/;
/** The user a console link is for when `--user` is not given (created on demand, local, no credential). */
export const DEFAULT_CONSOLE_USER = 'admin';

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

/** The admin view of a user: never a credential, only what kinds it has. */
export function userView(u: UserRecord, credentials?: { kind: string; createdAt: number; lastUsedAt: number | null }[]): Record<string, unknown> {
  return {
    username: u.username, spiffe_id: u.spiffeId, source: u.source, state: u.state, email: u.email, display_name: u.displayName, groups: u.groups,
    oidc_issuer: u.oidcIssuer, oidc_subject: u.oidcSubject, created_at: iso(u.createdAt), created_by: u.createdBy, updated_at: iso(u.updatedAt),
    disabled_reason: u.disabledReason,
    ...(credentials ? { credentials: credentials.map((c) => ({ kind: c.kind, created_at: iso(c.createdAt), last_used_at: iso(c.lastUsedAt) })) } : {}),
  };
}

function nameParam(name: string): string {
  if (!USERNAME.test(name)) throw new TesseraError('TESSERA_NOT_FOUND', 'no such user');
  return name;
}

export function peopleAdminRoutes(app: FastifyInstance, ctx: ServerContext, store: { listCredentials(u: string): Promise<{ kind: string; createdAt: number; lastUsedAt: number | null }[]> }): void {
  const { users, people, sessions } = ctx;

  app.post('/v1/users', (req, reply) => audited(ctx, req, 'user.add', async (ev) => {
    const caller = await adminCaller(ctx, req, ev, 'admin:user.add');
    const b = body(req.body, ['username', 'groups', 'email', 'display_name', 'enrol_ttl_seconds']);
    const username = reqStr(b, 'username', { max: 63, pattern: USERNAME });
    ev.target = users.idOf(username);
    const groups = strList(b, 'groups', { maxItems: 64, maxLength: 63, pattern: GROUP, optional: true }) ?? [];
    const email = str(b, 'email', { max: 254, pattern: EMAIL, optional: true });
    const displayName = str(b, 'display_name', { max: 128, pattern: DISPLAY, optional: true });
    const ttl = int(b, 'enrol_ttl_seconds', { min: 60, max: 7 * 86_400, optional: true });
    const user = await users.addLocal({ username, groups, ...(email ? { email } : {}), ...(displayName ? { displayName } : {}) }, caller.spiffeId);
    const link = await people.enrolmentLink(username, ttl === undefined ? ENROL_TTL_MS : ttl * 1000);
    ev.succeed();
    // The link is a bearer credential shown once to the admin (its token is stored hashed only).
    return reply.code(201).send({ user: userView(user), enrolment_url: link.url, enrolment_expires_at: iso(link.expiresAt) });
  }));

  app.get('/v1/users', (req) => audited(ctx, req, 'user.list', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:user.list');
    const list = await users.list();
    ev.succeed();
    return { users: list.map((u) => userView(u)) };
  }));

  app.get<{ Params: { name: string } }>('/v1/users/:name', (req) => audited(ctx, req, 'user.show', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:user.show');
    const u = await users.require(nameParam(req.params.name));
    ev.target = u.spiffeId;
    const creds = await store.listCredentials(u.username);
    ev.succeed();
    return { user: userView(u, creds) };
  }));

  app.post<{ Params: { name: string } }>('/v1/users/:name/remove', (req) => audited(ctx, req, 'user.remove', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:user.remove');
    const name = nameParam(req.params.name);
    ev.target = users.idOf(name);
    body(req.body ?? {}, []);
    // Its `tessera login` certificates first: the user's row (and their records) go with the removal.
    ev.detail.certs_revoked = await ctx.personCerts.revokeAll(name, 'user removed');
    const u = await users.remove(name);
    ev.succeed();
    return { user: userView(u), removed: true };
  }));

  app.post<{ Params: { name: string } }>('/v1/users/:name/disable', (req) => audited(ctx, req, 'user.disable', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:user.disable');
    const name = nameParam(req.params.name);
    ev.target = users.idOf(name);
    const reason = reqStr(body(req.body, ['reason']), 'reason', { max: 256, pattern: REASON });
    ev.detail.reason = reason;
    const r = await users.disable(name, reason);
    ev.detail.sessions_ended = r.sessionsEnded;
    ev.detail.certs_revoked = await ctx.personCerts.revokeAll(name, 'user disabled');
    ev.succeed();
    return { user: userView(r.user), sessions_ended: r.sessionsEnded };
  }));

  app.post<{ Params: { name: string } }>('/v1/users/:name/enable', (req) => audited(ctx, req, 'user.enable', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:user.enable');
    const name = nameParam(req.params.name);
    ev.target = users.idOf(name);
    body(req.body ?? {}, []);
    const u = await users.enable(name);
    ev.succeed();
    return { user: userView(u) };
  }));

  app.post<{ Params: { name: string } }>('/v1/users/:name/logout-all', (req) => audited(ctx, req, 'user.logout_all', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:user.logout_all');
    const name = nameParam(req.params.name);
    ev.target = users.idOf(name);
    body(req.body ?? {}, []);
    await users.require(name);
    const ended = await sessions.endAll(name);
    ev.detail.sessions_ended = ended;
    ev.detail.certs_revoked = await ctx.personCerts.revokeAll(name, 'logout everywhere (by an admin)');
    ev.succeed();
    return { username: name, sessions_ended: ended };
  }));

  app.post<{ Params: { name: string } }>('/v1/users/:name/enrolment', (req) => audited(ctx, req, 'user.enrol_link', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:user.enrol_link');
    const name = nameParam(req.params.name);
    ev.target = users.idOf(name);
    const ttl = int(body(req.body ?? {}, ['enrol_ttl_seconds']), 'enrol_ttl_seconds', { min: 60, max: 7 * 86_400, optional: true });
    const link = await people.enrolmentLink(name, ttl === undefined ? ENROL_TTL_MS : ttl * 1000);
    ev.succeed();
    return { username: name, enrolment_url: link.url, enrolment_expires_at: iso(link.expiresAt) };
  }));

  app.get('/v1/groups', (req) => audited(ctx, req, 'user.group_list', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:user.group_list');
    const groups = await users.groups();
    ev.succeed();
    return { groups };
  }));

  app.post('/v1/console/links', (req, reply) => audited(ctx, req, 'console.link', async (ev) => {
    const caller = await adminCaller(ctx, req, ev, 'admin:console.link');
    const b = body(req.body ?? {}, ['username', 'ttl_seconds']);
    const username = str(b, 'username', { max: 63, pattern: USERNAME, optional: true }) ?? DEFAULT_CONSOLE_USER;
    const ttlS = int(b, 'ttl_seconds', { min: 10, max: CONSOLE_LINK_MAX_TTL_MS / 1000, optional: true });
    ev.target = users.idOf(username);
    if (username === DEFAULT_CONSOLE_USER && !(await users.get(username))) {
      await users.addLocal({ username, groups: [] }, caller.spiffeId);
      ev.detail.user_created = true;
    }
    const link = await people.consoleLink(username, ttlS === undefined ? CONSOLE_LINK_TTL_MS : ttlS * 1000);
    ev.succeed();
    return reply.code(201).send({ username, url: link.url, expires_at: iso(link.expiresAt), mfa: false });
  }));
}
