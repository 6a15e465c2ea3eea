/**
 * `tessera audit verify`: recomputes the audit log's Merkle tree (RFC 9162 §2.1) from the records
 * themselves and checks it against every signed checkpoint the log holds and, optionally, against a
 * checkpoint saved elsewhere earlier. One verifier for both sources (the admin API, or the SQLite
 * file read offline: ./audit-sources.ts): it takes the records and checkpoints as async iterables in
 * log order and keeps only a MerkleFrontier (O(log n) hashes), the next checkpoint and at most
 * {@link MAX_PROBLEMS} problems in memory, whatever the log's size.
 *
 * What is trusted: only the log key (pinned by the caller, by the saved checkpoint, or, unpinned, the
 * key the source names). Every leaf is SHA-256(0x00 ‖ auditLeafData(record)) recomputed here; a
 * stored leaf hash (SQLite only) is used to name an edited record exactly and, after a record was
 * found edited, to keep checking the rest of the log against the signed roots (the result is already
 * a failure then, so nothing is taken on trust).
 *
 * Problems, in the order found (`kind`):
 * - `edited`: a record does not hash to its stored leaf hash, or cannot be encoded at all;
 * - `missing` / `order`: an id is skipped (a deleted record) / repeated or going backwards;
 * - `extra`: records beyond the size the stored frontier says (inserted after the fact);
 * - `frontier` / `subtree`: the stored frontier or a stored subtree root is not the recomputed one;
 * - `root`: a signed checkpoint's root is not the recomputed root at its size (a record in between
 *   was edited, inserted or removed even though the stored hashes were made to agree);
 * - `signature` / `key`: a checkpoint's signature does not verify / it is signed by another key than
 *   the log key (the log key was replaced), or the source names another key than the pinned one;
 * - `checkpoint`: a stored checkpoint's size or root column disagrees with its signed note, or the
 *   checkpoints are not in increasing size order;
 * - `truncated`: the log holds fewer records than a signed checkpoint (stored or saved) or its own
 *   frontier says: records were removed from the tail, or the file was rolled back.
 */
import { auditLeafData, type AuditLeafRecord } from '../core/audit-leaf.js';
import { openCheckpoint, type Checkpoint } from '../core/checkpoint.js';
import { TesseraError } from '../core/errors.js';
import { EMPTY_ROOT, MerkleFrontier, leafHash } from '../core/merkle.js';
import { parseNote, parseVerifierKey, type VerifierKey } from '../core/signed-note.js';

/** At most this many problems are kept (the count goes on). */
export const MAX_PROBLEMS = 100;

/** A record as the source holds it; `detail` undefined when the stored text is not JSON. */
export interface VerifyRecord extends Omit<AuditLeafRecord, 'detail'> {
  detail: Record<string, unknown> | undefined;
  /** The leaf hash stored beside the record (SQLite), when the source has one. */
  storedLeafHash?: Buffer | null;
}

/** A stored checkpoint: its signed note, and the size and root the source shows beside it. */
export interface VerifyCheckpoint {
  size: number;
  rootHash: Buffer;
  note: string;
}

export interface AuditVerifySource {
  /** What the source reads (shown in messages): `https://…` or the database path. */
  readonly name: string;
  /** The log key the source names (the server's, or the one stored in clear in the database). */
  readonly logKey: string | undefined;
  /** The stored tree head (SQLite: the frontier), when the source has one; a malformed one is a `frontier` problem. */
  readonly head?: { size: number; rootHash: Buffer } | { error: string };
  /** Every record, in stored (id) order. */
  records(): AsyncIterable<VerifyRecord>;
  /** Every stored checkpoint, in stored (size) order. */
  checkpoints(): AsyncIterable<VerifyCheckpoint>;
  /** A stored subtree root (level ≥ 1), or undefined when none is stored. */
  subtreeHash?(level: number, index: number): Buffer | undefined;
}

export type ProblemKind =
  | 'edited' | 'missing' | 'order' | 'extra' | 'frontier' | 'subtree' | 'root' | 'signature' | 'key' | 'checkpoint' | 'truncated';

export interface VerifyProblem {
  kind: ProblemKind;
  /** The first record id concerned, when one is known. */
  id?: number;
  /** The tree size concerned (a checkpoint's), when one is. */
  size?: number;
  message: string;
}

/** A checkpoint saved earlier (`--from-checkpoint`): its note and, when the file carries one, the log key. */
export interface SavedCheckpoint {
  note: string;
  logKey?: string;
}

