/**
 * The Merkle tree of the audit log, as RFC 9162 §2.1 defines it for Certificate Transparency 2.0
 * (the same tree as RFC 6962, C2SP tlog-checkpoint and golang.org/x/mod/sumdb/tlog):
 *
 * - leaf hash `SHA-256(0x00 ‖ data)`, interior node `SHA-256(0x01 ‖ left ‖ right)`, the empty tree's
 *   root `SHA-256("")` (§2.1.1);
 * - {@link MerkleFrontier}: the constant-memory appender of the write path (the "compact range":
 *   one hash per set bit of the size), serializable so the control plane can resume it;
 * - {@link inclusionProof} / {@link consistencyProof} (§2.1.3.1 / §2.1.4.1) over a
 *   {@link LeafHashSource} (the SQLite audit table), and their verifiers {@link verifyInclusion} /
 *   {@link verifyConsistency} (§2.1.3.2 / §2.1.4.2), which never throw: bad input is `false`.
 *
 * Pure code: no I/O. Sizes and indexes are JavaScript numbers, exact up to 2^53 − 1, so no bitwise
 * operators (32-bit) are used on them.
 *
 * @example
 * const f = new MerkleFrontier();
 * for (const record of records) f.append(leafHash(encode(record)));
 * const root = f.root(); // sign it in a checkpoint; store f.toJSON() in the same transaction
 * const proof = inclusionProof(store, 5, f.size);
 * verifyInclusion(leafHash(encode(records[5])), 5, f.size, proof, root); // true
 */
import { hash } from 'node:crypto';
import { TesseraError } from './errors.js';

/** Bytes in every hash of the tree (SHA-256). */
export const HASH_SIZE = 32;

/** MTH({}) = HASH() (RFC 9162 §2.1.1): the root of the empty tree, SHA-256 of the empty string. */
export const EMPTY_ROOT: Buffer = hash('sha256', Buffer.alloc(0), 'buffer');

/** Every valid proof is at most ⌈log2 size⌉ ≤ 53 hashes long; longer ones are refused unread. */
const MAX_PROOF_HASHES = 64;
/** Ranges of at most this many leaves are read in one call rather than split further. */
const LEAF_CHUNK = 256;
const HEX_HASH = /^[0-9a-f]{64}$/;

// One scratch buffer for 0x01 ‖ left ‖ right: crypto.hash of a filled buffer is ~2× cheaper than
// createHash().update()×3.digest() (about 0.9 µs per node on Node 20). Single-threaded, never
// handed out, so sharing it is safe.
const nodeInput = Buffer.alloc(1 + 2 * HASH_SIZE);
nodeInput[0] = 0x01;

/** `SHA-256(0x00 ‖ data)`: the hash of one log entry (RFC 9162 §2.1.1, MTH({d(0)})). */
export function leafHash(data: Uint8Array): Buffer {
  const input = Buffer.allocUnsafe(1 + data.length);
  input[0] = 0x00;
  input.set(data, 1);
  return hash('sha256', input, 'buffer');
}

/** `SHA-256(0x01 ‖ left ‖ right)`: an interior node (RFC 9162 §2.1.1); both inputs are 32-byte hashes. */
export function nodeHash(left: Uint8Array, right: Uint8Array): Buffer {
  if (left.length !== HASH_SIZE || right.length !== HASH_SIZE) throw stateInvalid('a node hash input is not 32 bytes');
  nodeInput.set(left, 1);
  nodeInput.set(right, 1 + HASH_SIZE);
  return hash('sha256', nodeInput, 'buffer');
}

function rangeError(message: string): TesseraError {
  return new TesseraError('TESSERA_AUDIT_RANGE', message);
}

function stateInvalid(message: string): TesseraError {
  return new TesseraError('TESSERA_AUDIT_STATE_INVALID', message);
}

function isSize(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;
}

function isHash(h: unknown): h is Uint8Array {
  return h instanceof Uint8Array && h.length === HASH_SIZE;
}

