/**
 * The telemetry interchange format (issue 11): one JSON object per line per (window, edge, reporter),
 * as sidecars ship it and as `tessera risk replay FILE` reads it. Field by field (README "Telemetry format"):
 *
 * - `ts`: window start, ISO 8601 in UTC with a `Z`, `YYYY-MM-DDTHH:MM:SS[.fff]Z` (seconds required,
 *   up to 3 fraction digits, a real calendar date). Offsets other than `Z` are refused so every record
 *   has one spelling of its time.
 * - `window_s`: window length, a whole number of seconds from 1 to 3600.
 * - `caller`, `callee`: SPIFFE IDs in canonical form (src/core/spiffe-id.ts).
 * - `caller_site`, `callee_site`: 1–64 characters of `[A-Za-z0-9._-]`, the first a letter or digit.
 * - `reporter`: `caller` (the caller's outbound sidecar) or `callee` (the callee's inbound sidecar, or
 *   the key server for `unseal`).
 * - `action` (optional): `http` (counts are requests), `tcp` (counts are connections) or `unseal` (a key
 *   server's evaluate answers; only its `callee` end reports them); default `http`.
 * - `requests`, `errors`, `denials`, `bytes_in`, `bytes_out`, `paths_distinct`: non-negative safe
 *   integers. `requests` counts every request (or connection) started in the window, denied ones
 *   included, so `denials` and `paths_distinct` are each at most `requests`. `errors` is not bounded by
 *   it: a failure is counted when it happens, and a connection opened (or a request started) in an
 *   earlier window may reset in this one. Bytes are edge-relative, the same for both reporters:
 *   `bytes_out` flows from caller to callee (request bodies), `bytes_in` from callee to caller
 *   (responses), so both ends' reports can be compared.
 * - `latency_p50_ms`, `latency_p99_ms`: finite, from 0 to 3,600,000 (an hour), p50 ≤ p99.
 * - `first_seen` (optional): boolean, the reporter saw this edge for the first time ever.
 *
 * One rule set: the same function checks a line of a replay file (`tessera risk replay`) and each
 * window of a batch shipped to `POST /v1/telemetry` (src/server/telemetry/service.ts).
 *
 * Unknown fields are refused, not ignored: a misspelt `byte_out` would otherwise read as zero traffic
 * and teach the engine a wrong baseline. A new field means a new version of this parser.
 * A line is at most {@link MAX_TELEMETRY_LINE_BYTES} bytes (UTF-8, without its line end); blank lines
 * are skipped; a trailing `\r` (CRLF files) is dropped.
 *
 * Every failure is a TesseraError `TESSERA_TELEMETRY_INVALID` naming the line (when known) and field.
 */
import { TesseraError } from '../errors.js';
import { parseSpiffeId } from '../spiffe-id.js';
import type { TelemetryWindow } from './types.js';

/** Longest accepted line, in bytes without the line end. A valid record is far below 2 KiB. */
export const MAX_TELEMETRY_LINE_BYTES = 64 * 1024;

const COUNT_FIELDS = ['requests', 'errors', 'denials', 'bytes_in', 'bytes_out', 'paths_distinct'] as const;
const KNOWN_FIELDS = new Set<string>(['ts', 'window_s', 'caller', 'callee', 'caller_site', 'callee_site', 'reporter', 'action',
  ...COUNT_FIELDS, 'latency_p50_ms', 'latency_p99_ms', 'first_seen']);
const SITE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** A latency above an hour is not a measurement of a proxy or key server (their timeouts are far shorter). */
export const MAX_LATENCY_MS = 3_600_000;
const ACTIONS = new Set(['http', 'tcp', 'unseal']);
const TS = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,3}))?Z$/;

/**
 * Where a record comes from, for messages: a line number of a file (`telemetry line N`), the index of
 * a window in a shipped batch (`{ window: i }` → `window i`), or nothing (`telemetry window`).
 */
export type TelemetryWhere = number | { window: number } | undefined;

function where(at: TelemetryWhere): string {
  if (at === undefined) return 'telemetry window';
  return typeof at === 'number' ? `telemetry line ${at}` : `window ${at.window}`;
}

function invalid(lineNo: TelemetryWhere, field: string | undefined, message: string): TesseraError {
  return new TesseraError('TESSERA_TELEMETRY_INVALID', `${where(lineNo)}${field ? `: field "${field}"` : ''}: ${message}`);
}

