/**
 * Minimal, strict DER (ITU-T X.690) for the handful of X.509 / PKCS#10 shapes Tessera builds and
 * reads. The writer returns Buffers meant to be concatenated into fixed layouts; the reader
 * refuses everything DER forbids (indefinite or non-minimal lengths, high tag numbers, non-minimal
 * INTEGERs and OID arcs, padding bits set in BIT STRINGs, ...).
 *
 * Reader failures are always a {@link TesseraError} with the code chosen by the caller (default
 * TESSERA_CSR_INVALID); nothing else ever escapes. Writer misuse (a negative tag, an invalid OID
 * string, a non-ASCII IA5String, ...) is a programming error and throws TESSERA_INTERNAL.
 * Messages never include the bytes being parsed.
 */
import { TesseraError, type ErrorCode } from './errors.js';

/** Largest content length the reader accepts (1 MiB). */
export const MAX_DER_LENGTH = 1 << 20;

/** Universal tags (with the constructed bit where DER requires it). */
export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

const DEFAULT_CODE: ErrorCode = 'TESSERA_CSR_INVALID';

function misuse(message: string): TesseraError {
  return new TesseraError('TESSERA_INTERNAL', `DER writer: ${message}`);
}

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

function headerLength(len: number): number {
  if (len < 0x80) return 2;
  if (len < 0x100) return 3;
  if (len < 0x10000) return 4;
  if (len < 0x1000000) return 5;
  return 6;
}

function writeHeader(out: Buffer, tag: number, len: number): number {
  out[0] = tag;
  if (len < 0x80) {
    out[1] = len;
    return 2;
  }
  const n = headerLength(len) - 2;
  out[1] = 0x80 | n;
  for (let i = n; i >= 1; i--) {
    out[1 + i] = len & 0xff;
    len = Math.floor(len / 256);
  }
  return 2 + n;
}

function checkTag(tag: number): void {
  if (!Number.isInteger(tag) || tag < 0 || tag > 0xff || (tag & 0x1f) === 0x1f) {
    throw misuse('tag must be a single-byte, low-tag-number identifier');
  }
}

/** One TLV: `tag` is the full identifier octet (class | constructed | number < 31). */
export function derTlv(tag: number, content: Uint8Array): Buffer {
  checkTag(tag);
  const len = content.length;
  const out = Buffer.allocUnsafe(headerLength(len) + len);
  const h = writeHeader(out, tag, len);
  out.set(content, h);
  return out;
}

/** A constructed TLV whose content is the concatenation of `parts` (one allocation). */
export function derConstructed(tag: number, parts: readonly Uint8Array[]): Buffer {
  checkTag(tag);
  let len = 0;
  for (const p of parts) len += p.length;
  const out = Buffer.allocUnsafe(headerLength(len) + len);
  let off = writeHeader(out, tag, len);
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

export function derSequence(...parts: Uint8Array[]): Buffer {
  return derConstructed(TAG.SEQUENCE, parts);
}

/** SET OF: elements are sorted as DER requires (X.690 11.6). */
export function derSet(...parts: Uint8Array[]): Buffer {
  if (parts.length > 1) parts = [...parts].sort(compareSetElements);
  return derConstructed(TAG.SET, parts);
}

function compareSetElements(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const d = (a[i] as number) - (b[i] as number);
    if (d !== 0) return d;
  }
  // The shorter one is padded with zero octets: it sorts first unless the rest is all zero.
  return a.length - b.length;
}

/**
 * INTEGER. A bigint is encoded in minimal two's complement (negative values allowed); a Buffer is
 * an unsigned big-endian magnitude (leading zeros stripped, a 0x00 prepended when the high bit is
 * set), which is what serial numbers want.
 */
export function derInteger(value: bigint | Uint8Array): Buffer {
  if (typeof value === 'bigint') return derTlv(TAG.INTEGER, bigintToTwosComplement(value));
  let i = 0;
  while (i < value.length && value[i] === 0) i++;
  const mag = value.subarray(i);
  if (mag.length === 0) return Buffer.from([TAG.INTEGER, 1, 0]);
  if (((mag[0] as number) & 0x80) !== 0) {
    const content = Buffer.allocUnsafe(mag.length + 1);
    content[0] = 0;
    content.set(mag, 1);
    return derTlv(TAG.INTEGER, content);
  }
  return derTlv(TAG.INTEGER, mag);
}