/** The largest power of two strictly smaller than n (n ≥ 2): RFC 9162 §2.1.1's k. */
function splitPoint(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

function isPowerOfTwo(n: number): boolean {
  return n >= 1 && splitPoint(n + 1) === n;
}

/** log2 of a power of two, exactly (Math.log2 may round for large values). */
function log2(n: number): number {
  let l = 0;
  for (let p = 1; p < n; p *= 2) l++;
  return l;
}

/** Bit `level` of a non-negative safe integer. */
function bit(n: number, level: number): boolean {
  return Math.floor(n / 2 ** level) % 2 === 1;
}

/**
 * MTH(D[n]) over leaf hashes (RFC 9162 §2.1.1): split at the largest power of two smaller than n,
 * recursively. Each hash must be 32 bytes (TESSERA_AUDIT_STATE_INVALID otherwise).
 *
 * @example rootOf([]) // EMPTY_ROOT; rootOf([h]) // h
 */
export function rootOf(leafHashes: readonly Uint8Array[]): Buffer {
  for (const h of leafHashes) if (!isHash(h)) throw stateInvalid('a leaf hash is not 32 bytes');
  if (leafHashes.length === 0) return Buffer.from(EMPTY_ROOT);
  return mthOfArray(leafHashes, 0, leafHashes.length);
}

function mthOfArray(h: readonly Uint8Array[], lo: number, hi: number): Buffer {
  const n = hi - lo;
  if (n === 1) return Buffer.from(h[lo]!);
  const k = splitPoint(n);
  return nodeHash(mthOfArray(h, lo, lo + k), mthOfArray(h, lo + k, hi));
}

/** Receives each complete subtree an append forms: leaves [index·2^level, (index+1)·2^level). */
export type SubtreeSink = (level: number, index: number, hash: Buffer) => void;

/** The frontier as stored: `hashes` are the compact range's roots, largest (leftmost) first, lowercase hex. */
export interface MerkleFrontierState {
  size: number;
  hashes: string[];
}

/**
 * The incremental appender: the roots of the complete subtrees that make up the first `size`
 * leaves, one per set bit of `size`, largest first (the "compact range" [0, size) of
 * transparency-dev/merkle). Memory is O(log n); an append costs one leaf-hash copy plus, amortized,
 * one node hash; `root()` folds at most 53 hashes, right to left, which is MTH because every
 * split of §2.1.1 falls on one of these subtrees' borders.
 *
 * @example
 * const f = MerkleFrontier.fromJSON(stored);  // resume after a restart
 * f.append(leafHash(bytes), (level, index, h) => { if (level >= 8) saveSubtree(level, index, h); });
 * store(f.toJSON(), f.root());
 */
export class MerkleFrontier {
  #size = 0;
  /** Roots of the compact range, largest first; #hashes[i] covers the i-th set bit from the top. */
  readonly #hashes: Buffer[] = [];

  /** The number of leaves appended. */
  get size(): number {
    return this.#size;
  }

  /**
   * Appends one leaf hash (32 bytes, copied). `onSubtree`, when given, hears each complete subtree
   * of level ≥ 1 this append completes (the merges), lowest first: the input of a stored-subtree
   * cache (see {@link LeafHashSource.subtreeHash}).
   */
  append(leafHash: Uint8Array, onSubtree?: SubtreeSink): void {
    if (!isHash(leafHash)) throw stateInvalid('a leaf hash is not 32 bytes');
    if (this.#size >= Number.MAX_SAFE_INTEGER) throw rangeError('the tree is full (2^53 − 1 leaves)');
    let h: Buffer = Buffer.from(leafHash);
    // Merging mirrors a binary increment: every trailing 1-bit of the size is a complete subtree
    // to the left of the new one, of the same level, so they combine into one a level higher.
    let level = 0;
    while (bit(this.#size, level)) {
      h = nodeHash(this.#hashes.pop()!, h);
      level++;
      onSubtree?.(level, Math.floor(this.#size / 2 ** level), h);
    }
    this.#hashes.push(h);
    this.#size++;
  }

  /** MTH of the leaves appended so far; {@link EMPTY_ROOT} when none. */
  root(): Buffer {
    const hs = this.#hashes;
    if (hs.length === 0) return Buffer.from(EMPTY_ROOT);
    let r = hs[hs.length - 1]!;
    for (let i = hs.length - 2; i >= 0; i--) r = nodeHash(hs[i]!, r);
    return Buffer.from(r);
  }

  /** An independent copy (appending to it leaves this one alone). */
  clone(): MerkleFrontier {
    const c = new MerkleFrontier();
    c.#size = this.#size;
    for (const h of this.#hashes) c.#hashes.push(Buffer.from(h));
    return c;
  }

  toJSON(): MerkleFrontierState {
    return { size: this.#size, hashes: this.#hashes.map((h) => h.toString('hex')) };
  }

  /**
   * Restores a frontier stored with {@link toJSON}. Refuses (TESSERA_AUDIT_STATE_INVALID) anything
   * but `{ size, hashes }` with a safe non-negative integer size and exactly one 64-digit lowercase
   * hex hash per set bit of it. The hashes themselves cannot be checked here: compare the root with
   * the last signed checkpoint (or rebuild with {@link fromSource}) before trusting it.
   */
  static fromJSON(state: unknown): MerkleFrontier {
    if (typeof state !== 'object' || state === null || Array.isArray(state)) throw stateInvalid('the frontier state must be an object');
    const keys = Object.keys(state).sort();
    if (keys.length !== 2 || keys[0] !== 'hashes' || keys[1] !== 'size') throw stateInvalid('the frontier state must have exactly the fields size and hashes');
    const { size, hashes } = state as { size: unknown; hashes: unknown };
    if (!isSize(size)) throw stateInvalid('the frontier size must be a non-negative safe integer');
    if (!Array.isArray(hashes)) throw stateInvalid('the frontier hashes must be an array');
    const expected = popcount(size);
    if (hashes.length !== expected) throw stateInvalid(`a frontier of size ${size} has ${expected} hashes, not ${hashes.length}`);
    const f = new MerkleFrontier();
    for (const [i, h] of hashes.entries()) {
      if (typeof h !== 'string' || !HEX_HASH.test(h)) throw stateInvalid(`frontier hash ${i} is not 64 lowercase hex digits`);
      f.#hashes.push(Buffer.from(h, 'hex'));
    }
    f.#size = size;
    return f;
  }

  /**
   * Rebuilds the frontier of the first `size` leaves of `src`: one {@link subtreeRoot} per set bit,
   * so O(log n) subtree lookups with a complete cache, a read of every leaf without one.
   */
  static fromSource(src: LeafHashSource, size: number): MerkleFrontier {
    if (!isSize(size)) throw rangeError('the tree size must be a non-negative safe integer');
    const f = new MerkleFrontier();
    let start = 0;
    for (let level = log2Floor(size); level >= 0 && start < size; level--) {
      if (!bit(size, level)) continue;
      f.#hashes.push(mth(src, start, start + 2 ** level));
      start += 2 ** level;
    }
    f.#size = size;
    return f;
  }
}

function popcount(n: number): number {
  let c = 0;
  for (let m = n; m > 0; m = Math.floor(m / 2)) c += m % 2;
  return c;
}

function log2Floor(n: number): number {
  let l = -1;
  for (let p = 1; p <= n; p *= 2) l++;
  return l;
}

/**
 * Where proofs read the tree from: the leaf hashes (the audit table's leaf_hash column, by
 * position), and optionally stored hashes of complete subtrees. Synchronous, like better-sqlite3.
 *
 * Cost without `subtreeHash`: a proof needs MTH of sibling subtrees that together cover every
 * leaf but one, so generating it reads all `size` leaf hashes (in chunks of 256, never all at
 * once) and computes ~size node hashes: 1–2 µs per leaf, 0.1–0.2 s at 100,000 leaves, linear
 * beyond. With every complete subtree of level ≥ L stored (the {@link SubtreeSink} of
 * {@link MerkleFrontier.append} yields exactly these; 2^(1−L) rows per leaf), a proof is O(log n)
 * lookups plus at most ~2·2^L leaf reads and node hashes, whatever the size: what a very large
 * log needs (Trillian and tlog-tiles store such subtrees as "tiles"). Measured at 100,000 leaves
 * (bench/merkle.ts): L = 8 (1/128 row per leaf) 0.6–0.9 ms a proof, L = 4 (1/8 row) 25–45 µs.
 * `subtreeHash` should answer undefined at once for levels the store does not keep: the
 * generator asks for every complete subtree it needs, from the top down, before reading leaves.
 */
export interface LeafHashSource {
  /** The leaf hashes of positions [start, end), in order, each 32 bytes; exactly end − start of them. */
  leafHashes(start: number, end: number): Buffer[];
  /**
   * The stored root of the complete subtree over leaves [index·2^level, (index+1)·2^level), level ≥ 1,
   * or undefined when it is not stored. Must be right when given: proofs built on a wrong one fail.
   */
  subtreeHash?(level: number, index: number): Buffer | undefined;
}

function readLeaves(src: LeafHashSource, start: number, end: number): Buffer[] {
  const got = src.leafHashes(start, end);
  if (!Array.isArray(got) || got.length !== end - start) throw rangeError(`the log does not hold leaves [${start}, ${end})`);
  for (const h of got) if (!isHash(h)) throw stateInvalid('the source returned a leaf hash that is not 32 bytes');
  return got;
}

/**
 * MTH(D[start:end]) of the source. Without a subtree cache, ranges of up to LEAF_CHUNK leaves are
 * read in one call. With one, the range is split along §2.1.1 down to complete aligned subtrees
 * (every range a proof needs is aligned so), each asked of the cache, and only a miss is read
 * from the leaves; a store answers undefined at once for levels it does not keep.
 */
function mth(src: LeafHashSource, start: number, end: number): Buffer {
  const n = end - start;
  const complete = isPowerOfTwo(n) && start % n === 0;
  if (n >= 2 && complete && src.subtreeHash) {
    const cached = src.subtreeHash(log2(n), start / n);
    if (cached !== undefined) {
      if (!isHash(cached)) throw stateInvalid('the source returned a subtree hash that is not 32 bytes');
      return Buffer.from(cached);
    }
  }
  if (n <= LEAF_CHUNK && (complete || !src.subtreeHash)) return mthOfArray(readLeaves(src, start, end), 0, n);
  const k = splitPoint(n);
  return nodeHash(mth(src, start, start + k), mth(src, start + k, end));
}

/**
 * MTH(D[start:end]): the root of the tree of leaves start..end−1 taken on their own (for
 * start = 0, the root of the log at size end). Throws TESSERA_AUDIT_RANGE unless
 * 0 ≤ start ≤ end and the source holds them.
 */
export function subtreeRoot(src: LeafHashSource, start: number, end: number): Buffer {
  if (!isSize(start) || !isSize(end) || start > end) throw rangeError(`[${String(start)}, ${String(end)}) is not a range of leaves`);
  if (start === end) return Buffer.from(EMPTY_ROOT);
  return mth(src, start, end);
}

/**
 * The audit path PATH(index, D[size]) of RFC 9162 §2.1.3.1, bottom (the leaf's sibling) first.
 * Throws TESSERA_AUDIT_RANGE unless 0 ≤ index < size and the source holds `size` leaves.
 *
 * @example verifyInclusion(leaf, 5, 8, inclusionProof(src, 5, 8), rootAt8) // true
 */
export function inclusionProof(src: LeafHashSource, index: number, size: number): Buffer[] {
  if (!isSize(index) || !isSize(size)) throw rangeError('the leaf index and tree size must be non-negative safe integers');
  if (index >= size) throw rangeError(`leaf index ${index} is not below tree size ${size}`);
  const out: Buffer[] = [];
  path(src, index, 0, size, out);
  return out;
}

// PATH(m, D[lo:hi]): for n > 1 and k the split point, m < k gives PATH(m, D[0:k]) : MTH(D[k:n]),
// else PATH(m − k, D[k:n]) : MTH(D[0:k]); PATH of one leaf is empty (§2.1.3.1).
function path(src: LeafHashSource, m: number, lo: number, hi: number, out: Buffer[]): void {
  if (hi - lo <= 1) return;
  const mid = lo + splitPoint(hi - lo);
  if (m < mid) {
    path(src, m, lo, mid, out);
    out.push(mth(src, mid, hi));
  } else {
    path(src, m, mid, hi, out);
    out.push(mth(src, lo, mid));
  }
}

/**
 * The consistency proof PROOF(m, D[n]) of RFC 9162 §2.1.4.1 that the tree of size m is a prefix of
 * the tree of size n. §2.1.4.1 defines it for 0 < m < n; for m = n it is empty (SUBPROOF(m, D[m],
 * true) = {}), and for m = 0 it is empty too (the empty tree is a prefix of every tree: nothing
 * to prove, see {@link verifyConsistency}). Throws TESSERA_AUDIT_RANGE unless 0 ≤ m ≤ n and the
 * source holds n leaves (checked when a proof needs them).
 */
export function consistencyProof(src: LeafHashSource, m: number, n: number): Buffer[] {
  if (!isSize(m) || !isSize(n)) throw rangeError('tree sizes must be non-negative safe integers');
  if (m > n) throw rangeError(`the first tree size ${m} is above the second ${n}`);
  const out: Buffer[] = [];
  if (m === 0 || m === n) return out;
  subproof(src, m, 0, n, true, out);
  return out;
}

// SUBPROOF(m, D[lo:hi], b), m an absolute size with lo < m ≤ hi: for m = n, {} when b (the old
// root is known to the verifier) else {MTH(D[m])}; otherwise, k the split point, m ≤ k gives
// SUBPROOF(m, D[0:k], b) : MTH(D[k:n]) and m > k gives SUBPROOF(m − k, D[k:n], false) : MTH(D[0:k]).
function subproof(src: LeafHashSource, m: number, lo: number, hi: number, b: boolean, out: Buffer[]): void {
  if (m === hi) {
    if (!b) out.push(mth(src, lo, hi));
    return;
  }
  const mid = lo + splitPoint(hi - lo);
  if (m <= mid) {
    subproof(src, m, lo, mid, b, out);
    out.push(mth(src, mid, hi));
  } else {
    subproof(src, m, mid, hi, false, out);
    out.push(mth(src, lo, mid));
  }
}

function isProof(proof: unknown): proof is Uint8Array[] {
  if (!Array.isArray(proof) || proof.length > MAX_PROOF_HASHES) return false;
  // An indexed loop, not every(): every() skips the holes of a sparse array.
  for (let i = 0; i < proof.length; i++) if (!isHash(proof[i])) return false;
  return true;
}

function equalHash(a: Uint8Array, b: Uint8Array): boolean {
  // Public hashes: no constant-time comparison needed.
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);
}

/**
 * RFC 9162 §2.1.3.2, step by step: true iff `proof` shows the leaf with hash `leafHash` at
 * position `index` of the tree of `size` leaves whose root is `root`. Never throws: a malformed
 * argument (index ≥ size, a hash that is not 32 bytes, a proof of the wrong length) is false.
 */
export function verifyInclusion(leafHash: Uint8Array, index: number, size: number, proof: readonly Uint8Array[], root: Uint8Array): boolean {
  if (!isHash(leafHash) || !isHash(root) || !isSize(index) || !isSize(size) || !isProof(proof)) return false;
  // 1. If leaf_index ≥ tree_size, fail.
  if (index >= size) return false;
  // 2. fn = leaf_index, sn = tree_size − 1. 3. r = hash.
  let fn = index;
  let sn = size - 1;
  let r: Uint8Array = leafHash;
  // 4. For each p in inclusion_path:
  for (const p of proof) {
    // a. If sn is 0, fail (the proof is too long).
    if (sn === 0) return false;
    // b. If LSB(fn) is set or fn = sn, r = HASH(0x01 ‖ p ‖ r) and, if LSB(fn) is not set,
    //    right-shift fn and sn until LSB(fn) is set or fn is 0; otherwise r = HASH(0x01 ‖ r ‖ p).
    if (fn % 2 === 1 || fn === sn) {
      r = nodeHash(p, r);
      while (fn % 2 === 0 && fn !== 0) {
        fn = Math.floor(fn / 2);
        sn = Math.floor(sn / 2);
      }
    } else {
      r = nodeHash(r, p);
    }
    // c. Right-shift fn and sn once.
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  // 5. sn must be 0 (the proof is not too short) and r the root.
  return sn === 0 && equalHash(r, root);
}

/**
 * RFC 9162 §2.1.4.2, step by step: true iff `proof` shows that the tree of size m with root
 * `rootM` is a prefix of the tree of size n with root `rootN`. Never throws: malformed arguments
 * (m > n, a hash that is not 32 bytes, a proof of the wrong length) are false.
 *
 * §2.1.4.2 covers 0 < m < n; the two trivial cases follow §2.1.4.1, where the proof is empty:
 * - m = n: valid iff the proof is empty and rootM = rootN (the same tree);
 * - m = 0: valid iff the proof is empty and rootM is {@link EMPTY_ROOT} (MTH({}), §2.1.1), and,
 *   if n = 0, rootN too. For n > 0 nothing about rootN can be checked: every tree extends the
 *   empty one, so a witness holding a size-0 checkpoint learns nothing from such a "proof".
 */
export function verifyConsistency(m: number, n: number, rootM: Uint8Array, rootN: Uint8Array, proof: readonly Uint8Array[]): boolean {
  if (!isSize(m) || !isSize(n) || !isHash(rootM) || !isHash(rootN) || !isProof(proof)) return false;
  if (m > n) return false;
  if (m === 0) return proof.length === 0 && equalHash(rootM, EMPTY_ROOT) && (n > 0 || equalHash(rootN, EMPTY_ROOT));
  if (m === n) return proof.length === 0 && equalHash(rootM, rootN);
  // 1. If consistency_path is empty, fail.
  if (proof.length === 0) return false;
  // 2. If first is an exact power of 2, prepend first_hash to consistency_path.
  const path = isPowerOfTwo(m) ? [rootM, ...proof] : proof;
  // 3. fn = first − 1, sn = second − 1.
  let fn = m - 1;
  let sn = n - 1;
  // 4. While LSB(fn) is set, right-shift fn and sn.
  while (fn % 2 === 1) {
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  // 5. fr = sr = consistency_path[0].
  let fr: Uint8Array = path[0]!;
  let sr: Uint8Array = path[0]!;
  // 6. For each subsequent c:
  for (let i = 1; i < path.length; i++) {
    const c = path[i]!;
    // a. If sn is 0, fail (the proof is too long).
    if (sn === 0) return false;
    // b. If LSB(fn) is set or fn = sn: fr = HASH(0x01 ‖ c ‖ fr), sr = HASH(0x01 ‖ c ‖ sr), and, if
    //    LSB(fn) is not set, right-shift fn and sn until LSB(fn) is set or fn is 0;
    //    otherwise sr = HASH(0x01 ‖ sr ‖ c).
    if (fn % 2 === 1 || fn === sn) {
      fr = nodeHash(c, fr);
      sr = nodeHash(c, sr);
      while (fn % 2 === 0 && fn !== 0) {
        fn = Math.floor(fn / 2);
        sn = Math.floor(sn / 2);
      }
    } else {
      sr = nodeHash(sr, c);
    }
    // c. Right-shift fn and sn once.
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  // 7. fr must be first_hash, sr second_hash, and sn 0.
  return sn === 0 && equalHash(fr, rootM) && equalHash(sr, rootN);
}

/**
 * An in-memory {@link LeafHashSource} (tests, benchmarks, the verifier's recomputation), keeping
 * every complete subtree of level ≥ `cacheLevel` when given, as a store would from the
 * {@link SubtreeSink} of {@link MerkleFrontier.append}.
 *
 * @example
 * const src = new MemoryLeafSource({ cacheLevel: 8 });
 * for (const h of hashes) src.append(h);
 * consistencyProof(src, 10, src.size);
 */
export class MemoryLeafSource implements LeafHashSource {
  readonly #leaves: Buffer[] = [];
  readonly #frontier = new MerkleFrontier();
  readonly #cacheLevel: number | undefined;
  /** level → index → hash */
  readonly #subtrees = new Map<number, Buffer[]>();
  readonly subtreeHash?: (level: number, index: number) => Buffer | undefined;

  constructor(options: { cacheLevel?: number } = {}) {
    const l = options.cacheLevel;
    if (l !== undefined) {
      if (!Number.isSafeInteger(l) || l < 1 || l > 52) throw rangeError('cacheLevel must be an integer in [1, 52]');
      this.#cacheLevel = l;
      this.subtreeHash = (level, index) => this.#subtrees.get(level)?.[index];
    }
  }

  get size(): number {
    return this.#frontier.size;
  }

  /** The root of all leaves appended so far. */
  root(): Buffer {
    return this.#frontier.root();
  }

  append(leafHash: Uint8Array): void {
    const min = this.#cacheLevel;
    this.#frontier.append(leafHash, min === undefined ? undefined : (level, index, h) => {
      if (level < min) return;
      let row = this.#subtrees.get(level);
      if (!row) this.#subtrees.set(level, (row = []));
      row[index] = h;
    });
    this.#leaves.push(Buffer.from(leafHash));
  }

  leafHashes(start: number, end: number): Buffer[] {
    if (!isSize(start) || !isSize(end) || start > end || end > this.#leaves.length) throw rangeError(`the log does not hold leaves [${String(start)}, ${String(end)})`);
    return this.#leaves.slice(start, end);
  }
}
