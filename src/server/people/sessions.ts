/**
 * Sessions of people (issue 12): server-side records named by the SHA-256 of a random id the browser
 * holds in the `__Host-tessera_session` cookie (HttpOnly, Secure, SameSite=Strict). Every sign-in and
 * every step-up mints a new id (the id a browser held before is never promoted: no fixation).
 * Idle and absolute timeouts; logout and logout everywhere delete the records.
 *
 * State-changing requests made with a session must carry the CSRF token (double submit: header
 * `x-tessera-csrf` equal to the readable `__Host-tessera_csrf` cookie, and bound to the session by its
 * stored hash) and an `Origin` equal to the control plane's public origin.
 *
 * Other parts use {@link SessionService.fromRequest} and {@link SessionService.requireSession}.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { TesseraError } from '../../core/errors.js';
import type { PeopleStore, SessionRecord, UserRecord } from '../store/store.js';
import { cookieValue, serializeCookie } from '../../common/cookies.js';

export const SESSION_COOKIE = '__Host-tessera_session';
export const CSRF_COOKIE = '__Host-tessera_csrf';
export const CSRF_HEADER = 'x-tessera-csrf';

/** What other parts of Tessera see of a session. */
export interface SessionInfo {
  /** A stable, non-secret id of the session (a prefix of its stored hash), for audit records. */
  id: string;
  username: string;
  /** `spiffe://<td>/user/<username>`. */
  spiffeId: string;
  groups: string[];
  /** When both factors (or the provider's MFA) were last proven in this session; undefined: never. */
  mfaAt: number | undefined;
  createdAt: number;
  source: 'local' | 'oidc';
}

export interface SessionSettings {
  /** A session unused this long ends (default 30 minutes). */
  idleMs: number;
  /** A session ends this long after sign-in, used or not (default 12 hours). */
  absoluteMs: number;
}

export const DEFAULT_SESSION_SETTINGS: SessionSettings = { idleMs: 30 * 60_000, absoluteMs: 12 * 3600_000 };
/** `last_seen_at` is written at most this often (the idle timeout is exact to within it). */
const TOUCH_EVERY_MS = 60_000;
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/** A session just created: the bearer values go to the browser once, in cookies. */
export interface NewSession {
  id: string;
  csrf: string;
  info: SessionInfo;
  expiresAt: number;
}

type Lookup = { ok: true; info: SessionInfo; rec: SessionRecord } | { ok: false; reason: 'none' | 'expired' | 'disabled' };

