/**
 * The public half of the key-generation protocol: what every key server, and anyone holding the
 * signed messages (the control plane), computes from the message sets alone, round by round, with
 * no secret. Who stopped, who equivocated, which complaints are founded, QUAL, which dealers must be
 * reconstructed or excluded, and the resulting Feldman commitments. Because it is a pure function
 * of the sets, honest servers that saw the same sets (the echoed transcript hash proves it) agree on
 * all of it, and {@link verifyTranscript} in dkg.ts re-runs it to check what the servers claim.
 */
import { fail } from '../errors.js';
import {
  add,
  baseMulOrIdentity,
  decodePoint,
  isIdentity,
  mulOrIdentity,
  pointEquals,
  scalarFromInt,
  scalarInv,
  scalarMul,
  scalarAdd,
  scalarSub,
  sodiumLib,
  zeroScalar,
  scalarFromBigint,
  type Point,
  type Scalar,
} from './group.js';
import { generatorH, type Session } from './dkg-session.js';
import { SHARE_PLAIN_BYTES, SHARE_TAG, chainTranscript, dkgSchedule, type AcceptedSet, type DkgRound, type ParsedDkgMessage, type Pair } from './dkg-wire.js';
import { lagrangeAt0 } from './shamir.js';

/** Something a named server did wrong, provably from its signed messages. */
export interface Misbehaviour {
  spiffeId: string;
  round: DkgRound;
  what: string;
}

const aborted = (why: string) => fail('TESSERA_DKG_ABORTED', `the key generation is aborted: ${why}`);

export class PublicDkg {
  readonly session: Session;
  readonly schedule: readonly DkgRound[];
  /** Index in the schedule of the next round to apply. */
  step = 0;
  /** T_r: the transcript hash after the last applied round (T_0 = the session digest). */
  transcript: Uint8Array;
  /** Parties that sent exactly one valid message in every round so far. */
  readonly alive: Set<string>;
  readonly stopped: { spiffeId: string; round: DkgRound }[] = [];
  readonly misbehaviour: Misbehaviour[] = [];
  /** Dealers out of QUAL, with why. */
  readonly dealerOut = new Map<number, string>();
  /** receiver index → dealer index → X25519 public key of that channel. */
  readonly keys = new Map<number, Map<number, Uint8Array>>();
  /** Receivers that published their keys (the ones every dealer must address). */
  readonly helloReceivers: number[] = [];
  readonly deals = new Map<number, { C: Point[]; boxes: Map<number, Uint8Array> }>();
  /** dealer → receivers whose complaint is founded (the dealer must reveal their pairs). */
  readonly justified = new Map<number, number[]>();
  /** dealer → receiver → a pair made public (answers, refuted complaints, Feldman evidence, reconstruction), each checked against C. */
  readonly publicPairs = new Map<number, Map<number, Pair>>();
  qual: number[] = [];
  /** dealer → Feldman commitments A_i (published, or rebuilt from revealed shares). */
  readonly A = new Map<number, Point[]>();
  /** QUAL dealers caught after QUAL was fixed, with why. */
  readonly feldmanBad = new Map<number, string>();
  /** dkg: the late cheaters whose polynomial is rebuilt in public. */
  toReconstruct: number[] = [];
  final?: { publicKey: Point; commitments: Point[]; used: number[]; lambdas: Scalar[] };

  constructor(session: Session) {
    this.session = session;
    this.schedule = dkgSchedule(session.kind);
    this.transcript = new Uint8Array(session.digest);
    this.alive = new Set(session.parties);
  }

  get round(): DkgRound | undefined {
    return this.schedule[this.step];
  }

  private dealerSpiffe(d: number): string {
    return this.session.dealers.find((x) => x.index === d)!.spiffeId;
  }

  private receiverSpiffe(j: number): string {
    return this.session.receivers.find((x) => x.index === j)!.spiffeId;
  }

  private blame(spiffeId: string, what: string): void {
    this.misbehaviour.push({ spiffeId, round: this.round!, what });
  }

  private liveReceivers(): number {
    return this.session.receivers.filter((r) => this.alive.has(r.spiffeId)).length;
  }

