/**
 * The gateway's user assertions: a short-lived ES256 JWT per forwarded request, in the
 * `x-tessera-user-assertion` header, that the app verifies with the gateway's JWKS
 * (`GET /.well-known/jwks.json`; src/gateway/verify.ts is a verifier for apps).
 *
 * Claims: `iss` the gateway's issuer (its SPIFFE ID), `aud` the app's SPIFFE ID
 * (`spiffe://<td>/tessera/gateway/<gateway>/app/<route>`), `sub` the person's SPIFFE ID, `username`,
 * `groups`, `device` (the device's SPIFFE ID, when one was presented), `iat`, `exp` (≤ 60 s later),
 * `jti` (random, per request).
 *
 * Keys: P-256, generated in this process (never leaving it), kept in DATA_DIR/gateway-keys.json
 * (0600) so a restart does not invalidate the JWKS apps cached; a new key every `rotateMs` (default
 * 24 h). The JWKS carries the current key and the previous one (an assertion lives 60 s, so the
 * previous key is needed only for a minute; keeping it for a whole period costs nothing).
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../core/files.js';

export const ASSERTION_HEADER = 'x-tessera-user-assertion';
export const MAX_ASSERTION_TTL_SECONDS = 60;
export const DEFAULT_KEY_ROTATION_MS = 24 * 3600_000;
const KEY_FILE = 'gateway-keys.json';

interface StoredKey { kid: string; created_at: number; jwk: Record<string, unknown> }
interface LiveKey { kid: string; createdAt: number; key: KeyObject; publicJwk: Record<string, unknown>; header: string }

export interface AssertionClaims {
  aud: string;
  sub: string;
  username: string;
  groups: readonly string[];
  device?: string;
}

const b64 = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url');

function live(s: StoredKey): LiveKey {
  const key = createPrivateKey({ key: s.jwk as import('node:crypto').JsonWebKey, format: 'jwk' });
  const pub = createPublicKey(key).export({ format: 'jwk' }) as Record<string, unknown>;
  return { kid: s.kid, createdAt: s.created_at, key, publicJwk: { ...pub, kid: s.kid, alg: 'ES256', use: 'sig' }, header: b64({ alg: 'ES256', typ: 'JWT', kid: s.kid }) };
}

function newKey(now: number): StoredKey {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { kid: randomBytes(12).toString('base64url'), created_at: now, jwk: privateKey.export({ format: 'jwk' }) as Record<string, unknown> };
}

export class AssertionSigner {
  #keys: LiveKey[] = [];
  #stored: StoredKey[] = [];
  #jwks = '';

  constructor(private readonly opts: { dir: string; issuer: string; ttlSeconds?: number; rotateMs?: number; now?: () => number }) {
    const ttl = opts.ttlSeconds ?? MAX_ASSERTION_TTL_SECONDS;
    if (!Number.isInteger(ttl) || ttl < 1 || ttl > MAX_ASSERTION_TTL_SECONDS) throw new Error(`assertion lifetime must be 1-${MAX_ASSERTION_TTL_SECONDS} s`);
    const file = join(opts.dir, KEY_FILE);
    if (existsSync(file)) {
      const parsed = JSON.parse(readFileSync(file, 'utf8')) as { keys?: StoredKey[] };
      this.#stored = (parsed.keys ?? []).slice(0, 2);
    }
    this.rotateIfDue();
  }

  private now(): number {
    return (this.opts.now ?? Date.now)();
  }

  /** Makes a new key when the current one is older than the rotation period (checked on each sign, cheaply). */
  rotateIfDue(): boolean {
    const now = this.now();
    const current = this.#stored[0];
    if (current !== undefined && now - current.created_at < (this.opts.rotateMs ?? DEFAULT_KEY_ROTATION_MS) && this.#keys.length > 0) return false;
    if (current === undefined || now - current.created_at >= (this.opts.rotateMs ?? DEFAULT_KEY_ROTATION_MS)) {
      this.#stored = [newKey(now), ...this.#stored].slice(0, 2);
      writeFileAtomic(join(this.opts.dir, KEY_FILE), JSON.stringify({ keys: this.#stored }), 0o600);
    }
    this.#keys = this.#stored.map(live);
    this.#jwks = JSON.stringify({ keys: this.#keys.map((k) => k.publicJwk) });
    return true;
  }

  /** The JWKS document (public keys only). */
  jwks(): string {
    return this.#jwks;
  }

  get kid(): string {
    return this.#keys[0]!.kid;
  }

  /** A signed assertion for one request. */
  sign(c: AssertionClaims): string {
    this.rotateIfDue();
    const k = this.#keys[0]!;
    const iat = Math.floor(this.now() / 1000);
    const payload = b64({
      iss: this.opts.issuer, aud: c.aud, sub: c.sub, username: c.username, groups: c.groups, ...(c.device !== undefined ? { device: c.device } : {}),
      iat, exp: iat + (this.opts.ttlSeconds ?? MAX_ASSERTION_TTL_SECONDS), jti: randomBytes(12).toString('base64url'),
    });
    const input = `${k.header}.${payload}`;
    // JWS ES256 signatures are R || S, 64 bytes (RFC 7518 §3.4), not DER.
    const sig = sign('sha256', Buffer.from(input), { key: k.key, dsaEncoding: 'ieee-p1363' }).toString('base64url');
    return `${input}.${sig}`;
  }
}
