/**
 * Checkpoints of Tessera's audit log in the C2SP tlog-checkpoint format (https://c2sp.org/tlog-checkpoint,
 * v1.0.0), signed notes (./signed-note.ts) whose text is
 *
 *     <origin>\n<tree size>\n<base64 root hash>\n[<extension line>\n]*
 *
 * and the witnesses' Ed25519 cosignatures of them (https://c2sp.org/tlog-cosignature, cosignature/v1).
 * Rules, and where they come from:
 *
 * - tlog-checkpoint §Note text 1: the origin MUST be non-empty and clients MUST NOT assume it follows the
 *   recommended "schema-less URL without spaces or +" form, so {@link parseCheckpoint} accepts any
 *   non-empty origin line and callers compare it with the origin they expect ({@link openCheckpoint}
 *   does). What Tessera writes is stricter: §Signatures says the log's key name SHOULD match the origin,
 *   and key names cannot hold spaces or "+", so {@link formatCheckpoint} requires a valid key name and
 *   {@link signCheckpoint} always signs with the origin as key name.
 * - §Note text 2: the tree size is ASCII decimal without leading zeros ("0" for the empty tree). The spec
 *   sets no maximum (Go reads a uint64); Tessera keeps sizes as JavaScript numbers and refuses any above
 *   2^53 − 1 (`Number.MAX_SAFE_INTEGER`), which no SQLite-backed log of records will reach, so a size is
 *   never silently rounded.
 * - §Note text 3: the root hash is the base64 of an RFC 6962 / RFC 9162 SHA-256 root: exactly 32 bytes,
 *   canonical padded base64 (RFC 4648 §4).
 * - §Note text 4: extension lines are optional and MUST be non-empty; their use is NOT RECOMMENDED
 *   (monitors cannot audit them). Tessera writes none by default and accepts at most
 *   {@link CHECKPOINT_MAX_EXTENSIONS}.
 * - tlog-cosignature §Format / §Ed25519 signed message: a witness signs
 *   "cosignature/v1\ntime <POSIX seconds, decimal>\n" ‖ the whole checkpoint text (extension lines
 *   included), with key ID type 0x04; its signature line carries key ID ‖ u64 big-endian timestamp ‖
 *   Ed25519 signature. Timestamps are capped at 2^53 − 1 here (the spec: at most 2^63 − 1); verifiers MAY
 *   refuse future ones ({@link verifyCosignature}'s `now`). A cosignature states that, at that time, this
 *   was the largest consistent tree the witness had seen for the origin: checking consistency is the
 *   witness's job before it calls {@link cosignCheckpoint}.
 *
 * Tessera's origin (and log key name) is `<trust domain>/tessera/audit`, e.g. `example.org/tessera/audit`
 * ({@link auditLogOrigin}): "the trust domain's log name", a schema-less URL as §Note text recommends.
 * Trust domains are `[a-z0-9.-_]`, so the origin is always a valid key name. Witness key names are the
 * operator's choice; a workload's SPIFFE ID without `spiffe://` (`example.org/ns/prod/sa/web`) is one.
 */
import type { KeyObject } from 'node:crypto';
import {
  checkNoteText,
  decodeBase64Strict,
  invalidNote,
  isValidKeyName,
  noteKeyId,
  openNote,
  parseSignatureLine,
  signatureLine,
  signNote,
  type NoteSigner,
} from './signed-note.js';
import { parseTrustDomain } from './spiffe-id.js';

/** Bytes in a root hash (SHA-256). */
export const ROOT_HASH_BYTES = 32;
/** The most extension lines a checkpoint may carry. */
export const CHECKPOINT_MAX_EXTENSIONS = 16;
/** How far in the future a cosignature's timestamp may be when `now` is given, by default (seconds). */
export const COSIGNATURE_MAX_FUTURE_SECONDS = 300;

export interface Checkpoint {
  origin: string;
  /** Number of leaves, 0 to 2^53 − 1. */
  size: number;
  /** 32 bytes. */
  rootHash: Buffer;
  /** Extension lines, without their "\n" (usually none). */
  extensions: string[];
}

export interface CheckpointInput {
  origin: string;
  size: number;
  rootHash: Uint8Array;
  extensions?: readonly string[];
}

