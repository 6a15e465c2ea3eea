/**
 * The key-generation messages on the wire: a signed envelope `{ payload, signature }` whose payload is
 * the base64url of a canonical-JSON body `{ v, session, round, from, prev, ...round fields }`, and
 * their strict parsers. Pure, no I/O.
 *
 * - `session` is the session digest (dkg-session.ts), `round` the round name, `from` the sender's
 *   SPIFFE ID, and `prev` the transcript hash up to the previous round's message set *as the sender
 *   saw it*: a relay that shows different sets to different servers is caught one round later.
 * - The signature covers `"tessera-dkg-v1\n" + JSON text`, by the sender's own key (an injected
 *   signer: the key server's SVID key in production). The payload must be canonical JSON, so one
 *   content has exactly one signed form: two different payloads from one sender for one round are
 *   a proof of equivocation, never an encoding accident.
 * - Every field is checked against the session alone (counts, indices, sizes, which roles may say
 *   what); checks that depend on earlier rounds happen in dkg-judge.ts.
 *
 * Every refusal is a TesseraError TESSERA_DKG_MESSAGE_INVALID, whatever the input.
 */
import { createHash } from 'node:crypto';
import { canonicalJson } from '../canonical-json.js';
import { fail, isTesseraError, type TesseraError } from '../errors.js';
import { exactObject } from '../shape.js';
import { decodePoint, decodePointOrIdentity, decodeScalarOrZero, type Point, type Scalar } from './group.js';
import type { DkgKind, Session } from './dkg-session.js';

export type DkgRound = 'hello' | 'deal' | 'complaints' | 'answers' | 'feldman' | 'feldmanComplaints' | 'reconstruct' | 'confirm';

const ROUNDS_DKG: readonly DkgRound[] = ['hello', 'deal', 'complaints', 'answers', 'feldman', 'feldmanComplaints', 'reconstruct', 'confirm'];
/** Refresh and reshare exclude a dealer caught after QUAL instead of reconstructing it (the key is fixed, nothing to bias). */
const ROUNDS_FIXED_KEY: readonly DkgRound[] = ['hello', 'deal', 'complaints', 'answers', 'feldman', 'feldmanComplaints', 'confirm'];

/** The rounds of a session, in order. Fixed per kind, so every server and the relay agree without talking. */
export function dkgSchedule(kind: DkgKind): readonly DkgRound[] {
  return kind === 'dkg' ? ROUNDS_DKG : ROUNDS_FIXED_KEY;
}

/** What travels: the relay stores and forwards it unchanged. */
export interface SignedDkgMessage {
  /** base64url of the canonical JSON body. */
  payload: string;
  /** base64url of the sender's signature over "tessera-dkg-v1\n" + the JSON body. */
  signature: string;
}

/** Signs with the sender's own key (for a key server, its SVID's private key). */
export interface DkgSigner {
  sign(bytes: Uint8Array): Uint8Array;
}

/** Checks a signature by the holder of `spiffeId` (for a key server, that peer's current SVID). False for anything wrong. */
export interface DkgVerifier {
  verify(spiffeId: string, bytes: Uint8Array, signature: Uint8Array): boolean;
}

/** A (share, blinding) pair (f_i(j), f'_i(j)) of Pedersen VSS. */
export interface Pair {
  s: Scalar;
  r: Scalar;
}

export type DkgBody =
  | { round: 'hello'; keys: { dealer: number; pub: Uint8Array }[] }
  | { round: 'deal'; commitments: Point[]; boxes: { to: number; box: Uint8Array }[] }
  | { round: 'complaints'; accused: { dealer: number; key: Uint8Array }[] }
  | { round: 'answers'; reveals: ({ to: number } & Pair)[] }
  | { round: 'feldman'; commitments: Point[] }
  | { round: 'feldmanComplaints'; accused: ({ dealer: number } & Pair)[] }
  | { round: 'reconstruct'; reveals: ({ dealer: number } & Pair)[] }
  | { round: 'confirm'; publicKey: Point; commitments: Point[]; qual: number[] };

