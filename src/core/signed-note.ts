/**
 * C2SP signed notes (https://c2sp.org/signed-note, v1.0.0): a text signed by one or more keys, the
 * envelope of the audit log's checkpoints and of witness cosignatures. Rules, and where they come from:
 *
 * - §Format: a note is a text ending in "\n", a blank line, then one or more signature lines
 *   `— <key name> <base64(4-byte key ID ‖ signature)>\n` (em dash U+2014, space). The whole note MUST be
 *   valid UTF-8 with no ASCII control character below U+0020 other than "\n" (so no CR: CRLF notes are
 *   refused, never normalized). The text is separated from the signatures by the LAST blank line, so a
 *   text may itself contain blank lines. Base64 is RFC 4648 §4 (standard alphabet, padded); Tessera
 *   accepts only the canonical encoding, so every accepted note re-encodes to the same bytes.
 * - §Format: key names are non-empty and contain no Unicode space (`\p{White_Space}`, Go's
 *   `unicode.IsSpace`) and no "+".
 * - §Format: "Verifiers SHOULD apply a maximum limit to the number of signatures … but MUST accept at
 *   least up to 16": Tessera accepts at most {@link NOTE_MAX_SIGNATURES} (100, like Go's sumdb/note) in
 *   at most {@link NOTE_MAX_BYTES} (1 MiB), checked before any signature is decoded or verified.
 * - §Signatures: a line whose (name, key ID) is not a configured key is ignored; one that is MUST be
 *   verified, and if it fails the whole note is refused (the spec's SHOULD, taken); a note with no
 *   verified signature MUST be refused. Beyond the spec, Tessera refuses a note carrying two lines with
 *   the same name and key ID (Go silently drops repeats): one key has no reason to sign one text twice.
 * - §Signatures / §Ed25519 signatures: key ID = SHA-256(name ‖ 0x0A ‖ type ‖ public key)[:4], type 0x01
 *   for plain Ed25519 (RFC 8032) signatures over the text, 0x04 for timestamped cosignatures
 *   (c2sp.org/tlog-cosignature §Format: signature = u64 big-endian timestamp ‖ Ed25519 signature over
 *   "cosignature/v1\ntime <decimal>\n" ‖ text, §Ed25519 signed message).
 * - Verifier keys ("vkeys", golang.org/x/mod/sumdb/note, referenced by tlog-cosignature §Format):
 *   `<name>+<8 lowercase hex digits of key ID>+<base64(type ‖ 32-byte public key)>`; the key ID must
 *   match the one recomputed from name, type and key.
 *
 * Messages name keys by name and key ID only; key material never appears in them.
 */
import { KeyObject, createHash, createPublicKey, sign, verify } from 'node:crypto';
import { TesseraError } from './errors.js';

/** The largest note accepted, in UTF-8 bytes (signatures included). */
export const NOTE_MAX_BYTES = 1 << 20;
/** The most signature lines a note may carry (the spec requires at least 16 be accepted). */
export const NOTE_MAX_SIGNATURES = 100;
/** The latest cosignature timestamp representable here (the spec allows up to 2^63 − 1). */
export const COSIGNATURE_MAX_TIMESTAMP = Number.MAX_SAFE_INTEGER;

/**
 * The signature types Tessera implements (signed-note §Signature types): `ed25519` (0x01) signs the note
 * text; `cosignature/v1` (0x04) is a witness's timestamped Ed25519 cosignature of a checkpoint.
 */
export type NoteKeyType = 'ed25519' | 'cosignature/v1';
const TYPE_BYTE: Record<NoteKeyType, number> = { ed25519: 0x01, 'cosignature/v1': 0x04 };

export interface NoteSigner {
  name: string;
  /** An Ed25519 private key. */
  privateKey: KeyObject;
}

export interface NoteVerifier {
  name: string;
  /** An Ed25519 public key, as a KeyObject or its 32 raw bytes. */
  publicKey: KeyObject | Uint8Array;
  /** Default `ed25519`. */
  type?: NoteKeyType;
}

