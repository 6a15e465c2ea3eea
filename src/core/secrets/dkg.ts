/**
 * Distributed key generation for blind-secret policies (issue 15): the n key servers generate,
 * refresh or reshare a policy key k_p among themselves, so that no process ever holds k_p; the CLI
 * or control plane only relays signed messages it cannot read. This is the pure core (no I/O, no
 * logging): each key server runs one {@link DkgParticipant} per session; the relay can use
 * {@link DkgRelayView}; anyone can check the outcome with {@link verifyTranscript}.
 *
 * Protocols:
 * - New key: Pedersen VSS with the fix of Gennaro, Jarecki, Krawczyk and Rabin, "Secure Distributed
 *   Key Generation for Discrete-Log Based Cryptosystems" (J. Cryptology 20(1), 2007). Each dealer i
 *   shares a random a_i0 with Pedersen commitments C_ik = a_ik·G + b_ik·H (H = hash-to-group, nobody
 *   knows log_G H), so nothing about the key is public while QUAL is decided; only then do the
 *   QUAL dealers publish A_ik = a_ik·G. A dealer that cheats after that point is rebuilt in public
 *   from t shares instead of dropped, so no one can bias or abort the key by misbehaving late
 *   (plain Joint-Feldman lets the last dealer steer P).
 * - Refresh without a dealer: the same protocol where every dealer shares zero (a_i0 = 0, checked as
 *   A_i0 = identity); new share = old + Σ δ_ij, new commitments = old + Σ A_ik; P is unchanged.
 * - Reshare to new servers and/or threshold: verifiable secret redistribution (Desmedt–Jajodia 1997;
 *   Wong, Wang and Wing 2002): each old server deals its own share x_i (checked as A_i0 = X_i, its
 *   public share from the old commitments), and the first old-t qualified dealers by index are
 *   combined with Lagrange coefficients: y_j = Σ λ_i s_ij, C'_k = Σ λ_i A_ik, and C'_0 = P_p.
 *   In refresh and reshare a dealer caught after QUAL is excluded rather than rebuilt: the key is
 *   fixed, so dropping it biases nothing (and rebuilding would publish an old share).
 *
 * Rounds (every party sends exactly one signed message per round, possibly with empty lists):
 *   hello → deal → complaints → answers → feldman → feldmanComplaints → [reconstruct: new key only] → confirm.
 * Each message carries the transcript hash of every set seen so far, so a relay that shows different
 * sets to different servers, or a server that signs two versions of a message, is caught: two signed
 * versions exclude the sender; a differing transcript aborts the session (nothing is installed).
 *
 * Complaints are publicly decidable: a receiver publishes one X25519 key per dealer (hello), and a
 * complaint reveals the secret key of that one channel, so anyone can open the accused box. A false
 * complaint is therefore proven false (and reported), and a founded one must be answered.
 */
import { fail, isTesseraError } from '../errors.js';
import {
  add,
  baseMulOrIdentity,
  mul,
  pointEquals,
  randomScalar,
  scalarAdd,
  scalarMul,
  sodiumLib,
  zeroScalar,
  type Point,
  type Scalar,
} from './group.js';
import { PublicDkg, evalPoly, feldmanOk, openShareBox, pedersenOk, sharePlaintext, type Misbehaviour } from './dkg-judge.js';
import { generatorH, openSession, type DkgKind, type DkgParams, type DkgServer, type Session } from './dkg-session.js';
import {
  acceptSet,
  dkgSchedule,
  peekDkgMessage,
  signDkgMessage,
  type AcceptedSet,
  type DkgBody,
  type DkgRound,
  type DkgSigner,
  type DkgVerifier,
  type Pair,
  type SignedDkgMessage,
} from './dkg-wire.js';
import { verifyShare, type Share } from './shamir.js';

export { dkgSchedule, peekDkgMessage, type DkgRound, type DkgSigner, type DkgVerifier, type SignedDkgMessage } from './dkg-wire.js';
export { sessionDigest, type DkgKind, type DkgParams, type DkgNewKeyParams, type DkgRefreshParams, type DkgReshareParams, type DkgServer } from './dkg-session.js';
export type { Misbehaviour } from './dkg-judge.js';

