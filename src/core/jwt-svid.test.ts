import { createHmac, generateKeyPairSync, sign as cryptoSign, type KeyObject } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import {
  SignJWT,
  createLocalJWKSet,
  createRemoteJWKSet,
  customFetch,
  decodeProtectedHeader,
  jwtVerify,
} from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { httpsFetchTrusting } from '../../test/support/fetch.js';
import { bundleToJwks, jwtKeysAsJwks, type BundleContent } from './bundle.js';
import { TesseraError, type ErrorCode } from './errors.js';
import { MAX_JWT_SVID_LENGTH, claimedTrustDomain, signJwtSvid, verifyJwtSvid, type JwtSigningKey, type JwtVerifyOptions } from './jwt-svid.js';

const TD = 'example.org';
const SUB = 'spiffe://example.org/ns/prod/sa/web';
const AUD = 'spiffe://example.org/reports';
const NOW = 1_900_000_000_000; // ms, fixed clock
const NOW_S = NOW / 1000;

function ecKey(curve = 'P-256'): { privateKey: KeyObject; publicKey: KeyObject } {
  return generateKeyPairSync('ec', { namedCurve: curve });
}

const ours = ecKey();
const signingKey: JwtSigningKey = { kid: 'k1', privateKey: ours.privateKey, alg: 'ES256' };
const bundle: BundleContent = {
  trustDomain: TD,
  x509Authorities: [],
  jwtAuthorities: [{ kid: 'k1', publicKey: ours.publicKey }],
  sequence: 1,
};
const jwks = bundleToJwks(bundle);
const opts: JwtVerifyOptions = { audience: AUD, trustDomain: TD, now: NOW };

const b64u = (v: unknown): string => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/** Hand-signs an arbitrary header/payload with ES256 (node:crypto), for claims signJwtSvid never emits. */
function es256(header: Record<string, unknown>, payload: Record<string, unknown>, key: KeyObject = ours.privateKey): string {
  const input = `${b64u(header)}.${b64u(payload)}`;
  const sig = cryptoSign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
  return `${input}.${sig.toString('base64url')}`;
}

const goodHeader = { alg: 'ES256', kid: 'k1', typ: 'JWT' };
const goodPayload = { sub: SUB, aud: AUD, exp: NOW_S + 300, iat: NOW_S };

async function expectCode(p: Promise<unknown>, code: ErrorCode): Promise<void> {
  const err: unknown = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(TesseraError);
  expect((err as TesseraError).code).toBe(code);
}

function mint(over: Partial<Parameters<typeof signJwtSvid>[1]> = {}): string {
  return signJwtSvid(signingKey, { sub: SUB, aud: [AUD], ttlSeconds: 300, now: NOW, ...over }).token;
}

