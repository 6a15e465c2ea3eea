import { expectTesseraError } from '../../test/support/expect.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  MAX_DER_LENGTH,
  TAG,
  decodeBitString,
  decodeBoolean,
  decodeIa5String,
  decodeInteger,
  decodeNull,
  decodeOctetString,
  decodeOid,
  decodePrintableString,
  decodeTime,
  decodeUtf8String,
  derBitString,
  derBoolean,
  derContext,
  derIa5String,
  derInteger,
  derNull,
  derOctetString,
  derOid,
  derPrintableString,
  derSequence,
  derSet,
  derTime,
  derTlv,
  derUtf8String,
  readChildren,
  readDer,
  readTlv,
  type Tlv,
} from './der.js';
import { TesseraError } from './errors.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

function expectCode(fn: () => unknown, code = 'TESSERA_CSR_INVALID'): void {
  expectTesseraError(fn, code);
}

/** Walks an encoding completely, decoding every primitive by its universal tag. */
function deepParse(buf: Buffer): void {
  const walk = (tlv: Tlv): void => {
    if ((tlv.tag & 0x20) !== 0) {
      for (const c of readChildren(buf, tlv)) walk(c);
      return;
    }
    switch (tlv.tag) {
      case TAG.BOOLEAN: decodeBoolean(tlv); break;
      case TAG.INTEGER: decodeInteger(tlv); break;
      case TAG.BIT_STRING: decodeBitString(tlv); break;
      case TAG.OCTET_STRING: decodeOctetString(tlv); break;
      case TAG.NULL: decodeNull(tlv); break;
      case TAG.OID: decodeOid(tlv); break;
      case TAG.UTF8_STRING: decodeUtf8String(tlv); break;
      case TAG.PRINTABLE_STRING: decodePrintableString(tlv); break;
      case TAG.IA5_STRING: decodeIa5String(tlv); break;
      case TAG.UTC_TIME:
      case TAG.GENERALIZED_TIME: decodeTime(tlv); break;
      default: break;
    }
  };
  walk(readDer(buf));
}

