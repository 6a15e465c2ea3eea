/**
 * The sealed blob: a secret encrypted offline under a policy public key P_p, openable only with
 * k_p·R, which an agent recovers by blinded threshold evaluation (blind.ts). ECIES-shaped:
 * r random, R = r·G, Z = r·P_p = k_p·R, key = HKDF-SHA256(Z), AES-256-GCM.
 *
 * Binary layout (all integers big-endian):
 *
 * ```
 * "TSB1" | u8 version (1) | u16 policyIdLen | policyId (utf8, [a-z0-9._-]{1,64}) | u32 epoch
 *        | R (32, canonical ristretto255, not the identity) | nonce (12) | ciphertext ‖ GCM tag (16)
 * ```
 *
 * - HKDF: ikm = Z, salt = "tessera-blind-secret-v1", info = the bytes from "TSB1" through R (version,
 *   policy id, epoch and R, length-prefixed and so canonical).
 * - AEAD: AAD = every byte before the ciphertext (the info above plus the nonce), so no header byte,
 *   in particular the policy id and the epoch, can change without the open failing.
 *
 * Text armour, for Git and env files: `tessera-sealed:v1:<base64url without padding>`.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { fail, isTesseraError } from '../errors.js';
import { baseMul, decodePoint, mul, randomScalar, type Point } from './group.js';

export const BLOB_VERSION = 1;
export const MAX_BLOB_BYTES = 1024 * 1024;
export const SEALED_TEXT_PREFIX = 'tessera-sealed:v1:';

const MAGIC = Buffer.from('TSB1', 'ascii');
const KDF_SALT = Buffer.from('tessera-blind-secret-v1', 'ascii');
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const POLICY_ID_MAX = 64;
/** magic + version + u16 length + u32 epoch + R + nonce, without the policy id. */
const FIXED_HEADER_BYTES = 4 + 1 + 2 + 4 + 32 + NONCE_BYTES;
const MAX_TEXT_CHARS = SEALED_TEXT_PREFIX.length + Math.ceil((MAX_BLOB_BYTES * 4) / 3) + 2;
// The first character is a letter or digit: ids such as ".", ".." or ".hidden" would make hidden or
// special file names in a key server's share directory.
const POLICY_ID_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/;
/** The rule, for error messages. */
export const SECRET_POLICY_ID_RULE = '1..64 of [a-z0-9._-], starting with a letter or digit';
const BASE64URL_RE = /^[A-Za-z0-9_-]+$/;

/** What sealing needs: the policy, its key epoch and its public key P_p = k_p·G (C_0 of its commitments). */
export interface SealPolicy {
  id: string;
  epoch: number;
  publicKey: Point;
}

/** A blob taken apart. Every field is a copy. `ciphertext` ends with the 16-byte GCM tag. */
export interface ParsedBlob {
  version: number;
  policyId: string;
  epoch: number;
  R: Point;
  nonce: Uint8Array;
  ciphertext: Uint8Array;
  /** The authenticated header (every byte before the ciphertext). */
  header: Uint8Array;
}

/** True for a policy id a blob can carry: {@link SECRET_POLICY_ID_RULE}. */
export function isSecretPolicyId(id: unknown): id is string {
  return typeof id === 'string' && POLICY_ID_RE.test(id);
}

/**
 * Seals `plain` for `policy`, offline: only P_p is needed. The plaintext may be empty and at most
 * what keeps the blob within 1 MiB.
 *
 * @example const blob = seal(Buffer.from('db-password'), { id: 'shop.db', epoch: 1, publicKey: commitments[0] });
 */
