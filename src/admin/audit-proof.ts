/**
 * What `tessera audit checkpoint` and `tessera audit prove` check on the client side: the checkpoint's
 * signature by the log key (C2SP signed-note / tlog-checkpoint), and an inclusion proof (RFC 9162
 * §2.1.3.2) from the record's own fields, recomputed into its leaf, up to the signed root. The server's
 * answer is untrusted input: anything malformed or not verifying is a TesseraError, never a crash.
 *
 * The log key is taken from the answer unless the caller pins one (`--log-key`): without a pin, the
 * check proves the server's answers agree with each other under the key it names, not that the key is
 * the log's. Pin the key published at install time (`tessera audit checkpoint` prints it).
 */
import { auditLeafData } from '../core/audit-leaf.js';
import { openCheckpoint, type Checkpoint } from '../core/checkpoint.js';
import { TesseraError } from '../core/errors.js';
import { leafHash, verifyConsistency, verifyInclusion } from '../core/merkle.js';
import { decodeBase64Strict, parseVerifierKey, type VerifierKey } from '../core/signed-note.js';
import type { AuditCheckpointResponse, AuditCheckpointView, AuditConsistencyResponse, AuditInclusionResponse } from '../core/wire/control-plane.js';

export interface CheckedCheckpoint {
  checkpoint: Checkpoint;
  /** The verifier key that signed it. */
  logKey: string;
  logKeyId: string;
  /** True when the key was pinned by the caller, false when taken from the server's answer. */
  pinned: boolean;
}

export interface CheckedInclusion extends CheckedCheckpoint {
  id: number;
  leafIndex: number;
  leafHash: Buffer;
}

function proofInvalid(message: string): TesseraError {
  return new TesseraError('TESSERA_AUDIT_PROOF_INVALID', message);
}

function hashOf(s: unknown, what: string): Buffer {
  const b = typeof s === 'string' ? decodeBase64Strict(s) : undefined;
  if (!b || b.length !== 32) throw proofInvalid(`${what} is not base64 of 32 bytes`);
  return b;
}

/**
 * Verifies a checkpoint view's note with the pinned key (or, without one, the key the server names)
 * and that the view's fields say what the note says.
 */
export function checkCheckpointView(view: AuditCheckpointView | undefined, serverKey: unknown, pinnedKey?: string): CheckedCheckpoint {
  const keyText = pinnedKey ?? serverKey;
  const vk: VerifierKey = parseVerifierKey(keyText);
  if (pinnedKey !== undefined && serverKey !== pinnedKey) throw proofInvalid(`the server names another log key than the pinned ${vk.name}+${vk.keyId}`);
  if (typeof view !== 'object' || view === null || typeof view.note !== 'string') throw proofInvalid('the answer holds no checkpoint note');
  const opened = openCheckpoint(view.note, { origin: vk.name, logKey: vk.publicKey });
  const cp = opened.checkpoint;
  if (view.size !== cp.size || view.root_hash !== cp.rootHash.toString('base64') || view.origin !== cp.origin) {
    throw proofInvalid('the checkpoint fields differ from the signed note');
  }
  return { checkpoint: cp, logKey: keyText as string, logKeyId: opened.logKeyId, pinned: pinnedKey !== undefined };
}

/** `tessera audit checkpoint`: the latest checkpoint, its signature checked. */
export function checkCheckpointResponse(res: AuditCheckpointResponse, pinnedKey?: string): CheckedCheckpoint {
  return checkCheckpointView(res?.checkpoint, res?.log_key, pinnedKey);
}

/**
 * `tessera audit prove ID`: the record is the one asked for, its leaf hash is recomputed from its
 * fields (not taken from the answer), and the proof leads from it to the signed root.
 */
export function checkInclusionResponse(res: AuditInclusionResponse, id: number, pinnedKey?: string): CheckedInclusion {
  const checked = checkCheckpointView(res?.checkpoint, res?.log_key, pinnedKey);
  const r = res.record;
  if (typeof r !== 'object' || r === null || r.id !== id) throw proofInvalid(`the answer is not about record ${id}`);
  if (res.leaf_index !== id - 1) throw proofInvalid(`record ${id} must be leaf ${id - 1}`);
  const ts = typeof r.ts === 'string' ? Date.parse(r.ts) : NaN;
  if (!Number.isSafeInteger(ts)) throw proofInvalid('the record time is not an ISO date');
  const leaf = leafHash(auditLeafData({ ...r, ts }));
  if (!leaf.equals(hashOf(res.leaf_hash, 'the leaf hash'))) throw proofInvalid(`record ${id} does not hash to the leaf the server sent`);
  if (!Array.isArray(res.proof)) throw proofInvalid('the proof is not a list');
  const proof = res.proof.map((h, i) => hashOf(h, `proof hash ${i}`));
  if (!verifyInclusion(leaf, id - 1, checked.checkpoint.size, proof, checked.checkpoint.rootHash)) {
    throw proofInvalid(`the inclusion proof of record ${id} does not lead to the signed root of size ${checked.checkpoint.size}`);
  }
  return { ...checked, id, leafIndex: id - 1, leafHash: leaf };
}

export interface CheckedConsistency extends CheckedCheckpoint {
  /** The older checkpoint, its signature checked with the same key. */
  older: Checkpoint;
}

/**
 * `tessera audit consistency FROM [TO]`: both checkpoints are signed by the (pinned) log key and the
 * proof (RFC 9162 §2.1.4.2) leads from the older signed root to the newer one, so the log of size TO
 * extends the log of size FROM: nothing in the first FROM records was changed, removed or reordered.
 * A proof alone does not bind the sizes: it is only checked against two signed (size, root) pairs.
 */
export function checkConsistencyResponse(older: AuditCheckpointResponse, res: AuditConsistencyResponse, pinnedKey?: string): CheckedConsistency {
  const newer = checkCheckpointView(res?.checkpoint, res?.log_key, pinnedKey);
  const old = checkCheckpointView(older?.checkpoint, older?.log_key, pinnedKey ?? newer.logKey);
  if (res.from !== old.checkpoint.size) throw proofInvalid(`the proof starts at size ${String(res.from)}, not at the older checkpoint's ${old.checkpoint.size}`);
  if (res.to !== newer.checkpoint.size) throw proofInvalid(`the proof ends at size ${String(res.to)}, not at the newer checkpoint's ${newer.checkpoint.size}`);
  if (!Array.isArray(res.proof)) throw proofInvalid('the proof is not a list');
  const proof = res.proof.map((h, i) => hashOf(h, `proof hash ${i}`));
  if (!verifyConsistency(old.checkpoint.size, newer.checkpoint.size, old.checkpoint.rootHash, newer.checkpoint.rootHash, proof)) {
    throw proofInvalid(`the log of size ${newer.checkpoint.size} does not extend the signed log of size ${old.checkpoint.size}: the consistency proof fails`);
  }
  return { ...newer, older: old.checkpoint };
}