describe('signJwtSvid', () => {
  it('emits the fixed header, the JWT-SVID claims, and a 64-byte P1363 signature', () => {
    const { token, expiresAt } = signJwtSvid(signingKey, { sub: SUB, aud: [AUD], ttlSeconds: 300, now: NOW + 999 });
    const [h, p, s] = token.split('.') as [string, string, string];
    expect(Buffer.from(h, 'base64url').toString()).toBe('{"alg":"ES256","kid":"k1","typ":"JWT"}');
    expect(JSON.parse(Buffer.from(p, 'base64url').toString())).toEqual({ sub: SUB, aud: AUD, exp: NOW_S + 300, iat: NOW_S });
    expect(Buffer.from(s, 'base64url')).toHaveLength(64);
    expect(expiresAt.getTime()).toBe((NOW_S + 300) * 1000);
  });

  it('emits aud as an array when there are several, and iss when given', () => {
    const { token } = signJwtSvid(signingKey, { sub: SUB, aud: ['a', 'b'], iss: 'https://issuer', ttlSeconds: 60, now: NOW });
    const payload = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;
    expect(payload.aud).toEqual(['a', 'b']);
    expect(payload.iss).toBe('https://issuer');
  });

  it('follows a kid change on the same key object (header cache)', () => {
    const key: JwtSigningKey = { kid: 'a', privateKey: ours.privateKey, alg: 'ES256' };
    expect(decodeProtectedHeader(signJwtSvid(key, { sub: SUB, aud: [AUD], ttlSeconds: 1 }).token).kid).toBe('a');
    key.kid = 'b';
    expect(decodeProtectedHeader(signJwtSvid(key, { sub: SUB, aud: [AUD], ttlSeconds: 1 }).token).kid).toBe('b');
  });

  it('refuses bad input', () => {
    const code = (f: () => unknown): string | undefined => {
      try {
        f();
      } catch (e) {
        return (e as TesseraError).code;
      }
      return undefined;
    };
    expect(code(() => signJwtSvid(signingKey, { sub: 'not-a-spiffe-id', aud: [AUD], ttlSeconds: 60 }))).toBe('TESSERA_BAD_REQUEST');
    expect(code(() => signJwtSvid(signingKey, { sub: 'spiffe://example.org', aud: [AUD], ttlSeconds: 60 }))).toBe('TESSERA_BAD_REQUEST');
    expect(code(() => signJwtSvid(signingKey, { sub: SUB, aud: [], ttlSeconds: 60 }))).toBe('TESSERA_BAD_REQUEST');
    expect(code(() => signJwtSvid(signingKey, { sub: SUB, aud: [''], ttlSeconds: 60 }))).toBe('TESSERA_BAD_REQUEST');
    expect(code(() => signJwtSvid(signingKey, { sub: SUB, aud: [AUD], ttlSeconds: 0 }))).toBe('TESSERA_BAD_REQUEST');
    expect(code(() => signJwtSvid(signingKey, { sub: SUB, aud: [AUD], ttlSeconds: 1.5 }))).toBe('TESSERA_BAD_REQUEST');
    const p384 = ecKey('P-384');
    expect(code(() => signJwtSvid({ kid: 'x', privateKey: p384.privateKey, alg: 'ES256' }, { sub: SUB, aud: [AUD], ttlSeconds: 60 }))).toBe(
      'TESSERA_INTERNAL',
    );
    expect(code(() => signJwtSvid({ kid: 'x', privateKey: ours.publicKey, alg: 'ES256' }, { sub: SUB, aud: [AUD], ttlSeconds: 60 }))).toBe(
      'TESSERA_INTERNAL',
    );
  });
});

