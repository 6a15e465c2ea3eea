/**
 * A verifier of the gateway's user assertions, for the apps behind it (Node 20, `jose`):
 *
 * ```ts
 * import { createAssertionVerifier } from 'tessera/dist/src/gateway/verify.js';
 * const verify = createAssertionVerifier({
 *   jwksUrl: 'https://apps.example.com:8443/.well-known/jwks.json', ca: readFileSync('gateway-ca.pem', 'utf8'),
 *   issuer: 'spiffe://example.org/gateway/apps', audience: 'spiffe://example.org/tessera/gateway/apps/app/wiki',
 * });
 * const user = await verify(req.headers['x-tessera-user-assertion']); // { sub, username, groups, device? }
 * ```
 *
 * Refused (TESSERA_ASSERTION_INVALID): a missing or malformed header, an algorithm other than ES256,
 * a key not in the gateway's JWKS, a bad signature, another issuer or audience, an expired one (30 s
 * leeway for clocks), or one whose lifetime is over 60 s. The JWKS is fetched once and again when an
 * unknown key id arrives (the gateway rotated), at most once every 10 s.
 */
import { request } from 'node:https';
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet, type JWTPayload } from 'jose';
import { TesseraError } from '../core/errors.js';
import { MAX_ASSERTION_TTL_SECONDS } from './assertion.js';

export interface AssertionVerifierOptions {
  /** The gateway's JWKS URL; or `jwks` to pass the document itself. */
  jwksUrl?: string;
  jwks?: JSONWebKeySet;
  /** PEM of the CA that signed the gateway's TLS certificate (default: the system's). */
  ca?: string;
  /** The gateway's issuer (`iss`): its SPIFFE ID. */
  issuer: string;
  /** This app's audience (`aud`): `spiffe://<td>/tessera/gateway/<gateway>/app/<route>`. */
  audience: string;
  /** Clock leeway in seconds (default 30). */
  leewaySeconds?: number;
}

export interface VerifiedAssertion {
  sub: string;
  username: string;
  groups: string[];
  device?: string;
  jti: string;
  exp: number;
}

const REFETCH_MS = 10_000;

function fetchJwks(url: string, ca: string | undefined): Promise<JSONWebKeySet> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'GET', timeout: 5000, ...(ca ? { ca } : {}) }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > 64 * 1024) req.destroy(new Error('JWKS too large'));
        else chunks.push(c);
      });
      res.on('end', () => {
        try {
          if (res.statusCode !== 200) throw new Error(`HTTP ${res.statusCode}`);
          resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')) as JSONWebKeySet);
        } catch (err) {
          reject(err as Error);
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

/** Returns `verify(headerValue)`, resolving to the person or rejecting with TESSERA_ASSERTION_INVALID. */
export function createAssertionVerifier(opts: AssertionVerifierOptions): (header: string | string[] | undefined) => Promise<VerifiedAssertion> {
  if (!opts.jwks && !opts.jwksUrl) throw new TesseraError('TESSERA_CONFIG_INVALID', 'give the gateway\'s jwksUrl or its jwks');
  let keys = opts.jwks ? createLocalJWKSet(opts.jwks) : undefined;
  let fetchedAt = 0;
  const refresh = async (): Promise<boolean> => {
    if (!opts.jwksUrl || Date.now() - fetchedAt < REFETCH_MS) return false;
    fetchedAt = Date.now();
    keys = createLocalJWKSet(await fetchJwks(opts.jwksUrl, opts.ca));
    return true;
  };
  const refuse = (why: string): TesseraError => new TesseraError('TESSERA_ASSERTION_INVALID', `user assertion refused: ${why}`);
  return async (header) => {
    if (typeof header !== 'string' || header.length === 0 || header.length > 8192) throw refuse('missing or malformed');
    if (!keys) await refresh().catch(() => undefined);
    const once = async (): Promise<JWTPayload> => {
      if (!keys) throw refuse('the gateway\'s JWKS cannot be fetched');
      const { payload } = await jwtVerify(header, keys, {
        algorithms: ['ES256'], issuer: opts.issuer, audience: opts.audience, clockTolerance: opts.leewaySeconds ?? 30, requiredClaims: ['iat', 'exp', 'sub', 'jti'],
      });
      return payload;
    };
    let payload: JWTPayload;
    try {
      payload = await once();
    } catch (err) {
      const code = (err as { code?: string }).code;
      // An unknown key id: the gateway may have rotated; fetch its JWKS again (rate limited) and retry once.
      if (code === 'ERR_JWKS_NO_MATCHING_KEY' && (await refresh().catch(() => false))) {
        try {
          payload = await once();
        } catch (again) {
          throw refuse((again as { code?: string }).code ?? 'invalid');
        }
      } else {
        throw err instanceof TesseraError ? err : refuse(code ?? 'invalid');
      }
    }
    if (payload.exp! - payload.iat! > MAX_ASSERTION_TTL_SECONDS) throw refuse('lifetime over 60 s');
    const groups = Array.isArray(payload.groups) && payload.groups.every((g) => typeof g === 'string') ? (payload.groups as string[]) : undefined;
    if (typeof payload.username !== 'string' || groups === undefined) throw refuse('claims malformed');
    return {
      sub: payload.sub!, username: payload.username, groups, jti: payload.jti!, exp: payload.exp!,
      ...(typeof payload.device === 'string' ? { device: payload.device } : {}),
    };
  };
}
