/**
 * X.509 certificate issuance on a fixed DER layout (X509-SVID leaves, CA certificates) and the few
 * certificate reads Tessera needs. Everything that depends only on the issuer (its Name, the
 * AuthorityKeyIdentifier, the signature AlgorithmIdentifier, the constant leaf extensions) is
 * encoded once; a leaf costs a handful of small Buffer concatenations, one SHA-256 and one
 * node:crypto signature.
 */
import { createHash, createPublicKey, randomFillSync, sign, type KeyObject } from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';
import {
  TAG,
  decodeBitString,
  decodeBoolean,
  decodeIa5String,
  decodeOid,
  decodeOctetString,
  decodeInteger,
  decodeTime,
  derBitString,
  derBoolean,
  derContext,
  derIa5String,
  derInteger,
  derOctetString,
  derOid,
  derSequence,
  derSet,
  derTime,
  derTlv,
  derUtf8String,
  expectTag,
  readChildren,
  readDer,
  type Tlv,
} from './der.js';
import { TesseraError, type ErrorCode } from './errors.js';

/** The issuing CA: its certificate (for its subject Name and key identifier) and private key. */
export interface IssuerMaterial {
  certDer: Buffer;
  privateKey: KeyObject;
}

export interface LeafSpec {
  /** Subject public key (P-256 or Ed25519 in practice; any public KeyObject is encoded). */
  publicKey: KeyObject;
  notBefore: Date;
  notAfter: Date;
  /** X509-SVID: exactly one URI SAN (the caller validates the SPIFFE ID). */
  uriSans?: string[];
  dnsSans?: string[];
  /** IPv4 or IPv6 literals. */
  ipSans?: string[];
  /** Unsigned big-endian serial, 1-20 octets, not zero. Default: 16 random bytes. */
  serial?: Buffer;
  /** Default: empty subject, in which case the SAN extension is marked critical. */
  subject?: { commonName?: string; organization?: string };
}

export interface CaSpec {
  publicKey: KeyObject;
  commonName: string;
  organization?: string;
  /** `spiffe://<trust-domain>`: the signing certificate's own SPIFFE ID (URI SAN). */
  trustDomainUri?: string;
  notBefore: Date;
  notAfter: Date;
  /** basicConstraints pathLenConstraint; default 0 (may only issue leaves). */
  pathLen?: number;
  serial?: Buffer;
}

export const OID = {
  ecPublicKey: '1.2.840.10045.2.1',
  prime256v1: '1.2.840.10045.3.1.7',
  ed25519: '1.3.101.112',
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  commonName: '2.5.4.3',
  organization: '2.5.4.10',
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  authorityKeyIdentifier: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
} as const;

// ---------------------------------------------------------------------------------------------
// Constant pieces
// ---------------------------------------------------------------------------------------------

const VERSION_V3 = derContext(0, derInteger(2n), true);
const EMPTY_NAME = derSequence();

function extension(oid: string, critical: boolean, value: Buffer): Buffer {
  return critical ? derSequence(derOid(oid), derBoolean(true), derOctetString(value)) : derSequence(derOid(oid), derOctetString(value));
}

/** basicConstraints CA:false (critical), keyUsage digitalSignature (critical), EKU serverAuth+clientAuth. */
const LEAF_STATIC_EXTENSIONS = Buffer.concat([
  extension(OID.basicConstraints, true, derSequence()),
  extension(OID.keyUsage, true, derBitString(Buffer.from([0x80]), 7)),
  extension(OID.extKeyUsage, false, derSequence(derOid(OID.serverAuth), derOid(OID.clientAuth))),
]);

/** keyUsage keyCertSign + cRLSign (bits 5 and 6), critical. */
const CA_KEY_USAGE = extension(OID.keyUsage, true, derBitString(Buffer.from([0x06]), 1));

// ---------------------------------------------------------------------------------------------
// Signers
// ---------------------------------------------------------------------------------------------

interface Signer {
  key: KeyObject;
  /** 'sha256' for ECDSA P-256, null for Ed25519. */
  digest: 'sha256' | null;
  algId: Buffer;
}

const ECDSA_SHA256_ALG = derSequence(derOid(OID.ecdsaWithSha256));
const ED25519_ALG = derSequence(derOid(OID.ed25519));