describe('verifyJwtSvid', () => {
  it('round-trips sign -> verify', async () => {
    const { token, expiresAt } = signJwtSvid(signingKey, { sub: SUB, aud: [AUD, 'other'], ttlSeconds: 300, now: NOW });
    const v = await verifyJwtSvid(token, jwks, opts);
    expect(v.spiffeId).toBe(SUB);
    expect(v.audience).toEqual([AUD, 'other']);
    expect(v.expiresAt).toEqual(expiresAt);
    expect(v.claims).toMatchObject({ sub: SUB, exp: NOW_S + 300, iat: NOW_S });
    const single = await verifyJwtSvid(mint(), jwks, opts);
    expect(single.audience).toEqual([AUD]);
  });

  it('produces tokens plain jose accepts against jwtKeysAsJwks', async () => {
    const { payload, protectedHeader } = await jwtVerify(mint(), createLocalJWKSet(jwtKeysAsJwks(bundle)), {
      algorithms: ['ES256'],
      audience: AUD,
      currentDate: new Date(NOW),
    });
    expect(payload.sub).toBe(SUB);
    expect(protectedHeader).toEqual({ alg: 'ES256', kid: 'k1', typ: 'JWT' });
  });

  it('uses only jwt-svid (or use-less) keys of the bundle', async () => {
    const pub = jwks.keys[0]!;
    await expect(verifyJwtSvid(mint(), { keys: [{ ...pub, use: undefined }] }, opts)).resolves.toMatchObject({ spiffeId: SUB });
    await expectCode(verifyJwtSvid(mint(), { keys: [{ ...pub, use: 'x509-svid' }] }, opts), 'TESSERA_JWT_INVALID');
    await expectCode(verifyJwtSvid(mint(), { keys: [{ ...pub, use: 'sig' }] }, opts), 'TESSERA_JWT_INVALID');
    await expectCode(verifyJwtSvid(mint(), { keys: [] }, opts), 'TESSERA_JWT_INVALID');
  });

  it('follows key rotation and redaction (no stale key-set cache)', async () => {
    const next = ecKey();
    const rotated: BundleContent = { ...bundle, jwtAuthorities: [{ kid: 'k2', publicKey: next.publicKey }], sequence: 2 };
    const token2 = signJwtSvid({ kid: 'k2', privateKey: next.privateKey, alg: 'ES256' }, { sub: SUB, aud: [AUD], ttlSeconds: 60, now: NOW }).token;
    await expect(verifyJwtSvid(mint(), jwks, opts)).resolves.toBeDefined();
    await expectCode(verifyJwtSvid(token2, jwks, opts), 'TESSERA_JWT_INVALID');
    await expectCode(verifyJwtSvid(mint(), bundleToJwks(rotated), opts), 'TESSERA_JWT_INVALID');
    await expect(verifyJwtSvid(token2, bundleToJwks(rotated), opts)).resolves.toBeDefined();
    // Same object mutated in place: the new content is what counts.
    const mutable = bundleToJwks(bundle);
    await expect(verifyJwtSvid(mint(), mutable, opts)).resolves.toBeDefined();
    mutable.keys.splice(0, 1, ...bundleToJwks(rotated).keys);
    await expectCode(verifyJwtSvid(mint(), mutable, opts), 'TESSERA_JWT_INVALID');
  });

  it('accepts other JWT-SVID algorithms (RS256, PS256, ES384) from foreign keys', async () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const p384 = ecKey('P-384');
    const b: BundleContent = {
      ...bundle,
      jwtAuthorities: [
        { kid: 'rsa', publicKey: rsa.publicKey },
        { kid: 'p384', publicKey: p384.publicKey },
      ],
    };
    for (const [alg, kid, key] of [
      ['RS256', 'rsa', rsa.privateKey],
      ['PS256', 'rsa', rsa.privateKey],
      ['ES384', 'p384', p384.privateKey],
    ] as const) {
      const token = await new SignJWT({ sub: SUB, aud: AUD })
        .setProtectedHeader({ alg, kid, typ: 'JWT' })
        .setExpirationTime(NOW_S + 60)
        .sign(key);
      await expect(verifyJwtSvid(token, bundleToJwks(b), opts)).resolves.toMatchObject({ spiffeId: SUB });
    }
  });

  describe('rejections', () => {
    it('alg none (hand-built)', async () => {
      const h = b64u({ alg: 'none', typ: 'JWT' });
      const p = b64u(goodPayload);
      await expectCode(verifyJwtSvid(`${h}.${p}.`, jwks, opts), 'TESSERA_JWT_INVALID');
      await expectCode(verifyJwtSvid(`${h}.${p}.AAAA`, jwks, opts), 'TESSERA_JWT_INVALID');
      const hk = b64u({ alg: 'none', kid: 'k1' });
      await expectCode(verifyJwtSvid(`${hk}.${p}.`, jwks, opts), 'TESSERA_JWT_INVALID');
    });

    it('HS256 signed with the public key bytes (key confusion)', async () => {
      const pem = ours.publicKey.export({ type: 'spki', format: 'pem' });
      const der = ours.publicKey.export({ type: 'spki', format: 'der' });
      const jwkText = JSON.stringify(jwks.keys[0]);
      for (const secret of [pem, der, jwkText, Buffer.from(jwkText)]) {
        for (const header of [{ alg: 'HS256', kid: 'k1', typ: 'JWT' }, { alg: 'HS256', kid: 'k1' }]) {
          const input = `${b64u(header)}.${b64u(goodPayload)}`;
          const sig = createHmac('sha256', secret).update(input).digest('base64url');
          await expectCode(verifyJwtSvid(`${input}.${sig}`, jwks, opts), 'TESSERA_JWT_INVALID');
        }
      }
      // Even if an attacker slips a symmetric key into the bundle.
      const secret = Buffer.from(pem);
      const input = `${b64u({ alg: 'HS256', kid: 'k1' })}.${b64u(goodPayload)}`;
      const sig = createHmac('sha256', secret).update(input).digest('base64url');
      const octBundle = { keys: [{ kty: 'oct', k: secret.toString('base64url'), kid: 'k1', use: 'jwt-svid' }] };
      await expectCode(verifyJwtSvid(`${input}.${sig}`, octBundle, opts), 'TESSERA_JWT_INVALID');
    });

    it('EdDSA (not in the JWT-SVID algorithm table)', async () => {
      const ed = generateKeyPairSync('ed25519');
      const token = await new SignJWT({ sub: SUB, aud: AUD }).setProtectedHeader({ alg: 'EdDSA', kid: 'ed' }).setExpirationTime(NOW_S + 60).sign(ed.privateKey);
      const edJwks = { keys: [{ ...ed.publicKey.export({ format: 'jwk' }), kid: 'ed', use: 'jwt-svid' }] };
      await expectCode(verifyJwtSvid(token, edJwks, opts), 'TESSERA_JWT_INVALID');
    });

    it('wrong audience', async () => {
      await expectCode(verifyJwtSvid(mint({ aud: ['spiffe://example.org/billing'] }), jwks, opts), 'TESSERA_JWT_AUDIENCE');
      await expectCode(verifyJwtSvid(mint({ aud: ['a', 'b'] }), jwks, opts), 'TESSERA_JWT_AUDIENCE');
    });

    it('expired (beyond the clock skew), but accepted within it', async () => {
      const token = mint({ ttlSeconds: 60 });
      const exp = (NOW_S + 60) * 1000;
      await expect(verifyJwtSvid(token, jwks, { ...opts, now: exp + 20_000 })).resolves.toBeDefined();
      await expectCode(verifyJwtSvid(token, jwks, { ...opts, now: exp + 31_000 }), 'TESSERA_JWT_EXPIRED');
      await expectCode(verifyJwtSvid(token, jwks, { ...opts, now: exp, clockToleranceSeconds: 0 }), 'TESSERA_JWT_EXPIRED');
    });

    it('nbf in the future', async () => {
      const token = es256(goodHeader, { ...goodPayload, nbf: NOW_S + 120 });
      await expectCode(verifyJwtSvid(token, jwks, opts), 'TESSERA_JWT_EXPIRED');
      await expect(verifyJwtSvid(token, jwks, { ...opts, now: NOW + 100_000 })).resolves.toBeDefined();
    });

    it('unknown kid, and a missing kid', async () => {
      await expectCode(verifyJwtSvid(es256({ ...goodHeader, kid: 'nope' }, goodPayload), jwks, opts), 'TESSERA_JWT_INVALID');
      await expectCode(verifyJwtSvid(es256({ alg: 'ES256', typ: 'JWT' }, goodPayload), jwks, opts), 'TESSERA_JWT_INVALID');
    });

    it("another trust domain's key, with a colliding kid or not", async () => {
      const theirs = ecKey();
      const collide = signJwtSvid({ kid: 'k1', privateKey: theirs.privateKey, alg: 'ES256' }, { sub: SUB, aud: [AUD], ttlSeconds: 60, now: NOW });
      await expectCode(verifyJwtSvid(collide.token, jwks, opts), 'TESSERA_JWT_INVALID');
      const own = signJwtSvid({ kid: 'other-td', privateKey: theirs.privateKey, alg: 'ES256' }, { sub: 'spiffe://other.org/x', aud: [AUD], ttlSeconds: 60, now: NOW });
      await expectCode(verifyJwtSvid(own.token, jwks, opts), 'TESSERA_JWT_INVALID');
    });

    it('sub in another trust domain (or not a SPIFFE ID) signed by our key', async () => {
      for (const sub of [
        'spiffe://other.org/ns/prod/sa/web',
        'spiffe://example.org.evil.com/x',
        'spiffe://example.orgx/x',
        'spiffe://example.org',
        'spiffe://example.org/',
        'spiffe://example.org/a//b',
        'spiffe://example.org/a/../b',
        'spiffe://EXAMPLE.org/x',
        'https://example.org/x',
      ]) {
        await expectCode(verifyJwtSvid(es256(goodHeader, { ...goodPayload, sub }), jwks, opts), 'TESSERA_JWT_INVALID');
      }
      await expectCode(verifyJwtSvid(es256(goodHeader, { ...goodPayload, sub: 42 }), jwks, opts), 'TESSERA_JWT_INVALID');
    });

    it('missing aud, exp or sub', async () => {
      for (const claim of ['aud', 'exp', 'sub'] as const) {
        const { [claim]: _drop, ...payload } = goodPayload;
        await expectCode(verifyJwtSvid(es256(goodHeader, payload), jwks, opts), 'TESSERA_JWT_INVALID');
      }
      await expectCode(verifyJwtSvid(es256(goodHeader, { ...goodPayload, exp: String(NOW_S + 300) }), jwks, opts), 'TESSERA_JWT_INVALID');
    });

    it('header members other than alg/kid/typ, or a foreign typ', async () => {
      for (const extra of [{ jku: 'https://evil/' }, { x5u: 'https://evil/' }, { jwk: jwks.keys[0] }, { crit: ['b64'], b64: false }, { cty: 'JWT' }]) {
        await expectCode(verifyJwtSvid(es256({ ...goodHeader, ...extra }, goodPayload), jwks, opts), 'TESSERA_JWT_INVALID');
      }
      await expectCode(verifyJwtSvid(es256({ ...goodHeader, typ: 'at+jwt' }, goodPayload), jwks, opts), 'TESSERA_JWT_INVALID');
      await expect(verifyJwtSvid(es256({ ...goodHeader, typ: 'JOSE' }, goodPayload), jwks, opts)).resolves.toBeDefined();
      await expect(verifyJwtSvid(es256({ alg: 'ES256', kid: 'k1' }, goodPayload), jwks, opts)).resolves.toBeDefined();
    });

    it('oversized and non-canonically encoded tokens', async () => {
      const big = es256(goodHeader, { ...goodPayload, pad: 'x'.repeat(MAX_JWT_SVID_LENGTH) });
      await expectCode(verifyJwtSvid(big, jwks, opts), 'TESSERA_JWT_INVALID');
      // The last character of an 86-char signature carries 4 unused bits: flipping them keeps the
      // decoded bytes but must still be refused (one token, one spelling).
      const token = mint();
      const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
      const last = token.at(-1)!;
      const twin = alphabet[alphabet.indexOf(last) ^ 1]!;
      await expectCode(verifyJwtSvid(token.slice(0, -1) + twin, jwks, opts), 'TESSERA_JWT_INVALID');
    });

    it('never puts the token in the message', async () => {
      const token = mint({ aud: ['elsewhere'] });
      const err = (await verifyJwtSvid(token, jwks, opts).catch((e: unknown) => e)) as TesseraError;
      expect(err.message).not.toContain(token.split('.')[1]!);
      expect(JSON.stringify(err)).not.toContain('elsewhere');
    });
  });

  describe('properties', () => {
    const expectRejection = async (token: string): Promise<void> => {
      const outcome = await verifyJwtSvid(token, jwks, opts).then(
        () => 'resolved',
        (e: unknown) => e,
      );
      expect(outcome).toBeInstanceOf(TesseraError);
    };

    it('arbitrary strings only ever reject with TesseraError', async () => {
      const segment = fc.stringMatching(/^[A-Za-z0-9_-]{0,40}$/);
      await fc.assert(
        fc.asyncProperty(
          fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.tuple(segment, segment, segment).map((s) => s.join('.'))),
          expectRejection,
        ),
        { numRuns: 300 },
      );
    });

    it('structurally plausible forgeries only ever reject with TesseraError', async () => {
      const header = fc.record(
        {
          alg: fc.constantFrom('ES256', 'ES384', 'RS256', 'PS256', 'HS256', 'none', 'EdDSA'),
          kid: fc.constantFrom('k1', 'k2'),
          typ: fc.constantFrom('JWT', 'JOSE'),
        },
        { requiredKeys: ['alg'] },
      );
      const payload = fc.oneof(fc.jsonValue(), fc.constant(goodPayload));
      await fc.assert(
        fc.asyncProperty(header, payload, fc.uint8Array({ minLength: 0, maxLength: 300 }), (h, p, sig) =>
          expectRejection(`${b64u(h)}.${b64u(p)}.${Buffer.from(sig).toString('base64url')}`),
        ),
        { numRuns: 300 },
      );
    });

    it('a valid token with one character changed only ever rejects with TesseraError', async () => {
      const token = signJwtSvid(signingKey, { sub: SUB, aud: [AUD], ttlSeconds: 300, now: NOW }).token;
      const chars = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \u00e9';
      await fc.assert(
        fc.asyncProperty(fc.nat({ max: token.length - 1 }), fc.constantFrom(...chars), async (i, c) => {
          fc.pre(token[i] !== c);
          await expectRejection(token.slice(0, i) + c + token.slice(i + 1));
        }),
        { numRuns: 500 },
      );
    });
  });
});

