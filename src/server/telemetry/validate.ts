/**
 * Strict structural check of one shipped telemetry window (POST /v1/telemetry). Deliberately one
 * function, `checkShippedWindow`: the risk engine's parser of the same interchange format
 * (`validateTelemetryWindow` in src/core/risk/telemetry.ts) is meant to replace its body.
 */
import { TesseraError } from '../../core/errors.js';
import type { TelemetryWindow } from '../../core/risk/types.js';
import { isSpiffeId } from '../../core/spiffe-id.js';

const FIELDS = new Set([
  'ts', 'window_s', 'caller', 'callee', 'caller_site', 'callee_site', 'reporter', 'action', 'requests', 'errors', 'denials',
  'bytes_in', 'bytes_out', 'latency_p50_ms', 'latency_p99_ms', 'paths_distinct', 'first_seen',
]);
const COUNTS = ['requests', 'errors', 'denials', 'bytes_in', 'bytes_out', 'paths_distinct'] as const;
/** ISO 8601 UTC as Date.toISOString writes it (milliseconds optional). */
const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?Z$/;
const SITE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** A latency above an hour is not a measurement of this proxy (its response timeout is 60 s). */
const MAX_LATENCY_MS = 3_600_000;

function bad(i: number, message: string): TesseraError {
  return new TesseraError('TESSERA_TELEMETRY_INVALID', `window ${i}: ${message}`);
}

/**
 * The window `v` (the `i`-th of its batch) as a TelemetryWindow, or TESSERA_TELEMETRY_INVALID naming
 * what is wrong: unknown or missing fields, wrong types, counts that are not non-negative safe
 * integers, bad SPIFFE IDs, sites, time, window length, reporter or action class. Returns a fresh
 * object holding only the known fields (nothing from the input's prototype).
 */
export function checkShippedWindow(v: unknown, i: number): TelemetryWindow {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad(i, 'must be an object');
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!FIELDS.has(k)) throw bad(i, `unknown field "${k.slice(0, 64)}"`);
  const { ts, window_s: windowS, caller, callee, caller_site: callerSite, callee_site: calleeSite, reporter, action } = o;
  if (typeof ts !== 'string' || !ISO_UTC.test(ts) || !Number.isFinite(Date.parse(ts))) throw bad(i, '"ts" must be an ISO 8601 UTC time, e.g. 2026-12-03T10:00:05.000Z');
  if (typeof windowS !== 'number' || !Number.isInteger(windowS) || windowS < 1 || windowS > 3600) throw bad(i, '"window_s" must be an integer from 1 to 3600');
  if (typeof caller !== 'string' || !isSpiffeId(caller)) throw bad(i, '"caller" must be a SPIFFE ID');
  if (typeof callee !== 'string' || !isSpiffeId(callee)) throw bad(i, '"callee" must be a SPIFFE ID');
  if (typeof callerSite !== 'string' || !SITE.test(callerSite)) throw bad(i, '"caller_site" must be a site name (letters, digits, . _ -; up to 64)');
  if (typeof calleeSite !== 'string' || !SITE.test(calleeSite)) throw bad(i, '"callee_site" must be a site name (letters, digits, . _ -; up to 64)');
  if (reporter !== 'caller' && reporter !== 'callee') throw bad(i, '"reporter" must be "caller" or "callee"');
  if (action !== undefined && action !== 'http' && action !== 'tcp') throw bad(i, '"action" must be "http" or "tcp"');
  const out: TelemetryWindow = {
    ts, window_s: windowS, caller, callee, caller_site: callerSite, callee_site: calleeSite, reporter, action: action ?? 'http',
    requests: 0, errors: 0, denials: 0, bytes_in: 0, bytes_out: 0, latency_p50_ms: 0, latency_p99_ms: 0, paths_distinct: 0,
  };
  for (const k of COUNTS) {
    const n = o[k];
    if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) throw bad(i, `"${k}" must be a non-negative integer`);
    out[k] = n;
  }
  if (out.denials > out.requests) throw bad(i, '"denials" cannot exceed "requests"');
  for (const k of ['latency_p50_ms', 'latency_p99_ms'] as const) {
    const n = o[k];
    if (typeof n !== 'number' || !Number.isFinite(n) || n < 0 || n > MAX_LATENCY_MS) throw bad(i, `"${k}" must be a number of milliseconds from 0 to ${MAX_LATENCY_MS}`);
    out[k] = n;
  }
  if (out.latency_p99_ms < out.latency_p50_ms) throw bad(i, '"latency_p99_ms" cannot be below "latency_p50_ms"');
  if (o.first_seen !== undefined) {
    if (typeof o.first_seen !== 'boolean') throw bad(i, '"first_seen" must be a boolean');
    if (o.first_seen) out.first_seen = true;
  }
  return out;
}
