/**
 * The strict codec between the DKG wire shapes (src/core/wire/dkg.ts) and the protocol's types
 * (dkg-session.ts, dkg.ts): what a key server accepts on POST /v1/dkg, and what the relay sends.
 * Pure, no I/O. `await ready()` first (points are decoded).
 *
 * Stricter than the protocol needs on purpose (a key server runs it on input from the network):
 * exact keys at every level, canonical base64url of the right sizes, at most {@link MAX_DKG_SERVERS}
 * servers, the new servers numbered exactly 1..n (what a signed policy record requires), https URLs
 * without credentials, SPIFFE IDs of one trust domain. Every refusal is TESSERA_DKG_PARAMS_INVALID
 * with a message naming the field, never its value.
 */
import { fail, type TesseraError } from '../errors.js';
import { exactObject } from '../shape.js';
import { isSpiffeId, parseSpiffeId } from '../spiffe-id.js';
import { SECRET_POLICY_ID_RULE, isSecretPolicyId } from './blob.js';
import { decodePoint, type Point } from './group.js';
import type { DkgParams, DkgPublicResult, DkgServer } from './dkg.js';
import type { DkgParamsWire, DkgPublicResultWire, DkgServerWire } from '../wire/dkg.js';

/** Most servers on either side of a session (messages and sets grow with n²). */
export const MAX_DKG_SERVERS = 32;
const MIN_SESSION_BYTES = 16;
const MAX_SESSION_BYTES = 64;
const MAX_EPOCH = 0xffffffff;
const B64URL_32 = /^[A-Za-z0-9_-]{43}$/;
const B64URL = /^[A-Za-z0-9_-]+$/;

const bad = (message: string): TesseraError => fail('TESSERA_DKG_PARAMS_INVALID', message);
const isInt = (v: unknown, min: number, max: number): v is number => typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max;
const b64 = (b: Uint8Array): string => Buffer.from(b).toString('base64url');

/** A session id as it appears in paths: canonical base64url of 16..64 bytes. */
export function isDkgSessionId(v: unknown): v is string {
  if (typeof v !== 'string' || v.length < 22 || v.length > 86 || !B64URL.test(v)) return false;
  const bytes = Buffer.from(v, 'base64url');
  return bytes.length >= MIN_SESSION_BYTES && bytes.length <= MAX_SESSION_BYTES && bytes.toString('base64url') === v;
}

function checkUrl(v: unknown, what: string): string {
  if (typeof v !== 'string' || v.length > 2048) throw bad(`${what}.url must be an https URL`);
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    throw bad(`${what}.url must be an https URL`);
  }
  if (u.protocol !== 'https:' || u.username !== '' || u.password !== '' || u.search !== '' || u.hash !== '') throw bad(`${what}.url must be an https URL without credentials, query or fragment`);
  return v;
}

function servers(v: unknown, what: string, trustDomain: string | undefined, exactIndices: boolean): { wire: DkgServerWire[]; servers: DkgServer[] } {
  if (!Array.isArray(v) || v.length < 1 || v.length > MAX_DKG_SERVERS) throw bad(`${what} must list 1..${MAX_DKG_SERVERS} key servers`);
  const indices = new Set<number>();
  const ids = new Set<string>();
  const wire = v.map((s: unknown, i: number): DkgServerWire => {
    const o = exactObject(s, ['index', 'spiffeId', 'url'] as const, `${what}[${i}]`, bad);
    if (!isInt(o.index, 1, exactIndices ? v.length : MAX_DKG_SERVERS)) throw bad(`${what}[${i}].index must be an integer in 1..${exactIndices ? 'n' : MAX_DKG_SERVERS}`);
    if (typeof o.spiffeId !== 'string' || !isSpiffeId(o.spiffeId)) throw bad(`${what}[${i}].spiffeId must be a SPIFFE ID`);
    if (trustDomain !== undefined && parseSpiffeId(o.spiffeId).trustDomain !== trustDomain) throw bad(`${what}[${i}].spiffeId is not of this trust domain`);
    if (indices.has(o.index) || ids.has(o.spiffeId)) throw bad(`${what}[${i}] repeats an index or SPIFFE ID`);
    indices.add(o.index);
    ids.add(o.spiffeId);
    return { url: checkUrl(o.url, `${what}[${i}]`), spiffeId: o.spiffeId, index: o.index };
  });
  return { wire, servers: wire.map(({ index, spiffeId }) => ({ index, spiffeId })) };
}

