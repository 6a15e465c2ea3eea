import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { expectTesseraError } from '../../../test/support/expect.js';
import { TesseraError } from '../errors.js';
import { MAX_BLOB_BYTES, SEALED_TEXT_PREFIX, isSecretPolicyId, openWithPoint, parseBlob, parseSealedText, seal, sealedToText, type ParsedBlob } from './blob.js';
import { fakePolicy, unsealInMemory, type FakePolicy } from './fixtures.js';
import { baseMul, mul, randomScalar, ready, type Point } from './group.js';

let p: FakePolicy;
beforeAll(async () => {
  await ready();
  p = fakePolicy(2, 3, 'shop.orders-db_v2', 7);
});

const plain = Buffer.from('the orders database password');
const sealP = (data: Uint8Array = plain, id = p.id, epoch = p.epoch): Buffer => seal(data, { id, epoch, publicKey: p.publicKey });
/** What unsealing recovers, computed directly from k for the tests. */
const pointFor = (parsed: ParsedBlob): Point => mul(p.k, parsed.R);
const open = (bytes: Uint8Array): Buffer => {
  const parsed = parseBlob(bytes);
  return openWithPoint(parsed, pointFor(parsed));
};

/** Parse + open must refuse with TESSERA_SECRET_BLOB_INVALID, at whichever step. */
function expectRefused(bytes: Uint8Array, Z?: Point): void {
  expectTesseraError(() => {
    const parsed = parseBlob(bytes);
    openWithPoint(parsed, Z ?? pointFor(parsed));
  }, 'TESSERA_SECRET_BLOB_INVALID');
}

describe('seal and open', () => {
  it('round trips, with the documented layout', () => {
    const blob = sealP();
    const parsed = parseBlob(blob);
    expect(parsed).toMatchObject({ version: 1, policyId: p.id, epoch: 7 });
    expect(blob.subarray(0, 4).toString('ascii')).toBe('TSB1');
    expect(blob.length).toBe(4 + 1 + 2 + p.id.length + 4 + 32 + 12 + plain.length + 16);
    expect(parsed.header).toEqual(new Uint8Array(blob.subarray(0, blob.length - plain.length - 16)));
    expect(parsed.ciphertext).toHaveLength(plain.length + 16);
    expect(open(blob).equals(plain)).toBe(true);
    // The plaintext does not appear in the blob.
    expect(blob.includes(plain)).toBe(false);
  });

  it('round trips empty, 1-byte, 64 KiB and the largest plaintext that fits 1 MiB', () => {
    const max = MAX_BLOB_BYTES - (4 + 1 + 2 + p.id.length + 4 + 32 + 12 + 16);
    for (const size of [0, 1, 64 * 1024, max]) {
      const data = Buffer.alloc(size, 0x5a);
      const blob = sealP(data);
      expect(blob.length).toBeLessThanOrEqual(MAX_BLOB_BYTES);
      expect(open(blob).equals(data)).toBe(true);
    }
    expectTesseraError(() => sealP(Buffer.alloc(max + 1)), 'TESSERA_PAYLOAD_TOO_LARGE');
  });

  it('round trips through the threshold unseal (fast-check over plaintexts up to 64 KiB)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 * 1024 }), (data) => {
        const { plain: out, bad } = unsealInMemory(sealP(data), p);
        expect(out.equals(Buffer.from(data))).toBe(true);
        expect(bad).toEqual([]);
      }),
      { numRuns: 20 },
    );
  });

  it('two seals of one plaintext share nothing but the policy header', () => {
    const a = parseBlob(sealP());
    const b = parseBlob(sealP());
    expect(Buffer.from(a.R).equals(Buffer.from(b.R))).toBe(false);
    expect(Buffer.from(a.nonce).equals(Buffer.from(b.nonce))).toBe(false);
    expect(Buffer.from(a.ciphertext).equals(Buffer.from(b.ciphertext))).toBe(false);
  });

  it('refuses invalid policy ids, epochs, public keys and plaintexts at seal', () => {
    for (const id of ['', 'Shop', 'a/b', 'a b', 'é', 'x'.repeat(65), '.', '..', '.hidden', '-a', '_a']) expectTesseraError(() => sealP(plain, id), 'TESSERA_BAD_REQUEST');
    for (const epoch of [-1, 2 ** 32, 1.5, Number.NaN]) expectTesseraError(() => sealP(plain, p.id, epoch), 'TESSERA_BAD_REQUEST');
    expect(parseBlob(sealP(plain, 'x'.repeat(64), 2 ** 32 - 1))).toMatchObject({ policyId: 'x'.repeat(64), epoch: 2 ** 32 - 1 });
    for (const publicKey of [new Uint8Array(32), new Uint8Array(32).fill(0xff), new Uint8Array(31)]) {
      expectTesseraError(() => seal(plain, { id: 'a', epoch: 1, publicKey }), 'TESSERA_SECRET_POINT_INVALID');
    }
    expectTesseraError(() => seal('text' as unknown as Buffer, { id: 'a', epoch: 1, publicKey: p.publicKey }), 'TESSERA_BAD_REQUEST');
    expect(isSecretPolicyId('a.b-c_d0')).toBe(true);
    expect(isSecretPolicyId(5)).toBe(false);
    // Every accepted id starts with a letter or digit (it names files on the key servers).
    fc.assert(fc.property(fc.string({ maxLength: 70 }), (id) => !isSecretPolicyId(id) || /^[a-z0-9]/.test(id)), { numRuns: 2000 });
  });
});

