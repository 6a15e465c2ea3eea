/**
 * PKCS#10 certificate signing requests (RFC 2986): the agent builds them, the control plane parses
 * them strictly and verifies their self-signature. Only P-256 ECDSA (ecdsa-with-SHA256) and
 * Ed25519 keys are accepted.
 */
import { createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import {
  TAG,
  decodeBitString,
  decodeBoolean,
  decodeInteger,
  decodeOctetString,
  decodeOid,
  derBitString,
  derBoolean,
  derConstructed,
  derIa5String,
  derInteger,
  derOctetString,
  derOid,
  derSequence,
  derSet,
  derUtf8String,
  expectTag,
  readChildren,
  readDer,
  type Tlv,
} from './der.js';
import { TesseraError, type ErrorCode } from './errors.js';
import { OID, parseGeneralNames, pemDecodeBlocks, rememberSpki, spkiDer } from './x509.js';

/** Largest CSR accepted by {@link parseCsr}, in DER bytes. */
export const MAX_CSR_BYTES = 8 * 1024;
const MAX_CSR_PEM_CHARS = 16 * 1024;

const OID_EXTENSION_REQUEST = '1.2.840.113549.1.9.14';
const INVALID: ErrorCode = 'TESSERA_CSR_INVALID';

export interface ParsedCsr {
  publicKey: KeyObject;
  keyType: 'p256' | 'ed25519';
  uriSans: string[];
  dnsSans: string[];
}

/**
 * The agent's CSR: subject CN when given (else an empty subject), the URI SAN in an
 * extensionRequest attribute, signed with ecdsa-with-SHA256 (P-256) or Ed25519.
 */
export function createCsr(opts: { privateKey: KeyObject; publicKey: KeyObject; uriSan?: string; commonName?: string }): Buffer {
  const { privateKey, publicKey } = opts;
  const isEd = privateKey?.asymmetricKeyType === 'ed25519';
  const isP256 = privateKey?.asymmetricKeyType === 'ec' && privateKey.asymmetricKeyDetails?.namedCurve === 'prime256v1';
  if (privateKey?.type !== 'private' || (!isEd && !isP256)) {
    throw new TesseraError('TESSERA_CSR_KEY_UNSUPPORTED', 'CSR key must be a P-256 or Ed25519 private key');
  }
  if (publicKey?.type !== 'public' || !publicKey.equals(createPublicKey(privateKey))) {
    throw new TesseraError('TESSERA_INTERNAL', 'publicKey does not match privateKey');
  }
  const subject =
    opts.commonName === undefined ? derSequence() : derSequence(derSet(derSequence(derOid(OID.commonName), derUtf8String(opts.commonName))));
  const attributes: Buffer[] = [];
  if (opts.uriSan !== undefined) {
    const uri = derIa5String(opts.uriSan);
    uri[0] = 0x86; // [6] IMPLICIT IA5String
    const san = derSequence(derOid(OID.subjectAltName), ...(opts.commonName === undefined ? [derBoolean(true)] : []), derOctetString(derSequence(uri)));
    attributes.push(derSequence(derOid(OID_EXTENSION_REQUEST), derSet(derSequence(san))));
  }
  const info = derSequence(derInteger(0n), subject, spkiDer(publicKey), derConstructed(0xa0, attributes));
  const algId = derSequence(derOid(isEd ? OID.ed25519 : OID.ecdsaWithSha256));
  const sig = sign(isEd ? null : 'sha256', info, privateKey);
  return derSequence(info, algId, derBitString(sig));
}

function invalid(message: string): TesseraError {
  return new TesseraError(INVALID, message);
}

/** Structural check of a Name: SEQUENCE OF SET OF SEQUENCE { OID, value }. */
function checkName(der: Buffer, name: Tlv): void {
  expectTag(name, TAG.SEQUENCE, INVALID);
  for (const rdn of readChildren(der, name, INVALID)) {
    expectTag(rdn, TAG.SET, INVALID);
    const atvs = readChildren(der, rdn, INVALID);
    if (atvs.length === 0) throw invalid('empty RDN in CSR subject');
    for (const atv of atvs) {
      expectTag(atv, TAG.SEQUENCE, INVALID);
      const parts = readChildren(der, atv, INVALID);
      if (parts.length !== 2) throw invalid('malformed CSR subject');
      decodeOid(parts[0] as Tlv, INVALID);
    }
  }
}

type KeyType = ParsedCsr['keyType'];

/** Classifies the SubjectPublicKeyInfo before importing it. */
function classifyKey(der: Buffer, spki: Tlv): { keyType: KeyType; bits: Buffer } {
  expectTag(spki, TAG.SEQUENCE, INVALID);
  const parts = readChildren(der, spki, INVALID);
  const alg = parts[0];
  if (parts.length !== 2 || alg === undefined) throw invalid('malformed CSR public key');
  expectTag(alg, TAG.SEQUENCE, INVALID);
  const { unusedBits, bytes: bits } = decodeBitString(parts[1] as Tlv, INVALID);
  if (unusedBits !== 0) throw invalid('malformed CSR public key');
  const algParts = readChildren(der, alg, INVALID);
  if (algParts.length === 0 || algParts.length > 2) throw invalid('malformed CSR public key algorithm');
  const oid = decodeOid(algParts[0] as Tlv, INVALID);
  const params = algParts[1];
  if (oid === OID.ed25519) {
    if (params !== undefined) throw invalid('Ed25519 key algorithm must not have parameters');
    return { keyType: 'ed25519', bits };
  }
  if (oid === OID.ecPublicKey && params !== undefined && params.tag === TAG.OID && decodeOid(params, INVALID) === OID.prime256v1) {
    return { keyType: 'p256', bits };
  }
  // RSA, other curves (P-384, P-521, secp256k1, explicit parameters), Ed448, DSA, ...
  throw new TesseraError('TESSERA_CSR_KEY_UNSUPPORTED');
}

/**
 * Imports the key. Canonical encodings (an uncompressed P-256 point, a 32-byte Ed25519 key) go
 * through JWK, which validates the point just the same and skips OpenSSL 3's slow DER decoder
 * (~70 vs ~120 us for P-256, ~12 vs ~80 us for Ed25519); anything else through the SPKI DER.
 * The canonical SPKI is remembered for the new KeyObject, so issuing a certificate for it does not
 * re-encode the key.
 */
function importKey(keyType: KeyType, bits: Buffer, spki: Buffer): KeyObject {
  try {
    if (keyType === 'p256' && bits.length === 65 && bits[0] === 0x04) {
      const x = bits.subarray(1, 33).toString('base64url');
      const y = bits.subarray(33).toString('base64url');
      const key = createPublicKey({ key: { kty: 'EC', crv: 'P-256', x, y }, format: 'jwk' });
      rememberSpki(key, 'p256', bits);
      return key;
    }
    if (keyType === 'ed25519' && bits.length === 32) {
      const key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: bits.toString('base64url') }, format: 'jwk' });
      rememberSpki(key, 'ed25519', bits);
      return key;
    }
    return createPublicKey({ key: spki, format: 'der', type: 'spki' });
  } catch {
    throw invalid('CSR public key cannot be imported');
  }
}

