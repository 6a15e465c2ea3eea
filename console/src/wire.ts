/**
 * The shapes of the admin API answers the console reads: the subset of src/core/wire/* it uses,
 * restated here because those modules import Node-side types the browser build must not pull in.
 * Field names are the API's (snake_case); see src/core/wire/control-plane.ts, risk.ts, devices.ts.
 */
export interface EntryView {
  id: string; spiffe_id: string; selectors: string[]; attributes: Record<string, string | undefined>;
  created_at: string; revoked_at?: string; revoked_reason?: string;
}
export interface EntryListResponse { entries: EntryView[] }

export interface AuditRecordView { id: number; ts: string; actor: string; action: string; target: string; outcome: 'success' | 'denied'; code: string }
export interface AuditListResponse { records: AuditRecordView[] }
export interface AuditCheckpointResponse {
  checkpoint: { origin: string; size: number; root_hash: string; created_at: string };
  log_key: string;
  cosignatures?: { name: string; key_id: string; timestamp: number }[];
}

export interface PolicyVersionSummary { version: number; createdAt: string; author: string; reason: string; hash: string }
export interface PolicyHistoryResponse { versions: PolicyVersionSummary[]; bundle_version: number }
export type PolicyVersionResponse = PolicyVersionSummary & { policies: Record<string, string>; schema: Record<string, unknown> };
export interface PolicyFlip { principal: string; action: string; resource: string; before: 'allow' | 'deny'; after: 'allow' | 'deny'; count: number }
export interface PolicyDryRun {
  replayed: number; skipped: number; truncated: boolean; enforcers: number; span: { from: string; to: string } | null;
  flipped: number; flip_groups: number; flips: PolicyFlip[];
}

export interface SecretPolicySummary { id: string; epoch: number; generation: number; created_at: string; retired_at: string | null }
export interface SecretPolicyListResponse { policies: SecretPolicySummary[] }
export interface SecretPolicyResponse { id: string; epoch: number; generation: number; signed: { payload: string } }
export interface TelemetryListResponse { windows: { ts: string; requests: number; errors: number }[] }

export type RiskState = 'normal' | 'step-up' | 'quarantined';
export interface RiskReason { signal: string; observed: number; expected: number; unusual: number; edge?: string }
export interface RiskStateView {
  spiffe_id: string; state: RiskState; score: number; since: string; until: string | null; set_by: string; actor: string; reason: string; reasons: RiskReason[];
}
export interface RiskListResponse { identities: RiskStateView[] }
export interface RiskHistoryView extends Omit<RiskStateView, 'since'> { at: string; previous: RiskState }
export interface RiskShowResponse { spiffe_id: string; state: RiskStateView; history: RiskHistoryView[] }

export interface DeviceView {
  device_id: string; spiffe_id: string; owner: string | null; state: 'live' | 'revoked'; created_at: string;
  cert_not_after: string; revoked_at?: string; revoked_reason?: string; last_report_at?: string;
}
export interface DeviceListResponse { devices: DeviceView[] }