export function seal(plain: Uint8Array, policy: SealPolicy): Buffer {
  if (!(plain instanceof Uint8Array)) throw fail('TESSERA_BAD_REQUEST', 'the plaintext must be bytes');
  if (!isSecretPolicyId(policy.id)) throw fail('TESSERA_BAD_REQUEST', `the policy id must be ${SECRET_POLICY_ID_RULE}`);
  if (!isEpoch(policy.epoch)) throw fail('TESSERA_BAD_REQUEST', 'the key epoch must be an integer in 0..2^32-1');
  const P = decodePoint(policy.publicKey);
  const total = FIXED_HEADER_BYTES + policy.id.length + plain.length + TAG_BYTES;
  if (total > MAX_BLOB_BYTES) throw fail('TESSERA_PAYLOAD_TOO_LARGE', `a sealed blob is limited to ${MAX_BLOB_BYTES} bytes`);

  const r = randomScalar();
  const R = baseMul(r);
  const Z = mul(r, P);
  r.fill(0);
  const nonce = randomBytes(NONCE_BYTES);
  const header = encodeHeader(policy.id, policy.epoch, R, nonce);
  const key = deriveKey(Z, header);
  Z.fill(0);

  const out = Buffer.allocUnsafe(total);
  header.copy(out, 0);
  const cipher = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(header);
  let off = header.length;
  off += cipher.update(plain).copy(out, off);
  off += cipher.final().copy(out, off);
  off += cipher.getAuthTag().copy(out, off);
  key.fill(0);
  if (off !== total) throw fail('TESSERA_INTERNAL', 'seal: unexpected ciphertext length');
  return out;
}

/**
 * Takes a blob apart, strictly: magic, version, bounds, policy id charset, a canonical non-identity R,
 * at least a tag's worth of ciphertext, at most 1 MiB. Only ever throws TESSERA_SECRET_BLOB_INVALID
 * (whose message names the structural problem, never content).
 */
export function parseBlob(bytes: Uint8Array): ParsedBlob {
  const bad = (why: string) => fail('TESSERA_SECRET_BLOB_INVALID', `sealed blob: ${why}`);
  if (!(bytes instanceof Uint8Array)) throw bad('not bytes');
  if (bytes.length > MAX_BLOB_BYTES) throw bad('larger than 1 MiB');
  if (bytes.length < FIXED_HEADER_BYTES + 1 + TAG_BYTES) throw bad('too short');
  for (let i = 0; i < MAGIC.length; i++) if (bytes[i] !== MAGIC[i]) throw bad('not a Tessera sealed blob');
  const version = bytes[4]!;
  if (version !== BLOB_VERSION) throw bad('unsupported version');
  const idLen = (bytes[5]! << 8) | bytes[6]!;
  if (idLen < 1 || idLen > POLICY_ID_MAX) throw bad('policy id length out of range');
  const headerLen = FIXED_HEADER_BYTES + idLen;
  if (bytes.length < headerLen + TAG_BYTES) throw bad('too short');
  for (let i = 7; i < 7 + idLen; i++) if (!isPolicyIdByte(bytes[i]!)) throw bad('policy id has a character outside [a-z0-9._-]');
  const policyId = Buffer.from(bytes.buffer, bytes.byteOffset + 7, idLen).toString('latin1');
  if (!isSecretPolicyId(policyId)) throw bad('policy id must start with a letter or digit');
  let off = 7 + idLen;
  const epoch = ((bytes[off]! << 24) | (bytes[off + 1]! << 16) | (bytes[off + 2]! << 8) | bytes[off + 3]!) >>> 0;
  off += 4;
  let R: Point;
  try {
    R = decodePoint(bytes.subarray(off, off + 32));
  } catch (err) {
    if (isTesseraError(err) && err.code === 'TESSERA_SECRET_POINT_INVALID') throw bad('R is not a valid point');
    throw err;
  }
  off += 32;
  const nonce = new Uint8Array(bytes.subarray(off, off + NONCE_BYTES));
  off += NONCE_BYTES;
  return {
    version,
    policyId,
    epoch,
    R,
    nonce,
    ciphertext: new Uint8Array(bytes.subarray(off)),
    header: new Uint8Array(bytes.subarray(0, headerLen)),
  };
}

/**
 * Opens a parsed blob with Z = k_p·R (recovered by `combineEvaluations` + `unblind`). The header is
 * re-encoded from the parsed fields, so what the caller read (policy id, epoch) is exactly what is
 * authenticated. A wrong point, or any altered byte, gives TESSERA_SECRET_BLOB_INVALID.
 */
