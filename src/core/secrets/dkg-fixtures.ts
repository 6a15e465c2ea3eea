/**
 * An in-process relay for key-generation tests: n participants with Ed25519 signing keys, driven
 * round by round, with hooks to stop a server, make it misbehave (rewrite its own bodies before it
 * signs them) or make the relay drop, replay, reorder, tamper with or equivocate messages.
 * Test support only; never used by the product.
 */
import { generateKeyPairSync, randomBytes, sign, verify, type KeyObject } from 'node:crypto';
import { expect } from 'vitest';
import { isTesseraError, type TesseraError } from '../errors.js';
import { evaluateAndProve } from './blind.js';
import { seal } from './blob.js';
import { unsealInMemory, type FakeKeyServer, type FakePolicy } from './fixtures.js';
import { baseMul, pointEquals } from './group.js';
import { combineScalars, verifyShare } from './shamir.js';
import { DkgParticipant, DkgRelayView, verifyTranscript, type DkgParams, type DkgResult, type DkgRound, type DkgSigner, type DkgVerifier, type SignedDkgMessage } from './dkg.js';
import { canonicalJson } from '../canonical-json.js';
import { DKG_SIGNATURE_DOMAIN, type DkgBody } from './dkg-wire.js';
import type { Share } from './shamir.js';

export const spiffe = (name: string): string => `spiffe://example.org/tessera/keyserver/${name}`;

export interface TestKeys {
  signers: Map<string, DkgSigner>;
  privateKeys: Map<string, KeyObject>;
  verifier: DkgVerifier;
}

const keyCache = new Map<string, { privateKey: KeyObject; publicKey: KeyObject }>();

/** Ed25519 keys for the named parties (cached across tests: key generation is not what is tested). */
export function testKeys(ids: string[]): TestKeys {
  const signers = new Map<string, DkgSigner>();
  const privateKeys = new Map<string, KeyObject>();
  for (const id of ids) {
    let kp = keyCache.get(id);
    if (kp === undefined) keyCache.set(id, (kp = generateKeyPairSync('ed25519')));
    const pk = kp.privateKey;
    privateKeys.set(id, pk);
    signers.set(id, { sign: (b) => new Uint8Array(sign(null, b, pk)) });
  }
  const verifier: DkgVerifier = {
    verify: (id, bytes, sig) => {
      const kp = keyCache.get(id);
      return kp !== undefined && verify(null, bytes, kp.publicKey, sig);
    },
  };
  return { signers, privateKeys, verifier };
}

/** Re-signs a message after `edit` changed its JSON body, with `signerId`'s key (a party equivocating, or a forger with its own key). */
export function resign(m: SignedDkgMessage, edit: (body: Record<string, unknown>) => void, signer: DkgSigner): SignedDkgMessage {
  const body = JSON.parse(Buffer.from(m.payload, 'base64url').toString('utf8')) as Record<string, unknown>;
  edit(body);
  const json = Buffer.from(canonicalJson(body), 'utf8');
  const sig = signer.sign(Buffer.concat([Buffer.from(DKG_SIGNATURE_DOMAIN), json]));
  return { payload: json.toString('base64url'), signature: Buffer.from(sig).toString('base64url') };
}

export function bodyOf(m: SignedDkgMessage): Record<string, unknown> {
  return JSON.parse(Buffer.from(m.payload, 'base64url').toString('utf8')) as Record<string, unknown>;
}

export interface RunOptions {
  /** Old shares by SPIFFE ID (refresh, reshare). */
  shares?: Map<string, Share>;
  /** The party sends nothing from this round on. */
  stopAt?: Map<string, DkgRound>;
  /** A party rewrites its own body before signing it (it signs, and later checks, the rewritten one). */
  mutate?: Map<string, (body: DkgBody, p: DkgParticipant) => DkgBody>;
  /** Relay misbehaviour: what `to` receives for `round` (default: the closed set). */
  deliver?: (round: DkgRound, set: SignedDkgMessage[], to: string) => unknown[];
  /** Called with each round's closed set before delivery (to add messages to the log, say). */
  onClose?: (round: DkgRound, set: SignedDkgMessage[]) => SignedDkgMessage[];
}

export interface RunOutcome {
  results: Map<string, DkgResult>;
  errors: Map<string, TesseraError>;
  relay: DkgRelayView;
  participants: Map<string, DkgParticipant>;
  /** Every message the relay saw, in order (including confirmations). */
  seen: SignedDkgMessage[];
  keys: TestKeys;
}