/** Milliseconds since the epoch of a strict `YYYY-MM-DDTHH:MM:SS[.fff]Z`, or NaN. */
export function parseTelemetryTime(ts: string): number {
  const m = TS.exec(ts);
  if (!m) return NaN;
  const [y, mo, d, h, mi, s] = [m[1], m[2], m[3], m[4], m[5], m[6]].map(Number) as [number, number, number, number, number, number];
  const ms = m[7] ? Number(m[7].padEnd(3, '0')) : 0;
  const t = Date.UTC(y, mo - 1, d, h, mi, s, ms);
  // Date.UTC rolls 2026-02-30 over to March 2: refuse dates that do not exist instead.
  const back = new Date(t);
  if (!Number.isFinite(t) || back.getUTCFullYear() !== y || back.getUTCMonth() !== mo - 1 || back.getUTCDate() !== d
    || back.getUTCHours() !== h || back.getUTCMinutes() !== mi || back.getUTCSeconds() !== s) return NaN;
  return t;
}

function spiffe(v: unknown, lineNo: TelemetryWhere, field: string): string {
  if (typeof v !== 'string') throw invalid(lineNo, field, 'must be a SPIFFE ID string');
  try {
    return parseSpiffeId(v).id;
  } catch (err) {
    throw invalid(lineNo, field, (err as Error).message);
  }
}

function count(v: unknown, lineNo: TelemetryWhere, field: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw invalid(lineNo, field, 'must be a whole number from 0 to 2^53-1');
  return v;
}

function latency(v: unknown, lineNo: TelemetryWhere, field: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > MAX_LATENCY_MS) throw invalid(lineNo, field, `must be a number of milliseconds from 0 to ${MAX_LATENCY_MS}`);
  return v;
}

/**
 * Validates an already-parsed telemetry record (a line of a replay file, or one element of a shipped
 * batch) and returns a fresh, plain copy holding only the known fields (nothing from the input's
 * prototype). `at` names the record in the error message.
 *
 * @example
 * const w = validateTelemetryWindow(JSON.parse(body).windows[3], { window: 3 }); // throws TESSERA_TELEMETRY_INVALID "window 3: ..."
 */
export function validateTelemetryWindow(obj: unknown, lineNo?: TelemetryWhere): TelemetryWindow {
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) throw invalid(lineNo, undefined, 'must be a JSON object');
  const o = obj as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (!KNOWN_FIELDS.has(k)) throw invalid(lineNo, k.length > 64 ? `${k.slice(0, 64)}...` : k, 'is not a telemetry field (unknown fields are refused)');
  }
  const own = (k: string): unknown => (Object.prototype.hasOwnProperty.call(o, k) ? o[k] : undefined);
  const ts = own('ts');
  if (typeof ts !== 'string' || Number.isNaN(parseTelemetryTime(ts))) throw invalid(lineNo, 'ts', 'must be an ISO 8601 UTC time like 2026-12-03T10:00:05.000Z');
  const windowS = own('window_s');
  if (typeof windowS !== 'number' || !Number.isInteger(windowS) || windowS < 1 || windowS > 3600) throw invalid(lineNo, 'window_s', 'must be a whole number of seconds from 1 to 3600');
  const caller = spiffe(own('caller'), lineNo, 'caller');
  const callee = spiffe(own('callee'), lineNo, 'callee');
  const sites: Record<'caller_site' | 'callee_site', string> = { caller_site: '', callee_site: '' };
  for (const f of ['caller_site', 'callee_site'] as const) {
    const v = own(f);
    if (typeof v !== 'string' || !SITE.test(v)) throw invalid(lineNo, f, 'must be 1-64 characters of A-Z a-z 0-9 . _ -');
    sites[f] = v;
  }
  const reporter = own('reporter');
  if (reporter !== 'caller' && reporter !== 'callee') throw invalid(lineNo, 'reporter', 'must be "caller" or "callee"');
  const action = own('action');
  if (action !== undefined && (typeof action !== 'string' || !ACTIONS.has(action))) throw invalid(lineNo, 'action', 'must be "http", "tcp" or "unseal"');
  // Only the key server sees an unseal (the caller's side is the agent or a one-shot CLI, not its sidecar).
  if (action === 'unseal' && reporter !== 'callee') throw invalid(lineNo, 'reporter', 'must be "callee" for action "unseal": only the key server reports unseals');
  const counts = {} as Record<(typeof COUNT_FIELDS)[number], number>;
  for (const f of COUNT_FIELDS) counts[f] = count(own(f), lineNo, f);
  for (const f of ['denials', 'paths_distinct'] as const) {
    if (counts[f] > counts.requests) throw invalid(lineNo, f, `${counts[f]} exceeds requests (${counts.requests}): requests counts every request, denied ones included`);
  }
  const p50 = latency(own('latency_p50_ms'), lineNo, 'latency_p50_ms');
  const p99 = latency(own('latency_p99_ms'), lineNo, 'latency_p99_ms');
  if (p50 > p99) throw invalid(lineNo, 'latency_p50_ms', `${p50} exceeds latency_p99_ms (${p99})`);
  const firstSeen = own('first_seen');
  if (firstSeen !== undefined && typeof firstSeen !== 'boolean') throw invalid(lineNo, 'first_seen', 'must be true or false');
  const w: TelemetryWindow = {
    ts, window_s: windowS, caller, callee, caller_site: sites.caller_site, callee_site: sites.callee_site, reporter,
    requests: counts.requests, errors: counts.errors, denials: counts.denials, bytes_in: counts.bytes_in, bytes_out: counts.bytes_out,
    latency_p50_ms: p50, latency_p99_ms: p99, paths_distinct: counts.paths_distinct,
  };
  if (action !== undefined) w.action = action as string;
  if (firstSeen !== undefined) w.first_seen = firstSeen;
  return w;
}

