/**
 * `tessera login` (issue 12): a person gets a short-lived client certificate for a key the CLI
 * generated, approved by a signed-in session of the control plane. Two ways to approve:
 *
 * - Browser flow (RFC 8252 native app over a loopback redirect, with RFC 7636 PKCE S256): the CLI
 *   listens on `http://127.0.0.1:PORT/`, opens `/auth/cli?...`; the signed-in person approves
 *   (POST /v1/login/authorize), the browser is sent to the loopback with a one-time code (60 s);
 *   the CLI redeems code + verifier + CSR at POST /v1/login/token.
 * - Device authorization grant (RFC 8628) for a shell without a browser: POST /v1/login/device gives
 *   a device code (the CLI's secret) and a user code (typed by the person at /auth/device in any
 *   browser); the CLI polls POST /v1/login/token with the §3.5 answers until the person approves or
 *   denies, or the request expires.
 *
 * In both, the CLI names the key at the start (`key_thumbprint`, the SHA-256 of its
 * SubjectPublicKeyInfo), so the approval is for that key only: a CSR for any other key is refused,
 * as is a CSR naming any SAN but the person's own SPIFFE ID. The certificate records the MFA time
 * of the approving session; admin actions through it are judged with that MFA age.
 */
import { createHash, randomInt, timingSafeEqual, type KeyObject } from 'node:crypto';
import { TesseraError } from '../../core/errors.js';
import { parseCsrPem } from '../../core/csr.js';
import { spkiDer } from '../../core/x509.js';
import type { LoginRequestRecord, LoginStore, UserCertRecord } from '../store/store.js';
import type { PersonCerts } from './person-certs.js';
import type { SessionInfo } from './sessions.js';
import { newToken, tokenHash } from './tickets.js';
import type { UserService } from './users.js';

export const LOGIN_DEFAULT_TTL_MS = 3600_000;
export const LOGIN_MIN_TTL_MS = 5 * 60_000;
/** Default of `tessera server --login-max-ttl`. */
export const DEFAULT_LOGIN_MAX_TTL_MS = 8 * 3600_000;
/** Life of the browser flow's one-time code (RFC 6749 §4.1.2: short, at most 10 minutes). */
export const LOGIN_CODE_TTL_MS = 60_000;
/** Life of a device authorization (RFC 8628 §3.2 expires_in). */
export const DEVICE_CODE_TTL_MS = 10 * 60_000;
/** RFC 8628 §3.2: "If no value is provided, clients MUST use 5 as the default." */
export const DEVICE_POLL_INTERVAL_S = 5;
/** `--step-up`: the approving session's MFA must be this recent. */
export const STEP_UP_WINDOW_MS = 5 * 60_000;
/** RFC 8628 §6.1: consonants only (no vowels: no words), upper case, no look-alikes. */
export const USER_CODE_ALPHABET = 'BCDFGHJKLMNPQRSTVWXZ';
/** Requests under way one client address may hold, and in all. */
export const DEFAULT_LOGIN_CAPS = { perIp: 20, total: 10_000 };

/** The loopback redirect of the browser flow: `http://127.0.0.1:PORT/` and nothing else (RFC 8252 §7.3). */
const REDIRECT = /^http:\/\/127\.0\.0\.1:([1-9][0-9]{0,4})\/$/;
/** RFC 7636 §4.1: 43 to 128 unreserved characters. */
const VERIFIER = /^[A-Za-z0-9._~-]{43,128}$/;
/** S256 challenge, and a key thumbprint: base64url of a SHA-256 (43 characters). */
const B64_SHA256 = /^[A-Za-z0-9_-]{43}$/;
const STATE = /^[A-Za-z0-9_-]{16,128}$/;

export interface LoginSettings {
  maxTtlMs: number;
  caps: { perIp: number; total: number };
}

export interface IssuedLogin {
  der: Buffer;
  rec: UserCertRecord;
}

/** base64url SHA-256 of a public key's DER SubjectPublicKeyInfo (what `key_thumbprint` names). */
export function keyThumbprint(publicKey: KeyObject): string {
  return createHash('sha256').update(spkiDer(publicKey)).digest('base64url');
}

