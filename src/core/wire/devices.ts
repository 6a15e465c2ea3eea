/**
 * Wire types of the device API (issue 12): enrolment tokens, enrolment and renewal, posture
 * reports, and the admin views. JSON bodies, snake_case, times as ISO 8601 UTC.
 */
import type { DevicePostureContext, PostureReportJson } from '../devices/posture.js';

export type { PostureReportJson, PostureSubmission, DevicePostureContext } from '../devices/posture.js';

/** POST /v1/devices/tokens (admin). */
export interface CreateDeviceTokenRequest {
  /** The device id (`spiffe://<td>/device/<device_id>`); default a random `dev-...`. */
  device_id?: string;
  /** Username of the device's owner. */
  owner?: string;
  /** Labels, e.g. { "site": "berlin" }. */
  attributes?: Record<string, string>;
  /** Lifetime of the token (default 3600). */
  ttl_seconds?: number;
  /** Lifetime of each device certificate (default 86400). */
  cert_ttl_seconds?: number;
}
export interface CreateDeviceTokenResponse { token: string; token_ref: string; device_id: string; spiffe_id: string; expires_at: string }

/** POST /v1/device/enroll (anonymous, with the one-time token). */
export interface DeviceEnrollRequest { token: string; csr: string }
/** POST /v1/device/renew (as the device). */
export interface DeviceRenewRequest { csr: string }
/** Answer of enroll and renew: the device's X.509 identity and the trust bundle. */
export interface DeviceCertResponse {
  device_id: string;
  spiffe_id: string;
  cert_pem: string;
  not_before: string;
  not_after: string;
  bundle_pem: string;
}

/** Answer of POST /v1/device/posture (body: PostureSubmission). */
export interface PostureAcceptedResponse { accepted: true; device_id: string; received_at: string; posture: DevicePostureContext }

/** A device as admins see it (GET /v1/devices, /v1/devices/:id). */
export interface DeviceView {
  device_id: string;
  spiffe_id: string;
  owner: string | null;
  attributes: Record<string, string>;
  state: 'live' | 'revoked';
  created_at: string;
  cert_serial: string;
  cert_not_after: string;
  cert_ttl_seconds: number;
  revoked_at?: string;
  revoked_reason?: string;
  /** What policies see now in `context.device`. */
  posture: DevicePostureContext;
  /** The latest report's time (as the device stamped it) and when it was received. */
  last_report_at?: string;
  last_received_at?: string;
}
export interface DeviceListResponse { devices: DeviceView[] }
/** GET /v1/devices/:id: the view plus the latest report and the report history (newest first). */
export interface DeviceShowResponse extends DeviceView {
  report?: PostureReportJson;
  history: { reported_at: string; received_at: string }[];
}
/** POST /v1/devices/:id/revoke. */
export interface RevokeDeviceRequest { reason: string }
export interface RevokeDeviceResponse extends DeviceView { bundle_version: number }
