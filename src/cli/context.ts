import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ApiClient } from '../common/api-client.js';
import { TesseraError, isTesseraError, type ErrorCode } from '../core/errors.js';

export const DEFAULT_SERVER_DIR = '.tessera/server';

export interface GlobalOptions {
  adminDir?: string;
  server?: string;
  json?: boolean;
}

/** Wraps a command's action: global options, errors with stable codes and exit statuses (main.ts's `run`). */
export type Run = <A extends unknown[]>(fn: (g: GlobalOptions, ...args: A) => Promise<void>) => (...args: A) => Promise<void>;

/** Exit statuses, documented in the README: scripts can branch on them. */
export const EXIT = { ok: 0, failed: 1, usage: 2, unreachable: 3, refused: 4 } as const;

export function exitStatusFor(code: ErrorCode): number {
  switch (code) {
    case 'TESSERA_CONFIG_INVALID':
    case 'TESSERA_CREDENTIAL_MISSING':
    case 'TESSERA_ADDRESS_IN_USE':
    case 'TESSERA_WORKLOAD_API_SOCKET_IN_USE':
      return EXIT.usage;
    case 'TESSERA_SERVER_UNREACHABLE':
    case 'TESSERA_UNAVAILABLE':
      return EXIT.unreachable;
    case 'TESSERA_AUTH_REQUIRED':
    case 'TESSERA_AUTH_INVALID':
    case 'TESSERA_FORBIDDEN':
    case 'TESSERA_TOKEN_INVALID':
    case 'TESSERA_CSR_IDENTITY_MISMATCH':
    case 'TESSERA_APIKEY_INVALID':
      return EXIT.refused;
    default:
      return EXIT.failed;
  }
}

function readRequired(file: string, what: string): string {
  if (!existsSync(file)) throw new TesseraError('TESSERA_CREDENTIAL_MISSING', `${what} not found at ${file}`);
  return readFileSync(file, 'utf8');
}

/** An API client authenticated with the admin credential the server wrote into its data directory. */
export function adminClient(g: GlobalOptions): ApiClient {
  const dir = resolve(g.adminDir ?? process.env.TESSERA_ADMIN_DIR ?? join(DEFAULT_SERVER_DIR, 'admin'));
  if (!existsSync(dir)) {
    throw new TesseraError('TESSERA_CREDENTIAL_MISSING', `no admin credential directory at ${dir}: start \`tessera server\` first, or pass --admin-dir / set TESSERA_ADMIN_DIR`);
  }
  let url = g.server ?? process.env.TESSERA_SERVER;
  let trustDomain: string | undefined;
  if (existsSync(join(dir, 'server.json'))) {
    const info = JSON.parse(readFileSync(join(dir, 'server.json'), 'utf8')) as { url?: string; trust_domain?: string };
    url ??= info.url;
    trustDomain = info.trust_domain;
  }
  if (!url) throw new TesseraError('TESSERA_CONFIG_INVALID', 'no server URL: pass --server https://HOST:PORT');
  return new ApiClient(url, {
    ca: readRequired(join(dir, 'bundle.pem'), 'trust bundle'),
    cert: readRequired(join(dir, 'admin.pem'), 'admin certificate'),
    key: readRequired(join(dir, 'admin.key'), 'admin key'),
    ...(trustDomain ? { serverId: `spiffe://${trustDomain}/tessera/server` } : {}),
  });
}

/** An API client authenticated with an agent's SVID files (derived credentials on the command line). */
export function svidClient(agentDir: string, server?: string): ApiClient {
  const dir = resolve(agentDir);
  const state = JSON.parse(readRequired(join(dir, 'agent.json'), 'agent state')) as { serverUrl: string; trustDomain: string };
  return new ApiClient(server ?? state.serverUrl, {
    ca: readRequired(join(dir, 'bundle.pem'), 'trust bundle'),
    cert: readRequired(join(dir, 'svid.pem'), 'SVID'),
    key: readRequired(join(dir, 'svid.key'), 'SVID key'),
    serverId: `spiffe://${state.trustDomain}/tessera/server`,
  });
}

/** Prints a result: JSON for scripts, or a human rendering. */
export function output(g: GlobalOptions, value: unknown, human: () => string): void {
  process.stdout.write(g.json ? `${JSON.stringify(value, null, 2)}\n` : `${human()}\n`);
}

export function reportError(err: unknown, json: boolean): number {
  const e = isTesseraError(err) ? err : new TesseraError('TESSERA_INTERNAL', (err as Error)?.message ?? String(err));
  if (json) process.stdout.write(`${JSON.stringify({ error: e.toJSON() })}\n`);
  else process.stderr.write(`tessera: ${e.message} [${e.code}]\n`);
  return exitStatusFor(e.code);
}

/** Formats rows as an aligned table. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}