  /**
   * Applies the accepted set of the current round. Throws TESSERA_DKG_ABORTED when a live sender saw
   * a different history (transcript mismatch), or too few servers are left.
   */
  apply(set: AcceptedSet): void {
    const round = this.round;
    if (round === undefined || set.round !== round) throw fail('TESSERA_INTERNAL', 'dkg: a set applied out of order');
    for (const from of set.equivocators) {
      if (this.alive.delete(from)) this.blame(from, 'signed two different messages for one round');
    }
    const live = new Map<string, ParsedDkgMessage>();
    for (const p of this.session.parties) {
      if (!this.alive.has(p)) continue;
      const m = set.messages.get(p);
      if (m === undefined) {
        this.alive.delete(p);
        this.stopped.push({ spiffeId: p, round });
        continue;
      }
      // The echo: every live sender must have seen the same sets so far.
      if (!pointEquals(m.prev, this.transcript)) throw aborted('servers saw different message sets (the relay, or a server, diverged)');
      live.set(p, m);
    }
    this.transcript = chainTranscript(this.transcript, set.digest);
    if (round !== 'confirm') {
      this.applyRound(round, live);
      if (this.liveReceivers() < this.session.t) throw aborted('fewer than t receiving key servers remain');
    }
    this.step++;
  }

  private applyRound(round: DkgRound, live: Map<string, ParsedDkgMessage>): void {
    switch (round) {
      case 'hello':
        return this.onHello(live);
      case 'deal':
        return this.onDeal(live);
      case 'complaints':
        return this.onComplaints(live);
      case 'answers':
        return this.onAnswers(live);
      case 'feldman':
        return this.onFeldman(live);
      case 'feldmanComplaints':
        return this.onFeldmanComplaints(live);
      case 'reconstruct':
        return this.onReconstruct(live);
      case 'confirm':
        return;
    }
  }

  private onHello(live: Map<string, ParsedDkgMessage>): void {
    const s = sodiumLib();
    const probe = new Uint8Array(32).fill(9);
    for (const r of this.session.receivers) {
      const m = live.get(r.spiffeId);
      if (m === undefined || m.body.round !== 'hello') continue;
      const keys = new Map<number, Uint8Array>();
      let usable = true;
      for (const k of m.body.keys) {
        // A low-order X25519 key would make every dealer's encryption to it fail: the receiver is out.
        try {
          s.crypto_scalarmult(probe, k.pub);
        } catch {
          usable = false;
        }
        keys.set(k.dealer, k.pub);
      }
      if (!usable) {
        this.alive.delete(r.spiffeId);
        this.blame(r.spiffeId, 'published an unusable encryption key');
        continue;
      }
      this.keys.set(r.index, keys);
      this.helloReceivers.push(r.index);
    }
  }

  private onDeal(live: Map<string, ParsedDkgMessage>): void {
    for (const d of this.session.dealers) {
      const m = live.get(d.spiffeId);
      if (m === undefined || m.body.round !== 'deal' || m.body.commitments.length === 0) {
        this.dealerOut.set(d.index, 'did not deal');
        continue;
      }
      const self = this.session.receiverOf.get(d.spiffeId);
      const expected = this.helloReceivers.filter((j) => j !== self);
      const got = m.body.boxes.map((b) => b.to);
      if (got.length !== expected.length || got.some((j, i) => j !== expected[i])) {
        this.dealerOut.set(d.index, 'did not deal exactly one share to each receiver');
        this.blame(d.spiffeId, 'dealt to the wrong set of receivers');
        continue;
      }
      this.deals.set(d.index, { C: m.body.commitments, boxes: new Map(m.body.boxes.map((b) => [b.to, b.box])) });
    }
  }

  private onComplaints(live: Map<string, ParsedDkgMessage>): void {
    const s = sodiumLib();
    for (const r of this.session.receivers) {
      const m = live.get(r.spiffeId);
      if (m === undefined || m.body.round !== 'complaints') continue;
      for (const { dealer, key } of m.body.accused) {
        const deal = this.deals.get(dealer);
        if (deal === undefined) continue; // already out: nothing to decide
        // The complainer revealed the secret key of this one channel: anyone can now open the box.
        const pub = this.keys.get(r.index)?.get(dealer);
        let derived: Uint8Array | undefined;
        try {
          derived = s.crypto_scalarmult_base(key);
        } catch {
          derived = undefined;
        }
        if (pub === undefined || derived === undefined || !pointEquals(derived, pub)) {
          this.blame(r.spiffeId, `complained against dealer ${dealer} with a key that is not its published one`);
          continue;
        }
        const pair = openShareBox(deal.boxes.get(r.index), pub, key, this.session.digest, dealer, r.index);
        if (pair !== undefined && pedersenOk(deal.C, r.index, pair)) {
          this.blame(r.spiffeId, `complained falsely against dealer ${dealer} (its share opens and verifies)`);
          this.setPublicPair(dealer, r.index, pair);
          continue;
        }
        const list = this.justified.get(dealer) ?? [];
        list.push(r.index);
        this.justified.set(dealer, list);
      }
    }
    for (const [dealer, list] of this.justified) {
      // Revealing t shares would reveal the dealer's secret: with t founded complaints it is simply out.
      if (list.length >= this.session.t) this.exclude(dealer, 'at least t founded complaints');
    }
  }

