/**
 * Secret-policy records on the control plane: validated, signed by the active CA and stored, one
 * per (policy id, key epoch). The dealer runs in the CLI: nothing here ever sees k_p or a share,
 * only the public commitments and the key servers' addresses.
 */
import { TesseraError } from '../../core/errors.js';
import { ready } from '../../core/secrets/index.js';
import { checkSecretPolicy, signSecretPolicy, type SecretPolicyRecord, type SignedSecretPolicy } from '../../core/secrets/policy-record.js';
import type { CertificateAuthority } from '../ca/ca.js';
import type { Store } from '../store/store.js';

export interface StoredSecretPolicy {
  id: string;
  epoch: number;
  createdAt: string;
  signed: SignedSecretPolicy;
}

export class SecretPolicyService {
  constructor(private readonly store: Store, private readonly ca: CertificateAuthority, private readonly now: () => number = Date.now) {}

  /** Validates, signs and stores. TESSERA_CONFLICT if this (id, epoch) exists. */
  async create(input: Omit<SecretPolicyRecord, 'createdAt'>): Promise<{ record: SecretPolicyRecord; signed: SignedSecretPolicy }> {
    await ready();
    const at = this.now();
    const record = checkSecretPolicy({ ...input, createdAt: new Date(at).toISOString() });
    const signed = signSecretPolicy(record, this.ca.signingMaterial());
    const inserted = await this.store.insertSecretPolicy({ id: record.id, epoch: record.epoch, signed: JSON.stringify(signed), createdAt: at });
    if (!inserted) throw new TesseraError('TESSERA_CONFLICT', `secret policy ${record.id} already has a key epoch ${record.epoch}`);
    return { record, signed };
  }

  async get(id: string, epoch?: number): Promise<StoredSecretPolicy | undefined> {
    const row = await this.store.getSecretPolicy(id, epoch);
    return row && { id: row.id, epoch: row.epoch, createdAt: new Date(row.createdAt).toISOString(), signed: JSON.parse(row.signed) as SignedSecretPolicy };
  }

  async list(): Promise<StoredSecretPolicy[]> {
    return (await this.store.listSecretPolicies()).map((row) => ({ id: row.id, epoch: row.epoch, createdAt: new Date(row.createdAt).toISOString(), signed: JSON.parse(row.signed) as SignedSecretPolicy }));
  }
}