function onlyTesseraErrors(fn: () => unknown): void {
  try {
    fn();
  } catch (err) {
    if (!(err instanceof TesseraError)) throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// Arbitraries
// ---------------------------------------------------------------------------------------------

const oidArb = fc
  .tuple(fc.integer({ min: 0, max: 2 }), fc.bigInt({ min: 0n, max: 2n ** 70n }), fc.array(fc.bigInt({ min: 0n, max: 2n ** 80n }), { maxLength: 8 }))
  .map(([a, b, rest]) => [String(a), String(a < 2 ? b % 40n : b), ...rest.map(String)].join('.'));

type Tree =
  | { k: 'int'; v: bigint }
  | { k: 'oct'; v: Uint8Array }
  | { k: 'oid'; v: string }
  | { k: 'bool'; v: boolean }
  | { k: 'null' }
  | { k: 'utf8'; v: string }
  | { k: 'seq'; c: Tree[] }
  | { k: 'ctx'; n: number; c: Tree[] };

const { tree } = fc.letrec<{ tree: Tree; leaf: Tree; node: Tree }>((tie) => ({
  tree: fc.oneof({ depthSize: 'small', withCrossShrink: true }, tie('leaf'), tie('node')),
  leaf: fc.oneof(
    fc.bigInt().map((v): Tree => ({ k: 'int', v })),
    fc.uint8Array({ maxLength: 300 }).map((v): Tree => ({ k: 'oct', v })),
    oidArb.map((v): Tree => ({ k: 'oid', v })),
    fc.boolean().map((v): Tree => ({ k: 'bool', v })),
    fc.constant<Tree>({ k: 'null' }),
    fc.string({ unit: 'grapheme', maxLength: 40 }).map((v): Tree => ({ k: 'utf8', v })),
  ),
  node: fc.oneof(
    fc.array(tie('tree'), { maxLength: 5 }).map((c): Tree => ({ k: 'seq', c })),
    fc.tuple(fc.integer({ min: 0, max: 30 }), fc.array(tie('tree'), { maxLength: 5 })).map(([n, c]): Tree => ({ k: 'ctx', n, c })),
  ),
}));

function encodeTree(t: Tree): Buffer {
  switch (t.k) {
    case 'int': return derInteger(t.v);
    case 'oct': return derOctetString(t.v);
    case 'oid': return derOid(t.v);
    case 'bool': return derBoolean(t.v);
    case 'null': return derNull();
    case 'utf8': return derUtf8String(t.v);
    case 'seq': return derSequence(...t.c.map(encodeTree));
    case 'ctx': return derContext(t.n, Buffer.concat(t.c.map(encodeTree)), true);
  }
}

function decodeTree(buf: Buffer, tlv: Tlv): Tree {
  switch (tlv.tag) {
    case TAG.INTEGER: return { k: 'int', v: decodeInteger(tlv) };
    case TAG.OCTET_STRING: return { k: 'oct', v: new Uint8Array(decodeOctetString(tlv)) };
    case TAG.OID: return { k: 'oid', v: decodeOid(tlv) };
    case TAG.BOOLEAN: return { k: 'bool', v: decodeBoolean(tlv) };
    case TAG.NULL: decodeNull(tlv); return { k: 'null' };
    case TAG.UTF8_STRING: return { k: 'utf8', v: decodeUtf8String(tlv) };
    case TAG.SEQUENCE: return { k: 'seq', c: readChildren(buf, tlv).map((c) => decodeTree(buf, c)) };
    default:
      expect(tlv.tag & 0xe0).toBe(0xa0);
      return { k: 'ctx', n: tlv.tag & 0x1f, c: readChildren(buf, tlv).map((c) => decodeTree(buf, c)) };
  }
}

const normalize = (t: Tree): unknown => JSON.parse(JSON.stringify(t, (_k, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v instanceof Uint8Array ? Buffer.from(v).toString('hex') : v)));

// ---------------------------------------------------------------------------------------------

describe('DER writer: known encodings', () => {
  it('encodes INTEGERs minimally', () => {
    expect(derInteger(0n)).toEqual(hex('020100'));
    expect(derInteger(127n)).toEqual(hex('02017f'));
    expect(derInteger(128n)).toEqual(hex('02020080'));
    expect(derInteger(256n)).toEqual(hex('02020100'));
    expect(derInteger(-1n)).toEqual(hex('0201ff'));
    expect(derInteger(-128n)).toEqual(hex('020180'));
    expect(derInteger(-129n)).toEqual(hex('0202ff7f'));
    expect(derInteger(Buffer.alloc(0))).toEqual(hex('020100'));
    expect(derInteger(hex('000080'))).toEqual(hex('02020080'));
    expect(derInteger(hex('7f'))).toEqual(hex('02017f'));
  });

  it('encodes OIDs (and caches them)', () => {
    expect(derOid('1.2.840.10045.4.3.2')).toEqual(hex('06082a8648ce3d040302'));
    expect(derOid('2.5.29.17')).toEqual(hex('0603551d11'));
    expect(derOid('1.3.101.112')).toEqual(hex('06032b6570'));
    expect(derOid('2.999.3')).toEqual(hex('0603883703'));
    expect(derOid('2.5.29.17')).toBe(derOid('2.5.29.17'));
    for (const bad of ['', '1', '3.1', '1.40', '1.2.', '1..2', '1.02', 'a.b']) expectCode(() => derOid(bad), 'TESSERA_INTERNAL');
  });

  it('encodes the simple types', () => {
    expect(derNull()).toEqual(hex('0500'));
    expect(derBoolean(true)).toEqual(hex('0101ff'));
    expect(derBoolean(false)).toEqual(hex('010100'));
    expect(derBitString(hex('80'), 7)).toEqual(hex('03020780'));
    expect(derBitString(Buffer.alloc(0))).toEqual(hex('030100'));
    expectCode(() => derBitString(Buffer.alloc(0), 1), 'TESSERA_INTERNAL');
    expectCode(() => derBitString(hex('00'), 8), 'TESSERA_INTERNAL');
    expect(derUtf8String('é')).toEqual(hex('0c02c3a9'));
    expect(derPrintableString('Tessera CA')).toEqual(hex('130a54657373657261204341'));
    expectCode(() => derPrintableString('a@b'), 'TESSERA_INTERNAL');
    expect(derIa5String('spiffe://x')).toEqual(Buffer.concat([hex('160a'), Buffer.from('spiffe://x')]));
    expectCode(() => derIa5String('é'), 'TESSERA_INTERNAL');
    expect(derContext(0, derInteger(2n), true)).toEqual(hex('a003020102'));
    expect(derContext(6, Buffer.from('u'), false)).toEqual(hex('860175'));
    expectCode(() => derContext(31, Buffer.alloc(0), false), 'TESSERA_INTERNAL');
    expectCode(() => derTlv(0x1f, Buffer.alloc(0)), 'TESSERA_INTERNAL');
  });

  it('uses minimal long-form lengths', () => {
    expect(derOctetString(Buffer.alloc(127)).subarray(0, 2)).toEqual(hex('047f'));
    expect(derOctetString(Buffer.alloc(128)).subarray(0, 3)).toEqual(hex('048180'));
    expect(derOctetString(Buffer.alloc(255)).subarray(0, 3)).toEqual(hex('0481ff'));
    expect(derOctetString(Buffer.alloc(256)).subarray(0, 4)).toEqual(hex('04820100'));
    expect(derOctetString(Buffer.alloc(70000)).subarray(0, 5)).toEqual(hex('0483011170'));
  });

  it('sorts SET OF elements', () => {
    expect(derSet(derInteger(3n), derInteger(1n), derInteger(2n))).toEqual(hex('3109020101020102020103'));
  });

  it('picks UTCTime for 1950-2049 and GeneralizedTime otherwise, truncating milliseconds', () => {
    const ascii = (b: Buffer): string => b.subarray(2).toString('latin1');
    const t1 = derTime(new Date('2049-12-31T23:59:59.999Z'));
    expect(t1[0]).toBe(TAG.UTC_TIME);
    expect(ascii(t1)).toBe('491231235959Z');
    const t2 = derTime(new Date('2050-01-01T00:00:00Z'));
    expect(t2[0]).toBe(TAG.GENERALIZED_TIME);
    expect(ascii(t2)).toBe('20500101000000Z');
    expect(ascii(derTime(new Date('1950-01-01T00:00:00Z')))).toBe('500101000000Z');
    expect(ascii(derTime(new Date('1949-12-31T23:59:59Z')))).toBe('19491231235959Z');
    expect(ascii(derTime(new Date('9999-12-31T23:59:59Z')))).toBe('99991231235959Z');
    expectCode(() => derTime(new Date(NaN)), 'TESSERA_INTERNAL');
    expectCode(() => derTime(new Date('+010000-01-01T00:00:00Z')), 'TESSERA_INTERNAL');
  });
});

describe('DER round trips (properties)', () => {
  it('INTEGER from bigint, any size and sign', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: -(2n ** 2000n), max: 2n ** 2000n }), (v) => {
        const enc = derInteger(v);
        expect(decodeInteger(readDer(enc))).toBe(v);
      }),
      { numRuns: 500 },
    );
  });

  it('INTEGER from an unsigned Buffer magnitude', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (b) => {
        const expected = b.length === 0 ? 0n : BigInt(`0x${Buffer.from(b).toString('hex')}`);
        expect(decodeInteger(readDer(derInteger(b)))).toBe(expected);
      }),
    );
  });

  it('OBJECT IDENTIFIER', () => {
    fc.assert(
      fc.property(oidArb, (oid) => {
        expect(decodeOid(readDer(derOid(oid)))).toBe(oid);
      }),
      { numRuns: 500 },
    );
  });

  it('strings', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 200 }), (s) => {
        expect(decodeUtf8String(readDer(derUtf8String(s)))).toBe(s);
      }),
    );
    fc.assert(
      fc.property(fc.string({ unit: 'binary-ascii', maxLength: 300 }), (s) => {
        expect(decodeIa5String(readDer(derIa5String(s)))).toBe(s);
      }),
    );
    fc.assert(
      fc.property(fc.stringMatching(/^[A-Za-z0-9 '()+,\-./:=?]{0,80}$/), (s) => {
        expect(decodePrintableString(readDer(derPrintableString(s)))).toBe(s);
      }),
    );
  });

  it('OCTET STRING and BIT STRING', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 1000 }), fc.integer({ min: 0, max: 7 }), (b, unused) => {
        expect(Buffer.from(decodeOctetString(readDer(derOctetString(b))))).toEqual(Buffer.from(b));
        const bytes = Buffer.from(b);
        const u = bytes.length === 0 ? 0 : unused;
        if (bytes.length > 0) bytes[bytes.length - 1] = (bytes[bytes.length - 1] as number) & (0xff << u);
        const bs = decodeBitString(readDer(derBitString(bytes, u)));
        expect(bs.unusedBits).toBe(u);
        expect(bs.bytes).toEqual(bytes);
      }),
    );
  });

  it('times, years 0000-9999 at second precision', () => {
    fc.assert(
      fc.property(fc.date({ min: new Date('0000-01-01T00:00:00Z'), max: new Date('9999-12-31T23:59:59Z'), noInvalidDate: true }), (d) => {
        const expected = Math.floor(d.getTime() / 1000) * 1000;
        const enc = derTime(d);
        const year = d.getUTCFullYear();
        expect(enc[0]).toBe(year >= 1950 && year <= 2049 ? TAG.UTC_TIME : TAG.GENERALIZED_TIME);
        expect(decodeTime(readDer(enc)).getTime()).toBe(expected);
      }),
      { numRuns: 500 },
    );
  });

  it('nested SEQUENCEs and context tags', () => {
    fc.assert(
      fc.property(tree, (t) => {
        const enc = encodeTree(t);
        expect(normalize(decodeTree(enc, readDer(enc)))).toEqual(normalize(t));
      }),
      { numRuns: 300 },
    );
  });
});

