/**
 * `tessera svid validate-jwt --audience A TOKEN|- [--json]`: validates a JWT-SVID with the system's
 * own validator (src/core/jwt-svid.ts, the one behind the Workload API's ValidateJWTSVID) against
 * the trust domain's JWT authorities. Where the bundle comes from, in this order:
 * - `--bundle FILE --trust-domain TD`: a SPIFFE bundle in JWK Set form (what GET /v1/bundle
 *   serves), offline: nothing is fetched;
 * - `--agent-dir DIR`: GET /v1/bundle from the control plane, authenticated with that agent's SVID;
 * - otherwise the admin credential (`--admin-dir`, as for admin commands).
 * Online, the trust domain is the control plane's (GET /healthz over the same authenticated channel).
 *
 * The token is never printed, logged or put in an error. `-` reads it from stdin, so that it does
 * not land in the shell history or in the process list. Exit 0 valid, 1 refused
 * (TESSERA_JWT_INVALID / _EXPIRED / _AUDIENCE), 2 bad options or bundle file, 3 unreachable.
 */
import type { Command } from 'commander';
import { bundleFromControlPlane, bundleFromFile } from '../admin/jwt-bundle.js';
import { TesseraError } from '../core/errors.js';
import { MAX_JWT_SVID_LENGTH, verifyJwtSvid } from '../core/jwt-svid.js';
import { formatDuration } from '../core/duration.js';
import { output, type Run } from './context.js';

type Json = Record<string, unknown>;

/** Reads the token from stdin, bounded (a JWT-SVID is at most 8 KiB; whitespace around it is dropped). */
async function readTokenFromStdin(): Promise<string> {
  const limit = MAX_JWT_SVID_LENGTH + 1024;
  let text = '';
  for await (const chunk of process.stdin) {
    text += String(chunk);
    if (text.length > limit) throw new TesseraError('TESSERA_JWT_INVALID');
  }
  return text.trim();
}

export function validateJwtCommand(svid: Command, run: Run): void {
  svid.command('validate-jwt')
    .description('validate a JWT-SVID with Tessera\'s own validator: signature against the trust bundle, audience, expiry, subject; prints sub, aud and exp (never the token)')
    .argument('<token>', 'the JWT-SVID, or - to read it from stdin (keeps it out of the shell history)')
    .requiredOption('--audience <aud>', 'the audience you are validating for (the token\'s aud must contain it)')
    .option('--bundle <file>', 'offline: a SPIFFE bundle in JWK Set form (e.g. saved from GET /v1/bundle); needs --trust-domain')
    .option('--trust-domain <td>', 'the trust domain of --bundle')
    .option('--agent-dir <dir>', 'fetch the bundle with this agent\'s SVID (default: with the admin credential)')
    .action(run(async (g, tokenArg: string, o: Json) => {
      const audience = String(o.audience);
      if (audience.length === 0) throw new TesseraError('TESSERA_CONFIG_INVALID', '--audience must not be empty');
      const td = o.trustDomain as string | undefined;
      const source = o.bundle !== undefined
        ? bundleFromFile(String(o.bundle), td)
        : await bundleFromControlPlane(g, o.agentDir as string | undefined, td);
      const token = tokenArg === '-' ? await readTokenFromStdin() : tokenArg;
      const v = await verifyJwtSvid(token, source.jwks, { audience, trustDomain: source.trustDomain });
      const exp = Math.floor(v.expiresAt.getTime() / 1000);
      const res = { valid: true, sub: v.spiffeId, aud: v.audience, exp, expires_at: v.expiresAt.toISOString() };
      output(g, res, () => [
        'valid JWT-SVID',
        `sub  ${v.spiffeId}`,
        `aud  ${v.audience.join(', ')}`,
        `exp  ${res.expires_at} (in ${formatDuration(Math.max(0, v.expiresAt.getTime() - Date.now()))})`,
      ].join('\n'));
    }));
}
