import type { EventEmitter } from 'node:events';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { TesseraError } from '../../core/errors.js';
import type { AuditEvent } from '../audit/audit.js';
import type { ServerContext } from '../context.js';
import type { EntryRecord } from '../store/store.js';
import { authenticate, type Caller } from '../../common/api/auth.js';
import type { AdminAction } from '../../core/policy/admin-schema.js';
import { principalOfSession, type AdminPrincipal } from '../authz/principal.js';
import { cookieValue } from '../../common/cookies.js';
import { SESSION_COOKIE } from '../people/sessions.js';
import type { TLSSocket } from 'node:tls';

/**
 * Runs a handler inside an audit event: the event starts denied, the handler marks success
 * explicitly, and whatever is thrown is recorded with its code before it reaches the client.
 */
export async function audited<T>(ctx: ServerContext, req: FastifyRequest, action: string, fn: (ev: AuditEvent) => Promise<T>): Promise<T> {
  const ev = ctx.audit.begin(action, `ip:${req.ip}`);
  let err: unknown;
  try {
    return await fn(ev);
  } catch (e) {
    err = e;
    if (req.authFailure) ev.detail.auth_failure = req.authFailure;
    throw e;
  } finally {
    // The response waits for its audit record to be stored (group commit, see AuditLog).
    await ctx.audit.record(ev, err);
  }
}

/** Authenticates an SVID caller and names it as the event's actor. */
export function svidCaller(ctx: ServerContext, req: FastifyRequest, ev: AuditEvent): Caller {
  const caller = authenticate(req, ctx.trustDomain);
  ev.actor = caller.spiffeId;
  return caller;
}

/**
 * Authenticates an SVID caller that must hold a live registration entry (RegistryService.liveEntry:
 * an existing, unrevoked entry, and a certificate not issued for a revoked or deleted one).
 * The refusal says as little as possible: one code, TESSERA_IDENTITY_REVOKED, for no entry, a
 * revoked entry and a revoked certificate; the audit record says which (`detail.identity`).
 * `ev` undefined: a frequent route that is not audited (the policy bundle's long poll).
 */
export async function liveSvidCaller(ctx: ServerContext, req: FastifyRequest, ev: AuditEvent | undefined): Promise<{ caller: Caller; entry: EntryRecord }> {
  const caller = authenticate(req, ctx.trustDomain);
  if (ev) ev.actor = caller.spiffeId;
  const entry = await ctx.registry.liveEntry(caller.spiffeId, caller.serial);
  if (typeof entry === 'string') {
    if (ev) ev.detail.identity = entry;
    throw new TesseraError('TESSERA_IDENTITY_REVOKED', 'this identity is not a live workload');
  }
  return { caller, entry };
}

/**
 * A live SVID caller (see {@link liveSvidCaller}) or an admin principal allowed `action` by the admin
 * policy (see {@link adminCaller}; an admin has no entry): routes that workloads use too.
 */
export async function liveOrAdminCaller(ctx: ServerContext, req: FastifyRequest, ev: AuditEvent | undefined, action: AdminAction): Promise<Caller> {
  return (await liveOrAdmin(ctx, req, ev, action)).caller;
}

/** {@link liveOrAdminCaller}, saying which of the two the caller is. */
export async function liveOrAdmin(ctx: ServerContext, req: FastifyRequest, ev: AuditEvent | undefined, action: AdminAction): Promise<{ caller: Caller; admin: boolean }> {
  const viaSession = await sessionAdmin(ctx, req, ev, action, ev?.target);
  if (viaSession !== undefined) return { caller: viaSession, admin: true };
  const caller = authenticate(req, ctx.trustDomain);
  let principal: AdminPrincipal | undefined;
  try {
    principal = ctx.adminAuthz.principalOfCert(caller);
  } catch {
    // Not an admin credential: judged as a workload.
  }
  if (principal === undefined) return { caller: (await liveSvidCaller(ctx, req, ev)).caller, admin: false };
  await ctx.adminAuthz.authorize(principal, action, ev?.target, ev);
  return { caller, admin: true };
}

/**
 * Authenticates an admin principal by its client certificate (the bootstrap credential, a named
 * admin's, or a person's) and asks the admin policy whether it may perform `action` (on `target`,
 * default the event's target). Refusals: TESSERA_FORBIDDEN for a non-admin identity or an action the
 * policy does not permit (naming the action), TESSERA_ADMIN_REVOKED for a removed admin,
 * TESSERA_MFA_REQUIRED when fresh MFA would permit it. The actor of the audit record is the
 * principal's own identity (`spiffe://<td>/tessera/admin/<name>`), and the decision is its
 * `detail.admin_authorize`.
 */
export async function adminCaller(ctx: ServerContext, req: FastifyRequest, ev: AuditEvent, action: AdminAction, target?: string): Promise<Caller> {
  const viaSession = await sessionAdmin(ctx, req, ev, action, target ?? ev.target);
  if (viaSession !== undefined) return viaSession;
  const caller = svidCaller(ctx, req, ev);
  await ctx.adminAuthz.authorize(ctx.adminAuthz.principalOfCert(caller), action, target ?? ev.target, ev);
  return caller;
}

/**
 * A person's console session as an admin caller: a request with no client certificate and a
 * session cookie (the console in a browser). The session must be live, a state-changing request
 * must carry the CSRF token from the same Origin (SessionService.requireSession), and the admin
 * policy decides with the session's groups and MFA age, exactly as for a certificate. A request
 * with a client certificate is always judged by its certificate, whatever cookies it carries.
 * Returns undefined when the request is not a session request. The returned Caller names the
 * person (`spiffe://<td>/user/<name>`); its serial is `session:<id>` (no certificate).
 */
async function sessionAdmin(ctx: ServerContext, req: FastifyRequest, ev: AuditEvent | undefined, action: AdminAction, target: string | undefined): Promise<Caller | undefined> {
  if ((req.raw.socket as TLSSocket).getPeerX509Certificate?.() !== undefined) return undefined;
  if (cookieValue(req.headers.cookie, SESSION_COOKIE) === undefined) return undefined;
  const s = await ctx.sessions.requireSession(req);
  if (ev) {
    ev.actor = s.spiffeId;
    ev.detail.session = s.id;
  }
  await ctx.adminAuthz.authorize(principalOfSession(s), action, target, ev);
  return { spiffeId: s.spiffeId, notAfter: Number.MAX_SAFE_INTEGER, serial: `session:${s.id}`, fingerprint: '' };
}

/**
 * Long-poll helper: resolves when `ready()` holds (checked now and on every `event`), when the
 * timeout passes, or when the client goes away, whichever comes first.
 */
export function waitFor(source: EventEmitter | readonly EventEmitter[], event: string, ready: () => boolean, timeoutMs: number, reply: FastifyReply): Promise<void> {
  if (ready()) return Promise.resolve();
  const sources = Array.isArray(source) ? source as readonly EventEmitter[] : [source as EventEmitter];
  return new Promise((resolve) => {
    const check = (): void => {
      if (ready()) done();
    };
    const done = (): void => {
      clearTimeout(timer);
      for (const s of sources) s.off(event, check);
      reply.raw.off('close', done);
      resolve();
    };
    const timer = setTimeout(done, timeoutMs);
    for (const s of sources) s.on(event, check);
    reply.raw.on('close', done);
  });
}
