/**
 * The risk engine's configuration as admin-set, versioned state (issue 11: "thresholds and actions are
 * configuration the admin sets and that is versioned and audited like policy"). Each version is a meta
 * row `risk_config:v:NNNNNNNNN` holding the whole configuration in its canonical JSON form (every key,
 * so a version means the same after the code's defaults change), its author, reason, time and SHA-256.
 * A rollback is a new version with an old version's content, as for policy. The highest version is the
 * one in force; none stored means the control plane's default (version 0).
 *
 * Versions are numbered by an atomic counter (several processes may share the store); the pointer
 * `risk_config:current` only ever moves forward (compare and set), so the newest write wins.
 */
import { createHash } from 'node:crypto';
import { canonicalJson } from '../../core/canonical-json.js';
import { parseRiskConfig, riskConfigJson, type RiskConfig } from '../../core/risk/config.js';
import { advanceMetaPointer } from '../store/meta-pointer.js';
import type { Store } from '../store/store.js';

const PREFIX = 'risk_config:v:';
const CURRENT = 'risk_config:current';
const SEQUENCE = 'risk_config:sequence';

export interface RiskConfigVersion {
  /** 1, 2, ...; 0 is the built-in default (never stored). */
  version: number;
  /** The canonical JSON form (snake_case, every key), as `parseRiskConfig` reads it. */
  config: Record<string, unknown>;
  author: string;
  reason: string;
  createdAt: number;
  /** sha256 hex of the canonical JSON text of `config`. */
  hash: string;
}

const key = (version: number): string => `${PREFIX}${String(version).padStart(9, '0')}`;

function hashOf(config: Record<string, unknown>): string {
  return createHash('sha256').update(canonicalJson(config)).digest('hex');
}

export class RiskConfigService {
  readonly #default: RiskConfigVersion;

  /** `fallback`: the configuration in force while no version is stored. */
  constructor(private readonly store: Store, fallback: RiskConfig, private readonly now: () => number = Date.now) {
    const config = riskConfigJson(fallback);
    this.#default = { version: 0, config, author: '', reason: 'built-in default', createdAt: 0, hash: hashOf(config) };
  }

  /** The version in force (one meta read when nothing changed is the caller's concern: see `currentVersion`). */
  async current(): Promise<RiskConfigVersion> {
    const v = await this.currentVersion();
    return v === 0 ? this.#default : (await this.version(v)) ?? this.#default;
  }

  /** The number of the version in force; 0 for the default. */
  async currentVersion(): Promise<number> {
    return Number((await this.store.getMeta(CURRENT)) ?? '0');
  }

  /** The engine's settings of a stored version (or the default's for 0). */
  settings(v: RiskConfigVersion): RiskConfig {
    return parseRiskConfig(v.config);
  }

  async version(version: number): Promise<RiskConfigVersion | undefined> {
    if (version === 0) return this.#default;
    const raw = await this.store.getMeta(key(version));
    return raw === undefined ? undefined : (JSON.parse(raw) as RiskConfigVersion);
  }

  /** Newest first, at most `limit`. */
  async history(limit: number): Promise<RiskConfigVersion[]> {
    const rows = await this.store.listMeta(PREFIX);
    return rows.slice(-limit).reverse().map((r) => JSON.parse(r.value) as RiskConfigVersion);
  }

  /** Validates `input` (the JSON form; TESSERA_CONFIG_INVALID with the parser's message) and stores it as the new version in force. */
  async set(input: unknown, author: string, reason: string): Promise<RiskConfigVersion> {
    const config = riskConfigJson(parseRiskConfig(input));
    const version = await this.store.incrementMeta(SEQUENCE);
    const rec: RiskConfigVersion = { version, config, author, reason, createdAt: this.now(), hash: hashOf(config) };
    await this.store.setMetaIfAbsent(key(version), JSON.stringify(rec));
    await advanceMetaPointer(this.store, CURRENT, version);
    return rec;
  }

  /** A new version with the content of `version` (0: the default); undefined when there is no such version. */
  async rollback(version: number, author: string, reason: string): Promise<RiskConfigVersion | undefined> {
    const old = await this.version(version);
    if (!old) return undefined;
    return this.set(old.config, author, `rollback to v${version}: ${reason}`);
  }
}