export interface ParsedDkgMessage {
  from: string;
  prev: Uint8Array;
  body: DkgBody;
  /** The payload exactly as signed (identity of the message for dedup and equivocation). */
  payload: string;
}

export const DKG_SIGNATURE_DOMAIN = 'tessera-dkg-v1\n';
/** Box plaintext: tag, session digest, dealer, receiver, s, r. */
export const SHARE_TAG = 'tessera/v1/dkg/share';
export const SHARE_PLAIN_BYTES = SHARE_TAG.length + 32 + 1 + 1 + 32 + 32;
/** crypto_box_seal adds an ephemeral X25519 key (32) and a Poly1305 tag (16). */
export const SHARE_BOX_BYTES = SHARE_PLAIN_BYTES + 48;
export const MAX_PAYLOAD_CHARS = 200_000;
const MAX_SIGNATURE_BYTES = 512;
const B64URL = /^[A-Za-z0-9_-]*$/;

const invalid = (message: string): TesseraError => fail('TESSERA_DKG_MESSAGE_INVALID', message);
export const b64 = (b: Uint8Array): string => Buffer.from(b).toString('base64url');

/** Signs a body for `session` and returns the envelope. */
export function signDkgMessage(session: Session, from: string, prev: Uint8Array, body: DkgBody, signer: DkgSigner): SignedDkgMessage {
  const json = canonicalJson({ v: 1, session: session.digestText, from, prev: b64(prev), ...bodyToJson(body) });
  const text = Buffer.from(json, 'utf8');
  const signature = signer.sign(signedBytes(text));
  return { payload: text.toString('base64url'), signature: b64(signature) };
}

function signedBytes(json: Uint8Array): Uint8Array {
  return Buffer.concat([Buffer.from(DKG_SIGNATURE_DOMAIN, 'utf8'), json]);
}

/**
 * Routing facts of a message (session digest, round, sender) WITHOUT checking the signature or the
 * body: for a relay that holds no keys. Throws TESSERA_DKG_MESSAGE_INVALID if not even that parses.
 */
export function peekDkgMessage(wire: unknown): { session: string; round: DkgRound; from: string } {
  try {
    const { obj } = openEnvelope(wire);
    const round = obj.round;
    if (typeof obj.session !== 'string' || typeof obj.from !== 'string' || typeof round !== 'string' || !ROUNDS_DKG.includes(round as DkgRound)) throw invalid('the message has no session, round or sender');
    return { session: obj.session, round: round as DkgRound, from: obj.from };
  } catch (err) {
    throw asInvalid(err);
  }
}

/**
 * Strictly parses and authenticates one message for `round` of `session`: the envelope, canonical
 * JSON, this session's digest, the expected round, a listed sender, its signature, and every field
 * against the session. Throws TESSERA_DKG_MESSAGE_INVALID (never anything else) on any failure.
 */
export function parseDkgMessage(session: Session, round: DkgRound, wire: unknown, verifier: DkgVerifier): ParsedDkgMessage {
  try {
    const { obj, json, payload, signature } = openEnvelope(wire);
    if (obj.session !== session.digestText) throw invalid('the message is for another session');
    if (obj.round !== round) throw invalid('the message is for another round');
    const from = obj.from;
    if (typeof from !== 'string' || !session.parties.includes(from)) throw invalid('the sender is not in the session');
    let ok = false;
    try {
      ok = verifier.verify(from, signedBytes(json), signature) === true;
    } catch {
      ok = false;
    }
    if (!ok) throw invalid('the signature does not verify');
    const prev = bytes(obj.prev, 32, 'prev');
    return { from, prev, body: parseBody(session, round, from, obj), payload };
  } catch (err) {
    throw asInvalid(err);
  }
}

function asInvalid(err: unknown): TesseraError {
  if (isTesseraError(err) && err.code === 'TESSERA_DKG_MESSAGE_INVALID') return err;
  return invalid('the message is malformed');
}

