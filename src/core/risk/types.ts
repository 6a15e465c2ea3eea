/**
 * Shared shapes of the adaptive zero-trust work (issue 11): the telemetry interchange record, risk
 * states and reasons. Owners: the telemetry line format and its parser live in `telemetry.ts`, the
 * engine in `engine.ts` (both in this directory); the control plane's risk state and its enforcement
 * live in `src/server/risk/`. Everyone else imports these types and does not redefine them.
 */

/**
 * One (window, edge) of sidecar telemetry, as shipped by a sidecar and as one line of a replay file
 * (`tessera risk replay FILE`). Both ends of an edge report: the caller's outbound (`reporter:
 * 'caller'`) and the callee's inbound (`reporter: 'callee'`).
 */
export interface TelemetryWindow {
  /** Window start, ISO 8601 (UTC, e.g. 2026-12-03T10:00:05.000Z). */
  ts: string;
  /** Window length in seconds (default 5). */
  window_s: number;
  caller: string;
  callee: string;
  caller_site: string;
  callee_site: string;
  reporter: 'caller' | 'callee';
  /** Action class: `http` (per request, HTTP mode) or `tcp` (per connection). Optional in files; default `http`. */
  action?: string;
  requests: number;
  /** 5xx answers and connection resets. */
  errors: number;
  denials: number;
  bytes_in: number;
  bytes_out: number;
  latency_p50_ms: number;
  latency_p99_ms: number;
  paths_distinct: number;
  /** True when this reporter saw a call on this edge for the first time ever. Optional in files. */
  first_seen?: boolean;
}

/** What the fabric does about an identity. */
export type RiskState = 'normal' | 'step-up' | 'quarantined';

/** Why a score is what it is: one signal, what was seen against what was expected. */
export interface RiskReason {
  /** e.g. `volume`, `bytes_out`, `errors`, `denials`, `new_edge`, `paths`, `unreported_by_caller`. */
  signal: string;
  observed: number;
  expected: number;
  /** How unusual: a robust z-score (deviations in MADs) or, for counts of novel events, their number. */
  unusual: number;
  /** The edge concerned, `caller -> callee`, when the signal is about one. */
  edge?: string;
  /** A sentence a person can read. */
  text: string;
  /** Optional (added by the engine's author): the points this signal adds to the score now. */
  points?: number;
}

/** A state change of one identity, as the engine decides it and `tessera risk replay` prints it. */
export interface RiskChange {
  identity: string;
  /** Milliseconds since the epoch (the telemetry's clock in a replay). */
  time: number;
  score: number;
  state: RiskState;
  previous: RiskState;
  reasons: RiskReason[];
}