export interface VerifyOptions {
  /** `--log-key`: the log's verifier key. */
  logKey?: string;
  saved?: SavedCheckpoint;
  /** Called every {@link PROGRESS_EVERY} records with the records read so far. */
  onProgress?: (records: number) => void;
}

export interface VerifyResult {
  ok: boolean;
  /** The source read. */
  source: string;
  /** Records read (the recomputed tree's size). */
  records: number;
  /** base64 root of the recomputed tree at `records`. */
  root: string;
  /** The largest signed checkpoint matched before any problem: the log is proven intact up to here. */
  verified_size: number;
  /** Stored checkpoints whose signature and root were checked. */
  checkpoints: number;
  /** Records beyond the largest stored checkpoint (no signature covers them yet). */
  unsigned: number;
  log_key: string;
  /** True when the log key came from --log-key or the saved checkpoint, not from the source. */
  pinned: boolean;
  from_checkpoint?: { size: number; root: string; extended: boolean };
  problems: VerifyProblem[];
  problem_count: number;
}

const PROGRESS_EVERY = 10_000;

function configInvalid(message: string): TesseraError {
  return new TesseraError('TESSERA_CONFIG_INVALID', message);
}

/**
 * Reads a saved checkpoint file: the `--json` output of `tessera audit checkpoint` (or any JSON with
 * `checkpoint.note` and `log_key`, or `note` and `log_key` at the top), or a bare signed note (then
 * the key comes from --log-key, or, unpinned, from the source).
 */
export function parseSavedCheckpoint(text: string): SavedCheckpoint {
  const trimmed = text.trimStart();
  if (!trimmed.startsWith('{')) return { note: text };
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw configInvalid('--from-checkpoint: the file is neither JSON nor a signed note');
  }
  const o = v as { checkpoint?: { note?: unknown }; note?: unknown; log_key?: unknown } | null;
  const note = o?.checkpoint?.note ?? o?.note;
  if (typeof note !== 'string') throw configInvalid('--from-checkpoint: the JSON holds no checkpoint note (checkpoint.note)');
  if (o!.log_key !== undefined && typeof o!.log_key !== 'string') throw configInvalid('--from-checkpoint: log_key must be a string');
  return { note, ...(typeof o!.log_key === 'string' ? { logKey: o!.log_key } : {}) };
}

function keyOf(text: string, what: string): VerifierKey {
  try {
    return parseVerifierKey(text);
  } catch (err) {
    throw configInvalid(`${what} is not a log verifier key: ${(err as Error).message}`);
  }
}

/**
 * Opens a checkpoint note with the log key; a failure is a problem, told apart as `key` (no signature
 * by this key ID at all: signed by another key) or `signature` (malformed, or does not verify).
 */
function openWith(note: string, vk: VerifierKey): Checkpoint | Omit<VerifyProblem, 'size'> {
  try {
    return openCheckpoint(note, { origin: vk.name, logKey: vk.publicKey }).checkpoint;
  } catch (err) {
    let ids: string[] | undefined;
    try {
      ids = parseNote(note).signatures.filter((s) => s.name === vk.name).map((s) => s.keyId);
    } catch { /* malformed: a signature problem */ }
    if (ids !== undefined && !ids.includes(vk.keyId)) {
      return { kind: 'key', message: `signed by ${ids.length ? `key ${ids.join(', ')}` : 'no key of this log'}, not the log key ${vk.keyId}` };
    }
    return { kind: 'signature', message: `the signature does not verify with the log key ${vk.keyId}: ${(err as Error).message}` };
  }
}

const b64 = (b: Buffer): string => b.toString('base64');

/**
 * Verifies the log the source holds. Never throws for what it finds in the log (that is a problem in
 * the result); throws TESSERA_CONFIG_INVALID for a bad --log-key or saved checkpoint file, and
 * whatever the source throws when it cannot be read at all.
 */
