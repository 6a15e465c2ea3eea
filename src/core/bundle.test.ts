import { X509Certificate, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleToJwks, jwtKeysAsJwks, parseJwksBundle, type BundleContent } from './bundle.js';
import { TesseraError } from './errors.js';

const TD = 'example.org';

let dir: string;
let ecCa: Buffer;
let rsaCa: Buffer;
let leaf: Buffer;

function makeCert(name: string, keyArgs: string[], ext: string[]): Buffer {
  const out = join(dir, `${name}.pem`);
  execFileSync(
    'openssl',
    ['req', '-x509', ...keyArgs, '-nodes', '-subj', `/O=${name}`, ...ext.flatMap((e) => ['-addext', e]), '-days', '1', '-keyout', join(dir, `${name}.key`), '-out', out],
    { stdio: 'pipe' },
  );
  return Buffer.from(new X509Certificate(readFileSync(out)).raw);
}

const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const ec384 = generateKeyPairSync('ec', { namedCurve: 'P-384' });
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });

function jwkOf(k: KeyObject): unknown {
  return k.export({ format: 'jwk' });
}

function content(): BundleContent {
  return {
    trustDomain: TD,
    x509Authorities: [ecCa, rsaCa],
    jwtAuthorities: [
      { kid: 'ec-1', publicKey: ec.publicKey },
      { kid: 'ec384', publicKey: ec384.publicKey },
      { kid: 'rsa-1', publicKey: rsa.publicKey },
    ],
    sequence: 7,
    refreshHintSeconds: 300,
  };
}

/** Deep clone through JSON (what goes over the wire). */
const wire = <T>(v: T): Record<string, unknown> => JSON.parse(JSON.stringify(v)) as Record<string, unknown>;

function parseCode(json: unknown, td = TD): string | undefined {
  try {
    parseJwksBundle(json, td);
  } catch (e) {
    if (!(e instanceof TesseraError)) throw e;
    return e.code;
  }
  return undefined;
}