const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex');

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** Appends a Set-Cookie header (fastify's `header` would replace the earlier ones). */
export function addCookie(reply: FastifyReply, value: string): void {
  const prev = reply.getHeader('set-cookie');
  const list = prev === undefined ? [] : Array.isArray(prev) ? prev.map(String) : [String(prev)];
  void reply.header('set-cookie', [...list, value]);
}

export class SessionService {
  readonly #lookups = new WeakMap<FastifyRequest, Promise<Lookup>>();

  constructor(private readonly store: PeopleStore, private readonly opts: { now: () => number; settings: SessionSettings; origin: () => string }) {}

  get settings(): SessionSettings {
    return this.opts.settings;
  }

  /**
   * Creates a session for `user` with a new random id. `replaces`: the request whose session (if
   * any) this one supersedes (a step-up, a sign-in over an old session): that record is deleted.
   */
  async create(user: UserRecord, o: { mfaAt: number | undefined; replaces?: FastifyRequest }): Promise<NewSession> {
    if (user.state !== 'active') throw new TesseraError('TESSERA_USER_DISABLED');
    if (o.replaces) await this.end(o.replaces);
    const now = this.opts.now();
    const id = randomBytes(32).toString('base64url');
    const csrf = randomBytes(32).toString('base64url');
    const rec: SessionRecord = {
      hash: sha256(id), username: user.username, source: user.source, createdAt: now, lastSeenAt: now,
      expiresAt: now + this.opts.settings.absoluteMs, mfaAt: o.mfaAt ?? null, csrfHash: sha256(csrf),
    };
    await this.store.insertSession(rec, now);
    return { id, csrf, info: this.info(rec, user), expiresAt: rec.expiresAt };
  }

  /** The request's live session, or undefined (none, unknown, ended, expired, user disabled or removed). */
  async fromRequest(req: FastifyRequest): Promise<SessionInfo | undefined> {
    const l = await this.lookup(req);
    return l.ok ? l.info : undefined;
  }

  /**
   * The request's session, or a refusal: TESSERA_SESSION_REQUIRED (none or ended),
   * TESSERA_SESSION_EXPIRED, TESSERA_USER_DISABLED. For a state-changing method the CSRF token and
   * the Origin are checked too (TESSERA_CSRF_INVALID). With `maxMfaAgeMs`, the session's MFA must be
   * that recent, else TESSERA_MFA_REQUIRED (step up).
   */
  async requireSession(req: FastifyRequest, opts: { maxMfaAgeMs?: number } = {}): Promise<SessionInfo> {
    const l = await this.lookup(req);
    if (!l.ok) {
      if (l.reason === 'expired') throw new TesseraError('TESSERA_SESSION_EXPIRED');
      if (l.reason === 'disabled') throw new TesseraError('TESSERA_USER_DISABLED');
      throw new TesseraError('TESSERA_SESSION_REQUIRED');
    }
    if (!SAFE_METHODS.has(req.method)) this.checkCsrf(req, l.rec);
    if (opts.maxMfaAgeMs !== undefined) {
      const mfaAt = l.info.mfaAt;
      if (mfaAt === undefined || this.opts.now() - mfaAt > opts.maxMfaAgeMs) {
        throw new TesseraError('TESSERA_MFA_REQUIRED', `this action needs multi-factor sign-in within the last ${Math.round(opts.maxMfaAgeMs / 1000)} s: step up at /auth/signin?step_up=1 (or POST /v1/auth/passkey/options with step_up) and retry`);
      }
    }
    return l.info;
  }

  /**
   * The Origin check for requests that may change state, with or without a session (sign-in
   * requests too: login CSRF). The Origin must be exactly the public origin; a request without one
   * is refused (browsers send it on every POST, fetch or form).
   */
  checkOrigin(req: FastifyRequest): void {
    const origin = req.headers.origin;
    if (typeof origin !== 'string' || origin !== this.opts.origin()) throw new TesseraError('TESSERA_CSRF_INVALID', 'the request\'s Origin is missing or not this server\'s');
    const site = req.headers['sec-fetch-site'];
    if (site !== undefined && site !== 'same-origin') throw new TesseraError('TESSERA_CSRF_INVALID', 'the request is not same-origin (Sec-Fetch-Site)');
  }

  private checkCsrf(req: FastifyRequest, rec: SessionRecord): void {
    this.checkOrigin(req);
    const header = req.headers[CSRF_HEADER];
    const cookie = cookieValue(req.headers.cookie, CSRF_COOKIE);
    if (typeof header !== 'string' || cookie === undefined || header.length > 128 || !sameSecret(header, cookie) || !sameSecret(sha256(header), rec.csrfHash)) {
      throw new TesseraError('TESSERA_CSRF_INVALID', `the ${CSRF_HEADER} header is missing or does not match the session's CSRF token`);
    }
  }

  /** Ends the request's session (logout); returns what it was. */
  async end(req: FastifyRequest): Promise<SessionInfo | undefined> {
    const l = await this.lookup(req);
    const id = cookieValue(req.headers.cookie, SESSION_COOKIE);
    if (id !== undefined) await this.store.deleteSession(sha256(id));
    this.#lookups.set(req, Promise.resolve({ ok: false, reason: 'none' }));
    return l.ok ? l.info : undefined;
  }

  /** Ends every session of the user (logout everywhere); returns how many. */
  async endAll(username: string): Promise<number> {
    return this.store.deleteSessionsOf(username);
  }

  /** Sets the session and CSRF cookies of a new session. */
  setCookies(reply: FastifyReply, s: NewSession): void {
    const maxAge = Math.floor(this.opts.settings.absoluteMs / 1000);
    addCookie(reply, serializeCookie(SESSION_COOKIE, s.id, { httpOnly: true, sameSite: 'Strict', maxAge }));
    // Readable by the page's script, which copies it into the header (double submit).
    addCookie(reply, serializeCookie(CSRF_COOKIE, s.csrf, { httpOnly: false, sameSite: 'Strict', maxAge }));
  }

  clearCookies(reply: FastifyReply): void {
    addCookie(reply, serializeCookie(SESSION_COOKIE, '', { httpOnly: true, sameSite: 'Strict', maxAge: 0 }));
    addCookie(reply, serializeCookie(CSRF_COOKIE, '', { httpOnly: false, sameSite: 'Strict', maxAge: 0 }));
  }

  private lookup(req: FastifyRequest): Promise<Lookup> {
    let p = this.#lookups.get(req);
    if (!p) {
      p = this.load(req);
      this.#lookups.set(req, p);
    }
    return p;
  }

  /**
   * The reference of the request's live session that a gateway may hold (its stored hash: not a
   * bearer value, the cookie is), or undefined when the request has no live session.
   */
  async refOf(req: FastifyRequest): Promise<string | undefined> {
    const l = await this.lookup(req);
    return l.ok ? l.rec.hash : undefined;
  }

  /**
   * The live session named by a reference from {@link refOf} (gateways check it: logout everywhere
   * ends their sessions too), with its absolute end; a check counts as use (idle timeout).
   */
  async byRef(ref: string): Promise<{ info: SessionInfo; expiresAt: number } | undefined> {
    if (!/^[0-9a-f]{64}$/.test(ref)) return undefined;
    const l = await this.loadHash(ref);
    return l.ok ? { info: l.info, expiresAt: l.rec.expiresAt } : undefined;
  }

  private async load(req: FastifyRequest): Promise<Lookup> {
    const id = cookieValue(req.headers.cookie, SESSION_COOKIE);
    if (id === undefined || !/^[A-Za-z0-9_-]{43}$/.test(id)) return { ok: false, reason: 'none' };
    return this.loadHash(sha256(id));
  }

  private async loadHash(hash: string): Promise<Lookup> {
    const rec = await this.store.getSession(hash);
    if (!rec) return { ok: false, reason: 'none' };
    const now = this.opts.now();
    if (now >= rec.expiresAt || now - rec.lastSeenAt >= this.opts.settings.idleMs) {
      await this.store.deleteSession(hash);
      return { ok: false, reason: 'expired' };
    }
    const user = await this.store.getUser(rec.username);
    if (!user) return { ok: false, reason: 'none' };
    if (user.state !== 'active') return { ok: false, reason: 'disabled' };
    if (now - rec.lastSeenAt >= TOUCH_EVERY_MS) await this.store.touchSession(hash, now);
    return { ok: true, info: this.info(rec, user), rec };
  }

  private info(rec: SessionRecord, user: UserRecord): SessionInfo {
    return {
      id: rec.hash.slice(0, 16), username: user.username, spiffeId: user.spiffeId, groups: [...user.groups],
      mfaAt: rec.mfaAt ?? undefined, createdAt: rec.createdAt, source: rec.source,
    };
  }
}