function bigintToTwosComplement(v: bigint): Buffer {
  if (v >= 0n) {
    let hex = v.toString(16);
    if (hex.length % 2 === 1) hex = `0${hex}`;
    if (parseInt(hex.slice(0, 2), 16) >= 0x80) hex = `00${hex}`;
    return Buffer.from(hex, 'hex');
  }
  // Smallest byte count n with -2^(8n-1) <= v.
  let n = 1;
  while (v < -(1n << BigInt(8 * n - 1))) n++;
  let hex = ((1n << BigInt(8 * n)) + v).toString(16);
  hex = hex.padStart(2 * n, '0');
  return Buffer.from(hex, 'hex');
}

const OID_RE = /^[0-2](?:\.(?:0|[1-9][0-9]*))+$/;
const OID_CACHE_MAX = 1024;
const oidCache = new Map<string, Buffer>();

/**
 * OBJECT IDENTIFIER from dotted notation. Encodings are cached: the returned Buffer is shared and
 * must not be mutated.
 */
export function derOid(dotted: string): Buffer {
  const cached = oidCache.get(dotted);
  if (cached !== undefined) return cached;
  if (typeof dotted !== 'string' || dotted.length > 1000 || !OID_RE.test(dotted)) throw misuse('invalid OID');
  const arcs = dotted.split('.').map((a) => BigInt(a));
  const first = arcs[0] as bigint;
  const second = arcs[1] as bigint;
  if (first < 2n && second >= 40n) throw misuse('invalid OID (second arc must be < 40)');
  const bytes: number[] = [];
  const subids = [first * 40n + second, ...arcs.slice(2)];
  for (const s of subids) {
    const tmp: number[] = [Number(s & 0x7fn)];
    let rest = s >> 7n;
    while (rest > 0n) {
      tmp.push(Number(rest & 0x7fn) | 0x80);
      rest >>= 7n;
    }
    for (let i = tmp.length - 1; i >= 0; i--) bytes.push(tmp[i] as number);
  }
  const enc = derTlv(TAG.OID, Buffer.from(bytes));
  if (oidCache.size < OID_CACHE_MAX) oidCache.set(dotted, enc);
  return enc;
}

const NULL_DER = Buffer.from([TAG.NULL, 0]);
export function derNull(): Buffer {
  return Buffer.from(NULL_DER);
}

export function derBoolean(b: boolean): Buffer {
  return Buffer.from([TAG.BOOLEAN, 1, b ? 0xff : 0x00]);
}

export function derBitString(bytes: Uint8Array, unusedBits = 0): Buffer {
  if (!Number.isInteger(unusedBits) || unusedBits < 0 || unusedBits > 7 || (bytes.length === 0 && unusedBits !== 0)) {
    throw misuse('invalid BIT STRING unused-bits count');
  }
  const out = Buffer.allocUnsafe(headerLength(bytes.length + 1) + bytes.length + 1);
  const h = writeHeader(out, TAG.BIT_STRING, bytes.length + 1);
  out[h] = unusedBits;
  out.set(bytes, h + 1);
  return out;
}

export function derOctetString(bytes: Uint8Array): Buffer {
  return derTlv(TAG.OCTET_STRING, bytes);
}

export function derUtf8String(s: string): Buffer {
  return derTlv(TAG.UTF8_STRING, Buffer.from(s, 'utf8'));
}