/** One signature line as it appears in a note (syntax only: not verified). */
export interface NoteSignature {
  name: string;
  /** 8 lowercase hex digits. */
  keyId: string;
  /** The bytes after the key ID: 64 for `ed25519`, 72 (timestamp ‖ signature) for `cosignature/v1`. */
  signature: Buffer;
}

export interface ParsedNote {
  /** The signed text, ending in "\n" (without the separating blank line). */
  text: string;
  signatures: NoteSignature[];
}

export interface VerifiedSignature {
  name: string;
  keyId: string;
  type: NoteKeyType;
  /** For `cosignature/v1`: the cosigner's POSIX timestamp (seconds). */
  timestamp?: number;
}

export interface OpenedNote {
  text: string;
  /** The signatures made by configured keys, all verified, in note order. */
  verified: VerifiedSignature[];
  /** Signature lines of keys not configured: ignored, as §Signatures requires. */
  ignored: { name: string; keyId: string }[];
}

export function invalidNote(message: string): TesseraError {
  return new TesseraError('TESSERA_AUDIT_CHECKPOINT_INVALID', message);
}

const EM_DASH_SPACE = '\u2014 ';
const WHITE_SPACE = /\p{White_Space}/u;
const LONE_SURROGATE = /\p{Cs}/u;
const FORBIDDEN_CONTROL = /[\u0000-\u0009\u000b-\u001f]/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const KEY_ID_HEX = /^[0-9a-f]{8}$/;
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** A name for messages: bounded, and JSON-quoted so odd characters stay visible. */
function shown(name: string): string {
  return JSON.stringify(name.length > 64 ? `${name.slice(0, 64)}…` : name);
}

/**
 * signed-note §Format: non-empty, well-formed, no Unicode space, no "+" (nor any control character).
 * Tessera also bounds a name at 1024 UTF-16 code units.
 */
export function isValidKeyName(name: unknown): name is string {
  return typeof name === 'string' && name.length > 0 && name.length <= 1024 && !WHITE_SPACE.test(name) && !name.includes('+')
    && !LONE_SURROGATE.test(name) && !FORBIDDEN_CONTROL.test(name);
}

function checkKeyName(name: unknown, what: string): string {
  if (!isValidKeyName(name)) {
    throw invalidNote(`${what}: a key name must be non-empty text without spaces, "+" or control characters`);
  }
  return name;
}

/** Decodes canonical RFC 4648 §4 base64 (padded; the one encoding of its bytes), else undefined. */
export function decodeBase64Strict(s: string): Buffer | undefined {
  if (!BASE64.test(s)) return undefined;
  const b = Buffer.from(s, 'base64');
  return b.toString('base64') === s ? b : undefined;
}

/** The 32 raw bytes of an Ed25519 public key (a private key gives its public half). */
export function ed25519PublicKeyBytes(key: KeyObject | Uint8Array): Buffer {
  if (key instanceof Uint8Array) {
    if (key.length !== 32) throw invalidNote('an Ed25519 public key is 32 bytes');
    return Buffer.from(key);
  }
  if (!(key instanceof KeyObject) || key.asymmetricKeyType !== 'ed25519') {
    throw invalidNote('the key is not an Ed25519 key');
  }
  // Exporting costs more than a signature check (~90 µs); KeyObjects are immutable, so remember it.
  let raw = rawKeyCache.get(key);
  if (raw === undefined) {
    const spki = (key.type === 'private' ? createPublicKey(key) : key).export({ format: 'der', type: 'spki' });
    raw = Buffer.from(spki.subarray(spki.length - 32));
    rawKeyCache.set(key, raw);
  }
  return Buffer.from(raw);
}

const rawKeyCache = new WeakMap<KeyObject, Buffer>();

