/**
 * The HTTP side of `tessera login` (login.ts): the CLI's unauthenticated calls (start a device
 * login, redeem a code), the signed-in person's approvals (session + CSRF + Origin, like every
 * state-changing browser request), and the person certificate's own calls (whoami, logout). Audited
 * `login.*`; a device login's "still pending" polls are not (one every few seconds).
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { TesseraError } from '../../core/errors.js';
import { body } from '../../common/api/validate.js';
import { authenticate } from '../../common/api/auth.js';
import { pemEncode } from '../../core/x509.js';
import { audited } from '../api/handlers.js';
import type { ServerContext } from '../context.js';
import type { UserCertRecord } from '../store/store.js';
import type { IssuedLogin } from './login.js';

/** RFC 8628 §3.4 grant type. */
export const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

function certView(r: UserCertRecord): Record<string, unknown> {
  return { username: r.username, spiffe_id: r.spiffeId, groups: r.groups, serial: r.serial, mfa_at: iso(r.mfaAt), issued_at: iso(r.issuedAt), not_after: iso(r.notAfter), flow: r.flow };
}

export function loginRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const { login, sessions, personCerts, signInLimits } = ctx;
  const base = (): string => ctx.issuer.replace(/\/+$/, '');

  const issued = (r: IssuedLogin): Record<string, unknown> => ({
    ...certView(r.rec), trust_domain: ctx.trustDomain, cert_pem: pemEncode(r.der, 'CERTIFICATE'), bundle_pem: ctx.ca.bundlePem(),
  });

  /** The person certificate of a request, live (TESSERA_LOGIN_REVOKED otherwise; TESSERA_FORBIDDEN for any other identity). */
  const personCaller = (req: FastifyRequest): { serial: string; spiffeId: string; username: string } => {
    const caller = authenticate(req, ctx.trustDomain);
    const p = personCerts.principalOf(caller);
    if (p === undefined) throw new TesseraError('TESSERA_FORBIDDEN', 'this call needs a person certificate from `tessera login`');
    return { serial: caller.serial, spiffeId: caller.spiffeId, username: p.name };
  };

  // RFC 8628 §3.1: the device authorization request.
  app.post('/v1/login/device', (req, reply) => audited(ctx, req, 'login.device_start', async (ev) => {
    const b = body(req.body, ['key_thumbprint', 'ttl_seconds', 'step_up']);
    const ask = login.ask(b.key_thumbprint, b.ttl_seconds, b.step_up);
    const r = await login.startDevice(ask, req.ip);
    ev.detail.step_up = ask.stepUp;
    ev.detail.ttl_seconds = ask.ttlMs / 1000;
    ev.succeed();
    // §3.2: verification_uri for the person to type, verification_uri_complete with the code in it.
    return reply.header('cache-control', 'no-store').send({
      device_code: r.deviceCode, user_code: r.userCode, verification_uri: `${base()}/auth/device`,
      verification_uri_complete: `${base()}/auth/device?user_code=${encodeURIComponent(r.userCode)}`, expires_in: r.expiresIn, interval: r.interval,
    });
  }));

  // The token endpoint: a browser-flow code (RFC 6749 §4.1.3 + RFC 7636) or a device code (RFC 8628 §3.4).
  app.post('/v1/login/token', async (req, reply) => {
    const b = body(req.body, ['grant_type', 'code', 'code_verifier', 'redirect_uri', 'device_code', 'csr']);
    if (b.grant_type === DEVICE_GRANT) await login.devicePoll(b.device_code);
    return audited(ctx, req, 'login.token', async (ev) => {
      let r: IssuedLogin;
      if (b.grant_type === DEVICE_GRANT) {
        ev.detail.flow = 'device';
        r = await login.redeemDevice({ deviceCode: b.device_code, csr: b.csr }, ev.detail);
      } else if (b.grant_type === 'authorization_code') {
        ev.detail.flow = 'browser';
        r = await login.redeemCode({ code: b.code, verifier: b.code_verifier, redirectUri: b.redirect_uri, csr: b.csr }, ev.detail);
      } else {
        throw new TesseraError('TESSERA_BAD_REQUEST', `"grant_type" must be authorization_code or ${DEVICE_GRANT}`);
      }
      ev.actor = r.rec.spiffeId;
      ev.target = r.rec.spiffeId;
      ev.detail.serial = r.rec.serial;
      ev.detail.not_after = iso(r.rec.notAfter);
      ev.detail.mfa = r.rec.mfaAt !== null;
      ev.succeed();
      return reply.header('cache-control', 'no-store').send(issued(r));
    });
  });

  // The signed-in person approves or denies the browser flow's request (the page /auth/cli).
  app.post('/v1/login/authorize', (req) => audited(ctx, req, 'login.approve', async (ev) => {
    const s = await sessions.requireSession(req);
    ev.actor = s.spiffeId;
    ev.target = s.spiffeId;
    const b = body(req.body, ['redirect_uri', 'state', 'code_challenge', 'code_challenge_method', 'key_thumbprint', 'ttl_seconds', 'step_up', 'approve']);
    if (typeof b.approve !== 'boolean') throw new TesseraError('TESSERA_BAD_REQUEST', '"approve" must be a boolean');
    const ask = login.ask(b.key_thumbprint, b.ttl_seconds, b.step_up);
    const r = await login.authorize(s, { redirectUri: b.redirect_uri, state: b.state, codeChallenge: b.code_challenge, method: b.code_challenge_method, ask, approve: b.approve, clientIp: req.ip });
    ev.detail.flow = 'browser';
    ev.detail.approved = b.approve;
    ev.succeed();
    return { redirect: r.redirect };
  }));

  // The device flow's page: which CLI asked (time, address), for the person to compare before approving.
  app.post('/v1/login/device/lookup', (req) => audited(ctx, req, 'login.device_lookup', async (ev) => {
    const s = await sessions.requireSession(req);
    ev.actor = s.spiffeId;
    const b = body(req.body, ['user_code']);
    const r = await lookup(s.username, b.user_code);
    ev.succeed();
    return { requested_at: iso(r.createdAt), expires_at: iso(r.expiresAt), client_ip: r.clientIp, ttl_seconds: r.ttlMs / 1000, step_up: r.stepUp, key_thumbprint: r.keyThumbprint };
  }));

  app.post('/v1/login/device/decide', (req) => audited(ctx, req, 'login.device_decide', async (ev) => {
    const s = await sessions.requireSession(req);
    ev.actor = s.spiffeId;
    ev.target = s.spiffeId;
    const b = body(req.body, ['user_code', 'approve']);
    if (typeof b.approve !== 'boolean') throw new TesseraError('TESSERA_BAD_REQUEST', '"approve" must be a boolean');
    const r = await lookup(s.username, b.user_code);
    ev.detail.approved = b.approve;
    ev.detail.client_ip = r.clientIp;
    await login.decideDevice(s, r, b.approve);
    ev.succeed();
    return { approved: b.approve };
  }));

  /** The pending request a user code names; a miss spends one of the person's few wrong guesses (RFC 8628 §5.1). */
  async function lookup(username: string, userCode: unknown): Promise<NonNullable<Awaited<ReturnType<typeof login.pendingByUserCode>>>> {
    signInLimits.checkUserCodeAllowance(username);
    const r = await login.pendingByUserCode(userCode);
    if (r === undefined) {
      signInLimits.wrongUserCode(username);
      throw new TesseraError('TESSERA_USER_CODE_INVALID');
    }
    return r;
  }

  // --- Calls made with the person certificate itself.
  app.get('/v1/login/whoami', (req) => audited(ctx, req, 'login.whoami', async (ev) => {
    const me = personCaller(req);
    ev.actor = me.spiffeId;
    const rec = await personCerts.record(me.serial);
    if (!rec) throw new TesseraError('TESSERA_LOGIN_REVOKED');
    ev.succeed();
    return { ...certView(rec), trust_domain: ctx.trustDomain, mfa_max_age_seconds: Math.floor(ctx.adminAuthz.mfaMaxAgeMs / 1000) };
  }));

  app.post('/v1/login/logout', (req) => audited(ctx, req, 'login.logout', async (ev) => {
    const me = personCaller(req);
    ev.actor = me.spiffeId;
    ev.target = me.spiffeId;
    body(req.body ?? {}, []);
    await personCerts.revoke(me.serial, 'tessera logout');
    ev.detail.serial = me.serial;
    ev.succeed();
    return { revoked: 1 };
  }));

  app.post('/v1/login/logout-all', (req) => audited(ctx, req, 'login.logout_all', async (ev) => {
    const me = personCaller(req);
    ev.actor = me.spiffeId;
    ev.target = me.spiffeId;
    body(req.body ?? {}, []);
    const certs = await personCerts.revokeAll(me.username, 'logout everywhere');
    const ended = await sessions.endAll(me.username);
    ev.detail.certs_revoked = certs;
    ev.detail.sessions_ended = ended;
    ev.succeed();
    return { certs_revoked: certs, sessions_ended: ended };
  }));
}