const PRINTABLE_RE = /^[A-Za-z0-9 '()+,\-./:=?]*$/;
export function derPrintableString(s: string): Buffer {
  if (!PRINTABLE_RE.test(s)) throw misuse('character not allowed in PrintableString');
  return derTlv(TAG.PRINTABLE_STRING, Buffer.from(s, 'latin1'));
}

const IA5_RE = /^[\x00-\x7f]*$/;
export function derIa5String(s: string): Buffer {
  if (!IA5_RE.test(s)) throw misuse('non-ASCII character in IA5String');
  return derTlv(TAG.IA5_STRING, Buffer.from(s, 'latin1'));
}

function pad(n: number, width: number): string {
  return String(n).padStart(width, '0');
}

/**
 * A certificate time (RFC 5280 4.1.2.5): UTCTime for 1950-2049, GeneralizedTime otherwise, always
 * in UTC with seconds and no fraction (milliseconds are truncated).
 */
export function derTime(date: Date): Buffer {
  const ms = date instanceof Date ? date.getTime() : NaN;
  if (!Number.isFinite(ms)) throw misuse('invalid Date');
  const d = new Date(ms - (((ms % 1000) + 1000) % 1000));
  const year = d.getUTCFullYear();
  if (year < 0 || year > 9999) throw misuse('year out of range 0000-9999');
  const rest =
    pad(d.getUTCMonth() + 1, 2) +
    pad(d.getUTCDate(), 2) +
    pad(d.getUTCHours(), 2) +
    pad(d.getUTCMinutes(), 2) +
    pad(d.getUTCSeconds(), 2) +
    'Z';
  if (year >= 1950 && year <= 2049) return derTlv(TAG.UTC_TIME, Buffer.from(pad(year % 100, 2) + rest, 'latin1'));
  return derTlv(TAG.GENERALIZED_TIME, Buffer.from(pad(year, 4) + rest, 'latin1'));
}

/**
 * Context-specific [tagNumber]. `constructed: true` gives an EXPLICIT tag (content is the inner
 * TLV) or an IMPLICIT tag over a constructed type; `false` gives an IMPLICIT primitive tag (content
 * is the inner value without its own header).
 */
export function derContext(tagNumber: number, content: Uint8Array, constructed: boolean): Buffer {
  if (!Number.isInteger(tagNumber) || tagNumber < 0 || tagNumber > 30) throw misuse('context tag number out of range');
  return derTlv(0x80 | (constructed ? 0x20 : 0) | tagNumber, content);
}

// ---------------------------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------------------------

/**
 * One parsed TLV. `start`/`end` are absolute offsets in the buffer given to {@link readTlv};
 * `value` is a subarray of it (no copy).
 */
export interface Tlv {
  tag: number;
  start: number;
  headerLength: number;
  length: number;
  end: number;
  value: Buffer;
}

function asBuffer(buf: Uint8Array): Buffer {
  return Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
}

function bad(code: ErrorCode, message: string): TesseraError {
  return new TesseraError(code, `malformed DER: ${message}`);
}

/**
 * Reads the TLV at `offset`, which must end at or before `limit` (default: the buffer's end).
 * Enforces single-byte tags, definite minimal lengths and the 1 MiB cap.
 */
export function readTlv(buf: Buffer, offset = 0, code: ErrorCode = DEFAULT_CODE, limit?: number): Tlv {
  if (!(buf instanceof Uint8Array)) throw bad(code, 'input is not a byte array');
  buf = asBuffer(buf);
  const lim = limit === undefined ? buf.length : Math.min(limit, buf.length);
  if (!Number.isInteger(offset) || offset < 0 || offset + 2 > lim) throw bad(code, 'truncated header');
  const tag = buf[offset] as number;
  if ((tag & 0x1f) === 0x1f) throw bad(code, 'high tag numbers are not supported');
  const first = buf[offset + 1] as number;
  let length: number;
  let hl: number;
  if (first < 0x80) {
    length = first;
    hl = 2;
  } else {
    const n = first & 0x7f;
    if (n === 0) throw bad(code, 'indefinite length');
    if (n > 3) throw bad(code, 'length too large');
    if (offset + 2 + n > lim) throw bad(code, 'truncated length');
    if (buf[offset + 2] === 0) throw bad(code, 'non-minimal length');
    length = 0;
    for (let i = 0; i < n; i++) length = length * 256 + (buf[offset + 2 + i] as number);
    if (length < 0x80) throw bad(code, 'non-minimal length');
    hl = 2 + n;
  }
  if (length > MAX_DER_LENGTH) throw bad(code, 'length too large');
  const end = offset + hl + length;
  if (end > lim) throw bad(code, 'length past end of input');
  return { tag, start: offset, headerLength: hl, length, end, value: buf.subarray(offset + hl, end) };
}

/** Reads exactly one TLV spanning all of `buf` (trailing bytes are an error). */
export function readDer(buf: Buffer, code: ErrorCode = DEFAULT_CODE, expectedTag?: number): Tlv {
  const tlv = readTlv(buf, 0, code);
  if (tlv.end !== buf.length) throw bad(code, 'trailing bytes');
  if (expectedTag !== undefined) expectTag(tlv, expectedTag, code);
  return tlv;
}

/** The children of a constructed TLV, with offsets absolute in `buf`. */
export function readChildren(buf: Buffer, parent: Tlv, code: ErrorCode = DEFAULT_CODE): Tlv[] {
  if ((parent.tag & 0x20) === 0) throw bad(code, 'expected a constructed value');
  const out: Tlv[] = [];
  let off = parent.start + parent.headerLength;
  while (off < parent.end) {
    const child = readTlv(buf, off, code, parent.end);
    out.push(child);
    off = child.end;
  }
  return out;
}

export function expectTag(tlv: Tlv, tag: number, code: ErrorCode = DEFAULT_CODE): Tlv {
  if (tlv.tag !== tag) throw bad(code, `unexpected tag 0x${tlv.tag.toString(16)}`);
  return tlv;
}

/** OBJECT IDENTIFIER to dotted notation (`tag` defaults to the universal OID tag). */
export function decodeOid(tlv: Tlv, code: ErrorCode = DEFAULT_CODE, tag: number = TAG.OID): string {
  expectTag(tlv, tag, code);
  const v = tlv.value;
  if (v.length === 0) throw bad(code, 'empty OID');
  if (((v[v.length - 1] as number) & 0x80) !== 0) throw bad(code, 'truncated OID');
  const parts: string[] = [];
  let i = 0;
  let firstArc = true;
  while (i < v.length) {
    if (v[i] === 0x80) throw bad(code, 'non-minimal OID arc');
    let small = 0;
    let big: bigint | undefined;
    for (;;) {
      const b = v[i++] as number;
      if (big === undefined && small < 2 ** 45) {
        small = small * 128 + (b & 0x7f);
      } else {
        big = ((big ?? BigInt(small)) << 7n) | BigInt(b & 0x7f);
      }
      if ((b & 0x80) === 0) break;
    }
    if (firstArc) {
      firstArc = false;
      if (big === undefined) {
        if (small < 40) parts.push('0', String(small));
        else if (small < 80) parts.push('1', String(small - 40));
        else parts.push('2', String(small - 80));
      } else {
        parts.push('2', String(big - 80n));
      }
    } else {
      parts.push(big === undefined ? String(small) : String(big));
    }
  }
  return parts.join('.');
}

/** INTEGER (minimal two's complement) to bigint. */
export function decodeInteger(tlv: Tlv, code: ErrorCode = DEFAULT_CODE, tag: number = TAG.INTEGER): bigint {
  expectTag(tlv, tag, code);
  const v = tlv.value;
  if (v.length === 0) throw bad(code, 'empty INTEGER');
  if (v.length > 1) {
    const b0 = v[0] as number;
    const b1 = v[1] as number;
    if ((b0 === 0x00 && b1 < 0x80) || (b0 === 0xff && b1 >= 0x80)) throw bad(code, 'non-minimal INTEGER');
  }
  let n = v.length <= 6 ? BigInt(v.readUIntBE(0, v.length)) : BigInt(`0x${v.toString('hex')}`);
  if (((v[0] as number) & 0x80) !== 0) n -= 1n << BigInt(8 * v.length);
  return n;
}

export interface BitString {
  unusedBits: number;
  bytes: Buffer;
}

/** BIT STRING: DER requires unused bits < 8, none for an empty string, and zero padding bits. */
export function decodeBitString(tlv: Tlv, code: ErrorCode = DEFAULT_CODE, tag: number = TAG.BIT_STRING): BitString {
  expectTag(tlv, tag, code);
  const v = tlv.value;
  if (v.length === 0) throw bad(code, 'empty BIT STRING');
  const unusedBits = v[0] as number;
  if (unusedBits > 7) throw bad(code, 'BIT STRING unused bits > 7');
  if (v.length === 1 && unusedBits !== 0) throw bad(code, 'BIT STRING unused bits without data');
  if (unusedBits !== 0 && ((v[v.length - 1] as number) & ((1 << unusedBits) - 1)) !== 0) {
    throw bad(code, 'BIT STRING padding bits set');
  }
  return { unusedBits, bytes: v.subarray(1) };
}

export function decodeBoolean(tlv: Tlv, code: ErrorCode = DEFAULT_CODE): boolean {
  expectTag(tlv, TAG.BOOLEAN, code);
  const v = tlv.value;
  if (v.length !== 1 || (v[0] !== 0x00 && v[0] !== 0xff)) throw bad(code, 'invalid BOOLEAN');
  return v[0] === 0xff;
}

export function decodeNull(tlv: Tlv, code: ErrorCode = DEFAULT_CODE): null {
  expectTag(tlv, TAG.NULL, code);
  if (tlv.length !== 0) throw bad(code, 'invalid NULL');
  return null;
}

export function decodeOctetString(tlv: Tlv, code: ErrorCode = DEFAULT_CODE, tag: number = TAG.OCTET_STRING): Buffer {
  expectTag(tlv, tag, code);
  return tlv.value;
}

const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

export function decodeUtf8String(tlv: Tlv, code: ErrorCode = DEFAULT_CODE, tag: number = TAG.UTF8_STRING): string {
  expectTag(tlv, tag, code);
  try {
    return utf8Decoder.decode(tlv.value);
  } catch {
    throw bad(code, 'invalid UTF-8');
  }
}

function isAscii(v: Buffer): boolean {
  for (let i = 0; i < v.length; i++) if ((v[i] as number) > 0x7f) return false;
  return true;
}

export function decodeIa5String(tlv: Tlv, code: ErrorCode = DEFAULT_CODE, tag: number = TAG.IA5_STRING): string {
  expectTag(tlv, tag, code);
  if (!isAscii(tlv.value)) throw bad(code, 'non-ASCII IA5String');
  return tlv.value.toString('latin1');
}

export function decodePrintableString(tlv: Tlv, code: ErrorCode = DEFAULT_CODE, tag: number = TAG.PRINTABLE_STRING): string {
  expectTag(tlv, tag, code);
  const s = tlv.value.toString('latin1');
  if (!isAscii(tlv.value) || !PRINTABLE_RE.test(s)) throw bad(code, 'invalid PrintableString');
  return s;
}

const UTC_RE = /^([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})Z$/;
const GEN_RE = /^([0-9]{4})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})Z$/;

