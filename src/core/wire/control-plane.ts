/**
 * The control plane's HTTP API on the wire: each request body and response, as the route handlers
 * (src/server/<area>/routes.ts, src/server/credentials/apikeys.ts) send them, declared once and used
 * by both sides: the handlers check what they return against them (`satisfies`), the callers
 * (agent, key server node, admin operations, CLI, demo, benchmarks) type `ApiClient.call` with them.
 *
 * Field names are snake_case on the wire, except where a stored object is returned as it is (CA
 * summaries, policy versions, secret policy records), which keep their camelCase names.
 * Times are ISO 8601 strings. Errors are `{error: {code, message}}` (src/common/api/errors.ts).
 */
import type { SpiffeBundleJwks, OidcJwk } from '../bundle.js';
import type { SignedPolicyBundle } from '../policy/bundle.js';
import type { TelemetryWindow } from '../risk/types.js';
import type { SecretPolicyRecord, SecretPolicyServer, SignedSecretPolicy } from '../secrets/policy-record.js';
import type { DkgTranscriptWire } from './dkg.js';

// --- Health ---------------------------------------------------------------------------------

/** GET /healthz (unauthenticated). */
export interface HealthResponse {
  status: 'ok'; trust_domain: string; bundle_sequence: number;
  /** Whether this replica holds the leader lease (runs the single-writer duties). */
  leader: boolean;
  /** This replica's id in the lease (host/pid/random). */
  replica: string;
}

// --- Registration entries and join tokens (admin) -------------------------------------------

/** The attributes of an entry (policy inputs). */
export interface EntryAttributes { app?: string; site?: string; compliance?: string; location?: string; env?: string }

/** An entry as every entry route and the SVID issuance answers show it. */
export interface EntryView {
  id: string;
  spiffe_id: string;
  selectors: string[];
  attributes: EntryAttributes;
  x509_ttl_seconds: number;
  jwt_ttl_seconds: number;
  apikey_max_ttl_seconds: number;
  created_at: string;
  /** Only on a revoked entry. */
  revoked_at?: string;
  revoked_reason?: string;
}

/** POST /v1/entries → 201 EntryView. */
export interface CreateEntryRequest {
  spiffe_id: string;
  selectors?: string[];
  attributes?: EntryAttributes;
  x509_ttl_seconds?: number;
  jwt_ttl_seconds?: number;
  apikey_max_ttl_seconds?: number;
}

/** GET /v1/entries. (GET /v1/entries/:id answers one EntryView.) */
export interface EntryListResponse { entries: EntryView[] }

/** DELETE /v1/entries/:id. */
export interface DeleteEntryResponse { deleted: string; spiffe_id: string; bundle_version: number }

/** POST /v1/entries/:id/revoke. */
export interface RevokeEntryRequest { reason: string }
export type RevokeEntryResponse = EntryView & { bundle_version: number };

/** POST /v1/tokens → 201. The token is shown once. */
export interface CreateTokenRequest { entry_id: string; ttl_seconds?: number }
export interface CreateTokenResponse { token: string; token_ref: string; entry_id: string; spiffe_id: string; expires_at: string }

// --- X509-SVIDs, JWT-SVIDs and the trust bundle ---------------------------------------------

/** POST /v1/agent/join (anonymous, with a one-time join token). */
export interface JoinRequest { join_token: string; csr: string }

/** POST /v1/svid/renew (as the SVID being renewed). */
export interface RenewRequest { csr: string; bundle_sequence?: number }

/** The answer of join and renew. `bundle_pem` is left out when the caller already holds `bundle_sequence`. */
export interface SvidResponse {
  spiffe_id: string;
  svid_pem: string;
  not_before: string;
  not_after: string;
  bundle_sequence: number;
  bundle_pem?: string;
  entry: EntryView;
}

/** POST /v1/svid/jwt. */
export interface JwtSvidRequest { audience: string[]; ttl_seconds?: number }
export interface JwtSvidResponse { token: string; spiffe_id: string; audience: string[]; expires_at: string }

/** GET /v1/bundle (the default `format=jwks`; `format=pem` answers the PEM text). */
export type BundleResponse = SpiffeBundleJwks;

/** GET /v1/bundle/watch?after=SEQ&timeout_seconds=S (long poll). */
export interface BundleWatchResponse {
  sequence: number; changed: boolean; bundle_pem: string; jwks: SpiffeBundleJwks;
  /** With `&federation_after=REV`: the federated bundles when their revision is above REV (issue 14). */
  federation?: import('./federation.js').FederatedBundlesFeed;
}