const DECIMAL = /^(?:0|[1-9][0-9]{0,15})$/;

/**
 * The audit log's origin for a trust domain (given as `example.org` or `spiffe://example.org`).
 * Throws TESSERA_SPIFFE_ID_INVALID for a bad trust domain.
 *
 * @example auditLogOrigin('example.org') // 'example.org/tessera/audit'
 */
export function auditLogOrigin(trustDomain: string): string {
  return `${parseTrustDomain(trustDomain)}/tessera/audit`;
}

/**
 * The checkpoint text (note body) Tessera signs.
 *
 * @example
 * formatCheckpoint({ origin: 'example.org/tessera/audit', size: 0, rootHash: sha256('') })
 * // 'example.org/tessera/audit\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n'
 */
export function formatCheckpoint(c: CheckpointInput): string {
  if (!isValidKeyName(c?.origin)) throw invalidNote('checkpoint: the origin must be non-empty without spaces, "+" or control characters');
  if (!Number.isSafeInteger(c.size) || c.size < 0) throw invalidNote('checkpoint: the tree size must be a whole number from 0 to 2^53 - 1');
  if (!(c.rootHash instanceof Uint8Array) || c.rootHash.length !== ROOT_HASH_BYTES) throw invalidNote('checkpoint: the root hash must be 32 bytes');
  const extensions = c.extensions ?? [];
  if (!Array.isArray(extensions) || extensions.length > CHECKPOINT_MAX_EXTENSIONS) {
    throw invalidNote(`checkpoint: at most ${CHECKPOINT_MAX_EXTENSIONS} extension lines`);
  }
  for (const e of extensions) {
    if (typeof e !== 'string' || e.length === 0 || e.includes('\n')) throw invalidNote('checkpoint: an extension line must be non-empty text without a newline');
  }
  const text = `${c.origin}\n${c.size}\n${Buffer.from(c.rootHash).toString('base64')}\n${extensions.map((e) => `${e}\n`).join('')}`;
  return checkNoteText(text);
}

/** Parses a checkpoint text (the note text, e.g. from {@link openNote}), strictly. */
export function parseCheckpoint(text: unknown): Checkpoint {
  checkNoteText(text);
  const lines = (text as string).slice(0, -1).split('\n', 3 + CHECKPOINT_MAX_EXTENSIONS + 1);
  if (lines.length < 3) throw invalidNote('checkpoint: fewer than three lines (origin, tree size, root hash)');
  if (lines.length > 3 + CHECKPOINT_MAX_EXTENSIONS) throw invalidNote(`checkpoint: more than ${CHECKPOINT_MAX_EXTENSIONS} extension lines`);
  const [origin, sizeLine, hashLine, ...extensions] = lines as [string, string, string, ...string[]];
  if (origin.length === 0) throw invalidNote('checkpoint: the origin line is empty');
  if (!DECIMAL.test(sizeLine) || !Number.isSafeInteger(Number(sizeLine))) {
    throw invalidNote('checkpoint: the tree size must be decimal without leading zeros, at most 2^53 - 1');
  }
  const rootHash = decodeBase64Strict(hashLine);
  if (rootHash === undefined || rootHash.length !== ROOT_HASH_BYTES) throw invalidNote('checkpoint: the root hash must be canonical base64 of 32 bytes');
  if (extensions.some((e) => e.length === 0)) throw invalidNote('checkpoint: an extension line is empty');
  return { origin, size: Number(sizeLine), rootHash, extensions };
}

/**
 * Formats and signs a checkpoint with the log's Ed25519 key; the key name is the origin.
 *
 * @example const note = signCheckpoint({ origin: auditLogOrigin(td), size, rootHash }, logPrivateKey);
 */
export function signCheckpoint(c: CheckpointInput, logPrivateKey: KeyObject): string {
  return signNote(formatCheckpoint(c), [{ name: c.origin, privateKey: logPrivateKey }]);
}

export interface WitnessKey {
  name: string;
  /** The witness's Ed25519 public key (KeyObject or 32 raw bytes). */
  publicKey: KeyObject | Uint8Array;
}

export interface Cosignature {
  name: string;
  keyId: string;
  /** POSIX seconds. */
  timestamp: number;
}