function openEnvelope(wire: unknown): { obj: Record<string, unknown>; json: Uint8Array; payload: string; signature: Uint8Array } {
  const env = exactObject(wire, ['payload', 'signature'] as const, 'message', invalid);
  if (typeof env.payload !== 'string' || env.payload.length > MAX_PAYLOAD_CHARS) throw invalid('the payload must be base64url of at most 200000 characters');
  const json = b64Bytes(env.payload, 'payload');
  if (typeof env.signature !== 'string' || env.signature.length > Math.ceil((MAX_SIGNATURE_BYTES * 4) / 3)) throw invalid('the signature must be base64url of at most 512 bytes');
  const signature = b64Bytes(env.signature, 'signature');
  const text = Buffer.from(json).toString('utf8');
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch {
    throw invalid('the payload is not JSON');
  }
  let canonical: string | undefined;
  try {
    canonical = canonicalJson(obj);
  } catch {
    canonical = undefined;
  }
  if (canonical !== text) throw invalid('the payload is not canonical JSON');
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) throw invalid('the payload must be an object');
  if ((obj as { v?: unknown }).v !== 1) throw invalid('unknown message version');
  return { obj: obj as Record<string, unknown>, json, payload: env.payload, signature };
}

const HEAD = ['from', 'prev', 'round', 'session', 'v'] as const;
const FIELDS: Record<DkgRound, readonly string[]> = {
  hello: ['keys'],
  deal: ['boxes', 'commitments'],
  complaints: ['accused'],
  answers: ['reveals'],
  feldman: ['commitments'],
  feldmanComplaints: ['accused'],
  reconstruct: ['reveals'],
  confirm: ['commitments', 'publicKey', 'qual'],
};

function parseBody(session: Session, round: DkgRound, from: string, obj: Record<string, unknown>): DkgBody {
  const o = exactObject(obj, [...HEAD, ...FIELDS[round]], `${round} message`, invalid);
  const myDealer = session.dealerOf.get(from);
  const myReceiver = session.receiverOf.get(from);
  const isDealer = myDealer !== undefined;
  const isReceiver = myReceiver !== undefined;
  const dealerIndices = new Set(session.dealers.map((d) => d.index));
  const receiverIndices = new Set(session.receivers.map((r) => r.index));
  const otherDealer = (i: unknown): number => {
    if (typeof i !== 'number' || !dealerIndices.has(i) || i === myDealer) throw invalid('a dealer index is not another dealer of the session');
    return i;
  };
  const otherReceiver = (i: unknown): number => {
    if (typeof i !== 'number' || !receiverIndices.has(i) || i === myReceiver) throw invalid('a receiver index is not another receiver of the session');
    return i;
  };
  switch (round) {
    case 'hello': {
      const keys = list(o.keys, ['dealer', 'pub'], (e) => ({ dealer: otherDealer(e.dealer), pub: bytes(e.pub, 32, 'pub') }), (e) => e.dealer);
      // A receiver publishes one key per other dealer, so that each channel's key can be revealed alone.
      const expected = isReceiver ? session.dealers.filter((d) => d.spiffeId !== from).map((d) => d.index) : [];
      if (keys.length !== expected.length || keys.some((k, i) => k.dealer !== expected[i])) throw invalid('hello must carry one key for each other dealer');
      return { round, keys };
    }
    case 'deal': {
      const commitments = points(o.commitments, session.t, true, 'commitments');
      const boxes = list(o.boxes, ['box', 'to'], (e) => ({ to: otherReceiver(e.to), box: bytes(e.box, SHARE_BOX_BYTES, 'box') }), (e) => e.to);
      if (!isDealer && commitments.length > 0) throw invalid('only a dealer deals');
      if (commitments.length === 0 && boxes.length > 0) throw invalid('shares without commitments');
      return { round, commitments, boxes };
    }
    case 'complaints': {
      const accused = list(o.accused, ['dealer', 'key'], (e) => ({ dealer: otherDealer(e.dealer), key: bytes(e.key, 32, 'key') }), (e) => e.dealer);
      if (!isReceiver && accused.length > 0) throw invalid('only a receiver complains');
      return { round, accused };
    }
    case 'answers': {
      const reveals = list(o.reveals, ['r', 's', 'to'], (e) => ({ to: otherReceiver(e.to), ...pair(e) }), (e) => e.to);
      if (!isDealer && reveals.length > 0) throw invalid('only a dealer answers');
      return { round, reveals };
    }
    case 'feldman': {
      const commitments = points(o.commitments, session.t, true, 'commitments');
      if (!isDealer && commitments.length > 0) throw invalid('only a dealer publishes Feldman commitments');
      return { round, commitments };
    }
    case 'feldmanComplaints':
    case 'reconstruct': {
      const key = round === 'feldmanComplaints' ? 'accused' : 'reveals';
      const entries = list(o[key], ['dealer', 'r', 's'], (e) => ({ dealer: otherDealerOrSelf(e.dealer, dealerIndices), ...pair(e) }), (e) => e.dealer);
      if (!isReceiver && entries.length > 0) throw invalid('only a receiver holds shares');
      return round === 'feldmanComplaints' ? { round, accused: entries } : { round, reveals: entries };
    }
    case 'confirm': {
      const publicKey = bytes(o.publicKey, 32, 'publicKey');
      const commitments = points(o.commitments, session.t, false, 'commitments');
      if (commitments.length !== session.t) throw invalid('confirm must carry t commitments');
      const qual = list(o.qual, null, (e) => otherDealerOrSelf(e, dealerIndices), (e) => e);
      return { round, publicKey: decodePointChecked(publicKey), commitments, qual };
    }
  }
}

