/**
 * The key server's shares: one per (secret policy, key epoch), sealed at rest with the
 * key-encryption key (AES-256-GCM, AAD `share:<policy>:<epoch>`), one 0600 file each under
 * `<dataDir>/shares/` (0700). K_i = k_i·G is precomputed per share for the DLEQ proofs.
 *
 * A share refresh is two-phase: `prepareRefresh` keeps the next generation beside the current one
 * (`<policy>.<epoch>.next.json`) and both answer, each when asked for its generation; once the
 * control plane has published the new generation, `commitRefresh` makes it current and deletes
 * the old share (wiped in memory, its file replaced). `abortRefresh` drops a prepared generation.
 *
 * Nothing here logs, and no error message carries share material.
 */
import { timingSafeEqual } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { TesseraError } from '../core/errors.js';
import { ensurePrivateDir, writeFileAtomic } from '../core/files.js';
import { MAX_SHARES, SECRET_POLICY_ID_RULE, applyRefresh, baseMul, decodePoint, decodeScalar, isSecretPolicyId, pointEquals, verifyShare, type Point, type Scalar } from '../core/secrets/index.js';
import type { KeyEncryptionKey } from '../common/kek.js';

export interface StoredShare {
  policyId: string;
  epoch: number;
  /** Share generation: 1 when dealt, +1 per refresh. Absent in files written before refreshes existed (= 1). */
  generation?: number;
  t: number;
  n: number;
  index: number;
  value: Scalar;
  commitments: Point[];
}

/** A share as held in memory, with its public share K_i = value·G. */
export interface ShareEntry extends StoredShare {
  generation: number;
  K: Point;
}