function signerFor(privateKey: KeyObject, code: ErrorCode): Signer {
  if (privateKey?.type !== 'private') throw new TesseraError(code, 'issuer key must be a private KeyObject');
  if (privateKey.asymmetricKeyType === 'ed25519') return { key: privateKey, digest: null, algId: ED25519_ALG };
  if (privateKey.asymmetricKeyType === 'ec' && privateKey.asymmetricKeyDetails?.namedCurve === 'prime256v1') {
    return { key: privateKey, digest: 'sha256', algId: ECDSA_SHA256_ALG };
  }
  throw new TesseraError(code, 'issuer key must be P-256 ECDSA or Ed25519');
}

function signCertificate(signer: Signer, tbs: Buffer): Buffer {
  const sig = sign(signer.digest, tbs, signer.key);
  return derSequence(tbs, signer.algId, derBitString(sig));
}

// ---------------------------------------------------------------------------------------------
// Issuer
// ---------------------------------------------------------------------------------------------

interface IssuerState {
  signer: Signer;
  nameDer: Buffer;
  akiExtension: Buffer;
}

function loadIssuer(issuer: IssuerMaterial): IssuerState {
  const code: ErrorCode = 'TESSERA_CONFIG_INVALID';
  const signer = signerFor(issuer.privateKey, code);
  if (!(issuer.certDer instanceof Uint8Array)) throw new TesseraError(code, 'issuer certificate must be DER bytes');
  const cert = parseCertificateParts(Buffer.from(issuer.certDer), code);
  let certKey: KeyObject;
  try {
    certKey = createPublicKey({ key: cert.spkiDer, format: 'der', type: 'spki' });
  } catch {
    throw new TesseraError(code, 'issuer certificate public key cannot be imported');
  }
  if (!certKey.equals(createPublicKey(issuer.privateKey))) {
    throw new TesseraError(code, 'issuer private key does not match the issuer certificate');
  }
  const bc = cert.extensions.get(OID.basicConstraints);
  if (bc === undefined || !decodeBasicConstraints(bc.value, code).cA) {
    throw new TesseraError(code, 'issuer certificate is not a CA (basicConstraints cA is not true)');
  }
  const ski = cert.extensions.get(OID.subjectKeyIdentifier);
  const keyId = ski !== undefined ? decodeOctetString(readDer(ski.value, code), code) : keyIdentifier(cert.spkiDer, code);
  return {
    signer,
    nameDer: cert.subjectDer,
    akiExtension: extension(OID.authorityKeyIdentifier, false, derSequence(derContext(0, keyId, false))),
  };
}

/**
 * Issues X509-SVID leaves (and, through {@link createIntermediateCa}, CA certificates) for one CA.
 * Build once per CA key; the constructor validates the material (TESSERA_CONFIG_INVALID if the
 * certificate is malformed, not a CA, or does not match the private key).
 */
export class CertificateIssuer {
  readonly #state: IssuerState;

  constructor(issuer: IssuerMaterial) {
    this.#state = loadIssuer(issuer);
  }

  /**
   * An X509-SVID leaf: v3, basicConstraints CA:false (critical), keyUsage digitalSignature
   * (critical), extKeyUsage serverAuth+clientAuth, SKI, AKI, SAN (critical when the subject is
   * empty). Invalid specs (no SAN with an empty subject, bad IP literal, non-ASCII URI/DNS name,
   * bad serial, notAfter before notBefore, private key as publicKey) throw TESSERA_INTERNAL:
   * the caller is expected to have validated them.
   */
  issueLeaf(spec: LeafSpec): Buffer {
    const st = this.#state;
    const spki = spkiOf(spec.publicKey);
    const subject = spec.subject === undefined ? EMPTY_NAME : encodeName(spec.subject.commonName, spec.subject.organization);
    const emptySubject = subject.length === 2;
    const san = encodeGeneralNames(spec.uriSans, spec.dnsSans, spec.ipSans);
    if (san === undefined && emptySubject) throw new TesseraError('TESSERA_INTERNAL', 'a certificate with an empty subject needs a SAN');
    const exts = [LEAF_STATIC_EXTENSIONS, extension(OID.subjectKeyIdentifier, false, derOctetString(keyIdentifier(spki))), st.akiExtension];
    if (san !== undefined) exts.push(extension(OID.subjectAltName, emptySubject, san));
    const tbs = derSequence(
      VERSION_V3,
      encodeSerial(spec.serial),
      st.signer.algId,
      st.nameDer,
      encodeValidity(spec.notBefore, spec.notAfter),
      subject,
      spki,
      derContext(3, derSequence(...exts), true),
    );
    return signCertificate(st.signer, tbs);
  }
}

