import { expectTesseraError } from '../../test/support/expect.js';
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_CSR_BYTES, createCsr, parseCsr, parseCsrPem } from './csr.js';
import { derBitString, derBoolean, derInteger, derOctetString, derOid, derSequence, derSet, derTlv, readChildren, readDer } from './der.js';
import { TesseraError } from './errors.js';
import { pemDecodeAll, pemEncode, spkiDer } from './x509.js';

const WORKLOAD = 'spiffe://example.org/w';
let dir: string;
let n = 0;

function run(args: string[]): { status: number | null; out: string } {
  const r = spawnSync('openssl', args, { encoding: 'utf8' });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

/** A CSR made by the openssl CLI. */
function opensslCsr(keyArgs: string[], extra: string[] = ['-addext', `subjectAltName=URI:${WORKLOAD}`]): Buffer {
  const base = join(dir, `csr${n++}`);
  const r = run(['req', '-new', ...keyArgs, '-nodes', '-keyout', `${base}.key`, '-subj', '/CN=x', ...extra, '-outform', 'DER', '-out', `${base}.der`]);
  expect(r.status, r.out).toBe(0);
  return readFileSync(`${base}.der`);
}

function expectCode(fn: () => unknown, code: string): void {
  expectTesseraError(fn, code);
}

const CODES = ['TESSERA_CSR_INVALID', 'TESSERA_CSR_SIGNATURE_INVALID', 'TESSERA_CSR_KEY_UNSUPPORTED'];

function onlyCsrErrors(fn: () => unknown): void {
  try {
    fn();
  } catch (err) {
    if (!(err instanceof TesseraError) || !CODES.includes(err.code)) throw err;
  }
}

/** Rebuilds a CSR from parts, signing `info` with `key` (digest null for Ed25519). */
function assemble(info: Buffer, algOid: string, key: KeyObject, digest: 'sha256' | null): Buffer {
  return derSequence(info, derSequence(derOid(algOid)), derBitString(sign(digest, info, key)));
}

function infoOf(csr: Buffer): Buffer {
  const top = readDer(csr);
  const [info] = readChildren(csr, top);
  return csr.subarray(info!.start, info!.end);
}

let p256: { privateKey: KeyObject; publicKey: KeyObject };
let ed: { privateKey: KeyObject; publicKey: KeyObject };
let ours: Buffer;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'tessera-csr-'));
  p256 = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  ed = generateKeyPairSync('ed25519');
  ours = createCsr({ ...p256, uriSan: WORKLOAD });
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('createCsr / parseCsr', () => {
  it('round-trips P-256 and Ed25519 CSRs', () => {
    const a = parseCsr(ours);
    expect(a.keyType).toBe('p256');
    expect(a.uriSans).toEqual([WORKLOAD]);
    expect(a.dnsSans).toEqual([]);
    expect(a.publicKey.equals(p256.publicKey)).toBe(true);

    const b = parseCsr(createCsr({ ...ed, uriSan: WORKLOAD, commonName: 'agent' }));
    expect(b.keyType).toBe('ed25519');
    expect(b.uriSans).toEqual([WORKLOAD]);
    expect(b.publicKey.equals(ed.publicKey)).toBe(true);

    const c = parseCsr(createCsr(ed));
    expect(c.uriSans).toEqual([]);
    expect(parseCsr(new Uint8Array(ours) as Buffer).keyType).toBe('p256');
  });

  it('returns keys whose SPKI (remembered for issuance) is canonical', () => {
    for (const k of [p256, ed]) {
      const parsed = parseCsr(createCsr({ ...k, uriSan: WORKLOAD }));
      expect(spkiDer(parsed.publicKey)).toEqual(k.publicKey.export({ type: 'spki', format: 'der' }));
      // spkiDer hands out copies: mutating one does not affect the next.
      spkiDer(parsed.publicKey).fill(0);
      expect(spkiDer(parsed.publicKey)).toEqual(k.publicKey.export({ type: 'spki', format: 'der' }));
    }
  });

  it('accepts a compressed P-256 point (imported through the SPKI DER)', () => {
    const pub = p256.publicKey.export({ format: 'jwk' });
    const x = Buffer.from(pub.x as string, 'base64url');
    const y = Buffer.from(pub.y as string, 'base64url');
    const point = Buffer.concat([Buffer.from([((y[31] as number) & 1) === 1 ? 0x03 : 0x02]), x]);
    const spki = derSequence(derSequence(derOid('1.2.840.10045.2.1'), derOid('1.2.840.10045.3.1.7')), derBitString(point));
    const info = derSequence(derInteger(0n), derSequence(), spki, derTlv(0xa0, Buffer.alloc(0)));
    const parsed = parseCsr(assemble(info, '1.2.840.10045.4.3.2', p256.privateKey, 'sha256'));
    expect(parsed.publicKey.equals(p256.publicKey)).toBe(true);
    expect(spkiDer(parsed.publicKey)).toEqual(p256.publicKey.export({ type: 'spki', format: 'der' }));
  });

  it('produces CSRs that openssl accepts', () => {
    for (const csr of [ours, createCsr({ ...ed, uriSan: WORKLOAD, commonName: 'agent' }), createCsr(p256)]) {
      const p = join(dir, `ours${n++}.pem`);
      writeFileSync(p, pemEncode(csr, 'CERTIFICATE REQUEST'));
      const r = run(['req', '-verify', '-noout', '-in', p]);
      expect(r.status, r.out).toBe(0);
      expect(r.out).toMatch(/verify OK/);
    }
    const p = join(dir, `ours${n++}.pem`);
    writeFileSync(p, pemEncode(ours, 'CERTIFICATE REQUEST'));
    const text = run(['req', '-noout', '-text', '-in', p]).out;
    expect(text).toContain('Requested Extensions:');
    expect(text).toMatch(/X509v3 Subject Alternative Name: critical\s+URI:spiffe:\/\/example\.org\/w/);
  });

  it('refuses keys it cannot sign with', () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 });
    expectCode(() => createCsr(rsa), 'TESSERA_CSR_KEY_UNSUPPORTED');
    expectCode(() => createCsr({ privateKey: p256.privateKey, publicKey: ed.publicKey }), 'TESSERA_INTERNAL');
  });
});

