/**
 * Wire types of the map routes (`GET /v1/map`, `GET /v1/map/edge`): what the web console's Map page
 * reads. Times are ISO 8601 UTC. A site is null when neither the identity's entry nor any telemetry
 * window names one.
 */
import type { RiskState } from '../risk/types.js';

/** One site: every service placed in it (not only this page's) and its traffic inside the site. */
export interface MapSiteView {
  name: string | null;
  services: number;
  quarantined: number;
  /** The highest risk score of its services (0-100). */
  max_risk: number;
}

/** Traffic between two sites (or inside one: from = to), summed over every edge between them. */
export interface MapSiteEdgeView {
  from: string | null;
  to: string | null;
  edges: number;
  requests: number;
  allowed: number;
  denied: number;
  errors: number;
  bytes: number;
}

export interface MapServiceView {
  /** Its SPIFFE ID. */
  id: string;
  site: string | null;
  risk: { state: RiskState; score: number; until: string | null };
  quarantined: boolean;
  /** A live registration entry exists for it (false: seen only in telemetry, decisions or risk states). */
  registered: boolean;
}

export interface MapEdgeView {
  caller: string;
  callee: string;
  caller_site: string | null;
  callee_site: string | null;
  /**
   * Counts over the window from telemetry: the callee's report when it sent one (its inbound
   * sidecar decides, so it sees the denials), else the caller's.
   */
  requests: number;
  allowed: number;
  denied: number;
  errors: number;
  bytes: number;
  /** Which sides reported the edge: a callee-only edge is traffic the caller's own sidecar never reported. */
  reported_by: ('caller' | 'callee')[];
  /** Decision records stored for this edge over the window (agents ship them; they may lag telemetry). */
  decisions: { allowed: number; denied: number };
}

/**
 * GET /v1/map. `sites` and `site_edges` are complete on every page (small: one row per site, per
 * site pair); `services` and `edges` are one page of the ordered list described in the README
 * (each service followed by its edges), `next_cursor` null on the last page.
 */
export interface MapResponse {
  window_s: number;
  since: string;
  until: string;
  /** The filter, if any (`site=`); "" stands for services without a site. */
  site: string | null;
  totals: { sites: number; services: number; edges: number };
  sites: MapSiteView[];
  site_edges: MapSiteEdgeView[];
  services: MapServiceView[];
  edges: MapEdgeView[];
  next_cursor: string | null;
}

/** One decision on an edge: only what the console shows (no context values but method and path without query). */
export interface MapEdgeDecision {
  id: number;
  ts: string;
  allow: boolean;
  /** `http:request` or `tcp:connect`. */
  action: string;
  /** The policy ids that decided (Cedar's determining policies; empty for a default deny). */
  policies: string[];
  method?: string;
  path?: string;
}

/** GET /v1/map/edge: the newest decisions of one edge, newest first. */
export interface MapEdgeResponse {
  caller: string;
  callee: string;
  decisions: MapEdgeDecision[];
}