describe('DER reader robustness', () => {
  it('throws nothing but TesseraError on arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (b) => {
        onlyTesseraErrors(() => deepParse(Buffer.from(b)));
      }),
      { numRuns: 2000 },
    );
  });

  it('throws nothing but TesseraError on mutated valid encodings', () => {
    const mutation = fc.oneof(
      fc.record({ op: fc.constant('set' as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
      fc.record({ op: fc.constant('cut' as const), at: fc.nat(), byte: fc.constant(0) }),
      fc.record({ op: fc.constant('insert' as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
    );
    fc.assert(
      fc.property(tree, fc.array(mutation, { minLength: 1, maxLength: 4 }), (t, muts) => {
        let b = encodeTree(t);
        for (const m of muts) {
          const at = m.at % (b.length + 1);
          if (m.op === 'set' && at < b.length) b[at] = m.byte;
          else if (m.op === 'cut') b = b.subarray(0, at);
          else b = Buffer.concat([b.subarray(0, at), Buffer.from([m.byte]), b.subarray(at)]);
        }
        onlyTesseraErrors(() => deepParse(b));
      }),
      { numRuns: 1000 },
    );
  });

  it('rejects what DER forbids', () => {
    const cases: Record<string, string> = {
      empty: '',
      'lone tag': '30',
      'indefinite length': '3080020100 0000',
      'non-minimal short length in long form': '04810100',
      'non-minimal long length (leading zero)': '0482000100',
      'length past end': '040501',
      'length-of-length past end': '0482',
      'five length octets': '048500000000 01',
      'reserved 0xff length': '04ff',
      'high tag number': '1f0100',
      'high tag number (context)': 'bf1f0100',
      'trailing bytes': '0500 00',
    };
    for (const [name, h] of Object.entries(cases)) {
      let thrown: unknown;
      try {
        deepParse(hex(h));
      } catch (err) {
        thrown = err;
      }
      expect(thrown, name).toBeInstanceOf(TesseraError);
      expect((thrown as TesseraError).code, name).toBe('TESSERA_CSR_INVALID');
    }
  });

  it('enforces the 1 MiB cap', () => {
    const big = Buffer.alloc(MAX_DER_LENGTH + 5);
    hex('0483100001').copy(big);
    expectCode(() => readTlv(big, 0));
    const ok = Buffer.alloc(MAX_DER_LENGTH + 5);
    hex('0483100000').copy(ok);
    expect(readTlv(ok, 0).length).toBe(MAX_DER_LENGTH);
  });

  it('rejects non-minimal or malformed primitives', () => {
    const cases: [string, (t: Tlv) => unknown][] = [
      ['0200', decodeInteger],
      ['02020001', decodeInteger],
      ['0202ff80', decodeInteger],
      ['0600', decodeOid],
      ['0602 8001', decodeOid],
      ['0601 81', decodeOid],
      ['0300', decodeBitString],
      ['030101', decodeBitString],
      ['03020801', decodeBitString],
      ['03020101', decodeBitString],
      ['010101', decodeBoolean],
      ['0102ffff', decodeBoolean],
      ['050100', decodeNull],
      ['0c02c328', decodeUtf8String],
      ['160180', decodeIa5String],
      ['130140', decodePrintableString],
      ['170b 3439313233313233353941', decodeTime], // no seconds
      ['1711 3439313233313233353935392b30303030', decodeTime], // offset instead of Z
      ['1711 3230353031323331323335393539 2e315a', decodeTime], // wrong tag/length for UTCTime
      ['1812 3230353031323331323335393539 2e31305a', decodeTime], // fractional seconds
      ['170d 3439313333313233353935395a', decodeTime], // month 13
      ['170d 3439303233303233353935395a', decodeTime], // 30 February
      ['170d 3439313233313234353935395a', decodeTime], // hour 24
      ['0403 010203', decodeInteger], // wrong tag
    ];
    for (const [h, fn] of cases) {
      expectCode(() => fn(readDer(hex(h))));
    }
  });

  it('uses the caller-chosen error code', () => {
    expectCode(() => readTlv(hex('3080'), 0, 'TESSERA_AUTH_INVALID'), 'TESSERA_AUTH_INVALID');
    expectCode(() => readDer(hex('0500 00'), 'TESSERA_AUTH_INVALID'), 'TESSERA_AUTH_INVALID');
    expectCode(() => decodeInteger(readDer(hex('02020001')), 'TESSERA_CSR_SIGNATURE_INVALID'), 'TESSERA_CSR_SIGNATURE_INVALID');
  });

  it('returns values as subarrays and offsets as absolute positions', () => {
    const buf = derSequence(derInteger(5n), derSequence(derOctetString(hex('aabb'))));
    const top = readDer(buf, 'TESSERA_CSR_INVALID', TAG.SEQUENCE);
    const [i, inner] = readChildren(buf, top);
    expect(i?.start).toBe(2);
    expect(inner?.start).toBe(5);
    const [oct] = readChildren(buf, inner as Tlv);
    expect(oct?.value.buffer).toBe(buf.buffer);
    expect(buf.subarray(oct?.start, oct?.end)).toEqual(hex('0402aabb'));
    // A child may not run past its parent even when the buffer continues.
    const lying = hex('3003 0402aabb');
    expectCode(() => readChildren(lying, readTlv(lying, 0, 'TESSERA_CSR_INVALID')));
    expectCode(() => readChildren(buf, i as Tlv));
  });
});
