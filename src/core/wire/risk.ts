/**
 * Wire types of the risk routes (`/v1/risk/...`, issue 11): what `tessera risk` sends and reads.
 * Times are ISO 8601 UTC; `until` is null for `normal`.
 */
import type { RiskReason, RiskState } from '../risk/types.js';

/** One identity's risk state (GET /v1/risk, and `state` of GET /v1/risk/:id). */
export interface RiskStateView {
  spiffe_id: string;
  state: RiskState;
  score: number;
  since: string;
  until: string | null;
  /** `engine`, `admin` or `expiry` (a TTL that ended). */
  set_by: string;
  actor: string;
  /** The reason an admin gave, or a summary of the engine's reasons. */
  reason: string;
  reasons: RiskReason[];
}

export interface RiskListResponse {
  identities: RiskStateView[];
}

export interface RiskHistoryView extends Omit<RiskStateView, 'since'> {
  at: string;
  previous: RiskState;
}

/** GET /v1/risk/:id. `engine`: the engine's baseline and recent windows (added with the engine; absent until then). */
export interface RiskShowResponse {
  spiffe_id: string;
  /** `normal` with score 0 and no history for an identity never scored nor set. */
  state: RiskStateView;
  history: RiskHistoryView[];
  engine?: Record<string, unknown>;
}

/** POST /v1/risk/:id/quarantine and /v1/risk/:id/step-up. */
export interface RiskSetRequest {
  /** 60 s .. 30 days. */
  ttl_seconds: number;
  /** Printable ASCII, 1..256 characters. */
  reason: string;
  /** 0..100; default: the identity's current score. */
  score?: number;
  /** Allow an identity that has no registration entry (yet). */
  force?: boolean;
}

/** POST /v1/risk/:id/release. */
export interface RiskReleaseRequest {
  reason: string;
}

export interface RiskChangeResponse {
  state: RiskStateView;
  previous: RiskState;
  /** The policy bundle version that carries the change to agents. */
  bundle_version?: number;
}

/** One version of the risk engine's configuration (`/v1/risk/config...`). Version 0 is the built-in default. */
export interface RiskConfigVersionView {
  version: number;
  /** The whole configuration in its JSON form (snake_case, every key), as `tessera risk config set` reads it. */
  config: Record<string, unknown>;
  /** SPIFFE ID of the admin who set it ('' for the default). */
  author: string;
  reason: string;
  created_at: string;
  /** sha256 hex of the canonical JSON of `config`. */
  hash: string;
}

/** GET /v1/risk/config: the version in force; `engine_version`: the one the leader's engine runs (this process's, when it is the leader). */
export interface RiskConfigResponse extends RiskConfigVersionView {
  engine_version?: number;
}

/** PUT /v1/risk/config. */
export interface RiskConfigSetRequest {
  config: Record<string, unknown>;
  /** Printable ASCII, 1..256 characters. */
  reason: string;
}

/** POST /v1/risk/config/rollback: a new version with the content of `version` (0: the built-in default). */
export interface RiskConfigRollbackRequest {
  version: number;
  reason: string;
}

export interface RiskConfigHistoryResponse {
  /** Newest first. */
  versions: RiskConfigVersionView[];
  current: number;
}
