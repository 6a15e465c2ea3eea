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
