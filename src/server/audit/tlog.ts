import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import type { KeyEncryptionKey } from '../../common/kek.js';
import { auditLogOrigin, openCheckpoint, signCheckpoint, verifyCosignature } from '../../core/checkpoint.js';
import { TesseraError } from '../../core/errors.js';
import { consistencyProof, inclusionProof, subtreeRoot, verifyConsistency } from '../../core/merkle.js';
import { appendSignatures, encodeVerifierKey, parseNote, parseVerifierKey } from '../../core/signed-note.js';
import type { CheckpointRecord, CosignatureRecord, Store, StoredAuditRecord } from '../store/store.js';
import type { AuditLog } from './audit.js';

/** Meta key of the log's sealed Ed25519 key (PKCS#8 DER sealed by the KEK, base64). */
const LOG_KEY_META = 'audit_log_key';
/** The KEK's associated data for the log key: a sealed CA key cannot be passed off as it. */
const LOG_KEY_AAD = 'audit-log-key';
/**
 * Meta key of the log's verifier key in clear, for `tessera audit verify --db` without the KEK. Not
 * trusted by anything: whoever can edit the file can replace it, so an auditor pins the key.
 */
const LOG_VERIFIER_KEY_META = 'audit_log_verifier_key';

export interface InclusionResult {
  record: StoredAuditRecord;
  leafIndex: number;
  leafHash: Buffer;
  proof: Buffer[];
  checkpoint: CheckpointRecord;
}

/** The most witnesses' cosignatures kept per checkpoint. */
export const MAX_COSIGNATURES_PER_CHECKPOINT = 32;

/** What the policy stream carries for the agents' witnesses: the latest note and a proof from their size. */
export interface WitnessCheckpoint {
  note: string;
  /** base64 RFC 9162 consistency proof from the size the agent holds; empty when it holds more (a rewind it will see). */
  consistency: string[];
}

export interface ConsistencyResult {
  from: number;
  proof: Buffer[];
  checkpoint: CheckpointRecord;
}

/**
 * The audit log as a transparency log (issue 10): the log's own Ed25519 key (sealed by the KEK like
 * the CA keys, made at first start, never leaving the process), signed checkpoints of the Merkle tree
 * the store keeps (C2SP tlog-checkpoint), and inclusion and consistency proofs against them
 * (RFC 9162 §2.1.3, §2.1.4). Proofs are only given against stored checkpoints: a verifier checks them
 * with the log key, never against an unsigned root.
 */
export class TransparencyLog {
  readonly origin: string;
  #key: KeyObject | undefined;
  #verifierKey = '';
  /** Proofs for the agents' witnesses, by the size they hold, for the latest checkpoint only. */
  #witnessCache: { size: number; note: string; proofs: Map<number, string[]> } | undefined;

  constructor(private readonly store: Store, private readonly kek: KeyEncryptionKey, trustDomain: string, private readonly audit: AuditLog) {
    this.origin = auditLogOrigin(trustDomain);
  }