export interface OpenedCheckpoint {
  checkpoint: Checkpoint;
  /** The signed text (what a witness cosigns). */
  text: string;
  /** The log key's key ID (8 hex digits). */
  logKeyId: string;
  /** Verified cosignatures of the configured witnesses, in note order. */
  cosignatures: Cosignature[];
}

/**
 * Opens a signed checkpoint: it must be signed by `logKey` under the name `origin` and be for that
 * origin; cosignatures by `witnesses` are verified (a bad one refuses the note) and returned; other
 * signature lines are ignored. How many cosignatures suffice is the caller's policy.
 *
 * @example
 * const { checkpoint, cosignatures } = openCheckpoint(note, { origin: auditLogOrigin(td), logKey, witnesses });
 */
export function openCheckpoint(
  note: string | Uint8Array,
  opts: { origin: string; logKey: KeyObject | Uint8Array; witnesses?: readonly WitnessKey[] },
): OpenedCheckpoint {
  const origin = opts?.origin;
  if (!isValidKeyName(origin)) throw invalidNote('the expected origin must be a valid key name');
  const witnesses = opts.witnesses ?? [];
  if (!Array.isArray(witnesses)) throw invalidNote('witnesses must be a list');
  const logKeyId = noteKeyId(origin, opts.logKey);
  const opened = openNote(note, [
    { name: origin, publicKey: opts.logKey, type: 'ed25519' },
    ...witnesses.map((w) => ({ name: w.name, publicKey: w.publicKey, type: 'cosignature/v1' as const })),
  ]);
  if (!opened.verified.some((v) => v.type === 'ed25519' && v.name === origin && v.keyId === logKeyId)) {
    throw invalidNote(`the checkpoint is not signed by the log key ${logKeyId}`);
  }
  const checkpoint = parseCheckpoint(opened.text);
  if (checkpoint.origin !== origin) throw invalidNote('the checkpoint is for another origin');
  const cosignatures = opened.verified
    .filter((v) => v.type === 'cosignature/v1')
    .map((v) => ({ name: v.name, keyId: v.keyId, timestamp: v.timestamp as number }));
  return { checkpoint, text: opened.text, logKeyId, cosignatures };
}

/**
 * A witness's cosignature of a checkpoint text, as a signature line ("— <name> <base64>\n") to add to the
 * note (see `appendSignatures`). The caller has verified the log signature and consistency first.
 *
 * @example const line = cosignCheckpoint(opened.text, { name: 'example.org/ns/ops/sa/witness', privateKey }, Math.floor(Date.now() / 1000));
 */
export function cosignCheckpoint(text: string, cosigner: NoteSigner, timestamp: number): string {
  parseCheckpoint(text);
  return signatureLine(text, cosigner, 'cosignature/v1', timestamp);
}

/**
 * Verifies one cosignature line over a checkpoint text with a witness's key and returns its timestamp.
 * With `now` (POSIX seconds), a timestamp more than `maxFutureSeconds` (default 300) ahead is refused.
 */
export function verifyCosignature(
  text: string,
  line: string,
  witness: WitnessKey,
  opts: { now?: number; maxFutureSeconds?: number } = {},
): Cosignature {
  parseCheckpoint(text);
  const sig = parseSignatureLine(line);
  if (typeof witness !== 'object' || witness === null) throw invalidNote('a witness key is { name, publicKey }');
  const keyId = noteKeyId(witness.name, witness.publicKey, 'cosignature/v1');
  if (sig.name !== witness.name || sig.keyId !== keyId) throw invalidNote(`the line is not a cosignature by witness key ${keyId}`);
  const opened = openNote(`${text}\n${line.endsWith('\n') ? line : `${line}\n`}`, [{ ...witness, type: 'cosignature/v1' }]);
  const timestamp = opened.verified[0]?.timestamp as number;
  if (opts.now !== undefined) {
    const ahead = opts.maxFutureSeconds ?? COSIGNATURE_MAX_FUTURE_SECONDS;
    if (!(timestamp <= opts.now + ahead)) throw invalidNote('the cosignature timestamp is in the future');
  }
  return { name: sig.name, keyId, timestamp };
}
