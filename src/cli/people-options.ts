/** `tessera server --oidc-* --session-*`: people's sign-in flags, checked before the server starts. */
import type { Command } from 'commander';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { parseDuration } from '../core/duration.js';
import { TesseraError } from '../core/errors.js';
import { checkIssuerUrl } from '../server/people/oidc.js';
import type { PeopleOptions } from '../server/people/index.js';
import { parseSignInRateLimit } from '../server/people/signin-limits.js';

const CLAIM = /^[A-Za-z0-9_.:/-]{1,128}$/;

const PEOPLE_SERVER_FLAGS: [string, string][] = [
  ['--oidc-issuer <url>', 'OpenID Connect provider people sign in with (https://, or http:// on loopback); discovery at first use'],
  ['--oidc-client-id <id>', 'this control plane\'s client id at the provider (redirect URI: PUBLIC_URL/v1/auth/oidc/callback)'],
  ['--oidc-client-secret-file <file>', 'file holding the client secret (one line; not readable by group or others)'],
  ['--oidc-groups-claim <claim>', 'ID token / UserInfo claim holding the user\'s groups (default groups)'],
  ['--oidc-mfa-acr <values>', 'comma-separated acr values that count as MFA (besides amr, see the README)'],
  ['--session-idle <duration>', 'a person\'s session unused this long ends (default 30m)'],
  ['--session-max <duration>', 'a person\'s session ends this long after sign-in (default 12h)'],
  ['--login-max-ttl <duration>', 'longest life of a `tessera login` certificate, 5m to 24h (default 8h)'],
  ['--signin-rate-limit <rate>', 'sign-in requests (passkey, TOTP, links, OIDC, logins) each client address may make, per worker: PER_SECOND[:BURST] (default 5:60)'],
];

/** Adds the flags above to `tessera server`. */
export function withPeopleFlags(cmd: Command): Command {
  for (const [flags, help] of PEOPLE_SERVER_FLAGS) cmd.option(flags, help);
  return cmd;
}

/** People's options from the server flags; OIDC flags all or none. */
export function peopleOptions(o: Record<string, unknown>): PeopleOptions | undefined {
  const out: PeopleOptions = {};
  const oidcFlags = ['oidcIssuer', 'oidcClientId', 'oidcClientSecretFile'];
  const given = oidcFlags.filter((k) => o[k] !== undefined);
  if (given.length > 0 && given.length < 3) throw new TesseraError('TESSERA_CONFIG_INVALID', '--oidc-issuer, --oidc-client-id and --oidc-client-secret-file go together');
  if (given.length === 0 && (o.oidcGroupsClaim !== undefined || o.oidcMfaAcr !== undefined)) throw new TesseraError('TESSERA_CONFIG_INVALID', '--oidc-groups-claim and --oidc-mfa-acr need --oidc-issuer');
  if (given.length === 3) {
    const issuer = String(o.oidcIssuer);
    checkIssuerUrl(issuer);
    const file = String(o.oidcClientSecretFile);
    if (!existsSync(file)) throw new TesseraError('TESSERA_CONFIG_INVALID', `--oidc-client-secret-file: no file at ${file}`);
    if ((statSync(file).mode & 0o077) !== 0) throw new TesseraError('TESSERA_CONFIG_INVALID', `--oidc-client-secret-file: ${file} must not be readable by group or others (chmod 600)`);
    const clientSecret = readFileSync(file, 'utf8').trim();
    // Never echo the file's content.
    if (clientSecret.length === 0 || clientSecret.length > 1024 || /\s/.test(clientSecret)) throw new TesseraError('TESSERA_CONFIG_INVALID', '--oidc-client-secret-file must hold one non-empty line');
    const clientId = String(o.oidcClientId);
    if (!/^[\x21-\x7e]{1,256}$/.test(clientId)) throw new TesseraError('TESSERA_CONFIG_INVALID', '--oidc-client-id must be printable ASCII');
    const groupsClaim = o.oidcGroupsClaim === undefined ? 'groups' : String(o.oidcGroupsClaim);
    if (!CLAIM.test(groupsClaim)) throw new TesseraError('TESSERA_CONFIG_INVALID', '--oidc-groups-claim is not a claim name');
    const mfaAcr = o.oidcMfaAcr === undefined ? [] : String(o.oidcMfaAcr).split(',').map((s) => s.trim()).filter((s) => s !== '');
    if (mfaAcr.some((a) => !/^[\x21-\x7e]{1,256}$/.test(a) || a.includes(','))) throw new TesseraError('TESSERA_CONFIG_INVALID', '--oidc-mfa-acr must be comma-separated printable values');
    out.oidc = { issuer, clientId, clientSecret, groupsClaim, mfaAcr };
  }
  const idle = o.sessionIdle === undefined ? undefined : parseDuration(String(o.sessionIdle), '--session-idle');
  const max = o.sessionMax === undefined ? undefined : parseDuration(String(o.sessionMax), '--session-max');
  if (idle !== undefined && (idle < 60_000 || idle > 7 * 86_400_000)) throw new TesseraError('TESSERA_CONFIG_INVALID', '--session-idle must be from 1m to 7d');
  if (max !== undefined && (max < 60_000 || max > 30 * 86_400_000)) throw new TesseraError('TESSERA_CONFIG_INVALID', '--session-max must be from 1m to 30d');
  if (idle !== undefined || max !== undefined) out.sessions = { ...(idle !== undefined ? { idleMs: idle } : {}), ...(max !== undefined ? { absoluteMs: max } : {}) };
  if (o.loginMaxTtl !== undefined) {
    const ms = parseDuration(String(o.loginMaxTtl), '--login-max-ttl');
    if (ms < 5 * 60_000 || ms > 86_400_000) throw new TesseraError('TESSERA_CONFIG_INVALID', '--login-max-ttl must be from 5m to 24h');
    out.login = { maxTtlMs: ms };
  }
  if (o.signinRateLimit !== undefined) out.signInLimits = { rateLimit: parseSignInRateLimit(String(o.signinRateLimit)) };
  return out.oidc || out.sessions || out.login || out.signInLimits ? out : undefined;
}