/** What everyone can know about the outcome: the same at every honest server and in {@link verifyTranscript}. */
export interface DkgPublicResult {
  kind: DkgKind;
  /** P_p = commitments[0]. */
  publicKey: Point;
  /** Feldman commitments of the new sharing (t points), exactly as the policy record stores them. */
  commitments: Point[];
  t: number;
  /** The receivers, i.e. the servers of the new record with their indices. */
  servers: DkgServer[];
  /** Dealer indices whose contributions make the result (QUAL; for a reshare the old-t dealers used). */
  qual: number[];
  /** The transcript hash after the last round before confirm. */
  transcript: Uint8Array;
  /** Parties that stopped sending, with the round they missed. */
  stopped: { spiffeId: string; round: DkgRound }[];
  /** Provable misbehaviour (equivocation, false complaints, bad deals or answers, Feldman cheating). */
  misbehaviour: Misbehaviour[];
  /** Dealers left out, with why. */
  excluded: { index: number; why: string }[];
}

/** A server's result. `share` is its new key share: it stays inside the key server process. */
export interface DkgResult extends DkgPublicResult {
  /** Absent for a server that only deals (an old server removed by a reshare). */
  share?: Share;
}

export interface DkgStep {
  /** The message to hand to the relay for the next round (the confirmation after the last one). */
  message: SignedDkgMessage;
  /** Set once the protocol is complete: install `share` only when the record with these commitments is signed. */
  done?: DkgResult;
  /** Entries of the input that were ignored (forged, malformed, for another round or session), for diagnostics. */
  rejected: { position: number; code: string; reason: string }[];
}

export interface DkgMe {
  /** This server's SPIFFE ID, as listed in the parameters. */
  spiffeId: string;
  /** The current share: needed to deal in a reshare (old servers) and for a refresh. */
  share?: Share;
}

const aborted = (why: string) => fail('TESSERA_DKG_ABORTED', `the key generation is aborted: ${why}`);

/**
 * One key server's side of one session. Keep it in memory for the session's lifetime (a restarted
 * server simply drops out); each call to {@link next} takes the set of messages the relay gives for
 * the current round and returns this server's message for the next one. Any TESSERA_DKG_ABORTED
 * ends the session and wipes its secrets.
 *
 * @example
 * const { participant, message } = DkgParticipant.start(params, { spiffeId }, signer, verifier);
 * // relay: post message; for each round, get the set and call participant.next(set) until step.done.
 */
export class DkgParticipant {
  private readonly pub: PublicDkg;
  private readonly session: Session;
  private readonly me: string;
  private readonly dealerIndex: number | undefined;
  private readonly receiverIndex: number | undefined;
  private readonly signer: DkgSigner;
  private readonly verifier: DkgVerifier;
  private oldShare: Scalar | undefined;
  private sent: string;
  private state: 'running' | 'done' | 'aborted' = 'running';
  /** Channel keys (receiver): dealer → X25519 keypair for its box. */
  private channels = new Map<number, { publicKey: Uint8Array; privateKey: Uint8Array }>();
  /** Polynomials (dealer): f = a, f' = b; and A_k = a_k·G to publish if in QUAL. */
  private a: Scalar[] = [];
  private b: Scalar[] = [];
  private feldman: Point[] = [];
  /** Pairs received (receiver): dealer → (s, r). */
  private received = new Map<number, Pair>();

  private constructor(session: Session, me: DkgMe, signer: DkgSigner, verifier: DkgVerifier) {
    this.session = session;
    this.pub = new PublicDkg(session);
    this.me = me.spiffeId;
    this.dealerIndex = session.dealerOf.get(me.spiffeId);
    this.receiverIndex = session.receiverOf.get(me.spiffeId);
    this.signer = signer;
    this.verifier = verifier;
    this.sent = '';
  }

