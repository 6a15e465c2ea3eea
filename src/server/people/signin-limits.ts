/**
 * Limits on the unauthenticated sign-in routes (`/v1/auth/*` and `/v1/login/*`): anyone who can
 * reach the control plane may call them, so without limits one client could guess TOTP codes and
 * user codes as fast as the server answers, or fill the store with challenges and half-done logins.
 * A token bucket per client address (per process, like the decision and bundle limits; `--workers N`
 * allows N times as much) bounds every such request; the stored requests themselves are capped per
 * address and in all by their store (LoginStore.insertLoginRequest), and expire.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { TesseraError } from '../../core/errors.js';
import { parseRateLimit, RateLimiter, type RateLimit } from '../../core/rate-limit.js';

export interface SignInLimitSettings {
  /** Sign-in requests per client address. */
  rateLimit: RateLimit;
  /** Wrong user codes one signed-in person may type (device flow, RFC 8628 §5.1) before waiting. */
  userCodeAttempts: RateLimit;
}

/**
 * A person's sign-in takes 3 to 5 of these requests, a device login's CLI polls one every 5 s or
 * more: 5 a second with bursts of 60 lets an office behind one NAT address sign in together, and
 * holds a guesser to 5 codes a second from one address. Five wrong user codes, then one a minute.
 */
export const DEFAULT_SIGNIN_LIMITS: SignInLimitSettings = { rateLimit: { perSecond: 5, burst: 60 }, userCodeAttempts: { perSecond: 1 / 60, burst: 5 } };

/** `--signin-rate-limit PER_SECOND[:BURST]`. */
export function parseSignInRateLimit(v: string): RateLimit {
  return parseRateLimit(v, '--signin-rate-limit');
}

/** The routes a client reaches without a certificate or session to start or complete a sign-in. */
const LIMITED = new Set([
  'POST /v1/auth/enrol/start', 'POST /v1/auth/enrol/passkey/options', 'POST /v1/auth/enrol/passkey', 'POST /v1/auth/enrol/totp',
  'POST /v1/auth/passkey/options', 'POST /v1/auth/passkey/verify', 'POST /v1/auth/totp', 'POST /v1/auth/link',
  'GET /v1/auth/oidc/start', 'GET /v1/auth/oidc/callback',
  'POST /v1/login/device', 'POST /v1/login/token', 'POST /v1/login/device/lookup', 'POST /v1/login/device/decide', 'POST /v1/login/authorize',
  // The gateway's browser leg: it issues one-time codes (src/server/gateways/).
  'GET /v1/gateway/authorize',
]);

/** A refusal over a limit, with the Retry-After (seconds) to send. */
export class RateLimited extends TesseraError {
  constructor(message: string, readonly retryAfterSeconds: number) {
    super('TESSERA_RATE_LIMITED', message);
  }
}

export class SignInLimits {
  readonly #requests: RateLimiter;
  readonly #userCodes: RateLimiter;

  constructor(readonly settings: SignInLimitSettings, now: () => number = Date.now) {
    this.#requests = new RateLimiter(settings.rateLimit, now);
    this.#userCodes = new RateLimiter(settings.userCodeAttempts, now);
  }

  /** Admits one sign-in request from `ip` (throws RateLimited). */
  admit(ip: string): void {
    if (!this.#requests.take(ip)) throw new RateLimited('too many sign-in requests from this address; retry later', this.#requests.retryAfterSeconds(ip));
  }

  /** Spends one of `who`'s wrong-user-code allowance (throws RateLimited when none is left). */
  wrongUserCode(who: string): void {
    if (!this.#userCodes.take(who)) throw new RateLimited('too many wrong user codes: wait, then type the code the command line shows', this.#userCodes.retryAfterSeconds(who));
  }

  /** Refuses (without spending) while `who` has no wrong-user-code allowance left. */
  checkUserCodeAllowance(who: string): void {
    if (this.#userCodes.peek(who) < 1) {
      throw new RateLimited('too many wrong user codes: wait, then type the code the command line shows', this.#userCodes.retryAfterSeconds(who));
    }
  }

  /** Installs the per-address limit on the sign-in routes, before their handlers (and their audit records) run. */
  install(app: FastifyInstance): void {
    app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
      if (!LIMITED.has(`${req.method} ${req.routeOptions.url ?? ''}`)) return;
      try {
        this.admit(req.ip);
      } catch (err) {
        if (err instanceof RateLimited) void reply.header('retry-after', String(err.retryAfterSeconds));
        throw err;
      }
    });
  }
}