  /** Loads the log key, creating it when none is stored (first writer wins between processes). */
  async init(): Promise<void> {
    let sealed = await this.store.getMeta(LOG_KEY_META);
    if (sealed === undefined) {
      const { privateKey } = generateKeyPairSync('ed25519');
      const fresh = this.kek.seal(privateKey.export({ format: 'der', type: 'pkcs8' }), LOG_KEY_AAD).toString('base64');
      sealed = await this.store.setMetaIfAbsent(LOG_KEY_META, fresh);
    }
    this.#key = createPrivateKey({ key: this.kek.open(Buffer.from(sealed, 'base64'), LOG_KEY_AAD), format: 'der', type: 'pkcs8' });
    this.#verifierKey = encodeVerifierKey(this.origin, createPublicKey(this.#key));
    if ((await this.store.getMeta(LOG_VERIFIER_KEY_META)) !== this.#verifierKey) await this.store.setMeta(LOG_VERIFIER_KEY_META, this.#verifierKey);
    await this.checkStoredTree();
  }

  /**
   * The start-up check: the stored tree must extend the last signed checkpoint. Its note must be signed
   * by this log's key and say what its columns say, and a consistency proof (RFC 9162 §2.1.4) built
   * from the stored leaf hashes and subtrees must lead from its root to the stored frontier's root:
   * O(log n) subtree reads and one signature, not a rehash of the log. A truncated or rolled-back
   * file, a replaced checkpoint or log key, or stored hashes rewritten below the checkpoint refuse to
   * start (TESSERA_AUDIT_STATE_INVALID). Records edited while their stored leaf hashes were left alone
   * pass this check; `tessera audit verify` rehashes every record and finds them.
   */
  private async checkStoredTree(): Promise<void> {
    const cp = await this.store.getCheckpoint();
    if (!cp) return;
    const bad = (why: string): TesseraError => new TesseraError('TESSERA_AUDIT_STATE_INVALID', `the audit log does not extend its last signed checkpoint (size ${cp.size}): ${why}; run \`tessera audit verify --db\``);
    let signed;
    try {
      signed = openCheckpoint(cp.note, { origin: this.origin, logKey: createPublicKey(this.#key!) }).checkpoint;
    } catch (err) {
      throw bad(`its note does not verify with the log key (${(err as Error).message})`);
    }
    if (signed.size !== cp.size || !signed.rootHash.equals(cp.rootHash)) throw bad('its stored size or root differs from the signed note');
    const head = await this.store.auditTreeHead();
    if (head.size < cp.size) throw bad(`the log holds only ${head.size} records (truncated or rolled back)`);
    const src = (await this.store.auditLeafSource());
    let proof: Buffer[];
    let storedRoot: Buffer;
    try {
      proof = consistencyProof(src, cp.size, head.size);
      // The frontier's root from the stored hashes too (≤ 255 leaf reads beside the subtrees): with
      // the checkpoint at the head's size the proof is empty and would not read them at all.
      storedRoot = subtreeRoot(src, 0, head.size);
    } catch (err) {
      throw bad(`no consistency proof from the stored hashes (${(err as Error).message})`);
    }
    if (!verifyConsistency(cp.size, head.size, signed.rootHash, head.rootHash, proof) || !storedRoot.equals(head.rootHash)) {
      throw bad(`the stored tree of size ${head.size} is not an extension of it (stored hashes rewritten)`);
    }
  }

  /** Stored checkpoints of size > afterSize (all when undefined), by size, at most `limit`. */
  list(afterSize: number | undefined, limit: number): Promise<CheckpointRecord[]> {
    return this.store.listCheckpoints(afterSize, limit);
  }

  /** The log's public key as a C2SP signed-note verifier key: `<origin>+<key id>+<base64(0x01 ‖ key)>`. */
  get verifierKey(): string {
    return this.#verifierKey;
  }

  /**
   * Signs and stores a checkpoint when the tree grew since the latest one (or none exists yet); the
   * leader calls it on its 1 s tick, so at most one checkpoint a second and one within a second of
   * records arriving. Returns the new checkpoint, if any. One writer: the leader only.
   */
  async checkpoint(now = Date.now()): Promise<CheckpointRecord | undefined> {
    if (!this.#key) throw new TesseraError('TESSERA_INTERNAL', 'the transparency log is not initialised');
    const [head, latest] = await Promise.all([this.store.auditTreeHead(), this.store.getCheckpoint()]);
    if (latest && head.size <= latest.size) return undefined;
    const note = signCheckpoint({ origin: this.origin, size: head.size, rootHash: head.rootHash }, this.#key);
    const rec: CheckpointRecord = { size: head.size, rootHash: head.rootHash, note, createdAt: now };
    return (await this.store.insertCheckpoint(rec)) ? rec : undefined;
  }

  /** The latest signed checkpoint (404 until the first one is signed). */
  async latest(): Promise<CheckpointRecord> {
    const cp = await this.store.getCheckpoint();
    if (!cp) throw new TesseraError('TESSERA_NOT_FOUND', 'no checkpoint has been signed yet');
    return cp;
  }

  /** A stored checkpoint of that size (the latest when undefined); 404 when there is none. */
  async checkpointOf(size?: number): Promise<CheckpointRecord> {
    if (size === undefined) return this.latest();
    const cp = await this.store.getCheckpoint(size);
    if (!cp) throw new TesseraError('TESSERA_NOT_FOUND', `no checkpoint of size ${size}`);
    return cp;
  }

  /** Proof that record `id` (leaf index id − 1) is in the checkpoint of `size` (default: the latest). */
  async inclusion(id: number, size?: number): Promise<InclusionResult> {
    const checkpoint = await this.checkpointOf(size);
    if (!Number.isSafeInteger(id) || id < 1 || id > checkpoint.size) {
      throw new TesseraError('TESSERA_NOT_FOUND', `no audit record ${id} in the checkpoint of size ${checkpoint.size}`);
    }
    const [record] = await this.audit.read({ afterId: id - 1, untilId: id, limit: 1 });
    if (!record || record.id !== id) throw new TesseraError('TESSERA_NOT_FOUND', `no audit record ${id}`);
    const src = (await this.store.auditLeafSource());
    const [leafHash] = src.leafHashes(id - 1, id);
    return { record, leafIndex: id - 1, leafHash: leafHash!, proof: inclusionProof(src, id - 1, checkpoint.size), checkpoint };
  }

  /**
   * The latest checkpoint for an agent's witness holding a checkpoint of size `held` (0: none), with
   * the consistency proof from `held` (none when `held` is larger: the witness sees the rewind itself).
   * Undefined until a checkpoint exists. Every agent asks once per watch period, mostly from the same
   * few sizes: proofs are cached per held size until the next checkpoint.
   */
  async forWitness(held: number): Promise<WitnessCheckpoint | undefined> {
    const cp = await this.store.getCheckpoint();
    if (!cp) return undefined;
    if (this.#witnessCache?.size !== cp.size) this.#witnessCache = { size: cp.size, note: cp.note, proofs: new Map() };
    const cache = this.#witnessCache;
    let consistency = cache.proofs.get(held);
    if (consistency === undefined) {
      consistency = held > cp.size ? [] : consistencyProof((await this.store.auditLeafSource()), held, cp.size).map((h) => h.toString('base64'));
      // Only sizes an honest witness can hold (none, or a signed checkpoint's) take one of the 256
      // slots: sizes made up by a caller would fill them and leave every agent's proof uncached.
      if (cache.proofs.size < 256 && (held === 0 || held === cp.size || (held < cp.size && (await this.store.getCheckpoint(held)) !== undefined))) {
        cache.proofs.set(held, consistency);
      }
    }
    return { note: cache.note, consistency };
  }

  /**
   * Stores a witness's cosignature of the stored checkpoint of `size` after verifying it (C2SP
   * tlog-cosignature v1) with `witnessKey`, a cosignature/v1 verifier key. Any valid cosignature is
   * taken (the route is admin-only: the admin is who registers witnesses). Throws
   * TESSERA_AUDIT_CHECKPOINT_INVALID for a bad key or line, TESSERA_NOT_FOUND for an unknown size.
   */
  async addCosignature(size: number, witnessKey: string, line: string, now = Date.now()): Promise<CosignatureRecord> {
    const vk = parseVerifierKey(witnessKey);
    if (vk.type !== 'cosignature/v1') throw new TesseraError('TESSERA_AUDIT_CHECKPOINT_INVALID', 'the witness key must be a cosignature/v1 verifier key (type 0x04)');
    if (vk.name === this.origin) throw new TesseraError('TESSERA_AUDIT_CHECKPOINT_INVALID', 'a witness may not use the log\'s own name');
    const cp = await this.checkpointOf(size);
    const text = parseNote(cp.note).text;
    const sig = verifyCosignature(text, line, { name: vk.name, publicKey: vk.publicKey }, { now: Math.floor(now / 1000) });
    const rec: CosignatureRecord = {
      size, witnessKey, name: sig.name, keyId: sig.keyId, timestamp: sig.timestamp, line: line.endsWith('\n') ? line : `${line}\n`, createdAt: now,
    };
    if (!(await this.store.putCosignature(rec, MAX_COSIGNATURES_PER_CHECKPOINT))) {
      throw new TesseraError('TESSERA_BAD_REQUEST', `the checkpoint of size ${size} already has ${MAX_COSIGNATURES_PER_CHECKPOINT} witnesses' cosignatures`);
    }
    return rec;
  }

  /** The checkpoint's note with its witnesses' cosignature lines appended (a signed note holds several), and those cosignatures. */
  async cosigned(cp: CheckpointRecord): Promise<{ note: string; cosignatures: CosignatureRecord[] }> {
    const cosignatures = await this.store.listCosignatures(cp.size);
    if (cosignatures.length === 0) return { note: cp.note, cosignatures };
    return { note: appendSignatures(cp.note, cosignatures.map((c) => c.line)), cosignatures };
  }

  /** Proof that the tree of size `from` is a prefix of the checkpoint of size `to`. */
  async consistency(from: number, to: number): Promise<ConsistencyResult> {
    const checkpoint = await this.checkpointOf(to);
    if (from > to) throw new TesseraError('TESSERA_AUDIT_RANGE', `from (${from}) must not exceed to (${to})`);
    return { from, proof: consistencyProof((await this.store.auditLeafSource()), from, to), checkpoint };
  }
}
