/**
 * Passkeys (WebAuthn Level 2) for local users, verified by @simplewebauthn/server. What the library
 * leaves to the relying party is here: challenges are random, stored server-side as one-time
 * tickets (consumed before verification, so a response verifies at most once), bound to the user
 * they were issued for and short-lived; the credential found must belong to that user; and the
 * signature counter is stored with compare-and-set.
 */
import type {
  AuthenticationResponseJSON, AuthenticatorTransportFuture, PublicKeyCredentialCreationOptionsJSON,
  PublicKeyCredentialRequestOptionsJSON, RegistrationResponseJSON,
} from '@simplewebauthn/server';
import { generateAuthenticationOptions, generateRegistrationOptions, verifyAuthenticationResponse, verifyRegistrationResponse } from '@simplewebauthn/server';
import { TesseraError } from '../../core/errors.js';
import type { PeopleStore, UserCredentialRecord, UserRecord } from '../store/store.js';
import type { Tickets } from './tickets.js';

/** The relying party: RP ID (a host name) and the exact origin the browser must report. */
export interface RelyingParty {
  id: string;
  origin: string;
  name: string;
}

/** How long a challenge may be answered (WebAuthn L2 §5.4.1 timeout). */
export const CHALLENGE_TTL_MS = 5 * 60_000;

/** A passkey verified at registration, not yet stored (enrolment stores it with the TOTP seed). */
export interface NewPasskey {
  id: string;
  publicKey: string;
  counter: number;
  transports: string[];
}

const B64U = /^[A-Za-z0-9_-]{1,1400}$/;

function invalid(message: string, cause?: unknown): TesseraError {
  return new TesseraError('TESSERA_WEBAUTHN_INVALID', message, { cause });
}

/** The challenge a response answers (from its clientDataJSON), or a refusal when that is unreadable. */
function challengeOf(clientDataJSON: unknown): string {
  if (typeof clientDataJSON !== 'string' || !B64U.test(clientDataJSON)) throw invalid('clientDataJSON is missing or not base64url');
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(clientDataJSON, 'base64url').toString('utf8'));
  } catch {
    throw invalid('clientDataJSON is not JSON');
  }
  const c = (parsed as { challenge?: unknown } | null)?.challenge;
  if (typeof c !== 'string' || !/^[A-Za-z0-9_-]{43}$/.test(c)) throw invalid('the challenge is not one of ours');
  return c;
}

/** Shape checks before anything is looked up: the library expects these fields to exist. */
function checkResponseShape(r: unknown, fields: string[]): void {
  const o = r as { id?: unknown; rawId?: unknown; type?: unknown; response?: Record<string, unknown> } | null;
  if (typeof o !== 'object' || o === null || typeof o.id !== 'string' || !B64U.test(o.id) || o.rawId !== o.id || o.type !== 'public-key'
    || typeof o.response !== 'object' || o.response === null) {
    throw invalid('not a public-key credential response');
  }
  for (const f of fields) if (typeof o.response[f] !== 'string' || !B64U.test(o.response[f] as string)) throw invalid(`response.${f} is missing or not base64url`);
}

export class PasskeyService {
  constructor(private readonly store: PeopleStore, private readonly tickets: Tickets, private readonly rp: () => RelyingParty, private readonly now: () => number) {}

  /** Registration options for `user` (WebAuthn L2 §7.1); the challenge is stored for this user only. */
  async registrationOptions(user: UserRecord): Promise<PublicKeyCredentialCreationOptionsJSON> {
    const rp = this.rp();
    const existing = (await this.store.listCredentials(user.username)).filter((c) => c.kind === 'passkey');
    const options = await generateRegistrationOptions({
      rpName: rp.name, rpID: rp.id, userName: user.username, userID: Buffer.from(user.webauthnId, 'base64url'),
      userDisplayName: user.displayName ?? user.username, attestationType: 'none', timeout: CHALLENGE_TTL_MS,
      excludeCredentials: existing.map((c) => ({ id: c.id, transports: c.transports as AuthenticatorTransportFuture[] })),
      authenticatorSelection: { residentKey: 'preferred', userVerification: 'preferred' },
      // ES256 and EdDSA (and RS256 for older Windows Hello keys).
      supportedAlgorithmIDs: [-7, -8, -257],
    });
    await this.tickets.issue('webauthn.reg', user.username, {}, CHALLENGE_TTL_MS, options.challenge);
    return options;
  }