export async function verifyAuditLog(source: AuditVerifySource, opts: VerifyOptions = {}): Promise<VerifyResult> {
  const problems: VerifyProblem[] = [];
  let problemCount = 0;
  const report = (p: VerifyProblem): void => {
    problemCount++;
    if (problems.length < MAX_PROBLEMS) problems.push(p);
  };

  // The log key: --log-key, else the saved checkpoint's, else (unpinned) the source's.
  const pinnedText = opts.logKey ?? opts.saved?.logKey;
  const keyText = pinnedText ?? source.logKey;
  if (keyText === undefined) throw configInvalid(`${source.name} names no log key: give --log-key (or a --from-checkpoint file that holds one)`);
  const vk = keyOf(keyText, opts.logKey !== undefined ? '--log-key' : pinnedText !== undefined ? 'the saved checkpoint\'s log_key' : `the log key of ${source.name}`);
  if (opts.logKey !== undefined && opts.saved?.logKey !== undefined && opts.saved.logKey !== opts.logKey) {
    report({ kind: 'key', message: 'the saved checkpoint names another log key than --log-key' });
  }
  if (pinnedText !== undefined && source.logKey !== undefined && source.logKey !== pinnedText) {
    report({ kind: 'key', message: `${source.name} names another log key (${source.logKey.split('+')[1] ?? '?'}) than the pinned ${vk.keyId}: the log key was replaced` });
  }

  let saved: Checkpoint | undefined;
  if (opts.saved) {
    const opened = openWith(opts.saved.note, vk);
    if ('kind' in opened) report({ ...opened, message: `the saved checkpoint: ${opened.message}` });
    else saved = opened;
  }

  const head = source.head !== undefined && 'error' in source.head ? undefined : source.head;
  if (source.head !== undefined && 'error' in source.head) report({ kind: 'frontier', message: `the stored frontier: ${source.head.error}` });

  const tree = new MerkleFrontier();
  /** After a missing or out-of-order id, positions no longer match: roots are not compared any more. */
  let desynced = false;
  let verifiedSize = 0;
  let checkpointsChecked = 0;
  let lastCheckpointSize = -1;
  let extraReported = false;
  let savedExtended = false;

  // Checkpoints are pulled one at a time, beside the records: never all in memory.
  const cps = source.checkpoints()[Symbol.asyncIterator]();
  let next: Checkpoint | undefined;
  const pull = async (): Promise<void> => {
    for (;;) {
      const r = await cps.next();
      if (r.done) {
        next = undefined;
        return;
      }
      const c = r.value;
      if (!(c.size > lastCheckpointSize)) {
        report({ kind: 'checkpoint', size: c.size, message: `stored checkpoint of size ${c.size} is out of order (after ${lastCheckpointSize})` });
        continue;
      }
      lastCheckpointSize = c.size;
      const opened = openWith(c.note, vk);
      if ('kind' in opened) {
        report({ ...opened, size: c.size, message: `checkpoint of size ${c.size}: ${opened.message}` });
        continue;
      }
      if (opened.size !== c.size || !opened.rootHash.equals(c.rootHash)) {
        report({ kind: 'checkpoint', size: c.size, message: `checkpoint of size ${c.size}: the stored size or root differs from its signed note (size ${opened.size})` });
        continue;
      }
      next = opened;
      return;
    }
  };

  /**
   * Compares every checkpoint of size `size` (the id of the last record read) with the recomputed
   * root; after a missing or out-of-order id they are only passed over.
   */
  const atSize = async (size: number): Promise<void> => {
    const inSync = !desynced && tree.size === size;
    const needed = inSync && ((next !== undefined && next.size <= size) || saved?.size === size || head?.size === size);
    const root = needed ? tree.root() : EMPTY_ROOT;
    while (next !== undefined && next.size <= size) {
      // One below `size` was already reported (its stored size differs from its note).
      if (next.size === size) {
        checkpointsChecked++;
        if (!inSync) { /* positions are off: a root comparison would only repeat the id problem */ } else if (!next.rootHash.equals(root)) {
          report({ kind: 'root', size, message: `the signed root of size ${size} is not the root of records 1..${size}: a record ${verifiedSize ? `in ${verifiedSize + 1}..${size}` : `up to ${size}`} was edited, inserted or removed` });
        } else if (problemCount === 0) verifiedSize = size;
      }
      await pull();
    }
    if (saved?.size === size && inSync) {
      if (saved.rootHash.equals(root)) savedExtended = true;
      else report({ kind: 'root', size, message: `the saved checkpoint of size ${size} is not the root of records 1..${size}: the log was rewritten since it was saved` });
    }
    if (head?.size === size && inSync && !head.rootHash.equals(root)) {
      report({ kind: 'frontier', size, message: `the stored frontier's root of size ${size} is not the root of the records` });
    }
  };

  await pull();
  await atSize(0);
  const sink = source.subtreeHash ? (level: number, index: number, h: Buffer): void => {
    if (desynced) return;
    const stored = source.subtreeHash!(level, index);
    if (stored !== undefined && !stored.equals(h)) {
      report({ kind: 'subtree', id: index * 2 ** level + 1, message: `the stored subtree root of records ${index * 2 ** level + 1}..${(index + 1) * 2 ** level} (level ${level}) is not the recomputed one` });
    }
  } : undefined;

  let lastId = 0;
  let count = 0;
  for await (const r of source.records()) {
    count++;
    if (count % PROGRESS_EVERY === 0) opts.onProgress?.(count);
    if (!Number.isSafeInteger(r.id) || r.id <= lastId) {
      report({ kind: 'order', ...(Number.isSafeInteger(r.id) ? { id: r.id } : {}), message: `record ${String(r.id)} comes after ${lastId}: a duplicate or out-of-order id` });
      desynced = true;
      continue;
    }
    if (r.id > lastId + 1) {
      report({ kind: 'missing', id: lastId + 1, message: r.id === lastId + 2 ? `record ${lastId + 1} is missing (deleted)` : `records ${lastId + 1}..${r.id - 1} are missing (deleted)` });
      desynced = true;
    }
    lastId = r.id;
    if (head && r.id > head.size && !extraReported) {
      extraReported = true;
      report({ kind: 'extra', id: r.id, message: `record ${r.id} is beyond the ${head.size} records the stored frontier holds: inserted after the fact` });
    }
    let leaf: Buffer | undefined;
    try {
      leaf = leafHash(auditLeafData(r as AuditLeafRecord));
    } catch (err) {
      report({ kind: 'edited', id: r.id, message: `record ${r.id} cannot be encoded: ${(err as Error).message}` });
    }
    const stored = r.storedLeafHash;
    if (leaf !== undefined && stored != null && !stored.equals(leaf)) {
      report({ kind: 'edited', id: r.id, message: `record ${r.id} does not hash to its stored leaf: it was edited` });
    } else if (leaf !== undefined && stored === null) {
      report({ kind: 'edited', id: r.id, message: `record ${r.id} has no stored leaf hash` });
    }
    // An edited record with a stored leaf hash: go on with the stored one, so the rest of the log
    // is still checked against the signed roots (and a second edit is named too).
    const appended = stored != null && stored.length === 32 && (leaf === undefined || !stored.equals(leaf)) ? stored : leaf;
    if (appended === undefined) desynced = true;
    else tree.append(appended, sink);
    // Most records reach no checkpoint: no await (and no root) for them.
    if ((next !== undefined && next.size <= lastId) || saved?.size === lastId || head?.size === lastId) await atSize(lastId);
  }

  // Signed (or stored) sizes the records do not reach: the tail was removed or the file rolled back.
  if (next !== undefined) {
    let largest = next.size;
    while (next !== undefined) {
      largest = next.size;
      await pull();
    }
    report({ kind: 'truncated', id: lastId + 1, size: largest, message: `the log ends at record ${lastId} but a stored checkpoint is signed for ${largest}: the tail was removed` });
  }
  if (saved && saved.size > lastId) {
    report({ kind: 'truncated', id: lastId + 1, size: saved.size, message: `the log ends at record ${lastId}, before the saved checkpoint of size ${saved.size}: truncated or rolled back` });
  }
  if (head && head.size > lastId) {
    report({ kind: 'truncated', id: lastId + 1, size: head.size, message: `the log ends at record ${lastId} but its stored frontier says ${head.size}: the tail was removed` });
  }
  const records = count;
  const largestSigned = Math.max(lastCheckpointSize, 0);
  return {
    ok: problemCount === 0,
    source: source.name,
    records,
    root: b64(tree.root()),
    verified_size: verifiedSize,
    checkpoints: checkpointsChecked,
    unsigned: Math.max(0, lastId - largestSigned),
    log_key: keyText,
    pinned: pinnedText !== undefined,
    ...(saved ? { from_checkpoint: { size: saved.size, root: b64(saved.rootHash), extended: savedExtended && problemCount === 0 } } : {}),
    problems,
    problem_count: problemCount,
  };
}

/** The exit-1 error of a failed verification: the first problem, with a stable code. */
export function tamperedError(result: VerifyResult): TesseraError {
  const first = result.problems[0];
  const more = result.problem_count > 1 ? ` (and ${result.problem_count - 1} more problem${result.problem_count > 2 ? 's' : ''})` : '';
  return new TesseraError('TESSERA_AUDIT_TAMPERED', `${first ? `${first.kind}: ${first.message}` : 'the audit log does not verify'}${more}`);
}
