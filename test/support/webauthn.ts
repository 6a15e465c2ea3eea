/**
 * A software WebAuthn authenticator for tests: builds real registration (attestation `none`) and
 * assertion responses with a node:crypto P-256 key, per WebAuthn L2 §6.1 (authenticator data),
 * §6.5.4 (`none` attestation), §6.3.3 (assertion signature over authData ‖ SHA-256(clientDataJSON)),
 * and RFC 9052/9053 (COSE_Key EC2). Its CBOR encoder is its own (RFC 8949 §3, the few types used),
 * so the verifier under test is not checked against itself.
 */
import { createHash, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';

type Cbor = number | string | Buffer | Map<Cbor, Cbor> | Cbor[];

function head(major: number, n: number): Buffer {
  if (n < 24) return Buffer.of((major << 5) | n);
  if (n < 0x100) return Buffer.of((major << 5) | 24, n);
  if (n < 0x10000) return Buffer.concat([Buffer.of((major << 5) | 25), Buffer.from([n >> 8, n & 0xff])]);
  const b = Buffer.alloc(5);
  b[0] = (major << 5) | 26;
  b.writeUInt32BE(n, 1);
  return b;
}

export function cbor(v: Cbor): Buffer {
  if (typeof v === 'number') return v >= 0 ? head(0, v) : head(1, -1 - v);
  if (typeof v === 'string') return Buffer.concat([head(3, Buffer.byteLength(v)), Buffer.from(v)]);
  if (Buffer.isBuffer(v)) return Buffer.concat([head(2, v.length), v]);
  if (Array.isArray(v)) return Buffer.concat([head(4, v.length), ...v.map(cbor)]);
  return Buffer.concat([head(5, v.size), ...[...v].flatMap(([k, x]) => [cbor(k), cbor(x)])]);
}

const sha256 = (b: Buffer | string): Buffer => createHash('sha256').update(b).digest();
const b64u = (b: Buffer): string => b.toString('base64url');

export interface ClientOverrides {
  origin?: string;
  type?: string;
  rpId?: string;
  /** Flags byte of the authenticator data (default UP | UV). */
  flags?: number;
  /** Force this signature counter. */
  counter?: number;
  userHandle?: string | null;
}

/** One credential of a software authenticator (a passkey), with its own signature counter. */
export class SoftPasskey {
  readonly id = randomBytes(16);
  private readonly key: KeyObject;
  private readonly pub: KeyObject;
  counter = 0;
  userHandle = '';

  constructor() {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    this.key = privateKey;
    this.pub = publicKey;
  }

  get idB64(): string {
    return b64u(this.id);
  }

  private coseKey(): Buffer {
    const jwk = this.pub.export({ format: 'jwk' });
    // COSE_Key: kty EC2 (2), alg ES256 (-7), crv P-256 (1), x, y (RFC 9053 §7.1.1).
    return cbor(new Map<Cbor, Cbor>([[1, 2], [3, -7], [-1, 1], [-2, Buffer.from(jwk.x!, 'base64url')], [-3, Buffer.from(jwk.y!, 'base64url')]]));
  }

  private authData(rpId: string, flags: number, counter: number, attested?: Buffer): Buffer {
    const c = Buffer.alloc(4);
    c.writeUInt32BE(counter);
    return Buffer.concat([sha256(rpId), Buffer.of(flags), c, ...(attested ? [attested] : [])]);
  }

  /** A registration response to `options` (PublicKeyCredentialCreationOptionsJSON). */
  register(options: { challenge: string; rp: { id?: string }; user: { id: string } }, origin: string, o: ClientOverrides = {}): Record<string, unknown> {
    const rpId = o.rpId ?? options.rp.id!;
    this.userHandle = options.user.id;
    const clientData = Buffer.from(JSON.stringify({ type: o.type ?? 'webauthn.create', challenge: options.challenge, origin: o.origin ?? origin, crossOrigin: false }));
    const idLen = Buffer.alloc(2);
    idLen.writeUInt16BE(this.id.length);
    const attested = Buffer.concat([Buffer.alloc(16), idLen, this.id, this.coseKey()]);
    // Flags: UP (0x01) | UV (0x04) | AT (0x40).
    const authData = this.authData(rpId, o.flags ?? 0x45, o.counter ?? this.counter, attested);
    const attestationObject = cbor(new Map<Cbor, Cbor>([['fmt', 'none'], ['attStmt', new Map()], ['authData', authData]]));
    return {
      id: this.idB64, rawId: this.idB64, type: 'public-key', clientExtensionResults: {},
      response: { clientDataJSON: b64u(clientData), attestationObject: b64u(attestationObject), transports: ['internal'] },
    };
  }

  /** An assertion for `options` (PublicKeyCredentialRequestOptionsJSON); the counter goes up by one. */
  assert(options: { challenge: string; rpId?: string }, origin: string, o: ClientOverrides = {}): Record<string, unknown> {
    const rpId = o.rpId ?? options.rpId!;
    this.counter = o.counter ?? this.counter + 1;
    const clientData = Buffer.from(JSON.stringify({ type: o.type ?? 'webauthn.get', challenge: options.challenge, origin: o.origin ?? origin, crossOrigin: false }));
    const authData = this.authData(rpId, o.flags ?? 0x05, this.counter);
    const signature = sign('sha256', Buffer.concat([authData, sha256(clientData)]), this.key);
    const handle = o.userHandle === undefined ? this.userHandle : o.userHandle;
    return {
      id: this.idB64, rawId: this.idB64, type: 'public-key', clientExtensionResults: {},
      response: { clientDataJSON: b64u(clientData), authenticatorData: b64u(authData), signature: b64u(signature), ...(handle === null ? {} : { userHandle: handle }) },
    };
  }
}
