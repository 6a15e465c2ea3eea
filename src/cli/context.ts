/** What every command shares: global options, exit statuses, output and error reporting. */
import { adminClient, refreshAdminBundle, type AdminLocation } from '../admin/clients.js';
import { TesseraError, isTesseraError, type ErrorCode } from '../core/errors.js';

/** The global options: where the admin credential and the control plane are (--admin-dir, --server), --json. */
export interface GlobalOptions extends AdminLocation {
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
    case 'TESSERA_ADMIN_REVOKED':
    case 'TESSERA_GRANT_SELF_APPROVAL':
    case 'TESSERA_IDENTITY_QUARANTINED':
    case 'TESSERA_MFA_REQUIRED':
    case 'TESSERA_POSTURE_INVALID':
    case 'TESSERA_CREDENTIAL_EXPIRED':
    case 'TESSERA_LOGIN_REVOKED':
    case 'TESSERA_LOGIN_DENIED':
    case 'TESSERA_LOGIN_EXPIRED':
      return EXIT.refused;
    default:
      return EXIT.failed;
  }
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

/** A whole number from 1 to max for the flag `name`. */
export function count(name: string, max: number): (v: string) => number {
  return (v: string) => {
    const n = Number(v);
    if (!/^[0-9]+$/.test(v) || !Number.isSafeInteger(n) || n < 1 || n > max) throw new TesseraError('TESSERA_CONFIG_INVALID', `${name} must be a whole number from 1 to ${max}`);
    return n;
  };
}

/** Runs `fn` with an admin API client (the admin credential), closed afterwards. */
export async function withAdmin<T>(g: GlobalOptions, fn: (c: ReturnType<typeof adminClient>) => Promise<T>): Promise<T> {
  const client = adminClient(g);
  try {
    const res = await fn(client);
    await refreshAdminBundle(g, client);
    return res;
  } finally {
    client.close();
  }
}