/** In feldmanComplaints and reconstruct a receiver may name itself as dealer (a dealer that is also a receiver is still checked by others). */
function otherDealerOrSelf(i: unknown, dealers: Set<number>): number {
  if (typeof i !== 'number' || !dealers.has(i)) throw invalid('a dealer index is not a dealer of the session');
  return i;
}

/** A JSON list of at most 255 entries, each an exact object (or a bare value when keys is null), strictly increasing by `order`. */
function list<T>(v: unknown, keys: readonly string[] | null, parse: (e: Record<string, unknown>) => T, order: (t: T) => number): T[] {
  if (!Array.isArray(v) || v.length > 255) throw invalid('a list must have at most 255 entries');
  const out: T[] = [];
  let last = -Infinity;
  for (const e of v) {
    const item = parse(keys === null ? (e as Record<string, unknown>) : exactObject(e, keys, 'entry', invalid));
    const k = order(item);
    if (!(k > last)) throw invalid('list entries must be in strictly increasing order');
    last = k;
    out.push(item);
  }
  return out;
}

function pair(e: Record<string, unknown>): Pair {
  return { s: scalar(e.s, 's'), r: scalar(e.r, 'r') };
}

function scalar(v: unknown, what: string): Scalar {
  try {
    return decodeScalarOrZero(bytes(v, 32, what));
  } catch (err) {
    throw asInvalid(err);
  }
}

/** 0 or exactly `t` points (canonical; the identity only if `identityOk`). */
function points(v: unknown, t: number, identityOk: boolean, what: string): Point[] {
  if (!Array.isArray(v) || (v.length !== 0 && v.length !== t)) throw invalid(`${what} must be empty or t points`);
  return v.map((p) => {
    const raw = bytes(p, 32, what);
    try {
      return identityOk ? decodePointOrIdentity(raw) : decodePoint(raw);
    } catch {
      throw invalid(`${what}: not a valid group element`);
    }
  });
}

function decodePointChecked(b: Uint8Array): Point {
  try {
    return decodePoint(b);
  } catch {
    throw invalid('not a valid group element');
  }
}

function bytes(v: unknown, n: number, what: string): Uint8Array {
  if (typeof v !== 'string' || v.length !== Math.ceil((n * 4) / 3)) throw invalid(`${what} must be ${n} bytes of base64url`);
  const out = b64Bytes(v, what);
  if (out.length !== n) throw invalid(`${what} must be ${n} bytes of base64url`);
  return out;
}

