/**
 * The parameters of one key-generation session (DKG, refresh or reshare), checked and reduced to the
 * form the protocol runs on, and the session digest every signed message carries. Pure, no I/O.
 *
 * The digest binds everything the servers must agree on before they start (the kind, the random
 * session id, the policy and epoch, the threshold, who deals and who receives under which index and
 * SPIFFE ID, and the old commitments), so a message signed for one session or round can never be
 * counted in another.
 */
import { createHash } from 'node:crypto';
import { canonicalJson } from '../canonical-json.js';
import { fail, isTesseraError } from '../errors.js';
import { isSpiffeId } from '../spiffe-id.js';
import { isSecretPolicyId } from './blob.js';
import { hashToPoint, type Point } from './group.js';
import { MAX_SHARES, decodeCommitments, publicShare } from './shamir.js';

export type DkgKind = 'dkg' | 'refresh' | 'reshare';

/** A key server in a session: its share index (1..255) and the SPIFFE ID its signatures are checked against. */
export interface DkgServer {
  index: number;
  spiffeId: string;
}

interface Common {
  /** 16..64 random bytes chosen by whoever starts the session (the CLI or control plane). */
  session: Uint8Array;
  policyId: string;
  epoch: number;
}

/** A new key, generated jointly: every server deals and receives; t-of-servers.length. */
export interface DkgNewKeyParams extends Common {
  kind: 'dkg';
  t: number;
  servers: DkgServer[];
}

/** New shares of the same key for the same servers and threshold (t = commitments.length ≥ 2). */
export interface DkgRefreshParams extends Common {
  kind: 'refresh';
  servers: DkgServer[];
  /** The current Feldman commitments (the record's), commitments[0] = P_p. */
  commitments: Point[];
}

/**
 * The same key shared t-of-servers.length among a new set of servers. The dealers are the old
 * servers listed in `old.servers` (at least old t of them, t = old.commitments.length); a server
 * may be in both lists, under different indices.
 */
export interface DkgReshareParams extends Common {
  kind: 'reshare';
  t: number;
  servers: DkgServer[];
  old: { commitments: Point[]; servers: DkgServer[] };
}

export type DkgParams = DkgNewKeyParams | DkgRefreshParams | DkgReshareParams;

/** The checked session, in the form the protocol uses. Public. */
export interface Session {
  kind: DkgKind;
  /** SHA-256 of the canonical parameters: in every message, and the first link of the transcript. */
  digest: Uint8Array;
  digestText: string;
  /** Threshold of the sharing being made (polynomials of degree t-1). */
  t: number;
  /** Threshold of the old sharing (refresh, reshare); 0 for a new key. */
  oldT: number;
  /** Who deals, by (old) share index, sorted. */
  dealers: DkgServer[];
  /** Who receives, by (new) share index, sorted. */
  receivers: DkgServer[];
  /** Every SPIFFE ID in the session, sorted: each sends one message per round. */
  parties: string[];
  dealerOf: Map<string, number>;
  receiverOf: Map<string, number>;
  /** refresh and reshare: the old commitments; [] for a new key. */
  oldCommitments: Point[];
  /** reshare: X_i = publicShare(i, old commitments), what each dealer's A_i0 must be. */
  oldPublicShares: Map<number, Point>;
}

const SESSION_DOMAIN = 'tessera/v1/dkg/session';
const MIN_SESSION_BYTES = 16;
const MAX_SESSION_BYTES = 64;
const MAX_EPOCH = 0xffffffff;

const bad = (message: string) => fail('TESSERA_DKG_PARAMS_INVALID', message);
const b64 = (b: Uint8Array) => Buffer.from(b).toString('base64url');

/**
 * The second Pedersen generator H, from a fixed string by hash-to-group so that nobody knows
 * log_G H (whoever did could open a commitment to any value, and bias the key).
 */
let pedersenH: Point | undefined;
export function generatorH(): Point {
  pedersenH ??= hashToPoint('tessera/v1/dkg/pedersen-generator-H');
  return new Uint8Array(pedersenH);
}

/**
 * Checks the parameters and returns the session. Throws TESSERA_DKG_PARAMS_INVALID.
 * `await ready()` first (old commitments are decoded as points).
 */
