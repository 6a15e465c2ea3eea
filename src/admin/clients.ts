/**
 * The credentials an operator's tools call with, read from disk: the admin credential the control
 * plane writes into DATA_DIR/admin/, and an agent's SVID files (to act as that workload). Used by
 * the CLI's commands and by the admin operations in this folder.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ApiClient, type ClientTls } from '../common/api-client.js';
import { TesseraError } from '../core/errors.js';
import { writeFileAtomic } from '../core/files.js';
import type { BundleWatchResponse } from '../core/wire/control-plane.js';
import { loginDir, loginTls, readLogin } from './login-credential.js';

/** Where `tessera server` keeps its state by default (its admin credential is in `admin/` below). */
export const DEFAULT_SERVER_DIR = '.tessera/server';

/** Where to find the admin credential and the control plane (the CLI's global --admin-dir and --server). */
export interface AdminLocation {
  adminDir?: string;
  server?: string;
}

export function readCredential(file: string, what: string): string {
  if (!existsSync(file)) throw new TesseraError('TESSERA_CREDENTIAL_MISSING', `${what} not found at ${file}`);
  return readFileSync(file, 'utf8');
}

/** The admin credential directory: --admin-dir, else $TESSERA_ADMIN_DIR, else the default server's. */
export function adminDir(at: AdminLocation): string {
  return resolve(at.adminDir ?? process.env.TESSERA_ADMIN_DIR ?? join(DEFAULT_SERVER_DIR, 'admin'));
}

/** The admin credential (trust bundle, certificate, key) as client TLS material. */
export function adminTls(at: AdminLocation): ClientTls {
  const dir = adminDir(at);
  return { ca: readCredential(join(dir, 'bundle.pem'), 'trust bundle'), cert: readCredential(join(dir, 'admin.pem'), 'admin certificate'), key: readCredential(join(dir, 'admin.key'), 'admin key') };
}

/**
 * Keeps an admin directory's trust bundle current. The control plane rewrites only its own
 * DATA_DIR/admin/bundle.pem; a named admin's directory (`tessera admin add --out`) would keep the
 * CAs of the day it was made and, once a rotated CA signs the control plane's certificate, could no
 * longer reach it. Called after a command reached the control plane (its certificate verified
 * against this bundle, so what it publishes is trusted as agents trust it): the bundle in force,
 * which lists a prepared CA from the rotation on, replaces the file when it differs. Best effort:
 * the command itself has succeeded.
 */
export async function refreshAdminBundle(at: AdminLocation, client: ApiClient): Promise<void> {
  try {
    const file = join(adminCredential(at).dir, 'bundle.pem');
    const res = await client.call<BundleWatchResponse>('GET', '/v1/bundle/watch?after=0&timeout_seconds=0');
    if (typeof res.bundle_pem !== 'string' || !res.bundle_pem.includes('-----BEGIN CERTIFICATE-----')) return;
    if (readFileSync(file, 'utf8') !== res.bundle_pem) writeFileAtomic(file, res.bundle_pem);
  } catch {
    // Not refreshed this time: the next command tries again.
  }
}

/** An agent's SVID files (trust bundle, SVID, key) as client TLS material. */
export function agentTls(agentDir: string): ClientTls {
  const dir = resolve(agentDir);
  return { ca: readCredential(join(dir, 'bundle.pem'), 'trust bundle'), cert: readCredential(join(dir, 'svid.pem'), 'SVID'), key: readCredential(join(dir, 'svid.key'), 'SVID key') };
}

/**
 * Which admin credential the CLI calls with, in this order:
 * 1. `--admin-dir DIR`, else `$TESSERA_ADMIN_DIR`: that directory's credential (a named admin's, or
 *    the bootstrap credential in DATA_DIR/admin/ for break-glass);
 * 2. else the `tessera login` credential (see login-credential.ts), when there is one: a person
 *    certificate; expired, it is refused (TESSERA_CREDENTIAL_EXPIRED: run `tessera login`) rather
 *    than silently replaced by another credential;
 * 3. else the default server's DATA_DIR/admin/ (`.tessera/server/admin`, the bootstrap credential).
 */
export type AdminCredential =
  | { kind: 'dir'; dir: string }
  | { kind: 'login'; dir: string; server: string; trustDomain: string };

export function adminCredential(at: AdminLocation, env: NodeJS.ProcessEnv = process.env): AdminCredential {
  if (at.adminDir !== undefined || env.TESSERA_ADMIN_DIR) return { kind: 'dir', dir: adminDir(at) };
  const dir = loginDir(env);
  const login = readLogin(dir);
  if (login !== undefined) {
    if (Date.parse(login.not_after) <= Date.now()) {
      throw new TesseraError('TESSERA_CREDENTIAL_EXPIRED', `the tessera login certificate of ${login.username} expired at ${login.not_after}: run \`tessera login\` (or pass --admin-dir)`);
    }
    return { kind: 'login', dir, server: login.server, trustDomain: login.trust_domain };
  }
  return { kind: 'dir', dir: adminDir(at) };
}

/** The TLS material (trust bundle, certificate, key) of the admin credential {@link adminCredential} picks. */
export function adminCredentialTls(at: AdminLocation): ClientTls {
  const cred = adminCredential(at);
  return cred.kind === 'login' ? loginTls(cred.dir) : adminTls(at);
}

/** An API client authenticated with the admin credential {@link adminCredential} picks. */
export function adminClient(at: AdminLocation): ApiClient {
  const cred = adminCredential(at);
  if (cred.kind === 'login') {
    return new ApiClient(at.server ?? process.env.TESSERA_SERVER ?? cred.server, { ...loginTls(cred.dir), serverId: `spiffe://${cred.trustDomain}/tessera/server` });
  }
  const dir = cred.dir;
  if (!existsSync(dir)) {
    throw new TesseraError('TESSERA_CREDENTIAL_MISSING', `no admin credential directory at ${dir}: start \`tessera server\` first, run \`tessera login\`, or pass --admin-dir / set TESSERA_ADMIN_DIR`);
  }
  let url = at.server ?? process.env.TESSERA_SERVER;
  let trustDomain: string | undefined;
  if (existsSync(join(dir, 'server.json'))) {
    const info = JSON.parse(readFileSync(join(dir, 'server.json'), 'utf8')) as { url?: string; trust_domain?: string };
    url ??= info.url;
    trustDomain = info.trust_domain;
  }
  if (!url) throw new TesseraError('TESSERA_CONFIG_INVALID', 'no server URL: pass --server https://HOST:PORT');
  return new ApiClient(url, {
    ...adminTls(at),
    ...(trustDomain ? { serverId: `spiffe://${trustDomain}/tessera/server` } : {}),
  });
}

/** An API client authenticated with an agent's SVID files (derived credentials on the command line). */
export function svidClient(agentDir: string, server?: string): ApiClient {
  const dir = resolve(agentDir);
  const state = JSON.parse(readCredential(join(dir, 'agent.json'), 'agent state')) as { serverUrl: string; trustDomain: string };
  return new ApiClient(server ?? state.serverUrl, {
    ...agentTls(agentDir),
    serverId: `spiffe://${state.trustDomain}/tessera/server`,
  });
}
