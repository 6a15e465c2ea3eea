/**
 * `--store` / $TESSERA_STORE: the PostgreSQL URL, checked before anything starts, and its printable
 * form (never the password). No `pg` import here: the CLI loads this for every `tessera server`.
 */
import { TesseraError } from '../../core/errors.js';

/** The URL without its password, for messages. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    if (u.searchParams.has('password')) u.searchParams.set('password', '***');
    return u.toString();
  } catch {
    return 'postgres://(unparseable URL)';
  }
}

/** Checks a `--store` URL: postgres:// or postgresql:// with a host and a database. */
export function parseStoreUrl(url: string): URL {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new TesseraError('TESSERA_CONFIG_INVALID', '--store is not a URL (expected postgres://USER[:PASSWORD]@HOST:PORT/DATABASE)');
  }
  if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') {
    throw new TesseraError('TESSERA_CONFIG_INVALID', `--store must be a postgres:// URL, not ${u.protocol}//`);
  }
  if (!u.hostname) throw new TesseraError('TESSERA_CONFIG_INVALID', '--store URL has no host');
  if (u.pathname.length <= 1) throw new TesseraError('TESSERA_CONFIG_INVALID', '--store URL names no database (…/DATABASE)');
  return u;
}

/** The store URL of `tessera server` (`--store`, else $TESSERA_STORE), checked; undefined: SQLite in --data-dir. */
export function storeOption(flag: unknown, env: string | undefined): string | undefined {
  const url = flag !== undefined ? String(flag) : env !== undefined && env !== '' ? env : undefined;
  if (url === undefined) return undefined;
  parseStoreUrl(url);
  return url;
}