  /**
   * Checks the parameters and this server's place in them, and returns its hello message.
   * `await ready()` first. Throws TESSERA_DKG_PARAMS_INVALID.
   */
  static start(params: DkgParams, me: DkgMe, signer: DkgSigner, verifier: DkgVerifier): { participant: DkgParticipant; message: SignedDkgMessage } {
    const session = openSession(params);
    if (typeof me !== 'object' || me === null || !session.parties.includes(me.spiffeId)) throw fail('TESSERA_DKG_PARAMS_INVALID', 'this server is not a participant of the session');
    const p = new DkgParticipant(session, me, signer, verifier);
    const needsShare = session.kind === 'refresh' || (session.kind === 'reshare' && p.dealerIndex !== undefined);
    if (needsShare) {
      const index = session.kind === 'refresh' ? p.receiverIndex : p.dealerIndex;
      if (me.share === undefined || me.share.index !== index || !verifyShare(me.share, session.oldCommitments)) {
        throw fail('TESSERA_DKG_PARAMS_INVALID', 'this server\'s current share is missing or does not match the old commitments');
      }
      p.oldShare = new Uint8Array(me.share.value);
    }
    const keys: { dealer: number; pub: Uint8Array }[] = [];
    if (p.receiverIndex !== undefined) {
      for (const d of session.dealers) {
        if (d.spiffeId === p.me) continue;
        const kp = sodiumLib().crypto_box_keypair();
        p.channels.set(d.index, { publicKey: kp.publicKey, privateKey: kp.privateKey });
        keys.push({ dealer: d.index, pub: kp.publicKey });
      }
    }
    return { participant: p, message: p.send({ round: 'hello', keys }) };
  }

  /** The round whose message set {@link next} expects, or where the session ended. */
  get round(): DkgRound | 'done' | 'aborted' {
    return this.state === 'running' ? this.pub.round! : this.state;
  }

  /**
   * Consumes the relay's set for the current round (as received: unknown JSON values) and returns
   * the next message. Throws TESSERA_DKG_ABORTED (and wipes everything) when the session cannot end
   * well: our own message is missing or altered in the set, servers saw different sets, or fewer
   * than t servers remain.
   */
  next(messages: readonly unknown[]): DkgStep {
    if (this.state !== 'running') throw aborted('the session is already over');
    try {
      const round = this.pub.round!;
      const set = acceptSet(this.session, round, messages, this.verifier);
      const mine = set.messages.get(this.me);
      if (mine === undefined || mine.payload !== this.sent) throw aborted('the relay did not deliver our own message unchanged');
      this.pub.apply(set);
      const step = this.advance(round);
      return { ...step, rejected: set.rejected };
    } catch (err) {
      this.abort();
      if (isTesseraError(err) && err.code === 'TESSERA_DKG_ABORTED') throw err;
      if (isTesseraError(err) && err.code === 'TESSERA_DKG_MESSAGE_INVALID') throw aborted('the message set is not a list');
      throw err;
    }
  }

  /** Ends the session here and wipes every secret it holds. */
  abort(): void {
    if (this.state === 'running') this.state = 'aborted';
    this.wipe();
  }

  private advance(round: DkgRound): Omit<DkgStep, 'rejected'> {
    switch (round) {
      case 'hello':
        return { message: this.send(this.deal()) };
      case 'deal':
        return { message: this.send(this.complain()) };
      case 'complaints':
        return { message: this.send(this.answer()) };
      case 'answers':
        return { message: this.send(this.publishFeldman()) };
      case 'feldman':
        return { message: this.send(this.feldmanComplain()) };
      case 'feldmanComplaints':
        if (this.session.kind === 'dkg') return { message: this.send(this.reconstructReveals()) };
        return this.conclude();
      case 'reconstruct':
        return this.conclude();
      case 'confirm':
        throw fail('TESSERA_INTERNAL', 'dkg: nothing follows confirm');
    }
  }

  private send(body: DkgBody): SignedDkgMessage {
    const m = signDkgMessage(this.session, this.me, this.pub.transcript, body, this.signer);
    this.sent = m.payload;
    return m;
  }

