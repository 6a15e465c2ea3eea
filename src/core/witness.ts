/**
 * What a witness of the audit log checks (pure: no I/O), shared by the agents' witness
 * (src/agent/witness.ts) and `tessera audit witness` (src/admin/audit-witness.ts).
 *
 * A witness holds the newest checkpoint it has verified (its state) and, for each checkpoint it is
 * shown, decides between three things: adopt it (signed by the log key the witness pins, and
 * consistent with the held one: RFC 9162 §2.1.4.2), ignore it (the same tree again), or raise an
 * alarm and keep the held checkpoint: a fork (same size with another root, or a consistency proof that
 * does not verify), a rewind (a smaller tree), a bad signature, or another log key than the one its
 * state was signed with. That the log showed a contradicting checkpoint is evidence in itself, so the
 * alarm carries both notes.
 */
import { createHash } from 'node:crypto';
import { openCheckpoint, parseCheckpoint, type Checkpoint } from './checkpoint.js';
import { TesseraError } from './errors.js';
import { verifyConsistency, HASH_SIZE } from './merkle.js';
import { decodeBase64Strict, parseNote, parseVerifierKey } from './signed-note.js';

/** The most hashes a consistency proof of a tree of at most 2^53 − 1 leaves can hold (2·53), rounded up. */
export const MAX_CONSISTENCY_HASHES = 128;
/** The longest checkpoint note a witness takes (Tessera's are about 200 bytes plus cosignatures). */
export const MAX_WITNESS_NOTE_CHARS = 16 * 1024;

export type WitnessAlarmKind = 'fork' | 'rewind' | 'bad_signature' | 'key_changed';
export const WITNESS_ALARM_KINDS: readonly WitnessAlarmKind[] = ['fork', 'rewind', 'bad_signature', 'key_changed'];

/** What a witness keeps between runs (the JSON of its state file). */
export interface WitnessState {
  /** The log's C2SP verifier key the held checkpoint was verified with (pinned). */
  log_key: string;
  size: number;
  /** base64 of the 32-byte root. */
  root_hash: string;
  /** The signed checkpoint note as received. */
  note: string;
  /** ISO time the witness adopted it. */
  updated_at: string;
}

/** A tree as an alarm names it. */
export interface TreeRef {
  size: number;
  root_hash: string;
}

export interface WitnessAlarm {
  kind: WitnessAlarmKind;
  /** One line saying what is wrong, with both sizes and roots. */
  message: string;
  held: TreeRef;
  /** The contradicting checkpoint as far as it could be read (size −1 and root "" when it could not). */
  seen: TreeRef;
  /** The contradicting note (clipped to MAX_WITNESS_NOTE_CHARS): the evidence. */
  note: string;
  /** hex SHA-256 of the note: one alarm per distinct bad checkpoint. */
  note_hash: string;
}

export type WitnessVerdict =
  | { ok: true; state: WitnessState; checkpoint: Checkpoint; text: string; from: number; advanced: boolean }
  | { ok: false; alarm: WitnessAlarm };

function stateInvalid(message: string): TesseraError {
  return new TesseraError('TESSERA_AUDIT_WITNESS_STATE_INVALID', message);
}

/**
 * Parses a witness state (JSON text) strictly and checks that the note it holds is signed by the key it
 * pins and says what the other fields say: a state file edited by hand cannot move the witness.
 */
export function parseWitnessState(text: unknown): WitnessState {
  if (typeof text !== 'string' || text.length > 4 * MAX_WITNESS_NOTE_CHARS) throw stateInvalid('the witness state is not text of a sensible size');
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw stateInvalid('the witness state is not JSON');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw stateInvalid('the witness state is not an object');
  const o = v as Record<string, unknown>;
  const keys = Object.keys(o).sort().join(',');
  if (keys !== 'log_key,note,root_hash,size,updated_at') throw stateInvalid('the witness state has missing or unknown fields');
  if (typeof o.log_key !== 'string' || typeof o.note !== 'string' || typeof o.root_hash !== 'string' || typeof o.updated_at !== 'string') {
    throw stateInvalid('the witness state fields have the wrong types');
  }
  let cp: Checkpoint;
  try {
    const vk = parseVerifierKey(o.log_key);
    if (vk.type !== 'ed25519') throw stateInvalid('the pinned log key is not an Ed25519 signed-note key');
    cp = openCheckpoint(o.note, { origin: vk.name, logKey: vk.publicKey }).checkpoint;
  } catch (err) {
    if (err instanceof TesseraError && err.code === 'TESSERA_AUDIT_WITNESS_STATE_INVALID') throw err;
    throw stateInvalid(`the held checkpoint does not verify with the pinned log key: ${(err as Error).message}`);
  }
  if (o.size !== cp.size || o.root_hash !== cp.rootHash.toString('base64')) throw stateInvalid('the witness state fields differ from its signed checkpoint');
  return { log_key: o.log_key, size: cp.size, root_hash: o.root_hash, note: o.note, updated_at: o.updated_at };
}

