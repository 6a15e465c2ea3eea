/**
 * SPIFFE bundles in their standard JWK Set form (SPIFFE_Trust_Domain_and_Bundle.md §4), plus the
 * plain JWKS document served at an OIDC `jwks_uri`.
 *
 * Decisions taken from the standards:
 * - `keys` MUST be present; `spiffe_sequence` and `spiffe_refresh_hint` are optional (SHOULD), so a
 *   bundle without a sequence parses with `sequence: 0`. Both, when present, must be non-negative
 *   safe integers (we refuse values JavaScript numbers cannot represent exactly rather than round).
 * - Each JWK's `kty` MUST be set (missing/non-string kty: malformed). Elements with an unknown `kty`
 *   or an unknown `use` are ignored (§4.1.3, §4.2.1, §4.2.2). `use` MUST be set, so an element
 *   without `use` is not an authority for any SVID type and is ignored as well (as go-spiffe does).
 * - `x509-svid` elements carry exactly one certificate in `x5c` (standard base64 DER, RFC 7517 §4.7),
 *   which must be a CA certificate whose public key matches the JWK members (RFC 7517 §4.7).
 * - `jwt-svid` elements MUST have a non-empty `kid` (JWT-SVID.md §6.1); kids must be unique. Only
 *   key types usable with the JWT-SVID algorithm table are kept: EC P-256/P-384/P-521 and RSA
 *   (>= 2048 bits, as jose requires); other key types (e.g. OKP) are ignored like unknown ones.
 * - Any private key member (`d`, `p`, `q`, `dp`, `dq`, `qi`, `oth`, `k`, `priv`) makes the bundle
 *   malformed: a bundle must never carry secrets.
 * - bundleToJwks emits only the members the standards define (kty + key members, `use`, `kid` for
 *   JWT authorities, `x5c` for X.509 authorities); no `alg` (SPIFFE defines none for bundles).
 */
import { X509Certificate, createPublicKey, type KeyObject } from 'node:crypto';
import { TesseraError } from './errors.js';

export interface BundleContent {
  trustDomain: string;
  /** CA certificates, DER. */
  x509Authorities: Buffer[];
  jwtAuthorities: { kid: string; publicKey: KeyObject }[];
  sequence: number;
  refreshHintSeconds?: number;
}

/** Public members of a JWK, as exported by node:crypto (EC: crv/x/y, RSA: n/e, OKP: crv/x). */
export interface PublicJwk {
  kty: string;
  crv?: string;
  x?: string;
  y?: string;
  n?: string;
  e?: string;
}

/** An element of a SPIFFE bundle. */
export interface SpiffeBundleJwk extends PublicJwk {
  use: 'x509-svid' | 'jwt-svid';
  kid?: string;
  x5c?: string[];
}

export interface SpiffeBundleJwks {
  keys: SpiffeBundleJwk[];
  spiffe_sequence: number;
  spiffe_refresh_hint?: number;
}

/** An element of the OIDC `jwks_uri` document. */
export interface OidcJwk extends PublicJwk {
  kid: string;
  use: 'sig';
  alg?: 'ES256' | 'ES384' | 'ES512';
}

