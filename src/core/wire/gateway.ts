/**
 * Wire types and names of the gateway for people (issue 12, `tessera gateway`): the registration of a
 * gateway on the control plane, its authorization code flow, session checks and device posture.
 * JSON bodies, snake_case; times as ms since the epoch where a gateway computes with them.
 */
import type { DevicePostureContext } from '../devices/posture.js';

/** Gateway and route names: what goes into `spiffe://<td>/tessera/gateway/<name>/app/<route>`. */
export const GATEWAY_NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;
export const ROUTE_NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;
/** Where the control plane sends the browser back with the code: `<gateway url>` + this. */
export const GATEWAY_CALLBACK_PATH = '/_tessera/callback';
/** A one-time authorization code and a PKCE verifier (RFC 7636 §4.1: 43-128 unreserved characters). */
export const GATEWAY_CODE = /^gwc_[A-Za-z0-9_-]{43}$/;
export const PKCE_VERIFIER = /^[A-Za-z0-9._~-]{43,128}$/;
/** S256 challenge: BASE64URL(SHA256(verifier)) without padding (RFC 7636 §4.2). */
export const PKCE_CHALLENGE = /^[A-Za-z0-9_-]{43}$/;
/** The session reference a gateway checks: the control plane session's stored hash (not a bearer). */
export const SESSION_REF = /^[0-9a-f]{64}$/;

/**
 * The SPIFFE ID standing for an app behind a gateway in decision records and telemetry windows. It is
 * under the reserved `/tessera` tree, so no workload can hold it, and under the gateway's own name, so
 * a gateway can only report about its own apps.
 *
 * @example gatewayAppId('example.org', 'apps', 'wiki') // 'spiffe://example.org/tessera/gateway/apps/app/wiki'
 */
export function gatewayAppId(trustDomain: string, gateway: string, route: string): string {
  return `${gatewayAppPrefix(trustDomain, gateway)}${route}`;
}

/** The prefix of every app identity of gateway `gateway`. */
export function gatewayAppPrefix(trustDomain: string, gateway: string): string {
  return `spiffe://${trustDomain}/tessera/gateway/${gateway}/app/`;
}

/** Whether `id` names a person of `trustDomain` (`spiffe://<td>/user/<username>`). */
export function isUserId(trustDomain: string, id: string): boolean {
  const prefix = `spiffe://${trustDomain}/user/`;
  return id.startsWith(prefix) && /^[a-z0-9][a-z0-9._-]{0,62}$/.test(id.slice(prefix.length));
}

/** A registered gateway as the admin API shows it. */
export interface GatewayView {
  name: string;
  /** The SPIFFE ID of the gateway's own registration entry (its SVID): how the control plane knows it. */
  spiffe_id: string;
  /** The gateway's public origins, one per host it serves, e.g. `https://wiki.example.com:8443`. */
  urls: string[];
  /** The redirect URIs the control plane sends codes to: each origin + {@link GATEWAY_CALLBACK_PATH}. */
  redirect_uris: string[];
  created_at: string;
  created_by: string;
}

/** POST /v1/gateways (admin). */
export interface AddGatewayRequest { name: string; spiffe_id: string; urls: string[] }
export interface AddGatewayResponse { gateway: GatewayView }
export interface GatewayListResponse { gateways: GatewayView[] }

/** POST /v1/gateway/token (the gateway's SVID): redeems a one-time code with its PKCE verifier. */
export interface GatewayTokenRequest { code: string; code_verifier: string; redirect_uri: string }
export interface GatewayTokenResponse {
  username: string;
  spiffe_id: string;
  groups: string[];
  /** When MFA was last proven in the control-plane session (ms), or null. */
  mfa_at: number | null;
  /** The control-plane session the gateway session hangs on (checked with GET /v1/gateway/session). */
  session_ref: string;
  /** The control-plane session's absolute end (ms). */
  session_expires_at: number;
}

/** GET /v1/gateway/session?ref= (the gateway's SVID): the session is live (else 401 TESSERA_SESSION_REQUIRED). */
export interface GatewaySessionResponse { live: true; username: string; groups: string[]; mfa_at: number | null }

/** POST /v1/gateway/logout-all (the gateway's SVID): ends every control-plane session of the ref's user. */
export interface GatewayLogoutAllRequest { session_ref: string }
export interface GatewayLogoutAllResponse { username: string; sessions_ended: number }

/** GET /v1/devices/posture?id=SPIFFE_ID (a gateway's SVID): `context.device` of a presented device. */
export interface DevicePostureResponse { device: DevicePostureContext }