function issueCa(signer: Signer, issuerName: Buffer | undefined, aki: Buffer | undefined, spec: CaSpec): Buffer {
  const pathLen = spec.pathLen ?? 0;
  if (!Number.isSafeInteger(pathLen) || pathLen < 0) throw new TesseraError('TESSERA_INTERNAL', 'pathLen must be a non-negative integer');
  if (typeof spec.commonName !== 'string' || spec.commonName === '') throw new TesseraError('TESSERA_INTERNAL', 'a CA needs a commonName');
  const spki = spkiOf(spec.publicKey);
  const subject = encodeName(spec.commonName, spec.organization);
  const keyId = keyIdentifier(spki);
  const exts = [
    extension(OID.basicConstraints, true, derSequence(derBoolean(true), derInteger(BigInt(pathLen)))),
    CA_KEY_USAGE,
    extension(OID.subjectKeyIdentifier, false, derOctetString(keyId)),
    aki ?? extension(OID.authorityKeyIdentifier, false, derSequence(derContext(0, keyId, false))),
  ];
  if (spec.trustDomainUri !== undefined) {
    const san = encodeGeneralNames([spec.trustDomainUri], undefined, undefined);
    if (san !== undefined) exts.push(extension(OID.subjectAltName, false, san));
  }
  const tbs = derSequence(
    VERSION_V3,
    encodeSerial(spec.serial),
    signer.algId,
    issuerName ?? subject,
    encodeValidity(spec.notBefore, spec.notAfter),
    subject,
    spki,
    derContext(3, derSequence(...exts), true),
  );
  return signCertificate(signer, tbs);
}

/**
 * A self-signed root: basicConstraints CA:true with pathLen (critical), keyUsage keyCertSign +
 * cRLSign (critical), SKI (= AKI), and the trust domain's SPIFFE ID as URI SAN when given.
 */
export function createSelfSignedCa(opts: CaSpec & { privateKey: KeyObject }): Buffer {
  const signer = signerFor(opts.privateKey, 'TESSERA_INTERNAL');
  if (opts.publicKey?.type !== 'public' || !opts.publicKey.equals(createPublicKey(opts.privateKey))) {
    throw new TesseraError('TESSERA_INTERNAL', 'publicKey does not match privateKey');
  }
  return issueCa(signer, undefined, undefined, opts);
}

/** An intermediate CA signed by `issuer` (same extensions as the root, AKI = issuer's key id). */
export function createIntermediateCa(issuer: IssuerMaterial, opts: CaSpec): Buffer {
  const st = loadIssuer(issuer);
  return issueCa(st.signer, st.nameDer, st.akiExtension, opts);
}

// ---------------------------------------------------------------------------------------------
// Encoding helpers
// ---------------------------------------------------------------------------------------------

/** SubjectPublicKeyInfo prefixes up to the key bits (P-256 including the 0x04 uncompressed-point marker). */
const P256_SPKI_PREFIX = Buffer.from('3059301306072a8648ce3d020106082a8648ce3d03010703420004', 'hex');
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

/** SPKI encodings already known for a KeyObject (KeyObjects are immutable). */
const spkiCache = new WeakMap<KeyObject, Buffer>();

/**
 * @internal Records the SPKI of a key just imported from its raw bits (parseCsr does this so that
 * issuing a certificate for the CSR's key skips re-encoding it): `bits` is the uncompressed P-256
 * point (65 octets, 0x04 first) or the 32-octet Ed25519 key that `publicKey` was created from.
 */
export function rememberSpki(publicKey: KeyObject, kind: 'p256' | 'ed25519', bits: Buffer): void {
  if (kind === 'p256' && bits.length === 65 && bits[0] === 0x04) {
    spkiCache.set(publicKey, Buffer.concat([P256_SPKI_PREFIX.subarray(0, 26), bits], 91));
  } else if (kind === 'ed25519' && bits.length === 32) {
    spkiCache.set(publicKey, Buffer.concat([ED25519_SPKI_PREFIX, bits], 44));
  }
}

