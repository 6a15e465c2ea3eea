/**
 * The Cookie request header (RFC 6265 §5.4 as browsers send it: `name=value` pairs joined by `; `)
 * and Set-Cookie values for Tessera's own cookies. Only what the sign-in needs: names and values are
 * tokens we minted (base64url), so anything else is simply not one of ours.
 */

const NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}$/;
const VALUE = /^[A-Za-z0-9._~-]{0,512}$/;

/**
 * Every well-formed pair of the header, values per name in header order. Never throws; malformed
 * pairs and oversized headers are skipped (a cookie we look for is then absent).
 */
export function parseCookies(header: string | undefined): Map<string, string[]> {
  const out = new Map<string, string[]>();
  if (typeof header !== 'string' || header.length > 16_384) return out;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    const name = part.slice(0, eq).trim();
    let value = part.slice(eq + 1).trim();
    if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1);
    if (!NAME.test(name) || !VALUE.test(value)) continue;
    const list = out.get(name);
    if (list) list.push(value);
    else out.set(name, [value]);
  }
  return out;
}

/**
 * The one value of cookie `name`, or undefined when it is absent or sent more than once: two values
 * for a `__Host-` cookie mean someone injected one (cookie tossing), and guessing which is ours
 * would let them choose.
 */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  const values = parseCookies(header).get(name);
  return values?.length === 1 ? values[0] : undefined;
}

export interface CookieOptions {
  httpOnly: boolean;
  sameSite: 'Strict' | 'Lax';
  /** Seconds; 0 deletes the cookie. Omitted: a browser-session cookie. */
  maxAge?: number;
}

/**
 * A Set-Cookie value. `__Host-` names require Secure, Path=/ and no Domain (RFC 6265bis §4.1.3.2),
 * which is what every Tessera cookie gets, so a sibling host cannot set or shadow them.
 */
export function serializeCookie(name: string, value: string, opts: CookieOptions): string {
  if (!NAME.test(name) || !VALUE.test(value)) throw new Error('invalid cookie name or value');
  const parts = [`${name}=${value}`, 'Path=/', 'Secure', `SameSite=${opts.sameSite}`];
  if (opts.httpOnly) parts.push('HttpOnly');
  if (opts.maxAge !== undefined) parts.push(`Max-Age=${Math.max(0, Math.floor(opts.maxAge))}`);
  return parts.join('; ');
}
