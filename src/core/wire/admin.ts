/**
 * Wire types of the admin policy routes (`/v1/admin/policy...`, issue 12): what `tessera admin policy`
 * sends and reads.
 */

/** One version of the admin policy. Version 0 is the built-in default. */
export interface AdminPolicyVersionView {
  version: number;
  /** Cedar text. */
  policy: string;
  /** SPIFFE ID of the admin who set it ("" for the default). */
  author: string;
  reason: string;
  /** ISO 8601; the epoch for the default. */
  created_at: string;
  /** sha256 hex of the policy text. */
  hash: string;
}

/** GET /v1/admin/policy: the version in force, the MFA age the server counts as fresh, and the schema. */
export interface AdminPolicyResponse extends AdminPolicyVersionView {
  mfa_max_age_seconds: number;
  /** The admin schema in Cedar's schema syntax. */
  schema: string;
}

/** GET /v1/admin/policy/history?limit=N: newest first (without the built-in default). */
export interface AdminPolicyHistoryResponse {
  versions: Omit<AdminPolicyVersionView, 'policy'>[];
  current: number;
}

/** PUT /v1/admin/policy. */
export interface AdminPolicySetRequest {
  policy: string;
  reason: string;
}

/** POST /v1/admin/policy/rollback: a new version with the text of `version` (0: the default). */
export interface AdminPolicyRollbackRequest {
  version: number;
  reason: string;
}