/** Invariants of any successfully parsed bundle. */
function assertValid(b: BundleContent): void {
  expect(b.trustDomain).toBe(TD);
  expect(Number.isSafeInteger(b.sequence) && b.sequence >= 0).toBe(true);
  if (b.refreshHintSeconds !== undefined) expect(Number.isSafeInteger(b.refreshHintSeconds)).toBe(true);
  for (const der of b.x509Authorities) expect(new X509Certificate(der).ca).toBe(true);
  const kids = new Set<string>();
  for (const a of b.jwtAuthorities) {
    expect(a.kid.length).toBeGreaterThan(0);
    expect(kids.has(a.kid)).toBe(false);
    kids.add(a.kid);
    expect(a.publicKey.type).toBe('public');
  }
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'tessera-bundle-'));
  ecCa = makeCert('ec-ca', ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'], [`subjectAltName=URI:spiffe://${TD}`]);
  rsaCa = makeCert('rsa-ca', ['-newkey', 'rsa:2048'], [`subjectAltName=URI:spiffe://${TD}`]);
  leaf = makeCert('leaf', ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'], ['basicConstraints=critical,CA:FALSE']);
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('bundleToJwks', () => {
  it('emits SPIFFE bundle elements as the standard describes', () => {
    const doc = bundleToJwks(content());
    expect(doc.spiffe_sequence).toBe(7);
    expect(doc.spiffe_refresh_hint).toBe(300);
    expect(doc.keys).toHaveLength(5);
    const [x0, x1, j0, , j2] = doc.keys;
    expect(x0).toEqual({ ...(jwkOf(new X509Certificate(ecCa).publicKey) as object), use: 'x509-svid', x5c: [ecCa.toString('base64')] });
    expect(x1).toMatchObject({ kty: 'RSA', use: 'x509-svid', x5c: [rsaCa.toString('base64')] });
    expect(x0).not.toHaveProperty('kid');
    expect(j0).toEqual({ ...(jwkOf(ec.publicKey) as object), kid: 'ec-1', use: 'jwt-svid' });
    expect(j2).toMatchObject({ kty: 'RSA', kid: 'rsa-1', use: 'jwt-svid' });
    for (const k of doc.keys) expect(k).not.toHaveProperty('alg');
  });

  it('omits spiffe_refresh_hint when unset, and never leaks private members', () => {
    const b: BundleContent = { trustDomain: TD, x509Authorities: [], jwtAuthorities: [{ kid: 'p', publicKey: ec.privateKey }], sequence: 0 };
    const doc = bundleToJwks(b);
    expect(doc).not.toHaveProperty('spiffe_refresh_hint');
    expect(doc.keys[0]).not.toHaveProperty('d');
    expect(doc.keys[0]).toEqual({ ...(jwkOf(ec.publicKey) as object), kid: 'p', use: 'jwt-svid' });
  });
});

describe('jwtKeysAsJwks', () => {
  it('emits only JWT authorities, with use "sig", kid, and alg where the key fixes it', () => {
    const doc = jwtKeysAsJwks(content());
    expect(doc.keys).toEqual([
      { ...(jwkOf(ec.publicKey) as object), kid: 'ec-1', use: 'sig', alg: 'ES256' },
      { ...(jwkOf(ec384.publicKey) as object), kid: 'ec384', use: 'sig', alg: 'ES384' },
      { ...(jwkOf(rsa.publicKey) as object), kid: 'rsa-1', use: 'sig' },
    ]);
  });
});

describe('parseJwksBundle', () => {
  it('round-trips bundleToJwks (object and JSON text)', () => {
    const original = content();
    for (const input of [wire(bundleToJwks(original)), JSON.stringify(bundleToJwks(original))]) {
      const parsed = parseJwksBundle(input, TD);
      assertValid(parsed);
      expect(parsed.sequence).toBe(7);
      expect(parsed.refreshHintSeconds).toBe(300);
      expect(parsed.x509Authorities).toHaveLength(2);
      parsed.x509Authorities.forEach((der, i) => expect(der.equals(original.x509Authorities[i]!)).toBe(true));
      expect(parsed.jwtAuthorities.map((a) => a.kid)).toEqual(['ec-1', 'ec384', 'rsa-1']);
      parsed.jwtAuthorities.forEach((a, i) => expect(jwkOf(a.publicKey)).toEqual(jwkOf(original.jwtAuthorities[i]!.publicKey)));
    }
  });

  it('defaults a missing spiffe_sequence to 0 and keeps refresh hint optional', () => {
    const parsed = parseJwksBundle({ keys: [] }, TD);
    expect(parsed).toEqual({ trustDomain: TD, x509Authorities: [], jwtAuthorities: [], sequence: 0 });
  });

  it('ignores elements with an unknown or absent use, an unknown kty, or a non-JWT-SVID key type', () => {
    const doc = wire(bundleToJwks(content()));
    const keys = doc.keys as Record<string, unknown>[];
    const ed = generateKeyPairSync('ed25519');
    doc.keys = [
      ...keys,
      { ...keys[2], use: 'wit-svid', kid: 'x' },
      { ...keys[2], use: 'sig', kid: 'y' },
      { ...keys[2], use: undefined, kid: 'z' },
      { kty: 'AKP', use: 'jwt-svid', kid: 'pq', pub: 'AAAA' },
      { kty: 'weird', use: 'x509-svid' },
      { ...(jwkOf(ed.publicKey) as object), use: 'jwt-svid', kid: 'ed' },
      { ...(jwkOf(generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).publicKey) as object), use: 'jwt-svid', kid: 'k1' },
    ];
    const parsed = parseJwksBundle(JSON.parse(JSON.stringify(doc)), TD);
    expect(parsed.jwtAuthorities.map((a) => a.kid)).toEqual(['ec-1', 'ec384', 'rsa-1']);
    expect(parsed.x509Authorities).toHaveLength(2);
  });

  describe('rejects malformed bundles with TESSERA_BAD_REQUEST', () => {
    const mutate = (f: (doc: Record<string, unknown>, keys: Record<string, unknown>[]) => void): Record<string, unknown> => {
      const doc = wire(bundleToJwks(content()));
      f(doc, doc.keys as Record<string, unknown>[]);
      return doc;
    };
    const x = 0; // index of the EC X.509 authority
    const j = 2; // index of the EC JWT authority
    const cases: Record<string, () => unknown> = {
      'not an object': () => [1, 2],
      null: () => null,
      'invalid JSON text': () => '{"keys": [',
      'keys missing': () => ({ spiffe_sequence: 1 }),
      'keys not an array': () => ({ keys: {} }),
      'a key that is not an object': () => mutate((_, k) => k.push('nope' as never)),
      'kty missing': () => mutate((_, k) => delete k[j]!.kty),
      'kty not a string': () => mutate((_, k) => (k[j]!.kty = 1)),
      'use not a string': () => mutate((_, k) => (k[j]!.use = ['jwt-svid'])),
      'sequence negative': () => mutate((d) => (d.spiffe_sequence = -1)),
      'sequence fractional': () => mutate((d) => (d.spiffe_sequence = 1.5)),
      'sequence a string': () => mutate((d) => (d.spiffe_sequence = '7')),
      'sequence beyond 2^53': () => mutate((d) => (d.spiffe_sequence = 2 ** 60)),
      'refresh hint negative': () => mutate((d) => (d.spiffe_refresh_hint = -5)),
      'x5c missing': () => mutate((_, k) => delete k[x]!.x5c),
      'x5c with two certificates': () => mutate((_, k) => (k[x]!.x5c = [ecCa.toString('base64'), rsaCa.toString('base64')])),
      'x5c empty': () => mutate((_, k) => (k[x]!.x5c = [])),
      'x5c not base64': () => mutate((_, k) => (k[x]!.x5c = ['%%%'])),
      'x5c base64url instead of base64': () => mutate((_, k) => (k[x]!.x5c = [ecCa.toString('base64url')])),
      'x5c not a certificate': () => mutate((_, k) => (k[x]!.x5c = [Buffer.from('hello world').toString('base64')])),
      'x5c with trailing data': () => mutate((_, k) => (k[x]!.x5c = [Buffer.concat([ecCa, Buffer.from([0])]).toString('base64')])),
      'x5c not a CA certificate': () =>
        mutate((_, k) => {
          const jwk = jwkOf(new X509Certificate(leaf).publicKey) as Record<string, unknown>;
          k[x] = { ...jwk, use: 'x509-svid', x5c: [leaf.toString('base64')] };
        }),
      'x509 key members not matching the certificate': () => mutate((_, k) => (k[x]!.x = k[j]!.x)),
      'x509 key members missing': () => mutate((_, k) => delete k[x]!.y),
      'x509 kty not matching the certificate': () => mutate((_, k) => (k[1] = { ...k[1], x5c: k[x]!.x5c })),
      'duplicate X.509 authority': () => mutate((_, k) => k.push({ ...k[x] })),
      'jwt-svid kid missing': () => mutate((_, k) => delete k[j]!.kid),
      'jwt-svid kid empty': () => mutate((_, k) => (k[j]!.kid = '')),
      'jwt-svid kid not a string': () => mutate((_, k) => (k[j]!.kid = 5)),
      'duplicate kid': () => mutate((_, k) => (k[j + 1]!.kid = k[j]!.kid)),
      'private key material (d)': () => mutate((_, k) => (k[j] = { ...(ec.privateKey.export({ format: 'jwk' }) as object), kid: 'ec-1', use: 'jwt-svid' })),
      'symmetric k member': () => mutate((_, k) => (k[j]!.k = 'c2VjcmV0')),
      'point not on the curve': () =>
        mutate((_, k) => {
          const y = Buffer.from(k[j]!.y as string, 'base64url');
          y[31] = y[31]! ^ 1;
          k[j]!.y = y.toString('base64url');
        }),
      'coordinate not base64url': () => mutate((_, k) => (k[j]!.x = 'a+b/')),
      'coordinate missing': () => mutate((_, k) => delete k[j]!.x),
      'crv missing': () => mutate((_, k) => delete k[j]!.crv),
      'RSA key shorter than 2048 bits': () =>
        mutate((_, k) => {
          const small = generateKeyPairSync('rsa', { modulusLength: 1024 });
          k[j] = { ...(jwkOf(small.publicKey) as object), kid: 'small', use: 'jwt-svid' };
        }),
    };
    for (const [name, make] of Object.entries(cases)) {
      it(name, () => {
        expect(parseCode(make())).toBe('TESSERA_BAD_REQUEST');
      });
    }
    it('an invalid trust domain name', () => {
      expect(parseCode({ keys: [] }, 'Example.ORG')).toBe('TESSERA_BAD_REQUEST');
      expect(parseCode({ keys: [] }, '')).toBe('TESSERA_BAD_REQUEST');
    });
  });

  describe('properties', () => {
    const check = (input: unknown): void => {
      let result: BundleContent;
      try {
        result = parseJwksBundle(input, TD);
      } catch (e) {
        expect(e).toBeInstanceOf(TesseraError);
        expect((e as TesseraError).code).toBe('TESSERA_BAD_REQUEST');
        return;
      }
      assertValid(result);
    };

    it('arbitrary JSON values only ever throw TESSERA_BAD_REQUEST or parse validly', () => {
      fc.assert(fc.property(fc.jsonValue(), check), { numRuns: 500 });
      fc.assert(fc.property(fc.record({ keys: fc.array(fc.jsonValue()) }), check), { numRuns: 300 });
      fc.assert(fc.property(fc.string(), check), { numRuns: 200 });
    });

    type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
    /** Replaces or deletes the node reached by following `path` (indices modulo the child count). */
    function applyMutation(root: Json, path: number[], replacement: Json | undefined): Json | undefined {
      const copy = structuredClone(root);
      if (path.length === 0) return replacement;
      let node: Json = copy;
      for (let i = 0; i < path.length; i++) {
        if (node === null || typeof node !== 'object') break;
        const children: (string | number)[] = Array.isArray(node) ? node.map((_, n) => n) : Object.keys(node);
        if (children.length === 0) break;
        const key = children[path[i]! % children.length]!;
        const container = node as Record<string | number, Json>;
        const child: Json | undefined = container[key];
        if (i === path.length - 1 || child === null || typeof child !== 'object') {
          if (replacement === undefined) {
            if (Array.isArray(node)) node.splice(key as number, 1);
            else delete (node as Record<string, Json>)[key as string];
          } else {
            container[key] = replacement;
          }
          break;
        }
        node = child;
      }
      return copy;
    }

    it('mutated valid bundles only ever throw TESSERA_BAD_REQUEST or parse validly', () => {
      const valid = wire(bundleToJwks(content())) as Json;
      const text = JSON.stringify(valid);
      fc.assert(
        fc.property(fc.array(fc.nat(), { maxLength: 5 }), fc.option(fc.jsonValue() as fc.Arbitrary<Json>, { nil: undefined }), (path, replacement) => {
          check(applyMutation(valid, path, replacement));
        }),
        { numRuns: 500 },
      );
      fc.assert(
        fc.property(fc.nat({ max: text.length - 1 }), fc.string({ minLength: 1, maxLength: 2 }), (i, s) => {
          check(text.slice(0, i) + s + text.slice(i + 1));
        }),
        { numRuns: 300 },
      );
    });
  });
});