describe('parseCsr on openssl CSRs', () => {
  it('parses P-256 and Ed25519 CSRs with their SANs', () => {
    const a = parseCsr(opensslCsr(['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256']));
    expect(a.keyType).toBe('p256');
    expect(a.uriSans).toEqual([WORKLOAD]);
    const b = parseCsr(opensslCsr(['-newkey', 'ed25519']));
    expect(b.keyType).toBe('ed25519');
    expect(b.uriSans).toEqual([WORKLOAD]);
    const c = parseCsr(
      opensslCsr(['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'], ['-addext', `subjectAltName=DNS:a.example,URI:${WORKLOAD},DNS:b.example,IP:10.0.0.1`]),
    );
    expect(c.uriSans).toEqual([WORKLOAD]);
    expect(c.dnsSans).toEqual(['a.example', 'b.example']);
    const d = parseCsr(opensslCsr(['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'], []));
    expect(d.uriSans).toEqual([]);
  });

  it('rejects unsupported keys', () => {
    expectCode(() => parseCsr(opensslCsr(['-newkey', 'rsa:2048'])), 'TESSERA_CSR_KEY_UNSUPPORTED');
    expectCode(() => parseCsr(opensslCsr(['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-384'])), 'TESSERA_CSR_KEY_UNSUPPORTED');
    expectCode(() => parseCsr(opensslCsr(['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-521'])), 'TESSERA_CSR_KEY_UNSUPPORTED');
    expectCode(() => parseCsr(opensslCsr(['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:secp256k1'])), 'TESSERA_CSR_KEY_UNSUPPORTED');
    expectCode(() => parseCsr(opensslCsr(['-newkey', 'ed448'])), 'TESSERA_CSR_KEY_UNSUPPORTED');
  });

  it('rejects a P-256 CSR signed with another digest', () => {
    expectCode(() => parseCsr(opensslCsr(['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-sha384'])), 'TESSERA_CSR_INVALID');
  });
});