/**
 * Parses a DER CSR (at most 8 KiB) and verifies its self-signature.
 * TESSERA_CSR_INVALID: malformed or non-DER, trailing bytes, version != 0, a signature algorithm
 * other than ecdsa-with-SHA256 / Ed25519, malformed extensionRequest.
 * TESSERA_CSR_KEY_UNSUPPORTED: a key other than P-256 / Ed25519.
 * TESSERA_CSR_SIGNATURE_INVALID: signature algorithm not matching the key, or a bad signature.
 */
export function parseCsr(der: Buffer | Uint8Array): ParsedCsr {
  if (!(der instanceof Uint8Array)) throw invalid('CSR must be bytes');
  if (der.length > MAX_CSR_BYTES) throw invalid('CSR too large');
  const buf = Buffer.isBuffer(der) ? der : Buffer.from(der.buffer, der.byteOffset, der.byteLength);

  const top = readDer(buf, INVALID, TAG.SEQUENCE);
  const outer = readChildren(buf, top, INVALID);
  const [info, sigAlg, sigBits] = outer;
  if (outer.length !== 3 || info === undefined || sigAlg === undefined || sigBits === undefined) throw invalid('malformed CSR');
  expectTag(info, TAG.SEQUENCE, INVALID);
  expectTag(sigAlg, TAG.SEQUENCE, INVALID);
  const signature = decodeBitString(sigBits, INVALID);
  if (signature.unusedBits !== 0) throw invalid('CSR signature has unused bits');

  // CertificationRequestInfo
  const fields = readChildren(buf, info, INVALID);
  const [version, subject, spki, attrs] = fields;
  if (fields.length !== 4 || version === undefined || subject === undefined || spki === undefined || attrs === undefined) {
    throw invalid('malformed CSR info');
  }
  if (decodeInteger(version, INVALID) !== 0n) throw invalid('CSR version must be 0');
  checkName(buf, subject);
  expectTag(attrs, 0xa0, INVALID);
  const sans = parseAttributes(buf, attrs);

  // Signature algorithm (structure here; ecdsa-with-SHA256 and Ed25519 take no parameters).
  const algParts = readChildren(buf, sigAlg, INVALID);
  if (algParts.length === 0 || algParts.length > 2) throw invalid('malformed CSR signature algorithm');
  const sigOid = decodeOid(algParts[0] as Tlv, INVALID);
  const sigParams = algParts.length === 2;

  // Key: classify from the DER first (an unsupported key wins over its matching signature
  // algorithm, e.g. RSA), then import and double-check what node sees.
  const { keyType, bits } = classifyKey(buf, spki);
  if ((sigOid !== OID.ecdsaWithSha256 && sigOid !== OID.ed25519) || sigParams) throw invalid('unexpected CSR signature algorithm');
  const publicKey = importKey(keyType, bits, buf.subarray(spki.start, spki.end));
  const nodeType =
    publicKey.asymmetricKeyType === 'ed25519'
      ? 'ed25519'
      : publicKey.asymmetricKeyType === 'ec' && publicKey.asymmetricKeyDetails?.namedCurve === 'prime256v1'
        ? 'p256'
        : undefined;
  if (nodeType !== keyType) throw new TesseraError('TESSERA_CSR_KEY_UNSUPPORTED');

  if ((keyType === 'p256') !== (sigOid === OID.ecdsaWithSha256)) {
    throw new TesseraError('TESSERA_CSR_SIGNATURE_INVALID', 'CSR signature algorithm does not match its key');
  }
  let ok = false;
  try {
    ok = verify(keyType === 'p256' ? 'sha256' : null, buf.subarray(info.start, info.end), publicKey, signature.bytes);
  } catch {
    ok = false;
  }
  if (!ok) throw new TesseraError('TESSERA_CSR_SIGNATURE_INVALID');
  return { publicKey, keyType, uriSans: sans.uris, dnsSans: sans.dns };
}