  /** Deal: Pedersen commitments, and each receiver's pair sealed to the key it published for us. */
  private deal(): DkgBody {
    const none: DkgBody = { round: 'deal', commitments: [], boxes: [] };
    if (this.dealerIndex === undefined) return none;
    const d = this.dealerIndex;
    const { t, kind } = this.session;
    const H = generatorH();
    const a0 = kind === 'dkg' ? randomScalar() : kind === 'refresh' ? zeroScalar() : new Uint8Array(this.oldShare!);
    this.a = [a0];
    for (let k = 1; k < t; k++) this.a.push(randomScalar());
    this.b = Array.from({ length: t }, () => randomScalar());
    this.feldman = this.a.map(baseMulOrIdentity);
    const commitments = this.feldman.map((A, k) => add(A, mul(this.b[k]!, H)));
    const boxes: { to: number; box: Uint8Array }[] = [];
    for (const j of this.pub.helloReceivers) {
      const pair = this.pairFor(j);
      if (j === this.receiverIndex) {
        this.received.set(d, pair);
        continue;
      }
      const plain = sharePlaintext(this.session.digest, d, j, pair);
      boxes.push({ to: j, box: sodiumLib().crypto_box_seal(plain, this.pub.keys.get(j)!.get(d)!) });
      plain.fill(0);
      pair.s.fill(0);
      pair.r.fill(0);
    }
    return { round: 'deal', commitments, boxes };
  }

  private pairFor(j: number): Pair {
    return { s: evalPoly(this.a, j), r: evalPoly(this.b, j) };
  }

  /** Complaints: open every box to us; accuse (revealing that one channel's key) each dealer whose share is bad. */
  private complain(): DkgBody {
    const accused: { dealer: number; key: Uint8Array }[] = [];
    if (this.receiverIndex !== undefined) {
      for (const [d, deal] of [...this.pub.deals.entries()].sort((x, y) => x[0] - y[0])) {
        if (d === this.dealerIndex) continue;
        const ch = this.channels.get(d)!;
        const pair = openShareBox(deal.boxes.get(this.receiverIndex), ch.publicKey, ch.privateKey, this.session.digest, d, this.receiverIndex);
        if (pair !== undefined && pedersenOk(deal.C, this.receiverIndex, pair)) this.received.set(d, pair);
        else accused.push({ dealer: d, key: new Uint8Array(ch.privateKey) });
      }
    }
    for (const ch of this.channels.values()) ch.privateKey.fill(0);
    this.channels.clear();
    return { round: 'complaints', accused };
  }

  /** Answers: reveal the pair of each founded complainer (none if t or more: we are out anyway). */
  private answer(): DkgBody {
    const d = this.dealerIndex;
    if (d === undefined || !this.pub.deals.has(d)) return { round: 'answers', reveals: [] };
    const owed = this.pub.justified.get(d) ?? [];
    return { round: 'answers', reveals: owed.map((to) => ({ to, ...this.pairFor(to) })) };
  }

  private publishFeldman(): DkgBody {
    // A receiver whose complaint was answered takes the revealed pair as its share.
    if (this.receiverIndex !== undefined) {
      for (const d of this.pub.qual) {
        if (!this.received.has(d)) {
          const p = this.pub.publicPairs.get(d)?.get(this.receiverIndex);
          if (p !== undefined) this.received.set(d, { s: new Uint8Array(p.s), r: new Uint8Array(p.r) });
        }
      }
    }
    const inQual = this.dealerIndex !== undefined && this.pub.qual.includes(this.dealerIndex);
    const body: DkgBody = { round: 'feldman', commitments: inQual ? this.feldman : [] };
    this.wipePolynomials();
    return body;
  }

  /** Feldman complaints: publish, as evidence, our pair from each QUAL dealer whose A_i it does not satisfy. */
  private feldmanComplain(): DkgBody {
    const accused: ({ dealer: number } & Pair)[] = [];
    const j = this.receiverIndex;
    if (j !== undefined) {
      for (const [d, A] of [...this.pub.A.entries()].sort((x, y) => x[0] - y[0])) {
        const pair = this.received.get(d);
        if (pair !== undefined && !feldmanOk(A, j, pair.s)) accused.push({ dealer: d, ...pair });
      }
    }
    return { round: 'feldmanComplaints', accused };
  }