  /**
   * Verifies a registration response (WebAuthn L2 §7.1 steps 5–24 by the library: type, challenge,
   * origin, RP ID hash, UP flag, algorithm, attestation `none`), after using up its challenge, which
   * must have been issued to `username`.
   */
  async verifyRegistration(username: string, response: unknown): Promise<NewPasskey> {
    checkResponseShape(response, ['clientDataJSON', 'attestationObject']);
    const challenge = challengeOf((response as RegistrationResponseJSON).response.clientDataJSON);
    const ticket = await this.tickets.consume('webauthn.reg', challenge);
    if (!ticket || ticket.username !== username) throw invalid('the challenge is unknown, used, expired or for another user');
    const rp = this.rp();
    let v;
    try {
      v = await verifyRegistrationResponse({
        response: response as RegistrationResponseJSON, expectedChallenge: challenge, expectedOrigin: rp.origin, expectedRPID: rp.id,
        requireUserVerification: false, supportedAlgorithmIDs: [-7, -8, -257],
      });
    } catch (e) {
      throw invalid('the registration response does not verify', e);
    }
    if (!v.verified) throw invalid('the registration response does not verify');
    const c = v.registrationInfo.credential;
    // §7.1 step 22: a credential id registered to anyone already is refused.
    if (await this.store.getCredential(c.id)) throw invalid('this credential is already registered');
    return { id: c.id, publicKey: Buffer.from(c.publicKey).toString('base64url'), counter: c.counter, transports: c.transports ?? [] };
  }

  /**
   * Authentication options (WebAuthn L2 §7.2). With a username the request lists that user's
   * passkeys and the challenge is bound to the user; without one it asks for a discoverable
   * credential and the user is whoever owns the credential that answers.
   */
  async authenticationOptions(username: string | undefined): Promise<PublicKeyCredentialRequestOptionsJSON> {
    const creds = username === undefined ? [] : (await this.store.listCredentials(username)).filter((c) => c.kind === 'passkey');
    const options = await generateAuthenticationOptions({
      rpID: this.rp().id, timeout: CHALLENGE_TTL_MS, userVerification: 'preferred',
      allowCredentials: creds.map((c) => ({ id: c.id, transports: c.transports as AuthenticatorTransportFuture[] })),
    });
    await this.tickets.issue('webauthn.auth', username ?? null, {}, CHALLENGE_TTL_MS, options.challenge);
    return options;
  }

  /**
   * Verifies an assertion (WebAuthn L2 §7.2) and returns the user it proves. The challenge is used
   * up first; the credential must be a stored passkey, of the user the challenge was issued for
   * (if any), with a matching user handle (§7.2 step 6); the signature counter must grow (§7.2
   * step 21, checked by the library) and is stored with compare-and-set.
   */
  async verifyAuthentication(response: unknown): Promise<{ username: string; credentialId: string }> {
    checkResponseShape(response, ['clientDataJSON', 'authenticatorData', 'signature']);
    const r = response as AuthenticationResponseJSON;
    const challenge = challengeOf(r.response.clientDataJSON);
    const ticket = await this.tickets.consume('webauthn.auth', challenge);
    if (!ticket) throw invalid('the challenge is unknown, used or expired');
    const cred: UserCredentialRecord | undefined = await this.store.getCredential(r.id);
    if (!cred || cred.kind !== 'passkey' || !cred.publicKey) throw invalid('unknown credential');
    if (ticket.username !== null && ticket.username !== cred.username) throw invalid('the credential belongs to another user');
    const user = await this.store.getUser(cred.username);
    if (!user) throw invalid('unknown credential');
    if (r.response.userHandle !== undefined && r.response.userHandle !== user.webauthnId) throw invalid('the user handle does not match the credential');
    const rp = this.rp();
    let v;
    try {
      v = await verifyAuthenticationResponse({
        response: r, expectedChallenge: challenge, expectedOrigin: rp.origin, expectedRPID: rp.id, requireUserVerification: false,
        credential: { id: cred.id, publicKey: new Uint8Array(cred.publicKey), counter: cred.counter, transports: cred.transports as AuthenticatorTransportFuture[] },
      });
    } catch (e) {
      throw invalid('the assertion does not verify', e);
    }
    if (!v.verified) throw invalid('the assertion does not verify');
    if (!(await this.store.setPasskeyCounter(cred.id, cred.counter, v.authenticationInfo.newCounter, this.now()))) {
      throw invalid('the credential was used concurrently');
    }
    return { username: cred.username, credentialId: cred.id };
  }
}