/** GET /keys (the OIDC `jwks_uri`). */
export interface OidcKeysResponse { keys: OidcJwk[] }

// --- API keys ---------------------------------------------------------------------------------

/** POST /v1/apikeys (as a live SVID) → 201. The key is shown once. */
export interface CreateApiKeyRequest { scopes: string[]; ttl_seconds?: number }
export interface CreateApiKeyResponse { api_key: string; id: string; owner: string; scopes: string[]; expires_at: string }

/** POST /v1/apikeys/verify (as a live SVID). */
export interface VerifyApiKeyRequest { api_key: string; scope?: string }
export interface VerifyApiKeyResponse { valid: true; id: string; owner: string; scopes: string[]; expires_at: string }

/** An API key as listed (never the key itself). */
export interface ApiKeyView {
  id: string;
  owner: string;
  scopes: string[];
  created_at: string;
  expires_at: string;
  state: 'active' | 'revoked' | 'expired';
  /** Only on a revoked key. */
  revoked_at?: string;
  revoked_reason?: string | null;
}

/** GET /v1/apikeys?owner=&limit=. */
export interface ApiKeyListResponse { api_keys: ApiKeyView[] }

/** POST /v1/apikeys/:id/revoke → ApiKeyView. */
export interface RevokeApiKeyRequest { reason?: string }

// --- Certificate authorities (admin) ----------------------------------------------------------

/** One CA (the control plane's CaSummary). */
export interface CaAuthority {
  id: string;
  state: 'prepared' | 'active' | 'retired';
  notBefore: string;
  notAfter: string;
  activateAt: string | null;
  jwtKid: string;
  inBundle: boolean;
}

/** GET /v1/ca. */
export interface CaListResponse { trust_domain: string; bundle_sequence: number; authorities: CaAuthority[] }

/** POST /v1/ca/rotate. */
export interface CaRotateRequest { grace_seconds?: number }
export interface CaRotateResponse { prepared: CaAuthority; bundle_sequence: number }

// --- Audit (admin) ------------------------------------------------------------------------------

/** One stored audit record. */
export interface AuditRecordView {
  id: number;
  ts: string;
  actor: string;
  action: string;
  target: string;
  outcome: 'success' | 'denied';
  code: string;
  detail: Record<string, unknown>;
  principal?: string;
}

/** GET /v1/audit?limit=&after=&action=&outcome=. */
export interface AuditListResponse { records: AuditRecordView[] }

/**
 * One audit record as exported (`tessera audit tail --json`, the syslog exporter's MSG): the stored
 * record and its Merkle leaf hash (base64 SHA-256(0x00 ‖ auditLeafData(record))), so that a receiver
 * can check it against a checkpoint later (`tessera audit prove ID`).
 */
export interface AuditExportRecord extends AuditRecordView { leaf_hash: string }

/**
 * GET /v1/audit/tail?after=ID[&follow=true] (admin): newline-delimited JSON (application/x-ndjson),
 * one AuditExportRecord a line in id order; empty lines are keep-alives. Without follow, the last
 * line is AuditTailEnd: a stream without it was cut short.
 */
export interface AuditTailEnd { end: true; last_id: number }

/** A signed checkpoint of the audit log (C2SP tlog-checkpoint); hashes are base64, as in the note. */
export interface AuditCheckpointView {
  /** The whole signed note: check it with `log_key` (openCheckpoint). */
  note: string;
  origin: string;
  size: number;
  root_hash: string;
  created_at: string;
}

/** A witness's cosignature of a checkpoint (C2SP tlog-cosignature v1), as stored by the control plane. */
export interface AuditCosignatureView {
  name: string;
  key_id: string;
  /** The witness's cosignature/v1 verifier key: check `line` over the checkpoint text with it. */
  witness_key: string;
  /** POSIX seconds, from the cosignature. */
  timestamp: number;
  /** The signature line, also appended to the checkpoint's note. */
  line: string;
}

/**
 * GET /v1/audit/checkpoint[?size=N] (admin): the latest (or size-N) checkpoint, whose note carries the
 * witnesses' cosignature lines after the log's signature, and the log's verifier key.
 */
export interface AuditCheckpointResponse {
  checkpoint: AuditCheckpointView;
  /** C2SP signed-note verifier key of the log: `<origin>+<key id>+<base64(0x01 ‖ Ed25519 key)>`. */
  log_key: string;
  /** The witnesses' cosignatures stored for this checkpoint (absent from servers before witnesses). */
  cosignatures?: AuditCosignatureView[];
}