describe('tampering and malformed blobs', () => {
  it('any single byte changed anywhere is refused', () => {
    const blob = sealP();
    fc.assert(
      fc.property(fc.integer({ min: 0, max: blob.length - 1 }), fc.integer({ min: 1, max: 255 }), (pos, mask) => {
        const m = Buffer.from(blob);
        m[pos] = m[pos]! ^ mask;
        expectRefused(m);
      }),
      { numRuns: 400 },
    );
    // ...and exhaustively, one bit flip per position.
    for (let pos = 0; pos < blob.length; pos++) {
      const m = Buffer.from(blob);
      m[pos] = m[pos]! ^ 0x01;
      expectRefused(m);
    }
  });

  it('truncation at any length, and any trailing bytes, are refused', () => {
    const blob = sealP();
    for (let len = 0; len < blob.length; len++) expectRefused(blob.subarray(0, len));
    expectRefused(Buffer.concat([blob, Buffer.from([0])]));
    expectRefused(Buffer.concat([blob, blob]));
  });

  it('a header rewritten to another valid policy id or epoch is refused (both are bound)', () => {
    const blob = sealP(plain, 'shop.db', 5);
    const parsed = parseBlob(blob);
    const Z = pointFor(parsed);
    expect(openWithPoint(parsed, Z).equals(plain)).toBe(true);
    const otherId = Buffer.from(blob);
    otherId.write('shop.dc', 7, 'latin1');
    expectRefused(otherId, Z);
    const otherEpoch = Buffer.from(blob);
    otherEpoch.writeUInt32BE(6, 7 + 'shop.db'.length);
    expectRefused(otherEpoch, Z);
    // The same, done on the parsed object instead of the bytes.
    expectTesseraError(() => openWithPoint({ ...parsed, policyId: 'shop.dc' }, Z), 'TESSERA_SECRET_BLOB_INVALID');
    expectTesseraError(() => openWithPoint({ ...parsed, epoch: 6 }, Z), 'TESSERA_SECRET_BLOB_INVALID');
    expectTesseraError(() => openWithPoint({ ...parsed, policyId: 'Not Valid' }, Z), 'TESSERA_SECRET_BLOB_INVALID');
    expectTesseraError(() => openWithPoint({ ...parsed, nonce: parsed.nonce.subarray(1) }, Z), 'TESSERA_SECRET_BLOB_INVALID');
    expectTesseraError(() => openWithPoint({ ...parsed, ciphertext: parsed.ciphertext.subarray(0, 15) }, Z), 'TESSERA_SECRET_BLOB_INVALID');
    expectTesseraError(() => openWithPoint({ ...parsed, R: new Uint8Array(32) }, Z), 'TESSERA_SECRET_BLOB_INVALID');
    expectTesseraError(() => openWithPoint(null as unknown as ParsedBlob, Z), 'TESSERA_SECRET_BLOB_INVALID');
  });

  it('the same id and epoch under another policy key does not open (a blob sealed to P_q, opened with k_p·R)', () => {
    const q = fakePolicy(2, 3, p.id, p.epoch);
    const blob = seal(plain, { id: p.id, epoch: p.epoch, publicKey: q.publicKey });
    expectRefused(blob);
    const parsed = parseBlob(blob);
    expect(openWithPoint(parsed, mul(q.k, parsed.R)).equals(plain)).toBe(true);
  });

  it('a wrong, identity or invalid point is refused with TESSERA_SECRET_BLOB_INVALID', () => {
    const parsed = parseBlob(sealP());
    for (const Z of [baseMul(randomScalar()), parsed.R, p.publicKey, new Uint8Array(32), new Uint8Array(32).fill(0xff), new Uint8Array(5)]) {
      expectTesseraError(() => openWithPoint(parsed, Z), 'TESSERA_SECRET_BLOB_INVALID');
    }
  });

  it('an identity or non-canonical R, another magic or version, a bad policy id are refused by parseBlob', () => {
    const blob = sealP(plain, 'ab', 1);
    const rOff = 4 + 1 + 2 + 2 + 4;
    const cases: [string, (b: Buffer) => void][] = [
      ['identity R', (b) => b.fill(0, rOff, rOff + 32)],
      ['non-canonical R', (b) => b.fill(0xff, rOff, rOff + 32)],
      ['magic', (b) => b.write('TSB2', 0, 'ascii')],
      ['version 0', (b) => (b[4] = 0)],
      ['version 2', (b) => (b[4] = 2)],
      ['upper-case id', (b) => b.write('AB', 7, 'latin1')],
      ['slash in id', (b) => b.write('a/', 7, 'latin1')],
      ['id starting with a dot', (b) => b.write('.b', 7, 'latin1')],
      ['id length 0', (b) => b.writeUInt16BE(0, 5)],
      ['id length 65', (b) => b.writeUInt16BE(65, 5)],
      ['id length past the end', (b) => b.writeUInt16BE(0xffff, 5)],
    ];
    for (const [, mutate] of cases) {
      const m = Buffer.from(blob);
      mutate(m);
      expectTesseraError(() => parseBlob(m), 'TESSERA_SECRET_BLOB_INVALID');
    }
    expectTesseraError(() => parseBlob(Buffer.alloc(MAX_BLOB_BYTES + 1)), 'TESSERA_SECRET_BLOB_INVALID');
    expectTesseraError(() => parseBlob('TSB1' as unknown as Uint8Array), 'TESSERA_SECRET_BLOB_INVALID');
  });

  it('parseBlob on arbitrary bytes only ever throws TESSERA_SECRET_BLOB_INVALID', () => {
    const valid = sealP();
    const arbBytes = fc.oneof(
      fc.uint8Array({ maxLength: 300 }),
      // Bytes that start like a blob, so that parsing gets past the magic and version.
      fc.uint8Array({ maxLength: 200 }).map((tail) => Buffer.concat([Buffer.from('TSB1\x01', 'latin1'), tail])),
      fc.tuple(fc.integer({ min: 0, max: valid.length }), fc.uint8Array({ maxLength: 64 })).map(([cut, tail]) => Buffer.concat([valid.subarray(0, cut), tail])),
    );
    fc.assert(
      fc.property(arbBytes, (bytes) => {
        try {
          const parsed = parseBlob(bytes);
          openWithPoint(parsed, pointFor(parsed));
        } catch (err) {
          expect(err).toBeInstanceOf(TesseraError);
          expect((err as TesseraError).code).toBe('TESSERA_SECRET_BLOB_INVALID');
          return;
        }
        // Only the untouched blob itself may open.
        expect(Buffer.from(bytes).equals(valid)).toBe(true);
      }),
      { numRuns: 500 },
    );
  });

  it('returns copies: changing the input after parsing changes nothing', () => {
    const blob = sealP();
    const parsed = parseBlob(blob);
    blob.fill(0);
    expect(openWithPoint(parsed, pointFor(parsed)).equals(plain)).toBe(true);
  });
});