// -------------------------------------------------------------------------------------------------
// OIDC discovery over real HTTPS with a self-signed certificate, consumed by jose's remote JWKS.


describe('OIDC discovery + jose createRemoteJWKSet over HTTPS', () => {
  let dir: string;
  let server: https.Server;
  let base: string;
  let caPem: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-jwt-'));
    const keyPath = join(dir, 'key.pem');
    const certPath = join(dir, 'cert.pem');
    execFileSync(
      'openssl',
      ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1', '-days', '1', '-keyout', keyPath, '-out', certPath],
      { stdio: 'pipe' },
    );
    caPem = readFileSync(certPath, 'utf8');
    server = https.createServer({ key: readFileSync(keyPath), cert: caPem }, (req, res) => {
      const json = (status: number, body: unknown): void => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(body));
      };
      if (req.method !== 'GET') return json(405, { code: 'TESSERA_METHOD_NOT_ALLOWED' });
      if (req.url === '/.well-known/openid-configuration') {
        return json(200, {
          issuer: base,
          jwks_uri: `${base}/keys`,
          authorization_endpoint: `${base}/unsupported`,
          response_types_supported: ['id_token'],
          subject_types_supported: ['public'],
          id_token_signing_alg_values_supported: ['ES256'],
        });
      }
      if (req.url === '/keys') return json(200, jwtKeysAsJwks(bundle));
      return json(404, { code: 'TESSERA_NOT_FOUND' });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    rmSync(dir, { recursive: true, force: true });
  });

  it('discovers the jwks_uri and verifies our token; rejects a foreign audience', async () => {
    const fetchImpl = httpsFetchTrusting(caPem);
    const discovery = await fetchImpl(`${base}/.well-known/openid-configuration`, {
      method: 'GET',
      headers: new Headers({ accept: 'application/json' }),
      redirect: 'manual',
      signal: AbortSignal.timeout(5000),
    });
    expect(discovery.status).toBe(200);
    const config = (await discovery.json()) as { issuer: string; jwks_uri: string };
    expect(config.issuer).toBe(base);

    const remote = createRemoteJWKSet(new URL(config.jwks_uri), { [customFetch]: fetchImpl });
    const now = Date.now();
    const { token } = signJwtSvid(signingKey, { sub: SUB, aud: [AUD], iss: config.issuer, ttlSeconds: 300, now });
    const { payload } = await jwtVerify(token, remote, { issuer: config.issuer, audience: AUD, algorithms: ['ES256'] });
    expect(payload.sub).toBe(SUB);

    const wrong = signJwtSvid(signingKey, { sub: SUB, aud: ['spiffe://example.org/billing'], iss: config.issuer, ttlSeconds: 300, now }).token;
    await expect(jwtVerify(wrong, remote, { issuer: config.issuer, audience: AUD, algorithms: ['ES256'] })).rejects.toMatchObject({
      code: 'ERR_JWT_CLAIM_VALIDATION_FAILED',
      claim: 'aud',
    });
  });

  it('does not trust the self-signed endpoint without the custom CA', async () => {
    const remote = createRemoteJWKSet(new URL(`${base}/keys`));
    await expect(jwtVerify(mint(), remote, { audience: AUD, currentDate: new Date(NOW) })).rejects.toThrow();
  });
});

