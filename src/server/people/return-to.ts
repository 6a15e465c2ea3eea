import { TesseraError } from '../../core/errors.js';

/**
 * Where to send the browser after sign-in: a same-origin relative path only, so a link
 * `.../signin?return_to=https://evil.example` cannot turn the sign-in into an open redirect.
 *
 * Accepted: `/` followed by printable ASCII without a backslash, and not `//` (scheme-relative,
 * another host). The result is re-resolved against the origin and must stay on it; it is returned
 * as the path, query and fragment of that resolution (normalised), never as given.
 *
 * @example parseReturnTo('/console/map?x=1', 'https://cp.example') // '/console/map?x=1'
 */
export function parseReturnTo(value: unknown, origin: string): string {
  if (value === undefined || value === '') return '/';
  const refuse = (): never => {
    throw new TesseraError('TESSERA_REDIRECT_INVALID');
  };
  if (typeof value !== 'string' || value.length > 2048) return refuse();
  // Browsers treat `\` as `/` and drop tabs and newlines inside URLs (WHATWG URL §4.4), so
  // `/\evil.example` or `/\t/evil.example` would be scheme-relative: printable ASCII, no backslash.
  if (!/^\/[\x21-\x7e]*$/.test(value) || value.includes('\\') || value.startsWith('//')) return refuse();
  let url: URL;
  try {
    url = new URL(value, origin);
  } catch {
    return refuse();
  }
  if (url.origin !== new URL(origin).origin) return refuse();
  const path = `${url.pathname}${url.search}${url.hash}`;
  if (path.startsWith('//')) return refuse();
  return path;
}