function ed25519PublicKeyObject(raw: Buffer): KeyObject {
  try {
    return createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
  } catch {
    throw invalidNote('the public key is not a valid Ed25519 key');
  }
}

function keyIdBytes(name: string, type: NoteKeyType, raw: Buffer): Buffer {
  return createHash('sha256').update(name, 'utf8').update(Buffer.from([0x0a, TYPE_BYTE[type]])).update(raw).digest().subarray(0, 4);
}

/**
 * The key ID of a key: SHA-256(name ‖ 0x0A ‖ type ‖ 32-byte public key)[:4] as 8 lowercase hex digits
 * (signed-note §Ed25519 signatures; tlog-cosignature §Format for type 0x04).
 *
 * @example noteKeyId('PeterNeumann', publicKey) // 'c74f20a3' (the golang.org/x/mod/sumdb/note example key)
 */
export function noteKeyId(name: string, publicKey: KeyObject | Uint8Array, type: NoteKeyType = 'ed25519'): string {
  return keyIdBytes(checkKeyName(name, 'key ID'), type, ed25519PublicKeyBytes(publicKey)).toString('hex');
}

/**
 * The verifier-key text a verifier is configured with: `<name>+<hex key ID>+<base64(type ‖ key)>`.
 *
 * @example encodeVerifierKey('PeterNeumann', pub) // 'PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW'
 */
export function encodeVerifierKey(name: string, publicKey: KeyObject | Uint8Array, type: NoteKeyType = 'ed25519'): string {
  checkKeyName(name, 'verifier key');
  const raw = ed25519PublicKeyBytes(publicKey);
  const id = keyIdBytes(name, type, raw).toString('hex');
  return `${name}+${id}+${Buffer.concat([Buffer.from([TYPE_BYTE[type]]), raw]).toString('base64')}`;
}

export interface VerifierKey {
  name: string;
  keyId: string;
  type: NoteKeyType;
  publicKey: KeyObject;
}

/**
 * Parses a verifier key (types 0x01 and 0x04, Ed25519) and checks its key ID. Strict: lowercase hex,
 * canonical base64, nothing around it.
 */
export function parseVerifierKey(text: unknown): VerifierKey {
  if (typeof text !== 'string') throw invalidNote('a verifier key must be a string');
  if (text.length > 2048) throw invalidNote('the verifier key is too long');
  const i = text.indexOf('+');
  const j = i < 0 ? -1 : text.indexOf('+', i + 1);
  if (j < 0) throw invalidNote('a verifier key is <name>+<key ID>+<key>');
  const name = checkKeyName(text.slice(0, i), 'verifier key');
  const id = text.slice(i + 1, j);
  if (!KEY_ID_HEX.test(id)) throw invalidNote('verifier key: the key ID must be 8 lowercase hex digits');
  const bytes = decodeBase64Strict(text.slice(j + 1));
  if (bytes === undefined || bytes.length !== 33) throw invalidNote('verifier key: the key must be canonical base64 of a type byte and 32 bytes');
  const type = (Object.keys(TYPE_BYTE) as NoteKeyType[]).find((t) => TYPE_BYTE[t] === bytes[0]);
  if (type === undefined) throw invalidNote('verifier key: unsupported signature type (Ed25519 0x01 and cosignature/v1 0x04 only)');
  const raw = bytes.subarray(1);
  if (keyIdBytes(name, type, raw).toString('hex') !== id) throw invalidNote(`verifier key ${shown(name)}: the key ID does not match the key`);
  return { name, keyId: id, type, publicKey: ed25519PublicKeyObject(raw) };
}

