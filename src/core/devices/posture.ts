/**
 * Device posture (issue 12): the facts a device agent reports about its machine, the signed report
 * that carries them, and the Cedar context (`context.device`) policies read. Pure: no I/O.
 *
 * A report is signed by the device key over {@link postureSigningInput}: a fixed domain-separation
 * line, then the canonical JSON of the report (src/core/canonical-json.ts), so that the signature
 * covers exactly the bytes the control plane re-derives from the parsed report, whatever the key
 * order or whitespace it was sent with.
 */
import { TesseraError } from '../errors.js';
import { canonicalJson } from '../canonical-json.js';

/** A device id: the last segment of `spiffe://<td>/device/<id>` (shared with usernames, issue 12). */
export const DEVICE_ID = /^[a-z0-9][a-z0-9._-]{0,62}$/;

/** The posture facts, their JSON type and their Cedar attribute (same name) in `context.device`. */
export const POSTURE_FACTS = {
  /** Operating system family: `linux`, `darwin`, `windows`, ... */
  os: 'string',
  /** OS version (Linux: /etc/os-release VERSION_ID, else the kernel release). */
  os_version: 'string',
  /** Whether the system disk is encrypted (Linux: a LUKS/dm-crypt layer under `/`). */
  disk_encrypted: 'boolean',
  /** Whether the screen locks when idle. */
  screen_lock: 'boolean',
  /** Whether a host firewall is active. */
  firewall: 'boolean',
  /** Days since the last OS update was installed. */
  patch_age_days: 'integer',
  /** Version of the device agent that made the report. */
  agent_version: 'string',
} as const;
export type PostureFactName = keyof typeof POSTURE_FACTS;
export const POSTURE_FACT_NAMES = Object.keys(POSTURE_FACTS) as PostureFactName[];
type FactValue<N extends PostureFactName> = (typeof POSTURE_FACTS)[N] extends 'boolean' ? boolean : (typeof POSTURE_FACTS)[N] extends 'integer' ? number : string;

/**
 * One fact as observed: its value, or `null` when the agent could not tell (never guessed), and
 * when it was observed (ms since the epoch; an MDM export may be older than the report).
 */
export interface PostureFact<V = string | number | boolean> {
  value: V | null;
  observedAt: number;
}
export type PostureFacts = { [N in PostureFactName]?: PostureFact<FactValue<N>> };

/** A posture report as the device signs it (wire form: {@link PostureReportJson}). */
export interface PostureReport {
  /** The device's SPIFFE ID: must be the mTLS caller's. */
  deviceId: string;
  /** When the report was made (ms since the epoch): newer than the last one, close to the server clock. */
  reportedAt: number;
  facts: PostureFacts;
}

/** The wire form: snake_case, times as ISO 8601 UTC. */
export interface PostureReportJson {
  device_id: string;
  reported_at: string;
  facts: Record<string, { value: string | number | boolean | null; observed_at: string }>;
}

/** The body of POST /v1/device/posture: the report and the device key's signature (base64url DER ECDSA). */
export interface PostureSubmission {
  report: PostureReportJson;
  signature: string;
}

export const POSTURE_LIMITS = {
  /** Characters of a string fact. */
  maxString: 128,
  /** A patch age beyond this (about 27 years) is not a real one. */
  maxPatchAgeDays: 10_000,
  /** Characters of a base64url DER ECDSA P-256 signature (72 bytes at most → 96 characters). */
  maxSignature: 128,
} as const;

const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?Z$/;
const PRINTABLE = /^[\x20-\x7e]+$/;
const SIGNATURE = /^[A-Za-z0-9_-]{16,128}$/;
const DOMAIN_LINE = 'tessera device posture v1\n';

function invalid(message: string): TesseraError {
  return new TesseraError('TESSERA_POSTURE_INVALID', message);
}

function isoTime(v: unknown, where: string): number {
  if (typeof v !== 'string' || !ISO_UTC.test(v)) throw invalid(`${where} must be an ISO 8601 UTC time`);
  const t = Date.parse(v);
  if (!Number.isFinite(t)) throw invalid(`${where} must be an ISO 8601 UTC time`);
  return t;
}