const MAX_BUNDLE_KEYS = 1024;
const MAX_BUNDLE_JSON_CHARS = 4 * 1024 * 1024;
const MAX_KID_LENGTH = 256;
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k', 'priv'] as const;
const KNOWN_KTY = new Set(['EC', 'RSA', 'OKP']);
const JWT_EC_CURVES = new Set(['P-256', 'P-384', 'P-521']);
const TRUST_DOMAIN_RE = /^[a-z0-9._-]{1,255}$/;
const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function bad(message: string): TesseraError {
  return new TesseraError('TESSERA_BAD_REQUEST', message);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Own-property read: never look at the prototype chain of untrusted input. */
function own(obj: Record<string, unknown>, key: string): unknown {
  return Object.prototype.hasOwnProperty.call(obj, key) ? obj[key] : undefined;
}

/** The public JWK members of a key, never private ones (a private KeyObject is reduced first). */
export function publicJwkOf(key: KeyObject): PublicJwk {
  if (key.type === 'secret') throw new TesseraError('TESSERA_INTERNAL', 'a bundle authority must be an asymmetric key');
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  const jwk = pub.export({ format: 'jwk' });
  switch (jwk.kty) {
    case 'EC':
      return { kty: 'EC', crv: String(jwk.crv), x: String(jwk.x), y: String(jwk.y) };
    case 'RSA':
      return { kty: 'RSA', n: String(jwk.n), e: String(jwk.e) };
    case 'OKP':
      return { kty: 'OKP', crv: String(jwk.crv), x: String(jwk.x) };
    default:
      throw new TesseraError('TESSERA_INTERNAL', 'unsupported bundle authority key type');
  }
}

function certificateOf(der: Buffer): X509Certificate {
  try {
    return new X509Certificate(der);
  } catch {
    throw new TesseraError('TESSERA_INTERNAL', 'an X.509 authority of the bundle is not a certificate');
  }
}

/** The SPIFFE bundle (JWK Set form) of a trust domain, as served by a bundle endpoint. */
export function bundleToJwks(b: BundleContent): SpiffeBundleJwks {
  const keys: SpiffeBundleJwk[] = [];
  for (const der of b.x509Authorities) {
    const cert = certificateOf(der);
    keys.push({ ...publicJwkOf(cert.publicKey), use: 'x509-svid', x5c: [Buffer.from(cert.raw).toString('base64')] });
  }
  for (const a of b.jwtAuthorities) {
    keys.push({ ...publicJwkOf(a.publicKey), kid: a.kid, use: 'jwt-svid' });
  }
  const out: SpiffeBundleJwks = { keys, spiffe_sequence: b.sequence };
  if (b.refreshHintSeconds !== undefined) out.spiffe_refresh_hint = b.refreshHintSeconds;
  return out;
}

function jwsAlgFor(jwk: PublicJwk): OidcJwk['alg'] {
  if (jwk.kty !== 'EC') return undefined;
  switch (jwk.crv) {
    case 'P-256':
      return 'ES256';
    case 'P-384':
      return 'ES384';
    case 'P-521':
      return 'ES512';
    default:
      return undefined;
  }
}

/**
 * The JWT authorities as a plain JWKS for an OIDC `jwks_uri` (OpenID Connect Discovery).
 *
 * Decision: `use` is "sig", not "jwt-svid". RFC 7517 §4.2 and OIDC Core §10.1.1 define "sig"/"enc";
 * generic OIDC/JOSE clients (jose's createLocalJWKSet/createRemoteJWKSet among them) only select
 * keys whose `use` is absent or "sig", so a "jwt-svid" use would make every key unusable there.
 * SPIFFE's "jwt-svid" use belongs to the SPIFFE bundle format (bundleToJwks), not to this document.
 * `alg` is set where the key type fixes it (EC P-256 -> ES256, P-384 -> ES384, P-521 -> ES512); it is
 * omitted for RSA, where RS* and PS* are both possible. `kid` is always set so clients can select.
 */
export function jwtKeysAsJwks(b: BundleContent): { keys: OidcJwk[] } {
  return {
    keys: b.jwtAuthorities.map((a) => {
      const jwk = publicJwkOf(a.publicKey);
      const alg = jwsAlgFor(jwk);
      return alg === undefined ? { ...jwk, kid: a.kid, use: 'sig' as const } : { ...jwk, kid: a.kid, use: 'sig' as const, alg };
    }),
  };
}

function optionalCount(v: unknown, name: string): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw bad(`bundle ${name} must be a non-negative integer`);
  }
  return v;
}

function requireBase64url(v: unknown, what: string): string {
  if (typeof v !== 'string' || v.length === 0 || v.length > 4096 || Buffer.from(v, 'base64url').toString('base64url') !== v) {
    throw bad(`${what} must be a canonical base64url string`);
  }
  return v;
}

/** Reads and checks the public key members of a supported kty; returns a clean JWK. */
function readPublicMembers(k: Record<string, unknown>, kty: string, where: string): PublicJwk {
  for (const m of PRIVATE_MEMBERS) {
    if (own(k, m) !== undefined) throw bad(`${where} must not contain private key material`);
  }
  switch (kty) {
    case 'EC': {
      const crv = own(k, 'crv');
      if (typeof crv !== 'string') throw bad(`${where}.crv must be a string`);
      return { kty, crv, x: requireBase64url(own(k, 'x'), `${where}.x`), y: requireBase64url(own(k, 'y'), `${where}.y`) };
    }
    case 'RSA':
      return { kty, n: requireBase64url(own(k, 'n'), `${where}.n`), e: requireBase64url(own(k, 'e'), `${where}.e`) };
    case 'OKP': {
      const crv = own(k, 'crv');
      if (typeof crv !== 'string') throw bad(`${where}.crv must be a string`);
      return { kty, crv, x: requireBase64url(own(k, 'x'), `${where}.x`) };
    }
    default:
      throw bad(`${where}.kty is not supported`);
  }
}

function sameJwk(a: PublicJwk, b: PublicJwk): boolean {
  return a.kty === b.kty && a.crv === b.crv && a.x === b.x && a.y === b.y && a.n === b.n && a.e === b.e;
}