/** The note as a checked string: bounded, well-formed UTF-8, only "\n" among control characters. */
function noteString(input: unknown): string {
  let s: string;
  if (typeof input === 'string') {
    // A UTF-8 encoding is never shorter than the UTF-16 one, so this bounds the scan that follows.
    if (input.length > NOTE_MAX_BYTES) throw invalidNote(`the note is larger than ${NOTE_MAX_BYTES} bytes`);
    if (LONE_SURROGATE.test(input)) throw invalidNote('the note is not valid UTF-8 (a lone surrogate)');
    if (Buffer.byteLength(input, 'utf8') > NOTE_MAX_BYTES) throw invalidNote(`the note is larger than ${NOTE_MAX_BYTES} bytes`);
    s = input;
  } else if (input instanceof Uint8Array) {
    if (input.length > NOTE_MAX_BYTES) throw invalidNote(`the note is larger than ${NOTE_MAX_BYTES} bytes`);
    try {
      s = utf8.decode(input);
    } catch {
      throw invalidNote('the note is not valid UTF-8');
    }
  } else {
    throw invalidNote('a note must be text or bytes');
  }
  checkNoteCharacters(s, 'the note');
  return s;
}

function checkNoteCharacters(s: string, what: string): void {
  const bad = FORBIDDEN_CONTROL.exec(s);
  if (bad !== null) {
    throw invalidNote(bad[0] === '\r' ? `${what} contains a carriage return (CRLF line endings are not allowed)` : `${what} contains a control character other than newline`);
  }
}

/** Checks a text to sign: what {@link signNote} and the checkpoint formatter produce must open again. */
export function checkNoteText(text: unknown): string {
  if (typeof text !== 'string' || text.length === 0 || !text.endsWith('\n')) throw invalidNote('the note text must end with a newline');
  if (text.length > NOTE_MAX_BYTES || LONE_SURROGATE.test(text)) throw invalidNote('the note text is too large or not valid UTF-8');
  checkNoteCharacters(text, 'the note text');
  return text;
}

/** Parses one signature line, with or without its final "\n". */
export function parseSignatureLine(line: unknown): NoteSignature {
  if (typeof line !== 'string' || line.length > NOTE_MAX_BYTES) throw invalidNote('a signature line must be text');
  const body = line.endsWith('\n') ? line.slice(0, -1) : line;
  if (body.includes('\n')) throw invalidNote('a signature line is one line');
  checkNoteCharacters(body, 'a signature line');
  if (!body.startsWith(EM_DASH_SPACE)) throw invalidNote('a signature line must start with an em dash (U+2014) and a space');
  const rest = body.slice(EM_DASH_SPACE.length);
  const sp = rest.indexOf(' ');
  if (sp < 0) throw invalidNote('a signature line is "— <key name> <base64 signature>"');
  const name = checkKeyName(rest.slice(0, sp), 'signature line');
  const bytes = decodeBase64Strict(rest.slice(sp + 1));
  if (bytes === undefined) throw invalidNote(`the signature of ${shown(name)} is not canonical base64`);
  if (bytes.length < 5) throw invalidNote(`the signature of ${shown(name)} is shorter than a key ID and one byte`);
  return { name, keyId: bytes.subarray(0, 4).toString('hex'), signature: Buffer.from(bytes.subarray(4)) };
}

/** The text of one signature line, with its final "\n". */
export function formatSignatureLine(sig: NoteSignature): string {
  return `${EM_DASH_SPACE}${sig.name} ${Buffer.concat([Buffer.from(sig.keyId, 'hex'), sig.signature]).toString('base64')}\n`;
}

/**
 * Parses a note's syntax without verifying anything (to show or re-serve it; never trust its text).
 * Refuses everything §Format forbids, more than {@link NOTE_MAX_SIGNATURES} lines, and repeated
 * (name, key ID) pairs. `serializeNote(parseNote(x))` gives back x exactly.
 */
