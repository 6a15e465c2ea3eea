/**
 * The key server's shares: one per (secret policy, key epoch), sealed at rest with the
 * key-encryption key (AES-256-GCM, AAD `share:<policy>:<epoch>`), one 0600 file each under
 * `<dataDir>/shares/` (0700). K_i = k_i·G is precomputed per share for the DLEQ proofs.
 *
 * Nothing here logs, and no error message carries share material.
 */
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { TesseraError } from '../core/errors.js';
import { ensurePrivateDir, writeFileAtomic } from '../core/files.js';
import { MAX_SHARES, baseMul, decodePoint, decodeScalar, isSecretPolicyId, pointEquals, verifyShare, type Point, type Scalar } from '../core/secrets/index.js';
import type { KeyEncryptionKey } from '../server/ca/kek.js';

export interface StoredShare {
  policyId: string;
  epoch: number;
  t: number;
  n: number;
  index: number;
  value: Scalar;
  commitments: Point[];
}

/** A share as held in memory, with its public share K_i = value·G. */
export interface ShareEntry extends StoredShare {
  K: Point;
}

const FILE_VERSION = 1;
const MAX_EPOCH = 0xffffffff;

export function shareAad(policyId: string, epoch: number): string {
  return `share:${policyId}:${epoch}`;
}

function key(policyId: string, epoch: number): string {
  return `${policyId}\u0000${epoch}`;
}

function invalid(message: string): TesseraError {
  return new TesseraError('TESSERA_SECRET_SHARE_INVALID', message);
}

/** Structural and Feldman checks; returns a normalized copy. Throws TESSERA_SECRET_SHARE_INVALID. */
export function checkShare(s: StoredShare): StoredShare {
  if (typeof s !== 'object' || s === null) throw invalid('a share must be an object');
  if (!isSecretPolicyId(s.policyId)) throw invalid('the policy id must be 1..64 of [a-z0-9._-]');
  if (!Number.isInteger(s.epoch) || s.epoch < 0 || s.epoch > MAX_EPOCH) throw invalid('the key epoch must be an integer in 0..2^32-1');
  if (!Number.isInteger(s.n) || s.n < 1 || s.n > MAX_SHARES) throw invalid(`n must be an integer in 1..${MAX_SHARES}`);
  if (!Number.isInteger(s.t) || s.t < 1 || s.t > s.n) throw invalid('t must be an integer in 1..n');
  if (!Number.isInteger(s.index) || s.index < 1 || s.index > s.n) throw invalid('the share index must be an integer in 1..n');
  if (!Array.isArray(s.commitments) || s.commitments.length !== s.t) throw invalid('there must be exactly t commitments');
  let value: Scalar;
  let commitments: Point[];
  try {
    value = decodeScalar(s.value);
    commitments = s.commitments.map((c) => decodePoint(c));
  } catch {
    throw invalid('the share value or a commitment is not a canonical encoding');
  }
  if (!verifyShare({ index: s.index, value }, commitments)) throw invalid('the share does not match its commitments');
  return { policyId: s.policyId, epoch: s.epoch, t: s.t, n: s.n, index: s.index, value, commitments };
}

function encode(s: StoredShare): Buffer {
  return Buffer.from(JSON.stringify({
    policyId: s.policyId, epoch: s.epoch, t: s.t, n: s.n, index: s.index,
    value: Buffer.from(s.value).toString('base64url'),
    commitments: s.commitments.map((c) => Buffer.from(c).toString('base64url')),
  }));
}

function decode(plain: Buffer): StoredShare {
  const o = JSON.parse(plain.toString('utf8')) as Record<string, unknown>;
  const b = (v: unknown): Uint8Array => {
    if (typeof v !== 'string') throw invalid('malformed share file');
    return new Uint8Array(Buffer.from(v, 'base64url'));
  };
  return {
    policyId: o.policyId as string, epoch: o.epoch as number, t: o.t as number, n: o.n as number, index: o.index as number,
    value: b(o.value),
    commitments: Array.isArray(o.commitments) ? o.commitments.map(b) : [],
  };
}