function parseX509Authority(k: Record<string, unknown>, kty: string, where: string): Buffer {
  const declared = readPublicMembers(k, kty, where);
  const x5c = own(k, 'x5c');
  if (!Array.isArray(x5c) || x5c.length !== 1) throw bad(`${where}.x5c must hold exactly one certificate`);
  const b64: unknown = x5c[0];
  if (typeof b64 !== 'string' || b64.length === 0 || !BASE64_RE.test(b64)) throw bad(`${where}.x5c[0] must be base64 DER`);
  const der = Buffer.from(b64, 'base64');
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(der);
  } catch {
    throw bad(`${where}.x5c[0] is not an X.509 certificate`);
  }
  if (!Buffer.from(cert.raw).equals(der)) throw bad(`${where}.x5c[0] has trailing data`);
  if (!cert.ca) throw bad(`${where}.x5c[0] is not a CA certificate`);
  let actual: PublicJwk;
  try {
    actual = publicJwkOf(cert.publicKey);
  } catch {
    throw bad(`${where}.x5c[0] has an unsupported public key`);
  }
  if (!sameJwk(declared, actual)) throw bad(`${where} key members do not match its certificate`);
  return der;
}

function parseJwtAuthority(k: Record<string, unknown>, kty: string, where: string): { kid: string; publicKey: KeyObject } | undefined {
  // Only key types that can verify a JWT-SVID algorithm (JWT-SVID.md §2.1); others are ignored.
  if (kty === 'OKP') return undefined;
  if (kty === 'EC') {
    const crv = own(k, 'crv');
    if (typeof crv === 'string' && !JWT_EC_CURVES.has(crv)) return undefined;
  }
  const kid = own(k, 'kid');
  if (typeof kid !== 'string' || kid.length === 0 || kid.length > MAX_KID_LENGTH) {
    throw bad(`${where}.kid must be a non-empty string`);
  }
  const jwk = readPublicMembers(k, kty, where);
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey({ key: { ...jwk }, format: 'jwk' });
  } catch {
    throw bad(`${where} is not a valid public key`);
  }
  if (kty === 'RSA' && (publicKey.asymmetricKeyDetails?.modulusLength ?? 0) < 2048) {
    throw bad(`${where} RSA key is shorter than 2048 bits`);
  }
  return { kid, publicKey };
}

/**
 * Parses and strictly validates a SPIFFE bundle (JWK Set form) for `trustDomain`. Accepts the parsed
 * JSON value or its text. Throws TESSERA_BAD_REQUEST on anything malformed.
 */
export function parseJwksBundle(json: unknown, trustDomain: string): BundleContent {
  if (typeof trustDomain !== 'string' || !TRUST_DOMAIN_RE.test(trustDomain)) throw bad('invalid trust domain name');
  let doc: unknown = json;
  if (typeof doc === 'string') {
    if (doc.length > MAX_BUNDLE_JSON_CHARS) throw bad('bundle is too large');
    try {
      doc = JSON.parse(doc);
    } catch {
      throw bad('bundle is not valid JSON');
    }
  }
  if (!isRecord(doc)) throw bad('bundle must be a JSON object');
  const keys = own(doc, 'keys');
  if (!Array.isArray(keys)) throw bad('bundle keys must be an array');
  if (keys.length > MAX_BUNDLE_KEYS) throw bad('bundle has too many keys');
  const sequence = optionalCount(own(doc, 'spiffe_sequence'), 'spiffe_sequence') ?? 0;
  const refreshHintSeconds = optionalCount(own(doc, 'spiffe_refresh_hint'), 'spiffe_refresh_hint');

  const x509Authorities: Buffer[] = [];
  const jwtAuthorities: { kid: string; publicKey: KeyObject }[] = [];
  const kids = new Set<string>();
  const certs = new Set<string>();
  keys.forEach((k: unknown, i) => {
    const where = `keys[${i}]`;
    if (!isRecord(k)) throw bad(`${where} must be an object`);
    const kty = own(k, 'kty');
    if (typeof kty !== 'string' || kty.length === 0) throw bad(`${where}.kty must be set`);
    const use = own(k, 'use');
    if (use !== undefined && typeof use !== 'string') throw bad(`${where}.use must be a string`);
    if (!KNOWN_KTY.has(kty)) return; // unknown key type: ignore the element
    if (use === 'x509-svid') {
      const der = parseX509Authority(k, kty, where);
      const id = der.toString('base64');
      if (certs.has(id)) throw bad(`${where} duplicates an X.509 authority`);
      certs.add(id);
      x509Authorities.push(der);
    } else if (use === 'jwt-svid') {
      const a = parseJwtAuthority(k, kty, where);
      if (a === undefined) return;
      if (kids.has(a.kid)) throw bad(`${where}.kid is not unique`);
      kids.add(a.kid);
      jwtAuthorities.push(a);
    }
    // any other (or absent) use: ignore the element
  });

  const out: BundleContent = { trustDomain, x509Authorities, jwtAuthorities, sequence };
  if (refreshHintSeconds !== undefined) out.refreshHintSeconds = refreshHintSeconds;
  return out;
}