export function parseNote(input: string | Uint8Array): ParsedNote {
  const s = noteString(input);
  const split = s.lastIndexOf('\n\n');
  if (split < 0) throw invalidNote('the note has no blank line before its signatures');
  const text = s.slice(0, split + 1);
  const block = s.slice(split + 2);
  if (block.length === 0) throw invalidNote('the note has no signature');
  if (!block.endsWith('\n')) throw invalidNote('the last signature line does not end with a newline');
  const lines = block.slice(0, -1).split('\n', NOTE_MAX_SIGNATURES + 1);
  if (lines.length > NOTE_MAX_SIGNATURES) throw invalidNote(`the note has more than ${NOTE_MAX_SIGNATURES} signatures`);
  const seen = new Set<string>();
  const signatures = lines.map((line) => {
    const sig = parseSignatureLine(line);
    const key = `${sig.name} ${sig.keyId}`;
    if (seen.has(key)) throw invalidNote(`the note has two signatures by ${shown(sig.name)} key ${sig.keyId}`);
    seen.add(key);
    return sig;
  });
  return { text, signatures };
}

/** The note's bytes (as text) from its parts: the inverse of {@link parseNote}. */
export function serializeNote(note: ParsedNote): string {
  return `${note.text}\n${note.signatures.map(formatSignatureLine).join('')}`;
}

/** The message a `cosignature/v1` signature covers (tlog-cosignature §Ed25519 signed message). */
export function cosignatureMessage(text: string, timestamp: number): Buffer {
  return Buffer.from(`cosignature/v1\ntime ${timestamp}\n${text}`, 'utf8');
}

function checkTimestamp(timestamp: unknown): number {
  if (typeof timestamp !== 'number' || !Number.isSafeInteger(timestamp) || timestamp < 0) {
    throw invalidNote(`a cosignature timestamp is whole seconds from 0 to ${COSIGNATURE_MAX_TIMESTAMP}`);
  }
  return timestamp;
}

function checkSigner(signer: NoteSigner): Buffer {
  const key = signer?.privateKey;
  if (!(key instanceof KeyObject) || key.type !== 'private' || key.asymmetricKeyType !== 'ed25519') {
    throw invalidNote('a note signer needs an Ed25519 private key');
  }
  return ed25519PublicKeyBytes(key);
}

/**
 * Makes one signature line over `text` (checked like {@link signNote}'s). For `cosignature/v1`,
 * `timestamp` (POSIX seconds) is required and signed with the text.
 */
export function signatureLine(text: string, signer: NoteSigner, type: NoteKeyType = 'ed25519', timestamp?: number): string {
  checkNoteText(text);
  const name = checkKeyName(signer?.name, 'signer');
  const raw = checkSigner(signer);
  let signature: Buffer;
  if (type === 'cosignature/v1') {
    const t = checkTimestamp(timestamp);
    const ts = Buffer.alloc(8);
    ts.writeBigUInt64BE(BigInt(t));
    signature = Buffer.concat([ts, sign(null, cosignatureMessage(text, t), signer.privateKey)]);
  } else {
    signature = sign(null, Buffer.from(text, 'utf8'), signer.privateKey);
  }
  return formatSignatureLine({ name, keyId: keyIdBytes(name, type, raw).toString('hex'), signature });
}

/**
 * Signs `text` (ending in "\n") with each signer's Ed25519 key (type 0x01) and returns the note.
 *
 * @example
 * const note = signNote('example.org/tessera/audit\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n',
 *   [{ name: 'example.org/tessera/audit', privateKey }]);
 */
export function signNote(text: string, signers: readonly NoteSigner[]): string {
  checkNoteText(text);
  if (!Array.isArray(signers) || signers.length === 0 || signers.length > NOTE_MAX_SIGNATURES) {
    throw invalidNote(`a note needs from 1 to ${NOTE_MAX_SIGNATURES} signers`);
  }
  const note = `${text}\n${signers.map((s) => signatureLine(text, s)).join('')}`;
  // Re-parse: catches two signers with one key and a note over the size limit.
  parseNote(note);
  return note;
}

/**
 * Adds signature lines (e.g. witness cosignatures) to a note; a line by the same name and key ID as one
 * already there replaces it (a newer cosignature supersedes the older). Nothing is verified here.
 */