/** attributes [0] IMPLICIT SET OF Attribute; only extensionRequest is interpreted. */
function parseAttributes(buf: Buffer, attrs: Tlv): { uris: string[]; dns: string[] } {
  let result: { uris: string[]; dns: string[] } = { uris: [], dns: [] };
  let seenExtReq = false;
  for (const attr of readChildren(buf, attrs, INVALID)) {
    expectTag(attr, TAG.SEQUENCE, INVALID);
    const parts = readChildren(buf, attr, INVALID);
    const [type, values] = parts;
    if (parts.length !== 2 || type === undefined || values === undefined) throw invalid('malformed CSR attribute');
    expectTag(values, TAG.SET, INVALID);
    const vals = readChildren(buf, values, INVALID);
    if (decodeOid(type, INVALID) !== OID_EXTENSION_REQUEST) continue;
    if (seenExtReq || vals.length !== 1) throw invalid('CSR must have at most one extensionRequest with one value');
    seenExtReq = true;
    result = parseExtensions(buf, vals[0] as Tlv);
  }
  return result;
}

function parseExtensions(buf: Buffer, exts: Tlv): { uris: string[]; dns: string[] } {
  expectTag(exts, TAG.SEQUENCE, INVALID);
  const seen = new Set<string>();
  let result: { uris: string[]; dns: string[] } = { uris: [], dns: [] };
  for (const ext of readChildren(buf, exts, INVALID)) {
    expectTag(ext, TAG.SEQUENCE, INVALID);
    const parts = readChildren(buf, ext, INVALID);
    const oidTlv = parts[0];
    const valueTlv = parts[parts.length - 1];
    if (parts.length < 2 || parts.length > 3 || oidTlv === undefined || valueTlv === undefined) throw invalid('malformed CSR extension');
    const oid = decodeOid(oidTlv, INVALID);
    if (parts.length === 3) decodeBoolean(parts[1] as Tlv, INVALID);
    const value = decodeOctetString(valueTlv, INVALID);
    if (seen.has(oid)) throw invalid('duplicate CSR extension');
    seen.add(oid);
    if (oid === OID.subjectAltName) result = parseGeneralNames(value, INVALID);
  }
  return result;
}

/**
 * Parses a PEM CSR: the input must hold exactly one PEM block, labelled CERTIFICATE REQUEST
 * (any other block, such as a private key pasted alongside, is refused). Errors as
 * {@link parseCsr}; PEM problems are TESSERA_CSR_INVALID.
 */
export function parseCsrPem(pem: string): ParsedCsr {
  if (typeof pem !== 'string' || pem.length > MAX_CSR_PEM_CHARS) throw invalid('CSR PEM missing or too large');
  let blocks;
  try {
    blocks = pemDecodeBlocks(pem);
  } catch {
    throw invalid('CSR PEM is malformed');
  }
  const block = blocks[0];
  if (blocks.length !== 1 || block === undefined || block.label !== 'CERTIFICATE REQUEST') {
    throw invalid('expected exactly one CERTIFICATE REQUEST PEM block');
  }
  return parseCsr(block.der);
}
