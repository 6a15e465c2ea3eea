/**
 * Who is signed in, and the sign-in steps of the console over the control plane's `/v1/auth/*` API:
 * a local passkey (WebAuthn assertion through @simplewebauthn/browser, challenge from
 * `/v1/auth/passkey/options`) then a TOTP code; single sign-on (a navigation to
 * `/v1/auth/oidc/start`); a one-time console link (`#token=` in the URL, redeemed once and removed
 * from the address bar and history); sign-out. The session itself is an HttpOnly cookie this code
 * never sees; it only learns the session's public view (user, groups, MFA time).
 */
import { startAuthentication } from '@simplewebauthn/browser';
import { useEffect, useState } from 'preact/hooks';
import { ApiError, api } from './api.js';

export interface SessionView {
  username: string;
  spiffe_id: string;
  groups: string[];
  source: 'local' | 'oidc';
  mfa_at: string | null;
  created_at: string | null;
}

/** undefined: not known yet; null: not signed in. */
type State = SessionView | null | undefined;
let current: State;
const listeners = new Set<(s: State) => void>();

function set(s: State): void {
  current = s;
  for (const l of listeners) l(s);
}

/** Asks the control plane who is signed in (GET /v1/auth/session). */
export async function refreshSession(): Promise<SessionView | null> {
  try {
    const r = await api.get<{ session: SessionView }>('/v1/auth/session');
    set(r.session);
    return r.session;
  } catch (e) {
    if (e instanceof ApiError && e.signIn) {
      set(null);
      return null;
    }
    throw e;
  }
}

/** The session as the page knows it; fetched on first use. */
export function useSession(): State {
  const [s, setS] = useState<State>(current);
  useEffect(() => {
    listeners.add(setS);
    if (current === undefined) refreshSession().catch(() => set(null));
    return () => {
      listeners.delete(setS);
    };
  }, []);
  return s;
}

/**
 * Step one of a local sign-in (or of a step-up, bound to the session's own user): the passkey.
 * Afterwards the control plane waits for the TOTP code ({@link totpSignIn}).
 */
export async function passkeyStep(opts: { username?: string; stepUp?: boolean }): Promise<void> {
  const body = opts.stepUp ? { step_up: true } : opts.username ? { username: opts.username } : {};
  const { options } = await api.post<{ options: Parameters<typeof startAuthentication>[0]['optionsJSON'] }>('/v1/auth/passkey/options', body);
  let response;
  try {
    response = await startAuthentication({ optionsJSON: options });
  } catch (e) {
    // The browser's own refusal (cancelled, no passkey for this site, timed out).
    throw new ApiError(0, 'TESSERA_WEBAUTHN_INVALID', `the passkey was not used: ${e instanceof Error ? e.message : String(e)}`);
  }
  await api.post('/v1/auth/passkey/verify', { response });
}

/** Step two: the code from the authenticator app. Opens (or renews, on a step-up) the session. */
export async function totpStep(code: string): Promise<SessionView> {
  const r = await api.post<{ session: SessionView }>('/v1/auth/totp', { code });
  set(r.session);
  return r.session;
}

/** Where single sign-on starts: a full navigation to the provider and back to `returnTo`. */
export function ssoUrl(returnTo: string, stepUp = false): string {
  return `/v1/auth/oidc/start?return_to=${encodeURIComponent(returnTo)}${stepUp ? '&step_up=1' : ''}`;
}

/** The one-time link's token in the URL fragment, removed from the address bar (and history) at once. */
export function takeLinkToken(): string | undefined {
  const m = /(?:^#|&)token=([A-Za-z0-9_-]{43})(?:&|$)/.exec(location.hash);
  if (location.hash) history.replaceState(history.state, '', location.pathname + location.search);
  return m?.[1];
}

export async function linkSignIn(token: string): Promise<SessionView> {
  const r = await api.post<{ session: SessionView }>('/v1/auth/link', { token });
  set(r.session);
  return r.session;
}

export async function signOut(): Promise<void> {
  await api.post('/v1/auth/logout', {});
  set(null);
}

/** Whether the control plane offers single sign-on (GET /v1/auth/config). */
export function useOidcEnabled(): boolean {
  const [on, setOn] = useState(false);
  useEffect(() => {
    api.get<{ oidc: boolean }>('/v1/auth/config').then((c) => setOn(c.oidc === true), () => setOn(false));
  }, []);
  return on;
}
