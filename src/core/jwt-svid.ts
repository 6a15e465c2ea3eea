/**
 * JWT-SVIDs (SPIFFE JWT-SVID.md): signing with node:crypto directly (hot path), verification with
 * jose against the JWT authorities of a trust domain's bundle.
 *
 * Decisions taken from the standard:
 * - Header: only `alg`, `kid`, `typ` may appear (§2, "Any header not described here ... MUST NOT be
 *   included"); we sign `{"alg":"ES256","kid":...,"typ":"JWT"}` and the verifier rejects any other
 *   header member (jku, x5u, jwk, crit, b64, ...) and any `typ` other than "JWT"/"JOSE" (§2.3).
 * - `alg` allowlist = exactly the table of §2.1 (RS256/384/512, ES256/384/512, PS256/384/512).
 *   EdDSA is NOT in that table (it is RFC 8037, not RFC 7518 §3.3-3.5) and "validators receiving a
 *   token with the alg parameter set to a different value MUST reject the token", so it is excluded.
 *   HS* and none are never accepted.
 * - `kid` is optional in the standard (§2.2), but every jwt-svid key in a bundle MUST have one (§6.1)
 *   and the reference implementation (go-spiffe) refuses tokens without it; we do the same, which
 *   also means exactly one candidate key is ever tried.
 * - `aud` and `exp` MUST be present (§3.2, §3.3, §4); `aud` must contain the validator's audience.
 *   `aud` is emitted as a string when there is one audience and as an array when several (RFC 7519
 *   §4.1.3); a single audience is strongly recommended (§7.2).
 * - `sub` MUST be the workload's SPIFFE ID (§3.1): the verifier requires it to be a SPIFFE ID with a
 *   path in the expected trust domain (bundles are per trust domain).
 * - Only bundle keys whose `use` is "jwt-svid" (or absent) are used (§6.2).
 * - Encodings must be canonical base64url, so a token has exactly one valid spelling.
 *
 * Errors say as little as possible: malformed, unknown key, bad signature, wrong algorithm, other
 * trust domain, missing claims are all TESSERA_JWT_INVALID; time problems TESSERA_JWT_EXPIRED; a
 * foreign audience TESSERA_JWT_AUDIENCE. Messages never contain the token or its claims.
 */
import { sign as cryptoSign, type KeyObject } from 'node:crypto';
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet, type JWK, type JWSAlgorithm } from 'jose';
import { TesseraError, type ErrorCode } from './errors.js';

export interface JwtSigningKey {
  kid: string;
  /** P-256 private key. */
  privateKey: KeyObject;
  alg: 'ES256';
}

export interface JwtSvidClaims {
  sub: string;
  aud: string[];
  iss?: string;
  ttlSeconds: number;
  /** Current time in milliseconds (tests); defaults to Date.now(). */
  now?: number;
}

export interface JwtVerifyOptions {
  audience: string;
  trustDomain: string;
  /** Current time in milliseconds; defaults to Date.now(). */
  now?: number;
  /** Default 30. */
  clockToleranceSeconds?: number;
}

export interface VerifiedJwtSvid {
  spiffeId: string;
  audience: string[];
  expiresAt: Date;
  claims: Record<string, unknown>;
}

/**
 * A SPIFFE bundle in JWK Set form (bundleToJwks / parseJwksBundle input). Only elements whose `use`
 * is "jwt-svid" or absent are used, so the OIDC document of jwtKeysAsJwks (use "sig") is not a
 * valid input here: that one is for generic JOSE/OIDC clients.
 */
export interface JwksLike {
  readonly keys: readonly object[];
}

/** Upper bound on the serialized token, checked before anything else. */
export const MAX_JWT_SVID_LENGTH = 8 * 1024;
const DEFAULT_CLOCK_TOLERANCE_SECONDS = 30;
const MAX_SPIFFE_ID_LENGTH = 2048;

/** JWT-SVID.md §2.1, exactly. */
export const JWT_SVID_ALGORITHMS: readonly JWSAlgorithm[] = Object.freeze([
  'RS256',
  'RS384',
  'RS512',
  'ES256',
  'ES384',
  'ES512',
  'PS256',
  'PS384',
  'PS512',
]);
const ALLOWED_ALGS = new Set<string>(JWT_SVID_ALGORITHMS);
const ALLOWED_HEADER_MEMBERS = new Set(['alg', 'kid', 'typ']);
const COMPACT_JWS_RE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
const TRUST_DOMAIN_RE = /^[a-z0-9._-]+$/;
const PATH_SEGMENT_RE = /^[A-Za-z0-9._-]+$/;