/** The S256 code challenge of a verifier (RFC 7636 §4.2). */
export function s256(verifier: string): string {
  return createHash('sha256').update(verifier, 'ascii').digest('base64url');
}

/**
 * A user code: 8 letters drawn uniformly from USER_CODE_ALPHABET (20 letters, 20^8 ≈ 2^34.6), shown as two
 * groups of four joined by a dash, e.g. `BCDF-GHJK` (RFC 8628 §6.1: short, unambiguous, case-insensitive).
 */
export function newUserCode(): string {
  let s = '';
  for (let i = 0; i < 8; i++) s += USER_CODE_ALPHABET[randomInt(USER_CODE_ALPHABET.length)];
  return `${s.slice(0, 4)}-${s.slice(4)}`;
}

/**
 * A user code as typed, normalised (RFC 8628 §6.1: case and the dash or spaces ignored), or
 * undefined when it cannot be one of ours.
 */
export function normaliseUserCode(input: string): string | undefined {
  if (input.length > 32) return undefined;
  const s = input.toUpperCase().replace(/[\s-]/g, '');
  if (s.length !== 8) return undefined;
  for (const c of s) if (!USER_CODE_ALPHABET.includes(c)) return undefined;
  return s;
}

/** The loopback redirect URI, checked (TESSERA_REDIRECT_INVALID for anything else). */
export function parseLoopbackRedirect(value: unknown): string {
  if (typeof value !== 'string' || value.length > 64) throw new TesseraError('TESSERA_REDIRECT_INVALID', 'redirect_uri must be http://127.0.0.1:PORT/');
  const m = REDIRECT.exec(value);
  if (!m || Number(m[1]) > 65535) throw new TesseraError('TESSERA_REDIRECT_INVALID', 'redirect_uri must be http://127.0.0.1:PORT/');
  return value;
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export interface LoginAsk {
  keyThumbprint: string;
  ttlMs: number;
  stepUp: boolean;
}

export class LoginService {
  constructor(private readonly store: LoginStore, private readonly deps: {
    users: UserService; certs: PersonCerts; now: () => number; settings: LoginSettings;
  }) {}

  get settings(): LoginSettings {
    return this.deps.settings;
  }

  /** Checks what the CLI asks for: a key thumbprint, a TTL (capped at the server's maximum). */
  ask(keyThumbprintValue: unknown, ttlSeconds: unknown, stepUp: unknown): LoginAsk {
    if (typeof keyThumbprintValue !== 'string' || !B64_SHA256.test(keyThumbprintValue)) throw new TesseraError('TESSERA_BAD_REQUEST', '"key_thumbprint" must be the base64url SHA-256 of the key\'s SubjectPublicKeyInfo');
    let ttlMs = LOGIN_DEFAULT_TTL_MS;
    if (ttlSeconds !== undefined) {
      if (typeof ttlSeconds !== 'number' || !Number.isSafeInteger(ttlSeconds) || ttlSeconds * 1000 < LOGIN_MIN_TTL_MS || ttlSeconds > 7 * 86_400) {
        throw new TesseraError('TESSERA_BAD_REQUEST', `"ttl_seconds" must be a whole number of seconds from ${LOGIN_MIN_TTL_MS / 1000}`);
      }
      ttlMs = ttlSeconds * 1000;
    }
    if (stepUp !== undefined && typeof stepUp !== 'boolean') throw new TesseraError('TESSERA_BAD_REQUEST', '"step_up" must be a boolean');
    return { keyThumbprint: keyThumbprintValue, ttlMs: Math.min(ttlMs, this.deps.settings.maxTtlMs), stepUp: stepUp === true };
  }

  /**
   * The MFA a session must show to approve a login: some MFA (a console-link session has none), and
   * for a step-up an MFA of the last STEP_UP_WINDOW_MS.
   */
  private checkApprover(s: SessionInfo, stepUp: boolean): void {
    const now = this.deps.now();
    if (s.mfaAt === undefined) throw new TesseraError('TESSERA_MFA_REQUIRED', 'this session was opened without MFA (a console link): sign in with your passkey and code (or your provider with MFA) to approve a command-line login');
    if (stepUp && now - s.mfaAt > STEP_UP_WINDOW_MS) throw new TesseraError('TESSERA_MFA_REQUIRED', 'the command line asked for a step-up: sign in again with both factors (step-up) and approve within 5 minutes');
  }

  private async insert(rec: LoginRequestRecord): Promise<void> {
    const r = await this.store.insertLoginRequest(rec, this.deps.now(), this.deps.settings.caps);
    if (r === 'ip_cap') throw new TesseraError('TESSERA_RATE_LIMITED', `this address already has ${this.deps.settings.caps.perIp} logins under way: finish or wait for them to expire`);
    if (r === 'total_cap') throw new TesseraError('TESSERA_RATE_LIMITED', 'too many logins are under way on this control plane: retry in a few minutes');
  }

  // --- Browser flow.

  /**
   * The signed-in person approves the CLI's browser-flow request: a one-time code bound to the
   * challenge, the redirect URI, the key and the session's MFA. Returns the loopback URL to send
   * the browser to. `approve` false: the loopback URL with `error=access_denied` (RFC 6749 §4.1.2.1).
   */
  async authorize(s: SessionInfo, o: { redirectUri: unknown; state: unknown; codeChallenge: unknown; method: unknown; ask: LoginAsk; approve: boolean; clientIp: string }): Promise<{ redirect: string; code?: string }> {
    const redirectUri = parseLoopbackRedirect(o.redirectUri);
    if (typeof o.state !== 'string' || !STATE.test(o.state)) throw new TesseraError('TESSERA_BAD_REQUEST', '"state" must be 16 to 128 base64url characters');
    if (o.method !== 'S256') throw new TesseraError('TESSERA_BAD_REQUEST', '"code_challenge_method" must be S256 (RFC 7636 §4.2; plain is not accepted)');
    if (typeof o.codeChallenge !== 'string' || !B64_SHA256.test(o.codeChallenge)) throw new TesseraError('TESSERA_BAD_REQUEST', '"code_challenge" must be a base64url SHA-256');
    const url = new URL(redirectUri);
    url.searchParams.set('state', o.state);
    if (!o.approve) {
      url.searchParams.set('error', 'access_denied');
      return { redirect: url.toString() };
    }
    this.checkApprover(s, o.ask.stepUp);
    const code = newToken();
    const now = this.deps.now();
    await this.insert({
      hash: tokenHash(code), kind: 'code', userCodeHash: null, state: 'approved', username: s.username, mfaAt: s.mfaAt ?? null, clientIp: o.clientIp,
      keyThumbprint: o.ask.keyThumbprint, ttlMs: o.ask.ttlMs, stepUp: o.ask.stepUp, codeChallenge: o.codeChallenge, redirectUri,
      intervalS: 0, lastPollAt: null, serial: null, createdAt: now, expiresAt: now + LOGIN_CODE_TTL_MS,
    });
    url.searchParams.set('code', code);
    return { redirect: url.toString(), code };
  }

  /**
   * Redeems a browser-flow code (RFC 6749 §4.1.3, RFC 7636 §4.6): once, before it expires, with
   * the verifier of its challenge and the same redirect URI; a wrong verifier uses the code up, and
   * a code presented again revokes the certificate it gave (RFC 6749 §4.1.2). All refusals:
   * TESSERA_LOGIN_CODE_INVALID; `detail` says which for the audit record.
   */
  async redeemCode(o: { code: unknown; verifier: unknown; redirectUri: unknown; csr: unknown }, detail: Record<string, unknown>): Promise<IssuedLogin> {
    const invalid = (why: string): TesseraError => {
      detail.login_code = why;
      return new TesseraError('TESSERA_LOGIN_CODE_INVALID');
    };
    if (typeof o.code !== 'string' || o.code.length > 64) throw invalid('malformed');
    if (typeof o.verifier !== 'string' || !VERIFIER.test(o.verifier)) throw new TesseraError('TESSERA_BAD_REQUEST', '"code_verifier" must be 43 to 128 unreserved characters (RFC 7636 §4.1)');
    const hash = tokenHash(o.code);
    const r = await this.store.getLoginRequest(hash);
    if (!r || r.kind !== 'code') throw invalid('unknown');
    if (r.state === 'used') {
      if (r.serial !== null) detail.revoked_serial = (await this.deps.certs.revoke(r.serial, 'login code replayed')) ? r.serial : undefined;
      throw invalid('replayed');
    }
    if (r.state !== 'approved' || r.expiresAt <= this.deps.now()) throw invalid('expired');
    if (typeof o.redirectUri !== 'string' || o.redirectUri !== r.redirectUri) throw invalid('redirect_uri differs');
    if (!sameSecret(s256(o.verifier), r.codeChallenge ?? '')) {
      await this.store.updateLoginRequest(hash, 'approved', { state: 'used' });
      throw invalid('wrong code_verifier');
    }
    const key = this.csrKey(o.csr, r);
    if (!(await this.store.updateLoginRequest(hash, 'approved', { state: 'used' }))) throw invalid('replayed');
    const issued = await this.issueFor(r, key, 'browser');
    await this.store.updateLoginRequest(hash, 'used', { serial: issued.rec.serial });
    return issued;
  }

  // --- Device authorization grant (RFC 8628).

  /** §3.1/3.2: a new device authorization. */
  async startDevice(ask: LoginAsk, clientIp: string): Promise<{ deviceCode: string; userCode: string; expiresIn: number; interval: number }> {
    const now = this.deps.now();
    const deviceCode = newToken();
    // A clash of user codes (the UNIQUE index) is retried with another.
    for (let attempt = 0; ; attempt++) {
      const userCode = newUserCode();
      try {
        await this.insert({
          hash: tokenHash(deviceCode), kind: 'device', userCodeHash: tokenHash(normaliseUserCode(userCode)!), state: 'pending', username: null, mfaAt: null,
          clientIp, keyThumbprint: ask.keyThumbprint, ttlMs: ask.ttlMs, stepUp: ask.stepUp, codeChallenge: null, redirectUri: null,
          intervalS: DEVICE_POLL_INTERVAL_S, lastPollAt: null, serial: null, createdAt: now, expiresAt: now + DEVICE_CODE_TTL_MS,
        });
        return { deviceCode, userCode, expiresIn: DEVICE_CODE_TTL_MS / 1000, interval: DEVICE_POLL_INTERVAL_S };
      } catch (err) {
        if (attempt >= 3 || !/UNIQUE/.test(String(err))) throw err;
      }
    }
  }

  /**
   * The pending device authorization a user code names (for the person to check which CLI asked),
   * or undefined (unknown, expired, already decided): the caller counts the miss.
   */
  async pendingByUserCode(userCode: unknown): Promise<LoginRequestRecord | undefined> {
    const n = typeof userCode === 'string' ? normaliseUserCode(userCode) : undefined;
    if (n === undefined) return undefined;
    const r = await this.store.getLoginRequestByUserCode(tokenHash(n));
    return r && r.kind === 'device' && r.state === 'pending' && r.expiresAt > this.deps.now() ? r : undefined;
  }

  /** §3.3: the person approves (or denies) the request a user code names. */
  async decideDevice(s: SessionInfo, r: LoginRequestRecord, approve: boolean): Promise<void> {
    if (approve) this.checkApprover(s, r.stepUp);
    const patch = approve ? { state: 'approved' as const, username: s.username, mfaAt: s.mfaAt ?? null } : { state: 'denied' as const, username: s.username };
    if (!(await this.store.updateLoginRequest(r.hash, 'pending', patch))) throw new TesseraError('TESSERA_USER_CODE_INVALID', 'this request was decided meanwhile');
  }

  /**
   * §3.4/3.5, first half: a poll of a request still pending answers TESSERA_LOGIN_PENDING
   * (authorization_pending), or TESSERA_LOGIN_SLOW_DOWN (slow_down) when it comes before the
   * interval (which then grows by 5 s). These answers are not audited (one every few seconds while
   * the person signs in); anything else returns, for {@link redeemDevice}.
   */
  async devicePoll(deviceCode: unknown): Promise<void> {
    if (typeof deviceCode !== 'string' || deviceCode.length > 64) return;
    const hash = tokenHash(deviceCode);
    const r = await this.store.getLoginRequest(hash);
    const now = this.deps.now();
    if (!r || r.kind !== 'device' || r.state !== 'pending' || r.expiresAt <= now) return;
    if (r.lastPollAt !== null && now - r.lastPollAt < r.intervalS * 1000) {
      // §3.5: "the interval MUST be increased by 5 seconds for this and all subsequent requests".
      const interval = r.intervalS + 5;
      await this.store.recordPoll(hash, r.lastPollAt, now, interval);
      throw new TesseraError('TESSERA_LOGIN_SLOW_DOWN', `polled too fast: wait ${interval} s between polls from now on`);
    }
    if (!(await this.store.recordPoll(hash, r.lastPollAt, now, r.intervalS))) throw new TesseraError('TESSERA_LOGIN_SLOW_DOWN', `polled too fast: wait ${r.intervalS + 5} s between polls from now on`);
    throw new TesseraError('TESSERA_LOGIN_PENDING');
  }

  /**
   * §3.4/3.5, second half: the certificate once approved, or TESSERA_LOGIN_EXPIRED (expired_token),
   * TESSERA_LOGIN_DENIED (access_denied), TESSERA_LOGIN_CODE_INVALID (unknown or used code).
   */
  async redeemDevice(o: { deviceCode: unknown; csr: unknown }, detail: Record<string, unknown>): Promise<IssuedLogin> {
    if (typeof o.deviceCode !== 'string' || o.deviceCode.length > 64) throw new TesseraError('TESSERA_LOGIN_CODE_INVALID');
    const hash = tokenHash(o.deviceCode);
    const r = await this.store.getLoginRequest(hash);
    if (!r || r.kind !== 'device') throw new TesseraError('TESSERA_LOGIN_CODE_INVALID');
    detail.user = r.username;
    if (r.state === 'used') throw new TesseraError('TESSERA_LOGIN_CODE_INVALID', 'this device code was redeemed already');
    if (r.expiresAt <= this.deps.now()) throw new TesseraError('TESSERA_LOGIN_EXPIRED');
    if (r.state === 'denied') throw new TesseraError('TESSERA_LOGIN_DENIED');
    if (r.state === 'pending') throw new TesseraError('TESSERA_LOGIN_PENDING');
    const key = this.csrKey(o.csr, r);
    if (!(await this.store.updateLoginRequest(hash, 'approved', { state: 'used' }))) throw new TesseraError('TESSERA_LOGIN_CODE_INVALID', 'this device code was redeemed already');
    const issued = await this.issueFor(r, key, 'device');
    await this.store.updateLoginRequest(hash, 'used', { serial: issued.rec.serial });
    return issued;
  }

  // --- Both.

  /**
   * The CSR's key, if the CSR is for the key the login started with (TESSERA_LOGIN_KEY_MISMATCH)
   * and names no SAN but the person's own ID (TESSERA_CSR_IDENTITY_MISMATCH).
   */
  private csrKey(csr: unknown, r: LoginRequestRecord): KeyObject {
    if (typeof csr !== 'string' || csr.length > 16 * 1024) throw new TesseraError('TESSERA_BAD_REQUEST', '"csr" (PEM) is required');
    const parsed = parseCsrPem(csr);
    const own = r.username === null ? undefined : this.deps.users.idOf(r.username);
    if (parsed.dnsSans.length > 0 || parsed.uriSans.length > 1 || parsed.uriSans.some((u) => u !== own)) {
      throw new TesseraError('TESSERA_CSR_IDENTITY_MISMATCH', 'a login CSR may name no SAN but the person\'s own SPIFFE ID');
    }
    if (!sameSecret(keyThumbprint(parsed.publicKey), r.keyThumbprint)) throw new TesseraError('TESSERA_LOGIN_KEY_MISMATCH');
    return parsed.publicKey;
  }

  private async issueFor(r: LoginRequestRecord, key: KeyObject, flow: 'browser' | 'device'): Promise<IssuedLogin> {
    const user = await this.deps.users.get(r.username ?? '');
    if (!user) throw new TesseraError('TESSERA_LOGIN_CODE_INVALID', 'the person who approved this login no longer exists');
    if (user.state !== 'active') throw new TesseraError('TESSERA_USER_DISABLED');
    return this.deps.certs.issue(user, key, { ttlMs: r.ttlMs, mfaAt: r.mfaAt, flow, clientIp: r.clientIp });
  }
}