/**
 * SubjectPublicKeyInfo DER of a public key: the same bytes as
 * `publicKey.export({ type: 'spki', format: 'der' })`, but P-256 and Ed25519 keys are assembled
 * from their JWK coordinates, which is ~15x cheaper than OpenSSL 3's DER encoder.
 */
export function spkiDer(publicKey: KeyObject): Buffer {
  const known = spkiCache.get(publicKey);
  return known !== undefined ? Buffer.from(known) : encodeSpki(publicKey);
}

function encodeSpki(publicKey: KeyObject): Buffer {
  if (publicKey.type === 'public') {
    const t = publicKey.asymmetricKeyType;
    if (t === 'ec' && publicKey.asymmetricKeyDetails?.namedCurve === 'prime256v1') {
      const jwk = publicKey.export({ format: 'jwk' });
      const x = Buffer.from(jwk.x ?? '', 'base64url');
      const y = Buffer.from(jwk.y ?? '', 'base64url');
      if (x.length === 32 && y.length === 32) return Buffer.concat([P256_SPKI_PREFIX, x, y], 91);
    } else if (t === 'ed25519') {
      const x = Buffer.from(publicKey.export({ format: 'jwk' }).x ?? '', 'base64url');
      if (x.length === 32) return Buffer.concat([ED25519_SPKI_PREFIX, x], 44);
    }
  }
  return publicKey.export({ type: 'spki', format: 'der' });
}

function spkiOf(publicKey: KeyObject): Buffer {
  if (publicKey?.type !== 'public') throw new TesseraError('TESSERA_INTERNAL', 'publicKey must be a public KeyObject');
  return spkiCache.get(publicKey) ?? encodeSpki(publicKey);
}

/** RFC 7093 section 2 method 1: leftmost 160 bits of SHA-256 over the subjectPublicKey bits. */
function keyIdentifier(spki: Buffer, code: ErrorCode = 'TESSERA_INTERNAL'): Buffer {
  const seq = readDer(spki, code, TAG.SEQUENCE);
  const parts = readChildren(spki, seq, code);
  const bits = parts[1];
  if (parts.length !== 2 || bits === undefined) throw new TesseraError(code, 'malformed SubjectPublicKeyInfo');
  return createHash('sha256').update(decodeBitString(bits, code).bytes).digest().subarray(0, 20);
}

/**
 * Random serials are cut from a 4 KiB block of CSPRNG output: one randomFillSync per 256 serials
 * instead of one per certificate (a small randomBytes call costs about as much as a tenth of an
 * ECDSA signature). Each slice is used once.
 */
const SERIAL_POOL = Buffer.alloc(16 * 256);
let serialPoolOffset = SERIAL_POOL.length;

function randomSerial(): Buffer {
  if (serialPoolOffset === SERIAL_POOL.length) {
    randomFillSync(SERIAL_POOL);
    serialPoolOffset = 0;
  }
  // INTEGER tag, length 16, then 16 random octets made positive and non-zero with the top bits
  // 01: always exactly 16 octets, 126 random bits.
  const out = Buffer.allocUnsafe(18);
  out[0] = TAG.INTEGER;
  out[1] = 16;
  SERIAL_POOL.copy(out, 2, serialPoolOffset, serialPoolOffset + 16);
  SERIAL_POOL.fill(0, serialPoolOffset, serialPoolOffset + 16);
  serialPoolOffset += 16;
  out[2] = ((out[2] as number) & 0x3f) | 0x40;
  return out;
}

function encodeSerial(serial: Buffer | undefined): Buffer {
  if (serial === undefined) return randomSerial();
  if (!(serial instanceof Uint8Array) || serial.length === 0 || serial.length > 20 || serial.every((x) => x === 0)) {
    throw new TesseraError('TESSERA_INTERNAL', 'serial must be 1-20 octets and not zero');
  }
  const enc = derInteger(serial);
  if (enc.length - 2 > 20) throw new TesseraError('TESSERA_INTERNAL', 'serial must encode in at most 20 octets');
  return enc;
}