describe('parseCsr signature checks', () => {
  it('rejects a flipped bit in the signature or in the signed data', () => {
    for (const csr of [ours, createCsr({ ...ed, uriSan: WORKLOAD })]) {
      const sigFlip = Buffer.from(csr);
      sigFlip[sigFlip.length - 1] = (sigFlip[sigFlip.length - 1] as number) ^ 0x01;
      expectCode(() => parseCsr(sigFlip), 'TESSERA_CSR_SIGNATURE_INVALID');
      const dataFlip = Buffer.from(csr);
      const at = dataFlip.indexOf(Buffer.from('/w'));
      dataFlip[at + 1] = 0x78; // "/w" -> "/x"
      expectCode(() => parseCsr(dataFlip), 'TESSERA_CSR_SIGNATURE_INVALID');
    }
  });

  it('rejects a signature algorithm that does not match the key', () => {
    const info = infoOf(ours);
    // P-256 key, Ed25519 algorithm (with an ECDSA signature in it).
    const mixed = derSequence(info, derSequence(derOid('1.3.101.112')), derBitString(sign('sha256', info, p256.privateKey)));
    expectCode(() => parseCsr(mixed), 'TESSERA_CSR_SIGNATURE_INVALID');
    const edInfo = infoOf(createCsr(ed));
    expectCode(() => parseCsr(assemble(edInfo, '1.2.840.10045.4.3.2', ed.privateKey, null)), 'TESSERA_CSR_SIGNATURE_INVALID');
  });

  it('rejects unexpected algorithms and parameters', () => {
    const info = infoOf(ours);
    expectCode(() => parseCsr(assemble(info, '1.2.840.10045.4.3.3', p256.privateKey, 'sha256')), 'TESSERA_CSR_INVALID');
    const withNull = derSequence(info, derSequence(derOid('1.2.840.10045.4.3.2'), derTlv(0x05, Buffer.alloc(0))), derBitString(sign('sha256', info, p256.privateKey)));
    expectCode(() => parseCsr(withNull), 'TESSERA_CSR_INVALID');
  });
});