  private reconstructReveals(): DkgBody {
    const reveals: ({ dealer: number } & Pair)[] = [];
    if (this.receiverIndex !== undefined) {
      for (const d of this.pub.toReconstruct) {
        const pair = this.received.get(d);
        if (pair !== undefined) reveals.push({ dealer: d, ...pair });
      }
    }
    return { round: 'reconstruct', reveals };
  }

  /** The new share and the confirmation that closes the session. */
  private conclude(): Omit<DkgStep, 'rejected'> {
    const fin = this.pub.final!;
    let share: Share | undefined;
    const j = this.receiverIndex;
    if (j !== undefined) {
      let x: Scalar = this.session.kind === 'refresh' ? new Uint8Array(this.oldShare!) : zeroScalar();
      fin.used.forEach((d, i) => {
        const pair = this.received.get(d);
        if (pair === undefined) throw aborted('a share from a qualified dealer is missing');
        x = scalarAdd(x, this.session.kind === 'reshare' ? scalarMul(fin.lambdas[i]!, pair.s) : pair.s);
      });
      share = { index: j, value: x };
      if (!verifyShare(share, fin.commitments)) {
        x.fill(0);
        throw aborted('our new share does not match the new commitments');
      }
    }
    const message = this.send({ round: 'confirm', publicKey: fin.publicKey, commitments: fin.commitments, qual: fin.used });
    const done: DkgResult = { ...publicResult(this.pub), ...(share === undefined ? {} : { share }) };
    this.state = 'done';
    this.wipe();
    return { message, done };
  }

  private wipePolynomials(): void {
    for (const c of [...this.a, ...this.b]) c.fill(0);
    this.a = [];
    this.b = [];
  }

  private wipe(): void {
    this.wipePolynomials();
    for (const ch of this.channels.values()) ch.privateKey.fill(0);
    this.channels.clear();
    for (const p of this.received.values()) {
      p.s.fill(0);
      p.r.fill(0);
    }
    this.received.clear();
    this.oldShare?.fill(0);
    this.oldShare = undefined;
  }
}

function publicResult(pub: PublicDkg): DkgPublicResult {
  const fin = pub.final!;
  return {
    kind: pub.session.kind,
    publicKey: new Uint8Array(fin.publicKey),
    commitments: fin.commitments.map((c) => new Uint8Array(c)),
    t: pub.session.t,
    servers: pub.session.receivers.map((s) => ({ ...s })),
    qual: [...fin.used],
    transcript: new Uint8Array(pub.transcript),
    stopped: pub.stopped.map((s) => ({ ...s })),
    misbehaviour: pub.misbehaviour.map((m) => ({ ...m })),
    excluded: [...pub.dealerOut.entries(), ...pub.feldmanBad.entries()].filter(([d]) => !fin.used.includes(d)).map(([index, why]) => ({ index, why })).sort((x, y) => x.index - y.index),
  };
}

// ---------------------------------------------------------------------------------------------
// Public verification

export interface TranscriptVerdict extends DkgPublicResult {
  /** Parties whose signed confirmation names exactly this result. */
  confirmedBy: string[];
  /** Parties whose confirmation names something else. */
  disagreeing: string[];
}

/**
 * Recomputes a session from every signed message the relay delivered (all rounds, any order): the
 * same public computation the servers ran, so the control plane can check the commitments and
 * public key before signing a record, and see who confirmed them. It needs no secret. The relay
 * must log exactly the sets it delivered ({@link DkgRelayView.close}), or the transcript will not
 * match. Throws TESSERA_DKG_ABORTED if the transcript does not lead to a result.
 */
