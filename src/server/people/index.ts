/**
 * People and sign-in (issue 12): builds the services the control plane puts into its context.
 * Other parts use `ctx.sessions` (SessionService.fromRequest / requireSession) and `ctx.users`.
 */
import type { KeyEncryptionKey } from '../../common/kek.js';
import type { PeopleStore } from '../store/store.js';
import { OidcLogin, type OidcSettings } from './oidc.js';
import { PasskeyService } from './passkeys.js';
import { PeopleService } from './service.js';
import { DEFAULT_SESSION_SETTINGS, SessionService, type SessionSettings } from './sessions.js';
import { Tickets } from './tickets.js';
import { UserService } from './users.js';
import type { CertificateAuthority } from '../ca/ca.js';
import type { LoginStore } from '../store/store.js';
import { DEFAULT_LOGIN_CAPS, DEFAULT_LOGIN_MAX_TTL_MS, LoginService, type LoginSettings } from './login.js';
import { PersonCerts } from './person-certs.js';
import { DEFAULT_SIGNIN_LIMITS, SignInLimits, type SignInLimitSettings } from './signin-limits.js';

export type { SessionInfo } from './sessions.js';
export { SessionService } from './sessions.js';

export interface PeopleOptions {
  /** The OIDC provider people sign in with (`tessera server --oidc-issuer ...`); none: local users only. */
  oidc?: OidcSettings;
  sessions?: Partial<SessionSettings>;
  /** `tessera login`: longest certificate (`--login-max-ttl`), and caps on logins under way. */
  login?: Partial<LoginSettings>;
  /** Cap on live sign-in tickets anyone may cause (passkey challenges, half-done sign-ins, OIDC states); default 50,000. */
  maxPendingTickets?: number;
  /** Limits on the unauthenticated sign-in routes (`--signin-rate-limit`). */
  signInLimits?: Partial<SignInLimitSettings>;
  /** The clock of sign-in (TOTP steps, expiries); a server option for tests, not a CLI flag. */
  now?: () => number;
}

export function buildPeople(deps: {
  store: PeopleStore; kek: KeyEncryptionKey; trustDomain: string; now: () => number;
  /** The public base URL (`--public-url`, default the API's URL): WebAuthn origin and RP ID, links, OIDC redirect. */
  issuer: () => string; options: PeopleOptions | undefined;
}): { users: UserService; sessions: SessionService; people: PeopleService } {
  const { store } = deps;
  const now = deps.options?.now ?? deps.now;
  const base = (): string => deps.issuer().replace(/\/+$/, '');
  const origin = (): string => new URL(base()).origin;
  const users = new UserService(store, { trustDomain: deps.trustDomain, now });
  const sessions = new SessionService(store, { now, origin, settings: { ...DEFAULT_SESSION_SETTINGS, ...deps.options?.sessions } });
  const passkeys = new PasskeyService(store, new Tickets(store, now, deps.options?.maxPendingTickets), () => ({ id: new URL(base()).hostname, origin: origin(), name: `Tessera ${deps.trustDomain}` }), now);
  const oidc = deps.options?.oidc ? new OidcLogin(deps.options.oidc, () => `${base()}/v1/auth/oidc/callback`) : undefined;
  const people = new PeopleService(store, {
    users, passkeys, kek: deps.kek, oidc, now, publicUrl: base, totpIssuer: `Tessera ${deps.trustDomain}`, maxPendingTickets: deps.options?.maxPendingTickets,
  });
  return { users, sessions, people };
}

/** `tessera login` and the sign-in limits (beside buildPeople: it needs the CA and the login tables). */
export function buildLogin(deps: {
  store: LoginStore; ca: CertificateAuthority; users: UserService; trustDomain: string; now: () => number; options: PeopleOptions | undefined;
}): { login: LoginService; personCerts: PersonCerts; signInLimits: SignInLimits } {
  const now = deps.options?.now ?? deps.now;
  const personCerts = new PersonCerts(deps.store, deps.ca, { trustDomain: deps.trustDomain, now });
  const settings: LoginSettings = { maxTtlMs: DEFAULT_LOGIN_MAX_TTL_MS, caps: DEFAULT_LOGIN_CAPS, ...deps.options?.login };
  const login = new LoginService(deps.store, { users: deps.users, certs: personCerts, now, settings });
  // Rate limits run on the real clock (a request rate is real time), whatever clock sign-in uses.
  return { login, personCerts, signInLimits: new SignInLimits({ ...DEFAULT_SIGNIN_LIMITS, ...deps.options?.signInLimits }) };
}
