/**
 * Test-only issuance of leaves that break one X509-SVID rule each, signed by a real (trusted)
 * test CA so that OpenSSL's chain check passes and the peer check itself must refuse them.
 * The production issuer (src/core/x509.ts) cannot make these on purpose; this writes the DER
 * with the same writer (src/core/der.ts) and signs it with node:crypto.
 */
import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import {
  TAG,
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
  readChildren,
  readDer,
} from '../../src/core/der.js';
import type { SvidRefusal } from '../../src/core/x509-svid.js';
import { KEY_USAGE, OID, pemEncode, spkiDer } from '../../src/core/x509.js';

export interface TestCa {
  certDer: Buffer;
  privateKey: KeyObject;
}

export interface OddLeafSpec {
  uris?: string[];
  dns?: string[];
  ips?: string[];
  /** basicConstraints cA; 'absent' leaves the extension out. Default false. */
  cA?: boolean | 'absent';
  /** A KEY_USAGE mask, or 'absent'. Default digitalSignature. */
  keyUsage?: number | 'absent';
  notBefore?: number;
  notAfter?: number;
}

export interface TestLeaf {
  der: Buffer;
  certPem: string;
  key: KeyObject;
  keyPem: string;
  serial: string;
}

const HOUR = 3_600_000;

function ext(oid: string, critical: boolean, value: Buffer): Buffer {
  return critical ? derSequence(derOid(oid), derBoolean(true), derOctetString(value)) : derSequence(derOid(oid), derOctetString(value));
}

/** KEY_USAGE mask to the DER BIT STRING (named bits: trailing zero bits dropped, X.690 11.2.2). */
function keyUsageBits(mask: number): Buffer {
  let last = -1;
  for (let b = 0; b <= 8; b++) if ((mask & (1 << b)) !== 0) last = b;
  if (last < 0) return derBitString(Buffer.alloc(0));
  const bytes = Buffer.alloc((last >> 3) + 1);
  for (let b = 0; b <= last; b++) if ((mask & (1 << b)) !== 0) bytes[b >> 3]! |= 0x80 >> (b & 7);
  return derBitString(bytes, 7 - (last & 7));
}

let serialCounter = 0x4000;

/** A P-256 leaf signed by `ca` (a P-256 CA) with exactly the given oddities. */
export function issueOddLeaf(ca: TestCa, spec: OddLeafSpec): TestLeaf {
  const now = Date.now();
  const k = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const caTbs = readChildren(ca.certDer, readChildren(ca.certDer, readDer(ca.certDer, 'TESSERA_INTERNAL', TAG.SEQUENCE))[0]!);
  const caSubject = caTbs[caTbs[0]!.tag === 0xa0 ? 5 : 4]!;
  const issuerName = ca.certDer.subarray(caSubject.start, caSubject.end);
  const exts: Buffer[] = [];
  const cA = spec.cA ?? false;
  if (cA !== 'absent') exts.push(ext(OID.basicConstraints, true, cA ? derSequence(derBoolean(true)) : derSequence()));
  const ku = spec.keyUsage ?? KEY_USAGE.digitalSignature;
  if (ku !== 'absent') exts.push(ext(OID.keyUsage, true, keyUsageBits(ku)));
  exts.push(ext(OID.extKeyUsage, false, derSequence(derOid(OID.serverAuth), derOid(OID.clientAuth))));
  const names: Buffer[] = [];
  for (const u of spec.uris ?? []) { const t = derIa5String(u); t[0] = 0x86; names.push(t); }
  for (const d of spec.dns ?? []) { const t = derIa5String(d); t[0] = 0x82; names.push(t); }
  for (const ip of spec.ips ?? []) names.push(derTlv(0x87, Buffer.from(ip.split('.').map(Number))));
  if (names.length > 0) exts.push(ext(OID.subjectAltName, false, derSequence(...names)));
  const serial = Buffer.alloc(8);
  serial.writeUInt32BE(0x10000000 + serialCounter++, 4);
  serial[0] = 0x5a;
  const tbs = derSequence(
    derContext(0, derInteger(2n), true),
    derInteger(serial),
    derSequence(derOid(OID.ecdsaWithSha256)),
    issuerName,
    derSequence(derTime(new Date(spec.notBefore ?? now - 60_000)), derTime(new Date(spec.notAfter ?? now + HOUR))),
    derSequence(derSet(derSequence(derOid(OID.commonName), derUtf8String('svid-defect-test')))),
    spkiDer(k.publicKey),
    derContext(3, derSequence(...exts), true),
  );
  const der = derSequence(tbs, derSequence(derOid(OID.ecdsaWithSha256)), derBitString(sign('sha256', tbs, ca.privateKey)));
  return {
    der,
    certPem: pemEncode(der, 'CERTIFICATE'),
    key: k.privateKey,
    keyPem: k.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string,
    serial: serial.toString('hex').toUpperCase(),
  };
}

export interface SvidDefect {
  name: string;
  spec: OddLeafSpec;
  /** What verifyPeerSvid says about it. */
  reason: SvidRefusal;
  /**
   * True when OpenSSL's own handshake checks refuse it first (validity window), so a sidecar
   * counts it as a handshake failure rather than an identity refusal.
   */
  tlsRefuses: boolean;
}

/**
 * One leaf spec per X509-SVID rule, each otherwise a good SVID for `id` (in trust domain `td`).
 */
export function svidDefects(td: string, id: string): SvidDefect[] {
  const now = Date.now();
  const d = (name: string, spec: OddLeafSpec, reason: SvidRefusal, tlsRefuses = false): SvidDefect => ({ name, spec: { uris: [id], ...spec }, reason, tlsRefuses });
  return [
    d('a keyCertSign leaf', { keyUsage: KEY_USAGE.digitalSignature | KEY_USAGE.keyCertSign }, 'keyUsage has keyCertSign'),
    d('a cRLSign leaf', { keyUsage: KEY_USAGE.digitalSignature | KEY_USAGE.cRLSign }, 'keyUsage has cRLSign'),
    d('a leaf without keyUsage', { keyUsage: 'absent' }, 'no keyUsage'),
    d('a leaf whose keyUsage lacks digitalSignature', { keyUsage: KEY_USAGE.keyAgreement }, 'keyUsage lacks digitalSignature'),
    d('a leaf with cA=true', { cA: true }, 'CA certificate'),
    d('a leaf with two URI SANs', { uris: [id, `spiffe://${td}/second`] }, 'more than one URI SAN'),
    d('a leaf without a URI SAN', { uris: [], dns: ['peer.example'] }, 'no URI SAN'),
    d('a leaf whose URI SAN is not a SPIFFE ID', { uris: [`https://${td}/x`] }, 'URI SAN is not a SPIFFE ID'),
    d('a leaf with the bare trust-domain ID', { uris: [`spiffe://${td}`] }, 'trust-domain ID without a path'),
    d('a leaf of another trust domain', { uris: [`spiffe://other-${td}/x`] }, 'other trust domain'),
    d('an expired leaf', { notBefore: now - 2 * HOUR, notAfter: now - HOUR }, 'expired', true),
    d('a not-yet-valid leaf', { notBefore: now + HOUR, notAfter: now + 2 * HOUR }, 'not yet valid', true),
  ];
}