function encodeValidity(notBefore: Date, notAfter: Date): Buffer {
  if (!(notBefore instanceof Date) || !(notAfter instanceof Date) || !(notAfter.getTime() >= notBefore.getTime())) {
    throw new TesseraError('TESSERA_INTERNAL', 'validity must satisfy notBefore <= notAfter');
  }
  return derSequence(derTime(notBefore), derTime(notAfter));
}

function encodeName(commonName: string | undefined, organization: string | undefined): Buffer {
  const rdns: Buffer[] = [];
  if (organization !== undefined) rdns.push(derSet(derSequence(derOid(OID.organization), derUtf8String(organization))));
  if (commonName !== undefined) rdns.push(derSet(derSequence(derOid(OID.commonName), derUtf8String(commonName))));
  return derSequence(...rdns);
}

/** GeneralNames or undefined when there is no name at all. */
function encodeGeneralNames(uris: string[] | undefined, dns: string[] | undefined, ips: string[] | undefined): Buffer | undefined {
  const names: Buffer[] = [];
  for (const u of uris ?? []) names.push(retag(derIa5String(u), 0x86));
  for (const d of dns ?? []) names.push(retag(derIa5String(d), 0x82));
  for (const ip of ips ?? []) names.push(derTlv(0x87, ipBytes(ip)));
  return names.length === 0 ? undefined : derSequence(...names);
}

/** Replaces the identifier octet of a freshly built TLV (IMPLICIT tagging of a primitive). */
function retag(tlv: Buffer, tag: number): Buffer {
  tlv[0] = tag;
  return tlv;
}

function ipBytes(ip: string): Buffer {
  if (typeof ip === 'string' && isIPv4(ip)) return Buffer.from(ip.split('.').map(Number));
  if (typeof ip === 'string' && !ip.includes('%') && isIPv6(ip)) return ipv6Bytes(ip);
  throw new TesseraError('TESSERA_INTERNAL', 'ipSans entries must be IPv4 or IPv6 literals');
}