/** Public facts about a held share (no share value). */
export interface ShareInfo {
  policyId: string;
  epoch: number;
  generation: number;
  t: number;
  n: number;
  index: number;
  /** The prepared next generation, if a refresh is under way. */
  pending?: number;
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
export function checkShare(s: StoredShare): StoredShare & { generation: number } {
  if (typeof s !== 'object' || s === null) throw invalid('a share must be an object');
  if (!isSecretPolicyId(s.policyId)) throw invalid(`the policy id must be ${SECRET_POLICY_ID_RULE}`);
  if (!Number.isInteger(s.epoch) || s.epoch < 0 || s.epoch > MAX_EPOCH) throw invalid('the key epoch must be an integer in 0..2^32-1');
  const generation = s.generation ?? 1;
  if (!Number.isInteger(generation) || generation < 1 || generation > MAX_EPOCH) throw invalid('the share generation must be an integer in 1..2^32-1');
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
  return { policyId: s.policyId, epoch: s.epoch, generation, t: s.t, n: s.n, index: s.index, value, commitments };
}

function encode(s: StoredShare): Buffer {
  return Buffer.from(JSON.stringify({
    policyId: s.policyId, epoch: s.epoch, generation: s.generation ?? 1, t: s.t, n: s.n, index: s.index,
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
    ...(o.generation === undefined ? {} : { generation: o.generation as number }),
    value: b(o.value),
    commitments: Array.isArray(o.commitments) ? o.commitments.map(b) : [],
  };
}

export class ShareStore {
  private readonly shares = new Map<string, ShareEntry>();
  private readonly pending = new Map<string, ShareEntry>();
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
    for (const [k, p] of store.pending) {
      const cur = store.shares.get(k);
      if (!cur || p.generation !== cur.generation + 1 || !pointEquals(p.commitments[0]!, cur.commitments[0]!) || p.index !== cur.index) {
        throw invalid(`the prepared refresh of ${p.policyId} epoch ${p.epoch} does not follow its current share`);
      }
    }
    return store;
  }

  private fileOf(policyId: string, epoch: number, next: boolean): string {
    return join(this.dir, `${policyId}.${epoch}${next ? '.next' : ''}.json`);
  }

  private load(file: string, name: string): void {
    if ((statSync(file).mode & 0o077) !== 0) {
      throw new TesseraError('TESSERA_CONFIG_INVALID', `${file} must not be readable by group or others (chmod 600)`);
    }
    let outer: { version?: unknown; policyId?: unknown; epoch?: unknown; sealed?: unknown; next?: unknown };
    try {
      outer = JSON.parse(readFileSync(file, 'utf8')) as typeof outer;
    } catch {
      throw invalid(`share file ${name} is not JSON`);
    }
    const next = outer.next === true;
    if (outer.version !== FILE_VERSION || !isSecretPolicyId(outer.policyId) || typeof outer.epoch !== 'number' || typeof outer.sealed !== 'string'
      || (outer.next !== undefined && outer.next !== true) || name !== `${outer.policyId}.${outer.epoch}${next ? '.next' : ''}.json`) {
      throw invalid(`share file ${name} is malformed`);
    }
    const plain = this.kek.open(Buffer.from(outer.sealed, 'base64'), shareAad(outer.policyId, outer.epoch));
    let share: StoredShare & { generation: number };
    try {
      share = checkShare(decode(plain));
    } finally {
      plain.fill(0);
    }
    if (share.policyId !== outer.policyId || share.epoch !== outer.epoch) throw invalid(`share file ${name} does not match its name`);
    (next ? this.pending : this.shares).set(key(share.policyId, share.epoch), { ...share, K: baseMul(share.value) });
  }

  private write(share: StoredShare & { generation: number }, next: boolean): void {
    const sealed = this.kek.seal(encode(share), shareAad(share.policyId, share.epoch));
    writeFileAtomic(this.fileOf(share.policyId, share.epoch, next), `${JSON.stringify({ version: FILE_VERSION, policyId: share.policyId, epoch: share.epoch, ...(next ? { next: true } : {}), sealed: sealed.toString('base64') })}\n`, 0o600);
  }

  /**
   * Installs a dealt share (generation 1) after checking it against its commitments. Installing
   * the very same share again is a no-op ({created: false}); any other share for an existing
   * (policy, epoch) is TESSERA_CONFLICT: a new key is a new epoch, new shares of the same key a refresh.
   */
  put(input: StoredShare): { created: boolean } {
    const share = checkShare({ ...input, generation: input.generation ?? 1 });
    const k = key(share.policyId, share.epoch);
    const existing = this.shares.get(k);
    if (existing) {
      const same = existing.generation === share.generation && existing.index === share.index && equalBytes(existing.value, share.value)
        && existing.commitments.length === share.commitments.length && existing.commitments.every((c, j) => pointEquals(c, share.commitments[j]!));
      share.value.fill(0);
      if (same) return { created: false };
      throw new TesseraError('TESSERA_CONFLICT', 'another share is already installed for this policy and epoch');
    }
    this.write(share, false);
    this.shares.set(k, { ...share, K: baseMul(share.value) });
    return { created: true };
  }

  /** The current share of (policy, epoch). */
  get(policyId: string, epoch: number): ShareEntry | undefined {
    return this.shares.get(key(policyId, epoch));
  }

  /** The share of (policy, epoch) at `generation`: the current one, or the prepared next one. */
  getGeneration(policyId: string, epoch: number, generation: number): ShareEntry | undefined {
    const k = key(policyId, epoch);
    const cur = this.shares.get(k);
    if (cur?.generation === generation) return cur;
    const next = this.pending.get(k);
    return next?.generation === generation ? next : undefined;
  }

  /**
   * Phase one of a refresh: applies the dealer's delta (checked against D) to the current share of
   * generation `from`, and keeps the result as generation from + 1 beside it. Preparing the same
   * generation again replaces a prepared one (a dealer that retries after a failure deals anew).
   * TESSERA_NOT_FOUND (no share), TESSERA_CONFLICT (not at `from`), TESSERA_SECRET_SHARE_INVALID.
   */
  prepareRefresh(policyId: string, epoch: number, from: number, delta: Scalar, D: Point[]): { generation: number; index: number; commitments: Point[] } {
    const k = key(policyId, epoch);
    const cur = this.shares.get(k);
    if (!cur) throw new TesseraError('TESSERA_NOT_FOUND', 'no key share for this policy and epoch');
    if (cur.generation !== from) throw new TesseraError('TESSERA_CONFLICT', `this key server holds share generation ${cur.generation}, not ${from}`);
    const out = applyRefresh({ index: cur.index, value: cur.value }, cur.commitments, { index: cur.index, value: delta }, D);
    const next = checkShare({ policyId, epoch, generation: from + 1, t: cur.t, n: cur.n, index: cur.index, value: out.share.value, commitments: out.commitments });
    out.share.value.fill(0);
    this.write(next, true);
    this.pending.get(k)?.value.fill(0);
    this.pending.set(k, { ...next, K: baseMul(next.value) });
    return { generation: next.generation, index: next.index, commitments: next.commitments };
  }

  /**
   * Phase two: the prepared generation becomes current and the old share is deleted, once the
   * commitments match what was published. Committing the current generation again is a no-op.
   * TESSERA_NOT_FOUND (nothing prepared), TESSERA_CONFLICT (other commitments or generation).
   */
  commitRefresh(policyId: string, epoch: number, generation: number, commitments: Point[]): { committed: boolean } {
    const k = key(policyId, epoch);
    const cur = this.shares.get(k);
    const sameCommitments = (e: ShareEntry): boolean => e.commitments.length === commitments.length && e.commitments.every((c, j) => pointEquals(c, commitments[j]!));
    if (cur && cur.generation === generation && sameCommitments(cur)) return { committed: false };
    const next = this.pending.get(k);
    if (cur && cur.generation === generation) throw new TesseraError('TESSERA_CONFLICT', 'the current share generation has other commitments');
    if (!cur || !next || next.generation !== generation) throw new TesseraError('TESSERA_NOT_FOUND', `no prepared share generation ${generation} for this policy and epoch`);
    if (!sameCommitments(next)) throw new TesseraError('TESSERA_CONFLICT', 'the published commitments are not those of the prepared share');
    // The new share replaces the old one's file atomically; the prepared file goes after.
    this.write(next, false);
    rmSync(this.fileOf(policyId, epoch, true), { force: true });
    this.shares.set(k, next);
    this.pending.delete(k);
    cur.value.fill(0);
    return { committed: true };
  }

  /**
   * A key-generation commit (src/keyserver/dkg.ts): `input` becomes the current share of its
   * (policy, epoch), replacing the current one only if that is at generation `replaces`
   * (`undefined`: there must be none), and dropping any prepared refresh. The new share is written
   * first (atomically over the old file), then the old value is wiped. Committing the very same
   * share again is a no-op ({committed: false}).
   * TESSERA_CONFLICT when the current share is not the one the session started from;
   * TESSERA_SECRET_SHARE_INVALID when the share does not match its commitments.
   */
  replaceCurrent(input: StoredShare & { generation: number }, replaces: number | undefined): { committed: boolean } {
    const share = checkShare(input);
    const k = key(share.policyId, share.epoch);
    const cur = this.shares.get(k);
    if (cur && cur.generation === share.generation && cur.index === share.index && equalBytes(cur.value, share.value)
      && cur.commitments.length === share.commitments.length && cur.commitments.every((c, j) => pointEquals(c, share.commitments[j]!))) {
      share.value.fill(0);
      return { committed: false };
    }
    if ((cur?.generation) !== replaces) {
      share.value.fill(0);
      throw new TesseraError('TESSERA_CONFLICT', 'the share of this policy and epoch changed since the key generation started');
    }
    this.write(share, false);
    this.abortRefresh(share.policyId, share.epoch);
    this.shares.set(k, { ...share, K: baseMul(share.value) });
    cur?.value.fill(0);
    return { committed: true };
  }

  /**
   * A reshare that leaves this server out: deletes the share of (policy, epoch) if it is still at
   * `generation`. Returns whether it deleted one; TESSERA_CONFLICT if another generation is current.
   */
  deleteGeneration(policyId: string, epoch: number, generation: number): boolean {
    const cur = this.shares.get(key(policyId, epoch));
    if (cur === undefined) return false;
    if (cur.generation !== generation) throw new TesseraError('TESSERA_CONFLICT', 'the share of this policy and epoch changed since the key generation started');
    return this.delete(policyId, epoch);
  }

  /** Drops a prepared generation (a refresh that was not published). Returns whether there was one. */
  abortRefresh(policyId: string, epoch: number): boolean {
    const k = key(policyId, epoch);
    const next = this.pending.get(k);
    if (!next) return false;
    rmSync(this.fileOf(policyId, epoch, true), { force: true });
    this.pending.delete(k);
    next.value.fill(0);
    return true;
  }

  /**
   * Deletes the share of (policy, epoch) and any prepared one: a retired epoch, or a dealing that
   * was not published. Returns whether anything was deleted.
   */
  delete(policyId: string, epoch: number): boolean {
    const k = key(policyId, epoch);
    const cur = this.shares.get(k);
    const hadPending = this.abortRefresh(policyId, epoch);
    if (!cur) return hadPending;
    rmSync(this.fileOf(policyId, epoch, false), { force: true });
    this.shares.delete(k);
    cur.value.fill(0);
    return true;
  }

  /** Public facts only (no share values). */
  list(): ShareInfo[] {
    return [...this.shares.entries()].map(([k, { policyId, epoch, generation, t, n, index }]) => {
      const p = this.pending.get(k);
      return { policyId, epoch, generation, t, n, index, ...(p ? { pending: p.generation } : {}) };
    });
  }

  get directory(): string {
    return this.dir;
  }

  static exists(dataDir: string): boolean {
    return existsSync(join(dataDir, 'shares'));
  }
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}