/** POST /v1/audit/cosignatures (admin): a witness's cosignature of the stored checkpoint of `size`. */
export interface AuditCosignatureRequest { size: number; witness_key: string; line: string }
export interface AuditCosignatureResponse { stored: true; size: number; name: string; key_id: string; timestamp: number }

/** A tree as a witness alarm names it (size −1 and root "" when the checkpoint could not be read). */
export interface WitnessTreeRef { size: number; root_hash: string }

/** POST /v1/audit/alarms (any live SVID, or the admin): a witness reports a contradicting checkpoint. */
export interface WitnessAlarmRequest {
  kind: 'fork' | 'rewind' | 'bad_signature' | 'key_changed';
  message: string;
  held: WitnessTreeRef;
  seen: WitnessTreeRef;
  /** The contradicting note: the evidence (at most 16 KiB). */
  note: string;
  note_hash: string;
}
export interface WitnessAlarmResponse { recorded: true }

/** GET /v1/audit/checkpoints?after_size=N&limit=L (admin): stored checkpoints, by increasing size. */
export interface AuditCheckpointsResponse {
  checkpoints: AuditCheckpointView[];
  log_key: string;
}

/** GET /v1/audit/proof/inclusion?id=N[&size=S] (admin): RFC 9162 §2.1.3 inclusion proof. */
export interface AuditInclusionResponse {
  record: AuditRecordView;
  leaf_index: number;
  /** base64 SHA-256(0x00 ‖ auditLeafData(record)). */
  leaf_hash: string;
  /** base64 hashes, leaf to root. */
  proof: string[];
  checkpoint: AuditCheckpointView;
  log_key: string;
}

/** GET /v1/audit/proof/consistency?from=M&to=N (admin): RFC 9162 §2.1.4 consistency proof. */
export interface AuditConsistencyResponse {
  from: number;
  to: number;
  proof: string[];
  /** The checkpoint of size `to`. */
  checkpoint: AuditCheckpointView;
  log_key: string;
}

// --- Policy -------------------------------------------------------------------------------------

/** POST /v1/policies (admin). */
export interface ApplyPolicyRequest { files: Record<string, string>; schema?: Record<string, unknown>; reason: string; dry_run?: boolean }

/** A group of replayed decisions whose outcome would change. */
export interface PolicyFlip {
  principal: string;
  action: string;
  resource: string;
  context: Record<string, string | number | boolean>;
  before: 'allow' | 'deny';
  after: 'allow' | 'deny';
  count: number;
}

/** What a dry run replayed and what would change (the control plane's DryRun). */
export interface PolicyDryRun {
  /** Decisions replayed. */
  replayed: number;
  /** Sampled records not replayed (malformed, or over today's ingestion limits). */
  skipped: number;
  /** The replay stopped at its time budget. */
  truncated: boolean;
  /** Enforcers whose decisions were sampled. */
  enforcers: number;
  /** When the oldest and the newest replayed decision were made, null if none. */
  span: { from: string; to: string } | null;
  /** Replayed decisions that would change. */
  flipped: number;
  /** Distinct (principal, action, resource, context) among them; `flips` lists the largest. */
  flip_groups: number;
  flips: PolicyFlip[];
}

/** POST /v1/policies with `dry_run: true` (200): nothing applied. */
export type PolicyDryRunResponse = PolicyDryRun & { dry_run: true };
/** POST /v1/policies (201): the new version, with the same replay. */
export type AppliedPolicyResponse = PolicyDryRun & { version: number; hash: string; bundle_version: number };
export type ApplyPolicyResponse = PolicyDryRunResponse | AppliedPolicyResponse;

/** A policy version without its files. */
export interface PolicyVersionSummary { version: number; createdAt: string; author: string; reason: string; hash: string }

/** GET /v1/policies?limit= (admin). */
export interface PolicyHistoryResponse { versions: PolicyVersionSummary[]; bundle_version: number }

/** GET /v1/policies/:version (admin). */
export type PolicyVersionResponse = PolicyVersionSummary & { policies: Record<string, string>; schema: Record<string, unknown> };

/** POST /v1/policies/rollback (admin) → 201. */
export interface RollbackPolicyRequest { version: number; reason: string }
export interface RollbackPolicyResponse { version: number; hash: string; bundle_version: number }

/** GET /v1/policy/bundle?after=V&timeout_seconds=S (a live SVID or the admin; long poll). */
/**
 * GET /v1/policy/bundle?after=N[&timeout_seconds=T][&witness=S]. With `witness` (the size of the audit
 * checkpoint the agent's witness holds, 0 for none) the answer carries the latest checkpoint and the
 * consistency proof from S (base64 hashes), changed or not; absent until the log has a checkpoint.
 */