// ---------------------------------------------------------------------------------------------
// SPIFFE ID: a deliberately minimal local check (the full parser lives in spiffe-id.ts).

function spiffeIdTrustDomain(id: string): string | undefined {
  if (id.length > MAX_SPIFFE_ID_LENGTH || !id.startsWith('spiffe://')) return undefined;
  const rest = id.slice('spiffe://'.length);
  const slash = rest.indexOf('/');
  if (slash <= 0) return undefined; // no trust domain, or no path
  const td = rest.slice(0, slash);
  if (!TRUST_DOMAIN_RE.test(td)) return undefined;
  const segments = rest.slice(slash + 1).split('/');
  for (const s of segments) {
    if (!PATH_SEGMENT_RE.test(s) || s === '.' || s === '..') return undefined;
  }
  return td;
}

// ---------------------------------------------------------------------------------------------
// Signing.

interface PreparedKey {
  kid: string;
  privateKey: KeyObject;
  /** base64url(JSON header) + "." */
  headerPrefix: string;
}

const prepared = new WeakMap<JwtSigningKey, PreparedKey>();

function b64urlJson(value: unknown): string {
  return Buffer.from(JSON.stringify(value), 'utf8').toString('base64url');
}

function prepare(key: JwtSigningKey): PreparedKey {
  const cached = prepared.get(key);
  if (cached !== undefined && cached.kid === key.kid && cached.privateKey === key.privateKey) return cached;
  const pk = key.privateKey;
  if (
    key.alg !== 'ES256' ||
    pk.type !== 'private' ||
    pk.asymmetricKeyType !== 'ec' ||
    pk.asymmetricKeyDetails?.namedCurve !== 'prime256v1'
  ) {
    throw new TesseraError('TESSERA_INTERNAL', 'JWT signing key must be a P-256 private key used with ES256');
  }
  if (typeof key.kid !== 'string' || key.kid.length === 0) {
    throw new TesseraError('TESSERA_INTERNAL', 'JWT signing key must have a kid');
  }
  const entry: PreparedKey = {
    kid: key.kid,
    privateKey: pk,
    headerPrefix: b64urlJson({ alg: 'ES256', kid: key.kid, typ: 'JWT' }) + '.',
  };
  prepared.set(key, entry);
  return entry;
}

/** Mints a JWT-SVID (compact JWS, ES256). */
export function signJwtSvid(key: JwtSigningKey, claims: JwtSvidClaims): { token: string; expiresAt: Date } {
  const p = prepare(key);
  if (typeof claims.sub !== 'string' || spiffeIdTrustDomain(claims.sub) === undefined) {
    throw new TesseraError('TESSERA_BAD_REQUEST', 'JWT-SVID subject must be a SPIFFE ID with a path');
  }
  const aud = claims.aud;
  if (!Array.isArray(aud) || aud.length === 0 || !aud.every((a) => typeof a === 'string' && a.length > 0)) {
    throw new TesseraError('TESSERA_BAD_REQUEST', 'JWT-SVID audience must be one or more non-empty strings');
  }
  if (!Number.isSafeInteger(claims.ttlSeconds) || claims.ttlSeconds <= 0) {
    throw new TesseraError('TESSERA_BAD_REQUEST', 'JWT-SVID ttl must be a positive integer number of seconds');
  }
  if (claims.iss !== undefined && (typeof claims.iss !== 'string' || claims.iss.length === 0)) {
    throw new TesseraError('TESSERA_BAD_REQUEST', 'JWT-SVID issuer must be a non-empty string');
  }
  const nowMs = claims.now ?? Date.now();
  if (!Number.isFinite(nowMs)) throw new TesseraError('TESSERA_INTERNAL', 'invalid clock value');
  const iat = Math.floor(nowMs / 1000);
  const exp = iat + claims.ttlSeconds;
  const payload: Record<string, unknown> = {
    sub: claims.sub,
    aud: aud.length === 1 ? aud[0] : [...aud],
    exp,
    iat,
  };
  if (claims.iss !== undefined) payload.iss = claims.iss;
  const signingInput = p.headerPrefix + b64urlJson(payload);
  const signature = cryptoSign('sha256', Buffer.from(signingInput, 'ascii'), {
    key: p.privateKey,
    dsaEncoding: 'ieee-p1363',
  });
  return { token: `${signingInput}.${signature.toString('base64url')}`, expiresAt: new Date(exp * 1000) };
}