/** `ip` has already passed net.isIPv6 (so its syntax is valid). */
function ipv6Bytes(ip: string): Buffer {
  const out = Buffer.alloc(16);
  let s = ip;
  const lastColon = s.lastIndexOf(':');
  const last = s.slice(lastColon + 1);
  if (last.includes('.')) {
    // Embedded IPv4 (e.g. ::ffff:192.0.2.1): parse as two zero groups, then fill the last 4 bytes.
    out.set(last.split('.').map(Number), 12);
    s = `${s.slice(0, lastColon + 1)}0:0`;
  }
  const halves = s.split('::');
  const groups = (part: string | undefined): number[] => (part === undefined || part === '' ? [] : part.split(':').map((g) => parseInt(g, 16)));
  const head = groups(halves[0]);
  const tail = groups(halves[1]);
  const all = halves.length === 1 ? head : [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  for (let i = 0; i < 8; i++) {
    const g = all[i] ?? 0;
    if (i < 6 || !last.includes('.')) out.writeUInt16BE(g, i * 2);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// PEM
// ---------------------------------------------------------------------------------------------

export type PemLabel = 'CERTIFICATE' | 'CERTIFICATE REQUEST' | 'PRIVATE KEY' | 'PUBLIC KEY';

export function pemEncode(der: Buffer, label: PemLabel): string {
  const b64 = Buffer.from(der).toString('base64');
  const lines: string[] = [`-----BEGIN ${label}-----`];
  for (let i = 0; i < b64.length; i += 64) lines.push(b64.slice(i, i + 64));
  lines.push(`-----END ${label}-----`, '');
  return lines.join('\n');
}

export interface PemBlock {
  label: string;
  der: Buffer;
}

const PEM_BOUNDARY_RE = /-----(BEGIN|END) ([\x21-\x2c\x2e-\x7e](?:[\x20-\x2c\x2e-\x7e]*[\x21-\x2c\x2e-\x7e])?)?-----/g;
const B64_BODY_RE = /^[A-Za-z0-9+/]*={0,2}$/;

/**
 * Every PEM block in `pem`, in order. Text outside blocks is ignored (RFC 7468 explanatory text);
 * inside, BEGIN/END must pair with the same label and the body must be canonical base64.
 * Garbage throws TESSERA_BAD_REQUEST.
 */
export function pemDecodeBlocks(pem: string): PemBlock[] {
  if (typeof pem !== 'string') throw new TesseraError('TESSERA_BAD_REQUEST', 'PEM input must be a string');
  const blocks: PemBlock[] = [];
  let open: { label: string; bodyStart: number } | undefined;
  PEM_BOUNDARY_RE.lastIndex = 0;
  for (let m = PEM_BOUNDARY_RE.exec(pem); m !== null; m = PEM_BOUNDARY_RE.exec(pem)) {
    const label = m[2] ?? '';
    if (m[1] === 'BEGIN') {
      if (open !== undefined) throw new TesseraError('TESSERA_BAD_REQUEST', 'PEM: BEGIN inside a block');
      open = { label, bodyStart: m.index + m[0].length };
      continue;
    }
    if (open === undefined || open.label !== label) throw new TesseraError('TESSERA_BAD_REQUEST', 'PEM: unmatched END line');
    const body = pem.slice(open.bodyStart, m.index).replace(/[ \t\r\n]+/g, '');
    if (body.length === 0 || body.length % 4 !== 0 || !B64_BODY_RE.test(body)) {
      throw new TesseraError('TESSERA_BAD_REQUEST', 'PEM: invalid base64 body');
    }
    const der = Buffer.from(body, 'base64');
    if (der.toString('base64') !== body) throw new TesseraError('TESSERA_BAD_REQUEST', 'PEM: non-canonical base64 body');
    blocks.push({ label, der });
    open = undefined;
  }
  if (open !== undefined) throw new TesseraError('TESSERA_BAD_REQUEST', 'PEM: unterminated block');
  return blocks;
}

/** The DER of every block labelled `label` (other blocks are validated, then skipped). */
export function pemDecodeAll(pem: string, label: string): Buffer[] {
  return pemDecodeBlocks(pem)
    .filter((b) => b.label === label)
    .map((b) => b.der);
}

// ---------------------------------------------------------------------------------------------
// Reading certificates
// ---------------------------------------------------------------------------------------------

interface CertificateParts {
  /** The serialNumber INTEGER and the Validity SEQUENCE, undecoded (offsets in the certificate). */
  serial: Tlv;
  validity: Tlv;
  subjectDer: Buffer;
  spkiDer: Buffer;
  extensions: Map<string, { critical: boolean; value: Buffer }>;
}

/** Splits a certificate into the parts Tessera uses, checking the overall structure. */
function parseCertificateParts(der: Buffer, code: ErrorCode): CertificateParts {
  const cert = readDer(der, code, TAG.SEQUENCE);
  const top = readChildren(der, cert, code);
  const tbs = top[0];
  if (top.length !== 3 || tbs === undefined) throw new TesseraError(code, 'malformed certificate');
  expectTag(tbs, TAG.SEQUENCE, code);
  expectTag(top[1] as Tlv, TAG.SEQUENCE, code);
  expectTag(top[2] as Tlv, TAG.BIT_STRING, code);
  const fields = readChildren(der, tbs, code);
  // version [0] EXPLICIT is present in every v3 certificate; tolerate its absence (v1).
  const i = fields[0]?.tag === 0xa0 ? 1 : 0;
  const serial = fields[i];
  const subject = fields[i + 4];
  const spki = fields[i + 5];
  if (serial === undefined || subject === undefined || spki === undefined) throw new TesseraError(code, 'malformed certificate');
  expectTag(serial, TAG.INTEGER, code);
  expectTag(fields[i + 1] as Tlv, TAG.SEQUENCE, code);
  expectTag(fields[i + 2] as Tlv, TAG.SEQUENCE, code);
  expectTag(fields[i + 3] as Tlv, TAG.SEQUENCE, code);
  expectTag(subject, TAG.SEQUENCE, code);
  expectTag(spki, TAG.SEQUENCE, code);
  const extensions = new Map<string, { critical: boolean; value: Buffer }>();
  for (const f of fields.slice(i + 6)) {
    if (f.tag === 0x81 || f.tag === 0x82) continue; // issuerUniqueID / subjectUniqueID
    if (f.tag !== 0xa3) throw new TesseraError(code, 'malformed certificate');
    const list = readDer(f.value, code, TAG.SEQUENCE);
    for (const ext of readChildren(f.value, list, code)) {
      expectTag(ext, TAG.SEQUENCE, code);
      const parts = readChildren(f.value, ext, code);
      const oidTlv = parts[0];
      const last = parts[parts.length - 1];
      if (oidTlv === undefined || last === undefined || parts.length < 2 || parts.length > 3) {
        throw new TesseraError(code, 'malformed certificate extension');
      }
      const oid = decodeOid(oidTlv, code);
      const critical = parts.length === 3 ? decodeBoolean(parts[1] as Tlv, code) : false;
      if (extensions.has(oid)) throw new TesseraError(code, 'duplicate certificate extension');
      extensions.set(oid, { critical, value: decodeOctetString(last, code) });
    }
  }
  return {
    serial,
    validity: fields[i + 3] as Tlv,
    subjectDer: der.subarray(subject.start, subject.end),
    spkiDer: der.subarray(spki.start, spki.end),
    extensions,
  };
}

/** otherName, rfc822Name, dNSName, x400Address, directoryName, ediPartyName, URI, iPAddress, registeredID. */
const GENERAL_NAME_TAGS = new Set([0xa0, 0x81, 0x82, 0xa3, 0xa4, 0xa5, 0x86, 0x87, 0x88]);

/** URI and DNS names of a GeneralNames value (other name forms are structurally checked, then skipped). */
export function parseGeneralNames(value: Buffer, code: ErrorCode): { uris: string[]; dns: string[] } {
  const seq = readDer(value, code, TAG.SEQUENCE);
  const uris: string[] = [];
  const dns: string[] = [];
  const names = readChildren(value, seq, code);
  if (names.length === 0) throw new TesseraError(code, 'empty subjectAltName');
  for (const n of names) {
    if (n.tag === 0x86) uris.push(decodeIa5String(n, code, 0x86));
    else if (n.tag === 0x82) dns.push(decodeIa5String(n, code, 0x82));
    else if (!GENERAL_NAME_TAGS.has(n.tag)) throw new TesseraError(code, 'malformed subjectAltName');
  }
  return { uris, dns };
}

/**
 * The URI SANs of a DER certificate, read from the subjectAltName extension itself (not from
 * node's ambiguous subjectAltName string). No SAN extension gives []. Anything malformed throws
 * TESSERA_AUTH_INVALID. Does not verify the signature: use it on certificates already verified.
 */
export function certificateUriSans(certDer: Buffer): string[] {
  const code: ErrorCode = 'TESSERA_AUTH_INVALID';
  const parts = parseCertificateParts(asCertDer(certDer, code), code);
  const san = parts.extensions.get(OID.subjectAltName);
  return san === undefined ? [] : parseGeneralNames(san.value, code).uris;
}

/** Lowercase hex SHA-256 of a certificate's DER: how a bundle names its signer. */
export function certificateFingerprint(certDer: Buffer): string {
  return createHash('sha256').update(certDer).digest('hex');
}

function asCertDer(certDer: Uint8Array, code: ErrorCode): Buffer {
  if (!(certDer instanceof Uint8Array)) throw new TesseraError(code, 'certificate must be DER bytes');
  return Buffer.isBuffer(certDer) ? certDer : Buffer.from(certDer.buffer, certDer.byteOffset, certDer.byteLength);
}

/** keyUsage bits as a mask: RFC 5280 §4.2.1.3 numbers them from the first (most significant) bit. */
export const KEY_USAGE = {
  digitalSignature: 1 << 0,
  nonRepudiation: 1 << 1,
  keyEncipherment: 1 << 2,
  dataEncipherment: 1 << 3,
  keyAgreement: 1 << 4,
  keyCertSign: 1 << 5,
  cRLSign: 1 << 6,
  encipherOnly: 1 << 7,
  decipherOnly: 1 << 8,
} as const;

/**
 * The keyUsage extension value (RFC 5280 §4.2.1.3, a BIT STRING) as a {@link KEY_USAGE} mask.
 * Bits past decipherOnly are ignored; trailing zero bits (which DER would have dropped) are
 * tolerated, since they change nothing. Malformed input throws a TesseraError with `code`.
 */
export function decodeKeyUsage(value: Buffer, code: ErrorCode): number {
  const { bytes } = decodeBitString(readDer(value, code), code);
  // A KeyUsage has 9 named bits; more than a few octets is not a KeyUsage.
  if (bytes.length > 4) throw new TesseraError(code, 'malformed keyUsage');
  let mask = 0;
  for (let bit = 0; bit <= 8; bit++) {
    const byte = bytes[bit >> 3];
    if (byte !== undefined && (byte & (0x80 >> (bit & 7))) !== 0) mask |= 1 << bit;
  }
  return mask;
}

/**
 * The basicConstraints extension value (RFC 5280 §4.2.1.9): `SEQUENCE { cA BOOLEAN DEFAULT
 * FALSE, pathLenConstraint INTEGER (0..MAX) OPTIONAL }`. An explicit `cA FALSE` (which DER
 * would omit) is read as false. Malformed input throws a TesseraError with `code`.
 */
export function decodeBasicConstraints(value: Buffer, code: ErrorCode): { cA: boolean; pathLen: number | undefined } {
  const seq = readDer(value, code, TAG.SEQUENCE);
  const items = readChildren(value, seq, code);
  let i = 0;
  let cA = false;
  if (items[0]?.tag === TAG.BOOLEAN) {
    cA = decodeBoolean(items[0], code);
    i = 1;
  }
  let pathLen: number | undefined;
  const pl = items[i];
  if (pl !== undefined) {
    const n = decodeInteger(pl, code);
    if (n < 0n || n > 0xffffffffn) throw new TesseraError(code, 'malformed basicConstraints');
    pathLen = Number(n);
    i++;
  }
  if (i !== items.length) throw new TesseraError(code, 'malformed basicConstraints');
  return { cA, pathLen };
}

/** What an X509-SVID check reads from a leaf (see src/core/x509-svid.ts). */
export interface LeafFields {
  /** The serial as node's X509Certificate.serialNumber prints it: uppercase hex, no leading 00 octets. */
  serial: string;
  /** Milliseconds since the epoch. */
  notBefore: number;
  notAfter: number;
  uris: string[];
  /** undefined when the certificate has no basicConstraints extension. */
  cA: boolean | undefined;
  /** {@link KEY_USAGE} mask; undefined when the certificate has no keyUsage extension. */
  keyUsage: number | undefined;
}

/**
 * Reads, in one pass over the DER, the fields a peer-certificate check needs. Anything malformed
 * throws TESSERA_AUTH_INVALID (and nothing else). Does not verify the signature.
 */
export function readLeafFields(certDer: Buffer): LeafFields {
  const code: ErrorCode = 'TESSERA_AUTH_INVALID';
  const der = asCertDer(certDer, code);
  const parts = parseCertificateParts(der, code);
  const times = readChildren(der, parts.validity, code);
  if (times.length !== 2) throw new TesseraError(code, 'malformed certificate validity');
  const san = parts.extensions.get(OID.subjectAltName);
  const bc = parts.extensions.get(OID.basicConstraints);
  const ku = parts.extensions.get(OID.keyUsage);
  return {
    serial: serialHex(parts.serial, code),
    notBefore: decodeTime(times[0] as Tlv, code).getTime(),
    notAfter: decodeTime(times[1] as Tlv, code).getTime(),
    uris: san === undefined ? [] : parseGeneralNames(san.value, code).uris,
    cA: bc === undefined ? undefined : decodeBasicConstraints(bc.value, code).cA,
    keyUsage: ku === undefined ? undefined : decodeKeyUsage(ku.value, code),
  };
}

/** Node prints a serial with OpenSSL's BN_bn2hex: the magnitude's octets in uppercase hex, "-" when negative. */
function serialHex(serial: Tlv, code: ErrorCode): string {
  const v = serial.value;
  if (v.length === 0) throw new TesseraError(code, 'malformed serial number');
  if (((v[0] as number) & 0x80) !== 0) {
    const n = -decodeInteger(serial, code);
    const hex = n.toString(16).toUpperCase();
    return `-${hex.length % 2 === 1 ? `0${hex}` : hex}`;
  }
  // DER INTEGERs are minimal (X.690 8.3.2): at most one 00 octet, and only before a high bit.
  if (v.length > 1 && v[0] === 0 && ((v[1] as number) & 0x80) === 0) throw new TesseraError(code, 'malformed serial number');
  if (v.length === 1 && v[0] === 0) return '0';
  return v.subarray(v[0] === 0 ? 1 : 0).toString('hex').toUpperCase();
}