export class ShareStore {
  private readonly shares = new Map<string, ShareEntry>();
  private readonly dir: string;

  private constructor(dataDir: string, private readonly kek: KeyEncryptionKey) {
    this.dir = join(dataDir, 'shares');
  }

  /**
   * Opens (creating `<dataDir>/shares`) and loads every share. A file that does not open with the
   * key-encryption key throws TESSERA_KEK_INVALID; one that opens but fails its checks throws
   * TESSERA_SECRET_SHARE_INVALID: a key server refuses to start on a damaged store.
   */
  static open(dataDir: string, kek: KeyEncryptionKey): ShareStore {
    const store = new ShareStore(dataDir, kek);
    ensurePrivateDir(store.dir);
    for (const name of readdirSync(store.dir).sort()) {
      if (!name.endsWith('.json') || name.startsWith('.')) continue;
      store.load(join(store.dir, name), name);
    }
    return store;
  }

  private load(file: string, name: string): void {
    if ((statSync(file).mode & 0o077) !== 0) {
      throw new TesseraError('TESSERA_CONFIG_INVALID', `${file} must not be readable by group or others (chmod 600)`);
    }
    let outer: { version?: unknown; policyId?: unknown; epoch?: unknown; sealed?: unknown };
    try {
      outer = JSON.parse(readFileSync(file, 'utf8')) as typeof outer;
    } catch {
      throw invalid(`share file ${name} is not JSON`);
    }
    if (outer.version !== FILE_VERSION || !isSecretPolicyId(outer.policyId) || typeof outer.epoch !== 'number' || typeof outer.sealed !== 'string'
      || name !== `${outer.policyId}.${outer.epoch}.json`) {
      throw invalid(`share file ${name} is malformed`);
    }
    const plain = this.kek.open(Buffer.from(outer.sealed, 'base64'), shareAad(outer.policyId, outer.epoch));
    let share: StoredShare;
    try {
      share = checkShare(decode(plain));
    } finally {
      plain.fill(0);
    }
    if (share.policyId !== outer.policyId || share.epoch !== outer.epoch) throw invalid(`share file ${name} does not match its name`);
    this.shares.set(key(share.policyId, share.epoch), { ...share, K: baseMul(share.value) });
  }

  /**
   * Installs a share after checking it against its commitments. An existing (policy, epoch) is only
   * replaced by a refresh: new commitments with the same C_0 (the same policy key). Anything else is
   * TESSERA_CONFLICT. Returns whether it was new.
   */
  put(input: StoredShare): { created: boolean } {
    const share = checkShare(input);
    const k = key(share.policyId, share.epoch);
    const existing = this.shares.get(k);
    if (existing && !pointEquals(existing.commitments[0]!, share.commitments[0]!)) {
      throw new TesseraError('TESSERA_CONFLICT', 'a share with other commitments is already installed for this policy and epoch');
    }
    const sealed = this.kek.seal(encode(share), shareAad(share.policyId, share.epoch));
    const file = join(this.dir, `${share.policyId}.${share.epoch}.json`);
    writeFileAtomic(file, `${JSON.stringify({ version: FILE_VERSION, policyId: share.policyId, epoch: share.epoch, sealed: sealed.toString('base64') })}\n`, 0o600);
    this.shares.set(k, { ...share, K: baseMul(share.value) });
    if (existing) existing.value.fill(0);
    return { created: existing === undefined };
  }

  get(policyId: string, epoch: number): ShareEntry | undefined {
    return this.shares.get(key(policyId, epoch));
  }

  /** Public facts only (no share values). */
  list(): { policyId: string; epoch: number; t: number; n: number; index: number }[] {
    return [...this.shares.values()].map(({ policyId, epoch, t, n, index }) => ({ policyId, epoch, t, n, index }));
  }

  get directory(): string {
    return this.dir;
  }

  static exists(dataDir: string): boolean {
    return existsSync(join(dataDir, 'shares'));
  }
}