describe('claimedTrustDomain (picks the bundle to verify against; verifies nothing)', () => {
  it('reads the trust domain of a well-formed token\'s sub, and nothing from anything else', () => {
    expect(claimedTrustDomain(mint())).toBe(new URL(SUB).host);
    expect(claimedTrustDomain(mint({ sub: 'spiffe://partner.test/api' }))).toBe('partner.test');
    const [h, , sig] = mint().split('.');
    const withSub = (sub: unknown): string => `${h}.${Buffer.from(JSON.stringify({ sub, aud: [AUD], exp: 1 })).toString('base64url')}.${sig}`;
    expect(claimedTrustDomain(withSub('spiffe://other.test/x'))).toBe('other.test');
    for (const bad of [undefined, 42, '', 'a.b.c', mint().split('.').slice(0, 2).join('.'), `x${mint()}`, withSub('https://partner.test/api'), withSub('spiffe://partner.test'), withSub(7), withSub('spiffe://UPPER.test/x')]) {
      expect(claimedTrustDomain(bad)).toBeUndefined();
    }
  });

  it('never throws, and answers undefined or a trust domain name, for any input (property)', () => {
    const b64 = (v: unknown): string => Buffer.from(JSON.stringify(v) ?? 'null').toString('base64url');
    fc.assert(fc.property(
      fc.oneof(fc.string(), fc.anything(), fc.tuple(fc.anything(), fc.anything()).map(([h, p]) => `${b64(h)}.${b64(p)}.c2ln`),
        fc.string().map((sub) => `${b64({ alg: 'ES256', kid: 'k' })}.${b64({ sub })}.c2ln`)),
      (input) => {
        const td = claimedTrustDomain(input);
        return td === undefined || /^[a-z0-9._-]+$/.test(td);
      },
    ), { numRuns: 2000 });
  });
});