function points(v: unknown, what: string): Point[] {
  if (!Array.isArray(v) || v.length < 1 || v.length > MAX_DKG_SERVERS) throw bad(`${what} must be a list of 1..${MAX_DKG_SERVERS} points`);
  const seen = new Set<string>();
  return v.map((c: unknown, i: number) => {
    if (typeof c !== 'string' || !B64URL_32.test(c)) throw bad(`${what}[${i}] must be 32 bytes of base64url`);
    const bytes = Buffer.from(c, 'base64url');
    if (bytes.toString('base64url') !== c) throw bad(`${what}[${i}] is not canonical base64url`);
    if (seen.has(c)) throw bad(`${what} repeats a point`);
    seen.add(c);
    try {
      return decodePoint(new Uint8Array(bytes));
    } catch {
      throw bad(`${what}[${i}] is not a valid group element`);
    }
  });
}

export interface ParsedDkgParams {
  params: DkgParams;
  /** The checked wire form (a clean copy, exact keys). */
  wire: DkgParamsWire;
}

/**
 * Parses DkgParamsWire as received (unknown shape). `trustDomain`: when given, every SPIFFE ID must
 * be of it. Throws TESSERA_DKG_PARAMS_INVALID, whatever the input. The protocol's own checks
 * (openSession: thresholds against n, old threshold against the old servers) run when the session
 * starts; this one never accepts what they would refuse for shape reasons.
 */
export function parseDkgParamsWire(v: unknown, trustDomain?: string): ParsedDkgParams {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad('params must be an object');
  const kind = (v as { kind?: unknown }).kind;
  const keys = kind === 'dkg' ? (['epoch', 'kind', 'policy', 'servers', 'session', 't'] as const)
    : kind === 'refresh' ? (['commitments', 'epoch', 'kind', 'policy', 'servers', 'session'] as const)
    : kind === 'reshare' ? (['epoch', 'kind', 'old', 'policy', 'servers', 'session', 't'] as const)
    : undefined;
  if (keys === undefined) throw bad('params.kind must be dkg, refresh or reshare');
  const o = exactObject(v, keys as readonly string[], 'params', bad);
  if (!isDkgSessionId(o.session)) throw bad(`params.session must be canonical base64url of ${MIN_SESSION_BYTES}..${MAX_SESSION_BYTES} bytes`);
  if (!isSecretPolicyId(o.policy)) throw bad(`params.policy must be ${SECRET_POLICY_ID_RULE}`);
  if (!isInt(o.epoch, 0, MAX_EPOCH)) throw bad('params.epoch must be an integer in 0..2^32-1');
  const session = new Uint8Array(Buffer.from(o.session, 'base64url'));
  const neu = servers(o.servers, 'params.servers', trustDomain, true);
  const common = { session, policyId: o.policy, epoch: o.epoch };
  const n = neu.servers.length;
  switch (kind) {
    case 'dkg': {
      if (!isInt(o.t, 1, n)) throw bad('params.t must be an integer in 1..n');
      return { params: { kind, ...common, t: o.t, servers: neu.servers }, wire: { kind, session: o.session, policy: o.policy, epoch: o.epoch, t: o.t, servers: neu.wire } };
    }
    case 'refresh': {
      const commitments = points(o.commitments, 'params.commitments');
      if (commitments.length < 2 || commitments.length > n) throw bad('params.commitments must hold t points, 2 <= t <= n');
      return { params: { kind, ...common, servers: neu.servers, commitments }, wire: { kind, session: o.session, policy: o.policy, epoch: o.epoch, servers: neu.wire, commitments: commitments.map(b64) } };
    }
    default: {
      if (!isInt(o.t, 1, n)) throw bad('params.t must be an integer in 1..n');
      const old = exactObject(o.old, ['commitments', 'servers'] as const, 'params.old', bad);
      const oldServers = servers(old.servers, 'params.old.servers', trustDomain, false);
      const commitments = points(old.commitments, 'params.old.commitments');
      if (commitments.length > oldServers.servers.length) throw bad('params.old.servers must list at least the old threshold (old.commitments.length) of servers');
      return {
        params: { kind: 'reshare', ...common, t: o.t, servers: neu.servers, old: { commitments, servers: oldServers.servers } },
        wire: { kind: 'reshare', session: o.session, policy: o.policy, epoch: o.epoch, t: o.t, servers: neu.wire, old: { commitments: commitments.map(b64), servers: oldServers.wire } },
      };
    }
  }
}

/** The public result on the wire (points as base64url; no share). */
export function dkgPublicResultToWire(r: DkgPublicResult): DkgPublicResultWire {
  return {
    kind: r.kind,
    public_key: b64(r.publicKey),
    commitments: r.commitments.map(b64),
    t: r.t,
    servers: r.servers.map(({ index, spiffeId }) => ({ index, spiffeId })),
    qual: [...r.qual],
    transcript: b64(r.transcript),
    stopped: r.stopped.map(({ spiffeId, round }) => ({ spiffeId, round })),
    misbehaviour: r.misbehaviour.map(({ spiffeId, round, what }) => ({ spiffeId, round, what })),
    excluded: r.excluded.map(({ index, why }) => ({ index, why })),
  };
}