describe('parseCsr structure checks', () => {
  function signedInfo(fields: Buffer[]): Buffer {
    return assemble(derSequence(...fields), '1.2.840.10045.4.3.2', p256.privateKey, 'sha256');
  }
  const name = (): Buffer => derSequence();
  const spki = (): Buffer => spkiDer(p256.publicKey);
  const sanExt = (critical: boolean, ...uris: string[]): Buffer =>
    derSequence(
      derOid('2.5.29.17'),
      ...(critical ? [derBoolean(true)] : []),
      derOctetString(derSequence(...uris.map((u) => derTlv(0x86, Buffer.from(u))))),
    );
  const extReq = (...exts: Buffer[]): Buffer => derSequence(derOid('1.2.840.113549.1.9.14'), derSet(derSequence(...exts)));

  it('accepts a hand-built CSR with several URI SANs (the caller decides)', () => {
    const csr = signedInfo([derInteger(0n), name(), spki(), derTlv(0xa0, extReq(sanExt(true, 'spiffe://a/1', 'spiffe://a/2')))]);
    expect(parseCsr(csr).uriSans).toEqual(['spiffe://a/1', 'spiffe://a/2']);
  });

  it('rejects version != 0, missing attributes, duplicate extensions, bad SANs', () => {
    const cases: Buffer[][] = [
      [derInteger(1n), name(), spki(), derTlv(0xa0, Buffer.alloc(0))],
      [derInteger(0n), name(), spki()],
      [derInteger(0n), name(), spki(), derTlv(0xa0, Buffer.alloc(0)), derNull()],
      [derInteger(0n), name(), spki(), derTlv(0xa0, extReq(sanExt(false, 'spiffe://a/1'), sanExt(false, 'spiffe://a/2')))],
      [derInteger(0n), name(), spki(), derTlv(0xa0, Buffer.concat([extReq(sanExt(false, 'spiffe://a/1')), extReq(sanExt(false, 'spiffe://a/2'))]))],
      [derInteger(0n), name(), spki(), derTlv(0xa0, extReq(derSequence(derOid('2.5.29.17'), derOctetString(derSequence()))))],
      [derInteger(0n), name(), spki(), derTlv(0xa0, extReq(sanExt(false, 'spiffe://a/\u00e9')))],
      [derInteger(0n), derSequence(derInteger(1n)), spki(), derTlv(0xa0, Buffer.alloc(0))],
    ];
    for (const fields of cases) expectCode(() => parseCsr(signedInfo(fields)), 'TESSERA_CSR_INVALID');
  });

  it('rejects truncation, trailing garbage and random bytes', () => {
    for (let i = 0; i < ours.length; i++) expectCode(() => parseCsr(ours.subarray(0, i)), 'TESSERA_CSR_INVALID');
    expectCode(() => parseCsr(Buffer.concat([ours, Buffer.from([0])])), 'TESSERA_CSR_INVALID');
    expectCode(() => parseCsr(Buffer.concat([ours, ours])), 'TESSERA_CSR_INVALID');
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), (b) => {
        expectCode(() => parseCsr(Buffer.from(b)), 'TESSERA_CSR_INVALID');
      }),
      { numRuns: 1000 },
    );
  });

  it('only ever throws CSR TesseraErrors on mutated CSRs', () => {
    const samples = [ours, createCsr({ ...ed, uriSan: WORKLOAD, commonName: 'agent' }), opensslCsr(['-newkey', 'rsa:2048'])];
    fc.assert(
      fc.property(
        fc.constantFrom(...samples),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 3 }),
        fc.option(fc.nat(), { nil: undefined }),
        (csr, edits, cut) => {
          let m = Buffer.from(csr);
          for (const [at, byte] of edits) m[at % m.length] = byte;
          if (cut !== undefined) m = m.subarray(0, cut % (m.length + 1));
          onlyCsrErrors(() => parseCsr(m));
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('rejects CSRs over 8 KiB before parsing', () => {
    const big = createCsr({ ...p256, commonName: 'x'.repeat(MAX_CSR_BYTES) });
    expect(big.length).toBeGreaterThan(MAX_CSR_BYTES);
    expectCode(() => parseCsr(big), 'TESSERA_CSR_INVALID');
    const fits = createCsr({ ...p256, commonName: 'x'.repeat(MAX_CSR_BYTES - 300) });
    expect(fits.length).toBeLessThanOrEqual(MAX_CSR_BYTES);
    expect(parseCsr(fits).keyType).toBe('p256');
  });
});

describe('parseCsrPem', () => {
  it('parses exactly one CERTIFICATE REQUEST block', () => {
    const pem = pemEncode(ours, 'CERTIFICATE REQUEST');
    expect(parseCsrPem(pem).uriSans).toEqual([WORKLOAD]);
    expect(parseCsrPem(`\n\n${pem.replace(/\n/g, '\r\n')}`).keyType).toBe('p256');
    expect(pemDecodeAll(pem, 'CERTIFICATE REQUEST')).toEqual([ours]);
  });

  it('refuses anything else', () => {
    const pem = pemEncode(ours, 'CERTIFICATE REQUEST');
    const key = pemEncode(p256.privateKey.export({ type: 'pkcs8', format: 'der' }), 'PRIVATE KEY');
    const bad = ['', 'garbage', pem + pem, pem + key, pemEncode(ours, 'CERTIFICATE'), pem.replace('-----\n', '-----\n*'), pem.slice(0, -30), 'x'.repeat(20_000)];
    for (const b of bad) expectCode(() => parseCsrPem(b), 'TESSERA_CSR_INVALID');
    expectCode(() => parseCsrPem(pemEncode(Buffer.from('not a csr'), 'CERTIFICATE REQUEST')), 'TESSERA_CSR_INVALID');
  });
});

function derNull(): Buffer {
  return derTlv(0x05, Buffer.alloc(0));
}