  private onAnswers(live: Map<string, ParsedDkgMessage>): void {
    for (const d of this.session.dealers) {
      const deal = this.deals.get(d.index);
      if (deal === undefined) continue;
      const m = live.get(d.spiffeId);
      if (m === undefined || m.body.round !== 'answers') {
        this.exclude(d.index, 'stopped before answering');
        continue;
      }
      const owed = this.justified.get(d.index) ?? [];
      const reveals = m.body.reveals;
      if (reveals.length !== owed.length || reveals.some((x, i) => x.to !== owed[i] || !pedersenOk(deal.C, x.to, x))) {
        this.exclude(d.index, 'did not answer every founded complaint with a valid share');
        this.blame(d.spiffeId, 'answered complaints with missing, extra or invalid shares');
        continue;
      }
      for (const x of reveals) this.setPublicPair(d.index, x.to, { s: x.s, r: x.r });
    }
    this.qual = [...this.deals.keys()].sort((a, b) => a - b);
    const need = this.session.kind === 'reshare' ? this.session.oldT : this.session.t;
    if (this.qual.length < need) throw aborted(`fewer than ${need} qualified dealers`);
  }

  private onFeldman(live: Map<string, ParsedDkgMessage>): void {
    for (const d of this.qual) {
      const m = live.get(this.dealerSpiffe(d));
      if (m === undefined || m.body.round !== 'feldman' || m.body.commitments.length === 0) {
        this.feldmanBad.set(d, 'did not publish its Feldman commitments');
        continue;
      }
      const A = m.body.commitments;
      if (this.session.kind === 'refresh' && !isIdentity(A[0]!)) {
        this.feldmanBad.set(d, 'its refresh polynomial does not share zero');
        this.blame(this.dealerSpiffe(d), 'refresh: A_0 is not the identity');
        continue;
      }
      if (this.session.kind === 'reshare' && !pointEquals(A[0]!, this.session.oldPublicShares.get(d)!)) {
        this.feldmanBad.set(d, 'it does not reshare its own share');
        this.blame(this.dealerSpiffe(d), 'reshare: A_0 is not its public share');
        continue;
      }
      this.A.set(d, A);
    }
  }

  private onFeldmanComplaints(live: Map<string, ParsedDkgMessage>): void {
    for (const r of this.session.receivers) {
      const m = live.get(r.spiffeId);
      if (m === undefined || m.body.round !== 'feldmanComplaints') continue;
      for (const x of m.body.accused) {
        const A = this.A.get(x.dealer);
        const deal = this.deals.get(x.dealer);
        if (A === undefined || deal === undefined) continue; // not in QUAL, or already caught
        // Public evidence: a pair the dealer is bound to (it satisfies C) that A does not explain.
        if (pedersenOk(deal.C, r.index, x) && !feldmanOk(A, r.index, x.s)) {
          if (!this.feldmanBad.has(x.dealer)) {
            this.feldmanBad.set(x.dealer, 'its shares do not match its Feldman commitments');
            this.blame(this.dealerSpiffe(x.dealer), 'published Feldman commitments its shares do not match');
          }
          this.setPublicPair(x.dealer, r.index, { s: x.s, r: x.r });
        } else {
          this.blame(r.spiffeId, `unfounded Feldman complaint against dealer ${x.dealer}`);
        }
      }
    }
    for (const d of this.feldmanBad.keys()) this.A.delete(d);
    if (this.session.kind === 'dkg') {
      // GJKR: the dealer's contribution stays in; its polynomial is rebuilt from t revealed shares.
      this.toReconstruct = [...this.feldmanBad.keys()].sort((a, b) => a - b);
    } else {
      // The key is fixed: dropping a late cheater cannot bias anything.
      const remaining = this.qual.filter((d) => !this.feldmanBad.has(d));
      const need = this.session.kind === 'reshare' ? this.session.oldT : this.session.t;
      if (remaining.length < need) throw aborted(`fewer than ${need} dealers passed the Feldman checks`);
      this.finish();
    }
  }

