/**
 * The gateway's own sessions of people, in memory (a restart signs everyone in again, silently while
 * their control-plane session lives). A session is created after the code flow (server.ts) from the
 * control plane's answer and hangs on a control-plane session (`ref`):
 *
 * - cookie `__Host-tessera_gw`: a random 256-bit id (only its SHA-256 is kept), HttpOnly, Secure,
 *   SameSite=Lax (the return from the control plane is a cross-site navigation that must carry it);
 * - idle timeout (default 15 min) and absolute timeout (default 8 h, and never past the control-plane
 *   session's own end);
 * - liveness: the control-plane session is checked at most every `checkMs` (default 5 s) per
 *   reference, on the request path: so a logout everywhere (or a disabled user, an ended session)
 *   ends the gateway sessions within `checkMs` plus one round trip. While the control plane cannot be
 *   reached, the last good answer is trusted for `graceMs` (default 30 s), then requests are refused
 *   (fail closed);
 * - a per-session CSRF token for the gateway's own state-changing requests (logout).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { TesseraError } from '../core/errors.js';
import type { GatewaySessionResponse, GatewayTokenResponse } from '../core/wire/gateway.js';

export const GATEWAY_COOKIE = '__Host-tessera_gw';
export const FLOW_COOKIE = '__Host-tessera_gw_flow';

export interface GatewaySessionSettings {
  idleMs: number;
  absoluteMs: number;
  checkMs: number;
  graceMs: number;
}

export const DEFAULT_GATEWAY_SESSION_SETTINGS: GatewaySessionSettings = { idleMs: 15 * 60_000, absoluteMs: 8 * 3600_000, checkMs: 5000, graceMs: 30_000 };

export interface GatewaySession {
  username: string;
  spiffeId: string;
  groups: string[];
  mfaAt: number | undefined;
  ref: string;
  createdAt: number;
  lastSeenAt: number;
  expiresAt: number;
  csrf: string;
}

interface RefState { checkedAt: number; checking: Promise<'ok' | 'ended' | 'unavailable'> | undefined }

const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex');
const ID = /^[A-Za-z0-9_-]{43}$/;

export function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** Most sessions held (each a few hundred bytes); at the bound the oldest is dropped. */
const MAX_SESSIONS = 100_000;

export class GatewaySessions {
  readonly #sessions = new Map<string, GatewaySession>();
  readonly #refs = new Map<string, RefState>();

  constructor(private readonly opts: {
    settings: GatewaySessionSettings;
    check: (ref: string) => Promise<GatewaySessionResponse>;
    now?: () => number;
    /** Called with the result of every check that asked the control plane (metrics). */
    onCheck?: (result: 'ok' | 'ended' | 'unavailable') => void;
  }) {}

  private now(): number {
    return (this.opts.now ?? Date.now)();
  }

  get size(): number {
    return this.#sessions.size;
  }

  /** A new session from a redeemed code; the id goes to the browser once, in the cookie. */
  create(t: GatewayTokenResponse): { id: string; session: GatewaySession } {
    const now = this.now();
    const id = randomBytes(32).toString('base64url');
    const s: GatewaySession = {
      username: t.username, spiffeId: t.spiffe_id, groups: [...t.groups], mfaAt: t.mfa_at ?? undefined, ref: t.session_ref,
      createdAt: now, lastSeenAt: now, expiresAt: Math.min(now + this.opts.settings.absoluteMs, t.session_expires_at), csrf: randomBytes(24).toString('base64url'),
    };
    if (this.#sessions.size >= MAX_SESSIONS) this.#sessions.delete(this.#sessions.keys().next().value!);
    this.#sessions.set(sha256(id), s);
    this.#refs.set(s.ref, { checkedAt: now, checking: undefined });
    return { id, session: s };
  }

  /** The session of a cookie value, or undefined (unknown, idle or expired: then forgotten). Touches it. */
  get(id: string | undefined): GatewaySession | undefined {
    if (id === undefined || !ID.test(id)) return undefined;
    const key = sha256(id);
    const s = this.#sessions.get(key);
    if (!s) return undefined;
    const now = this.now();
    if (now >= s.expiresAt || now - s.lastSeenAt >= this.opts.settings.idleMs) {
      this.#sessions.delete(key);
      return undefined;
    }
    s.lastSeenAt = now;
    return s;
  }

  /**
   * Whether the session's control-plane session still lives: answered from the last check when it is
   * younger than `checkMs`; else asks the control plane (one request per reference at a time).
   */
  async live(s: GatewaySession): Promise<'ok' | 'ended' | 'unavailable'> {
    const now = this.now();
    let st = this.#refs.get(s.ref);
    if (st === undefined) {
      st = { checkedAt: 0, checking: undefined };
      this.#refs.set(s.ref, st);
    }
    if (now - st.checkedAt < this.opts.settings.checkMs) return 'ok';
    const state = st;
    state.checking ??= this.opts.check(s.ref).then((r) => {
      state.checkedAt = this.now();
      for (const x of this.#sessions.values()) {
        if (x.ref === s.ref) {
          x.groups = [...r.groups];
          x.mfaAt = r.mfa_at ?? undefined;
        }
      }
      return 'ok' as const;
    }, (err: unknown) => {
      const code = err instanceof TesseraError ? err.code : undefined;
      if (code === 'TESSERA_SESSION_REQUIRED' || code === 'TESSERA_SESSION_EXPIRED' || code === 'TESSERA_USER_DISABLED') {
        this.endRef(s.ref);
        return 'ended' as const;
      }
      // The control plane is away: trust the last good answer for a bounded time (fail closed after).
      return this.now() - state.checkedAt < this.opts.settings.graceMs ? 'ok' as const : 'unavailable' as const;
    }).then((r) => {
      this.opts.onCheck?.(r);
      return r;
    }).finally(() => {
      state.checking = undefined;
    });
    return state.checking;
  }

  /** Ends one session (logout). */
  end(id: string | undefined): GatewaySession | undefined {
    if (id === undefined || !ID.test(id)) return undefined;
    const key = sha256(id);
    const s = this.#sessions.get(key);
    this.#sessions.delete(key);
    return s;
  }

  /** Ends every gateway session hanging on a control-plane session; returns how many. */
  endRef(ref: string): number {
    let n = 0;
    for (const [k, x] of this.#sessions) {
      if (x.ref === ref) {
        this.#sessions.delete(k);
        n++;
      }
    }
    this.#refs.delete(ref);
    return n;
  }

  /** Ends every gateway session of a person (logout everywhere from this gateway). */
  endUser(username: string): number {
    let n = 0;
    for (const [k, x] of this.#sessions) {
      if (x.username === username) {
        this.#sessions.delete(k);
        this.#refs.delete(x.ref);
        n++;
      }
    }
    return n;
  }

  /** Drops expired sessions and unused reference states (called every minute). */
  sweep(): void {
    const now = this.now();
    const refs = new Set<string>();
    for (const [k, s] of this.#sessions) {
      if (now >= s.expiresAt || now - s.lastSeenAt >= this.opts.settings.idleMs) this.#sessions.delete(k);
      else refs.add(s.ref);
    }
    for (const r of this.#refs.keys()) if (!refs.has(r)) this.#refs.delete(r);
  }
}