/** Runs a whole session through an in-process relay. */
export function runSession(params: DkgParams, opts: RunOptions = {}): RunOutcome {
  const relay = new DkgRelayView(params);
  const ids = [...relay.parties];
  const keys = testKeys(ids);
  const participants = new Map<string, DkgParticipant>();
  const outgoing = new Map<string, SignedDkgMessage>();
  const results = new Map<string, DkgResult>();
  const errors = new Map<string, TesseraError>();
  const seen: SignedDkgMessage[] = [];
  for (const id of ids) {
    const share = opts.shares?.get(id);
    const mutate = opts.mutate?.get(id);
    const signer = keys.signers.get(id)!;
    const { participant, message } = DkgParticipant.start(params, { spiffeId: id, ...(share ? { share } : {}) }, signer, keys.verifier);
    if (mutate) {
      const internals = participant as unknown as { send(body: DkgBody): SignedDkgMessage };
      const orig = internals.send.bind(participant);
      internals.send = (body: DkgBody) => orig(mutate(body, participant));
      // the hello was signed before the hook existed: sign it again through the hook
      outgoing.set(id, internals.send(bodyAsHello(message)));
    } else outgoing.set(id, message);
    participants.set(id, participant);
  }
  const stopped = new Set<string>();
  for (const round of relay.schedule) {
    for (const id of ids) {
      if (opts.stopAt?.get(id) === round) stopped.add(id);
      const m = outgoing.get(id);
      if (m === undefined || stopped.has(id) || errors.has(id)) continue;
      relay.add(m);
      seen.push(m);
    }
    outgoing.clear();
    let set = relay.close(round);
    if (opts.onClose) set = opts.onClose(round, set);
    if (round === 'confirm') break;
    for (const id of ids) {
      if (stopped.has(id) || errors.has(id) || results.has(id)) continue;
      const input = opts.deliver ? opts.deliver(round, set, id) : set;
      try {
        const step = participants.get(id)!.next(input);
        outgoing.set(id, step.message);
        if (step.done) results.set(id, step.done);
      } catch (err) {
        if (!isTesseraError(err)) throw err;
        errors.set(id, err);
      }
    }
  }
  return { results, errors, relay, participants, seen, keys };
}

/** The hello body back from its signed form (to run it through a mutate hook). */
function bodyAsHello(m: SignedDkgMessage): DkgBody {
  const b = bodyOf(m) as { keys: { dealer: number; pub: string }[] };
  return { round: 'hello', keys: b.keys.map((k) => ({ dealer: k.dealer, pub: new Uint8Array(Buffer.from(k.pub, 'base64url')) })) };
}

export function servers(names: string[], first = 1): { index: number; spiffeId: string }[] {
  return names.map((n, i) => ({ index: first + i, spiffeId: spiffe(n) }));
}

export function sessionId(): Uint8Array {
  return new Uint8Array(randomBytes(16));
}

export const eq = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a).equals(Buffer.from(b));
export const names = (n: number, from = 0): string[] => Array.from({ length: n }, (_, i) => `ks${from + i + 1}`);

export function newKeyParams(t: number, n: number): DkgParams {
  return { kind: 'dkg', session: sessionId(), policyId: 'shop.db', epoch: 1, t, servers: servers(names(n)) };
}

/** Results sorted by share index. */
export function sorted(out: RunOutcome): DkgResult[] {
  return [...out.results.values()].sort((a, b) => (a.share?.index ?? 0) - (b.share?.index ?? 0));
}

export function sharesOf(out: RunOutcome): Share[] {
  return sorted(out).flatMap((r) => (r.share ? [r.share] : []));
}

/** Every k-subset of xs. */
export function subsets<T>(xs: T[], k: number): T[][] {
  if (k === 0) return [[]];
  if (xs.length < k) return [];
  const [head, ...rest] = xs;
  return [...subsets(rest, k - 1).map((s) => [head!, ...s]), ...subsets(rest, k)];
}

/** All honest servers agree on everything public, and it is what a public verifier recomputes. */
export function expectAgreement(params: DkgParams, out: RunOutcome): DkgResult {
  const rs = [...out.results.values()];
  const first = rs[0]!;
  for (const r of rs) {
    expect(eq(r.publicKey, first.publicKey)).toBe(true);
    expect(r.commitments.map((c) => Buffer.from(c).toString('hex'))).toEqual(first.commitments.map((c) => Buffer.from(c).toString('hex')));
    expect(r.qual).toEqual(first.qual);
    expect(eq(r.transcript, first.transcript)).toBe(true);
    expect(eq(r.commitments[0]!, r.publicKey)).toBe(true);
    if (r.share) expect(verifyShare(r.share, r.commitments)).toBe(true);
  }
  const verdict = verifyTranscript(params, out.keys.verifier, out.seen);
  expect(eq(verdict.publicKey, first.publicKey)).toBe(true);
  expect(verdict.qual).toEqual(first.qual);
  // every confirmation the relay saw names the recomputed result; every server with a result that posted one is there
  const confirmed = out.seen.filter((m) => bodyOf(m).round === 'confirm').map((m) => bodyOf(m).from as string);
  expect(verdict.confirmedBy).toEqual([...confirmed].sort());
  expect(confirmed.every((id) => out.results.has(id))).toBe(true);
  expect(verdict.disagreeing).toEqual([]);
  return first;
}

/** The unseal path of blind.ts with these shares: a blob sealed under P opens. */
export function expectUnseal(result: DkgResult, shares: Share[], t: number): void {
  const plain = Buffer.from('postgres://orders:s3cr3t@db.internal/orders');
  const blob = seal(plain, { id: 'shop.db', epoch: 1, publicKey: result.publicKey });
  const keyServers = shares.map((share): FakeKeyServer => {
    const K = baseMul(share.value);
    return { share, K, answer: (B, ctx) => evaluateAndProve(share, B, ctx, K) };
  });
  const policy: FakePolicy = { id: 'shop.db', epoch: 1, t, n: shares.length, k: new Uint8Array(32), commitments: result.commitments, publicKey: result.publicKey, servers: keyServers };
  for (const subset of subsets(keyServers, t).slice(0, 4)) expect(unsealInMemory(blob, policy, subset).plain.equals(plain)).toBe(true);
}