/**
 * Parses one line of a telemetry file (without its line end).
 *
 * @example
 * parseTelemetryLine('{"ts":"2026-12-03T10:00:05Z","window_s":5,...}', 12)
 */
export function parseTelemetryLine(line: string, lineNo?: number): TelemetryWindow {
  // UTF-16 length ≤ UTF-8 length, so this cheap check never refuses a line within the byte cap.
  if (line.length > MAX_TELEMETRY_LINE_BYTES || Buffer.byteLength(line, 'utf8') > MAX_TELEMETRY_LINE_BYTES) {
    throw invalid(lineNo, undefined, `longer than ${MAX_TELEMETRY_LINE_BYTES} bytes`);
  }
  let obj: unknown;
  try {
    obj = JSON.parse(line);
  } catch {
    throw invalid(lineNo, undefined, 'is not valid JSON');
  }
  return validateTelemetryWindow(obj, lineNo);
}

/** One parsed line with its 1-based line number. */
export interface NumberedWindow {
  lineNo: number;
  window: TelemetryWindow;
}

/**
 * Parses a stream of telemetry lines (a file, stdin, a request body) chunk by chunk: memory stays
 * bounded by the line cap however long a line is, invalid UTF-8 is refused, blank lines are skipped.
 *
 * @example
 * for await (const { lineNo, window } of readTelemetry(createReadStream(file))) engine.ingest(window);
 */
export async function* readTelemetry(chunks: AsyncIterable<Uint8Array | string> | Iterable<Uint8Array | string>): AsyncGenerator<NumberedWindow> {
  const decoder = new TextDecoder('utf-8', { fatal: true });
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let lineNo = 0;
  const finish = (bytes: Buffer): NumberedWindow | undefined => {
    lineNo++;
    let end = bytes.length;
    if (end > 0 && bytes[end - 1] === 0x0d) end--;
    let text: string;
    try {
      text = decoder.decode(bytes.subarray(0, end));
    } catch {
      throw invalid(lineNo, undefined, 'is not valid UTF-8');
    }
    if (text.trim() === '') return undefined;
    return { lineNo, window: parseTelemetryLine(text, lineNo) };
  };
  for await (const chunk of chunks) {
    let buf = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    for (;;) {
      const nl = buf.indexOf(0x0a);
      if (nl < 0) break;
      const part = buf.subarray(0, nl);
      buf = buf.subarray(nl + 1);
      // +1 allows the CR of a CRLF line end on top of a line of exactly the cap.
      if (pendingBytes + part.length > MAX_TELEMETRY_LINE_BYTES + 1) throw invalid(lineNo + 1, undefined, `longer than ${MAX_TELEMETRY_LINE_BYTES} bytes`);
      const line = pending.length === 0 ? part : Buffer.concat([...pending, part]);
      pending = [];
      pendingBytes = 0;
      const parsed = finish(line);
      if (parsed) yield parsed;
    }
    if (buf.length > 0) {
      pendingBytes += buf.length;
      if (pendingBytes > MAX_TELEMETRY_LINE_BYTES + 1) throw invalid(lineNo + 1, undefined, `longer than ${MAX_TELEMETRY_LINE_BYTES} bytes`);
      pending.push(Buffer.from(buf)); // a copy: the caller may reuse its chunk
    }
  }
  if (pendingBytes > 0) {
    const parsed = finish(Buffer.concat(pending));
    if (parsed) yield parsed;
  }
}

/** The window start of a validated record, in milliseconds since the epoch. */
export function windowStart(w: TelemetryWindow): number {
  return parseTelemetryTime(w.ts);
}