/**
 * UTCTime or GeneralizedTime to a Date. Only the RFC 5280 forms are accepted: UTC ("Z"), seconds
 * present, no fractional seconds.
 */
export function decodeTime(tlv: Tlv, code: ErrorCode = DEFAULT_CODE): Date {
  let m: RegExpExecArray | null;
  const s = isAscii(tlv.value) ? tlv.value.toString('latin1') : '';
  let year: number;
  if (tlv.tag === TAG.UTC_TIME) {
    m = UTC_RE.exec(s);
    if (m === null) throw bad(code, 'invalid UTCTime');
    const yy = Number(m[1]);
    year = yy >= 50 ? 1900 + yy : 2000 + yy;
  } else if (tlv.tag === TAG.GENERALIZED_TIME) {
    m = GEN_RE.exec(s);
    if (m === null) throw bad(code, 'invalid GeneralizedTime');
    year = Number(m[1]);
  } else {
    throw bad(code, 'expected a time');
  }
  const month = Number(m[2]);
  const day = Number(m[3]);
  const hour = Number(m[4]);
  const minute = Number(m[5]);
  const second = Number(m[6]);
  if (month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || second > 59) throw bad(code, 'time field out of range');
  const d = new Date(0);
  d.setUTCFullYear(year, month - 1, day);
  d.setUTCHours(hour, minute, second, 0);
  if (d.getUTCDate() !== day) throw bad(code, 'day out of range');
  return d;
}
