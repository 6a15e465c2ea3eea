/**
 * The console's one way to the control plane's JSON API (same origin). Every call sends the
 * session cookie (`credentials: 'same-origin'`) and, for the double-submit CSRF check, the value of
 * the `__Host-tessera_csrf` cookie in the `x-tessera-csrf` header. A 401 means "not signed in":
 * pages render the sign-in prompt for it (ApiError.signIn).
 */

/** The cookie the control plane sets with the CSRF token (readable by this page, not HttpOnly). */
export const CSRF_COOKIE = '__Host-tessera_csrf';
/** The header that carries it back on every request. */
export const CSRF_HEADER = 'x-tessera-csrf';

export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
  }

  /** The caller has no (valid) session: show the sign-in prompt. (A 401 asking for a step-up is not that.) */
  get signIn(): boolean {
    return this.status === 401 && !this.stepUp;
  }

  /** The admin policy wants a fresher MFA: a step-up (passkey + TOTP again) then a retry. */
  get stepUp(): boolean {
    return this.code === 'TESSERA_MFA_REQUIRED';
  }
}

/** Whatever was thrown, as an ApiError (for display). */
export function asApiError(e: unknown): ApiError {
  return e instanceof ApiError ? e : new ApiError(0, 'TESSERA_INTERNAL', e instanceof Error ? e.message : String(e));
}

/**
 * The step-up prompt (rendered by the App): resolves true once the person proved both factors
 * again, false when they cancelled.
 */
let stepUpPrompt: (() => Promise<boolean>) | undefined;
export function setStepUpPrompt(prompt: (() => Promise<boolean>) | undefined): void {
  stepUpPrompt = prompt;
}

/** Opens the step-up prompt; false when there is none or the person cancelled. */
export function askStepUp(): Promise<boolean> {
  return stepUpPrompt ? stepUpPrompt() : Promise.resolve(false);
}

/**
 * Runs `fn` (an API call); when the API answers TESSERA_MFA_REQUIRED, asks for a step-up and, once
 * it succeeded, runs `fn` again (once). Any other refusal is thrown as it came.
 */
export async function withStepUp<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (!(e instanceof ApiError) || !e.stepUp) throw e;
    if (!(await askStepUp())) throw e;
    return fn();
  }
}

/** The CSRF cookie's value, or "" when there is none (not signed in). */
export function csrfToken(cookies: string = document.cookie): string {
  for (const part of cookies.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === CSRF_COOKIE) {
      try {
        return decodeURIComponent(part.slice(eq + 1).trim());
      } catch {
        return '';
      }
    }
  }
  return '';
}

async function call<T>(method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' };
  const token = csrfToken();
  if (token) headers[CSRF_HEADER] = token;
  if (body !== undefined) headers['content-type'] = 'application/json';
  let res: Response;
  try {
    res = await fetch(path, { method, headers, credentials: 'same-origin', cache: 'no-store', redirect: 'error', ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
  } catch {
    throw new ApiError(0, 'TESSERA_SERVER_UNREACHABLE', 'the control plane could not be reached');
  }
  const text = await res.text();
  let json: unknown;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  if (!res.ok) {
    const err = (json as { error?: { code?: string; message?: string } } | undefined)?.error;
    throw new ApiError(res.status, err?.code ?? 'TESSERA_INTERNAL', err?.message ?? `HTTP ${res.status}`);
  }
  return json as T;
}

export const api = {
  get: <T>(path: string): Promise<T> => call<T>('GET', path),
  post: <T>(path: string, body: unknown): Promise<T> => call<T>('POST', path, body),
  /** A state-changing call with the step-up prompt on TESSERA_MFA_REQUIRED (see withStepUp). */
  act: <T>(path: string, body: unknown): Promise<T> => withStepUp(() => call<T>('POST', path, body)),
};

/** A path segment, encoded (SPIFFE IDs, grant ids, usernames in URLs). */
export const seg = (s: string | number): string => encodeURIComponent(String(s));
