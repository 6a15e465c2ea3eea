/**
 * A browser-like HTTPS client for sign-in tests: keeps cookies as a browser would (Set-Cookie,
 * Max-Age=0 deletes), sends Origin (the control plane's, unless told otherwise) and the CSRF header
 * read from the `__Host-tessera_csrf` cookie, as the sign-in page's script does.
 */
import { rawRequest, type RawResponse } from './server.js';

export interface BrowserRequest {
  method?: string;
  body?: unknown;
  /** Origin header: the server's by default; null sends none. */
  origin?: string | null;
  /** CSRF header: the cookie's by default; null sends none. */
  csrf?: string | null;
  headers?: Record<string, string>;
}

export class Browser {
  readonly cookies = new Map<string, string>();

  constructor(readonly baseUrl: string, private readonly ca: string) {}

  get origin(): string {
    return new URL(this.baseUrl).origin;
  }

  cookieHeader(): string {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }

  async request(path: string, r: BrowserRequest = {}): Promise<RawResponse> {
    const headers: Record<string, string> = { ...r.headers };
    if (this.cookies.size > 0) headers.cookie = this.cookieHeader();
    const method = r.method ?? (r.body === undefined ? 'GET' : 'POST');
    if (method !== 'GET') {
      if (r.origin !== null) headers.origin = r.origin ?? this.origin;
      const csrf = r.csrf === undefined ? this.cookies.get('__Host-tessera_csrf') : r.csrf;
      if (csrf !== null && csrf !== undefined) headers['x-tessera-csrf'] = csrf;
    }
    let body: string | undefined;
    if (r.body !== undefined) {
      body = JSON.stringify(r.body);
      headers['content-type'] = 'application/json';
    }
    const res = await rawRequest(this.baseUrl, { method, path, headers, ca: this.ca, ...(body !== undefined ? { body } : {}) });
    this.store(res.headers['set-cookie']);
    return res;
  }

  post(path: string, body: unknown = {}, r: Omit<BrowserRequest, 'body'> = {}): Promise<RawResponse> {
    return this.request(path, { ...r, body, method: 'POST' });
  }

  private store(setCookie: string | string[] | undefined): void {
    for (const line of setCookie === undefined ? [] : Array.isArray(setCookie) ? setCookie : [setCookie]) {
      const [pair, ...attrs] = line.split(';').map((s) => s.trim());
      const eq = pair!.indexOf('=');
      const name = pair!.slice(0, eq);
      const value = pair!.slice(eq + 1);
      if (attrs.some((a) => /^max-age=0$/i.test(a)) || value === '') this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
  }
}

/** The error code of a JSON error response. */
export function codeOf(res: RawResponse): string | undefined {
  return (res.json as { error?: { code?: string } } | undefined)?.error?.code;
}