export function appendSignatures(note: string | Uint8Array, lines: readonly string[]): string {
  const parsed = parseNote(note);
  if (!Array.isArray(lines) || lines.length > NOTE_MAX_SIGNATURES) throw invalidNote('too many signature lines');
  for (const line of lines) {
    const sig = parseSignatureLine(line);
    const at = parsed.signatures.findIndex((s) => s.name === sig.name && s.keyId === sig.keyId);
    if (at >= 0) parsed.signatures[at] = sig;
    else parsed.signatures.push(sig);
  }
  const out = serializeNote(parsed);
  parseNote(out);
  return out;
}

interface KnownKey {
  name: string;
  keyId: string;
  type: NoteKeyType;
  key: KeyObject;
  raw: Buffer;
}

function knownKeys(verifiers: readonly NoteVerifier[]): Map<string, KnownKey> {
  if (!Array.isArray(verifiers)) throw invalidNote('verifiers must be a list');
  const known = new Map<string, KnownKey>();
  for (const v of verifiers) {
    const name = checkKeyName(v?.name, 'verifier');
    const type = v.type ?? 'ed25519';
    if (!(type in TYPE_BYTE)) throw invalidNote('verifier: unsupported signature type');
    const raw = ed25519PublicKeyBytes(v.publicKey);
    const keyId = keyIdBytes(name, type, raw).toString('hex');
    const id = `${name} ${keyId}`;
    const other = known.get(id);
    if (other !== undefined) {
      if (other.type === type && other.raw.equals(raw)) continue;
      throw invalidNote(`two verifier keys share the name ${shown(name)} and key ID ${keyId}`);
    }
    const given = v.publicKey;
    const key = given instanceof Uint8Array ? ed25519PublicKeyObject(raw) : given.type === 'public' ? given : createPublicKey(given);
    known.set(id, { name, keyId, type, raw, key });
  }
  return known;
}

/**
 * Opens a note: parses it (see {@link parseNote}), verifies every signature by a configured key, and
 * returns its text with the verified signatures. Refuses a note whose known-key signature fails and one
 * with no verified signature (§Signatures). Which keys must have signed is the caller's policy: check
 * `verified` (the checkpoint opener requires the log key).
 *
 * @example
 * const { text, verified } = openNote(note, [{ name: 'example.org/tessera/audit', publicKey }]);
 */
export function openNote(input: string | Uint8Array, verifiers: readonly NoteVerifier[]): OpenedNote {
  const known = knownKeys(verifiers);
  const { text, signatures } = parseNote(input);
  const textBytes = Buffer.from(text, 'utf8');
  const verified: VerifiedSignature[] = [];
  const ignored: { name: string; keyId: string }[] = [];
  for (const sig of signatures) {
    const k = known.get(`${sig.name} ${sig.keyId}`);
    if (k === undefined) {
      ignored.push({ name: sig.name, keyId: sig.keyId });
      continue;
    }
    const bad = (): TesseraError => invalidNote(`the signature of ${shown(k.name)} key ${k.keyId} does not verify`);
    if (k.type === 'cosignature/v1') {
      if (sig.signature.length !== 72) throw bad();
      const t = sig.signature.readBigUInt64BE(0);
      if (t > BigInt(COSIGNATURE_MAX_TIMESTAMP)) throw invalidNote(`the cosignature of ${shown(k.name)} has a timestamp beyond ${COSIGNATURE_MAX_TIMESTAMP}`);
      const timestamp = Number(t);
      if (!verify(null, cosignatureMessage(text, timestamp), k.key, sig.signature.subarray(8))) throw bad();
      verified.push({ name: k.name, keyId: k.keyId, type: k.type, timestamp });
    } else {
      if (sig.signature.length !== 64 || !verify(null, textBytes, k.key, sig.signature)) throw bad();
      verified.push({ name: k.name, keyId: k.keyId, type: k.type });
    }
  }
  if (verified.length === 0) throw invalidNote('the note has no signature by a trusted key');
  return { text, verified, ignored };
}
