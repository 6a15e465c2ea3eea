/**
 * The sign-in flows of people, over the pieces beside it: users, one-time tickets, passkeys, TOTP,
 * OIDC and sessions. Routes (auth-routes.ts, routes.ts) parse, call these, audit and set cookies.
 *
 * - Enrolment of a local user: a one-time link (`tessera user add`, TTL 24 h) → a passkey, then a
 *   TOTP code from the seed shown once → both stored, and a session with MFA.
 * - Local sign-in: a passkey (first factor) → a TOTP code (second factor) → a session with MFA.
 * - OIDC: the provider's authorization code flow → a session, with MFA when the provider says so.
 * - Console link (`tessera console link`): a one-time link → a session WITHOUT MFA.
 */
import type { PublicKeyCredentialCreationOptionsJSON, PublicKeyCredentialRequestOptionsJSON } from '@simplewebauthn/server';
import type { KeyEncryptionKey } from '../../common/kek.js';
import { TesseraError } from '../../core/errors.js';
import type { PeopleStore, UserRecord } from '../store/store.js';
import type { OidcFlow, OidcLogin } from './oidc.js';
import type { PasskeyService, NewPasskey } from './passkeys.js';
import { Tickets, newToken } from './tickets.js';
import { matchTotp, newTotpSecret, totpUri } from './totp.js';
import type { UserService } from './users.js';

export const ENROL_TTL_MS = 24 * 3600_000;
/** An enrolment under way (after the link was opened). */
export const ENROLLING_TTL_MS = 30 * 60_000;
/** Between the passkey and the TOTP code of a sign-in. */
export const MFA_PENDING_TTL_MS = 5 * 60_000;
export const CONSOLE_LINK_TTL_MS = 10 * 60_000;
export const CONSOLE_LINK_MAX_TTL_MS = 24 * 3600_000;
export const OIDC_FLOW_TTL_MS = 10 * 60_000;
/** Wrong TOTP codes allowed per sign-in (or enrolment) before it must start over. */
export const MAX_TOTP_ATTEMPTS = 5;

const totpId = (username: string): string => `totp:${username}`;

interface EnrollingData { totp: string; passkey: NewPasskey | null; attempts: number }
interface MfaData { attempts: number; passkeyAt: number }

export class PeopleService {
  readonly tickets: Tickets;

  constructor(private readonly store: PeopleStore, private readonly deps: {
    users: UserService; passkeys: PasskeyService; kek: KeyEncryptionKey; oidc: OidcLogin | undefined; now: () => number;
    /** The public base URL (scheme, host, port) links are made of. */
    publicUrl: () => string;
    /** The issuer shown in authenticator apps. */
    totpIssuer: string;
    maxPendingTickets?: number;
  }) {
    this.tickets = new Tickets(store, deps.now, deps.maxPendingTickets);
  }

  /** The sign-in clock (PeopleOptions.now). */
  now(): number {
    return this.deps.now();
  }

  get oidc(): OidcLogin | undefined {
    return this.deps.oidc;
  }

  private async activeUser(username: string): Promise<UserRecord> {
    const u = await this.store.getUser(username);
    if (!u) throw new TesseraError('TESSERA_LINK_INVALID');
    if (u.state !== 'active') throw new TesseraError('TESSERA_USER_DISABLED');
    return u;
  }

  /** A one-time enrolment link for a local user (`#token=` in the fragment: never sent in a request line). */
  async enrolmentLink(username: string, ttlMs = ENROL_TTL_MS): Promise<{ url: string; expiresAt: number }> {
    const u = await this.deps.users.require(username);
    if (u.source !== 'local') throw new TesseraError('TESSERA_BAD_REQUEST', 'only a local user enrols (OIDC users sign in at their provider)');
    const { token, expiresAt } = await this.tickets.issue('enrol', username, {}, ttlMs);
    return { url: `${this.deps.publicUrl()}/auth/enrol#token=${token}`, expiresAt };
  }

  /** Opens an enrolment link (uses it up): the passkey options, and the TOTP URI shown this once. */
  async startEnrolment(token: string): Promise<{ enrolling: string; user: UserRecord; passkeyOptions: PublicKeyCredentialCreationOptionsJSON; totpUri: string }> {
    const t = await this.tickets.consume('enrol', token);
    if (!t?.username) throw new TesseraError('TESSERA_LINK_INVALID');
    const user = await this.activeUser(t.username);
    const secret = newTotpSecret();
    const data: EnrollingData = { totp: this.deps.kek.seal(secret, totpId(user.username)).toString('base64'), passkey: null, attempts: 0 };
    const { token: enrolling } = await this.tickets.issue('enrolling', user.username, data, ENROLLING_TTL_MS);
    return {
      enrolling, user, passkeyOptions: await this.deps.passkeys.registrationOptions(user),
      totpUri: totpUri(secret, this.deps.totpIssuer, user.username),
    };
  }

