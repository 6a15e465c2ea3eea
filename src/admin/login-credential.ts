/**
 * The CLI's `tessera login` credential on disk: a person certificate and the key the CLI generated
 * for it (the key never left this machine), in `$TESSERA_HOME/login/`, else
 * `$XDG_CONFIG_HOME/tessera/login/`, else `~/.config/tessera/login/`. The directory is 0700, the key
 * and certificate 0600.
 *
 *   key.pem     PKCS#8 P-256 private key (0600)
 *   cert.pem    the person certificate, spiffe://<td>/user/<name> (0600)
 *   bundle.pem  the trust bundle the control plane was verified with
 *   login.json  server URL, trust domain, username, serial, not_after, mfa_at, groups
 */
import { chmodSync, existsSync, readFileSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { TesseraError } from '../core/errors.js';
import { ensurePrivateDir, writeFileAtomic } from '../core/files.js';
import type { ClientTls } from '../common/api-client.js';

export interface LoginInfo {
  server: string;
  trust_domain: string;
  username: string;
  spiffe_id: string;
  serial: string;
  groups: string[];
  mfa_at: string | null;
  issued_at: string | null;
  not_after: string;
}

const FILES = ['key.pem', 'cert.pem', 'bundle.pem', 'login.json'] as const;

/** Where `tessera login` keeps its credential. */
export function loginDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.TESSERA_HOME) return resolve(env.TESSERA_HOME, 'login');
  const config = env.XDG_CONFIG_HOME ? resolve(env.XDG_CONFIG_HOME) : join(homedir(), '.config');
  return join(config, 'tessera', 'login');
}

/** The stored login, or undefined when there is none (no login.json). */
export function readLogin(dir = loginDir()): LoginInfo | undefined {
  const file = join(dir, 'login.json');
  if (!existsSync(file)) return undefined;
  try {
    const info = JSON.parse(readFileSync(file, 'utf8')) as LoginInfo;
    if (typeof info.server !== 'string' || typeof info.not_after !== 'string' || typeof info.spiffe_id !== 'string') throw new Error('fields');
    return info;
  } catch {
    throw new TesseraError('TESSERA_CREDENTIAL_MISSING', `${file} is not a tessera login record: run \`tessera logout\` and \`tessera login\``);
  }
}

/** The login credential as client TLS material (the certificate and key; the bundle to verify the server). */
export function loginTls(dir = loginDir()): ClientTls {
  const read = (name: string): string => {
    const f = join(dir, name);
    if (!existsSync(f)) throw new TesseraError('TESSERA_CREDENTIAL_MISSING', `${f} is missing: run \`tessera login\``);
    return readFileSync(f, 'utf8');
  };
  return { ca: read('bundle.pem'), cert: read('cert.pem'), key: read('key.pem') };
}

/** Writes a new login (key, certificate, bundle, record); the record last, so a reader never finds half a login. */
export function writeLogin(dir: string, o: { keyPem: string; certPem: string; bundlePem: string; info: LoginInfo }): void {
  ensurePrivateDir(dir);
  chmodSync(dir, 0o700);
  rmSync(join(dir, 'login.json'), { force: true });
  writeFileAtomic(join(dir, 'key.pem'), o.keyPem, 0o600);
  writeFileAtomic(join(dir, 'cert.pem'), o.certPem, 0o600);
  writeFileAtomic(join(dir, 'bundle.pem'), o.bundlePem, 0o644);
  writeFileAtomic(join(dir, 'login.json'), `${JSON.stringify(o.info, null, 2)}\n`, 0o600);
}

/** Deletes the login's files (the directory stays); true when there was one. */
export function deleteLogin(dir = loginDir()): boolean {
  const had = existsSync(join(dir, 'login.json')) || existsSync(join(dir, 'key.pem'));
  for (const f of FILES) rmSync(join(dir, f), { force: true });
  return had;
}