function b64Bytes(v: string, what: string): Uint8Array {
  if (!B64URL.test(v)) throw invalid(`${what} is not base64url`);
  const buf = Buffer.from(v, 'base64url');
  if (buf.toString('base64url') !== v) throw invalid(`${what} is not canonical base64url`);
  return new Uint8Array(buf);
}

function bodyToJson(body: DkgBody): Record<string, unknown> {
  const pairJson = (p: Pair) => ({ s: b64(p.s), r: b64(p.r) });
  switch (body.round) {
    case 'hello':
      return { round: body.round, keys: body.keys.map((k) => ({ dealer: k.dealer, pub: b64(k.pub) })) };
    case 'deal':
      return { round: body.round, commitments: body.commitments.map(b64), boxes: body.boxes.map((b) => ({ to: b.to, box: b64(b.box) })) };
    case 'complaints':
      return { round: body.round, accused: body.accused.map((a) => ({ dealer: a.dealer, key: b64(a.key) })) };
    case 'answers':
      return { round: body.round, reveals: body.reveals.map((a) => ({ to: a.to, ...pairJson(a) })) };
    case 'feldman':
      return { round: body.round, commitments: body.commitments.map(b64) };
    case 'feldmanComplaints':
      return { round: body.round, accused: body.accused.map((a) => ({ dealer: a.dealer, ...pairJson(a) })) };
    case 'reconstruct':
      return { round: body.round, reveals: body.reveals.map((a) => ({ dealer: a.dealer, ...pairJson(a) })) };
    case 'confirm':
      return { round: body.round, publicKey: b64(body.publicKey), commitments: body.commitments.map(b64), qual: body.qual };
  }
}

// ---------------------------------------------------------------------------------------------
// A round's message set

export interface AcceptedSet {
  round: DkgRound;
  /** One message per sender that sent exactly one distinct valid message. */
  messages: Map<string, ParsedDkgMessage>;
  /** Senders with two different validly signed messages for this round: proof of equivocation. */
  equivocators: string[];
  /** SHA-256 over the round and every distinct valid payload (equivocations included), sorted. */
  digest: Uint8Array;
  /** Positions in the input that were refused, with why (for diagnostics; never counted). */
  rejected: { position: number; code: string; reason: string }[];
}

/**
 * Accepts what the relay delivered for `round`: each entry is parsed and authenticated, exact
 * duplicates are kept once (a replay is never counted twice), and a sender with two different
 * valid messages is set apart as an equivocator. Messages for another round or session, forged or
 * malformed ones are listed in `rejected` and otherwise ignored.
 */
export function acceptSet(session: Session, round: DkgRound, wires: readonly unknown[], verifier: DkgVerifier): AcceptedSet {
  const bySender = new Map<string, Map<string, ParsedDkgMessage>>();
  const rejected: AcceptedSet['rejected'] = [];
  if (!Array.isArray(wires)) throw invalid('the message set must be a list');
  wires.forEach((w, position) => {
    try {
      const m = parseDkgMessage(session, round, w, verifier);
      let mine = bySender.get(m.from);
      if (mine === undefined) bySender.set(m.from, (mine = new Map()));
      mine.set(m.payload, m);
    } catch (err) {
      const e = asInvalid(err);
      rejected.push({ position, code: e.code, reason: e.message });
    }
  });
  const messages = new Map<string, ParsedDkgMessage>();
  const equivocators: string[] = [];
  const payloads: string[] = [];
  for (const [from, versions] of bySender) {
    payloads.push(...versions.keys());
    if (versions.size === 1) messages.set(from, [...versions.values()][0]!);
    else equivocators.push(from);
  }
  payloads.sort();
  const h = createHash('sha256').update('tessera/v1/dkg/set\n').update(round).update('\n');
  for (const p of payloads) h.update(`${p}\n`);
  return { round, messages, equivocators: equivocators.sort(), digest: new Uint8Array(h.digest()), rejected };
}

/** The next link of the transcript hash chain: T_r = SHA-256(T_{r-1} ‖ set digest of round r). */
export function chainTranscript(prev: Uint8Array, setDigest: Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha256').update('tessera/v1/dkg/transcript\n').update(prev).update(setDigest).digest());
}
