/**
 * Secret-policy records on the control plane: validated, signed by the active CA and stored, one
 * per (policy id, key epoch), each at its newest share generation. The dealer runs in the CLI:
 * nothing here ever sees k_p or a share, only the public commitments and the key servers' addresses.
 *
 * Lifecycle of a key epoch: created (generation 1) → refreshed any number of times (generation + 1:
 * same public key, same threshold and key servers, new commitments) → retired (its shares are
 * deleted from the key servers by the CLI; the record stays for the audit trail and is no longer
 * served for unsealing or sealing).
 */
import { TesseraError } from '../../core/errors.js';
import { ready } from '../../core/secrets/index.js';
import { MAX_GENERATION, checkSecretPolicy, signSecretPolicy, type SecretPolicyRecord, type SecretPolicyServer, type SignedSecretPolicy } from '../../core/secrets/policy-record.js';
import type { CertificateAuthority } from '../ca/ca.js';
import type { SecretPolicyRow, Store } from '../store/store.js';

export interface StoredSecretPolicy {
  id: string;
  epoch: number;
  generation: number;
  createdAt: string;
  retiredAt: string | null;
  signed: SignedSecretPolicy;
}

function fromRow(row: SecretPolicyRow): StoredSecretPolicy {
  return {
    id: row.id, epoch: row.epoch, generation: row.generation, createdAt: new Date(row.createdAt).toISOString(),
    retiredAt: row.retiredAt === null ? null : new Date(row.retiredAt).toISOString(), signed: JSON.parse(row.signed) as SignedSecretPolicy,
  };
}

/** The record inside a stored envelope; it was checked when it was signed. */
function recordOf(p: StoredSecretPolicy): SecretPolicyRecord {
  return checkSecretPolicy(JSON.parse(Buffer.from(p.signed.payload, 'base64url').toString('utf8')));
}

/**
 * A refresh by DKG: `check` runs on the current record before anything is signed (the control plane
 * checks the transcript against it); a reshare also moves the epoch to new `servers` and threshold `t`.
 */
export interface RefreshOptions {
  t?: number;
  servers?: SecretPolicyServer[];
  check?: (current: SecretPolicyRecord) => void;
}

export class SecretPolicyService {
  constructor(private readonly store: Store, private readonly ca: CertificateAuthority, private readonly now: () => number = Date.now) {}

  /** Validates, signs and stores generation 1 of a key epoch. TESSERA_CONFLICT if this (id, epoch) exists. */
  async create(input: Omit<SecretPolicyRecord, 'createdAt' | 'generation'>): Promise<{ record: SecretPolicyRecord; signed: SignedSecretPolicy }> {
    await ready();
    const at = this.now();
    const record = checkSecretPolicy({ ...input, generation: 1, createdAt: new Date(at).toISOString() });
    const signed = signSecretPolicy(record, this.ca.signingMaterial());
    const inserted = await this.store.insertSecretPolicy({ id: record.id, epoch: record.epoch, generation: 1, signed: JSON.stringify(signed), createdAt: at, retiredAt: null });
    if (!inserted) throw new TesseraError('TESSERA_CONFLICT', `secret policy ${record.id} already has a key epoch ${record.epoch}`);
    return { record, signed };
  }

  /**
   * Publishes the next share generation of (id, epoch) after a refresh: `generation` must be the
   * stored one + 1 and the public key (commitments[0]) must not change; t, n and the key servers
   * are carried over, unless a reshare names new ones (`opts`). TESSERA_NOT_FOUND, TESSERA_SECRET_EPOCH_RETIRED, TESSERA_CONFLICT (another
   * refresh won), TESSERA_SECRET_POLICY_INVALID (another key).
   */
  async refresh(id: string, epoch: number, generation: number, commitments: string[], opts: RefreshOptions = {}): Promise<{ record: SecretPolicyRecord; signed: SignedSecretPolicy }> {
    await ready();
    const row = await this.store.getSecretPolicy(id, epoch);
    if (!row) throw new TesseraError('TESSERA_NOT_FOUND', 'no such secret policy key epoch');
    if (row.retiredAt !== null) throw new TesseraError('TESSERA_SECRET_EPOCH_RETIRED');
    if (generation !== row.generation + 1 || generation > MAX_GENERATION) throw new TesseraError('TESSERA_CONFLICT', `the key epoch is at share generation ${row.generation}; the next is ${row.generation + 1}`);
    const prev = recordOf(fromRow(row));
    if (commitments[0] !== prev.commitments[0]) throw new TesseraError('TESSERA_SECRET_POLICY_INVALID', 'a refresh keeps the public key: commitments[0] must not change');
    opts.check?.(prev);
    const reshare = opts.servers !== undefined ? { t: opts.t ?? prev.t, n: opts.servers.length, servers: opts.servers } : {};
    const record = checkSecretPolicy({ ...prev, ...reshare, generation, commitments, createdAt: new Date(this.now()).toISOString() });
    const signed = signSecretPolicy(record, this.ca.signingMaterial());
    if (!(await this.store.replaceSecretPolicyGeneration(id, epoch, row.generation, generation, JSON.stringify(signed)))) {
      throw new TesseraError('TESSERA_CONFLICT', 'the key epoch changed meanwhile (another refresh, or retired)');
    }
    return { record, signed };
  }

  /** Marks (id, epoch) retired. Idempotent: returns whether it was retired by this call. */
  async retire(id: string, epoch: number): Promise<{ retired: boolean; retiredAt: string }> {
    const row = await this.store.getSecretPolicy(id, epoch);
    if (!row) throw new TesseraError('TESSERA_NOT_FOUND', 'no such secret policy key epoch');
    if (row.retiredAt !== null) return { retired: false, retiredAt: new Date(row.retiredAt).toISOString() };
    const at = this.now();
    const changed = await this.store.retireSecretPolicy(id, epoch, at);
    const after = changed ? at : (await this.store.getSecretPolicy(id, epoch))?.retiredAt ?? at;
    return { retired: changed, retiredAt: new Date(after).toISOString() };
  }

  async get(id: string, epoch?: number): Promise<StoredSecretPolicy | undefined> {
    const row = await this.store.getSecretPolicy(id, epoch);
    return row && fromRow(row);
  }

  /** SPIFFE IDs of the key servers named by any key epoch (retired ones too) of policy `id`. */
  async keyServers(id: string): Promise<Set<string>> {
    await ready();
    const out = new Set<string>();
    for (const row of await this.store.listSecretPolicies()) {
      if (row.id === id) for (const s of recordOf(fromRow(row)).servers) out.add(s.spiffeId);
    }
    return out;
  }

  #keyServers: { at: number; ids: Set<string> } | undefined;

  /**
   * Whether `spiffeId` is a key server named by any key epoch of any policy (retired ones too): the
   * only identities whose `unseal` telemetry the control plane takes. The set is rebuilt on a miss at
   * most once a second (a new policy counts within a second; a flood of misses costs one scan a second).
   */
  async isKeyServer(spiffeId: string): Promise<boolean> {
    const now = this.now();
    const cached = this.#keyServers;
    if (cached && (cached.ids.has(spiffeId) || now - cached.at < 1000)) return cached.ids.has(spiffeId);
    await ready();
    const ids = new Set<string>();
    for (const row of await this.store.listSecretPolicies()) for (const s of recordOf(fromRow(row)).servers) ids.add(s.spiffeId);
    this.#keyServers = { at: now, ids };
    return ids.has(spiffeId);
  }

  async list(): Promise<StoredSecretPolicy[]> {
    return (await this.store.listSecretPolicies()).map(fromRow);
  }
}