export function openSession(params: DkgParams): Session {
  if (typeof params !== 'object' || params === null) throw bad('the parameters must be an object');
  const { session, policyId, epoch } = params;
  if (!(session instanceof Uint8Array) || session.length < MIN_SESSION_BYTES || session.length > MAX_SESSION_BYTES) throw bad('the session id must be 16..64 random bytes');
  if (typeof policyId !== 'string' || !isSecretPolicyId(policyId)) throw bad('the policy id is invalid');
  if (!Number.isInteger(epoch) || epoch < 0 || epoch > MAX_EPOCH) throw bad('the epoch must be an integer in 0..2^32-1');
  const receivers = checkServers(params.servers, 'servers');
  let dealers: DkgServer[];
  let t: number;
  let oldT = 0;
  let oldCommitments: Point[] = [];
  const oldPublicShares = new Map<number, Point>();
  switch (params.kind) {
    case 'dkg':
      dealers = receivers;
      t = params.t;
      break;
    case 'refresh':
      dealers = receivers;
      oldCommitments = commitmentsOf(params.commitments);
      t = oldT = oldCommitments.length;
      if (t < 2) throw bad('a 1-of-n sharing cannot be refreshed');
      break;
    case 'reshare': {
      if (typeof params.old !== 'object' || params.old === null) throw bad('a reshare needs the old commitments and servers');
      dealers = checkServers(params.old.servers, 'old servers');
      oldCommitments = commitmentsOf(params.old.commitments);
      oldT = oldCommitments.length;
      t = params.t;
      if (dealers.length < oldT) throw bad('a reshare needs at least the old threshold of old servers');
      for (const d of dealers) oldPublicShares.set(d.index, publicShare(d.index, oldCommitments));
      break;
    }
    default:
      throw bad('the kind must be dkg, refresh or reshare');
  }
  if (!Number.isInteger(t) || t < 1 || t > receivers.length) throw bad('the threshold must satisfy 1 <= t <= n');
  const dealerOf = new Map(dealers.map((d) => [d.spiffeId, d.index]));
  const receiverOf = new Map(receivers.map((r) => [r.spiffeId, r.index]));
  const parties = [...new Set([...dealerOf.keys(), ...receiverOf.keys()])].sort();
  const canonical = canonicalJson({
    kind: params.kind,
    session: b64(session),
    policyId,
    epoch,
    t,
    oldT,
    dealers,
    receivers,
    oldCommitments: oldCommitments.map(b64),
  });
  const digest = new Uint8Array(createHash('sha256').update(SESSION_DOMAIN).update('\n').update(canonical).digest());
  return { kind: params.kind, digest, digestText: b64(digest), t, oldT, dealers, receivers, parties, dealerOf, receiverOf, oldCommitments, oldPublicShares };
}

/** The session digest (base64url) of parameters: what a relay routes on. */
export function sessionDigest(params: DkgParams): string {
  return openSession(params).digestText;
}

function checkServers(list: unknown, what: string): DkgServer[] {
  if (!Array.isArray(list) || list.length < 1 || list.length > MAX_SHARES) throw bad(`${what} must list 1..255 key servers`);
  const indices = new Set<number>();
  const ids = new Set<string>();
  const out = list.map((s: unknown): DkgServer => {
    if (typeof s !== 'object' || s === null) throw bad(`${what}: each entry must be { index, spiffeId }`);
    const { index, spiffeId } = s as Record<string, unknown>;
    if (typeof index !== 'number' || !Number.isInteger(index) || index < 1 || index > MAX_SHARES) throw bad(`${what}: an index must be an integer in 1..255`);
    if (typeof spiffeId !== 'string' || !isSpiffeId(spiffeId)) throw bad(`${what}: a SPIFFE ID is invalid`);
    if (indices.has(index) || ids.has(spiffeId)) throw bad(`${what}: an index or SPIFFE ID is repeated`);
    indices.add(index);
    ids.add(spiffeId);
    return { index, spiffeId };
  });
  return out.sort((a, b) => a.index - b.index);
}

function commitmentsOf(cs: unknown): Point[] {
  try {
    return decodeCommitments(cs as Point[]);
  } catch (err) {
    if (isTesseraError(err)) throw bad('the old commitments are not 1..255 valid points');
    throw err;
  }
}