export function verifyTranscript(params: DkgParams, verifier: DkgVerifier, messages: readonly unknown[]): TranscriptVerdict {
  const session = openSession(params);
  const pub = new PublicDkg(session);
  const byRound = new Map<DkgRound, unknown[]>();
  for (const m of messages) {
    try {
      const { round } = peekDkgMessage(m);
      byRound.set(round, [...(byRound.get(round) ?? []), m]);
    } catch {
      // unroutable junk: it could not have been counted by anyone either
    }
  }
  let confirmSet: AcceptedSet | undefined;
  for (const round of pub.schedule) {
    const set = acceptSet(session, round, byRound.get(round) ?? [], verifier);
    if (round === 'confirm') {
      confirmSet = set;
      break;
    }
    pub.apply(set);
  }
  if (pub.final === undefined) throw aborted('the transcript has no result');
  const result = publicResult(pub);
  const confirmedBy: string[] = [];
  const disagreeing: string[] = [];
  for (const [from, m] of confirmSet!.messages) {
    const c = m.body;
    const same =
      c.round === 'confirm' &&
      pointEquals(m.prev, result.transcript) &&
      pointEquals(c.publicKey, result.publicKey) &&
      c.commitments.length === result.commitments.length &&
      c.commitments.every((x, k) => pointEquals(x, result.commitments[k]!)) &&
      c.qual.length === result.qual.length &&
      c.qual.every((q, i) => q === result.qual[i]);
    (same ? confirmedBy : disagreeing).push(from);
  }
  disagreeing.push(...confirmSet!.equivocators);
  return { ...result, confirmedBy: confirmedBy.sort(), disagreeing: disagreeing.sort() };
}

// ---------------------------------------------------------------------------------------------
// The relay's view

/**
 * What a relay (the CLI, the control plane) needs to run a session without any secret or key:
 * route messages by session and round, see who has sent, freeze a round's set, and keep the log
 * {@link verifyTranscript} checks. It does not verify signatures (the servers do).
 */
export class DkgRelayView {
  readonly session: string;
  readonly schedule: readonly DkgRound[];
  readonly parties: readonly string[];
  private readonly sets = new Map<DkgRound, Map<string, SignedDkgMessage>>();
  private readonly closed = new Set<DkgRound>();

  constructor(params: DkgParams) {
    const s = openSession(params);
    this.session = s.digestText;
    this.schedule = dkgSchedule(s.kind);
    this.parties = s.parties;
  }

  /**
   * Files one message. Throws TESSERA_DKG_MESSAGE_INVALID for another session, an unknown sender, a
   * round already closed, or something that does not parse; an exact duplicate is kept once.
   */
  add(wire: unknown): { round: DkgRound; from: string } {
    const { session, round, from } = peekDkgMessage(wire);
    if (session !== this.session || !this.parties.includes(from) || !this.schedule.includes(round)) throw fail('TESSERA_DKG_MESSAGE_INVALID', 'the message is not for this session');
    if (this.closed.has(round)) throw fail('TESSERA_DKG_MESSAGE_INVALID', 'the round is already closed');
    const w = wire as SignedDkgMessage;
    let set = this.sets.get(round);
    if (set === undefined) this.sets.set(round, (set = new Map()));
    set.set(w.payload, { payload: w.payload, signature: w.signature });
    return { round, from };
  }

  /** Senders that have posted for `round` so far (unverified). */
  present(round: DkgRound): string[] {
    return [...new Set([...(this.sets.get(round)?.values() ?? [])].map((m) => peekDkgMessage(m).from))].sort();
  }

  /** Parties that have not posted for `round` yet: wait for them, or close the round without them. */
  missing(round: DkgRound): string[] {
    const present = new Set(this.present(round));
    return this.parties.filter((p) => !present.has(p));
  }

  /** Freezes `round` and returns its set, to give to every server unchanged. */
  close(round: DkgRound): SignedDkgMessage[] {
    this.closed.add(round);
    return [...(this.sets.get(round)?.values() ?? [])];
  }

  /** Every message of every closed round: the input of {@link verifyTranscript}. */
  log(): SignedDkgMessage[] {
    return this.schedule.filter((r) => this.closed.has(r)).flatMap((r) => [...(this.sets.get(r)?.values() ?? [])]);
  }
}