/** The state file's text (stable field order). */
export function formatWitnessState(s: WitnessState): string {
  return `${JSON.stringify({ log_key: s.log_key, size: s.size, root_hash: s.root_hash, note: s.note, updated_at: s.updated_at }, null, 2)}\n`;
}

/** hex SHA-256 of a note's text: identifies a checkpoint as shown (alarm de-duplication). */
export function noteHash(note: string): string {
  return createHash('sha256').update(note, 'utf8').digest('hex');
}

/** Size and root of a note read without verifying it (for the alarm's message only). */
function peek(note: unknown): TreeRef {
  try {
    const cp = parseCheckpoint(parseNote(note as string).text);
    return { size: cp.size, root_hash: cp.rootHash.toString('base64') };
  } catch {
    return { size: -1, root_hash: '' };
  }
}

function describeTree(t: TreeRef): string {
  return t.size < 0 ? 'an unreadable checkpoint' : `size ${t.size} root ${t.root_hash}`;
}

/**
 * One witness step: `note` is the checkpoint shown, `logKey` the log's verifier key the witness trusts
 * (from the CA-signed policy bundle, or pinned), `consistency` the base64 proof from the held size to
 * the shown size (ignored when nothing is held). `now` stamps the new state.
 *
 * Never throws for anything the log sends: a bad note or proof is an alarm, so is a log key other than
 * the held one. Throws TESSERA_AUDIT_CHECKPOINT_INVALID when, with nothing held, `logKey` is not an
 * Ed25519 verifier key.
 */
export function witnessStep(held: WitnessState | undefined, logKey: unknown, note: unknown, consistency: unknown, now: Date = new Date()): WitnessVerdict {
  const text = typeof note === 'string' ? note : '';
  const clipped = text.slice(0, MAX_WITNESS_NOTE_CHARS);
  const heldRef: TreeRef = held ? { size: held.size, root_hash: held.root_hash } : { size: 0, root_hash: '' };
  const alarm = (kind: WitnessAlarmKind, why: string, seen: TreeRef = peek(text)): WitnessVerdict => ({
    ok: false,
    alarm: {
      kind, held: heldRef, seen, note: clipped, note_hash: noteHash(text),
      message: `${why}: holding ${held ? describeTree(heldRef) : 'nothing'}, shown ${describeTree(seen)}`,
    },
  });

  if (held && held.log_key !== logKey) {
    return alarm('key_changed', `the log key changed from ${keyLabel(held.log_key)} to ${keyLabel(logKey)}`);
  }
  const vk = parseVerifierKey(logKey);
  if (vk.type !== 'ed25519') throw new TesseraError('TESSERA_AUDIT_CHECKPOINT_INVALID', 'the log key must be an Ed25519 signed-note verifier key');
  if (typeof note !== 'string' || note.length > MAX_WITNESS_NOTE_CHARS) return alarm('bad_signature', 'the checkpoint is not a note of a sensible size');
  let opened;
  try {
    opened = openCheckpoint(note, { origin: vk.name, logKey: vk.publicKey });
  } catch (err) {
    return alarm('bad_signature', `the checkpoint does not verify with the log key ${vk.name}+${vk.keyId} (${(err as Error).message})`);
  }
  const cp = opened.checkpoint;
  const seen: TreeRef = { size: cp.size, root_hash: cp.rootHash.toString('base64') };
  const state: WitnessState = { log_key: logKey as string, size: cp.size, root_hash: seen.root_hash, note, updated_at: now.toISOString() };
  if (!held) return { ok: true, state, checkpoint: cp, text: opened.text, from: 0, advanced: true };
  if (cp.size < held.size) return alarm('rewind', 'the log shows a smaller tree than the witness holds (a rewind)', seen);
  const proof = decodeProof(consistency);
  const heldRoot = decodeBase64Strict(held.root_hash);
  if (proof === undefined || heldRoot === undefined || !verifyConsistency(held.size, cp.size, heldRoot, cp.rootHash, proof)) {
    const why = cp.size === held.size ? 'the log shows another root for the same size (a fork)' : 'the checkpoint is not consistent with the one held (a fork): the consistency proof does not verify';
    return alarm('fork', why, seen);
  }
  return { ok: true, state: cp.size === held.size ? held : state, checkpoint: cp, text: opened.text, from: held.size, advanced: cp.size > held.size };
}

/** `<name>+<key id>` of a verifier key, for messages (never the key itself: it is public, but long). */
function keyLabel(key: unknown): string {
  const parts = typeof key === 'string' ? key.split('+') : [];
  return parts.length === 3 && /^[0-9a-f]{8}$/.test(parts[1]!) ? `${parts[0]!.slice(0, 128)}+${parts[1]}` : 'an unreadable key';
}

function decodeProof(v: unknown): Buffer[] | undefined {
  if (v === undefined) return [];
  if (!Array.isArray(v) || v.length > MAX_CONSISTENCY_HASHES) return undefined;
  const out: Buffer[] = [];
  for (let i = 0; i < v.length; i++) {
    const h = typeof v[i] === 'string' ? decodeBase64Strict(v[i] as string) : undefined;
    if (h === undefined || h.length !== HASH_SIZE) return undefined;
    out.push(h);
  }
  return out;
}
