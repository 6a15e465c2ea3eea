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

  /** The caller has no (valid) session: show the sign-in prompt. */
  get signIn(): boolean {
    return this.status === 401;
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
};