  private onReconstruct(live: Map<string, ParsedDkgMessage>): void {
    const want = this.toReconstruct;
    for (const r of this.session.receivers) {
      const m = live.get(r.spiffeId);
      if (m === undefined || m.body.round !== 'reconstruct') continue;
      const reveals = m.body.reveals;
      if (reveals.length !== want.length || reveals.some((x, i) => x.dealer !== want[i])) {
        if (want.length > 0 || reveals.length > 0) this.blame(r.spiffeId, 'revealed shares for other dealers than those to rebuild');
        continue;
      }
      for (const x of reveals) {
        if (pedersenOk(this.deals.get(x.dealer)!.C, r.index, x)) this.setPublicPair(x.dealer, r.index, { s: x.s, r: x.r });
        else this.blame(r.spiffeId, `revealed an invalid share of dealer ${x.dealer}`);
      }
    }
    for (const d of want) {
      const pairs = [...(this.publicPairs.get(d) ?? new Map<number, Pair>()).entries()].sort((a, b) => a[0] - b[0]).slice(0, this.session.t);
      if (pairs.length < this.session.t) throw aborted(`fewer than t valid shares to rebuild dealer ${d}`);
      const coeffs = interpolate(pairs.map(([x, p]) => ({ x, y: p.s })));
      this.A.set(d, coeffs.map(baseMulOrIdentity));
      for (const c of coeffs) c.fill(0);
    }
    this.finish();
  }

  /** The Feldman commitments of the new sharing, from the used dealers' A_i. */
  private finish(): void {
    const { kind, t } = this.session;
    let used: number[];
    let lambdas: Scalar[] = [];
    if (kind === 'dkg') used = this.qual;
    else if (kind === 'refresh') used = this.qual.filter((d) => !this.feldmanBad.has(d));
    else {
      // Resharing (Desmedt–Jajodia; Wong–Wang–Wing): any old-t qualified dealers interpolate the key; the first by index, for determinism.
      used = this.qual.filter((d) => !this.feldmanBad.has(d)).slice(0, this.session.oldT);
      lambdas = lagrangeAt0(used);
    }
    const commitments: Point[] = [];
    for (let k = 0; k < t; k++) {
      let acc: Point = kind === 'refresh' ? this.session.oldCommitments[k]! : new Uint8Array(32);
      used.forEach((d, i) => {
        const a = this.A.get(d)![k]!;
        acc = add(acc, kind === 'reshare' ? mulOrIdentity(lambdas[i]!, a) : a);
      });
      commitments.push(acc);
    }
    try {
      commitments.forEach((c) => decodePoint(c));
    } catch {
      throw aborted('a resulting commitment is the identity');
    }
    if (kind !== 'dkg' && !pointEquals(commitments[0]!, this.session.oldCommitments[0]!)) throw aborted('the new commitments do not keep the public key');
    this.final = { publicKey: commitments[0]!, commitments, used, lambdas };
  }

  private exclude(dealer: number, why: string): void {
    if (this.deals.delete(dealer)) this.dealerOut.set(dealer, why);
  }

  private setPublicPair(dealer: number, receiver: number, pair: Pair): void {
    let m = this.publicPairs.get(dealer);
    if (m === undefined) this.publicPairs.set(dealer, (m = new Map()));
    if (!m.has(receiver)) m.set(receiver, pair);
  }
}

// ---------------------------------------------------------------------------------------------
// Algebra

/** Σ_k C_k·x^k (Horner), the identity allowed anywhere. */
export function commitmentAt(C: Point[], x: number): Point {
  const xs = scalarFromInt(x);
  let acc = C[C.length - 1]!;
  for (let k = C.length - 2; k >= 0; k--) acc = add(mulOrIdentity(xs, acc), C[k]!);
  return acc;
}

/** Pedersen VSS check: s·G + r·H = Σ_k C_k·x^k. */
export function pedersenOk(C: Point[], x: number, pair: Pair): boolean {
  return pointEquals(add(baseMulOrIdentity(pair.s), mulOrIdentity(pair.r, generatorH())), commitmentAt(C, x));
}