  private async enrolling(token: string | undefined): Promise<{ ticket: NonNullable<Awaited<ReturnType<Tickets['peek']>>>; data: EnrollingData; username: string }> {
    const ticket = await this.tickets.peek('enrolling', token);
    if (!ticket?.username) throw new TesseraError('TESSERA_LINK_INVALID', 'no enrolment under way in this browser (or it expired): open the enrolment link again');
    return { ticket, data: JSON.parse(ticket.data) as EnrollingData, username: ticket.username };
  }

  /** Fresh passkey registration options for the enrolment under way (after a failed or abandoned attempt). */
  async enrolPasskeyOptions(token: string | undefined): Promise<PublicKeyCredentialCreationOptionsJSON> {
    const { username } = await this.enrolling(token);
    return this.deps.passkeys.registrationOptions(await this.activeUser(username));
  }

  /** Registers the passkey of an enrolment under way (kept with it until the TOTP code completes it). */
  async enrolPasskey(token: string | undefined, response: unknown): Promise<UserRecord> {
    const { ticket, data, username } = await this.enrolling(token);
    const user = await this.activeUser(username);
    const passkey = await this.deps.passkeys.verifyRegistration(username, response);
    if (!(await this.tickets.update(token!, ticket, { ...data, passkey }))) throw new TesseraError('TESSERA_LINK_INVALID', 'the enrolment changed meanwhile: start again');
    return user;
  }

  /** Completes an enrolment with a TOTP code: the passkey and the seed replace the user's credentials. */
  async enrolTotp(token: string | undefined, code: string): Promise<UserRecord> {
    const { ticket, data, username } = await this.enrolling(token);
    const user = await this.activeUser(username);
    if (!data.passkey) throw new TesseraError('TESSERA_WEBAUTHN_INVALID', 'register a passkey first');
    const sealed = Buffer.from(data.totp, 'base64');
    const step = matchTotp(this.deps.kek.open(sealed, totpId(username)), code, this.deps.now());
    if (step === undefined) {
      await this.failedCode(token!, ticket, data, 'enrolling');
      throw new TesseraError('TESSERA_TOTP_INVALID');
    }
    if (!(await this.tickets.consume('enrolling', token))) throw new TesseraError('TESSERA_LINK_INVALID');
    const now = this.deps.now();
    const p = data.passkey;
    await this.store.replaceCredentials(username, [
      { id: p.id, username, kind: 'passkey', createdAt: now, publicKey: Buffer.from(p.publicKey, 'base64url'), counter: p.counter, transports: p.transports, secretSealed: null, lastStep: -1, lastUsedAt: null },
      // The code just typed is spent: sign-in needs a later one.
      { id: totpId(username), username, kind: 'totp', createdAt: now, publicKey: null, counter: 0, transports: [], secretSealed: sealed, lastStep: step, lastUsedAt: now },
    ]);
    return user;
  }

  /** Counts a wrong code; at MAX_TOTP_ATTEMPTS the ticket is used up (the flow starts over). */
  private async failedCode(token: string, ticket: { data: string } & Parameters<Tickets['update']>[1], data: { attempts: number }, kind: 'enrolling' | 'mfa'): Promise<void> {
    const attempts = data.attempts + 1;
    if (attempts >= MAX_TOTP_ATTEMPTS) await this.tickets.consume(kind, token);
    else await this.tickets.update(token, ticket, { ...data, attempts });
  }

  async passkeyOptions(username: string | undefined): Promise<PublicKeyCredentialRequestOptionsJSON> {
    return this.deps.passkeys.authenticationOptions(username);
  }

  /** First factor of a local sign-in: returns the user and the token of the half-done sign-in. */
  async passkeySignIn(response: unknown): Promise<{ user: UserRecord; mfaToken: string }> {
    const { username } = await this.deps.passkeys.verifyAuthentication(response);
    const user = await this.activeUser(username);
    const data: MfaData = { attempts: 0, passkeyAt: this.deps.now() };
    const { token } = await this.tickets.issue('mfa', username, data, MFA_PENDING_TTL_MS);
    return { user, mfaToken: token };
  }