function plainObject(v: unknown, where: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw invalid(`${where} must be an object`);
  return v as Record<string, unknown>;
}

function exactKeys(o: Record<string, unknown>, keys: readonly string[], where: string): void {
  for (const k of Object.keys(o)) if (!keys.includes(k)) throw invalid(`${where}: unknown field ${JSON.stringify(k.slice(0, 64))}`);
  for (const k of keys) if (!(k in o)) throw invalid(`${where}: missing field ${k}`);
}

function factValue(name: PostureFactName, v: unknown): string | number | boolean | null {
  if (v === null) return null;
  switch (POSTURE_FACTS[name]) {
    case 'boolean':
      if (typeof v !== 'boolean') throw invalid(`facts.${name}.value must be true, false or null`);
      return v;
    case 'integer':
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || v > POSTURE_LIMITS.maxPatchAgeDays) {
        throw invalid(`facts.${name}.value must be an integer from 0 to ${POSTURE_LIMITS.maxPatchAgeDays} or null`);
      }
      return v;
    default:
      if (typeof v !== 'string' || v.length === 0 || v.length > POSTURE_LIMITS.maxString || !PRINTABLE.test(v)) {
        throw invalid(`facts.${name}.value must be printable text of 1..${POSTURE_LIMITS.maxString} characters or null`);
      }
      return v;
  }
}

/**
 * Parses a report from its wire form: exact fields, known fact names only, typed values (null for
 * unknown), ISO times. Never throws anything but TESSERA_POSTURE_INVALID.
 *
 * @example parsePostureReport({ device_id: 'spiffe://td/device/lap-1', reported_at: '2026-01-01T00:00:00Z',
 *   facts: { firewall: { value: true, observed_at: '2026-01-01T00:00:00Z' } } })
 */
export function parsePostureReport(input: unknown): PostureReport {
  const o = plainObject(input, 'report');
  exactKeys(o, ['device_id', 'reported_at', 'facts'], 'report');
  if (typeof o.device_id !== 'string' || o.device_id.length > 2048 || !/^spiffe:\/\/[^/]+\/device\/[a-z0-9][a-z0-9._-]{0,62}$/.test(o.device_id)) {
    throw invalid('report.device_id must be a device SPIFFE ID (spiffe://<td>/device/<id>)');
  }
  const reportedAt = isoTime(o.reported_at, 'report.reported_at');
  const rawFacts = plainObject(o.facts, 'report.facts');
  const facts: Record<string, PostureFact> = {};
  for (const [name, f] of Object.entries(rawFacts)) {
    if (!(POSTURE_FACT_NAMES as string[]).includes(name)) throw invalid(`report.facts: unknown fact ${JSON.stringify(name.slice(0, 64))}`);
    const fo = plainObject(f, `facts.${name}`);
    exactKeys(fo, ['value', 'observed_at'], `facts.${name}`);
    facts[name] = { value: factValue(name as PostureFactName, fo.value), observedAt: isoTime(fo.observed_at, `facts.${name}.observed_at`) };
  }
  return { deviceId: o.device_id, reportedAt, facts: facts as PostureFacts };
}

/**
 * Facts supplied from outside the agent (`--posture-file`: an MDM export, a test): an object of fact
 * names, each either a bare value (observed at `observedAt`, the file's time) or
 * `{ "value": ..., "observed_at": "<ISO>" }`. Throws TESSERA_POSTURE_INVALID.
 *
 * @example parsePostureFacts({ disk_encrypted: true, patch_age_days: { value: 3, observed_at: '2026-01-01T00:00:00Z' } }, Date.now())
 */
export function parsePostureFacts(input: unknown, observedAt: number): PostureFacts {
  const o = plainObject(input, 'posture facts');
  const facts: Record<string, PostureFact> = {};
  for (const [name, v] of Object.entries(o)) {
    if (!(POSTURE_FACT_NAMES as string[]).includes(name)) throw invalid(`posture facts: unknown fact ${JSON.stringify(name.slice(0, 64))} (known: ${POSTURE_FACT_NAMES.join(', ')})`);
    if (typeof v === 'object' && v !== null && !Array.isArray(v)) {
      const fo = v as Record<string, unknown>;
      exactKeys(fo, ['value', 'observed_at'], `facts.${name}`);
      facts[name] = { value: factValue(name as PostureFactName, fo.value), observedAt: isoTime(fo.observed_at, `facts.${name}.observed_at`) };
    } else {
      facts[name] = { value: factValue(name as PostureFactName, v), observedAt };
    }
  }
  return facts as PostureFacts;
}

