/**
 * The admin policy as admin-set, versioned state, kept like the risk engine's configuration
 * (risk/config-service.ts): each version is a meta row `admin_policy:v:NNNNNNNNN` with the Cedar
 * text, its author, reason, time and SHA-256; a rollback is a new version with an old version's text;
 * the highest version is the one in force; none stored means the built-in default (version 0,
 * DEFAULT_ADMIN_POLICY). Every version was validated against the admin schema before it was stored.
 *
 * Versions are numbered by an atomic counter (several processes may share the store); the pointer
 * `admin_policy:current` only ever moves forward (compare and set), so the newest write wins.
 */
import { createHash } from 'node:crypto';
import { DEFAULT_ADMIN_POLICY } from '../../core/policy/admin-schema.js';
import { compileAdminPolicy } from '../../core/policy/admin-engine.js';
import type { CompiledPolicySet } from '../../core/policy/engine.js';
import { advanceMetaPointer } from '../store/meta-pointer.js';
import type { Store } from '../store/store.js';

const PREFIX = 'admin_policy:v:';
const CURRENT = 'admin_policy:current';
const SEQUENCE = 'admin_policy:sequence';

export interface AdminPolicyVersion {
  /** 1, 2, ...; 0 is the built-in default (never stored). */
  version: number;
  /** Cedar text. */
  policy: string;
  author: string;
  reason: string;
  createdAt: number;
  /** sha256 hex of the policy text (UTF-8). */
  hash: string;
}

const key = (version: number): string => `${PREFIX}${String(version).padStart(9, '0')}`;
const hashOf = (text: string): string => createHash('sha256').update(text, 'utf8').digest('hex');

export const DEFAULT_ADMIN_POLICY_VERSION: Readonly<AdminPolicyVersion> = Object.freeze({
  version: 0, policy: DEFAULT_ADMIN_POLICY, author: '', reason: 'built-in default', createdAt: 0, hash: hashOf(DEFAULT_ADMIN_POLICY),
});

export class AdminPolicyService {
  constructor(private readonly store: Store, private readonly now: () => number = Date.now) {}

  /** The number of the version in force; 0 for the default. */
  async currentVersion(): Promise<number> {
    return Number((await this.store.getMeta(CURRENT)) ?? '0');
  }

  async current(): Promise<AdminPolicyVersion> {
    return (await this.version(await this.currentVersion())) ?? DEFAULT_ADMIN_POLICY_VERSION;
  }

  async version(version: number): Promise<AdminPolicyVersion | undefined> {
    if (version === 0) return DEFAULT_ADMIN_POLICY_VERSION;
    const raw = await this.store.getMeta(key(version));
    return raw === undefined ? undefined : (JSON.parse(raw) as AdminPolicyVersion);
  }

  /** Newest first, at most `limit`. */
  async history(limit: number): Promise<AdminPolicyVersion[]> {
    const rows = await this.store.listMeta(PREFIX);
    return rows.slice(-limit).reverse().map((r) => JSON.parse(r.value) as AdminPolicyVersion);
  }

  /**
   * Validates `policy` against the admin schema (TESSERA_POLICY_INVALID naming each problem; nothing
   * stored) and stores it as the new version in force. Returns the version and its compiled form.
   */
  async set(policy: string, author: string, reason: string): Promise<{ version: AdminPolicyVersion; compiled: CompiledPolicySet }> {
    const compiled = compileAdminPolicy(policy);
    const version = await this.store.incrementMeta(SEQUENCE);
    const rec: AdminPolicyVersion = { version, policy, author, reason, createdAt: this.now(), hash: hashOf(policy) };
    await this.store.setMetaIfAbsent(key(version), JSON.stringify(rec));
    await advanceMetaPointer(this.store, CURRENT, version);
    return { version: rec, compiled };
  }

  /** A new version with the text of `version` (0: the default); undefined when there is no such version. */
  async rollback(version: number, author: string, reason: string): Promise<{ version: AdminPolicyVersion; compiled: CompiledPolicySet } | undefined> {
    const old = await this.version(version);
    if (!old) return undefined;
    return this.set(old.policy, author, `rollback to v${version}: ${reason}`);
  }
}