export function openWithPoint(parsed: ParsedBlob, Z: Point): Buffer {
  const bad = (why: string) => fail('TESSERA_SECRET_BLOB_INVALID', `sealed blob: ${why}`);
  if (typeof parsed !== 'object' || parsed === null) throw bad('not a parsed blob');
  const { version, policyId, epoch, R, nonce, ciphertext } = parsed;
  if (version !== BLOB_VERSION || !isSecretPolicyId(policyId) || !isEpoch(epoch)) throw bad('invalid header fields');
  if (!(nonce instanceof Uint8Array) || nonce.length !== NONCE_BYTES) throw bad('invalid nonce');
  if (!(ciphertext instanceof Uint8Array) || ciphertext.length < TAG_BYTES) throw bad('ciphertext too short');
  let header: Buffer;
  let z: Point;
  try {
    header = encodeHeader(policyId, epoch, decodePoint(R), nonce);
    z = decodePoint(Z);
  } catch (err) {
    if (isTesseraError(err) && err.code === 'TESSERA_SECRET_POINT_INVALID') throw bad('not a valid point');
    throw err;
  }
  if (header.length + ciphertext.length > MAX_BLOB_BYTES) throw bad('larger than 1 MiB');
  const key = deriveKey(z, header);
  const ctLen = ciphertext.length - TAG_BYTES;
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
    decipher.setAAD(header);
    decipher.setAuthTag(ciphertext.subarray(ctLen));
    const head = decipher.update(ciphertext.subarray(0, ctLen));
    let tail: Buffer;
    try {
      tail = decipher.final();
    } catch {
      head.fill(0);
      throw bad('does not open (wrong key, or altered)');
    }
    return tail.length === 0 ? head : Buffer.concat([head, tail]);
  } catch (err) {
    if (isTesseraError(err)) throw err;
    throw bad('does not open');
  } finally {
    key.fill(0);
  }
}

/** `tessera-sealed:v1:<base64url>`; the blob is parsed first, so garbage is never armoured. */
export function sealedToText(blob: Uint8Array): string {
  parseBlob(blob);
  return SEALED_TEXT_PREFIX + Buffer.from(blob.buffer, blob.byteOffset, blob.length).toString('base64url');
}

/**
 * Parses the text armour (surrounding whitespace, e.g. a trailing newline, is ignored) into a blob.
 * Strict base64url: no padding, no other characters, canonical trailing bits. Only ever throws
 * TESSERA_SECRET_BLOB_INVALID.
 */
export function parseSealedText(text: string): ParsedBlob {
  const bad = (why: string) => fail('TESSERA_SECRET_BLOB_INVALID', `sealed text: ${why}`);
  if (typeof text !== 'string') throw bad('not a string');
  if (text.length > MAX_TEXT_CHARS + 1024) throw bad('too long');
  const trimmed = text.replace(/^[ \t\r\n]+|[ \t\r\n]+$/g, '');
  if (!trimmed.startsWith(SEALED_TEXT_PREFIX)) throw bad(`does not start with ${SEALED_TEXT_PREFIX}`);
  const body = trimmed.slice(SEALED_TEXT_PREFIX.length);
  if (body.length > MAX_TEXT_CHARS || !BASE64URL_RE.test(body) || body.length % 4 === 1) throw bad('not base64url');
  const bytes = Buffer.from(body, 'base64url');
  // Node's decoder ignores stray trailing bits; insisting on the canonical form keeps one text per blob.
  if (bytes.toString('base64url') !== body) throw bad('not canonical base64url');
  return parseBlob(bytes);
}

// ---------------------------------------------------------------------------------------------

function encodeHeader(policyId: string, epoch: number, R: Point, nonce: Uint8Array): Buffer {
  const id = Buffer.from(policyId, 'latin1');
  const h = Buffer.allocUnsafe(FIXED_HEADER_BYTES + id.length);
  MAGIC.copy(h, 0);
  h[4] = BLOB_VERSION;
  h.writeUInt16BE(id.length, 5);
  id.copy(h, 7);
  let off = 7 + id.length;
  h.writeUInt32BE(epoch, off);
  off += 4;
  h.set(R, off);
  off += 32;
  h.set(nonce, off);
  return h;
}

/** HKDF-SHA256(ikm = Z, salt, info = header through R). */
function deriveKey(Z: Point, header: Buffer): Buffer {
  const info = header.subarray(0, header.length - NONCE_BYTES);
  return Buffer.from(hkdfSync('sha256', Z, KDF_SALT, info, 32));
}

function isEpoch(e: unknown): e is number {
  return typeof e === 'number' && Number.isInteger(e) && e >= 0 && e <= 0xffffffff;
}

/** a-z 0-9 . _ - */
function isPolicyIdByte(b: number): boolean {
  return (b >= 0x61 && b <= 0x7a) || (b >= 0x30 && b <= 0x39) || b === 0x2e || b === 0x5f || b === 0x2d;
}