describe('text armour', () => {
  it('round trips, with surrounding whitespace and a trailing newline', () => {
    const blob = sealP();
    const text = sealedToText(blob);
    expect(text.startsWith(SEALED_TEXT_PREFIX)).toBe(true);
    expect(text).toMatch(/^tessera-sealed:v1:[A-Za-z0-9_-]+$/);
    for (const t of [text, `${text}\n`, `  ${text}\r\n`]) {
      const parsed = parseSealedText(t);
      expect(openWithPoint(parsed, pointFor(parsed)).equals(plain)).toBe(true);
    }
  });

  it('refuses other prefixes, padding, other alphabets, non-canonical base64url and garbage blobs', () => {
    const text = sealedToText(sealP());
    const body = text.slice(SEALED_TEXT_PREFIX.length);
    const bad = [
      '',
      body,
      `tessera-sealed:v2:${body}`,
      `TESSERA-SEALED:v1:${body}`,
      `${text}=`,
      `${text}==`,
      text.replace(/-/g, '+').replace(/_/g, '/') + (/[-_]/.test(body) ? '' : '+'),
      `${SEALED_TEXT_PREFIX}${body.slice(0, 10)} ${body.slice(10)}`,
      `${SEALED_TEXT_PREFIX}`,
      `${SEALED_TEXT_PREFIX}AAAA`,
      `${text}\u0000`,
    ];
    for (const t of bad) expectTesseraError(() => parseSealedText(t), 'TESSERA_SECRET_BLOB_INVALID');
    // One more character may still parse (an extra ciphertext byte), but never opens.
    expectTesseraError(() => {
      const parsed = parseSealedText(`${text}A`);
      openWithPoint(parsed, pointFor(parsed));
    }, 'TESSERA_SECRET_BLOB_INVALID');
    // A non-canonical last character (stray low bits) is refused: one text per blob.
    const last = body[body.length - 1]!;
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    if (body.length % 4 !== 0) {
      const twin = alphabet[(alphabet.indexOf(last) ^ 1) % 64]!;
      expectTesseraError(() => parseSealedText(SEALED_TEXT_PREFIX + body.slice(0, -1) + twin), 'TESSERA_SECRET_BLOB_INVALID');
    }
    expectTesseraError(() => sealedToText(Buffer.from('not a blob')), 'TESSERA_SECRET_BLOB_INVALID');
    expectTesseraError(() => parseSealedText(42 as unknown as string), 'TESSERA_SECRET_BLOB_INVALID');
    expectTesseraError(() => parseSealedText(SEALED_TEXT_PREFIX + 'A'.repeat(2_000_000)), 'TESSERA_SECRET_BLOB_INVALID');
  });

  it('parseSealedText on arbitrary strings only ever throws TESSERA_SECRET_BLOB_INVALID', () => {
    const arbText = fc.oneof(
      fc.string({ maxLength: 300 }),
      fc.string({ unit: 'binary', maxLength: 100 }),
      fc.base64String({ maxLength: 300 }).map((s) => SEALED_TEXT_PREFIX + s),
      fc.uint8Array({ maxLength: 200 }).map((b) => SEALED_TEXT_PREFIX + Buffer.concat([Buffer.from('TSB1\x01'), b]).toString('base64url')),
    );
    fc.assert(
      fc.property(arbText, (text) => {
        try {
          parseSealedText(text);
        } catch (err) {
          expect(err).toBeInstanceOf(TesseraError);
          expect((err as TesseraError).code).toBe('TESSERA_SECRET_BLOB_INVALID');
        }
      }),
      { numRuns: 500 },
    );
  });
});