/** Feldman check: s·G = Σ_k A_k·x^k. */
export function feldmanOk(A: Point[], x: number, s: Scalar): boolean {
  return pointEquals(baseMulOrIdentity(s), commitmentAt(A, x));
}

/** f(x) for coefficients (Horner). */
export function evalPoly(coeffs: Scalar[], x: number): Scalar {
  const xs = scalarFromInt(x);
  let acc: Scalar = new Uint8Array(coeffs[coeffs.length - 1]!);
  for (let k = coeffs.length - 2; k >= 0; k--) acc = scalarAdd(scalarMul(acc, xs), coeffs[k]!);
  return acc;
}

/** The coefficients of the unique polynomial of degree < points.length through the points (Lagrange). Public values only. */
export function interpolate(points: { x: number; y: Scalar }[]): Scalar[] {
  const n = points.length;
  const out: Scalar[] = Array.from({ length: n }, () => zeroScalar());
  for (const [m, pm] of points.entries()) {
    // basis numerator Π_{q≠m} (X − x_q), and denominator Π_{q≠m} (x_m − x_q)
    let basis: Scalar[] = [scalarFromInt(1)];
    let den = 1n;
    for (const [q, pq] of points.entries()) {
      if (q === m) continue;
      const xq = scalarFromInt(pq.x);
      const next: Scalar[] = Array.from({ length: basis.length + 1 }, () => zeroScalar());
      for (let k = 0; k < basis.length; k++) {
        next[k + 1] = scalarAdd(next[k + 1]!, basis[k]!);
        next[k] = scalarSub(next[k]!, scalarMul(xq, basis[k]!));
      }
      basis = next;
      den *= BigInt(pm.x - pq.x);
    }
    const factor = scalarMul(pm.y, scalarInv(scalarFromBigint(den)));
    for (let k = 0; k < n; k++) out[k] = scalarAdd(out[k]!, scalarMul(factor, basis[k]!));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The sealed share boxes

/** Plaintext of the box from `dealer` to `receiver`: it names the session and both ends, so it cannot be moved. */
export function sharePlaintext(sessionDigest: Uint8Array, dealer: number, receiver: number, pair: Pair): Uint8Array {
  const out = new Uint8Array(SHARE_PLAIN_BYTES);
  out.set(Buffer.from(SHARE_TAG, 'ascii'), 0);
  let o = SHARE_TAG.length;
  out.set(sessionDigest, o);
  o += 32;
  out[o++] = dealer;
  out[o++] = receiver;
  out.set(pair.s, o);
  out.set(pair.r, o + 32);
  return out;
}

/** Opens a share box and checks what it names; undefined for anything wrong (missing, undecryptable, misaddressed, non-canonical). */
export function openShareBox(box: Uint8Array | undefined, pub: Uint8Array, priv: Uint8Array, sessionDigest: Uint8Array, dealer: number, receiver: number): Pair | undefined {
  if (box === undefined) return undefined;
  let plain: Uint8Array;
  try {
    plain = sodiumLib().crypto_box_seal_open(box, pub, priv);
  } catch {
    return undefined;
  }
  try {
    if (plain.length !== SHARE_PLAIN_BYTES) return undefined;
    const tag = Buffer.from(plain.subarray(0, SHARE_TAG.length)).toString('latin1');
    let o = SHARE_TAG.length;
    if (tag !== SHARE_TAG || !pointEquals(plain.subarray(o, o + 32), sessionDigest)) return undefined;
    o += 32;
    if (plain[o] !== dealer || plain[o + 1] !== receiver) return undefined;
    o += 2;
    const s = plain.slice(o, o + 32);
    const r = plain.slice(o + 32, o + 64);
    if (!isCanonical(s) || !isCanonical(r)) return undefined;
    return { s, r };
  } finally {
    plain.fill(0);
  }
}

function isCanonical(s: Scalar): boolean {
  // scalar_reduce of the 64-byte zero-extension is the identity map exactly on canonical scalars.
  const wide = new Uint8Array(64);
  wide.set(s);
  const reduced = sodiumLib().crypto_core_ristretto255_scalar_reduce(wide);
  wide.fill(0);
  const same = pointEquals(reduced, s);
  reduced.fill(0);
  return same;
}