/** The wire form of a report (what is signed, canonicalized). */
export function postureReportJson(r: PostureReport): PostureReportJson {
  const facts: PostureReportJson['facts'] = {};
  for (const name of POSTURE_FACT_NAMES) {
    const f = r.facts[name];
    if (f) facts[name] = { value: f.value, observed_at: new Date(f.observedAt).toISOString() };
  }
  return { device_id: r.deviceId, reported_at: new Date(r.reportedAt).toISOString(), facts };
}

/**
 * The exact bytes a device signs (and the control plane verifies): a domain line, so that a
 * signature made for a posture report can never be mistaken for one over anything else the key
 * signs (TLS handshakes sign other, structured input), then the canonical JSON of the wire form.
 */
export function postureSigningInput(r: PostureReport): Buffer {
  return Buffer.from(DOMAIN_LINE + canonicalJson(postureReportJson(r)), 'utf8');
}

/** Parses a submission (report and signature), see {@link parsePostureReport}. */
export function parsePostureSubmission(input: unknown): { report: PostureReport; signature: Buffer } {
  const o = plainObject(input, 'body');
  exactKeys(o, ['report', 'signature'], 'body');
  if (typeof o.signature !== 'string' || !SIGNATURE.test(o.signature)) throw invalid('signature must be base64url (a DER ECDSA signature)');
  return { report: parsePostureReport(o.report), signature: Buffer.from(o.signature, 'base64url') };
}

/** `context.device.posture_state`: whether the device's latest report is recent enough to trust. */
export type PostureState = 'fresh' | 'stale' | 'missing';

/**
 * What policies see in `context.device` (Cedar record `Tessera::DevicePosture`). Every fact is
 * optional: an unknown fact, one observed longer ago than the staleness threshold, or any fact of a
 * device with no report, is absent (policies test `context.device has disk_encrypted`).
 */
export interface DevicePostureContext {
  /** The device's SPIFFE ID, when a device was presented. */
  id?: string;
  /** True when the device is enrolled and not revoked. */
  enrolled: boolean;
  posture_state: PostureState;
  /** Seconds since the latest report was made; absent when there is none. */
  posture_age_seconds?: number;
  os?: string;
  os_version?: string;
  disk_encrypted?: boolean;
  screen_lock?: boolean;
  firewall?: boolean;
  patch_age_days?: number;
  agent_version?: string;
}

/**
 * The Cedar context of a device's posture at `now`. `latest` undefined: no report (`missing`).
 * A report older than `staleAfterMs` is `stale`; facts observed before `now - staleAfterMs` (or in
 * a stale report) are left out, so a policy can never act on an old observation as if it were new.
 */
export function postureContext(device: { spiffeId: string; live: boolean } | undefined, latest: PostureReport | undefined, now: number, staleAfterMs: number): DevicePostureContext {
  if (!device) return { enrolled: false, posture_state: 'missing' };
  const out: DevicePostureContext = { id: device.spiffeId, enrolled: device.live, posture_state: 'missing' };
  if (!device.live || !latest) return out;
  // A report from the (slightly) future counts as just made.
  const ageMs = Math.max(0, now - latest.reportedAt);
  out.posture_age_seconds = Math.floor(ageMs / 1000);
  out.posture_state = ageMs > staleAfterMs ? 'stale' : 'fresh';
  if (out.posture_state === 'stale') return out;
  const facts = out as unknown as Record<string, unknown>;
  for (const name of POSTURE_FACT_NAMES) {
    const f = latest.facts[name];
    if (f && f.value !== null && now - f.observedAt <= staleAfterMs) facts[name] = f.value;
  }
  return out;
}