export interface PolicyBundleResponse { version: number; changed: boolean; bundle: SignedPolicyBundle; checkpoint?: { note: string; consistency: string[] } }

/** One local authorization decision, as an enforcer ships it. */
export interface DecisionRecord {
  ts: number;
  principal: string;
  action: string;
  resource: string;
  context: Record<string, string | number | boolean>;
  allow: boolean;
  reasons: string[];
}

/** POST /v1/decisions (a live SVID: the enforcer). */
export interface DecisionsRequest { decisions: DecisionRecord[] }
export interface DecisionsResponse { accepted: number; refused: number }

// --- Telemetry (issue 11) ------------------------------------------------------------------------

/**
 * POST /v1/telemetry (a live SVID: the reporter, a party to every edge it reports). `dropped`: calls
 * the sidecar could not attribute to an edge (its per-window edge bound) since its last batch.
 */
export interface TelemetryRequest { windows: TelemetryWindow[]; dropped?: number }
export interface TelemetryResponse { accepted: number }
/** GET /v1/telemetry?identity=ID&after=N&since=T&limit=N (admin). `id`: the stored row, for paging with `after`. */
export interface TelemetryListResponse { windows: (TelemetryWindow & { id: number; reported_by: string })[] }

// --- Secret policies ------------------------------------------------------------------------------

/**
 * What the control plane learned from a DKG transcript before it signed (public facts only, the same
 * it audits): the kind, the transcript hash (base64url), QUAL, who stopped, provable misbehaviour,
 * the dealers left out, and who confirmed the result.
 */
export interface DkgVerdictWire {
  mode: 'dkg';
  kind: 'dkg' | 'refresh' | 'reshare';
  transcript: string;
  qual: number[];
  stopped: { spiffe_id: string; round: string }[];
  misbehaviour: { spiffe_id: string; round: string; what: string }[];
  excluded: { index: number; why: string }[];
  confirmed_by: string[];
}

/**
 * POST /v1/secret-policies (admin) → 201. With `dkg` (the relay's transcript of a new key generated
 * by the key servers, kind `dkg`), the record is signed only if the transcript checks out and names
 * exactly these commitments, threshold and servers; without it the record is a dealer's (weaker mode).
 */
export interface CreateSecretPolicyRequest { id: string; epoch: number; t: number; n: number; commitments: string[]; servers: SecretPolicyServer[]; dkg?: DkgTranscriptWire }
export interface CreateSecretPolicyResponse { id: string; epoch: number; record: SecretPolicyRecord; signed: SignedSecretPolicy; dkg?: DkgVerdictWire }

/** One key epoch of a secret policy, as listed. */
export interface SecretPolicySummary { id: string; epoch: number; generation: number; created_at: string; retired_at: string | null }

/** GET /v1/secret-policies (admin). */
export interface SecretPolicyListResponse { policies: SecretPolicySummary[] }

/** GET /v1/secret-policies/:id[?epoch=] (a live SVID or the admin). */
export interface SecretPolicyResponse { id: string; epoch: number; generation: number; created_at: string; signed: SignedSecretPolicy }

/**
 * POST /v1/secret-policies/:id/epochs/:epoch/refresh (admin): the next share generation of the same
 * key. `dkg` (kind `refresh` or `reshare`): the key servers' dealerless transcript, checked before
 * signing. A reshare also names the new threshold `t` and `servers` (only with a `reshare` transcript).
 */
export interface RefreshSecretPolicyRequest { generation: number; commitments: string[]; t?: number; servers?: SecretPolicyServer[]; dkg?: DkgTranscriptWire }
export interface RefreshSecretPolicyResponse { id: string; epoch: number; generation: number; record: SecretPolicyRecord; signed: SignedSecretPolicy; dkg?: DkgVerdictWire }

/** POST /v1/secret-policies/:id/epochs/:epoch/retire (admin; empty body). */
export interface RetireSecretPolicyResponse { id: string; epoch: number; retired: boolean; retired_at: string | null }
/** POST /v1/secret-policies/:id/provision-authorization (a person's certificate; admin policy as the op's write). */
export interface ProvisionAuthorizationRequest { epoch: number; op: 'create' | 'refresh' | 'retire'; key_servers: string[] }
/** `authorization`: the header value (x-tessera-provision-authorization) for the key servers named. */
export interface ProvisionAuthorizationResponse { authorization: string; jti: string; expires_at: string }