  /**
   * Second factor: the TOTP code of the user whose passkey started this sign-in. The matched step
   * is recorded with compare-and-set (it must be above the last accepted one), so a code (the
   * user and its step) is accepted once only, even by two concurrent requests.
   */
  async totpSignIn(mfaToken: string | undefined, code: string, detail: Record<string, unknown> = {}): Promise<UserRecord> {
    const ticket = await this.tickets.peek('mfa', mfaToken);
    if (!ticket?.username) throw new TesseraError('TESSERA_LINK_INVALID', 'no sign-in under way in this browser (or it expired): start with the passkey');
    const user = await this.activeUser(ticket.username);
    const data = JSON.parse(ticket.data) as MfaData;
    const cred = await this.store.getCredential(totpId(user.username));
    if (!cred?.secretSealed) throw new TesseraError('TESSERA_TOTP_INVALID', 'this user has no TOTP enrolled');
    const now = this.deps.now();
    const step = matchTotp(this.deps.kek.open(cred.secretSealed, totpId(user.username)), code, now);
    if (step === undefined || !(await this.store.advanceTotpStep(cred.id, step, now))) {
      // The audit record says which (the caller's answer does not).
      detail.totp = step === undefined ? 'no match in the window' : 'code already used';
      await this.failedCode(mfaToken!, ticket, data, 'mfa');
      throw new TesseraError('TESSERA_TOTP_INVALID');
    }
    if (!(await this.tickets.consume('mfa', mfaToken))) throw new TesseraError('TESSERA_LINK_INVALID');
    return user;
  }

  /** A one-time console sign-in link for `username` (`#token=` in the fragment). */
  async consoleLink(username: string, ttlMs: number): Promise<{ url: string; expiresAt: number }> {
    const u = await this.deps.users.require(username);
    if (u.state !== 'active') throw new TesseraError('TESSERA_USER_DISABLED');
    const { token, expiresAt } = await this.tickets.issue('console', username, {}, ttlMs);
    return { url: `${this.deps.publicUrl()}/console/sign-in#token=${token}`, expiresAt };
  }

  /** Redeems a console link (uses it up): the user to open a session for, without MFA. */
  async redeemConsoleLink(token: string): Promise<UserRecord> {
    const t = await this.tickets.consume('console', token);
    if (!t?.username) throw new TesseraError('TESSERA_LINK_INVALID');
    return this.activeUser(t.username);
  }

  private requireOidc(): OidcLogin {
    if (!this.deps.oidc) throw new TesseraError('TESSERA_OIDC_NOT_CONFIGURED');
    return this.deps.oidc;
  }

  /** Starts an OIDC sign-in: the provider URL to send the browser to, and the state for its cookie. */
  async oidcStart(returnTo: string, stepUp: boolean): Promise<{ url: string; state: string }> {
    const oidc = this.requireOidc();
    const state = newToken();
    const { url, flow } = await oidc.start(state, returnTo, stepUp);
    await this.tickets.issue('oidc', null, flow, OIDC_FLOW_TTL_MS, state);
    return { url, state };
  }

  /**
   * Finishes an OIDC sign-in from the callback: the state in the query must be the one in this
   * browser's cookie and an unused ticket (TESSERA_OIDC_STATE_INVALID otherwise); then the code is
   * redeemed and the ID token checked (TESSERA_OIDC_FAILED).
   */
  async oidcFinish(query: string, queryState: unknown, cookieState: string | undefined): Promise<{ user: UserRecord; mfaAt: number | undefined; returnTo: string; mfa: boolean }> {
    const oidc = this.requireOidc();
    if (typeof queryState !== 'string' || cookieState === undefined || queryState !== cookieState) {
      throw new TesseraError('TESSERA_OIDC_STATE_INVALID', 'the callback\'s state is missing or not the one this browser started');
    }
    const t = await this.tickets.consume('oidc', queryState);
    if (!t) throw new TesseraError('TESSERA_OIDC_STATE_INVALID', 'this sign-in is unknown, already finished or expired: start again');
    const flow = JSON.parse(t.data) as OidcFlow;
    const r = await oidc.finish(query, queryState, flow);
    const user = await this.deps.users.upsertOidc(oidc.issuer, r.claims, oidc.settings.groupsClaim);
    if (user.state !== 'active') throw new TesseraError('TESSERA_USER_DISABLED');
    const now = this.deps.now();
    const mfaAt = r.mfa ? Math.min(r.authTime ?? now, now) : undefined;
    return { user, mfaAt, returnTo: flow.returnTo, mfa: r.mfa };
  }
}