// ---------------------------------------------------------------------------------------------
// Verification.

function reject(code: ErrorCode): TesseraError {
  // The default description of each code: deliberately no detail, never token content.
  return new TesseraError(code);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isCanonicalB64url(segment: string): boolean {
  return Buffer.from(segment, 'base64url').toString('base64url') === segment;
}

/** Structural checks jose does not do for us (header allowlist, canonical encoding, kid). */
function precheck(token: unknown): void {
  if (typeof token !== 'string' || token.length > MAX_JWT_SVID_LENGTH || !COMPACT_JWS_RE.test(token)) {
    throw reject('TESSERA_JWT_INVALID');
  }
  const [h, p, s] = token.split('.') as [string, string, string];
  if (!isCanonicalB64url(h) || !isCanonicalB64url(p) || !isCanonicalB64url(s)) throw reject('TESSERA_JWT_INVALID');
  let header: unknown;
  try {
    header = JSON.parse(Buffer.from(h, 'base64url').toString('utf8'));
  } catch {
    throw reject('TESSERA_JWT_INVALID');
  }
  if (!isRecord(header)) throw reject('TESSERA_JWT_INVALID');
  for (const name of Object.keys(header)) {
    if (!ALLOWED_HEADER_MEMBERS.has(name)) throw reject('TESSERA_JWT_INVALID');
  }
  const { alg, kid, typ } = header;
  if (typeof alg !== 'string' || !ALLOWED_ALGS.has(alg)) throw reject('TESSERA_JWT_INVALID');
  if (typeof kid !== 'string' || kid.length === 0) throw reject('TESSERA_JWT_INVALID');
  if (typ !== undefined && typ !== 'JWT' && typ !== 'JOSE') throw reject('TESSERA_JWT_INVALID');
}

/** The bundle's JWT-SVID keys (use "jwt-svid" or absent), with `use` removed so jose accepts them. */
function jwtSvidKeys(jwks: JwksLike): JSONWebKeySet {
  const keys: JWK[] = [];
  const list: unknown = isRecord(jwks) ? jwks.keys : undefined;
  if (!Array.isArray(list)) return { keys };
  for (const k of list as unknown[]) {
    if (!isRecord(k)) continue;
    const { use, ...rest } = k;
    if (use !== undefined && use !== 'jwt-svid') continue;
    keys.push(rest as JWK);
  }
  return { keys };
}

/**
 * jose's local JWK Set caches imported keys per instance, and importing dominates verification cost.
 * Instances are cached by the exact content of the key set (JSON of the filtered keys), so a rotated
 * or redacted bundle can never be served from a stale entry. Small LRU: a process sees few bundles.
 */
const KEY_SET_CACHE_SIZE = 32;
const keySetCache = new Map<string, ReturnType<typeof createLocalJWKSet>>();

function localKeySet(keySet: JSONWebKeySet): ReturnType<typeof createLocalJWKSet> {
  const fingerprint = JSON.stringify(keySet.keys);
  const hit = keySetCache.get(fingerprint);
  if (hit !== undefined) {
    keySetCache.delete(fingerprint);
    keySetCache.set(fingerprint, hit);
    return hit;
  }
  const created = createLocalJWKSet(keySet);
  keySetCache.set(fingerprint, created);
  if (keySetCache.size > KEY_SET_CACHE_SIZE) {
    const oldest = keySetCache.keys().next();
    if (oldest.done !== true) keySetCache.delete(oldest.value);
  }
  return created;
}

function mapJoseError(err: unknown): TesseraError {
  if (err instanceof TesseraError) return err;
  const code = isRecord(err) || err instanceof Error ? (err as { code?: unknown }).code : undefined;
  const claim = err instanceof Error ? (err as { claim?: unknown }).claim : undefined;
  const reason = err instanceof Error ? (err as { reason?: unknown }).reason : undefined;
  switch (code) {
    case 'ERR_JWT_EXPIRED':
      return reject('TESSERA_JWT_EXPIRED');
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      if (reason === 'check_failed' && claim === 'aud') return reject('TESSERA_JWT_AUDIENCE');
      if (reason === 'check_failed' && claim === 'nbf') return reject('TESSERA_JWT_EXPIRED');
      return reject('TESSERA_JWT_INVALID'); // missing or mistyped claims
    default:
      // ERR_JWKS_NO_MATCHING_KEY, ERR_JWKS_MULTIPLE_MATCHING_KEYS, ERR_JOSE_ALG_NOT_ALLOWED,
      // ERR_JWS_SIGNATURE_VERIFICATION_FAILED, ERR_JWS_INVALID, ERR_JWT_INVALID, key import errors...
      return reject('TESSERA_JWT_INVALID');
  }
}

/**
 * The trust domain a JWT-SVID *claims* (its `sub`), read WITHOUT verifying anything: only to pick
 * which trust domain's bundle to verify it against (ours or a federated one, never merged), after
 * which {@link verifyJwtSvid} checks the signature with that bundle and that `sub` is in that same
 * trust domain. Undefined for anything that is not a well-formed compact JWS with such a `sub`.
 */
export function claimedTrustDomain(token: unknown): string | undefined {
  try {
    precheck(token);
    const payload: unknown = JSON.parse(Buffer.from((token as string).split('.')[1]!, 'base64url').toString('utf8'));
    return isRecord(payload) && typeof payload.sub === 'string' ? spiffeIdTrustDomain(payload.sub) : undefined;
  } catch {
    return undefined;
  }
}

/** Verifies a JWT-SVID against the JWT authorities of `opts.trustDomain`'s bundle. */
export async function verifyJwtSvid(token: string, jwks: JwksLike, opts: JwtVerifyOptions): Promise<VerifiedJwtSvid> {
  if (typeof opts.audience !== 'string' || opts.audience.length === 0) {
    throw new TesseraError('TESSERA_INTERNAL', 'verifyJwtSvid: audience must be a non-empty string');
  }
  if (typeof opts.trustDomain !== 'string' || !TRUST_DOMAIN_RE.test(opts.trustDomain)) {
    throw new TesseraError('TESSERA_INTERNAL', 'verifyJwtSvid: invalid trust domain');
  }
  const tolerance = opts.clockToleranceSeconds ?? DEFAULT_CLOCK_TOLERANCE_SECONDS;
  if (!Number.isFinite(tolerance) || tolerance < 0) {
    throw new TesseraError('TESSERA_INTERNAL', 'verifyJwtSvid: invalid clock tolerance');
  }
  const nowMs = opts.now ?? Date.now();
  if (!Number.isFinite(nowMs)) throw new TesseraError('TESSERA_INTERNAL', 'verifyJwtSvid: invalid clock value');

  precheck(token);
  const keySet = jwtSvidKeys(jwks);
  if (keySet.keys.length === 0) throw reject('TESSERA_JWT_INVALID');

  let payload: Record<string, unknown>;
  try {
    const result = await jwtVerify(token, localKeySet(keySet), {
      algorithms: [...JWT_SVID_ALGORITHMS],
      audience: opts.audience,
      requiredClaims: ['exp', 'aud', 'sub'],
      currentDate: new Date(nowMs),
      clockTolerance: tolerance,
    });
    payload = result.payload as Record<string, unknown>;
  } catch (err) {
    throw mapJoseError(err);
  }

  const { sub, aud, exp } = payload;
  if (typeof sub !== 'string' || spiffeIdTrustDomain(sub) !== opts.trustDomain) throw reject('TESSERA_JWT_INVALID');
  let audience: string[];
  if (typeof aud === 'string') audience = [aud];
  else if (Array.isArray(aud) && aud.length > 0 && aud.every((a) => typeof a === 'string')) audience = aud as string[];
  else throw reject('TESSERA_JWT_INVALID');
  if (typeof exp !== 'number' || !Number.isFinite(exp)) throw reject('TESSERA_JWT_INVALID');
  const expiresAt = new Date(exp * 1000);
  if (Number.isNaN(expiresAt.getTime())) throw reject('TESSERA_JWT_INVALID');
  return { spiffeId: sub, audience: [...audience], expiresAt, claims: payload };
}
