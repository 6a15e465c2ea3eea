/** Wire types of federation (issue 14): admin routes under /v1/federation and the agents' feed. */
import type { SpiffeBundleJwks } from '../bundle.js';

/** A federation relationship as the admin routes show it. */
export interface FederationView {
  trust_domain: string;
  endpoint: string;
  profile: 'https_web' | 'https_spiffe';
  endpoint_id?: string;
  /** Whether the endpoint is checked against roots given at `add` (https_web) rather than the system's. */
  custom_ca?: boolean;
  sequence?: number;
  refresh_hint_seconds?: number;
  x509_authorities?: number;
  jwt_authorities?: number;
  refreshed_at?: string;
  next_refresh_at?: string;
  last_error?: string;
  last_error_at?: string;
  created_at: string;
  created_by: string;
}

/** POST /v1/federation → 201. `bundle`: the foreign bundle (JWK Set) to bootstrap https_spiffe. */
export interface AddFederationRequest { trust_domain: string; endpoint: string; profile: string; endpoint_id?: string; bundle?: string; ca_pem?: string }
export interface FederationResponse { federation: FederationView; bundle?: SpiffeBundleJwks }
export interface FederationListResponse { federations: FederationView[] }

/** In GET /v1/bundle/watch?federation_after=REV: the federated bundles, per trust domain (never merged). */
export interface FederatedBundlesFeed { revision: number; bundles: Record<string, SpiffeBundleJwks> }
